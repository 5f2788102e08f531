"""ResNet and its tweaks: structure, figures of section 4, initialization, parameter-name contract."""
import math
import os

import gluoncv
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd
from mxnet.gluon import nn

from engine.config import parse_config
from engine.recipe import build_network
from models import get_model, model_names
from models.complexity import count_multiply_adds, count_parameters
from models.mobilenet import InvertedResidual
from tests.helpers import randomize_parameters
from utils.errors import UserError

pytestmark = pytest.mark.numeric

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def _built(name, **kwargs):
    net = get_model(name, classes=kwargs.pop("classes", 1000), **kwargs)
    net.initialize(mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3))
    net(mx.nd.zeros((1, 3, 32, 32)))
    return net


def _strides(conv):
    return conv._kwargs["stride"]


def test_original_resnet50_strides_the_first_1x1_and_uses_a_7x7_stem():
    net = _built("resnet50_v1")
    assert net.conv1._kwargs["kernel"] == (7, 7) and _strides(net.conv1) == (2, 2)
    block = net.layer2[0]
    assert _strides(block.conv1) == (2, 2) and _strides(block.conv2) == (1, 1)
    assert _strides(block.downsample[0]) == (2, 2) and block.downsample[0]._kwargs["kernel"] == (1, 1)


def test_resnet_b_moves_the_stride_to_the_3x3():
    block = _built("resnet50_v1b").layer3[0]
    assert _strides(block.conv1) == (1, 1) and _strides(block.conv2) == (2, 2)
    assert block.conv2._kwargs["kernel"] == (3, 3)


def test_resnet_c_stem_is_three_3x3_convs_32_32_64():
    stem = _built("resnet50_v1c").conv1
    convs = [layer for layer in stem if isinstance(layer, nn.Conv2D)]
    assert [conv._channels for conv in convs] == [32, 32, 64]
    assert [conv._kwargs["kernel"] for conv in convs] == [(3, 3)] * 3
    assert [_strides(conv) for conv in convs] == [(2, 2), (1, 1), (1, 1)]


def test_resnet_d_shortcut_average_pools_before_a_stride_1_projection():
    net = _built("resnet50_v1d")
    pool, conv, _ = net.layer2[0].downsample
    assert isinstance(pool, nn.AvgPool2D)
    assert pool._kwargs["kernel"] == (2, 2) and pool._kwargs["stride"] == (2, 2)
    assert _strides(conv) == (1, 1)
    assert isinstance(net.conv1, nn.HybridSequential)


@pytest.mark.parametrize("name, multiply_adds_g", [
    ("resnet50_v1", 3.86), ("resnet50_v1b", 4.09), ("resnet50_v1c", 4.33), ("resnet50_v1d", 4.33)])
def test_multiply_adds_and_parameters_match_the_papers_figures(name, multiply_adds_g):
    net = _built(name)
    assert count_multiply_adds(net, 224) / 1e9 == pytest.approx(multiply_adds_g, rel=0.02)
    assert count_parameters(net) / 1e6 == pytest.approx(25.6, rel=0.02)


def test_multiply_adds_of_a_single_conv_worked_by_hand():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(8, kernel_size=3, padding=1, in_channels=3), nn.Flatten(), nn.Dense(10, in_units=8 * 16 * 16))
    net.initialize()
    # conv: 16*16 outputs x 8 channels x (3 x 3 x 3) each; dense: 2048 x 10.
    assert count_multiply_adds(net, 16) == 16 * 16 * 8 * 27 + 2048 * 10


@pytest.mark.parametrize("name, last_bn", [("resnet50_v1d", "bn3"), ("resnet18_v1d", "bn2")])
def test_zero_gamma_zeroes_exactly_the_last_bn_of_every_block(name, last_bn):
    net = _built(name, last_gamma=True)
    gammas = {key: value.data().asnumpy() for key, value in net._collect_params_with_prefix().items()
              if key.endswith("gamma")}
    zero = {key for key, value in gammas.items() if not value.any()}
    blocks = sum(len(getattr(net, f"layer{i}")) for i in range(1, 5))
    assert len(zero) == blocks
    assert all(key.split(".")[-2] == last_bn for key in zero)
    assert all((value == 1).all() for key, value in gammas.items() if key not in zero)
    assert not any(key in zero for key in gammas if "downsample" in key)


@pytest.mark.parametrize("flag, zero_gammas", [
    ("--no-last-gamma", set()),
    ("--last-gamma", {f"layer{stage}.{block}.bn2.gamma" for stage in range(1, 5) for block in (0, 1)}),
], ids=["unit-gamma", "zero-gamma"])
def test_the_trainer_initializes_as_the_paper_says(flag, zero_gammas):
    """Section 2 through build_network: Xavier uniform weights, zero biases, gamma 1, beta 0.

    MXNet's Xavier with magnitude 3 averaging the fans draws from U(-s, s), s = sqrt(3 / ((fan_in + fan_out) / 2)),
    of variance s^2 / 3. layer4.0.conv1 (512 x 256 x 3 x 3, 1.2 million weights) has fan_in 2304 and fan_out 4608:
    s = sqrt(3 / 3456) = 0.02946 and variance 1 / 3456 = 2.894e-4 (averaging only fan_in would give 4.34e-4,
    only fan_out 2.17e-4).
    """
    config = parse_config(
        ["--model", "resnet18_v1d", "--input-size", "32", flag])
    mx.random.seed(0)
    net = build_network(config, 10, [mx.cpu()])
    net(mx.nd.zeros((1, 3, 32, 32)))
    params = {key: param.data().asnumpy() for key, param in net._collect_params_with_prefix().items()}
    weight = params["layer4.0.conv1.weight"]
    bound = np.float32(math.sqrt(3 / 3456))  # the weights are float32, their bound too
    assert bound * 0.999 < np.abs(weight).max() <= bound  # uniform: it reaches its bound, a normal would pass it
    assert weight.var() == pytest.approx(1 / 3456, rel=0.01)
    assert abs(weight.mean()) < 1e-4
    assert not params["fc.bias"].any()
    for key, value in params.items():
        if key.endswith("gamma"):
            assert (value == (0 if key in zero_gammas else 1)).all(), key
        elif key.endswith(("beta", "running_mean")):
            assert not value.any(), key
        elif key.endswith("running_var"):
            assert (value == 1).all(), key
        elif key.endswith("weight"):
            receptive_field = math.prod(value.shape[2:])
            fans = (value.shape[1] + value.shape[0]) * receptive_field
            assert np.abs(value).max() <= np.float32(math.sqrt(6 / fans)), key
        else:
            assert key == "fc.bias", key


