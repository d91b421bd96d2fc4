"""The hub's planner types, shared by the rules (:mod:`sync.hub_rules`,
:mod:`sync.hub_ticket_alerts`) and both stores: a ticket's rows as the rules see them, and the
alerts a plan writes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from agent.clock import HLC
from agent.model import Verdict
from sync.protocol import AlertKind, EntryWire

MAX_ALERT_ITEMS = 64  # gates/times/entries of one alert (the wire's cap)

TICKET_COLUMNS = (
    "ticket_ref", "entry_id", "gate_id", "gate_seq", "kind", "verdict", "annuls", "wall_time",
    "hlc", "received_at",
)  # fmt: skip


def as_of_arrival(
    hlc: int, wall_time: float, received_at: float, max_ahead_s: float
) -> tuple[int, float]:
    """A row's HLC and wall time as the venue orders it: never past its arrival at the hub plus
    ``max_ahead_s`` ([hub] max_clock_ahead_s). A row from a gate whose clock ran ahead (or a
    forged one) counts as recorded then, so it cannot sort after what happens later (an exit
    at a reentry gate, tomorrow's per_day allowance); an honest row is left as it is."""
    hlc_cap, wall_cap = arrival_caps(received_at, max_ahead_s)
    return min(hlc, hlc_cap), min(wall_time, wall_cap)


def arrival_caps(received_at: float, max_ahead_s: float) -> tuple[int, float]:
    """The latest HLC and wall time :func:`as_of_arrival` leaves a row received at
    ``received_at``."""
    limit = received_at + max_ahead_s
    return HLC.at_ms(int(limit * 1000)), limit


def lead_s(e: EntryWire, now: float) -> float:
    """How far ``e``'s wall time or HLC is ahead of the hub's time ``now`` (0: not ahead)."""
    return max(0.0, e.wall_time - now, HLC.physical_ms(e.hlc) / 1000 - now)


class TicketRow(msgspec.Struct, frozen=True):
    """What the rules need of one stored (or earlier in the batch) row of a ticket. A msgspec
    Struct rather than a frozen dataclass: the planner makes one for every row of a batch and
    of the tickets' histories, and a frozen dataclass's __init__ took a third of a ticket
    alert's planning (tests/bench/bench_hub.py)."""

    entry_id: str
    gate_id: str
    gate_seq: int
    kind: str
    admitted: bool
    annuls: str | None
    wall_time: float
    hlc: int

    @classmethod
    def of(cls, e: EntryWire, now: float, max_ahead_s: float) -> TicketRow:
        """A row of a batch received at hub time ``now``, ordered :func:`as_of_arrival`."""
        hlc, wall = as_of_arrival(e.hlc, e.wall_time, now, max_ahead_s)
        return cls(e.entry_id, e.gate_id, e.gate_seq, e.kind, e.admitted, e.annuls, wall, hlc)

    @classmethod
    def from_row(cls, row: Iterable[Any], max_ahead_s: float) -> tuple[str, TicketRow]:
        """(ticket_ref, row) from the columns ``TICKET_COLUMNS`` in order."""
        ref, entry_id, gate_id, seq, kind, verdict, annuls, wall, hlc, received_at = row
        admitted = verdict == Verdict.ADMIT.value
        hlc, wall = as_of_arrival(int(hlc), float(wall), float(received_at), max_ahead_s)
        return ref, cls(entry_id, gate_id, int(seq), kind, admitted, annuls, wall, hlc)

    @property
    def order(self) -> tuple[int, str, int]:
        """Position in a ticket's history: by HLC, ties (rows cut to one HLC by
        :func:`as_of_arrival`) by gate, then gate_seq, so a gate's own order stands; as the
        gates' journals order it."""
        return self.hlc, self.gate_id, self.gate_seq


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert to store (once: ``dedupe_key`` is unique in the store)."""

    kind: AlertKind
    ticket: str  # short_id(ref), or "" when no single ticket is involved
    gates: tuple[str, ...]
    times: tuple[float, ...]
    entries: tuple[str, ...]
    detail: str
    dedupe_key: str
    held: int = 0  # alert_storm: how many alerts it stands for (added up on conflict)
    # The ids of the gates ``gates`` names, in the same order: a name may later pass to another
    # gate (the console and `hub alerts` show the gate's name now beside the one raised with).
    gate_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertNote:
    """A note the hub adds, as "hub", to an alert it raised before (``dedupe_key``)."""

    dedupe_key: str
    text: str
    unless_entry: str = ""  # not on an alert naming this entry (its own pair): none for ""


class Names:
    """A gate's name as the operator gave it (its id when none)."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self._names = names

    def __call__(self, gate_id: str) -> str:
        return self._names.get(gate_id) or gate_id


def admission(e: EntryWire | TicketRow) -> bool:
    """An admitted entry (exits and annulments are not)."""
    return e.kind == "entry" and e.admitted
