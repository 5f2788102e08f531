"""Beyond the paper, on the batch: CutMix and random erasing against numbers worked out by hand, their draws'
frequencies and bounds for a fixed seed, erasing's independence from how the global batch is split, and both
end to end through ``train_imagenet.main``."""
import collections

import mxnet as mx
import numpy as np
import pytest

import train_imagenet
from engine.config import parse_config
from engine.recipe import build_batch_transform
from tests.conftest import ONE_EPOCH, tiny_args
from tests.helpers import RunRecorder
from utils.batch_transform import BatchTransform
from utils.cutmix import clipped_box, cutmix
from utils.mixup import MixDraw, MixSchedule
from utils.random_erasing import RandomErasing, draw_rectangle

pytestmark = pytest.mark.numeric


@pytest.mark.parametrize("lam, centre, box, corrected", [
    # sqrt(1 - 0.64) = 0.6: sides int(10 x 0.6) = 6, 3 either way of the centre. Centred, all 36 pixels fit.
    (0.64, (5, 5), (2, 8, 2, 8), 0.64),
    # Near the top right corner rows -2..4 and columns 5..11 are clipped to 0..4 and 5..10: 4 x 5 = 20 pixels,
    # so the targets weigh the image's own 1 - 20 / 100 = 0.8.
    (0.64, (1, 8), (0, 4, 5, 10), 0.8),
    # sqrt(1 - 0.75) = 0.5: side 5 is odd, 5 // 2 = 2 either way gives 4 x 4 = 16 pixels, lam 0.84 (as timm).
    (0.75, (5, 5), (3, 7, 3, 7), 0.84),
    # sqrt(1 - 0.36) = 0.8: sides 8, 64 pixels: the pasted image dominates.
    (0.36, (5, 5), (1, 9, 1, 9), 0.36),
])
def test_cutmix_box_and_corrected_lambda_worked_by_hand(lam, centre, box, corrected):
    actual_box, actual_lam = clipped_box((10, 10), lam, centre)
    assert actual_box == box and actual_lam == pytest.approx(corrected, abs=1e-12)


def _two_images():
    """Image A holds 0..99 row by row, image B 100..199: a pasted pixel shows whose it is."""
    return mx.nd.array(np.arange(200, dtype=np.float32).reshape((2, 1, 10, 10)))


def test_cutmix_pastes_the_mirrors_box_and_mixes_the_targets_by_its_area():
    """The clipped box above, rows 0..3 and columns 5..9, lam 0.8; labels [0, 2] of 3 classes, one-hot."""
    images = _two_images()
    pasted, targets = cutmix(images, mx.nd.one_hot(mx.nd.array([0, 2]), 3), (0, 4, 5, 10), 0.8)
    expected = images.asnumpy().copy()
    expected[0, 0, 0:4, 5:10] += 100   # A's box now holds B's pixels
    expected[1, 0, 0:4, 5:10] -= 100   # and B's box A's
    np.testing.assert_array_equal(pasted.asnumpy(), expected)
    assert pasted.asnumpy()[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 105, 106, 107, 108, 109]
    np.testing.assert_allclose(targets.asnumpy(), [[0.8, 0, 0.2], [0.2, 0, 0.8]], rtol=1e-6)
    np.testing.assert_array_equal(images.asnumpy(), np.arange(200).reshape((2, 1, 10, 10)))  # the input is untouched


class _FixedDraw:
    """A mixing schedule that draws ``draw`` for every batch."""

    def __init__(self, draw):
        self.draw_of_every_batch = draw

    def draw(self, epoch, image_size):
        return self.draw_of_every_batch


