"""data.record_reader: per-image augmentation from packed records, the same for any number of threads, devices and
workers, on resume too; MXNet's crop, flip and normalization pixel for pixel where nothing is random; repeated
augmentation, shards, raw mode, epoch length and size, and bad files; end to end, the crops training sees; and image
folders, which train as the records of their files would, upright, for any threads and shards."""
import itertools
import os
import pathlib
import struct

import cv2
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon.data.vision import ImageFolderDataset

import train_imagenet
from data import record_reader
from data.augmentation import RGB_MEAN, RGB_STD
from data.loaders import InputConfig, folder_source
from data.pack import pack_folder
from data.record_reader import (LIGHTING_EIGVEC, Augmentation, RecordReader, draw_augmentation, image_generator,
                                random_resized_crop)
from data.records import RecordFiles
from tests.conftest import COLOURS_RGB, ONE_EPOCH, tiny_args
from tests.helpers import RunRecorder, copy_packed_set
from utils.errors import UserError
from utils.progressive_resize import ProgressiveResize

NUM_IMAGES = 48
BATCH = 8
SEED = 5
STILL = Augmentation(mirror=0, jitter=0, lighting=0)  # random crops only


def image_shape(label):
    """Image ``label`` of ``unique_set``: 28 x 36 for even labels, 32 x 32 for odd ones."""
    return (28, 36) if label % 2 == 0 else (32, 32)


def _pack(root, images):
    """Pack ``images`` ({class folder: [BGR images]}) into ``root``/train.rec; return its RecordFiles."""
    for name, pictures in images.items():
        os.makedirs(root / "images" / name)
        for index, picture in enumerate(pictures):
            cv2.imwrite(str(root / "images" / name / f"{index}.png"), picture)
    pack_folder(str(root / "images"), str(root / "train"), num_workers=1, log=lambda *_: None)
    return RecordFiles(str(root / "train"))


@pytest.fixture(scope="module")
def unique_set(tmp_path_factory):
    """48 noise images, each its own class so that a label names its image, of two shapes (``image_shape``)."""
    rng = np.random.RandomState(0)
    return _pack(tmp_path_factory.mktemp("unique"), {
        f"c{label:02d}": [rng.randint(0, 256, size=image_shape(label) + (3,)).astype(np.uint8)]
        for label in range(NUM_IMAGES)})


@pytest.fixture(scope="module")
def same_image_set(tmp_path_factory):
    """32 copies of one noise image, the set on which MXNet 1.9.1 gives every batch the same pixels."""
    image = np.random.RandomState(1).randint(0, 256, size=(40, 40, 3)).astype(np.uint8)
    return _pack(tmp_path_factory.mktemp("same"), {"only": [image] * 32})


def _reader(files, batch_size=BATCH, size=24, **kwargs):
    return RecordReader(files.rec, files.idx, batch_size, size, SEED, **kwargs)


def _epoch(reader, epoch=0, start_batch=0, **kwargs):
    """(labels, images) of every batch of ``epoch``, copied out of the reader's recycled buffers."""
    return [(batch.label[0].asnumpy().astype(int), batch.data[0].asnumpy())
            for batch in reader.epoch(epoch, start_batch, **kwargs)]


def _by_label(batches):
    return {label: image for labels, images in batches for label, image in zip(labels, images)}


def test_batches_are_the_same_bit_for_bit_with_one_and_two_threads(unique_set):
    """Batches of 16 are two tasks of 8 images each, so two threads share batches as well as take turns."""
    one, two = (_epoch(_reader(unique_set, batch_size=16, num_workers=threads), 3) for threads in (1, 2))
    assert len(one) == NUM_IMAGES // 16
    for (labels, images), (labels_two, images_two) in zip(one, two):
        np.testing.assert_array_equal(labels_two, labels)
        np.testing.assert_array_equal(images_two, images)


