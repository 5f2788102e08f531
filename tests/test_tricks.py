"""Each trick against numbers worked out by hand, then every configuration of Tables 4 and 6 end to end."""
import json
import math
import shutil

import mxnet as mx
import numpy as np
import pytest

import train_imagenet
from models import get_model
from tests.conftest import tiny_args
from utils import checkpoint
from utils.distillation import CrossEntropyLoss, DistillationLoss, check_params_fit
from utils.errors import UserError
from utils.label_smoothing import smooth_targets
from utils.lr_schedule import build_lr_scheduler, linear_scaled_lr
from utils.mixup import MixupSchedule, dominant_labels, mix
from utils.weight_decay import apply_no_bias_decay


def _rates(schedule, updates):
    """The rate of each update number (1 = first batch), asked in increasing order as the optimizer does."""
    return [schedule(update) for update in updates]


def test_linear_scaling():
    assert linear_scaled_lr(256) == pytest.approx(0.1)
    assert linear_scaled_lr(1024) == pytest.approx(0.4)
    assert linear_scaled_lr(64, base_lr=0.2, base_batch_size=128) == pytest.approx(0.1)


def test_warmup_then_cosine_per_batch():
    """eta = 0.4, 5 batches an epoch, 2 warmup epochs (m = 10) of 4 (T = 10 batches after warmup)."""
    schedule = build_lr_scheduler("cosine", 0.4, batches_per_epoch=5, num_epochs=4, warmup_epochs=2)
    first, mid_warmup, warmup_end, cosine_mid, last = _rates(schedule, [1, 5, 10, 15, 20])
    assert first == pytest.approx(0.4 * 1 / 10)          # batch i = 1 of m trains at i * eta / m
    assert mid_warmup == pytest.approx(0.4 * 5 / 10)
    assert warmup_end == pytest.approx(0.4)
    assert cosine_mid == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)) * 0.4)   # = 0.2
    assert last == pytest.approx(0.0, abs=1e-12)


def test_warmup_starts_from_warmup_lr():
    schedule = build_lr_scheduler("cosine", 0.4, batches_per_epoch=5, num_epochs=4, warmup_epochs=2, warmup_lr=0.1)
    assert _rates(schedule, [1, 10]) == pytest.approx([0.1 + 0.3 / 10, 0.4])


