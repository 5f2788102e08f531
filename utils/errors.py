"""The one exception type that reaches the user as a one-line message instead of a traceback."""
import functools
import sys


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and what to do about it.

    Entry points wrapped by :func:`command_line_entry` print ``error: <message>`` on stderr and exit with
    ``exit_status``.
    """

    exit_status = 2


class Diverged(UserError):
    """The training loss stopped being finite: going on would only spread it through the weights.

    Exit status 3 (not UserError's 2), so that a scheduler or a grid of runs can tell a run that diverged, which
    retrying will not help, from bad input or a preemption.
    """

    exit_status = 3


class Interrupted(Exception):
    """The run stopped on a signal after saving its state; the message says how to continue it.

    The process exits with ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM), as a shell reports a
    process killed by that signal, so that job schedulers see the run as stopped rather than finished.
    """

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.exit_status = 128 + signal_number


def command_line_entry(main):
    """Wrap a script's ``main(argv)``: a UserError becomes one line on stderr and its exit status, success 0."""
    @functools.wraps(main)
    def entry(argv=None):
        try:
            main(argv)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return error.exit_status
        except Interrupted as stop:
            print(f"stopped: {stop}", file=sys.stderr)
            return stop.exit_status
        return 0
    return entry
