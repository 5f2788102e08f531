"""Every bad command-line value is one line on stderr, exit status 2, naming the flag, and no traceback."""
import importlib.util
import os

import mxnet as mx
import pytest

from engine.config import FLAG_BOUNDS, build_parser, parse_config
from engine.recipe import build_data
from data.loaders import InputConfig, record_source
from models import get_model, model_names
from models.registry import min_input_size
from tests.conftest import tiny_args
from tests.helpers import trainer_error_line
from utils.distributed import PS_LITE_VARIABLES
from utils.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (flag, bad value, other flags it needs): every numeric flag of build_parser, below its bounds and above them
# where they end.
OUT_OF_BOUNDS = [
    ("--num-classes", "1", ()), ("--num-classes", "-3", ()),
    ("--input-size", "0", ()),
    ("--val-input-size", "0", ()), ("--val-input-size", "-224", ()),
    ("--progressive-resize-step", "0", ()), ("--progressive-resize-step", "-32", ()),
    ("--crop-ratio", "0", ()), ("--crop-ratio", "-0.5", ()), ("--crop-ratio", "1.01", ()),
    ("--crop-ratio", "nan", ()),
    ("--num-data-workers", "0", ()),
    ("--batch-size", "0", ()), ("--batch-size", "-16", ()),
    ("--num-epochs", "0", ()),
    ("--lr", "0", ()), ("--lr", "-1", ()), ("--lr", "inf", ()),
    ("--lr-base", "0", ()), ("--lr-base", "-0.1", ()),
    ("--lr-base-size", "0", ()), ("--lr-base-size", "-256", ()),
    ("--momentum", "-0.1", ()), ("--momentum", "1", ()),
    ("--wd", "-0.0001", ()),
    ("--lr-decay", "0", ()), ("--lr-decay", "-0.1", ()), ("--lr-decay", "1.5", ()),
    ("--poly-power", "0", ()), ("--poly-power", "-1", ()),
    ("--cutmix", "-1", ()), ("--mixup-prob", "1.5", ()), ("--mixup-switch-prob", "-0.1", ()),
    ("--reprob", "1.5", ()), ("--model-ema-decay", "1", ()), ("--model-ema-steps", "0", ()),
    ("--drop-path", "1", ()), ("--bce-target-thresh", "1.5", ("--bce-loss",)),
    ("--ra-reps", "0", ()), ("--ra-reps", "-2", ()),
    ("--warmup-epochs", "-1", ()), ("--warmup-epochs", "2", ()),
    ("--warmup-lr", "-0.1", ()),
    ("--label-smoothing", "-0.1", ()), ("--label-smoothing", "1", ()),
    ("--mixup-alpha", "0", ("--mixup",)), ("--mixup-alpha", "-0.2", ()),
    ("--mixup-off-epoch", "-1", ()), ("--mixup-off-epoch", "2", ("--mixup",)),
    ("--temperature", "0", ()), ("--temperature", "-20", ()),
    ("--hard-weight", "-0.1", ()), ("--hard-weight", "1.5", ()),
    ("--num-gpus", "-1", ()),
    ("--num-cpu-contexts", "0", ()),
    ("--gc-threshold", "0", ()), ("--gc-threshold", "-0.5", ()),
    ("--save-frequency", "-1", ()),
    ("--keep-checkpoints", "-1", ()),
    ("--resume-epoch", "-1", ()), ("--resume-epoch", "2", ()),
    ("--log-interval", "0", ()),
    ("--seed", "-1", ()), ("--seed", str(2**32), ()),
]

# The smallest member of each family; the others share its stem and strides (checked by hand for each depth).
FAMILY_REPRESENTATIVES = ["resnet18_v1", "resnet18_v1b", "resnet18_v1c", "resnet18_v1d", "mobilenet0.25",
                          "mobilenetv2_0.25", "inceptionv3"]


def _config(argv):
    return parse_config(argv)


