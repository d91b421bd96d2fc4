"""The gate <-> hub wire protocol (``/v1``): typed messages, strict parsing, plain JSON out.

Every JSON body carries ``"v": 1``. Parsing is strict where it matters and lenient where a newer
peer may add things: unknown fields are ignored, a missing or mistyped required field, a string
over its length cap, an unknown reason code or a list over its cap raises :class:`ProtocolError`
naming the field (``entries[3].gate_seq: expected an integer >= 1``), which the hub answers with a
400. Signed documents (revocation deltas and snapshots, the trust bundle) travel as the exact bytes
their issuer signed: as raw bodies, or as strings inside a page, and are verified by the gate, never
trusted because the hub sent them. The field readers and limits are :mod:`sync.protocol_fields`,
the console's messages :mod:`sync.protocol_console`; this module exports them all.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgspec

from agent.clock import plausible_hlc
from agent.journal import EntryRecord, Kind, PeerEntry
from agent.model import Flag, Reason, Verdict
from agent.redact import SECRET_REF_PREFIX, printable, shared_ref
from sync import protocol_fields as read
from sync.protocol_console import Alert, AlertPage, GateHealth, GatesPage
from sync.protocol_fields import (
    ALERT_KINDS,
    INT63,
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_DETAIL,
    MAX_DOCUMENT_CHARS,
    MAX_ID,
    MAX_PAGE,
    MAX_SET_APART_PAGE,
    MAX_TICKET_REF,
    MAX_WAIT_S,
    MAX_ZONE,
    PROTOCOL_VERSION,
    UUID,
    AlertKind,
    EntryStatus,
    ProtocolError,
    is_id,
)

__all__ = [
    "ALERT_KINDS", "INT63", "MAX_BATCH", "MAX_BODY_BYTES", "MAX_DETAIL", "MAX_DOCUMENT_CHARS",
    "MAX_ID", "MAX_PAGE", "MAX_SET_APART_PAGE", "MAX_TICKET_REF", "MAX_WAIT_S",
    "PROTOCOL_VERSION", "UUID", "Alert",
    "AlertKind", "AlertPage", "BatchAck", "BatchUpload", "EntryResult", "EntryStatus",
    "EntryWire", "ErrorBody", "FeedEntry", "FeedPage", "GateHealth", "GatesPage", "Heartbeat",
    "HeartbeatAck", "Message", "ProtocolError", "RevocationPage", "SetApartPage", "check_batch",
    "decode",
    "encode", "is_id", "parse",
]  # fmt: skip


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
    obj = read.json_object(value, "body")
    version = obj.get("v")
    if "v" not in obj:
        raise ProtocolError("v: missing protocol version")
    if type(version) is not int:
        raise ProtocolError(f"v: expected the integer {PROTOCOL_VERSION}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"v: unsupported protocol version {version} (this side speaks 1)")
    return obj


def encode(message: Message) -> bytes:
    """The JSON body of a message, with ``v``."""
    return json.dumps({"v": PROTOCOL_VERSION, **message.to_json()}, separators=(",", ":")).encode()


# --- messages -------------------------------------------------------------------------------------


class EntryWire(msgspec.Struct, frozen=True, gc=False):
    """One journal row as uploaded: an :class:`agent.journal.EntryRecord` without ``synced_at``.

    A frozen msgspec Struct rather than a dataclass: the hub builds one per uploaded row, and a
    Struct is made in C (about 1 us against 4-9 us for a frozen 20-field dataclass on the
    development machine, ~10% of the hub's ingest time). Immutable, compared and hashed by value,
    like the dataclass it replaces; ``msgspec.structs.replace`` copies one with changes.
    """

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
    rev_key: str | None = None  # the ticket's revocation key (hex), when its signature verified

    @classmethod
    def from_record(cls, rec: EntryRecord) -> EntryWire:
        """The row as uploaded. ``detail`` is for people only: cut to MAX_DETAIL characters, and
        control characters become "?", so one long or odd text never blocks the outbox (the same
        row always gives the same body). A pretix secret travels as its digest
        (:func:`agent.model.shared_ref`), and an HLC no clock could have produced (a journal from
        before HLCs were bounded) as that of the row's wall time, so the hub takes the row."""
        detail = printable(rec.detail, MAX_DETAIL)
        return cls(
            gate_seq=rec.gate_seq, entry_id=rec.entry_id, gate_id=rec.gate_id, lane=rec.lane,
            ticket_ref=shared_ref(rec.ticket_ref), kind=rec.kind, verdict=rec.verdict,
            reason=rec.reason,
            detail=detail, flags=tuple(sorted(f.value for f in rec.flags)),
            annuls=rec.annuls, zone=rec.zone, wall_time=rec.wall_time,
            clock_synced=rec.clock_synced, mono_ns=rec.mono_ns, boot_id=rec.boot_id,
            hlc=plausible_hlc(rec.hlc, rec.wall_time), rev_version=rec.rev_version,
            offline=rec.offline, rev_key=rec.rev_key,
        )  # fmt: skip

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "") -> EntryWire:
        kind = read.choice(obj, "kind", where, read.kind)
        annuls = read.uuid(obj, "annuls", where, optional=True)
        if (kind == "annul") != (annuls is not None):
            raise ProtocolError(f"{where}annuls: required for kind 'annul' and only for it")
        flags = read.array(obj, "flags", where, len(Flag))
        if not all(isinstance(f, str) and f in Flag.__members__.values() for f in flags):
            raise ProtocolError(f"{where}flags: expected a list of known flags")
        zone = obj.get("zone")
        if zone is not None and (type(zone) is not int or not 1 <= zone <= MAX_ZONE):
            raise ProtocolError(f"{where}zone: expected null or a zone number 1..{MAX_ZONE}")
        ticket_ref = read.text(obj, "ticket_ref", where, MAX_TICKET_REF, empty=False)
        if ticket_ref.startswith(SECRET_REF_PREFIX):
            raise ProtocolError(f"{where}ticket_ref: a pretix secret must travel as its digest")
        if not ticket_ref.isascii():  # every ref a gate makes is; see FeedPage for why it matters
            raise ProtocolError(f"{where}ticket_ref: expected ASCII (a ticket's ref or a digest)")
        return cls(
            gate_seq=read.integer(obj, "gate_seq", where, lo=1),
            entry_id=cast(str, read.uuid(obj, "entry_id", where)),
            gate_id=read.ident(obj, "gate_id", where),
            lane=read.text(obj, "lane", where, MAX_ID, empty=False),
            ticket_ref=ticket_ref,
            kind=kind,
            verdict=read.choice(obj, "verdict", where, Verdict),
            reason=read.choice(obj, "reason", where, Reason),
            detail=read.text(obj, "detail", where, MAX_DETAIL),
            flags=tuple(sorted(set(flags))),
            annuls=annuls,
            zone=zone,
            wall_time=read.number(obj, "wall_time", where),
            clock_synced=read.boolean(obj, "clock_synced", where),
            mono_ns=read.integer(obj, "mono_ns", where),
            boot_id=read.text(obj, "boot_id", where, MAX_ID),
            hlc=read.integer(obj, "hlc", where),
            rev_version=read.integer(obj, "rev_version", where),
            offline=read.boolean(obj, "offline", where),
            rev_key=read.rev_key(obj, "rev_key", where),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "gate_seq": self.gate_seq, "entry_id": self.entry_id, "gate_id": self.gate_id,
            "lane": self.lane, "ticket_ref": self.ticket_ref, "kind": self.kind,
            "verdict": self.verdict.value, "reason": self.reason.value, "detail": self.detail,
            "flags": list(self.flags), "annuls": self.annuls, "zone": self.zone,
            "wall_time": self.wall_time, "clock_synced": self.clock_synced,
            "mono_ns": self.mono_ns, "boot_id": self.boot_id, "hlc": self.hlc,
            "rev_version": self.rev_version, "offline": self.offline, "rev_key": self.rev_key,
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
        if (why := _contradiction(entry)) is not None:
            raise ProtocolError(f"entries[{i}].{why}")


def _contradiction(e: EntryWire) -> str | None:
    """What in ``e`` no gate records (the journal's kinds: an entry or exit is an admission, its
    reason ok; an attempt a denial; an annulment "deny ok"), as ``field: why``; else None."""
    admits = e.kind in ("entry", "exit")
    if admits != (e.verdict is Verdict.ADMIT) and e.kind != "annul":
        want = "admit: it is an admission" if admits else "deny: it is a refused attempt"
        return f"verdict: an {e.kind} row is {want}, not {e.verdict.value}"
    if e.kind == "annul" and e.verdict is not Verdict.DENY:
        return f"verdict: an annul row is deny, not {e.verdict.value}"
    if (admits or e.kind == "annul") and e.reason is not Reason.OK:
        return f"reason: an {e.kind} row's reason is ok, not {e.reason.value}"
    return None


@dataclass(frozen=True, slots=True)
class BatchUpload:
    """``POST /v1/gates/{gate}/entries:batch``: 1-500 entries of one gate, ascending ``gate_seq``."""

    gate_id: str
    entries: tuple[EntryWire, ...]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BatchUpload:
        gate_id = read.ident(obj, "gate_id", "")
        entries = tuple(
            EntryWire.from_json(o, at) for at, o in read.objects(obj, "entries", "", MAX_BATCH)
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
            EntryResult(
                cast(str, read.uuid(o, "entry_id", at)), read.choice(o, "status", at, _status)
            )
            for at, o in read.objects(obj, "results", "", MAX_BATCH)
        )
        return cls(
            results, read.integer(obj, "acked_through_seq", ""), read.number(obj, "hub_time", "")
        )

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
            cursor=read.integer(obj, "cursor", where, lo=1),
            entry_id=cast(str, read.uuid(obj, "entry_id", where)),
            gate_id=read.ident(obj, "gate_id", where),
            gate_name=read.text(obj, "gate_name", where, MAX_ID),
            gate_seq=read.integer(obj, "gate_seq", where, lo=1),
            ticket_ref=read.text(obj, "ticket_ref", where, MAX_TICKET_REF, empty=False),
            kind=read.choice(obj, "kind", where, read.kind),
            annuls=read.uuid(obj, "annuls", where, optional=True),
            wall_time=read.number(obj, "wall_time", where),
            hlc=read.integer(obj, "hlc", where),
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
    """``GET /v1/venues/{venue}/entries``: entries after the cursor; ``next`` is the new cursor.

    A page is at most :data:`MAX_PAGE` entries and :data:`MAX_BODY_BYTES` encoded, what a gate
    reads: the hub cuts one whose entries are long in JSON (escaped characters: 12 bytes for one
    emoji) short and sets ``more``, so the gate asks again at once instead of taking itself for
    caught up. (Without that cut, 500 rows of 512 emoji each, stored by a stolen gate, made a
    3 MB page that every gate refused and asked for again, its feed stalled for good.)
    """

    entries: tuple[FeedEntry, ...]
    next: int
    hub_time: float
    more: bool = False  # entries follow that did not fit this page (absent: false)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FeedPage:
        entries = tuple(
            FeedEntry.from_json(o, at) for at, o in read.objects(obj, "entries", "", MAX_PAGE)
        )
        more = read.boolean(obj, "more", "") if "more" in obj else False
        if more and not entries:  # a hub's cut page keeps one entry at least
            raise ProtocolError("more: true on a page with no entries")
        return cls(entries, read.integer(obj, "next", ""), read.number(obj, "hub_time", ""), more)

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": [e.to_json() for e in self.entries],
            "next": self.next,
            "hub_time": self.hub_time,
            "more": self.more,
        }

    @property
    def caught_up(self) -> bool:
        """Nothing followed this page when the hub answered."""
        return not self.more and len(self.entries) < MAX_PAGE


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
        deltas = read.array(obj, "deltas", "", MAX_PAGE)
        if not all(isinstance(d, str) and len(d) <= MAX_DOCUMENT_CHARS for d in deltas):
            raise ProtocolError(
                f"deltas: expected strings of at most {MAX_DOCUMENT_CHARS} characters"
            )
        return cls(read.integer(obj, "version", ""), tuple(deltas))

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "deltas": list(self.deltas)}


