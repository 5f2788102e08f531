"""Every file a run writes, named in one place: checkpoints, parameters, export, metrics log, arguments.

A checkpoint is a folder ``SAVE_DIR/checkpoints/epoch-EEEE`` (after epoch EEEE) or
``epoch-EEEE-batch-BBBBBB`` (stopped by a signal after batch BBBBBB of epoch EEEE) holding the network's
parameters (``<model>-EEEE.params``, loadable on its own like any saved network), with ``--model-ema`` those
of the weights' moving average (``<model>-ema-EEEE.params``, loadable the same way), the optimizer's states
(``optimizer.nd``: arrays; ``optimizer.json``: update counts), the random generators' states (``random.json``)
and ``state.json`` (where to go on, the best epoch so far, the run's settings). Every file holds numbers and
names only, nothing pickled: loading a checkpoint runs no code. A checkpoint is written under a hidden
temporary name and renamed into place, so a folder under a final name is always whole, whatever moment a crash
or a ``kill -9`` hits."""
import json
import os
import shutil
import tempfile

import mxnet as mx
import numpy as np
import yaml

from data.class_list import write_class_list
from utils.errors import UserError
from utils.files import atomic_write, atomic_write_text, sync_folder
from utils.optimizer_states import load_trainer_states, save_trainer_states


OPTIMIZER_ARRAYS = "optimizer.nd"
OPTIMIZER_COUNTS = "optimizer.json"
RANDOM_STATES = "random.json"
STATE = "state.json"
# What checkpoints held before they held numbers only: a pickled optimizer and pickled generator states.
PICKLED_FILES = ("trainer.states", "random.pkl")
CONVERT_ADVICE = "python -m tools.convert_checkpoint"


def params_name(model, epoch):
    """``<model>-<epoch>.params``: loads with ``get_model(model, classes=...).load_parameters``."""
    return f"{model}-{epoch:04d}.params"


def params_path(save_dir, model, epoch):
    return os.path.join(save_dir, params_name(model, epoch))


def ema_params_name(model, epoch):
    """``<model>-ema-<epoch>.params``: the weights' moving average (``--model-ema``), loaded as ``params_name``'s."""
    return f"{model}-ema-{epoch:04d}.params"


def ema_params_path(save_dir, model, epoch):
    return os.path.join(save_dir, ema_params_name(model, epoch))


def export_prefix(save_dir, model):
    """Prefix of the deployable export: ``<model>-deploy-symbol.json`` and ``<model>-deploy-0000.params``.

    ``-deploy`` keeps the export's ``-0000.params`` apart from epoch 0's ``<model>-0000.params``.
    """
    return os.path.join(save_dir, f"{model}-deploy")


def checkpoints_dir(save_dir):
    return os.path.join(save_dir, "checkpoints")


def checkpoint_name(epoch, batch=None):
    """``epoch-0003`` after epoch 3, ``epoch-0003-batch-000120`` after 120 batches of epoch 3."""
    return f"epoch-{epoch:04d}" if batch is None else f"epoch-{epoch:04d}-batch-{batch:06d}"


def metrics_path(save_dir):
    return os.path.join(save_dir, "metrics.jsonl")


def tensorboard_dir(save_dir):
    """Where ``--tensorboard`` writes its event files: ``tensorboard --logdir`` this folder."""
    return os.path.join(save_dir, "tensorboard")


def args_path(save_dir):
    return os.path.join(save_dir, "args.json")


def args_yaml_path(save_dir):
    """``args.yaml``: the run's settings as a config file, which ``train_imagenet.py --config`` replays."""
    return os.path.join(save_dir, "args.yaml")


def classes_path(save_dir):
    return os.path.join(save_dir, "classes.txt")


