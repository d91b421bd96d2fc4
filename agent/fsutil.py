"""Durable file replacement, shared by everything that keeps state in small files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so a crash or power cut leaves the old or the new file.

    Temp file, fsync, rename, fsync of the directory (the rename itself must survive). The new
    file is created with ``mode`` (narrowed by the umask, never wider), whatever mode the file or
    a temp file left by a crash had. Raises OSError.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a stale temp file would keep its own, possibly wider, mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