def test_a_resumed_epoch_is_the_uninterrupted_one_and_skips_the_earlier_images(unique_set, monkeypatch):
    whole = _epoch(_reader(unique_set), 1)
    decoded = []
    decode = record_reader.decode_image
    monkeypatch.setattr(record_reader, "decode_image", lambda image_bytes: decoded.append(1) or decode(image_bytes))
    resumed = _epoch(_reader(unique_set, num_workers=2), 1, start_batch=4)
    assert len(decoded) == 2 * BATCH and len(resumed) == 2
    for (labels, images), (labels_resumed, images_resumed) in zip(whole[4:], resumed):
        np.testing.assert_array_equal(labels_resumed, labels)
        np.testing.assert_array_equal(images_resumed, images)
    # Another epoch: another order.
    assert not np.array_equal(_epoch(_reader(unique_set), 2)[0][0], whole[0][0])


def test_identical_images_get_their_own_crop_in_every_batch(same_image_set):
    """MXNet 1.9.1 with seed_aug gives place i of every batch the same crop: here all 32 copies differ."""
    images = np.concatenate([images for _, images in _epoch(_reader(same_image_set), 0)])
    assert len(images) == 32
    for first in range(32):
        for second in range(first + 1, 32):
            assert not np.allclose(images[first], images[second], atol=1e-3), (first, second)


def test_random_resized_crop_worked_by_hand():
    # Area 0.08 + 0.92 x 0.5 = 0.54 of 100 x 100, ratio 3/4: sides round(sqrt(5400 / 0.75)) = round(84.85) = 85 and
    # round(sqrt(5400 x 0.75)) = round(63.64) = 64, not swapped (0.2 <= 0.5); top int(0.5 x 16), left int(0.99 x 37).
    first_try = [0.5, 0.0, 0.2, 0.5, 0.99]
    assert random_resized_crop(first_try + [0.0] * 45, 100, 100, (0.08, 1), (3 / 4, 4 / 3)) == (8, 36, 85, 64)
    # The ratio is uniform: its middle draw is 3/4 + 7/12 x 0.5 = 25/24, sides sqrt(5400 x 24/25) = 72 by
    # sqrt(5400 x 25/24) = 75 (log-uniform would give ratio 1, 73 by 73); top int(0.5 x 29), left int(0.5 x 26).
    middle = [0.5, 0.5, 0.2, 0.5, 0.5]
    assert random_resized_crop(middle + [0.0] * 45, 100, 100, (0.08, 1), (3 / 4, 4 / 3)) == (14, 13, 72, 75)
    # 70 x 100, the whole area at ratio 3/4: sides round(sqrt(7000 / 0.75)) = 97 and round(sqrt(7000 x 0.75)) = 72,
    # swapped (0.7 > 0.5) or not, too tall. The second try, area 0.08 and ratio 4/3: round(sqrt(560 / (4/3))) = 20
    # by round(sqrt(560 x 4/3)) = round(27.33) = 27 fits; top int(0.99 x 51) = 50.
    tries = [1 - 1e-12, 0.0, 0.7, 0.5, 0.5] + [0.0, 1.0, 0.0, 0.99, 0.0] + [0.0] * 40
    assert random_resized_crop(tries, 70, 100, (0.08, 1), (3 / 4, 4 / 3)) == (50, 0, 20, 27)
    # The whole area at ratio 4/3 fits no square, either way round: after 10 tries, MXNet's centre crop.
    assert random_resized_crop([1 - 1e-12, 1 - 1e-12, 0.0, 0.5, 0.5] * 10, 100, 100, (0.08, 1), (3 / 4, 4 / 3)) is None
    assert random_resized_crop([0.5] * 50, 100, 100, (1, 1), (1, 1)) is None


