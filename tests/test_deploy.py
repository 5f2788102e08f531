"""Deploying a trained network: ONNX export run by onnxruntime, eval_imagenet.py and predict.py on the tiny set."""
import json
import os
import shutil

import mxnet as mx
import numpy as np
import onnxruntime
import pytest

import eval_imagenet
import predict
import train_imagenet
from models import export_onnx, get_model
from tests.conftest import COLOURS_RGB, tiny_args
from tests.helpers import folder_top1, randomize_parameters
from utils import checkpoint

pytestmark = pytest.mark.numeric

MODEL = "resnet18_v1d"  # what tiny_args trains
RESULT_FIELDS = {"model", "params", "data", "num_images", "num_classes", "input_size", "val_input_size", "val_resize",
                 "crop_ratio", "top1_error", "top5_error", "images_per_sec", "seconds"}


def _fails_with(capsys, main, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.parametrize("name, source", [(MODEL, "model"), ("mobilenet0.25", "symbol")])
def test_onnx_export_gives_mxnets_outputs_in_onnxruntime(name, source, tmp_path):
    net = get_model(name, classes=3)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    randomize_parameters(net, seed=0)
    if source == "model":
        # Without --classes the count comes from the classes.txt that training writes beside its parameters.
        net.save_parameters(str(tmp_path / "net.params"))
        (tmp_path / "classes.txt").write_text("blue\ngreen\nred\n")
        argv = ["--model", name, "--params", str(tmp_path / "net.params")]
    else:
        net.export(str(tmp_path / "net"), epoch=0)
        argv = ["--symbol", str(tmp_path / "net-symbol.json"), "--params", str(tmp_path / "net-0000.params")]
    assert export_onnx.main(argv + ["--input-size", "32", "--output", str(tmp_path / "net.onnx")]) == 0

    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    assert [value.name for value in session.get_inputs()] == ["data"]
    images = np.random.RandomState(0).normal(size=(2, 3, 32, 32)).astype(np.float32)  # any batch, not only 1
    onnx_logits = session.run(None, {"data": images})[0]
    mxnet_logits = net(mx.nd.array(images)).asnumpy()
    assert onnx_logits.shape == (2, 3)
    assert np.abs(onnx_logits - mxnet_logits).max() <= 1e-4


def test_onnx_export_of_a_missing_file_is_one_line(tmp_path, capsys):
    argv = ["--model", MODEL, "--classes", "3", "--params", str(tmp_path / "missing.params"),
            "--output", str(tmp_path / "net.onnx")]
    _fails_with(capsys, export_onnx.main, argv, "not found")


@pytest.fixture(scope="module")
def trained(tiny_set, tmp_path_factory):
    """The save folder of a two-epoch ResNet-18-D run on the tiny set.

    Zero gamma, as in the demo: without it two epochs leave BatchNorm's running statistics so unsettled that
    the network gives every image one class, and any evaluation of it would find an error of 2/3.
    """
    save_dir = tmp_path_factory.mktemp("trained")
    assert train_imagenet.main(tiny_args(tiny_set, save_dir, "--last-gamma")) == 0
    return save_dir


def _trained_params(save_dir):
    return checkpoint.params_path(str(save_dir), MODEL, 1)


def _eval_args(tiny_set, save_dir, output, *network):
    network = network or ("--model", MODEL, "--params", _trained_params(save_dir))
    return [*network, "--rec-val", str(tiny_set / "val.rec"), "--input-size", "24", "--batch-size", "16",
            "-j", "1", "--output", str(output)]


def test_eval_reports_the_errors_that_training_measured(tiny_set, trained, tmp_path, capsys):
    assert eval_imagenet.main(_eval_args(tiny_set, trained, tmp_path / "result.json")) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert set(result) == RESULT_FIELDS
    assert (result["num_images"], result["num_classes"], result["input_size"]) == (30, 3, 24)
    assert (result["val_input_size"], result["val_resize"]) == (24, 28)  # --input-size's, when not given
    with open(checkpoint.metrics_path(str(trained))) as handle:
        last_epoch = [json.loads(line) for line in handle][-1]
    assert result["top1_error"] == pytest.approx(1 - last_epoch["val_top1"])
    assert result["top5_error"] == 0  # three classes: the true one is always among the top five
    assert result["images_per_sec"] > 0
    assert f"top-1 error {result['top1_error']:.4f}" in capsys.readouterr().out


def test_eval_of_the_deployable_export_gives_the_same_errors(tiny_set, trained, tmp_path):
    prefix = checkpoint.export_prefix(str(trained), MODEL)
    export = ("--symbol", f"{prefix}-symbol.json", "--params", f"{prefix}-0000.params")
    assert eval_imagenet.main(_eval_args(tiny_set, trained, tmp_path / "model.json")) == 0
    assert eval_imagenet.main(_eval_args(tiny_set, trained, tmp_path / "export.json", *export)) == 0
    from_model, from_export = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("model", "export"))
    assert from_export["top1_error"] == pytest.approx(from_model["top1_error"])


