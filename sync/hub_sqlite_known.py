"""What the SQLite hub store reads about an upload inside its transaction: the rows it already
holds, the tickets' histories, the gates' names, the alert budget used
(:class:`sync.hub_rules.KnownState`, what the shared planner decides on), and when a gate's
rows last arrived (the upload quota's starting point)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sync import hub_annul, hub_rules, hub_sql
from sync.hub_budget import budget_since
from sync.hub_plan import TICKET_COLUMNS, TicketRow
from sync.hub_rules import KnownState
from sync.hub_sql import ENTRY_FIELDS
from sync.hub_store import HubPolicy
from sync.protocol import EntryWire

_CHUNK = 500  # values per IN (...) list


# Of each ticket, each gate's last MAX_TICKET_HISTORY entries, exits and annulments to arrive,
# and of each gate's last MAX_TICKET_HISTORY attempts those in the batch's window: a flood from
# one gate pushes out only its own rows. The (ticket_ref, kind = 'attempt', gate_id) index holds
# each gate's part in cursor (rowid) order, so no more of it is walked, and the ticket's gates
# are found by stepping through it (g0: gates with entries, exits or annulments; g1: attempts),
# from the refs with any row (most of a batch's tickets are new: one probe for them, not two;
# three for a ticket with rows).
def _history_sql() -> str:
    def part(flag: int, refs: str = "") -> str:
        return f"ticket_ref = {refs or f'g{flag}'}.ref AND (kind = 'attempt') = {flag}"

    def gates(flag: int) -> str:
        return (
            f"g{flag}(ref, gate) AS (SELECT ref, (SELECT min(gate_id) FROM entries WHERE"
            f" {part(flag, 'refs')})"
            f" FROM refs UNION ALL SELECT ref, (SELECT min(gate_id) FROM entries WHERE"
            f" {part(flag)} AND gate_id > g{flag}.gate) FROM g{flag} WHERE gate IS NOT NULL)"
        )

    def last(flag: int) -> str:
        return (
            f"SELECT {', '.join('e.' + c for c in TICKET_COLUMNS)} FROM g{flag}, entries e"
            f" WHERE g{flag}.gate IS NOT NULL AND e.cursor IN (SELECT cursor FROM entries"
            f" WHERE {part(flag)} AND gate_id = g{flag}.gate"
            f" ORDER BY cursor DESC LIMIT {hub_rules.MAX_TICKET_HISTORY})"
        )

    return (
        "WITH RECURSIVE refs(ref) AS (SELECT column1 FROM (VALUES {})"
        " WHERE EXISTS (SELECT 1 FROM entries WHERE ticket_ref = column1)),"
        f" {gates(0)}, {gates(1)} {last(0)}"
        f" UNION ALL {last(1)} AND (e.wall_time BETWEEN ? AND ? OR e.received_at BETWEEN ? AND ?)"
    )


_HISTORY = _history_sql()
_T = TypeVar("_T")


def _chunks(values: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _select_in(
    db: sqlite3.Connection, sql: str, values: Sequence[Any], params: Sequence[Any] = ()
) -> list[Any]:
    """Rows of ``sql`` (with one ``IN ({})``) over ``values`` in chunks; ``params`` go first."""
    rows: list[Any] = []
    for chunk in _chunks(values):
        query = sql.format(", ".join("?" * len(chunk)))
        rows.extend(db.execute(query, (*params, *chunk)).fetchall())
    return rows


def known_state(
    db: sqlite3.Connection,
    gate_id: str,
    entries: Sequence[EntryWire],
    policy: HubPolicy,
    now: float,
    quota: float,
) -> KnownState:
    """What the store holds about this batch (see :class:`sync.hub_rules.KnownState`)."""
    ids = [e.entry_id for e in entries]
    sql = f"SELECT {', '.join(ENTRY_FIELDS)} FROM entries WHERE entry_id IN ({{}})"
    stored = {e.entry_id: e for e in map(hub_sql.entry_from_row, _select_in(db, sql, ids))}
    (max_seq,) = db.execute(hub_sql.MAX_SEQ, (gate_id,)).fetchone()
    # Only gate_seqs up to the gate's highest can be held already (usually none of the batch's).
    sql = "SELECT gate_seq, entry_id FROM entries WHERE gate_id = ? AND gate_seq IN ({})"
    seqs = [e.gate_seq for e in entries if e.gate_seq <= max_seq]
    owners = dict(_select_in(db, sql, seqs, (gate_id,)))
    refs = hub_rules.history_refs(entries, stored, policy)
    lo, hi = hub_rules.attempt_span(entries, policy, now)
    ahead = policy.max_clock_ahead_s
    history: dict[str, list[TicketRow]] = {}
    for chunk in _chunks(refs):
        query = _HISTORY.format(", ".join(["(?)"] * len(chunk)))
        for row in db.execute(query, (*chunk, lo, hi, lo - ahead, hi - ahead)):
            ref, ticket_row = TicketRow.from_row(row, policy.max_clock_ahead_s)
            history.setdefault(ref, []).append(ticket_row)
    gate_ids = hub_rules.gates_to_name(gate_id, history, stored)
    sql = "SELECT gate_id, gate_name FROM gates WHERE gate_id IN ({})"
    names = {g: n for g, n in _select_in(db, sql, gate_ids) if n}
    sql = f"SELECT {hub_annul.TARGET_COLUMNS} FROM entries WHERE entry_id IN ({{}})"
    wanted = hub_annul.annul_targets(entries, stored)
    targets = {r[0]: hub_annul.Target(*r[1:]) for r in _select_in(db, sql, wanted)}
    first = hub_annul.first_new(entries, stored)
    before = None
    if first is not None:
        before = hub_sql.run_mark(db.execute(hub_sql.RUN_BEFORE, (gate_id, first)).fetchone())
    seen = frozenset(
        b
        for b in hub_annul.boots_to_ask(entries, before)
        if db.execute(hub_sql.SEEN_BOOT, (gate_id, b)).fetchone()
    )
    since = budget_since(now, policy)
    (count,) = db.execute(hub_sql.BUDGET_USED, (gate_id, since)).fetchone()
    last = db.execute(hub_sql.LAST_ROW_TIME, (gate_id,)).fetchone()
    return KnownState(
        stored, owners, int(max_seq), history, names, targets, int(count), quota,
        last_hlc=hub_sql.last_hlc(last, ahead), run_before=before, seen_boots=seen,
    )  # fmt: skip


def raised(db: sqlite3.Connection, plan: hub_rules.IngestPlan) -> frozenset[str]:
    """Of a refused batch's alerts (``plan.candidates``), those stored before."""
    sql = "SELECT dedupe_key FROM alerts WHERE dedupe_key IN ({})"
    return frozenset(k for (k,) in _select_in(db, sql, plan.candidates))


def last_received(db: sqlite3.Connection, gate_id: str) -> float | None:
    """When the store last received a row of ``gate_id``; None: never."""
    (last,) = db.execute(hub_sql.LAST_RECEIVED, (gate_id,)).fetchone()
    return None if last is None else float(last)
