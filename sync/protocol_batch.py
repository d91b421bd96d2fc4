"""The hub's fast reading of an upload (``POST /v1/gates/{gate}/entries:batch``): msgspec decodes
the body straight into typed structs with the protocol's types, ranges and length caps, then the
checks types cannot say (ids, UUIDs, printable text, an annulment names an entry, no pretix
secret, the batch's order) run on the decoded values.

The hand-written reader :meth:`sync.protocol.BatchUpload.from_json` stays the definition of the
protocol: a body the fast path does not take whole, for whatever reason, is read again by it, so a
malformed body gets exactly the 400 it got before, naming the field
(``entries[3].gate_seq: expected an integer 1..9223372036854775807``), and a body the fast path
takes is one the hand-written reader takes with the same values (tests/test_protocol_batch.py
holds the two to that). Unknown fields are ignored by both, as the protocol promises newer peers.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from agent.journal import Kind
from agent.model import Flag, Reason, Verdict
from agent.redact import SECRET_REF_PREFIX
from sync import protocol
from sync.protocol import BatchUpload, EntryWire
from sync.protocol_fields import (
    INT63,
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_DETAIL,
    MAX_ID,
    MAX_TICKET_REF,
    MAX_ZONE,
    PROTOCOL_VERSION,
    REV_KEY,
    UUID,
    WALL_MAX,
    is_id,
)

_Count = Annotated[int, msgspec.Meta(ge=0, le=INT63)]


class _Entry(msgspec.Struct):
    """An uploaded row as msgspec checks it: types, ranges, lengths (the rest: :func:`_entry`)."""

    gate_seq: Annotated[int, msgspec.Meta(ge=1, le=INT63)]
    entry_id: str
    gate_id: str
    lane: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)]
    ticket_ref: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TICKET_REF)]
    kind: Kind
    verdict: Verdict
    reason: Reason
    detail: Annotated[str, msgspec.Meta(max_length=MAX_DETAIL)]
    flags: Annotated[list[str], msgspec.Meta(max_length=len(Flag))]
    wall_time: Annotated[float, msgspec.Meta(ge=0.0, le=WALL_MAX)]
    clock_synced: bool
    mono_ns: _Count
    boot_id: Annotated[str, msgspec.Meta(max_length=MAX_ID)]
    hlc: _Count
    rev_version: _Count
    offline: bool
    annuls: str | None = None
    zone: Annotated[int, msgspec.Meta(ge=1, le=MAX_ZONE)] | None = None
    rev_key: str | None = None


class _Batch(msgspec.Struct):
    v: int
    gate_id: str
    entries: Annotated[list[_Entry], msgspec.Meta(max_length=MAX_BATCH)]


_DECODER = msgspec.json.Decoder(_Batch)
_FLAGS = frozenset(f.value for f in Flag)


def parse_batch(body: bytes) -> BatchUpload:
    """The upload in ``body``, validated as :func:`sync.protocol.parse` does; raises
    ProtocolError naming the field (the same error as ``protocol.parse(body, BatchUpload)``)."""
    batch = _fast(body)
    if batch is None:
        return protocol.parse(body, BatchUpload)
    protocol.check_batch(batch.gate_id, batch.entries)
    return batch


def _fast(body: bytes) -> BatchUpload | None:
    """The upload when msgspec and the checks after it take the body whole, else None."""
    if len(body) > MAX_BODY_BYTES:
        return None
    try:
        raw = _DECODER.decode(body)
    # DecodeError and ValidationError: the reader says which field. RecursionError: nested past
    # msgspec's depth (a 2 kB body can be), which the reader refuses as not valid JSON.
    except (msgspec.MsgspecError, RecursionError):
        return None
    if raw.v != PROTOCOL_VERSION or not is_id(raw.gate_id):
        return None
    entries = []
    for item in raw.entries:
        entry = _entry(item, raw.gate_id)
        if entry is None:
            return None
        entries.append(entry)
    return BatchUpload(raw.gate_id, tuple(entries))


def _entry(e: _Entry, gate_id: str) -> EntryWire | None:
    """The row, or None when a check beyond msgspec's types fails (a row of another gate than
    the batch's ``gate_id``, an id itself: the reader names it)."""
    annuls = e.annuls
    if (
        UUID.fullmatch(e.entry_id) is None
        or e.gate_id != gate_id
        or (annuls is not None and UUID.fullmatch(annuls) is None)
        or (e.kind == "annul") != (annuls is not None)
        or not (e.lane.isprintable() and e.ticket_ref.isprintable())
        or not (e.detail.isprintable() and e.boot_id.isprintable())
        or e.ticket_ref.startswith(SECRET_REF_PREFIX)
        or not e.ticket_ref.isascii()
        or not _FLAGS.issuperset(e.flags)
        or (e.rev_key is not None and REV_KEY.fullmatch(e.rev_key) is None)
    ):
        return None
    return EntryWire(
        gate_seq=e.gate_seq, entry_id=e.entry_id, gate_id=e.gate_id, lane=e.lane,
        ticket_ref=e.ticket_ref, kind=e.kind, verdict=e.verdict, reason=e.reason,
        detail=e.detail, flags=tuple(sorted(set(e.flags))), annuls=annuls,
        zone=e.zone, wall_time=e.wall_time, clock_synced=e.clock_synced, mono_ns=e.mono_ns,
        boot_id=e.boot_id, hlc=e.hlc, rev_version=e.rev_version, offline=e.offline,
        rev_key=e.rev_key,
    )  # fmt: skip
