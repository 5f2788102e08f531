"""The class list: UTF-8 text, one class name a line, line i naming label i.

``data.pack`` writes it beside a packed data set as ``PREFIX.classes.txt``, and training copies the list of its
data beside the run's parameters as ``classes.txt``, where evaluation and prediction read the names back. Data
packed by other tools (MXNet's ``tools/im2rec.py``, GluonCV's scripts) has no list: its classes are named by their
labels, ``numbered_class_names``.
"""
import os

from utils.errors import UserError
from utils.files import atomic_write_text


def read_class_list(path):
    """The class names in ``path``, indexed by label, or None if there is no such file.

    Blank lines are skipped. A file that names no class raises UserError: no network has zero outputs.
    """
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        names = [line.rstrip("\n") for line in handle if line.strip()]
    if not names:
        raise UserError(f"class list {path} is empty; it needs one class name a line")
    return names


def write_class_list(path, class_names):
    """Write ``class_names`` to ``path``, the name of label i on line i, whole or not at all."""
    atomic_write_text(path, "".join(f"{name}\n" for name in class_names))


def numbered_class_names(num_classes):
    """The names of classes that no list names: each its label, ``"0"`` to ``"K-1"``."""
    return [str(label) for label in range(num_classes)]