@pytest.mark.parametrize("draw, targets, dominant", [
    # Smoothed first (paper style, eps 0.1: 0.9 and 0.05), then 0.8 x own + 0.2 x mirror's:
    # 0.8 x 0.9 + 0.2 x 0.05 = 0.73, 0.05, 0.8 x 0.05 + 0.2 x 0.9 = 0.22.
    (MixDraw("cutmix", 0.8, (0, 4, 5, 10)), [[0.73, 0.05, 0.22], [0.22, 0.05, 0.73]], [0, 2]),
    # lam 0.36: 0.36 x 0.9 + 0.64 x 0.05 = 0.356, 0.36 x 0.05 + 0.64 x 0.9 = 0.594; the mirror's label dominates.
    (MixDraw("cutmix", 0.36, (1, 9, 1, 9)), [[0.356, 0.05, 0.594], [0.594, 0.05, 0.356]], [2, 0]),
])
def test_batch_transform_smooths_then_cuts_and_counts_the_dominant_label(draw, targets, dominant):
    transform = BatchTransform(3, 0.1, "paper", mix_schedule=_FixedDraw(draw))
    images, actual_targets, metric_labels = transform([_two_images()], [mx.nd.array([0, 2])], epoch=0)
    top, bottom, left, right = draw.box
    expected = _two_images().asnumpy()
    expected[:, :, top:bottom, left:right] = expected[::-1, :, top:bottom, left:right]
    np.testing.assert_array_equal(images[0].asnumpy(), expected)
    np.testing.assert_allclose(actual_targets[0].asnumpy(), targets, rtol=1e-6)
    assert metric_labels[0].asnumpy().tolist() == dominant


def _schedule(**kwargs):
    settings = dict(mixup_alpha=0.2, cutmix_alpha=1.0, num_epochs=10, off_epochs=2, mix_prob=0.8, switch_prob=0.25,
                    seed=0)
    return MixSchedule(**{**settings, **kwargs})


def test_schedule_mixes_with_mix_prob_and_switches_to_cutmix_with_switch_prob():
    """4000 batches: unmixed 1 - 0.8 = 20%, CutMix 0.8 x 0.25 = 20%, mixup 0.8 x 0.75 = 60% (one standard
    deviation of a share is at most 0.8 points); the counts are those of seed 0."""
    schedule = _schedule()
    draws = [schedule.draw(0, (24, 24)) for _ in range(4000)]
    counts = collections.Counter(draw.mode for draw in draws)
    assert counts == {"none": 793, "cutmix": 810, "mixup": 2397}
    assert [counts[mode] / 4000 for mode in ("none", "cutmix", "mixup")] == pytest.approx([0.2, 0.2, 0.6], abs=0.02)
    for draw in draws:
        if draw.mode == "cutmix":
            top, bottom, left, right = draw.box
            assert 0 <= top <= bottom <= 24 and 0 <= left <= right <= 24
            assert draw.lam == pytest.approx(1 - (bottom - top) * (right - left) / 576, abs=1e-12)
        else:
            # Beta(0.2, 0.2) puts much weight near 0 and 1: in float64 it may draw 1.0 itself, as unmixed.
            assert draw.box is None and 0 <= draw.lam <= 1 and (draw.lam == 1.0 or draw.mode == "mixup")
    # Mixup's lambda is Beta(0.2, 0.2), of variance 1 / (4 x 1.4) = 0.179; CutMix's Beta(1, 1) has 1 / 12.
    assert np.var([draw.lam for draw in draws if draw.mode == "mixup"]) == pytest.approx(0.179, abs=0.01)


def test_schedule_off_epochs_draw_nothing_and_certain_choices_draw_nothing():
    schedule = _schedule()
    state = schedule.get_state()
    # --mixup-off-epoch 2 of 10: epochs 8 and 9 are unmixed, for CutMix too, and leave the generator as it was.
    assert {schedule.draw(epoch, (24, 24)) for epoch in (8, 9) for _ in range(100)} == {MixDraw("none")}
    assert all(np.array_equal(now, before) for now, before in zip(schedule.get_state(), state))
    # CutMix alone: every batch is CutMix. Mixup alone with --mixup-prob 1 draws one Beta(0.2, 0.2) a batch,
    # the very lambdas of the schedule before CutMix existed.
    assert {_schedule(mixup_alpha=0.0, mix_prob=1.0).draw(0, (24, 24)).mode for _ in range(100)} == {"cutmix"}
    mixup = _schedule(cutmix_alpha=0.0, mix_prob=1.0, seed=7)
    beta = np.random.RandomState(7)
    assert [mixup.draw(0, (24, 24)).lam for _ in range(20)] == [beta.beta(0.2, 0.2) for _ in range(20)]
    # --mixup-prob 0 never mixes.
    assert {_schedule(mix_prob=0.0).draw(0, (24, 24)).mode for _ in range(100)} == {"none"}


