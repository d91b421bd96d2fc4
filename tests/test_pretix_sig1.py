"""pretix_sig1 parsing (strict, against pretix's real secrets and our own) and agent.pretix_event."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import pretix_event, tickets
from agent.errors import ConfigError, TicketFormatError
from agent.model import Reason, Ticket
from agent.revocation import ListState, secret_key
from agent.rules import GatePolicy
from agent.tickets import pretix_sig1
from agent.trust import TrustBundle, verify

VECTORS = Path(__file__).resolve().parent / "vectors" / "pretix"
NOW = 1_795_435_200  # 2026-11-23T12:00:00Z, inside every case's `expect` range


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def _cases() -> list[dict[str, Any]]:
    return _load("tickets.json") if VECTORS.is_dir() else []


def _case(name: str) -> dict[str, Any]:
    return next(c for c in _cases() if c["name"] == name)


def _recorded(file: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = next(r for r in _load(file)["responses"] if r["name"] == name)[
        "response"
    ]["body"]
    return body


# --- our own pretix_sig1 secrets, so the decoder is tested beyond the server's values ---------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _payload(
    seed: str = "Ab3dEf6hJ",
    item: int = 201,
    variation: int = 0,
    subevent: int = 0,
    valid_from: int = 0,
    valid_until: int = 0,
) -> bytes:
    out = _key(1, 2) + _varint(len(seed.encode())) + seed.encode() if seed else b""
    for number, value in enumerate((item, variation, subevent, valid_from, valid_until), 2):
        if value:
            out += _key(number, 0) + _varint(value)
    return out


def _text(raw: bytes) -> str:
    return base64.b64encode(raw).decode()[::-1]


def _secret(payload: bytes, key: ed25519.Ed25519PrivateKey, *, sig_len: int = 64) -> str:
    sig = key.sign(payload)[:sig_len]
    return _text(struct.pack(">BHH", 1, len(payload), len(sig)) + payload + sig)


@pytest.fixture(scope="module")
def own_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _event_of(*public: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    pems = [
        base64.b64encode(
            k.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode()
        for k in public
    ]
    return {"slug": "test", "valid_keys": {"pretix_sig1": pems}}


def _signature_ok(ticket: Ticket, bundle: TrustBundle) -> bool:
    return verify(ticket, bundle, NOW).ok


# --- the real server's secrets -----------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in _cases() if c.get("decoded")], ids=lambda c: c["name"])
def test_well_formed_vectors_decode_to_the_servers_values(case: dict[str, Any]) -> None:
    t = tickets.parse(case["secret"])
    d = case["decoded"]
    assert t.fmt == "pretix_sig1" and t.kid == "" and t.event == ""
    assert t.product == str(d["item"])
    assert t.subevent == (str(d["subevent"]) if d["subevent"] else None)
    assert t.not_before == (d["validFromUnixTime"] or None)
    assert t.not_after == (d["validUntilUnixTime"] or None)
    assert dict(t.fields)["variation"] == (str(d["variation"]) if d["variation"] else "-")
    assert dict(t.fields)["seed"] == f"{len(d['seed'])} characters"
    assert t.revocation_key == secret_key(case["secret"])
    assert t.ticket_ref == "pretix:" + case["secret"]
    bundle = pretix_event.trust_bundle(_load("event.json"))
    assert _signature_ok(t, bundle) is case["signature_valid"]


@pytest.mark.parametrize(
    "case", [c for c in _cases() if c["expect"] == "invalid_format"], ids=lambda c: c["name"]
)
def test_malformed_vectors_raise_only_ticket_format_error(case: dict[str, Any]) -> None:
    with pytest.raises(TicketFormatError):
        tickets.parse(case["secret"])
    if len(case["secret"]) <= pretix_sig1.MAX_TEXT_LEN:
        with pytest.raises(TicketFormatError):
            pretix_sig1.parse(case["secret"])


def _lenient_signature_ok(text: str, key: ed25519.Ed25519PublicKey) -> bool:
    """What pretix's own _parse() does: non-validating base64, bytes after the signature ignored."""
    raw = base64.b64decode(text[::-1].encode())  # lenient on purpose, as pretix is
    payload_len, sig_len = struct.unpack(">HH", raw[1:5])
    payload = raw[5 : 5 + payload_len]
    try:
        key.verify(raw[5 + payload_len : 5 + payload_len + sig_len], payload)
    except InvalidSignature:
        return False
    return True