def test_step_decay_at_epoch_boundaries_counted_from_the_start():
    """eta = 0.1, 5 batches an epoch, decay x0.1 at epochs 2 and 4; warmup of 1 epoch counts in."""
    schedule = build_lr_scheduler("step", 0.1, 5, 6, warmup_epochs=1, decay=0.1, decay_epochs=(2, 4))
    assert _rates(schedule, [1, 5, 6, 10, 11, 20, 21, 30]) == pytest.approx(
        [0.02, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_linear_and_poly_decay_reach_zero():
    linear = build_lr_scheduler("linear", 0.2, 10, 2)
    assert _rates(linear, [10, 20]) == pytest.approx([0.1, 0.0])
    poly = build_lr_scheduler("poly", 0.2, 10, 2)
    assert _rates(poly, [10, 20]) == pytest.approx([0.05, 0.0])


@pytest.mark.parametrize("style, on, off", [("paper", 0.9, 0.1 / 3), ("gluoncv", 0.925, 0.025)])
def test_label_smoothing_both_styles(style, on, off):
    targets = smooth_targets(mx.nd.array([2, 0]), 4, 0.1, style).asnumpy()
    np.testing.assert_allclose(targets, [[off, off, on, off], [on, off, off, off]], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)


def test_label_smoothing_zero_is_one_hot():
    np.testing.assert_array_equal(smooth_targets(mx.nd.array([1]), 3, 0.0).asnumpy(), [[0, 1, 0]])


def test_mixup_with_lambda_one_returns_the_batch():
    images, targets = mx.nd.random.normal(shape=(4, 3, 2, 2)), mx.nd.one_hot(mx.nd.array([0, 1, 2, 1]), 3)
    mixed_images, mixed_targets = mix(images, targets, 1.0)
    np.testing.assert_array_equal(mixed_images.asnumpy(), images.asnumpy())
    np.testing.assert_array_equal(mixed_targets.asnumpy(), targets.asnumpy())


def test_mixup_formula_with_a_fixed_lambda():
    """x_hat = 0.7 x_i + 0.3 x_j with j the mirror of i in the batch: [1, 2, 3] -> [1.6, 2.0, 2.4]."""
    images = mx.nd.array([1, 2, 3]).reshape((3, 1, 1, 1))
    targets = mx.nd.one_hot(mx.nd.array([0, 1, 2]), 3)
    mixed_images, mixed_targets = mix(images, targets, 0.7)
    np.testing.assert_allclose(mixed_images.asnumpy().ravel(), [1.6, 2.0, 2.4], rtol=1e-6)
    np.testing.assert_allclose(mixed_targets.asnumpy(), [[0.7, 0, 0.3], [0, 1, 0], [0.3, 0, 0.7]], rtol=1e-6)
    assert dominant_labels(mx.nd.array([0, 1, 2]), 0.3).asnumpy().tolist() == [2, 1, 0]


def test_mixup_schedule_draws_beta_and_stops_for_the_last_epochs():
    schedule = MixupSchedule(alpha=0.2, num_epochs=10, off_epochs=2, seed=0)
    draws = [schedule.draw(epoch=0) for _ in range(2000)]
    assert all(0 <= lam <= 1 for lam in draws)
    assert np.mean(draws) == pytest.approx(0.5, abs=0.03)          # Beta(a, a) has mean 1/2
    assert np.var(draws) == pytest.approx(1 / (4 * (2 * 0.2 + 1)), abs=0.02)  # and variance 1/(4(2a+1))
    assert schedule.draw(epoch=7) != 1.0 and schedule.draw(epoch=8) == 1.0 == schedule.draw(epoch=9)


def _cross_entropy(targets, logits):
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -(targets * log_probabilities).sum(axis=1)


def test_distillation_hard_weight_one_is_plain_cross_entropy():
    logits, labels = mx.nd.array([[2.0, 0.0, -1.0]]), mx.nd.array([0])
    loss = DistillationLoss(lambda images: mx.nd.array([[0.0, 5.0, 0.0]]), temperature=20, hard_weight=1.0)
    expected = CrossEntropyLoss()(logits, labels, None).asnumpy()
    np.testing.assert_allclose(loss(logits, labels, None).asnumpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(expected, _cross_entropy([[1, 0, 0]], np.array([[2.0, 0.0, -1.0]])), rtol=1e-5)


def test_distillation_hard_weight_zero_is_the_soft_term():
    """z = [2, 0], r = [0, 0], T = 2: soft target [1/2, 1/2]; log_softmax([1, 0]) = [-0.3133, -1.3133]."""
    loss = DistillationLoss(lambda images: mx.nd.array([[0.0, 0.0]]), temperature=2, hard_weight=0.0)
    value = loss(mx.nd.array([[2.0, 0.0]]), mx.nd.array([1]), None).asscalar()
    assert value == pytest.approx(2 ** 2 * 0.5 * (0.31326169 + 1.31326169), rel=1e-5)


def test_distillation_takes_dense_targets_too():
    loss = DistillationLoss(lambda images: mx.nd.array([[1.0, 0.0]]), temperature=1, hard_weight=0.5,
                            sparse_targets=False)
    logits, targets = np.array([[0.5, 0.0]]), np.array([[0.8, 0.2]])
    teacher = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()
    expected = 0.5 * _cross_entropy(targets, logits) + 0.5 * _cross_entropy(teacher[None], logits)
    np.testing.assert_allclose(loss(mx.nd.array(logits), mx.nd.array(targets), None).asnumpy(), expected, rtol=1e-5)


def test_no_wd_decays_exactly_the_conv_and_dense_weights_of_resnet50_d():
    net = get_model("resnet50_v1d", classes=10)
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    decayed = apply_no_bias_decay(net)
    params = net._collect_params_with_prefix()
    # 3 stem convs + 16 blocks x 3 convs + 4 shortcut projections + the classifier = 56 weights.
    assert len(decayed) == 56
    assert decayed == sorted(key for key in params if key.endswith(".weight"))
    assert "fc.weight" in decayed and "conv1.0.weight" in decayed and "layer2.0.downsample.1.weight" in decayed
    for key, param in params.items():
        assert param.wd_mult == (1.0 if key in decayed else 0.0), key


def test_teacher_file_that_does_not_fit_names_the_parameter(tmp_path):
    small = get_model("resnet18_v1d", classes=5)
    small.initialize()
    small(mx.nd.zeros((1, 3, 32, 32)))
    small.save_parameters(str(tmp_path / "small.params"))
    other = get_model("resnet18_v1d", classes=3)
    other.initialize()
    other(mx.nd.zeros((1, 3, 32, 32)))
    with pytest.raises(UserError, match=r"'fc.bias' has shape \(5,\) in the file but \(3,\)"):
        check_params_fit(other, str(tmp_path / "small.params"), "--teacher-params")


@pytest.fixture(scope="module")
def teacher_params(tiny_set, tmp_path_factory):
    """A ResNet-18-B for the tiny set's three classes: a teacher of another architecture than the student."""
    teacher = get_model("resnet18_v1b", classes=3)
    teacher.initialize(mx.init.Xavier())
    teacher(mx.nd.zeros((1, 3, 24, 24)))
    path = tmp_path_factory.mktemp("teacher") / "teacher.params"
    teacher.save_parameters(str(path))
    return str(path)


TABLE_ROWS = {
    # Table 4: efficient training, each trick alone and together.
    "baseline": [],
    "linear-scaling": ["--batch-size", "32", "--lr", None],
    "warmup": ["--warmup-epochs", "1"],
    "zero-gamma": ["--last-gamma"],
    "no-bias-decay": ["--no-wd"],
    "efficient": ["--warmup-epochs", "1", "--last-gamma", "--no-wd", "--batch-size", "32", "--lr", None],
    # Table 6: training refinements on top of the efficient setting.
    "cosine": ["--warmup-epochs", "1", "--last-gamma", "--no-wd", "--lr-mode", "cosine"],
    "label-smoothing": ["--last-gamma", "--no-wd", "--lr-mode", "cosine", "--label-smoothing"],
    "distillation": ["--last-gamma", "--no-wd", "--lr-mode", "cosine", "--label-smoothing", "--teacher",
                     "resnet18_v1b", "--teacher-params", "TEACHER"],
    "mixup": ["--last-gamma", "--no-wd", "--lr-mode", "cosine", "--label-smoothing", "--mixup",
              "--mixup-off-epoch", "1"],
    "distillation-mixup": ["--last-gamma", "--no-wd", "--lr-mode", "cosine", "--label-smoothing", "--mixup",
                           "--teacher", "resnet18_v1b", "--teacher-params", "TEACHER",
                           "--label-smoothing-style", "gluoncv"],
}


def _with_row(argv, row, teacher):
    """``argv`` plus the row's flags; a ``--lr None`` pair drops the explicit rate (linear scaling)."""
    extra = [teacher if flag == "TEACHER" else flag for flag in row]
    if "--lr" in extra:
        position = argv.index("--lr")
        argv = argv[:position] + argv[position + 2:]
        extra = [flag for flag in extra if flag not in ("--lr", None)]
    return argv + extra


@pytest.mark.parametrize("row", sorted(TABLE_ROWS))
def test_every_table_configuration_trains(row, tiny_set, teacher_params, tmp_path):
    argv = _with_row(tiny_args(tiny_set, tmp_path, "--log-interval", "2"), TABLE_ROWS[row], teacher_params)
    assert train_imagenet.main(argv) == 0
    with open(checkpoint.metrics_path(str(tmp_path))) as handle:
        metrics = [json.loads(line) for line in handle]
    assert len(metrics) == 2 and all(np.isfinite(m["train_loss"]) for m in metrics)


def test_metrics_show_warmup_then_cosine(tiny_set, tmp_path):
    """End-of-epoch rates of a 4-epoch run with 2 warmup epochs: eta/2, eta, eta/2, 0."""
    argv = tiny_args(tiny_set, tmp_path, "--warmup-epochs", "2", "--lr-mode", "cosine", "--num-epochs", "4",
                     "--lr", "0.08")
    assert train_imagenet.main(argv) == 0
    with open(checkpoint.metrics_path(str(tmp_path))) as handle:
        rates = [json.loads(line)["lr"] for line in handle]
    assert rates == pytest.approx([0.04, 0.08, 0.04, 0.0], abs=1e-9)


def test_bad_trick_flags_are_one_line(tiny_set, tmp_path, capsys):
    for extra, message in ((["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
                           (["--teacher-params", "t.params"], "--teacher-params needs --teacher"),
                           (["--teacher", "resnet18_v1b", "--teacher-params", "nowhere.params"], "does not exist"),
                           (["--warmup-epochs", "2"], "leaves no epoch after warmup"),
                           (["--mixup", "--mixup-alpha", "0"], "--mixup-alpha must be positive")):
        assert train_imagenet.main(tiny_args(tiny_set, tmp_path, *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_teacher_that_does_not_fit_fails_at_start(tiny_set, teacher_params, tmp_path, capsys):
    argv = tiny_args(tiny_set, tmp_path, "--teacher", "resnet34_v1b", "--teacher-params", teacher_params)
    assert train_imagenet.main(argv) == 2
    assert "does not fit the network" in capsys.readouterr().err


def test_teacher_from_a_deployable_export(tiny_set, tmp_path):
    teacher = get_model("resnet18_v1b", classes=3)
    teacher.initialize(mx.init.Xavier())
    teacher.hybridize()
    teacher(mx.nd.zeros((1, 3, 24, 24)))
    teacher.export(str(tmp_path / "teacher"), epoch=0)
    argv = tiny_args(tiny_set, tmp_path / "run", "--num-epochs", "1", "--teacher",
                     str(tmp_path / "teacher-symbol.json"), "--teacher-params", str(tmp_path / "teacher-0000.params"))
    assert train_imagenet.main(argv) == 0


def test_teacher_from_the_local_gluoncv_cache(tiny_set, teacher_params, tmp_path, monkeypatch, capsys):
    """Without --teacher-params the teacher's weights come from $MXNET_HOME/models, never from the network."""
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet"))
    argv = tiny_args(tiny_set, tmp_path / "run", "--num-epochs", "1", "--teacher", "resnet18_v1b")
    assert train_imagenet.main(argv) == 2
    assert "gluoncv.model_zoo.get_model('resnet18_v1b', pretrained=True)" in capsys.readouterr().err
    (tmp_path / "mxnet" / "models").mkdir(parents=True)
    shutil.copy(teacher_params, tmp_path / "mxnet" / "models" / "resnet18_v1b-0123abcd.params")
    assert train_imagenet.main(argv) == 0


@pytest.mark.parametrize("student, teacher, input_size, extra", [
    ("mobilenetv2_0.25", "mobilenet0.25", 24, ["--last-gamma"]),
    ("inceptionv3", "resnet18_v1d", 75, []),
])
def test_tricks_work_on_the_other_networks(student, teacher, input_size, extra, tiny_set, tmp_path):
    """Zero gamma where there are residual blocks, no bias decay and distillation across families."""
    teacher_net = get_model(teacher, classes=3)
    teacher_net.initialize(mx.init.Xavier())
    teacher_net(mx.nd.zeros((1, 3, input_size, input_size)))
    teacher_net.save_parameters(str(tmp_path / "teacher.params"))
    argv = tiny_args(tiny_set, tmp_path / "run", "--model", student, "--input-size", str(input_size),
                     "--num-epochs", "1", "--no-wd", "--label-smoothing", "--mixup", "--teacher", teacher,
                     "--teacher-params", str(tmp_path / "teacher.params"), *extra)
    assert train_imagenet.main(argv) == 0
