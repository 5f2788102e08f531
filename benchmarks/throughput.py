"""Model-only training throughput against the machine's matrix-multiply ceiling.

For each ``MODEL:INPUT`` it times forward + backward + update of the hybridized network on a batch already in
memory (after warm-up steps; median of the timed steps) and reports images/s, the achieved training GFLOP/s
(3 x 2 x forward multiply-adds x images/s: forward, and a backward of about twice its cost) and that as a
fraction of the float32 matrix-multiply GFLOP/s that MXNet reaches on this machine, measured in the same run.
Issue 7 asks for more (the full loop, the input pipeline alone, GluonCV's script side by side); this is the
model-only part.

    python benchmarks/throughput.py resnet18_v1d:32 mobilenet1.0:64 --batch-size 32 --steps 10
"""
import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

import mxnet as mx
from mxnet import autograd, gluon

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import get_model  # noqa: E402
from models.complexity import count_multiply_adds  # noqa: E402


def matmul_gflops(size=2048, repeats=10):
    """Float32 matrix-multiply GFLOP/s through MXNet on all cores: the ceiling a convolution network can approach.

    Measured with ``FullyConnected``, which runs on the same oneDNN kernels as the convolutions; ``nd.dot``
    goes through OpenBLAS instead and was seen 6.5 times slower here (16 against 105 GFLOP/s).
    """
    data, weight = mx.nd.random.uniform(shape=(size, size)), mx.nd.random.uniform(shape=(size, size))
    seconds = []
    for repeat in range(repeats + 1):
        tic = time.perf_counter()
        mx.nd.FullyConnected(data, weight, num_hidden=size, no_bias=True).wait_to_read()
        if repeat:
            seconds.append(time.perf_counter() - tic)
    return 2 * size ** 3 / statistics.median(seconds) / 1e9


def training_images_per_sec(name, input_size, batch_size, steps, warmup_steps=3, classes=1000):
    """Median images/s of ``steps`` training steps of ``name`` after ``warmup_steps``."""
    net = get_model(name, classes=classes)
    net.initialize(mx.init.Xavier())
    multiply_adds = count_multiply_adds(net, input_size)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "nag", {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    images = mx.nd.random.normal(shape=(batch_size, 3, input_size, input_size))
    labels = mx.nd.array([i % classes for i in range(batch_size)])
    seconds = []
    for step in range(warmup_steps + steps):
        tic = time.perf_counter()
        with autograd.record():
            loss = loss_fn(net(images), labels)
        loss.backward()
        trainer.step(batch_size)
        mx.nd.waitall()
        if step >= warmup_steps:
            seconds.append(time.perf_counter() - tic)
    return batch_size / statistics.median(seconds), multiply_adds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="MODEL:INPUT pairs, e.g. resnet50_v1d:224")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (median reported)")
    parser.add_argument("--output", default="throughput.json")
    args = parser.parse_args(argv)

    ceiling = matmul_gflops()
    rows = []
    for spec in args.models:
        name, _, size = spec.partition(":")
        images_per_sec, multiply_adds = training_images_per_sec(name, int(size or 224), args.batch_size, args.steps)
        achieved = 3 * 2 * multiply_adds * images_per_sec / 1e9
        rows.append(dict(model=name, input_size=int(size or 224), batch_size=args.batch_size, steps=args.steps,
                         images_per_sec=images_per_sec, training_gflops=achieved,
                         fraction_of_ceiling=achieved / ceiling,
                         peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    result = dict(machine=platform.processor() or platform.machine(), cores=os.cpu_count(), mxnet=mx.__version__,
                  runs=1, matmul_gflops=ceiling, rows=rows)
    print(f"machine: {result['machine']}, {result['cores']} cores, MXNet {result['mxnet']}; float32 matrix "
          f"multiply {ceiling:.1f} GFLOP/s")
    print("| model | input | batch | images/s | training GFLOP/s | of ceiling | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['model']} | {row['input_size']} | {row['batch_size']} | {row['images_per_sec']:.1f} | "
              f"{row['training_gflops']:.1f} | {row['fraction_of_ceiling']:.2f} | {row['peak_rss_mb']:.0f} |")
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
