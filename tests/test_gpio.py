"""GPIO gate I/O and GPIO indicators against an in-memory chip speaking gpiod's own types.

The fake (:class:`FakeChip`) keeps physical levels per line, applies ``LineSettings.active_low``
as the kernel does, records every output change with its time, and turns input changes into
``gpiod.EdgeEvent`` objects on a real pipe fd, so the driver's ``add_reader`` path runs for real.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import accumulate
from pathlib import Path

import pytest
from gpiod import EdgeEvent, LineSettings, RequestReleasedError
from gpiod.line import Bias, Clock, Direction, Edge, Value
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import DriverError, RelayReleaseError
from agent.model import Decision, Reason, Verdict
from agent.ports import GateIO, Indicator, InputEvent
from drivers import registry
from drivers.gpio import GpioGate, GpioGateSettings
from drivers.gpio_lines import Debouncer, LineSpec, line_settings
from drivers.indicators import GpioIndicator, GpioIndicatorSettings
from tests.polling import until

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- the fake chip

NAMES = [f"GPIO{n}" for n in range(28)]


class FakeChip:
    def __init__(self, path: str = "/dev/gpiochip0", names: list[str] | None = None) -> None:
        self.path = path
        self.names = names or list(NAMES)
        self.physical = [True] * len(self.names)  # idle high, as with pull-ups
        self.owner: dict[int, FakeRequest] = {}
        self.history: list[tuple[int, bool, int]] = []  # (offset, physical level, mono ns)
        self.requests: list[FakeRequest] = []
        self.closed = 0

    def factory(self, path: str) -> FakeChip:
        if path != self.path:
            raise OSError(errno.ENOENT, "No such file or directory", path)
        return self

    def close(self) -> None:
        self.closed += 1

    def line_offset_from_id(self, id: str | int) -> int:
        if isinstance(id, str) and id in self.names:
            return self.names.index(id)
        try:
            offset = int(id)
        except ValueError:
            raise OSError(errno.ENOENT, "No such file or directory") from None
        if offset >= len(self.names):
            raise ValueError("line offset of out range")
        return offset

    def request_lines(
        self,
        config: dict[Iterable[int | str] | int | str, LineSettings | None],
        consumer: str | None = None,
        event_buffer_size: int | None = None,
        output_values: dict[int | str, Value] | None = None,
    ) -> FakeRequest:
        settings: dict[int, LineSettings] = {}
        for key, value in config.items():
            assert isinstance(key, int), "the drivers resolve lines to offsets themselves"
            if key in self.owner:
                raise OSError(errno.EBUSY, "Device or resource busy")
            settings[key] = value or LineSettings()
        request = FakeRequest(self, settings)
        for offset, s in settings.items():
            self.owner[offset] = request
            if s.direction is Direction.OUTPUT:
                self._set_physical(offset, (s.output_value is Value.ACTIVE) != s.active_low)
        self.requests.append(request)
        return request

    def drive(self, line: str, high: bool) -> None:
        """Set an input's physical level as the wiring would."""
        offset = self.names.index(line)
        before = self.physical[offset]
        self.physical[offset] = high
        request = self.owner.get(offset)
        if request is not None and before != high:
            request.edge(offset)

    def level(self, line: str) -> bool:
        return self.physical[self.names.index(line)]

    def pulses(self, line: str, active_high: bool = True) -> list[tuple[int, int]]:
        """(start, end) ns of every active interval of an output line."""
        offset = self.names.index(line)
        out: list[tuple[int, int]] = []
        start: int | None = None
        for off, level, t in self.history:
            if off != offset:
                continue
            active = level == active_high
            if active and start is None:
                start = t
            elif not active and start is not None:
                out.append((start, t))
                start = None
        if start is not None:
            out.append((start, -1))
        return out

    def _set_physical(self, offset: int, high: bool) -> None:
        self.physical[offset] = high
        self.history.append((offset, high, time.monotonic_ns()))


