"""What a run prints: MXNet Module.fit's epoch lines for MXNet's log parsers, and a progress bar only for a person."""
import io
import re
import sys

import mxnet as mx
import pytest

import train_imagenet
from engine.config import parse_config
from engine.loop import shows_progress_bar, train_one_epoch
from engine.recipe import build_data, build_recipe
from tests.conftest import tiny_args
from utils import checkpoint

# Each line after the log's "%(asctime)s " prefix.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (.*)$")
# MXNet's tools/parse_log.py and the plotting scripts of its image-classification examples read these.
MXNET_PARSERS = dict(train=re.compile(r".*Epoch\[(\d+)\] .*Train-accuracy.*=([.\d]+)"),
                     val=re.compile(r".*Epoch\[(\d+)\] Validation-accuracy.*=([.\d]+)"),
                     time=re.compile(r".*Epoch\[(\d+)\] .*Time cost.*=([.\d]+)"))


def test_each_epoch_logs_module_fit_s_lines(tiny_set, tmp_path):
    save_dir = tmp_path / "run"
    assert train_imagenet.main(tiny_args(tiny_set, save_dir)) == 0
    with open(save_dir / "train.log") as handle:
        messages = [LOG_LINE.match(line).group(1) for line in handle.read().splitlines() if LOG_LINE.match(line)]
    metrics = checkpoint.read_metrics(str(save_dir))
    expected = []
    for m in metrics:
        # The format strings of mxnet/module/base_module.py's fit, with its metrics' names.
        expected += ["Epoch[%d] Train-%s=%f" % (m["epoch"], "accuracy", m["train_top1"]),
                     "Epoch[%d] Time cost=%.3f" % (m["epoch"], m["epoch_seconds"]),
                     "Epoch[%d] Validation-%s=%f" % (m["epoch"], "accuracy", m["val_top1"]),
                     "Epoch[%d] Validation-%s=%f" % (m["epoch"], "top_k_accuracy_5", m["val_top5"])]
    assert [message for message in messages if re.match(r"Epoch\[\d+\] (Train-|Time cost|Validation-)", message)] \
        == expected
    # Those parsers find each epoch's figure once in the whole log, our own lines included.
    parsed = {name: [parser.match(message).groups() for message in messages if parser.match(message)]
              for name, parser in MXNET_PARSERS.items()}
    assert parsed == dict(train=[(str(m["epoch"]), "%f" % m["train_top1"]) for m in metrics],
                          val=[(str(m["epoch"]), "%f" % m["val_top1"]) for m in metrics],
                          time=[(str(m["epoch"]), "%.3f" % m["epoch_seconds"]) for m in metrics])
    assert [m["epoch"] for m in metrics] == [0, 1]


class Terminal(io.StringIO):
    """A standard error that says it is a terminal, as under ``ssh -tt``."""

    def isatty(self):
        return True


LAUNCHED = dict(DMLC_ROLE="worker", DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT="9091", DMLC_NUM_SERVER="1",
                DMLC_NUM_WORKER="2")


@pytest.mark.parametrize("launched, terminal, shown", [(False, True, True), (True, True, False),
                                                       (False, False, False)])
def test_the_progress_bar_is_for_a_person_at_a_terminal_never_under_a_launcher(launched, terminal, shown, monkeypatch):
    for name in LAUNCHED:
        monkeypatch.delenv(name, raising=False)
    if launched:
        for name, value in LAUNCHED.items():
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stderr", Terminal() if terminal else io.StringIO())
    assert shows_progress_bar() is shown


@pytest.mark.parametrize("launched", [False, True])
def test_an_epoch_draws_the_bar_only_outside_a_launched_job(launched, tiny_set, monkeypatch):
    for name in LAUNCHED:
        monkeypatch.delenv(name, raising=False)
    if launched:
        monkeypatch.setenv("DMLC_ROLE", "worker")
    config = parse_config(tiny_args(tiny_set, "unused"))
    contexts = [mx.cpu()]
    data = build_data(config, contexts)
    recipe = build_recipe(config, data, contexts)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    train_one_epoch(0, recipe, data, contexts, config)
    assert ("batch/s" in terminal.getvalue()) is not launched, terminal.getvalue()
