"""MobileNet v1 and v2, each one class whose width multiplier is a constructor argument.

The paper trains MobileNet (v1, Howard et al. 2017) beside ResNet-50 and Inception-V3 with the same recipe
(He et al. 2019, sections 2.2, 3 and 5). MobileNet v2 (Sandler et al. 2018) is not in the paper; unlike v1 it has
residual blocks, so zero-gamma (section 3.1) and stochastic depth (``drop_path``) apply to it.

Channel counts are the base widths times the multiplier, truncated by ``int()``, and parameter names follow
GluonCV's ``MobileNet`` and ``MobileNetV2`` (one flat ``features`` sequence, then ``output``), so that ``.params``
files are interchangeable with GluonCV's ``mobilenet{m}`` and ``mobilenetv2_{m}``; ``tests/test_other_models.py``
checks this.
"""
from functools import partial

from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from models.drop_path import drop_path, linear_decay_rates
from models.registry import refuse_residual_tricks, register_model

MULTIPLIERS = (1.0, 0.75, 0.5, 0.25)

# Howard et al. 2017, Table 1: (stride of the 3x3 depthwise conv, channels of the 1x1 pointwise conv) of the
# 13 depthwise separable layers. The table prints s2 for the 13th depthwise conv, yet its output stays 7x7:
# the stride is 1, as in the released implementations.
MOBILENET_V1_LAYERS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
                       (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))

# Sandler et al. 2018, Table 2: expansion t, output channels c, repeats n, stride s of the first repeat.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

STEM_CHANNELS = 32
MOBILENET_V2_LAST_CHANNELS = 1280


class ReLU6(HybridBlock):
    """min(max(x, 0), 6), MobileNet v2's activation (Sandler et al. 2018, Table 1)."""

    def hybrid_forward(self, F, x):
        return F.clip(x, 0, 6)


def _relu():
    """A ReLU, MobileNet v1's activation."""
    return nn.Activation("relu")


def _add_conv_bn(layers, channels, kernel, norm_kwargs, stride=1, groups=1, activation=None, zero_gamma=False):
    """Append a bias-free conv, its BatchNorm and, if ``activation`` (a factory) is given, the activation."""
    layers.add(nn.Conv2D(channels, kernel_size=kernel, strides=stride, padding=kernel // 2, groups=groups,
                         use_bias=False))
    layers.add(nn.BatchNorm(gamma_initializer="zeros" if zero_gamma else "ones", **norm_kwargs))
    if activation is not None:
        layers.add(activation())


def _add_stem(layers, multiplier, norm_kwargs, activation):
    """The 3x3 stride-2 stem of both MobileNets; returns its number of channels."""
    channels = int(STEM_CHANNELS * multiplier)
    _add_conv_bn(layers, channels, 3, norm_kwargs, stride=2, activation=activation)
    return channels


