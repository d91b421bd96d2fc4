"""Scanner feedback plug-ins over a pty: the bytes that arrive are exactly the documented ones."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from agent.app import config
from agent.app.daemon import open_gate
from agent.app.lane_devices import Indicators
from agent.errors import DriverError
from agent.issuer import Issuer
from agent.lane import Outcome
from agent.model import Decision, Reason, Verdict
from drivers.feedback import HoneywellHostAck, NewlandCommand, ZebraSsi, ssi_packet
from drivers.serial_scanner import SerialScanner, _HostAck
from drivers.sim import SimGate, SimIndicator
from tests import needs
from tests.conftest import WriteConfig
from tests.polling import until
from tests.serial_pty import SOCAT, TICKET, Collector, PtyPair, opened

pytestmark = needs.mark(SOCAT, "socat (the serial tests run on ptys)")

ADMIT = Decision(Verdict.ADMIT, Reason.OK)
DENY = Decision(Verdict.DENY, Reason.ALREADY_USED, "Gate 3, 19:02:11")


# The documented byte sequences, written out here independently of drivers.feedback.
EXPECTED_FEEDBACK = {
    "honeywell": (b"0\x1b7,", b"0\x1b8,"),
    "zebra": (bytes.fromhex("05e6040001ff10"), bytes.fromhex("05e6040012feff")),
    "newland": (
        b"\x7e\x010000#LEDONS2C500D;\x03",
        b"\x7e\x010000#LEDONS0C1000D;\x03",
    ),
}


async def arrives(pty: PtyPair, expected: bytes) -> bytes:
    """As many bytes as ``expected`` holds, once the driver has written them (read off the event
    loop's thread: the driver writes from it)."""
    return await asyncio.to_thread(pty.read_next, len(expected))


async def quiet(pty: PtyPair, wait_s: float = 0.2) -> bytes:
    """What the driver writes within ``wait_s`` (b"" when it writes nothing), read off the
    event loop's thread, so a write the driver schedules meanwhile still lands in the window."""
    return await asyncio.to_thread(pty.read_for, wait_s)


@pytest.mark.parametrize("vendor", sorted(EXPECTED_FEEDBACK))
async def test_feedback_bytes_arrive_exactly(pty: PtyPair, vendor: str) -> None:
    good, bad = EXPECTED_FEEDBACK[vendor]
    async with opened(pty.url(f"feedback={vendor}")) as scanner:
        await scanner.show(ADMIT, "OK")
        assert await arrives(pty, good) == good
        await scanner.show(DENY, "Already used")
        assert await arrives(pty, bad) == bad
        assert await quiet(pty) == b""  # nothing past the two answers


async def test_no_feedback_sends_nothing(pty: PtyPair) -> None:
    async with opened(pty.url()) as scanner:
        await scanner.show(ADMIT, "OK")
        await scanner.show(DENY, "no")
        assert await quiet(pty) == b""


async def test_feedback_while_unplugged_raises(pty: PtyPair) -> None:
    async with opened(pty.url("feedback=zebra")) as scanner:
        pty.kill()
        await until(lambda: not scanner.connected, 2)
        with pytest.raises(DriverError, match="not connected"):
            await scanner.show(ADMIT, "OK")


def test_plugin_packets_are_well_formed() -> None:
    assert ssi_packet(0xD0, source=0x00) == bytes.fromhex("04d00000ff2c")  # CMD_ACK
    example = ssi_packet(0x80, bytes.fromhex("0006200000ff"))  # from a vendor guide's example
    assert example == bytes.fromhex("0a80040000062000 00fffe4d".replace(" ", ""))
    for plugin in (ZebraSsi(), NewlandCommand()):
        assert plugin.setup() == b"" and plugin.replies()
    assert HoneywellHostAck(group=3).good() == b"3\x1b7,"
    with pytest.raises(ValueError, match="work group"):
        HoneywellHostAck(group=9)


async def test_zebra_ack_from_the_scanner_does_not_spoil_the_next_frame(pty: PtyPair) -> None:
    async with opened(pty.url("feedback=zebra")) as scanner:
        got = Collector(scanner)
        await scanner.show(ADMIT, "OK")
        pty.write(bytes.fromhex("04d00000ff2c") + f"{TICKET}\r".encode())
        assert await got.wait(1) == [TICKET]
        assert not scanner.framer.drops
        await got.stop()


async def test_newland_reply_is_skipped(pty: PtyPair) -> None:
    async with opened(pty.url("feedback=newland")) as scanner:
        got = Collector(scanner)
        pty.write(b"\x02\x010000#LEDONS2C500D\x06;\x03" + b"NEXT\r")
        assert await got.wait(1) == ["NEXT"]
        assert not scanner.framer.drops
        await got.stop()


async def test_honeywell_host_ack_answers_every_read(pty: PtyPair) -> None:
    good, bad = EXPECTED_FEEDBACK["honeywell"]
    async with opened(pty.url("feedback=honeywell")) as scanner:
        assert scanner._ack is not None
        scanner._ack.timeout_s = 0.5
        got = Collector(scanner)
        pty.write(b"NR\r")  # a no-read never reaches the lane, but the scanner waits for us
        assert await arrives(pty, bad) == bad
        pty.write(b"SAME\r")
        await got.wait(1)
        await scanner.show(ADMIT, "OK", got.scans[0])  # the lane decided in time
        assert await arrives(pty, good) == good
        assert await quiet(pty, 0.8) == b""  # ... and the timer stayed quiet past its 0.5 s
        pty.write(b"SAME\r")  # read again while walking through: the lane ignores repeats
        await got.wait(2)
        assert await arrives(pty, good) == good  # the same answer, from the driver's timer
        pty.write(b"OTHER\r")  # the lane is busy and does not answer in time
        await got.wait(3)
        assert await arrives(pty, bad) == bad  # the driver's timer: a bad answer
        await scanner.show(DENY, "no", got.scans[2])  # its real answer follows (nothing waits)
        assert await arrives(pty, bad) == bad
        assert await quiet(pty) == b""
        await got.stop()


async def test_honeywell_host_ack_answers_a_refused_code_once_through_the_lane(
    pty: PtyPair,
) -> None:
    """A code the framing refuses (here an over-long one) is a denial the lane shows: the
    scanner gets that one answer, not a second one from the driver that it would take for the
    answer to its next read."""
    good, bad = EXPECTED_FEEDBACK["honeywell"]
    async with opened(pty.url("feedback=honeywell&max_frame=16")) as scanner:
        assert scanner._ack is not None
        scanner._ack.timeout_s = 5.0  # the lane answers long before
        got = Collector(scanner)
        pty.write(b"L" * 20)
        await asyncio.sleep(0.05)  # the scenario: the long code arrives in two reads
        pty.write(b"L" * 20 + b"\r")
        assert await got.wait(1) == ["refused: a code of 40 characters, over the reader's 16"]
        assert await quiet(pty) == b""  # no answer yet: the lane's
        await scanner.show(DENY, "Not a ticket", got.scans[0])
        assert await arrives(pty, bad) == bad
        # A no-read in the same read as a refused code still gets its own answer at once.
        pty.write(b"L" * 20 + b"\rNR\r")
        assert (await got.wait(2))[1] == "refused: a code of 20 characters, over the reader's 16"
        assert await arrives(pty, bad) == bad  # the no-read's
        assert await quiet(pty) == b""  # and only that one: the refused code waits for the lane
        await scanner.show(DENY, "Not a ticket", got.scans[1])
        assert await arrives(pty, bad) == bad  # the lane's
        pty.write(b"L" * 40)  # an over-long code whose end never comes: the idle drop answers
        assert await arrives(pty, bad) == bad
        assert len(got.scans) == 2  # and the lane gets nothing from it
        pty.write(b"NEXT\r")
        await got.wait(3)
        await scanner.show(ADMIT, "OK", got.scans[2])
        assert await arrives(pty, good) == good  # nothing extra before it
        assert await quiet(pty) == b""
        await got.stop()


async def test_a_read_the_lane_passes_over_gets_one_answer_and_later_ones_stay_in_step(
    pty: PtyPair, write_config: WriteConfig, iss: Issuer
) -> None:
    """A review: with host ACK, a refused read within a ticket's window was passed over by the
    lane and its pending answer left in place; the next person's read then got a stray "bad"
    and every later answer came one read late. A read passed over gets its presentation's
    answer at once, and each read exactly one."""
    good, _bad = EXPECTED_FEEDBACK["honeywell"]
    first, second = iss.ticket(event=1, zones=[1]), iss.ticket(event=1, zones=[1])
    scanner = SerialScanner.from_url(pty.url("feedback=honeywell"))
    outcomes: list[Outcome] = []
    conf = config.load(write_config(repeat_window_ms=5000))
    async with open_gate(conf, outcomes.append, scanner=scanner, gate_io=SimGate()) as gate:
        lane = asyncio.create_task(gate.lane.run())
        pty.write(f"{first}\r".encode())
        assert await arrives(pty, good) == good  # admitted
        pty.write(b"JUNK\x03")  # a read beside it (its end without its start): passed over
        assert await arrives(pty, good) == good  # that presentation's answer, at once
        pty.write(f"{second}\r".encode())  # the next person
        assert await arrives(pty, good) == good
        assert await quiet(pty, 1.5) == b""  # nothing stray, past the driver's 1 s timer
        lane.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lane
    assert [o.decision.admitted for o in outcomes] == [True, True]


async def test_the_ticket_read_again_while_its_gate_is_open_gets_its_answer_at_once(
    pty: PtyPair, write_config: WriteConfig, iss: Issuer
) -> None:
    """A review: with busy = "refuse", the admitted ticket read again while its gate was open got
    no answer until the driver's timer (1 s, the scanner blocked meanwhile). It is passed over:
    its presentation's answer, at once."""
    good, _bad = EXPECTED_FEEDBACK["honeywell"]
    ticket = iss.ticket(event=1, zones=[1])
    scanner = SerialScanner.from_url(pty.url("feedback=honeywell"))
    assert scanner._ack is not None
    scanner._ack.timeout_s = 30.0  # only the lane can answer within the test
    conf = config.load(write_config(lane={"busy": "refuse"}, passage_timeout_s=10.0))
    async with open_gate(conf, scanner=scanner, gate_io=SimGate(passage_ms=4000)) as gate:
        lane = asyncio.create_task(gate.lane.run())
        pty.write(f"{ticket}\r".encode())
        assert await arrives(pty, good) == good  # admitted; the gate stays open 4 s
        pty.write(f"{ticket}\r".encode())  # the holder's phone read again, walking through
        assert await arrives(pty, good) == good
        lane.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lane


async def test_a_passed_over_read_is_told_apart_from_another_frame_of_the_same_read() -> None:
    """A review: the frames of one serial read share its time, and the read passed over was
    found by that time alone: another frame's pending answer went instead."""
    _good, bad = EXPECTED_FEEDBACK["honeywell"]
    sent: list[bytes] = []
    ack = _HostAck(HoneywellHostAck(), sent.append, timeout_s=30.0)
    ack.read("ticket", 5)
    ack.read("junk", 5)
    ack.passed_over("junk", 5)
    assert [e.digest for e in ack.pending] == ["ticket"] and sent == [bad]  # no answer yet: bad
    ack.clear()


async def test_a_show_tied_to_no_read_never_takes_a_waiting_reads_answer(pty: PtyPair) -> None:
    """A review: a show tied to no read (emergency release, a relay fault) took the oldest
    waiting read's place: the scanner took it for that read's answer, the read's own verdict
    answered the next read, and every later answer came one read late. Now it is sent only
    while no read waits (a beep then), and each verdict answers its own read."""
    good, bad = EXPECTED_FEEDBACK["honeywell"]
    async with opened(pty.url("feedback=honeywell")) as scanner:
        assert scanner._ack is not None
        scanner._ack.timeout_s = 30.0  # only the lane answers within the test
        got = Collector(scanner)
        await scanner.show(ADMIT, "Emergency - free passage")  # nothing waits: a beep
        assert await arrives(pty, good) == good
        pty.write(b"FIRST\r")
        await got.wait(1)
        await scanner.show(DENY, "Gate fault")  # tied to no read while FIRST waits: not sent
        assert await quiet(pty) == b""
        await scanner.show(ADMIT, "Welcome", got.scans[0])  # FIRST's own verdict
        assert await arrives(pty, good) == good
        pty.write(b"SECOND\r")
        await got.wait(2)
        await scanner.show(DENY, "Already used", got.scans[1])
        assert await arrives(pty, bad) == bad  # in step: SECOND's, not FIRST's
        assert await quiet(pty) == b""
        await got.stop()


async def test_a_verdict_the_timer_answered_is_not_sent_while_the_next_read_waits() -> None:
    """A review: the timer answered a read the lane was slow on; its verdict, shown after the
    next read came, was taken by the scanner for the next read's answer. It is not sent then;
    the next read gets its own verdict."""
    good, bad = EXPECTED_FEEDBACK["honeywell"]
    sent: list[bytes] = []
    ack = _HostAck(HoneywellHostAck(), sent.append, timeout_s=0.01)
    ack.read("slow", 1)
    await until(lambda: sent == [bad], 2.0, "the timer's answer")
    ack.timeout_s = 30.0
    ack.read("next", 2)
    assert ack.shown(good, ("slow", 1)) is False  # "next" waits: the late verdict is not sent
    assert ack.shown(good, ("next", 2)) is True  # "next" gets its own
    assert ack.shown(bad, ("slow", 1)) is True  # nothing waits: a late verdict is a beep
    assert list(ack.pending) == []


async def test_a_show_for_no_read_waits_while_a_read_is_still_arriving(pty: PtyPair) -> None:
    """A review: a long code takes a while on the wire (300 characters at 9600 baud: 0.3 s);
    a beep for no read written meanwhile was taken by the scanner for that read's answer."""
    good, bad = EXPECTED_FEEDBACK["honeywell"]
    async with opened(pty.url("feedback=honeywell")) as scanner:
        assert scanner._ack is not None
        scanner._ack.timeout_s = 30.0
        got = Collector(scanner)
        pty.write(b"HALF-OF-A-LONG-CODE")
        await until(lambda: scanner.bytes_read >= 19, 3.0, "the half code read")
        await scanner.show(DENY, "Gate fault")  # tied to no read, while one arrives: not sent
        assert await quiet(pty) == b""
        pty.write(b"\r")
        await got.wait(1)
        await scanner.show(ADMIT, "Welcome", got.scans[0])
        assert await arrives(pty, good) == good
        await scanner.show(DENY, "Gate fault")  # nothing waits or arrives: a beep
        assert await arrives(pty, bad) == bad
        await got.stop()


async def test_lamps_and_a_host_ack_scanner_together_answer_the_read(
    pty: PtyPair, write_config: WriteConfig, iss: Issuer
) -> None:
    """A review: shown through the lane's several indicators together (GPIO lamps and the
    scanner's beep), the read each verdict answers must reach the scanner, or every admission
    gets the driver's 1 s "bad". Also the lane's other shows tied to a read: free passage in an
    emergency, "gate busy" for another ticket while the gate is open."""
    good, bad = EXPECTED_FEEDBACK["honeywell"]
    first, other = iss.ticket(event=1, zones=[1]), iss.ticket(event=1, zones=[1])
    scanner = SerialScanner.from_url(pty.url("feedback=honeywell"))
    assert scanner._ack is not None
    scanner._ack.timeout_s = 30.0  # only the lane can answer within the test
    lamps = SimIndicator()
    conf = config.load(write_config(lane={"busy": "refuse"}, passage_timeout_s=10.0))
    gate_io = SimGate(passage_ms=3000)
    outcomes: list[Outcome] = []
    async with open_gate(conf, outcomes.append, scanner=scanner, gate_io=gate_io) as gate:
        gate.lane.indicator = Indicators([lamps, scanner])
        lane = asyncio.create_task(gate.lane.run())
        pty.write(f"{first}\r".encode())
        assert await arrives(pty, good) == good  # admitted; the gate stays open 3 s
        pty.write(f"{other}\r".encode())  # another ticket while it is open: refused
        assert await arrives(pty, bad) == bad
        await until(lambda: len(outcomes) == 1, 10.0, "the first passage over")
        gate_io.set_input("emergency", True)
        assert await arrives(pty, good) == good  # free passage shown: nothing waits, a beep
        pty.write(f"{other}\r".encode())
        assert await arrives(pty, good) == good  # free passage answers the read
        assert await quiet(pty) == b""
        lane.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lane
    assert len(lamps.shown) >= 3