def test_draws_spread_over_the_ranges_as_specified():
    height = width = 1000
    draws = [draw_augmentation(image_generator(SEED, 0, place), height, width, Augmentation())
             for place in range(20000)]
    tops, lefts, crop_heights, crop_widths = np.array([draw.crop for draw in draws]).T
    areas, ratios = crop_heights * crop_widths / (height * width), crop_widths / crop_heights
    # Within the ranges up to the rounding of sides of 250 pixels or more, and reaching their ends.
    assert 0.08 - 1e-3 < areas.min() < 0.085 and 0.97 < areas.max() <= 1
    assert 3 / 4 - 5e-3 < ratios.min() < 0.76 and 1.32 < ratios.max() < 4 / 3 + 5e-3
    assert abs(np.mean(ratios > 1) - 0.5) < 0.02  # sides swapped half of the time
    # Below 3/4 of the image every ratio fits, so the area fraction drawn there stays uniform.
    counts, _ = np.histogram(areas, bins=4, range=(0.08, 0.75))
    np.testing.assert_allclose(counts / counts.sum(), 0.25, atol=0.02)
    assert (tops <= height - crop_heights).all() and (lefts <= width - crop_widths).all()
    assert abs(np.mean(tops / (height - crop_heights + 1)) - 0.5) < 0.02
    assert abs(np.mean([draw.mirror for draw in draws]) - 0.5) < 0.02
    jitter = np.array([draw.jitter for draw in draws])
    assert 0.6 <= jitter.min() < 0.601 and 1.399 < jitter.max() < 1.4 and abs(jitter.mean() - 1) < 0.01
    assert len({draw.jitter_order for draw in draws}) == 6
    lighting_std = np.array([draw.lighting for draw in draws]).std(axis=0)
    np.testing.assert_allclose(lighting_std, 0.1 * np.sqrt((LIGHTING_EIGVEC ** 2).sum(axis=1)), rtol=0.03)


@pytest.mark.parametrize("area, ratio, size", [
    ((1, 1), (1, 1), 16),  # no random crop: MXNet's centre crop
    ((1, 1), (1, 1), 40),  # the same, first scaled up to 40 (28 x 36 to 40 x 51: a truncated side)
    ((1, 1), (2, 2), 24),  # no try fits: the centre crop again
    ((1, 1), (1, 1.0001), 24),  # squares whole, resized; the 28 x 36 images fit no try
    ((1, 1), (1, 1.0001), 48),
])
def test_without_randomness_the_images_are_image_record_iters(unique_set, area, ratio, size):
    augmentation = Augmentation(area=area, aspect_ratio=ratio, mirror=0, jitter=0, lighting=0)
    ours = _by_label(_epoch(_reader(unique_set, size=size, augmentation=augmentation), 0))
    theirs = mx.io.ImageRecordIter(
        path_imgrec=unique_set.rec, path_imgidx=unique_set.idx, batch_size=BATCH, data_shape=(3, size, size),
        random_resized_crop=True, min_random_area=area[0], max_random_area=area[1], min_aspect_ratio=ratio[0],
        max_aspect_ratio=ratio[1], preprocess_threads=1, mean_r=RGB_MEAN[0], mean_g=RGB_MEAN[1], mean_b=RGB_MEAN[2],
        std_r=RGB_STD[0], std_g=RGB_STD[1], std_b=RGB_STD[2])
    std = np.array(RGB_STD)[:, None, None]
    for batch in theirs:
        for label, image in zip(batch.label[0].asnumpy().astype(int), batch.data[0].asnumpy()):
            np.testing.assert_allclose(ours[label] * std, image * std, atol=1e-3)


def test_each_raw_image_is_its_drawn_crop_resized_even_at_the_records_own_size(unique_set):
    """At 32, the size of the odd-labelled images, MXNet 1.9.1 resizes a crop into the image it is reading from and
    garbles it (seen with CIFAR-10's 32-pixel records); here every image is its crop, resized and maybe flipped."""
    records = mx.recordio.MXIndexedRecordIO(unique_set.idx, unique_set.rec, "r")
    decoded = {}
    for key in records.keys:
        header, image = mx.recordio.unpack_img(records.read_idx(key))
        decoded[int(header.label)] = image
    reader, mirrored = _reader(unique_set, size=32, augmentation=Augmentation(raw=True)), 0
    for batch, (labels, images) in enumerate(_epoch(reader)):
        for place, label, image in zip(reader.places(batch), labels, images):
            draws = draw_augmentation(image_generator(SEED, 0, place), *image_shape(label), Augmentation())
            top, left, height, width = draws.crop
            expected = cv2.resize(decoded[label][top:top + height, left:left + width], (32, 32),
                                  interpolation=cv2.INTER_LINEAR)[:, :, ::-1].transpose(2, 0, 1)
            np.testing.assert_array_equal(image, expected[:, :, ::-1] if draws.mirror else expected)
            mirrored += draws.mirror
    assert 0 < mirrored < NUM_IMAGES


