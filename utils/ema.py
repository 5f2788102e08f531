"""Beyond the paper: an exponential moving average (EMA) of the network's weights, evaluated and saved beside them.

Every ``k`` training steps (``--model-ema-steps``, default 1) the average moves towards the weights ``w`` that the
step left, with ``d`` the decay (``--model-ema-decay``, default 0.9998)::

    ema <- d^k * ema + (1 - d^k) * w

starting from the network's weights before its first step, ``ema_0 = w_0``. After ``n`` updates, with ``w_i`` the
weights at the i-th: ``ema_n = d^(kn) w_0 + (1 - d^k) * sum_i d^(k(n - i)) w_i``. Raising ``d`` to the power
``k`` keeps the average's horizon at about ``1 / (1 - d)`` steps whatever ``k`` is; a larger ``k`` pays for fewer
updates and follows the weights more coarsely.

Two references do it otherwise. timm's ``ModelEmaV2`` updates after every optimizer step with the decay as given
and averages every entry of the model's state, BatchNorm's running statistics included (its ``ModelEmaV3`` can
warm the decay up and, with ``exclude_buffers``, copies those statistics instead). torchvision's reference recipe
(``references/classification/train.py``, the ``ExponentialMovingAverage`` of its ``utils.py``) updates every
``--model-ema-steps`` batches of an epoch, averages the statistics too, takes ``1 - decay`` times steps x
devices x batch per device / epochs as the weight of each update (to first order our ``1 - d^k``, times a
factor that ties the horizon to a fraction of the run), starts from the weights of its first update and
merely copies the weights during the warmup epochs.

BatchNorm's running statistics are not averaged: the average carries the network's, copied from it at the end
of every epoch (after the devices' statistics are averaged, ``utils.devices.average_running_statistics``) and
before a checkpoint in the middle of one, the moments at which the average is evaluated or saved. So the
``-ema-`` parameters differ from the network's in the trained weights alone, and the network's rule for
statistics holds for the average unchanged (per device within an epoch, the devices' mean at its end, rank 0's
under ``dist_sync``). Neither averaging nor copying gives the statistics of the averaged weights (that takes a
pass over the training data, as SWA's ``update_bn`` does); copying costs nothing per step, where reading them at
each update would need a full wait each time: a static-memory graph writes them outside MXNet's dependency
tracking (see ``engine.loop.train_one_epoch``).

The average is a second instance of the network's architecture with a copy on every device of the process, as
the network has, so that it is evaluated as the network is; each device's copy is updated from that device's
weights, which every step leaves equal on all devices (and on all ``dist_sync`` workers), so the copies stay
equal too. An update is one kernel per parameter and device, three passes over the weights in memory.
"""
import mxnet as mx


def _move_towards(average, weights, step):
    """``average <- (1 - step) * average + step * weights`` in place, in one kernel.

    MXNet's SGD update computes ``(1 - lr * wd) * weight - lr * rescale_grad * grad``: with learning rate
    ``step``, weight decay 1 and the weights as a gradient rescaled by -1 it is this interpolation, one pass
    and one operator call where products and a sum would take three of each.
    """
    mx.nd.sgd_update(average, weights, lr=step, wd=1.0, rescale_grad=-1.0, out=average)


class ModelEma:
    """The moving average of ``trained``'s weights, held in ``averaged``, another instance of its architecture.

    ``averaged`` is built and initialized like ``trained`` (on the same devices) but gets its values from
    ``trained``: ``start()`` copies them all before the first update; ``update()`` counts one training step
    and averages every ``every_steps``-th; ``copy_statistics()`` copies BatchNorm's running statistics. After
    ``averaged`` is loaded from a checkpoint, ``resume(steps_seen)`` continues the count where it stood.
    """

    def __init__(self, trained, averaged, decay, every_steps=1):
        self.averaged, self.every_steps = averaged, every_steps
        self.step_decay = decay ** every_steps
        self.steps_seen, self.started = 0, False
        # The average is never trained: no gradient buffers.
        averaged.collect_params().setattr("grad_req", "null")
        trained_params, averaged_params = trained._collect_params_with_prefix(), averaged._collect_params_with_prefix()
        # What the trainer updates is averaged; the rest (BatchNorm's running statistics) is copied.
        self._pairs = [(averaged_params[key], param, param.grad_req != "null") for key, param in trained_params.items()]

    def start(self):
        """``ema_0 = w_0``: take every value of the trained network, which must be initialized."""
        for averaged, trained, _ in self._pairs:
            # Deferred initialization leaves the shapes unknown until a forward pass; the trained network's fix them.
            averaged.shape = trained.shape
            averaged.initialize(mx.init.Zero(), ctx=trained.list_ctx(), force_reinit=True)
            for average, value in zip(averaged.list_data(), trained.list_data()):
                value.copyto(average)
        self.started = True

    def resume(self, steps_seen):
        """Continue after ``averaged`` was loaded from a checkpoint written after ``steps_seen`` training steps."""
        self.steps_seen, self.started = steps_seen, True

    def update(self):
        """Count one training step; every ``every_steps``-th, ``ema <- d^k * ema + (1 - d^k) * w`` on every device."""
        self.steps_seen += 1
        if self.steps_seen % self.every_steps:
            return
        for averaged, trained, is_trained in self._pairs:
            if is_trained:
                for average, weights in zip(averaged.list_data(), trained.list_data()):
                    _move_towards(average, weights, 1 - self.step_decay)

    def copy_statistics(self):
        """Give the average the trained network's BatchNorm running statistics, device by device.

        Call it once the writes of a static-memory graph have landed (after ``mx.nd.waitall()``).
        """
        for averaged, trained, is_trained in self._pairs:
            if not is_trained:
                for average, value in zip(averaged.list_data(), trained.list_data()):
                    value.copyto(average)
