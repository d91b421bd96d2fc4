"""GO and STOP stay apart for a steward with deuteranopia, measured on the rendered screenshots.

Each screen is screenshotted in headless Chromium (800x480); its background (the colour most of
its pixels have) goes through the Machado 2009 deuteranopia simulation, and the simulated GO and
STOP must differ by a CIE76 colour difference of at least 40 (red and green as the display had
them before, #0a7d2c and #b3141b, come out 14 apart: nearly the same olive).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.issuer import Issuer
from drivers.sim import SimGate
from tests.browser import Browser
from tests.conftest import WriteConfig
from tests.display_checks import contrast, delta_e, deuteranopia, dominant
from tests.displaygate import display_config, present, screens_folder, serving_display, shows

MIN_DELTA_E = 40.0


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screens_folder(tmp_path)


def test_the_check_tells_the_old_red_and_green_apart_from_good_ones() -> None:
    old_go, old_stop = (0x0A, 0x7D, 0x2C), (0xB3, 0x14, 0x1B)
    assert delta_e(old_go, old_stop) > 100  # plain to most people
    assert delta_e(deuteranopia(old_go), deuteranopia(old_stop)) < 20  # not to a deuteranope
    assert deuteranopia((255, 255, 255)) == (255, 255, 255)
    assert round(contrast((0, 0, 0), (255, 255, 255)), 1) == 21.0


async def test_go_and_stop_differ_under_deuteranopia(
    write_config: WriteConfig,
    iss: Issuer,
    tmp_path: Path,
    shots: Path,
) -> None:
    conf = display_config(write_config, iss, display={"clear_after_s": 600})
    async with (
        serving_display(conf, SimGate(passage_ms=0)) as (gate, _, url),
        Browser(tmp_path) as page,
    ):
        await page.goto(url)
        await shows(page, "ready")
        await present(gate, iss.ticket(event=1, zones=[1]))
        await shows(page, "admit")
        go = dominant(await page.screenshot(shots / "colour-go.png"))
        await present(gate, "NOT-A-TICKET", "s2")  # another reader: no part of the admission
        await shows(page, "deny")
        stop = dominant(await page.screenshot(shots / "colour-stop.png"))
    seen_go, seen_stop = deuteranopia(go), deuteranopia(stop)
    difference = delta_e(seen_go, seen_stop)
    print(f"GO {go} -> {seen_go}, STOP {stop} -> {seen_stop}: delta E {difference:.1f}")
    assert difference >= MIN_DELTA_E, (go, stop, seen_go, seen_stop)
    # and both carry white text readably (the page check is in tests/test_display.py)
    assert contrast(go, (255, 255, 255)) >= 4.5
    assert contrast(stop, (255, 255, 255)) >= 4.5
