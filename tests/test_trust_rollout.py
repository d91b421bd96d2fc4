"""A running venue follows the root operator (issue 16 part 2): a bundle published to the hub's
keys folder is served at once, both gates install it within their trust poll (no restart), a new
issuer's tickets enter, a retired kid's tickets stay valid, a compromised kid's are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.app import config
from agent.app.daemon import Gate, open_gate
from agent.issuer import TicketSigner
from agent.lane import Outcome
from agent.model import Reason
from tests.hubgate import scan, write_gate
from tests.hubproc import HubProcess, HubSetup, add_token, write_hub_config
from tests.polling import until

EXE = [sys.executable, "-m", "agent"]


def _cli(*args: str | Path) -> str:
    done = subprocess.run(
        [*EXE, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _gate(tmp: Path, keys: Path, setup: HubSetup, gate_id: str) -> config.Config:
    name = gate_id.upper()
    token = add_token(setup, gate_id=gate_id, name=name)
    path = write_gate(
        tmp / gate_id, keys, gate_id=gate_id, name=name, url=setup.url, token=token, entry="reentry"
    )
    return config.load(path)


async def _reason(gate: Gate, text: str) -> Reason:
    outcome: Outcome | None = await gate.lane.present(scan(text))
    assert outcome is not None
    return outcome.decision.reason


async def test_gates_follow_added_retired_and_compromised_issuers(
    keys_dir: Path, tmp_path: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    gates = [_gate(tmp_path, keys_dir, setup, g) for g in ("gate-a", "gate-b")]
    shop_dir = tmp_path / "shop"
    _cli("keys", "issuer", shop_dir, "--kid", "5150")
    shop = TicketSigner.load(shop_dir)
    first, second, third = (shop.ticket(event=1, zones=[1]) for _ in range(3))

    async def publish(*command: str | Path) -> int:
        """Run a trust command at the root, copy the bundle to the hub as an operator would,
        and wait until both gates run it."""
        version = int(_cli("trust", *command, "--keys", keys_dir).split()[0])
        _cli("keys", "export", "--hub", setup.keys, "--keys", keys_dir, "--force")
        await until(
            lambda: all(g.trust.version == version for g in running),
            what=f"both gates install trust bundle version {version}",
        )
        return version

    with HubProcess(setup):
        async with open_gate(gates[0]) as gate_a, open_gate(gates[1]) as gate_b:
            running = (gate_a, gate_b)
            assert await _reason(gate_a, first) is Reason.UNKNOWN_KEY

            await publish("add", shop_dir)
            assert await _reason(gate_a, first) is Reason.OK
            assert await _reason(gate_b, second) is Reason.OK

            await publish("retire", "5150")  # issued tickets stay valid until their own end
            assert await _reason(gate_b, third) is Reason.OK

            await publish("compromise", "5150")  # every ticket the key signed is refused
            for gate in running:
                for text in (first, second, third):
                    assert await _reason(gate, text) is Reason.KEY_NOT_VALID
