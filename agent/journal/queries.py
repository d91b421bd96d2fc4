"""Read-only queries on the journal: a ticket's history, the outbox, health checks, `events`.

Plain functions of a :class:`sqlite3.Connection`: the journal runs them on its own thread, and
the commands (`gate-agent events`, `check`) on a read-only connection of their own
(:func:`open_readonly`), while the daemon keeps writing. They let :class:`sqlite3.Error` through
unless they say otherwise.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.errors import JournalError, JournalRefused
from agent.fsutil import sqlite_readonly
from agent.journal.records import (
    ALERT_COLUMNS,
    COLUMNS,
    AlertRecord,
    EntryRecord,
    HistoryEntry,
    alert_record,
    entry_record,
    history_entry,
)
from agent.journal.schema import failed, is_empty, require_journal
from agent.journal.schema import version as schema_version
from agent.redact import shared_ref, short_id
from agent.seen import Hashes, SeenRefs

# Parameters: own gate_id, own gate_name, then ticket_ref and shared_ref(ticket_ref) twice: peers'
# rows carry a pretix secret as its digest (older journals may hold the secret), and so do this
# gate's once synced (schema 5). Attempts are not
# admissions and never count against a ticket, so they stay out of history. Rows of one HLC (a
# hub orders a row far ahead of its clock as of its arrival: several rows of one gate can share
# that value) keep their gate's own order: ties go by gate, then gate_seq, as at the hub. This
# gate's own rows are placed as the venue orders them once the hub's feed has echoed them
# (order_hlc): a gate whose clock ran ahead must not see its own exit after an entry that came
# later at another gate.
HISTORY = """
SELECT kind, ? AS gate_id, ? AS gate_name, lane, wall_time, entry_id, annuls,
    IFNULL(order_hlc, hlc) AS hlc, 0 AS peer, code_time, gate_seq, clock_synced <> 0 AS timed
    FROM entries WHERE ticket_ref IN (?, ?) AND kind IN ('entry', 'exit', 'annul')
UNION ALL
SELECT kind, gate_id, gate_name, '' AS lane, wall_time, entry_id, annuls, hlc, 1 AS peer,
    NULL AS code_time, gate_seq, 1 AS timed
    FROM peer_entries WHERE ticket_ref IN (?, ?) AND kind IN ('entry', 'exit', 'annul')
