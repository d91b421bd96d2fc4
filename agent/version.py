"""This package's version as installed: the CLI's --version, the hub heartbeat, the pretix
device, the status page and the gate's ready line all say the same."""

from __future__ import annotations

import functools
from importlib import metadata


@functools.cache
def installed() -> str:
    """The installed distribution's version; "unknown" when run from a source tree that was
    never installed."""
    try:
        return metadata.version("gate-agent")
    except metadata.PackageNotFoundError:
        return "unknown"
