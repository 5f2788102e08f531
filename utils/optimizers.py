"""The optimizer of ``--optimizer``: the paper's Nesterov SGD, plain momentum SGD, and the LAMB and AdamW of timm's
"ResNet strikes back" recipes (Wightman et al. 2021).

nag and sgd are MXNet's own. ``LAMB`` below is timm's rule on MXNet's LAMB kernels; MXNet 1.9.1 has an AdamW
kernel (``contrib.adamw_update``) but no AdamW optimizer: ``AdamW`` below is one, registered as "adamw". Under
``dist_async`` the servers unpickle them, which imports this module there: the servers of ``tools/launch.py`` run
in the launch directory (on ``sys.path`` with ``python -c``), and ``pip install -e .`` makes ``utils`` importable
from anywhere. A server unpickles while it is still inside ``import mxnet`` (its loop starts when ``mxnet.contrib``
imports the kvstore), before aliases such as ``mx.nd`` exist: this module imports only MXNet's submodules, by their
full names.

LAMB (You et al. 2020, Algorithm 2) as timm's ``Lamb`` computes it with its defaults, per parameter ``x`` at update
``t``, ``g`` its gradient (times ``rescale_grad``) divided by ``c = max(1, ||G|| / max_grad_norm)``, ``||G||`` the
norm of all parameters' gradients together (after the reduction over devices and workers), ``max_grad_norm`` 1::

    m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
    r = m / (1 - beta1^t) / (sqrt(v / (1 - beta2^t)) + eps) + wd x
    x = x - lr * ||x|| / ||r|| * r   where wd is not 0 (ratio 1 where ||x|| or ||r|| is 0; no clipping of it)
    x = x - lr * r                   where wd is 0 (--no-wd's biases and BatchNorm), unless always_adapt

timm's rule is ``if weight_decay != 0 or always_adapt`` (its ``always_adapt`` defaults to False, as here). MXNet
1.9.1's ``LAMB`` takes the trust ratio everywhere and does not clip ``||G||``; its per-parameter kernels
(``lamb_update_phase1`` and ``_phase2``) do the arithmetic here. The trainer sets ``c`` before each update
(``engine.loop.update_weights``). Under ``dist_async`` the servers update one parameter at a time and see no
global norm: their LAMB does not clip (``c`` = 1).

Both correct their moments by ``1 - beta^t``, ``t`` the number of updates the moments have seen. MXNet counts
``t`` from ``begin_num_update``, the schedule's step at which a resumed run starts; that is right only if the
moments were saved at that step. Moments that start from zero at a later step (on the parameter servers of a
resumed ``dist_async`` job, which MXNet cannot save; or ``--resume-params`` without ``--resume-states``) would be
divided by about 1 instead of ``1 - beta``: first steps ``(1 - beta1) / sqrt(1 - beta2)``, about 3 times too
long. Here ``t`` counts the moments' own updates, from 0 when they are fresh and from the checkpoint when they
are loaded with it (a checkpoint's ``optimizer.json`` carries its counts); the rate schedule still
counts from ``begin_num_update``.
"""
import math

from mxnet.ndarray import add_n, lamb_update_phase1, lamb_update_phase2, zeros
from mxnet.ndarray.contrib import adamw_update
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


class LAMB(MomentsCountTheirUpdates, Optimizer):
    """timm's ``Lamb`` (the module's docstring): the global gradient norm clipped to ``max_grad_norm`` (None: not
    clipped), the trust ratio where the parameter's weight decay is not 0 or with ``always_adapt``. The states are
    ``(m, v)``, as MXNet's ``LAMB``'s."""

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-6, max_grad_norm=1.0,
                 always_adapt=False, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.max_grad_norm, self.always_adapt = max_grad_norm, always_adapt
        # 1 / c of the update under way, set by clip_to_global_norm before it; 1 where nothing sets it (servers).
        self.gradient_scale = 1.0

    def clip_to_global_norm(self, global_norm):
        """Divide the next update's gradients by ``max(1, global_norm / max_grad_norm)``."""
        self.gradient_scale = 1.0 / max(1.0, global_norm / self.max_grad_norm) if self.max_grad_norm else 1.0

    def create_state(self, index, weight):
        return (zeros(weight.shape, weight.context, dtype=weight.dtype),
                zeros(weight.shape, weight.context, dtype=weight.dtype))

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        mean, var = state
        direction = lamb_update_phase1(weight, grad, mean, var, beta1=self.beta1, beta2=self.beta2,
                                       epsilon=self.epsilon, t=self._index_update_count[index], wd=wd,
                                       rescale_grad=self.rescale_grad * self.gradient_scale,
                                       clip_gradient=self.clip_gradient or -1)
        direction_norm = _norm(direction)
        # Without the trust ratio, phase 2 gets ratio 1: the direction's norm twice (1 also where it is 0).
        weight_norm = _norm(weight) if wd or self.always_adapt else direction_norm
        lamb_update_phase2(weight, direction, weight_norm, direction_norm, lr=lr, out=weight)


def _norm(array):
    """``||array||`` as an array of its dtype, summed in float64: MXNet 1.9.1's float32 ``norm`` on CPU is 1e-3 off
    for 2.4 M numbers (ResNet-50's largest weight; measured against numpy in float64), float64's 2e-14."""
    return array.astype("float64").norm().astype(array.dtype)


def global_gradient_norm(params, rescale_grad):
    """``||G||``: the norm of all of ``params``' gradients together, each times ``rescale_grad``, from their first
    device's copy (after the reduction every device holds the same sum); a float, so it waits for the gradients."""
    grads = [param.list_grad()[0] for param in params if param.grad_req != "null"]
    squares = add_n(*[grad.astype("float64").norm().square() for grad in grads])   # float64: see _norm
    return math.sqrt(float(squares.asscalar())) * rescale_grad


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
