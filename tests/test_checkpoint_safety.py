"""Loading a checkpoint runs no code and reads nothing outside its folder; a checkpoint that cannot be written
ends the run with one line and leaves the earlier ones whole; optimizer states saved as numbers continue the
update exactly.

A pickle "payload" below is a file whose unpickling would create a marker file: every test that meets one checks
that the marker never appears.
"""
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from tests.conftest import tiny_args
from tests.helpers import REPO, finish_training, pickled_trainer_states, start_training
from utils import checkpoint
from utils.optimizer_states import load_trainer_states, save_trainer_states
from utils.errors import UserError
from utils.optimizers import create_optimizer

FINAL_PARAMS = "resnet18_v1d-0001.params"


class Payload:
    """Unpickled, it opens (so creates) ``marker``: any code could run in its place."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _write_payload(path, marker):
    with open(path, "wb") as handle:
        pickle.dump(Payload(marker), handle)


def _refusal(flags, module=None):
    """The one line ``train_imagenet.py FLAGS`` (or ``python -m MODULE FLAGS``) prints on stderr as it exits 2."""
    command = [sys.executable, "-m", module] if module else [sys.executable, os.path.join(REPO, "train_imagenet.py")]
    result = subprocess.run([*command, *flags], cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _files(save_dir):
    """Every file under ``save_dir`` with its bytes' digest: what a refused command must leave as it was."""
    return {os.path.relpath(os.path.join(root, name), save_dir): hashlib.sha256(
        open(os.path.join(root, name), "rb").read()).hexdigest()
        for root, _, names in os.walk(save_dir) for name in names}


def _assert_same_params(path, reference_path):
    actual, expected = mx.nd.load(str(path)), mx.nd.load(str(reference_path))
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(actual[name].asnumpy(), expected[name].asnumpy(), err_msg=name)


@pytest.fixture(scope="module")
def finished(tiny_set, tmp_path_factory):
    """A finished two-epoch run (checkpoints epoch-0000 and epoch-0001) in deterministic mode."""
    save_dir = tmp_path_factory.mktemp("finished") / "run"
    finish_training(start_training(tiny_args(tiny_set, save_dir), save_dir), save_dir)
    return save_dir


def _after_epoch_0(finished, save_dir):
    """A copy of ``finished`` as if stopped after epoch 0: a ``--resume`` loads epoch-0000 and trains epoch 1."""
    shutil.copytree(finished, save_dir)
    shutil.rmtree(save_dir / "checkpoints" / "epoch-0001")
    return save_dir / "checkpoints" / "epoch-0000"


def _resume(tiny_set, save_dir):
    return finish_training(start_training(tiny_args(tiny_set, save_dir, "--resume"), save_dir), save_dir)


def test_a_checkpoint_holds_no_pickle_and_pickles_beside_it_are_never_opened(finished, tiny_set, tmp_path):
    folder = _after_epoch_0(finished, tmp_path / "run")
    assert sorted(os.listdir(folder)) == ["optimizer.json", "optimizer.nd", "random.json", "resnet18_v1d-0000.params",
                                          "state.json"]
    marker = tmp_path / "payload-ran"
    for name in checkpoint.PICKLED_FILES:
        _write_payload(folder / name, marker)
    _resume(tiny_set, tmp_path / "run")
    assert not marker.exists()
    _assert_same_params(tmp_path / "run" / FINAL_PARAMS, finished / FINAL_PARAMS)


def test_a_pickled_checkpoint_is_refused_naming_the_converter_and_runs_nothing(finished, tiny_set, tmp_path):
    save_dir = tmp_path / "run"
    folder = _after_epoch_0(finished, save_dir)
    for name in (checkpoint.RANDOM_STATES, checkpoint.OPTIMIZER_ARRAYS, checkpoint.OPTIMIZER_COUNTS):
        os.remove(folder / name)
    marker = tmp_path / "payload-ran"
    for name in checkpoint.PICKLED_FILES:
        _write_payload(folder / name, marker)
    before = _files(save_dir)
    line = _refusal(tiny_args(tiny_set, save_dir, "--resume"))
    assert line == f"error: {folder} holds pickled states (an older checkpoint format), and loading a pickle runs " \
                   "whatever code it holds; convert checkpoints you wrote yourself once with python -m " \
                   f"tools.convert_checkpoint {save_dir}, then --resume", line
    assert not marker.exists() and _files(save_dir) == before


