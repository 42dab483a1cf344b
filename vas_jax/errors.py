"""User-facing errors: one line that says what is wrong and how to fix it."""


class VasError(Exception):
    """An error caused by the user's input (files, flags, data), not by a bug.

    The CLI prints these as a single line and exits with status 2; library
    callers can catch them like any other exception.
    """