def test_eval_on_an_image_folder(tiny_set, trained, tmp_path):
    argv = ["--model", MODEL, "--params", _trained_params(trained), "--data-dir", str(tiny_set / "images"),
            "--input-size", "24", "--batch-size", "16", "-j", "0", "--output", str(tmp_path / "result.json")]
    assert eval_imagenet.main(argv) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["num_images"], result["num_classes"]) == (30, 3)
    # The error is 1 - the top-1 counted here image by image, and the trained network is far from chance.
    net = get_model(MODEL, classes=3)
    net.load_parameters(_trained_params(trained))
    top1 = folder_top1(net, tiny_set / "images" / "val", 24)
    assert result["top1_error"] == pytest.approx(1 - top1) and top1 > 0.9


@pytest.mark.parametrize("network, data, message", [
    ((), ("--rec-val", "val.rec"), "give either --model NAME or --symbol"),
    (("--model", MODEL, "--params", "missing.params"), ("--rec-val", "val.rec"), "--params missing.params not found"),
    (("--model", "resnet34_v1d"), ("--rec-val", "val.rec"), "does not fit the network"),
    (("--model", MODEL), ("--rec-val", "missing.rec"), "not found"),
    (("--model", MODEL), (), "give either --rec-val or --data-dir"),
])
def test_eval_bad_input_is_one_line(tiny_set, trained, tmp_path, capsys, monkeypatch, network, data, message):
    monkeypatch.chdir(tiny_set)
    if "--params" not in network:
        network = network + ("--params", _trained_params(trained))
    argv = [*network, *data, "--input-size", "24", "-j", "1"]
    _fails_with(capsys, eval_imagenet.main, argv, message)


def test_eval_refuses_data_whose_classes_differ_from_training(tiny_set, trained, tmp_path, capsys):
    params = tmp_path / "net.params"
    shutil.copyfile(_trained_params(trained), params)
    (tmp_path / "classes.txt").write_text("cyan\nmagenta\nyellow\n")
    argv = ["--model", MODEL, "--params", str(params), "--rec-val", str(tiny_set / "val.rec"), "--input-size", "24"]
    _fails_with(capsys, eval_imagenet.main, argv, "differ from the 3 in")


def test_predict_agrees_with_eval_on_the_validation_folder(tiny_set, trained, tmp_path):
    # Not the right colour (test_eval_on_an_image_folder counts those): that predict.py, image by image, finds
    # what eval_imagenet.py finds on the same files with the same preprocessing.
    images = sorted(str(path) for path in (tiny_set / "images" / "val").glob("*/*.png"))
    argv = ["--model", MODEL, "--params", _trained_params(trained), "--input-size", "24", *images]
    results = list(predict.run(predict.build_parser().parse_args(argv)))
    assert [path for path, _ in results] == images
    for _, ranked in results:
        assert sorted(name for name, _ in ranked) == sorted(COLOURS_RGB)  # three classes: all three listed
        probabilities = [probability for _, probability in ranked]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1, abs=1e-5)
    correct = sum(ranked[0][0] == os.path.basename(os.path.dirname(path)) for path, ranked in results)

    argv = ["--model", MODEL, "--params", _trained_params(trained), "--data-dir", str(tiny_set / "images"),
            "--input-size", "24", "--batch-size", "16", "-j", "0", "--output", str(tmp_path / "result.json")]
    assert eval_imagenet.main(argv) == 0
    top1_error = json.loads((tmp_path / "result.json").read_text())["top1_error"]
    assert correct == round((1 - top1_error) * len(images))


def test_predict_prints_five_classes_at_most_with_names_and_probabilities(tiny_set, trained, capsys):
    images = [str(tiny_set / "images" / "val" / colour / "0.png") for colour in COLOURS_RGB]
    argv = ["--model", MODEL, "--params", _trained_params(trained), "--input-size", "24", *images]
    assert predict.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(images) * (1 + len(COLOURS_RGB))
    for position, image in enumerate(images):
        assert lines[position * 4] == image
        ranks = [line.split() for line in lines[position * 4 + 1:position * 4 + 4]]
        assert [rank for rank, _, _ in ranks] == ["1.", "2.", "3."]
        assert sorted(name for _, name, _ in ranks) == sorted(COLOURS_RGB)
        assert sum(float(probability) for _, _, probability in ranks) == pytest.approx(1, abs=2e-4)


def test_predict_bad_input_is_one_line(tiny_set, trained, tmp_path, capsys):
    image = str(tiny_set / "images" / "val" / "red" / "0.png")
    params = ["--model", MODEL, "--params", _trained_params(trained), "--input-size", "24"]
    _fails_with(capsys, predict.main, [*params, str(tmp_path / "missing.png")], "image")
    _fails_with(capsys, predict.main, [*params, "--classes-file", str(tmp_path / "none.txt"), image],
                "no class list at")
    (tmp_path / "notes.png").write_text("not an image\n")
    _fails_with(capsys, predict.main, [*params, str(tmp_path / "notes.png")], "cannot decode")
