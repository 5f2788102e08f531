"""Section 5.4, mixup: train on convex combinations of pairs of examples and of their targets; and the schedule
that decides, batch by batch, whether a batch is mixed by mixup or by CutMix (``utils/cutmix.py``)."""
import dataclasses

import mxnet as mx
import numpy as np

from utils.cutmix import random_box


def mix(images, targets, lam):
    """``lam * x_i + (1 - lam) * x_j`` for images and targets alike, ``j`` the batch in reverse order.

    Pairing each example with its mirror in the batch needs no second batch and keeps the pairs on one
    device. ``lam = 1`` returns the batch unchanged.
    """
    mixed_images = lam * images + (1 - lam) * mx.nd.flip(images, axis=0)
    mixed_targets = lam * targets + (1 - lam) * mx.nd.flip(targets, axis=0)
    return mixed_images, mixed_targets


def dominant_labels(labels, lam):
    """The label that weighs most in each mixed example: training accuracy stays meaningful under mixup."""
    return labels if lam >= 0.5 else mx.nd.flip(labels, axis=0)


@dataclasses.dataclass(frozen=True)
class MixDraw:
    """How one batch is mixed: ``mode`` "none", "mixup" or "cutmix"; the weight ``lam`` of each example's own
    target (1 when unmixed); for CutMix, the pasted ``box`` ``(top, bottom, left, right)``."""

    mode: str
    lam: float = 1.0
    box: tuple = None


UNMIXED = MixDraw("none")


class MixSchedule:
    """Draws once per batch whether and how it is mixed, from one generator seeded with ``--seed``.

    As timm's ``Mixup``: a batch is mixed with probability ``mix_prob``; a mixed batch is CutMix with
    probability ``switch_prob`` when both tricks are on (``mixup_alpha`` and ``cutmix_alpha`` positive; 0 turns
    one off); mixup's ``lam ~ Beta(mixup_alpha, mixup_alpha)`` (the paper's alpha is 0.2), CutMix's ``lam ~
    Beta(cutmix_alpha, cutmix_alpha)`` with its box drawn next and ``lam`` corrected to the box. The last
    ``off_epochs`` epochs (GluonCV's ``--mixup-off-epoch``) are unmixed and draw nothing.

    A choice that is certain draws nothing either (``mix_prob`` 1, one trick alone): mixup alone with
    ``mix_prob`` 1 then draws exactly the ``lam`` sequence it drew before CutMix existed, so its runs and
    checkpoints are unchanged. Every device and every worker builds the same schedule, hence the same draws.
    """

    def __init__(self, mixup_alpha, cutmix_alpha, num_epochs, off_epochs=0, mix_prob=1.0, switch_prob=0.5, seed=0):
        if mixup_alpha < 0 or cutmix_alpha < 0 or not (mixup_alpha or cutmix_alpha):
            raise ValueError(f"mixup and CutMix alphas must be 0 (off) or positive, one of them positive; got "
                             f"{mixup_alpha} and {cutmix_alpha}")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.mix_prob, self.switch_prob = mix_prob, switch_prob
        self.last_mixed_epoch = num_epochs - off_epochs - 1
        self._random = np.random.RandomState(seed)

    def get_state(self):
        """The generator's state, saved in checkpoints so that a resumed run draws what the uninterrupted run drew."""
        return self._random.get_state()

    def set_state(self, state):
        self._random.set_state(state)

    def _chooses_cutmix(self):
        if not self.mixup_alpha:
            return True
        if not self.cutmix_alpha:
            return False
        return self._random.rand() < self.switch_prob

    def draw(self, epoch, image_size):
        """The ``MixDraw`` of one batch of ``epoch`` whose images are ``image_size`` ``(height, width)``."""
        if epoch > self.last_mixed_epoch:
            return UNMIXED
        if self.mix_prob < 1 and self._random.rand() >= self.mix_prob:
            return UNMIXED
        if self._chooses_cutmix():
            box, lam = random_box(image_size, self._random.beta(self.cutmix_alpha, self.cutmix_alpha), self._random)
            return MixDraw("cutmix", lam, box)
        return MixDraw("mixup", float(self._random.beta(self.mixup_alpha, self.mixup_alpha)))
