"""``train_imagenet.py`` on fixed in-memory batches, so that every topology trains on the same global batches.

    python -m tests.topology_run TRAIN_IMAGENET_FLAGS...     (also as the worker command of tools/launch.py)

Two things change, nothing else: the data, and BatchNorm, which normalizes with its running statistics (MXNet's
``use_global_stats``). The trainer, optimizer, schedule, loss, tricks, loop, kvstore, checkpoints and export
are the script's own.

Each global batch is one half of images twice over, ``[h, h]``. A process reads its share of it (all of it in
one process, ``h`` for each of two dist_sync workers) and splits that over its devices, so every device of
every topology trains on ``h``: each device's batch statistics, and mixup's pairs (taken within a device's
slice), are then those of the whole batch. That alone makes the topologies equal in exact arithmetic, and
``fixed_batches`` is used so in the tests of BatchNorm's running statistics. Over several steps it is not
enough in float32: a ResNet normalizing 4-image slices at 1x1 in its last stage amplifies the 1e-4 relative
difference between the gradients of one 8-image batch and of two 4-image ones by 10 to 100 times a step, and
after 6 steps the topologies differ as two seeds do. With BatchNorm's statistics fixed the steps stay
well-conditioned, and what remains to compare is the recipe.

The network is ResNet-18-D at an eighth of its width (``NETWORK_SETTINGS``: the same blocks, BatchNorms and
parameter names, 0.18 M parameters instead of 11.2 M) in float64 (``DTYPE``), and the batches are float64 too.
In float32 the topologies still differed by up to 1.2e-3 after 6 steps, and by another amount on each CPU: oneDNN
sums a convolution in an order that depends on the batch and on the instruction set it picks (AVX-512, AVX2,
SSE4.1), and training amplifies the last bit. MXNet computes float64 through its own kernels and OpenBLAS instead,
whose rounding (1.1e-16) leaves the topologies some 1e-14 apart on every CPU, so that a difference of the recipe
stands out by ten orders of magnitude. The narrow network keeps a row's six runs to seconds.
"""
import sys

import train_imagenet  # first: it sets MXNet's CPU threads before MXNet loads
import mxnet as mx
import numpy as np

import engine.recipe
from data.loaders import DataSource
from engine.recipe import total_batch_size
from models import get_model
from utils.distributed import Cluster

NUM_CLASSES = 4
BATCHES_PER_EPOCH = 3
DATA_SEED = 1234
VALIDATION_EPOCH = 1000  # an epoch number that training never reaches: the validation batch is a batch of its own
DTYPE = "float64"
NETWORK_SETTINGS = dict(stage_widths=(8, 16, 32, 64), stem_width=8, norm_kwargs={"use_global_stats": True})


class FixedBatches:
    """``BATCHES_PER_EPOCH`` batches an epoch, each this process's share of ``[h, h]`` with ``h`` drawn per batch.

    An image is its class's pattern plus noise, so that the network learns from the first step and six steps
    stay far from the chaotic regime in which float32 rounding alone would part the topologies.
    """

    def __init__(self, process_batch, rank, input_size, dtype):
        self.process_batch, self.rank, self.input_size, self.dtype = process_batch, rank, input_size, dtype
        self.patterns = np.random.RandomState(DATA_SEED).normal(size=(NUM_CLASSES, 3, input_size, input_size))

    def global_batch(self, epoch, index, num_workers):
        half = self.process_batch * num_workers // 2
        rng = np.random.RandomState([DATA_SEED, epoch, index])
        labels = rng.randint(NUM_CLASSES, size=half)
        images = (self.patterns[labels] + rng.normal(size=(half, 3, self.input_size, self.input_size))) / 2
        return np.concatenate([images, images]), np.concatenate([labels, labels])

    def share(self, epoch, index, num_workers):
        images, labels = self.global_batch(epoch, index, num_workers)
        mine = slice(self.rank * self.process_batch, (self.rank + 1) * self.process_batch)
        return mx.io.DataBatch([mx.nd.array(images[mine], dtype=self.dtype)],
                               [mx.nd.array(labels[mine], dtype=self.dtype)], pad=0)


def fixed_batches(config, contexts, cluster=None, dtype=DTYPE):
    """Stands in for ``build_data`` in ``train_imagenet``: the same global batches whatever the devices and workers,
    in ``dtype`` (the network's)."""
    cluster = cluster or Cluster(config.kvstore)
    source = FixedBatches(total_batch_size(config, contexts), cluster.rank, config.input_size, dtype)

    class Train:
        def epoch(self, epoch, start_batch=0):
            for index in range(start_batch, BATCHES_PER_EPOCH):
                yield source.share(epoch, index, cluster.num_workers)

    validation = [source.share(VALIDATION_EPOCH, 0, cluster.num_workers)]
    return DataSource(train=Train(), val=validation, num_classes=NUM_CLASSES,
                      class_names=[f"class{index}" for index in range(NUM_CLASSES)],
                      num_train=source.process_batch * BATCHES_PER_EPOCH, num_val=source.process_batch,
                      batches_per_epoch=BATCHES_PER_EPOCH)


def get_model_with_global_statistics(name, **kwargs):
    """Stands in for ``engine.recipe.get_model``: the network ``name`` at ``NETWORK_SETTINGS``' widths, in
    ``DTYPE``, whose BatchNorm normalizes with its (initial) running statistics."""
    net = get_model(name, **NETWORK_SETTINGS, **kwargs)
    net.cast(DTYPE)
    return net


def main(argv=None):
    train_imagenet.build_data = fixed_batches
    engine.recipe.get_model = get_model_with_global_statistics
    return train_imagenet.main(argv)


if __name__ == "__main__":
    sys.exit(main())
