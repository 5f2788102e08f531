"""The training entry point end to end on a tiny packed set: loss falls, outputs load, bad input is one line."""
import itertools
import json
import math
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

import train_imagenet
from engine.config import parse_config
from engine.loop import train_one_epoch
from engine.recipe import build_data, build_network, build_recipe, effective_lr
from data.augmentation import RGB_MEAN, RGB_STD
from data.loaders import InputConfig, folder_source, record_source
from data.pack import pack_folder
from models import get_model
from utils import checkpoint
from utils.devices import build_contexts, split_batch
from tests.conftest import COLOURS_RGB, ONE_EPOCH, tiny_args
from tests.helpers import RunRecorder, folder_top1, parameter_values, randomize_parameters
from utils.errors import UserError
from utils.pretrained import load_for_finetuning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(argv):
    return parse_config(argv)


def _read_metrics(save_dir):
    with open(checkpoint.metrics_path(str(save_dir))) as handle:
        return [json.loads(line) for line in handle]


def _fails_with(capsys, argv, message):
    assert train_imagenet.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.numeric
def test_short_run_learns_and_writes_loadable_outputs(tiny_set, tmp_path):
    # Zero gamma, as in the demo: without it 18 steps leave BatchNorm's running statistics too unsettled for
    # validation to tell anything, and the training loss of batches of 16 jumps from one batch to the next.
    save_dir = tmp_path / "run"
    assert train_imagenet.main(tiny_args(tiny_set, save_dir, "--num-epochs", "3", "--lr-decay-epoch", "2",
                                         "--last-gamma")) == 0
    metrics = _read_metrics(save_dir)
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert min(m["train_loss"] for m in metrics[1:]) < metrics[0]["train_loss"] / 2
    assert metrics[-1]["train_top1"] > 0.8 and metrics[-1]["val_top1"] > 0.9
    assert [m["lr"] for m in metrics] == pytest.approx([0.02, 0.02, 0.002])
    assert set(metrics[0]) == {"epoch", "lr", "train_loss", "train_top1", "val_top1", "val_top5",
                               "samples_per_sec", "epoch_seconds", "peak_rss_mb", "skipped_records", "input_size"}
    with open(checkpoint.args_path(str(save_dir))) as handle:
        assert json.load(handle)["model"] == "resnet18_v1d"

    net = get_model("resnet18_v1d", classes=3)
    net.load_parameters(checkpoint.params_path(str(save_dir), "resnet18_v1d", 2))
    prefix = checkpoint.export_prefix(str(save_dir), "resnet18_v1d")
    deployable = mx.gluon.SymbolBlock.imports(f"{prefix}-symbol.json", ["data"], f"{prefix}-0000.params")
    images = mx.nd.random.normal(shape=(4, 3, 24, 24))
    np.testing.assert_allclose(deployable(images).asnumpy(), net(images).asnumpy(), atol=1e-5)


@pytest.mark.numeric
def test_imperative_mode_trains_op_by_op_and_exports_the_trained_network(tiny_set, tmp_path, monkeypatch):
    recorder = RunRecorder(monkeypatch)
    assert train_imagenet.main(tiny_args(tiny_set, tmp_path, "--mode", "imperative", *ONE_EPOCH)) == 0
    # Not one of the 6 steps ran a compiled graph; only the export hybridized the network, after training.
    assert [call["hybridized"] for *_, call in recorder.steps()] == [False] * 6
    for mode, compiled in (("imperative", False), ("hybrid", True)):
        config = _config(tiny_args(tiny_set, "unused", "--mode", mode))
        assert build_network(config, 3, [mx.cpu()])._active is compiled
    # Epoch 0's parameters and the export's own -0000.params are two files; both hold the trained network.
    net = get_model("resnet18_v1d", classes=3)
    net.load_parameters(checkpoint.params_path(str(tmp_path), "resnet18_v1d", 0))
    prefix = checkpoint.export_prefix(str(tmp_path), "resnet18_v1d")
    deployable = mx.gluon.SymbolBlock.imports(f"{prefix}-symbol.json", ["data"], f"{prefix}-0000.params")
    images = mx.nd.array(np.random.RandomState(0).normal(size=(4, 3, 24, 24)))
    np.testing.assert_allclose(deployable(images).asnumpy(), net(images).asnumpy(), atol=1e-5)


