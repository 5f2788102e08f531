"""TrivialAugment Wide and RandAugment on the device: a batch's images each get their own random operations, as
batched MXNet operators, so that a GPU's host does no more than decode and crop.

TrivialAugment (Müller & Hutter, ICCV 2021), Section 3, Algorithm 1: for each image draw one operation ``a``
uniformly from the set ``A`` and one strength ``m`` uniformly from {0, ..., 30}; return ``a(x, m)``. ``ta_wide``
is torchvision's ``TrivialAugmentWide``: its 14 operations, the 31 bins of each one's wide range (shear 0..0.99,
translate 0..32 pixels truncated to whole ones, rotate 0..135 degrees, the enhancements 1 +/- 0..0.99,
posterize 8..2 bits, solarize 255..0), the bins being torch's float32 ``linspace``; signed ones negated with
probability 1/2.

RandAugment (Cubuk et al., CVPR Workshops 2020), Section 3 and Figure 2: each image gets ``N`` operations drawn
uniformly, with replacement, all at one global magnitude ``M``. ``rand-mM-nN[-mstdS][-inc1]`` is timm's
``rand_augment_transform`` on timm's scale (``_LEVEL_DENOM`` 10, so M is 0..10): timm's 15 operations (the
paper's 14 less Identity, plus Invert and SolarizeAdd from the TensorFlow EfficientNet code timm adapts), each
applied with probability 1/2 (which plays Identity's part); the magnitude, with ``mstd`` S, drawn from
N(M, S^2) (uniform in [0, M] for S > 100) and clipped to [0, 10]; timm's level-to-argument functions (rotate
30 M/10 degrees, shear 0.3 M/10, translate 0.45 M/10 of the side, enhancements 0.1 + 1.8 M/10, posterize
int(4 M/10) bits, solarize min(256, int(256 M/10)), SolarizeAdd min(128, int(110 M/10)) below 128) with
random negation of the signed ones, and with ``inc1`` its "increasing" variants (enhancements 1 +/- 0.9 M/10,
at least 0.1; posterize 4 - int(4 M/10) bits; solarize 256 - min(256, int(256 M/10))). timm's ``p``, ``mmax``
and ``t`` sections are not read.

The operations are torchvision's functional ones on uint8 images, for both policies: nearest-neighbour affine
maps with fill 0 (timm's PIL ops interpolate bilinearly or bicubically and fill grey), shears about the top-left
corner, rotations about the centre; blends ``clamp(r x + (1 - r) y)`` truncated to whole numbers; grayscale
``0.2989 R + 0.587 G + 0.114 B`` truncated; contrast towards the grayscale mean; sharpness towards the 3x3
smoothing [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 rounded, the border kept; posterize, solarize (at or above the
threshold inverted), per-channel autocontrast and per-channel equalize (``_scale_channel``'s step and table).
Images are float32 (N, 3, H, W) holding whole numbers 0..255, as the training reader gives them cropped and
flipped only (``data.record_reader``'s raw mode); every operation returns whole numbers 0..255 again, what
torchvision returns for the same uint8 image.

Batching: the images of one step are grouped by kernel (the five affine operations share one); each group is
gathered with ``take``, transformed by one call of its kernel with a parameter per image, and written over its
rows of one copy of the batch. Each image pays for its own operation only, in a number of operator calls that
does not grow with the batch. The affine kernel computes its sampling grid in torch's float32 steps and reads
it with one ``take`` (see ``_affine``); equalize counts every channel with one ``histogram``.

Seeding: image k of a global batch draws from its own generator seeded by (seed, epoch, batch, k), as
``utils/random_erasing.py`` does, under a spawn key of its own so that the two tricks draw independent numbers;
one device, N devices and N workers (each given its slice and the index of its first image) augment alike, and
a resumed run repeats itself.
"""
import math
import re

import mxnet as mx
import numpy as np

from utils.errors import UserError

