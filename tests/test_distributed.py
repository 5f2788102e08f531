"""Several workers on loopback: MXNet's parameter server (tools/launch.py and train_imagenet.py --kvstore dist_*)
and Horovod (horovodrun and --kvstore horovod)."""
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import time
from types import SimpleNamespace

import mxnet as mx
import pytest

import train_imagenet
from models import get_model
from tests.conftest import tiny_args
from tests.helpers import trainer_error_line
from tests.launch_job import HOROVODRUN, LAUNCHER, Job, horovod_launch_args, local_launch_args, needs_horovod
from utils import checkpoint
from utils.distributed import Cluster, weights_fingerprint
from utils.errors import UserError


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


def _check_two_workers_trained_and_rank_zero_wrote(output, save_dir):
    """Two workers (ranks) of the 2-epoch job on the tiny set stepped together, and rank 0 alone wrote."""
    # Each reads 48 of the 96 images: 3 global steps of 2 x 16 per epoch, so the rate decays after epoch 0 on
    # every one, as --lr-decay-epoch 1 asks.
    assert len(re.findall(r"\[rank [01]/2\] Epoch\[1\] lr=0.002 ", output)) == 2, output
    # One metrics line per epoch (two writers would give four), one log, one export.
    metrics = _read_metrics(save_dir)
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert [m["lr"] for m in metrics] == pytest.approx([0.02, 0.002])
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]
    assert sorted(os.listdir(save_dir)) == ["args.json", "args.yaml", "checkpoints", "classes.txt", "metrics.jsonl",
                                            "resnet18_v1d-0001.params", "resnet18_v1d-deploy-0000.params",
                                            "resnet18_v1d-deploy-symbol.json", "train.log"]


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
    _check_two_workers_trained_and_rank_zero_wrote(output, save_dir)
    assert sorted(os.listdir(os.path.join(save_dir, "checkpoints"))) == ["epoch-0000", "epoch-0001"]

    fingerprints = _check_both_hold_the_saved_weights(output, save_dir)
    assert job.leftovers() == []
    _check_epoch_1_resumes_to_the_same_weights(
        lambda resumed_dir: Job(local_launch_args(), _train_command(tiny_set, resumed_dir, "--last-gamma", "--resume")),
        save_dir, tmp_path, fingerprints)


def _check_both_hold_the_saved_weights(output, save_dir):
    """Both workers hold the same trainable weights, also after validation between the epochs (utils.devices,
    renew_parameter_arrays), and they are the ones rank 0 saved; returns the workers' fingerprints. (BatchNorm's
    running statistics differ by design: each worker accumulates its own over its shard.)"""
    fingerprints = _fingerprints(output)
    assert set(fingerprints) == {"0", "1"} and fingerprints["0"] == fingerprints["1"], output
    net = get_model("resnet18_v1d", classes=3)
    net.load_parameters(checkpoint.params_path(str(save_dir), "resnet18_v1d", 1))
    assert weights_fingerprint(net) == fingerprints["0"]
    return fingerprints