@pytest.mark.parametrize("flag, value, needs", OUT_OF_BOUNDS)
def test_out_of_bounds_value_is_one_line_naming_the_flag(flag, value, needs, tiny_set, tmp_path, capsys):
    line = trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, *needs, f"{flag}={value}"))
    assert flag in line, line


def test_the_sweep_covers_every_numeric_flag():
    numeric = {action.option_strings[-1] for action in build_parser()._actions
               if action.type in (int, float)}
    assert numeric == {flag for flag, _, _ in OUT_OF_BOUNDS}
    assert numeric == {f"--{name.replace('_', '-')}" for name in FLAG_BOUNDS}


def test_messages_say_the_bounds(tiny_set, tmp_path, capsys):
    for extra, message in ((["--crop-ratio", "0"], "--crop-ratio must be in (0, 1], got 0.0"),
                           (["--lr", "-1"], "--lr must be positive, got -1.0"),
                           (["--momentum", "1"], "--momentum must be in [0, 1), got 1.0"),
                           (["--wd", "-1"], "--wd must be 0 or more, got -1.0"),
                           (["-j", "0"], "--num-data-workers must be at least 1, got 0"),
                           (["--num-classes", "1"], "--num-classes must be at least 2, got 1"),
                           (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
                           (["--mixup", "--mixup-off-epoch", "2"],
                            "--mixup-off-epoch 2 turns mixing off for all --num-epochs 2; give fewer than 2 epochs "
                            "without mixup"),
                           (["--cutmix", "1", "--mixup-off-epoch", "2"],
                            "--mixup-off-epoch 2 turns mixing off for all --num-epochs 2; give fewer than 2 epochs "
                            "without mixup"),
                           (["--resume-epoch", "2"], "--resume-epoch 2 is not an epoch of --num-epochs 2"),
                           (["--lr-decay-epoch=-1,1"],
                            "--lr-decay-epoch '-1,1' must list increasing epochs, each 0 or more, e.g. 30,60,90")):
        assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, *extra)) == f"error: {message}"


def test_values_at_the_bounds_are_accepted(tiny_set):
    config = _config(tiny_args(tiny_set, "x", "--crop-ratio", "1", "--momentum", "0", "--wd", "0", "--lr-decay", "1",
                               "--hard-weight", "1", "--warmup-lr", "0", "--mixup", "--mixup-off-epoch", "1",
                               "--seed", str(2**32 - 1), "--num-classes", "3", "--lr-decay-epoch", "1"))
    assert (config.crop_ratio, config.momentum, config.wd, config.lr_decay, config.hard_weight) == (1, 0, 0, 1, 1)
    assert (config.mixup_off_epoch, config.seed, config.num_classes, config.lr_decay_epoch) == (1, 2**32 - 1, 3, (1,))
    assert _config(tiny_args(tiny_set, "x", "--hard-weight", "0", "--seed", "0")).hard_weight == 0


@pytest.mark.parametrize("extra, message", [
    (("--lr-decay-epoch", "0,1"), "--lr-decay-epoch 0,1: a step at epoch 0 is outside --num-epochs 2, where steps "
                                  "start at epochs 1 to 1; give epochs within the run, none with --lr-decay-epoch=, "
                                  "or another --lr-mode"),
    (("--lr-decay-epoch", "1,2"), "--lr-decay-epoch 1,2: a step at epoch 2 is outside --num-epochs 2"),
    (("--lr-decay-epoch", "30,60,90", "--num-epochs", "60"), "--lr-decay-epoch 30,60,90 (the paper's default): a "
                                                             "step at epoch 60 is outside --num-epochs 60"),
    (("--lr-decay-epoch", "1", "--num-epochs", "1"),
     "--lr-decay-epoch 1: a step at epoch 1 is outside --num-epochs 1")])
def test_a_decay_epoch_outside_the_run_is_one_line_naming_it(extra, message, tiny_set, tmp_path, capsys):
    """utils/lr_schedule.py would drop it: the run would keep a rate it was asked to decay."""
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, *extra)).startswith(f"error: {message}")


