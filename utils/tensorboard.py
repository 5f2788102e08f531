"""TensorBoard curves of a run (``--tensorboard``): event files in ``SAVE_DIR/tensorboard``, written by rank 0, with
the global step (optimizer updates) on the x axis.

Tags: ``train/loss``, ``train/top1`` (the epoch's running figures, as the log's speed lines), ``train/lr`` and
``train/samples_per_sec`` every ``--log-interval`` batches; ``val/top1``, ``val/top5`` and, with ``--model-ema``,
``val/top1_ema`` and ``val/top5_ema`` after each epoch, at its last step.

Points are written through tensorboardX's event-file writer, each flushed to disk (fsync) as it is logged.
tensorboardX's ``SummaryWriter`` hands them to a background thread whose ``flush`` does not wait for its queue,
and the thread itself flushes every two minutes: a ``kill -9`` would lose points that the checkpoint written next
already covers, and the resumed run, starting after that checkpoint, would never log them again.

A resumed run continues the same curves: each process's file starts with TensorBoard's restart marker
(``SessionLog.START``, what ``SummaryWriter(purge_step=...)`` writes) at the step after the one it starts from,
and TensorBoard drops the earlier files' points from that step on, which the interrupted run logged after its
checkpoint and the resumed run logs again.
"""
import importlib.util
import logging
import os
import time

from utils import checkpoint
from utils.errors import UserError


class NoCurves:
    """The curves of a run without ``--tensorboard``, and of every worker but rank 0: nothing is written."""

    def add(self, step, scalars):
        """Drop ``scalars``."""

    def close(self):
        """Nothing to close."""


NO_CURVES = NoCurves()


class TensorBoardCurves:
    """Scalars by global step in a new event file of ``log_dir``, whose points from ``first_step`` on replace
    those of the folder's earlier files."""

    def __init__(self, log_dir, first_step):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.summary import scalar
        self._event, self._scalar = Event, scalar
        os.makedirs(log_dir, exist_ok=True)
        # The process id tells apart the files of two processes started within the same second (the file name
        # holds the time to the second), which would otherwise be one file, the second truncating the first.
        self._events = EventsWriter(os.path.join(log_dir, "events"), filename_suffix=f".{os.getpid()}")
        self._events.write_event(Event(wall_time=time.time(), step=first_step,
                                       session_log=SessionLog(status=SessionLog.START)))
        self._events.flush()

    def add(self, step, scalars):
        """One point of each curve ``tag: value`` of ``scalars`` at ``step``, on disk when this returns."""
        wall_time = time.time()
        for tag, value in scalars.items():
            self._events.write_event(self._event(wall_time=wall_time, step=step, summary=self._scalar(tag, value)))
        self._events.flush()

    def close(self):
        self._events.close()


def open_curves(config, cluster, global_step):
    """The run's curves from ``global_step`` (updates done) on: TensorBoard's with ``--tensorboard`` on rank 0,
    else ``NO_CURVES``. Close them at the end of the run."""
    if not (config.tensorboard and cluster.is_chief):
        return NO_CURVES
    if importlib.util.find_spec("tensorboardX") is None:
        raise UserError("--tensorboard writes with tensorboardX, which is not installed; install the project "
                        "again (pip install -e .) or drop --tensorboard")
    log_dir = checkpoint.tensorboard_dir(config.save_dir)
    logging.info("TensorBoard curves in %s (tensorboard --logdir %s)", log_dir, log_dir)
    return TensorBoardCurves(log_dir, global_step + 1)
