"""What both hub stores (:mod:`sync.hub_sqlite`, :mod:`sync.hub_postgres`) say to their database
in the same words: column lists, row conversions and the statements that are the same in both
dialects, written with ``?`` parameters (:func:`numbered` turns them into PostgreSQL's ``$n``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agent.model import Reason, Verdict
from agent.redact import short_id
from sync.hub_annul import RunMark
from sync.hub_budget import DEFERRED
from sync.hub_console_sql import ActedAlert
from sync.hub_plan import AlertNote, NewAlert, as_of_arrival
from sync.hub_rules import in_feed
from sync.hub_store import HubPolicy
from sync.protocol import MAX_DETAIL, Alert, EntryWire, FeedEntry, GateHealth, Heartbeat
from sync.protocol_console import MAX_NOTES

# The ``entries`` table's columns: EntryWire's fields in order, then the hub's own three (the
# ticket's short id is kept for ticket search, :mod:`sync.hub_console_sql`).
ENTRY_FIELDS = EntryWire.__struct_fields__
ENTRY_COLUMNS = (*ENTRY_FIELDS, "in_feed", "received_at", "short_id")
# entry_params spells the fields out in this order; a new or moved field must be added there.
assert ENTRY_FIELDS == (
    "gate_seq", "entry_id", "gate_id", "lane", "ticket_ref", "kind", "verdict", "reason",
    "detail", "flags", "annuls", "zone", "wall_time", "clock_synced", "mono_ns", "boot_id",
    "hlc", "rev_version", "offline", "rev_key",
), ENTRY_FIELDS  # fmt: skip


def numbered(sql: str) -> str:
    """``sql`` with its ``?`` parameters as PostgreSQL's ``$1``, ``$2``, ... (in order)."""
    parts = sql.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]


def status_rows(status: str) -> int:
    """The rows a PostgreSQL statement's status names ("DELETE 2", "INSERT 0 1")."""
    return int(status.rsplit(" ", 1)[-1])


def entry_params(entry: EntryWire, received_at: float) -> tuple[Any, ...]:
    """An entry's column values in ``ENTRY_COLUMNS`` order (flags comma-joined, enums as text)."""
    e = entry  # spelled out field by field: called once per stored row
    return (
        e.gate_seq, e.entry_id, e.gate_id, e.lane, e.ticket_ref, e.kind, e.verdict.value,
        e.reason.value, e.detail, ",".join(e.flags), e.annuls, e.zone, e.wall_time,
        e.clock_synced, e.mono_ns, e.boot_id, e.hlc, e.rev_version, e.offline, e.rev_key,
        in_feed(e), received_at, short_id(e.ticket_ref),
    )  # fmt: skip


def entry_from_row(row: Iterable[Any]) -> EntryWire:
    """The EntryWire of a stored row (the columns ``ENTRY_FIELDS``, in order)."""
    values = dict(zip(ENTRY_FIELDS, row, strict=True))
    values["verdict"] = Verdict(values["verdict"])
    values["reason"] = Reason(values["reason"])
    values["flags"] = tuple(f for f in values["flags"].split(",") if f)
    values["clock_synced"] = bool(values["clock_synced"])
    values["offline"] = bool(values["offline"])
    return EntryWire(**values)


# No gate_name: a gate's name is its operator's (set_gate_name), never what the gate says.
HEARTBEAT_COLUMNS = (
    "gate_id", "version", "outbox_depth", "oldest_unsynced_age_s",
    "revocation_version", "revocation_age_s", "trust_version", "clock_synced", "feed_cursor",
    "faults", "last_seen",
)  # fmt: skip


def heartbeat_sql(*, numbered: bool) -> str:
    """The upsert of a gate's row from a heartbeat, with ``$n`` (numbered) or ``?`` parameters."""
    marks = ", ".join(f"${i}" if numbered else "?" for i in range(1, len(HEARTBEAT_COLUMNS) + 1))
    updates = ", ".join(f"{c} = excluded.{c}" for c in HEARTBEAT_COLUMNS[1:])
    return (
        f"INSERT INTO gates ({', '.join(HEARTBEAT_COLUMNS)}) VALUES ({marks})"
        f" ON CONFLICT (gate_id) DO UPDATE SET {updates}"
    )


def heartbeat_params(hb: Heartbeat, faults: Any, now: float) -> tuple[Any, ...]:
    """A heartbeat's values in ``HEARTBEAT_COLUMNS`` order (``faults`` as the backend stores it)."""
    return (
        hb.gate_id, hb.version, hb.outbox_depth, hb.oldest_unsynced_age_s,
        hb.revocation_version, hb.revocation_age_s, hb.trust_version, hb.clock_synced,
        hb.feed_cursor, faults, now,
    )  # fmt: skip


