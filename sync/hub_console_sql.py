"""What the console asks both hub stores in the same words: a ticket's history by its short id,
the entries an alert names, the alert workflow (acknowledge, assign, note) and the open count.

Statements use ``?`` parameters (:func:`sync.hub_sql.numbered` makes PostgreSQL's ``$n``); an
``IN ({})`` list is SQLite's form, PostgreSQL's is ``= ANY($1::text[])`` (:func:`any_of`).
The backends' halves are :mod:`sync.hub_sqlite_console` and :mod:`sync.hub_postgres_console`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

from agent.redact import printable
from sync.protocol import Alert
from sync.protocol_console import (
    MAX_NOTES,
    AlertNote,
    AlertWorkflow,
    EntryContext,
    TicketEvent,
    TicketHistory,
)

Action = Literal["ack", "assign", "note"]
ACTIONS: tuple[Action, ...] = ("ack", "assign", "note")
# What an action on an alert came to: stored (or an acknowledgement already there), no such
# alert, or a note over the alert's MAX_NOTES.
ActResult = Literal["done", "unknown", "full"]


class ActedAlert(NamedTuple):
    """An alert acted on, and its latest action read: ``action`` ack, assign (``value``: the
    assignee, "" for nobody), note or held (a storm holding back more: ``value`` its count),
    by ``actor`` (a console token's name, or "hub")."""

    alert: Alert
    action: str
    actor: str
    value: str

    def change(self) -> str:
        """What was done, as `hub alerts --follow` says it: never a note's text (a line)."""
        if self.action == "assign":
            whom = f"assigned to {printable(self.value, 80)}" if self.value else "unassigned"
            return f"{whom} by {self.actor}"
        if self.action == "held":
            return f"{self.value} held back now"
        return f"{'acknowledged' if self.action == 'ack' else self.action} by {self.actor}"


_GATE_NAME = "COALESCE(NULLIF(g.gate_name, ''), e.gate_id)"
# The rows as the gates sent them (a row from a clock ahead shows its claimed time, for the
# security team), newest first in the order the hub and the gates decided on: a row's HLC cut to
# its arrival + max_clock_ahead_s (the two ? after the short id: sync.hub_plan.as_of_arrival),
# ties in each gate's own order. The newest, not the oldest: what an alert is about is recent.
_VOUCHED = "CAST((e.received_at + ?) * 1000 AS BIGINT) * 65536"
# Rows a quarantine set apart (sync.hub_quarantine) are part of the story: shown, marked (1); so
# are the claims (sync.hub_claims) not stored as rows since (2).
_ROW = (
    "entry_id, gate_id, lane, kind, verdict, reason, detail, flags, offline, wall_time, annuls,"
    " hlc, received_at, gate_seq, ticket_ref"
)
_CLAIM_ROW = (
    "c.entry_id, c.gate_id, '', 'entry', 'admit', 'ok', '', '', FALSE, c.wall_time, NULL, c.hlc,"
    " c.claimed_at, c.gate_seq, c.ticket_ref"
)
_BOTH_TABLES = (
    f"SELECT {_ROW}, 0 AS set_apart FROM entries WHERE short_id = ?"
    f" UNION ALL SELECT {_ROW}, 1 FROM quarantined_entries WHERE short_id = ?"
    f" UNION ALL SELECT {_CLAIM_ROW}, 2 FROM claimed_entries AS c WHERE c.short_id = ?"
    " AND NOT EXISTS (SELECT 1 FROM entries AS s WHERE s.entry_id = c.entry_id)"
)
TICKET_HISTORY = (
    f"SELECT e.entry_id, e.gate_id, {_GATE_NAME}, e.lane, e.kind, e.verdict, e.reason, e.detail,"
    f" e.flags, e.offline, e.wall_time, e.annuls, e.set_apart FROM ({_BOTH_TABLES}) AS e"
    " LEFT JOIN gates AS g ON g.gate_id = e.gate_id"
    f" ORDER BY CASE WHEN e.hlc > {_VOUCHED} THEN {_VOUCHED} ELSE e.hlc END DESC,"
    " e.gate_id DESC, e.gate_seq DESC LIMIT ?"
)
HISTORY_COUNT = f"SELECT count(DISTINCT ticket_ref), count(*) FROM ({_BOTH_TABLES}) AS h"
TICKET_COUNT = "SELECT count(DISTINCT ticket_ref), count(*) FROM entries WHERE short_id = ?"
# The short ids of the rows a revocation key (a TK1 token id) was uploaded with: one, almost always.
KEY_SHORT_IDS = (  # rows set apart too: `hub ticket` shows them, marked
    "SELECT short_id FROM entries WHERE rev_key = ? UNION"
    " SELECT short_id FROM quarantined_entries WHERE rev_key = ? ORDER BY short_id LIMIT 10"
)
# The revocation keys gates uploaded with a short id's rows, by gate (a transferred ticket has
# several keys; a stolen gate may upload others): at most 65 pairs, enough to say "several".
REV_KEYS = (
    "SELECT rev_key, gate_id FROM entries WHERE short_id = ? AND rev_key IS NOT NULL"
    " GROUP BY rev_key, gate_id ORDER BY rev_key, gate_id LIMIT 65"
)
_CONTEXT_OF = (
    f"SELECT e.entry_id, {_GATE_NAME}, e.lane, e.kind, e.verdict, e.reason, e.offline,"
    " e.wall_time, {set_apart}, e.short_id, e.gate_id, 0, {annulled} FROM {table} AS e"
    " LEFT JOIN gates AS g ON g.gate_id = e.gate_id"
    " WHERE e.entry_id IN ({{}})"
)
# An entry its gate annulled since (nobody passed), found among its ticket's rows (an indexed
# walk: entries_ticket_gate); the hub takes an annulment only from the entry's own gate.
_ANNULLED = (
    "EXISTS (SELECT 1 FROM entries AS x WHERE x.ticket_ref = e.ticket_ref AND x.kind = 'annul'"
    " AND x.annuls = e.entry_id AND x.gate_id = e.gate_id)"
)
CONTEXT = _CONTEXT_OF.format(set_apart=0, table="entries", annulled=_ANNULLED)
# The same of the rows a quarantine set apart (an alert named them before, or the quarantine's).
SET_APART_CONTEXT = _CONTEXT_OF.format(set_apart=1, table="quarantined_entries", annulled=0)
# The same of the claims an alert names (sync.hub_claims: a refused upload's admissions, lane
# unknown), marked; read first, so a row the hub holds since stands in for its claim.
CLAIMED_CONTEXT = (
    f"SELECT e.entry_id, {_GATE_NAME}, '', 'entry', 'admit', 'ok', 0, e.wall_time, 0,"
    " e.short_id, e.gate_id, 1, 0 FROM claimed_entries AS e"
    " LEFT JOIN gates AS g ON g.gate_id = e.gate_id WHERE e.entry_id IN ({})"
)
# The gates' names now, of the gates alerts name by id (an alert keeps the names it was raised
# with; a gate renamed since, its name perhaps given to another gate, shows both).
NAMES_NOW = (
    "SELECT gate_id, COALESCE(NULLIF(gate_name, ''), gate_id) FROM gates WHERE gate_id IN ({})"
)
ACTIONS_OF = (
    "SELECT alert_id, action, actor, value, at FROM alert_actions WHERE alert_id IN ({})"
    " ORDER BY action_id"
)
ALERT_EXISTS = "SELECT alert_id FROM alerts WHERE alert_id = ?"
ACKED = "SELECT action_id FROM alert_actions WHERE alert_id = ? AND action = 'ack' LIMIT 1"
NOTE_COUNT = "SELECT count(*) FROM alert_actions WHERE alert_id = ? AND action = 'note'"
ASSIGNEE = (
    "SELECT value FROM alert_actions WHERE alert_id = ? AND action = 'assign'"
    " ORDER BY action_id DESC LIMIT 1"
)
INSERT_ACTION = (
    "INSERT INTO alert_actions (alert_id, action, actor, value, at) VALUES (?, ?, ?, ?, ?)"
)
OPEN_ALERTS = (
    "SELECT count(*) FROM alerts AS a WHERE NOT EXISTS (SELECT 1 FROM alert_actions AS x"
    " WHERE x.alert_id = a.alert_id AND x.action = 'ack')"
)
DISTINCT_REFS = "SELECT DISTINCT ticket_ref FROM entries WHERE short_id = ''"
SET_SHORT_ID = "UPDATE entries SET short_id = ? WHERE ticket_ref = ?"


def any_of(sql: str, cast: str) -> str:
    """``sql``'s ``IN ({})`` as PostgreSQL's ``= ANY($1::<cast>[])``."""
    return sql.replace("IN ({})", f"= ANY($1::{cast}[])")


def history(short: str, counts: tuple[int, int], rows: Iterable[Any], limit: int) -> TicketHistory:
    """A :class:`TicketHistory` from :data:`TICKET_HISTORY` rows (newest first) read with
    ``limit + 1`` and :data:`HISTORY_COUNT`'s (tickets, rows)."""
    events = [_event(r) for r in rows]
    kept = tuple(reversed(events[:limit]))
    return TicketHistory(short, int(counts[0]), kept, len(events) > limit, int(counts[1]))


def _event(r: Any) -> TicketEvent:
    flags = tuple(f for f in r[8].split(",") if f)
    return TicketEvent(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], flags, bool(r[9]), r[10], r[11],
        set_apart=r[12] == 1, claimed=r[12] == 2,
    )  # fmt: skip


