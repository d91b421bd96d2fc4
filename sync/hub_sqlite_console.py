"""The SQLite hub store's console queries (:mod:`sync.hub_console_sql`) and its schema upgrades;
:class:`sync.hub_sqlite.SQLiteHubStore` takes the queries in as a mixin."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agent.redact import short_id
from sync import hub_claims, hub_quarantine, hub_schema, hub_sql
from sync import hub_console_sql as q
from sync.hub_console_sql import ActedAlert, Action, ActResult
from sync.hub_store import HubPolicy, check_limit
from sync.protocol import Alert, FeedEntry
from sync.protocol_console import TicketHistory

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_CHUNK = 500  # values per IN (...) list


class SQLiteConsoleQueries:
    """The console's half of :class:`sync.hub_store.HubStore` on one SQLite connection."""

    if TYPE_CHECKING:

        async def _run(self, job: Callable[[sqlite3.Connection], _T]) -> _T: ...

        @property
        def policy(self) -> HubPolicy: ...

    async def alert_details(self, alerts: Sequence[Alert]) -> list[Alert]:
        """``alerts`` with their entries' context and workflow. Raises HubStoreError."""
        if not alerts:
            return []
        ids, gates = q.entry_ids(alerts), q.gate_ids(alerts)
        alert_ids = [a.alert_id for a in alerts]

        def job(db: sqlite3.Connection) -> list[Alert]:
            context = [*_select_in(db, q.CLAIMED_CONTEXT, ids), *_select_in(db, q.CONTEXT, ids),
                       *_select_in(db, q.SET_APART_CONTEXT, ids)]  # fmt: skip
            actions = _select_in(db, q.ACTIONS_OF, alert_ids)
            actions.sort(key=lambda r: r[-1])  # chunks: back to the order they were taken in
            names = _select_in(db, q.NAMES_NOW, gates)
            return q.with_details(alerts, context, actions, names)

        return await self._run(job)

    async def act_on_alert(
        self, alert_id: int, action: Action, actor: str, value: str, now: float
    ) -> ActResult:
        """Record an acknowledgement, assignment or note. Raises HubStoreError."""
        return await self._run(lambda db: _act(db, alert_id, action, actor, value, now))

    async def open_alerts(self) -> int:
        """How many alerts nobody acknowledged. Raises HubStoreError."""
        return int(await self._run(lambda db: db.execute(q.OPEN_ALERTS).fetchone()[0]))

    async def last_alert_action(self) -> int:
        """See :class:`HubStore`. Raises HubStoreError."""
        return int(await self._run(lambda db: db.execute(hub_sql.TOP_ACTION).fetchone()[0]))

    async def acted_alerts(self, after: int, limit: int) -> tuple[list[ActedAlert], int]:
        """See :class:`HubStore`. Raises HubStoreError."""
        check_limit(limit)

        def job(db: sqlite3.Connection) -> tuple[list[Any], int]:
            (top,) = db.execute(hub_sql.ACTIONS_TOP, (after, after, limit)).fetchone()
            return db.execute(hub_sql.ACTED_ALERTS, (after, top)).fetchall(), int(top)

        rows, top = await self._run(job)
        return [hub_sql.acted_alert(row, self.policy.venue, json.loads) for row in rows], top

    async def ticket_history(self, short: str, limit: int) -> TicketHistory:
        """The history of the ticket(s) with this short id. Raises HubStoreError."""
        check_limit(limit)

        def job(db: sqlite3.Connection) -> TicketHistory:
            ahead = self.policy.max_clock_ahead_s
            args = (short, short, short, ahead, ahead, limit + 1)
            rows = db.execute(q.TICKET_HISTORY, args).fetchall()
            tickets, total = db.execute(q.HISTORY_COUNT, (short, short, short)).fetchone()
            return q.history(short, (tickets, total), rows, limit)

        return await self._run(job)

    async def claims(self, after: int, limit: int) -> tuple[list[FeedEntry], int]:
        """See :class:`HubStore`. Raises HubStoreError."""
        check_limit(limit)
        ahead = self.policy.max_clock_ahead_s

        def job(db: sqlite3.Connection) -> tuple[list[FeedEntry], int]:
            rows = db.execute(hub_claims.CLAIMS_AFTER, (after, limit)).fetchall()
            (top,) = db.execute(hub_claims.TOP_CLAIM).fetchone()
            return hub_claims.claims_page(rows, after, int(top), ahead)

        return await self._run(job)

    async def set_apart_releases(self, after: str, limit: int) -> tuple[int, tuple[str, ...]]:
        """See :class:`HubStore`. Raises HubStoreError."""

        def job(db: sqlite3.Connection) -> tuple[int, tuple[str, ...]]:
            (total,) = db.execute(hub_quarantine.RELEASES_TOTAL).fetchone()
            rows = db.execute(hub_quarantine.RELEASES_AFTER, (after, limit)).fetchall()
            return int(total), tuple(row[0] for row in rows)

        return await self._run(job)

    async def short_ids_with_key(self, rev_key: str) -> tuple[str, ...]:
        """The short ids of rows uploaded with this revocation key. Raises HubStoreError."""
        return await self._run(
            lambda db: tuple(row[0] for row in db.execute(q.KEY_SHORT_IDS, (rev_key, rev_key)))
        )

    async def revocation_keys(self, short: str) -> tuple[int, tuple[tuple[str, str], ...]]:
        """How many tickets have this short id, and the (revocation key, gate) pairs uploaded
        with their rows (at most 65). Raises HubStoreError."""

        def job(db: sqlite3.Connection) -> tuple[int, tuple[tuple[str, str], ...]]:
            tickets, _ = db.execute(q.TICKET_COUNT, (short,)).fetchone()
            keys = tuple((row[0], row[1]) for row in db.execute(q.REV_KEYS, (short,)))
            return int(tickets), keys

        return await self._run(job)


