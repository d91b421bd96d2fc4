"""A bidirectional turnstile on GPIO: one release output and one passage input per direction, one
``GpioGate`` serving the entry lane and the exit lane (on the fake chip of tests/test_gpio.py)."""

from __future__ import annotations

import asyncio
import errno

import pytest

from agent.app import config
from agent.app.daemon import open_gate
from agent.errors import DriverError, RelayReleaseError
from agent.issuer import Issuer
from agent.lane import Lane, Outcome
from agent.mechanism import Mechanism
from drivers.gpio import GpioGate, GpioGateSettings
from drivers.gpio_lines import LineSpec
from drivers.sim import SimScanner
from tests.conftest import WriteConfig
from tests.polling import until
from tests.test_gpio import FakeChip, crash_while_held, make_gate, press

# Entry: relay GPIO17, passage GPIO27. Exit: relay GPIO18, passage GPIO22. Relays active low.
BI_URL = (
    "gpio://gpiochip0?relay_entry=GPIO17&relay_exit=GPIO18&relay_active=low"
    "&passage_entry=GPIO27&passage_exit=GPIO22&emergency=GPIO6&debounce_ms=5&pulse_ms=50"
)
BI_HOLD_URL = BI_URL.replace("pulse_ms=50", "mode=hold")
OUT = {"entry": "GPIO17", "exit": "GPIO18"}
SENSOR = {"entry": "GPIO27", "exit": "GPIO22"}


def on(chip: FakeChip, line: str) -> list[tuple[int, int]]:
    """The active intervals of an active-low output."""
    return chip.pulses(line, active_high=False)


# ---------------------------------------------------------------- URL


def test_url_one_output_per_direction() -> None:
    s = GpioGateSettings.from_url(BI_URL + "&relay_exit_active=high")
    assert s.outputs == {
        "relay_entry": LineSpec("GPIO17", output=True, active_low=True),
        "relay_exit": LineSpec("GPIO18", output=True, active_low=False),
    }
    assert (s.output("entry"), s.output("exit")) == ("relay_entry", "relay_exit")
    entry_only = GpioGateSettings.from_url("gpio://gpiochip0?relay_entry=5")
    assert (entry_only.output("entry"), entry_only.output("exit")) == ("relay_entry", None)
    one = GpioGateSettings.from_url("gpio://gpiochip0?relay=GPIO17")  # today's URLs unchanged
    assert (one.output("entry"), one.output("exit")) == ("relay", "relay")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (
            "gpio://gpiochip0?relay=GPIO17&relay_exit=GPIO18",
            "relay (one output for every direction) cannot be combined with relay_exit: "
            "give relay alone, or relay_entry and/or relay_exit",
        ),
        (
            "gpio://gpiochip0?relay=GPIO17&relay_entry=GPIO16&relay_exit=GPIO18",
            "cannot be combined with relay_entry and relay_exit",
        ),
        (
            "gpio://gpiochip0?passage_entry=GPIO27",
            "needs a release output: relay=LINE (every direction), "
            "or relay_entry=LINE and/or relay_exit=LINE",
        ),
        (
            "gpio://gpiochip0?relay_entry=GPIO17&relay_exit_active=low",
            "relay_exit_active is given but relay_exit is not",
        ),
        ("gpio://gpiochip0?relay_entry=GPIO17&relay_exit=GPIO17", "its own line"),
        ("gpio://gpiochip0?relay_entry=GPIO17&passage_exit=GPIO17", "its own line"),
        ("gpio://gpiochip0?relay_entry=GPIO%2017", "relay_entry must be a line name"),
        ("gpio://gpiochip0?relay_exit=", "relay_exit must be a line name"),
        ("gpio://gpiochip0?relay_entry=1&relay_entry_active=on", "relay_entry_active must be"),
        ("gpio://gpiochip0?relay_entr=GPIO17", "unknown parameter relay_entr (valid: "),
    ],
)
def test_bad_output_combinations_name_the_parameters(url: str, words: str) -> None:
    with pytest.raises(DriverError) as info:
        GpioGateSettings.from_url(url)
    assert words in str(info.value)
    assert str(info.value).startswith(url)


async def test_lines_busy_names_the_output() -> None:
    chip = FakeChip()
    holder, _ = make_gate("gpio://gpiochip0?relay=GPIO18", chip)
    await holder.open()
    gate, _ = make_gate(BI_URL, chip)
    with pytest.raises(DriverError, match="line busy"):
        await gate.open()
    await holder.close()
    bad, _ = make_gate("gpio://gpiochip0?relay_entry=GPIO17&relay_exit=GPIO99", chip)
    with pytest.raises(DriverError, match="relay_exit=GPIO99: no line with that name"):
        await bad.open()
    assert chip.owner == {}


# ---------------------------------------------------------------- outputs


