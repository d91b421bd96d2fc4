"""The serial framing state machine, byte by byte: no I/O, the clock is ours."""

from __future__ import annotations

import logging
import random
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.feedback import ZebraSsi
from drivers.framing import (
    UNFRAMED_READ,
    DropReason,
    Frame,
    Framer,
    FramingConfig,
    parse_aim_allow,
)

MS = 1_000_000
TICKET = "TK1:" + "6BFOXN*TS0VN-8F.1$K%L:" * 7  # printable, 158 chars, like a real TK1 text
NOT_TEXT = "a code with characters that are not text"


def texts(frames: list[Frame]) -> list[str]:
    """The texts of the frames passed on (a refused read has none: see ``refusals``)."""
    return [f.text for f in frames if f.refused is None]


def refusals(frames: list[Frame]) -> list[str]:
    """Why each code read but refused was refused; their text is always empty."""
    assert all(f.text == "" for f in frames if f.refused is not None)
    return [f.refused for f in frames if f.refused is not None]


def feed_all(framer: Framer, chunks: list[bytes], now: int = 0) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        out += framer.feed(chunk, now)
    return out


# A stream with every rule in it: terminators, wrapper, AIM ids, no-reads, noise, an over-long
# frame, a stray ETX, an unterminated STX frame and a CRLF inside a wrapper.
RICH = (
    b"\r\n]Q1" + TICKET.encode() + b"\r\n"
    b"plain-lf\n"
    b"\x02wrapped\x03\r\n"
    b"NR\r%%NoRead\r\n]Q1NR\r"
    b"bad\x00byte\r"
    b"\xff\xfe\xfd\r" + b"L" * 300 + b"\r"
    b"after-long\r"
    b"junk\x03kept\r"
    b"\x02half\x02]z0aztec\x03"
    b"\x02inner-crlf\r\n\x03"
    b"]L2pdf\r"
    b"]d1dm\r"
    b"\x7fdel\r"
    b"tail"
)
RICH_EXPECTED = [
    ("]Q1" + TICKET)[3:],
    "plain-lf",
    "wrapped",
    "after-long",
    "kept",
    "aztec",
    "inner-crlf",
    "pdf",
    "dm",
]


def rich_framer() -> Framer:
    return Framer(FramingConfig(max_frame=256))


def test_rich_stream_frames_and_drops() -> None:
    framer = rich_framer()
    out = framer.feed(RICH, 0)
    # Codes read in full but refused come out without text, saying why (never the content).
    refused = [f for f in out if f.refused is not None]
    assert [(f.text, f.refused) for f in refused] == [
        ("", NOT_TEXT),
        ("", NOT_TEXT),
        ("", "a code of 300 characters, over the reader's 256"),
        ("", UNFRAMED_READ),  # "junk" and a stray ETX: read, not framed as the reader should
        ("", NOT_TEXT),
    ]
    frames = [f for f in out if f.refused is None]
    assert framer.frames == len(frames)
    assert [f.text for f in frames] == RICH_EXPECTED
    assert [f.symbology for f in frames] == [
        "qr",
        None,
        None,
        None,
        None,
        "aztec",
        None,
        "pdf417",
        "datamatrix",
    ]
    assert frames[0].aim == "Q1"
    assert framer.drops == {
        DropReason.NO_READ: 3,
        DropReason.NON_PRINTABLE: 3,
        DropReason.TOO_LONG: 1,
        DropReason.UNFRAMED: 1,
        DropReason.UNTERMINATED: 1,
    }
    assert framer.pending  # "tail" waits for its terminator


def test_every_two_way_split_gives_the_same_frames() -> None:
    reference = rich_framer()
    whole = reference.feed(RICH, 0)
    for cut in range(1, len(RICH)):
        framer = rich_framer()
        got = feed_all(framer, [RICH[:cut], RICH[cut:]])
        assert got == whole, f"split at {cut}"
        assert framer.drops == reference.drops, f"split at {cut}"


def test_byte_by_byte_gives_the_same_frames_and_drops() -> None:
    reference = rich_framer()
    whole = reference.feed(RICH, 0)
    framer = rich_framer()
    got = feed_all(framer, [RICH[i : i + 1] for i in range(len(RICH))])
    assert got == whole
    assert framer.drops == reference.drops


@settings(max_examples=200, deadline=None)
@given(
    stream=st.binary(max_size=600)
    | st.lists(
        st.sampled_from(
            [b"\r", b"\n", b"\x02", b"\x03", b"]Q1", b"NR", b"abc", b"\x00", b"Z" * 40]
        ),
        max_size=60,
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=8),
)
def test_any_chunking_gives_the_same_frames(stream: bytes, cuts: list[int]) -> None:
    config = FramingConfig(max_frame=64)
    reference = Framer(config)
    whole = reference.feed(stream, 0)
    points = sorted({c for c in cuts if 0 < c < len(stream)})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    framer = Framer(config)
    assert feed_all(framer, chunks) == whole
    assert framer.drops == reference.drops


