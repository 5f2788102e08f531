"""The ablation grid's bookkeeping: which runs are shared, cached and summed up (no training here)."""
import json
import os
import subprocess

import pytest

from benchmarks import ablation
from benchmarks.children import benchmark_command, child_environment


def parse(tmp_path, *extra):
    return ablation.build_parser().parse_args(["--rec-train", "/data/train.rec", "--rec-val", "/data/val.rec",
                                               "--work-dir", str(tmp_path / "runs"),
                                               "--output-dir", str(tmp_path / "out"), *extra])


def write_finished_run(args, row, seed, top1_per_epoch):
    save_dir = ablation.run_dir(args, row.flags, seed)
    os.makedirs(save_dir)
    with open(os.path.join(save_dir, "metrics.jsonl"), "w") as handle:
        for epoch, top1 in enumerate(top1_per_epoch):
            handle.write(json.dumps(dict(epoch=epoch, val_top1=top1, val_top5=0.9)) + "\n")


def test_rows_shared_by_two_tables_are_one_run(tmp_path):
    args = parse(tmp_path, "--tables", "4", "5", "6")
    rows = {(row.table, row.label): row for row in ablation.grid(args, "teacher.params")}
    assert (ablation.run_dir(args, rows["4", "+ no bias decay"].flags, 0)
            == ablation.run_dir(args, rows["5", "resnet18_v1b"].flags, 0))
    assert (ablation.run_dir(args, rows["5", "resnet18_v1d"].flags, 0)
            == ablation.run_dir(args, rows["6", "efficient resnet18_v1d"].flags, 0))
    assert len({ablation.run_dir(args, row.flags, 0) for row in rows.values()}) == 13


def test_table_5_can_run_a_bottleneck_family_and_says_when_b_is_no_tweak(tmp_path):
    args = parse(tmp_path, "--tables", "4", "5", "6", "--tweaks-family", "resnet26")
    rows = ablation.grid(args, "teacher.params")
    assert [row.label for row in rows if row.table == "5"] == [f"resnet26_v1{v}" for v in ("", "b", "c", "d")]
    assert len({ablation.run_dir(args, row.flags, 0) for row in rows}) == 15
    results = ablation.summarize(args, rows)
    assert "same network" not in ablation.markdown(args, results, "teacher.params")
    args.tweaks_family = None
    assert "`resnet18_v1b` is the same network as `resnet18_v1`" in ablation.markdown(args, results, "t.params")


@pytest.mark.parametrize("flag", ["--family", "--tweaks-family"])
def test_a_family_that_is_no_resnet_depth_is_refused_before_any_run(tmp_path, capsys, flag):
    with pytest.raises(SystemExit):
        parse(tmp_path, flag, "resnet19")
    assert f"argument {flag}: invalid choice: 'resnet19' (choose from 'resnet18', 'resnet26'" in capsys.readouterr().err


def test_run_folders_keep_their_names(tmp_path):
    # A finished run is found again by its folder's name; a change to the hashed command would retrain it.
    args = parse(tmp_path, "--tables", "gluoncv")
    baseline = ablation.grid(args, None)[0]
    assert os.path.basename(ablation.run_dir(args, baseline.flags, 0)) == "resnet18_v1d-seed0-c1e63fd581"


def test_summary_gives_mean_std_and_delta_of_finished_seeds(tmp_path):
    args = parse(tmp_path, "--tables", "gluoncv", "--num-epochs", "2")
    baseline, tricks = ablation.grid(args, None)
    for seed, final in zip((0, 1, 2), (0.50, 0.54, 0.52)):
        write_finished_run(args, baseline, seed, [0.3, final])
    for seed, final in zip((0, 1), (0.60, 0.64)):
        write_finished_run(args, tricks, seed, [0.4, final])
    write_finished_run(args, tricks, 2, [0.4])  # unfinished: one of two epochs

    first, second = ablation.summarize(args, [baseline, tricks])
    assert first["seeds"] == [0, 1, 2] and second["seeds"] == [0, 1]
    assert first["val_top1_mean"] == pytest.approx(0.52)
    assert first["val_top1_std"] == pytest.approx(0.02)
    assert second["delta_top1"] == pytest.approx(0.62 - 0.52)
    table = ablation.markdown(args, [first, second], None)
    assert "| 3 | 52.00 ± 2.00 | - |" in table
    # Standard error of the delta: sqrt(0.02^2 / 3 + 0.0283^2 / 2) = 0.0231.
    assert second["delta_top1_se"] == pytest.approx(0.0231, abs=1e-4)
    assert "| 2 | 62.00 ± 2.83 | +10.00 ± 2.31 |" in table
    # A table that uses one batch and no teacher says nothing of a second batch or a teacher.
    assert ", batch 128, learning rate" in table and "Teacher" not in table


