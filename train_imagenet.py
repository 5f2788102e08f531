"""Train an image classifier with the recipe of "Bag of Tricks for Image Classification" (He et al. 2019).

The script follows the paper's Algorithm 1: build the data, build the network, build the trainer, train
epoch by epoch with mini-batch SGD (Nesterov momentum), evaluate, save. With no data flags it trains a
small network on a built-in demo data set; with ``--rec-train``/``--rec-val`` or ``--data-dir`` it runs the
paper's baseline recipe unless flags say otherwise.
"""
import argparse
import dataclasses
import logging
import math
import os
import resource
import sys
import time

from utils.cpu_threads import describe_cpu_threads, use_physical_cores

use_physical_cores()  # before MXNet loads: it sizes its CPU thread pool once, at import

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from data.demo import make_demo_dataset
from data.loaders import InputConfig, folder_source, record_source
from models import get_model, model_names
from models.registry import min_input_size
from utils import checkpoint
from utils.batch_transform import BatchTransform
from utils.devices import average_running_statistics, build_contexts, split_batch
from utils.distributed import DIST_KVSTORES, Cluster, join_cluster, weights_fingerprint
from utils.distillation import CrossEntropyLoss, DistillationLoss, check_params_fit
from utils.errors import Diverged, Interrupted, UserError, command_line_entry
from utils.interrupt import StopRequests
from utils.label_smoothing import SMOOTHING_STYLES
from utils.lr_schedule import LR_MODES, build_lr_scheduler, linear_scaled_lr
from utils.mixup import MixupSchedule
from utils.precision import DTYPES, build_precision
from utils.pretrained import cached_gluoncv_params, load_for_finetuning
from utils.resume import RunState, find_resume_point, restore
from utils.seeding import epoch_seed, seed_everything
from utils.weight_decay import apply_no_bias_decay, keep_multipliers_by_index

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
    skip_bad_records: bool
    batch_size: int
    num_gpus: int
    gpus: tuple
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
    pretrained_params: str
    no_wd: bool
    label_smoothing: float
    label_smoothing_style: str
    mixup: bool
    mixup_alpha: float
    mixup_off_epoch: int
    teacher: str
    teacher_params: str
    temperature: float
    hard_weight: float
    save_dir: str
    save_frequency: int
    keep_checkpoints: int
    resume: bool
    resume_epoch: int
    resume_params: str
    resume_states: str
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
    data.add_argument("--skip-bad-records", action="store_true",
                      help="scan every record first and train without the bad ones (undecodable image, label "
                           "outside the classes, broken framing), counted in the log and metrics.jsonl; "
                           "without it the first bad record stops the run, named")
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
    model.add_argument("--dtype", choices=DTYPES, default="float32",
                       help="section 3.2: float16 trains FP16 activations and gradients with FP32 master "
                            "weights and dynamic loss scaling (MXNet AMP; GPU only)")
    model.add_argument("--last-gamma", action=argparse.BooleanOptionalAction,
                       help="section 3.1 zero-gamma: the last BatchNorm of every residual block starts at 0 "
                            "(paper/demo default off/on)")
    model.add_argument("--pretrained-params", metavar="FILE",
                       help="start from these weights (ours or GluonCV's); a classifier for another number of "
                            "classes is re-initialized")

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

    tricks = parser.add_argument_group("tricks (each off by default: no trick flag is the paper's baseline)")
    tricks.add_argument("--no-wd", action="store_true",
                        help="section 3.1: no weight decay on biases and BatchNorm gamma/beta, only on conv and "
                             "dense weights")
    tricks.add_argument("--label-smoothing", type=float, nargs="?", const=0.1, default=0.0, metavar="EPSILON",
                        help="section 5.2: smooth the targets by EPSILON (0.1 when given without a value)")
    tricks.add_argument("--label-smoothing-style", choices=SMOOTHING_STYLES, default="paper",
                        help="paper: 1-eps and eps/(K-1); gluoncv: 1-eps+eps/K and eps/K (default %(default)s)")
    tricks.add_argument("--mixup", action="store_true", help="section 5.4: train on mixed pairs of images")
    tricks.add_argument("--mixup-alpha", type=float, default=0.2, help="lambda ~ Beta(alpha, alpha) (default 0.2)")
    tricks.add_argument("--mixup-off-epoch", type=int, default=0, help="train the last N epochs without mixup")
    tricks.add_argument("--teacher", help="section 5.3: distil from this registered network (or an exported "
                                          "PREFIX-symbol.json)")
    tricks.add_argument("--teacher-params", help="the teacher's trained .params file (default: GluonCV's weights "
                                                 "for --teacher in the local MXNet model cache, ~/.mxnet/models)")
    tricks.add_argument("--temperature", type=float, default=20.0, help="distillation temperature T (default 20)")
    tricks.add_argument("--hard-weight", type=float, default=0.5,
                        help="weight w of the hard-label term; the soft term gets 1 - w (default 0.5)")

    devices = parser.add_argument_group("devices")
    devices.add_argument("--num-gpus", type=int, default=0, help="GPUs to split each batch over (default 0)")
    devices.add_argument("--gpus", help="comma-separated GPU ids to use instead of the first --num-gpus, e.g. 0,2")
    devices.add_argument("--num-cpu-contexts", type=int, default=1,
                         help="without GPUs: CPU contexts to split each batch over, standing in for GPUs")
    devices.add_argument("--kvstore", default="device",
                         help="gradient reduction: device or local on one machine; dist_sync, dist_device_sync "
                              "or dist_async over several, started by tools/launch.py (default device)")

    run = parser.add_argument_group("run")
    run.add_argument("--save-dir", default="params",
                     help="where checkpoints, parameters, export and metrics go (default params)")
    run.add_argument("--save-frequency", type=int, default=1,
                     help="write a checkpoint every N epochs (0: only at the end and on SIGINT/SIGTERM; "
                          "default %(default)s)")
    run.add_argument("--keep-checkpoints", type=int, default=3, metavar="K",
                     help="keep the K newest checkpoints and the best by validation top-1 (0: keep all; "
                          "default %(default)s)")
    run.add_argument("--resume", action="store_true",
                     help="continue from the newest whole checkpoint in --save-dir, exactly where it stopped; "
                          "without one, start from scratch, so one command line serves every restart")
    run.add_argument("--resume-epoch", type=int, default=0,
                     help="GluonCV style: with --resume-params, the epoch to start from (default 0)")
    run.add_argument("--resume-params", help="GluonCV style: parameters to start from at --resume-epoch")
    run.add_argument("--resume-states", help="GluonCV style: trainer states saved with --resume-params")
    run.add_argument("--log-interval", type=int, default=50, help="batches between speed lines (default 50)")
    run.add_argument("--logging-file", help="log file (default SAVE_DIR/train.log)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The finite values a numeric flag may take, from ``low`` to ``high`` (None: unbounded), said as in a message."""

    low: float = None
    high: float = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value):
        above = self.low is None or value > self.low or (value == self.low and not self.low_open)
        below = self.high is None or value < self.high or (value == self.high and not self.high_open)
        return math.isfinite(value) and above and below

    def __str__(self):
        if self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        if self.low_open:
            return "positive" if self.low == 0 else f"more than {self.low}"
        return "0 or more" if self.low == 0 else f"at least {self.low}"


