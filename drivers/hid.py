"""Keyboard-wedge (USB HID keyboard) barcode scanners through evdev.

**A fallback.** Use it only for a scanner that cannot be switched to a serial mode (USB CDC-ACM /
"USB COM port" / "virtual serial"): a serial scanner delivers the exact bytes, AIM symbology
identifiers and host feedback, where a keyboard wedge depends on its keyboard layout setting and
carries only what a US keyboard can type. Set the scanner to the US layout and an Enter suffix.

URL (the path must be absolute; use the stable ``/dev/input/by-id/...-event-kbd`` name)::

    hid:///dev/input/by-id/usb-XYZ_Scanner-event-kbd
        ?max_frame=1024        longest accepted code in characters (1..65536)
        &idle_ms=300           a pause this long inside a code drops the half code (10..60000)
        &grab=1                1: take the device exclusively (EVIOCGRAB), so its keystrokes reach
                               no console or other program; 0 only for diagnosis
        &noread=NR,%25%25NoRead  comma list of no-read strings to drop (empty: none)
        &retry_max_s=5         reconnect backoff cap, 0.2..300 s

The device file needs read access for the service user (group ``input``). When the device
disappears (unplug, scanner reboot) the driver logs it once, retries with capped exponential
backoff from 0.1 s, grabs the device again when it is back and goes on reading; the half code at
unplug is dropped. :attr:`HidScanner.connected` and :attr:`HidScanner.reconnects` serve health and
selftest. Reading uses the device's non-blocking fd on the event loop (``add_reader``): no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from agent.backoff import Backoff
from agent.errors import DriverError
from agent.ports import Scan
from agent.redact import text_digest
from drivers.hid_keys import KeyEventLike, KeyFramer, Refused
from drivers.url_params import UrlParams

EVIOCSCLOCKID = 0x400445A0  # _IOW('E', 0xa0, int): the clock that stamps the device's events

log = logging.getLogger(__name__)

SCAN_QUEUE_MAX = 64
RETRY_START_S = 0.1
DEFAULT_NOREAD = ("NR", "%%NoRead")


class HidDevice(Protocol):
    """What the driver uses of ``evdev.InputDevice``."""

    @property
    def fd(self) -> int: ...

    def read(self) -> Iterator[KeyEventLike]: ...

    def grab(self) -> None: ...

    def ungrab(self) -> None: ...

    def close(self) -> None: ...


DeviceFactory = Callable[[str], HidDevice]


def evdev_device(path: str) -> HidDevice:
    """Open ``path`` with evdev. Raises DriverError when evdev is missing; OSError passes."""
    try:
        import evdev
    except ImportError as exc:
        raise DriverError("hid: the evdev library is not installed (pip install evdev)") from exc
    device = evdev.InputDevice(path)
    # Key events stamped by CLOCK_MONOTONIC instead of the wall clock, which NTP may step.
    try:
        fcntl.ioctl(device.fd, EVIOCSCLOCKID, struct.pack("i", time.CLOCK_MONOTONIC))
    except OSError as exc:  # wall-clock stamps: gaps still work, unless NTP steps mid-code
        log.info("hid scanner %s: events keep wall-clock stamps (%s)", path, exc.strerror)
    return device


def _hint(exc: OSError) -> str:
    hints = {
        errno.ENOENT: "no such device: plugged in? right /dev/input/by-id path?",
        errno.ENODEV: "the device went away",
        errno.EACCES: "permission denied: add the service user to group 'input'",
        errno.EPERM: "permission denied: add the service user to group 'input'",
        errno.EBUSY: "already grabbed by another program",
    }
    return hints.get(exc.errno or 0, str(exc))


class HidScanner:
    """:class:`agent.ports.Scanner` for keyboard-wedge scanners.

    ``device_factory`` opens an input device by path (default: ``evdev.InputDevice``); tests pass a
    fake whose ``read()`` yields ``evdev.InputEvent`` objects.
    """

    def __init__(
        self,
        path: str,
        *,
        max_frame: int = 1024,
        idle_ms: int = 300,
        grab: bool = True,
        noread: Iterable[str] = DEFAULT_NOREAD,
        retry_max_s: float = 5.0,
        device_factory: DeviceFactory | None = None,
    ) -> None:
        self.path, self.grab, self.retry_max_s = path, grab, retry_max_s
        self.source = f"hid:{path}"
        self.framer = KeyFramer(max_frame, idle_ms, noread)
        self.connected = False
        self.reconnects = 0
        self.last_error: str | None = None
        self._factory = device_factory or evdev_device
        self._backoff = Backoff(min(RETRY_START_S, retry_max_s), retry_max_s)
        self._task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Scan | None] = asyncio.Queue(SCAN_QUEUE_MAX)

    @classmethod
    def from_url(cls, url: str, base: Path | None = None) -> HidScanner:
        """Parse a ``hid://`` URL; raises DriverError naming the bad parameter."""
        p = UrlParams(url, "hid")
        path = p.device_path("hid:///dev/input/by-id/...")
        noread = p.items("noread")
        scanner = cls(
            path,
            max_frame=p.integer("max_frame", 1024, 1, 65_536),
            idle_ms=p.integer("idle_ms", 300, 10, 60_000),
            grab=p.flag("grab", True),
            noread=DEFAULT_NOREAD if noread is None else noread,
            retry_max_s=p.seconds("retry_max_s", 5.0, 0.2, 300.0),
        )
        p.finish()
        return scanner

    async def open(self) -> None:
        """Start reading. A missing device is retried in the background (see ``connected``);
        raises DriverError only when evdev itself is missing."""
        if self._task is not None:
            return
        if self._factory is evdev_device:
            try:
                import evdev  # noqa: F401
            except ImportError as exc:
                raise DriverError(
                    "hid: the evdev library is not installed (pip install evdev)"
                ) from exc
        while not self._queue.empty():  # a stale end-of-stream from an earlier close
            self._queue.get_nowait()
        self._task = asyncio.create_task(self._run(), name=f"hid {self.path}")

    async def close(self) -> None:
        """Stop reading, release the grab, end :meth:`scans`. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])
        self._put(None)

    async def scans(self) -> AsyncIterator[Scan]:
        while (scan := await self._queue.get()) is not None:
            yield scan

    async def _run(self) -> None:
        backoff = self._backoff
        backoff.reset()
        reported = False
        while True:
            try:
                device = self._connect()
            except (OSError, DriverError) as exc:
                self.last_error = _hint(exc) if isinstance(exc, OSError) else str(exc)
                if not reported:
                    log.warning(
                        "hid scanner: %s unavailable: %s; retrying", self.path, self.last_error
                    )
                    reported = True
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            reported, failed = False, False
            try:
                await self._pump(device)
            except Exception:  # a bug must not end the scanner for good: treat it as a loss
                log.exception("hid scanner: %s: reading failed; reconnecting", self.path)
                failed = True
            finally:
                self._disconnect(device)
            self.reconnects += 1
            # Never spin: a device that opens and vanishes at once is retried at a gentle pace.
            await asyncio.sleep(backoff.cap_s if failed else backoff.next_delay())

    def _connect(self) -> HidDevice:
        device = self._factory(self.path)
        if self.grab:
            try:
                device.grab()
            except OSError:
                device.close()
                raise
        else:
            log.warning(
                "hid scanner: %s not grabbed: its keystrokes also reach the console", self.path
            )
        self.connected, self.last_error = True, None
        log.info("hid scanner: %s open%s", self.path, ", grabbed" if self.grab else "")
        return device

    def _disconnect(self, device: HidDevice) -> None:
        self.connected = False
        self.framer.reset()
        if self.grab:
            with contextlib.suppress(OSError):
                device.ungrab()
        with contextlib.suppress(OSError):
            device.close()

    async def _pump(self, device: HidDevice) -> None:
        """Read until the device fails; returns then (the caller reconnects)."""
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[OSError] = loop.create_future()
        fd = device.fd

        def ready() -> None:
            try:
                events = list(device.read())
            except BlockingIOError:
                return
            except OSError as exc:
                if not lost.done():
                    lost.set_result(exc)
                return
            now = time.monotonic_ns()
            try:
                for event in events:
                    # The pause inside a code is measured between the key events' own times
                    # (the kernel's, monotonic: evdev_device), not when this loop got to them:
                    # a busy loop split codes, and a batch read at once hid pauses.
                    got = self.framer.feed(event, event.sec * 1_000_000_000 + event.usec * 1_000)
                    if isinstance(got, Refused):
                        self._put(Scan("", self.source, now, refused=got.why))
                    elif got is not None:
                        self._deliver(got, now)
            except Exception as exc:  # to _run, which logs it and reconnects
                if not lost.done():
                    lost.set_exception(exc)

        loop.add_reader(fd, ready)
        try:
            exc = await lost
        finally:
            loop.remove_reader(fd)
        self.last_error = _hint(exc)
        log.warning("hid scanner: %s lost (%s); reconnecting", self.path, self.last_error)

    def _deliver(self, text: str, now_ns: int) -> None:
        log.debug("hid scanner: frame %s (%d chars)", text_digest(text), len(text))
        self._put(Scan(text, self.source, now_ns))

    def _put(self, item: Scan | None) -> None:
        if self._queue.full():
            dropped = self._queue.get_nowait()
            log.warning("hid scanner: scan queue full, oldest dropped (%s)", dropped is not None)
        self._queue.put_nowait(item)
