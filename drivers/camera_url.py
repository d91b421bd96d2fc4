"""Strict parsing of ``camera://`` and ``file://`` scanner URLs (syntax: see :mod:`drivers.camera`).

Every parameter is checked once, here: an unknown, repeated or malformed parameter raises
DriverError naming the URL, the parameter and what is expected. Nothing is opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from agent.errors import DriverError
from drivers.camera_frames import Roi
from drivers.camera_sources import FrameSource, V4L2Source, file_source
from drivers.decoders import DEFAULT_FORMATS, ENGINES, check_formats
from drivers.url_params import UrlParams

DEFAULT_HOLD_MS = 1500
DEFAULT_RETRY_MAX_S = 5.0
MAX_DOWNSCALE = 8

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


def _roi(p: UrlParams) -> Roi | None:
    raw = p.text("roi")
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) != 4 or not all(part.isascii() and part.isdigit() for part in parts):
        raise p.invalid("roi", "x,y,w,h in pixels (four integers)")
    x, y, w, h = (int(part) for part in parts)
    if w == 0 or h == 0:
        raise p.invalid("roi", "x,y,w,h with a width and height > 0")
    return Roi(x, y, w, h)


def _fourcc(p: UrlParams) -> str | None:
    raw = p.text("fourcc")
    if raw is not None and not _FOURCC.fullmatch(raw):
        raise p.invalid("fourcc", "four letters or digits, e.g. MJPG, YUYV, GREY")
    return raw


def _options(p: UrlParams, retry_max_s: float) -> CameraOptions:
    engine = p.choice("engine", "zxing", ENGINES)
    raw_formats = p.string("formats")
    try:
        formats = check_formats(
            engine, DEFAULT_FORMATS if raw_formats is None else raw_formats.split(",")
        )
    except DriverError as exc:
        raise p.error(f"formats: {exc}") from exc
    return CameraOptions(
        engine=engine,
        formats=formats,
        try_rotate=p.flag("rotate", True),
        roi=_roi(p),
        downscale=p.integer("downscale", 1, 1, MAX_DOWNSCALE),
        hold_ms=p.integer("hold_ms", DEFAULT_HOLD_MS, 0),
        retry_max_s=retry_max_s,
        source_name=p.string("source"),
    )


def _camera_source(p: UrlParams) -> V4L2Source:
    return V4L2Source(
        Path(p.device_path("camera:///dev/video0")),
        width=p.integer("width", None, 1),
        height=p.integer("height", None, 1),
        fps=p.number("fps", None, 0, lo_open=True),
        fourcc=_fourcc(p),
    )


def _file_source(p: UrlParams, base: Path | None) -> FrameSource:
    # file:///abs/path, or file://relative/path (taken from ``base``, the config file's folder).
    raw = p.decoded(p.path if p.netloc in ("", "localhost") else p.netloc + p.path)
    if not raw:
        raise p.error("expected a path, e.g. file:///srv/frames/ or file://demo.avi")
    target = Path(raw).expanduser()
    if not target.is_absolute() and base is not None:
        target = base / target
    fps, loop = p.number("fps", None, 0), p.flag("loop", False)
    return file_source(target, fps=fps, loop=loop, folder=raw.endswith("/"))


def parse(url: str, base: Path | None = None) -> tuple[FrameSource, CameraOptions]:
    """The frame source and options a ``camera://`` or ``file://`` URL describes.

    Raises DriverError for another scheme, a bad path or any unknown or malformed parameter.
    """
    p = UrlParams(url, "camera", "file")
    if p.scheme == "camera":
        source: FrameSource = _camera_source(p)
        retry_max_s = p.number("retry_max_s", DEFAULT_RETRY_MAX_S, 0, lo_open=True)
    else:
        source = _file_source(p, base)
        retry_max_s = DEFAULT_RETRY_MAX_S
    options = _options(p, retry_max_s)
    p.finish()
    return source, options
