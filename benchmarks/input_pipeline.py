"""Images/s of the training input pipeline alone (``data.record_reader.RecordReader`` with the paper's
augmentation), per thread count and number of repeated-augmentation copies; and with ``--auto-augment`` policies,
which leave the host only cropping and flipping and run on the device (``data/auto_augment.py``).

It reads, decodes and augments batches exactly as training does (``RecordReader.from_config``, as
``data.loaders.record_source`` builds it) and drops them, so the figure says how many decoding threads keep how
many accelerators fed. With several ``--rounds`` the configurations alternate and each row gives the median, so
that a load on the machine that comes and goes affects them alike.

    python -m benchmarks.input_pipeline --rec-train train.rec --input-size 224 --threads 1 2 --batches 50
    python -m benchmarks.input_pipeline --rec-train train.rec --threads 2 --ra-reps 1 2 4 --rounds 5
    python -m benchmarks.input_pipeline --rec-train train-256.rec --threads 1 --auto-augment ta_wide rand-m9-n2 \
        --write-jpegs /tmp/jpegs

A policy row gives the host's images/s (crop and flip only: what a GPU's host does), the policy's own time per
batch on ``mx.cpu()`` (what it adds to a step on the device, here a CPU), the images/s of both on this CPU (the
reader's threads overlapping the policy's operators), and the images/s of one core doing both in turn.
``--write-jpegs DIR`` writes the records' JPEG files, so that ``benchmarks.torchvision_pipeline``
reads the same images.
"""
import argparse
import functools
import json
import os
import statistics
import sys
import time

from utils.cpu_threads import use_physical_cores

use_physical_cores()  # before MXNet loads, as in train_imagenet.py

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from data.auto_augment import AugmentThenNormalize, parse_policy  # noqa: E402
from data.augmentation import RGB_MEAN, RGB_STD  # noqa: E402
from data.loaders import InputConfig  # noqa: E402
from data.record_reader import RecordReader  # noqa: E402
from data.records import RecordFiles  # noqa: E402


def crops_as_they_are(images, *_):
    """The reader's crops as they are: a policy row's host alone."""
    return images


def images_per_sec(rec, input_size, threads, batch_size, batches, warmup_batches=5, ra_reps=1, policy=None):
    """Images/s over ``batches`` augmented training batches read with ``threads`` decoding threads, each image
    ``ra_reps`` times (repeated augmentation); with a ``policy``, the reader crops and flips only, and the policy
    (``data.auto_augment.AugmentThenNormalize``) runs on each batch on ``mx.cpu()``."""
    config = InputConfig(batch_size=batch_size, input_size=input_size, crop_ratio=0.875, num_workers=threads, seed=0,
                         ra_reps=ra_reps, unnormalized_crops=policy is not None)
    stream = RecordReader.from_config(rec, RecordFiles.from_rec_path(rec).idx, config,
                                      batches_per_epoch=warmup_batches + batches).epoch(0)
    for _ in range(warmup_batches):
        next(stream).data[0].wait_to_read()
    tic = time.perf_counter()
    for number, batch in enumerate(stream):
        images = batch.data[0] if policy is None else policy(batch.data[0], 0, number, 0)
        images.wait_to_read()
    return batches * batch_size / (time.perf_counter() - tic)


