"""Retry-After as the hub client and the pretix adapter read it: hostile values never raise and
never stall a retry beyond a day (every backoff caps far below that anyway)."""

from __future__ import annotations

import pytest

from agent.backoff import Backoff
from agent.errors import UpstreamUnavailable
from sync.pretix_http import _classify
from sync.upstream_http import MAX_RETRY_AFTER_S, parse_retry_after

NOW = 1_760_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: no wait
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("²", None),  # str.isdigit() takes it, float() refuses it
        ("9" * 400, MAX_RETRY_AFTER_S),  # float() makes it inf
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_a_date_far_ahead_is_capped() -> None:
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", NOW) == MAX_RETRY_AFTER_S


def test_any_retry_after_is_a_valid_backoff_minimum() -> None:
    backoff = Backoff(1.0, 60.0, jitter=True)
    for header in ("9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT", "30"):
        wait = parse_retry_after(header, NOW)
        assert wait is not None
        assert 30.0 <= backoff.next_delay(at_least=wait) <= 60.0


def test_a_reply_nested_past_jsons_depth_is_a_malformed_answer_not_a_local_fault() -> None:
    with pytest.raises(UpstreamUnavailable, match="HTTP 200 with malformed JSON"):
        _classify("GET /api/v1/", 200, b"[" * 5000, {})
    assert _classify("POST /redeem/", 400, b"{" * 5000, {}).body is None  # the status decides
