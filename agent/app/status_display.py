"""The staff display's feed: what ``/display`` shows, pushed over ``/display/events``.

The lane tells the feed of a decision the moment it is recorded (:meth:`DisplayFeed.decided`,
before the lamps and the relay), then of what came of an admission (:meth:`DisplayFeed.settled`:
passed, or not used and annulled). A watcher pushes the gate's state whenever it changes (scanner
offline, relay fault, journal cannot write, emergency free passage, upstream unreachable) and a
heartbeat every ``beat_s``: a page that hears nothing for ``[display] stale_after_s`` (the
daemon died, the network went) shows OUT OF SERVICE on its own. Every message is encoded once and
handed to every stream (:class:`agent.app.status_bounds.Streams`); nothing here awaits on the
lane's behalf.

Messages (one JSON object per ``data:`` line):

* ``{"hello": {gate, lanes, clear_after_s, stale_after_s, sound, hold_s}, "state", "counts"}``
  first on every stream. It carries no verdict: a display opened now shows READY.
* ``{"decision": {id, lane, admitted, reason, action, message, ticket, at}, "counts": ...}``
* ``{"settled": {id, lane, result}, "counts": ...}``: result ``passed``, ``not_used`` (annulled,
  the ticket is still valid) or ``unconfirmed`` (the gate could not say).
* ``{"state": {"lanes": {name: {"out": [reason, ...], "emergency": bool}}, "offline": str|null}}``
* ``{"beat": true}``

Counts are the last hour's admissions and denials (``{admitted, denied, lanes: {name: {admitted,
denied}}}``: the unit's, and each lane's for its own display); an annulled admission counts as
neither.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.app.status_bounds import Streams
from agent.app.status_view import SharedTurnstileReads
from agent.journal.queries import RecentRow
from agent.model import Decision, Reason

if TYPE_CHECKING:
    from agent.app.config import DisplayConfig
    from agent.app.status_view import LaneView
    from agent.lane import Outcome

_HOUR_S = 3600.0
WATCH_S = 0.25  # the gate's state is looked at this often (a few attribute reads per lane)
MAX_BEAT_S = 2.0  # heartbeat at most this far apart, and at least 3 per stale_after_s


class Action(enum.StrEnum):
    """What a steward does about a denial."""

    REDIRECT = "redirect"  # the right ticket at the wrong gate: show the way
    BOX_OFFICE = "box_office"  # the ticket itself is not good (today): the box office sorts it out
    SUPERVISOR = "supervisor"  # possible fraud or a fault: a supervisor decides


# Every reason, with the steward's action for a denial for it (None: not a denial). A new Reason
# must be added here (tests/test_display.py checks the table covers every one); a reason the table
# does not know (a newer core, say) falls back to calling a supervisor.
STEWARD_ACTIONS: dict[Reason, Action | None] = {
    Reason.OK: None,
    Reason.WRONG_ZONE: Action.REDIRECT,
    Reason.WRONG_EVENT: Action.REDIRECT,
    Reason.WRONG_PRODUCT: Action.REDIRECT,
    Reason.REVOKED: Action.BOX_OFFICE,
    Reason.BLOCKED: Action.BOX_OFFICE,
    Reason.CANCELED: Action.BOX_OFFICE,
    Reason.UNPAID: Action.BOX_OFFICE,
    Reason.UNAPPROVED: Action.BOX_OFFICE,
    Reason.EXPIRED: Action.BOX_OFFICE,
    Reason.NOT_YET_VALID: Action.BOX_OFFICE,
    Reason.UNKNOWN_KEY: Action.BOX_OFFICE,
    Reason.KEY_NOT_VALID: Action.BOX_OFFICE,
    Reason.INVALID_FORMAT: Action.BOX_OFFICE,
    Reason.BAD_SIGNATURE: Action.SUPERVISOR,
    Reason.ALREADY_USED: Action.SUPERVISOR,
    Reason.CODE_EXPIRED: Action.SUPERVISOR,
    Reason.CLOCK_UNTRUSTED: Action.SUPERVISOR,
    Reason.LIST_STALE: Action.SUPERVISOR,
    Reason.ERROR: Action.SUPERVISOR,
}


def steward_action(decision: Decision) -> Action | None:
    """The action for a denial (None for an admission); unknown reasons call a supervisor."""
    if decision.admitted:
        return None
    return STEWARD_ACTIONS.get(decision.reason) or Action.SUPERVISOR


@dataclass(eq=False)
class _Entry:
    at: float
    admitted: bool
    void: bool = False  # an annulled admission: neither admitted nor denied
    gone: bool = False  # out of the hour already


@dataclass
class _Hour:
    """The last hour's decisions, with running totals (counts() must not walk the hour)."""

    entries: collections.deque[_Entry] = field(default_factory=collections.deque)
    admitted: int = 0
    denied: int = 0

    def add(self, entry: _Entry) -> None:
        self.entries.append(entry)
        self._count(entry, 1)
        self.trim(entry.at)

    def void(self, entry: _Entry) -> None:
        if not entry.void and not entry.gone:
            self._count(entry, -1)
        entry.void = True

    def trim(self, now: float) -> None:
        while self.entries and self.entries[0].at < now - _HOUR_S:
            entry = self.entries.popleft()
            self._count(entry, -1)
            entry.gone = True

    def counts(self, now: float) -> dict[str, int]:
        self.trim(now)
        return {"admitted": self.admitted, "denied": self.denied}

    def _count(self, entry: _Entry, step: int) -> None:
        if entry.void:
            return
        if entry.admitted:
            self.admitted += step
        else:
            self.denied += step


