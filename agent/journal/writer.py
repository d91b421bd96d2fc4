"""The journal's writer thread: one thread owns the SQLite connection; jobs reach it by a queue.

aiosqlite's model, with one difference that the scan path needs: a job is any function of the
connection, so a decision's history read, the rules and its insert run as ONE job (one thread
round trip per scan) instead of one round trip per statement. Jobs run one at a time, in the
order they were submitted; results come back with ``call_soon_threadsafe``.

A job whose caller was cancelled still runs to its end (its outcome is then dropped): once
submitted, an insert's fate is the thread's, which is why the journal keeps its counters on the
thread, where the outcome is always known.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Final, TypeVar

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]


class _Wake:
    """A queue item that only wakes the thread."""


_WAKE: Final = _Wake()


class WriterThread:
    """A thread holding one :class:`sqlite3.Connection`; start with :meth:`start`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: SimpleQueue[tuple[asyncio.Future[Any], Job] | _Wake | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False

    async def start(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Start the thread and open the connection on it; raises what ``connect`` raises.

        On failure (or cancellation) the thread has ended when this returns.
        """
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(connect, opened), name=self._name, daemon=True
        )
        self._thread.start()
        try:
            await opened
        except BaseException:
            self._stopped = True
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)
            raise

    def wake(self) -> None:
        """Start waking the thread for a job that follows shortly (e.g. after a signature check).

        Waking an idle thread costs its CPU's wake-up (0.1-0.3 ms on the development VM, more the
        longer it slept); begun before the job is ready, that overlaps the caller's own work.
        Harmless when the thread is busy or stopped.
        """
        if not self._stopped and self._thread is not None:
            self._jobs.put(_WAKE)

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job(connection)`` on the thread and return its result (or raise its error)."""
        if self._stopped or self._thread is None:
            raise RuntimeError("writer thread not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, job))
        return await future

    async def stop(self) -> None:
        """Close the connection after the jobs already queued and end the thread. Idempotent.

        Raises sqlite3.Error when closing fails (the thread has ended anyway).
        """
        if self._stopped or self._thread is None:
            return
        self._stopped = True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, _close))
        self._jobs.put(None)
        try:
            await future
        finally:
            await asyncio.to_thread(self._thread.join)

    def _serve(
        self, connect: Callable[[], sqlite3.Connection], opened: asyncio.Future[None]
    ) -> None:
        try:
            db = connect()
        except BaseException as exc:  # handed to the caller, whatever it is
            _reply(opened, None, exc)
            return
        _reply(opened, None, None)
        try:
            while (item := self._jobs.get()) is not None:
                if isinstance(item, _Wake):
                    continue
                future, job = item
                try:
                    result = job(db)
                except BaseException as exc:  # handed to the caller, whatever it is
                    _reply(future, None, exc)
                else:
                    _reply(future, result, None)
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.close()  # a no-op after the close job


def _close(db: sqlite3.Connection) -> None:
    db.close()


def _reply(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    """Settle ``future`` on its loop's thread; dropped when its caller was cancelled."""

    def settle() -> None:
        if future.done():
            return
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)

    # A closed loop raises RuntimeError: nobody waits for this any more.
    with contextlib.suppress(RuntimeError):
        future.get_loop().call_soon_threadsafe(settle)
