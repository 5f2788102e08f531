"""Tests of scan_records and write_clean_copy (data.records) on small record files damaged on purpose.

Each set holds NUM_RECORDS solid grey 16x16 JPEGs; record ``key`` has label ``key % NUM_CLASSES`` and
grey level ``8 + 10 * key``, so the level read back by ImageRecordIter tells which record it was.
"""
import os
import re
import shutil
import struct

import cv2
import mxnet as mx
import numpy as np
import pytest

from data.records import (MAGIC_BYTES, NO_RECORD_HERE, REPACK_HINT, RUNS_PAST_END, STARTS_PAST_END, BadRecord,
                          RecordFiles, check_record_files, read_class_names, read_record_index, scan_records,
                          write_clean_copy)
from tests.helpers import disk_with_free_bytes
from utils.errors import UserError

NUM_CLASSES = 4
NUM_RECORDS = 24
SIDE = 16


def grey_jpeg(level, trailer=b""):
    """JPEG bytes of a SIDE x SIDE image of one grey level, followed by ``trailer`` (decoders ignore it)."""
    is_encoded, jpeg = cv2.imencode(".jpg", np.full((SIDE, SIDE, 3), level, np.uint8))
    assert is_encoded
    return jpeg.tobytes() + trailer


def label_of(key):
    """The class of record ``key`` in an undamaged set."""
    return key % NUM_CLASSES


def grey_level(key):
    """The grey level of record ``key``'s image; 10 levels apart, so JPEG's rounding cannot mix them up."""
    return 8 + 10 * key


def image_record(key, label=None, image=None, flag=0):
    """An image record as data.pack writes it: the key's label and grey image unless given."""
    label = float(label_of(key)) if label is None else label
    image = grey_jpeg(grey_level(key)) if image is None else image
    return mx.recordio.pack(mx.recordio.IRHeader(flag=flag, label=label, id=key, id2=0), image)


def write_set(prefix, replaced=None, trailer=b""):
    """Write NUM_RECORDS image records under keys 0..N-1, record k being ``replaced[k]`` if given.

    ``trailer`` is appended to every image. Returns the RecordFiles and the offset of each key.
    """
    replaced = replaced or {}
    files = RecordFiles(str(prefix))
    writer = mx.recordio.MXIndexedRecordIO(files.idx, files.rec, "w")
    for key in range(NUM_RECORDS):
        default = image_record(key, image=grey_jpeg(grey_level(key), trailer))
        writer.write_idx(key, replaced.get(key, default))
    writer.close()
    return files, [offset for _, offset in read_record_index(files.idx)]


def write_index(files, entries):
    """Overwrite the .idx of ``files`` with the ``(key, offset)`` pairs ``entries``."""
    with open(files.idx, "w", encoding="utf-8") as idx_file:
        idx_file.writelines(f"{key}\t{offset}\n" for key, offset in entries)


def read_with_image_record_iter(files):
    """``(label, key)`` of each image that ImageRecordIter yields in order, the key told by its grey level.

    No ``resize``: with it, MXNet 1.9.1 kills the process with SIGFPE on an undecodable image (measured),
    where without it ImageRecordIter raises an MXNetError.
    """
    batches = mx.io.ImageRecordIter(path_imgrec=files.rec, path_imgidx=files.idx, data_shape=(3, SIDE, SIDE),
                                    batch_size=1, preprocess_threads=1)
    return [(int(batch.label[0].asscalar()), int(round((batch.data[0].mean().asscalar() - grey_level(0)) / 10)))
            for batch in batches]


def truncated_set(tmp_path):
    """The file is cut 20 bytes into record 22: 22 runs past the end and 23 starts past it."""
    files, offsets = write_set(tmp_path / "set")
    with open(files.rec, "r+b") as rec_file:
        rec_file.truncate(offsets[22] + 20)
    return files, [BadRecord(22, offsets[22], RUNS_PAST_END), BadRecord(23, offsets[23], STARTS_PAST_END)]


def set_cut_inside_padding(tmp_path):
    """The last payload needs 3 bytes of zero padding and the file lost the last of them."""
    last = NUM_RECORDS - 1
    trailer = b"\0" * ((1 - len(image_record(last))) % 4)  # a payload of 4n + 1 bytes
    padded_last = image_record(last, image=grey_jpeg(grey_level(last), trailer))
    files, offsets = write_set(tmp_path / "set", replaced={last: padded_last})
    with open(files.rec, "r+b") as rec_file:
        rec_file.truncate(os.path.getsize(files.rec) - 1)
    return files, [BadRecord(last, offsets[last], RUNS_PAST_END)]


