"""Barcode decoder engines behind one small interface, for the camera scanner.

Engines (``engine=`` in a camera URL):

``zxing`` (default)
    zxing-cpp. Asked only for the configured formats (all formats cost 11-13x), inversion try
    always on (dark-mode phone screens), rotation try as configured. Reads QR, Micro QR, rMQR,
    Aztec, PDF417, DataMatrix and Code 128. Text is the payload as encoded (``TextMode.Plain``),
    like a serial scanner sends it: no human-readable rewriting of GS1 data or control bytes.
``pyzbar``
    ZBar through pyzbar, the project card's engine. QR and Code 128 only; always given a single
    8-bit plane (on a colour array pyzbar silently reads one channel).

Format names (``formats=``): ``qr`` (QR Code, models 1 and 2), ``microqr``, ``rmqr``, ``aztec``,
``pdf417`` (with compact and micro PDF417), ``datamatrix``, ``code128``. The default is ``qr``.

Both libraries release the GIL while decoding, so decoding belongs on a worker thread; nothing here
touches an event loop. The libraries are imported when a decoder is built, not at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from agent.errors import DriverError

ENGINES = ("zxing", "pyzbar")
DEFAULT_FORMATS = ("qr",)

# Our format name -> zxing-cpp BarcodeFormat member names it covers (zxing-cpp 3: QR models and
# Aztec codes are variants of a family; 2.x has only the family, see _ZXING_2X).
_ZXING_FORMATS: dict[str, tuple[str, ...]] = {
    "qr": ("QRCodeModel1", "QRCodeModel2"),
    "microqr": ("MicroQRCode",),
    "rmqr": ("RMQRCode",),
    "aztec": ("AztecCode",),
    "pdf417": ("PDF417",),
    "datamatrix": ("DataMatrix",),
    "code128": ("Code128",),
}
_ZXING_2X = {"qr": ("QRCode",), "aztec": ("Aztec",)}
# zxing-cpp reports the family (QRCode, Aztec...) or the variant; both map back to our name.
_ZXING_NAMES: dict[str, str] = {
    "QRCode": "qr",
    "QRCodeModel1": "qr",
    "QRCodeModel2": "qr",
    "MicroQRCode": "microqr",
    "RMQRCode": "rmqr",
    "Aztec": "aztec",
    "AztecCode": "aztec",
    "PDF417": "pdf417",
    "CompactPDF417": "pdf417",
    "MicroPDF417": "pdf417",
    "DataMatrix": "datamatrix",
    "Code128": "code128",
}
# Our format name -> pyzbar ZBarSymbol member name. ZBar reads no Aztec, PDF417 or DataMatrix.
_ZBAR_FORMATS: dict[str, str] = {"qr": "QRCODE", "code128": "CODE128"}
_ZBAR_NAMES = {v: k for k, v in _ZBAR_FORMATS.items()}

Point = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Decoded:
    """One code found in a frame.

    ``points`` are the four corners (top-left, top-right, bottom-right, bottom-left as the engine
    saw them) in the pixel coordinates of the array given to :meth:`Decoder.decode`. ``raw`` is
    the payload's bytes. Text and bytes are bearer credentials: never in a repr or a log.
    """

    text: str = field(repr=False)
    symbology: str
    points: tuple[Point, Point, Point, Point]
    raw: bytes = field(default=b"", repr=False)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """The axis-aligned box around :attr:`points` as ``(x, y, width, height)``."""
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


@runtime_checkable
class Decoder(Protocol):
    """Finds codes in one 8-bit grayscale frame. Blocking; call it from a worker thread."""

    @property
    def engine(self) -> str: ...

    @property
    def formats(self) -> tuple[str, ...]: ...

    def decode(self, gray: NDArray[np.uint8]) -> list[Decoded]:
        """Every code of the configured formats in ``gray`` (2-D uint8).

        Raises ValueError for an array that is not 2-D uint8, DriverError when the library fails.
        """
        ...


def check_formats(engine: str, formats: Sequence[str]) -> tuple[str, ...]:
    """Validate an engine name and format names without importing any library.

    Returns the formats, de-duplicated in the given order. Raises DriverError naming the engine or
    the format and what is accepted.
    """
    if engine not in ENGINES:
        raise DriverError(
            f"unknown decoder engine {engine!r} (expected one of: {', '.join(ENGINES)})"
        )
    table: dict[str, Any] = _ZXING_FORMATS if engine == "zxing" else _ZBAR_FORMATS
    wanted = tuple(dict.fromkeys(f.strip().lower() for f in formats))
    if not wanted or "" in wanted:
        raise DriverError(
            f"decoder {engine}: formats must list at least one of: {', '.join(table)}"
        )
    for name in wanted:
        if name not in table:
            raise DriverError(
                f"decoder {engine}: unsupported format {name!r} (supported: {', '.join(table)})"
            )
    return wanted


def supported_formats(engine: str) -> tuple[str, ...]:
    """Every format name ``engine`` can read (for one-off decoding, where speed does not matter);
    raises DriverError for an unknown engine."""
    check_formats(engine, DEFAULT_FORMATS)
    return tuple(_ZXING_FORMATS if engine == "zxing" else _ZBAR_FORMATS)


def _check_gray(gray: NDArray[np.uint8]) -> None:
    if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8:
        shape = getattr(gray, "shape", None)
        dtype = getattr(gray, "dtype", type(gray).__name__)
        raise ValueError(f"decoder needs a 2-D uint8 grayscale array, got {dtype} {shape}")


class ZxingDecoder:
    """zxing-cpp, restricted to ``formats``; inversion try always on."""

    engine = "zxing"

    def __init__(
        self, formats: Sequence[str] = DEFAULT_FORMATS, *, try_rotate: bool = True
    ) -> None:
        """Raises DriverError for an unknown format or when zxing-cpp is not installed."""
        self._formats = check_formats("zxing", formats)
        try:
            import zxingcpp
        except ImportError as exc:
            raise DriverError("decoder zxing: the zxing-cpp package is not installed") from exc
        self._zx = zxingcpp
        members = []
        for name in self._formats:
            wanted = _ZXING_FORMATS[name]
            if not all(hasattr(zxingcpp.BarcodeFormat, m) for m in wanted):
                wanted = _ZXING_2X.get(name, wanted)
            members += [getattr(zxingcpp.BarcodeFormat, m) for m in wanted]
        self._wanted = zxingcpp.BarcodeFormats(members)
        self.try_rotate = try_rotate

    @property
    def formats(self) -> tuple[str, ...]:
        return self._formats

    def decode(self, gray: NDArray[np.uint8]) -> list[Decoded]:
        """See :meth:`Decoder.decode`."""
        _check_gray(gray)
        try:
            found = self._zx.read_barcodes(
                gray,
                formats=self._wanted,
                try_rotate=self.try_rotate,
                try_invert=True,
                text_mode=self._zx.TextMode.Plain,
            )
        except (ValueError, RuntimeError, TypeError) as exc:
            raise DriverError(f"decoder zxing failed on a {gray.shape} frame: {exc}") from exc
        out = []
        for code in found:
            pos = code.position
            points = (
                (pos.top_left.x, pos.top_left.y),
                (pos.top_right.x, pos.top_right.y),
                (pos.bottom_right.x, pos.bottom_right.y),
                (pos.bottom_left.x, pos.bottom_left.y),
            )
            name = _ZXING_NAMES.get(code.format.name, code.format.name.lower())
            out.append(Decoded(code.text, name, points, bytes(code.bytes)))
        return out


class PyzbarDecoder:
    """ZBar through pyzbar, restricted to ``formats`` (QR and Code 128 only)."""

    engine = "pyzbar"

    def __init__(self, formats: Sequence[str] = DEFAULT_FORMATS) -> None:
        """Raises DriverError for a format ZBar cannot read or when pyzbar/libzbar is missing."""
        self._formats = check_formats("pyzbar", formats)
        try:
            from pyzbar import pyzbar
        except (ImportError, OSError) as exc:  # OSError: the package is there, libzbar is not
            raise DriverError(f"decoder pyzbar: cannot load pyzbar/libzbar: {exc}") from exc
        self._zbar = pyzbar
        self._symbols = [getattr(pyzbar.ZBarSymbol, _ZBAR_FORMATS[f]) for f in self._formats]

    @property
    def formats(self) -> tuple[str, ...]:
        return self._formats

    def decode(self, gray: NDArray[np.uint8]) -> list[Decoded]:
        """See :meth:`Decoder.decode`."""
        _check_gray(gray)
        height, width = gray.shape
        # The (bytes, width, height) form: exactly one 8-bit plane, no guessing from the array.
        image = (np.ascontiguousarray(gray).tobytes(), width, height)
        try:
            found = self._zbar.decode(image, symbols=self._symbols)
        except self._zbar.PyZbarError as exc:
            raise DriverError(f"decoder pyzbar failed on a {gray.shape} frame: {exc}") from exc
        out = []
        for code in found:
            x, y, w, h = code.rect
            points = ((x, y), (x + w, y), (x + w, y + h), (x, y + h))
            text = code.data.decode("utf-8", "replace")
            out.append(
                Decoded(text, _ZBAR_NAMES.get(code.type, code.type.lower()), points, code.data)
            )
        return out


def make_decoder(
    name: str, formats: Sequence[str] = DEFAULT_FORMATS, *, try_rotate: bool = True
) -> Decoder:
    """Build the decoder engine ``name`` (``zxing`` or ``pyzbar``) for ``formats``.

    ``try_rotate`` applies to zxing (ZBar has no such switch). Raises DriverError for an unknown
    engine, an unsupported format or a missing library.
    """
    check_formats(name, formats)
    if name == "zxing":
        return ZxingDecoder(formats, try_rotate=try_rotate)
    return PyzbarDecoder(formats)
