"""docs/first-venue.md stays true: its marked shell blocks run in order with real openssl, then the
real hub (TLS + mTLS) and two gates start from the files they made; a ticket admitted at one gate
is refused at the other, and the security console answers with the console token.

The guide marks what this test runs: ``<!-- guide-test -->`` before a ```sh block runs as it is;
``per-gate`` runs once per gate, each gate being its own machine (its own ``ROOT``);
``start-hub`` and ``start-gate`` are the systemd steps, which the test replaces by starting the
hub process and opening each gate. The settings block's variables (``ROOT=``, ``HUB_PORT=``,
the users ...) are replaced by the test's: a temporary folder for / and free ports.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from agent.app import config
from agent.app.daemon import Gate, open_gate
from agent.issuer import Issuer
from agent.model import Reason
from tests.hubgate import scan
from tests.hubproc import ROOT as REPO
from tests.hubproc import HubProcess, HubSetup, TlsFiles, free_port
from tests.polling import until

GUIDE = REPO / "docs" / "first-venue.md"
_BLOCK = re.compile(r"<!-- guide-test(?: ([a-z-]+))? -->\n```sh\n(.*?)```", re.S)
GATES = {"gate-a": "Gate A", "gate-b": "Gate B"}


@dataclass(frozen=True)
class Block:
    tag: str  # "" (run), "per-gate", "start-hub", "start-gate"
    code: str


def guide_blocks(text: str) -> list[Block]:
    return [Block(m.group(1) or "", m.group(2)) for m in _BLOCK.finditer(text)]


def with_values(code: str, values: dict[str, str]) -> str:
    """``code`` with each ``NAME=...`` line of ``values`` set to the test's value; a name the
    block does not assign (once, at the start of a line) is an error: the guide changed."""
    for name, value in values.items():
        line = re.compile(rf"^{name}=.*$", re.M)
        found = line.findall(code)
        assert len(found) == 1, f"the guide's block should set {name}= once: {found}"
        code = line.sub(f"{name}={shlex.quote(value)}".replace("\\", "\\\\"), code)
    return code


def run_bash(script: str, cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}", HOME=str(cwd))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"guide step failed ({done.returncode}):\n{script}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def hub_proc() -> Iterator[list[HubProcess]]:
    procs: list[HubProcess] = []
    yield procs
    for proc in procs:
        try:
            proc.stop()
        finally:
            proc.kill9()


def test_the_guide_marks_its_steps() -> None:
    tags = [b.tag for b in guide_blocks(GUIDE.read_text())]
    assert tags.count("start-hub") == 1 and tags.count("start-gate") == 1
    assert tags.index("start-hub") < tags.index("per-gate") < tags.index("start-gate")
    assert len(tags) >= 7, tags
    assert "docs/first-venue.md" in (REPO / "README.md").read_text()


async def test_first_venue_guide_runs(tmp_path: Path, hub_proc: list[HubProcess]) -> None:
    assert shutil.which("openssl"), "the guide needs openssl (.ci/setup installs it)"
    blocks = guide_blocks(GUIDE.read_text())
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    port, work = free_port(), tmp_path / "work"
    settings = with_values(
        blocks[0].code,
        {
            "ROOT": str(tmp_path / "hub-root"), "WORK": str(work), "VENUE": "venue-1",
            "HUB_NAME": "localhost", "HUB_IP": "127.0.0.1", "HUB_LISTEN": "127.0.0.1",
            "HUB_PORT": str(port), "HUB_USER": user, "HUB_GROUP": group, "GATE_USER": user,
            "GATE_GROUP": group, "ADMIN": user, "AS_HUB": "", "AS_GATE": "",
            "SCANNER": "sim://queue", "TURNSTILE": "sim://gate?passage_ms=0", "GATE_STATUS": "",
        },
    )  # fmt: skip
    hub_root = tmp_path / "hub-root"
    hub_config = hub_root / "etc" / "gate-hub" / "hub.toml"
    gate_configs: dict[str, Path] = {}
    pending: list[str] = [settings]
    for block in blocks[1:]:
        if block.tag == "":
            pending.append(block.code)
            continue
        run_bash("\n".join(pending), tmp_path)
        pending = [settings]
        if block.tag == "start-hub":
            hub_proc.append(_start_hub(tmp_path, hub_config, port, work))
        elif block.tag == "per-gate":
            for gate_id, name in GATES.items():
                root = tmp_path / f"{gate_id}-root"  # each gate is a machine of its own
                code = with_values(block.code, {"GATE": gate_id, "GATE_NAME": name})
                out = run_bash(f"{settings}\nROOT={shlex.quote(str(root))}\n{code}", tmp_path)
                assert "FAIL" not in out, out
                gate_configs[gate_id] = root / "etc" / "gate-agent" / "gate.toml"
        elif block.tag == "start-gate":
            break
    assert hub_proc and set(gate_configs) == set(GATES), "the guide lost a step"
    _check_modes(hub_root, tmp_path / "gate-a-root")
    await _check_venue(gate_configs, work, port, Issuer.load(work / "keys"))


def _start_hub(tmp_path: Path, hub_config: Path, port: int, work: Path) -> HubProcess:
    etc = hub_config.parent
    tls = TlsFiles(etc / "hub.crt", etc / "hub.key", work / "ca" / "ca.crt", etc / "gates-ca.crt")
    log_dir = tmp_path / "hub-log"
    log_dir.mkdir()
    setup = HubSetup(log_dir, hub_config, f"https://127.0.0.1:{port}", port, "venue-1",
                     etc / "keys", tls)  # fmt: skip
    return HubProcess(setup).start()


def _check_modes(hub_root: Path, gate_root: Path) -> None:
    """The secrets are private to the service's user; nothing private key-like on a gate."""
    modes = {
        hub_root / "etc/gate-hub/keys/list.key": 0o600,
        hub_root / "etc/gate-hub/hub.key": 0o600,
        hub_root / "etc/gate-hub/hub.toml": 0o640,
        gate_root / "etc/gate-agent/gate.key": 0o600,
        gate_root / "etc/gate-agent/hub.token": 0o600,
        gate_root / "etc/gate-agent/gate.toml": 0o640,
        gate_root / "etc/gate-agent/trust.json": 0o640,
    }
    for path, mode in modes.items():
        assert path.stat().st_mode & 0o777 == mode, (path, oct(path.stat().st_mode))
    assert sorted(p.name for p in (hub_root / "etc/gate-hub/keys").iterdir()) == [
        "list.key", "root.pub", "trust.json",
    ]  # fmt: skip
    on_gate = {p.name for p in (gate_root / "etc/gate-agent").iterdir()}
    assert on_gate == {"root.pub", "trust.json", "hub-ca.crt", "gate.crt", "gate.key",
                       "hub.token", "gate.toml"}  # fmt: skip


