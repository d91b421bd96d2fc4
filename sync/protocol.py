"""The gate <-> hub wire protocol (``/v1``): typed messages, strict parsing, plain JSON out.

Every JSON body carries ``"v": 1``. Parsing is strict where it matters and lenient where a newer
peer may add things: unknown fields are ignored, a missing or mistyped required field, a string
over its length cap, an unknown reason code or a list over its cap raises :class:`ProtocolError`
naming the field (``entries[3].gate_seq: expected an integer >= 1``), which the hub answers with a
400. Signed documents (revocation deltas and snapshots, the trust bundle) travel as the exact bytes
their issuer signed: as raw bodies, or as strings inside a page, and are verified by the gate, never
trusted because the hub sent them.

Endpoints (the hub is :mod:`sync.hub`, the gate side :mod:`sync.client`)::

    POST /v1/gates/{gate}/entries:batch     BatchUpload -> BatchAck (409 ErrorBody on a conflict)
    GET  /v1/venues/{venue}/entries?after=&wait=&limit=   -> FeedPage (long-poll)
    GET  /v1/revocations?after=V            -> RevocationPage; 410 when V is too old
    GET  /v1/revocations/snapshot           -> signed snapshot bytes (ETag, If-None-Match)
    GET  /v1/trust                          -> root-signed trust bundle bytes (ETag)
    POST /v1/gates/{gate}/heartbeat         Heartbeat -> HeartbeatAck
    GET  /v1/alerts?after=&limit=           -> AlertPage, oldest first after the cursor (follow)
    GET  /v1/alerts?before=&limit=          -> AlertPage, newest first below ``before`` (page back;
                                               without either: the newest); ``next`` = last id
    GET  /v1/gates                          -> GatesPage (per-gate health, for the console)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, get_args

from agent.clock import plausible_hlc
from agent.errors import AgentError
from agent.journal import KINDS, EntryRecord, Kind, PeerEntry
from agent.model import Flag, Reason, Verdict
from agent.redact import SECRET_REF_PREFIX, shared_ref

PROTOCOL_VERSION = 1
MAX_BATCH = 500
MAX_PAGE = 500
MAX_BODY_BYTES = 2 << 20  # a full batch of 500 entries is about 300 kB
MAX_WAIT_S = 30.0
MAX_ID = 64
MAX_TICKET_REF = 512
MAX_DETAIL = 256
MAX_DOCUMENT_CHARS = 1 << 20  # one signed delta inside a page

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
INT63 = (1 << 63) - 1
_WALL_MAX = 1e11  # seconds since 1970: year ~5138; anything larger is garbage

AlertKind = Literal["double_admission", "repeated_denials", "integrity", "alert_storm"]
ALERT_KINDS: frozenset[str] = frozenset(get_args(AlertKind))
EntryStatus = Literal["inserted", "duplicate"]


class ProtocolError(AgentError, ValueError):
    """A message that does not follow the protocol; the text names the field and what was expected."""


def is_id(value: str) -> bool:
    """True for a valid gate or venue id: 1-64 of letters, digits and ``._:-``, no slash."""
    return _ID.fullmatch(value) is not None


# --- field readers: each raises ProtocolError naming ``where.key`` ------------------------------


def _get(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise ProtocolError(f"{where}{key}: missing")
    return obj[key]


def _int(obj: Mapping[str, Any], key: str, where: str, lo: int = 0, hi: int = INT63) -> int:
    value = _get(obj, key, where)
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolError(f"{where}{key}: expected an integer {lo}..{hi}")
    return value


def _float(
    obj: Mapping[str, Any], key: str, where: str, lo: float = 0.0, hi: float = _WALL_MAX
) -> float:
    value = _get(obj, key, where)
    if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
        raise ProtocolError(f"{where}{key}: expected a number {lo:g}..{hi:g}")
    return float(value)


def _opt_float(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    if obj.get(key) is None:
        return None
    return _float(obj, key, where, hi=_WALL_MAX)


def _bool(obj: Mapping[str, Any], key: str, where: str) -> bool:
    value = _get(obj, key, where)
    if type(value) is not bool:
        raise ProtocolError(f"{where}{key}: expected true or false")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str, max_len: int, *, empty: bool = True) -> str:
    value = _get(obj, key, where)
    if not isinstance(value, str) or len(value) > max_len or (not empty and not value):
        what = "a string" if empty else "a non-empty string"
        raise ProtocolError(f"{where}{key}: expected {what} of at most {max_len} characters")
    if not value.isprintable():
        raise ProtocolError(f"{where}{key}: control characters are not allowed")
    return value


def _ident(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _get(obj, key, where)
    if not isinstance(value, str) or not is_id(value):
        raise ProtocolError(f"{where}{key}: expected an id of 1-64 letters, digits or ._:-")
    return value


def _uuid(obj: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> str | None:
    value = obj.get(key) if optional else _get(obj, key, where)
    if value is None and optional:
        return None
    if not isinstance(value, str) or _UUID.fullmatch(value) is None:
        raise ProtocolError(f"{where}{key}: expected a lowercase UUID")
    return value


_E = TypeVar("_E", bound=str)


def _choice(obj: Mapping[str, Any], key: str, where: str, allowed: Callable[[str], _E]) -> _E:
    value = _get(obj, key, where)
    if not isinstance(value, str):
        raise ProtocolError(f"{where}{key}: expected a string")
    try:
        return allowed(value)
    except ValueError:
        raise ProtocolError(f"{where}{key}: unknown value {value[:32]!r}") from None


def _kind(value: str) -> Kind:
    if value not in KINDS:
        raise ValueError(value)
    return cast(Kind, value)


def _list(obj: Mapping[str, Any], key: str, where: str, max_len: int) -> list[Any]:
    value = _get(obj, key, where)
    if not isinstance(value, list) or len(value) > max_len:
        raise ProtocolError(f"{where}{key}: expected a list of at most {max_len} items")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where or 'body'}: expected a JSON object")
    return cast(Mapping[str, Any], value)


def _items(
    obj: Mapping[str, Any], key: str, where: str, max_len: int
) -> list[tuple[str, Mapping[str, Any]]]:
    """The objects of list ``key`` with their ``where`` prefixes (``entries[3].``)."""
    out = []
    for i, item in enumerate(_list(obj, key, where, max_len)):
        at = f"{where}{key}[{i}]"
        out.append((at + ".", _object(item, at)))
    return out


def decode(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> Mapping[str, Any]:
    """Parse a JSON body of this protocol (size cap, object, ``v`` == 1); raises ProtocolError.

    ``max_bytes`` is raised only for answers that carry signed documents (revocation pages).
    """
    if len(body) > max_bytes:
        raise ProtocolError(f"body of {len(body)} bytes is over the {max_bytes} byte limit")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"body is not valid JSON: {str(exc)[:120]}") from None
    obj = _object(value, "body")
    version = obj.get("v")
    if type(version) is not int:
        raise ProtocolError("v: missing protocol version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"v: unsupported protocol version {version} (this side speaks 1)")
    return obj


def encode(message: Message) -> bytes:
    """The JSON body of a message, with ``v``."""
    return json.dumps({"v": PROTOCOL_VERSION, **message.to_json()}, separators=(",", ":")).encode()


# --- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryWire:
    """One journal row as uploaded: an :class:`agent.journal.EntryRecord` without ``synced_at``."""

    gate_seq: int
    entry_id: str
    gate_id: str
    lane: str
    ticket_ref: str
    kind: Kind
    verdict: Verdict
    reason: Reason
    detail: str
    flags: tuple[str, ...]
    annuls: str | None
    zone: int | None
    wall_time: float
    clock_synced: bool
    mono_ns: int
    boot_id: str
    hlc: int
    rev_version: int
    offline: bool

    @classmethod
    def from_record(cls, rec: EntryRecord) -> EntryWire:
        """The row as uploaded. ``detail`` is for people only: cut to MAX_DETAIL characters, and
        control characters become "?", so one long or odd text never blocks the outbox (the same
        row always gives the same body). A pretix secret travels as its digest
        (:func:`agent.model.shared_ref`), and an HLC no clock could have produced (a journal from
        before HLCs were bounded) as that of the row's wall time, so the hub takes the row."""
        detail = "".join(c if c.isprintable() else "?" for c in rec.detail[:MAX_DETAIL])
        return cls(
            gate_seq=rec.gate_seq, entry_id=rec.entry_id, gate_id=rec.gate_id, lane=rec.lane,
            ticket_ref=shared_ref(rec.ticket_ref), kind=rec.kind, verdict=rec.verdict,
            reason=rec.reason,
            detail=detail, flags=tuple(sorted(f.value for f in rec.flags)),
            annuls=rec.annuls, zone=rec.zone, wall_time=rec.wall_time,
            clock_synced=rec.clock_synced, mono_ns=rec.mono_ns, boot_id=rec.boot_id,
            hlc=plausible_hlc(rec.hlc, rec.wall_time), rev_version=rec.rev_version,
            offline=rec.offline,
        )  # fmt: skip

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "") -> EntryWire:
        kind = _choice(obj, "kind", where, _kind)
        annuls = _uuid(obj, "annuls", where, optional=True)
        if (kind == "annul") != (annuls is not None):
            raise ProtocolError(f"{where}annuls: required for kind 'annul' and only for it")
        flags = _list(obj, "flags", where, len(Flag))
        if not all(isinstance(f, str) and f in Flag.__members__.values() for f in flags):
            raise ProtocolError(f"{where}flags: expected a list of known flags")
        zone = obj.get("zone")
        if zone is not None and (type(zone) is not int or not 0 <= zone <= 0xFFFF):
            raise ProtocolError(f"{where}zone: expected null or an integer 0..65535")
        ticket_ref = _str(obj, "ticket_ref", where, MAX_TICKET_REF, empty=False)
        if ticket_ref.startswith(SECRET_REF_PREFIX):
            raise ProtocolError(f"{where}ticket_ref: a pretix secret must travel as its digest")
        return cls(
            gate_seq=_int(obj, "gate_seq", where, lo=1),
            entry_id=cast(str, _uuid(obj, "entry_id", where)),
            gate_id=_ident(obj, "gate_id", where),
            lane=_str(obj, "lane", where, MAX_ID, empty=False),
            ticket_ref=ticket_ref,
            kind=kind,
            verdict=_choice(obj, "verdict", where, Verdict),
            reason=_choice(obj, "reason", where, Reason),
            detail=_str(obj, "detail", where, MAX_DETAIL),
            flags=tuple(sorted(set(flags))),
            annuls=annuls,
            zone=zone,
            wall_time=_float(obj, "wall_time", where),
            clock_synced=_bool(obj, "clock_synced", where),
            mono_ns=_int(obj, "mono_ns", where),
            boot_id=_str(obj, "boot_id", where, MAX_ID),
            hlc=_int(obj, "hlc", where),
            rev_version=_int(obj, "rev_version", where),
            offline=_bool(obj, "offline", where),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "gate_seq": self.gate_seq, "entry_id": self.entry_id, "gate_id": self.gate_id,
            "lane": self.lane, "ticket_ref": self.ticket_ref, "kind": self.kind,
            "verdict": self.verdict.value, "reason": self.reason.value, "detail": self.detail,
            "flags": list(self.flags), "annuls": self.annuls, "zone": self.zone,
            "wall_time": self.wall_time, "clock_synced": self.clock_synced,
            "mono_ns": self.mono_ns, "boot_id": self.boot_id, "hlc": self.hlc,
            "rev_version": self.rev_version, "offline": self.offline,
        }  # fmt: skip

    @property
    def admitted(self) -> bool:
        return self.verdict is Verdict.ADMIT


