"""The wallet page's QR encoder (sync/qr.js), in headless Chromium, against zxing-cpp.

Codes for random alphanumeric texts (every length up to version 10 and some beyond) and for real
TK2 code texts are drawn on the page's canvas, read back as PNG pixels and decoded by zxing-cpp:
the text must come back exactly. zxing-cpp's own encoder gives the same version and, with its mask
forced, the same module matrix; and both pick the same mask by the penalty rules.
"""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zxingcpp
from aiohttp import web

from agent.app import wallet_serve
from agent.tickets import base45, tk2
from tests.browser import Browser

ALNUM = base45.ALPHABET
QR_ONLY = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
# Level M alphanumeric capacity (characters) of versions 1-12, from ISO/IEC 18004 table 7.
CAPACITY_M = [20, 38, 61, 90, 122, 154, 178, 221, 262, 311, 366, 419]


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Browser]:
    runner = web.AppRunner(wallet_serve.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with Browser(tmp_path) as browser:
            await browser.goto(f"http://127.0.0.1:{port}/wallet")
            await browser.wait_for("typeof QR === 'object'")
            yield browser
    finally:
        await runner.cleanup()


def texts(rng: random.Random) -> list[str]:
    out = []
    for version, top in enumerate(CAPACITY_M, start=1):
        low = CAPACITY_M[version - 2] + 1 if version > 1 else 1
        for length in {low, top, rng.randint(low, top)}:
            letters = "".join(rng.choice(ALNUM) for _ in range(length - 1))
            out.append(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + letters)  # never all digits
    for _ in range(12):
        body = bytes(rng.randrange(256) for _ in range(tk2.BODY_LEN))
        out.append(tk2.PREFIX + base45.encode(body))
    return out


def _extra(barcode: Any) -> dict[str, Any]:
    return dict(barcode.extra)


def png_gray(data_url: str) -> np.ndarray:
    raw = base64.b64decode(data_url.split(",", 1)[1])
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    return np.asarray(image)


async def draw_all(page: Browser, items: list[str], scale: int = 3) -> list[dict[str, Any]]:
    js = (
        "(items => items.map(t => { const code = QR.encode(t);"
        " const canvas = document.createElement('canvas');"
        f" QR.draw(canvas, code, {scale});"
        " return {png: canvas.toDataURL('image/png'), version: code.version, mask: code.mask};"
        f" }}))({_js_list(items)})"
    )
    result = await page.evaluate(js)
    assert isinstance(result, list)
    return result


def _js_list(items: list[str]) -> str:
    import json

    return json.dumps(items)


async def test_codes_decode_to_the_exact_text(page: Browser) -> None:
    items = texts(random.Random(17))
    drawn = await draw_all(page, items)
    for text, code in zip(items, drawn, strict=True):
        found = zxingcpp.read_barcodes(png_gray(code["png"]), formats=QR_ONLY)
        assert [b.text for b in found] == [text], f"version {code['version']}, {len(text)} chars"
        assert found[0].ec_level == "M"
        extra: dict[str, Any] = _extra(found[0])
        assert extra["Version"] == str(code["version"])
        assert extra["DataMask"] == code["mask"]
    tk2_versions = {c["version"] for t, c in zip(items, drawn, strict=True) if t.startswith("TK2:")}
    assert tk2_versions == {10}


async def test_same_symbol_as_zxing_encoder(page: Browser) -> None:
    items = texts(random.Random(4))
    same_mask = 0
    for text in items:
        theirs = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
        read = zxingcpp.read_barcode(theirs.to_image(scale=4))
        assert read is not None
        info: dict[str, Any] = _extra(read)
        mask = info["DataMask"]
        ours = await page.evaluate(
            f"(() => {{ const c = QR.encode({_js_list([text])}[0], {mask});"
            " return {version: c.version, modules: c.modules}; })()"
        )
        assert str(ours["version"]) == info["Version"]
        matrix = np.asarray(theirs.to_image(scale=1, add_quiet_zones=False)) < 128
        assert np.array_equal(np.array(ours["modules"], dtype=bool), matrix), text[:20]
        chosen = await page.evaluate(f"QR.encode({_js_list([text])}[0]).mask")
        same_mask += chosen == mask
    assert same_mask == len(items)  # the same penalty rules pick the same mask


async def test_refuses_what_alphanumeric_mode_cannot_carry(page: Browser) -> None:
    for bad in ("'lowercase'", "''", "'X'.repeat(5000)"):
        error = await page.evaluate(
            f"(() => {{ try {{ QR.encode({bad}); }} catch (e) {{ return e.name; }} }})()"
        )
        assert error in ("RangeError", "TypeError")
