"""Repeated augmentation, ``--ra-reps N``: every training batch holds B/N distinct images, each N times, every copy
augmented on its own (Hoffer et al. 2020, "Augment your batch: improving generalization through instance
repetition"; DeiT's ``RASampler``, Touvron et al. 2021; torchvision's ``--ra-sampler --ra-reps``).

Epoch length: an epoch keeps its number of steps without repetition, ``ceil(shard / b)`` batches of b images (the
last going round the shard, ``data.record_reader``), so it reads about 1/N of the distinct images; the next epoch
draws a new shuffle. DeiT's ``RASampler`` (and torchvision's copy of it) keeps the length differently: each of R
processes takes ``floor(256 floor(n / 256) / R)`` of the n images' repeated list (the data set rounded down to a
multiple of 256, then split) and DeiT's loader drops the last partial batch. The two differ by a step or so: on
ImageNet's 1,281,167 images, 8 processes of 128, DeiT trains 160,128 / 128 = 1,251 steps an epoch, we 1,252.

How. ``data.record_reader``'s readers (of packed records and of image folders alike) with ``reps`` N: batch j takes
B/N places of the epoch's order and writes each image N times, copy k in block k, every copy augmented from its own
generator (seeded by the seed, the epoch, the image's place and k); the image is read and decoded once.

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
from utils.errors import UserError


def check_batch(batch_size, num_devices, reps):
    """The batch of one process (``batch_size`` per device x ``num_devices``) must split into ``reps`` blocks."""
    if (batch_size * num_devices) % reps:
        raise UserError(f"--ra-reps {reps} repeats each image of a batch {reps} times, but --batch-size {batch_size} x "
                        f"{num_devices} devices = {batch_size * num_devices} images is not a multiple of {reps}; "
                        "change --batch-size or --ra-reps")
