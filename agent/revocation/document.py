"""The signed revocation list document: strict parsing and verification of snapshots and deltas.

A document is signed (:mod:`agent.signed`, kind ``"revocations"``); see :mod:`agent.revocation` for
its fields and the rules for applying it. Parsing never touches the store or the index.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from agent import keys
from agent.errors import RevocationError, RollbackError
from agent.revocation.index import DTYPE, KEY_LEN, KeyArray, found, sorted_unique
from agent.signed import open_document

KIND = "revocations"
_MAX_INT = 2**63 - 1  # SQLite INTEGER


@dataclass(frozen=True, slots=True)
class ListMeta:
    """The installed list's version and signed freshness (version 0: nothing installed)."""

    version: int
    issued_at: int | None
    expires: int | None

    def age(self, now: float) -> float | None:
        """Seconds since the list was issued, or None when nothing is installed."""
        return None if self.issued_at is None else now - self.issued_at

    def is_stale(self, now: float, max_age_s: float) -> bool:
        """True when nothing is installed, the list has expired, or it is older than max_age_s."""
        if self.version == 0 or self.issued_at is None:
            return True
        if self.expires is not None and now > self.expires:
            return True
        return now - self.issued_at > max_age_s


NOTHING = ListMeta(version=0, issued_at=None, expires=None)


@dataclass(frozen=True, slots=True)
class ListDocument:
    """A verified, well-formed list document; key arrays sorted and duplicate-free."""

    type: Literal["snapshot", "delta"]
    version: int
    from_version: int
    issued_at: int
    expires: int
    revoke: KeyArray
    unrevoke: KeyArray
    block: KeyArray
    unblock: KeyArray

    def describe(self) -> str:
        counts = f"revoke {len(self.revoke)}, block {len(self.block)}"
        if self.type == "snapshot":
            return f"snapshot v{self.version} ({counts})"
        return (
            f"delta v{self.from_version}->v{self.version} ({counts},"
            f" unrevoke {len(self.unrevoke)}, unblock {len(self.unblock)})"
        )


OPS = ("revoke", "unrevoke", "block", "unblock")
_FIELDS = {
    "snapshot": frozenset({"type", "version", "issued_at", "expires", *OPS}),
    "delta": frozenset({"type", "version", "from_version", "issued_at", "expires", *OPS}),
}


def _int_field(content: dict[str, Any], name: str, minimum: int = 0) -> int:
    value = content.get(name)
    if type(value) is not int or not minimum <= value <= _MAX_INT:
        raise RevocationError(f"{KIND}: {name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _keys_field(content: dict[str, Any], name: str) -> KeyArray:
    value = content.get(name, "")
    if not isinstance(value, str):
        raise RevocationError(f"{KIND}: {name!r} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RevocationError(f"{KIND}: {name!r} is not valid base64") from exc
    if len(raw) % KEY_LEN:
        raise RevocationError(f"{KIND}: {name!r} holds {len(raw)} bytes, not a multiple of 16")
    return sorted_unique(np.frombuffer(raw, dtype=DTYPE))


def parse(content: dict[str, Any]) -> ListDocument:
    """Check a list document's content strictly; raises RevocationError when malformed."""
    kind = content.get("type")
    if kind not in ("snapshot", "delta"):
        raise RevocationError(f"{KIND}: 'type' must be 'snapshot' or 'delta', got {kind!r}")
    unknown = sorted(set(content) - _FIELDS[kind])
    if unknown:
        raise RevocationError(f"{KIND}: unknown field(s) in {kind}: {', '.join(unknown)}")
    version = _int_field(content, "version", minimum=1)
    from_version = _int_field(content, "from_version") if kind == "delta" else 0
    if kind == "delta" and from_version >= version:
        raise RevocationError(f"{KIND}: delta from v{from_version} must be older than v{version}")
    issued_at, expires = _int_field(content, "issued_at"), _int_field(content, "expires")
    if expires < issued_at:
        raise RevocationError(f"{KIND}: expires ({expires}) is before issued_at ({issued_at})")
    ops = {name: _keys_field(content, name) for name in OPS}
    if kind == "snapshot" and (len(ops["unrevoke"]) or len(ops["unblock"])):
        raise RevocationError(f"{KIND}: a snapshot carries only 'revoke' and 'block'")
    for setting, clearing in (("revoke", "unrevoke"), ("block", "unblock")):
        if found(ops[setting], ops[clearing])[1].any():
            raise RevocationError(f"{KIND}: a key is in both {setting!r} and {clearing!r}")
    return ListDocument(kind, version, from_version, issued_at, expires, **ops)


def check_version(doc: ListDocument, installed: int) -> None:
    if doc.version <= installed:
        raise RollbackError(
            f"{KIND}: rollback/replay: list version {doc.version} <= installed {installed}"
        )
    if doc.type == "delta" and doc.from_version > installed:
        raise RevocationError(
            f"{KIND}: gap: delta from {doc.from_version} but installed {installed};"
            " fetch a snapshot"
        )


def verify(data: bytes, signers: Sequence[keys.PublicKey]) -> ListDocument:
    return parse(open_document(KIND, data, list(signers), error=RevocationError))