def check_batch(gate_id: str, entries: Sequence[EntryWire]) -> None:
    """Refuse a batch that is empty or over 500, has another gate's entries or does not ascend
    by gate_seq; raises ProtocolError (a ValueError) naming the entry."""
    if not 0 < len(entries) <= MAX_BATCH:
        raise ProtocolError(f"entries: expected 1..{MAX_BATCH} entries")
    for i, entry in enumerate(entries):
        if entry.gate_id != gate_id:
            raise ProtocolError(f"entries[{i}].gate_id: {entry.gate_id!r} is not the batch's gate")
        if i and entry.gate_seq <= entries[i - 1].gate_seq:
            raise ProtocolError(f"entries[{i}].gate_seq: entries must ascend by gate_seq")


@dataclass(frozen=True, slots=True)
class BatchUpload:
    """``POST /v1/gates/{gate}/entries:batch``: 1-500 entries of one gate, ascending ``gate_seq``."""

    gate_id: str
    entries: tuple[EntryWire, ...]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BatchUpload:
        gate_id = _ident(obj, "gate_id", "")
        entries = tuple(
            EntryWire.from_json(o, at) for at, o in _items(obj, "entries", "", MAX_BATCH)
        )
        check_batch(gate_id, entries)
        return cls(gate_id, entries)

    def to_json(self) -> dict[str, Any]:
        return {"gate_id": self.gate_id, "entries": [e.to_json() for e in self.entries]}


