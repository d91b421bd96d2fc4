"""Keyboard-wedge scanners: evdev.InputEvent objects through the key mapping and framing, and a
fake input device through the read loop (grab, unplug, reconnect)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from evdev import InputEvent, ecodes
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DriverError
from agent.ports import Scanner
from drivers import registry
from drivers.hid import HidScanner
from drivers.hid_keys import (
    BLOCKING_MODIFIERS,
    CAPSLOCK,
    ENTER,
    KEYMAP_US,
    SHIFT,
    KeyFramer,
    Refused,
)
from tests.polling import until

PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
MS = 1_000_000

# The US layout written out independently of the driver's table: char -> (key name, shift)
_PUNCT = {
    " ": ("KEY_SPACE", False),
    "-": ("KEY_MINUS", False),
    "_": ("KEY_MINUS", True),
    "=": ("KEY_EQUAL", False),
    "+": ("KEY_EQUAL", True),
    "[": ("KEY_LEFTBRACE", False),
    "{": ("KEY_LEFTBRACE", True),
    "]": ("KEY_RIGHTBRACE", False),
    "}": ("KEY_RIGHTBRACE", True),
    ";": ("KEY_SEMICOLON", False),
    ":": ("KEY_SEMICOLON", True),
    "'": ("KEY_APOSTROPHE", False),
    '"': ("KEY_APOSTROPHE", True),
    "`": ("KEY_GRAVE", False),
    "~": ("KEY_GRAVE", True),
    "\\": ("KEY_BACKSLASH", False),
    "|": ("KEY_BACKSLASH", True),
    ",": ("KEY_COMMA", False),
    "<": ("KEY_COMMA", True),
    ".": ("KEY_DOT", False),
    ">": ("KEY_DOT", True),
    "/": ("KEY_SLASH", False),
    "?": ("KEY_SLASH", True),
    **{s: (f"KEY_{d}", True) for d, s in zip("1234567890", "!@#$%^&*()", strict=True)},
}


def _key_for(char: str) -> tuple[int, bool]:
    if char.isdigit():
        return ecodes.ecodes[f"KEY_{char}"], False
    if char.isalpha():
        return ecodes.ecodes[f"KEY_{char.upper()}"], char.isupper()
    name, shift = _PUNCT[char]
    return ecodes.ecodes[name], shift


def _ev(code: int, value: int, etype: int = ecodes.EV_KEY) -> InputEvent:
    now = time.time()
    return InputEvent(int(now), int(now % 1 * 1e6), etype, code, value)


def press(code: int) -> list[InputEvent]:
    """What a keyboard sends for one key stroke: MSC scan, key down, SYN, key up, SYN."""
    return [
        _ev(ecodes.MSC_SCAN, 0x70000 + code, ecodes.EV_MSC),
        _ev(code, 1),
        _ev(ecodes.SYN_REPORT, 0, ecodes.EV_SYN),
        _ev(code, 0),
        _ev(ecodes.SYN_REPORT, 0, ecodes.EV_SYN),
    ]


def typed(text: str, end: str | None = "KEY_ENTER") -> list[InputEvent]:
    """The events a US-layout keyboard wedge sends for ``text`` (+ the end key)."""
    events: list[InputEvent] = []
    for char in text:
        code, shift = _key_for(char)
        if shift:
            events.append(_ev(ecodes.KEY_LEFTSHIFT, 1))
        events += press(code)
        if shift:
            events.append(_ev(ecodes.KEY_LEFTSHIFT, 0))
    if end is not None:
        events += press(ecodes.ecodes[end])
    return events


def feed_all(framer: KeyFramer, events: list[InputEvent], now_ns: int = 0) -> list[str | Refused]:
    out = [framer.feed(e, now_ns) for e in events]
    return [got for got in out if got is not None]


NOT_TEXT = Refused("a code with keys that are not text (a keyboard layout other than US?)")


# ---------------------------------------------------------------- key mapping and framing


def test_key_table_matches_the_kernel_codes() -> None:
    for name, code, _lo, _hi in KEYMAP_US:
        assert ecodes.ecodes[name] == code, name
    for table in (SHIFT, ENTER, BLOCKING_MODIFIERS):
        for code, name in table.items():
            assert ecodes.ecodes[name] == code, name
    assert ecodes.ecodes[CAPSLOCK[1]] == CAPSLOCK[0]


def test_every_printable_character_comes_back_exact() -> None:
    framer = KeyFramer()
    assert feed_all(framer, typed(PRINTABLE)) == [PRINTABLE]
    assert feed_all(framer, typed("TK1:8%P.E4 -/*+$", end="KEY_KPENTER")) == ["TK1:8%P.E4 -/*+$"]


@given(st.text(alphabet=PRINTABLE, min_size=1, max_size=200))
def test_typed_text_round_trips(text: str) -> None:
    framer = KeyFramer(max_frame=200, noread=())
    assert feed_all(framer, typed(text)) == [text]


def test_keypad_right_shift_and_caps_lock() -> None:
    framer = KeyFramer()
    keypad = [ecodes.KEY_KP1, ecodes.KEY_KP2, ecodes.KEY_KPDOT, ecodes.KEY_KPMINUS]
    events = [e for code in keypad for e in press(code)] + press(ecodes.KEY_KPENTER)
    assert feed_all(framer, events) == ["12.-"]
    events = [_ev(ecodes.KEY_RIGHTSHIFT, 1), *press(ecodes.KEY_A), _ev(ecodes.KEY_RIGHTSHIFT, 0)]
    events += press(ecodes.KEY_A) + press(ecodes.KEY_ENTER)
    assert feed_all(framer, events) == ["Aa"]
    caps = press(ecodes.KEY_CAPSLOCK)
    events = caps + press(ecodes.KEY_A) + press(ecodes.KEY_1)
    events += [_ev(ecodes.KEY_LEFTSHIFT, 1), *press(ecodes.KEY_B), _ev(ecodes.KEY_LEFTSHIFT, 0)]
    events += caps + press(ecodes.KEY_C) + press(ecodes.KEY_ENTER)
    assert feed_all(framer, events) == ["A1bc"]  # caps lock: letters only; shift inverts it


def test_key_repeat_and_release_do_not_type() -> None:
    framer = KeyFramer()
    events = [
        _ev(ecodes.KEY_A, 1),
        _ev(ecodes.KEY_A, 2),
        _ev(ecodes.KEY_A, 2),
        _ev(ecodes.KEY_A, 0),
    ]
    assert feed_all(framer, events + press(ecodes.KEY_ENTER)) == ["a"]


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        (typed("TK1:AB", end=None) + press(ecodes.KEY_F1) + typed("CD"), "non_printable"),
        (typed("AB", end=None) + press(ecodes.KEY_TAB) + typed("CD"), "non_printable"),
        (
            [
                _ev(ecodes.KEY_LEFTCTRL, 1),
                *press(ecodes.KEY_C),
                _ev(ecodes.KEY_LEFTCTRL, 0),
                *typed("AB"),
            ],
            "non_printable",
        ),
        ([_ev(ecodes.KEY_RIGHTALT, 1), *typed("E"), _ev(ecodes.KEY_RIGHTALT, 0)], "non_printable"),
        (typed("X" * 33), "oversize"),
        (typed("NR"), "noread"),
        (typed("%%NoRead"), "noread"),
    ],
)
def test_refused_frames_are_dropped_whole(events: list[InputEvent], reason: str) -> None:
    framer = KeyFramer(max_frame=32, noread=("NR", "%%NoRead"))
    # A code typed in full but refused says why (the lane tells the staff); a no-read is nothing.
    expected = {
        "non_printable": [NOT_TEXT],
        "oversize": [Refused("a code of 33 characters, over the reader's 32")],
        "noread": [],
    }[reason]
    assert feed_all(framer, events) == expected
    assert framer.dropped == {reason: 1}
    assert feed_all(framer, typed("NEXT-1")) == ["NEXT-1"]  # the reader keeps working


def test_oversize_frame_of_any_length_stays_dropped() -> None:
    framer = KeyFramer(max_frame=32)
    assert feed_all(framer, typed("Y" * 32)) == ["Y" * 32]
    assert feed_all(framer, typed("Z" * 5000)) == [
        Refused("a code of 5,000 characters, over the reader's 32")
    ]
    assert framer.dropped == {"oversize": 1}


def test_idle_pause_drops_the_half_frame() -> None:
    framer = KeyFramer(idle_ms=300)
    for e in typed("HALF", end=None):
        assert framer.feed(e, 0) is None
    out = [framer.feed(e, 301 * MS) for e in typed("WHOLE")]
    assert [t for t in out if t] == ["WHOLE"]
    assert framer.dropped == {"idle": 1}
    slow, now = [], 0
    for e in typed("OK"):  # 250 ms between characters: slow, but under idle_ms
        stroke = (e.type, e.value) == (ecodes.EV_KEY, 1) and e.code not in SHIFT
        now += 250 * MS if stroke else 0
        slow.append(framer.feed(e, now))
    assert [t for t in slow if t] == ["OK"]
    assert feed_all(framer, press(ecodes.KEY_ENTER)) == []  # an empty frame is nothing


# ---------------------------------------------------------------- the read loop


_PIPES: list[int] = []


@pytest.fixture(autouse=True)
def _close_pipes() -> Iterator[None]:
    yield
    while _PIPES:
        os.close(_PIPES.pop())


class FakeDevice:
    """An input device on a real pipe fd: ``read()`` raises BlockingIOError when empty and
    OSError(ENODEV) once unplugged, as evdev.InputDevice does."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        _PIPES.extend((self._r, self._w))
        os.set_blocking(self._r, False)
        self.pending: list[InputEvent] = []
        self.grabbed = False
        self.closed = False
        self.gone = False
        self.grab_error: OSError | None = None

    @property
    def fd(self) -> int:
        return self._r

    def type(self, events: list[InputEvent]) -> None:
        self.pending += events
        os.write(self._w, b"k")

    def unplug(self) -> None:
        self.gone = True
        os.write(self._w, b"x")

    def read(self) -> Iterator[InputEvent]:
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 4096)
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        if not self.pending:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        events, self.pending = self.pending, []
        return iter(events)

    def grab(self) -> None:
        if self.grab_error is not None:
            raise self.grab_error
        self.grabbed = True

    def ungrab(self) -> None:
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        self.grabbed = False

    def close(self) -> None:
        self.closed = True  # the pipe stays: the same device may be opened again


