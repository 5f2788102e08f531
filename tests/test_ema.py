"""--model-ema: the moving average of the weights against numbers worked by hand, in the loop, in the saved files."""
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

import train_imagenet
from engine.config import parse_config
from engine.loop import evaluate, train_one_epoch
from engine.recipe import build_data, build_recipe
from models import get_model
from tests.conftest import ONE_EPOCH, tiny_args
from tests.helpers import parameter_values
from utils import checkpoint
from utils.devices import build_contexts
from utils.ema import ModelEma
from utils.seeding import epoch_seed, seed_everything

pytestmark = pytest.mark.numeric

DEVICES = {"1 device": [mx.cpu(0)], "2 devices": [mx.cpu(0), mx.cpu(1)]}


def _dense_pair(contexts):
    """A Dense(1) on two inputs, and a second one to hold its average."""
    trained, averaged = nn.Dense(1, in_units=2), nn.Dense(1, in_units=2)
    trained.initialize(ctx=contexts)
    averaged.initialize(ctx=contexts)
    return trained, averaged


def _set(net, weight, bias):
    net.weight.set_data(mx.nd.array([weight]))
    net.bias.set_data(mx.nd.array(bias))


def _assert_average(model_ema, weight, bias):
    """Every device's copy of the average holds exactly these values."""
    for ctx in model_ema.averaged.weight.list_ctx():
        np.testing.assert_array_equal(model_ema.averaged.weight.data(ctx).asnumpy(), [weight], err_msg=str(ctx))
        np.testing.assert_array_equal(model_ema.averaged.bias.data(ctx).asnumpy(), bias, err_msg=str(ctx))


@pytest.mark.parametrize("devices", DEVICES)
def test_three_updates_at_decay_one_half_give_the_numbers_worked_by_hand(devices):
    trained, averaged = _dense_pair(DEVICES[devices])
    model_ema = ModelEma(trained, averaged, decay=0.5)
    _set(trained, [1, 2], [4])
    model_ema.start()
    _assert_average(model_ema, [1, 2], [4])  # ema_0 = w_0
    # ema <- 0.5 ema + 0.5 w after each step:
    steps = [([3, -2], [0], [2, 0], [2]),  # 0.5 [1, 2 | 4] + 0.5 [3, -2 | 0]
             ([5, 6], [8], [3.5, 3], [5]),  # 0.5 [2, 0 | 2] + 0.5 [5, 6 | 8]
             ([-1, 10], [2], [1.25, 6.5], [3.5])]  # 0.5 [3.5, 3 | 5] + 0.5 [-1, 10 | 2]
    for weight, bias, expected_weight, expected_bias in steps:
        _set(trained, weight, bias)
        model_ema.update()
        _assert_average(model_ema, expected_weight, expected_bias)
    # The closed form: d^3 w_0 + (1 - d)(d^2 w_1 + d w_2 + w_3) = [0.125, 0.25 | 0.5] + 0.5 [2.25, 12.5 | 6].
    assert model_ema.steps_seen == 3


@pytest.mark.parametrize("devices", DEVICES)
def test_every_second_step_updates_with_the_decay_squared(devices):
    trained, averaged = _dense_pair(DEVICES[devices])
    model_ema = ModelEma(trained, averaged, decay=0.5, every_steps=2)
    assert model_ema.step_decay == 0.25
    _set(trained, [0, 4], [8])
    model_ema.start()
    # Odd steps leave the average as it is, whatever the weights; even steps: ema <- 0.25 ema + 0.75 w.
    steps = [([100, -100], [100], [0, 4], [8]),
             ([4, 0], [0], [3, 1], [2]),                # 0.25 [0, 4 | 8] + 0.75 [4, 0 | 0]
             ([100, -100], [100], [3, 1], [2]),
             ([8, 8], [4], [6.75, 6.25], [3.5]),        # 0.25 [3, 1 | 2] + 0.75 [8, 8 | 4]
             ([100, -100], [100], [6.75, 6.25], [3.5]),
             ([-4, 4], [12], [-1.3125, 4.5625], [9.875])]  # 0.25 [6.75, 6.25 | 3.5] + 0.75 [-4, 4 | 12]
    for weight, bias, expected_weight, expected_bias in steps:
        _set(trained, weight, bias)
        model_ema.update()
        _assert_average(model_ema, expected_weight, expected_bias)


def _batch_norm_net():
    net = nn.HybridSequential()
    net.add(nn.Dense(2, in_units=2), nn.BatchNorm(in_channels=2))
    net.initialize()
    return net


def test_batchnorm_statistics_are_copied_not_averaged():
    trained, averaged = _batch_norm_net(), _batch_norm_net()
    model_ema = ModelEma(trained, averaged, decay=0.5)
    batch_norm = trained[1]
    for param, value in ((batch_norm.gamma, [1, 3]), (batch_norm.beta, [0, 2]),
                         (batch_norm.running_mean, [4, 8]), (batch_norm.running_var, [2, 6])):
        param.set_data(mx.nd.array(value))
    model_ema.start()
    for param, value in ((batch_norm.gamma, [3, 5]), (batch_norm.beta, [2, -2]),
                         (batch_norm.running_mean, [0, 2]), (batch_norm.running_var, [8, 4])):
        param.set_data(mx.nd.array(value))
    model_ema.update()
    values = parameter_values(averaged)
    # gamma and beta are trained: averaged. The running statistics wait for copy_statistics ...
    np.testing.assert_array_equal(values["1.gamma"], [2, 4])
    np.testing.assert_array_equal(values["1.beta"], [1, 0])
    np.testing.assert_array_equal(values["1.running_mean"], [4, 8])
    np.testing.assert_array_equal(values["1.running_var"], [2, 6])
    # ... which gives the average the network's, and nothing else.
    model_ema.copy_statistics()
    values = parameter_values(averaged)
    np.testing.assert_array_equal(values["1.running_mean"], [0, 2])
    np.testing.assert_array_equal(values["1.running_var"], [8, 4])
    np.testing.assert_array_equal(values["1.gamma"], [2, 4])


