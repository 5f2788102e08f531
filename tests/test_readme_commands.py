"""Every command of README.md and docs/*.md runs as written (the project's rule), at small sizes, on this CPU machine.

The commands are read from the pages (README.md, then docs/*.md, each on its own: a page defines its own variables and
makes the files its commands use) when the tests run, so a new one is covered without editing this file:
each line of its ```bash blocks (continuation lines joined, ``&&`` chains split, a ``for`` loop kept whole) and
each inline `python ...` or `pip ...` span elsewhere, in tables and prose (a span may wrap over lines).
Variables (``$DATA``) are expanded as the page defines them at that point; a span starting with ``...``
continues the row above's command from the first word they share; a command-table row that gives its command
in words is mapped in DERIVED_ROWS, a command with placeholders (``NAME``, ``[--input-size N]``) in
PLACEHOLDERS. A command-table row with no command, or a command that no table below knows, fails.

Only the pages' paths change (PATH_STAND_INS, and train_imagenet.py's default ``--save-dir``); flags stay as
written. Then, by what the command runs:
* KINDS, run here on tests/conftest.py's tiny set, checking what they print and write: ``mkdir``,
  ``data.cifar10`` (on a small archive of the binary version's layout), ``data.pack``, ``data.clean``,
  ``models`` (the pages' figures), ``models.convert``, ``models.export_onnx``,
  ``eval_imagenet.py``, ``predict.py``, ``tools.plot_runs`` (on run folders made here), ``tools.convert_checkpoint``,
  ``train_imagenet.py --help``. Training commands that ask for GPUs
  run as written and must stop with exit status 2 and the one-line GPU error, which comes only after every
  flag was parsed and validated; CPU ones whose batch is larger than the tiny set stop likewise at the data's
  size check. The bare demo trains for minutes: it is checked through ``--help`` (its defaults are the demo
  of docs/results.md, where its run is measured);
* CHECKED_CHEAPLY, not run: the ssh launcher, Horovod's launcher, the benchmarks, the recipe search and
  TensorBoard's server, whose ``--help`` must list every option the command uses (a launcher's worker command is
  checked as its own kind; ``horovodrun``'s --help only where Horovod is installed);
* NOT_RUN: what this machine cannot run, with the reason; these tests skip after any cheap check.
Most commands spend their second in MXNet's import, so they run two at a time, started ahead of their tests; those
that only stop at a check (training that asks for GPUs or for a batch larger than the tiny set) and the --help of the
benchmarks run one after another in one interpreter (tests/run_commands.py), each as ``python`` runs it alone, with
its own exit status and output, and pay the import once.

Besides the commands, the pages are checked as a whole: docs/training.md names every flag of the trainer, every
table of docs/results.md has its commit and a command beside it, every link between pages leads to a page and
heading, and no page names the developers' shared folder of data sets.
"""
import configparser
import dataclasses
import fnmatch
import glob
import hashlib
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import mxnet as mx
import pytest

from engine.config import build_parser
from models import get_model
from tests.helpers import CIFAR10_CLASSES, write_cifar10_binary
from tests.launch_job import HOROVODRUN
from utils import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
# The pages whose commands run here: the README, then every page of docs/, in name order.
PAGES = [README] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
TIMEOUT_SECONDS = 120
CIFAR10_IMAGES_PER_BATCH = 2  # of the archive that stands in for CIFAR-10's download: 10 training, 2 test images
PYTHONS = ("python", "python3")

# Where the pages' paths are on this machine: the one change made to their commands. "tiny/" is the tiny_set
# fixture (3 classes of 24x24 PNGs in images/<split>/<class>/, packed as <split>.rec), "work/" a folder of
# this module. A word is replaced when it is the path or starts with the path and "/"; longest path first.
PATH_STAND_INS = {
    "~/imagenet/train": "tiny/images/train",  # ImageNet's folders
    "~/imagenet/val": "tiny/images/val",
    "~/rec/train.rec": "tiny/train.rec",  # ImageNet, packed
    "~/rec/val.rec": "tiny/val.rec",
    "~/rec": "work/home-rec",  # where the pages' pack and clean write
    "cifar-10-binary.tar.gz": "work/cifar-10-binary.tar.gz",  # CIFAR-10's download: a small archive of its layout
    "cifar10/val": "tiny/images/val",
    "cifar10/train": "tiny/images/train",  # CIFAR-10, unpacked
    "cifar10": "work/cifar10",  # where data.cifar10 unpacks the archive's stand-in
    "cifar10k": "tiny/images/train",  # results.md's loop of links to CIFAR-10's first 1,000 images a class
    "rec/train.rec": "tiny/train.rec",  # CIFAR-10, packed
    "rec/val.rec": "tiny/val.rec",
    "rec": "work/rec",
    "runs": "work/runs",  # --save-dir, and the trained network that eval, predict and the ONNX export read (and
    # runs/r152d/resnet152_v1d-0119.params, the teacher's weights: an empty file, only its existence is checked)
    "gluoncv.params": "work/gluoncv.params",  # made here: GluonCV's resnet50_v1, initialized
    "ours.params": "work/ours.params",
    "r50d.onnx": "work/r50d.onnx",
    "result.json": "work/result.json",
    "cat.jpg": "tiny/images/val/red/0.png",
    "dog.jpg": "tiny/images/val/blue/0.png",
}
# train_imagenet.py writes into --save-dir, by default "params" in the working directory: the repository here.
DEFAULT_SAVE_DIR = "work/params"
# Folders the pages' commands expect to exist: their mkdir makes ~/rec and rec/, training makes runs/.
WORK_FOLDERS = ("home-rec", "rec", "runs")

