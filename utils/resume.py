"""Where a run starts: from scratch, from its newest checkpoint (``--resume``), or from GluonCV-style files.

A resumed run must compute what the uninterrupted one would have, so it refuses to continue under
settings that change the mathematics (another network, rate, schedule, batch, seed, trick); data paths,
devices and logging may differ, since data sets move between machines and jobs move between nodes.
"""
import dataclasses
import json
import os

from utils import checkpoint
from utils.errors import UserError

# Settings a resumed run may change without changing what it computes.
FREE_TO_CHANGE = frozenset({
    "resume", "resume_epoch", "resume_params", "resume_states", "save_frequency", "keep_checkpoints",
    "log_interval", "logging_file", "num_data_workers", "rec_train", "rec_train_idx", "rec_val", "rec_val_idx",
    "data_dir", "demo_dir", "num_gpus", "gpus", "num_cpu_contexts", "kvstore", "mode", "teacher_params",
    "pretrained_params", "skip_bad_records", "save_dir"})


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """The position a run continues from and the files that hold its state.

    ``epoch`` and ``batch`` name the next batch to train; ``global_step`` counts the optimizer updates
    done. ``checkpoint`` is a checkpoint folder (``--resume``), or None for GluonCV's ``--resume-params``
    and ``--resume-states`` files, which hold no generator states or running metrics.
    """

    epoch: int
    batch: int
    global_step: int
    checkpoint: str = None
    params: str = None
    trainer_states: str = None
    best_val_top1: float = None
    best_epoch: int = None
    epoch_meter: dict = None


def check_fresh_start(save_dir):
    """Refuse to start a new run over an earlier run's checkpoints or metrics, which it would destroy."""
    checkpoints = checkpoint.list_checkpoints(save_dir)
    if checkpoints or checkpoint.read_metrics(save_dir):
        held = f"checkpoints up to {os.path.basename(checkpoints[-1][0])}" if checkpoints else "a metrics.jsonl"
        raise UserError(f"--save-dir {save_dir} holds an earlier run ({held}); continue it with --resume, or "
                        "give another --save-dir")


def check_same_run(saved, current, global_batch, saved_global_batch, folder):
    """Raise UserError naming every setting that differs from the checkpointed run's."""
    current = json.loads(json.dumps(current))  # tuples become lists, as in the saved JSON
    differing = [f"--{key.replace('_', '-')} {saved.get(key)!r} -> {current[key]!r}"
                 for key in sorted(current) if key not in FREE_TO_CHANGE and saved.get(key) != current[key]]
    if global_batch != saved_global_batch:
        differing.append(f"total batch {saved_global_batch} -> {global_batch} (devices x workers x --batch-size)")
    if differing:
        raise UserError(f"--resume would continue {folder} under other settings ({'; '.join(differing)}); "
                        "give the flags of that run (see its args.json) or another --save-dir")


def find_resume_point(config, global_batch, updates_per_epoch):
    """The run's starting position, from the flags and the checkpoints in ``config.save_dir``."""
    if config.resume_params:
        return ResumePoint(epoch=config.resume_epoch, batch=0, global_step=config.resume_epoch * updates_per_epoch,
                           params=config.resume_params, trainer_states=config.resume_states)
    if not config.resume:
        check_fresh_start(config.save_dir)
        return ResumePoint(epoch=0, batch=0, global_step=0)
    checkpoints = checkpoint.list_checkpoints(config.save_dir)
    if not checkpoints:
        return ResumePoint(epoch=0, batch=0, global_step=0)
    folder, state = checkpoints[-1]
    check_same_run(state["config"], dataclasses.asdict(config), global_batch, state["global_batch"], folder)
    return ResumePoint(epoch=state["epoch"], batch=state["batch"], global_step=state["global_step"],
                       checkpoint=folder, best_val_top1=state["best_val_top1"], best_epoch=state["best_epoch"],
                       epoch_meter=state.get("epoch_meter"))