def test_colour_jitter_and_lighting_follow_mxnets_formulas():
    """Each jitter step rounds and clips to 8 bits (grey = 0.299 R + 0.587 G + 0.114 B); lighting adds an RGB offset
    to the last 8-bit values, clipped, before the normalization."""
    bgr = np.random.RandomState(2).randint(0, 256, size=(6, 5, 3)).astype(np.uint8)
    # Saturation and brightness (1.4) clip many values to 0 or 255 before contrast (0.7) pulls them toward the mean:
    # a missed clip would show.
    factors, order = (1.4, 0.7, 1.4), (2, 0, 1)
    expected = bgr.astype(np.float64)
    for step in order:
        grey = np.round(expected @ [0.114, 0.587, 0.299])[:, :, None]
        blend = {0: 0.0, 1: grey.mean(), 2: grey}[step]
        expected = np.clip(np.round(expected * factors[step] + (1 - factors[step]) * blend), 0, 255)
    jittered = record_reader.colour_jitter(bgr, factors, order)
    assert np.abs(jittered - expected).max() <= 1 and np.mean(jittered != expected) < 0.05
    tables = record_reader.channel_tables(np.array([10.0, -300.0, 0.5]))
    np.testing.assert_allclose(tables[:, [0, 250]], [
        [(10 - RGB_MEAN[0]) / RGB_STD[0], (255 - RGB_MEAN[0]) / RGB_STD[0]],
        [-RGB_MEAN[1] / RGB_STD[1], -RGB_MEAN[1] / RGB_STD[1]],
        [(0.5 - RGB_MEAN[2]) / RGB_STD[2], (250.5 - RGB_MEAN[2]) / RGB_STD[2]]], rtol=1e-6)


def test_the_mirror_flag_flips_exactly(unique_set):
    flipped = _epoch(_reader(unique_set, augmentation=Augmentation(jitter=0, lighting=0)), 2)
    plain = _epoch(_reader(unique_set, augmentation=STILL), 2)
    reader, mirrored = _reader(unique_set), []
    for batch, ((labels, images), (_, plain_images)) in enumerate(zip(flipped, plain)):
        for place, label, image, plain_image in zip(reader.places(batch), labels, images, plain_images):
            mirror = draw_augmentation(image_generator(SEED, 2, place), *image_shape(label), Augmentation()).mirror
            np.testing.assert_array_equal(image, plain_image[:, :, ::-1] if mirror else plain_image)
            mirrored.append(mirror)
    assert 0 < sum(mirrored) < NUM_IMAGES


def test_labels_follow_the_images(tiny_set):
    """The tiny set's classes are colours, label i the i-th name in sorted order: each crop's mean colour names it."""
    files = RecordFiles(str(tiny_set / "train"))
    colours = np.array([COLOURS_RGB[name] for name in sorted(COLOURS_RGB)])
    for labels, images in _epoch(_reader(files, batch_size=16, augmentation=Augmentation(raw=True)), 0):
        means = images.mean(axis=(2, 3))
        nearest = np.argmin(((means[:, None, :] - colours[None]) ** 2).sum(axis=2), axis=1)
        np.testing.assert_array_equal(nearest, labels)