def test_schedule_state_restores_the_same_draws():
    schedule = _schedule()
    for _ in range(5):
        schedule.draw(0, (24, 24))
    state = schedule.get_state()
    ahead = [schedule.draw(0, (24, 24)) for _ in range(20)]
    restored = _schedule()
    restored.set_state(state)
    assert [restored.draw(0, (24, 24)) for _ in range(20)] == ahead
    assert len({draw.mode for draw in ahead}) == 3  # the 20 draws hold every mode


def test_erasing_rectangles_keep_their_area_and_aspect_bounds():
    """20000 rectangles in 224 x 224 from seed 0: area 2% to 33% of the image and aspect 0.3 to 3.3, up to the
    rounding of the sides to pixels; log-aspect centred on 0; every corner position reached, none outside."""
    generator = np.random.default_rng(0)
    rectangles = np.array([draw_rectangle((224, 224), generator) for _ in range(20000)])
    top, left, height, width = rectangles.T
    areas, aspects = height * width / 224 ** 2, height / width
    assert areas.min() == pytest.approx(0.02, abs=0.001) and areas.max() == pytest.approx(0.33, abs=0.003)
    assert areas.mean() == pytest.approx((0.02 + 0.33) / 2, abs=0.002)   # uniform in area
    assert aspects.min() == pytest.approx(0.3, abs=0.01) and aspects.max() == pytest.approx(3.3, abs=0.07)
    assert np.log(aspects).mean() == pytest.approx(0, abs=0.02)           # log-uniform, log 0.3 ~ -log 3.3
    assert (top + height).max() == 224 and (left + width).max() == 224 and top.min() == 0 == left.min()


def test_erasing_leaves_an_image_whole_when_no_rectangle_fits():
    assert draw_rectangle((1, 1), np.random.default_rng(0)) is None
    images = mx.nd.ones((2, 3, 1, 1))
    assert RandomErasing(1.0, "const", seed=0)(images, 0, 0, 0) is images


def _erased_rectangles(before, after):
    """Per image, the rectangle ``(top, bottom, left, right)`` bounding the pixels ``after`` changed, or None;
    asserts that nothing changed outside it."""
    rectangles = []
    for original, erased in zip(before, after):
        changed = (original != erased).any(axis=0)
        if not changed.any():
            rectangles.append(None)
            continue
        rows, columns = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
        outside = np.ones(changed.shape, bool)
        outside[top:bottom, left:right] = False
        np.testing.assert_array_equal(erased[:, outside], original[:, outside])
        rectangles.append((top, bottom, left, right))
    return rectangles


@pytest.mark.parametrize("mode", ["const", "pixel"])
def test_erasing_fills_one_rectangle_with_zeros_or_standard_normal_noise(mode):
    images = mx.nd.full((64, 3, 32, 32), 5.0)
    erased = RandomErasing(1.0, mode, seed=0)(images, 0, 0, 0).asnumpy()
    assert (images.asnumpy() == 5).all()  # the input is untouched
    fills = []
    for image, rectangle in zip(erased, _erased_rectangles(np.full((64, 3, 32, 32), 5.0), erased)):
        top, bottom, left, right = rectangle   # probability 1: every image has one
        fills.append(image[:, top:bottom, left:right].ravel())
        assert 0.015 <= (bottom - top) * (right - left) / 32 ** 2 <= 0.35
    fills = np.concatenate(fills)
    if mode == "const":
        assert (fills == 0).all()
    else:
        assert fills.size > 30000 and abs(fills.mean()) < 0.02 and fills.std() == pytest.approx(1, abs=0.02)


def test_erasing_probability_is_per_image():
    """--reprob 0.25 over 2000 images: 25% erased (one standard deviation of the share is 1 point)."""
    images = mx.nd.full((2000, 1, 8, 8), 5.0)
    erased = RandomErasing(0.25, "const", seed=0)(images, 0, 0, 0).asnumpy()
    assert ((erased == 0).any(axis=(1, 2, 3)).mean()) == pytest.approx(0.25, abs=0.03)


