"""Section 3.2, low-precision training: FP16 activations and gradients, FP32 master weights, loss scaling.

FP16 goes through MXNet's automatic mixed precision (``mx.contrib.amp``): operators that are safe in FP16
run in FP16 while the parameters stay FP32, and the loss is scaled dynamically so that small gradients do
not underflow; a step whose gradients overflow is skipped and the scale halved.
"""
from mxnet import autograd

from utils.errors import UserError

DTYPES = ("float32", "float16")


class Float32:
    """Plain FP32 training."""

    # Where the optimizer runs is left to MXNet: both places give the same update.
    update_on_kvstore = None

    def prepare_trainer(self, trainer):
        return trainer

    def backward(self, losses, trainer):
        autograd.backward(losses)


class Float16:
    """Dynamic loss scaling with AMP's ``LossScaler``: scaled losses, and a step skipped when a gradient overflows.

    Construct it through ``build_precision``, which casts the operators to FP16 (GPU only); by itself it only
    scales losses and skips overflowed steps, which works on any device.
    """

    # AMP checks the reduced gradients for inf and NaN in ``Trainer._update``, before it updates. On the
    # kvstore the optimizer runs inside the gradient reduction, before that check, and would apply an
    # overflowed step (scaling overflows on purpose now and then), so the devices update their own weights.
    update_on_kvstore = False

    def __init__(self):
        from mxnet.contrib import amp
        self._amp = amp

    def prepare_trainer(self, trainer):
        self._amp.init_trainer(trainer)
        return trainer

    def backward(self, losses, trainer):
        with self._amp.scale_loss(losses, trainer) as scaled_losses:
            autograd.backward(scaled_losses)


def build_precision(dtype, contexts):
    """The precision policy for ``dtype``; call it before the network is built (AMP patches operators)."""
    if dtype != "float16":
        return Float32()
    if any(context.device_type != "gpu" for context in contexts):
        raise UserError("--dtype float16 needs GPUs (MXNet 1.9.1 has no FP16 matrix multiply on CPU); "
                        "use --num-gpus N with the CUDA build, or --dtype float32")
    from mxnet.contrib import amp
    amp.init(target_dtype="float16")
    return Float16()
