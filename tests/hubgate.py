"""Gates linked to a hub, for the sync tests: configs and the hub's view over HTTP."""

from __future__ import annotations

import json
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from agent.ports import Scan
from tests.gateconf import write_gate_config

# Fast enough for tests: the gate notices a dead hub within a second.
HUB_TIMING: dict[str, object] = {
    "heartbeat_s": 0.2,
    "wait_s": 2,
    "timeout_s": 2,
    "revocation_interval_s": 0.3,
    "trust_interval_s": 0.3,
    "offline_after_s": 1.0,
}


def write_gate(
    dir: Path,
    keys: Path,
    *,
    gate_id: str,
    name: str,
    url: str | None,
    token: str = "",
    venue: str = "venue-1",
    entry: str = "single",
    scanner: str = "sim://queue",
    bundle: Path | None = None,
    hub_extra: str = "",
    extra: str = "",
    clock: str = "synced",
) -> Path:
    """Write ``dir/gate.toml`` (state in ``dir/state``); a [hub] section when ``url`` is given.

    ``hub_extra`` is TOML for the [hub] table; its keys replace the same ones of :data:`HUB_TIMING`.
    ``clock`` is ``[clock] assume``.
    """
    hub = None
    if url is not None:
        hub = {"url": url, "token": token, **HUB_TIMING, **tomllib.loads(hub_extra)}
    return write_gate_config(
        dir / "gate.toml",
        keys=keys,
        extra=extra,
        gate={"id": gate_id, "name": name, "venue": venue},
        policy={"entry": entry},
        lane={"name": "in", "repeat_window_ms": 0, "passage_timeout_s": 1.0},
        trust={"bundle": bundle or keys / "trust.json"},
        devices={"scanner": scanner, "gate": "sim://gate?passage_ms=0"},
        hub=hub,
        clock={"assume": clock},
    )


def scan(text: str) -> Scan:
    """A scan at a fresh monotonic time (never a repeat of the previous one)."""
    return Scan(text, "s1", time.monotonic_ns())


def get_bytes(url: str, token: str) -> bytes:
    """GET a hub endpoint with a bearer token: the raw body (blocking: call through
    asyncio.to_thread)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        body: bytes = reply.read()
    return body


def get_json(url: str, token: str) -> dict[str, Any]:
    """GET a hub endpoint with a bearer token, its JSON object (blocking)."""
    body = json.loads(get_bytes(url, token))
    assert isinstance(body, dict)
    return body


def post_json(url: str, token: str, data: bytes) -> tuple[int, dict[str, Any]]:
    """POST a body to a hub endpoint; returns the status and the JSON answer (blocking)."""
    request = urllib.request.Request(
        url, data=data, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def feed_entries(url: str, venue: str, token: str) -> list[dict[str, object]]:
    """Every entry of the hub's venue feed (paged, no waiting; blocking)."""
    out: list[dict[str, object]] = []
    after = 0
    while True:
        page = get_json(f"{url}/v1/venues/{venue}/entries?after={after}&limit=500&wait=0", token)
        entries = page["entries"]
        assert isinstance(entries, list)
        out += entries
        if not entries:
            return out
        after = int(str(page["next"]))
