"""Each trick against numbers worked out by hand, then every configuration of Tables 4 and 6 end to end."""
import dataclasses
import json
import math
import shutil

import mxnet as mx
import numpy as np
import pytest

import train_imagenet
from engine.config import parse_config
from engine.recipe import build_batch_transform, build_data, build_recipe
from models import get_model
from models.params import load_params
from tests.conftest import ONE_EPOCH, tiny_args
from tests.helpers import RunRecorder, parameter_values, randomize_parameters, weight_decays
from utils import checkpoint
from utils.batch_transform import BatchTransform
from utils.devices import build_contexts
from utils.distillation import CrossEntropyLoss, DistillationLoss
from utils.errors import UserError
from utils.label_smoothing import smooth_targets
from utils.lr_schedule import build_lr_scheduler, linear_scaled_lr
from utils.mixup import MixDraw, MixSchedule, dominant_labels, mix
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


@pytest.mark.numeric
@pytest.mark.parametrize("style, on, off", [("paper", 0.9, 0.1 / 3), ("gluoncv", 0.925, 0.025)])
def test_label_smoothing_both_styles(style, on, off):
    targets = smooth_targets(mx.nd.array([2, 0]), 4, 0.1, style).asnumpy()
    np.testing.assert_allclose(targets, [[off, off, on, off], [on, off, off, off]], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.numeric
def test_label_smoothing_zero_is_one_hot():
    np.testing.assert_array_equal(smooth_targets(mx.nd.array([1]), 3, 0.0).asnumpy(), [[0, 1, 0]])


@pytest.mark.numeric
def test_mixup_with_lambda_one_returns_the_batch():
    images, targets = mx.nd.random.normal(shape=(4, 3, 2, 2)), mx.nd.one_hot(mx.nd.array([0, 1, 2, 1]), 3)
    mixed_images, mixed_targets = mix(images, targets, 1.0)
    np.testing.assert_array_equal(mixed_images.asnumpy(), images.asnumpy())
    np.testing.assert_array_equal(mixed_targets.asnumpy(), targets.asnumpy())


@pytest.mark.numeric
def test_mixup_formula_with_a_fixed_lambda():
    """x_hat = 0.7 x_i + 0.3 x_j with j the mirror of i in the batch: [1, 2, 3] -> [1.6, 2.0, 2.4]."""
    images = mx.nd.array([1, 2, 3]).reshape((3, 1, 1, 1))
    targets = mx.nd.one_hot(mx.nd.array([0, 1, 2]), 3)
    mixed_images, mixed_targets = mix(images, targets, 0.7)
    np.testing.assert_allclose(mixed_images.asnumpy().ravel(), [1.6, 2.0, 2.4], rtol=1e-6)
    np.testing.assert_allclose(mixed_targets.asnumpy(), [[0.7, 0, 0.3], [0, 1, 0], [0.3, 0, 0.7]], rtol=1e-6)
    assert dominant_labels(mx.nd.array([0, 1, 2]), 0.3).asnumpy().tolist() == [2, 1, 0]


@pytest.mark.numeric
def test_mixup_schedule_draws_beta_and_stops_for_the_last_epochs():
    schedule = MixSchedule(mixup_alpha=0.2, cutmix_alpha=0.0, num_epochs=10, off_epochs=2, seed=0)
    draws = [schedule.draw(0, (24, 24)).lam for _ in range(2000)]
    assert all(0 <= lam <= 1 for lam in draws)
    assert np.mean(draws) == pytest.approx(0.5, abs=0.03)          # Beta(a, a) has mean 1/2
    assert np.var(draws) == pytest.approx(1 / (4 * (2 * 0.2 + 1)), abs=0.02)  # and variance 1/(4(2a+1))
    assert schedule.draw(7, (24, 24)).lam != 1.0 and schedule.draw(8, (24, 24)) == MixDraw("none") == schedule.draw(
        9, (24, 24))


class _FixedLambda:
    """A mixup schedule that always draws ``lam``."""

    def __init__(self, lam):
        self.lam = lam

    def draw(self, epoch, image_size):
        return MixDraw("mixup", self.lam)


def _arrays(*rows):
    return [mx.nd.array(row) for row in rows]


@pytest.mark.numeric
def test_batch_transform_without_tricks_passes_the_batch_through():
    images, labels = _arrays(np.full((2, 1, 1, 1), 10.0)), _arrays([0, 2])
    same_images, targets, metric_labels = BatchTransform(3)(images, labels, 0)
    assert same_images is images and targets is labels and metric_labels is labels


@pytest.mark.parametrize("lam, mixed_images, mixed_targets, dominant", [
    # 0.7 * 10 + 0.3 * 20 = 13; 0.7 * [0.9, 0.05, 0.05] + 0.3 * [0.05, 0.05, 0.9] = [0.645, 0.05, 0.305].
    (0.7, [13, 17], [[0.645, 0.05, 0.305], [0.305, 0.05, 0.645]], [0, 2]),
    # lam = 0.3: each image is mostly its partner, whose label the training accuracy counts.
    (0.3, [17, 13], [[0.305, 0.05, 0.645], [0.645, 0.05, 0.305]], [2, 0]),
    # lam = 1 (an epoch after --mixup-off-epoch): smoothed targets, images as they are.
    (1.0, [10, 20], [[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]], [0, 2]),
])
@pytest.mark.numeric
def test_batch_transform_smooths_then_mixes_worked_by_hand(lam, mixed_images, mixed_targets, dominant):
    """3 classes, labels [0, 2], eps 0.1 paper style (0.9 and 0.05), images 10 and 20."""
    transform = BatchTransform(3, 0.1, "paper", mix_schedule=_FixedLambda(lam))
    images, targets, metric_labels = transform(_arrays([[[[10.0]]], [[[20.0]]]]), _arrays([0, 2]), epoch=0)
    np.testing.assert_allclose(images[0].asnumpy().ravel(), mixed_images, rtol=1e-6)
    np.testing.assert_allclose(targets[0].asnumpy(), mixed_targets, rtol=1e-6)
    assert metric_labels[0].asnumpy().tolist() == dominant


@pytest.mark.numeric
def test_batch_transform_mixes_one_hot_targets_within_each_device_slice():
    """Without smoothing the targets are one-hot; each device's slice pairs its own first and last image."""
    images = _arrays([[[[10.0]]], [[[20.0]]]], [[[[30.0]]], [[[40.0]]]])
    images, targets, _ = BatchTransform(3, mix_schedule=_FixedLambda(0.7))(images, _arrays([0, 2], [1, 1]), epoch=0)
    assert [x.asnumpy().ravel().tolist() for x in images] == [pytest.approx([13, 17]), pytest.approx([33, 37])]
    np.testing.assert_allclose(targets[0].asnumpy(), [[0.7, 0, 0.3], [0.3, 0, 0.7]], rtol=1e-6)
    np.testing.assert_allclose(targets[1].asnumpy(), [[0, 1, 0], [0, 1, 0]], rtol=1e-6)


def _config(argv):
    return parse_config(argv)


def test_optimizer_flags_reach_the_optimizer(tiny_set):
    """Values other than the defaults, so that a flag the trainer ignored would show."""
    config = _config(tiny_args(tiny_set, "unused", "--momentum", "0.8", "--wd", "3e-4", "--no-wd",
                               "--warmup-epochs", "1", "--warmup-lr", "0.01", "--lr-decay", "0.5"))
    contexts = build_contexts()
    recipe = build_recipe(config, build_data(config, contexts), contexts)
    optimizer = recipe.trainer.optimizer
    assert type(optimizer) is mx.optimizer.NAG and (optimizer.momentum, optimizer.wd) == (0.8, 3e-4)
    decays = weight_decays(recipe.trainer, recipe.net)
    assert (decays["fc.weight"], decays["layer1.0.conv1.weight"]) == (3e-4, 3e-4)
    assert (decays["fc.bias"], decays["bn1.gamma"], decays["bn1.beta"]) == (0.0, 0.0, 0.0)
    # 6 batches an epoch: warmup from 0.01 to 0.02 over epoch 0, then halved from epoch 1 (--lr-decay-epoch 1).
    schedule = recipe.trainer.optimizer.lr_scheduler
    assert [schedule(update) for update in range(1, 13)] == pytest.approx(
        [0.01 + 0.01 * i / 6 for i in range(1, 7)] + [0.01] * 6)


def test_poly_power_reaches_the_schedule(tiny_set):
    """12 updates (2 epochs of 6 batches) at rate 0.02: (1 - t/12)^power, halfway 0.01 at power 1, 0.005 at 2."""
    for power, halfway in (("1", 0.01), ("2", 0.005)):
        config = _config(tiny_args(tiny_set, "unused", "--lr-mode", "poly", "--poly-power", power))
        contexts = build_contexts()
        schedule = build_recipe(config, build_data(config, contexts), contexts).trainer.optimizer.lr_scheduler
        assert schedule(6) == pytest.approx(halfway)


@pytest.mark.numeric
def test_smoothing_and_mixup_values_reach_the_batch_transform(tiny_set):
    config = _config(tiny_args(tiny_set, "unused", "--label-smoothing", "0.3", "--label-smoothing-style", "gluoncv",
                               "--mixup", "--mixup-alpha", "1", "--mixup-off-epoch", "1"))
    transform = build_batch_transform(config, 3)
    images, labels = _arrays([[[[0.0]]], [[[1.0]]]]), _arrays([0, 2])
    # Epoch 1 of 2 is after --mixup-off-epoch 1: gluoncv's 1 - 0.3 + 0.3 / 3 = 0.8 and 0.3 / 3 = 0.1, unmixed.
    same_images, targets, _ = transform(images, labels, 1)
    assert same_images is images
    np.testing.assert_allclose(targets[0].asnumpy(), [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]], rtol=1e-6)
    # Epoch 0 mixes: the first image becomes lam * 0 + (1 - lam) * 1. Beta(1, 1) is uniform, of variance
    # 1/12 = 0.083; the default alpha 0.2 would give 1 / (4 * 1.4) = 0.179.
    lams = [1 - transform(images, labels, 0)[0][0][0].asscalar() for _ in range(1000)]
    assert np.mean(lams) == pytest.approx(0.5, abs=0.03) and np.var(lams) == pytest.approx(1 / 12, abs=0.015)