class FakeRequest:
    def __init__(self, chip: FakeChip, settings: dict[int, LineSettings]) -> None:
        self.chip = chip
        self.settings = settings
        self.fail_set: list[OSError | None] = []  # outcome of the next set_value calls, in order
        self.fail_read: OSError | None = None
        self.released = False
        self._events: list[EdgeEvent] = []
        self._seq = 0
        self._line_seq: Counter[int] = Counter()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)

    @property
    def fd(self) -> int:
        self._check()
        return self._r

    def _check(self) -> None:
        if self.released:
            raise RequestReleasedError()

    def get_value(self, line: int | str) -> Value:
        self._check()
        assert isinstance(line, int)
        logical = self.chip.physical[line] != self.settings[line].active_low
        return Value.ACTIVE if logical else Value.INACTIVE

    def set_value(self, line: int | str, value: Value) -> None:
        self._check()
        assert isinstance(line, int)
        if self.fail_set and (error := self.fail_set.pop(0)) is not None:
            raise error
        s = self.settings[line]
        assert s.direction is Direction.OUTPUT
        self.chip._set_physical(line, (value is Value.ACTIVE) != s.active_low)

    def read_edge_events(self, max_events: int | None = None) -> list[EdgeEvent]:
        self._check()
        if self.fail_read is not None:
            raise self.fail_read
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        events, self._events = self._events, []
        return events

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        for offset in self.settings:
            self.chip.owner.pop(offset, None)
        os.close(self._r)
        os.close(self._w)

    def edge(self, offset: int) -> None:
        s = self.settings[offset]
        if s.edge_detection is Edge.NONE:
            return
        logical = self.chip.physical[offset] != s.active_low
        kind = EdgeEvent.Type.RISING_EDGE if logical else EdgeEvent.Type.FALLING_EDGE
        self._seq += 1
        self._line_seq[offset] += 1
        event = EdgeEvent(
            kind.value, time.monotonic_ns(), offset, self._seq, self._line_seq[offset]
        )
        self._events.append(event)
        os.write(self._w, b"e")


# ---------------------------------------------------------------- helpers

GATE_URL = (
    "gpio://gpiochip0?relay=GPIO17&passage_entry=GPIO27&passage_exit=GPIO22"
    "&alarm=GPIO5&emergency=GPIO6&debounce_ms=10&pulse_ms=50"
)
HOLD_URL = "gpio://gpiochip0?relay=GPIO17&mode=hold&passage_entry=GPIO27&debounce_ms=5"


def make_gate(url: str = GATE_URL, chip: FakeChip | None = None) -> tuple[GpioGate, FakeChip]:
    chip = chip or FakeChip()
    return GpioGate(GpioGateSettings.from_url(url), chip.factory), chip


