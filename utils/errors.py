"""The one exception type that reaches the user as a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input from the user: the message says what was wrong and what to do about it.

    Entry points catch it, print ``error: <message>`` on stderr and exit with status 2.
    """
