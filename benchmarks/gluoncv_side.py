"""GluonCV's side of the comparisons: its model zoo with ``resnet18_v1d``, and its script with a fair clock.

GluonCV 0.10.5's model zoo has no ``resnet18_v1d``; ``register_resnet18_v1d`` adds GluonCV's own definition
of the other v1d depths at depth 18. ``python -m benchmarks.gluoncv_side SCRIPT ARGS...`` runs GluonCV's
``train_imagenet.py`` (SCRIPT) with that model registered and with ``time.time()`` waiting for MXNet's
queued work first: its epoch clock otherwise stops before the last batch's backward pass and update have
run, while our loop calls ``waitall`` before it reads the clock.
"""
import runpy
import sys
import time

import mxnet as mx
from gluoncv.model_zoo import model_zoo
from gluoncv.model_zoo.resnetv1b import BasicBlockV1b, ResNetV1b


def resnet18_v1d(pretrained=False, ctx=None, root=None, **kwargs):
    return ResNetV1b(BasicBlockV1b, [2, 2, 2, 2], deep_stem=True, avg_down=True, name_prefix="resnetv1d_",
                     **kwargs)


def register_resnet18_v1d():
    model_zoo._models.setdefault("resnet18_v1d", resnet18_v1d)


def synchronized_clock(clock=time.time):
    mx.nd.waitall()
    return clock()


if __name__ == "__main__":
    register_resnet18_v1d()
    time.time = synchronized_clock
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
