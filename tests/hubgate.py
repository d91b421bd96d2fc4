"""Gates linked to a hub, for the sync tests: configs, polling, and the hub's view over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.ports import Scan

GATE_TOML = """\
[gate]
id = "{gate_id}"
name = "{name}"
venue = "{venue}"
events = [1]
zone = 1
state_dir = "state"

[policy]
entry = "{entry}"

[lane]
name = "in"
repeat_window_ms = 0
passage_timeout_s = 1.0

[trust]
root_key = "{keys}/root.pub"
bundle = "{bundle}"

[clock]
assume = "synced"

[devices]
scanner = "{scanner}"
gate = "sim://gate?passage_ms=0"

[status]
listen = ""
"""

# Fast enough for tests: the gate notices a dead hub within a second.
HUB_TIMING = """\
heartbeat_s = 0.2
wait_s = 2
timeout_s = 2
revocation_interval_s = 0.3
trust_interval_s = 0.3
offline_after_s = 1.0
"""


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
) -> Path:
    """Write ``dir/gate.toml`` (state in ``dir/state``); a [hub] section when ``url`` is given.

    A key in ``hub_extra`` replaces the same key of :data:`HUB_TIMING`.
    """
    dir.mkdir(parents=True, exist_ok=True)
    text = GATE_TOML.format(
        gate_id=gate_id, name=name, venue=venue, entry=entry, keys=keys, scanner=scanner,
        bundle=bundle or keys / "trust.json",
    )  # fmt: skip
    if url is not None:
        given = {line.split("=")[0].strip() for line in hub_extra.splitlines()}
        timing = "".join(
            f"{line}\n"
            for line in HUB_TIMING.splitlines()
            if line.split("=")[0].strip() not in given
        )
        text += f'\n[hub]\nurl = "{url}"\ntoken = "{token}"\n{timing}{hub_extra}'
    path = dir / "gate.toml"
    path.write_text(text + extra)
    return path


async def until(
    check: Callable[[], Awaitable[bool] | bool], within_s: float = 15.0, what: str = ""
) -> None:
    """Poll ``check`` until it is true; AssertionError after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:g} s: {what or check}")
        await asyncio.sleep(0.02)


def scan(text: str) -> Scan:
    """A scan at a fresh monotonic time (never a repeat of the previous one)."""
    return Scan(text, "s1", time.monotonic_ns())


def get_json(url: str, token: str) -> dict[str, Any]:
    """GET a hub endpoint with a bearer token (blocking: call through asyncio.to_thread)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        body = json.loads(reply.read())
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