def _log_softmax(logits):
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _softmax(logits):
    return np.exp(_log_softmax(logits))


def _cross_entropy(targets, logits):
    return -(np.asarray(targets) * _log_softmax(logits)).sum(axis=1)


def _entropy(logits):
    """The entropy of softmax(logits), row by row."""
    return _cross_entropy(_softmax(logits), logits)


@pytest.mark.numeric
def test_distillation_hard_weight_one_is_plain_cross_entropy():
    logits, labels = mx.nd.array([[2.0, 0.0, -1.0]]), mx.nd.array([0])
    loss = DistillationLoss(lambda images: mx.nd.array([[0.0, 5.0, 0.0]]), temperature=20, hard_weight=1.0)
    expected = CrossEntropyLoss()(logits, labels, None).asnumpy()
    np.testing.assert_allclose(loss(logits, labels, None).asnumpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(expected, _cross_entropy([[1, 0, 0]], np.array([[2.0, 0.0, -1.0]])), rtol=1e-5)


@pytest.mark.numeric
def test_distillation_hard_weight_zero_is_the_soft_term():
    """z = [2, 0], r = [0, 0], T = 2: soft target q = [1/2, 1/2]; log_softmax([1, 0]) = [-0.3132617, -1.3132617].

    KL(q || s) = sum_i q_i (log q_i - log s_i) = 1/2 (-0.6931472 + 0.3132617) + 1/2 (-0.6931472 + 1.3132617) =
    0.1201145, the cross-entropy 1/2 (0.3132617 + 1.3132617) = 0.8132617 less the entropy of q, log 2; times T^2 = 4:
    0.4804580. MXNet's softmax (oneDNN's) is 1.9e-6 off in log_softmax([1, 0]) when oneDNN uses AVX2 or AVX-512, 4e-7
    with SSE4.1 or AVX, and T^2 multiplies that: the loss came out 1.7e-6 and 4.0e-6 off; 2e-5 holds on either.
    """
    loss = DistillationLoss(lambda images: mx.nd.array([[0.0, 0.0]]), temperature=2, hard_weight=0.0)
    value = loss(mx.nd.array([[2.0, 0.0]]), mx.nd.array([1]), None).asscalar()
    assert 2 ** 2 * (0.5 * (0.3132617 + 1.3132617) - math.log(2)) == pytest.approx(0.4804580, abs=1e-7)
    assert value == pytest.approx(0.4804580, abs=2e-5)


@pytest.mark.numeric
def test_distillation_takes_dense_targets_too():
    """T = 1, r = [1, 0]: q = softmax([1, 0]) = [0.7311, 0.2689], whose entropy 0.5822 the soft term leaves out."""
    loss = DistillationLoss(lambda images: mx.nd.array([[1.0, 0.0]]), temperature=1, hard_weight=0.5,
                            sparse_targets=False)
    logits, targets = np.array([[0.5, 0.0]]), np.array([[0.8, 0.2]])
    teacher = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()
    soft = _cross_entropy(teacher[None], logits) - _entropy(np.array([[1.0, 0.0]]))
    assert _entropy(np.array([[1.0, 0.0]]))[0] == pytest.approx(0.58220, abs=1e-5)
    expected = 0.5 * _cross_entropy(targets, logits) + 0.5 * soft
    np.testing.assert_allclose(loss(mx.nd.array(logits), mx.nd.array(targets), None).asnumpy(), expected, rtol=1e-5)


@pytest.mark.numeric
def test_distillation_soft_term_is_zero_where_the_student_matches_the_teacher():
    teacher_logits = mx.nd.array([[3.0, -1.0, 0.5, 8.0], [0.0, 0.0, 0.0, 0.0]])
    loss = DistillationLoss(lambda images: teacher_logits, temperature=20, hard_weight=0.0)
    assert loss(teacher_logits.copy(), mx.nd.array([0, 1]), None).asnumpy().tolist() == [0.0, 0.0]


@pytest.mark.numeric
def test_distillation_gives_the_gradient_of_the_papers_cross_entropy_form():
    """The logged KL form and the paper's cross-entropy form differ by the soft targets' entropy, a constant for
    the student: the same gradient with respect to its logits, to float32 rounding, at T = 20 and T = 1."""
    rng = np.random.RandomState(0)
    student, teacher_logits = rng.normal(size=(2, 4, 10)) * 3
    labels = mx.nd.array(rng.randint(0, 10, size=4))
    for temperature in (20.0, 1.0):
        loss = DistillationLoss(lambda images: mx.nd.array(teacher_logits), temperature=temperature, hard_weight=0.5)
        soft_targets = mx.nd.softmax(mx.nd.array(teacher_logits) / temperature)
        cross_entropy = mx.gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)

        def papers_form(logits):
            return 0.5 * CrossEntropyLoss()(logits, labels, None) + 0.5 * temperature ** 2 * cross_entropy(
                logits / temperature, soft_targets)
        gradients, values = [], []
        for loss_fn in (loss, lambda logits, *_: papers_form(logits)):
            logits = mx.nd.array(student)
            logits.attach_grad()
            with mx.autograd.record():
                value = loss_fn(logits, labels, None)
            value.backward()
            gradients.append(logits.grad.asnumpy())
            values.append(value.asnumpy())
        np.testing.assert_allclose(gradients[0], gradients[1], rtol=1e-4, atol=1e-6)
        # The values differ by (1 - w) T^2 H(q), per example.
        entropy = _entropy(teacher_logits / temperature)
        np.testing.assert_allclose(values[1] - values[0], 0.5 * temperature ** 2 * entropy, rtol=1e-4)


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
    # The first parameter in the network's order that differs: the classifier's weight, then its bias.
    with pytest.raises(UserError, match=r"'fc.weight' has shape \(5, 512\) in the file but \(3, 512\)"):
        load_params(str(tmp_path / "small.params"), other, label="--teacher-params")


