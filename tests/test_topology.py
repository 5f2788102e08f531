"""Every trick trains the same on one device, two devices, two dist_sync workers and two Horovod ranks, and visibly
changes training.

Stochastic depth is not a row: each device draws its own masks (docs/multi-machine.md, One recipe on every
topology).

Each row of ``ROWS`` trains ``train_imagenet.py`` for 2 epochs of 3 steps on the fixed batches of
``tests/topology_run.py`` (the same global batch of 8 images of 24x24 everywhere, BatchNorm with fixed statistics,
a narrow ResNet-18-D in float64; see there why) on four topologies: one CPU context with batch 8; two CPU contexts
of 4 through the ``device`` kvstore; two ``dist_sync`` workers of 4 and one server on 127.0.0.1
(``tools/launch.py``); and, for the rows of ``HOROVOD_ROWS``, two Horovod ranks of 4 on 127.0.0.1 (``horovodrun``,
over Gloo; skipped where Horovod is not installed). The saved weights, the optimizer's states (rank 0's, in its
last checkpoint) and the logged rates must agree within the topology's ``TOLERANCE``; and each row must move the
weights away from the row it adds a flag to by more than ``EFFECT``, on every topology, so that a flag ignored on
any one of them fails. ``test_a_recipe_that_differs_on_one_topology_fails_the_comparison`` shows how small a
difference of the recipe the comparison still sees.
"""
import json
import os
import shutil
import sys

import mxnet as mx
import numpy as np
import pytest

import engine.recipe
import train_imagenet
from tests import topology_run
from tests.conftest import tiny_args
from tests.launch_job import HOROVODRUN, Job, horovod_launch_args, local_launch_args, needs_horovod
from utils import checkpoint

# Largest absolute difference allowed between a topology and one device, in float64. Two devices and Horovod's
# ranks differ from one device only in the order of float64 sums: at most 1.3e-14 (a weight of the AdamW row) on
# every CPU tried (AVX-512, and oneDNN held to AVX2 and SSE4.1; OpenBLAS's kernels for Haswell and SkylakeX),
# 1e-10 leaves a factor of 7,000. MXNet's ps-lite servers keep and sum every key in float32 whatever the workers
# send (the initial weights, then each step's gradients), so dist_sync workers train on gradients rounded to
# float32: 1.7e-8 apart after the 6 steps with NAG, 2.7e-7 with LAMB, 5.4e-6 with AdamW, whose update divides
# small gradients by their own size; 1e-4 leaves a factor of 18. The rounding is of float64 values that every CPU
# computes alike, so these figures are the same on every CPU (see the note above).
TOLERANCE = {"2 devices": 1e-10, "2 dist_sync workers": 1e-4, "2 horovod ranks": 1e-10}
# A flag must move some weight by at least this much, 10 times what the topologies may differ by (the smallest
# effect, --label-smoothing-style gluoncv against the paper's at 4 classes, moves a weight by 7.9e-3).
EFFECT = 1e-3
TEACHER = "resnet18_v1b"

# name: (flags, the row whose flags these extend)
ROWS = {
    "baseline": ([], None),
    "--wd 0.05": (["--wd", "0.05"], "baseline"),
    "--no-wd": (["--wd", "0.05", "--no-wd"], "--wd 0.05"),
    "--momentum 0.5": (["--momentum", "0.5"], "baseline"),
    "--last-gamma": (["--last-gamma"], "baseline"),
    "--warmup-epochs 1 --lr-mode cosine": (["--warmup-epochs", "1", "--lr-mode", "cosine"], "baseline"),
    "--label-smoothing (paper)": (["--label-smoothing", "0.1"], "baseline"),
    "--label-smoothing (gluoncv)": (["--label-smoothing", "0.1", "--label-smoothing-style", "gluoncv"],
                                    "--label-smoothing (paper)"),
    "--mixup": (["--mixup", "--mixup-alpha", "1.0"], "baseline"),
    "--teacher": (["--teacher", TEACHER, "--temperature", "2"], "baseline"),
    "--cutmix 1.0": (["--cutmix", "1.0"], "baseline"),
    "--reprob 0.5": (["--reprob", "0.5"], "baseline"),
    "--model-ema": (["--model-ema", "--model-ema-decay", "0.9"], "baseline"),
    # Adam-type updates move every weight by about the rate a step, whatever its gradient: at NAG's rate the network,
    # whose BatchNorm does not normalize here, diverges.
    "--optimizer lamb": (["--optimizer", "lamb", "--lr-base", "0.02", "--wd", "0.05"], "--wd 0.05"),
    "--optimizer lamb --no-wd": (["--optimizer", "lamb", "--lr-base", "0.02", "--wd", "0.05", "--no-wd"],
                                 "--optimizer lamb"),
    # Decoupled decay moves a weight by about lr x wd a step: --wd 2 makes --no-wd's absence visible in 6 steps.
    "--optimizer adamw": (["--optimizer", "adamw", "--lr-base", "0.005", "--wd", "2"], "baseline"),
    "--optimizer adamw --no-wd": (["--optimizer", "adamw", "--lr-base", "0.005", "--wd", "2", "--no-wd"],
                                  "--optimizer adamw"),
    "--bce-loss": (["--bce-loss"], "baseline"),
}
TOPOLOGIES = {
    "1 device": ["--batch-size", "8"],
    "2 devices": ["--batch-size", "4", "--num-cpu-contexts", "2"],
    "2 dist_sync workers": ["--batch-size", "4", "--kvstore", "dist_sync"],
}
# Horovod is built apart from the project (docs/multi-machine.md, "Horovod"): its topology has tests of its own,
# which skip where it is not installed.
HOROVOD_RANKS = "2 horovod ranks"
# The rows that exercise what Horovod does otherwise than dist_sync: the gradient's averaging (baseline), and the
# optimizer on every rank with its per-parameter decay and its states (--wd, --no-wd, AdamW). The other rows'
# tricks act on a rank's batch as on a dist_sync worker's, which their rows check; CI's time budget keeps them out
# (all 18 pass on the ranks).
HOROVOD_ROWS = ["baseline", "--wd 0.05", "--no-wd", "--optimizer adamw"]
TOPOLOGY_FLAGS = {**TOPOLOGIES, HOROVOD_RANKS: ["--batch-size", "4", "--kvstore", "horovod"]}
# --save-frequency 0: only the last epoch's checkpoint, the one compared.
COMMON = ["--num-epochs", "2", "--lr-base-size", "8", "--save-frequency", "0", "--seed", "3"]


