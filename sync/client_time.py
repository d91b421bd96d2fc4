"""The hub's time as a gate hears it in the hub's answers: an offset for status and, over TLS
with a short round trip, the gate's trusted time while its own clock is not synchronised."""

from __future__ import annotations

import logging
import time

from agent.clock import Clock

log = logging.getLogger("sync.client")

CLOCK_WARN_S = 5.0
MAX_TIME_RTT_S = 1.0  # a slower answer says too little about the hub's time to trust it


class HubTime:
    """What the hub's answers say of its time; ``offset`` (hub minus this gate, seconds) is the
    last one heard, None before any."""

    def __init__(self, clock: Clock, *, trusted: bool) -> None:
        self._clock, self._trusted = clock, trusted
        self.offset: float | None = None

    def note(self, hub_time: float, sent_mono: float) -> None:
        """Record the hub's time from an answer (sent at monotonic ``sent_mono``): the hub wrote it
        about half the round trip ago. Trusted (over TLS: the hub is who it claims) and with a
        round trip under MAX_TIME_RTT_S it becomes the gate's trusted time while the system clock
        is not NTP-synchronised (:meth:`agent.clock.Clock.set_reference`)."""
        rtt = time.monotonic() - sent_mono
        hub_now = hub_time + rtt / 2
        offset = hub_now - self._clock.wall()
        was_off = self.offset is not None and abs(self.offset) > CLOCK_WARN_S
        self.offset = offset
        if 0 <= rtt <= MAX_TIME_RTT_S:
            self._clock.set_reference(hub_now, trusted=self._trusted)
        if abs(offset) > CLOCK_WARN_S and not was_off:
            source = self._clock.source()
            if source in ("ntp", "config"):
                log.warning("this gate's %s time and the hub's differ by %.1f s", source, offset)
            else:
                log.warning("hub clock differs from this gate's by %.1f s", offset)
