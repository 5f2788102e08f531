"""Random erasing (Zhong et al., AAAI 2020): each training image, with probability ``p``, gets one rectangle of
noise, so that the network learns from the parts of an object that remain.

Section 3.1, Algorithm 1: with probability ``p`` draw the rectangle's area ``S_e ~ U(s_l, s_h) x S`` and aspect
ratio ``r_e``, its sides ``H_e = sqrt(S_e r_e)`` and ``W_e = sqrt(S_e / r_e)``, and its corner uniformly; retry
while it does not fit in the image; fill it with random values. The ranges are torchvision's ``RandomErasing``
defaults (the paper has ``s_h = 0.4`` and ``r_e`` uniform; timm 1/3 and 1/0.3): ``S_e / S`` in [0.02, 0.33],
``r_e`` log-uniform in [0.3, 3.3], sides rounded to whole pixels; as there and in timm, at most 10 tries, after
which the image is left whole. The fill
is on the normalized image: ``pixel`` per-pixel standard normal noise (timm's ``--remode pixel``), ``const``
zeros (the mean colour).

It runs on the device (``utils/batch_transform.py``), before mixup or CutMix, as timm and torchvision erase in
the loader: a rectangle hides part of one image, which mixup then blends with its pair and over which a CutMix
box may be pasted; the targets do not depend on it.

Every draw of an image comes from its own generator, seeded by (``--seed``, epoch, batch, the image's index in
the global batch): one device, N devices and N dist_sync workers erase the same rectangles of the same images
with the same noise, and a resumed run what the uninterrupted one erased. Rectangles and noise are drawn on the
CPU with numpy (a generator costs some 25 microseconds) and the rectangle's noise copied to the device, one
copy and one assignment per erased image: at most 3 x 0.33 x H x W numbers, small beside the batch of images
copied there anyway.
"""
import math

import mxnet as mx
import numpy as np

ERASE_MODES = ("pixel", "const")
AREA_FRACTIONS = (0.02, 0.33)
ASPECT_RATIOS = (0.3, 3.3)
ATTEMPTS = 10


def draw_rectangle(image_size, generator):
    """``(top, left, height, width)`` of one rectangle that fits in an image of ``image_size`` ``(height,
    width)``, drawn from ``generator`` (numpy's); None if none of ``ATTEMPTS`` tries fits."""
    image_height, image_width = image_size
    log_aspects = (math.log(ASPECT_RATIOS[0]), math.log(ASPECT_RATIOS[1]))
    for _ in range(ATTEMPTS):
        area = generator.uniform(*AREA_FRACTIONS) * image_height * image_width
        aspect = math.exp(generator.uniform(*log_aspects))
        height, width = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        # An empty side erases nothing: try again, as for a rectangle that does not fit.
        if 0 < height < image_height and 0 < width < image_width:
            top = int(generator.integers(0, image_height - height + 1))
            left = int(generator.integers(0, image_width - width + 1))
            return top, left, height, width
    return None


class RandomErasing:
    """Erases one device's slice of a training batch; built once per run from ``--reprob``, ``--remode``, ``--seed``."""

    def __init__(self, probability, mode="pixel", seed=0):
        if mode not in ERASE_MODES:
            raise ValueError(f"unknown random-erasing mode {mode!r}; choose one of {', '.join(ERASE_MODES)}")
        self.probability, self.mode, self.seed = probability, mode, seed

    def __call__(self, images, epoch, batch, first_index):
        """``images`` (N, C, H, W) on their device, image k being image ``first_index + k`` of batch ``batch``
        (counted from 0) of ``epoch``'s global batch; returns them with their rectangles erased, as a new array
        when any is (the caller's stays as it was)."""
        channels, image_height, image_width = images.shape[1:]
        erased = images
        for offset in range(images.shape[0]):
            generator = np.random.default_rng([self.seed, epoch, batch, first_index + offset])
            if generator.random() >= self.probability:
                continue
            rectangle = draw_rectangle((image_height, image_width), generator)
            if rectangle is None:
                continue
            top, left, height, width = rectangle
            if erased is images:
                erased = images.copy()
            fill = 0.0
            if self.mode == "pixel":
                fill = mx.nd.array(generator.standard_normal((channels, height, width), dtype=np.float32),
                                   ctx=images.context, dtype=images.dtype)
            erased[offset, :, top:top + height, left:left + width] = fill
        return erased