def entry_ids(alerts: Sequence[Alert]) -> list[str]:
    return sorted({e for a in alerts for e in a.entries})


def gate_ids(alerts: Sequence[Alert]) -> list[str]:
    return sorted({g for a in alerts for g in a.gate_ids})


def with_details(
    alerts: Sequence[Alert],
    context_rows: Iterable[Any],
    action_rows: Iterable[Any],
    name_rows: Iterable[Any] = (),
) -> list[Alert]:
    """``alerts`` with their entries' context (:data:`CONTEXT` rows), workflow (:data:`ACTIONS_OF`
    rows, oldest first) and their gates' names now (:data:`NAMES_NOW` rows)."""
    now = {str(r[0]): str(r[1]) for r in name_rows}
    rows = {r[0]: r for r in context_rows}
    steps: dict[int, list[Any]] = {}
    for row in action_rows:
        steps.setdefault(int(row[0]), []).append(row)
    return [
        dataclasses.replace(
            a,
            context=tuple(_context(rows[e], a) for e in a.entries if e in rows),
            workflow=_workflow(steps.get(a.alert_id, ())),
            gates_now=tuple(now.get(g, g) for g in a.gate_ids),
        )
        for a in alerts
    ]


def _context(r: Any, alert: Alert) -> EntryContext:
    """A :data:`CONTEXT` row as ``alert`` names it: its gate by the name the alert was raised
    with (as the alert's detail says it), beside its name now where the gate was renamed since
    (perhaps its old name given to another gate)."""
    name_now, gate_id = str(r[1]), str(r[10])
    raised = dict(zip(alert.gate_ids, alert.gates, strict=False)).get(gate_id, name_now)
    return EntryContext(
        r[0], raised, r[2], r[3], r[4], r[5], bool(r[6]), r[7], bool(r[8]), str(r[9]),
        gate_now=name_now if name_now != raised else "", claimed=bool(r[11]),
        annulled=bool(r[12]),
    )  # fmt: skip


def _workflow(rows: Iterable[Any]) -> AlertWorkflow:
    flow = AlertWorkflow()
    notes: list[AlertNote] = []
    for _, action, actor, value, at in rows:
        if action == "ack" and flow.acked_at is None:
            flow = dataclasses.replace(flow, acked_by=actor, acked_at=at)
        elif action == "assign":
            flow = dataclasses.replace(
                flow, assignee=value or None, assigned_by=actor, assigned_at=at
            )
        elif action == "note":
            notes.append(AlertNote(actor, at, value))
    return dataclasses.replace(flow, notes=tuple(notes[:MAX_NOTES]))


def act_result(
    exists: bool, action: Action, acked: bool, notes: int, assignee: str, value: str
) -> ActResult | None:
    """The answer without writing (unknown alert, full notes, a second acknowledgement, an
    assignment to whom it is assigned already: ``assignee``, "" for nobody), or None when the
    action is to be stored (a change: followers print the alert again)."""
    if not exists:
        return "unknown"
    if action == "note" and notes >= MAX_NOTES:
        return "full"
    if (action == "ack" and acked) or (action == "assign" and value == assignee):
        return "done"
    return None