@pytest.fixture(scope="module")
def teacher_params(tiny_set, tmp_path_factory):
    """A ResNet-18-B for the tiny set's three classes: a teacher of another architecture than the student."""
    teacher = get_model("resnet18_v1b", classes=3)
    teacher.initialize(mx.init.Xavier())
    teacher(mx.nd.zeros((1, 3, 24, 24)))
    path = tmp_path_factory.mktemp("teacher") / "teacher.params"
    teacher.save_parameters(str(path))
    return str(path)


# The tiny set has 96 training images: 6 batches an epoch at 16 images, 3 at 32 (--lr-decay-epoch 1 in tiny_args).
def _step(eta, batches):
    """Two epochs at eta, the second divided by 10."""
    return [eta] * batches + [eta / 10] * batches


def _warmup_step(eta, batches):
    """Section 3.1's warmup through epoch 0 (batch i of m at i * eta / m), then the step at epoch 1."""
    return [eta * i / batches for i in range(1, batches + 1)] + [eta / 10] * batches


def _cosine(eta, batches):
    """Section 5.1 over two epochs: eta_t = (1 + cos(pi * t / T)) * eta / 2, T = 2 epochs of batches."""
    return [(1 + math.cos(math.pi * t / (2 * batches))) * eta / 2 for t in range(1, 2 * batches + 1)]


