"""The staff display of one lane of a two-lane `gate-agent run` (``/display?lane=out``), in
headless Chromium: it shows its own lane's verdicts and never the other lane's."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp

from agent.issuer import Issuer
from agent.tickets import parse
from tests.browser import Browser
from tests.displaygate import PANEL, screens_folder, shows
from tests.hubproc import free_port, fresh_list, running_gate
from tests.lanesconf import write_lanes_config
from tests.polling import until


def _lane(name: str, direction: str) -> dict[str, object]:
    return {
        "name": name, "direction": direction, "scanner": f"sim://socket?path={name}.sock",
        "gate": f"sim://gate-{name}?passage_ms=1",
    }  # fmt: skip


async def _last_at(url: str, lane: str, ticket: str) -> bool:
    """Whether /status says ``lane``'s last decision was ``ticket``'s."""
    async with aiohttp.ClientSession() as http, http.get(url + "/status") as r:
        last = (await r.json())["last"]
    return any(d["lane"] == lane and d["ticket"] == ticket for d in last)


def _scan(folder: Path, lane: str, text: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(folder / f"{lane}.sock"))
        sock.sendall(text.encode() + b"\n")


async def test_a_lanes_display_shows_that_lane_only(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    folder = keys_dir.parent
    port = free_port()
    path = write_lanes_config(
        folder / "gate.toml", keys="keys", lanes=[_lane("in", "entry"), _lane("out", "exit")],
        policy={"entry": "reentry"}, revocation={"files": [fresh_list(iss, folder)]},
        status={"listen": f"127.0.0.1:{port}"}, display={"clear_after_s": 600}, extra="",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    async with running_gate(path, url, tmp_path / "gate.log") as proc, Browser(tmp_path) as page:
        await page.goto(url + "/display?lane=out")
        await shows(page, "ready")
        assert await page.text("#lane") == "lane out"
        await page.evaluate(
            f"window.seen = []; new MutationObserver(() => seen.push({PANEL}.dataset.state))"
            f".observe({PANEL}, {{attributes: true}})"
        )
        _scan(folder, "in", iss.ticket(event=2))  # wrong event: denied at the other lane
        inside = iss.ticket(event=1)
        _scan(folder, "in", inside)  # admitted at the other lane
        short = parse(inside).short_id
        await until(lambda: _last_at(url, "in", short), what="the entry at lane in")
        _scan(folder, "out", inside)  # and out again here
        await shows(page, "admit")
        assert await page.text("#ticket") == "ticket " + short
        assert await page.evaluate("seen.includes('deny')") is False
        assert await page.text("#admitted") == "1"  # this lane's count (the unit has 2)
        assert await page.text("#denied") == "0"  # the denial was at lane in
        await page.screenshot(screens_folder(tmp_path) / "lane-out-admit.png")
    assert proc.returncode == 0  # stopped with SIGTERM on leaving the block: a clean exit