ORDER BY hlc, gate_id, gate_seq
"""
REFS_WITH_HISTORY = (
    "SELECT ticket_ref FROM entries WHERE kind IN ('entry', 'exit', 'annul')"
    " UNION ALL SELECT ticket_ref FROM peer_entries"
)
_REFS_CHUNK = 4096
GATE_ID = "SELECT value FROM meta WHERE key = 'gate_id'"
# The highest gate_seq retention has pruned (0: none), written by agent.journal.prune.
PRUNED_THROUGH = (
    "SELECT IFNULL((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'pruned_through'), 0)"
)
_MAX_HOLES_REPORTED = 10
# What `gate-agent events` shows of a row (the ticket only by its short id, computed by the caller).
EVENT_COLUMNS = (
    "gate_seq, wall_time, lane, kind, verdict, reason, detail, flags, ticket_ref, offline, entry_id"
)


# A journal of schema 2 (read by a tool before the daemon has upgraded it) has no order_hlc.
_HISTORY_2 = HISTORY.replace("IFNULL(order_hlc, hlc) AS hlc", "hlc", 1)
# ... and one of schema 1 (a gate of before 2026-12-03) has no code_time either (a trial).
_HISTORY_1 = _HISTORY_2.replace("0 AS peer, code_time,", "0 AS peer, NULL AS code_time,", 1)


def history(
    db: sqlite3.Connection, gate_id: str, gate_name: str, ticket_ref: str, *, schema: int = 3
) -> list[HistoryEntry]:
    """Entries, exits and annulments of ``ticket_ref`` here and at peers, in history order
    (``schema``: the file's, for read-only tools that find it not yet upgraded)."""
    refs = (ticket_ref, shared_ref(ticket_ref))
    params = (gate_id, gate_name, *refs, *refs)
    sql = HISTORY if schema >= 3 else _HISTORY_2 if schema == 2 else _HISTORY_1
    return [history_entry(row) for row in db.execute(sql, params)]


def peer_rows(
    db: sqlite3.Connection,
    ticket_ref: str | None = None,
    short: str | None = None,
    after: int = 0,
) -> list[tuple[float, str, str, str, str, int, int]]:
    """Other gates' entries, exits and annulments of one ticket, learnt from the hub or pretix,
    oldest first: (wall_time, gate_id, gate_name, kind, ticket_ref, rowid, claimed), those
    learnt after rowid ``after`` only. The ticket by its ref, or by its short id (every peer row
    is read then: a security command, not the scan path)."""
    claimed = "claimed" if schema_version(db) >= 6 else "0"  # a tool before the upgrade (a trial)
    sql = f"SELECT wall_time, gate_id, gate_name, kind, ticket_ref, rowid, {claimed} FROM peer_entries"
    order = " ORDER BY hlc, gate_id, gate_seq"
    if ticket_ref is not None:
        refs = (ticket_ref, shared_ref(ticket_ref), after)
        return list(db.execute(sql + " WHERE ticket_ref IN (?, ?) AND rowid > ?" + order, refs))
    rows = db.execute(sql + " WHERE rowid > ?" + order, (after,))
    return [r for r in rows if short is not None and short_id(r[4]) == short]


def stored_gate_id(db: sqlite3.Connection) -> str | None:
    """The gate the journal belongs to (None: not claimed yet)."""
    row = db.execute(GATE_ID).fetchone()
    return None if row is None else str(row[0])


def last_gate_seq(db: sqlite3.Connection) -> int:
    """The highest ``gate_seq`` on file (0 when there is none)."""
    return int(db.execute("SELECT IFNULL(MAX(gate_seq), 0) FROM entries").fetchone()[0])


def recovery_marks(db: sqlite3.Connection) -> tuple[int, float, float | None]:
    """The last ``gate_seq``, the latest wall time on file (own rows or peers' arrival) and the
    latest wall time of an own row written with the system's synchronised clock (None: no such
    row; rows decided on the hub's time, stored as 2, do not count)."""
    last_seq, last_wall, last_synced_wall = db.execute(
        "SELECT (SELECT IFNULL(MAX(gate_seq), 0) FROM entries),"
        " (SELECT MAX(IFNULL((SELECT MAX(wall_time) FROM entries), 0),"
        "  IFNULL((SELECT MAX(received_at) FROM peer_entries), 0))),"
        " (SELECT MAX(wall_time) FROM entries WHERE clock_synced = 1)"
    ).fetchone()
    synced = None if last_synced_wall is None else float(last_synced_wall)
    return int(last_seq), float(last_wall), synced


def max_hlc_below(db: sqlite3.Connection, ceiling: int) -> int:
    """The highest HLC on file (own rows, peers' rows, gate events) below ``ceiling``; 0: none."""
    (hlc,) = db.execute(
        "SELECT MAX(IFNULL((SELECT MAX(hlc) FROM entries WHERE hlc < ?1), 0),"
        " IFNULL((SELECT MAX(hlc) FROM peer_entries WHERE hlc < ?1), 0),"
        " IFNULL((SELECT MAX(hlc) FROM gate_events WHERE hlc < ?1), 0))",
        (ceiling,),
    ).fetchone()
    return int(hlc)


def pruned_through(db: sqlite3.Connection) -> int:
    """The highest ``gate_seq`` pruned so far (0 when nothing was)."""
    return int(db.execute(PRUNED_THROUGH).fetchone()[0])


def known_peer_ids(db: sqlite3.Connection, entry_ids: Sequence[str]) -> set[str]:
    """Which of ``entry_ids`` are stored as peer entries (asked 500 at a time)."""
    found: set[str] = set()
    for start in range(0, len(entry_ids), 500):
        chunk = entry_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT entry_id FROM peer_entries WHERE entry_id IN ({marks})"
        found.update(str(row[0]) for row in db.execute(sql, chunk))
    return found


def unsynced(db: sqlite3.Connection, limit: int, after_seq: int = 0) -> list[EntryRecord]:
    """Up to ``limit`` entries not yet acknowledged upstream after ``after_seq``, oldest first."""
    sql = (
        f"SELECT {COLUMNS} FROM entries WHERE synced_at IS NULL AND gate_seq > ?"
        " ORDER BY gate_seq LIMIT ?"
    )
    return [entry_record(row) for row in db.execute(sql, (after_seq, limit))]


def outbox(db: sqlite3.Connection) -> tuple[int, float | None]:
    """How many entries await acknowledgement upstream, and the oldest one's wall time."""
    count, oldest = db.execute(
        "SELECT COUNT(*), (SELECT wall_time FROM entries WHERE synced_at IS NULL"
        " ORDER BY gate_seq LIMIT 1) FROM entries WHERE synced_at IS NULL"
    ).fetchone()
    return int(count), None if oldest is None else float(oldest)


def count(db: sqlite3.Connection) -> int:
    """The number of own entries on file (pruned ones not counted)."""
    return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])


def tail(db: sqlite3.Connection, n: int) -> list[EntryRecord]:
    """The last ``n`` own entries, oldest first."""
    sql = (
        f"SELECT {COLUMNS} FROM (SELECT * FROM entries ORDER BY gate_seq DESC LIMIT ?) "
        "ORDER BY gate_seq"
    )
    return [entry_record(row) for row in db.execute(sql, (n,))]


