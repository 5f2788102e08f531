"""Devices the batch is split over: GPUs on a cluster, or several CPU contexts standing in for them here."""
import mxnet as mx

from utils.errors import UserError


def build_contexts(num_gpus=0, num_cpu_contexts=1, gpu_ids=()):
    """GPU contexts when asked for (``gpu_ids``, or the first ``num_gpus``), else ``num_cpu_contexts`` CPU contexts."""
    gpu_ids = tuple(gpu_ids) or tuple(range(num_gpus))
    if gpu_ids:
        available = mx.context.num_gpus()
        if max(gpu_ids) >= available:
            raise UserError(f"GPUs {','.join(map(str, gpu_ids))} were asked for but this MXNet sees {available}; "
                            "install a CUDA build (pip install mxnet-cu112==1.9.1, or mxnet-cu117==1.9.1: "
                            "docs/install.md) on a GPU machine, or use --num-cpu-contexts")
        return [mx.gpu(i) for i in gpu_ids]
    if num_cpu_contexts < 1:
        raise UserError(f"--num-cpu-contexts must be at least 1, got {num_cpu_contexts}")
    return [mx.cpu(i) for i in range(num_cpu_contexts)]


def split_batch(array, contexts):
    """Split ``array`` along its first axis into equal slices, one on each context.

    Equal slices keep every device's BatchNorm statistics over the same number of images and keep the
    hybridized graph's shapes static.
    """
    if array.shape[0] % len(contexts):
        raise UserError(f"a batch of {array.shape[0]} does not split evenly over {len(contexts)} devices; "
                        "use a batch size that is a multiple of the number of devices")
    return mx.gluon.utils.split_and_load(array, contexts, batch_axis=0, even_split=True)


def average_running_statistics(net):
    """Give every device the mean of the devices' BatchNorm running statistics: what ``save_parameters`` writes.

    Each device accumulates BatchNorm's running mean and variance over its own slice of every batch; averaged,
    a validation on any device measures the network that is saved. The mean of per-slice variances leaves
    out the spread of the slices' means, as the saved file does.
    """
    for param in net.collect_params().values():
        copies = param.list_data()
        if param.grad_req == "null" and len(copies) > 1:
            mean = mx.nd.add_n(*(copy.as_in_context(copies[0].context) for copy in copies)) / len(copies)
            # In place: Parameter.set_data would make a trainer that updates on the kvstore start a new
            # kvstore, and its optimizer's momenta with it.
            for copy in copies:
                mean.copyto(copy)


def renew_parameter_arrays(net):
    """Give every parameter of ``net`` new arrays in MXNet's default layout, holding the same values (the gradients
    restart at zero).

    On CPU, an inference pass (validation) has oneDNN reorder the convolution weights into its blocked layout in
    place (MXNet 1.9.1, ``MKLDNNDataReorderAsync``); trained on from there under the threaded engine, they come out
    of the following updates different in the last bits from one run to the next. Where every process runs the
    optimizer on the same gradients (Horovod), its copies would drift apart; on renewed arrays they stay equal, bit
    for bit, and equal to a run that never validated.
    """
    for param in net.collect_params().values():
        param.reset_ctx(param.list_ctx())