def test_two_contexts_share_one_update(tiny_set):
    """Several CPU contexts stand in for GPUs: every device holds the same weights after each step."""
    config = _config(tiny_args(tiny_set, "unused", "--num-cpu-contexts", "2", "--batch-size", "8"))
    contexts = build_contexts(num_cpu_contexts=2)
    data = build_data(config, contexts)
    recipe = build_recipe(config, data, contexts)
    stats = train_one_epoch(0, recipe, data, contexts, config)
    assert np.isfinite(stats["train_loss"])
    # BatchNorm running statistics stay per device (section 2); the learned weights must agree.
    for name, param in recipe.net.collect_params().items():
        if param.grad_req == "null":
            continue
        first, second = (param.data(ctx).asnumpy() for ctx in contexts)
        np.testing.assert_array_equal(first, second, err_msg=name)
    assert effective_lr(_config(tiny_args(tiny_set, "x", "--lr", "0.3")), contexts) == 0.3


def test_linear_scaling_uses_the_total_batch(tiny_set):
    config = _config([a for a in tiny_args(tiny_set, "x", "--batch-size", "32") if a not in ("--lr", "0.02")])
    assert effective_lr(config, build_contexts(num_cpu_contexts=2)) == pytest.approx(0.1 * 64 / 256)


@pytest.mark.numeric
def test_validation_pipeline_normalizes_as_the_paper_says(tiny_set):
    """A solid red image comes out as (RGB - mean) / std per channel, up to JPEG and noise error."""
    config = InputConfig(batch_size=8, input_size=16, crop_ratio=0.875, num_workers=1, seed=0)
    data = record_source(str(tiny_set / "train.rec"), str(tiny_set / "val.rec"), config)
    assert (data.num_classes, data.num_train, data.num_val) == (3, 96, 30)
    assert data.batches_per_epoch == 12 and len(list(data.train.epoch(0))) == 12
    batches = list(data.val)
    assert [b.pad for b in batches] == [0, 0, 0, 2]
    labels = np.concatenate([b.label[0].asnumpy()[:8 - b.pad] for b in batches])
    assert sorted(np.bincount(labels.astype(int))) == [10, 10, 10]
    red = next(b.data[0][i] for b in batches for i in range(8) if b.label[0][i].asscalar() == 2)
    expected = (np.array(COLOURS_RGB["red"]) - [123.68, 116.779, 103.939]) / [58.393, 57.12, 57.375]
    np.testing.assert_allclose(red.asnumpy().mean(axis=(1, 2)), expected, atol=0.15)


# A 128x128 picture: a green border 6 pixels wide, red inside it, a blue 64x64 square in the middle.
CROP_COLOURS_RGB = {"green": (40, 200, 40), "red": (200, 40, 40), "blue": (40, 40, 200)}


def _framed_picture():
    picture = np.empty((128, 128, 3), np.uint8)
    picture[:] = CROP_COLOURS_RGB["green"]
    picture[6:122, 6:122] = CROP_COLOURS_RGB["red"]
    picture[32:96, 32:96] = CROP_COLOURS_RGB["blue"]
    return picture


