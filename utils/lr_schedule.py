"""Learning-rate policy: linear scaling (section 3.1), warmup (section 3.1), step or cosine decay (section 5.1).

The schedules are MXNet's own ``mx.lr_scheduler`` classes, which match the paper's formulas when driven by
the optimizer's update count ``t`` (1 for the first batch): warmup gives batch ``i`` of ``m`` warmup batches
the rate ``i * eta / m``; cosine gives ``eta_t = 0.5 * (1 + cos(pi * t / T)) * eta`` with ``t`` and ``T``
counted in batches after warmup; step decay multiplies by ``decay`` from the first batch of each listed epoch.
"""
import mxnet as mx

LR_MODES = ("step", "cosine", "poly", "linear")


def linear_scaled_lr(total_batch_size, base_lr=0.1, base_batch_size=256):
    """Section 3.1, linear scaling: ``base_lr * b / base_batch_size`` for a total batch of ``b`` images."""
    return base_lr * total_batch_size / base_batch_size


def build_lr_scheduler(mode, base_lr, batches_per_epoch, num_epochs, warmup_epochs=0, warmup_lr=0.0,
                       decay=0.1, decay_epochs=(), poly_power=2):
    """An ``mx.lr_scheduler.LRScheduler`` for the whole run, counted per batch (optimizer update).

    ``decay_epochs`` are epochs counted from the start of training, warmup included.
    """
    warmup = dict(warmup_steps=int(warmup_epochs * batches_per_epoch), warmup_begin_lr=warmup_lr,
                  warmup_mode="linear")
    total_steps = num_epochs * batches_per_epoch
    if mode == "step":
        steps = [epoch * batches_per_epoch for epoch in decay_epochs if 0 < epoch < num_epochs]
        if not steps:
            return mx.lr_scheduler.FactorScheduler(step=max(total_steps, 1), factor=1.0, base_lr=base_lr,
                                                   **warmup)
        return mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=decay, base_lr=base_lr, **warmup)
    if mode == "cosine":
        return mx.lr_scheduler.CosineScheduler(max_update=total_steps, base_lr=base_lr, final_lr=0, **warmup)
    if mode in ("poly", "linear"):
        return mx.lr_scheduler.PolyScheduler(max_update=total_steps, base_lr=base_lr, final_lr=0,
                                             pwr=1 if mode == "linear" else poly_power, **warmup)
    raise ValueError(f"unknown learning-rate mode {mode!r}; choose one of {', '.join(LR_MODES)}")
