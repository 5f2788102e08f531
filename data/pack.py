"""Pack an ImageNet-style folder (SRC_DIR/<class_name>/<images>) into MXNet RecordIO.

    python -m data.pack SRC_DIR OUT_PREFIX [--resize N] [--quality Q] [--num-workers J] [--seed S]

writes OUT_PREFIX.rec, .idx, .lst and .classes.txt (see ``data.records``). Classes are the sub-folders
of SRC_DIR in sorted name order and the label of a class is its position in that order, as in MXNet's
``tools/im2rec.py``. Worker threads decode, resize and JPEG-encode; the calling thread writes the
records in the list's order, so the output does not depend on the number of workers.
"""
import argparse
import functools
import os
import sys
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool

import cv2
import mxnet as mx
import numpy as np

from data.class_list import write_class_list
from data.records import RecordFiles, check_record_files
from utils.errors import UserError, command_line_entry

PROGRESS_EVERY = 10000  # images between two progress lines; ImageNet's train set takes hours to pack
SKIPPED_NAMED_IN_SUMMARY = 3  # the rest of the skipped files are named in their own lines above it


@dataclass
class PackResult:
    """What ``pack_folder`` wrote: counts, the class names (index = label) and the files it skipped."""

    num_images: int
    num_classes: int
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of each unpackable file


def pack_folder(src_dir, out_prefix, resize=0, quality=95, num_workers=None, seed=0, log=print):
    """Pack every image below ``src_dir``'s class folders into ``out_prefix``.rec/.idx/.lst/.classes.txt.

    Args:
        src_dir: folder holding one sub-folder per class; files are found recursively below each one,
            hidden files and folders (name starting with ".") are ignored.
        out_prefix: path of the output files without extension; its folder must exist.
        resize: if positive, scale each image so that its shorter side is ``resize`` pixels.
        quality: JPEG quality (1-100) of the stored images.
        num_workers: threads decoding and encoding images; None means one per CPU core.
        seed: seed of the shuffle of the image list, so that a sequential reader sees mixed classes.
        log: called with each line of progress, each skipped file and the final summary.

    Records hold ``IRHeader(flag=0, label=label, id=index, id2=0)`` and a 3-channel BGR JPEG; ``index``
    is the record's position in the file and its line in the .lst. Unreadable files are skipped and
    named. The files are written under temporary names, checked, then renamed, so a failed pack never
    leaves a partial file under a final name. Bad input raises UserError.
    """
    src_dir, out_prefix = os.fspath(src_dir), os.fspath(out_prefix)
    num_workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    _check_options(resize, quality, num_workers)
    _check_output_prefix(out_prefix)
    class_names = list_classes(src_dir)
    entries = list_images(src_dir, class_names, log)
    if not entries:
        raise UserError(f"the class folders of {src_dir} hold no files; put each class's images in "
                        f"{os.path.join(src_dir, '<class_name>')}/")
    shuffled = [entries[i] for i in np.random.RandomState(seed).permutation(len(entries))]

    final_files = RecordFiles(out_prefix)
    with final_files.written_whole() as partial_files:
        packed, skipped = _encode_and_write(src_dir, shuffled, partial_files, resize, quality, num_workers,
                                            log)
        if not packed:
            first_path, first_reason = skipped[0]
            raise UserError(f"none of the {len(skipped)} files below {src_dir} is a readable image "
                            f"(e.g. {first_path}: {first_reason}); check that SRC_DIR holds the images")
        _verify_records(partial_files, len(packed))
        _write_list(partial_files.lst, packed)
        write_class_list(partial_files.classes, class_names)

    _warn_about_empty_classes(class_names, packed, log)
    log(_summary(len(packed), class_names, final_files.rec, skipped))
    return PackResult(num_images=len(packed), num_classes=len(class_names), class_names=class_names,
                      skipped=skipped)


def list_classes(src_dir):
    """Return the names of the class sub-folders of ``src_dir`` in sorted order (index = label)."""
    if not os.path.exists(src_dir):
        raise UserError(f"image folder {src_dir} does not exist; give the folder that holds one "
                        f"sub-folder per class")
    if not os.path.isdir(src_dir):
        raise UserError(f"{src_dir} is not a folder; give the folder that holds one sub-folder per class")
    try:
        with os.scandir(src_dir) as folder_entries:
            class_names = sorted(entry.name for entry in folder_entries
                                 if entry.is_dir() and not entry.name.startswith("."))
    except OSError as error:
        raise UserError(f"cannot list {src_dir}: {error.strerror}; check its permissions") from error
    if not class_names:
        raise UserError(f"{src_dir} has no class sub-folders; put each class's images in "
                        f"{os.path.join(src_dir, '<class_name>')}/")
    for class_name in class_names:
        if not _is_utf8(class_name):
            raise UserError(f"class folder {_printable(os.path.join(src_dir, class_name))} has a name that is not "
                            "UTF-8 text, which the class list OUT_PREFIX.classes.txt must hold; rename the folder")
    return class_names


