"""The staff display of a real `gate-agent run` process, in headless Chromium at 800x480.

The verdict shows while the turnstile is still open (the daemon wires the lane's decision hook),
then "not used" once the passage times out; a daemon that stops answering (SIGSTOP: the connection
stays open, nothing comes) or dies (SIGKILL) turns the page OUT OF SERVICE by itself, and one that
comes back is followed again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agent.issuer import Issuer
from tests.browser import Browser
from tests.conftest import WriteConfig
from tests.displaygate import PANEL, readable, screens_folder, shows
from tests.hubproc import free_port, fresh_list, running_gate

STALE_S = 3  # [display] stale_after_s: the page's own limit for hearing nothing


@asynccontextmanager
async def _daemon(
    write_config: WriteConfig, iss: Issuer, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`gate-agent run`: socket scanner, a turnstile nobody passes, status on a free port; ready."""
    port = free_port()
    path = write_config(
        revocations=[fresh_list(iss, write_config().parent)],
        scanner="sim://socket?path=scan.sock",
        gate="sim://gate?passage=never",
        passage_timeout_s=3.0,
        status={"listen": f"127.0.0.1:{port}"},
        display={"clear_after_s": 600, "stale_after_s": STALE_S},
    )
    url = f"http://127.0.0.1:{port}"
    async with running_gate(path, url, tmp_path / "gate.log") as proc:
        yield proc, url


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screens_folder(tmp_path)


@pytest.mark.slow
async def test_the_running_gate_shows_go_at_once_and_out_of_service_when_it_stops_answering(
    write_config: WriteConfig, iss: Issuer, tmp_path: Path, shots: Path
) -> None:
    async with _daemon(write_config, iss, tmp_path) as (proc, url), Browser(tmp_path) as page:
        await page.goto(url + "/display")
        await shows(page, "ready")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(tmp_path / "scan.sock"))
            sock.sendall(iss.ticket(event=1, zones=[1]).encode() + b"\n")
        await shows(page, "admit")
        # the turnstile is open for 3 s more: no passage result yet, the verdict came first
        assert await page.evaluate(f"{PANEL}.dataset.after") == ""
        await page.wait_for(f"{PANEL}.dataset.after === 'not_used'")
        assert await page.text("#admitted") == "0"

        os.kill(proc.pid, signal.SIGSTOP)  # alive, connected, silent
        await shows(page, "out", timeout=STALE_S + 10)
        assert await page.text("#message") == "Gate not answering"
        await readable(page, shots / "out-not-answering.png")

        os.kill(proc.pid, signal.SIGCONT)
        await shows(page, "ready", timeout=30)  # followed again; the old verdict is not back

        proc.kill()
        await proc.wait()
        await shows(page, "out")
        assert await page.text("#message") == "Gate not answering"
        await page.screenshot(shots / "out-daemon-dead.png")
