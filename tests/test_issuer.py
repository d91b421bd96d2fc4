"""Issuer tooling: keys directory, trust bundles, tickets, QR files, ISO times."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import cv2
import pytest
from pyzbar.pyzbar import decode as zbar_decode

from agent import issuer, keys, signed, tickets
from agent.errors import IssuerError, TrustError
from agent.issuer import Issuer, keys_init, parse_iso
from agent.ticket_files import issue_files


def _root_pub(keys_dir: Path) -> keys.PublicKey:
    return keys.public_from_b64("ed25519", (keys_dir / "root.pub").read_text().strip())


def _open_bundle(data: bytes, root: keys.PublicKey) -> dict[str, object]:
    return signed.open_document("trust", data, [root], error=TrustError)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    keys_init(tmp_path / "keys", kid=3735928559, events=[7, 8])
    return tmp_path / "keys"


# --- keys_init -------------------------------------------------------------------------------


def test_keys_init_writes_private_keys_0600(keys_dir: Path) -> None:
    for name in ("root.key", "issuer.key", "list.key"):
        mode = stat.S_IMODE((keys_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700


def test_keys_init_layout_and_issuer_json(tmp_path: Path) -> None:
    info = keys_init(tmp_path / "k", alg="p256", kid=42, events=[1, 2])
    assert info == issuer.IssuerInfo(dir=tmp_path / "k", kid=42, alg="p256")
    names = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert names == ["issuer.json", "issuer.key", "list.key", "root.key", "root.pub", "trust.json"]
    assert json.loads((tmp_path / "k" / "issuer.json").read_text()) == {
        "kid": "42",
        "alg": "p256",
        "events": ["1", "2"],
    }
    loaded = Issuer.load(tmp_path / "k")
    assert keys.alg_of(loaded.issuer_key) == "p256"
    assert keys.alg_of(loaded.root_key) == "ed25519"
    assert keys.alg_of(loaded.list_key) == "ed25519"
    assert (tmp_path / "k" / "root.pub").read_text() == keys.public_raw_b64(loaded.root_key) + "\n"


def test_keys_init_random_kid_is_nonzero_u32(tmp_path: Path) -> None:
    kids = {keys_init(tmp_path / str(n)).kid for n in range(5)}
    assert all(1 <= kid <= 0xFFFFFFFF for kid in kids)
    assert len(kids) == 5


def test_keys_init_refuses_to_overwrite(keys_dir: Path) -> None:
    before = (keys_dir / "root.pub").read_text()
    with pytest.raises(IssuerError, match="already holds keys"):
        keys_init(keys_dir)
    assert (keys_dir / "root.pub").read_text() == before
    keys_init(keys_dir, force=True, kid=5)
    assert (keys_dir / "root.pub").read_text() != before
    assert Issuer.load(keys_dir).kid == 5


@pytest.mark.parametrize(
    "kwargs",
    [{"kid": 0}, {"kid": 1 << 32}, {"events": [-1]}, {"alg": "rsa"}],
)
def test_keys_init_refuses_bad_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(IssuerError):
        keys_init(tmp_path / "k", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "k").exists()


def test_trust_json_verifies_against_root_pub(keys_dir: Path) -> None:
    loaded = Issuer.load(keys_dir)
    content = _open_bundle((keys_dir / "trust.json").read_bytes(), _root_pub(keys_dir))
    assert content["version"] == 1
    assert isinstance(content["issued_at"], int)
    assert content["issuers"] == [
        {
            "kid": "3735928559",
            "alg": "ed25519",
            "public_key": keys.public_raw_b64(loaded.issuer_key),
            "formats": ["tk1", "tk2"],
            "events": ["7", "8"],
            "valid_from": None,
            "valid_until": None,
            "status": "active",
        }
    ]
    assert content["list_signers"] == [keys.public_raw_b64(loaded.list_key)]


def test_a_document_nested_past_jsons_depth_is_refused_as_malformed(keys_dir: Path) -> None:
    """A hostile hub's trust bundle or list that only nests: refused like any bad document
    (the sync client keeps the installed one), not an internal error."""
    root = _root_pub(keys_dir)
    with pytest.raises(TrustError, match="not a JSON document"):
        _open_bundle(b"[" * 100_000, root)
    assert not signed.signed_by("trust", b"[" * 100_000, root)


def test_trust_json_refused_by_another_root(keys_dir: Path) -> None:
    other_root = keys.generate("ed25519").public_key()
    with pytest.raises(TrustError, match="signature does not verify"):
        _open_bundle((keys_dir / "trust.json").read_bytes(), other_root)


# --- Issuer.load -----------------------------------------------------------------------------


def test_load_missing_dir_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(IssuerError, match=re.escape(str(tmp_path / "nope"))):
        Issuer.load(tmp_path / "nope")


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        '{"kid": "0", "alg": "ed25519", "events": null}',
        '{"kid": "²", "alg": "ed25519", "events": null}',
        '{"kid": 5, "alg": "ed25519", "events": null}',
        '{"kid": "5", "alg": "rsa", "events": null}',
        '{"kid": "5", "alg": "ed25519", "events": [5]}',
    ],
)
def test_load_refuses_bad_issuer_json(keys_dir: Path, content: str) -> None:
    (keys_dir / "issuer.json").write_text(content)
    with pytest.raises(IssuerError, match=re.escape("issuer.json")):
        Issuer.load(keys_dir)


def test_load_refuses_inconsistent_keys(keys_dir: Path) -> None:
    (keys_dir / "issuer.json").write_text('{"kid": "5", "alg": "p256", "events": null}')
    with pytest.raises(IssuerError, match="expected a p256 key"):
        Issuer.load(keys_dir)


def test_load_refuses_root_pub_mismatch(keys_dir: Path) -> None:
    (keys_dir / "root.pub").write_text(keys.public_raw_b64(keys.generate()) + "\n")
    with pytest.raises(IssuerError, match=re.escape("root.pub")):
        Issuer.load(keys_dir)


def test_load_refuses_missing_key(keys_dir: Path) -> None:
    (keys_dir / "list.key").unlink()
    with pytest.raises(IssuerError, match=re.escape("list.key")):
        Issuer.load(keys_dir)


# --- tickets and bundles ---------------------------------------------------------------------


@pytest.mark.parametrize("alg", keys.ALGORITHMS)
def test_ticket_parses_and_verifies(tmp_path: Path, alg: keys.Alg) -> None:
    keys_init(tmp_path, alg=alg, kid=99)
    iss = Issuer.load(tmp_path)
    ticket = tickets.parse(iss.ticket(event=7, zones=[1, 3], not_before=100, not_after=200))
    assert (ticket.kid, ticket.event, ticket.zones) == ("99", "7", 0b101)
    assert (ticket.not_before, ticket.not_after) == (100, 200)
    assert keys.verify(iss.issuer_key.public_key(), ticket.signature, ticket.signed_data)


def test_ticket_defaults(keys_dir: Path) -> None:
    iss = Issuer.load(keys_dir)
    a, b = tickets.parse(iss.ticket(event=7)), tickets.parse(iss.ticket(event=7))
    assert a.zones == 0xFFFF
    assert a.not_before is None and a.not_after is None
    assert a.ticket_ref != b.ticket_ref  # random ids
    assert a.revocation_key != b.revocation_key
    assert tickets.parse(iss.ticket(event=7, zones=[])).zones == 0


def test_ticket_ids_and_overrides(keys_dir: Path) -> None:
    iss = Issuer.load(keys_dir)
    forger = keys.generate("ed25519")
    text = iss.ticket(event=7, ticket_id=b"T" * 8, token_id=b"K" * 16, kid=77, key=forger)
    ticket = tickets.parse(text)
    assert ticket.ticket_ref == "tk1:" + (b"T" * 8).hex()
    assert ticket.revocation_key == b"K" * 16
    assert ticket.kid == "77"
    assert keys.verify(forger.public_key(), ticket.signature, ticket.signed_data)
    assert not keys.verify(iss.issuer_key.public_key(), ticket.signature, ticket.signed_data)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"zones": [0]},
        {"zones": [17]},
        {"event": -1},
        {"event": 1 << 32},
        {"not_before": -1},
        {"not_before": 200, "not_after": 100},
        {"ticket_id": b"short"},
        {"token_id": b"\x00" * 17},
        {"kid": 1 << 32},
    ],
)
def test_ticket_refuses_bad_values(keys_dir: Path, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"event": 7, **kwargs}
    with pytest.raises(IssuerError):
        Issuer.load(keys_dir).ticket(**args)  # type: ignore[arg-type]


def test_trust_bundle_versions_and_overrides(keys_dir: Path) -> None:
    iss = Issuer.load(keys_dir)
    root = _root_pub(keys_dir)
    content = _open_bundle(iss.trust_bundle(version=2), root)
    assert content["version"] == 2
    assert content["issuers"] == [iss.trust_entry()]
    retired = {**iss.trust_entry(), "status": "retired"}
    content = _open_bundle(iss.trust_bundle(version=3, issuers=[retired], list_signers=[]), root)
    assert content["issuers"] == [retired]
    assert content["list_signers"] == []
    with pytest.raises(IssuerError, match="version"):
        iss.trust_bundle(version=0)


# --- issue_files -----------------------------------------------------------------------------


def test_issue_files_writes_txt_and_scannable_png(keys_dir: Path, tmp_path: Path) -> None:
    iss = Issuer.load(keys_dir)
    out = tmp_path / "out" / "batch"
    paths = issue_files(iss, out, event=7, zones=[2], not_before=None, not_after=None, count=3)
    assert paths == [out / f"ticket-000{n}.txt" for n in (1, 2, 3)]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"ticket-000{n}.{ext}" for n in (1, 2, 3) for ext in ("txt", "png")
    )
    texts = set()
    for path in paths:
        raw = path.read_text()
        assert raw.endswith("\n")
        text = raw[:-1]
        ticket = tickets.parse(text)
        assert (ticket.event, ticket.zones) == ("7", 0b10)
        assert keys.verify(iss.issuer_key.public_key(), ticket.signature, ticket.signed_data)
        image = cv2.imread(str(path.with_suffix(".png")), cv2.IMREAD_GRAYSCALE)
        assert image is not None
        # Version 7 (45 modules) + 2 * 4 border, scale 6: only alphanumeric mode at level M fits
        # 166 characters into version 7 (byte mode needs version 9).
        assert image.shape == (318, 318)
        decoded = zbar_decode(image)
        assert [d.data.decode("ascii") for d in decoded] == [text]
        assert decoded[0].type == "QRCODE"
        texts.add(text)
    assert len(texts) == 3


def test_issue_files_never_replaces_issued_tickets(keys_dir: Path, tmp_path: Path) -> None:
    iss = Issuer.load(keys_dir)
    (first,) = issue_files(iss, tmp_path, event=7, count=1)
    before = first.read_text()
    paths = issue_files(iss, tmp_path, event=8, count=2)
    assert paths == [tmp_path / "ticket-0002.txt", tmp_path / "ticket-0003.txt"]
    assert first.read_text() == before
    assert tickets.parse(paths[0].read_text().strip()).event == "8"


def test_issue_files_refuses_bad_count_and_values(keys_dir: Path, tmp_path: Path) -> None:
    iss = Issuer.load(keys_dir)
    with pytest.raises(IssuerError, match="count"):
        issue_files(iss, tmp_path / "a", event=7, count=0)
    with pytest.raises(IssuerError, match="zone"):
        issue_files(iss, tmp_path / "b", event=7, zones=[99], count=2)
    assert not (tmp_path / "b").exists()


# --- parse_iso -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-06-15T15:06:40Z", 1_750_000_000),
        ("2025-06-15T15:06:40", 1_750_000_000),  # naive means UTC
        ("2025-06-15T17:06:40+02:00", 1_750_000_000),
        ("2025-06-15T15:06:40.999Z", 1_750_000_000),
        ("2025-06-15", 1_749_945_600),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_parse_iso(value: str, expected: int) -> None:
    assert parse_iso(value) == expected


@pytest.mark.parametrize("value", ["", "tomorrow", "2025-13-01", "1750000000", "15/06/2025"])
def test_parse_iso_refuses_garbage(value: str) -> None:
    with pytest.raises(IssuerError, match="ISO-8601"):
        parse_iso(value)
