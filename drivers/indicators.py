"""Staff and visitor feedback on GPIO lines: a green lamp, a red lamp and a buzzer.

URL (at least one of green, red, buzzer; lines by name ``GPIO23`` or offset ``23``)::

    gpio://gpiochip0?green=GPIO23&red=GPIO24&buzzer=GPIO25
        &show_ms=1500            how long a decision stays shown (100..60000)
        &active=high|low         polarity of every output (default high); per line: red_active=low
        &beep_ms=120             one beep and the gap after it (20..2000)
        &deny_beeps=3            beeps for a denial (0..10)
        &admit_beeps=0           beeps for an admission (0..10)
        &consumer=gate-agent

Admission: green for show_ms; denial: red for show_ms and the deny beeps. A new decision replaces
the one still shown at once (the visitor in front of the gate is the one that matters). The
message text is not shown: these are lamps; a display or the scanner's own beeper is another
indicator. :meth:`GpioIndicator.show` sets the lamps and returns; the timing runs in a task, so the
lane never waits for a lamp. All outputs start and end inactive.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import DriverError
from agent.model import Decision
from agent.ports import Scan
from drivers.gpio_lines import (
    ChipFactory,
    Lines,
    LineSpec,
    check_distinct,
    gpiod_chip,
    output_specs,
    parse_chip,
)
from drivers.url_params import UrlParams

log = logging.getLogger(__name__)

ROLES = ("green", "red", "buzzer")


@dataclass(frozen=True, slots=True)
class GpioIndicatorSettings:
    """Everything a ``gpio://`` indicator URL says, validated."""

    chip: str
    outputs: dict[str, LineSpec] = field(default_factory=dict)
    show_ms: int = 1500
    beep_ms: int = 120
    deny_beeps: int = 3
    admit_beeps: int = 0
    consumer: str = "gate-agent"

    @classmethod
    def from_url(cls, url: str) -> GpioIndicatorSettings:
        """Parse a ``gpio://`` indicator URL; raises DriverError naming the bad parameter."""
        p = UrlParams(url, "gpio")
        chip = parse_chip(p.netloc, p.path, url)
        outputs = output_specs(p, ROLES, p.choice("active", "high", ("high", "low")))
        settings = cls(
            chip=chip,
            outputs=outputs,
            show_ms=p.integer("show_ms", 1500, 100, 60_000),
            beep_ms=p.integer("beep_ms", 120, 20, 2000),
            deny_beeps=p.integer("deny_beeps", 3, 0, 10),
            admit_beeps=p.integer("admit_beeps", 0, 0, 10),
            consumer=p.text("consumer", "gate-agent") or "gate-agent",
        )
        p.finish()
        if not outputs:
            raise p.error("name at least one of green, red, buzzer")
        check_distinct(p, outputs.values())
        return settings


class GpioIndicator:
    """:class:`agent.ports.Indicator` on GPIO lamps and a buzzer.

    ``chip_factory`` opens a chip by path (default: ``gpiod.Chip``); tests pass a fake.
    """

    def __init__(
        self, settings: GpioIndicatorSettings, chip_factory: ChipFactory | None = None
    ) -> None:
        self.settings = settings
        self._factory = chip_factory or gpiod_chip
        self._lines: Lines | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, base: Path | None = None) -> GpioIndicator:
        return cls(GpioIndicatorSettings.from_url(url))

    async def open(self) -> None:
        """Request the lines (all off). Raises DriverError with the fix in the message."""
        if self._lines is None:
            s = self.settings
            self._lines = Lines.request(s.chip, s.outputs, s.consumer, self._factory)

    async def close(self) -> None:
        """Stop any pattern, switch everything off, release the lines. Idempotent."""
        await self._stop()
        lines, self._lines = self._lines, None
        if lines is not None:
            lines.release()

    async def show(self, decision: Decision, message: str, read: Scan | None = None) -> None:
        """Green for an admission, red (and beeps) for a denial, for show_ms (``read``, the scan
        it answers, is not needed here).

        Raises DriverError when closed or a lamp cannot be set (everything is then switched off).
        """
        if self._lines is None:
            raise DriverError("gpio indicator: not open")
        lines = self._lines
        await self._stop()
        admitted = decision.admitted
        try:
            self._set(lines, "green", admitted)
            self._set(lines, "red", not admitted)
        except DriverError:
            self._all_off(lines)
            raise
        beeps = self.settings.admit_beeps if admitted else self.settings.deny_beeps
        self._task = asyncio.create_task(self._pattern(lines, beeps))

    async def _pattern(self, lines: Lines, beeps: int) -> None:
        s = self.settings
        beep = s.beep_ms / 1000
        remaining = s.show_ms / 1000
        try:
            if "buzzer" in lines.offsets:
                for _ in range(beeps):
                    lines.set("buzzer", True)
                    await asyncio.sleep(beep)
                    lines.set("buzzer", False)
                    await asyncio.sleep(beep)
                    remaining -= 2 * beep
            await asyncio.sleep(max(0.0, remaining))
        except DriverError as exc:
            log.error("gpio indicator: %s", exc)
        finally:
            self._all_off(lines)

    def _set(self, lines: Lines, role: str, active: bool) -> None:
        if role in lines.offsets:
            lines.set(role, active)

    def _all_off(self, lines: Lines) -> None:
        if lines.live:
            for role in lines.offsets:
                lines.off(role)

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # unlike awaiting the task, keeps our own cancellation
