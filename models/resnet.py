"""ResNet v1 and the paper's three tweaks (He et al. 2019, section 4, Figure 2), as one class.

One ``ResNetV1`` class covers all four variants through constructor switches:

================  ==================  ===========  ==========
variant           ``stride_in_3x3``   ``deep_stem`` ``avg_down``
================  ==================  ===========  ==========
ResNet (v1)       False               False        False
ResNet-B (v1b)    True                False        False
ResNet-C (v1c)    True                True         False
ResNet-D (v1d)    True                True         True
================  ==================  ===========  ==========

Parameter names follow GluonCV's ``ResNetV1b`` (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, ``fc``; blocks with
``conv1``..``conv3``, ``bn1``..``bn3``, ``downsample``), so ``.params`` files of the B, C and D variants are
interchangeable with GluonCV's; ``tests/test_models.py`` freezes them. Stochastic depth (``drop_path``) adds no
parameter, so it leaves them as they are.
"""
from functools import partial

from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from models.drop_path import drop_path, linear_decay_rates
from models.registry import register_model

STAGE_WIDTHS = (64, 128, 256, 512)


def _batch_norm(norm_kwargs, zero_gamma=False):
    return nn.BatchNorm(gamma_initializer="zeros" if zero_gamma else "ones", **norm_kwargs)


