"""Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision").

The paper trains it beside ResNet-50 and MobileNet, on 299x299 inputs (He et al. 2019, section 2.2).
The layout is that of the released implementation, which GluonCV also follows: a stem of five convolutions and
two max pools, three 35x35 modules (Figure 5), a reduction to 17x17 (Figure 10), four 17x17 modules with
factorized 7x7 convolutions (Figure 6), a reduction to 8x8, two 8x8 modules with expanded filter banks
(Figure 7), then pooling, dropout and the classifier. There is no auxiliary classifier (GluonCV has none).

GluonCV pools the last 8x8 map with a fixed 8x8 window, which only fits 299x299 inputs; global average pooling
is the same computation at 299 and also accepts any input of at least 75x75 (the smallest that leaves the
reduction to 8x8 a non-empty map).

Parameter names follow GluonCV's ``Inception3`` (``features.0`` ... ``features.17``, ``output``), so ``.params``
files are interchangeable with GluonCV's ``inceptionv3``; ``tests/test_other_models.py`` checks this.
"""
from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock
from mxnet.gluon.contrib.nn import HybridConcurrent

from models.registry import refuse_residual_tricks, register_model

FEATURE_CHANNELS = 2048
# Dropout before the classifier, GluonCV's (and torchvision's) rate.
DROPOUT = 0.5


def _conv_unit(norm_kwargs, channels, kernel, stride=1, padding=0):
    """Bias-free conv, BatchNorm, ReLU: the only layer type of Inception-v3."""
    unit = nn.HybridSequential(prefix="")
    unit.add(nn.Conv2D(channels, kernel_size=kernel, strides=stride, padding=padding, use_bias=False),
             # epsilon 1e-3 as in the TensorFlow original and GluonCV: their trained statistics expect it.
             nn.BatchNorm(epsilon=1e-3, **norm_kwargs),
             nn.Activation("relu"))
    return unit


def _branch(norm_kwargs, *convs, pool=None):
    """One branch of a module: an optional 3x3 pool, then a conv unit per (channels, kernel, stride, padding)."""
    branch = nn.HybridSequential(prefix="")
    if pool == "avg":
        branch.add(nn.AvgPool2D(pool_size=3, strides=1, padding=1))
    elif pool == "max":
        branch.add(nn.MaxPool2D(pool_size=3, strides=2))
    branch.add(*(_conv_unit(norm_kwargs, *conv) for conv in convs))
    return branch


def _concatenation(prefix):
    """Branches run side by side on one input, their outputs stacked along channels."""
    return HybridConcurrent(axis=1, prefix=prefix)


def _module_35x35(pool_channels, prefix, norm_kwargs):
    """Figure 5: 1x1; 1x1 then 5x5; 1x1 then two 3x3 (a factorized 5x5); 3x3 average pool then 1x1."""
    module = _concatenation(prefix)
    with module.name_scope():
        module.add(_branch(norm_kwargs, (64, 1)),
                   _branch(norm_kwargs, (48, 1), (64, 5, 1, 2)),
                   _branch(norm_kwargs, (64, 1), (96, 3, 1, 1), (96, 3, 1, 1)),
                   _branch(norm_kwargs, (pool_channels, 1), pool="avg"))
    return module


def _reduction_to_17x17(prefix, norm_kwargs):
    """Figure 10: strided 3x3 conv branches beside a strided max pool halve the grid without a bottleneck."""
    module = _concatenation(prefix)
    with module.name_scope():
        module.add(_branch(norm_kwargs, (384, 3, 2)),
                   _branch(norm_kwargs, (64, 1), (96, 3, 1, 1), (96, 3, 2)),
                   _branch(norm_kwargs, pool="max"))
    return module


def _module_17x17(width_7x7, prefix, norm_kwargs):
    """Figure 6 with n = 7: 7x7 convolutions factorized into 1x7 and 7x1, ``width_7x7`` channels inside."""
    module = _concatenation(prefix)
    with module.name_scope():
        module.add(_branch(norm_kwargs, (192, 1)),
                   _branch(norm_kwargs, (width_7x7, 1), (width_7x7, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0))),
                   _branch(norm_kwargs, (width_7x7, 1),
                           (width_7x7, (7, 1), 1, (3, 0)), (width_7x7, (1, 7), 1, (0, 3)),
                           (width_7x7, (7, 1), 1, (3, 0)), (192, (1, 7), 1, (0, 3))),
                   _branch(norm_kwargs, (192, 1), pool="avg"))
    return module


