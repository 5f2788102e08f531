"""Fuzz tests: damaged record files and image files give a UserError, a RecordScan or a skipped file, nothing else.

Hypothesis draws the inputs from a fixed seed (``derandomize``), so every run tries the same ones. The
number of examples per test is FUZZ_EXAMPLES (default 300, which keeps this file under half a minute on
2 cores); a longer search is ``FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py --hypothesis-show-statistics``.
"""
import os
import tempfile

import cv2
import mxnet as mx
import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

from data.pack import pack_folder
from data.records import (IMAGE_HEADER_BYTES, MAGIC_BYTES, RecordFiles, RecordScan, check_record_files, count_records,
                          read_record_index, scan_records, write_clean_copy)
from utils.errors import UserError

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), derandomize=True, deadline=None,
                database=None)
NUM_CLASSES = 3
SIDE = 16
SKIP_REASONS = ("empty file", "not a decodable image", "cannot read it (")

# Positions are drawn large and taken modulo the length of what they edit, so they reach every byte.
POSITION = st.integers(min_value=0, max_value=1 << 16)
BYTE_EDITS = st.lists(st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(min_value=0, max_value=7)),
    st.tuples(st.just("truncate"), POSITION),
    st.tuples(st.just("insert"), POSITION, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("overwrite"), POSITION, st.binary(min_size=1, max_size=16)),
), max_size=4)
INDEX_EDITS = st.lists(st.one_of(
    st.tuples(st.just("offset"), POSITION, POSITION),
    st.tuples(st.just("drop"), POSITION),
    st.tuples(st.just("duplicate"), POSITION),
    st.tuples(st.just("swap"), POSITION, POSITION),
), max_size=3)


def quiet(line):
    """A log function that drops its lines."""


def gradient_image(seed):
    """A SIDE x SIDE BGR image of a colour gradient."""
    start = np.random.RandomState(seed).randint(0, 128, size=3)
    ramp = np.linspace(0, 120, SIDE)[:, None, None]
    return (start + ramp + np.zeros((SIDE, SIDE, 3))).astype(np.uint8)


def encode(extension, image):
    """The bytes of ``image`` encoded by OpenCV in the format of ``extension``."""
    is_encoded, encoded = cv2.imencode(extension, image)
    assert is_encoded
    return encoded.tobytes()


def valid_pair():
    """The bytes of a valid .rec of six images (record 2 split in two parts by the magic) and of its .idx."""
    with tempfile.TemporaryDirectory() as folder:
        files = RecordFiles(os.path.join(folder, "set"))
        writer = mx.recordio.MXIndexedRecordIO(files.idx, files.rec, "w")
        for key in range(6):
            header = mx.recordio.IRHeader(flag=0, label=float(key % NUM_CLASSES), id=key, id2=0)
            image = encode(".jpg", gradient_image(key))
            if key == 2:
                image += b"\0" * (-(len(image) + IMAGE_HEADER_BYTES) % 4) + MAGIC_BYTES + b"tail"
            writer.write_idx(key, mx.recordio.pack(header, image))
        writer.close()
        with open(files.rec, "rb") as rec_file, open(files.idx, "rb") as idx_file:
            return rec_file.read(), idx_file.read()


VALID_REC, VALID_IDX = valid_pair()
VALID_IMAGES = {"jpeg": encode(".jpg", gradient_image(7)), "png": encode(".png", gradient_image(8))}


def edit_bytes(data, edits):
    """``data`` with each edit applied in turn: a bit flipped, the end cut, garbage inserted or written over."""
    data = bytearray(data)
    for kind, position, *argument in edits:
        position %= len(data) + 1
        if kind == "flip" and position < len(data):
            data[position] ^= 1 << argument[0]
        elif kind == "truncate":
            del data[position:]
        elif kind == "insert":
            data[position:position] = argument[0]
        elif kind == "overwrite":
            data[position:position + len(argument[0])] = argument[0]
    return bytes(data)


def edit_index(idx_bytes, edits):
    """The .idx ``idx_bytes`` with lines' offsets changed, lines dropped, duplicated or swapped."""
    lines = idx_bytes.decode().splitlines()
    for kind, line, *argument in edits:
        if not lines:
            break
        line %= len(lines)
        if kind == "offset":
            key = lines[line].split("\t")[0]
            lines[line] = f"{key}\t{argument[0] % (len(VALID_REC) + 64)}"
        elif kind == "drop":
            del lines[line]
        elif kind == "duplicate":
            lines.insert(line, lines[line])
        elif kind == "swap":
            other = argument[0] % len(lines)
            lines[line], lines[other] = lines[other], lines[line]
    return "".join(f"{line}\n" for line in lines).encode()


