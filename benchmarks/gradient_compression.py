"""Bytes that cross 127.0.0.1 per ``dist_sync`` step, with ``--gradient-compression none`` and ``2bit``.

Each job is ``tools/launch.py -n 2 -s 1 --launcher local`` whose two workers run this module with ``--worker
MODE``: the network, trainer, loss and batch transform that ``train_imagenet.py`` builds (``engine.recipe``) from
the flags ``--kvstore dist_sync --gradient-compression MODE``, training on the built-in demo set through
``engine.loop.train_step``. After ``--warmup-steps`` steps (the kvstore's initial values and the first pushes
allocate and send what a step does not), both workers wait at a barrier; rank 0 reads the loopback interface's
sent-bytes counter (``lo``'s tx bytes in ``/proc/net/dev``: every byte any process sends to 127.0.0.1, counted
once), both train ``--steps`` steps and wait for them, meet at another barrier, and rank 0 reads it again. Then
rank 0 reads it over ``--idle-seconds`` while nothing trains, and that rate, times the steps' duration, is taken off
(the barrier's few messages stay in). Loopback carries only this job here, unless something else on the machine
talks to 127.0.0.1: the idle rate shows it.

What is expected, per step: each worker pushes every trainable array's gradient once and pulls the workers' sum
once (and runs the optimizer on it). Uncompressed, both are 4 bytes a value; 2-bit pushes carry one 32-bit word
per 16 values (``utils.gradient_compression.compressed_bytes``) and the sums come back whole, so the step sends
(1/16 + 1) / 2 = 53% of the uncompressed bytes. The payload is what is expected; ZeroMQ's and ps-lite's message
headers and TCP's add a little.

    python -m benchmarks.gradient_compression --output-dir benchmarks/results/gradient-compression
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from itertools import islice

from benchmarks.children import REPO, child_environment
from benchmarks.report import write_report
from utils.errors import UserError, command_line_entry
from utils.gradient_compression import COMPRESSION_TYPES, compressed_bytes

WORKERS = 2
BYTES_PER_VALUE = 4  # float32 gradients and weights
RESULT_MARKER = "gradient-compression "
JOB_TIMEOUT_SECONDS = 1800
LOOPBACK = "lo"
# MXNet's fixed threshold, as measured: the bytes do not depend on the threshold, which the codes only scale.
FIXED_THRESHOLD = 0.5


def loopback_bytes_sent(path="/proc/net/dev"):
    """Bytes the loopback interface has sent since boot: the first Transmit column of its line in ``path``."""
    with open(path) as handle:
        for line in handle:
            name, _, counters = line.partition(":")
            if name.strip() == LOOPBACK:
                return int(counters.split()[8])  # 8 receive columns come first
    raise UserError(f"{path} has no {LOOPBACK!r} interface, so the bytes sent over loopback cannot be counted")


def expected_bytes(sizes, compression, workers=WORKERS):
    """Payload bytes of one step of ``workers`` workers over arrays of ``sizes`` values: each pushes every
    gradient (2-bit: ``compressed_bytes``) and pulls the sum of each back whole."""
    pushed = sum(compressed_bytes(size) if compression == "2bit" else size * BYTES_PER_VALUE for size in sizes)
    pulled = sum(sizes) * BYTES_PER_VALUE
    return workers * (pushed + pulled)


def demo_records(log=print):
    """The built-in demo set's training and validation .rec files, drawn on first use."""
    from data.demo import make_demo_dataset
    from engine.config import DEFAULT_DEMO_DIR
    return make_demo_dataset(DEFAULT_DEMO_DIR, log=log)


def train_flags(args, compression, save_dir):
    """``train_imagenet.py``'s flags for the job's workers, on the demo set."""
    rec_train, rec_val = demo_records(log=lambda *_: None)
    flags = ["--rec-train", rec_train, "--rec-val", rec_val, "--model", args.model, "--input-size",
             str(args.input_size), "--batch-size", str(args.batch_size), "-j", "1", "--kvstore", "dist_sync",
             "--save-dir", save_dir, "--gradient-compression", compression]
    return flags + (["--gc-threshold", str(args.gc_threshold)] if compression != "none" else [])