# Commands with placeholders, as the pages show them -> the commands run for them.
PLACEHOLDERS = {
    "python -m models NAME [--input-size N]": ("python -m models resnet50_v1d",
                                               "python -m models inceptionv3 --input-size 299"),
    # The benchmarks that the README's Layout table names beside it.
    "python -m benchmarks.NAME": tuple(f"python -m benchmarks.{name}" for name in (
        "throughput", "profile_models", "pytorch_reference", "ablation", "tricks_overhead", "input_pipeline",
        "record_reader", "torchvision_pipeline", "resume_check", "scaling_model", "ps_lite_calibration",
        "gradient_compression", "compression_accuracy", "loop_overheads", "recipe_search", "gluoncv_script")),
    "python -m tools.convert_checkpoint SAVE_DIR": ("python -m tools.convert_checkpoint runs/r50d",),
}

# The demo's settings as docs/results.md states them: ResNet-18-D at 32x32, batch 64, 6 epochs, zero gamma,
# decay at epochs 4 and 5 (train_imagenet.py --help names its demo defaults after a slash).
DEMO_SETTINGS = dict(model="resnet18_v1d", input_size="32", batch_size="64", num_epochs="6",
                     lr_decay_epoch="4,5", last_gamma="True")
SPAN = re.compile(r"`([^`]+)`")
COMMAND_SPAN = re.compile(r"^(python3? |pip |\.\.\. )")
DEFINITION = re.compile(r'^([A-Z]+)="([^"]*)"$')
PLACEHOLDER_WORD = re.compile(r"^\[|(^|[./])[A-Z]+($|[./\]])")  # NAME, [--input-size, N], benchmarks.NAME
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")  # HOROVOD_WITH_MXNET=1 before a command: its environment


@dataclasses.dataclass(frozen=True)
class ReadmeCommand:
    """One command of a page: where it is, its text as shown, and the words a shell would run."""

    page: str  # README.md or docs/NAME.md
    line: int
    text: str  # continuation lines joined, a leading "..." resolved, variables not expanded
    argv: tuple  # $DATA expanded as the page defines it where the command is


def _expand(text, variables):
    """The words of ``text``, each ``$NAME`` the page defines replaced by the words of its value."""
    words = []
    for word in shlex.split(text, comments=True):
        name = word[1:]
        words += shlex.split(variables[name]) if word.startswith("$") and name in variables else [word]
    return tuple(words)


def _continue_row_above(text, row_above, where):
    """``... WORDS``: the row above's command up to the first of WORDS, then WORDS."""
    if not row_above:
        raise ValueError(f"{where}: {text!r} continues no command of the row above")
    words, above = text.split()[1:], row_above.split()
    if words[0] not in above:
        raise ValueError(f"{where}: {text!r} shares no word with the row above, {row_above!r}")
    return " ".join(above[:above.index(words[0])] + words)


def _table_5_rows(context):
    """The row above's command followed by each model of the row (efficient, with `--model resnet50_v1b`, ...),
    which overrides its config file's."""
    return [f"{context.row_above[-1]} --model {span.split()[-1]}" for span in context.spans]


def _table_6_rows_of_other_networks(context):
    """The ResNet-50-D Table 6 commands above, each followed by the flags of each span of the row (one per
    network), which override its config file's."""
    table_6 = [text for label, texts in context.rows_so_far if label.startswith("Table 6") for text in texts]
    return [f"{text} {span}" for span in context.spans for text in table_6]


# Command-table rows that give their command in words, by their first cell -> the commands they stand for.
DERIVED_ROWS = {
    "Table 5 ResNet-50-B / -C / -D": _table_5_rows,
    "Table 6 rows": _table_6_rows_of_other_networks,
}


@dataclasses.dataclass
class RowContext:
    """What a derived row's command is made of: its spans, the rows above it, the page's text."""

    spans: list
    row_above: list
    rows_so_far: list
    readme: str


