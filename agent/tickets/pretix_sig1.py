"""pretix_sig1, the signed ticket secrets of pretix (an open-source ticketing system).

The scanned text is the secret itself: standard base64, written backwards, of::

    version u8 = 1 | payload_len u16 | sig_len u16 | payload | sig        (big-endian lengths)

``payload`` is a protobuf ``Ticket{string seed = 1; int64 item = 2; int64 variation = 3;
int64 subevent = 4; int64 validFromUnixTime = 5; int64 validUntilUnixTime = 6}`` and ``sig`` an
Ed25519 signature over exactly the payload bytes, by one of the event's ``valid_keys.pretix_sig1``.
The format carries no key id and no event: a ticket belongs to the event whose key verifies it.

pretix's own parser is lenient (non-validating base64, trailing bytes ignored), so one signed
payload has many spellings, and a revoked secret re-spelled that way would no longer match the
revocation list. This parser therefore accepts exactly one spelling per ticket: canonical base64
(re-encoding the bytes gives the same text), exact lengths, a 64-byte signature, nothing after it.

The protobuf payload is read by the small strict decoder below rather than the ``protobuf``
library: six scalar fields do not justify a large dependency with a native extension and generated
code, the library's decoder is deliberately lenient (unknown fields kept, repeated scalars merged
"last one wins", overlong varints accepted), and a hand-written decoder lets every oddity become a
TicketFormatError with a clear message before anything is trusted.

Unknown field numbers are refused, not skipped. The payload is signed, so an unknown field is the
issuer's own data; a newer pretix may add one that restricts the ticket (a gate, a time of day),
and silently ignoring it would admit someone the issuer meant to refuse. Failing closed turns a
format change into a visible ``invalid_format`` at the first scan instead of quiet wrong admits.
Repeated fields, wrong wire types, overlong or non-minimal varints and negative numbers are refused
for the same reason: real pretix secrets never contain them.

Parsing never verifies the signature; :mod:`agent.trust` does that with the event's keys.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.errors import TicketFormatError
from agent.model import Ticket
from agent.revocation import order_key, secret_key

FORMAT = "pretix_sig1"
VERSION = 1
SIG_LEN = 64
HEADER_LEN = 5
# Real secrets are 116-132 characters (a 9-32 character seed); 1024 leaves room for long seeds
# while bounding the work done on hostile input before any decoding happens.
MAX_TEXT_LEN = 1024
# The shortest well-formed text: header and signature with an empty payload, base64-encoded.
MIN_TEXT_LEN = (HEADER_LEN + SIG_LEN + 2) // 3 * 4
# Unix seconds up to 9999-12-31T23:59:59Z: anything later cannot be shown or compared as a date.
MAX_TIME = 253_402_300_799

_HEADER = struct.Struct(">BHH")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_MAX_VARINT_LEN = 10
_INT64_MAX = 2**63 - 1

# field number -> (name, wire type): 0 varint, 2 length-delimited
_FIELDS: dict[int, tuple[str, int]] = {
    1: ("seed", 2),
    2: ("item", 0),
    3: ("variation", 0),
    4: ("subevent", 0),
    5: ("validFromUnixTime", 0),
    6: ("validUntilUnixTime", 0),
}


@dataclass(frozen=True, slots=True)
class Payload:
    """The decoded protobuf ``Ticket`` of a pretix_sig1 secret; absent fields are 0 or ""."""

    seed: str = ""
    item: int = 0
    variation: int = 0
    subevent: int = 0
    valid_from: int = 0
    valid_until: int = 0


def parse(text: str) -> Ticket:
    """Parse a pretix_sig1 secret into a :class:`Ticket` without verifying its signature.

    Raises TicketFormatError when the text is longer than MAX_TEXT_LEN (checked before any
    decoding), is not canonical standard base64 once reversed, the version is not 1, the signature
    length is not 64, the lengths do not add up exactly, or the payload is not a well-formed
    protobuf ``Ticket`` of the known fields (see the module docstring).
    """
    raw = decode_text(text)
    payload_bytes, signature = split(raw)
    p = decode_payload(payload_bytes)
    return Ticket(
        fmt=FORMAT,
        kid="",
        revocation_key=secret_key(text),
        order_key=order_key(text),
        ticket_ref="pretix:" + text,
        event="",
        signed_data=payload_bytes,
        signature=signature,
        zones=None,
        product=str(p.item),
        subevent=str(p.subevent) if p.subevent else None,
        not_before=p.valid_from or None,
        not_after=p.valid_until or None,
        fields=(
            # The seed makes the secret unguessable; staff and logs only need to see it exists.
            ("seed", f"{len(p.seed)} characters"),
            ("item", str(p.item)),
            ("variation", str(p.variation) if p.variation else "-"),
            ("subevent", str(p.subevent) if p.subevent else "-"),
            ("valid_from", _time_text(p.valid_from)),
            ("valid_until", _time_text(p.valid_until)),
        ),
    )


def decode_text(text: str) -> bytes:
    """The bytes of a secret: reversed, canonical standard base64 only.

    Raises TicketFormatError for an over-long or empty text, characters outside the standard
    alphabet (URL-safe ``-``/``_``, whitespace), wrong padding, or non-zero unused bits.
    """
    if len(text) > MAX_TEXT_LEN:
        raise TicketFormatError(
            f"{FORMAT}: text of {len(text)} characters exceeds the {MAX_TEXT_LEN} cap"
        )
    if not text:
        raise TicketFormatError(f"{FORMAT}: empty text")
    encoded = text[::-1]
    if _BASE64.fullmatch(encoded) is None:
        raise TicketFormatError(f"{FORMAT}: not standard base64 (unexpected character)")
    if len(encoded) % 4:
        raise TicketFormatError(f"{FORMAT}: base64 length {len(encoded)} is not a multiple of 4")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TicketFormatError(f"{FORMAT}: invalid base64 ({exc})") from None
    # validate=True still accepts non-zero unused bits in the last character: a second spelling
    # of the same bytes, which would slip past a revocation list keyed by the exact text.
    if base64.b64encode(raw).decode("ascii") != encoded:
        raise TicketFormatError(f"{FORMAT}: base64 is not in canonical form")
    return raw


def split(raw: bytes) -> tuple[bytes, bytes]:
    """``(payload, signature)`` of the decoded bytes.

    Raises TicketFormatError unless the version is 1, the signature length is 64 and the header's
    lengths account for every byte (nothing missing, nothing after the signature).
    """
    if len(raw) < HEADER_LEN:
        raise TicketFormatError(f"{FORMAT}: {len(raw)} bytes is shorter than the header")
    version, payload_len, sig_len = _HEADER.unpack_from(raw)
    if version != VERSION:
        raise TicketFormatError(f"{FORMAT}: unsupported version {version}")
    if sig_len != SIG_LEN:
        raise TicketFormatError(f"{FORMAT}: signature length {sig_len}, expected {SIG_LEN}")
    expected = HEADER_LEN + payload_len + sig_len
    if len(raw) != expected:
        what = "trailing bytes after the signature" if len(raw) > expected else "truncated"
        raise TicketFormatError(f"{FORMAT}: {what} ({len(raw)} bytes, the header says {expected})")
    end = HEADER_LEN + payload_len
    return raw[HEADER_LEN:end], raw[end:]


def decode_payload(data: bytes) -> Payload:
    """Decode the protobuf ``Ticket`` strictly; raises TicketFormatError (module docstring)."""
    values: dict[str, int | str] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        spec = _FIELDS.get(number)
        if spec is None:
            raise TicketFormatError(f"{FORMAT}: unknown protobuf field {number}")
        name, expected_wire = spec
        if wire != expected_wire:
            raise TicketFormatError(f"{FORMAT}: field {name} has wire type {wire}")
        if name in values:
            raise TicketFormatError(f"{FORMAT}: field {name} is repeated")
        if wire == 2:
            values[name], pos = _string(data, pos, name)
        else:
            values[name], pos = _int64(data, pos, name)
    return _payload(values)


def _payload(values: dict[str, int | str]) -> Payload:
    seed = values.get("seed", "")
    item, variation, subevent, valid_from, valid_until = (
        values.get(name, 0)
        for name in ("item", "variation", "subevent", "validFromUnixTime", "validUntilUnixTime")
    )
    assert isinstance(seed, str)
    assert isinstance(item, int) and isinstance(variation, int) and isinstance(subevent, int)
    assert isinstance(valid_from, int) and isinstance(valid_until, int)
    for name, t in (("validFromUnixTime", valid_from), ("validUntilUnixTime", valid_until)):
        if t > MAX_TIME:
            raise TicketFormatError(f"{FORMAT}: {name} {t} is beyond year 9999")
    return Payload(seed, item, variation, subevent, valid_from, valid_until)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """One unsigned varint at ``pos``: (value, next position). At most 10 bytes, minimal form."""
    value = shift = 0
    for i in range(pos, min(pos + _MAX_VARINT_LEN, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > pos:
                raise TicketFormatError(f"{FORMAT}: overlong protobuf varint")
            if value >= 1 << 64:
                raise TicketFormatError(f"{FORMAT}: protobuf varint exceeds 64 bits")
            return value, i + 1
        shift += 7
    if len(data) - pos >= _MAX_VARINT_LEN:
        raise TicketFormatError(f"{FORMAT}: protobuf varint longer than 10 bytes")
    raise TicketFormatError(f"{FORMAT}: truncated protobuf varint")


def _int64(data: bytes, pos: int, name: str) -> tuple[int, int]:
    value, pos = _varint(data, pos)
    # int64 stores negatives as huge unsigned values; no pretix id or time is ever negative.
    if value > _INT64_MAX:
        raise TicketFormatError(f"{FORMAT}: field {name} is negative")
    return value, pos


def _string(data: bytes, pos: int, name: str) -> tuple[str, int]:
    size, pos = _varint(data, pos)
    end = pos + size
    if end > len(data):
        raise TicketFormatError(f"{FORMAT}: field {name} runs past the end of the payload")
    try:
        return data[pos:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise TicketFormatError(f"{FORMAT}: field {name} is not UTF-8") from None


def _time_text(value: int) -> str:
    if value == 0:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
