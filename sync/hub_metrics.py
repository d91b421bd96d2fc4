"""``GET /metrics``: the hub in Prometheus text, and the routes of the venue view.

Metrics (every label bounded: ``gate`` by the venue's gates, which need a token to upload,
``reason`` by :class:`agent.model.Reason`, ``kind`` and ``verdict`` by the protocol, ``zone`` by
the gates' zones 1-16 or ``none``; no ticket, short id or entry id anywhere)::

    hub_entries_total{gate,kind,verdict,reason}  decisions stored: entry/exit/attempt rows, as
                                                  uploaded (an annulment does not lower it)
    hub_annulments_total{gate,kind}               admissions annulled (nobody passed), by the kind
                                                  of the row cancelled (entry/exit)
    hub_occupancy{zone}                           entries minus exits, annulled ones removed
    hub_alerts_open                               alerts nobody has acknowledged
    hub_gates, hub_gates_online                   gates known (token or heard from) / online
    hub_gate_online{gate}                         1 when the gate's heartbeat is recent
    hub_build_info{version}                       1; the version of gate-agent this hub runs
    hub_gate_info{gate,name,version}              1; the name the venue's operator gave the gate
                                                  and the version its last heartbeat gave
                                                  (version-shaped, else "invalid")
    hub_gate_list_version{gate}                   revocation list version at the last heartbeat
    hub_gate_list_age_seconds{gate}               that list's age now
    hub_feed_waiting                              long-polls of the feed this hub process holds
                                                  open now (gates waiting for new rows)
    hub_ingest_seconds                            histogram: the hub's handling time of an accepted
                                                  upload, from its handler starting (request head
                                                  read) to the acknowledgement: reading and parsing
                                                  the body, the ingest transaction and its commit

Who may read it is ``[hub] metrics_auth``: ``"token"`` (the default) needs a console token
(Prometheus: ``authorization: {credentials_file: ...}`` in the scrape config), ``"open"`` serves
anyone who reaches the hub (counts and gate ids only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agent import version
from sync.hub_auth import console_caller
from sync.hub_state import HUB, Hub
from sync.hub_store import HubStoreError
from sync.hub_venue import VENUE, Venue, VenueTally, list_age, venue_handler
from sync.protocol import GateHealth
from sync.protocol_fields import MAX_ID

log = logging.getLogger(__name__)

# As long as a heartbeat's version may be (protocol MAX_ID): a build's is 0.1.devN+gHASH.dDATE,
# 31 characters and growing (32 reported honest gates "invalid": a review).
MAX_VERSION_LABEL = MAX_ID
# agent.version.installed(): a version, or "unknown" from a source tree never installed
_VERSION_SHAPE = re.compile(rf"(?:[0-9][0-9A-Za-z.+-]{{0,{MAX_VERSION_LABEL - 1}}}|unknown)?")

UPLOAD_ROUTE = "/v1/gates/{gate}/entries:batch"
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INGEST = web.AppKey("ingest_seconds", Histogram)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install(app: web.Application, hub: Hub) -> None:
    """Add ``GET /v1/venue``, ``GET /metrics``, the upload timing and the venue's first read
    (in the background at start, so the first console poll rarely waits for it)."""
    app[VENUE] = Venue(hub.store, hub.clock)
    app[INGEST] = Histogram(
        "hub_ingest_seconds", "Handling time of accepted uploads", buckets=INGEST_BUCKETS,
        registry=None,
    )  # fmt: skip
    app.middlewares.append(_time_uploads)
    app.cleanup_ctx.append(_first_read)
    app.router.add_get("/v1/venue", venue_handler)
    app.router.add_get("/metrics", metrics_handler)


@web.middleware
async def _time_uploads(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    if route is None or route.canonical != UPLOAD_ROUTE:
        return await handler(request)
    started = time.perf_counter()
    response = await handler(request)  # refused uploads raise: not observed
    if response.status == 200:
        request.app[INGEST].observe(time.perf_counter() - started)
    return response


async def _first_read(app: web.Application) -> AsyncIterator[None]:
    async def read() -> None:
        try:
            await app[VENUE].follow()
        except HubStoreError as exc:  # the next request reads again and reports it
            log.warning("venue tallies not read at start: %s", exc)

    reading = asyncio.create_task(read())
    yield
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text (auth per ``[hub] metrics_auth``)."""
    hub = request.app[HUB]
    if hub.config.hub.metrics_auth == "token":
        await console_caller(request, hub)
    tally = await request.app[VENUE].follow()
    now = hub.clock()
    snapshot = _Snapshot(
        tally, await hub.store.gates(now), await hub.store.open_alerts(), now,
        request.app[INGEST], hub.store.feed_signal.waiting,
    )  # fmt: skip
    registry = CollectorRegistry(auto_describe=False)
    registry.register(snapshot)
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def version_label(said: str) -> str:
    """A gate's version as its heartbeat gave it (what a stolen gate chooses), as a label:
    version-shaped text (``0.1.0``, ``0.2.dev3+g1a2b``) of at most :data:`MAX_VERSION_LABEL`
    characters or ``unknown``, else ``invalid``; "" before a heartbeat."""
    return said if _VERSION_SHAPE.fullmatch(said) else "invalid"


