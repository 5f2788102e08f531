"""TrivialAugment Wide and RandAugment on the device (``data/auto_augment.py``): each operation against numbers
worked out by hand, numpy or torchvision; grouping; the policies' draws for a fixed seed; the same images
augmented alike however the global batch is split; the policy spelling's errors; and the flag end to end.

Literals marked "torchvision" were printed by torchvision 0.28.0 (torch 2.13.0+cpu) for the same uint8 image
(``torchvision.transforms.functional`` and ``autoaugment._apply_op``, NEAREST, fill None), in a side
environment; this test does not need torch."""
import collections
import math

import mxnet as mx
import numpy as np
import pytest

import train_imagenet
from data.augmentation import RGB_MEAN, RGB_STD
from data.auto_augment import (RAND_OPERATIONS, TA_OPERATIONS, AugmentThenNormalize, RandAugment, TrivialAugmentWide,
                               apply_operations, image_generator, parse_policy)
from engine.config import parse_config
from engine.recipe import build_batch_transform, build_data
from tests.conftest import ONE_EPOCH, tiny_args
from tests.helpers import RunRecorder
from utils.devices import build_contexts
from utils.errors import UserError

pytestmark = pytest.mark.numeric


def _one(name, value, image):
    """``image`` (C, H, W) transformed alone by (name, value)."""
    return apply_operations(mx.nd.array(np.asarray(image, np.float32)[None]), [(name, value)]).asnumpy()[0]


def _grey(rows):
    """A three-channel image whose channels all hold ``rows``."""
    return np.repeat(np.array(rows, np.float32)[None], 3, axis=0)


PIXELS = [[0, 1, 63, 127], [128, 200, 254, 255]]


@pytest.mark.parametrize("name, value, expected", [
    # Keeping 3 bits clears the 5 low ones: 127 = 0b01111111 -> 0b01100000 = 96, 254 -> 224.
    ("Posterize", 3, [[0, 0, 32, 96], [128, 192, 224, 224]]),
    ("Posterize", 8, PIXELS),
    ("Posterize", 0, [[0, 0, 0, 0], [0, 0, 0, 0]]),  # timm's int(4 x 0.0) bits
    # At or above the threshold v becomes 255 - v.
    ("Solarize", 128, [[0, 1, 63, 127], [127, 55, 1, 0]]),
    ("Solarize", 246.5, [[0, 1, 63, 127], [128, 200, 1, 0]]),  # TrivialAugment's second bin, 255 - 8.5
    ("Solarize", 256, PIXELS),  # timm's threshold at magnitude 10 inverts nothing
    ("Invert", 0, [[255, 254, 192, 128], [127, 55, 1, 0]]),
    # timm's SolarizeAdd: below 128 raised by the addition, at most to 255.
    ("SolarizeAdd", 110, [[110, 111, 173, 237], [128, 200, 254, 255]]),
])
def test_posterize_solarize_invert_exact(name, value, expected):
    np.testing.assert_array_equal(_one(name, value, _grey(PIXELS)), _grey(expected))