def shifted_offsets_set(tmp_path):
    """The .idx points key 5 two bytes and key 6 eight bytes past their records' starts."""
    files, offsets = write_set(tmp_path / "set")
    moved = {5: offsets[5] + 2, 6: offsets[6] + 8}
    write_index(files, [(key, moved.get(key, offset)) for key, offset in enumerate(offsets)])
    return files, [BadRecord(5, moved[5], NO_RECORD_HERE), BadRecord(6, moved[6], NO_RECORD_HERE)]


def index_of_another_set(tmp_path):
    """The .idx of a set whose records are 4 bytes longer each: only key 0's offset (0) starts a record."""
    files, _ = write_set(tmp_path / "set")
    other, other_offsets = write_set(tmp_path / "other", trailer=b"\0" * 4)
    shutil.copyfile(other.idx, files.idx)
    return files, [BadRecord(key, other_offsets[key], NO_RECORD_HERE) for key in range(1, NUM_RECORDS)]


def undecodable_set(tmp_path):
    """Record 7 starts like a JPEG but is noise; records 8 and 9 have an empty and a WebP image."""
    noise = b"\xff\xd8\xff\xe0" + np.random.RandomState(0).bytes(200)
    is_encoded, webp = cv2.imencode(".webp", np.full((SIDE, SIDE, 3), 88, np.uint8))
    assert is_encoded
    files, offsets = write_set(tmp_path / "set", replaced={
        7: image_record(7, image=noise), 8: image_record(8, image=b""), 9: image_record(9, image=webp.tobytes())})
    return files, [BadRecord(7, offsets[7], "image bytes do not decode"),
                   BadRecord(8, offsets[8], "record holds no image bytes"),
                   BadRecord(9, offsets[9], "image is not JPEG, PNG, BMP or TIFF, the formats MXNet decodes")]


def bad_label_set(tmp_path):
    """Labels outside the classes, not whole, or several; record 14 has one label in a label array (good)."""
    files, offsets = write_set(tmp_path / "set", replaced={
        9: image_record(9, label=float(NUM_CLASSES)), 10: image_record(10, label=-1.0),
        11: image_record(11, label=2.5), 12: image_record(12, label=float("nan")),
        13: image_record(13, label=np.array([1.0, 2.0], np.float32), flag=2),
        14: image_record(14, label=np.array([label_of(14)], np.float32), flag=1)})
    return files, [BadRecord(9, offsets[9], "label 4 outside [0, 4)"),
                   BadRecord(10, offsets[10], "label -1 outside [0, 4)"),
                   BadRecord(11, offsets[11], "label 2.5 is not a whole number"),
                   BadRecord(12, offsets[12], "label nan is not a whole number"),
                   BadRecord(13, offsets[13], "record holds 2 labels; the trainer reads one per image")]


def short_record_set(tmp_path):
    """Record 2 holds 10 bytes, too few for MXNet's 24-byte image header."""
    files, offsets = write_set(tmp_path / "set", replaced={2: b"0123456789"})
    return files, [BadRecord(2, offsets[2], "record of 10 bytes is shorter than the 24-byte image header")]


def split_record_set(tmp_path):
    """Record 3's image is followed by the magic number, so the writer splits it in two parts (good)."""
    probe = image_record(3)
    image = grey_jpeg(grey_level(3), b"\0" * (-len(probe) % 4) + MAGIC_BYTES + b"tail")
    files, offsets = write_set(tmp_path / "set", replaced={3: image_record(3, image=image)})
    with open(files.rec, "rb") as rec_file:
        rec_file.seek(offsets[3] + 4)
        assert struct.unpack("<I", rec_file.read(4))[0] >> 29 == 1  # the record really is split
    return files, []


def listed_twice_set(tmp_path):
    """The .idx lists record 4's offset again under key 99, and key 5 again at record 6's offset."""
    files, offsets = write_set(tmp_path / "set")
    write_index(files, list(enumerate(offsets)) + [(99, offsets[4]), (5, offsets[6])])
    return files, [BadRecord(99, offsets[4], "same offset as key 4 (the .idx lists one record twice)"),
                   BadRecord(5, offsets[6], "its key is listed twice in the .idx")]


def damaged_length_set(tmp_path):
    """Record 10's length field grew by 16 bytes, so it runs into record 11."""
    files, offsets = write_set(tmp_path / "set")
    with open(files.rec, "r+b") as rec_file:
        rec_file.seek(offsets[10] + 4)
        length_word = struct.unpack("<I", rec_file.read(4))[0]
        rec_file.seek(offsets[10] + 4)
        rec_file.write(struct.pack("<I", length_word + 16))
    return files, [BadRecord(10, offsets[10], f"record runs into the record at byte {offsets[11]} "
                                              "(its length field is damaged)")]


@pytest.mark.parametrize("make_set", [
    truncated_set, set_cut_inside_padding, shifted_offsets_set, index_of_another_set, undecodable_set,
    bad_label_set, short_record_set, split_record_set, listed_twice_set, damaged_length_set,
], ids=["truncated-rec", "cut-in-padding", "shifted-offsets", "idx-of-another-rec", "undecodable-image",
        "bad-labels", "short-record", "split-record", "listed-twice", "damaged-length"])
