"""2-bit gradient compression with error feedback, as MXNet 1.9.1's kvstore does it (``--gradient-compression 2bit``).

Seide et al. 2014 (*1-Bit Stochastic Gradient Descent and its Application to Data-Parallel Distributed Training of
Speech DNNs*) send each gradient value in one bit and carry the quantization error into the next step; MXNet's
variant (``src/kvstore/gradient_compression-inl.h``, ``quantize_2bit``) sends two. Each sender keeps a residual r
per value, starting at 0, and every step, for each value of its gradient g::

    r = r + g
    sent = +T if r >= T;  -T if r <= -T;  0 otherwise
    r = r - sent

and packs 16 of the three states into one 32-bit word, so a push carries 1/16 of the gradient's bytes. The receiver
turns the codes back into -T, 0 or +T and sums them. Nothing is lost, only delayed: whatever is not sent stays in
the residual until it reaches T. T is compared with the gradient as pushed, the sum of the per-image gradients of
the sender's batch, before the optimizer divides by the global batch.

Where MXNet 1.9.1 applies it:

- ``dist_*``: each worker quantizes its gradient (already summed over its devices) before pushing it to the servers,
  which dequantize and sum the workers' (and under ``dist_async`` run the optimizer). The sum (the weights under
  ``dist_async``) comes back uncompressed, and the initial
  values that rank 0 pushes from ``kvstore.init`` go uncompressed too (``KVStoreDist::InitImpl`` pushes with
  compression inactive, sharded as the compressed pushes will be). Gluon's Trainer sends gradients with
  ``kvstore.pushpull``, which ``KVStoreDist`` refuses under compression ("Compression not supported with
  PushPull", ``src/kvstore/kvstore_dist.h``), so ``PushThenPullTrainer`` pushes, then pulls.
- ``device`` with several devices: each device's gradient is quantized before the devices' gradients are summed
  (``CommDevice::ReduceCompressed``, ``src/kvstore/comm.h``).
- Not ``local`` or ``nccl`` (``KVStore.set_gradient_compression`` raises), nor one device of one machine, where
  Gluon makes no kvstore and the setting would be silently dropped, nor Horovod's allreduce, which has no MXNet
  kvstore: ``engine.config`` refuses those.

Why MXNet's single threshold diverges (issue 27): a value can send at most T a step, so wherever the gradient stays
above T the residual grows by the excess every step (integrator windup) and is replayed for as many steps after the
gradient has changed sign. The pushed gradient is a sum over the sender's batch, and its scale differs by three
orders of magnitude between arrays and over the first steps (ResNet-18-D at 32x32, 32 images a worker, CIFAR-10:
the stem's values 17 at the median and 223 at most in step 0, the classifier's up to 20 in step 5, most of
layer 4's under 0.05): with T = 0.5 a fifth of all values wind up in step 0, the classifier's for good. Two
dist_sync workers, lr 0.05, 2,000 images: the training loss went from 4.06 to 6.78 in two epochs. No single T
serves every array: on two CPU devices (which quantize as two workers do) 0.5, 1.5, 4 and 16 all ended three
epochs higher than uncompressed (8.4, 5.3, 3.6, 5.4 against 2.7).

So by default (no ``--gc-threshold``) each array gets its own threshold, ``PerArrayThresholdTrainer``: MXNet is given
T = 1 and every array is pushed divided by its scale s, the pulled sum multiplied by s again, so the array's
threshold is s. s starts at the (1 - q) quantile of rank 0's first gradient of the array (shared through an
uncompressed ``kvstore.init``) and after every step is multiplied by (sent / q), clipped to [1/2, 2], where sent is
the fraction of the array's values that the pulled sum holds non-zero, the same on every worker: a threshold that
sends more than q of the values rises, one that sends fewer falls, so only the largest q of the values can wind up
and small arrays (BatchNorm's, the classifier's bias) keep s near their largest gradient. q = 0.2% is measured on
the two devices over three epochs: q = 40% and 10% ended at 4.7 and 5.1, 1% went from 4.8 to 3.6, 0.2% from 3.9 to
3.2; the two workers above, with it, from 4.61 to 3.50 and 2.90 (uncompressed 4.62, 2.95, 2.65;
benchmarks/results/compression-accuracy/, seed 0). s never falls below 1/1000 of its start, so an array whose
gradient vanishes for a while does not come back to a threshold a million times too small.
MXNet takes one threshold for the whole kvstore (``set_gradient_compression``), hence the scaling in our trainer.
Because the pushes are scaled, the workers must run the optimizer: under ``dist_async`` the servers would apply the
scaled sum, so there only ``--gc-threshold T`` is accepted.

The residuals live inside the kvstore, which nothing saves: a resumed run starts them at zero again.
"""
import mxnet as mx
import numpy as np
from mxnet import gluon

