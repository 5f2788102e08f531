"""data.cifar10: CIFAR-10's binary version unpacked into image folders, pixel for pixel, through the CLI."""
import io
import os
import pickle
import subprocess
import sys
import tarfile

import cv2
import numpy as np

from tests.helpers import CIFAR10_CLASSES, write_cifar10_binary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cifar10(*args):
    return subprocess.run([sys.executable, "-m", "data.cifar10", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_every_image_lands_in_its_class_folder_with_its_pixels(tmp_path):
    batches = write_cifar10_binary(tmp_path / "cifar-10-binary.tar.gz", images_per_batch=4)
    result = run_cifar10(tmp_path / "cifar-10-binary.tar.gz", tmp_path / "cifar10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"train: 20 images of 10 classes in {tmp_path / 'cifar10' / 'train'}",
        f"val: 4 images of 10 classes in {tmp_path / 'cifar10' / 'val'}"]
    for split, names in (("train", [f"data_batch_{n}.bin" for n in range(1, 6)]), ("val", ["test_batch.bin"])):
        labels = np.concatenate([batches[name][0] for name in names])
        images = np.concatenate([batches[name][1] for name in names])
        assert sorted(os.listdir(tmp_path / "cifar10" / split)) == sorted(CIFAR10_CLASSES)
        for index, (label, image) in enumerate(zip(labels, images)):
            written = cv2.imread(str(tmp_path / "cifar10" / split / CIFAR10_CLASSES[label] / f"{index:05d}.png"))
            np.testing.assert_array_equal(written[:, :, ::-1], image)
        assert sum(len(files) for _, _, files in os.walk(tmp_path / "cifar10" / split)) == len(labels)


def test_the_python_version_is_refused_without_unpickling(tmp_path):
    """A pickle that would create a file if loaded: the archive is refused in one line and the file never made."""
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        data = pickle.dumps(Payload())
        member = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        member.size = len(data)
        handle.addfile(member, io.BytesIO(data))
    result = run_cifar10(archive, tmp_path / "cifar10")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {archive} has no batches.meta.txt: it is not CIFAR-10's binary version (the python version's "
        "pickles are not read); download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
    assert not (tmp_path / "pwned").exists()


def test_a_truncated_batch_and_a_used_folder_are_one_line_each(tmp_path):
    write_cifar10_binary(tmp_path / "good.tar.gz")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("")
    result = run_cifar10(tmp_path / "good.tar.gz", tmp_path / "used")
    assert (result.returncode, result.stderr) == (2, f"error: {tmp_path / 'used'} exists and is not an empty "
                                                     "folder; give a new OUT_DIR\n")
    with tarfile.open(tmp_path / "good.tar.gz") as good, tarfile.open(tmp_path / "cut.tar.gz", "w:gz") as cut:
        for member in good.getmembers():
            data = good.extractfile(member).read()
            if member.name.endswith("data_batch_2.bin"):
                data = data[:-5]
                member.size = len(data)
            cut.addfile(member, io.BytesIO(data))
    result = run_cifar10(tmp_path / "cut.tar.gz", tmp_path / "out")
    assert (result.returncode, result.stderr) == (2, "error: data_batch_2.bin holds 9214 bytes, not a whole number "
                                                     "of 3073-byte records; download the archive again "
                                                     "(https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz)\n")
    assert run_cifar10(tmp_path / "missing.tar.gz", tmp_path / "x").stderr == (
        f"error: archive {tmp_path / 'missing.tar.gz'} does not exist; download it from "
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz\n")
