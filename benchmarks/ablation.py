"""Re-run the structure of the paper's Tables 4, 5 and 6 on a packed data set, with several seeds per row.

Table 4 (section 3, efficient training): baseline at batch B -> linear scaling to batch L -> + warmup ->
+ zero gamma -> + no bias decay, on ``FAMILY_v1b``. Table 5 (section 4, model tweaks): ``TWEAKS_FAMILY_v1``,
``_v1b``, ``_v1c``, ``_v1d`` with Table 4's last recipe (``--tweaks-family``, by default ``--family``; the
paper's is ResNet-50: on basic blocks, as in resnet18, ResNet-B is the same network as ResNet, so its row only
shows how far two runs of one configuration differ). Table 6 (section 5, refinements) on ``FAMILY_v1d``:
efficient -> + cosine -> + label smoothing -> + distillation, + mixup, + both. The teacher (``--teacher``) is
trained here once with the cosine + label-smoothing recipe (seed 0), or taken from ``--teacher-params``; it
must be stronger than the student (the paper's: a deeper network; here it may also be one trained on more data).

Every run is ``train_imagenet.py`` with ``--resume`` in its own folder under ``--work-dir``, named by a hash
of its full command line: an interrupted grid continues where it stopped (even inside a run) when it is
started again, and finished runs are never repeated. A run whose loss diverges (``train_imagenet.py``
exits with 3) is a result, kept as ``diverged.txt`` in its folder and shown as such in its row. A row shared
by two tables runs once. Runs go one after the other, never two at once.

    python -m benchmarks.ablation --rec-train rec/train.rec --rec-val rec/val.rec --num-epochs 10 \\
        --seeds 0 1 2 --work-dir runs/ablation --output-dir benchmarks/results/cifar10

writes ``ablation.md`` (mean +- std of the final validation top-1 and top-5 per row, the difference to the
row above, the commands), ``ablation.json`` and PNG plots: top-1 per epoch for every row, the learning-rate
schedules, and the deltas (each against the row above, or the row a row names, as in the paper's Table 6).
``--report-only`` rebuilds them from the finished runs, ``--from-json`` from an earlier ``ablation.json``.
"""
import argparse
import dataclasses
import hashlib
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time

from benchmarks.children import REPO, TRAINER
from benchmarks.report import write_report
from data.records import RecordFiles, count_records
from models.resnet import DEPTHS, Bottleneck
from utils import checkpoint, plots
from utils.errors import Diverged
from utils.lr_schedule import build_lr_scheduler, linear_scaled_lr

TABLE_TITLES = {"4": "Table 4: efficient training (section 3)", "5": "Table 5: ResNet tweaks (section 4)",
                "6": "Table 6: training refinements (section 5)",
                "beyond": "Beyond the paper: the tricks of torchvision's and timm's recipes, one at a time",
                "gluoncv": "GluonCV's budget: baseline and all tricks at one batch size"}
TABLE_HEADER = ["row", "seeds", "val top-1 % (mean ± std)",
                "Δ top-1 vs the row above or the row named (± standard error)", "val top-5 %", "per seed top-1 %"]


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a table: its label and the flags that make it, on top of the budget's common flags."""

    table: str
    label: str
    flags: tuple
    compared_to: str = None  # the label of the row its delta is taken against, if not the row above


def decay_epochs(num_epochs):
    """The paper's step decay at epochs 30, 60, 90 of 120, as GluonCV's 10-epoch runs place it: half and 0.8, as
    text for --lr-decay-epoch; only the epochs where a step can start (1 to num_epochs - 1), which the trainer
    requires."""
    epochs = sorted({round(num_epochs * fraction) for fraction in (0.5, 0.8)} & set(range(1, num_epochs)))
    return ",".join(str(epoch) for epoch in epochs)


