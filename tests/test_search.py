"""``python -m tools.search``: the declared space, bad input in one line, a search end to end on SQLite, two workers
on a real PostgreSQL server, and a worker killed with SIGKILL whose trial resumes from its checkpoint.

Trials train MobileNet 0.25 on tests/conftest.py's tiny set (a few seconds an epoch), in MXNet's deterministic mode,
so that ``best.yaml``'s replay gives the trial's figures exactly.
"""
import datetime
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.helpers import DETERMINISTIC, REPO
from tools import search, search_space
from utils import checkpoint
from utils.errors import UserError

# Everything but the rate, its schedule and label smoothing fixed: three parameters, one of them behind a switch.
SPACE = {"model": "mobilenet0.25", "optimizer": "nag", "last-gamma": False, "warmup-epochs": 0, "no-wd": False,
         "mixup": False, "cutmix": 0, "reprob": 0, "model-ema": False, "drop-path": 0, "bce-loss": False,
         "auto-augment": "none", "ra-reps": 1, "lr-base": {"low": 0.05, "high": 0.8, "log": True}}


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return str(path)


def trainer_flags(tiny_set):
    return ["--rec-train", str(tiny_set / "train.rec"), "--rec-val", str(tiny_set / "val.rec"), "--input-size", "24",
            "--batch-size", "16", "-j", "1"]


def search_argv(search_dir, space_file, tiny_set, *extra, trials=2, epochs=2, trainer_extra=()):
    return ["--search-dir", str(search_dir), "--trials", str(trials), "--epochs", str(epochs), "--space-file",
            space_file, "--startup-trials", "1", *extra, "--", *trainer_flags(tiny_set), *trainer_extra]


def run_search(argv, **kwargs):
    return subprocess.run([sys.executable, "-m", "tools.search", *argv], cwd=REPO, env=DETERMINISTIC,
                          capture_output=True, text=True, timeout=240, **kwargs)


def load_study(search_dir, storage=None):
    return optuna.load_study(study_name="search",
                             storage=search.sqlalchemy_url(storage or f"sqlite:///{search_dir}/study.db"))


# ---- the space ---------------------------------------------------------------------------------------------------

def test_cutmix_switch_is_drawn_only_with_mixup_and_cutmix():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, study = search_space.build_space({}), optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        settings = search_space.suggest(trial, space)
        has_switch = "mixup-switch-prob" in trial.params
        assert has_switch == (settings["mixup"] and settings["cutmix"] > 0)
        assert ("lr-base" in settings) == (settings["optimizer"] == "nag")
        assert ("lr" in settings) == ("wd" in settings) == (settings["optimizer"] == "lamb")
        seen.add(has_switch)
        study.tell(trial, 0.0)
    assert seen == {False, True}


def test_fixing_a_parent_removes_what_depends_on_it_and_the_grid_counts_the_rest():
    overrides = dict(search_space.parse_cli_spec(text) for text in (
        "optimizer=nag", "mixup=false", "model=resnet18_v1d", "lr-mode=cosine", "last-gamma=true", "no-wd=true",
        "label-smoothing=0.1", "cutmix=0", "reprob=0", "model-ema=false", "drop-path=0", "bce-loss=false",
        "ra-reps=1", "warmup-epochs=1", "auto-augment=none,ta_wide"))
    space = search_space.build_space(overrides)
    assert [parameter.key for parameter in space if not parameter.is_fixed] == ["lr-base", "auto-augment"]
    assert search_space.grid_runs(space) == 3 * 2  # a range at 3 points, 2 policies
    # With mixup and CutMix free: CutMix off (1) or 3 alphas, and with mixup on (3 alphas x 3 last epochs) CutMix's
    # 3 alphas x 3 switches instead.
    mixing = search_space.build_space(
        {**overrides, **dict(map(search_space.parse_cli_spec, ["mixup=false,true", "cutmix=0.2:1"]))})
    assert search_space.grid_runs(mixing) == 6 * ((1 + 3) + 3 * 3 * (1 + 3 * 3))