def test_scan_names_the_bad_records_and_the_clean_copy_reads_the_good_ones(tmp_path, make_set):
    files, expected_bad = make_set(tmp_path)
    entries = read_record_index(files.idx)
    scan = scan_records(files.rec, files.idx, NUM_CLASSES, num_workers=2)

    assert scan.bad == expected_bad
    bad_entries = [(record.key, record.offset) for record in expected_bad]
    assert scan.good == [entry for entry in entries if entry not in bad_entries]
    assert scan_records(files.rec, files.idx, NUM_CLASSES, decode=False, num_workers=1).bad == \
        [record for record in expected_bad if record.reason != "image bytes do not decode"]
    copy = write_clean_copy(files.rec, scan, str(tmp_path / "clean"))
    assert read_with_image_record_iter(copy) == [(label_of(key), key) for key, _ in scan.good]
    assert scan_records(copy.rec, copy.idx, NUM_CLASSES).bad == []
    assert [name for name in os.listdir(tmp_path) if "partial" in name] == []


def test_image_record_iter_fails_on_an_undecodable_record_even_left_out_of_the_idx(tmp_path):
    files, offsets = write_set(tmp_path / "set", replaced={7: image_record(7, image=b"\xff\xd8\xff\xe0" + bytes(99))})
    with pytest.raises(mx.base.MXNetError, match="resize"):
        read_with_image_record_iter(files)
    # ImageRecordIter reads each record up to the next listed offset, so record 6's span swallows 7.
    write_index(files, [(key, offset) for key, offset in enumerate(offsets) if key != 7])
    with pytest.raises(mx.base.MXNetError, match="resize"):
        read_with_image_record_iter(files)


def test_describe_counts_the_bad_records_and_names_the_first_three(tmp_path):
    files, _ = bad_label_set(tmp_path)
    scan = scan_records(files.rec, files.idx, NUM_CLASSES, num_workers=1)
    good_files, _ = write_set(tmp_path / "good")

    assert scan.describe() == (
        f"5 of 24 records of {files.rec} are bad: key 9 at byte {scan.bad[0].offset}: label 4 outside [0, 4); "
        f"key 10 at byte {scan.bad[1].offset}: label -1 outside [0, 4); key 11 at byte {scan.bad[2].offset}: "
        "label 2.5 is not a whole number; and 2 more")
    assert scan_records(good_files.rec, good_files.idx, NUM_CLASSES).describe() == \
        f"all 24 records of {good_files.rec} are good"


def empty_file(path):
    """Cut the file at ``path`` to nothing."""
    open(path, "wb").close()


def write_text(path, text):
    """Overwrite the file at ``path`` with ``text``."""
    with open(path, "w", encoding="utf-8") as text_file:
        text_file.write(text)


@pytest.mark.parametrize("damage, message", [
    (lambda files: empty_file(files.rec), "record file {rec} is empty; " + REPACK_HINT),
    (lambda files: empty_file(files.idx), "index file {idx} is empty; " + REPACK_HINT),
    (lambda files: os.remove(files.rec), "record file {rec} not found; " + REPACK_HINT),
    (lambda files: write_text(files.idx, "\n\n"), "index file {idx} lists no records; " + REPACK_HINT),
    (lambda files: write_text(files.idx, "0\t0\n1\t-8\n"),
     "{idx} line 2 is '1\\t-8', not '<key>\\t<offset>'; the index is damaged: " + REPACK_HINT),
    (lambda files: write_text(files.idx, f"0\t{'9' * 20}\n"),
     "{idx} line 1 is '0\\t" + "9" * 20 + "', not '<key>\\t<offset>'; the index is damaged: " + REPACK_HINT),
], ids=["empty-rec", "empty-idx", "missing-rec", "blank-idx", "negative-offset", "offset-beyond-64-bits"])
def test_file_level_damage_raises_one_line_user_error(tmp_path, damage, message):
    files, _ = write_set(tmp_path / "set")
    damage(files)
    with pytest.raises(UserError) as scan_error:
        scan_records(files.rec, files.idx, NUM_CLASSES)
    with pytest.raises(UserError) as check_error:
        check_record_files(files.rec, files.idx)
    assert str(scan_error.value) == str(check_error.value) == message.format(rec=files.rec, idx=files.idx)


