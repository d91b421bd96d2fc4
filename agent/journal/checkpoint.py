"""WAL checkpoints off the decision path.

SQLite copies its write-ahead log back into the database file (a checkpoint) by itself once the log
holds 1,000 pages, inside the commit that crosses the mark: that decision then pays for the copy
and an extra fsync of the database file. In the four-lane benchmark those commits were the
slowest decisions (4-6 ms against 2-3 ms for the rest). So the writer's own threshold is raised
to :data:`WRITER_AUTOCHECKPOINT` pages (a bound on the log should this never run), and
:class:`Checkpointer` runs a PASSIVE checkpoint on a connection of its own, on a worker thread, at
most every :data:`EVERY_S` seconds while the journal is written: a passive checkpoint never takes
the write lock, so a decision committing meanwhile only shares the disk with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("agent.journal")

EVERY_S = 5.0
WRITER_AUTOCHECKPOINT = 10_000  # pages (10 MB; 40 MB in a journal of 4 KiB pages): a bound only
WAL_SIZE_LIMIT = 16 * 1024 * 1024  # bytes the WAL file is cut back to once checkpointed


class Checkpointer:
    """Checkpoints ``path``'s WAL from a worker thread; call :meth:`wrote` after each write."""

    def __init__(self, path: Path, every_s: float = EVERY_S) -> None:
        self._path = path
        self._every_s = every_s
        self._last = time.monotonic()
        self._running: asyncio.Future[None] | None = None
        self._closed = False

    def wrote(self) -> None:
        """A write was committed: start a checkpoint when the last one began ``every_s`` ago
        and none runs. Never waits and never raises: it runs after a decision is durable, and
        nothing may turn a recorded admission into an error (a checkpoint not started is one
        more log line; the writer's own mark still bounds the WAL)."""
        now = time.monotonic()
        if self._closed or self._running is not None or now - self._last < self._every_s:
            return
        self._last = now
        try:  # RuntimeError: no thread to be had (a task limit) or the executor shutting down
            running = asyncio.get_running_loop().run_in_executor(None, _passive, self._path)
        except Exception as exc:
            log.warning("journal %s: background WAL checkpoint not started: %s", self._path, exc)
            return
        self._running = running
        running.add_done_callback(self._done)

    async def close(self) -> None:
        """Start no more checkpoints and wait for one still running (its failure was logged)."""
        self._closed = True
        if self._running is not None:
            with contextlib.suppress(Exception):
                await self._running

    def _done(self, future: asyncio.Future[None]) -> None:
        self._running = None
        if not future.cancelled() and (exc := future.exception()) is not None:
            log.warning("journal %s: background WAL checkpoint failed: %s", self._path, exc)


def _passive(path: Path) -> None:
    # mode=rw: never create a file that is not there (the journal was moved or removed).
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=1.0)
    try:
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        db.close()
