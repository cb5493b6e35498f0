"""The run folder: held by one process at a time, and written with the checkpoint's guarantees.

Holding. A job holds its run folder (a sweep, its sweep dir) with an advisory lock
(``fcntl.flock``) on ``.ganexp.lock`` inside it, from before it writes anything until it ends.
The kernel drops the lock when the process dies, however it dies (kill -9 included), so no lock
is ever left stuck; the file itself stays, holding the last holder's pid, host and start time
for the message another process gets. A process that finds the folder held waits up to
``GANEXP_LOCK_WAIT`` seconds (default 10) for the holder to end, which covers a requeued Slurm
job starting while its earlier self is still exiting, then refuses in one line naming the holder.
On a file system without locks (some network mounts) a warning says that the folder is not
protected, and the run goes on.

Checking. Before anything runs, :func:`check_output_dir` refuses in one line a folder that cannot
be written: a file, a path through a file, a read-only file system, no write permission, a disk
too full for a job to start (and to record how it ended).

Writing. :func:`write_whole` writes a file as a checkpoint is written (a temporary file, fsync,
rename): a full disk leaves the earlier file as it was and no partial one. Any write that fails
becomes :class:`~ganexp.errors.RunFailed` with the one line "could not write PATH (reason)".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ganexp.errors import ConfigError, RunFailed

LOCK_FILE = ".ganexp.lock"
WAIT_ENV = "GANEXP_LOCK_WAIT"
DEFAULT_WAIT_S = 10.0
# room for what a job writes before training (Hydra's files, its config, job.json's reserve)
MIN_FREE_BYTES = 256 * 1024
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class FolderBusy(ConfigError):
    """Another process holds the run folder."""

    def __init__(self, key: str, folder: Path, holder: str) -> None:
        super().__init__(
            key,
            str(folder),
            f"in use by another ganexp ({holder}); a run folder is trained by one process at a "
            f"time: wait for that one to end, or choose another {key}",
        )


class FolderLock:
    """This process's hold on one folder; taken again by the same process, it is counted, and
    the folder is let go when every :meth:`release` has matched a :func:`hold`."""

    def __init__(self, folder: Path, fd: int | None, created: bool) -> None:
        self.folder = folder
        self.created = created  # this process made the folder (for a refused job's clean-up)
        self._fd = fd
        self._count = 1

    def release(self) -> None:
        self._count -= 1
        if self._count:
            return
        del _held[self.folder]
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock


_held: dict[Path, FolderLock] = {}


def _key(folder: Path) -> Path:
    return Path(os.path.abspath(folder))


def wait_seconds() -> float:
    """How long to wait for another holder to end: ``GANEXP_LOCK_WAIT``, else 10 s."""
    raw = os.environ.get(WAIT_ENV)
    if raw is None:
        return DEFAULT_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise ConfigError(
            WAIT_ENV, raw, "seconds to wait for a run folder's holder to end: a number >= 0"
        )
    return value


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, TypeError, KeyError):
        return "its pid is not recorded yet"


def _claim(fd: int) -> None:
    """Write this process's pid, host and start time into the lock file it now holds."""
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
    with contextlib.suppress(OSError):  # a full disk: the lock holds, the message says less
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{info}\n".encode(), 0)


def hold(key: str, folder: Path, wait: bool = True) -> FolderLock:
    """Hold ``folder`` (made if missing) for this process; ``key``: the setting that names it,
    for the error. Waits up to :func:`wait_seconds` for another holder to end (not ``wait``:
    refuses at once), then raises :class:`FolderBusy`."""
    folder = _key(folder)
    if folder in _held:
        _held[folder]._count += 1
        return _held[folder]
    deadline = time.monotonic() + (wait_seconds() if wait else 0.0)
    created = not folder.exists()
    with writing(folder / LOCK_FILE):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    noted = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _holder(fd)
            left = deadline - time.monotonic()
            if left <= 0:
                os.close(fd)
                raise FolderBusy(key, folder, holder) from None
            if not noted:
                print(
                    f"ganexp: note: {folder} is in use by another ganexp ({holder}); "
                    f"waiting up to {left:.0f} s for it to end",
                    file=sys.stderr,
                )
                noted = True
            time.sleep(min(0.1, left))
        except OSError as ex:
            if ex.errno not in _NO_LOCKS:
                raise
            print(
                f"ganexp: warning: {folder} is on a file system without locks ({ex.strerror}); "
                "nothing stops a second ganexp from training in it at the same time",
                file=sys.stderr,
            )
            os.close(fd)
            fd = None
            break
    if fd is not None:
        _claim(fd)
    _held[folder] = FolderLock(folder, fd, created)
    return _held[folder]


def made_here(folder: Path) -> bool:
    """Whether this process made ``folder`` or a folder above it that it holds: a folder
    nothing else can have put files in."""
    folder = _key(folder)
    return any(lock.created and folder.is_relative_to(path) for path, lock in _held.items())


def check_output_dir(key: str, folder: Path) -> None:
    """Refuse, in one line, a run or sweep folder that cannot be written: a file, a path
    through a file, a read-only or full file system, a folder without write permission."""
    value = str(folder)
    existing = Path(os.path.abspath(folder))
    try:
        if existing.exists() and not existing.is_dir():
            raise ConfigError(
                key, value, "names a file: give a new folder, or a run folder to continue"
            )
        while not existing.exists() and not existing.is_symlink():
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(key, value, f"{existing} is not a folder, so none can be made there")
        disk = os.statvfs(existing)
        if disk.f_flag & os.ST_RDONLY:
            raise ConfigError(
                key, value, f"{existing} is on a read-only file system; choose a writable folder"
            )
        free = disk.f_bavail * disk.f_frsize
        if free < MIN_FREE_BYTES:
            raise ConfigError(
                key,
                value,
                f"the disk of {existing} has {free // 1024} KiB free; a run needs at least "
                f"{MIN_FREE_BYTES // 1024} KiB to start",
            )
    except OSError as ex:
        raise ConfigError(key, value, f"cannot be reached ({ex.strerror or ex})") from None
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(key, value, f"{existing} is not writable (permission denied)")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """An OSError in the block (a full disk, a read-only file) becomes RunFailed naming
    ``path``."""
    try:
        yield
    except OSError as ex:
        raise RunFailed(f"could not write {path} ({ex.strerror or ex})") from None


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` into a temporary file, fsync it, rename it over ``path``. On failure
    (a full disk) the temporary file is removed, ``path`` is left as it was and the OSError
    goes on. Checkpoints, summaries and every file of a run are written this way."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_whole(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """:func:`write_atomic`, a failure being RunFailed naming ``path``."""
    with writing(path):
        write_atomic(path, write)


def writable_file_error(path: Path) -> str | None:
    """Why ``path`` cannot be written, or None: its folder is made if need be and a temporary
    file is created and removed beside it (root ignores permission bits; a probe does not)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as ex:
        return ex.strerror or str(ex)
    return "it is a folder" if path.is_dir() else None