def list_images(src_dir, class_names, log=print):
    """Return ``(relative path, label)`` of every non-hidden file below each class folder, sorted.

    Relative paths use "/" and are relative to ``src_dir``, as in an im2rec .lst file. Symbolic links to
    folders are not followed (a link to a parent would loop forever); each one is named in ``log``.
    """
    entries = []
    for label, class_name in enumerate(class_names):
        for folder, subfolders, file_names in os.walk(os.path.join(src_dir, class_name)):
            for name in sorted(subfolders):
                if os.path.islink(os.path.join(folder, name)) and not name.startswith("."):
                    log(f"not followed: {_printable(os.path.join(folder, name))} is a symbolic link to a folder; "
                        "link the image files themselves, or copy the folder")
            # os.walk descends into the subfolders left in this list, in this order.
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
            for file_name in sorted(file_names):
                if not file_name.startswith("."):
                    relative_path = os.path.relpath(os.path.join(folder, file_name), src_dir)
                    entries.append((relative_path.replace(os.sep, "/"), label))
    return entries


def encode_image(path, resize, quality):
    """Read, decode, resize and JPEG-encode one image file.

    Returns ``(jpeg bytes, None)``, or ``(None, reason)`` if the file cannot be packed. Decoding with
    IMREAD_COLOR turns grayscale, alpha and 16-bit images into 8-bit 3-channel BGR.
    """
    if "\t" in path or "\n" in path:
        return None, "its name holds a tab or newline, which the .lst format cannot store"
    try:
        with open(path, "rb") as image_file:
            encoded = image_file.read()
    except OSError as error:
        return None, f"cannot read it ({error.strerror})"
    if not encoded:
        return None, "empty file"
    try:
        image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        return None, "not a decodable image"
    if resize:
        image = resize_shorter_side(image, resize)
    is_encoded, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not is_encoded:
        return None, "JPEG encoding failed"
    return jpeg.tobytes(), None


def resize_shorter_side(image, shorter_side):
    """Scale ``image`` (keeping its aspect ratio) so that its shorter side is ``shorter_side`` pixels."""
    height, width = image.shape[:2]
    if min(height, width) == shorter_side:
        return image
    if height <= width:
        new_height, new_width = shorter_side, max(1, round(width * shorter_side / height))
    else:
        new_height, new_width = max(1, round(height * shorter_side / width)), shorter_side
    # Area averaging does not alias when shrinking; cubic is the sharper choice when enlarging.
    interpolation = cv2.INTER_AREA if shorter_side < min(height, width) else cv2.INTER_CUBIC
    return cv2.resize(image, (new_width, new_height), interpolation=interpolation)


def _check_options(resize, quality, num_workers):
    """Raise UserError for a resize, JPEG quality or worker count outside its range."""
    if resize < 0:
        raise UserError(f"--resize {resize} is negative; give the shorter side in pixels, or 0 to keep sizes")
    if not 1 <= quality <= 100:
        raise UserError(f"--quality {quality} is outside 1..100; 95 keeps JPEG artefacts invisible")
    if num_workers < 1:
        raise UserError(f"--num-workers {num_workers} is below 1; give at least one worker")


def _check_output_prefix(out_prefix):
    """Raise UserError unless ``out_prefix`` names files in an existing, writable folder."""
    folder, name = os.path.split(out_prefix)
    folder = folder or "."
    if not name:
        raise UserError(f"OUT_PREFIX {out_prefix} names a folder; add a file name, "
                        f"e.g. {os.path.join(out_prefix, 'train')}")
    if name.endswith(".rec"):
        raise UserError(f"OUT_PREFIX {out_prefix} ends in .rec; give it without the extension, "
                        f"e.g. {RecordFiles.from_rec_path(out_prefix).prefix}")
    if not os.path.isdir(folder):
        raise UserError(f"output folder {folder} does not exist; create it or choose another OUT_PREFIX")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder {folder} is not writable; choose another OUT_PREFIX")


