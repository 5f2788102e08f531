"""The optimizer of ``--optimizer``: the paper's Nesterov SGD, plain momentum SGD, and the LAMB and AdamW of timm's
"ResNet strikes back" recipes (Wightman et al. 2021).

nag, sgd and lamb are MXNet's own. MXNet 1.9.1 has an AdamW kernel (``contrib.adamw_update``) but no AdamW
optimizer; ``AdamW`` below is one, registered as "adamw". Under ``dist_async`` the servers unpickle it, which
imports this module there: the servers of ``tools/launch.py`` run in the launch directory (on ``sys.path`` with
``python -c``), and ``pip install -e .`` makes ``utils`` importable from anywhere. A server unpickles while it is
still inside ``import mxnet`` (its loop starts when ``mxnet.contrib`` imports the kvstore), before aliases such
as ``mx.nd`` exist: this module imports only MXNet's submodules, by their full names.

LAMB (You et al. 2020, Algorithm 2) as MXNet 1.9.1 computes it, per parameter ``x`` at update ``t``::

    m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
    r = m / (1 - beta1^t) / (sqrt(v / (1 - beta2^t)) + eps) + wd x
    x = x - lr * ||x|| / ||r|| * r          (ratio 1 where ||x|| or ||r|| is 0; no clipping of ||x||)

timm's ``Lamb`` differs in two ways: it leaves out the trust ratio for parameters without weight decay (in
timm's recipes the biases and normalization layers, as ``--no-wd`` here) and clips the global gradient norm to 1.

Both correct their moments by ``1 - beta^t``, ``t`` the number of updates the moments have seen. MXNet counts
``t`` from ``begin_num_update``, the schedule's step at which a resumed run starts; that is right only if the
moments were saved at that step. Moments that start from zero at a later step (on the parameter servers of a
resumed ``dist_async`` job, which MXNet cannot save; or ``--resume-params`` without ``--resume-states``) would be
divided by about 1 instead of ``1 - beta``: first steps ``(1 - beta1) / sqrt(1 - beta2)``, about 3 times too
long. Here ``t`` counts the moments' own updates, from 0 when they are fresh and from the checkpoint when they
are loaded with it (the optimizer pickled in the trainer states carries its counts); the rate schedule still
counts from ``begin_num_update``.
"""
import math

from mxnet.ndarray import zeros
from mxnet.ndarray.contrib import adamw_update
from mxnet.optimizer import LAMB as MXNetLAMB
from mxnet.optimizer import Optimizer, create, register

# timm's betas and epsilons (MXNet's LAMB and Adam have the same defaults).
ADAPTIVE_SETTINGS = {"lamb": dict(beta1=0.9, beta2=0.999, epsilon=1e-6),
                     "adamw": dict(beta1=0.9, beta2=0.999, epsilon=1e-8)}


def optimizer_settings(name, momentum):
    """The settings of ``--optimizer NAME`` beside the rate, schedule and weight decay, which every one takes."""
    if name in ADAPTIVE_SETTINGS:
        return dict(ADAPTIVE_SETTINGS[name])
    return dict(momentum=momentum)


def create_optimizer(name, **settings):
    """The optimizer of ``--optimizer NAME``: MXNet's for nag and sgd, this module's for lamb and adamw."""
    adaptive = {"lamb": LAMB, "adamw": AdamW}
    return adaptive[name](**settings) if name in adaptive else create(name, **settings)


class MomentsCountTheirUpdates:
    """Bias correction's ``t`` counts the updates of this optimizer's moments (see the module's docstring); the
    rate schedule's step, ``num_update``, counts from ``begin_num_update`` as in MXNet."""

    def _update_count(self, index):
        for position in index if isinstance(index, (list, tuple)) else [index]:
            self._index_update_count[position] = self._index_update_count.get(position, 0) + 1
            self.num_update = max(self.num_update, self.begin_num_update + self._index_update_count[position])


class LAMB(MomentsCountTheirUpdates, MXNetLAMB):
    """MXNet's LAMB, its moments corrected by their own update count."""


@register
class AdamW(MomentsCountTheirUpdates, Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as PyTorch's and timm's ``AdamW``.

    At update ``t`` of a parameter ``w`` with gradient ``g`` (times ``rescale_grad``, clipped to
    ``clip_gradient`` if set), rate ``lr`` (the schedule's, times the parameter's ``lr_mult``) and decay ``wd``
    (times its ``wd_mult``)::

        m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^t),     v_hat = v / (1 - beta2^t)
        w = w - lr * (m_hat / (sqrt(v_hat) + eps) + wd w)

    MXNet's ``Adam`` instead adds ``wd w`` to the gradient, where ``1 / sqrt(v)`` rescales it. The update is
    one fused kernel per parameter, ``contrib.adamw_update``: ``w -= eta (alpha m / (sqrt(v) + eps') + wd w)``,
    with no bias correction of its own; it folds in exactly with ``eta = lr``, ``alpha = sqrt(c2) / c1`` and
    ``eps' = eps sqrt(c2)`` (``c1 = 1 - beta1^t``, ``c2 = 1 - beta2^t``), since ``m_hat / (sqrt(v_hat) + eps) =
    (sqrt(c2) / c1) m / (sqrt(v) + eps sqrt(c2))``. Plain NDArray arithmetic would take some ten kernels and as
    many temporaries per parameter. The states are ``(m, v)``, as MXNet's ``Adam``'s.
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def create_state(self, index, weight):
        return (zeros(weight.shape, weight.context, dtype=weight.dtype),
                zeros(weight.shape, weight.context, dtype=weight.dtype))

    def update(self, index, weight, grad, state):
        self._update_count(index)
        step = self._index_update_count[index]
        first_correction, second_correction = 1 - self.beta1 ** step, 1 - self.beta2 ** step
        mean, var = state
        adamw_update(weight, grad, mean, var, rescale_grad=self.rescale_grad,
                     lr=math.sqrt(second_correction) / first_correction, eta=self._get_lr(index),
                     wd=self._get_wd(index), beta1=self.beta1, beta2=self.beta2,
                     epsilon=self.epsilon * math.sqrt(second_correction),
                     clip_gradient=self.clip_gradient or -1, out=weight)
