"""MobileNet v1/v2 and Inception-v3: published figures, GluonCV file compatibility both ways, zero-gamma."""
import os

import gluoncv
import mxnet as mx
import numpy as np
import pytest

from models import get_model
from models.complexity import count_multiply_adds, count_parameters
from tests.helpers import randomize_parameters
from utils.errors import UserError

pytestmark = pytest.mark.numeric

# One name per family, each at a small input that both definitions accept: GluonCV's Inception3 pools its last
# map with a fixed 8x8 window, so it needs 299.
FAMILIES = [("mobilenet0.25", 32), ("mobilenetv2_0.25", 32), ("inceptionv3", 299)]


def _initialized(net, input_size):
    """``net`` initialized, its deferred shapes resolved by one forward pass."""
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, input_size, input_size)))
    return net


def _ours(name, input_size, **kwargs):
    """Our network ``name``, initialized."""
    return _initialized(get_model(name, classes=1000, **kwargs), input_size)


def _gluoncv(name, input_size):
    """GluonCV's network ``name``, initialized."""
    return _initialized(gluoncv.model_zoo.get_model(name, pretrained=False), input_size)


def _shapes(net):
    """Structural parameter name -> shape: what ``load_parameters`` matches on."""
    return {key: param.shape for key, param in net._collect_params_with_prefix().items()}


def _copy_parameters(source, target, path):
    """Copy through a ``.params`` file, as a user would; loading is strict about names and shapes."""
    source.save_parameters(path)
    target.load_parameters(path)


@pytest.mark.parametrize("name, input_size, multiply_adds_g, parameters_m", [
    ("inceptionv3", 299, 5.71, 23.9), ("mobilenet1.0", 224, 0.569, 4.25), ("mobilenetv2_1.0", 224, 0.301, 3.54)])
def test_multiply_adds_and_parameters_match_the_published_figures(name, input_size, multiply_adds_g, parameters_m):
    net = get_model(name, classes=1000)
    net.initialize()
    assert count_multiply_adds(net, input_size) / 1e9 == pytest.approx(multiply_adds_g, rel=0.02)
    assert count_parameters(net) / 1e6 == pytest.approx(parameters_m, rel=0.02)


@pytest.fixture(scope="module", params=FAMILIES, ids=[name for name, _ in FAMILIES])
def ours_and_gluoncvs(request):
    """Our network and GluonCV's of one name, initialized (built once: Inception-v3 at 299 is slow)."""
    name, input_size = request.param
    return _ours(name, input_size), _gluoncv(name, input_size), input_size


def test_parameter_names_and_shapes_equal_gluoncvs(ours_and_gluoncvs):
    ours, theirs, _ = ours_and_gluoncvs
    assert _shapes(ours) == _shapes(theirs)


def test_gluoncv_parameters_load_into_ours_and_back_with_the_same_outputs(ours_and_gluoncvs, tmp_path):
    ours, theirs, input_size = ours_and_gluoncvs
    images = mx.nd.random.normal(shape=(1, 3, input_size, input_size))

    randomize_parameters(theirs, seed=0)
    _copy_parameters(theirs, ours, os.path.join(tmp_path, "gluoncv.params"))
    assert np.abs(ours(images).asnumpy() - theirs(images).asnumpy()).max() <= 1e-5

    randomize_parameters(ours, seed=1)
    _copy_parameters(ours, theirs, os.path.join(tmp_path, "ours.params"))
    assert np.abs(ours(images).asnumpy() - theirs(images).asnumpy()).max() <= 1e-5


def test_zero_gamma_zeroes_exactly_the_last_bn_of_each_mobilenet_v2_residual_block():
    net = _ours("mobilenetv2_0.25", 32, last_gamma=True)
    residual = [index for index, block in enumerate(net.features) if getattr(block, "use_shortcut", False)]
    # Sandler et al., Table 2: every repeat but the first of a stage keeps stride and width: 0+1+2+3+2+2+0.
    assert len(residual) == 10
    # Blocks with an expansion layer hold conv, BN, ReLU6, conv, BN, ReLU6, conv, BN: the last BN is out.7.
    expected = {f"features.{index}.out.7.gamma" for index in residual}
    gammas = {key: param.data().asnumpy() for key, param in net._collect_params_with_prefix().items()
              if key.endswith("gamma")}
    assert {key for key, gamma in gammas.items() if not gamma.any()} == expected
    assert all((gamma == 1).all() for key, gamma in gammas.items() if key not in expected)


@pytest.mark.parametrize("name", ["mobilenet1.0", "inceptionv3"])
def test_last_gamma_without_residual_blocks_is_a_user_error(name):
    with pytest.raises(UserError, match="has no residual blocks, so --last-gamma does not apply") as error:
        get_model(name, classes=10, last_gamma=True)
    assert "\n" not in str(error.value)
