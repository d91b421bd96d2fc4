"""Camera scanners: ``camera://`` (a V4L2 device) and ``file://`` (images or a video file).

URLs (relative ``file://`` paths are taken from ``base``, normally the config file's folder)::

    camera:///dev/v4l/by-id/usb-CAM-video-index0?width=1280&height=720&fps=30&fourcc=MJPG
        &engine=zxing&formats=qr,aztec&roi=320,120,640,480&downscale=1&hold_ms=1500
    file:///srv/demo/tickets.avi?fps=30&loop=0
    file://frames/?fps=0                           every image of a folder, in name order

Parameters (all optional; any other parameter is refused):

=============== ======= ===============================================================
``engine``      both    ``zxing`` (default) or ``pyzbar``                   (see drivers.decoders)
``formats``     both    comma list: qr (default), microqr, rmqr, aztec, pdf417,
                        datamatrix, code128 (pyzbar: qr, code128)
``rotate``      both    1 (default) or 0: zxing's rotated-code search
``roi``         both    ``x,y,w,h`` in full-frame pixels: decode only this region
``downscale``   both    1..8 (default 1): shrink the (cropped) frame by this factor
``hold_ms``     both    a code in view is one presentation; it counts again only after
                        it has been out of view this long (default 1500)
``source``      both    the name put in each Scan (default ``camera:PATH``/``file:NAME``)
``width``,
``height``      camera  capture size in pixels (default: the camera's)
``fps``         camera  capture rate (default: the camera's)
``fourcc``      camera  pixel format, e.g. MJPG, YUYV, GREY (default: the camera's)
``retry_max_s`` camera  cap of the reopen backoff after the camera is lost (default 5)
``fps``         file    play at this rate, dropping frames the decoder cannot keep up
                        with, like a camera; 0 = every frame, as fast as the decoder
                        goes, waiting for the lane when 32 reads wait for it (default:
                        the video's own rate; 30 for images)
``loop``        file    1: start again at the end (a folder: with the images it holds
                        then); 0 (default): the scan stream ends with the source, so
                        the lane ends (health: scanner offline) and a one-lane daemon
                        finishes
=============== ======= ===============================================================

How it runs: a capture thread reads frames (paced for files) into a one-slot "latest frame" hand-
over; one decode thread takes the gray plane, crops, downscales and decodes, and hands codes back
to the event loop with ``call_soon_threadsafe``. The loop alone owns the presentation state, the
connection state and the scan queue. A camera that stops delivering is reported once, reopened
with capped exponential backoff (0.1 s doubling up to ``retry_max_s``) and counted in
:attr:`CameraScanner.reconnects`. Texts are never logged: only their digest and length.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from agent.backoff import Backoff
from agent.errors import DriverError
from agent.ports import Scan, too_long
from agent.redact import text_digest
from drivers import camera_url
from drivers.camera_frames import RawFrame, Roi, prepare
from drivers.camera_pipeline import LatestSlot, Presentations
from drivers.camera_sources import FrameSource
from drivers.decoders import DEFAULT_FORMATS, Decoded, Decoder, check_formats, make_decoder

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.1
JOIN_TIMEOUT_S = 5.0
MAX_TEXT = 4096  # longer than any ticket format; a bigger code is not a ticket
MAX_PENDING = 32  # scans waiting for the lane; beyond this the lane is not keeping up


class CameraScanner:
    """A :class:`agent.ports.Scanner` reading codes from camera or file frames.

    Built from a URL with :meth:`from_url`, or from any :class:`FrameSource` (tests, benchmarks).
    ``decoder`` replaces the engine named by ``engine``/``formats``. Raises DriverError for an
    unknown engine or format, or a downscale, hold or backoff out of range.
    """

    def __init__(
        self,
        source: FrameSource,
        *,
        engine: str = "zxing",
        formats: Sequence[str] = DEFAULT_FORMATS,
        try_rotate: bool = True,
        roi: Roi | None = None,
        downscale: int = 1,
        hold_ms: int = camera_url.DEFAULT_HOLD_MS,
        retry_max_s: float = camera_url.DEFAULT_RETRY_MAX_S,
        source_name: str | None = None,
        decoder: Decoder | None = None,
    ) -> None:
        if decoder is None:
            formats = check_formats(engine, formats)
        if not 1 <= downscale <= camera_url.MAX_DOWNSCALE:
            raise DriverError(f"camera: downscale must be 1..{camera_url.MAX_DOWNSCALE}")
        if hold_ms < 0 or not 0 < retry_max_s < math.inf:
            raise DriverError("camera: hold_ms must be >= 0 and retry_max_s > 0")
        self.source = source
        self.engine, self.formats, self.try_rotate = engine, tuple(formats), try_rotate
        self.roi, self.downscale = roi, downscale
        self.hold_ms, self.retry_max_s = hold_ms, retry_max_s
        prefix = "camera" if source.live else "file"
        self.source_name = source_name or f"{prefix}:{source.name}"
        self._decoder = decoder
        self._presentations = Presentations(hold_ms * 1_000_000)
        self._queue: asyncio.Queue[Scan | None] = asyncio.Queue()
        self._slot: LatestSlot[RawFrame] = LatestSlot()
        self._stop = threading.Event()
        # A file played with fps=0 (every frame) waits for the lane instead of dropping reads:
        # one permit per scan waiting for it (found in a user trial: reads past 32 were lost).
        self._lossless = not source.live and source.pace_s == 0
        self._room = threading.Semaphore(MAX_PENDING)
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._ended = False
        self._connected = False
        self._reconnects = 0
        self._lost_at = 0.0
        self._backoff = Backoff(min(BACKOFF_START_S, retry_max_s), retry_max_s)
        # Counters written by one worker thread each, read by anyone (health, tests, benchmarks).
        self.frames_read = 0
        self.frames_decoded = 0
        self.decode_errors = 0

    @classmethod
    def from_url(cls, url: str, base: Path | None = None) -> CameraScanner:
        """Build from a ``camera://`` or ``file://`` URL (see the module docstring).

        Raises DriverError for any unknown or malformed parameter. Nothing is opened.
        """
        source, opts = camera_url.parse(url, base)
        return cls(
            source,
            engine=opts.engine,
            formats=opts.formats,
            try_rotate=opts.try_rotate,
            roi=opts.roi,
            downscale=opts.downscale,
            hold_ms=opts.hold_ms,
            retry_max_s=opts.retry_max_s,
            source_name=opts.source_name,
        )

    @property
    def connected(self) -> bool:
        """True while open and the device delivers frames (False while being reopened)."""
        return self._connected

    @property
    def reconnects(self) -> int:
        """How many times the device was lost and opened again."""
        return self._reconnects

    @property
    def frames_dropped(self) -> int:
        """Frames replaced in the hand-over before the decoder took them (decoder too slow)."""
        return self._slot.dropped

    async def open(self) -> None:
        """Open the source and start the capture and decode threads; idempotent.

        Raises DriverError when the source cannot be opened (with what to fix), the decoder
        library is missing, or ``roi`` lies outside the frame.
        """
        if self._running:
            return
        decoder = self._decoder or make_decoder(
            self.engine, self.formats, try_rotate=self.try_rotate
        )
        size = await asyncio.to_thread(self.source.open)
        if size is not None and self.roi is not None and not self.roi.inside(*size):
            await asyncio.to_thread(self.source.close)
            raise DriverError(
                f"{self.source_name}: roi {self.roi} lies outside the {size[0]}x{size[1]} frame"
            )
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._slot = LatestSlot()
        self._queue = asyncio.Queue()
        self._room = threading.Semaphore(MAX_PENDING)
        self._running, self._ended, self._connected = True, False, True
        self._backoff.reset()
        self._threads = [
            threading.Thread(target=self._capture, name=f"capture {self.source_name}", daemon=True),
            threading.Thread(
                target=self._decode, args=(decoder,), name=f"decode {self.source_name}", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()
        log.info(
            "%s: open (%s, roi %s, downscale %d, %s %s, hold %d ms)",
            self.source_name,
            "size per image" if size is None else f"{size[0]}x{size[1]}",
            self.roi or "none",
            self.downscale,
            decoder.engine,
            ",".join(decoder.formats),
            self.hold_ms,
        )

    async def close(self) -> None:
        """Stop the threads, release the device and end the scan stream; idempotent."""
        self._running = False
        self._stop.set()
        self._room.release(MAX_PENDING)  # a decode thread waiting for the lane goes on to stop
        self._slot.close(discard=True)
        threads, self._threads = self._threads, []
        for thread in threads:
            await asyncio.to_thread(thread.join, JOIN_TIMEOUT_S)
            if thread.is_alive():  # a V4L2 read stuck in the driver; it releases when it returns
                log.warning("%s: thread %r still busy after close", self.source_name, thread.name)
        self._connected = False
        self._finish()

    async def scans(self) -> AsyncIterator[Scan]:
        """Each new presentation of a code, until closed or (``file://``, no loop) the source ends."""
        while True:
            scan = await self._queue.get()
            if scan is None:
                self._queue.put_nowait(None)  # a later reader ends too
                return
            if self._lossless:
                self._room.release()
            yield scan

    # -- capture thread ------------------------------------------------------------------------

    def _capture(self) -> None:
        source, slot, stop = self.source, self._slot, self._stop
        lossless = self._lossless
        due = time.monotonic()
        try:
            while not stop.is_set():
                frame = self._read_or_recover()
                if frame is None:
                    break
                self.frames_read += 1
                if source.pace_s:
                    wait = due - time.monotonic()
                    if wait > 0 and stop.wait(wait):
                        break
                    due = max(due + source.pace_s, time.monotonic() - source.pace_s)
                    frame.mono_ns = time.monotonic_ns()  # delivered now, as a camera would
                if not slot.put(frame, wait=lossless):
                    break
        except Exception:  # a bug here must end the stream loudly, not hang the lane
            log.exception("%s: capture failed", self.source_name)
        finally:
            try:
                source.close()
            except Exception:
                log.exception("%s: release failed", self.source_name)
            slot.close()

    def _read_or_recover(self) -> RawFrame | None:
        """The next frame; for a live source, rides out a lost device. None: stop or end."""
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except DriverError as exc:
                if not self.source.live:
                    log.error("%s: %s; stopping", self.source_name, exc)
                    return None
                if not self._recover(exc):
                    return None
                continue
            self._backoff.reset()
            return frame
        return None

    def _recover(self, exc: DriverError) -> bool:
        """Reopen with capped exponential backoff until it works (True) or we stop (False)."""
        self._post(self._on_lost, str(exc))
        self.source.close()
        attempts = 0
        while not self._stop.wait(self._backoff.next_delay()):
            attempts += 1
            try:
                self.source.open()
            except DriverError as err:
                log.debug("%s: reopen attempt %d failed: %s", self.source_name, attempts, err)
                continue
            self._post(self._on_back, attempts)
            return True
        return False

    # -- decode thread -------------------------------------------------------------------------

    def _decode(self, decoder: Decoder) -> None:
        slot = self._slot
        while (frame := slot.take()) is not None:
            try:
                gray = prepare(frame, self.roi, self.downscale)
                found = decoder.decode(gray) if gray is not None else []
            except Exception as exc:  # one bad frame must not stop decoding
                self.decode_errors += 1
                if self.decode_errors == 1 or self.decode_errors % 1000 == 0:
                    log.warning(
                        "%s: frame %d not decoded (%d so far): %s",
                        self.source_name,
                        frame.index,
                        self.decode_errors,
                        exc,
                    )
                continue
            self.frames_decoded += 1
            if found:
                # At most MAX_PENDING a frame (a review: a photo of a sheet of 40 tickets waited
                # for a 33rd permit for ever); a frame's codes past that are dropped, said.
                reserved = min(len(found), MAX_PENDING) if self._lossless else 0
                if reserved and not self._reserve(reserved):
                    break
                self._post(self._on_found, frame, found, reserved)
        self._post(self._finish)

    def _reserve(self, n: int) -> bool:
        """Wait until the lane has room for ``n`` more scans; False when stopping."""
        for _ in range(n):
            self._room.acquire()
            if self._stop.is_set():
                return False
        return True

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        # RuntimeError: the loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)

    # -- event loop side -----------------------------------------------------------------------

    def _on_found(self, frame: RawFrame, found: list[Decoded], reserved: int) -> None:
        queued = self._queue.qsize()
        try:
            self._queue_found(frame, found)
        finally:  # the permits of codes not queued (held, repeated) go back
            if (unused := reserved - (self._queue.qsize() - queued)) > 0:
                self._room.release(unused)

    def _queue_found(self, frame: RawFrame, found: list[Decoded]) -> None:
        if not self._running:
            return
        symbology = {code.text: code.symbology for code in found}
        for text in self._presentations.seen(symbology, frame.view_ns):
            digest = text_digest(text)
            if self._queue.qsize() >= MAX_PENDING:
                log.warning("%s: lane not keeping up, dropped read %s", self.source_name, digest)
                continue
            if len(text) > MAX_TEXT:  # read, refused: the lane shows it is not a ticket
                log.warning(
                    "%s: dropped an over-long code %s (%d chars)",
                    self.source_name,
                    digest,
                    len(text),
                )
                refused = too_long(len(text), MAX_TEXT)
                self._queue.put_nowait(Scan("", self.source_name, frame.mono_ns, refused=refused))
                continue
            log.debug(
                "%s: read %s (%d chars, %s, frame %d)",
                self.source_name,
                digest,
                len(text),
                symbology[text],
                frame.index,
            )
            self._queue.put_nowait(Scan(text, self.source_name, frame.mono_ns, symbology[text]))

    def _on_lost(self, why: str) -> None:
        if self._connected and self._running:
            self._lost_at = time.monotonic()
            log.warning("%s: camera lost (%s); reopening with backoff", self.source_name, why)
        self._connected = False

    def _on_back(self, attempts: int) -> None:
        if not self._running:
            return
        self._connected = True
        self._reconnects += 1
        log.info(
            "%s: camera back after %.1f s (%d attempts, reconnect %d)",
            self.source_name,
            time.monotonic() - self._lost_at,
            attempts,
            self._reconnects,
        )

    def _finish(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(None)