# Every numeric flag of build_parser and its valid values, checked before anything runs: out of bounds, MXNet
# would stop with a traceback from deep inside (a scheduler, a loader, a seed) or quietly train something else.
FLAG_BOUNDS = dict(
    num_classes=Bounds(2),  # label smoothing gives each wrong class eps / (K - 1)
    input_size=Bounds(1), crop_ratio=Bounds(0, 1, low_open=True), num_data_workers=Bounds(1),
    batch_size=Bounds(1), num_epochs=Bounds(1), lr=Bounds(0, low_open=True), lr_base=Bounds(0, low_open=True),
    lr_base_size=Bounds(1), momentum=Bounds(0, 1, high_open=True), wd=Bounds(0),
    lr_decay=Bounds(0, 1, low_open=True), warmup_epochs=Bounds(0), warmup_lr=Bounds(0),
    label_smoothing=Bounds(0, 1, high_open=True), mixup_alpha=Bounds(0, low_open=True), mixup_off_epoch=Bounds(0),
    temperature=Bounds(0, low_open=True), hard_weight=Bounds(0, 1),
    num_gpus=Bounds(0), num_cpu_contexts=Bounds(1),
    save_frequency=Bounds(0), keep_checkpoints=Bounds(0), resume_epoch=Bounds(0), log_interval=Bounds(1),
    seed=Bounds(0, 2**32 - 1),  # numpy's generator refuses other seeds
)


