"""Several devices train the recipe that one device trains: FP16's skipped steps, no bias decay on the servers,
validation of the network that is saved."""
import json
import pickle

import mxnet as mx
import numpy as np
import pytest
from mxnet.contrib.amp import amp

import train_imagenet
from engine.config import parse_config
from engine.loop import evaluate, train_one_epoch, train_step
from engine.recipe import Recipe, build_batch_transform, build_data, build_network, build_recipe, build_trainer
from models import get_model
from tests import topology_run
from tests.conftest import ONE_EPOCH, tiny_args
from utils import checkpoint
from utils.batch_transform import BatchTransform
from utils.devices import build_contexts, split_batch
from utils.distillation import CrossEntropyLoss
from utils.mixup import MixSchedule
from utils.precision import Float16, build_precision
from utils.seeding import seed_everything

pytestmark = pytest.mark.numeric


def _config(argv):
    return parse_config(argv)


def _weights_and_momenta(trainer, tmp_path):
    """Every trainable weight on every device, and the optimizer's momenta wherever the trainer keeps them."""
    weights = {(param.name, str(ctx)): param.data(ctx).asnumpy() for param in trainer._params
               if param.grad_req != "null" for ctx in param.list_ctx()}
    trainer.save_states(str(tmp_path / "states"))
    with open(tmp_path / "states", "rb") as handle:
        momenta, _ = pickle.loads(handle.read())
    return weights, {index: state.asnumpy() for index, state in momenta.items()}


def test_an_overflowed_fp16_step_on_two_devices_is_skipped_and_halves_the_scale(tiny_set, tmp_path, monkeypatch):
    # amp.init casts operators to FP16, which needs a GPU; init_trainer only asserts that it ran. With both
    # flags set it attaches a fresh LossScaler, as it does to every trainer after the first.
    monkeypatch.setattr(amp, "_amp_initialized", True)
    monkeypatch.setattr(amp, "_amp_loss_scale_initialized", True)
    config = _config(tiny_args(tiny_set, tmp_path, "--num-cpu-contexts", "2", "--batch-size", "4"))
    contexts = build_contexts(num_cpu_contexts=2)
    precision = Float16()
    net = build_network(config, 3, contexts)
    trainer = build_trainer(config, net, contexts, 6, precision)
    recipe = Recipe(net, trainer, CrossEntropyLoss(), BatchTransform(3), precision, step_batch=8)
    rng = np.random.RandomState(0)
    images = mx.nd.array(rng.normal(size=(8, 3, 24, 24)))
    labels = split_batch(mx.nd.array([0, 1, 2, 0, 1, 2, 0, 1]), contexts)

    train_step(recipe, split_batch(images, contexts), labels)
    scale = trainer._amp_loss_scaler.loss_scale
    weights, momenta = _weights_and_momenta(trainer, tmp_path)
    assert momenta and all(np.abs(m).max() > 0 for m in momenta.values())

    overflowing = images.copy()
    overflowing[5, 0, 0, 0] = np.inf  # device 1's slice: only the reduced gradient carries it to device 0
    train_step(recipe, split_batch(overflowing, contexts), labels)
    skipped_weights, skipped_momenta = _weights_and_momenta(trainer, tmp_path)
    for key, value in weights.items():
        np.testing.assert_array_equal(skipped_weights[key], value, err_msg=str(key))
    for index, value in momenta.items():
        np.testing.assert_array_equal(skipped_momenta[index], value, err_msg=str(index))

    train_step(recipe, split_batch(images, contexts), labels)
    assert trainer._amp_loss_scaler.loss_scale == scale / 2
    updated, _ = _weights_and_momenta(trainer, tmp_path)
    assert all(np.isfinite(value).all() for value in updated.values())
    assert sum(not np.array_equal(updated[key], value) for key, value in weights.items()) == len(weights)


def test_no_bias_decay_survives_the_trip_to_the_parameter_servers(tiny_set):
    """A dist kvstore pickles the optimizer to its servers; ``Optimizer.__getstate__`` drops ``param_dict``."""
    config = _config(tiny_args(tiny_set, "unused", "--no-wd", "--wd", "0.003"))
    contexts = build_contexts()
    net = build_network(config, 3, contexts)
    trainer = build_trainer(config, net, contexts, 6, build_precision("float32", contexts))
    served = pickle.loads(pickle.dumps(trainer.optimizer))
    assert served.param_dict == {}
    names = [param.name for param in trainer._params]
    indices = list(range(len(names)))
    decays = served._get_wds(indices)
    assert decays == trainer.optimizer._get_wds(indices)
    decayed = {name for name, decay in zip(names, decays) if decay}
    assert decayed and all(name.endswith("weight") and ("conv" in name or "dense" in name) for name in decayed)
    # 22 convolutions (3 in the deep stem, 16 in the blocks, 3 on shortcuts) and the classifier.
    assert set(decays) == {0.0, 0.003} and len(decayed) == 23
    assert served._get_lrs(indices) == [pytest.approx(0.02)] * len(names)


def _bn_statistics(net, ctx):
    return {name: param.data(ctx).asnumpy() for name, param in net._collect_params_with_prefix().items()
            if param.grad_req == "null"}


