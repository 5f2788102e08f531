"""Find the bad records of a packed data set and, when asked, train on a copy without them.

    python -m data.clean PREFIX.rec [--num-classes K] [--out CLEAN_PREFIX]

prints every bad record (key, byte offset, reason) and with ``--out`` writes the good ones to
CLEAN_PREFIX.rec/.idx. The classes are those of PREFIX.classes.txt or, for records without one (MXNet's
``tools/im2rec.py``, GluonCV's scripts), as many as their labels say, counted as the trainer counts them. The
trainer uses the same functions: ``--skip-bad-records`` trains on such a copy (made once in SAVE_DIR/clean/ and
reused while the source is unchanged), and without it a data error in the middle of training is traced to the
record that caused it.
"""
import argparse
import json
import os

from data.records import RecordFiles, classes_from_labels, read_class_names, scan_records, write_clean_copy
from utils.errors import command_line_entry
from utils.files import atomic_write_text

# The advice that ends every message naming a bad record that the trainer met.
BAD_RECORD_HINT = "pack the images again (`python -m data.pack`), or pass --skip-bad-records to train without them"


def _source_identity(rec_path, idx_path):
    """What says that a source file is unchanged since its clean copy was made: paths, sizes and mtimes."""
    return {path: [os.path.getsize(path), os.stat(path).st_mtime_ns] for path in (rec_path, idx_path)}


def clean_records(rec_path, idx_path, num_classes, out_prefix, log):
    """Return ``(rec, idx, number of bad records)`` to train on: the source itself, or a clean copy.

    The copy ``out_prefix``.rec/.idx is reused when its ``.source.json`` shows the same source files.
    """
    identity = _source_identity(rec_path, idx_path)
    marker = out_prefix + ".source.json"
    copy = RecordFiles(out_prefix)
    if os.path.exists(marker) and os.path.exists(copy.rec):
        with open(marker) as handle:
            made = json.load(handle)
        if made["source"] == json.loads(json.dumps(identity)) and made["num_classes"] == num_classes:
            log(f"Reusing {copy.rec}: {rec_path} without its {made['num_bad']} bad records")
            return copy.rec, copy.idx, made["num_bad"]
    scan = scan_records(rec_path, idx_path, num_classes)
    if not scan.bad:
        return rec_path, idx_path, 0
    log(f"Skipping bad records (--skip-bad-records): {scan.describe()}")
    os.makedirs(os.path.dirname(out_prefix) or ".", exist_ok=True)
    write_clean_copy(rec_path, scan, out_prefix)
    made = dict(source=identity, num_classes=num_classes, num_bad=len(scan.bad),
                bad=[[record.key, record.offset, record.reason] for record in scan.bad])
    atomic_write_text(marker, json.dumps(made))
    log(f"Training on {copy.rec}: the {len(scan.good)} good records")
    return copy.rec, copy.idx, len(scan.bad)


def describe_bad_records(files, num_classes):
    """One line naming the bad records of the first of ``files`` ((rec, idx) pairs) that has any, else None."""
    for rec_path, idx_path in files:
        scan = scan_records(rec_path, idx_path, num_classes)
        if scan.bad:
            return scan.describe()
    return None


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rec", help="PREFIX.rec packed by `python -m data.pack` (its .idx beside it)")
    parser.add_argument("--idx", help="its .idx (default: beside the .rec)")
    parser.add_argument("--num-classes", type=int, help="default: the lines of PREFIX.classes.txt, or without it the "
                                                        "highest label + 1")
    parser.add_argument("--out", help="write the good records to OUT.rec/.idx")
    return parser


@command_line_entry
def main(argv=None):
    args = build_parser().parse_args(argv)
    idx = args.idx or RecordFiles.from_rec_path(args.rec).idx
    num_classes = args.num_classes or len(read_class_names(args.rec) or [])
    if not num_classes:
        num_classes, source = classes_from_labels(args.rec, idx)
        print(f"{num_classes} classes, {source}")
    scan = scan_records(args.rec, idx, num_classes)
    print(scan.describe())
    for record in scan.bad:
        print(f"key {record.key}\tbyte {record.offset}\t{record.reason}")
    if args.out and scan.bad:
        copy = write_clean_copy(args.rec, scan, args.out)
        print(f"wrote the {len(scan.good)} good records to {copy.rec} and {copy.idx}")


if __name__ == "__main__":
    raise SystemExit(main())
