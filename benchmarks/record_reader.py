"""Images/s of ``data.record_reader.RecordReader`` against MXNet's ``ImageRecordIter`` configured with the paper's
augmentation (as training read records before ``RecordReader``), on the same ``.rec`` with as many decoding threads,
and what each step of our reader costs per image.

    mkdir -p /tmp/rr && tar -xzf ../shared/datasets/cifar10-jpg.tar.gz -C /tmp/rr
    python -m data.pack /tmp/rr/cifar10/test /tmp/rr/test-256 --resize 256
    python -m data.pack /tmp/rr/cifar10/train /tmp/rr/train                  # 32-pixel records
    python -m benchmarks.record_reader --rec /tmp/rr/test-256.rec:224 /tmp/rr/train.rec:32 --threads 1 2

Each round starts one child process per thread count T, with ``MXNET_OMP_MAX_THREADS=T``, which reads
``--batches`` batches (after the first few, which fill each reader's buffers) from each reader in turn, the order
rotating between rounds; rows give the medians over the rounds and ratios of medians. The readers:
``RecordReader`` with ``num_workers=T``; ``ImageRecordIter`` (``paper_record_iter``) with
``preprocess_threads=T``, which decodes on max(cores / 2, 1) threads whatever it says (one on 2 cores); and the
same created for the CPU (``ctx='cpu'``), which decodes on MXNet's OpenMP threads, here exactly T. ``--profile``
adds, on one thread, the microseconds per image of each step of our reader.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import cv2
import mxnet as mx
import numpy as np

from benchmarks.children import benchmark_command, child_environment
from benchmarks.machine import describe
from data import record_reader
from data.augmentation import CROP_AREA, CROP_ASPECT_RATIO, JITTER, LIGHTING_STD, RGB_MEAN, RGB_STD
from data.records import RecordFiles, read_record, read_record_index

READERS = ("RecordReader", "ImageRecordIter", "ImageRecordIter ctx=cpu")
WARMUP_BATCHES = 6  # RecordReader's default 5 buffers, and ImageRecordIter's 4, are all written once before timing


def images_per_sec(batches, batch_size, count):
    """Images/s over ``count`` batches of ``batches`` after WARMUP_BATCHES, each waited for."""
    for _ in range(WARMUP_BATCHES):
        next(batches).data[0].wait_to_read()
    tic = time.perf_counter()
    for _ in range(count):
        next(batches).data[0].wait_to_read()
    return count * batch_size / (time.perf_counter() - tic)


def paper_record_iter(rec, idx, batch_size, size, threads, **kwargs):
    """MXNet's ``ImageRecordIter`` with section 2's augmentation (``data.augmentation``), shuffled, seeded."""
    return mx.io.ImageRecordIter(
        path_imgrec=rec, path_imgidx=idx, batch_size=batch_size, data_shape=(3, size, size), shuffle=True, seed=0,
        seed_aug=0, round_batch=True, preprocess_threads=threads, random_resized_crop=True,
        min_random_area=CROP_AREA[0], max_random_area=CROP_AREA[1], min_aspect_ratio=CROP_ASPECT_RATIO[0],
        max_aspect_ratio=CROP_ASPECT_RATIO[1], rand_mirror=True, brightness=JITTER, contrast=JITTER,
        saturation=JITTER, pca_noise=LIGHTING_STD, mean_r=RGB_MEAN[0], mean_g=RGB_MEAN[1], mean_b=RGB_MEAN[2],
        std_r=RGB_STD[0], std_g=RGB_STD[1], std_b=RGB_STD[2], **kwargs)


def endless(iterator):
    """The batches of ``iterator``, pass after pass."""
    while True:
        yield from iterator
        iterator.reset()


def reader_batches(name, rec, size, threads, batch_size, count):
    """The training batches of epoch 0 from reader ``name`` (one of READERS)."""
    idx = RecordFiles.from_rec_path(rec).idx
    if name == "RecordReader":
        reader = record_reader.RecordReader(rec, idx, batch_size, size, seed=0, num_workers=threads,
                                            batches_per_epoch=WARMUP_BATCHES + count)
        return reader.epoch(0)
    # ctx='cpu': decode on MXNet's OpenMP threads (MXNET_OMP_MAX_THREADS), not on max(cores / 2, 1).
    return endless(paper_record_iter(rec, idx, batch_size, size, threads,
                                     **(dict(ctx="cpu") if name.endswith("ctx=cpu") else {})))


def measure(args):
    """In a child: images/s of each reader on each set, readers in the order ``args.readers``."""
    return {f"{rec}:{size}:{name}": images_per_sec(reader_batches(name, rec, size, args.threads[0], args.batch_size,
                                                                  args.batches), args.batch_size, args.batches)
            for rec, size in args.rec for name in args.readers}


def profile(rec, size, images=300):
    """Microseconds per image of each step of RecordReader's work on one thread, over the first ``images``
    records of ``rec``."""
    seconds = {}

    def timed(step, function, *args):
        tic = time.perf_counter()
        result = function(*args)
        seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - tic
        return result

    entries = read_record_index(RecordFiles.from_rec_path(rec).idx)[:images]
    out = np.empty((3, size, size), np.float32)
    augmentation = record_reader.Augmentation()
    with open(rec, "rb") as rec_file:
        rec_size = rec_file.seek(0, 2)
        for place, (_, offset) in enumerate(entries):
            _, image_bytes = timed("read", read_record, rec_file, offset, rec_size)
            image = timed("decode", record_reader.decode_image, image_bytes)
            draws = timed("generator and draws", lambda: record_reader.draw_augmentation(
                record_reader.image_generator(0, 0, place), *image.shape[:2], augmentation))
            patch = timed("crop and resize", record_reader.crop_resized, image, draws.crop, size)
            patch = timed("flip", cv2.flip, patch, 1) if draws.mirror else patch
            patch = timed("colour jitter", record_reader.colour_jitter, patch, draws.jitter, draws.jitter_order)
            timed("lighting, normalize, write", lambda: record_reader.write_rgb(
                patch, record_reader.channel_tables(draws.lighting), out))
    return {step: total / len(entries) * 1e6 for step, total in seconds.items()}


def rec_and_size(text):
    rec, _, size = text.rpartition(":")
    return rec, int(size)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rec", type=rec_and_size, nargs="+", metavar="REC:SIZE",
                        required=True, help="a .rec and the crop side to read it at")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="also the cost of each step, per image")
    parser.add_argument("--output", default="record_reader.json")
    parser.add_argument("--readers", nargs="+", default=list(READERS), help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_rounds(args):
    """``args.rounds`` rounds of one child per thread count; returns a row per set and thread count."""
    figures = {}
    for round_number in range(args.rounds):
        shift = round_number % len(READERS)
        for threads in args.threads:
            command = benchmark_command(
                "record_reader", "--child", "--threads", str(threads), "--batch-size", str(args.batch_size),
                "--batches", str(args.batches), "--rec", *(f"{rec}:{size}" for rec, size in args.rec),
                "--readers", *READERS[shift:], *READERS[:shift])
            output = subprocess.run(command, check=True, capture_output=True, text=True,
                                    env=child_environment(MXNET_OMP_MAX_THREADS=str(threads))).stdout
            for key, value in json.loads(output.splitlines()[-1]).items():
                figures.setdefault(f"{key}:{threads}", []).append(value)
    return [dict(rec=rec, size=size, threads=threads,
                 images_per_sec={name: figures[f"{rec}:{size}:{name}:{threads}"] for name in READERS})
            for rec, size in args.rec for threads in args.threads]


def print_report(result):
    facts = result["machine"]
    print(f"{facts['cpu']}, {facts['cores']} cores, MXNet {facts['mxnet']}; batch {result['batch_size']}, "
          f"{result['batches']} batches after {WARMUP_BATCHES}; medians of {result['rounds']} rotating rounds "
          "(images/s; ratio: RecordReader's median over the reader's)")
    print("| .rec | crop | threads | " + " | ".join(f"{name} | ratio" for name in READERS) + " | rounds |")
    print("| --- " * (4 + 2 * len(READERS)) + "|")
    for row in result["rows"]:
        medians = {name: statistics.median(figures) for name, figures in row["images_per_sec"].items()}
        cells = " | ".join(f"{medians[name]:.0f} | {medians[READERS[0]] / medians[name]:.2f}" for name in READERS)
        rounds = "; ".join(", ".join(f"{x:.0f}" for x in figures) for figures in row["images_per_sec"].values())
        print(f"| {row['rec']} | {row['size']} | {row['threads']} | {cells} | {rounds} |")
    for where, steps in result.get("profile", {}).items():
        costs = ", ".join(f"{step} {micro:.0f}" for step, micro in steps.items())
        print(f"microseconds per image on one thread, {where}: {costs}; total {sum(steps.values()):.0f}")


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return 0
    result = dict(machine=describe(mxnet=mx.__version__), batch_size=args.batch_size, batches=args.batches,
                  rounds=args.rounds, rows=run_rounds(args))
    if args.profile:
        result["profile"] = {f"{rec}:{size}": profile(rec, size) for rec, size in args.rec}
    print_report(result)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
