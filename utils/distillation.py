"""Section 5.3, knowledge distillation from a teacher network's softened outputs."""
import mxnet as mx
from mxnet import autograd, gluon

from utils.errors import UserError


class DistillationLoss:
    """``w * CE(p, softmax(z)) + (1 - w) * T^2 * CE(softmax(r / T), softmax(z / T))`` per example.

    ``z`` are the student's logits, ``r`` the teacher's on the same (possibly mixed) images, ``p`` the
    targets (integer labels, or dense rows under label smoothing or mixup), ``T`` the temperature (the
    paper: 20) and ``w`` the weight of the hard term. The paper's loss adds the two terms with equal weight;
    ``w = 0.5`` halves both, which only rescales the learning rate. ``T^2`` keeps the soft term's gradient
    magnitude independent of ``T`` (Hinton et al. 2015).
    """

    def __init__(self, teacher, temperature=20.0, hard_weight=0.5, sparse_targets=True):
        self.teacher = teacher
        self.temperature = temperature
        self.hard_weight = hard_weight
        self._hard = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=sparse_targets)
        self._soft = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)

    def soft_targets(self, images):
        """The teacher's softened distribution, computed in inference mode and outside the graph."""
        with autograd.pause():
            return mx.nd.softmax(self.teacher(images) / self.temperature)

    def __call__(self, logits, targets, images):
        hard = self._hard(logits, targets)
        soft = self._soft(logits / self.temperature, self.soft_targets(images))
        return self.hard_weight * hard + (1 - self.hard_weight) * self.temperature ** 2 * soft


class CrossEntropyLoss:
    """Plain softmax cross-entropy with the same call signature as :class:`DistillationLoss`."""

    def __init__(self, sparse_targets=True):
        self._loss = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=sparse_targets)

    def __call__(self, logits, targets, images):
        return self._loss(logits, targets)


def check_params_fit(net, params_file, label):
    """Raise UserError naming the first parameter of ``params_file`` that ``net`` lacks or shapes otherwise.

    ``net`` must have known shapes (initialized and run once).
    """
    try:
        saved = mx.nd.load(params_file)
    except mx.base.MXNetError:
        raise UserError(f"{label} {params_file} is not a readable MXNet .params file") from None
    expected = net._collect_params_with_prefix()
    for name in sorted(set(saved) | set(expected)):
        if name not in expected:
            raise UserError(f"{label} {params_file} does not fit the network: it has parameter {name!r}, "
                            "which the network lacks (wrong model name?)")
        if name not in saved:
            raise UserError(f"{label} {params_file} does not fit the network: parameter {name!r} is missing")
        if saved[name].shape != expected[name].shape:
            raise UserError(f"{label} {params_file} does not fit the network: parameter {name!r} has shape "
                            f"{saved[name].shape} in the file but {expected[name].shape} in the network")
