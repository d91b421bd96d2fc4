"""pretix API bodies turned into gate-agent values: trust, list policy and the revocation index.

Pure functions over the JSON bodies pretix returns (the event, one check-in list, pages of
``revokedsecrets/`` and ``blockedsecrets/``), shared by ``gate-agent check --pretix-event`` and the
pretix upstream adapter. No I/O. Every malformed body raises ConfigError naming the field and what
was expected; nothing here ever sees a scanned text other than the secrets on those lists.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import replace
from typing import Any, TypeGuard

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from agent.errors import ConfigError
from agent.revocation import RevocationIndex, secret_keys
from agent.rules import EntryPolicy, GatePolicy
from agent.trust import IssuerKey, TrustBundle

__all__ = [
    "blocked_secrets",
    "event_keys",
    "index_from",
    "is_secret",
    "list_policy",
    "revoked_secrets",
    "trust_bundle",
]

log = logging.getLogger(__name__)

FORMAT = "pretix_sig1"
MAX_SECRET_LEN = 1024  # as a scanned pretix_sig1 text (agent.tickets.pretix_sig1.MAX_TEXT_LEN)
_SECRET = re.compile(rf"[\x21-\x7e]{{1,{MAX_SECRET_LEN}}}")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in obj:
        raise ConfigError(f"{where}: missing {name!r}")
    value = obj[name]
    # bool is an int subclass: an id of `true` is a malformed body, not the number 1.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{where}: {name!r} must be {_kind_text(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ConfigError(
            f"{where}: {name!r} must be {_kind_text(kind)}, got {type(value).__name__}"
        )
    return value


def _kind_text(kind: type | tuple[type, ...]) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def event_keys(event: dict[str, Any]) -> list[Ed25519PublicKey]:
    """The Ed25519 keys in an event body's ``valid_keys.pretix_sig1`` (each base64 of a PEM).

    Raises ConfigError when the body is not an event object, has no pretix_sig1 keys (its ticket
    secret generator is not pretix_sig1, so its tickets cannot be checked offline), or a key is
    not base64 of a PEM Ed25519 public key.
    """
    valid_keys = _field(_object(event, "pretix event"), "valid_keys", dict, "pretix event")
    where = "pretix event: valid_keys"
    encoded = _field(valid_keys, FORMAT, list, where) if FORMAT in valid_keys else []
    if not encoded:
        raise ConfigError(
            f"{where}: no {FORMAT} keys (the event's ticket secrets are not pretix_sig1-signed)"
        )
    return [_pem_key(value, f"{where}.{FORMAT}[{i}]") for i, value in enumerate(encoded)]


def _pem_key(value: Any, where: str) -> Ed25519PublicKey:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {type(value).__name__}")
    try:
        pem = base64.b64decode(value, validate=True)
        key = load_pem_public_key(pem)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ConfigError(f"{where} is not base64 of a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where} is a {type(key).__name__}, not an Ed25519 public key")
    return key


def trust_bundle(event: dict[str, Any]) -> TrustBundle:
    """A trust bundle holding the event's pretix_sig1 keys (raises ConfigError as event_keys).

    Version 0 and unsigned: it comes from the pretix server the gate is authenticated to (or
    from a file the operator chose), not from a root-signed document. Every key has kid ""
    (pretix_sig1 carries no key id, so a ticket is tried against each key), is active, has no
    validity bounds and no event scope. ``raw`` is the keys as canonical JSON, for comparison.
    """
    found = event_keys(event)
    raw = json.dumps({FORMAT: event["valid_keys"][FORMAT]}, sort_keys=True).encode()
    issuers = tuple(
        IssuerKey(
            kid="",
            alg="ed25519",
            public_key=key,
            formats=frozenset({FORMAT}),
            events=None,
            valid_from=None,
            valid_until=None,
            status="active",
        )
        for key in found
    )
    return TrustBundle(version=0, issued_at=0, issuers=issuers, list_signers=(), raw=raw)


def list_policy(checkin_list: dict[str, Any], base: GatePolicy) -> GatePolicy:
    """``base`` with a pretix check-in list's settings: products, date and entry policy.

    ``all_products`` false limits products to ``limit_products`` (ids as strings); ``subevent``
    binds the list to one date; ``allow_multiple_entries`` gives "unlimited", else
    ``allow_entry_after_exit`` gives "reentry", else "single". Custom check-in ``rules`` are not
    evaluated offline (a warning is logged). Raises ConfigError for a malformed list object.
    """
    where = "pretix check-in list"
    cl = _object(checkin_list, where)
    list_id = cl.get("id", "?")
    where = f"pretix check-in list {list_id}"
    products: frozenset[str] | None = None
    if not _field(cl, "all_products", bool, where):
        limit = _field(cl, "limit_products", list, where)
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in limit):
            raise ConfigError(f"{where}: 'limit_products' must be a list of product ids")
        products = frozenset(str(p) for p in limit)
    subevent = _field(cl, "subevent", (int, type(None)), where)
    entry: EntryPolicy = "single"
    if _field(cl, "allow_multiple_entries", bool, where):
        entry = "unlimited"
    elif _field(cl, "allow_entry_after_exit", bool, where):
        entry = "reentry"
    if cl.get("rules"):
        log.warning("%s has custom check-in rules; they are not evaluated offline", where)
    return replace(
        base,
        products=products,
        subevent=None if subevent is None else str(subevent),
        entry_policy=entry,
    )


def _results(page: dict[str, Any], where: str) -> list[dict[str, Any]]:
    rows = _field(_object(page, where), "results", list, where)
    return [_object(row, f"{where}: results[{i}]") for i, row in enumerate(rows)]


def is_secret(value: Any) -> TypeGuard[str]:
    """Whether a secret in pretix's answer is one a gate takes: printable ASCII without spaces,
    1 to :data:`MAX_SECRET_LEN` characters. Every pretix generator's secrets are; anything else
    is a hostile or broken answer (a lone surrogate would not even encode)."""
    return isinstance(value, str) and _SECRET.fullmatch(value) is not None


def _secret(row: dict[str, Any], where: str) -> str:
    secret = _field(row, "secret", str, where)
    if not is_secret(secret):
        raise ConfigError(
            f"{where}: 'secret' must be printable ASCII without spaces, 1 to {MAX_SECRET_LEN}"
            " characters"
        )
    return secret


def revoked_secrets(page: dict[str, Any]) -> list[str]:
    """The secrets on one ``revokedsecrets/`` page, in page order; ConfigError if malformed."""
    where = "pretix revokedsecrets page"
    return [_secret(row, f"{where}: results[{i}]") for i, row in enumerate(_results(page, where))]


def blocked_secrets(page: dict[str, Any]) -> list[tuple[str, bool]]:
    """``(secret, blocked)`` of one ``blockedsecrets/`` page, in page order.

    An unblocked secret stays on pretix's list with ``blocked`` false. Raises ConfigError if
    malformed.
    """
    where = "pretix blockedsecrets page"
    out = []
    for i, row in enumerate(_results(page, where)):
        at = f"{where}: results[{i}]"
        out.append((_secret(row, at), _field(row, "blocked", bool, at)))
    return out


def index_from(revoked: list[str], blocked: list[tuple[str, bool]]) -> RevocationIndex:
    """A revocation index of revoked secrets and currently blocked ones.

    For a secret listed more than once in ``blocked`` the last row wins (pages applied in
    order). Raises ConfigError when an entry is not a string (or a (string, bool) pair).
    """
    if not all(isinstance(s, str) for s in revoked):
        raise ConfigError("revoked secrets must be strings")
    state: dict[str, bool] = {}
    for entry in blocked:
        if not (
            isinstance(entry, tuple)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], bool)
        ):
            raise ConfigError("blocked secrets must be (secret, blocked) pairs")
        state[entry[0]] = entry[1]
    return RevocationIndex(
        secret_keys(revoked), secret_keys([s for s, is_blocked in state.items() if is_blocked])
    )
