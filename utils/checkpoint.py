"""Every file a run writes, named in one place: parameters, deployable export, metrics log, arguments."""
import json
import os
import tempfile

from utils.errors import UserError


def params_path(save_dir, model, epoch):
    """``<model>-<epoch>.params``: loads with ``get_model(model, classes=...).load_parameters``."""
    return os.path.join(save_dir, f"{model}-{epoch:04d}.params")


def export_prefix(save_dir, model):
    """Prefix of the deployable export: ``<model>-deploy-symbol.json`` and ``<model>-deploy-0000.params``.

    ``-deploy`` keeps the export's ``-0000.params`` apart from epoch 0's ``<model>-0000.params``.
    """
    return os.path.join(save_dir, f"{model}-deploy")


def metrics_path(save_dir):
    return os.path.join(save_dir, "metrics.jsonl")


def args_path(save_dir):
    return os.path.join(save_dir, "args.json")


def classes_path(save_dir):
    return os.path.join(save_dir, "classes.txt")


def ensure_writable(save_dir):
    """Create ``save_dir`` and prove a file can be written there, before any training time is spent."""
    try:
        os.makedirs(save_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=save_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UserError(f"cannot write to --save-dir {save_dir} ({error.strerror}); "
                        "choose a writable folder") from None


def _write_atomically(path, text):
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def save_run_args(save_dir, config_dict, class_names):
    """The resolved configuration (``args.json``) and the class names (``classes.txt``) of the run."""
    _write_atomically(args_path(save_dir), json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
    if class_names:
        _write_atomically(classes_path(save_dir), "\n".join(class_names) + "\n")


def append_metrics(save_dir, record):
    """Append one epoch's figures to ``metrics.jsonl`` as one JSON object per line."""
    with open(metrics_path(save_dir), "a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def save_params(net, save_dir, model, epoch):
    """Save the network's parameters for ``epoch``; the file appears whole or not at all."""
    path = params_path(save_dir, model, epoch)
    temporary = f"{path}.tmp"
    net.save_parameters(temporary)
    os.replace(temporary, path)
    return path


def export_deployable(net, save_dir, model):
    """Write ``<model>-deploy-symbol.json`` and ``-0000.params`` that ``SymbolBlock.imports`` loads alone.

    ``net`` must be hybridized and have run one forward pass, so that its graph is known.
    """
    prefix = export_prefix(save_dir, model)
    net.export(prefix, epoch=0)
    return f"{prefix}-symbol.json", f"{prefix}-0000.params"