def test_table_6_compares_mixup_to_label_smoothing_and_both_to_distillation(tmp_path):
    """As the paper's Table 6: mixup alone against label smoothing, distillation and mixup against distillation."""
    args = parse(tmp_path, "--tables", "6", "--num-epochs", "1", "--seeds", "0")
    rows = {row.label: row for row in ablation.grid(args, "teacher.params")}
    smoothing, distillation, mixup, both = (rows[label] for label in (
        "+ label smoothing", "+ distillation from resnet50_v1d", "+ mixup (no distillation)",
        "+ distillation and mixup"))
    for row, top1 in ((smoothing, 0.40), (distillation, 0.48), (mixup, 0.43), (both, 0.47)):
        write_finished_run(args, row, 0, [top1])
    entries = {e["label"]: e for e in ablation.summarize(args, list(rows.values()))}
    assert entries["+ distillation from resnet50_v1d"]["delta_top1"] == pytest.approx(0.08)
    assert entries["+ mixup (no distillation)"]["delta_top1"] == pytest.approx(0.03)
    assert entries["+ distillation and mixup"]["delta_top1"] == pytest.approx(-0.01)
    table = ablation.markdown(args, list(entries.values()), "teacher.params")
    assert "| +3.00 (vs + label smoothing) |" in table
    assert "| -1.00 (vs + distillation from resnet50_v1d) |" in table


def test_a_report_rebuilt_from_its_json_has_the_same_rows_and_deltas(tmp_path):
    args = parse(tmp_path, "--tables", "gluoncv", "--num-epochs", "2")
    baseline, tricks = ablation.grid(args, None)
    for seed, finals in ((0, (0.50, 0.60)), (1, (0.54, 0.64))):
        for row, final in zip((baseline, tricks), finals):
            write_finished_run(args, row, seed, [0.3, final])
    results = ablation.summarize(args, [baseline, tricks])
    saved = tmp_path / "ablation.json"
    saved.write_text(json.dumps(dict(budget=vars(args), train_images=96, rows=results)))
    rebuilt = ablation.saved_results(parse(tmp_path, "--from-json", str(saved)))
    assert rebuilt[3] == results and rebuilt[4] == 96


def test_missing_teacher_params_is_refused_in_one_line(tmp_path):
    args = parse(tmp_path, "--tables", "6", "--teacher-params", str(tmp_path / "nothing.params"))
    with pytest.raises(SystemExit, match="nothing.params does not exist; give the .params file of a trained"):
        ablation.teacher_params(args)


def test_loop_ratio_is_the_median_of_back_to_back_pairs():
    from benchmarks import throughput
    ours = [dict(images_per_sec=v) for v in (100.0, 60.0, 90.0)]
    theirs = [dict(images_per_sec=v) for v in (80.0, 50.0, 100.0)]
    assert throughput.paired_ratios(ours, theirs) == pytest.approx([1.25, 1.2, 0.9])


def test_gluoncv_runs_with_resnet18_v1d_and_a_clock_that_waits(tmp_path):
    # GluonCV's epoch clock must wait for MXNet's queued work, as ours does, for the two to be compared.
    target = tmp_path / "their_script.py"
    target.write_text("import sys, time\nfrom gluoncv.model_zoo import get_model\n"
                      "print(time.time.__name__, get_model('resnet18_v1d', classes=7).fc._units, sys.argv[1:])\n")
    output = subprocess.run(benchmark_command("gluoncv_side", str(target), "--flag", "1"), cwd=tmp_path,
                            env=child_environment(), capture_output=True, text=True, check=True).stdout
    assert output.split("\n")[-2] == "synchronized_clock 7 ['--flag', '1']"


