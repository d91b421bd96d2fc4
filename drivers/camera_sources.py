"""Where camera frames come from: a V4L2 device, a video file, image files, or arrays in memory.

A source is blocking and is driven by one thread (the camera's capture thread): ``open`` then
``read`` until it returns None (a finite source ended) or raises DriverError (a device fault), then
``close``. OpenCV is imported inside ``open``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from agent.errors import DriverError
from drivers import MAX_IMAGE_PIXELS
from drivers.camera_frames import FOURCC_LAYOUTS, Layout, RawFrame, fourcc_text

log = logging.getLogger(__name__)

# The most bytes an image file of MAX_IMAGE_PIXELS pixels can take (RGBA, uncompressed, with room
# for its headers): a file past it is no image the decoder would take, and is not read at all.
MAX_IMAGE_BYTES = 4 * MAX_IMAGE_PIXELS + 1_000_000

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".pgm", ".ppm", ".tif", ".tiff"}
)
DEFAULT_FILE_FPS = 30.0  # the media clock of image files, and of a video that does not say
READ_TIMEOUT_MS = 2000  # a V4L2 read that takes longer counts as a lost camera

_VIDEO_NODE = re.compile(r"/dev/video(\d+)")


class FrameSource(Protocol):
    """A blocking frame producer, driven by the camera's capture thread.

    ``live`` sources are devices: a read error means the device was lost and is reopened with
    backoff. Others are finite: ``read`` returns None at the end. ``pace_s`` is the interval the
    capture thread keeps between frames (0: a live source paces itself, a finite one is played
    as fast as the decoder takes its frames, none dropped).
    """

    name: str
    live: bool
    pace_s: float

    def open(self) -> tuple[int, int] | None:
        """Open (or reopen) the source; returns (width, height) when known. Raises DriverError."""
        ...

    def read(self) -> RawFrame | None:
        """The next frame; None at the end of a finite source. Raises DriverError on a fault."""
        ...

    def close(self) -> None:
        """Release the device or file; idempotent."""
        ...


def _fourcc_code(text: str) -> int:
    a, b, c, d = (ord(ch) for ch in text)
    return a | b << 8 | c << 16 | d << 24


class V4L2Source:
    """A V4L2 camera through OpenCV, giving raw buffers so the gray plane is taken without a
    colour conversion. ``path`` may be a stable symlink (``/dev/v4l/by-id/...``); it is resolved at
    every open, because a replugged camera can come back under another ``/dev/videoN``."""

    live = True
    pace_s = 0.0

    def __init__(
        self,
        path: Path,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = None,
    ) -> None:
        self.path, self.width, self.height, self.fps, self.fourcc = path, width, height, fps, fourcc
        self.name = str(path)
        self._cap: Any = None
        self._layout: Layout = "bgr"
        self._pending: RawFrame | None = None
        self._index = 0

    def _node(self) -> int:
        """The /dev/videoN number behind the path (OpenCV's V4L2 backend opens by index only)."""
        if not self.path.exists():
            raise DriverError(f"camera {self.path}: no such device (unplugged, or a wrong path?)")
        real = os.path.realpath(self.path)
        match = _VIDEO_NODE.fullmatch(real)
        if match is None:
            raise DriverError(f"camera {self.path}: {real} is not a V4L2 device (/dev/videoN)")
        if not os.access(real, os.R_OK | os.W_OK):
            raise DriverError(
                f"camera {self.path}: permission denied on {real} (add the user to group 'video')"
            )
        return int(match.group(1))

    def open(self) -> tuple[int, int] | None:
        """Open the device with the requested mode and check it delivers a frame.

        Raises DriverError saying what a person can fix: missing device, permissions, busy.
        """
        import cv2

        self.close()
        node = self._node()
        cap = cv2.VideoCapture(node, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise DriverError(
                f"camera {self.path}: cannot open /dev/video{node} (not a capture device?)"
            )
        self._cap = cap
        self._configure(cap, cv2)
        ok, data = cap.read()
        if not ok or data is None:
            self.close()
            raise DriverError(f"camera {self.path}: opened but delivers no frames (busy?)")
        self._pending = self._frame(np.asarray(data, dtype=np.uint8))
        return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def _configure(self, cap: Any, cv2: Any) -> None:
        # Order matters for V4L2: pixel format, then size, then rate.
        if self.fourcc is not None and not cap.set(cv2.CAP_PROP_FOURCC, _fourcc_code(self.fourcc)):
            raise DriverError(f"camera {self.path}: pixel format {self.fourcc} refused")
        if self.width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps is not None:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 2)  # fewer queued buffers: fresher frames
        actual = fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))
        layout = FOURCC_LAYOUTS.get(actual)
        if layout is not None and cap.set(cv2.CAP_PROP_CONVERT_RGB, 0):
            self._layout = layout
        else:  # a format we cannot take apart: let OpenCV convert to BGR
            cap.set(cv2.CAP_PROP_CONVERT_RGB, 1)
            self._layout = "bgr"

    def _frame(self, data: NDArray[np.uint8]) -> RawFrame:
        now = time.monotonic_ns()
        self._index += 1
        return RawFrame(data, self._layout, now, now, self._index)

    def read(self) -> RawFrame | None:
        """The next frame. Raises DriverError when the camera stops delivering (unplugged)."""
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._cap is None:
            raise DriverError(f"camera {self.path}: not open")
        try:
            ok, data = self._cap.read()
        except Exception as exc:  # cv2.error: the backend gave up on the device
            raise DriverError(f"camera {self.path}: read failed: {exc}") from exc
        if not ok or data is None:
            raise DriverError(f"camera {self.path}: read failed (unplugged?)")
        return self._frame(data)

    def close(self) -> None:
        cap, self._cap, self._pending = self._cap, None, None
        if cap is not None:
            cap.release()


