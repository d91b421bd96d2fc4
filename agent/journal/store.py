"""The Journal: this gate's durable record of every decision, in order, before the gate moves.

One SQLite file per gate (WAL, ``synchronous=FULL``), owned by one writer thread
(:mod:`agent.journal.writer`). Each row of ``entries`` is an immutable fact and also the outbox
row for upstream sync; ``gate_seq`` is gap-free (the schema refuses anything else, see
:mod:`agent.journal.schema`), so a power cut can lose at most the decision in flight, never leave
a hole. Entries learnt from other gates live in ``peer_entries``; :meth:`Journal.history` merges
both, ordered by hybrid logical clock.

The ``gate_seq`` counter and the HLC live on the writer thread and change only in its jobs: the
thread always knows whether an insert landed, even when the coroutine that asked was cancelled.
Errors from SQLite become :class:`agent.errors.JournalError` naming the file.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import agent.journal.queries as queries
import agent.journal.schema as schema
from agent.clock import HLC, HLC_MAX_AHEAD_S, PLAUSIBLE_HLC_MS, Clock, ClockReading, boot_id, uuid7
from agent.errors import JournalError
from agent.journal.checkpoint import Checkpointer
from agent.journal.records import (
    HISTORY_KINDS,
    KINDS,
    AlertRecord,
    DecisionNotRecorded,
    EntryRecord,
    HistoryEntry,
    Kind,
    PeerEntry,
    RowDraft,
    acceptable_peer,
    alert_params,
    entry_params,
    peer_params,
)
from agent.journal.writer import WriterThread
from agent.model import Decision
from agent.redact import shared_ref
from agent.seen import SeenRefs

log = logging.getLogger("agent.journal")

T = TypeVar("T")

_PEER_CHUNK = 1000  # 10 parameters each: well under SQLite's 32,766 bound parameters


class Journal:
    """This gate's journal. Open with :meth:`open`; one instance per file and process."""

    def __init__(
        self, writer: WriterThread, path: Path, gate_id: str, gate_name: str, clock: Clock
    ) -> None:
        """Use :meth:`open`; this only wires an already started writer thread."""
        self._writer: WriterThread | None = writer
        self._path = path
        self._gate_id = gate_id
        self._gate_name = gate_name
        self._clock = clock
        self._boot_id = boot_id()
        # Writer-thread state: touched only inside jobs.
        self._hlc = HLC()
        # None means "unknown, reload from the database before the next insert".
        self._next_seq: int | None = None
        # Loop state: every ticket_ref that has history here. A scan of a ticket never seen (the
        # usual case) skips the database. Over-inclusion only costs a query, never a decision.
        self._refs = SeenRefs()
        self._checkpointer = Checkpointer(path)  # WAL checkpoints off the decision path

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
        writer = WriterThread(f"journal:{path.name}")
        try:
            await writer.start(
                lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        journal = cls(writer, path, gate_id, gate_name, clock)
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

    async def known_peer_ids(self, entry_ids: Sequence[str]) -> set[str]:
        """Which of ``entry_ids`` are already stored as peer entries. Raises JournalError."""
        ids = list(entry_ids)
        return await self._read(lambda db: queries.known_peer_ids(db, ids)) if ids else set()

    async def history(self, ticket_ref: str) -> list[HistoryEntry]:
        """Entries, exits and annulments of ``ticket_ref`` at this gate and at peers, in HLC order.

        Raises JournalError.
        """
        writer = self._require_open()
        if shared_ref(ticket_ref) not in self._refs:
            return []
        return await self._run(
            writer, "cannot read journal", lambda db: self._history(db, ticket_ref)
        )

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
        row = self._row(ticket_ref, kind, lane, rev_version, zone, annuls, offline)
        writer = self._require_open()
        self._remember(row)
        rec = await self._run(
            writer, "cannot record entry", lambda db: self._insert(db, row, decision)
        )
        self._raise_floor(row.reading)
        self._checkpointer.wrote()
        return rec

    def expect_write(self) -> None:
        """A decision will be recorded shortly: start waking the writer thread now, so its
        wake-up overlaps the signature check (:meth:`WriterThread.wake`)."""
        if self._writer is not None:
            self._writer.wake()

    async def decide_and_record(
        self,
        ticket_ref: str,
        decide: Callable[[Sequence[HistoryEntry]], Decision],
        *,
        admit_as: Kind,
        lane: str,
        rev_version: int,
        zone: int | None = None,
        offline: bool = True,
        with_history: bool = True,
        code_time: int | None = None,
        rev_key: str | None = None,
    ) -> tuple[Decision, EntryRecord]:
        """Read the ticket's history, decide and record the decision: ONE job on the writer thread.

        ``decide`` gets the history (as :meth:`history` returns it; empty without
        ``with_history``) and must be pure: it runs on the writer thread, between the read and the
        insert, so no other write can come in between. An admission is recorded as ``admit_as``
        (entry or exit), anything else as an attempt. The row is durable (committed and fsync'd)
        when this returns; the decision and the row are returned. ``code_time`` (a rotating
        ticket's code) is kept on the row, so a later code of the same ticket must be newer;
        ``rev_key`` (the verified ticket's revocation key, hex) lets the hub revoke a ticket by
        its short id.

        Raises DecisionNotRecorded (a JournalError carrying the decision) when the row cannot be
        written, JournalError when the history cannot be read (nothing decided then), and what
        ``decide`` raises.
        """
        if admit_as not in ("entry", "exit"):
            raise ValueError(f"admissions are recorded as entry or exit, not {admit_as!r}")
        probe = dataclasses.replace(
            self._row(ticket_ref, admit_as, lane, rev_version, zone, None, offline),
            code_time=code_time,
            rev_key=rev_key,
        )
        writer = self._require_open()
        known = False
        if with_history:
            # Before the job: an admission's ref must be known even if this caller is
            # cancelled. A denial's ref then costs its next scans one indexed read, in this job.
            known = not self._refs.add(shared_ref(ticket_ref))

        def job(db: sqlite3.Connection) -> tuple[Decision, EntryRecord]:
            try:
                past = self._history(db, ticket_ref) if known else []
            except sqlite3.Error as exc:
                raise self._error("cannot read journal", exc) from exc
            decision = decide(past)
            row = probe if decision.admitted else dataclasses.replace(probe, kind="attempt")
            try:
                return decision, self._insert(db, row, decision)
            except sqlite3.Error as exc:
                raise DecisionNotRecorded(
                    self._error("cannot record entry", exc), decision
                ) from exc

        decision, rec = await writer.run(job)
        self._raise_floor(probe.reading)
        self._checkpointer.wrote()
        return decision, rec

    async def record_event(self, kind: str, value: str, lane: str) -> None:
        """Append a gate mode change (``emergency``/``on``), durable on return; raises JournalError."""
        writer = self._require_open()
        reading, mono_ns = self._clock.reading(), time.monotonic_ns()

        def insert(db: sqlite3.Connection) -> None:
            hlc = self._hlc.tick(int(reading.now * 1000))
            params = (kind, value, lane, reading.now, int(reading.synced), mono_ns, self._boot_id)
            db.execute(schema.INSERT_EVENT, (*params, hlc))

        await self._run(writer, "cannot record gate event", insert)
        self._checkpointer.wrote()

    async def events(self) -> list[tuple[str, str, str, float]]:
        """Recorded gate mode changes, oldest first: (kind, value, lane, wall_time)."""
        return await self._read(queries.gate_events)

    async def record_alert(self, alert: AlertRecord) -> bool:
        """Keep a security alert about one of this gate's entries, durable on return; False when
        one of its finding about its entry was kept before (learnt again after a restart).
        Raises JournalError."""
        kept = dataclasses.replace(
            alert, ticket_ref=shared_ref(alert.ticket_ref), raised_at=self._clock.reading().now
        )

        def insert(db: sqlite3.Connection) -> bool:
            return bool(db.execute(schema.INSERT_ALERT, alert_params(kept)).rowcount == 1)

        new = await self._run(self._require_open(), "cannot record alert", insert)
        self._checkpointer.wrote()
        return new

    async def alerts(self, last: int) -> tuple[int, list[AlertRecord]]:
        """How many alerts are kept, and the last ``last``, oldest first. Raises JournalError."""
        return await self._read(lambda db: (queries.alert_count(db), queries.alerts(db, last=last)))

    async def add_peer_entries(
        self,
        entries: Iterable[PeerEntry],
        *,
        hlc_ceiling_ms: int | None = None,
        claimed: bool = False,
    ) -> int:
        """Store entries learnt from other gates (``claimed``: the hub's claims, marked until the
        venue's feed brings them, :func:`schema.insert_peers`); returns how many were new.

        Idempotent by ``entry_id``. Each chunk of up to 1,000 entries (a hub batch is at most
        500) is one multi-row INSERT, hence one transaction. This gate's own entries (echoed by
        the hub) are not stored again; an echo's earlier HLC becomes the row's place in history
        (``order_hlc``: the venue orders a row from a clock ahead as of its arrival). Malformed
        entries are skipped with a warning. A pretix secret is stored as its
        digest (:func:`agent.model.shared_ref`). A row whose HLC lies past ``hlc_ceiling_ms`` (the
        best time this gate knows plus the allowed lead, Unix ms; by default this gate's clock plus
        HLC_MAX_AHEAD_S) is stored, but does not move this gate's HLC: one bogus row cannot push
        every later row of the venue out of range.
        Raises JournalError.
        """
        entries = list(entries)
        batch = [
            dataclasses.replace(e, ticket_ref=shared_ref(e.ticket_ref))
            for e in entries
            if acceptable_peer(e, self._gate_id)
        ]
        self._refs.update(e.ticket_ref for e in batch)
        writer = self._require_open()
        echoes = [(e.hlc, e.entry_id, e.hlc) for e in entries if e.gate_id == self._gate_id]
        if echoes:
            placed = await self._run(writer, "cannot store the venue's order",
                                     functools.partial(schema.set_order, echoes=echoes))  # fmt: skip
            self._checkpointer.wrote()
            if placed:
                log.info("%d of this gate's rows placed earlier, as the venue orders them (its"
                         " clock ran ahead of the hub's)", placed)  # fmt: skip
        received_at = self._clock.now()
        wall_ms = int(received_at * 1000)
        ceiling = (
            wall_ms + int(HLC_MAX_AHEAD_S * 1000) if hlc_ceiling_ms is None else hlc_ceiling_ms
        )
        inserted = 0
        # One job per chunk, each its own statement and transaction: a decision's insert may
        # run between two chunks instead of waiting for all of them.
        for start in range(0, len(batch), _PEER_CHUNK):
            chunk = batch[start : start + _PEER_CHUNK]
            inserted += await self._run(
                writer,
                "cannot store peer entries",
                functools.partial(self._insert_peers, chunk, received_at, claimed),
            )
            self._checkpointer.wrote()
        ahead = [e.hlc for e in batch if HLC.physical_ms(e.hlc) > ceiling]
        if len(ahead) < len(batch):
            followed = [e.hlc for e in batch if HLC.physical_ms(e.hlc) <= ceiling]
            await self._run(
                writer, "cannot store peer entries", lambda _: self._observe(followed, wall_ms)
            )
        if ahead and inserted:  # not again for entries that came before (pretix lists them again)
            log.warning("%d peer entries carry an HLC too far ahead of the best known time;"
                        " stored, not followed", len(ahead))  # fmt: skip
        return inserted

    async def unsynced(self, limit: int = 500, after_seq: int = 0) -> list[EntryRecord]:
        """Up to ``limit`` entries not yet acknowledged upstream after ``after_seq``, oldest
        first. Raises JournalError."""
        return await self._read(lambda db: queries.unsynced(db, limit, after_seq))

    async def outbox(self) -> tuple[int, float | None]:
        """How many entries await acknowledgement upstream, and the oldest one's wall time.
        Raises JournalError."""
        return await self._read(queries.outbox)

    async def mark_synced(self, through_seq: int, at: float, *, only: bool = False) -> None:
        """Mark every unsynced entry with ``gate_seq <= through_seq`` as acknowledged at ``at``;
        with ``only``, that one entry (an upstream that may take rows out of order).
        Raises JournalError."""
        # A pretix secret is needed no more: kept as its digest (schema._REF_TRIGGER).
        writer = self._require_open()
        await self._run(
            writer, "cannot mark entries synced",
            lambda db: schema.mark_synced(db, at, through_seq, only=only),
        )  # fmt: skip
        self._checkpointer.wrote()

    async def forget_peer_releases(self, entry_ids: Sequence[str]) -> int:
        """Forget the exits and annulments learnt from other gates with these entry ids (rows a
        quarantine at the hub set apart: a copy of a gate's token wrote them); returns how many
        were held. Entries stay: a ticket they made used stays used. Raises JournalError."""

        writer, forgotten = self._require_open(), 0
        for start in range(0, len(entry_ids), _PEER_CHUNK):
            chunk = entry_ids[start : start + _PEER_CHUNK]
            job = functools.partial(schema.forget_peer_releases, entry_ids=chunk)
            forgotten += await self._run(writer, "cannot forget set-apart rows", job)
        self._checkpointer.wrote()
        return forgotten

    async def checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it; False when a reader (or a background
        checkpoint running at that moment) blocked it.

        Background checkpoints (:mod:`agent.journal.checkpoint`) keep the WAL small, but a reader
        holding a snapshot can keep it growing; the daemon calls this hourly as well.
        Raises JournalError.
        """
        busy, _pages, _done = await self._read(
            lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        )
        return int(busy) == 0

    async def recent(self, since: float) -> list[queries.RecentRow]:
        """Own rows since ``since`` (wall time), in order: (lane, kind, wall_time, entry_id,
        annuls). Raises JournalError."""
        return await self._read(lambda db: queries.recent(db, since))

    async def count(self) -> int:
        """The number of own entries on file (pruned ones not counted). Raises JournalError."""
        return await self._read(queries.count)

    async def tail(self, n: int) -> list[EntryRecord]:
        """The last ``n`` own entries, oldest first. Raises JournalError."""
        return await self._read(lambda db: queries.tail(db, n))

    async def check(self) -> list[str]:
        """Problems found in the file: integrity check failures and ``gate_seq`` holes (none:
        healthy). Raises JournalError when the checks cannot run."""
        return await self._read(queries.problems)

    async def close(self) -> None:
        """Close the database connection. Idempotent."""
        await self._checkpointer.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                await writer.stop()
            except sqlite3.Error as exc:
                raise self._error("cannot close journal", exc) from exc

    # --- on the loop --------------------------------------------------------------------------

    def _row(
        self,
        ticket_ref: str,
        kind: Kind,
        lane: str,
        rev_version: int,
        zone: int | None,
        annuls: str | None,
        offline: bool,
    ) -> RowDraft:
        """Check a row's arguments (raises ValueError) and take the clock reading for it."""
        if kind not in KINDS:
            raise ValueError(f"unknown journal kind {kind!r}")
        if (kind == "annul") != (annuls is not None):
            raise ValueError("annuls is required for kind 'annul' and only for it")
        reading = self._clock.reading()
        return RowDraft(ticket_ref, kind, lane, rev_version, zone, annuls, offline, reading)

    def _remember(self, row: RowDraft) -> None:
        """Add the row's ref to the filter before its insert is submitted: its fate may be
        unknown to the caller (cancelled), and a ref missing from the filter would hide history."""
        if row.kind in HISTORY_KINDS:
            self._refs.add(shared_ref(row.ticket_ref))

    def _raise_floor(self, reading: ClockReading) -> None:
        # Only the system's trusted readings raise the floor: an unsynchronised clock running
        # ahead would otherwise pin the floor in the future and mark the clock untrusted after
        # NTP fixes it; a hub's time is used while fresh and never written down (agent.clock).
        if reading.synced and reading.source != "hub":
            self._clock.raise_floor(reading.now)

    async def _run(
        self, writer: WriterThread, what: str, job: Callable[[sqlite3.Connection], T]
    ) -> T:
        try:
            return await writer.run(job)
        except sqlite3.Error as exc:
            raise self._error(what, exc) from exc

    async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return await self._run(self._require_open(), "cannot read journal", job)

    def _require_open(self) -> WriterThread:
        if self._writer is None:
            raise JournalError(f"journal {self._path} is closed")
        return self._writer

    def _error(self, what: str, exc: sqlite3.Error) -> JournalError:
        return schema.failed(f"{what} ({self._path})", exc)

    # --- on the writer thread -----------------------------------------------------------------

    def _history(self, db: sqlite3.Connection, ticket_ref: str) -> list[HistoryEntry]:
        return queries.history(db, self._gate_id, self._gate_name, ticket_ref)

    def _insert(self, db: sqlite3.Connection, row: RowDraft, decision: Decision) -> EntryRecord:
        """Insert one row (autocommit: durable on return) and advance the counter past it."""
        # Any failure may leave the insert's fate unclear (an I/O error at commit): forget the
        # counter and re-read it, so the next insert neither repeats nor skips a gate_seq.
        seq = self._next_seq if self._next_seq is not None else queries.last_gate_seq(db) + 1
        self._next_seq = None
        wall_ms = int(row.reading.now * 1000)
        rec = EntryRecord(
            gate_seq=seq, entry_id=str(uuid7(wall_ms)), gate_id=self._gate_id, lane=row.lane,
            ticket_ref=row.ticket_ref, kind=row.kind, verdict=decision.verdict,
            reason=decision.reason, detail=decision.detail, flags=decision.flags,
            annuls=row.annuls, zone=row.zone, wall_time=row.reading.now,
            clock_synced=row.reading.synced, mono_ns=time.monotonic_ns(), boot_id=self._boot_id,
            hlc=self._hlc.tick(wall_ms), rev_version=row.rev_version, offline=row.offline,
            synced_at=None, code_time=row.code_time, rev_key=row.rev_key,
        )  # fmt: skip
        db.execute(schema.INSERT_ENTRY, entry_params(rec, hub_time=row.reading.source == "hub"))
        self._next_seq = seq + 1
        return rec

    def _insert_peers(
        self, chunk: Sequence[PeerEntry], received_at: float, claimed: bool, db: sqlite3.Connection
    ) -> int:
        params = [value for e in chunk for value in peer_params(e, received_at)]
        return schema.insert_peers(db, params, len(chunk), claimed)

    def _observe(self, hlcs: Sequence[int], wall_ms: int) -> None:
        for hlc in hlcs:
            self._hlc.observe(hlc, wall_ms)

    async def _prepare(self) -> None:
        """Set pragmas, create or verify the schema, claim or check the gate, recover state."""
        writer = self._require_open()
        mode = await self._run(writer, "cannot open journal", schema.configure)
        await self._run(
            writer,
            "cannot create or upgrade the journal",
            lambda db: schema.ensure(db, self._path, self._gate_id),
        )
        await self._run(
            writer,
            "cannot write journal meta",
            lambda db: schema.claim_gate(db, self._path, self._gate_id, self._gate_name),
        )
        last_synced_wall = await self._run(writer, "cannot read journal", self._recover)
        await self._load_refs(writer)
        if last_synced_wall is not None:
            self._clock.raise_floor(last_synced_wall)
        if mode != "wal":
            log.warning("journal %s is not in WAL mode (%s)", self._path, mode)

    def _recover(self, db: sqlite3.Connection) -> float | None:
        """Restore the counter and the HLC; returns the latest synced wall time (clock floor).

        HLC values a bogus peer row pushed ahead before HLCs were bounded are not restored, so the
        gate's rows are accepted by peers again: with a synchronised clock, those more than
        HLC_MAX_AHEAD_S past the latest time the clock or the journal knows; without one (its
        clock may be behind its honest peers'), only those no clock could produce.
        """
        last_seq, last_wall, last_synced_wall = queries.recovery_marks(db)
        reading = self._clock.reading()
        best_ms = int((max(reading.now, last_wall) + HLC_MAX_AHEAD_S) * 1000)
        ceiling = (best_ms if reading.synced else PLAUSIBLE_HLC_MS) + 1 << 16
        self._next_seq = last_seq + 1
        self._hlc = HLC(queries.max_hlc_below(db, ceiling))
        log.info("journal %s: gate %s, next gate_seq %d", self._path, self._gate_id, last_seq + 1)
        return last_synced_wall

    async def _load_refs(self, writer: WriterThread) -> None:
        """Fill the ref filter a chunk at a time: 100,000 refs never sit in memory as strings."""
        self._refs.load(await self._run(writer, "cannot read journal", queries.ref_hashes))
