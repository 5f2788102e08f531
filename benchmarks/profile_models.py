"""Operator by operator: where one training step of our network and of GluonCV's same network spends its time.

For each ``MODEL:INPUT`` row, two child processes (ours, then GluonCV's model zoo, alternating ``--repeats``
times) each time ``--steps`` training steps on a batch in memory after warm-up (forward, backward, Nesterov
update, ``waitall``) and then profile the same steps with MXNet's profiler. Bulk execution is switched off in
the children (``MXNET_EXEC_BULK_EXEC_TRAIN=0``), so that the profiler times every operator on its own rather
than fused segments; the step times are therefore a little slower than a training run's. The table lists,
per operator, the calls and milliseconds per step of each side: the same calls on both sides mean the same
computation, and a gap in the step time that no operator shows is noise of the machine, not the network.

    python -m benchmarks.profile_models resnet50_v1d:64 resnet18_v1d:32 --repeats 3
"""
import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile

from benchmarks.children import benchmark_command, child_environment
from benchmarks.report import write_report
from utils.cpu_threads import use_physical_cores

use_physical_cores()  # before MXNet loads in the children (they inherit it): both sides get the same threads

SIDES = ("ours", "gluoncv")
CLASSES = 1000


def build_network(side, name, classes):
    if side == "ours":
        from models import get_model
        return get_model(name, classes=classes)
    from gluoncv.model_zoo import get_model

    from benchmarks.gluoncv_side import register_resnet18_v1d
    register_resnet18_v1d()
    return get_model(name, classes=classes)


def profile_side(side, name, input_size, batch_size, steps, warmup_steps):
    """Median step seconds and {operator: [calls, total ms]} over ``steps`` profiled steps."""
    import mxnet as mx
    from mxnet import profiler

    from benchmarks.model_step import in_memory_training_step, median_step_seconds

    net = build_network(side, name, classes=CLASSES)
    net.initialize(mx.init.Xavier())
    step = in_memory_training_step(net, input_size, batch_size, CLASSES)
    step_seconds = median_step_seconds(step, steps, warmup_steps)
    profiler.set_config(profile_imperative=True, profile_symbolic=True, aggregate_stats=True)
    profiler.set_state("run")
    for _ in range(steps):
        step()
    profiler.set_state("stop")
    stats = json.loads(profiler.dumps(format="json"))
    operators = {op: [entry["Count"], entry["Total"]] for op, entry in stats["Time"].get("operator", {}).items()}
    return dict(step_seconds=step_seconds, operators=operators)


def run_child(side, spec, args):
    env = child_environment(MXNET_EXEC_BULK_EXEC_TRAIN="0", MXNET_EXEC_BULK_EXEC_INFERENCE="0")
    argv = benchmark_command("profile_models", "--child", side, spec, "--batch-size", str(args.batch_size),
                             "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps))
    # MXNet's profiler also dumps a large trace, profile.json, into the working directory at exit: keep it out
    # of the user's folder (and away from our own profile.json).
    with tempfile.TemporaryDirectory() as scratch:
        output = subprocess.run(argv, env=env, cwd=scratch, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def compare(spec, args):
    """Alternating runs of both sides; per side the median step time and per-step operator figures."""
    runs = {side: [] for side in SIDES}
    for _ in range(args.repeats):
        for side in SIDES:
            runs[side].append(run_child(side, spec, args))
    result = dict(spec=spec, steps=args.steps, repeats=args.repeats, sides={})
    for side, measured in runs.items():
        per_op = collections.defaultdict(list)
        for run in measured:
            for op, (calls, total_ms) in run["operators"].items():
                per_op[op].append((calls / args.steps, total_ms / args.steps))
        result["sides"][side] = dict(
            step_ms=[1000 * run["step_seconds"] for run in measured],
            operators={op: dict(calls=statistics.median(c for c, _ in values),
                                ms=statistics.median(ms for _, ms in values)) for op, values in per_op.items()})
    return result


def markdown(result, top):
    ours, theirs = result["sides"]["ours"], result["sides"]["gluoncv"]
    step = {side: statistics.median(result["sides"][side]["step_ms"]) for side in SIDES}
    lines = [f"### {result['spec']}: step {step['ours']:.0f} ms ours, {step['gluoncv']:.0f} ms GluonCV's "
             f"(median of {result['repeats']} runs of {result['steps']} steps; ours "
             f"{', '.join(f'{ms:.0f}' for ms in ours['step_ms'])}; GluonCV's "
             f"{', '.join(f'{ms:.0f}' for ms in theirs['step_ms'])})", "",
             "| operator | calls/step ours | calls/step GluonCV | ms/step ours | ms/step GluonCV |",
             "| --- | --- | --- | --- | --- |"]
    names = sorted(set(ours["operators"]) | set(theirs["operators"]),
                   key=lambda op: -ours["operators"].get(op, theirs["operators"].get(op))["ms"])
    empty = dict(calls=0, ms=0.0)
    for op in names[:top]:
        mine, other = ours["operators"].get(op, empty), theirs["operators"].get(op, empty)
        lines.append(f"| {op} | {mine['calls']:g} | {other['calls']:g} | {mine['ms']:.1f} | {other['ms']:.1f} |")
    rest = {side: sum(v["ms"] for op, v in result["sides"][side]["operators"].items() if op not in names[:top])
            for side in SIDES}
    lines.append(f"| (all other operators) | | | {rest['ours']:.1f} | {rest['gluoncv']:.1f} |")
    same_calls = all(ours["operators"].get(op, empty)["calls"] == theirs["operators"].get(op, empty)["calls"]
                     for op in names)
    lines += ["", "Same operators, same number of calls: " + ("yes" if same_calls else "no")]
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", default=["resnet50_v1d:64", "resnet18_v1d:32"], help="MODEL:INPUT rows")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed and profiled steps per run (default 5)")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating (default 3)")
    parser.add_argument("--top", type=int, default=15, help="operators listed per row (default 15)")
    parser.add_argument("--output-dir", default=".", help="where profile.md and profile.json go")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "MODEL:INPUT"), help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.child:
        side, spec = args.child
        name, _, size = spec.partition(":")
        print(json.dumps(profile_side(side, name, int(size), args.batch_size, args.steps, args.warmup_steps)))
        return 0
    os.makedirs(args.output_dir, exist_ok=True)
    results = [compare(spec, args) for spec in args.rows]
    report = "\n\n".join(markdown(result, args.top) for result in results)
    write_report(args.output_dir, "profile", report, results)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
