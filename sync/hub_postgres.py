"""The hub store on PostgreSQL (asyncpg): several hub processes may serve one venue at once.

Every ingest transaction first takes ``pg_advisory_xact_lock`` on a stable hash of the venue, so
the batches of a venue are decided one after another on a consistent view, whichever process
receives them: each alert is raised exactly once, and because cursors are drawn under the lock,
commit order is cursor order and a feed reader never skips a cursor. The ingest rules are
:mod:`sync.hub_rules`'s. A transaction that inserted feed rows sends a NOTIFY, which every store
instance receives on its own listening connection (:mod:`sync.hub_pg_listen`), so a long-poll in
another process wakes at once; should that connection drop, long-polls poll until it is back.

One database per venue: the database is bound to its venue on creation and refused for another.
asyncpg and connection errors become HubStoreError; credentials never appear in messages.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import urlsplit

import asyncpg

from sync import (
    hub_claims,
    hub_postgres_known,
    hub_postgres_revocations,
    hub_postgres_runs,
    hub_quarantine,
    hub_rules,
    hub_sql,
    hub_twins,
    protocol,
)
from sync.hub_pg_listen import CHANNEL, CONNECT_TIMEOUT_S, ERRORS, POLL_S, FeedListener
from sync.hub_plan import NewAlert
from sync.hub_postgres_console import PostgresConsoleQueries
from sync.hub_postgres_db import lock_key, prepare
from sync.hub_sql import ENTRY_COLUMNS
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


_PG_TYPES = {
    "gate_seq": "bigint", "zone": "integer", "wall_time": "float8", "clock_synced": "boolean",
    "mono_ns": "bigint", "hlc": "bigint", "rev_version": "bigint", "offline": "boolean",
    "in_feed": "boolean", "received_at": "float8",
}  # fmt: skip
# One statement per batch: a column array each, unnested into rows (faster than executemany).
_INSERT_ENTRIES = "INSERT INTO entries ({}) SELECT * FROM unnest({})".format(
    ", ".join(ENTRY_COLUMNS),
    ", ".join(f"${i}::{_PG_TYPES.get(c, 'text')}[]" for i, c in enumerate(ENTRY_COLUMNS, 1)),
)
# The venue's lock, and index lookups only: the ingest reads are point lookups by indexed keys,
# which the planner would turn into sequential scans on a table that grew faster than autovacuum
# re-analyses it (a new event's first minutes), costing more per batch as the table grows.
# No JIT either: the history query (run in ~2 ms) took 200+ ms to compile on each of a
# connection's first custom plans (tests/bench/bench_hub.py --pg auto). For the transaction, as
# a query: a startup parameter PgBouncer refuses, and asyncpg's pool resets a session's (a
# review); PostgreSQL before 11 has none.
BEGIN_INGEST = (
    "SELECT pg_advisory_xact_lock($1), set_config('enable_seqscan', 'off', true),"
    " (SELECT set_config(name, 'off', true) FROM pg_settings WHERE name = 'jit')"
)

_INSERT_ALERT = hub_sql.numbered(hub_sql.INSERT_ALERT)
_FORGET_RUNS = hub_sql.numbered(hub_twins.FORGET_GATE)
_HEARD_TWICE = hub_sql.numbered(hub_twins.HEARD_TWICE)
_HEARD_FROM = hub_sql.numbered(hub_twins.HEARD_FROM)
_CLAIM = hub_sql.numbered(hub_claims.CLAIM)
_CLAIMS_OF_GATE = hub_sql.numbered(hub_claims.CLAIMS_OF_GATE)
_FEED = hub_sql.numbered(hub_sql.FEED)
_HAS_FEED_AFTER = hub_sql.numbered(hub_sql.HAS_FEED_AFTER)
_ALERTS = hub_sql.numbered(hub_sql.ALERTS)
_VENUE_ROWS = hub_sql.numbered(VENUE_ROWS)
_HELD_ACTION = hub_sql.numbered(hub_sql.HELD_ACTION)
_OLD_HELD = hub_sql.numbered(hub_sql.OLD_HELD)
_RECENT_ALERTS = hub_sql.numbered(hub_sql.RECENT_ALERTS)
_LAST_RECEIVED = hub_sql.numbered(hub_sql.LAST_RECEIVED)
_ADD_GATE = hub_sql.numbered(hub_sql.ADD_GATE)
_GATE_TOKEN = hub_sql.numbered(hub_sql.GATE_TOKEN)
_NAME_TAKEN = hub_sql.numbered(hub_sql.NAME_TAKEN)
_SET_GATE_NAME = hub_sql.numbered(hub_sql.SET_GATE_NAME)
_INSERT_TOKEN = hub_sql.numbered(hub_sql.INSERT_TOKEN) + " ON CONFLICT (token_hash) DO NOTHING"
_TOKEN = hub_sql.numbered(hub_sql.TOKEN)
_REVOKE_TOKENS = hub_sql.numbered(hub_sql.REVOKE_TOKENS)
_NAMED_TOKENS = hub_sql.numbered(hub_sql.NAMED_TOKENS)
_REVOKE_NAMED_TOKENS = hub_sql.numbered(hub_sql.REVOKE_NAMED_TOKENS)
_Q_TOKENS = hub_sql.numbered(hub_quarantine.TOKENS)
_Q_ROWS = hub_sql.numbered(hub_quarantine.ROWS)
_Q_COPY = hub_sql.numbered(hub_quarantine.COPY)
_Q_DELETE = hub_sql.numbered(hub_quarantine.DELETE)
_Q_REOPENED_REFS = hub_sql.numbered(hub_quarantine.REOPENED_REFS)
_Q_GATE_NAMES = hub_sql.numbered(hub_quarantine.GATE_NAMES)
_HEARTBEAT = hub_sql.heartbeat_sql(numbered=True)
_GATES = (
    "SELECT gate_id, gate_name, last_seen, outbox_depth, revocation_version, revocation_age_s,"
    " clock_synced, version, faults FROM gates"
    " UNION ALL SELECT DISTINCT gate_id, '', NULL::float8, 0, 0, NULL::float8, FALSE, '',"
    " '{}'::text[]"
    " FROM tokens WHERE gate_id IS NOT NULL AND gate_id NOT IN (SELECT gate_id FROM gates)"
    " ORDER BY gate_id"
)

_T = TypeVar("_T")
if TYPE_CHECKING:  # asyncpg's classes are generic only in the stubs
    _Conn: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]


def _where(url: str) -> str:
    """host:port/database of a URL, without user or password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path or '/'}"


