"""Signed JSON documents: trust bundles and revocation lists.

A document on disk or on the wire is a JSON envelope::

    {"format": "gate-agent/signed/1", "kind": KIND, "payload": B64, "signature": B64}

``payload`` is base64 of the canonical JSON of the content; the signature (Ed25519, 64 bytes) covers
``b"gate-agent/" + KIND + b"\\0" + payload_bytes``, so a revocation list can never pass as a trust
bundle. The payload is parsed only after the signature checks out. Size is capped before parsing.
A document may carry ``"cosignatures": [B64, ...]`` (at most :data:`MAX_COSIGNATURES`) over the same
message by further keys: a trust bundle that hands over to a new root is signed by both roots.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from agent import keys
from agent.errors import SignedDocumentError

ENVELOPE_FORMAT = "gate-agent/signed/1"
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024
MAX_COSIGNATURES = 4


def _message(kind: str, payload: bytes) -> bytes:
    return b"gate-agent/" + kind.encode("ascii") + b"\0" + payload


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_document(
    kind: str,
    content: dict[str, Any],
    key: keys.PrivateKey,
    cosigners: Sequence[keys.PrivateKey] = (),
) -> bytes:
    """Serialise and sign ``content`` as a document of ``kind`` (also by each of ``cosigners``);
    returns the envelope bytes."""
    payload = canonical_json(content)
    message = _message(kind, payload)
    envelope: dict[str, Any] = {
        "format": ENVELOPE_FORMAT,
        "kind": kind,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signature": base64.b64encode(keys.sign(key, message)).decode("ascii"),
    }
    if cosigners:
        envelope["cosignatures"] = [
            base64.b64encode(keys.sign(k, message)).decode("ascii") for k in cosigners
        ]
    return json.dumps(envelope, indent=1).encode() + b"\n"


def open_document(
    kind: str,
    data: bytes,
    public_keys: list[keys.PublicKey],
    error: type[SignedDocumentError] = SignedDocumentError,
) -> dict[str, Any]:
    """Verify an envelope of ``kind`` against any of ``public_keys`` and return its content.

    Raises ``error`` (a SignedDocumentError) when the envelope is oversize, malformed, of another
    kind, or not signed by one of the keys.
    """
    if len(data) > MAX_DOCUMENT_BYTES:
        raise error(f"{kind}: document of {len(data)} bytes exceeds the cap")
    try:
        envelope = json.loads(data)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 and JSON are ValueErrors
        raise error(f"{kind}: not a JSON document (truncated or corrupt?): {exc}") from exc
    if not isinstance(envelope, dict) or envelope.get("format") != ENVELOPE_FORMAT:
        raise error(f"{kind}: not a gate-agent signed document")
    if envelope.get("kind") != kind:
        raise error(f"{kind}: document is a {envelope.get('kind')!r}, expected {kind!r}")
    payload, signatures = _parts(kind, envelope, error)
    message = _message(kind, payload)
    if not any(keys.verify(k, s, message) for k in public_keys for s in signatures):
        raise error(f"{kind}: signature does not verify (forged or altered document)")
    try:
        content = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 and JSON are ValueErrors
        raise error(f"{kind}: signed payload is not JSON") from exc
    if not isinstance(content, dict):
        raise error(f"{kind}: signed payload is not an object")
    return content


def signed_by(kind: str, data: bytes, key: keys.PublicKey) -> bool:
    """True when one of the signatures of the document ``data`` (already opened with
    :func:`open_document`) is ``key``'s."""
    try:
        envelope = json.loads(data)
        payload, signatures = _parts(kind, envelope, SignedDocumentError)
    except (SignedDocumentError, ValueError, RecursionError):
        return False
    message = _message(kind, payload)
    return any(keys.verify(key, s, message) for s in signatures)


def _parts(
    kind: str, envelope: dict[str, Any], error: type[SignedDocumentError]
) -> tuple[bytes, list[bytes]]:
    """The payload bytes and every signature (the signature first, then the cosignatures)."""
    payload_b64, sig_b64 = envelope.get("payload"), envelope.get("signature")
    extra = envelope.get("cosignatures", [])
    if not isinstance(payload_b64, str) or not isinstance(sig_b64, str):
        raise error(f"{kind}: payload or signature missing")
    if not isinstance(extra, list) or len(extra) > MAX_COSIGNATURES:
        raise error(f"{kind}: cosignatures must be a list of at most {MAX_COSIGNATURES}")
    if not all(isinstance(s, str) for s in extra):
        raise error(f"{kind}: cosignatures must be base64 strings")
    try:
        payload = base64.b64decode(payload_b64, validate=True)
        signatures = [base64.b64decode(s, validate=True) for s in [sig_b64, *extra]]
    except (binascii.Error, ValueError) as exc:
        raise error(f"{kind}: payload or signature is not base64") from exc
    return payload, signatures
