"""Binary cross-entropy on the targets as per-class probabilities, as timm's ``BinaryCrossEntropy`` trains the
ResNets of "ResNet strikes back" (Wightman et al. 2021, arXiv 2110.00476).

Each class is a yes/no question answered by ``sigmoid(x_k)``; the loss of one example with logits ``x`` and
targets ``t`` over ``K`` classes is the mean of the classes' binary cross-entropies::

    BCE(x, t) = 1/K * sum_k [log(1 + exp(x_k)) - x_k t_k]
              = 1/K * sum_k [max(x_k, 0) - x_k t_k + log(1 + exp(-|x_k|))]

which is ``-(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))`` without its overflow. ``t`` is the one-hot row
of an integer label, or the dense row of label smoothing, mixup or CutMix as given. With a threshold ``T``
(timm's ``--bce-target-thresh``) every target above ``T`` becomes 1 and the rest 0, so that both images of a
mixed pair count as present. timm takes the mean over classes and examples; Trainer.step divides our sum over
the examples by the batch, so one example's loss is its mean over the classes.
"""
import mxnet as mx


class BinaryCrossEntropyLoss:
    """Per example ``mean_k softplus(x_k) - x_k t_k``, with the call signature of ``CrossEntropyLoss``.

    ``softplus`` is MXNet's ``softrelu`` activation, ``log1p(exp(x))`` below 20 and ``x`` above, stable for
    logits of any size; its gradient ``sigmoid(x) - t`` is also right at ``x = 0``, where the ``max``/``abs``
    form of gluon's ``SigmoidBinaryCrossEntropyLoss`` takes MXNet's subgradient 0 of both and gives ``-t``.
    """

    def __init__(self, sparse_targets=True, target_threshold=None):
        self.sparse_targets = sparse_targets
        self.target_threshold = target_threshold

    def targets(self, logits, targets):
        """The per-class probabilities the loss compares the sigmoids with: one-hot, dense, thresholded."""
        if self.sparse_targets:
            targets = mx.nd.one_hot(targets, logits.shape[1], dtype=logits.dtype)
        if self.target_threshold is not None:
            targets = targets > self.target_threshold
        return targets

    def __call__(self, logits, targets, images):
        targets = self.targets(logits, targets)
        return (mx.nd.Activation(logits, act_type="softrelu") - logits * targets).mean(axis=1)
