"""Gate release through an LCUS-type USB serial relay board (CH340 + microcontroller, 1-8 channels).

URL (the path must be absolute; prefer the stable ``/dev/serial/by-id/...`` name)::

    lcus:///dev/serial/by-id/usb-1a86_USB_Serial-if00-port0
        ?channel=1            relay channel, 1..8
        &pulse_ms=500         release pulse, 20..10000
        &baud=9600            1200..115200 (the boards ship at 9600)
        &passage=none         none | auto_ms:N (see below)

Protocol (write only; the boards send no acknowledgement): 4 bytes ``A0 ch state checksum`` with
``state`` 01 = on, 00 = off and ``checksum = (A0 + ch + state) & 0xFF``; channel 1 on is
``A0 01 01 A2``, off ``A0 01 00 A1``. The relay is switched off at open, after every pulse
(even when the pulse is cancelled), at close, and from an :mod:`atexit` hook when the interpreter
exits without ``close()``; unplugging the board also de-energises it. Writes are flushed
(``tcdrain``) before the pulse is timed, so the pulse length is the relay's, not the buffer's.

These boards have no inputs, so there is no passage signal:

- ``passage=none`` (default): :meth:`LcusRelay.wait_passage` returns True at once after a grant.
  The admission stands and is never annulled for "nobody passed": with no sensor, assuming a
  passage is the side that cannot let a ticket in twice.
- ``passage=auto_ms:N``: a person is assumed through N ms after the grant began (True then);
  False when N exceeds the lane's timeout. It keeps the lane busy for the time a passage takes.

``emergency`` is always False and :meth:`LcusRelay.events` yields nothing until closed.

The port is opened exclusively (no other process can switch the relay) and used from one worker
thread per board; channels of one board in this process (a 2-channel board for an entry and an
exit lane) share that port and thread, so name the same path with different ``channel``s. After
a write error (board unplugged) the next command reopens the port.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import importlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, Protocol

from agent.errors import DriverError, RelayReleaseError
from agent.ports import InputEvent
from drivers.url_params import UrlParams

log = logging.getLogger(__name__)


class SerialPort(Protocol):
    """What the driver uses of ``serial.Serial``."""

    def write(self, data: bytes) -> int | None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


PortFactory = Callable[[str, int], SerialPort]


def command(channel: int, on: bool) -> bytes:
    """The 4-byte LCUS command switching ``channel`` (1..255) on or off."""
    if not 1 <= channel <= 255:
        raise ValueError("channel must be 1..255")
    body = bytes((0xA0, channel, 1 if on else 0))
    return body + bytes((sum(body) & 0xFF,))


def pyserial_port(path: str, baud: int) -> SerialPort:
    """Open ``path`` exclusively with pyserial (8N1, 1 s write timeout).

    Raises DriverError when pyserial is missing; OSError (SerialException) passes through.
    """
    try:
        serial = importlib.import_module("serial")  # pyserial ships no type information
    except ImportError as exc:
        raise DriverError("lcus: pyserial is not installed (pip install pyserial)") from exc
    port: SerialPort = serial.Serial(
        path, baudrate=baud, timeout=1, write_timeout=1, exclusive=True
    )
    return port


def _hint(exc: OSError) -> str:
    hints = {
        errno.ENOENT: "no such device: is the board plugged in, is the by-id path right?",
        errno.EACCES: "permission denied: add the service user to group 'dialout'",
        errno.EPERM: "permission denied: add the service user to group 'dialout'",
        errno.EBUSY: "port busy: another process has it (ModemManager? set ID_MM_DEVICE_IGNORE=1)",
        errno.EAGAIN: "port locked by another process (ModemManager? set ID_MM_DEVICE_IGNORE=1)"
        " or by this one under another path (name the board by one path only)",
        errno.EIO: "I/O error: the board was unplugged or reset",
        errno.ENXIO: "no such device: the board was unplugged",
    }
    return hints.get(exc.errno or 0, str(exc))


class LcusBoard:
    """One board's serial port, owned by one worker thread, shared by the channels in use.

    Boards are shared per path within the process (:meth:`attach`/:meth:`detach`, from the loop).
    """

    _boards: ClassVar[dict[str, LcusBoard]] = {}

    def __init__(self, path: str, baud: int, factory: PortFactory) -> None:
        self.path, self.baud, self._factory = path, baud, factory
        self.users = 0
        self._port: SerialPort | None = None  # touched by the worker thread (and atexit)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lcus")

    @classmethod
    def attach(cls, path: str, baud: int, factory: PortFactory) -> LcusBoard:
        """The board at ``path``, shared. Raises DriverError when another channel of it in this
        process uses a different baud rate."""
        board = cls._boards.get(path)
        if board is None:
            board = cls._boards[path] = cls(path, baud, factory)
        elif board.baud != baud:
            raise DriverError(f"lcus relay: {path} already in use at baud={board.baud}")
        board.users += 1
        return board

    async def detach(self) -> None:
        """One user fewer; the last one closes the port and stops the thread."""
        self.users -= 1
        if self.users > 0:
            return
        if self._boards.get(self.path) is self:
            del self._boards[self.path]
        await asyncio.get_running_loop().run_in_executor(self._pool, self._disconnect)
        self._pool.shutdown(wait=False)

    async def send(self, data: bytes) -> None:
        """Write one command and wait until it left the UART. Raises DriverError with the fix."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._send, data)

    def send_now(self, data: bytes) -> None:
        """At interpreter exit (no loop any more): write directly if the port is open."""
        port = self._port
        if port is None:
            return
        try:
            port.write(data)
            port.flush()
        except OSError as exc:
            log.error("lcus relay: %s at exit: %s", self.path, exc)

    def _send(self, data: bytes) -> None:
        if self._port is None:
            try:
                self._port = self._factory(self.path, self.baud)
            except OSError as exc:
                raise DriverError(f"lcus relay: cannot open {self.path}: {_hint(exc)}") from exc
        try:
            self._port.write(data)
            self._port.flush()
        except OSError as exc:
            self._disconnect()
            raise DriverError(f"lcus relay: writing to {self.path}: {_hint(exc)}") from exc
        log.debug("lcus relay: %s sent %s", self.path, data.hex(" "))

    def _disconnect(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except OSError as exc:
                log.debug("lcus relay: closing %s: %s", self.path, exc)


class LcusRelay:
    """:class:`agent.ports.GateIO` on one channel of an LCUS USB serial relay board.

    ``port_factory`` opens the serial port (default: pyserial) on the board's worker thread.
    """

    def __init__(
        self,
        path: str,
        *,
        channel: int = 1,
        pulse_ms: int = 500,
        baud: int = 9600,
        passage_ms: int | None = None,
        port_factory: PortFactory | None = None,
    ) -> None:
        self.path, self.channel, self.pulse_ms, self.baud = path, channel, pulse_ms, baud
        self.passage_ms = passage_ms
        self.pulses = 0
        self._on, self._off = command(channel, True), command(channel, False)
        self._factory = port_factory or pyserial_port
        self._board: LcusBoard | None = None
        self._closed = asyncio.Event()
        self._granted_ns: int | None = None

    @classmethod
    def from_url(cls, url: str, base: Path | None = None) -> LcusRelay:
        """Parse an ``lcus://`` URL; raises DriverError naming the bad parameter."""
        p = UrlParams(url, "lcus")
        path = p.device_path("lcus:///dev/serial/by-id/...")
        channel = p.integer("channel", 1, 1, 8)
        pulse_ms = p.integer("pulse_ms", 500, 20, 10_000)
        baud = p.integer("baud", 9600, 1200, 115_200)
        passage = p.text("passage", "none")
        p.finish()
        passage_ms: int | None = None
        if passage != "none":
            kind, _, value = passage.partition(":")
            if kind != "auto_ms" or not value.isascii() or not value.isdigit():
                raise p.error(f"passage must be none or auto_ms:N, not {passage!r}")
            passage_ms = int(value)
            if not 0 <= passage_ms <= 600_000:
                raise p.error("passage=auto_ms:N needs N in 0..600000")
        return cls(path, channel=channel, pulse_ms=pulse_ms, baud=baud, passage_ms=passage_ms)

    @property
    def emergency(self) -> bool:
        return False

    async def events(self) -> AsyncIterator[InputEvent]:
        """No inputs: ends when the relay is closed."""
        await self._closed.wait()
        return
        yield  # an async generator with nothing to yield

    async def open(self) -> None:
        """Open the port and switch the relay off. Raises DriverError with the fix."""
        if self._board is not None:
            return
        board = LcusBoard.attach(self.path, self.baud, self._factory)
        try:
            await board.send(self._off)
        except BaseException:
            await board.detach()
            raise
        self._board = board
        self._closed.clear()
        atexit.register(self._atexit_off)
        log.info("lcus relay: %s channel %d ready", self.path, self.channel)

    async def close(self) -> None:
        """Switch the relay off (best effort) and let go of the port. Idempotent."""
        board, self._board = self._board, None
        if board is None:
            return
        atexit.unregister(self._atexit_off)
        try:
            await board.send(self._off)
        except DriverError as exc:
            log.error("lcus relay: switching off at close: %s", exc)
        finally:
            await board.detach()
            self._closed.set()

    async def grant(self, direction: str, ref: str) -> None:
        """One pulse of pulse_ms; returns when the relay is off again.

        Raises DriverError when closed or the board cannot be written; an off command is then
        attempted before raising.
        """
        board = self._board
        if board is None:
            raise DriverError("lcus relay: not open")
        self._granted_ns = time.monotonic_ns()
        log.info("lcus relay: pulse channel %d (%s, %s)", self.channel, direction, ref)
        try:
            await board.send(self._on)
        except DriverError:
            self._granted_ns = None
            try:
                await board.send(self._off)
            except DriverError as exc:
                log.error("lcus relay: off after a failed pulse: %s", exc)
            raise
        self.pulses += 1
        try:
            await asyncio.sleep(self.pulse_ms / 1000)
        finally:
            try:
                await board.send(self._off)
            except DriverError as exc:  # the relay moved: the gate may be open
                raise RelayReleaseError(f"{exc}; relay MAY STILL BE ENERGISED") from exc

    async def wait_passage(self, timeout_s: float) -> bool:
        """True once a grant's passage is assumed (at once, or auto_ms after the grant); False
        when that would be later than ``timeout_s`` or there was no grant."""
        granted, self._granted_ns = self._granted_ns, None
        if granted is None:
            return False
        if self.passage_ms is None:
            return True
        remaining = self.passage_ms / 1000 - (time.monotonic_ns() - granted) / 1e9
        if remaining > timeout_s:
            await asyncio.sleep(timeout_s)
            return False
        await asyncio.sleep(max(0.0, remaining))
        return True

    def _atexit_off(self) -> None:
        """Interpreter exit without close(): the loop is gone, write the off command directly."""
        if self._board is not None:
            self._board.send_now(self._off)
