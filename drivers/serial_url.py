"""Strict parsing of ``serial://`` scanner URLs into :class:`SerialSettings`.

See :mod:`drivers.serial_scanner` for the meaning of every parameter. Unknown, repeated or
malformed parameters raise :class:`agent.errors.DriverError` naming the parameter and what is
expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from agent.errors import DriverError
from drivers.feedback import FEEDBACKS
from drivers.framing import DEFAULT_NOREAD, FramingConfig, parse_aim_allow

BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
FEEDBACK_NAMES = ("none", *sorted(FEEDBACKS))
PARAMETERS = (
    "baud",
    "aim",
    "require_aim",
    "max_frame",
    "idle_ms",
    "noread",
    "feedback",
    "exclusive",
    "retry_max_s",
)
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


def _int(url: str, name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise DriverError(f"{url}: {name} must be an integer {low}..{high}, got {value!r}")
    return number


def _flag(url: str, name: str, value: str) -> bool:
    if value not in ("0", "1"):
        raise DriverError(f"{url}: {name} must be 0 or 1, got {value!r}")
    return value == "1"


def _list(value: str) -> list[str]:
    return [item for item in value.split(",") if item]


def _query(url: str, query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise DriverError(f"{url}: malformed query: {exc}") from None
    for name, value in pairs:
        if name not in PARAMETERS:
            valid = ", ".join(PARAMETERS)
            raise DriverError(f"{url}: unknown parameter {name!r} (valid: {valid})")
        if name in params:
            raise DriverError(f"{url}: parameter {name!r} given twice")
        params[name] = value
    return params


def parse_serial_url(url: str) -> SerialSettings:
    """Validate a ``serial:///abs/path?...`` URL; raises DriverError naming the bad part."""
    parts = urlsplit(url)
    if parts.scheme != "serial":
        raise DriverError(f"not a serial:// URL: {url!r}")
    if parts.netloc or not parts.path.startswith("/"):
        raise DriverError(
            f"{url}: the device path must be absolute, e.g. serial:///dev/serial/by-id/usb-..."
        )
    if parts.fragment:
        raise DriverError(f"{url}: unexpected fragment #{parts.fragment}")
    path = unquote(parts.path)
    q = _query(url, parts.query)
    baud = _int(url, "baud", q.get("baud", "9600"), 1, 4_000_000)
    if baud not in BAUD_RATES:
        rates = ", ".join(map(str, BAUD_RATES))
        raise DriverError(f"{url}: baud must be one of {rates}, got {baud}")
    feedback = q.get("feedback", "none")
    if feedback not in FEEDBACK_NAMES:
        raise DriverError(
            f"{url}: feedback must be one of {', '.join(FEEDBACK_NAMES)}, got {feedback!r}"
        )
    idle_ms = _int(url, "idle_ms", q.get("idle_ms", "300"), 0, 60_000)
    try:
        retry_max_s = float(q.get("retry_max_s", str(DEFAULT_RETRY_MAX_S)))
    except ValueError:
        retry_max_s = -1.0
    if not 0.1 <= retry_max_s <= 300:
        raise DriverError(
            f"{url}: retry_max_s must be a number of seconds 0.1..300, got {q.get('retry_max_s')!r}"
        )
    aim_allow = None
    if "aim" in q:
        try:
            aim_allow = parse_aim_allow(_list(q["aim"]))
        except ValueError as exc:
            raise DriverError(f"{url}: aim: {exc}") from None
        if not aim_allow:
            raise DriverError(f"{url}: aim must list AIM ids such as Q1,z,L,d (or be left out)")
    noread = frozenset(_list(q["noread"])) if "noread" in q else DEFAULT_NOREAD
    framing = FramingConfig(
        max_frame=_int(url, "max_frame", q.get("max_frame", "1024"), 1, 65536),
        idle_ns=idle_ms * 1_000_000,
        aim_allow=aim_allow,
        require_aim=_flag(url, "require_aim", q.get("require_aim", "0")),
        noread=noread,
    )
    return SerialSettings(
        path=path,
        baud=baud,
        exclusive=_flag(url, "exclusive", q.get("exclusive", "1")),
        retry_max_s=retry_max_s,
        feedback=feedback,
        framing=framing,
    )