@pytest.mark.parametrize("reps", [2, 4])
def test_repeated_augmentation_holds_copies_block_by_block(unique_set, reps):
    plain, repeated = _epoch(_reader(unique_set), 1), _epoch(_reader(unique_set, reps=reps), 1)
    distinct = BATCH // reps
    assert len(repeated) == len(plain) == NUM_IMAGES // BATCH
    for labels, images in repeated:
        blocks = labels.reshape(reps, distinct)
        assert len(set(blocks[0])) == distinct and (blocks == blocks[0]).all(), labels
        for copy in range(1, reps):
            for slot in range(distinct):
                assert not np.allclose(images[copy * distinct + slot], images[slot], atol=1e-3)
    # Block 0 reads the epoch's order as a plain reader does, and its copy 0 is augmented as the plain image.
    firsts = np.concatenate([images[:distinct] for _, images in repeated])
    np.testing.assert_array_equal(firsts, np.concatenate([images for _, images in plain])[:NUM_IMAGES // reps])


def test_two_workers_read_disjoint_shards_that_make_the_one_worker_batches(unique_set):
    one = _epoch(_reader(unique_set, batch_size=BATCH), 4)
    shards = [_epoch(_reader(unique_set, batch_size=BATCH // 2, num_parts=2, part_index=part), 4) for part in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(one)
    seen = [{int(label) for labels, _ in shard for label in labels} for shard in shards]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(NUM_IMAGES))
    for (labels, images), first, second in zip(one, *shards):
        # Batch j of the workers together is batch j of one worker of their total batch, augmented alike.
        workers = _by_label([first, second])
        assert set(workers) == set(labels)
        for label, image in zip(labels, images):
            np.testing.assert_array_equal(workers[label], image)


def test_raw_mode_gives_whole_numbers_from_0_to_255(unique_set):
    raw = np.concatenate([images for _, images in _epoch(_reader(unique_set, augmentation=Augmentation(raw=True)))])
    assert raw.dtype == np.float32 and raw.shape == (NUM_IMAGES, 3, 24, 24)
    assert (raw == np.round(raw)).all() and raw.min() == 0 and raw.max() == 255


def test_an_epoch_has_its_length_going_round_the_shard_and_its_size(unique_set):
    reader = RecordReader.from_config(unique_set.rec, unique_set.idx, InputConfig(
        batch_size=BATCH, input_size=16, crop_ratio=0.875, num_workers=1, seed=SEED,
        progressive_resize=ProgressiveResize(16, 32, 0, 2, step=8)))
    reader.batches_per_epoch = 8
    batches = _epoch(reader, 0)
    assert len(batches) == 8 and batches[0][1].shape == (BATCH, 3, 16, 16)
    labels = np.concatenate([labels for labels, _ in batches])
    images = np.concatenate([images for _, images in batches])
    assert sorted(labels[:NUM_IMAGES]) == list(range(NUM_IMAGES))
    # Round again: the same order, each image with other draws.
    np.testing.assert_array_equal(labels[NUM_IMAGES:], labels[:2 * BATCH])
    assert not np.allclose(images[NUM_IMAGES], images[0], atol=1e-3)
    assert _epoch(reader, 1)[0][1].shape == (BATCH, 3, 24, 24)
    assert _epoch(reader, 1, size=40)[0][1].shape == (BATCH, 3, 40, 40)


def test_bad_files_and_records_give_one_line_user_errors(unique_set, tmp_path):
    truncated = RecordFiles(str(tmp_path / "truncated"))
    with open(unique_set.rec, "rb") as source, open(truncated.rec, "wb") as target:
        target.write(source.read(os.path.getsize(unique_set.rec) - 100))
    with open(unique_set.idx) as source, open(truncated.idx, "w") as target:
        target.write(source.read())
    with pytest.raises(UserError, match="is truncated") as error:
        _reader(truncated)
    assert "\n" not in str(error.value)
    broken = RecordFiles(str(tmp_path / "broken"))
    writer = mx.recordio.MXIndexedRecordIO(broken.idx, broken.rec, "w")
    for key in range(BATCH):
        image = b"\xff\xd8\xff not a JPEG" if key == 3 else cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1]
        writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, 0.0, key, 0), bytes(image)))
    writer.close()
    with pytest.raises(UserError, match=r"^record key 3 at byte \d+ of .*broken.rec: its image bytes do not decode; "
                                        r"pack the images again") as error:
        _epoch(_reader(broken))
    assert "\n" not in str(error.value)
    # The header's checks are the scan's (data.records.read_record): several labels, or a record cut inside it.
    image = bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1])
    for name, payload, reason in (
            ("labels", mx.recordio.pack(mx.recordio.IRHeader(0, [1.0, 2.0], 3, 0), image),
             "record holds 2 labels; the trainer reads one per image"),
            ("short", b"\0" * 10, "record of 10 bytes is shorter than the 24-byte image header")):
        files = RecordFiles(str(tmp_path / name))
        writer = mx.recordio.MXIndexedRecordIO(files.idx, files.rec, "w")
        for key in range(BATCH):
            writer.write_idx(key, payload if key == 3 else mx.recordio.pack(
                mx.recordio.IRHeader(0, float(key), key, 0), image))
        writer.close()
        with pytest.raises(UserError, match=rf"^record key 3 at byte \d+ of .*{name}.rec: {reason}; "):
            _epoch(_reader(files))


