"""Shared fixtures: a tiny packed data set that any network separates within an epoch or two."""
import os

import cv2
import numpy as np
import pytest

from data.pack import pack_folder

COLOURS_RGB = {"blue": (20, 40, 220), "green": (30, 200, 60), "red": (220, 30, 40)}


def _draw_split(root, per_class, seed):
    """Solid-colour 24x24 images with noise: three classes any network separates within an epoch or two."""
    rng = np.random.RandomState(seed)
    for name, rgb in COLOURS_RGB.items():
        os.makedirs(os.path.join(root, name))
        for index in range(per_class):
            image = np.clip(np.array(rgb[::-1]) + rng.randint(-25, 26, size=(24, 24, 3)), 0, 255)
            cv2.imwrite(os.path.join(root, name, f"{index}.png"), image.astype(np.uint8))


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory):
    """Packed train (3 x 32) and val (3 x 10) splits, plus the raw folders they came from."""
    root = tmp_path_factory.mktemp("tiny")
    for split, per_class, seed in (("train", 32, 0), ("val", 10, 1)):
        _draw_split(str(root / "images" / split), per_class, seed)
        pack_folder(str(root / "images" / split), str(root / split), num_workers=1, log=lambda *_: None)
    return root


def tiny_args(tiny_set, save_dir, *extra):
    """Command-line arguments for a two-epoch ResNet-18-D run on ``tiny_set``; ``extra`` flags come last."""
    return ["--rec-train", str(tiny_set / "train.rec"), "--rec-val", str(tiny_set / "val.rec"),
            "--model", "resnet18_v1d", "--input-size", "24", "--batch-size", "16", "--num-epochs", "2",
            "--lr", "0.02", "--lr-decay-epoch", "1", "-j", "1", "--save-dir", str(save_dir), *extra]