def _warmup_cosine(eta, batches):
    """Warmup through epoch 0, then cosine over the batches of epoch 1 (t and T counted after warmup)."""
    return ([eta * i / batches for i in range(1, batches + 1)]
            + [(1 + math.cos(math.pi * t / batches)) * eta / 2 for t in range(1, batches + 1)])


# Label smoothing's targets for 3 classes at eps = 0.1: (true class, each other class).
PAPER_SMOOTHING = (0.9, 0.05)                # 1 - eps and eps / (K - 1)
GLUONCV_SMOOTHING = (0.9 + 0.1 / 3, 0.1 / 3)  # 1 - eps + eps / K and eps / K
# Zero gamma on ResNet-18-D: the second BatchNorm of each of the 2 blocks of the 4 stages.
RESNET18_LAST_GAMMAS = frozenset(f"layer{stage}.{block}.bn2.gamma" for stage in range(1, 5) for block in (0, 1))


@dataclasses.dataclass(frozen=True)
class Row:
    """A paper row's flags and what they must change in the run, worked out by hand."""

    flags: list
    rates: list                     # the learning rate of each update, in order
    zero_gammas: frozenset = frozenset()
    no_wd: bool = False
    smoothing: tuple = None         # (true class, other class) target values; None: integer labels
    mixed_epochs: tuple = ()        # epochs trained on mixed pairs
    teacher: bool = False


