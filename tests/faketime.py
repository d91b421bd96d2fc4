"""libfaketime (Debian's package faketime), where it is for this machine's architecture: Debian puts
it under the multiarch folder (x86_64-linux-gnu, aarch64-linux-gnu on a 64-bit Raspberry Pi OS,
arm-linux-gnueabihf on a 32-bit one). A path that does not exist when it is not installed."""

from __future__ import annotations

import sysconfig
from pathlib import Path


def _find() -> Path:
    # This interpreter's own folder first: with another architecture's package beside it (i386 on
    # amd64), the loader would refuse that one with no more than a warning.
    own = sysconfig.get_config_var("MULTIARCH")
    found = [Path("/usr/lib", own, "faketime/libfaketime.so.1")] if own else []
    found += sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    return next((p for p in found if p.exists()), Path("/usr/lib/faketime/libfaketime.so.1"))


FAKETIME = _find()
