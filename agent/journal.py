"""The gate's durable journal: every decision, in order, before the gate moves.

One SQLite file per gate (WAL, ``synchronous=FULL``), written through aiosqlite. Each row of
``entries`` is an immutable fact and also the outbox row for upstream sync (``synced_at`` is the one
mutable column). ``gate_seq`` is gap-free: the database itself refuses any insert that is not
``MAX(gate_seq) + 1`` and any delete, so a power cut can lose at most the decision in flight, never
leave a hole. Entries learnt from other gates live in ``peer_entries``; :meth:`Journal.history`
merges both, ordered by hybrid logical clock.

Errors from SQLite become :class:`agent.errors.JournalError` naming the file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast, get_args

import aiosqlite

from agent.clock import HLC, HLC_MAX_AHEAD_S, PLAUSIBLE_HLC_MS, Clock, boot_id, uuid7
from agent.errors import JournalError
from agent.model import Decision, Flag, Reason, Verdict
from agent.redact import shared_ref
from agent.seen import SeenRefs

log = logging.getLogger(__name__)

Kind = Literal["entry", "exit", "attempt", "annul"]
KINDS: frozenset[str] = frozenset(get_args(Kind))

SCHEMA_VERSION = 1
# "GAJ1": marks the file as a gate-agent journal, so a stray SQLite file is refused.
APPLICATION_ID = 0x47414A31

# Lifted only by agent.app.retention, inside the transaction that prunes synced rows and puts it back.
NO_DELETE_TRIGGER = """CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END"""

# The highest gate_seq retention has pruned (0: none), written by agent.app.retention.
PRUNED_THROUGH = (
    "SELECT IFNULL((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'pruned_through'), 0)"
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS entries (
    gate_seq INTEGER PRIMARY KEY, entry_id TEXT NOT NULL UNIQUE,
    gate_id TEXT NOT NULL, lane TEXT NOT NULL, ticket_ref TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('entry', 'exit', 'attempt', 'annul')),
    verdict TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',
    flags TEXT NOT NULL DEFAULT '', annuls TEXT, zone INTEGER,
    wall_time REAL NOT NULL, clock_synced INTEGER NOT NULL, mono_ns INTEGER NOT NULL,
    boot_id TEXT NOT NULL, hlc INTEGER NOT NULL, rev_version INTEGER NOT NULL,
    offline INTEGER NOT NULL DEFAULT 1, synced_at REAL
);
CREATE INDEX IF NOT EXISTS entries_ticket_ref ON entries (ticket_ref);
CREATE INDEX IF NOT EXISTS entries_unsynced ON entries (gate_seq) WHERE synced_at IS NULL;
{NO_DELETE_TRIGGER};
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE OF
    gate_seq, entry_id, gate_id, lane, ticket_ref, kind, verdict, reason, detail, flags, annuls,
    zone, wall_time, clock_synced, mono_ns, boot_id, hlc, rev_version, offline
ON entries
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END;
-- Gap-free by construction, and no INSERT OR REPLACE can overwrite a fact (REPLACE deletes
-- without firing delete triggers).
CREATE TRIGGER IF NOT EXISTS entries_append_only BEFORE INSERT ON entries
WHEN NEW.gate_seq IS NOT (SELECT IFNULL(MAX(gate_seq), 0) + 1 FROM entries)
    OR EXISTS (SELECT 1 FROM entries WHERE entry_id = NEW.entry_id)
BEGIN SELECT RAISE(ABORT, 'journal entries are append-only with gap-free gate_seq'); END;
CREATE TABLE IF NOT EXISTS peer_entries (
    entry_id TEXT PRIMARY KEY, gate_id TEXT NOT NULL, gate_name TEXT NOT NULL,
    gate_seq INTEGER NOT NULL, ticket_ref TEXT NOT NULL, kind TEXT NOT NULL, annuls TEXT,
    wall_time REAL NOT NULL, hlc INTEGER NOT NULL, received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS peer_entries_ticket_ref ON peer_entries (ticket_ref);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
-- Mode changes of the gate (emergency free passage on/off): facts for security, not admissions.
CREATE TABLE IF NOT EXISTS gate_events (
    event_id INTEGER PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL, lane TEXT NOT NULL,
    wall_time REAL NOT NULL, clock_synced INTEGER NOT NULL, mono_ns INTEGER NOT NULL,
    boot_id TEXT NOT NULL, hlc INTEGER NOT NULL
);
"""

