"""Strict reading of a driver URL's query string, shared by the gpio://, lcus:// and hid:// drivers.

Every parameter is taken at most once by name; :meth:`UrlParams.finish` then refuses any parameter
nobody asked for, listing the valid ones. Malformed values raise :class:`DriverError` naming the
parameter and what was expected, e.g. ``gpio://gpiochip0?pulse_ms=fast: pulse_ms must be an integer
in 20..10000``. Nothing here touches hardware.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

from agent.errors import DriverError


class UrlParams:
    """The query of one driver URL, read parameter by parameter.

    Raises DriverError (from the constructor) for a wrong scheme, a malformed query or a parameter
    given twice.
    """

    def __init__(self, url: str, scheme: str) -> None:
        self.url = url
        parts = urlsplit(url)
        if parts.scheme != scheme:
            raise DriverError(f"not a {scheme}:// URL: {url!r}")
        self.netloc = parts.netloc
        self.path = parts.path
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError as exc:
            raise DriverError(f"{url}: malformed query (expected name=value&...)") from exc
        self._values: dict[str, str] = {}
        for name, value in pairs:
            if name in self._values:
                raise DriverError(f"{url}: parameter {name} given twice")
            self._values[name] = value
        self._known: list[str] = []

    def error(self, message: str) -> DriverError:
        """A DriverError about this URL (for checks made by the caller)."""
        return DriverError(f"{self.url}: {message}")

    def text(self, name: str, default: str | None = None) -> str | None:
        """The raw value of ``name`` (``default`` when absent)."""
        self._known.append(name)
        return self._values.get(name, default)

    def has(self, name: str) -> bool:
        return name in self._values

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        """``name`` as a decimal integer in ``lo..hi``."""
        raw = self.text(name)
        if raw is None:
            return default
        if not raw.isascii() or not raw.isdigit() or not lo <= int(raw) <= hi:
            raise self.error(f"{name} must be an integer in {lo}..{hi}, not {raw!r}")
        return int(raw)

    def seconds(self, name: str, default: float, lo: float, hi: float) -> float:
        """``name`` as a decimal number of seconds in ``lo..hi``."""
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not lo <= value <= hi:  # also refuses nan and inf
            raise self.error(f"{name} must be a number of seconds in {lo:g}..{hi:g}, not {raw!r}")
        return value

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        """``name`` as one of ``choices``."""
        allowed = tuple(choices)
        raw = self.text(name, default)
        assert raw is not None
        if raw not in allowed:
            raise self.error(f"{name} must be one of {'|'.join(allowed)}, not {raw!r}")
        return raw

    def flag(self, name: str, default: bool) -> bool:
        """``name`` as 0 or 1."""
        return self.choice(name, "1" if default else "0", ("0", "1")) == "1"

    def finish(self) -> None:
        """Refuse any parameter that was not asked for, listing the valid ones."""
        unknown = sorted(set(self._values) - set(self._known))
        if unknown:
            valid = ", ".join(sorted(set(self._known)))
            raise self.error(f"unknown parameter {', '.join(unknown)} (valid: {valid})")