def grid(args, teacher_params):
    """The rows of the requested tables, in order; Table 6's distillation rows need ``teacher_params``."""
    family, small, large = args.family, args.batch_size, args.large_batch_size
    warmup = ("--warmup-epochs", str(args.warmup_epochs))
    efficient = ("--batch-size", str(large), *warmup, "--last-gamma", "--no-wd")
    mixup = ("--mixup", "--mixup-off-epoch", str(args.mixup_off_epochs))
    distill = ("--teacher", args.teacher, "--teacher-params", teacher_params or "TEACHER.params",
               "--temperature", str(args.temperature))
    d_efficient = (f"--model={family}_v1d", *efficient)
    refined = (*d_efficient, "--lr-mode", "cosine", "--label-smoothing")
    v1b, v1d = f"--model={family}_v1b", f"--model={family}_v1d"
    all_tricks = (v1d, "--batch-size", str(small), *warmup, "--last-gamma", "--no-wd", "--lr-mode", "cosine",
                  "--label-smoothing", *mixup)
    # torchvision's train 176 / test 224 of 232 and FFCV's 160 to 192 (then 224), scaled to --input-size; sizes
    # are multiples of 4 below 64 (of 8 below 128, of 32 beyond, as FFCV's steps).
    step = 4 if args.input_size < 64 else 8 if args.input_size < 128 else 32
    train_size = max(step, round(args.input_size * 176 / 224 / step) * step)
    test_resize = round(args.input_size * 232 / 224)
    test_crop_ratio = args.input_size / test_resize
    ramp = (max(step, round(args.input_size * 160 / 224 / step) * step),
            max(step, round(args.input_size * 192 / 224 / step) * step), step)
    beyond, flags = [], (*refined, *mixup)
    for label, added in (("Table 6 without distillation (cosine, smoothing, mixup)", ()),
                         ("+ CutMix (alpha 1, half the mixed batches)", ("--cutmix", "1.0")),
                         (f"+ random erasing (p {args.reprob})", ("--reprob", str(args.reprob))),
                         (f"+ EMA of weights (decay {args.ema_decay})",
                          ("--model-ema", "--model-ema-decay", str(args.ema_decay))),
                         (f"+ stochastic depth ({args.drop_path})", ("--drop-path", str(args.drop_path))),
                         ("+ binary cross-entropy", ("--bce-loss",)),
                         (f"+ LAMB (lr {args.lamb_lr}, wd {args.lamb_wd})",
                          ("--optimizer", "lamb", "--lr", str(args.lamb_lr), "--wd", str(args.lamb_wd))),
                         ("+ TrivialAugment (ta_wide)", ("--auto-augment", "ta_wide")),
                         (f"+ train {train_size} / test {args.input_size} of {test_resize} (FixRes, as torchvision's "
                          "176 / 224 of 232)",
                          ("--input-size", str(train_size), "--val-input-size", str(args.input_size),
                           "--crop-ratio", f"{test_crop_ratio:.4f}")),
                         (f"+ progressive resizing {ramp[0]} to {ramp[1]} instead of {train_size} (FFCV)",
                          ("--progressive-resize", f"{ramp[0]},{ramp[1]}", "--progressive-resize-step",
                           str(ramp[2])))):
        if added[:1] == ("--progressive-resize",):  # which replaces --input-size
            at = flags.index("--input-size")
            flags = flags[:at] + flags[at + 2:]
        flags += added
        beyond.append(Row("beyond", label, flags))
    rows = {
        "beyond": beyond,
        "gluoncv": [
            Row("gluoncv", f"baseline {family}_v1d, batch {small}", (v1d, "--batch-size", str(small))),
            Row("gluoncv", "+ all tricks (cosine, warmup, zero gamma, no bias decay, smoothing, mixup)", all_tricks)],
        "4": [
            Row("4", f"baseline {family}_v1b, batch {small}", (v1b, "--batch-size", str(small))),
            Row("4", f"+ linear scaling, batch {large}", (v1b, "--batch-size", str(large))),
            Row("4", "+ LR warmup", (v1b, "--batch-size", str(large), *warmup)),
            Row("4", "+ zero gamma", (v1b, "--batch-size", str(large), *warmup, "--last-gamma")),
            Row("4", "+ no bias decay", (v1b, *efficient))],
        "5": [Row("5", f"{tweaks_family(args)}_v1{variant}", (f"--model={tweaks_family(args)}_v1{variant}", *efficient))
              for variant in ("", "b", "c", "d")],
        "6": [
            Row("6", f"efficient {family}_v1d", d_efficient),
            Row("6", "+ cosine decay", (*d_efficient, "--lr-mode", "cosine")),
            Row("6", "+ label smoothing", refined),
            Row("6", f"+ distillation from {args.teacher}", (*refined, *distill)),
            Row("6", "+ mixup (no distillation)", (*refined, *mixup), compared_to="+ label smoothing"),
            Row("6", "+ distillation and mixup", (*refined, *distill, *mixup),
                compared_to=f"+ distillation from {args.teacher}")],
    }
    return [row for table in args.tables for row in rows[table]]


