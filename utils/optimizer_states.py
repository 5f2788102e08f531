"""A trainer's optimizer states as numbers only, so that loading a checkpoint runs no code.

MXNet's ``Trainer.save_states`` pickles the updater's states together with the whole optimizer, and unpickling
runs whatever code the file names: a checkpoint folder from a shared drive or a download could run anything on
``--resume``. Here the arrays (momentum, Adam's and LAMB's moments, the float32 master weights of
``--dtype float16``) go into one ``mx.nd.save`` file of name -> array, and the update counts (the rate schedule's
step, each parameter's count on each device, which bias correction reads) into JSON. The optimizer itself is the
one the run's flags build; ``--resume`` has already refused flags that differ from the checkpointed run's.

MXNet's rate schedules keep state (a step schedule lowers its rate as it passes each step), but every update
calls them with the update count, and from a fresh schedule the first call at count ``n`` passes the same steps,
in the same order, as the uninterrupted schedule did: the rates are the same to the bit.
"""
import json

import mxnet as mx

from utils.errors import UserError


def _updaters(trainer):
    """The updaters that hold ``trainer``'s states, as ``Trainer.save_states`` finds them: the kvstore's, when it
    updates the weights (MXNet's choice for several devices of one process), else one per device."""
    if not trainer._kv_initialized:
        trainer._init_kvstore()
    if trainer._params_to_init:
        trainer._init_params()
    return [trainer._kvstore._updater] if trainer._update_on_kvstore else trainer._updaters


def save_trainer_states(trainer, arrays_path, counts_path):
    """Write ``trainer``'s optimizer states: arrays to ``arrays_path``, counts and layout to ``counts_path``.

    As ``Trainer.save_states``, the states of the first device's updater stand for every device's: the devices
    update their copies of the weights with the same reduced gradient.
    """
    save_optimizer_states(_updaters(trainer)[0].states, trainer.optimizer, arrays_path, counts_path)


def save_optimizer_states(states, optimizer, arrays_path, counts_path):
    """Write an updater's ``states`` (parameter index -> state) and ``optimizer``'s update counts."""
    arrays = {}
    layout = {str(index): _flatten(state, str(index), arrays) for index, state in states.items()}
    mx.nd.save(arrays_path, arrays)
    counts = {str(device): {str(index): count for index, count in per_index.items()}
              for device, per_index in optimizer._all_index_update_counts.items()}
    with open(counts_path, "w") as handle:
        json.dump(dict(optimizer=type(optimizer).__name__, num_update=optimizer.num_update,
                       begin_num_update=optimizer.begin_num_update, index_update_counts=counts, layout=layout),
                  handle, indent=1, sort_keys=True)


def load_trainer_states(trainer, arrays_path, counts_path):
    """Load what ``save_trainer_states`` wrote into the optimizer ``trainer`` was built with.

    Raises UserError when the files were written by another kind of optimizer or do not fit this network's
    parameters (which the checks of ``--resume`` should have caught first).
    """
    optimizer = trainer.optimizer
    with open(counts_path) as handle:
        saved = json.load(handle)
    if saved["optimizer"] != type(optimizer).__name__:
        raise UserError(f"{counts_path} holds the states of a {saved['optimizer']} optimizer, this run builds a "
                        f"{type(optimizer).__name__}; resume with the run's --optimizer")
    if len(saved["layout"]) > len(trainer._params):
        raise UserError(f"{counts_path} holds states of {len(saved['layout'])} parameters, this network has "
                        f"{len(trainer._params)}; resume with the run's --model")
    for updater in _updaters(trainer):
        arrays = mx.nd.load(arrays_path)  # each device's updater gets its own copy, moved to its device on use
        updater.states = {int(index): _unflatten(entry, arrays, arrays_path) for index, entry in
                          saved["layout"].items()}
        updater.states_synced = dict.fromkeys(updater.states, False)
    optimizer.num_update, optimizer.begin_num_update = saved["num_update"], saved["begin_num_update"]
    optimizer._all_index_update_counts = {
        int(device): {int(index): count for index, count in per_index.items()}
        for device, per_index in saved["index_update_counts"].items()}
    # Each update points this at its device's counts (Optimizer._set_current_context); until then, device 0's.
    optimizer._index_update_count = optimizer._all_index_update_counts.setdefault(0, {})


def _flatten(state, name, arrays):
    """The JSON layout of one parameter's state (None, an array's name, or a list of layouts); fills ``arrays``."""
    if state is None:
        return None
    if isinstance(state, mx.nd.NDArray):
        arrays[name] = state
        return name
    if isinstance(state, (tuple, list)):
        return [_flatten(part, f"{name}.{position}", arrays) for position, part in enumerate(state)]
    raise TypeError(f"cannot save an optimizer state of type {type(state).__name__} (parameter {name})")


def _unflatten(entry, arrays, path):
    if entry is None:
        return None
    if isinstance(entry, list):
        return tuple(_unflatten(part, arrays, path) for part in entry)
    if entry not in arrays:
        raise UserError(f"{path} lacks the optimizer state {entry!r}: the checkpoint is damaged; resume from an "
                        "earlier one")
    return arrays[entry]
