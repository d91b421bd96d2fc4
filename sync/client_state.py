"""The hub client's one piece of state across restarts: how far it has read the venue feed.

``hub_sync.json`` in the gate's state folder (mode 0600) holds the hub's base URL and the feed
cursor; a cursor of another hub (the config changed) or an unreadable file means reading the feed
from the start, which is safe: peer entries are stored by entry id, so none is stored twice.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from agent.fsutil import write_atomic

log = logging.getLogger("sync.client")

STATE_FILE = "hub_sync.json"


def load_cursor(path: Path, base: str) -> int:
    """The feed cursor saved for hub ``base`` in ``path``, or 0 (logged when not simply absent)."""
    try:
        state = json.loads(path.read_bytes())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        log.warning("%s unreadable, reading the hub feed from the start: %s", path, exc)
        return 0
    if not isinstance(state, dict):
        state = {}
    cursor = state.get("feed_cursor")
    if state.get("hub") != base or type(cursor) is not int or cursor < 0:
        log.info("hub feed: no cursor for %s, reading from the start", base)
        return 0
    return cursor


def save_cursor(path: Path, base: str, cursor: int) -> None:
    """Save ``cursor`` for hub ``base`` in ``path`` (atomically, mode 0600). Raises OSError."""
    write_atomic(path, json.dumps({"hub": base, "feed_cursor": cursor}).encode(), mode=0o600)