@dataclass(frozen=True, slots=True)
class EntryResult:
    entry_id: str
    status: EntryStatus


def _status(value: str) -> EntryStatus:
    if value not in ("inserted", "duplicate"):
        raise ValueError(value)
    return cast(EntryStatus, value)


@dataclass(frozen=True, slots=True)
class BatchAck:
    """The hub stored (or already had) every entry of the batch up to ``acked_through_seq``."""

    results: tuple[EntryResult, ...]
    acked_through_seq: int
    hub_time: float

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BatchAck:
        results = tuple(
            EntryResult(cast(str, _uuid(o, "entry_id", at)), _choice(o, "status", at, _status))
            for at, o in _items(obj, "results", "", MAX_BATCH)
        )
        return cls(results, _int(obj, "acked_through_seq", ""), _float(obj, "hub_time", ""))

    def to_json(self) -> dict[str, Any]:
        return {
            "results": [{"entry_id": r.entry_id, "status": r.status} for r in self.results],
            "acked_through_seq": self.acked_through_seq,
            "hub_time": self.hub_time,
        }

    @property
    def inserted(self) -> int:
        return sum(r.status == "inserted" for r in self.results)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """An entry, exit or annulment of some gate of the venue, as the peer feed gives it."""

    cursor: int  # the hub's position of this entry in the venue feed
    entry_id: str
    gate_id: str
    gate_name: str
    gate_seq: int
    ticket_ref: str
    kind: Kind
    annuls: str | None
    wall_time: float
    hlc: int

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "") -> FeedEntry:
        return cls(
            cursor=_int(obj, "cursor", where, lo=1),
            entry_id=cast(str, _uuid(obj, "entry_id", where)),
            gate_id=_ident(obj, "gate_id", where),
            gate_name=_str(obj, "gate_name", where, MAX_ID),
            gate_seq=_int(obj, "gate_seq", where, lo=1),
            ticket_ref=_str(obj, "ticket_ref", where, MAX_TICKET_REF, empty=False),
            kind=_choice(obj, "kind", where, _kind),
            annuls=_uuid(obj, "annuls", where, optional=True),
            wall_time=_float(obj, "wall_time", where),
            hlc=_int(obj, "hlc", where),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cursor": self.cursor, "entry_id": self.entry_id, "gate_id": self.gate_id,
            "gate_name": self.gate_name, "gate_seq": self.gate_seq,
            "ticket_ref": self.ticket_ref, "kind": self.kind, "annuls": self.annuls,
            "wall_time": self.wall_time, "hlc": self.hlc,
        }  # fmt: skip

    def to_peer(self) -> PeerEntry:
        return PeerEntry(
            entry_id=self.entry_id, gate_id=self.gate_id, gate_name=self.gate_name or self.gate_id,
            gate_seq=self.gate_seq, ticket_ref=self.ticket_ref, kind=self.kind,
            annuls=self.annuls, wall_time=self.wall_time, hlc=self.hlc,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class FeedPage:
    """``GET /v1/venues/{venue}/entries``: entries after the cursor; ``next`` is the new cursor."""

    entries: tuple[FeedEntry, ...]
    next: int
    hub_time: float

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FeedPage:
        entries = tuple(
            FeedEntry.from_json(o, at) for at, o in _items(obj, "entries", "", MAX_PAGE)
        )
        return cls(entries, _int(obj, "next", ""), _float(obj, "hub_time", ""))

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": [e.to_json() for e in self.entries],
            "next": self.next,
            "hub_time": self.hub_time,
        }


