"""What every request of the hub server (:mod:`sync.hub`) works with: the :class:`Hub` of its
process (config, store, signed documents, console, presence) and :class:`HttpError`, the error
answer a handler raises (an :class:`sync.protocol.ErrorBody` with its status).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from sync import protocol
from sync.hub_admin import SnapshotCache
from sync.hub_config import HubConfig
from sync.hub_limits import KnownClients
from sync.hub_store import HubStore
from sync.hub_trust_file import TrustFile
from sync.hub_twins import RunNotes
from sync.hub_watch import Presence
from sync.log_throttle import Throttle
from sync.protocol import (
    ErrorBody,
    Message,
)

HEARTBEAT_STORED_EVERY_S = 1.0

_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    503: "unavailable",
}


class HttpError(Exception):
    """An error answer: raised by handlers, turned into an ErrorBody by the middleware."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error: str | None = None,
        headers: dict[str, str] | None = None,
        conflicts: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(error or _ERROR_CODES.get(status, "error"), message, conflicts)
        self.headers = headers or {}

    def response(self) -> web.Response:
        return json_response(self.body, status=self.status, headers=self.headers)


@dataclass
class Hub:
    """What one hub process serves from: its config, store, signed documents and console."""

    config: HubConfig
    store: HubStore
    snapshots: SnapshotCache
    trust: TrustFile
    console: dict[str, bytes]
    clock: Callable[[], float] = time.time
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    presence: Presence = field(default_factory=lambda: Presence(30.0))
    run_notes: RunNotes = field(default_factory=lambda: RunNotes(30.0))  # sync.hub_twins
    uploading: dict[str, asyncio.Lock] = field(default_factory=dict)  # gate -> its upload turn
    refused_tokens: Throttle = field(default_factory=Throttle)  # log lines, by address
    # addresses that made a request with a valid token: connections are kept for them
    known_clients: KnownClients = field(default_factory=KnownClients)
    # log lines of a known gate's refused requests (a stolen gate's too), by (gate, what)
    refused_gates: Throttle = field(default_factory=Throttle)
    lost_connections: Throttle = field(default_factory=Throttle)  # log lines, by client
    stored_beat: dict[str, float] = field(default_factory=dict)  # gate -> monotonic s stored

    def beat_due(self, gate_id: str) -> bool:
        """Whether ``gate_id``'s heartbeat now is stored: at most one a second per gate. Each is
        an fsync'd commit on the store's thread, and a stolen token can send them in parallel
        without end; the others are answered (the gate's presence still counts them)."""
        now = time.monotonic()
        if now - self.stored_beat.get(gate_id, -math.inf) < HEARTBEAT_STORED_EVERY_S:
            return False
        self.stored_beat[gate_id] = now
        return True

    def upload_turn(self, gate_id: str) -> asyncio.Lock:
        """Held while one of ``gate_id``'s uploads is stored: a gate's journal uploads one batch
        at a time, so only a stolen token uploads in parallel; its batches then wait for each
        other, not in front of the other gates' on the store's one thread."""
        return self.uploading.setdefault(gate_id, asyncio.Lock())

    @property
    def mtls(self) -> bool:
        return self.config.tls is not None and self.config.tls.client_ca is not None

    async def wait_feed(self, after: int, wait_s: float) -> None:
        """Wait for a feed entry after ``after``, ``wait_s`` or the hub stopping, what comes first."""
        waiter = asyncio.ensure_future(self.store.wait_feed(after, wait_s))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        error = None if waiter.cancelled() else waiter.exception()
        if error is not None:
            raise error


HUB = web.AppKey("hub", Hub)


def json_response(
    message: Message, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=protocol.encode(message),
        status=status,
        content_type="application/json",
        headers=headers,
    )
