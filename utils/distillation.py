"""Section 5.3, knowledge distillation from a teacher network's softened outputs."""
import mxnet as mx
from mxnet import autograd, gluon


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
