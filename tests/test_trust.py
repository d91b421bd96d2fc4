"""Trust bundles and ticket signature verification against them."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from agent import keys, signed, tickets, trust
from agent.errors import RollbackError, TrustError
from agent.issuer import Issuer
from agent.model import Reason

NOW = time.time()


def _root(iss: Issuer) -> keys.PublicKey:
    return trust.load_root_key(iss.root_pub_b64)


def _bundle(iss: Issuer, **entry: object) -> trust.TrustBundle:
    """A bundle of version 2 with one issuer: the keys folder's entry updated by ``entry``."""
    data = iss.trust_bundle(version=2, issuers=[{**iss.trust_entry(), **entry}])
    return trust.parse_bundle(data, _root(iss))


def test_keys_dir_bundle_verifies_a_ticket(iss: Issuer, keys_dir: Path) -> None:
    store = trust.TrustStore(trust.load_root_key(str(keys_dir / "root.pub")), None)
    store.install((keys_dir / "trust.json").read_bytes())
    assert store.bundle is not None
    check = trust.verify(tickets.parse(iss.ticket(event=1)), store.bundle, NOW)
    assert check.reason is Reason.OK and check.key is not None and check.key.kid == "7"


@pytest.mark.parametrize(
    ("entry", "reason", "words"),
    [
        ({"status": "compromised"}, Reason.KEY_NOT_VALID, "compromised"),
        ({"valid_until": int(NOW) - 10}, Reason.KEY_NOT_VALID, "expired"),
        ({"valid_from": int(NOW) + 3600}, Reason.KEY_NOT_VALID, "not valid before"),
        ({"events": ["2"]}, Reason.KEY_NOT_VALID, "may not sign for event 1"),
        ({"kid": "8"}, Reason.UNKNOWN_KEY, "kid 7"),
        ({"formats": ["pretix_sig1"]}, Reason.UNKNOWN_KEY, "kid 7"),
        ({"status": "retired"}, Reason.OK, "retired"),
    ],
)
def test_key_status_validity_and_scope(
    iss: Issuer, entry: dict[str, object], reason: Reason, words: str
) -> None:
    check = trust.verify(tickets.parse(iss.ticket(event=1)), _bundle(iss, **entry), NOW)
    assert check.reason is reason
    assert words in check.detail


def test_forged_signature_is_bad_signature(iss: Issuer) -> None:
    forged = iss.ticket(event=1, key=keys.generate())
    assert trust.verify(tickets.parse(forged), _bundle(iss), NOW).reason is Reason.BAD_SIGNATURE


def test_algorithm_comes_from_the_trust_entry(iss: Issuer) -> None:
    p256 = keys.generate("p256")
    entry = {"alg": "p256", "public_key": keys.public_raw_b64(p256)}
    good = tickets.parse(iss.ticket(event=1, key=p256))
    assert trust.verify(good, _bundle(iss, **entry), NOW).reason is Reason.OK
    # The same kid signed with Ed25519 while the bundle says p256: refused, never "tried both".
    ed = tickets.parse(iss.ticket(event=1))
    assert trust.verify(ed, _bundle(iss, **entry), NOW).reason is Reason.BAD_SIGNATURE


def test_forged_truncated_and_wrong_root_bundles_are_refused(iss: Issuer) -> None:
    data = iss.trust_bundle(version=2)
    root = _root(iss)
    with pytest.raises(TrustError, match="truncated or corrupt"):
        trust.parse_bundle(data[: len(data) // 2], root)
    envelope = json.loads(data)
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["issuers"][0]["status"] = "active"
    payload["issuers"][0]["events"] = None  # widen the key's scope, keep the signature
    envelope["payload"] = base64.b64encode(signed.canonical_json(payload)).decode()
    with pytest.raises(TrustError, match="signature does not verify"):
        trust.parse_bundle(json.dumps(envelope).encode(), root)
    with pytest.raises(TrustError, match="signature does not verify"):
        trust.parse_bundle(data, keys.generate().public_key())
    revocation_signed = iss.trust_bundle(version=2).replace(
        b'"kind": "trust"', b'"kind": "revocations"'
    )
    with pytest.raises(TrustError):
        trust.parse_bundle(revocation_signed, root)


def test_malformed_entries_are_refused(iss: Issuer) -> None:
    for bad in (
        {"alg": "rsa"},
        {"status": "maybe"},
        {"public_key": "AAAA"},
        {"valid_until": "soon"},
        {"events": [1]},
    ):
        with pytest.raises(TrustError, match=r"issuers\[0\]"):
            _bundle(iss, **bad)


def test_store_refuses_rollback_and_keeps_state(iss: Issuer, tmp_path: Path) -> None:
    state = tmp_path / "trust.json"
    store = trust.TrustStore(_root(iss), state)
    store.install(iss.trust_bundle(version=5))
    with pytest.raises(RollbackError, match="not newer"):
        store.install(iss.trust_bundle(version=4))
    with pytest.raises(RollbackError):
        store.install(iss.trust_bundle(version=5))
    with pytest.raises(TrustError):
        store.install(b'{"format": "gate-agent/signed/1", "kind": "trust"')
    assert store.version == 5
    reopened = trust.TrustStore(_root(iss), state)
    assert reopened.version == 5
    assert not reopened.offer(iss.trust_bundle(version=5), "same")  # equal: ignored quietly
    assert reopened.offer(iss.trust_bundle(version=6), "newer")
