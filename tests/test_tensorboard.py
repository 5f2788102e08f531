"""--tensorboard: the curves hold the run's figures at its global steps, and a resumed run continues them.

The resume test runs ``train_imagenet.py`` in subprocesses in MXNet's deterministic mode, as tests/test_resume.py
does, where a resumed run is the uninterrupted one bit for bit: so are its curves.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_imagenet
from engine.config import parse_config
from tests.conftest import ONE_EPOCH, tiny_args
from tests.helpers import REPO, finish_training, start_training
from tests.launch_job import Job, local_launch_args
from utils import checkpoint
from utils.distributed import Cluster
from utils.errors import UserError
from utils.tensorboard import NO_CURVES, open_curves

TRAIN_TAGS = ["train/loss", "train/top1", "train/lr", "train/samples_per_sec"]
VAL_TAGS = ["val/top1", "val/top5", "val/top1_ema", "val/top5_ema"]
# The tiny set's 96 training images in batches of 16: 6 steps an epoch. A rate that changes at every step
# (warmup, then cosine) and the weights' average: a resumed curve must go on with both.
RECIPE = ["--tensorboard", "--model-ema", "--model-ema-decay", "0.9", "--lr-mode", "cosine", "--warmup-epochs", "1"]


def _curves(save_dir):
    """Tag -> [(step, value)] as TensorBoard shows the run."""
    events = EventAccumulator(checkpoint.tensorboard_dir(str(save_dir)))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _float32(values):
    """The figures as an event file holds them."""
    return [float(np.float32(value)) for value in values]


def test_curves_hold_the_figures_of_the_log_and_metrics_by_global_step(tiny_set, tmp_path):
    save_dir = tmp_path / "run"
    assert train_imagenet.main(tiny_args(tiny_set, save_dir, *RECIPE, "--log-interval", "2")) == 0
    curves, metrics = _curves(save_dir), checkpoint.read_metrics(str(save_dir))
    assert sorted(curves) == sorted(TRAIN_TAGS + VAL_TAGS)
    # Every 2nd of the 12 steps, and each epoch's validation at its last step.
    for tag in TRAIN_TAGS:
        assert [step for step, _ in curves[tag]] == [2, 4, 6, 8, 10, 12], tag
    for tag in VAL_TAGS:
        assert [step for step, _ in curves[tag]] == [6, 12], tag
    for name in ("top1", "top5", "top1_ema", "top5_ema"):
        assert [value for _, value in curves[f"val/{name}"]] == _float32(m[f"val_{name}"] for m in metrics)
    # At an epoch's last step the running loss and top-1 are the epoch's, and the rate is metrics.jsonl's.
    for tag, key in (("train/loss", "train_loss"), ("train/top1", "train_top1"), ("train/lr", "lr")):
        assert [value for step, value in curves[tag] if step in (6, 12)] == _float32(m[key] for m in metrics), tag
    # Warmup from 0 to 0.02 over the first epoch's 6 steps, then cosine down to 0 at step 12.
    assert [value for _, value in curves["train/lr"]] == pytest.approx(
        [0.02 * 2 / 6, 0.02 * 4 / 6, 0.02, 0.01 * (1 + np.cos(np.pi * 2 / 6)), 0.01 * (1 + np.cos(np.pi * 4 / 6)), 0],
        abs=1e-8)
    assert all(value > 0 for _, value in curves["train/samples_per_sec"])


@pytest.mark.parametrize("interval, steps", [("50", [6, 12]), ("4", [4, 6, 10, 12])])
def test_every_epoch_ends_with_its_training_point(interval, steps, tiny_set, tmp_path):
    """An epoch of 6 steps under --log-interval 50 logs no speed line, and under 4 ends between two: its training
    figures still go to the curves at its last step, the epoch's loss and top-1 as metrics.jsonl has them (issue
    27)."""
    save_dir = tmp_path / "run"
    assert train_imagenet.main(tiny_args(tiny_set, save_dir, "--tensorboard", "--log-interval", interval)) == 0
    curves, metrics = _curves(save_dir), checkpoint.read_metrics(str(save_dir))
    for tag in TRAIN_TAGS:
        assert [step for step, _ in curves[tag]] == steps, tag
    for tag, key in (("train/loss", "train_loss"), ("train/top1", "train_top1"), ("train/lr", "lr")):
        assert [value for step, value in curves[tag] if step in (6, 12)] == _float32(m[key] for m in metrics), tag
    assert all(value > 0 for _, value in curves["train/samples_per_sec"])


def test_without_the_flag_no_curves_are_written_nor_tensorboardx_loaded(tiny_set, tmp_path):
    save_dir = tmp_path / "run"
    code = ("import sys, train_imagenet; status = train_imagenet.main(sys.argv[1:]); "
            "sys.exit(status or 'tensorboardX' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code, *tiny_args(tiny_set, save_dir, *ONE_EPOCH)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert checkpoint.read_metrics(str(save_dir)) and not os.path.exists(checkpoint.tensorboard_dir(str(save_dir)))


def test_curves_are_rank_0_s_and_need_tensorboardx(tiny_set, tmp_path, monkeypatch):
    config = parse_config(tiny_args(tiny_set, tmp_path, "--tensorboard"))
    assert open_curves(config, Cluster("dist_sync", rank=1, num_workers=2), 0) is NO_CURVES
    monkeypatch.setattr("utils.tensorboard.importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match="--tensorboard writes with tensorboardX, which is not installed"):
        open_curves(config, Cluster("device"), 0)
    assert not os.path.exists(checkpoint.tensorboard_dir(str(tmp_path)))


def test_rank_0_alone_writes_the_curves_of_a_distributed_run(tiny_set, tmp_path):
    save_dir = tmp_path / "run"
    command = [sys.executable, "train_imagenet.py",
               *tiny_args(tiny_set, save_dir, "--kvstore", "dist_sync", "--tensorboard", "--log-interval", "1")]
    job = Job(local_launch_args(), command)
    code, output = job.wait(timeout=120)
    assert code == 0, output
    assert len(os.listdir(checkpoint.tensorboard_dir(str(save_dir)))) == 1
    curves, metrics = _curves(save_dir), checkpoint.read_metrics(str(save_dir))
    # Each worker reads 48 of the 96 images: 3 global steps of 2 x 16 an epoch, the rate divided by 10 after
    # epoch 0 (the servers run the schedule; the curve reads it at the job's step).
    assert [step for step, _ in curves["train/lr"]] == [1, 2, 3, 4, 5, 6]
    assert [value for _, value in curves["train/lr"]] == _float32([0.02] * 3 + [0.002] * 3)
    assert [step for step, _ in curves["val/top1"]] == [3, 6]
    assert [value for _, value in curves["val/top1"]] == _float32(m["val_top1"] for m in metrics)
    assert job.leftovers() == []


def _start(tiny_set, save_dir, *extra):
    """Start a 3-epoch run; its output goes to SAVE_DIR.out.txt (a pipe could fill and block it)."""
    return start_training(tiny_args(tiny_set, save_dir, *RECIPE, "--num-epochs", "3", "--log-interval", "1", *extra),
                          save_dir)


def _wait_for_line(save_dir, text, count, process, timeout=120):
    """Poll the run's output until ``text`` is in it ``count`` times."""
    deadline = time.monotonic() + timeout
    while True:
        with open(f"{save_dir}.out.txt") as log:
            if log.read().count(text) >= count:
                return
        assert process.poll() is None, "the run ended before the line the test waits for"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_resumed_run_continues_the_curves_of_the_uninterrupted_one(tiny_set, tmp_path):
    reference = tmp_path / "reference"
    finish_training(_start(tiny_set, reference), reference)
    save_dir = tmp_path / "resumed"

    # 1. kill -9 in epoch 1, after epoch 0's checkpoint (step 6) and points of steps after it.
    process = _start(tiny_set, save_dir)
    _wait_for_line(save_dir, "Epoch[1] Batch [2-3]", 1, process)
    process.kill()
    process.wait()
    assert max(step for step, _ in _curves(save_dir)["train/loss"]) > 6

    # 2. Resume from step 6; SIGTERM in epoch 2 saves a checkpoint in the middle of the epoch.
    process = _start(tiny_set, save_dir, "--resume")
    _wait_for_line(save_dir, "Epoch[2] Batch [0-1]", 1, process)
    process.send_signal(signal.SIGTERM)
    finish_training(process, save_dir, expected_status=128 + signal.SIGTERM)
    assert any("batch" in name for name in os.listdir(checkpoint.checkpoints_dir(str(save_dir))))

    # 3. Resume from there to the end.
    output = finish_training(_start(tiny_set, save_dir, "--resume"), save_dir)
    assert output.count("Resuming from") == 2, output
    assert len(os.listdir(checkpoint.tensorboard_dir(str(save_dir)))) == 3
    resumed, uninterrupted = _curves(save_dir), _curves(reference)
    assert sorted(resumed) == sorted(uninterrupted) == sorted(TRAIN_TAGS + VAL_TAGS)
    for tag in TRAIN_TAGS:
        assert [step for step, _ in resumed[tag]] == list(range(1, 19)), tag
    for tag in VAL_TAGS:
        assert [step for step, _ in resumed[tag]] == [6, 12, 18], tag
    # The same values, bit for bit, but for the speed, which is the machine's.
    for tag in sorted(set(resumed) - {"train/samples_per_sec"}):
        assert resumed[tag] == uninterrupted[tag], tag
