"""Training throughput: the model alone, our whole loop, GluonCV's train_imagenet.py, the input pipeline.

For each ``MODEL:INPUT`` row it measures, in separate processes (so that each peak resident memory is the
row's own):
  * model only: forward + backward + update of the hybridized network on a batch already in memory, the images
    of the ``--steps`` timed steps after warm-up over their total time;
  * our loop: ``train_imagenet.py`` for two epochs on the first ``--loop-images`` records of ``--rec-train``
    (augmentation, metrics, validation on as in a real run), the second epoch's images/s: its images over its time;
  * GluonCV's loop: the same with GluonCV's ``train_imagenet.py`` (``--gluoncv-script``; the paper's own
    code), registering ``resnet18_v1d``, which its model zoo lacks, as
    ``ResNetV1b(BasicBlockV1b, [2, 2, 2, 2], deep_stem=True, avg_down=True)``; both get 1000 classes, as
    GluonCV's script hard-codes. Its epoch clock reads ``time.time()`` without waiting for MXNet's queued
    work, so up to the last batch's backward pass and update fall outside the epoch it reports (a large
    share of an epoch of few batches); ``benchmarks.gluoncv_side``, which runs it, makes ``time.time()``
    wait for that work first (``waitall``), as our loop does before it reads the clock, so that both epochs
    end at the same point. The loop rows' ratio is the median of the ratios of each pair of runs (ours, then theirs).
Each of the three is run ``--repeats`` times, alternating (model only, ours, GluonCV's), and every column reports one
statistic: the median images/s of its runs, each a run's images over its timed span, with their range.
Beside each figure: training GFLOP/s (3 x 2 x forward multiply-adds x images/s: the forward pass and a
backward of about twice its cost) as a fraction of the float32 matrix-multiply GFLOP/s that MXNet reaches on
all cores, measured in the same run. MXNet's CPU operators get one thread per physical core, as in
``train_imagenet.py`` (``utils/cpu_threads.py``: MXNet's own default is half the logical CPUs on x86, half
the cores of a machine without hyperthreading); GluonCV's script runs with MXNet's default, as its users get
it, or with the same threads as ours under ``--gluoncv-threads ours``, which compares the loops alone.
Then the input pipeline alone: the training reader (``data.record_reader``) with the paper's augmentation, per thread
count and input size, from ``--rec-train`` and ``--rec-256`` (images packed at a shorter side of 256).
Writes ``throughput.md`` and ``throughput.json`` into ``--output-dir``; with GluonCV's script the last line
printed is the ratio ours / GluonCV's on resnet18_v1d at 32. GluonCV's script trains on packed records, so
``--gluoncv-script`` needs ``--rec-train`` and ``--rec-val``.

    python -m benchmarks.throughput --quick --rec-train rec/train.rec --rec-val rec/val.rec \\
        --gluoncv-script gluon-cv/scripts/classification/imagenet/train_imagenet.py
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.children import TRAINER, benchmark_command, child_environment
from utils.cpu_threads import THREADS_VARIABLE, describe_cpu_threads, use_physical_cores

# Set before MXNet loads, as train_imagenet.py does: the ceiling and the model-only rows (children inherit
# it) then use the same threads as our loop. None when the user's own setting was kept.
THREADS_SET_HERE = use_physical_cores()

import mxnet as mx  # noqa: E402

from benchmarks.input_pipeline import images_per_sec as pipeline_images_per_sec  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from benchmarks.model_step import in_memory_training_step, timed_step_seconds  # noqa: E402
from benchmarks.report import write_report  # noqa: E402
from data.records import RecordFiles  # noqa: E402
from models import get_model  # noqa: E402
from models.complexity import count_multiply_adds  # noqa: E402
from utils.errors import UserError, command_line_entry  # noqa: E402

ROWS = ("resnet50_v1d:224", "resnet50_v1d:64", "resnet18_v1d:32", "resnet18_v1d:64", "mobilenet1.0:64",
        "inceptionv3:299")
COMPARED_ROW = "resnet18_v1d:32"
CLASSES = 1000


def matmul_gflops(size=2048, repeats=10):
    """Float32 matrix-multiply GFLOP/s through MXNet, on our CPU threads: the ceiling a network can approach.

    Measured with ``FullyConnected``, which runs on the same oneDNN kernels as the convolutions; ``nd.dot``
    goes through OpenBLAS instead and was seen 6.5 times slower here (16 against 105 GFLOP/s).
    """
    data, weight = mx.nd.random.uniform(shape=(size, size)), mx.nd.random.uniform(shape=(size, size))
    seconds = []
    for repeat in range(repeats + 1):
        tic = time.perf_counter()
        mx.nd.FullyConnected(data, weight, num_hidden=size, no_bias=True).wait_to_read()
        if repeat:
            seconds.append(time.perf_counter() - tic)
    return 2 * size ** 3 / statistics.median(seconds) / 1e9


def model_only(name, input_size, batch_size, steps, warmup_steps):
    """Images/s of ``steps`` training steps of ``name`` after ``warmup_steps``: their images over their total time,
    the statistic of a loop's epoch; with the seconds of each step and the network's multiply-adds."""
    net = get_model(name, classes=CLASSES)
    net.initialize(mx.init.Xavier())
    multiply_adds = count_multiply_adds(net, input_size)
    step = in_memory_training_step(net, input_size, batch_size, CLASSES)
    seconds = timed_step_seconds(step, steps, warmup_steps)
    return dict(images_per_sec=steps * batch_size / sum(seconds), step_seconds=seconds, multiply_adds=multiply_adds)


def model_only_run(spec, batch_size, steps, warmup_steps, workdir):
    """``model_only`` of the ``MODEL:INPUT`` row ``spec`` in a process of its own, with that process's peak memory."""
    child = benchmark_command("throughput", "--model-only", spec, "--batch-size", str(batch_size),
                              "--steps", str(steps), "--warmup-steps", str(warmup_steps))
    output, peak = run_measured(child, workdir, child_environment())
    return dict(json.loads(output.strip().splitlines()[-1]), peak_rss_mb=peak)