def _parse_epochs(text):
    try:
        epochs = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"--lr-decay-epoch {text!r} is not a comma-separated list of epochs, e.g. 30,60,90") from None
    if list(epochs) != sorted(set(epochs)) or min(epochs, default=0) < 0:
        raise UserError(f"--lr-decay-epoch {text!r} must list increasing epochs, each 0 or more, e.g. 30,60,90")
    return epochs


def _parse_gpu_ids(text):
    if not text:
        return ()
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--gpus {text!r} is not a comma-separated list of GPU ids, e.g. 0,1,2,3") from None
    if len(set(ids)) != len(ids) or min(ids) < 0:
        raise UserError(f"--gpus {text!r} must list distinct non-negative GPU ids")
    return ids


def _check_numbers(values):
    """Each numeric flag within its bounds, then the epoch counts within the run."""
    for name, bounds in FLAG_BOUNDS.items():
        if values[name] is not None and values[name] not in bounds:
            raise UserError(f"--{name.replace('_', '-')} must be {bounds}, got {values[name]}")
    num_epochs = values["num_epochs"]
    if values["warmup_epochs"] >= num_epochs:
        raise UserError(f"--warmup-epochs {values['warmup_epochs']:g} leaves no epoch after warmup of "
                        f"--num-epochs {num_epochs}")
    if values["mixup"] and values["mixup_off_epoch"] >= num_epochs:
        raise UserError(f"--mixup-off-epoch {values['mixup_off_epoch']} turns mixup off for all --num-epochs "
                        f"{num_epochs}; give fewer than {num_epochs} epochs without mixup")
    if values["resume_epoch"] >= num_epochs:
        raise UserError(f"--resume-epoch {values['resume_epoch']} is not an epoch of --num-epochs {num_epochs}")


def _check_networks(values):
    """Registered networks (the teacher may be an export) that accept --input-size; weight files that exist."""
    names = model_names()
    if values["model"] not in names:
        raise UserError(f"unknown model {values['model']!r}; known models: {', '.join(names)}")
    teacher = values["teacher"]
    if teacher and teacher not in names:
        if not teacher.endswith("-symbol.json"):
            raise UserError(f"unknown --teacher {teacher!r}; give an exported PREFIX-symbol.json or one of the "
                            f"known models: {', '.join(names)}")
        if not os.path.isfile(teacher):
            raise UserError(f"--teacher {teacher} does not exist")
    for flag in ("model", "teacher"):
        smallest = min_input_size(values[flag]) if values[flag] in names else 1
        if values["input_size"] < smallest:
            raise UserError(f"--input-size {values['input_size']} is too small for --{flag} {values[flag]}, which "
                            f"needs at least {smallest}; use --input-size {smallest} or more")
    if values["teacher_params"] and not teacher:
        raise UserError("--teacher-params needs --teacher, the network the file belongs to")
    for flag in ("teacher_params", "pretrained_params"):
        if values[flag] and not os.path.isfile(values[flag]):
            raise UserError(f"--{flag.replace('_', '-')} {values[flag]} does not exist")


