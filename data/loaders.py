"""Training and validation batches with the paper's augmentation (section 2), from RecordIO or image folders.

Both sources give ``mx.io.DataBatch`` objects of one fixed batch size, so that every batch splits evenly
over the devices: ``source.train.epoch(e)`` the batches of training epoch ``e``, ``for batch in source.val``
the validation set. Training epochs have exactly ``batches_per_epoch`` batches, which the learning-rate
schedule counts on. Packed records train through ``data.record_reader.RecordReader``, image folders through its
``FolderReader``: one reader, whose epoch ``e`` has an order and an augmentation that depend only on the seed, ``e``
and each image's place, so that a resumed run sees the data an uninterrupted one would, whatever the threads.
Records validate through MXNet's ``ImageRecordIter``, folders through a Gluon ``DataLoader`` (nothing random
there). A short last validation batch is padded and ``batch.pad`` says how many trailing samples to ignore, so each
validation image counts once.
"""
import functools
import math
import os
import queue
import threading
from dataclasses import dataclass

import mxnet as mx
import numpy as np
from mxnet.gluon.data import DataLoader
from mxnet.gluon.data.vision import ImageFolderDataset, transforms

from data.augmentation import RGB_MEAN, RGB_STD
from data.class_list import numbered_class_names
from data.clean import BAD_RECORD_HINT, clean_records, describe_bad_records
from data.record_reader import FolderReader, RecordReader
from data.records import RecordFiles, check_record_files, classes_from_labels, count_records, read_class_names
from utils.errors import UserError
from utils.progressive_resize import ProgressiveResize


@dataclass(frozen=True)
class InputConfig:
    """What the input pipeline needs to know, resolved once from the command line."""

    batch_size: int
    input_size: int
    crop_ratio: float
    num_workers: int
    seed: int
    num_parts: int = 1
    part_index: int = 0
    ra_reps: int = 1  # --ra-reps: each training image N times a batch (data.repeated_augmentation)
    val_input_size: int = None  # --val-input-size: the validation crop (None: input_size)
    progressive_resize: ProgressiveResize = None  # --progressive-resize: each epoch's training crop
    # --auto-augment: training crops are only cropped and flipped, whole-number RGB, for the policy on the device
    unnormalized_crops: bool = False

    def train_size(self, epoch):
        """The side of epoch ``epoch``'s training crops."""
        return self.input_size if self.progressive_resize is None else self.progressive_resize.size(epoch)

    @property
    def val_size(self):
        """The side of the validation centre crop."""
        return self.val_input_size or self.input_size

    @property
    def val_resize(self):
        """Validation resizes the shorter side to val_size / crop_ratio, rounded up, as GluonCV does (256 for 224 at
        0.875); a quotient within 0.01% of a whole number is that number, so that a ratio typed to four decimals
        gives the side it stands for (232 for 224 at 0.9655, torchvision's 224 of 232, not 233)."""
        side = self.val_size / self.crop_ratio
        return round(side) if abs(side - round(side)) <= 1e-4 * side else math.ceil(side)


@dataclass
class DataSource:
    """Training and validation batches with the facts the trainer derives from the data itself."""

    train: object
    val: object
    num_classes: int
    class_names: list
    num_train: int
    num_val: int
    batches_per_epoch: int
    skipped_records: int = 0
    find_bad_records: object = None  # () -> one line naming the bad records, or None when there are none


def _normalization():
    return dict(mean_r=RGB_MEAN[0], mean_g=RGB_MEAN[1], mean_b=RGB_MEAN[2],
                std_r=RGB_STD[0], std_g=RGB_STD[1], std_b=RGB_STD[2])


def val_record_iter(rec, idx, config):
    """``ImageRecordIter`` for validation: shorter side to ``val_resize``, centre crop, no randomness."""
    return mx.io.ImageRecordIter(
        path_imgrec=rec, path_imgidx=idx, batch_size=config.batch_size,
        data_shape=(3, config.val_size, config.val_size), shuffle=False, round_batch=False,
        resize=config.val_resize, preprocess_threads=config.num_workers, **_normalization())