def test_validation_resizes_the_shorter_side_then_keeps_only_the_centre(tmp_path):
    """At input 28 and crop ratio 0.875 the shorter side goes to ceil(28 / 0.875) = 32, a quarter of 128, and the
    centre 28x28 stays: 2 pixels off each side, which hold all of the border (6 / 4 = 1.5 pixels), and the blue
    square, 16x16 once resized, sits at rows and columns 6 to 21. A missing crop would keep green at the edges;
    a missing resize would show blue only. The same with training at 20 and --val-input-size 28."""
    for split in ("train", "val"):
        for name in ("a", "b"):
            os.makedirs(tmp_path / "images" / split / name)
            cv2.imwrite(str(tmp_path / "images" / split / name / "0.png"), _framed_picture()[:, :, ::-1])
        pack_folder(str(tmp_path / "images" / split), str(tmp_path / split), num_workers=1, log=lambda *_: None)
    names, colours = list(CROP_COLOURS_RGB), np.array(list(CROP_COLOURS_RGB.values()), np.float64)
    expected = np.full((28, 28), names.index("red"))
    expected[6:22, 6:22] = names.index("blue")
    sources = (["--rec-train", str(tmp_path / "train.rec"), "--rec-val", str(tmp_path / "val.rec")],
               ["--data-dir", str(tmp_path / "images")])
    sizes = (["--input-size", "28"], ["--input-size", "20", "--val-input-size", "28"])
    for data_flags, size_flags in itertools.product(sources, sizes):
        config = _config([*data_flags, *size_flags, "--crop-ratio", "0.875", "--batch-size", "1", "-j", "1",
                          "--save-dir", str(tmp_path / "run")])
        batches = list(build_data(config, [mx.cpu()]).val)
        assert len(batches) == 2
        for batch in batches:
            rgb = batch.data[0][0].asnumpy().transpose(1, 2, 0) * RGB_STD + RGB_MEAN
            # The nearest of the three colours, pixel by pixel: JPEG's few units of error do not change it.
            nearest = np.linalg.norm(rgb[:, :, None, :] - colours, axis=3).argmin(axis=2)
            np.testing.assert_array_equal(nearest, expected, err_msg=" ".join(data_flags[:1] + size_flags))


def test_training_pipeline_shapes_and_ranges(tiny_set):
    config = InputConfig(batch_size=8, input_size=20, crop_ratio=0.875, num_workers=1, seed=0)
    for data in (record_source(str(tiny_set / "train.rec"), str(tiny_set / "val.rec"), config),
                 folder_source(str(tiny_set / "images"), config)):
        batch = next(data.train.epoch(0))
        images = batch.data[0].asnumpy()
        assert images.shape == (8, 3, 20, 20) and batch.label[0].shape == (8,)
        assert np.isfinite(images).all() and -3.5 < images.min() < 0 < images.max() < 3.5
        assert set(np.unique(batch.label[0].asnumpy())) <= {0, 1, 2}


@pytest.mark.numeric
def test_raw_folders_train_like_records(tiny_set, tmp_path, monkeypatch):
    # Zero gamma, as in the demo: without it one epoch leaves BatchNorm's running statistics so unsettled that
    # every image gets the same class, and any evaluation of any of those networks gives 1/3.
    argv = [a for a in tiny_args(tiny_set, tmp_path, *ONE_EPOCH, "--last-gamma") if not a.endswith(".rec")]
    argv = [a for a in argv if a not in ("--rec-train", "--rec-val", "--save-dir", str(tmp_path))]
    argv += ["--data-dir", str(tiny_set / "images")]
    runs = {}
    for threads in ("1", "2"):
        recorder = RunRecorder(monkeypatch)
        assert train_imagenet.main(argv + ["-j", threads, "--save-dir", str(tmp_path / threads)]) == 0
        runs[threads] = recorder.steps()
    # One seed, the same batches with one decoding thread or two: every image and label of every step.
    assert len(runs["1"]) == len(runs["2"]) == 96 // 16
    for (_, images, labels, _), (_, images_two, labels_two, _) in zip(runs["1"], runs["2"]):
        np.testing.assert_array_equal(labels_two, labels)
        np.testing.assert_array_equal(images_two, images)
    # The run learned from the folder (chance is 1/3), and its validation figure is the saved network's top-1 on the
    # folder's 30 validation images, counted here one by one.
    net = get_model("resnet18_v1d", classes=3)
    net.load_parameters(checkpoint.params_path(str(tmp_path / "1"), "resnet18_v1d", 0))
    val_top1 = _read_metrics(tmp_path / "1")[0]["val_top1"]
    assert val_top1 == pytest.approx(folder_top1(net, tiny_set / "images" / "val", 24)) and val_top1 > 0.9


