"""Names of a packed data set's files, checks that a .rec/.idx pair is whole, and a clean copy of its good records.

A data set packed by ``data.pack`` is four files sharing one prefix: ``PREFIX.rec`` (the images, MXNet
RecordIO), ``PREFIX.idx`` (``key<TAB>byte offset`` of each record), ``PREFIX.lst`` (im2rec's list:
``index<TAB>label<TAB>relative/path``) and ``PREFIX.classes.txt`` (line i is the name of label i).
The trainer imports this module to check its inputs before it spends minutes building a network:
``check_record_files`` reads three records, ``scan_records`` reads them all, and ``write_clean_copy``
writes the records a scan found good into a new pair of files that the readers read. ``read_record`` reads one
record, as the training reader (``data.record_reader``) does for each image. ``count_labels`` reads the labels
alone, which say how many classes a .rec made by another tool (MXNet's ``tools/im2rec.py``, GluonCV's scripts) has
(``classes_from_labels``): those write no class list.
"""
import collections
import contextlib
import functools
import math
import os
import shutil
import struct
from dataclasses import dataclass
from multiprocessing.pool import ThreadPool

import cv2
import mxnet as mx
import numpy as np

from data.class_list import read_class_list
from utils.errors import UserError
from utils.files import replace_together

# dmlc-core's RecordIO starts every record with this word, then a word holding a 3-bit continuation
# flag and a 29-bit payload length (dmlc-core include/dmlc/recordio.h).
RECORDIO_MAGIC = 0xCED7230A
RECORD_HEADER_BYTES = 8
RECORD_LENGTH_MASK = (1 << 29) - 1
RECORD_FLAG_SHIFT = 29
# The writer splits a payload at every 4-byte-aligned copy of the magic word: a lone record has flag 0,
# a split one flag 1, then 2 for each middle part and 3 for the last. Readers put the magic back
# between the parts. Every record starts, and every payload is zero-padded to end, at a multiple of 4.
WHOLE, FIRST_PART, MIDDLE_PART, LAST_PART = 0, 1, 2, 3
RECORD_ALIGNMENT = 4
MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
# MXNet's image header (mx.recordio.IRHeader): uint32 flag, float32 label, two uint64 ids. A flag above 0
# says that many float32 labels follow it and replace its label field.
IMAGE_HEADER_BYTES = struct.calcsize("IfQQ")
LABEL_FIELD_OFFSET = struct.calcsize("I")
LABEL_BYTES = struct.calcsize("f")
# What count_labels reads of each record: the RecordIO header, the image header and one label after it.
LABEL_HEAD_BYTES = RECORD_HEADER_BYTES + IMAGE_HEADER_BYTES + LABEL_BYTES
# dmlc-core reads the index's keys and offsets into 64-bit integers, and Python refuses to parse an
# integer of over 4300 digits: a number of at most 19 digits fits both.
MAX_INDEX_DIGITS = 19
# MXNet 1.9.1's pip build decodes images with its own OpenCV 3.4.2, which reads JPEG, PNG, BMP and TIFF
# only. The cv2 module (OpenCV 4) also reads WebP, PNM, Sun raster, HDR and PFM, and ImageRecordIter then
# fails on them with an OpenCV resize assertion (measured), so a scan accepts these signatures alone.
MXNET_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")
# Reasons that scan_records gives for records that are not whole.
NO_RECORD_HERE = "no RecordIO record starts here (the .idx does not match the .rec)"
RUNS_PAST_END = "record runs past the end of the file (truncated .rec)"
STARTS_PAST_END = "offset lies past the end of the file (truncated .rec, or an .idx of another file)"
SCAN_BATCH = 512  # records read between two hand-overs to the decoding threads; bounds the memory used
BAD_NAMED_IN_SUMMARY = 3  # bad records named in RecordScan.describe(); the rest are counted

REPACK_HINT = "pack the image folder again with `python -m data.pack SRC_DIR OUT_PREFIX`"
FILE_KINDS = ("rec", "idx", "lst", "classes")  # the files of a packed set, as RecordFiles names them


def _file_named(suffix, doc):
    """A property of RecordFiles: the path of the file named ``prefix`` + ``suffix``."""
    return property(lambda files: files.prefix + suffix, doc=doc)


