"""libfaketime (Debian's package faketime), where it is for this machine's architecture: Debian puts
it under the multiarch folder (x86_64-linux-gnu, aarch64-linux-gnu on a 64-bit Raspberry Pi OS,
arm-linux-gnueabihf on a 32-bit one). A path that does not exist when it is not installed."""

from __future__ import annotations

from pathlib import Path


def _find() -> Path:
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    return found[0] if found else Path("/usr/lib/faketime/libfaketime.so.1")


FAKETIME = _find()
