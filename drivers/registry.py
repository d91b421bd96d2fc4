"""Drivers chosen by URL scheme. Entries are ``"module:Class"`` strings imported only when chosen,
so importing gate-agent never pulls in a hardware library. Simulators are never chosen implicitly.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from agent.errors import DriverError, DriverNotFound

Kind = Literal["scanner", "gate", "indicator"]

DRIVERS: dict[Kind, dict[str, str]] = {
    "scanner": {
        "serial": "drivers.serial_scanner:SerialScanner",
        "hid": "drivers.hid:HidScanner",
        "camera": "drivers.camera:CameraScanner",
        "file": "drivers.camera:CameraScanner",
        "sim": "drivers.sim:SimScanner",
    },
    "gate": {
        "gpio": "drivers.gpio:GpioGate",
        "lcus": "drivers.lcus:LcusRelay",
        "sim": "drivers.sim:SimGate",
    },
    "indicator": {
        "gpio": "drivers.indicators:GpioIndicator",
        "sim": "drivers.sim:SimIndicator",
    },
}


def driver_class(kind: Kind, url: str) -> Any:
    """The class registered for ``url``'s scheme; raises DriverNotFound listing valid schemes."""
    scheme = urlsplit(url).scheme
    table = DRIVERS[kind]
    target = table.get(scheme)
    if target is None:
        valid = ", ".join(f"{s}://" for s in sorted(table))
        raise DriverNotFound(f"no {kind} driver for {url!r} (valid schemes: {valid})")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def create(kind: Kind, url: str, base: Path | None = None) -> Any:
    """Build the driver for ``url`` (not yet opened)."""
    return driver_class(kind, url).from_url(url, base)


def check_url(kind: Kind, url: str, base: Path | None = None) -> None:
    """Check ``url``'s scheme and parameters exactly as the driver reads them, opening nothing.

    Driver modules import their hardware library (cv2, gpiod, evdev, pyserial) only when a device
    opens, so this imports none of them. Raises DriverNotFound listing the valid schemes, or
    DriverError naming the bad parameter.
    """
    try:
        create(kind, url, base)
    except DriverError:
        raise
    except ValueError as exc:  # a parser's own ValueError: still the URL's fault
        raise DriverError(f"{url}: {exc}") from exc