def _conv(channels, kernel, stride=1):
    return nn.Conv2D(channels, kernel_size=kernel, strides=stride, padding=kernel // 2, use_bias=False)


class _ResidualBlock(HybridBlock):
    """What both blocks share: the branch, dropped per sample with probability ``drop_rate`` in training
    (stochastic depth), is added to the shortcut (``downsample(x)``, or ``x`` itself), then the ReLU."""

    def __init__(self, drop_rate, **kwargs):
        super().__init__(**kwargs)
        self.drop_rate = drop_rate

    def _join(self, F, branch, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.Activation(drop_path(F, branch, self.drop_rate) + shortcut, act_type="relu")


class BasicBlock(_ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34); the stride sits on the first. ``stride_in_3x3`` has no effect here.

    In training the branch is dropped per sample with probability ``drop_rate`` (stochastic depth).
    """

    expansion = 1

    def __init__(self, width, stride, downsample, last_gamma, norm_kwargs, stride_in_3x3=True, drop_rate=0.0,
                 **kwargs):
        super().__init__(drop_rate, **kwargs)
        with self.name_scope():
            self.conv1 = _conv(width, 3, stride)
            self.bn1 = _batch_norm(norm_kwargs)
            self.conv2 = _conv(width, 3)
            self.bn2 = _batch_norm(norm_kwargs, zero_gamma=last_gamma)
            self.downsample = downsample

    def hybrid_forward(self, F, x):
        out = F.Activation(self.bn1(self.conv1(x)), act_type="relu")
        return self._join(F, self.bn2(self.conv2(out)), x)


class Bottleneck(_ResidualBlock):
    """1x1 -> 3x3 -> 1x1 bottleneck (ResNet-50/101/152), Figure 1 of the paper.

    The original ResNet strides the first 1x1 convolution, which skips three quarters of the input;
    ResNet-B (``stride_in_3x3=True``) moves the stride to the 3x3 convolution so that no input is ignored.
    In training the branch is dropped per sample with probability ``drop_rate`` (stochastic depth).
    """

    expansion = 4

    def __init__(self, width, stride, downsample, last_gamma, norm_kwargs, stride_in_3x3=True, drop_rate=0.0,
                 **kwargs):
        super().__init__(drop_rate, **kwargs)
        with self.name_scope():
            self.conv1 = _conv(width, 1, 1 if stride_in_3x3 else stride)
            self.bn1 = _batch_norm(norm_kwargs)
            self.conv2 = _conv(width, 3, stride if stride_in_3x3 else 1)
            self.bn2 = _batch_norm(norm_kwargs)
            self.conv3 = _conv(width * self.expansion, 1)
            self.bn3 = _batch_norm(norm_kwargs, zero_gamma=last_gamma)
            self.downsample = downsample

    def hybrid_forward(self, F, x):
        out = F.Activation(self.bn1(self.conv1(x)), act_type="relu")
        out = F.Activation(self.bn2(self.conv2(out)), act_type="relu")
        return self._join(F, self.bn3(self.conv3(out)), x)


def _shortcut_projection(channels, stride, avg_down, norm_kwargs):
    """Path B of a downsampling block: a strided 1x1 conv, or (ResNet-D) 2x2 average pooling then a 1x1 conv."""
    projection = nn.HybridSequential(prefix="")
    if avg_down:
        # At stride 1 the pool is an identity; it stays so that parameter names (downsample.1, .2) match
        # GluonCV's v1d in every stage and their files load unchanged.
        projection.add(nn.AvgPool2D(pool_size=stride, strides=stride, ceil_mode=True, count_include_pad=False))
        projection.add(nn.Conv2D(channels, kernel_size=1, strides=1, use_bias=False))
    else:
        projection.add(nn.Conv2D(channels, kernel_size=1, strides=stride, use_bias=False))
    projection.add(_batch_norm(norm_kwargs))
    return projection


def _stem(deep_stem, stem_width, norm_kwargs):
    """The input stem: one 7x7 conv, or (ResNet-C) three 3x3 convs of stem_width, stem_width, 2 x stem_width."""
    if not deep_stem:
        return _conv(64, 7, 2)
    stem = nn.HybridSequential(prefix="")
    stem.add(_conv(stem_width, 3, 2), _batch_norm(norm_kwargs), nn.Activation("relu"),
             _conv(stem_width, 3), _batch_norm(norm_kwargs), nn.Activation("relu"),
             _conv(stem_width * 2, 3))
    return stem


class ResNetV1(HybridBlock):
    """ResNet v1 with the paper's tweaks as switches.

    Parameters
    ----------
    block : BasicBlock or Bottleneck
    layers : list of int
        Number of blocks in each of the four stages.
    classes : int
        Size of the classifier output.
    stride_in_3x3 : bool
        ResNet-B: stride 2 on the 3x3 conv of path A instead of its first 1x1 conv.
    deep_stem : bool
        ResNet-C: three 3x3 convs instead of the 7x7 input conv.
    stem_width : int
        Width of the first two deep-stem convs (the paper: 32).
    avg_down : bool
        ResNet-D: path B downsamples by 2x2 average pooling before a stride-1 1x1 conv.
    last_gamma : bool
        Zero-gamma (section 3.1): the last BatchNorm of every residual block starts with gamma = 0,
        so every block starts as the identity.
    norm_kwargs : dict, optional
        Extra arguments for every BatchNorm (e.g. ``use_global_stats``).
    stage_widths : tuple of int
        Width of each stage's blocks (a bottleneck's output is 4 times it); ResNet's (64, 128, 256, 512) by default.
        Narrower stages train the same recipe at a fraction of the cost, as the tests' topology runs do.
    drop_path : float
        Stochastic depth (Huang et al. 2016): in training, block l of the network's L blocks drops its residual
        branch per sample with probability ``drop_path`` x l / L (see :mod:`models.drop_path`).
    """

    def __init__(self, block, layers, classes=1000, stride_in_3x3=False, deep_stem=False, stem_width=32,
                 avg_down=False, last_gamma=False, norm_kwargs=None, drop_path=0.0, stage_widths=STAGE_WIDTHS,
                 **kwargs):
        super().__init__(**kwargs)
        norm_kwargs = dict(norm_kwargs or {})
        drop_rates = iter(linear_decay_rates(drop_path, sum(layers)))
        with self.name_scope():
            self.conv1 = _stem(deep_stem, stem_width, norm_kwargs)
            self.bn1 = _batch_norm(norm_kwargs)
            self.relu = nn.Activation("relu")
            self.maxpool = nn.MaxPool2D(pool_size=3, strides=2, padding=1)
            in_channels = stem_width * 2 if deep_stem else 64
            for index, (width, num_blocks) in enumerate(zip(stage_widths, layers)):
                stage = nn.HybridSequential(prefix=f"layer{index + 1}_")
                with stage.name_scope():
                    for position in range(num_blocks):
                        stride = 2 if index > 0 and position == 0 else 1
                        out_channels = width * block.expansion
                        downsample = None
                        if stride != 1 or in_channels != out_channels:
                            downsample = _shortcut_projection(out_channels, stride, avg_down, norm_kwargs)
                        stage.add(block(width, stride, downsample, last_gamma, norm_kwargs,
                                        stride_in_3x3=stride_in_3x3, drop_rate=next(drop_rates)))
                        in_channels = out_channels
                setattr(self, f"layer{index + 1}", stage)
            self.avgpool = nn.GlobalAvgPool2D()
            self.flat = nn.Flatten()
            self.fc = nn.Dense(classes, in_units=in_channels)

    def hybrid_forward(self, F, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flat(self.avgpool(x)))


DEPTHS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    # The smallest bottleneck ResNet (as in timm's resnet26): ResNet-50's blocks, two per stage. It is the
    # cheapest network on which all three tweaks act; on basic blocks ResNet-B has no 1x1 stride to move.
    26: (Bottleneck, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}

VARIANTS = {
    "v1": dict(stride_in_3x3=False, deep_stem=False, avg_down=False),
    "v1b": dict(stride_in_3x3=True, deep_stem=False, avg_down=False),
    "v1c": dict(stride_in_3x3=True, deep_stem=True, avg_down=False),
    "v1d": dict(stride_in_3x3=True, deep_stem=True, avg_down=True),
}


def resnet(depth, variant, **kwargs):
    """ResNet-``depth`` in ``variant`` (v1, v1b, v1c, v1d); ``kwargs`` go to :class:`ResNetV1`."""
    block, layers = DEPTHS[depth]
    return ResNetV1(block, layers, **{**VARIANTS[variant], **kwargs})


for _depth in DEPTHS:
    for _variant in VARIANTS:
        register_model(partial(resnet, _depth, _variant), name=f"resnet{_depth}_{_variant}")