def _encode_and_write(src_dir, entries, files, resize, quality, num_workers, log):
    """Encode the images of ``entries`` with ``num_workers`` threads and write them, in order, into ``files``.

    Threads, not processes: OpenCV releases the GIL while it decodes, resizes and encodes, so threads
    use the cores as well as processes do (measured on 2 cores, 300 JPEGs of 500x375 resized to 256:
    1.6x faster than one thread, against 1.4x for forked processes, which pickle every image back),
    start at once under any start method, and share no forked copy of OpenCV's or MXNet's thread pools
    (a forked worker calling cv2.setNumThreads hung when the parent had used OpenCV's pool).
    """
    encode = functools.partial(encode_image, resize=resize, quality=quality)
    paths = [os.path.join(src_dir, relative_path) for relative_path, _ in entries]
    # Chunks amortise the hand-over between threads; four per worker keep the workers evenly loaded.
    chunksize = max(1, min(64, len(paths) // (4 * num_workers)))
    with ThreadPool(min(num_workers, len(paths))) as pool:
        return _write_records(entries, paths, pool.imap(encode, paths, chunksize), files, log)


def _write_records(entries, paths, encoded_images, files, log):
    """Write each encoded image as a record, in order; return the packed entries and the skipped files."""
    packed, skipped = [], []
    writer = mx.recordio.MXIndexedRecordIO(files.idx, files.rec, "w")
    try:
        for done, (entry, path, (jpeg, reason)) in enumerate(zip(entries, paths, encoded_images), start=1):
            if jpeg is None:
                log(f"skipped {_printable(path)}: {reason}")
                skipped.append((path, reason))
            else:
                index, label = len(packed), entry[1]
                header = mx.recordio.IRHeader(flag=0, label=float(label), id=index, id2=0)
                writer.write_idx(index, mx.recordio.pack(header, jpeg))
                packed.append(entry)
            if done % PROGRESS_EVERY == 0:
                log(f"  {done}/{len(entries)} images")
    finally:
        writer.close()
    return packed, skipped


def _verify_records(files, expected_count):
    """Re-open what was written and raise UserError unless it holds ``expected_count`` whole records."""
    check_record_files(files.rec, files.idx)
    reader = mx.recordio.MXIndexedRecordIO(files.idx, files.rec, "r")
    try:
        record_count = len(reader.keys)
        last_header, _ = mx.recordio.unpack(reader.read_idx(reader.keys[-1]))
    finally:
        reader.close()
    if record_count != expected_count or last_header.id != expected_count - 1:
        raise UserError(f"packed {expected_count} images but {files.idx} lists {record_count} records "
                        f"ending with id {last_header.id}; check the free disk space and pack again")


def _write_list(lst_path, packed):
    """Write the im2rec list: ``index<TAB>label<TAB>relative/path``, one line per record, in file order."""
    # A file name that is not UTF-8 (Latin-1 names from an old archive) reaches Python with its odd
    # bytes as surrogates; writing them back as those bytes lists the name exactly as it is on disk.
    with open(lst_path, "w", encoding="utf-8", errors="surrogateescape") as lst_file:
        for index, (relative_path, label) in enumerate(packed):
            lst_file.write(f"{index}\t{label}\t{relative_path}\n")


def _warn_about_empty_classes(class_names, packed, log):
    """Log the classes that got no image: their labels exist but a classifier never sees them."""
    packed_labels = {label for _, label in packed}
    empty = [name for label, name in enumerate(class_names) if label not in packed_labels]
    if empty:
        log(f"warning: {len(empty)} class folders hold no readable image: {', '.join(empty)}")


def _summary(num_images, class_names, rec_path, skipped):
    """The one-line report of a pack, naming the first few skipped files."""
    summary = f"packed {num_images} images of {len(class_names)} classes into {_printable(rec_path)}"
    if not skipped:
        return summary
    named = ", ".join(_printable(path) for path, _ in skipped[:SKIPPED_NAMED_IN_SUMMARY])
    more = len(skipped) - SKIPPED_NAMED_IN_SUMMARY
    if more > 0:
        named += f" and {more} more, named above"
    return f"{summary} (skipped {len(skipped)} unreadable files: {named})"


def _is_utf8(name):
    """True if the file name ``name`` is UTF-8 text (no byte decoded as a surrogate)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(path):
    """``path`` for a log line: the bytes of a name that is not UTF-8 shown as ``\\xNN``, which any terminal prints."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def build_parser():
    """The command-line flags of ``python -m data.pack``."""
    parser = argparse.ArgumentParser(
        prog="python -m data.pack",
        description="Pack SRC_DIR/<class_name>/<images> into OUT_PREFIX.rec/.idx/.lst/.classes.txt.")
    parser.add_argument("src_dir", metavar="SRC_DIR", help="folder with one sub-folder of images per class")
    parser.add_argument("out_prefix", metavar="OUT_PREFIX",
                        help="output path without extension, e.g. out/train")
    parser.add_argument("--resize", type=int, default=0, metavar="N",
                        help="scale each image so its shorter side is N pixels (default 0: keep the size)")
    parser.add_argument("--quality", type=int, default=95, metavar="Q",
                        help="JPEG quality 1-100 (default 95)")
    parser.add_argument("--num-workers", type=int, default=None, metavar="J",
                        help="encoding threads (default: one per CPU core)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the list shuffle (default 0)")
    return parser


@command_line_entry
def main(argv=None):
    """Run the packer on command-line arguments; return the exit status (2 on bad input)."""
    args = build_parser().parse_args(argv)
    pack_folder(args.src_dir, args.out_prefix, resize=args.resize, quality=args.quality,
                num_workers=args.num_workers, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