class Bus:
    """The devices that appear at the scanner's path over time (None: nothing there)."""

    def __init__(self) -> None:
        self.device: FakeDevice | None = None
        self.opens = 0

    def factory(self, path: str) -> FakeDevice:
        self.opens += 1
        if self.device is None or self.device.gone:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        self.device.closed = False
        return self.device


PATH = "/dev/input/by-id/usb-Scanner-event-kbd"


async def _until(check: Callable[[], bool], within_s: float = 3.0) -> None:
    await until(check, within_s)  # this file's default: 3 s


async def test_scanner_reads_frames_and_releases_the_grab() -> None:
    bus = Bus()
    bus.device = device = FakeDevice()
    scanner = HidScanner(PATH, device_factory=bus.factory)
    assert isinstance(scanner, Scanner)
    await scanner.open()
    await scanner.open()
    await _until(lambda: scanner.connected)
    assert device.grabbed and bus.opens == 1
    scans = scanner.scans()
    device.type(typed("TK1:ABC") + typed("NR") + typed("second"))
    first = await asyncio.wait_for(anext(scans), 2)
    second = await asyncio.wait_for(anext(scans), 2)
    assert (first.text, first.source, first.symbology) == ("TK1:ABC", f"hid:{PATH}", None)
    assert second.text == "second" and first.mono_ns <= second.mono_ns <= time.monotonic_ns()
    await scanner.close()
    await scanner.close()
    assert device.closed and not device.grabbed and not scanner.connected
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(scans), 1)