@pytest.mark.parametrize(
    "case", [c for c in _cases() if c.get("lenient_parser_accepts")], ids=lambda c: c["name"]
)
def test_texts_a_lenient_parser_accepts_are_refused(case: dict[str, Any]) -> None:
    (key,) = pretix_event.event_keys(_load("event.json"))
    assert _lenient_signature_ok(case["secret"], key)  # the danger is real for this text
    with pytest.raises(TicketFormatError):
        tickets.parse(case["secret"])


def test_revoked_secret_respelled_is_refused_not_admitted() -> None:
    # The attack the strict parser exists for: a revoked ticket, re-spelled so it is off the list.
    revoked = pretix_event.revoked_secrets(_recorded("revoked_secrets.json", "revoked_full_2"))
    index = pretix_event.index_from(revoked, [])
    original = _case(_case("noncanonical_base64_of_revoked")["tampered_from"])["secret"]
    assert index.status(tickets.parse(original).revocation_key) is ListState.REVOKED
    with pytest.raises(TicketFormatError, match="canonical"):
        tickets.parse(_case("noncanonical_base64_of_revoked")["secret"])


def test_messages_name_the_defect() -> None:
    expected = {
        "extra_trailing_byte": "trailing bytes",
        "truncated_raw_one_byte": "truncated",
        "wrong_version_byte": "unsupported version 2",
        "header_signature_length_63": "signature length 63",
        "padding_removed": "multiple of 4",
        "noncanonical_base64_of_revoked": "canonical",
    }
    for name, words in expected.items():
        with pytest.raises(TicketFormatError, match=words):
            tickets.parse(_case(name)["secret"])
    for name in ("urlsafe_alphabet", "whitespace_inserted", "plus_as_space"):
        with pytest.raises(TicketFormatError, match="unexpected character"):
            pretix_sig1.parse(_case(name)["secret"])


def test_seed_is_never_shown(own_key: ed25519.Ed25519PrivateKey) -> None:
    t = pretix_sig1.parse(_secret(_payload(seed="SeCrEtSeEd"), own_key))
    assert "SeCrEtSeEd" not in repr(t.fields) and dict(t.fields)["seed"] == "10 characters"
    assert "SeCrEtSeEd" not in repr(t)


# --- the decoder, with payloads we sign ourselves --------------------------------------------


def test_round_trip_with_large_ids_and_times_beyond_2038(
    own_key: ed25519.Ed25519PrivateKey,
) -> None:
    payload = _payload(
        item=2**40 + 3, variation=70_000, subevent=2**31, valid_from=4_086_547_200,
        valid_until=253_402_300_799,
    )  # fmt: skip
    t = pretix_sig1.parse(_secret(payload, own_key))
    assert (t.product, t.subevent) == (str(2**40 + 3), str(2**31))
    assert (t.not_before, t.not_after) == (4_086_547_200, 253_402_300_799)
    assert dict(t.fields)["valid_until"] == "9999-12-31T23:59:59Z"
    assert t.signed_data == payload
    bundle = pretix_event.trust_bundle(_event_of(own_key.public_key()))
    assert _signature_ok(t, bundle)


def test_absent_fields_mean_none(own_key: ed25519.Ed25519PrivateKey) -> None:
    t = pretix_sig1.parse(_secret(_payload(seed="", item=0), own_key))
    assert t.product == "0" and t.subevent is None
    assert t.not_before is None and t.not_after is None


def test_explicit_zero_is_absent(own_key: ed25519.Ed25519PrivateKey) -> None:
    # proto3 `optional` fields may be sent as an explicit 0; pretix means "unbounded" by it.
    payload = _payload() + _key(5, 0) + _varint(0) + _key(4, 0) + _varint(0)
    t = pretix_sig1.parse(_secret(payload, own_key))
    assert t.not_before is None and t.subevent is None


