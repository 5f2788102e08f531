"""Section 3.1, no bias decay: L2 weight decay only on the weights of convolution and dense layers."""
from mxnet.gluon import nn


def apply_no_bias_decay(net):
    """Set ``wd_mult = 0`` on every parameter except convolution and dense weights.

    Biases and BatchNorm's gamma and beta then get no decay, as in section 3.1 (following Jia et al. 2018).
    Returns the sorted structural names (as in ``.params`` files) of the parameters that keep their decay.
    """
    decayed = set()

    def collect(block):
        if isinstance(block, (nn.Conv2D, nn.Dense)):
            decayed.add(block.weight.name)

    net.apply(collect)
    for param in net.collect_params().values():
        if param.name not in decayed:
            param.wd_mult = 0.0
    return sorted(key for key, param in net._collect_params_with_prefix().items() if param.name in decayed)


def keep_multipliers_by_index(optimizer):
    """Copy every parameter's ``wd_mult`` and ``lr_mult`` into the optimizer's own per-index tables.

    The optimizer reads them from ``param_dict``, which ``Optimizer.__getstate__`` drops: ``dist_async``'s
    kvstore pickles the optimizer to its servers, which would then decay every bias and BatchNorm parameter
    that ``--no-wd`` exempts. Per-index entries survive pickling, and ``_get_wds`` and ``_get_lrs`` fall back
    on them when ``param_dict`` is empty, so the servers apply the same multipliers as a single device.
    """
    optimizer.set_wd_mult({index: param.wd_mult for index, param in optimizer.param_dict.items()})
    optimizer.set_lr_mult({index: param.lr_mult for index, param in optimizer.param_dict.items()})