RecentRow = tuple[str, str, float, str, str | None]


def recent(db: sqlite3.Connection, since: float) -> list[RecentRow]:
    """Own rows recorded at or after ``since`` (wall time), in order: (lane, kind, wall_time,
    entry_id, annuls)."""
    sql = (
        "SELECT lane, kind, wall_time, entry_id, annuls FROM entries"
        " WHERE wall_time >= ? ORDER BY gate_seq"
    )
    return [(str(ln), str(k), float(t), str(e), a) for ln, k, t, e, a in db.execute(sql, (since,))]


def gate_events(db: sqlite3.Connection) -> list[tuple[str, str, str, float]]:
    """Recorded gate mode changes, oldest first: (kind, value, lane, wall_time)."""
    rows = db.execute("SELECT kind, value, lane, wall_time FROM gate_events ORDER BY event_id")
    return [(str(k), str(v), str(ln), float(t)) for k, v, ln, t in rows]


def alerts(
    db: sqlite3.Connection,
    after: int = 0,
    *,
    ticket_ref: str | None = None,
    short: str | None = None,
    last: int | None = None,
) -> list[AlertRecord]:
    """The security alerts kept past ``alert_id`` ``after``, oldest first; ``ticket_ref``: that
    ticket's only (its own or its shared ref); ``short``: those of that short id; ``last``: only
    the last so many. A journal of schema 3 (read before the daemon upgraded it) has none.
    Raises JournalError."""
    if schema_version(db) < 4:
        return []
    where: list[str] = ["alert_id > ?"]
    params: list[object] = [after]
    _of_ticket(db, where, params, None if ticket_ref is None else shared_ref(ticket_ref), short)
    sql = f"SELECT {ALERT_COLUMNS} FROM alerts WHERE {' AND '.join(where)}"
    return [alert_record(row) for row in _ordered(db, sql, params, "alert_id", last)]


def tops(db: sqlite3.Connection) -> tuple[int, int, int]:
    """The highest gate_seq, peer row (rowid) and alert_id on file (0: none), for a follow to
    read on from. Raises JournalError."""
    alerts = "(SELECT IFNULL(MAX(alert_id), 0) FROM alerts)" if schema_version(db) >= 4 else "0"
    sql = (
        "SELECT (SELECT IFNULL(MAX(gate_seq), 0) FROM entries),"
        f" (SELECT IFNULL(MAX(rowid), 0) FROM peer_entries), {alerts}"
    )
    try:
        seq, peer, alert = db.execute(sql).fetchone()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal: {exc}") from exc
    return int(seq), int(peer), int(alert)


def alert_count(db: sqlite3.Connection) -> int:
    """How many security alerts the journal keeps. Raises JournalError."""
    if schema_version(db) < 4:
        return 0
    try:
        (n,) = db.execute("SELECT COUNT(*) FROM alerts").fetchone()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal: {exc}") from exc
    return int(n)


def problems(db: sqlite3.Connection) -> list[str]:
    """Integrity check failures and ``gate_seq`` holes; empty when the file is healthy."""
    found = [
        f"integrity: {row[0]}"
        for row in db.execute("PRAGMA integrity_check").fetchall()
        if row[0] != "ok"
    ]
    count, low, high, pruned = db.execute(
        f"SELECT COUNT(*), MIN(gate_seq), MAX(gate_seq), ({PRUNED_THROUGH}) FROM entries"
    ).fetchone()
    first = pruned + 1  # rows up to pruned_through went to retention (agent.journal.prune)
    if count and (low != first or high - pruned != count):
        holes = db.execute(
            "SELECT gate_seq - 1 FROM entries AS e WHERE gate_seq > ? AND NOT EXISTS "
            "(SELECT 1 FROM entries WHERE gate_seq = e.gate_seq - 1) ORDER BY gate_seq LIMIT ?",
            (first, _MAX_HOLES_REPORTED),
        ).fetchall()
        ends = ", ".join(str(row[0]) for row in holes)
        mark = f" (pruned through {pruned})" if pruned else ""
        found.append(
            f"gate_seq has holes: {count} rows span {low}..{high}{mark}; gaps end at {ends}"
        )
    return found