class _Snapshot:
    """One scrape's numbers as a prometheus_client collector."""

    def __init__(
        self,
        tally: VenueTally,
        gates: list[GateHealth],
        open_alerts: int,
        now: float,
        ingest: Histogram,
        feed_waiting: int,
    ) -> None:
        self._tally, self._gates, self._open, self._now = tally, gates, open_alerts, now
        self._ingest, self._feed_waiting = ingest, feed_waiting

    def collect(self) -> Iterator[Metric]:
        build = InfoMetricFamily("hub_build", "The running gate-agent hub")
        build.add_metric([], {"version": version.installed()})
        yield build
        yield from self._venue()
        yield from self._gate_metrics()
        yield from self._ingest.collect()

    def _venue(self) -> Iterator[Metric]:
        t = self._tally
        entries = CounterMetricFamily(
            "hub_entries", "Decisions stored (entries, exits, denied attempts), as uploaded",
            labels=["gate", "kind", "verdict", "reason"],
        )  # fmt: skip
        for labels, n in sorted(t.decisions.items()):
            entries.add_metric(list(labels), n)
        yield entries
        annulled = CounterMetricFamily(
            "hub_annulments", "Admissions annulled (nobody passed)", labels=["gate", "kind"]
        )
        for (gate, kind), n in sorted(t.annulments.items()):
            annulled.add_metric([gate, kind], n)
        yield annulled
        occupancy = GaugeMetricFamily(
            "hub_occupancy", "Entries minus exits per zone, annulled ones removed", labels=["zone"]
        )
        for zone, (e, x) in sorted(t.zones.items(), key=lambda z: (z[0] is None, z[0] or 0)):
            occupancy.add_metric(["none" if zone is None else str(zone)], e - x)
        yield occupancy
        yield GaugeMetricFamily("hub_alerts_open", "Alerts nobody has acknowledged", self._open)
        yield GaugeMetricFamily(
            "hub_feed_waiting", "Long-polls of the feed held open now", self._feed_waiting
        )

    def _gate_metrics(self) -> Iterator[Metric]:
        gates = self._gates
        yield GaugeMetricFamily("hub_gates", "Gates with a token or heard from", len(gates))
        online_count = sum(g.online for g in gates)
        yield GaugeMetricFamily("hub_gates_online", "Gates with a recent heartbeat", online_count)
        online = GaugeMetricFamily("hub_gate_online", "1 when the gate is online", labels=["gate"])
        info = GaugeMetricFamily(
            "hub_gate_info", "The gate's name and version", labels=["gate", "name", "version"]
        )
        list_version = GaugeMetricFamily(
            "hub_gate_list_version", "Revocation list version at the gate", labels=["gate"]
        )
        age = GaugeMetricFamily(
            "hub_gate_list_age_seconds", "Age of the gate's revocation list", labels=["gate"]
        )
        for g in gates:
            online.add_metric([g.gate_id], int(g.online))
            info.add_metric([g.gate_id, g.gate_name, version_label(g.version)], 1)
            if g.last_seen is not None:
                list_version.add_metric([g.gate_id], g.revocation_version)
            list_age_s = list_age(g, self._now)
            if list_age_s is not None:
                age.add_metric([g.gate_id], list_age_s)
        yield from (online, info, list_version, age)
