"""Section 2's augmentation settings, shared by the training readers of packed records and image folders
(``data.record_reader``), validation's normalization and ``data.auto_augment``'s."""

# RGB mean and standard deviation of ImageNet, on the [0, 255] scale.
RGB_MEAN = (123.68, 116.779, 103.939)
RGB_STD = (58.393, 57.12, 57.375)
# Random-resized-crop area (a fraction of the image's) and aspect ratio (width over height).
CROP_AREA = (0.08, 1.0)
CROP_ASPECT_RATIO = (3 / 4, 4 / 3)
# Brightness, contrast and saturation factors uniform in [1 - JITTER, 1 + JITTER].
JITTER = 0.4
# Standard deviation of the PCA lighting noise's alphas (AlexNet's).
LIGHTING_STD = 0.1
