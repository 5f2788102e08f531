"""``python -m tools.search --search-dir DIR --trials N --epochs E [--space KEY=SPEC ...] -- TRAINER FLAGS``: which
recipe of the bag of tricks is best for these data at this budget, searched with Optuna.

Every trial draws a recipe from the space of ``tools/search_space.py`` (the trainer's own flags; ``--space`` and
``--space-file`` fix, narrow or add any of them) with Optuna's TPE sampler, and trains it for the same E epochs
as ``train_imagenet.py TRAINER FLAGS RECIPE --save-dir DIR/trials/trial-NNNN --resume`` in a child process. Each
epoch's validation top-1 (of the weights' average under ``--model-ema``), read from the trial's
``metrics.jsonl``, goes to Optuna's successive-halving (or Hyperband) pruner, which stops recipes that trail the
others at the same epoch.

The study lives in ``--storage``: by default a SQLite file in DIR, nothing to start; ``postgresql://...`` lets
workers on several machines share one study (each runs this same command; DIR must then be one shared folder for
interrupted trials to resume from their checkpoints). Started again, the command goes on with the same study:
finished trials stay as they are. A trial whose worker died (``kill -9``, a lost machine) is failed and queued
again under a new number with the same recipe, and the new trial resumes the old one's folder from its newest
checkpoint; a failed trial never counts among the N. Two rules find such trials: Optuna's heartbeat (every
``--heartbeat-seconds``; a trial silent for twice that is failed by the next worker that starts a trial, on any
machine), and at the start of this command a look at the RUNNING trials of this machine whose worker process is
gone, which needs no waiting.

Written into DIR after every trial: ``search.md`` (every trial: recipe, top-1 per epoch, where it was pruned, wall
time; the compute spent against the full grid) and ``best.yaml`` (``train_imagenet.py --config DIR/best.yaml``
trains the best recipe again, into DIR/best-run); when the command ends, the plots ``history.png``,
``importances.png`` and ``best-trials.png``.
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings

import yaml

from benchmarks.ablation import decay_epochs
from benchmarks.children import TRAINER, child_environment
from engine.config import parse_config, replay_settings
from tools import search_space
from utils import checkpoint, plots
from utils.errors import Diverged, Interrupted, UserError, command_line_entry
from utils.files import atomic_write_text

POLL_SECONDS = 0.2
STORAGE_ATTEMPTS = 5
REFUSALS_IN_A_ROW = 10  # so many refused recipes one after the other: the space holds a flag the data cannot take
BEST_TRIALS_PLOTTED = 5
# The search sets these itself: every trial trains the same budget in its own folder, and resumes there.
SET_BY_SEARCH = ("--save-dir", "--num-epochs", "--resume", "--resume-params", "--resume-epoch", "--resume-states",
                 "--logging-file")
PR_SET_PDEATHSIG = 1


class RefusedRecipe(Exception):
    """The trainer refuses the drawn combination of flags (e.g. two tricks that do not go together)."""


class StopRequested(KeyboardInterrupt):
    """SIGTERM to the worker: stop as on Ctrl-C (Optuna fails the trial in flight), with SIGTERM's exit status."""

    signal_number = signal.SIGTERM


