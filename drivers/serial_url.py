"""Strict parsing of ``serial://`` scanner URLs into :class:`SerialSettings`.

See :mod:`drivers.serial_scanner` for the meaning of every parameter. Unknown, repeated or
malformed parameters raise :class:`agent.errors.DriverError` naming the parameter and what is
expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.feedback import FEEDBACKS
from drivers.framing import DEFAULT_NOREAD, FramingConfig, parse_aim_allow
from drivers.url_params import UrlParams

BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
FEEDBACK_NAMES = ("none", *sorted(FEEDBACKS))
DEFAULT_RETRY_MAX_S = 1.0


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """Everything a :class:`drivers.serial_scanner.SerialScanner` needs, already validated."""

    path: str
    baud: int = 9600
    exclusive: bool = True
    retry_max_s: float = DEFAULT_RETRY_MAX_S
    feedback: str = "none"
    framing: FramingConfig = field(default_factory=FramingConfig)


def parse_serial_url(url: str) -> SerialSettings:
    """Validate a ``serial:///abs/path?...`` URL; raises DriverError naming the bad part."""
    p = UrlParams(url, "serial")
    path = p.device_path("serial:///dev/serial/by-id/usb-...")
    baud = int(p.choice("baud", "9600", map(str, BAUD_RATES)))
    feedback = p.choice("feedback", "none", FEEDBACK_NAMES)
    idle_ms = p.integer("idle_ms", 300, 0, 60_000)
    retry_max_s = p.seconds("retry_max_s", DEFAULT_RETRY_MAX_S, 0.1, 300)
    aim = p.items("aim")
    aim_allow = None
    if aim is not None:
        try:
            aim_allow = parse_aim_allow(aim)
        except ValueError as exc:
            raise p.error(f"aim: {exc}") from None
        if not aim_allow:
            raise p.error("aim must list AIM ids such as Q1,z,L,d (or be left out)")
    noread = p.items("noread")
    framing = FramingConfig(
        max_frame=p.integer("max_frame", 1024, 1, 65536),
        idle_ns=idle_ms * 1_000_000,
        aim_allow=aim_allow,
        require_aim=p.flag("require_aim", False),
        noread=DEFAULT_NOREAD if noread is None else frozenset(noread),
    )
    settings = SerialSettings(
        path=path,
        baud=baud,
        exclusive=p.flag("exclusive", True),
        retry_max_s=retry_max_s,
        feedback=feedback,
        framing=framing,
    )
    p.finish()
    return settings
