"""The hub holds no key that mints tickets (issue 10, part 10).

`gate-agent keys export --hub DIR --keys KEYSDIR` writes exactly list.key, trust.json and root.pub;
a real hub serves and signs with that folder, and refuses to start (EX_CONFIG) when its keys
folder holds root.key, issuer.key or any other private key besides list.key.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest

from agent import tickets, trust
from agent.app.cli import EX_CONFIG
from agent.errors import ConfigError
from agent.issuer import Issuer, keys_init
from agent.revocation import ListState, RevocationStore
from sync import hub_config
from sync.protocol import RevocationPage
from tests.hubproc import EXE, HubProcess, HubSetup, add_token, hub_cli, make_tls, write_hub_config

HUB_FILES = {"list.key": 0o600, "trust.json": 0o644, "root.pub": 0o644}
COMMAND = "`gate-agent keys export --hub DIR --keys KEYSDIR`"


def ga(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _hub_on(folder: Path, tmp_path: Path, keys_dir: Path) -> HubSetup:
    """A hub config whose [hub] keys is ``folder`` itself (not the helper's own export)."""
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    text = setup.config.read_text().replace(f'keys = "{setup.keys}"', f'keys = "{folder}"')
    assert f'keys = "{folder}"' in text
    setup.config.write_text(text)
    shutil.rmtree(setup.keys)
    return dataclasses.replace(setup, keys=folder)


def _get(setup: HubSetup, path: str, token: str) -> bytes:
    request = urllib.request.Request(setup.url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        body: bytes = reply.read()
    return body


async def test_export_writes_exactly_the_hubs_three_files_and_a_hub_runs_on_them(
    tmp_path: Path, keys_dir: Path, iss: Issuer
) -> None:
    out = tmp_path / "etc" / "hub-keys"
    done = ga("keys", "export", "--hub", out, "--keys", keys_dir)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(HUB_FILES)
    assert _mode(out) == 0o700
    assert {name: _mode(out / name) for name in HUB_FILES} == HUB_FILES
    for name in HUB_FILES:
        assert (out / name).read_bytes() == (keys_dir / name).read_bytes()
        assert f"wrote {out / name} ({HUB_FILES[name]:04o})" in done.stdout
    assert "PRIVATE KEY" not in done.stdout + done.stderr

    setup = _hub_on(out, tmp_path, keys_dir)
    token = add_token(setup, gate_id="gate-1")
    text = iss.ticket(event=1)
    with HubProcess(setup):
        assert _get(setup, "/v1/trust", token) == (keys_dir / "trust.json").read_bytes()
        revoked = hub_cli(setup, "revoke", text)
        assert revoked.returncode == 0, revoked.stderr
        page = RevocationPage.from_json(json.loads(_get(setup, "/v1/revocations?after=0", token)))
    assert page.version == 2  # the hub's empty version 1 at start, then the revocation
    root = trust.load_root_key(str(keys_dir / "root.pub"))
    signers = trust.parse_bundle((out / "trust.json").read_bytes(), root).list_signers
    async with await RevocationStore.open(tmp_path / "gate-rev.db") as gate_list:
        for delta in page.deltas:
            await gate_list.apply(delta.encode(), signers)
        assert gate_list.status(tickets.parse(text).revocation_key) is ListState.REVOKED


def test_export_again_keeps_identical_files_and_refuses_differing_ones(
    tmp_path: Path, keys_dir: Path
) -> None:
    out = tmp_path / "hub-keys"
    assert ga("keys", "export", "--hub", out, "--keys", keys_dir).returncode == 0
    again = ga("keys", "export", "--hub", out, "--keys", keys_dir)
    assert again.returncode == 0, again.stderr
    assert all(f"unchanged {out / name}" in again.stdout for name in HUB_FILES)

    keys_init(tmp_path / "other", kid=9)
    before = {name: (out / name).read_bytes() for name in HUB_FILES}
    refused = ga("keys", "export", "--hub", out, "--keys", tmp_path / "other")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"gate-agent: error: {out / 'list.key'}: already there and different; --force replaces it"
    ]
    assert {name: (out / name).read_bytes() for name in HUB_FILES} == before

    forced = ga("keys", "export", "--hub", out, "--keys", tmp_path / "other", "--force")
    assert forced.returncode == 0, forced.stderr
    for name, mode in HUB_FILES.items():
        assert (out / name).read_bytes() == (tmp_path / "other" / name).read_bytes()
        assert _mode(out / name) == mode


def test_export_refuses_a_set_the_hub_could_not_use(tmp_path: Path, keys_dir: Path) -> None:
    into_itself = ga("keys", "export", "--hub", keys_dir, "--keys", keys_dir)
    assert into_itself.returncode == 2
    assert f"{keys_dir / 'issuer.key'}, {keys_dir / 'root.key'}:" in into_itself.stderr

    (keys_dir / "list.key").write_bytes((keys_dir / "issuer.key").read_bytes())
    out = tmp_path / "hub-keys"
    foreign = ga("keys", "export", "--hub", out, "--keys", keys_dir)
    assert foreign.returncode == 2
    assert "is not one of its list signers" in foreign.stderr
    assert not out.exists()

    missing = ga("keys", "export", "--hub", out, "--keys", tmp_path / "nowhere")
    assert missing.returncode == 2 and "nowhere/list.key" in missing.stderr
    usage = ga("keys", "export", "--keys", keys_dir)
    assert usage.returncode == 2 and "--hub" in usage.stderr


@pytest.mark.parametrize("name", ["root.key", "issuer.key", "old-root.pem"])
def test_hub_refuses_to_start_with_a_minting_key_in_its_folder(
    name: str, tmp_path: Path, keys_dir: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    source = "issuer.key" if name == "issuer.key" else "root.key"
    shutil.copyfile(keys_dir / source, setup.keys / name)
    expected = [
        f"gate-agent: error: {setup.config}: [hub] keys: {setup.keys / name} must not be on the"
        " hub (it needs list.key, trust.json and root.pub only); give it a folder of its own"
        f" made by {COMMAND}"
    ]
    hub = subprocess.run(
        [*EXE, "hub", "--config", str(setup.config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert hub.returncode == EX_CONFIG
    assert hub.stderr.strip().splitlines() == expected
    for args in (("token", "--gate", "g1"), ("revoke", "00" * 16)):
        admin = hub_cli(setup, *args)
        assert admin.returncode == EX_CONFIG  # every config error (issue 12)
        assert admin.stderr.strip().splitlines() == expected
    assert not (setup.dir / "state").exists()  # no store was opened, no token stored


def test_the_hubs_tls_key_may_sit_in_its_keys_folder(tmp_path: Path, keys_dir: Path) -> None:
    tls = make_tls(tmp_path / "tls", mtls=False)
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, tls=tls)
    text = setup.config.read_text()
    moved = setup.keys / "hub.key"
    shutil.copyfile(tls.key, moved)
    setup.config.write_text(text.replace(f'key = "{tls.key}"', f'key = "{moved}"'))
    assert hub_config.load(setup.config).tls == hub_config.TlsSection(tls.cert, moved)

    shutil.copyfile(tmp_path / "tls" / "ca.key", setup.keys / "ca.key")
    with pytest.raises(ConfigError, match=r"hub-keys/ca\.key must not be on the hub"):
        hub_config.load(setup.config)
