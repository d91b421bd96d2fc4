"""A gate with its staff display for tests: the status server wired as `gate-agent run` wires it
(decision hook and outcome hook), helpers that wait for a screen, and the screenshot folder.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agent import revocation_issuer
from agent.app import config as cfg
from agent.app.daemon import Gate, open_gate
from agent.app.status import StatusServer
from agent.issuer import Issuer
from agent.lane import Outcome
from agent.ports import Scan, Scanner
from drivers.sim import SimGate, SimIndicator, SimScanner
from tests.browser import Browser
from tests.conftest import WriteConfig
from tests.display_checks import TEXT_COLOURS_JS, contrast, parse_css_colour


def screens_folder(tmp_path: Path) -> Path:
    """Where a test's screenshots go: ``$GATE_AGENT_ARTIFACTS/display`` if set, else under
    ``tmp_path``; printed (pytest shows it with the test's output)."""
    base = os.environ.get("GATE_AGENT_ARTIFACTS")
    folder = Path(base) / "display" if base else tmp_path / "screens"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"display screenshots: {folder}")
    return folder


PANEL = "document.getElementById('panel')"


def display_config(
    write_config: WriteConfig, iss: Issuer, extra: str = "", **kw: Any
) -> cfg.Config:
    """A gate config with a fresh signed list (no list at all is "stale")."""
    path = write_config()
    delta = revocation_issuer.issue_delta(iss.list_key, path.parent / "rev.state.json")
    (path.parent / "revocations-1.json").write_bytes(delta)
    return cfg.load(write_config(revocations=["revocations-1.json"], extra=extra, **kw))


@asynccontextmanager
async def serving_display(
    conf: cfg.Config, gate_io: SimGate, scanner: Scanner | None = None
) -> AsyncIterator[tuple[Gate, StatusServer, str]]:
    """A gate with its status server wired as `gate-agent run` wires it; the display's URL."""
    servers: list[StatusServer] = []

    def on_outcome(outcome: Outcome) -> None:
        for server in servers:
            server.observe(outcome)

    async with open_gate(
        conf, on_outcome, scanner=scanner or SimScanner(source="s"), gate_io=gate_io
    ) as gate:
        server = StatusServer(gate, port=0)
        await server.start()
        servers.append(server)
        gate.lane.on_decision = server.decided
        try:
            yield gate, server, f"http://127.0.0.1:{server.port}/display"
        finally:
            await server.close()


def present(gate: Gate, text: str, source: str = "s") -> asyncio.Task[Outcome | None]:
    return asyncio.create_task(gate.lane.present(Scan(text, source, time.monotonic_ns())))


async def shows(page: Browser, state: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    await page.wait_for(f"{PANEL}.dataset.state === '{state}'", timeout)


async def readable(page: Browser, shot: Path) -> None:
    """Screenshot, then every visible text at least 4.5:1 against its background (WCAG AA)."""
    await page.screenshot(shot)
    texts = await page.evaluate(TEXT_COLOURS_JS)
    assert texts, "no text on screen"
    for t in texts:
        ratio = contrast(parse_css_colour(t["color"]), parse_css_colour(t["background"]))
        assert ratio >= 4.5, f"{shot.name}: {t['text']!r} {t['color']} on {t['background']}"
    assert page.console_errors == []


def lamp(gate: Gate) -> SimIndicator:
    lamp = gate.lane.indicator
    assert isinstance(lamp, SimIndicator)
    return lamp