class ReadmeReader:
    """Walks one page once, in order, keeping the variables it defines and the table rows it has seen."""

    def __init__(self, path=README):
        self.page = os.path.relpath(path, REPO)
        with open(path) as handle:
            self.readme = handle.read()
        self.lines = self.readme.splitlines()
        self.variables, self.rows_so_far, self.derived_rows_used = {}, [], set()
        self.commands = []

    def read(self):
        index = 0
        while index < len(self.lines):
            line = self.lines[index]
            if line.startswith("```"):
                end = next(i for i in range(index + 1, len(self.lines)) if self.lines[i].startswith("```"))
                if line.strip() == "```bash":
                    self._read_block(index + 2, self.lines[index + 1:end])
                index = end + 1
            elif line.strip():
                end = index + 1
                is_table = line.startswith("|")
                while end < len(self.lines) and self.lines[end].strip() and not self.lines[end].startswith("```") \
                        and self.lines[end].startswith("|") == is_table:
                    end += 1
                if is_table:
                    self._read_table(index + 1, self.lines[index:end])
                else:
                    self._read_prose(index + 1, "\n".join(self.lines[index:end]))
                index = end
            else:
                index += 1
        return self.commands

    def _add(self, line, text):
        for concrete in PLACEHOLDERS.get(text, (text,)):
            self.commands.append(ReadmeCommand(self.page, line, concrete, _expand(concrete, self.variables)))

    def _read_block(self, first_line, block_lines):
        """A ```bash block: comments dropped, continuations joined, ``&&`` split, a for loop kept whole."""
        unit, start, loop_depth = [], None, 0
        for number, line in enumerate(block_lines, first_line):
            text = " ".join(shlex.split(line, comments=True, posix=False))
            if not text and not unit:
                continue
            continued = text.endswith("\\")
            unit.append(text[:-1].rstrip() if continued else text)
            start = start or number
            loop_depth += len(re.findall(r"\bdo\b", text)) - len(re.findall(r"\bdone\b", text))
            if continued or loop_depth:
                continue
            if unit[0].startswith(("for ", "while ")):
                self._add(start, "\n".join(unit))
            else:
                for part in re.split(r"\s+&&\s+", " ".join(unit)):
                    self._add(start, part)
            unit, start = [], None

    def _read_prose(self, first_line, paragraph):
        for match in SPAN.finditer(paragraph):
            self._read_span(first_line + paragraph[:match.start()].count("\n"), match.group(1))

    def _read_span(self, line, span, row_above=None):
        """A definition or a command span (others are not commands); returns the command's text, or None."""
        span = " ".join(span.replace("\\|", "|").split())
        definition = DEFINITION.match(span)
        if definition:
            self.variables[definition.group(1)] = definition.group(2)
        elif COMMAND_SPAN.match(span):
            text = _continue_row_above(span, row_above, f"{self.page} line {line}") if span.startswith("...") else span
            self._add(line, text)
            return text
        return None

    def _read_table(self, first_line, rows):
        """A Markdown table: each row's spans in order; in a table of commands, every row shows or maps one."""
        row_above, rows_without_command, rows_with_command = [], [], 0
        for number, row in enumerate(rows, first_line):
            cells = [cell.strip() for cell in CELL_SEPARATOR.split(row.strip())[1:-1]]
            if not cells or set("".join(cells)) <= set("- :"):
                continue
            label, spans = cells[0], SPAN.findall(row)
            definitions = [DEFINITION.match(span).groups() for span in spans if DEFINITION.match(span)]
            if label in DERIVED_ROWS:
                self.derived_rows_used.add(label)
                context = RowContext(spans, row_above, self.rows_so_far, self.readme)
                for text in DERIVED_ROWS[label](context):
                    self._add(number, text)
                texts = []
            else:
                above = row_above[-1] if row_above else None
                texts = [text for span in spans if (text := self._read_span(number, span, above))]
                if number != first_line and not texts and not definitions:
                    rows_without_command.append(f"{self.page} line {number}: {row}")
            rows_with_command += bool(texts) or bool(definitions) or label in DERIVED_ROWS
            self.rows_so_far.append((label, texts))
            row_above = texts or row_above
        # A table of commands shows one in most rows (a table of files or figures may name one in passing).
        if rows_without_command and rows_with_command > len(rows_without_command):
            raise ValueError("rows of a command table that show no command; map them in DERIVED_ROWS:\n"
                             + "\n".join(rows_without_command))


def readme_commands():
    """The commands of every page, page by page."""
    commands, used = [], set()
    for path in PAGES:
        reader = ReadmeReader(path)
        commands += reader.read()
        used |= reader.derived_rows_used
    unused = set(DERIVED_ROWS) - used
    if unused:
        raise ValueError(f"DERIVED_ROWS maps rows no page has any more: {sorted(unused)}")
    return commands


README_COMMANDS = readme_commands()


def program(argv):
    """What a command runs: ``python -m a.b`` and ``python a/b.py`` -> ``a.b``; else the program's name (after the
    words that set its environment)."""
    argv = list(itertools.dropwhile(ASSIGNMENT.match, argv))
    if argv[0] in PYTHONS:
        target = argv[2] if argv[1] == "-m" else argv[1]
        return target[:-3].replace("/", ".") if target.endswith(".py") else target
    return argv[0]


def options(argv):
    return [word for word in argv if word.startswith("-")]


def run_now(argv):
    """Run ``argv`` from the repository root, ``python`` being this interpreter."""
    argv = [sys.executable if argv[0] in PYTHONS else argv[0], *argv[1:]]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)


def run_in_one_interpreter(argvs):
    """Run the ``python`` commands ``argvs`` from the repository root, one after another in one interpreter
    (tests/run_commands.py): a ``subprocess.CompletedProcess`` for each, as ``run_now`` gives."""
    with tempfile.TemporaryDirectory() as folder:
        commands, results = os.path.join(folder, "commands.json"), os.path.join(folder, "results.json")
        with open(commands, "w") as handle:
            json.dump([argv[1:] for argv in argvs], handle)
        runner = subprocess.run([sys.executable, "-m", "tests.run_commands", commands, results], cwd=REPO,
                                capture_output=True, text=True, timeout=TIMEOUT_SECONDS * len(argvs))
        assert runner.returncode == 0, runner.stderr
        with open(results) as handle:
            return [subprocess.CompletedProcess(list(argv), *result) for argv, result in zip(argvs, json.load(handle))]


def shares_an_interpreter(argv):
    """Whether ``argv`` (the README's paths replaced) runs in ``run_in_one_interpreter``: training that stops at the
    GPU or the data's check, and ``python -m benchmarks.NAME --help``, which import from the repository's root as
    that interpreter does; the trainer's --help, the demo's and every other command run as commands of their own."""
    if argv[0] not in PYTHONS:
        return False
    if argv[1] == "train_imagenet.py":
        return "--help" not in argv
    return argv[1] == "-m" and argv[2].startswith("benchmarks.") and argv[3:] == ["--help"]


@dataclasses.dataclass(frozen=True)
class OneOf:
    """The result of command ``index`` of a ``run_in_one_interpreter`` run, ``batch`` (a future)."""

    batch: object
    index: int

    def result(self):
        return self.batch.result()[self.index]


