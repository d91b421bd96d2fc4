"""How the venue is filling: the hub's running tallies of its entries, for the console's Venue
section (``GET /v1/venue``, console token) and Prometheus (``GET /metrics``, :mod:`sync.hub_metrics`).

One :class:`Venue` per hub process reads every stored row once, page by page after a cursor
(:meth:`sync.hub_store.HubStore.venue_rows`): all of them when the hub starts, then only those
stored since the last look, so a console poll or a scrape never reads the whole table. With
several hub processes on one PostgreSQL database, each follows the shared table and shows the
same numbers. What :class:`VenueTally` counts:

- decisions: every entry, exit and denied attempt, by gate, kind, verdict and reason, as stored
  (Prometheus counters: they only grow; after a quarantine set rows apart, everything else is
  counted again from the rows still stored, these go on from where they were);
- admissions: admitted entries and exits less those annulled (an admission nobody passed
  through), per gate, per zone (occupancy: entries minus exits, by the zone of the gate that
  recorded them; a gate without a zone counts under zone null) and per gate per minute for the
  last hour. Minutes are those of the row's wall time (when the person passed, by the gate's
  clock), so an offline gate's rows fill the minutes they happened in once uploaded;
- annulments: per gate and the kind of the row cancelled; a row annulled twice counts once;
- denials: attempts per gate and reason (a bounded set: :class:`agent.model.Reason`).

Gate ids in the counts are those of gates that uploaded (each needed a token of the venue).
No ticket, short id or entry id is held or shown here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sync import protocol
from sync.hub_auth import console_caller
from sync.hub_state import HUB
from sync.hub_store import HubStore
from sync.hub_venue_sql import VenueRow
from sync.protocol import GateHealth

PAGE = 2000  # rows read per store call
MINUTES = 60  # the per-minute window: the last hour, the current minute last
_PASSAGES = ("entry", "exit")


@dataclass
class GateCounts:
    """One gate's admissions (annulled ones removed) and denials."""

    entries: int = 0
    exits: int = 0
    annulled: int = 0
    denied: Counter[str] = field(default_factory=Counter)  # reason -> attempts
    minutes: dict[int, int] = field(default_factory=dict)  # unix minute -> admissions