def test_brightness_color_contrast_worked_by_hand():
    # Brightness: 1.5 v clipped and truncated (torchvision's uint8 cast): 150, 300 -> 255, 4.5 -> 4.
    bright = _one("Brightness", 1.5, np.array([100, 200, 3], np.float32).reshape(3, 1, 1))
    assert bright.ravel().tolist() == [150, 255, 4]
    # Color: grayscale of (200, 100, 50) is 0.2989 x 200 + 0.587 x 100 + 0.114 x 50 = 124.18 -> 124; factor 2
    # gives 2 v - 124 = 276 -> 255, 76, -24 -> 0; factor 0.5 (v + 124) / 2 = 162, 112, 87.
    pixel = np.array([200, 100, 50], np.float32).reshape(3, 1, 1)
    assert _one("Color", 2.0, pixel).ravel().tolist() == [255, 76, 0]
    assert _one("Color", 0.5, pixel).ravel().tolist() == [162, 112, 87]
    # The weights add up to 0.9999: white turns 254 grey (torchvision: [254, 254, 254]).
    assert _one("Color", 0.0, np.full((3, 1, 1), 255.0)).ravel().tolist() == [254, 254, 254]
    # Contrast of a grey image 0, 100, 200, 60: its grayscale truncates 0.9999 v to 0, 99, 199, 59, mean 89.25;
    # factor 2 gives 2 v - 89.25 = -89.25 -> 0, 110.75 -> 110, 310.75 -> 255, 30.75 -> 30; factor 0.5 gives
    # v / 2 + 44.625 = 44, 94, 144, 74 (torchvision the same).
    grey = _grey([[0, 100], [200, 60]])
    np.testing.assert_array_equal(_one("Contrast", 2.0, grey), _grey([[0, 110], [255, 30]]))
    np.testing.assert_array_equal(_one("Contrast", 0.5, grey), _grey([[44, 94], [144, 74]]))


def test_sharpness_keeps_the_border_and_blends_with_the_smoothed_interior():
    image = _grey([[10, 10, 10, 10], [10, 140, 10, 10], [10, 10, 10, 10], [10, 10, 10, 10]])
    # Smoothed (1, 1): (5 x 140 + 8 x 10) / 13 = 60; (1, 2), (2, 1), (2, 2): (140 + 12 x 10) / 13 = 20.
    # Factor 2: 2 x 140 - 60 = 220, 2 x 10 - 20 = 0; the border blends with itself and stays 10.
    sharpened = _one("Sharpness", 2.0, image)
    np.testing.assert_array_equal(sharpened[0], [[10, 10, 10, 10], [10, 220, 0, 10], [10, 0, 0, 10], [10, 10, 10, 10]])
    # Factor 0.5: (140 + 60) / 2 = 100, (10 + 20) / 2 = 15.
    assert _one("Sharpness", 0.5, image)[0, 1].tolist() == [10, 100, 15, 10]
    # torchvision blends the border with itself in float32 too: 1.3 x 172 - 0.3 x 172 falls just short of 172
    # and truncates to 171 (torchvision: [[171, 10, 10], [10, 231, 10], [10, 10, 10]]).
    quirk = _one("Sharpness", 1.3, _grey([[172, 10, 10], [10, 200, 10], [10, 10, 10]]))
    np.testing.assert_array_equal(quirk[0], [[171, 10, 10], [10, 231, 10], [10, 10, 10]])


@pytest.mark.parametrize("size", [4, 5])
def test_rotations_by_right_angles_are_exact(size):
    image = np.arange(3 * size * size, dtype=np.float32).reshape(3, size, size)
    # torchvision rotates counter-clockwise for a positive angle, as np.rot90 over (rows, columns).
    for degrees, turns in ((90, 1), (-90, -1), (180, 2)):
        np.testing.assert_array_equal(_one("Rotate", degrees, image), np.rot90(image, turns, axes=(1, 2)))


def test_rotations_halfway_between_pixels_round_as_torchvision():
    # 45 degrees about the centre of a 4x4 image puts the diagonal's sources halfway between pixels, and 30
    # degrees those of a 5x5 image's middle row; torch's float32 grid decides them (torchvision's outputs).
    square = _grey(np.arange(16).reshape(4, 4))
    np.testing.assert_array_equal(_one("Rotate", 45.0, square)[0],
                                  [[0, 2, 7, 0], [1, 6, 10, 11], [4, 9, 10, 14], [0, 8, 13, 0]])
    odd = _grey(np.arange(25).reshape(5, 5))
    np.testing.assert_array_equal(_one("Rotate", 30.0, odd)[0], [[0, 2, 3, 9, 0], [1, 7, 7, 13, 14],
                                                                 [5, 11, 12, 13, 19], [10, 11, 17, 17, 23],
                                                                 [0, 15, 21, 22, 0]])
    np.testing.assert_array_equal(_one("Rotate", -30.0, odd)[0], [[0, 5, 1, 2, 0], [10, 11, 7, 7, 3],
                                                                  [15, 11, 12, 13, 9], [21, 17, 17, 13, 14],
                                                                  [0, 22, 23, 19, 0]])


