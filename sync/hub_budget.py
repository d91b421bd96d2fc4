"""The alert budget (the rule is in :mod:`sync.hub_rules`): the alerts one gate's uploads raise
within a bucket of ``alert_budget_window_s`` (of the hub's clock: a minute from hh:mm:00 by
default) beyond ``alert_budget`` collapse into storm alerts, one per kind held back, each counting
its own (``held``, added up as later batches hold more), so security reads what a flood was made
of: double admissions held back are not integrity faults.

A refused batch (a conflict, a refusal, over its quota) stores nothing and is sent again with
each new row: its alerts beyond the budget are deferred to a storm alert of their own, which
keeps the most it held at once instead of adding up, so a batch sent again and again does not
count them again and again (a security lead's trial: one alert behind "25 held back"); they are
raised once a later bucket has room, if the gate sends it again. Pure."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from sync.hub_plan import NewAlert
from sync.hub_store import HubPolicy
from sync.protocol import MAX_DETAIL

DEFERRED = ":deferred"  # the end of a deferred storm's dedupe key


def budget_since(now: float, policy: HubPolicy) -> float:
    """The start of the alert-budget bucket ``now`` falls in."""
    window = policy.alert_budget_window_s
    return math.floor(now / window) * window


def within_budget(
    gate_id: str,
    name: str,
    alerts: Sequence[NewAlert],
    raised: Collection[str],
    used: int,
    policy: HubPolicy,
    now: float,
    deferred: bool = False,
) -> tuple[NewAlert, ...]:
    """The alerts within the budget of gate ``gate_id`` (named ``name``), which has ``used``
    of it in this bucket, and a storm alert for each kind of the rest (``deferred``: the batch
    was refused: its own, whose count the store keeps at its most); those raised before (dedupe
    keys in ``raised``) are left out."""
    alerts = [a for a in alerts if a.dedupe_key not in raised]
    room = max(0, policy.alert_budget - used)
    if len(alerts) <= room:
        return tuple(alerts)
    held: dict[str, int] = {}
    for a in alerts[room:]:
        held[a.kind] = held.get(a.kind, 0) + 1
    since = budget_since(now, policy)
    storms = tuple(
        _storm(gate_id, name, kind, count, since, policy, now, deferred)
        for kind, count in held.items()
    )
    return (*alerts[:room], *storms)


def _storm(
    gate_id: str,
    name: str,
    kind: str,
    held: int,
    since: float,
    policy: HubPolicy,
    now: float,
    deferred: bool,
) -> NewAlert:
    start = datetime.fromtimestamp(since, UTC).strftime("%H:%M:%S UTC")
    detail = (
        f"alert storm from gate {name}: {kind} alerts beyond {policy.alert_budget} in the"
        f" {policy.alert_budget_window_s:g} s from {start}"
    )
    if deferred:  # its own alert: its count is the most held at once, not a sum
        detail += ", of a refused batch: raised if it is sent again when there is room"
    return NewAlert(
        "alert_storm", "", (name,), (now,), (), detail[:MAX_DETAIL],
        f"storm:{gate_id}:{since:.0f}:{kind}" + (DEFERRED if deferred else ""),
        held=held, gate_ids=(gate_id,),
    )  # fmt: skip
