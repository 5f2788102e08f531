"""timm's binary cross-entropy, LAMB and AdamW ("ResNet strikes back", Wightman et al. 2021): against numbers worked
out by hand, as a parameter server unpickles them, and end to end through the training script."""
import pickle
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import engine.recipe
import train_imagenet
from engine.config import parse_config
from engine.loop import update_weights
from engine.recipe import build_data, build_network, build_recipe, build_trainer
from tests import topology_run
from tests.conftest import ONE_EPOCH, tiny_args
from tests.helpers import RunRecorder, weight_decays
from tests.launch_job import Job, local_launch_args
from utils import checkpoint
from utils.binary_cross_entropy import BinaryCrossEntropyLoss
from utils.distributed import start_kvstore
from utils.devices import build_contexts
from utils.optimizers import LAMB, AdamW, create_optimizer, global_gradient_norm, optimizer_settings
from utils.precision import build_precision

pytestmark = pytest.mark.numeric

LOGITS = [[2.0, 0.0, -1.0], [0.5, 1.5, -2.0]]
# log(1 + e^x) of LOGITS, from which every BCE value below is summed by hand.
SOFTPLUS = [[2.1269280, 0.6931472, 0.3132617], [0.9740770, 1.7014133, 0.1269280]]
OPTIMIZER_TYPES = {"nag": mx.optimizer.NAG, "sgd": mx.optimizer.SGD, "lamb": LAMB, "adamw": AdamW}


def _bce(logits, targets):
    """Binary cross-entropy per example, mean over the classes, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    return (np.logaddexp(0, logits) - logits * targets).mean(axis=1)


def test_bce_of_integer_labels_worked_by_hand():
    """Labels [0, 2] are the one-hot rows [1, 0, 0] and [0, 0, 1]:
    (2.1269280 - 2 + 0.6931472 + 0.3132617) / 3 = 0.3777790 and (0.9740770 + 1.7014133 + 0.1269280 + 2) / 3 = 1.6008061.
    """
    np.testing.assert_allclose(SOFTPLUS, np.logaddexp(0, LOGITS), atol=1e-7)
    loss = BinaryCrossEntropyLoss()(mx.nd.array(LOGITS), mx.nd.array([0, 2]), None)
    np.testing.assert_allclose(loss.asnumpy(), [0.3777790, 1.6008061], rtol=1e-6)


def test_bce_of_dense_targets_worked_by_hand():
    """Dense rows as given: (2.1269280 - 0.7 * 2 + 0.6931472 + 0.3132617 + 0.25) / 3 = 0.6611123 and
    (0.9740770 - 0.05 + 1.7014133 - 0.45 * 1.5 + 0.1269280 + 0.45 * 2) / 3 = 0.9924728."""
    targets = mx.nd.array([[0.7, 0.05, 0.25], [0.1, 0.45, 0.45]])
    loss = BinaryCrossEntropyLoss(sparse_targets=False)(mx.nd.array(LOGITS), targets, None)
    np.testing.assert_allclose(loss.asnumpy(), [0.6611123, 0.9924728], rtol=1e-6)


def test_bce_target_threshold_worked_by_hand():
    """Above 0.2 becomes 1, the rest 0: [1, 0, 1] and [0, 1, 1], so (0.1269280 + 0.6931472 + 1.3132617) / 3 =
    0.7111123 and (0.9740770 + 0.2014133 + 2.1269280) / 3 = 1.1008061. Integer labels are thresholded one-hot rows."""
    loss = BinaryCrossEntropyLoss(sparse_targets=False, target_threshold=0.2)
    targets = mx.nd.array([[0.7, 0.05, 0.25], [0.1, 0.45, 0.45]])
    np.testing.assert_allclose(loss(mx.nd.array(LOGITS), targets, None).asnumpy(), [0.7111123, 1.1008061], rtol=1e-6)
    sparse = BinaryCrossEntropyLoss(target_threshold=0.2)(mx.nd.array(LOGITS), mx.nd.array([0, 2]), None)
    np.testing.assert_allclose(sparse.asnumpy(), [0.3777790, 1.6008061], rtol=1e-6)


def test_bce_gradient_is_sigmoid_minus_target_over_the_classes_also_at_zero():
    """d/dx_k = (sigmoid(x_k) - t_k) / K: at x = 0 with t = 0 it is 0.5 / 3 = 0.1666667 (the max/abs form gives 0)."""
    logits = mx.nd.array(LOGITS)
    logits.attach_grad()
    with autograd.record():
        loss = BinaryCrossEntropyLoss()(logits, mx.nd.array([0, 2]), None)
    loss.backward()
    sigmoid = [[0.8807971, 0.5, 0.2689414], [0.6224593, 0.8175745, 0.1192029]]
    expected = (np.array(sigmoid) - [[1, 0, 0], [0, 0, 1]]) / 3
    np.testing.assert_allclose(logits.grad.asnumpy(), expected, atol=1e-7)
    assert logits.grad.asnumpy()[0, 1] == pytest.approx(0.1666667)


def test_bce_is_finite_and_exact_for_large_logits():
    """log(1 + e^100) - 100 * 0.5 = 50; log(1 + e^-100) is 3.7e-44; each row's mean over 2 classes."""
    loss = BinaryCrossEntropyLoss(sparse_targets=False)(mx.nd.array([[100.0, -100.0], [-100.0, 100.0]]),
                                                        mx.nd.array([[0.5, 0.0], [1.0, 1.0]]), None)
    np.testing.assert_allclose(loss.asnumpy(), [25.0, 50.0], rtol=1e-6)