COMPRESSION_TYPES = ("none", "2bit")  # MXNet 1.9.1 has only 2bit; 1bit came after it
SEND_FRACTION = 0.002  # q: the share of an array's values its adapted threshold lets through a step
SCALE_STEP_LIMIT = 2.0  # s changes by at most this factor a step
SCALE_FLOOR = 1e-3  # of the starting s
SCALES_KEY = 999_998  # rank 0's starting scales, one value per parameter (utils.distributed.STOP_KEY is 999_999)
VALUES_PER_WORD = 16  # 2-bit codes in one 32-bit word: a push carries 1/16 of the gradient's bytes


def compression_params(compression, threshold):
    """``gluon.Trainer``'s ``compression_params`` for ``--gradient-compression``, or None for none; ``threshold``
    None is the adapted threshold of ``PerArrayThresholdTrainer``, to whose scaled pushes MXNet applies T = 1."""
    if compression == "none":
        return None
    return {"type": compression, "threshold": 1.0 if threshold is None else threshold}


def compressed_bytes(elements, bytes_per_element=4):
    """Bytes of a 2-bit push of an array of ``elements`` float32 values: one word per 16, the last one partly
    filled (``GradientCompression::GetCompressedSize``)."""
    return -(-elements // VALUES_PER_WORD) * bytes_per_element


class PushThenPullTrainer(gluon.Trainer):
    """``gluon.Trainer`` that, on a ``dist_*`` kvstore with compression, pushes every gradient and then pulls,
    in two calls instead of MXNet 1.9.1's ``pushpull``, which refuses compression.

    The pull waits for the push on the same key (both use the kvstore's buffer for it), and a ``dist_sync``
    server answers the push only once every worker's is summed, so each worker pulls the sum of the step's
    gradients, which it then applies itself; where the servers run the optimizer (``dist_async``,
    ``utils.distributed.Cluster.update_on_kvstore``) it pulls the updated weights. Elsewhere (``device``) it is
    Gluon's Trainer.
    """

    def _allreduce_grads(self):
        if not (self._distributed and self._compression_params):
            super()._allreduce_grads()
            return
        for index, param in enumerate(self._params):
            if param.grad_req != "null":
                self._kvstore.push(index, param.list_grad(), priority=-index)
                received = param.list_data() if self._update_on_kvstore else param.list_grad()
                self._kvstore.pull(index, received, priority=-index)


class PerArrayThresholdTrainer(PushThenPullTrainer):
    """Gradient compression with a threshold of each array's own, adapted every step (module docstring): the
    gradient is pushed divided by the array's scale s, to MXNet's T = 1, and the pulled sum is multiplied by s.

    The workers update their own weights (``update_on_kvstore`` False): they alone see the sum in its own units.
    Every worker computes the same s from the same pulled sums, in float32 operations whose count of sent values is
    exact (below 2**24 values an array), so the weights stay equal on every worker.
    """

    _scales = None  # per parameter, one (1,)-array per device; None before the first step

    def _starting_scales(self):
        """The (1 - q) quantile of each array's gradient on device 0 of rank 0, on every device and worker."""
        quantiles = []
        for param in self._params:
            if param.grad_req == "null":
                quantiles.append(1.0)
                continue
            magnitudes = np.abs(param.list_grad()[0].asnumpy().ravel())
            rank = min(magnitudes.size - 1, int(magnitudes.size * (1 - SEND_FRACTION)))
            quantile = float(np.partition(magnitudes, rank)[rank])
            # An array whose gradient is 0 at the quantile (dead units) starts at its largest value, or 1 if none.
            quantiles.append(quantile or float(magnitudes.max()) or 1.0)
        scales = mx.nd.array(quantiles)
        if self._distributed:
            # init sends rank 0's values uncompressed, and the pull brings them back whole (module docstring).
            self._kvstore.init(SCALES_KEY, scales)
            mx.nd.waitall()
            self._kvstore._barrier()
            self._kvstore.pull(SCALES_KEY, out=scales)
        self._floors = [float(value) * SCALE_FLOOR for value in scales.asnumpy()]
        return [[scales[index:index + 1].as_in_context(grad.context) for grad in param.list_grad()]
                if param.grad_req != "null" else None for index, param in enumerate(self._params)]

    def _allreduce_grads(self):
        if self._scales is None:
            self._scales = self._starting_scales()
        for index, param in enumerate(self._params):
            if param.grad_req == "null":
                continue
            grads, scales = param.list_grad(), self._scales[index]
            for grad, scale in zip(grads, scales):
                mx.nd.broadcast_div(grad, scale, out=grad)
            self._kvstore.push(index, grads, priority=-index)
            self._kvstore.pull(index, grads, priority=-index)
            for grad, scale in zip(grads, scales):
                sent = mx.nd.sum(grad != 0) / grad.size
                mx.nd.broadcast_mul(grad, scale, out=grad)
                factor = mx.nd.clip(sent / SEND_FRACTION, 1 / SCALE_STEP_LIMIT, SCALE_STEP_LIMIT)
                scale[:] = mx.nd.maximum(scale * factor, self._floors[index])
