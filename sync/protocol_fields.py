"""Field readers of the wire protocol (:mod:`sync.protocol`): each takes a decoded JSON object,
a key and the ``where`` prefix of the object (``entries[3].``), returns the typed value and raises
:class:`ProtocolError` naming the field (``entries[3].gate_seq: expected an integer >= 1``) and
what was expected, which the hub answers with a 400.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, cast, get_args

from agent.errors import AgentError
from agent.journal import KINDS, Kind

PROTOCOL_VERSION = 1
MAX_BATCH = 500
MAX_PAGE = 500
MAX_SET_APART_PAGE = 5000  # entry ids of a set-apart page (about 200 kB)
MAX_BODY_BYTES = 2 << 20  # a full batch of 500 entries is about 300 kB
MAX_WAIT_S = 30.0
MAX_ID = 64
MAX_TICKET_REF = 512
MAX_DETAIL = 256
MAX_ZONE = 16  # a gate's zone is 1..16 (its config); anything else is not a gate's upload
MAX_DOCUMENT_CHARS = 1 << 20  # one signed delta inside a page


AlertKind = Literal["double_admission", "repeated_denials", "integrity", "alert_storm"]
ALERT_KINDS: frozenset[str] = frozenset(get_args(AlertKind))
EntryStatus = Literal["inserted", "duplicate"]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
REV_KEY = re.compile(r"[0-9a-f]{32}")  # a ticket's 16-byte revocation key, lowercase hex
INT63 = (1 << 63) - 1
WALL_MAX = 1e11  # seconds since 1970: year ~5138; anything larger is garbage


class ProtocolError(AgentError, ValueError):
    """A message that does not follow the protocol; the text names the field and what was expected."""


def is_id(value: str) -> bool:
    """True for a valid gate or venue id: 1-64 of letters, digits and ``._:-``, no slash."""
    return _ID.fullmatch(value) is not None


# --- field readers: each raises ProtocolError naming ``where.key`` ------------------------------


def get(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise ProtocolError(f"{where}{key}: missing")
    return obj[key]


def integer(obj: Mapping[str, Any], key: str, where: str, lo: int = 0, hi: int = INT63) -> int:
    value = get(obj, key, where)
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolError(f"{where}{key}: expected an integer {lo}..{hi}")
    return value


def number(
    obj: Mapping[str, Any], key: str, where: str, lo: float = 0.0, hi: float = WALL_MAX
) -> float:
    value = get(obj, key, where)
    if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
        raise ProtocolError(f"{where}{key}: expected a number {lo:g}..{hi:g}")
    return float(value)


def opt_number(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    if obj.get(key) is None:
        return None
    return number(obj, key, where, hi=WALL_MAX)


def boolean(obj: Mapping[str, Any], key: str, where: str) -> bool:
    value = get(obj, key, where)
    if type(value) is not bool:
        raise ProtocolError(f"{where}{key}: expected true or false")
    return value


def text(obj: Mapping[str, Any], key: str, where: str, max_len: int, *, empty: bool = True) -> str:
    value = get(obj, key, where)
    if not isinstance(value, str) or len(value) > max_len or (not empty and not value):
        what = "a string" if empty else "a non-empty string"
        raise ProtocolError(f"{where}{key}: expected {what} of at most {max_len} characters")
    if not value.isprintable():
        raise ProtocolError(f"{where}{key}: control characters are not allowed")
    return value


def ident(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = get(obj, key, where)
    if not isinstance(value, str) or not is_id(value):
        raise ProtocolError(f"{where}{key}: expected an id of 1-64 letters, digits or ._:-")
    return value


def uuid(obj: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> str | None:
    value = obj.get(key) if optional else get(obj, key, where)
    if value is None and optional:
        return None
    if not isinstance(value, str) or UUID.fullmatch(value) is None:
        raise ProtocolError(f"{where}{key}: expected a lowercase UUID")
    return value


def rev_key(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    """An optional revocation key (absent or null: None; gates before it never send one)."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or REV_KEY.fullmatch(value) is None:
        raise ProtocolError(f"{where}{key}: expected null or 32 lowercase hex digits")
    return value


_E = TypeVar("_E", bound=str)


def choice(obj: Mapping[str, Any], key: str, where: str, allowed: Callable[[str], _E]) -> _E:
    value = get(obj, key, where)
    if not isinstance(value, str):
        raise ProtocolError(f"{where}{key}: expected a string")
    try:
        return allowed(value)
    except ValueError:
        raise ProtocolError(f"{where}{key}: unknown value {value[:32]!r}") from None


def kind(value: str) -> Kind:
    if value not in KINDS:
        raise ValueError(value)
    return cast(Kind, value)


def array(obj: Mapping[str, Any], key: str, where: str, max_len: int) -> list[Any]:
    value = get(obj, key, where)
    if not isinstance(value, list) or len(value) > max_len:
        raise ProtocolError(f"{where}{key}: expected a list of at most {max_len} items")
    return value


def json_object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where or 'body'}: expected a JSON object")
    return cast(Mapping[str, Any], value)


def objects(
    obj: Mapping[str, Any], key: str, where: str, max_len: int
) -> list[tuple[str, Mapping[str, Any]]]:
    """The objects of list ``key`` with their ``where`` prefixes (``entries[3].``)."""
    out = []
    for i, item in enumerate(array(obj, key, where, max_len)):
        at = f"{where}{key}[{i}]"
        out.append((at + ".", json_object(item, at)))
    return out