class CountedBatches:
    """One pass over the first ``num_samples`` images, with ``batch.pad`` set on the short last batch, from a fresh
    iterator that ``open_iterator()`` makes for each pass.

    With ``round_batch=False`` MXNet 1.9.1 fills the tail of the last batch with stale memory (labels such
    as 1e38) yet reports ``pad = 0``, so the padding is derived from the known number of images instead.

    Each pass makes, reads and frees its iterator in a thread of its own, which then ends. MXNet's
    ``ImageRecordIter`` leaves OpenMP threads with the thread that used it; kept through training, they took the
    process above the cores, and MXNet's operators ran 25-30% slower on 2 cores (``benchmarks.loop_overheads``).
    The thread reads a batch only when the consumer asks for the next, so a batch stays valid until then.
    """

    def __init__(self, open_iterator, num_samples, batch_size, find_bad_records=None):
        self._open_iterator = open_iterator
        self._num_samples = num_samples
        self._batch_size = batch_size
        self._find_bad_records = find_bad_records

    def __len__(self):
        return math.ceil(self._num_samples / self._batch_size)

    def _read(self, requests, replies):
        try:
            iterator = read_naming_bad_records(self._open_iterator, self._find_bad_records)
            for _ in range(len(self)):
                if not requests.get():
                    break
                replies.put(read_naming_bad_records(iterator.next, self._find_bad_records))
        except BaseException as error:  # handed to the consumer, which raises it
            replies.put(error)

    def __iter__(self):
        requests, replies = queue.Queue(), queue.Queue()
        # A daemon: a pass that is never finished nor closed must not keep the process from exiting.
        reader = threading.Thread(target=self._read, args=(requests, replies), name="validation-reader", daemon=True)
        reader.start()
        try:
            for index in range(len(self)):
                requests.put(True)
                batch = replies.get()
                if isinstance(batch, BaseException):
                    raise batch
                batch.pad = max(0, (index + 1) * self._batch_size - self._num_samples)
                yield batch
        finally:
            requests.put(False)
            reader.join()


def read_naming_bad_records(read, find_bad_records, *args):
    """``read(*args)``, with an MXNet error caused by a bad record turned into a UserError naming it.

    ``ImageRecordIter`` (validation's) reports an undecodable image only as an OpenCV assertion in some thread;
    the records are then scanned (``find_bad_records``) to name the culprit. Other errors pass unchanged.
    """
    try:
        return read(*args)
    except mx.base.MXNetError:
        found = find_bad_records() if find_bad_records is not None else None
        if found is None:
            raise
        raise UserError(f"{found}; {BAD_RECORD_HINT}") from None


def check_validation_records(rec_val, idx_val, num_classes):
    """Scan every validation record before MXNet reads one.

    With ``resize`` set, MXNet 1.9.1's ImageRecordIter kills the whole process (SIGFPE, nothing to catch)
    on an image that does not decode; the validation set is small enough to decode once up front.
    """
    found = describe_bad_records([(rec_val, idx_val)], num_classes)
    if found:
        raise UserError(f"{found}; {BAD_RECORD_HINT}")


def _default_index(rec, idx):
    return idx or RecordFiles.from_rec_path(rec).idx


def check_num_classes(num_classes, class_names, where):
    """``--num-classes`` may only repeat the number of classes the data lists (``where`` names the list).

    Another number would change label smoothing's ``eps / (K - 1)`` or leave labels outside the classes.
    """
    if num_classes is not None and class_names is not None and num_classes != len(class_names):
        raise UserError(f"--num-classes {num_classes} disagrees with the {len(class_names)} classes of {where}; "
                        "drop --num-classes, which is only for .rec files without a class list")


def unlisted_class_names(rec_train, idx_train, num_classes, log):
    """The classes of training records that have no class list beside them, named by their labels, 0 to K-1.

    K is ``num_classes`` (``--num-classes``) when given, or else what the labels say (``classes_from_labels``).
    """
    if num_classes is None:
        num_classes, source = classes_from_labels(rec_train, idx_train)
    else:
        source = f"given by --num-classes (no class list beside {rec_train})"
    log(f"{num_classes} classes, {source}; the run's classes.txt names them by their labels, 0 to {num_classes - 1}")
    return numbered_class_names(num_classes)


