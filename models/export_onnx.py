"""Export a trained network to ONNX with MXNet's own exporter, ``mx.onnx.export_model``.

``python -m models.export_onnx --symbol PREFIX-symbol.json --params PREFIX-0000.params --input-size N --output
OUT.onnx`` converts a deployable export; ``--model NAME --params FILE [--classes K]`` first builds the registered
network (K defaults to the length of the ``classes.txt`` beside the parameters) and exports it. The ONNX graph
takes ``data`` of shape (batch, 3, N, N), any batch, normalized as in training, and returns the logits.
Installing ``.[onnx]`` brings the onnx and onnxruntime releases this was tested with.
"""
import argparse
import os
import sys
import tempfile

import mxnet as mx
import numpy as np

from models.inference import add_network_arguments, default_classes_file, load_network, required_class_list
from utils.errors import UserError, command_line_entry
from utils.files import atomic_write


def _onnx():
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx package; install it with pip install -e '.[onnx]'") from None
    return onnx


def _drop_initializers_from_inputs(model):
    """Keep only the image as a graph input.

    MXNet's exporter lists every weight as a graph input as well as an initializer. Since IR version 4 ONNX
    does not need that, and onnxruntime warns about each such weight and will not constant-fold it.
    """
    weights = {initializer.name for initializer in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)


def export_onnx(net, input_size, output):
    """Write ``net`` (hybridized, run once) to ``output`` as ONNX with a free batch axis; returns the opset."""
    onnx = _onnx()
    with tempfile.TemporaryDirectory() as folder:
        prefix = os.path.join(folder, "network")
        net.export(prefix, epoch=0)
        shape = (1, 3, input_size, input_size)
        exported = mx.onnx.export_model(f"{prefix}-symbol.json", f"{prefix}-0000.params", in_shapes=[shape],
                                        in_types=np.float32, onnx_file_path=os.path.join(folder, "network.onnx"),
                                        dynamic=True, dynamic_input_shapes=[(None,) + shape[1:]])
        model = onnx.load(exported)
    _drop_initializers_from_inputs(model)
    try:
        with atomic_write(output) as temporary:
            onnx.save(model, temporary)
    except OSError as error:
        raise UserError(f"cannot write --output {output} ({error.strerror}); choose a writable path") from None
    return model.opset_import[0].version


def check_with_onnxruntime(net, onnx_file, input_size, batch=2, tolerance=1e-4):
    """Run ``onnx_file`` in onnxruntime and ``net`` in MXNet on one random batch; return the largest difference.

    A difference above ``tolerance`` raises UserError: the file would not compute what was trained.
    """
    try:
        import onnxruntime
    except ImportError:
        raise UserError("checking the export needs onnxruntime; install it with pip install -e '.[onnx]'") from None
    images = np.random.RandomState(0).normal(size=(batch, 3, input_size, input_size)).astype(np.float32)
    session = onnxruntime.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(None, {session.get_inputs()[0].name: images})[0]
    difference = float(np.abs(onnx_outputs - net(mx.nd.array(images)).asnumpy()).max())
    if difference > tolerance:
        raise UserError(f"{onnx_file} differs from the MXNet network by {difference:.2g} (more than {tolerance:g}); "
                        "do not deploy it")
    return difference


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m models.export_onnx", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(parser)
    parser.add_argument("--classes", type=int,
                        help="classifier outputs of --model (default: the lines of classes.txt beside --params)")
    parser.add_argument("--input-size", type=int, default=224, help="input height and width (default %(default)s)")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    return parser


@command_line_entry
def main(argv=None):
    args = build_parser().parse_args(argv)
    _onnx()
    num_classes = args.classes
    if args.model and num_classes is None:
        num_classes = len(required_class_list(default_classes_file(args.params), flag="--classes"))
    net = load_network(args.params, [mx.cpu()], args.input_size, model=args.model, symbol=args.symbol,
                       num_classes=num_classes)
    opset = export_onnx(net, args.input_size, args.output)
    difference = check_with_onnxruntime(net, args.output, args.input_size)
    print(f"wrote {args.output}: ONNX opset {opset}, input 'data' of shape (batch, 3, {args.input_size}, "
          f"{args.input_size}); onnxruntime matches MXNet within {difference:.2g}")


if __name__ == "__main__":
    sys.exit(main())
