"""The one exception type that reaches the user as a one-line message instead of a traceback."""
import functools
import sys


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and what to do about it.

    Entry points wrapped by :func:`command_line_entry` print ``error: <message>`` on stderr and exit with 2.
    """


def command_line_entry(main):
    """Wrap a script's ``main(argv)``: a UserError becomes one line on stderr and exit status 2, success 0."""
    @functools.wraps(main)
    def entry(argv=None):
        try:
            main(argv)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    return entry
