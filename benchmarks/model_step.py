"""The model alone: training steps of a network on one batch held in memory, without the input pipeline."""
import statistics
import time

import mxnet as mx
from mxnet import autograd, gluon


def in_memory_training_step(net, input_size, batch_size, classes):
    """Hybridize the initialized ``net``; return a function that runs one training step on a fixed random batch.

    A step is the forward pass, softmax cross-entropy, the backward pass and a Nesterov update (rate 0.01,
    momentum 0.9, weight decay 1e-4), then ``waitall``: it ends when MXNet's queued work has run, not when
    Python has queued it.
    """
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "nag", {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    images = mx.nd.random.normal(shape=(batch_size, 3, input_size, input_size))
    labels = mx.nd.array([i % classes for i in range(batch_size)])

    def step():
        with autograd.record():
            loss = loss_fn(net(images), labels)
        loss.backward()
        trainer.step(batch_size)
        mx.nd.waitall()
    return step


def timed_step_seconds(step, steps, warmup_steps):
    """The seconds of each of ``steps`` calls of ``step`` after ``warmup_steps`` untimed ones."""
    for _ in range(warmup_steps):
        step()
    seconds = []
    for _ in range(steps):
        tic = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - tic)
    return seconds


def median_step_seconds(step, steps, warmup_steps):
    """Median seconds of ``steps`` calls of ``step`` after ``warmup_steps`` untimed ones."""
    return statistics.median(timed_step_seconds(step, steps, warmup_steps))