def test_a_known_recipe_is_the_spaces_parameters_or_one_line_where_it_lies_outside():
    from engine.config import parse_config
    space = search_space.fit_budget(search_space.build_space({}), 6)
    config = parse_config(["--rec-train", "t.rec", "--rec-val", "v.rec", "--model", "resnet18_v1d", "--lr-mode",
                           "cosine", "--label-smoothing", "--mixup", "--mixup-off-epoch", "1", "--warmup-epochs", "1",
                           "--num-epochs", "6", "--lr-decay-epoch", "3,5"])
    assert search_space.start_params(config, space, "here") == {
        "model": "resnet18_v1d", "optimizer": "nag", "lr-base": 0.1, "lr-mode": "cosine", "warmup-epochs": 1,
        "last-gamma": False, "no-wd": False, "with-label-smoothing": True, "label-smoothing": 0.1, "mixup": True,
        "mixup-alpha": 0.2, "mixup-off-epoch": 1, "with-cutmix": False, "with-reprob": False, "model-ema": False,
        "with-drop-path": False, "bce-loss": False, "auto-augment": "none", "ra-reps": 1}
    narrow = search_space.build_space(dict([search_space.parse_cli_spec("lr-base=0.2:0.8")]))
    with pytest.raises(UserError, match=r"^here: its lr-base 0.1 lies outside the space \(0.2:0.8\); widen it with "
                                        r"--space lr-base=...$"):
        search_space.start_params(config, narrow, "here")
    fixed = search_space.build_space(dict(map(search_space.parse_cli_spec, ["model=resnet18_v1", "mixup=false"])))
    assert "model" not in search_space.start_params(config, fixed, "here")  # the space's value, every trial's
    assert "mixup-alpha" not in search_space.start_params(config, fixed, "here")


def test_trial_flags_are_the_trainers_spelling():
    assert search_space.trial_flags({"mixup": True, "no-wd": False, "lr-base": 0.125, "model": "resnet18_v1d",
                                     "auto-augment": "none"}) == [
        "--mixup", "--no-no-wd", "--lr-base=0.125", "--model=resnet18_v1d"]


def finished_trial(folder, epochs_run, minutes):
    trial = optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={"folder": folder, "epochs_run": epochs_run},
                                      intermediate_values={1: 50.0})
    trial.datetime_start = datetime.datetime(2026, 1, 1)
    trial.datetime_complete = trial.datetime_start + datetime.timedelta(minutes=minutes)
    return trial


def test_the_budget_stops_the_search_before_a_trial_that_would_pass_it():
    # Two trials of 6 and 2 epochs took 40 and 20 minutes: 7.5 minutes an epoch, so a 6-epoch trial is reckoned
    # at 45 minutes. Spent: 8 epoch-runs, one hour.
    trials = [finished_trial("trials/trial-0000", 6, 40), finished_trial("trials/trial-0001", 2, 20)]
    args = search.build_parser().parse_args(["--search-dir", "x", "--trials", "9", "--epochs", "6"])
    assert search.budget_spent(trials, args) is None
    args.max_hours = 1.75  # 60 + 45 minutes fit
    assert search.budget_spent(trials, args) is None
    args.max_hours = 1.7
    assert search.budget_spent(trials, args) == \
        "another trial (about 45 min) could take the 1.00 machine hours spent past --max-hours 1.7"
    args.max_hours, args.max_epoch_runs = None, 13
    assert search.budget_spent(trials, args) == "another trial could take the compute past --max-epoch-runs 13"
    args.max_epoch_runs = 14
    assert search.budget_spent(trials, args) is None


# ---- bad input: one line, the study untouched --------------------------------------------------------------------

def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def error_line(capsys, argv):
    assert search.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("extra, message", [
    (["--space", "lr-bse=0.1:0.2"], "--space lr-bse=0.1:0.2: unknown parameter 'lr-bse'; did you mean lr-base?"),
    (["--space", "label-smoothing=0.2:0.1"], "label-smoothing's range 0.2:0.1 is empty; give LOW < HIGH"),
    (["--space", "ra-reps="], "ra-reps has no values"),
    (["--space", "reprob=0.5:1.5"], "reprob 1.5 is out of its range; it must be in [0, 1]"),
    (["--max-hours", "0"], "--max-hours 0: give the search's budget in hours, above 0"),
    (["--epochs", "0"], "--epochs 0 is too small a budget: every trial trains at least one epoch"),
    (["--storage", "postgresql://postgres@127.0.0.1:{port}/nothing"], "does not answer (connection to server at"),
    (["--epochs", "3"], "study 'search' in sqlite:///"),  # another budget than the study's
])
def test_bad_input_is_one_line_and_leaves_the_study_whole(capsys, tmp_path, tiny_set, space_file, extra, message):
    search_dir = tmp_path / "search"
    assert search.main(search_argv(search_dir, space_file, tiny_set, "--report-only")) == 0
    study = load_study(search_dir)
    study.add_trial(optuna.trial.create_trial(params={"lr-base": 0.1}, value=50.0, distributions={
        "lr-base": optuna.distributions.FloatDistribution(0.05, 0.8, log=True)}))
    capsys.readouterr()
    argv = search_argv(search_dir, space_file, tiny_set)
    at = argv.index("--")
    argv[at:at] = [word.format(port=free_port()) for word in extra]
    assert message in error_line(capsys, argv)
    after = load_study(search_dir)
    assert [(trial.state, trial.value, trial.params) for trial in after.trials] == [
        (TrialState.COMPLETE, 50.0, {"lr-base": 0.1})]
    assert after.user_attrs == study.user_attrs


