"""Stochastic depth (--drop-path): per-sample masks and scale, the linear decay of the rates, inference, names,
training through the trainer, and two devices."""
import json
import math
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from mxnet.gluon import nn

import train_imagenet
from engine.config import parse_config
from engine.recipe import build_network
from models import get_model
from models.drop_path import drop_path
from models.resnet import BasicBlock, Bottleneck
from tests.conftest import ONE_EPOCH, tiny_args
from tests.helpers import RunRecorder
from utils.devices import build_contexts, split_batch
from utils.errors import UserError
from utils.seeding import epoch_seed

pytestmark = pytest.mark.numeric

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def _kept_fraction_bounds(rate, samples):
    """1 - rate, plus or minus four standard errors of a fraction of ``samples`` Bernoulli draws."""
    error = 4 * math.sqrt(rate * (1 - rate) / samples)
    return 1 - rate - error, 1 - rate + error


def _per_sample(values):
    """(N, ...) -> (N, rest) so that a check can run over each sample."""
    return values.reshape(values.shape[0], -1)


def test_training_drops_whole_samples_and_scales_the_kept_ones_by_one_over_keep():
    """1000 samples of ones at rate 0.25: each sample is all 0 or all 1 / 0.75 = 4/3, about 750 of them kept
    (standard error of the fraction sqrt(0.25 x 0.75 / 1000) = 0.0137); the gradient passes the same mask."""
    mx.random.seed(0)
    ones = mx.nd.ones((1000, 3, 4, 4))
    ones.attach_grad()
    with autograd.record():
        out = drop_path(mx.nd, ones, 0.25)
    out.backward()
    values = _per_sample(out.asnumpy())
    kept = values[:, 0] != 0
    assert ((values == 0) | (values == np.float32(4 / 3))).all()
    assert (values == values[:, :1]).all()
    low, high = _kept_fraction_bounds(0.25, 1000)
    assert low < kept.mean() < high
    np.testing.assert_array_equal(ones.grad.asnumpy(), out.asnumpy())


def test_inference_is_the_identity_and_rate_zero_adds_no_operator():
    images = mx.nd.random.normal(shape=(8, 3, 5, 5))
    np.testing.assert_array_equal(drop_path(mx.nd, images, 0.5).asnumpy(), images.asnumpy())
    with autograd.train_mode():
        assert drop_path(mx.nd, images, 0.0) is images
    data = mx.sym.var("data")
    assert drop_path(mx.sym, data, 0.0) is data
    assert drop_path(mx.sym, data, 0.3).get_internals().list_outputs()[-1].startswith("dropout")


def _bottleneck_branch(block, x):
    out = mx.nd.relu(block.bn1(block.conv1(x)))
    out = mx.nd.relu(block.bn2(block.conv2(out)))
    return block.bn3(block.conv3(out))


def _basic_branch(block, x):
    return block.bn2(block.conv2(mx.nd.relu(block.bn1(block.conv1(x)))))


@pytest.mark.parametrize("block_class, width, branch", [(BasicBlock, 4, _basic_branch),
                                                        (Bottleneck, 2, _bottleneck_branch)],
                         ids=["basic", "bottleneck"])
def test_a_residual_block_drops_its_branch_before_the_shortcut_is_added(block_class, width, branch):
    """400 samples through a block of rate 0.25 in training: a dropped sample gives ReLU(x), the shortcut alone; a
    kept one ReLU(branch / 0.75 + x). The branch is recomputed by hand in training mode (BatchNorm's statistics of
    the batch, which the mask does not change)."""
    mx.random.seed(1)
    block = block_class(width, 1, None, False, {}, drop_rate=0.25)
    block.initialize(mx.init.Xavier())
    images = mx.nd.random.normal(shape=(400, width * block_class.expansion, 4, 4))
    with autograd.train_mode():
        out = _per_sample(block(images).asnumpy())
        kept_branch = _per_sample(branch(block, images).asnumpy()) / np.float32(0.75)
    shortcut = _per_sample(images.asnumpy())
    dropped = (out == np.maximum(shortcut, 0)).all(axis=1)
    low, high = _kept_fraction_bounds(0.25, 400)
    assert low < 1 - dropped.mean() < high
    np.testing.assert_allclose(out[~dropped], np.maximum(kept_branch + shortcut, 0)[~dropped], rtol=1e-5, atol=1e-5)


def _dropout_rates(net, input_size=32):
    """The p of every Dropout operator of ``net``'s hybridized graph, in graph order, and their axes."""
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, input_size, input_size)))
    nodes = [node for node in json.loads(net._cached_graph[1].tojson())["nodes"] if node["op"] == "Dropout"]
    return [float(node["attrs"]["p"]) for node in nodes], {node["attrs"]["axes"] for node in nodes}


