"""Durable file replacement, shared by everything that keeps state in small files, and the lock
that keeps one process at a time on a gate's state folder."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

from agent.errors import StateInUse

LOCK_FILE = "gate.lock"


def file_problem(path: Path) -> str | None:
    """Why ``path`` is not a file this process can see ("no such file", "not a file", "permission
    denied on the way to it"), or None. Never raises (``Path.is_file`` raises PermissionError
    on Python 3.11 when a folder on the way may not be looked into)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None if stat.S_ISREG(st.st_mode) else "not a file"


def open_to_others(path: Path) -> str | None:
    """Why the private key file ``path`` must not be used: readable or writable by users other
    than its owner and group (a stolen unit's other accounts would have it), or None. Never
    raises (a file that cannot be looked at is its reader's error to report)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & 0o007:
        return f"readable by others (mode {mode & 0o777:o}): chmod o-rwx {path}"
    return None


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so a crash or power cut leaves the old or the new file.

    Temp file, fsync, rename, fsync of the directory (the rename itself must survive). The new
    file is created with ``mode`` (narrowed by the umask, never wider), whatever mode the file or
    a temp file left by a crash had. Raises OSError.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a stale temp file would keep its own, possibly wider, mode
    _create(tmp, data, mode)
    os.replace(tmp, path)
    _sync_folder(path.parent)


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create ``path`` with ``data`` and fsync it and its folder; never replaces a file.

    Raises FileExistsError when ``path`` exists, OSError otherwise (a partly written file is
    removed). Not atomic against a power cut (on FAT, where an operator's USB stick may be, there
    is no link to make it so): a cut leaves a short file, which a reader refuses as unsigned.
    """
    try:
        _create(path, data, mode)
        _sync_folder(path.parent)
    except FileExistsError:
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _create(path: Path, data: bytes, mode: int) -> None:
    """A new file holding all of ``data``, fsync'd. A short write (a disk or stick nearly
    full) is written on from where it stopped; one that writes nothing raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        rest = memoryview(data)
        while rest:
            written = os.write(fd, rest)
            if written <= 0:
                raise OSError(errno.ENOSPC, f"{path}: nothing more could be written")
            rest = rest[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """fsync ``folder``: a file made or renamed in it survives a power cut."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def not_a_database(exc: sqlite3.Error) -> bool:
    """Whether SQLite found no database at all in the file (SQLITE_NOTADB): a file no start
    again can mend (the journal's and the hub store's refusals)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB


def sqlite_readonly(path: Path) -> str:
    """The URI that opens the SQLite file at ``path`` without writing or creating anything
    (for a check as another user, e.g. root beside the gate's files): immutable while no -wal
    file is there (the gate stopped: even a read-only WAL open would create -wal/-shm files,
    possibly owned by the wrong user), else read-only."""
    return f"{path.resolve().as_uri()}?{'mode=ro' if sqlite_live(path) else 'immutable=1'}"


def sqlite_live(path: Path) -> bool:
    """Whether the SQLite file at ``path`` has a -wal file beside it (a writer may be at it:
    a connection :func:`sqlite_readonly` opened immutable would not see its changes)."""
    real = path.resolve()  # SQLite keeps the -wal beside the file a link points to
    return real.with_name(real.name + "-wal").exists()


@contextlib.contextmanager
def state_lock(state_dir: Path, *, create: bool = True) -> Iterator[None]:
    """Hold ``state_dir`` for this process while the context lasts.

    A second gate-agent on the same folder (another `run`, a device selftest) would share the
    journal and its hub link, and take the devices from under the running one (a socket scanner
    is made anew, the running gate then reads nothing while it says "scanner online"). An
    advisory ``flock`` on ``state_dir/gate.lock``, which holds the holder's pid: the kernel
    releases it when the process ends, kill -9 included. Raises StateInUse naming that pid, and
    OSError when the lock file cannot be made. With ``create`` False (a check before opening
    devices, maybe as another user) a lock file that cannot be opened (no gate ever ran there,
    or it may not be read) holds nothing, and one that may only be read is held without
    writing the pid (a `run` refused meanwhile then names the pid last written).
    """
    path = state_dir / LOCK_FILE
    fd, writable = -1, True
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o640)
    except OSError:
        if create:
            raise
        with contextlib.suppress(OSError):
            fd, writable = os.open(path, os.O_RDONLY), False
    if fd < 0:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 16, 0).decode("ascii", "replace").strip() or "unknown"
            raise StateInUse(
                f"{state_dir} is in use by another gate-agent process (pid {holder})"
            ) from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
