"""Issuer side of revocation lists: build and sign snapshots and deltas.

The gate side (verification, the store and the scan path's index) is :mod:`agent.revocation`; this
module is used by `gate-agent revoke`, the demo and tests, and normally runs upstream.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent import keys, tickets
from agent.errors import IssuerError, TicketFormatError
from agent.fsutil import write_atomic, write_new
from agent.revocation import KEY_LEN, KIND, OPS
from agent.signed import sign_document
from agent.tickets import tk2


def revocation_key(item: str) -> bytes:
    """The 16-byte list key of ``item``: a ticket's text (a rotating ticket's code or its static
    part), or a token id as 32 hex digits.

    Raises IssuerError when it is neither; the message never repeats the text (it may be a ticket).
    """
    if len(item) == 2 * KEY_LEN and all(c in "0123456789abcdefABCDEF" for c in item):
        return bytes.fromhex(item)
    try:
        if item.startswith(tk2.STATIC_PREFIX):  # a rotating ticket's static part, as issued
            return tk2.revocation_key_of(tk2.static_bytes(item))
        return tickets.parse(item).revocation_key
    except TicketFormatError as exc:
        raise IssuerError(f"not a ticket text or a 32-hex token id: {exc}") from None


def _encode_keys(name: str, values: Iterable[bytes]) -> tuple[str, set[bytes]]:
    found: set[bytes] = set()
    for value in values:
        if not isinstance(value, bytes | bytearray) or len(value) != KEY_LEN:
            raise IssuerError(f"{name}: every key must be {KEY_LEN} bytes")
        found.add(bytes(value))
    return base64.b64encode(b"".join(sorted(found))).decode("ascii"), found


def _check_times(version: int, issued_at: int, expires: int) -> None:
    if version < 1 or issued_at < 0 or expires < issued_at:
        raise IssuerError(
            "need version >= 1 and 0 <= issued_at <= expires,"
            f" got {version}, {issued_at}, {expires}"
        )


def make_snapshot(
    *,
    version: int,
    issued_at: int,
    expires: int,
    revoke: Iterable[bytes] = (),
    block: Iterable[bytes] = (),
) -> dict[str, Any]:
    """Content of a snapshot document; raises IssuerError for bad versions, times or keys."""
    _check_times(version, issued_at, expires)
    return {
        "type": "snapshot",
        "version": version,
        "issued_at": issued_at,
        "expires": expires,
        "revoke": _encode_keys("revoke", revoke)[0],
        "block": _encode_keys("block", block)[0],
    }


def make_delta(
    *,
    from_version: int,
    version: int,
    issued_at: int,
    expires: int,
    revoke: Iterable[bytes] = (),
    unrevoke: Iterable[bytes] = (),
    block: Iterable[bytes] = (),
    unblock: Iterable[bytes] = (),
) -> dict[str, Any]:
    """Content of a delta document; raises IssuerError for bad versions, times or keys.

    A key may not be both set and cleared on one list in the same delta.
    """
    _check_times(version, issued_at, expires)
    if not 0 <= from_version < version:
        raise IssuerError(f"delta needs 0 <= from_version < version, got {from_version}, {version}")
    lists = (revoke, unrevoke, block, unblock)
    encoded = {name: _encode_keys(name, ops) for name, ops in zip(OPS, lists, strict=True)}
    for setting, clearing in (("revoke", "unrevoke"), ("block", "unblock")):
        if encoded[setting][1] & encoded[clearing][1]:
            raise IssuerError(f"a key is in both {setting!r} and {clearing!r}")
    content: dict[str, Any] = {"type": "delta", "version": version, "from_version": from_version}
    content |= {"issued_at": issued_at, "expires": expires}
    return content | {name: value[0] for name, value in encoded.items()}


def _read_issuer_version(state_path: Path) -> int:
    try:
        state = json.loads(state_path.read_bytes())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        raise IssuerError(f"{state_path}: cannot read issuer state: {exc}") from exc
    version = state.get("version") if isinstance(state, dict) else None
    if type(version) is not int or version < 0:
        raise IssuerError(f"{state_path}: issuer state needs a 'version' integer >= 0")
    return version


def issue_delta(
    list_key: keys.PrivateKey,
    state_path: Path,
    *,
    revoke: Iterable[bytes] = (),
    unrevoke: Iterable[bytes] = (),
    block: Iterable[bytes] = (),
    unblock: Iterable[bytes] = (),
    validity_s: int = 7 * 86400,
    now: int | None = None,
    out: Path | None = None,
) -> bytes:
    """Sign the next delta after the version in ``state_path`` (missing: 0) and return it.

    With ``out`` the delta is first written there (never replacing a file: an earlier delta
    overwritten would be a gap for every gate that missed it), and its version is recorded only
    then: a delta that could not be written uses up no version (the next one would otherwise
    start from a version no gate has, and every gate would refuse it and all after it). The new
    version goes into ``state_path`` atomically; when that fails, ``out`` is removed again. Only
    a crash (or power cut) between the two leaves ``out`` written and its version unrecorded:
    the next delta is then issued under the same version, and only one of the two may be
    published (gates take the first they see and refuse the other). Raises IssuerError for bad
    arguments, an ``out`` that exists or cannot be written, or an unreadable or unwritable state
    file.
    """
    if validity_s <= 0:
        raise IssuerError(f"validity_s must be positive, got {validity_s}")
    current = _read_issuer_version(state_path)
    issued_at = int(time.time()) if now is None else now
    content = make_delta(
        from_version=current,
        version=current + 1,
        issued_at=issued_at,
        expires=issued_at + validity_s,
        revoke=revoke,
        unrevoke=unrevoke,
        block=block,
        unblock=unblock,
    )
    envelope = sign_document(KIND, content, list_key)
    if out is not None:
        try:
            write_new(out, envelope)
        except FileExistsError:
            raise IssuerError(
                f"{out} exists: a revocation list is never replaced (gates that missed it"
                " would find a gap); give a new file name"
            ) from None
        except OSError as exc:
            raise IssuerError(f"{out}: cannot write: {exc.strerror or exc}") from None
    try:
        write_atomic(state_path, json.dumps({"version": current + 1}).encode() + b"\n")
    except OSError as exc:
        if out is not None:
            with contextlib.suppress(OSError):
                out.unlink()
        raise IssuerError(f"{state_path}: cannot write issuer state: {exc}") from exc
    return envelope