@pytest.fixture(scope="module")
def teacher_params(tmp_path_factory):
    teacher = topology_run.get_model_with_global_statistics(TEACHER, classes=topology_run.NUM_CLASSES)
    mx.random.seed(5)
    teacher.initialize(mx.init.Xavier())
    teacher(mx.nd.zeros((1, 3, 24, 24), dtype=topology_run.DTYPE))
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.params")
    teacher.save_parameters(path)
    return path


def _argv(tiny_set, save_dir, row, topology, teacher_params, extra=()):
    argv = tiny_args(tiny_set, save_dir, *COMMON, *ROWS[row][0], *TOPOLOGY_FLAGS[topology], *extra)
    # The rate comes from linear scaling of the global batch: 0.1 x 8 / --lr-base-size 8.
    argv.remove("--lr")
    argv.remove("0.02")
    return argv + (["--teacher-params", teacher_params] if "--teacher" in ROWS[row][0] else [])


def _train(argv, topology, monkeypatch):
    if topology.startswith("2 dist_sync"):
        job = Job(local_launch_args(num_workers=2, num_servers=1),
                  [sys.executable, "-m", "tests.topology_run", *argv])
        code, output = job.wait(timeout=180)
        assert code == 0 and job.leftovers() == [], output
    elif topology == HOROVOD_RANKS:
        job = Job(horovod_launch_args(), [sys.executable, "-m", "tests.topology_run", *argv], launcher=HOROVODRUN)
        code, output = job.wait(timeout=180)
        assert code == 0 and job.leftovers() == [], output
    else:
        with monkeypatch.context() as patch:
            patch.setattr(train_imagenet, "build_data", topology_run.fixed_batches)
            patch.setattr(engine.recipe, "get_model", topology_run.get_model_with_global_statistics)
            assert train_imagenet.main(argv) == 0


def _outcome(save_dir):
    """The saved weights (and the weights' average, with --model-ema), the last checkpoint's optimizer states
    (None where they live on the servers) and the rates."""
    weights = {key: value.asnumpy() for key, value in
               mx.nd.load(checkpoint.params_path(save_dir, "resnet18_v1d", 1)).items()}
    average = checkpoint.ema_params_path(save_dir, "resnet18_v1d", 1)
    if os.path.exists(average):
        weights.update({f"average {key}": value.asnumpy() for key, value in mx.nd.load(average).items()})
    states = os.path.join(checkpoint.checkpoints_dir(save_dir), "epoch-0001", checkpoint.OPTIMIZER_ARRAYS)
    # Each parameter's optimizer state by its index (NAG's momentum) and position (LAMB's and AdamW's moments).
    momenta = {name: array.asnumpy() for name, array in mx.nd.load(states).items()} if os.path.exists(states) \
        else None
    with open(checkpoint.metrics_path(save_dir)) as handle:
        rates = [json.loads(line)["lr"] for line in handle]
    return weights, momenta, rates


def _what_it_saves(weights):
    """The weights a row is for: the average's with --model-ema (its network trains as the reference's)."""
    average = {key.removeprefix("average "): value for key, value in weights.items() if key.startswith("average ")}
    return average or weights


def _largest_difference(first, second):
    assert first.keys() == second.keys()
    return max(float(np.abs(first[key] - second[key]).max()) for key in first)


