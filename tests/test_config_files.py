"""Config files (``--config``): each recipe of configs/ resolves to the command it stands for (docs/recipes.md), a run's
args.yaml replays the run, the command line overrides a file, and a bad file is one line saying what to mend."""
import dataclasses
import os
import re

import pytest
import yaml

import train_imagenet
from engine.config import FLAGS, build_parser, parse_config, replay_settings, setting_key
from tests.conftest import tiny_args
from tests.helpers import trainer_error_line
from utils import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
# The README's $DATA, which its commands give beside every file: data and devices stay out of the files.
DATA = "--rec-train ~/rec/train.rec --rec-val ~/rec/val.rec --num-gpus 8 -j 32"
TEACHER_PARAMS = "--teacher-params runs/r152d/resnet152_v1d-0119.params"

# The README's commands as they were before configs/, copied from it: the $E of each network, the flags of each
# Table 6 row after $E, and what the README now adds to each Table 6 file on the command line.
EFFICIENT_R50 = "--model resnet50_v1 --batch-size 128 --warmup-epochs 5 --last-gamma --no-wd --dtype float16"
E_R50D = "--model resnet50_v1d --batch-size 128 --warmup-epochs 5 --last-gamma --no-wd --dtype float16"
E_OTHER_NETWORKS = {
    "--model inceptionv3 --input-size 299 --batch-size 128 --warmup-epochs 5 --no-wd --dtype float16":
        "--model inceptionv3 --input-size 299 --no-last-gamma",
    "--model mobilenet1.0 --batch-size 128 --warmup-epochs 5 --no-wd --dtype float16":
        "--model mobilenet1.0 --no-last-gamma",
}
TABLE_6_ROWS = {  # file: (the row's flags after $E, what the README adds to the file)
    "table6-efficient-r50d.yaml": ("", ""),
    "table6-cosine-r50d.yaml": ("--lr-mode cosine", ""),
    "table6-label-smoothing-r50d.yaml": ("--lr-mode cosine --label-smoothing 0.1", ""),
    "table6-distillation-r50d.yaml": ("--lr-mode cosine --label-smoothing 0.1 --teacher resnet152_v1d "
                                      f"{TEACHER_PARAMS} --temperature 20", TEACHER_PARAMS),
    "table6-mixup-r50d.yaml": ("--lr-mode cosine --label-smoothing 0.1 --mixup --mixup-alpha 0.2 --num-epochs 200",
                               ""),
    "table6-distillation-mixup-r50d.yaml": ("--lr-mode cosine --label-smoothing 0.1 --mixup --num-epochs 200 "
                                            f"--teacher resnet152_v1d {TEACHER_PARAMS}",
                                            TEACHER_PARAMS),
}
# (file, what the README adds to it besides $DATA, the flags of the README command it stands for, after $DATA).
RECIPES = [
    ("table3-baseline-r50.yaml", "",
     "--model resnet50_v1 --batch-size 32 --lr 0.1 --num-epochs 120 --lr-decay-epoch 30,60,90"),
    ("table4-linear-scaling-r50.yaml", "", "--model resnet50_v1 --batch-size 128"),
    ("table4-warmup-r50.yaml", "", "--model resnet50_v1 --batch-size 128 --warmup-epochs 5"),
    ("table4-zero-gamma-r50.yaml", "", "--model resnet50_v1 --batch-size 128 --warmup-epochs 5 --last-gamma"),
    ("table4-no-bias-decay-r50.yaml", "",
     "--model resnet50_v1 --batch-size 128 --warmup-epochs 5 --last-gamma --no-wd"),
    ("table3-efficient-r50.yaml", "", EFFICIENT_R50),
    *(("table3-efficient-r50.yaml", f"--model {model}", EFFICIENT_R50.replace("resnet50_v1", model))
      for model in ("resnet50_v1b", "resnet50_v1c", "resnet50_v1d")),  # Table 5
    *((file, extra, f"{E_R50D} {row}") for file, (row, extra) in TABLE_6_ROWS.items()),
    *((file, f"{extra} {override}", f"{e} {row}") for e, override in E_OTHER_NETWORKS.items()
      for file, (row, extra) in TABLE_6_ROWS.items()),
    ("teacher-r152d.yaml", "--save-dir runs/r152d",
     "--model resnet152_v1d --batch-size 128 --warmup-epochs 5 --last-gamma --no-wd --dtype float16 --lr-mode cosine "
     "--label-smoothing 0.1 --save-dir runs/r152d"),
    ("table3-baseline-inceptionv3.yaml", "", "--model inceptionv3 --input-size 299 --batch-size 32 --lr 0.1"),
    ("table3-baseline-mobilenet.yaml", "", "--model mobilenet1.0 --batch-size 32 --lr 0.1"),
    ("table3-efficient-inceptionv3.yaml", "", next(iter(E_OTHER_NETWORKS))),
    ("table3-efficient-mobilenet.yaml", "", list(E_OTHER_NETWORKS)[1]),
    # Today's reference recipes.
    ("torchvision-r50.yaml", "--save-dir runs/tv-r50",
     "--model resnet50_v1b --batch-size 128 --optimizer sgd --lr 0.5 --lr-mode cosine --warmup-epochs 5 "
     "--warmup-lr 0.005 --num-epochs 600 --wd 2e-5 --no-wd --label-smoothing 0.1 --label-smoothing-style gluoncv "
     "--mixup --mixup-alpha 0.2 --cutmix 1.0 --auto-augment ta_wide --reprob 0.1 --remode const --model-ema "
     "--model-ema-steps 32 --model-ema-decay 0.999966 --ra-reps 4 --input-size 176 --val-input-size 224 "
     "--crop-ratio 0.9655 --save-dir runs/tv-r50"),
    ("rsb-a3-r50.yaml", "--save-dir runs/rsb-a3",
     "--model resnet50_v1b --batch-size 256 --optimizer lamb --lr 0.008 --wd 0.02 --no-wd --lr-mode cosine "
     "--warmup-epochs 5 --warmup-lr 0.0001 --num-epochs 100 --bce-loss --bce-target-thresh 0.2 --mixup "
     "--mixup-alpha 0.1 --cutmix 1.0 --auto-augment rand-m6-mstd0.5-inc1 --input-size 160 --val-input-size 224 "
     "--crop-ratio 0.95 --dtype float16 --save-dir runs/rsb-a3"),
    ("ffcv-r50-88.yaml", "--save-dir runs/ffcv-r50",
     "--model resnet50_v1b --batch-size 512 --optimizer sgd --lr 1.7 --lr-mode linear --warmup-epochs 2 "
     "--warmup-lr 0.00017 --num-epochs 88 --wd 1e-4 --no-wd --label-smoothing 0.1 --label-smoothing-style gluoncv "
     "--progressive-resize 160,192,65,76 --val-input-size 256 --dtype float16 --save-dir runs/ffcv-r50"),
]
CONFIG_FILES = sorted(os.listdir(CONFIGS))


