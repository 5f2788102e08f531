"""Repeated augmentation (``--ra-reps N``): each batch holds B/N distinct images N times, every copy augmented on
its own and the copies on different devices, the epoch as long as without it and the same when rebuilt; from
packed records and from image folders, and end to end through ``train_imagenet.main``."""
import os

import cv2
import mxnet as mx
import numpy as np
import pytest

import train_imagenet
from data.loaders import InputConfig, folder_source, record_source
from data.pack import pack_folder
from tests.conftest import ONE_EPOCH, tiny_args
from tests.helpers import RunRecorder
from utils.devices import split_batch

NUM_IMAGES = 48
BATCH = 8


@pytest.fixture(scope="module")
def unique_set(tmp_path_factory):
    """48 noise images of 28 x 36, each its own class, so that a label names its image: packed (validation reads the
    same records) and as folders (val/ the same images)."""
    root = tmp_path_factory.mktemp("unique")
    rng = np.random.RandomState(0)
    for index in range(NUM_IMAGES):
        image = rng.randint(0, 256, size=(28, 36, 3)).astype(np.uint8)
        for split in ("train", "val"):
            os.makedirs(root / "images" / split / f"c{index:02d}")
            cv2.imwrite(str(root / "images" / split / f"c{index:02d}" / "0.png"), image)
    pack_folder(str(root / "images" / "train"), str(root / "train"), num_workers=1, log=lambda *_: None)
    return root


def _config(reps, num_workers=2, seed=5):
    return InputConfig(batch_size=BATCH, input_size=24, crop_ratio=0.875, num_workers=num_workers, seed=seed,
                       ra_reps=reps)


def _records(unique_set, reps, **kwargs):
    rec = str(unique_set / "train.rec")
    return record_source(rec, rec, _config(reps, **kwargs))


def _epoch(source, epoch, start_batch=0):
    """(labels, images) of every batch of ``epoch``, as numpy."""
    return [(batch.label[0].asnumpy().astype(int), batch.data[0].asnumpy())
            for batch in source.train.epoch(epoch, start_batch)]


def _assert_repeated(batches, reps):
    """Block k of every batch holds copy k of the same B/N distinct images, in the same order, augmented apart."""
    distinct = BATCH // reps
    for labels, images in batches:
        blocks = labels.reshape(reps, distinct)
        assert len(set(blocks[0])) == distinct, labels
        assert (blocks == blocks[0]).all(), labels
        for copy in range(1, reps):
            for place in range(distinct):
                assert not np.allclose(images[copy * distinct + place], images[place], atol=1e-3)


