"""The serial scanner driver over real ptys made by socat: URL, framing, unplug, the lane."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import sys
import time
from pathlib import Path

import pytest

from agent.app import config
from agent.app.daemon import open_gate
from agent.errors import DriverError
from agent.issuer import Issuer
from agent.lane import Outcome
from agent.model import Reason
from agent.ports import Indicator, Scanner
from drivers.framing import UNFRAMED_READ, DropReason, Frame
from drivers.serial_scanner import QUEUE_MAX, SerialScanner
from drivers.serial_url import parse_serial_url
from drivers.sim import SimGate
from tests import needs
from tests.conftest import WriteConfig
from tests.polling import until
from tests.serial_pty import SOCAT, TICKET, Collector, PtyPair, opened

pytestmark = needs.mark(SOCAT, "socat (the serial tests run on ptys)")


# --- URL ---------------------------------------------------------------------------------------


def test_full_url_is_parsed() -> None:
    s = parse_serial_url(
        "serial:///dev/serial/by-id/usb-XYZ%20Scanner?baud=115200&aim=Q1,z,L,d&require_aim=1"
        "&max_frame=512&idle_ms=150&noread=NR,%25%25NoRead,ERR&feedback=zebra&exclusive=0"
        "&retry_max_s=2.5"
    )
    assert s.path == "/dev/serial/by-id/usb-XYZ Scanner"
    assert (s.baud, s.exclusive, s.retry_max_s, s.feedback) == (115200, False, 2.5, "zebra")
    f = s.framing
    assert (f.max_frame, f.idle_ns, f.require_aim) == (512, 150_000_000, True)
    assert f.aim_allow == frozenset({"Q1", "z", "L", "d"})
    assert f.noread == {"NR", "%%NoRead", "ERR"}
    defaults = parse_serial_url("serial:///dev/ttyACM0")
    assert (defaults.baud, defaults.exclusive, defaults.feedback) == (9600, True, "none")
    assert defaults.framing.aim_allow is None and defaults.framing.noread == {"NR", "%%NoRead"}
    assert parse_serial_url("serial:///dev/x?noread=").framing.noread == frozenset()


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("serial://dev/ttyACM0", "absolute"),
        ("serial:dev/ttyACM0", "absolute"),
        ("serial:///dev/x?baud=9601", "baud"),
        ("serial:///dev/x?baud=fast", "baud"),
        ("serial:///dev/x?aim=Q12", "aim"),
        ("serial:///dev/x?aim=", "aim"),
        ("serial:///dev/x?require_aim=yes", "require_aim"),
        ("serial:///dev/x?max_frame=0", "max_frame"),
        ("serial:///dev/x?max_frame=1e3", "max_frame"),
        ("serial:///dev/x?idle_ms=-5", "idle_ms"),
        ("serial:///dev/x?feedback=datalogic", "feedback"),
        ("serial:///dev/x?exclusive=true", "exclusive"),
        ("serial:///dev/x?retry_max_s=0", "retry_max_s"),
        ("serial:///dev/x?retry_max_s=nan", "retry_max_s"),
        ("serial:///dev/x?bauds=9600", r"unknown parameter bauds \(valid: aim, baud, "),
        ("serial:///dev/x?baud=9600&baud=19200", "twice"),
        ("serial:///dev/x?baud", "baud"),
        ("sim:///dev/x", "serial://"),
    ],
)
def test_bad_urls_name_the_parameter(url: str, names: str) -> None:
    with pytest.raises(DriverError, match=names):
        SerialScanner.from_url(url)


def test_the_driver_is_a_scanner_and_an_indicator() -> None:
    scanner = SerialScanner.from_url("serial:///dev/null-scanner")
    assert isinstance(scanner, Scanner) and isinstance(scanner, Indicator)


# --- reading -----------------------------------------------------------------------------------


async def test_frames_over_a_pty(pty: PtyPair) -> None:
    async with opened(pty.url("aim=Q1,z,L,d")) as scanner:
        assert scanner.connected and scanner.last_error is None
        got = Collector(scanner)
        pty.write(
            f"]Q1{TICKET}\r\n".encode()
            + b"\x02]z0aztec\x03"
            + b"NR\r%%NoRead\r"
            + b"]C0code128\r"  # AIM id not allowed
            + b"]L2pdf\r\n"
            + b"plain\n"
        )
        texts = await got.wait(5)
        await got.stop()
    # The code128 code was read: the lane is told it was refused (why, never its content).
    refused = "refused: a code128 code (AIM ]C0), not one this reader takes"
    assert texts == [TICKET, "aztec", refused, "pdf", "plain"]
    assert [s.symbology for s in got.scans] == ["qr", "aztec", None, "pdf417", None]
    assert {s.source for s in got.scans} == {f"serial:{pty.host}"}
    assert scanner.framer.drops == {DropReason.NO_READ: 2, DropReason.AIM_NOT_ALLOWED: 1}


async def test_same_stream_split_at_every_byte_over_a_real_pty(pty: PtyPair) -> None:
    stream = b"]Q1ABC-123\r\n\x02]d1WRAP\x03NR\rxy\x00z\rLAST\n"
    expected = ["ABC-123", "WRAP", "refused: a code with characters that are not text", "LAST"]
    async with opened(pty.url()) as scanner:
        got = Collector(scanner)
        for cut in range(1, len(stream)):
            before = len(got.scans)
            pty.write(stream[:cut])
            await asyncio.sleep(0.003)  # the scenario: the parts arrive apart, read one by one
            pty.write(stream[cut:])
            texts = await got.wait(before + 4)
            assert texts[before:] == expected, f"split at {cut}"
        await asyncio.sleep(0.05)  # the scenario: a quiet moment in which an extra scan would show
        assert len(got.scans) == 4 * (len(stream) - 1)  # nothing extra, ever
        await got.stop()


async def test_one_megabyte_burst_then_the_reader_keeps_working(pty: PtyPair) -> None:
    burst = random.Random(99).randbytes(1 << 20)
    async with opened(pty.url("max_frame=256&idle_ms=100")) as scanner:
        got = Collector(scanner)
        await asyncio.to_thread(pty.write, burst)
        await until(  # the line goes quiet: the burst's last half frame expires
            lambda: scanner.bytes_read == len(burst) and not scanner.framer.pending,
            10,
            "the burst read to its end and its half frame dropped",
        )
        pty.write(f"{TICKET}\r".encode())
        await until(lambda: TICKET in got.texts, 5)
        assert scanner.connected
        garbage = got.scans[: got.texts.index(TICKET)]
        await got.stop()
    assert scanner.framer.drops.total() > 1000
    for text in (s.text for s in garbage if s.refused is None):  # framed and printable
        assert 0 < len(text) <= 256 and text.isprintable() and text.isascii()
        assert (
            f"\r{text}\r".encode() in burst
            or f"{text}\r".encode() in burst
            or any(f"{text}{end}".encode() in burst for end in ("\n", "\x03"))
        )


async def test_a_flood_past_the_lane_is_counted_whole_in_the_log(
    pty: PtyPair, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in a security trial: 3,000 codes in one burst, the lane far behind, and the log
    said "dropped 1": drops within a second of the warning were counted only if another came a
    second later. Every dropped scan is now in a line within a second, at most one a second."""
    caplog.set_level(logging.WARNING, logger="drivers.serial_scanner")
    async with opened(pty.url()) as scanner:  # nobody takes its scans: 16 wait, the rest drop
        await asyncio.to_thread(pty.write, b"".join(b"F%04d\r" % i for i in range(500)))
        await until(lambda: scanner.framer.frames == 500, 10, "all 500 codes framed")
        assert scanner.scans_dropped == 500 - QUEUE_MAX

        def said() -> int:
            found = (re.search(r"dropped (\d+) ", r.getMessage()) for r in caplog.records)
            return sum(int(m[1]) for m in found if m)

        await until(lambda: said() == 500 - QUEUE_MAX, 5, "every drop in the log")
    lines = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert 1 <= len(lines) <= 2  # rate-limited, whatever the burst's timing
    assert "484 in all" in lines[-1].getMessage()