def test_validation_on_two_devices_measures_the_network_that_is_saved(tiny_set, tmp_path):
    config = _config(tiny_args(tiny_set, tmp_path, "--num-cpu-contexts", "2", "--batch-size", "8"))
    contexts = build_contexts(num_cpu_contexts=2)
    data = build_data(config, contexts)
    recipe = build_recipe(config, data, contexts)
    train_one_epoch(0, recipe, data, contexts, config)
    first, second = (_bn_statistics(recipe.net, ctx) for ctx in contexts)
    for name, value in first.items():
        np.testing.assert_array_equal(second[name], value, err_msg=name)
    # Averaged in place: the trainer, which updates on the kvstore here, keeps its kvstore and the momenta of
    # its 68 trainable parameters (23 convolution and dense weights, the dense bias, 22 BatchNorms x 2).
    _, momenta = _weights_and_momenta(recipe.trainer, tmp_path)
    assert len(momenta) == 68 and all(np.abs(m).max() > 0 for m in momenta.values())

    recipe.net.save_parameters(str(tmp_path / "saved.params"))
    saved = get_model("resnet18_v1d", classes=3)
    saved.load_parameters(str(tmp_path / "saved.params"))
    images = mx.nd.array(np.random.RandomState(0).normal(size=(4, 3, 24, 24)))
    for ctx in contexts:
        np.testing.assert_allclose(recipe.net(images.as_in_context(ctx)).asnumpy(), saved(images).asnumpy(),
                                   rtol=1e-5, atol=1e-5, err_msg=str(ctx))


def test_metrics_of_a_two_device_run_are_those_of_its_saved_file(tiny_set, tmp_path):
    save_dir = tmp_path / "run"
    assert train_imagenet.main(tiny_args(tiny_set, save_dir, "--num-cpu-contexts", "2", "--batch-size", "8",
                                         *ONE_EPOCH)) == 0
    with open(checkpoint.metrics_path(str(save_dir))) as handle:
        logged = json.loads(handle.readline())
    config = _config(tiny_args(tiny_set, tmp_path / "eval", "--batch-size", "8"))
    net = get_model("resnet18_v1d", classes=3)
    net.load_parameters(checkpoint.params_path(str(save_dir), "resnet18_v1d", 0))
    measured = evaluate(net, build_data(config, build_contexts()), [mx.cpu()])
    assert (logged["val_top1"], logged["val_top5"]) == (measured["val_top1"], measured["val_top5"])


def test_the_first_step_keeps_the_running_statistics_of_the_first_batch(tiny_set, tmp_path):
    """The first step broadcasts device 0's parameters; it must read what the first batch wrote to BatchNorm."""
    statistics = {}
    for count in (1, 2):
        config = _config(tiny_args(tiny_set, tmp_path, "--num-cpu-contexts", str(count),
                                   "--batch-size", str(8 // count)))
        contexts = build_contexts(num_cpu_contexts=count)
        seed_everything(0)
        data = topology_run.fixed_batches(config, contexts, dtype="float32")
        recipe = build_recipe(config, data, contexts)
        batch = next(data.train.epoch(0))
        train_step(recipe, split_batch(batch.data[0], contexts), split_batch(batch.label[0], contexts))
        mx.nd.waitall()
        statistics[count] = _bn_statistics(recipe.net, contexts[-1])
    for name, value in statistics[1].items():
        # Every device's slice is the same half batch as the other's, so one device's statistics are the whole's.
        np.testing.assert_allclose(statistics[2][name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    assert max(np.abs(value).max() for name, value in statistics[2].items() if name.endswith("running_mean")) > 0.1


def test_mixup_pairs_images_within_each_devices_slice_with_one_lambda_everywhere(tiny_set):
    """Mixup is device-local (as in GluonCV): a device mixes its slice with its own slice reversed; every device,
    and every worker (each builds the transform from the same --seed), uses the batch's one lambda."""
    config = _config(tiny_args(tiny_set, "unused", "--mixup", "--mixup-alpha", "0.4"))
    worker_0, worker_1 = (build_batch_transform(config, 3) for _ in range(2))
    slices = [mx.nd.arange(24).reshape((4, 6)) + 100 * device for device in range(2)]
    labels = [mx.nd.array([0, 1, 2, 0]), mx.nd.array([1, 1, 2, 2])]
    lambdas = MixSchedule(0.4, 0.0, config.num_epochs, seed=config.seed)
    for _ in range(3):
        lam = lambdas.draw(0, (4, 6)).lam
        for worker in (worker_0, worker_1):
            images, targets, _ = worker(slices, labels, 0)
            for image, target, original, label in zip(images, targets, slices, labels):
                np.testing.assert_allclose(image.asnumpy(), lam * original.asnumpy() +
                                           (1 - lam) * original.asnumpy()[::-1], rtol=1e-6)
                one_hot = np.eye(3)[label.asnumpy().astype(int)]
                np.testing.assert_allclose(target.asnumpy(), lam * one_hot + (1 - lam) * one_hot[::-1], rtol=1e-6)


def test_initial_weights_are_drawn_from_the_runs_seed_when_the_network_is_built(tiny_set):
    """Each dist worker seeds its epochs by rank before the first batch; the weights must not depend on that."""
    config = _config(tiny_args(tiny_set, "unused", "--no-last-gamma"))
    weights = []
    for worker_seed in (1, 2):
        seed_everything(config.seed)
        net = build_network(config, 3, [mx.cpu()])
        mx.random.seed(worker_seed)
        net(mx.nd.zeros((1, 3, 24, 24)))
        # The forward pass reorders weights into oneDNN's layout in place, which a read can overtake on MXNet's
        # threaded engine (seen under load: most of a large weight read half reordered).
        mx.nd.waitall()
        weights.append({name: param.data().asnumpy() for name, param in net._collect_params_with_prefix().items()})
    for name, value in weights[0].items():
        np.testing.assert_array_equal(weights[1][name], value, err_msg=name)
