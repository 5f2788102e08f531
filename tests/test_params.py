"""models.params on hand-made files: what it reads, and the first parameter it names when a file does not fit."""
import mxnet as mx
import pytest
from mxnet import gluon

from models.params import load_params
from utils.errors import UserError

# Named as Gluon names the parameters of a two-layer Sequential: layer index, then the parameter.
SAVED = {"0.weight": (2, 3), "0.bias": (2,), "1.weight": (4, 2)}


@pytest.fixture
def saved_file(tmp_path):
    path = str(tmp_path / "small.params")
    mx.nd.save(path, {name: mx.nd.ones(shape) for name, shape in SAVED.items()})
    return path


def test_a_file_that_fits_is_returned_whole(saved_file):
    params = load_params(saved_file, SAVED)
    assert {name: array.shape for name, array in params.items()} == SAVED


def test_the_expected_shapes_may_come_from_a_network(saved_file):
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(2, in_units=3), gluon.nn.Dense(4, in_units=2, use_bias=False))
    net.initialize()
    assert set(load_params(saved_file, net, label="--params small.params")) == set(SAVED)
    single_layer = gluon.nn.Dense(5, in_units=3)
    single_layer.initialize()
    message = (r"^--params small.params does not fit the network: it has parameter '0.weight', which the network "
               r"lacks; give a file saved from the network$")
    with pytest.raises(UserError, match=message):
        load_params(saved_file, single_layer, label="--params small.params")


def test_a_parameter_the_network_lacks_is_named_first(saved_file):
    expected = {"0.weight": (2, 3), "2.weight": (1,)}  # the file has 0.bias and 1.weight too
    with pytest.raises(UserError, match=r"does not fit --model: it has parameter '0.bias', which --model lacks"):
        load_params(saved_file, expected, network="--model")


def test_the_first_missing_parameter_is_named_with_the_count(saved_file):
    expected = {**SAVED, "2.weight": (1, 4), "2.bias": (1,)}
    with pytest.raises(UserError, match=r"it lacks parameter '2.weight' \(2 of 5 missing\)"):
        load_params(saved_file, expected)


def test_the_first_parameter_of_another_shape_is_named_with_both_shapes(saved_file):
    expected = {**SAVED, "0.bias": (3,), "1.weight": (4, 3)}
    with pytest.raises(UserError, match=r"small.params does not fit the network: parameter '0.bias' has shape "
                                        r"\(2,\) in the file but \(3,\) in the network$"):
        load_params(saved_file, expected)


def test_reshapable_parameters_may_have_another_shape(saved_file):
    expected = {**SAVED, "1.weight": (7, 2)}
    params = load_params(saved_file, expected, reshapable=["1.weight"])
    assert params["1.weight"].shape == (4, 2)


def test_files_that_are_not_named_parameters_are_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^teacher .*nowhere.params not found$"):
        load_params(str(tmp_path / "nowhere.params"), SAVED, label=f"teacher {tmp_path / 'nowhere.params'}")
    (tmp_path / "notes.params").write_text("not parameters\n")
    with pytest.raises(UserError, match=r"notes.params is not a readable MXNet .params file$"):
        load_params(str(tmp_path / "notes.params"))
    mx.nd.save(str(tmp_path / "list.params"), [mx.nd.ones((2,))])
    with pytest.raises(UserError, match=r"list.params holds an unnamed list of arrays"):
        load_params(str(tmp_path / "list.params"))
