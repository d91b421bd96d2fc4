"""Two units heartbeating as one gate: a copy of the gate's token running beside the gate.

Each run of a gate's daemon makes a random run key and sends it in its heartbeats only
(``Heartbeat.run_key``: never in rows, the feed, the log or ``/status``, so a copy cannot learn
the gate's); the hub keeps its run id (:func:`agent.redact.run_id`, a hash: what alerts and the gate's
``/status`` show). A run's id never comes back once the daemon stops, and the store keeps each
gate's (``gate_runs``: in the order first seen, when last seen, from which address), so every hub
process of a venue sees them all: a run still heard after a later one began means two units at
once, the gate and a copy of its token (a stolen unit's disk copied, or its token file). An
integrity alert names both runs and their addresses, at most once an hour a gate, usually within
a heartbeat of the copy's first (with several hub processes, within the pacing below), and
before the copy writes a row if it heartbeats first, while its heartbeats would hide the gate's
own faults in the console. Addresses alone would not do: a dual-stack gate reaches the hub over
IPv4 and IPv6 in turn. A heartbeat without a run key (a gate of an older version, or a copy
hiding its own) counts as a run of its own, ``NO_RUN``.

A copy that hides among made-up runs is caught by their number: more than :data:`CHURN` new runs
of a gate within an hour is an alert of its own (a daemon restarts a few times a day, unless it
is failing over and over), and the store keeps at most :data:`MAX_RUNS` a gate, making room only
by forgetting one not heard for a day, so the gate's own stays. Revoking a gate's tokens forgets
its runs (the copy is cut off; the gate's next run starts afresh).

Each hub process writes a run new to it at once, a known one once after each new one of its
gate and otherwise every ``every_s`` (the hub's ``gate_offline_after_s``: ``last_seen`` is that
late at most), and at most :data:`MAX_WRITES_PER_MIN` a minute a gate: with several processes,
two units whose heartbeats reach different processes are told apart within that pacing. The
statements are the same in both dialects (``?`` parameters); ``seq`` is the order of first
writes (no process's clock decides which run began later).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from agent.redact import NO_RUN, run_shown
from sync.hub_plan import NewAlert
from sync.protocol_console import GateHealth
from sync.protocol_fields import MAX_DETAIL

MAX_RUNS = 64  # runs kept a gate
STALE_S = 86400.0  # a run not heard for this long may make room for a new one
CHURN = 8  # new runs of a gate within CHURN_WINDOW_S: more is an alert
CHURN_WINDOW_S = 3600.0
MAX_NEW_PER_MIN = 30  # runs new to a process it writes a minute a gate
MAX_WRITES_PER_MIN = 60  # writes a gate's heartbeats cause a minute in all, per process

TOUCH = "UPDATE gate_runs SET last_seen = ?, address = ? WHERE gate_id = ? AND run_id = ?"
COUNT = (
    "SELECT count(*), coalesce(sum(CASE WHEN first_seen > ? THEN 1 ELSE 0 END), 0)"
    " FROM gate_runs WHERE gate_id = ?"
)
# Room for a new run: forget the one heard longest ago, if it was not heard for a day. (Between
# processes this count is not locked: a gate may hold a few more than MAX_RUNS for a while.)
FORGET_STALE = (
    "DELETE FROM gate_runs WHERE gate_id = ? AND run_id = (SELECT run_id FROM gate_runs"
    " WHERE gate_id = ? AND last_seen < ? ORDER BY last_seen LIMIT 1)"
)
ADD = (
    "INSERT INTO gate_runs (gate_id, run_id, first_seen, last_seen, address)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (gate_id, run_id) DO NOTHING"
)
# A run of the gate first written after this one was: this one is still heard after it began.
LATER = (
    "SELECT b.run_id, b.address FROM gate_runs a JOIN gate_runs b ON b.gate_id = a.gate_id"
    " WHERE a.gate_id = ? AND a.run_id = ? AND b.seq > a.seq ORDER BY b.seq DESC LIMIT 1"
)
# A gate's first run with a key ends its runs without one (an upgrade): a run without a key heard
# after it is a new one (a copy hiding its key, or a rollback), never the gate's own of before.
FORGET_KEYLESS = "DELETE FROM gate_runs WHERE gate_id = ? AND run_id = ?"
NAME = "SELECT gate_name FROM gates WHERE gate_id = ?"
FORGET_GATE = "DELETE FROM gate_runs WHERE gate_id = ?"  # with its tokens: the copy is cut off
# The addresses gates' heartbeats came from since a time, the newest so many, oldest first: the
# connection reserve's known clients at a hub's start (sync.hub_limits.KnownClients.seed).
HEARD_FROM = (
    "SELECT gate_id, address, last_seen FROM (SELECT gate_id, address, last_seen FROM gate_runs"
    " WHERE last_seen > ? ORDER BY last_seen DESC LIMIT ?) AS heard ORDER BY last_seen"
)
# The gates with two runs heard lately, one of them after the other began: the console's gate
# list shows TWO_UNITS among their faults (a copy's heartbeats would hide the gate's own).
HEARD_TWICE = (
    "SELECT DISTINCT a.gate_id FROM gate_runs a JOIN gate_runs b"
    " ON b.gate_id = a.gate_id AND b.seq > a.seq"
    " WHERE a.last_seen > b.first_seen AND a.last_seen > ? AND b.last_seen > ?"
)
TWO_UNITS = "two units heartbeat (a copy of its token?)"
LATELY = 3  # heard within this many gate_offline_after_s (a run is written that often)


def flag_two_units(gates: list[GateHealth], heard_twice: set[str]) -> list[GateHealth]:
    """``gates`` with :data:`TWO_UNITS` first among the faults of those in ``heard_twice``."""
    return [
        replace(g, faults=(TWO_UNITS, *g.faults)[:16]) if g.gate_id in heard_twice else g
        for g in gates
    ]


@dataclass(frozen=True, slots=True)
class Seen:
    """What the store found when it noted a heartbeat's run (the input of :func:`alerts`)."""

    gate_id: str
    run_id: str
    address: str
    now: float
    later: tuple[str, str] | None = None  # (run id, address) of one that began after it
    recent: int = 0  # the gate's runs first seen within CHURN_WINDOW_S, when it was new
    kept: bool = True  # False: MAX_RUNS held, none stale: this new one is not remembered

    @property
    def alarming(self) -> bool:
        """Whether :func:`alerts` has something to raise."""
        return self.later is not None or self.recent > CHURN or not self.kept