def crash_while_held(
    url: str, direction: str, lines: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    """A process that holds ``direction``'s output of the hold-mode gate ``url`` (on a FakeChip),
    then dies of RuntimeError("crash while held") without close(). Its stdout says the physical
    levels of ``lines`` while held and at interpreter exit: ``held True False``, ``exit ...``."""
    script = f"""
import asyncio, atexit
from tests.test_gpio import FakeChip
from drivers.gpio import GpioGate, GpioGateSettings

chip = FakeChip()
levels = lambda: " ".join(str(chip.level(line)) for line in {list(lines)!r})
atexit.register(lambda: print("exit", levels(), flush=True))

async def main():
    gate = GpioGate(GpioGateSettings.from_url({url!r}), chip.factory)
    await gate.open()
    await gate.grant({direction!r}, "x")
    print("held", levels(), flush=True)
    raise RuntimeError("crash while held")

asyncio.run(main())
"""
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


async def press(chip: FakeChip, line: str, ms: float = 40) -> None:
    """An active-low contact closes for ``ms`` (physical low), then opens."""
    chip.drive(line, False)
    await asyncio.sleep(ms / 1000)  # the scenario: the contact held closed for ms
    chip.drive(line, True)


# ---------------------------------------------------------------- URL and settings


def test_gate_url_every_parameter() -> None:
    s = GpioGateSettings.from_url(
        "gpio://gpiochip0?relay=GPIO17&relay_active=low&mode=hold&pulse_ms=300"
        "&hold_max_ms=5000&passage_entry=GPIO27&passage_exit=22&alarm=GPIO5&emergency=GPIO6"
        "&input_active=low&emergency_active=high&bias=pull_up&alarm_bias=disabled"
        "&debounce_ms=15&consumer=lane-1"
    )
    assert s.chip == "/dev/gpiochip0"
    assert s.outputs == {"relay": LineSpec("GPIO17", output=True, active_low=True)}
    assert (s.output("entry"), s.output("exit")) == ("relay", "relay")
    assert (s.mode, s.pulse_ms, s.hold_max_ms, s.debounce_ms) == ("hold", 300, 5000, 15)
    assert s.inputs["passage_exit"] == LineSpec("22", False, True, "pull_up")
    assert s.inputs["emergency"] == LineSpec("GPIO6", False, False, "pull_up")
    assert s.inputs["alarm"] == LineSpec("GPIO5", False, True, "disabled")
    assert s.consumer == "lane-1"
    plain = GpioGateSettings.from_url("gpio:///dev/gpiochip4?relay=17")
    assert (plain.chip, plain.outputs["relay"].active_low, plain.mode, plain.inputs) == (
        "/dev/gpiochip4",
        False,
        "pulse",
        {},
    )
    assert isinstance(GpioGate.from_url("gpio://gpiochip0?relay=GPIO17"), GateIO)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("gpio://gpiochip0", "needs a release output: relay=LINE (every direction), or relay_en"),
        ("gpio://gpiochip0?relay=", "relay must be a line name"),
        ("gpio://gpiochip0?relay=GPIO17&pulse_ms=fast", "pulse_ms must be an integer in 20..10000"),
        ("gpio://gpiochip0?relay=GPIO17&pulse_ms=5", "pulse_ms must be an integer"),
        (
            "gpio://gpiochip0?relay=GPIO17&relay_active=maybe",
            "relay_active must be one of high|low",
        ),
        ("gpio://gpiochip0?relay=GPIO17&speed=9", "unknown parameter speed (valid: "),
        ("gpio://gpiochip0?relay=GPIO17&mode=hold", "mode=hold needs passage_entry"),
        ("gpio://gpiochip0?relay=GPIO17&alarm=GPIO17", "its own line"),
        ("gpio://gpiochip0?relay=GPIO%2017", "relay must be a line name"),
        ("gpio://gpiochip0?relay=GPIO17&relay=GPIO18", "relay given twice"),
        ("gpio://?relay=1", "name the chip"),
        ("gpio://gpiochip0?relay=GPIO17&emergency=GPIO6&emergency_bias=up", "emergency_bias"),
        ("gpio://gpiochip0?relay=GPIO17&debounce_ms=-1", "debounce_ms must be an integer"),
        ("gpio://gpiochip0?relay", "malformed query"),
        ("lcus://gpiochip0?relay=GPIO17", "not a gpio:// URL"),
    ],
)
def test_gate_bad_urls_name_the_parameter(url: str, words: str) -> None:
    with pytest.raises(DriverError, match=None) as info:
        GpioGateSettings.from_url(url)
    assert words in str(info.value)


def test_line_settings_follow_polarity() -> None:
    relay = line_settings(LineSpec("GPIO17", output=True, active_low=True))
    assert relay.direction is Direction.OUTPUT
    assert relay.active_low is True
    assert relay.output_value is Value.INACTIVE  # requested already off: no glitch at start
    assert relay.edge_detection is Edge.NONE
    contact = line_settings(LineSpec("GPIO6", output=False, active_low=True, bias="pull_up"))
    assert contact.direction is Direction.INPUT
    assert contact.edge_detection is Edge.BOTH
    assert (contact.bias, contact.active_low) == (Bias.PULL_UP, True)
    assert contact.event_clock is Clock.MONOTONIC  # comparable with time.monotonic_ns()