def test_decay_epochs_outside_the_run_pass_where_no_step_schedule_reads_them_and_the_presets_parse(tiny_set):
    assert _config(tiny_args(tiny_set, "x", "--num-epochs", "1", "--lr-mode", "cosine")).lr_decay_epoch == (1,)
    assert _config(tiny_args(tiny_set, "x", "--num-epochs", "1", "--lr-decay-epoch=")).lr_decay_epoch == ()
    paper = tiny_args(tiny_set, "x")
    for name in ("--num-epochs", "--lr-decay-epoch"):  # each with its value: the paper's defaults instead
        del paper[paper.index(name):paper.index(name) + 2]
    assert (_config(paper).num_epochs, _config(paper).lr_decay_epoch) == (120, (30, 60, 90))
    demo = parse_config(["--save-dir", "x"])
    assert (demo.num_epochs, demo.lr_decay_epoch) == (6, (4, 5))


def test_input_size_below_the_network_minimum_names_it(tiny_set, tmp_path, capsys):
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--input-size", "16")) == (
        "error: --input-size 16 is too small for --model resnet18_v1d, which needs at least 17; "
        "use --input-size 17 or more")
    assert "too small for --model inceptionv3, which needs at least 75" in trainer_error_line(
        capsys, tiny_args(tiny_set, tmp_path, "--model", "inceptionv3", "--input-size", "74"))
    assert "too small for --teacher inceptionv3, which needs at least 75" in trainer_error_line(
        capsys, tiny_args(tiny_set, tmp_path, "--teacher", "inceptionv3"))
    assert _config(tiny_args(tiny_set, tmp_path, "--input-size", "17")).input_size == 17
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--val-input-size", "16")) == (
        "error: --val-input-size 16 is too small for --model resnet18_v1d, which needs at least 17; "
        "use --val-input-size 17 or more")
    assert _config(tiny_args(tiny_set, tmp_path, "--val-input-size", "17")).val_input_size == 17


def _without_input_size(argv):
    at = argv.index("--input-size")
    return argv[:at] + argv[at + 2:]


@pytest.mark.parametrize("value, extra, message", [
    ("24", (), "--progressive-resize '24' is not START,END or START,END,FIRST_EPOCH,LAST_EPOCH, e.g. 160,192 or "
               "160,192,65,76"),
    ("24,40,1", (), "--progressive-resize '24,40,1' is not START,END or START,END,FIRST_EPOCH,LAST_EPOCH"),
    ("a,40", (), "--progressive-resize 'a,40' is not START,END or START,END,FIRST_EPOCH,LAST_EPOCH"),
    ("40,24", ("--progressive-resize-step", "8"), "--progressive-resize 40,24: START 40 must be positive and at "
                                                  "most END 24"),
    ("0,32", (), "--progressive-resize 0,32: START 0 must be positive and at most END 32"),
    ("24,40", (), "--progressive-resize 24,40: START and END must be multiples of --progressive-resize-step 32, so "
                  "that every size lies between them"),
    ("24,40,1,2", ("--progressive-resize-step", "8"),
     "--progressive-resize 24,40,1,2: FIRST_EPOCH 1 and LAST_EPOCH 2 must be epochs of --num-epochs 2, in order "
     "(0 <= FIRST_EPOCH <= LAST_EPOCH <= 1)"),
    ("24,40,1,0", ("--progressive-resize-step", "8"), "FIRST_EPOCH 1 and LAST_EPOCH 0 must be epochs"),
    ("24,40,-1,1", ("--progressive-resize-step", "8"), "FIRST_EPOCH -1 and LAST_EPOCH 1 must be epochs"),
    ("16,32", ("--progressive-resize-step", "8"), "--progressive-resize 16,32 starts at 16, too small for --model "
                                                  "resnet18_v1d, which needs at least 17; start at 17 or more"),
])
def test_a_bad_progressive_resize_is_one_line_naming_it(value, extra, message, tiny_set, tmp_path, capsys):
    argv = _without_input_size(tiny_args(tiny_set, tmp_path, "--progressive-resize", value, *extra))
    assert message in trainer_error_line(capsys, argv)


