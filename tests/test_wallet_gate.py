"""End to end (issue 17 part 6): the wallet page's code, screenshotted in headless Chromium, is
read by a gate's camera pipeline (a ``file://`` CameraScanner over the PNG) and decided by a real
gate: admitted; the same screenshot shown again once a newer code was admitted, or a code 40 s
old, refused ``code_expired``; a code signed by another device's key refused ``bad_signature``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.app import config, wallet_serve
from agent.app.daemon import open_gate
from agent.issuer import Issuer
from agent.tickets import tk2
from drivers.camera import CameraScanner
from tests import wallet_page as wp
from tests.browser import Browser
from tests.conftest import WriteConfig

# Another key made in the page signs the code of the ticket it holds (a stolen static part).
OTHER_DEVICE_CODE = """(async () => {
  const pair = await crypto.subtle.generateKey({name: 'ECDSA', namedCurve: 'P-256'}, false,
                                              ['sign', 'verify']);
  clearInterval(wallet.timer);
  const time = Math.floor(Date.now() / 1000);
  const text = await makeCode({privateKey: pair.privateKey}, wallet.ticket.bytes, time);
  QR.draw(document.getElementById('qr'), QR.encode(text), 8);
  return time;
})()"""


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Browser]:
    runner = web.AppRunner(wallet_serve.make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/wallet?refresh=1"
    try:
        async with Browser(tmp_path, width=wp.WIDTH, height=wp.HEIGHT) as browser:
            await browser.goto(url)
            await wp.ready(browser)
            yield browser
    finally:
        await runner.cleanup()


async def _gate_reads(conf: config.Config, image: Path) -> list[str]:
    """Present ``image`` to the gate's camera pipeline; the reasons of the rows it wrote."""
    camera = CameraScanner.from_url(f"file://{image}?fps=0")
    async with open_gate(conf, scanner=camera) as gate:
        before = len(await gate.journal.tail(100))
        await asyncio.wait_for(gate.lane.run(), 60)
        rows = await gate.journal.tail(100)
    return [r.reason for r in rows[before:]]


async def test_screenshot_admitted_once_then_refused(
    tmp_path: Path, page: Browser, iss: Issuer, write_config: WriteConfig
) -> None:
    pem = await wp.public_pem(page)
    public = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    static = iss.rotating_ticket(tk2.compressed(public), event=1)
    message = await wp.submit(page, "paste-form", {"paste-text": static})
    assert message == "Ticket stored on this device: it works offline."
    conf = config.load(write_config(entry="unlimited", repeat_window_ms=0))

    first = await wp.next_code(page, 0)
    shot_a = tmp_path / "a.png"
    assert len(await wp.shot(page, shot_a)) == 1
    assert await _gate_reads(conf, shot_a) == ["ok"]

    await wp.next_code(page, first)  # the page moved on: the holder's next code enters too
    shot_b = tmp_path / "b.png"
    assert len(await wp.shot(page, shot_b)) == 1
    assert await _gate_reads(conf, shot_b) == ["ok"]

    # The first screenshot, replayed after a newer code was admitted: code_expired.
    assert await _gate_reads(conf, shot_a) == ["code_expired"]

    # A screenshot 40 s old (the page's clock set back instead of waiting): past the window.
    now = await wp.code_time(page)
    await page.evaluate("window.realNow = Date.now; Date.now = () => window.realNow() - 40000")
    await page.wait_for(
        f"Number(document.getElementById('qr').dataset.codeTime) <= {now - 35}", timeout=15
    )
    shot_old = tmp_path / "old.png"
    assert len(await wp.shot(page, shot_old)) == 1
    assert await _gate_reads(conf, shot_old) == ["code_expired"]

    # The static part copied to another device: its own key's signature is not the bound one.
    await page.evaluate("Date.now = window.realNow")
    other_time = await page.evaluate(OTHER_DEVICE_CODE)
    assert isinstance(other_time, int) and other_time > now
    shot_other = tmp_path / "other.png"
    assert len(await wp.shot(page, shot_other)) == 1
    assert await _gate_reads(conf, shot_other) == ["bad_signature"]
    assert page.console_errors == []
