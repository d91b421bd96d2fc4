"""A gate configured with pretix as its upstream, end to end against the loopback pretix."""

from __future__ import annotations

from pathlib import Path

from agent.app import config
from agent.app.daemon import open_gate
from agent.model import Reason
from agent.ports import Scan
from drivers.sim import SimGate, SimScanner
from tests.conftest import WriteConfig
from tests.pretix_server import EVENT, INIT_TOKEN, ORG, PretixServer, load

CASES = {c["name"]: c for c in load("tickets.json")}


async def test_pretix_gate_learns_keys_lists_and_uploads(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    async with PretixServer() as server:
        extra = (
            f'\n[pretix]\nurl = "{server.url}"\norganizer = "{ORG}"\nevent = "{EVENT}"\n'
            f'checkin_list = 11\ninit_token = "{INIT_TOKEN}"\ninterval_s = 3600\n'
        )
        conf = config.load(write_config(extra=extra))
        gate_io = SimGate(passage_ms=1)
        async with open_gate(conf, scanner=SimScanner(), gate_io=gate_io) as gate:
            assert gate.upstream is not None and gate.upstream.initialized
            before = await gate.lane.present(Scan(CASES["valid_standard_1"]["secret"], "s", 0))
            assert before is not None and before.decision.reason is Reason.UNKNOWN_KEY
            assert await gate.upstream.sync_once()
            valid = await gate.lane.present(Scan(CASES["valid_standard_2"]["secret"], "s", 10**10))
            revoked = await gate.lane.present(
                Scan(CASES["revoked_after_regenerate"]["secret"], "s", 2 * 10**10)
            )
            assert valid is not None and valid.decision.admitted, valid
            assert revoked is not None and revoked.decision.reason is Reason.REVOKED
            assert await gate.upstream.sync_once()  # uploads the admission
            assert gate.upstream.status["outbox"] == 0
        uploads = server.state.redeem_calls()
        assert len(uploads) == 1 and uploads[0].body["force"] is True
        assert (conf.gate.state_dir / "pretix_device.json").stat().st_mode & 0o777 == 0o600
