"""Uploads to one pretix check-in list: check-ins, failed check-ins and annulments, and the
security alerts that pretix's answers reveal.

Unsynced journal rows go up in ``gate_seq`` order; a row is marked synced once it is done upstream
(accepted, or refused for good). Every check-in carries the entry's id as its nonce, so a retry
after a lost answer is no second check-in.

What pretix does not report (all observed on a real server, see the vectors' README):
* forced (offline) uploads always answer 201 ok, duplicates included: conflicts are found from
  the position's earlier check-ins in the answer and from downloaded check-ins of other devices;
* an annulment works only from the device that checked in and within 15 minutes of that
  check-in's time: a later annulment is logged and not sent.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from agent.errors import JournalError, UpstreamUnavailable
from agent.journal import AlertRecord, EntryRecord, HistoryEntry, Journal
from agent.redact import short_id
from agent.revocation import ListState
from agent.rules import GatePolicy, effective
from sync import pretix_wire as wire
from sync.pretix_http import PretixHTTP, Reply
from sync.pretix_orders import Turned
from sync.pretix_state import event_path, load_held, save_held

log = logging.getLogger(__name__)

_ALERTS_KEPT = 100


class Clock(Protocol):
    def now(self) -> float: ...


@dataclass(frozen=True, slots=True)
class PretixAlert:
    """A ticket admitted here that another device had admitted before, or whose order does not
    admit (security relevant)."""

    # "duplicate_entry" (seen in check-ins), "already_redeemed" (pretix said so) or
    # "order_not_valid" (its order, learnt since, stopped admitting before this admission, or
    # at a time pretix does not date)
    kind: str
    ticket: str  # short hash of the secret, never the secret
    entry_id: str
    other: str  # the other device ("pretix-device-2"); "pretix" for the order
    at: float  # our scan time
    other_at: float | None  # its entry; when the order was cancelled
    detail: str

    @classmethod
    def of(cls, r: AlertRecord) -> PretixAlert:
        """The alert a journal record keeps (the ticket by its short id)."""
        return cls(r.kind, short_id(r.ticket_ref), r.entry_id, r.other, r.at, r.other_at, r.detail)


class _Done(Exception):
    """Internal: a row is finished upstream (accepted, or refused for good); carries why."""


class _NotPretix(UpstreamUnavailable):
    """Internal: a redeem answered by something that is not pretix (a proxy, a firewall)."""


# A row whose redeem gets an answer that is not pretix's this many rounds in a row is passed by
# (kept, asked again every round) once the row after it gets pretix's own answer: a firewall
# refusing one URL (its secret) must not hold back every later check-in, which pretix's other
# scanners need to refuse those tickets.
HOLD_AFTER = 3
# Rows passed by in a row, pretix answering none between: past it the round stops (a link that is
# not pretix for any row is asked one more row every HOLD_AFTER rounds, up to this many).
MAX_PASSED_BY = 8
# A cancellation dated less than this after an admission may have come first (two clocks).
CLOCKS_APART_S = 60.0
_ORDER_WORDS = {
    ListState.REVOKED: "its secret revoked by pretix (the order cancelled, or the ticket issued anew)",
    ListState.CANCELED: "its order (or the ticket) cancelled or expired",
    ListState.UNPAID: "its order not paid (pending, e.g. charged back)",
    ListState.UNAPPROVED: "its order awaiting approval",
}


class PretixUpload:
    """Drains one gate's journal outbox into one check-in list.

    ``rejected`` counts rows pretix refused for good; ``alerts`` holds the latest 100 alerts,
    each also passed to ``on_alert`` (whose faults are logged, never raised).
    """

    def __init__(
        self,
        http: PretixHTTP,
        *,
        organizer: str,
        event: str,
        checkin_list: int,
        journal: Journal,
        clock: Clock,
        batch: int,
        on_alert: Callable[[PretixAlert], None] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self._http, self._org, self._event, self._list = http, organizer, event, checkin_list
        self._event_path = event_path(organizer, event)
        self._journal, self._clock, self._batch = journal, clock, batch
        self._on_alert = on_alert
        self.alerts: collections.deque[PretixAlert] = collections.deque(maxlen=_ALERTS_KEPT)
        self.alert_count = 0
        self.rejected = 0
        # gate_seq -> rounds in a row answered not as pretix answers a row; kept in state_dir
        # (a restart would hold the rest behind a row passed by for HOLD_AFTER rounds again)
        self._state_dir = state_dir
        self._foreign = {} if state_dir is None else load_held(state_dir)
        self.held = 0  # rows the last round passed by (see HOLD_AFTER), the ticket's later ones too

    async def drain(
        self, policy: GatePolicy, own_device: int | None, *, pretix_answered: bool = False
    ) -> None:
        """Upload every unsynced row, oldest first, marking each synced when done upstream.

        A row answered not as pretix answers one (a firewall's page, a 403 or a 5xx) HOLD_AFTER
        rounds in a row is passed by, with every later row of its ticket (an exit must not go up
        before its entry, nor an annulment before its check-in), once pretix answers: a later
        row of another ticket gets pretix's own answer, or this round's download did
        (``pretix_answered``): one URL refused by a firewall, the rest go on. They stay queued
        and are asked again every round. Up to MAX_PASSED_BY such rows in a row are passed by
        (two tickets refused held back every later one: an integrator's trial). Raises
        UpstreamUnavailable or UpstreamAuthError (the row and those after it stay queued; also
        when nothing told a refused URL from a broken link) and journal faults.
        """
        counted = dict(self._foreign)
        try:
            await self._drain(policy, own_device, pretix_answered)
        finally:
            if self._foreign != counted and self._state_dir is not None:
                try:
                    save_held(self._state_dir, self._foreign)
                except OSError as exc:
                    log.warning("pretix: the rows held back not kept: %s", exc)

    async def _drain(
        self, policy: GatePolicy, own_device: int | None, pretix_answered: bool
    ) -> None:
        held_refs: set[str] = set()
        after, passed, held = 0, 0, 0  # passed: rows passed by since pretix last answered one
        probe: UpstreamUnavailable | None = None  # a row passed by, no later one through yet
        while rows := await self._journal.unsynced(self._batch, after):
            for rec in rows:
                after = rec.gate_seq
                if rec.ticket_ref in held_refs:
                    held += 1
                    continue  # behind its ticket's row passed by
                try:
                    await self._upload_row(rec, policy, own_device)
                except _NotPretix as exc:
                    # counted up to one past HOLD_AFTER: the kept file changes no more after
                    tries = min(self._foreign.get(rec.gate_seq, 0) + 1, HOLD_AFTER + 1)
                    self._foreign[rec.gate_seq] = tries
                    if tries < HOLD_AFTER or passed >= MAX_PASSED_BY:  # not yet, or too many
                        raise
                    if tries == HOLD_AFTER:
                        log.warning(
                            "pretix: %s %s (gate_seq %d) answered %d rounds in a row not as"
                            " pretix answers a row (%s); passed by while the rows after it go"
                            " on, asked again every round", rec.kind, rec.entry_id, rec.gate_seq,
                            tries, exc,
                        )  # fmt: skip
                    held_refs.add(rec.ticket_ref)
                    held += 1
                    passed += 1
                    probe = exc  # a later row tells a refused URL from a broken link
                    continue
                probe, passed = None, 0
                if self._foreign.pop(rec.gate_seq, 0) >= HOLD_AFTER:
                    log.info("pretix: %s %s (gate_seq %d) passed by before went through",
                             rec.kind, rec.entry_id, rec.gate_seq)  # fmt: skip
                await self._journal.mark_synced(rec.gate_seq, self._clock.now(), only=True)
            if len(rows) < self._batch:
                break
        if probe is not None and not pretix_answered:  # nothing told: the round is not through
            raise probe
        self.held = held  # of a round that went through: rows waiting while the rest went up

    async def _upload_row(self, rec: EntryRecord, policy: GatePolicy, own: int | None) -> None:
        """Send one row; returns when it is done upstream, raises to keep it queued."""
        try:
            if rec.kind in ("entry", "exit"):
                await self._upload_checkin(rec, policy, own)
            elif rec.kind == "attempt":
                await self._upload_failed(rec, policy)
            else:
                await self._upload_annul(rec)
        except _NotPretix:
            raise
        except UpstreamUnavailable as exc:
            if not exc.answered:  # a link failure: every row would fail the same way
                raise
            # A 403 or 5xx for this row: pretix's (every row then, which the next row tells) or
            # a firewall's refusal of its URL, or pretix failing on this one position.
            raise _NotPretix(str(exc), exc.retry_after, brief=exc.brief, answered=True) from None
        except _Done as done:
            why = str(done)
            if why:
                log.info("pretix: %s %s (gate_seq %d) done: %s", rec.kind, rec.entry_id,
                         rec.gate_seq, why)  # fmt: skip

    async def _upload_checkin(self, rec: EntryRecord, policy: GatePolicy, own: int | None) -> None:
        secret = wire.secret_of(rec.ticket_ref)
        if secret is None:
            raise _Done("not a pretix ticket, nothing to upload")
        path = wire.redeem_path(self._org, self._event, self._list, secret)
        reply = await self._http.request(
            "POST", path, json_body=wire.redeem_body(rec), params={"untrusted_input": "true"},
            secret=secret,
        )  # fmt: skip
        outcome = wire.redeem_outcome(reply)
        if outcome is None:  # not pretix's answer: kept, and asked again (with backoff)
            if reply.status == 404:
                raise _NotPretix(f"redeem: HTTP 404 without a reason (list {self._list}?)")
            raise _NotPretix(
                f"redeem: HTTP {reply.status}, not pretix's answer {wire.reply_keys(reply)}"
            )
        if outcome == "ok":
            if rec.kind == "entry":
                await self._check_duplicate(rec, secret, reply, policy, own)
            return
        if outcome == "already_redeemed":
            await self._alert(rec, secret, "already_redeemed", "pretix", None,
                              "pretix: already redeemed")  # fmt: skip
        self.rejected += 1
        raise _Done(f"refused by pretix for good: HTTP {reply.status} {outcome}")

    async def _upload_failed(self, rec: EntryRecord, policy: GatePolicy) -> None:
        path = f"{self._event_path}/checkinlists/{self._list}/failed_checkins/"
        reply = await self._http.request(
            "POST", path, json_body=wire.failed_checkin_body(rec, policy.direction)
        )
        if reply.ok:
            return
        if reply.status == 404:
            raise UpstreamUnavailable(f"failed_checkins: HTTP 404 (list {self._list}?)")
        self.rejected += 1
        raise _Done(
            f"failed check-in refused for good: HTTP {reply.status} {wire.reply_keys(reply)}"
        )

    async def _upload_annul(self, rec: EntryRecord) -> None:
        if rec.annuls is None or wire.secret_of(rec.ticket_ref) is None:
            raise _Done("not a pretix ticket, nothing to annul")
        try:
            late = rec.wall_time - wire.uuid7_time(rec.annuls) > wire.ANNUL_WINDOW_S
        except ValueError:
            late = False
        if late:
            log.warning(
                "pretix: annulment %s comes more than 15 min after its entry; pretix refuses"
                " that, not sent (the check-in stays counted upstream)", rec.entry_id,
            )  # fmt: skip
            raise _Done("")
        path = f"/api/v1/organizers/{quote(self._org, safe='')}/checkinrpc/annul/"
        reply = await self._http.request("POST", path, json_body=wire.annul_body(rec, self._list))
        if reply.ok:
            return
        # 404: no check-in with that nonce from this device (the entry was refused upstream);
        # 400: outside pretix's 15 minutes. Retrying cannot change either.
        self.rejected += 1
        raise _Done(f"annulment refused for good: HTTP {reply.status} {wire.reply_keys(reply)}")

    async def _check_duplicate(
        self, rec: EntryRecord, secret: str, reply: Reply, policy: GatePolicy, own: int | None
    ) -> None:
        if policy.entry_policy == "unlimited":
            return
        history = await self._journal.history(rec.ticket_ref)
        if all(h.entry_id != rec.entry_id for h in effective(history)):
            return  # annulled since (nobody passed): no admission, as the other checks judge
        conflict = wire.prior_entry_in_answer(reply.body, own, rec.wall_time)
        if conflict is None:
            conflict = wire.prior_entry_in_history(history, rec.entry_id)
        if conflict is not None:
            await self._alert(rec, secret, "duplicate_entry", conflict.device, conflict.at,
                        "admitted here while an entry elsewhere was still standing")  # fmt: skip

    async def peers_learnt(self, refs: Iterable[str], policy: GatePolicy) -> None:
        """Other devices' entries were newly learnt for the tickets ``refs``: one standing right
        before an entry of this gate's is a duplicate its upload could not see (found in an
        integrator's trial: a gate offline admitted first and uploaded last, the online gate's
        entry went up first, and neither said anything). One pass over each ticket's history."""
        if policy.entry_policy == "unlimited":
            return
        for ref in refs:
            if (secret := wire.secret_of(ref)) is None:
                continue
            history = await self._journal.history(ref)
            conflicts = wire.entries_after_peer_entries(history)
            for row in history:
                conflict = conflicts.get(row.entry_id)
                # The same instant to the millisecond is this gate's own check-in, uploaded as
                # its former pretix device (initialised again since): not another's.
                if conflict is not None and abs(conflict.at - row.wall_time) >= 0.001:
                    await self._alert(row, secret, "duplicate_entry", conflict.device, conflict.at,
                                      "admitted here while an entry elsewhere was still standing"
                                      " (learnt later)")  # fmt: skip

    async def orders_turned(self, turned: Mapping[str, Turned]) -> None:
        """Tickets newly learnt to admit no more (the secret revoked; the order cancelled,
        expired, unpaid or awaiting approval): an entry of this gate still standing for one is
        an alert unless pretix dates the change clearly after it (found in an integrator's
        trial: an offline gate admitted a ticket whose order had been cancelled meanwhile,
        pretix took the forced check-in, and nothing said so). pretix dates a revocation (as it
        cancels an order it revokes the printed secret) and an order's cancellation; an unpaid
        (a chargeback), expired or unapproved order, or one cancelled position, is named with
        its time unknown."""
        for secret, why in turned.items():
            history = await self._journal.history(wire.PRETIX_REF + secret)
            for row in effective(history):  # the entries no annulment cancelled
                if not row.peer and row.kind == "entry":
                    await self._order_alert(row, secret, why)

    async def _order_alert(self, row: HistoryEntry, secret: str, why: Turned) -> None:
        """Alert ``row`` unless pretix dates ``why`` clearly after it (by a clock this gate
        trusted when it decided: one behind, after a power cut without a clock source, would
        make every change look later; an integrator's trial)."""
        when = why.since
        if when is None:
            timing = " (since when: not dated)"
        elif not row.timed:
            timing = " (this gate's clock was not trusted at the admission: which came first is not known)"
        elif when > row.wall_time + CLOCKS_APART_S:
            return  # changed after the holder came in
        elif when <= row.wall_time:
            timing = " before this admission"
        else:
            timing = (
                f" {when - row.wall_time:.0f} s after this admission (within two clocks' margin)"
            )
        detail = _ORDER_WORDS[why.state] + timing
        await self._alert(row, secret, "order_not_valid", "pretix", when, detail)

    async def _alert(
        self, rec: EntryRecord | HistoryEntry, secret: str, kind: str, other: str,
        other_at: float | None, detail: str,
    ) -> None:  # fmt: skip
        """Keep the alert in the journal, then say it: once per entry and finding, a restart or
        a list learnt anew (the revocation store lost) included (found in an integrator's trial:
        alerts de-duplicated in memory came back)."""
        finding = _finding(kind)
        record = AlertRecord(kind, finding, rec.entry_id, wire.PRETIX_REF + secret, other,
                             rec.wall_time, other_at, detail)  # fmt: skip
        alert = PretixAlert.of(record)
        try:
            new = await self._journal.record_alert(record)
        except JournalError as exc:  # said all the same: an alert twice beats none
            log.error("pretix: the alert below is not kept in the journal: %s", exc)
            new = not any(a.entry_id == rec.entry_id and _finding(a.kind) == finding
                          for a in self.alerts)  # fmt: skip
        if not new:
            return
        self.alerts.append(alert)
        self.alert_count += 1
        log.warning(
            "SECURITY ALERT %s: ticket %s entry %s at %s; other: %s at %s (%s)",
            kind, alert.ticket, rec.entry_id, wire.iso(rec.wall_time), other,
            "?" if other_at is None else wire.iso(other_at), detail,
        )  # fmt: skip
        if self._on_alert is not None:
            try:
                self._on_alert(alert)
            except Exception:  # an alert sink must not stop the sync
                log.exception("pretix: alert callback failed")

    async def load_alerts(self) -> None:
        """Take the alerts kept in the journal: their count and the latest 100 (at start).
        Raises JournalError."""
        self.alert_count, kept = await self._journal.alerts(_ALERTS_KEPT)
        self.alerts.clear()
        self.alerts.extend(PretixAlert.of(a) for a in kept)


def _finding(kind: str) -> str:
    """What an alert of ``kind`` says of its entry: its order, or another device's entry
    standing before it (a duplicate, pretix's "already redeemed")."""
    return "order" if kind == "order_not_valid" else "entry"