def alerts(seen: Seen, name: str) -> list[NewAlert]:
    """The alerts a noted run raises, each at most once an hour a gate (the store's dedupe
    key); ``name`` is the gate's as the venue knows it."""
    gate, out, hour = seen.gate_id, [], int(seen.now // CHURN_WINDOW_S)
    who = name if name == gate else f"{name} ({gate})"  # the name to read, the id to type
    if seen.later is not None:
        other, where = seen.later
        detail = (
            f"two units heartbeat as gate {who} (a copy of its token? revoke its tokens, then"
            f" give it a new one): run {run_shown(seen.run_id)} from {seen.address} is still heard"
            f" after run {run_shown(other)} from {where} began"
        )
        if NO_RUN in (seen.run_id, other):
            detail += " ((none): no run key, a copy hiding it or a gate of an older version)"
        out.append(_alert(gate, name, seen.now, detail, f"twins:{gate}:{hour}"))
    if seen.recent > CHURN or not seen.kept:
        many = (
            f"more than {CHURN} new runs within an hour"
            if seen.recent > CHURN
            else f"{MAX_RUNS} runs heard within a day"
        )
        detail = (
            f"gate {who} heartbeats from {many}: a daemon failing over and over, or a copy of"
            " its token hiding among made-up runs (revoke its tokens, then give it a new one)"
        )
        out.append(_alert(gate, name, seen.now, detail, f"runs:{gate}:{hour}"))
    return out


def _alert(gate_id: str, name: str, now: float, detail: str, key: str) -> NewAlert:
    return NewAlert(
        "integrity", "", (name,), (now,), (), detail[:MAX_DETAIL], key, gate_ids=(gate_id,)
    )


class RunNotes:
    """When this hub process writes a gate's run: a run new here at once (at most
    :data:`MAX_NEW_PER_MIN` a minute a gate: a stolen token can make them up without end, and
    the store's churn alert has spoken by then); a known one once after each new one of its
    gate (the write that tells a run is still heard), else every ``every_s``; at most
    :data:`MAX_WRITES_PER_MIN` writes a minute a gate in all."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._gates: dict[str, _GateNotes] = {}

    def due(self, gate_id: str, run: str) -> bool:
        now = self._clock()
        notes = self._gates.setdefault(gate_id, _GateNotes())
        for times in (notes.new, notes.writes):
            while times and now - times[0] >= 60.0:
                times.popleft()
        if len(notes.writes) >= MAX_WRITES_PER_MIN:
            return False
        written = notes.written.get(run)
        if written is None:
            if len(notes.new) >= MAX_NEW_PER_MIN:
                return False
            notes.new.append(now)
            if len(notes.written) >= MAX_RUNS:  # the one written longest ago goes
                del notes.written[min(notes.written, key=notes.written.__getitem__)]
            notes.generation += 1
        elif written[1] == notes.generation and now - written[0] < self._every_s:
            return False
        notes.writes.append(now)
        notes.written[run] = (now, notes.generation)
        return True


@dataclass
class _GateNotes:
    # run id -> when last written, and the gate's count of new runs then
    written: dict[str, tuple[float, int]] = field(default_factory=dict)
    new: deque[float] = field(default_factory=deque)  # when new ones were written, a minute
    writes: deque[float] = field(default_factory=deque)  # when any was written, a minute
    generation: int = 0  # new runs written so far
