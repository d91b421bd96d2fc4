"""What the pretix adapter keeps in the gate's state directory between runs.

* ``pretix_device.json`` (mode 0600): the device's identity, written once by device
  initialisation: the API token, the device id and the server it belongs to;
* ``pretix_sync.json`` (mode 0600): download cursors that are not revocation keys (the orders'
  ``modified_since`` for other devices' check-ins, and where a round of them cut short stopped).
  The revoked and blocked secrets' cursors live in the revocation store, written in the same
  transaction as the keys they led to;
* ``pretix_event.json`` (mode 0600): the event's keys (its ``valid_keys``) and the check-in list
  as last downloaded, with what they were read from: a gate started while pretix cannot be
  reached decides with them (else it knew no key and refused every ticket).

Both are small JSON objects written atomically; an unreadable one is a ConfigError naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from agent.errors import ConfigError
from agent.fsutil import write_atomic
from agent.redact import printable

log = logging.getLogger(__name__)

DEVICE_FILE = "pretix_device.json"
SYNC_FILE = "pretix_sync.json"
EVENT_FILE = "pretix_event.json"
HELD_FILE = "pretix_held.json"  # rows answered not as pretix answers one: gate_seq -> rounds
_MAX_HELD = 10_000


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The initialised device: its API token (never shown) and its id at the server."""

    token: str = field(repr=False)
    device_id: int


def read_state(path: Path) -> dict[str, Any]:
    """A small JSON state file of the adapter; raises ConfigError when unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read pretix state: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: pretix state must be a JSON object")
    return value


def load_device(state_dir: Path, base_url: str) -> DeviceIdentity | None:
    """The device stored in ``state_dir`` (None when not initialised yet).

    Raises ConfigError when the file is unreadable, malformed, or belongs to another server. A
    file readable by others is set to mode 0600 (with a warning).
    """
    path = state_dir / DEVICE_FILE
    if not path.exists():
        return None
    record = read_state(path)
    if record.get("base_url") not in (None, base_url.rstrip("/")):  # kept without the slash
        raise ConfigError(
            f"{path}: the pretix device was initialised at {record.get('base_url')!r}, not at"
            f" [pretix] url {base_url!r}: set the url back, or move this file aside and give"
            " [pretix] init_token a new initialisation token for a new device"
        )
    token, device = record.get("api_token"), record.get("device_id")
    if not isinstance(token, str) or not token or not isinstance(device, int):
        raise ConfigError(f"{path}: 'api_token' (string), 'device_id' (int) expected")
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; mode set to 0600", path)
        os.chmod(path, 0o600)
    return DeviceIdentity(token, device)


def save_device(state_dir: Path, record: dict[str, Any]) -> None:
    """Store an initialised device's record (mode 0600); raises OSError when it cannot."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(state_dir / DEVICE_FILE, json.dumps(record).encode(), mode=0o600)


def load_cursors(state_dir: Path) -> dict[str, str]:
    """The stored download cursors (empty when none); raises ConfigError when unreadable."""
    path = state_dir / SYNC_FILE
    if not path.exists():
        return {}
    return {k: v for k, v in read_state(path).items() if isinstance(v, str)}


def save_cursors(state_dir: Path, cursors: dict[str, str]) -> None:
    """Store the download cursors atomically (mode 0600); raises OSError when it cannot."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = json.dumps(cursors, sort_keys=True).encode()
    write_atomic(state_dir / SYNC_FILE, data, mode=0o600)


def load_held(state_dir: Path) -> dict[int, int]:
    """The rows answered round after round not as pretix answers one (gate_seq -> rounds in a
    row), as the last upload kept them; empty when none, or (with a warning) when the file is
    not what :func:`save_held` writes: counting again from 0 only holds the rest a few rounds."""
    path = state_dir / HELD_FILE
    if not path.exists():
        return {}
    try:
        record = read_state(path)
        held = {int(seq): rounds for seq, rounds in record.items() if seq.isdigit()}
    except (ConfigError, ValueError) as exc:
        log.warning("%s not used, the rounds are counted again: %s", path, exc)
        return {}
    if len(held) > _MAX_HELD or not all(type(r) is int and r > 0 for r in held.values()):
        log.warning("%s not used (not a count of rounds per row), counted again", path)
        return {}
    return held


def save_held(state_dir: Path, held: dict[int, int]) -> None:
    """Keep ``held`` (see :func:`load_held`) atomically; raises OSError when it cannot."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = json.dumps({str(seq): n for seq, n in held.items()}, sort_keys=True).encode()
    write_atomic(state_dir / HELD_FILE, data, mode=0o600)


def event_scope(base_url: str, event_path: str, checkin_list: int) -> str:
    """What ``pretix_event.json`` was read from: the server (``base_url`` without a trailing
    slash), the event's API path and the check-in list."""
    return f"{base_url.rstrip('/')}{event_path} list {checkin_list}"


def event_path(organizer: str, event: str) -> str:
    """The event's API path, each name percent-encoded."""
    return f"/api/v1/organizers/{quote(organizer, safe='')}/events/{quote(event, safe='')}"


def load_event(state_dir: Path, scope: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The event (its ``valid_keys`` only) and check-in list last downloaded for ``scope`` (the
    server, event and list); None when there are none for it. Raises ConfigError when the file
    is unreadable or malformed."""
    path = state_dir / EVENT_FILE
    if not path.exists():
        return None
    # Keys that admit tickets, not root-signed: trusted only as the gate's own file.
    st = path.stat()
    if st.st_mode & 0o022 or st.st_uid != os.getuid():
        raise ConfigError(
            f"{path}: writable by others or not the gate's own (mode {st.st_mode & 0o777:o},"
            f" uid {st.st_uid}): not used; anyone who can write it can add a key"
        )
    record = read_state(path)
    if record.get("scope") != scope:
        log.warning("%s: kept for %s, not this gate's %s: not used", path,
                    printable(str(record.get("scope")), 200), scope)  # fmt: skip
        return None
    saved_at = record.get("saved_at")
    if isinstance(saved_at, (int, float)) and not isinstance(saved_at, bool):
        log.info("%s: the event's keys and list as downloaded %s", path,
                 time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(saved_at)))  # fmt: skip
    event, checkin_list = record.get("event"), record.get("checkin_list")
    if not isinstance(event, dict) or not isinstance(checkin_list, dict):
        raise ConfigError(f"{path}: 'event' and 'checkin_list' (objects) expected")
    return event, checkin_list


def save_event(
    state_dir: Path, scope: str, event: dict[str, Any], checkin_list: dict[str, Any]
) -> None:
    """Store the event's ``valid_keys`` and the check-in list for ``scope`` atomically (mode
    0600); raises OSError when it cannot."""
    record = {"scope": scope, "event": {"valid_keys": event.get("valid_keys")},
              "checkin_list": checkin_list, "saved_at": time.time()}  # fmt: skip
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(state_dir / EVENT_FILE, json.dumps(record, sort_keys=True).encode(), mode=0o600)
