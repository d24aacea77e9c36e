"""Where the tool writes (run folders, grids, results, judges), checked before the slow work: a
file in the way or a read-only disk costs a second and one clear line, not a finished run."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


@contextmanager
def writing(path: Path, fix: str):
    """Turn an OSError while writing `path` into a UserError that names it and says `fix`."""
    try:
        yield
    except OSError as e:
        raise UserError(f"{path}: cannot write here ({e.strerror}); {fix}") from None


def replace_atomically(path, write) -> None:
    """`write(f)` into a temp file beside `path`, fsync, then rename it over `path`: a crash at any
    moment leaves the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes it owner-only; give it the mode a plain open() would (or the old file's), so
        # that a lab's group can still read a data set or a run
        os.fchmod(fd, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # The rename is in the folder's entry list: without this, a power cut can still lose it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # file systems that cannot sync a folder
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    try:  # Linux says it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way to read it is to set it; a file another thread creates in between
    # would be made world-writable, so this is the fallback only.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def append_line(path, line: str) -> None:
    """Append one line to a log; an error names the log (a full disk reports none on close). A last
    line cut short (kill -9 mid-write, a full disk) is ended first: glued onto it, this one would be
    lost with it."""
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"
    except OSError:  # no file yet, an empty one, or one we may append to but not read
        cut = False
    try:
        with open(path, "ab") as f:
            f.write((("\n" if cut else "") + line + "\n").encode())
    except OSError as e:
        e.filename = e.filename or str(path)
        raise


def write_text_atomically(path, text: str) -> None:
    replace_atomically(path, lambda f: f.write(text.encode()))


def writable_file(path, fix: str, append: bool = False, probe: bool = True) -> None:
    """Raise a UserError unless `path` can be written (replaced, or appended to with `append`).
    `probe` creates and removes a file to be sure; without it (dry runs, which write nothing, not
    even a folder's time stamp) the permission bits are asked instead."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a file; {fix}")
    above = next((p for p in path.parents if p.exists()), Path("."))
    if not above.is_dir():
        raise UserError(f"{path}: cannot write here ({above} is a file, not a folder); {fix}")
    if above != path.parent:
        raise UserError(f"{path}: folder {path.parent} does not exist; create it or {fix}")
    if not probe:  # a file is replaced by a rename, which needs only its folder writable
        if not os.access(path if append and path.exists() else path.parent, os.W_OK):
            raise UserError(f"{path}: cannot write here (permission denied); {fix}")
        return
    with writing(path, fix):
        if append and path.exists():
            open(path, "ab").close()  # appending nothing leaves the file as it was
        else:  # a rename into the folder, or a new file: both need the folder writable
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            os.unlink(probe)


def no_file_in_the_way(folder, fix: str) -> Path:
    """`folder`, unless it or a parent is a file (checked without writing: also by --dry-run)."""
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{folder}: cannot write here ({blocker} is a file, not a folder); {fix}")
    return folder


def writable_folder(folder, fix: str):
    """Create `folder` if needed and prove a file can be written there, before any long work;
    otherwise a UserError that names the folder and ends with `fix`."""
    folder = no_file_in_the_way(folder, fix)
    with writing(folder, fix):
        folder.mkdir(parents=True, exist_ok=True)
        # a name of its own: two runs probing one folder must not delete each other's probe
        fd, probe = tempfile.mkstemp(prefix=".write_test.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    return folder


def visible_entries(folder: Path) -> list[Path]:
    """The folder's entries other than dotfiles: a clone's `data/.gitignore` is not data."""
    return [c for c in folder.iterdir() if not c.name.startswith(".")] if folder.is_dir() else []


@contextmanager
def removed_on_failure(folder):
    """If `folder` is new (missing, or holding only dotfiles) and the block fails, Ctrl-C included,
    empty it again (and remove it, if the block made it): a half-written data set would pass for a
    whole one. Dotfiles that were there stay."""
    folder = Path(folder)
    existed = folder.exists()
    fresh = not existed or (folder.is_dir() and not visible_entries(folder))
    try:
        yield
    except BaseException:
        if fresh and folder.is_dir():
            for child in visible_entries(folder) if existed else []:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            if not existed:
                shutil.rmtree(folder, ignore_errors=True)
        raise


def outermost_missing(folder) -> Path:
    """The outermost folder on `folder`'s path that does not exist yet (`folder` if it does): what
    writing into it creates, so what a failed run has to remove again (-s new/sub: new)."""
    folder = Path(folder)
    return next((p for p in reversed((folder, *folder.parents)) if not p.exists()), folder)


# ---- folders replaced whole ----------------------------------------------------------------------
# Filled as a hidden sibling `.NAME.partial`, then swapped in with two renames: a run stopped while
# filling (Ctrl-C, SIGTERM, a full disk) leaves the earlier NAME whole, never a mix of old and new.

def new_staging(folder) -> Path:
    """An empty `.NAME.partial` beside `folder` to fill before swap_in(); what a run killed with -9
    left there (a .partial, or a .old it had not removed yet) goes first."""
    folder = Path(folder)
    staging, old = _staging_names(folder)
    if old.is_dir() and not folder.exists():  # killed between swap_in's two renames: the earlier one comes back
        os.replace(old, folder)
    for leftover in (staging, old):
        _remove(leftover)
    staging.mkdir(parents=True)
    return staging


def _remove(path: Path) -> None:
    """Whatever is at `path`: a folder (with what is in it), or a file or link (a link to a folder
    goes, not what it points to). rmtree alone leaves a link in place, and the next swap then fails."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def swap_in(staging: Path, folder) -> None:
    """`staging` becomes `folder` (the old one moves aside first, then goes)."""
    folder = Path(folder)
    old = _staging_names(folder)[1]
    if folder.exists() or folder.is_symlink():
        os.replace(folder, old)
    os.replace(staging, folder)
    try:
        _remove(old)
    except BaseException:  # a Ctrl-C mid-removal: the swap is done, so finish tidying, then stop
        _remove(old)
        raise


class Landing:
    """The outputs of one command, landed together: each file is written to a hidden sibling
    (file()) and each folder filled in its staging folder (folder()); when the block succeeds they
    are all renamed in, one after another, and when it fails (Ctrl-C included) they all go. A stop
    midway so leaves every earlier output as it was, never a new grid beside an old GIF."""

    def __init__(self):
        self._files: list[tuple[Path, Path]] = []
        self._folders: list[tuple[Path, Path]] = []

    def file(self, final) -> Path:
        final = _followed(Path(final))
        staged = final.with_name(f".{final.stem}{LANDING}{final.suffix}")  # (the suffix says the format)
        self._files.append((staged, final))
        return staged

    def folder(self, final) -> Path:
        final = _followed(Path(final))
        staging = new_staging(final)
        if final.is_dir():  # a mode the user gave the folder (chmod 700) stays
            os.chmod(staging, stat.S_IMODE(final.stat().st_mode))
        self._folders.append((staging, final))
        return staging

    def __enter__(self) -> "Landing":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            # Folders first: a swap can fail (a folder in the way turned read-only), and then no
            # file has landed yet either. A file rename in its own folder does not fail that way.
            try:
                for staging, final in self._folders:
                    swap_in(staging, final)
            except BaseException:
                self.__exit__(OSError, None, None)  # what was staged goes
                raise
            for staged, final in self._files:
                if final.exists():  # a mode the user gave the old file (chmod 640) stays
                    os.chmod(staged, stat.S_IMODE(final.stat().st_mode))
                os.replace(staged, final)
            return
        for staged, _ in self._files:
            staged.unlink(missing_ok=True)
        for staging, _ in self._folders:
            shutil.rmtree(staging, ignore_errors=True)


LANDING = ".landing"


def _followed(path: Path) -> Path:
    """An output that is a link lands where the link points (the link stays), as a plain write to
    it would; renaming over the link itself would replace it."""
    return linked_output(path, "choose another output folder") if path.is_symlink() else path


def linked_output(path, fix: str) -> Path:
    """Where writing `path` lands: itself, or for a symbolic link its target, which must lead
    somewhere (not back to itself) into a folder that exists."""
    path = Path(path)
    if not path.is_symlink():
        return path
    try:
        target = path.resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError for a loop, 3.13 OSError
        raise UserError(f"{path}: a symbolic link that leads back to itself; remove it, or {fix}") from None
    if not target.parent.is_dir():
        raise UserError(f"{path}: a symbolic link to {target}, whose folder does not exist; make it, remove "
                        f"the link, or {fix}")
    return target


def landed_name(path) -> Path:
    """The output a Landing's staged file stands for (`.grid.landing.png` -> `grid.png`), so that
    a message about a failed write names the file the user asked for."""
    path = Path(path)
    if path.name.startswith(".") and path.stem.endswith(LANDING):
        return path.with_name(path.stem[1:-len(LANDING)] + path.suffix)
    return path


def _staging_names(folder: Path) -> tuple[Path, Path]:
    return folder.with_name(f".{folder.name}.partial"), folder.with_name(f".{folder.name}.old")


# ---- locks ---------------------------------------------------------------------------------------
# flock(2): the kernel drops a lock when its process ends however it ends (kill -9 included), so
# there is no stale lock to guess about; the file holds the pid only to name the holder.

class LockHeld(Exception):
    def __init__(self, pid: int | None):
        super().__init__(f"held by pid {pid}")
        self.pid = pid


class FileLock:
    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        try:
            # Unlinked while still held: whoever opened this file meanwhile sees, once the lock is
            # theirs, that it is no longer the lock file, and takes a fresh one.
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)


def take_lock(path: Path, wait: bool = False) -> FileLock | None:
    """Hold an exclusive lock on `path` (made if missing) until release(); LockHeld when another
    process holds it and `wait` is False. None where the platform has no flock."""
    try:
        import fcntl
    except ImportError:
        return None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _pid_in(fd)
            os.close(fd)
            raise LockHeld(holder) from None
        except BaseException:  # a Ctrl-C while waiting
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its holder released it between our open and our flock: try the new file
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return FileLock(path, fd)


def lock_holder(path: Path) -> int | None:
    """The pid of the process holding the lock on `path` (-1 if it wrote none yet; another open of
    it in this process counts too), or None when nobody holds it: a file left by a killed run is no lock."""
    try:
        import fcntl
        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _pid_in(fd) or -1
    except OSError:
        return None
    finally:
        os.close(fd)


def _pid_in(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None