def common_flags(args, flags=()):
    """The budget's flags; a row that sets its own training sizes (``flags``) leaves out ``--input-size``."""
    size = [] if "--progressive-resize" in flags else ["--input-size", str(args.input_size)]
    return ["--rec-train", args.rec_train, "--rec-val", args.rec_val, *size,
            "--num-epochs", str(args.num_epochs), "--lr-decay-epoch", decay_epochs(args.num_epochs),
            "-j", str(args.threads), "--log-interval", "1000", "--save-frequency", "1", "--keep-checkpoints", "1"]


def teacher_flags(args):
    return [f"--model={args.teacher}", "--batch-size", str(args.large_batch_size), "--warmup-epochs",
            str(args.warmup_epochs), "--last-gamma", "--no-wd", "--lr-mode", "cosine", "--label-smoothing"]


def run_dir(args, flags, seed):
    """The folder of one run: readable start, then a hash of everything that defines the run."""
    key = json.dumps([os.path.abspath(args.rec_train), *common_flags(args, flags)[2:], *flags, seed])
    model = next(flag.split("=", 1)[1] for flag in flags if flag.startswith("--model="))
    return os.path.join(args.work_dir, f"{model}-seed{seed}-{hashlib.sha1(key.encode()).hexdigest()[:10]}")


def command(args, flags, seed, save_dir):
    return [sys.executable, TRAINER, *common_flags(args, flags), *flags, "--seed", str(seed), "--save-dir", save_dir,
            "--resume"]


DIVERGED_MARKER = "diverged.txt"  # in a run's folder: its loss stopped being finite, a result, not a failure


def finished(save_dir, num_epochs):
    return len(checkpoint.read_metrics(save_dir)) == num_epochs


def diverged(save_dir):
    return os.path.isfile(os.path.join(save_dir, DIVERGED_MARKER))


