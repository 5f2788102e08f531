"""``python -m tools.plot_runs RUN_DIR [RUN_DIR ...] --output runs.png [--table runs.md]``: runs side by side.

Reads each run folder (a ``train_imagenet.py --save-dir``, finished or still training) and draws into one PNG
its validation top-1, training loss and learning rate per epoch, the runs overlaid; prints a Markdown table of
their final figures, and writes it to ``--table`` too.
"""
import argparse
import os
import sys

from utils import plots
from utils.errors import UserError, command_line_entry
from utils.files import atomic_write_text


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tools.plot_runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run's --save-dir (holds metrics.jsonl)")
    parser.add_argument("--names", nargs="+", help="the runs' names in the legend and the table, one per RUN_DIR "
                                                   "(default: each folder's name)")
    parser.add_argument("--output", required=True, help="the PNG to write")
    parser.add_argument("--table", metavar="FILE.md", help="also write the Markdown table to this file")
    return parser


@command_line_entry
def main(argv=None):
    args = build_parser().parse_args(argv)
    names = args.names or [None] * len(args.run_dirs)
    if len(names) != len(args.run_dirs):
        raise UserError(f"--names gives {len(names)} names for {len(args.run_dirs)} run folders: give one per folder")
    for path in filter(None, (args.output, args.table)):
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UserError(f"the folder of {path} does not exist: create it or write elsewhere")
    runs = [plots.read_run(folder, name) for folder, name in zip(args.run_dirs, names)]
    plots.plot_runs(runs, args.output)
    table = "\n".join(plots.runs_table(runs)) + "\n"
    if args.table:
        atomic_write_text(args.table, table)
    print(table, end="")


if __name__ == "__main__":
    sys.exit(main())