ALERT_COLUMNS = "alert_id, kind, ticket, gates, times, entries, detail, raised_at, held, gate_ids"


def alert_of(row: Iterable[Any], venue: str, decode: Callable[[Any], Any] = tuple) -> Alert:
    """An Alert from its ``ALERT_COLUMNS`` (``decode`` turns a stored list into a sequence); a
    storm alert's detail gains its count."""
    alert_id, kind, ticket, gates, times, entries, detail, raised_at, held, gate_ids = tuple(row)
    if held:  # "1 alerts" too: integrators match "N alerts held back" (a review)
        detail = f"{detail}; {held} alerts held back"[:MAX_DETAIL]
    return Alert(
        alert_id, kind, venue, ticket, tuple(decode(gates)), tuple(decode(times)),
        tuple(decode(entries)), detail, raised_at, gate_ids=tuple(decode(gate_ids)),
    )  # fmt: skip


def gate_health(
    row: Iterable[Any], faults: Iterable[str], now: float, policy: HubPolicy
) -> GateHealth:
    """A gate's health from its stored columns: gate_id, gate_name, last_seen, outbox_depth,
    revocation_version, revocation_age_s, clock_synced, version (then anything, e.g. faults).
    """
    gate_id, name, last_seen, depth, rev_version, rev_age, synced, version = tuple(row)[:8]
    online = last_seen is not None and now - last_seen <= policy.gate_offline_after_s
    return GateHealth(
        gate_id, name or gate_id, online, last_seen, depth, rev_version, rev_age, bool(synced),
        version, tuple(faults),
    )  # fmt: skip


# --- statements the same in both dialects ------------------------------------------------------

# A storm alert met again adds to its count (a deferred one, of a refused batch sent again and
# again, keeps the most it held at once: sync.hub_budget); any other alert is stored once.
INSERT_ALERT = (
    "INSERT INTO alerts (dedupe_key, kind, ticket, gates, times, entries, detail, raised_at,"
    " source_gate, held, gate_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (dedupe_key) DO UPDATE SET held = CASE WHEN alerts.dedupe_key NOT LIKE"
    f" '%{DEFERRED}' THEN alerts.held + excluded.held WHEN excluded.held > alerts.held"
    " THEN excluded.held ELSE alerts.held END WHERE excluded.held > 0"
)
# A note of the hub's own on an alert raised before (sync.hub_plan.AlertNote): at most
# HUB_NOTES on one alert and never past its MAX_NOTES, so security's notes keep their room.
HUB_NOTES = 10
_NOTES = "(SELECT count(*) FROM alert_actions AS x WHERE x.alert_id = alerts.alert_id AND"
_INSERT_NOTE = (
    "INSERT INTO alert_actions (alert_id, action, actor, value, at)"
    " SELECT alert_id, 'note', 'hub', CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION) FROM alerts"
    f" WHERE dedupe_key = ? AND {_NOTES} x.action = 'note') < {MAX_NOTES}"
    f" AND {_NOTES} x.action = 'note' AND x.actor = 'hub') < {HUB_NOTES} AND "
)
# ... and the alert does not name AlertNote.unless_entry (alerts keep entries as JSON text in
# SQLite, an array in PostgreSQL)
INSERT_NOTE = _INSERT_NOTE + "instr(entries, '\"' || ? || '\"') = 0"
INSERT_NOTE_PG = numbered(_INSERT_NOTE + "NOT (CAST(? AS TEXT) = ANY(entries))")


def alert_params(
    a: NewAlert, gate_id: str, now: float, items: Callable[[Sequence[Any]], Any]
) -> tuple[Any, ...]:
    """An alert's :data:`INSERT_ALERT` parameters; ``items`` stores its gates, times, entries
    and gate ids (SQLite: json.dumps; PostgreSQL: list, an array)."""
    return (
        a.dedupe_key, a.kind, a.ticket, items(a.gates), items(a.times), items(a.entries),
        a.detail, now, gate_id, a.held, items(a.gate_ids),
    )  # fmt: skip


def note_params(notes: Iterable[AlertNote], now: float) -> list[tuple[str, float, str, str]]:
    """The :data:`INSERT_NOTE` parameters of a plan's notes."""
    return [(n.text, now, n.dedupe_key, n.unless_entry) for n in notes]


