"""Clock floor, sync verdict, hybrid logical clock and UUIDv7."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.clock import HLC, Clock, ClockReading, boot_id, system_clock_synced, uuid7


class FakeWall:
    """A settable wall clock."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeProbe:
    """A sync detector with a fixed answer that counts how often it was asked."""

    def __init__(self, value: bool | None) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> bool | None:
        self.calls += 1
        return self.value


def always(value: bool | None) -> FakeProbe:
    return FakeProbe(value)


# --- floor --------------------------------------------------------------------------------------


def test_now_never_goes_below_the_floor_and_a_clock_behind_it_is_not_synced() -> None:
    wall = FakeWall(1_000.0)
    clock = Clock(wall=wall, probe=always(True))
    assert clock.now() == 1_000.0
    assert clock.synced() is True

    clock.raise_floor(5_000.0)
    assert clock.now() == 5_000.0
    assert clock.synced() is False
    assert clock.reading() == ClockReading(now=5_000.0, synced=False)

    wall.t = 6_000.0
    assert clock.reading() == ClockReading(now=6_000.0, synced=True)


def test_small_step_back_within_tolerance_still_counts_as_synced() -> None:
    wall = FakeWall(1_000.0)
    clock = Clock(wall=wall, probe=always(True), tolerance_s=1.0)
    clock.raise_floor(1_000.5)
    assert clock.now() == 1_000.5
    assert clock.synced() is True
    wall.t = 998.0
    assert clock.synced() is False


def test_floor_only_rises_and_ignores_non_finite_values() -> None:
    clock = Clock(wall=FakeWall(0.0))
    clock.raise_floor(100.0)
    clock.raise_floor(50.0)
    clock.raise_floor(float("nan"))
    clock.raise_floor(float("inf"))
    assert clock.floor == 100.0
    assert clock.now() == 100.0


def test_floor_is_persisted_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "floor"
    clock = Clock(path, wall=FakeWall(0.0))
    clock.raise_floor(1_700_000_000.25)
    assert path.exists()

    reloaded = Clock(path, wall=FakeWall(0.0))
    assert reloaded.floor == pytest.approx(1_700_000_000.25)
    assert reloaded.now() == pytest.approx(1_700_000_000.25)


def test_floor_persists_at_most_every_interval_and_on_persist(tmp_path: Path) -> None:
    path = tmp_path / "floor"
    clock = Clock(path, wall=FakeWall(0.0), persist_interval_s=3_600.0)
    clock.raise_floor(100.0)
    clock.raise_floor(200.0)
    assert Clock(path).floor == 100.0  # the second raise waits for the interval

    clock.persist()
    assert Clock(path).floor == 200.0
    assert not (tmp_path / "floor.tmp").exists()


@pytest.mark.parametrize("content", ["", "garbage", "nan", "-5", "inf"])
def test_malformed_floor_file_is_ignored(tmp_path: Path, content: str) -> None:
    path = tmp_path / "floor"
    path.write_text(content)
    assert Clock(path, wall=FakeWall(10.0)).floor == 0.0


def test_unwritable_floor_file_does_not_break_the_clock(tmp_path: Path) -> None:
    clock = Clock(tmp_path / "missing-dir" / "floor", wall=FakeWall(0.0), persist_interval_s=0.0)
    clock.raise_floor(500.0)
    clock.persist()
    assert clock.now() == 500.0


# --- sync verdict -------------------------------------------------------------------------------


def test_assume_overrides_detection_but_never_trusts_a_clock_behind_its_floor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found in a user trial: with assume "synced" a floor ahead of the system clock (set by a
    clock that ran ahead) held the gate's time at the floor, trusted, for good: every row at one
    time, valid tickets denied as expired, nothing said."""
    wall = FakeWall(10.0)
    synced = Clock(assume="synced", wall=wall, probe=always(False))
    assert synced.reading() == ClockReading(now=10.0, synced=True) and synced.source() == "config"
    synced.raise_floor(1_000.0)
    with caplog.at_level(logging.ERROR, "agent.clock"):
        assert synced.reading() == ClockReading(now=1_000.0, synced=False)
        assert synced.synced() is False  # read again: one ERROR line an hour, not one a scan
    said = [r.getMessage() for r in caplog.records if "behind the clock floor" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith("the system clock, said to be synchronised, is 990 s behind"), said
    assert synced.behind_floor() == 990.0
    wall.t = 1_000.5  # within the tolerance: trusted again
    assert synced.reading() == ClockReading(now=1_000.5, synced=True)
    assert synced.behind_floor() is None

    unsynced = Clock(assume="unsynced", wall=wall, probe=always(True))
    assert unsynced.synced() is False


def test_behind_its_floor_a_clock_not_said_to_be_synchronised_is_expected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A board without a battery boots at 1970 behind its floor: the hub's time is the time,
    and nothing is wrong. Said to be synchronised, the same clock is a contradiction the gate
    reports (the hub's time is still used, never below the floor: test below)."""
    wall, mono = FakeWall(10.0), FakeWall(0.0)
    booted = Clock(wall=wall, mono=mono, probe=always(False))
    booted.raise_floor(1_000.0)
    booted.set_reference(1_500.0)
    with caplog.at_level(logging.ERROR, "agent.clock"):
        assert booted.reading() == ClockReading(now=1_500.0, synced=True)
        assert booted.source() == "hub" and booted.behind_floor() is None
    assert caplog.records == []

    said = Clock(assume="synced", wall=wall, mono=mono, probe=always(False))
    said.raise_floor(1_000.0)
    said.set_reference(1_200.0)
    assert said.reading() == ClockReading(now=1_200.0, synced=True) and said.source() == "hub"
    assert said.behind_floor() == 990.0  # health names it all the same