async def test_the_pause_inside_a_code_is_measured_between_its_key_events() -> None:
    """Found in a user trial: the idle gap was measured when the event loop got to the keys,
    so a loop busy for longer than idle_ms between two reads of one code split it (its second
    half decided as a code of its own), and a pause inside a batch read at once was not seen."""
    bus = Bus()
    bus.device = device = FakeDevice()
    scanner = HidScanner(f"{PATH}", idle_ms=20, device_factory=bus.factory)
    await scanner.open()
    await _until(lambda: scanner.connected)
    scans = scanner.scans()
    whole = typed("TK1:ABCDEF")  # typed at once: its events' times microseconds apart
    device.type(whole[:12])
    await _until(lambda: not device.pending)  # the first half was read
    time.sleep(0.1)  # noqa: ASYNC251 (the scenario: the loop busy while the rest comes in)
    device.type(whole[12:])
    assert (await asyncio.wait_for(anext(scans), 2)).text == "TK1:ABCDEF"
    # A pause of 50 ms inside a code read in one batch: the half before it is dropped.
    stamped = [
        InputEvent(e.sec, e.usec + (50_000 if i >= 12 else 0), e.type, e.code, e.value)
        for i, e in enumerate(typed("HALFWHOLE"))
    ]
    device.type(stamped)
    assert (await asyncio.wait_for(anext(scans), 2)).text == "LFWHOLE"
    assert scanner.framer.dropped == {"idle": 1}
    await scanner.close()


