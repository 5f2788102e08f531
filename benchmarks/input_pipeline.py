"""Images/s of the training input pipeline alone (ImageRecordIter with the paper's augmentation), per thread count.

It reads, decodes and augments batches exactly as training does (``data.loaders.train_record_iter``) and
drops them, so the figure says how many decoding threads keep how many accelerators fed.

    python -m benchmarks.input_pipeline --rec-train train.rec --input-size 224 --threads 1 2 --batches 50
"""
import argparse
import json
import os
import sys
import time

from utils.cpu_threads import use_physical_cores

use_physical_cores()  # before MXNet loads, as in train_imagenet.py

import mxnet as mx  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from data.loaders import EpochBatches, InputConfig, train_record_iter  # noqa: E402
from data.records import RecordFiles  # noqa: E402


def images_per_sec(rec, input_size, threads, batch_size, batches, warmup_batches=5):
    """Images/s over ``batches`` augmented training batches read with ``threads`` decoding threads."""
    config = InputConfig(batch_size=batch_size, input_size=input_size, crop_ratio=0.875, num_workers=threads, seed=0)
    idx = RecordFiles.from_rec_path(rec).idx
    stream = EpochBatches(lambda epoch: train_record_iter(rec, idx, config, epoch), warmup_batches + batches).epoch(0)
    for _ in range(warmup_batches):
        next(stream).data[0].wait_to_read()
    tic = time.perf_counter()
    for batch in stream:
        batch.data[0].wait_to_read()
    return batches * batch_size / (time.perf_counter() - tic)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rec-train", required=True, help="a .rec packed by `python -m data.pack`")
    parser.add_argument("--input-size", type=int, nargs="+", default=[224])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count()])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--output", default="input_pipeline.json")
    args = parser.parse_args(argv)
    rows = [dict(input_size=size, threads=threads,
                 images_per_sec=images_per_sec(args.rec_train, size, threads, args.batch_size, args.batches))
            for size in args.input_size for threads in args.threads]
    result = dict(machine=describe(mxnet=mx.__version__), rec=args.rec_train, batch_size=args.batch_size,
                  batches=args.batches, runs=1, rows=rows)
    facts = result["machine"]
    print(f"{args.rec_train}: {facts['cpu']}, {facts['cores']} cores, MXNet {facts['mxnet']}, batch {args.batch_size}, "
          f"{args.batches} batches after 5 of warm-up, 1 run")
    print("| input | threads | images/s | images/s per thread |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['input_size']} | {row['threads']} | {row['images_per_sec']:.0f} | "
              f"{row['images_per_sec'] / row['threads']:.0f} |")
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
