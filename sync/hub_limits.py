"""The hub's connection limits: caps per process and per client address, and a header deadline.

aiohttp accepts every connection and waits for a request head as long as its keep-alive timeout
allows, so a crowd of clients that send half a request holds the hub's file descriptors until it
cannot accept anyone. :class:`GuardedSite` listens like ``web.TCPSite`` but puts a guard protocol
in front of each of aiohttp's connection handlers:

- A connection over ``max_connections`` open connections, or over ``max_connections_per_client``
  from its address, is answered ``503`` (an ``ErrorBody`` with ``Retry-After`` and
  ``Connection: close``) and closed, without an aiohttp handler: while at most
  :data:`MAX_LINGERING` refusals are pending the hub ends its side and waits up to
  :data:`REFUSAL_LINGER_S` for the client's end (so the client reads the 503, not a reset),
  beyond that it closes at once. Refusals are logged as one WARNING when they start and then
  at most one line per :data:`WARN_EVERY_S` with counts. A client is an address, also for IPv6
  (unlike the log throttle's clients, :func:`sync.log_throttle.client_net`): a venue's gates on one
  IPv6 LAN share its /64, and one cap for all of them would refuse gates; ``max_connections``
  bounds a client rotating through its /64.
- The last :data:`RESERVE_SHARE` of ``max_connections`` is kept for :class:`KnownClients`:
  addresses that made a request with a valid token within :data:`KNOWN_FOR_S` (and, from the
  store at the hub's start, those gates' heartbeats came from within it). Clients without a
  credential, from as many addresses as they like, fill the rest only: the venue's gates and
  consoles still get in (a review: 9 addresses at the per-client cap of 128 filled a hub of
  1,000 for everyone). A gate new at its address while such a crowd holds the hub waits for it.
- A connection must send a complete request head within ``header_timeout_s`` of connecting or of
  its previous response being written, or it is closed. The deadline stops when a request
  reaches the application (so a long-polled feed request is never cut) and starts again when
  the request's task (handler and writing the response) is done. With TLS the handshake has the
  same bound (``ssl_handshake_timeout``).
- With TLS a connection counts against the caps from its accept, its handshake included; one
  over a cap is closed at once, without an answer (there is no TLS yet to answer in). Counted
  only once the handshake was done, connections that never send a ClientHello counted against
  nothing: a few hundred held every descriptor the hub had until their handshake timeout, and a
  separate cap on handshakes in progress let two dozen keep out every client not known (two
  reviews). Silent connections are now held as half-requests are, within the same caps.
- With TLS the guard runs the handshake itself (``loop.start_tls``), so a refused one is logged
  with its reason and the client's address (:class:`sync.hub_watch.HandshakeLog`): asyncio's
  own TLS server drops those silently.

The listen queue is :data:`LISTEN_BACKLOG` deep, so a flood of connects waits there instead of
having SYNs dropped (a dropped SYN costs a good client a second).

Request bodies are bounded separately (``body_timeout_s`` in ``sync.hub._body``); after such a
timeout aiohttp discards what is left of a body for at most :data:`LINGER_S` and then closes.
:func:`fit_nofile` raises the soft RLIMIT_NOFILE and keeps ``max_connections`` under it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sync import protocol
from sync.hub_watch import HandshakeLog

log = logging.getLogger(__name__)

FD_RESERVE = 128  # descriptors kept for the database, logs, TLS handshakes, lingering refusals
WARN_EVERY_S = 60.0
LINGER_S = 2.0  # web.AppRunner(lingering_time=): an unread body is dropped this long, then closed
RETRY_AFTER_S = 5
MAX_LINGERING = 64  # refused connections closed gracefully at a time; beyond: closed at once
RESERVE_SHARE = 0.25  # of max_connections, for known clients only (when the site has them)
KNOWN_FOR_S = 3600.0  # an address stays known this long after its last request with a token
MAX_KNOWN = 4096  # addresses remembered; the longest unheard is forgotten first
KNOWN_PER_TOKEN = 8  # addresses one token makes known: its newest (a dual-stack gate has two)
REFUSAL_LINGER_S = 1.0
# The kernel's queue of connections not yet accepted (it caps this at net.core.somaxconn, 4096 by
# default). Past it the kernel drops a SYN and the client sends it again after 1 s: with the
# usual 128, a flood of 1,100 connects kept a good client's health request waiting 1.05 s (found
# in CI). A queue deeper than max_connections holds a whole flood the guard then answers.
LISTEN_BACKLOG = 4096


@dataclass(frozen=True)
class Limits:
    """What one hub process allows; see the module docstring."""

    max_connections: int = 1000
    max_connections_per_client: int = 128
    header_timeout_s: float = 10.0


def busy_answer(body: bytes, retry_after_s: int = RETRY_AFTER_S) -> bytes:
    """A whole ``503`` answer with the JSON ``body``, ``Retry-After`` and ``Connection: close``."""
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {retry_after_s}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _busy_answer(message: str) -> bytes:
    return busy_answer(protocol.encode(protocol.ErrorBody("unavailable", message)))


_BUSY = {
    "total": _busy_answer("the hub has too many open connections; try again later"),
    "client": _busy_answer("too many open connections from this address; try again later"),
}


def fit_nofile(limits: Limits, setting: str = "max_connections") -> Limits:
    """Raise the soft RLIMIT_NOFILE to the hard limit and return ``limits`` with
    ``max_connections`` lowered (one WARNING line) when it does not fit under the soft limit
    with :data:`FD_RESERVE` to spare. Never raises: a limit that cannot be raised is kept."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + FD_RESERVE
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit from %d to %d: %s", soft, target, exc)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return limits
    cap = max(1, soft - FD_RESERVE)
    log.warning(
        "%s lowered from %d to %d: the open file limit is %d (LimitNOFILE=)",
        setting, limits.max_connections, cap, soft,
    )  # fmt: skip
    return replace(
        limits,
        max_connections=cap,
        max_connections_per_client=min(cap, limits.max_connections_per_client),
    )


