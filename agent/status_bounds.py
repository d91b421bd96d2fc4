"""What bounds the status server's work (agent/status.py): the request pacer and the event streams.

The status server shares the lane's loop, so nothing a status client does may cost the loop work
without bound: request starts are paced and the waiting ones counted (:class:`Pacer`); event
streams are counted and each is a short list of encoded chunks its writer drains (:class:`Streams`),
so a decision costs one encoding and one append per stream, and a stream that falls
``SSE_BACKLOG`` chunks behind is closed rather than buffered for.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from aiohttp import web

SSE_BACKLOG = 64  # chunks (events, keep-alives) a stream may fall behind before it is closed


class Pacer:
    """Spaces out starts: at most ``rate`` a second once a burst of ``burst`` is spent, with at
    most ``max_parked`` callers waiting for their turn."""

    def __init__(self, rate: float, burst: int, max_parked: float = math.inf) -> None:
        self._interval = 1.0 / rate
        self._burst_s = (burst - 1) * self._interval  # how far behind "now" a turn may start
        self._next = 0.0
        self._max_parked = max_parked
        self.parked = 0

    async def turn(self, max_wait_s: float = math.inf) -> bool:
        """Wait for this caller's turn (none while the burst lasts) and return True; False at
        once, taking no turn, when that would mean waiting longer than ``max_wait_s`` or when
        ``max_parked`` callers wait already."""
        now = asyncio.get_running_loop().time()
        start = max(self._next, now - self._burst_s)
        if start - now > max_wait_s or (start > now and self.parked >= self._max_parked):
            return False
        self._next = start + self._interval
        if start > now:
            self.parked += 1
            try:
                await asyncio.sleep(start - now)
            finally:
                self.parked -= 1
        return True


class _Stream:
    """One open event stream: the chunks it has yet to write, and a wake-up for its writer."""

    def __init__(self, abort: Callable[[], None]) -> None:
        self.pending: list[bytes] = []
        self.wake = asyncio.Event()
        self.ended = False
        self._abort = abort

    def push(self, chunk: bytes) -> None:
        if len(self.pending) >= SSE_BACKLOG:  # a reader this slow is dropped, not buffered for
            self.end()
            self._abort()
            return
        self.pending.append(chunk)
        self.wake.set()

    def end(self) -> None:
        self.ended = True
        self.wake.set()

    def take(self) -> bytes:
        chunk, self.pending = b"".join(self.pending), []
        self.wake.clear()
        return chunk


class Streams:
    """The staff displays' event streams: at most ``limit``, each chunk shared by all of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0  # slots: streams open and attempts still waiting to open
        self._open: set[_Stream] = set()

    def reserve(self) -> bool:
        """Take a slot; False when all are taken (the caller refuses the attempt)."""
        if self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    def release(self) -> None:
        self.taken -= 1

    def __bool__(self) -> bool:
        return bool(self._open)

    def open(self, abort: Callable[[], None]) -> _Stream:
        stream = _Stream(abort)
        self._open.add(stream)
        return stream

    def close(self, stream: _Stream) -> None:
        self._open.discard(stream)

    def publish(self, chunk: bytes) -> None:
        """Hand ``chunk`` to every open stream; constant work per stream, never awaits."""
        for stream in list(self._open):
            stream.push(chunk)
            if stream.ended:
                self._open.discard(stream)

    def end_all(self) -> None:
        for stream in self._open:
            stream.end()
        self._open.clear()


def busy(why: str, retry_after_s: float) -> web.Response:
    """503 with Retry-After: the answer to any request beyond a bound."""
    return web.json_response(
        {"error": why}, status=503, headers={"Retry-After": str(math.ceil(retry_after_s))}
    )
