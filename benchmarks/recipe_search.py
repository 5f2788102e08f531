"""The recipe search against the ablation grid, on the grid's own budget: does ``tools.search``, spending at most a
third of the ``beyond`` grid's compute, find a recipe without a teacher that beats the best teacher-free row?

Budget of Tables 4-6 (``--rec-train`` 10,000 CIFAR-10 images, the full validation set, the resnet18 family at 32,
6 epochs). The ``beyond`` grid ran 10 rows x 3 seeds x 6 epochs = 180 epoch-runs; the search gets
``--max-epoch-runs`` (default 60, pruned epochs counted as run). Then the best recipe, from its ``best.yaml``, is
trained again with each of ``--seeds``, and its mean final top-1 is compared with the best teacher-free row of the
committed tables (``--tables-json``: Tables 4-6 and beyond), by the difference and its standard error
(sqrt(s1^2/n1 + s2^2/n2)). The search's first trial is that row's recipe (``tools.search --start-from``): it starts
from the best the tables know; ``--no-start-from-best-row`` leaves every trial to the sampler.

    python -m benchmarks.recipe_search --rec-train rec/train10k.rec --rec-val rec/val.rec \\
        --work-dir runs/recipe-search --output-dir benchmarks/results/recipe-search

With ``--target-top1 P`` (GluonCV's 10-epoch budget on full CIFAR-10: ``--epochs 10 --target-top1 65.2``) the
objective is the training seconds until validation top-1 reaches P instead, and the re-trained recipe's seconds to
P are reported (wall seconds of one uninterrupted run from the trainer's start, each re-training stopped there),
against ``--gluoncv-seconds`` (the wall time of GluonCV's script on the same machine, measured with
``benchmarks.gluoncv_script``) when given.

Everything runs in ``--work-dir`` and resumes: the search is ``tools.search``'s study (the same command goes on
with it), each re-training a ``train_imagenet.py --resume`` run in its own folder. Writes ``recipe_search.md`` and
``.json`` with the search's ``search.md``, ``best.yaml`` and plots into ``--output-dir``.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

import optuna
import yaml

from benchmarks.ablation import decay_epochs
from benchmarks.children import REPO, TRAINER, child_environment
from benchmarks.report import write_report
from engine.config import parse_config, replay_settings
from tools import search
from utils import checkpoint

BEYOND_GRID_EPOCH_RUNS = 10 * 3 * 6
COMMITTED_TABLES = [os.path.join(REPO, "benchmarks", "results", name, "ablation.json")
                    for name in ("ablation-10k", "ablation-beyond")]
SEARCH_FILES = ("search.md", "best.yaml", "history.png", "importances.png", "best-trials.png")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipe_search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rec-train", required=True)
    parser.add_argument("--rec-val", required=True)
    parser.add_argument("--work-dir", required=True, help="the search and the re-trainings, resumable")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--family", default="resnet18", help="the ResNet family whose variants are searched")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--trials", type=int, default=40, help="at most this many trials (the compute cap stops "
                                                               "the search first, as a rule)")
    parser.add_argument("--max-epoch-runs", type=int, default=BEYOND_GRID_EPOCH_RUNS // 3)
    parser.add_argument("--batch-sizes", default="128,256", help="choices of --batch-size (the tables': 128, 256)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the re-training")
    parser.add_argument("--sampler-seed", type=int, default=0)
    parser.add_argument("--tables-json", nargs="+", default=COMMITTED_TABLES,
                        help="the ablation results the recipe is compared with")
    parser.add_argument("--target-top1", type=float, metavar="PERCENT",
                        help="search for the fewest training seconds to this top-1 instead of the best final top-1")
    parser.add_argument("--gluoncv-seconds", type=float, help="with --target-top1: GluonCV's script's wall time on "
                                                              "this machine, for the ratio")
    parser.add_argument("--no-start-from-best-row", dest="start_from_best_row", action="store_false",
                        help="draw the first trials at random instead of starting from the best teacher-free row")
    parser.add_argument("-j", "--threads", type=int, default=os.cpu_count() or 1)
    return parser


def start_recipe(args):
    """The best teacher-free row's recipe as a config file in --work-dir, the search's first trial: the search
    starts from the best recipe the tables know and looks for a better one."""
    row = best_teacher_free_row(args.tables_json)
    size = [] if "--progressive-resize" in row["flags"] else ["--input-size", str(args.input_size)]
    config = parse_config(["--rec-train", args.rec_train, "--rec-val", args.rec_val, *size, "--num-epochs",
                           str(args.epochs), "--lr-decay-epoch", decay_epochs(args.epochs), *row["flags"]])
    path = os.path.join(args.work_dir, "start.yaml")
    with open(path, "w") as handle:
        handle.write(f"# {row['table']}: {row['label']}\n" + yaml.safe_dump(replay_settings(config), sort_keys=False))
    return path


def start_text(args):
    if not args.start_from_best_row:
        return "Every trial drawn by the sampler (--no-start-from-best-row)."
    row = best_teacher_free_row(args.tables_json)
    return f"The search's first trial: the recipe of the best teacher-free row ({row['table']}, {row['label']})."


def search_command(args):
    variants = ",".join(f"{args.family}_v1{variant}" for variant in ("", "b", "c", "d"))
    start = ["--start-from", os.path.join(args.work_dir, "start.yaml")] if args.start_from_best_row else []
    return [sys.executable, "-m", "tools.search", "--search-dir", os.path.join(args.work_dir, "search"), *start,
            "--trials", str(args.trials), "--epochs", str(args.epochs), "--max-epoch-runs", str(args.max_epoch_runs),
            "--sampler-seed", str(args.sampler_seed), "--space", f"model={variants}",
            "--space", f"batch-size={args.batch_sizes}",
            *(["--target-top1", str(args.target_top1)] if args.target_top1 is not None else []),
            "--", "--rec-train", args.rec_train, "--rec-val", args.rec_val, "--input-size", str(args.input_size),
            "-j", str(args.threads), "--log-interval", "1000"]


def retrain_command(args, seed, save_dir):
    return [sys.executable, TRAINER, "--config", os.path.join(args.work_dir, "search", "best.yaml"),
            "--seed", str(seed), "--save-dir", save_dir, "--resume"]


def retrain(args, seed):
    """``best.yaml`` trained again with ``seed`` (or finished, if it was interrupted); its metrics."""
    save_dir = os.path.join(args.work_dir, f"best-seed{seed}")
    if len(checkpoint.read_metrics(save_dir)) < args.epochs:
        subprocess.run(retrain_command(args, seed, save_dir), cwd=REPO, env=child_environment(), check=True,
                       stdout=subprocess.DEVNULL)
    return checkpoint.read_metrics(save_dir)


def retrain_to_target(args, seed):
    """``best.yaml`` trained again with ``seed`` until its validation top-1 reaches ``--target-top1``, in one
    uninterrupted run (a resumed one would not time the whole way): its metrics and the wall seconds from the
    trainer's start to the end of the validation that got there (start-up and validations included, as in
    GluonCV's script's wall time), infinity if the budget ends first."""
    save_dir = os.path.join(args.work_dir, f"best-seed{seed}-to-target")
    timing = os.path.join(save_dir, "to_target.json")
    if not os.path.isfile(timing):
        shutil.rmtree(save_dir, ignore_errors=True)
        os.makedirs(save_dir)
        start = time.time()
        process = subprocess.Popen(retrain_command(args, seed, save_dir), cwd=REPO, env=child_environment(),
                                   stdout=subprocess.DEVNULL)
        wall = math.inf
        while process.poll() is None:
            if any(search.objective_value(record) >= args.target_top1 for record in checkpoint.read_metrics(save_dir)):
                wall = time.time() - start
                process.kill()
                break
            time.sleep(search.POLL_SECONDS)
        process.wait()
        if wall == math.inf and process.returncode:
            raise SystemExit(f"re-training seed {seed} failed with status {process.returncode}; see {save_dir}")
        with open(timing, "w") as handle:
            json.dump(dict(wall_seconds=wall if math.isfinite(wall) else None), handle)
    wall = json.load(open(timing))["wall_seconds"]
    return checkpoint.read_metrics(save_dir), math.inf if wall is None else wall


def final_top1(metrics):
    """The final top-1 (the average's under --model-ema), as the search and the tables report it."""
    return search.objective_value(metrics[-1]) / 100


def seconds_to(metrics, target):
    """Training seconds until the first epoch at ``target`` top-1 or above; infinity if none gets there."""
    for index, record in enumerate(metrics):
        if search.objective_value(record) >= target:
            return sum(line["epoch_seconds"] for line in metrics[:index + 1])
    return math.inf


def best_teacher_free_row(paths):
    rows = [row for path in paths for row in json.load(open(path))["rows"]
            if "--teacher" not in row["flags"] and len(row["val_top1"]) > 1]
    return max(rows, key=lambda row: row["val_top1_mean"])


def mean_and_std(values):
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    if args.start_from_best_row:
        start_recipe(args)
    subprocess.run(search_command(args), cwd=REPO, env=child_environment(), check=True)
    study = optuna.load_study(study_name="search",
                              storage=f"sqlite:///{os.path.abspath(args.work_dir)}/search/study.db")
    spent = search.epoch_runs(study.get_trials(deepcopy=False))
    if args.target_top1 is not None:
        return report_time_to_target(args, study, spent, [retrain_to_target(args, seed) for seed in args.seeds])
    runs = [retrain(args, seed) for seed in args.seeds]
    top1 = [final_top1(metrics) for metrics in runs]
    mean, std = mean_and_std(top1)
    row = best_teacher_free_row(args.tables_json)
    error = math.sqrt(std ** 2 / len(top1) + row["val_top1_std"] ** 2 / len(row["val_top1"]))
    difference = mean - row["val_top1_mean"]
    result = dict(budget=dict(rec_train=args.rec_train, family=args.family, input_size=args.input_size,
                              epochs=args.epochs), search_epoch_runs=spent, max_epoch_runs=args.max_epoch_runs,
                  beyond_grid_epoch_runs=BEYOND_GRID_EPOCH_RUNS, trials=len(study.trials),
                  best_trial=study.best_trial.number, best_trial_top1=study.best_value / 100,
                  retrained_seeds=args.seeds, retrained_top1=top1, retrained_mean=mean, retrained_std=std,
                  compared_row=dict(table=row["table"], label=row["label"], mean=row["val_top1_mean"],
                                    std=row["val_top1_std"], seeds=len(row["val_top1"])),
                  difference=difference, difference_se=error, above_twice_se=difference > 2 * error)
    markdown = "\n".join([
        "# Recipe search against the ablation grid", "",
        f"Budget: `{args.family}` variants at {args.input_size}, {args.epochs} epochs, `{args.rec_train}`.", "",
        f"Search: {len(study.trials)} trials, {spent} epoch-runs (cap {args.max_epoch_runs}; the `beyond` grid: "
        f"{BEYOND_GRID_EPOCH_RUNS}, {spent / BEYOND_GRID_EPOCH_RUNS:.2f} of it); best trial {study.best_trial.number}"
        f" at {study.best_value:.2f}%. Re-training `best.yaml` took {len(top1)} x {args.epochs} epoch-runs more.", "",
        f"Best recipe re-trained, seeds {' '.join(map(str, args.seeds))}: {100 * mean:.2f} ± {100 * std:.2f}% "
        f"({', '.join(f'{100 * value:.2f}' for value in top1)}).", "",
        f"Best teacher-free row of the committed tables (Table {row['table']}, {row['label']}): "
        f"{100 * row['val_top1_mean']:.2f} ± {100 * row['val_top1_std']:.2f}% over {len(row['val_top1'])} seeds.", "",
        f"Difference: {100 * difference:+.2f} ± {100 * error:.2f} (standard error); "
        f"{'more' if difference > 2 * error else 'not more'} than twice the standard error above the row.", "",
        start_text(args), "", f"Search command: `{' '.join(['python', *search_command(args)[1:]])}`."])
    publish(args, markdown, result)


def report_time_to_target(args, study, spent, timed_runs):
    runs = [metrics for metrics, _ in timed_runs]
    seconds = [seconds_to(metrics, args.target_top1) for metrics in runs]
    walls = [wall for _, wall in timed_runs]
    reached = [value for value in walls if math.isfinite(value)]
    mean = statistics.mean(reached) if len(reached) == len(walls) else math.inf
    ratio = mean / args.gluoncv_seconds if args.gluoncv_seconds and math.isfinite(mean) else None
    result = dict(budget=dict(rec_train=args.rec_train, family=args.family, input_size=args.input_size,
                              epochs=args.epochs), target_top1=args.target_top1, search_epoch_runs=spent,
                  trials=len(study.trials), best_trial=study.best_trial.number, best_trial_seconds=study.best_value,
                  retrained_seeds=args.seeds, retrained_training_seconds=seconds, retrained_wall_seconds=walls,
                  retrained_mean_wall_seconds=mean, retrained_top1_at_stop=[final_top1(metrics) for metrics in runs],
                  gluoncv_seconds=args.gluoncv_seconds, ratio_to_gluoncv=ratio)
    markdown = "\n".join([
        f"# Recipe search for the training time to {args.target_top1:g}% top-1", "",
        f"Budget: `{args.family}` variants at {args.input_size}, {args.epochs} epochs, `{args.rec_train}`.", "",
        f"Search: {len(study.trials)} trials, {spent} epoch-runs; best trial {study.best_trial.number}: "
        f"{study.best_value:.1f} s.", "",
        f"Best recipe re-trained, seeds {' '.join(map(str, args.seeds))}, each stopped at {args.target_top1:g}%: "
        f"{', '.join(f'{value:.1f}' for value in walls)} s wall from the trainer's start (mean {mean:.1f} s; "
        f"training alone {', '.join(f'{value:.1f}' for value in seconds)} s).", "",
        f"GluonCV's script, its whole run: {args.gluoncv_seconds:.1f} s wall; ratio {ratio:.2f}." if ratio is not None
        else
        "GluonCV's script's wall time not given (--gluoncv-seconds): no ratio.", "",
        start_text(args), "", f"Search command: `{' '.join(['python', *search_command(args)[1:]])}`."])
    publish(args, markdown, result)


def publish(args, markdown, result):
    write_report(args.output_dir, "recipe_search", markdown, result)
    for name in SEARCH_FILES:
        source = os.path.join(args.work_dir, "search", name)
        if os.path.exists(source):
            shutil.copyfile(source, os.path.join(args.output_dir, name))
    print(markdown)


if __name__ == "__main__":
    main()