def check_one_batch(num_images, config, where):
    """Every step trains on a full batch, so this worker's share of the training set must hold one."""
    if num_images < config.batch_size:
        raise UserError(f"{where} has {num_images} training images, fewer than one batch of {config.batch_size} "
                        "(--batch-size x devices); lower --batch-size")


def epoch_length(num_images, config, where, kind):
    """This worker's share of the ``num_images`` training ``kind`` (records, images) of ``where`` and its batches per
    epoch: every worker reads as many, the last batch going round the shard (``data.record_reader``)."""
    num_train = num_images // config.num_parts
    if num_train == 0:
        raise UserError(f"{where} has {num_images} {kind}, too few for a shard of each of "
                        f"{config.num_parts} workers; use fewer workers or more data")
    check_one_batch(num_train, config, where if config.num_parts == 1 else
                    f"worker {config.part_index}'s shard of {where} ({config.num_parts} workers)")
    return num_train, math.ceil(num_train / config.batch_size)


def record_source(rec_train, rec_val, config, idx_train=None, idx_val=None, num_classes=None, clean_dir=None,
                  log=print):
    """Training and validation data from packed ``.rec``/``.idx`` files, checked before they are read.

    Training reads through ``RecordReader.from_config`` (``data.record_reader``), which names a record that it
    cannot read or decode; validation through ``val_record_iter``. The classes are those of the class list beside
    ``rec_train`` or, where there is none, ``unlisted_class_names``. With ``clean_dir`` (``--skip-bad-records``)
    every record is scanned first and a split with bad ones is read from a copy of its good records in
    ``clean_dir``; ``skipped_records`` counts the bad ones.
    """
    idx_train, idx_val = _default_index(rec_train, idx_train), _default_index(rec_val, idx_val)
    check_record_files(rec_train, idx_train)
    check_record_files(rec_val, idx_val)
    class_names = read_class_names(rec_train)
    check_num_classes(num_classes, class_names, RecordFiles.from_rec_path(rec_train).classes)
    if class_names is None:
        class_names = unlisted_class_names(rec_train, idx_train, num_classes, log)
    num_classes = len(class_names)
    skipped = 0
    if clean_dir:
        rec_train, idx_train, skipped_train = clean_records(rec_train, idx_train, num_classes,
                                                            os.path.join(clean_dir, "train"), log)
        rec_val, idx_val, skipped_val = clean_records(rec_val, idx_val, num_classes,
                                                      os.path.join(clean_dir, "val"), log)
        skipped = skipped_train + skipped_val
    num_train, batches_per_epoch = epoch_length(count_records(idx_train), config, rec_train, "records")
    if not clean_dir:
        # After the quick checks: decoding the whole validation set is the slow one.
        check_validation_records(rec_val, idx_val, num_classes)
    num_val = count_records(idx_val)
    find_bad_records = functools.partial(describe_bad_records, [(rec_train, idx_train), (rec_val, idx_val)],
                                         num_classes)
    open_val = functools.partial(val_record_iter, rec_val, idx_val, config)
    return DataSource(train=RecordReader.from_config(rec_train, idx_train, config,
                                                     batches_per_epoch=batches_per_epoch),
                      val=CountedBatches(open_val, num_val, config.batch_size, find_bad_records),
                      num_classes=num_classes, class_names=class_names,
                      num_train=num_train, num_val=num_val, batches_per_epoch=batches_per_epoch,
                      skipped_records=skipped, find_bad_records=find_bad_records)


class FolderBatches:
    """Validation batches from a Gluon ``DataLoader`` in the same ``DataBatch`` form as the record readers', the
    short last one padded."""

    def __init__(self, dataset, transform, config):
        self._batch_size = config.batch_size
        self._loader = DataLoader(dataset.transform_first(transform), batch_size=config.batch_size,
                                  last_batch="keep", num_workers=config.num_workers)

    def __iter__(self):
        for data, label in self._loader:
            pad = self._batch_size - data.shape[0]
            if pad:
                data = mx.nd.concat(data, mx.nd.zeros((pad,) + data.shape[1:], dtype=data.dtype), dim=0)
                label = mx.nd.concat(label, mx.nd.zeros((pad,), dtype=label.dtype), dim=0)
            yield mx.io.DataBatch(data=[data], label=[label.astype(np.float32)], pad=pad)


