"""Train an image classifier with the recipe of "Bag of Tricks for Image Classification" (He et al. 2019).

The script follows the paper's Algorithm 1: build the data, build the network, build the trainer, train
epoch by epoch with mini-batch SGD (Nesterov momentum), evaluate, save. With no data flags it trains a
small network on a built-in demo data set; with ``--rec-train``/``--rec-val`` or ``--data-dir`` it runs the
paper's baseline recipe unless flags say otherwise.
"""
import argparse
import dataclasses
import logging
import os
import random
import resource
import sys
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from data.loaders import InputConfig, folder_source, record_source
from models import get_model, model_names
from utils import checkpoint
from utils.devices import build_contexts, split_batch
from utils.errors import UserError
from utils.lr_schedule import LR_MODES, build_lr_scheduler, linear_scaled_lr

# The paper's baseline (section 2): ResNet-50, 224x224, 8 devices x 32 = 256 images a batch, 120 epochs,
# rate divided by 10 at epochs 30, 60 and 90.
PAPER_DEFAULTS = dict(model="resnet50_v1", input_size=224, batch_size=32, num_epochs=120,
                      lr_decay_epoch="30,60,90", last_gamma=False)
# The built-in demo: small enough to train in about two minutes on two CPU cores. It needs zero-gamma: at
# 32x32 the last stage is 1x1, global pooling averages nothing, and the features' squared norm at
# initialization (about 860 against 255 with zero-gamma) makes SGD overshoot; without it ResNet-18-D
# stayed near chance for eight epochs on the demo set.
DEMO_DEFAULTS = dict(model="resnet18_v1d", input_size=32, batch_size=64, num_epochs=6,
                     lr_decay_epoch="4,5", last_gamma=True)