async def test_a_read_ended_by_etx_without_stx_is_refused_not_lost(pty: PtyPair) -> None:
    """Found in a security trial: a ticket read ending in ETX with no STX before it (a reader
    whose prefix is off) left no row and no verdict, only a log line. It is a refused read."""
    async with opened(pty.url()) as scanner:
        got = Collector(scanner)
        pty.write(f"]Q1{TICKET}\x03NEXT\r".encode())
        assert await got.wait(2) == [f"refused: {UNFRAMED_READ}", "NEXT"]
        await got.stop()


async def test_idle_timeout_drops_a_half_frame(pty: PtyPair) -> None:
    async with opened(pty.url("idle_ms=100")) as scanner:
        got = Collector(scanner)
        pty.write(b"TK1:HALF")
        await until(lambda: scanner.framer.drops[DropReason.IDLE] == 1, 2)
        pty.write(b"WHOLE\r")
        assert await got.wait(1) == ["WHOLE"]
        await got.stop()


async def test_oversize_frame_is_dropped_to_its_terminator(pty: PtyPair) -> None:
    async with opened(pty.url("max_frame=32")) as scanner:
        got = Collector(scanner)
        pty.write(b"A" * 20)
        await asyncio.sleep(0.02)  # the scenario: the long frame trickles in, in three parts
        pty.write(b"B" * 20)  # now over 32
        await asyncio.sleep(0.02)
        pty.write(b"C" * 20 + b"\r\nOK\r")
        expected = ["refused: a code of 60 characters, over the reader's 32", "OK"]
        assert await got.wait(2) == expected
        await asyncio.sleep(0.05)  # the scenario: a quiet moment in which an extra scan would show
        assert got.texts == expected
        await got.stop()


