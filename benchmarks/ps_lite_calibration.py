"""ps-lite's push/pull on 127.0.0.1 through Gluon's Trainer, and the scaling model's prediction beside it.

Each job is ``tools/launch.py -n 2 -s S --launcher local`` (S = 1, then 2) whose two workers run this module with
``--worker LAYOUT``: a ``gluon.Trainer`` over parameters on the CPU, set up as ``train_imagenet.py`` sets up a
``dist_sync`` run (NAG, the update on the workers, ``utils.distributed.start_kvstore``). The gradients are never
computed (a step's compute is nil), so a step is ``trainer.step`` alone: every gradient pushed, the sum pulled
back and the update applied, then ``waitall``; the median of ``--steps`` steps after ``--warmup-steps`` counts.
Layouts, all of ResNet-50-D's 25.6 M elements (FP32):

- ``resnet50_v1d``: ResNet-50-D's own parameters, 167 gradient arrays numbered as in training;
- ``large-keys``: 8 keys of 3.2 M elements, each split over all servers (above ``MXNET_KVSTORE_BIGARRAY_BOUND``);
- ``small-keys``: 2,557 keys of 10,000 elements, each sent whole to one server.

The model (``benchmarks.scaling_model.loopback_seconds``) gives every ps-lite process a cost per byte it moves in
each direction (1 / R) and per request (key part) it handles (c), and no process, nor all of them on the machine's
cores together, can be faster than its work. R and c are fitted to the two synthetic layouts on one server; the
model then predicts every job, ResNet-50-D's real keys and the two-server jobs included, and each row gives
prediction / measurement.

What loopback calibrates: the software of ps-lite and MXNet's kvstore, the same on a cluster (ZeroMQ's copies
through the kernel's TCP stack, the servers' sums, the engine and Python per request):
c is the cluster model's ``--ps-request-us``, R its ``--software-gbytes-per-s``, a ceiling that no NIC lifts. What
it cannot: the NIC's bandwidth, the switch and the wire's latency (127.0.0.1 has none of them), nor contention of
the workers for a host's PCIe bus. On a machine with fewer cores than processes (two workers, the servers and
the scheduler) the processes share the cores, which the model counts; measure on a quiet machine.

    python -m benchmarks.ps_lite_calibration --output-dir benchmarks/results/scaling-model
    python -m benchmarks.ps_lite_calibration --quick
"""
import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time

from benchmarks.children import REPO, child_environment
from benchmarks.report import write_report
from benchmarks.scaling_model import gradient_keys, loopback_seconds, server_loads
from utils.errors import UserError, command_line_entry

WORKERS = 2
SERVER_COUNTS = (1, 2)
GRADIENT_BYTES = 4  # FP32, as our dist_sync trains
REFERENCE_MODEL = "resnet50_v1d"
LARGE_KEYS = 8
SMALL_KEY_ELEMENTS = 10000
LAYOUTS = (REFERENCE_MODEL, "large-keys", "small-keys")
FITTED_ON = ("large-keys", "small-keys")  # with one server
RESULT_MARKER = "ps-lite-calibration "
STEP_BATCH = 1  # the gradient's scale does not change what is sent
JOB_TIMEOUT_SECONDS = 1800


