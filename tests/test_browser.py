"""The test browser (tests/browser.py) against a real aiohttp server on 127.0.0.1.

The hub's console test and the gate's staff display test rely on it: a page that changes after a
fetch() and after a server-sent event must be seen changing, and JS failures must surface.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiohttp import web

from tests.browser import Browser, BrowserError, chromium_path
from tests.ports import free_port

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>probe</title>
<style>
  body { margin: 0; font: 24px sans-serif; background: #fff; }
  #pushed.live { background: rgb(0, 160, 0); color: #fff; height: 200px; }
</style></head>
<body>
  <p id="fetched">loading</p>
  <p id="pushed">waiting</p>
  <script>
    fetch('/api/state').then(r => r.json()).then(d => {
      document.getElementById('fetched').textContent = 'state: ' + d.state;
    });
    new EventSource('/events').onmessage = (e) => {
      const p = document.getElementById('pushed');
      p.textContent = 'pushed: ' + e.data;
      p.className = 'live';
    };
  </script>
</body></html>
"""

FAULTY_PAGE = """<!doctype html>
<html><body><p>faulty</p><script>
  console.error('logged failure', 42);
  setTimeout(() => { throw new Error('boom from a timer'); }, 0);
  setTimeout(() => { window.done = true; }, 20);
</script></body></html>
"""


@dataclass
class Site:
    """The page's server: a per-test state value for fetch() and a queue feeding the SSE stream."""

    state: str = field(default_factory=lambda: secrets.token_hex(4))
    pushes: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""


def make_app(site: Site) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def faulty(request: web.Request) -> web.Response:
        return web.Response(text=FAULTY_PAGE, content_type="text/html")

    async def state(request: web.Request) -> web.Response:
        return web.json_response({"state": site.state})

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        site.listening.set()
        while (message := await site.pushes.get()) is not None:
            await response.write(f"data: {message}\n\n".encode())
        return response

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/faulty", faulty)
    app.router.add_get("/api/state", state)
    app.router.add_get("/events", events)
    return app


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    site = Site()
    runner = web.AppRunner(make_app(site), handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    site.url = f"http://127.0.0.1:{port}"
    try:
        yield site
    finally:
        site.pushes.put_nowait(None)  # ends an open event stream so the server stops at once
        await runner.cleanup()


def _live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies left for init to reap do not count)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            live.append(int(stat.parent.name))
    return live


async def test_page_updates_after_fetch_and_server_sent_event(site: Site, tmp_path: Path) -> None:
    async with Browser(tmp_path) as browser:
        pgid = browser.pid
        assert pgid is not None
        assert _live_members(pgid)  # chromium, its zygote and renderers
        await browser.goto(site.url + "/")
        await browser.wait_for(f"document.body.innerText.includes('state: {site.state}')")
        assert await browser.text("#fetched") == f"state: {site.state}"

        await asyncio.wait_for(site.listening.wait(), 10)
        assert await browser.text("#pushed") == "waiting"
        site.pushes.put_nowait("gate 3 offline")
        await browser.wait_for("document.querySelector('#pushed').className === 'live'")
        assert await browser.text("#pushed") == "pushed: gate 3 offline"
        assert await browser.evaluate("[window.innerWidth, window.innerHeight]") == [800, 480]

        png = await browser.screenshot(tmp_path / "page.png")
        data = png.read_bytes()
        assert browser.console_errors == []

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (800, 480)  # IHDR width, height
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None
    green = np.all(np.abs(pixels.astype(int) - (0, 160, 0)) <= 8, axis=2)  # BGR
    assert green.sum() > 800 * 100  # the pushed banner is in the picture

    assert _live_members(pgid) == []  # chromium and its renderers are gone
    await browser.close()  # idempotent


async def test_js_failures_are_reported(site: Site, tmp_path: Path) -> None:
    async with Browser(tmp_path, width=400, height=300) as browser:
        await browser.goto(site.url + "/faulty")
        await browser.wait_for("window.done")
        assert browser.console_errors[0] == "logged failure 42"
        assert "Error: boom from a timer" in browser.console_errors[1]

        with pytest.raises(AssertionError, match="JS exception: Error: thrown here"):
            await browser.evaluate("(() => { throw new Error('thrown here'); })()")
        with pytest.raises(AssertionError, match="rejected here"):
            await browser.evaluate("Promise.reject(new Error('rejected here'))")
        assert await browser.evaluate("Promise.resolve({a: [1, 'b']})") == {"a": [1, "b"]}
        assert await browser.evaluate("undefined") is None

        with pytest.raises(AssertionError, match=r"#missing") as missing:
            await browser.text("#missing")
        assert "no element matches" in str(missing.value)

        with pytest.raises(AssertionError) as timeout:
            await browser.wait_for("document.querySelector('#never').innerText", timeout=0.3)
        report = str(timeout.value)
        assert "#never" in report and "page text: faulty" in report
        assert "boom from a timer" in report  # the console errors help explain the timeout

        with pytest.raises(AssertionError, match="ERR_CONNECTION_REFUSED"):
            await browser.goto(f"http://127.0.0.1:{free_port()}/")


async def test_missing_chromium_fails_with_the_setup_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(BrowserError, match=r"bash \.ci/setup --tests"):
        chromium_path()
    browser = Browser(tmp_path)
    with pytest.raises(BrowserError, match="no-such-chromium"):
        async with browser:
            pass
    assert browser.pid is None


async def test_a_browser_that_dies_fails_the_call_with_its_log(tmp_path: Path) -> None:
    async with Browser(tmp_path) as browser:
        assert browser.pid is not None
        os.killpg(browser.pid, signal.SIGKILL)
        with pytest.raises(BrowserError, match="chromium closed the DevTools connection") as died:
            await browser.evaluate("new Promise(() => {})")
        assert "chromium.log" in str(died.value)
        with pytest.raises(BrowserError, match="chromium closed the DevTools connection"):
            await browser.goto("about:blank")
