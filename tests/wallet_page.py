"""Driving the holder's wallet page (sync/wallet.html) in headless Chromium for tests: getting a
ticket through its forms, waiting for a fresh code, and reading the code back from a screenshot
with zxing-cpp, as a gate's camera would."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import zxingcpp

from tests.browser import Browser

QR_ONLY = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
# A browser window tall enough for the whole code panel (a version 10 code at 8 px a module).
WIDTH, HEIGHT = 700, 900


def codes_in(image: Path) -> list[str]:
    """The QR texts zxing-cpp finds in the PNG ``image``."""
    gray = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
    assert gray is not None, image
    return [b.text for b in zxingcpp.read_barcodes(np.asarray(gray), formats=QR_ONLY)]


async def ready(page: Browser) -> None:
    """Wait until the page has its device key (and its stored ticket, if any)."""
    await page.wait_for("document.body.dataset.ready === '1'", timeout=20)


async def code_time(page: Browser) -> int:
    """The code time of the code on the canvas (0 while there is none)."""
    value = await page.evaluate("Number(document.getElementById('qr').dataset.codeTime || 0)")
    assert isinstance(value, int)
    return value


async def next_code(page: Browser, after: int, timeout: float = 15) -> int:  # noqa: ASYNC109
    """Wait for a code newer than ``after`` on the canvas; returns its code time."""
    found = await page.wait_for(
        f"Number(document.getElementById('qr').dataset.codeTime || 0) > {after}"
        " && Number(document.getElementById('qr').dataset.codeTime)",
        timeout=timeout,
    )
    assert isinstance(found, int)
    return found


async def submit(page: Browser, form: str, values: dict[str, str]) -> str:
    """Fill the form's fields (id: value), submit it and return the page's message once set."""
    await page.evaluate(
        "(values => { for (const [id, v] of Object.entries(values))"
        " document.getElementById(id).value = v;"
        " document.getElementById('message').textContent = ''; })(" + json.dumps(values) + ")"
    )
    await page.evaluate(f"document.getElementById({json.dumps(form)}).requestSubmit()")
    message = await page.wait_for(
        "(() => { const t = document.getElementById('message').textContent;"
        " return t && !t.endsWith('...') ? t : ''; })()"
    )
    return str(message)


async def public_pem(page: Browser) -> str:
    """The device's public key as the page shows it (PEM), its <details> open or not."""
    return str(await page.evaluate("document.getElementById('public-pem').textContent"))


async def shot(page: Browser, path: Path) -> list[str]:
    """Screenshot the page to ``path`` and return the codes in it."""
    await page.screenshot(path)
    return codes_in(path)