def test_erasing_is_the_same_however_the_global_batch_is_split():
    """The global batch of 16 on one device; as two slices of 8 (two devices) or as the second worker's 8 in two
    slices of 4: the same rectangles and the same noise, image by image."""
    images = mx.nd.array(np.random.RandomState(0).normal(size=(16, 3, 16, 16)))
    erasing = RandomErasing(0.5, "pixel", seed=3)
    whole = erasing(images, 2, 5, 0).asnumpy()
    halves = [erasing(images[:8], 2, 5, 0), erasing(images[8:], 2, 5, 8)]
    np.testing.assert_array_equal(np.concatenate([half.asnumpy() for half in halves]), whole)
    second_worker = BatchTransform(3, erasing=erasing, first_index=8)
    erased, _, _ = second_worker([images[8:12], images[12:16]], [mx.nd.zeros(4)] * 2, 2, 5)
    np.testing.assert_array_equal(np.concatenate([part.asnumpy() for part in erased]), whole[8:])
    # Seed 3 erases 11 of the 16 at probability 0.5: both kinds of image are in the comparison.
    assert sum(rectangle is not None for rectangle in _erased_rectangles(images.asnumpy(), whole)) == 11
    # Another batch, epoch or seed erases other rectangles.
    for other in (erasing(images, 2, 6, 0), erasing(images, 3, 5, 0), RandomErasing(0.5, "pixel", 4)(images, 2, 5, 0)):
        assert not np.array_equal(other.asnumpy(), whole)


def _erased_then_mixed(draw):
    """Image A (all 10) and B (all 100) of 10 x 10 through erasing (--reprob 1, zeros, seed 0) and ``draw``."""
    images = mx.nd.array(np.array([10.0, 100.0], np.float32).reshape((2, 1, 1, 1)) * np.ones((2, 1, 10, 10)))
    erasing = RandomErasing(1.0, "const", seed=0)
    # Seed 0's rectangles of batch 0, epoch 0: A rows 0..1 x columns 0..5, B rows 3..5 x columns 1..7.
    assert _erased_rectangles(images.asnumpy(), erasing(images, 0, 0, 0).asnumpy()) == [(0, 2, 0, 6), (3, 6, 1, 8)]
    transform = BatchTransform(3, mix_schedule=_FixedDraw(draw), erasing=erasing)
    mixed, _, _ = transform([images], [mx.nd.array([0, 2])], epoch=0, batch=0)
    return mixed[0].asnumpy()[:, 0]


def test_batch_transform_erases_each_image_before_mixup():
    """As timm and torchvision, which erase in the loader, before mixing: with lam 0.8 A's slot holds
    0.8 x 10 + 0.2 x 100 = 28, but 0.2 x 100 = 20 in A's rectangle (B shows through it) and 0.8 x 10 = 8 in B's;
    B's slot 0.2 x 10 + 0.8 x 100 = 82, 80 in A's rectangle and 2 in B's. Erasing after mixing would put 0 in
    each image's own rectangle and leave the other's at 28 or 82."""
    expected = np.array([np.full((10, 10), 28.0), np.full((10, 10), 82.0)])
    expected[0, 0:2, 0:6], expected[0, 3:6, 1:8] = 20, 8
    expected[1, 0:2, 0:6], expected[1, 3:6, 1:8] = 80, 2
    np.testing.assert_allclose(_erased_then_mixed(MixDraw("mixup", 0.8)), expected, rtol=1e-6)


def test_batch_transform_erases_each_image_before_cutmix():
    """The box rows 0..3 x columns 5..9 pasted from the erased mirror: in A's slot, A's rectangle is 0 where the box
    leaves it (columns 0..4) and 100 where the box covers it (column 5); B's rectangle, erased before the paste,
    shows as 0 in the box's row 3, columns 5..7. Erasing after the paste would zero A's whole rectangle in A's
    slot and leave the box all 100."""
    expected = np.array([np.full((10, 10), 10.0), np.full((10, 10), 100.0)])
    expected[0, 0:2, 0:6], expected[1, 3:6, 1:8] = 0, 0   # each image's own rectangle
    expected[0, 0:4, 5:10], expected[1, 0:4, 5:10] = 100, 10   # the pasted box ...
    expected[0, 3, 5:8], expected[1, 0:2, 5] = 0, 0   # ... holds the mirror's rectangle where they meet
    np.testing.assert_array_equal(_erased_then_mixed(MixDraw("cutmix", 0.8, (0, 4, 5, 10))), expected)


