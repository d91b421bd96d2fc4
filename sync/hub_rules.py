"""The hub's ingest rules as one pure function, so the SQLite and PostgreSQL stores cannot drift.

A backend, inside its per-batch transaction (serialised per venue), reads what it already holds
about the batch into a :class:`KnownState`, calls :func:`plan_ingest`, writes the plan's rows and
alerts, commits, and answers with :func:`ack`. The rules (all of them decided on that consistent
view, so each alert is raised exactly once; an alert's ``dedupe_key`` keeps a retried batch from
raising it again):

* idempotent by ``entry_id``: the same id with an identical body (:class:`EntryWire` equality) is a
  duplicate; with another body, or a gate's ``gate_seq`` held by another ``entry_id``, it is a
  conflict: nothing of the batch is stored, one integrity alert per conflicting entry, and one
  per double admission its admissions make (they are kept as claims: :mod:`sync.hub_claims`).
* a hole in a gate's ``gate_seq`` (before the batch or inside it): stored anyway, one alert.
* double admission, decided on the ticket's history (its last rows: see below) ordered by HLC
  (ties by gate, gate_seq) including the batch, so the order in which entries reach the hub does
  not change which alerts exist (alerts are never withdrawn, so only an exit or annulment
  arriving late can):
  ``single`` - every live (admitted, not annulled) entry after the ticket's first one;
  ``reentry`` - every live entry whose neighbour before it among the live entries and exits is an
  entry; ``unlimited`` - never. One alert per later entry (``double:<entry_id>``), raised when
  the batch creates it (a late row can make an entry "later"; an annulled exit can make two
  entries neighbours). Both rows are kept; a later annulment does not withdraw an alert.
* repeated denials: a denied attempt *starts a burst* when at least ``denied_alert_threshold``
  attempts of its ticket (itself included) lie in ``[its wall time, + denied_alert_window_s]``.
  One alert per window-long bucket of the wall clock in which bursts start
  (``denied:<ticket digest>:<floor(start / window)>``). That set depends only on which attempts
  exist, not on their arrival order; a burst that starts on both sides of a bucket boundary
  raises two, and a steady stream (one attempt every 25 s, window 60 s, threshold 3) one per
  window of its duration - 6 such attempts raise 2.

* who owns the data: an annulment must name an entry of the uploading gate with the same ticket,
  made in the same run within the passage timeout, and come after every row the gate recorded
  before it; no new row may be dated back in its run on the gate's monotonic clock or be of a
  run the gate left (:mod:`sync.hub_annul`; a user trial: a copy of a gate's token annulled its
  admissions minutes later, and every other gate let those tickets in again); with ``exit_gates``
  set, only those gates may record exits (under reentry an exit lets its ticket in again: a stolen
  entry gate could otherwise read the feed and let every ticket in twice). Such a batch is refused
  whole (nothing stored) with one integrity alert naming the gate per refused row. In a ticket's
  history an annulment cancels an entry only when both come from the same gate, so rows stored
  before these checks existed cannot reopen a ticket either.
* time: a row whose wall time or HLC is more than ``max_clock_ahead_s`` ahead of the hub's clock
  is stored as the gate sent it (refusing it hid a gate's admissions from the venue for as long
  as its clock led), but ordered, here and in the peer feed, as of its arrival plus
  ``max_clock_ahead_s`` (:func:`sync.hub_plan.as_of_arrival`): it cannot sort after what
  happens later. One integrity alert an hour names the gate and its lead (``ahead:<gate>:<hour>``).
  A new row dated before its gate's earlier rows (as the venue orders them) or with an HLC behind
  its own wall time is stored too, but no honest gate makes one (a copy of its token backdating
  an admission): one integrity alert an hour (``behind:<gate>:<hour>``).
* upload quota: a batch with more new rows than the gate may store now (``known.quota``, kept
  by the store's :class:`sync.hub_store.UploadQuota` at ``upload_rows_per_s``) stores nothing
  and raises one integrity alert an hour (``quota:<gate>:<hour>``); the gate is answered 429
  with the seconds until it fits. Duplicates of stored rows do not count.
* alert budget: the alerts one gate's uploads raise within a window (``alert_budget_window_s``,
  buckets of the hub's clock) beyond ``alert_budget`` are not stored one by one; they collapse into
  an ``alert_storm`` alert for the gate, bucket and kind held back, whose ``held`` count grows with
  each batch, so one stolen gate cannot bury the other gates' alerts (:mod:`sync.hub_budget`).
* a ticket's history as the stores read it: of each gate, its last :data:`MAX_TICKET_HISTORY`
  entries, exits and annulments of the ticket to arrive, and of its last
  :data:`MAX_TICKET_HISTORY` attempts those in the window above. Reading all of them let one
  stolen gate stall the store for every gate: a made-up ticket of 50,000 admitted entries,
  within its quota, made each batch naming it cost 0.6 s on the store's one thread. Counted per
  gate, a flood from one gate pushes out only its own rows (a ticket's last rows of any gate let
  1,000 annulments of the thief's own entry hide gate-a's admission, so gate-b's clone raised
  nothing), and attempts are counted apart from the rest. An honest ticket stays far below
  either cap.

Alerts name a ticket by its short id (:func:`agent.redact.short_id`) only, never by its
reference. The column lists, row conversions and statements both backends share are
:mod:`sync.hub_sql`; the planner's row and alert types :mod:`sync.hub_plan`; the double-admission
and repeated-denial rules :mod:`sync.hub_ticket_alerts`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.clock import HLC, HLC_MAX_AHEAD_S
from agent.model import Verdict
from agent.redact import short_id
from sync import hub_annul
from sync.hub_budget import within_budget
from sync.hub_plan import (
    AlertNote,
    Names,
    NewAlert,
    TicketRow,
    admission,
    arrival_caps,
    as_of_arrival,
    lead_s,
)
from sync.hub_store import ConflictError, HubPolicy, OverQuotaError, RefusedError
from sync.hub_ticket_alerts import again_notes, ticket_alerts, undone_doubles
from sync.protocol import (
    MAX_DETAIL,
    BatchAck,
    EntryResult,
    EntryStatus,
    EntryWire,
)

KEEP_DELTAS = 1000  # revocation deltas kept at the hub; older gates fetch the snapshot
MAX_TICKET_HISTORY = 1000  # per gate: a ticket's last entries+exits+annuls read, last attempts
FEED_KINDS = ("entry", "exit", "annul")


# Columns of a ticket's history rows, as :meth:`TicketRow.from_row` reads them.
def in_feed(entry: EntryWire) -> bool:
    """True for rows the peer feed carries: admitted entries and exits, and every annulment."""
    return entry.kind == "annul" or (entry.kind in FEED_KINDS and entry.admitted)


@dataclass(frozen=True, slots=True)
class KnownState:
    """What the store holds about one batch, read inside the batch's transaction."""

    stored: Mapping[str, EntryWire] = field(default_factory=dict)  # batch entry_ids already stored
    seq_owners: Mapping[int, str] = field(default_factory=dict)  # this gate: gate_seq -> entry_id
    max_seq: int = 0  # this gate's highest stored gate_seq (0: none)
    # ticket_ref -> its entry/exit/annul rows and its attempts within :func:`attempt_span` (of
    # each gate its last MAX_TICKET_HISTORY of each), for the refs of :func:`history_refs`
    history: Mapping[str, Sequence[TicketRow]] = field(default_factory=dict)
    gate_names: Mapping[str, str] = field(default_factory=dict)  # gate_id -> the operator's name
    # entry ids the batch's annulments name (:func:`sync.hub_annul.annul_targets`) -> that entry
    targets: Mapping[str, hub_annul.Target] = field(default_factory=dict)
    alert_count: int = 0  # alerts this gate's uploads raised in the current budget bucket
    quota: float = math.inf  # new rows this gate may store now (sync.hub_store.UploadQuota)
    last_hlc: int = 0  # the HLC the venue orders this gate's row at max_seq by (0: none)
    # this gate's row just below the batch's first new one: its run, its mono (None: none)
    run_before: hub_annul.RunMark | None = None
    # the batch's runs other than run_before's (:func:`sync.hub_annul.boots_to_ask`) this gate
    # has stored rows of
    seen_boots: frozenset[str] = frozenset()
    # of a refused batch's alerts (``IngestPlan.candidates``) those stored: no budget again
    raised: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class IngestPlan:
    """What to write for a batch. With conflicts or refusals, only the alerts are written."""

    rows: tuple[EntryWire, ...]
    results: tuple[EntryResult, ...]
    conflicts: tuple[str, ...]
    alerts: tuple[NewAlert, ...]
    acked_through_seq: int
    refused: tuple[tuple[str, str], ...] = ()  # (field, why) of rows the gate may not write
    throttled: float = 0.0  # over the gate's upload quota: seconds until the batch fits
    # A batch refused (conflict, refusal, quota) is sent again and again, and its alerts, dropped
    # by the store as raised before, took the gate's alert budget each time (a false storm, a
    # new alert held back in it: a review). The dedupe keys of its alerts before the budget: the
    # store reads which are stored and plans again with them as ``KnownState.raised``.
    candidates: tuple[str, ...] = ()
    notes: tuple[AlertNote, ...] = ()  # on alerts raised before (hub_ticket_alerts)

    @property
    def feed_rows(self) -> bool:
        """True when the plan inserts a row the peer feed carries (long-polls must wake)."""
        return any(in_feed(row) for row in self.rows)


