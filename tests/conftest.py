"""Shared fixtures: a tiny packed data set that any network separates within an epoch or two; and the cycle
collection that keeps the suite's memory bounded."""
import ctypes
import gc
import os

import cv2
import numpy as np
import pytest

from data.pack import pack_folder

# What a test frees is not given back to the system soon: its networks and arrays may sit in cycles, which the
# garbage collector (counting Python objects, not the NDArrays' memory behind them) reaches too rarely, and what is
# freed stays in glibc's heaps. Over the suite the process grew to 7.3 GB; after test_models, test_drop_path and
# test_convert it held 2.5 GB, 0.9 GB once collected and trimmed (malloc_trim). Above this bound, a test's end does
# both, and the suite peaks where one test does.
COLLECT_ABOVE_BYTES = 1 << 30
COLOURS_RGB = {"blue": (20, 40, 220), "green": (30, 200, 60), "red": (220, 30, 40)}


def _resident_bytes():
    """This process's resident memory, from Linux's /proc (elsewhere: as if above the bound)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return COLLECT_ABOVE_BYTES + 1


def _release_freed_memory():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator keeps what it keeps


def pytest_runtest_teardown(item, nextitem):
    if _resident_bytes() > COLLECT_ABOVE_BYTES:
        _release_freed_memory()


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


# tiny_args decays the rate at epoch 1, which a run of one epoch does not reach (and refuses): no step instead.
ONE_EPOCH = ("--num-epochs", "1", "--lr-decay-epoch=")


def tiny_args(tiny_set, save_dir, *extra):
    """Command-line arguments for a two-epoch ResNet-18-D run on ``tiny_set``; ``extra`` flags come last."""
    return ["--rec-train", str(tiny_set / "train.rec"), "--rec-val", str(tiny_set / "val.rec"),
            "--model", "resnet18_v1d", "--input-size", "24", "--batch-size", "16", "--num-epochs", "2",
            "--lr", "0.02", "--lr-decay-epoch", "1", "-j", "1", "--save-dir", str(save_dir), *extra]
