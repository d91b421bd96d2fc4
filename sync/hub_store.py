"""The hub's storage: one Protocol, two backends (SQLite by default, PostgreSQL at scale).

Both backends run the same ingest plan (:mod:`sync.hub_rules`) inside one transaction per batch,
serialised per venue (SQLite: one writer; PostgreSQL: a transaction-scoped advisory lock), so
duplicates, conflicts, double admissions and integrity faults are decided on a consistent view and
every alert is raised exactly once, however many hub processes share the database. The feed cursor
is the hub's insertion order; because batches commit in lock order, a reader never sees a cursor
value before all smaller ones are visible.

Errors::

    HubStoreError (AgentError, RuntimeError)   the database failed or is not a hub database
    ConflictError (HubStoreError)              entry_ids (or gate_seqs) reused with another body;
                                               nothing of the batch is stored, an integrity alert is
                                               raised per entry
    RefusedError (HubStoreError)               a row the uploading gate may not write (another
                                               gate's annulment, an exit outside exit_gates);
                                               nothing of the batch is stored, an integrity alert
                                               names the gate
    OverQuotaError (HubStoreError)             more new rows than the gate's upload quota allows
                                               now; nothing of the batch is stored
    TokenGoneError (HubStoreError)             the upload's token was revoked before its batch
                                               was stored; nothing of the batch is stored
    NameTakenError (HubStoreError, ValueError) a gate name another gate of the venue already has
    VersionTakenError (HubStoreError)          a revocation delta's version was stored first by
                                               another writer (an admin, the hub's refresher);
                                               nothing of that delta is stored
    ForeignStoreError (HubStoreError, ConfigError) not a hub store this hub may use (another
                                               program's, a newer version's): exit 78
    OtherVenueError (ForeignStoreError)        the store belongs to another venue than the
                                               config's (a config error: exit 78)

Besides the Protocol: the argument checks every backend makes and the long-poll wake-up
(:class:`FeedSignal`). What they say to their databases in the same words is :mod:`sync.hub_sql`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from agent.errors import AgentError, ConfigError
from sync.hub_console_sql import ActedAlert, Action, ActResult
from sync.hub_plan import NewAlert
from sync.hub_venue_sql import VenueRow
from sync.protocol import MAX_ID, Alert, BatchAck, EntryWire, FeedEntry, GateHealth, Heartbeat
from sync.protocol_console import TicketHistory

Role = Literal["gate", "console", "issuing"]


class HubStoreError(AgentError, RuntimeError):
    """The hub database failed, or the file/database is not a hub store."""


class ForeignStoreError(HubStoreError, ConfigError):
    """The file or database is not a hub store this hub may use: another program's, or of a
    schema this version does not know. Starting again cannot mend it, so it is also a
    ConfigError (the hub exits 78 and systemd does not restart it)."""


class OtherVenueError(ForeignStoreError):
    """The store is bound to another venue than the config's ``[hub] venue``."""


