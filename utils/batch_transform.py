"""What one training batch trains on: its images through an augmentation policy (``data/auto_augment.py``) when
the reader left them unnormalized for it; its labels as they are, smoothed (section 5.2), mixed by mixup
(section 5.4) or CutMix (``utils/cutmix.py``), each image randomly erased (``utils/random_erasing.py``) before it
is mixed, as timm and torchvision erase in the loader."""
from utils.cutmix import cutmix
from utils.label_smoothing import smooth_targets
from utils.mixup import UNMIXED, dominant_labels, mix


class BatchTransform:
    """Built once before the loop from the run's tricks; called on every batch's per-device slices, in order.

    Returns the images to train on, the targets for the loss (integer labels unless smoothing or mixing is on,
    dense rows otherwise) and the labels that the training accuracy is measured against (under mixup and
    CutMix the dominant one of each pair).

    ``auto_augment`` (``data.auto_augment.AugmentThenNormalize``) augments and normalizes the images first;
    ``erasing`` (``utils.random_erasing.RandomErasing``) erases them next; ``mix_schedule``
    (``utils.mixup.MixSchedule``) draws each batch's mixing, of the erased images. The policy and erasing draw per
    image, and need to know where each image is in the global batch: ``first_index`` is the index of this
    process's first image (0 but under ``dist_*``), and each device's slice follows the previous one; and the
    batch's number in its epoch, which the loop gives.
    """

    def __init__(self, num_classes, label_smoothing=0.0, smoothing_style="paper", mix_schedule=None, erasing=None,
                 first_index=0, auto_augment=None):
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.smoothing_style = smoothing_style
        self.mix_schedule = mix_schedule
        self.erasing = erasing
        self.first_index = first_index
        self.auto_augment = auto_augment

    @property
    def sparse_targets(self):
        """True when the loss gets integer labels rather than target distributions."""
        return not self.label_smoothing and self.mix_schedule is None

    def get_state(self):
        """What a checkpoint keeps so that a resumed run mixes its batches as the uninterrupted run would: the
        mixing schedule's generator (erasing draws from the batch's place alone)."""
        return dict(mix_schedule=self.mix_schedule.get_state() if self.mix_schedule is not None else None)

    def set_state(self, state):
        if state["mix_schedule"] is not None and self.mix_schedule is not None:
            self.mix_schedule.set_state(state["mix_schedule"])

    def __call__(self, images, labels, epoch, batch=0):
        """The batch numbered ``batch`` (from 0) in ``epoch``, as per-device slices."""
        targets, metric_labels = labels, labels
        if self.auto_augment is not None:
            images = self._per_image(self.auto_augment, images, epoch, batch)
        if self.erasing is not None:
            images = self._per_image(self.erasing, images, epoch, batch)
        if not self.sparse_targets:
            targets = [smooth_targets(label, self.num_classes, self.label_smoothing, self.smoothing_style)
                       for label in labels]
            draw = UNMIXED if self.mix_schedule is None else self.mix_schedule.draw(epoch, images[0].shape[-2:])
            if draw.lam != 1.0:
                if draw.mode == "cutmix":
                    mixed = [cutmix(image, target, draw.box, draw.lam) for image, target in zip(images, targets)]
                else:
                    mixed = [mix(image, target, draw.lam) for image, target in zip(images, targets)]
                images, targets = [pair[0] for pair in mixed], [pair[1] for pair in mixed]
                metric_labels = [dominant_labels(label, draw.lam) for label in labels]
        return images, targets, metric_labels

    def _per_image(self, transform, images, epoch, batch):
        """``transform(slice, epoch, batch, index of the slice's first image in the global batch)`` per slice."""
        transformed, first_index = [], self.first_index
        for image in images:
            transformed.append(transform(image, epoch, batch, first_index))
            first_index += image.shape[0]
        return transformed