class Outcomes:
    """Each (row, topology) trained once, when a test first asks for it; a key (row, topology, flags) trains the
    row with more flags."""

    def __init__(self, tiny_set, teacher_params, tmp_path_factory):
        self.tiny_set, self.teacher_params, self.tmp_path_factory = tiny_set, teacher_params, tmp_path_factory
        self.monkeypatch = pytest.MonkeyPatch()
        self.results = {}

    def __getitem__(self, key):
        if key not in self.results:
            row, topology, *extra = key
            save_dir = str(self.tmp_path_factory.mktemp("topology"))
            _train(_argv(self.tiny_set, save_dir, row, topology, self.teacher_params, *extra), topology,
                   self.monkeypatch)
            self.results[key] = _outcome(save_dir)
            shutil.rmtree(save_dir)  # about 70 runs, each with its checkpoint and export
        return self.results[key]


@pytest.fixture(scope="module")
def outcomes(tiny_set, teacher_params, tmp_path_factory):
    return Outcomes(tiny_set, teacher_params, tmp_path_factory)


@pytest.mark.parametrize("row", ROWS)
def test_a_trick_trains_the_same_on_every_topology(row, outcomes):
    weights, momenta, rates = outcomes[row, "1 device"]
    differences = {}
    for topology in list(TOPOLOGIES)[1:]:
        other_weights, other_momenta, other_rates = outcomes[row, topology]
        differences[topology] = _largest_difference(other_weights, weights)
        if other_momenta is not None:
            differences[f"{topology}, momenta"] = _largest_difference(other_momenta, momenta)
        assert other_rates == pytest.approx(rates), topology
    print(f"\n{row}: largest difference to 1 device: " +
          ", ".join(f"{name} {value:.2g}" for name, value in differences.items()))
    assert all(value < TOLERANCE[name.split(",")[0]] for name, value in differences.items()), differences
    assert all(outcomes[row, topology][1] for topology in TOPOLOGIES)  # every worker keeps its optimizer's states


@pytest.mark.parametrize("row", [row for row, (_, reference) in ROWS.items() if reference])
def test_a_trick_changes_training_on_every_topology(row, outcomes):
    reference = ROWS[row][1]
    for topology in TOPOLOGIES:
        moved = _largest_difference(_what_it_saves(outcomes[row, topology][0]),
                                    _what_it_saves(outcomes[reference, topology][0]))
        print(f"\n{row} vs {reference} on {topology}: largest weight change {moved:.3g}")
        assert moved > EFFECT, (topology, moved)


@pytest.mark.parametrize("row", HOROVOD_ROWS)
def test_a_trick_trains_the_same_on_horovod_ranks_and_changes_training_there(row, outcomes):
    """Two Horovod ranks against one device: the weights, the optimizer's states (every rank keeps its own, rank
    0's are saved) and the rates agree; and the row's flag moves the weights there as on the other topologies."""
    needs_horovod()
    weights, momenta, rates = outcomes[row, "1 device"]
    ranks_weights, ranks_momenta, ranks_rates = outcomes[row, HOROVOD_RANKS]
    differences = {"weights": _largest_difference(ranks_weights, weights),
                   "momenta": _largest_difference(ranks_momenta, momenta)}
    print(f"\n{row}: largest difference of {HOROVOD_RANKS} to 1 device: " +
          ", ".join(f"{name} {value:.2g}" for name, value in differences.items()))
    assert ranks_rates == pytest.approx(rates)
    assert max(differences.values()) < TOLERANCE[HOROVOD_RANKS], differences
    reference = ROWS[row][1]
    if reference:
        assert reference in HOROVOD_ROWS
        moved = _largest_difference(_what_it_saves(ranks_weights),
                                    _what_it_saves(outcomes[reference, HOROVOD_RANKS][0]))
        print(f"{row} vs {reference} on {HOROVOD_RANKS}: largest weight change {moved:.3g}")
        assert moved > EFFECT, moved


# A recipe that differs on one topology by a little: the rate 1e-6 higher on two devices, 1% higher on dist_sync
# workers (the rate is 0.1 by linear scaling: --lr-base 0.1 for --lr-base-size 8 images, the global batch).
BROKEN_RECIPES = {"2 devices": ["--lr-base", "0.1000001"], "2 dist_sync workers": ["--lr-base", "0.101"]}


@pytest.mark.parametrize("topology", BROKEN_RECIPES)
def test_a_recipe_that_differs_on_one_topology_fails_the_comparison(topology, outcomes):
    """The baseline row with its rate a little off on one topology differs from one device by more than twice the
    topology's tolerance: the comparison sees a recipe that is not the same, and not only a flag that is ignored."""
    weights = outcomes["baseline", "1 device"][0]
    broken = outcomes["baseline", topology, tuple(BROKEN_RECIPES[topology])][0]
    difference = _largest_difference(broken, weights)
    print(f"\nbaseline with {' '.join(BROKEN_RECIPES[topology])} on {topology}: largest difference to 1 device "
          f"{difference:.2g}, tolerance {TOLERANCE[topology]:.2g}")
    assert difference > 2 * TOLERANCE[topology]