def test_resnet_d_shortcut_pools_odd_maps_as_gluoncv_does(tmp_path):
    """At 33 pixels the stages see odd maps (9, then 5, then 3) whose last 2x2 pooling window hangs over the
    edge: ceil_mode keeps that window, so the shortcut matches path A's 5, 3 and 2, and it averages only the
    pixels inside. With GluonCV's resnet50_v1d weights our network must give GluonCV's outputs. (MXNet counts
    no pixel outside the map, padding being 0, whatever count_include_pad says.)"""
    images = mx.nd.array(np.random.RandomState(0).normal(size=(2, 3, 33, 33)))
    theirs = gluoncv.model_zoo.get_model("resnet50_v1d", pretrained=False, classes=10)
    theirs.initialize()
    theirs(images)
    randomize_parameters(theirs, seed=0)
    theirs.save_parameters(str(tmp_path / "gluoncv.params"))
    ours = get_model("resnet50_v1d", classes=10)
    ours.initialize()
    ours(images)
    ours.load_parameters(str(tmp_path / "gluoncv.params"))
    features = ours.maxpool(ours.relu(ours.bn1(ours.conv1(images))))
    sizes = []
    for stage in (ours.layer1, ours.layer2, ours.layer3, ours.layer4):
        features = stage(features)
        sizes.append(features.shape[-1])
    assert sizes == [9, 5, 3, 2]
    expected = theirs(images).asnumpy()
    assert np.abs(ours(images).asnumpy() - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())


def test_parameter_names_and_shapes_are_frozen():
    """A trained .params file must keep loading: names and shapes are a contract (tests/golden)."""
    net = _built("resnet50_v1d")
    actual = [f"{key} {tuple(value.shape)}" for key, value in sorted(net._collect_params_with_prefix().items())]
    with open(os.path.join(GOLDEN, "resnet50_v1d.params.txt")) as handle:
        assert actual == handle.read().splitlines()


def test_narrow_stages_keep_the_parameter_names_and_scale_the_widths():
    """``stage_widths`` (the tests' narrow networks) changes shapes only: ResNet-50-D at (8, 16, 32, 64) has the
    frozen names, its stages' outputs are 4 x 8 ... 4 x 64 wide, and the classifier reads 256 features."""
    net = _built("resnet50_v1d", stage_widths=(8, 16, 32, 64), stem_width=8)
    shapes = {key: value.shape for key, value in net._collect_params_with_prefix().items()}
    with open(os.path.join(GOLDEN, "resnet50_v1d.params.txt")) as handle:
        assert sorted(shapes) == [line.split(" ")[0] for line in handle.read().splitlines()]
    assert shapes["conv1.0.weight"] == (8, 3, 3, 3) and shapes["conv1.6.weight"] == (16, 8, 3, 3)
    assert [shapes[f"layer{stage}.0.conv3.weight"][0] for stage in range(1, 5)] == [32, 64, 128, 256]
    assert shapes["fc.weight"] == (1000, 256)


@pytest.mark.parametrize("name", model_names())
def test_every_model_trains_hybridized(name):
    mx.random.seed(0)
    # Inception-v3's second grid reduction leaves an empty map below 75x75.
    input_size = 75 if name == "inceptionv3" else 32
    net = get_model(name, classes=7)
    net.initialize(mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3))
    net.hybridize(static_alloc=True, static_shape=True)
    images = mx.nd.random.normal(shape=(2, 3, input_size, input_size))
    with autograd.record():
        output = net(images)
        loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(output, mx.nd.array([1, 3]))
    loss.backward()
    assert output.shape == (2, 7)
    assert np.isfinite(output.asnumpy()).all()
    # MobileNet v2's linear bottleneck (Sandler et al. 2018, section 3.2) ends in a BatchNorm that reaches the
    # loss only through bias-free convs and further BatchNorms, which in training mode subtract any constant
    # shift: its beta has no gradient by construction, only rounding noise (exactly 0 on 1x1 maps).
    blocks = []
    net.apply(blocks.append)
    shift_invariant = {id(block.out[-1].beta) for block in blocks if isinstance(block, InvertedResidual)}
    for key, param in net._collect_params_with_prefix().items():
        if param.grad_req != "null" and id(param) not in shift_invariant:
            grad = param.grad().asnumpy()
            assert np.isfinite(grad).all() and grad.any(), key


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UserError, match="unknown model 'resnet51'.*resnet50_v1d"):
        get_model("resnet51")