def _one_image_copy(tiny_set, folder):
    """``tiny_set``'s packed splits copied into ``folder``, every training record holding the image of the first one
    (labels kept); returns that image, decoded (BGR)."""
    first = []

    def rewrite(split, key, header, image_bytes):
        if split == "train":
            first[:] = first or [image_bytes]
            image_bytes = first[0]
        return header, image_bytes

    copy_packed_set(tiny_set, folder, rewrite)
    return cv2.imdecode(np.frombuffer(first[0], np.uint8), cv2.IMREAD_COLOR)


def test_training_at_the_records_own_size_sees_each_place_its_own_valid_crop(tiny_set, tmp_path, monkeypatch):
    """End to end, training at 24 on 24-pixel records that all hold one image: every crop the batch transform gets
    (raw under --auto-augment, before the policy) is the crop drawn for its place in the epoch, resized from the
    record and maybe flipped, and no place repeats the crop of another batch's same place. MXNet 1.9.1's
    ImageRecordIter failed both: it garbles crops resized to the records' own size, and with seed_aug it gives
    place i of every batch the same draws, so every batch here would be the same 16 images."""
    folder = str(tmp_path / "data")
    image = _one_image_copy(tiny_set, folder)
    assert image.shape == (24, 24, 3)
    recorder = RunRecorder(monkeypatch)
    argv = tiny_args(pathlib.Path(folder), tmp_path / "run", "--auto-augment", "ta_wide", *ONE_EPOCH,
                     "--seed", "3")
    assert train_imagenet.main(argv) == 0
    steps = recorder.steps()
    assert len(steps) == 96 // 16
    images = np.stack([images for _, images, _, _ in steps])  # (batch, place in it, 3, 24, 24)
    for batch, (epoch, _, _, _) in enumerate(steps):
        for slot in range(16):
            draws = draw_augmentation(image_generator(3, epoch, batch * 16 + slot), 24, 24, Augmentation())
            top, left, height, width = draws.crop
            expected = cv2.resize(image[top:top + height, left:left + width], (24, 24),
                                  interpolation=cv2.INTER_LINEAR)[:, :, ::-1].transpose(2, 0, 1)
            np.testing.assert_array_equal(images[batch, slot], expected[:, :, ::-1] if draws.mirror else expected)
    for slot in range(16):
        for first, second in itertools.combinations(range(len(steps)), 2):
            assert not np.array_equal(images[first, slot], images[second, slot]), (slot, first, second)


# ---- image folders: the same reader, image files in place of records -------------------------------------------


