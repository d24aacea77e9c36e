"""The one exception type the CLI turns into a one-line message and exit status 2."""


class UserError(Exception):
    """Bad input from the user: a missing file, an unknown colour, a wrong checkpoint.

    The message must name the offending file or value and say how to fix it; the CLI prints it
    as a single line (no traceback) and exits with status 2.
    """

