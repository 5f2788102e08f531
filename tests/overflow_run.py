"""An overflowed FP16 step on the workers of a dist_sync job or the ranks of a Horovod job, on CPU: each prints what
it saw.

    python tools/launch.py -n 2 -s 1 --launcher local python -m tests.overflow_run FLAGS... --kvstore dist_sync
    horovodrun -np 2 -H localhost:2 --gloo python -m tests.overflow_run FLAGS... --kvstore horovod

Each worker trains three steps of 4 images of its own, through the recipe's trainer with AMP's loss scaling (on
CPU ``utils.precision.Float16`` scales losses and skips overflowed steps, without FP16 operators); on the second
step worker 1 alone feeds an infinite pixel. Each worker updates its own weights after the gradients are summed
(over the servers, or Horovod's allreduce), and AMP checks the sum for an overflow first, so every worker must
skip that step, halve its loss scale (which the next step uses), and go on with the same weights as the others.
"""
import sys

import train_imagenet  # noqa: F401 (first: it sets MXNet's CPU threads before MXNet loads)
import mxnet as mx
import numpy as np
from mxnet.contrib.amp import amp

from engine.config import parse_config
from engine.loop import train_step
from engine.recipe import Recipe, build_network, build_trainer
from utils.batch_transform import BatchTransform
from utils.distillation import CrossEntropyLoss
from utils.distributed import join_cluster, weights_fingerprint
from utils.precision import Float16

NUM_CLASSES = 3


def main(argv):
    # amp.init casts operators to FP16, which needs a GPU; init_trainer only asserts that it ran.
    amp._amp_initialized = amp._amp_loss_scale_initialized = True
    config = parse_config(argv)
    cluster = join_cluster(config.kvstore)
    contexts, precision = [mx.cpu()], Float16()
    net = build_network(config, NUM_CLASSES, contexts)
    trainer = build_trainer(config, net, contexts, 3, precision, cluster)
    recipe = Recipe(net, trainer, CrossEntropyLoss(), BatchTransform(NUM_CLASSES), precision,
                    step_batch=cluster.step_batch(config.batch_size))
    images = mx.nd.array(np.random.RandomState(cluster.rank).normal(size=(config.batch_size, 3, 24, 24)))
    labels = mx.nd.array(np.arange(config.batch_size) % NUM_CLASSES)
    overflowing = images.copy()
    if cluster.rank == 1:
        overflowing[0, 0, 0, 0] = np.inf

    train_step(recipe, [images], [labels])
    scale, before = trainer._amp_loss_scaler.loss_scale, weights_fingerprint(net)
    train_step(recipe, [overflowing], [labels])
    skipped = weights_fingerprint(net) == before
    train_step(recipe, [images], [labels])
    halved, moved = trainer._amp_loss_scaler.loss_scale == scale / 2, weights_fingerprint(net) != before
    print(f"rank {cluster.rank}: skipped {skipped}, scale halved {halved}, moved after {moved}, weights "
          f"{weights_fingerprint(net)}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
