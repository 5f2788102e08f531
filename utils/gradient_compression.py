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

The residuals live inside the kvstore, which nothing saves: a resumed run starts them at zero again.
"""
from mxnet import gluon

COMPRESSION_TYPES = ("none", "2bit")  # MXNet 1.9.1 has only 2bit; 1bit came after it
DEFAULT_THRESHOLD = 0.5  # MXNet's default (GradientCompressionParam)
VALUES_PER_WORD = 16  # 2-bit codes in one 32-bit word: a push carries 1/16 of the gradient's bytes


def compression_params(compression, threshold):
    """``gluon.Trainer``'s ``compression_params`` for ``--gradient-compression``, or None for none."""
    if compression == "none":
        return None
    return {"type": compression, "threshold": threshold}


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