def test_a_searched_flag_among_the_trainers_is_refused(capsys, tmp_path, tiny_set, space_file):
    argv = [*search_argv(tmp_path / "search", space_file, tiny_set), "--lr-base", "0.1"]
    assert error_line(capsys, argv) == ("error: --lr-base is searched; fix it with --space lr-base=VALUE instead of "
                                        "giving it to the trainer")


# ---- end to end ----------------------------------------------------------------------------------------------------

def test_sqlite_search_end_to_end_and_best_yaml_replays_it(tmp_path, tiny_set, space_file):
    search_dir = tmp_path / "search"
    argv = search_argv(search_dir, space_file, tiny_set, "--sampler-seed", "0")
    result = run_search(argv)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load_study(search_dir)
    trials = study.trials
    assert [trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in trials] == [True, True]
    assert len([line for line in result.stdout.splitlines() if " trial " in line]) == 2
    spent = 0
    for trial in trials:
        metrics = checkpoint.read_metrics(os.path.join(search_dir, "trials", f"trial-{trial.number:04d}"))
        reported = trial.intermediate_values
        assert reported == {index + 1: 100 * record["val_top1"] for index, record in enumerate(metrics[:len(reported)])}
        # A pruned trial's trainer may finish another epoch before it is stopped: counted as spent.
        assert len(reported) == (2 if trial.state == TrialState.COMPLETE else trial.user_attrs["pruned_at"])
        assert len(metrics) == trial.user_attrs["epochs_run"] >= len(reported)
        spent += len(metrics)
        args = yaml.safe_load(open(checkpoint.args_yaml_path(os.path.join(search_dir, trial.user_attrs["folder"]))))
        assert args["lr-base"] == trial.params["lr-base"] and args["model"] == "mobilenet0.25"
        assert args["label-smoothing"] == trial.user_attrs["settings"]["label-smoothing"]
    report = (search_dir / "search.md").read_text()
    assert f"Compute: {spent} epoch-runs" in report
    assert "the full grid of this space (each range at 3 points) is 24 runs, 48 epoch-runs" in report
    assert [line.split(" | ")[0] for line in report.splitlines() if line.startswith("| ") and "---" not in line][1:] \
        == [f"| {trial.number}" for trial in trials]
    for name in ("history.png", "best-trials.png"):
        assert (search_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = max((trial for trial in trials if trial.state == TrialState.COMPLETE), key=lambda trial: trial.value)
    replay = subprocess.run([sys.executable, "train_imagenet.py", "--config", str(search_dir / "best.yaml")],
                            cwd=REPO, env=DETERMINISTIC, capture_output=True, text=True, timeout=240)
    assert replay.returncode == 0, replay.stderr[-3000:]
    replayed = [100 * record["val_top1"] for record in checkpoint.read_metrics(str(search_dir / "best-run"))]
    assert replayed == [best.intermediate_values[step] for step in (1, 2)]
    # Started again: the study has its trials, none is run again.
    again = run_search(argv)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [(t.number, t.state, t.value) for t in load_study(search_dir).trials] == \
        [(t.number, t.state, t.value) for t in trials]


# ---- a real PostgreSQL, two workers --------------------------------------------------------------------------------

def postgres_binaries():
    """The folder of initdb, pg_ctl and postgres: Debian's, or from PATH; Debian's package installed where missing."""
    def found():
        folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        folders += [os.path.dirname(path) for path in filter(None, [shutil.which("initdb")])]
        return next((folder for folder in folders if all(os.path.exists(os.path.join(folder, name))
                                                         for name in ("initdb", "pg_ctl", "postgres"))), None)
    if found() is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], capture_output=True, timeout=600,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return found()


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server on a free port of 127.0.0.1, in a temporary folder of its own, run as the unprivileged
    user postgres when the tests run as root (the server refuses root); stopped and removed at the end."""
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL here: initdb, pg_ctl and postgres not found, and `apt-get install postgresql` "
                    "could not install them")
    folder = tempfile.mkdtemp(prefix="search-postgres-")  # not under pytest's folders, which only we may enter
    as_user = []
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip("running as root, and there is no user postgres to start the server as")
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(folder, "data"), free_port()
    try:
        subprocess.run([*as_user, os.path.join(binaries, "initdb"), "-D", data, "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, os.path.join(binaries, "pg_ctl"), "-D", data, "-l",
                        os.path.join(folder, "server.log"), "-w", "-o",
                        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=120)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, os.path.join(binaries, "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_one_study_on_postgresql(tmp_path, tiny_set, space_file, postgres_url):
    search_dir = tmp_path / "search"
    workers = [subprocess.Popen(
        [sys.executable, "-m", "tools.search", *search_argv(search_dir, space_file, tiny_set, "--storage", postgres_url,
                                                            "--sampler-seed", str(seed), trials=2, epochs=1)],
        cwd=REPO, env=DETERMINISTIC, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outputs = [worker.communicate(timeout=240) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    trials = load_study(search_dir, postgres_url).trials
    # Each worker stops once the study holds 2 finished trials; one may finish a trial it started before that.
    assert 2 <= len(trials) <= 3
    assert all(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in trials)
    assert {trial.user_attrs["worker_pid"] for trial in trials} == {worker.pid for worker in workers}
    assert sorted(trial.user_attrs["folder"] for trial in trials) == \
        sorted(os.path.join("trials", name) for name in os.listdir(search_dir / "trials"))
    for trial in trials:
        assert len(checkpoint.read_metrics(str(search_dir / trial.user_attrs["folder"]))) == 1


# ---- kill -9 -------------------------------------------------------------------------------------------------------

def test_kill_9_of_the_worker_resumes_its_trial_from_the_checkpoint(tmp_path, tiny_set, space_file):
    search_dir = tmp_path / "search"
    # An epoch of the tiny set takes a few tenths of a second whatever the crop: six of them, and a kill as soon as
    # the first is logged, put the kill inside the run on a fast machine too.
    argv = search_argv(search_dir, space_file, tiny_set, "--heartbeat-seconds", "2", trials=1, epochs=6,
                       trainer_extra=("--input-size", "96"))
    worker = subprocess.Popen([sys.executable, "-m", "tools.search", *argv], cwd=REPO, env=DETERMINISTIC,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = search_dir / "trials" / "trial-0000"
    deadline = time.time() + 180
    while not checkpoint.read_metrics(str(folder)) and time.time() < deadline and worker.poll() is None:
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert 1 <= len(checkpoint.read_metrics(str(folder))) < 6
    result = run_search(argv)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_study(search_dir).trials
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trials[1]) == [0]
    assert trials[1].params == trials[0].params
    assert trials[1].user_attrs["folder"] == os.path.join("trials", "trial-0000")
    metrics = checkpoint.read_metrics(str(folder))
    assert [record["epoch"] for record in metrics] == list(range(6))
    assert "Resuming from" in (folder / "train.log").read_text()
    assert sorted(trials[1].intermediate_values) == list(range(1, 7))
    assert not os.path.exists(search_dir / "trials" / "trial-0001")
    assert "Compute: 6 epoch-runs" in (search_dir / "search.md").read_text()
    assert json.loads(json.dumps(trials[1].value)) == 100 * metrics[-1]["val_top1"]


# ---- the benchmark's bookkeeping (its search runs in benchmarks/recipe_search.py, not here) ------------------------

def test_the_benchmark_starts_from_the_best_teacher_free_row_and_spends_a_third_of_the_beyond_grid(tmp_path):
    from benchmarks import recipe_search
    row = recipe_search.best_teacher_free_row(recipe_search.COMMITTED_TABLES)
    assert (row["table"], row["label"]) == ("6", "+ cosine decay")
    assert "--teacher" not in row["flags"] and len(row["val_top1"]) == 3
    args = recipe_search.build_parser().parse_args(["--rec-train", "t.rec", "--rec-val", "v.rec", "--work-dir",
                                                    str(tmp_path), "--output-dir", "o"])
    start = yaml.safe_load(open(recipe_search.start_recipe(args)))
    assert {key: start[key] for key in ("model", "batch-size", "lr-mode", "label-smoothing", "mixup", "input-size")} \
        == {"model": "resnet18_v1d", "batch-size": 256, "lr-mode": "cosine", "label-smoothing": 0.0, "mixup": False,
            "input-size": 32}
    command = recipe_search.search_command(args)
    assert command[command.index("--start-from") + 1] == str(tmp_path / "start.yaml")
    assert command[command.index("--max-epoch-runs") + 1] == "60" and command[command.index("--epochs") + 1] == "6"
    assert "model=resnet18_v1,resnet18_v1b,resnet18_v1c,resnet18_v1d" in command


FAKE_TRAINER = """import json, os, sys, time
folder = sys.argv[sys.argv.index('--save-dir') + 1]
for top1 in (0.3, 0.7, 0.8):
    time.sleep(0.3)
    with open(os.path.join(folder, 'metrics.jsonl'), 'a') as handle:
        handle.write(json.dumps(dict(val_top1=top1, epoch_seconds=0.25)) + '\\n')