class TrainerFailed(Exception):
    """The trainer stopped otherwise than by finishing, diverging, refusing its flags or being pruned."""


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tools.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search-dir", required=True, help="the search's folder: trials, study, results")
    parser.add_argument("--trials", type=int, required=True,
                        help="finished (complete or pruned) trials the study should hold, over all its workers")
    parser.add_argument("--epochs", type=int, required=True, help="the budget: epochs every trial trains")
    parser.add_argument("--space", action="append", default=[], metavar="KEY=SPEC",
                        help="fix (KEY=VALUE), give choices (KEY=A,B,C) or a range (KEY=LOW:HIGH[:log]) of any "
                             "flag of train_imagenet.py; repeatable, after --space-file")
    parser.add_argument("--space-file", metavar="FILE.yaml",
                        help="`key: spec` a line: a value, a list of choices or {low: L, high: H, log: true}")
    parser.add_argument("--storage", help="Optuna RDB storage URL (default: sqlite:///SEARCH_DIR/study.db); "
                                          "postgresql://USER@HOST:PORT/DB for workers on several machines")
    parser.add_argument("--study", default="search", help="the study's name in the storage (default %(default)s)")
    parser.add_argument("--pruner", choices=("halving", "hyperband", "none"), default="halving",
                        help="Optuna's SuccessiveHalvingPruner (default), HyperbandPruner, or no pruning")
    parser.add_argument("--reduction-factor", type=int, default=3,
                        help="the pruner's eta: at each rung the best 1/eta go on (default %(default)s)")
    parser.add_argument("--startup-trials", type=int, default=5,
                        help="random trials before TPE models the results (default %(default)s)")
    parser.add_argument("--sampler-seed", type=int,
                        help="TPE's seed (default: random; give each worker its own, or they draw alike)")
    parser.add_argument("--max-epoch-runs", type=int,
                        help="stop starting trials once another full trial would take the compute spent (epochs "
                             "trained, pruned ones counted as far as they ran) past this")
    parser.add_argument("--max-hours", type=float,
                        help="the search's budget in machine hours, over all its workers and sittings: stop starting "
                             "trials once another full trial (at the seconds an epoch the trials took so far) would "
                             "take the trials' summed wall time past this")
    parser.add_argument("--heartbeat-seconds", type=int, default=30,
                        help="Optuna's heartbeat; a trial silent for twice this is failed and re-queued "
                             "(default %(default)s)")
    parser.add_argument("--target-top1", type=float, metavar="PERCENT",
                        help="objective: the training seconds (metrics.jsonl's epoch_seconds summed) until validation "
                             "top-1 reaches PERCENT, to minimize; a trial stops there, one that never does scores "
                             "infinity (default: the final top-1, to maximize)")
    parser.add_argument("--start-from", metavar="CONFIG.yaml",
                        help="a recipe you know (a config file of the trainer: configs/*.yaml, a run's args.yaml, an "
                             "earlier search's best.yaml), trained as the new study's first trial: its values of the "
                             "searched parameters, the space's of the fixed ones")
    parser.add_argument("--report-only", action="store_true", help="only write the results of the study so far")
    return parser


def split_argv(argv):
    """(the search's own arguments, the trainer's flags after ``--``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1:]
    return argv, []


def _flag_words(flags):
    return {word.split("=", 1)[0] for word in flags if word.startswith("--")}


def check_trainer_flags(trainer_flags, space, epochs):
    """The trainer's flags are valid (the trainer's own one-line errors) and leave the searched ones to the space."""
    given = _flag_words(trainer_flags)
    for word in SET_BY_SEARCH:
        if word in given:
            raise UserError(f"{word} is set by the search for every trial; leave it out of the trainer's flags")
    for parameter in space:
        if not parameter.is_fixed and {f"--{parameter.key}", f"--no-{parameter.key}"} & given:
            raise UserError(f"--{parameter.key} is searched; fix it with --space {parameter.key}=VALUE instead of "
                            "giving it to the trainer")
    with tempfile.TemporaryDirectory() as scratch:
        parse_config([*budget_flags(epochs), *trainer_flags, "--num-epochs", str(epochs), "--save-dir", scratch])


def budget_flags(epochs):
    """Ahead of the trainer's flags, which may override them: checkpoints every epoch, the newest kept, and the
    step decay at half and 0.8 of the budget (as the ablation places the paper's 30, 60, 90 of 120)."""
    return ["--save-frequency", "1", "--keep-checkpoints", "1", f"--lr-decay-epoch={decay_epochs(epochs)}"]


def sqlalchemy_url(url):
    """``url`` with its database driver: SQLAlchemy 2.1 reads postgresql:// with psycopg 3, while the search extra
    installs psycopg2's binary wheel."""
    return "postgresql+psycopg2://" + url[len("postgresql://"):] if url.startswith("postgresql://") else url


def open_storage(url, heartbeat_seconds):
    """Optuna's RDB storage at ``url``, with the heartbeat and the re-queueing of failed trials; one line if the
    URL is wrong or its server does not answer."""
    import optuna
    import sqlalchemy.exc
    shown = url
    url, engine_kwargs = sqlalchemy_url(url), {}
    if url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(STORAGE_ATTEMPTS):
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_seconds,
                    grace_period=2 * heartbeat_seconds,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Workers started together on a new database each create Optuna's tables; one wins, the others
                # collide with its rows and find the tables made when they try again.
                if attempt == STORAGE_ATTEMPTS - 1:
                    raise
                time.sleep(1 + attempt)
            except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
                reason = " ".join(str(getattr(error, "orig", None) or error).split())[:300]
                raise UserError(f"--storage {shown} does not answer ({reason}); check the URL and that its server "
                                "runs") from None


def _sampler_and_pruner(args):
    import optuna
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(n_startup_trials=args.startup_trials, seed=args.sampler_seed,
                                             multivariate=True, group=True, constant_liar=True)
    if args.pruner == "halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=args.reduction_factor)
    elif args.pruner == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=args.epochs,
                                                reduction_factor=args.reduction_factor)
    else:
        pruner = optuna.pruners.NopPruner()
    return sampler, pruner


