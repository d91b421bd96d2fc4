"""The PostgreSQL hub store's ear for other hub processes (:mod:`sync.hub_postgres`): one
connection that LISTENs on :data:`CHANNEL`, to which every transaction that inserted feed rows
sends a NOTIFY, so a long-poll in any process wakes at once. Should that connection drop, the
store's long-polls poll every :data:`POLL_S` until a later attempt has it back (attempts spaced
by :class:`agent.backoff.Backoff`, from half a second doubling to :data:`RELISTEN_S`; a
connection that held for RELISTEN_S is reopened at once).
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from agent.backoff import Backoff
from sync.hub_store import FeedSignal

log = logging.getLogger(__name__)

CHANNEL = "gate_agent_hub_feed"
POLL_S = 0.5  # long-poll re-check interval while the listening connection is down
RELISTEN_S = 5.0  # attempts to reopen it are at most this far apart (backoff's cap)
CONNECT_TIMEOUT_S = 10.0
# InternalClientError: a connection closed under a running query (the hub stopping mid-upload).
ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)


class FeedListener:
    """LISTENs on the store's database and wakes ``signal`` on every NOTIFY and when the
    connection is lost. ``where`` names the database in log lines (no credentials)."""

    def __init__(self, url: str, where: str, signal: FeedSignal) -> None:
        self._url = url
        self._where = where
        self._signal = signal
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._lock = asyncio.Lock()
        self._after = 0.0  # monotonic time of the next attempt to reopen the connection
        self._backoff = Backoff(POLL_S, RELISTEN_S)
        self._opened = 0.0  # monotonic time the connection last opened
        self._closed = False

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def listen(self) -> None:
        """(Re)open the listening connection unless it is open, closed for good or its next
        attempt is not due (backoff after failures). Failure is logged, not raised: long-polls
        then poll."""
        async with self._lock:
            now = time.monotonic()
            if self.listening or self._closed or now < self._after:
                return
            # Every attempt, one that opens too, spaces the next: a connection dropped as soon
            # as it opens (a pooler, an idle timeout) is not reopened in a tight loop.
            self._after = now + self._backoff.next_delay()
            conn = None
            try:
                conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_S)
                await conn.add_listener(CHANNEL, self._on_notify)
            except ERRORS as exc:
                log.warning("hub store %s: cannot listen for feed inserts: %s", self._where, exc)
                if conn is not None:
                    conn.terminate()
                return
            self._opened = time.monotonic()
            conn.add_termination_listener(self._on_lost)
            self._conn = conn

    async def close(self) -> None:
        """Close the connection for good. Idempotent; raises what asyncpg raises on close."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._signal.wake()

    def _on_lost(self, conn: object) -> None:
        if conn is not self._conn:
            return  # closed by close()
        log.warning("hub store %s: feed listener connection lost", self._where)
        if time.monotonic() - self._opened >= RELISTEN_S:  # it held: the next try is at once
            self._backoff.reset()
            self._after = 0.0
        self._signal.wake()  # long-polls re-check now and poll until it is back
