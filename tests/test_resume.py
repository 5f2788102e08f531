"""Nothing lost: checkpoints are whole, a resumed run computes what the uninterrupted one did, bit for bit.

The end-to-end tests run ``train_imagenet.py`` in subprocesses in MXNet's deterministic mode: one data
thread, ``MXNET_ENFORCE_DETERMINISM=1``, one OpenMP thread and MXNet's synchronous engine
(``MXNET_ENGINE_TYPE=NaiveEngine``). Without the last two, two identical runs here matched bit for bit
through the first epoch and then differed by about 2e-7 in some runs, with the default threaded engine
even at one OpenMP thread.
"""
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import time

import mxnet as mx
import numpy as np
import pytest

import train_imagenet
from engine.config import parse_config
from engine.resume import check_same_run
from tests.conftest import ONE_EPOCH, tiny_args
from utils.errors import UserError
from tests.helpers import RunRecorder, finish_training, pickled_trainer_states, start_training, trainer_error_line
from utils import checkpoint

# Every trick whose state crosses epochs: warmup and cosine (the update count), mixup and CutMix (their generator),
# random erasing (the batch it is at), smoothing, the weights' moving average (its values and its step count:
# updated every 5th step, 6 an epoch, so that the resumes below, after epoch 0 or 1 or batch 1 to 3 of epoch 1,
# fall between two updates).
RECIPE = ["--num-epochs", "4", "--lr-mode", "cosine", "--warmup-epochs", "1", "--mixup", "--cutmix", "1.0",
          "--mixup-prob", "0.8", "--reprob", "0.5", "--label-smoothing", "--model-ema", "--model-ema-decay", "0.9",
          "--model-ema-steps", "5", "--save-frequency", "1", "--keep-checkpoints", "2"]
# Training crops of 24, 32, 32 and 40 over the 4 epochs (FFCV's rounding of 24 + 16 e / 3 to multiples of 8),
# validation at 32: a resumed epoch must be read, and the network run, at that epoch's size.
PROGRESSIVE = ["--progressive-resize", "24,40", "--progressive-resize-step", "8", "--val-input-size", "32"]
FINAL_PARAMS = "resnet18_v1d-0003.params"
FINAL_EMA_PARAMS = "resnet18_v1d-ema-0003.params"


def _start(tiny_set, save_dir, *extra):
    """Start a training process; its output goes to SAVE_DIR.out.txt (a pipe could fill and block it)."""
    flags = tiny_args(tiny_set, save_dir, *RECIPE, *extra)
    if "--progressive-resize" in extra:  # which sets the training crops instead of --input-size
        at = flags.index("--input-size")
        flags = flags[:at] + flags[at + 2:]
    return start_training(flags, save_dir)


def _wait_until(condition, process, timeout=120):
    """Poll every millisecond, so that a kill lands inside short windows such as a checkpoint being written."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before the moment the test waits for"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def _stop_by_sigterm_after_first_batch(process, save_dir, epoch):
    """SIGTERM to a run started with ``--log-interval 1`` once it has logged epoch EPOCH's first batch, so that it
    stops in the middle of that epoch (however fast the machine: the epoch has batches still to come); it exits with
    143, its newest checkpoint that epoch's mid-epoch one. Returns its output."""
    _wait_until(lambda: _log_count(save_dir, f"Epoch[{epoch}] Batch [0-1]") == 1, process)
    process.send_signal(signal.SIGTERM)
    output = finish_training(process, save_dir, expected_status=128 + signal.SIGTERM)
    newest = os.path.basename(checkpoint.list_checkpoints(str(save_dir))[-1][0])
    assert newest.startswith(f"epoch-{epoch:04d}-batch-"), newest
    return output


def _hidden_checkpoints(save_dir, prefix):
    folder = checkpoint.checkpoints_dir(str(save_dir))
    return os.path.isdir(folder) and any(name.startswith(prefix) for name in os.listdir(folder))


def _metric_lines(save_dir):
    path = checkpoint.metrics_path(str(save_dir))
    if not os.path.exists(path):
        return 0
    with open(path) as handle:
        return sum(1 for line in handle if line.endswith("\n"))


def _log_count(save_dir, text):
    with open(f"{save_dir}.out.txt") as log:
        return log.read().count(text)


def _params(path):
    return {name: array.asnumpy() for name, array in mx.nd.load(str(path)).items()}