def claimable(gate_id: str, rows: Iterable[EntryWire]) -> list[EntryWire]:
    """The rows of a refused batch kept as claims (:mod:`sync.hub_claims`): ``gate_id``'s
    admissions."""
    return [
        e for e in rows
        if e.gate_id == gate_id and e.kind == "entry" and e.verdict is Verdict.ADMIT
    ]  # fmt: skip


def history_refs(
    entries: Sequence[EntryWire], stored: Mapping[str, Any], policy: HubPolicy
) -> list[str]:
    """Ticket refs whose history the rules need: those of new attempts and, unless the policy
    is unlimited, of new admitted entries and annulments (an annulled exit joins two entries),
    and with re-entry of exits (one received late splits a double: a note)."""
    refs: set[str] = set()
    exits = policy.entry_policy == "reentry"
    for e in entries:
        if e.entry_id in stored:
            continue
        admits = admission(e) or e.kind == "annul" or (exits and e.kind == "exit")
        if e.kind == "attempt" or (admits and policy.entry_policy != "unlimited"):
            refs.add(e.ticket_ref)
    return sorted(refs)


def attempt_span(
    entries: Sequence[EntryWire], policy: HubPolicy, now: float
) -> tuple[float, float]:
    """The wall times (as of arrival: :func:`sync.hub_plan.as_of_arrival`) of stored attempts
    the batch's attempts, received at ``now``, may count with, as (lo, hi) inclusive: a window
    either side of them ((inf, -inf), an empty span, without attempts). A stored attempt falls
    in it when its wall time does, or its arrival plus ``max_clock_ahead_s`` does (the stores
    select both; the rules then use the time as of arrival)."""
    ahead = policy.max_clock_ahead_s
    times = [
        as_of_arrival(e.hlc, e.wall_time, now, ahead)[1] for e in entries if e.kind == "attempt"
    ]
    if not times:
        return math.inf, -math.inf
    window = policy.denied_alert_window_s
    return min(times) - window, max(times) + window