class ConflictError(HubStoreError):
    """Entries reuse an ``entry_id`` (or a gate's ``gate_seq``) with another body.

    Nothing of the batch was stored; one integrity alert per conflicting entry was raised.
    """

    def __init__(self, message: str, entry_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.entry_ids = tuple(entry_ids)


class RefusedError(HubStoreError):
    """A row the uploading gate has no right to write; ``field`` names it (``entries[3].annuls``).

    Nothing of the batch was stored; an integrity alert naming the gate was raised.
    """

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class TokenGoneError(HubStoreError):
    """The token an upload came with was revoked while the batch was on its way (its body
    arriving, its turn awaited): nothing of the batch was stored.

    The store reads the token again inside the ingest transaction, under the ingest lock, so a
    batch of a revoked token cannot land after a quarantine (:mod:`sync.hub_quarantine`) that
    followed the revocation.
    """

    def __init__(self) -> None:
        super().__init__(
            "the token was revoked while the batch arrived; nothing of the batch was stored"
        )


class VersionTakenError(HubStoreError):
    """The revocation delta's version is not the one after the stored list's: another writer (an
    admin's ``hub revoke``, a hub's list refresher) stored a delta since the caller read the list.
    Nothing of the delta was stored; read the list again and sign against it."""


class OverQuotaError(HubStoreError):
    """The batch's new rows exceed what the gate may store now (:class:`UploadQuota`).

    Nothing of the batch was stored; the gate may send it again after ``retry_after`` seconds.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NameTakenError(HubStoreError, ValueError):
    """Another gate of the venue already has this display name."""


@dataclass(frozen=True, slots=True)
class HubPolicy:
    """What the hub treats as suspicious (from the hub config)."""

    venue: str
    entry_policy: Literal["single", "reentry", "unlimited"] = "single"
    # The gates that may record exits (None: every gate). With reentry an exit lets its ticket
    # in again: a stolen entry gate must not be able to let every ticket in twice.
    exit_gates: frozenset[str] | None = None
    denied_alert_threshold: int = 3  # denied attempts of one ticket ...
    denied_alert_window_s: float = 600.0  # ... within this window raise one alert
    gate_offline_after_s: float = 30.0  # no heartbeat for this long: shown offline
    max_clock_ahead_s: float = 300.0  # rows further ahead count as of arrival + this (hub_plan)
    alert_budget: int = 50  # alerts one gate's uploads may raise per window; more: one storm alert
    alert_budget_window_s: float = 60.0
    upload_rows_per_s: float = 20.0  # one gate's sustained rate of new rows (UploadQuota) ...
    upload_burst: int = 5000  # ... and the most it stores at once while uploading


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Who a bearer token belongs to. Tokens are stored as SHA-256 hex digests only."""

    token_hash: str
    role: Role
    gate_id: str | None  # the one gate a gate token may speak for; None for console tokens
    name: str


@dataclass(frozen=True, slots=True)
class QuarantinedRow:
    """A row set apart (:mod:`sync.hub_quarantine`), as the operator is shown it."""

    gate_seq: int
    entry_id: str
    short_id: str  # the ticket's, never the ticket itself
    kind: str
    received_at: float
    boot_id: str  # as the uploader wrote it (a naive copy writes its own machine's)


@dataclass(frozen=True, slots=True)
class Quarantine:
    """What a quarantine found and did: the gate's tokens still stored, its rows from the
    gate_seq on, whether they were moved (never while ``tokens`` > 0, nor on a dry run), and
    whether the hub knows the gate at all (a token or a row of it, ever: a typo's answer)."""

    tokens: int
    rows: tuple[QuarantinedRow, ...] = ()
    moved: bool = False
    known: bool = True


@dataclass(frozen=True, slots=True)
class RevocationState:
    """The venue's current revocation list version and the keys on it (16-byte keys)."""

    version: int
    revoked: frozenset[bytes]
    blocked: frozenset[bytes]


class HubStore(Protocol):
    """What the hub server needs from its database. All methods raise HubStoreError."""

    feed_signal: FeedSignal  # wakes this process's long-polls; counts those waiting (/metrics)

    @property
    def policy(self) -> HubPolicy: ...

    async def ingest(
        self,
        gate_id: str,
        entries: Sequence[EntryWire],
        now: float,
        *,
        token_hash: str | None = None,
    ) -> BatchAck:
        """Store a batch idempotently by ``entry_id`` in one transaction; raise its alerts.

        Returns per-entry inserted|duplicate and ``acked_through_seq`` (the batch's highest
        ``gate_seq``). Raises ConflictError (nothing stored) when an entry_id is reused with
        another body or a gate_seq of this gate is reused by another entry_id, and
        TokenGoneError when ``token_hash`` (the uploading token's, as the hub's upload handler
        always passes it) is no longer a token of ``gate_id`` inside the transaction.
        """
        ...

    async def feed(self, after: int, limit: int) -> tuple[list[FeedEntry], int]:
        """Entries/exits/annulments with cursor > ``after``, oldest first, and the next cursor."""
        ...

    async def wait_feed(self, after: int, wait_s: float) -> None:
        """Return when the feed has an entry after ``after`` or ``wait_s`` seconds passed."""
        ...

    async def venue_rows(self, after: int, limit: int) -> list[VenueRow]:
        """Every row with cursor > ``after`` (attempts too), oldest first, at most ``limit``, an
        annulment with the row it cancels: what the venue's tallies read (sync.hub_venue)."""
        ...

    async def alerts(self, after: int, limit: int) -> list[Alert]:
        """Alerts with ``alert_id`` > ``after``, oldest first."""
        ...

    async def recent_alerts(self, before: int | None, limit: int) -> list[Alert]:
        """Alerts with ``alert_id`` < ``before`` (None: all), newest first."""
        ...

    # --- the security console (sync.hub_console_sql) ---

    async def alert_details(self, alerts: Sequence[Alert]) -> list[Alert]:
        """``alerts`` with the entries they name (gate, lane, verdict, reason, offline) and
        what security did about them (acknowledged, assigned, notes)."""
        ...

    async def act_on_alert(
        self, alert_id: int, action: Action, actor: str, value: str, now: float
    ) -> ActResult:
        """Record an acknowledgement (the first one counts), an assignment (``value``: the
        assignee, empty unassigns) or a note by ``actor`` at ``now``."""
        ...

    async def open_alerts(self) -> int:
        """How many alerts nobody has acknowledged yet."""
        ...

    async def last_alert_action(self) -> int:
        """The cursor of :meth:`acted_alerts` now (0: no action yet)."""
        ...

    async def acted_alerts(self, after: int, limit: int) -> tuple[list[ActedAlert], int]:
        """The alerts acted on (noted, acknowledged, assigned; a storm holding back more) by the
        ``limit`` actions after cursor ``after``, oldest alert first, each with its latest
        action of those, and the cursor after them."""
        ...

    async def ticket_history(self, short: str, limit: int) -> TicketHistory:
        """Every entry, exit, annulment and denied attempt of the ticket(s) with this short id,
        oldest first (by HLC), at most ``limit`` of them."""
        ...

    async def revocation_keys(self, short: str) -> tuple[int, tuple[tuple[str, str], ...]]:
        """How many tickets the venue saw with this short id, and the (revocation key in hex,
        gate id) pairs gates uploaded with their rows, by key then gate, at most 65."""
        ...

    async def claim(self, gate_id: str, entries: Sequence[EntryWire], now: float) -> int:
        """Keep the admissions among ``entries`` (a batch of ``gate_id`` refused with a
        conflict) whose entry ids are not held, as claims for gates (:mod:`sync.hub_claims`);
        returns how many were new."""
        ...

    async def claims(self, after: int, limit: int) -> tuple[list[FeedEntry], int]:
        """The claims after cursor ``after`` as feed entries, oldest first, and the next cursor
        (:func:`sync.hub_claims.claims_page`)."""
        ...

    async def set_apart_releases(self, after: str, limit: int) -> tuple[int, tuple[str, ...]]:
        """How many exits and annulments a quarantine set apart (a count that only grows), and
        the entry ids of the next ``limit`` of them after ``after``, in order
        (:class:`sync.protocol.SetApartPage`)."""
        ...

    async def short_ids_with_key(self, rev_key: str) -> tuple[str, ...]:
        """The short ids of the rows gates uploaded with this revocation key (lowercase hex),
        at most 10 (more than one: a transfer's ticket ids, or a lying gate)."""
        ...

    async def set_gate_name(self, gate_id: str, name: str) -> None:
        """Set the display name the venue knows a gate by (heartbeats never change it).

        Raises NameTakenError when another gate of the venue has it (case-insensitive).
        """
        ...

    async def heartbeat(self, hb: Heartbeat, now: float) -> None:
        """Record a gate's heartbeat (its health as the console shows it)."""
        ...

    async def note_run(self, gate_id: str, run_id: str, address: str, now: float) -> list[NewAlert]:
        """Note the run a heartbeat of ``gate_id`` came from (:mod:`sync.hub_twins`); returns
        the alerts it raised (stored with it), each once."""
        ...

    async def heard_from(self, since: float, limit: int) -> list[tuple[str, str, float]]:
        """(gate id, address, last seen) of the newest ``limit`` runs heard after ``since``,
        oldest first: the addresses a hub knows at its start (:mod:`sync.hub_limits`)."""
        ...

    async def gates(self, now: float) -> list[GateHealth]:
        """Every gate that has a token or has been heard from, with its last known health."""
        ...

    async def add_token(self, token_hash: str, role: Role, gate_id: str | None, name: str) -> None:
        """Store a token's hash (gate tokens bind one gate; a gate may have several tokens)."""
        ...

    async def token(self, token_hash: str) -> TokenInfo | None:
        """The token with this SHA-256 hex digest, or None."""
        ...

    async def revoke_tokens(self, gate_id: str) -> int:
        """Delete every token of a gate (and the runs its heartbeats came from); returns how
        many."""
        ...

    async def quarantine(
        self, gate_id: str, from_seq: int, now: float, *, dry_run: bool = False
    ) -> Quarantine:
        """Move the gate's rows from ``from_seq`` on out of the entries into the quarantine, with
        an integrity alert (:mod:`sync.hub_quarantine`); nothing when the gate has a token or
        on a ``dry_run`` (the rows are found all the same)."""
        ...

    async def set_apart_rows(self) -> int:
        """How many rows quarantines have set apart in all: it never falls (the running venue
        tallies, :mod:`sync.hub_venue`, count again from the start when it grew)."""
        ...

    async def named_tokens(self, role: Role, name: str, *, revoke: bool = False) -> int:
        """How many console (or issuing) tokens are stored under ``name``; with ``revoke``,
        delete them and return how many were."""
        ...

    async def revocation_state(self) -> RevocationState:
        """The current list version and keys (version 0, empty, before any delta)."""
        ...

    async def add_revocation_delta(
        self, version: int, document: bytes, state: RevocationState
    ) -> None:
        """Store signed delta ``version`` (from ``version - 1``) and the state it leads to.

        Raises VersionTakenError when ``version`` is not the current version + 1 (another admin
        or a hub's refresher issued it first): nothing is stored.
        """
        ...

    async def revocation_deltas(self, after: int, limit: int = 500) -> list[bytes] | None:
        """The first ``limit`` signed deltas with version > ``after``, oldest first; None when
        some are missing."""
        ...

    async def close(self) -> None:
        """Close the database. Idempotent."""
        ...


def check_gate_name(name: str) -> None:
    """Refuse a gate display name that is empty, over 64 characters or not printable.

    Raises ValueError.
    """
    if not 0 < len(name) <= MAX_ID or not name.isprintable() or name != name.strip():
        raise ValueError(
            f"gate name {name[:80]!r}: expected 1-64 printable characters, no outer spaces"
        )


def check_limit(limit: int) -> None:
    """Refuse a page size below 1 (SQLite would read a negative LIMIT as none). Raises ValueError."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


def check_token(role: str, gate_id: str | None) -> None:
    """Refuse an unknown role, a gate token without its gate or a console token with one.

    Raises ValueError.
    """
    if role not in ("gate", "console", "issuing"):
        raise ValueError(f"unknown token role {role!r}")
    if (role == "gate") != (gate_id is not None):
        raise ValueError("a gate token needs its gate_id, other tokens have none")


class UploadQuota:
    """How many new rows each gate may store now: a token bucket per gate, in this process.

    Without a bound a stolen gate token uploads without end: every row is kept for good and the
    feed carries it to every gate's SD card (a review's client stored 20,000 rows in 6 s). A gate
    earns ``rows_per_s`` rows a second, but while it uploads (an honest gate's outbox does every
    few seconds) only up to ``burst``; the time it stays silent (an outage, a quiet hour) earns a
    credit of rate x silence, up to ``credit_s`` of it, so the backlog a gate recorded offline is
    taken at once. Whatever a gate does, it stores at most ``burst`` + the rate x the time since
    it was first heard, so a flood goes at the rate of a busy honest gate, and then alerts.
    A gate first seen by this process starts with its burst and the credit since the store last
    received a row of it (``last_received``: a restarted hub owes gates its own downtime); one
    the store never had a row of, with the whole credit (a gate that ran without a hub brings
    its history). Several hub processes on one database count each for itself.
    """

    CREDIT_S = 6 * 3600.0  # the longest silence that earns credit
    MAX_GATES = 100_000  # gates remembered; past it, the longest silent are forgotten

    def __init__(self, rows_per_s: float, burst: int) -> None:
        self.rate = rows_per_s
        self.burst = float(burst)
        self._gates: dict[str, tuple[float, float]] = {}  # gate_id -> (rows left, at)

    def knows(self, gate_id: str) -> bool:
        return gate_id in self._gates

    def allowance(self, gate_id: str, now: float, last_received: float | None = None) -> float:
        """New rows ``gate_id`` may store at ``now``. ``last_received`` counts only for a gate
        this quota does not know: when the store last received a row of it (None: never)."""
        state = self._gates.get(gate_id)
        if state is None:
            state = (
                (0.0, now - self.CREDIT_S) if last_received is None else (self.burst, last_received)
            )
        left, at = state
        earned = self.rate * min(max(0.0, now - at), self.CREDIT_S)
        # Uploading, a gate refills to the burst; only silence earns more (never taken away).
        return max(left, min(left + earned, max(self.burst, earned)))

    def refund(self, gate_id: str, rows: int, allowance: float) -> None:
        """Give back ``rows`` spent on a batch that was not stored after all (a failed write),
        never beyond the ``allowance`` they were spent from (time has refilled it meanwhile),
        and nothing to a gate this quota no longer holds."""
        state = self._gates.get(gate_id)
        if state is not None:
            left, at = state
            self._gates[gate_id] = (min(left + rows, allowance), at)

    def spend(self, gate_id: str, now: float, allowance: float, rows: int) -> None:
        """Record that ``rows`` are stored at ``now`` out of ``allowance`` (:meth:`allowance`);
        :meth:`refund` them if the write fails."""
        self._gates[gate_id] = (allowance - rows, now)
        if len(self._gates) > self.MAX_GATES:
            by_age = sorted(self._gates.items(), key=lambda item: item[1][1])
            self._gates = dict(by_age[len(by_age) // 2 :])


class FeedSignal:
    """Wakes long-polls when a batch with feed rows commits (both backends' ``wait_feed``)."""

    def __init__(self) -> None:
        # Replaced on every wake: a waiter holds the event of its own generation, so a commit
        # between its check and its wait still wakes it.
        self._event = asyncio.Event()
        self.waiting = 0  # waits blocked on the event now (checked, nothing to read yet)

    def wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(
        self,
        has_entry: Callable[[], Awaitable[bool]],
        wait_s: float,
        poll_s: Callable[[], float] = lambda: math.inf,
    ) -> None:
        """Return once ``has_entry()`` is true or ``wait_s`` passed; it is checked at the start,
        on every wake, every ``poll_s()`` seconds and at the end. Raises what it raises.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            event = self._event
            if await has_entry():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self.waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, poll_s()))
            finally:
                self.waiting -= 1
