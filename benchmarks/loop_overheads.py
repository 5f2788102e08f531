"""Where the training loop loses speed against the model alone: the loop with one of its costs taken out at a time.

Every configuration trains ``--batches`` batches through the project's own epoch (``engine.loop.train_one_epoch``)
on the same packed data, except the model alone (``benchmarks.model_step``: forward, loss, backward and update on a
batch already in memory). The loop's costs taken out, by replacing them for the run with what does nothing:

- the label check (``engine.loop.check_labels``: the batch's labels copied to the host every step);
- the metrics (top-1 and mean loss, each an ``asnumpy`` of the step's outputs or losses, which waits for the
  forward pass, and the finite-loss check that reads them): both are per-step synchronisations, which keep Python
  from queuing the next step while this one runs;
- the reader: the epoch's batches read once beforehand and replayed from memory, so that no decoding or
  augmentation thread competes with MXNet's operator threads.

(Until validation made its ``ImageRecordIter`` in a thread of each pass, a configuration also left that iterator
out: it was the largest cost, ``benchmarks/results/loop-overheads-before/``.)

Each run is a process of its own, which builds one configuration, warms it up for one pass and times the next
(in one process the idle readers of the other configurations slowed the model alone by 30%). Configurations
alternate over ``--rounds`` rounds; each reports the median images/s and its ratio to the model alone. This
measures costs, it is not a recipe: a loop without its checks would train silently on bad labels.

    python -m benchmarks.loop_overheads --rec-train rec/train.rec --rec-val rec/val.rec --output-dir results/loop
"""
import argparse
import contextlib
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from unittest import mock

from utils.cpu_threads import use_physical_cores

use_physical_cores()  # before MXNet loads, as in train_imagenet.py

import mxnet as mx  # noqa: E402

from benchmarks.children import benchmark_command, child_environment  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from benchmarks.model_step import in_memory_training_step, timed_step_seconds  # noqa: E402
from benchmarks.report import write_report  # noqa: E402
from benchmarks.tricks_overhead import FirstBatches  # noqa: E402
from engine import loop  # noqa: E402
from engine.config import parse_config  # noqa: E402
from engine.recipe import build_data, build_recipe  # noqa: E402
from models import get_model  # noqa: E402
from utils.devices import build_contexts  # noqa: E402

CONFIGURATIONS = {
    "model alone": None,
    "our loop": (),
    "- label check": ("label check",),
    "- metrics": ("metrics",),
    "- label check - metrics": ("label check", "metrics"),
    "- label check - metrics - reader": ("label check", "metrics", "reader"),
}


class NoMetric:
    """Stands in for ``mx.metric.Accuracy`` and ``mx.metric.Loss``: reads nothing from the device."""

    sum_metric, num_inst = 0.0, 1

    def update(self, *_):
        pass

    def get(self):
        return "none", 0.0


class ReplayedBatches:
    """The first pass over ``source``, read once and replayed for every epoch."""

    def __init__(self, source):
        self._batches = list(source.epoch(0))
        for batch in self._batches:
            for array in batch.data + batch.label:
                array.wait_to_read()

    def epoch(self, epoch, start_batch=0):
        return iter(self._batches[start_batch:])


def _without_metrics():
    meter = loop.EpochMeter()
    meter.accuracy, meter.mean_loss = NoMetric(), NoMetric()
    return meter


def loop_run(argv, batches, save_dir, taken_out):
    """Build the loop for ``argv`` without the costs ``taken_out``; return a function that runs one epoch of
    ``batches`` batches and returns its images/s (after one epoch of warm-up)."""
    config = parse_config(argv + ["--save-dir", save_dir])
    contexts = build_contexts(config.num_gpus, config.num_cpu_contexts)
    data = build_data(config, contexts)
    recipe = build_recipe(config, data, contexts)
    train = FirstBatches(data.train, batches)
    data = dataclasses.replace(data, train=ReplayedBatches(train) if "reader" in taken_out else train,
                               batches_per_epoch=batches)

    def run():
        with contextlib.ExitStack() as stack:
            if "label check" in taken_out:
                stack.enter_context(mock.patch.object(loop, "check_labels", lambda *_, **__: None))
            meter = _without_metrics() if "metrics" in taken_out else None
            return loop.train_one_epoch(0, recipe, data, contexts, config, meter=meter)["samples_per_sec"]
    run()
    return run


def model_alone_run(name, input_size, batch_size, classes, batches):
    net = get_model(name, classes=classes)
    net.initialize(mx.init.Xavier())
    step = in_memory_training_step(net, input_size, batch_size, classes)
    return lambda: batches * batch_size / sum(timed_step_seconds(step, batches, 2))


def markdown(result, command):
    alone = result["images_per_sec"]["model alone"]
    lines = [f"`{command}`", "",
             f"{result['model']} at {result['input_size']}, batch {result['batch_size']}, {result['batches']} "
             f"batches a run, {result['rounds']} rounds alternating, -j {result['data_workers']}; "
             f"{result['machine']['cpu']}, {result['machine']['cores']} cores, MXNet {result['machine']['mxnet']}.",
             "", "| configuration | images/s (median) | of the model alone | runs |", "| --- | --- | --- | --- |"]
    for name, runs in result["all_runs"].items():
        median = result["images_per_sec"][name]
        lines.append(f"| {name} | {median:.1f} | {median / alone:.3f} | {', '.join(f'{r:.0f}' for r in runs)} |")
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_overheads", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rec-train", required=True)
    parser.add_argument("--rec-val", required=True)
    parser.add_argument("--model", default="resnet18_v1d")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=40, help="timed batches a run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-j", "--num-data-workers", type=int, default=2)
    parser.add_argument("--output-dir")
    parser.add_argument("--configuration", choices=CONFIGURATIONS, help=argparse.SUPPRESS)  # one run, in a child
    return parser


def run_configuration(args):
    """Images/s of one timed pass of ``args.configuration``, in this process."""
    if CONFIGURATIONS[args.configuration] is None:
        return model_alone_run(args.model, args.input_size, args.batch_size, args.num_classes, args.batches)()
    common = ["--rec-train", args.rec_train, "--rec-val", args.rec_val, "--model", args.model,
              "--num-classes", str(args.num_classes), "--input-size", str(args.input_size),
              "--batch-size", str(args.batch_size), "-j", str(args.num_data_workers), "--log-interval", "1000000"]
    with tempfile.TemporaryDirectory() as folder:
        return loop_run(common, args.batches, folder, CONFIGURATIONS[args.configuration])()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.configuration:
        print(json.dumps(run_configuration(args)))
        return 0
    if not args.output_dir:
        build_parser().error("--output-dir is required")
    speeds = {name: [] for name in CONFIGURATIONS}
    for _ in range(args.rounds):
        for name in CONFIGURATIONS:
            child = subprocess.run(benchmark_command("loop_overheads", *argv, "--configuration", name),
                                   capture_output=True, text=True, env=child_environment(), check=True)
            speeds[name].append(json.loads(child.stdout.strip().splitlines()[-1]))
    result = dict(machine=describe(mxnet=mx.__version__), model=args.model, input_size=args.input_size,
                  batch_size=args.batch_size, batches=args.batches, rounds=args.rounds,
                  data_workers=args.num_data_workers,
                  images_per_sec={name: statistics.median(values) for name, values in speeds.items()},
                  all_runs=speeds)
    command = "python -m benchmarks.loop_overheads " + " ".join(argv)
    report = markdown(result, command)
    print(report)
    write_report(args.output_dir, "loop_overheads", report, dict(result, command=command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