def test_progressive_resize_step_needs_progressive_resize(tiny_set, tmp_path, capsys):
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--progressive-resize-step", "8")) == (
        "error: --progressive-resize-step needs --progressive-resize, the ramp whose sizes it rounds")


def test_progressive_resize_replaces_input_size(tiny_set, tmp_path, capsys):
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--progressive-resize", "32,64")) == (
        "error: --input-size and --progressive-resize both set the training crop size; drop --input-size "
        "(validation crops --val-input-size)")
    config = _config(_without_input_size(tiny_args(tiny_set, tmp_path, "--progressive-resize", "24,40,0,1",
                                                   "--progressive-resize-step", "8", "--val-input-size", "17")))
    assert (config.progressive_resize, config.progressive_resize_step, config.val_input_size) == ((24, 40, 0, 1), 8, 17)


@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_each_family_runs_at_its_smallest_input_and_not_below(name):
    smallest = min_input_size(name)
    net = get_model(name, classes=3)
    net.initialize()
    assert net(mx.nd.zeros((1, 3, smallest, smallest))).shape == (1, 3)
    if smallest > 1:
        below = get_model(name, classes=3)
        below.initialize()
        with pytest.raises((mx.base.MXNetError, ValueError)):
            below(mx.nd.zeros((1, 3, smallest - 1, smallest - 1))).wait_to_read()


def test_every_registered_network_has_a_smallest_input():
    sizes = {name: min_input_size(name) for name in model_names()}
    assert {size for name, size in sizes.items() if name.endswith("_v1d")} == {17}
    assert sizes["inceptionv3"] == 75 and sizes["resnet152_v1"] == sizes["mobilenetv2_1.0"] == 1
    with pytest.raises(KeyError, match="vgg16"):
        min_input_size("vgg16")


def test_an_unknown_or_missing_teacher_is_one_line(tiny_set, tmp_path, capsys):
    assert "unknown --teacher 'resnet19'; give an exported PREFIX-symbol.json" in trainer_error_line(
        capsys, tiny_args(tiny_set, tmp_path, "--teacher", "resnet19"))
    missing = str(tmp_path / "teacher-symbol.json")
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--teacher", missing)) == \
        f"error: --teacher {missing} does not exist"


def test_num_classes_that_disagrees_with_the_class_list(tiny_set, tmp_path, capsys):
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--num-classes", "2")) == (
        f"error: --num-classes 2 disagrees with the 3 classes of {tiny_set / 'train.classes.txt'}; drop "
        "--num-classes, which is only for .rec files without a class list")
    folders = [arg for arg in tiny_args(tiny_set, tmp_path) if not arg.endswith(".rec")]
    folders = [arg for arg in folders if arg not in ("--rec-train", "--rec-val")]
    assert f"--num-classes 4 disagrees with the 3 classes of {tiny_set / 'images'}/train" in trainer_error_line(
        capsys, folders + ["--data-dir", str(tiny_set / "images"), "--num-classes", "4"])
    data = build_data(_config(tiny_args(tiny_set, tmp_path, "--num-classes", "3")), [mx.cpu()])
    assert data.num_classes == 3


def test_num_classes_without_a_class_list_is_checked_against_the_labels(tiny_set, tmp_path, capsys):
    for suffix in (".rec", ".idx"):
        os.symlink(tiny_set / f"train{suffix}", tmp_path / f"unlisted{suffix}")
    argv = tiny_args(tiny_set, tmp_path / "run", "--num-classes", "2")
    argv[1] = str(tmp_path / "unlisted.rec")
    line = trainer_error_line(capsys, argv)
    assert "10 of 30 records of" in line and "label 2 outside [0, 2)" in line, line


