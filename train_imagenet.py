"""Train an image classifier with the recipe of "Bag of Tricks for Image Classification" (He et al. 2019).

The script follows the paper's Algorithm 1: build the data, build the network, build the trainer, train
epoch by epoch with mini-batch SGD (Nesterov momentum), evaluate, save. With no data flags it trains a
small network on a built-in demo data set; with ``--rec-train``/``--rec-val`` or ``--data-dir`` it runs the
paper's baseline recipe unless flags say otherwise.
"""
import contextlib
import dataclasses
import logging
import resource
import sys

from utils.cpu_threads import describe_cpu_threads, use_physical_cores

use_physical_cores()  # before MXNet loads: it sizes its CPU thread pool once, at import

import mxnet as mx

from engine.config import describe_tricks, parse_config, replay_settings
from engine.loop import (EpochMeter, StoppedMidEpoch, current_lr, evaluate, log_validation_as_module_fit,
                         train_one_epoch)
from engine.recipe import (build_data, build_input_config, build_recipe, effective_lr, progressive_resize,
                           total_batch_size)
from engine.resume import RunState, find_resume_point, restore
from models.params import parameter_dtype
from utils import checkpoint
from utils.devices import build_contexts, renew_parameter_arrays
from utils.distributed import join_cluster, weights_fingerprint
from utils.errors import Interrupted, command_line_entry
from utils.interrupt import StopSignals
from utils.seeding import epoch_seed, seed_everything
from utils.tensorboard import open_curves


def peak_memory_mb():
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_outputs(recipe, config, epoch, contexts):
    """Parameters of the last epoch (the network's, and the weights' average's with --model-ema) and the
    deployable export, of the network or, with --export-ema, of the average; returns the parameter files' paths
    and the export's."""
    params = [checkpoint.save_params(recipe.net, config.save_dir, config.model, epoch)]
    if recipe.model_ema is not None:
        params.append(checkpoint.save_ema_params(recipe.model_ema.averaged, config.save_dir, config.model, epoch))
    exported = recipe.model_ema.averaged if config.export_ema else recipe.net
    if config.mode != "hybrid":
        exported.hybridize()
    sample = mx.nd.zeros((1, 3, config.val_input_size, config.val_input_size), ctx=contexts[0],
                         dtype=parameter_dtype(exported))
    exported(sample)
    return params, checkpoint.export_deployable(exported, config.save_dir, config.model)


def start_run_files(config, cluster, start, class_names):
    """Rank 0 alone writes files: checks ``--save-dir`` is writable, drops what a crash left half-written and the
    metrics of epochs that a resume repeats, and writes the settings and class names."""
    if not cluster.is_chief:
        return
    checkpoint.remove_unfinished_checkpoints(config.save_dir)
    checkpoint.keep_metrics_before(config.save_dir, start.epoch)
    checkpoint.save_run_args(config.save_dir, dataclasses.asdict(config), class_names, replay_settings(config))


def setup_logging(config, cluster):
    """Log to stdout and, on rank 0 only, to the log file; with several workers every line names its rank."""
    handlers = [logging.StreamHandler(sys.stdout)]
    if cluster.is_chief:
        checkpoint.ensure_writable(config.save_dir)
        handlers.append(logging.FileHandler(config.logging_file))
    rank = f"[rank {cluster.rank}/{cluster.num_workers}] " if cluster.num_workers > 1 else ""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {rank}%(message)s", handlers=handlers, force=True)


def log_recipe(config, data, contexts, cluster):
    logging.info("%s on %d images of %d classes, %d workers x %d devices x %d images, learning rate %g (%s), "
                 "tricks: %s", config.model, data.num_train * cluster.num_workers, data.num_classes,
                 cluster.num_workers, len(contexts), config.batch_size,
                 effective_lr(config, contexts, cluster.num_workers),
                 "given" if config.lr is not None else "linear scaling", describe_tricks(config))
    schedule = progressive_resize(config)
    logging.info("Training crops %s, validation centre crops %d of the shorter side resized to %d",
                 schedule or config.input_size, config.val_input_size,
                 build_input_config(config, contexts, cluster).val_resize)
    logging.info("CPU operator threads: %s", describe_cpu_threads())


def train_epoch(epoch, start, run, data, contexts, stop, curves):
    """Train one epoch, from where ``start`` left it if it is the first; on a signal, save where it is and stop.
    The speed lines' figures go to ``curves`` too."""
    config, recipe, cluster = run.config, run.recipe, run.cluster
    start_batch, meter = 0, None
    if epoch == start.epoch and start.batch:
        start_batch, meter = start.batch, EpochMeter(start.epoch_meter)
    else:
        seed_everything(epoch_seed(config.seed, epoch, cluster.rank))
    try:
        return train_one_epoch(epoch, recipe, data, contexts, config, start_batch, meter, stop, cluster, curves)
    except StoppedMidEpoch as stopped:
        global_step = cluster.global_step(data.batches_per_epoch, epoch, stopped.batches_done)
        saved = f"saved {run.save(epoch, global_step, batches_done=stopped.batches_done, meter=stopped.meter)}" \
            if cluster.is_chief else f"rank 0 saves the checkpoint in {checkpoint.checkpoints_dir(config.save_dir)}"
        raise Interrupted(f"{stop.signal_name} after batch {stopped.batches_done} of epoch {epoch}; {saved}; "
                          "continue with the same command and --resume", stop.signal_number) from None