# A storm alert raised before that held back more (sync.hub_budget): a "held" action of the
# hub's, its count, so followers (sync.hub_alert_follow) print the storm again; the workflow
# shows none. At most one each HELD_EVERY_S (a review: a storm's every batch was an update, a
# flood of them on a webhook); only the newest is kept (the older ones deleted after it: no
# action id is ever taken twice).
HELD_EVERY_S = 10.0
HELD_ACTION = (
    "INSERT INTO alert_actions (alert_id, action, actor, value, at) SELECT alert_id, 'held', 'hub',"
    " CAST(held AS TEXT), CAST(? AS DOUBLE PRECISION) FROM alerts WHERE dedupe_key = ?"
    " AND raised_at < CAST(? AS DOUBLE PRECISION) AND NOT EXISTS (SELECT 1 FROM alert_actions"
    " AS x WHERE x.alert_id = alerts.alert_id AND x.action = 'held'"
    " AND x.at > CAST(? AS DOUBLE PRECISION))"
)
OLD_HELD = (
    "DELETE FROM alert_actions WHERE action = 'held' AND alert_id ="
    " (SELECT alert_id FROM alerts WHERE dedupe_key = ?) AND action_id < (SELECT max(x.action_id)"
    " FROM alert_actions AS x WHERE x.alert_id = alert_actions.alert_id AND x.action = 'held')"
)


def held_params(alerts: Iterable[NewAlert], now: float) -> list[tuple[float, str, float, float]]:
    """The :data:`HELD_ACTION` parameters of a plan's storm alerts that hold some back (not a
    deferred one: sent again and again, it holds no more)."""
    return [
        (now, a.dedupe_key, now, now - HELD_EVERY_S)
        for a in alerts
        if a.kind == "alert_storm" and a.held > 0 and not a.dedupe_key.endswith(DEFERRED)
    ]


ADD_GATE = "INSERT INTO gates (gate_id) VALUES (?) ON CONFLICT (gate_id) DO NOTHING"
MAX_SEQ = "SELECT coalesce(max(gate_seq), 0) FROM entries WHERE gate_id = ?"
# A gate's row at its highest stored gate_seq (none: no row): its new rows may not be dated
# before it (sync.hub_rules.KnownState.last_hlc).
LAST_ROW_TIME = (
    "SELECT hlc, wall_time, received_at FROM entries WHERE gate_id = ?"
    " ORDER BY gate_seq DESC LIMIT 1"
)
# The gate's row just below a gate_seq: its run and monotonic time (sync.hub_annul.RunMark).
RUN_BEFORE = (
    "SELECT boot_id, mono_ns FROM entries WHERE gate_id = ? AND gate_seq < ?"
    " ORDER BY gate_seq DESC LIMIT 1"
)
# Has the gate rows of a run (boot id)? (sync.hub_annul: a run the gate left never comes back),
# one probe of the (gate_id, boot_id) index.
SEEN_BOOT = "SELECT 1 FROM entries WHERE gate_id = ? AND boot_id = ? LIMIT 1"


def run_mark(row: Sequence[Any] | None) -> RunMark | None:
    """A :data:`RUN_BEFORE` row as a RunMark (None: no row)."""
    return None if row is None else RunMark(str(row[0]), int(row[1]))


def last_hlc(row: Sequence[Any] | None, max_ahead_s: float) -> int:
    """The HLC the venue orders a :data:`LAST_ROW_TIME` row by (0: no row)."""
    if row is None:
        return 0
    return as_of_arrival(int(row[0]), float(row[1]), float(row[2]), max_ahead_s)[0]


# When the store last received a row of a gate: the upload quota's starting point for a gate this
# hub process has not seen yet. Its latest arrival, not its highest gate_seq's: a stolen gate can
# plant gate_seq 2^63-1 once and be owed hours of credit after every restart. Reads each of the
# gate's rows once (the gate_id index, then the row), once per gate and hub process.
LAST_RECEIVED = "SELECT max(received_at) FROM entries WHERE gate_id = ?"
# Alerts this gate's uploads raised since the start of the budget bucket.
BUDGET_USED = (
    "SELECT count(*) FROM alerts WHERE source_gate = ? AND raised_at >= ? AND kind <> 'alert_storm'"
)
FEED = (
    "SELECT e.cursor, e.entry_id, e.gate_id, COALESCE(NULLIF(g.gate_name, ''), e.gate_id),"
    " e.gate_seq, e.ticket_ref, e.kind, e.annuls, e.wall_time, e.hlc, e.received_at"
    " FROM entries AS e LEFT JOIN gates AS g ON g.gate_id = e.gate_id"
    " WHERE e.cursor > ? AND e.in_feed = TRUE ORDER BY e.cursor LIMIT ?"
)


