"""Parameter and multiply-add counts of a network, as the paper reports them ("FLOPs" = multiply-adds).

Multiply-adds are those of the convolution and dense layers of one forward pass over one image,
the convention of GluonCV's model zoo table that the paper's section 4 figures come from.
"""
import mxnet as mx
from mxnet.gluon import nn


def count_parameters(net):
    """Number of learnable scalars (BatchNorm running statistics excluded)."""
    return sum(int(p.data().size) for p in net.collect_params().values() if p.grad_req != "null")


def count_multiply_adds(net, input_size, channels=3):
    """Multiply-adds of conv and dense layers for one image of ``input_size`` x ``input_size``.

    ``net`` must be initialized and not hybridized: the count comes from forward hooks on each layer.
    """
    totals = []

    def count_conv(block, inputs, output):
        weight = block.weight.data()
        kernel_area = weight.shape[2] * weight.shape[3]
        totals.append(output[0].size * weight.shape[1] * kernel_area)

    def count_dense(block, inputs, output):
        totals.append(block.weight.data().size)

    handles = []

    def attach(block):
        if isinstance(block, nn.Conv2D):
            handles.append(block.register_forward_hook(count_conv))
        elif isinstance(block, nn.Dense):
            handles.append(block.register_forward_hook(count_dense))

    net.apply(attach)
    net(mx.nd.zeros((1, channels, input_size, input_size)))
    for handle in handles:
        handle.detach()
    return sum(totals)