DEFAULT_DEMO_DIR = os.path.join(os.path.expanduser("~"), ".cache", "bag-of-tricks", "demo")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of one run, resolved once from the command line; nothing else is read later."""

    model: str
    rec_train: str
    rec_train_idx: str
    rec_val: str
    rec_val_idx: str
    data_dir: str
    demo_dir: str
    num_classes: int
    batch_size: int
    num_gpus: int
    num_cpu_contexts: int
    kvstore: str
    num_data_workers: int
    num_epochs: int
    lr: float
    lr_base: float
    lr_base_size: int
    momentum: float
    wd: float
    lr_mode: str
    lr_decay: float
    lr_decay_epoch: tuple
    warmup_epochs: float
    warmup_lr: float
    mode: str
    dtype: str
    input_size: int
    crop_ratio: float
    last_gamma: bool
    save_dir: str
    save_frequency: int
    log_interval: int
    logging_file: str
    seed: int

    @property
    def uses_demo(self):
        return not (self.rec_train or self.data_dir)


def build_parser():
    """The command line, in GluonCV's spelling where the two overlap."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Defaults marked 'paper/demo' are the paper's baseline with data flags, the demo's without: "
               + ", ".join(f"{key}={PAPER_DEFAULTS[key]}/{DEMO_DEFAULTS[key]}" for key in PAPER_DEFAULTS))
    data = parser.add_argument_group("data")
    data.add_argument("--rec-train", help="training .rec packed by `python -m data.pack`")
    data.add_argument("--rec-train-idx", help="its .idx (default: beside the .rec)")
    data.add_argument("--rec-val", help="validation .rec")
    data.add_argument("--rec-val-idx", help="its .idx (default: beside the .rec)")
    data.add_argument("--data-dir", help="raw images instead of .rec: DIR/train/<class>/*, DIR/val/<class>/*")
    data.add_argument("--demo-dir", default=DEFAULT_DEMO_DIR,
                      help="where the built-in demo data set is drawn when no data is given (default %(default)s)")
    data.add_argument("--num-classes", type=int,
                      help="only for .rec files without the class list that data.pack writes beside them")
    data.add_argument("--input-size", type=int, help="training crop size (paper/demo default 224/32)")
    data.add_argument("--crop-ratio", type=float, default=0.875,
                      help="validation centre crop = input size / shorter side (default %(default)s: 224 of 256)")
    data.add_argument("-j", "--num-data-workers", type=int, default=min(4, os.cpu_count() or 1),
                      help="decoding and augmentation threads (default %(default)s)")

    model = parser.add_argument_group("network")
    model.add_argument("--model", help="registered network, e.g. resnet50_v1d (paper/demo default "
                                       f"{PAPER_DEFAULTS['model']}/{DEMO_DEFAULTS['model']})")
    model.add_argument("--mode", choices=("hybrid", "imperative"), default="hybrid",
                       help="hybrid compiles the network into a static graph (default %(default)s)")
    model.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                       help="float16: FP16 activations and gradients with FP32 master weights (GPU only)")
    model.add_argument("--last-gamma", action=argparse.BooleanOptionalAction,
                       help="section 3.1 zero-gamma: the last BatchNorm of every residual block starts at 0 "
                            "(paper/demo default off/on)")

    optim = parser.add_argument_group("optimization")
    optim.add_argument("--batch-size", type=int, help="images per device per batch (paper/demo default 32/64)")
    optim.add_argument("--num-epochs", type=int, help="epochs (paper/demo default 120/6)")
    optim.add_argument("--lr", type=float,
                       help="learning rate, used as given; when omitted it is --lr-base x total batch / "
                            "--lr-base-size (section 3.1 linear scaling)")
    optim.add_argument("--lr-base", type=float, default=0.1, help="rate for --lr-base-size images (default 0.1)")
    optim.add_argument("--lr-base-size", type=int, default=256, help="batch that --lr-base is for (default 256)")
    optim.add_argument("--momentum", type=float, default=0.9, help="Nesterov momentum (default %(default)s)")
    optim.add_argument("--wd", type=float, default=1e-4, help="weight decay (default %(default)s)")
    optim.add_argument("--lr-mode", choices=LR_MODES, default="step", help="decay policy (default %(default)s)")
    optim.add_argument("--lr-decay", type=float, default=0.1, help="step decay factor (default %(default)s)")
    optim.add_argument("--lr-decay-epoch", help="comma-separated epochs that start a decayed step, counted "
                                                "from the start of training (paper/demo default 30,60,90/4,5)")
    optim.add_argument("--warmup-epochs", type=float, default=0, help="linear warmup epochs (default 0)")
    optim.add_argument("--warmup-lr", type=float, default=0.0, help="rate warmup starts from (default 0)")

    devices = parser.add_argument_group("devices")
    devices.add_argument("--num-gpus", type=int, default=0, help="GPUs to split each batch over (default 0)")
    devices.add_argument("--num-cpu-contexts", type=int, default=1,
                         help="without GPUs: CPU contexts to split each batch over, standing in for GPUs")
    devices.add_argument("--kvstore", default="device", help="gradient reduction: device or local (default device)")

    run = parser.add_argument_group("run")
    run.add_argument("--save-dir", default="params", help="where parameters, export and metrics go (default params)")
    run.add_argument("--save-frequency", type=int, default=10,
                     help="save parameters every N epochs (0: only at the end; default %(default)s)")
    run.add_argument("--log-interval", type=int, default=50, help="batches between speed lines (default 50)")
    run.add_argument("--logging-file", help="log file (default SAVE_DIR/train.log)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def _parse_epochs(text):
    try:
        epochs = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--lr-decay-epoch {text!r} is not a comma-separated list of epochs, e.g. 30,60,90") from None
    if list(epochs) != sorted(set(epochs)):
        raise UserError(f"--lr-decay-epoch {text!r} must list increasing epochs, e.g. 30,60,90")
    return epochs


def resolve_config(args):
    """Fill the data-dependent defaults and validate; the result is the single source of settings."""
    if bool(args.rec_train) != bool(args.rec_val):
        raise UserError("--rec-train and --rec-val go together; give both")
    if args.rec_train and args.data_dir:
        raise UserError("give either --rec-train/--rec-val or --data-dir, not both")
    values = vars(args).copy()
    defaults = DEMO_DEFAULTS if not (args.rec_train or args.data_dir) else PAPER_DEFAULTS
    for key, default in defaults.items():
        if values[key] is None:
            values[key] = default
    values["lr_decay_epoch"] = _parse_epochs(values["lr_decay_epoch"])
    values["logging_file"] = values["logging_file"] or os.path.join(values["save_dir"], "train.log")
    for name in ("batch_size", "num_epochs", "input_size", "log_interval"):
        if values[name] < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {values[name]}")
    if values["model"] not in model_names():
        raise UserError(f"unknown model {values['model']!r}; known models: {', '.join(model_names())}")
    return TrainConfig(**values)


def total_batch_size(config, contexts):
    return config.batch_size * len(contexts)


def effective_lr(config, contexts):
    """An explicit ``--lr`` as given; otherwise section 3.1's linear scaling with the total batch."""
    if config.lr is not None:
        return config.lr
    return linear_scaled_lr(total_batch_size(config, contexts), config.lr_base, config.lr_base_size)


def build_data(config, contexts):
    """Training and validation batches with the paper's augmentation; classes and sizes come from the data."""
    input_config = InputConfig(batch_size=total_batch_size(config, contexts), input_size=config.input_size,
                               crop_ratio=config.crop_ratio, num_workers=config.num_data_workers,
                               seed=config.seed)
    if config.data_dir:
        return folder_source(config.data_dir, input_config)
    rec_train, rec_val = config.rec_train, config.rec_val
    if config.uses_demo:
        from data.demo import make_demo_dataset
        logging.info("No data given: using the built-in demo data set in %s", config.demo_dir)
        rec_train, rec_val = make_demo_dataset(config.demo_dir)
    return record_source(rec_train, rec_val, input_config, idx_train=config.rec_train_idx,
                         idx_val=config.rec_val_idx, num_classes=config.num_classes)


def build_network(config, num_classes, contexts):
    """The network with the paper's initialization (section 2): Xavier weights, zero biases, BN gamma 1, beta 0."""
    net = get_model(config.model, classes=num_classes, last_gamma=config.last_gamma)
    net.initialize(mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3), ctx=contexts)
    if config.dtype != "float32":
        net.cast(config.dtype)
    if config.mode == "hybrid":
        net.hybridize(static_alloc=True, static_shape=True)
    return net


