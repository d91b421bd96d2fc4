"""Typed reading of TOML configuration files, shared by the gate's and the hub's config.

A section is a frozen dataclass; :func:`section` checks one TOML table against it: unknown keys,
missing keys, wrong types and out-of-range values are each a :class:`ConfigError` naming the file,
the section and the key, and saying what was expected.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.errors import ConfigError


@dataclass(frozen=True)
class LogConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a pair; raises ValueError when malformed."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(value)
    return host, int(port)


def is_listen(value: str) -> bool:
    try:
        parse_listen(value)
    except ValueError:
        return False
    return True


def describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(
            "nothing" if a is type(None) else describe(a) for a in typing.get_args(tp)
        )
    if origin is list:
        item = typing.get_args(tp)[0]
        many = {str: "strings", int: "integers", float: "numbers", Path: "paths (strings)"}
        return f"a list of {many.get(item) or describe(item)}"
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        Path: "a path (string)",
    }
    return names.get(tp, str(tp))


def convert(value: Any, tp: Any, base: Path) -> Any:
    """``value`` as type ``tp``; raises TypeError when it does not fit."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise TypeError
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return convert(value, arg, base)
            except TypeError:
                pass
        raise TypeError
    if origin is list:
        if not isinstance(value, list):
            raise TypeError
        return [convert(v, typing.get_args(tp)[0], base) for v in value]
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise TypeError
        return base / Path(value).expanduser()
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise TypeError
    if isinstance(value, tp):
        return value
    raise TypeError


def section(
    cls: type[Any],
    raw: Any,
    name: str,
    src: Path,
    ranges: typing.Mapping[tuple[str, str], tuple[typing.Callable[[Any], bool], str]],
    secrets: typing.AbstractSet[tuple[str, str]] = frozenset(),
) -> Any:
    """One TOML table as the dataclass ``cls``; raises ConfigError naming file, section, key.

    ``ranges`` holds the checks beyond the type, by (section, key), and ``secrets`` the keys whose
    values an error never echoes; each file (the gate's, the hub's) passes its own, so a section
    name they share never mixes their rules.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: [{name}] must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(
                f"{src}: [{name}] unknown key {key!r} (valid keys: {', '.join(fields)})"
            )
    values: dict[str, Any] = {}
    for key, f in fields.items():
        if key not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(
                    f"{src}: [{name}] missing required key {key!r} ({describe(hints[key])})"
                )
            continue
        secret = (name, key) in secrets
        got = f"a value of type {type(raw[key]).__name__}" if secret else _shown(raw[key])
        try:
            values[key] = convert(raw[key], hints[key], src.parent)
        except TypeError:
            raise ConfigError(
                f"{src}: [{name}] {key}: expected {describe(hints[key])}, got {got}"
            ) from None
        check = ranges.get((name, key))
        if check is not None and not check[0](values[key]):
            raise ConfigError(f"{src}: [{name}] {key}: expected {check[1]}, got {got}")
    return cls(**values)


SHOWN_CHARS = 120  # of a refused value in an error message (it goes to the journal, one line)


_USERINFO = re.compile(r"//[^/@\s]*@")


def _shown(value: Any) -> str:
    """``repr(value)``, a URL's user and password left out, cut to :data:`SHOWN_CHARS`
    characters with how long it was."""
    text = _USERINFO.sub("//…@", repr(value))
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}... ({len(text):,} characters)"
