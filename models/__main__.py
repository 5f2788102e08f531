"""``python -m models NAME [--input-size N]``: parameter count and multiply-adds of one forward pass."""
import argparse
import sys

import mxnet as mx

from models import get_model, model_names
from models.complexity import count_multiply_adds, count_parameters
from utils.errors import command_line_entry


@command_line_entry
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    parser.add_argument("name", help="registered model name, e.g. resnet50_v1d; 'list' prints them all")
    parser.add_argument("--input-size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--classes", type=int, default=1000, help="classifier outputs (default 1000)")
    args = parser.parse_args(argv)
    if args.name == "list":
        print("\n".join(model_names()))
        return
    net = get_model(args.name, classes=args.classes)
    net.initialize(mx.init.Xavier())
    multiply_adds = count_multiply_adds(net, args.input_size)
    print(f"{args.name}: {count_parameters(net) / 1e6:.2f} M parameters, "
          f"{multiply_adds / 1e9:.3f} G multiply-adds at {args.input_size}x{args.input_size}")


if __name__ == "__main__":
    sys.exit(main())
