"""Names of a packed data set's files, and cheap checks that a .rec/.idx pair is whole.

A data set packed by ``data.pack`` is four files sharing one prefix: ``PREFIX.rec`` (the images, MXNet
RecordIO), ``PREFIX.idx`` (``key<TAB>byte offset`` of each record), ``PREFIX.lst`` (im2rec's list:
``index<TAB>label<TAB>relative/path``) and ``PREFIX.classes.txt`` (line i is the name of label i).
The trainer imports this module to check its inputs before it spends minutes building a network.
"""
import os
import struct
from dataclasses import dataclass

from utils.errors import UserError

# dmlc-core's RecordIO starts every record with this word, then a word holding a 3-bit continuation
# flag and a 29-bit payload length (dmlc-core include/dmlc/recordio.h).
RECORDIO_MAGIC = 0xCED7230A
RECORD_HEADER_BYTES = 8
RECORD_LENGTH_MASK = (1 << 29) - 1

REPACK_HINT = "pack the image folder again with `python -m data.pack SRC_DIR OUT_PREFIX`"


@dataclass(frozen=True)
class RecordFiles:
    """The paths of the files of one packed data set, all named after ``prefix``."""

    prefix: str

    @classmethod
    def from_rec_path(cls, rec_path):
        """The file set that ``rec_path`` (``PREFIX.rec``) belongs to."""
        rec_path = os.fspath(rec_path)
        stem, extension = os.path.splitext(rec_path)
        return cls(stem if extension == ".rec" else rec_path)

    @property
    def rec(self):
        """The RecordIO file holding the encoded images."""
        return self.prefix + ".rec"

    @property
    def idx(self):
        """The index: one ``key<TAB>offset`` line per record."""
        return self.prefix + ".idx"

    @property
    def lst(self):
        """The im2rec list: one ``index<TAB>label<TAB>relative/path`` line per record."""
        return self.prefix + ".lst"

    @property
    def classes(self):
        """The class names, line i naming label i."""
        return self.prefix + ".classes.txt"


def read_class_names(rec_path):
    """Return the class names stored beside ``rec_path`` (``PREFIX.classes.txt``), or None if absent.

    Line i of the file is the name of label i, so the returned list is indexed by label.
    """
    classes_path = RecordFiles.from_rec_path(rec_path).classes
    if not os.path.isfile(classes_path):
        return None
    with open(classes_path, encoding="utf-8") as classes_file:
        return [line.rstrip("\n") for line in classes_file if line.strip()]


def count_records(idx_path):
    """Return the number of records listed in the index ``idx_path`` (its non-blank lines)."""
    with open(idx_path, encoding="utf-8") as idx_file:
        return sum(1 for line in idx_file if line.strip())


def read_record_offsets(idx_path):
    """Return the byte offsets listed in ``idx_path``, in file order; a malformed line raises UserError."""
    offsets = []
    with open(idx_path, encoding="utf-8", errors="replace") as idx_file:
        for line_number, line in enumerate(idx_file, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2 or not all(_is_decimal(field) for field in fields):
                raise UserError(
                    f"{idx_path} line {line_number} is {line.strip()[:60]!r}, not '<key>\\t<offset>'; "
                    f"the index is damaged: {REPACK_HINT}")
            offsets.append(int(fields[1]))
    return offsets


def check_record_files(rec_path, idx_path):
    """Raise UserError (one line) unless ``rec_path`` and ``idx_path`` look like a whole RecordIO pair.

    Checks, without reading every record: both files exist and are non-empty; every index line is
    ``<int>\\t<int>``; no offset points past the end of the .rec; the records at the first and the last
    index line and the one that starts last begin with RecordIO's magic number and end inside the file
    (so a .rec cut short by a full disk or an interrupted copy is caught).
    """
    rec_path, idx_path = os.fspath(rec_path), os.fspath(idx_path)
    for path, role in ((rec_path, "record file"), (idx_path, "index file")):
        if not os.path.isfile(path):
            raise UserError(f"{role} {path} not found; {REPACK_HINT}")
        if os.path.getsize(path) == 0:
            raise UserError(f"{role} {path} is empty; {REPACK_HINT}")
    offsets = read_record_offsets(idx_path)
    if not offsets:
        raise UserError(f"index file {idx_path} lists no records; {REPACK_HINT}")
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
            record_end = offset + RECORD_HEADER_BYTES + payload_length
            if record_end > rec_size:
                raise UserError(
                    f"{rec_path} is truncated: its record at byte {offset} ends at byte {record_end} but "
                    f"the file has {rec_size} bytes; {REPACK_HINT}")


def _read_record_length(rec_file, offset, rec_path, idx_path):
    """Return the payload length of the record at ``offset``; raise UserError if no record starts there."""
    rec_file.seek(offset)
    magic, length_word = struct.unpack("<II", rec_file.read(RECORD_HEADER_BYTES))
    if magic != RECORDIO_MAGIC:
        raise UserError(
            f"{rec_path} has no RecordIO record at byte {offset} (found 0x{magic:08x}, expected "
            f"0x{RECORDIO_MAGIC:08x}): it is not a RecordIO file or does not match {idx_path}; {REPACK_HINT}")
    return length_word & RECORD_LENGTH_MASK


def _is_decimal(text):
    """True if ``text`` is a non-negative integer written in decimal digits."""
    return text.isascii() and text.isdigit()
