"""What the venue promised, checked after a schedule against the files and the hub's store.

1. every decision a gate journalled is at the hub exactly once, with the same body;
2. every gate's ``gate_seq`` is gap-free at the hub (and in its journal);
3. relay pulses match journalled admissions (a pulse for each, in the lane's direction; an
   admission without its pulse only when the gate was killed right after deciding it);
4. a single-entry ticket admitted more than once: each later admission at another gate, which
   could not have known of each earlier one (see :func:`known_at`: the earlier row not yet at the
   hub, or the hub, its database, the later gate or its link down, or within the feed's delay),
   and exactly one double_admission alert per later admission;
5. no admission of a ticket at a revocation list version that revokes it;
6. every journal passes its integrity check (``Journal.check``).
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from agent.clock import Clock
from agent.journal import Journal
from agent.redact import short_id
from tests.chaos.schedule import Timeline
from tests.chaos.venue import BACKOFF_CAP_S, LANES, GateProc, Venue

FEED_BOUND_S = 2.0 + BACKOFF_CAP_S  # a healthy path carries a row from gate to gate within this
KILL_GRACE_S = 2.0  # an admission journalled this long before a kill -9 may lack its pulse
J_COLUMNS = "entry_id, gate_seq, lane, ticket_ref, kind, verdict, annuls, mono_ns, rev_version"
H_COLUMNS = "entry_id, gate_id, gate_seq, ticket_ref, kind, verdict, annuls, received_at, hlc"


@dataclass
class Facts:
    journals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    journal_problems: dict[str, list[str]] = field(default_factory=dict)
    pulses: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (gate, lane) -> ids
    hub_rows: list[dict[str, Any]] = field(default_factory=list)  # + "at": monotonic arrival
    alerts: list[dict[str, Any]] = field(default_factory=list)


def _journal_rows(gate: GateProc) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{gate.state / 'journal.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT {J_COLUMNS} FROM entries ORDER BY gate_seq")]
    finally:
        db.close()


async def _journal_problems(gate: GateProc) -> list[str]:
    journal = await Journal.open(
        gate.state / "journal.db", gate_id=gate.id, gate_name=gate.name,
        clock=Clock(None, assume="synced"),
    )  # fmt: skip
    try:
        return await journal.check()
    finally:
        await journal.close()


async def _hub(venue: Venue) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    alerts_sql = "SELECT kind, ticket, entries FROM alerts ORDER BY alert_id"
    rows_sql = f"SELECT {H_COLUMNS} FROM entries ORDER BY cursor"
    if venue.store is not None:
        conn = await asyncpg.connect(venue.store)
        try:
            rows = [dict(r) for r in await conn.fetch(rows_sql)]
            alerts = [dict(r) for r in await conn.fetch(alerts_sql)]
        finally:
            await conn.close()
        return rows, [a | {"entries": list(a["entries"])} for a in alerts]
    db = sqlite3.connect(f"file:{venue.setup.dir / 'state' / 'hub.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in db.execute(rows_sql)]
        alerts = [dict(r) for r in db.execute(alerts_sql)]
    finally:
        db.close()
    return rows, [a | {"entries": json.loads(a["entries"])} for a in alerts]


async def gather(venue: Venue, wall_minus_mono: float) -> Facts:
    """Read everything (the gates and the hub stopped); ``wall_minus_mono`` maps the hub's wall
    clock onto the monotonic clock of the journals and the timeline."""
    facts = Facts()
    for gate_id, gate in venue.gates.items():
        facts.journals[gate_id] = _journal_rows(gate)
        facts.journal_problems[gate_id] = await _journal_problems(gate)
        for lane in LANES:
            path = gate.pulses[lane]
            lines = path.read_text().splitlines() if path.exists() else []
            facts.pulses[(gate_id, lane)] = [line.split()[3] for line in lines]
    rows, facts.alerts = await _hub(venue)
    facts.hub_rows = [r | {"at": float(r["received_at"]) - wall_minus_mono} for r in rows]
    return facts


def known_at(timeline: Timeline, b: str, t: float) -> float:
    """The earliest time gate ``b`` could have known of a row the hub stored at ``t``: the path
    hub (-> PostgreSQL) -> relay -> b up for FEED_BOUND_S (plus twice the slowest delay on b's
    link) without a break. Before the hub has the row, no other gate can know of it."""
    slow = [w.size for w in timeline.windows if w.what == f"slow:{b}"]
    bound = FEED_BOUND_S + 2 * max(slow, default=0.0)
    names = {f"gate:{b}", f"link:{b}", "hub", "pg"}
    outages = [w for w in timeline.windows if w.what in names]
    tau = t
    while True:
        hit = [w for w in outages if w.start <= tau + bound and w.end > tau]
        if not hit:
            return tau + bound
        tau = max(w.end for w in hit)


def check(facts: Facts, timeline: Timeline, revoked: dict[str, int]) -> list[str]:
    """Every violation found, one line each (empty: all invariants held)."""
    out: list[str] = []
    out += _delivery(facts)
    out += _pulses(facts, timeline)
    out += _double_admissions(facts, timeline)
    out += _revocations(facts, revoked)
    for gate_id, problems in facts.journal_problems.items():
        out += [f"journal of {gate_id} fails its check: {p}" for p in problems]
    return out


def _delivery(facts: Facts) -> list[str]:
    out = []
    at_hub: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in facts.hub_rows:
        at_hub[row["entry_id"]].append(row)
    for gate_id, rows in facts.journals.items():
        for row in rows:
            copies = at_hub.get(row["entry_id"], [])
            if len(copies) != 1:
                out.append(f"{gate_id} gate_seq {row['gate_seq']}: {len(copies)} copies at the hub")
                continue
            hub = copies[0]
            same = all(hub[k] == row[k] for k in ("gate_seq", "ticket_ref", "kind", "verdict"))
            if hub["gate_id"] != gate_id or not same:
                out.append(f"{gate_id} gate_seq {row['gate_seq']}: the hub holds another body")
        seqs = [r["gate_seq"] for r in rows]
        if seqs != list(range(1, len(seqs) + 1)):
            out.append(f"{gate_id}: gate_seq has holes in its journal")
        hub_seqs = sorted(r["gate_seq"] for r in facts.hub_rows if r["gate_id"] == gate_id)
        if hub_seqs != list(range(1, len(hub_seqs) + 1)):
            out.append(f"{gate_id}: gate_seq has holes at the hub ({len(hub_seqs)} rows)")
        if len(hub_seqs) != len(seqs):
            out.append(f"{gate_id}: {len(seqs)} rows journalled, {len(hub_seqs)} at the hub")
    return out


def _pulses(facts: Facts, timeline: Timeline) -> list[str]:
    out = []
    for gate_id, rows in facts.journals.items():
        kills = [w.start for w in timeline.windows if w.what == f"kill:{gate_id}"]
        for lane, direction in LANES.items():
            pulses = facts.pulses[(gate_id, lane)]
            admitted = {
                r["entry_id"]: r for r in rows
                if r["lane"] == lane and r["kind"] == direction and r["verdict"] == "admit"
            }  # fmt: skip
            if len(set(pulses)) != len(pulses):
                out.append(f"{gate_id}/{lane}: an admission pulsed twice")
            stray = [p for p in pulses if p not in admitted]
            if stray:
                out.append(f"{gate_id}/{lane}: {len(stray)} pulses without a journalled admission")
            for entry_id, row in admitted.items():
                if entry_id in pulses:
                    continue
                t = row["mono_ns"] / 1e9
                if not any(t <= k <= t + KILL_GRACE_S for k in kills):
                    out.append(f"{gate_id}/{lane} gate_seq {row['gate_seq']}: admitted, no pulse")
    return out


def _live_entries(facts: Facts) -> dict[str, list[dict[str, Any]]]:
    mono = {r["entry_id"]: r["mono_ns"] for rows in facts.journals.values() for r in rows}
    annulled = {
        (r["gate_id"], r["annuls"]) for r in facts.hub_rows if r["kind"] == "annul" and r["annuls"]
    }
    live: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in facts.hub_rows:
        admission = r["kind"] == "entry" and r["verdict"] == "admit"
        if admission and (r["gate_id"], r["entry_id"]) not in annulled and r["entry_id"] in mono:
            live[r["ticket_ref"]].append(r | {"t": mono[r["entry_id"]] / 1e9})
    return live


def _double_admissions(facts: Facts, timeline: Timeline) -> list[str]:
    out = []
    doubles: dict[str, list[Sequence[str]]] = defaultdict(list)
    for alert in facts.alerts:
        if alert["kind"] == "double_admission":
            doubles[alert["ticket"]].append(alert["entries"])
    for ref, entries in _live_entries(facts).items():
        sid = short_id(ref)
        entries.sort(key=lambda r: r["t"])
        for i, later in enumerate(entries[1:], 1):
            for earlier in entries[:i]:
                a, b = earlier["gate_id"], later["gate_id"]
                known = known_at(timeline, b, earlier["at"])
                if a == b or later["t"] >= known:
                    t1, t2, t0 = earlier["t"], later["t"], timeline.t0
                    out.append(
                        f"ticket {sid} admitted at {a} ({t1 - t0:.2f}s, at the hub"
                        f" {earlier['at'] - t0:.2f}s) and at {b} ({t2 - t0:.2f}s), which could"
                        f" have known from {known - t0:.2f}s"
                    )
        alerts = doubles.pop(sid, [])
        ids = {r["entry_id"] for r in entries}
        if len(alerts) != len(entries) - 1 or any(not set(e) <= ids for e in alerts):
            out.append(f"ticket {sid}: {len(entries)} admissions, {len(alerts)} double alerts")
        elif len({tuple(e)[-1] for e in alerts}) != len(alerts):
            out.append(f"ticket {sid}: one admission alerted twice")
    for sid, alerts in doubles.items():
        out.append(f"ticket {sid}: {len(alerts)} double alerts without two live admissions")
    return out


def _revocations(facts: Facts, revoked: dict[str, int]) -> list[str]:
    out = []
    for gate_id, rows in facts.journals.items():
        for r in rows:
            version = revoked.get(r["ticket_ref"])
            if version is not None and r["verdict"] == "admit" and r["rev_version"] >= version:
                out.append(
                    f"{gate_id} gate_seq {r['gate_seq']}: ticket {short_id(r['ticket_ref'])}"
                    f" admitted at list version {r['rev_version']}, revoked in {version}"
                )
    return out


def max_latency(facts: Facts) -> float:
    """The longest time from an admission to its row's arrival at the hub, in seconds."""
    mono = {r["entry_id"]: r["mono_ns"] for rows in facts.journals.values() for r in rows}
    worst = 0.0
    for r in facts.hub_rows:
        if r["verdict"] == "admit" and r["entry_id"] in mono:
            worst = max(worst, r["at"] - mono[r["entry_id"]] / 1e9)
    return worst