def run_measured(argv, cwd, env=None):
    """Run ``argv``; return its output and peak resident memory in MB (of that process alone)."""
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    if process.returncode:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({process.returncode}):\n{output[-3000:]}")
    return output, usage.ru_maxrss / 1024


def write_subset(rec, num_images, out_prefix):
    """The first ``num_images`` records of ``rec`` (in .idx order) as ``out_prefix``.rec/.idx."""
    subset = RecordFiles(out_prefix)
    reader = mx.recordio.MXIndexedRecordIO(RecordFiles.from_rec_path(rec).idx, rec, "r")
    writer = mx.recordio.MXIndexedRecordIO(subset.idx, subset.rec, "w")
    keys = reader.keys[:num_images]
    for key in keys:
        writer.write_idx(key, reader.read_idx(key))
    reader.close()
    writer.close()
    return subset.rec, len(keys)


def loop_args(name, input_size, batch_size, threads):
    """The flags both scripts understand: same network, input, batch, rate and threads, two epochs; the rate
    constant (a step of factor 1 at epoch 1: a decay epoch outside the run is refused by ours)."""
    return ["--model", name, "--input-size", str(input_size), "--batch-size", str(batch_size), "--num-epochs", "2",
            "--lr", "0.01", "--lr-decay-epoch", "1", "--lr-decay", "1", "-j", str(threads), "--mode", "hybrid"]


def our_loop(name, input_size, batch_size, threads, data, workdir):
    save_dir = tempfile.mkdtemp(prefix="ours-", dir=workdir)
    argv = [sys.executable, TRAINER, *loop_args(name, input_size, batch_size, threads),
            "--rec-train", data["train"], "--rec-val", data["val"], "--num-classes", str(CLASSES),
            "--save-dir", save_dir, "--save-frequency", "0", "--log-interval", "1000"]
    _, peak = run_measured(argv, workdir)
    with open(os.path.join(save_dir, "metrics.jsonl")) as handle:
        second_epoch = [json.loads(line) for line in handle][1]
    return dict(images_per_sec=second_epoch["samples_per_sec"], peak_rss_mb=peak)