def _reduction_to_8x8(prefix, norm_kwargs):
    """The second grid reduction: strided 3x3 convs (one after a factorized 7x7) beside a strided max pool."""
    module = _concatenation(prefix)
    with module.name_scope():
        module.add(_branch(norm_kwargs, (192, 1), (320, 3, 2)),
                   _branch(norm_kwargs, (192, 1), (192, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0)),
                           (192, 3, 2)),
                   _branch(norm_kwargs, pool="max"))
    return module


def _split_1x3_3x1(norm_kwargs):
    """Figure 7's expanded filter bank: 1x3 and 3x1 convs side by side on the same input."""
    split = _concatenation("")
    split.add(_branch(norm_kwargs, (384, (1, 3), 1, (0, 1))), _branch(norm_kwargs, (384, (3, 1), 1, (1, 0))))
    return split


def _module_8x8(prefix, norm_kwargs):
    """Figure 7: on the coarsest grid, the 3x3 branches widen into parallel 1x3 and 3x1 convs."""
    module = _concatenation(prefix)
    with module.name_scope():
        # Each widened branch nests a one-unit branch and the split in a sequence of its own: this nesting is
        # GluonCV's, and the parameter names that make its files load depend on it.
        widened_3x3 = nn.HybridSequential(prefix="")
        widened_3x3.add(_branch(norm_kwargs, (384, 1)), _split_1x3_3x1(norm_kwargs))
        widened_double_3x3 = nn.HybridSequential(prefix="")
        widened_double_3x3.add(_branch(norm_kwargs, (448, 1), (384, 3, 1, 1)), _split_1x3_3x1(norm_kwargs))
        module.add(_branch(norm_kwargs, (320, 1)), widened_3x3, widened_double_3x3,
                   _branch(norm_kwargs, (192, 1), pool="avg"))
    return module


class InceptionV3(HybridBlock):
    """Inception-v3 without auxiliary classifier, ending in global average pooling; inputs of 75x75 or more.

    Parameters
    ----------
    classes : int
        Size of the classifier output.
    last_gamma : bool
        Must be False: Inception-v3 has no residual block, so zero-gamma has no BatchNorm to start at 0.
    norm_kwargs : dict, optional
        Extra arguments for every BatchNorm (e.g. ``use_global_stats``).
    drop_path : float
        Must be 0: Inception-v3 has no residual branch that stochastic depth could drop.
    """

    def __init__(self, classes=1000, last_gamma=False, norm_kwargs=None, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        refuse_residual_tricks("Inception-v3", last_gamma, drop_path)
        norm_kwargs = dict(norm_kwargs or {})
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(
                _conv_unit(norm_kwargs, 32, 3, 2), _conv_unit(norm_kwargs, 32, 3), _conv_unit(norm_kwargs, 64, 3, 1, 1),
                nn.MaxPool2D(pool_size=3, strides=2),
                _conv_unit(norm_kwargs, 80, 1), _conv_unit(norm_kwargs, 192, 3),
                nn.MaxPool2D(pool_size=3, strides=2),
                _module_35x35(32, "A1_", norm_kwargs), _module_35x35(64, "A2_", norm_kwargs),
                _module_35x35(64, "A3_", norm_kwargs),
                _reduction_to_17x17("B_", norm_kwargs),
                _module_17x17(128, "C1_", norm_kwargs), _module_17x17(160, "C2_", norm_kwargs),
                _module_17x17(160, "C3_", norm_kwargs), _module_17x17(192, "C4_", norm_kwargs),
                _reduction_to_8x8("D_", norm_kwargs),
                _module_8x8("E1_", norm_kwargs), _module_8x8("E2_", norm_kwargs),
                nn.GlobalAvgPool2D(), nn.Dropout(DROPOUT))
            self.output = nn.Dense(classes, in_units=FEATURE_CHANNELS)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


register_model(InceptionV3, name="inceptionv3")