def train_steps(recipe, batches, contexts, count, done=0):
    """``count`` training steps on the next batches of epoch 0's ``batches``, of which ``done`` were trained,
    waited for."""
    import mxnet as mx
    from engine.loop import train_step
    from utils.devices import split_batch
    for number, batch in enumerate(islice(batches, count), start=done):
        images, targets, _ = recipe.batch_transform(split_batch(batch.data[0], contexts),
                                                    split_batch(batch.label[0], contexts), 0, number)
        train_step(recipe, images, targets)
    mx.nd.waitall()


def run_worker(args):
    """One worker of a job: build the run as train_imagenet.py does, count loopback's bytes over ``--steps``."""
    from engine.config import parse_config
    from engine.recipe import build_data, build_recipe
    from utils.devices import build_contexts
    from utils.distributed import join_cluster
    config = parse_config(train_flags(args, args.worker, args.save_dir))
    contexts = build_contexts(config.num_gpus, config.num_cpu_contexts)
    cluster = join_cluster(config.kvstore)
    data = build_data(config, contexts, cluster)
    if args.warmup_steps + args.steps > data.batches_per_epoch:
        raise UserError(f"--warmup-steps and --steps add up to more than the {data.batches_per_epoch} batches of "
                        "an epoch; take fewer or a smaller --batch-size")
    recipe = build_recipe(config, data, contexts, cluster)
    batches = iter(data.train.epoch(0))
    train_steps(recipe, batches, contexts, args.warmup_steps)
    cluster.kvstore._barrier()
    before, tic = loopback_bytes_sent(), time.perf_counter()
    train_steps(recipe, batches, contexts, args.steps, done=args.warmup_steps)
    cluster.kvstore._barrier()
    after, seconds = loopback_bytes_sent(), time.perf_counter() - tic
    idle = None
    if cluster.is_chief:  # the other worker waits at the next barrier meanwhile, sending nothing
        idle_before = loopback_bytes_sent()
        time.sleep(args.idle_seconds)
        idle = loopback_bytes_sent() - idle_before
    cluster.kvstore._barrier()
    sizes = [param.data(contexts[0]).size for param in recipe.net.collect_params().values()
             if param.grad_req != "null"]
    print(RESULT_MARKER + json.dumps(dict(rank=cluster.rank, bytes=after - before, seconds=seconds,
                                          idle_bytes=idle, sizes=sizes)), flush=True)


def run_job(args, compression, save_dir):
    """Launch one job on 127.0.0.1 and return rank 0's record."""
    worker = [sys.executable, "-m", "benchmarks.gradient_compression", "--worker", compression,
              "--save-dir", save_dir, "--model", args.model, "--input-size", str(args.input_size), "--batch-size",
              str(args.batch_size), "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
              "--idle-seconds", str(args.idle_seconds), "--gc-threshold", str(args.gc_threshold)]
    command = [sys.executable, os.path.join(REPO, "tools", "launch.py"), "-n", str(WORKERS), "-s", "1",
               "--launcher", "local", *worker]
    completed = subprocess.run(command, cwd=REPO, env=child_environment(), capture_output=True, text=True,
                               timeout=JOB_TIMEOUT_SECONDS)
    records = [json.loads(line.split(RESULT_MARKER, 1)[1]) for line in completed.stdout.splitlines()
               if RESULT_MARKER in line]
    if completed.returncode or len(records) != WORKERS:
        tail = (completed.stdout + completed.stderr).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"the --gradient-compression {compression} job failed (exit {completed.returncode}): "
                        f"{tail[0]}")
    return next(record for record in records if record["rank"] == 0)


def measure(args):
    """Per compression: bytes per step measured (idle traffic taken off) and expected."""
    rows = {}
    demo_records()  # drawn here, if need be, not by two workers at once
    with tempfile.TemporaryDirectory(prefix="gradient-compression-") as scratch:
        for compression in COMPRESSION_TYPES:
            record = run_job(args, compression, os.path.join(scratch, compression))
            idle_per_second = record["idle_bytes"] / args.idle_seconds
            measured = (record["bytes"] - idle_per_second * record["seconds"]) / args.steps
            rows[compression] = dict(bytes_per_step=measured, expected_bytes_per_step=expected_bytes(
                record["sizes"], compression), idle_bytes_per_second=idle_per_second,
                step_seconds=record["seconds"] / args.steps, values=sum(record["sizes"]), arrays=len(record["sizes"]))
            print(f"--gradient-compression {compression}: {measured / 1e6:.2f} MB a step", flush=True)
    return rows


