"""Simulated twins of the scanner, the gate and the indicator, scriptable for tests and demos.

URLs (relative paths are taken from ``base``, normally the config file's folder)::

    sim://file?path=scans.txt&interval_ms=0&end=stop   one scan per line of a file
    sim://stdin?end=stop                               one scan per line of standard input
    sim://socket?path=/run/gate/scan.sock              a Unix socket; each line sent is a scan
    sim://queue                                        scans pushed with SimScanner.feed()

    sim://gate?passage_ms=300&log=pulses.log           passage after N ms; every pulse appended
                                                       and fsync'd to the log
    sim://gate?passage=never | passage=command         never / only when passage() is called
    sim://gate?plan=pass,none,pass                     outcome per grant, then the default

    sim://indicator                                    keeps what was shown (for tests)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from agent.errors import DriverError
from agent.model import Decision
from agent.ports import InputEvent, InputName, Scan, too_long
from agent.redact import text_digest
from drivers.url_params import UrlParams

log = logging.getLogger(__name__)

MAX_LINE = 4096
_MAX_STDIN_FILE = 16 * 1024 * 1024  # a redirected file is read whole; more is a mistake
_END = object()


SCANNER_MODES = ("file", "stdin", "socket", "queue")


def _params(url: str) -> tuple[str, UrlParams]:
    p = UrlParams(url, "sim")
    return p.netloc or p.path.strip("/"), p


def _device_params(url: str, kind: str) -> UrlParams:
    """A simulated turnstile's or indicator's URL: its name is a label (sim://gate-a), but not
    a scanner's mode (found in a user trial: gate = "sim://stdin" passed the check)."""
    where, p = _params(url)
    if where in SCANNER_MODES:
        raise p.error(f"sim://{where} is a scanner; a simulated {kind} is sim://{kind}")
    return p


def _path(value: str | None, base: Path | None, url: str) -> Path:
    if not value:
        raise DriverError(f"{url}: missing path=")
    p = Path(value).expanduser()
    return p if p.is_absolute() or base is None else base / p


class SimScanner:
    """A scanner whose scans come from a file, stdin, a Unix socket or :meth:`feed`."""

    def __init__(
        self,
        mode: str = "queue",
        *,
        path: Path | None = None,
        interval_ms: int = 0,
        end: str = "stop",
        source: str = "sim",
    ) -> None:
        if mode not in SCANNER_MODES:
            raise DriverError(f"sim scanner: unknown mode {mode!r} (file, stdin, socket, queue)")
        self.mode, self.path, self.interval_ms, self.end = mode, path, interval_ms, end
        self.source = source
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.AbstractServer | None = None

    @classmethod
    def from_url(cls, url: str, base: Path | None = None) -> SimScanner:
        mode, p = _params(url)
        path = _path(p.text("path"), base, url) if mode in ("file", "socket") else None
        scanner = cls(
            mode,
            path=path,
            interval_ms=p.integer("interval_ms", 0, 0),
            end=p.choice("end", "stop", ("stop", "wait")),
            source=p.text("source", f"sim-{mode}"),
        )
        p.finish()
        return scanner

    def feed(self, text: str) -> None:
        """Present ``text`` as if it had just been scanned."""
        self._queue.put_nowait(Scan(text, self.source, time.monotonic_ns()))

    def _refuse(self, length: int) -> None:
        """An over-long line: read, refused (the lane shows it is not a ticket)."""
        log.warning("sim scanner: dropped over-long line (%d chars)", length)
        refused = too_long(length, MAX_LINE)
        self._queue.put_nowait(Scan("", self.source, time.monotonic_ns(), refused=refused))

    def finish(self) -> None:
        """End the scan stream (the lane's loop then returns)."""
        self._queue.put_nowait(_END)

    async def open(self) -> None:
        if self.mode == "file":
            assert self.path is not None
            try:
                data = self.path.read_bytes()
            except OSError as exc:
                raise DriverError(f"sim scanner: cannot read {self.path}: {exc}") from exc
            # Bytes that are not UTF-8 are a scan like any (replaced, then decided), as on
            # stdin and the socket: a security trial's one bad line stopped the whole gate.
            lines = data.decode("utf-8", "replace").splitlines()
            self._tasks.append(asyncio.create_task(self._play(lines)))
        elif self.mode == "stdin":
            self._tasks.append(asyncio.create_task(self._read_stdin()))
        elif self.mode == "socket":
            assert self.path is not None
            try:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                self._server = await asyncio.start_unix_server(
                    self._client, path=str(self.path), limit=MAX_LINE + 2
                )
            except OSError as exc:  # a missing folder, a path past 107 bytes, no permission
                raise DriverError(
                    f"sim scanner: cannot listen on {self.path}: {exc.strerror or exc}"
                ) from None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._queue.put_nowait(_END)

    def _accept(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line:
            return
        if len(line) > MAX_LINE:
            self._refuse(len(line))
            return
        log.debug("sim scanner: line %s (%d chars)", text_digest(line), len(line))
        self.feed(line)

    async def _play(self, lines: Sequence[str]) -> None:
        for line in lines:
            if self.interval_ms:
                await asyncio.sleep(self.interval_ms / 1000)
            self._accept(line)
        if self.end == "stop":
            self.finish()

    async def _read_stdin(self) -> None:
        mode = os.fstat(sys.stdin.fileno()).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty():
            reader = asyncio.StreamReader(limit=MAX_LINE + 2)
            loop = asyncio.get_running_loop()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
            await self._read_stream(reader)
        else:  # /dev/null (a service's stdin) or a redirected file: epoll cannot watch those
            data = await asyncio.to_thread(sys.stdin.buffer.read, _MAX_STDIN_FILE + 1)
            if len(data) > _MAX_STDIN_FILE:
                log.warning("sim scanner: stdin beyond %d bytes ignored", _MAX_STDIN_FILE)
                data = data[: data.rfind(b"\n", 0, _MAX_STDIN_FILE) + 1]
            await self._play([line.decode("utf-8", "replace") for line in data.split(b"\n")])
            return
        if self.end == "stop":
            self.finish()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._read_stream(reader)
        finally:
            writer.close()

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        discarded = 0  # inside an over-long line: its bytes so far, dropped up to its newline
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:  # end of stream
                if discarded:
                    self._refuse(discarded + len(exc.partial))
                elif exc.partial:
                    self._accept(exc.partial.decode("utf-8", "replace"))
                return
            except asyncio.LimitOverrunError as exc:
                await reader.readexactly(exc.consumed)
                discarded += exc.consumed
                continue
            if discarded:
                self._refuse(discarded + len(raw.rstrip(b"\r\n")))
                discarded = 0
                continue
            self._accept(raw.decode("utf-8", "replace"))

    async def scans(self) -> AsyncIterator[Scan]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            assert isinstance(item, Scan)
            yield item


class SimGate:
    """A turnstile: counts and logs relay pulses, reports passage per a script."""

    def __init__(
        self,
        *,
        passage_ms: int | None = 300,
        plan: Sequence[bool] = (),
        log_path: Path | None = None,
    ) -> None:
        self.passage_ms = passage_ms
        self.plan = list(plan)
        self.log_path = log_path
        self.pulses: list[str] = []
        self._emergency = False
        self._events: asyncio.Queue[InputEvent | None] = asyncio.Queue()
        self._passed = asyncio.Event()
        self._current: bool | None = None
        self._fd: int | None = None

    @classmethod
    def from_url(cls, url: str, base: Path | None = None) -> SimGate:
        p = _device_params(url, "gate")
        passage = p.choice("passage", "auto", ("auto", "never", "command"))
        passage_ms = p.integer("passage_ms", 300, 0)
        plan_words = p.items("plan") or []
        if any(w not in ("pass", "none") for w in plan_words):
            raise p.error("plan is a comma list of pass/none")
        log_text = p.text("log")
        log_path = _path(log_text, base, url) if log_text else None
        p.finish()
        return cls(
            passage_ms=passage_ms if passage == "auto" else None,
            plan=[w == "pass" for w in plan_words],
            log_path=log_path,
        )

    async def open(self) -> None:
        if self.log_path is not None and self._fd is None:
            try:
                self._fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:  # a missing folder, a folder, no permission
                raise DriverError(
                    f"sim gate: cannot open log= {self.log_path}: {exc.strerror or exc}"
                ) from None

    async def close(self) -> None:
        self._events.put_nowait(None)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def grant(self, direction: str, ref: str) -> None:
        self.pulses.append(ref)
        if self._fd is not None:
            os.write(self._fd, f"pulse {len(self.pulses)} {direction} {ref}\n".encode())
            os.fsync(self._fd)
        self._current = self.plan.pop(0) if self.plan else None
        self._passed.clear()
        log.info("sim gate: relay pulse %d (%s)", len(self.pulses), direction)

    def passage(self) -> None:
        """Signal that a person passed (for passage=command)."""
        self._passed.set()

    @property
    def emergency(self) -> bool:
        return self._emergency

    def set_input(self, name: InputName, active: bool) -> None:
        """Drive an input as the wiring would (emergency release, alarm)."""
        if name == "emergency":
            self._emergency = active
        self._events.put_nowait(InputEvent(name, active, time.monotonic_ns()))

    async def events(self) -> AsyncIterator[InputEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def wait_passage(self, timeout_s: float) -> bool:
        if self._current is False:
            await asyncio.sleep(timeout_s)
            return False
        if self._current is True:  # scripted to pass: within the timeout, whatever passage_ms
            await asyncio.sleep(min((self.passage_ms or 0) / 1000, timeout_s / 2))
            return True
        if self.passage_ms is not None:
            delay = self.passage_ms / 1000
            if delay <= timeout_s:
                await asyncio.sleep(delay)
                return True
            await asyncio.sleep(timeout_s)
            return False
        try:  # asyncio.timeout: on 3.11 wait_for can swallow a cancel that meets the passage
            async with asyncio.timeout(timeout_s):
                await self._passed.wait()
        except TimeoutError:
            return False
        return True


class SimIndicator:
    """Keeps every shown decision, for tests and the demo."""

    def __init__(self) -> None:
        self.shown: list[tuple[Decision, str]] = []

    @classmethod
    def from_url(cls, url: str, base: Path | None = None) -> SimIndicator:
        p = _device_params(url, "indicator")
        p.finish()
        return cls()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def show(self, decision: Decision, message: str, read: Scan | None = None) -> None:
        self.shown.append((decision, message))
