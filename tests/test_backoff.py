"""agent.backoff: the one reconnect/retry delay rule of the drivers (and, later, the sync client)."""

from __future__ import annotations

import math
import random

import pytest

from agent.backoff import Backoff


def test_without_jitter_the_delay_doubles_from_base_up_to_the_cap() -> None:
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next_delay() for _ in range(7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert backoff.failures == 7


def test_reset_starts_again_from_base() -> None:
    backoff = Backoff(0.5, 8.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert (backoff.failures, backoff.next_delay(), backoff.next_delay()) == (0, 0.5, 1.0)


def test_a_long_outage_stays_at_the_cap_and_finite() -> None:
    backoff = Backoff(0.1, 30.0)
    for _ in range(10_000):
        delay = backoff.next_delay()
    assert delay == 30.0 and math.isfinite(backoff.ceiling())


def test_full_jitter_draws_within_zero_and_the_ceiling() -> None:
    backoff = Backoff(1.0, 16.0, jitter=True, rng=random.Random(7))
    for ceiling in (1.0, 2.0, 4.0, 8.0, 16.0, 16.0, 16.0):
        assert 0.0 <= backoff.next_delay() <= ceiling
    draws = [Backoff(1.0, 16.0, jitter=True, rng=random.Random(3)).next_delay() for _ in range(50)]
    assert len(set(draws)) == 1  # one seed, one value: deterministic


def test_full_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(11)
    draws = []
    for _ in range(2000):
        backoff = Backoff(2.0, 2.0, jitter=True, rng=rng)
        draws.append(backoff.next_delay())
    assert min(draws) < 0.1 and max(draws) > 1.9 and all(0.0 <= d <= 2.0 for d in draws)


def test_jitter_with_the_shared_generator_stays_in_bounds() -> None:
    backoff = Backoff(0.25, 1.0, jitter=True)
    assert all(0.0 <= backoff.next_delay() <= 1.0 for _ in range(100))


def test_at_least_is_honoured_up_to_the_cap() -> None:
    backoff = Backoff(1.0, 60.0, jitter=True, rng=random.Random(1))
    assert backoff.next_delay(at_least=30.0) >= 30.0  # a Retry-After of 30 s
    assert backoff.next_delay(at_least=3600.0) == 60.0  # a server cannot stall us past the cap
    plain = Backoff(1.0, 60.0)
    assert plain.next_delay(at_least=0.2) == 1.0  # a small minimum changes nothing


@pytest.mark.parametrize(
    ("base", "cap"),
    [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0), (math.nan, 1.0), (0.1, math.inf), (0.1, math.nan)],
)
def test_bad_bounds_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < base_s <= cap_s"):
        Backoff(base, cap)


@pytest.mark.parametrize("at_least", [-0.1, math.nan, math.inf])
def test_a_bad_minimum_is_refused_and_not_counted(at_least: float) -> None:
    backoff = Backoff(0.1, 1.0)
    with pytest.raises(ValueError, match="at_least must be a finite number >= 0"):
        backoff.next_delay(at_least)
    assert backoff.failures == 0