def _trained_values(net):
    return {key: param.data(param.list_ctx()[0]).asnumpy() for key, param in net._collect_params_with_prefix().items()
            if param.grad_req != "null"}


@pytest.mark.parametrize("devices", [1, 2])
def test_an_epoch_averages_the_weights_of_every_second_step_and_ends_with_the_networks_statistics(tiny_set, devices):
    """One epoch of 6 steps with --model-ema-decay 0.5 --model-ema-steps 2: the average is 0.25 ema + 0.75 w at
    steps 2, 4 and 6, from the weights before the first step; on every device, BatchNorm's statistics included."""
    config = parse_config(tiny_args(tiny_set, "unused", "--model-ema", "--model-ema-decay", "0.5",
                                    "--model-ema-steps", "2", "--num-cpu-contexts", str(devices),
                                    "--batch-size", str(16 // devices)))
    contexts = build_contexts(num_cpu_contexts=devices)
    data = build_data(config, contexts)
    recipe = build_recipe(config, data, contexts)
    weights = []  # the network's trained weights before the first step and after each

    def recording_step(batch_size, step=recipe.trainer.step):
        if not weights:
            weights.append(_trained_values(recipe.net))
        step(batch_size)
        weights.append(_trained_values(recipe.net))

    recipe.trainer.step = recording_step
    seed_everything(epoch_seed(config.seed, 0))
    train_one_epoch(0, recipe, data, contexts, config)
    assert len(weights) == 7 and recipe.model_ema.steps_seen == 6
    expected = {key: value.astype(np.float64) for key, value in weights[0].items()}
    for step in (2, 4, 6):
        expected = {key: 0.25 * value + 0.75 * weights[step][key] for key, value in expected.items()}
    assert max(np.abs(weights[6][key] - expected[key]).max() for key in expected) > 1e-3  # not the weights
    trained = dict(recipe.net._collect_params_with_prefix())
    for key, param in recipe.model_ema.averaged._collect_params_with_prefix().items():
        for ctx in contexts:
            if key in expected:
                np.testing.assert_allclose(param.data(ctx).asnumpy(), expected[key], rtol=1e-6, atol=1e-7,
                                           err_msg=f"{key} on {ctx}")
            else:  # running statistics: the network's, averaged over its devices at the end of the epoch
                np.testing.assert_array_equal(param.data(ctx).asnumpy(), trained[key].data(ctx).asnumpy(),
                                              err_msg=f"{key} on {ctx}")


@pytest.mark.parametrize("export_ema", [False, True], ids=["export of the network", "--export-ema"])
def test_the_average_is_evaluated_saved_and_exported_by_the_rule(export_ema, tiny_set, tmp_path):
    flags = [*ONE_EPOCH, "--model-ema", "--model-ema-decay", "0.9"] + (["--export-ema"] if export_ema else [])
    assert train_imagenet.main(tiny_args(tiny_set, tmp_path, *flags)) == 0
    with open(checkpoint.metrics_path(str(tmp_path))) as handle:
        (record,) = [json.loads(line) for line in handle]
    network, average = (get_model("resnet18_v1d", classes=3) for _ in range(2))
    network.load_parameters(checkpoint.params_path(str(tmp_path), "resnet18_v1d", 0))
    average.load_parameters(checkpoint.ema_params_path(str(tmp_path), "resnet18_v1d", 0))
    # The checkpoint holds the same average as the final file.
    saved = mx.nd.load(checkpoint.ema_params_path(str(tmp_path), "resnet18_v1d", 0))
    in_checkpoint = mx.nd.load(str(tmp_path / "checkpoints" / "epoch-0000" / "resnet18_v1d-ema-0000.params"))
    assert sorted(saved) == sorted(in_checkpoint)
    for key in saved:
        np.testing.assert_array_equal(saved[key].asnumpy(), in_checkpoint[key].asnumpy(), err_msg=key)
    # The metrics line's figures are the saved average's, on the validation set ...
    config = parse_config(tiny_args(tiny_set, "unused"))
    measured = evaluate(average, build_data(config, [mx.cpu()]), [mx.cpu()])
    assert (record["val_top1_ema"], record["val_top5_ema"]) == (measured["val_top1"], measured["val_top5"])
    assert f"val-top1-ema={record['val_top1_ema']:.4f} val-top5-ema=" in (tmp_path / "train.log").read_text()
    # ... and the export computes what the average computes with --export-ema, the network otherwise.
    prefix = checkpoint.export_prefix(str(tmp_path), "resnet18_v1d")
    deployable = mx.gluon.SymbolBlock.imports(f"{prefix}-symbol.json", ["data"], f"{prefix}-0000.params")
    images = mx.nd.array(np.random.RandomState(0).normal(size=(4, 3, 24, 24)))
    exported, other = (average, network) if export_ema else (network, average)
    np.testing.assert_allclose(deployable(images).asnumpy(), exported(images).asnumpy(), atol=1e-5)
    assert np.abs(deployable(images).asnumpy() - other(images).asnumpy()).max() > 1e-2
