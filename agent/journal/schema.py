"""The journal's SQL schema: the one place that creates, checks and changes it.

``gate_seq`` is gap-free by construction: triggers refuse any insert that is not
``MAX(gate_seq) + 1``, any delete and any update of a fact (``synced_at`` and ``order_hlc``, the
venue's order of the row, are the mutable columns). Retention lifts the delete guard only inside
its own transaction (:func:`without_delete_guard`). No other module writes journal DDL; the
insert statements live here too, beside the columns they name.

Every function here runs on a plain :class:`sqlite3.Connection` (the journal's own thread, or a
short-lived connection of a command) and lets :class:`sqlite3.Error` through.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.errors import JournalError, JournalRefused
from agent.fsutil import not_a_database
from agent.journal.checkpoint import WAL_SIZE_LIMIT, WRITER_AUTOCHECKPOINT
from agent.journal.records import COLUMNS, FIELDS
from agent.redact import shared_ref

log = logging.getLogger("agent.journal")

# 2: entries.code_time (rotating tickets), rev_key; 3: entries.order_hlc; 4: the alerts table;
# 5: a synced row's pretix secret kept as its digest; 6: peer_entries.claimed
SCHEMA_VERSION = 6
# Bytes per database page, for new journals. A decision's commit writes a page of each b-tree it
# touches (the rows, and the indexes on entry_id, ticket_ref and unsynced rows) to the WAL before
# its fsync: 1 KiB pages write a quarter of SQLite's default 4 KiB for the same row, which took
# the admit p50 in bench_decision.py from 1.67-1.78x the floor to 1.59-1.64x (the file's size is
# the same: 30 MB per 100,000 rows either way).
PAGE_SIZE = 1024
# "GAJ1": marks the file as a gate-agent journal, so a stray SQLite file is refused.
APPLICATION_ID = 0x47414A31

INSERT_ENTRY = f"INSERT INTO entries ({COLUMNS}) VALUES ({', '.join('?' * len(FIELDS))})"
_INSERT_PEER = (
    "INSERT INTO peer_entries (entry_id, gate_id, gate_name, gate_seq, ticket_ref, kind, annuls,"
    " wall_time, hlc, received_at, claimed) VALUES "
)
# The venue's order of one of this gate's rows, from the hub's echo of it: only ever earlier.
SET_ORDER = "UPDATE entries SET order_hlc = ? WHERE entry_id = ? AND IFNULL(order_hlc, hlc) > ?"
# One alert per entry and finding: the same finding learnt again (a restart, a list read anew)
# is no second alert. Only that conflict is ignored (OR IGNORE would pass over a NOT NULL
# violation too, as if the alert had been kept before: a review).
INSERT_ALERT = (
    "INSERT INTO alerts (kind, finding, entry_id, ticket_ref, other, at, other_at, detail,"
    " raised_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (entry_id, finding) DO NOTHING"
)
INSERT_EVENT = (
    "INSERT INTO gate_events (kind, value, lane, wall_time, clock_synced, mono_ns, boot_id, hlc)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

_NO_DELETE_TRIGGER = """CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END"""

# The trigger as schema 2 to 4 had it (ticket_ref among the rest), for the upgrade from 1: an
# upgrade cut short at 2, 3 or 4 leaves no ref unguarded.
_NO_UPDATE_TRIGGER_2 = """CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE OF
    gate_seq, entry_id, gate_id, lane, ticket_ref, kind, verdict, reason, detail, flags, annuls,
    zone, wall_time, clock_synced, mono_ns, boot_id, hlc, rev_version, offline, code_time,
    rev_key
ON entries
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END"""

_NO_UPDATE_TRIGGER = """CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE OF
    gate_seq, entry_id, gate_id, lane, kind, verdict, reason, detail, flags, annuls,
    zone, wall_time, clock_synced, mono_ns, boot_id, hlc, rev_version, offline, code_time,
    rev_key
