"""The runs each gate's heartbeats came from, in the SQLite hub store (:mod:`sync.hub_twins`;
the PostgreSQL store's counterpart is :mod:`sync.hub_postgres_runs`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace

from agent.redact import NO_RUN
from sync import hub_twins
from sync.hub_plan import NewAlert


def note_run(
    db: sqlite3.Connection, seen: hub_twins.Seen, insert_alert: Callable[[NewAlert], bool]
) -> list[NewAlert]:
    """Note ``seen``'s run inside the caller's transaction; returns the alerts raised
    (``insert_alert`` stores one, False when its dedupe key was stored before)."""
    gate, run, now = seen.gate_id, seen.run_id, seen.now
    if not db.execute(hub_twins.TOUCH, (now, seen.address, gate, run)).rowcount:
        window = now - hub_twins.CHURN_WINDOW_S
        held, recent = db.execute(hub_twins.COUNT, (window, gate)).fetchone()
        if held >= hub_twins.MAX_RUNS:
            stale = (gate, gate, now - hub_twins.STALE_S)
            held -= db.execute(hub_twins.FORGET_STALE, stale).rowcount
        kept = held < hub_twins.MAX_RUNS
        added = kept and db.execute(hub_twins.ADD, (gate, run, now, now, seen.address)).rowcount
        if added and run != NO_RUN:
            db.execute(hub_twins.FORGET_KEYLESS, (gate, NO_RUN))
        seen = replace(seen, recent=int(recent) + 1, kept=kept)
    later = db.execute(hub_twins.LATER, (gate, run)).fetchone()
    seen = replace(seen, later=None if later is None else (later[0], later[1]))
    if not seen.alarming:
        return []
    name = db.execute(hub_twins.NAME, (gate,)).fetchone()
    return [
        a for a in hub_twins.alerts(seen, name[0] if name and name[0] else gate) if insert_alert(a)
    ]