def _check_distribution(values):
    """What the kvstore needs: GPUs for NCCL; for dist_*, packed records, clean beforehand, in float32."""
    kvstore = values["kvstore"]
    if kvstore == "nccl" and not (values["num_gpus"] or values["gpus"]):
        raise UserError("--kvstore nccl reduces gradients between GPUs; give --num-gpus or --gpus, or use "
                        "--kvstore device")
    if kvstore in DIST_KVSTORES and not values["rec_train"]:
        raise UserError(f"--kvstore {kvstore} gives each worker a shard of --rec-train; give "
                        "--rec-train/--rec-val (pack images with `python -m data.pack`)")
    if values["skip_bad_records"] and (values["data_dir"] or kvstore in DIST_KVSTORES):
        raise UserError("--skip-bad-records reads packed .rec files on one machine; for --data-dir pack the "
                        "images (`python -m data.pack` skips unreadable files), for several machines clean the "
                        ".rec once with `python -m data.clean TRAIN.rec --out CLEAN` and train on CLEAN.rec")
    if kvstore in DIST_KVSTORES and values["dtype"] != "float32":
        # AMP's dynamic loss scaling changes the gradient scale, which MXNet refuses once the optimizer
        # runs on the servers (Trainer._check_and_rescale_grad).
        raise UserError(f"--dtype {values['dtype']} is not supported with --kvstore {kvstore}; "
                        "train distributed in float32")


def _check_resume(values):
    """One way to resume, with the files it names."""
    if values["resume"] and values["resume_params"]:
        raise UserError("give either --resume (newest checkpoint in --save-dir) or --resume-params, not both")
    if (values["resume_epoch"] or values["resume_states"]) and not values["resume_params"]:
        raise UserError("--resume-epoch and --resume-states need --resume-params, the parameters to start from")
    for flag in ("resume_params", "resume_states"):
        if values[flag] and not os.path.isfile(values[flag]):
            raise UserError(f"--{flag.replace('_', '-')} {values[flag]} does not exist")


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
    values["gpus"] = _parse_gpu_ids(values["gpus"])
    values["logging_file"] = values["logging_file"] or os.path.join(values["save_dir"], "train.log")
    for check in (_check_numbers, _check_networks, _check_distribution, _check_resume):
        check(values)
    return TrainConfig(**values)


def describe_tricks(config):
    """The run's tricks in a few words, for the log."""
    tricks = [f"{config.lr_mode} decay"]
    if config.warmup_epochs:
        tricks.append(f"warmup {config.warmup_epochs:g} epochs")
    if config.last_gamma:
        tricks.append("zero gamma")
    if config.no_wd:
        tricks.append("no bias decay")
    if config.dtype != "float32":
        tricks.append(config.dtype)
    if config.label_smoothing:
        tricks.append(f"label smoothing {config.label_smoothing:g} ({config.label_smoothing_style})")
    if config.mixup:
        tricks.append(f"mixup alpha {config.mixup_alpha:g}, off for the last {config.mixup_off_epoch} epochs")
    if config.teacher:
        tricks.append(f"distillation from {config.teacher} at T={config.temperature:g}, w={config.hard_weight:g}")
    return ", ".join(tricks)


def total_batch_size(config, contexts):
    """Images per batch of this process (all its devices)."""
    return config.batch_size * len(contexts)


def effective_lr(config, contexts, num_workers=1):
    """An explicit ``--lr`` as given; otherwise section 3.1's linear scaling with the global batch."""
    if config.lr is not None:
        return config.lr
    return linear_scaled_lr(total_batch_size(config, contexts) * num_workers, config.lr_base, config.lr_base_size)