class _FiniteSource:
    """Shared parts of file and memory sources: pacing, looping, the media clock.

    ``fps``: None plays at the source's own rate (a video's, else DEFAULT_FILE_FPS); a number
    plays at that rate; 0 plays every frame as fast as the decoder takes them. The media clock
    runs at the same rate (DEFAULT_FILE_FPS for 0).
    """

    live = False

    def __init__(self, name: str, fps: float | None, loop: bool) -> None:
        self.name, self.loop = name, loop
        self.fps = fps
        self._set_rate(fps or DEFAULT_FILE_FPS, paced=fps != 0)
        self._index = 0

    def _set_rate(self, fps: float, *, paced: bool) -> None:
        self.pace_s = 1.0 / fps if paced else 0.0
        self._period_ns = int(1e9 / fps)

    def _frame(self, data: NDArray[np.uint8], layout: Layout) -> RawFrame:
        view_ns = self._index * self._period_ns
        self._index += 1
        return RawFrame(data, layout, time.monotonic_ns(), view_ns, self._index)


class VideoFileSource(_FiniteSource):
    """A video file through OpenCV (FFmpeg). MJPEG files are read as raw JPEG packets, so the
    frames take the same JPEG-to-gray path as an MJPG camera."""

    def __init__(self, path: Path, *, fps: float | None = None, loop: bool = False) -> None:
        super().__init__(path.name, fps, loop)
        self.path = path
        self._cap: Any = None
        self._layout: Layout = "bgr"
        self._read_this_pass = 0

    def open(self) -> tuple[int, int] | None:
        """Open the file. Raises DriverError when it is missing or not a video OpenCV can play."""
        import cv2

        self.close()
        if not self.path.is_file():
            raise DriverError(f"file source {self.path}: no such file")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise DriverError(f"file source {self.path}: not a video OpenCV can read")
        native = cap.get(cv2.CAP_PROP_FPS)
        if self.fps is None and 0 < native < 1000:
            self._set_rate(native, paced=True)
        raw = fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)).upper() == "MJPG"
        self._layout = "encoded" if raw and cap.set(cv2.CAP_PROP_FORMAT, -1) else "bgr"
        self._cap, self._read_this_pass = cap, 0
        return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def read(self) -> RawFrame | None:
        """The next frame, rewinding at the end when looping; None at the end."""
        if self._cap is None:
            raise DriverError(f"file source {self.path}: not open")
        try:
            ok, data = self._cap.read()
            if not ok and self.loop and self._read_this_pass > 0:
                self.open()
                ok, data = self._cap.read()
        except DriverError:
            raise
        except Exception as exc:  # cv2.error: a damaged file
            raise DriverError(f"file source {self.path}: read failed: {exc}") from exc
        if not ok or data is None:
            return None
        self._read_this_pass += 1
        return self._frame(np.asarray(data, dtype=np.uint8), self._layout)

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class ImageFilesSource(_FiniteSource):
    """Still images played as frames: one file, or every image file of a folder in name order.
    The files are read as bytes and decoded on the decode thread, straight to gray."""

    def __init__(self, path: Path, *, fps: float | None = None, loop: bool = False) -> None:
        super().__init__(path.name, fps, loop)
        self.path = path
        self.paths: list[Path] = []
        self._next = 0

    def open(self) -> tuple[int, int] | None:
        """List the images. Raises DriverError when the path is missing or holds no image."""
        if self.path.is_dir():
            self.paths = self._listing()
            if not self.paths:
                raise DriverError(f"file source {self.path}: no image files in the folder")
        elif self.path.is_file():
            self.paths = [self.path]
        else:
            raise DriverError(f"file source {self.path}: no such file or folder")
        self._next = 0
        return None

    def read(self) -> RawFrame | None:
        """The next image's bytes; None after the last (unless looping). A file gone since the
        folder was listed, or too big for an image the decoder would take, is skipped with a
        warning (found in a user trial: a deleted frame ended the lane; a 1.5 GB file was read
        whole before the pixel cap refused it)."""
        for _ in range(len(self.paths) + 1):  # each file at most once a call: all skipped ends it
            if self._next >= len(self.paths):
                if not self.loop:
                    return None
                self._next = 0
                if self.path.is_dir():  # each pass plays the folder as it is now
                    self.paths = self._listing()
                    if not self.paths:
                        log.warning("file source %s: no image files left: ended", self.path)
                        return None
                continue
            path = self.paths[self._next]
            self._next += 1
            try:
                size = path.stat().st_size
                if size > MAX_IMAGE_BYTES:
                    log.warning(
                        "file source %s: %s bytes, more than an image of %s pixels has: skipped",
                        path, f"{size:,}", f"{MAX_IMAGE_PIXELS:,}",
                    )  # fmt: skip
                    continue
                data = np.fromfile(path, dtype=np.uint8)
            except FileNotFoundError:
                log.warning("file source %s: gone before it was read: skipped", path)
                continue
            except OSError as exc:
                raise DriverError(f"file source {path}: cannot read: {exc}") from exc
            return self._frame(data, "encoded")
        return None

    def close(self) -> None:
        return None

    def _listing(self) -> list[Path]:
        """The folder's image files in name order (found in a user trial: a looping folder
        played the files it held at the start only, never one added later)."""
        try:
            names = list(self.path.iterdir())
        except OSError as exc:
            raise DriverError(f"file source {self.path}: cannot list: {exc}") from exc
        return sorted(p for p in names if p.suffix.lower() in IMAGE_SUFFIXES)