def test_translations_by_whole_pixels_are_exact_with_zero_fill():
    image = np.arange(1, 3 * 4 * 5 + 1, dtype=np.float32).reshape(3, 4, 5)
    right = np.zeros_like(image)
    right[:, :, 2:] = image[:, :, :-2]
    np.testing.assert_array_equal(_one("TranslateX", 2.0, image), right)
    up = np.zeros_like(image)
    up[:, :-1] = image[:, 1:]
    np.testing.assert_array_equal(_one("TranslateY", -1.0, image), up)


def test_shears_about_the_top_left_corner_worked_by_hand():
    image = _grey(10 * np.arange(3)[:, None] + np.arange(4)[None])  # pixel (row, column) holds 10 row + column
    # ShearX 0.5: row j reads column i + 0.5 (j + 1/2), rounded: shifts 0.25 -> 0, 0.75 -> 1, 1.25 -> 1.
    np.testing.assert_array_equal(_one("ShearX", 0.5, image)[0], [[0, 1, 2, 3], [11, 12, 13, 0], [21, 22, 23, 0]])
    np.testing.assert_array_equal(_one("ShearX", -0.5, image)[0], [[0, 1, 2, 3], [0, 10, 11, 12], [0, 20, 21, 22]])
    # ShearY 0.5: column i reads row j + 0.5 (i + 1/2): shifts 0, 1, 1, 2 for columns 0..3.
    np.testing.assert_array_equal(_one("ShearY", 0.5, image)[0], [[0, 11, 12, 23], [10, 21, 22, 0], [20, 0, 0, 0]])


def test_shear_ties_round_as_torchvision():
    """TrivialAugment's shear bin 8 (0.264 in float32) moves row 62 by 62.5 x 0.264 = 16.5 columns."""
    image = _grey(np.arange(20)[None] + 10 * (np.arange(63)[:, None] % 3))
    bin_8 = float(np.float32(0.264))
    # torchvision: its float32 grid lands on the halves and rounds them to even (16, 18, 18, 20 -> outside).
    assert _one("ShearX", bin_8, image)[0, 62].tolist() == [36, 38, 38] + [0] * 17
    assert _one("ShearX", -bin_8, image)[0, 62].tolist() == [0] * 16 + [20, 20, 21, 22]


def _numpy_autocontrast(image):
    """torchvision's autocontrast in numpy float32: (v - min) x (255 / (max - min)), the quotient taken as torch's
    ``255 / tensor`` takes it (a reciprocal times 255); a channel of one value unchanged."""
    low = image.min(axis=(1, 2), keepdims=True)
    high = image.max(axis=(1, 2), keepdims=True)
    with np.errstate(divide="ignore"):
        scale = (np.float32(1) / (high - low)) * np.float32(255)
    flat = high == low
    stretched = (image - np.where(flat, 0, low)) * np.where(flat, np.float32(1), scale)
    return np.floor(np.clip(stretched, 0, 255))


