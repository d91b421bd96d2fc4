"""Two units heartbeating as one gate: a copy of the gate's token running beside the gate.

Each heartbeat names the kernel boot id of the unit that sent it (``Heartbeat.boot_id``; one
without is noted as :data:`NO_BOOT`). One unit's boot id changes only when it boots again, and
a boot id never comes back. The store keeps each gate's boot ids (``gate_boots``: when first
and last seen, from which address), so every hub process of a venue sees them all: a gate's
boot id seen again after a later one began means two units at once, the gate and a copy of its
token (a stolen unit's disk copied, or its token file). An integrity alert names both boot ids
and addresses, once per pair, so the security team learns of the copy while its heartbeats
hide the gate's own faults in the console, usually within a heartbeat of the copy's first, and
before it writes rows if it heartbeats first. Addresses alone would not do: a dual-stack gate
reaches the hub over IPv4 and IPv6 in turn.

A copy that hides among made-up boot ids is caught by their number: more than :data:`CHURN` new
ones of a gate within an hour is an alert of its own (a unit boots a few times a day), and the
store keeps at most :data:`MAX_BOOTS` a gate, making room only by forgetting one not seen for a
day, so the gate's own boot id stays. A copy that sends the gate's own boot id is not told
apart here (its rows still are: :mod:`sync.hub_rules`); nor is one whose heartbeats never reach
the hub.

Each hub process writes a boot id new to it at once, a known one once after each new one of its
gate and otherwise every :data:`NOTE_EVERY_S` (``last_seen`` is that late at most): with several
processes, two units whose heartbeats reach different processes are told apart within that.
The statements are the same in both dialects (``?`` parameters).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sync.hub_plan import NewAlert
from sync.protocol_fields import MAX_DETAIL

NO_BOOT = "-"  # a heartbeat without a boot id: a gate of an older version, or a copy hiding
MAX_BOOTS = 64  # boot ids kept a gate
STALE_S = 86400.0  # a boot id not seen for this long may make room for a new one
CHURN = 8  # new boot ids of a gate within CHURN_WINDOW_S: more is an alert
CHURN_WINDOW_S = 3600.0
NOTE_EVERY_S = 30.0  # an unchanged boot id is written again at most this often, per process
MAX_NEW_PER_MIN = 30  # boot ids new to a process it writes a minute a gate

TOUCH = "UPDATE gate_boots SET last_seen = ?, address = ? WHERE gate_id = ? AND boot_id = ?"
COUNT = (
    "SELECT count(*), coalesce(sum(CASE WHEN first_seen > ? THEN 1 ELSE 0 END), 0)"
    " FROM gate_boots WHERE gate_id = ?"
)
# Room for a new boot id: forget the one seen longest ago, if it was not seen for a day.
FORGET_STALE = (
    "DELETE FROM gate_boots WHERE gate_id = ? AND boot_id = (SELECT boot_id FROM gate_boots"
    " WHERE gate_id = ? AND last_seen < ? ORDER BY last_seen LIMIT 1)"
)
ADD = (
    "INSERT INTO gate_boots (gate_id, boot_id, first_seen, last_seen, address)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (gate_id, boot_id) DO NOTHING"
)
# A boot id of the gate that began after this one did: this one came back.
LATER = (
    "SELECT b.boot_id, b.address FROM gate_boots a JOIN gate_boots b ON b.gate_id = a.gate_id"
    " WHERE a.gate_id = ? AND a.boot_id = ? AND b.first_seen > a.first_seen"
    " ORDER BY b.first_seen DESC LIMIT 1"
)
NAME = "SELECT gate_name FROM gates WHERE gate_id = ?"


@dataclass(frozen=True, slots=True)
class Seen:
    """What the store found when it noted a heartbeat's boot id (the input of :func:`alerts`)."""

    gate_id: str
    boot_id: str
    address: str
    now: float
    later: tuple[str, str] | None = None  # (boot id, address) of one that began after it
    recent: int = 0  # the gate's boot ids first seen within CHURN_WINDOW_S, when it was new
    kept: bool = True  # False: MAX_BOOTS held, none stale: this new one is not remembered

    @property
    def alarming(self) -> bool:
        """Whether :func:`alerts` has something to raise."""
        return self.later is not None or self.recent > CHURN or not self.kept


def alerts(seen: Seen, name: str) -> list[NewAlert]:
    """The alerts a noted boot id raises (each once: the store's dedupe key); ``name`` is the
    gate's as the venue knows it."""
    gate, out = seen.gate_id, []
    who = name if name == gate else f"{name} ({gate})"  # the name to read, the id to type
    if seen.later is not None:
        other, where = seen.later
        detail = (
            f"two units heartbeat as gate {who} (a copy of its token? revoke its tokens, then"
            f" give it a new one): boot {_shown(seen.boot_id)} from {seen.address} is still"
            f" heard after boot {_shown(other)} from {where} began"
        )
        pair = ":".join(sorted((seen.boot_id, other)))
        out.append(_alert(gate, name, seen.now, detail, f"twins:{gate}:{pair}"))
    if seen.recent > CHURN or not seen.kept:
        detail = (
            f"gate {who} names more than {CHURN} new boot ids within an hour (a unit boots a"
            " few times a day: a copy of its token hiding its own? revoke its tokens, then give"
            " it a new one)"
        )
        hour = int(seen.now // CHURN_WINDOW_S)
        out.append(_alert(gate, name, seen.now, detail, f"boots:{gate}:{hour}"))
    return out


def _shown(boot_id: str) -> str:
    return "(none)" if boot_id == NO_BOOT else boot_id[:8]


def _alert(gate_id: str, name: str, now: float, detail: str, key: str) -> NewAlert:
    return NewAlert(
        "integrity", "", (name,), (now,), (), detail[:MAX_DETAIL], key, gate_ids=(gate_id,)
    )


class BootNotes:
    """When this hub process writes a gate's boot id: a boot id new here at once (at most
    :data:`MAX_NEW_PER_MIN` a minute a gate: a stolen token can make them up without end, and
    the store's churn alert has spoken by then); a known one once after each new one of its
    gate (the write that tells a boot id came back), else every :data:`NOTE_EVERY_S`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._gates: dict[str, _GateNotes] = {}

    def due(self, gate_id: str, boot_id: str) -> bool:
        now = self._clock()
        notes = self._gates.setdefault(gate_id, _GateNotes())
        written = notes.written.get(boot_id)
        if written is None:
            while notes.new and now - notes.new[0] >= 60.0:
                notes.new.popleft()
            if len(notes.new) >= MAX_NEW_PER_MIN:
                return False
            notes.new.append(now)
            if len(notes.written) >= MAX_BOOTS:  # the one written longest ago goes
                del notes.written[min(notes.written, key=notes.written.__getitem__)]
            notes.generation += 1
        elif written[1] == notes.generation and now - written[0] < NOTE_EVERY_S:
            return False
        notes.written[boot_id] = (now, notes.generation)
        return True


@dataclass
class _GateNotes:
    # boot id -> when last written, and the gate's count of new boot ids then
    written: dict[str, tuple[float, int]] = field(default_factory=dict)
    new: deque[float] = field(default_factory=deque)  # when new ones were written, a minute
    generation: int = 0  # new boot ids written so far
