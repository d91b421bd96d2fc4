"""Strict parsing of ``camera://`` and ``file://`` scanner URLs (syntax: see :mod:`drivers.camera`).

Every parameter is checked once, here: an unknown, repeated or malformed parameter raises
DriverError naming the URL, the parameter and what is expected. Nothing is opened.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from agent.errors import DriverError
from drivers.camera_frames import Roi
from drivers.camera_sources import FrameSource, V4L2Source, file_source
from drivers.decoders import DEFAULT_FORMATS, ENGINES, check_formats

DEFAULT_HOLD_MS = 1500
DEFAULT_RETRY_MAX_S = 5.0
MAX_DOWNSCALE = 8

COMMON = ("engine", "formats", "roi", "downscale", "hold_ms", "rotate", "source")
CAMERA_PARAMS = (*COMMON, "width", "height", "fps", "fourcc", "retry_max_s")
FILE_PARAMS = (*COMMON, "fps", "loop")

_FOURCC = re.compile(r"[A-Za-z0-9 ]{4}")


@dataclass(frozen=True, slots=True)
class CameraOptions:
    """Everything about a camera scanner except where its frames come from."""

    engine: str = "zxing"
    formats: tuple[str, ...] = DEFAULT_FORMATS
    try_rotate: bool = True
    roi: Roi | None = None
    downscale: int = 1
    hold_ms: int = DEFAULT_HOLD_MS
    retry_max_s: float = DEFAULT_RETRY_MAX_S
    source_name: str | None = None


class _Query:
    """The query of one URL; each getter consumes its key, :meth:`done` refuses leftovers."""

    def __init__(self, url: str, query: str, allowed: tuple[str, ...]) -> None:
        self.url = url
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError as exc:
            raise DriverError(f"{url}: malformed query (expected name=value&...): {exc}") from exc
        self.values: dict[str, str] = {}
        for key, value in pairs:
            if key in self.values:
                raise DriverError(f"{url}: parameter {key} given twice")
            self.values[key] = value
        unknown = sorted(set(self.values) - set(allowed))
        if unknown:
            raise DriverError(
                f"{url}: unknown parameter {', '.join(unknown)} (valid: {', '.join(allowed)})"
            )

    def fail(self, key: str, expected: str) -> DriverError:
        return DriverError(f"{self.url}: {key}={self.values.get(key, '')!r}: expected {expected}")

    def integer(self, key: str, lo: int, hi: int | None = None) -> int | None:
        raw = self.values.get(key)
        if raw is None:
            return None
        expected = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        if not re.fullmatch(r"\d+", raw):
            raise self.fail(key, expected)
        value = int(raw)
        if value < lo or (hi is not None and value > hi):
            raise self.fail(key, expected)
        return value

    def number(self, key: str, *, zero_ok: bool) -> float | None:
        raw = self.values.get(key)
        if raw is None:
            return None
        expected = "a number >= 0" if zero_ok else "a number > 0"
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(key, expected) from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise self.fail(key, expected)
        return value

    def flag(self, key: str, default: bool) -> bool:
        raw = self.values.get(key)
        if raw is None:
            return default
        if raw not in ("0", "1"):
            raise self.fail(key, "0 or 1")
        return raw == "1"

    def text(self, key: str) -> str | None:
        raw = self.values.get(key)
        if raw is not None and not raw.strip():
            raise self.fail(key, "a non-empty value")
        return raw

    def roi(self) -> Roi | None:
        raw = self.values.get("roi")
        if raw is None:
            return None
        parts = raw.split(",")
        if len(parts) != 4 or not all(re.fullmatch(r"\d+", p) for p in parts):
            raise self.fail("roi", "x,y,w,h in pixels (four integers)")
        x, y, w, h = (int(p) for p in parts)
        if w == 0 or h == 0:
            raise self.fail("roi", "a width and height > 0")
        return Roi(x, y, w, h)

    def fourcc(self) -> str | None:
        raw = self.values.get("fourcc")
        if raw is not None and not _FOURCC.fullmatch(raw):
            raise self.fail("fourcc", "four letters or digits, e.g. MJPG, YUYV, GREY")
        return raw


def _options(q: _Query) -> CameraOptions:
    engine = q.values.get("engine", "zxing")
    if engine not in ENGINES:
        raise q.fail("engine", " or ".join(ENGINES))
    raw_formats = q.text("formats")
    try:
        formats = check_formats(
            engine, DEFAULT_FORMATS if raw_formats is None else raw_formats.split(",")
        )
    except DriverError as exc:
        raise DriverError(f"{q.url}: formats: {exc}") from exc
    hold = q.integer("hold_ms", 0)
    retry = q.number("retry_max_s", zero_ok=False)
    return CameraOptions(
        engine=engine,
        formats=formats,
        try_rotate=q.flag("rotate", True),
        roi=q.roi(),
        downscale=q.integer("downscale", 1, MAX_DOWNSCALE) or 1,
        hold_ms=DEFAULT_HOLD_MS if hold is None else hold,
        retry_max_s=DEFAULT_RETRY_MAX_S if retry is None else retry,
        source_name=q.text("source"),
    )


def _camera_source(url: str, netloc: str, path: str, q: _Query) -> V4L2Source:
    if netloc or not path.startswith("/"):
        raise DriverError(f"{url}: expected an absolute device path, e.g. camera:///dev/video0")
    return V4L2Source(
        Path(unquote(path)),
        width=q.integer("width", 1),
        height=q.integer("height", 1),
        fps=q.number("fps", zero_ok=False),
        fourcc=q.fourcc(),
    )


def _file_source(url: str, netloc: str, path: str, q: _Query, base: Path | None) -> FrameSource:
    # file:///abs/path, or file://relative/path (taken from ``base``, the config file's folder).
    raw = unquote(path if netloc in ("", "localhost") else netloc + path)
    if not raw:
        raise DriverError(f"{url}: expected a path, e.g. file:///srv/frames/ or file://demo.avi")
    target = Path(raw).expanduser()
    if not target.is_absolute() and base is not None:
        target = base / target
    fps, loop = q.number("fps", zero_ok=True), q.flag("loop", False)
    return file_source(target, fps=fps, loop=loop, folder=raw.endswith("/"))


def parse(url: str, base: Path | None = None) -> tuple[FrameSource, CameraOptions]:
    """The frame source and options a ``camera://`` or ``file://`` URL describes.

    Raises DriverError for another scheme, a bad path or any unknown or malformed parameter.
    """
    parts = urlsplit(url)
    if parts.fragment:
        raise DriverError(f"{url}: unexpected #fragment")
    if parts.scheme == "camera":
        q = _Query(url, parts.query, CAMERA_PARAMS)
        source: FrameSource = _camera_source(url, parts.netloc, parts.path, q)
    elif parts.scheme == "file":
        q = _Query(url, parts.query, FILE_PARAMS)
        source = _file_source(url, parts.netloc, parts.path, q, base)
    else:
        raise DriverError(f"{url}: not a camera:// or file:// URL")
    return source, _options(q)