def test_resume_states_is_a_pickle_loaded_only_when_trusted(finished, tiny_set, tmp_path):
    marker = tmp_path / "payload-ran"
    states = tmp_path / "download.states"
    _write_payload(states, marker)
    line = _refusal(tiny_args(tiny_set, tmp_path / "run", "--resume-params", str(finished / FINAL_PARAMS),
                              "--resume-epoch", "1", "--resume-states", str(states)))
    assert line == f"error: --resume-states {states} is a pickle (MXNet's Trainer.save_states), and loading one runs " \
                   "whatever code it holds: add --trust-pickled-states if you made the file yourself, or leave out " \
                   "--resume-states to start the momentum from zero", line
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_the_converter_turns_a_pickled_checkpoint_into_one_that_resumes_bit_for_bit(finished, tiny_set, tmp_path):
    """A checkpoint as the older format wrote it (MXNet's pickled trainer states, pickled generators), converted
    once, continues the run exactly."""
    save_dir = tmp_path / "run"
    folder = _after_epoch_0(finished, save_dir)
    with open(folder / checkpoint.RANDOM_STATES) as handle:
        random_states = checkpoint._decode_numbers(json.load(handle), "random.json")
    with open(folder / "random.pkl", "wb") as handle:
        pickle.dump(random_states, handle)
    pickled_trainer_states(tiny_args(tiny_set, tmp_path / "builder"), folder, folder / "trainer.states")
    for name in (checkpoint.RANDOM_STATES, checkpoint.OPTIMIZER_ARRAYS, checkpoint.OPTIMIZER_COUNTS):
        os.remove(folder / name)

    result = subprocess.run([sys.executable, "-m", "tools.convert_checkpoint", str(save_dir)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout == f"converted 1 of 1 checkpoints in {save_dir}\n  {folder}\n", \
        result.stdout + result.stderr
    assert not any(os.path.exists(folder / name) for name in checkpoint.PICKLED_FILES)
    _resume(tiny_set, save_dir)
    _assert_same_params(save_dir / FINAL_PARAMS, finished / FINAL_PARAMS)


@pytest.mark.parametrize("name", ["../outside.params", "/etc/passwd", "link.params"])
def test_a_file_name_leading_out_of_the_checkpoint_is_refused(finished, tiny_set, tmp_path, name):
    save_dir = tmp_path / "run"
    folder = _after_epoch_0(finished, save_dir)
    shutil.copyfile(folder / "resnet18_v1d-0000.params", tmp_path / "outside.params")
    os.symlink(tmp_path / "outside.params", folder / "link.params")
    with open(folder / checkpoint.STATE) as handle:
        state = json.load(handle)
    with open(folder / checkpoint.STATE, "w") as handle:
        json.dump(dict(state, params=name), handle)
    before = _files(save_dir)
    line = _refusal(tiny_args(tiny_set, save_dir, "--resume"))
    assert line == f"error: {folder / checkpoint.STATE} names the parameters {name!r}, which is not a file of that " \
                   "folder; the checkpoint is not one of ours: resume from another", line
    assert _files(save_dir) == before


def test_an_unwritable_checkpoint_ends_the_run_with_one_line_and_keeps_the_earlier_one(finished, tiny_set, tmp_path):
    """The checkpoints' folder made immutable (``chattr +i``: a read-only folder stops no root process) before
    epoch 1's checkpoint: the run ends with one line, epoch-0000 resumes once the folder is writable again."""
    save_dir = tmp_path / "run"
    folder = _after_epoch_0(finished, save_dir)
    checkpoints = str(save_dir / "checkpoints")
    if subprocess.run(["chattr", "+i", checkpoints], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        kept = _files(folder)
        process = start_training(tiny_args(tiny_set, save_dir, "--resume"), save_dir)
        output = finish_training(process, save_dir, expected_status=2)
    finally:
        subprocess.run(["chattr", "-i", checkpoints], check=True)
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: cannot write checkpoint {checkpoints}/epoch-0001 (Operation not permitted); "
                      f"epoch-0000 is whole; free space or make {save_dir} writable, then continue with --resume"], \
        output
    assert "Traceback" not in output and _files(folder) == kept
    _resume(tiny_set, save_dir)
    _assert_same_params(save_dir / FINAL_PARAMS, finished / FINAL_PARAMS)


def test_weights_that_cannot_be_written_are_one_line_naming_the_file(tmp_path):
    """MXNet's C++ writer fails with a traceback of its own: the error keeps its last words."""
    net = mx.gluon.nn.Dense(2, in_units=3)
    net.initialize()
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError) as refused:
        checkpoint.save_params(net, str(tmp_path / "file"), "dense", 0)
    assert str(refused.value) == f"cannot write {tmp_path}/file/dense-0000.params (Not a directory); free space or " \
                                 f"make {tmp_path}/file writable, then continue with --resume"


def _trainer(contexts, name, schedule, update_on_kvstore):
    net = mx.gluon.nn.Dense(3, in_units=4)
    net.initialize(mx.init.Xavier(), ctx=contexts)
    optimizer = create_optimizer(name, learning_rate=0.1, wd=1e-4, lr_scheduler=schedule,
                                 **({"momentum": 0.9} if name == "nag" else {}))
    return net, mx.gluon.Trainer(net.collect_params(), optimizer, kvstore="device",
                                 update_on_kvstore=update_on_kvstore)


def _steps(net, trainer, contexts, steps, seed):
    data = np.random.RandomState(seed)
    for _ in range(steps):
        x = data.normal(size=(4 * len(contexts), 4)).astype("float32")
        with mx.autograd.record():
            losses = [(net(part) ** 2).sum() for part in mx.gluon.utils.split_and_load(x, contexts)]
        mx.autograd.backward(losses)
        trainer.step(4 * len(contexts))
    return {name: param.data(contexts[0]).asnumpy() for name, param in net.collect_params().items()}


@pytest.mark.parametrize("name, update_on_kvstore", [("nag", None), ("nag", False), ("adamw", None),
                                                     ("lamb", False)])
def test_optimizer_states_saved_as_numbers_continue_the_update_bit_for_bit(tmp_path, name, update_on_kvstore):
    """Two devices, a step schedule that has passed one step by the save: 5 updates, save, a new trainer loads
    and makes 5 more, as the trainer that made all 10. The kvstore updates (MXNet's choice for several devices
    of one process) or each device does (a dist_sync worker's, Horovod's). Not numeric: both sides run the same
    operators here."""
    contexts = [mx.cpu(0), mx.cpu(1)]
    schedules = [mx.lr_scheduler.MultiFactorScheduler(step=[3, 7], factor=0.1, base_lr=0.1) for _ in range(2)]
    mx.random.seed(1)
    net, trainer = _trainer(contexts, name, schedules[0], update_on_kvstore)
    _steps(net, trainer, contexts, 5, seed=0)
    save_trainer_states(trainer, str(tmp_path / "optimizer.nd"), str(tmp_path / "optimizer.json"))
    params = {key: param.data(contexts[0]).copy() for key, param in net.collect_params().items()}
    expected = _steps(net, trainer, contexts, 5, seed=1)

    resumed, fresh = _trainer(contexts, name, schedules[1], update_on_kvstore)
    for key, param in resumed.collect_params().items():
        param.set_data(params[key.replace(resumed.prefix, net.prefix)])
    load_trainer_states(fresh, str(tmp_path / "optimizer.nd"), str(tmp_path / "optimizer.json"))
    actual = _steps(resumed, fresh, contexts, 5, seed=1)
    for key in expected:
        np.testing.assert_array_equal(actual[key.replace(net.prefix, resumed.prefix)], expected[key], err_msg=key)
    assert fresh.optimizer.num_update == trainer.optimizer.num_update == 10
    assert fresh._update_on_kvstore == (update_on_kvstore is None)


def test_trusting_pickled_states_without_a_states_file_is_one_line(tiny_set, tmp_path):
    from engine.config import parse_config
    with pytest.raises(UserError) as refused:
        parse_config(tiny_args(tiny_set, tmp_path / "run", "--trust-pickled-states"))
    assert str(refused.value) == \
        "--trust-pickled-states goes with --resume-states, the only pickled file a run may load"
