"""Seeds: one for the whole run (``--seed``), one per epoch derived from it, and one per batch for the network.

Each epoch's data order, augmentation and MXNet generator are seeded from ``(seed, epoch)`` alone, so that
a run resumed at an epoch boundary draws what the uninterrupted run drew. MXNet offers no way to read its
generator's state, which a checkpoint in the middle of an epoch would need: a network that draws (stochastic depth,
dropout) has MXNet's generator seeded again before every batch, from ``(seed, epoch, batch, worker)``, so that a
run resumed at any batch draws what the uninterrupted run drew there.
"""
import json
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


def batch_seed(seed, epoch, batch, worker=0):
    """A 31-bit seed for what the network draws in batch ``batch`` of an epoch, on worker ``worker``; apart from
    every ``epoch_seed`` (another spawn key)."""
    state = np.random.SeedSequence([seed, epoch, worker], spawn_key=(batch,)).generate_state(1)[0]
    return int(state >> 1)


# MXNet's operators that draw from its generator: Dropout, and the random and sampling operators.
_RANDOM_OPERATORS = ("Dropout", "_random_", "_sample_", "_npi_random", "_npi_bernoulli")


def draws_random_numbers(block):
    """Whether ``block``'s graph has an operator that draws from MXNet's generator (read from its symbol)."""
    graph = json.loads(block(mx.sym.var("data")).tojson())
    return any(node["op"].startswith(_RANDOM_OPERATORS) for node in graph["nodes"])
