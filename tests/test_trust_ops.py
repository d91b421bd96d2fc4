"""Trust operations a venue runs (issue 16, parts 1 and 3): an issuer's own key folder, the root
operator adding, retiring and compromising keys through the CLI contract, and bundle mistakes
refused with a message while the installed bundle stays."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent import keys, signed, tickets, trust
from agent.app import config
from agent.app.daemon import open_gate
from agent.errors import RollbackError, TrustError
from agent.issuer import Issuer
from agent.model import Reason
from tests.gateconf import write_gate_config

EXE = [sys.executable, "-m", "agent"]


def _cli(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, timeout=60)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def _installed(root_dir: Path) -> trust.TrustBundle:
    """root/trust.json as a gate would install it."""
    store = trust.TrustStore(trust.load_root_key(str(root_dir / "root.pub")), None)
    store.install((root_dir / "trust.json").read_bytes())
    assert store.bundle is not None
    return store.bundle


def _verdict(root_dir: Path, text: str) -> Reason:
    return trust.verify(tickets.parse(text), _installed(root_dir), now=1.9e9).reason


def test_an_issuer_folder_a_root_operator_and_the_cli_contract(
    keys_dir: Path, tmp_path: Path
) -> None:
    shop = tmp_path / "shop"
    made = _cli("keys", "issuer", shop, "--alg", "p256", "--kid", "4242")
    assert "kid 4242" in made.stdout
    assert (shop / "issuer.key").stat().st_mode & 0o077 == 0
    assert not (shop / "root.key").exists()
    pem = (shop / "issuer.pub").read_bytes()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")

    # The root operator adds the folder; stdout's first word is the version written.
    before = _installed(keys_dir).version
    added = _cli("trust", "add", "--keys", keys_dir, shop, "--events", "5,6")
    assert added.stdout.split()[0] == str(before + 1)
    entry = {i.kid: i for i in _installed(keys_dir).issuers}["4242"]
    assert (entry.alg, entry.status, entry.events) == ("p256", "active", frozenset({"5", "6"}))

    # Tickets from the issuer's own folder verify against the root's bundle.
    _cli("issue", "--keys", shop, "--event", "5", "--out", tmp_path / "t")
    text = (tmp_path / "t" / "ticket-0001.txt").read_text().strip()
    assert _verdict(keys_dir, text) is Reason.OK

    # A bare PEM file needs a kid; the same kid twice is refused and nothing is written.
    no_kid = _cli("trust", "add", "--keys", keys_dir, shop / "issuer.pub", ok=False)
    assert no_kid.returncode == 2 and "--kid" in no_kid.stderr
    again = _cli("trust", "add", "--keys", keys_dir, shop, ok=False)
    assert again.returncode == 2 and "kid 4242 is already in" in again.stderr
    assert _installed(keys_dir).version == before + 1

    # Retired: already issued tickets stay valid. Compromised: refused, and final.
    retired = _cli("trust", "retire", "--keys", keys_dir, "4242")
    assert retired.stdout.split()[0] == str(before + 2)
    assert _verdict(keys_dir, text) is Reason.OK
    gone = _cli("trust", "compromise", "--keys", keys_dir, "4242")
    assert gone.stdout.split()[0] == str(before + 3)
    assert _verdict(keys_dir, text) is Reason.KEY_NOT_VALID
    back = _cli("trust", "retire", "--keys", keys_dir, "4242", ok=False)
    assert back.returncode == 2 and "final" in back.stderr
    unknown = _cli("trust", "compromise", "--keys", keys_dir, "99", ok=False)
    assert unknown.returncode == 2 and "kid 99 is not in" in unknown.stderr
    assert _installed(keys_dir).version == before + 3


def test_issue_refuses_a_key_its_own_bundle_retired_or_compromised(
    keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    """Found in a user trial: `issue` signed with a compromised key (tickets every gate refuses)
    and a retired one (which signs no new tickets) without a word."""
    out = tmp_path / "t"
    kid = str(iss.kid)
    held = iss.ticket(event=1)  # issued while the key was active
    for status, why in (
        ("retire", f"issuer key {kid} is retired in {keys_dir / 'trust.json'}: it signs no new"),
        ("compromise", f"issuer key {kid} is compromised in {keys_dir / 'trust.json'}: every gate"
                       " refuses its tickets (key_not_valid)"),
    ):  # fmt: skip
        _cli("trust", status, "--keys", keys_dir, kid)
        refused = _cli("issue", "--keys", keys_dir, "--event", "1", "--out", out, ok=False)
        assert (refused.returncode, refused.stdout) == (2, ""), refused.stderr
        assert why in refused.stderr and "no ticket written" in refused.stderr
        assert not out.exists()
        # transfer re-issues under the same key: refused before it revokes the old text
        moved = _cli("transfer", "--keys", keys_dir, "--out", out, held, ok=False)
        assert (moved.returncode, moved.stdout) == (2, ""), moved.stderr
        assert why in moved.stderr and "nothing transferred, nothing revoked" in moved.stderr
        assert not out.exists()


def test_a_pem_file_with_a_kid_and_a_validity_window(keys_dir: Path, tmp_path: Path) -> None:
    key = keys.generate("ed25519")
    pub = tmp_path / "partner.pem"
    pub.write_bytes(keys.public_pem(key))
    _cli(
        "trust", "add", "--keys", keys_dir, pub, "--kid", "77",
        "--not-before", "2030-01-01", "--not-after", "2030-12-31",
    )  # fmt: skip
    entry = {i.kid: i for i in _installed(keys_dir).issuers}["77"]
    assert (entry.valid_from, entry.valid_until) == (1893456000, 1924905600)
    not_pem = tmp_path / "junk.pem"
    not_pem.write_bytes(b"x" * 10_000)
    junk = _cli("trust", "add", "--keys", keys_dir, not_pem, "--kid", "78", ok=False)
    assert junk.returncode == 2 and "not a public key file" in junk.stderr


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("twice", "kid .* is listed twice"),
        ("alg", r"alg must be one of"),
        ("root", "is the root key"),
        ("list", "is a list-signing key"),
    ],
)
def test_bundle_mistakes_are_refused_and_the_old_bundle_stays(
    iss: Issuer, tmp_path: Path, mistake: str, message: str
) -> None:
    root = trust.load_root_key(iss.root_pub_b64)
    store = trust.TrustStore(root, tmp_path / "trust.json")
    store.install(iss.trust_bundle(version=3))
    entry = iss.trust_entry()
    bad = {
        "twice": [entry, {**entry}],
        "alg": [{**entry, "alg": "rsa2048"}],
        "root": [{**entry, "alg": "ed25519", "public_key": iss.root_pub_b64}],
        "list": [{**entry, "alg": "ed25519", "public_key": keys.public_raw_b64(iss.list_key)}],
    }[mistake]
    with pytest.raises(TrustError, match=message):
        store.install(iss.trust_bundle(version=4, issuers=bad))
    with pytest.raises(RollbackError, match="not newer"):
        store.install(iss.trust_bundle(version=3))
    assert store.version == 3
    assert trust.TrustStore(root, tmp_path / "trust.json").version == 3  # what a restart loads


async def test_a_root_hand_over_is_pinned_across_a_gate_restart(
    keys_dir: Path, tmp_path: Path
) -> None:
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    (gate_dir / "root.pub").write_bytes((keys_dir / "root.pub").read_bytes())  # set up once
    published = gate_dir / "trust.json"  # what the gate is given, rewritten below
    published.write_bytes((keys_dir / "trust.json").read_bytes())
    conf = config.load(
        write_gate_config(
            gate_dir / "gate.toml", trust={"root_key": "root.pub", "bundle": "trust.json"}
        )
    )
    old_root = keys.read_private(keys_dir / "root.key")

    def signed_by_old_root(version: int) -> bytes:
        content = json.loads(base64.b64decode(json.loads(published.read_bytes())["payload"]))
        content.pop("root_next", None)
        return signed.sign_document(trust.KIND, {**content, "version": version}, old_root)

    async with open_gate(conf) as gate:
        start = gate.trust.version
    hand_over = _cli("trust", "rotate-root", "--keys", keys_dir)
    assert hand_over.stdout.split()[0] == str(start + 1)
    assert (keys_dir / "root.key.old").exists()
    assert (keys_dir / "root.pub").read_text() != (gate_dir / "root.pub").read_text()
    published.write_bytes((keys_dir / "trust.json").read_bytes())
    async with open_gate(conf) as gate:
        assert gate.trust.version == start + 1  # verified by the configured (old) root
        assert gate.trust.root is not None
        assert keys.public_raw_b64(gate.trust.root) == (keys_dir / "root.pub").read_text().strip()
        with pytest.raises(TrustError, match="does not verify"):
            gate.trust.install(signed_by_old_root(start + 2))

    # A restart with the old root still in the config: the pinned root holds.
    published.write_bytes(signed_by_old_root(start + 2))
    async with open_gate(conf) as gate:
        assert gate.trust.version == start + 1  # the old root's bundle refused, logged
    kid = str(Issuer.load(keys_dir).kid)
    _cli("trust", "retire", "--keys", keys_dir, kid)  # signed by the new root alone
    published.write_bytes((keys_dir / "trust.json").read_bytes())
    async with open_gate(conf) as gate:
        assert gate.trust.version == start + 2
        assert gate.trust.bundle is not None
        assert {i.kid: i.status for i in gate.trust.bundle.issuers} == {kid: "retired"}
    assert b"root_next" not in base64.b64decode(
        json.loads((keys_dir / "trust.json").read_bytes())["payload"]
    )  # only the hand-over bundle names the next root


def test_a_hand_over_the_new_root_did_not_sign_is_refused(iss: Issuer, tmp_path: Path) -> None:
    root = trust.load_root_key(iss.root_pub_b64)
    stranger = keys.generate("ed25519")
    content = {
        "version": 9, "issued_at": 0, "issuers": [iss.trust_entry()],
        "list_signers": [keys.public_raw_b64(iss.list_key)],
        "root_next": keys.public_raw_b64(stranger),
    }  # fmt: skip
    alone = signed.sign_document(trust.KIND, content, iss.root_key)
    with pytest.raises(TrustError, match="did not sign it"):
        trust.parse_bundle(alone, root)
    both = signed.sign_document(trust.KIND, content, iss.root_key, [stranger])
    assert trust.parse_bundle(both, root).next_root is not None
    store = trust.TrustStore(root, tmp_path / "trust.json")
    store.install(both)
    assert (tmp_path / "trust.root").read_text().strip() == keys.public_raw_b64(stranger)