def build_trainer(config, net, contexts, batches_per_epoch):
    """Nesterov SGD (section 2) with the run's learning-rate schedule, reducing gradients over a kvstore."""
    schedule = build_lr_scheduler(config.lr_mode, effective_lr(config, contexts), batches_per_epoch,
                                  config.num_epochs, warmup_epochs=config.warmup_epochs,
                                  warmup_lr=config.warmup_lr, decay=config.lr_decay,
                                  decay_epochs=config.lr_decay_epoch)
    optimizer_params = dict(learning_rate=schedule.base_lr, momentum=config.momentum, wd=config.wd,
                            lr_scheduler=schedule, multi_precision=config.dtype == "float16")
    return gluon.Trainer(net.collect_params(), "nag", optimizer_params, kvstore=config.kvstore)


def build_loss():
    return gluon.loss.SoftmaxCrossEntropyLoss()


def check_labels(labels, num_classes):
    """Stop at the first label outside [0, num_classes): training on it would silently corrupt the run."""
    values = labels.asnumpy()
    bad = values[(values < 0) | (values >= num_classes) | (values != np.floor(values))]
    if bad.size:
        raise UserError(f"label {bad[0]:g} is outside [0, {num_classes}); the data's labels do not match its "
                        f"{num_classes} classes (repack it, or fix --num-classes)")


def _progress(batches, total, enabled):
    if not enabled:
        return batches
    from tqdm import tqdm
    return tqdm(batches, total=total, leave=False, unit="batch")


def train_one_epoch(epoch, net, trainer, loss_fn, data, contexts, config):
    """One pass over the training data; returns the epoch's loss, top-1 and speed."""
    batch_size = total_batch_size(config, contexts)
    accuracy, mean_loss = mx.metric.Accuracy(), mx.metric.Loss()
    speedometer = mx.callback.Speedometer(batch_size, config.log_interval, auto_reset=False)
    progress = _progress(data.train, data.batches_per_epoch, sys.stderr.isatty())
    tic = time.time()
    num_batches = 0
    for num_batches, batch in enumerate(progress, start=1):
        check_labels(batch.label[0], data.num_classes)
        images = split_batch(batch.data[0].astype(config.dtype, copy=False), contexts)
        labels = split_batch(batch.label[0], contexts)
        with autograd.record():
            outputs = [net(x) for x in images]
            losses = [loss_fn(output, label) for output, label in zip(outputs, labels)]
        autograd.backward(losses)
        trainer.step(batch_size)
        accuracy.update(labels, outputs)
        mean_loss.update(None, losses)
        speedometer(mx.model.BatchEndParam(epoch=epoch, nbatch=num_batches, locals=None,
                                           eval_metric=mx.metric.CompositeEvalMetric([accuracy, mean_loss])))
    mx.nd.waitall()
    seconds = time.time() - tic
    return dict(train_loss=mean_loss.get()[1], train_top1=accuracy.get()[1],
                samples_per_sec=num_batches * batch_size / seconds, epoch_seconds=seconds)


