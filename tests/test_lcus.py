"""LCUS USB serial relay boards over a socat pty pair: the exact bytes arrive, timed as a pulse."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import DriverError
from agent.ports import GateIO
from drivers import registry
from drivers.lcus import LcusRelay, command
from tests import needs
from tests.polling import until

serial: Any = importlib.import_module("serial")  # pyserial ships no type information
pytestmark = needs.mark(shutil.which("socat"), "socat (the relay tests run on ptys)")

ROOT = Path(__file__).resolve().parent.parent
ON1, OFF1 = bytes.fromhex("A0 01 01 A2"), bytes.fromhex("A0 01 00 A1")


class Host:
    """The board's side of the pty: every byte with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.bytes = bytearray()
        self.times: list[float] = []
        asyncio.get_running_loop().add_reader(self.fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except OSError:
            return
        now = time.monotonic()
        self.bytes += data
        self.times += [now] * len(data)

    async def wait_for(self, count: int, within_s: float = 3.0) -> bytes:
        await until(lambda: len(self.bytes) >= count, within_s, f"{count} bytes at the board")
        return bytes(self.bytes)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


class PtyPair:
    def __init__(self, tmp: Path) -> None:
        self.relay, self.host = tmp / "lcus-relay", tmp / "lcus-host"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Host:
        self.proc = await asyncio.create_subprocess_exec(
            "socat",
            f"pty,raw,echo=0,link={self.relay}",
            f"pty,raw,echo=0,link={self.host}",
            stderr=asyncio.subprocess.DEVNULL,
        )
        await until(lambda: self.relay.exists() and self.host.exists(), 2, "socat's pty pair")
        return Host(self.host)

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 5)
            self.proc = None
        await until(lambda: not self.relay.exists(), 2, "socat removes its pty links")


@pytest.fixture
async def ptys(tmp_path: Path) -> AsyncIterator[PtyPair]:
    pair = PtyPair(tmp_path)
    yield pair
    await pair.stop()


def test_command_bytes() -> None:
    assert command(1, True) == ON1
    assert command(1, False) == OFF1
    assert command(2, True).hex(" ") == "a0 02 01 a3"
    assert command(8, False).hex(" ") == "a0 08 00 a8"
    with pytest.raises(ValueError):
        command(0, True)


async def test_open_pulse_close_send_exactly_these_bytes(ptys: PtyPair) -> None:
    host = await ptys.start()
    relay = registry.create("gate", f"lcus://{ptys.relay}?pulse_ms=100")
    assert isinstance(relay, LcusRelay) and isinstance(relay, GateIO)
    await relay.open()
    await relay.open()
    assert await host.wait_for(4) == OFF1  # switched off at start, once
    started = time.monotonic()
    await relay.grant("entry", "e1")
    assert time.monotonic() - started >= 0.1  # the pulse's length, where the relay times it
    assert await host.wait_for(12) == OFF1 + ON1 + OFF1
    # Seen from the host the gap also carries this test's own read latency (the reader shares
    # the relay's loop), so it bounds only the far side: no stuck relay.
    assert host.times[4] < host.times[8] < host.times[4] + 0.3
    assert relay.pulses == 1
    await relay.close()
    await relay.close()
    assert await host.wait_for(16) == OFF1 + ON1 + OFF1 + OFF1
    await asyncio.sleep(0.05)  # the scenario: a quiet moment in which a repeated command would show
    assert len(host.bytes) == 16  # nothing more: no repeated "to be sure" commands
    host.close()


async def test_channel_three(ptys: PtyPair) -> None:
    host = await ptys.start()
    relay = LcusRelay.from_url(f"lcus://{ptys.relay}?channel=3&pulse_ms=20&baud=9600")
    await relay.open()
    await relay.grant("exit", "x1")
    await relay.close()
    on3, off3 = bytes.fromhex("A0 03 01 A4"), bytes.fromhex("A0 03 00 A3")
    assert await host.wait_for(16) == off3 + on3 + off3 + off3
    host.close()


