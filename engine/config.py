"""Every setting of a run, declared once: a field of ``TrainConfig`` is a flag, its default, its help, its valid
values and whether ``--resume`` may change it; ``build_parser`` and ``resolve_config`` are derived from them, and
config files (``--config``, the ``args.yaml`` of every run) hold the same settings under the flags' names.

Adding a flag touches two places: its field here, and the code that uses it.
"""
import argparse
import dataclasses
import difflib
import math
import os
import sys

import yaml

from models import model_names
from data.auto_augment import parse_policy
from data.repeated_augmentation import check_batch as check_ra_batch
from models.registry import min_input_size
from utils.distributed import DIST_KVSTORES, SHARDED_KVSTORES
from utils.errors import UserError
from utils.gradient_compression import COMPRESSION_TYPES
from utils.label_smoothing import SMOOTHING_STYLES
from utils.lr_schedule import LR_MODES
from utils.precision import DTYPES

# The paper's baseline (section 2): ResNet-50, 224x224, 8 devices x 32 = 256 images a batch, 120 epochs,
# rate divided by 10 at epochs 30, 60 and 90.
PAPER_DEFAULTS = dict(model="resnet50_v1", input_size=224, batch_size=32, num_epochs=120,
                      lr_decay_epoch="30,60,90", last_gamma=False)
# The built-in demo: small enough to train in under a minute on two idle CPU cores. It needs zero-gamma: at
# 32x32 the last stage is 1x1, global pooling averages nothing, and the features' squared norm at
# initialization (about 860 against 255 with zero-gamma) makes SGD overshoot; without it ResNet-18-D
# stayed near chance for eight epochs on the demo set.
DEMO_DEFAULTS = dict(model="resnet18_v1d", input_size=32, batch_size=64, num_epochs=6,
                     lr_decay_epoch="4,5", last_gamma=True)
DEFAULT_DEMO_DIR = os.path.join(os.path.expanduser("~"), ".cache", "bag-of-tricks", "demo")
GROUPS = {"data": "data", "network": "network", "optimization": "optimization",
          "tricks": "tricks (each off by default: no trick flag is the paper's baseline)",
          "devices": "devices", "run": "run"}


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


POSITIVE = Bounds(0, low_open=True)
NON_NEGATIVE = Bounds(0)
AT_LEAST_ONE = Bounds(1)


class Switch(argparse.BooleanOptionalAction):
    """An on/off flag: ``--x`` turns it on and ``--no-x`` off, so that the command line overrides a config file
    both ways. Python 3.11's ``BooleanOptionalAction`` takes every spelling that starts with ``--no-`` for off,
    ``--no-wd`` as well as ``--no-no-wd``; this one only the spellings it added."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.off_spellings = {"--no-" + spelling[2:] for spelling in option_strings if spelling.startswith("--")}

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string not in self.off_spellings)


def flag(group, help, default=None, *, names=(), bounds=None, free_on_resume=False, trick=False, parse=None,
         **argparse_kwargs):
    """A ``TrainConfig`` field that is a command-line flag.

    ``names`` are extra spellings beside ``--field-name``; ``bounds`` the valid values of a numeric flag, checked
    before anything runs (out of them MXNet stops deep inside, or quietly trains something else);
    ``free_on_resume`` that ``--resume`` may continue a run under another value (paths, devices, logging: not
    what is computed); ``trick`` that the log names it among the run's tricks when it differs from its
    default; ``parse`` turns the command line's text into the setting; the rest goes to ``add_argument``.
    """
    return dataclasses.field(default=default, metadata=dict(
        group=group, help=help, names=names, bounds=bounds, free_on_resume=free_on_resume, trick=trick,
        parse=parse, argparse=argparse_kwargs))


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


def _parse_auto_augment(text):
    """The policy's text as typed, once ``data.auto_augment`` can read it."""
    if text is not None:
        parse_policy(text)
    return text


def _parse_progressive_resize(text):
    """START,END or START,END,FIRST_EPOCH,LAST_EPOCH as typed (checked against the run in _check_sizes)."""
    if text is None:
        return None
    try:
        numbers = tuple(int(part) for part in text.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) not in (2, 4):
        raise UserError(f"--progressive-resize {text!r} is not START,END or START,END,FIRST_EPOCH,LAST_EPOCH, e.g. "
                        "160,192 or 160,192,65,76")
    return numbers


