"""Several workers on MXNet's parameter server, on loopback: tools/launch.py and train_imagenet.py --kvstore dist_*."""
import importlib.util
import json
import os
import re
import shlex
import signal
import sys
import time
from types import SimpleNamespace

import pytest

import train_imagenet
from models import get_model
from tests.conftest import tiny_args
from tests.launch_job import LAUNCHER, Job, local_launch_args
from utils import checkpoint
from utils.distributed import Cluster, weights_fingerprint


def _load_launcher():
    spec = importlib.util.spec_from_file_location("launch", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launch = _load_launcher()


def _train_command(tiny_set, save_dir, *extra):
    return [sys.executable, "train_imagenet.py", *tiny_args(tiny_set, save_dir, "--kvstore", "dist_sync", *extra)]


def _read_metrics(save_dir):
    with open(checkpoint.metrics_path(str(save_dir))) as handle:
        return [json.loads(line) for line in handle]


def _fingerprints(output):
    return dict(re.findall(r"\[rank (\d)/2\] Trainable weights fingerprint ([0-9a-f]{64})", output))


def test_two_workers_train_in_step_and_rank_zero_alone_writes(tiny_set, tmp_path):
    save_dir = tmp_path / "run"
    # Zero gamma, as in the demo: without it 6 steps on batches of 16 leave the training loss too erratic to show
    # that the run learned.
    job = Job(local_launch_args(), _train_command(tiny_set, save_dir, "--last-gamma"))
    code, output = job.wait(timeout=120)
    assert code == 0, output
    assert "[worker 0]" in output and "[worker 1]" in output
    # Each worker reads 48 of the 96 images: 3 global steps of 2 x 16 per epoch, so the rate decays after
    # epoch 0 on every worker, as --lr-decay-epoch 1 asks.
    assert len(re.findall(r"\[rank [01]/2\] Epoch\[1\] lr=0.002 ", output)) == 2, output

    # Rank 0 alone writes: one metrics line per epoch (two writers would give four), one log, one export.
    metrics = _read_metrics(save_dir)
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert [m["lr"] for m in metrics] == pytest.approx([0.02, 0.002])
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]
    assert sorted(os.listdir(save_dir)) == ["args.json", "args.yaml", "checkpoints", "classes.txt", "metrics.jsonl",
                                            "resnet18_v1d-0001.params", "resnet18_v1d-deploy-0000.params",
                                            "resnet18_v1d-deploy-symbol.json", "train.log"]
    assert sorted(os.listdir(os.path.join(save_dir, "checkpoints"))) == ["epoch-0000", "epoch-0001"]

    # Both workers hold the same trainable weights, and they are the ones rank 0 saved. (BatchNorm's running
    # statistics differ by design: each worker accumulates its own over its shard.)
    fingerprints = _fingerprints(output)
    assert set(fingerprints) == {"0", "1"} and fingerprints["0"] == fingerprints["1"], output
    net = get_model("resnet18_v1d", classes=3)
    net.load_parameters(checkpoint.params_path(str(save_dir), "resnet18_v1d", 1))
    assert weights_fingerprint(net) == fingerprints["0"]
    assert job.leftovers() == []


def test_the_input_tricks_train_in_step_on_two_workers(tiny_set, tmp_path):
    """--progressive-resize (24 then 32), --ra-reps 2 and --auto-augment ta_wide under dist_sync: each worker
    reads its shard at the epoch's size, both end with the same weights, and rank 0 records the sizes."""
    save_dir = tmp_path / "run"
    command = _train_command(tiny_set, save_dir, "--progressive-resize", "24,32", "--progressive-resize-step", "8",
                             "--ra-reps", "2", "--auto-augment", "ta_wide")
    at = command.index("--input-size")
    del command[at:at + 2]
    job = Job(local_launch_args(), command)
    code, output = job.wait(timeout=120)
    assert code == 0, output
    metrics = _read_metrics(save_dir)
    assert [m["input_size"] for m in metrics] == [24, 32]
    assert all(0 < m["train_loss"] < 10 for m in metrics)
    assert len(re.findall(r"\[rank [01]/2\] Epoch\[1\] .* samples/sec at 32x32 ", output)) == 2, output
    fingerprints = _fingerprints(output)
    assert set(fingerprints) == {"0", "1"} and fingerprints["0"] == fingerprints["1"], output
    assert job.leftovers() == []


