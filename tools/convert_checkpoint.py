"""``python -m tools.convert_checkpoint SAVE_DIR``: turn a run's checkpoints of the older, pickled format into
the format that holds numbers only, once, so that ``--resume`` can load them.

Those checkpoints held the optimizer as MXNet's ``Trainer.save_states`` pickles it (``trainer.states``) and the
generators' states pickled (``random.pkl``). Unpickling runs whatever code a file holds, so this tool, which has
to unpickle them, is for checkpoints you wrote yourself: never run it on a folder from someone else. Each
checkpoint gets ``optimizer.nd``, ``optimizer.json`` and ``random.json`` (``utils.checkpoint``), then loses its
pickled files; a checkpoint already converted is left as it is.
"""
import argparse
import os
import pickle
import sys

import utils.optimizers  # noqa: F401 (the pickled optimizer may be this module's LAMB or AdamW)
from utils import checkpoint
from utils.errors import UserError, command_line_entry
from utils.optimizer_states import save_optimizer_states

TRAINER_STATES, RANDOM_STATES = checkpoint.PICKLED_FILES


def convert(folder):
    """Convert one checkpoint folder; returns whether it held pickled files."""
    pickled = [name for name in checkpoint.PICKLED_FILES if os.path.isfile(os.path.join(folder, name))]
    if not pickled:
        return False
    if TRAINER_STATES in pickled:
        with open(os.path.join(folder, TRAINER_STATES), "rb") as handle:
            states, optimizer = pickle.load(handle)
        save_optimizer_states(states, optimizer, os.path.join(folder, checkpoint.OPTIMIZER_ARRAYS),
                              os.path.join(folder, checkpoint.OPTIMIZER_COUNTS))
    if RANDOM_STATES in pickled:
        with open(os.path.join(folder, RANDOM_STATES), "rb") as handle:
            random_states = pickle.load(handle)
        # random.json last: a folder holding it counts as converted, so everything else must be there first.
        checkpoint.write_random_states(os.path.join(folder, checkpoint.RANDOM_STATES), random_states)
    for name in pickled:
        os.remove(os.path.join(folder, name))
    return True


@command_line_entry
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.convert_checkpoint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("save_dir", metavar="SAVE_DIR", help="the run's --save-dir (holds checkpoints/)")
    args = parser.parse_args(argv)
    folders = checkpoint.list_checkpoints(args.save_dir)
    if not folders:
        raise UserError(f"{args.save_dir} holds no checkpoint (no {checkpoint.checkpoints_dir(args.save_dir)}/*/"
                        f"{checkpoint.STATE}); give a run's --save-dir")
    converted = [folder for folder, _ in folders if convert(folder)]
    print(f"converted {len(converted)} of {len(folders)} checkpoints in {args.save_dir}"
          + "".join(f"\n  {folder}" for folder in converted))
    return 0


if __name__ == "__main__":
    sys.exit(main())