def _paper_demo(field, text):
    return f"{text} (paper/demo default {PAPER_DEFAULTS[field]}/{DEMO_DEFAULTS[field]})"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of one run, resolved once from the command line; nothing else is read later."""

    # data
    rec_train: str = flag("data", "training .rec packed by `python -m data.pack`", free_on_resume=True)
    rec_train_idx: str = flag("data", "its .idx (default: beside the .rec)", free_on_resume=True)
    rec_val: str = flag("data", "validation .rec", free_on_resume=True)
    rec_val_idx: str = flag("data", "its .idx (default: beside the .rec)", free_on_resume=True)
    data_dir: str = flag("data", "raw images instead of .rec: DIR/train/<class>/*, DIR/val/<class>/*",
                         free_on_resume=True)
    demo_dir: str = flag("data", "where the built-in demo data set is drawn when no data is given (default "
                                 "%(default)s)", DEFAULT_DEMO_DIR, free_on_resume=True)
    # Label smoothing gives each wrong class eps / (K - 1).
    num_classes: int = flag("data", "only for .rec files without the class list that data.pack writes beside "
                                    "them (im2rec's, GluonCV's), whose count otherwise is their highest label + 1",
                            bounds=Bounds(2), type=int)
    skip_bad_records: bool = flag("data", "scan every record first and train without the bad ones (undecodable "
                                          "image, label outside the classes, broken framing), counted in the log "
                                          "and metrics.jsonl; without it the first bad record stops the run, named",
                                  False, action=Switch)
    input_size: int = flag("data", _paper_demo("input_size", "training crop size"), bounds=AT_LEAST_ONE, type=int)
    # FixRes (Touvron et al. 2019): a network trained on random-resized crops sees objects larger than a centre
    # crop of the same size shows them, so it tests better at a larger size.
    val_input_size: int = flag("data", "validation centre crop size (default: --input-size); e.g. torchvision's "
                                       "recipe trains at 176 and validates at 224 (FixRes, Touvron et al. 2019)",
                               bounds=AT_LEAST_ONE, type=int)
    crop_ratio: float = flag("data", "validation resizes the shorter side to centre crop / ratio, rounded up "
                                     "(default %(default)s: 224 of 256)", 0.875, bounds=Bounds(0, 1, low_open=True),
                             type=float)
    num_data_workers: int = flag("data", "decoding and augmentation threads (default %(default)s)",
                                 min(4, os.cpu_count() or 1), names=("-j",), bounds=AT_LEAST_ONE,
                                 free_on_resume=True, type=int)
    # network
    model: str = flag("network", _paper_demo("model", "registered network, e.g. resnet50_v1d"))
    mode: str = flag("network", "hybrid compiles the network into a static graph (default %(default)s)", "hybrid",
                     free_on_resume=True, choices=("hybrid", "imperative"))
    dtype: str = flag("network", "section 3.2: float16 trains FP16 activations and gradients with FP32 master "
                                 "weights and dynamic loss scaling (MXNet AMP; GPU only)", "float32", trick=True,
                      choices=DTYPES)
    last_gamma: bool = flag("network", _paper_demo("last_gamma", "section 3.1 zero-gamma: the last BatchNorm of "
                                                                 "every residual block starts at 0"),
                            trick=True, action=Switch)
    pretrained_params: str = flag("network", "start from these weights (ours or GluonCV's); a classifier for "
                                             "another number of classes is re-initialized",
                                  free_on_resume=True, metavar="FILE")
    # optimization
    batch_size: int = flag("optimization", _paper_demo("batch_size", "images per device per batch"),
                           bounds=AT_LEAST_ONE, type=int)
    num_epochs: int = flag("optimization", _paper_demo("num_epochs", "epochs"), bounds=AT_LEAST_ONE, type=int)
    lr: float = flag("optimization", "learning rate, used as given; when omitted it is --lr-base x total batch / "
                                     "--lr-base-size (section 3.1 linear scaling)", bounds=POSITIVE, type=float)
    lr_base: float = flag("optimization", "rate for --lr-base-size images (default 0.1)", 0.1, bounds=POSITIVE,
                          type=float)
    lr_base_size: int = flag("optimization", "batch that --lr-base is for (default 256)", 256, bounds=AT_LEAST_ONE,
                             type=int)
    momentum: float = flag("optimization", "momentum of --optimizer nag and sgd (default %(default)s)", 0.9,
                           bounds=Bounds(0, 1, high_open=True), type=float)
    wd: float = flag("optimization", "weight decay (default %(default)s)", 1e-4, bounds=NON_NEGATIVE, type=float)
    lr_mode: str = flag("optimization", "decay policy (default %(default)s)", "step", trick=True, choices=LR_MODES)
    lr_decay: float = flag("optimization", "step decay factor (default %(default)s)", 0.1,
                           bounds=Bounds(0, 1, low_open=True), type=float)
    poly_power: float = flag("optimization", "with --lr-mode poly: the rate is eta (1 - t/T)^POWER (default 2)", 2.0,
                             bounds=POSITIVE, type=float)
    lr_decay_epoch: tuple = flag("optimization", _paper_demo("lr_decay_epoch", "comma-separated epochs that start "
                                                                               "a decayed step, counted from the "
                                                                               "start of training"),
                                 parse=_parse_epochs)
    warmup_epochs: float = flag("optimization", "linear warmup epochs (default 0)", 0, bounds=NON_NEGATIVE,
                                trick=True, type=float)
    warmup_lr: float = flag("optimization", "rate warmup starts from (default 0)", 0.0, bounds=NON_NEGATIVE,
                            type=float)
    # tricks
    no_wd: bool = flag("tricks", "section 3.1: no weight decay on biases and BatchNorm gamma/beta, only on conv "
                                 "and dense weights", False, trick=True, action=Switch)
    label_smoothing: float = flag("tricks", "section 5.2: smooth the targets by EPSILON (0.1 when given without "
                                            "a value)", 0.0, bounds=Bounds(0, 1, high_open=True), trick=True,
                                  type=float, nargs="?", const=0.1, metavar="EPSILON")
    label_smoothing_style: str = flag("tricks", "paper: 1-eps and eps/(K-1); gluoncv: 1-eps+eps/K and eps/K "
                                                "(default %(default)s)", "paper", choices=SMOOTHING_STYLES)
    mixup: bool = flag("tricks", "section 5.4: train on mixed pairs of images", False, trick=True, action=Switch)
    mixup_alpha: float = flag("tricks", "lambda ~ Beta(alpha, alpha) (default 0.2)", 0.2, bounds=POSITIVE,
                              type=float)
    mixup_off_epoch: int = flag("tricks", "train the last N epochs without mixup", 0, bounds=NON_NEGATIVE, type=int)
    teacher: str = flag("tricks", "section 5.3: distil from this registered network (or an exported "
                                  "PREFIX-symbol.json)", trick=True)
    # A path, free on resume as data paths are; the file's digest is kept and compared instead (engine/resume.py).
    teacher_params: str = flag("tricks", "the teacher's trained .params file (default: GluonCV's weights for "
                                         "--teacher in the local MXNet model cache, ~/.mxnet/models)",
                               free_on_resume=True)
    temperature: float = flag("tricks", "distillation temperature T (default 20)", 20.0, bounds=POSITIVE,
                              type=float)
    hard_weight: float = flag("tricks", "weight w of the hard-label term; the soft term gets 1 - w (default 0.5)",
                              0.5, bounds=Bounds(0, 1), type=float)
    # beyond the paper: the tricks of torchvision's and timm's recipes, spelled as timm's train.py
    cutmix: float = flag("tricks", "CutMix (Yun et al. 2019): paste a box of area 1 - lambda, lambda ~ Beta(ALPHA, "
                                   "ALPHA), from the paired image; 0 is off (timm's recipes: 1.0)", 0.0,
                         bounds=NON_NEGATIVE, trick=True, type=float, metavar="ALPHA")
    mixup_prob: float = flag("tricks", "probability that a batch is mixed at all, by --mixup or --cutmix (default "
                                       "%(default)s)", 1.0, bounds=Bounds(0, 1), trick=True, type=float)
    mixup_switch_prob: float = flag("tricks", "with --mixup and --cutmix: probability that a mixed batch uses "
                                              "CutMix (default %(default)s)", 0.5, bounds=Bounds(0, 1), trick=True,
                                    type=float)
    reprob: float = flag("tricks", "random erasing (Zhong et al. 2020): probability that an image gets one erased "
                                   "rectangle (torchvision's recipe: 0.1, timm's: 0.25)", 0.0, bounds=Bounds(0, 1),
                         trick=True, type=float)
    remode: str = flag("tricks", "what fills an erased rectangle: pixel, per-pixel normal noise; const, zeros "
                                 "(default %(default)s)", "pixel", trick=True, choices=("pixel", "const"))
    auto_augment: str = flag("tricks", "augmentation policy on the device after crop and flip, instead of the "
                                       "paper's colour jitter and lighting: ta_wide (TrivialAugment, Müller & "
                                       "Hutter 2021; torchvision's recipe) or rand-mM-nN[-mstdS][-inc1] "
                                       "(RandAugment, Cubuk et al. 2020, as timm spells it)", trick=True,
                             parse=_parse_auto_augment, metavar="POLICY")
    ra_reps: int = flag("tricks", "repeated augmentation (Hoffer et al. 2020, DeiT; torchvision's --ra-reps): each "
                                  "batch holds batch/N images N times, each copy augmented on its own, copies on "
                                  "different devices; an epoch keeps its steps, so it sees about 1/N of the images "
                                  "(default 1: off; torchvision's recipe: 4)", 1, bounds=AT_LEAST_ONE, trick=True,
                        type=int, metavar="N")
    model_ema: bool = flag("tricks", "keep an exponential moving average of the weights, evaluated every epoch and "
                                     "saved beside them", False, trick=True, action=Switch)
    model_ema_decay: float = flag("tricks", "decay of the moving average per step (default %(default)s)", 0.9998,
                                  bounds=Bounds(0, 1, high_open=True), trick=True, type=float)
    model_ema_steps: int = flag("tricks", "update the average every N steps, with decay^N (torchvision's "
                                          "--model-ema-steps; default %(default)s)", 1, bounds=AT_LEAST_ONE,
                                trick=True, type=int)
    export_ema: bool = flag("tricks", "with --model-ema: the deployable export holds the average's weights",
                            False, trick=True, action=Switch)
    drop_path: float = flag("tricks", "stochastic depth (Huang et al. 2016): block l of L drops its residual "
                                      "branch with probability RATE x l / L (ResNets, MobileNet v2)", 0.0,
                            bounds=Bounds(0, 1, high_open=True), trick=True, type=float, metavar="RATE")
    progressive_resize: tuple = flag("tricks", "progressive resizing, as FFCV's recipes: the training crop grows "
                                               "from START at epoch FIRST_EPOCH (default 0) to END at LAST_EPOCH "
                                               "(default the last), rounded to the nearest multiple of "
                                               "--progressive-resize-step; instead of --input-size",
                                     trick=True, parse=_parse_progressive_resize,
                                     metavar="START,END[,FIRST_EPOCH,LAST_EPOCH]")
    progressive_resize_step: int = flag("tricks", "with --progressive-resize: every size is a multiple of S "
                                                  "(default %(default)s, FFCV's)", 32, bounds=AT_LEAST_ONE,
                                        trick=True, type=int, metavar="S")
    bce_loss: bool = flag("tricks", "binary cross-entropy on the (smoothed, mixed) targets, as timm's ResNet "
                                    "strikes back", False, trick=True, action=Switch)
    bce_target_thresh: float = flag("tricks", "with --bce-loss: targets above it become 1, the rest 0 (timm's "
                                              "--bce-target-thresh)", bounds=Bounds(0, 1), trick=True, type=float)
    optimizer: str = flag("optimization", "nag (the paper's), sgd, lamb (timm's RSB) or adamw (default "
                                          "%(default)s)", "nag", trick=True, choices=("nag", "sgd", "lamb", "adamw"))
    # devices
    num_gpus: int = flag("devices", "GPUs to split each batch over (default 0)", 0, bounds=NON_NEGATIVE,
                         free_on_resume=True, type=int)
    gpus: tuple = flag("devices", "comma-separated GPU ids to use instead of the first --num-gpus, e.g. 0,2",
                       free_on_resume=True, parse=_parse_gpu_ids)
    num_cpu_contexts: int = flag("devices", "without GPUs: CPU contexts to split each batch over, standing in for "
                                            "GPUs", 1, bounds=AT_LEAST_ONE, free_on_resume=True, type=int)
    kvstore: str = flag("devices", "gradient reduction: device, local or nccl on one machine; dist_sync, "
                                   "dist_device_sync or dist_async over several, started by tools/launch.py; "
                                   "horovod, started by horovodrun, one device per process (default device)",
                        "device", free_on_resume=True)
    # Seide et al. 2014's 1-bit SGD with error feedback, in MXNet's 2-bit form (utils/gradient_compression.py).
    # MXNet 1.9.1 offers only 2bit. It changes the gradients the optimizer sees, so --resume keeps it.
    gradient_compression: str = flag("devices", "2bit: each worker (under --kvstore device, each of several "
                                                "devices) sends its gradient as -T, 0 or +T per value, 16 values to "
                                                "a 32-bit word, and keeps what it did not send for its next step "
                                                "(error feedback, MXNet's kvstore); under dist_* only the pushes to "
                                                "the servers shrink, the initial values and the summed gradients "
                                                "(dist_async: the weights) travel whole. Changes the training; the "
                                                "residuals are not checkpointed (default %(default)s)", "none",
                                     trick=True, choices=COMPRESSION_TYPES)
    gc_threshold: float = flag("devices", "MXNet's fixed T of --gradient-compression 2bit for every array, compared "
                                          "with the gradient summed over the sender's batch; it diverges wherever "
                                          "gradients stay above T (default: each array's own T, adapted every step "
                                          "so that 0.2%% of its values are sent)", bounds=POSITIVE,
                               trick=True, type=float, metavar="T")
    # run
    save_dir: str = flag("run", "where checkpoints, parameters, export and metrics go (default params)", "params",
                         free_on_resume=True)
    save_frequency: int = flag("run", "write a checkpoint every N epochs (0: only at the end and on "
                                      "SIGINT/SIGTERM; default %(default)s)", 1, bounds=NON_NEGATIVE,
                               free_on_resume=True, type=int)
    keep_checkpoints: int = flag("run", "keep the K newest checkpoints and the best by validation top-1 (0: keep "
                                        "all; default %(default)s)", 3, bounds=NON_NEGATIVE, free_on_resume=True,
                                 type=int, metavar="K")
    resume: bool = flag("run", "continue from the newest whole checkpoint in --save-dir, exactly where it "
                               "stopped; without one, start from scratch, so one command line serves every "
                               "restart", False, free_on_resume=True, action=Switch)
    resume_epoch: int = flag("run", "GluonCV style: with --resume-params, the epoch to start from (default 0)", 0,
                             bounds=NON_NEGATIVE, free_on_resume=True, type=int)
    resume_params: str = flag("run", "GluonCV style: parameters to start from at --resume-epoch",
                              free_on_resume=True)
    resume_states: str = flag("run", "GluonCV style: trainer states saved with --resume-params (a pickle: needs "
                                     "--trust-pickled-states)", free_on_resume=True)
    trust_pickled_states: bool = flag("run", "load --resume-states although unpickling it runs any code it holds: "
                                             "only for a file you made yourself", False, free_on_resume=True,
                                      action=Switch)
    log_interval: int = flag("run", "batches between speed lines (default 50)", 50, bounds=AT_LEAST_ONE,
                             free_on_resume=True, type=int)
    logging_file: str = flag("run", "log file (default SAVE_DIR/train.log)", free_on_resume=True)
    tensorboard: bool = flag("run", "write TensorBoard curves to SAVE_DIR/tensorboard (tensorboardX): training "
                                    "loss, top-1, rate and images/s every --log-interval batches, validation "
                                    "top-1 and top-5 every epoch, by global step", False, free_on_resume=True,
                             action=Switch)
    # numpy's generator refuses other seeds.
    seed: int = flag("run", "random seed (default 0)", 0, bounds=Bounds(0, 2**32 - 1), type=int)

    @property
    def uses_demo(self):
        return not (self.rec_train or self.data_dir)


FLAGS = dataclasses.fields(TrainConfig)
FLAG_BOUNDS = {field.name: field.metadata["bounds"] for field in FLAGS if field.metadata["bounds"]}
FREE_ON_RESUME = frozenset(field.name for field in FLAGS if field.metadata["free_on_resume"])


def option(name):
    """The command-line spelling of the setting ``name``."""
    return "--" + name.replace("_", "-")


def build_parser(description=None):
    """The command line, in GluonCV's spelling where the two overlap, from ``TrainConfig``'s fields."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Defaults marked 'paper/demo' are the paper's baseline with data flags, the demo's without: "
               + ", ".join(f"{key}={PAPER_DEFAULTS[key]}/{DEMO_DEFAULTS[key]}" for key in PAPER_DEFAULTS))
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for field in FLAGS:
        _add_flag(groups[field.metadata["group"]], field)
    # Declared here, not as a TrainConfig field: it says where settings come from, not what the run does; as a
    # setting it would be saved in args.yaml, and a replay of that file would name the file it replays.
    groups["run"].add_argument("--config", metavar="FILE.yaml",
                               help="settings from a YAML file, one `flag-name: value` a line (configs/ holds the "
                                    "paper's recipes; every run writes its own as SAVE_DIR/args.yaml); flags on "
                                    "the command line override it")
    return parser