def build_data(config, contexts, cluster=None):
    """Training and validation batches with the paper's augmentation; classes and sizes come from the data.

    Each worker of a distributed job reads its own shard of the training set, with as many batches per epoch
    as every other worker (record_source derives them from the total count); all read the whole validation set.
    """
    cluster = cluster or Cluster(config.kvstore)
    input_config = InputConfig(batch_size=total_batch_size(config, contexts), input_size=config.input_size,
                               crop_ratio=config.crop_ratio, num_workers=config.num_data_workers,
                               seed=config.seed, num_parts=cluster.num_workers, part_index=cluster.rank)
    if config.data_dir:
        return folder_source(config.data_dir, input_config, num_classes=config.num_classes)
    rec_train, rec_val = config.rec_train, config.rec_val
    if config.uses_demo:
        logging.info("No data given: using the built-in demo data set in %s", config.demo_dir)
        rec_train, rec_val = make_demo_dataset(config.demo_dir)
    clean_dir = os.path.join(config.save_dir, "clean") if config.skip_bad_records else None
    return record_source(rec_train, rec_val, input_config, idx_train=config.rec_train_idx,
                         idx_val=config.rec_val_idx, num_classes=config.num_classes, clean_dir=clean_dir,
                         log=logging.info)


def build_network(config, num_classes, contexts):
    """The network with the paper's initialization (section 2): Xavier weights, zero biases, BN gamma 1, beta 0."""
    net = get_model(config.model, classes=num_classes, last_gamma=config.last_gamma)
    net.initialize(mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3), ctx=contexts)
    if config.pretrained_params:
        net(mx.nd.zeros((1, 3, config.input_size, config.input_size), ctx=contexts[0]))
        load_for_finetuning(net, config.pretrained_params)
    if config.no_wd:
        apply_no_bias_decay(net)
    if config.mode == "hybrid":
        net.hybridize(static_alloc=True, static_shape=True)
    return net


def build_teacher(config, num_classes, contexts):
    """The distillation teacher in inference mode with frozen weights, or None (section 5.3)."""
    if not config.teacher:
        return None
    params_file = config.teacher_params or cached_gluoncv_params(config.teacher)
    if config.teacher.endswith("-symbol.json"):
        teacher = gluon.SymbolBlock.imports(config.teacher, ["data"], params_file, ctx=contexts)
    else:
        teacher = get_model(config.teacher, classes=num_classes)
        teacher.initialize(ctx=contexts)
        teacher(mx.nd.zeros((1, 3, config.input_size, config.input_size), ctx=contexts[0]))
        check_params_fit(teacher, params_file, f"teacher weights for {config.teacher}")
        teacher.load_parameters(params_file, ctx=contexts)
    teacher.collect_params().setattr("grad_req", "null")
    teacher.hybridize(static_alloc=True, static_shape=True)
    return teacher


def build_batch_transform(config, num_classes):
    """Label smoothing and mixup, resolved once; the loop only calls the result."""
    mixup = None
    if config.mixup:
        mixup = MixupSchedule(config.mixup_alpha, config.num_epochs, config.mixup_off_epoch, seed=config.seed)
    return BatchTransform(num_classes, config.label_smoothing, config.label_smoothing_style, mixup)


def build_trainer(config, net, contexts, batches_per_epoch, precision, cluster=None, begin_num_update=0):
    """Nesterov SGD (section 2) with the run's learning-rate schedule, reducing gradients over a kvstore.

    The schedule counts optimizer updates: under dist_sync one per global step, so a worker's
    ``batches_per_epoch`` is the number of global steps per epoch. A resumed run starts the count at
    ``begin_num_update``.
    """
    cluster = cluster or Cluster(config.kvstore)
    schedule = build_lr_scheduler(config.lr_mode, effective_lr(config, contexts, cluster.num_workers),
                                  cluster.updates_per_epoch(batches_per_epoch),
                                  config.num_epochs, warmup_epochs=config.warmup_epochs,
                                  warmup_lr=config.warmup_lr, decay=config.lr_decay,
                                  decay_epochs=config.lr_decay_epoch)
    optimizer_params = dict(learning_rate=schedule.base_lr, momentum=config.momentum, wd=config.wd,
                            lr_scheduler=schedule, begin_num_update=begin_num_update)
    update_on_kvstore = cluster.update_on_kvstore
    if update_on_kvstore is None:
        update_on_kvstore = precision.update_on_kvstore
    trainer = gluon.Trainer(net.collect_params(), "nag", optimizer_params, kvstore=cluster.kvstore,
                            update_on_kvstore=update_on_kvstore)
    keep_multipliers_by_index(trainer.optimizer)
    return precision.prepare_trainer(trainer)


