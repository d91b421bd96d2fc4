"""TK1, the native ticket format.

Transport text is ``"TK1:" + base45(body)``, so a QR code carries it in alphanumeric mode. The body
is 108 bytes, big-endian::

    ver u8 = 1 | flags u8 | kid u32 | token_id 16B | ticket_id 8B | event_id u32 | zones u16 |
    not_before u32 | not_after u32 | sig 64B

The signature (Ed25519 or P-256 ``r || s``, chosen by the trust entry of ``kid``, never by the
token) covers ``DOMAIN_TAG + body[:44]``. ``not_before``/``not_after`` of 0 mean open-ended.
``zones`` is a bitmask, bit ``n-1`` for zone ``n``. Flag bit 0 is reserved for a device-bound
rotating variant that is not supported yet; every other flag bit must be 0.

Parsing is strict and never verifies signatures; :mod:`agent.trust` does that.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from agent import keys
from agent.errors import TicketFormatError
from agent.model import Ticket, zones_text
from agent.tickets import base45

PREFIX = "TK1:"
DOMAIN_TAG = b"gate-agent/TK1/static\0"
VERSION = 1
BODY_LEN = 108
SIG_LEN = 64
UNSIGNED_LEN = BODY_LEN - SIG_LEN
TEXT_LEN = len(PREFIX) + BODY_LEN // 2 * 3

FLAG_ROTATING = 0x01

_UNSIGNED = struct.Struct(">BBI16s8sIHII")
assert _UNSIGNED.size == UNSIGNED_LEN

_U8, _U16, _U32 = 0xFF, 0xFFFF, 0xFFFF_FFFF


def _check_int(name: str, value: object, maximum: int) -> None:
    # bool is an int subclass; True as a kid is always a caller bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} must be in 0..{maximum}, got {value}")


def _check_bytes(name: str, value: object, size: int) -> None:
    if not isinstance(value, bytes):
        raise ValueError(f"{name} must be bytes, got {type(value).__name__}")
    if len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(value)}")


@dataclass(frozen=True, slots=True)
class TK1Fields:
    """The signed fields of a TK1 ticket. Times are Unix seconds, 0 meaning open-ended.

    Raises ValueError from the constructor when a value does not fit its field.
    """

    kid: int
    token_id: bytes
    ticket_id: bytes
    event_id: int
    zones: int
    not_before: int
    not_after: int
    flags: int = 0

    def __post_init__(self) -> None:
        _check_int("kid", self.kid, _U32)
        _check_bytes("token_id", self.token_id, 16)
        _check_bytes("ticket_id", self.ticket_id, 8)
        _check_int("event_id", self.event_id, _U32)
        _check_int("zones", self.zones, _U16)
        _check_int("not_before", self.not_before, _U32)
        _check_int("not_after", self.not_after, _U32)
        _check_int("flags", self.flags, _U8)


def unsigned_body(f: TK1Fields) -> bytes:
    """The 44 body bytes that precede the signature."""
    return _UNSIGNED.pack(
        VERSION,
        f.flags,
        f.kid,
        f.token_id,
        f.ticket_id,
        f.event_id,
        f.zones,
        f.not_before,
        f.not_after,
    )


def signed_message(unsigned: bytes) -> bytes:
    """The exact bytes a TK1 signature covers: the domain tag, then the unsigned body."""
    return DOMAIN_TAG + unsigned


def encode(f: TK1Fields, signature: bytes) -> str:
    """Assemble the transport text from fields and a 64-byte signature; ValueError otherwise."""
    _check_bytes("signature", signature, SIG_LEN)
    return PREFIX + base45.encode(unsigned_body(f) + signature)


def sign(f: TK1Fields, key: keys.PrivateKey) -> str:
    """Sign ``f`` with ``key`` (Ed25519 or P-256) and return the transport text."""
    return encode(f, keys.sign(key, signed_message(unsigned_body(f))))


def ticket_ref(ticket_id: bytes) -> str:
    """The ``ticket_ref`` of the TK1 ticket (and of its rotating codes) with this ticket id."""
    return "tk1:" + ticket_id.hex()


def parse(text: str) -> Ticket:
    """Parse TK1 transport text into a :class:`Ticket` without verifying its signature.

    Raises TicketFormatError when the length is not exactly TEXT_LEN (checked before decoding),
    the prefix is wrong, the Base45 is invalid, the body is not 108 bytes, the version is not 1,
    or a flag bit is set (bit 0: the unsupported rotating variant; others: unknown).
    """
    if len(text) != TEXT_LEN:
        raise TicketFormatError(f"TK1: expected {TEXT_LEN} characters, got {len(text)}")
    if not text.startswith(PREFIX):
        raise TicketFormatError(f"TK1: text does not start with {PREFIX!r}")
    body = base45.decode(text[len(PREFIX) :])
    if len(body) != BODY_LEN:
        raise TicketFormatError(f"TK1: body must be {BODY_LEN} bytes, got {len(body)}")
    ver, flags, kid, token_id, ticket_id, event_id, zones, nb, na = _UNSIGNED.unpack_from(body)
    if ver != VERSION:
        raise TicketFormatError(f"TK1: unsupported version {ver}")
    if flags & FLAG_ROTATING:
        raise TicketFormatError("TK1: rotating TK1 variant not supported")
    if flags:
        raise TicketFormatError(f"TK1: unknown flags 0x{flags:02x}")
    return Ticket(
        fmt="tk1",
        kid=str(kid),
        revocation_key=token_id,
        ticket_ref=ticket_ref(ticket_id),
        event=str(event_id),
        signed_data=signed_message(body[:UNSIGNED_LEN]),
        signature=body[UNSIGNED_LEN:],
        zones=zones,
        product=None,
        not_before=nb or None,
        not_after=na or None,
        fields=(
            ("kid", str(kid)),
            ("token_id", token_id.hex()),
            ("ticket_id", ticket_id.hex()),
            ("event", str(event_id)),
            ("zones", zones_text(zones)),
            ("not_before", time_text(nb)),
            ("not_after", time_text(na)),
        ),
    )


def time_text(value: int) -> str:
    """A field's Unix time as ISO 8601 UTC, "-" for 0 (open-ended)."""
    if value == 0:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