def correctly_framed(frame: Frame, stream: bytes, max_frame: int) -> bool:
    """The frame's bytes sit in the stream between delimiters, printable and within the limit."""
    raw = ((f"]{frame.aim}" if frame.aim else "") + frame.text).encode()
    if len(raw) > max_frame or not re.fullmatch(rb"[\x20-\x7e]+", raw):
        return False
    line = re.compile(rb"(?:^|[\r\n\x03])" + re.escape(raw) + rb"[\r\n]")
    wrapped = re.compile(rb"\x02" + re.escape(raw) + rb"[\r\n]*\x03")
    return bool(line.search(stream) or wrapped.search(stream))


def test_one_megabyte_of_garbage_never_yields_a_badly_framed_frame() -> None:
    rng = random.Random(1234)
    burst = rng.randbytes(1 << 20)
    framer = Framer(FramingConfig(max_frame=1024))
    started = time.perf_counter()
    frames = feed_all(framer, [burst[i : i + 1024] for i in range(0, len(burst), 1024)])
    elapsed = time.perf_counter() - started
    assert all(correctly_framed(f, burst, 1024) for f in frames if f.refused is None)
    # Refused reads name a reason only; each is a frame the framer counted as rejected.
    assert 1000 < len(refusals(frames)) <= framer.rejected
    assert sum(framer.drops.values()) > 1000  # it really was garbage
    assert elapsed < 5  # the 1 MB burst is handled in well under a second on this machine
    # The reader keeps working: after the line goes quiet the next ticket comes through whole.
    later = framer.feed(TICKET.encode() + b"\r", 400 * MS)
    assert texts(later) == [TICKET]


def test_wrapped_ticket_right_after_garbage_resynchronises() -> None:
    framer = Framer()
    burst = random.Random(7).randbytes(64 * 1024)
    framer.feed(burst, 0)
    assert texts(framer.feed(b"\x02" + TICKET.encode() + b"\x03", 1)) == [TICKET]


def test_max_frame_is_inclusive_and_the_rest_of_a_long_frame_is_dropped() -> None:
    framer = Framer(FramingConfig(max_frame=10))
    assert texts(framer.feed(b"0123456789\r", 0)) == ["0123456789"]
    assert framer.feed(b"0123456789A", 0) == []
    assert framer.feed(b"BCDEF", 0) == []  # still the over-long frame
    out = framer.feed(b"\r\nnext\r", 0)  # its end: a refused read, then the next frame
    assert [(f.text, f.refused) for f in out] == [
        ("", "a code of 16 characters, over the reader's 10"),
        ("next", None),
    ]
    assert framer.drops == {DropReason.TOO_LONG: 1}
    wrapped = Framer(FramingConfig(max_frame=4))
    out = wrapped.feed(b"\x02toolong\r\nstill\x03ok\r", 0)
    assert refusals(out) == ["a code of 14 characters, over the reader's 4"]
    assert texts(out) == ["ok"]


def test_missing_terminator_then_idle_drops_the_half_frame() -> None:
    framer = Framer(FramingConfig(idle_ns=300 * MS))
    assert framer.feed(b"TK1:HALF", 0) == []
    assert framer.deadline_ns() == 300 * MS
    assert framer.expire(299 * MS) is False
    assert texts(framer.feed(b"MORE\r", 200 * MS)) == ["TK1:HALFMORE"]  # gaps below idle join
    framer.feed(b"TK1:HALF", 1000 * MS)
    assert texts(framer.feed(b"NEXT\r", 1300 * MS)) == ["NEXT"]  # idle reached: half dropped
    framer.feed(b"\x02HALF", 2000 * MS)
    assert framer.expire(2300 * MS) is True
    assert texts(framer.feed(b"X\r", 2301 * MS)) == ["X"]
    assert framer.drops == {DropReason.IDLE: 2}
    assert framer.deadline_ns() is None


def test_idle_zero_disables_the_timeout() -> None:
    framer = Framer(FramingConfig(idle_ns=0))
    framer.feed(b"AB", 0)
    assert framer.deadline_ns() is None and framer.expire(10**12) is False
    assert texts(framer.feed(b"C\r", 10**12)) == ["ABC"]


@pytest.mark.parametrize(
    "raw",
    [b"AB\x00C", b"tab\there", b"caf\xc3\xa9", b"del\x7f", b"\x1bx", b"nul\x00"],
)
def test_non_printable_bytes_refuse_the_frame(raw: bytes) -> None:
    framer = Framer()
    out = framer.feed(raw + b"\r" + b"\x02" + raw + b"\x03" + b"ok\r", 0)
    assert texts(out) == ["ok"] and refusals(out) == [NOT_TEXT] * 2
    assert framer.drops == {DropReason.NON_PRINTABLE: 2}
    assert framer.rejected == 2


def test_no_read_strings_are_dropped_and_configurable() -> None:
    framer = Framer()
    assert framer.feed(b"NR\r%%NoRead\r]Q1NR\r\x02NR\x03NRX\r", 0)[0].text == "NRX"
    assert framer.drops == {DropReason.NO_READ: 4}
    custom = Framer(FramingConfig(noread=frozenset({"ERROR"})))
    assert texts(custom.feed(b"ERROR\rNR\r", 0)) == ["NR"]


