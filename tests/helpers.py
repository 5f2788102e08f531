"""Helpers shared by several test modules."""
import math

import mxnet as mx


def randomize_parameters(net, seed):
    """Random values in every parameter, BatchNorm statistics included, so that a misplaced one shows.

    Weights are He-uniform, scale parameters and variances near 1, biases, shifts and means in [-0.5, 0.5],
    so that outputs stay of order 1 and an absolute tolerance means something. ``net`` must have known shapes.
    """
    mx.random.seed(seed)
    for key, param in net._collect_params_with_prefix().items():
        if key.endswith("weight"):
            bound = math.sqrt(6 / math.prod(param.shape[1:]))
            low, high = -bound, bound
        elif key.endswith(("gamma", "running_var")):
            low, high = 0.5, 1.5
        else:
            low, high = -0.5, 0.5
        param.set_data(mx.nd.random.uniform(low, high, shape=param.shape))