def _assert_same_params(path, reference_path):
    actual, expected = _params(path), _params(reference_path)
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def _assert_same_final_params(save_dir, reference):
    """The network's and the moving average's final parameters are the reference run's, bit for bit."""
    for name in (FINAL_PARAMS, FINAL_EMA_PARAMS):
        _assert_same_params(save_dir / name, reference / name)


def _metrics(save_dir):
    """The figures of metrics.jsonl that do not depend on the machine's speed."""
    return [{key: record.get(key) for key in ("epoch", "lr", "train_loss", "train_top1", "val_top1", "val_top5",
                                              "val_top1_ema", "val_top5_ema", "input_size")}
            for record in checkpoint.read_metrics(str(save_dir))]


@pytest.fixture(scope="module")
def reference(tiny_set, tmp_path_factory):
    """The uninterrupted run: 4 epochs of 6 batches."""
    save_dir = tmp_path_factory.mktemp("reference") / "run"
    finish_training(_start(tiny_set, save_dir), save_dir)
    return save_dir


def test_two_uninterrupted_runs_are_identical(reference, tiny_set, tmp_path):
    """The premise of the resume tests: in deterministic mode a run repeats bit for bit."""
    save_dir = tmp_path / "again"
    finish_training(_start(tiny_set, save_dir), save_dir)
    _assert_same_final_params(save_dir, reference)


def test_kill_9_while_writing_a_checkpoint_and_mid_epoch_then_resume_gives_the_same_run(reference, tiny_set,
                                                                                        tmp_path):
    save_dir = tmp_path / "killed"
    # 1. SIGKILL while the checkpoint of epoch 1 is being written (its hidden temporary folder exists).
    process = _start(tiny_set, save_dir)
    _wait_until(lambda: _hidden_checkpoints(save_dir, ".epoch-0001."), process)
    process.kill()
    process.wait()
    names = os.listdir(checkpoint.checkpoints_dir(str(save_dir)))
    assert "epoch-0000" in names and "epoch-0001" not in names, names
    assert any(name.startswith(".epoch-0001.") for name in names), names

    # 2. Resume: it continues after epoch 0, ignoring the half-written folder; SIGKILL again in epoch 2.
    process = _start(tiny_set, save_dir, "--resume")
    _wait_until(lambda: _log_count(save_dir, "Resuming from") == 1 and _metric_lines(save_dir) >= 2, process)
    time.sleep(0.4)
    process.kill()
    process.wait()

    # 3. Resume to the end.
    output = finish_training(_start(tiny_set, save_dir, "--resume"), save_dir)
    assert output.count("Resuming from") == 2, output
    _assert_same_final_params(save_dir, reference)
    assert _metrics(save_dir) == _metrics(reference)
    # The 2 newest checkpoints and the best (by validation top-1; of equals the newest) are kept.
    assert not any(name.startswith(".") for name in os.listdir(checkpoint.checkpoints_dir(str(save_dir))))


def test_sigterm_saves_mid_epoch_and_resume_finishes_the_same_epoch(reference, tiny_set, tmp_path):
    save_dir = tmp_path / "preempted"
    # A line after every batch (logging changes nothing computed): the signal goes once epoch 1's first batch
    # is done, with five still to come however fast the machine.
    output = _stop_by_sigterm_after_first_batch(_start(tiny_set, save_dir, "--log-interval", "1"), save_dir, 1)
    assert "stopped: SIGTERM after batch" in output and "--resume" in output, output
    mid_epoch = [name for name in os.listdir(checkpoint.checkpoints_dir(str(save_dir))) if "batch" in name]
    assert len(mid_epoch) == 1 and mid_epoch[0].startswith("epoch-0001-batch-"), mid_epoch

    finish_training(_start(tiny_set, save_dir, "--resume"), save_dir)
    _assert_same_final_params(save_dir, reference)
    # The resumed epoch 1 reports its whole loss and top-1, the batches before the signal included.
    assert _metrics(save_dir) == _metrics(reference)


def _gluoncv_states(tiny_set, folder, path):
    return pickled_trainer_states(tiny_args(tiny_set, path.parent / "builder", *RECIPE), folder, path)


