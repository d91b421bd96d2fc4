"""The boot ids each gate's heartbeats came with, in the PostgreSQL hub store
(:mod:`sync.hub_twins`; the SQLite store's counterpart is :mod:`sync.hub_sqlite_boots`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from sync import hub_sql, hub_twins
from sync.hub_plan import NewAlert

if TYPE_CHECKING:  # asyncpg's classes are generic only in the stubs
    _Conn: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

_TOUCH, _COUNT, _FORGET, _ADD, _LATER, _NAME = (
    hub_sql.numbered(sql)
    for sql in (hub_twins.TOUCH, hub_twins.COUNT, hub_twins.FORGET_STALE, hub_twins.ADD,
                hub_twins.LATER, hub_twins.NAME)
)  # fmt: skip


async def note_boot(
    conn: _Conn, seen: hub_twins.Seen, insert_alert: Callable[[NewAlert], Awaitable[bool]]
) -> list[NewAlert]:
    """Note ``seen``'s boot id inside the caller's transaction; returns the alerts raised
    (``insert_alert`` stores one, False when its dedupe key was stored before)."""
    gate, boot, now = seen.gate_id, seen.boot_id, seen.now
    if rows(await conn.execute(_TOUCH, now, seen.address, gate, boot)) == 0:
        window = now - hub_twins.CHURN_WINDOW_S
        held, recent = await conn.fetchrow(_COUNT, window, gate) or (0, 0)
        if held >= hub_twins.MAX_BOOTS:
            held -= rows(await conn.execute(_FORGET, gate, gate, now - hub_twins.STALE_S))
        kept = held < hub_twins.MAX_BOOTS
        if kept:
            await conn.execute(_ADD, gate, boot, now, now, seen.address)
        seen = replace(seen, recent=int(recent) + 1, kept=kept)
    later = await conn.fetchrow(_LATER, gate, boot)
    seen = replace(seen, later=None if later is None else (later[0], later[1]))
    if not seen.alarming:
        return []
    name = await conn.fetchval(_NAME, gate)
    return [a for a in hub_twins.alerts(seen, name or gate) if await insert_alert(a)]


def rows(status: str) -> int:
    """The rows a statement's status names ("UPDATE 1", "INSERT 0 1")."""
    return int(status.rsplit(" ", 1)[-1])
