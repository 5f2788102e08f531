"""The training loop: one step, one epoch, and the evaluation of the network that is saved."""
import functools
import logging
import math
import sys
import time

import mxnet as mx
import numpy as np
from mxnet import autograd

from engine.recipe import total_batch_size
from utils.devices import average_running_statistics, split_batch
from utils.distributed import Cluster, start_kvstore, started_by_launcher
from utils.errors import Diverged, UserError
from utils.optimizers import global_gradient_norm
from utils.seeding import batch_seed
from utils.tensorboard import NO_CURVES


def check_labels(labels, num_classes, find_bad_records=None):
    """Stop at the first label outside [0, num_classes): training on it would silently corrupt the run.

    ``find_bad_records`` (a DataSource's) names the records that hold such labels.
    """
    values = labels.asnumpy()
    bad = values[(values < 0) | (values >= num_classes) | (values != np.floor(values))]
    if bad.size:
        found = find_bad_records() if find_bad_records is not None else None
        raise UserError(f"label {bad[0]:g} is outside [0, {num_classes}); the data's labels do not match its "
                        f"{num_classes} classes ({found + '; ' if found else ''}repack it, fix --num-classes, "
                        "or pass --skip-bad-records)")


def check_finite_loss(loss_sum, epoch, batch, config):
    """Stop at the first NaN or infinite loss: every later step would only spread it through the weights."""
    if not math.isfinite(loss_sum):
        raise Diverged(f"the training loss became {loss_sum} at epoch {epoch}, batch {batch}; lower --lr or "
                       f"lengthen --warmup-epochs (files already in {config.save_dir} are untouched)")


def shows_progress_bar():
    """A progress bar only for a person at a terminal: never in a launched job, where ``ssh -tt`` gives every
    process a terminal and each worker's bar would flood the launcher's output."""
    return sys.stderr.isatty() and not started_by_launcher()


def _progress(batches, total, enabled):
    if not enabled:
        return batches
    from tqdm import tqdm
    return tqdm(batches, total=total, leave=False, unit="batch")


class EpochMeter:
    """Running loss, top-1, time and batch count of one training epoch.

    A checkpoint written in the middle of an epoch stores its ``state()``, so that the resumed epoch reports
    the figures of the whole epoch, as an uninterrupted run would.
    """

    def __init__(self, state=None):
        self.accuracy, self.mean_loss = mx.metric.Accuracy(), mx.metric.Loss()
        self.seconds, self.batches = 0.0, 0
        if state:
            for metric, sums in ((self.accuracy, state["accuracy"]), (self.mean_loss, state["loss"])):
                metric.sum_metric, metric.num_inst = sums
                metric.global_sum_metric, metric.global_num_inst = sums
            self.seconds, self.batches = state["seconds"], state["batches"]

    def state(self):
        return dict(accuracy=[self.accuracy.sum_metric, self.accuracy.num_inst],
                    loss=[self.mean_loss.sum_metric, self.mean_loss.num_inst],
                    seconds=self.seconds, batches=self.batches)

    def summary(self, batch_size):
        return dict(train_loss=self.mean_loss.get()[1], train_top1=self.accuracy.get()[1],
                    samples_per_sec=self.batches * batch_size / self.seconds if self.seconds else 0.0,
                    epoch_seconds=self.seconds)