def ensure_writable(save_dir):
    """Create ``save_dir`` and prove a file can be written there, before any training time is spent."""
    try:
        os.makedirs(save_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=save_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UserError(f"cannot write to --save-dir {save_dir} ({error.strerror}); "
                        "choose a writable folder") from None


def save_run_args(save_dir, config_dict, class_names, replay_settings=None):
    """The resolved configuration (``args.json``), the class names (``classes.txt``) and, given
    ``replay_settings`` (``engine.config.replay_settings``), the config file that replays the run (``args.yaml``)."""
    atomic_write_text(args_path(save_dir), json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
    if replay_settings is not None:
        atomic_write_text(args_yaml_path(save_dir), (
            "# This run's settings (null: the flag's default). Replay the run in a new folder with\n"
            f"# python train_imagenet.py --config {args_yaml_path(save_dir)} --save-dir NEW_DIR\n"
            + yaml.safe_dump(replay_settings, default_flow_style=None, sort_keys=False)))
    if class_names:
        write_class_list(classes_path(save_dir), class_names)


def read_run_args(save_dir):
    """The run's resolved configuration as ``save_run_args`` wrote it (``args.json``), or None if it has none."""
    if not os.path.exists(args_path(save_dir)):
        return None
    with open(args_path(save_dir)) as handle:
        return json.load(handle)


def append_metrics(save_dir, record):
    """Append one epoch's figures to ``metrics.jsonl`` as one JSON object per line."""
    with open(metrics_path(save_dir), "a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(save_dir):
    """The records of ``metrics.jsonl`` (empty when absent); a line cut short by a crash is dropped."""
    records = []
    if os.path.exists(metrics_path(save_dir)):
        with open(metrics_path(save_dir)) as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    return records


def keep_metrics_before(save_dir, epoch):
    """Rewrite ``metrics.jsonl`` with only the epochs before ``epoch``: a resumed run logs the rest again.

    A crash between an epoch's metrics line and its checkpoint would otherwise leave that epoch twice.
    """
    if not os.path.exists(metrics_path(save_dir)):
        return
    kept = [record for record in read_metrics(save_dir) if record["epoch"] < epoch]
    atomic_write_text(metrics_path(save_dir), "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def save_checkpoint(save_dir, name, net, trainer, state, random_states, params_name, ema_net=None,
                    ema_params_name=None):
    """Write checkpoint ``name`` whole or not at all; returns its folder.

    ``state`` (JSON) says where the run goes on; ``random_states`` holds generator states (tuples, numbers and
    integer arrays, as ``random.getstate`` and ``numpy.random.get_state`` give them); ``trainer`` may be None when
    its states live elsewhere (on a ``dist_async`` job's servers); ``ema_net``, the weights' moving average, is
    saved as ``ema_params_name`` when given. A write that fails (a full disk, a folder turned read-only) raises
    UserError and leaves the checkpoints written before as they were.
    """
    final = os.path.join(checkpoints_dir(save_dir), name)
    temporary = None
    _wait_for_reorders()
    try:
        os.makedirs(checkpoints_dir(save_dir), exist_ok=True)
        temporary = tempfile.mkdtemp(prefix=f".{name}.", dir=checkpoints_dir(save_dir))
        net.save_parameters(os.path.join(temporary, params_name))
        if ema_net is not None:
            ema_net.save_parameters(os.path.join(temporary, ema_params_name))
        if trainer is not None:
            save_trainer_states(trainer, os.path.join(temporary, OPTIMIZER_ARRAYS),
                                os.path.join(temporary, OPTIMIZER_COUNTS))
        write_random_states(os.path.join(temporary, RANDOM_STATES), random_states)
        # state.json goes last: a folder holding it has every other file of the checkpoint.
        with open(os.path.join(temporary, STATE), "w") as handle:
            json.dump(dict(state, params=params_name, ema_params=ema_params_name, trainer_states=trainer is not None),
                      handle, indent=2, sort_keys=True)
        sync_folder(temporary)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(temporary, final)
        sync_folder(checkpoints_dir(save_dir))
    except (OSError, mx.base.MXNetError) as error:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        newest = list_checkpoints(save_dir)
        kept = f"{os.path.basename(newest[-1][0])} is whole; " if newest else ""
        raise UserError(f"cannot write checkpoint {final} ({_reason(error)}); {kept}free space or make "
                        f"{save_dir} writable, then continue with --resume") from None
    return final


def _reason(error):
    """An OSError's own words, or the last line of MXNet's, after its C++ traceback (``...: Not a directory``)."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error).strip().splitlines()[-1].rpartition(": ")[2]


def _encode_numbers(value):
    """``value`` as JSON that keeps what it is: tuples and integer arrays tagged, numbers exact (``repr``)."""
    if isinstance(value, tuple):
        return {"tuple": [_encode_numbers(part) for part in value]}
    if isinstance(value, dict):
        return {"dict": {key: _encode_numbers(part) for key, part in value.items()}}
    if isinstance(value, np.ndarray):
        return {"array": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_random_states(path, random_states):
    with open(path, "w") as handle:
        json.dump(_encode_numbers(random_states), handle)


def _decode_numbers(value, path):
    if isinstance(value, list):
        return [_decode_numbers(part, path) for part in value]
    if not isinstance(value, dict):
        return value
    if "tuple" in value:
        return tuple(_decode_numbers(part, path) for part in value["tuple"])
    if "dict" in value:
        return {key: _decode_numbers(part, path) for key, part in value["dict"].items()}
    dtype = np.dtype(value["dtype"])
    if dtype.kind not in "iuf":  # numbers only: an object array would unpickle its items
        raise UserError(f"{path} holds an array of {dtype}, not of numbers; the checkpoint is not one of ours")
    return np.array(value["array"], dtype=dtype)


def list_checkpoints(save_dir):
    """``(folder, state)`` of every whole checkpoint in ``save_dir``, oldest first (by global step).

    Hidden folders are checkpoints a crash interrupted while they were written; they are ignored.
    """
    found = []
    folder = checkpoints_dir(save_dir)
    if not os.path.isdir(folder):
        return found
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isfile(os.path.join(path, STATE)):
            continue
        found.append((path, read_checkpoint_state(path)))
    return sorted(found, key=lambda item: item[1]["global_step"])


def remove_unfinished_checkpoints(save_dir):
    """Delete the hidden folders of checkpoints that a crash interrupted while they were written."""
    folder = checkpoints_dir(save_dir)
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith("."):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def read_checkpoint_state(folder):
    with open(os.path.join(folder, STATE)) as handle:
        return json.load(handle)


def file_in(folder, name, what):
    """The path of ``folder``'s file ``name`` (a name from one of its files): UserError unless it is a file of
    ``folder`` itself, so that a checkpoint cannot make a run read, or overwrite, anything outside it."""
    path = os.path.join(folder, str(name))
    if os.path.basename(str(name)) != name or name in ("", ".", "..") or \
            os.path.dirname(os.path.realpath(path)) != os.path.realpath(folder):
        raise UserError(f"{os.path.join(folder, STATE)} names {what} {name!r}, which is not a file of that folder; "
                        "the checkpoint is not one of ours: resume from another")
    return path


def check_numbers_only(folder):
    """Refuse a checkpoint in the format that pickled its optimizer and generators: unpickling runs code."""
    if not os.path.isfile(os.path.join(folder, RANDOM_STATES)) and \
            any(os.path.isfile(os.path.join(folder, name)) for name in PICKLED_FILES):
        raise UserError(f"{folder} holds pickled states (an older checkpoint format), and loading a pickle runs "
                        f"whatever code it holds; convert checkpoints you wrote yourself once with "
                        f"{CONVERT_ADVICE} {os.path.dirname(os.path.dirname(folder))}, then --resume")


def load_checkpoint(folder, net, trainer, contexts, ema_net=None):
    """Load a checkpoint's parameters into ``net``, optimizer states into ``trainer`` (unless None) and the
    weights' moving average into ``ema_net`` (unless None).

    Returns ``(state, random_states)``.
    """
    check_numbers_only(folder)
    state = read_checkpoint_state(folder)
    net.load_parameters(file_in(folder, state["params"], "the parameters"), ctx=contexts)
    if ema_net is not None:
        ema_net.load_parameters(file_in(folder, state["ema_params"], "the moving average"), ctx=contexts)
    if trainer is not None and state["trainer_states"]:
        load_trainer_states(trainer, os.path.join(folder, OPTIMIZER_ARRAYS), os.path.join(folder, OPTIMIZER_COUNTS))
    with open(os.path.join(folder, RANDOM_STATES)) as handle:
        random_states = _decode_numbers(json.load(handle), os.path.join(folder, RANDOM_STATES))
    return state, random_states


def prune_checkpoints(save_dir, keep):
    """Delete all but the ``keep`` newest checkpoints and the one with the best validation top-1.

    ``keep`` 0 keeps every checkpoint.
    """
    checkpoints = list_checkpoints(save_dir)
    if not keep or len(checkpoints) <= keep:
        return
    best, best_top1 = None, None
    for path, state in checkpoints:  # oldest first: of equally good checkpoints the newest is kept
        if state.get("val_top1") is not None and (best_top1 is None or state["val_top1"] >= best_top1):
            best, best_top1 = path, state["val_top1"]
    for path, _ in checkpoints[:-keep]:
        if path != best:
            shutil.rmtree(path)


def save_params(net, save_dir, model, epoch):
    """Save the network's parameters for ``epoch``; the file appears whole or not at all."""
    return _save_whole(net, params_path(save_dir, model, epoch))


def save_ema_params(ema_net, save_dir, model, epoch):
    """Save the weights' moving average for ``epoch`` beside the network's parameters, whole or not at all."""
    return _save_whole(ema_net, ema_params_path(save_dir, model, epoch))


def _wait_for_reorders():
    """Let every queued operation land before weights are read: on CPU an inference pass has oneDNN reorder the
    weights in place, asynchronously (``MKLDNNDataReorderAsync``), and a read right after a forward pass was seen
    to meet a weight half reordered (tests/test_multi_device.py)."""
    mx.nd.waitall()


def _save_whole(net, path):
    _wait_for_reorders()
    try:
        with atomic_write(path) as temporary:
            net.save_parameters(temporary)
    except (OSError, mx.base.MXNetError) as error:
        raise UserError(f"cannot write {path} ({_reason(error)}); free space or make {os.path.dirname(path)} "
                        "writable, then continue with --resume") from None
    return path


def export_deployable(net, save_dir, model):
    """Write ``<model>-deploy-symbol.json`` and ``-0000.params`` that ``SymbolBlock.imports`` loads alone.

    ``net`` must be hybridized and have run one forward pass, so that its graph is known.
    """
    prefix = export_prefix(save_dir, model)
    net.export(prefix, epoch=0)
    return f"{prefix}-symbol.json", f"{prefix}-0000.params"