def test_a_killed_worker_stops_the_whole_job(tiny_set, tmp_path):
    job = Job(local_launch_args(),
              _train_command(tiny_set, tmp_path / "run", "--num-epochs", "200", "--log-interval", "1"))
    try:
        started = job.wait_for_line(r"launch: started worker 1 \(pid \d+\)", 30)
        pid = int(re.search(r"pid (\d+)", started).group(1))
        job.wait_for_line(r"\[rank [01]/2\] Epoch\[0\] Batch", 90)  # both are in the middle of training
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        code, output = job.wait(timeout=60)
        assert time.time() - killed_at < 60
    finally:
        job.kill_leftovers()
    assert code != 0
    assert f"launch: worker 1 (pid {pid}, host 127.0.0.1) was killed by SIGKILL" in output, output
    assert job.leftovers() == []


def test_launcher_stops_everything_on_sigterm():
    job = Job(local_launch_args(num_workers=2, num_servers=1),
              [sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        job.wait_for_line(r"launch: started worker 1", 30)
        time.sleep(1)
        job.popen.send_signal(signal.SIGTERM)
        code, output = job.wait(timeout=30)
    finally:
        job.kill_leftovers()
    assert code == 128 + signal.SIGTERM
    assert "launch: got SIGTERM; stopped all 4 processes" in output
    assert job.leftovers() == []


def test_local_plan_sets_the_ps_lite_environment_on_loopback():
    args = launch.build_parser().parse_args(["-n", "2", "-s", "1", "--launcher", "local", "--port", "9300",
                                             "python", "train.py", "--kvstore", "dist_sync"])
    processes = launch.plan(args)
    assert [label for label, *_ in processes] == ["scheduler", "server 0", "worker 0", "worker 1"]
    scheduler, server, worker = processes[0], processes[1], processes[2]
    assert scheduler[2] == [sys.executable, "-c", "import mxnet"] == server[2]
    assert worker[2] == ["python", "train.py", "--kvstore", "dist_sync"]
    assert worker[3] == {"DMLC_ROLE": "worker", "DMLC_PS_ROOT_URI": "127.0.0.1", "DMLC_PS_ROOT_PORT": "9300",
                         "DMLC_NUM_SERVER": "1", "DMLC_NUM_WORKER": "2", "DMLC_NODE_HOST": "127.0.0.1"}
    assert server[3]["DMLC_ROLE"] == "server" and scheduler[3]["DMLC_ROLE"] == "scheduler"


def test_ssh_plan_quotes_the_remote_command(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# two machines\n127.0.0.2\n\n127.0.0.3  # the second\n")
    hostile = "a b; touch /tmp/pwned $(id)"
    args = launch.build_parser().parse_args(["-n", "2", "-s", "2", "--launcher", "ssh", "-H", str(hostfile),
                                             "python", "train.py", "--save-dir", hostile])
    processes = launch.plan(args)
    assert [host for _, host, *_ in processes] == ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.2",
                                                   "127.0.0.3"]
    label, host, argv, extra_env = processes[-1]
    assert (label, extra_env) == ("worker 1", {})
    assert argv[:-1] == ["ssh", "-tt", "-o", "BatchMode=yes", "127.0.0.3"]
    # The remote shell splits the string back into exactly the arguments given, the hostile one intact.
    words = shlex.split(argv[-1])
    assert words[:4] == ["cd", os.getcwd(), "&&", "exec"]
    assert words[-4:] == ["python", "train.py", "--save-dir", hostile]
    assert "DMLC_PS_ROOT_URI=127.0.0.2" in words and "DMLC_ROLE=worker" in words


def test_horovod_without_horovod_is_one_line(capsys, tiny_set, tmp_path):
    assert train_imagenet.main(tiny_args(tiny_set, tmp_path, "--kvstore", "horovod")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --kvstore horovod needs Horovod"), err


def test_dist_kvstore_needs_record_files(capsys, tmp_path):
    assert train_imagenet.main(["--data-dir", str(tmp_path), "--kvstore", "dist_sync"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--kvstore dist_sync gives each worker a shard of --rec-train" in err[0], err


def test_sync_steps_divide_by_the_global_batch_and_async_schedules_count_every_push():
    sync = Cluster(SimpleNamespace(type="dist_sync"), rank=1, num_workers=4)
    assert (sync.step_batch(32), sync.updates_per_epoch(10), sync.update_on_kvstore, sync.is_chief) == \
        (128, 10, True, False)
    asynchronous = Cluster(SimpleNamespace(type="dist_async"), rank=0, num_workers=4)
    assert (asynchronous.step_batch(32), asynchronous.updates_per_epoch(10), asynchronous.update_on_kvstore) == \
        (32, 40, True)
    # After 3 of the 10 batches of epoch 2: sync workers made 23 updates, 4 async ones 92 between them.
    assert (sync.global_step(10, 2, 3), asynchronous.global_step(10, 2, 3)) == (23, 92)
    single = Cluster("device")
    assert (single.step_batch(32), single.updates_per_epoch(10), single.update_on_kvstore, single.is_chief) == \
        (32, 10, None, True)
