"""Signed JSON documents: trust bundles and revocation lists.

A document on disk or on the wire is a JSON envelope::

    {"format": "gate-agent/signed/1", "kind": KIND, "payload": B64, "signature": B64}

``payload`` is base64 of the canonical JSON of the content; the signature (Ed25519, 64 bytes) covers
``b"gate-agent/" + KIND + b"\\0" + payload_bytes``, so a revocation list can never pass as a trust
bundle. The payload is parsed only after the signature checks out. Size is capped before parsing.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from agent import keys
from agent.errors import SignedDocumentError

ENVELOPE_FORMAT = "gate-agent/signed/1"
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024


def _message(kind: str, payload: bytes) -> bytes:
    return b"gate-agent/" + kind.encode("ascii") + b"\0" + payload


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_document(kind: str, content: dict[str, Any], key: keys.PrivateKey) -> bytes:
    """Serialise and sign ``content`` as a document of ``kind``; returns the envelope bytes."""
    payload = canonical_json(content)
    envelope = {
        "format": ENVELOPE_FORMAT,
        "kind": kind,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signature": base64.b64encode(keys.sign(key, _message(kind, payload))).decode("ascii"),
    }
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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{kind}: not a JSON document (truncated or corrupt?): {exc}") from exc
    if not isinstance(envelope, dict) or envelope.get("format") != ENVELOPE_FORMAT:
        raise error(f"{kind}: not a gate-agent signed document")
    if envelope.get("kind") != kind:
        raise error(f"{kind}: document is a {envelope.get('kind')!r}, expected {kind!r}")
    payload_b64, sig_b64 = envelope.get("payload"), envelope.get("signature")
    if not isinstance(payload_b64, str) or not isinstance(sig_b64, str):
        raise error(f"{kind}: payload or signature missing")
    try:
        payload = base64.b64decode(payload_b64, validate=True)
        signature = base64.b64decode(sig_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"{kind}: payload or signature is not base64") from exc
    message = _message(kind, payload)
    if not any(keys.verify(k, signature, message) for k in public_keys):
        raise error(f"{kind}: signature does not verify (forged or altered document)")
    try:
        content = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{kind}: signed payload is not JSON") from exc
    if not isinstance(content, dict):
        raise error(f"{kind}: signed payload is not an object")
    return content