@dataclass(frozen=True)
class RecordFiles:
    """The paths of the files of one packed data set, all named after ``prefix``."""

    prefix: str

    rec = _file_named(".rec", "The RecordIO file holding the encoded images.")
    idx = _file_named(".idx", "The index: one ``key<TAB>offset`` line per record.")
    lst = _file_named(".lst", "The im2rec list: one ``index<TAB>label<TAB>relative/path`` line per record.")
    classes = _file_named(".classes.txt", "The class names, line i naming label i (``data.class_list``).")

    @classmethod
    def from_rec_path(cls, rec_path):
        """The file set that ``rec_path`` (``PREFIX.rec``) belongs to."""
        rec_path = os.fspath(rec_path)
        stem, extension = os.path.splitext(rec_path)
        return cls(stem if extension == ".rec" else rec_path)

    @contextlib.contextmanager
    def written_whole(self, kinds=FILE_KINDS):
        """Yield the RecordFiles of temporary names to write the ``kinds`` of these files into.

        When the block succeeds each temporary file takes its name here; when it fails they are all removed, so
        no partial file is ever left under a final name.
        """
        partial = RecordFiles(self.prefix + ".partial")
        with replace_together([(getattr(partial, kind), getattr(self, kind)) for kind in kinds]):
            yield partial


def read_class_names(rec_path):
    """The class names stored beside ``rec_path`` (``PREFIX.classes.txt``), indexed by label, or None if absent."""
    return read_class_list(RecordFiles.from_rec_path(rec_path).classes)


def count_records(idx_path):
    """Return the number of records listed in the index ``idx_path`` (its non-blank lines)."""
    with open(idx_path, encoding="utf-8", errors="replace") as idx_file:
        return sum(1 for line in idx_file if line.strip())


