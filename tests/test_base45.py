"""Base45 (RFC 9285): the published examples, round trips and every refused input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import TicketFormatError
from agent.tickets import base45

RFC_EXAMPLES = [
    (b"AB", "BB8"),
    (b"Hello!!", "%69 VD92EX0"),
    (b"base-45", "UJCLQE7W581"),
    (b"ietf!", "QED8WEX0"),
    (b"", ""),
]


@pytest.mark.parametrize(("data", "text"), RFC_EXAMPLES)
def test_rfc_examples_encode(data: bytes, text: str) -> None:
    assert base45.encode(data) == text


@pytest.mark.parametrize(("data", "text"), RFC_EXAMPLES)
def test_rfc_examples_decode(data: bytes, text: str) -> None:
    assert base45.decode(text) == data


def test_boundary_values_decode() -> None:
    assert base45.decode("FGW") == b"\xff\xff"  # 15 + 16*45 + 32*2025 = 65535
    assert base45.decode("U5") == b"\xff"  # 30 + 5*45 = 255
    assert base45.decode("000") == b"\x00\x00"
    assert base45.decode("00") == b"\x00"


@given(st.binary(max_size=300))
def test_round_trip(data: bytes) -> None:
    text = base45.encode(data)
    assert set(text) <= set(base45.ALPHABET)
    assert base45.decode(text) == data


@given(st.text(alphabet=base45.ALPHABET, max_size=60))
def test_decoding_is_canonical(text: str) -> None:
    # Every accepted text is the one encoding of its bytes, so no two texts carry the same ticket.
    try:
        data = base45.decode(text)
    except TicketFormatError:
        return
    assert base45.encode(data) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bb8", "not allowed"),  # lowercase is not Base45
        ("BB8#", "not allowed"),
        ("BB_", "not allowed"),
        ("B\x00B", "not allowed"),
        ("BB\n", "not allowed"),
        ("BBé", "non-ASCII"),
        ("BB\u0660", "non-ASCII"),  # Arabic-Indic digit zero
        ("A", "single trailing"),
        ("BB8A", "single trailing"),
        ("GGW", "exceeds 65535"),  # 16 + 16*45 + 32*2025 = 65536
        (":::", "exceeds 65535"),
        ("BB8GGW", "exceeds 65535"),
        ("V5", "exceeds 255"),  # 31 + 5*45 = 256
        ("BB8::", "exceeds 255"),
    ],
)
def test_invalid_input_is_refused(text: str, message: str) -> None:
    with pytest.raises(TicketFormatError, match=message):
        base45.decode(text)


def test_error_names_position_not_text() -> None:
    with pytest.raises(TicketFormatError, match="position 6") as info:
        base45.decode("BB8BB8GGW")
    assert "BB8BB8" not in str(info.value)


@given(st.text(max_size=40))
def test_arbitrary_text_only_raises_ticket_format_error(text: str) -> None:
    try:
        data = base45.decode(text)
    except TicketFormatError:
        return
    assert base45.encode(data) == text


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_decoder_survives_100_kb_inputs(data: st.DataObject) -> None:
    """Straight into the decoder (the registry's cap would stop these first): error or bytes."""
    size = 100_000 + data.draw(st.integers(0, 2))
    alphabet = data.draw(st.sampled_from([base45.ALPHABET, base45.ALPHABET + "\x00\n\x7f~a"]))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    text = "".join(rng.choice(alphabet) for _ in range(size))
    try:
        out = base45.decode(text)
    except TicketFormatError:
        return
    assert base45.encode(out) == text