async def test_cancelled_pulse_still_switches_off(ptys: PtyPair) -> None:
    host = await ptys.start()
    relay = LcusRelay.from_url(f"lcus://{ptys.relay}?pulse_ms=5000")
    await relay.open()
    task = asyncio.create_task(relay.grant("entry", "e1"))
    assert await host.wait_for(8) == OFF1 + ON1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await host.wait_for(12) == OFF1 + ON1 + OFF1
    await relay.close()
    host.close()


async def test_unplugged_board_raises_then_reconnects(ptys: PtyPair) -> None:
    host = await ptys.start()
    relay = LcusRelay.from_url(f"lcus://{ptys.relay}?pulse_ms=20")
    await relay.open()
    await host.wait_for(4)
    host.close()
    await ptys.stop()  # USB unplug: the tty goes away under the open port
    with pytest.raises(DriverError, match="lcus relay") as info:
        await relay.grant("entry", "e1")
    assert isinstance(info.value.__cause__, OSError)
    host = await ptys.start()  # plugged back in at the same by-id path
    await relay.grant("entry", "e2")
    assert await host.wait_for(8) == ON1 + OFF1
    await relay.close()
    host.close()


async def test_open_errors_say_what_to_fix(ptys: PtyPair, tmp_path: Path) -> None:
    missing = LcusRelay.from_url(f"lcus://{tmp_path}/nothing-here")
    with pytest.raises(DriverError, match="no such device") as info:
        await missing.open()
    assert isinstance(info.value.__cause__, OSError)
    await missing.close()
    host = await ptys.start()
    other_process = serial.Serial(str(ptys.relay), exclusive=True)  # e.g. ModemManager
    relay = LcusRelay.from_url(f"lcus://{ptys.relay}")
    with pytest.raises(DriverError, match="locked by another process"):
        await relay.open()
    other_process.close()
    await relay.open()  # nothing was left half-open by the failure
    await relay.close()
    assert await host.wait_for(8) == OFF1 + OFF1
    host.close()


async def test_two_channels_of_one_board_share_the_port(ptys: PtyPair) -> None:
    host = await ptys.start()
    entry = LcusRelay.from_url(f"lcus://{ptys.relay}?channel=1&pulse_ms=20")
    exit_ = LcusRelay.from_url(f"lcus://{ptys.relay}?channel=2&pulse_ms=20")
    await entry.open()
    await exit_.open()
    with pytest.raises(DriverError, match="already in use at baud=9600"):
        await LcusRelay.from_url(f"lcus://{ptys.relay}?channel=3&baud=19200").open()
    await exit_.grant("exit", "x1")
    await entry.close()
    await exit_.grant("exit", "x2")  # still working after the other channel closed
    await exit_.close()
    on2, off2 = command(2, True), command(2, False)
    expected = OFF1 + off2 + on2 + off2 + OFF1 + on2 + off2 + off2
    assert await host.wait_for(len(expected)) == expected
    alone = serial.Serial(str(ptys.relay), exclusive=True)  # the port was really let go
    alone.close()
    host.close()