def test_driver_modules_import_no_hardware_library() -> None:
    script = (
        "import sys, drivers.gpio, drivers.indicators, drivers.lcus, drivers.hid\n"
        "print(sorted(m for m in ('gpiod', 'evdev', 'serial') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_registry_builds_the_gpio_drivers() -> None:
    gate = registry.create("gate", "gpio://gpiochip0?relay=GPIO17&emergency=GPIO6")
    assert isinstance(gate, GpioGate) and set(gate.settings.inputs) == {"emergency"}
    indicator = registry.create("indicator", "gpio://gpiochip0?green=GPIO23")
    assert isinstance(indicator, GpioIndicator)


# ---------------------------------------------------------------- debounce (pure)


def test_debouncer_ignores_bounce_and_reports_held_levels() -> None:
    ms = 1_000_000
    deb = Debouncer(20 * ms)
    changes = []
    for t, level in [(0, True), (2, False), (3, True), (5, False), (6, True)]:  # bounce
        changes += deb.edge(level, t * ms)
    assert changes == [] and deb.deadline_ns == 26 * ms
    assert deb.settle(25 * ms) == []
    assert deb.settle(26 * ms) == [(True, 6 * ms)]
    assert deb.state is True and deb.changed_ns == 6 * ms
    assert deb.edge(False, 100 * ms) == [] and deb.edge(True, 110 * ms) == []  # 10 ms glitch
    assert deb.settle(200 * ms) == [] and deb.state is True
    zero = Debouncer(0)
    assert zero.edge(True, 1) == [(True, 1)]
    assert zero.edge(False, 1) == [(False, 1)]


@given(
    period=st.integers(0, 40),
    start=st.booleans(),
    edges=st.lists(st.tuples(st.booleans(), st.integers(0, 60)), max_size=40),
)
def test_debouncer_matches_reference_model(
    period: int, start: bool, edges: list[tuple[bool, int]]
) -> None:
    """A level is reported iff it held for the period before the next edge (or the end)."""
    times = list(accumulate(gap for _, gap in edges))
    levels = [level for level, _ in edges]
    end = (times[-1] if times else 0) + period
    deb, got = Debouncer(period, start), []
    for level, t in zip(levels, times, strict=True):
        got += deb.edge(level, t)
    got += deb.settle(end)
    expected, state = [], start
    for i, (level, t) in enumerate(zip(levels, times, strict=True)):
        following = times[i + 1] if i + 1 < len(times) else end
        if following - t >= period and level != state:
            expected.append((level, t))
            state = level
    assert got == expected
    assert deb.state == state


# ---------------------------------------------------------------- relay


async def test_open_close_keep_the_relay_off_and_are_idempotent() -> None:
    gate, chip = make_gate(GATE_URL + "&relay_active=low")
    await gate.open()
    await gate.open()
    assert len(chip.requests) == 1
    assert chip.level("GPIO17") is True  # active-low relay: high is off
    assert chip.pulses("GPIO17", active_high=False) == []  # never on, not even for a moment
    assert gate.relay_active is False
    await gate.close()
    await gate.close()
    assert chip.requests[0].released and chip.level("GPIO17") is True
    await gate.open()  # the lines were really given back
    assert len(chip.requests) == 2
    await gate.close()


async def test_exactly_one_pulse_of_pulse_ms_per_grant() -> None:
    gate, chip = make_gate(GATE_URL + "&relay_active=low")
    await gate.open()
    await gate.grant("entry", "e1")
    pulses = chip.pulses("GPIO17", active_high=False)
    assert len(pulses) == 1
    start, end = pulses[0]
    assert 48e6 <= end - start < 200e6
    assert chip.level("GPIO17") is True
    await gate.grant("exit", "e2")
    assert len(chip.pulses("GPIO17", active_high=False)) == 2 and gate.pulses == 2
    await gate.close()


async def test_relay_failing_to_switch_on_raises_and_stays_off() -> None:
    gate, chip = make_gate()
    await gate.open()
    chip.requests[0].fail_set = [OSError(errno.EIO, "Input/output error")]
    with pytest.raises(DriverError, match="cannot set relay") as info:
        await gate.grant("entry", "e1")
    assert isinstance(info.value.__cause__, OSError)
    assert chip.pulses("GPIO17") == [] and gate.pulses == 0
    assert await gate.wait_passage(0.01) is False  # a failed grant is no admission
    await gate.grant("entry", "e2")  # the next admission works
    assert len(chip.pulses("GPIO17")) == 1
    await gate.close()


async def test_relay_failing_to_switch_off_is_retried_once_and_reported() -> None:
    gate, chip = make_gate()
    await gate.open()
    request = chip.requests[0]
    request.fail_set = [None, OSError(errno.EIO, "Input/output error")]
    await gate.grant("entry", "e1")  # released on the retry: the pulse happened, no error
    assert chip.level("GPIO17") is False and not gate.relay_active
    assert len(chip.pulses("GPIO17")) == 1
    request.fail_set = [None, OSError(errno.EIO, "I/O"), OSError(errno.EIO, "I/O")]
    with pytest.raises(RelayReleaseError, match="MAY STILL BE ENERGISED"):
        await gate.grant("entry", "e2")
    assert chip.level("GPIO17") is True  # reported honestly
    await gate.close()  # the stop path switches it off
    assert chip.level("GPIO17") is False


async def test_cancelled_pulse_leaves_the_relay_off() -> None:
    gate, chip = make_gate(GATE_URL.replace("pulse_ms=50", "pulse_ms=5000"))
    await gate.open()
    task = asyncio.create_task(gate.grant("entry", "e1"))
    await until(lambda: gate.relay_active, 5, "the relay on")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not gate.relay_active and chip.pulses("GPIO17")[0][1] != -1
    await gate.close()


def test_relay_released_at_interpreter_exit_without_close() -> None:
    url = "gpio://gpiochip0?relay=GPIO17&mode=hold&passage_entry=GPIO27"
    proc = crash_while_held(url, "entry", ["GPIO17"])
    assert "RuntimeError: crash while held" in proc.stderr
    assert proc.stdout.split("\n")[:2] == ["held True", "exit False"]  # active high: on, off


# ---------------------------------------------------------------- passage


async def test_passage_counts_only_for_the_granted_direction() -> None:
    gate, chip = make_gate()
    await gate.open()
    await gate.grant("entry", "e1")
    waiter = asyncio.create_task(gate.wait_passage(2.0))
    await press(chip, "GPIO22")  # the exit sensor
    await asyncio.sleep(0.03)  # the scenario: a moment in which a wrong passage would show
    assert not waiter.done()
    started = time.monotonic()
    await press(chip, "GPIO27")
    assert await waiter is True
    assert time.monotonic() - started < 0.5
    assert gate.unexpected_passages == 1
    await gate.close()


async def test_passage_during_the_pulse_is_not_missed() -> None:
    gate, chip = make_gate(GATE_URL.replace("pulse_ms=50", "pulse_ms=500"))
    await gate.open()
    grant = asyncio.create_task(gate.grant("entry", "e1"))
    await until(lambda: gate.relay_active, 5, "the pulse started")
    await press(chip, "GPIO27", 40)
    await grant
    assert await gate.wait_passage(0.01) is True
    assert gate.unexpected_passages == 0
    await gate.close()


async def test_contact_bounce_is_not_a_passage() -> None:
    gate, chip = make_gate(GATE_URL.replace("debounce_ms=10", "debounce_ms=30"))
    await gate.open()
    await gate.grant("entry", "e1")
    waiter = asyncio.create_task(gate.wait_passage(0.4))
    for _ in range(5):
        await press(chip, "GPIO27", 3)
        await asyncio.sleep(0.003)  # the scenario: a bouncing contact, open 3 ms between closes
    assert await waiter is False
    await gate.grant("entry", "e2")
    waiter = asyncio.create_task(gate.wait_passage(2.0))
    for _ in range(3):  # a real press: bounces, then holds
        await press(chip, "GPIO27", 2)
    chip.drive("GPIO27", False)
    held = time.monotonic()
    assert await waiter is True
    assert time.monotonic() - held >= 0.028
    await gate.close()


async def test_timeout_then_late_passage_is_unexpected() -> None:
    gate, chip = make_gate()
    await gate.open()
    await gate.grant("entry", "e1")
    assert await gate.wait_passage(0.05) is False
    await press(chip, "GPIO27")
    await until(lambda: gate.unexpected_passages >= 1, 5, "the late passage counted")
    assert gate.unexpected_passages == 1
    await gate.close()


async def test_direction_without_passage_input_counts_as_passed() -> None:
    gate, _chip = make_gate("gpio://gpiochip0?relay=GPIO17&passage_entry=GPIO27&pulse_ms=20")
    await gate.open()
    await gate.grant("exit", "x1")
    started = time.monotonic()
    assert await gate.wait_passage(5.0) is True
    assert time.monotonic() - started < 0.1
    assert await gate.wait_passage(0.01) is False  # no grant pending any more
    with pytest.raises(DriverError, match="unknown direction"):
        await gate.grant("sideways", "x2")
    await gate.close()


async def test_hold_mode_holds_until_passage_or_timeout() -> None:
    gate, chip = make_gate(HOLD_URL)
    await gate.open()
    await gate.grant("entry", "e1")
    assert gate.relay_active
    waiter = asyncio.create_task(gate.wait_passage(2.0))
    await asyncio.sleep(0.1)  # the scenario: nobody passes for a while; the relay stays held
    assert gate.relay_active and not waiter.done()
    with pytest.raises(DriverError, match="still held"):
        await gate.grant("entry", "e2")
    await press(chip, "GPIO27")
    assert await waiter is True
    assert not gate.relay_active
    ((start, end),) = chip.pulses("GPIO17")
    assert end - start >= 100e6
    await gate.grant("entry", "e3")
    assert await gate.wait_passage(0.05) is False
    assert not gate.relay_active and len(chip.pulses("GPIO17")) == 2
    await gate.close()


async def test_hold_mode_failsafe_releases_when_nobody_waits() -> None:
    gate, chip = make_gate(HOLD_URL + "&hold_max_ms=1000")
    await gate.open()
    await gate.grant("entry", "e1")
    assert gate.relay_active
    await until(lambda: not gate.relay_active, 10, "the failsafe released the relay")
    ((start, end),) = chip.pulses("GPIO17")
    assert end - start >= 1e9  # held for hold_max_ms (1 s) with nobody waiting, then let go
    await gate.grant("entry", "e2")  # usable again
    await gate.close()
    assert not gate.relay_active


async def test_close_wakes_a_waiting_passage_with_false() -> None:
    gate, _chip = make_gate(HOLD_URL)
    await gate.open()
    await gate.grant("entry", "e1")
    waiter = asyncio.create_task(gate.wait_passage(5.0))
    await asyncio.sleep(0.02)  # the scenario: close while the passage is being waited for
    await gate.close()
    assert await asyncio.wait_for(waiter, 1) is False
    with pytest.raises(DriverError, match="not open"):
        await gate.grant("entry", "e2")


# ---------------------------------------------------------------- alarm and emergency


async def test_emergency_and_alarm_reach_events_debounced() -> None:
    chip = FakeChip()
    chip.physical[6] = False  # emergency contact already closed at start
    gate, _ = make_gate(chip=chip)
    await gate.open()
    events = gate.events()
    first = await asyncio.wait_for(anext(events), 1)
    assert (first.name, first.active) == ("emergency", True) and gate.emergency
    released = time.monotonic()
    chip.drive("GPIO6", True)  # released
    cleared = await asyncio.wait_for(anext(events), 1)
    assert cleared == InputEvent("emergency", False, cleared.mono_ns) and not gate.emergency
    assert time.monotonic() - released >= 0.010  # not before the debounce period (10 ms)
    await press(chip, "GPIO27")  # a passage: not an input event
    await press(chip, "GPIO5", 30)
    alarm_on = await asyncio.wait_for(anext(events), 1)
    alarm_off = await asyncio.wait_for(anext(events), 1)
    assert [(e.name, e.active) for e in (alarm_on, alarm_off)] == [
        ("alarm", True),
        ("alarm", False),
    ]
    assert 25e6 <= alarm_off.mono_ns - alarm_on.mono_ns < 200e6  # edge times, not settle times
    await gate.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(events), 1)