def decisions(
    db: sqlite3.Connection,
    after: int,
    *,
    denied: bool = False,
    duplicates: bool = False,
    ticket_ref: str | None = None,
    short: str | None = None,
    last: int | None = None,
) -> list[tuple[Any, ...]]:
    """Rows of ``entries`` past ``after`` as `gate-agent events` shows them (EVENT_COLUMNS).

    ``denied``: refused attempts only; ``duplicates``: ``already_used`` only; ``ticket_ref``: that
    ticket only; ``short``: the tickets of that short id only (every row is read then: a security
    command, not the scan path); ``last``: only the last so many matching rows. Oldest first.
    Raises JournalError.
    """
    where: list[str] = ["gate_seq > ?"]
    params: list[object] = [after]
    if denied:
        where.append("verdict = 'deny' AND kind = 'attempt'")
    if duplicates:
        where.append("reason = 'already_used'")
    _of_ticket(db, where, params, ticket_ref, short)
    sql = f"SELECT {EVENT_COLUMNS} FROM entries WHERE {' AND '.join(where)}"
    return _ordered(db, sql, params, "gate_seq", last)


def _of_ticket(
    db: sqlite3.Connection, where: list[str], params: list[object], ref: str | None,
    short: str | None,
) -> None:  # fmt: skip
    """Add the conditions "this ``ticket_ref``" and "this short id" (every row is read then: a
    security command, not the scan path) to a query being built."""
    if ref is not None:  # a pretix ticket's: its secret until synced, then its digest
        where.append("ticket_ref IN (?, ?)")
        params += [ref, shared_ref(ref)]
    if short is not None:
        db.create_function("short_id", 1, short_id, deterministic=True)
        where.append("short_id(ticket_ref) = ?")
        params.append(short)


def _ordered(
    db: sqlite3.Connection, sql: str, params: list[object], key: str, last: int | None
) -> list[tuple[Any, ...]]:
    """``sql``'s rows oldest first by ``key`` (only the last ``last``); raises JournalError."""
    sql += f" ORDER BY {key}"
    if last is not None:
        sql = f"SELECT * FROM ({sql} DESC LIMIT ?) ORDER BY {key}"
        params = [*params, int(last)]
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal: {exc}") from exc


def open_readonly(path: Path, gate_id: str | None = None) -> sqlite3.Connection:
    """A read-only connection to the journal at ``path``, for commands next to a running gate or
    a stopped one (:func:`agent.fsutil.sqlite_readonly`: no -wal/-shm files made, which, owned
    by whoever runs the command, often root, would lock the gate out of its own journal; a copy
    on read-only media reads too).

    Raises JournalError when there is no journal, it cannot be read, or (with ``gate_id``) it
    is another gate's.
    """
    if not path.exists():
        raise JournalError(f"{path}: no journal here (is [gate] state_dir right?)")
    try:
        db = sqlite3.connect(sqlite_readonly(path), uri=True, timeout=5)
        try:
            if is_empty(db):
                raise JournalError(f"{path}: an empty file: the gate makes its journal at start")
            require_journal(db, path, gate_id)
            db.execute("SELECT 1 FROM entries LIMIT 1")
        except BaseException:
            db.close()
            raise
    except sqlite3.Error as exc:
        raise failed(f"{path}: cannot read the journal", exc) from exc
    return db


def unusable(path: Path, gate_id: str) -> JournalError | None:
    """Why gate ``gate_id`` cannot open the journal at ``path``, read without writing anything
    (None: it can, or there is none yet): a JournalRefused for one it may not use (another
    gate's, a newer version's, not a journal or no database at all), a JournalError when SQLite
    cannot read it. Raises PermissionError for a folder this user may not look into."""
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(sqlite_readonly(path), uri=True)) as db:
            db.execute("PRAGMA schema_version").fetchone()
            if not is_empty(db):  # empty: where run makes its journal
                require_journal(db, path, gate_id)
    except JournalRefused as exc:
        return exc
    except sqlite3.Error as exc:
        return failed(str(path), exc)
    return None


def read_history(path: Path, ticket_ref: str, gate_name: str) -> list[HistoryEntry]:
    """Read a ticket's history from a journal file without writing to it (for CLI tools).

    Returns ``[]`` when the file does not exist. Raises JournalError when it cannot be read.
    """
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(sqlite_readonly(path), uri=True)  # as open_readonly
        try:
            if not is_empty(conn):
                require_journal(conn, path)  # a newer version's may keep rows elsewhere
            gate_id = stored_gate_id(conn) or ""
            return history(conn, gate_id, gate_name, ticket_ref, schema=schema_version(conn))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise failed(f"cannot read journal {path}", exc) from exc


def ref_hashes(db: sqlite3.Connection) -> list[Hashes]:
    """Hashes of the shared refs of every ticket with history here, read a chunk at a time, so
    100,000 refs never sit in memory as strings (:class:`agent.seen.SeenRefs` loads them)."""
    cursor = db.execute(REFS_WITH_HISTORY)
    parts = []
    while rows := cursor.fetchmany(_REFS_CHUNK):
        parts.append(SeenRefs.hashes(shared_ref(ref) for (ref,) in rows))
    return parts