async def test_unplug_mid_frame_reconnects_and_never_joins_halves() -> None:
    bus = Bus()
    bus.device = first = FakeDevice()
    scanner = HidScanner(PATH, device_factory=bus.factory, retry_max_s=0.2)
    await scanner.open()
    await _until(lambda: scanner.connected)
    scans = scanner.scans()
    first.type(typed("TK1:HALF", end=None))
    await _until(lambda: not first.pending)  # the driver has read the half frame
    first.unplug()
    await _until(lambda: not scanner.connected)
    await _until(lambda: bus.opens >= 3)  # some failed attempts while it is away
    assert bus.opens >= 3 and scanner.last_error is not None
    bus.device = second = FakeDevice()
    back = time.monotonic()
    await _until(lambda: scanner.connected)
    second.type(typed("WHOLE"))
    scan = await asyncio.wait_for(anext(scans), 2)
    assert scan.text == "WHOLE"
    assert time.monotonic() - back < 2.0
    assert scanner.reconnects == 1 and scanner.framer.dropped["disconnect"] == 1
    assert first.closed and second.grabbed
    await scanner.close()


async def test_a_failure_while_decoding_does_not_end_the_scanner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bus = Bus()
    bus.device = device = FakeDevice()
    scanner = HidScanner(PATH, device_factory=bus.factory, retry_max_s=0.2)
    await scanner.open()
    await _until(lambda: scanner.connected)

    def broken(event: object, now_ns: int) -> str | None:
        raise RuntimeError("a bug in decoding")

    monkeypatch.setattr(scanner.framer, "feed", broken)
    device.type(typed("X"))
    await _until(lambda: scanner.reconnects == 1)
    monkeypatch.undo()
    await _until(lambda: scanner.connected)
    device.type(typed("AFTER"))
    assert (await asyncio.wait_for(anext(scanner.scans()), 2)).text == "AFTER"
    await scanner.close()