def test_gluoncv_resume_flags_continue_schedule_and_metrics(reference, tiny_set, tmp_path, monkeypatch):
    """--resume-epoch/--resume-params/--resume-states as in GluonCV: epoch 3 starts from epoch 2's weights and
    update count, so its rate continues at epoch 3's."""
    save_dir = tmp_path / "gluoncv-style"
    epoch_2 = reference / "checkpoints" / "epoch-0002"
    states = _gluoncv_states(tiny_set, epoch_2, tmp_path / "epoch-0002.states")
    recorder = RunRecorder(monkeypatch)
    argv = tiny_args(tiny_set, save_dir, *RECIPE, "--resume-epoch", "3", "--resume-params",
                     str(epoch_2 / "resnet18_v1d-0002.params"), "--resume-states", str(states),
                     "--trust-pickled-states")
    assert train_imagenet.main(argv) == 0
    lines = checkpoint.read_metrics(str(save_dir))
    assert [record["epoch"] for record in lines] == [3]
    # At its first step every weight, gamma and beta is the file's (the first forward pass has moved only
    # BatchNorm's running statistics) ...
    saved = _params(epoch_2 / "resnet18_v1d-0002.params")
    for key, value in recorder.at_first_step.items():
        if not key.endswith(("running_mean", "running_var")):
            np.testing.assert_array_equal(value, saved[key], err_msg=key)
    # ... and the optimizer counted on from update 18 (3 epochs of 6 batches) to the schedule's last, 24.
    assert recorder.trainer.optimizer.num_update == 24
    assert lines[0]["lr"] == checkpoint.read_metrics(str(reference))[3]["lr"] == 0.0


def test_rotation_keeps_the_newest_and_the_best(tmp_path):
    net = mx.gluon.nn.Dense(2, in_units=3)
    net.initialize()
    for epoch, top1 in enumerate([0.5, 0.9, 0.6, 0.7, 0.8]):
        state = dict(epoch=epoch + 1, batch=0, global_step=10 * (epoch + 1), val_top1=top1)
        checkpoint.save_checkpoint(str(tmp_path), checkpoint.checkpoint_name(epoch), net, None, state, {},
                                   f"dense-{epoch:04d}.params")
        checkpoint.prune_checkpoints(str(tmp_path), keep=2)
    kept = [os.path.basename(path) for path, _ in checkpoint.list_checkpoints(str(tmp_path))]
    assert kept == ["epoch-0001", "epoch-0003", "epoch-0004"]


def test_a_failed_write_leaves_no_checkpoint_and_the_previous_one_whole(tmp_path):
    net = mx.gluon.nn.Dense(2, in_units=3)
    net.initialize()
    checkpoint.save_checkpoint(str(tmp_path), "epoch-0000", net, None, dict(epoch=1, batch=0, global_step=5), {},
                               "dense-0000.params")

    class FullDisk(mx.gluon.nn.Dense):
        def save_parameters(self, path):
            raise OSError(28, "No space left on device")

    with pytest.raises(UserError, match=f"cannot write checkpoint {tmp_path}/checkpoints/epoch-0001 \\(No space "
                                        "left on device\\); epoch-0000 is whole; free space"):
        checkpoint.save_checkpoint(str(tmp_path), "epoch-0001", FullDisk(2), None,
                                   dict(epoch=2, batch=0, global_step=10), {}, "dense-0001.params")
    assert os.listdir(checkpoint.checkpoints_dir(str(tmp_path))) == ["epoch-0000"]