async def test_emergency_polarity_per_input() -> None:
    url = GATE_URL + "&emergency_active=high"
    chip = FakeChip()
    gate, _ = make_gate(url, chip)
    await gate.open()  # GPIO6 idles high: a normally-closed loop that is open = emergency
    assert gate.emergency
    chip.drive("GPIO6", False)
    await until(lambda: not gate.emergency, 0.05, "the emergency cleared")
    await gate.close()


async def test_input_read_error_is_reported_as_fault() -> None:
    gate, chip = make_gate()
    await gate.open()
    chip.requests[0].fail_read = OSError(errno.EIO, "Input/output error")
    chip.drive("GPIO5", False)
    await until(lambda: gate.fault is not None, 0.05, "the read error reported")
    assert gate.fault is not None and "reading edge events" in gate.fault
    await gate.grant("entry", "e1")  # the relay still works
    # Nobody can tell whether a person passed: the entry stands instead of being annulled.
    assert await gate.wait_passage(0.05) is True
    await gate.close()


# ---------------------------------------------------------------- finding lines


async def test_lines_by_offset_and_clear_errors() -> None:
    chip = FakeChip()
    gate, _ = make_gate("gpio://gpiochip0?relay=17&passage_entry=27&pulse_ms=20", chip)
    await gate.open()
    await gate.grant("entry", "e1")
    assert len(chip.pulses("GPIO17")) == 1
    other, _ = make_gate("gpio://gpiochip0?relay=GPIO17", chip)
    with pytest.raises(DriverError, match="line busy"):
        await other.open()
    assert set(chip.owner) == {17, 27}  # the failed request took nothing
    await gate.close()
    for url, words in [
        ("gpio://gpiochip0?relay=GPIO99", "relay=GPIO99: no line with that name or offset"),
        ("gpio://gpiochip0?relay=40", "relay=40: no line"),
        ("gpio://gpiochip9?relay=GPIO17", "cannot open /dev/gpiochip9: no such device"),
        ("gpio://gpiochip0?relay=GPIO4&alarm=4", "relay and alarm are the same line 4"),
    ]:
        bad, _ = make_gate(url, chip)
        with pytest.raises(DriverError) as info:
            await bad.open()
        assert words in str(info.value)
    assert chip.owner == {}


