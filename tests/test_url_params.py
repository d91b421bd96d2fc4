"""drivers.url_params: the one strict reader of driver URL queries (every refusal, every getter)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from agent.errors import DriverError
from drivers.url_params import UrlParams

URL = "demo:///dev/thing"


Read = Callable[[UrlParams], object]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sim://queue", "not a demo:// or other:// URL: 'sim://queue'"),
        (f"{URL}#x", f"{URL}#x: unexpected fragment #x"),
        (f"{URL}?a", f"{URL}?a: malformed query (expected name=value&...): bad query field: 'a'"),
        (f"{URL}?a=1&a=2", f"{URL}?a=1&a=2: parameter a given twice"),
        # Found in a user trial: a NUL went into the gate's log lines, and the check passed it.
        ("demo:///dev/tty\x00S0", "demo:///dev/tty\\x00S0: a device URL has no control characters"),
        ("demo:///dev/tty\nS0", "demo:///dev/tty\\x0aS0: a device URL has no control characters"),
        (f"{URL}?path=a%0Ab", f"{URL}?path=a%0Ab: parameter 'path' has a control character"),
    ],
)
def test_the_url_itself_is_refused_at_once(url: str, message: str) -> None:
    with pytest.raises(DriverError) as info:
        UrlParams(url, "demo", "other")
    assert str(info.value) == message


def test_unknown_parameters_are_named_with_the_valid_ones() -> None:
    p = UrlParams(f"{URL}?size=3&colour=red&speed=9", "demo")
    assert p.integer("size", 1, 1, 10) == 3
    p.text("mode")
    with pytest.raises(DriverError) as info:
        p.finish()
    assert str(info.value) == (
        f"{URL}?size=3&colour=red&speed=9: unknown parameter colour, speed (valid: mode, size)"
    )


def test_a_driver_without_parameters_says_so() -> None:
    with pytest.raises(DriverError, match=r"unknown parameter x \(valid: none\)$"):
        UrlParams(f"{URL}?x=1", "demo").finish()


def test_absent_parameters_give_the_defaults() -> None:
    p = UrlParams(URL, "demo", "other")
    assert p.scheme == "demo" and not p.has("n")
    assert p.integer("n", 7, 0, 9) == 7 and p.integer("w", None, 1) is None
    assert p.number("f", 1.5, 0, 2) == 1.5 and p.number("g", None, 0, lo_open=True) is None
    assert p.seconds("s", 5.0, 0.2, 300) == 5.0
    assert p.choice("c", "low", ("low", "high")) == "low"
    assert (p.flag("on", True), p.flag("off", False)) == (True, False)
    assert (p.text("t"), p.text("u", "dflt"), p.string("v"), p.items("l")) == (
        None,
        "dflt",
        None,
        None,
    )
    p.finish()


def test_given_values_are_typed() -> None:
    url = f"{URL}?n=9&w=100000&f=0.25&s=300&c=high&on=0&t=&l=a,,b&v=x%20y"
    p = UrlParams(url, "demo")
    assert p.has("n")
    assert (p.integer("n", 0, 0, 9), p.integer("w", None, 1)) == (9, 100_000)
    assert (p.number("f", 1.0, 0, 1, lo_open=True), p.seconds("s", 1.0, 0.1, 300)) == (0.25, 300)
    assert (p.choice("c", "low", ("low", "high")), p.flag("on", True)) == ("high", False)
    assert (p.text("t"), p.items("l"), p.string("v")) == ("", ["a", "b"], "x y")
    p.finish()


@pytest.mark.parametrize(
    ("query", "read", "expected"),
    [
        ("n=10", lambda p: p.integer("n", 1, 0, 9), "n must be an integer in 0..9, not '10'"),
        ("n=-1", lambda p: p.integer("n", 1, 0, 9), "n must be an integer in 0..9, not '-1'"),
        ("n=1.5", lambda p: p.integer("n", 1, 0, 9), "n must be an integer in 0..9, not '1.5'"),
        ("n=%D9%A3", lambda p: p.integer("n", 1, 0, 9), "n must be an integer in 0..9, not '٣'"),
        ("w=0", lambda p: p.integer("w", None, 1), "w must be an integer >= 1, not '0'"),
        (
            "b=4000001",
            lambda p: p.integer("b", 1, 1, 4_000_000),
            "b must be an integer in 1..4000000, not '4000001'",
        ),
        ("f=nan", lambda p: p.number("f", 1.0, 0, 2), "f must be a number in 0..2, not 'nan'"),
        ("f=inf", lambda p: p.number("f", None, 0), "f must be a number >= 0, not 'inf'"),
        ("f=0", lambda p: p.number("f", None, 0, lo_open=True), "f must be a number > 0, not '0'"),
        (
            "f=3",
            lambda p: p.number("f", 1.0, 0, 2, lo_open=True),
            "f must be a number > 0 and <= 2, not '3'",
        ),
        ("f=x", lambda p: p.number("f", 1.0, 0.5, 2.5), "f must be a number in 0.5..2.5, not 'x'"),
        (
            "s=0",
            lambda p: p.seconds("s", 1.0, 0.1, 300),
            "s must be a number of seconds in 0.1..300, not '0'",
        ),
        (
            "c=mid",
            lambda p: p.choice("c", "low", ("low", "high")),
            "c must be one of low|high, not 'mid'",
        ),
        ("on=yes", lambda p: p.flag("on", True), "on must be one of 0|1, not 'yes'"),
        ("v=%20", lambda p: p.string("v"), "v must be a non-empty text, not ' '"),
    ],
)
def test_bad_values_name_the_parameter_what_is_expected_and_what_came(
    query: str, read: Read, expected: str
) -> None:
    p = UrlParams(f"{URL}?{query}", "demo")
    with pytest.raises(DriverError) as info:
        read(p)
    assert str(info.value) == f"{URL}?{query}: {expected}"


@pytest.mark.parametrize("url", ["demo://thing", "demo:thing", "demo:///", "demo://host/dev/x"])
def test_a_device_path_must_be_absolute(url: str) -> None:
    with pytest.raises(DriverError) as info:
        UrlParams(url, "demo").device_path("demo:///dev/x")
    assert str(info.value) == f"{url}: the device path must be absolute, e.g. demo:///dev/x"


def test_a_device_path_is_percent_decoded() -> None:
    assert (
        UrlParams("demo:///dev/by-id/My%20Thing", "demo").device_path("") == "/dev/by-id/My Thing"
    )


def test_error_and_invalid_are_about_this_url() -> None:
    p = UrlParams(f"{URL}?mode=hold", "demo")
    assert str(p.error("mode=hold needs a sensor")) == f"{URL}?mode=hold: mode=hold needs a sensor"
    assert str(p.invalid("mode", "pulse here")) == (
        f"{URL}?mode=hold: mode must be pulse here, not 'hold'"
    )
    assert re.search("not ''$", str(p.invalid("absent", "given")))


def test_a_percent_encoded_control_character_is_no_device_path() -> None:
    p = UrlParams("demo:///dev/tty%00S0", "demo")
    with pytest.raises(DriverError) as info:
        p.device_path("demo:///dev/ttyS0")
    assert str(info.value) == (
        "demo:///dev/tty%00S0: the path has a control character (percent-encoded)"
    )
