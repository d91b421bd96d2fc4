"""The hub's fast upload reader (sync.protocol_batch) against the hand-written one: the same
batches taken with the same values, every malformed body refused with the same error naming the
field, and the fast path really taken for a well-formed batch."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.redact import SECRET_REF_PREFIX
from sync import protocol, protocol_batch
from sync.protocol import MAX_BATCH, BatchUpload, EntryWire, ProtocolError
from tests.bench.bench_hub import workload

GATE, ROWS = workload(2000)[0]
BODY = json.loads(protocol.encode(BatchUpload(GATE, tuple(ROWS[:3]))))
ANNUL_ID = "0190a4c2-0000-7000-8000-000000000001"


def _body(entry: dict[str, Any] | None = None, drop: tuple[str, ...] = (), **top: Any) -> bytes:
    obj = json.loads(json.dumps(BODY))
    first = obj["entries"][0]
    first.update(entry or {})
    for key in drop:
        first.pop(key)
    obj.update(top)
    return json.dumps(obj).encode()


def _outcome(read: Any, body: bytes) -> BatchUpload | str:
    try:
        return read(body)  # type: ignore[no-any-return]
    except ProtocolError as exc:
        return f"ProtocolError: {exc}"


def _slow(body: bytes) -> BatchUpload:
    return protocol.parse(body, BatchUpload)


def test_a_well_formed_batch_takes_the_fast_path_with_the_same_values() -> None:
    body = protocol.encode(BatchUpload(GATE, tuple(ROWS[:MAX_BATCH])))
    fast = protocol_batch._fast(body)
    assert fast is not None and fast == _slow(body) == protocol_batch.parse_batch(body)
    assert fast.entries == tuple(ROWS[:MAX_BATCH])


CASES: dict[str, tuple[bytes, str]] = {
    "non-JSON": (b'{"v": 1, "entries": [', "body is not valid JSON"),
    "not UTF-8": (b'{"v": 1, "gate_id": "\xff"}', "body is not valid JSON"),
    "not an object": (b"[1, 2]", "body: expected a JSON object"),
    "NaN": (_body({"wall_time": float("nan")}), "entries[0].wall_time"),
    "null version": (_body(v=None), "v: expected the integer 1"),
    "string version": (_body(v="1"), "v: expected the integer 1"),
    "no version": (json.dumps({k: v for k, v in BODY.items() if k != "v"}).encode(), "v: missing"),
    "version 2": (_body(v=2), "v: unsupported"),
    "a denied exit": (_body({"kind": "exit", "verdict": "deny"}), "entries[0].verdict: an exit"),
    "an annulment admitted": (
        _body({"kind": "annul", "annuls": str(uuid.uuid4())}),
        "entries[0].verdict: an annul row",
    ),
    "bad gate_id": (_body(gate_id="a/b"), "gate_id"),
    "too many entries": (
        json.dumps({**BODY, "entries": BODY["entries"] * 167}).encode(),
        "entries: expected a list of at most 500",
    ),
    "no entries": (_body(entries=[]), "entries: expected 1..500"),
    "entries not a list": (_body(entries={"a": 1}), "entries: expected a list"),
    "entry not an object": (_body(entries=[1]), "entries[0]: expected a JSON object"),
    "string for int": (_body({"gate_seq": "1"}), "entries[0].gate_seq"),
    "float for int": (_body({"hlc": 1.5}), "entries[0].hlc"),
    "bool for int": (_body({"mono_ns": True}), "entries[0].mono_ns"),
    "int over 63 bits": (_body({"rev_version": 1 << 63}), "entries[0].rev_version"),
    "gate_seq 0": (_body({"gate_seq": 0}), "entries[0].gate_seq"),
    "bool as number": (_body({"wall_time": True}), "entries[0].wall_time"),
    "negative wall time": (_body({"wall_time": -1}), "entries[0].wall_time"),
    "int for bool": (_body({"offline": 1}), "entries[0].offline"),
    "long lane": (_body({"lane": "x" * 65}), "entries[0].lane"),
    "empty lane": (_body({"lane": ""}), "entries[0].lane"),
    "long ticket_ref": (_body({"ticket_ref": "x" * 513}), "entries[0].ticket_ref"),
    "long detail": (_body({"detail": "x" * 257}), "entries[0].detail"),
    "long boot_id": (_body({"boot_id": "x" * 65}), "entries[0].boot_id"),
    "control character": (_body({"detail": "a\x00b"}), "entries[0].detail: control"),
    "pretix secret": (
        _body({"ticket_ref": SECRET_REF_PREFIX + "abc"}),
        "entries[0].ticket_ref: a pretix secret",
    ),
    # 512 emoji: under the length cap, but 6 kB in the feed's JSON (see sync.protocol.FeedPage)
    "non-ASCII ticket_ref": (
        _body({"ticket_ref": "\U0001f600" * 512}),
        "entries[0].ticket_ref: expected ASCII",
    ),
    "bad entry_id": (_body({"entry_id": "NOT-A-UUID"}), "entries[0].entry_id"),
    "upper-case entry_id": (
        _body({"entry_id": ROWS[0].entry_id.upper()}),
        "entries[0].entry_id",
    ),
    "entry_id with a newline": (
        _body({"entry_id": ROWS[0].entry_id + "\n"}),
        "entries[0].entry_id",
    ),
    "bad gate_id in entry": (_body({"gate_id": ""}), "entries[0].gate_id"),
    "unknown kind": (_body({"kind": "visit"}), "entries[0].kind"),
    "unknown verdict": (_body({"verdict": "maybe"}), "entries[0].verdict"),
    "unknown reason": (_body({"reason": "because"}), "entries[0].reason"),
    "unknown flag": (_body({"flags": ["lucky"]}), "entries[0].flags"),
    "too many flags": (_body({"flags": ["offline"] * 5}), "entries[0].flags"),
    "annuls on an entry": (_body({"annuls": ANNUL_ID}), "entries[0].annuls"),
    "annul without annuls": (_body({"kind": "annul"}), "entries[0].annuls"),
    "bad annuls": (_body({"kind": "annul", "annuls": "x"}), "entries[0].annuls"),
    "zone out of range": (_body({"zone": 70000}), "entries[0].zone"),
    "zone 0": (_body({"zone": 0}), "entries[0].zone"),
    "zone 17": (_body({"zone": 17}), "entries[0].zone"),
    "zone a bool": (_body({"zone": False}), "entries[0].zone"),
    "rev_key not hex": (_body({"rev_key": "z" * 32}), "entries[0].rev_key"),
    "rev_key too long": (_body({"rev_key": "a" * 33}), "entries[0].rev_key"),
    "rev_key upper case": (_body({"rev_key": "A" * 32}), "entries[0].rev_key"),
    "another gate's entry": (_body({"gate_id": "gate-other"}), "entries[0].gate_id"),
    "not ascending": (_body({"gate_seq": 10**9}), "entries[1].gate_seq"),
}
OPTIONAL = ("annuls", "zone", "rev_key")
REQUIRED = [f for f in BODY["entries"][0] if f not in OPTIONAL]


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_body_gets_the_same_error_naming_the_field(case: str) -> None:
    data, words = CASES[case]
    with pytest.raises(ProtocolError) as fast:
        protocol_batch.parse_batch(data)
    assert str(fast.value).startswith(words), (case, str(fast.value))
    assert _outcome(_slow, data) == f"ProtocolError: {fast.value}", case


@pytest.mark.parametrize("field", REQUIRED)
def test_a_missing_field_is_named(field: str) -> None:
    data = _body(drop=(field,))
    with pytest.raises(ProtocolError, match=rf"^entries\[0\]\.{field}: missing$"):
        protocol_batch.parse_batch(data)


def test_unknown_fields_are_ignored_on_the_fast_path() -> None:
    data = _body({"new_field": [1, {"x": None}]}, extension={"x": 1})
    fast = protocol_batch._fast(data)
    assert fast is not None and fast == _slow(data)
    assert fast.entries[0] == ROWS[0]


def test_optional_fields_may_be_missing_or_null() -> None:
    for data in (_body(drop=OPTIONAL), _body(dict.fromkeys(OPTIONAL))):
        fast = protocol_batch._fast(data)
        assert fast is not None and fast == _slow(data)
        assert fast.entries[0].zone is None and fast.entries[0].annuls is None
        assert fast.entries[0].rev_key is None


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False)
    | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from([*BODY["entries"][0], "v", "gate_id", "entries", "extra"]),
    value=JSON | st.sampled_from(["", "x" * 64, "x" * 65, ROWS[1].entry_id, "offline", 1]),
)
def test_fast_and_hand_written_readers_agree(field: str, value: Any) -> None:
    top = field in ("v", "gate_id", "entries", "extra")
    data = _body(**{field: value}) if top else _body({field: value})
    fast = _outcome(protocol_batch.parse_batch, data)
    assert fast == _outcome(_slow, data)
    if isinstance(fast, BatchUpload):
        assert all(type(e) is EntryWire for e in fast.entries)