class VenueTally:
    """The venue's running counts, fed row by row in cursor order (no I/O here)."""

    def __init__(self, before: VenueTally | None = None) -> None:
        """A tally counting from the first row; ``before``: the one it replaces (after a
        quarantine), whose counters it goes on from, so they never fall."""
        self.cursor = 0  # the last row counted
        self.decisions: Counter[tuple[str, str, str, str]] = (
            Counter()
        )  # gate, kind, verdict, reason
        self.annulments: Counter[tuple[str, str]] = Counter()  # gate, kind of the row cancelled
        self.zones: dict[int | None, list[int]] = {}  # zone -> [entries, exits], live ones
        self.gates: dict[str, GateCounts] = {}
        self._annulled: set[int] = set()  # cursors of the rows already annulled
        self._oldest_minute = 0  # buckets before it are dropped (see prune)
        self._counted = 0  # rows up to this cursor are already in the counters
        if before is not None:
            self.decisions, self.annulments = before.decisions, before.annulments
            self._counted = before.cursor

    def add(self, row: VenueRow) -> None:
        """Count one stored row (rows come in cursor order)."""
        self.cursor = max(self.cursor, row.cursor)
        if row.kind == "annul":
            self._annul(row.annulled, count=row.cursor > self._counted)
            return
        verdict = "admit" if row.admitted else "deny"
        if row.cursor > self._counted:
            self.decisions[(row.gate_id, row.kind, verdict, row.reason)] += 1
        if row.admitted and row.kind in _PASSAGES:
            self._passage(row, 1)
        elif not row.admitted:
            self._gate(row.gate_id).denied[row.reason] += 1

    def prune(self, now: float) -> None:
        """Forget the minutes that left the window ending at ``now``."""
        self._oldest_minute = int(now // 60) - MINUTES + 1
        for counts in self.gates.values():
            for minute in [m for m in counts.minutes if m < self._oldest_minute]:
                del counts.minutes[minute]

    def per_minute(self, gate_id: str, now: float) -> list[int]:
        """Admissions at the gate in each minute of the last hour, oldest first."""
        first = int(now // 60) - MINUTES + 1
        minutes = self.gates[gate_id].minutes if gate_id in self.gates else {}
        return [minutes.get(first + i, 0) for i in range(MINUTES)]

    def _gate(self, gate_id: str) -> GateCounts:
        counts = self.gates.get(gate_id)
        if counts is None:
            counts = self.gates[gate_id] = GateCounts()
        return counts

    def _passage(self, row: VenueRow, sign: int) -> None:
        counts = self._gate(row.gate_id)
        zone = self.zones.setdefault(row.zone, [0, 0])
        if row.kind == "entry":
            counts.entries += sign
            zone[0] += sign
        else:
            counts.exits += sign
            zone[1] += sign
        minute = int(row.wall_time // 60)
        if minute >= self._oldest_minute:
            counts.minutes[minute] = counts.minutes.get(minute, 0) + sign

    def _annul(self, target: VenueRow | None, *, count: bool) -> None:
        # Only an admission is undone, and only once (a gate can annul only its own entries).
        if target is None or not target.admitted or target.kind not in _PASSAGES:
            return
        if target.cursor in self._annulled:
            return
        self._annulled.add(target.cursor)
        if count:
            self.annulments[(target.gate_id, target.kind)] += 1
        self._gate(target.gate_id).annulled += 1
        self._passage(target, -1)


class Venue:
    """One hub process's :class:`VenueTally`, following its store."""

    def __init__(self, store: HubStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._tally = VenueTally()
        self._set_apart: int | None = None  # the store's set-apart rows the tally knows of
        self._lock = asyncio.Lock()  # one reader at a time: rows are counted exactly once

    async def follow(self) -> VenueTally:
        """Count the rows stored since the last call (all of them the first time, and again
        after a quarantine set rows apart); return the tally. Raises HubStoreError."""
        async with self._lock:
            set_apart = await self._store.set_apart_rows()  # before the rows: a later one shows
            if set_apart != self._set_apart:
                self._tally, self._set_apart = VenueTally(self._tally), set_apart
            tally = self._tally
            while True:
                rows = await self._store.venue_rows(tally.cursor, PAGE)
                for row in rows:
                    tally.add(row)
                tally.prune(self._clock())
                if len(rows) < PAGE:
                    return tally


VENUE = web.AppKey("venue", Venue)


def view(
    venue: str, tally: VenueTally, gates: list[GateHealth], open_alerts: int, now: float
) -> dict[str, Any]:
    """The JSON of ``GET /v1/venue``: occupancy per zone, each gate's admissions per minute of the
    last hour, denials by reason and list version and age, and the open alerts."""
    zones = sorted(tally.zones.items(), key=lambda z: (z[0] is None, z[0] or 0))
    known = {g.gate_id: g for g in gates}
    ids = sorted(known.keys() | tally.gates.keys())
    return {
        "venue": venue,
        "now": now,
        "minute_start": (int(now // 60) - MINUTES + 1) * 60,  # the first minute's start
        "occupancy": sum(entries - exits for entries, exits in tally.zones.values()),
        "zones": [{"zone": z, "occupancy": e - x, "entries": e, "exits": x} for z, (e, x) in zones],
        "alerts_open": open_alerts,
        "gates": [_gate_view(i, known.get(i), tally, now) for i in ids],
    }


def list_age(gate: GateHealth, now: float) -> float | None:
    """The age of the gate's revocation list now, from its last heartbeat (None: never had one)."""
    if gate.revocation_age_s is None or gate.last_seen is None:
        return None
    return gate.revocation_age_s + max(0.0, now - gate.last_seen)


def _gate_view(
    gate_id: str, health: GateHealth | None, tally: VenueTally, now: float
) -> dict[str, Any]:
    counts = tally.gates.get(gate_id) or GateCounts()
    denied = sorted(counts.denied.items(), key=lambda rc: (-rc[1], rc[0]))
    heard = health is not None and health.last_seen is not None
    return {
        "gate_id": gate_id,
        "gate_name": health.gate_name if health is not None else gate_id,
        "online": health is not None and health.online,
        "entries": counts.entries,
        "exits": counts.exits,
        "annulled": counts.annulled,
        "per_minute": tally.per_minute(gate_id, now),
        "denied": [{"reason": r, "count": n} for r, n in denied],
        "list_version": health.revocation_version if heard and health else None,
        "list_age_s": list_age(health, now) if heard and health else None,
    }


async def venue_handler(request: web.Request) -> web.Response:
    """``GET /v1/venue`` (console token)."""
    hub = request.app[HUB]
    await console_caller(request, hub)
    tally = await request.app[VENUE].follow()
    now = hub.clock()
    gates = await hub.store.gates(now)
    body = view(hub.config.hub.venue, tally, gates, await hub.store.open_alerts(), now)
    data = json.dumps({"v": protocol.PROTOCOL_VERSION, **body}, separators=(",", ":"))
    return web.Response(text=data, content_type="application/json")