class _Refusals:
    """Counts refused connections; logs when refusing starts and then once per WARN_EVERY_S."""

    def __init__(self, server_name: str) -> None:
        self._prefix = f"{server_name}: " if server_name else ""
        self._counts: Counter[str] = Counter()
        self._clients: Counter[str] = Counter()
        self._last = -WARN_EVERY_S
        self._flush: asyncio.TimerHandle | None = None

    def add(self, reason: str, host: str) -> None:
        self._counts[reason] += 1
        self._clients[host] += 1
        wait = self._last + WARN_EVERY_S - time.monotonic()
        if wait <= 0:
            self.flush()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(wait, self.flush)

    def flush(self) -> None:
        self._flush = None
        if not self._counts:
            return
        host, most = self._clients.most_common(1)[0]
        log.warning(
            "%srefused %d connections with 503 or, under TLS, closed (%d over the cap of open"
            " connections, %d over the cap per client; %d from %s) since the last such line",
            self._prefix, sum(self._counts.values()), self._counts["total"],
            self._counts["client"], most, host,
        )  # fmt: skip
        self._last = time.monotonic()
        self._counts.clear()
        self._clients.clear()

    def cancel(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self.flush()


class KnownClients:
    """Addresses that made an authorised request within ``keep_s`` (at most ``max_size``, the
    longest unheard forgotten first; at most ``per_token`` for one token, its newest: one stolen
    token must not make a crowd of addresses known and push the gates out), for the connections
    kept for them."""

    def __init__(
        self,
        keep_s: float = KNOWN_FOR_S,
        max_size: int = MAX_KNOWN,
        clock: Callable[[], float] = time.monotonic,
        per_token: int = KNOWN_PER_TOKEN,
    ) -> None:
        self._keep_s, self._max_size, self._clock = keep_s, max_size, clock
        self._per_token = per_token
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._by_token: dict[str, OrderedDict[str, None]] = {}

    def note(self, host: str, token: str, at: float | None = None) -> None:
        """``host`` made a request authorised by ``token`` (its hash) now (or ``at``, on this
        object's clock)."""
        hosts = self._by_token.setdefault(token, OrderedDict())
        hosts[host] = None
        hosts.move_to_end(host)
        while len(hosts) > self._per_token:
            old, _ = hosts.popitem(last=False)
            if not any(old in other for other in self._by_token.values()):
                self._seen.pop(old, None)
        self._seen[host] = self._clock() if at is None else at
        self._seen.move_to_end(host)
        while len(self._seen) > self._max_size:
            self._seen.popitem(last=False)
        if len(self._by_token) > self._max_size:  # tokens of forgotten addresses
            self._by_token = {
                t: h for t, h in self._by_token.items() if any(x in self._seen for x in h)
            }

    def seed(self, heard: Iterable[tuple[str, str, float]], now: float) -> None:
        """Know the addresses gates were heard from lately: ``(gate id, address, last seen)``
        oldest first, as the store keeps them (its clock, on which it is ``now``). At a hub's
        start: one restarted while a crowd holds its connections kept no room for its gates
        until each made a request, which the crowd left no room for. At most ``per_token``
        addresses a gate, as for a token."""
        mono = self._clock()
        for gate_id, host, seen in heard:
            if 0 <= now - seen <= self._keep_s:
                self.note(host, "gate:" + gate_id, at=mono - (now - seen))

    def __contains__(self, host: object) -> bool:
        seen = self._seen.get(host) if isinstance(host, str) else None
        return seen is not None and self._clock() - seen <= self._keep_s


class ConnectionGuard:
    """The open connections of one site, by client address, and the guards' factory
    (:meth:`protocol`: hand it to whatever accepts the connections). ``busy``: the 503 answers
    for "total" and "client" (:func:`busy_answer`; the hub's by default); ``server_name`` starts
    the refusals' log line (the hub's has none)."""

    def __init__(
        self,
        limits: Limits,
        server: web.Server,
        tls: ssl.SSLContext | None = None,
        *,
        busy: Mapping[str, bytes] | None = None,
        server_name: str = "",
        known: KnownClients | None = None,
    ) -> None:
        self.busy = _BUSY if busy is None else busy
        self.limits = limits
        self.known = known
        # the open connections a client not known may take (all of them without known clients)
        cap = limits.max_connections
        self.open_cap = cap if known is None else max(1, cap - int(cap * RESERVE_SHARE))
        self.server = server
        self.tls = tls
        self.handshakes: set[asyncio.Task[None]] = set()
        self.refused_tls = HandshakeLog()
        self.total = 0
        self.per_client: Counter[str] = Counter()
        self.by_handler: dict[RequestHandler, _Guard] = {}
        self.lingering = 0  # refused connections waiting for the client to close
        self.refusals = _Refusals(server_name)
        self._handle = server.request_handler
        server.request_handler = self._handle_request

    def protocol(self) -> _Guard:
        return _Guard(self)

    def admit(self, host: str) -> str | None:
        """None when a connection from ``host`` may open (and counts it), else why not."""
        if self.total >= self.limits.max_connections:
            return "total"
        if self.total >= self.open_cap and (self.known is None or host not in self.known):
            return "total"
        if self.per_client[host] >= self.limits.max_connections_per_client:
            return "client"
        self.total += 1
        self.per_client[host] += 1
        return None

    def release(self, host: str) -> None:
        self.total -= 1
        self.per_client[host] -= 1
        if self.per_client[host] <= 0:
            del self.per_client[host]

    async def _handle_request(self, request: BaseRequest) -> web.StreamResponse:
        """The application's handler, with the connection's header deadline stopped until the
        request's task (this handler, then writing the response) is done."""
        guard = self.by_handler.get(request.protocol)
        task = asyncio.current_task()
        if guard is not None and task is not None:
            guard.request_started()
            task.add_done_callback(guard.request_done)
        return await self._handle(request)


class _Guard(asyncio.Protocol):
    """In front of one aiohttp RequestHandler: counts it, refuses it or times out its head."""

    def __init__(self, conns: ConnectionGuard) -> None:
        self._conns = conns
        self._inner: RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._host = ""
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False
        self._lingering = False
        self._counted = False  # against the caps: from the accept until the connection is gone
        self._early: list[bytes] | None = None  # TLS data that came with the handshake's end

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        self._host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        conns = self._conns
        refused = conns.admit(self._host)
        if refused is not None:
            if conns.tls is None:
                self._refuse(transport, refused)
            else:  # no TLS yet to answer in
                conns.refusals.add(refused, self._host)
                transport.close()
            return
        self._counted = True
        if conns.tls is None:
            self._open(transport)
            return
        transport.pause_reading()  # start_tls takes over the stream from its first byte
        self._early = []
        task = asyncio.get_running_loop().create_task(self._handshake(transport))
        conns.handshakes.add(task)
        task.add_done_callback(conns.handshakes.discard)

    async def _handshake(self, raw: asyncio.Transport) -> None:
        """TLS on ``raw``, then the connection as without TLS; a failure is logged and closed."""
        assert self._conns.tls is not None
        if raw.is_closing():  # the client left before its turn came
            self._uncount()
            return
        try:
            tls = await asyncio.get_running_loop().start_tls(
                raw, self, self._conns.tls, server_side=True,
                ssl_handshake_timeout=self._conns.limits.header_timeout_s,
            )  # fmt: skip
        except OSError as exc:  # ssl.SSLError, resets, the handshake timeout
            self._conns.refused_tls.refused(self._host, exc)
            tls = None
        except BaseException:  # the site stopping
            self._uncount()
            raise
        if tls is None:
            raw.close()
            self._uncount()
            return
        self._open(tls)

    def _uncount(self) -> None:
        """The connection is gone: it counts no more (once)."""
        if self._counted:
            self._counted = False
            self._conns.release(self._host)

    def _open(self, transport: asyncio.Transport) -> None:
        """Hand the (counted) connection to a new aiohttp handler."""
        early, self._early = self._early or [], None
        self._transport = transport
        self._inner = inner = self._conns.server()
        self._conns.by_handler[inner] = self
        self._arm()
        inner.connection_made(transport)
        for data in early:  # asyncio reads on as the handshake ends, before _handshake resumes
            if data:
                inner.data_received(data)
            else:
                inner.eof_received()

    def _refuse(self, transport: asyncio.Transport, why: str) -> None:
        """Answer 503. Closing with the client's request unread would send a reset, which can
        destroy the answer before the client reads it: so, while few refusals are pending, send
        the end of the stream and wait briefly for the client's (a lingering close)."""
        conns = self._conns
        conns.refusals.add(why, self._host)
        transport.write(conns.busy[why])
        if conns.lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        conns.lingering += 1
        self._lingering = True
        transport.write_eof()
        self._deadline = asyncio.get_running_loop().call_later(
            REFUSAL_LINGER_S, _end_refusal, transport
        )

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
        elif self._early is not None:
            self._early.append(data)

    def eof_received(self) -> None:
        if self._inner is not None:
            self._inner.eof_received()
        elif self._early is not None:
            self._early.append(b"")

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._lingering:
            self._lingering = False
            self._conns.lingering -= 1
        self._uncount()
        inner, self._inner, self._transport = self._inner, None, None
        if inner is None:
            return
        self._conns.by_handler.pop(inner, None)
        inner.connection_lost(exc)

    def request_started(self) -> None:
        self._busy = True
        self._disarm()

    def request_done(self, _task: object) -> None:
        self._busy = False
        if self._transport is not None:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._conns.limits.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        transport = self._transport
        if self._busy or transport is None:
            return
        log.debug("closed a connection from %s: no request head in time", self._host)
        # A client that does not read what it was sent would hold close() open: abort then.
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()


def _end_refusal(transport: asyncio.Transport) -> None:
    """The client did not close within REFUSAL_LINGER_S. With the 503 handed to the kernel
    (nothing left in the write buffer) a plain close keeps it readable for a slow client (its
    head was read, so no reset goes out); with the answer still unsent, abort."""
    if transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()


class GuardedSite(web.BaseSite):
    """``web.TCPSite`` with :class:`Limits` on the connections it accepts."""

    __slots__ = ("_conns", "_host", "_known", "_limits", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limits: Limits,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = LISTEN_BACKLOG,
        known: KnownClients | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host, self._port, self._limits = host, port, limits
        self._known = known
        self._conns: ConnectionGuard | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        """Listen; raises OSError when the address cannot be bound."""
        await super().start()
        server = self._runner.server
        assert server is not None
        self._conns = conns = ConnectionGuard(
            self._limits, server, self._ssl_context, known=self._known
        )
        self._server = await asyncio.get_running_loop().create_server(
            conns.protocol, self._host, self._port, backlog=self._backlog
        )

    async def stop(self) -> None:
        if self._conns is not None:
            self._conns.refusals.cancel()
            for task in self._conns.handshakes:
                task.cancel()
        await super().stop()