def build_loss(config, teacher, sparse_targets):
    """Cross-entropy, or distillation from ``teacher`` (section 5.3); both take (logits, targets, images)."""
    if teacher is None:
        return CrossEntropyLoss(sparse_targets)
    return DistillationLoss(teacher, config.temperature, config.hard_weight, sparse_targets)


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


def _progress(batches, total, enabled):
    if not enabled:
        return batches
    from tqdm import tqdm
    return tqdm(batches, total=total, leave=False, unit="batch")


@dataclasses.dataclass
class Recipe:
    """Everything one training step needs, built once before the loop."""

    net: object
    trainer: object
    loss_fn: object
    batch_transform: object
    precision: object
    step_batch: int


def build_recipe(config, data, contexts, cluster=None, begin_num_update=0):
    """Network, trainer, loss and batch transform, with the run's tricks resolved."""
    cluster = cluster or Cluster(config.kvstore)
    precision = build_precision(config.dtype, contexts)
    net = build_network(config, data.num_classes, contexts)
    trainer = build_trainer(config, net, contexts, data.batches_per_epoch, precision, cluster, begin_num_update)
    batch_transform = build_batch_transform(config, data.num_classes)
    teacher = build_teacher(config, data.num_classes, contexts)
    loss_fn = build_loss(config, teacher, batch_transform.sparse_targets)
    return Recipe(net, trainer, loss_fn, batch_transform, precision,
                  step_batch=cluster.step_batch(total_batch_size(config, contexts)))


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
    """Every ``interval`` batches, a line with the images/s since the last line and the epoch's running figures.

    Counting from the batch a resumed epoch starts at, the first line's speed is right too (MXNet's
    Speedometer assumes each epoch starts at batch 0).
    """

    def __init__(self, epoch, start_batch, batch_size, interval):
        self.epoch, self.batch_size, self.interval = epoch, batch_size, interval
        self.last_batch, self.tic = start_batch, time.time()

    def __call__(self, batch_number, meter):
        if batch_number % self.interval:
            return
        now = time.time()
        images_per_sec = (batch_number - self.last_batch) * self.batch_size / (now - self.tic)
        logging.info("Epoch[%d] Batch [%d-%d]\tSpeed: %.2f samples/sec\taccuracy=%f\tloss=%f", self.epoch,
                     self.last_batch, batch_number, images_per_sec, meter.accuracy.get()[1], meter.mean_loss.get()[1])
        self.last_batch, self.tic = batch_number, now


class StopRequested(Exception):
    """A signal asked the loop to stop; raised after ``batches_done`` batches of the epoch, between two steps."""

    def __init__(self, batches_done, meter):
        super().__init__(f"stopped after batch {batches_done}")
        self.batches_done = batches_done
        self.meter = meter


def train_step(recipe, images, targets):
    """Forward, backward and one update on a batch already split over the devices; returns outputs and losses."""
    with autograd.record():
        outputs = [recipe.net(x) for x in images]
        losses = [recipe.loss_fn(output, target, x) for output, target, x in zip(outputs, targets, images)]
        # Inside the recording: AMP's loss scaling multiplies the losses, which must be part of the graph.
        recipe.precision.backward(losses, recipe.trainer)
    if not recipe.trainer._kv_initialized:
        # The first step broadcasts device 0's parameters, BatchNorm's running statistics among them, and a
        # static-memory graph's writes to those are not ordered before that read: without the wait, every
        # device of a multi-device run went on from the statistics before the first batch.
        mx.nd.waitall()
    recipe.trainer.step(recipe.step_batch)
    return outputs, losses