async def test_both_outputs_inactive_at_open_and_close() -> None:
    gate, chip = make_gate(BI_URL)
    await gate.open()
    assert (chip.level("GPIO17"), chip.level("GPIO18")) == (True, True)  # active low: off
    assert on(chip, "GPIO17") == [] and on(chip, "GPIO18") == []  # not even for a moment
    assert not gate.relay_active
    hold, hold_chip = make_gate(BI_HOLD_URL)
    await hold.open()
    await hold.grant("exit", "x1")
    assert hold.relay_active_for("exit") and not hold.relay_active_for("entry")
    await hold.close()  # closing while held switches the held output off
    assert (hold_chip.level("GPIO17"), hold_chip.level("GPIO18")) == (True, True)
    assert on(hold_chip, "GPIO17") == [] and on(hold_chip, "GPIO18")[0][1] != -1
    await gate.close()
    assert chip.requests[0].released and (chip.level("GPIO17"), chip.level("GPIO18")) == (
        True,
        True,
    )


async def test_each_direction_pulses_its_own_output() -> None:
    gate, chip = make_gate(BI_URL)
    await gate.open()
    await gate.grant("entry", "e1")
    ((start, end),) = on(chip, "GPIO17")
    assert 48e6 <= end - start < 200e6
    assert on(chip, "GPIO18") == []
    task = asyncio.create_task(gate.grant("exit", "x1"))
    await until(lambda: gate.relay_active_for("exit"), 0.05, "the exit output on")
    assert not gate.relay_active_for("entry")
    await task
    assert len(on(chip, "GPIO17")) == 1 and len(on(chip, "GPIO18")) == 1
    assert (chip.level("GPIO17"), chip.level("GPIO18")) == (True, True) and gate.pulses == 2
    await gate.close()


async def test_direction_without_output_refuses_and_moves_nothing() -> None:
    gate, chip = make_gate("gpio://gpiochip0?relay_entry=GPIO17&pulse_ms=20")
    await gate.open()
    with pytest.raises(DriverError, match="no release output for exit"):
        await gate.grant("exit", "x1")
    assert chip.pulses("GPIO17") == [] and gate.pulses == 0
    assert await gate.wait_passage(0.01) is False  # a refused grant is no admission
    await gate.grant("entry", "e1")
    assert len(chip.pulses("GPIO17")) == 1
    await gate.close()


async def test_output_faults_per_direction() -> None:
    gate, chip = make_gate(BI_URL)
    await gate.open()
    request = chip.requests[0]
    request.fail_set = [OSError(errno.EIO, "Input/output error")]
    with pytest.raises(DriverError, match="cannot set relay_exit"):
        await gate.grant("exit", "x1")
    assert (chip.level("GPIO17"), chip.level("GPIO18")) == (True, True)
    request.fail_set = [None, OSError(errno.EIO, "I/O"), OSError(errno.EIO, "I/O")]
    with pytest.raises(RelayReleaseError, match=r"cannot set relay_exit.*MAY STILL BE ENERGISED"):
        await gate.grant("exit", "x2")
    assert chip.level("GPIO18") is False  # active low: reported honestly as still on
    await gate.close()  # the stop path switches it off
    assert (chip.level("GPIO17"), chip.level("GPIO18")) == (True, True)


async def test_cancelled_exit_pulse_leaves_both_off() -> None:
    gate, chip = make_gate(BI_URL.replace("pulse_ms=50", "pulse_ms=5000"))
    await gate.open()
    task = asyncio.create_task(gate.grant("exit", "x1"))
    await until(lambda: gate.relay_active, 0.05, "the exit output on")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not gate.relay_active and (chip.level("GPIO17"), chip.level("GPIO18")) == (True, True)
    await gate.close()


def test_outputs_released_at_interpreter_exit_without_close() -> None:
    url = (
        "gpio://gpiochip0?relay_entry=GPIO17&relay_exit=GPIO18&relay_active=low"
        "&mode=hold&passage_exit=GPIO22"
    )
    proc = crash_while_held(url, "exit", ["GPIO17", "GPIO18"])
    assert "RuntimeError: crash while held" in proc.stderr
    assert proc.stdout.split("\n")[:2] == ["held True False", "exit True True"]


# ---------------------------------------------------------------- passage and hold


async def test_hold_per_direction_released_by_its_own_passage() -> None:
    gate, chip = make_gate(BI_HOLD_URL)
    await gate.open()
    await gate.grant("exit", "x1")
    assert gate.relay_active_for("exit") and not gate.relay_active_for("entry")
    waiter = asyncio.create_task(gate.wait_passage(2.0))
    with pytest.raises(DriverError, match="still held"):
        await gate.grant("entry", "e1")
    await press(chip, "GPIO27")  # the entry sensor: not this admission
    await asyncio.sleep(0.03)  # the scenario: a moment in which a wrong release would show
    assert not waiter.done() and gate.relay_active_for("exit")
    await press(chip, "GPIO22")
    assert await waiter is True
    assert not gate.relay_active and gate.unexpected_passages == 1
    await gate.grant("entry", "e2")
    assert gate.relay_active_for("entry") and not gate.relay_active_for("exit")
    assert await gate.wait_passage(0.05) is False  # nobody came: released on the timeout
    assert not gate.relay_active
    assert len(on(chip, "GPIO17")) == 1 and len(on(chip, "GPIO18")) == 1
    await gate.close()