def layout_keys(layout):
    """(kvstore key, elements) of each pushed array of ``layout``."""
    reference = gradient_keys(REFERENCE_MODEL)
    if layout == REFERENCE_MODEL:
        return reference
    total = sum(size for _, size in reference)
    if layout == "large-keys":
        sizes = [total // LARGE_KEYS + (i < total % LARGE_KEYS) for i in range(LARGE_KEYS)]
    else:
        sizes = [SMALL_KEY_ELEMENTS] * (total // SMALL_KEY_ELEMENTS)
    return tuple(enumerate(sizes))


def worker_parameters(layout):
    """The parameters a worker's Trainer holds, on the CPU: the network's own (running statistics included, so
    that keys are numbered as in training) or one 1-D parameter per key."""
    import mxnet as mx
    from mxnet import gluon
    from models import get_model
    if layout == REFERENCE_MODEL:
        net = get_model(REFERENCE_MODEL, classes=1000)
        net.infer_shape(mx.nd.zeros((1, 3, 224, 224)))
        net.initialize(mx.init.Zero(), ctx=mx.cpu())
        return net.collect_params()
    params = gluon.ParameterDict()
    for key, size in layout_keys(layout):
        params.get(f"key{key}", shape=(size,), init=mx.init.Zero())
    params.initialize(ctx=mx.cpu())
    return params


def run_worker(layout, steps, warmup_steps):
    """One worker of a job: time ``steps`` pushes and pulls of every gradient through Gluon's Trainer."""
    import mxnet as mx
    from mxnet import gluon
    from utils.distributed import join_cluster, start_kvstore
    from utils.optimizers import create_optimizer
    cluster = join_cluster("dist_sync")
    trainer = gluon.Trainer(worker_parameters(layout),
                            create_optimizer("nag", learning_rate=0.1, momentum=0.9, wd=1e-4),
                            kvstore=cluster.kvstore, update_on_kvstore=cluster.update_on_kvstore)
    start_kvstore(trainer, STEP_BATCH)
    seconds = []
    for step in range(warmup_steps + steps):
        if step == warmup_steps:
            cluster.kvstore._barrier()  # both workers start the timed steps together
        tic = time.perf_counter()
        trainer.step(STEP_BATCH, ignore_stale_grad=True)  # no backward pass: the gradients stay as they are
        mx.nd.waitall()
        seconds.append(time.perf_counter() - tic)
    print(RESULT_MARKER + json.dumps(dict(rank=cluster.rank, step_seconds=seconds[warmup_steps:])), flush=True)


def run_job(layout, servers, steps, warmup_steps):
    """Launch one job on 127.0.0.1; returns each worker's timed step seconds."""
    command = [sys.executable, os.path.join(REPO, "tools", "launch.py"), "-n", str(WORKERS), "-s", str(servers),
               "--launcher", "local", sys.executable, "-m", "benchmarks.ps_lite_calibration", "--worker", layout,
               "--steps", str(steps), "--warmup-steps", str(warmup_steps)]
    completed = subprocess.run(command, cwd=REPO, env=child_environment(), capture_output=True, text=True,
                               timeout=JOB_TIMEOUT_SECONDS)
    records = [json.loads(line.split(RESULT_MARKER, 1)[1]) for line in completed.stdout.splitlines()
               if RESULT_MARKER in line]
    if completed.returncode or len(records) != WORKERS:
        tail = (completed.stdout + completed.stderr).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"the {layout} job with {servers} server(s) failed (exit {completed.returncode}): {tail[0]}")
    return [record["step_seconds"] for record in sorted(records, key=lambda record: record["rank"])]


def fit_loopback(large, small, cores):
    """(R bytes/s, c seconds) that make ``loopback_seconds`` give the measured one-server step times of the two
    synthetic layouts, each a dict with ``keys`` and ``seconds``.

    The model is the largest of sums a / R + b c, so at a fixed ratio c R its prediction scales with 1 / R: the
    ratio is found by bisection (the small keys' prediction grows faster with it), then R from the large keys.
    """
    def predicted(job, per_byte, per_request):
        return loopback_seconds(job["keys"], GRADIENT_BYTES, WORKERS, 1, 1 / per_byte, per_request, cores)

    def measured_over_predicted_ratio(ratio):
        return (small["seconds"] / large["seconds"]) - predicted(small, 1.0, ratio) / predicted(large, 1.0, ratio)
    low, high = 1e-12, 1e12
    if measured_over_predicted_ratio(low) <= 0:  # small keys cost no more than their bytes: no per-request cost
        ratio = 0.0
    else:
        for _ in range(200):
            middle = math.sqrt(low * high)
            low, high = (middle, high) if measured_over_predicted_ratio(middle) > 0 else (low, middle)
        ratio = low
    per_byte = large["seconds"] / predicted(large, 1.0, ratio)
    return 1 / per_byte, ratio * per_byte


def markdown(result):
    from utils.plots import markdown_table
    fit = result["fit"]
    header = ["servers", "layout", "keys", "key parts per worker", "measured s/step (median)",
              "push+pull GB/s per worker", "model s/step", "model / measured"]
    rows = [[str(job["servers"]), job["layout"], str(job["key_count"]), str(job["key_parts"]),
             f"{job['seconds']:.4f}", f"{2 * job['model_bytes'] / job['seconds'] / 1e9:.2f}",
             f"{job['predicted_seconds']:.4f}", f"{job['predicted_seconds'] / job['seconds']:.2f}"]
            for job in result["jobs"]]
    machine = result["machine"]
    return [f"`{result['command']}`", "",
            f"ps-lite on 127.0.0.1: {WORKERS} workers, {machine['cpu']}, {machine['cores']} cores, MXNet "
            f"{machine['mxnet']}; median of {result['steps']} steps after {result['warmup_steps']} of warm-up; "
            f"{result['model_bytes'] / 1e6:.1f} MB of FP32 gradients per worker and step.", "",
            *markdown_table(header, rows), "",
            f"Fitted on the one-server {' and '.join(FITTED_ON)} jobs: R = {fit['software_gbytes_per_s']:.3f} GB/s "
            f"a process in each direction, c = {fit['request_us']:.1f} us a request.",
            "Loopback calibrates software costs (ZeroMQ and TCP copies, the servers' sums, the workers' update, "
            "per-request costs), not a NIC's bandwidth or a wire's latency.", "",
            "The cluster model with these: `python -m benchmarks.scaling_model --ps-request-us "
            f"{fit['request_us']:.1f} --software-gbytes-per-s {fit['software_gbytes_per_s']:.3f} --output-dir "
            "benchmarks/results/scaling-model`"]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 steps after 1 of warm-up, for a smoke test")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per job (default 30)")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--output-dir", help="write ps_lite_calibration.md and .json here")
    parser.add_argument("--worker", choices=LAYOUTS, help=argparse.SUPPRESS)
    return parser


