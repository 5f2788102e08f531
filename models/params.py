"""Reading a saved ``.params`` file and checking that it fits a network, for every command that loads weights.

A file fits when it holds exactly the network's parameter names, each with the network's shape. Gluon's own
``load_parameters`` stops at a file that does not with an AssertionError; here the first parameter that differs
is named in a one-line UserError, before any weight is loaded.
"""
import os

import mxnet as mx
from mxnet import gluon

from utils.errors import UserError


def load_params(path, expected=None, label=None, network="the network", reshapable=()):
    """The parameters in the ``.params`` file ``path`` (name -> NDArray), checked against ``expected``.

    ``expected`` is a network with known shapes (initialized and run once) or a name -> shape mapping; without it
    the file is only read. ``label`` names the file in messages (default: its path), ``network`` the network.
    The parameters named in ``reshapable`` may have another shape in the file, like a classifier that fine-tuning
    re-initializes for other classes. Raises UserError if the file is missing, unreadable or does not fit.
    """
    label = label or path
    if not os.path.isfile(path):
        raise UserError(f"{label} not found")
    try:
        params = mx.nd.load(path)
    except mx.base.MXNetError:
        raise UserError(f"{label} is not a readable MXNet .params file") from None
    if not isinstance(params, dict):
        raise UserError(f"{label} holds an unnamed list of arrays, not named parameters; "
                        "give a file written by save_parameters")
    if expected is not None:
        check_fit(params, expected, label, network, reshapable)
    return params


def check_fit(params, expected, label, network="the network", reshapable=()):
    """Raise UserError naming the first parameter in which ``params`` (a loaded file) and ``expected`` differ.

    Arguments as for :func:`load_params`. A parameter that the network lacks is named before one that the file
    lacks or shapes otherwise: it says most plainly that the file comes from another network.
    """
    shapes = _shapes(expected)
    extra = [name for name in params if name not in shapes]
    if extra:
        raise UserError(f"{label} does not fit {network}: it has parameter {extra[0]!r}, which {network} lacks; "
                        f"give a file saved from {network}")
    missing = [name for name in shapes if name not in params]
    if missing:
        raise UserError(f"{label} does not fit {network}: it lacks parameter {missing[0]!r} ({len(missing)} of "
                        f"{len(shapes)} missing); give a file saved from {network}")
    for name, shape in shapes.items():
        if params[name].shape != shape and name not in reshapable:
            raise UserError(f"{label} does not fit {network}: parameter {name!r} has shape {params[name].shape} in "
                            f"the file but {shape} in {network}")


def _shapes(expected):
    """Name -> shape of a network's parameters, or of a mapping that already is one."""
    if isinstance(expected, gluon.Block):
        return {name: param.shape for name, param in expected._collect_params_with_prefix().items()}
    return dict(expected)


def parameter_dtype(net):
    """The type of ``net``'s parameters, which its inputs must have (MXNet refuses to mix them in one operator)."""
    return next(iter(net.collect_params().values())).dtype