def test_check_record_files_rejects_a_cut_in_the_padding_and_a_size_not_multiple_of_4(tmp_path):
    files, _ = set_cut_inside_padding(tmp_path)
    with pytest.raises(UserError, match=r"is truncated: its record at byte \d+ ends at byte \d+"):
        check_record_files(files.rec, files.idx)
    good, _ = write_set(tmp_path / "good")
    with open(good.rec, "ab") as rec_file:
        rec_file.write(b"\0")
    with pytest.raises(UserError) as error:
        check_record_files(good.rec, good.idx)
    assert str(error.value) == (f"{good.rec} has {os.path.getsize(good.rec)} bytes, not a multiple of 4: it is cut "
                                f"short or has stray bytes after its last record; {REPACK_HINT}")


def test_clean_copy_keeps_keys_and_class_names_and_refuses_bad_targets(tmp_path):
    files, _ = undecodable_set(tmp_path)
    write_text(files.classes, "a\nb\nc\nd\n")
    scan = scan_records(files.rec, files.idx, NUM_CLASSES, num_workers=1)
    copy = write_clean_copy(files.rec, scan, str(tmp_path / "clean"))

    assert copy == RecordFiles(str(tmp_path / "clean"))
    kept_keys = [key for key in range(NUM_RECORDS) if key not in (7, 8, 9)]
    assert [key for key, _ in read_record_index(copy.idx)] == kept_keys
    assert read_class_names(copy.rec) == ["a", "b", "c", "d"]
    with pytest.raises(UserError) as error:
        write_clean_copy(files.rec, scan, files.prefix)
    assert str(error.value) == (f"output prefix {files.prefix} is that of the scanned files; choose another prefix "
                                "so that the originals stay")
    with pytest.raises(UserError, match="output folder .*missing does not exist"):
        write_clean_copy(files.rec, scan, str(tmp_path / "missing" / "clean"))


def test_clean_copy_checks_for_room_before_writing_and_asks_for_what_it_takes(tmp_path, monkeypatch):
    files, _ = undecodable_set(tmp_path)
    write_text(files.classes, "a\nb\nc\nd\n")
    scan = scan_records(files.rec, files.idx, NUM_CLASSES, num_workers=1)
    measured = write_clean_copy(files.rec, scan, str(tmp_path / "measured"))
    assert os.path.getsize(measured.rec) == scan.good_bytes
    taken = sum(os.path.getsize(path) for path in (measured.rec, measured.idx, measured.classes))
    # The index is counted with each offset as long as the copy's .rec size, the first (0) included: at most that
    # many digits less one too many a line.
    index_slack = len(scan.good) * (len(str(scan.good_bytes)) - 1)

    disk_with_free_bytes(monkeypatch, taken - 1)
    with pytest.raises(UserError) as error:
        write_clean_copy(files.rec, scan, str(tmp_path / "clean"))
    needed = int(re.search(r"needs ([\d,]+) bytes", str(error.value)).group(1).replace(",", ""))
    assert taken <= needed <= taken + index_slack
    assert str(error.value) == (
        f"the copy of the 21 good records of {files.rec} needs {needed:,} bytes ({needed / 1000:.1f} kB) in "
        f"{tmp_path}, which has {taken - 1:,} bytes ({(taken - 1) / 1000:.1f} kB) free; make room there, or write the "
        "copy to another disk (`python -m data.clean --out`, or --save-dir with --skip-bad-records)")
    disk_with_free_bytes(monkeypatch, needed - 1)
    with pytest.raises(UserError, match="needs"):
        write_clean_copy(files.rec, scan, str(tmp_path / "clean"))
    assert not [name for name in os.listdir(tmp_path) if name.startswith("clean")]

    disk_with_free_bytes(monkeypatch, needed)
    copy = write_clean_copy(files.rec, scan, str(tmp_path / "clean"))
    assert [key for key, _ in read_record_index(copy.idx)] == [key for key, _ in scan.good]


def test_clean_copy_refuses_a_set_without_good_records_or_changed_since_the_scan(tmp_path):
    files, _ = write_set(tmp_path / "set", replaced={key: image_record(key, label=9.0) for key in range(NUM_RECORDS)})
    scan = scan_records(files.rec, files.idx, NUM_CLASSES, decode=False)
    with pytest.raises(UserError) as error:
        write_clean_copy(files.rec, scan, str(tmp_path / "clean"))
    assert str(error.value) == (f"none of the 24 records of {files.rec} is good, so there is nothing to copy; "
                                f"{REPACK_HINT}")

    files, _ = write_set(tmp_path / "set")
    scan = scan_records(files.rec, files.idx, NUM_CLASSES, decode=False)
    with open(files.rec, "r+b") as rec_file:
        rec_file.truncate(scan.good[-1][1] + 4)
    with pytest.raises(UserError) as error:
        write_clean_copy(files.rec, scan, str(tmp_path / "clean"))
    assert str(error.value) == (f"{files.rec} changed since it was scanned (key 23 at byte {scan.good[-1][1]}: "
                                f"{STARTS_PAST_END}); scan it again")
    assert sorted(os.listdir(tmp_path)) == ["set.idx", "set.rec"]
