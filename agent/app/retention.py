"""Journal retention as the application configures it: ages in config, the prune itself.

The pruning (which rows may go, in which transactions) is the journal's own business and lives in
:mod:`agent.journal.prune`; this module reads the ages people write (``30d``) and hands on.
"""

from __future__ import annotations

import re

from agent.errors import ConfigError
from agent.journal.prune import BATCH, Pruned, prune

__all__ = ["BATCH", "Pruned", "parse_age", "prune"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_AGE = re.compile(r"([0-9]{1,6})([smhd])")


def parse_age(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m`` or ``3600s``; raises ConfigError otherwise."""
    match = _AGE.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(
            "expected an age such as 30d, 12h, 90m or 3600s (1 to 999999 of a unit),"
            f" got {text[:40]!r}"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]