def test_batch_transform_state_resumes_the_mixing_and_the_erasing_where_they_were(tiny_set):
    config = parse_config(tiny_args(tiny_set, "unused", "--mixup", "--cutmix", "1.0", "--reprob", "0.5"))
    images = [mx.nd.array(np.random.RandomState(0).normal(size=(8, 3, 24, 24)))]
    labels = [mx.nd.array([0, 1, 2, 0, 1, 2, 0, 1])]
    transform = build_batch_transform(config, 3)
    for batch in range(3):
        transform(images, labels, 0, batch)
    state = transform.get_state()
    ahead = [transform(images, labels, 0, batch) for batch in range(3, 6)]
    resumed = build_batch_transform(config, 3)
    resumed.set_state(state)
    for (images_ahead, targets_ahead, _), (images_resumed, targets_resumed, _) in zip(
            ahead, [resumed(images, labels, 0, batch) for batch in range(3, 6)]):
        np.testing.assert_array_equal(images_resumed[0].asnumpy(), images_ahead[0].asnumpy())
        np.testing.assert_array_equal(targets_resumed[0].asnumpy(), targets_ahead[0].asnumpy())


def test_cutmix_end_to_end_the_network_sees_pasted_boxes_and_corrected_targets(tiny_set, tmp_path, monkeypatch):
    """One epoch of 6 batches of 16 at 24 x 24 with --cutmix 1: each image the network saw is its loader image
    with one box, the same for the whole batch, of its mirror in the batch; the targets weigh the two one-hot
    labels by the box's area."""
    recorder = RunRecorder(monkeypatch)
    assert train_imagenet.main(tiny_args(tiny_set, tmp_path, "--cutmix", "1", *ONE_EPOCH)) == 0
    boxes = []
    for _, images, labels, call in recorder.steps():
        seen, one_hot = call["inputs"], np.eye(3)[labels.astype(int)]
        changed = (seen != images).any(axis=(0, 1))
        assert changed.any()   # at 24 x 24 a box is empty only for lam > 0.993: no batch of seed 0 draws one
        rows, columns = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
        inside = np.zeros(changed.shape, bool)
        inside[top:bottom, left:right] = True
        np.testing.assert_array_equal(seen[:, :, inside], images[::-1][:, :, inside])
        np.testing.assert_array_equal(seen[:, :, ~inside], images[:, :, ~inside])
        lam = 1 - (bottom - top) * (right - left) / 24 ** 2
        np.testing.assert_allclose(call["targets"], lam * one_hot + (1 - lam) * one_hot[::-1], rtol=1e-6)
        boxes.append((top, bottom, left, right))
    assert len(boxes) == 6 and len(set(boxes)) == 6   # one box a batch, drawn afresh


def test_erasing_end_to_end_every_image_the_network_sees_has_a_zero_rectangle(tiny_set, tmp_path, monkeypatch):
    recorder = RunRecorder(monkeypatch)
    argv = tiny_args(tiny_set, tmp_path, "--reprob", "1", "--remode", "const", *ONE_EPOCH)
    assert train_imagenet.main(argv) == 0
    rectangles = []
    for _, images, labels, call in recorder.steps():
        assert call["targets"].tolist() == labels.tolist()   # erasing leaves the labels alone
        for image, seen, rectangle in zip(images, call["inputs"], _erased_rectangles(images, call["inputs"])):
            assert rectangle is not None
            top, bottom, left, right = rectangle
            assert (seen[:, top:bottom, left:right] == 0).all()
            assert 0.015 <= (bottom - top) * (right - left) / 24 ** 2 <= 0.35
            rectangles.append(rectangle)
    assert len(rectangles) == 96 and len(set(rectangles)) > 48