ON entries
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END"""

# A pretix ticket's ref is its secret ("pretix:" + secret), which its check-in is uploaded
# with. Once the row is synced the secret is needed no more, and a copy of the journal (or a
# stolen unit's disk) would hand out every ticket it decided on: the ref becomes its digest
# (agent.redact.shared_ref, "pretix-sha256:" + 64 hex digits), the one change a ref may take:
# its own digest, as the row is marked synced (a review: a check of the digest's shape only let
# an UPDATE hide a row under another ticket's digest). The SQL function shared_ref is the
# writer's (:func:`configure`): elsewhere an UPDATE of a ref fails closed.
_REF_TRIGGER = """CREATE TRIGGER IF NOT EXISTS entries_ref_digest_only BEFORE UPDATE OF ticket_ref
ON entries WHEN NEW.ticket_ref IS NOT OLD.ticket_ref AND NOT (OLD.ticket_ref GLOB 'pretix:*'
    AND NEW.ticket_ref = shared_ref(OLD.ticket_ref) AND OLD.synced_at IS NULL
    AND NEW.synced_at IS NOT NULL)
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END"""
# Marking rows synced: a pretix row's secret becomes its digest (its own statement: a ref in
# the SET list of every row rewrote the ref index for all of them, a review measured 5x the
# WAL bytes per batch on a gate without pretix tickets).
_SYNCED = "UPDATE entries SET synced_at = ? WHERE synced_at IS NULL AND gate_seq {} ?"
_SYNCED_PRETIX = (
    "UPDATE entries SET synced_at = ?, ticket_ref = shared_ref(ticket_ref)"
    " WHERE synced_at IS NULL AND gate_seq {} ? AND ticket_ref GLOB 'pretix:*'"
)

# Schema 1 -> 2: the code time of a rotating ticket's admission (NULL for every other row), the
# ticket's revocation key (hex; NULL where unknown: forged texts, rows from schema 1), and the
# immutability trigger covering both. (Each step sets its version; :func:`ensure` runs every step
# a journal needs in one transaction: an upgrade cut short, or failing on a full disk, leaves
# the journal as it was, which the version before still opens.)
_UPGRADE_1_TO_2 = f"""
ALTER TABLE entries ADD COLUMN code_time INTEGER;
ALTER TABLE entries ADD COLUMN rev_key TEXT;
DROP TRIGGER IF EXISTS entries_no_update;
{_NO_UPDATE_TRIGGER_2};
PRAGMA user_version = 2;"""

# Schema 2 -> 3: the HLC the venue orders the row by, when the hub's feed gives it an earlier one
# than the gate's own (a row of this gate whose clock ran ahead counts there as of its arrival:
# sync.hub_plan.as_of_arrival); NULL: the row's own HLC.
_UPGRADE_2_TO_3 = """
ALTER TABLE entries ADD COLUMN order_hlc INTEGER;
PRAGMA user_version = 3;"""

# Security alerts about this gate's own entries found after the decision (by the upstream: another
# device's entry standing before it, its order no longer valid). Beside the entries, not among
# them: a finding is no decision. Tickets as their shared ref (agent.redact.shared_ref): never a
# pretix secret, which retention would otherwise never remove from here.
_ALERTS = """CREATE TABLE IF NOT EXISTS alerts (
    alert_id INTEGER PRIMARY KEY, kind TEXT NOT NULL, finding TEXT NOT NULL,
    entry_id TEXT NOT NULL, ticket_ref TEXT NOT NULL, other TEXT NOT NULL, at REAL NOT NULL,
    other_at REAL, detail TEXT NOT NULL, raised_at REAL NOT NULL, UNIQUE (entry_id, finding)
)"""

# Schema 3 -> 4: the alerts table.
_UPGRADE_3_TO_4 = f"""
{_ALERTS};
PRAGMA user_version = 4;"""

# Schema 4 -> 5: the synced rows' pretix secrets as their digests, and the peers' (learnt before
# 2026-12-02 under the secret), then the ref's own trigger (dropped first: a journal taken back
# to schema 4 keeps it, and it refuses the turning of rows an older version synced: a trial).
_UPGRADE_4_TO_5 = f"""
DROP TRIGGER IF EXISTS entries_no_update;
DROP TRIGGER IF EXISTS entries_ref_digest_only;
UPDATE entries SET ticket_ref = shared_ref(ticket_ref)
    WHERE synced_at IS NOT NULL AND ticket_ref GLOB 'pretix:*';