@command_line_entry
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.steps, args.warmup_steps = 3, 1
    if args.steps < 1 or args.warmup_steps < 0:
        raise UserError("--steps must be at least 1 and --warmup-steps not negative")
    if args.worker:
        run_worker(args.worker, args.steps, args.warmup_steps)
        return
    import mxnet as mx
    from benchmarks.machine import describe
    cores = os.cpu_count()
    jobs = []
    for servers in SERVER_COUNTS:
        for layout in LAYOUTS:
            keys = layout_keys(layout)
            per_worker = run_job(layout, servers, args.steps, args.warmup_steps)
            jobs.append(dict(servers=servers, layout=layout, keys=keys, key_count=len(keys),
                             key_parts=sum(server_loads(keys, servers)[1]),
                             model_bytes=sum(size for _, size in keys) * GRADIENT_BYTES,
                             seconds=max(statistics.median(seconds) for seconds in per_worker),
                             step_seconds=per_worker))
            print(f"measured {layout} with {servers} server(s): {jobs[-1]['seconds']:.4f} s a step", flush=True)
    fitted = {job["layout"]: job for job in jobs if job["servers"] == 1 and job["layout"] in FITTED_ON}
    software_bytes_per_sec, request_seconds = fit_loopback(fitted["large-keys"], fitted["small-keys"], cores)
    for job in jobs:
        job["predicted_seconds"] = loopback_seconds(job["keys"], GRADIENT_BYTES, WORKERS, job["servers"],
                                                    software_bytes_per_sec, request_seconds, cores)
        del job["keys"]
    command = shlex.join(["python", "-m", "benchmarks.ps_lite_calibration", *(sys.argv[1:] if argv is None else argv)])
    result = dict(command=command, machine=describe(mxnet=mx.__version__), steps=args.steps,
                  warmup_steps=args.warmup_steps, model_bytes=jobs[0]["model_bytes"], jobs=jobs,
                  fit=dict(software_gbytes_per_s=software_bytes_per_sec / 1e9, request_us=request_seconds * 1e6))
    lines = markdown(result)
    print("\n".join(lines))
    if args.output_dir:
        write_report(args.output_dir, "ps_lite_calibration", "\n".join(lines), result)


if __name__ == "__main__":
    sys.exit(main())
