"""What the PostgreSQL hub store reads about an upload inside its venue-locked transaction: the
rows it already holds, the gate's gate_seqs, the tickets' histories, the gates' names, the
annulments' targets and the alert budget used (:class:`sync.hub_rules.KnownState`, what the
shared planner decides on). The SQLite store's counterpart is :mod:`sync.hub_sqlite_known`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from sync import hub_annul, hub_rules, hub_sql
from sync.hub_budget import budget_since
from sync.hub_plan import TICKET_COLUMNS, TicketRow
from sync.hub_rules import KnownState
from sync.hub_sql import ENTRY_FIELDS
from sync.hub_store import HubPolicy
from sync.protocol import EntryWire

if TYPE_CHECKING:  # asyncpg's classes are generic only in the stubs
    _Conn: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

_MAX_SEQ = hub_sql.numbered(hub_sql.MAX_SEQ)
_LAST_ROW_TIME = hub_sql.numbered(hub_sql.LAST_ROW_TIME)
_BUDGET_USED = hub_sql.numbered(hub_sql.BUDGET_USED)
_RUN_BEFORE = hub_sql.numbered(hub_sql.RUN_BEFORE)
_SEEN_BOOT = hub_sql.numbered(hub_sql.SEEN_BOOT)


# Of each ticket, each gate's last MAX_TICKET_HISTORY entries, exits and annulments to arrive,
# and of each gate's last MAX_TICKET_HISTORY attempts those in the batch's window: a flood from
# one gate pushes out only its own rows. The ticket's gates are found by stepping through the
# (ticket_ref, kind = 'attempt', gate_id, cursor) index, and of each gate's part no more of it
# is read.
_PART = "ticket_ref = {}.ref AND (kind = 'attempt') = {}.attempt"
_HISTORY = (
    "WITH RECURSIVE g(ref, attempt, gate) AS ("
    f" SELECT r.ref, k.attempt, (SELECT min(gate_id) FROM entries WHERE {_PART.format('r', 'k')})"
    " FROM unnest($1::text[]) AS r(ref), (VALUES (false), (true)) AS k(attempt)"
    " UNION ALL SELECT g.ref, g.attempt, (SELECT min(gate_id) FROM entries"
    f" WHERE {_PART.format('g', 'g')} AND gate_id > g.gate) FROM g WHERE g.gate IS NOT NULL)"
    f" SELECT {', '.join('e.' + c for c in TICKET_COLUMNS)} FROM g CROSS JOIN LATERAL"
    f" (SELECT cursor FROM entries WHERE {_PART.format('g', 'g')} AND gate_id = g.gate"
    f" ORDER BY cursor DESC LIMIT {hub_rules.MAX_TICKET_HISTORY}) AS last"
    " JOIN entries e ON e.cursor = last.cursor WHERE g.gate IS NOT NULL"
    " AND (e.kind <> 'attempt' OR e.wall_time BETWEEN $2 AND $3"
    " OR e.received_at BETWEEN $4 AND $5)"
)


async def known(
    conn: _Conn, gate_id: str, entries: Sequence[EntryWire], policy: HubPolicy, now: float
) -> KnownState:
    """What the database holds about this batch (see :class:`sync.hub_rules.KnownState`)."""
    ids = [e.entry_id for e in entries]
    sql = f"SELECT {', '.join(ENTRY_FIELDS)} FROM entries WHERE entry_id = ANY($1::text[])"
    stored = {e.entry_id: e for e in map(hub_sql.entry_from_row, await conn.fetch(sql, ids))}
    # The range bounds the index scan (= ANY on the index's second column alone would not).
    sql = (
        "SELECT gate_seq, entry_id FROM entries WHERE gate_id = $1 AND gate_seq BETWEEN $2 AND $3"
        " AND gate_seq = ANY($4::bigint[])"
    )
    seqs = [e.gate_seq for e in entries]
    owners = {r[0]: r[1] for r in await conn.fetch(sql, gate_id, seqs[0], seqs[-1], seqs)}
    max_seq = await conn.fetchval(_MAX_SEQ, gate_id)
    history: dict[str, list[TicketRow]] = {}
    refs = hub_rules.history_refs(entries, stored, policy)
    if refs:
        lo, hi = hub_rules.attempt_span(entries, policy, now)
        ahead = policy.max_clock_ahead_s
        for row in await conn.fetch(_HISTORY, refs, lo, hi, lo - ahead, hi - ahead):
            ref, ticket_row = TicketRow.from_row(row, policy.max_clock_ahead_s)
            history.setdefault(ref, []).append(ticket_row)
    sql = "SELECT gate_id, gate_name FROM gates WHERE gate_id = ANY($1::text[])"
    gate_ids = hub_rules.gates_to_name(gate_id, history, stored)
    names = {r[0]: r[1] for r in await conn.fetch(sql, gate_ids) if r[1]}
    targets: dict[str, hub_annul.Target] = {}
    if wanted := hub_annul.annul_targets(entries, stored):
        sql = f"SELECT {hub_annul.TARGET_COLUMNS} FROM entries WHERE entry_id = ANY($1::text[])"
        targets = {r[0]: hub_annul.Target(*r[1:]) for r in await conn.fetch(sql, wanted)}
    first = hub_annul.first_new(entries, stored)
    before = None
    if first is not None:
        below = await conn.fetchrow(_RUN_BEFORE, gate_id, first)
        before = hub_sql.run_mark(None if below is None else tuple(below))
    seen = frozenset(
        [b for b in hub_annul.boots_to_ask(entries, before)
         if await conn.fetchval(_SEEN_BOOT, gate_id, b)]
    )  # fmt: skip
    count = await conn.fetchval(_BUDGET_USED, gate_id, budget_since(now, policy))
    last = await conn.fetchrow(_LAST_ROW_TIME, gate_id)
    return KnownState(
        stored, owners, int(max_seq), history, names, targets, int(count),
        last_hlc=hub_sql.last_hlc(None if last is None else tuple(last), policy.max_clock_ahead_s),
        run_before=before, seen_boots=seen,
    )  # fmt: skip


async def again(
    conn: _Conn,
    plan: hub_rules.IngestPlan,
    gate_id: str,
    entries: Sequence[EntryWire],
    known: KnownState,
    policy: HubPolicy,
    now: float,
) -> hub_rules.IngestPlan:
    """``plan`` again for a refused batch (it spends no rows) whose alerts (``plan.candidates``)
    were raised before: they take no alert budget (:func:`sync.hub_rules.planned_again`)."""
    if not plan.candidates:
        return plan
    sql = "SELECT dedupe_key FROM alerts WHERE dedupe_key = ANY($1::text[])"
    raised = frozenset(r[0] for r in await conn.fetch(sql, list(plan.candidates)))
    return hub_rules.planned_again(plan, raised, gate_id, entries, known, policy, now)
