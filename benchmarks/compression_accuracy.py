"""What ``--gradient-compression 2bit`` (with its default, adapted thresholds) costs in accuracy: the same recipe
trained with and without it on 2 ``dist_sync`` workers and 1 server on 127.0.0.1, for several seeds.

Each job is ``tools/launch.py -n 2 -s 1 --launcher local train_imagenet.py --kvstore dist_sync`` on the packed
records given; the table has every epoch's validation top-1 of both, per seed and their mean, and the bytes the job
sent over loopback (``lo``'s tx counter before and after the job, as ``benchmarks.gradient_compression`` reads it:
the initial values, every step's pushes and pulls, validation's nothing; anything else on loopback counts too).

    python -m benchmarks.compression_accuracy --rec-train TRAIN.rec --rec-val VAL.rec \\
        --output-dir benchmarks/results/compression-accuracy
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks.children import REPO, child_environment
from benchmarks.gradient_compression import loopback_bytes_sent
from benchmarks.report import write_report
from utils.errors import UserError, command_line_entry

MODES = ("none", "2bit")
JOB_TIMEOUT_SECONDS = 1800


def train_command(args, mode, seed, save_dir):
    """The job: the recipe of issue 27 (ResNet-18-D at 32, 32 images a worker, rate 0.05, no decay)."""
    return [sys.executable, os.path.join(REPO, "tools", "launch.py"), "-n", "2", "-s", "1", "--launcher", "local",
            sys.executable, os.path.join(REPO, "train_imagenet.py"), "--rec-train", args.rec_train,
            "--rec-val", args.rec_val, "--model", args.model, "--input-size", str(args.input_size),
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--num-epochs", str(args.epochs),
            "--lr-decay-epoch=", "-j", "1", "--kvstore", "dist_sync", "--gradient-compression", mode,
            "--seed", str(seed), "--save-dir", save_dir]


def run_job(args, mode, seed, scratch):
    """One job's validation top-1 per epoch, final training loss and bytes sent over loopback."""
    save_dir = os.path.join(scratch, f"{mode}-{seed}")
    before = loopback_bytes_sent()
    completed = subprocess.run(train_command(args, mode, seed, save_dir), cwd=scratch, env=child_environment(),
                               capture_output=True, text=True, timeout=JOB_TIMEOUT_SECONDS)
    sent = loopback_bytes_sent() - before
    if completed.returncode:
        raise UserError(f"the {mode} job of seed {seed} failed: {completed.stdout[-2000:]}")
    with open(os.path.join(save_dir, "metrics.jsonl")) as handle:
        metrics = [json.loads(line) for line in handle]
    return dict(mode=mode, seed=seed, val_top1=[m["val_top1"] for m in metrics],
                train_loss=[m["train_loss"] for m in metrics], bytes=sent)


def markdown(result):
    args, runs = result["args"], result["runs"]
    epochs = range(args["epochs"])
    header = ["--gradient-compression", "seed"] + [f"top-1 epoch {e}" for e in epochs] + \
        ["last train loss", "MB sent"]
    rows = []
    for mode in MODES:
        mine = [run for run in runs if run["mode"] == mode]
        for run in mine:
            rows.append([mode, str(run["seed"])] + [f"{v:.3f}" for v in run["val_top1"]] +
                        [f"{run['train_loss'][-1]:.3f}", f"{run['bytes'] / 1e6:.0f}"])
        mean = [sum(run["val_top1"][e] for run in mine) / len(mine) for e in epochs]
        rows.append([mode, "mean"] + [f"{v:.3f}" for v in mean] +
                    [f"{sum(run['train_loss'][-1] for run in mine) / len(mine):.3f}",
                     f"{sum(run['bytes'] for run in mine) / len(mine) / 1e6:.0f}"])
    lines = [f"`{result['command']}`", "",
             f"2 dist_sync workers and 1 server on 127.0.0.1, {args['model']} at {args['input_size']}, "
             f"{args['batch_size']} images a worker, --lr {args['lr']:g} without decay, {args['epochs']} epochs, "
             f"training set {result['train_images']} images, validation {result['val_images']}; MB: bytes sent over "
             "loopback during the job.", "",
             "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _records(idx_path):
    with open(idx_path) as handle:
        return sum(1 for _ in handle)


@command_line_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rec-train", required=True, help="packed training records (python -m data.pack)")
    parser.add_argument("--rec-val", required=True, help="packed validation records")
    parser.add_argument("--model", default="resnet18_v1d", help="network (default %(default)s)")
    parser.add_argument("--input-size", type=int, default=32, help="crop (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="images a worker a step (default %(default)s)")
    parser.add_argument("--lr", type=float, default=0.05, help="rate (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs a job (default %(default)s)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default %(default)s)")
    parser.add_argument("--output-dir", help="write compression_accuracy.md and .json here")
    args = parser.parse_args(argv)
    for path in (args.rec_train, args.rec_val):
        if not os.path.isfile(path) or not os.path.isfile(os.path.splitext(path)[0] + ".idx"):
            raise UserError(f"{path} or its .idx does not exist; pack images with `python -m data.pack`")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        runs = [run_job(args, mode, seed, scratch) for seed in seeds for mode in MODES]
    result = dict(command="python -m benchmarks.compression_accuracy " + " ".join(argv or sys.argv[1:]),
                  args=vars(args) | {"seeds": seeds}, runs=runs,
                  train_images=_records(os.path.splitext(args.rec_train)[0] + ".idx"),
                  val_images=_records(os.path.splitext(args.rec_val)[0] + ".idx"))
    text = "\n".join(markdown(result))
    print(text)
    if args.output_dir:
        write_report(args.output_dir, "compression_accuracy", text, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