def gates_to_name(
    gate_id: str, history: Mapping[str, Sequence[TicketRow]], stored: Mapping[str, EntryWire]
) -> list[str]:
    """The gate ids an alert of this batch may name: the uploader, the gates in the tickets'
    histories, and the owners of stored rows whose entry_id the batch repeats."""
    gates = {gate_id}
    for rows in history.values():
        gates.update(r.gate_id for r in rows)
    gates.update(e.gate_id for e in stored.values())
    return sorted(gates)


def plan_ingest(
    gate_id: str, entries: Sequence[EntryWire], known: KnownState, policy: HubPolicy, now: float
) -> IngestPlan:
    """Decide a batch received at hub time ``now``: per-entry inserted/duplicate, conflicts,
    refusals, rows to insert and new alerts (within the gate's alert budget).

    ``entries``: a batch :func:`sync.protocol.check_batch` took (each store's ingest checks it
    before its transaction; the rules count on its gate_seq order).
    """
    names = Names(known.gate_names)
    acked = max(e.gate_seq for e in entries)
    results: list[EntryResult] = []
    conflicts: list[NewAlert] = []
    new_ids = [e.entry_id for e in entries]
    if not known.stored and not known.seq_owners and len(set(new_ids)) == len(new_ids):
        results = [EntryResult(i, "inserted") for i in new_ids]  # the usual batch: all new
    else:
        seen: set[str] = set()
        for e in entries:
            conflict = _conflict(e, known, seen, names)
            seen.add(e.entry_id)
            if conflict is not None:
                conflicts.append(conflict)
            else:
                status: EntryStatus = "duplicate" if e.entry_id in known.stored else "inserted"
                results.append(EntryResult(e.entry_id, status))
    if conflicts:
        ids = tuple(a.entries[0] for a in conflicts)
        said = [*conflicts, *_claim_doubles(gate_id, entries, known, policy, names, now)]
        budgeted = _budget(gate_id, said, known, policy, now, deferred=True)
        return IngestPlan((), (), ids, budgeted, acked, candidates=_keys(said))
    rows = tuple(e for e in entries if e.entry_id not in known.stored)
    refused = _refusals(gate_id, entries, known, policy, now)
    if refused:
        alerts = [alert for _, _, alert in refused]
        why = tuple((where, text) for where, text, _ in refused)
        budgeted = _budget(gate_id, alerts, known, policy, now, deferred=True)
        return IngestPlan((), (), (), budgeted, acked, why, candidates=_keys(alerts))
    if len(rows) > known.quota:
        alerts = [_quota_alert(gate_id, names, policy, now)]
        budgeted = _budget(gate_id, alerts, known, policy, now, deferred=True)
        wait = max(1.0, math.ceil((len(rows) - known.quota) / policy.upload_rows_per_s))
        return IngestPlan((), (), (), budgeted, acked, throttled=wait, candidates=_keys(alerts))
    alerts = _holes(gate_id, entries, known.max_seq, names)
    alerts += ticket_alerts(rows, known.history, policy, names, now)
    # Last: within its hour they are duplicates the store drops, and must not take the budget
    # slot of a ticket's alert.
    alerts += _ahead_alert(gate_id, rows, names, policy, now)
    alerts += _behind_alert(gate_id, rows, known, names, policy, now)
    notes = (*undone_doubles(rows, known.history, policy, names, now), *again_notes(alerts))
    budgeted = _budget(gate_id, alerts, known, policy, now)
    return IngestPlan(rows, tuple(results), (), budgeted, acked, notes=notes)