@dataclass(frozen=True, slots=True)
class RevocationPage:
    """``GET /v1/revocations?after=V``: the signed deltas from V to ``version``, oldest first.

    Each delta is the issuer's envelope text, verified by the gate. An empty list means up to
    date. A 410 answer instead means V is older than the oldest kept delta: fetch the snapshot.
    """

    version: int
    deltas: tuple[str, ...]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RevocationPage:
        deltas = _list(obj, "deltas", "", MAX_PAGE)
        if not all(isinstance(d, str) and len(d) <= MAX_DOCUMENT_CHARS for d in deltas):
            raise ProtocolError(
                f"deltas: expected strings of at most {MAX_DOCUMENT_CHARS} characters"
            )
        return cls(_int(obj, "version", ""), tuple(deltas))

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "deltas": list(self.deltas)}


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``POST /v1/gates/{gate}/heartbeat``: how the gate is, for the console and the alerts."""

    gate_id: str
    gate_name: str
    version: str  # gate-agent's version
    outbox_depth: int
    oldest_unsynced_age_s: float | None
    revocation_version: int
    revocation_age_s: float | None
    trust_version: int
    clock_synced: bool
    feed_cursor: int
    faults: tuple[str, ...] = ()  # short words: "scanner offline", "relay fault", ...

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Heartbeat:
        faults = _list(obj, "faults", "", 16) if "faults" in obj else []
        if not all(isinstance(f, str) and 0 < len(f) <= MAX_ID and f.isprintable() for f in faults):
            raise ProtocolError("faults: expected short strings")
        return cls(
            gate_id=_ident(obj, "gate_id", ""),
            gate_name=_str(obj, "gate_name", "", MAX_ID),
            version=_str(obj, "version", "", MAX_ID),
            outbox_depth=_int(obj, "outbox_depth", ""),
            oldest_unsynced_age_s=_opt_float(obj, "oldest_unsynced_age_s", ""),
            revocation_version=_int(obj, "revocation_version", ""),
            revocation_age_s=_opt_float(obj, "revocation_age_s", ""),
            trust_version=_int(obj, "trust_version", ""),
            clock_synced=_bool(obj, "clock_synced", ""),
            feed_cursor=_int(obj, "feed_cursor", ""),
            faults=tuple(faults),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "gate_id": self.gate_id, "gate_name": self.gate_name, "version": self.version,
            "outbox_depth": self.outbox_depth,
            "oldest_unsynced_age_s": self.oldest_unsynced_age_s,
            "revocation_version": self.revocation_version,
            "revocation_age_s": self.revocation_age_s, "trust_version": self.trust_version,
            "clock_synced": self.clock_synced, "feed_cursor": self.feed_cursor,
            "faults": list(self.faults),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    hub_time: float

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> HeartbeatAck:
        return cls(_float(obj, "hub_time", ""))

    def to_json(self) -> dict[str, Any]:
        return {"hub_time": self.hub_time}


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

        gates = _list(obj, "gates", where, 64)
        times = _list(obj, "times", where, 64)
        entries = _list(obj, "entries", where, 64)
        if not all(isinstance(g, str) and len(g) <= MAX_ID for g in gates):
            raise ProtocolError(f"{where}gates: expected gate names")
        if not all(type(t) in (int, float) and math.isfinite(t) for t in times):
            raise ProtocolError(f"{where}times: expected numbers")
        if not all(isinstance(e, str) and _UUID.fullmatch(e) for e in entries):
            raise ProtocolError(f"{where}entries: expected entry ids")
        return cls(
            alert_id=_int(obj, "alert_id", where, lo=1),
            kind=_choice(obj, "kind", where, alert_kind),
            venue=_ident(obj, "venue", where),
            ticket=_str(obj, "ticket", where, MAX_ID),
            gates=tuple(gates),
            times=tuple(float(t) for t in times),
            entries=tuple(entries),
            detail=_str(obj, "detail", where, MAX_DETAIL),
            raised_at=_float(obj, "raised_at", where),
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
        alerts = tuple(Alert.from_json(o, at) for at, o in _items(obj, "alerts", "", MAX_PAGE))
        return cls(alerts, _int(obj, "next", ""))

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
        faults = _list(obj, "faults", where, 16)
        return cls(
            gate_id=_ident(obj, "gate_id", where),
            gate_name=_str(obj, "gate_name", where, MAX_ID),
            online=_bool(obj, "online", where),
            last_seen=_opt_float(obj, "last_seen", where),
            outbox_depth=_int(obj, "outbox_depth", where),
            revocation_version=_int(obj, "revocation_version", where),
            revocation_age_s=_opt_float(obj, "revocation_age_s", where),
            clock_synced=_bool(obj, "clock_synced", where),
            version=_str(obj, "version", where, MAX_ID),
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
        return cls(tuple(GateHealth.from_json(o, at) for at, o in _items(obj, "gates", "", 10_000)))

    def to_json(self) -> dict[str, Any]:
        return {"gates": [g.to_json() for g in self.gates]}


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """Every 4xx/5xx answer of the hub: a stable code and a message for people."""

    error: str  # bad_request, unauthorized, forbidden, not_found, conflict, gone, too_large, ...
    message: str
    conflicts: tuple[str, ...] = ()  # entry ids, for 409

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ErrorBody:
        conflicts = obj.get("conflicts") or []
        if not isinstance(conflicts, list):
            raise ProtocolError("conflicts: expected a list")
        return cls(
            _str(obj, "error", "", MAX_ID),
            _str(obj, "message", "", 1024),
            tuple(str(c)[:MAX_ID] for c in conflicts[:MAX_BATCH]),
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.conflicts:
            body["conflicts"] = list(self.conflicts)
        return body


Message = (
    BatchUpload | BatchAck | FeedPage | RevocationPage | Heartbeat | HeartbeatAck | AlertPage
    | GatesPage | ErrorBody
)  # fmt: skip

_M = TypeVar("_M", bound=Message)


def parse(body: bytes, cls: type[_M], max_bytes: int = MAX_BODY_BYTES) -> _M:
    """Decode and validate ``body`` as ``cls``; raises ProtocolError."""
    return cast(_M, cast(Any, cls).from_json(decode(body, max_bytes)))