@pytest.mark.parametrize("reps", [2, 4])
def test_each_batch_holds_batch_over_n_images_n_times_in_an_epoch_as_long(unique_set, reps):
    plain, repeated = _records(unique_set, 1), _records(unique_set, reps)
    assert repeated.batches_per_epoch == plain.batches_per_epoch == NUM_IMAGES // BATCH
    for epoch in (0, 1):
        batches = _epoch(repeated, epoch)
        assert len(batches) == NUM_IMAGES // BATCH
        _assert_repeated(batches, reps)
        # The epoch reads the first 1/N of the shuffle it would read without repetition, each image once.
        firsts = np.concatenate([labels[:BATCH // reps] for labels, _ in batches])
        assert len(set(firsts)) == NUM_IMAGES // reps
        np.testing.assert_array_equal(firsts, np.concatenate([labels for labels, _ in _epoch(plain, epoch)])[
            :NUM_IMAGES // reps])


@pytest.mark.parametrize("reps, devices", [(2, 2), (4, 2), (2, 4)])
def test_copies_land_on_different_devices(unique_set, reps, devices):
    """Contiguous slices of B/D, copies B/N apart: each image on min(N, D) devices, N/D copies on each when N > D."""
    contexts = [mx.cpu(index) for index in range(devices)]
    for batch in _records(unique_set, reps).train.epoch(0):
        slices = [part.asnumpy().astype(int).tolist() for part in split_batch(batch.label[0], contexts)]
        for label in set(batch.label[0].asnumpy().astype(int).tolist()):
            holders = [part.count(label) for part in slices if label in part]
            assert len(holders) == min(reps, devices) and set(holders) == {max(1, reps // devices)}, slices


def test_each_worker_repeats_the_images_of_its_own_shard(unique_set):
    """Under dist_* (num_parts workers) the copies of an image stay within the worker that reads it: in every epoch
    the two workers' shards of the epoch's order are disjoint, and each worker's batches hold their own copies."""
    rec, seen = str(unique_set / "train.rec"), {}
    for part in (0, 1):
        config = InputConfig(batch_size=BATCH, input_size=24, crop_ratio=0.875, num_workers=1, seed=5, num_parts=2,
                             part_index=part, ra_reps=2)
        source = record_source(rec, rec, config)
        assert source.batches_per_epoch == NUM_IMAGES // 2 // BATCH
        for epoch in range(4):
            batches = _epoch(source, epoch)
            _assert_repeated(batches, 2)
            seen[part, epoch] = {label for labels, _ in batches for label in labels}
    for epoch in range(4):
        assert not seen[0, epoch] & seen[1, epoch] and len(seen[0, epoch]) == len(seen[1, epoch]) == NUM_IMAGES // 4


def test_an_epoch_is_the_same_when_rebuilt_and_resumed_mid_epoch(unique_set):
    first, again = _epoch(_records(unique_set, 2), 1), _records(unique_set, 2, num_workers=3)
    for (labels, images), (labels_again, images_again) in zip(first, _epoch(again, 1)):
        np.testing.assert_array_equal(labels_again, labels)
        np.testing.assert_array_equal(images_again, images)
    for (labels, images), (labels_again, images_again) in zip(first[2:], _epoch(again, 1, start_batch=2)):
        np.testing.assert_array_equal(labels_again, labels)
        np.testing.assert_array_equal(images_again, images)
    # Another epoch or seed: another order.
    assert not np.array_equal(_epoch(again, 2)[0][0], first[0][0])
    assert not np.array_equal(_epoch(_records(unique_set, 2, seed=6), 1)[0][0], first[0][0])


def test_folder_batches_repeat_the_same_way(unique_set):
    config = _config(2, num_workers=1)
    source = folder_source(str(unique_set / "images"), config)
    assert source.batches_per_epoch == NUM_IMAGES // BATCH
    batches = _epoch(source, 1)
    assert len(batches) == NUM_IMAGES // BATCH
    _assert_repeated(batches, 2)
    again = _epoch(folder_source(str(unique_set / "images"), _config(2)), 1)
    for (labels, images), (labels_again, images_again) in zip(batches, again):
        np.testing.assert_array_equal(labels_again, labels)
        np.testing.assert_array_equal(images_again, images)


def test_a_batch_the_copies_do_not_divide_is_one_line(tiny_set, tmp_path, capsys):
    assert train_imagenet.main(tiny_args(tiny_set, tmp_path, "--ra-reps", "3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --ra-reps 3 repeats each image of a batch 3 times, but --batch-size 16 x 1 devices = 16 "
                   "images is not a multiple of 3; change --batch-size or --ra-reps"], err
    assert train_imagenet.main(tiny_args(tiny_set, tmp_path, "--ra-reps", "2", "--batch-size", "3",
                                         "--num-cpu-contexts", "3", *ONE_EPOCH)) == 2
    assert "--batch-size 3 x 3 devices = 9 images is not a multiple of 2" in capsys.readouterr().err


def test_training_on_two_devices_sees_each_image_on_both(unique_set, tmp_path, monkeypatch):
    """--ra-reps 2 over two CPU contexts: at every step the network saw the same images in the same order on both
    devices, augmented apart; ignoring the flag, the two slices would hold other images."""
    recorder = RunRecorder(monkeypatch)
    rec = str(unique_set / "train.rec")
    argv = tiny_args(unique_set, tmp_path, "--ra-reps", "2", "--num-cpu-contexts", "2", "--batch-size", "4",
                     *ONE_EPOCH)
    argv[1] = argv[3] = rec
    assert train_imagenet.main(argv) == 0
    assert len(recorder.batches) == NUM_IMAGES // BATCH
    for batch in recorder.batches:
        (labels_0, labels_1), (call_0, call_1) = batch["labels"], batch["calls"]
        assert len(set(labels_0.tolist())) == 4
        np.testing.assert_array_equal(labels_1, labels_0)
        for image_0, image_1 in zip(call_0["inputs"], call_1["inputs"]):
            assert not np.allclose(image_0, image_1, atol=1e-3)
