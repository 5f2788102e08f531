"""Seeds: one for the whole run (``--seed``), and one per epoch derived from it.

Each epoch's data order, augmentation and MXNet generator are seeded from ``(seed, epoch)`` alone, so that
a run resumed at an epoch boundary draws what the uninterrupted run drew.
"""
import random

import mxnet as mx
import numpy as np


def epoch_seed(seed, epoch, worker=0):
    """A 31-bit seed for one epoch of one run; runs with neighbouring seeds do not share epochs.

    ``worker``, a distributed job's rank, gives each worker its own stream for what the network draws
    (stochastic depth, dropout); worker 0's is the one-machine run's.
    """
    return int(np.random.SeedSequence([seed, epoch, *([worker] if worker else [])]).generate_state(1)[0] >> 1)


def seed_everything(seed):
    """Seed Python's, numpy's and MXNet's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)