def lane_health(lane: LaneView) -> dict[str, Any]:
    """What a lane's devices and journal say right now (a few attribute reads)."""
    connected = getattr(lane.scanner, "connected", True)
    online = bool(connected() if callable(connected) else connected) and not lane.input_ended
    name = lane.settings.name
    gate = lane.gate
    shared = gate.mechanism.lanes if isinstance(gate, SharedTurnstileReads) else []
    return {
        "name": name,
        "direction": lane.checker.policy.direction,
        "scanner_online": online,
        "fault": lane.fault,
        "journal_fault": lane.journal_fault,
        "emergency": lane.gate.emergency,
        "turnstile_shared_with": [other for other in shared if other != name],
    }


def _out_of_service(health: dict[str, Any]) -> list[str]:
    out = []
    if not health["scanner_online"]:
        out.append("scanner offline")
    if health["fault"]:
        out.append("relay fault")
    if health["journal_fault"]:
        out.append("journal cannot write")
    return out


def _event(message: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(message, separators=(',', ':'))}\n\n".encode()


class DisplayFeed:
    """The display's side of the status server; see the module docstring."""

    def __init__(
        self,
        gate_name: str,
        lanes: Callable[[], Sequence[LaneView]],
        upstream: Callable[[], str | None],
        settings: DisplayConfig,
        streams: Streams,
    ) -> None:
        """``upstream`` names the upstream ("hub", "pretix") or None when there is none."""
        self._gate_name, self._lanes, self._upstream = gate_name, lanes, upstream
        self.settings = settings
        self._streams = streams
        self._hour = _Hour()
        self._lane_hours: dict[str, _Hour] = {}  # the same, per lane
        self._next_id = 0
        # lane -> (scan, its entries in the unit's and the lane's hour, id)
        self._pending: dict[str, tuple[Any, tuple[_Entry, _Entry], int]] = {}
        self.last: dict[str, dict[str, Any]] = {}  # lane -> the last decision, for /status
        self._state: dict[str, Any] | None = None
        self.beat_s = min(MAX_BEAT_S, settings.stale_after_s / 3)

    def counts(self, now: float | None = None) -> dict[str, int]:
        """The unit's last hour (``/status`` last_hour)."""
        return self._hour.counts(time.time() if now is None else now)

    def _counts(self, now: float | None = None) -> dict[str, Any]:
        """The unit's counts, and each lane's under ``lanes`` (a lane's display shows its own)."""
        now = time.time() if now is None else now
        lanes = {
            name: self._lane_hour(name).counts(now)
            for name in (lane.settings.name for lane in self._lanes())
        }
        return {**self._hour.counts(now), "lanes": lanes}

    def _lane_hour(self, name: str) -> _Hour:
        hour = self._lane_hours.get(name)
        if hour is None:
            hour = self._lane_hours[name] = _Hour()
        return hour

    def seed(self, rows: Iterable[RecentRow]) -> None:
        """Count the journal's rows of the last hour ((lane, kind, wall_time, entry_id, annuls),
        in order), so the counts go on across a restart instead of starting at 0: entries and
        exits admitted, attempts denied, an annulled admission neither."""
        rows = list(rows)
        annulled = {annuls for _, kind, _, _, annuls in rows if kind == "annul" and annuls}
        for lane, kind, at, entry_id, _ in rows:
            if kind == "annul":
                continue
            admitted, void = kind in ("entry", "exit"), entry_id in annulled
            self._hour.add(_Entry(at, admitted, void))
            self._lane_hour(lane).add(_Entry(at, admitted, void))

    def seen(self, outcome: Outcome) -> bool:
        """Whether :meth:`decided` was told of this presentation already."""
        pending = self._pending.get(outcome.lane)
        return pending is not None and pending[0] is outcome.scan

    def decided(self, outcome: Outcome) -> None:
        """A decision was recorded (the lamps come next): show it now. Constant work."""
        d, now = outcome.decision, time.time()
        self._next_id += 1
        entry = _Entry(now, d.admitted)
        lane_entry = _Entry(now, d.admitted)
        self._hour.add(entry)
        self._lane_hour(outcome.lane).add(lane_entry)
        self._pending[outcome.lane] = (outcome.scan, (entry, lane_entry), self._next_id)
        action = steward_action(d)
        shown = {
            "id": self._next_id,
            "lane": outcome.lane,
            "admitted": d.admitted,
            "reason": d.reason.value,
            "action": action.value if action is not None else None,
            "message": outcome.message,
            "ticket": outcome.ticket.short_id if outcome.ticket is not None else "",
            "at": now,
        }
        self.last[outcome.lane] = shown
        self.watch()  # a journal fault found by this decision goes out with it
        if self._streams:
            self._streams.publish(_event({"decision": shown, "counts": self._counts(now)}))

    def settled(self, outcome: Outcome) -> None:
        """What came of an admission: passed, or not used (annulled: not counted)."""
        pending = self._pending.pop(outcome.lane, None)
        if pending is None or pending[0] is not outcome.scan or not outcome.decision.admitted:
            self.watch()
            return
        _, (entry, lane_entry), ident = pending
        if outcome.passed:
            result = "passed"
        elif outcome.annul is not None:
            result = "not_used"
            self._hour.void(entry)
            self._lane_hour(outcome.lane).void(lane_entry)
        else:
            result = "unconfirmed"
        last = self.last.get(outcome.lane)
        if last is not None and last["id"] == ident:
            last["result"] = result
        self.watch()
        if self._streams:
            settled = {"id": ident, "lane": outcome.lane, "result": result}
            self._streams.publish(_event({"settled": settled, "counts": self._counts()}))

    def state(self) -> dict[str, Any]:
        """Per lane: why it is out of service, whether it is in emergency free passage; and
        which upstream is unreachable (decisions are then not shared with other gates)."""
        lanes, offline = {}, None
        for lane in self._lanes():
            health = lane_health(lane)
            lanes[health["name"]] = {
                "out": _out_of_service(health),
                "emergency": bool(health["emergency"]),
            }
            if lane.uplink is not None and not lane.uplink.online:
                offline = f"{self._upstream() or 'upstream'} unreachable"
        return {"lanes": lanes, "offline": offline}

    def watch(self) -> None:
        """Push the state if it changed since it was last pushed."""
        state = self.state()
        if state != self._state:
            self._state = state
            if self._streams:
                self._streams.publish(_event({"state": state}))

    async def run(self) -> None:
        """Watch the state; beat every ``beat_s`` (one timer for every stream)."""
        beat = _event({"beat": True})
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.beat_s
        while True:
            await asyncio.sleep(WATCH_S)
            self.watch()
            if loop.time() >= next_beat:
                next_beat = loop.time() + self.beat_s
                if self._streams:
                    self._streams.publish(beat)

    def hello(self) -> bytes:
        """A new stream's greeting: settings, lanes, state and counts; never a verdict."""
        s = self.settings
        hello = {
            "gate": self._gate_name,
            "lanes": [lane.settings.name for lane in self._lanes()],
            "clear_after_s": s.clear_after_s,
            "stale_after_s": s.stale_after_s,
            "sound": s.sound,
            # an admission stays on screen while its gate may still be open
            "hold_s": max([lane.settings.passage_timeout_s for lane in self._lanes()] or [0]) + 1,
        }
        state = self._state if self._state is not None else self.state()
        return _event({"hello": hello, "state": state, "counts": self._counts()})

    async def follow(self, request: web.Request) -> web.StreamResponse:
        """One display's stream: the greeting, then every message until either side goes."""
        transport = request.transport
        assert transport is not None  # checked by the caller
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        stream = self._streams.open(transport.abort)
        try:
            await response.write(self.hello())
            while True:
                await stream.wake.wait()
                if stream.ended:
                    break
                await response.write(stream.take())
        except ConnectionError:  # the display went away (or was dropped for reading too slowly)
            pass
        finally:
            self._streams.close(stream)
        return response
