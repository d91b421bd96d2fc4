"""One text per ticket (issue 10, part 8): P-256 signatures are made and accepted low-S only.

Plain ECDSA accepts ``(r, n - s)`` wherever ``(r, s)`` is valid, so without this rule every P-256
ticket would have a second valid text (another QR code, another revocation-list spelling).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent import issuer, keys, tickets
from agent.app import config
from agent.app.daemon import open_gate
from agent.issuer import Issuer
from agent.model import Reason
from agent.ports import Scan
from agent.tickets import base45
from tests.conftest import WriteConfig

N = keys.P256_ORDER


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """A keys directory whose ticket-signing key is P-256 (replaces the Ed25519 one)."""
    d = tmp_path / "keys"
    issuer.keys_init(d, alg="p256", kid=7, events=[1, 2])
    return d


def _rs(text: str) -> tuple[int, int]:
    sig = tickets.parse(text).signature
    return int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")


def _high_s_twin(text: str) -> str:
    body = base45.decode(text[len("TK1:") :])
    _, s = _rs(text)
    return "TK1:" + base45.encode(body[:-32] + (N - s).to_bytes(32, "big"))


def _plain_ecdsa_accepts(iss: Issuer, text: str) -> bool:
    """What ECDSA without the low-S rule says (proves the twin is a genuine second signature)."""
    ticket = tickets.parse(text)
    public = iss.issuer_key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    try:
        public.verify(
            encode_dss_signature(*_rs(text)), ticket.signed_data, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        return False
    return True


async def test_high_s_twin_is_refused_and_the_original_admitted(
    write_config: WriteConfig, iss: Issuer
) -> None:
    assert iss.alg == "p256"
    original = iss.ticket(event=1, zones=[1])
    twin = _high_s_twin(original)
    assert twin != original and tickets.parse(twin).ticket_ref == tickets.parse(original).ticket_ref
    assert _plain_ecdsa_accepts(iss, original) and _plain_ecdsa_accepts(iss, twin)
    async with open_gate(config.load(write_config())) as gate:
        refused = await gate.lane.present(Scan(twin, "s1", 0))
        admitted = await gate.lane.present(Scan(original, "s1", 10_000_000_000))
        twin_again = await gate.lane.present(Scan(twin, "s1", 20_000_000_000))
    assert refused is not None and refused.decision.reason is Reason.BAD_SIGNATURE
    assert admitted is not None and admitted.decision.admitted and admitted.passed
    assert twin_again is not None and twin_again.decision.reason is Reason.BAD_SIGNATURE


def test_issued_p256_tickets_are_low_s(iss: Issuer) -> None:
    # OpenSSL picks s or n - s at random: among 200 unnormalised tickets about 100 are high-S.
    texts = [iss.ticket(event=1) for _ in range(200)]
    assert all(0 < s <= N // 2 for _, s in (_rs(t) for t in texts))
    public = iss.issuer_key.public_key()
    assert all(
        keys.verify(public, tickets.parse(t).signature, tickets.parse(t).signed_data) for t in texts
    )


def test_out_of_range_p256_values_are_refused_not_raised(iss: Issuer) -> None:
    ticket = tickets.parse(iss.ticket(event=1))
    public = iss.issuer_key.public_key()
    r, s = _rs(iss.ticket(event=1))
    for bad_r, bad_s in ((0, s), (r, 0), (N, s), (r, N), (2**256 - 1, 2**256 - 1)):
        signature = bad_r.to_bytes(32, "big") + bad_s.to_bytes(32, "big")
        assert keys.verify(public, signature, ticket.signed_data) is False


def test_ed25519_non_canonical_s_is_refused() -> None:
    """Ed25519's own twin, s + L, is refused too (OpenSSL checks s < L)."""
    key = keys.generate("ed25519")
    message = b"gate-agent/TK1/static\0" + bytes(44)
    signature = keys.sign(key, message)
    order = 2**252 + 27742317777372353535851937790883648493
    twin_s = int.from_bytes(signature[32:], "little") + order
    twin = signature[:32] + twin_s.to_bytes(32, "little")
    assert keys.verify(key.public_key(), signature, message)
    assert not keys.verify(key.public_key(), twin, message)
