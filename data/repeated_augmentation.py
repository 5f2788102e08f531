"""Repeated augmentation, ``--ra-reps N``: every training batch holds B/N distinct images, each N times, every copy
augmented on its own (Hoffer et al. 2020, "Augment your batch: improving generalization through instance
repetition"; DeiT's ``RASampler``, Touvron et al. 2021; torchvision's ``--ra-sampler --ra-reps``).

Epoch length: as DeiT's and torchvision's sampler, an epoch keeps its number of steps (``batches_per_epoch`` as
without repetition), so it reads about 1/N of the distinct images; the next epoch draws a new shuffle.

How, on packed records: N ``ImageRecordIter`` readers per epoch, each with batch B/N and its share of the
decoding threads, share the epoch's shuffle seed and differ in ``seed_aug``. MXNet 1.9.1's indexed reader
permutes the records with a generator seeded by ``seed`` alone, and re-seeds the augmentation generator of every
image from ``seed_aug`` and the image's place in its batch, not from the decoding thread; so the N readers read
the same records in the same order, each with its own augmentation. Batch j is their batches j one after
another: block k holds copy k of the block's B/N images, in the same order. (MXNet 1.9.1 gives one reader at
most max(cores / 2 - 1, 1) decoding threads, so on few cores N readers decode faster than one.) From image
folders a batch sampler gives the same layout, and each copy goes through the random transforms on its own.

Placement: the devices take contiguous slices of B/D images (``utils.devices.split_batch``) and the copies of an
image are B/N places apart, so whenever N <= D they land on N different devices (two places a slice or more apart
lie in different slices); with N > D each device holds floor(N/D) or ceil(N/D) copies of each image. DeiT sends
copy k of an image to process (p mod world size), p its place in the repeated list: the same guarantee.

Under ``--kvstore dist_*`` each worker reads its own shard as without repetition and its copies stay among its
own devices, while DeiT spreads them over all processes. Keeping them within a worker keeps the shards disjoint
and each worker's reading independent of the others (copies on several workers would need every worker to read
the same records in the same order, and the ps-lite kvstore carries gradients and weights, not images); a
worker's copies still land on different devices, which is what spreading over processes achieves in DeiT,
where a process drives one GPU.
"""
import dataclasses

import mxnet as mx
import numpy as np

from utils.errors import UserError
from utils.seeding import epoch_seed


def check_batch(batch_size, num_devices, reps):
    """The batch of one process (``batch_size`` per device x ``num_devices``) must split into ``reps`` blocks."""
    if (batch_size * num_devices) % reps:
        raise UserError(f"--ra-reps {reps} repeats each image of a batch {reps} times, but --batch-size {batch_size} x "
                        f"{num_devices} devices = {batch_size * num_devices} images is not a multiple of {reps}; "
                        "change --batch-size or --ra-reps")


def copy_threads(num_workers, reps):
    """Decoding threads of each copy's iterator: ``num_workers`` shared out, at least one each."""
    return [max(1, num_workers // reps + (copy < num_workers % reps)) for copy in range(reps)]


def copy_aug_seed(seed, epoch, copy):
    """``seed_aug`` of copy ``copy`` in ``epoch``: copy 0 the epoch's seed (the augmentation without repetition), the
    others independent 31-bit seeds.

    MXNet seeds the image at place i of a batch with ``seed_aug + i``, so copies of one image must not take
    neighbouring values: they would share augmentations one place apart.
    """
    if copy == 0:
        return epoch_seed(seed, epoch)
    return int(np.random.SeedSequence([seed, epoch], spawn_key=(copy,)).generate_state(1)[0] >> 1)


def repeated_record_iter(make_iterator, config, epoch=0):
    """``config.ra_reps`` iterators made by ``make_iterator(config, epoch, seed_aug=...)`` (``data.loaders.
    train_record_iter`` with its files), read in step as one of batch ``config.batch_size``."""
    reps = config.ra_reps
    threads = copy_threads(config.num_workers, reps)
    return RepeatedBatches([
        make_iterator(dataclasses.replace(config, batch_size=config.batch_size // reps, num_workers=threads[copy]),
                      epoch, seed_aug=copy_aug_seed(config.seed, epoch, copy))
        for copy in range(reps)])


class RepeatedBatches:
    """Iterators of the same records in the same order, read in step: each batch is theirs one after another.

    The images are copied into one of ``OUTPUTS`` arrays taken in turn: a fresh array of a batch's size costs more
    than the copy, its pages being touched for the first time. So, as with ``ImageRecordIter``'s own recycled
    batches, a batch's images are overwritten a few batches later (MXNet's engine orders the write after the reads
    already queued); copy what must be kept.
    """

    OUTPUTS = 4

    def __init__(self, iterators):
        self._iterators = iterators
        self._outputs, self._turn = [], 0

    def __iter__(self):
        return self

    def __next__(self):
        batches = []
        for copy, iterator in enumerate(self._iterators):
            try:
                batches.append(iterator.next())
            except StopIteration:
                if copy:
                    raise RuntimeError(f"copy {copy} of the repeated images ended a pass before copy 0") from None
                raise
        blocks = [batch.data[0] for batch in batches]
        if len(self._outputs) < self.OUTPUTS:
            self._outputs.append(mx.nd.empty((sum(block.shape[0] for block in blocks),) + blocks[0].shape[1:],
                                             dtype=blocks[0].dtype))
        data = mx.nd.concat(*blocks, dim=0, out=self._outputs[self._turn % self.OUTPUTS])
        self._turn += 1
        return mx.io.DataBatch(data=[data], label=[mx.nd.concat(*(batch.label[0] for batch in batches), dim=0)],
                               pad=0)

    next = __next__

    def reset(self):
        for iterator in self._iterators:
            iterator.reset()


class RepeatedBatchSampler:
    """Gluon batch sampler of ``num_batches`` batches of ``batch_size``: ``batch_size / reps`` images of a shuffle,
    then the same images again, ``reps`` blocks in all.

    The shuffle draws from numpy's global generator, which ``data.loaders.FolderBatches`` seeds for each epoch.
    """

    def __init__(self, num_images, batch_size, reps):
        self._num_images, self._distinct, self._reps = num_images, batch_size // reps, reps
        self._num_batches = num_images // batch_size

    def __len__(self):
        return self._num_batches

    def __iter__(self):
        order = np.random.permutation(self._num_images)
        for start in range(0, self._num_batches * self._distinct, self._distinct):
            yield order[start:start + self._distinct].tolist() * self._reps