def _numpy_equalize(image):
    """torchvision's ``_scale_channel`` per channel: step = (pixels not of the brightest value) // 255; the table
    (cumulative count + step // 2) // step, shifted one value up, clipped to 255; step 0 leaves the channel."""
    out = image.copy()
    for channel, values in enumerate(image.astype(np.int64)):
        counts = np.bincount(values.ravel(), minlength=256)
        step = counts[counts > 0][:-1].sum() // 255
        if step:
            table = np.concatenate([[0], ((np.cumsum(counts) + step // 2) // step)[:-1]]).clip(0, 255)
            out[channel] = table[values]
    return out


def _test_images():
    """Images of narrow and full ranges, few values, a flat channel, and 20x20 (step 0 or 1) and 40x40."""
    rng = np.random.RandomState(5)
    images = [rng.randint(40, 120, (3, 20, 20)), rng.randint(0, 256, (3, 40, 40)),
              np.minimum(rng.geometric(0.05, (3, 40, 40)), 255), rng.randint(0, 4, (3, 40, 40)) * 60,
              np.concatenate([np.full((1, 40, 40), 7), rng.randint(100, 103, (2, 40, 40))])]
    return [image.astype(np.float32) for image in images]


def test_autocontrast_and_equalize_match_numpy():
    for image in _test_images():
        np.testing.assert_array_equal(_one("AutoContrast", 0, image), _numpy_autocontrast(image))
        np.testing.assert_array_equal(_one("Equalize", 0, image), _numpy_equalize(image))
    # By hand: 50, 100, 150 stretch to 0, 127.5 -> 127, 255; a flat channel stays (torchvision the same).
    hand = np.array([[[50, 100, 150]], [[0, 1, 2]], [[7, 7, 7]]], np.float32)
    assert _one("AutoContrast", 0, hand).tolist() == [[[0, 127, 255]], [[0, 127, 255]], [[7, 7, 7]]]
    # torchvision on a 20x20 image of 40..119 (step 1): the sums of the equalized channels.
    rng = np.random.RandomState(5)
    image = rng.randint(40, 120, (3, 20, 20)).astype(np.float32)
    image[1] = np.minimum(rng.geometric(0.05, (20, 20)), 255)
    equalized = _one("Equalize", 0, image)
    assert equalized.sum(axis=(1, 2)).tolist() == [68698, 67503, 68715]
    assert equalized[:, 0, :6].tolist() == [[255, 255, 87, 255, 45, 255], [0, 71, 255, 255, 225, 255],
                                            [255, 255, 255, 157, 33, 242]]


ONE_OF_EACH = [("Identity", 0.0), ("ShearX", -0.3), ("ShearY", 0.5), ("TranslateX", 3.0), ("TranslateY", -5.0),
               ("Rotate", 33.0), ("Brightness", 1.4), ("Color", 0.2), ("Contrast", 1.8), ("Sharpness", 0.3),
               ("Posterize", 2.0), ("Solarize", 100.0), ("AutoContrast", 0.0), ("Equalize", 0.0),
               ("Invert", 0.0), ("SolarizeAdd", 60.0)]


def test_each_image_of_a_mixed_batch_gets_what_its_operation_gives_it_alone():
    rng = np.random.RandomState(1)
    images = rng.randint(30, 200, (len(ONE_OF_EACH), 3, 24, 24)).astype(np.float32)
    batch = mx.nd.array(images)
    together = apply_operations(batch, ONE_OF_EACH).asnumpy()
    for index, (name, value) in enumerate(ONE_OF_EACH):
        alone = _one(name, value, images[index])
        np.testing.assert_array_equal(together[index], alone, err_msg=name)
        assert name == "Identity" or not np.array_equal(alone, images[index]), name  # each operation acts
    np.testing.assert_array_equal(batch.asnumpy(), images)  # the caller's batch is untouched


def test_policy_steps_apply_each_images_draws_in_order():
    """RandAugment's second step writes into the first step's array: the result is each image's two draws applied
    to it alone, and the caller's batch stays as it was."""
    policy = RandAugment(9, 2, magnitude_std=0.5, seed=3)
    images = np.random.RandomState(2).randint(0, 256, (12, 3, 16, 16)).astype(np.float32)
    batch = mx.nd.array(images)
    augmented = policy(batch, 1, 4, 20).asnumpy()
    for offset in range(12):
        expected = images[offset]
        for name, value in policy.draw(image_generator(3, 1, 4, 20 + offset), 16, 16):
            expected = _one(name, value, expected)
        np.testing.assert_array_equal(augmented[offset], expected)
    np.testing.assert_array_equal(batch.asnumpy(), images)


def _draws(policy, count=2000, size=224):
    return [policy.draw(image_generator(policy.seed, 0, 7, index), size, size) for index in range(count)]


def test_trivial_augment_draws_uniform_operations_from_torchvisions_bins():
    draws = [steps[0] for steps in _draws(TrivialAugmentWide(seed=11))]
    counts = collections.Counter(name for name, _ in draws)
    assert set(counts) == set(TA_OPERATIONS)
    assert all(abs(count / len(draws) - 1 / 14) < 0.02 for count in counts.values()), counts
    bins = np.linspace(0, 1, 31)
    allowed = {
        "ShearX": 0.99 * bins, "ShearY": 0.99 * bins, "Rotate": 135 * bins,
        # torch's float32 linspace puts bin 15 at 15.999999, truncated to 15: no shift of 16 pixels.
        "TranslateX": [*range(16), *range(17, 31), 32], "TranslateY": [*range(16), *range(17, 31), 32],
        "Brightness": 0.99 * bins, "Color": 0.99 * bins, "Contrast": 0.99 * bins, "Sharpness": 0.99 * bins,
    }
    negative = collections.Counter()
    for name, value in draws:
        if name in allowed:
            magnitude = abs(value - 1) if name in ("Brightness", "Color", "Contrast", "Sharpness") else abs(value)
            assert np.min(np.abs(np.asarray(allowed[name]) - magnitude)) < 1e-6, (name, value)
            negative[name] += (value < 1) if name in ("Brightness", "Color", "Contrast", "Sharpness") else (value < 0)
        elif name == "Solarize":
            assert (255 - value) / 8.5 in range(31)
        elif name != "Posterize":
            assert value == 0
    for name in allowed:  # bin 0 carries no sign, so negative draws are (1/2)(30/31) of them
        assert abs(negative[name] / counts[name] - 0.5 * 30 / 31) < 0.1, (name, negative[name], counts[name])
    # torchvision's 8 - round(bin / 5) bits.
    assert {value for name, value in draws if name == "Posterize"} == {2, 3, 4, 5, 6, 7, 8}


def _enhancement_levels(draws):
    """The levels behind the non-increasing enhancement factors 0.1 + 1.8 level / 10."""
    return np.array([(value - 0.1) / 1.8 * 10 for steps in draws for name, value in steps
                     if name in ("Brightness", "Color", "Contrast", "Sharpness")])


def test_rand_augment_draws_n_operations_of_timms_set_half_of_them_applied():
    draws = _draws(RandAugment(9, 3, seed=5))
    assert {len(steps) for steps in draws} == {3}
    names = [name for steps in draws for name, _ in steps]
    applied = [name for name in names if name != "Identity"]
    assert abs(len(applied) / len(names) - 0.5) < 0.02
    counts = collections.Counter(applied)
    assert set(counts) == set(RAND_OPERATIONS)
    assert all(abs(count / len(applied) - 1 / 15) < 0.02 for count in counts.values()), counts
    values = collections.defaultdict(set)
    for steps in draws:
        for name, value in steps:
            values[name].add(round(value, 9))
    # timm's level-to-argument at magnitude 9 (fraction 0.9), signs random.
    assert values["Rotate"] == {27.0, -27.0} and values["ShearX"] == {0.27, -0.27}
    assert values["TranslateX"] == {round(0.405 * 224, 9), round(-0.405 * 224, 9)}
    assert values["Color"] == {round(0.1 + 1.8 * 0.9, 9)}
    assert values["Posterize"] == {3.0} and values["Solarize"] == {230.0} and values["SolarizeAdd"] == {99.0}
    assert _enhancement_levels(draws) == pytest.approx(9.0)


def test_rand_augment_increasing_variants():
    values = collections.defaultdict(set)
    for steps in _draws(RandAugment(9, 2, increasing=True, seed=5), count=500):
        for name, value in steps:
            values[name].add(round(value, 9))
    assert values["Color"] == {1.81, 0.19}  # 1 +/- 0.9 x 0.9
    assert values["Posterize"] == {1.0} and values["Solarize"] == {26.0}  # 4 - int(3.6), 256 - int(230.4)


def test_rand_augment_magnitude_noise():
    # mstd 1 around 5: clipping at 0 and 10 is five deviations away; the levels are Gaussian.
    levels = _enhancement_levels(_draws(RandAugment(5, 2, magnitude_std=1.0, seed=8), count=3000))
    assert abs(levels.mean() - 5) < 0.1 and abs(levels.std() - 1) < 0.1
    # mstd 2 around 9: the draws above 10 are clipped to 10, P(Z > 0.5) = 0.31 of them.
    levels = _enhancement_levels(_draws(RandAugment(9, 2, magnitude_std=2.0, seed=8), count=3000))
    assert levels.min() >= 0 and levels.max() == pytest.approx(10)
    assert abs(np.mean(np.isclose(levels, 10)) - 0.3085) < 0.05
    # mstd above 100: uniform in [0, M].
    levels = _enhancement_levels(_draws(parse_policy("rand-m8-n2-mstd101", seed=8), count=3000))
    assert abs(levels.mean() - 4) < 0.2 and levels.min() >= 0 and levels.max() <= 8


@pytest.mark.parametrize("text", ["ta_wide", "rand-m9-n2-mstd0.5"])
def test_the_same_images_are_augmented_alike_however_the_batch_is_split(text):
    policy = parse_policy(text, seed=4)
    images = mx.nd.array(np.random.RandomState(3).randint(0, 256, (10, 3, 16, 16)).astype(np.float32))
    whole = policy(images, 2, 5, 0).asnumpy()
    halves = np.concatenate([policy(images[:4], 2, 5, 0).asnumpy(), policy(images[4:], 2, 5, 4).asnumpy()])
    np.testing.assert_array_equal(whole, halves)
    np.testing.assert_array_equal(parse_policy(text, seed=4)(images, 2, 5, 0).asnumpy(), whole)  # a resumed run
    for other in (policy(images, 2, 6, 0), policy(images, 3, 5, 0), parse_policy(text, seed=5)(images, 2, 5, 0)):
        assert not np.array_equal(other.asnumpy(), whole)
    assert np.array_equal(whole, np.floor(whole)) and whole.min() >= 0 and whole.max() <= 255


def test_draws_are_independent_of_random_erasings():
    """Random erasing seeds its generators with the same (seed, epoch, batch, index): a spawn key of its own keeps
    the two tricks' numbers apart (with the same stream, an image's erasing would decide its operation)."""
    ours = image_generator(0, 1, 2, 3).random(8)
    assert not np.allclose(ours, np.random.default_rng([0, 1, 2, 3]).random(8))


def test_parse_policy_reads_timms_spelling():
    assert isinstance(parse_policy("ta_wide", seed=3), TrivialAugmentWide)
    policy = parse_policy("rand-m9-n3-mstd0.5-inc1", seed=3)
    assert (policy.magnitude, policy.ops_per_image, policy.magnitude_std, policy.increasing, policy.seed) == \
        (9, 3, 0.5, True, 3)
    defaults = parse_policy("rand")
    assert (defaults.magnitude, defaults.ops_per_image, defaults.magnitude_std, defaults.increasing) == \
        (10, 2, 0.0, False)
    assert parse_policy("rand-n1-m0-inc0").increasing is False
    assert parse_policy("rand-mstd200").magnitude_std == math.inf


@pytest.mark.parametrize("text, fragment", [
    ("foo", "unknown augmentation policy 'foo'; choose ta_wide or rand-mM-nN"),
    ("ta-wide", "unknown augmentation policy"),
    ("rand-m11-n2", "magnitude m11 in 'rand-m11-n2' is above 10"),
    ("rand-m9-n0", "at least one operation per image"),
    ("rand-m9-x3", "cannot read 'x3'"),
    ("rand-m9.5-n2", "m must be a whole number"),
    ("rand-m9-m8", "m is given twice"),
    ("rand-m9-inc2", "inc is 0 or 1"),
    ("rand-m9-n2-", "cannot read ''"),
])
def test_parse_policy_refuses_other_text_in_one_line(text, fragment):
    with pytest.raises(UserError, match="^[^\n]*$") as error:
        parse_policy(text)
    assert fragment in str(error.value)
    assert "rand-m9-n2" in str(error.value)  # an example of a valid spelling


def test_the_reader_leaves_crops_whole_numbers_for_the_policy(tiny_set, tmp_path):
    """With --auto-augment the records are only cropped and flipped: RGB whole numbers 0..255; without, the
    paper's jittered, normalized crops (negative values and fractions)."""
    def first_batch(*flags):
        config = parse_config(tiny_args(tiny_set, tmp_path, *flags))
        return next(iter(build_data(config, build_contexts()).train.epoch(0))).data[0].asnumpy()

    crops = first_batch("--auto-augment", "ta_wide")
    assert crops.min() >= 0 and crops.max() <= 255 and (crops == np.round(crops)).all() and crops.max() > 100
    paper = first_batch()
    assert paper.min() < -1 and (paper != np.round(paper)).any()


def test_the_batch_transform_augments_each_slice_as_its_place_in_the_global_batch(tiny_set, tmp_path):
    """The policy, then section 2's normalization, on 1 slice or on 2 (devices): the same images."""
    config = parse_config(tiny_args(tiny_set, tmp_path, "--auto-augment", "rand-m9-n2-mstd0.5"))
    images = mx.nd.array(np.random.RandomState(0).randint(0, 256, (8, 3, 24, 24)).astype(np.float32))
    labels = mx.nd.arange(8)
    whole, _, _ = build_batch_transform(config, 3)([images], [labels], 1, 4)
    halves, _, _ = build_batch_transform(config, 3)([images[:4], images[4:]], [labels[:4], labels[4:]], 1, 4)
    np.testing.assert_array_equal(np.concatenate([half.asnumpy() for half in halves]), whole[0].asnumpy())
    expected = (parse_policy("rand-m9-n2-mstd0.5", config.seed)(images, 1, 4, 0).asnumpy()
                - np.reshape(RGB_MEAN, (1, 3, 1, 1))) / np.reshape(RGB_STD, (1, 3, 1, 1))
    np.testing.assert_allclose(whole[0].asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_training_end_to_end_the_network_sees_the_policys_images(tiny_set, tmp_path, monkeypatch):
    """One epoch of 6 batches with --auto-augment ta_wide: every image the network saw is its loader crop through
    TrivialAugmentWide (drawn from the seed, the epoch, the batch and its place), normalized."""
    recorder = RunRecorder(monkeypatch)
    assert train_imagenet.main(tiny_args(tiny_set, tmp_path, "--auto-augment", "ta_wide", *ONE_EPOCH)) == 0
    policy = AugmentThenNormalize(parse_policy("ta_wide", 0), RGB_MEAN, RGB_STD)
    steps = recorder.steps()
    assert len(steps) == 6
    changed = 0
    for batch, (epoch, images, _, call) in enumerate(steps):
        expected = policy(mx.nd.array(images), epoch, batch, 0).asnumpy()
        np.testing.assert_allclose(call["inputs"], expected, rtol=1e-5, atol=1e-5)
        changed += (np.abs(expected - policy(mx.nd.array(images), epoch, batch + 1, 0).asnumpy()) > 1e-3).any(
            axis=(1, 2, 3)).sum()
    assert changed > 48  # another batch number draws other operations for most images
