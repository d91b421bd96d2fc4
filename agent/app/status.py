"""The gate's local status server: ``/healthz``, ``/metrics``, ``/status`` and the staff display.

aiohttp on the daemon's own loop, bound to 127.0.0.1 by default (config ``[status]``). It only
reads the gate's state; the lane feeds it through two hooks that do constant work and never await:
:meth:`StatusServer.decided` when a decision is recorded, :meth:`StatusServer.observe` when its
outcome is known (passed, or annulled). The loop is the lane's, and asyncio has no priorities:
200 clients asking as fast as they can took a whole core from it and the lane's p99 went from
5 ms to seconds (tests/bench/bench_status.py). So request handling is paced (:class:`Pacer`): at
most ``REQUESTS_PER_S`` start each second after a short burst; the others wait parked on a timer,
which costs the loop nothing, and are answered in turn. New connections are accepted at most
``ACCEPTS_PER_S`` a second, one at a time (a crowd waits in the kernel's listen queue), at most
so many are open at once, and one that sends no request head within ``HEADER_TIMEOUT_S`` is
closed (:class:`sync.hub_limits.ConnectionGuard`, the hub's own guard).
Everything else is bounded too, and refused with 503 and Retry-After (closing the connection, so
a client that does not wait reconnects at the accept rate) beyond its bound, before it costs the
loop more than the refusal: no more than ``REQUESTS_PARKED`` requests wait for a turn; no more
than ``max_streams`` event streams are open or waiting (1,500 streams made each decision wake
1,500 writers, and decisions took seconds: tests/bench/bench_status_flood.py); ``/status`` and
``/metrics`` are rendered at most once per ``RENDER_TTL_S`` and a crowd shares that render.

* ``/healthz``: 200 ``ready`` or 503 ``degraded`` with reasons a technician can act on (scanner
  offline, relay fault, journal write failed, list stale, clock untrusted, clock behind its
  floor, clock ahead of the hub's, outbox backlog, disk space low, hub offline or pretix offline:
  the upstream is named by ``upstream.kind``).
* ``/metrics``: Prometheus text (prometheus-client, a registry of this server's own).
* ``/status``: the same facts as JSON, for `gate-agent status`.
* ``/display``: a full-screen page for a small screen in kiosk mode (agent/app/status_display.py:
  GO/STOP at decision time with a shape per verdict and the steward's action, READY again after
  ``[display] clear_after_s``, OUT OF SERVICE, OFFLINE, emergency free passage), live over
  server-sent events (``/display/events``). Never a ticket's text or reference. Each message is
  encoded once and handed to every stream (:class:`Streams`); a stream that falls
  ``SSE_BACKLOG`` events behind is closed (its display reconnects and is greeted with the current
  state), and one timer sends every stream's keep-alive.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import ipaddress
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agent import version
from agent.app.status_bounds import Listener, Pacer, Streams, busy, listen_socket
from agent.app.status_display import DisplayFeed, lane_health
from agent.clock import HLC_MAX_AHEAD_S, boot_id
from agent.errors import JournalError
from sync.hub_limits import ConnectionGuard, Limits, busy_answer, fit_nofile
from sync.log_throttle import request_log

if TYPE_CHECKING:
    from agent.app.status_view import ClockReads, GateView, LaneView
    from agent.lane import Outcome

log = logging.getLogger(__name__)

_JOURNAL_TTL_S = 1.0  # journal figures (outbox, rows) are re-read at most this often
_KEEPALIVE_S = 15.0
_KEEPALIVE = b": keep-alive\n\n"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_ASSETS = ("display.html", "display.js", "display.css")
REQUESTS_PER_S = 100.0  # a Prometheus scrape, a few displays and curls need a handful
REQUEST_BURST = 20
MAX_WAIT_S = 5.0  # a request that would wait longer gets 503 and Retry-After instead
ACCEPTS_PER_S = 200.0  # new connections; a crowd of them waits in the kernel's listen queue
ACCEPTS_PER_WAKE = 1  # no burst: a wave of connections is spread out, as measured
LISTEN_BACKLOG = 512
# Open connections at most (beyond: 503, closed), and how long one may take to send a request
# head, after connecting or after its last answer: clients that connected and sent nothing, or
# half a request, held descriptors until the daemon had none left for its scanner's socket
# (found in a user trial: a scan waited 25 s). The cap leaves room for every request the pacer
# may park and every stream, and is lowered to fit the open file limit (sync.hub_limits).
# On 127.0.0.1, the default, every client is one address: one cap; elsewhere each address may
# hold a quarter of it.
MAX_CONNECTIONS_BASE = 64  # beyond parked requests and streams: answers being written, idle ones
HEADER_TIMEOUT_S = 10.0
_BUSY = {
    why: busy_answer(json.dumps({"error": text}).encode(), int(MAX_WAIT_S))
    for why, text in (
        ("total", "too many open connections"),
        ("client", "too many open connections from this address"),
    )
}
REQUESTS_PARKED = 256  # requests waiting for a turn at most; the next gets 503 at once
MAX_STREAMS = 16  # default cap of /display/events streams (config [status] max_streams)
RENDER_TTL_S = 0.25  # /status and /metrics answer from a render at most this old
_STREAMS_PATH = "/display/events"


_CSP = "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"


@dataclass(frozen=True)
class StatusLimits:
    """When health turns degraded."""

    outbox_backlog: int = 1000
    disk_free_min_bytes: int = 200 * 1024 * 1024
    clock_ahead_s: float = (
        HLC_MAX_AHEAD_S  # past the hub's time: degraded ([hub] max_clock_ahead_s)
    )


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.scans = Counter(
            "gate_scans",
            "Decisions by verdict and reason",
            ["lane", "verdict", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "gate_decision_latency_seconds", "Scan to recorded decision", ["lane"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.outbox = Gauge(
            "gate_outbox_depth", "Entries not yet acknowledged upstream", registry=r
        )
        self.rev_age = Gauge(
            "gate_revocation_age_seconds", "Age of the installed revocation list", registry=r
        )
        self.rev_version = Gauge("gate_revocation_version", "Installed list version", registry=r)
        self.device_up = Gauge("gate_device_up", "1 when the device works", ["device"], registry=r)
        self.feed_lag = Gauge(
            "gate_peer_feed_lag_seconds", "Time since the peer feed last answered", registry=r
        )
        self.clock_synced = Gauge("gate_clock_synced", "1 when the clock is trusted", registry=r)
        self.clock_source = Gauge(
            "gate_clock_source", "1 for the source of the trusted time", ["source"], registry=r
        )
        self.hub_offset = Gauge(
            "gate_clock_hub_offset_seconds", "The hub's time minus the system clock", registry=r
        )
        self.disk_free = Gauge("gate_state_disk_free_bytes", "Free space for the state", registry=r)
        self.ready = Gauge("gate_ready", "1 when /healthz says ready", registry=r)
        self.alerts = Gauge(
            "gate_security_alerts", "Security alerts the journal keeps (pretix)", registry=r
        )
        build = Info(
            "gate_build", "The running gate-agent (after an upgrade: restarted?)", registry=r
        )
        build.info({"version": version.installed()})


class StatusServer:
    """Serves the gate's health, metrics, status and staff display; see the module docstring."""

    def __init__(
        self,
        gate: GateView,
        *,
        host: str = "127.0.0.1",
        port: int = 8471,
        limits: StatusLimits | None = None,
        lanes: Callable[[], Sequence[LaneView]] | None = None,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        """``lanes`` lists the lanes to report (default: the gate's main lane); at most
        ``max_streams`` clients follow ``/display/events`` at once."""
        self._gate = gate
        self._host, self._port = host, port
        self._limits = limits or StatusLimits()
        self._lanes = lanes or (lambda: [gate.lane])
        self._metrics = _Metrics()
        self._streams = Streams(max_streams)

        def kind() -> str | None:
            return (
                "pretix" if gate.upstream is not None else "hub" if gate.hub is not None else None
            )

        self._display = DisplayFeed(
            gate.config.gate.name, self._lanes, kind, gate.config.display, self._streams
        )
        self._keepalive: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._rendered: dict[str, tuple[float, web.Response]] = {}
        self._rendering: dict[str, asyncio.Future[web.Response]] = {}
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        self._guard: ConnectionGuard | None = None
        self._figures: tuple[float, tuple[int, float | None, int | None]] | None = None
        self._reading: asyncio.Future[tuple[int, float | None, int | None]] | None = None
        self.port: int | None = None

    def decided(self, outcome: Outcome) -> None:
        """The lane's decision hook: count, time and show one decision. Never blocks."""
        d, lane = outcome.decision, outcome.lane
        self._metrics.scans.labels(lane, d.verdict.value, d.reason.value).inc()
        self._metrics.latency.labels(lane).observe(outcome.latency_ns / 1e9)
        self._display.decided(outcome)

    def observe(self, outcome: Outcome) -> None:
        """The lane's outcome hook: what came of the decision (passed, annulled). Never blocks.

        A decision the decision hook was not told of is counted and shown here first.
        """
        if not self._display.seen(outcome):
            self.decided(outcome)
        self._display.settled(outcome)

    async def start(self) -> None:
        """Listen; raises OSError when the address is taken."""
        try:  # the last hour's counts go on from the journal across a restart
            self._display.seed(await self._gate.journal.recent(time.time() - 3600))
        except JournalError as exc:
            log.warning("last hour's decisions not counted: %s", exc)
        pacer = Pacer(REQUESTS_PER_S, REQUEST_BURST, REQUESTS_PARKED)
        streams = self._streams

        @web.middleware
        async def paced(request: web.Request, handler: Any) -> web.StreamResponse:
            # A stream holds its slot from before its turn, so a crowd of attempts parks no more
            # than ``max_streams`` of them; the rest are refused here, at the cost of the refusal.
            slot = request.path == _STREAMS_PATH
            if slot and not streams.reserve():
                return busy("too many display streams", _KEEPALIVE_S)
            try:
                if not await pacer.turn(MAX_WAIT_S):  # a flood: answer at once, park no more
                    return busy("busy", MAX_WAIT_S)
                response: web.StreamResponse = await handler(request)
                return response
            finally:
                if slot:
                    streams.release()

        app = web.Application(middlewares=[paced, _headers])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/status", self._status)
        app.router.add_get("/display", self._asset("display.html"))
        app.router.add_get("/display.js", self._asset("display.js"))
        app.router.add_get("/display.css", self._asset("display.css"))
        app.router.add_get(_STREAMS_PATH, self._events)
        # Cancel a handler whose client went away: a stream must give back its slot at once.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
            handler_cancellation=True, auto_decompress=False,
            logger=request_log("agent.app.status.requests"),  # a bad request: a scrubbed line
        )  # fmt: skip
        await runner.setup()
        try:
            sock = listen_socket(self._host, self._port, LISTEN_BACKLOG)
        except OSError:
            await runner.cleanup()
            raise
        assert runner.server is not None  # set up above
        cap = REQUESTS_PARKED + self._streams.limit + MAX_CONNECTIONS_BASE
        # On a LAN address one host must not take every slot from the displays and monitoring.
        per_client = cap if is_loopback(self._host) else cap // 4
        limits = fit_nofile(
            Limits(cap, per_client, HEADER_TIMEOUT_S), "the status server's connection cap"
        )
        self._guard = ConnectionGuard(
            limits, runner.server, busy=_BUSY, server_name="status server"
        )
        self._listener = Listener(sock, self._guard.protocol, ACCEPTS_PER_S, ACCEPTS_PER_WAKE)
        self._runner = runner
        self._keepalive = asyncio.ensure_future(self._keep_alive())
        self._watcher = asyncio.ensure_future(self._display.run())
        self.port = int(sock.getsockname()[1])
        log.info(
            "status server on http://%s:%d: /status, /healthz, /metrics, /display",
            self._host,
            self.port,
        )

    async def close(self) -> None:
        """Stop serving; open event streams end. Idempotent."""
        self._streams.end_all()
        if self._listener is not None:
            self._listener.close()
        if self._guard is not None:
            self._guard.refusals.cancel()  # its last counts, logged now
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        # Shared work (a journal read above all) must not outlive the journal.
        pending: list[asyncio.Future[Any]] = [*self._rendering.values()]
        pending += [f for f in (self._reading, self._keepalive, self._watcher) if f is not None]
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def health(self) -> tuple[bool, list[str]]:
        """(ready, reasons): reasons are short phrases for technicians; empty when ready."""
        return _reasons(await self.snapshot(), self._limits)

    async def snapshot(self) -> dict[str, Any]:
        """Everything ``/status`` shows, as plain JSON values."""
        gate, now = self._gate, time.time()
        meta = gate.revocations.meta
        policy = gate.checker.policy
        depth, oldest, rows = await self._journal_figures()
        disk = _disk_free(gate.config.gate.state_dir)
        upstream = (
            {"kind": "pretix", **gate.upstream.status}
            if gate.upstream is not None
            else {"kind": "hub", **gate.hub.status()}
            if gate.hub is not None
            else None
        )
        return {
            "gate": {
                "id": gate.config.gate.id,
                "name": gate.config.gate.name,
                "version": version.installed(),
                "boot_id": boot_id(),  # as its rows carry it (`hub quarantine` lists it)
            },
            "lanes": [lane_health(lane) for lane in self._lanes()],
            "clock": _clock_status(gate.clock),
            "revocations": {
                "version": meta.version,
                "age_s": meta.age(now),
                "stale": meta.is_stale(now, policy.max_list_age_s),
                "entries": len(gate.revocations.index),
            },
            "trust_version": gate.trust.version,
            "journal": {"rows": rows, "outbox_depth": depth, "oldest_unsynced": oldest},
            "disk_free_bytes": disk,
            "upstream": upstream,
            "last_hour": self._display.counts(now),
            "last": list(self._display.last.values()),
        }

    async def _journal_figures(self) -> tuple[int, float | None, int | None]:
        """(outbox depth, oldest unsynced time, rows), at most one read per _JOURNAL_TTL_S.

        The journal's connection is the lane's: a crowd of status requests must queue one read
        there, not one each ahead of the next decision's insert. Concurrent callers share it.
        """
        if self._figures is not None and time.monotonic() - self._figures[0] < _JOURNAL_TTL_S:
            return self._figures[1]
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read_journal())
        figures = await asyncio.shield(self._reading)
        self._figures = (time.monotonic(), figures)
        return figures

    async def _read_journal(self) -> tuple[int, float | None, int | None]:
        try:
            depth, oldest = await self._gate.journal.outbox()
            return depth, oldest, await self._gate.journal.count()
        except JournalError as exc:
            log.error("status: journal unreadable: %s", exc)
            return -1, None, None

    async def _healthz(self, request: web.Request) -> web.Response:
        ready, reasons = await self.health()
        body = {"status": "ready" if ready else "degraded", "reasons": reasons}
        return web.json_response(body, status=200 if ready else 503)

    async def _status(self, request: web.Request) -> web.Response:
        return await self._shared("/status", self._render_status)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return await self._shared("/metrics", self._render_metrics)

    async def _shared(
        self, key: str, render: Callable[[], Awaitable[web.Response]]
    ) -> web.Response:
        """A copy of the last render of ``key`` if under RENDER_TTL_S old, else of a new one
        that every caller meanwhile waits for (a crowd costs one render, not one each)."""
        done = self._rendered.get(key)
        if done is None or time.monotonic() - done[0] >= RENDER_TTL_S:
            if key not in self._rendering:
                self._rendering[key] = asyncio.ensure_future(render())
                self._rendering[key].add_done_callback(lambda _: self._rendering.pop(key, None))
            response = await asyncio.shield(self._rendering[key])
            done = self._rendered[key] = (time.monotonic(), response)
        body = done[1].body
        assert isinstance(body, bytes)  # both renders set bytes
        return web.Response(body=body, headers={"Content-Type": done[1].headers["Content-Type"]})

    async def _render_status(self) -> web.Response:
        return web.json_response(await self.status())

    async def status(self) -> dict[str, Any]:
        """The ``/status`` document: :meth:`snapshot` and its health."""
        snap = await self.snapshot()
        ready, reasons = _reasons(snap, self._limits)
        snap["health"] = {"status": "ready" if ready else "degraded", "reasons": reasons}
        return snap

    async def _render_metrics(self) -> web.Response:
        snap = await self.snapshot()
        self._update_gauges(snap)
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _update_gauges(self, snap: dict[str, Any]) -> None:
        m = self._metrics
        m.outbox.set(max(0, snap["journal"]["outbox_depth"]))
        rev = snap["revocations"]
        m.rev_version.set(rev["version"])
        m.rev_age.set(rev["age_s"] if rev["age_s"] is not None else float("nan"))
        m.clock_synced.set(1 if snap["clock"]["synced"] else 0)
        for source in ("config", "ntp", "hub", "none"):
            m.clock_source.labels(source).set(1 if snap["clock"]["source"] == source else 0)
        offset = snap["clock"]["hub_offset_s"]
        m.hub_offset.set(float("nan") if offset is None else offset)
        m.disk_free.set(snap["disk_free_bytes"] if snap["disk_free_bytes"] is not None else -1)
        for lane in snap["lanes"]:
            m.device_up.labels(f"{lane['name']}/scanner").set(1 if lane["scanner_online"] else 0)
            m.device_up.labels(f"{lane['name']}/relay").set(0 if lane["fault"] else 1)
        up = snap["upstream"] or {}
        lag = up.get("feed_lag_s")
        m.feed_lag.set(lag if isinstance(lag, int | float) else float("nan"))
        m.alerts.set(up["alerts"] if isinstance(up.get("alerts"), int) else 0)
        m.ready.set(1 if _reasons(snap, self._limits)[0] else 0)

    def _asset(self, name: str) -> Callable[[web.Request], Any]:
        data = importlib.resources.files("agent.app").joinpath(name).read_bytes()
        kind = {"html": "text/html", "js": "text/javascript", "css": "text/css"}[
            name.rsplit(".", 1)[1]
        ]

        async def serve(request: web.Request) -> web.Response:
            return web.Response(body=data, content_type=kind, charset="utf-8")

        return serve

    async def _keep_alive(self) -> None:
        """One timer for every stream's keep-alive: no timer per stream, no work per decision."""
        while True:
            await asyncio.sleep(_KEEPALIVE_S)
            self._streams.publish(_KEEPALIVE)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Follow the display feed (agent/app/status_display.py)."""
        if request.transport is None or self._runner is None:  # gone already, or closing
            return busy("closing", _KEEPALIVE_S)
        return await self._display.follow(request)


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name, as a config gives it) is this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _disk_free(path: Any) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _reasons(snap: dict[str, Any], limits: StatusLimits) -> tuple[bool, list[str]]:
    reasons = []
    for lane in snap["lanes"]:
        if not lane["scanner_online"]:
            reasons.append(f"scanner offline ({lane['name']})")
        if lane["fault"]:
            reasons.append(f"relay fault ({lane['name']})")
        if lane["journal_fault"]:
            reasons.append(f"journal write failed ({lane['name']})")
    if snap["revocations"]["stale"]:
        reasons.append("revocation list stale")
    if not snap["clock"]["synced"]:
        reasons.append("clock untrusted")
    behind = snap["clock"]["behind_floor_s"]
    if behind is not None:  # a clock that ran ahead once set the floor (README)
        reasons.append(f"clock {behind:,.0f} s behind its floor")
    ahead = snap["clock"]["ahead_of_hub_s"]
    if ahead is not None and ahead > limits.clock_ahead_s:  # a floor left ahead holds it there
        reasons.append(f"clock {ahead:,.0f} s ahead of the hub's")
    depth = snap["journal"]["outbox_depth"]
    up = snap["upstream"]
    if depth < 0:
        reasons.append("journal unreadable")
    elif up is not None and depth > limits.outbox_backlog:  # a gate with no upstream uploads none
        reasons.append(f"outbox backlog ({depth} entries)")
    free = snap["disk_free_bytes"]
    if free is not None and free < limits.disk_free_min_bytes:
        reasons.append(f"disk space low ({free // (1024 * 1024)} MB free)")
    # Where a copy of the token wrote rows under the gate's numbers: security's --from-seq,
    # still shown once the token is revoked (the quarantine needs that first: a review).
    seq = None if up is None else up.get("conflict_from_seq")
    squatted = "" if seq is None else f" from gate_seq {seq}"
    if up is None:
        return not reasons, reasons
    conflict = up.get("kind") == "hub" and up.get("upload") == "conflict"
    if up.get("refused"):  # the hub's link: a token or certificate
        refused = f"{up.get('kind', 'upstream')} refuses this gate's {up['refused']}"
        reasons.append(refused + (f" (and its rows{squatted})" if squatted else ""))
    elif conflict:
        # Found in a user trial: staff read "hub offline" as a network fault, not a copy of
        # this gate's token writing rows under its numbers.
        reasons.append(
            f"hub refuses this gate's rows{squatted}: their numbers hold other rows there (a"
            " copy of its token?): tell security"
        )
    # A conflict holds until an upload goes up: shown while the link is down too, beside it.
    said = conflict and up.get("reachable") is not False  # the link works: the line says all
    if up.get("online") is False and not up.get("refused") and not said:
        reasons.append(f"{up.get('kind', 'upstream')} offline")
    return not reasons, reasons


def _clock_status(clock: ClockReads) -> dict[str, Any]:
    """The clock as /status shows it: the time, whether it is trusted, from which source (config,
    ntp, hub or none), the hub's offset from the system clock (None before the hub answered) and
    how far the gate's time runs ahead of the hub's as of that offset (its floor, which it never
    goes below, can hold it there), and how far the system clock is behind the floor (None: it
    is not)."""
    reading = clock.reading()
    offset = clock.reference_offset
    hub = None if offset is None else clock.wall() + offset
    behind = clock.behind_floor()
    return {
        "synced": reading.synced,
        "now": reading.now,
        "source": reading.source,
        "hub_offset_s": None if offset is None else round(offset, 3),
        "ahead_of_hub_s": None if hub is None else round(reading.now - hub, 3),
        "behind_floor_s": None if behind is None else round(behind, 3),
    }
