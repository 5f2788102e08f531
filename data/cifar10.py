"""Unpack CIFAR-10's public binary version into the image folders that ``data.pack`` reads.

    python -m data.cifar10 ARCHIVE OUT_DIR

ARCHIVE is ``cifar-10-binary.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html ("CIFAR-10 binary version").
It writes OUT_DIR/train/<class>/NNNNN.png (the 50,000 images of ``data_batch_1.bin`` to ``data_batch_5.bin``) and
OUT_DIR/val/<class>/NNNNN.png (the 10,000 of ``test_batch.bin``), NNNNN being the image's place in its split, so
that a sorted listing of a class folder is the data set's order. PNG keeps the pixels exactly.

The binary version is read, not the python version: its batches are pickles, and unpickling a file runs whatever
code it holds. Here every record is plain bytes, one label byte and 3,072 pixel bytes (the 1,024 red, then green,
then blue values of a 32x32 image, row by row), and the class names are the lines of ``batches.meta.txt``; the
archive is read in place, nothing of it is extracted.
"""
import argparse
import os
import sys
import tarfile

import cv2
import numpy as np

from utils.errors import UserError, command_line_entry

SIDE = 32
RECORD_BYTES = 1 + 3 * SIDE * SIDE
SPLITS = {"train": [f"data_batch_{number}.bin" for number in range(1, 6)], "val": ["test_batch.bin"]}
CLASS_NAMES_FILE = "batches.meta.txt"
DOWNLOAD = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


def read_records(data, name):
    """(labels, images) of one batch file's bytes: labels (N,), images (N, 32, 32, 3) RGB."""
    if not data or len(data) % RECORD_BYTES:
        raise UserError(f"{name} holds {len(data)} bytes, not a whole number of {RECORD_BYTES}-byte records; "
                        f"download the archive again ({DOWNLOAD})")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    images = records[:, 1:].reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return records[:, 0], images


def _members_by_name(archive):
    """The archive's regular files by base name (the binary version keeps them in ``cifar-10-batches-bin/``)."""
    try:
        handle = tarfile.open(archive, "r:*")
        members = {os.path.basename(member.name): member for member in handle.getmembers() if member.isfile()}
    except FileNotFoundError:
        raise UserError(f"archive {archive} does not exist; download it from {DOWNLOAD}") from None
    except (tarfile.TarError, OSError, EOFError) as error:
        raise UserError(f"{archive} is not a readable tar archive ({error}); download the binary version, "
                        f"{DOWNLOAD}") from None
    return handle, members


def _member_bytes(handle, members, name, archive):
    if name not in members:
        raise UserError(f"{archive} has no {name}: it is not CIFAR-10's binary version (the python version's "
                        f"pickles are not read); download {DOWNLOAD}")
    return handle.extractfile(members[name]).read()


def unpack(archive, out_dir, log=print):
    """Write every image of ``archive`` into ``out_dir``/<split>/<class>/; return {split: number of images}."""
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise UserError(f"{out_dir} exists and is not an empty folder; give a new OUT_DIR")
    handle, members = _members_by_name(archive)
    with handle:
        class_names = _member_bytes(handle, members, CLASS_NAMES_FILE, archive).decode("ascii", "replace").split()
        counts = {}
        for split, files in SPLITS.items():
            batches = [read_records(_member_bytes(handle, members, name, archive), name) for name in files]
            labels = np.concatenate([labels for labels, _ in batches])
            if labels.max() >= len(class_names):
                raise UserError(f"{archive} has label {labels.max()}, beyond its {len(class_names)} class names; "
                                f"download the archive again ({DOWNLOAD})")
            for name in class_names:
                os.makedirs(os.path.join(out_dir, split, name))
            images = (image for _, batch in batches for image in batch)
            for index, (label, image) in enumerate(zip(labels, images)):
                path = os.path.join(out_dir, split, class_names[label], f"{index:05d}.png")
                if not cv2.imwrite(path, image[:, :, ::-1]):  # OpenCV writes BGR
                    raise UserError(f"cannot write {path}; check the disk's room and permissions")
            counts[split] = len(labels)
            log(f"{split}: {len(labels)} images of {len(class_names)} classes in {os.path.join(out_dir, split)}")
    return counts


def build_parser():
    """The command-line arguments of ``python -m data.cifar10``."""
    parser = argparse.ArgumentParser(
        prog="python -m data.cifar10",
        description="Unpack CIFAR-10's binary version into OUT_DIR/train/<class>/ and OUT_DIR/val/<class>/ PNGs.")
    parser.add_argument("archive", metavar="ARCHIVE", help=f"cifar-10-binary.tar.gz, from {DOWNLOAD}")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="a new folder for the image folders")
    return parser


@command_line_entry
def main(argv=None):
    """Unpack on command-line arguments; return the exit status (2 on bad input)."""
    args = build_parser().parse_args(argv)
    unpack(args.archive, args.out_dir)


if __name__ == "__main__":
    sys.exit(main())
