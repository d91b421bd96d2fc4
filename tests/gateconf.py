"""The one writer of gate configs (the TOML `gate-agent run --config` reads) for the tests.

A test names only what it varies: ``write_gate_config(path, keys=..., lane={"repeat_window_ms": 0})``
merges each keyword's table into the base below; a key set to None leaves that key out, a table set
to None leaves the whole section out; an empty one is not written. Sections the base lacks
(``hub``, ``pretix``, ``journal``) come after it, in the order given. ``extra`` is raw TOML
appended as is (a section built elsewhere).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

Table = Mapping[str, object]

BASE: dict[str, dict[str, object]] = {
    "gate": {"id": "gate-1", "events": [1], "zone": 1, "state_dir": "state"},
    "policy": {},
    "lane": {},
    "trust": {},  # filled from ``keys``; left out when there are none
    "revocation": {},
    "clock": {"assume": "synced"},
    "devices": {"scanner": "sim://queue", "gate": "sim://gate?passage_ms=1"},
    # off: never the default port, which a real gate on this machine may hold
    "status": {"listen": ""},
}


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def gate_toml(*, keys: Path | str | None = None, extra: str = "", **sections: Table | None) -> str:
    """The config's text: :data:`BASE` with ``sections`` merged in (see the module's docstring).

    ``keys`` is the keys directory (absolute, or relative to the config's folder); without it there
    is no [trust] section unless one is given. Raises TypeError on a value TOML cannot hold here.
    """
    return toml_of(sections, keys=keys, extra=extra)


def toml_of(
    sections: Mapping[str, Table | None], *, keys: Path | str | None = None, extra: str = ""
) -> str:
    """:func:`gate_toml` with the sections in a mapping (for a test that builds them)."""
    tables: dict[str, dict[str, object]] = {name: dict(t) for name, t in BASE.items()}
    if keys is not None:
        tables["trust"] = {"root_key": f"{keys}/root.pub", "bundle": f"{keys}/trust.json"}
    removed = set()
    for name, table in sections.items():
        if table is None:
            removed.add(name)
            continue
        merged = tables.setdefault(name, {})
        merged.update(table)
    lines: list[str] = []
    for name, table in tables.items():
        kept = {k: v for k, v in table.items() if v is not None}
        if name in removed or not kept:
            continue
        lines += [f"[{name}]", *(f"{k} = {_value(v)}" for k, v in kept.items()), ""]
    return "\n".join(lines) + extra


def write_gate_config(
    path: Path, *, keys: Path | str | None = None, extra: str = "", **sections: Table | None
) -> Path:
    """Write :func:`gate_toml` to ``path`` (creating its folder) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(gate_toml(keys=keys, extra=extra, **sections))
    return path