def validate_and_record(epoch, stats, run, data, contexts, curves):
    """The epoch's line of metrics.jsonl: training figures and crop size, validation top-1 and top-5 (and the
    weights' average's, with --model-ema), rate, memory; the validation figures also go to ``curves``."""
    record = dict(epoch=epoch, **stats)
    record.update(evaluate(run.recipe.net, data, contexts))
    log_validation_as_module_fit(epoch, record)
    updates = run.cluster.global_step(data.batches_per_epoch, epoch + 1)
    points = {"val/top1": record["val_top1"], "val/top5": record["val_top5"]}
    ema_text = ""
    if run.recipe.model_ema is not None:
        averaged = evaluate(run.recipe.model_ema.averaged, data, contexts)
        record.update(val_top1_ema=averaged["val_top1"], val_top5_ema=averaged["val_top5"])
        points.update({"val/top1_ema": averaged["val_top1"], "val/top5_ema": averaged["val_top5"]})
        ema_text = f" val-top1-ema={averaged['val_top1']:.4f} val-top5-ema={averaged['val_top5']:.4f}"
    if run.cluster.workers_update_in_step:
        # Every worker updates its own copy of the weights: validation's layouts would make the copies drift apart.
        renew_parameter_arrays(run.recipe.net)
        if run.recipe.model_ema is not None:
            renew_parameter_arrays(run.recipe.model_ema.averaged)
    curves.add(updates, points)
    record.update(lr=current_lr(run.recipe.trainer, run.cluster, updates), peak_rss_mb=round(peak_memory_mb(), 1),
                  skipped_records=data.skipped_records,
                  input_size=build_input_config(run.config, contexts, run.cluster).train_size(epoch))
    run.note_validation(epoch, record["val_top1"])
    logging.info("Epoch[%d] lr=%.5g train-loss=%.4f train-top1=%.4f val-top1=%.4f val-top5=%.4f%s "
                 "%.1f samples/sec at %dx%d %.1fs", epoch, record["lr"], record["train_loss"], record["train_top1"],
                 record["val_top1"], record["val_top5"], ema_text, record["samples_per_sec"], record["input_size"],
                 record["input_size"], record["epoch_seconds"])
    return record


def save_epoch(epoch, record, run, data, stop):
    """Append the epoch's metrics and, when due (``--save-frequency``, the last epoch, a signal), a checkpoint."""
    config, cluster = run.config, run.cluster
    last_epoch = epoch == config.num_epochs - 1
    stopping = cluster.agree_to_stop(stop)
    due = last_epoch or stopping or (config.save_frequency and (epoch + 1) % config.save_frequency == 0)
    # Metrics before the checkpoint: a crash between the two resumes from the previous checkpoint, which drops
    # this epoch's line and logs it again; the other order would lose the line.
    if cluster.is_chief:
        checkpoint.append_metrics(config.save_dir, record)
        if due:
            run.save(epoch, cluster.global_step(data.batches_per_epoch, epoch + 1), val_top1=record["val_top1"])
    if stopping and not last_epoch:
        raise Interrupted(f"{stop.signal_name} at the end of epoch {epoch}; saved its checkpoint in "
                          f"{checkpoint.checkpoints_dir(config.save_dir)}; continue with the same command "
                          "and --resume", stop.signal_number)


def write_final_outputs(run, start, contexts):
    """The last epoch's parameters and the deployable export (rank 0), and what the log should say at the end."""
    config, cluster, net = run.config, run.cluster, run.recipe.net
    if start.epoch == config.num_epochs:
        logging.info("All %d epochs were done already; writing the final outputs again", config.num_epochs)
    if cluster.num_workers > 1 and not cluster.is_async:
        # Sync workers and Horovod's ranks apply the same update to the same weights; this line lets anyone
        # check it (async workers pull the servers' weights at different moments and differ).
        logging.info("Trainable weights fingerprint %s", weights_fingerprint(net))
    if not cluster.is_chief:
        return
    params, export = save_outputs(run.recipe, config, config.num_epochs - 1, contexts)
    logging.info("Saved parameters to %s, deployable export of the %s to %s and %s, metrics to %s",
                 " and ".join(params), "weights' average" if config.export_ema else "network", *export,
                 checkpoint.metrics_path(config.save_dir))
    if run.best_epoch is not None:
        logging.info("Best validation top-1 %.4f after epoch %d (its checkpoint is kept in %s)",
                     run.best_val_top1, run.best_epoch, checkpoint.checkpoints_dir(config.save_dir))


def train(config):
    """Algorithm 1: build the data, the network and its trainer; train epoch by epoch, evaluating and saving
    after each; write the final parameters and export. Returns the last epoch's metrics record."""
    contexts = build_contexts(config.num_gpus, config.num_cpu_contexts, config.gpus)
    cluster = join_cluster(config.kvstore)
    contexts = cluster.own_devices(contexts)
    setup_logging(config, cluster)
    seed_everything(config.seed)
    data = build_data(config, contexts, cluster)
    global_batch = total_batch_size(config, contexts) * cluster.num_workers
    start = find_resume_point(config, global_batch, cluster.updates_per_epoch(data.batches_per_epoch))
    recipe = build_recipe(config, data, contexts, cluster, begin_num_update=start.global_step)
    restore(start, recipe, contexts, cluster)
    run = RunState(config, recipe, cluster, start, global_batch)
    start_run_files(config, cluster, start, data.class_names)
    log_recipe(config, data, contexts, cluster)
    record = {}
    with StopSignals() as stop, contextlib.closing(open_curves(config, cluster, start.global_step)) as curves:
        for epoch in range(start.epoch, config.num_epochs):
            stats = train_epoch(epoch, start, run, data, contexts, stop, curves)
            record = validate_and_record(epoch, stats, run, data, contexts, curves)
            save_epoch(epoch, record, run, data, stop)
    write_final_outputs(run, start, contexts)
    return record


@command_line_entry
def main(argv=None):
    train(parse_config(argv, description=__doc__))


if __name__ == "__main__":
    sys.exit(main())
