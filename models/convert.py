"""Convert ``.params`` files between GluonCV's model zoo and this project.

``python -m models.convert from-gluoncv NAME IN.params OUT.params`` turns a file saved by GluonCV's network
``NAME`` (``save_parameters``) into one that ``get_model(NAME, classes=K).load_parameters`` reads;
``to-gluoncv`` goes the other way. The number of classes K is read from the file.

Most of our networks share GluonCV's parameter names (ResNet-B/C/D, MobileNet v1/v2, Inception-v3): their files
are copied once every key and shape has been checked. Our ``resnet*_v1`` uses the ResNet-B/C/D names, while
GluonCV's ``resnet*_v1`` (its class ``ResNetV1``) names them ``features.N``/``body.N``/``output``; for those the
mapping is built from the two networks' structure, never typed by hand: both networks are built, their layers
(consecutive parameters of one prefix) are paired in registration order, and every pair must be of the same
kind with the same shapes.

The one structural difference is that GluonCV's ResNet-50/101/152 v1 bottleneck gives its two 1x1 convolutions
a bias, and ours (like the paper's) has none. Each of those convolutions feeds a BatchNorm, so the bias is
folded into that BatchNorm's running mean: BN(conv(x) + b) with mean m is BN(conv(x)) with mean m - b, exact in
inference, and in training the batch mean absorbs b anyway. The other way round the bias is written as zero.
"""
import argparse
import sys
from dataclasses import dataclass

import mxnet as mx

from models import get_model, model_names
from models.params import check_fit, load_params
from utils.errors import UserError, command_line_entry
from utils.files import atomic_write

DIRECTIONS = ("from-gluoncv", "to-gluoncv")
# Shapes are inferred symbolically, which costs nothing at any input size; 299 is one that every supported
# network accepts (GluonCV's Inception-v3 pools its last map with a fixed 8x8 window and needs exactly 299).
SHAPE_INFERENCE_SIZE = 299


@dataclass(frozen=True)
class Layer:
    """One layer's parameters: their common prefix (``layer1.0.conv1``) and local name (``weight``) -> shape."""

    prefix: str
    shapes: dict

    @property
    def kind(self):
        """``batchnorm``, ``conv`` or ``dense``: what a pair of layers must agree on."""
        if "gamma" in self.shapes:
            return "batchnorm"
        return {4: "conv", 2: "dense"}.get(len(self.shapes.get("weight", ())), "other")

    def key(self, local_name):
        return f"{self.prefix}.{local_name}"


def _gluoncv_network(name, classes):
    try:
        from gluoncv import model_zoo
    except ImportError:
        raise UserError("converting needs GluonCV to build its networks; install it with "
                        "pip install -e '.[gluoncv]'") from None
    try:
        return model_zoo.get_model(name, pretrained=False, classes=classes)
    except ValueError:
        raise UserError(f"GluonCV has no model {name!r}; give a name that both GluonCV and "
                        "`python -m models list` know") from None


def _network(name, owner, classes):
    """Our network ``name`` (``owner`` ``our``) or GluonCV's (``GluonCV's``), uninitialized."""
    if owner == "our":
        return get_model(name, classes=classes)
    return _gluoncv_network(name, classes)


def _classifier_key(net):
    """The key of the last weight in registration order: the classifier, whose first axis counts classes."""
    return [key for key in net._collect_params_with_prefix() if key.endswith(".weight")][-1]


def _shapes(net):
    """Structural key -> shape, in registration order (the order ``save_parameters`` writes)."""
    net.infer_shape(mx.nd.zeros((1, 3, SHAPE_INFERENCE_SIZE, SHAPE_INFERENCE_SIZE)))
    return {key: param.shape for key, param in net._collect_params_with_prefix().items()}


def _layers(shapes):
    """Group consecutive keys of one prefix into layers, keeping registration order."""
    layers = []
    for key, shape in shapes.items():
        prefix, local_name = key.rsplit(".", 1)
        if not layers or layers[-1].prefix != prefix:
            layers.append(Layer(prefix, {}))
        layers[-1].shapes[local_name] = shape
    return layers


def _check_pair(index, source, target, name):
    """Two layers paired by position must be of one kind and shape; only a conv bias may be on one side only."""
    shared = set(source.shapes) & set(target.shapes)
    one_sided = set(source.shapes) ^ set(target.shapes)
    fits = (source.kind == target.kind and all(source.shapes[local] == target.shapes[local] for local in shared)
            and (not one_sided or (one_sided == {"bias"} and source.kind == "conv")))
    if not fits:
        raise UserError(f"{name}: layer {index} does not pair up ({source.prefix} {source.shapes} against "
                        f"{target.prefix} {target.shapes}); this GluonCV version defines {name} differently")