# ---------------------------------------------------------------- indicators

IND_URL = (
    "gpio://gpiochip0?green=GPIO23&red=GPIO24&buzzer=GPIO25&show_ms=200&beep_ms=20&deny_beeps=3"
)
ADMIT = Decision(Verdict.ADMIT, Reason.OK, "welcome")
DENY = Decision(Verdict.DENY, Reason.ALREADY_USED, "Gate 3")


def make_indicator(url: str = IND_URL) -> tuple[GpioIndicator, FakeChip]:
    chip = FakeChip()
    chip.physical = [False] * len(chip.names)
    return GpioIndicator(GpioIndicatorSettings.from_url(url), chip.factory), chip


async def test_indicator_green_for_admit_then_off() -> None:
    ind, chip = make_indicator()
    assert isinstance(ind, Indicator)
    await ind.open()
    started = time.monotonic()
    await ind.show(ADMIT, "Welcome")
    assert time.monotonic() - started < 0.05  # the lane does not wait for the lamp
    assert (chip.level("GPIO23"), chip.level("GPIO24")) == (True, False)
    lamps = ("GPIO23", "GPIO24", "GPIO25")
    await until(lambda: not any(chip.level(n) for n in lamps), 0.3, "every lamp off again")
    assert chip.pulses("GPIO25") == []
    await ind.close()