def test_missing_record_file_is_one_line(tiny_set, tmp_path, capsys):
    argv = tiny_args(tiny_set, tmp_path)
    argv[1] = str(tmp_path / "nowhere.rec")
    _fails_with(capsys, argv, "nowhere")


def test_corrupt_index_is_one_line(tiny_set, tmp_path, capsys):
    for suffix in (".rec", ".classes.txt"):
        os.symlink(tiny_set / f"train{suffix}", tmp_path / f"bad{suffix}")
    (tmp_path / "bad.idx").write_text("0\tnot-a-number\n")
    argv = tiny_args(tiny_set, tmp_path / "run")
    argv[1] = str(tmp_path / "bad.rec")
    _fails_with(capsys, argv, "bad.idx")


def test_unknown_model_lists_known_ones(tiny_set, tmp_path, capsys):
    argv = tiny_args(tiny_set, tmp_path)
    argv[argv.index("resnet18_v1d")] = "resnet19"
    _fails_with(capsys, argv, "resnet50_v1d")


def test_folder_without_images_is_one_line(tmp_path, capsys):
    for split in ("train/cat", "val/cat"):
        os.makedirs(tmp_path / "data" / split)
    _fails_with(capsys, ["--data-dir", str(tmp_path / "data"), "--save-dir", str(tmp_path / "run")], "no images")


def test_unwritable_save_dir_fails_before_training(tiny_set, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    _fails_with(capsys, tiny_args(tiny_set, tmp_path / "file" / "run"), "cannot write to --save-dir")


def test_label_outside_the_classes_stops_training(tiny_set, tmp_path, capsys):
    _fails_with(capsys, tiny_args(tiny_set, tmp_path, "--num-classes", "2"), "--num-classes 2 disagrees with the 3")


def test_gpu_only_requests_fail_clearly_on_cpu(tiny_set, tmp_path, capsys):
    _fails_with(capsys, tiny_args(tiny_set, tmp_path, "--dtype", "float16"), "needs GPUs")
    _fails_with(capsys, tiny_args(tiny_set, tmp_path, "--num-gpus", "1"), "mxnet-cu112")
    _fails_with(capsys, tiny_args(tiny_set, tmp_path, "--gpus", "0,1"), "GPUs 0,1 were asked for")
    _fails_with(capsys, tiny_args(tiny_set, tmp_path, "--gpus", "0,x"), "not a comma-separated list")


def test_batch_that_does_not_split_over_devices():
    with pytest.raises(UserError, match="does not split evenly over 2 devices"):
        split_batch(mx.nd.zeros((5, 3)), [mx.cpu(0), mx.cpu(1)])


def test_bad_flag_values_are_one_line(tiny_set, tmp_path, capsys):
    _fails_with(capsys, tiny_args(tiny_set, tmp_path, "--lr-decay-epoch", "60,30"), "increasing")
    _fails_with(capsys, tiny_args(tiny_set, tmp_path, "--batch-size", "0"), "--batch-size must be at least 1")
    _fails_with(capsys, ["--rec-train", str(tiny_set / "train.rec")], "go together")


def test_command_line_error_has_no_traceback():
    result = subprocess.run([sys.executable, "train_imagenet.py", "--model", "nope", "--rec-train", "a.rec",
                             "--rec-val", "b.rec"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown model 'nope'") and "Traceback" not in result.stderr


def _initialized(name, classes):
    net = get_model(name, classes=classes)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 24, 24)))
    return net


def test_finetuning_keeps_every_weight_and_reinitializes_another_classifier(tmp_path):
    source = _initialized("resnet18_v1d", 5)
    source.save_parameters(str(tmp_path / "source.params"))
    source_params = {k: v.data().asnumpy() for k, v in source._collect_params_with_prefix().items()}
    for classes, expected_reinitialized in ((5, []), (3, ["fc.bias", "fc.weight"])):
        target = _initialized("resnet18_v1d", classes)
        assert sorted(load_for_finetuning(target, str(tmp_path / "source.params"))) == \
            expected_reinitialized
        for key, param in target._collect_params_with_prefix().items():
            if key not in expected_reinitialized:
                np.testing.assert_array_equal(param.data().asnumpy(), source_params[key], err_msg=key)
    with pytest.raises(UserError, match="has parameter 'layer2.0.downsample.1.weight', which --model lacks"):
        load_for_finetuning(_initialized("resnet18_v1c", 5), str(tmp_path / "source.params"))


