"""Capped exponential backoff between retries, shared by every reconnecting part of the agent.

The n-th delay since the last :meth:`Backoff.reset` (n counted from 0) is ``base_s * 2**n``, never
more than ``cap_s``. With ``jitter=True`` the delay is drawn uniformly from ``0 .. that ceiling``
("full jitter", so many clients retrying one server spread out); without jitter it is the ceiling
itself (a local device plugged back in is found again within ``cap_s``). A minimum given to
:meth:`Backoff.next_delay` (a server's Retry-After) is honoured up to ``cap_s``, so a server can
slow a client down but never stall it beyond the cap. Pure arithmetic: nothing here sleeps.
"""

from __future__ import annotations

import math
import random

_MAX_DOUBLINGS = 62  # 2**62 times any sane base is far beyond any cap; keeps floats finite


class Backoff:
    """Delays for successive retries: doubling from ``base_s``, capped at ``cap_s``.

    ``rng`` draws the jitter (a seeded ``random.Random`` makes it deterministic); the module's
    shared generator is used when it is None. Raises ValueError unless ``0 < base_s <= cap_s``
    and both are finite.
    """

    def __init__(
        self,
        base_s: float,
        cap_s: float,
        *,
        jitter: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        if not (math.isfinite(base_s) and math.isfinite(cap_s) and 0 < base_s <= cap_s):
            raise ValueError(f"backoff needs 0 < base_s <= cap_s, got {base_s!r} and {cap_s!r}")
        self.base_s, self.cap_s, self.jitter = base_s, cap_s, jitter
        self._rng = rng
        self.failures = 0

    def ceiling(self) -> float:
        """The longest delay the next :meth:`next_delay` can return (before any minimum)."""
        return min(self.cap_s, self.base_s * 2.0 ** min(self.failures, _MAX_DOUBLINGS))

    def next_delay(self, at_least: float = 0.0) -> float:
        """Count one failure and return the seconds to wait before the next attempt.

        ``at_least`` (e.g. a Retry-After) raises the delay to that value, but not beyond
        ``cap_s``. Raises ValueError for a negative or non-finite ``at_least``.
        """
        if not (math.isfinite(at_least) and at_least >= 0):
            raise ValueError(f"at_least must be a finite number >= 0, got {at_least!r}")
        ceiling = self.ceiling()
        self.failures += 1
        delay = (self._rng or random).uniform(0.0, ceiling) if self.jitter else ceiling
        return max(delay, min(at_least, self.cap_s))

    def reset(self) -> None:
        """Start again from ``base_s`` (call it after a success)."""
        self.failures = 0
