"""Trusted time from the hub (issue 17 part 3): a gate whose clock is not NTP-synchronised takes
the time of a hub it reaches over TLS, for validity windows and rotating codes alike; status and
metrics say which source is in use and the offset. The hub runs a day ahead under libfaketime,
so a ticket valid only from tomorrow shows which clock the gate used."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from agent.app import config
from agent.app.daemon import Gate, open_gate
from agent.app.status import StatusServer
from agent.issuer import Issuer
from agent.lane import Outcome
from agent.model import Flag, Reason
from tests import needs
from tests.faketime import FAKETIME
from tests.hubgate import scan, write_gate
from tests.hubproc import HubProcess, HubSetup, TlsFiles, add_token, make_tls, write_hub_config
from tests.polling import until

pytestmark = needs.mark(FAKETIME.exists(), "libfaketime (apt package faketime)")
DAY = 86_400.0
# The hub's clock a day ahead; its monotonic clock untouched (asyncio and timeouts use it).
AHEAD = {"LD_PRELOAD": str(FAKETIME), "FAKETIME": "+1d", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def _gate(tmp: Path, keys: Path, setup: HubSetup, tls: TlsFiles | None) -> config.Config:
    token = add_token(setup, gate_id="gate-t", name="Gate T")
    hub_extra = "" if tls is None else f'ca = "{tls.ca}"'
    return config.load(
        write_gate(tmp / "gate", keys, gate_id="gate-t", name="Gate T", url=setup.url,
                   token=token, hub_extra=hub_extra, clock="unsynced")
    )  # fmt: skip


async def _present(gate: Gate, text: str) -> Outcome:
    outcome = await gate.lane.present(scan(text))
    assert outcome is not None
    return outcome


async def test_over_tls_the_gate_takes_the_hub_time(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path / "tls", mtls=False)
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, tls=tls)
    tomorrow = iss.ticket(event=1, not_before=int(time.time() + DAY / 2))
    conf = _gate(tmp_path, keys_dir, setup, tls)
    with HubProcess(setup, env=AHEAD):
        async with open_gate(conf) as gate:
            assert gate.clock.source() == "none"  # the system clock is not trusted (config)
            before = await _present(gate, iss.ticket(event=1))
            assert Flag.CLOCK_UNTRUSTED in before.decision.flags
            await until(lambda: gate.clock.source() == "hub", what="the hub's time in use")
            assert abs(gate.clock.now() - time.time() - DAY) < 5
            offset = gate.clock.reference_offset
            assert offset is not None and abs(offset - DAY) < 5

            admitted = await _present(gate, tomorrow)  # valid from noon tomorrow: by the hub, yes
            assert admitted.decision.admitted, admitted.decision
            assert Flag.CLOCK_UNTRUSTED not in admitted.decision.flags

            status = StatusServer(gate, port=0)
            await status.start()
            try:
                base = f"http://127.0.0.1:{status.port}"
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{base}/status") as reply:
                        clock = (await reply.json())["clock"]
                    async with http.get(f"{base}/metrics") as reply:
                        metrics = await reply.text()
            finally:
                await status.close()
    assert clock["source"] == "hub" and clock["synced"] is True
    assert abs(clock["hub_offset_s"] - DAY) < 5
    samples = {
        (s.name, s.labels.get("source", "")): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name.startswith("gate_clock")
    }
    assert samples[("gate_clock_source", "hub")] == 1.0
    assert samples[("gate_clock_source", "none")] == 0.0
    assert abs(samples[("gate_clock_hub_offset_seconds", "")] - DAY) < 5


async def test_over_plain_http_the_hub_time_is_only_reported(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    conf = _gate(tmp_path, keys_dir, setup, None)
    with HubProcess(setup, env=AHEAD):
        async with open_gate(conf) as gate:
            await until(lambda: gate.clock.reference_offset is not None, what="a hub answer")
            # Seen, but anyone on the path could have said it: the clock stays untrusted.
            assert gate.clock.source() == "none"
            refused = await _present(
                gate, iss.ticket(event=1, not_before=int(time.time() + DAY / 2))
            )
            assert refused.decision.reason is Reason.NOT_YET_VALID