class SpeedLog:
    """Every ``interval`` batches, a line with the images/s since the last line and the epoch's running figures,
    which also go to ``curves`` with the learning rate, at the global step.

    Counting from the batch a resumed epoch starts at, the first line's speed is right too (MXNet's
    Speedometer assumes each epoch starts at batch 0). ``step_of_batch(b)`` is the global step after the
    epoch's batch b, ``lr_of_step(s)`` the rate of update s.
    """

    def __init__(self, epoch, start_batch, batch_size, interval, curves, step_of_batch, lr_of_step):
        self.epoch, self.batch_size, self.interval = epoch, batch_size, interval
        self.curves, self.step_of_batch, self.lr_of_step = curves, step_of_batch, lr_of_step
        self.last_batch, self.tic = start_batch, time.time()

    def __call__(self, batch_number, meter):
        if batch_number % self.interval:
            return
        top1, loss, images_per_sec = self._add_point(batch_number, meter)
        logging.info("Epoch[%d] Batch [%d-%d]\tSpeed: %.2f samples/sec\taccuracy=%f\tloss=%f", self.epoch,
                     self.last_batch, batch_number, images_per_sec, top1, loss)
        self.last_batch, self.tic = batch_number, time.time()

    def finish(self, batch_number, meter):
        """At the epoch's last batch, its figures go to ``curves`` unless a line just did: an epoch shorter than
        the interval, or one that ends between two lines, would otherwise leave no training point at its end."""
        if batch_number > self.last_batch:
            self._add_point(batch_number, meter)

    def _add_point(self, batch_number, meter):
        """The epoch's running figures and the images/s since the last line, into ``curves`` at the global step."""
        images_per_sec = (batch_number - self.last_batch) * self.batch_size / (time.time() - self.tic)
        top1, loss = meter.accuracy.get()[1], meter.mean_loss.get()[1]
        step = self.step_of_batch(batch_number)
        self.curves.add(step, {"train/loss": loss, "train/top1": top1, "train/lr": self.lr_of_step(step),
                               "train/samples_per_sec": images_per_sec})
        return top1, loss, images_per_sec


class StoppedMidEpoch(Exception):
    """A signal asked the loop to stop; raised after ``batches_done`` batches of the epoch, between two steps."""

    def __init__(self, batches_done, meter):
        super().__init__(f"stopped after batch {batches_done}")
        self.batches_done = batches_done
        self.meter = meter


def update_weights(trainer, step_batch):
    """``trainer.step``; for an optimizer that clips the global gradient norm (``utils.optimizers.LAMB``), the
    reduction first, then the norm of the reduced gradient, then the update. Where the update runs inside the
    reduction (on the servers of ``dist_async``) there is no global norm to clip to."""
    optimizer = trainer.optimizer
    if not hasattr(optimizer, "clip_to_global_norm") or trainer._update_on_kvstore:
        trainer.step(step_batch)
        return
    trainer.allreduce_grads()
    optimizer.clip_to_global_norm(global_gradient_norm(trainer._params, trainer._scale / step_batch))
    trainer.update(step_batch)


def train_step(recipe, images, targets):
    """Forward, backward and one update on a batch already split over the devices; returns outputs and losses.

    With ``--model-ema`` the weights' moving average then counts the step (``utils.ema``).
    """
    with autograd.record():
        outputs = [recipe.net(x) for x in images]
        losses = [recipe.loss_fn(output, target, x) for output, target, x in zip(outputs, targets, images)]
        # Inside the recording: AMP's loss scaling multiplies the losses, which must be part of the graph.
        recipe.precision.backward(losses, recipe.trainer)
    if not recipe.trainer._kv_initialized:
        start_kvstore(recipe.trainer, recipe.step_batch)
    model_ema = recipe.model_ema
    if model_ema is not None and not model_ema.started:
        # ema_0 = w_0: the weights exist from the first forward pass on (deferred initialization), and
        # start_kvstore has just given every device and worker the same ones, device 0's and rank 0's.
        model_ema.start()
    update_weights(recipe.trainer, recipe.step_batch)
    if model_ema is not None:
        model_ema.update()
    return outputs, losses


