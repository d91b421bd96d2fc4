"""Gate I/O on GPIO lines through libgpiod v2: the turnstile's release outputs and its inputs.

URL (one release output required; every other parameter optional; lines by name ``GPIO17`` or
offset ``17``)::

    gpio://gpiochip0?relay=GPIO17          the release relay output, for every direction
        &relay_entry=GPIO17                or one output per direction (a bidirectional turnstile
        &relay_exit=GPIO18                 has a release contact per direction); not with relay=
        &relay_active=high|low             high: energised at logic 1 (default); low for the
                                           common opto-isolated relay HATs that switch on at 0;
                                           every output; per output: relay_exit_active=high ...
        &mode=pulse|hold                   pulse: energise for pulse_ms per admission (default);
                                           hold: energise until passage or wait_passage's timeout
        &pulse_ms=500                      20..10000
        &hold_max_ms=30000                 hold mode: failsafe release if nobody waits (1000..600000)
        &passage_entry=GPIO27              passage signal per direction: the turnstile's "person
        &passage_exit=GPIO22               passed" output for an entry / an exit admission
        &alarm=GPIO5                       alarm input (forced arm, tamper): reported via events()
        &emergency=GPIO6                   emergency/fire release: free passage while active
        &input_active=low|high             polarity of every input (default low: a contact
                                           closing to ground); per input: emergency_active=high...
        &bias=as_is|disabled|pull_up|pull_down   every input (default as_is: the board's own);
                                           per input: alarm_bias=pull_up ...
        &debounce_ms=20                    0..1000; a change counts once held this long
        &consumer=gate-agent               the label gpioinfo shows

    gpio:///dev/gpiochip4?relay=17         a chip by path

Choices, written down for integrators:

- Passage counts when the direction's passage input becomes active (debounced) at any time from the
  start of the grant, so a person who is through while the relay still pulses is counted. A
  passage with no admission pending is logged as a warning (forced or tailgating) and counted in
  :attr:`GpioGate.unexpected_passages`.
- A direction without a passage input cannot tell "nobody passed": :meth:`wait_passage` returns
  True at once, the admission stands and is never annulled (the safe side for anti-passback), and
  a hold-mode grant for that direction is a pulse.
- An emergency input must be wired fail-safe by polarity: a normally-closed loop to ground with
  ``emergency_active=high&emergency_bias=pull_up`` reads active when the loop opens or breaks.
  An input already active at open is reported through events() at once.
- Release outputs: ``relay`` is one output energised for either direction; ``relay_entry`` /
  ``relay_exit`` energise only that direction's output, and a direction without one refuses
  grants (DriverError). Every output is requested inactive, set inactive after each pulse, when a
  hold ends, when switching it on fails, at close and at interpreter exit (see
  :mod:`drivers.gpio_lines`).
- One object may serve two lanes (the entry and the exit lane of a bidirectional turnstile), one
  admission at a time: the lanes serialise grant..wait_passage and share :meth:`GpioGate.events`
  through :mod:`agent.mechanism`. :meth:`GpioGate.wait_passage` waits for the passage input of
  the pending grant's direction; the other direction's input meanwhile counts as unexpected.
- Debounce runs in user space on the kernel's monotonic edge timestamps (portable to chips whose
  driver has no debounce); a pulse shorter than ``debounce_ms`` is ignored. A kernel event buffer
  overflow (a gap in a line's sequence numbers) is logged; the kernel keeps the newest events, so
  the last level seen is still the line's level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from agent.errors import DriverError, RelayReleaseError
from agent.ports import InputEvent, InputName
from drivers.gpio_lines import ChipFactory, Debouncer, Lines, gpiod_chip
from drivers.gpio_settings import DIRECTIONS, INPUTS, GpioGateSettings

__all__ = ["DIRECTIONS", "GpioGate", "GpioGateSettings"]

log = logging.getLogger(__name__)

_INPUT_NAMES: dict[str, InputName] = {name: name for name in INPUTS}
EVENT_QUEUE_MAX = 256


class GpioGate:
    """:class:`agent.ports.GateIO` on GPIO: release output(s), passage/alarm/emergency inputs.

    ``chip_factory`` opens a chip by path (default: ``gpiod.Chip``); tests pass a fake.
    """

    def __init__(self, settings: GpioGateSettings, chip_factory: ChipFactory | None = None) -> None:
        self.settings = settings
        self.pulses = 0
        self.unexpected_passages = 0
        self.fault: str | None = None  # why the inputs stopped being read, for health/selftest
        self._factory = chip_factory or gpiod_chip
        self._lines: Lines | None = None
        self._debounce: dict[str, Debouncer] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._seqno: dict[int, int] = {}
        self._events: asyncio.Queue[InputEvent | None] = asyncio.Queue(EVENT_QUEUE_MAX)
        self._armed: str | None = None  # direction of the admission awaiting passage
        self._passage: asyncio.Future[bool] | None = None
        self._granted = False  # a grant not yet followed by wait_passage
        self._held: str | None = None  # the output held on (hold mode)
        self._hold_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_url(cls, url: str, base: Path | None = None) -> GpioGate:
        return cls(GpioGateSettings.from_url(url))

    async def open(self) -> None:
        """Request the lines (every output inactive), read the inputs, start watching edges.

        Raises DriverError when the chip or a line cannot be had (with the fix in the message).
        """
        if self._lines is not None:
            return
        s = self.settings
        lines = Lines.request(s.chip, s.specs(), s.consumer, self._factory)
        try:
            now = time.monotonic_ns()
            period = s.debounce_ms * 1_000_000
            self._debounce = {name: Debouncer(period, lines.get(name)) for name in s.inputs}
            self._loop = asyncio.get_running_loop()
            if s.inputs:
                self._loop.add_reader(lines.fd, self._on_edges)
        except BaseException:
            lines.release()
            raise
        self._lines, self.fault, self._seqno = lines, None, {}
        while not self._events.empty():  # a stale end-of-stream from an earlier close
            self._events.get_nowait()
        for name in ("alarm", "emergency"):
            deb = self._debounce.get(name)
            if deb is not None and deb.state:
                log.warning("gpio gate: %s input active at start", name)
                self._emit(InputEvent(name, True, now))
        missing = [d for d in DIRECTIONS if f"passage_{d}" not in s.inputs]
        if missing:
            log.warning(
                "gpio gate: no passage input for %s: those admissions are never annulled",
                " and ".join(missing),
            )

    async def close(self) -> None:
        """Stop watching, set every output inactive and release the lines. Idempotent."""
        lines, self._lines = self._lines, None
        if lines is None:
            return
        if self._loop is not None and self.settings.inputs:
            with contextlib.suppress(OSError, ValueError, DriverError):
                self._loop.remove_reader(lines.fd)
        for timer in [*self._timers.values(), self._hold_timer]:
            if timer is not None:
                timer.cancel()
        self._timers.clear()
        self._hold_timer, self._held, self._armed = None, None, None
        if self._passage is not None and not self._passage.done():
            self._passage.set_result(False)
        lines.release()
        self._emit(None)

    @property
    def emergency(self) -> bool:
        deb = self._debounce.get("emergency")
        return deb is not None and deb.state

    @property
    def relay_active(self) -> bool:
        """True when any release output reads active (False when closed)."""
        return any(self.relay_active_for(direction) for direction in DIRECTIONS)

    def relay_active_for(self, direction: str) -> bool:
        """True when the output releasing ``direction`` reads active (False when closed)."""
        role = self.settings.output(direction)
        return role is not None and self._lines is not None and self._lines.get(role)

    async def events(self) -> AsyncIterator[InputEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def grant(self, direction: str, ref: str) -> None:
        """One release for admission ``ref`` on ``direction``'s output: a pulse of pulse_ms
        (returns when it ended), or in hold mode the output energised until :meth:`wait_passage`.

        Raises DriverError when the gate is closed, still held for an earlier admission, the
        direction is unknown or has no release output, or the output cannot be driven; the output
        is then left inactive.
        """
        lines = self._require_open()
        if direction not in DIRECTIONS:
            raise DriverError(f"gpio gate: unknown direction {direction!r} (entry, exit)")
        role = self.settings.output(direction)
        if role is None:
            raise DriverError(
                f"gpio gate: no release output for {direction} (the URL has no relay_{direction})"
            )
        if self._held is not None:
            raise DriverError("gpio gate: still held open for an earlier admission")
        sensor = f"passage_{direction}" in self.settings.inputs
        self._armed = direction if sensor else None
        self._passage = asyncio.get_running_loop().create_future() if sensor else None
        self._granted = True
        log.info("gpio gate: %s %s (%s, %s)", role, self.settings.mode, direction, ref)
        if self.settings.mode == "hold" and sensor:
            self._energise(lines, role)
            self._held = role
            self._hold_timer = asyncio.get_running_loop().call_later(
                self.settings.hold_max_ms / 1000, self._hold_expired
            )
            return
        self._energise(lines, role)
        try:
            await asyncio.sleep(self.settings.pulse_ms / 1000)
        finally:
            self._deenergise(lines, role)

    async def wait_passage(self, timeout_s: float) -> bool:
        """True when the granted direction's passage input fired since the grant (within
        ``timeout_s``); True at once when that direction has no passage input. A held output is
        released either way; raises DriverError when it cannot be released."""
        passage = self._passage  # stays set while waiting: the input handler resolves it
        granted, self._granted = self._granted, False
        try:
            if passage is None:
                return granted
            if self.fault is not None:
                # Inputs no longer read: whether anybody passed is unknown, so the entry stands
                # (never annul what may have been used).
                log.error("gpio gate: passage unknown (%s): entry stands", self.fault)
                return granted
            try:  # asyncio.timeout: on 3.11 wait_for can swallow a cancel that meets the passage
                async with asyncio.timeout(timeout_s):
                    return await passage
            except TimeoutError:
                return False
        finally:
            if self._passage is passage:
                self._passage, self._armed = None, None
            if self._held is not None:
                self._release_hold()

    def _energise(self, lines: Lines, role: str) -> None:
        try:
            lines.set(role, True)
        except DriverError:
            lines.off(role)
            self._armed, self._passage, self._granted = None, None, False
            raise
        self.pulses += 1

    def _deenergise(self, lines: Lines, role: str) -> None:
        """Switch output ``role`` off, retrying once; raises RelayReleaseError when it stays on.

        A release that works on the retry is logged, not raised: the gate did its job, and an
        exception here would make the lane annul an entry somebody may have used.
        """
        try:
            lines.set(role, False)
            return
        except DriverError as exc:
            first = exc
        try:
            lines.set(role, False)
        except DriverError:
            log.error("gpio gate: %s; relay MAY STILL BE ENERGISED", first)
            raise RelayReleaseError(f"{first}; relay MAY STILL BE ENERGISED") from first
        log.error("gpio gate: %s; relay released on retry", first)

    def _release_hold(self) -> None:
        role, self._held = self._held, None
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        if self._lines is not None and role is not None:
            self._deenergise(self._lines, role)

    def _hold_expired(self) -> None:
        self._hold_timer = None
        log.error(
            "gpio gate: relay held %d ms with nobody waiting: released", self.settings.hold_max_ms
        )
        try:
            self._release_hold()
        except DriverError as exc:
            self.fault = str(exc)
            log.error("gpio gate: %s", exc)

    def _require_open(self) -> Lines:
        if self._lines is None:
            raise DriverError("gpio gate: not open")
        return self._lines

    def _on_edges(self) -> None:
        """add_reader callback: read the ready edge events and debounce them."""
        lines = self._lines
        if lines is None:
            return
        try:
            edges = lines.read_edges()
        except DriverError as exc:
            self.fault = str(exc)
            log.error("gpio gate: inputs no longer read: %s", exc)
            assert self._loop is not None
            self._loop.remove_reader(lines.fd)
            return
        from gpiod import EdgeEvent

        touched: set[str] = set()
        for edge in edges:
            name = lines.role(edge.line_offset)
            if name is None or name not in self._debounce:
                continue
            last = self._seqno.get(edge.line_offset)
            if last is not None and edge.line_seqno > last + 1:
                log.warning("gpio gate: %s: %d edge events lost", name, edge.line_seqno - last - 1)
            self._seqno[edge.line_offset] = edge.line_seqno
            active = edge.event_type is EdgeEvent.Type.RISING_EDGE
            self._apply(name, self._debounce[name].edge(active, edge.timestamp_ns))
            touched.add(name)
        for name in touched:
            self._schedule(name)

    def _schedule(self, name: str) -> None:
        deadline = self._debounce[name].deadline_ns
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        if deadline is not None and self._loop is not None:
            delay = max(0, deadline - time.monotonic_ns()) / 1e9
            self._timers[name] = self._loop.call_later(delay, self._settle, name)

    def _settle(self, name: str) -> None:
        self._timers.pop(name, None)
        self._apply(name, self._debounce[name].settle(time.monotonic_ns()))
        self._schedule(name)

    def _apply(self, name: str, changes: list[tuple[bool, int]]) -> None:
        for active, at_ns in changes:
            if name in ("alarm", "emergency"):
                log.warning("gpio gate: %s %s", name, "active" if active else "cleared")
                self._emit(InputEvent(_INPUT_NAMES[name], active, at_ns))
            elif active:
                self._passed(name.removeprefix("passage_"))

    def _passed(self, direction: str) -> None:
        if self._armed == direction and self._passage is not None and not self._passage.done():
            self._passage.set_result(True)
            return
        self.unexpected_passages += 1
        log.warning("gpio gate: %s passage with no admission pending", direction)

    def _emit(self, event: InputEvent | None) -> None:
        if self._events.full():
            dropped = self._events.get_nowait()
            log.warning("gpio gate: input event queue full, dropped %r", dropped)
        self._events.put_nowait(event)