def _add_flag(group, field):
    meta = field.metadata
    group.add_argument(*meta["names"], option(field.name), default=field.default, help=meta["help"],
                       **meta["argparse"])


def add_flags(group, *names):
    """Declare the settings ``names`` on another script's parser or argument group exactly as the trainer does
    (``eval_imagenet.py`` takes the validation crop's flags so); check them with ``check_bounds``."""
    fields = {field.name: field for field in FLAGS}
    for name in names:
        _add_flag(group, fields[name])


def check_bounds(values, names=tuple(FLAG_BOUNDS)):
    """Each numeric flag of ``names`` that has a value within its bounds, or UserError naming it."""
    for name in names:
        if values[name] is not None and values[name] not in FLAG_BOUNDS[name]:
            raise UserError(f"{option(name)} must be {FLAG_BOUNDS[name]}, got {values[name]}")


def _check_numbers(values):
    """Each numeric flag within its bounds, then the epoch counts within the run."""
    check_bounds(values)
    num_epochs = values["num_epochs"]
    if values["warmup_epochs"] >= num_epochs:
        raise UserError(f"--warmup-epochs {values['warmup_epochs']:g} leaves no epoch after warmup of "
                        f"--num-epochs {num_epochs}")
    if (values["mixup"] or values["cutmix"]) and values["mixup_off_epoch"] >= num_epochs:
        raise UserError(f"--mixup-off-epoch {values['mixup_off_epoch']} turns mixing off for all --num-epochs "
                        f"{num_epochs}; give fewer than {num_epochs} epochs without mixup")
    if values["resume_epoch"] >= num_epochs:
        raise UserError(f"--resume-epoch {values['resume_epoch']} is not an epoch of --num-epochs {num_epochs}")
    _check_decay_epochs(values)