def evaluate(net, data, contexts, config):
    """Top-1 and top-5 accuracy over every validation image exactly once (padding excluded)."""
    top1 = mx.metric.Accuracy()
    top5 = mx.metric.TopKAccuracy(top_k=5) if data.num_classes > 5 else None
    for batch in data.val:
        images = split_batch(batch.data[0].astype(config.dtype, copy=False), contexts)
        outputs = mx.nd.concat(*[net(x).as_in_context(mx.cpu()) for x in images], dim=0)
        keep = outputs.shape[0] - batch.pad
        labels, outputs = batch.label[0][:keep], outputs[:keep].astype("float32")
        top1.update([labels], [outputs])
        if top5 is not None:
            top5.update([labels], [outputs])
    return dict(val_top1=top1.get()[1], val_top5=top5.get()[1] if top5 is not None else 1.0)


def peak_memory_mb():
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_outputs(net, config, epoch, contexts):
    """Parameters of the last epoch and the deployable export; returns their paths."""
    params = checkpoint.save_params(net, config.save_dir, config.model, epoch)
    if config.mode != "hybrid":
        net.hybridize()
    sample = mx.nd.zeros((1, 3, config.input_size, config.input_size), ctx=contexts[0], dtype=config.dtype)
    net(sample)
    return (params,) + checkpoint.export_deployable(net, config.save_dir, config.model)


def setup_logging(config):
    handlers = [logging.StreamHandler(sys.stdout), logging.FileHandler(config.logging_file)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def check_dtype(config, contexts):
    if config.dtype == "float16" and contexts[0].device_type != "gpu":
        raise UserError("--dtype float16 needs GPUs (MXNet 1.9.1 has no FP16 matrix multiply on CPU); "
                        "use --num-gpus N with the CUDA build, or --dtype float32")


def train(config):
    """Run the whole recipe; returns the last epoch's metrics record."""
    contexts = build_contexts(config.num_gpus, config.num_cpu_contexts)
    check_dtype(config, contexts)
    checkpoint.ensure_writable(config.save_dir)
    setup_logging(config)
    seed_everything(config.seed)
    data = build_data(config, contexts)
    net = build_network(config, data.num_classes, contexts)
    trainer = build_trainer(config, net, contexts, data.batches_per_epoch)
    loss_fn = build_loss()
    checkpoint.save_run_args(config.save_dir, dataclasses.asdict(config), data.class_names)
    logging.info("%s on %d images of %d classes, %d devices x %d images, learning rate %g (%s)",
                 config.model, data.num_train, data.num_classes, len(contexts), config.batch_size,
                 effective_lr(config, contexts), "given" if config.lr is not None else "linear scaling")
    record = {}
    for epoch in range(config.num_epochs):
        record = dict(epoch=epoch, **train_one_epoch(epoch, net, trainer, loss_fn, data, contexts, config))
        record.update(evaluate(net, data, contexts, config))
        record.update(lr=trainer.learning_rate, peak_rss_mb=round(peak_memory_mb(), 1))
        checkpoint.append_metrics(config.save_dir, record)
        logging.info("Epoch[%d] lr=%.5g train-loss=%.4f train-top1=%.4f val-top1=%.4f val-top5=%.4f "
                     "%.1f samples/sec %.1fs", epoch, record["lr"], record["train_loss"], record["train_top1"],
                     record["val_top1"], record["val_top5"], record["samples_per_sec"], record["epoch_seconds"])
        last_epoch = epoch == config.num_epochs - 1
        if not last_epoch and config.save_frequency and (epoch + 1) % config.save_frequency == 0:
            checkpoint.save_params(net, config.save_dir, config.model, epoch)
    paths = save_outputs(net, config, config.num_epochs - 1, contexts)
    logging.info("Saved parameters to %s, deployable export to %s and %s, metrics to %s", *paths,
                 checkpoint.metrics_path(config.save_dir))
    return record


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        train(resolve_config(args))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
