"""Strict reading of a driver URL (``scheme://where?name=value&...``), shared by every driver.

Each parameter is read at most once by name with a typed getter; :meth:`UrlParams.finish` then
refuses any parameter nobody asked for, naming the URL (and so its scheme) and listing the valid
ones. A parameter given twice, a malformed query or a ``#fragment`` is refused at once. Every
refusal is a :class:`DriverError` naming the URL, the parameter and what was expected, e.g.
``gpio://gpiochip0?pulse_ms=fast: pulse_ms must be an integer in 20..10000, not 'fast'``.
Nothing here touches hardware.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import overload
from urllib.parse import parse_qsl, unquote, urlsplit

from agent.errors import DriverError


class UrlParams:
    """The parts and query of one driver URL, read parameter by parameter.

    ``schemes`` are the schemes this driver accepts. Raises DriverError (from the constructor)
    for another scheme, a fragment, a malformed query or a parameter given twice.
    """

    def __init__(self, url: str, *schemes: str) -> None:
        if _controls(url):  # never into a message or a log line as they are
            shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in url[:200])
            raise DriverError(f"{shown}: a device URL has no control characters")
        self.url = url
        parts = urlsplit(url)
        if parts.scheme not in schemes:
            names = " or ".join(f"{scheme}://" for scheme in schemes)
            raise DriverError(f"not a {names} URL: {url!r}")
        if parts.fragment:
            raise DriverError(f"{url}: unexpected fragment #{parts.fragment}")
        self.scheme, self.netloc, self.path = parts.scheme, parts.netloc, parts.path
        try:
            pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError as exc:
            raise DriverError(f"{url}: malformed query (expected name=value&...): {exc}") from exc
        self._values: dict[str, str] = {}
        for name, value in pairs:
            if _controls(name + value):  # percent-decoded: %00 and the like
                raise DriverError(f"{url}: parameter {name!r} has a control character")
            if name in self._values:
                raise DriverError(f"{url}: parameter {name} given twice")
            self._values[name] = value
        self._known: list[str] = []

    def error(self, message: str) -> DriverError:
        """A DriverError about this URL (for checks made by the caller)."""
        return DriverError(f"{self.url}: {message}")

    def invalid(self, name: str, expected: str) -> DriverError:
        """A DriverError saying what parameter ``name`` must be and what it was."""
        return self.error(f"{name} must be {expected}, not {self._values.get(name, '')!r}")

    def device_path(self, example: str) -> str:
        """The URL's absolute path (percent-decoded); raises DriverError showing ``example``."""
        if self.netloc or not self.path.startswith("/") or self.path == "/":
            raise self.error(f"the device path must be absolute, e.g. {example}")
        return self.decoded(self.path)

    def decoded(self, raw: str) -> str:
        """``raw`` (a part of the URL) percent-decoded; raises DriverError for a control
        character in it (``%00`` made a device path with a NUL that went into log lines)."""
        path = unquote(raw)
        if _controls(path):
            raise self.error("the path has a control character (percent-encoded)")
        return path

    def has(self, name: str) -> bool:
        """True when ``name`` was given (it is not marked as read)."""
        return name in self._values

    @overload
    def text(self, name: str) -> str | None: ...

    @overload
    def text(self, name: str, default: str) -> str: ...

    def text(self, name: str, default: str | None = None) -> str | None:
        """The raw value of ``name`` (``default`` when absent); an empty value is returned as is."""
        self._known.append(name)
        return self._values.get(name, default)

    def string(self, name: str) -> str | None:
        """``name`` as a non-empty text, or None when absent."""
        raw = self.text(name)
        if raw is not None and not raw.strip():
            raise self.invalid(name, "a non-empty text")
        return raw

    def items(self, name: str) -> list[str] | None:
        """``name`` as a comma list with empty items left out, or None when absent."""
        raw = self.text(name)
        return None if raw is None else [item for item in raw.split(",") if item]

    @overload
    def integer(self, name: str, default: int, lo: int, hi: int | None = None) -> int: ...

    @overload
    def integer(self, name: str, default: None, lo: int, hi: int | None = None) -> int | None: ...

    def integer(self, name: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
        """``name`` as a decimal integer in ``lo..hi`` (no upper bound when ``hi`` is None)."""
        raw = self.text(name)
        if raw is None:
            return default
        valid = raw.isascii() and raw.isdigit()
        if not valid or int(raw) < lo or (hi is not None and int(raw) > hi):
            raise self.invalid(name, f"an integer {_span(lo, hi)}")
        return int(raw)

    @overload
    def number(
        self,
        name: str,
        default: float,
        lo: float,
        hi: float = math.inf,
        *,
        lo_open: bool = False,
        what: str = "a number",
    ) -> float: ...

    @overload
    def number(
        self,
        name: str,
        default: None,
        lo: float,
        hi: float = math.inf,
        *,
        lo_open: bool = False,
        what: str = "a number",
    ) -> float | None: ...

    def number(
        self,
        name: str,
        default: float | None,
        lo: float,
        hi: float = math.inf,
        *,
        lo_open: bool = False,
        what: str = "a number",
    ) -> float | None:
        """``name`` as a finite decimal number in ``lo..hi`` (above ``lo`` when ``lo_open``)."""
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        above = value > lo if lo_open else value >= lo
        if not (math.isfinite(value) and above and value <= hi):  # also refuses nan and inf
            span = f"> {_num(lo)}" if lo_open else _span(lo, None if math.isinf(hi) else hi)
            if lo_open and not math.isinf(hi):
                span += f" and <= {_num(hi)}"
            raise self.invalid(name, f"{what} {span}")
        return value

    def seconds(self, name: str, default: float, lo: float, hi: float) -> float:
        """``name`` as a number of seconds in ``lo..hi``."""
        return self.number(name, default, lo, hi, what="a number of seconds")

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        """``name`` as one of ``choices``."""
        allowed = tuple(choices)
        raw = self.text(name, default)
        if raw not in allowed:
            raise self.invalid(name, f"one of {'|'.join(allowed)}")
        return raw

    def flag(self, name: str, default: bool) -> bool:
        """``name`` as 0 or 1."""
        return self.choice(name, "1" if default else "0", ("0", "1")) == "1"

    def finish(self) -> None:
        """Refuse any parameter that was not asked for, listing the valid ones."""
        unknown = sorted(set(self._values) - set(self._known))
        if unknown:
            valid = ", ".join(sorted(set(self._known))) or "none"
            raise self.error(f"unknown parameter {', '.join(unknown)} (valid: {valid})")


def _span(lo: float, hi: float | None) -> str:
    return f">= {_num(lo)}" if hi is None else f"in {_num(lo)}..{_num(hi)}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _controls(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)
