"""Figures and Markdown tables of training runs, shared by ``python -m tools.plot_runs`` and the ablation benchmark.

The building blocks (``pyplot``, ``panels``, ``plot_per_epoch``, ``save_figure``, ``markdown_table``) draw any
per-epoch figure; ``read_run``, ``plot_runs`` and ``runs_table`` apply them to the folders that
``train_imagenet.py --save-dir`` fills. Epochs are counted from 1 on the figures: the point of epoch ``e`` of
``metrics.jsonl`` is drawn at ``e + 1``, the number of epochs trained when it was measured.
"""
import dataclasses
import os
import statistics

from utils import checkpoint
from utils.errors import UserError

PANEL_INCHES = (6, 5)  # width, height of one panel
DPI = 90  # a figure of 3 panels is 1620 x 450 pixels
MARKED_EPOCHS = 30  # beyond this many points, markers would hide the curve they mark


def pyplot():
    """matplotlib's ``pyplot`` on the Agg backend, which draws into files and needs no display."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install -e '.[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def panels(count):
    """A figure of ``count`` panels side by side, and the list of their axes."""
    figure, axes = pyplot().subplots(1, count, figsize=(PANEL_INCHES[0] * count, PANEL_INCHES[1]), squeeze=False)
    return figure, list(axes[0])


def plot_per_epoch(axis, curves, label, epochs=None, **style):
    """Draw the mean of ``curves`` (one list of values per seed or run) at ``epochs`` (default 1, 2, ...), with
    a band from their minimum to their maximum when there are several; returns the line."""
    epochs = list(epochs or range(1, len(curves[0]) + 1))
    style.setdefault("marker", "o" if len(epochs) <= MARKED_EPOCHS else None)
    line, = axis.plot(epochs, [statistics.mean(values) for values in zip(*curves)], label=label, **style)
    if len(curves) > 1:
        axis.fill_between(epochs, [min(values) for values in zip(*curves)], [max(values) for values in zip(*curves)],
                          color=line.get_color(), alpha=0.15)
    return line


def save_figure(figure, path):
    """Write ``figure`` as a PNG of ``DPI`` dots per inch and free it."""
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    pyplot().close(figure)


def markdown_table(header, rows):
    """The lines of a Markdown table: ``header``'s cells, the rule, then each row's cells."""
    return ["| " + " | ".join(cells) + " |" for cells in (header, ["---"] * len(header), *rows)]


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run as its folder holds it: the name it is shown by, its epochs' metrics, its settings."""

    name: str
    metrics: list  # the records of metrics.jsonl, one per finished epoch
    settings: dict  # args.json; empty if the folder has none

    def epochs(self):
        """Epochs trained at each record: metrics.jsonl's epoch + 1."""
        return [record["epoch"] + 1 for record in self.metrics]

    def series(self, key):
        """``key``'s value at each record."""
        return [record[key] for record in self.metrics]

    def has(self, key):
        """Whether every record has ``key`` (``val_top1_ema``: the run kept an average of its weights)."""
        return all(key in record for record in self.metrics)


def read_run(folder, name=None):
    """The run that ``train_imagenet.py --save-dir folder`` wrote, shown as ``name`` (default: the folder's)."""
    if not os.path.exists(checkpoint.metrics_path(folder)):
        raise UserError(f"{folder} has no metrics.jsonl: give the --save-dir of a train_imagenet.py run "
                        "(it adds a line to that file after each epoch)")
    metrics = checkpoint.read_metrics(folder)
    if not metrics:
        raise UserError(f"{folder}/metrics.jsonl holds no finished epoch yet: plot the run after its first epoch, "
                        "or leave its folder out")
    return Run(name or os.path.basename(os.path.normpath(folder)), metrics,
               checkpoint.read_run_args(folder) or {})


def plot_runs(runs, path):
    """One PNG of the runs overlaid: validation top-1 (and the weights' average's, dashed), training loss and
    learning rate per epoch."""
    figure, (top1, loss, rate) = panels(3)
    for run in runs:
        line = plot_per_epoch(top1, [[100 * value for value in run.series("val_top1")]], run.name, run.epochs())
        if run.has("val_top1_ema"):
            plot_per_epoch(top1, [[100 * value for value in run.series("val_top1_ema")]], f"{run.name} (EMA)",
                           run.epochs(), color=line.get_color(), linestyle="--")
        plot_per_epoch(loss, [run.series("train_loss")], run.name, run.epochs(), color=line.get_color())
        plot_per_epoch(rate, [run.series("lr")], run.name, run.epochs(), color=line.get_color())
    top1.set(xlabel="epoch", ylabel="val top-1 %", title="validation top-1")
    loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    rate.set(xlabel="epoch", ylabel="learning rate", title="learning rate at the end of each epoch")
    for axis in (top1, loss, rate):
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.legend(fontsize=8)
    save_figure(figure, path)


def runs_table(runs):
    """The lines of a Markdown table of each run's final figures; an EMA column when a run has one."""
    with_ema = any(run.has("val_top1_ema") for run in runs)
    header = ["run", "model", "epochs", "final val top-1 %", "best val top-1 %", "final val top-5 %",
              *(["final EMA val top-1 %"] if with_ema else []), "final train loss", "images/s (median epoch)"]
    rows = []
    for run in runs:
        last, planned = run.metrics[-1], run.settings.get("num_epochs")
        epochs = str(last["epoch"] + 1) + (f" of {planned}" if planned and planned != last["epoch"] + 1 else "")
        ema = [f"{100 * last['val_top1_ema']:.2f}" if run.has("val_top1_ema") else "-"] if with_ema else []
        rows.append([run.name, run.settings.get("model", "-"), epochs, f"{100 * last['val_top1']:.2f}",
                     f"{100 * max(run.series('val_top1')):.2f}", f"{100 * last['val_top5']:.2f}", *ema,
                     f"{last['train_loss']:.4f}", f"{statistics.median(run.series('samples_per_sec')):.1f}"])
    return markdown_table(header, rows)
