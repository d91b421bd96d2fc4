"""The runs each gate's heartbeats came from, in the PostgreSQL hub store (:mod:`sync.hub_twins`;
the SQLite store's counterpart is :mod:`sync.hub_sqlite_runs`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from agent.redact import NO_RUN
from sync import hub_sql, hub_twins
from sync.hub_plan import NewAlert

if TYPE_CHECKING:  # asyncpg's classes are generic only in the stubs
    _Conn: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

_TOUCH, _COUNT, _FORGET, _ADD, _FORGET_KEYLESS, _LATER, _NAME = (
    hub_sql.numbered(sql)
    for sql in (hub_twins.TOUCH, hub_twins.COUNT, hub_twins.FORGET_STALE, hub_twins.ADD,
                hub_twins.FORGET_KEYLESS, hub_twins.LATER, hub_twins.NAME)
)  # fmt: skip


async def note_run(
    conn: _Conn, seen: hub_twins.Seen, insert_alert: Callable[[NewAlert], Awaitable[bool]]
) -> list[NewAlert]:
    """Note ``seen``'s run inside the caller's transaction; returns the alerts raised
    (``insert_alert`` stores one, False when its dedupe key was stored before)."""
    gate, run, now = seen.gate_id, seen.run_id, seen.now
    if hub_sql.status_rows(await conn.execute(_TOUCH, now, seen.address, gate, run)) == 0:
        window = now - hub_twins.CHURN_WINDOW_S
        held, recent = await conn.fetchrow(_COUNT, window, gate) or (0, 0)
        if held >= hub_twins.MAX_RUNS:
            stale = now - hub_twins.STALE_S
            held -= hub_sql.status_rows(await conn.execute(_FORGET, gate, gate, stale))
        kept = held < hub_twins.MAX_RUNS
        added = kept and hub_sql.status_rows(
            await conn.execute(_ADD, gate, run, now, now, seen.address)
        )
        if added and run != NO_RUN:
            await conn.execute(_FORGET_KEYLESS, gate, NO_RUN)
        seen = replace(seen, recent=int(recent) + 1, kept=kept)
    later = await conn.fetchrow(_LATER, gate, run)
    seen = replace(seen, later=None if later is None else (later[0], later[1]))
    if not seen.alarming:
        return []
    name = await conn.fetchval(_NAME, gate)
    return [a for a in hub_twins.alerts(seen, name or gate) if await insert_alert(a)]
