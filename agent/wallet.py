"""The holder's side of a rotating ticket (TK2): a device key, and the codes it signs.

What the wallet page does in a browser (a non-extractable WebCrypto key), for integrators and
tests on the command line: ``gate-agent wallet key`` makes a P-256 key pair as PEM files, and
``gate-agent wallet code`` prints the code the holder's device shows at a given time.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent import keys
from agent.errors import IssuerError, TicketFormatError
from agent.tickets import tk2

MAX_PEM = 4096


def new_device_key(path: Path) -> Path:
    """Write a new P-256 private key to ``path`` (PEM, 0600, never overwritten) and its public
    key beside it as ``path`` + ``.pub``; returns the public key's path. Raises IssuerError."""
    if not path.name or path.name == "..":  # "." or "/": a folder, no name to put .pub beside
        raise IssuerError(f"{path}: expected a file name for the device key")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = path.with_name(path.name + ".pub")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IssuerError(f"{path} exists: a device key is never overwritten") from None
    except OSError as exc:
        raise IssuerError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    try:
        public.write_bytes(keys.public_pem(key))
    except OSError as exc:
        raise IssuerError(f"{public}: cannot write: {exc.strerror or exc}") from exc
    return public


def read_device_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key in the PEM file ``path``; raises IssuerError when it is none."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PEM + 1)
    except OSError as exc:
        raise IssuerError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data[:MAX_PEM], password=None)
    except (ValueError, TypeError) as exc:
        raise IssuerError(f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise IssuerError(f"{path}: a device key must be P-256")
    return key


def device_public_bytes(path: Path) -> bytes:
    """The 33 bytes a rotating ticket carries for the P-256 public key in the PEM file ``path``
    (what `gate-agent issue --device-key` binds); raises IssuerError when it is not P-256."""
    key = keys.read_public_pem(path)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise IssuerError(f"{path}: a device key must be P-256 (this one is Ed25519)")
    return tk2.compressed(key)


def read_static(path: Path) -> str:
    """A rotating ticket's static part (``TK2S:`` text) from a ticket file; IssuerError if not."""
    try:
        with path.open("r", encoding="ascii", errors="replace") as f:
            text = f.read(tk2.STATIC_TEXT_LEN + 64).strip()
    except OSError as exc:
        raise IssuerError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        tk2.static_bytes(text)
    except TicketFormatError as exc:
        raise IssuerError(f"{path}: not a rotating ticket ({exc})") from exc
    return text


def code(ticket_file: Path, key_file: Path, at: int) -> str:
    """The ``TK2:`` code the holder's device shows at Unix second ``at``; raises IssuerError."""
    static = read_static(ticket_file)
    key = read_device_key(key_file)  # its errors name the file once
    try:
        return tk2.make_code(static, key, at)
    except ValueError as exc:
        raise IssuerError(f"{key_file}: {exc}") from exc
