"""Training batches from packed records or image folders with the paper's augmentation (section 2) drawn per image.

``RecordReader(rec, idx, ...).epoch(e, start_batch, size)`` yields the ``mx.io.DataBatch`` objects of training epoch
``e``: exactly ``batches_per_epoch`` full batches, ``data`` float32 (B, 3, S, S) RGB normalized by ``RGB_MEAN`` and
``RGB_STD``, ``label`` float32 (B,). ``FolderReader(items, ...)`` does the same from image files, with the same
order, shards and draws (``ImageReader`` holds them; only reading image i differs), so that an image of a folder is
augmented as a record holding its file would be, and a ``--data-dir`` run is reproducible from ``--seed`` as a
``--rec-train`` one. It is the trainer's reader of packed records and of folders (``data.loaders.record_source``
and ``folder_source``, through ``from_config``) in place of MXNet 1.9.1's ``ImageRecordIter`` and of a Gluon
``DataLoader``. ``ImageRecordIter``'s augmentation is not the paper's, image by image independent one: with
``seed_aug`` it reseeds each image's generator from its place in its batch, so that every batch of an epoch gets the
same B crops, flips and colours by place; without, each decoding thread's generator is seeded once, apart from
``--seed``. It also resizes a random crop into the very image it reads the crop from, which garbles it when the
output size is the image's (CIFAR-10's 32-pixel records at 32). A ``DataLoader``'s worker processes are forked with
one state of MXNet's generator (flips and colours repeat every ``-j`` batches) and its crops draw from Python's
generator, not from ``--seed``. Validation, where nothing is random, still reads through ``ImageRecordIter``
(``data.loaders.val_record_iter``) or a ``DataLoader``.

Order. Epoch ``e`` permutes all N images (records in the .idx's order, files in the folder's) with
``utils.seeding.epoch_seed(seed, e)``. Worker ``part_index`` of ``num_parts`` reads places
``part_index, part_index + num_parts, ...`` of that permutation, truncated to ``num_parts * (N // num_parts)`` places so
that the shards are disjoint and equal (``N % num_parts`` images, other ones each epoch, sit out); when
``batches_per_epoch`` batches need more images than the shard holds it goes round it again. A worker's batch j of b
images holds the places ``j b .. (j + 1) b - 1`` of its shard, so batch j of all workers together holds global places
``j B .. (j + 1) B - 1``: the images, and the augmentation, of batch j of a one-worker run of batch B = b x num_parts.
With ``reps`` N (repeated augmentation, ``--ra-reps``), batch j holds b/N places, then the same images again N - 1
times, copy k in block k, each copy augmented on its own.

Randomness. Each image draws from its own ``image_generator(seed, epoch, place, copy)`` (numpy's default PCG64
behind a SeedSequence, some 20 microseconds to build, a few percent of an image's decoding at 224), ``place``
its place in the epoch's global order: the same for any number of threads, devices and workers, and a resumed
epoch skips the earlier batches without decoding them. The draws, a fixed number per image, are MXNet's
``src/io/image_aug_default.cc`` (``random_resized_crop`` with ``brightness``, ``contrast``, ``saturation`` and
``pca_noise`` set to section 2's values, ``data.augmentation``) and ``iter_image_recordio_2.cc`` (mirror):

1. Random resized crop: up to 10 tries of an area fraction uniform in ``area`` and an aspect ratio (width over height)
   uniform in ``aspect_ratio`` (section 2's "randomly sampled in [3/4, 4/3]", as MXNet draws it; Gluon's and
   torchvision's ``RandomResizedCrop`` draw its logarithm uniformly); sides ``round(sqrt(A / r))`` by
   ``round(sqrt(A r))``, swapped with probability 1/2; the first that fits is placed uniformly and resized to S x S
   bilinearly (``cv2.INTER_LINEAR``). If none fits, MXNet's fallback: the centre S x S of the image, upscaled (keeping
   its aspect, sides truncated) only if a side is below S. With area and ratio both exactly 1, MXNet does no random crop
   and takes that centre crop directly; so do we.
2. Horizontal flip with probability 1/2.
3. Colour jitter, in a random order: brightness ``x a_b``, contrast ``x a_c + (1 - a_c) mean(grey)``, saturation
   ``x a_s + (1 - a_s) grey``, each factor uniform in [1 - 0.4, 1 + 0.4], each step rounded and clipped to 0..255
   as MXNet's 8-bit OpenCV calls do.
4. Lighting (AlexNet's PCA noise): ``alpha ~ N(0, 0.1^2)`` per component, RGB offset ``eigvec @ (alpha * eigval)``
   with MXNet's eigenvalues and eigenvectors (on the 0..255 scale), clipped to 0..255.
5. ``(x - RGB_MEAN) / RGB_STD``.

Where we differ from MXNet, and why:
- the generator and the order of draws (per image, keyed by its place, instead of std::mt19937 per thread);
- grey for contrast and saturation is ITU-R 601 luma, 0.299 R + 0.587 G + 0.114 B, as ``mx.image``'s jitter
  computes it: MXNet's C++ augmenter converts its BGR image with ``CV_RGB2GRAY``, weighting blue 0.299 and red
  0.114;
- the lighting offset is added in floating point: MXNet truncates each pixel's sum toward zero (half a grey
  level darker on average); the output is float anyway;
- the crop's sides are computed in float64 (MXNet: float32), which may move a side by one pixel where the square
  root lands within float32 rounding of a half;
- a crop side of zero pixels counts as not fitting (MXNet would fail on it; only images of a pixel or two get one);
- none in decoding: ``cv2.imdecode`` without EXIF rotation gives the pixels of MXNet's TurboJPEG decoding (the same
  on CIFAR-10's JPEGs and the tests' images, as are crops, resizes and the normalization where nothing is random).
  Image files of a folder decode with their EXIF rotation, as ``data.pack`` packs them.

``Augmentation(raw=True)`` stops after the crop and the flip and gives RGB whole numbers 0..255 (float32), the input
of ``data.auto_augment``'s policies, which torchvision applies after crop and flip only.

Speed: ``num_workers`` threads decode and augment the images, 8 a task (OpenCV releases the GIL while it decodes,
resizes and blends), each writing straight into its slot of a preallocated batch that an NDArray shares without a
copy. The tasks of ``prefetch + 1`` batches wait in the threads' queue ahead of the batch the consumer holds, so it
waits only when the threads fall behind; the queue is the background worker, no other thread is needed. Batches
are recycled: a batch's arrays are written again when the consumer asks for the second batch after it (once the
MXNet operations queued on them have finished); copy what must be kept, as with ``ImageRecordIter``'s batches.
Images are decoded whole: decoding at a half or a quarter of the size where the crop shrinks that much (as DALI
does) differs from the bilinear resize of the whole image by several grey levels, not by rounding.
"""
import collections
import functools
import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import mxnet as mx
import numpy as np