TA_OPERATIONS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                 "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
RAND_OPERATIONS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
                   "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY")
MAGNITUDE_BINS = 31
LEVEL_DENOM = 10  # timm's _LEVEL_DENOM: the largest RandAugment magnitude
APPLY_PROBABILITY = 0.5  # timm's RandAugment applies each drawn operation with this probability
SPAWN_KEY = (1,)  # keeps these draws apart from random erasing's, seeded by the same four numbers
POLICY_SPELLING = "ta_wide or rand-mM-nN[-mstdS][-inc1] (e.g. rand-m9-n2-mstd0.5)"
# Adding then subtracting 1.5 x 2^23 in float32 rounds |x| < 2^22 to the nearest whole number, ties to even, as
# torch's nearest grid_sample (nearbyint) does; MXNet's round and rint break ties away from zero or downwards.
_ROUND_TO_EVEN = 1.5 * 2 ** 23


def _torch_linspace(start, end, steps):
    """torch's float32 ``linspace``: ``start + step i`` in the first half, ``end - step (steps - 1 - i)`` in the
    second, each rounded once. numpy's differs in the last bit: torch's 16th translate bin is 15.999999, which
    torchvision truncates to 15 pixels (so 15 is drawn twice as often and 16 never)."""
    start, end = np.float32(start), np.float32(end)
    step = np.float64((end - start) / np.float32(steps - 1))
    index = np.arange(steps, dtype=np.float64)
    return np.where(index < steps // 2, start + step * index, end - step * (steps - 1 - index)).astype(np.float32)


# torchvision's TrivialAugmentWide._augmentation_space: (bins or None, signed).
_TA_SPACE = {
    "Identity": (None, False),
    "ShearX": (_torch_linspace(0.0, 0.99, MAGNITUDE_BINS), True),
    "ShearY": (_torch_linspace(0.0, 0.99, MAGNITUDE_BINS), True),
    "TranslateX": (_torch_linspace(0.0, 32.0, MAGNITUDE_BINS), True),
    "TranslateY": (_torch_linspace(0.0, 32.0, MAGNITUDE_BINS), True),
    "Rotate": (_torch_linspace(0.0, 135.0, MAGNITUDE_BINS), True),
    "Brightness": (_torch_linspace(0.0, 0.99, MAGNITUDE_BINS), True),
    "Color": (_torch_linspace(0.0, 0.99, MAGNITUDE_BINS), True),
    "Contrast": (_torch_linspace(0.0, 0.99, MAGNITUDE_BINS), True),
    "Sharpness": (_torch_linspace(0.0, 0.99, MAGNITUDE_BINS), True),
    "Posterize": (8 - np.round(np.arange(MAGNITUDE_BINS, dtype=np.float32) / np.float32(5.0)), False),
    "Solarize": (_torch_linspace(255.0, 0.0, MAGNITUDE_BINS), False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
}
_ENHANCEMENTS = ("Brightness", "Color", "Contrast", "Sharpness")


# Kernels: ``kernel(images, parameters)`` transforms a group (n, C, H, W) with one parameter row per image.

def _per_image(values, images):
    """``values`` (n,) as float32 (n, 1, 1, 1) on the images' device, to broadcast over each image."""
    return mx.nd.array(np.asarray(values, np.float64).astype(np.float32).reshape(-1, 1, 1, 1),
                       ctx=images.context, dtype=np.float32)


def _blend(images, other, ratios):
    """torchvision's ``_blend`` on uint8: ``clamp(r x + (1 - r) other, 0, 255)`` truncated, in float32."""
    mixed = mx.nd.broadcast_add(mx.nd.broadcast_mul(images, _per_image(ratios, images)),
                                mx.nd.broadcast_mul(other, _per_image(1.0 - ratios, images)))
    return mx.nd.floor(mx.nd.clip(mixed, 0, 255))


def _grayscale(images):
    """torchvision's ``rgb_to_grayscale`` on uint8, (n, 1, H, W): the weighted sum in float32, truncated."""
    red, green, blue = (mx.nd.slice_axis(images, axis=1, begin=c, end=c + 1) for c in range(3))
    return mx.nd.floor(red * 0.2989 + green * 0.587 + blue * 0.114)


def _identity(images, _):
    return images


def _brightness(images, factors):
    return _blend(images, mx.nd.zeros((1, 1, 1, 1), ctx=images.context), factors[:, 0])


def _color(images, factors):
    return _blend(images, _grayscale(images), factors[:, 0])


def _contrast(images, factors):
    height, width = images.shape[2:]
    # The sum of whole numbers below 2^24 is exact in float32, so the mean is torch's correctly rounded one.
    mean = _grayscale(images).sum(axis=(1, 2, 3), keepdims=True) / (height * width)
    return _blend(images, mean, factors[:, 0])


def _sharpness(images, factors):
    count, channels, height, width = images.shape
    if height <= 2 or width <= 2:
        return images
    weight = mx.nd.array([[[[1, 1, 1], [1, 5, 1], [1, 1, 1]]]], ctx=images.context)
    sums = mx.nd.Convolution(images.reshape((count * channels, 1, height, width)), weight=weight, kernel=(3, 3),
                             num_filter=1, no_bias=True)
    blurred = images.copy()
    # sum / 13 is never halfway between whole numbers, so rounding cannot differ from torch's.
    inside = mx.nd.round(sums / 13).reshape((count, channels, height - 2, width - 2))
    blurred[:, :, 1:height - 1, 1:width - 1] = inside
    return _blend(images, blurred, factors[:, 0])


def _posterize(images, bits):
    # Masking the low 8 - bits bits is flooring to a multiple of 2^(8 - bits), exact in float32.
    quantum = _per_image(2.0 ** (8 - bits[:, 0]), images)
    return mx.nd.broadcast_mul(mx.nd.floor(mx.nd.broadcast_div(images, quantum)), quantum)


def _solarize(images, thresholds):
    inverted = mx.nd.broadcast_greater_equal(images, _per_image(thresholds[:, 0], images))
    return images + inverted * (255 - 2 * images)


def _solarize_add(images, additions):
    """timm's ``solarize_add``: values below 128 raised by the addition, at most to 255."""
    raised = mx.nd.minimum(mx.nd.broadcast_add(images, _per_image(additions[:, 0], images)), 255)
    return mx.nd.where(images < 128, raised, images)


def _invert(images, _):
    return 255 - images


def _autocontrast(images, _):
    low = images.min(axis=(2, 3), keepdims=True)
    high = images.max(axis=(2, 3), keepdims=True)
    # torchvision leaves a channel of one value as it is (its scale 255 / 0 is replaced by 1 and its minimum by 0),
    # and divides as torch's 255 / tensor does, by a reciprocal.
    flat = high == low
    scale = mx.nd.reciprocal(high - low + flat) * 255 * (1 - flat) + flat
    stretched = mx.nd.broadcast_mul(mx.nd.broadcast_sub(images, low * (1 - flat)), scale)
    return mx.nd.floor(mx.nd.clip(stretched, 0, 255))


def _equalize(images, _):
    """torchvision's ``_scale_channel`` for every (image, channel) at once.

    One ``histogram`` call counts all channels: channel r's values are moved to bins 256 r .. 256 r + 255 (plus
    1/2, mid-bin). It is a single pass over the pixels on either device, where a sort is some ten times slower
    on the CPU and a one-hot of 256 values per pixel would need 256 times the batch's memory.
    """
    count, channels, height, width = images.shape
    rows, pixels = count * channels, height * width
    values = images.reshape((rows, pixels))
    keys = mx.nd.broadcast_add(values, mx.nd.arange(rows, ctx=images.context).reshape((rows, 1)) * 256)
    histogram, _ = mx.nd.histogram(keys + 0.5, bins=256 * rows, range=(0, 256 * rows))
    histogram = histogram.astype(np.float32).reshape((rows, 256))
    # torchvision's step: the pixels not of the channel's brightest value, over 255, floored; 0 leaves it as is.
    brightest = mx.nd.pick(histogram, values.max(axis=1), axis=1, keepdims=True)
    step = mx.nd.floor((pixels - brightest) / 255)
    usable = step > 0
    # Counts below 2^24 keep the float32 cumulative sums and the floored quotients exact.
    rounded = mx.nd.broadcast_add(mx.nd.cumsum(histogram, axis=1), mx.nd.floor(step / 2))
    table = mx.nd.floor(mx.nd.broadcast_div(rounded, mx.nd.maximum(step, 1)))
    # Value v maps to the entry of v - 1, value 0 to 0.
    table = mx.nd.clip(mx.nd.concat(mx.nd.zeros((rows, 1), ctx=images.context), table[:, :255], dim=1), 0, 255)
    unchanged = mx.nd.arange(256, ctx=images.context).reshape((1, 256))
    table = mx.nd.broadcast_mul(table, usable) + mx.nd.broadcast_mul(unchanged, 1 - usable)
    return mx.nd.take(table.reshape((-1,)), keys).reshape(images.shape)


def _affine(images, matrices):
    """torchvision's ``affine`` on uint8, nearest neighbour with fill 0; row k of ``matrices`` (n, 6) is image k's
    inverse map about the image centre (torchvision's ``matrix``).

    The grid follows torch's float32 steps (``_gen_affine_grid``, then ``grid_sample``'s unnormalisation and
    ``nearbyint``), so that sources exactly halfway between pixels, as on the diagonal of a 45-degree rotation
    of an even-sized image, fall on the pixel torch picks; GridGenerator's arithmetic differs there. A nearest
    sample being a gather, one ``take`` reads it from the images framed by a zero border, where every source
    outside lands once clipped: exact, and as fast on the CPU as BilinearSampler without its rounding.
    """
    count, channels, height, width = images.shape
    context = images.context
    theta = matrices.astype(np.float32).reshape((count, 2, 3)) / np.array([[width / 2], [height / 2]], np.float32)
    # Pixel centres about the image centre: whole numbers plus 1/2, exact in float32.
    column = (mx.nd.arange(width, ctx=context) + (0.5 - width / 2)).reshape((1, 1, width))
    row = (mx.nd.arange(height, ctx=context) + (0.5 - height / 2)).reshape((1, height, 1))
    source = []
    for axis, size in ((0, width), (1, height)):
        weights = [mx.nd.array(theta[:, axis, term].reshape((count, 1, 1)), ctx=context) for term in range(3)]
        normalised = mx.nd.broadcast_add(mx.nd.broadcast_add(mx.nd.broadcast_mul(column, weights[0]),
                                                             mx.nd.broadcast_mul(row, weights[1])), weights[2])
        index = ((normalised + 1) * size - 1) / 2 + _ROUND_TO_EVEN - _ROUND_TO_EVEN
        source.append(mx.nd.clip(index, -1, size) + 1)  # in the framed image
    source_column, source_row = source
    framed = mx.nd.pad(images, mode="constant", pad_width=(0, 0, 0, 0, 1, 1, 1, 1))
    pixel = (source_row * (width + 2) + source_column).reshape((count, 1, height, width)).astype(np.int32)
    planes = np.arange(count * channels, dtype=np.int32).reshape((count, channels, 1, 1)) * (height + 2) * (width + 2)
    indices = mx.nd.broadcast_add(pixel, mx.nd.array(planes, ctx=context, dtype=np.int32))
    return mx.nd.take(framed.reshape((-1,)), indices)


# Parameters: what an operation's value means to its kernel in an image of (height, width). The affine ones
# are torchvision's inverse matrices, in the order of its double operations (_get_inverse_affine_matrix), for
# a float32 rounding that matches.

def _shear_x(shear, height, width):
    """About the top-left corner, as torchvision's TrivialAugment (and timm's PIL matrix (1, m, 0, 0, 1, 0))."""
    tangent = math.tan(math.radians(math.degrees(math.atan(shear))))
    return 1.0, tangent, (width / 2 + tangent * (height / 2)) - width / 2, 0.0, 1.0, 0.0


def _shear_y(shear, height, width):
    angle = math.radians(math.degrees(math.atan(shear)))
    tangent = math.sin(angle) / math.cos(angle)
    return 1.0, 0.0, 0.0, tangent, 1.0, (tangent * (width / 2) + height / 2) - height / 2


def _translate_x(pixels, height, width):
    return 1.0, 0.0, -pixels, 0.0, 1.0, 0.0


def _translate_y(pixels, height, width):
    return 1.0, 0.0, 0.0, 0.0, 1.0, -pixels


def _rotate(degrees, height, width):
    """Counter-clockwise for positive degrees about the image centre, as torchvision's ``rotate``."""
    cosine, sine = math.cos(math.radians(-degrees)), math.sin(math.radians(-degrees))
    return cosine, sine, 0.0, -sine, cosine, 0.0


def _scalar(value, height, width):
    return (value,)


# Each operation's kernel and the parameter it takes from the operation's value.
_OPERATIONS = {
    "Identity": (_identity, _scalar),
    "ShearX": (_affine, _shear_x),
    "ShearY": (_affine, _shear_y),
    "TranslateX": (_affine, _translate_x),
    "TranslateY": (_affine, _translate_y),
    "Rotate": (_affine, _rotate),
    "Brightness": (_brightness, _scalar),
    "Color": (_color, _scalar),
    "Contrast": (_contrast, _scalar),
    "Sharpness": (_sharpness, _scalar),
    "Posterize": (_posterize, _scalar),
    "Solarize": (_solarize, _scalar),
    "SolarizeAdd": (_solarize_add, _scalar),
    "Invert": (_invert, _scalar),
    "AutoContrast": (_autocontrast, _scalar),
    "Equalize": (_equalize, _scalar),
}


def apply_operations(images, operations):
    """Image k of ``images`` (N, 3, H, W) transformed by ``operations[k]``, a ``(name, value)``: the shear
    factor (``ShearX`` moves row j's source by ``value (j + 1/2)`` columns), the shift in pixels (positive to
    the right and down), the angle in degrees (counter-clockwise), the enhancement factor (1 leaves the image),
    the bits kept, the solarize threshold, SolarizeAdd's addition; ignored by the others. A new array, unless
    every operation is Identity."""
    return _apply(images, operations, None)


def _apply(images, operations, target):
    """``apply_operations``, writing the transformed images into ``target`` (which may be ``images``) if given.

    Each group's result is written over its rows of one copy of the batch: a copy and writes of the changed
    rows, where concatenating the groups and permuting them back would copy the whole batch twice.
    """
    height, width = images.shape[2:]
    groups = {}
    for index, (name, value) in enumerate(operations):
        kernel, parameter = _OPERATIONS[name]
        rows, parameters = groups.setdefault(kernel, ([], []))
        rows.append(index)
        parameters.append(parameter(value, height, width))
    if len(groups) == 1:
        ((kernel, (_, parameters)),) = groups.items()
        return kernel(images, np.array(parameters, np.float64))
    if target is None:
        target = images.copy()
    for kernel, (rows, parameters) in groups.items():
        if kernel is not _identity:
            rows = mx.nd.array(rows, ctx=images.context, dtype=np.int32)
            target[rows] = kernel(mx.nd.take(images, rows), np.array(parameters, np.float64))
    return target


def image_generator(seed, epoch, batch, index):
    """The generator of image ``index`` of the global batch ``batch`` of ``epoch``."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, batch, index], spawn_key=SPAWN_KEY))


class _Policy:
    """Draws each image's operations from its own generator (``draw``: one image's ``(name, value)`` for each
    step) and applies them step by step to the batch."""

    def __call__(self, images, epoch, batch, first_index):
        """``images`` (N, 3, H, W) on their device, image k being image ``first_index + k`` of batch ``batch``
        (counted from 0) of ``epoch``'s global batch; returns them augmented, a new array unless none changed."""
        height, width = images.shape[2:]
        draws = [self.draw(image_generator(self.seed, epoch, batch, first_index + offset), height, width)
                 for offset in range(images.shape[0])]
        augmented = images
        for step in zip(*draws):
            # After the first step the array is this call's own: later steps write into it.
            augmented = _apply(augmented, step, None if augmented is images else augmented)
        return augmented


class TrivialAugmentWide(_Policy):
    """torchvision's ``TrivialAugmentWide``: one operation of ``TA_OPERATIONS`` per image, one of 31 strengths."""

    def __init__(self, seed=0):
        self.seed = seed

    def draw(self, generator, height, width):
        """One image's ``[(name, value)]``, drawn as torchvision's ``forward`` draws: operation, bin, sign."""
        name = TA_OPERATIONS[generator.integers(len(TA_OPERATIONS))]
        bins, signed = _TA_SPACE[name]
        magnitude = 0.0 if bins is None else float(bins[generator.integers(MAGNITUDE_BINS)])
        if signed and generator.integers(2):
            magnitude = -magnitude
        if name in _ENHANCEMENTS:
            return [(name, 1.0 + magnitude)]
        if name in ("TranslateX", "TranslateY", "Posterize"):
            return [(name, float(int(magnitude)))]
        return [(name, magnitude)]


class RandAugment(_Policy):
    """timm's RandAugment: ``ops_per_image`` operations of ``RAND_OPERATIONS`` per image, drawn with replacement,
    each applied with probability 1/2 at ``magnitude`` (0..10) plus N(0, ``magnitude_std``^2) noise (uniform in
    [0, magnitude] if the deviation is infinite), clipped to [0, 10]; ``increasing`` takes timm's "inc" levels."""

    def __init__(self, magnitude, ops_per_image, magnitude_std=0.0, increasing=False, seed=0):
        self.magnitude, self.ops_per_image = magnitude, ops_per_image
        self.magnitude_std, self.increasing, self.seed = magnitude_std, increasing, seed

    def draw(self, generator, height, width):
        """One image's ``(name, value)`` for each step, drawn in timm's order: the operations, then for each its
        application, its magnitude and its sign; skipped ones are Identity."""
        steps = []
        for index in generator.integers(len(RAND_OPERATIONS), size=self.ops_per_image):
            if generator.random() > APPLY_PROBABILITY:
                steps.append(("Identity", 0.0))
                continue
            level = self.magnitude
            if self.magnitude_std == math.inf:
                level = generator.uniform(0, level)
            elif self.magnitude_std > 0:
                level = generator.normal(level, self.magnitude_std)
            level = min(max(level, 0.0), LEVEL_DENOM)
            name = RAND_OPERATIONS[index]
            steps.append((name, self._value(name, level / LEVEL_DENOM, generator, height, width)))
        return steps

    def _value(self, name, fraction, generator, height, width):
        """timm's level-to-argument function of ``name`` at ``fraction`` = level / 10."""
        def randomly_negated(value):
            return -value if generator.random() > 0.5 else value

        if name == "Rotate":
            return randomly_negated(30.0 * fraction)
        if name in ("ShearX", "ShearY"):
            return randomly_negated(0.3 * fraction)
        # timm's PIL offset moves the content the other way; with the random sign both directions are as likely.
        if name == "TranslateX":
            return randomly_negated(0.45 * fraction) * width
        if name == "TranslateY":
            return randomly_negated(0.45 * fraction) * height
        if name in _ENHANCEMENTS:
            return max(0.1, 1.0 + randomly_negated(0.9 * fraction)) if self.increasing else 1.8 * fraction + 0.1
        if name == "Posterize":
            bits = int(4 * fraction)
            return float(4 - bits if self.increasing else bits)
        if name == "Solarize":
            threshold = min(256, int(256 * fraction))
            return float(256 - threshold if self.increasing else threshold)
        if name == "SolarizeAdd":
            return float(min(128, int(110 * fraction)))
        return 0.0


_RAND_SECTION = re.compile(r"(mstd|inc|m|n)(\d+(?:\.\d+)?)")


def parse_policy(text, seed=0):
    """The policy that ``text`` spells, ``ta_wide`` or ``rand-mM-nN[-mstdS][-inc1]`` (timm's defaults M 10, N 2,
    S 0), drawing from ``seed``; a UserError says what is wrong with any other text."""
    if text == "ta_wide":
        return TrivialAugmentWide(seed)
    name, *sections = text.split("-")
    if name != "rand":
        raise UserError(f"unknown augmentation policy {text!r}; choose {POLICY_SPELLING}")
    settings = {}
    for section in sections:
        match = _RAND_SECTION.fullmatch(section)
        if match is None:
            raise UserError(f"cannot read {section!r} in {text!r}; spell a policy {POLICY_SPELLING}")
        key, value = match.groups()
        if key in settings:
            raise UserError(f"{key} is given twice in {text!r}; spell a policy {POLICY_SPELLING}")
        if key != "mstd" and "." in value:
            raise UserError(f"{key} must be a whole number in {text!r}; spell a policy {POLICY_SPELLING}")
        settings[key] = float(value) if key == "mstd" else int(value)
    magnitude, ops_per_image = settings.get("m", LEVEL_DENOM), settings.get("n", 2)
    if magnitude > LEVEL_DENOM:
        raise UserError(f"RandAugment magnitude m{magnitude} in {text!r} is above {LEVEL_DENOM}, timm's largest; "
                        f"e.g. rand-m9-n2")
    if ops_per_image < 1:
        raise UserError(f"RandAugment needs at least one operation per image, not n{ops_per_image} in {text!r}; "
                        f"e.g. rand-m9-n2")
    # timm takes any inc section, inc0 included, as on (bool of a non-empty string); here inc0 means off.
    if settings.get("inc", 0) > 1:
        raise UserError(f"inc is 0 or 1, not inc{settings['inc']} in {text!r}; e.g. rand-m9-n2-inc1")
    # As in timm, a deviation above 100 means uniform sampling in [0, M].
    magnitude_std = settings.get("mstd", 0.0)
    return RandAugment(magnitude, ops_per_image, math.inf if magnitude_std > 100 else magnitude_std,
                       bool(settings.get("inc", 0)), seed)


class AugmentThenNormalize:
    """The policy on a device's slice of whole-number RGB images, then the mean and standard deviation that the
    reader leaves out for it (section 2's, ``data.augmentation.RGB_MEAN``, ``RGB_STD``), as one call of
    ``utils.batch_transform.BatchTransform``'s."""

    def __init__(self, policy, mean, std):
        self.policy = policy
        self._mean, self._std = np.reshape(mean, (1, 3, 1, 1)), np.reshape(std, (1, 3, 1, 1))
        self._on_device = {}

    def __call__(self, images, epoch, batch, first_index):
        if images.context not in self._on_device:
            self._on_device[images.context] = (mx.nd.array(self._mean, ctx=images.context),
                                               mx.nd.array(self._std, ctx=images.context))
        mean, std = self._on_device[images.context]
        augmented = self.policy(images, epoch, batch, first_index)
        return mx.nd.broadcast_div(mx.nd.broadcast_sub(augmented, mean), std)
