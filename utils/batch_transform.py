"""What one training batch trains on: its labels as they are, smoothed (section 5.2), mixed (section 5.4)."""
from utils.label_smoothing import smooth_targets
from utils.mixup import dominant_labels, mix


class BatchTransform:
    """Built once before the loop from the run's tricks; called on every batch's per-device slices.

    Returns the images to train on, the targets for the loss (integer labels when neither trick is on,
    dense rows otherwise) and the labels that the training accuracy is measured against (under mixup the
    dominant one of each pair).
    """

    def __init__(self, num_classes, label_smoothing=0.0, smoothing_style="paper", mixup=None):
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.smoothing_style = smoothing_style
        self.mixup = mixup

    @property
    def sparse_targets(self):
        """True when the loss gets integer labels rather than target distributions."""
        return not self.label_smoothing and self.mixup is None

    def __call__(self, images, labels, epoch):
        if self.sparse_targets:
            return images, labels, labels
        targets = [smooth_targets(label, self.num_classes, self.label_smoothing, self.smoothing_style)
                   for label in labels]
        lam = self.mixup.draw(epoch) if self.mixup is not None else 1.0
        if lam == 1.0:
            return images, targets, labels
        mixed = [mix(image, target, lam) for image, target in zip(images, targets)]
        return ([pair[0] for pair in mixed], [pair[1] for pair in mixed],
                [dominant_labels(label, lam) for label in labels])