def test_batch_larger_than_the_training_set_names_both_numbers(tiny_set, tmp_path, capsys):
    rec = tiny_set / "train.rec"
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--batch-size", "97")) == (
        f"error: {rec} has 96 training images, fewer than one batch of 97 (--batch-size x devices); "
        "lower --batch-size")
    assert "fewer than one batch of 128" in trainer_error_line(
        capsys, tiny_args(tiny_set, tmp_path, "--batch-size", "64", "--num-cpu-contexts", "2"))
    config = InputConfig(batch_size=49, input_size=16, crop_ratio=0.875, num_workers=1, seed=0, num_parts=2,
                         part_index=1)
    with pytest.raises(UserError, match=r"worker 1's shard of .*train.rec \(2 workers\) has 48 training images, "
                                        "fewer than one batch of 49"):
        record_source(str(rec), str(tiny_set / "val.rec"), config)
    folders = ["--data-dir", str(tiny_set / "images"), "--save-dir", str(tmp_path), "--batch-size", "97"]
    assert f"{tiny_set / 'images'}/train has 96 training images, fewer than one batch of 97" in trainer_error_line(
        capsys, folders)
    assert build_data(_config(tiny_args(tiny_set, tmp_path, "--batch-size", "96")), [mx.cpu()]).batches_per_epoch == 1


def test_dist_kvstore_outside_the_launcher_says_how_to_launch(tiny_set, tmp_path, capsys, monkeypatch):
    for name in PS_LITE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    line = trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--kvstore", "dist_sync"))
    assert line == (
        "error: --kvstore dist_sync runs as one worker of a job that tools/launch.py starts, but DMLC_ROLE, "
        "DMLC_PS_ROOT_URI, DMLC_PS_ROOT_PORT, DMLC_NUM_SERVER, DMLC_NUM_WORKER are not set; launch it with "
        "`python tools/launch.py -n WORKERS -s SERVERS --launcher local|ssh [-H HOSTFILE] python train_imagenet.py "
        "... --kvstore dist_sync`, or use --kvstore device on one machine")
    monkeypatch.setenv("DMLC_ROLE", "worker")
    monkeypatch.setenv("DMLC_PS_ROOT_URI", "127.0.0.1")
    monkeypatch.setenv("DMLC_PS_ROOT_PORT", "9091")
    monkeypatch.setenv("DMLC_NUM_SERVER", "1")
    assert "but DMLC_NUM_WORKER is not set" in trainer_error_line(
        capsys, tiny_args(tiny_set, tmp_path, "--kvstore", "dist_async"))


def test_the_launcher_sets_every_variable_a_worker_is_checked_for():
    spec = importlib.util.spec_from_file_location("launch", os.path.join(REPO, "tools", "launch.py"))
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    for role in ("worker", "server", "scheduler"):
        environment = launch.ps_environment(role, "127.0.0.1", 9091, num_servers=1, num_workers=2)
        assert set(PS_LITE_VARIABLES) <= set(environment) and all(environment.values()), environment


def test_unknown_kvstore_lists_the_known_ones(tiny_set, tmp_path, capsys):
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--kvstore", "foo")) == (
        "error: unknown --kvstore 'foo'; use one of device, local, nccl, dist_sync, dist_device_sync, dist_async, "
        "horovod")
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, "--kvstore", "nccl")) == (
        "error: --kvstore nccl reduces gradients between GPUs; give --num-gpus or --gpus, or use --kvstore device")


@pytest.mark.parametrize("flags, message", [
    (("--bce-loss", "--teacher", "resnet18_v1b"), "error: --bce-loss with --teacher: distillation's soft term is a "
                                                  "softmax cross-entropy; drop one of the two"),
    (("--bce-target-thresh", "0.2"), "error: --bce-target-thresh needs --bce-loss"),
    (("--export-ema",), "error: --export-ema needs --model-ema, the average it exports"),
    (("--optimizer", "adamw", "--momentum", "0.5"), "error: --momentum is for --optimizer nag and sgd; --optimizer "
                                                    "adamw keeps its own moment estimates (betas 0.9, 0.999)"),
])
def test_tricks_that_need_or_exclude_another_are_one_line(flags, message, tiny_set, tmp_path, capsys):
    assert trainer_error_line(capsys, tiny_args(tiny_set, tmp_path, *flags)) == message
