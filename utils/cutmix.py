"""CutMix (Yun et al., ICCV 2019): paste a box of the paired image and weigh the targets by the areas.

Section 3.1, equations (1) and (2): ``x~ = M * x_A + (1 - M) * x_B`` and ``y~ = lam * y_A + (1 - lam) * y_B``,
where the binary mask ``M`` is 0 inside a box of sides ``r_h = H sqrt(1 - lam)`` and ``r_w = W sqrt(1 - lam)``,
its centre uniform over the image, and ``lam ~ Beta(alpha, alpha)`` (the paper's alpha is 1).

The box is the authors' rule, their code's ``rand_bbox`` (clovaai/CutMix-PyTorch, ``train.py``), to the pixel:
sides ``int(H sqrt(1 - lam))`` and ``int(W sqrt(1 - lam))``; the centre a pixel drawn uniformly, row then
column; the box reaching ``side // 2`` either way of it (so an odd side loses a pixel) and clipped to the image;
then ``lam`` recomputed from the clipped area, ``lam = 1 - box area / image area``. timm's ``rand_bbox`` with
its default margin 0, through ``cutmix_bbox_and_lam`` with ``correct_lam``, computes the same box from the same
centre; its ``cutmix_minmax`` boxes and per-image modes are not offered here. What is not the authors' is the
pairing and the draws: the authors pair each image with a random permutation of the batch and draw from numpy's
global generator, where we pair as timm does (below) and draw from the mixing schedule's seeded generator
(``utils/mixup.py``): a seed's boxes are its own, not those of either code's seed.

``B`` is ``A``'s batch in reverse order, as for mixup (``utils/mixup.py``): the pairs stay on one device.
"""
import math

import mxnet as mx


def clipped_box(image_size, lam, centre):
    """The box ``(top, bottom, left, right)`` (bottom and right excluded) of area ``1 - lam`` around ``centre``
    ``(row, column)``, clipped to the image of ``image_size`` ``(height, width)``, and the corrected ``lam``."""
    height, width = image_size
    ratio = math.sqrt(1.0 - lam)
    half_height, half_width = int(height * ratio) // 2, int(width * ratio) // 2
    row, column = centre
    top, bottom = max(row - half_height, 0), min(row + half_height, height)
    left, right = max(column - half_width, 0), min(column + half_width, width)
    return (top, bottom, left, right), 1.0 - (bottom - top) * (right - left) / (height * width)


def random_box(image_size, lam, random_state):
    """``clipped_box`` with its centre drawn uniformly over the pixels from ``random_state`` (numpy's)."""
    height, width = image_size
    centre = (int(random_state.randint(0, height)), int(random_state.randint(0, width)))
    return clipped_box(image_size, lam, centre)


def cutmix(images, targets, box, lam):
    """Equation (1) on one device's batch: each image gets ``box`` of its mirror in the batch, each target
    ``lam`` of its own and ``1 - lam`` of the mirror's; ``lam`` is the box's corrected weight."""
    top, bottom, left, right = box
    pasted = images.copy()
    pasted[:, :, top:bottom, left:right] = mx.nd.flip(images, axis=0)[:, :, top:bottom, left:right]
    return pasted, lam * targets + (1 - lam) * mx.nd.flip(targets, axis=0)
