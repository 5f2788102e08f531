"""Interrupt a real training run and check that the resumed run ends where an uninterrupted one does.

Runs ``train_imagenet.py`` twice with the same flags in MXNet's deterministic mode (one data thread, one
OpenMP thread, ``MXNET_ENFORCE_DETERMINISM=1``, the synchronous NaiveEngine): once straight through, once
interrupted by each signal of ``--interrupts`` (SIGKILL or SIGTERM, each sent ``--delay`` seconds into the
epoch after the one given) and resumed with ``--resume`` after each. It then compares the two runs'
``metrics.jsonl`` figures and final parameters and prints the verdict.

    python -m benchmarks.resume_check --work-dir /tmp/resume-check --interrupts KILL@1 TERM@2 --delay 90 -- \\
        --rec-train train.rec --rec-val val.rec --model resnet18_v1d --input-size 32 --batch-size 128 \\
        --num-epochs 3 --lr-mode cosine --warmup-epochs 1 --mixup
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np

from benchmarks.children import REPO, TRAINER
from utils import checkpoint

DETERMINISTIC = dict(MXNET_ENFORCE_DETERMINISM="1", OMP_NUM_THREADS="1", MXNET_ENGINE_TYPE="NaiveEngine")
COMPARED = ("epoch", "lr", "train_loss", "train_top1", "val_top1", "val_top5")


def start(train_args, save_dir, resume):
    log = open(os.path.join(os.path.dirname(save_dir), os.path.basename(save_dir) + ".out.txt"), "a")
    argv = [sys.executable, TRAINER, *train_args, "-j", "1", "--save-dir", save_dir]
    return subprocess.Popen(argv + (["--resume"] if resume else []), cwd=REPO, env=dict(os.environ, **DETERMINISTIC),
                            stdout=log, stderr=subprocess.STDOUT)


def epochs_logged(save_dir):
    return [record["epoch"] for record in checkpoint.read_metrics(save_dir)]


def interrupt_during(process, save_dir, signal_name, epoch, delay):
    """Send the signal ``delay`` seconds after epoch ``epoch`` starts (after the previous one's checkpoint)."""
    previous = os.path.join(checkpoint.checkpoints_dir(save_dir), checkpoint.checkpoint_name(epoch - 1))
    while epoch and not (os.path.isdir(previous) and epochs_logged(save_dir)[-1:] == [epoch - 1]):
        if process.poll() is not None:
            raise SystemExit(f"the run ended before epoch {epoch}; lower --delay or pick an earlier epoch")
        time.sleep(0.5)
    time.sleep(delay)
    process.send_signal(getattr(signal, "SIG" + signal_name))
    status = process.wait()
    print(f"SIG{signal_name} {delay:g} s into epoch {epoch}: exit status {status}; "
          f"checkpoints {sorted(os.listdir(checkpoint.checkpoints_dir(save_dir)))}", flush=True)


def final_params(save_dir):
    [name] = [n for n in os.listdir(save_dir) if n.endswith(".params") and "-deploy-" not in n]
    return {key: value.asnumpy() for key, value in mx.nd.load(os.path.join(save_dir, name)).items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--interrupts", nargs="+", default=["KILL@1", "TERM@2"],
                        help="SIGNAL@EPOCH, e.g. KILL@1: SIGKILL during epoch 1")
    parser.add_argument("--delay", type=float, default=60, help="seconds into the epoch (default 60)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train_imagenet.py's flags")
    args = parser.parse_args(argv)
    train_args = [a for a in args.train_args if a != "--"]
    reference, interrupted = (os.path.join(args.work_dir, name) for name in ("reference", "interrupted"))
    os.makedirs(args.work_dir, exist_ok=True)

    tic = time.time()
    # --resume: a reference finished by an earlier invocation is not trained again.
    assert start(train_args, reference, resume=True).wait() == 0, "the reference run failed"
    print(f"reference run done in {time.time() - tic:.0f} s", flush=True)

    tic = time.time()
    for number, interrupt in enumerate(args.interrupts):
        signal_name, epoch = interrupt.split("@")
        interrupt_during(start(train_args, interrupted, resume=number > 0), interrupted, signal_name, int(epoch),
                         args.delay)
    assert start(train_args, interrupted, resume=True).wait() == 0, "the last resumed run failed"
    print(f"interrupted run done in {time.time() - tic:.0f} s (with its interruptions)", flush=True)

    ours = [{k: r[k] for k in COMPARED} for r in checkpoint.read_metrics(interrupted)]
    theirs = [{k: r[k] for k in COMPARED} for r in checkpoint.read_metrics(reference)]
    for mine, other in zip(ours, theirs):
        print(json.dumps(mine), "==" if mine == other else "!=", json.dumps(other))
    params, reference_params = final_params(interrupted), final_params(reference)
    differing = [name for name in reference_params if not np.array_equal(params[name], reference_params[name])]
    same = ours == theirs and not differing
    print(f"metrics.jsonl {'identical' if ours == theirs else 'DIFFERENT'}; final parameters: "
          f"{len(reference_params) - len(differing)} of {len(reference_params)} arrays bit-identical")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
