"""Gate configs with several lanes (``[[lanes]]`` tables) for the tests, on tests/gateconf.py.

``write_lanes_config(path, keys=..., lanes=[{"name": "in", ...}, ...], policy={...})`` writes the
base config of tests/gateconf.py without [devices], with one ``[[lanes]]`` table per dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.gateconf import Table, _value, gate_toml


def lanes_toml(lanes: Sequence[Table]) -> str:
    """One ``[[lanes]]`` table per mapping, in order."""
    lines: list[str] = []
    for lane in lanes:
        lines += ["[[lanes]]", *(f"{k} = {_value(v)}" for k, v in lane.items()), ""]
    return "\n".join(lines)


def write_lanes_config(
    path: Path,
    *,
    lanes: Sequence[Table],
    keys: Path | str | None = None,
    extra: str = "",
    **sections: Table | None,
) -> Path:
    """Write a config whose lanes are ``lanes`` to ``path`` and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tables: dict[str, Table | None] = {"devices": None, **sections}
    text = gate_toml(keys=keys, extra="", **tables) + "\n" + lanes_toml(lanes) + extra
    path.write_text(text)
    return path