async def test_two_channels_pulsed_at_once_overlap_with_whole_frames(ptys: PtyPair) -> None:
    """An entry and an exit lane on channels 1 and 2 of one board, released at the same moment:
    both pulses run together (the shared port only orders the 4-byte commands), every command
    arrives whole, and each channel gets on then off."""
    host = await ptys.start()
    entry = LcusRelay.from_url(f"lcus://{ptys.relay}?channel=1&pulse_ms=300")
    exit_ = LcusRelay.from_url(f"lcus://{ptys.relay}?channel=2&pulse_ms=300")
    await entry.open()
    await exit_.open()
    await host.wait_for(8)
    started = time.monotonic()
    await asyncio.gather(entry.grant("entry", "e1"), exit_.grant("exit", "x1"))
    took = time.monotonic() - started
    assert took >= 0.3  # a pulse's length (that the two overlap, the frames below show)
    data = await host.wait_for(24)
    frames = [data[i : i + 4] for i in range(0, len(data), 4)]
    on2, off2 = command(2, True), command(2, False)
    assert frames[:2] == [OFF1, off2]
    pulses = frames[2:]
    assert sorted(pulses) == sorted([ON1, OFF1, on2, off2])  # whole, valid frames only
    assert set(pulses[:2]) == {ON1, on2}  # both on before either goes off: they overlap
    # The second on waited for the port, not for the first pulse to end.
    assert host.times[12] - host.times[8] < 0.3
    assert (entry.pulses, exit_.pulses) == (1, 1)
    await entry.close()
    await exit_.close()
    assert await host.wait_for(32) == data + OFF1 + off2
    host.close()


async def test_passage_choices(ptys: PtyPair) -> None:
    host = await ptys.start()
    none = LcusRelay.from_url(f"lcus://{ptys.relay}?pulse_ms=20")
    assert none.emergency is False
    await none.open()
    assert await none.wait_passage(1.0) is False  # no grant, no passage
    await none.grant("entry", "e1")
    started = time.monotonic()
    assert await none.wait_passage(5.0) is True
    assert time.monotonic() - started < 2.5  # at once, not at the 5 s timeout
    events = none.events()
    await none.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(events), 1)

    auto = LcusRelay.from_url(f"lcus://{ptys.relay}?pulse_ms=20&passage=auto_ms:1000")
    await auto.open()
    started = time.monotonic()
    await auto.grant("entry", "e2")
    assert await auto.wait_passage(5.0) is True
    assert 1.0 <= time.monotonic() - started < 4  # counted from the grant, pulse included
    await auto.grant("entry", "e3")
    started = time.monotonic()
    assert await auto.wait_passage(0.05) is False  # 1 s would be past the lane's timeout
    assert time.monotonic() - started < 0.9  # the lane's timeout ended it, not the 1 s
    await auto.close()
    host.close()


async def test_interpreter_exit_mid_pulse_switches_off(ptys: PtyPair) -> None:
    host = await ptys.start()
    script = f"""
import asyncio, sys
from drivers.lcus import LcusRelay

relay = LcusRelay.from_url("lcus://{ptys.relay}?pulse_ms=10000")
loop = asyncio.new_event_loop()
loop.run_until_complete(relay.open())
pulse = loop.create_task(relay.grant("entry", "x"))
loop.run_until_complete(asyncio.sleep(0.3))  # the scenario: exit 0.3 s into a 10 s pulse
print("exiting mid-pulse", flush=True)
sys.exit(0)  # no cancel, no close: only the atexit hook is left
"""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert b"exiting mid-pulse" in out
    assert await host.wait_for(12) == OFF1 + ON1 + OFF1
    assert host.times[8] - host.times[4] < 5  # long before the 10 s pulse would have ended
    host.close()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("lcus://ttyUSB0", "must be absolute"),
        ("lcus://dev/ttyUSB0?channel=1", "must be absolute"),
        ("lcus:///dev/ttyUSB0?channel=9", "channel must be an integer in 1..8"),
        ("lcus:///dev/ttyUSB0?baud=fast", "baud must be an integer"),
        ("lcus:///dev/ttyUSB0?pulse_ms=0", "pulse_ms must be an integer in 20..10000"),
        ("lcus:///dev/ttyUSB0?passage=maybe", "passage must be none or auto_ms:N"),
        ("lcus:///dev/ttyUSB0?passage=auto_ms:x", "passage must be none or auto_ms:N"),
        ("lcus:///dev/ttyUSB0?relay=1", "unknown parameter relay"),
    ],
)
def test_bad_urls(url: str, words: str) -> None:
    with pytest.raises(DriverError) as info:
        LcusRelay.from_url(url)
    assert words in str(info.value)