def validation_transform(config):
    """Decoded RGB image (HWC, uint8) to a normalized CHW tensor: shorter side to ``val_resize``, centre crop."""
    return transforms.Compose([
        transforms.Resize(config.val_resize, keep_ratio=True),
        transforms.CenterCrop(config.val_size),
        transforms.ToTensor(),
        transforms.Normalize([m / 255 for m in RGB_MEAN], [s / 255 for s in RGB_STD]),
    ])


def folder_source(data_dir, config, num_classes=None):
    """Training and validation data from ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*``: training
    through ``data.record_reader.FolderReader``, validation through ``FolderBatches``.

    ``num_classes`` (``--num-classes``), when given, must be the number of class folders.
    """
    splits = {}
    for split in ("train", "val"):
        path = os.path.join(data_dir, split)
        if not os.path.isdir(path):
            raise UserError(f"--data-dir {data_dir} has no {split}/ folder; it needs train/<class>/ and "
                            "val/<class>/ image folders")
        splits[split] = ImageFolderDataset(path)
        if len(splits[split]) == 0:
            raise UserError(f"no images found in {path}; expected {path}/<class>/<image files>")
    if splits["train"].synsets != splits["val"].synsets:
        raise UserError(f"the class folders of {data_dir}/train and {data_dir}/val differ; they must match")
    check_num_classes(num_classes, splits["train"].synsets, f"{data_dir}/train")
    where = f"{data_dir}/train"
    num_train, batches_per_epoch = epoch_length(len(splits["train"]), config, where, "images")
    return DataSource(train=FolderReader.from_config(splits["train"].items, where, config,
                                                     batches_per_epoch=batches_per_epoch),
                      val=FolderBatches(splits["val"], validation_transform(config), config),
                      num_classes=len(splits["train"].synsets), class_names=list(splits["train"].synsets),
                      num_train=num_train, num_val=len(splits["val"]), batches_per_epoch=batches_per_epoch)


def validation_source(config, network_class_names, rec_val=None, idx_val=None, data_dir=None, log=print):
    """Validation batches alone, for evaluating a trained network: ``train`` is None.

    From a packed ``rec_val`` or from ``data_dir/val/<class>/*`` (classes in sorted folder order, as in training).
    The classes of ``rec_val`` are those of its class list ``PREFIX.classes.txt``, or, where it has none (MXNet's
    ``tools/im2rec.py`` and GluonCV's scripts write none), ``network_class_names``: the classes of the network to
    evaluate. Every label must lie among them.
    """
    if bool(rec_val) == bool(data_dir):
        raise UserError("give either --rec-val or --data-dir, not both and not neither")
    if rec_val:
        idx_val = _default_index(rec_val, idx_val)
        check_record_files(rec_val, idx_val)
        class_names = read_class_names(rec_val)
        if class_names is None:
            class_names = network_class_names
            log(f"No class list beside {rec_val} ({RecordFiles.from_rec_path(rec_val).classes}): its labels are "
                f"taken as the network's {len(class_names)} classes")
        check_validation_records(rec_val, idx_val, len(class_names))
        num_val = count_records(idx_val)
        val = CountedBatches(functools.partial(val_record_iter, rec_val, idx_val, config), num_val,
                             config.batch_size)
    else:
        path = os.path.join(data_dir, "val")
        if not os.path.isdir(path):
            raise UserError(f"--data-dir {data_dir} has no val/ folder; it needs val/<class>/ image folders")
        dataset = ImageFolderDataset(path)
        if len(dataset) == 0:
            raise UserError(f"no images found in {path}; expected {path}/<class>/<image files>")
        class_names, num_val = list(dataset.synsets), len(dataset)
        val = FolderBatches(dataset, validation_transform(config), config)
    return DataSource(train=None, val=val, num_classes=len(class_names), class_names=class_names,
                      num_train=0, num_val=num_val, batches_per_epoch=0)