def run(args, flags, seed):
    """Train one configuration (or finish it); return its folder. Runs that are done are not repeated."""
    save_dir = run_dir(args, flags, seed)
    if finished(save_dir, args.num_epochs) or diverged(save_dir):
        return save_dir
    argv = command(args, flags, seed, save_dir)
    os.makedirs(save_dir, exist_ok=True)
    with open(os.path.join(save_dir, "command.txt"), "w") as handle:
        handle.write(shlex.join(argv[1:]) + "\n")
    print(f"{time.strftime('%H:%M:%S')} running {shlex.join(argv[2:])}", flush=True)
    with open(os.path.join(save_dir, "stdout.txt"), "a") as log:
        status = subprocess.call(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if status == Diverged.exit_status:
        with open(os.path.join(save_dir, "stdout.txt")) as log:
            reason = [line for line in log if line.startswith("error: ")][-1:] or ["error: the loss diverged\n"]
        with open(os.path.join(save_dir, DIVERGED_MARKER), "w") as handle:
            handle.write(reason[0])
        print(f"{time.strftime('%H:%M:%S')} diverged: {reason[0].strip()}", flush=True)
        return save_dir
    if status:
        raise SystemExit(f"run failed with status {status}; see {save_dir}/stdout.txt (starting the grid again "
                         "resumes it)")
    return save_dir


def teacher_params(args):
    """The teacher's final parameters, training it first if needed (one seed: it is a tool, not a row)."""
    if args.teacher_params:
        if not os.path.isfile(args.teacher_params):
            raise SystemExit(f"--teacher-params {args.teacher_params} does not exist; give the .params file of a "
                             f"trained {args.teacher}, or leave it out to train the teacher here")
        return os.path.abspath(args.teacher_params)
    save_dir = run(args, teacher_flags(args), 0) if not args.report_only else run_dir(args, teacher_flags(args), 0)
    return os.path.join(save_dir, checkpoint.params_path("", args.teacher, args.num_epochs - 1))


def summarize(args, rows):
    """Per row: the seeds' final top-1/top-5 and top-1 curves, then the statistics of ``with_deltas``."""
    entries = []
    for row in rows:
        averaged = "--model-ema" in row.flags  # the row's figure is its moving average's, the network's beside it
        reported = "_ema" if averaged else ""
        metrics, seeds, diverged_seeds = [], [], []
        for seed in args.seeds:
            save_dir = run_dir(args, row.flags, seed)
            if finished(save_dir, args.num_epochs):
                metrics.append(checkpoint.read_metrics(save_dir))
                seeds.append(seed)
            elif diverged(save_dir):
                diverged_seeds.append(seed)
        entries.append(dict(table=row.table, label=row.label, flags=list(row.flags), seeds=seeds,
                            diverged_seeds=diverged_seeds,
                            command=shlex.join(["python", "train_imagenet.py", *common_flags(args, row.flags),
                                                *row.flags, "--seed", "SEED", "--save-dir", "DIR", "--resume"]),
                            reported="EMA" if averaged else "network",
                            network_top1=[m[-1]["val_top1"] for m in metrics],
                            val_top1=[m[-1]["val_top1" + reported] for m in metrics],
                            val_top5=[m[-1]["val_top5" + reported] for m in metrics],
                            curves=[[line["val_top1" + reported] for line in m] for m in metrics]))
    return with_deltas(entries, rows)


def with_deltas(entries, rows):
    """Each row's mean and std, and its delta (with the standard error) to the row above in its table, or to the
    row its ``compared_to`` names; ``entries`` are the rows' per-seed results, in ``rows``' order."""
    results, previous, labelled = [], {}, {}
    for row, entry in zip(rows, entries):
        entry = dict(entry, compared_to=row.compared_to)
        for metric in ("val_top1", "val_top5"):
            finals = entry[metric]
            entry[f"{metric}_mean"] = statistics.mean(finals) if finals else None
            entry[f"{metric}_std"] = statistics.stdev(finals) if len(finals) > 1 else None
        above = labelled[row.table, row.compared_to] if row.compared_to else previous.get(row.table)
        entry["delta_top1"] = (entry["val_top1_mean"] - above["val_top1_mean"]
                               if above and above["val_top1_mean"] is not None and entry["val_top1_mean"] is not None
                               else None)
        # Standard error of a difference of two independent means: a delta well beyond it is not seed noise.
        entry["delta_top1_se"] = (math.sqrt(entry["val_top1_std"] ** 2 / len(entry["val_top1"])
                                            + above["val_top1_std"] ** 2 / len(above["val_top1"]))
                                  if entry["delta_top1"] is not None and entry["val_top1_std"] is not None
                                  and above["val_top1_std"] is not None else None)
        previous[row.table] = labelled[row.table, row.label] = entry
        results.append(entry)
    return results


def _percent(value, std=None):
    if value is None:
        return "-"
    return f"{100 * value:.2f} ± {100 * std:.2f}" if std is not None else f"{100 * value:.2f}"


def markdown(args, results, teacher):
    batches = (f"batch {args.batch_size} (Table 4's baseline) and {args.large_batch_size}"
               if {"4", "5", "6"} & set(args.tables) else f"batch {args.batch_size}")
    families = f"`{args.family}`" + (f" (`{tweaks_family(args)}` in Table 5)"
                                     if "5" in args.tables and tweaks_family(args) != args.family else "")
    lines = [f"Budget: {families} at input {args.input_size}, {args.num_epochs} epochs, {batches}, "
             f"learning rate 0.1 x batch / 256, step decay at epochs {decay_epochs(args.num_epochs)} unless cosine, "
             f"{args.warmup_epochs} warmup epoch(s), mixup off for the last {args.mixup_off_epochs}; seeds "
             f"{' '.join(map(str, args.seeds))}; data {args.rec_train}"
             + (f". Teacher: {args.teacher} ({teacher})." if "6" in args.tables else "."), ""]
    for table in args.tables:
        cells = []
        for entry in (e for e in results if e["table"] == table):
            delta = f"{100 * entry['delta_top1']:+.2f}" if entry["delta_top1"] is not None else "-"
            if entry["delta_top1_se"] is not None:
                delta += f" ± {100 * entry['delta_top1_se']:.2f}"
            if entry["compared_to"]:
                delta += f" (vs {entry['compared_to']})"
            per_seed = [f"{100 * value:.2f}" for value in entry["val_top1"]]
            if entry.get("reported") == "EMA":
                per_seed = [f"{average} (network {100 * own:.2f})"
                            for average, own in zip(per_seed, entry["network_top1"])]
            per_seed += [f"diverged (seed {seed})" for seed in entry["diverged_seeds"]]
            cells.append([entry["label"], str(len(entry["seeds"])),
                          _percent(entry["val_top1_mean"], entry["val_top1_std"]), delta,
                          _percent(entry["val_top5_mean"], entry["val_top5_std"]), ", ".join(per_seed)])
        lines += [f"### {TABLE_TITLES[table]}", "", *plots.markdown_table(TABLE_HEADER, cells), ""]
        if table == "5" and not has_bottlenecks(tweaks_family(args)):
            family = tweaks_family(args)
            lines += [f"`{family}` has basic blocks, where ResNet-B has no 1x1 stride to move: "
                      f"`{family}_v1b` is the same network as `{family}_v1`, trained here with the same "
                      "seeds: the difference of their rows is how far two runs of one configuration differ.", ""]
    if "beyond" in args.tables:
        lines += ["Beyond the paper: each row adds one trick to the row above. Rows with an EMA of weights report "
                  "the average's accuracy (the network's own per seed in brackets). `--bce-loss` refuses "
                  "`--teacher`, so the table starts from Table 6's last row without distillation.", ""]
    lines += ["Every run is `python train_imagenet.py COMMON ROW --seed SEED --save-dir DIR --resume` with", "",
              f"COMMON = `{shlex.join(common_flags(args))}`", "", "and ROW:", ""]
    lines += [f"- {entry['label']}: `{shlex.join(entry['flags'])}`" for entry in results]
    return "\n".join(lines) + "\n"


def lr_schedule(args, flags, num_images):
    """Rate per optimizer update of a row, from the same scheduler the trainer builds."""
    batch = int(flags[flags.index("--batch-size") + 1])
    batches_per_epoch = -(-num_images // batch)
    rate = float(flags[flags.index("--lr") + 1]) if "--lr" in flags else linear_scaled_lr(batch)
    mode = flags[flags.index("--lr-mode") + 1] if "--lr-mode" in flags else "step"
    warmup = float(flags[flags.index("--warmup-epochs") + 1]) if "--warmup-epochs" in flags else 0
    scheduler = build_lr_scheduler(mode, rate, batches_per_epoch, args.num_epochs,
                                   warmup_epochs=warmup, decay_epochs=[int(e) for e in
                                                                       decay_epochs(args.num_epochs).split(",") if e])
    updates = batches_per_epoch * args.num_epochs
    return [(update / batches_per_epoch, scheduler(update)) for update in range(1, updates + 1)]


def plot(args, results, rows, images):
    """One PNG per table: top-1 per epoch of every row (band: its seeds), the rows' rate schedules, the deltas."""
    for table in args.tables:
        entries = [e for e in results if e["table"] == table and e["curves"]]
        if not entries:
            continue
        figure, (top1, rates, deltas_axis) = plots.panels(3)
        for entry in entries:
            plots.plot_per_epoch(top1, [[100 * value for value in curve] for curve in entry["curves"]],
                                 entry["label"])
            row = next(r for r in rows if r.table == table and r.label == entry["label"])
            schedule = lr_schedule(args, row.flags, images)
            rates.plot([epoch for epoch, _ in schedule], [rate for _, rate in schedule], label=entry["label"])
        top1.set(xlabel="epoch", ylabel="val top-1 % (mean; band: seeds)", title=TABLE_TITLES[table])
        top1.legend(fontsize=8)
        rates.set(xlabel="epoch", ylabel="learning rate", title="learning-rate schedules")
        labels = [e["label"] + (f"\n(vs {e['compared_to']})" if e["compared_to"] else "") for e in entries]
        deltas = [100 * (e["delta_top1"] or 0) for e in entries]
        errors = [100 * (e["delta_top1_se"] or 0) for e in entries]
        deltas_axis.bar(range(len(labels)), deltas, yerr=errors, capsize=4,
                        color=["tab:green" if d >= 0 else "tab:red" for d in deltas])
        deltas_axis.axhline(0, color="black", linewidth=0.8)
        deltas_axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        deltas_axis.set(ylabel="Δ top-1 (points) vs the row above, or the row named",
                        title="what each step buys (error bar: its standard error)")
        plots.save_figure(figure, os.path.join(args.output_dir, f"table{table}.png"))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rec-train", required=True)
    parser.add_argument("--rec-val", required=True)
    parser.add_argument("--tables", nargs="+", default=["4", "5", "6"], choices=tuple(TABLE_TITLES),
                        help="gluoncv: the baseline and all-tricks runs of the GluonCV-budget figures")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    families = [f"resnet{depth}" for depth in DEPTHS]
    parser.add_argument("--family", default="resnet18", choices=families,
                        help="the ResNet of Tables 4 and 6 (v1b and v1d)")
    parser.add_argument("--tweaks-family", choices=families,
                        help="the ResNet of Table 5, whose v1/b/c/d variants run (default: --family); ResNet-B "
                             "acts on bottleneck depths only (26, 50, ...)")
    parser.add_argument("--teacher", default="resnet50_v1d", help="Table 6's teacher network")
    parser.add_argument("--teacher-params", help="a trained --teacher's .params file, instead of training one here")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--num-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128, help="Table 4's baseline batch")
    parser.add_argument("--large-batch-size", type=int, default=512, help="the batch of linear scaling and after")
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--mixup-off-epochs", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=20.0)
    parser.add_argument("--reprob", type=float, default=0.25, help="the beyond table's random erasing (timm's)")
    parser.add_argument("--ema-decay", type=float, default=0.99,
                        help="the beyond table's EMA decay per step: about 1/(1 - D) steps averaged, a fraction "
                             "of a short budget (the recipes' 0.9998 suits hundreds of thousands of steps)")
    parser.add_argument("--drop-path", type=float, default=0.05, help="the beyond table's stochastic depth (RSB's)")
    parser.add_argument("--lamb-lr", type=float, default=0.01, help="the beyond table's LAMB rate, used as given")
    parser.add_argument("--lamb-wd", type=float, default=0.02, help="the beyond table's LAMB weight decay (RSB A3's)")
    parser.add_argument("-j", "--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--work-dir", default="runs/ablation", help="one folder per run (the cache)")
    parser.add_argument("--output-dir", default="ablation-results")
    parser.add_argument("--report-only", action="store_true", help="only tabulate and plot the finished runs")
    parser.add_argument("--from-json", metavar="FILE",
                        help="tabulate and plot the results an earlier run wrote to FILE (its ablation.json), "
                             "with its budget; no run folders needed")
    return parser


def tweaks_family(args):
    return args.tweaks_family or args.family


def has_bottlenecks(family):
    return DEPTHS[int(family.removeprefix("resnet"))][0] is Bottleneck


def saved_results(args):
    """The budget, teacher, rows and results of an earlier ``ablation.json``, its rows compared as the current grid
    compares them; the training images are counted from ``--rec-train`` if the file does not say."""
    with open(args.from_json) as handle:
        saved = json.load(handle)
    defaults = vars(build_parser().parse_args(["--rec-train", args.rec_train, "--rec-val", args.rec_val]))
    budget = argparse.Namespace(**{**defaults, **saved["budget"], "output_dir": args.output_dir,
                                   "from_json": args.from_json})
    teacher = budget.teacher_params if "6" in budget.tables else None
    rows = grid(budget, teacher)
    entries = {(entry["table"], entry["label"]): entry for entry in saved["rows"]}
    images = saved.get("train_images") or count_records(RecordFiles.from_rec_path(args.rec_train).idx)
    return budget, teacher, rows, with_deltas([entries[row.table, row.label] for row in rows], rows), images


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.from_json:
        args, teacher, rows, results, images = saved_results(args)
    else:
        teacher = teacher_params(args) if "6" in args.tables else None
        rows = grid(args, teacher)
        if not args.report_only:
            for seed in args.seeds:  # seed-major: after one sitting every row has a first figure
                for row in rows:
                    run(args, row.flags, seed)
        results = summarize(args, rows)
        images = count_records(RecordFiles.from_rec_path(args.rec_train).idx)
    write_report(args.output_dir, "ablation", markdown(args, results, teacher),
                 dict(budget=vars(args), train_images=images, rows=results))
    plot(args, results, rows, images)
    print(markdown(args, results, teacher))
    return 0


if __name__ == "__main__":
    sys.exit(main())