E = ["--last-gamma", "--no-wd"]  # Table 6's rows start from the efficient setting
TABLE_ROWS = {
    # Table 4: efficient training, each trick alone and together.
    "baseline": Row([], _step(0.02, 6)),
    "linear-scaling": Row(["--batch-size", "32", "--lr", None], _step(0.1 * 32 / 256, 3)),
    "warmup": Row(["--warmup-epochs", "1"], _warmup_step(0.02, 6)),
    "zero-gamma": Row(["--last-gamma"], _step(0.02, 6), RESNET18_LAST_GAMMAS),
    "no-bias-decay": Row(["--no-wd"], _step(0.02, 6), no_wd=True),
    "efficient": Row(["--warmup-epochs", "1", *E, "--batch-size", "32", "--lr", None], _warmup_step(0.0125, 3),
                     RESNET18_LAST_GAMMAS, no_wd=True),
    # Table 6: training refinements on top of the efficient setting.
    "cosine": Row(["--warmup-epochs", "1", *E, "--lr-mode", "cosine"], _warmup_cosine(0.02, 6),
                  RESNET18_LAST_GAMMAS, no_wd=True),
    "label-smoothing": Row([*E, "--lr-mode", "cosine", "--label-smoothing"], _cosine(0.02, 6),
                           RESNET18_LAST_GAMMAS, no_wd=True, smoothing=PAPER_SMOOTHING),
    "distillation": Row([*E, "--lr-mode", "cosine", "--label-smoothing", "--teacher", "resnet18_v1b",
                         "--teacher-params", "TEACHER"], _cosine(0.02, 6), RESNET18_LAST_GAMMAS, no_wd=True,
                        smoothing=PAPER_SMOOTHING, teacher=True),
    "mixup": Row([*E, "--lr-mode", "cosine", "--label-smoothing", "--mixup", "--mixup-off-epoch", "1"],
                 _cosine(0.02, 6), RESNET18_LAST_GAMMAS, no_wd=True, smoothing=PAPER_SMOOTHING, mixed_epochs=(0,)),
    "distillation-mixup": Row([*E, "--lr-mode", "cosine", "--label-smoothing", "--mixup", "--teacher",
                               "resnet18_v1b", "--teacher-params", "TEACHER", "--label-smoothing-style", "gluoncv"],
                              _cosine(0.02, 6), RESNET18_LAST_GAMMAS, no_wd=True, smoothing=GLUONCV_SMOOTHING,
                              mixed_epochs=(0, 1), teacher=True),
}