def _claim_doubles(
    gate_id: str,
    entries: Sequence[EntryWire],
    known: KnownState,
    policy: HubPolicy,
    names: Names,
    now: float,
) -> list[NewAlert]:
    """The double admissions a refused batch's admissions make: they become claims other gates
    count (:mod:`sync.hub_claims`), so they are said now, not once an operator has set apart the
    rows squatting the gate's numbers and they come through (a security lead's trial). Planned
    from the claimed tickets' new rows of the gate, exits and annulments too, as the rules would
    plan the batch: an admission nobody passed, or one after an exit, is no second one (a
    review)."""
    claimed = {e.ticket_ref for e in claimable(gate_id, entries) if e.entry_id not in known.stored}
    rows = [
        e for e in entries
        if e.ticket_ref in claimed and e.gate_id == gate_id and e.kind in FEED_KINDS
        and e.entry_id not in known.stored
    ]  # fmt: skip
    return [
        replace(a, detail=f"{a.detail} (claimed: its batch was refused as a conflict)"[:MAX_DETAIL])
        for a in ticket_alerts(rows, known.history, policy, names, now)
    ]


def _quota_alert(gate_id: str, names: Names, policy: HubPolicy, now: float) -> NewAlert:
    """One integrity alert an hour while a gate uploads more than its quota."""
    name = names(gate_id)
    return _hourly(
        "quota", gate_id, name, now,
        f"gate {name} uploads more new rows than {policy.upload_rows_per_s:g} a second: batches"
        " held back (a stolen token? an outage of more than 6 hours?)",
    )  # fmt: skip


def _hourly(key: str, gate_id: str, name: str, now: float, detail: str) -> NewAlert:
    """An integrity alert about a gate as a whole, at most one an hour (``key:<gate>:<hour>``)."""
    return NewAlert(
        "integrity", "", (name,), (now,), (), detail,
        f"{key}:{gate_id}:{math.floor(now / 3600)}", gate_ids=(gate_id,),
    )  # fmt: skip


def _span(seconds: float) -> str:
    return "more than a day" if seconds > 86400 else f"{seconds:,.0f} s"