REFUSED_PAYLOADS = [
    (_payload() + _key(7, 0) + _varint(1), "unknown protobuf field 7"),
    (_payload() + _key(0, 0) + _varint(1), "unknown protobuf field 0"),
    (_payload(item=201) + _key(2, 0) + _varint(203), "item is repeated"),
    (_key(2, 2) + _varint(1) + b"x", "wire type 2"),
    (_key(1, 0) + _varint(5), "wire type 0"),
    (_key(2, 0) + b"\xc9\x81\x00", "overlong"),
    (_key(2, 0) + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (_key(2, 0) + b"\xff" * 9 + b"\x7f", "exceeds 64 bits"),
    (_key(2, 0) + _varint(2**64 - 1), "negative"),
    (_key(2, 0) + b"\xc9", "truncated protobuf varint"),
    (_key(1, 2) + _varint(20) + b"short", "runs past the end"),
    (_key(1, 2) + _varint(2) + b"\xff\xfe", "not UTF-8"),
    (_key(6, 0) + _varint(253_402_300_800), "beyond year 9999"),
]


@pytest.mark.parametrize(
    ("payload", "words"), REFUSED_PAYLOADS, ids=[w for _, w in REFUSED_PAYLOADS]
)
def test_decoder_refuses_what_pretix_never_writes(
    payload: bytes, words: str, own_key: ed25519.Ed25519PrivateKey
) -> None:
    # Validly signed: the refusal is the decoder's, not a signature failure.
    with pytest.raises(TicketFormatError, match=words):
        pretix_sig1.parse(_secret(payload, own_key))


def test_length_cap_before_decoding() -> None:
    too_long = "A" * (pretix_sig1.MAX_TEXT_LEN + 1)
    with pytest.raises(TicketFormatError, match="cap"):
        pretix_sig1.parse(too_long)
    # The registry's shape test stops at the same cap and at the shortest possible secret.
    with pytest.raises(TicketFormatError, match="unrecognised"):
        tickets.parse(too_long)
    with pytest.raises(TicketFormatError, match="unrecognised"):
        tickets.parse("A" * (pretix_sig1.MIN_TEXT_LEN - 1))
    with pytest.raises(TicketFormatError, match="pretix_sig1"):
        tickets.parse("A" * pretix_sig1.MIN_TEXT_LEN)


def test_signature_length_other_than_64_refused(own_key: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(TicketFormatError, match="signature length 63"):
        pretix_sig1.parse(_secret(_payload(), own_key, sig_len=63))


def test_tk1_still_selected_by_prefix() -> None:
    with pytest.raises(TicketFormatError, match="TK1"):
        tickets.parse("TK1:" + "A" * 100)


# --- fuzz: nothing but TicketFormatError, nothing admitted -------------------------------------


_FUZZ_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
_FUZZ_BUNDLE = pretix_event.trust_bundle(_event_of(_FUZZ_KEY.public_key()))
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@given(st.text(max_size=1200) | st.text(alphabet=_B64, min_size=88, max_size=200))
@settings(max_examples=600, deadline=None)
def test_fuzz_any_text(text: str) -> None:
    try:
        ticket = tickets.parse(text)
    except TicketFormatError:
        return
    assert not _signature_ok(ticket, _FUZZ_BUNDLE)


@given(st.binary(max_size=300))
@settings(max_examples=400, deadline=None)
def test_fuzz_any_bytes_as_a_secret(raw: bytes) -> None:
    with contextlib.suppress(TicketFormatError):
        pretix_sig1.parse(_text(raw))


@given(st.binary(max_size=120))
@settings(max_examples=400, deadline=None)
def test_fuzz_any_payload_signed(payload: bytes) -> None:
    # Validly signed garbage reaches the protobuf decoder: only TicketFormatError may come out.
    with contextlib.suppress(TicketFormatError):
        pretix_sig1.parse(_secret(payload, _FUZZ_KEY))


@given(data=st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_real_secrets_are_never_admitted(data: st.DataObject) -> None:
    bundle = pretix_event.trust_bundle(_load("event.json"))
    good = [c["secret"] for c in _cases() if c["signature_valid"]]
    original = data.draw(st.sampled_from(good))
    raw = bytearray(base64.b64decode(original[::-1]))
    how = data.draw(st.sampled_from(["flip", "insert", "delete", "text"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
        text = _text(bytes(raw))
    elif how == "insert":
        i = data.draw(st.integers(0, len(raw)))
        text = _text(bytes(raw[:i]) + data.draw(st.binary(min_size=1, max_size=4)) + raw[i:])
    elif how == "delete":
        i = data.draw(st.integers(0, len(raw) - 1))
        text = _text(bytes(raw[:i] + raw[i + 1 :]))
    else:
        i = data.draw(st.integers(0, len(original) - 1))
        text = original[:i] + data.draw(st.characters()) + original[i + 1 :]
    if text == original:
        return
    try:
        ticket = tickets.parse(text)
    except TicketFormatError:
        return
    assert not _signature_ok(ticket, bundle)


# --- agent.pretix_event --------------------------------------------------------------------


def test_event_keys_and_bundle_from_the_real_event() -> None:
    event = _load("event.json")
    (key,) = pretix_event.event_keys(event)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    # The README's decoded PEM: MCowBQYDK2VwAyEADg4DMqF8... is the SPKI of this raw key.
    assert base64.b64encode(raw).decode().startswith("Dg4DMqF8hlYGaQhU")
    bundle = pretix_event.trust_bundle(event)
    (issuer,) = bundle.issuers
    assert (bundle.version, issuer.kid, issuer.alg, issuer.status) == (0, "", "ed25519", "active")
    assert issuer.formats == frozenset({"pretix_sig1"}) and issuer.events is None


def test_any_of_several_keys_verifies(own_key: ed25519.Ed25519PrivateKey) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    bundle = pretix_event.trust_bundle(_event_of(other.public_key(), own_key.public_key()))
    assert _signature_ok(pretix_sig1.parse(_secret(_payload(), own_key)), bundle)
    only_other = pretix_event.trust_bundle(_event_of(other.public_key()))
    check = verify(pretix_sig1.parse(_secret(_payload(), own_key)), only_other, NOW)
    assert check.reason is Reason.BAD_SIGNATURE


def _p256_pem() -> str:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(pem).decode()


@pytest.mark.parametrize(
    ("event", "words"),
    [
        ([], "must be a JSON object"),
        ({}, "missing 'valid_keys'"),
        ({"valid_keys": []}, "'valid_keys' must be an object"),
        ({"valid_keys": {}}, "no pretix_sig1 keys"),
        ({"valid_keys": {"pretix_sig1": []}}, "no pretix_sig1 keys"),
        ({"valid_keys": {"pretix_sig1": "abc"}}, "must be a list"),
        ({"valid_keys": {"pretix_sig1": [5]}}, r"pretix_sig1\[0\] must be a string"),
        ({"valid_keys": {"pretix_sig1": ["not base64!"]}}, "not base64 of a PEM"),
        ({"valid_keys": {"pretix_sig1": ["aGVsbG8="]}}, "not base64 of a PEM"),
        ({"valid_keys": {"pretix_sig1": [_p256_pem()]}}, "not an Ed25519"),
    ],
)
def test_event_keys_refuses_malformed_events(event: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        pretix_event.trust_bundle(event)


BASE = GatePolicy(gate_name="g", events=None, validity_skew_s=0)


def test_list_policy_from_the_real_lists() -> None:
    lists = {cl["id"]: cl for cl in _load("checkin_lists.json")["results"]}
    main, vip, day1 = (pretix_event.list_policy(lists[i], BASE) for i in (11, 13, 12))
    assert (main.products, main.subevent, main.entry_policy) == (None, None, "reentry")
    assert (vip.products, vip.subevent) == (frozenset({"203"}), None)
    assert (day1.products, day1.subevent) == (None, "40001")
    assert main.gate_name == "g" and main.validity_skew_s == 0  # the rest comes from base


def _list(**changes: Any) -> dict[str, Any]:
    base = {
        "id": 11, "all_products": True, "limit_products": [], "subevent": None,
        "allow_multiple_entries": False, "allow_entry_after_exit": False, "rules": {},
    }  # fmt: skip
    return {**base, **changes}


def test_list_policy_entry_modes() -> None:
    assert pretix_event.list_policy(_list(), BASE).entry_policy == "single"
    assert pretix_event.list_policy(_list(allow_entry_after_exit=True), BASE).entry_policy == (
        "reentry"
    )
    both = _list(allow_multiple_entries=True, allow_entry_after_exit=True)
    assert pretix_event.list_policy(both, BASE).entry_policy == "unlimited"
    empty = pretix_event.list_policy(_list(all_products=False), BASE)
    assert empty.products == frozenset()  # pretix: a list limited to no product admits none
    widened = pretix_event.list_policy(_list(), replace(BASE, products=frozenset({"1"})))
    assert widened.products is None


def test_list_policy_warns_about_custom_rules(caplog: pytest.LogCaptureFixture) -> None:
    pretix_event.list_policy(_list(rules={"and": [True]}), BASE)
    assert "custom check-in rules" in caplog.text


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"all_products": "no"}, "'all_products' must be a boolean"),
        ({"all_products": False, "limit_products": None}, "'limit_products' must be a list"),
        ({"all_products": False, "limit_products": ["203"]}, "list of product ids"),
        ({"all_products": False, "limit_products": [True]}, "list of product ids"),
        ({"subevent": "40001"}, "'subevent' must be an integer or null"),
        ({"subevent": True}, "got a boolean"),
        ({"allow_multiple_entries": 1}, "'allow_multiple_entries' must be a boolean"),
    ],
)
def test_list_policy_refuses_malformed_lists(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        pretix_event.list_policy(_list(**changes), BASE)
    missing = _list()
    del missing["allow_entry_after_exit"]
    with pytest.raises(ConfigError, match="missing 'allow_entry_after_exit'"):
        pretix_event.list_policy(missing, BASE)
    with pytest.raises(ConfigError, match="JSON object"):
        pretix_event.list_policy([_list()], BASE)  # type: ignore[arg-type]


def test_revoked_and_blocked_pages_build_the_index() -> None:
    revoked = pretix_event.revoked_secrets(_recorded("revoked_secrets.json", "revoked_full_2"))
    blocked = pretix_event.blocked_secrets(_recorded("blocked_secrets.json", "blocked_full_2"))
    assert len(revoked) == 4 and [b for _, b in blocked] == [False, True]
    index = pretix_event.index_from(revoked, blocked)
    state = {
        name: index.status(secret_key(_case(name)["secret"]))
        for name in ("revoked_order_canceled", "blocked_ticket", "unblocked_ticket")
    }
    assert state == {
        "revoked_order_canceled": ListState.REVOKED,
        "blocked_ticket": ListState.BLOCKED,
        "unblocked_ticket": ListState.NONE,  # stays on pretix's list with "blocked": false
    }
    assert index.status(secret_key(_case("valid_standard_1")["secret"])) is ListState.NONE


def test_index_from_last_blocked_row_wins_and_duplicates_are_fine() -> None:
    index = pretix_event.index_from(
        ["a", "a"], [("b", True), ("b", False), ("c", False), ("c", True)]
    )
    assert index.status(secret_key("a")) is ListState.REVOKED
    assert index.status(secret_key("b")) is ListState.NONE
    assert index.status(secret_key("c")) is ListState.BLOCKED
    assert len(pretix_event.index_from([], [])) == 0


@pytest.mark.parametrize(
    ("page", "words"),
    [
        ([], "must be a JSON object"),
        ({"count": 0}, "missing 'results'"),
        ({"results": {}}, "'results' must be a list"),
        ({"results": ["x"]}, r"results\[0\] must be a JSON object"),
        ({"results": [{"id": 1}]}, r"results\[0\]: missing 'secret'"),
        ({"results": [{"secret": 5, "blocked": True}]}, "'secret' must be a string"),
    ],
)
def test_pages_refuse_malformed_bodies(page: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        pretix_event.revoked_secrets(page)
    with pytest.raises(ConfigError, match=words):
        pretix_event.blocked_secrets(page)


def test_blocked_page_needs_a_boolean_blocked() -> None:
    with pytest.raises(ConfigError, match="'blocked' must be a boolean"):
        pretix_event.blocked_secrets({"results": [{"secret": "x", "blocked": "true"}]})
    with pytest.raises(ConfigError, match="pairs"):
        pretix_event.index_from([], [("x", 1)])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="strings"):
        pretix_event.index_from([b"x"], [])  # type: ignore[list-item]