def _with_row(argv, row, teacher):
    """``argv`` plus the row's flags; a ``--lr None`` pair drops the explicit rate (linear scaling)."""
    extra = [teacher if flag == "TEACHER" else flag for flag in row]
    if "--lr" in extra:
        position = argv.index("--lr")
        argv = argv[:position] + argv[position + 2:]
        extra = [flag for flag in extra if flag not in ("--lr", None)]
    return argv + extra


def _loaded(name, params_file, input_size):
    """Network ``name`` with the weights of ``params_file``: a reference, run in inference mode."""
    net = get_model(name, classes=3)
    net.initialize()
    net(mx.nd.zeros((1, 3, input_size, input_size)))
    net.load_parameters(params_file)
    return net


def _target_rows(labels, smoothing):
    """Integer labels as they are, or the dense rows of label smoothing's (true class, other class) values."""
    if smoothing is None:
        return labels
    on, off = smoothing
    return np.where(np.eye(3)[labels.astype(int)] == 1, on, off)


def _mixing_weight(images, mixed):
    """The lam of ``mixed = lam * images + (1 - lam) * images[::-1]``, by least squares."""
    difference = (images - images[::-1]).astype(np.float64)
    return float(((mixed - images[::-1]) * difference).sum() / (difference * difference).sum())


def _distillation_loss(hard, outputs, teacher_logits, temperature=20.0, hard_weight=0.5):
    """``w * hard + (1 - w) * T^2 * KL(softmax(r / T) || softmax(z / T))``, worked in float64: the cross-entropy of
    the soft targets less their entropy."""
    soft = (_cross_entropy(_softmax(teacher_logits / temperature), outputs / temperature)
            - _entropy(teacher_logits / temperature))
    return hard_weight * hard + (1 - hard_weight) * temperature ** 2 * soft


def _assert_tricks_took_effect(recorder, metrics, row, teacher=None):
    """The run of ``recorder`` (with its ``metrics.jsonl`` records) did what ``row`` says; ``teacher`` is the
    network the run must have distilled from, as a reference run in inference mode."""
    trainable = {key for key in recorder.at_first_step if not key.endswith(("running_mean", "running_var"))}
    # Zero gamma: exactly the last BatchNorm of each residual block starts at 0, every other at 1.
    gammas = {key: value for key, value in recorder.at_first_step.items() if key.endswith("gamma")}
    assert {key for key, value in gammas.items() if not value.any()} == row.zero_gammas
    assert all((value == 1).all() for key, value in gammas.items() if key not in row.zero_gammas)
    # The optimizer: Nesterov momentum 0.9, and --wd 1e-4 on each parameter but, with --no-wd, the biases and
    # BatchNorm's gamma and beta (all that is not a conv or dense weight).
    optimizer = recorder.trainer.optimizer
    assert type(optimizer) is mx.optimizer.NAG and (optimizer.momentum, optimizer.wd) == (0.9, 1e-4)
    assert weight_decays(recorder.trainer, recorder.net) == {
        key: 0.0 if row.no_wd and not key.endswith(".weight") else 1e-4 for key in trainable}
    # The learning rate of every update, and as metrics.jsonl logs it at the end of each epoch.
    assert [recorder.schedule(update) for update in range(1, len(row.rates) + 1)] == pytest.approx(row.rates,
                                                                                                   abs=1e-12)
    per_epoch = len(row.rates) // len(metrics)
    assert len(recorder.batches) == len(row.rates)
    assert [record["lr"] for record in metrics] == pytest.approx(row.rates[per_epoch - 1::per_epoch], abs=1e-12)
    # Every step: the images and targets the loss got, and the loss it returned, computed here by hand.
    for epoch, images, labels, call in recorder.steps():
        targets = _target_rows(labels, row.smoothing)
        if epoch in row.mixed_epochs:
            assert not np.array_equal(call["inputs"], images)
            lam = _mixing_weight(images, call["inputs"])
            np.testing.assert_allclose(call["inputs"], lam * images + (1 - lam) * images[::-1], atol=1e-4)
            targets = lam * targets + (1 - lam) * targets[::-1]
        else:
            np.testing.assert_array_equal(call["inputs"], images)
        np.testing.assert_allclose(call["targets"], targets, rtol=1e-5, atol=1e-6)
        one_hot = (1.0, 0.0)  # integer labels are the dense rows of no smoothing
        dense = call["targets"] if row.smoothing is not None else _target_rows(call["targets"], one_hot)
        hard = _cross_entropy(dense, call["outputs"])
        expected = hard if teacher is None else _distillation_loss(
            hard, call["outputs"], teacher(mx.nd.array(call["inputs"])).asnumpy())
        # The soft term multiplies the float32 rounding of the teacher's logits, run here on another batch than in
        # training, by (1 - w) T^2 = 200: an absolute 1e-5 of the divergence is 2e-3 of the loss.
        np.testing.assert_allclose(call["loss"], expected, rtol=1e-4, atol=1e-5 if teacher is None else 2e-3)
    for epoch, record in enumerate(metrics):
        losses = np.concatenate([call["loss"] for step_epoch, _, _, call in recorder.steps() if step_epoch == epoch])
        assert record["train_loss"] == pytest.approx(losses.mean(), rel=1e-5)
    # The teacher's weights and running statistics are frozen: no gradient, the values it was built with.
    if teacher is None:
        assert recorder.teacher is None
    else:
        params = recorder.teacher.collect_params()
        assert all(param.grad_req == "null" for param in params.values())
        for name, value in recorder.teacher_at_start.items():
            np.testing.assert_array_equal(params[name].data().asnumpy(), value, err_msg=name)


