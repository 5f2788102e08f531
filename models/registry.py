"""One registry of model builders: ``get_model(name, **kwargs)`` is the only way the scripts build a network."""
import fnmatch

from utils.errors import UserError

_BUILDERS = {}

# The smallest square input of each family, found by running the networks (tests/test_flag_values.py runs
# each family's smallest member at its minimum and one pixel below). Padded convolutions take any size, but
# ResNet-D average-pools 2x2 in the shortcut of the last stage, which needs 2x2 there: 17 pixels, halved
# (rounding up) four times; Inception-v3's unpadded strided convolutions and poolings need 75.
_MIN_INPUT_SIZES = (("resnet*_v1", 1), ("resnet*_v1b", 1), ("resnet*_v1c", 1), ("resnet*_v1d", 17),
                    ("mobilenet[0-9]*", 1), ("mobilenetv2_*", 1), ("inceptionv3", 75))


def register_model(builder, name=None):
    """Register ``builder`` under ``name`` (default: its function name); a name taken twice is an error."""
    name = name or builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is registered twice")
    _BUILDERS[name] = builder
    return builder


def model_names():
    """The sorted names that ``get_model`` accepts."""
    return sorted(_BUILDERS)


def get_model(name, **kwargs):
    """Build the network registered as ``name``; keyword arguments go to its constructor (e.g. ``classes``)."""
    if name not in _BUILDERS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return _BUILDERS[name](**kwargs)


def refuse_residual_tricks(network, last_gamma=False, drop_path=0.0):
    """Every builder takes ``last_gamma`` and ``drop_path``; both act on residual blocks, which ``network`` lacks."""
    for asked, flag in ((last_gamma, "--last-gamma"), (drop_path, "--drop-path")):
        if asked:
            raise UserError(f"{network} has no residual blocks, so {flag} does not apply")


def min_input_size(name):
    """The smallest input height and width the network registered as ``name`` accepts."""
    for pattern, size in _MIN_INPUT_SIZES:
        if fnmatch.fnmatchcase(name, pattern):
            return size
    raise KeyError(f"no smallest input size is known for model {name!r}; add its family to _MIN_INPUT_SIZES")