def _saved_random_network(classes, path):
    """A ResNet-18-D with random values in every parameter (none equal to a fresh one's), saved to ``path``."""
    net = _initialized("resnet18_v1d", classes)
    randomize_parameters(net, seed=classes)
    net.save_parameters(str(path))
    return parameter_values(net)


def test_finetuning_from_the_command_line_starts_from_the_files_weights(tiny_set, tmp_path, monkeypatch):
    saved = _saved_random_network(10, tmp_path / "imagenet-like.params")
    recorder = RunRecorder(monkeypatch)
    argv = tiny_args(tiny_set, tmp_path / "run", *ONE_EPOCH, "--pretrained-params",
                     str(tmp_path / "imagenet-like.params"))
    assert train_imagenet.main(argv) == 0
    # At the first step every weight, gamma and beta is the file's (the first forward pass has moved only
    # BatchNorm's running statistics) but the classifier, fresh for 3 classes: Xavier weights, zero bias.
    start = recorder.at_first_step
    for key, value in start.items():
        if not key.startswith("fc.") and not key.endswith(("running_mean", "running_var")):
            np.testing.assert_array_equal(value, saved[key], err_msg=key)
    bound = math.sqrt(6 / (512 + 3))
    assert start["fc.weight"].shape == (3, 512) and 0.9 * bound < np.abs(start["fc.weight"]).max() <= bound
    assert start["fc.bias"].shape == (3,) and not start["fc.bias"].any()
    assert "re-initialized fc.weight, fc.bias" in (tmp_path / "run" / "train.log").read_text()
    # With the same classes, the network built from the command line holds every value of the file,
    # classifier and running statistics included.
    saved = _saved_random_network(3, tmp_path / "same-classes.params")
    config = _config(tiny_args(tiny_set, "unused", "--pretrained-params", str(tmp_path / "same-classes.params")))
    built = parameter_values(build_network(config, 3, [mx.cpu()]))
    assert sorted(built) == sorted(saved)
    for key, value in saved.items():
        np.testing.assert_array_equal(built[key], value, err_msg=key)


def test_a_diverging_run_stops_at_once_and_keeps_saved_files(tiny_set, tmp_path, capsys):
    argv = tiny_args(tiny_set, tmp_path, "--lr", "1e30", "--num-epochs", "3", "--save-frequency", "1")
    assert train_imagenet.main(argv) == 3  # not 2 (bad input): retrying will not help
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the training loss became nan at epoch 0, batch" in err[0], err
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.numeric
def test_two_contexts_reduce_to_the_gradient_of_one(tmp_path):
    """One step's gradients on 2 contexts, summed through the kvstore, equal one context's on the same batch.

    BatchNorm uses global statistics here, so that per-device batch statistics (which the paper keeps, and
    which legitimately differ from whole-batch ones) do not enter.
    """
    images = mx.nd.array(np.random.RandomState(0).normal(size=(8, 3, 32, 32)))
    labels = mx.nd.array([0, 1, 2, 3, 3, 2, 1, 0])

    def reduced_gradients(contexts):
        mx.random.seed(0)
        net = get_model("resnet18_v1d", classes=4, norm_kwargs={"use_global_stats": True})
        net.initialize(mx.init.Xavier(), ctx=contexts)
        trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}, kvstore="device",
                                   update_on_kvstore=False)
        loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
        with mx.autograd.record():
            losses = [loss_fn(net(x), y) for x, y in zip(split_batch(images, contexts), split_batch(labels, contexts))]
        mx.autograd.backward(losses)
        trainer.allreduce_grads()
        return {key: param.grad(contexts[-1]).asnumpy() for key, param in net._collect_params_with_prefix().items()
                if param.grad_req != "null"}

    one, two = reduced_gradients([mx.cpu(0)]), reduced_gradients([mx.cpu(0), mx.cpu(1)])
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