def _map_layers(params, source_layers, target_layers, name):
    """``params`` renamed from the source's layers to the target's, conv biases folded or zero-filled.

    Returns the new parameters and how many biases were folded away and how many were written as zero.
    """
    if len(source_layers) != len(target_layers):
        raise UserError(f"{name}: the two networks have {len(source_layers)} and {len(target_layers)} layers "
                        f"with parameters; this GluonCV version defines {name} differently")
    converted = {}
    folded = zero_filled = 0
    bias_to_fold = None
    for index, (source, target) in enumerate(zip(source_layers, target_layers)):
        _check_pair(index, source, target, name)
        for local_name, shape in target.shapes.items():
            if local_name in source.shapes:
                converted[target.key(local_name)] = params[source.key(local_name)]
            else:
                converted[target.key(local_name)] = mx.nd.zeros(shape, dtype=params[source.key("weight")].dtype)
                zero_filled += 1
        if bias_to_fold is not None:
            if target.kind != "batchnorm" or target.shapes["running_mean"] != bias_to_fold.shape:
                raise UserError(f"{name}: the bias of the layer before {source.prefix} has no BatchNorm to fold "
                                "into; this GluonCV version defines the network differently")
            converted[target.key("running_mean")] = params[source.key("running_mean")] - bias_to_fold
            folded += 1
            bias_to_fold = None
        if "bias" in source.shapes and "bias" not in target.shapes:
            bias_to_fold = params[source.key("bias")]
    return converted, folded, zero_filled


def convert_params(name, direction, params, label="the file"):
    """Convert ``params`` (key -> NDArray, as ``mx.nd.load`` returns) of network ``name``.

    ``direction`` is ``from-gluoncv`` or ``to-gluoncv``. Returns the converted dictionary and a one-line
    summary of what was done. Raises UserError (one line) if the file does not fit the source network.
    """
    if direction not in DIRECTIONS:
        raise UserError(f"unknown direction {direction!r}; use one of {', '.join(DIRECTIONS)}")
    if name not in model_names():
        raise UserError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    source, target = ("GluonCV's", "our") if direction == "from-gluoncv" else ("our", "GluonCV's")
    classifier = _classifier_key(_network(name, source, classes=1))
    if classifier not in params:
        raise UserError(f"{label} has no parameter {classifier!r}, so it is not a file of {source} {name} "
                        "saved with save_parameters (an export's -0000.params has arg:/aux: names)")
    classes = params[classifier].shape[0]
    source_shapes = _shapes(_network(name, source, classes))
    target_shapes = _shapes(_network(name, target, classes))
    check_fit(params, source_shapes, f"{label} (for {source} {name} with {classes} classes)")
    if source_shapes == target_shapes:
        summary = (f"{name}: all {len(params)} keys and shapes of {label} match {target} {name} "
                   f"({classes} classes); copied unchanged")
        return {key: params[key] for key in target_shapes}, summary
    converted, folded, zero_filled = _map_layers(params, _layers(source_shapes), _layers(target_shapes), name)
    summary = (f"{name}: {len(params)} parameters of {source} {name} mapped to {len(converted)} of {target} "
               f"{name} ({classes} classes)")
    if folded:
        summary += f"; {folded} conv biases folded into the running mean of the BatchNorm that follows"
    if zero_filled:
        summary += f"; {zero_filled} conv biases, which our {name} lacks, written as zero"
    return converted, summary


def convert_file(name, direction, in_path, out_path):
    """Convert the file ``in_path`` and write ``out_path`` whole or not at all; returns the summary line."""
    converted, summary = convert_params(name, direction, load_params(in_path), label=in_path)
    try:
        with atomic_write(out_path) as temporary:
            mx.nd.save(temporary, converted)
    except mx.base.MXNetError:
        raise UserError(f"cannot write {out_path}; check that its folder exists and is writable") from None
    return f"{summary}; wrote {out_path}"


@command_line_entry
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m models.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("direction", choices=DIRECTIONS,
                        help="from-gluoncv: GluonCV's file to ours; to-gluoncv: ours to GluonCV's")
    parser.add_argument("name", help="the network both sides call by this name, e.g. resnet50_v1")
    parser.add_argument("input", help="the .params file to convert")
    parser.add_argument("output", help="where the converted .params file goes")
    args = parser.parse_args(argv)
    print(convert_file(args.name, args.direction, args.input, args.output))


if __name__ == "__main__":
    sys.exit(main())