_INSERT_PEER = (
    "INSERT OR IGNORE INTO peer_entries (entry_id, gate_id, gate_name, gate_seq, ticket_ref, "
    "kind, annuls, wall_time, hlc, received_at) VALUES "
)
_PEER_CHUNK = 1000  # 10 parameters each: well under SQLite's 32,766 bound parameters
# Parameters: own gate_id, own gate_name, ticket_ref, ticket_ref, shared_ref(ticket_ref): peers'
# rows carry a pretix secret as its digest (older journals may hold the secret). Attempts are not
# admissions and never count against a ticket, so they stay out of history.
_HISTORY = """
SELECT kind, ? AS gate_id, ? AS gate_name, lane, wall_time, entry_id, annuls, hlc, 0 AS peer
    FROM entries WHERE ticket_ref = ? AND kind IN ('entry', 'exit', 'annul')
UNION ALL
SELECT kind, gate_id, gate_name, '' AS lane, wall_time, entry_id, annuls, hlc, 1 AS peer
    FROM peer_entries WHERE ticket_ref IN (?, ?) AND kind IN ('entry', 'exit', 'annul')
ORDER BY hlc, entry_id
"""
_HISTORY_KINDS = frozenset({"entry", "exit", "annul"})
_REFS_WITH_HISTORY = (
    "SELECT ticket_ref FROM entries WHERE kind IN ('entry', 'exit', 'annul')"
    " UNION ALL SELECT ticket_ref FROM peer_entries"
)
_REFS_CHUNK = 4096
_GATE_ID = "SELECT value FROM meta WHERE key = 'gate_id'"
_MAX_HOLES_REPORTED = 10
# Peer HLCs are capped far below the 63-bit column limit (physical part < 2**46 ms, year ~4199),
# so a bogus peer value cannot push our own HLC to overflow and stop recording.
_PEER_HLC_MAX = (1 << 62) - 1
_PEER_WALL_MAX = (_PEER_HLC_MAX >> 16) / 1000  # seconds: the HLC's physical range


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One admission-relevant event for a ticket, from this gate (``peer=False``) or another."""

    kind: str
    gate_id: str
    gate_name: str
    lane: str
    wall_time: float
    entry_id: str
    annuls: str | None
    hlc: int
    peer: bool


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """One row of this gate's journal, exactly as stored."""

    gate_seq: int
    entry_id: str
    gate_id: str
    lane: str
    ticket_ref: str
    kind: Kind
    verdict: Verdict
    reason: Reason
    detail: str
    flags: frozenset[Flag]
    annuls: str | None
    zone: int | None
    wall_time: float
    clock_synced: bool
    mono_ns: int
    boot_id: str
    hlc: int
    rev_version: int
    offline: bool
    synced_at: float | None

    def _params(self) -> tuple[Any, ...]:
        """The row's column values, in ``_FIELDS`` order, as SQLite stores them."""
        values = {name: getattr(self, name) for name in _FIELDS}
        values["flags"] = ",".join(sorted(f.value for f in self.flags))
        return tuple(values.values())


# The columns of ``entries`` are exactly the fields of EntryRecord, in order.
_FIELDS = tuple(f.name for f in fields(EntryRecord))
_COLUMNS = ", ".join(_FIELDS)
_INSERT = f"INSERT INTO entries ({_COLUMNS}) VALUES ({', '.join('?' * len(_FIELDS))})"


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """An entry recorded by another gate, as learnt from the hub's venue feed."""

    entry_id: str
    gate_id: str
    gate_name: str
    gate_seq: int
    ticket_ref: str
    kind: str
    annuls: str | None
    wall_time: float
    hlc: int


