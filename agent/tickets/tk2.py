"""TK2, the rotating (screenshot-proof) native ticket: an issuer-signed static part that binds the
holder device's P-256 public key, plus a short code the holder's device signs with the time.

A gate verifies both signatures offline with public keys only: no shared secret anywhere can mint
a code. The static part alone is what the issuer hands to the holder's wallet (``TK2S:`` text);
the wallet shows ``TK2:`` codes, each the static part followed by a fresh dynamic part.

Layout, big-endian, 192 bytes in all (292 characters with the prefix: QR version 10-M in
alphanumeric mode holds 311)::

    static, 124 bytes:
      ver u8 = 1 | kid u32 | ticket_id 8B | event_id u32 | zones u16 | not_before u32 |
      not_after u32 | device_key 33B (SEC1 compressed P-256 point) | issuer_sig 64B
    dynamic, 68 bytes:
      code_time u32 (Unix seconds, the holder device's clock) | device_sig 64B (P-256 r || s)

``issuer_sig`` (Ed25519 or P-256, chosen by the trust entry of ``kid``, never by the text) covers
``STATIC_TAG + static[:60]``. ``device_sig`` (P-256 ECDSA over SHA-256, low-S) covers
``CODE_TAG + static + code_time``, so a code is bound to this ticket: a device key certified for
two tickets cannot move a code from one to the other. Every length is exact and ``ver`` must be 1.
``ticket_id`` is the same admission right as TK1's (one namespace: ``ticket_ref`` ``tk1:<hex>``),
so one ticket id issued in both formats still enters once. There is no token id: the revocation
key is a 16-byte BLAKE2b of the whole static part, so every issuance (a transfer binds a new
device key) has its own, and `gate-agent revoke` takes the code or the static text.

Parsing is strict and never verifies signatures: :mod:`agent.trust` checks the issuer's and
:func:`device_signature_ok` the device's.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from agent import keys
from agent.errors import TicketFormatError
from agent.model import HolderCode, Ticket, zones_text
from agent.tickets import STATIC_PART_PREFIX, base45
from agent.tickets.tk1 import ticket_ref, time_text

PREFIX = "TK2:"
STATIC_PREFIX = STATIC_PART_PREFIX
STATIC_TAG = b"gate-agent/TK2/static\0"
CODE_TAG = b"gate-agent/TK2/code\0"
VERSION = 1
SIG_LEN = 64
KEY_LEN = 33
_FIELDS = struct.Struct(">BI8sIHII")
FIELDS_LEN = _FIELDS.size + KEY_LEN  # what the issuer signs: 60 bytes
STATIC_LEN = FIELDS_LEN + SIG_LEN  # 124
_CODE_TIME = struct.Struct(">I")
DYNAMIC_LEN = _CODE_TIME.size + SIG_LEN  # 68
BODY_LEN = STATIC_LEN + DYNAMIC_LEN  # 192
TEXT_LEN = len(PREFIX) + BODY_LEN // 2 * 3  # 292
STATIC_TEXT_LEN = len(STATIC_PREFIX) + STATIC_LEN // 2 * 3  # 191

_U16, _U32 = 0xFFFF, 0xFFFF_FFFF


@dataclass(frozen=True, slots=True)
class TK2Fields:
    """The issuer-signed fields of a TK2 ticket. Times are Unix seconds, 0 meaning open-ended.

    ``device_key`` is the holder device's P-256 public key, SEC1 compressed (33 bytes).
    Raises ValueError from the constructor when a value does not fit its field.
    """

    kid: int
    ticket_id: bytes
    event_id: int
    zones: int
    not_before: int
    not_after: int
    device_key: bytes

    def __post_init__(self) -> None:
        for name, value, top in (
            ("kid", self.kid, _U32),
            ("event_id", self.event_id, _U32),
            ("zones", self.zones, _U16),
            ("not_before", self.not_before, _U32),
            ("not_after", self.not_after, _U32),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise ValueError(f"{name} must be an int in 0..{top}, got {value!r}")
        for name, raw, size in (
            ("ticket_id", self.ticket_id, 8),
            ("device_key", self.device_key, KEY_LEN),
        ):
            if not isinstance(raw, bytes) or len(raw) != size:
                raise ValueError(f"{name} must be {size} bytes")
        device_public_key(self.device_key)  # a point on the curve, or ValueError


def device_public_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 key of a 33-byte SEC1 compressed point; raises ValueError when it is none."""
    if len(raw) != KEY_LEN or raw[0] not in (2, 3):
        raise ValueError("device key must be a 33-byte compressed P-256 point")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)


def compressed(key: ec.EllipticCurvePublicKey) -> bytes:
    """``key`` as the 33 bytes TK2 carries."""
    from cryptography.hazmat.primitives import serialization

    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"device key must be P-256, not {key.curve.name}")
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def signed_fields(f: TK2Fields) -> bytes:
    """The 60 bytes the issuer's signature covers (after :data:`STATIC_TAG`)."""
    packed = _FIELDS.pack(
        VERSION, f.kid, f.ticket_id, f.event_id, f.zones, f.not_before, f.not_after
    )
    return packed + f.device_key