@pytest.mark.numeric
@pytest.mark.parametrize("row", sorted(TABLE_ROWS))
def test_every_table_row_trains_with_its_tricks_in_effect(row, tiny_set, teacher_params, tmp_path, monkeypatch):
    recorder = RunRecorder(monkeypatch)
    argv = _with_row(tiny_args(tiny_set, tmp_path, "--log-interval", "2"), TABLE_ROWS[row].flags, teacher_params)
    assert train_imagenet.main(argv) == 0
    teacher = _loaded("resnet18_v1b", teacher_params, 24) if TABLE_ROWS[row].teacher else None
    _assert_tricks_took_effect(recorder, checkpoint.read_metrics(str(tmp_path)), TABLE_ROWS[row], teacher)


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


def _exported_values(params_file):
    """Parameter name -> value of an export's -0000.params, whose names carry an arg: or aux: tag."""
    return {name.split(":", 1)[1]: value.asnumpy() for name, value in mx.nd.load(params_file).items()}


@pytest.mark.numeric
def test_teacher_from_a_deployable_export_is_frozen_in_inference_mode_and_used(tiny_set, tmp_path, monkeypatch):
    teacher = get_model("resnet18_v1b", classes=3)
    teacher.initialize()
    teacher(mx.nd.zeros((1, 3, 24, 24)))
    # Running statistics far from any batch's own: BatchNorm in training mode would give other outputs.
    randomize_parameters(teacher, seed=0)
    teacher.hybridize()
    teacher(mx.nd.zeros((1, 3, 24, 24)))
    teacher.export(str(tmp_path / "teacher"), epoch=0)
    recorder = RunRecorder(monkeypatch)
    argv = tiny_args(tiny_set, tmp_path / "run", *ONE_EPOCH, "--teacher",
                     str(tmp_path / "teacher-symbol.json"), "--teacher-params", str(tmp_path / "teacher-0000.params"),
                     "--temperature", "4", "--hard-weight", "0.25")
    assert train_imagenet.main(argv) == 0

    # Frozen: no gradient, and after the epoch's 6 steps every weight and running statistic is the file's.
    params = recorder.teacher.collect_params()
    assert all(param.grad_req == "null" for param in params.values())
    exported = _exported_values(str(tmp_path / "teacher-0000.params"))
    assert sorted(params.keys()) == sorted(exported)
    for name, param in params.items():
        np.testing.assert_array_equal(param.data().asnumpy(), exported[name], err_msg=name)
    # Called as in a training step, it gives the exported network's outputs in inference mode: the first
    # image's soft targets do not depend on the other images of its batch.
    images = mx.nd.array(recorder.steps()[0][3]["inputs"])
    with mx.autograd.record():
        soft_targets = recorder.loss_fn.soft_targets(images)[0].asnumpy()
        first_alone = recorder.loss_fn.soft_targets(images[:1])[0].asnumpy()
    np.testing.assert_allclose(soft_targets, np.exp(_log_softmax(teacher(images).asnumpy() / 4)), atol=1e-6)
    np.testing.assert_allclose(first_alone, soft_targets[:1], atol=1e-6)
    # Every step's loss is the distillation loss at T = 4, w = 0.25 with that teacher, not the cross-entropy.
    for _, _, labels, call in recorder.steps():
        hard = _cross_entropy(np.eye(3)[labels.astype(int)], call["outputs"])
        expected = _distillation_loss(hard, call["outputs"], teacher(mx.nd.array(call["inputs"])).asnumpy(),
                                      temperature=4, hard_weight=0.25)
        # (1 - w) T^2 = 12 times the float32 rounding of the teacher's logits, run here on another batch.
        np.testing.assert_allclose(call["loss"], expected, rtol=1e-4, atol=1e-3)
        assert np.abs(call["loss"] - hard).max() > 0.1  # (the two may cross on an image: 0.25 hard + 12 KL)