def _check_decay_epochs(values):
    """Under --lr-mode step, every decay epoch within the run: a step at epoch 0 or from --num-epochs on would be
    dropped (utils/lr_schedule.py), and the run trained at another rate than asked without a word."""
    epochs, num_epochs = values["lr_decay_epoch"], values["num_epochs"]
    outside = [epoch for epoch in epochs if not 0 < epoch < num_epochs]
    if values["lr_mode"] != "step" or not outside:
        return
    default = " (the paper's default)" if epochs == _parse_epochs(PAPER_DEFAULTS["lr_decay_epoch"]) else ""
    raise UserError(f"--lr-decay-epoch {_joined(epochs)}{default}: a step at epoch {outside[0]} is outside "
                    f"--num-epochs {num_epochs}, where steps start at epochs 1 to {num_epochs - 1}; give epochs "
                    "within the run, none with --lr-decay-epoch=, or another --lr-mode")


def _joined(numbers):
    return ",".join(str(number) for number in numbers)


def _check_sizes(values):
    """--progressive-resize: a growing ramp of multiples of its step, within the run, instead of --input-size."""
    ramp = values["progressive_resize"]
    if ramp is None:
        if values["progressive_resize_step"] != TrainConfig.progressive_resize_step:
            raise UserError("--progressive-resize-step needs --progressive-resize, the ramp whose sizes it rounds")
        return
    start, end = ramp[:2]
    first, last = ramp[2:] or (0, values["num_epochs"] - 1)
    step = values["progressive_resize_step"]
    if not 0 < start <= end:
        raise UserError(f"--progressive-resize {_joined(ramp)}: START {start} must be positive and at most END {end}")
    if start % step or end % step:
        raise UserError(f"--progressive-resize {_joined(ramp)}: START and END must be multiples of "
                        f"--progressive-resize-step {step}, so that every size lies between them")
    if not 0 <= first <= last < values["num_epochs"]:
        raise UserError(f"--progressive-resize {_joined(ramp)}: FIRST_EPOCH {first} and LAST_EPOCH {last} must be "
                        f"epochs of --num-epochs {values['num_epochs']}, in order (0 <= FIRST_EPOCH <= LAST_EPOCH "
                        f"<= {values['num_epochs'] - 1})")