def test_aim_allow_list_and_require_aim() -> None:
    config = FramingConfig(aim_allow=parse_aim_allow(["Q1", "z", "]d1"]))
    framer = Framer(config)
    stream = b"]Q1qr\r]Q3qr-eci\r]z0az\r]zCaz-c\r]L2pdf\r]d1dm\r]d2dm2\rno-aim\r"
    frames = framer.feed(stream, 0)
    assert texts(frames) == ["qr", "az", "az-c", "dm", "no-aim"]
    assert [f.aim for f in frames if f.refused is None] == ["Q1", "z0", "zC", "d1", None]
    assert refusals(frames) == [
        "a qr code (AIM ]Q3), not one this reader takes",
        "a pdf417 code (AIM ]L2), not one this reader takes",
        "a datamatrix code (AIM ]d2), not one this reader takes",
    ]
    assert framer.drops == {DropReason.AIM_NOT_ALLOWED: 3}
    strict = Framer(FramingConfig(require_aim=True))
    out = strict.feed(b"]C0code128\rbare\r]Q1\r", 0)
    assert texts(out) == ["code128"]
    assert refusals(out) == ["a code without the AIM id this reader requires"]  # not the empty
    assert strict.drops == {DropReason.AIM_MISSING: 1, DropReason.EMPTY: 1}
    assert strict.feed(b"]X9x\r", 0)[0].symbology == "aim-X"


def test_a_bracket_that_is_no_aim_id_stays_in_the_text() -> None:
    framer = Framer(FramingConfig(require_aim=False))
    assert texts(framer.feed(b"]!x\r]\r", 0)) == ["]!x", "]"]


def test_vendor_replies_between_frames_are_skipped_even_when_split() -> None:
    ack = ZebraSsi().replies()[0]
    framer = Framer(FramingConfig(discard=(ack,)))
    stream = ack + b"ONE\r" + ack + ack + b"\x02TWO\x03" + ack
    for cut in range(len(stream) + 1):
        f = Framer(FramingConfig(discard=(ack,)))
        assert texts(feed_all(f, [stream[:cut], stream[cut:]])) == ["ONE", "TWO"], cut
        assert not f.drops
        assert not f.pending
    # Inside a frame the same bytes are data, and refuse it.
    assert framer.feed(b"AB" + ack + b"CD\rok\r", 0)[-1].text == "ok"
    assert framer.drops == {DropReason.NON_PRINTABLE: 1}


def test_a_held_partial_reply_is_dropped_when_the_line_goes_idle() -> None:
    ack = ZebraSsi().replies()[0]
    framer = Framer(FramingConfig(discard=(ack,), idle_ns=300 * MS))
    framer.feed(ack[:3], 0)
    assert framer.pending
    assert texts(framer.feed(b"TICKET\r", 400 * MS)) == ["TICKET"]


def test_reset_drops_the_half_frame_as_disconnected() -> None:
    framer = Framer()
    framer.feed(b"TK1:HALF", 0)
    framer.reset(1)
    assert not framer.pending
    assert texts(framer.feed(b"REST\r", 2)) == ["REST"]
    assert framer.drops == {DropReason.DISCONNECTED: 1}
    framer.reset(3)  # nothing pending: nothing counted
    assert framer.drops == {DropReason.DISCONNECTED: 1}


def test_frame_time_is_the_arrival_of_its_terminator() -> None:
    framer = Framer()
    framer.feed(b"AB", 5 * MS)
    assert framer.feed(b"C\r", 7 * MS)[0].mono_ns == 7 * MS


def test_drops_never_log_the_text_and_warnings_are_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "TK1:SECRET-PAYLOAD-THAT-MUST-NOT-BE-LOGGED"
    framer = Framer(FramingConfig(aim_allow=frozenset({"Q1"}), max_frame=64))
    caplog.set_level(logging.DEBUG, logger="drivers.framing")
    stream = (f"]L2{secret}\r" * 50 + f"{secret}\x01\r" + secret * 3 + "\r").encode()
    framer.feed(stream, 0)
    framer.feed(f"]L2{secret}\r".encode(), 2_000 * MS)
    assert secret not in caplog.text and "SECRET" not in caplog.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4  # aim, non-printable, too long, then aim again a second later
    assert "49 more since the last warning" in warnings[-1].getMessage()
    assert framer.drops[DropReason.AIM_NOT_ALLOWED] == 51


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="max_frame"):
        FramingConfig(max_frame=0)
    with pytest.raises(ValueError, match="idle_ns"):
        FramingConfig(idle_ns=-1)
    with pytest.raises(ValueError, match="AIM"):
        FramingConfig(aim_allow=frozenset({"Q12"}))
    with pytest.raises(ValueError, match="AIM id"):
        parse_aim_allow(["1Q"])
    with pytest.raises(ValueError, match="discard"):
        FramingConfig(discard=(b"",))


def test_frame_repr_hides_the_text() -> None:
    frame = Framer().feed(b"]Q1" + TICKET.encode() + b"\r", 0)[0]
    assert TICKET not in repr(frame) and "qr" in repr(frame)