class PostgresHubStore(PostgresConsoleQueries):
    """The hub store in a PostgreSQL database. Open with :meth:`open`."""

    def __init__(self, url: str, policy: HubPolicy, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        """Use :meth:`open`; this only wires a prepared pool."""
        self._url = url
        self._where = _where(url)
        self._policy = policy
        self._pool: asyncpg.Pool[asyncpg.Record] | None = pool
        self._lock_key = lock_key(f"venue:{policy.venue}")
        self.feed_signal = FeedSignal()
        self._quota = UploadQuota(policy.upload_rows_per_s, policy.upload_burst)
        self._listener = FeedListener(url, self._where, self.feed_signal)
        self._revocations: RevocationState | None = None  # cache of the last state seen

    @classmethod
    async def open(cls, url: str, policy: HubPolicy) -> PostgresHubStore:
        """Connect (a pool of 1-4 connections plus one listening), create or check the schema.

        Raises HubStoreError when the server is unreachable, the database is not a hub store
        (or another version of it) or belongs to another venue.
        """
        where = _where(url)
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=4, timeout=CONNECT_TIMEOUT_S)
        except ERRORS as exc:
            raise HubStoreError(f"cannot connect to the hub database {where}: {exc}") from exc
        store = cls(url, policy, pool)
        try:
            await store._run(lambda conn: prepare(conn, where, policy.venue))
            await store._listener.listen()
        except BaseException:
            await store.close()
            raise
        log.info("hub store %s (venue %s) open", where, policy.venue)
        return store

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
        """Store a batch in one venue-locked transaction and raise its alerts.

        Raises ConflictError (only the conflict alerts were stored), TokenGoneError,
        HubStoreError, and ValueError for a batch that is empty, of another gate or not ascending.
        """
        protocol.check_batch(gate_id, entries)

        async def job(conn: _Conn) -> hub_rules.IngestPlan:
            spent, quota = 0, None  # quota: the allowance once read
            # Read before the ingest lock: it reads each of the gate's rows once (once per gate
            # and process), and no other gate's batch should wait for that.
            last = None  # (allowance ignores it for a gate the quota got to know meanwhile)
            if not self._quota.knows(gate_id):
                last = await conn.fetchval(_LAST_RECEIVED, gate_id)
            try:
                async with conn.transaction():
                    await conn.execute(BEGIN_INGEST, self._lock_key)
                    if token_hash is not None and not await conn.fetchval(
                        _GATE_TOKEN, token_hash, gate_id
                    ):
                        raise TokenGoneError
                    known = await hub_postgres_known.known(
                        conn, gate_id, entries, self._policy, now
                    )
                    # No await from here to the spend: no other batch of this process between.
                    quota = self._quota.allowance(gate_id, now, last)
                    known = replace(known, quota=quota)
                    plan = hub_rules.plan_ingest(gate_id, entries, known, self._policy, now)
                    self._quota.spend(gate_id, now, quota, spent := len(plan.rows))
                    args = (gate_id, entries, known, self._policy, now)  # refused: no rows
                    plan = await hub_postgres_known.again(conn, plan, *args)
                    await _write(conn, gate_id, plan, now)
            except BaseException:
                if quota is not None:  # (before it, nothing was spent: the bucket stays)
                    self._quota.refund(gate_id, spent, quota)  # not stored: not counted
                raise
            return plan

        plan = await self._run(job)
        if plan.feed_rows:
            self.feed_signal.wake()
        return hub_rules.ack(plan, now)

    async def feed(self, after: int, limit: int) -> tuple[list[FeedEntry], int]:
        """Entries/exits/annulments with cursor > ``after``, oldest first, and the next cursor:
        the last one returned; without entries ``after``, or the store's highest cursor when
        ``after`` is beyond it (a new store: the reader sees ``next < after`` and starts over).
        Raises HubStoreError."""
        check_limit(limit)
        rows = await self._run(lambda conn: conn.fetch(_FEED, after, limit))
        entries = [hub_sql.feed_entry(row, self._policy.max_clock_ahead_s) for row in rows]
        if entries:
            return entries, entries[-1].cursor
        highest = await self._run(lambda conn: conn.fetchval(hub_quarantine.POSTGRES_MAX_CURSOR))
        return entries, min(after, int(highest))

    async def wait_feed(self, after: int, wait_s: float) -> None:
        """Return once the feed has an entry after ``after`` (from any hub process), or after
        ``wait_s`` seconds. Raises HubStoreError."""

        async def has_entry() -> bool:
            if not self._listener.listening:
                await self._listener.listen()
            return await self._run(lambda conn: conn.fetchval(_HAS_FEED_AFTER, after)) is not None

        await self.feed_signal.wait(
            has_entry, wait_s, lambda: math.inf if self._listener.listening else POLL_S
        )

    async def venue_rows(self, after: int, limit: int) -> list[VenueRow]:
        """Rows with cursor > ``after`` for the venue's tallies (see :class:`HubStore`). Raises
        HubStoreError, and ValueError for a limit below 1."""
        check_limit(limit)
        rows = await self._run(lambda conn: conn.fetch(_VENUE_ROWS, after, limit))
        return [venue_row(row) for row in rows]

    async def alerts(self, after: int, limit: int) -> list[Alert]:
        """Alerts with ``alert_id`` > ``after``, oldest first. Raises HubStoreError."""
        check_limit(limit)
        rows = await self._run(lambda conn: conn.fetch(_ALERTS, after, limit))
        return [hub_sql.alert_of(row, self._policy.venue) for row in rows]

    async def recent_alerts(self, before: int | None, limit: int) -> list[Alert]:
        """Alerts with ``alert_id`` < ``before`` (None: all), newest first. Raises HubStoreError."""
        check_limit(limit)
        below = protocol.INT63 if before is None else before
        rows = await self._run(lambda conn: conn.fetch(_RECENT_ALERTS, below, limit))
        return [hub_sql.alert_of(row, self._policy.venue) for row in rows]

    async def set_gate_name(self, gate_id: str, name: str) -> None:
        """Set a gate's display name. Raises NameTakenError (another gate has it), ValueError
        (not a valid name) and HubStoreError."""
        check_gate_name(name)

        async def job(conn: _Conn) -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("gate-names"))
                taken = await conn.fetchval(_NAME_TAKEN, name, gate_id)
                if taken is not None:
                    raise NameTakenError(f"gate {taken} is already called {name!r}")
                await conn.execute(_SET_GATE_NAME, gate_id, name)

        await self._run(job)

    async def heartbeat(self, hb: Heartbeat, now: float) -> None:
        """Record a gate's health as of ``now``. Raises HubStoreError."""
        args = hub_sql.heartbeat_params(hb, list(hb.faults), now)
        await self._run(lambda conn: conn.execute(_HEARTBEAT, *args))

    async def note_run(self, gate_id: str, run_id: str, address: str, now: float) -> list[NewAlert]:
        """See :class:`HubStore` (:mod:`sync.hub_postgres_runs`). Raises HubStoreError."""
        seen = hub_twins.Seen(gate_id, run_id, address, now)

        async def job(conn: _Conn) -> list[NewAlert]:
            async def insert(a: NewAlert) -> bool:
                # The venue's lock, as an ingest's alerts take it: alert ids commit in order,
                # so a follower's cursor (the console's, `hub alerts --follow`) passes none.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
                status = await conn.execute(_INSERT_ALERT, *_alert_args(a, "", now))
                return hub_sql.status_rows(status) > 0

            async with conn.transaction():
                return await hub_postgres_runs.note_run(conn, seen, insert)

        return await self._run(job)

    async def heard_from(self, since: float, limit: int) -> list[tuple[str, str, float]]:
        """See :class:`HubStore`. Raises HubStoreError."""
        rows = await self._run(lambda conn: conn.fetch(_HEARD_FROM, since, limit))
        return [(str(g), str(a), float(t)) for g, a, t in rows]

    async def gates(self, now: float) -> list[GateHealth]:
        """Every gate with a token or heard from, with its last known health. Raises
        HubStoreError."""
        since = now - hub_twins.LATELY * self._policy.gate_offline_after_s

        async def job(conn: _Conn) -> tuple[list[Any], set[str]]:
            twice = {r[0] for r in await conn.fetch(_HEARD_TWICE, since, since)}
            return await conn.fetch(_GATES), twice

        rows, twice = await self._run(job)
        gates = [hub_sql.gate_health(row, row[-1], now, self._policy) for row in rows]
        return hub_twins.flag_two_units(gates, twice)

    async def add_token(self, token_hash: str, role: Role, gate_id: str | None, name: str) -> None:
        """Store a token's hash. Raises ValueError for a gate token without a gate (or a console
        token with one) and HubStoreError when the hash is already stored.
        """
        check_token(role, gate_id)
        args = (token_hash, role, gate_id, name, time.time())
        status = await self._run(lambda conn: conn.execute(_INSERT_TOKEN, *args))
        if status != "INSERT 0 1":
            raise HubStoreError("a token with this hash is already stored")

    async def token(self, token_hash: str) -> TokenInfo | None:
        """The token with this SHA-256 hex digest, or None. Raises HubStoreError."""
        row = await self._run(lambda conn: conn.fetchrow(_TOKEN, token_hash))
        return None if row is None else TokenInfo(*row)

    async def revoke_tokens(self, gate_id: str) -> int:
        """Delete every token of a gate; returns how many. Raises HubStoreError."""

        async def job(conn: _Conn) -> int:
            async with conn.transaction():  # the gate's runs go with them (sync.hub_twins)
                await conn.execute(_FORGET_RUNS, gate_id)
                return hub_sql.status_rows(await conn.execute(_REVOKE_TOKENS, gate_id))

        return await self._run(job)

    async def quarantine(
        self, gate_id: str, from_seq: int, now: float, *, dry_run: bool = False
    ) -> Quarantine:
        """See :class:`HubStore` (:mod:`sync.hub_quarantine`); under the venue's ingest lock.
        Raises HubStoreError."""

        async def job(conn: _Conn) -> Quarantine:
            async with conn.transaction():
                if not dry_run:  # a dry run reads: uploads go on
                    await conn.execute(BEGIN_INGEST, self._lock_key)
                tokens = int(await conn.fetchval(_Q_TOKENS, gate_id))
                found = await conn.fetch(_Q_ROWS, gate_id, from_seq)
                rows = tuple(QuarantinedRow(*row) for row in found)
                if dry_run or tokens or not rows:
                    return Quarantine(tokens, rows)
                refs = [r[0] for r in await conn.fetch(_Q_REOPENED_REFS, gate_id, from_seq)]
                await conn.execute(_Q_COPY, now, gate_id, from_seq)
                await conn.execute(_Q_DELETE, gate_id, from_seq)
                names = {r[0]: r[1] for r in await conn.fetch(_Q_GATE_NAMES)}
                history = hub_sql.numbered(hub_quarantine.history_sql(len(refs)))
                left = await conn.fetch(history, *refs) if refs else []
                alerts = hub_quarantine.moved_alerts(
                    gate_id, from_seq, rows, left, names, self._policy, now
                )
                await conn.executemany(_INSERT_ALERT, [_alert_args(a, "", now) for a in alerts])
                return Quarantine(0, rows, moved=True)

        return await self._run(job)

    async def set_apart_rows(self) -> int:
        """See :class:`HubStore`. Raises HubStoreError."""
        sql = hub_quarantine.SET_APART_ROWS
        return int(await self._run(lambda conn: conn.fetchval(sql)))

    async def claim(self, gate_id: str, entries: Sequence[EntryWire], now: float) -> int:
        """See :class:`HubStore` (:mod:`sync.hub_claims`). Raises HubStoreError."""
        params = hub_claims.claim_params(gate_id, entries, now)

        async def job(conn: _Conn) -> int:
            async with conn.transaction():
                held = await conn.fetchval(_CLAIMS_OF_GATE, gate_id)
                stored, room = 0, hub_claims.room(int(held))
                for p in params:
                    if stored >= room:
                        break
                    stored += hub_sql.status_rows(await conn.execute(_CLAIM, *p))
            return stored

        return await self._run(job) if params else 0

    async def named_tokens(self, role: Role, name: str, *, revoke: bool = False) -> int:
        """Console or issuing tokens named ``name`` (deleted with ``revoke``): how many.
        Raises HubStoreError."""
        if revoke:
            status = await self._run(lambda conn: conn.execute(_REVOKE_NAMED_TOKENS, role, name))
            return hub_sql.status_rows(status)
        count = await self._run(lambda conn: conn.fetchval(_NAMED_TOKENS, role, name))
        return int(count)

    async def revocation_state(self) -> RevocationState:
        """The current list version and keys. Raises HubStoreError."""

        async def job(conn: _Conn) -> RevocationState:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await hub_postgres_revocations.read_revocations(conn)

        state = await self._run(job)
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

        async def job(conn: _Conn) -> None:
            async with conn.transaction():
                await hub_postgres_revocations.add_delta(
                    conn, version, bytes(document), state, cached
                )

        await self._run(job)
        self._revocations = state
        log.info("hub store %s: revocation list version %d", self._where, version)

    async def revocation_deltas(self, after: int, limit: int = 500) -> list[bytes] | None:
        """The first ``limit`` signed deltas with version > ``after``, oldest first; None when
        some were pruned. Raises HubStoreError, and ValueError for a limit below 1.
        """
        check_limit(limit)

        async def job(conn: _Conn) -> list[bytes] | None:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await hub_postgres_revocations.deltas(conn, after, limit)

        return await self._run(job)

    async def close(self) -> None:
        """Close the listening connection and the pool. Idempotent."""
        pool, self._pool = self._pool, None
        try:
            await self._listener.close()
            if pool is not None:
                await pool.close()
        except ERRORS as exc:
            log.warning("hub store %s: unclean close: %s", self._where, exc)

    async def _run(self, job: Callable[[_Conn], Awaitable[_T]]) -> _T:
        """Run ``job`` on a pooled connection; database errors become HubStoreError."""
        pool = self._pool
        if pool is None:
            raise HubStoreError(f"hub store {self._where} is closed")
        try:
            async with pool.acquire() as conn:
                return await job(conn)
        except ERRORS as exc:
            raise HubStoreError(f"hub store {self._where}: {exc}") from exc


async def _write(conn: _Conn, gate_id: str, plan: hub_rules.IngestPlan, now: float) -> None:
    """Insert the plan's rows and alerts; NOTIFY the other processes when the feed grew."""
    if plan.rows:
        rows = [hub_sql.entry_params(e, now) for e in plan.rows]
        await conn.execute(_INSERT_ENTRIES, *(list(column) for column in zip(*rows, strict=True)))
    if plan.alerts:
        await conn.executemany(_INSERT_ALERT, [_alert_args(a, gate_id, now) for a in plan.alerts])
    if plan.notes:
        await conn.executemany(hub_sql.INSERT_NOTE_PG, hub_sql.note_params(plan.notes, now))
    if held := hub_sql.held_params(plan.alerts, now):
        await conn.executemany(_HELD_ACTION, held)
        await conn.executemany(_OLD_HELD, [(key,) for _, key, *_ in held])
    await conn.execute(_ADD_GATE, gate_id)
    if plan.feed_rows:
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)


def _alert_args(a: NewAlert, gate_id: str, now: float) -> tuple[Any, ...]:
    return hub_sql.alert_params(a, gate_id, now, list)
