"""A trained network ready for inference, from a registered model's ``.params`` or from a deployable export.

``eval_imagenet.py``, ``predict.py`` and ``models.export_onnx`` take the network the same two ways: ``--model NAME
--params FILE`` (the ``<model>-<epoch>.params`` that training saves) or ``--symbol PREFIX-symbol.json --params
PREFIX-0000.params`` (the export, which loads without this project's code).
"""
import os
import warnings

import mxnet as mx
from mxnet import gluon

from data.class_list import read_class_list
from models.params import load_params
from models.registry import get_model
from utils import checkpoint
from utils.errors import UserError


def add_network_arguments(parser):
    """The ``--model``/``--symbol``/``--params`` flags, as one argument group of ``parser``."""
    group = parser.add_argument_group("network (give --model or --symbol, and --params)")
    group.add_argument("--model", help="registered network the parameters belong to, e.g. resnet50_v1d")
    group.add_argument("--symbol", help="a deployable export's PREFIX-symbol.json, instead of --model")
    group.add_argument("--params", required=True,
                       help="the .params file: <model>-<epoch>.params with --model, PREFIX-0000.params with --symbol")
    return group


def check_network_arguments(model, symbol, params):
    """Raise UserError unless exactly one of ``model`` and ``symbol`` is given and the files exist."""
    if bool(model) == bool(symbol):
        raise UserError("give either --model NAME or --symbol PREFIX-symbol.json (each with --params), not both "
                        "and not neither")
    for flag, path in (("--symbol", symbol), ("--params", params)):
        if path and not os.path.isfile(path):
            raise UserError(f"{flag} {path} not found")


def default_classes_file(params):
    """Where training saved the class names of ``params``: ``classes.txt`` in the same folder."""
    return checkpoint.classes_path(os.path.dirname(os.path.abspath(params)))


def required_class_list(path, flag="--classes-file"):
    """The class names in ``path``, or UserError naming ``flag`` as the way to give them if there is no such file."""
    names = read_class_list(path)
    if names is None:
        raise UserError(f"no class list at {path} (training writes classes.txt beside its parameters); give {flag}")
    return names


def trained_num_classes(model, params):
    """The number of classes that ``params`` holds ``model``'s weights for: the output width of its classifier.

    The classifier is the network's last parameter (``fc.bias``, ``output.bias`` or ``output.0.weight``), whose
    first axis has one entry per class. Raises UserError if the file is unreadable or has no such parameter.
    """
    classifier = next(reversed(get_model(model, classes=1)._collect_params_with_prefix()))
    saved = load_params(params, label=f"--params {params}")
    if classifier not in saved:
        raise UserError(f"--params {params} does not fit the network {model}: it lacks {classifier!r}, its "
                        f"classifier; give a file saved from {model}")
    return saved[classifier].shape[0]


def num_outputs(net, input_size, contexts):
    """The output width of ``net``, one entry per class, from one forward pass on a blank image."""
    return _forward_once(net, input_size, contexts).shape[1]


def load_network(params, contexts, input_size, model=None, symbol=None, num_classes=None):
    """The network of ``--model``/``--symbol`` with ``params`` loaded, hybridized, checked by one forward pass.

    With ``model``, ``num_classes`` defaults to the classes ``params`` holds weights for (``trained_num_classes``);
    with ``symbol`` it is checked against the export's output width when given. Bad files raise UserError with one
    line.
    """
    check_network_arguments(model, symbol, params)
    if symbol:
        try:
            with warnings.catch_warnings():
                # MXNet warns that it cannot tell the input's type before the first call; the call below does.
                warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
                net = gluon.SymbolBlock.imports(symbol, ["data"], params, ctx=contexts)
        except (mx.base.MXNetError, AssertionError, ValueError) as error:
            # MXNet's messages end with the reason, after a C++ traceback.
            lines = str(error).strip().splitlines() or [type(error).__name__]
            reason = lines[-1].replace("MXNetError: ", "")
            raise UserError(f"cannot load the export {symbol} with {params} ({reason[:200]}); give the "
                            "-symbol.json and -0000.params that training wrote together") from None
    else:
        if num_classes is None:
            num_classes = trained_num_classes(model, params)
        net = get_model(model, classes=num_classes)
        net.initialize(ctx=contexts)
        _forward_once(net, input_size, contexts)  # resolves the deferred shapes that the check compares
        load_params(params, net, label=f"--params {params} (for {model} with {num_classes} classes)")
        net.load_parameters(params, ctx=contexts)
    net.hybridize()
    outputs = _forward_once(net, input_size, contexts)
    if num_classes is not None and outputs.shape[1] != num_classes:
        raise UserError(f"the network has {outputs.shape[1]} outputs but there are {num_classes} classes; "
                        "give the class list it was trained with")
    return net


def _forward_once(net, input_size, contexts):
    """One forward pass on a blank image: the network's output, or UserError if it rejects the size."""
    try:
        return net(mx.nd.zeros((1, 3, input_size, input_size), ctx=contexts[0]))
    except mx.base.MXNetError:
        raise UserError(f"the network does not accept {input_size}x{input_size} inputs; "
                        "give the --input-size it was trained at") from None