def _refusals(
    gate_id: str, entries: Sequence[EntryWire], known: KnownState, policy: HubPolicy, now: float
) -> list[tuple[str, str, NewAlert]]:
    """(field, why, integrity alert) for each new row the gate has no right to write."""
    earlier: dict[str, EntryWire] = {}  # rows before this one in the batch
    name = Names(known.gate_names)(gate_id)
    # the gate's row before this one (by gate_seq), and the runs it is known to have left
    before, boots = known.run_before, set(known.seen_boots)
    out = []
    for i, e in enumerate(entries):
        refused = None
        if e.entry_id not in known.stored:
            if e.annuls is not None:
                target = known.targets.get(e.annuls) or _target(earlier.get(e.annuls))
                refused = hub_annul.why_refused(e, target, gate_id, before)
            if refused is None:
                refused = hub_annul.run_refusal(e, before, boots)
            if refused is None and e.kind == "exit" and not _may_exit(gate_id, policy):
                refused = "kind", f"an exit from gate {name}, not one of [hub] exit_gates"
        earlier[e.entry_id] = e
        if before is not None and before.boot_id != e.boot_id:
            boots.add(before.boot_id)  # a run the gate left
        before = hub_annul.RunMark(e.boot_id, e.mono_ns)
        if refused is not None:
            key, why = refused
            detail = f"gate {name} refused: {why}"[:MAX_DETAIL]
            alert = NewAlert(
                "integrity", short_id(e.ticket_ref), (name,), (e.wall_time,),
                (e.entry_id,), detail, f"refused:{e.entry_id}", gate_ids=(gate_id,),
            )  # fmt: skip
            out.append((f"entries[{i}].{key}", why, alert))
    return out


def _target(e: EntryWire | None) -> hub_annul.Target | None:
    return None if e is None else hub_annul.Target(e.gate_id, e.ticket_ref, e.boot_id, e.mono_ns)


def _may_exit(gate_id: str, policy: HubPolicy) -> bool:
    return policy.exit_gates is None or gate_id in policy.exit_gates


def _ahead_alert(
    gate_id: str, rows: Sequence[EntryWire], names: Names, policy: HubPolicy, now: float
) -> list[NewAlert]:
    """One integrity alert an hour while a gate's new rows run ahead of the hub's clock."""
    if not rows:
        return []
    # lead_s of the row furthest ahead: the latest wall time and HLC are read once each
    top = max(rows, key=lambda e: e.wall_time), max(rows, key=lambda e: e.hlc)
    lead = max(lead_s(e, now) for e in top)
    if lead <= policy.max_clock_ahead_s:
        return []
    name = names(gate_id)
    return [
        _hourly(
            "ahead", gate_id, name, now,
            f"gate {name}'s clock runs {_span(lead)} ahead of the hub's: its rows are ordered as"
            " of their arrival (check its clock and [clock] assume)",
        )
    ]  # fmt: skip


def _behind_alert(
    gate_id: str,
    rows: Sequence[EntryWire],
    known: KnownState,
    names: Names,
    policy: HubPolicy,
    now: float,
) -> list[NewAlert]:
    """One integrity alert an hour while a gate's new rows are dated before what it recorded
    earlier: a copy of its token backdating an admission to sort it before another gate's (a
    security trial: the honest gate then looked like the one that let the ticket in twice).

    A gate's HLC is never behind its own wall time (:meth:`agent.clock.HLC.tick`). It grows
    with its gate_seq, but after a restart it goes on from its own clock when it had followed
    peers further ahead than :data:`HLC_MAX_AHEAD_S` (agent.journal's recovery), and it may
    follow them up to ``max_clock_ahead_s`` past the hub's time: so only a row more than both
    behind the gate's earlier rows (as the venue orders them, as of arrival) counts (a review
    found an honest restart raising it)."""
    slack_ms = int((policy.max_clock_ahead_s + HLC_MAX_AHEAD_S) * 1000)
    last, behind, seq = known.last_hlc, 0, 0
    latest, _ = arrival_caps(now, policy.max_clock_ahead_s)  # a row's HLC as of arrival
    for e in rows:  # by gate_seq: a batch ascends (protocol.check_batch)
        if e.gate_seq <= known.max_seq:
            continue
        at_ms = HLC.physical_ms(e.hlc)
        behind_own = int(e.wall_time * 1000) - at_ms
        behind_last = HLC.physical_ms(last) - at_ms
        lag = max(behind_own, behind_last if behind_last > slack_ms else 0)
        if lag > behind:
            behind, seq = lag, e.gate_seq
        last = max(last, min(e.hlc, latest))
    if not behind:
        return []
    name = names(gate_id)
    return [
        _hourly(
            "behind", gate_id, name, now,
            f"gate {name} uploaded a row dated {_span(behind / 1000)} before what it recorded"
            f" earlier (gate_seq {seq}): a copy of its token backdating admissions? (the venue"
            " orders rows as dated; see the gate's other alerts, e.g. two units heartbeating)",
        )
    ]  # fmt: skip


