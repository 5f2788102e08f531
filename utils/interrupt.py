"""Stop on SIGINT or SIGTERM between two batches, so that the run can save its state before it exits.

A cluster's scheduler preempts a job with SIGTERM and a user stops one with Ctrl-C; either way the batch in
flight finishes (its update is applied or not at all), the loop sees the request and saves a checkpoint.
A second Ctrl-C abandons even that and raises KeyboardInterrupt at once: checkpoints are written
atomically, so nothing on disk is left half-written either way.
"""
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager that records the first SIGINT/SIGTERM instead of dying on it.

    ``arrived`` tells whether one did, ``signal_name`` which (e.g. ``"SIGTERM"``). Outside the main thread,
    where Python cannot install handlers, it records nothing and signals act as usual.
    """

    def __init__(self):
        self.signal_number = None
        self._previous = {}

    @property
    def arrived(self):
        return self.signal_number is not None

    @property
    def signal_name(self):
        return signal.Signals(self.signal_number).name if self.arrived else None

    def take(self, signal_number):
        """Act on ``signal_number`` as if it had arrived here: another process of the job caught it."""
        if self.signal_number is None:
            self.signal_number = signal_number

    def _handle(self, signal_number, frame):
        if self.signal_number is not None and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_number = signal_number

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signal_number in STOP_SIGNALS:
                self._previous[signal_number] = signal.signal(signal_number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signal_number, handler in self._previous.items():
            signal.signal(signal_number, handler)
        self._previous.clear()
        return False