def assert_exit(result, status, argv):
    assert result.returncode == status, (f"{shlex.join(argv)} exited with {result.returncode}, not {status}\n"
                                         f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")


def lines_of(text):
    return [line for line in text.splitlines() if line.strip()]


@dataclasses.dataclass
class Here:
    """This machine: stand-ins for the pages' paths, and the commands run, two at a time, once each.

    Most commands spend their second in MXNet's import, so ``start`` runs them ahead on a second core; ``run``
    waits for a started command or runs it then. The same words run once (a --help that commands share).
    """

    tiny: str
    work: str
    pool: ThreadPoolExecutor
    started: dict = dataclasses.field(default_factory=dict)

    def path(self, stand_in):
        root, _, rest = stand_in.partition("/")
        return os.path.join({"tiny": self.tiny, "work": self.work}[root], rest)

    def substitute(self, argv):
        """``argv`` with the pages' paths replaced; a training command without --save-dir gets its own."""
        words = []
        for word in argv:
            readme_path = next((key for key in sorted(PATH_STAND_INS, key=len, reverse=True)
                                if word == key or word.startswith(key + "/")), None)
            words.append(word if readme_path is None else
                         self.path(PATH_STAND_INS[readme_path]) + word[len(readme_path):])
        trains = program(argv) == "train_imagenet" and len(argv) > 2 and "--help" not in argv  # not the demo
        if trains and "--save-dir" not in words:
            # One folder per command: two runs in one folder would refuse each other.
            digest = hashlib.sha1(" ".join(argv).encode()).hexdigest()[:8]
            words += ["--save-dir", self.path(f"{DEFAULT_SAVE_DIR}/{digest}")]
        unknown = [word for word in words if word.startswith("~") or "$" in word]
        assert not unknown, f"{unknown} in {shlex.join(argv)}: add a stand-in to PATH_STAND_INS"
        return words

    def start(self, argv):
        if tuple(argv) not in self.started:
            self.started[tuple(argv)] = self.pool.submit(run_now, argv)

    def start_in_one_interpreter(self, argvs):
        argvs = list(dict.fromkeys(tuple(argv) for argv in argvs if tuple(argv) not in self.started))
        if argvs:
            batch = self.pool.submit(run_in_one_interpreter, argvs)
            self.started.update((argv, OneOf(batch, index)) for index, argv in enumerate(argvs))

    def run(self, argv):
        self.start(argv)
        return self.started[tuple(argv)].result()


@pytest.fixture(scope="module")
def here(tiny_set, tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    for folder in WORK_FOLDERS:
        os.makedirs(work / folder)
    os.makedirs(work / "runs" / "r152d")
    (work / "runs" / "r152d" / "resnet152_v1d-0119.params").write_bytes(b"")
    write_cifar10_binary(work / "cifar-10-binary.tar.gz", images_per_batch=CIFAR10_IMAGES_PER_BATCH)
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield Here(str(tiny_set), str(work), pool)
        pool.shutdown(cancel_futures=True)


def make_trained_r50d(here):
    """What a run with ``--save-dir runs/r50d`` leaves for eval, predict and the ONNX export: weights, export,
    class list, named as training names them; an initialized network stands in for the trained one."""
    save_dir = os.path.join(here.path(PATH_STAND_INS["runs"]), "r50d")
    os.makedirs(save_dir)
    mx.random.seed(0)
    net = get_model("resnet50_v1d", classes=3)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    net.save_parameters(checkpoint.params_path(save_dir, "resnet50_v1d", 119))
    net.export(checkpoint.export_prefix(save_dir, "resnet50_v1d"))
    with open(checkpoint.classes_path(save_dir), "w") as handle:
        handle.write("\n".join(class_names(here.path("tiny/images/val"))) + "\n")


def make_gluoncv_params(here):
    """A .params file saved by GluonCV's own resnet50_v1 (3 classes), for ``models.convert from-gluoncv``."""
    from gluoncv import model_zoo
    mx.random.seed(0)
    net = model_zoo.get_model("resnet50_v1", pretrained=False, classes=3)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    net.save_parameters(here.path(PATH_STAND_INS["gluoncv.params"]))


def make_finished_runs(here):
    """The run folders that the pages' ``tools.plot_runs`` commands compare, written as training writes them:
    settings, then one metrics line per epoch."""
    for name, top1 in (("r50d-baseline", (0.30, 0.52)), ("r50d-cosine", (0.32, 0.56)),
                       ("ablation-reader/resnet18_v1d-seed0-27d5557504", (0.38, 0.65)),
                       ("ablation-reader/resnet18_v1d-seed0-2f43a07056", (0.36, 0.74))):
        save_dir = os.path.join(here.path(PATH_STAND_INS["runs"]), name)
        os.makedirs(save_dir)
        checkpoint.save_run_args(save_dir, dict(model="resnet50_v1d", num_epochs=2), None)
        for epoch, value in enumerate(top1):
            checkpoint.append_metrics(save_dir, dict(epoch=epoch, val_top1=value, val_top5=0.9, train_loss=1.5,
                                                     train_top1=0.4, lr=0.1, samples_per_sec=100.0))


@pytest.fixture(scope="module")
def started(here, request):
    """The input files the pages' commands expect, then what the selected tests of this module run, started."""
    make_trained_r50d(here)
    make_gluoncv_params(here)
    make_finished_runs(here)
    planned = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.module is request.module and callspec and "command" in callspec.params:
            planned += planned_runs(list(callspec.params["command"].argv), here)
    here.start_in_one_interpreter([argv for argv in planned if shares_an_interpreter(argv)])
    for argv in planned:
        here.start(argv)
    return here


def class_names(folder):
    return sorted(os.listdir(folder))


def readme_model_figures():
    """name -> (parameters, multiply-adds) as the pages' table of models gives them, e.g. "25.58 M", "4.329 G"."""
    figures, rows = {}, []
    for path in PAGES:
        with open(path) as handle:
            rows += handle.read().splitlines()
    for row in rows:
        cells = [cell.strip() for cell in CELL_SEPARATOR.split(row)[1:-1]]
        if len(cells) == 4 and re.fullmatch(r"`[\w.]+`", cells[0]) and cells[2].endswith(" M"):
            figures[cells[0].strip("`")] = (cells[2], cells[3].split(" at ")[0])
    return figures


# ---- commands run for real -------------------------------------------------------------------------------


def check_mkdir(argv, here):
    assert_exit(here.run(argv), 0, argv)
    assert os.path.isdir(argv[-1])


def check_cifar10(argv, here):
    """``python -m data.cifar10 ARCHIVE OUT``: OUT/train and OUT/val hold every image of the archive, in class
    folders (tests/test_cifar10.py checks the pixels)."""
    out = argv[4]
    result = here.run(argv)
    assert_exit(result, 0, argv)
    counts = {"train": 5 * CIFAR10_IMAGES_PER_BATCH, "val": CIFAR10_IMAGES_PER_BATCH}
    assert lines_of(result.stdout) == [f"{split}: {count} images of 10 classes in {os.path.join(out, split)}"
                                       for split, count in counts.items()]
    for split, count in counts.items():
        assert class_names(os.path.join(out, split)) == sorted(CIFAR10_CLASSES)
        assert sum(len(os.listdir(os.path.join(out, split, name))) for name in CIFAR10_CLASSES) == count


def check_pack(argv, here):
    """``python -m data.pack SRC OUT [--resize N]``: OUT.rec .idx .lst .classes.txt, every image, resized."""
    src, out = argv[3], argv[4]
    result = here.run(argv)
    assert_exit(result, 0, argv)
    names = class_names(src)
    with open(f"{out}.classes.txt") as handle:
        assert handle.read().split() == names
    num_images = sum(len(os.listdir(os.path.join(src, name))) for name in names)
    with open(f"{out}.lst") as handle:
        assert len(handle.readlines()) == num_images
    records = mx.recordio.MXIndexedRecordIO(f"{out}.idx", f"{out}.rec", "r")
    assert len(records.keys) == num_images
    _, image = mx.recordio.unpack_img(records.read_idx(records.keys[0]))
    records.close()
    # The tiny set's images are 24x24: --resize scales the shorter side to N, without it they stay.
    size = int(argv[argv.index("--resize") + 1]) if "--resize" in argv else 24
    assert image.shape == (size, size, 3)


def check_clean(argv, here):
    """``python -m data.clean REC --out OUT`` on a clean set: all records good, so no copy is written."""
    rec, out = argv[3], argv[argv.index("--out") + 1]
    result = here.run(argv)
    assert_exit(result, 0, argv)
    with open(os.path.splitext(rec)[0] + ".lst") as handle:
        num_records = len(handle.readlines())
    assert lines_of(result.stdout) == [f"all {num_records} records of {rec} are good"]
    assert not os.path.exists(f"{out}.rec")


def check_models(argv, here):
    """``list`` prints every network of the pages' table of models; NAME prints the table's figures for it."""
    result = here.run(argv)
    assert_exit(result, 0, argv)
    figures = readme_model_figures()
    name = argv[3]
    if name == "list":
        assert set(figures) <= set(lines_of(result.stdout)), result.stdout
        return
    size = argv[argv.index("--input-size") + 1] if "--input-size" in argv else "224"
    parameters, multiply_adds = figures[name]
    assert lines_of(result.stdout) == [f"{name}: {parameters} parameters, {multiply_adds} multiply-adds at "
                                       f"{size}x{size}"], "the table of models (docs/training.md) says otherwise"


def check_convert(argv, here):
    """``python -m models.convert from-gluoncv NAME IN OUT``: OUT loads into our network of that name."""
    name, out = argv[4], argv[6]
    result = here.run(argv)
    assert_exit(result, 0, argv)
    assert lines_of(result.stdout)[-1].endswith(f"; wrote {out}")
    get_model(name, classes=3).load_parameters(out)


def check_export_onnx(argv, here):
    out, size = argv[argv.index("--output") + 1], argv[argv.index("--input-size") + 1]
    result = here.run(argv)
    assert_exit(result, 0, argv)
    assert lines_of(result.stdout)[-1].startswith(f"wrote {out}: ONNX opset"), result.stdout
    assert f"(batch, 3, {size}, {size}); onnxruntime matches MXNet" in result.stdout
    assert os.path.getsize(out) > 0


def check_eval(argv, here):
    """``eval_imagenet.py ... --output FILE``: the summary line and FILE's record of the validation set."""
    out = argv[argv.index("--output") + 1]
    result = here.run(argv)
    assert_exit(result, 0, argv)
    with open(out) as handle:
        record = json.load(handle)
    num_images = sum(len(os.listdir(os.path.join(here.path("tiny/images/val"), name)))
                     for name in class_names(here.path("tiny/images/val")))
    assert (record["model"], record["num_images"], record["num_classes"]) == ("resnet50_v1d", num_images, 3)
    assert record["top5_error"] == 0  # 3 classes: the five most probable hold every label
    assert round(record["top1_error"] * num_images, 6) % 1 == 0
    assert lines_of(result.stdout) == [
        f"resnet50_v1d: top-1 error {record['top1_error']:.4f}, top-5 error 0.0000 on {num_images} images of 3 "
        f"classes, {record['images_per_sec']:.1f} images/s", f"wrote {out}"]


def check_predict(argv, here):
    """``predict.py ... IMAGE...``: each image, then its classes ranked by probability (3 of the tiny set)."""
    images = argv[argv.index("--params") + 2:]
    result = here.run(argv)
    assert_exit(result, 0, argv)
    lines = lines_of(result.stdout)
    names = class_names(here.path("tiny/images/val"))
    assert lines[::len(names) + 1] == images
    for index in range(len(images)):
        ranked = [line.split() for line in lines[index * (len(names) + 1) + 1:(index + 1) * (len(names) + 1)]]
        assert [rank for rank, _, _ in ranked] == [f"{k}." for k in range(1, len(names) + 1)]
        assert sorted(name for _, name, _ in ranked) == names
        probabilities = [float(probability) for _, _, probability in ranked]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1, abs=2e-4)


def check_plot_runs(argv, here):
    """``tools.plot_runs RUN_DIR... [--names ...] --output PNG --table MD``: the PNG, and one table row a run."""
    result = here.run(argv)
    assert_exit(result, 0, argv)
    with open(argv[argv.index("--output") + 1], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(argv[argv.index("--table") + 1]) as handle:
        assert handle.read() == result.stdout
    run_dirs = argv[3:argv.index(next(word for word in argv[3:] if word.startswith("-")))]
    names = argv[argv.index("--names") + 1:][:len(run_dirs)] if "--names" in argv else map(os.path.basename, run_dirs)
    assert [line.split(" | ")[0] for line in lines_of(result.stdout)[2:]] == [f"| {name}" for name in names]


def check_convert_checkpoint(argv, here):
    """``tools.convert_checkpoint SAVE_DIR`` on a run folder without checkpoints: one line saying so
    (tests/test_checkpoint_safety.py converts a real one and resumes from it)."""
    result = here.run(argv)
    assert_exit(result, 2, argv)
    assert result.stderr.startswith("error: ") and "holds no checkpoint" in result.stderr, result.stderr


# ---- train_imagenet.py: --help, the demo, commands that stop at the GPU or data check ----------------------


def asks_for_gpus(argv):
    """``--num-gpus N`` (N > 0), ``--gpus IDS`` or ``--dtype float16`` (MXNet's AMP, on GPUs only)."""
    def value(flag):
        return argv[argv.index(flag) + 1] if flag in argv else None

    return value("--num-gpus") not in (None, "0") or value("--gpus") is not None or value("--dtype") == "float16"


def check_train(argv, here):
    """``--help``; the bare demo through --help; GPU commands up to the GPU error; CPU ones up to the data's."""
    if argv[2:] == ["--help"]:
        result = here.run(argv)
        assert_exit(result, 0, argv)
        assert result.stdout.startswith("usage: train_imagenet.py")
    elif len(argv) == 2:
        check_demo_settings(argv, here)
    elif asks_for_gpus(argv):
        check_stops_at_the_gpu_check(argv, here.run(argv))
    else:
        check_stops_at_the_batch_size_check(argv, here)


def check_demo_settings(argv, here):
    """The demo trains for minutes: its settings are read from ``--help``, its run is in docs/results.md."""
    result = here.run([*argv, "--help"])
    assert_exit(result, 0, argv)
    defaults = re.search(r"the demo's without: (.*)$", result.stdout, re.M).group(1)
    demo = dict(re.match(r"(\w+)=\S+?/(\S+)$", pair).groups() for pair in defaults.split(", "))
    assert demo == DEMO_SETTINGS


def check_stops_at_the_gpu_check(argv, result):
    assert_exit(result, 2, argv)
    assert result.stdout == ""
    error = lines_of(result.stderr)
    assert len(error) == 1 and error[0].startswith("error: "), result.stderr
    assert "mxnet-cu112" in error[0] or "needs GPUs" in error[0], error[0]


def check_stops_at_the_batch_size_check(argv, here):
    """CPU training whose batch is larger than the tiny set: stops, after every flag was validated, on the data."""
    batch_size = int(argv[argv.index("--batch-size") + 1])
    rec = argv[argv.index("--rec-train") + 1]
    with open(os.path.splitext(rec)[0] + ".lst") as handle:
        num_images = len(handle.readlines())
    assert batch_size > num_images, (f"{shlex.join(argv)} fits the tiny set ({num_images} images): add a kind to "
                                     "KINDS that runs it for real")
    result = here.run(argv)
    assert_exit(result, 2, argv)
    assert lines_of(result.stderr)[-1] == (f"error: {rec} has {num_images} training images, fewer than one batch "
                                           f"of {batch_size} (--batch-size x devices); lower --batch-size")


# ---- checked cheaply: the launcher's ssh commands, the benchmarks ----------------------------------------


def check_help_lists_options(invocation, used, here):
    result = here.run([*invocation, "--help"])
    assert_exit(result, 0, [*invocation, "--help"])
    missing = [option for option in used if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.stdout)]
    assert not missing, f"{shlex.join(invocation)} --help does not list {missing}"


def check_launch(argv, here):
    """Not run (ssh hosts): the launcher's --help lists its options; the worker command is checked as its kind."""
    worker = argv.index("python", 2)
    assert "ssh" in argv[:worker], "a --launcher local command runs here: add a kind that runs it"
    check_help_lists_options(argv[:2], options(argv[2:worker]), here)
    check(argv[worker:], here)


INSTALL_HOROVOD = ["python", "-m", "tools.install_horovod"]
TENSORBOARD = ["python", "-m", "tensorboard.main"]  # through this environment's Python


def check_install_horovod(argv, here):
    """Not run (it builds Horovod, which the test command did before these tests): its --help lists the options."""
    check_help_lists_options(INSTALL_HOROVOD, options(argv[3:]), here)


def check_horovodrun(argv, here):
    """Not run (Horovod is built apart, and the hosts do not exist here): the worker command is checked as its kind;
    where Horovod is installed, horovodrun's --help lists the command's options."""
    worker = argv.index("python") if "python" in argv else len(argv)
    if worker < len(argv):
        check(argv[worker:], here)
    if not os.path.exists(HOROVODRUN):
        pytest.skip("Horovod is not installed here (docs/multi-machine.md, Horovod): its launcher's options are not "
                    "checked")
    check_help_lists_options([HOROVODRUN], options(argv[1:worker]), here)


def benchmark_invocation(argv):
    """``python -m benchmarks.NAME`` or ``python benchmarks/NAME.py``: the pages' spelling, either."""
    return argv[:3] if argv[1] == "-m" else argv[:2]


def check_benchmark(argv, here):
    """Not run (minutes to hours): its --help, in the page's spelling, lists every option the command uses."""
    invocation = benchmark_invocation(argv)
    check_help_lists_options(invocation, options(argv[len(invocation):]), here)


def check_search(argv, here):
    """Not run (a search trains for hours): its --help lists the search's options, and the trainer's flags after
    ``--`` are among train_imagenet.py's."""
    at = argv.index("--")
    check_help_lists_options(argv[:3], options(argv[3:at]), here)
    check_help_lists_options(["python", "train_imagenet.py"], options(argv[at + 1:]), here)


def check_tensorboard(argv, here):
    """Not run (a server until stopped): it reads the folder that --tensorboard writes in a --save-dir, and its
    --help, run through this environment's Python, lists the command's options."""
    logdir = argv[argv.index("--logdir") + 1]
    assert logdir == checkpoint.tensorboard_dir(os.path.dirname(logdir)), f"{logdir} is not where --tensorboard writes"
    check_help_lists_options(TENSORBOARD, options(argv[1:]), here)


# ---- not run ---------------------------------------------------------------------------------------------


def check_extras(argv):
    """``pip install -e '.[EXTRA]'``: EXTRA is one of setup.cfg's extras."""
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    for word in argv:
        extra = re.fullmatch(r"\.\[(\w+)\]", word)
        if extra:
            assert extra.group(1) in config["options.extras_require"], f"setup.cfg has no extra {extra.group(1)}"


def check_module_exists(argv):
    assert os.path.isfile(os.path.join(REPO, *program(argv).split(".")) + ".py"), f"no module {program(argv)}"


# What this machine cannot run, why, and the cheap check made instead (None: nothing to check); by what it runs.
NOT_RUN = {
    "pip": ("installs packages: no network here, and this environment is installed already", check_extras),
    "curl": ("downloads CIFAR-10: no network here; its archive has a stand-in", None),
    "git": ("clones GluonCV's scripts: no network here", None),
    "venv": ("makes the virtual environment that this one already is", None),
    ".": ("activates the virtual environment (a shell built-in)", None),
    "flake8": ("the linter over the whole repository: CI runs it on its own", None),
    "pytest": ("the whole test suite, this module included: CI runs it on its own", None),
    "printf": ("writes the host file of the ssh launch, whose hosts do not exist here", None),
    "for": ("a shell loop of links to CIFAR-10's first 1,000 images a class; its folder has a stand-in", None),
    "cd": ("SLURM's submit directory", None),
    "scontrol": ("SLURM's node list", None),
    "benchmarks.pytorch_reference": ("needs PyTorch, which this environment does not install", check_module_exists),
    "benchmarks.torchvision_pipeline": ("needs torchvision, which this environment does not install",
                                        check_module_exists),
}

# Checked without being run, from the pages' words: ssh hosts, minutes to hours of measuring, or a server.
CHECKED_CHEAPLY = {
    "tools.launch": check_launch,
    "horovodrun": check_horovodrun,
    "tools.install_horovod": check_install_horovod,
    "benchmarks.*": check_benchmark,
    "tools.search": check_search,
    "tensorboard": check_tensorboard,
}

# Run here, on the stand-ins of PATH_STAND_INS: by what the command runs (train_imagenet branches on its flags).
KINDS = {
    "mkdir": check_mkdir,
    "data.cifar10": check_cifar10,
    "data.pack": check_pack,
    "data.clean": check_clean,
    "models": check_models,
    "models.convert": check_convert,
    "models.export_onnx": check_export_onnx,
    "eval_imagenet": check_eval,
    "predict": check_predict,
    "tools.plot_runs": check_plot_runs,
    "tools.convert_checkpoint": check_convert_checkpoint,
    "train_imagenet": check_train,
}


def check(argv, here):
    """Check the pages' words ``argv`` as the tables above say; fail if no table knows what they run."""
    name = program(argv)
    if name in NOT_RUN:
        reason, cheap_check = NOT_RUN[name]
        if cheap_check:
            cheap_check(argv)
        pytest.skip(f"not run here: {reason}")
    placeholders = [word for word in argv if PLACEHOLDER_WORD.search(word)]
    assert not placeholders, f"{shlex.join(argv)} has placeholders {placeholders}: map it in PLACEHOLDERS"
    cheap = next((kind for pattern, kind in CHECKED_CHEAPLY.items() if fnmatch.fnmatchcase(name, pattern)), None)
    if cheap:
        cheap(argv, here)
    elif name in KINDS:
        KINDS[name](here.substitute(argv), here)
    else:
        pytest.fail(f"{shlex.join(argv)}: no kind of command runs {name!r}; add its kind to KINDS (run here), "
                    "CHECKED_CHEAPLY or NOT_RUN (with the reason)")


def planned_runs(argv, here):
    """What checking the pages' words ``argv`` will run, to start it early (a check runs what it needs anyway)."""
    name = program(argv)
    if name in NOT_RUN or any(PLACEHOLDER_WORD.search(word) for word in argv):
        return []
    if name == "tools.launch":
        return [[*argv[:2], "--help"], *planned_runs(argv[argv.index("python", 2):], here)]
    if name.startswith("benchmarks."):
        return [[*benchmark_invocation(argv), "--help"]]
    if name in ("tools.install_horovod", "tensorboard"):
        return [[*(INSTALL_HOROVOD if name == "tools.install_horovod" else TENSORBOARD), "--help"]]
    if name not in KINDS:
        return []
    return [[*argv, "--help"]] if name == "train_imagenet" and len(argv) == 2 else [here.substitute(argv)]


def command_id(command):
    """Where and what."""
    return f"{command.page}:line{command.line}:{' '.join(command.text.split())}"


@pytest.mark.parametrize("command", README_COMMANDS, ids=command_id)
def test_readme_command_runs_as_written(command, started):
    check(list(command.argv), started)


def test_the_readme_shorthand_is_read_as_a_person_reads_it():
    """$DATA expanded, '...' continuing the row above, rows said in words mapped to their commands."""
    warmup = next(command for command in README_COMMANDS if command.text ==
                  "python train_imagenet.py $DATA --config configs/table4-warmup-r50.yaml")
    assert warmup.argv == ("python", "train_imagenet.py", "--rec-train", "~/rec/train.rec", "--rec-val",
                           "~/rec/val.rec", "--num-gpus", "8", "-j", "32", "--config", "configs/table4-warmup-r50.yaml")

    def flags_after(config_file):
        prefix = f"python train_imagenet.py $DATA --config configs/{config_file}"
        return [command.text[len(prefix):] for command in README_COMMANDS if command.text.startswith(prefix)]

    assert flags_after("table6-cosine-r50d.yaml") == [
        "", " --model inceptionv3 --input-size 299 --no-last-gamma", " --model mobilenet1.0 --no-last-gamma"]
    assert flags_after("table3-efficient-r50.yaml") == [
        "", " --model resnet50_v1b", " --model resnet50_v1c", " --model resnet50_v1d"]


def test_every_flag_of_the_trainer_is_on_the_training_page():
    """docs/training.md's table of flags names every flag that train_imagenet.py parses."""
    with open(os.path.join(REPO, "docs", "training.md")) as handle:
        page = handle.read()
    names = [name for action in build_parser()._actions for name in action.option_strings]
    # A switch's --no- form goes with it (--no-wd is a flag of its own, --no-no-wd its negation).
    flags = [name for name in names if name.startswith("--") and name != "--help"
             and not (name.startswith("--no-") and "--" + name[len("--no-"):] in names)]
    missing = [name for name in flags if not re.search(rf"`{re.escape(name)}[` ]", page)]
    assert not missing, f"docs/training.md names no {missing}"


def results_tables():
    """Each table of docs/results.md with its context: the text from the table before it (or its section's heading)
    to the table after it (or the next heading)."""
    with open(os.path.join(REPO, "docs", "results.md")) as handle:
        lines = handle.read().splitlines()
    sections, current = [], []
    for line in lines:
        if line.startswith("## "):
            sections.append(current)
            current = []
        current.append(line)
    sections.append(current)
    found = []
    for section in sections:
        blocks, kinds = [], []
        for line in section:
            kind = line.startswith("|")
            if not blocks or kinds[-1] != kind:
                blocks.append([])
                kinds.append(kind)
            blocks[-1].append(line)
        for index, kind in enumerate(kinds):
            if kind:
                context = [line for i in (index - 1, index + 1) if 0 <= i < len(blocks) for line in blocks[i]]
                found.append((blocks[index][0], "\n".join(context)))
    return found


def test_every_results_table_names_its_command_and_commit():
    """A table of docs/results.md has, between the tables around it, the commit it was measured at and a command."""
    tables = results_tables()
    assert len(tables) >= 7
    for header, context in tables:
        assert re.search(r"\bcommits? [0-9a-f]{7}\b", context), f"docs/results.md: no commit beside {header}"
        assert re.search(r"(`|^)python3? ", context, re.M), f"docs/results.md: no command beside {header}"


def test_no_page_names_a_folder_that_users_do_not_have():
    """Users get the repository alone: no page sends them to the developers' shared folder of data sets."""
    for path in PAGES:
        with open(path) as handle:
            text = handle.read()
        assert "../shared" not in text and "shared/datasets" not in text, os.path.relpath(path, REPO)


def heading_anchor(heading):
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_pages_leads_to_a_page_and_heading():
    for path in PAGES:
        with open(path) as handle:
            text = handle.read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith("http"):
                continue
            page, _, anchor = target.partition("#")
            linked = os.path.normpath(os.path.join(os.path.dirname(path), page)) if page else path
            where = f"{os.path.relpath(path, REPO)}: ({target})"
            assert os.path.exists(linked), f"{where} leads to no file"
            if anchor:
                with open(linked) as handle:
                    in_code, anchors = False, set()
                    for line in handle:
                        in_code ^= line.startswith("```")
                        if line.startswith("#") and not in_code:
                            anchors.add(heading_anchor(line.lstrip("#")))
                assert anchor in anchors, f"{where} leads to no heading"