# RATE x l / L at RATE 0.2: ResNet-18's 8 basic blocks step by 0.2 / 8 = 0.025, ResNet-50's 16 bottlenecks by 0.0125.
RESNET18_RATES = [0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2]
RESNET50_RATES = [0.0125, 0.025, 0.0375, 0.05, 0.0625, 0.075, 0.0875, 0.1,
                  0.1125, 0.125, 0.1375, 0.15, 0.1625, 0.175, 0.1875, 0.2]


VARIANTS = ("v1", "v1b", "v1c", "v1d")


@pytest.mark.parametrize("name, rates", [(f"resnet18_{variant}", RESNET18_RATES) for variant in VARIANTS]
                         + [(f"resnet50_{variant}", RESNET50_RATES) for variant in VARIANTS])
def test_every_block_of_every_resnet_drops_at_rate_times_its_depth_over_the_blocks(name, rates):
    actual_rates, axes = _dropout_rates(get_model(name, classes=10, drop_path=0.2))
    assert actual_rates == pytest.approx(rates) and axes == {"(1, 2, 3)"}
    assert _dropout_rates(get_model(name, classes=10)) == ([], set())


def test_mobilenet_v2_counts_all_17_blocks_and_drops_the_10_with_a_shortcut():
    """At RATE 0.17 block l of 17 has rate 0.01 x l; blocks 3, 5, 6, 8, 9, 10, 12, 13, 15 and 16 keep their
    width at stride 1 (Sandler et al., Table 2), so only they have an identity shortcut to fall back on."""
    rates, axes = _dropout_rates(get_model("mobilenetv2_0.25", classes=10, drop_path=0.17))
    assert rates == pytest.approx([0.03, 0.05, 0.06, 0.08, 0.09, 0.10, 0.12, 0.13, 0.15, 0.16])
    assert axes == {"(1, 2, 3)"}


@pytest.mark.parametrize("name, network", [("mobilenet1.0", "MobileNet v1"), ("inceptionv3", "Inception-v3")])
def test_drop_path_without_residual_blocks_is_a_user_error(name, network):
    with pytest.raises(UserError) as error:
        get_model(name, classes=10, drop_path=0.1)
    assert str(error.value) == f"{network} has no residual blocks, so --drop-path does not apply"
    get_model(name, classes=10, drop_path=0.0)


def test_parameter_names_are_the_golden_ones():
    """No parameter is added, so .params files load as before, GluonCV's included."""
    net = get_model("resnet50_v1d", classes=1000, drop_path=0.3)
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    actual = [f"{key} {tuple(value.shape)}" for key, value in sorted(net._collect_params_with_prefix().items())]
    with open(os.path.join(GOLDEN, "resnet50_v1d.params.txt")) as handle:
        assert actual == handle.read().splitlines()


def test_inference_equals_the_network_without_drop_path_on_the_same_weights(tmp_path):
    mx.random.seed(2)
    images = mx.nd.random.normal(shape=(4, 3, 32, 32))
    dropping = get_model("resnet18_v1d", classes=10, drop_path=0.5)
    dropping.initialize(mx.init.Xavier())
    dropping.hybridize(static_alloc=True, static_shape=True)
    with autograd.record():  # one training step's forward pass moves BatchNorm's running statistics
        dropping(images)
    dropping.save_parameters(str(tmp_path / "dropping.params"))
    plain = get_model("resnet18_v1d", classes=10)
    plain.load_parameters(str(tmp_path / "dropping.params"))
    np.testing.assert_array_equal(dropping(images).asnumpy(), plain(images).asnumpy())


def test_hybridized_resnet18_d_trains_a_step_and_is_deterministic_at_inference():
    """build_network's static graph: two training passes of the same images differ (ResNet-18-D at rate 0.5
    keeps all 8 branches of a sample with probability 0.9375 x 0.875 x ... x 0.5 = 0.06), inference does not.
    Without zero-gamma (the demo's default), whose branches start at 0 and pass the step no gradient."""
    config = parse_config(["--model", "resnet18_v1d", "--input-size", "32", "--drop-path", "0.5", "--no-last-gamma"])
    mx.random.seed(3)
    net = build_network(config, 10, [mx.cpu()])
    images, labels = mx.nd.random.normal(shape=(8, 3, 32, 32)), mx.nd.array([0, 1, 2, 3, 4, 5, 6, 7])
    net(images)
    before = {key: param.data().asnumpy() for key, param in net._collect_params_with_prefix().items()}
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    with autograd.record():
        first = net(images)
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(first, labels)
    loss.backward()
    trainer.step(8)
    assert np.isfinite(loss.asnumpy()).all()
    after = {key: param.data().asnumpy() for key, param in net._collect_params_with_prefix().items()}
    assert not np.array_equal(after["layer4.1.conv2.weight"], before["layer4.1.conv2.weight"])
    with autograd.record():
        second, third = net(images).asnumpy(), net(images).asnumpy()
    assert np.abs(second - third).max() > 0.01
    np.testing.assert_array_equal(net(images).asnumpy(), net(images).asnumpy())