class MemorySource(_FiniteSource):
    """Frames already in memory (2-D gray or 3-D BGR arrays), for tests and benchmarks; by
    default every frame, as fast as the decoder goes, on a 30 fps media clock."""

    def __init__(
        self,
        frames: Sequence[NDArray[np.uint8]],
        *,
        name: str = "memory",
        fps: float | None = 0,
        loop: bool = False,
    ) -> None:
        super().__init__(name, fps, loop)
        self.frames = frames
        self._next = 0

    def open(self) -> tuple[int, int] | None:
        self._next = 0
        if not self.frames:
            return None
        height, width = self.frames[0].shape[:2]
        return width, height

    def read(self) -> RawFrame | None:
        if self._next >= len(self.frames):
            if not self.loop or not self.frames:
                return None
            self._next = 0
        data = self.frames[self._next]
        self._next += 1
        return self._frame(data, "gray" if data.ndim == 2 else "bgr")

    def close(self) -> None:
        return None


def file_source(
    path: Path, *, fps: float | None = None, loop: bool = False, folder: bool = False
) -> FrameSource:
    """The source for a ``file://`` path: image files (a folder, ``folder`` True, or an image
    suffix) or a video. Nothing is opened yet, so a missing path is reported by ``open``."""
    if folder or path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFilesSource(path, fps=fps, loop=loop)
    return VideoFileSource(path, fps=fps, loop=loop)
