"""The hub store on one SQLite file: the default, no other service to run.

One dedicated thread owns the connection (the aiosqlite pattern, sync.hub_sqlite_db; a second,
read-only one reads the token every request carries): every public method is one job on it, so
a batch's transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``, WAL, ``synchronous=FULL``: an
acknowledgement means durable) never interleaves with another job, and no reader ever sees rows of
an uncommitted batch. Batches that wait for the thread together share one transaction (group
commit, each under its own savepoint). The ingest rules are :mod:`sync.hub_rules`'s. Long-polls
wait on an in-process event that each committed batch with feed rows sets.

The file is marked and bound to its venue, so a stray SQLite file or another venue's store is
refused (:mod:`sync.hub_sqlite_db`). SQLite errors become HubStoreError.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sync import (
    hub_claims,
    hub_quarantine,
    hub_rules,
    hub_sql,
    hub_sqlite_revocations,
    hub_sqlite_runs,
    hub_twins,
    protocol,
)
from sync.group_commit import GroupCommit
from sync.hub_plan import NewAlert
from sync.hub_sql import ENTRY_COLUMNS
from sync.hub_sqlite_console import SQLiteConsoleQueries
from sync.hub_sqlite_db import ConnectionThread, connect, read_only, transaction, wal
from sync.hub_sqlite_known import known_state, last_received, raised
from sync.hub_store import (
    FeedSignal,
    HubPolicy,
    HubStoreError,
    NameTakenError,
    Quarantine,
    QuarantinedRow,
    RevocationState,
    Role,
    TokenGoneError,
    TokenInfo,
    UploadQuota,
    check_gate_name,
    check_limit,
    check_token,
)
from sync.hub_venue_sql import VENUE_ROWS, VenueRow, venue_row
from sync.protocol import Alert, BatchAck, EntryWire, FeedEntry, GateHealth, Heartbeat

log = logging.getLogger(__name__)


_INSERT_ENTRY = "INSERT INTO entries ({}) VALUES ({})".format(
    ", ".join(ENTRY_COLUMNS), ", ".join("?" * len(ENTRY_COLUMNS))
)
_INSERT_ENTRY_AT = "INSERT INTO entries (cursor, {}) VALUES (?, {})".format(
    ", ".join(ENTRY_COLUMNS), ", ".join("?" * len(ENTRY_COLUMNS))
)
_HEARTBEAT = hub_sql.heartbeat_sql(numbered=False)
_GATES = (
    "SELECT gate_id, gate_name, last_seen, outbox_depth, revocation_version, revocation_age_s,"
    " clock_synced, version, faults FROM gates"
    " UNION ALL SELECT DISTINCT gate_id, '', NULL, 0, 0, NULL, 0, '', '[]' FROM tokens"
    " WHERE gate_id IS NOT NULL AND gate_id NOT IN (SELECT gate_id FROM gates)"
    " ORDER BY gate_id"
)

_T = TypeVar("_T")
_GROUP_MAX = 8  # uploads per group commit: 4,000 rows at most in one transaction


@dataclass(frozen=True, slots=True)
class _Upload:
    gate_id: str
    entries: Sequence[EntryWire]
    now: float
    token_hash: str | None


class SQLiteHubStore(SQLiteConsoleQueries):
    """The hub store in one SQLite file. Open with :meth:`open`; one instance per file."""

    def __init__(
        self,
        path: Path,
        policy: HubPolicy,
        writer: ConnectionThread,
        reader: ConnectionThread | None,
    ) -> None:
        """Use :meth:`open`; this only wires prepared connections and their threads."""
        self._path = path
        self._writer = writer
        self._reader = reader  # tokens (None: a store not in WAL reads them on the writer)
        self._policy = policy
        self.feed_signal = FeedSignal()
        self._quota = UploadQuota(policy.upload_rows_per_s, policy.upload_burst)
        self._revocations: RevocationState | None = None  # cache of the last state read/written
        self._uploads = GroupCommit[_Upload, hub_rules.IngestPlan](
            self._commit_group, max_group=_GROUP_MAX, own_error=self._own_error,
            closing=lambda: HubStoreError(f"hub store {self._path} is closing"),
        )  # fmt: skip

    @classmethod
    async def open(cls, path: str | Path, policy: HubPolicy) -> SQLiteHubStore:
        """Open (creating when missing) the store at ``path`` for ``policy.venue``.

        Raises HubStoreError when the file cannot be opened, is not a hub store (or another
        version of it), or belongs to another venue.
        """
        path = Path(path)
        writer = await ConnectionThread.open(path, lambda p: connect(p, policy.venue), "hub-sqlite")
        try:
            in_wal = await writer.run(wal)
            reader = (
                await ConnectionThread.open(path, read_only, "hub-sqlite-read") if in_wal else None
            )
        except BaseException:
            await writer.close()
            raise
        log.info("hub store %s (venue %s) open", path, policy.venue)
        return cls(path, policy, writer, reader)

    @property
    def policy(self) -> HubPolicy:
        return self._policy

    async def ingest(
        self,
        gate_id: str,
        entries: Sequence[EntryWire],
        now: float,
        *,
        token_hash: str | None = None,
    ) -> BatchAck:
        """Store a batch and raise its alerts (see :class:`HubStore`); durable on return.

        Uploads that arrive while the thread is busy are committed together (group commit: one
        transaction and one fsync for up to ``_GROUP_MAX`` batches, each batch under its own
        savepoint, planned after the ones before it as if alone), so gates uploading at once
        share the commit's cost. A batch that fails is rolled back alone.

        Raises ConflictError (only the conflict alerts were stored), TokenGoneError,
        HubStoreError, and ValueError for a batch that is empty, of another gate or not ascending.
        """
        protocol.check_batch(gate_id, entries)
        upload = _Upload(gate_id, entries, now, token_hash)
        return hub_rules.ack(await self._uploads.submit(upload), now)

    async def _commit_group(
        self, group: Sequence[_Upload]
    ) -> list[hub_rules.IngestPlan | Exception]:
        plans = await self._run(lambda db: self._commit_on_thread(db, group))
        if any(not isinstance(p, Exception) and p.feed_rows for p in plans):
            self.feed_signal.wake()
        return plans

    def _commit_on_thread(
        self, db: sqlite3.Connection, group: Sequence[_Upload]
    ) -> list[hub_rules.IngestPlan | Exception]:
        """The group in one transaction; when it fails, the quota spent on it is given back
        (here, on the store's thread: the quota's only user, even if the caller was cancelled)."""
        charged: list[tuple[str, int, float]] = []  # (gate, rows, allowance) spent on the quota
        try:
            return transaction(db, self._ingest_group, group, charged)
        except BaseException:
            for gate_id, rows, allowance in reversed(charged):  # nothing of it was stored
                self._quota.refund(gate_id, rows, allowance)  # latest first: each to its cap
            raise

    def _own_error(self, exc: Exception) -> Exception:
        """Each caller of a failed group raises a store error of its own, caused by ``exc``."""
        if not isinstance(exc, HubStoreError):
            return exc  # a bug: as it is
        error = HubStoreError(str(exc))
        error.__cause__ = exc
        return error

    def _ingest_group(
        self,
        db: sqlite3.Connection,
        group: Sequence[_Upload],
        charged: list[tuple[str, int, float]],
    ) -> list[hub_rules.IngestPlan | Exception]:
        """Each upload under its own savepoint: one that fails is undone alone (on the thread,
        inside the group's transaction)."""
        plans: list[hub_rules.IngestPlan | Exception] = []
        for upload in group:
            db.execute("SAVEPOINT upload")
            try:
                _check_token(db, upload)
                plans.append(
                    self._ingest_job(db, upload.gate_id, upload.entries, upload.now, charged)
                )
            except Exception as exc:
                db.execute("ROLLBACK TO upload")
                if isinstance(exc, sqlite3.Error):
                    error = HubStoreError(f"hub store {self._path}: {exc}")
                    error.__cause__ = exc
                    plans.append(error)
                else:
                    plans.append(exc)
            db.execute("RELEASE upload")
        return plans

    async def feed(self, after: int, limit: int) -> tuple[list[FeedEntry], int]:
        """Entries/exits/annulments with cursor > ``after``, oldest first, and the next cursor:
        the last one returned; without entries ``after``, or the store's highest cursor when
        ``after`` is beyond it (a new store: the reader sees ``next < after`` and starts over).

        Raises HubStoreError.
        """
        check_limit(limit)
        return await self._run(lambda db: _feed(db, after, limit, self._policy.max_clock_ahead_s))

    async def wait_feed(self, after: int, wait_s: float) -> None:
        """Return once the feed has an entry after ``after``, or after ``wait_s`` seconds.

        Raises HubStoreError.
        """
        await self.feed_signal.wait(
            lambda: self._run(lambda db: _has_feed_after(db, after)), wait_s
        )

    async def venue_rows(self, after: int, limit: int) -> list[VenueRow]:
        """Rows with cursor > ``after`` for the venue's tallies (see :class:`HubStore`).

        Raises HubStoreError, and ValueError for a limit below 1.
        """
        check_limit(limit)
        rows = await self._run(lambda db: db.execute(VENUE_ROWS, (after, limit)).fetchall())
        return [venue_row(row) for row in rows]

    async def alerts(self, after: int, limit: int) -> list[Alert]:
        """Alerts with ``alert_id`` > ``after``, oldest first. Raises HubStoreError."""
        check_limit(limit)
        rows = await self._run(lambda db: db.execute(hub_sql.ALERTS, (after, limit)).fetchall())
        return [hub_sql.alert_of(row, self._policy.venue, json.loads) for row in rows]

    async def recent_alerts(self, before: int | None, limit: int) -> list[Alert]:
        """Alerts with ``alert_id`` < ``before`` (None: all), newest first. Raises HubStoreError."""
        check_limit(limit)
        params = (protocol.INT63 if before is None else before, limit)
        rows = await self._run(lambda db: db.execute(hub_sql.RECENT_ALERTS, params).fetchall())
        return [hub_sql.alert_of(row, self._policy.venue, json.loads) for row in rows]

    async def set_gate_name(self, gate_id: str, name: str) -> None:
        """Set a gate's display name. Raises NameTakenError (another gate has it), ValueError
        (not a valid name) and HubStoreError."""
        check_gate_name(name)
        await self._run(lambda db: transaction(db, _set_gate_name, gate_id, name))

    async def heartbeat(self, hb: Heartbeat, now: float) -> None:
        """Record a gate's health as of ``now``. Raises HubStoreError."""
        params = hub_sql.heartbeat_params(hb, json.dumps(list(hb.faults)), now)
        await self._run(lambda db: db.execute(_HEARTBEAT, params))

    async def note_run(self, gate_id: str, run_id: str, address: str, now: float) -> list[NewAlert]:
        """See :class:`HubStore` (:mod:`sync.hub_sqlite_runs`). Raises HubStoreError."""
        seen = hub_twins.Seen(gate_id, run_id, address, now)

        def job(db: sqlite3.Connection) -> list[NewAlert]:
            def insert(a: NewAlert) -> bool:
                return int(db.execute(hub_sql.INSERT_ALERT, _alert_params(a, "", now)).rowcount) > 0

            return hub_sqlite_runs.note_run(db, seen, insert)

        return await self._run(lambda db: transaction(db, job))

    async def heard_from(self, since: float, limit: int) -> list[tuple[str, str, float]]:
        """See :class:`HubStore`. Raises HubStoreError."""
        rows = await self._run(
            lambda db: db.execute(hub_twins.HEARD_FROM, (since, limit)).fetchall()
        )
        return [(str(g), str(a), float(t)) for g, a, t in rows]

    async def gates(self, now: float) -> list[GateHealth]:
        """Every gate with a token or heard from, with its last known health.

        Raises HubStoreError.
        """
        since = now - hub_twins.LATELY * self._policy.gate_offline_after_s

        def job(db: sqlite3.Connection) -> tuple[list[Any], set[str]]:
            twice = {g for (g,) in db.execute(hub_twins.HEARD_TWICE, (since, since))}
            return db.execute(_GATES).fetchall(), twice

        rows, twice = await self._run(job)
        gates = [hub_sql.gate_health(row, json.loads(row[-1]), now, self._policy) for row in rows]
        return hub_twins.flag_two_units(gates, twice)

    async def add_token(self, token_hash: str, role: Role, gate_id: str | None, name: str) -> None:
        """Store a token's hash. Raises ValueError for a gate token without a gate (or a console
        token with one) and HubStoreError when the hash is already stored.
        """
        check_token(role, gate_id)
        params = (token_hash, role, gate_id, name, time.time())
        try:
            await self._run(lambda db: db.execute(hub_sql.INSERT_TOKEN, params))
        except HubStoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise HubStoreError("a token with this hash is already stored") from exc
            raise

    async def token(self, token_hash: str) -> TokenInfo | None:
        """The token with this SHA-256 hex digest, or None. Raises HubStoreError."""
        run = self._run if self._reader is None else self._reader.run
        row = await run(lambda db: db.execute(hub_sql.TOKEN, (token_hash,)).fetchone())
        return None if row is None else TokenInfo(*row)

    async def revoke_tokens(self, gate_id: str) -> int:
        """Delete every token of a gate; returns how many. Raises HubStoreError."""

        def job(db: sqlite3.Connection) -> int:
            db.execute(hub_twins.FORGET_GATE, (gate_id,))  # its runs go with them (sync.hub_twins)
            return int(db.execute(hub_sql.REVOKE_TOKENS, (gate_id,)).rowcount)

        return await self._run(lambda db: transaction(db, job))

    async def quarantine(
        self, gate_id: str, from_seq: int, now: float, *, dry_run: bool = False
    ) -> Quarantine:
        """See :class:`HubStore` (:mod:`sync.hub_quarantine`). Raises HubStoreError."""
        args = (gate_id, from_seq, now, dry_run, self._policy)
        begin = "BEGIN" if dry_run else "BEGIN IMMEDIATE"  # a dry run reads: uploads go on
        return await self._run(lambda db: transaction(db, _quarantine, *args, begin=begin))

    async def claim(self, gate_id: str, entries: Sequence[EntryWire], now: float) -> int:
        """See :class:`HubStore` (:mod:`sync.hub_claims`). Raises HubStoreError."""
        params = hub_claims.claim_params(gate_id, entries, now)

        def job(db: sqlite3.Connection) -> int:
            (held,) = db.execute(hub_claims.CLAIMS_OF_GATE, (gate_id,)).fetchone()
            stored, room = 0, hub_claims.room(int(held))
            for p in params:
                if stored >= room:
                    break
                stored += db.execute(hub_claims.CLAIM, p).rowcount
            return stored

        return await self._run(lambda db: transaction(db, job)) if params else 0

    async def set_apart_rows(self) -> int:
        """See :class:`HubStore`. Raises HubStoreError."""
        sql = hub_quarantine.SET_APART_ROWS
        return int(await self._run(lambda db: db.execute(sql).fetchone()[0]))

    async def named_tokens(self, role: Role, name: str, *, revoke: bool = False) -> int:
        """Console or issuing tokens named ``name`` (deleted with ``revoke``): how many.
        Raises HubStoreError."""
        if revoke:
            sql = hub_sql.REVOKE_NAMED_TOKENS
            return await self._run(lambda db: db.execute(sql, (role, name)).rowcount)
        row = await self._run(lambda db: db.execute(hub_sql.NAMED_TOKENS, (role, name)).fetchone())
        return int(row[0])

    async def revocation_state(self) -> RevocationState:
        """The current list version and keys. Raises HubStoreError."""
        state = await self._run(lambda db: transaction(db, hub_sqlite_revocations.read_revocations))
        self._revocations = state
        return state

    async def add_revocation_delta(
        self, version: int, document: bytes, state: RevocationState
    ) -> None:
        """Store signed delta ``version`` and the state it leads to; prune old deltas.

        Raises VersionTakenError when ``version`` is not the current version + 1 (nothing stored)
        and ValueError when ``state.version`` is not ``version``.
        """
        if state.version != version:
            raise ValueError(f"state version {state.version} is not the delta's {version}")
        cached = self._revocations
        await self._run(
            lambda db: transaction(
                db, hub_sqlite_revocations.add_delta, version, bytes(document), state, cached
            )
        )
        self._revocations = state
        log.info("hub store %s: revocation list version %d", self._path, version)

    async def revocation_deltas(self, after: int, limit: int = 500) -> list[bytes] | None:
        """The first ``limit`` signed deltas with version > ``after``, oldest first; None when
        some were pruned. Raises HubStoreError, and ValueError for a limit below 1.
        """
        check_limit(limit)
        return await self._run(
            lambda db: transaction(db, hub_sqlite_revocations.deltas, after, limit)
        )

    async def close(self) -> None:
        """Close the database and stop its threads. Idempotent."""
        try:
            await self._uploads.close()  # a group in flight ends first; the rest are refused
            if self._reader is not None:
                await self._reader.close()  # first: the writer's close checkpoints the WAL
        finally:
            await self._writer.close()

    def _ingest_job(
        self,
        db: sqlite3.Connection,
        gate_id: str,
        entries: Sequence[EntryWire],
        now: float,
        charged: list[tuple[str, int, float]],
    ) -> hub_rules.IngestPlan:
        """Read, plan and write one batch (on the thread, inside its transaction). The rows
        are spent on the gate's quota before the write (a later batch of the same group sees
        them), given back if it fails here; ``charged`` lists them for a failed commit."""
        last = None if self._quota.knows(gate_id) else last_received(db, gate_id)
        quota = self._quota.allowance(gate_id, now, last)  # the store's thread only
        known = known_state(db, gate_id, entries, self._policy, now, quota)
        plan = hub_rules.plan_ingest(gate_id, entries, known, self._policy, now)
        if plan.candidates:  # refused: what it raised before takes no budget again
            again = raised(db, plan)
            plan = hub_rules.planned_again(plan, again, gate_id, entries, known, self._policy, now)
        self._quota.spend(gate_id, now, quota, len(plan.rows))
        try:
            rows = plan.rows
            if rows and (cursor := _next_cursor(db)) is not None:
                db.execute(_INSERT_ENTRY_AT, (cursor, *hub_sql.entry_params(rows[0], now)))
                rows = rows[1:]
            db.executemany(_INSERT_ENTRY, (hub_sql.entry_params(e, now) for e in rows))
            alerts = (_alert_params(a, gate_id, now) for a in plan.alerts)
            db.executemany(hub_sql.INSERT_ALERT, alerts)
            db.executemany(hub_sql.INSERT_NOTE, hub_sql.note_params(plan.notes, now))
            if held := hub_sql.held_params(plan.alerts, now):
                db.executemany(hub_sql.HELD_ACTION, held)
                db.executemany(hub_sql.OLD_HELD, [(key,) for _, key, *_ in held])
            db.execute(hub_sql.ADD_GATE, (gate_id,))
        except BaseException:
            self._quota.refund(gate_id, len(plan.rows), quota)
            raise
        charged.append((gate_id, len(plan.rows), quota))
        return plan

    async def _run(self, job: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``job`` on the store's thread; SQLite errors become HubStoreError."""
        return await self._writer.run(job)


# --- jobs: run on the store's thread -------------------------------------------------------------


def _check_token(db: sqlite3.Connection, upload: _Upload) -> None:
    """Raise TokenGoneError when the upload's token is no longer one of its gate's."""
    if upload.token_hash is None:
        return
    if db.execute(hub_sql.GATE_TOKEN, (upload.token_hash, upload.gate_id)).fetchone() is None:
        raise TokenGoneError


def _alert_params(alert: NewAlert, gate_id: str, now: float) -> tuple[Any, ...]:
    return hub_sql.alert_params(alert, gate_id, now, json.dumps)


def _quarantine(
    db: sqlite3.Connection,
    gate_id: str,
    from_seq: int,
    now: float,
    dry_run: bool,
    policy: HubPolicy,
) -> Quarantine:
    (tokens,) = db.execute(hub_quarantine.TOKENS, (gate_id,)).fetchone()
    found = db.execute(hub_quarantine.ROWS, (gate_id, from_seq)).fetchall()
    rows = tuple(QuarantinedRow(*row) for row in found)
    if dry_run or tokens or not rows:
        return Quarantine(int(tokens), rows)
    refs = [ref for (ref,) in db.execute(hub_quarantine.REOPENED_REFS, (gate_id, from_seq))]
    db.execute(hub_quarantine.COPY, (now, gate_id, from_seq))
    db.execute(hub_quarantine.DELETE, (gate_id, from_seq))
    names = dict(db.execute(hub_quarantine.GATE_NAMES).fetchall())
    left = db.execute(hub_quarantine.history_sql(len(refs)), refs) if refs else []
    alerts = hub_quarantine.moved_alerts(gate_id, from_seq, rows, left, names, policy, now)
    db.executemany(hub_sql.INSERT_ALERT, (_alert_params(a, "", now) for a in alerts))
    return Quarantine(0, rows, moved=True)


def _next_cursor(db: sqlite3.Connection) -> int | None:
    """The cursor the next row must have when a quarantine moved the newest rows away (SQLite
    would number it as one of them: :mod:`sync.hub_quarantine`); None: SQLite's own."""
    (moved,) = db.execute(hub_quarantine.SET_APART_TOP).fetchone()
    if not moved:
        return None
    (top,) = db.execute(hub_quarantine.TOP_CURSOR).fetchone()
    return int(moved) + 1 if moved > top else None


def _set_gate_name(db: sqlite3.Connection, gate_id: str, name: str) -> None:
    taken = db.execute(hub_sql.NAME_TAKEN, (name, gate_id)).fetchone()
    if taken is not None:
        raise NameTakenError(f"gate {taken[0]} is already called {name!r}")
    db.execute(hub_sql.SET_GATE_NAME, (gate_id, name))


def _feed(
    db: sqlite3.Connection, after: int, limit: int, max_ahead_s: float
) -> tuple[list[FeedEntry], int]:
    rows = db.execute(hub_sql.FEED, (after, limit))
    entries = [hub_sql.feed_entry(row, max_ahead_s) for row in rows]
    if entries:
        return entries, entries[-1].cursor
    (highest,) = db.execute(hub_quarantine.SQLITE_MAX_CURSOR).fetchone()
    return entries, min(after, int(highest))


def _has_feed_after(db: sqlite3.Connection, after: int) -> bool:
    return db.execute(hub_sql.HAS_FEED_AFTER, (after,)).fetchone() is not None
