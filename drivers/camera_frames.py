"""Frames as captured, and the work that turns one into the grayscale array a decoder reads.

Blocking and CPU-bound: runs on the camera's decode thread. OpenCV is imported by the functions that
need it, so importing this module pulls in nothing but NumPy.

The gray plane is taken straight from the capture where it exists (the Y plane of YUYV, UYVY and
YUV 4:2:0, or a JPEG decoded directly to gray: converting MJPEG to BGR costs more than the decode).
JPEG and image files decoded with a downscale of 2, 4 or 8 use libjpeg's reduced-size decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from agent.errors import DriverError

Layout = Literal["gray", "bgr", "rgb", "yuyv", "uyvy", "yuv420", "encoded"]

# V4L2 pixel formats (FOURCC) -> how the raw buffer from OpenCV (CAP_PROP_CONVERT_RGB=0) is laid out.
FOURCC_LAYOUTS: dict[str, Layout] = {
    "MJPG": "encoded",
    "JPEG": "encoded",
    "YUYV": "yuyv",
    "YUY2": "yuyv",
    "UYVY": "uyvy",
    "GREY": "gray",
    "Y800": "gray",
    "YU12": "yuv420",
    "I420": "yuv420",
    "YV12": "yuv420",
    "NV12": "yuv420",
    "NV21": "yuv420",
    "BGR3": "bgr",
    "RGB3": "rgb",
}

_REDUCED = (2, 4, 8)


@dataclass(frozen=True, slots=True)
class Roi:
    """A region of interest in full-frame pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if self.x < 0 or self.y < 0 or self.w <= 0 or self.h <= 0:
            raise DriverError(f"roi {self}: x and y must be >= 0, w and h > 0")

    def inside(self, width: int, height: int) -> bool:
        """True when the whole region lies within a ``width`` x ``height`` frame."""
        return self.x + self.w <= width and self.y + self.h <= height

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"


@dataclass(slots=True)
class RawFrame:
    """One frame as the source delivered it.

    ``mono_ns`` is when it was captured (``time.monotonic_ns``); ``view_ns`` is the source's clock
    for "how long has a code been out of view" (the capture time for a camera, the media time for a
    file, so a file played faster than real time still holds codes for the right frame count).
    """

    data: NDArray[np.uint8]
    layout: Layout
    mono_ns: int
    view_ns: int
    index: int


def fourcc_text(value: float) -> str:
    """OpenCV's numeric CAP_PROP_FOURCC as its four characters ("MJPG")."""
    code = int(value) & 0xFFFFFFFF
    return code.to_bytes(4, "little").decode("latin-1")


def _encoded_gray(data: NDArray[np.uint8], reduce: int) -> NDArray[np.uint8] | None:
    import cv2

    flag = {
        1: cv2.IMREAD_GRAYSCALE,
        2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
        4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
        8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
    }[reduce]
    buf = data.reshape(-1)
    if buf.size == 0:
        return None
    try:
        gray = cv2.imdecode(buf, flag)
    except cv2.error:
        return None
    return None if gray is None else np.asarray(gray, dtype=np.uint8)


def _bad(frame: RawFrame) -> DriverError:
    shape = "x".join(str(n) for n in frame.data.shape)
    return DriverError(f"frame {frame.index}: a {frame.layout} frame cannot be {shape}")


def _plane(frame: RawFrame) -> NDArray[np.uint8]:
    """The gray plane of an uncompressed frame (a view where the layout allows)."""
    data, layout = frame.data, frame.layout
    if layout == "gray" and data.ndim == 2:
        return data
    if layout in ("yuyv", "uyvy"):
        luma = 0 if layout == "yuyv" else 1
        if data.ndim == 3 and data.shape[2] == 2:
            return data[:, :, luma]
        if data.ndim == 2 and data.shape[1] % 2 == 0:  # packed rows of 2 bytes per pixel
            return data[:, luma::2]
    if layout == "yuv420" and data.ndim == 2 and data.shape[0] % 3 == 0:
        return data[: data.shape[0] * 2 // 3]  # the Y plane comes first, then chroma
    if layout in ("bgr", "rgb") and data.ndim == 3 and data.shape[2] in (3, 4):
        import cv2

        code = {
            ("bgr", 3): cv2.COLOR_BGR2GRAY,
            ("bgr", 4): cv2.COLOR_BGRA2GRAY,
            ("rgb", 3): cv2.COLOR_RGB2GRAY,
            ("rgb", 4): cv2.COLOR_RGBA2GRAY,
        }[(layout, data.shape[2])]
        return np.asarray(cv2.cvtColor(data, code), dtype=np.uint8)
    raise _bad(frame)


def _crop(gray: NDArray[np.uint8], roi: Roi | None, scale: int) -> NDArray[np.uint8]:
    if roi is None:
        return gray
    x, y = roi.x // scale, roi.y // scale
    return gray[y : y + max(1, roi.h // scale), x : x + max(1, roi.w // scale)]


def prepare(
    frame: RawFrame, roi: Roi | None = None, downscale: int = 1
) -> NDArray[np.uint8] | None:
    """The 8-bit gray array to decode: gray plane, then ``roi`` crop, then ``downscale``.

    ``roi`` is in full-frame pixels and is clipped to the frame. Returns None for a frame that
    carries nothing to decode (a corrupt JPEG, or a region entirely outside this frame). Raises
    DriverError when the buffer's shape does not fit its layout.
    """
    if frame.data.dtype != np.uint8:
        raise DriverError(f"frame {frame.index}: expected 8-bit samples, got {frame.data.dtype}")
    if frame.layout == "encoded":
        reduce = downscale if downscale in _REDUCED else 1
        decoded = _encoded_gray(frame.data, reduce)
        if decoded is None:
            return None
        gray, scale = _crop(decoded, roi, reduce), reduce
    else:
        gray, scale = _crop(_plane(frame), roi, 1), 1
    if gray.size == 0:
        return None
    factor = downscale // scale
    if factor > 1:
        import cv2

        height, width = gray.shape
        size = (max(1, width // factor), max(1, height // factor))
        gray = np.asarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return gray