@pytest.fixture
def in_readme_folder(tmp_path, monkeypatch):
    """A working folder holding the teacher's weights that docs/recipes.md's distillation rows name (an empty file:
    only its existence is checked before training)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "r152d").mkdir(parents=True)
    (tmp_path / "runs" / "r152d" / "resnet152_v1d-0119.params").write_bytes(b"")


def _config(command_line, config_file=None):
    """The settings of ``command_line`` after ``--config configs/CONFIG_FILE``, if given."""
    from_file = ["--config", os.path.join(CONFIGS, config_file)] if config_file else []
    return parse_config(from_file + command_line.split())


@pytest.mark.parametrize("config_file", CONFIG_FILES)
def test_every_file_of_configs_resolves_and_stands_for_a_readme_command(config_file):
    assert config_file.endswith(".yaml") and config_file in {file for file, _, _ in RECIPES}
    config = _config(DATA, config_file)
    with open(os.path.join(CONFIGS, config_file)) as handle:
        settings = yaml.safe_load(handle)
    assert config.model == settings["model"] and config.num_gpus == 8


@pytest.mark.parametrize("config_file, readme_adds, readme_flags", RECIPES,
                         ids=[f"{file} {extra}".strip() for file, extra, _ in RECIPES])
def test_a_file_resolves_to_the_readme_command_it_stands_for(config_file, readme_adds, readme_flags,
                                                             in_readme_folder):
    assert _config(f"{DATA} {readme_adds}", config_file) == _config(f"{DATA} {readme_flags}")


def test_the_recipes_page_names_every_file_of_configs_and_no_other():
    with open(os.path.join(REPO, "docs", "recipes.md")) as handle:
        named = set(re.findall(r"--config configs/([\w.-]+)", handle.read()))
    assert named == set(CONFIG_FILES)


def test_a_run_replays_from_its_args_yaml_into_a_new_folder(tiny_set, tmp_path):
    # Flags of every kind: a list (--lr-decay-epoch), an optional value (--label-smoothing), switches (--mixup,
    # --no-wd), a --x/--no-x switch left to the data's default, choices, numbers and paths.
    argv = tiny_args(tiny_set, tmp_path / "run", "--num-epochs", "1", "--label-smoothing", "--mixup", "--no-wd",
                     "--lr-mode", "cosine", "--label-smoothing-style", "gluoncv")
    assert train_imagenet.main(argv) == 0
    original = parse_config(argv)
    args_yaml = checkpoint.args_yaml_path(str(tmp_path / "run"))
    with open(args_yaml) as handle:
        settings = yaml.safe_load(handle)
    assert (settings["lr-decay-epoch"], settings["label-smoothing"], settings["last-gamma"]) == ([1], 0.1, False)
    assert settings["logging-file"] is None and "resume" not in settings and "config" not in settings
    again = str(tmp_path / "again")
    replayed = parse_config(["--config", args_yaml, "--save-dir", again])
    assert replayed == dataclasses.replace(original, save_dir=again, logging_file=os.path.join(again, "train.log"))
    # With --resume the file goes on with its own run, whose one epoch is done: no epoch is trained again.
    assert train_imagenet.main(["--config", args_yaml, "--resume"]) == 0
    assert [record["epoch"] for record in checkpoint.read_metrics(str(tmp_path / "run"))] == [0]


def test_a_replay_derives_again_and_starts_afresh(tiny_set, tmp_path):
    """An explicit log file is kept; the training size under progressive resizing is derived again; --resume-*
    are left out, so the replay is a new run."""
    (tmp_path / "start.params").write_bytes(b"")
    argv = tiny_args(tiny_set, tmp_path / "run", "--progressive-resize", "24,40", "--progressive-resize-step", "8",
                     "--logging-file", str(tmp_path / "my.log"), "--resume-params", str(tmp_path / "start.params"),
                     "--resume-epoch", "1")
    at = argv.index("--input-size")
    original = parse_config(argv[:at] + argv[at + 2:])
    checkpoint.save_run_args(str(tmp_path), dataclasses.asdict(original), None, replay_settings(original))
    replayed = parse_config(["--config", checkpoint.args_yaml_path(str(tmp_path)), "--save-dir", "again"])
    assert replayed == dataclasses.replace(original, save_dir="again", resume_params=None, resume_epoch=0)
    assert (replayed.logging_file, replayed.input_size, replayed.progressive_resize) == (
        str(tmp_path / "my.log"), 224, (24, 40))


def test_the_command_line_overrides_the_file_and_values_read_as_typed(tmp_path):
    config_file = tmp_path / "recipe.yaml"
    config_file.write_text("model: resnet50_v1d\nbatch_size: 64\nlast-gamma: true\nlr-decay-epoch: '3,5'\n"
                           "label-smoothing: true\nwd: 1e-4\nmixup: false\ngpus: [0, 2]\nteacher: null\n"
                           "progressive-resize: [160, 192]\n")
    config = parse_config(["--config", str(config_file), "--batch-size", "32", "--no-last-gamma"])
    assert (config.model, config.batch_size, config.last_gamma, config.lr_decay_epoch) == (
        "resnet50_v1d", 32, False, (3, 5))
    assert (config.label_smoothing, config.wd, config.mixup, config.gpus, config.teacher) == (
        0.1, 1e-4, False, (0, 2), None)
    assert config.progressive_resize == (160, 192)


@pytest.mark.parametrize("in_file, on_command_line, resolved", [
    ("mixup: true", "--no-mixup", False), ("mixup: false", "--mixup", True),
    # A flag whose name starts with no-: its off spelling is --no-no-wd, and --no-wd stays on.
    ("no-wd: true", "--no-no-wd", False), ("no-wd: false", "--no-wd", True),
])
def test_the_command_line_turns_a_switch_of_the_file_off_and_on(in_file, on_command_line, resolved, tmp_path):
    config_file = tmp_path / "recipe.yaml"
    config_file.write_text(in_file + "\n")
    name = in_file.split(":")[0].replace("-", "_")
    assert getattr(parse_config(["--config", str(config_file)]), name) is not resolved
    assert getattr(parse_config(["--config", str(config_file), on_command_line]), name) is resolved


def test_every_switch_has_an_off_spelling_after_its_on_one():
    parser = build_parser()
    switches = [field for field in FLAGS if field.type is bool]
    assert {"mixup", "no_wd", "last_gamma", "resume"} <= {field.name for field in switches}
    for field in switches:
        key = setting_key(field.name)
        assert getattr(parser.parse_args([f"--{key}"]), field.name) is True, key
        assert getattr(parser.parse_args([f"--{key}", f"--no-{key}"]), field.name) is False, key


@pytest.mark.parametrize("text, message", [
    ("batch-sise: 64\n", "unknown setting 'batch-sise'; did you mean batch-size? (the keys are the flags that "
                         "`train_imagenet.py --help` lists, without their dashes)"),
    ("lr_mod: cosine\n", "unknown setting 'lr_mod'; did you mean lr-mode?"),
    ("batch-size: abc\n", "batch-size: 'abc' is not a whole number"),
    ("batch-size: 12.5\n", "batch-size: 12.5 is not a whole number"),
    ("lr: fast\n", "lr: 'fast' is not a number"),
    ("mixup: 3\n", "mixup: 3 is not true or false"),
    ("last-gamma: 'no'\n", "last-gamma: 'no' is not true or false"),
    ("lr-mode: cosin\n", "lr-mode: 'cosin' is not one of step, cosine, poly, linear"),
    ("model: [resnet50_v1d]\n", "model: ['resnet50_v1d'] is not text"),
    ("lr-decay-epoch: {30: 60}\n", "lr-decay-epoch: {30: 60} is not a list, or its values separated by commas"),
    ("lr-decay-epoch: [60, 30]\n", "--lr-decay-epoch '60,30' must list increasing epochs, each 0 or more"),
    ("batch-size: 64\nbatch_size: 32\n", "'batch-size' and 'batch_size' are the same setting; keep one"),
])
def test_a_bad_setting_is_one_line_naming_its_key(text, message, tmp_path, capsys):
    config_file = tmp_path / "recipe.yaml"
    config_file.write_text(text)
    line = trainer_error_line(capsys, ["--config", str(config_file)])
    assert line.startswith(f"error: {config_file}: ") and message in line, line


def test_a_file_that_is_not_settings_is_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert trainer_error_line(capsys, ["--config", str(missing)]) == (
        f"error: --config {missing} does not exist; give a YAML file of settings, e.g. one of configs/")
    listed = tmp_path / "list.yaml"
    listed.write_text("- --model\n- resnet50_v1d\n")
    assert trainer_error_line(capsys, ["--config", str(listed)]) == (
        f"error: --config {listed} holds a list, not settings; write one `flag-name: value` a line, e.g. "
        "`batch-size: 128`")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: resnet50_v1d\nbatch-size: [128\n")
    assert trainer_error_line(capsys, ["--config", str(broken)]).startswith(
        f"error: --config {broken} is not valid YAML at line 3: ")
