"""Key material: Ed25519 and P-256 keys as raw base64 strings and PEM files.

Public keys travel inside signed documents as base64 of their raw form (Ed25519: 32 bytes;
P-256: the 65-byte uncompressed point). Signatures are always 64 bytes: Ed25519 as is, P-256 as
``r || s`` (32 bytes each, big-endian), so formats with a fixed signature field can carry both.

One valid text per signed message: plain ECDSA also accepts ``(r, n - s)`` for a valid ``(r, s)``,
so P-256 signatures are made and accepted only in low-S form (``s <= n/2``); Ed25519 verification
(OpenSSL) already refuses a non-canonical ``s``.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from agent.errors import IssuerError
from agent.fsutil import open_to_others

Alg = Literal["ed25519", "p256"]
ALGORITHMS: tuple[Alg, ...] = ("ed25519", "p256")
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

# The order of the P-256 group; a signature's s above half of it is the "high-S" twin.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_HALF_ORDER = P256_ORDER // 2


def generate(alg: Alg = "ed25519") -> PrivateKey:
    """Make a new private key of the given algorithm."""
    if alg == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def alg_of(key: PrivateKey | PublicKey) -> Alg:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    return "p256"


def sign(key: PrivateKey, message: bytes) -> bytes:
    """Sign ``message``; the result is always 64 bytes."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    if s > P256_HALF_ORDER:  # OpenSSL returns either form; only the low one is accepted
        s = P256_ORDER - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(key: PublicKey, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` (64 bytes) is valid for ``message``; never raises for bad input.

    A P-256 signature must be low-S (``s <= n/2``): its high-S twin is refused.
    """
    if len(signature) != 64:
        return False
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            if not (0 < r < P256_ORDER and 0 < s <= P256_HALF_ORDER):
                return False
            key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def public_raw_b64(key: PrivateKey | PublicKey) -> str:
    """The public half as base64 of its raw encoding."""
    pub = (
        key.public_key()
        if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey)
        else key
    )
    if isinstance(pub, ed25519.Ed25519PublicKey):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = pub.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    return base64.b64encode(raw).decode("ascii")


def public_from_b64(alg: str, value: str) -> PublicKey:
    """Load a public key of ``alg`` from base64 of its raw form; raises ValueError when invalid."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"public key is not valid base64: {exc}") from exc
    if alg == "ed25519":
        if len(raw) != 32:
            raise ValueError(f"ed25519 public key must be 32 bytes, got {len(raw)}")
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    if alg == "p256":
        if len(raw) != 65:
            raise ValueError(f"p256 public key must be 65 bytes, got {len(raw)}")
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    raise ValueError(f"unknown algorithm {alg!r} (expected one of {', '.join(ALGORITHMS)})")


def write_private(path: Path, key: PrivateKey) -> None:
    """Write a private key as unencrypted PKCS#8 PEM, created with mode 0600 (never wider)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_private(path: Path) -> PrivateKey:
    """Load a PEM private key (Ed25519 or P-256); raises IssuerError when unusable or readable by
    others than its owner and group."""
    if (problem := open_to_others(path)) is not None:
        raise IssuerError(f"{path}: a private key {problem}")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise IssuerError(f"{path}: cannot load private key: {exc}") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise IssuerError(f"{path}: unsupported key type (expected Ed25519 or P-256)")


MAX_PUBLIC_PEM = 4096  # an Ed25519 or P-256 public key in PEM is about 180 bytes


def public_pem(key: PrivateKey | PublicKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM (what ``openssl pkey -pubout`` writes)."""
    public = (
        key.public_key()
        if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey)
        else key
    )
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def read_public_pem(path: Path) -> PublicKey:
    """Load a PEM public key (Ed25519 or P-256) from ``path``; raises IssuerError when unusable."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PUBLIC_PEM + 1)
    except OSError as exc:
        raise IssuerError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_PUBLIC_PEM:
        raise IssuerError(f"{path}: more than {MAX_PUBLIC_PEM} bytes: not a public key file")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise IssuerError(f"{path}: not a PEM public key") from exc
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise IssuerError(f"{path}: unsupported key type (expected Ed25519 or P-256)")


def public_key_of(key: PrivateKey) -> PublicKey:
    """The public half of ``key``."""
    return key.public_key()