@pytest.mark.numeric
def test_teacher_from_the_local_gluoncv_cache(tiny_set, teacher_params, tmp_path, monkeypatch, capsys):
    """Without --teacher-params the teacher's weights come from $MXNET_HOME/models, never from the network."""
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet"))
    argv = tiny_args(tiny_set, tmp_path / "run", *ONE_EPOCH, "--teacher", "resnet18_v1b")
    assert train_imagenet.main(argv) == 2
    assert "gluoncv.model_zoo.get_model('resnet18_v1b', pretrained=True)" in capsys.readouterr().err
    (tmp_path / "mxnet" / "models").mkdir(parents=True)
    shutil.copy(teacher_params, tmp_path / "mxnet" / "models" / "resnet18_v1b-0123abcd.params")
    recorder = RunRecorder(monkeypatch)
    assert train_imagenet.main(argv) == 0
    cached = {name: value.asnumpy() for name, value in mx.nd.load(teacher_params).items()}
    distilled_from = parameter_values(recorder.teacher)
    assert sorted(distilled_from) == sorted(cached)
    for name, value in cached.items():
        np.testing.assert_array_equal(distilled_from[name], value, err_msg=name)


# MobileNet v2's residual blocks: every repeat after the first of a stage (Sandler et al. 2018, Table 2:
# 0 + 1 + 2 + 3 + 2 + 2 + 0), at these positions of its features; zero gamma starts their last BatchNorm at 0.
MOBILENETV2_LAST_GAMMAS = frozenset(f"features.{index}.out.7.gamma" for index in (5, 7, 8, 10, 11, 12, 14, 15, 17, 18))


@pytest.mark.parametrize("student, teacher, input_size, extra, zero_gammas", [
    ("mobilenetv2_0.25", "mobilenet0.25", 24, ["--last-gamma"], MOBILENETV2_LAST_GAMMAS),
    ("inceptionv3", "resnet18_v1d", 75, [], frozenset()),
], ids=["mobilenetv2", "inceptionv3"])
@pytest.mark.numeric
def test_tricks_take_effect_on_the_other_networks(student, teacher, input_size, extra, zero_gammas, tiny_set,
                                                  tmp_path, monkeypatch):
    """Zero gamma where there are residual blocks, no bias decay, smoothed and mixed targets, and distillation
    from a teacher of another family, frozen."""
    teacher_net = get_model(teacher, classes=3)
    teacher_net.initialize(mx.init.Xavier())
    teacher_net(mx.nd.zeros((1, 3, input_size, input_size)))
    teacher_net.save_parameters(str(tmp_path / "teacher.params"))
    recorder = RunRecorder(monkeypatch)
    argv = tiny_args(tiny_set, tmp_path / "run", "--model", student, "--input-size", str(input_size),
                     *ONE_EPOCH, "--no-wd", "--label-smoothing", "--mixup", "--teacher", teacher,
                     "--teacher-params", str(tmp_path / "teacher.params"), *extra)
    assert train_imagenet.main(argv) == 0
    # One epoch of 6 batches, at the rate given (ONE_EPOCH: no decay step).
    row = Row(argv, [0.02] * 6, zero_gammas, no_wd=True, smoothing=PAPER_SMOOTHING, mixed_epochs=(0,), teacher=True)
    _assert_tricks_took_effect(recorder, checkpoint.read_metrics(str(tmp_path / "run")), row, teacher_net)