UPDATE peer_entries SET ticket_ref = shared_ref(ticket_ref) WHERE ticket_ref GLOB 'pretix:*';
{_NO_UPDATE_TRIGGER};
{_REF_TRIGGER};
PRAGMA user_version = 5;"""
# A claim (an admission of a gate whose uploads the hub refuses, sync.hub_claims) is marked
# among the rows learnt from other gates until the venue's feed brings that row.
_UPGRADE_5_TO_6 = """
ALTER TABLE peer_entries ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0;
PRAGMA user_version = 6;"""
_UPGRADES = {
    1: _UPGRADE_1_TO_2, 2: _UPGRADE_2_TO_3, 3: _UPGRADE_3_TO_4, 4: _UPGRADE_4_TO_5,
    5: _UPGRADE_5_TO_6,
}  # fmt: skip
_UPGRADED = {
    2: "rotating tickets' code times", 3: "the venue's order of its rows",
    4: "security alerts kept", 5: "synced pretix secrets as digests",
    6: "claims learnt from the hub marked",
}  # fmt: skip

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS entries (
    gate_seq INTEGER PRIMARY KEY, entry_id TEXT NOT NULL UNIQUE,
    gate_id TEXT NOT NULL, lane TEXT NOT NULL, ticket_ref TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('entry', 'exit', 'attempt', 'annul')),
    verdict TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',
    flags TEXT NOT NULL DEFAULT '', annuls TEXT, zone INTEGER,
    wall_time REAL NOT NULL, clock_synced INTEGER NOT NULL, mono_ns INTEGER NOT NULL,
    boot_id TEXT NOT NULL, hlc INTEGER NOT NULL, rev_version INTEGER NOT NULL,
    offline INTEGER NOT NULL DEFAULT 1, synced_at REAL, code_time INTEGER, rev_key TEXT,
    order_hlc INTEGER
);
CREATE INDEX IF NOT EXISTS entries_ticket_ref ON entries (ticket_ref);
CREATE INDEX IF NOT EXISTS entries_unsynced ON entries (gate_seq) WHERE synced_at IS NULL;
{_NO_DELETE_TRIGGER};
{_NO_UPDATE_TRIGGER};
{_REF_TRIGGER};
-- Gap-free by construction, and no INSERT OR REPLACE can overwrite a fact (REPLACE deletes
-- without firing delete triggers).
CREATE TRIGGER IF NOT EXISTS entries_append_only BEFORE INSERT ON entries
WHEN NEW.gate_seq IS NOT (SELECT IFNULL(MAX(gate_seq), 0) + 1 FROM entries)
    OR EXISTS (SELECT 1 FROM entries WHERE entry_id = NEW.entry_id)
BEGIN SELECT RAISE(ABORT, 'journal entries are append-only with gap-free gate_seq'); END;
CREATE TABLE IF NOT EXISTS peer_entries (
    entry_id TEXT PRIMARY KEY, gate_id TEXT NOT NULL, gate_name TEXT NOT NULL,
    gate_seq INTEGER NOT NULL, ticket_ref TEXT NOT NULL, kind TEXT NOT NULL, annuls TEXT,
    wall_time REAL NOT NULL, hlc INTEGER NOT NULL, received_at REAL NOT NULL,
    claimed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS peer_entries_ticket_ref ON peer_entries (ticket_ref);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
-- Mode changes of the gate (emergency free passage on/off): facts for security, not admissions.
CREATE TABLE IF NOT EXISTS gate_events (
    event_id INTEGER PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL, lane TEXT NOT NULL,
    wall_time REAL NOT NULL, clock_synced INTEGER NOT NULL, mono_ns INTEGER NOT NULL,
    boot_id TEXT NOT NULL, hlc INTEGER NOT NULL
);
{_ALERTS};
"""