def _check_networks(values):
    """Registered networks (the teacher may be an export) that accept every input size of the run; weight files
    that exist."""
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
    ramp = values["progressive_resize"]
    sizes = [("--input-size", values["input_size"]), ("--val-input-size", values["val_input_size"])]
    for name in ("model", "teacher"):
        smallest = min_input_size(values[name]) if values[name] in names else 1
        for flag_name, size in sizes:
            if size < smallest:
                raise UserError(f"{flag_name} {size} is too small for --{name} {values[name]}, which needs at least "
                                f"{smallest}; use {flag_name} {smallest} or more")
        if ramp and ramp[0] < smallest:
            raise UserError(f"--progressive-resize {_joined(ramp)} starts at {ramp[0]}, too small for --{name} "
                            f"{values[name]}, which needs at least {smallest}; start at {smallest} or more")
    if values["teacher_params"] and not teacher:
        raise UserError("--teacher-params needs --teacher, the network the file belongs to")
    for name in ("teacher_params", "pretrained_params"):
        if values[name] and not os.path.isfile(values[name]):
            raise UserError(f"{option(name)} {values[name]} does not exist")


def _check_tricks(values):
    """Tricks that need another trick, or that do not go together, or another batch size."""
    check_ra_batch(values["batch_size"], len(values["gpus"]) or values["num_gpus"] or values["num_cpu_contexts"],
                   values["ra_reps"])
    if values["bce_loss"] and values["teacher"]:
        raise UserError("--bce-loss with --teacher: distillation's soft term is a softmax cross-entropy; drop one "
                        "of the two")
    if values["bce_target_thresh"] is not None and not values["bce_loss"]:
        raise UserError("--bce-target-thresh needs --bce-loss")
    if values["optimizer"] in ("lamb", "adamw") and values["momentum"] != TrainConfig.momentum:
        raise UserError(f"--momentum is for --optimizer nag and sgd; --optimizer {values['optimizer']} keeps its own "
                        "moment estimates (betas 0.9, 0.999)")
    if values["export_ema"] and not values["model_ema"]:
        raise UserError("--export-ema needs --model-ema, the average it exports")