from data.augmentation import CROP_AREA, CROP_ASPECT_RATIO, JITTER, LIGHTING_STD, RGB_MEAN, RGB_STD
from data.clean import BAD_RECORD_HINT
from data.records import RejectedRecord, check_record_files, read_record, read_record_index
from utils.errors import UserError
from utils.seeding import epoch_seed

IMAGES_PER_TASK = 8  # images a thread decodes per task: fewer hand-overs, still several tasks per batch
CROP_TRIES = 10  # MXNet's random_resized_crop gives up after 10 crops that do not fit
CROP_DRAWS = 5  # per try: area, aspect ratio, side swap, top, left
MIRROR_PROBABILITY = 0.5
# MXNet's image_aug_default.cc: eigenvalues times eigenvectors of ImageNet's RGB covariance on the 0..255 scale;
# row c gives channel c's offset from the three components' alphas.
LIGHTING_EIGVEC = np.array([[55.46 * -0.5675, 4.794 * 0.7192, 1.148 * 0.4009],
                            [55.46 * -0.5808, 4.794 * -0.0045, 1.148 * -0.8140],
                            [55.46 * -0.5836, 4.794 * -0.6948, 1.148 * 0.4203]])
# Keeps these draws apart from the other generators seeded from --seed and the epoch: random erasing's (no spawn
# key) and data.auto_augment's ((1,), over four numbers as here); SeedSequence pads its entropy with zeros, so a
# small key would also meet any generator of [seed, epoch] and that key. "read" in ASCII.
SPAWN_KEY = (0x72656164,)
GREY_LEVELS = np.arange(256, dtype=np.float64)
RAW_TABLES = np.tile(GREY_LEVELS.astype(np.float32), (3, 1))  # raw mode: each channel's values as they are
MEAN_COLUMN, STD_COLUMN = np.array(RGB_MEAN)[:, None], np.array(RGB_STD)[:, None]
FOLDER_HINT = "remove it, or pack the folder with `python -m data.pack`, which names and skips the files it cannot read"


