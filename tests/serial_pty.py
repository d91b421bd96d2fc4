"""Test helpers for serial scanners: a socat pty pair and a background scan collector."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

from agent.ports import Scan
from drivers.serial_scanner import SerialScanner
from tests.polling import until, until_sync

SOCAT = shutil.which("socat")
TICKET = "TK1:" + "6BFOXN*TS0VN-8F.1$K%L:" * 7  # printable, 158 chars, shaped like a TK1 text


class PtyPair:
    """A socat pty pair standing in for a serial scanner.

    ``host`` is the stable link the driver opens; the device side is ours: bytes written there
    arrive at the driver, bytes the driver writes arrive there.
    """

    def __init__(self, directory: Path) -> None:
        self.host = directory / "scanner"
        self.device_path = directory / "device"
        self.proc: subprocess.Popen[bytes] | None = None
        self.fd: int | None = None

    def start(self, timeout_s: float = 5.0) -> None:
        """Create the pair (again) at the same link paths and open the device side."""
        assert SOCAT is not None
        for link in (self.host, self.device_path):
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
        self.proc = subprocess.Popen(
            [
                SOCAT,
                f"pty,raw,echo=0,link={self.host}",
                f"pty,raw,echo=0,link={self.device_path}",
            ],
            stdin=subprocess.DEVNULL,
        )
        proc = self.proc
        until_sync(
            lambda: proc.poll() is not None or (self.host.exists() and self.device_path.exists()),
            timeout_s,
            "socat creates the pty pair",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"socat exited ({proc.returncode}) without creating the pty pair")
        self.fd = os.open(self.device_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    def url(self, query: str = "") -> str:
        return f"serial://{self.host}" + (f"?{query}" if query else "")

    def write(self, data: bytes) -> None:
        """Write everything, waiting while the pty buffer is full."""
        assert self.fd is not None
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                select.select([], [self.fd], [], 5.0)  # until the driver has read some

    def read_next(self, n: int, timeout_s: float = 5.0) -> bytes:
        """The next ``n`` bytes the driver writes, once they have all arrived (fewer when
        ``timeout_s`` passes first, which the caller's comparison then shows). Nothing past the
        ``n``th byte is taken: a byte too many is read by the next call."""
        assert self.fd is not None
        deadline = time.monotonic() + timeout_s
        out = b""
        while len(out) < n and (left := deadline - time.monotonic()) > 0:
            if select.select([self.fd], [], [], left)[0]:
                out += os.read(self.fd, n - len(out))
        return out

    def read_for(self, wait_s: float) -> bytes:
        """Everything the driver wrote to the device within ``wait_s`` (for checking that nothing
        comes: to wait for bytes that should come, use :meth:`read_next`)."""
        assert self.fd is not None
        deadline = time.monotonic() + wait_s
        out = b""
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.fd], [], [], left)[0]:
                out += os.read(self.fd, 4096)
        return out

    def kill(self) -> None:
        """Make the device vanish at once (SIGKILL, like a pulled cable)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None
        for link in (self.host, self.device_path):
            with contextlib.suppress(FileNotFoundError):
                link.unlink()


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[SerialScanner]:
    scanner = SerialScanner.from_url(url)
    await scanner.open()
    try:
        yield scanner
    finally:
        await scanner.close()


class Collector:
    """Drains a scanner's stream in the background, as the lane would."""

    def __init__(self, scanner: SerialScanner) -> None:
        self.scans: list[Scan] = []
        self._task = asyncio.create_task(self._run(scanner))

    async def _run(self, scanner: SerialScanner) -> None:
        async for scan in scanner.scans():
            self.scans.append(scan)

    @property
    def texts(self) -> list[str]:
        """Each scan's text; a code read but refused as ``refused: <why>`` (its text is empty)."""
        assert all(s.text == "" for s in self.scans if s.refused is not None)
        return [s.text if s.refused is None else f"refused: {s.refused}" for s in self.scans]

    async def wait(self, count: int, timeout_s: float = 3.0) -> list[str]:
        await until(lambda: len(self.scans) >= count, timeout_s, f"{count} scans collected")
        return self.texts

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