def insert_peers(db: sqlite3.Connection, params: Sequence[Any], rows: int, claimed: bool) -> int:
    """Insert ``rows`` peer rows (``params``: their :func:`records.peer_params`, in a row);
    returns how many are new. A row held already is left as it is, but for a claim the venue's
    feed brings, from the claim's own gate (the hub takes a gate's rows only with its token):
    no longer marked claimed (counted as new)."""
    one = f"(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {int(claimed)})"
    sql = _INSERT_PEER + ", ".join([one] * rows) + " ON CONFLICT (entry_id) DO "
    if claimed:
        sql += "NOTHING"
    else:
        sql += "UPDATE SET claimed = 0 WHERE peer_entries.claimed <> 0"
        sql += " AND peer_entries.gate_id = excluded.gate_id"
    return int(db.execute(sql, params).rowcount)


def forget_peer_releases(db: sqlite3.Connection, entry_ids: Sequence[str]) -> int:
    """Delete the exits and annulments learnt from other gates with these ids; how many."""
    marks = ", ".join("?" * len(entry_ids))
    sql = f"DELETE FROM peer_entries WHERE kind IN ('exit', 'annul') AND entry_id IN ({marks})"
    return int(db.execute(sql, tuple(entry_ids)).rowcount)


def set_order(db: sqlite3.Connection, echoes: list[tuple[int, str, int]]) -> int:
    """Set the venue's order of this gate's echoed rows (``SET_ORDER`` parameters), in one
    transaction; returns how many rows moved."""
    with _immediate(db):
        placed = db.executemany(SET_ORDER, echoes).rowcount
    return int(placed)


