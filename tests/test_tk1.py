"""TK1 format and the ticket format registry (agent.tickets.parse)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent import keys, tickets
from agent.errors import TicketFormatError
from agent.model import Ticket
from agent.tickets import base45, tk1

ED_KEY = keys.generate("ed25519")
ED_PUB = ED_KEY.public_key()

FIELDS = tk1.TK1Fields(
    kid=0xDEADBEEF,
    token_id=bytes(range(16)),
    ticket_id=bytes.fromhex("a1a2a3a4a5a6a7a8"),
    event_id=7,
    zones=0b11,
    not_before=1_750_000_000,
    not_after=1_750_100_000,
)
# The same fields laid out by hand, big-endian, as DESIGN.md specifies them.
EXPECTED_UNSIGNED = bytes.fromhex(
    "01"  # ver
    "00"  # flags
    "deadbeef"  # kid
    "000102030405060708090a0b0c0d0e0f"  # token_id
    "a1a2a3a4a5a6a7a8"  # ticket_id
    "00000007"  # event_id
    "0003"  # zones
    "684ee180"  # not_before 2025-06-15T15:06:40Z
    "68506820"  # not_after 2025-06-16T18:53:20Z
)
VALID = tk1.sign(FIELDS, ED_KEY)
VALID_BODY = base45.decode(VALID[len(tk1.PREFIX) :])
ORIGINAL = tickets.parse(VALID)


def _text(body: bytes) -> str:
    return tk1.PREFIX + base45.encode(body)


def _with(**changes: int) -> tk1.TK1Fields:
    values = {
        "kid": FIELDS.kid,
        "token_id": FIELDS.token_id,
        "ticket_id": FIELDS.ticket_id,
        "event_id": FIELDS.event_id,
        "zones": FIELDS.zones,
        "not_before": FIELDS.not_before,
        "not_after": FIELDS.not_after,
        "flags": FIELDS.flags,
    }
    values.update(changes)
    return tk1.TK1Fields(**values)  # type: ignore[arg-type]


# --- layout and round trip -------------------------------------------------------------------


def test_constants_match_the_design() -> None:
    assert tk1.BODY_LEN == 108
    assert tk1.TEXT_LEN == 166
    assert tk1.DOMAIN_TAG == b"gate-agent/TK1/static\0"
    assert len(VALID) == tk1.TEXT_LEN
    assert VALID.startswith("TK1:")


def test_unsigned_body_layout_is_exact() -> None:
    assert tk1.unsigned_body(FIELDS) == EXPECTED_UNSIGNED
    assert tk1.signed_message(EXPECTED_UNSIGNED) == b"gate-agent/TK1/static\0" + EXPECTED_UNSIGNED


def test_encode_places_signature_after_body() -> None:
    sig = bytes(range(64))
    text = tk1.encode(FIELDS, sig)
    assert base45.decode(text[4:]) == EXPECTED_UNSIGNED + sig


def test_parse_maps_every_field() -> None:
    sig = bytes(range(100, 164))
    ticket = tk1.parse(tk1.encode(FIELDS, sig))
    assert ticket == Ticket(
        fmt="tk1",
        kid="3735928559",
        revocation_key=bytes(range(16)),
        ticket_ref="tk1:a1a2a3a4a5a6a7a8",
        event="7",
        signed_data=b"gate-agent/TK1/static\0" + EXPECTED_UNSIGNED,
        signature=sig,
        zones=3,
        product=None,
        not_before=1_750_000_000,
        not_after=1_750_100_000,
        fields=(
            ("kid", "3735928559"),
            ("token_id", "000102030405060708090a0b0c0d0e0f"),
            ("ticket_id", "a1a2a3a4a5a6a7a8"),
            ("event", "7"),
            ("zones", "1,2"),
            ("not_before", "2025-06-15T15:06:40Z"),
            ("not_after", "2025-06-16T18:53:20Z"),
        ),
    )


def test_open_window_and_no_zones() -> None:
    ticket = tk1.parse(tk1.sign(_with(not_before=0, not_after=0, zones=0), ED_KEY))
    assert ticket.not_before is None
    assert ticket.not_after is None
    assert ticket.zones == 0
    assert dict(ticket.fields)["not_before"] == "-"
    assert dict(ticket.fields)["not_after"] == "-"
    assert dict(ticket.fields)["zones"] == "none"


def test_zone_16_and_max_values() -> None:
    fields = _with(kid=0xFFFFFFFF, event_id=0xFFFFFFFF, zones=0x8001, not_after=0xFFFFFFFF)
    ticket = tk1.parse(tk1.sign(fields, ED_KEY))
    assert ticket.kid == "4294967295"
    assert ticket.event == "4294967295"
    assert dict(ticket.fields)["zones"] == "1,16"
    assert ticket.not_after == 0xFFFFFFFF


@pytest.mark.parametrize("alg", keys.ALGORITHMS)
def test_signature_verifies_and_binds_every_field(alg: keys.Alg) -> None:
    key = keys.generate(alg)
    ticket = tickets.parse(tk1.sign(FIELDS, key))
    assert keys.verify(key.public_key(), ticket.signature, ticket.signed_data)
    assert ticket.signed_data.startswith(tk1.DOMAIN_TAG)
    other = tickets.parse(tk1.sign(_with(event_id=8), key))
    # A signature lifted onto other fields must not verify.
    assert not keys.verify(key.public_key(), ticket.signature, other.signed_data)
    assert not keys.verify(keys.generate(alg).public_key(), ticket.signature, ticket.signed_data)


@given(
    kid=st.integers(0, 0xFFFFFFFF),
    token_id=st.binary(min_size=16, max_size=16),
    ticket_id=st.binary(min_size=8, max_size=8),
    event_id=st.integers(0, 0xFFFFFFFF),
    zones=st.integers(0, 0xFFFF),
    not_before=st.integers(0, 0xFFFFFFFF),
    not_after=st.integers(0, 0xFFFFFFFF),
)
def test_round_trip(
    kid: int,
    token_id: bytes,
    ticket_id: bytes,
    event_id: int,
    zones: int,
    not_before: int,
    not_after: int,
) -> None:
    fields = tk1.TK1Fields(kid, token_id, ticket_id, event_id, zones, not_before, not_after)
    text = tk1.sign(fields, ED_KEY)
    assert len(text) == tk1.TEXT_LEN
    ticket = tickets.parse(text)
    assert (ticket.kid, ticket.revocation_key, ticket.ticket_ref, ticket.event) == (
        str(kid),
        token_id,
        "tk1:" + ticket_id.hex(),
        str(event_id),
    )
    assert (ticket.zones, ticket.not_before, ticket.not_after) == (
        zones,
        not_before or None,
        not_after or None,
    )
    assert keys.verify(ED_PUB, ticket.signature, ticket.signed_data)


# --- field validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"kid": -1},
        {"kid": 1 << 32},
        {"kid": True},
        {"event_id": 1 << 32},
        {"zones": 1 << 16},
        {"zones": -1},
        {"not_before": -5},
        {"not_after": 1 << 32},
        {"flags": 256},
        {"token_id": b"\x00" * 15},
        {"token_id": "0" * 16},
        {"ticket_id": b"\x00" * 9},
    ],
)
def test_fields_out_of_range_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _with(**changes)  # type: ignore[arg-type]


def test_encode_refuses_short_signature() -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        tk1.encode(FIELDS, b"\x00" * 63)


# --- strict parsing --------------------------------------------------------------------------


def test_length_is_checked_before_decoding() -> None:
    # 165 characters of garbage: the length error comes first, not a Base45 error.
    with pytest.raises(TicketFormatError, match="expected 166 characters, got 165"):
        tk1.parse("TK1:" + "#" * 161)
    with pytest.raises(TicketFormatError, match="got 167"):
        tk1.parse(VALID + "0")


def test_wrong_prefix_is_refused() -> None:
    with pytest.raises(TicketFormatError, match="does not start with"):
        tk1.parse("TK2:" + VALID[4:])
    with pytest.raises(TicketFormatError, match="unrecognised"):
        tickets.parse("tk1:" + VALID[4:])


def test_invalid_base45_is_refused() -> None:
    with pytest.raises(TicketFormatError, match="base45"):
        tickets.parse(VALID[:-3] + "GGW")
    with pytest.raises(TicketFormatError, match="base45"):
        tickets.parse(VALID[:-1] + "a")


def test_body_of_wrong_size_is_refused() -> None:
    # Valid Base45 of a body one byte short or long: refused before any unpacking.
    with pytest.raises(TicketFormatError):
        tickets.parse(_text(VALID_BODY[:-1]))
    with pytest.raises(TicketFormatError):
        tickets.parse(_text(VALID_BODY + b"\x00"))


@pytest.mark.parametrize("ver", [0, 2, 255])
def test_unknown_version_is_refused(ver: int) -> None:
    with pytest.raises(TicketFormatError, match=f"unsupported version {ver}"):
        tickets.parse(_text(bytes([ver]) + VALID_BODY[1:]))


def test_rotating_flag_is_refused() -> None:
    text = tk1.sign(_with(flags=0x01), ED_KEY)
    with pytest.raises(TicketFormatError, match="rotating TK1 variant not supported"):
        tickets.parse(text)
    with pytest.raises(TicketFormatError, match="rotating"):
        tickets.parse(tk1.sign(_with(flags=0x03), ED_KEY))


@pytest.mark.parametrize("flags", [0x02, 0x80, 0xFE])
def test_unknown_flags_are_refused(flags: int) -> None:
    with pytest.raises(TicketFormatError, match=f"unknown flags 0x{flags:02x}"):
        tickets.parse(tk1.sign(_with(flags=flags), ED_KEY))


# --- fuzzing: only TicketFormatError ever escapes, and no mutation keeps a valid signature ----


def _parse_or_none(text: str) -> Ticket | None:
    try:
        return tickets.parse(text)
    except TicketFormatError:
        return None


def _assert_forgery_rejected(ticket: Ticket | None) -> None:
    if ticket is None:
        return
    assert (ticket.signed_data, ticket.signature) != (ORIGINAL.signed_data, ORIGINAL.signature)
    assert not keys.verify(ED_PUB, ticket.signature, ticket.signed_data)


@given(st.text(max_size=300))
def test_fuzz_random_text(text: str) -> None:
    _assert_forgery_rejected(_parse_or_none(text))


@given(st.text(max_size=200))
def test_fuzz_random_text_with_prefix(text: str) -> None:
    _assert_forgery_rejected(_parse_or_none("TK1:" + text))


@given(st.text(alphabet=base45.ALPHABET, min_size=162, max_size=162))
def test_fuzz_right_length_base45_alphabet(text: str) -> None:
    _assert_forgery_rejected(_parse_or_none("TK1:" + text))


@given(st.binary(min_size=108, max_size=108))
def test_fuzz_random_bodies(body: bytes) -> None:
    ticket = _parse_or_none(_text(body))
    if body[0] != 1 or body[1] != 0:
        assert ticket is None
    else:
        assert ticket is not None
    _assert_forgery_rejected(ticket)


@given(st.sets(st.integers(0, tk1.BODY_LEN * 8 - 1), min_size=1, max_size=4))
def test_fuzz_bit_flips(bits: set[int]) -> None:
    body = bytearray(VALID_BODY)
    for bit in bits:
        body[bit // 8] ^= 1 << (bit % 8)
    ticket = _parse_or_none(_text(bytes(body)))
    if all(bit >= 16 for bit in bits):
        assert ticket is not None  # ver and flags intact: parses, but must not verify
    _assert_forgery_rejected(ticket)


@given(st.integers(0, tk1.TEXT_LEN - 1), st.sampled_from(base45.ALPHABET))
def test_fuzz_character_substitution(pos: int, char: str) -> None:
    assume(VALID[pos] != char)
    _assert_forgery_rejected(_parse_or_none(VALID[:pos] + char + VALID[pos + 1 :]))


@given(st.integers(0, tk1.TEXT_LEN - 1), st.integers(0, tk1.TEXT_LEN))
def test_fuzz_truncation_and_splice(cut: int, keep_from: int) -> None:
    assert _parse_or_none(VALID[:cut]) is None
    assume(cut != keep_from)
    _assert_forgery_rejected(_parse_or_none(VALID[:cut] + VALID[keep_from:]))


@given(st.text(alphabet=st.characters(max_codepoint=0x1F), min_size=1, max_size=200))
def test_fuzz_control_characters(junk: str) -> None:
    assert _parse_or_none(junk) is None
    assert _parse_or_none(VALID[:80] + junk + VALID[80 + len(junk) :]) is None  # same length


@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["A", "TK1:", "\x00", "é", "0" * 3]), st.integers(100_000, 110_000))
def test_fuzz_huge_strings(unit: str, size: int) -> None:
    text = (unit * (size // len(unit) + 1))[:size]
    with pytest.raises(TicketFormatError, match="exceeds the 4096 cap"):
        tickets.parse(text)
    with pytest.raises(TicketFormatError, match="exceeds the 4096 cap"):
        tickets.parse(VALID + text)


# --- registry --------------------------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate test formats from the process-wide registry."""
    monkeypatch.setattr(tickets, "_formats", tickets.formats())
    monkeypatch.setattr(tickets, "_parsers", {})