def _select_in(db: sqlite3.Connection, sql: str, values: Sequence[Any]) -> list[Any]:
    rows: list[Any] = []
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        rows.extend(db.execute(sql.format(", ".join("?" * len(chunk))), tuple(chunk)).fetchall())
    return rows


def _act(
    db: sqlite3.Connection, alert_id: int, action: Action, actor: str, value: str, now: float
) -> ActResult:
    db.execute("BEGIN IMMEDIATE")
    try:
        exists = db.execute(q.ALERT_EXISTS, (alert_id,)).fetchone() is not None
        acked = db.execute(q.ACKED, (alert_id,)).fetchone() is not None
        (notes,) = db.execute(q.NOTE_COUNT, (alert_id,)).fetchone()
        assignee = db.execute(q.ASSIGNEE, (alert_id,)).fetchone()
        result = q.act_result(exists, action, acked, int(notes), (assignee or ("",))[0], value)
        if result is None:
            db.execute(q.INSERT_ACTION, (alert_id, action, actor, value, now))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result or "done"


def upgrade(db: sqlite3.Connection, path: Path, version: int) -> None:
    """Bring a schema 1 or 2 store to 3, each step in one transaction. Raises sqlite3.Error."""
    if version == 1:
        db.executescript(
            f"BEGIN IMMEDIATE;{hub_schema.SQLITE_1_TO_2}PRAGMA user_version = 2;COMMIT;"
        )
        log.warning(
            "hub store %s: schema upgraded to version 2; gate names, which gates chose for"
            " themselves before, are reset: name each gate with `gate-agent hub token --gate ID"
            " --name NAME`",
            path,
        )
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in hub_schema.SQLITE_2_TO_3.split(";"):
            if statement.strip():
                db.execute(statement)
        refs = [ref for (ref,) in db.execute(q.DISTINCT_REFS)]
        db.executemany(q.SET_SHORT_ID, ((short_id(ref), ref) for ref in refs))
        db.execute(hub_schema.SHORT_ID_INDEX)
        db.execute("PRAGMA user_version = 3")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    log.warning(
        "hub store %s: schema upgraded to version 3 (ticket search by short id over %d tickets,"
        " the alert workflow)",
        path,
        len(refs),
    )