def test_a_new_run_refuses_to_overwrite_an_earlier_one(reference, tiny_set, tmp_path, capsys):
    assert train_imagenet.main(tiny_args(tiny_set, reference)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds an earlier run (checkpoints up to epoch-0003)" in err[0], err


def _files(save_dir):
    """Every file under ``save_dir`` with its bytes' digest: what a refused command must leave as it was."""
    return {os.path.relpath(os.path.join(root, name), save_dir): hashlib.sha256(
        open(os.path.join(root, name), "rb").read()).hexdigest()
        for root, _, names in os.walk(save_dir) for name in names}


def test_gluoncv_resume_flags_refuse_a_save_dir_holding_another_run(reference, tiny_set, capsys):
    """--resume-params starts a new run from the file: in a --save-dir holding a run it would overwrite that run's
    checkpoints and metrics, so it is refused as a fresh start is, and nothing there changes."""
    epoch_2 = reference / "checkpoints" / "epoch-0002"
    before = _files(reference)
    argv = tiny_args(tiny_set, reference, *RECIPE, "--resume-epoch", "3", "--resume-params",
                     str(epoch_2 / "resnet18_v1d-0002.params"))
    line = trainer_error_line(capsys, argv)
    assert f"--save-dir {reference} holds an earlier run (checkpoints up to epoch-0003)" in line, line
    assert _files(reference) == before


def test_gluoncv_resume_states_of_other_settings_are_refused_naming_each(reference, tiny_set, tmp_path, capsys):
    """The states file holds a whole optimizer, which would replace the flags' one: other --optimizer, --lr,
    --lr-mode, --wd, --warmup-epochs, --no-wd, or an epoch that is not where the states are, are each named."""
    epoch_2 = reference / "checkpoints" / "epoch-0002"
    states = _gluoncv_states(tiny_set, epoch_2, tmp_path / "epoch-0002.states")
    flags = tiny_args(tiny_set, tmp_path / "run", *RECIPE, "--resume-epoch", "2", "--resume-params",
                      str(epoch_2 / "resnet18_v1d-0002.params"), "--resume-states", str(states),
                      "--trust-pickled-states", "--optimizer", "sgd", "--lr-mode", "step", "--wd", "5e-4",
                      "--warmup-epochs", "0", "--no-wd")
    flags[flags.index("--lr") + 1] = "0.05"
    line = trainer_error_line(capsys, flags)
    for named in ("--optimizer 'nag' -> 'sgd'", "--lr-mode 'CosineScheduler' -> 'MultiFactorScheduler'",
                  "--lr 0.02 -> 0.05", "--warmup-epochs 6 -> 0", "--wd 0.0001 -> 0.0005",
                  "--no-wd (other per-parameter weight decays)",
                  "--resume-epoch: the states are at update 18, the epoch starts at update 12"):
        assert named in line, (named, line)
    assert line.startswith(f"error: --resume-states {states} holds an optimizer of other "
                           "settings ("), line


def test_resume_refuses_another_teacher_behind_its_path_and_other_skip_bad_records(reference, tiny_set, tmp_path,
                                                                                   capsys):
    """--teacher-params is a path, free on resume; what the file holds is compared by its SHA-256: other weights
    behind the same name are refused, the file moved elsewhere resumes. --skip-bad-records is compared as a
    setting."""
    teacher = tmp_path / "teacher.params"
    shutil.copyfile(reference / FINAL_PARAMS, teacher)
    save_dir = tmp_path / "distilled"
    distil = ("--teacher", "resnet18_v1d", "--teacher-params", str(teacher))
    finish_training(start_training(tiny_args(tiny_set, save_dir, *distil), save_dir), save_dir)
    before = _files(save_dir)

    shutil.copyfile(reference / "checkpoints" / "epoch-0002" / "resnet18_v1d-0002.params", teacher)
    line = trainer_error_line(capsys, tiny_args(tiny_set, save_dir, *distil, "--resume"))
    assert f"--resume would continue {save_dir / 'checkpoints' / 'epoch-0001'} with another teacher: " \
           f"--teacher-params {teacher} has SHA-256 " in line, line
    line = trainer_error_line(capsys, tiny_args(tiny_set, reference, *RECIPE, "--resume", "--skip-bad-records"))
    assert "--skip-bad-records False -> True" in line, line
    assert _files(save_dir) == before

    moved = tmp_path / "moved" / "teacher.params"
    moved.parent.mkdir()
    shutil.copyfile(reference / FINAL_PARAMS, moved)
    output = finish_training(start_training(tiny_args(tiny_set, save_dir, "--teacher", "resnet18_v1d",
                                                      "--teacher-params", str(moved), "--resume"), save_dir), save_dir)
    assert "All 2 epochs were done already" in output, output


def test_resume_under_other_settings_names_them(reference, tiny_set, capsys):
    argv = tiny_args(tiny_set, reference, *RECIPE, "--resume")
    argv[argv.index("--lr") + 1] = "0.5"
    assert train_imagenet.main(argv + ["--batch-size", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size 16 -> 8" in err[0] and "--lr 0.02 -> 0.5" in err[0], err


def test_a_run_checkpointed_before_newer_flags_existed_resumes_under_their_defaults(tiny_set, tmp_path):
    """A checkpoint's args.json from before --val-input-size, --cutmix and --progressive-resize existed: the run
    did what their defaults do (validation at --input-size, 24), so it continues; a changed setting is still named."""
    config = dataclasses.asdict(parse_config(tiny_args(tiny_set, tmp_path / "run")))
    older = {key: value for key, value in config.items()
             if key not in ("val_input_size", "cutmix", "progressive_resize")}
    check_same_run(older, config, 16, 16, "epoch-0001")
    with pytest.raises(UserError, match="--val-input-size 24 -> 40"):
        check_same_run(older, dict(config, val_input_size=40), 16, 16, "epoch-0001")


def test_a_checkpoint_without_optimizer_states_resumes_with_a_warning(reference, tiny_set, tmp_path):
    """As written before dist_sync's workers kept the states, or by a dist_async job: the run goes on from fresh
    momenta and says so in its log."""
    save_dir = tmp_path / "stateless"
    shutil.copytree(reference, save_dir)
    folders = [folder for folder, _ in checkpoint.list_checkpoints(str(save_dir))]
    shutil.rmtree(folders[-1])
    with open(os.path.join(folders[-2], checkpoint.STATE)) as handle:
        state = json.load(handle)
    with open(os.path.join(folders[-2], checkpoint.STATE), "w") as handle:
        json.dump(dict(state, trainer_states=False), handle)
    for name in (checkpoint.OPTIMIZER_ARRAYS, checkpoint.OPTIMIZER_COUNTS):
        os.remove(os.path.join(folders[-2], name))
    assert train_imagenet.main(tiny_args(tiny_set, save_dir, *RECIPE, "--resume")) == 0
    log = (save_dir / "train.log").read_text()
    assert f"Optimizer momentum restarts from zero: {folders[-2]} holds no optimizer states (a job whose servers " \
           "ran the optimizer wrote it)" in log, log


def test_resuming_a_finished_run_trains_nothing(reference, tiny_set, tmp_path):
    save_dir = tmp_path / "finished"
    shutil.copytree(reference, save_dir)
    assert train_imagenet.main(tiny_args(tiny_set, save_dir, *RECIPE, "--resume")) == 0
    assert checkpoint.read_metrics(str(save_dir)) == checkpoint.read_metrics(str(reference))
    _assert_same_final_params(save_dir, reference)


def test_a_diverging_run_leaves_the_last_good_checkpoint_untouched(tiny_set, tmp_path, capsys, monkeypatch):
    """A run stopped in epoch 1 resumes from epoch 0's checkpoint, and its loss becomes NaN at once (a loss wrapped
    to give NaN): it stops with status 3, naming the batch, and leaves that checkpoint as it was."""
    save_dir = tmp_path / "diverging"
    assert train_imagenet.main(tiny_args(tiny_set, save_dir)) == 0
    folder = checkpoint.checkpoints_dir(str(save_dir))
    shutil.rmtree(os.path.join(folder, "epoch-0001"))
    params = os.path.join(folder, "epoch-0000", "resnet18_v1d-0000.params")
    before = _params(params)
    build_recipe = train_imagenet.build_recipe

    def diverging_recipe(*args, **kwargs):
        recipe = build_recipe(*args, **kwargs)
        loss_fn = recipe.loss_fn
        recipe.loss_fn = lambda outputs, targets, images: loss_fn(outputs, targets, images) * float("nan")
        return recipe

    monkeypatch.setattr(train_imagenet, "build_recipe", diverging_recipe)
    assert train_imagenet.main(tiny_args(tiny_set, save_dir, "--resume")) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the training loss became nan at epoch 1, batch 1" in err[0], err
    assert os.listdir(folder) == ["epoch-0000"]
    after = _params(params)
    assert sorted(after) == sorted(before) and all(np.array_equal(after[key], before[key]) for key in before)


def test_two_devices_resume_their_momenta_and_statistics_exactly(tiny_set, tmp_path):
    """On two CPU contexts the trainer keeps its momenta on the kvstore and each device its BatchNorm statistics
    (averaged at the end of each epoch): a run killed after epoch 1 and resumed ends with the uninterrupted
    run's weights and metrics. The run has repeated augmentation too (two iterators per epoch, a copy on each
    device), which changes what the devices are fed, not how the trainer and the statistics are saved."""
    two_devices = ("--num-cpu-contexts", "2", "--batch-size", "8", "--ra-reps", "2")
    reference = tmp_path / "reference"
    finish_training(_start(tiny_set, reference, *two_devices), reference)
    save_dir = tmp_path / "killed"
    process = _start(tiny_set, save_dir, *two_devices)
    _wait_until(lambda: os.path.isdir(os.path.join(checkpoint.checkpoints_dir(str(save_dir)), "epoch-0001")),
                process)
    process.kill()
    process.wait()
    finish_training(_start(tiny_set, save_dir, *two_devices, "--resume"), save_dir)
    _assert_same_final_params(save_dir, reference)
    assert _metrics(save_dir) == _metrics(reference)


def test_progressive_resize_resumes_each_epoch_at_its_size(tiny_set, tmp_path):
    """Stopped by SIGTERM in epoch 1 (the first at 32, after 24) and again in epoch 3 (the one at 40), a run under
    --progressive-resize resumes each epoch at its size, read from its first batch on: it ends with the
    uninterrupted run's weights, average and metrics, bit for bit."""
    reference = tmp_path / "reference"
    finish_training(_start(tiny_set, reference, *PROGRESSIVE), reference)
    assert [record["input_size"] for record in checkpoint.read_metrics(str(reference))] == [24, 32, 32, 40]
    save_dir = tmp_path / "preempted"
    for epoch in (1, 3):
        resume = ("--resume",) if epoch > 1 else ()
        _stop_by_sigterm_after_first_batch(_start(tiny_set, save_dir, *PROGRESSIVE, "--log-interval", "1", *resume),
                                           save_dir, epoch)
    output = finish_training(_start(tiny_set, save_dir, *PROGRESSIVE, "--resume"), save_dir)
    assert output.count("Resuming from") == 2 and "samples/sec at 40x40" in output, output
    _assert_same_final_params(save_dir, reference)
    assert _metrics(save_dir) == _metrics(reference)


def test_a_folder_run_stopped_mid_epoch_with_two_threads_resumes_bit_for_bit(tiny_set, tmp_path):
    """--data-dir draws as packed records do, from --seed, the epoch and each image's place: a run stopped by SIGTERM
    in epoch 1 with -j 2 and resumed with -j 1 ends with the weights, average and metrics of an uninterrupted -j 1
    run, bit for bit."""
    def start(save_dir, *extra):
        flags = tiny_args(tiny_set, save_dir, *RECIPE, *extra)
        assert flags[0] == "--rec-train" and flags[2] == "--rec-val"
        return start_training(flags[4:] + ["--data-dir", str(tiny_set / "images")], save_dir)

    reference = tmp_path / "reference"
    finish_training(start(reference), reference)
    save_dir = tmp_path / "preempted"
    _stop_by_sigterm_after_first_batch(start(save_dir, "--log-interval", "1", "-j", "2"), save_dir, 1)
    finish_training(start(save_dir, "--resume"), save_dir)
    _assert_same_final_params(save_dir, reference)
    assert _metrics(save_dir) == _metrics(reference)


# Tricks that draw random numbers beyond those of RECIPE (mixup, CutMix, erasing), test_progressive_resize_... and
# test_two_devices_... (repeated augmentation): in the network (stochastic depth, Inception-v3's dropout: MXNet's
# generator, reseeded for every batch from its place) and on the device (the augmentation policies). Two runs hold
# them all (--auto-augment takes one policy, Inception-v3 no --drop-path): a run with any of its tricks resumed
# drawing other numbers would not end bit for bit.
DRAWING = {"drop-path-mixup-ta-wide": ("--drop-path", "0.1", "--mixup", "--auto-augment", "ta_wide"),
           "inception-dropout-randaugment": ("--model", "inceptionv3", "--input-size", "75",
                                             "--auto-augment", "rand-m9-n2-mstd0.5")}


@pytest.mark.parametrize("extra", DRAWING.values(), ids=DRAWING.keys())
def test_a_run_whose_tricks_draw_stopped_mid_epoch_resumes_bit_for_bit(extra, tiny_set, tmp_path):
    """One epoch of 6 batches, stopped by SIGTERM after batch 1 and resumed: the weights and metrics of the
    uninterrupted run, bit for bit."""
    def start(save_dir, *more):
        return start_training(tiny_args(tiny_set, save_dir, *ONE_EPOCH, *extra, *more), save_dir)

    reference = tmp_path / "reference"
    finish_training(start(reference), reference)
    save_dir = tmp_path / "preempted"
    _stop_by_sigterm_after_first_batch(start(save_dir, "--log-interval", "1"), save_dir, 0)
    finish_training(start(save_dir, "--resume"), save_dir)
    model = extra[extra.index("--model") + 1] if "--model" in extra else "resnet18_v1d"
    _assert_same_params(save_dir / f"{model}-0000.params", reference / f"{model}-0000.params")
    assert _metrics(save_dir) == _metrics(reference)