def test_tk1_is_registered_by_prefix() -> None:
    (tk1_format,) = [f for f in tickets.formats() if f.name == "tk1"]
    assert tk1_format.prefix == tk1.PREFIX
    assert tickets.parse(VALID) == tk1.parse(VALID)


def test_cap_empty_and_unrecognised() -> None:
    with pytest.raises(TicketFormatError, match="cap"):
        tickets.parse("TK1:" + "0" * tickets.MAX_TEXT_LEN)
    with pytest.raises(TicketFormatError, match="empty"):
        tickets.parse("")
    with pytest.raises(TicketFormatError, match="unrecognised ticket format"):
        tickets.parse("https://example.com/ticket/123")


@pytest.mark.usefixtures("registry")
def test_parser_bugs_become_ticket_format_errors() -> None:
    # json.loads raises JSONDecodeError (a ValueError) and len returns an int: both are parser bugs.
    tickets.register(tickets.Format("json", "JSON:", None, "json:loads"))
    tickets.register(tickets.Format("len", "LEN:", None, "builtins:len"))
    tickets.register(tickets.Format("gone", "GONE:", None, "no_such_module_x:parse"))
    for text in ("JSON:{", "LEN:abc", "GONE:abc"):
        with pytest.raises(TicketFormatError, match="internal parser error"):
            tickets.parse(text)


