"""Ticket transfer (issue 16 part 5): the new text works, the old one dies, the pair never enters
twice; offline with the written delta, and through a real hub with two gates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent import tickets
from agent.app import config
from agent.app.daemon import Gate, open_gate
from agent.issuer import Issuer
from agent.lane import Outcome
from agent.model import Reason
from agent.redact import short_id
from tests.hubgate import get_json, scan, write_gate
from tests.hubproc import HubProcess, HubSetup, add_token, hub_cli, write_hub_config
from tests.polling import until

EXE = [sys.executable, "-m", "agent"]


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def _transfer(keys_dir: Path, out: Path, text: str) -> str:
    done = _cli("transfer", "--keys", keys_dir, "--out", out, text)
    assert done.returncode == 0, done.stderr
    assert text not in done.stdout + done.stderr  # a bearer credential is never echoed
    [new] = sorted(out.glob("ticket-*.txt"))[-1:]
    return new.read_text().strip()


def _check(keys_dir: Path, text: str, *revocations: Path) -> subprocess.CompletedProcess[str]:
    extra = [arg for path in revocations for arg in ("--revocations", str(path))]
    return _cli("check", "--keys", keys_dir, *extra, text)


def test_a_transfer_that_cannot_write_leaves_no_ticket_and_no_version_used(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    """Found trying the product: `transfer --out <a file>` failed after it had recorded the
    list's next version, so every later revocation began at a version no gate had."""
    state = keys_dir / "revocations.state.json"
    before = state.read_bytes() if state.exists() else None
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    old = iss.ticket(event=1)
    failed = _cli("transfer", "--keys", keys_dir, "--out", blocker, old)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert (state.read_bytes() if state.exists() else None) == before
    out = tmp_path / "out"
    out.mkdir()
    (out / "ticket-0001.revocation.json").write_text("{}")  # in the way of the delta
    failed = _cli("transfer", "--keys", keys_dir, "--out", out, old)
    assert failed.returncode == 2 and "ticket-0001.revocation.json exists" in failed.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ticket-0001.revocation.json"]
    assert (state.read_bytes() if state.exists() else None) == before
    (out / "ticket-0001.revocation.json").unlink()
    new = _transfer(keys_dir, out, old)
    assert _check(keys_dir, old, out / "ticket-0001.revocation.json").returncode == 1
    assert _check(keys_dir, new, out / "ticket-0001.revocation.json").returncode == 0


def test_transfer_writes_a_new_text_and_a_delta_revoking_the_old(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    old = iss.ticket(event=1, zones=[2, 5], not_before=1_700_000_000, not_after=2_000_000_000)
    new = _transfer(keys_dir, tmp_path / "out", old)
    before, after = tickets.parse(old), tickets.parse(new)
    assert new != old and after.ticket_ref == before.ticket_ref  # the same admission right
    assert after.revocation_key != before.revocation_key  # a new token
    assert (after.event, after.zones, after.not_before, after.not_after) == (
        before.event, before.zones, before.not_before, before.not_after,
    )  # fmt: skip
    assert short_id(after.ticket_ref) == before.short_id
    assert (tmp_path / "out" / "ticket-0001.png").stat().st_size > 0
    delta = tmp_path / "out" / "ticket-0001.revocation.json"
    dead = _check(keys_dir, old, delta)
    assert dead.returncode == 1 and "revoked" in dead.stdout
    alive = _check(keys_dir, new, delta)
    assert alive.returncode == 0, alive.stdout

    # A second transfer of the same ticket continues the list's versions (shared with `revoke`).
    newer = _transfer(keys_dir, tmp_path / "out", new)
    second = tmp_path / "out" / "ticket-0002.revocation.json"
    assert _check(keys_dir, new, delta, second).returncode == 1
    assert _check(keys_dir, newer, delta, second).returncode == 0


def test_transfer_refuses_what_it_cannot_transfer(keys_dir: Path, tmp_path: Path) -> None:
    for text, message in (
        ("TK1:" + "A" * 162, "not a ticket text"),
        ("hello", "not a ticket text"),
    ):
        done = _cli("transfer", "--keys", keys_dir, "--out", tmp_path / "o", text)
        assert done.returncode == 2 and message in done.stderr
    other = tmp_path / "other"
    assert _cli("keys", "init", other, "--kid", "9").returncode == 0
    foreign = Issuer.load(other).ticket(event=1)
    done = _cli("transfer", "--keys", keys_dir, "--out", tmp_path / "o", foreign)
    assert done.returncode == 2 and "issued under kid 9" in done.stderr
    assert not (tmp_path / "o").exists()


async def _present(gate: Gate, text: str) -> Outcome:
    outcome = await gate.lane.present(scan(text))
    assert outcome is not None and outcome.record is not None
    return outcome


def _gate(tmp: Path, keys: Path, setup: HubSetup, gate_id: str, name: str) -> config.Config:
    token = add_token(setup, gate_id=gate_id, name=name)
    return config.load(
        write_gate(tmp / gate_id, keys, gate_id=gate_id, name=name, url=setup.url, token=token)
    )


async def test_through_the_hub_the_pair_never_enters_twice(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    console = add_token(setup, console="security")
    conf_a = _gate(tmp_path, keys_dir, setup, "gate-a", "Gate A")
    conf_b = _gate(tmp_path, keys_dir, setup, "gate-b", "Gate B")
    early, late = iss.ticket(event=1, zones=[1]), iss.ticket(event=1, zones=[1])
    early_new = _transfer(keys_dir, tmp_path / "moved", early)
    late_new = _transfer(keys_dir, tmp_path / "moved", late)
    with HubProcess(setup):
        async with open_gate(conf_a) as gate_a, open_gate(conf_b) as gate_b:
            assert gate_a.hub is not None and gate_b.hub is not None
            link_a, link_b = gate_a.hub, gate_b.hub
            await until(lambda: link_a.online and link_b.online, what="both gates online")

            # `late`: the old text reaches gate A before the venue's list says it is dead.
            assert (await _present(gate_a, late)).decision.admitted
            ref = tickets.parse(late).ticket_ref

            async def learnt(gate: Gate, ref: str) -> bool:
                return any(h.peer for h in await gate.journal.history(ref))

            await until(lambda: learnt(gate_b, ref), what="B learns the old text's admission")
            refused = await _present(gate_b, late_new)
            assert refused.decision.reason is Reason.ALREADY_USED
            assert "Gate A" in refused.decision.detail

            # The venue revokes both old texts at the hub; gates install the list.
            version = gate_a.revocations.meta.version
            done = hub_cli(setup, "revoke", early, late)
            assert done.returncode == 0, done.stderr
            await until(
                lambda: min(g.revocations.meta.version for g in (gate_a, gate_b)) > version,
                what="both gates install the revocation",
            )
            for gate in (gate_a, gate_b):
                assert (await _present(gate, early)).decision.reason is Reason.REVOKED
            assert (await _present(gate_b, early_new)).decision.admitted
            early_ref = tickets.parse(early).ticket_ref
            await until(lambda: learnt(gate_a, early_ref), what="A learns the new text's entry")
            again = await _present(gate_a, early_new)
            assert again.decision.reason is Reason.ALREADY_USED

            async def all_synced() -> bool:
                return not await gate_a.journal.unsynced() and not await gate_b.journal.unsynced()

            await until(all_synced, what="both journals acknowledged")
        alerts = get_json(f"{setup.url}/v1/alerts?after=0", console)["alerts"]
        assert [a for a in alerts if a["kind"] == "double_admission"] == []
