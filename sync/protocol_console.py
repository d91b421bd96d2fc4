"""The hub's console messages of the wire protocol (:mod:`sync.protocol`): alerts (with the
entries they name and what security did about them), gate health and a ticket's history, as
``GET /v1/alerts``, ``GET /v1/gates`` and ``GET /v1/tickets/{short_id}`` answer them, and the
bodies of the alert workflow's ``POST /v1/alerts/{id}/assign`` and ``.../notes``."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sync import protocol_fields as read
from sync.protocol_fields import ALERT_KINDS, MAX_DETAIL, MAX_ID, MAX_PAGE, AlertKind, ProtocolError

MAX_NOTE = 500  # characters of one note on an alert
MAX_NOTES = 100  # notes one alert may carry
MAX_HISTORY = 500  # rows of a ticket's history in one answer
SHORT_ID = re.compile(r"[0-9a-f]{8}")


def is_short_id(value: str) -> bool:
    """True for a ticket short id (8 lowercase hex digits, :func:`agent.redact.short_id`)."""
    return SHORT_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class EntryContext:
    """One entry an alert names, as the hub stored it: where, how, and whether the gate decided
    it offline (without the hub's feed)."""

    entry_id: str
    gate: str  # the gate's name as the alert was raised (its name now when the alert kept none)
    lane: str
    kind: str
    verdict: str
    reason: str
    offline: bool
    time: float
    set_apart: bool = False  # moved to quarantined_entries by `hub quarantine`
    ticket: str = ""  # the row's ticket short id (an alert about several tickets names none)
    gate_now: str = ""  # the gate's name now, where it was renamed since the alert ("": not)
    claimed: bool = False  # a claim (sync.hub_claims): a refused upload's admission, lane unknown
    annulled: bool = False  # its gate annulled it since (nobody passed)

    def to_json(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id, "gate": self.gate, "lane": self.lane, "kind": self.kind,
            "verdict": self.verdict, "reason": self.reason, "offline": self.offline,
            "time": self.time, "set_apart": self.set_apart, "ticket": self.ticket,
            "gate_now": self.gate_now, "claimed": self.claimed, "annulled": self.annulled,
        }  # fmt: skip

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str) -> EntryContext:
        return cls(
            entry_id=read.text(obj, "entry_id", where, MAX_ID),
            gate=read.text(obj, "gate", where, MAX_ID),
            lane=read.text(obj, "lane", where, MAX_ID),
            kind=read.text(obj, "kind", where, MAX_ID),
            verdict=read.text(obj, "verdict", where, MAX_ID),
            reason=read.text(obj, "reason", where, MAX_ID),
            offline=read.boolean(obj, "offline", where),
            time=read.number(obj, "time", where),
            set_apart="set_apart" in obj and read.boolean(obj, "set_apart", where),
            ticket=read.text(obj, "ticket", where, MAX_ID) if "ticket" in obj else "",
            gate_now=read.text(obj, "gate_now", where, MAX_ID) if "gate_now" in obj else "",
            claimed="claimed" in obj and read.boolean(obj, "claimed", where),
            annulled="annulled" in obj and read.boolean(obj, "annulled", where),
        )


@dataclass(frozen=True, slots=True)
class AlertNote:
    by: str  # the console token's name
    at: float
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "at": self.at, "text": self.text}