def train_one_epoch(epoch, recipe, data, contexts, config, start_batch=0, meter=None, stop=None, cluster=None,
                    curves=NO_CURVES):
    """One pass over the training data (from batch ``start_batch``); returns the epoch's loss, top-1, speed.

    Under mixup the top-1 counts a prediction right when it names the dominant label of its mixed pair.
    When ``stop`` (``utils.interrupt.StopSignals``) has caught a signal, StoppedMidEpoch is raised after the
    current step, after the same step on every rank of a Horovod job (``Cluster.agree_to_stop``). ``curves``
    (``utils.tensorboard``) get the speed lines' figures.
    """
    cluster = cluster or Cluster(config.kvstore)
    batch_size = total_batch_size(config, contexts)
    meter = meter or EpochMeter()
    speed = SpeedLog(epoch, start_batch, batch_size, config.log_interval, curves,
                     functools.partial(cluster.global_step, data.batches_per_epoch, epoch),
                     functools.partial(current_lr, recipe.trainer, cluster))
    batches = data.train.epoch(epoch, start_batch)
    progress = _progress(batches, data.batches_per_epoch - start_batch, shows_progress_bar())
    tic = time.time()
    for batch_number, batch in enumerate(progress, start=start_batch + 1):
        check_labels(batch.label[0], data.num_classes, data.find_bad_records)
        images, targets, metric_labels = recipe.batch_transform(
            split_batch(batch.data[0], contexts), split_batch(batch.label[0], contexts), epoch, batch_number - 1)
        if recipe.network_draws:
            # What the network draws is then a function of the batch's place, also after a mid-epoch resume.
            mx.random.seed(batch_seed(config.seed, epoch, batch_number - 1, cluster.rank))
        outputs, losses = train_step(recipe, images, targets)
        meter.accuracy.update(metric_labels, outputs)
        meter.mean_loss.update(None, losses)
        meter.batches += 1
        check_finite_loss(meter.mean_loss.sum_metric, epoch, batch_number, config)
        speed(batch_number, meter)
        if stop is not None and batch_number < data.batches_per_epoch and cluster.agree_to_stop(stop):
            mx.nd.waitall()  # the checkpoint reads running statistics that a static-memory graph writes unordered
            if recipe.model_ema is not None:
                recipe.model_ema.copy_statistics()
            meter.seconds += time.time() - tic
            raise StoppedMidEpoch(batch_number, meter)
    speed.finish(data.batches_per_epoch, meter)
    # Wait first: a static-memory graph's writes to the running statistics are not ordered before a later read.
    mx.nd.waitall()
    average_running_statistics(recipe.net)
    if recipe.model_ema is not None:
        recipe.model_ema.copy_statistics()  # the devices' mean, which the network is evaluated and saved with
    meter.seconds += time.time() - tic
    summary = meter.summary(batch_size)
    log_training_as_module_fit(epoch, summary)
    return summary


# The lines MXNet 1.9.1's Module.fit logs after each epoch (mxnet/module/base_module.py), which MXNet users' log
# parsers read (MXNet's tools/parse_log.py: "Train-accuracy", "Time cost", "Validation-accuracy"). The metrics'
# names are mx.metric.Accuracy's and mx.metric.TopKAccuracy(top_k=5)'s.
def log_training_as_module_fit(epoch, summary):
    """Module.fit's lines for an epoch's training: its top-1 and its training time."""
    logging.info("Epoch[%d] Train-%s=%f", epoch, "accuracy", summary["train_top1"])
    logging.info("Epoch[%d] Time cost=%.3f", epoch, summary["epoch_seconds"])


def log_validation_as_module_fit(epoch, scores):
    """Module.fit's lines for an epoch's validation (``evaluate``'s ``scores``): top-1 and top-5."""
    for name, key in (("accuracy", "val_top1"), ("top_k_accuracy_5", "val_top5")):
        logging.info("Epoch[%d] Validation-%s=%f", epoch, name, scores[key])


def evaluate(net, data, contexts):
    """Top-1 and top-5 accuracy over every validation image exactly once (padding excluded)."""
    top1 = mx.metric.Accuracy()
    top5 = mx.metric.TopKAccuracy(top_k=5) if data.num_classes > 5 else None
    for batch in data.val:
        images = split_batch(batch.data[0], contexts)
        outputs = mx.nd.concat(*[net(x).as_in_context(mx.cpu()) for x in images], dim=0)
        keep = outputs.shape[0] - batch.pad
        labels, outputs = batch.label[0][:keep], outputs[:keep].astype("float32")
        top1.update([labels], [outputs])
        if top5 is not None:
            top5.update([labels], [outputs])
    return dict(val_top1=top1.get()[1], val_top5=top5.get()[1] if top5 is not None else 1.0)


def current_lr(trainer, cluster, updates):
    """The rate of the last update.

    Read from the schedule at the job's update count when there are several workers: under dist_async the
    servers run the optimizer (``Cluster.update_on_kvstore``) and the worker's copy never counts an update, so
    it is approximate there (workers run at their own pace); under dist_sync and Horovod, one update per global
    step, it is the worker's own rate.
    """
    if cluster.num_workers > 1:
        return trainer.optimizer.lr_scheduler(updates)
    return trainer.learning_rate
