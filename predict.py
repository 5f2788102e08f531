"""Classify images with a trained network: the five most probable classes of each, with their names.

Each image gets the validation preprocessing of training (shorter side resized to input size / crop ratio,
centre crop, the paper's RGB normalization). Class names come from the ``classes.txt`` that training writes
beside its parameters, or from ``--classes-file``.
"""
import argparse
import os
import sys

from utils.cpu_threads import use_physical_cores

use_physical_cores()  # before MXNet loads: it sizes its CPU thread pool once, at import

import mxnet as mx

from data.loaders import InputConfig, validation_transform
from models.inference import add_network_arguments, check_network_arguments, default_classes_file, load_network
from models.inference import required_class_list
from utils.errors import UserError, command_line_entry

TOP_K = 5


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(parser)
    parser.add_argument("--classes-file", help="class names, one a line in label order "
                                               "(default: classes.txt beside --params)")
    parser.add_argument("--input-size", type=int, default=224, help="centre crop size (default %(default)s)")
    parser.add_argument("--crop-ratio", type=float, default=0.875,
                        help="crop size / resized shorter side (default %(default)s)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    return parser


def read_image(path):
    """The image at ``path`` as an RGB ``NDArray`` (HWC, uint8), or UserError if it cannot be decoded."""
    try:
        return mx.image.imread(path)
    except mx.base.MXNetError:
        raise UserError(f"cannot decode {path} as an image; give JPEG, PNG or another format OpenCV reads") from None


def top_classes(net, image, transform, class_names):
    """The ``TOP_K`` (or fewer, with fewer classes) most probable classes of ``image`` as (name, probability)."""
    probabilities = mx.nd.softmax(net(transform(image).expand_dims(axis=0)))[0].asnumpy()
    ranked = probabilities.argsort()[::-1][:TOP_K]
    return [(class_names[index], float(probabilities[index])) for index in ranked]


def run(args):
    """Yield (image path, top classes) for each image, in the order given."""
    check_network_arguments(args.model, args.symbol, args.params)
    if args.input_size < 1 or not 0 < args.crop_ratio <= 1:
        raise UserError(f"--input-size must be at least 1 and --crop-ratio in (0, 1], got {args.input_size} "
                        f"and {args.crop_ratio}")
    missing = [path for path in args.images if not os.path.isfile(path)]
    if missing:
        raise UserError(f"image {missing[0]} not found ({len(missing)} of {len(args.images)} missing)")
    class_names = required_class_list(args.classes_file or default_classes_file(args.params))
    net = load_network(args.params, [mx.cpu()], args.input_size, model=args.model, symbol=args.symbol,
                       num_classes=len(class_names))
    transform = validation_transform(InputConfig(batch_size=1, input_size=args.input_size,
                                                 crop_ratio=args.crop_ratio, num_workers=0, seed=0))
    for path in args.images:
        yield path, top_classes(net, read_image(path), transform, class_names)


@command_line_entry
def main(argv=None):
    for path, ranked in run(build_parser().parse_args(argv)):
        print(path)
        for rank, (name, probability) in enumerate(ranked, start=1):
            print(f"  {rank}. {name:<20} {probability:.4f}")


if __name__ == "__main__":
    sys.exit(main())