def _lamb_steps(weight, grads, lr, wd, beta1=0.9, beta2=0.999, eps=1e-6, clips=None, always_adapt=False):
    """You et al. 2020, Algorithm 2, as timm's Lamb: each step's gradient divided by its ``clips`` entry (the global
    norm's max(1, ||G|| / 1)), the trust ratio ||x|| / ||r|| unclipped, 1 where either norm is 0, and only where
    ``wd`` is not 0 or with ``always_adapt``; in float64."""
    x = np.array(weight, dtype=np.float64)
    m, v = np.zeros_like(x), np.zeros_like(x)
    clips = clips or [1.0] * len(grads)
    for t, (g, clip) in enumerate(zip(np.asarray(grads, dtype=np.float64), clips), start=1):
        g = g / clip
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        r = m / (1 - beta1 ** t) / (np.sqrt(v / (1 - beta2 ** t)) + eps) + wd * x
        norm_x, norm_r = np.linalg.norm(x), np.linalg.norm(r)
        adapts = wd != 0 or always_adapt
        x = x - lr * (norm_x / norm_r if adapts and norm_x and norm_r else 1.0) * r
    return x


def _adamw_steps(weight, grads, lrs, wd, beta1=0.9, beta2=0.999, eps=1e-8):
    """Loshchilov & Hutter 2019 as PyTorch's AdamW: w -= lr (m_hat / (sqrt(v_hat) + eps) + wd w), in float64."""
    w = np.array(weight, dtype=np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, (g, lr) in enumerate(zip(np.asarray(grads, dtype=np.float64), lrs), start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w = w - lr * (m / (1 - beta1 ** t) / (np.sqrt(v / (1 - beta2 ** t)) + eps) + wd * w)
    return w, m, v


def _lamb(**settings):
    """Our LAMB with the settings --optimizer lamb gives it; no decay on index 1, a bias."""
    optimizer = create_optimizer("lamb", **{**dict(learning_rate=0.1, wd=0.5, rescale_grad=0.5),
                                            **optimizer_settings("lamb", None), **settings})
    optimizer.set_wd_mult({1: 0.0})
    return optimizer


def test_lamb_one_step_worked_by_hand_on_a_worker_and_on_a_server():
    """x = [3, 4], gradient [1, -0.2] x rescale 0.5 = [0.5, -0.1], wd 0.5, lr 0.1. At t = 1, m_hat = g and
    v_hat = g^2, so r = g / (|g| + 1e-6) = [1, -1] and r + wd x = [2.5, 1]; the trust ratio ||x|| / ||r + wd x|| =
    5 / sqrt(7.25) = 1.8569534 (above 1: not clipped), x -= 0.1 x 1.8569534 x [2.5, 1] = [2.5357617, 3.8143047].
    A bias at 0 without decay gets no trust ratio: it moves by -0.1 x [1, -1]. No global norm was given: the
    gradient is not clipped. On a worker's updater and on a server's unpickled copy.
    """
    gradients = [mx.nd.array([1.0, -0.2]), mx.nd.array([1.0, -0.2])]
    worker = mx.optimizer.get_updater(_lamb())
    worker_weights = [mx.nd.array([3.0, 4.0]), mx.nd.array([0.0, 0.0])]
    server = mx.optimizer.get_updater(pickle.loads(pickle.dumps(_lamb())))
    server_weights = [mx.nd.array([3.0, 4.0]), mx.nd.array([0.0, 0.0])]
    for updater, weights in ((worker, worker_weights), (server, server_weights)):
        for index, (gradient, weight) in enumerate(zip(gradients, weights)):
            updater(index, gradient, weight)
    for weights in (worker_weights, server_weights):
        np.testing.assert_allclose(weights[0].asnumpy(), [2.5357617, 3.8143047], rtol=1e-6)
        np.testing.assert_allclose(weights[1].asnumpy(), [-0.1, 0.1], rtol=1e-5)
        np.testing.assert_allclose(weights[0].asnumpy(), _lamb_steps([3, 4], [[0.5, -0.1]], 0.1, 0.5), rtol=1e-6)
        np.testing.assert_allclose(weights[1].asnumpy(), _lamb_steps([0, 0], [[0.5, -0.1]], 0.1, 0.0), rtol=1e-6)


@pytest.mark.parametrize("always_adapt, expected_bias", [(False, [2.0, -0.0888889]), (True, [2.0, -0.2])])
def test_lamb_clips_the_global_norm_and_adapts_only_decayed_parameters_worked_by_hand(always_adapt, expected_bias):
    """timm's Lamb, eps 0.1 so that the step depends on the gradient's size. A weight x = [3, 4] with wd 0.5 and
    gradient [3, 0]; a bias b = [2, 0] without decay and gradient [0, 4]: the global norm sqrt(9 + 16) = 5 > 1
    divides both by 5, to [0.6, 0] and [0, 0.8]. At t = 1, r = g / (|g| + 0.1):
    weight: [0.6 / 0.7, 0] + 0.5 x [3, 4] = [2.3571429, 2], ||r|| = 3.0912979, trust ratio 5 / 3.0912979 =
    1.6174436, x = [3, 4] - 0.1 x 1.6174436 x [2.3571429, 2] = [2.6187454, 3.6765113] ([2.6115550, 3.6851818]
    unclipped);
    bias: r = [0, 0.8 / 0.9] = [0, 0.8888889]; no trust ratio: b = [2, -0.0888889] (-0.0975610 unclipped);
    with always_adapt its ratio 2 / 0.8888889 = 2.25 gives [2, -0.2], as MXNet's LAMB would."""
    optimizer = _lamb(rescale_grad=1.0, epsilon=0.1, always_adapt=always_adapt)
    assert (optimizer.max_grad_norm, _lamb().always_adapt) == (1.0, False)   # timm's defaults
    weights = [mx.nd.array([3.0, 4.0]), mx.nd.array([2.0, 0.0])]
    gradients = [mx.nd.array([3.0, 0.0]), mx.nd.array([0.0, 4.0])]
    params = [mx.gluon.Parameter(f"p{index}", shape=(2,)) for index in range(2)]
    for param, gradient in zip(params, gradients):
        param.initialize(ctx=mx.cpu())
        param.grad()[:] = gradient
    assert global_gradient_norm(params, 1.0) == pytest.approx(5.0, rel=1e-7)
    optimizer.clip_to_global_norm(global_gradient_norm(params, 1.0))
    updater = mx.optimizer.get_updater(optimizer)
    for index, (gradient, weight) in enumerate(zip(gradients, weights)):
        updater(index, gradient, weight)
    np.testing.assert_allclose(weights[0].asnumpy(), [2.6187454, 3.6765113], rtol=1e-6)
    np.testing.assert_allclose(weights[1].asnumpy(), expected_bias, rtol=1e-6)
    assert [len(state) for state in updater.states.values()] == [2, 2]   # (m, v) arrays, nothing else
    assert all(isinstance(array, mx.nd.NDArray) for state in updater.states.values() for array in state)
    # A global norm below 1 is not clipped: the same gradients as they are.
    optimizer.clip_to_global_norm(0.5)
    assert optimizer.gradient_scale == 1.0


def test_lamb_three_steps_match_algorithm_2():
    rng = np.random.RandomState(0)
    weight, grads = rng.normal(size=(4, 3)), rng.normal(size=(3, 4, 3))
    updater = mx.optimizer.get_updater(_lamb())
    result = mx.nd.array(weight)
    for grad in grads:
        updater(0, mx.nd.array(grad), result)
    np.testing.assert_allclose(result.asnumpy(), _lamb_steps(weight, grads * 0.5, 0.1, 0.5), rtol=1e-5, atol=1e-6)


def test_adamw_one_and_two_steps_worked_by_hand():
    """beta1 = beta2 = 0.5, eps 0.1, lr 0.1, wd 0.5, gradients x rescale 0.5. A weight [2, -1] gets [0.5, -0.1]
    then [-0.1, -0.1]; a bias 0.5 without decay gets 0.5 then -0.1.

    Step 1 (m_hat = g, v_hat = g^2): 2 - 0.1 (0.5 / 0.6 + 0.5 x 2) = 1.8166667; -1 - 0.1 (-0.1 / 0.2 - 0.5) = -0.9;
    0.5 - 0.1 x 0.5 / 0.6 = 0.4166667.
    Step 2: m = 0.25 g1 + 0.5 g2, v = 0.25 g1^2 + 0.5 g2^2, both over 1 - 0.25 = 0.75: for g = (0.5, -0.1),
    m = 0.075, m_hat = 0.1, v = 0.0675, sqrt(v_hat) = 0.3, so 1.8166667 - 0.1 (0.1 / 0.4 + 0.5 x 1.8166667) =
    1.7008333 and 0.4166667 - 0.1 x 0.25 = 0.3916667; for g = (-0.1, -0.1), m = -0.075, v = 0.0075, m_hat =
    -0.1, sqrt(v_hat) = 0.1: -0.9 - 0.1 (-0.5 - 0.45) = -0.805.

    A server's unpickled copy, which keeps the bias's multiplier by index.
    """
    optimizer = mx.optimizer.create("adamw", learning_rate=0.1, wd=0.5, beta1=0.5, beta2=0.5, epsilon=0.1,
                                    rescale_grad=0.5)
    optimizer.set_wd_mult({1: 0.0})
    updater = mx.optimizer.get_updater(pickle.loads(pickle.dumps(optimizer)))
    assert type(updater.optimizer) is AdamW
    weight, bias = mx.nd.array([2.0, -1.0]), mx.nd.array([0.5])
    updater(0, mx.nd.array([1.0, -0.2]), weight)
    updater(1, mx.nd.array([1.0]), bias)
    np.testing.assert_allclose(weight.asnumpy(), [1.8166667, -0.9], rtol=1e-6)
    np.testing.assert_allclose(bias.asnumpy(), [0.4166667], rtol=1e-6)
    updater(0, mx.nd.array([-0.2, -0.2]), weight)
    updater(1, mx.nd.array([-0.2]), bias)
    np.testing.assert_allclose(weight.asnumpy(), [1.7008333, -0.805], rtol=1e-6)
    np.testing.assert_allclose(bias.asnumpy(), [0.3916667], rtol=1e-6)
    mean, var = updater.states[0]
    np.testing.assert_allclose(mean.asnumpy(), [0.075, -0.075], rtol=1e-6)
    np.testing.assert_allclose(var.asnumpy(), [0.0675, 0.0075], rtol=1e-6)


def test_adamw_follows_its_schedule_and_timm_settings_against_numpy():
    """Three steps at the rates 0.1, 0.05, 0.025 of a schedule, timm's betas (0.9, 0.999) and eps 1e-8."""
    rng = np.random.RandomState(1)
    weight, grads = rng.normal(size=(4, 3)), rng.normal(size=(3, 4, 3))
    schedule = mx.lr_scheduler.FactorScheduler(step=1, factor=0.5, base_lr=0.1)
    updater = mx.optimizer.get_updater(mx.optimizer.create("adamw", learning_rate=0.1, wd=0.05, lr_scheduler=schedule,
                                                           **optimizer_settings("adamw", None)))
    result = mx.nd.array(weight)
    for grad in grads:
        updater(0, mx.nd.array(grad), result)
    expected, mean, var = _adamw_steps(weight, grads, [0.1, 0.05, 0.025], 0.05)
    np.testing.assert_allclose(result.asnumpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updater.states[0][0].asnumpy(), mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(updater.states[0][1].asnumpy(), var, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["lamb", "adamw"])
def test_moments_that_start_fresh_at_a_later_step_are_corrected_as_at_the_first(name):
    """A resumed dist job's servers (or --resume-params without states) start from zero moments at step 1000:
    the first update must be a first Adam step, bias-corrected by 1 - beta, as a fresh run's, not by
    1 - beta^1001 = 1 (which makes it (1 - beta1) / sqrt(1 - beta2) = 3.16 times too long), while the rate
    schedule's count goes on from 1000. On a worker's updater and on a server's unpickled copy."""
    weight, grad = np.array([[0.3, -0.2], [0.1, 0.4]]), np.array([[0.5, -0.1], [0.02, 0.3]])
    settings = dict(learning_rate=0.01, wd=0.02, **optimizer_settings(name, None))
    first_step = mx.nd.array(weight)
    mx.optimizer.get_updater(create_optimizer(name, **settings))(0, mx.nd.array(grad), first_step)
    for copy in (lambda optimizer: optimizer, lambda optimizer: pickle.loads(pickle.dumps(optimizer))):
        later = copy(create_optimizer(name, begin_num_update=1000, **settings))
        resumed = mx.nd.array(weight)
        mx.optimizer.get_updater(later)(0, mx.nd.array(grad), resumed)
        np.testing.assert_allclose(resumed.asnumpy(), first_step.asnumpy(), rtol=1e-6)
        assert later.num_update == 1001


def test_optimizer_settings_are_timms():
    assert optimizer_settings("lamb", 0.8) == dict(beta1=0.9, beta2=0.999, epsilon=1e-6)
    assert optimizer_settings("adamw", 0.8) == dict(beta1=0.9, beta2=0.999, epsilon=1e-8)
    assert optimizer_settings("nag", 0.8) == optimizer_settings("sgd", 0.8) == dict(momentum=0.8)


@pytest.mark.parametrize("name", OPTIMIZER_TYPES)
def test_no_wd_under_every_optimizer_also_on_the_servers(name, tiny_set):
    """--no-wd: decay only on conv and dense weights, in the optimizer and in its pickled copy (a server's)."""
    config = parse_config(tiny_args(tiny_set, "unused", "--optimizer", name, "--wd", "0.05", "--no-wd"))
    contexts = build_contexts()
    net = build_network(config, 3, contexts)
    trainer = build_trainer(config, net, contexts, 6, build_precision("float32", contexts))
    assert type(trainer.optimizer) is OPTIMIZER_TYPES[name]
    decays = weight_decays(trainer, net)
    assert decays == {key: 0.05 if key.endswith(".weight") else 0.0 for key in decays}
    assert (decays["fc.weight"], decays["fc.bias"], decays["bn1.gamma"], decays["bn1.beta"]) == (0.05, 0, 0, 0)
    served = pickle.loads(pickle.dumps(trainer.optimizer))
    assert type(served) is OPTIMIZER_TYPES[name] and served.param_dict == {}
    indices = list(range(len(trainer._params)))
    assert served._get_wds(indices) == trainer.optimizer._get_wds(indices)
    assert sorted(set(served._get_wds(indices))) == [0.0, 0.05]


def _first_step(name, weight, grad, lr, wd, clip=1.0):
    """The update of each optimizer from fresh states, in float64, with --momentum 0.8 for nag and sgd; LAMB's
    gradient divided by ``clip``."""
    if name == "nag":
        # MXNet's NAG: state = g + wd w, w -= lr (g + wd w + 0.8 state).
        return weight - lr * 1.8 * (grad + wd * weight)
    if name == "sgd":
        return weight - lr * (grad + wd * weight)
    if name == "lamb":
        return _lamb_steps(weight, [grad], lr, wd, clips=[clip])
    return _adamw_steps(weight, [grad], [lr], wd)[0]


@pytest.mark.parametrize("name", OPTIMIZER_TYPES)
def test_each_optimizer_takes_its_first_step_by_its_formula(name, tiny_set):
    """The recipe's trainer on one batch of 16: --lr 0.02 warmed up over the 6 batches of epoch 0, so the first
    update's rate is 0.02 / 6; the gradient summed over the batch and divided by 16; wd 0.05 but on biases and
    BatchNorm."""
    momentum = ("--momentum", "0.8") if name in ("nag", "sgd") else ()
    config = parse_config(tiny_args(tiny_set, "unused", "--optimizer", name, *momentum, "--wd", "0.05",
                                    "--no-wd", "--warmup-epochs", "1"))
    contexts = build_contexts()
    data = build_data(config, contexts)
    recipe = build_recipe(config, data, contexts)
    optimizer = recipe.trainer.optimizer
    assert type(optimizer) is OPTIMIZER_TYPES[name]
    settings = dict(momentum=0.8) if name in ("nag", "sgd") else optimizer_settings(name, None)
    assert {key: getattr(optimizer, key) for key in settings} == settings
    batch = next(iter(data.train.epoch(0)))
    images, labels = batch.data[0].as_in_context(contexts[0]), batch.label[0].as_in_context(contexts[0])
    with autograd.record():
        loss = recipe.loss_fn(recipe.net(images), labels, images)
    loss.backward()
    params = {key: param for key, param in recipe.net._collect_params_with_prefix().items()
              if param.grad_req != "null"}
    before = {key: (param.data().asnumpy(), param.grad().asnumpy() / 16) for key, param in params.items()}
    update_weights(recipe.trainer, recipe.step_batch)
    global_norm = np.sqrt(sum(np.square(grad.astype(np.float64)).sum() for _, grad in before.values()))
    assert name != "lamb" or recipe.trainer.optimizer.gradient_scale == pytest.approx(1 / max(1, global_norm))
    moved = 0.0
    for key, param in params.items():
        weight, grad = before[key]
        wd = 0.05 if key.endswith(".weight") else 0.0
        after = param.data().asnumpy()
        np.testing.assert_allclose(after, _first_step(name, weight, grad, 0.02 / 6, wd, max(1, global_norm)),
                                   rtol=1e-5, atol=1e-7, err_msg=key)
        moved = max(moved, float(np.abs(after - weight).max()))
    assert moved > 1e-3


def test_lamb_on_two_cpu_contexts_clips_the_reduced_gradient_as_one_device(tiny_set):
    """The trainer of --optimizer lamb over mx.cpu(0) and mx.cpu(1) against mx.cpu(0) alone, two updates of a
    Dense layer (weight with wd 0.5, bias without): the same global gradients, on two devices split unevenly, so
    that each device's own norm differs from the sum's. Step 1's global norm is 5 (clipped), step 2's 0.5 (not);
    both are the float64 reference of timm's rule (the sums differ in float32's last places only)."""
    config = parse_config(tiny_args(tiny_set, "unused", "--optimizer", "lamb", "--wd", "0.5", "--lr", "0.1",
                                    "--batch-size", "1"))
    steps = [(np.array([[3.0, 0.0]]), np.array([0.0, 4.0])), (np.array([[0.3, -0.2]]), np.array([0.1, -0.3]))]
    results = []
    for contexts in ([mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]):
        net = mx.gluon.nn.Dense(2, in_units=1)
        net.initialize(ctx=contexts)
        net.weight.set_data(mx.nd.array([[3.0], [4.0]]))
        net.bias.set_data(mx.nd.array([2.0, 0.0]))
        net.bias.wd_mult = 0.0
        trainer = build_trainer(config, net, contexts, 6, build_precision("float32", contexts))
        for weight_grad, bias_grad in steps:
            for param, grad in ((net.weight, weight_grad.T), (net.bias, bias_grad)):
                shares = [grad] if len(contexts) == 1 else [0.8 * grad - 1.0, 0.2 * grad + 1.0]
                for device_grad, share in zip(param.list_grad(), shares):
                    device_grad[:] = share
                for data in param.list_data():
                    data._fresh_grad = True   # as backward leaves it
            if not trainer._kv_initialized:
                start_kvstore(trainer, 1)
            update_weights(trainer, 1)
        assert len(contexts) == 1 or trainer._update_on_kvstore is False
        results.append([param.data(context).asnumpy() for param in (net.weight, net.bias) for context in contexts])
    lr = trainer.optimizer.learning_rate
    clips = [5.0, 1.0]
    weight = _lamb_steps([[3.0], [4.0]], [grads[0].T for grads in steps], lr, 0.5, clips=clips)
    bias = _lamb_steps([2.0, 0.0], [grads[1] for grads in steps], lr, 0.0, clips=clips)
    np.testing.assert_allclose(results[0][0], weight, rtol=1e-6)
    np.testing.assert_allclose(results[0][1], bias, rtol=1e-6)
    for one_device, two_devices in zip([results[0][0]] * 2 + [results[0][1]] * 2, results[1]):
        np.testing.assert_allclose(two_devices, one_device, rtol=1e-6)


def _run_recorded(tiny_set, save_dir, monkeypatch, *flags):
    recorder = RunRecorder(monkeypatch)
    assert train_imagenet.main(tiny_args(tiny_set, save_dir, *ONE_EPOCH, *flags)) == 0
    return recorder


def _cross_entropy(targets, logits):
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return -(targets * (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))).sum(axis=1)


def _bce_rounding_bound(logits, targets):
    """How far float32 may put each example's BCE from the float64 formula: 8 units of float32's last place in the
    size of its terms, averaged over the classes. The terms' size counts |x| too: MXNet's softrelu (oneDNN's, with
    every instruction set) is exact to the last place of |x| rather than of softplus(x), e.g. -1.9e-6 for
    softplus(-29.1) = 2.3e-13. Measured on 20,000 random logits of scale 6 and on the runs below, with AVX-512, AVX2
    and SSE4.1: at most 0.13 of it."""
    logits = np.asarray(logits, dtype=np.float64)
    size = np.abs(logits) + np.logaddexp(0, logits) + np.abs(logits * targets)
    return 8 * np.finfo(np.float32).eps * size.mean(axis=1)


@pytest.mark.parametrize("flags, threshold", [
    ((), None),
    (("--label-smoothing", "--mixup", "--bce-target-thresh", "0.2"), 0.2),
], ids=["integer labels", "smoothed mixed thresholded"])
def test_every_step_of_a_bce_run_is_the_bce_formula(flags, threshold, tiny_set, tmp_path, monkeypatch):
    recorder = _run_recorded(tiny_set, tmp_path, monkeypatch, "--bce-loss", *flags)
    assert type(recorder.loss_fn) is BinaryCrossEntropyLoss and recorder.loss_fn.target_threshold == threshold
    steps = recorder.steps()
    assert len(steps) == 6
    for step, (_, _, labels, call) in enumerate(steps):
        if threshold is None:
            np.testing.assert_array_equal(call["targets"], labels)
            given = targets = np.eye(3)[labels.astype(int)]
        else:
            given = call["targets"]
            assert given.shape == (16, 3)
            targets = (given > threshold).astype(np.float64)
            # The threshold changes the targets: smoothed 0.9 and 0.05 become 1 and 0.
            assert np.abs(_bce(call["outputs"], given) - _bce(call["outputs"], targets)).max() > 0.1
        bound = _bce_rounding_bound(call["outputs"], targets)
        error = np.abs(call["loss"] - _bce(call["outputs"], targets))
        assert (error <= bound).all(), (error / bound).max()
        # Not the softmax cross-entropy that the run would have trained without --bce-loss: on the first step (the
        # initial weights, the same on every CPU) by far, on every step by far more than the rounding.
        other = np.abs(call["loss"] - _cross_entropy(given, call["outputs"])).max()
        assert other > (0.5 if step == 0 else 1000 * bound.max()), (step, other, bound.max())


def _train_fixed_batches(argv, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(train_imagenet, "build_data", topology_run.fixed_batches)
        patch.setattr(engine.recipe, "get_model", topology_run.get_model_with_global_statistics)
        assert train_imagenet.main(argv) == 0


def _saved_weights(save_dir):
    return {key: value.asnumpy() for key, value in
            mx.nd.load(checkpoint.params_path(str(save_dir), "resnet18_v1d", 1)).items()}


def test_adamw_runs_on_parameter_servers_as_on_one_device(tiny_set, tmp_path, monkeypatch):
    """A dist_async worker of 8 images, whose server runs AdamW unpickled (importing utils.optimizers) with --no-wd's
    multipliers (under dist_sync the workers run it), trains the 6 steps of tests/topology_run.py to the weights of
    one process with batch 8. Had the
    server lost the multipliers, BatchNorm's gammas (1 at the start) would decay by the rate x 0.5 a step, 1.65e-3
    over 3 steps at 0.001 and 3 at 0.0001. (AdamW moves every weight by about the rate a step: at tiny_args' 0.02
    the network, whose BatchNorm does not normalize here, diverges.)"""
    flags = ["--seed", "3", "--lr", "0.001", "--optimizer", "adamw", "--wd", "0.5", "--no-wd"]
    _train_fixed_batches(tiny_args(tiny_set, tmp_path / "local", *flags, "--batch-size", "8"), monkeypatch)
    job = Job(local_launch_args(num_workers=1, num_servers=1),
              [sys.executable, "-m", "tests.topology_run",
               *tiny_args(tiny_set, tmp_path / "dist", *flags, "--batch-size", "8", "--kvstore", "dist_async")])
    code, output = job.wait(timeout=180)
    assert code == 0 and job.leftovers() == [], output
    local, dist = _saved_weights(tmp_path / "local"), _saved_weights(tmp_path / "dist")
    assert local.keys() == dist.keys()
    assert max(float(np.abs(local[key] - dist[key]).max()) for key in local) < 2e-4