def mark_synced(db: sqlite3.Connection, at: float, through_seq: int, *, only: bool) -> None:
    """Mark the unsynced rows up to ``through_seq`` (``only``: that one) synced at ``at``, a
    pretix row's ref turned into its digest, in one transaction (the writer's connection)."""
    which = "=" if only else "<="
    with _immediate(db):
        db.execute(_SYNCED_PRETIX.format(which), (at, through_seq))
        db.execute(_SYNCED.format(which), (at, through_seq))


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """The body as one write transaction: committed, or rolled back when it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def configure(db: sqlite3.Connection) -> str:
    """Set the writer's pragmas (WAL, ``synchronous=FULL``, its own checkpoints only as a bound:
    :mod:`agent.journal.checkpoint`); returns the journal mode in force."""
    db.execute("PRAGMA busy_timeout = 5000")
    # A new file only (an existing one keeps its pages): it must precede WAL mode to take effect.
    db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
    db.execute("PRAGMA synchronous = FULL")
    db.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT}")
    db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")  # an SD card keeps no huge WAL
    # A ref changed to its digest leaves no copy of the secret in the page (_REF_TRIGGER).
    db.execute("PRAGMA secure_delete = ON")
    db.create_function("shared_ref", 1, shared_ref, deterministic=True)
    return str(mode)


def ensure(db: sqlite3.Connection, path: Path, gate_id: str) -> None:
    """Create the schema in an empty file, or check that the file holds a journal we can use
    (``gate_id``'s, before anything is upgraded) and upgrade it, all steps in one transaction
    and then its WAL checkpointed (the pages of before hold what the upgrade turned).

    Raises JournalRefused for a file that is not a gate-agent journal, another gate's, or of an
    unsupported schema version; sqlite3.Error when SQLite fails.
    """
    (app_id,) = db.execute("PRAGMA application_id").fetchone()
    found = version(db)
    if app_id == 0 and found == 0:
        _initialise(db, path)
    elif app_id != APPLICATION_ID:
        raise JournalRefused(f"{path} is not a gate-agent journal")
    elif found in _UPGRADES:
        if (bound := owner(db)) not in (None, gate_id):  # another gate's: left as it is
            raise JournalRefused(f"journal {path} belongs to gate {bound!r}, not {gate_id!r}")
        steps = "".join(_UPGRADES[v] for v in range(found, SCHEMA_VERSION))
        _run_script(db, f"BEGIN IMMEDIATE;{steps}COMMIT;")
        for v in range(found + 1, SCHEMA_VERSION + 1):
            log.info("journal %s upgraded to schema %d (%s)", path, v, _UPGRADED[v])
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    elif found != SCHEMA_VERSION:
        raise JournalRefused(
            f"journal {path} has schema version {found}; this agent supports {SCHEMA_VERSION}"
        )


def failed(text: str, exc: sqlite3.Error) -> JournalError:
    """``exc`` as the JournalError to raise, ``text`` saying what failed: for a file that is
    not an SQLite database at all (SQLITE_NOTADB) a JournalRefused, as starting again cannot
    mend it."""
    return (JournalRefused if not_a_database(exc) else JournalError)(f"{text}: {exc}")


def version(db: sqlite3.Connection) -> int:
    """The schema version of the journal ``db`` holds (an older file a command reads as it is)."""
    (found,) = db.execute("PRAGMA user_version").fetchone()
    return int(found)


def is_empty(db: sqlite3.Connection) -> bool:
    """Whether ``db`` is an empty database (a new or 0-byte file): the gate makes its journal in
    it at start."""
    (app_id,) = db.execute("PRAGMA application_id").fetchone()
    if app_id != 0 or version(db) != 0:
        return False
    return db.execute("SELECT name FROM sqlite_schema LIMIT 1").fetchone() is None


def require_journal(db: sqlite3.Connection, path: Path, gate_id: str | None = None) -> None:
    """Raise JournalRefused unless ``db`` is a gate-agent journal of a schema this version knows
    (for tools opening the file: one of a newer version may keep rows where this one does not
    look, e.g. schema 5's pretix refs as digests: a trial; an older one is read as it is), and
    with ``gate_id`` unless it is that gate's or no gate's yet."""
    (app_id,) = db.execute("PRAGMA application_id").fetchone()
    if app_id != APPLICATION_ID:
        raise JournalRefused(f"{path} is not a gate-agent journal")
    if (found := version(db)) > SCHEMA_VERSION:
        raise JournalRefused(
            f"{path}: journal schema version {found}, of a newer gate-agent; this one reads up"
            f" to {SCHEMA_VERSION} (run the version that wrote it)"
        )
    if gate_id is not None and (bound := owner(db)) not in (None, gate_id):
        raise JournalRefused(f"{path}: the journal of gate {bound!r}, not {gate_id!r} ([gate] id)")


def owner(db: sqlite3.Connection) -> str | None:
    """The gate a journal is bound to (None: not yet); reads only."""
    row = db.execute("SELECT value FROM meta WHERE key = 'gate_id'").fetchone()
    return None if row is None else str(row[0])


def claim_gate(db: sqlite3.Connection, path: Path, gate_id: str, gate_name: str) -> None:
    """Bind a new journal to this gate; raise JournalRefused for a journal of another gate."""
    bound = owner(db)
    if bound is not None and bound != gate_id:
        raise JournalRefused(f"journal {path} belongs to gate {bound!r}, not {gate_id!r}")
    # Names may change (a gate relabelled); identity may not.
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('gate_id', ?), ('gate_name', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (gate_id, gate_name),
    )


@contextmanager
def without_delete_guard(db: sqlite3.Connection) -> Iterator[None]:
    """Lift the trigger that refuses deletes of entries for the body, then put it back.

    Only for retention, inside a transaction the caller holds: a crash or an error rolls the
    lifting back with the rest.
    """
    if not db.in_transaction:
        raise RuntimeError("the delete guard may only be lifted inside a transaction")
    db.execute("DROP TRIGGER IF EXISTS entries_no_delete")
    yield
    db.execute(_NO_DELETE_TRIGGER)


def _initialise(db: sqlite3.Connection, path: Path) -> None:
    """Create the schema in an empty file, atomically (header pragmas are transactional)."""
    if not is_empty(db):  # another program's database: left exactly as it is
        raise JournalRefused(f"{path} is a database but not a gate-agent journal")
    # One script, one transaction: a crash leaves either no schema or all of it, header
    # pragmas included.
    _run_script(
        db,
        f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA application_id = {APPLICATION_ID};"
        f"PRAGMA user_version = {SCHEMA_VERSION};COMMIT;",
    )
    log.info("created journal %s", path)


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run ``script`` (one transaction); roll back what it began when it fails."""
    try:
        db.executescript(script)
    except sqlite3.Error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