async def test_one_gate_serves_an_entry_lane_and_an_exit_lane() -> None:
    """Two lanes take turns on one device under their lock; a person passes the way the open
    output lets them, and each lane's wait sees its own direction's passage."""
    gate, chip = make_gate(BI_URL)
    await gate.open()
    lock = asyncio.Lock()
    results: dict[str, list[bool]] = {"entry": [], "exit": []}

    async def lane(direction: str, n: int) -> None:
        for i in range(n):
            async with lock:
                await gate.grant(direction, f"{direction}-{i}")
                results[direction].append(await gate.wait_passage(2.0))

    async def people() -> None:
        while True:  # whoever's output opened walks through that way
            await until(lambda: gate.relay_active, 5, "an output on")
            direction = "entry" if gate.relay_active_for("entry") else "exit"
            await until(lambda: not gate.relay_active, 1, "the output off")
            await press(chip, SENSOR[direction], 10)

    walker = asyncio.create_task(people())
    await asyncio.gather(lane("entry", 3), lane("exit", 3))
    walker.cancel()
    assert results == {"entry": [True] * 3, "exit": [True] * 3}
    assert len(on(chip, "GPIO17")) == 3 and len(on(chip, "GPIO18")) == 3
    assert gate.unexpected_passages == 0
    await gate.close()


async def test_single_relay_gate_grants_both_directions_on_one_output() -> None:
    gate, chip = make_gate(
        "gpio://gpiochip0?relay=GPIO17&passage_entry=GPIO27&passage_exit=GPIO22"
        "&debounce_ms=5&pulse_ms=20"
    )
    await gate.open()
    for direction in ("entry", "exit"):
        await gate.grant(direction, direction)
        waiter = asyncio.create_task(gate.wait_passage(2.0))
        await press(chip, SENSOR[direction], 10)
        assert await waiter is True
    assert len(chip.pulses("GPIO17")) == 2 and gate.unexpected_passages == 0
    assert isinstance(gate, GpioGate)
    await gate.close()


# ---------------------------------------------------------------- two real lanes, one turnstile


def _feed(lane: Lane, text: str) -> None:
    assert isinstance(lane.scanner, SimScanner)
    lane.scanner.feed(text)


async def test_entry_and_exit_lanes_on_one_gpio_turnstile(
    write_config: WriteConfig, iss: Issuer
) -> None:
    """The daemon's lanes on one GpioGate shared through agent.mechanism (as two [[lanes]] with
    the identical gate URL get it): each lane releases its own direction's output and is
    confirmed only by its own direction's passage input."""
    gpio, chip = make_gate(BI_URL.replace("pulse_ms=50", "pulse_ms=20"))
    mechanism = Mechanism(gpio, "in+out")
    view_in, view_out = mechanism.view("in"), mechanism.view("out")
    conf = config.load(write_config(entry="reentry", passage_timeout_s=0.5, repeat_window_ms=0))
    outcomes: list[Outcome] = []
    async with open_gate(conf, outcomes.append, scanner=SimScanner(), gate_io=view_in) as gate:
        await view_out.open()
        lane_in = gate.lane
        lane_out = gate.add_lane("out", "exit", SimScanner(), view_out, None, outcomes.append)
        tasks = [asyncio.create_task(lane.run()) for lane in gate.lanes]
        assert len(chip.requests) == 1  # one device, opened once
        visitor = iss.ticket(event=1)
        _feed(lane_in, visitor)
        await until(lambda: len(on(chip, "GPIO17")) == 1, 5, "the entry released")
        await press(chip, SENSOR["entry"], 10)
        await until(lambda: len(outcomes) == 1, 5, "the entry confirmed")
        assert outcomes[0].passed is True and on(chip, "GPIO18") == []
        _feed(lane_out, visitor)  # the same visitor leaves
        await until(lambda: len(on(chip, "GPIO18")) == 1, 5, "the exit released")
        await press(chip, SENSOR["exit"], 10)
        await until(lambda: len(outcomes) == 2, 5, "the exit confirmed")
        assert outcomes[1].lane == "out" and outcomes[1].passed is True
        assert len(on(chip, "GPIO17")) == 1  # the entry output stayed shut
        _feed(lane_in, iss.ticket(event=1))
        await until(lambda: len(on(chip, "GPIO17")) == 2, 5, "the second entry released")
        await press(chip, SENSOR["exit"], 10)  # someone pushes through the other way
        await until(lambda: len(outcomes) == 3, 5, "the second entry timed out")
        assert outcomes[2].passed is False and outcomes[2].annul is not None  # not used: annulled
        assert gpio.unexpected_passages == 1
        for lane in gate.lanes:
            assert isinstance(lane.scanner, SimScanner)
            lane.scanner.finish()
        await asyncio.gather(*tasks)
        await view_out.close()
    assert chip.requests[0].released
    assert (chip.level("GPIO17"), chip.level("GPIO18")) == (True, True)