def _check_epoch_1_resumes_to_the_same_weights(start_job, save_dir, tmp_path, fingerprints):
    """Epoch 1 again from epoch 0's checkpoint, which holds the optimizer's states (the workers keep them): every
    worker loads them, and both end with the weights of the run that went through, bit for bit. (A worker
    restarting its momenta from zero would move other weights.)"""
    for folder, state in checkpoint.list_checkpoints(str(save_dir)):
        assert state["trainer_states"] and os.path.isfile(os.path.join(folder, checkpoint.OPTIMIZER_ARRAYS)), folder
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(save_dir, resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoints" / "epoch-0001")
    job = start_job(resumed_dir)
    code, output = job.wait(timeout=120)
    assert code == 0 and job.leftovers() == [], output
    assert len(re.findall(r"\[rank [01]/2\] Resuming from \S+epoch-0000: epoch 1, batch 0, 3 updates done", output)) \
        == 2, output
    assert "momentum restarts" not in output
    assert _fingerprints(output) == fingerprints, output


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


def _horovod_job(tiny_set, save_dir, *extra):
    """train_imagenet.py --kvstore horovod on the tiny set, two ranks on this machine (horovodrun over Gloo)."""
    needs_horovod()
    return Job(horovod_launch_args(), [sys.executable, "train_imagenet.py",
                                       *tiny_args(tiny_set, save_dir, "--kvstore", "horovod", *extra)],
               launcher=HOROVODRUN)


def test_two_horovod_ranks_train_in_step_and_resume_with_the_optimizer_states(tiny_set, tmp_path):
    save_dir = tmp_path / "run"
    job = _horovod_job(tiny_set, save_dir, "--last-gamma")
    code, output = job.wait(timeout=120)
    assert code == 0 and job.leftovers() == [], output
    _check_two_workers_trained_and_rank_zero_wrote(output, save_dir)
    fingerprints = _check_both_hold_the_saved_weights(output, save_dir)
    _check_epoch_1_resumes_to_the_same_weights(
        lambda resumed_dir: _horovod_job(tiny_set, resumed_dir, "--last-gamma", "--resume"), save_dir, tmp_path,
        fingerprints)


@pytest.mark.parametrize("kvstore, signalled",
                         [("dist_sync", "rank 1"), ("horovod", "rank 1"), ("dist_sync", "the launcher")])
def test_sigterm_stops_every_worker_after_the_same_step_and_rank_0_saves_it(kvstore, signalled, tiny_set, tmp_path):
    """SIGTERM to rank 1 alone: without the workers' agreement (``Cluster.agree_to_stop``) rank 1 would leave and
    rank 0 wait in the next step's reduction until the launcher killed it, without a checkpoint. SIGTERM to
    tools/launch.py: it must let the workers save before it stops the servers they need."""
    save_dir = tmp_path / "run"
    flags = ("--num-epochs", "40", "--batch-size", "2", "--log-interval", "1")
    job = _horovod_job(tiny_set, save_dir, *flags) if kvstore == "horovod" else \
        Job(local_launch_args(), _train_command(tiny_set, save_dir, *flags))
    try:
        line = job.wait_for_line(r"\[rank 1/2\] Epoch\[0\] Batch", 90)
        if signalled == "the launcher":
            target = job.popen.pid
        elif kvstore == "horovod":
            target = job.python_process("HOROVOD_RANK", "1")
        else:  # ps-lite numbers its workers itself: rank 1 is whichever worker logs it
            worker = re.match(r"\[worker (\d+)\]", line).group(1)
            target = int(re.search(r"pid (\d+)", job.wait_for_line(rf"launch: started worker {worker} ", 1)).group(1))
        os.kill(target, signal.SIGTERM)
        code, output = job.wait(timeout=60)
    finally:
        job.kill_leftovers()
    stops = re.findall(r"stopped: SIGTERM (after batch \d+ of epoch \d+|at the end of epoch \d+)", output)
    assert len(stops) == 2 and stops[0] == stops[1], output
    assert code == (128 + signal.SIGTERM if signalled == "the launcher" else 1) and job.leftovers() == [], output
    batch = re.search(r"after batch (\d+) of epoch (\d+)", stops[0])
    expected = checkpoint.checkpoint_name(int(batch.group(2)), int(batch.group(1))) if batch else \
        checkpoint.checkpoint_name(int(stops[0].split()[-1]))
    folders = [os.path.basename(folder) for folder, _ in checkpoint.list_checkpoints(str(save_dir))]
    assert folders[-1] == expected, (folders, output)


@pytest.mark.parametrize("kvstore", ["dist_sync", "horovod"])
def test_an_overflow_on_one_worker_skips_the_step_on_every_worker(kvstore, tiny_set, tmp_path):
    """--dtype float16's dynamic loss scaling: worker 1's infinite gradient reaches worker 0 in the summed gradient,
    which AMP checks before each worker updates, so both skip the step (``tests/overflow_run.py``)."""
    command = [sys.executable, "-m", "tests.overflow_run",
               *tiny_args(tiny_set, tmp_path, "--kvstore", kvstore, "--batch-size", "4")]
    if kvstore == "horovod":
        needs_horovod()
        job = Job(horovod_launch_args(), command, launcher=HOROVODRUN)
    else:
        job = Job(local_launch_args(num_workers=2, num_servers=1), command)
    code, output = job.wait(timeout=120)
    assert code == 0 and job.leftovers() == [], output
    assert sorted(re.findall(r"rank ([01]): skipped True, scale halved True, moved after True, weights", output)) \
        == ["0", "1"], output
    assert len(set(re.findall(r"rank [01]: .*, weights ([0-9a-f]{64})", output))) == 1, output


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


@pytest.mark.parametrize("flags, message", [
    (["-n", "0", "--launcher", "local"], "-n and -s must be at least 1"),
    (["-n", "2", "--launcher", "local", "--stop-seconds", "-1"], "--stop-seconds must be 0 or more"),
    (["-n", "2"], "--launcher ssh needs -H HOSTFILE"),
])
def test_the_launcher_refuses_bad_settings_in_its_last_line(flags, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        launch.main([*flags, "python", "train.py"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")


HOST_ADVICE = "give one host name or address a line (a user name or port goes in ~/.ssh/config)"


@pytest.mark.parametrize("second_line, message", [
    ("-oProxyCommand=touch {pwned}", "'-oProxyCommand=touch {pwned}' starts with '-', which ssh would take for an "
                                     f"option; {HOST_ADVICE}"),
    ("node2 node3", "'node2 node3' is not a host name or IPv4 address (letters, digits, '.', '-' and '_'); "
                    + HOST_ADVICE),
    ("node2;touch {pwned}", "'node2;touch {pwned}' is not a host name or IPv4 address (letters, digits, '.', '-' "
                            f"and '_'); {HOST_ADVICE}"),
    ("`touch {pwned}`", "'`touch {pwned}`' is not a host name or IPv4 address (letters, digits, '.', '-' and '_'); "
                        + HOST_ADVICE),
    ("$(touch {pwned})", "'$(touch {pwned})' is not a host name or IPv4 address (letters, digits, '.', '-' and "
                         f"'_'); {HOST_ADVICE}"),
    ("me@node2", f"'me@node2' is not a host name or IPv4 address (letters, digits, '.', '-' and '_'); {HOST_ADVICE}"),
], ids=["option", "two-words", "semicolon", "backticks", "command-substitution", "user"])
def test_the_launcher_refuses_a_host_line_that_ssh_or_a_shell_would_read_as_more_than_a_host(
        second_line, message, tmp_path, capsys):
    """One line naming the file and line, exit 2, and nothing started: the command a line carries never runs."""
    pwned = tmp_path / "pwned"
    hostfile = tmp_path / "hosts"
    hostfile.write_text(f"node1  # the first\n{second_line.format(pwned=pwned)}\n")
    assert launch.main(["-n", "2", "--launcher", "ssh", "-H", str(hostfile), "python", "train.py"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"launch: error: {hostfile} line 2: {message.format(pwned=pwned)}"]
    assert not pwned.exists()


@pytest.mark.parametrize("contents, message", [
    (None, "cannot read host file {hostfile}: No such file or directory"),
    ("# nothing yet\n\n", "host file {hostfile} lists no host"),
], ids=["missing", "no-host"])
def test_a_missing_or_empty_host_file_is_one_line(contents, message, tmp_path, capsys):
    hostfile = tmp_path / "hosts"
    if contents is not None:
        hostfile.write_text(contents)
    assert launch.main(["-n", "2", "--launcher", "ssh", "-H", str(hostfile), "python", "train.py"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"launch: error: {message.format(hostfile=hostfile)}"]


@pytest.mark.parametrize("interface, message", [
    ("nosuch0", "--interface 'nosuch0' is not a network interface of this machine, whose interfaces are {names}"),
    # ps-lite would take the first interface whose name begins with it: lo here.
    ("l", "--interface 'l' is not a network interface of this machine, whose interfaces are {names}"),
    ("", "--interface needs the name of a network interface, e.g. eth1"),
], ids=["unknown", "prefix", "empty"])
def test_the_launcher_refuses_an_interface_it_cannot_pin_in_one_line(interface, message, capsys):
    names = [name for _, name in socket.if_nameindex()]
    assert "lo" in names
    assert launch.main(["-n", "2", "--launcher", "local", "--interface", interface, "python", "train.py"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"launch: error: {message.format(names=', '.join(names))}"]


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
    assert argv[:-1] == ["ssh", "-tt", "-o", "BatchMode=yes", "--", "127.0.0.3"]
    # The remote shell splits the string back into exactly the arguments given, the hostile one intact.
    words = shlex.split(argv[-1])
    assert words[:4] == ["cd", os.getcwd(), "&&", "exec"]
    assert words[-4:] == ["python", "train.py", "--save-dir", hostile]
    assert "DMLC_PS_ROOT_URI=127.0.0.2" in words and "DMLC_ROLE=worker" in words


def test_the_interface_reaches_the_scheduler_the_servers_and_the_workers(tmp_path):
    """Named, it replaces the loopback address of a local job, which ps-lite would read first."""
    args = launch.build_parser().parse_args(["-n", "2", "-s", "1", "--launcher", "local", "--interface", "lo",
                                             "python", "train.py"])
    environments = [env for *_, env in launch.plan(args)]
    assert [env["DMLC_INTERFACE"] for env in environments] == ["lo"] * 4
    assert [env for env in environments if "DMLC_NODE_HOST" in env] == []
    hostfile = tmp_path / "hosts"
    hostfile.write_text("127.0.0.2\n127.0.0.3\n")
    args = launch.build_parser().parse_args(["-n", "2", "-s", "2", "--launcher", "ssh", "-H", str(hostfile),
                                             "--interface", "eth1", "python", "train.py"])
    remote_words = [shlex.split(argv[-1]) for _, _, argv, _ in launch.plan(args)]
    assert ["DMLC_INTERFACE=eth1" in words for words in remote_words] == [True] * 5


# A worker that joins the job, says so, and stays until the test has looked at the job's sockets.
JOIN_AND_WAIT = """
import os, sys, time
import mxnet as mx
kv = mx.kv.create("dist_sync")
print("joined as rank", kv.rank, flush=True)
deadline = time.time() + 60
while not os.path.exists(sys.argv[1]) and time.time() < deadline:
    time.sleep(0.1)
"""


def test_a_job_pinned_to_loopback_listens_on_loopback_alone(tmp_path):
    release = tmp_path / "release"
    job = Job([*local_launch_args(num_workers=2, num_servers=1), "--interface", "lo"],
              [sys.executable, "-c", JOIN_AND_WAIT, str(release)])
    try:
        for worker in (0, 1):
            job.wait_for_line(rf"\[worker {worker}\] joined as rank", 60)
        listening = job.listening_addresses()
        release.touch()
        code, output = job.wait(timeout=60)
    finally:
        job.kill_leftovers()
    assert code == 0, output
    # The scheduler, the server and both workers, each on one port of 127.0.0.1.
    assert sorted(listening.values()) == [["127.0.0.1"]] * 4, (listening, output)


def _horovod_installed(monkeypatch, installed):
    """``find_spec("horovod")`` answers as if Horovod were installed or not, whatever this environment holds."""
    find_spec = importlib.util.find_spec
    answer = SimpleNamespace(name="horovod") if installed else None
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: answer if name == "horovod" else find_spec(name, *args))


def test_horovod_without_horovod_says_how_to_build_it(capsys, monkeypatch, tiny_set, tmp_path):
    _horovod_installed(monkeypatch, False)
    monkeypatch.setenv("HOROVOD_RANK", "0")
    line = trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--kvstore", "horovod"))
    assert line == ("error: --kvstore horovod needs Horovod built with MXNet support, which is not installed; build "
                    "it against this MXNet with `python -m tools.install_horovod` (docs/multi-machine.md, Horovod), "
                    "or use --kvstore dist_sync with tools/launch.py")


def test_horovod_outside_horovodrun_says_how_to_launch(capsys, monkeypatch, tiny_set, tmp_path):
    _horovod_installed(monkeypatch, True)
    monkeypatch.delenv("HOROVOD_RANK", raising=False)
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--kvstore", "horovod")) == (
        "error: --kvstore horovod runs as one rank of a job that horovodrun starts, but HOROVOD_RANK is not set; "
        "launch it with `horovodrun -np N -H host1:slots,host2:slots python train_imagenet.py ... --kvstore "
        "horovod` (N = all devices, one process each), or use --kvstore device on one machine")


ONE_DEVICE_PER_PROCESS = ("error: --kvstore horovod trains one device per process, rank r of a machine on its GPU r: "
                          "start one process per device (horovodrun -np DEVICES -H host:GPUS) with --num-gpus 1, or "
                          "on CPUs without --num-cpu-contexts; pick the GPUs with CUDA_VISIBLE_DEVICES, not --gpus")


@pytest.mark.parametrize("flags, message", [
    (("--num-cpu-contexts", "2"), ONE_DEVICE_PER_PROCESS),
    (("--num-gpus", "2"), ONE_DEVICE_PER_PROCESS),
    (("--gpus", "1"), ONE_DEVICE_PER_PROCESS),
    (("--gradient-compression", "2bit"), "error: --gradient-compression 2bit is done by MXNet's kvstore under "
                                         "--kvstore device (several devices) and dist_*, not under --kvstore horovod"),
    (("--skip-bad-records",), "error: --skip-bad-records reads packed .rec files on one machine; for --data-dir pack "
                              "the images (`python -m data.pack` skips unreadable files), for several machines clean "
                              "the .rec once with `python -m data.clean TRAIN.rec --out CLEAN` and train on CLEAN.rec"),
], ids=["cpu-contexts", "gpus", "gpu-ids", "compression", "skip-bad-records"])
def test_horovod_refuses_what_it_would_not_train_as_asked(flags, message, capsys, tiny_set, tmp_path):
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--kvstore", "horovod", *flags)) == message


def test_float16_under_dist_async_is_one_line_and_dist_sync_passes_the_check(capsys, tiny_set, tmp_path):
    """dist_async's servers run the optimizer and would apply an overflowed step; dist_sync's workers skip it (see
    test_an_overflow_on_one_worker_skips_the_step_on_every_worker), so its check goes on to the launcher's."""
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--kvstore", "dist_async", "--dtype", "float16")) \
        == ("error: --dtype float16 is not supported with --kvstore dist_async, whose servers would apply an "
            "overflowed step; use --kvstore dist_sync or --dtype float32")
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--kvstore", "dist_sync", "--dtype", "float16")) \
        .startswith("error: --kvstore dist_sync runs as one worker of a job that tools/launch.py starts")


@pytest.mark.parametrize("kvstore", ["dist_sync", "horovod"])
def test_dist_kvstore_needs_record_files(kvstore, capsys, tmp_path):
    assert train_imagenet.main(["--data-dir", str(tmp_path), "--kvstore", kvstore]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--kvstore {kvstore} gives each worker a shard of --rec-train" in err[0], err


def test_sync_steps_divide_by_the_global_batch_and_async_schedules_count_every_push():
    """And where the optimizer runs: on every sync worker, on the servers under async."""
    sync = Cluster(SimpleNamespace(type="dist_sync"), rank=1, num_workers=4)
    assert (sync.step_batch(32), sync.updates_per_epoch(10), sync.update_on_kvstore, sync.is_chief,
            sync.workers_update_in_step) == (128, 10, False, False, True)
    assert Cluster(SimpleNamespace(type="dist_device_sync"), num_workers=2).update_on_kvstore is False
    asynchronous = Cluster(SimpleNamespace(type="dist_async"), rank=0, num_workers=4)
    assert (asynchronous.step_batch(32), asynchronous.updates_per_epoch(10), asynchronous.update_on_kvstore,
            asynchronous.workers_update_in_step) == (32, 40, True, False)
    # After 3 of the 10 batches of epoch 2: sync workers made 23 updates, 4 async ones 92 between them.
    assert (sync.global_step(10, 2, 3), asynchronous.global_step(10, 2, 3)) == (23, 92)
    single = Cluster("device")
    assert (single.step_batch(32), single.updates_per_epoch(10), single.update_on_kvstore, single.is_chief) == \
        (32, 10, None, True)


def test_horovod_steps_divide_by_the_rank_batch_and_every_rank_runs_the_optimizer():
    # Horovod's trainer averages over the 4 ranks (its scale carries 1/4): sum / 4 / 32, the global batch's mean.
    ranks = Cluster("horovod", rank=1, num_workers=4, local_rank=1)
    assert (ranks.step_batch(32), ranks.updates_per_epoch(10), ranks.global_step(10, 2, 3), ranks.update_on_kvstore,
            ranks.is_async, ranks.is_chief) == (32, 10, 23, False, False, False)
    assert ranks.own_devices([mx.cpu(0)]) == [mx.cpu(0)]
    beyond = mx.context.num_gpus()  # the local rank of a machine's one process too many
    with pytest.raises(UserError, match=rf"horovodrun started rank {beyond} of this machine, which takes GPU {beyond}, "
                                        rf"but this MXNet sees {beyond}; start at most as many processes per machine "
                                        "as it has GPUs"):
        Cluster("horovod", rank=beyond, num_workers=beyond + 1, local_rank=beyond).own_devices([mx.gpu(0)])
