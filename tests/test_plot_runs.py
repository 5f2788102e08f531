"""``python -m tools.plot_runs``: run folders written as training writes them, drawn into one PNG and tabulated."""
import os

import numpy as np
import pytest
from PIL import Image

from benchmarks import ablation
from tools import plot_runs
from utils import checkpoint

# matplotlib's first two colours: each run's curves are drawn in its own.
FIRST_RUN_RGB, SECOND_RUN_RGB = (31, 119, 180), (255, 127, 14)
FIGURE_PIXELS = (1620, 450)  # 3 panels of 6 x 5 inches at 90 dots per inch


def write_run(folder, settings, epochs):
    """A run folder as train_imagenet.py leaves it: args.json, then one metrics line per finished epoch."""
    os.makedirs(folder)
    checkpoint.save_run_args(str(folder), settings, None)
    for epoch, figures in enumerate(epochs):
        checkpoint.append_metrics(str(folder), dict(epoch=epoch, train_top1=0.1, **figures))
    return str(folder)


def baseline_run(folder):
    """3 of 3 epochs; the best top-1 (55%) is not the last (50%); images/s 100, 300, 200: median 200."""
    return write_run(folder, dict(model="resnet18_v1d", num_epochs=3), [
        dict(val_top1=0.30, val_top5=0.70, train_loss=2.1, lr=0.1, samples_per_sec=100.0),
        dict(val_top1=0.55, val_top5=0.85, train_loss=1.6, lr=0.01, samples_per_sec=300.0),
        dict(val_top1=0.50, val_top5=0.80, train_loss=1.25, lr=0.001, samples_per_sec=200.0)])


def ema_run(folder):
    """Still training (2 of 4 epochs), with the weights' average evaluated each epoch."""
    return write_run(folder, dict(model="resnet50_v1d", num_epochs=4), [
        dict(val_top1=0.40, val_top5=0.72, val_top1_ema=0.35, train_loss=1.9, lr=0.1, samples_per_sec=100.0),
        dict(val_top1=0.45, val_top5=0.75, val_top1_ema=0.475, train_loss=1.5, lr=0.05, samples_per_sec=200.0)])


def colour_pixels(image, rgb):
    return int(np.all(image == rgb, axis=-1).sum())


def test_two_runs_are_overlaid_in_one_png_and_tabulated(tmp_path, capsys):
    first, second = baseline_run(tmp_path / "a"), ema_run(tmp_path / "b")
    png, table = tmp_path / "runs.png", tmp_path / "runs.md"
    assert plot_runs.main([first, second, "--names", "baseline", "cosine", "--output", str(png),
                           "--table", str(table)]) == 0

    expected = [
        "| run | model | epochs | final val top-1 % | best val top-1 % | final val top-5 % | final EMA val top-1 % "
        "| final train loss | images/s (median epoch) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| baseline | resnet18_v1d | 3 | 50.00 | 55.00 | 80.00 | - | 1.2500 | 200.0 |",
        "| cosine | resnet50_v1d | 2 of 4 | 45.00 | 45.00 | 75.00 | 47.50 | 1.5000 | 150.0 |"]
    assert table.read_text().splitlines() == expected
    assert capsys.readouterr().out.splitlines() == expected

    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == FIGURE_PIXELS
        pixels = np.asarray(image.convert("RGB"))
    # Top-1, loss and rate panels, each a third of the width: both runs drawn in every one.
    for panel in np.array_split(pixels, 3, axis=1):
        assert colour_pixels(panel, FIRST_RUN_RGB) > 50 and colour_pixels(panel, SECOND_RUN_RGB) > 50


def test_runs_are_named_after_their_folders_and_no_ema_column_without_an_average(tmp_path, capsys):
    folder = baseline_run(tmp_path / "r18-baseline")
    assert plot_runs.main([folder + "/", "--output", str(tmp_path / "one.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("| run | model | epochs | final val top-1 % | best val top-1 % | final val top-5 % "
                        "| final train loss | images/s (median epoch) |")
    assert lines[2:] == ["| r18-baseline | resnet18_v1d | 3 | 50.00 | 55.00 | 80.00 | 1.2500 | 200.0 |"]
    assert os.path.isfile(tmp_path / "one.png")


def no_metrics(tmp_path):
    folder = tmp_path / "started"
    os.makedirs(folder)
    checkpoint.save_run_args(str(folder), dict(model="resnet18_v1d"), None)
    return [str(folder)], f"{folder} has no metrics.jsonl: give the --save-dir of a train_imagenet.py run"


def empty_metrics(tmp_path):
    folder = tmp_path / "first-epoch"
    os.makedirs(folder)
    open(checkpoint.metrics_path(str(folder)), "w").close()
    return [str(folder)], f"{folder}/metrics.jsonl holds no finished epoch yet: plot the run after its first epoch"


def names_miscounted(tmp_path):
    return ([baseline_run(tmp_path / "a"), "--names", "one", "two"],
            "--names gives 2 names for 1 run folders: give one per folder")


def output_folder_missing(tmp_path):
    return ([baseline_run(tmp_path / "a"), "--table", str(tmp_path / "nowhere" / "runs.md")],
            f"the folder of {tmp_path / 'nowhere' / 'runs.md'} does not exist")


@pytest.mark.parametrize("bad_input", [no_metrics, empty_metrics, names_miscounted, output_folder_missing])
def test_bad_input_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, bad_input):
    argv, message = bad_input(tmp_path)
    png = tmp_path / "runs.png"
    assert plot_runs.main([*argv, "--output", str(png)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {message}") and error.count("\n") == 1
    assert not os.path.exists(png)


def test_the_ablation_figure_is_drawn_by_the_shared_module(tmp_path):
    args = ablation.build_parser().parse_args([
        "--rec-train", "/data/train.rec", "--rec-val", "/data/val.rec", "--tables", "gluoncv", "--num-epochs", "2",
        "--seeds", "0", "1", "--work-dir", str(tmp_path / "runs"), "--output-dir", str(tmp_path)])
    rows = ablation.grid(args, None)
    for row, finals in zip(rows, ((0.50, 0.54), (0.60, 0.64))):
        for seed, final in zip(args.seeds, finals):
            write_run(ablation.run_dir(args, row.flags, seed), {}, [dict(val_top1=0.3, val_top5=0.9),
                                                                    dict(val_top1=final, val_top5=0.9)])
    ablation.plot(args, ablation.summarize(args, rows), rows, images=1000)
    with Image.open(tmp_path / "tablegluoncv.png") as image:
        assert image.size == FIGURE_PIXELS
        pixels = np.asarray(image.convert("RGB"))
    top1_panel = np.array_split(pixels, 3, axis=1)[0]
    assert colour_pixels(top1_panel, FIRST_RUN_RGB) > 50 and colour_pixels(top1_panel, SECOND_RUN_RGB) > 50