def _check_distribution(values):
    """What the kvstore needs: GPUs for NCCL; for dist_* and horovod, packed records, clean beforehand; for dist_*
    float32; for horovod one device per process; gradient compression where MXNet applies it."""
    kvstore = values["kvstore"]
    if kvstore == "nccl" and not (values["num_gpus"] or values["gpus"]):
        raise UserError("--kvstore nccl reduces gradients between GPUs; give --num-gpus or --gpus, or use "
                        "--kvstore device")
    if kvstore in SHARDED_KVSTORES and not values["rec_train"]:
        raise UserError(f"--kvstore {kvstore} gives each worker a shard of --rec-train; give "
                        "--rec-train/--rec-val (pack images with `python -m data.pack`)")
    if kvstore == "horovod" and (values["gpus"] or values["num_gpus"] > 1 or values["num_cpu_contexts"] > 1):
        # Horovod's trainer allreduces the gradient of a parameter's first device only.
        raise UserError("--kvstore horovod trains one device per process, rank r of a machine on its GPU r: "
                        "start one process per device (horovodrun -np DEVICES -H host:GPUS) with --num-gpus 1, "
                        "or on CPUs without --num-cpu-contexts; pick the GPUs with CUDA_VISIBLE_DEVICES, not --gpus")
    if values["skip_bad_records"] and (values["data_dir"] or kvstore in SHARDED_KVSTORES):
        raise UserError("--skip-bad-records reads packed .rec files on one machine; for --data-dir pack the "
                        "images (`python -m data.pack` skips unreadable files), for several machines clean the "
                        ".rec once with `python -m data.clean TRAIN.rec --out CLEAN` and train on CLEAN.rec")
    if kvstore == "dist_async" and values["dtype"] != "float32":
        # AMP skips an overflowed step only where the worker updates its own weights; under dist_async the servers
        # run the optimizer (utils/distributed.py) and would apply it.
        raise UserError(f"--dtype {values['dtype']} is not supported with --kvstore dist_async, whose servers "
                        "would apply an overflowed step; use --kvstore dist_sync or --dtype float32")
    _check_compression(values)