@dataclass(frozen=True)
class Augmentation:
    """The training augmentation's settings; the defaults are section 2's (``data.augmentation``)."""

    area: tuple = CROP_AREA  # fraction of the image's area covered by the crop
    aspect_ratio: tuple = CROP_ASPECT_RATIO  # the crop's width over height
    mirror: float = MIRROR_PROBABILITY  # probability of a horizontal flip
    jitter: float = JITTER  # brightness, contrast and saturation factors in [1 - jitter, 1 + jitter]
    lighting: float = LIGHTING_STD  # standard deviation of the PCA noise's alphas
    raw: bool = False  # stop after crop and flip: RGB whole numbers 0..255, no colour, no normalization


@dataclass(frozen=True)
class Draws:
    """One image's random choices: ``crop`` (top, left, height, width) or None for MXNet's centre-crop fallback,
    ``mirror``, the brightness, contrast and saturation ``jitter`` factors applied in ``jitter_order`` (0, 1, 2
    name them), and the RGB ``lighting`` offset."""

    crop: tuple
    mirror: bool
    jitter: tuple
    jitter_order: tuple
    lighting: np.ndarray


def image_generator(seed, epoch, place, copy=0):
    """The generator of the image at ``place`` of ``epoch``'s global order (its copy ``copy`` under --ra-reps)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, place, copy], spawn_key=SPAWN_KEY))


def draw_augmentation(generator, height, width, augmentation):
    """The Draws of one image of ``height`` x ``width`` pixels, always the same number of them from ``generator``."""
    uniforms = generator.random(CROP_TRIES * CROP_DRAWS + 4).tolist()
    order = tuple(generator.permutation(3).tolist())
    alphas = generator.normal(0.0, augmentation.lighting, 3)
    crop = random_resized_crop(uniforms[:CROP_TRIES * CROP_DRAWS], height, width, augmentation.area,
                               augmentation.aspect_ratio)
    jitter = tuple(1 + augmentation.jitter * (2 * uniform - 1) for uniform in uniforms[-3:])
    return Draws(crop=crop, mirror=uniforms[-4] < augmentation.mirror, jitter=jitter, jitter_order=order,
                 lighting=LIGHTING_EIGVEC @ alphas)


def random_resized_crop(uniforms, height, width, area, aspect_ratio):
    """(top, left, crop height, crop width) of the first of 10 tries that fits, as MXNet draws them; None when none
    fits or both ranges are exactly 1 (MXNet's centre crop). ``uniforms``: 5 numbers in [0, 1) a try, for its area,
    aspect ratio, side swap, top and left."""
    if tuple(area) == (1, 1) and tuple(aspect_ratio) == (1, 1):
        return None
    for start in range(0, CROP_TRIES * CROP_DRAWS, CROP_DRAWS):
        area_draw, ratio_draw, swap_draw, top_draw, left_draw = uniforms[start:start + CROP_DRAWS]
        target = height * width * (area[0] + (area[1] - area[0]) * area_draw)
        ratio = aspect_ratio[0] + (aspect_ratio[1] - aspect_ratio[0]) * ratio_draw
        # std::round: halves away from zero
        crop_height = math.floor(math.sqrt(target / ratio) + 0.5)
        crop_width = math.floor(math.sqrt(target * ratio) + 0.5)
        if swap_draw > 0.5:
            crop_height, crop_width = crop_width, crop_height
        if 1 <= crop_height <= height and 1 <= crop_width <= width:
            return (int(top_draw * (height - crop_height + 1)), int(left_draw * (width - crop_width + 1)),
                    crop_height, crop_width)
    return None


def centre_crop(image, size):
    """MXNet's fallback: an image with a side below ``size`` is first scaled up to it (the other side in float32,
    truncated, as MXNet computes it), then its centre ``size`` x ``size`` is cut out."""
    height, width = image.shape[:2]
    if height < size:
        width = int(np.float32(size) / np.float32(height) * np.float32(width))
        height = size
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if width < size:
        height = int(np.float32(size) / np.float32(width) * np.float32(height))
        width = size
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


def colour_jitter(image, factors, order):
    """Brightness, contrast and saturation of the 8-bit BGR ``image`` scaled by ``factors``, in ``order``.

    ``addWeighted`` rounds and saturates each result to 8 bits, as MXNet's ``convertTo`` and ``addWeighted`` do.
    """
    for step in order:
        factor = factors[step]
        if step == 0:
            image = cv2.addWeighted(image, factor, image, 0, 0)
        elif step == 1:
            grey_mean = cv2.mean(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))[0]
            image = cv2.addWeighted(image, factor, image, 0, (1 - factor) * grey_mean)
        else:
            grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
            image = cv2.addWeighted(image, factor, grey, 1 - factor, 0)
    return image


def decode_image(image_bytes, upright=False):
    """The 8-bit BGR image of ``image_bytes``, or None if it does not decode. A record's EXIF rotation is ignored, as
    MXNet's TurboJPEG decoding ignores it; ``upright`` applies it, as ``data.pack`` does to the files it packs and
    ``mx.image.imread`` to the images that folder validation reads."""
    flags = cv2.IMREAD_COLOR if upright else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        image = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), flags)
    except cv2.error:
        return None
    return image if image is not None and image.size else None


def crop_resized(image, crop, size):
    """The ``crop`` (top, left, height, width) of ``image`` resized bilinearly to ``size`` x ``size``, or MXNet's
    centre crop when ``crop`` is None."""
    if crop is None:
        return centre_crop(image, size)
    top, left, crop_height, crop_width = crop
    return cv2.resize(image[top:top + crop_height, left:left + crop_width], (size, size),
                      interpolation=cv2.INTER_LINEAR)


def channel_tables(lighting):
    """(3, 256) float32: for each RGB channel, its 8-bit values plus the ``lighting`` offset, clipped to 0..255,
    then normalized; lighting and normalization both map each channel's values on their own, so one table does
    both."""
    tables = GREY_LEVELS + lighting[:, None]
    np.maximum(tables, 0, out=tables)
    np.minimum(tables, 255, out=tables)
    tables -= MEAN_COLUMN
    tables /= STD_COLUMN
    return tables.astype(np.float32)


def write_rgb(patch, tables, out):
    """Write the 8-bit BGR ``patch`` mapped through ``tables`` (one per RGB channel) into ``out``, (3, H, W)."""
    for channel, plane in enumerate(reversed(cv2.split(patch))):
        cv2.LUT(plane, tables[channel], dst=out[channel])


def augment_image(image, draws, size, augmentation, out):
    """Write the 8-bit BGR ``image`` augmented by ``draws`` into ``out``, float32 (3, ``size``, ``size``) RGB."""
    patch = crop_resized(image, draws.crop, size)
    if draws.mirror:
        patch = cv2.flip(patch, 1)
    if augmentation.raw:
        write_rgb(patch, RAW_TABLES, out)
        return
    if augmentation.jitter > 0:
        patch = colour_jitter(patch, draws.jitter, draws.jitter_order)
    write_rgb(patch, channel_tables(draws.lighting), out)


class ImageReader:
    """Training batches of one worker's shard of ``num_images`` labelled images, augmented per image (see the module
    docstring); a subclass reads image ``index`` (``_read``), through a per-thread handle (``_open``) if it needs one.

    ``input_size`` is the crop side, or a function of the epoch giving it (``InputConfig.train_size`` under
    --progressive-resize); ``batch_size`` is this worker's batch; ``reps`` must divide it; ``source`` names the
    images in messages. Read one epoch at a time.
    """

    def __init__(self, num_images, source, batch_size, input_size, seed, num_workers=1, num_parts=1, part_index=0,
                 reps=1, augmentation=Augmentation(), batches_per_epoch=None, prefetch=2):
        self._num_images, self._shard = num_images, num_images // num_parts
        if self._shard == 0:
            raise UserError(f"{source} has {num_images} images, too few for a shard of each of {num_parts} "
                            "workers; use fewer workers or more data")
        if batch_size % reps:
            raise UserError(f"--ra-reps {reps} does not divide the batch of {batch_size} images")
        self.batch_size, self.input_size, self.seed, self.reps = batch_size, input_size, seed, reps
        self.num_workers, self.num_parts, self.part_index = num_workers, num_parts, part_index
        self.augmentation, self.prefetch = augmentation, prefetch
        self.batches_per_epoch = batches_per_epoch or math.ceil(self._shard / batch_size)

    @staticmethod
    def settings(config, **kwargs):
        """The reader's keyword arguments for ``data.loaders.InputConfig`` ``config``: its batch, each epoch's crop
        size, seed, threads, shard and reps, and section 2's augmentation, raw under --auto-augment
        (``unnormalized_crops``); ``kwargs`` add to them or override them."""
        return dict(dict(batch_size=config.batch_size, input_size=config.train_size, seed=config.seed,
                         num_workers=config.num_workers, num_parts=config.num_parts, part_index=config.part_index,
                         reps=config.ra_reps, augmentation=Augmentation(raw=config.unnormalized_crops)), **kwargs)

    def _open(self):
        """A handle for one thread's reads, or None; closed when the epoch ends."""
        return None

    def _read(self, handle, index):
        """The label and the decoded 8-bit BGR image of image ``index``; UserError if it is bad."""
        raise NotImplementedError

    def epoch(self, epoch, start_batch=0, size=None):
        """The batches of ``epoch`` from batch ``start_batch`` on (the earlier ones are not read), at ``size``
        (default: ``input_size``)."""
        if size is None:
            size = self.input_size(epoch) if callable(self.input_size) else self.input_size
        order = np.random.default_rng(epoch_seed(self.seed, epoch)).permutation(self._num_images)
        # Batch b goes into buffer b mod (prefetch + 3): the batch the consumer holds, the one before it, prefetch + 1
        # queued.
        buffers = [self._buffer(size) for _ in range(self.prefetch + 3)]
        handles, local = [], threading.local()

        def open_handle():  # each thread reads through its own handle
            local.handle = self._open()
            handles.append(local.handle)

        def submit(batch):
            return self._submit(pool, functools.partial(self._read_images, local, epoch, size), batch, order,
                                buffers[batch % len(buffers)])

        batches = iter(range(start_batch, self.batches_per_epoch))
        pool = ThreadPoolExecutor(self.num_workers, initializer=open_handle)
        try:
            pending = collections.deque(map(submit, itertools.islice(batches, self.prefetch + 1)))
            while pending:
                data, label, futures = pending.popleft()
                for future in futures:
                    future.result()
                pending.extend(map(submit, itertools.islice(batches, 1)))
                yield mx.io.DataBatch(data=[data], label=[label], pad=0)
        finally:
            pool.shutdown(cancel_futures=True)
            for handle in handles:
                if handle is not None:
                    handle.close()

    def places(self, batch):
        """The global places of the distinct images of ``batch`` (its first block under --ra-reps)."""
        distinct = self.batch_size // self.reps
        return self.part_index + self.num_parts * np.arange(batch * distinct, (batch + 1) * distinct)

    def _buffer(self, size):
        """Arrays for one batch of ``size`` x ``size`` images and its labels, each with a zero-copy NDArray over it
        (``from_numpy`` makes its argument read-only, so it gets a view)."""
        data, label = np.empty((self.batch_size, 3, size, size), np.float32), np.empty(self.batch_size, np.float32)
        return data, mx.nd.from_numpy(data.view()), label, mx.nd.from_numpy(label.view())

    def _submit(self, pool, read, batch, order, buffer):
        """Queue the images of ``batch`` into ``buffer``; return its NDArrays and the tasks' futures."""
        data_array, data, label_array, label = buffer
        for array in (data, label):
            mx.nd.to_dlpack_for_write(array)  # MXNet's wait-to-write: returns once the reads queued on it are done
        places = self.places(batch)
        indices = order[places % (self._shard * self.num_parts)]  # going round the shard when the epoch is longer
        images = list(enumerate(zip(places.tolist(), indices.tolist())))
        return data, label, [pool.submit(read, images[start:start + IMAGES_PER_TASK], data_array, label_array)
                             for start in range(0, len(images), IMAGES_PER_TASK)]

    def _read_images(self, local, epoch, size, images, data_array, label_array):
        """Decode each ``(slot, (place, index))`` of ``images`` once and write its ``reps`` copies, each with its own
        draws, at ``slot`` of each block of the batch."""
        distinct = self.batch_size // self.reps
        for slot, (place, index) in images:
            label, image = self._read(local.handle, index)
            label_array[slot::distinct] = label
            for copy in range(self.reps):
                draws = draw_augmentation(image_generator(self.seed, epoch, place, copy), *image.shape[:2],
                                          self.augmentation)
                augment_image(image, draws, size, self.augmentation, data_array[slot + copy * distinct])