class Journal:
    """This gate's journal. Open with :meth:`open`; one instance per file and process."""

    def __init__(
        self, db: aiosqlite.Connection, path: Path, gate_id: str, gate_name: str, clock: Clock
    ) -> None:
        """Use :meth:`open`; this only wires an already prepared connection."""
        self._db: aiosqlite.Connection | None = db
        self._path = path
        self._gate_id = gate_id
        self._gate_name = gate_name
        self._clock = clock
        self._hlc = HLC()
        # Every ticket_ref that has history here: a scan of a ticket never seen (the usual case)
        # skips the database. Over-inclusion only costs a query, never a decision.
        self._refs = SeenRefs()
        self._boot_id = boot_id()
        # None means "unknown, reload from the database before the next insert".
        self._next_seq: int | None = None
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, gate_id: str, gate_name: str, clock: Clock) -> Journal:
        """Open (creating if needed) the journal at ``path`` for gate ``gate_id``.

        Recovers the next ``gate_seq``, the HLC and the clock floor from the stored rows.
        Raises JournalError when the file cannot be opened, is not a gate-agent journal, has an
        unsupported schema version, or belongs to another gate.
        """
        if not gate_id:
            raise ValueError("gate_id must not be empty")
        if not path.parent.is_dir():
            raise JournalError(f"cannot open journal {path}: {path.parent} is not a directory")
        connecting = aiosqlite.connect(path, isolation_level=None)
        try:
            db = await connecting
        except sqlite3.Error as exc:
            # aiosqlite stops its thread without waiting for it: wait here, or the thread
            # reports to an event loop that may be closed by then (an exception in a thread).
            thread = getattr(connecting, "_thread", None)
            if thread is not None:
                await asyncio.to_thread(thread.join, 5.0)
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        journal = cls(db, path, gate_id, gate_name, clock)
        try:
            await journal._prepare()
        except BaseException:
            await journal.close()
            raise
        return journal

    @property
    def path(self) -> Path:
        return self._path

    @property
    def gate_id(self) -> str:
        return self._gate_id

    @property
    def gate_name(self) -> str:
        return self._gate_name

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def history(self, ticket_ref: str) -> list[HistoryEntry]:
        """Entries, exits and annulments of ``ticket_ref`` at this gate and at peers, in HLC order.

        Raises JournalError.
        """
        if shared_ref(ticket_ref) not in self._refs:
            self._require_open()
            return []
        params = (self._gate_id, self._gate_name, ticket_ref, ticket_ref, shared_ref(ticket_ref))
        rows = await self._fetchall(_HISTORY, params)
        return [_history_entry(row) for row in rows]

    async def record(
        self,
        *,
        ticket_ref: str,
        kind: Kind,
        decision: Decision,
        lane: str,
        rev_version: int,
        zone: int | None = None,
        annuls: str | None = None,
        offline: bool = True,
    ) -> EntryRecord:
        """Append one decision; it is durable (committed and fsync'd) when this returns.

        ``annuls`` names the ``entry_id`` an ``annul`` row cancels and is required for that kind
        only. Raises ValueError for such misuse and JournalError when the row cannot be written
        (then no ``gate_seq`` is consumed).
        """
        if kind not in KINDS:
            raise ValueError(f"unknown journal kind {kind!r}")
        if (kind == "annul") != (annuls is not None):
            raise ValueError("annuls is required for kind 'annul' and only for it")
        async with self._lock:
            db = self._require_open()
            seq = self._next_seq if self._next_seq is not None else await self._load_next_seq()
            reading = self._clock.reading()
            wall_ms = int(reading.now * 1000)
            rec = EntryRecord(
                gate_seq=seq, entry_id=str(uuid7(wall_ms)), gate_id=self._gate_id, lane=lane,
                ticket_ref=ticket_ref, kind=kind, verdict=decision.verdict,
                reason=decision.reason, detail=decision.detail, flags=decision.flags,
                annuls=annuls, zone=zone, wall_time=reading.now, clock_synced=reading.synced,
                mono_ns=time.monotonic_ns(), boot_id=self._boot_id,
                hlc=self._hlc.tick(wall_ms), rev_version=rev_version, offline=offline,
                synced_at=None,
            )  # fmt: skip
            await self._append(db, rec)
        if reading.synced:
            # Only trusted readings raise the floor: an unsynchronised clock running ahead would
            # otherwise pin the floor in the future and mark the clock untrusted after NTP fixes it.
            self._clock.raise_floor(reading.now)
        return rec

    async def record_event(self, kind: str, value: str, lane: str) -> None:
        """Append a gate mode change (e.g. ``emergency``/``on``), durable on return.

        Raises JournalError.
        """
        db = self._require_open()
        reading = self._clock.reading()
        wall_ms = int(reading.now * 1000)
        params = (
            kind,
            value,
            lane,
            reading.now,
            int(reading.synced),
            time.monotonic_ns(),
            self._boot_id,
            self._hlc.tick(wall_ms),
        )
        try:
            await db.execute(
                "INSERT INTO gate_events (kind, value, lane, wall_time, clock_synced, mono_ns,"
                " boot_id, hlc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                params,
            )
        except sqlite3.Error as exc:
            raise self._error("cannot record gate event", exc) from exc

    async def events(self) -> list[tuple[str, str, str, float]]:
        """Recorded gate mode changes, oldest first: (kind, value, lane, wall_time)."""
        rows = await self._fetchall(
            "SELECT kind, value, lane, wall_time FROM gate_events ORDER BY event_id", ()
        )
        return [(str(k), str(v), str(ln), float(t)) for k, v, ln, t in rows]

    async def add_peer_entries(
        self, entries: Iterable[PeerEntry], *, hlc_ceiling_ms: int | None = None
    ) -> int:
        """Store entries learnt from other gates; returns how many were new.

        Idempotent by ``entry_id``. Each chunk of up to 1,000 entries (a hub batch is at most
        500) is one multi-row INSERT, hence one transaction. This gate's own entries (echoed by
        the hub) are skipped, malformed ones too, with a warning. A pretix secret is stored as its
        digest (:func:`agent.model.shared_ref`). A row whose HLC lies past ``hlc_ceiling_ms`` (the
        best time this gate knows plus the allowed lead, Unix ms; by default this gate's clock plus
        HLC_MAX_AHEAD_S) is stored, but does not move this gate's HLC: one bogus row cannot push
        every later row of the venue out of range.
        Raises JournalError.
        """
        batch = [
            dataclasses.replace(e, ticket_ref=shared_ref(e.ticket_ref))
            for e in entries
            if self._acceptable_peer(e)
        ]
        self._refs.update(e.ticket_ref for e in batch)
        db = self._require_open()
        received_at = self._clock.now()
        inserted = 0
        # Single statements, never BEGIN ... COMMIT across awaits: record() shares this
        # connection, and its INSERT must never land inside (and die with) a peer transaction.
        for start in range(0, len(batch), _PEER_CHUNK):
            chunk = batch[start : start + _PEER_CHUNK]
            rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            params = [value for e in chunk for value in _peer_params(e, received_at)]
            try:
                cursor = await db.execute(_INSERT_PEER + rows, params)
            except sqlite3.Error as exc:
                raise self._error("cannot store peer entries", exc) from exc
            inserted += cursor.rowcount
        wall_ms = int(received_at * 1000)
        if hlc_ceiling_ms is None:
            hlc_ceiling_ms = wall_ms + int(HLC_MAX_AHEAD_S * 1000)
        ahead = 0
        for entry in batch:
            if HLC.physical_ms(entry.hlc) > hlc_ceiling_ms:
                ahead += 1
                continue
            self._hlc.observe(entry.hlc, wall_ms)
        if ahead:
            log.warning("%d peer entries carry an HLC too far ahead of the best known time;"
                        " stored, not followed", ahead)  # fmt: skip
        return inserted

    async def unsynced(self, limit: int = 500) -> list[EntryRecord]:
        """Up to ``limit`` entries not yet acknowledged upstream, oldest first.

        Raises JournalError.
        """
        sql = f"SELECT {_COLUMNS} FROM entries WHERE synced_at IS NULL ORDER BY gate_seq LIMIT ?"
        return [_entry_record(row) for row in await self._fetchall(sql, (limit,))]

    async def outbox(self) -> tuple[int, float | None]:
        """How many entries await acknowledgement upstream, and the oldest one's wall time.

        Raises JournalError.
        """
        count, oldest = await self._one(
            "SELECT COUNT(*), (SELECT wall_time FROM entries WHERE synced_at IS NULL"
            " ORDER BY gate_seq LIMIT 1) FROM entries WHERE synced_at IS NULL"
        )
        return int(count), None if oldest is None else float(oldest)

    async def mark_synced(self, through_seq: int, at: float) -> None:
        """Mark every unsynced entry with ``gate_seq <= through_seq`` as acknowledged at ``at``.

        Raises JournalError.
        """
        db = self._require_open()
        sql = "UPDATE entries SET synced_at = ? WHERE synced_at IS NULL AND gate_seq <= ?"
        try:
            await db.execute(sql, (at, through_seq))
        except sqlite3.Error as exc:
            raise self._error("cannot mark entries synced", exc) from exc

    async def checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it; False when a reader blocked it.

        SQLite checkpoints on its own every 1,000 pages, but a reader holding a snapshot can
        keep the WAL growing; the daemon calls this periodically so the file stays bounded.
        Raises JournalError.
        """
        busy, _pages, _done = await self._one("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(busy) == 0

    async def count(self) -> int:
        """The number of own entries on file (pruned ones not counted). Raises JournalError."""
        (count,) = await self._one("SELECT COUNT(*) FROM entries")
        return int(count)

    async def tail(self, n: int) -> list[EntryRecord]:
        """The last ``n`` own entries, oldest first. Raises JournalError."""
        sql = (
            f"SELECT {_COLUMNS} FROM (SELECT * FROM entries ORDER BY gate_seq DESC LIMIT ?) "
            "ORDER BY gate_seq"
        )
        return [_entry_record(row) for row in await self._fetchall(sql, (n,))]

    async def check(self) -> list[str]:
        """Problems found in the file: integrity check failures and ``gate_seq`` holes.

        An empty list means healthy. Raises JournalError when the checks cannot run.
        """
        problems = [
            f"integrity: {row[0]}"
            for row in await self._fetchall("PRAGMA integrity_check", ())
            if row[0] != "ok"
        ]
        count, low, high, pruned = await self._one(
            f"SELECT COUNT(*), MIN(gate_seq), MAX(gate_seq), ({PRUNED_THROUGH}) FROM entries"
        )
        first = pruned + 1  # rows up to pruned_through went to retention (agent.app.retention)
        if count and (low != first or high - pruned != count):
            holes = await self._fetchall(
                "SELECT gate_seq - 1 FROM entries AS e WHERE gate_seq > ? AND NOT EXISTS "
                "(SELECT 1 FROM entries WHERE gate_seq = e.gate_seq - 1) ORDER BY gate_seq LIMIT ?",
                (first, _MAX_HOLES_REPORTED),
            )
            ends = ", ".join(str(row[0]) for row in holes)
            mark = f" (pruned through {pruned})" if pruned else ""
            problems.append(
                f"gate_seq has holes: {count} rows span {low}..{high}{mark}; gaps end at {ends}"
            )
        return problems

    async def close(self) -> None:
        """Close the database connection. Idempotent."""
        db, self._db = self._db, None
        if db is not None:
            try:
                await db.close()
            except sqlite3.Error as exc:
                raise self._error("cannot close journal", exc) from exc

    async def _prepare(self) -> None:
        """Set pragmas, create or verify the schema, claim or check the gate, recover state."""
        db = self._require_open()
        try:
            await db.execute("PRAGMA busy_timeout = 5000")
            (mode,) = await self._one("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise self._error("cannot open journal", exc) from exc
        (app_id,) = await self._one("PRAGMA application_id")
        (version,) = await self._one("PRAGMA user_version")
        if app_id == 0 and version == 0:
            await self._initialise(db)
        elif app_id != APPLICATION_ID:
            raise JournalError(f"{self._path} is not a gate-agent journal")
        elif version != SCHEMA_VERSION:
            raise JournalError(
                f"journal {self._path} has schema version {version}; "
                f"this agent supports {SCHEMA_VERSION}"
            )
        await self._claim_gate(db)
        await self._recover()
        if mode != "wal":
            log.warning("journal %s is not in WAL mode (%s)", self._path, mode)

    async def _initialise(self, db: aiosqlite.Connection) -> None:
        """Create the schema in an empty file, atomically (header pragmas are transactional)."""
        if await self._fetchall("SELECT name FROM sqlite_schema", ()):
            raise JournalError(f"{self._path} is a database but not a gate-agent journal")
        # One script, one transaction: a crash leaves either no schema or all of it, header
        # pragmas included.
        script = (
            f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA application_id = {APPLICATION_ID};"
            f"PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
        )
        try:
            await db.executescript(script)
        except sqlite3.Error as exc:
            await _rollback(db)
            raise self._error("cannot create journal", exc) from exc
        log.info("created journal %s", self._path)

    async def _claim_gate(self, db: aiosqlite.Connection) -> None:
        """Bind a new journal to this gate; refuse a journal of another gate."""
        rows = await self._fetchall(_GATE_ID, ())
        if rows and rows[0][0] != self._gate_id:
            raise JournalError(
                f"journal {self._path} belongs to gate {rows[0][0]!r}, not {self._gate_id!r}"
            )
        # Names may change (a gate relabelled); identity may not.
        try:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES ('gate_id', ?), ('gate_name', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (self._gate_id, self._gate_name),
            )
        except sqlite3.Error as exc:
            raise self._error("cannot write journal meta", exc) from exc

    async def _recover(self) -> None:
        """Restore the counter, the HLC and the clock floor from the stored rows.

        HLC values a bogus peer row pushed ahead before HLCs were bounded are not restored, so the
        gate's rows are accepted by peers again: with a synchronised clock, those more than
        HLC_MAX_AHEAD_S past the latest time the clock or the journal knows; without one (its
        clock may be behind its honest peers'), only those no clock could produce.
        """
        last_seq, last_wall, last_synced_wall = await self._one(
            "SELECT (SELECT IFNULL(MAX(gate_seq), 0) FROM entries),"
            " (SELECT MAX(IFNULL((SELECT MAX(wall_time) FROM entries), 0),"
            "  IFNULL((SELECT MAX(received_at) FROM peer_entries), 0))),"
            " (SELECT MAX(wall_time) FROM entries WHERE clock_synced = 1)"
        )
        reading = self._clock.reading()
        best_ms = int((max(reading.now, float(last_wall)) + HLC_MAX_AHEAD_S) * 1000)
        ceiling = (best_ms if reading.synced else PLAUSIBLE_HLC_MS) + 1 << 16
        (hlc,) = await self._one(
            "SELECT MAX(IFNULL((SELECT MAX(hlc) FROM entries WHERE hlc < ?1), 0),"
            " IFNULL((SELECT MAX(hlc) FROM peer_entries WHERE hlc < ?1), 0),"
            " IFNULL((SELECT MAX(hlc) FROM gate_events WHERE hlc < ?1), 0))",
            (ceiling,),
        )
        self._next_seq = int(last_seq) + 1
        self._hlc = HLC(int(hlc))
        await self._load_refs()
        if last_synced_wall is not None:
            self._clock.raise_floor(float(last_synced_wall))
        log.info("journal %s: gate %s, next gate_seq %d", self._path, self._gate_id, last_seq + 1)

    async def _append(self, db: aiosqlite.Connection, rec: EntryRecord) -> None:
        """Insert ``rec`` (autocommit: durable on return) and advance the counter past it."""
        # Any failure, cancellation included, may leave the insert's fate unknown to us: forget
        # the counter and re-read it, so the next insert neither repeats nor skips a gate_seq.
        self._next_seq = None
        if rec.kind in _HISTORY_KINDS:
            self._refs.add(shared_ref(rec.ticket_ref))  # before the insert: its fate may be unknown
        try:
            await db.execute(_INSERT, rec._params())
        except sqlite3.Error as exc:
            raise self._error("cannot record entry", exc) from exc
        self._next_seq = rec.gate_seq + 1

    async def _load_refs(self) -> None:
        """Fill the ref filter a chunk at a time: 100,000 refs never sit in memory as strings."""
        db = self._require_open()
        parts = []
        try:
            async with db.execute(_REFS_WITH_HISTORY) as cur:
                while rows := await cur.fetchmany(_REFS_CHUNK):
                    parts.append(SeenRefs.hashes(shared_ref(ref) for (ref,) in rows))
        except sqlite3.Error as exc:
            raise self._error("cannot read journal", exc) from exc
        self._refs.load(parts)

    async def _load_next_seq(self) -> int:
        (last,) = await self._one("SELECT IFNULL(MAX(gate_seq), 0) FROM entries")
        self._next_seq = int(last) + 1
        return self._next_seq

    def _acceptable_peer(self, entry: PeerEntry) -> bool:
        if entry.gate_id == self._gate_id:
            return False
        # A wall time outside the HLC's range (or NaN) would break every later decision that
        # shows it to staff ("Gate 3, 19:02:11"), so such an entry is refused here.
        wall_ok = math.isfinite(entry.wall_time) and 0 <= entry.wall_time <= _PEER_WALL_MAX
        if entry.kind not in KINDS or not 0 <= entry.hlc <= _PEER_HLC_MAX or not wall_ok:
            log.warning(
                "skipping malformed peer entry %s from gate %s", entry.entry_id, entry.gate_id
            )
            return False
        return True

    async def _fetchall(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        db = self._require_open()
        try:
            return cast(list[tuple[Any, ...]], list(await db.execute_fetchall(sql, params)))
        except sqlite3.Error as exc:
            raise self._error("cannot read journal", exc) from exc

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The single row of a query that always returns exactly one."""
        return (await self._fetchall(sql, params))[0]

    def _require_open(self) -> aiosqlite.Connection:
        if self._db is None:
            raise JournalError(f"journal {self._path} is closed")
        return self._db

    def _error(self, what: str, exc: sqlite3.Error) -> JournalError:
        return JournalError(f"{what} ({self._path}): {exc}")


def read_history(path: Path, ticket_ref: str, gate_name: str) -> list[HistoryEntry]:
    """Read a ticket's history from a journal file without writing to it (for CLI tools).

    Returns ``[]`` when the file does not exist. Raises JournalError when it cannot be read.
    """
    if not path.exists():
        return []
    # With no -wal file there is no live writer and nothing uncheckpointed. Reading it as
    # immutable then creates no -wal/-shm files, which, owned by whoever runs the tool (often
    # root), would lock the daemon's user out of its own journal.
    live = path.with_name(path.name + "-wal").exists()
    uri = f"{path.resolve().as_uri()}?mode=ro{'' if live else '&immutable=1'}"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            gate = conn.execute(_GATE_ID).fetchone()
            gate_id = "" if gate is None else str(gate[0])
            params = (gate_id, gate_name, ticket_ref, ticket_ref, shared_ref(ticket_ref))
            rows = conn.execute(_HISTORY, params).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read journal {path}: {exc}") from exc
    return [_history_entry(row) for row in rows]


async def _rollback(db: aiosqlite.Connection) -> None:
    """Roll back after a failure; SQLite may already have done so, which is not a new fault."""
    try:
        await db.execute("ROLLBACK")
    except sqlite3.Error:
        log.debug("rollback after a failed transaction", exc_info=True)


def _peer_params(e: PeerEntry, received_at: float) -> tuple[Any, ...]:
    """Column values for ``peer_entries``: the PeerEntry fields in order, then ``received_at``."""
    return (*(getattr(e, f.name) for f in fields(PeerEntry)), received_at)


def _history_entry(row: Sequence[Any]) -> HistoryEntry:
    # Column affinities (TEXT, REAL, INTEGER) already give the field types; only peer is a flag.
    kind, gate_id, gate_name, lane, wall_time, entry_id, annuls, hlc, peer = row
    return HistoryEntry(
        kind, gate_id, gate_name, lane, wall_time, entry_id, annuls, hlc, bool(peer)
    )


def _entry_record(row: Sequence[Any]) -> EntryRecord:
    values = dict(zip(_FIELDS, row, strict=True))
    values["verdict"] = Verdict(values["verdict"])
    values["reason"] = Reason(values["reason"])
    values["flags"] = frozenset(Flag(f) for f in values["flags"].split(",") if f)
    values["clock_synced"] = bool(values["clock_synced"])
    values["offline"] = bool(values["offline"])
    return EntryRecord(**values)
