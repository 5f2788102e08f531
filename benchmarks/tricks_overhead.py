"""What the tricks cost in training throughput: the paper's (all at once, and with a teacher) and each trick
beyond the paper on its own, against the baseline.

Each configuration runs the project's own training step (``engine.loop.train_one_epoch``: input pipeline,
augmentation, forward, backward, update, metrics) for the same number of batches from the same packed data;
configurations alternate over several rounds so that drift of the machine hits them alike, and the median
images/s of each is reported with its ratio to the baseline.

    python -m benchmarks.tricks_overhead --rec-train train.rec --rec-val val.rec \
        --model resnet18_v1d --input-size 32 --batch-size 128 --batches 40 --rounds 3
"""
import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from itertools import islice

from utils.cpu_threads import use_physical_cores

use_physical_cores()  # before MXNet loads, as in train_imagenet.py

import mxnet as mx  # noqa: E402

from engine.config import parse_config  # noqa: E402
from engine.loop import train_one_epoch  # noqa: E402
from engine.recipe import build_data, build_recipe  # noqa: E402
from models import get_model  # noqa: E402
from utils.devices import build_contexts  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from data.records import RecordFiles, classes_from_labels, read_class_names  # noqa: E402

TRICKS = ["--warmup-epochs", "1", "--last-gamma", "--no-wd", "--lr-mode", "cosine", "--label-smoothing",
          "--mixup"]
# Each against the baseline alone, so that its own cost shows.
BEYOND_THE_PAPER = {
    "+ CutMix": ["--cutmix", "1.0"],
    "+ random erasing": ["--reprob", "0.25"],
    "+ EMA every step": ["--model-ema"],
    "+ EMA every 32 steps": ["--model-ema", "--model-ema-steps", "32"],
    "+ stochastic depth": ["--drop-path", "0.1"],
    "+ BCE loss": ["--bce-loss"],
    "+ LAMB": ["--optimizer", "lamb"],
    "+ AdamW": ["--optimizer", "adamw"],
}


class FirstBatches:
    """The first ``count`` batches of each pass over ``source``."""

    def __init__(self, source, count):
        self._source = source
        self._count = count

    def epoch(self, epoch, start_batch=0):
        return islice(self._source.epoch(epoch, start_batch), self._count)


def save_random_teacher(name, classes, input_size, folder):
    """A randomly initialized teacher: its forward pass costs the same as a trained one's."""
    teacher = get_model(name, classes=classes)
    teacher.initialize(mx.init.Xavier())
    teacher(mx.nd.zeros((1, 3, input_size, input_size)))
    path = os.path.join(folder, f"{name}.params")
    teacher.save_parameters(path)
    return path


def measure(argv, batches, save_dir):
    """Build one configuration and return a function that times ``batches`` training batches."""
    config = parse_config(argv + ["--save-dir", save_dir])
    contexts = build_contexts(config.num_gpus, config.num_cpu_contexts)
    data = build_data(config, contexts)
    recipe = build_recipe(config, data, contexts)
    data = dataclasses.replace(data, train=FirstBatches(data.train, batches), batches_per_epoch=batches)
    train_one_epoch(0, recipe, data, contexts, config)  # warm-up: graph, allocations

    def run():
        return train_one_epoch(0, recipe, data, contexts, config)["samples_per_sec"]
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rec-train", required=True)
    parser.add_argument("--rec-val", required=True)
    parser.add_argument("--model", default="resnet18_v1d")
    parser.add_argument("--num-classes", type=int, help="as train_imagenet.py's: only for .rec files without a class "
                                                        "list, whose count otherwise is their highest label + 1")
    parser.add_argument("--teacher", default="resnet18_v1b", help="teacher network for the distillation column")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-j", "--num-data-workers", type=int, default=2)
    parser.add_argument("--output", default="tricks_overhead.json")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="measure only these configurations beside the baseline (e.g. '+ CutMix')")
    args = parser.parse_args(argv)
    num_classes = args.num_classes or len(read_class_names(args.rec_train) or [])
    if not num_classes:
        num_classes, source = classes_from_labels(args.rec_train, RecordFiles.from_rec_path(args.rec_train).idx)
        print(f"{num_classes} classes, {source}")

    common = ["--rec-train", args.rec_train, "--rec-val", args.rec_val, "--model", args.model,
              "--input-size", str(args.input_size), "--batch-size", str(args.batch_size), "--num-epochs", "5",
              "--lr-decay-epoch=", "-j", str(args.num_data_workers), "--log-interval", "1000000"]
    if args.num_classes:
        common += ["--num-classes", str(args.num_classes)]
    with tempfile.TemporaryDirectory() as folder:
        teacher = save_random_teacher(args.teacher, num_classes, args.input_size, folder)
        configurations = {
            "baseline": common,
            "all tricks": common + TRICKS,
            "all tricks + distillation": common + TRICKS + ["--teacher", args.teacher, "--teacher-params", teacher],
            **{name: common + flags for name, flags in BEYOND_THE_PAPER.items()},
        }
        configurations = {name: argv for name, argv in configurations.items()
                          if name == "baseline" or not args.only or name in args.only}
        runs = {name: measure(argv, args.batches, os.path.join(folder, str(index)))
                for index, (name, argv) in enumerate(configurations.items())}
        speeds = {name: [] for name in configurations}
        for _ in range(args.rounds):
            for name, run in runs.items():
                speeds[name].append(run())

    baseline = statistics.median(speeds["baseline"])
    result = dict(machine=describe(mxnet=mx.__version__), model=args.model, input_size=args.input_size,
                  batch_size=args.batch_size, batches=args.batches, rounds=args.rounds,
                  images_per_sec={name: statistics.median(values) for name, values in speeds.items()},
                  all_runs=speeds)
    print(f"| configuration | images/s (median of {args.rounds}) | ratio to baseline |")
    print("| --- | --- | --- |")
    for name, values in speeds.items():
        print(f"| {name} | {statistics.median(values):.1f} | {statistics.median(values) / baseline:.3f} |")
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