def definition(args, space, trainer_flags):
    """What makes two workers' commands the same search: its budget, objective, space and trainer flags."""
    return json.dumps({"epochs": args.epochs, "target_top1": args.target_top1,
                       "space": [parameter.describe() for parameter in space], "trainer_flags": trainer_flags})


def start_params(args, space, trainer_flags):
    """``--start-from``'s recipe as the space's parameters (the budget and the trainer's flags as every trial's)."""
    with tempfile.TemporaryDirectory() as scratch:
        config = parse_config(["--config", args.start_from, *budget_flags(args.epochs), *trainer_flags,
                               "--num-epochs", str(args.epochs), "--save-dir", scratch])
    return search_space.start_params(config, space, f"--start-from {args.start_from}")


def open_study(args, space, trainer_flags):
    import optuna
    storage = open_storage(args.storage, args.heartbeat_seconds)
    sampler, pruner = _sampler_and_pruner(args)
    direction = "maximize" if args.target_top1 is None else "minimize"
    study = optuna.create_study(storage=storage, study_name=args.study, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    wanted, held = definition(args, space, trainer_flags), study.user_attrs.get("definition")
    if held is None:
        study.set_user_attr("definition", wanted)
    elif held != wanted:
        raise UserError(f"study {args.study!r} in {args.storage} was started with another budget, space or trainer "
                        "flags; give the same command again, or another --study to search anew")
    return study


# ---- processes: who runs a trial, and whether it still does ------------------------------------------------

def _start_time(pid):
    """The process's start time in clock ticks since boot (Linux), which tells it apart from a later one that got
    the same id; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid, start):
    return pid is not None and _start_time(pid) == start


def _this_process():
    return {"host": socket.gethostname(), "worker_pid": os.getpid(), "worker_start": _start_time(os.getpid())}


def _dies_with_parent():
    """In the trainer, before it runs: SIGTERM when the worker dies (Linux), so that a ``kill -9`` of the worker
    stops its trainer too (which saves a checkpoint on SIGTERM) instead of leaving it training alone."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the heartbeat still re-queues the trial; the orphan trains on until it ends


def requeue(study, trial):
    """Fail a RUNNING ``trial`` (a FrozenTrial) and queue it again, unless another worker already did."""
    import optuna
    from optuna.trial import TrialState
    try:
        if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    study._storage.get_heartbeat_stale_trial_callback()(study, study._storage.get_trial(trial._trial_id))


def requeue_dead_local_trials(study):
    """RUNNING trials of this machine whose worker process is gone: failed and queued again now, rather than after
    the heartbeat's grace period."""
    from optuna.trial import TrialState
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") == host and not _alive(attrs.get("worker_pid"), attrs.get("worker_start")):
            requeue(study, trial)


def requeue_interrupted(study, worker_pid):
    """After Ctrl-C or SIGTERM: this worker's trial, failed by Optuna, queued again."""
    from optuna.trial import TrialState
    retried = {number for trial in study.get_trials(deepcopy=False) for number in retry_history(trial)}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.user_attrs.get("worker_pid") == worker_pid and "refused" not in trial.user_attrs and \
                trial.number not in retried:
            study._storage.get_heartbeat_stale_trial_callback()(study, trial)


# ---- one trial ------------------------------------------------------------------------------------------------

def retry_history(trial):
    """The trials that ``trial`` retries, first the one that started its line (empty if it retries none), as
    Optuna's RetryHeartbeatStaleTrialCallback records them."""
    import optuna
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)  # the callback keeps its record in system_attrs
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial)


