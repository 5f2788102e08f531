"""Train/test resolution: validation at ``--val-input-size`` (FixRes) and training crops that grow by epoch
(``--progressive-resize``, FFCV's schedule), from the formula to the shapes the network sees in a run."""
import json

import pytest

import eval_imagenet
import train_imagenet
from data.loaders import InputConfig, folder_source, record_source
from engine.config import describe_tricks, parse_config
from models import get_model
from tests.conftest import ONE_EPOCH, tiny_args
from tests.helpers import RunRecorder, folder_top1
from utils import checkpoint
from utils.progressive_resize import ProgressiveResize


def without_input_size(argv):
    """``argv`` without its ``--input-size N``: ``--progressive-resize`` sets the training crops instead."""
    at = argv.index("--input-size")
    return argv[:at] + argv[at + 2:]


# ---- the schedule, against sizes worked out by hand ---------------------------------------------------------


def test_ffcv_ramp_160_to_192_over_16_epochs_rounds_to_the_nearest_multiple_of_32():
    # r(e) / 32 = 5 + e / 15: below 5.5 (160) up to epoch 7, above it (192) from epoch 8.
    sizes = [ProgressiveResize(160, 192, 0, 15).size(epoch) for epoch in range(16)]
    assert sizes == [160] * 8 + [192] * 8


def test_a_step_of_16_takes_the_size_between():
    # r(e) / 16 = 10 + 2e / 15: 160 while 2e / 15 < 0.5 (e <= 3), 176 up to 1.5 (e <= 11), then 192.
    sizes = [ProgressiveResize(160, 192, 0, 15, step=16).size(epoch) for epoch in range(16)]
    assert sizes == [160] * 4 + [176] * 8 + [192] * 4


def test_before_the_ramp_start_after_it_end_and_ffcvs_resnet50_configurations():
    schedule = ProgressiveResize(160, 192, 65, 76)  # FFCV's rn50_88_epochs.yaml
    assert [schedule.size(epoch) for epoch in (0, 65, 70, 71, 76, 87)] == [160, 160, 160, 192, 192, 192]
    schedule = ProgressiveResize(160, 192, 11, 13)  # rn50_16_epochs.yaml: epoch 12 is at 176 exactly, 5.5 x 32
    assert [schedule.size(epoch) for epoch in range(10, 16)] == [160, 160, 192, 192, 192, 192]
    assert [ProgressiveResize(128, 128, 0, 9).size(epoch) for epoch in range(10)] == [128] * 10
    assert [ProgressiveResize(128, 192, 3, 3).size(epoch) for epoch in (2, 3, 4)] == [128, 128, 192]


def test_a_half_goes_to_the_even_multiple_as_numpys_round():
    # Midway, r = 176 = 5.5 x 32 rounds up to 6 x 32; r = 208 = 6.5 x 32 rounds down to 6 x 32.
    assert ProgressiveResize(160, 192, 0, 2).size(1) == 192
    assert ProgressiveResize(192, 224, 0, 2).size(1) == 192


def test_a_schedule_that_would_leave_its_range_is_refused():
    for start, end, first, last, step in ((192, 160, 0, 9, 32), (170, 192, 0, 9, 32), (0, 32, 0, 9, 32),
                                          (160, 192, 5, 4, 32)):
        with pytest.raises(ValueError):
            ProgressiveResize(start, end, first, last, step)


# ---- the crop arithmetic and the iterators -----------------------------------------------------------------


@pytest.mark.parametrize("crop, ratio, side", [
    (224, 0.875, 256), (224, 0.9655, 232), (224, 224 / 232, 232), (299, 0.875, 342), (24, 0.875, 28),
    (32, 0.875, 37), (256, 0.875, 293)])