def _check_compression(values):
    """--gradient-compression where MXNet applies it as asked: over a dist_* kvstore, or --kvstore device over
    several devices; in float32."""
    kvstore, compression = values["kvstore"], values["gradient_compression"]
    if compression == "none":
        if values["gc_threshold"] is not None:
            raise UserError("--gc-threshold needs --gradient-compression 2bit, the compression it thresholds")
        return
    if kvstore == "dist_async" and values["gc_threshold"] is None:
        # The adapted thresholds scale each push (utils.gradient_compression); the servers would apply it scaled.
        raise UserError(f"--gradient-compression {compression} adapts each array's threshold by scaling its push, "
                        "which the servers of --kvstore dist_async would apply unscaled; give --gc-threshold T "
                        "(MXNet's fixed threshold) or use --kvstore dist_sync")
    if kvstore not in DIST_KVSTORES + ("device",):
        # MXNet refuses it on local and nccl; anything else has no MXNet kvstore that would apply it.
        raise UserError(f"--gradient-compression {compression} is done by MXNet's kvstore under --kvstore device "
                        f"(several devices) and dist_*, not under --kvstore {kvstore}")
    devices = len(values["gpus"]) or values["num_gpus"] or values["num_cpu_contexts"]
    if kvstore == "device" and devices == 1:
        # Gluon makes no kvstore for one device of one machine, and would drop the setting without a word.
        raise UserError(f"--gradient-compression {compression} compresses what devices or workers send each "
                        "other, and --kvstore device on one device sends nothing; give several devices or "
                        "--kvstore dist_*")
    if values["dtype"] != "float32":
        # AMP's loss scale multiplies the gradients that T is compared with, and changes; an overflowed step's
        # infinities would stay in the residuals for good.
        raise UserError(f"--gradient-compression {compression} needs --dtype float32: under --dtype "
                        f"{values['dtype']} the loss scale changes what the threshold means and an overflowed "
                        "step would leave infinite residuals")


def _check_resume(values):
    """One way to resume, with the files it names."""
    if values["resume"] and values["resume_params"]:
        raise UserError("give either --resume (newest checkpoint in --save-dir) or --resume-params, not both")
    if (values["resume_epoch"] or values["resume_states"]) and not values["resume_params"]:
        raise UserError("--resume-epoch and --resume-states need --resume-params, the parameters to start from")
    for name in ("resume_params", "resume_states"):
        if values[name] and not os.path.isfile(values[name]):
            raise UserError(f"{option(name)} {values[name]} does not exist")
    if values["resume_states"] and not values["trust_pickled_states"]:
        raise UserError(f"--resume-states {values['resume_states']} is a pickle (MXNet's Trainer.save_states), and "
                        "loading one runs whatever code it holds: add --trust-pickled-states if you made the file "
                        "yourself, or leave out --resume-states to start the momentum from zero")
    if values["trust_pickled_states"] and not values["resume_states"]:
        raise UserError("--trust-pickled-states goes with --resume-states, the only pickled file a run may load")


def resolve_config(args):
    """Fill the data-dependent defaults, parse and validate; the result is the single source of settings."""
    if bool(args.rec_train) != bool(args.rec_val):
        raise UserError("--rec-train and --rec-val go together; give both")
    if args.rec_train and args.data_dir:
        raise UserError("give either --rec-train/--rec-val or --data-dir, not both")
    if args.progressive_resize and args.input_size is not None:
        raise UserError("--input-size and --progressive-resize both set the training crop size; drop --input-size "
                        "(validation crops --val-input-size)")
    values = {field.name: getattr(args, field.name) for field in FLAGS}
    defaults = DEMO_DEFAULTS if not (args.rec_train or args.data_dir) else PAPER_DEFAULTS
    for key, default in defaults.items():
        if values[key] is None:
            values[key] = default
    for field in FLAGS:
        if field.metadata["parse"]:
            values[field.name] = field.metadata["parse"](values[field.name])
    values["logging_file"] = values["logging_file"] or default_logging_file(values["save_dir"])
    _derive(values)
    for check in (_check_numbers, _check_sizes, _check_networks, _check_tricks, _check_distribution, _check_resume):
        check(values)
    return TrainConfig(**values)


def default_logging_file(save_dir):
    """The log file without --logging-file: SAVE_DIR/train.log."""
    return os.path.join(save_dir, "train.log")


def parse_config(argv=None, description=None):
    """``TrainConfig`` from a command line (``sys.argv[1:]`` by default) and the ``--config`` file it names, whose
    settings its flags override."""
    parser = build_parser(description)
    argv = sys.argv[1:] if argv is None else list(argv)
    config_file = parser.parse_args(argv).config
    if config_file:
        # The file's settings become flags ahead of the command line's: argparse keeps a flag's last value, and
        # file and command line go through the same types, choices and checks.
        argv = config_file_flags(config_file) + argv
    return resolve_config(parser.parse_args(argv))


def _derive(values):
    """Settings whose default is another setting's value."""
    if values["val_input_size"] is None:
        values["val_input_size"] = values["input_size"]


def saved_settings(saved):
    """A checkpointed run's settings (its ``args.json``) as this version resolves them: a flag added since then
    takes its default, which is what the run did without it."""
    values = {**{field.name: field.default for field in FLAGS}, **saved}
    _derive(values)
    return values