# --- unplug ------------------------------------------------------------------------------------


async def test_unplug_mid_frame_then_replug_reads_the_next_frame(
    pty: PtyPair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.serial_scanner")
    first = TICKET.replace("TK1:", "TK1:A")
    second = TICKET.replace("TK1:", "TK1:B")
    async with opened(pty.url("retry_max_s=1&idle_ms=0")) as scanner:  # no idle rescue
        got = Collector(scanner)
        pty.write(first[:80].encode())  # half a frame, then the cable goes
        await until(lambda: scanner.framer.pending, 2)
        pty.kill()
        await until(lambda: not scanner.connected, 2)
        await asyncio.sleep(1.5)  # the scenario: away long enough for the backoff to reach its cap
        assert got.scans == []
        pty.start()
        back = time.monotonic()
        # pyserial flushes input on open, so the scanner's next read is one made after that.
        await until(lambda: scanner.connected, 2.0)
        pty.write(f"{second}\r".encode())
        texts = await got.wait(1, timeout_s=2.0)
        within = time.monotonic() - back
        await asyncio.sleep(0.1)  # the scenario: a quiet moment in which a joined half would show
        await got.stop()
    assert texts == [second] and got.texts == [second]  # never first[:80] + anything
    assert within < 2.0
    assert scanner.reconnects == 1
    assert scanner.framer.drops[DropReason.DISCONNECTED] == 1
    records = [r for r in caplog.records if r.name == "drivers.serial_scanner"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lost" in warnings[0]  # logged once per outage
    assert any("reconnected" in r.getMessage() for r in records)
    assert first[:10] not in caplog.text


async def test_a_reader_bug_costs_one_connection_not_the_scanner(
    pty: PtyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(pty.url()) as scanner:
        got = Collector(scanner)
        real = scanner.framer.feed
        calls: list[bytes] = []

        def broken_once(data: bytes, now_ns: int) -> list[Frame]:
            calls.append(data)
            if len(calls) == 1:
                raise RuntimeError("a bug")
            return real(data, now_ns)

        monkeypatch.setattr(scanner.framer, "feed", broken_once)
        pty.write(b"FIRST\r")
        await until(lambda: scanner.reconnects == 1, 3)
        pty.write(b"SECOND\r")
        assert await got.wait(1) == ["SECOND"]
        await got.stop()


async def test_device_absent_at_start_is_retried_not_fatal(tmp_path: Path) -> None:
    pair = PtyPair(tmp_path)
    async with opened(pair.url("retry_max_s=0.5")) as scanner:
        assert not scanner.connected
        assert scanner.last_error is not None and "no such device" in scanner.last_error
        pair.start()
        try:
            await until(lambda: scanner.connected, 2)
            got = Collector(scanner)
            pair.write(b"LATE\r")
            assert await got.wait(1) == ["LATE"]
            await got.stop()
        finally:
            pair.kill()
    assert scanner.reconnects == 0  # the first connection is not a reconnect


async def test_exclusive_lock_refuses_a_second_reader(pty: PtyPair) -> None:
    async with opened(pty.url()) as first, opened(pty.url()) as second:
        assert first.connected and not second.connected
        assert second.last_error is not None and "busy" in second.last_error
        got = Collector(first)
        pty.write(b"MINE\r")
        assert await got.wait(1) == ["MINE"]
        await got.stop()


async def test_close_is_idempotent_and_ends_the_stream(pty: PtyPair) -> None:
    scanner = SerialScanner.from_url(pty.url())
    await scanner.open()
    await scanner.open()
    stream = scanner.scans()
    await scanner.close()
    await scanner.close()
    assert [s async for s in stream] == []
    assert not scanner.connected
    await scanner.open()  # and it can be opened again
    got = Collector(scanner)
    pty.write(b"AGAIN\r")
    assert await got.wait(1) == ["AGAIN"]
    await got.stop()
    await scanner.close()


async def test_missing_library_is_a_startup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "serial_asyncio_fast", None)
    scanner = SerialScanner.from_url("serial:///dev/ttyACM0")
    with pytest.raises(DriverError, match="pyserial-asyncio-fast") as info:
        await scanner.open()
    assert isinstance(info.value.__cause__, ImportError)


# --- through the lane --------------------------------------------------------------------------


async def test_noise_never_admits_and_a_ticket_after_it_opens_once(
    pty: PtyPair, write_config: WriteConfig, iss: Issuer
) -> None:
    conf = config.load(write_config())
    ticket = iss.ticket(event=1, zones=[1])
    outcomes: list[Outcome] = []
    scanner = SerialScanner.from_url(pty.url("idle_ms=100&max_frame=512"))
    gate_io = SimGate(passage_ms=1)
    async with open_gate(conf, outcomes.append, scanner=scanner, gate_io=gate_io) as gate:
        task = asyncio.create_task(gate.lane.run())
        noise = random.Random(5).randbytes(256 * 1024)
        sent = noise + b"Z" * 2000 + b"\r" + ticket[:50].encode()
        await asyncio.to_thread(pty.write, sent)
        await until(  # the line goes quiet: the half ticket expires
            lambda: scanner.bytes_read == len(sent) and not scanner.framer.pending,
            10,
            "the noise read to its end and the half ticket dropped",
        )
        pty.write(f"]Q1{ticket}\r".encode())
        await until(lambda: any(o.decision.admitted for o in outcomes), 10)
        await asyncio.sleep(0.1)  # the scenario: a quiet moment for a second opening to show
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    admitted = [o for o in outcomes if o.decision.admitted]
    assert len(admitted) == 1 and admitted[0].scan.text == ticket
    assert admitted[0].scan.symbology == "qr"
    assert gate_io.pulses == [admitted[0].record.entry_id]  # type: ignore[union-attr]
    assert all(o.decision.reason is Reason.INVALID_FORMAT for o in outcomes if o is not admitted[0])