def test_validation_resizes_the_shorter_side_to_the_crop_over_the_ratio(crop, ratio, side):
    """ceil(crop / ratio) as GluonCV, except for a ratio typed to four decimals: torchvision's 224 of 232 is
    0.9655, and 224 / 0.9655 = 232.004 stands for 232 (torchvision's resize), not 233."""
    config = InputConfig(batch_size=1, input_size=176, crop_ratio=ratio, num_workers=1, seed=0, val_input_size=crop)
    assert (config.val_size, config.val_resize) == (crop, side)
    assert InputConfig(batch_size=1, input_size=crop, crop_ratio=ratio, num_workers=1, seed=0).val_resize == side


def _sources(tiny_set, config):
    return {"records": record_source(str(tiny_set / "train.rec"), str(tiny_set / "val.rec"), config),
            "folders": folder_source(str(tiny_set / "images"), config)}


def test_validation_batches_have_the_validation_size_and_training_batches_the_training_size(tiny_set):
    config = InputConfig(batch_size=8, input_size=18, crop_ratio=0.875, num_workers=1, seed=0, val_input_size=26)
    for name, data in _sources(tiny_set, config).items():
        assert {batch.data[0].shape for batch in data.train.epoch(0)} == {(8, 3, 18, 18)}, name
        assert {batch.data[0].shape for batch in data.val} == {(8, 3, 26, 26)}, name


def test_each_training_epoch_has_its_size_from_any_batch_on(tiny_set):
    schedule = ProgressiveResize(16, 32, 0, 2, step=8)  # 16, 24, 32
    config = InputConfig(batch_size=8, input_size=20, crop_ratio=0.875, num_workers=1, seed=0,
                         progressive_resize=schedule)
    for name, data in _sources(tiny_set, config).items():
        for epoch, start_batch in ((0, 0), (1, 0), (2, 5), (3, 0), (0, 11), (1, 3)):
            batches = list(data.train.epoch(epoch, start_batch))
            assert len(batches) == data.batches_per_epoch - start_batch, name
            side = schedule.size(epoch)
            assert {batch.data[0].shape for batch in batches} == {(8, 3, side, side)}, (name, epoch)
        assert {batch.data[0].shape for batch in data.val} == {(8, 3, 20, 20)}, name


# ---- the flags ----------------------------------------------------------------------------------------------


def test_val_input_size_defaults_to_input_size_and_the_tricks_line_names_the_ramp(tiny_set):
    assert parse_config(tiny_args(tiny_set, "x")).val_input_size == 24
    config = parse_config(without_input_size(tiny_args(tiny_set, "x", "--progressive-resize", "24,40",
                                                       "--progressive-resize-step", "8")))
    assert (config.progressive_resize, config.input_size, config.val_input_size) == ((24, 40), 224, 224)
    assert describe_tricks(config) == "--progressive-resize 24,40 --progressive-resize-step 8"


# ---- end to end ---------------------------------------------------------------------------------------------


def _record_validation_inputs(monkeypatch, module):
    """The shapes of what ``module.evaluate`` feeds the network, one list per call."""
    seen, evaluate = [], module.evaluate

    def recording_evaluate(net, data, contexts):
        shapes = []
        hook = net.register_forward_pre_hook(lambda block, inputs: shapes.append(inputs[0].shape))
        try:
            return evaluate(net, data, contexts)
        finally:
            hook.detach()
            seen.append(shapes)

    monkeypatch.setattr(module, "evaluate", recording_evaluate)
    return seen


def test_a_run_trains_at_input_size_and_validates_at_val_input_size(tiny_set, tmp_path, monkeypatch):
    recorder = RunRecorder(monkeypatch)
    validations = _record_validation_inputs(monkeypatch, train_imagenet)
    argv = tiny_args(tiny_set, tmp_path, "--val-input-size", "32", "--crop-ratio", "0.8")
    assert train_imagenet.main(argv) == 0
    assert {call["inputs"].shape for *_, call in recorder.steps()} == {(16, 3, 24, 24)}
    # Two epochs of 30 validation images in batches of 16, each at 32x32 (resized to 40 first), hybridized.
    assert validations == [[(16, 3, 32, 32)] * 2] * 2
    with open(checkpoint.args_path(str(tmp_path))) as handle:
        settings = json.load(handle)
    assert (settings["input_size"], settings["val_input_size"]) == (24, 32)
    assert [record["input_size"] for record in checkpoint.read_metrics(str(tmp_path))] == [24, 24]


