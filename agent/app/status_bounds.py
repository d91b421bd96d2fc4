"""What bounds the status server's work (agent/app/status.py): the request pacer and the event streams.

The status server shares the lane's loop, so nothing a status client does may cost the loop work
without bound: request starts are paced and the waiting ones counted (:class:`Pacer`); event
streams are counted and each is a short list of encoded chunks its writer drains (:class:`Streams`),
so a decision costs one encoding and one append per stream, and a stream that falls
``SSE_BACKLOG`` chunks behind is closed rather than buffered for; connections are accepted at a
bounded rate (:class:`Listener`), so a crowd of new connections waits in the kernel, not the loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

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
    """503 with Retry-After, closing the connection: the answer to any request beyond a bound."""
    response = web.json_response(
        {"error": why}, status=503, headers={"Retry-After": str(math.ceil(retry_after_s))}
    )
    response.force_close()
    return response


class Listener:
    """Accepts TCP connections at most ``rate`` a second, at most ``per_wake`` at once (after a
    pause); the others wait in the kernel's listen queue (a full queue drops SYNs, and clients
    retry later by themselves).

    asyncio's own accept loop takes up to a whole listen backlog per wake-up and the requests of
    a crowd then fill the loop's next turns: the lane's decisions wait behind them. Each accepted
    socket is handed to ``factory`` (the aiohttp server) like any other connection.
    """

    def __init__(
        self, sock: socket.socket, factory: Callable[[], asyncio.Protocol], rate: float,
        per_wake: int,
    ) -> None:  # fmt: skip
        self._sock, self._factory = sock, factory
        self._interval, self._per_wake = 1.0 / rate, per_wake
        self._burst_s = (per_wake - 1) * self._interval  # as in Pacer
        self._next = 0.0
        self._loop = asyncio.get_running_loop()
        self._resume: asyncio.TimerHandle | None = None
        self._connecting: set[asyncio.Task[Any]] = set()
        self._closed = False
        sock.setblocking(False)
        self._loop.add_reader(sock, self._accept)

    def _accept(self) -> None:
        now = self._loop.time()
        for _ in range(self._per_wake):
            start = max(self._next, now - self._burst_s)
            if start > now:  # over the rate: stop listening until the next slot
                self._pause(start - now)
                return
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: try again in a while
                log.warning("status server: accept failed: %s", exc)
                self._pause(1.0)
                return
            self._next = start + self._interval
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
            self._connecting.add(task)
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("status server: connection lost at once: %s", task.exception())

    def _pause(self, delay_s: float) -> None:
        self._loop.remove_reader(self._sock)
        self._resume = self._loop.call_later(delay_s, self._listen)

    def _listen(self) -> None:
        self._resume = None
        if not self._closed:
            self._loop.add_reader(self._sock, self._accept)

    def close(self) -> None:
        """Stop accepting and close the listening socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
        self._loop.remove_reader(self._sock)
        self._sock.close()
        for task in self._connecting:
            task.cancel()


def listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port); raises OSError."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