class _DropPathAlone(nn.HybridBlock):
    """Only the drop of a branch, to read the masks a device draws."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate

    def hybrid_forward(self, F, x):
        return drop_path(F, x, self.rate)


def test_on_two_devices_each_drops_whole_samples_of_its_slice_at_the_rate():
    """A batch of 2 x 500 ones split over two CPU contexts, through the static graph: on each device every sample
    is all 0 or all 4/3 and about 375 of 500 are kept (standard error 0.019). The devices draw independent masks:
    sample i of the two slices agree with probability 0.75^2 + 0.25^2 = 0.625 (standard error 0.022), not 1."""
    contexts = build_contexts(num_cpu_contexts=2)
    mx.random.seed(4)
    block = _DropPathAlone(0.25)
    block.hybridize(static_alloc=True, static_shape=True)
    with autograd.record():
        slices = [_per_sample(block(part).asnumpy()) for part in split_batch(mx.nd.ones((1000, 3, 4, 4)), contexts)]
    low, high = _kept_fraction_bounds(0.25, 500)
    for values in slices:
        assert ((values == 0) | (values == np.float32(4 / 3))).all() and (values == values[:, :1]).all()
        assert low < (values[:, 0] != 0).mean() < high
    agreement = ((slices[0][:, 0] != 0) == (slices[1][:, 0] != 0)).mean()
    assert abs(agreement - 0.625) < 4 * math.sqrt(0.625 * 0.375 / 500)


def test_on_two_devices_the_same_images_get_other_masks_in_training_only():
    """ResNet-18-D at rate 0.5 on two CPU contexts, each given the same 8 images: in inference both devices give
    the same outputs, in training they differ, since each device draws its own masks (the batch statistics of
    BatchNorm are the same on both). Without zero-gamma, whose branches start at 0 with nothing to drop."""
    contexts = build_contexts(num_cpu_contexts=2)
    config = parse_config(["--model", "resnet18_v1d", "--input-size", "32", "--drop-path", "0.5", "--no-last-gamma"])
    mx.random.seed(5)
    net = build_network(config, 10, contexts)
    images = mx.nd.random.normal(shape=(8, 3, 32, 32))
    copies = [images.as_in_context(context) for context in contexts]
    inference = [net(copy).asnumpy() for copy in copies]
    np.testing.assert_allclose(inference[0], inference[1], rtol=1e-5, atol=1e-6)
    with autograd.record():
        training = [net(copy).asnumpy() for copy in copies]
    assert np.abs(training[0] - training[1]).max() > 0.01


def _two_training_passes(recorder):
    """The trained network on the first recorded batch, twice in training mode."""
    images = mx.nd.array(recorder.batches[0]["images"][0])
    with autograd.record():
        return recorder.net(images).asnumpy(), recorder.net(images).asnumpy()


@pytest.mark.parametrize("flags, differ", [(("--drop-path", "0.5"), True), ((), False)],
                         ids=["drop-path", "without"])
def test_the_flag_reaches_the_trained_network(flags, differ, tiny_set, tmp_path, monkeypatch):
    recorder = RunRecorder(monkeypatch)
    assert train_imagenet.main(tiny_args(tiny_set, tmp_path, *ONE_EPOCH, *flags)) == 0
    first, second = _two_training_passes(recorder)
    assert (np.abs(first - second).max() > 1e-3) == differ
    if not differ:
        np.testing.assert_array_equal(first, second)


def test_the_flag_on_a_network_without_residual_blocks_is_one_line(tiny_set, tmp_path, capsys):
    assert train_imagenet.main(tiny_args(tiny_set, tmp_path, "--model", "mobilenet1.0", "--drop-path", "0.1")) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: MobileNet v1 has no residual blocks, so --drop-path does not apply"]


def test_each_dist_worker_draws_its_own_masks():
    """Workers seed what the network draws from (--seed, epoch, rank); rank 0 keeps the one-machine stream."""
    assert epoch_seed(3, 2, 0) == epoch_seed(3, 2)
    assert len({epoch_seed(3, 2, rank) for rank in range(4)}) == 4