def read_with_image_record_iter(files):
    """The labels of the images ImageRecordIter yields, in order (no resize: see tests/test_bad_data.py)."""
    batches = mx.io.ImageRecordIter(path_imgrec=files.rec, path_imgidx=files.idx, data_shape=(3, SIDE, SIDE),
                                    batch_size=1, preprocess_threads=1)
    return [int(batch.label[0].asscalar()) for batch in batches]


def record_labels(files):
    """The label of each record of ``files``, in .idx order, read with mx.recordio."""
    reader = mx.recordio.MXIndexedRecordIO(files.idx, files.rec, "r")
    try:
        return [int(mx.recordio.unpack(reader.read_idx(key))[0].label) for key in reader.keys]
    finally:
        reader.close()


def check_damaged_pair(rec_bytes, idx_bytes):
    """Scan a .rec/.idx pair: only UserError or a RecordScan; the clean copy of its good records reads."""
    with tempfile.TemporaryDirectory() as folder:
        files = RecordFiles(os.path.join(folder, "set"))
        with open(files.rec, "wb") as rec_file, open(files.idx, "wb") as idx_file:
            rec_file.write(rec_bytes)
            idx_file.write(idx_bytes)
        try:
            check_record_files(files.rec, files.idx)
        except UserError as error:
            assert "\n" not in str(error)
        try:
            scan = scan_records(files.rec, files.idx, NUM_CLASSES, num_workers=2)
        except UserError as error:
            assert "\n" not in str(error)
            event("UserError from scan_records")
            return
        assert isinstance(scan, RecordScan)
        assert len(scan.good) + len(scan.bad) == count_records(files.idx)
        event("scan: all good" if not scan.bad else "scan: some good" if scan.good else "scan: all bad")
        if scan.good:
            copy = write_clean_copy(files.rec, scan, os.path.join(folder, "clean"))
            check_record_files(copy.rec, copy.idx)
            assert [key for key, _ in read_record_index(copy.idx)] == [key for key, _ in scan.good]
            assert read_with_image_record_iter(copy) == record_labels(copy)
            assert len(record_labels(copy)) == len(scan.good)


@FUZZ
@given(rec_edits=BYTE_EDITS, index_edits=INDEX_EDITS)
def test_edited_rec_and_wrong_offsets_give_a_user_error_or_a_scan_whose_clean_copy_reads(rec_edits, index_edits):
    check_damaged_pair(edit_bytes(VALID_REC, rec_edits), edit_index(VALID_IDX, index_edits))


@FUZZ
@given(rec_source=st.sampled_from(["valid", "edited", "random"]), rec_edits=BYTE_EDITS,
       random_rec=st.binary(max_size=1024), idx_edits=BYTE_EDITS)
def test_random_or_edited_bytes_in_both_files_give_a_user_error_or_a_scan(rec_source, rec_edits, random_rec,
                                                                          idx_edits):
    rec_bytes = {"valid": VALID_REC, "edited": edit_bytes(VALID_REC, rec_edits), "random": random_rec}[rec_source]
    check_damaged_pair(rec_bytes, edit_bytes(VALID_IDX, idx_edits))


@FUZZ
@given(base=st.sampled_from(sorted(VALID_IMAGES) + ["random"]), edits=BYTE_EDITS,
       random_bytes=st.binary(max_size=512))
def test_packer_packs_a_damaged_image_that_decodes_or_skips_it_with_a_reason(base, edits, random_bytes):
    image_bytes = random_bytes if base == "random" else edit_bytes(VALID_IMAGES[base], edits)
    with tempfile.TemporaryDirectory() as folder:
        os.makedirs(os.path.join(folder, "src", "cat"))
        cv2.imwrite(os.path.join(folder, "src", "cat", "good.png"), gradient_image(9))
        fuzzed_path = os.path.join(folder, "src", "cat", "fuzzed.jpg")
        with open(fuzzed_path, "wb") as fuzzed_file:
            fuzzed_file.write(image_bytes)
        result = pack_folder(os.path.join(folder, "src"), os.path.join(folder, "out"), num_workers=1, log=quiet)

        if result.skipped:
            [(path, reason)] = result.skipped
            assert path == fuzzed_path and reason.startswith(SKIP_REASONS)
            event(f"skipped: {reason}")
        else:
            event("packed")
        assert result.num_images == 2 - len(result.skipped)
        out = RecordFiles(os.path.join(folder, "out"))
        assert scan_records(out.rec, out.idx, num_classes=1, num_workers=1).bad == []
