"""Section 5.4, mixup: train on convex combinations of pairs of examples and of their targets."""
import mxnet as mx
import numpy as np


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


class MixupSchedule:
    """Draws ``lam ~ Beta(alpha, alpha)`` once per batch, and ``lam = 1`` (no mixing) in the last epochs.

    The paper uses ``alpha = 0.2``; ``off_epochs`` is GluonCV's ``--mixup-off-epoch``: the number of final
    epochs trained on clean images.
    """

    def __init__(self, alpha, num_epochs, off_epochs=0, seed=0):
        if alpha <= 0:
            raise ValueError(f"mixup alpha must be positive, got {alpha}")
        self.alpha = alpha
        self.last_mixed_epoch = num_epochs - off_epochs - 1
        self._random = np.random.RandomState(seed)

    def get_state(self):
        """The generator's state, saved in checkpoints so that a resumed run draws the same ``lam``."""
        return self._random.get_state()

    def set_state(self, state):
        self._random.set_state(state)

    def draw(self, epoch):
        """``lam`` for one batch of ``epoch``."""
        if epoch > self.last_mixed_epoch:
            return 1.0
        return float(self._random.beta(self.alpha, self.alpha))
