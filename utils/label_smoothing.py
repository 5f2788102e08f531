"""Section 5.2, label smoothing: soft targets that keep the optimal logit gap finite."""
import mxnet as mx

SMOOTHING_STYLES = ("paper", "gluoncv")


def smooth_targets(labels, num_classes, epsilon, style="paper"):
    """Dense target distributions for integer ``labels``, smoothed by ``epsilon``.

    ``style="paper"`` is the paper's formula: ``1 - epsilon`` for the true class and
    ``epsilon / (K - 1)`` for each of the other ``K - 1`` classes. ``style="gluoncv"`` is the form of GluonCV's
    script and most libraries, the uniform mixture ``(1 - epsilon) * one_hot + epsilon / K``: ``1 - epsilon +
    epsilon / K`` and ``epsilon / K``. Every row sums to 1; ``epsilon = 0`` gives one-hot rows. The rows have the
    labels' type.
    """
    if style == "paper":
        on_value, off_value = 1.0 - epsilon, epsilon / (num_classes - 1)
    elif style == "gluoncv":
        on_value, off_value = 1.0 - epsilon + epsilon / num_classes, epsilon / num_classes
    else:
        raise ValueError(f"unknown label-smoothing style {style!r}; choose one of {', '.join(SMOOTHING_STYLES)}")
    return mx.nd.one_hot(labels, num_classes, on_value=on_value, off_value=off_value, dtype=labels.dtype)