def _keys(alerts: Sequence[NewAlert]) -> tuple[str, ...]:
    return tuple(a.dedupe_key for a in alerts)


def planned_again(
    plan: IngestPlan,
    raised: frozenset[str],
    gate_id: str,
    entries: Sequence[EntryWire],
    known: KnownState,
    policy: HubPolicy,
    now: float,
) -> IngestPlan:
    """``plan`` of a refused batch planned again with ``raised``, those of its candidates the
    store holds (no rows change: only which alerts take the budget)."""
    if not raised:
        return plan
    return plan_ingest(gate_id, entries, replace(known, raised=raised), policy, now)


def _budget(
    gate_id: str,
    alerts: Sequence[NewAlert],
    known: KnownState,
    policy: HubPolicy,
    now: float,
    *,
    deferred: bool = False,
) -> tuple[NewAlert, ...]:
    name = Names(known.gate_names)(gate_id)
    used = known.alert_count
    return within_budget(gate_id, name, alerts, known.raised, used, policy, now, deferred)


def ack(plan: IngestPlan, now: float) -> BatchAck:
    """The batch's acknowledgement; raises RefusedError, OverQuotaError or ConflictError when the
    plan stored nothing."""
    if plan.refused:
        where, why = plan.refused[0]
        raise RefusedError(
            f"{where}: {why}; nothing of the batch was stored"
            + (f" ({len(plan.refused)} rows refused)" if len(plan.refused) > 1 else ""),
            where,
        )
    if plan.throttled:
        raise OverQuotaError(
            "over this gate's upload quota (new rows a second); nothing of the batch was stored",
            plan.throttled,
        )
    if plan.conflicts:
        raise ConflictError(
            f"{len(plan.conflicts)} entries reuse an entry_id or gate_seq with another body"
            f" (first: {plan.conflicts[0]}); nothing of the batch was stored",
            plan.conflicts,
        )
    return BatchAck(plan.results, plan.acked_through_seq, now)


def deltas_gone(after: int, version: int, oldest_kept: int | None) -> bool:
    """True when the deltas from ``after`` to ``version`` are no longer all kept (answer 410)."""
    if after >= version:
        return False
    return oldest_kept is None or after < oldest_kept - 1


def _conflict(e: EntryWire, known: KnownState, seen: set[str], names: Names) -> NewAlert | None:
    """The integrity alert when ``e`` conflicts with the store or the batch, else None."""
    stored = known.stored.get(e.entry_id)
    gates: tuple[str, ...] = (e.gate_id,)
    times: tuple[float, ...] = (e.wall_time,)
    if e.entry_id in seen:
        detail = "entry_id repeated within one batch"
    elif stored is not None:
        if stored == e:
            return None
        detail = f"entry_id reused with another body (gate_seq {e.gate_seq})"
        if stored.gate_id != e.gate_id:  # say who sent the second body (the first's gate may
            detail = (  # be its victim), each gate by its name
                f"{names(e.gate_id)} uploaded the entry_id of {names(stored.gate_id)}'s row"
                f" (gate_seq {stored.gate_seq}) with another body"
            )
        gates, times = (stored.gate_id, e.gate_id), (stored.wall_time, e.wall_time)
    elif e.gate_seq in known.seq_owners:
        detail = f"gate_seq {e.gate_seq} reused by another entry_id"
    else:
        return None
    return NewAlert(
        "integrity", short_id(e.ticket_ref), tuple(names(g) for g in gates), times,
        (e.entry_id,), detail, f"conflict:{e.entry_id}", gate_ids=gates,
    )  # fmt: skip


def _holes(
    gate_id: str, entries: Sequence[EntryWire], max_seq: int, names: Names
) -> list[NewAlert]:
    alerts = []
    prev = max_seq
    for e in entries:
        if e.gate_seq > prev + 1:
            first, last = prev + 1, e.gate_seq - 1
            alert = NewAlert(
                "integrity", "", (names(gate_id),), (e.wall_time,), (e.entry_id,),
                f"gate_seq hole {first}..{last}", f"hole:{gate_id}:{first}..{last}",
                gate_ids=(gate_id,),
            )  # fmt: skip
            alerts.append(alert)
        prev = max(prev, e.gate_seq)
    return alerts