@dataclass(frozen=True, slots=True)
class SetApartPage:
    """``GET /v1/venues/{venue}/set-apart?after=ID&limit=N``: the exits and annulments a
    quarantine set apart (rows a copy of a gate's token wrote; :mod:`sync.hub_quarantine`). They
    let a ticket in again, so a gate that learnt one forgets it. ``total``: how many there are
    (a gate reads the list again when it changes); ``entry_ids``: the next ones after ``after``,
    in order, at most ``limit`` (0: the total alone)."""

    total: int
    entry_ids: tuple[str, ...]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SetApartPage:
        ids = read.array(obj, "entry_ids", "", MAX_SET_APART_PAGE)
        for at, entry_id in enumerate(ids):
            if not isinstance(entry_id, str) or UUID.fullmatch(entry_id) is None:
                raise ProtocolError(f"entry_ids[{at}]: expected an entry_id (a UUID)")
        return cls(read.integer(obj, "total", ""), tuple(ids))

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "entry_ids": list(self.entry_ids)}


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
    # A secret of this run of the daemon, sent only here (sync.hub_twins); "": older gates
    run_key: str = ""

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Heartbeat:
        faults = read.array(obj, "faults", "", 16) if "faults" in obj else []
        if not all(isinstance(f, str) and 0 < len(f) <= MAX_ID and f.isprintable() for f in faults):
            raise ProtocolError("faults: expected short strings")
        run_key = read.text(obj, "run_key", "", MAX_ID) if "run_key" in obj else ""
        return cls(
            gate_id=read.ident(obj, "gate_id", ""),
            gate_name=read.text(obj, "gate_name", "", MAX_ID),
            version=read.text(obj, "version", "", MAX_ID),
            outbox_depth=read.integer(obj, "outbox_depth", ""),
            oldest_unsynced_age_s=read.opt_number(obj, "oldest_unsynced_age_s", ""),
            revocation_version=read.integer(obj, "revocation_version", ""),
            revocation_age_s=read.opt_number(obj, "revocation_age_s", ""),
            trust_version=read.integer(obj, "trust_version", ""),
            clock_synced=read.boolean(obj, "clock_synced", ""),
            feed_cursor=read.integer(obj, "feed_cursor", ""),
            faults=tuple(faults),
            run_key=run_key,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "gate_id": self.gate_id, "gate_name": self.gate_name, "version": self.version,
            "outbox_depth": self.outbox_depth,
            "oldest_unsynced_age_s": self.oldest_unsynced_age_s,
            "revocation_version": self.revocation_version,
            "revocation_age_s": self.revocation_age_s, "trust_version": self.trust_version,
            "clock_synced": self.clock_synced, "feed_cursor": self.feed_cursor,
            "faults": list(self.faults), "run_key": self.run_key,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    hub_time: float

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> HeartbeatAck:
        return cls(read.number(obj, "hub_time", ""))

    def to_json(self) -> dict[str, Any]:
        return {"hub_time": self.hub_time}


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
            read.text(obj, "error", "", MAX_ID),
            read.text(obj, "message", "", 1024),
            tuple(str(c)[:MAX_ID] for c in conflicts[:MAX_BATCH]),
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.conflicts:
            body["conflicts"] = list(self.conflicts)
        return body


Message = (
    BatchUpload | BatchAck | FeedPage | RevocationPage | SetApartPage | Heartbeat | HeartbeatAck
    | AlertPage | GatesPage | ErrorBody
)  # fmt: skip

_M = TypeVar("_M", bound=Message)


def parse(body: bytes, cls: type[_M], max_bytes: int = MAX_BODY_BYTES) -> _M:
    """Decode and validate ``body`` as ``cls``; raises ProtocolError."""
    return cast(_M, cast(Any, cls).from_json(decode(body, max_bytes)))