async def test_missing_device_and_busy_grab_are_retried() -> None:
    bus = Bus()
    scanner = HidScanner(PATH, device_factory=bus.factory, retry_max_s=0.2)
    await scanner.open()  # nothing plugged in: not an error, retried
    await _until(lambda: scanner.last_error is not None)
    assert not scanner.connected and "no such device" in (scanner.last_error or "")
    bus.device = device = FakeDevice()
    device.grab_error = OSError(errno.EBUSY, "Device or resource busy")
    await _until(lambda: "already grabbed" in (scanner.last_error or ""))
    assert not scanner.connected
    device.grab_error = None
    await _until(lambda: scanner.connected)
    assert device.grabbed
    await scanner.close()


async def test_grab_off_leaves_the_device_shared() -> None:
    bus = Bus()
    bus.device = device = FakeDevice()
    scanner = HidScanner.from_url(f"hid://{PATH}?grab=0")
    scanner._factory = bus.factory
    await scanner.open()
    await _until(lambda: scanner.connected)
    device.type(typed("SHARED"))
    assert (await asyncio.wait_for(anext(scanner.scans()), 2)).text == "SHARED"
    assert not device.grabbed
    await scanner.close()


def test_url_parameters() -> None:
    scanner = registry.create(
        "scanner",
        f"hid://{PATH}?max_frame=300&idle_ms=150&grab=1&noread=NOREAD,ERR&retry_max_s=2.5",
    )
    assert isinstance(scanner, HidScanner)
    assert (scanner.path, scanner.grab, scanner.retry_max_s) == (PATH, True, 2.5)
    assert scanner.framer.max_frame == 300 and scanner.framer.idle_ns == 150 * MS
    assert scanner.framer.noread == {"NOREAD", "ERR"}
    assert HidScanner.from_url(f"hid://{PATH}?noread=").framer.noread == set()
    assert HidScanner.from_url(f"hid://{PATH}").framer.noread == {"NR", "%%NoRead"}


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("hid://event3", "must be absolute"),
        (f"hid://{PATH}?max_frame=0", "max_frame must be an integer in 1..65536"),
        (f"hid://{PATH}?idle_ms=soon", "idle_ms must be an integer"),
        (f"hid://{PATH}?grab=yes", "grab must be one of 0|1"),
        (f"hid://{PATH}?retry_max_s=nan", "retry_max_s must be a number of seconds"),
        (f"hid://{PATH}?layout=de", "unknown parameter layout"),
    ],
)
def test_bad_urls(url: str, words: str) -> None:
    with pytest.raises(DriverError) as info:
        HidScanner.from_url(url)
    assert words in str(info.value)


# ---------------------------------------------------------------- real kernel device (uinput)


def _uinput_ok() -> bool:
    return os.access("/dev/uinput", os.W_OK) and Path("/dev/input").is_dir()


@pytest.mark.hardware
@pytest.mark.skipif(not _uinput_ok(), reason="needs a writable /dev/uinput")
async def test_uinput_keyboard_end_to_end() -> None:
    from evdev import UInput

    keys = [code for _, code, _, _ in KEYMAP_US] + [ecodes.KEY_ENTER, ecodes.KEY_LEFTSHIFT]
    with UInput({ecodes.EV_KEY: keys}, name="gate-agent test wedge") as ui:
        await _until(lambda: ui.device is not None and os.access(ui.device.path, os.R_OK))
        assert ui.device is not None  # udev made the node
        scanner = HidScanner(str(ui.device.path))
        await scanner.open()
        await _until(lambda: scanner.connected)
        for event in typed("TK1:UINPUT-OK"):
            if event.type == ecodes.EV_KEY:
                ui.write(ecodes.EV_KEY, event.code, event.value)
                ui.syn()
        scan = await asyncio.wait_for(anext(scanner.scans()), 3)
        assert scan.text == "TK1:UINPUT-OK"
        await scanner.close()
