"""GluonCV's own ``train_imagenet.py`` on GluonCV's budget: the column beside our ``--tables gluoncv`` rows.

The same two recipes as ``benchmarks.ablation --tables gluoncv`` (the baseline, and cosine + warmup + zero gamma
+ no bias decay + label smoothing + mixup), the same data, network, input, batch, rate (GluonCV's ``--lr`` is the
rate itself: 0.1 x batch / 256, which ours computes), decay epochs and epochs, run through GluonCV's script
(``--script``, from a clone of https://github.com/dmlc/gluon-cv: this benchmark fetches nothing) by
``benchmarks.gluoncv_side``, which registers ``resnet18_v1d`` and makes its clock wait for MXNet's queued work.
GluonCV's script takes no seed: its runs differ by MXNet's unseeded generators. It runs with MXNet's default CPU
threads, as its users get it (``--gluoncv-threads ours`` gives it our thread count).

    python -m benchmarks.gluoncv_script --script gluon-cv/scripts/classification/imagenet/train_imagenet.py \\
        --rec-train rec/train.rec --rec-val rec/val.rec --runs 2 --work-dir runs/gluoncv-script \\
        --output-dir results/ablation-gluoncv

Each run keeps its log in its own folder under ``--work-dir``; a finished one (its log ends with GluonCV's
"Training time" line) is not run again. Writes ``gluoncv_script.md`` and ``.json``: per recipe and run the
validation top-1 per epoch, the training seconds per epoch and the whole run's wall time.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

from benchmarks.ablation import decay_epochs
from benchmarks.children import benchmark_command
from benchmarks.report import write_report
from benchmarks.throughput import gluoncv_environment
from data.records import RecordFiles, count_records
from utils.lr_schedule import linear_scaled_lr

ALL_TRICKS = ("--warmup-epochs", "1", "--last-gamma", "--no-wd", "--lr-mode", "cosine", "--label-smoothing",
              "--mixup", "--mixup-off-epoch", "2")
RECIPES = (("baseline", ()), ("all tricks", ALL_TRICKS))
EPOCH_LINE = re.compile(r"\[Epoch (\d+)\] (speed|validation): (.*)")
FINISHED_LINE = re.compile(r"Training time for (\d+) epochs: ([0-9.]+) sec")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gluoncv_script", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", required=True, help="GluonCV's scripts/classification/imagenet/train_imagenet.py")
    parser.add_argument("--rec-train", required=True)
    parser.add_argument("--rec-val", required=True)
    parser.add_argument("--model", default="resnet18_v1d")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-epochs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2, help="runs of each recipe")
    parser.add_argument("--recipes", nargs="+", default=[name for name, _ in RECIPES],
                        choices=[name for name, _ in RECIPES])
    parser.add_argument("--gluoncv-threads", choices=("default", "ours"), default="default",
                        help="MXNet's CPU threads for GluonCV's script: MXNet's default, as its users get it, or ours")
    parser.add_argument("-j", "--threads", type=int, default=2, help="GluonCV's decoding threads")
    parser.add_argument("--work-dir", required=True, help="one folder per run, with its log")
    parser.add_argument("--output-dir", required=True)
    return parser


def script_flags(args, recipe_flags, num_train):
    train, val = RecordFiles.from_rec_path(args.rec_train), RecordFiles.from_rec_path(args.rec_val)
    return ["--model", args.model, "--input-size", str(args.input_size), "--batch-size", str(args.batch_size),
            "--num-epochs", str(args.num_epochs), "--lr", f"{linear_scaled_lr(args.batch_size):g}",
            "--lr-decay-epoch", decay_epochs(args.num_epochs), "--mode", "hybrid", "-j", str(args.threads),
            "--use-rec", "--rec-train", train.rec, "--rec-train-idx", train.idx, "--rec-val", val.rec,
            "--rec-val-idx", val.idx, "--num-training-samples", str(num_train), "--save-frequency", "0",
            "--log-interval", "1000", *recipe_flags]


def parse_log(text):
    """Validation top-1 and training seconds per epoch, and the script's own total, from GluonCV's log lines."""
    top1, seconds = {}, {}
    for epoch, kind, rest in EPOCH_LINE.findall(text):
        if kind == "validation":
            top1[int(epoch)] = 1 - float(re.search(r"err-top1=([0-9.]+)", rest).group(1))
        else:
            seconds[int(epoch)] = float(re.search(r"time cost: ([0-9.]+)", rest).group(1))
    finished = FINISHED_LINE.search(text)
    return dict(val_top1=[top1[epoch] for epoch in sorted(top1)],
                epoch_seconds=[seconds[epoch] for epoch in sorted(seconds)],
                script_seconds=float(finished.group(2)) if finished else None)


def run(args, name, recipe_flags, index, num_train):
    """One run of GluonCV's script (skipped if its log shows it finished); its parsed log and wall seconds."""
    folder = os.path.join(args.work_dir, f"{name.replace(' ', '-')}-run{index}")
    log_path, wall_path = os.path.join(folder, "train.log"), os.path.join(folder, "wall_seconds.txt")
    if not (os.path.isfile(wall_path) and parse_log(open(log_path).read())["script_seconds"] is not None):
        os.makedirs(folder, exist_ok=True)
        argv = benchmark_command("gluoncv_side", os.path.abspath(args.script), *script_flags(args, recipe_flags,
                                 num_train), "--save-dir", os.path.join(folder, "params"),
                                 "--logging-file", os.path.join(folder, "gluoncv.log"))
        print(f"{time.strftime('%H:%M:%S')} GluonCV's script, {name}, run {index}", flush=True)
        start = time.time()
        with open(log_path, "w") as log:
            subprocess.run(argv, cwd=folder, env=gluoncv_environment(args.gluoncv_threads), stdout=log,
                           stderr=subprocess.STDOUT, check=True)
        with open(wall_path, "w") as handle:
            handle.write(f"{time.time() - start:.1f}\n")
    result = parse_log(open(log_path).read())
    result["wall_seconds"] = float(open(wall_path).read())
    return result