def test_progressive_resize_on_two_devices_trains_each_epoch_at_its_size(tiny_set, tmp_path, monkeypatch):
    """24, 32, 40 over three epochs, each device's half batch hybridized at that size; validation stays at 32."""
    recorder = RunRecorder(monkeypatch)
    validations = _record_validation_inputs(monkeypatch, train_imagenet)
    argv = without_input_size(tiny_args(tiny_set, tmp_path, "--num-cpu-contexts", "2", "--batch-size", "8",
                                        "--num-epochs", "3", "--lr-decay-epoch", "2", "--progressive-resize", "24,40",
                                        "--progressive-resize-step", "8", "--val-input-size", "32"))
    assert train_imagenet.main(argv) == 0
    sizes = {0: 24, 1: 32, 2: 40}
    steps = recorder.steps()
    assert len(steps) == 3 * 6 * 2  # epochs x batches x devices
    for epoch, images, _, call in steps:
        side = sizes[epoch]
        assert images.shape == call["inputs"].shape == (8, 3, side, side) and call["hybridized"], epoch
    assert validations == [[(8, 3, 32, 32)] * 4] * 3  # 30 images: 2 batches of 16, each split over 2 devices
    metrics = checkpoint.read_metrics(str(tmp_path))
    assert [record["input_size"] for record in metrics] == [24, 32, 40]
    assert all(record["samples_per_sec"] > 0 for record in metrics)
    with open(tmp_path / "train.log") as log:
        text = log.read()
    assert "Training crops 24->40 over epochs 0-2 (multiples of 8), validation centre crops 32 of the shorter " \
           "side resized to 37" in text
    assert "samples/sec at 40x40" in text


@pytest.mark.numeric
def test_eval_takes_val_input_size_as_training_does(tiny_set, tmp_path, monkeypatch):
    save_dir = tmp_path / "trained"
    assert train_imagenet.main(tiny_args(tiny_set, save_dir, *ONE_EPOCH, "--last-gamma")) == 0
    params = checkpoint.params_path(str(save_dir), "resnet18_v1d", 0)
    validations = _record_validation_inputs(monkeypatch, eval_imagenet)
    output = tmp_path / "result.json"
    argv = ["--model", "resnet18_v1d", "--params", params, "--data-dir", str(tiny_set / "images"), "--input-size",
            "24", "--val-input-size", "32", "--crop-ratio", "0.8", "--batch-size", "16", "-j", "0",
            "--output", str(output)]
    assert eval_imagenet.main(argv) == 0
    result = json.loads(output.read_text())
    assert (result["input_size"], result["val_input_size"], result["val_resize"]) == (24, 32, 40)
    assert validations == [[(16, 3, 32, 32)] * 2]
    # The same figure as an image-by-image count of the same files at that size.
    net = get_model("resnet18_v1d", classes=3)
    net.load_parameters(params)
    assert result["top1_error"] == pytest.approx(1 - folder_top1(net, tiny_set / "images" / "val", 32, 0.8))


def test_eval_refuses_a_bad_val_input_size_in_one_line(tiny_set, tmp_path, capsys):
    argv = ["--model", "resnet18_v1d", "--params", str(tmp_path / "any.params"), "--rec-val",
            str(tiny_set / "val.rec"), "--val-input-size", "0"]
    (tmp_path / "any.params").write_bytes(b"")
    assert eval_imagenet.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --val-input-size must be at least 1, got 0"]
