"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"), also called drop-path.

During training, residual block l of L drops its residual branch f_l for a whole sample with probability d_l,
leaving only the shortcut: H_l = ReLU(b_l f_l(H_{l-1}) / (1 - d_l) + shortcut(H_{l-1})), b_l ~ Bernoulli(1 - d_l)
drawn per sample. The rates follow the paper's linear decay rule (section 3): its survival probability
p_l = 1 - (l / L)(1 - p_L) is a drop probability d_l = RATE x l / L with RATE = 1 - p_L, the last block's rate
(``--drop-path``, timm's ``drop_path_rate``; the paper's ImageNet runs have p_L = 0.5). The paper keeps the branch
unscaled in training and multiplies it by p_l at test time; the kept branch is scaled by 1 / p_l = 1 / (1 - d_l)
here instead, as in timm, so that inference is the plain network. (timm's ResNet spaces its rates as
RATE x (l - 1) / (L - 1), from 0 at the first block.)

MXNet's ``Dropout`` with ``axes=(1, 2, 3)`` draws one Bernoulli variable per sample, shared over channels and
positions, scales the kept samples by 1 / (1 - p) in training and is the identity in inference: that is the drop
of a residual branch of an NCHW map, with no parameters and in a static graph. Its masks come from MXNet's random
generator of the device the branch runs on: each GPU has its own, all CPU contexts share one; the training loop seeds
them before every batch from (seed, epoch, batch, rank), and MXNet derives each GPU's from that seed and the GPU's id.
"""

# One keep-or-drop per sample of an NCHW map: the mask is shared over channels, height and width.
_SAMPLE_AXES = (1, 2, 3)


def linear_decay_rates(rate, num_blocks):
    """The drop probability of blocks 1..``num_blocks``: ``rate`` x l / ``num_blocks`` for block l."""
    return [rate * block / num_blocks for block in range(1, num_blocks + 1)]


def drop_path(F, branch, rate):
    """``branch`` (N, C, H, W), each sample zeroed with probability ``rate`` or scaled by 1 / (1 - ``rate``) in
    training; unchanged in inference. A rate of 0 adds no operator to the graph."""
    if rate == 0:
        return branch
    return F.Dropout(branch, p=rate, axes=_SAMPLE_AXES)
