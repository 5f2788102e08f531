"""Section 5.3, knowledge distillation from a teacher network's softened outputs."""
import mxnet as mx
from mxnet import autograd, gluon


class DistillationLoss:
    """``w * CE(p, softmax(z)) + (1 - w) * T^2 * KL(q || softmax(z / T))`` per example, ``q = softmax(r / T)``.

    ``z`` are the student's logits, ``r`` the teacher's on the same (possibly mixed) images, ``q`` the teacher's
    soft targets, ``p`` the targets (integer labels, or dense rows under label smoothing or mixup), ``T`` the
    temperature (the paper: 20) and ``w`` the weight of the hard term. The paper's loss adds the two terms with
    equal weight; ``w = 0.5`` halves both, which only rescales the learning rate. ``T^2`` keeps the soft term's
    gradient magnitude independent of ``T`` (Hinton et al. 2015).

    The paper writes the soft term as a cross-entropy; this is the Kullback-Leibler divergence, which differs from
    it by the entropy of the soft targets, a constant for the student. With ``s = softmax(z / T)``::

        CE(q, s) = -sum_i q_i log s_i = sum_i q_i (log q_i - log s_i) - sum_i q_i log q_i = KL(q || s) + H(q)

    and ``H(q)`` depends on the teacher alone, so both give the same gradient,
    ``dKL/dz_i = dCE/dz_i = (s_i - q_i) / T`` (as ``sum_i q_i = 1``): the student trains exactly as with the
    paper's form. Only the logged value differs. At T = 20 the soft targets are nearly uniform, so ``H(q)`` is
    near ``log K`` and ``(1 - w) T^2 H(q)`` alone is about 460 for 10 classes at ``w = 0.5``: a cross-entropy
    loss of that size looks like divergence. The KL form is 0 where the student matches the teacher, so the
    logged loss is the hard term plus how far the student is from the teacher.
    """

    def __init__(self, teacher, temperature=20.0, hard_weight=0.5, sparse_targets=True):
        self.teacher = teacher
        self.temperature = temperature
        self.hard_weight = hard_weight
        self._hard = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=sparse_targets)
        self._soft = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)

    def soft_targets(self, images):
        """The teacher's softened distribution ``q`` and its entropy ``H(q)``, computed in inference mode and
        outside the graph."""
        with autograd.pause():
            logits = self.teacher(images) / self.temperature
            soft_targets = mx.nd.softmax(logits)
            # log_softmax stays finite where a confident teacher's q underflows to 0 (0 * log 0 would be NaN).
            return soft_targets, -(soft_targets * mx.nd.log_softmax(logits)).sum(axis=-1)

    def __call__(self, logits, targets, images):
        hard = self._hard(logits, targets)
        soft_targets, entropy = self.soft_targets(images)
        # KL(q || s) = CE(q, s) - H(q): the cross-entropy carries the gradient (as the paper writes the loss), the
        # teacher's entropy, a constant, only moves the value. Taking q as exp(log_softmax(r / T)) instead moved
        # the 1-device and 2-device runs of tests/test_topology.py 1e-3 apart instead of 1e-7.
        soft = self._soft(logits / self.temperature, soft_targets) - entropy
        return self.hard_weight * hard + (1 - self.hard_weight) * self.temperature ** 2 * soft


class CrossEntropyLoss:
    """Plain softmax cross-entropy with the same call signature as :class:`DistillationLoss`."""

    def __init__(self, sparse_targets=True):
        self._loss = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=sparse_targets)

    def __call__(self, logits, targets, images):
        return self._loss(logits, targets)
