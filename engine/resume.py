"""Where a run starts (from scratch, its newest checkpoint with ``--resume``, or GluonCV-style files), and
what its checkpoints hold (``RunState.save``) so that it can start there again.

A resumed run must compute what the uninterrupted one would have, so it refuses to continue under
settings that change the mathematics (another network, rate, schedule, batch, seed, trick); data paths,
devices and logging may differ, since data sets move between machines and jobs move between nodes.
"""
import dataclasses
import hashlib
import json
import logging
import os
import random

import numpy as np

from engine.config import FREE_ON_RESUME, option, saved_settings
from utils import checkpoint
from utils.distributed import start_kvstore
from utils.errors import UserError
from utils.pretrained import cached_gluoncv_params


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """The position a run continues from and the files that hold its state.

    ``epoch`` and ``batch`` name the next batch to train; ``global_step`` counts the optimizer updates
    done. ``checkpoint`` is a checkpoint folder (``--resume``), or None for GluonCV's ``--resume-params``
    and ``--resume-states`` files, which hold no generator states or running metrics. ``teacher_sha256`` is the
    digest of the distillation teacher's weights file the run trains with (None without ``--teacher``).
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
    teacher_sha256: str = None


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
    saved = json.loads(json.dumps(saved_settings(saved)))
    differing = [f"{option(key)} {saved.get(key)!r} -> {current[key]!r}"
                 for key in sorted(current) if key not in FREE_ON_RESUME and saved.get(key) != current[key]]
    if global_batch != saved_global_batch:
        differing.append(f"total batch {saved_global_batch} -> {global_batch} (devices x workers x --batch-size)")
    if differing:
        raise UserError(f"--resume would continue {folder} under other settings ({'; '.join(differing)}); "
                        "give the flags of that run (see its args.json) or another --save-dir")


def _optimizer_settings(optimizer):
    """What an optimizer computes with, by the flag that sets it: its kind, rate schedule, decay and momentum (not
    its gradient's scale, which the trainer sets at every step).

    The schedule's rate is ``warmup_final_lr``, the rate it was built with: MXNet's step schedules lower their
    ``base_lr`` as they pass each step. Steps and warmup are counted in updates, as the schedule counts them.
    """
    schedule = optimizer.lr_scheduler
    return {"--optimizer": type(optimizer).__name__.lower(), "--lr-mode": type(schedule).__name__,
            "--lr": getattr(schedule, "warmup_final_lr", None),
            "--warmup-epochs": getattr(schedule, "warmup_steps", None),
            "--warmup-lr": getattr(schedule, "warmup_begin_lr", None),
            "--lr-decay-epoch": getattr(schedule, "step", None), "--lr-decay": getattr(schedule, "factor", None),
            "--num-epochs": getattr(schedule, "max_update", None), "--poly-power": getattr(schedule, "power", None),
            "--wd": optimizer.wd, "--momentum": getattr(optimizer, "momentum", None),
            "--no-wd": sorted(optimizer.wd_mult.items()), "--dtype": optimizer.multi_precision}


def check_states_match(loaded, built, states_file, begin_num_update):
    """Raise UserError naming every setting of the optimizer ``loaded`` from GluonCV's ``--resume-states`` file
    that differs from ``built``'s, the optimizer the flags made.

    The file holds a whole pickled optimizer, which replaces the flags' one: a difference would train under the
    file's rate, schedule or decay without a word. ``begin_num_update`` is the update count at --resume-epoch.
    """
    saved, current = _optimizer_settings(loaded), _optimizer_settings(built)
    # Lists of (index, multiplier) or of steps are long: their difference is named, not printed.
    differing = [f"{name} {saved[name]!r} -> {current[name]!r}" if not isinstance(current[name], list) else
                 f"{name} (other {'per-parameter weight decays' if name == '--no-wd' else 'steps'})"
                 for name in current if saved[name] != current[name]]
    if loaded.num_update != begin_num_update:
        differing.append(f"--resume-epoch: the states are at update {loaded.num_update}, the epoch starts at "
                         f"update {begin_num_update}")
    if differing:
        raise UserError(f"--resume-states {states_file} holds an optimizer of other settings ({'; '.join(differing)}; "
                        "steps and warmup in updates); give the flags of the run that saved it, or leave out "
                        "--resume-states to start the momentum from zero")


def teacher_sha256(config):
    """The SHA-256 of the teacher's weights file, or None without ``--teacher``.

    ``--teacher-params`` may name another path on resume (files move between machines), so the run keeps what the
    file holds: another teacher behind the same name would change what is distilled.
    """
    if not config.teacher:
        return None
    digest = hashlib.sha256()
    with open(config.teacher_params or cached_gluoncv_params(config.teacher), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_same_teacher(saved_sha256, current_sha256, config, folder):
    """Raise UserError when the teacher's weights differ from the checkpointed run's (checkpoints written before
    the digest was kept have none to compare)."""
    if saved_sha256 is not None and saved_sha256 != current_sha256:
        given = option("teacher_params") + " " + config.teacher_params if config.teacher_params else \
            f"{option('teacher_params')} (default: {cached_gluoncv_params(config.teacher)})"
        raise UserError(f"--resume would continue {folder} with another teacher: {given} has SHA-256 "
                        f"{current_sha256[:16]}..., the run's teacher {saved_sha256[:16]}...; give the run's "
                        "teacher weights or another --save-dir")


def find_resume_point(config, global_batch, updates_per_epoch):
    """The run's starting position, from the flags and the checkpoints in ``config.save_dir``."""
    teacher = teacher_sha256(config)
    if not config.resume:
        # GluonCV's files start a new run too: in a folder holding another run it would overwrite that run's
        # checkpoints and metrics from --resume-epoch on.
        check_fresh_start(config.save_dir)
        if config.resume_params:
            return ResumePoint(epoch=config.resume_epoch, batch=0,
                               global_step=config.resume_epoch * updates_per_epoch, params=config.resume_params,
                               trainer_states=config.resume_states, teacher_sha256=teacher)
        return ResumePoint(epoch=0, batch=0, global_step=0, teacher_sha256=teacher)
    checkpoints = checkpoint.list_checkpoints(config.save_dir)
    if not checkpoints:
        return ResumePoint(epoch=0, batch=0, global_step=0, teacher_sha256=teacher)
    folder, state = checkpoints[-1]
    checkpoint.check_numbers_only(folder)
    check_same_run(state["config"], dataclasses.asdict(config), global_batch, state["global_batch"], folder)
    check_same_teacher(state.get("teacher_sha256"), teacher, config, folder)
    return ResumePoint(epoch=state["epoch"], batch=state["batch"], global_step=state["global_step"],
                       checkpoint=folder, best_val_top1=state["best_val_top1"], best_epoch=state["best_epoch"],
                       epoch_meter=state.get("epoch_meter"), teacher_sha256=teacher)


def random_states(recipe):
    """The generator states a checkpoint keeps: Python's, numpy's and the batch transform's (the generator of
    mixup and CutMix).

    MXNet offers no way to read its generator's state; it is seeded afresh from (seed, epoch) at every epoch's
    start instead, and from (seed, epoch, batch, rank) before every batch of a network that draws (dropout, drop
    path: ``utils.seeding.batch_seed``), so a run resumed in the middle of an epoch draws what the uninterrupted
    run drew.
    """
    return dict(python=random.getstate(), numpy=np.random.get_state(),
                batch_transform=recipe.batch_transform.get_state())


def restore_random_states(recipe, states):
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    # Checkpoints written before CutMix and random erasing existed hold mixup's generator alone.
    transform_state = states.get("batch_transform") or dict(mix_schedule=states["mixup"])
    recipe.batch_transform.set_state(transform_state)


class RunState:
    """Where the run is and how it went: the epoch, the optimizer's update count and the best validation top-1.

    ``save(...)`` writes one checkpoint of the run at this point; only rank 0 of a job calls it.
    """

    def __init__(self, config, recipe, cluster, start, global_batch):
        self.config, self.recipe, self.cluster, self.global_batch = config, recipe, cluster, global_batch
        self.best_val_top1, self.best_epoch = start.best_val_top1, start.best_epoch
        self.teacher_sha256 = start.teacher_sha256

    def note_validation(self, epoch, val_top1):
        if self.best_val_top1 is None or val_top1 >= self.best_val_top1:
            self.best_val_top1, self.best_epoch = val_top1, epoch

    def save(self, epoch, global_step, val_top1=None, batches_done=None, meter=None):
        """A checkpoint after epoch ``epoch``, or after ``batches_done`` of its batches (then ``meter``)."""
        mid_epoch = batches_done is not None
        # Under dist_async the optimizer states live on the servers, which MXNet cannot save.
        trainer = None if self.cluster.update_on_kvstore else self.recipe.trainer
        model_ema = self.recipe.model_ema
        state = dict(epoch=epoch if mid_epoch else epoch + 1, batch=batches_done if mid_epoch else 0,
                     global_step=global_step, val_top1=val_top1, best_val_top1=self.best_val_top1,
                     best_epoch=self.best_epoch, epoch_meter=meter.state() if mid_epoch else None,
                     global_batch=self.global_batch,
                     # The moving average's step count: its next update comes when the count reaches a multiple
                     # of --model-ema-steps, also after a resume in the middle of an epoch.
                     ema_steps=model_ema.steps_seen if model_ema is not None else None,
                     teacher_sha256=self.teacher_sha256,
                     config=dataclasses.asdict(self.config))
        average = {} if model_ema is None else dict(
            ema_net=model_ema.averaged, ema_params_name=checkpoint.ema_params_name(self.config.model, epoch))
        folder = checkpoint.save_checkpoint(
            self.config.save_dir, checkpoint.checkpoint_name(epoch, batches_done), self.recipe.net, trainer,
            state, random_states(self.recipe), checkpoint.params_name(self.config.model, epoch), **average)
        checkpoint.prune_checkpoints(self.config.save_dir, self.config.keep_checkpoints)
        return folder


def restore(start, recipe, contexts, cluster):
    """Load the parameters, optimizer states, generator states and weights' average that ``start`` points to.

    GluonCV's files hold no average: it starts afresh from the loaded weights at the first step.
    """
    trainer = None if cluster.update_on_kvstore else recipe.trainer
    model_ema = recipe.model_ema
    if not (start.checkpoint or start.params):
        return
    if trainer is not None and cluster.kvstore_type.startswith("dist"):
        # Loading states would start the kvstore through Gluon's own init, whose first pull on another worker can
        # overtake rank 0's push; the workers then load the same weights over the ones pulled here.
        start_kvstore(trainer, recipe.step_batch)
    if start.checkpoint:
        state, states = checkpoint.load_checkpoint(start.checkpoint, recipe.net, trainer, contexts,
                                                   model_ema.averaged if model_ema is not None else None)
        if model_ema is not None:
            model_ema.resume(state["ema_steps"])
        restore_random_states(recipe, states)
        logging.info("Resuming from %s: epoch %d, batch %d, %d updates done", start.checkpoint, start.epoch,
                     start.batch, start.global_step)
        if trainer is not None and not state["trainer_states"]:
            logging.warning("Optimizer momentum restarts from zero: %s holds no optimizer states (a job whose "
                            "servers ran the optimizer wrote it)", start.checkpoint)
    else:
        recipe.net.load_parameters(start.params, ctx=contexts)
        if start.trainer_states and trainer is not None:
            built = trainer.optimizer
            trainer.load_states(start.trainer_states)
            check_states_match(trainer.optimizer, built, start.trainer_states, start.global_step)
        logging.info("Resuming at epoch %d from %s%s", start.epoch, start.params,
                     f" and {start.trainer_states}" if start.trainer_states else " (fresh optimizer momentum)")
    if trainer is None:
        logging.warning("Optimizer momentum restarts from zero: a dist_async job keeps it on its servers, which "
                        "MXNet cannot save")