def train_one_epoch(epoch, recipe, data, contexts, config, start_batch=0, meter=None, stop=None):
    """One pass over the training data (from batch ``start_batch``); returns the epoch's loss, top-1, speed.

    Under mixup the top-1 counts a prediction right when it names the dominant label of its mixed pair.
    When ``stop`` (a StopRequests) has seen a signal, StopRequested is raised after the current step.
    """
    batch_size = total_batch_size(config, contexts)
    meter = meter or EpochMeter()
    speed = SpeedLog(epoch, start_batch, batch_size, config.log_interval)
    batches = data.train.epoch(epoch, start_batch)
    progress = _progress(batches, data.batches_per_epoch - start_batch, sys.stderr.isatty())
    tic = time.time()
    for batch_number, batch in enumerate(progress, start=start_batch + 1):
        check_labels(batch.label[0], data.num_classes, data.find_bad_records)
        images, targets, metric_labels = recipe.batch_transform(
            split_batch(batch.data[0], contexts), split_batch(batch.label[0], contexts), epoch)
        outputs, losses = train_step(recipe, images, targets)
        meter.accuracy.update(metric_labels, outputs)
        meter.mean_loss.update(None, losses)
        meter.batches += 1
        check_finite_loss(meter.mean_loss.sum_metric, epoch, batch_number, config)
        speed(batch_number, meter)
        if stop is not None and stop.requested and batch_number < data.batches_per_epoch:
            mx.nd.waitall()  # the checkpoint reads running statistics that a static-memory graph writes unordered
            meter.seconds += time.time() - tic
            raise StopRequested(batch_number, meter)
    # Wait first: a static-memory graph's writes to the running statistics are not ordered before a later read.
    mx.nd.waitall()
    average_running_statistics(recipe.net)
    meter.seconds += time.time() - tic
    return meter.summary(batch_size)


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


def peak_memory_mb():
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_outputs(net, config, epoch, contexts):
    """Parameters of the last epoch and the deployable export; returns their paths."""
    params = checkpoint.save_params(net, config.save_dir, config.model, epoch)
    if config.mode != "hybrid":
        net.hybridize()
    sample = mx.nd.zeros((1, 3, config.input_size, config.input_size), ctx=contexts[0])
    net(sample)
    return (params,) + checkpoint.export_deployable(net, config.save_dir, config.model)


def setup_logging(config, cluster):
    """Log to stdout and, on rank 0 only, to the log file; with several workers every line names its rank."""
    handlers = [logging.StreamHandler(sys.stdout)]
    if cluster.is_chief:
        handlers.append(logging.FileHandler(config.logging_file))
    rank = f"[rank {cluster.rank}/{cluster.num_workers}] " if cluster.num_workers > 1 else ""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {rank}%(message)s", handlers=handlers, force=True)


def current_lr(trainer, cluster, updates):
    """The rate of the last update.

    In a distributed job the servers run the optimizer (see ``Cluster.update_on_kvstore``); the worker's
    copy of the schedule is otherwise unused, so it is read at the job's update count: exact under sync
    (one update per global step), approximate under async (workers run at their own pace).
    """
    if cluster.num_workers > 1:
        return trainer.optimizer.lr_scheduler(updates)
    return trainer.learning_rate


