"""Ticket files: what `gate-agent issue` and `transfer` write for each ticket.

``ticket-NNNN.txt`` (the text and a newline) and ``ticket-NNNN.png`` (its QR code), numbered on
after the tickets already in the folder, so issued tickets are never replaced. A rotating ticket
(``--device-key``) is its static part (``TK2S:`` text) alone: no image, since a gate admits only
the codes the holder's device makes from it.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from agent.errors import IssuerError
from agent.issuer import TicketSigner

log = logging.getLogger(__name__)

# QR parameters for issued tickets: TK1 text is 166 QR-alphanumeric characters, version 7 at M.
QR_ERROR = "M"
QR_SCALE = 6
QR_BORDER = 4


def issue_files(
    issuer: TicketSigner,
    out: Path,
    *,
    event: int,
    zones: Iterable[int] | None = None,
    not_before: int | None = None,
    not_after: int | None = None,
    count: int = 1,
    device_key: bytes | None = None,
) -> list[Path]:
    """Issue ``count`` tickets into ``out`` as ticket-0001.txt (text + newline) and .png (QR).

    ``out`` is created when missing; numbering continues after the tickets already there, so
    issued tickets are never replaced. With ``device_key`` (a P-256 public key, 33 bytes SEC1
    compressed) the tickets are rotating ones bound to it, written without an image. Returns the
    .txt paths. Raises IssuerError when ``count`` is below 1, a ticket value is invalid (before any
    file is written), or the files cannot be written.
    """
    if count < 1:
        raise IssuerError(f"count must be >= 1, got {count}")
    zone_list = None if zones is None else list(zones)
    nb, na = not_before, not_after
    texts = [
        issuer.ticket(event=event, zones=zone_list, not_before=nb, not_after=na)
        if device_key is None
        else issuer.rotating_ticket(
            device_key, event=event, zones=zone_list, not_before=nb, not_after=na
        )
        for _ in range(count)
    ]
    written = write_tickets(out, texts, images=device_key is None)
    log.info("issued %d tickets for event %d into %s", len(written), event, out)
    return written


def write_tickets(out: Path, texts: list[str], *, images: bool = True) -> list[Path]:
    """Write each text as ``ticket-NNNN.txt`` (text + newline) and ``.png`` (:func:`qr_png`) in
    ``out`` (created when missing), numbering on after the tickets already there, so issued
    tickets are never replaced. Returns the .txt paths; raises IssuerError when unwritable."""
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        # Numbering continues after tickets already in ``out``: issued tickets are never replaced.
        first = 1 + max(
            (int(p.stem[7:]) for p in out.glob("ticket-*.txt") if p.stem[7:].isdigit()), default=0
        )
        for n, text in enumerate(texts, start=first):
            name = f"ticket-{n:04d}"
            if images:
                (out / f"{name}.png").write_bytes(qr_png(text))
            (out / f"{name}.txt").write_text(text + "\n", encoding="ascii")
            written.append(out / f"{name}.txt")
    except OSError as exc:
        raise IssuerError(f"{out}: cannot write tickets: {exc}") from exc
    return written


def qr_png(text: str) -> bytes:
    """The QR code of ``text`` as a 1-bit grayscale PNG: error correction M, :data:`QR_SCALE`
    pixels per module, :data:`QR_BORDER` modules of quiet zone. A TK1 text (QR alphanumeric
    characters only) comes out as version 7.

    zxing-cpp's encoder and a PNG written here (one zlib stream of bit-packed rows) take about
    1.5 ms where segno took 20-50 ms: 100,000 tickets take minutes, not hours.
    """
    import numpy as np  # only the issuing path needs them
    import zxingcpp

    code = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level=QR_ERROR)
    dark = np.asarray(code.to_image(scale=1, add_quiet_zones=False)) < 128
    light = np.pad(~dark, QR_BORDER, constant_values=True)
    pixels = np.repeat(np.repeat(light, QR_SCALE, axis=0), QR_SCALE, axis=1)
    rows = np.packbits(pixels, axis=1)  # 1 bit per pixel, white = 1
    height, width = pixels.shape
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + (_chunk(b"IEND", b""))
    )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