def trial_folder(search_dir, trial):
    """A retried trial trains on in the folder of the trial it retries, the first of its line."""
    history = retry_history(trial) or [trial.number]
    return os.path.join(search_dir, "trials", f"trial-{history[0]:04d}")


def objective_value(record):
    """The epoch's validation top-1 in percent: of the weights' average when the run keeps one."""
    return 100 * record.get("val_top1_ema", record["val_top1"])


def epoch_top1(trial):
    """The trial's validation top-1 per epoch (the pruner's figures, negated under --target-top1)."""
    return trial.user_attrs.get("top1") or [trial.intermediate_values[step] for step in sorted(
        trial.intermediate_values)]


def value_text(args, value):
    if args.target_top1 is None:
        return f"val top-1 {value:.2f}%"
    return f"{value:.1f} s to {args.target_top1:g}% top-1" if math.isfinite(value) else \
        f"never {args.target_top1:g}% top-1"


def _wait_for_earlier_trainer(study, trial):
    """A retried trial's folder may still have the earlier trainer in it, saving after its worker died."""
    history = retry_history(trial)
    if not history:
        return
    earlier = history[-1]
    attrs = study.trials[earlier].user_attrs
    if attrs.get("host") == socket.gethostname():
        deadline = time.time() + 120
        while _alive(attrs.get("trainer_pid"), attrs.get("trainer_start")) and time.time() < deadline:
            time.sleep(POLL_SECONDS)


def stop_trainer(process, folder, trial):
    """Kill the trainer of a trial that is decided (pruned, or at its target): it is never resumed. It may have
    finished more epochs than the ones the trial was decided on; they count as compute spent."""
    process.kill()
    process.wait()
    trial.set_user_attr("epochs_run", len(checkpoint.read_metrics(folder)))


def make_objective(args, space, trainer_flags):
    import optuna

    def objective(trial):
        settings = search_space.suggest(trial, space)
        folder = trial_folder(args.search_dir, trial)
        flags = [*budget_flags(args.epochs), *trainer_flags,
                 *search_space.trial_flags(settings), "--num-epochs", str(args.epochs), "--save-dir", folder]
        for key, value in {**_this_process(), "settings": settings, "folder": os.path.relpath(folder,
                           args.search_dir), "flags": flags}.items():
            trial.set_user_attr(key, value)
        try:
            parse_config(flags)
        except UserError as error:
            trial.set_user_attr("refused", str(error))
            raise RefusedRecipe(str(error)) from None
        _wait_for_earlier_trainer(trial.study, trial)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "stdout.txt"), "a") as log:
            # A session of its own: Ctrl-C reaches the worker alone, which stops the trainer with one SIGTERM (a
            # second signal, the terminal's SIGINT after it, would make the trainer give up its checkpoint).
            process = subprocess.Popen([sys.executable, TRAINER, *flags, "--resume"], stdout=log,
                                       stderr=subprocess.STDOUT, env=child_environment(),
                                       preexec_fn=_dies_with_parent, start_new_session=True)
        trial.set_user_attr("trainer_pid", process.pid)
        trial.set_user_attr("trainer_start", _start_time(process.pid))
        reported, top1 = 0, []
        try:
            while True:
                status = process.poll()
                metrics = checkpoint.read_metrics(folder)
                for record in metrics[reported:]:
                    reported += 1
                    top1.append(objective_value(record))
                    # Under --target-top1 the study minimizes: the pruner compares the negated top-1, epoch by epoch.
                    trial.report(top1[-1] if args.target_top1 is None else -top1[-1], reported)
                    trial.set_user_attr("epochs_run", reported)
                    trial.set_user_attr("top1", top1)
                    if args.target_top1 is not None and top1[-1] >= args.target_top1:
                        stop_trainer(process, folder, trial)  # reached: the rest of the budget is not needed
                        trial.set_user_attr("reached_at", reported)
                        return sum(record["epoch_seconds"] for record in metrics[:reported])
                    if trial.should_prune():
                        stop_trainer(process, folder, trial)
                        trial.set_user_attr("pruned_at", reported)
                        raise optuna.TrialPruned(f"pruned after epoch {reported}")
                if status is not None:
                    break
                time.sleep(POLL_SECONDS)
        except BaseException:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # it saves where it is, for the re-queued trial
                process.wait()
            raise
        if status == UserError.exit_status:
            with open(os.path.join(folder, "stdout.txt")) as log:
                reason = ([line[len("error: "):].strip() for line in log if line.startswith("error: ")] or
                          [f"train_imagenet.py exited with status {status}"])[-1]
            trial.set_user_attr("refused", reason)
            raise RefusedRecipe(reason)
        if status == Diverged.exit_status:
            trial.set_user_attr("diverged", reported + 1)
            raise optuna.TrialPruned(f"diverged in epoch {reported + 1}")
        if status != 0 or reported != args.epochs:
            raise TrainerFailed(f"trial {trial.number}: train_imagenet.py exited with status {status} after "
                                f"{reported} epochs; see {folder}/stdout.txt")
        return objective_value(metrics[-1]) if args.target_top1 is None else math.inf
    return objective