async def test_indicator_red_and_beeps_for_deny() -> None:
    ind, chip = make_indicator()
    await ind.open()
    await ind.show(DENY, "Already used at Gate 3")
    assert (chip.level("GPIO23"), chip.level("GPIO24")) == (False, True)
    await asyncio.sleep(0.3)  # the scenario: the whole deny signal plays (red ~0.2 s, 3 beeps)
    beeps = chip.pulses("GPIO25")
    assert len(beeps) == 3 and all(15e6 <= end - start < 100e6 for start, end in beeps)
    ((red_on, red_off),) = chip.pulses("GPIO24")
    assert 190e6 <= red_off - red_on < 400e6
    await ind.close()


async def test_indicator_next_decision_replaces_the_shown_one() -> None:
    ind, chip = make_indicator()
    await ind.open()
    await ind.show(DENY, "no")
    await asyncio.sleep(0.03)  # the scenario: the next decision 30 ms into the first one
    await ind.show(ADMIT, "yes")
    assert [chip.level(n) for n in ("GPIO23", "GPIO24", "GPIO25")] == [True, False, False]
    await asyncio.sleep(0.3)  # the scenario: time for a beep of the replaced signal to show
    assert len(chip.pulses("GPIO25")) <= 1 and chip.level("GPIO23") is False
    await ind.close()