def test_gluoncv_gets_mxnets_default_threads_unless_asked_for_ours(monkeypatch):
    from benchmarks import throughput
    monkeypatch.setenv("MXNET_OMP_MAX_THREADS", "2")
    monkeypatch.setattr(throughput, "THREADS_SET_HERE", 2)  # the benchmark set it, not the user
    assert "MXNET_OMP_MAX_THREADS" not in throughput.gluoncv_environment("default")
    assert throughput.gluoncv_environment("ours")["MXNET_OMP_MAX_THREADS"] == "2"
    monkeypatch.setattr(throughput, "THREADS_SET_HERE", None)  # the user's own setting is everyone's
    assert throughput.gluoncv_environment("default")["MXNET_OMP_MAX_THREADS"] == "2"


def test_gluoncv_script_without_records_is_refused_in_one_line(capsys):
    from benchmarks import throughput
    assert throughput.main(["--quick", "--gluoncv-script", __file__]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --gluoncv-script needs --rec-train and --rec-val: GluonCV's script trains on packed records, and "
        "without them only the model alone would be measured"]


def test_model_only_is_its_images_over_its_time_as_a_loops_epoch(monkeypatch):
    from benchmarks import throughput
    monkeypatch.setattr(throughput, "count_multiply_adds", lambda net, input_size: 7)
    monkeypatch.setattr(throughput, "in_memory_training_step", lambda *args: None)
    monkeypatch.setattr(throughput, "timed_step_seconds", lambda step, steps, warmup_steps: [0.1, 0.2, 0.7])
    measured = throughput.model_only("resnet18_v1d", 32, batch_size=10, steps=3, warmup_steps=1)
    # 30 images in 1.0 s, as an epoch's figure counts them; the median step (0.2 s) would say 50.
    assert measured == dict(images_per_sec=pytest.approx(30.0), step_seconds=[0.1, 0.2, 0.7], multiply_adds=7)


def test_every_column_is_the_median_and_range_of_alternating_runs(tmp_path, monkeypatch):
    from benchmarks import throughput
    calls, speeds = [], {"model": iter([30.0, 20.0, 25.0]), "ours": iter([50.0, 40.0, 45.0]),
                         "gluoncv": iter([25.0, 20.0, 30.0])}

    def measured(side):
        def run(*args):
            calls.append(side)
            return dict(images_per_sec=next(speeds[side]), peak_rss_mb=100.0, step_seconds=[0.5], multiply_adds=1e9)
        return run
    monkeypatch.setattr(throughput, "model_only_run", measured("model"))
    monkeypatch.setattr(throughput, "our_loop", measured("ours"))
    monkeypatch.setattr(throughput, "gluoncv_loop", measured("gluoncv"))
    monkeypatch.setattr(throughput, "loop_data", lambda args, data, speed, workdir: dict(data, num_train=64))
    args = throughput.build_parser().parse_args(["--quick", "--gluoncv-script", "train_imagenet.py"])
    row = throughput.measure_row("resnet18_v1d:32", args, dict(train="t.rec", val="v.rec", num_train=64), tmp_path)
    assert calls == ["model", "ours", "gluoncv"] * 3
    assert [(row[side]["images_per_sec"], row[side]["runs"]) for side in ("model_only", "loop", "gluoncv")] == [
        (25.0, [30.0, 20.0, 25.0]), (45.0, [50.0, 40.0, 45.0]), (25.0, [25.0, 20.0, 30.0])]
    result = dict(machine=dict(cpu="cpu", cores=2, mxnet="1.9.1"), matmul_gflops=100.0, repeats=3, batch_size=32,
                  loop_images=64, loop_seconds=40, threads=2, cpu_threads="2", gluoncv_cpu_threads="1", rows=[row],
                  pipeline=[])
    # Of the ceiling: 3 x 2 x 1e9 multiply-adds x the median images/s, over 100 GFLOP/s; the ratios of the pairs
    # 50 / 25, 40 / 20 and 45 / 30.
    assert "| 25.0 (20.0-30.0) | 1.50 | 45.0 (40.0-50.0) | 2.70 | 25.0 (20.0-30.0) | 2.00 (1.50-2.00) |" in \
        throughput.markdown(result)


