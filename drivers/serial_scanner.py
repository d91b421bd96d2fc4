"""Serial barcode scanners (RS-232, USB CDC-ACM "virtual COM"): ``serial://``.

URL (one line; ``&`` separates parameters)::

    serial:///dev/serial/by-id/usb-XYZ?baud=9600&aim=Q1,z,L,d&require_aim=0&max_frame=1024
          &idle_ms=300&noread=NR,%25%25NoRead&feedback=none&exclusive=1&retry_max_s=1

The path is absolute; use a stable name (``/dev/serial/by-id/...`` or a udev symlink), never
``/dev/ttyACM0``, which changes with the plug order. Parameters (all optional):

``baud``         line speed: 1200 .. 921600 (standard rates only); default 9600. USB CDC-ACM
                 scanners ignore it.
``aim``          AIM symbology identifiers allowed, comma separated: ``Q1`` (that exact id) or
                 ``z`` (any modifier of that code); default: any. A frame whose AIM id is not
                 listed is refused: the lane denies it as not a ticket, saying which symbology
                 it was, never its text. The id is always stripped from the text and
                 mapped to ``Scan.symbology`` (``Q`` qr, ``z`` aztec, ``L`` pdf417, ``d``
                 datamatrix). With CR/LF endings a code whose data holds a CR (PDF417 and
                 Data Matrix can) reads as two frames, the second with whatever AIM id its data
                 starts with: where the allow-list matters, set the reader to wrap codes in
                 STX..ETX, inside which CR and LF are data.
``require_aim``  1 refuses frames that carry no AIM id; default 0.
``max_frame``    longest frame in bytes between its delimiters (AIM id included), 1 .. 65536;
                 default 1024. A longer frame is dropped whole, up to its terminator, and its
                 end is a refused read (denied by the lane with its length).
``idle_ms``      a half frame that sees no byte for this long is dropped; 0 disables;
                 default 300.
``noread``       comma-separated no-read strings to drop (percent-encode ``%`` as ``%25``);
                 default ``NR,%%NoRead``; ``noread=`` drops none.
``feedback``     ``none`` (default), ``honeywell`` (Host ACK escape strings), ``zebra`` (SSI
                 BEEP packets) or ``newland`` (command frames): how :meth:`SerialScanner.show`
                 shows a decision on the scanner itself (see :mod:`drivers.feedback`).
``exclusive``    1 (default) locks the port (``flock``) so no second reader (a getty, a modem
                 manager, a second agent) steals bytes; 0 only for diagnosis.
``retry_max_s``  cap of the reconnect backoff in seconds (0.1 .. 300); default 1. Retries start at
                 0.1 s and double up to this cap, so a scanner plugged back in is read again
                 within about this time; a failed attempt costs one failed open().

Frames end with CR, LF or CRLF, or are wrapped STX..ETX; bytes outside 0x20-0x7E refuse a frame.
Framing lives in :mod:`drivers.framing`.

Unplug: when reads fail, hit end of file or the device cannot be opened, the driver logs once,
discards the half frame, yields nothing and retries with capped exponential backoff; when the
device is back it reads again without a restart. :attr:`SerialScanner.connected`,
:attr:`SerialScanner.reconnects` and :attr:`SerialScanner.last_error` are for health and selftest.

The scanner is also an :class:`agent.ports.Indicator`: :meth:`SerialScanner.show` writes the
configured vendor feedback, or does nothing with ``feedback=none``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.backoff import Backoff
from agent.errors import DriverError
from agent.model import Decision
from agent.ports import Scan
from agent.redact import text_digest
from drivers.feedback import Feedback, feedback_for
from drivers.framing import Frame, Framer
from drivers.serial_url import SerialSettings, parse_serial_url

log = logging.getLogger(__name__)

RETRY_START_S = 0.1
READ_SIZE = 4096
QUEUE_MAX = 16  # scans waiting for the lane; more means a flood, not people
WRITE_BUFFER_MAX = 4096  # feedback bytes the device has not taken yet
ACK_TIMEOUT_S = 1.0  # host-ACK scanners get an answer within this, decision or not
CLOSE_TIMEOUT_S = 1.0
_END = object()

Opener = Callable[..., Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def describe_open_error(path: str, exc: BaseException) -> str:
    """A one-line reason and the fix a person needs, for logs, health and selftest."""
    err = getattr(exc, "errno", None)
    text = str(exc)
    if err == errno.ENOENT or (err is None and "No such file" in text):
        return f"{path}: no such device (unplugged, or wrong path; see ls /dev/serial/by-id/)"
    if err == errno.EACCES or "Permission denied" in text:
        return f"{path}: permission denied (is the service user in group dialout?)"
    if "exclusively lock" in text or err in (errno.EAGAIN, errno.EBUSY):
        return (
            f"{path}: busy, another process holds it (ModemManager? set ID_MM_DEVICE_IGNORE=1 "
            f"in the udev rule; a second gate-agent?)"
        )
    return f"{path}: {text or type(exc).__name__}"


@dataclass(slots=True, eq=False)  # each read is its own, whatever its fields
class _Pending:
    digest: str
    mono_ns: int  # the read's time: with the digest, which scan it is
    handle: asyncio.TimerHandle | None = None
    answered: bool = False


@dataclass(slots=True)
class _HostAck:
    """Answers every read of a scanner that waits for one (Honeywell Host ACK).

    Such a scanner stops reading until the host answers, so a frame the framer drops and does not
    pass on gets a bad answer at once (a refused read goes to the lane, whose verdict answers
    it); a read the lane passes over (a repeat, a code beside the presented one) gets that
    presentation's answer when the lane says so (:meth:`passed_over`); and a scan the lane has
    not shown within ``timeout_s`` (a lane busy with the previous person) gets the last answer
    again when it is the same text, else a bad one; the lane's own answer still follows.
    """

    feedback: Feedback
    send: Callable[[bytes], None]
    timeout_s: float = ACK_TIMEOUT_S
    pending: deque[_Pending] = field(default_factory=deque)
    last: tuple[str, bytes] | None = None

    def read(self, digest: str, mono_ns: int) -> None:
        entry = _Pending(digest, mono_ns)
        loop = asyncio.get_running_loop()
        entry.handle = loop.call_later(self.timeout_s, self._overdue, entry)
        self.pending.append(entry)

    def dropped(self) -> None:
        self.send(self.feedback.bad())

    def shown(self, payload: bytes, read: tuple[str, int] | None, receiving: bool = False) -> bool:
        """The lane shows ``payload`` for ``read`` (its digest and time; None: a show tied to no
        read): whether to send it. It answers that read when the scanner still waits on it;
        else it is sent only while the scanner waits on no read at all and is not sending one
        (``receiving``: a half frame buffered), a beep then."""
        entry = next((e for e in self.pending if (e.digest, e.mono_ns) == read), None)
        if entry is not None:
            self.pending.remove(entry)
            if entry.handle is not None:
                entry.handle.cancel()
            self.last = (entry.digest, payload)
            if not entry.answered:
                return True
        return not receiving and all(e.answered for e in self.pending)

    def passed_over(self, digest: str, mono_ns: int) -> None:
        """The lane passed the read over (part of a presentation it already answered): it gets
        that presentation's answer now, unless its timer gave one, and no later one. Left
        pending, the next decision shown answered it and every later answer went one read late
        (a review: a code beside a ticket, then the next person's read got a stray "bad")."""
        # Frames of one read share its time: the text tells them apart (two equal codes in
        # one read are one and the same to answer).
        entry = next((e for e in self.pending if (e.mono_ns, e.digest) == (mono_ns, digest)), None)
        if entry is None:
            return
        self.pending.remove(entry)
        if entry.handle is not None:
            entry.handle.cancel()
        if not entry.answered:
            self.send(self.last[1] if self.last is not None else self.feedback.bad())

    def _overdue(self, entry: _Pending) -> None:
        entry.handle = None
        if self.last is not None and self.last[0] == entry.digest and not entry.answered:
            with contextlib.suppress(ValueError):
                self.pending.remove(entry)  # a repeat: the lane will not show it
            self.send(self.last[1])
        elif not entry.answered:
            entry.answered = True
            self.send(self.feedback.bad())

    def clear(self) -> None:
        for entry in self.pending:
            if entry.handle is not None:
                entry.handle.cancel()
        self.pending.clear()


class SerialScanner:
    """A serial barcode scanner: a Scanner, and an Indicator through vendor feedback."""

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.source = f"serial:{settings.path}"
        self.feedback: Feedback | None = feedback_for(settings.feedback)
        framing = settings.framing
        if self.feedback is not None and self.feedback.replies():
            framing = replace(framing, discard=self.feedback.replies())
        self.framer = Framer(framing, name=f"serial scanner {settings.path}")
        self.reconnects = 0
        self.last_error: str | None = None
        self._opener: Opener | None = None
        cap = settings.retry_max_s
        self._backoff = Backoff(min(RETRY_START_S, cap), cap)  # ValueError unless 0 < cap < inf
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self.bytes_read = 0  # from the device since the driver was made (tests, diagnosis)
        self.scans_dropped = 0  # frames dropped because the lane was that far behind, in all
        self._overflow = 0  # ... since the last overflow warning
        self._overflow_last = ("", 0)  # the last one's digest and length
        self._overflow_warned = -1e9
        self._overflow_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ever_connected = False
        self._closed = False
        self._down_since: float | None = None
        self._ack: _HostAck | None = None
        if self.feedback is not None and self.feedback.host_ack:
            self._ack = _HostAck(self.feedback, self._write)

    @classmethod
    def from_url(cls, url: str, base: Path | None = None) -> SerialScanner:
        """Build from a ``serial://`` URL (``base`` is unused: the path is absolute)."""
        return cls(parse_serial_url(url))

    @property
    def connected(self) -> bool:
        """True while the device is open and being read."""
        return self._writer is not None

    async def open(self) -> None:
        """Start reading; makes the first connection attempt before it returns.

        A device that is absent or busy is not an error here: it is retried in the background
        (see :attr:`last_error`). Raises DriverError when pyserial-asyncio-fast is missing.
        """
        if self._task is not None:
            return
        if self._opener is None:
            try:
                import serial_asyncio_fast
            except ImportError as exc:
                raise DriverError(
                    "serial scanner needs pyserial-asyncio-fast (pip install pyserial-asyncio-fast)"
                ) from exc
            self._opener = serial_asyncio_fast.open_serial_connection
        if self._closed:  # reopened: a fresh stream (the old one was ended)
            self._queue, self._closed = asyncio.Queue(), False
        link = await self._connect()
        self._task = asyncio.create_task(self._run(link), name=f"serial {self.settings.path}")

    async def close(self) -> None:
        """Stop reading and release the port; the scan stream ends. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._warn_overflow()  # drops still held back are said now
            self._queue.put_nowait(_END)
            self._closed = True
        await self._release()
        if self._ack is not None:
            self._ack.clear()

    async def scans(self) -> AsyncIterator[Scan]:
        """Scans until :meth:`close`; nothing is yielded while the device is away."""
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            assert isinstance(item, Scan)
            yield item

    def passed_over(self, scan: Scan) -> None:
        """The lane passed ``scan`` over (:class:`agent.ports.AnswersReads`); a scanner waiting
        for an answer to it gets its presentation's."""
        if self._ack is not None:
            self._ack.passed_over(text_digest(scan.text), scan.mono_ns)

    async def show(self, decision: Decision, message: str, read: Scan | None = None) -> None:
        """Send the vendor's good/bad feedback; nothing with ``feedback=none``.

        With host ACK the feedback answers ``read`` (the scan the decision is for); a show that
        answers no read the scanner waits on (one tied to no read, or to one the driver's timer
        answered) is sent only while the scanner waits on none: it would take the bytes for
        the answer to the read it waits on, and every later answer would come one read late.
        Never waits for the device. Raises DriverError when the scanner is disconnected or not
        taking the bytes.
        """
        if self.feedback is None:
            return
        payload = self.feedback.good() if decision.admitted else self.feedback.bad()
        if self._ack is not None:
            key = None if read is None else (text_digest(read.text), read.mono_ns)
            if not self._ack.shown(payload, key, self.framer.pending):
                log.debug("serial scanner %s: feedback for no waiting read not sent (host ACK)",
                          self.settings.path)  # fmt: skip
                return
        if self._writer is None:
            raise DriverError(f"serial scanner {self.settings.path}: not connected, feedback lost")
        self._write(payload, strict=True)

    def _write(self, payload: bytes, strict: bool = False) -> None:
        writer = self._writer
        if writer is None or writer.transport.is_closing():
            if strict:
                raise DriverError(f"serial scanner {self.settings.path}: not connected")
            return
        if writer.transport.get_write_buffer_size() > WRITE_BUFFER_MAX:
            msg = f"serial scanner {self.settings.path}: device is not taking feedback bytes"
            if strict:
                raise DriverError(msg)
            log.warning("%s", msg)
            return
        log.debug("serial scanner %s: wrote %d feedback bytes", self.settings.path, len(payload))
        writer.write(payload)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """One open attempt; None (logged, once per outage) when the device is not usable."""
        assert self._opener is not None
        s = self.settings
        try:
            reader, writer = await self._opener(
                url=s.path, baudrate=s.baud, exclusive=s.exclusive, limit=READ_SIZE * 4
            )
        except (OSError, ValueError) as exc:  # serial.SerialException is an OSError
            self._note_failure(describe_open_error(s.path, exc))
            return None
        self._writer = writer
        if self._ever_connected:
            self.reconnects += 1
            away = time.monotonic() - (self._down_since or time.monotonic())
            log.info(
                "serial scanner %s: reconnected after %.1f s (reconnect %d)",
                s.path,
                away,
                self.reconnects,
            )
        else:
            log.info("serial scanner %s: open (%d baud)", s.path, s.baud)
        self._ever_connected = True
        self._down_since = None
        self.last_error = None
        if self.feedback is not None and (setup := self.feedback.setup()):
            self._write(setup)
        return reader, writer

    def _note_failure(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "serial scanner %s; retrying every <= %.1f s",
                reason,
                self.settings.retry_max_s,
            )
        elif reason != self.last_error and "no such device" not in reason:
            log.warning("serial scanner %s", reason)  # e.g. back, but now permission denied
        else:
            log.debug("serial scanner %s", reason)
        self.last_error = reason

    async def _run(self, link: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        backoff, cap = self._backoff, self.settings.retry_max_s
        backoff.reset()
        loop = asyncio.get_running_loop()
        while True:
            if link is not None:
                started = loop.time()
                try:
                    reason = await self._pump(link[0])
                except Exception:  # a bug must cost one connection, never the reader
                    log.exception("serial scanner %s: reader failed", self.settings.path)
                    reason = "internal error"
                await self._release()
                self.framer.reset(time.monotonic_ns())
                if self._ack is not None:
                    self._ack.clear()
                self._note_failure(f"{self.settings.path}: lost ({reason})")
                if loop.time() - started >= cap:  # it was up a while: retry quickly again
                    backoff.reset()
            await asyncio.sleep(backoff.next_delay())
            link = await self._connect()

    async def _pump(self, reader: asyncio.StreamReader) -> str:
        """Read and frame until the link fails; returns why it ended."""
        framer = self.framer
        try:
            while True:
                deadline = framer.deadline_ns()
                if deadline is None:
                    data = await reader.read(READ_SIZE)
                else:
                    wait = max(0.0, (deadline - time.monotonic_ns()) / 1e9)
                    try:
                        async with asyncio.timeout(wait):
                            data = await reader.read(READ_SIZE)
                    except TimeoutError:
                        rejected = framer.rejected
                        framer.expire(time.monotonic_ns())  # an over-long frame that never ended
                        self._answer_drops(framer.rejected - rejected)  # ... is a read to answer
                        continue
                if not data:
                    return "end of file"
                self._handle(data, time.monotonic_ns())
        except OSError as exc:
            return str(exc) or type(exc).__name__

    def _handle(self, data: bytes, now_ns: int) -> None:
        log.debug("serial scanner %s: %d bytes", self.settings.path, len(data))
        self.bytes_read += len(data)
        rejected = self.framer.rejected
        frames = self.framer.feed(data, now_ns)
        for frame in frames:
            self._emit(frame)
        # A refused read goes to the lane, which answers it; every other rejected read is
        # answered now.
        refused = sum(frame.refused is not None for frame in frames)
        self._answer_drops(self.framer.rejected - rejected - refused)

    def _answer_drops(self, count: int) -> None:
        """Answer ``count`` reads nobody passes on (host ACK: the scanner waits for each)."""
        if self._ack is not None:
            for _ in range(count):
                self._ack.dropped()

    def _emit(self, frame: Frame) -> None:
        digest = text_digest(frame.text)
        if self._queue.qsize() >= QUEUE_MAX:
            self.scans_dropped += 1
            self._overflow += 1
            self._overflow_last = (digest, len(frame.text))
            # A noise burst must not flood the log: one line a second, counting all it held
            # back (a flood's drops were said only when another came a second after the line).
            wait = self._overflow_warned + 1.0 - time.monotonic()
            if wait <= 0:
                self._warn_overflow()
            elif self._overflow_timer is None:
                self._overflow_timer = asyncio.get_running_loop().call_later(
                    wait, self._warn_overflow
                )
            if self._ack is not None:
                self._ack.dropped()
            return
        log.debug(
            "serial scanner %s: frame %s (%d chars, %s)",
            self.settings.path,
            digest,
            len(frame.text),
            frame.refused or frame.symbology or "no AIM id",
        )
        scan = Scan(frame.text, self.source, frame.mono_ns, frame.symbology, frame.refused)
        self._queue.put_nowait(scan)
        if self._ack is not None:
            self._ack.read(digest, frame.mono_ns)

    def _warn_overflow(self) -> None:
        """Say how many scans were dropped since the last such line (none: nothing)."""
        if self._overflow_timer is not None:
            self._overflow_timer.cancel()
            self._overflow_timer = None
        if not self._overflow:
            return
        log.warning(
            "serial scanner %s: %d scans waiting, dropped %d (last %s, %d chars; %d in all)",
            self.settings.path,
            self._queue.qsize(),
            self._overflow,
            *self._overflow_last,
            self.scans_dropped,
        )
        self._overflow_warned, self._overflow = time.monotonic(), 0

    async def _release(self) -> None:
        """Close the transport (if still open) and wait until the port is released."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        transport: Any = writer.transport
        if not transport.is_closing():
            transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT_S)