def describe_tricks(config):
    """The run's tricks for the log: every trick flag that differs from its default, as it would be typed."""
    tricks = []
    for field in FLAGS:
        value = getattr(config, field.name)
        if field.metadata["trick"] and value not in (field.default, None, False):
            if isinstance(value, tuple):
                value = _joined(value)
            tricks.append(option(field.name) if value is True else f"{option(field.name)} {value:g}"
                          if isinstance(value, float) else f"{option(field.name)} {value}")
    return " ".join(tricks) or "none (the paper's baseline)"


# ---- config files: settings in YAML, as in configs/ and in every run's args.yaml -----------------------------

# How a run was started, not what it computes: the replay of a run's args.yaml is a new run, from scratch.
STARTING_POINT = ("resume", "resume_epoch", "resume_params", "resume_states", "trust_pickled_states")


def setting_key(name):
    """The key of setting ``name`` in a config file: its flag without the dashes, e.g. ``batch-size``."""
    return option(name)[2:]


def read_config_file(path):
    """The mapping of keys to values in the YAML file ``path``, as written (empty for an empty file)."""
    try:
        with open(path) as handle:
            settings = yaml.safe_load(handle)
    except FileNotFoundError:
        raise UserError(f"--config {path} does not exist; give a YAML file of settings, e.g. one of configs/") \
            from None
    except OSError as error:
        raise UserError(f"cannot read --config {path} ({error.strerror}); give a YAML file of settings") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise UserError(f"--config {path} is not valid YAML{f' at line {mark.line + 1}' if mark else ''}: "
                        f"{problem}") from None
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise UserError(f"--config {path} holds a {type(settings).__name__}, not settings; write one "
                        "`flag-name: value` a line, e.g. `batch-size: 128`")
    return settings


def config_file_flags(path):
    """The settings of the config file ``path`` as command-line flags, each value checked as the command line's
    would be; a key that names no setting, twice the same one or a value of the wrong kind is a UserError naming
    the key."""
    fields = {field.name: field for field in FLAGS}
    flags, keys = [], {}
    for key, value in read_config_file(path).items():
        name = str(key).replace("-", "_")
        if name not in fields:
            closest = difflib.get_close_matches(str(key).replace("_", "-"), map(setting_key, fields), n=1, cutoff=0)
            raise UserError(f"{path}: unknown setting {key!r}; did you mean {closest[0]}? (the keys are the "
                            "flags that `train_imagenet.py --help` lists, without their dashes)")
        if name in keys:
            raise UserError(f"{path}: {keys[name]!r} and {key!r} are the same setting; keep one")
        keys[name] = key
        flags += _setting_flags(f"{path}: {key}", value, fields[name])
    return flags


def _setting_flags(where, value, field):
    """The command-line words that give ``field`` a config file's ``value``: none for null (the flag's default)."""
    spec, name = field.metadata["argparse"], option(field.name)
    if value is None:
        return []
    if spec.get("action") is Switch:
        if not isinstance(value, bool):
            raise UserError(f"{where}: {value!r} is not true or false")
        return [name if value else f"--no-{setting_key(field.name)}"]
    if value is True and spec.get("nargs") == "?":
        return [name]  # the flag alone, as on the command line: its const
    if field.type is tuple and isinstance(value, list):
        text = ",".join(str(item) for item in value)
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value)
    else:
        raise UserError(f"{where}: {value!r} is not {_expected(field)}")
    try:
        typed = spec.get("type", str)(text)
    except ValueError:
        raise UserError(f"{where}: {value!r} is not {_expected(field)}") from None
    if "choices" in spec and typed not in spec["choices"]:
        raise UserError(f"{where}: {value!r} is not {_expected(field)}")
    if field.metadata["parse"]:
        try:
            field.metadata["parse"](text)
        except UserError as error:
            raise UserError(f"{where}: {error}") from None
    # FLAG=TEXT keeps a text that starts with a dash a value.
    return [f"{name}={text}"]


def _expected(field):
    """What a setting's value must be, as a message says it."""
    spec = field.metadata["argparse"]
    if "choices" in spec:
        return "one of " + ", ".join(spec["choices"])
    if field.type is tuple:
        return "a list, or its values separated by commas"
    return {int: "a whole number", float: "a number"}.get(spec.get("type"), "text")


def replay_settings(config):
    """``config`` as a config file's settings (a run's ``args.yaml``): ``--config`` on them resolves to
    ``config`` again, in another ``--save-dir`` too.

    Keys are the flags' names, in declaration order, with the resolved values (lists for several). A value
    derived from another setting is null, to be derived again: the log file when it is SAVE_DIR/train.log, so
    that a replay logs into its own folder and not the old run's, and the training size under
    --progressive-resize, which refuses --input-size. How the run was started is left out (--resume,
    --resume-epoch, --resume-params, --resume-states): a replay is a new run, from scratch; --resume on the
    command line continues the run instead, in the --save-dir that the file names.
    """
    settings = {}
    for field in FLAGS:
        if field.name not in STARTING_POINT:
            value = getattr(config, field.name)
            settings[setting_key(field.name)] = list(value) if isinstance(value, tuple) else value
    if config.logging_file == default_logging_file(config.save_dir):
        settings[setting_key("logging_file")] = None
    if config.progressive_resize:
        settings[setting_key("input_size")] = None
    return settings