# ---- results --------------------------------------------------------------------------------------------------

def epoch_runs(trials):
    """Epochs trained over the study: per trial folder, the most any of its trials (a line of retries) reached."""
    spent = {}
    for trial in trials:
        folder = trial.user_attrs.get("folder")
        if folder:
            spent[folder] = max(spent.get(folder, 0), trial.user_attrs.get("epochs_run", 0))
    return sum(spent.values())


def trial_seconds(trial):
    """A trial's wall time, start to end (to now while it runs); 0 before it starts."""
    if trial.datetime_start is None:
        return 0.0
    return ((trial.datetime_complete or datetime.datetime.now()) - trial.datetime_start).total_seconds()


def budget_spent(trials, args):
    """Why another full trial would go past ``--max-epoch-runs`` or ``--max-hours``, or None while it would not.
    Hours are the trials' wall times summed (two workers at once spend two machine hours an hour); the next
    trial is reckoned at the seconds an epoch of the trials so far."""
    runs = epoch_runs(trials)
    if args.max_epoch_runs is not None and runs + args.epochs > args.max_epoch_runs:
        return f"another trial could take the compute past --max-epoch-runs {args.max_epoch_runs}"
    if args.max_hours is not None:
        seconds = sum(trial_seconds(trial) for trial in trials)
        next_trial = seconds / runs * args.epochs if runs else 0.0
        if seconds + next_trial > 3600 * args.max_hours:
            return (f"another trial (about {next_trial / 60:.0f} min) could take the {seconds / 3600:.2f} machine "
                    f"hours spent past --max-hours {args.max_hours:g}")
    return None


def _state(trial):
    from optuna.trial import TrialState
    attrs = trial.user_attrs
    if trial.state == TrialState.PRUNED:
        return f"diverged in epoch {attrs['diverged']}" if "diverged" in attrs else \
            f"pruned after epoch {attrs.get('pruned_at', len(trial.intermediate_values))}"
    if trial.state == TrialState.FAIL:
        return f"refused: {attrs['refused']}" if "refused" in attrs else "failed (interrupted), queued again"
    return trial.state.name.lower()


def _wall_seconds(trial):
    return f"{trial_seconds(trial):.0f}" if trial.datetime_start is not None else "-"


def _settings_text(settings):
    return ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in settings.items())