def test_a_diverged_run_is_a_result_of_the_grid_not_a_failure(tmp_path, monkeypatch):
    args = parse(tmp_path, "--tables", "gluoncv", "--seeds", "0", "1", "--num-epochs", "2")
    baseline, _ = ablation.grid(args, None)
    calls = []

    def diverging_training(argv, cwd, stdout, stderr):
        calls.append(argv)
        stdout.write("error: the training loss became nan at epoch 0, batch 3; lower --lr\n")
        return 3

    monkeypatch.setattr(ablation.subprocess, "call", diverging_training)
    save_dir = ablation.run(args, baseline.flags, 0)
    assert open(os.path.join(save_dir, ablation.DIVERGED_MARKER)).read().startswith("error: the training loss became")
    assert ablation.run(args, baseline.flags, 0) == save_dir and len(calls) == 1  # not retried
    write_finished_run(args, baseline, 1, [0.3, 0.5])
    entry = ablation.summarize(args, [baseline])[0]
    assert entry["seeds"] == [1] and entry["diverged_seeds"] == [0]
    assert "| 50.00, diverged (seed 0) |" in ablation.markdown(args, [entry], None)


FAKE_GLUONCV = """import sys, time
args = sys.argv[1:]
epochs = int(args[args.index('--num-epochs') + 1])
with open('calls.txt', 'a') as handle:
    handle.write(' '.join(args) + '\\n')
for epoch in range(epochs):
    print('[Epoch %d] speed: 512 samples/sec\\ttime cost: %f' % (epoch, 10.0 + epoch))
    print('[Epoch %d] validation: err-top1=%f err-top5=0.100000' % (epoch, 0.75 - 0.25 * epoch))
print('Training time for %d epochs: 42.000000 sec.' % epochs)
"""


def test_gluoncv_script_runs_both_recipes_reads_its_log_and_runs_nothing_twice(tmp_path):
    from benchmarks import gluoncv_script
    script = tmp_path / "their_script.py"
    script.write_text(FAKE_GLUONCV)
    ablation_rec = tmp_path / "train"
    import mxnet as mx
    writer = mx.recordio.MXIndexedRecordIO(str(ablation_rec) + ".idx", str(ablation_rec) + ".rec", "w")
    for key in range(3):
        writer.write_idx(key, b"x")
    writer.close()
    argv = ["--script", str(script), "--rec-train", f"{ablation_rec}.rec", "--rec-val", f"{ablation_rec}.rec",
            "--num-epochs", "2", "--runs", "1", "--work-dir", str(tmp_path / "runs"),
            "--output-dir", str(tmp_path / "out")]
    assert gluoncv_script.main(argv) == 0
    assert gluoncv_script.main(argv) == 0  # finished runs are read, not run again
    result = json.loads((tmp_path / "out" / "gluoncv_script.json").read_text())
    baseline = result["runs"]["baseline"][0]
    assert baseline["val_top1"] == pytest.approx([0.25, 0.5]) and baseline["epoch_seconds"] == [10.0, 11.0]
    assert baseline["script_seconds"] == 42.0 and result["train_images"] == 3
    calls = [(tmp_path / "runs" / name / "calls.txt").read_text().splitlines()
             for name in ("baseline-run0", "all-tricks-run0")]
    assert [len(lines) for lines in calls] == [1, 1]
    assert "--lr 0.05 --lr-decay-epoch 1 --mode hybrid" in calls[0][0] and "--mixup" not in calls[0][0]
    assert "--lr-mode cosine --label-smoothing --mixup --mixup-off-epoch 2 --save-dir" in calls[1][0]
    assert "| all tricks | 50.00 | 50.00 | 25.0, 50.0 | 21 |" in (tmp_path / "out" / "gluoncv_script.md").read_text()