def markdown(result):
    from utils.plots import markdown_table
    rows, args = result["rows"], result["settings"]
    header = ["--gradient-compression", "MB a step, measured", "payload MB a step, expected", "measured / expected",
              "against none, measured", "against none, expected", "s a step", "idle bytes/s"]
    table = [[mode, f"{row['bytes_per_step'] / 1e6:.2f}", f"{row['expected_bytes_per_step'] / 1e6:.2f}",
              f"{row['bytes_per_step'] / row['expected_bytes_per_step']:.4f}",
              f"{row['bytes_per_step'] / rows['none']['bytes_per_step']:.4f}",
              f"{row['expected_bytes_per_step'] / rows['none']['expected_bytes_per_step']:.4f}",
              f"{row['step_seconds']:.2f}", f"{row['idle_bytes_per_second']:.0f}"] for mode, row in rows.items()]
    machine, first = result["machine"], next(iter(rows.values()))
    return [f"`{result['command']}`", "",
            f"Bytes sent over 127.0.0.1 (`lo`'s tx counter) per dist_sync step of {WORKERS} workers and 1 server: "
            f"{args['model']} ({first['values']:,} trainable values in {first['arrays']} arrays), "
            f"{args['batch_size']} images of {args['input_size']}x{args['input_size']} a worker, 2bit threshold "
            f"{args['gc_threshold']:g}; {args['steps']} steps after {args['warmup_steps']}, idle traffic over "
            f"{args['idle_seconds']:g} s taken off; {machine['cpu']}, {machine['cores']} cores, MXNet "
            f"{machine['mxnet']}.", "", *markdown_table(header, table), "",
            "Expected: every worker pushes each gradient (2bit: one 32-bit word per 16 values) and pulls the "
            "workers' sum back whole; headers not counted."]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18_v1d", help="network (default %(default)s)")
    parser.add_argument("--input-size", type=int, default=32, help="training crop (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="images a worker a step (default %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="steps counted (default %(default)s)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps before counting (default %(default)s)")
    parser.add_argument("--idle-seconds", type=float, default=5.0,
                        help="how long the idle traffic is counted (default %(default)s)")
    parser.add_argument("--gc-threshold", type=float, default=FIXED_THRESHOLD,
                        help="threshold of the 2bit job (default %(default)s; the bytes do not depend on it)")
    parser.add_argument("--output-dir", help="write gradient_compression.md and .json here")
    parser.add_argument("--worker", choices=COMPRESSION_TYPES, help=argparse.SUPPRESS)
    parser.add_argument("--save-dir", help=argparse.SUPPRESS)
    return parser


@command_line_entry
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.warmup_steps < 1 or not args.idle_seconds > 0 or not args.gc_threshold > 0:
        raise UserError("--steps and --warmup-steps must be at least 1 (the first step sends the initial values), "
                        "--idle-seconds and --gc-threshold positive")
    if args.worker:
        run_worker(args)
        return
    import mxnet as mx
    from benchmarks.machine import describe
    loopback_bytes_sent()  # before minutes of jobs: a machine without /proc/net/dev's lo stops here
    rows = measure(args)
    command = shlex.join(["python", "-m", "benchmarks.gradient_compression",
                          *(sys.argv[1:] if argv is None else argv)])
    settings = {name: value for name, value in vars(args).items() if name not in ("output_dir", "worker", "save_dir")}
    result = dict(command=command, machine=describe(mxnet=mx.__version__), settings=settings, rows=rows)
    lines = markdown(result)
    print("\n".join(lines))
    if args.output_dir:
        write_report(args.output_dir, "gradient_compression", "\n".join(lines), result)


if __name__ == "__main__":
    sys.exit(main())
