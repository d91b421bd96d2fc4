"""The lanes of one gate unit: one from [devices] + [lane], or several from ``[[lanes]]`` tables.

A unit may run several lanes (a bidirectional turnstile: an entry and an exit lane; a row of lanes
from one cabinet) over one journal, one trust, one set of revocation lists and one upstream::

    [[lanes]]
    name = "in"                 # 1-32 letters, digits or ._- (starting with a letter or digit)
    direction = "entry"         # "entry" or "exit"
    scanner = "serial:///dev/serial/by-id/...-in"
    gate = "gpio:///dev/gpiochip0?relay_entry=17&relay_exit=27"
    # indicator = "gpio:///dev/gpiochip0?green=5&red=6"
    # busy = "refuse"           # any [lane] setting but name, for this lane only

Lanes whose ``gate`` URL is the identical string share one opened mechanism (agent/mechanism.py).
Every error names the file, the table (``[[lanes]] #2``, counted from 1) and the key.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from agent.errors import ConfigError, DriverError
from agent.settings import section
from drivers.url_params import UrlParams

MAX_LANES = 8
_LANE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_SETTINGS = ("repeat_window_ms", "passage_timeout_s", "busy", "on_journal_failure")


@dataclass(frozen=True)
class DevicesConfig:
    scanner: str
    gate: str
    indicator: str | None = None


@dataclass(frozen=True)
class LaneConfig:
    name: str = "lane-1"
    repeat_window_ms: int = 2000
    passage_timeout_s: float = 8.0
    busy: Literal["wait", "refuse"] = "wait"
    on_journal_failure: Literal["deny", "admit"] = "deny"


@dataclass(frozen=True)
class LaneTable:
    """One ``[[lanes]]`` table as written; a setting left out comes from [lane]."""

    name: str
    direction: Literal["entry", "exit"]
    scanner: str
    gate: str
    indicator: str | None = None
    repeat_window_ms: int | None = None
    passage_timeout_s: float | None = None
    busy: Literal["wait", "refuse"] | None = None
    on_journal_failure: Literal["deny", "admit"] | None = None


@dataclass(frozen=True)
class LaneSpec:
    """One lane the daemon builds: its name, direction, device URLs and settings."""

    name: str
    direction: Literal["entry", "exit"]
    devices: DevicesConfig
    settings: LaneConfig


_RANGES: dict[tuple[str, str], tuple[typing.Callable[[Any], bool], str]] = {
    ("lanes", "name"): (
        lambda v: _LANE_NAME.fullmatch(v) is not None,
        "1-32 letters, digits or ._- (starting with a letter or digit)",
    ),
    ("lanes", "repeat_window_ms"): (lambda v: v is None or 0 <= v <= 600_000, "0-600000 ms"),
    ("lanes", "passage_timeout_s"): (lambda v: v is None or 0.1 <= v <= 600, "0.1-600 seconds"),
}


def single_lane(devices: DevicesConfig, lane: LaneConfig, direction: Any) -> tuple[LaneSpec, ...]:
    """Today's one-lane file: [devices] and [lane], in [gate] direction."""
    return (LaneSpec(lane.name, direction, devices, lane),)


def parse_lanes(raw: dict[str, Any], defaults: LaneConfig, src: Path) -> tuple[LaneSpec, ...]:
    """The ``[[lanes]]`` tables of the TOML document ``raw`` (which has them), checked."""
    if "devices" in raw:
        raise ConfigError(
            f"{src}: [devices] and [[lanes]] are both set: move scanner, gate and indicator of"
            " [devices] into a [[lanes]] table (with name and direction) and delete [devices]"
        )
    if "name" in raw.get("lane", {}):
        raise ConfigError(
            f"{src}: [lane] name: with [[lanes]] each lane is named in its own table; delete it"
        )
    if isinstance(raw.get("gate"), dict) and "direction" in raw["gate"]:
        raise ConfigError(
            f"{src}: [gate] direction: with [[lanes]] each lane has its own direction; delete it"
        )
    tables = raw["lanes"]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{src}: lanes: expected [[lanes]] tables")
    if not 1 <= len(tables) <= MAX_LANES:
        raise ConfigError(f"{src}: [[lanes]]: expected 1-{MAX_LANES} lanes, got {len(tables)}")
    specs: list[LaneSpec] = []
    for index, table in enumerate(tables, 1):
        where = f"[[lanes]] #{index}"
        try:
            lane: LaneTable = section(LaneTable, table, "lanes", src, _RANGES)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(f"{src}: [lanes]", f"{src}: {where}", 1)) from None
        for other in specs:
            if other.name == lane.name:
                raise ConfigError(f"{src}: {where} name: {lane.name!r} names an earlier lane too")
            if _device(other.devices.scanner) == _device(lane.scanner):
                raise ConfigError(
                    f"{src}: {where} scanner: {lane.scanner!r} is also the scanner of lane"
                    f" {other.name!r} (one reader serves one lane)"
                )
        overrides = {k: getattr(lane, k) for k in _SETTINGS if getattr(lane, k) is not None}
        settings = dataclasses.replace(defaults, name=lane.name, **overrides)
        devices = DevicesConfig(lane.scanner, lane.gate, lane.indicator)
        check_devices(devices, src, where)
        specs.append(LaneSpec(lane.name, lane.direction, devices, settings))
    return tuple(specs)


def _device(url: str) -> str:
    """What a scanner URL opens, for telling two lanes' readers apart: a device path (its
    parameters aside: serial:///dev/ttyUSB0?baud=9600 is serial:///dev/ttyUSB0), else the URL
    (also a malformed one: its driver's check names what is wrong with it)."""
    try:
        p = UrlParams(url, urlsplit(url).scheme)
        if p.netloc or not p.path.startswith("/"):
            return url
        return f"{p.scheme}://{posixpath.normpath(p.decoded(p.path))}"
    except DriverError:
        return url


def check_devices(devices: DevicesConfig, src: Path, where: str = "[devices]") -> None:
    """Each device URL's scheme and parameters, as its driver reads them (nothing is opened and
    no hardware library imported); raises ConfigError naming ``<where> <key>``."""
    from agent.errors import DriverError
    from drivers import registry

    for kind in typing.get_args(registry.Kind):
        url = getattr(devices, kind)
        if url is None:
            continue
        try:
            registry.check_url(kind, url, src.parent)
        except DriverError as exc:
            raise ConfigError(f"{src}: {where} {kind}: {exc}") from None