def summary_line(name, runs):
    finals = [100 * run["val_top1"][-1] for run in runs]
    spread = f" ± {statistics.stdev(finals):.2f}" if len(finals) > 1 else ""
    return [name, f"{statistics.mean(finals):.2f}{spread}", ", ".join(f"{value:.2f}" for value in finals),
            "; ".join(", ".join(f"{100 * value:.1f}" for value in run["val_top1"]) for run in runs),
            ", ".join(f"{sum(run['epoch_seconds']):.0f}" for run in runs),
            ", ".join(f"{run['wall_seconds']:.0f}" for run in runs)]


def main(argv=None):
    args = build_parser().parse_args(argv)
    num_train = count_records(RecordFiles.from_rec_path(args.rec_train).idx)
    recipes = [(name, flags) for name, flags in RECIPES if name in args.recipes]
    results = {name: [run(args, name, flags, index, num_train) for index in range(args.runs)]
               for name, flags in recipes}
    header = ["recipe", "val top-1 % (mean ± std)", "per run", "val top-1 % per epoch (each run)",
              "training s (per run)", "wall s (per run)"]
    lines = [f"GluonCV's script: `{args.model}` at {args.input_size}, batch {args.batch_size}, {args.num_epochs} "
             f"epochs, {num_train} training images ({args.rec_train}), MXNet's {args.gluoncv_threads} CPU threads.", "",
             "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(summary_line(name, runs)) + " |" for name, runs in results.items()]
    lines += ["", "Every run: `python -m benchmarks.gluoncv_side SCRIPT "
              f"{' '.join(script_flags(args, (), num_train))} RECIPE`, RECIPE being nothing (baseline) or "
              f"`{' '.join(ALL_TRICKS)}` (all tricks)."]
    markdown = "\n".join(lines) + "\n"
    write_report(args.output_dir, "gluoncv_script", markdown,
                 dict(budget={key: value for key, value in vars(args).items() if key != "output_dir"},
                      train_images=num_train, runs=results))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