def report_markdown(study, args, space):
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    spent, grid = epoch_runs(trials), search_space.grid_runs(space)
    lines = [f"# Recipe search: {len(finished)} of {args.trials} trials finished, {args.epochs} epochs each", "",
             f"Study `{args.study}`; trainer flags: `{' '.join(args.trainer_flags) or '(the defaults)'}`.", ""]
    if complete:
        best = study.best_trial
        lines += [f"Best: trial {best.number}, **{value_text(args, best.value)}**: "
                  f"{_settings_text(best.user_attrs['settings'])}. Trained again by "
                  f"`python train_imagenet.py --config {os.path.join(args.search_dir, 'best.yaml')}`.", ""]
    lines += [f"Compute: {spent} epoch-runs (pruned trials counted as far as they ran), "
              f"{spent / args.epochs:.1f} full trials, "
              f"{sum(trial_seconds(t) for t in trials) / 3600:.2f} machine hours; the full grid of this space "
              f"(each range at {search_space.GRID_POINTS} points) is {search_space.grid_size_text(grid)} runs, "
              f"{search_space.grid_size_text(grid * args.epochs)} epoch-runs.", ""]
    searched = {parameter.key for parameter in space if not parameter.is_fixed}
    fixed = [parameter.describe() for parameter in space if parameter.is_fixed]
    lines += [f"Fixed for every trial: {', '.join(f'`{text}`' for text in fixed) or 'nothing'}.", ""]
    rows = [[str(t.number), _state(t), _settings_text({key: value for key, value in t.user_attrs.get(
                 "settings", {}).items() if key in searched}),
             ", ".join(f"{value:.2f}" for value in epoch_top1(t)) or "-",
             str(t.user_attrs["pruned_at"]) if "pruned_at" in t.user_attrs else "-", _wall_seconds(t)]
            for t in trials]
    header = ["trial", "state", "parameters", "val top-1 % per epoch", "pruned at epoch", "wall s"]
    if args.target_top1 is not None:
        header[1:2] = ["state", f"training s to {args.target_top1:g}%"]
        for trial, row in zip(trials, rows):
            row[2:2] = [f"{trial.value:.1f}" if trial.value is not None and math.isfinite(trial.value) else "-"]
    lines += plots.markdown_table(header, rows)
    lines += ["", "Searched: " + "; ".join(f"`{parameter.describe()}`" for parameter in space
                                           if not parameter.is_fixed) + "."]
    return "\n".join(lines) + "\n"


def write_best_yaml(study, args):
    """The best complete trial's settings as a config file, its --save-dir DIR/best-run: ``--config`` replays it."""
    from optuna.trial import TrialState
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return
    best = study.best_trial
    flags = [*best.user_attrs["flags"][:-1], os.path.join(os.path.abspath(args.search_dir), "best-run")]
    settings = replay_settings(parse_config(flags))
    atomic_write_text(os.path.join(args.search_dir, "best.yaml"),
                      f"# trial {best.number} of study {args.study}: {value_text(args, best.value)} in "
                      f"{args.epochs} epochs\n" + yaml.safe_dump(settings, sort_keys=False))


def write_plots(study, search_dir, target_top1=None):
    """Optuna's optimization history and parameter importances, and top-1 per epoch of the best trials."""
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_plots
    plt = plots.pyplot()
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # PED-ANOVA's, when too few trials tell the parameters apart
        if complete:
            axis = optuna_plots.plot_optimization_history(study, target_name="val top-1 %" if target_top1 is None
                                                          else f"training s to {target_top1:g}% top-1")
            plots.save_figure(axis.figure, os.path.join(search_dir, "history.png"))
        try:
            # PED-ANOVA needs nothing beyond Optuna (the default, fANOVA, needs scikit-learn).
            axis = optuna_plots.plot_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
            plots.save_figure(axis.figure, os.path.join(search_dir, "importances.png"))
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError):
            plt.close("all")  # too few complete trials, or none that differ, for importances
    finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                if epoch_top1(t)]
    best = sorted(finished, key=lambda t: -max(epoch_top1(t)))[:BEST_TRIALS_PLOTTED]
    if best:
        figure, (axis,) = plots.panels(1)
        for trial in best:
            plots.plot_per_epoch(axis, [epoch_top1(trial)], f"trial {trial.number} ({_state(trial)})")
        axis.set(xlabel="epoch", ylabel="val top-1 %", title=f"the {len(best)} best trials")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.legend(fontsize=8)
        plots.save_figure(figure, os.path.join(search_dir, "best-trials.png"))


def write_results(study, args, space, with_plots=True):
    atomic_write_text(os.path.join(args.search_dir, "search.md"), report_markdown(study, args, space))
    write_best_yaml(study, args)
    if with_plots:
        write_plots(study, args.search_dir, args.target_top1)


# ---- the command ------------------------------------------------------------------------------------------------

