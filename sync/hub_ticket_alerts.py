"""The hub's alerts about tickets, from the rows a batch adds to each ticket's history: double
admissions and repeated denials (the rules are spelt out in :mod:`sync.hub_rules`). Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from agent.model import annulled_ids
from agent.redact import short_id
from sync.hub_plan import MAX_ALERT_ITEMS, AlertNote, Names, NewAlert, TicketRow, admission
from sync.hub_store import HubPolicy
from sync.protocol import MAX_DETAIL, EntryWire


def ticket_alerts(
    rows: Iterable[EntryWire],
    known: Mapping[str, Sequence[TicketRow]],
    policy: HubPolicy,
    names: Names,
    now: float,
) -> list[NewAlert]:
    """Double admissions and repeated denials the batch's rows (received at hub time ``now``)
    create, ticket by ticket."""
    # One row of a ticket with no history makes no double admission (two admissions) and no
    # burst (``denied_alert_threshold`` attempts, at least 2 in [hub]): most of a batch.
    alone = policy.denied_alert_threshold > 1
    alerts: list[NewAlert] = []
    for ref, batch in _by_ticket(rows).items():
        past = known.get(ref, ())
        if alone and not past and len(batch) == 1:
            continue
        added = [TicketRow.of(e, now, policy.max_clock_ahead_s) for e in batch]
        alerts += _double_admissions(ref, past, added, policy, names)
        alerts += _repeated_denials(ref, past, added, policy, names)
    return alerts


def undone_doubles(
    rows: Iterable[EntryWire],
    known: Mapping[str, Sequence[TicketRow]],
    policy: HubPolicy,
    names: Names,
    now: float,
) -> list[AlertNote]:
    """Notes on the double admissions the batch's annulments (and, with ``reentry``, its exits)
    change.

    A gate cut off admits a ticket another gate had admitted; its link comes back within the
    passage timeout, so its entry reaches the hub before its annulment (nobody passed: a
    trial). With re-entry, the first gate's exit, recorded while it was cut off, reaches the hub
    after the second gate's entry: a re-entry, not a double. Alerts are never withdrawn; a note
    says the pair is no double, or, when the double stands with another first entry, names it.
    The pairs are those there would be without the batch's annulments and exits (the history's,
    and an entry's annulled in its own batch: a claim's alert, raised with its conflict, when
    the claimed rows come through); the store notes only alerts raised before. A batch is
    planned once (its rows sent again are stored already), so each change is noted once."""
    if policy.entry_policy == "unlimited":
        return []
    reentry = policy.entry_policy == "reentry"
    notes = []
    for ref, batch in _by_ticket(rows).items():
        annuls = {e.annuls: e.gate_id for e in batch if e.annuls is not None}
        exits = reentry and any(e.kind == "exit" for e in batch)
        past = known.get(ref, ())
        if not (annuls or exits) or not past:
            continue
        added = [TicketRow.of(e, now, policy.max_clock_ahead_s) for e in batch]
        after = _doubles([*past, *added], policy)
        would = _doubles([*past, *(r for r in added if r.kind not in ("annul", "exit"))], policy)
        for key, pair in would.items():
            undone = [r.entry_id for r in pair if r.entry_id in annuls]
            if undone:
                by = names(annuls[undone[0]])
                said = f"gate {by} annulled entry {undone[0]} (nobody passed with it):"
            elif out := [r for r in added if r.kind == "exit" and _between(r, pair)]:
                by = names(out[0].gate_id)
                said = f"gate {by}'s exit {out[0].entry_id}, before the later entry, came in since:"
            else:
                continue
            if key not in after:
                notes.append(AlertNote(key, f"{said} no double admission by this pair"))
            elif (first := after[key][0]).entry_id != pair[0].entry_id:  # a review, a trial
                stands = f"the double admission stands, after {names(first.gate_id)}'s entry"
                notes.append(
                    AlertNote(key, f"{said} {stands} {first.entry_id}", unless_entry=first.entry_id)
                )
    return notes


def _between(row: TicketRow, pair: tuple[TicketRow, TicketRow]) -> bool:
    return pair[0].order < row.order < pair[1].order


def again_notes(alerts: Iterable[NewAlert]) -> list[AlertNote]:
    """For each double admission the batch makes whose alert was raised before with another
    first entry (a pair an annulment undid, then a third gate's admission dated before the
    later one: its key is the later entry's), a note naming the pair that stands now; a new
    alert gets none (the store adds it only to an alert not naming that first entry)."""
    return [
        AlertNote(a.dedupe_key, f"a double admission again: {a.gates[0]} then {a.gates[1]}"
                  f" (entry {a.entries[0]} first)", unless_entry=a.entries[0])
        for a in alerts
        if a.kind == "double_admission"
    ]  # fmt: skip


def _by_ticket(rows: Iterable[EntryWire]) -> dict[str, list[EntryWire]]:
    tickets: dict[str, list[EntryWire]] = {}
    for e in rows:
        tickets.setdefault(e.ticket_ref, []).append(e)
    return tickets


def double_admissions(
    ref: str, history: Sequence[TicketRow], policy: HubPolicy, names: Names
) -> list[NewAlert]:
    """An alert for each double admission in a ticket's whole ``history`` (the store drops those
    it raised before: the same dedupe key)."""
    return _double_admissions(ref, (), history, policy, names)


def _double_admissions(
    ref: str,
    past: Sequence[TicketRow],
    added: Sequence[TicketRow],
    policy: HubPolicy,
    names: Names,
) -> list[NewAlert]:
    """An alert for each (earlier, later) entry pair the batch creates (see the module doc)."""
    if policy.entry_policy == "unlimited":
        return []
    # A double admission needs two admitted entries; most tickets have one (no sort needed).
    if sum(admission(r) for r in past) + sum(admission(r) for r in added) < 2:
        return []
    before = _doubles(past, policy)
    if policy.entry_policy == "single":
        how = "single-entry ticket admitted at {} and at {}"
    else:
        how = "entered at {} and again at {} without an exit"
    alerts = []
    for key, (first, second) in _doubles([*past, *added], policy).items():
        if key in before:
            continue
        gates = (names(first.gate_id), names(second.gate_id))
        alert = NewAlert(
            "double_admission", short_id(ref), gates, (first.wall_time, second.wall_time),
            (first.entry_id, second.entry_id), how.format(*gates)[:MAX_DETAIL], key,
            gate_ids=(first.gate_id, second.gate_id),
        )  # fmt: skip
        alerts.append(alert)
    return alerts


def _doubles(
    rows: Iterable[TicketRow], policy: HubPolicy
) -> dict[str, tuple[TicketRow, TicketRow]]:
    """Dedupe key -> (earlier, later) entry for each entry of a ticket's history that is a double
    admission: with ``single`` any live entry after the first, with ``reentry`` a live entry
    right after another one among the live entries and exits (by HLC)."""
    history = list(rows)
    annulled = annulled_ids(history)
    kinds = ("entry",) if policy.entry_policy == "single" else ("entry", "exit")
    live = sorted(
        (r for r in history if r.admitted and r.kind in kinds and r.entry_id not in annulled),
        key=lambda r: r.order,
    )
    doubles = {}
    for i in range(1, len(live)):
        other, row = live[0 if policy.entry_policy == "single" else i - 1], live[i]
        if other.kind == "entry" and row.kind == "entry":
            doubles[f"double:{row.entry_id}"] = (other, row)
    return doubles


def _repeated_denials(
    ref: str,
    past: Sequence[TicketRow],
    added: Sequence[TicketRow],
    policy: HubPolicy,
    names: Names,
) -> list[NewAlert]:
    """An alert for each burst bucket the batch's attempts create (see the module doc).

    ``past`` holds the ticket's attempts within :func:`attempt_span`: enough to decide every
    burst start the batch can change. A bucket whose earlier start lies before that span may be
    planned again; the store's unique ``dedupe_key`` keeps it to one alert.
    """
    if not any(r.kind == "attempt" for r in added):
        return []
    window = policy.denied_alert_window_s
    before = _bursts(past, policy)
    alerts = []
    for bucket, burst in _bursts([*past, *added], policy).items():
        if bucket in before:
            continue
        shown = burst[:MAX_ALERT_ITEMS]
        alert = NewAlert(
            "repeated_denials", short_id(ref), tuple(names(r.gate_id) for r in shown),
            tuple(r.wall_time for r in shown), tuple(r.entry_id for r in shown),
            f"{len(burst)} denied attempts within {window:g} s",
            f"denied:{short_id(ref)}:{bucket}", gate_ids=tuple(r.gate_id for r in shown),
        )  # fmt: skip
        alerts.append(alert)
    return alerts


def _bursts(rows: Iterable[TicketRow], policy: HubPolicy) -> dict[int, list[TicketRow]]:
    """Bucket -> the burst of its earliest start: ``threshold`` or more attempts within
    ``[start, start + window]``, bucket ``floor(start / window)``."""
    window = policy.denied_alert_window_s
    attempts = sorted(
        (r for r in rows if r.kind == "attempt"), key=lambda r: (r.wall_time, r.order)
    )
    bursts: dict[int, list[TicketRow]] = {}
    end = 0
    for i, start in enumerate(attempts):
        end = max(end, i)
        while end < len(attempts) and attempts[end].wall_time <= start.wall_time + window:
            end += 1
        if end - i >= policy.denied_alert_threshold:
            bursts.setdefault(math.floor(start.wall_time / window), attempts[i:end])
    return bursts