@pytest.mark.usefixtures("registry")
def test_shape_formats_are_tried_after_prefixes() -> None:
    def crashing(text: str) -> bool:
        raise RuntimeError("bug")

    tickets.register(tickets.Format("crash", None, crashing, "json:loads"))
    tickets.register(tickets.Format("brace", None, lambda t: t.startswith("{"), "json:loads"))
    tickets.register(tickets.Format("tk1-shape", None, lambda t: True, "builtins:len"))
    with pytest.raises(TicketFormatError, match="brace: internal parser error"):
        tickets.parse("{")
    assert tickets.parse(VALID) == ORIGINAL  # the TK1 prefix wins over the catch-all shape


@pytest.mark.usefixtures("registry")
def test_longest_prefix_wins() -> None:
    tickets.register(tickets.Format("tk1x", "TK1:X", None, "json:loads"))
    with pytest.raises(TicketFormatError, match="tk1x"):
        tickets.parse("TK1:X123")
    assert tickets.parse(VALID) == ORIGINAL


@pytest.mark.usefixtures("registry")
def test_register_refuses_clashes() -> None:
    tk1_format = tickets.formats()[0]
    tickets.register(tk1_format)  # same format again: no-op
    assert tickets.formats().count(tk1_format) == 1
    with pytest.raises(ValueError, match="already registered"):
        tickets.register(tickets.Format("tk1", "TKX:", None, "json:loads"))
    with pytest.raises(ValueError, match="already used"):
        tickets.register(tickets.Format("other", "TK1:", None, "json:loads"))
    with pytest.raises(ValueError, match="prefix or a matches"):
        tickets.Format("none", None, None, "json:loads")
    with pytest.raises(ValueError, match="module:function"):
        tickets.Format("bad", "B:", None, "json.loads")
