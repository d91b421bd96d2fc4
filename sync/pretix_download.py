"""Downloads from one pretix event: its keys and check-in list, revoked and blocked secrets, and
other devices' check-ins and annulments.

:class:`PretixDownload` reads; what it learns goes into the revocation store and the journal, or is
returned to :class:`sync.pretix.PretixUpstream` (the event and the list, which it turns into the
trust bundle and the gate policy). Every endpoint used is allowed to pretix's "pretixSCAN" device
profile. The orders also say which tickets do not admit: those of cancelled or expired orders
and positions, and of orders not paid; each such ticket's state is kept in the revocation store
(:func:`agent.revocation.order_key`), set and cleared as its order changes.

Revoked secrets are asked by ``created_since`` (an inclusive cursor, so the cursor row comes back
and is re-applied harmlessly), blocked ones by ``updated_since`` (from the newest change before
the last round, paged by id); other devices' check-ins and the order states come from the orders
modified since the last round (``modified_since``, from the server's time at its first page; a
round cut short is taken up from the newest creation time it read, ``created_since``).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from agent import pretix_event
from agent.clock import ClockReading
from agent.errors import UpstreamUnavailable
from agent.journal import Journal, PeerEntry
from agent.revocation import (
    BLOCKED,
    ORDER_STATE_BITS,
    ORDER_STATE_PREFIX,
    REVOKED,
    ListMeta,
    ListState,
    RevocationStore,
    order_key,
    secret_key,
)
from sync import pretix_orders
from sync import pretix_wire as wire
from sync.pretix_http import PretixHTTP, Reply
from sync.pretix_state import load_cursors, save_cursors

log = logging.getLogger(__name__)

_REVOKED_CURSOR = "pretix_revoked_created_since"
# "_2": the cursor of id paging; one kept from paging by "updated" may have passed a row that
# paging skipped, so every gate reads its blocked secrets once again.
_BLOCKED_CURSOR = "pretix_blocked_updated_since_2"
_ORDERS_CURSOR = "orders_modified_since"
# A round of orders that failed after some pages: the newest creation time it read and when its
# first page was listed. The next round goes on from there (``created_since``), not from the
# first page: a fresh gate's first round at a big event is a thousand pages and many minutes,
# and one outage would otherwise begin it again.
_ORDERS_RESUME_FROM = "orders_resume_created_since"
_ORDERS_RESUME_STARTED = "orders_resume_started"
_RESUME_KEYS = (_ORDERS_RESUME_STARTED, _ORDERS_RESUME_FROM)
# What the cursors were read from: the orders' (and their resume point) from an event's orders
# for one check-in list and whether check-ins were learnt (the device id known), the secrets'
# from an event. A gate moved to another list or event, or given its device id, reads that one
# from the start (a cursor of another list skips the check-ins on this one in orders modified
# before it; one read without the device id learnt no check-in). The orders' scope is also
# kept in the revocation store, with the order states it holds: a store without it (new,
# replaced by a signed snapshot, or from before order states were kept) has the orders read
# from the start too.
_ORDERS_SCOPE = "orders_scope"
_SECRETS_SCOPE = "pretix_secrets_scope"
# Secrets a round holds before applying them (with their cursor): a round's memory is bounded by
# this and one page (pretix_http.MAX_BODY), however many pages a server sends.
APPLY_EVERY = 10_000
# The orders' and blocked secrets' cursor is the first page's X-Page-Generated (pretix's time
# when it began answering, what pretixSCAN itself continues from) less this margin, for a
# change whose transaction was still open then: it may carry an earlier time yet commit after
# our query. Seconds are plenty for pretix's transactions; a quiet event re-reads nothing.
_OVERLAP_S = 10.0
_LISTED_SLACK_S = 5.0  # a change dated this much after its page was listed is still dated


class Clock(Protocol):
    def now(self) -> float: ...

    def reading(self) -> ClockReading: ...


# Told, before a round applies them, of the tickets newly learnt not to admit (by secret): what
# is told before it is kept is never lost to a round cut short; a ticket told twice is said once.
TurnedSink = Callable[[Mapping[str, pretix_orders.Turned]], Awaitable[None]]
# Told, as a round keeps them, of the tickets other devices' entries were newly learnt for.
EnteredSink = Callable[[set[str]], Awaitable[None]]


class PretixDownload:
    """What one gate reads from one event and check-in list.

    Every method raises UpstreamUnavailable or UpstreamAuthError for pretix faults; journal and
    revocation store faults propagate. ``state_dir`` holds the orders cursor (ConfigError when
    unreadable).
    """

    def __init__(
        self,
        http: PretixHTTP,
        *,
        event_path: str,
        checkin_list: int,
        state_dir: Path,
        journal: Journal,
        revocations: RevocationStore,
        clock: Clock,
    ) -> None:
        self._http, self._event_path, self._list = http, event_path, checkin_list
        self._state_dir = state_dir
        self._journal, self._revocations, self._clock = journal, revocations, clock
        self._cursors = load_cursors(state_dir)
        self._secrets_scope = http.base_url + event_path
        self._position_peers: dict[int, wire.Peers] = {}  # position id -> its peers' check-ins

    async def event(self) -> dict[str, Any]:
        """The event object (its ``valid_keys`` and settings)."""
        path = self._event_path + "/"
        reply = await self._http.get(path)
        if not reply.ok or not isinstance(reply.body, dict):
            raise UpstreamUnavailable(f"GET {path}: HTTP {reply.status}, no JSON object")
        return reply.body

    async def checkin_list(self) -> dict[str, Any]:
        """Our check-in list from the event's lists: the pretixSCAN profile may list them but
        not read one by its id (403)."""
        path = f"{self._event_path}/checkinlists/"
        async for _reply, rows in self._http.pages(path, {}):
            for row in rows:
                if isinstance(row, dict) and row.get("id") == self._list:
                    return row
        raise UpstreamUnavailable(f"GET {path}: check-in list {self._list} not found in the event")

    async def secrets(self, turned: TurnedSink) -> None:
        """Revoked and blocked secrets since the stored cursors, applied to the revocation store
        with their cursors every :data:`APPLY_EVERY` secrets and at the end. The list is stamped
        fresh only once the orders' states are read too (:meth:`checkins`): a round that fails
        half-way keeps what it applied (the next one goes on from its cursor) and the list's
        freshness as it was. ``turned`` is told of the secrets newly revoked, with when pretix
        revoked each (its ``created``), before they are kept."""
        cursor = self._revocations.upstream_cursor
        if cursor.get(_SECRETS_SCOPE, self._secrets_scope) != self._secrets_scope:
            log.warning("pretix: another event than before: its revoked and blocked secrets"
                        " are read from the start")  # fmt: skip
            cursor = {}
        scope = {_SECRETS_SCOPE: self._secrets_scope}
        before = self._revocations.meta.version
        revoked: list[str] = []
        newly: dict[str, pretix_orders.Turned] = {}
        applied = 0
        # Revoked secrets by "created", which no change moves; the cursor is the newest read
        # less the margin: pretix stamps "created" as its transaction starts, so one still open
        # while a later one was read appears behind it.
        old_created = newest_created = cursor.get(_REVOKED_CURSOR)
        newest_read: str | None = None
        params = {"ordering": "created"}
        if old_created:
            params["created_since"] = old_created
        async for reply, rows in self._http.pages(f"{self._event_path}/revokedsecrets/", params):
            page = pretix_event.revoked_secrets(reply.body)
            listed, not_after = self._times(reply)
            newly.update(self._newly_revoked(page, rows, listed))
            revoked += page
            newest_read = wire.latest(newest_read, rows, "created", not_after)
            newest_created = _held_back(old_created, newest_read, "created", not_after)
            if len(revoked) >= APPLY_EVERY:
                await turned(newly)
                await self._apply(
                    revoked, {}, {**scope, _REVOKED_CURSOR: newest_created}, whole=False
                )
                await turned(newly)  # again: an admission between the two is named too
                applied, revoked, newly = applied + len(revoked), [], {}
        # Blocked secrets by id, which no change moves: ordered by "updated", a row blocked or
        # unblocked mid-round moved to the end, the rows after it moved back one place, and the
        # one moved onto a page already read was skipped, its "updated" then behind the cursor
        # for good. By id a round can only repeat a row. The next cursor is the newest "updated"
        # before the round (asked first: pretix's own clock, as the rows'), less the margin for
        # transactions still open, so a row changed on a page already read comes back next
        # round. A part applied mid-round leaves the cursor.
        path = f"{self._event_path}/blockedsecrets/"
        old = cursor.get(_BLOCKED_CURSOR)
        newest_updated = await self._next_blocked_cursor(path, old)
        blocked: dict[str, bool] = {}
        params = {"ordering": "id"}
        if old:
            params["updated_since"] = old
        async for reply, _rows in self._http.pages(path, params):
            blocked.update(pretix_event.blocked_secrets(reply.body))  # later rows win
            if len(blocked) >= APPLY_EVERY:
                await self._apply([], blocked, scope, whole=False)
                applied, blocked = applied + len(blocked), {}
        new_cursor = {**scope, _REVOKED_CURSOR: newest_created, _BLOCKED_CURSOR: newest_updated}
        if newly:
            await turned(newly)
        meta = await self._apply(revoked, blocked, new_cursor, whole=False)
        if newly:
            await turned(newly)
        if meta.version != before:  # the cursor rows come back every round: quiet then
            log.info(
                "pretix: %d revoked or blocked-state secrets applied (list v%d)",
                applied + len(revoked) + len(blocked), meta.version,
            )  # fmt: skip

    def _newly_revoked(
        self, page: list[str], rows: list[Any], listed: float
    ) -> dict[str, pretix_orders.Turned]:
        """The secrets of a revoked page (``rows`` its results, in order) not revoked yet, with
        their ``created`` (None past ``listed``, when pretix listed them: no such time)."""
        index = self._revocations.index
        revoked = ListState.REVOKED
        return {
            secret: pretix_orders.Turned(
                revoked, _not_after(wire.time_field(row, "created"), listed)
            )
            for secret, row in zip(page, rows, strict=True)
            if index.status(secret_key(secret)) is not ListState.REVOKED
        }

    async def _next_blocked_cursor(self, path: str, old: str | None) -> str | None:
        """The newest blocked-secret change pretix holds now, less :data:`_OVERLAP_S`, if that
        is after ``old`` (else ``old``); none past the page's time (a server's future clock
        would hide every change until then; a stored one past it starts over)."""
        params = {"ordering": "-updated", "page_size": "1"}
        async with contextlib.aclosing(self._http.pages(path, params)) as pages:
            async for reply, rows in pages:
                not_after = self._times(reply)[1]
                newest = wire.latest(None, rows, "updated", not_after)
                return _held_back(old, newest, "updated", not_after)
        return old

    async def _apply(
        self,
        revoked: list[str],
        blocked: dict[str, bool],
        cursor: Mapping[str, str | None],
        *,
        whole: bool,
    ) -> ListMeta:
        """One part of a round into the revocation store, with the cursors it reached; ``whole``:
        the round's end, which stamps the list fresh (the others keep its freshness)."""
        return await self._revocations.apply_secrets(
            revoke=revoked,
            block=[s for s, b in blocked.items() if b],
            unblock=[s for s, b in blocked.items() if not b],
            cursor={name: value for name, value in cursor.items() if value},
            issued_at=int(self._clock.now()) if whole else None,
            fresh=whole,
        )

    async def checkins(
        self, own_device: int | None, turned: TurnedSink, entered: EnteredSink
    ) -> None:
        """Check-ins of other devices and the tickets' order states (cancelled, unpaid), from the
        orders modified since the last round.

        pretix ignores ``modified_since`` on a list's positions but honours it on orders, and
        every check-in and every annulment touches its order's ``last_modified``; an order lists
        its positions with their successful check-ins (those of every list: ours are picked
        out). Ordered by creation, which no change moves, so paging while orders change can
        repeat a row but never skip one. The cursor is the server's time at the first page,
        less a margin for transactions still open then. Without ``own_device`` no check-in is
        learnt (ours could not be told from theirs), only the order states. ``turned`` is told
        of the tickets whose order newly stopped admitting before their states are kept (and
        again after, for an admission in between); ``entered`` of the tickets other devices'
        entries were newly learnt for, as they are kept. Both are for the caller to check this
        gate's admissions against, once (not each time pretix lists the order again), page by
        page: what a round cut short kept is never read as new again.
        """
        if own_device is None:
            log.warning("pretix: own device id unknown, other devices' check-ins not learnt")
        await self._check_orders_scope(own_device)
        since = self._cursors.get(_ORDERS_CURSOR)
        params = [("ordering", "datetime"), *(("include", f) for f in pretix_orders.ORDER_FIELDS)]
        params += [("exclude", f) for f in pretix_orders.ORDER_SKIPPED]
        params.append(("include_canceled_positions", "true"))
        if since:
            params.append(("modified_since", since))
        started, resume_from = self._orders_resume()
        if resume_from is not None:  # inclusive: the orders created in that instant come again
            params.append(("created_since", resume_from))
        learnt = skipped = annulled = ahead = 0
        changed: Counter[ListState] = Counter()
        async for reply, orders in self._http.pages(f"{self._event_path}/orders/", params):
            listed, until = self._times(reply)
            if started is None:
                started = until
            found = pretix_orders.order_states(orders)
            moved = self._moved_order_states(found.states)
            if stopped := {
                s: pretix_orders.Turned(state, _not_after(found.cancelled_at.get(s), listed))
                for s, state in moved.items()
                if state is not ListState.NONE
            }:
                await turned(stopped)
            await self._apply_order_states(moved)
            if stopped:
                await turned(stopped)  # again: an admission between the two is named too
            changed += Counter(moved.values())
            rows, bad = pretix_orders.order_positions(orders)
            skipped += bad + found.skipped
            if own_device is not None:
                checkins = wire.peer_entries(rows, own_device, self._list, listed)
                skipped += checkins.skipped
                ahead += checkins.ahead
                known = await self._journal.known_peer_ids([e.entry_id for e in checkins.entries])
                learnt += await self._journal.add_peer_entries(checkins.entries)
                if new := {e.ticket_ref for e in checkins.entries
                           if e.kind == "entry" and e.entry_id not in known}:  # fmt: skip
                    await entered(new)
                annulled += await self._learn_annulments(rows, own_device)
            if reply.body.get("next") is not None:  # a page pages() took: a dict
                resume_from = wire.latest(resume_from, orders, "datetime", until)
                self._save_orders_resume(resume_from, started)
        if learnt or skipped or annulled:
            log.info("pretix: %d check-ins of other devices learnt, %d annulled there, %d skipped",
                     learnt, annulled, skipped)  # fmt: skip
        if changed:
            log.info("pretix: tickets whose order changed: %d cancelled or expired, %d not paid,"
                     " %d not yet approved, %d admitting again", changed[ListState.CANCELED],
                     changed[ListState.UNPAID], changed[ListState.UNAPPROVED],
                     changed[ListState.NONE])  # fmt: skip
        if ahead:
            log.warning("pretix: %d check-ins of other devices dated after pretix listed them"
                        " (a device's clock ahead, or a forged time): learnt as of then", ahead)  # fmt: skip
        # The round is whole: its lists and the order states are fresh.
        await self._apply([], {}, {}, whole=True)
        if started is not None:
            self._cursors[_ORDERS_CURSOR] = wire.iso(started - _OVERLAP_S)
            for key in _RESUME_KEYS:
                self._cursors.pop(key, None)
        save_cursors(self._state_dir, self._cursors)

    async def _check_orders_scope(self, own_device: int | None) -> None:
        """Drop the orders' cursors when they were read under another scope than this round's
        (:data:`_ORDERS_SCOPE`), or the revocation store does not hold the states read under it.
        The store is told the scope before any state is read under it."""
        # Whether check-ins were learnt, not the device id itself: a gate initialised again as
        # a new device reads on from its cursor (read from the start, every check-in it made
        # as the old device would come back as another device's).
        learning = "check-ins" if own_device is not None else "no check-ins"
        scope = f"{self._secrets_scope} list {self._list} {learning}"
        stored = self._cursors.get(_ORDERS_SCOPE)
        if self._revocations.upstream_cursor.get(_ORDERS_SCOPE) == scope and stored in (
            scope, None):  # fmt: skip
            self._cursors[_ORDERS_SCOPE] = scope
            return
        if any(key in self._cursors for key in (_ORDERS_CURSOR, *_RESUME_KEYS)):
            log.warning("pretix: another event, check-in list or device id than before, or a"
                        " revocation store without the orders' states: the orders are read from"
                        " the start")  # fmt: skip
        self._cursors = {_ORDERS_SCOPE: scope}
        save_cursors(self._state_dir, self._cursors)
        await self._apply([], {}, {_ORDERS_SCOPE: scope}, whole=False)

    def _moved_order_states(self, states: Mapping[str, ListState]) -> dict[str, ListState]:
        """The tickets of ``states`` whose order state is not the one kept (pretix sends every
        modified order, most of them paid as before)."""
        index = self._revocations.index
        return {
            s: state for s, state in states.items() if index.order_status(order_key(s)) != state
        }

    async def _apply_order_states(self, moved: Mapping[str, ListState]) -> None:
        """Keep the order states ``moved``. The list's version goes up, its freshness stays."""
        if not moved:
            return
        ops: dict[str, list[str]] = {"revoke": [], "unrevoke": [], "block": [], "unblock": []}
        for secret, state in moved.items():
            bits = ORDER_STATE_BITS[state]
            ops["revoke" if bits & REVOKED else "unrevoke"].append(ORDER_STATE_PREFIX + secret)
            ops["block" if bits & BLOCKED else "unblock"].append(ORDER_STATE_PREFIX + secret)
        await self._revocations.apply_secrets(**ops, cursor={}, issued_at=None, fresh=False)

    def _orders_resume(self) -> tuple[float | None, str | None]:
        """Where a failed round of orders stopped: its first page's time and the newest creation
        time it read (both None when there is none, or it cannot be read: start over)."""
        started, resume_from = (self._cursors.get(k) for k in _RESUME_KEYS)
        if started is None or resume_from is None:
            return None, None
        try:
            return wire.parse_iso(started), wire.iso(wire.parse_iso(resume_from))
        except ValueError:
            log.warning("pretix: unreadable resume point of the orders, starting over")
            return None, None

    def _save_orders_resume(self, resume_from: str | None, started: float) -> None:
        """Keep where this round of orders stands (a page was read and another follows)."""
        if resume_from is None:  # no row with a creation time: nothing to go on from
            return
        self._cursors[_ORDERS_RESUME_STARTED] = wire.iso(started)
        self._cursors[_ORDERS_RESUME_FROM] = resume_from
        save_cursors(self._state_dir, self._cursors)

    def _times(self, reply: Reply) -> tuple[float, float]:
        """When pretix listed ``reply`` (:func:`sync.pretix_wire.listed_at`), and the time to
        page on from after it (:func:`sync.pretix_wire.cursor_time`)."""
        reading = self._clock.reading()
        listed = wire.listed_at(reply.headers, reading.now)
        # Only a clock the gate trusts judges pretix's (one behind after a power cut without RTC
        # or NTP would have every round read again what came since its time).
        return listed, wire.cursor_time(listed, reading.now) if reading.synced else listed

    async def _learn_annulments(self, rows: list[Any], own_device: int) -> int:
        """Other devices' check-ins that a downloaded position no longer lists were annulled
        there (positions list successful check-ins only): store those annulments.

        What each position listed is kept per process; a position first seen since start is
        compared with what the journal learnt before (annulled while this gate was down)."""
        annuls: list[PeerEntry] = []
        for pid, secret, now in wire.position_peers(rows, own_device, self._list):
            known = self._position_peers.get(pid)
            if known is None:
                known = wire.standing_peers(await self._journal.history(wire.PRETIX_REF + secret))
            gone = {k: v for k, v in known.items() if k not in now}
            if gone:
                annuls += wire.peer_annulments(secret, gone, self._clock.now())
            self._position_peers[pid] = now
        return await self._journal.add_peer_entries(annuls) if annuls else 0


def _not_after(when: float | None, listed: float) -> float | None:
    """``when`` unless pretix dates it after it listed it (a server's clock or a hostile answer:
    such a date would hide an alert as "changed after the entry"): then None, not dated. Up to
    :data:`_LISTED_SLACK_S` after is taken: another of pretix's servers may stamp the change
    by a clock a little ahead of the one that lists it."""
    return when if when is not None and when <= listed + _LISTED_SLACK_S else None


def _held_back(old: str | None, newest: str | None, field: str, not_after: float) -> str | None:
    """The next cursor: ``newest`` (a row's ``field``) less :data:`_OVERLAP_S` when that is
    after ``old``, else ``old``; none past ``not_after`` (:func:`sync.pretix_wire.latest`: a
    stored one past it starts over)."""
    rows = [] if newest is None else [{field: wire.iso(wire.parse_iso(newest) - _OVERLAP_S)}]
    return wire.latest(old, rows, field, not_after)