def train(config):
    """Run the whole recipe; returns the last epoch's metrics record."""
    contexts = build_contexts(config.num_gpus, config.num_cpu_contexts, config.gpus)
    cluster = join_cluster(config.kvstore)
    # Rank 0 alone writes files; the other workers of a distributed job only train and log.
    if cluster.is_chief:
        checkpoint.ensure_writable(config.save_dir)
    setup_logging(config, cluster)
    seed_everything(config.seed)
    data = build_data(config, contexts, cluster)
    updates_per_epoch = cluster.updates_per_epoch(data.batches_per_epoch)
    start = find_resume_point(config, total_batch_size(config, contexts) * cluster.num_workers, updates_per_epoch)
    recipe = build_recipe(config, data, contexts, cluster, begin_num_update=start.global_step)
    restore(start, recipe, contexts, cluster)
    run = RunState(config, recipe, cluster, start, total_batch_size(config, contexts) * cluster.num_workers)
    if cluster.is_chief:
        checkpoint.remove_unfinished_checkpoints(config.save_dir)
        checkpoint.keep_metrics_before(config.save_dir, start.epoch)
        checkpoint.save_run_args(config.save_dir, dataclasses.asdict(config), data.class_names)
    logging.info("%s on %d images of %d classes, %d workers x %d devices x %d images, learning rate %g (%s), "
                 "tricks: %s", config.model, data.num_train * cluster.num_workers, data.num_classes,
                 cluster.num_workers, len(contexts), config.batch_size,
                 effective_lr(config, contexts, cluster.num_workers),
                 "given" if config.lr is not None else "linear scaling", describe_tricks(config))
    logging.info("CPU operator threads: %s", describe_cpu_threads())
    record = {}
    with StopRequests() as stop:
        for epoch in range(start.epoch, config.num_epochs):
            start_batch, meter = 0, None
            if epoch == start.epoch and start.batch:
                start_batch, meter = start.batch, EpochMeter(start.epoch_meter)
            else:
                seed_everything(epoch_seed(config.seed, epoch))
            try:
                stats = train_one_epoch(epoch, recipe, data, contexts, config, start_batch, meter, stop)
            except StopRequested as stopped:
                global_step = updates_per_epoch * epoch + cluster.updates_per_epoch(stopped.batches_done)
                folder = run.save(epoch, global_step, batches_done=stopped.batches_done,
                                  meter=stopped.meter) if cluster.is_chief else config.save_dir
                raise Interrupted(f"{stop.requested} after batch {stopped.batches_done} of epoch {epoch}; saved "
                                  f"{folder}; continue with the same command and --resume",
                                  stop.signal_number) from None
            record = dict(epoch=epoch, **stats)
            record.update(evaluate(recipe.net, data, contexts))
            updates = updates_per_epoch * (epoch + 1)
            record.update(lr=current_lr(recipe.trainer, cluster, updates), peak_rss_mb=round(peak_memory_mb(), 1),
                          skipped_records=data.skipped_records)
            run.note_validation(epoch, record["val_top1"])
            logging.info("Epoch[%d] lr=%.5g train-loss=%.4f train-top1=%.4f val-top1=%.4f val-top5=%.4f "
                         "%.1f samples/sec %.1fs", epoch, record["lr"], record["train_loss"], record["train_top1"],
                         record["val_top1"], record["val_top5"], record["samples_per_sec"], record["epoch_seconds"])
            last_epoch = epoch == config.num_epochs - 1
            due = last_epoch or stop.requested or (
                config.save_frequency and (epoch + 1) % config.save_frequency == 0)
            # Metrics before the checkpoint: a crash between the two resumes from the previous checkpoint,
            # which drops this epoch's line and logs it again; the other order would lose the line.
            if cluster.is_chief:
                checkpoint.append_metrics(config.save_dir, record)
                if due:
                    run.save(epoch, updates, val_top1=record["val_top1"])
            if stop.requested and not last_epoch:
                raise Interrupted(f"{stop.requested} at the end of epoch {epoch}; saved its checkpoint in "
                                  f"{checkpoint.checkpoints_dir(config.save_dir)}; continue with the same command "
                                  "and --resume", stop.signal_number)
    if start.epoch == config.num_epochs:
        logging.info("All %d epochs were done already; writing the final outputs again", config.num_epochs)
    if cluster.num_workers > 1 and not cluster.is_async:
        # Sync workers pull the same weights from the servers after every step; this line lets anyone check
        # it (async workers pull them at different moments and differ).
        logging.info("Trainable weights fingerprint %s", weights_fingerprint(recipe.net))
    if cluster.is_chief:
        paths = save_outputs(recipe.net, config, config.num_epochs - 1, contexts)
        logging.info("Saved parameters to %s, deployable export to %s and %s, metrics to %s", *paths,
                     checkpoint.metrics_path(config.save_dir))
        if run.best_epoch is not None:
            logging.info("Best validation top-1 %.4f after epoch %d (its checkpoint is kept in %s)",
                         run.best_val_top1, run.best_epoch, checkpoint.checkpoints_dir(config.save_dir))
    return record


@command_line_entry
def main(argv=None):
    train(resolve_config(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