async def test_indicator_polarity_close_and_faults() -> None:
    ind, chip = make_indicator(
        "gpio://gpiochip0?green=GPIO23&red=GPIO24&active=low&red_active=high"
    )
    await ind.open()
    await ind.open()
    assert (chip.level("GPIO23"), chip.level("GPIO24")) == (True, False)  # both off
    await ind.show(ADMIT, "Welcome")
    assert chip.level("GPIO23") is False  # active low: on
    chip.requests[0].fail_set = [OSError(errno.EIO, "I/O")]
    with pytest.raises(DriverError, match="cannot set"):
        await ind.show(DENY, "no")
    assert (chip.level("GPIO23"), chip.level("GPIO24")) == (True, False)
    await ind.close()
    await ind.close()
    assert chip.requests[0].released and len(chip.requests) == 1
    with pytest.raises(DriverError, match="not open"):
        await ind.show(ADMIT, "Welcome")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("gpio://gpiochip0?show_ms=100", "at least one of green, red, buzzer"),
        ("gpio://gpiochip0?green=GPIO23&deny_beeps=11", "deny_beeps must be an integer in 0..10"),
        ("gpio://gpiochip0?green=GPIO23&blue=GPIO24", "unknown parameter blue"),
        ("gpio://gpiochip0?green=GPIO23&red=GPIO23", "its own line"),
        ("gpio://gpiochip0?green=GPIO23&active=dim", "active must be one of high|low"),
    ],
)
def test_indicator_bad_urls(url: str, words: str) -> None:
    with pytest.raises(DriverError) as info:
        GpioIndicatorSettings.from_url(url)
    assert words in str(info.value)


# ---------------------------------------------------------------- real chip (gpio-sim)


def _gpio_sim() -> tuple[str, Path] | None:
    for chip in sorted(Path("/sys/devices/platform").glob("gpio-sim.*/gpiochip*")):
        if (chip / "sim_gpio1").is_dir() and Path("/dev", chip.name).exists():
            return chip.name, chip
    return None


@pytest.mark.hardware
@pytest.mark.skipif(_gpio_sim() is None, reason="needs a gpio-sim chip with 2+ lines")
async def test_gpio_sim_chip_relay_and_passage() -> None:
    found = _gpio_sim()
    assert found is not None
    name, sysfs = found
    (sysfs / "sim_gpio1" / "pull").write_text("pull-down")
    gate = GpioGate.from_url(
        f"gpio://{name}?relay=0&passage_entry=1&input_active=high&debounce_ms=5&pulse_ms=100"
    )
    await gate.open()
    value = sysfs / "sim_gpio0" / "value"
    assert value.read_text().strip() == "0"
    grant = asyncio.create_task(gate.grant("entry", "hw"))
    await until(lambda: value.read_text().strip() == "1", 0.1, "the relay line high")
    await grant
    assert value.read_text().strip() == "0"
    waiter = asyncio.create_task(gate.wait_passage(2.0))
    await asyncio.sleep(0.02)  # the scenario: the passage comes while it is waited for
    (sysfs / "sim_gpio1" / "pull").write_text("pull-up")
    assert await waiter is True
    await gate.close()
    (sysfs / "sim_gpio1" / "pull").write_text("pull-down")
