"""The hub's console messages of the wire protocol (:mod:`sync.protocol`): alerts and gate health,
as ``GET /v1/alerts`` and ``GET /v1/gates`` answer them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sync import protocol_fields as read
from sync.protocol_fields import ALERT_KINDS, MAX_DETAIL, MAX_ID, MAX_PAGE, AlertKind, ProtocolError


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

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "") -> Alert:
        def alert_kind(value: str) -> AlertKind:
            if value not in ALERT_KINDS:
                raise ValueError(value)
            return cast(AlertKind, value)

        gates = read.array(obj, "gates", where, 64)
        times = read.array(obj, "times", where, 64)
        entries = read.array(obj, "entries", where, 64)
        if not all(isinstance(g, str) and len(g) <= MAX_ID for g in gates):
            raise ProtocolError(f"{where}gates: expected gate names")
        if not all(type(t) in (int, float) and math.isfinite(t) for t in times):
            raise ProtocolError(f"{where}times: expected numbers")
        if not all(isinstance(e, str) and read.UUID.fullmatch(e) for e in entries):
            raise ProtocolError(f"{where}entries: expected entry ids")
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
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "kind": self.kind, "venue": self.venue,
            "ticket": self.ticket, "gates": list(self.gates), "times": list(self.times),
            "entries": list(self.entries), "detail": self.detail, "raised_at": self.raised_at,
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
