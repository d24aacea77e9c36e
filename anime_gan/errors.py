"""The one exception type the CLI turns into a one-line message and exit status 2, how to tell
an out-of-memory error (also a one-line message) from a bug, and the line of a library's
error worth quoting in ours."""

import errno
import shlex


class UserError(Exception):
    """Bad input from the user: a missing file, an unknown colour, a wrong checkpoint.

    The message must name the offending file or value and say how to fix it; the CLI prints it
    as a single line (no traceback) and exits with status 2.
    """


class Diverged(UserError):
    """Training produced NaN/inf (losses, or the fakes an evaluation drew); the message names the
    step and what to try. Its weights are not worth a snapshot."""


_OS_FIX = {errno.ENOSPC: "free space on that disk or choose another folder",
           errno.EDQUOT: "free space on that disk or choose another folder",
           errno.EROFS: "choose a folder on a writable disk",
           errno.EACCES: "check the permissions, or choose another folder"}


def os_error_line(e: OSError) -> str:
    """The machine's refusal (a full disk, a lost mount, a permission) as one line with its fix."""
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}; {_OS_FIX.get(e.errno, 'check the disk and the paths')}"


def out_of_memory(e: BaseException) -> bool:
    # torch.OutOfMemoryError on a GPU; a plain RuntimeError from the CPU allocator
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in str(e))


def detail(e: BaseException, most: int = 160) -> str:
    """The informative line of `e`: torch's load_state_dict starts with "Error(s) in loading
    state_dict for X:" and names the missing or mismatched weight only on the next line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        lines = lines[1:]
    return lines[0][:most] if lines else type(e).__name__


def shell(*words) -> str:
    """A command to paste into a shell, for a message: a path of spaces or quotes stays one word."""
    return " ".join(shlex.quote(str(w)) for w in words)
