"""Evaluate a trained network on a validation set: top-1 and top-5 error and speed, printed and saved as JSON.

The network is ``--model NAME --params FILE`` (parameters saved by training, or converted from GluonCV with
``python -m models.convert``) or a deployable export, ``--symbol PREFIX-symbol.json --params PREFIX-0000.params``.
The images are resized and centre-cropped as in training's validation (section 2 of the paper). The classes are
the data's: the class list beside ``--rec-val`` or the folders of ``--data-dir``. A ``.rec`` without a class list
(made by MXNet's ``tools/im2rec.py`` or GluonCV's scripts) takes the network's: the ``classes.txt`` that training
wrote beside ``--params``, or else its classifier's K outputs, named 0 to K-1.
"""
import argparse
import json
import os
import sys
import time

from utils.cpu_threads import use_physical_cores

use_physical_cores()  # before MXNet loads: it sizes its CPU thread pool once, at import

from data.class_list import numbered_class_names, read_class_list
from data.loaders import InputConfig, validation_source
from engine.config import add_flags, check_bounds
from engine.loop import evaluate
from models.inference import (add_network_arguments, check_network_arguments, default_classes_file, load_network,
                              num_outputs)
from utils.devices import build_contexts
from utils.errors import UserError, command_line_entry


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(parser)
    data = parser.add_argument_group("data (give --rec-val or --data-dir)")
    data.add_argument("--rec-val", help="validation .rec (its classes: the class list beside it, written by "
                                        "`python -m data.pack`, or else the network's)")
    data.add_argument("--rec-val-idx", help="its .idx (default: beside the .rec)")
    data.add_argument("--data-dir", help="raw images instead: DIR/val/<class>/*")
    data.add_argument("--input-size", type=int, default=224,
                      help="centre crop size unless --val-input-size is given, as in training (default %(default)s)")
    add_flags(data, "val_input_size", "crop_ratio")  # declared once, with the trainer's
    data.add_argument("--batch-size", type=int, default=32, help="images per device per batch (default 32)")
    data.add_argument("-j", "--num-data-workers", type=int, default=min(4, os.cpu_count() or 1),
                      help="decoding threads (default %(default)s)")
    devices = parser.add_argument_group("devices")
    devices.add_argument("--num-gpus", type=int, default=0, help="GPUs to split each batch over (default 0)")
    devices.add_argument("--num-cpu-contexts", type=int, default=1, help="without GPUs: CPU contexts (default 1)")
    parser.add_argument("--output", help="write the result as JSON to this file")
    return parser


def check_args(args):
    """Validate the flags before any data is read."""
    check_network_arguments(args.model, args.symbol, args.params)
    for flag, value in (("--input-size", args.input_size), ("--batch-size", args.batch_size)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    check_bounds(vars(args), ("val_input_size", "crop_ratio"))
    if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UserError(f"the folder of --output {args.output} does not exist; create it first")


def network_class_names(params, outputs):
    """The classes of the network: the ``classes.txt`` that training wrote beside ``params``, or else its
    ``outputs`` classes named by their labels."""
    trained = read_class_list(default_classes_file(params))
    return trained if trained is not None else numbered_class_names(outputs)


def check_classes_match(class_names, params, outputs):
    """Refuse data whose classes differ from the network's: in number from its ``outputs``, or in names from the
    class list saved beside the parameters (labels would be wrong)."""
    trained_path = default_classes_file(params)
    trained = read_class_list(trained_path)
    if trained is not None and trained != class_names:
        raise UserError(f"the data's {len(class_names)} classes differ from the {len(trained)} in {trained_path} "
                        "that the network was trained with; evaluate on data with the same class list")
    if len(class_names) != outputs:
        raise UserError(f"the network has {outputs} outputs but the data has {len(class_names)} classes; evaluate "
                        "on data with the classes it was trained with")


def run(args):
    """Evaluate and return the result record (also written to ``--output`` when given)."""
    check_args(args)
    contexts = build_contexts(args.num_gpus, args.num_cpu_contexts)
    config = InputConfig(batch_size=args.batch_size * len(contexts), input_size=args.input_size,
                         crop_ratio=args.crop_ratio, num_workers=args.num_data_workers, seed=0,
                         val_input_size=args.val_input_size)
    # The network first: a .rec without a class list takes its classes, and its files fail faster than the data.
    net = load_network(args.params, contexts, config.val_size, model=args.model, symbol=args.symbol)
    outputs = num_outputs(net, config.val_size, contexts)
    data = validation_source(config, network_class_names(args.params, outputs), rec_val=args.rec_val,
                             idx_val=args.rec_val_idx, data_dir=args.data_dir)
    check_classes_match(data.class_names, args.params, outputs)
    tic = time.time()
    accuracy = evaluate(net, data, contexts)
    seconds = time.time() - tic
    result = dict(model=args.model or args.symbol, params=args.params, data=args.rec_val or args.data_dir,
                  num_images=data.num_val, num_classes=data.num_classes, input_size=args.input_size,
                  val_input_size=config.val_size, val_resize=config.val_resize, crop_ratio=args.crop_ratio,
                  top1_error=1 - accuracy["val_top1"], top5_error=1 - accuracy["val_top5"],
                  images_per_sec=data.num_val / seconds, seconds=seconds)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


@command_line_entry
def main(argv=None):
    args = build_parser().parse_args(argv)
    result = run(args)
    print(f"{result['model']}: top-1 error {result['top1_error']:.4f}, top-5 error {result['top5_error']:.4f} "
          f"on {result['num_images']} images of {result['num_classes']} classes, "
          f"{result['images_per_sec']:.1f} images/s")
    if args.output:
        print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