class MobileNetV1(HybridBlock):
    """MobileNet v1 (Howard et al. 2017): a 3x3 stem, then 13 depthwise separable convolutions.

    Parameters
    ----------
    multiplier : float
        Width multiplier alpha (Howard et al., section 3.3): every layer has ``int(alpha * width)`` channels.
    classes : int
        Size of the classifier output.
    last_gamma : bool
        Must be False: there is no residual block whose last BatchNorm zero-gamma could start at 0.
    norm_kwargs : dict, optional
        Extra arguments for every BatchNorm (e.g. ``use_global_stats``).
    drop_path : float
        Must be 0: there is no residual branch that stochastic depth could drop.
    """

    def __init__(self, multiplier=1.0, classes=1000, last_gamma=False, norm_kwargs=None, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        refuse_residual_tricks("MobileNet v1", last_gamma, drop_path)
        norm_kwargs = dict(norm_kwargs or {})
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            with self.features.name_scope():
                in_channels = _add_stem(self.features, multiplier, norm_kwargs, _relu)
                for stride, width in MOBILENET_V1_LAYERS:
                    out_channels = int(width * multiplier)
                    _add_conv_bn(self.features, in_channels, 3, norm_kwargs, stride=stride, groups=in_channels,
                                 activation=_relu)
                    _add_conv_bn(self.features, out_channels, 1, norm_kwargs, activation=_relu)
                    in_channels = out_channels
                self.features.add(nn.GlobalAvgPool2D(), nn.Flatten())
            self.output = nn.Dense(classes, in_units=in_channels)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


class InvertedResidual(HybridBlock):
    """MobileNet v2's bottleneck (Sandler et al. 2018, Figure 3b and Table 1).

    1x1 expansion to ``t`` times the input width (omitted when t = 1), 3x3 depthwise conv carrying the stride,
    then a linear 1x1 projection: no activation after it, since a ReLU on the narrow output would destroy
    information (section 3.2). The input is added back when stride and width allow an identity shortcut; then,
    in training, the rest is dropped per sample with probability ``drop_rate`` (stochastic depth).
    """

    def __init__(self, in_channels, channels, expansion, stride, last_gamma, norm_kwargs, drop_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.use_shortcut = stride == 1 and in_channels == channels
        # Without a shortcut, dropping the branch would drop the whole signal, not skip a block.
        self.drop_rate = drop_rate if self.use_shortcut else 0.0
        hidden = in_channels * expansion
        with self.name_scope():
            self.out = nn.HybridSequential()
            if expansion != 1:
                _add_conv_bn(self.out, hidden, 1, norm_kwargs, activation=ReLU6)
            _add_conv_bn(self.out, hidden, 3, norm_kwargs, stride=stride, groups=hidden, activation=ReLU6)
            # Zero-gamma only where a shortcut carries the input past the block: elsewhere the block's output
            # would start at zero and no signal would pass.
            _add_conv_bn(self.out, channels, 1, norm_kwargs, zero_gamma=last_gamma and self.use_shortcut)

    def hybrid_forward(self, F, x):
        out = self.out(x)
        return drop_path(F, out, self.drop_rate) + x if self.use_shortcut else out


class MobileNetV2(HybridBlock):
    """MobileNet v2 (Sandler et al. 2018, Table 2): a 3x3 stem, 17 inverted residual blocks, a 1x1 conv to 1280.

    Parameters
    ----------
    multiplier : float
        Width multiplier: every layer but the last conv has ``int(multiplier * width)`` channels; the last conv
        keeps 1280 channels for multipliers up to 1 (Sandler et al., section 6.1).
    classes : int
        Size of the classifier output, a bias-free 1x1 conv as in GluonCV.
    last_gamma : bool
        Zero-gamma (He et al. 2019, section 3.1): the last BatchNorm of every block with an identity shortcut
        starts with gamma = 0, so that block starts as the identity.
    norm_kwargs : dict, optional
        Extra arguments for every BatchNorm (e.g. ``use_global_stats``).
    drop_path : float
        Stochastic depth (Huang et al. 2016): block l of the 17 has the rate ``drop_path`` x l / 17, counted over
        every block as timm's MobileNet v2 does; in training each of the 10 blocks with an identity shortcut drops
        its branch per sample at its rate (see :mod:`models.drop_path`).
    """

    def __init__(self, multiplier=1.0, classes=1000, last_gamma=False, norm_kwargs=None, drop_path=0.0, **kwargs):
        super().__init__(**kwargs)
        norm_kwargs = dict(norm_kwargs or {})
        drop_rates = iter(linear_decay_rates(drop_path, sum(repeats for _, _, repeats, _ in MOBILENET_V2_STAGES)))
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="features_")
            with self.features.name_scope():
                in_channels = _add_stem(self.features, multiplier, norm_kwargs, ReLU6)
                for expansion, width, repeats, first_stride in MOBILENET_V2_STAGES:
                    out_channels = int(width * multiplier)
                    for position in range(repeats):
                        stride = first_stride if position == 0 else 1
                        self.features.add(InvertedResidual(in_channels, out_channels, expansion, stride,
                                                           last_gamma, norm_kwargs, drop_rate=next(drop_rates)))
                        in_channels = out_channels
                last_channels = MOBILENET_V2_LAST_CHANNELS
                if multiplier > 1:
                    last_channels = int(last_channels * multiplier)
                _add_conv_bn(self.features, last_channels, 1, norm_kwargs, activation=ReLU6)
                self.features.add(nn.GlobalAvgPool2D())
            self.output = nn.HybridSequential(prefix="output_")
            with self.output.name_scope():
                self.output.add(nn.Conv2D(classes, kernel_size=1, use_bias=False, prefix="pred_"), nn.Flatten())

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


for _multiplier in MULTIPLIERS:
    register_model(partial(MobileNetV1, _multiplier), name=f"mobilenet{_multiplier}")
    register_model(partial(MobileNetV2, _multiplier), name=f"mobilenetv2_{_multiplier}")