def gluoncv_environment(cpu_threads):
    """GluonCV's script's environment: MXNet's default CPU threads, as its users get, or the same as ours."""
    env = child_environment()
    if cpu_threads == "default" and THREADS_SET_HERE is not None:
        del env[THREADS_VARIABLE]
    return env


def gluoncv_loop(script, name, input_size, batch_size, threads, data, workdir, cpu_threads):
    run_dir = tempfile.mkdtemp(prefix="gluoncv-", dir=workdir)
    argv = benchmark_command("gluoncv_side", os.path.abspath(script), *loop_args(name, input_size, batch_size, threads),
                             "--use-rec", "--rec-train", data["train"],
                             "--rec-train-idx", RecordFiles.from_rec_path(data["train"]).idx,
                             "--rec-val", data["val"], "--rec-val-idx", RecordFiles.from_rec_path(data["val"]).idx,
                             "--num-training-samples", str(data["num_train"]),
                             "--save-dir", os.path.join(run_dir, "params"), "--log-interval", "1000")
    output, peak = run_measured(argv, run_dir, gluoncv_environment(cpu_threads))
    seconds = re.findall(r"\[Epoch 1\] speed: \d+ samples/sec\ttime cost: ([0-9.]+)", output)
    if not seconds:
        raise SystemExit(f"no '[Epoch 1] speed' line in GluonCV's output:\n{output[-3000:]}")
    # GluonCV's own figure divides by one batch fewer than the epoch has (its loop index); count them all.
    batches = -(-data["num_train"] // batch_size)
    return dict(images_per_sec=batches * batch_size / float(seconds[0]), peak_rss_mb=peak)


def paired_ratios(ours, theirs):
    """Ours / theirs images/s of each pair of runs made back to back, so that a slow spell hits both alike."""
    return [mine["images_per_sec"] / other["images_per_sec"] for mine, other in zip(ours, theirs)]


def summarize(measured):
    """One column's runs as the table reports every column: their median images/s, each run's, the highest peak
    memory."""
    speeds = [run["images_per_sec"] for run in measured]
    return dict(images_per_sec=statistics.median(speeds), runs=speeds,
                peak_rss_mb=max(run["peak_rss_mb"] for run in measured))


def loop_data(args, data, model_only_speed, workdir):
    """The loops' subsets of the data: slow rows train on fewer images, about --loop-seconds per epoch at the
    model-only speed, at least 4 batches."""
    batches = max(4, min(args.loop_images, model_only_speed * args.loop_seconds) // args.batch_size)
    data = dict(data, num_train=int(batches * args.batch_size))
    data["train"], _ = write_subset(data["train"], data["num_train"],
                                    os.path.join(workdir, f"train-{data['num_train']}"))
    # Validation runs between the two epochs, untimed: a quarter of the training images keeps it short.
    num_val = max(data["num_train"] // 4, args.batch_size)
    data["val"], _ = write_subset(data["val"], num_val, os.path.join(workdir, f"val-{num_val}"))
    return data


def measure_row(spec, args, data, workdir):
    name, _, size = spec.partition(":")
    input_size = int(size)
    quick_steps = args.quick or name == "inceptionv3"
    steps, warmup = (2, 1) if quick_steps else (args.steps, 3)
    row = dict(model=name, input_size=input_size, batch_size=args.batch_size, model_only_steps=steps)
    in_loop = data is not None and (not args.quick or spec == COMPARED_ROW)
    # The model alone, ours and theirs alternate, so that a slow spell of a shared machine does not hit one alone.
    runs = {"model_only": [], "loop": [], "gluoncv": []}
    for repeat in range(args.repeats):
        runs["model_only"].append(model_only_run(spec, args.batch_size, steps, warmup, workdir))
        if not in_loop:
            continue
        if repeat == 0:
            data = loop_data(args, data, runs["model_only"][0]["images_per_sec"], workdir)
            row["loop_images"] = data["num_train"]
        runs["loop"].append(our_loop(name, input_size, args.batch_size, args.threads, data, workdir))
        if args.gluoncv_script:
            runs["gluoncv"].append(gluoncv_loop(args.gluoncv_script, name, input_size, args.batch_size,
                                                args.threads, data, workdir, args.gluoncv_threads))
    row["multiply_adds"] = runs["model_only"][0]["multiply_adds"]
    for side, measured in runs.items():
        if measured:
            row[side] = summarize(measured)
    row["model_only"]["step_seconds"] = [run["step_seconds"] for run in runs["model_only"]]
    if runs["gluoncv"]:
        row["ours_over_gluoncv_runs"] = paired_ratios(runs["loop"], runs["gluoncv"])
        row["ours_over_gluoncv"] = statistics.median(row["ours_over_gluoncv_runs"])
    return row


def gflops(row, images_per_sec):
    return 3 * 2 * row["multiply_adds"] * images_per_sec / 1e9


def median_and_range(median, runs, digits=1):
    """``median (lowest-highest)``: a column's figure and the spread of its runs."""
    return f"{median:.{digits}f} ({min(runs):.{digits}f}-{max(runs):.{digits}f})"


def markdown(result):
    ceiling = result["matmul_gflops"]
    facts = result["machine"]
    lines = [f"Machine: {facts['cpu']}, {facts['cores']} cores; MXNet {facts['mxnet']}; float32 matrix multiply "
             f"{ceiling:.1f} GFLOP/s (the ceiling); batch {result['batch_size']}; every images/s: median (range) of "
             f"{result['repeats']} runs alternating the model alone, ours and GluonCV's, each run's figure its images "
             "over its timed span's time: model only, the timed steps after warm-up (model_only_steps in "
             f"throughput.json); loops, the second of two epochs over up to {result['loop_images']} images (fewer "
             f"for slow rows: about {result['loop_seconds']:g} s an epoch), {result['threads']} data threads; of "
             f"ceiling: of the medians; MXNet CPU operator threads: ours and model only {result['cpu_threads']}, "
             f"GluonCV's {result['gluoncv_cpu_threads']} (all runs in throughput.json); GluonCV's epoch clock waits "
             "for queued work as ours does; ours / GluonCV: median (range) of the ratios of each pair of runs.",
             "",
             "| model | input | model only img/s | of ceiling | our loop img/s | of ceiling | GluonCV loop img/s "
             "| ours / GluonCV | peak RSS MB (model / ours / GluonCV) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["rows"]:
        alone, loop, theirs = row["model_only"], row.get("loop"), row.get("gluoncv")
        cells = [row["model"], str(row["input_size"]), median_and_range(alone["images_per_sec"], alone["runs"]),
                 f"{gflops(row, alone['images_per_sec']) / ceiling:.2f}",
                 median_and_range(loop["images_per_sec"], loop["runs"]) if loop else "-",
                 f"{gflops(row, loop['images_per_sec']) / ceiling:.2f}" if loop else "-",
                 median_and_range(theirs["images_per_sec"], theirs["runs"]) if theirs else "-",
                 median_and_range(row["ours_over_gluoncv"], row["ours_over_gluoncv_runs"], 2) if theirs else "-",
                 " / ".join(f"{value:.0f}" if value else "-" for value in (
                     alone["peak_rss_mb"], loop and loop["peak_rss_mb"], theirs and theirs["peak_rss_mb"]))]
        lines.append("| " + " | ".join(cells) + " |")
    if result["pipeline"]:
        lines += ["", "Input pipeline alone (training RecordReader, paper's augmentation):", "",
                  "| data | input | threads | images/s | per thread |", "| --- | --- | --- | --- | --- |"]
        for row in result["pipeline"]:
            lines.append(f"| {row['data']} | {row['input_size']} | {row['threads']} | {row['images_per_sec']:.0f} | "
                         f"{row['images_per_sec'] / row['threads']:.0f} |")
    return "\n".join(lines)


def pipeline_rows(args):
    sources = [("--rec-train", args.rec_train)] + ([("--rec-256", args.rec_256)] if args.rec_256 else [])
    sizes = (32,) if args.quick else (32, 64, 224)
    threads = sorted({1, os.cpu_count() or 1})
    batches = 10 if args.quick else 40
    return [dict(data=label, input_size=size, threads=count,
                 images_per_sec=pipeline_images_per_sec(rec, size, count, args.batch_size, batches))
            for label, rec in sources for size in sizes for count in threads]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", default=list(ROWS), help=f"MODEL:INPUT rows (default {' '.join(ROWS)})")
    parser.add_argument("--quick", action="store_true",
                        help="2 timed steps per model; loops and GluonCV only on resnet18_v1d:32; input 32 only")
    parser.add_argument("--rec-train", help="packed training data for the loops and the input pipeline")
    parser.add_argument("--rec-val", help="packed validation data for the loops")
    parser.add_argument("--rec-256", help="images packed at a shorter side of 256, for the input pipeline")
    parser.add_argument("--gluoncv-script", help="GluonCV's scripts/classification/imagenet/train_imagenet.py")
    parser.add_argument("--gluoncv-threads", choices=("default", "ours"), default="default",
                        help="MXNet CPU threads of GluonCV's script: MXNet's default (half the logical CPUs on x86, "
                             "what its users get) or the same as our loop's (compares the loops alone)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed model-only steps (default 10)")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--loop-images", type=int, help="images per loop epoch (default 2048, --quick 1024)")
    parser.add_argument("--loop-seconds", type=float, default=40,
                        help="slow rows' loops get about this many seconds of images per epoch (default 40)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of the model alone and of each loop, alternating (median; default 3)")
    parser.add_argument("-j", "--threads", type=int, default=os.cpu_count() or 1, help="data threads in the loops")
    parser.add_argument("--output-dir", default=".", help="where throughput.md and throughput.json go")
    parser.add_argument("--model-only", metavar="MODEL:INPUT", help=argparse.SUPPRESS)
    return parser


def check_args(args):
    """Refuse flags that would measure something else than asked, in one line."""
    if bool(args.rec_train) != bool(args.rec_val):
        raise UserError("--rec-train and --rec-val go together")
    if args.gluoncv_script and not args.rec_train:
        raise UserError("--gluoncv-script needs --rec-train and --rec-val: GluonCV's script trains on packed records, "
                        "and without them only the model alone would be measured")
    if args.gluoncv_script and not os.path.isfile(args.gluoncv_script):
        raise UserError(f"--gluoncv-script {args.gluoncv_script} does not exist")


@command_line_entry
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.model_only:
        name, _, size = args.model_only.partition(":")
        print(json.dumps(model_only(name, int(size), args.batch_size, args.steps, args.warmup_steps)))
        return
    check_args(args)
    args.loop_images = args.loop_images or (1024 if args.quick else 2048)
    workdir = tempfile.mkdtemp(prefix="throughput-")
    try:
        data = None
        if args.rec_train:
            train, num_train = write_subset(args.rec_train, args.loop_images, os.path.join(workdir, "train"))
            data = dict(train=train, val=args.rec_val, num_train=num_train)
        ceiling = matmul_gflops()
        rows = []
        for spec in args.rows:
            rows.append(measure_row(spec, args, data, workdir))
            print(f"measured {spec}", flush=True)
        result = dict(machine=describe(mxnet=mx.__version__), matmul_gflops=ceiling, repeats=args.repeats,
                      batch_size=args.batch_size, loop_seconds=args.loop_seconds, loop_images=args.loop_images,
                      threads=args.threads, cpu_threads=describe_cpu_threads(),
                      gluoncv_cpu_threads=describe_cpu_threads(gluoncv_environment(args.gluoncv_threads)),
                      rows=rows, pipeline=pipeline_rows(args) if args.rec_train else [])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = markdown(result)
    write_report(args.output_dir, "throughput", table, result)
    print(table)
    compared = [row for row in rows if f"{row['model']}:{row['input_size']}" == COMPARED_ROW and "gluoncv" in row]
    if compared:
        print(f"ours / GluonCV images/s on {COMPARED_ROW.replace(':', ' at ')}: {compared[0]['ours_over_gluoncv']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
