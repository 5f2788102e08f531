"""models.convert: GluonCV files load into ours and ours into GluonCV's with the same outputs; bad input is one line."""
import gluoncv
import mxnet as mx
import numpy as np
import pytest

from models import convert, get_model
from tests.helpers import randomize_parameters

pytestmark = pytest.mark.numeric

# One name per family, at the smallest input both definitions accept: GluonCV's Inception-v3 pools its last map
# with a fixed 8x8 window, so it needs 299.
CASES = [("resnet18_v1", 32), ("resnet50_v1", 32), ("resnet50_v1b", 32), ("resnet50_v1d", 32),
         ("mobilenet0.25", 32), ("mobilenetv2_0.25", 32), ("inceptionv3", 299)]
# Not GluonCV's default of 1000, so that the converter has to read the number of classes from the file.
CLASSES = 10
# Largest difference allowed between the two networks' outputs, relative to the outputs' size when that exceeds 1.
# Random BatchNorm statistics do not normalize, so through 16 bottlenecks ResNet-50's logits reach about 2,500,
# and the folded conv bias (m - b instead of x + b - m) changes float32 rounding at about 1e-6 of that size.
TOLERANCE = 1e-5


def _initialized(net, input_size):
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, input_size, input_size)))
    return net


@pytest.fixture(scope="module", params=CASES, ids=[name for name, _ in CASES])
def networks(request):
    """Name, our network, GluonCV's and the input size (built once per module: Inception-v3 at 299 is slow)."""
    name, input_size = request.param
    ours = _initialized(get_model(name, classes=CLASSES), input_size)
    theirs = _initialized(gluoncv.model_zoo.get_model(name, pretrained=False, classes=CLASSES), input_size)
    return name, ours, theirs, input_size


def _assert_same_outputs(converted, reference, input_size):
    images = mx.nd.random.normal(shape=(2, 3, input_size, input_size))
    expected = reference(images).asnumpy()
    difference = np.abs(converted(images).asnumpy() - expected).max()
    assert difference <= TOLERANCE * max(1.0, np.abs(expected).max())


def _converted_summary(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return out[0]


def test_gluoncv_file_converts_into_ours_with_the_same_outputs(networks, tmp_path, capsys):
    name, ours, theirs, input_size = networks
    randomize_parameters(theirs, seed=0)
    theirs.save_parameters(str(tmp_path / "gluoncv.params"))
    argv = ["from-gluoncv", name, str(tmp_path / "gluoncv.params"), str(tmp_path / "ours.params")]
    assert convert.main(argv) == 0
    ours.load_parameters(str(tmp_path / "ours.params"))
    _assert_same_outputs(ours, theirs, input_size)
    summary = _converted_summary(capsys)
    if name == "resnet50_v1":
        # GluonCV's bottleneck v1 has a bias on both 1x1 convs of its 16 blocks; ours folds them into BN.
        assert "32 conv biases folded" in summary
    elif name == "resnet18_v1":
        assert "mapped to" in summary and "biases" not in summary
    else:
        assert "copied unchanged" in summary


def test_our_file_converts_into_gluoncvs_with_the_same_outputs(networks, tmp_path, capsys):
    name, ours, theirs, input_size = networks
    randomize_parameters(ours, seed=1)
    ours.save_parameters(str(tmp_path / "ours.params"))
    argv = ["to-gluoncv", name, str(tmp_path / "ours.params"), str(tmp_path / "gluoncv.params")]
    assert convert.main(argv) == 0
    theirs.load_parameters(str(tmp_path / "gluoncv.params"))
    _assert_same_outputs(theirs, ours, input_size)
    if name == "resnet50_v1":
        assert "32 conv biases, which our resnet50_v1 lacks, written as zero" in _converted_summary(capsys)


@pytest.fixture(scope="module")
def gluoncv_resnet18_file(tmp_path_factory):
    """A GluonCV resnet18_v1 file and the deployable export of the same network."""
    folder = tmp_path_factory.mktemp("gluoncv")
    net = _initialized(gluoncv.model_zoo.get_model("resnet18_v1", pretrained=False, classes=CLASSES), 32)
    net.save_parameters(str(folder / "resnet18_v1.params"))
    net.hybridize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    net.export(str(folder / "export"), epoch=0)
    (folder / "notes.params").write_text("not parameters\n")
    return folder


@pytest.mark.parametrize("direction, name, file_name, message", [
    ("from-gluoncv", "resnet18_v1", "missing.params", "not found"),
    ("from-gluoncv", "resnet18_v1", "notes.params", "is not a readable MXNet .params file"),
    ("from-gluoncv", "resnet18_v9", "resnet18_v1.params", "unknown model 'resnet18_v9'"),
    ("from-gluoncv", "resnet34_v1", "resnet18_v1.params", "lacks parameter"),
    ("to-gluoncv", "resnet18_v1", "resnet18_v1.params", "has no parameter 'fc.weight'"),
    ("from-gluoncv", "resnet18_v1", "export-0000.params", "an export's -0000.params has arg:/aux: names"),
])
def test_bad_input_is_one_line(gluoncv_resnet18_file, tmp_path, capsys, direction, name, file_name, message):
    argv = [direction, name, str(gluoncv_resnet18_file / file_name), str(tmp_path / "out.params")]
    assert convert.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out.params").exists()