def sign_static(f: TK2Fields, issuer_key: keys.PrivateKey) -> str:
    """The static part as the issuer hands it to the holder: ``TK2S:`` + base45."""
    body = signed_fields(f)
    return STATIC_PREFIX + base45.encode(body + keys.sign(issuer_key, STATIC_TAG + body))


def static_bytes(static_text: str) -> bytes:
    """The 124 bytes of a ``TK2S:`` text; raises TicketFormatError (never echoing the text)."""
    text = static_text.strip()
    if len(text) != STATIC_TEXT_LEN or not text.startswith(STATIC_PREFIX):
        raise TicketFormatError(
            f"TK2 static part: expected {STATIC_TEXT_LEN} characters starting {STATIC_PREFIX!r}"
        )
    raw = base45.decode(text[len(STATIC_PREFIX) :])
    if len(raw) != STATIC_LEN:
        raise TicketFormatError(f"TK2 static part: expected {STATIC_LEN} bytes, got {len(raw)}")
    return raw


def code_message(static: bytes, code_time: int) -> bytes:
    """What the holder device signs for a code shown at ``code_time``."""
    return CODE_TAG + static + _CODE_TIME.pack(code_time)


def make_code(static_text: str, device_key: ec.EllipticCurvePrivateKey, code_time: int) -> str:
    """The ``TK2:`` text a holder device shows at ``code_time`` (Unix seconds)."""
    if not 0 <= code_time <= _U32:
        raise ValueError(f"code time must be in 0..{_U32}, got {code_time}")
    static = static_bytes(static_text)
    if static[FIELDS_LEN - KEY_LEN : FIELDS_LEN] != compressed(device_key.public_key()):
        raise ValueError("this device key is not the one the ticket is bound to")
    signature = keys.sign(device_key, code_message(static, code_time))
    return PREFIX + base45.encode(static + _CODE_TIME.pack(code_time) + signature)


def parse(text: str) -> Ticket:
    """Parse a TK2 code into a :class:`Ticket` (with its :class:`HolderCode`), verifying nothing.

    Raises TicketFormatError when the length is not exactly TEXT_LEN (checked before decoding),
    the prefix is wrong, the Base45 is invalid, the body is not 192 bytes, the version is not 1,
    or the device key is not a compressed P-256 point.
    """
    if len(text) != TEXT_LEN:
        raise TicketFormatError(f"TK2: expected {TEXT_LEN} characters, got {len(text)}")
    if not text.startswith(PREFIX):
        raise TicketFormatError(f"TK2: text does not start with {PREFIX!r}")
    body = base45.decode(text[len(PREFIX) :])
    if len(body) != BODY_LEN:
        raise TicketFormatError(f"TK2: body must be {BODY_LEN} bytes, got {len(body)}")
    ver, kid, ticket_id, event_id, zones, nb, na = _FIELDS.unpack_from(body)
    if ver != VERSION:
        raise TicketFormatError(f"TK2: unsupported version {ver}")
    device_key = body[_FIELDS.size : FIELDS_LEN]
    if device_key[0] not in (2, 3):
        raise TicketFormatError("TK2: device key is not a compressed P-256 point")
    static = body[:STATIC_LEN]
    revocation_key = revocation_key_of(static)
    (code_time,) = _CODE_TIME.unpack_from(body, STATIC_LEN)
    return Ticket(
        fmt="tk2",
        kid=str(kid),
        revocation_key=revocation_key,
        ticket_ref=static_ticket_ref(static),
        event=str(event_id),
        signed_data=STATIC_TAG + body[:FIELDS_LEN],
        signature=body[FIELDS_LEN:STATIC_LEN],
        zones=zones,
        not_before=nb or None,
        not_after=na or None,
        holder=HolderCode(
            device_key=device_key,
            code_time=code_time,
            signed_data=code_message(static, code_time),
            signature=body[STATIC_LEN + _CODE_TIME.size :],
        ),
        fields=(
            ("kid", str(kid)),
            ("rev_key", revocation_key.hex()),
            ("ticket_id", ticket_id.hex()),
            ("event", str(event_id)),
            ("zones", zones_text(zones)),
            ("not_before", time_text(nb)),
            ("not_after", time_text(na)),
            ("device_key", device_key.hex()),
            ("code_time", time_text(code_time)),
        ),
    )


def static_ticket_ref(static: bytes) -> str:
    """The ``ticket_ref`` of the rotating ticket whose static part is ``static`` (its codes'
    own: the admission right is the ticket id)."""
    ticket_id = _FIELDS.unpack_from(static)[2]
    return ticket_ref(bytes(ticket_id))


def revocation_key_of(static: bytes) -> bytes:
    """The 16-byte key a rotating ticket is revoked under: BLAKE2b of its whole static part."""
    return hashlib.blake2b(static, digest_size=16, person=b"gate-agent/TK2").digest()


def device_signature_ok(code: HolderCode) -> bool:
    """Whether the holder device signed this code (P-256, low-S); never raises for bad input."""
    try:
        key = device_public_key(code.device_key)
    except ValueError:  # not a point on the curve
        return False
    return keys.verify(key, code.signature, code.signed_data)