def read_record_index(idx_path):
    """Return the ``(key, offset)`` pairs listed in ``idx_path``, in file order; a malformed line raises UserError."""
    entries = []
    with open(idx_path, encoding="utf-8", errors="replace") as idx_file:
        for line_number, line in enumerate(idx_file, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2 or not all(_is_decimal(field) for field in fields):
                raise UserError(
                    f"{idx_path} line {line_number} is {line.strip()[:60]!r}, not '<key>\\t<offset>'; "
                    f"the index is damaged: {REPACK_HINT}")
            entries.append((int(fields[0]), int(fields[1])))
    return entries


def check_record_files(rec_path, idx_path):
    """Raise UserError (one line) unless ``rec_path`` and ``idx_path`` look like a whole RecordIO pair.

    Checks, without reading every record: both files exist and are non-empty; every index line is
    ``<int>\\t<int>``; no offset points past the end of the .rec; the records at the first and the last
    index line and the one that starts last begin with RecordIO's magic number and end inside the file
    (so a .rec cut short by a full disk or an interrupted copy is caught); the .rec's size is a multiple of
    4, as MXNet's reader demands.
    """
    rec_path, idx_path = os.fspath(rec_path), os.fspath(idx_path)
    offsets = [offset for _, offset in _read_nonempty_index(rec_path, idx_path)]
    rec_size = os.path.getsize(rec_path)
    highest_offset = max(offsets)
    if highest_offset + RECORD_HEADER_BYTES > rec_size:
        raise UserError(
            f"{idx_path} points to byte {highest_offset} but {rec_path} has only {rec_size} bytes "
            f"(truncated, or the index belongs to another file); {REPACK_HINT}")
    # The first and last index lines and the record that starts last are enough to catch a truncated
    # file or an index of another file, without reading a million records.
    with open(rec_path, "rb") as rec_file:
        for offset in sorted({offsets[0], offsets[-1], highest_offset}):
            payload_length = _read_record_length(rec_file, offset, rec_path, idx_path)
            # Readers read the zero padding too, so a file cut inside it is as broken as one cut earlier.
            record_end = offset + RECORD_HEADER_BYTES + _padded(payload_length)
            if record_end > rec_size:
                raise UserError(
                    f"{rec_path} is truncated: its record at byte {offset} ends at byte {record_end} but "
                    f"the file has {rec_size} bytes; {REPACK_HINT}")
    # dmlc-core refuses a whole .rec whose size is not a multiple of 4, whatever its records hold.
    if rec_size % RECORD_ALIGNMENT:
        raise UserError(f"{rec_path} has {rec_size} bytes, not a multiple of {RECORD_ALIGNMENT}: it is cut short or "
                        f"has stray bytes after its last record; {REPACK_HINT}")


@dataclass(frozen=True)
class BadRecord:
    """A record that ``scan_records`` rejected: its key and byte offset as the .idx lists them, and why."""

    key: int
    offset: int
    reason: str


@dataclass(frozen=True)
class RecordScan:
    """What ``scan_records`` found in ``rec_path``, both lists in .idx order.

    ``good`` holds the ``(key, offset)`` of each record that passed every check, ``bad`` a BadRecord for
    each of the others; ``good_bytes`` is what the good records take of the .rec, padding included (the size of a
    clean copy's .rec).
    """

    rec_path: str
    good: list
    bad: list
    good_bytes: int

    def describe(self):
        """One line: how many records are bad, and the first few of them with their reasons."""
        total = len(self.good) + len(self.bad)
        if not self.bad:
            return f"all {total} records of {self.rec_path} are good"
        named = "; ".join(f"key {record.key} at byte {record.offset}: {record.reason}"
                          for record in self.bad[:BAD_NAMED_IN_SUMMARY])
        more = len(self.bad) - BAD_NAMED_IN_SUMMARY
        if more > 0:
            named += f"; and {more} more"
        return f"{len(self.bad)} of {total} records of {self.rec_path} are bad: {named}"


def scan_records(rec_path, idx_path, num_classes, decode=True, num_workers=None):
    """Read every record that ``idx_path`` lists and return a RecordScan of the good and the bad ones.

    A record is bad if
      * no RecordIO record starts at its offset (not a multiple of 4, no magic number, or a later part of
        a split record): the .idx does not match the .rec;
      * it runs past the end of the .rec (a truncated file), or a part of a split record is missing;
      * the .idx lists its key or its offset a second time, or it runs into the next listed record;
      * its image header is cut short, holds several labels (the trainer reads one per image) or a label
        that is not a whole number in [0, num_classes);
      * its image is empty or not JPEG, PNG, BMP or TIFF, which MXNet's decoder reads, or, with
        ``decode``, ``cv2.imdecode`` does not turn it into a non-empty image.
    Split records (payloads that held the magic number) are joined as MXNet's readers join them. Only a
    missing or empty file, an index listing no record and a malformed .idx line raise UserError.
    ``num_workers`` threads decode (None: one per core); OpenCV releases the GIL while it decodes.
    """
    rec_path, idx_path = os.fspath(rec_path), os.fspath(idx_path)
    entries = _read_nonempty_index(rec_path, idx_path)
    num_workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    with open(rec_path, "rb") as rec_file:
        located = _locate_records(rec_file, entries, os.path.getsize(rec_path))
        reasons = _check_contents(rec_file, located, num_classes, decode, num_workers)
    good = [entry for entry, reason in zip(entries, reasons) if reason is None]
    bad = [BadRecord(key, offset, reason) for (key, offset), reason in zip(entries, reasons) if reason is not None]
    good_bytes = sum(span.end - offset for (_, offset), span, reason in zip(entries, located, reasons)
                     if reason is None)
    return RecordScan(rec_path=rec_path, good=good, bad=bad, good_bytes=good_bytes)


def write_clean_copy(rec_path, scan, out_prefix):
    """Copy the good records of ``scan`` byte for byte into ``out_prefix``.rec/.idx; return its RecordFiles.

    ImageRecordIter reads each record from its offset up to the next offset of the .idx, so dropping bad
    records from the index alone would not skip them: the copy holds the good records alone, back to
    back in index order, under their old keys. ``PREFIX.classes.txt`` beside ``rec_path`` is copied if it
    exists. Files are written under temporary names and renamed, so a failed copy leaves no partial file
    under a final name. Raises UserError if no record is good, the copy's folder has not the room for it (before
    anything is written) or ``rec_path`` changed since the scan.
    """
    rec_path, out_prefix = os.fspath(rec_path), os.fspath(out_prefix)
    source, copy = RecordFiles.from_rec_path(rec_path), RecordFiles(out_prefix)
    _check_copy_prefix(source, out_prefix)
    if not scan.good:
        raise UserError(f"none of the {len(scan.bad)} records of {rec_path} is good, so there is nothing to "
                        f"copy; {REPACK_HINT}")
    kinds = ("rec", "idx", "classes") if os.path.isfile(source.classes) else ("rec", "idx")
    _check_room_for_copy(scan, os.path.getsize(source.classes) if "classes" in kinds else 0,
                         os.path.dirname(out_prefix) or ".")
    with copy.written_whole(kinds) as partial:
        _copy_records(rec_path, scan.good, partial)
        if "classes" in kinds:
            shutil.copyfile(source.classes, partial.classes)
    return copy


class RejectedRecord(Exception):
    """Raised while reading one record that is bad; its message is the reason."""


def read_record(rec_file, offset, rec_size):
    """The label and the image bytes of the record at byte ``offset`` of the open .rec ``rec_file`` of
    ``rec_size`` bytes, its split parts joined; RejectedRecord, its message the reason as ``scan_records`` gives
    it, unless the record is whole and its image header holds one label. The label's range and the image are
    the caller's to check."""
    payload = _read_payload(rec_file, _locate_record(rec_file, offset, rec_size))
    problem = _header_problem(payload)
    if problem:
        raise RejectedRecord(problem)
    header, image_bytes = mx.recordio.unpack(payload)
    return float(header.label[0] if header.flag else header.label), image_bytes


def count_labels(rec_path, idx_path):
    """How many records of ``rec_path`` hold each label, ``{label: records}``, read from their headers alone.

    For .rec files made without a class list (MXNet's ``tools/im2rec.py --recursive`` numbers the class folders
    0..K-1 in sorted order, as ``data.pack`` does): the labels say how many classes there are. One read of
    LABEL_HEAD_BYTES per record, in file order (a split record, rare, is read whole), so ImageNet's
    1.28 million records cost 1.28 million small reads, not 140 GB. Records that do not hold one label that is a
    whole number >= 0 (broken framing, several labels, a fraction) are left out: the scans that check every label
    against the classes (``scan_records``) name them. Raises UserError as ``check_record_files`` for a missing or
    empty file or a malformed .idx.
    """
    rec_path, idx_path = os.fspath(rec_path), os.fspath(idx_path)
    offsets = sorted({offset for _, offset in _read_nonempty_index(rec_path, idx_path)})
    rec_size = os.path.getsize(rec_path)
    counts = collections.Counter()
    with open(rec_path, "rb") as rec_file:
        for offset in offsets:
            try:
                label = _read_label(rec_file, offset, rec_size)
            except RejectedRecord:
                continue
            if math.isfinite(label) and label.is_integer() and label >= 0:
                counts[int(label)] += 1
    return counts


def classes_from_labels(rec_path, idx_path):
    """How many classes the records of ``rec_path`` have when no class list says it, and where that comes from as
    a log line says it: ``(K, text)``.

    MXNet's ``tools/im2rec.py`` and GluonCV's scripts write no class list, but number the class folders 0..K-1 as
    ``data.pack`` does: K is the highest label plus one (``count_labels``). A highest label that would make more
    classes than there are records is refused: a damaged label, or a subset whose highest classes are missing,
    which ``--num-classes`` settles.
    """
    counts = count_labels(rec_path, idx_path)
    if not counts:
        raise UserError(f"no record of {rec_path} holds a label that is a whole number >= 0, so its labels "
                        f"cannot say how many classes there are; {REPACK_HINT}")
    num_classes, num_labelled = max(counts) + 1, sum(counts.values())
    if num_classes > num_labelled:
        raise UserError(f"the highest label of {rec_path}, {num_classes - 1}, makes {num_classes} classes, more "
                        f"than its {num_labelled} records: a damaged label, or a subset of a larger set; pass "
                        "--num-classes (records whose label lies outside it are then named as bad)")
    unseen = num_classes - len(counts)
    return num_classes, f"read from the labels of {rec_path} (no class list beside it" + (
        f"; {unseen} of them label no record)" if unseen else ")")


def _read_label(rec_file, offset, rec_size):
    """The label of the record at byte ``offset`` of ``rec_file`` of ``rec_size`` bytes, from one read of its
    headers; RejectedRecord as ``read_record``, which reads the records that one read cannot settle (split or
    broken ones)."""
    head = os.pread(rec_file.fileno(), LABEL_HEAD_BYTES, offset)
    if offset % RECORD_ALIGNMENT or len(head) < RECORD_HEADER_BYTES:
        return read_record(rec_file, offset, rec_size)[0]
    magic, length_word = struct.unpack_from("<II", head)
    flag, length = length_word >> RECORD_FLAG_SHIFT, length_word & RECORD_LENGTH_MASK
    whole = flag == WHOLE and offset + RECORD_HEADER_BYTES + _padded(length) <= rec_size
    if magic != RECORDIO_MAGIC or not whole:
        return read_record(rec_file, offset, rec_size)[0]
    payload_head = head[RECORD_HEADER_BYTES:RECORD_HEADER_BYTES + length]
    problem = _header_problem(payload_head)
    if problem:
        raise RejectedRecord(problem)
    num_labels = struct.unpack_from("I", payload_head)[0]
    return struct.unpack_from("f", payload_head, IMAGE_HEADER_BYTES if num_labels else LABEL_FIELD_OFFSET)[0]


@dataclass(frozen=True)
class _Span:
    """Where one record lies in the .rec: the ``(start, length)`` of each payload part, and its end offset."""

    parts: tuple
    end: int


def _locate_records(rec_file, entries, rec_size):
    """Return, per ``(key, offset)`` entry, its _Span or the reason (a str) why it is not a whole record."""
    located, first_key_at = [], {}
    seen_keys = set()
    for key, offset in entries:
        if key in seen_keys:
            located.append("its key is listed twice in the .idx")
        elif offset in first_key_at:
            located.append(f"same offset as key {first_key_at[offset]} (the .idx lists one record twice)")
        else:
            try:
                located.append(_locate_record(rec_file, offset, rec_size))
            except RejectedRecord as rejected:
                located.append(str(rejected))
            first_key_at[offset] = key
        seen_keys.add(key)
    _reject_overlaps(entries, located)
    return located


def _reject_overlaps(entries, located):
    """Replace by a reason the _Span of each record that runs into the next record that starts after it.

    The writer escapes every aligned magic number inside a payload, so a second record can start inside
    a first one only if the first one's length field is damaged: the first one is the bad one.
    """
    starts = sorted((entries[position][1], position) for position, item in enumerate(located)
                    if isinstance(item, _Span))
    for (_, position), (next_offset, _) in zip(starts, starts[1:]):
        if located[position].end > next_offset:
            located[position] = f"record runs into the record at byte {next_offset} (its length field is damaged)"


def _locate_record(rec_file, offset, rec_size):
    """Return the _Span of the record starting at ``offset``; raise RejectedRecord unless it is whole."""
    if offset % RECORD_ALIGNMENT:
        raise RejectedRecord(NO_RECORD_HERE)
    if offset + RECORD_HEADER_BYTES > rec_size:
        raise RejectedRecord(STARTS_PAST_END)
    magic, flag, length = _read_part_header(rec_file, offset)
    if magic != RECORDIO_MAGIC:
        raise RejectedRecord(NO_RECORD_HERE)
    if flag in (MIDDLE_PART, LAST_PART):
        raise RejectedRecord("a later part of a split record starts here (the .idx does not match the .rec)")
    if flag not in (WHOLE, FIRST_PART):
        raise RejectedRecord(f"invalid RecordIO part flag {flag}")
    parts, position = [], offset
    while True:
        end = position + RECORD_HEADER_BYTES + _padded(length)
        if end > rec_size:
            raise RejectedRecord(RUNS_PAST_END)
        parts.append((position + RECORD_HEADER_BYTES, length))
        if flag in (WHOLE, LAST_PART):
            return _Span(parts=tuple(parts), end=end)
        position = end
        if position + RECORD_HEADER_BYTES > rec_size:
            raise RejectedRecord(RUNS_PAST_END)
        magic, flag, length = _read_part_header(rec_file, position)
        if magic != RECORDIO_MAGIC or flag not in (MIDDLE_PART, LAST_PART):
            raise RejectedRecord(f"split record broken: its next part is missing at byte {position}")


def _read_part_header(rec_file, position):
    """The magic word, part flag and payload length of the RecordIO header at ``position``."""
    rec_file.seek(position)
    magic, length_word = struct.unpack("<II", rec_file.read(RECORD_HEADER_BYTES))
    return magic, length_word >> RECORD_FLAG_SHIFT, length_word & RECORD_LENGTH_MASK


def _check_contents(rec_file, located, num_classes, decode, num_workers):
    """Return, per entry of ``located``, the reason it is bad or None, checking the payload of each _Span.

    The calling thread reads the next batch of payloads while the pool checks the previous one; batches
    keep the memory bounded where ``imap`` would read the whole file ahead of the decoders.
    """
    reasons = [None if isinstance(item, _Span) else item for item in located]
    readable = [position for position, item in enumerate(located) if isinstance(item, _Span)]
    check = functools.partial(_check_payload, num_classes=num_classes, decode=decode)
    in_flight = []
    with ThreadPool(num_workers) as pool:
        for start in range(0, len(readable), SCAN_BATCH):
            batch = readable[start:start + SCAN_BATCH]
            payloads = [_read_payload(rec_file, located[position]) for position in batch]
            in_flight.append((batch, pool.map_async(check, payloads)))
            if len(in_flight) > 1:
                _store_reasons(reasons, *in_flight.pop(0))
        for batch, result in in_flight:
            _store_reasons(reasons, batch, result)
    return reasons


def _store_reasons(reasons, batch, result):
    """Wait for the checks of ``batch`` and store their verdicts at its positions."""
    for position, reason in zip(batch, result.get()):
        reasons[position] = reason


def _read_payload(rec_file, span):
    """The payload of a record, its parts joined by the magic word as MXNet's readers join them."""
    parts = []
    for start, length in span.parts:
        rec_file.seek(start)
        parts.append(rec_file.read(length))
    return MAGIC_BYTES.join(parts)


def _header_problem(payload):
    """Why the image header of the record ``payload`` is bad (cut short, several labels), or None."""
    if len(payload) < IMAGE_HEADER_BYTES:
        return f"record of {len(payload)} bytes is shorter than the {IMAGE_HEADER_BYTES}-byte image header"
    num_labels = struct.unpack_from("I", payload)[0]
    if num_labels > 1:
        return f"record holds {num_labels} labels; the trainer reads one per image"
    if num_labels == 1 and len(payload) < IMAGE_HEADER_BYTES + 4:
        return "record ends inside its label"
    return None


def _check_payload(payload, num_classes, decode):
    """Return why the image record ``payload`` is bad (its header, label or image), or None if it is good."""
    problem = _header_problem(payload)
    if problem:
        return problem
    header, image_bytes = mx.recordio.unpack(payload)
    label = float(header.label[0]) if header.flag else float(header.label)
    if not (math.isfinite(label) and label.is_integer()):
        return f"label {label:.9g} is not a whole number"
    if not 0 <= label < num_classes:
        return f"label {label:.9g} outside [0, {num_classes})"
    if not image_bytes:
        return "record holds no image bytes"
    if not image_bytes.startswith(MXNET_IMAGE_SIGNATURES):
        return "image is not JPEG, PNG, BMP or TIFF, the formats MXNet decodes"
    return _decode_problem(image_bytes) if decode else None


def _decode_problem(image_bytes):
    """Why ``cv2.imdecode`` fails to make a non-empty colour image of ``image_bytes``, or None."""
    try:
        image = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        return "image bytes do not decode"
    if image.size == 0:
        return "image has zero size"
    return None


def _check_copy_prefix(source, out_prefix):
    """Raise UserError unless ``out_prefix`` names new files in an existing folder, apart from ``source``."""
    folder = os.path.dirname(out_prefix) or "."
    if out_prefix.endswith(".rec"):
        raise UserError(f"output prefix {out_prefix} ends in .rec; give it without the extension")
    if not os.path.isdir(folder):
        raise UserError(f"output folder {folder} does not exist; create it or choose another prefix")
    if os.path.abspath(out_prefix) == os.path.abspath(source.prefix):
        raise UserError(f"output prefix {out_prefix} is that of the scanned files; choose another prefix so "
                        "that the originals stay")


def _clean_copy_bytes(scan, classes_bytes):
    """The most bytes that a clean copy of ``scan``'s good records takes, with a class list of ``classes_bytes``.

    Its .rec holds ``scan.good_bytes``; each line of its .idx, ``key<TAB>offset``, is counted with an offset of
    as many digits as ``good_bytes``, which every offset in the copy is below.
    """
    offset_digits = len(str(scan.good_bytes))
    idx_bytes = sum(len(str(key)) + len("\t") + offset_digits + len("\n") for key, _ in scan.good)
    return scan.good_bytes + idx_bytes + classes_bytes


def _check_room_for_copy(scan, classes_bytes, folder):
    """Raise UserError, saying what it needs and what there is, if ``folder`` has not the room for the clean copy."""
    needed, free = _clean_copy_bytes(scan, classes_bytes), shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(f"the copy of the {len(scan.good)} good records of {scan.rec_path} needs {_size(needed)} "
                        f"in {folder}, which has {_size(free)} free; make room there, or write the copy to another "
                        "disk (`python -m data.clean --out`, or --save-dir with --skip-bad-records)")


def _size(num_bytes):
    """``num_bytes`` for a message: exact, and in the largest of kB, MB, GB and TB (powers of 1000) that fits."""
    for unit, scale in (("TB", 10 ** 12), ("GB", 10 ** 9), ("MB", 10 ** 6), ("kB", 10 ** 3)):
        if num_bytes >= scale:
            return f"{num_bytes:,} bytes ({num_bytes / scale:.1f} {unit})"
    return f"{num_bytes:,} bytes"


def _copy_records(rec_path, good, files):
    """Write the records ``good`` lists, raw, into ``files``.rec and their keys and new offsets into its .idx."""
    rec_size = os.path.getsize(rec_path)
    with open(rec_path, "rb") as source, open(files.rec, "wb") as rec_out, \
            open(files.idx, "w", encoding="utf-8") as idx_out:
        for key, offset in good:
            try:
                span = _locate_record(source, offset, rec_size)
            except RejectedRecord as rejected:
                raise UserError(f"{rec_path} changed since it was scanned (key {key} at byte {offset}: "
                                f"{rejected}); scan it again") from None
            idx_out.write(f"{key}\t{rec_out.tell()}\n")
            source.seek(offset)
            rec_out.write(source.read(span.end - offset))


def _read_record_length(rec_file, offset, rec_path, idx_path):
    """Return the payload length of the record at ``offset``; raise UserError if no record starts there."""
    rec_file.seek(offset)
    magic, length_word = struct.unpack("<II", rec_file.read(RECORD_HEADER_BYTES))
    if magic != RECORDIO_MAGIC:
        raise UserError(
            f"{rec_path} has no RecordIO record at byte {offset} (found 0x{magic:08x}, expected "
            f"0x{RECORDIO_MAGIC:08x}): it is not a RecordIO file or does not match {idx_path}; {REPACK_HINT}")
    return length_word & RECORD_LENGTH_MASK


def _read_nonempty_index(rec_path, idx_path):
    """Return the ``(key, offset)`` pairs of ``idx_path``; raise UserError if either file is missing or empty."""
    for path, role in ((rec_path, "record file"), (idx_path, "index file")):
        if not os.path.isfile(path):
            raise UserError(f"{role} {path} not found; {REPACK_HINT}")
        if os.path.getsize(path) == 0:
            raise UserError(f"{role} {path} is empty; {REPACK_HINT}")
    entries = read_record_index(idx_path)
    if not entries:
        raise UserError(f"index file {idx_path} lists no records; {REPACK_HINT}")
    return entries


def _padded(length):
    """``length`` rounded up to RecordIO's 4-byte alignment."""
    return -(-length // RECORD_ALIGNMENT) * RECORD_ALIGNMENT


def _is_decimal(text):
    """True if ``text`` is a non-negative integer of at most MAX_INDEX_DIGITS decimal digits."""
    return text.isascii() and text.isdigit() and len(text) <= MAX_INDEX_DIGITS
