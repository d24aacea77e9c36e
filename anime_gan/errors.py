"""The one exception type the CLI turns into a one-line message and exit status 2, and how to tell
an out-of-memory error (also a one-line message) from a bug."""


class UserError(Exception):
    """Bad input from the user: a missing file, an unknown colour, a wrong checkpoint.

    The message must name the offending file or value and say how to fix it; the CLI prints it
    as a single line (no traceback) and exits with status 2.
    """


def out_of_memory(e: BaseException) -> bool:
    # torch.OutOfMemoryError on a GPU; a plain RuntimeError from the CPU allocator
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in str(e))