def test_undetectable_sync_state_counts_as_unsynced() -> None:
    assert Clock(wall=FakeWall(10.0), probe=always(None)).synced() is False


def test_sync_probe_is_cached() -> None:
    probe = always(True)
    clock = Clock(wall=FakeWall(10.0), probe=probe)
    for _ in range(100):
        clock.reading()
    assert probe.calls == 1


def test_invalid_assume_is_refused() -> None:
    with pytest.raises(ValueError):
        Clock(assume="maybe")  # type: ignore[arg-type]


def test_system_clock_synced_answers_without_raising() -> None:
    assert system_clock_synced() in (True, False, None)


def test_boot_id_is_stable_within_a_process() -> None:
    assert boot_id() == boot_id()
    assert len(boot_id()) >= 32


# --- HLC ----------------------------------------------------------------------------------------


def test_hlc_is_monotone_when_wall_time_stands_still_or_goes_back() -> None:
    hlc = HLC()
    a = hlc.tick(1_000)
    b = hlc.tick(1_000)
    c = hlc.tick(500)
    assert a < b < c
    assert HLC.physical_ms(c) == 1_000
    assert hlc.tick(2_000) == 2_000 << 16


def test_hlc_observe_of_a_remote_ahead_moves_past_it() -> None:
    hlc = HLC()
    hlc.tick(1_000)
    remote = (5_000 << 16) | 7
    observed = hlc.observe(remote, 1_000)
    assert observed > remote
    assert hlc.tick(1_001) > observed
    assert HLC.physical_ms(hlc.last) == 5_000


def test_hlc_logical_overflow_bumps_physical_by_one_ms() -> None:
    hlc = HLC((42 << 16) | 0xFFFF)
    assert hlc.tick(42) == 43 << 16


def test_hlc_refuses_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        HLC(-1)
    with pytest.raises(ValueError):
        HLC().observe(1 << 63, 0)


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 1 << 44), st.integers(0, (1 << 44) << 16)),
        max_size=50,
    )
)
def test_hlc_values_strictly_increase_and_exceed_observed_remotes(
    ops: list[tuple[bool, int, int]],
) -> None:
    hlc = HLC()
    previous = -1
    for is_observe, wall_ms, remote in ops:
        value = hlc.observe(remote, wall_ms) if is_observe else hlc.tick(wall_ms)
        assert value > previous
        assert HLC.physical_ms(value) >= wall_ms
        if is_observe:
            assert value > remote
        previous = value


# --- UUIDv7 -------------------------------------------------------------------------------------


def test_uuid7_layout() -> None:
    ms = int(time.time() * 1000)
    u = uuid7(ms)
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert u.int >> 80 == ms


def test_uuid7_orders_by_time_and_is_unique_within_a_millisecond() -> None:
    ids = [uuid7(ms) for ms in range(1_700_000_000_000, 1_700_000_000_100)]
    assert ids == sorted(ids)
    assert sorted(str(i) for i in ids) == [str(i) for i in ids]
    same_ms = {uuid7(1_700_000_000_000) for _ in range(1_000)}
    assert len(same_ms) == 1_000


def test_uuid7_refuses_times_outside_48_bits() -> None:
    with pytest.raises(ValueError):
        uuid7(-1)
    with pytest.raises(ValueError):
        uuid7(1 << 48)


# --- sources: config, NTP, the hub's time ---------------------------------------------------------


def test_sources_in_order_and_the_hub_time_carried_on_the_monotonic_clock() -> None:
    from agent.clock import REFERENCE_MAX_AGE_S

    wall, mono, probe = FakeWall(1_000.0), FakeWall(50.0), FakeProbe(False)
    clock = Clock(wall=wall, probe=probe, mono=mono)
    assert (clock.source(), clock.synced(), clock.reference_offset) == ("none", False, None)

    clock.set_reference(9_000.0, trusted=False)  # seen over plain HTTP: reported, not used
    assert clock.source() == "none" and clock.reference_offset == 8_000.0

    clock.set_reference(9_000.0)
    assert clock.reading() == ClockReading(9_000.0, True) and clock.source() == "hub"
    wall.t = 500.0  # the system clock stepped back: the hub's time goes on, monotonic
    mono.t += 60.0
    assert clock.now() == 9_060.0 and clock.source() == "hub"
    mono.t += REFERENCE_MAX_AGE_S  # too long without an answer: untrusted again
    assert clock.reading() == ClockReading(500.0, False) and clock.source() == "none"

    clock.set_reference(20_000.0)
    probe.value = True  # NTP wins over the hub once the kernel says so
    clock._probe_at = float("-inf")  # the probe is cached for a few seconds: ask again now
    wall.t = 19_990.0
    assert clock.source() == "ntp" and clock.now() == 19_990.0
    assert Clock(wall=wall, assume="synced").source() == "config"


def test_the_hub_time_never_goes_below_the_floor_nor_raises_it_while_running(
    tmp_path: Path,
) -> None:
    wall, mono = FakeWall(1_000.0), FakeWall(0.0)
    clock = Clock(tmp_path / "floor", wall=wall, probe=always(False), mono=mono)
    clock.raise_floor(5_000.0)
    clock.set_reference(4_000.0)  # a hub behind the last trusted time the gate saw
    assert clock.reading() == ClockReading(5_000.0, True)
    clock.set_reference(float("nan"))  # ignored
    assert clock.now() == 5_000.0