"""


def test_the_benchmarks_retraining_to_the_target_is_one_timed_run_stopped_there(tmp_path, monkeypatch):
    from benchmarks import recipe_search
    trainer = tmp_path / "trainer.py"
    trainer.write_text(FAKE_TRAINER)
    monkeypatch.setattr(recipe_search, "retrain_command",
                        lambda args, seed, save_dir: [sys.executable, str(trainer), "--save-dir", save_dir])
    args = recipe_search.build_parser().parse_args(["--rec-train", "t.rec", "--rec-val", "v.rec", "--work-dir",
                                                    str(tmp_path), "--output-dir", "o", "--target-top1", "65"])
    metrics, wall = recipe_search.retrain_to_target(args, 0)
    assert [record["val_top1"] for record in metrics] == [0.3, 0.7] and 0.6 < wall < 5
    assert recipe_search.seconds_to(metrics, 65) == 0.5
    trainer.write_text("raise SystemExit('run again')")
    assert recipe_search.retrain_to_target(args, 0) == (metrics, wall)  # timed once, read after
    args.target_top1 = 90  # never reached: infinity
    (tmp_path / "best-seed1-to-target").mkdir()
    trainer.write_text(FAKE_TRAINER)
    assert recipe_search.retrain_to_target(args, 1)[1] == float("inf")


def test_time_to_target_stops_a_trial_once_it_reaches_the_top1(tmp_path, tiny_set, space_file):
    """--target-top1: the objective is the training seconds until the target, and the trial stops there; the
    first trial is --start-from's recipe."""
    search_dir, recipe = tmp_path / "search", tmp_path / "recipe.yaml"
    recipe.write_text("lr-base: 0.3\nlabel-smoothing: 0.15\nwd: 0.0002\n")  # wd: not searched, not used
    result = run_search(search_argv(search_dir, space_file, tiny_set, "--target-top1", "30", "--start-from",
                                    str(recipe), trials=1))
    assert result.returncode == 0, result.stderr[-3000:]
    trial, = load_study(search_dir).trials
    assert trial.params == {"lr-base": 0.3, "lr-mode": "step", "with-label-smoothing": True, "label-smoothing": 0.15}
    assert "--lr-base=0.3" in trial.user_attrs["flags"] and "--wd" not in " ".join(trial.user_attrs["flags"])
    metrics = checkpoint.read_metrics(os.path.join(search_dir, trial.user_attrs["folder"]))
    assert 100 * metrics[0]["val_top1"] >= 30  # three classes: chance is 33.3%
    assert trial.value == metrics[0]["epoch_seconds"] and trial.user_attrs["reached_at"] == 1
    # Killed once it got there; an epoch it finished meanwhile counts as spent.
    assert trial.user_attrs["epochs_run"] == len(metrics)
    assert f"Compute: {len(metrics)} epoch-runs" in (search_dir / "search.md").read_text()
    assert f"{trial.value:.1f} s to 30% top-1" in (search_dir / "search.md").read_text()


def test_sigterm_stops_the_worker_after_its_trainer_saved_and_queues_the_trial_again(tmp_path, tiny_set, space_file):
    search_dir = tmp_path / "search"
    # Four epochs: the signal, sent once epoch 0 is logged, lands with three still to train however fast the machine
    # (with two, an idle machine finished the last one first).
    argv = search_argv(search_dir, space_file, tiny_set, trials=1, epochs=4, trainer_extra=("--input-size", "96"))
    worker = subprocess.Popen([sys.executable, "-m", "tools.search", *argv], cwd=REPO, env=DETERMINISTIC,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    folder = search_dir / "trials" / "trial-0000"
    deadline = time.time() + 180
    while not checkpoint.read_metrics(str(folder)) and time.time() < deadline and worker.poll() is None:
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("stopped: the trial in flight saved its checkpoint and is queued")
    trials = load_study(search_dir).trials
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trials[1]) == [0]
    assert "stopped: SIGTERM" in (folder / "stdout.txt").read_text()  # the trainer saved where it was