def feed_entry(row: Iterable[Any], max_ahead_s: float) -> FeedEntry:
    """A row of ``FEED`` as the feed gives it: its times as of its arrival
    (:func:`sync.hub_plan.as_of_arrival`), so a gate whose clock ran ahead misleads no peer."""
    cursor, entry_id, gate_id, name, seq, ref, kind, annuls, wall_time, hlc, received_at = row
    hlc, wall_time = as_of_arrival(int(hlc), float(wall_time), float(received_at), max_ahead_s)
    return FeedEntry(cursor, entry_id, gate_id, name, seq, ref, kind, annuls, wall_time, hlc)


# ORDER BY .. LIMIT keeps this a short walk of the primary key, whatever the statistics.
HAS_FEED_AFTER = (
    "SELECT cursor FROM entries WHERE cursor > ? AND in_feed = TRUE ORDER BY cursor LIMIT 1"
)
ALERTS = f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id > ? ORDER BY alert_id LIMIT ?"
RECENT_ALERTS = (
    f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id < ? ORDER BY alert_id DESC LIMIT ?"
)
# Alerts acted on (noted, acknowledged, assigned; a storm holding back more) since a cursor
# (sync.hub_alert_follow: action ids commit in order), each with its latest action (action,
# actor, value) of those read; the cursor moves at most ``limit`` actions a read.
TOP_ACTION = "SELECT coalesce(max(action_id), 0) FROM alert_actions"
ACTIONS_TOP = (
    "SELECT coalesce(max(action_id), ?) FROM (SELECT action_id FROM alert_actions"
    " WHERE action_id > ? ORDER BY action_id LIMIT ?) AS x"
)
ACTED_ALERTS = (
    f"SELECT {', '.join('a.' + c for c in ALERT_COLUMNS.split(', '))}, x.action, x.actor, x.value"
    " FROM alert_actions AS x JOIN alerts AS a ON a.alert_id = x.alert_id WHERE x.action_id IN"
    " (SELECT max(action_id) FROM alert_actions WHERE action_id > ? AND action_id <= ?"
    " GROUP BY alert_id) ORDER BY a.alert_id"
)


def acted_alert(row: Sequence[Any], venue: str, decode: Callable[[Any], Any] = tuple) -> ActedAlert:
    """An :data:`ACTED_ALERTS` row as an ActedAlert."""
    *alert, action, actor, value = tuple(row)
    return ActedAlert(alert_of(alert, venue, decode), str(action), str(actor), str(value))


NAME_TAKEN = "SELECT gate_id FROM gates WHERE lower(gate_name) = lower(?) AND gate_id <> ?"
SET_GATE_NAME = (
    "INSERT INTO gates (gate_id, gate_name) VALUES (?, ?)"
    " ON CONFLICT (gate_id) DO UPDATE SET gate_name = excluded.gate_name"
)
# Tokens are stored as their SHA-256 digests (no secret in these texts).
INSERT_TOKEN = "INSERT INTO tokens (token_hash, role, gate_id, name, created_at)" + (
    " VALUES (?, ?, ?, ?, ?)"
)
TOKEN = "SELECT token_hash, role, gate_id, name FROM tokens WHERE token_hash = ?"  # noqa: S105
REVOKE_TOKENS = "DELETE FROM tokens WHERE gate_id = ?"
# An upload's token read again inside its ingest transaction (sync.hub_store.TokenGoneError).
GATE_TOKEN = "SELECT 1 FROM tokens WHERE token_hash = ? AND gate_id = ?"  # noqa: S105
# Console and issuing tokens have no gate: they are named (the name their actions are recorded by).
NAMED_TOKENS = "SELECT count(*) FROM tokens WHERE role = ? AND name = ? AND gate_id IS NULL"
REVOKE_NAMED_TOKENS = "DELETE FROM tokens WHERE role = ? AND name = ? AND gate_id IS NULL"
OLDEST_DELTA = "SELECT min(version) FROM revocation_deltas"
DELTAS = "SELECT document FROM revocation_deltas WHERE version > ? ORDER BY version LIMIT ?"
INSERT_DELTA = "INSERT INTO revocation_deltas (version, document) VALUES (?, ?)"
PRUNE_DELTAS = "DELETE FROM revocation_deltas WHERE version <= ?"