@pytest.fixture(scope="module")
def folder_set(tmp_path_factory):
    """48 noise images of ``image_shape``, each its own class, as PNG files in train/ and val/ class folders, and
    ``files.rec``: records holding the very bytes of the training files in the folder's order, so that the two
    readers start from the same pixels."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.RandomState(0)
    for label in range(NUM_IMAGES):
        image = rng.randint(0, 256, size=image_shape(label) + (3,)).astype(np.uint8)
        for split in ("train", "val"):
            os.makedirs(root / split / f"c{label:02d}")
            cv2.imwrite(str(root / split / f"c{label:02d}" / "0.png"), image)
    files = RecordFiles(str(root / "files"))
    writer = mx.recordio.MXIndexedRecordIO(files.idx, files.rec, "w")
    for key, (path, label) in enumerate(ImageFolderDataset(str(root / "train")).items):
        with open(path, "rb") as image_file:
            writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), key, 0), image_file.read()))
    writer.close()
    return root


def _folder(root, batch_size=BATCH, **settings):
    """The training epochs of ``folder_source`` on ``root`` at 24, seed SEED, one thread unless ``settings`` say."""
    settings = dict(dict(num_workers=1, seed=SEED), **settings)
    return folder_source(str(root), InputConfig(batch_size=batch_size, input_size=24, crop_ratio=0.875,
                                                **settings)).train


@pytest.mark.parametrize("settings, reader_settings", [
    ({}, {}),
    ({"ra_reps": 2}, {"reps": 2}),
    ({"unnormalized_crops": True}, {"augmentation": Augmentation(raw=True)}),
])
def test_a_folder_draws_as_the_records_of_its_own_files(folder_set, settings, reader_settings):
    """One order, one sampler: from a folder, epoch 2 is bit for bit the epoch of records holding its files."""
    files = RecordFiles(str(folder_set / "files"))
    records = _epoch(_reader(files, **reader_settings), 2)
    folder = _epoch(_folder(folder_set, **settings), 2)
    assert len(folder) == len(records) == NUM_IMAGES // BATCH
    for (labels, images), (folder_labels, folder_images) in zip(records, folder):
        np.testing.assert_array_equal(folder_labels, labels)
        np.testing.assert_array_equal(folder_images, images)


def test_folder_batches_are_the_same_for_one_and_two_threads_in_every_run_and_from_any_batch(folder_set):
    """-j 1 and -j 2 of two runs of one seed read the same batches; another epoch or seed reads others."""
    one = _epoch(_folder(folder_set), 1)
    two = _epoch(_folder(folder_set, num_workers=2), 1)
    again = _epoch(_folder(folder_set, num_workers=2), 1)
    resumed = _epoch(_folder(folder_set, num_workers=2), 1, start_batch=3)
    for batches, first in ((two, 0), (again, 0), (resumed, 3)):
        assert len(batches) == len(one) - first
        for (labels, images), (labels_again, images_again) in zip(one[first:], batches):
            np.testing.assert_array_equal(labels_again, labels)
            np.testing.assert_array_equal(images_again, images)
    assert not np.array_equal(_epoch(_folder(folder_set), 2)[0][0], one[0][0])
    assert not np.array_equal(_epoch(_folder(folder_set, seed=SEED + 1), 1)[0][0], one[0][0])


def test_two_workers_read_disjoint_folder_shards_that_make_the_one_worker_batches(folder_set):
    """Two dist_* workers' shards of a folder hold other images, augmented as the same places of a one-worker run
    of their total batch."""
    one = _epoch(_folder(folder_set), 4)
    shards = [_epoch(_folder(folder_set, batch_size=BATCH // 2, num_parts=2, part_index=part), 4) for part in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(one)
    seen = [{int(label) for labels, _ in shard for label in labels} for shard in shards]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(NUM_IMAGES))
    for (labels, images), first, second in zip(one, *shards):
        workers = _by_label([first, second])
        assert set(workers) == set(labels)
        for label, image in zip(labels, images):
            np.testing.assert_array_equal(workers[label], image)


def _rotated_jpeg(image):
    """``image`` as JPEG bytes whose EXIF orientation 6 says: turn it a quarter clockwise to show it."""
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)  # orientation, a SHORT, one value: 6, padded to 4 bytes
    exif = b"Exif\0\0" + b"MM\0\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]


def test_a_folder_file_is_read_upright_as_data_pack_and_validation_read_it(tmp_path):
    """Photos often carry their rotation in EXIF: a 24 x 32 file turned a quarter is 32 x 24 for data.pack and for
    mx.image.imread, and training crops it so too (as the records of its upright pixels, losslessly, crop it)."""
    rng = np.random.RandomState(3)
    for split in ("train", "val"):
        os.makedirs(tmp_path / split / "photos")
        for index in range(BATCH):
            (tmp_path / split / "photos" / f"{index}.jpg").write_bytes(
                _rotated_jpeg(rng.randint(0, 256, size=(24, 32, 3)).astype(np.uint8)))
    assert mx.image.imread(str(tmp_path / "val" / "photos" / "0.jpg")).shape == (32, 24, 3)
    upright = RecordFiles(str(tmp_path / "upright"))
    writer = mx.recordio.MXIndexedRecordIO(upright.idx, upright.rec, "w")
    for key, (path, label) in enumerate(ImageFolderDataset(str(tmp_path / "train")).items):
        png = cv2.imencode(".png", cv2.imread(path))[1].tobytes()
        writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(label), key, 0), png))
    writer.close()
    records = _epoch(_reader(upright, size=16, augmentation=Augmentation(raw=True)), 0)
    folder = _epoch(folder_source(str(tmp_path), InputConfig(batch_size=BATCH, input_size=16, crop_ratio=0.875,
                                                             num_workers=1, seed=SEED, unnormalized_crops=True)).train)
    np.testing.assert_array_equal(folder[0][1], records[0][1])