class RecordReader(ImageReader):
    """Training batches of one worker's shard of the packed records ``rec``/``idx`` (``ImageReader``'s arguments
    follow)."""

    def __init__(self, rec, idx, *args, **kwargs):
        check_record_files(rec, idx)
        self._rec, self._rec_size = rec, os.path.getsize(rec)
        # (key, offset) rows: 16 bytes a record, where a list of tuples takes some 120 (ImageNet: 1.28 M records)
        self._index = np.array(read_record_index(idx), np.int64)
        super().__init__(len(self._index), rec, *args, **kwargs)

    @classmethod
    def from_config(cls, rec, idx, config, **kwargs):
        """The training reader of ``rec``/``idx`` for ``data.loaders.InputConfig`` ``config`` (``settings``)."""
        return cls(rec, idx, **cls.settings(config, **kwargs))

    def _open(self):
        return open(self._rec, "rb")

    def _read(self, rec_file, record):
        """The label and the decoded image of record ``record`` (its line in the .idx); UserError if it is bad."""
        key, offset = self._index[record].tolist()
        try:
            label, image_bytes = read_record(rec_file, offset, self._rec_size)
        except RejectedRecord as rejected:
            raise self._bad_record(key, offset, str(rejected)) from None
        image = decode_image(image_bytes)
        if image is None:
            raise self._bad_record(key, offset, "its image bytes do not decode")
        return label, image

    def _bad_record(self, key, offset, reason):
        """The one-line UserError naming a bad record and why."""
        return UserError(f"record key {key} at byte {offset} of {self._rec}: {reason}; {BAD_RECORD_HINT}")


class FolderReader(ImageReader):
    """Training batches of one worker's shard of image files: ``items``, (path, label) pairs as
    ``ImageFolderDataset.items`` lists them, image i at place i of the order; ``source`` names them in messages
    (``ImageReader``'s arguments follow). A file decodes upright (``decode_image``): to the pixels its packed record
    holds and validation reads."""

    def __init__(self, items, source, *args, **kwargs):
        self._items = items
        super().__init__(len(items), source, *args, **kwargs)

    @classmethod
    def from_config(cls, items, source, config, **kwargs):
        """The training reader of ``items`` for ``data.loaders.InputConfig`` ``config`` (``settings``)."""
        return cls(items, source, **cls.settings(config, **kwargs))

    def _read(self, handle, index):
        path, label = self._items[index]
        try:
            with open(path, "rb") as image_file:
                image_bytes = image_file.read()
        except OSError as error:
            raise UserError(f"cannot read image file {path}: {error.strerror}; {FOLDER_HINT}") from None
        image = decode_image(image_bytes, upright=True)
        if image is None:
            raise UserError(f"image file {path} does not decode; {FOLDER_HINT}")
        return label, image