def progress_line(study, trial, args):
    from optuna.trial import TrialState
    value = f", {value_text(args, trial.value)}" if trial.state == TrialState.COMPLETE else ""
    retry = (retry_history(trial) or [None])[-1]
    best = ""
    if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        best = f"; best so far trial {study.best_trial.number}, {value_text(args, study.best_value)}"
    resumes = f" (resumes trial {retry})" if retry is not None else ""
    return (f"{time.strftime('%H:%M:%S')} trial {trial.number}{resumes}: "
            f"{_state(trial)}{value}, {_wall_seconds(trial)} s; {epoch_runs(study.get_trials(deepcopy=False))} "
            f"epoch-runs spent{best}")


def run_search(study, args, space):
    import optuna
    from optuna.trial import TrialState
    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished_states))
    if done >= args.trials:
        return
    spent = budget_spent(study.get_trials(deepcopy=False), args)
    if spent:
        print(f"{spent}: no trial started", flush=True)
        return
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=args.trials, initial=done, desc="trials", unit="trial")
    say = bar.write if bar else (lambda text: print(text, flush=True))

    refusals = []

    def after_trial(study, trial):
        say(progress_line(study, trial, args))
        refusals[:] = [*refusals, trial.user_attrs["refused"]] if "refused" in trial.user_attrs else []
        if bar and trial.state in finished_states:
            bar.update(1)
        write_results(study, args, space, with_plots=False)  # drawn when the worker stops: seconds each time
        spent = budget_spent(study.get_trials(deepcopy=False), args)
        if spent:
            say(f"{spent}: stopping")
            study.stop()
        if len(refusals) >= REFUSALS_IN_A_ROW:
            study.stop()

    # Optuna logs every refused recipe with a traceback; the progress line says what the trainer refused.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study.optimize(make_objective(args, space, args.trainer_flags), catch=(RefusedRecipe,),
                       callbacks=[optuna.study.MaxTrialsCallback(args.trials, states=finished_states), after_trial])
    finally:
        if bar:
            bar.close()
    if len(refusals) >= REFUSALS_IN_A_ROW:
        raise UserError(f"the trainer refused {len(refusals)} recipes in a row, the last with: {refusals[-1]}; fix or "
                        "narrow the parameter it names with --space")


def _stop_on_sigterm(signal_number, frame):
    raise StopRequested  # Optuna fails the trial in flight; the worker then queues it again


@command_line_entry
def main(argv=None):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    own, trainer_flags = split_argv(argv)
    args = build_parser().parse_args(own)
    args.trainer_flags = trainer_flags
    if args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} is too small a budget: every trial trains at least one epoch")
    if args.trials < 1:
        raise UserError(f"--trials {args.trials}: give at least one trial")
    if args.max_epoch_runs is not None and args.max_epoch_runs < args.epochs:
        raise UserError(f"--max-epoch-runs {args.max_epoch_runs} is less than one trial of --epochs {args.epochs}")
    if args.max_hours is not None and args.max_hours <= 0:
        raise UserError(f"--max-hours {args.max_hours:g}: give the search's budget in hours, above 0")
    overrides = search_space.read_space_file(args.space_file) if args.space_file else {}
    overrides.update(search_space.parse_cli_spec(text) for text in args.space)
    space = search_space.fit_budget(search_space.build_space(overrides), args.epochs)
    check_trainer_flags(trainer_flags, space, args.epochs)
    os.makedirs(args.search_dir, exist_ok=True)
    args.storage = args.storage or f"sqlite:///{os.path.abspath(os.path.join(args.search_dir, 'study.db'))}"
    start = start_params(args, space, trainer_flags) if args.start_from else None
    study = open_study(args, space, trainer_flags)
    if start is not None and not study.trials:
        study.enqueue_trial(start)
    if not args.report_only:
        requeue_dead_local_trials(study)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        try:
            run_search(study, args, space)
        except KeyboardInterrupt as stop:
            requeue_interrupted(study, os.getpid())
            write_results(study, args, space)
            raise Interrupted("the trial in flight saved its checkpoint and is queued again: run the same command to "
                              "go on", getattr(stop, "signal_number", signal.SIGINT)) from None
        except TrainerFailed as failure:
            requeue_interrupted(study, os.getpid())
            write_results(study, args, space)
            raise UserError(f"{failure}; the trial is queued again: run the same command to go on") from None
    write_results(study, args, space)
    print(f"results in {os.path.join(args.search_dir, 'search.md')}")


if __name__ == "__main__":
    sys.exit(main())