async def _check_venue(configs: dict[str, Path], work: Path, port: int, iss: Issuer) -> None:
    ticket = iss.ticket(event=1)
    conf_a, conf_b = (config.load(configs[g]) for g in GATES)
    async with open_gate(conf_a) as gate_a, open_gate(conf_b) as gate_b:
        await until(lambda: _online(gate_a) and _online(gate_b), what="both gates online (mTLS)")
        first = await gate_a.lane.present(scan(ticket))
        assert first is not None and first.decision.admitted, first
        await until(lambda: _synced(gate_b), what="gate B learnt gate A's entry")
        second = await gate_b.lane.present(scan(ticket))
        assert second is not None and second.decision.reason is Reason.ALREADY_USED, second
        assert "Gate A" in second.decision.detail, second.decision
        await _check_console(work, port)


def _online(gate: Gate) -> bool:
    return gate.hub is not None and gate.hub.online


async def _synced(gate: Gate) -> bool:
    assert gate.hub is not None
    return int(gate.hub.status()["feed_cursor"]) > 0


async def _check_console(work: Path, port: int) -> None:
    token = (work / "console.token").read_text().strip()
    ctx = ssl.create_default_context(cafile=str(work / "ca" / "ca.crt"))
    base = f"https://localhost:{port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        async with session.get(f"{base}/console") as page:
            assert page.status == 200 and "text/html" in page.headers["Content-Type"]
        auth = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{base}/v1/gates", headers=auth) as reply:
            assert reply.status == 200
            names = {g["gate_name"] for g in (await reply.json())["gates"]}
        async with session.get(f"{base}/v1/gates", headers={"Authorization": "Bearer x"}) as bad:
            assert bad.status == 401
    assert names == set(GATES.values()), names
