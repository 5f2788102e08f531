"""Starting from trained weights: a fine-tuning start point, or a teacher from GluonCV's model cache."""
import glob
import logging
import os

from models.params import load_params
from utils.errors import UserError


def load_for_finetuning(net, params_file):
    """Load ``params_file`` into ``net`` on all its devices; a classifier for other classes stays as initialized.

    ``net`` must be initialized with known shapes. Every other parameter must match by name and shape; extra
    parameters in the file are an error too, since they mean it comes from another network.
    Returns the names of the re-initialized classifier parameters (empty when the classes match).
    """
    expected = net._collect_params_with_prefix()
    classifier_prefix = next(reversed(expected)).rsplit(".", 1)[0] + "."
    classifier = [name for name in expected if name.startswith(classifier_prefix)]
    saved = load_params(params_file, net, label=f"--pretrained-params {params_file}", network="--model",
                        reshapable=classifier)
    reinitialized = [name for name in classifier if saved[name].shape != expected[name].shape]
    for name, param in expected.items():
        if name not in reinitialized:
            param.set_data(saved[name])
    if reinitialized:
        logging.info("Pretrained classifier has another number of classes: re-initialized %s",
                     ", ".join(reinitialized))
    return reinitialized


def model_cache_dir():
    """Where MXNet and GluonCV keep downloaded weights: $MXNET_HOME/models, by default ~/.mxnet/models."""
    return os.path.join(os.environ.get("MXNET_HOME", os.path.join(os.path.expanduser("~"), ".mxnet")), "models")


def cached_gluoncv_params(name):
    """The GluonCV model-zoo file for ``name`` (``NAME-<hash>.params``) in the local cache; never downloads."""
    matches = sorted(glob.glob(os.path.join(glob.escape(model_cache_dir()), f"{glob.escape(name)}-*.params")))
    if not matches:
        raise UserError(f"no --teacher-params given and no cached GluonCV weights for {name} in "
                        f"{model_cache_dir()}; on a machine with internet run python -c \"import gluoncv; "
                        f"gluoncv.model_zoo.get_model('{name}', pretrained=True)\" and copy the file there, "
                        "or pass --teacher-params")
    return matches[-1]