@dataclass(frozen=True, slots=True)
class AlertWorkflow:
    """What security did about an alert, each step with who (a console token's name) and when.
    The first acknowledgement counts; the latest assignment counts (an empty one unassigns)."""

    acked_by: str | None = None
    acked_at: float | None = None
    assignee: str | None = None
    assigned_by: str | None = None
    assigned_at: float | None = None
    notes: tuple[AlertNote, ...] = ()

    @property
    def open(self) -> bool:
        return self.acked_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "open": self.open, "acked_by": self.acked_by, "acked_at": self.acked_at,
            "assignee": self.assignee, "assigned_by": self.assigned_by,
            "assigned_at": self.assigned_at, "notes": [n.to_json() for n in self.notes],
        }  # fmt: skip

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str) -> AlertWorkflow:
        def opt_text(key: str) -> str | None:
            return None if obj.get(key) is None else read.text(obj, key, where, MAX_ID)

        notes = tuple(
            AlertNote(read.text(o, "by", at, MAX_ID), read.number(o, "at", at),
                      note_text(o, "text", at))
            for at, o in read.objects(obj, "notes", where, MAX_NOTES)
        )  # fmt: skip
        return cls(
            acked_by=opt_text("acked_by"),
            acked_at=read.opt_number(obj, "acked_at", where),
            assignee=opt_text("assignee"),
            assigned_by=opt_text("assigned_by"),
            assigned_at=read.opt_number(obj, "assigned_at", where),
            notes=notes,
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """A security alert raised by the hub. ``ticket`` is a short hash, never the ticket itself."""

    alert_id: int
    kind: AlertKind
    venue: str
    ticket: str
    gates: tuple[str, ...]  # gate names, in the order of ``times``
    times: tuple[float, ...]  # wall times of the entries involved
    entries: tuple[str, ...]  # entry ids involved
    detail: str
    raised_at: float
    # The entries of ``entries`` the hub holds, and the workflow: filled in for the console
    # (:meth:`sync.hub_store.HubStore.alert_details`), empty as the store first reads an alert.
    context: tuple[EntryContext, ...] = ()
    workflow: AlertWorkflow = AlertWorkflow()
    # The ids of the gates ``gates`` names, in order (empty: an alert raised before hubs kept
    # them): a gate may be renamed and its name given to another gate since; ``gates_now``:
    # their names now (filled in for the console, as ``context``).
    gate_ids: tuple[str, ...] = ()
    gates_now: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "") -> Alert:
        def alert_kind(value: str) -> AlertKind:
            if value not in ALERT_KINDS:
                raise ValueError(value)
            return cast(AlertKind, value)

        gates = read.array(obj, "gates", where, 64)
        times = read.array(obj, "times", where, 64)
        entries = read.array(obj, "entries", where, 64)
        gate_ids = read.array(obj, "gate_ids", where, 64) if "gate_ids" in obj else []
        gates_now = read.array(obj, "gates_now", where, 64) if "gates_now" in obj else []
        if not all(isinstance(g, str) and len(g) <= MAX_ID for g in gates):
            raise ProtocolError(f"{where}gates: expected gate names")
        if not all(type(t) in (int, float) and math.isfinite(t) for t in times):
            raise ProtocolError(f"{where}times: expected numbers")
        if not all(isinstance(e, str) and read.UUID.fullmatch(e) for e in entries):
            raise ProtocolError(f"{where}entries: expected entry ids")
        if not all(isinstance(g, str) and read.is_id(g) for g in gate_ids):
            raise ProtocolError(f"{where}gate_ids: expected gate ids")
        if not all(isinstance(g, str) and len(g) <= MAX_ID for g in gates_now):
            raise ProtocolError(f"{where}gates_now: expected gate names")
        if len(gate_ids) not in (0, len(gates)) or len(gates_now) not in (0, len(gate_ids)):
            raise ProtocolError(f"{where}gate_ids, gates_now: one for each of gates")
        return cls(
            alert_id=read.integer(obj, "alert_id", where, lo=1),
            kind=read.choice(obj, "kind", where, alert_kind),
            venue=read.ident(obj, "venue", where),
            ticket=read.text(obj, "ticket", where, MAX_ID),
            gates=tuple(gates),
            times=tuple(float(t) for t in times),
            entries=tuple(entries),
            detail=read.text(obj, "detail", where, MAX_DETAIL),
            raised_at=read.number(obj, "raised_at", where),
            context=tuple(
                EntryContext.from_json(o, at)
                for at, o in (read.objects(obj, "context", where, 64) if "context" in obj else ())
            ),
            workflow=(
                AlertWorkflow.from_json(read.json_object(obj["workflow"], f"{where}workflow"),
                                        f"{where}workflow.")
                if "workflow" in obj else AlertWorkflow()
            ),
            gate_ids=tuple(gate_ids),
            gates_now=tuple(gates_now),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "kind": self.kind, "venue": self.venue,
            "ticket": self.ticket, "gates": list(self.gates), "times": list(self.times),
            "entries": list(self.entries), "detail": self.detail, "raised_at": self.raised_at,
            "context": [c.to_json() for c in self.context], "workflow": self.workflow.to_json(),
            "gate_ids": list(self.gate_ids), "gates_now": list(self.gates_now),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class AlertPage:
    alerts: tuple[Alert, ...]
    next: int

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> AlertPage:
        alerts = tuple(
            Alert.from_json(o, at) for at, o in read.objects(obj, "alerts", "", MAX_PAGE)
        )
        return cls(alerts, read.integer(obj, "next", ""))

    def to_json(self) -> dict[str, Any]:
        return {"alerts": [a.to_json() for a in self.alerts], "next": self.next}


@dataclass(frozen=True, slots=True)
class GateHealth:
    """One gate as the hub last heard of it (``online``: a heartbeat within the configured time)."""

    gate_id: str
    gate_name: str
    online: bool
    last_seen: float | None
    outbox_depth: int
    revocation_version: int
    revocation_age_s: float | None
    clock_synced: bool
    version: str
    faults: tuple[str, ...]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "") -> GateHealth:
        faults = read.array(obj, "faults", where, 16)
        return cls(
            gate_id=read.ident(obj, "gate_id", where),
            gate_name=read.text(obj, "gate_name", where, MAX_ID),
            online=read.boolean(obj, "online", where),
            last_seen=read.opt_number(obj, "last_seen", where),
            outbox_depth=read.integer(obj, "outbox_depth", where),
            revocation_version=read.integer(obj, "revocation_version", where),
            revocation_age_s=read.opt_number(obj, "revocation_age_s", where),
            clock_synced=read.boolean(obj, "clock_synced", where),
            version=read.text(obj, "version", where, MAX_ID),
            faults=tuple(str(f) for f in faults),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "gate_id": self.gate_id, "gate_name": self.gate_name, "online": self.online,
            "last_seen": self.last_seen, "outbox_depth": self.outbox_depth,
            "revocation_version": self.revocation_version,
            "revocation_age_s": self.revocation_age_s, "clock_synced": self.clock_synced,
            "version": self.version, "faults": list(self.faults),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class GatesPage:
    gates: tuple[GateHealth, ...]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> GatesPage:
        return cls(
            tuple(GateHealth.from_json(o, at) for at, o in read.objects(obj, "gates", "", 10_000))
        )

    def to_json(self) -> dict[str, Any]:
        return {"gates": [g.to_json() for g in self.gates]}


@dataclass(frozen=True, slots=True)
class TicketEvent:
    """One row of a ticket's history at the hub: an entry, exit, annulment or denied attempt."""

    entry_id: str
    gate_id: str
    gate: str  # the gate's name in the venue
    lane: str
    kind: str
    verdict: str
    reason: str
    detail: str
    flags: tuple[str, ...]
    offline: bool
    time: float
    annuls: str | None
    set_apart: bool = False  # moved to quarantined_entries (`hub quarantine`): not in the feed
    claimed: bool = False  # an admission of a refused upload, shared as a claim (sync.hub_claims)

    def to_json(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id, "gate_id": self.gate_id, "gate": self.gate,
            "lane": self.lane, "kind": self.kind, "verdict": self.verdict, "reason": self.reason,
            "detail": self.detail, "flags": list(self.flags), "offline": self.offline,
            "time": self.time, "annuls": self.annuls, "set_apart": self.set_apart,
            "claimed": self.claimed,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class TicketHistory:
    """A ticket's history across the venue's gates, oldest first (by HLC): its newest
    :data:`MAX_HISTORY` rows, those a quarantine set apart included (marked). ``tickets`` is
    how many distinct tickets share the short id (almost always 1); ``more``: older rows were
    left out; ``rows``: how many are stored in all."""

    ticket: str
    tickets: int
    events: tuple[TicketEvent, ...]
    more: bool
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ticket": self.ticket, "tickets": self.tickets,
            "events": [e.to_json() for e in self.events], "more": self.more, "rows": self.rows,
        }  # fmt: skip


def parse_assign(obj: Mapping[str, Any]) -> str:
    """The ``assignee`` of an assign body: 0-64 printable characters, empty unassigns."""
    name = read.text(obj, "assignee", "", MAX_ID).strip()
    return name


def parse_note(obj: Mapping[str, Any]) -> str:
    """The ``text`` of a note body (:func:`note_text`), blank lines and spaces at its ends cut."""
    note = note_text(obj, "text", "").strip()
    if not note:
        raise ProtocolError("text: expected a non-empty string")
    return note


# Within a note, beside what str.isprintable() takes: its lines, the spaces of other scripts
# (no-break and the like: category Zs), and the joiners some scripts and emoji need.
_NOTE_EXTRA = frozenset("\n\u200c\u200d")


def note_text(obj: Mapping[str, Any], key: str, where: str) -> str:
    """A note of 1-500 characters as a person writes it in the console's box: several lines
    (CRLF taken as LF), any script, emoji; never a control or direction character (text that
    reads differently than it is stored), which the message names by its code point."""
    value = read.get(obj, key, where)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NOTE:
        raise ProtocolError(f"{where}{key}: expected a string of 1-{MAX_NOTE} characters")
    value = value.replace("\r\n", "\n")
    for ch in value:
        if not (ch.isprintable() or ch in _NOTE_EXTRA or unicodedata.category(ch) == "Zs"):
            raise ProtocolError(
                f"{where}{key}: U+{ord(ch):04X} is not allowed (a control or direction character)"
            )
    return value
