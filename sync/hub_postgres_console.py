"""The PostgreSQL hub store's console queries (:mod:`sync.hub_console_sql`) and its upgrade from
schema 2; :class:`sync.hub_postgres.PostgresHubStore` takes the queries in as a mixin."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg

from agent.redact import short_id
from sync import hub_claims, hub_quarantine, hub_schema, hub_sql
from sync import hub_console_sql as q
from sync.hub_console_sql import ActedAlert, Action, ActResult
from sync.hub_sql import numbered
from sync.hub_store import HubPolicy, check_limit
from sync.protocol import Alert, FeedEntry
from sync.protocol_console import TicketHistory

log = logging.getLogger(__name__)

_T = TypeVar("_T")
if TYPE_CHECKING:  # asyncpg's classes are generic only in the stubs
    _Conn: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

_TICKET_HISTORY = numbered(q.TICKET_HISTORY)
_TICKET_COUNT = numbered(q.TICKET_COUNT)
_HISTORY_COUNT = numbered(q.HISTORY_COUNT)
_REV_KEYS = numbered(q.REV_KEYS)
_KEY_SHORT_IDS = numbered(q.KEY_SHORT_IDS)
_RELEASES_AFTER = numbered(hub_quarantine.RELEASES_AFTER)
_CLAIMS_AFTER = numbered(hub_claims.CLAIMS_AFTER)
_CONTEXT = q.any_of(q.CONTEXT, "text")
_SET_APART_CONTEXT = q.any_of(q.SET_APART_CONTEXT, "text")
_CLAIMED_CONTEXT = q.any_of(q.CLAIMED_CONTEXT, "text")
_ACTIONS_OF = q.any_of(q.ACTIONS_OF, "bigint")
_NAMES_NOW = q.any_of(q.NAMES_NOW, "text")
_ALERT_EXISTS = numbered(q.ALERT_EXISTS) + " FOR UPDATE"  # one writer per alert at a time
_ACKED = numbered(q.ACKED)
_NOTE_COUNT = numbered(q.NOTE_COUNT)
_ASSIGNEE = numbered(q.ASSIGNEE)
_INSERT_ACTION = numbered(q.INSERT_ACTION)
_SET_SHORT_ID = numbered(q.SET_SHORT_ID)
_ACTIONS_TOP = numbered(hub_sql.ACTIONS_TOP)
_ACTED_ALERTS = numbered(hub_sql.ACTED_ALERTS)


class PostgresConsoleQueries:
    """The console's half of :class:`sync.hub_store.HubStore` on a PostgreSQL pool."""

    if TYPE_CHECKING:
        _lock_key: int  # the venue's advisory lock (sync.hub_postgres)

        async def _run(self, job: Callable[[_Conn], Awaitable[_T]]) -> _T: ...

        @property
        def policy(self) -> HubPolicy: ...

    async def alert_details(self, alerts: Sequence[Alert]) -> list[Alert]:
        """``alerts`` with their entries' context and workflow. Raises HubStoreError."""
        if not alerts:
            return []
        ids, gates = q.entry_ids(alerts), q.gate_ids(alerts)
        alert_ids = [a.alert_id for a in alerts]

        async def job(conn: _Conn) -> list[Alert]:
            context = [*await conn.fetch(_CLAIMED_CONTEXT, ids), *await conn.fetch(_CONTEXT, ids),
                       *await conn.fetch(_SET_APART_CONTEXT, ids)]  # fmt: skip
            actions = await conn.fetch(_ACTIONS_OF, alert_ids)
            names = await conn.fetch(_NAMES_NOW, gates)
            return q.with_details(alerts, context, actions, names)

        return await self._run(job)

    async def act_on_alert(
        self, alert_id: int, action: Action, actor: str, value: str, now: float
    ) -> ActResult:
        """Record an acknowledgement, assignment or note. Raises HubStoreError."""

        async def job(conn: _Conn) -> ActResult:
            async with conn.transaction():
                # The venue's lock, as an ingest's hub notes take it: action ids commit in the
                # order they are taken, so a follower's cursor passes none still uncommitted.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
                exists = await conn.fetchval(_ALERT_EXISTS, alert_id) is not None
                acked = await conn.fetchval(_ACKED, alert_id) is not None
                notes = await conn.fetchval(_NOTE_COUNT, alert_id)
                assignee = await conn.fetchval(_ASSIGNEE, alert_id) or ""
                result = q.act_result(exists, action, acked, int(notes), assignee, value)
                if result is None:
                    await conn.execute(_INSERT_ACTION, alert_id, action, actor, value, now)
                return result or "done"

        return await self._run(job)

    async def open_alerts(self) -> int:
        """How many alerts nobody acknowledged. Raises HubStoreError."""
        return int(await self._run(lambda conn: conn.fetchval(q.OPEN_ALERTS)))

    async def last_alert_action(self) -> int:
        """See :class:`HubStore`. Raises HubStoreError."""
        return int(await self._run(lambda conn: conn.fetchval(hub_sql.TOP_ACTION)))

    async def acted_alerts(self, after: int, limit: int) -> tuple[list[ActedAlert], int]:
        """See :class:`HubStore`. Raises HubStoreError."""
        check_limit(limit)

        async def job(conn: _Conn) -> tuple[list[Any], int]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                top = int(await conn.fetchval(_ACTIONS_TOP, after, after, limit))
                return await conn.fetch(_ACTED_ALERTS, after, top), top

        rows, top = await self._run(job)
        return [hub_sql.acted_alert(row, self.policy.venue) for row in rows], top

    async def ticket_history(self, short: str, limit: int) -> TicketHistory:
        """The history of the ticket(s) with this short id. Raises HubStoreError."""
        check_limit(limit)

        async def job(conn: _Conn) -> TicketHistory:
            ahead = self.policy.max_clock_ahead_s
            rows = await conn.fetch(_TICKET_HISTORY, short, short, short, ahead, ahead, limit + 1)
            counts = await conn.fetchrow(_HISTORY_COUNT, short, short, short)  # one row
            assert counts is not None
            return q.history(short, (counts[0], counts[1]), rows, limit)

        return await self._run(job)

    async def claims(self, after: int, limit: int) -> tuple[list[FeedEntry], int]:
        """See :class:`HubStore`. Raises HubStoreError."""
        check_limit(limit)
        ahead = self.policy.max_clock_ahead_s

        async def job(conn: _Conn) -> tuple[list[FeedEntry], int]:
            rows = await conn.fetch(_CLAIMS_AFTER, after, limit)
            top = await conn.fetchval(hub_claims.TOP_CLAIM)
            return hub_claims.claims_page(rows, after, int(top), ahead)

        return await self._run(job)

    async def set_apart_releases(self, after: str, limit: int) -> tuple[int, tuple[str, ...]]:
        """See :class:`HubStore`. Raises HubStoreError."""

        async def job(conn: _Conn) -> tuple[int, tuple[str, ...]]:
            total = await conn.fetchval(hub_quarantine.RELEASES_TOTAL)
            rows = await conn.fetch(_RELEASES_AFTER, after, limit)
            return int(total), tuple(row[0] for row in rows)

        return await self._run(job)

    async def short_ids_with_key(self, rev_key: str) -> tuple[str, ...]:
        """The short ids of rows uploaded with this revocation key. Raises HubStoreError."""

        async def job(conn: _Conn) -> tuple[str, ...]:
            return tuple(row[0] for row in await conn.fetch(_KEY_SHORT_IDS, rev_key, rev_key))

        return await self._run(job)

    async def revocation_keys(self, short: str) -> tuple[int, tuple[tuple[str, str], ...]]:
        """How many tickets have this short id, and the (revocation key, gate) pairs uploaded
        with their rows (at most 65). Raises HubStoreError."""

        async def job(conn: _Conn) -> tuple[int, tuple[tuple[str, str], ...]]:
            tickets = await conn.fetchval(_TICKET_COUNT, short)
            keys = tuple((row[0], row[1]) for row in await conn.fetch(_REV_KEYS, short))
            return int(tickets), keys

        return await self._run(job)


async def upgrade_2_to_3(conn: _Conn, where: str, schema: str) -> None:
    """Add the short ids (filled in ticket by ticket) and the alert workflow's table, inside the
    caller's transaction."""
    await conn.execute(hub_schema.POSTGRES_2_TO_3)
    refs = [r[0] for r in await conn.fetch(q.DISTINCT_REFS)]
    rows: list[tuple[Any, ...]] = [(short_id(ref), ref) for ref in refs]
    if rows:
        await conn.executemany(_SET_SHORT_ID, rows)
    await conn.execute(hub_schema.SHORT_ID_INDEX)
    await conn.execute("UPDATE hub_meta SET value = $1 WHERE key = 'schema'", schema)
    log.warning(
        "hub store %s: schema upgraded to %s (ticket search by short id over %d tickets,"
        " the alert workflow)",
        where,
        schema,
        len(refs),
    )