def policy_seconds(policy, input_size, batch_size, calls=7):
    """The policy's median time on a batch of random whole-number images on ``mx.cpu()``, after one call."""
    images = mx.nd.array(np.random.RandomState(0).randint(0, 256, (batch_size, 3, input_size, input_size)),
                         dtype="float32")
    policy(images, 0, 0, 0).wait_to_read()
    times = []
    for batch in range(calls):
        tic = time.perf_counter()
        policy(images, 0, batch + 1, 0).wait_to_read()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def write_jpegs(rec, folder):
    """The records' images as ``folder/<label>/<index>.jpg``, the bytes as packed."""
    records = mx.recordio.MXIndexedRecordIO(RecordFiles.from_rec_path(rec).idx, rec, "r")
    for key in records.keys:
        header, image = mx.recordio.unpack(records.read_idx(key))
        os.makedirs(os.path.join(folder, str(int(header.label))), exist_ok=True)
        with open(os.path.join(folder, str(int(header.label)), f"{key}.jpg"), "wb") as handle:
            handle.write(image)
    records.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rec-train", required=True, help="a .rec packed by `python -m data.pack`")
    parser.add_argument("--input-size", type=int, nargs="+", default=[224])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count()])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--ra-reps", type=int, nargs="+", default=[1], help="repeated-augmentation copies")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; rows give the median")
    parser.add_argument("--auto-augment", nargs="+", default=[], metavar="POLICY",
                        help="also rows with these policies (ta_wide, rand-m9-n2, ...)")
    parser.add_argument("--write-jpegs", metavar="DIR", help="write the records' JPEG files there first")
    parser.add_argument("--output", default="input_pipeline.json")
    args = parser.parse_args(argv)
    if args.write_jpegs:
        write_jpegs(args.rec_train, args.write_jpegs)
    policies = {text: AugmentThenNormalize(parse_policy(text), RGB_MEAN, RGB_STD) for text in args.auto_augment}
    rows = [dict(input_size=size, threads=threads, ra_reps=reps, auto_augment=text, rounds=[],
                 host_rounds=[] if text else None)
            for size in args.input_size for threads in args.threads for reps in args.ra_reps
            for text in [None, *args.auto_augment]]
    for _ in range(args.rounds):
        for row in rows:
            read = functools.partial(images_per_sec, args.rec_train, row["input_size"], row["threads"],
                                     args.batch_size, args.batches, ra_reps=row["ra_reps"])
            row["rounds"].append(read(policy=policies.get(row["auto_augment"])))
            if row["auto_augment"]:
                row["host_rounds"].append(read(policy=crops_as_they_are))
    for row in rows:
        row["images_per_sec"] = statistics.median(row["rounds"])
        if row["auto_augment"]:
            row["host_images_per_sec"] = statistics.median(row["host_rounds"])
            row["policy_ms_per_batch"] = 1000 * policy_seconds(policies[row["auto_augment"]], row["input_size"],
                                                               args.batch_size)
            # One core doing both in turn: what a CPU-only machine gets per core, without the overlap of the
            # reader's threads with the policy's operators that the images/s column has.
            row["one_core_images_per_sec"] = 1 / (1 / row["host_images_per_sec"]
                                                  + row["policy_ms_per_batch"] / 1000 / args.batch_size)
    result = dict(machine=describe(mxnet=mx.__version__), rec=args.rec_train, batch_size=args.batch_size,
                  batches=args.batches, runs=args.rounds, rows=rows)
    facts = result["machine"]
    print(f"{args.rec_train}: {facts['cpu']}, {facts['cores']} cores, MXNet {facts['mxnet']}, batch {args.batch_size}, "
          f"{args.batches} batches after 5 of warm-up, median of {args.rounds} alternating rounds")
    print("| input | threads | --ra-reps | augmentation | images/s | images/s per thread | rounds | host alone "
          "(crop, flip), images/s | policy on mx.cpu(), ms per batch | host and policy in turn on one core, "
          "images/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        policy = row["auto_augment"]
        print(f"| {row['input_size']} | {row['threads']} | {row['ra_reps']} | "
              f"{'--auto-augment ' + policy if policy else 'the paper'} | {row['images_per_sec']:.0f} | "
              f"{row['images_per_sec'] / row['threads']:.0f} | {', '.join(f'{x:.0f}' for x in row['rounds'])} | "
              + (f"{row['host_images_per_sec']:.0f} | {row['policy_ms_per_batch']:.0f} | "
                 f"{row['one_core_images_per_sec']:.0f} |" if policy else "- | - | - |"))
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
