"""Tests that need something installed: skipped here when it is missing, failed under CI.

CI (``CI=true``) runs ``.ci/setup --tests``, which installs every tool the tests use (socat,
chromium, PostgreSQL, a real pretix) and runs as root: a test that skipped there for want of one
would pass silently while testing nothing. A developer's machine may lack one: the test is
skipped with what to install.

In a test or fixture: ``need(shutil.which("socat"), "socat")``. For a whole module or test:
``pytestmark = needs.mark(SOCAT is not None, "socat")`` (checked when each test is set up, by
tests/conftest.py). Hardware tests are a different matter: the ``hardware`` marker.
"""

from __future__ import annotations

import os

import pytest

SETUP = "run `bash .ci/setup --tests`"


def on_ci() -> bool:
    """True under CI (the environment sets ``CI=true``)."""
    return os.environ.get("CI", "").lower() in {"true", "1"}


def need(available: object, what: str, fix: str = SETUP) -> None:
    """Go on when ``available`` is true; otherwise skip the test, or fail it under CI.

    Raises pytest's Skipped or Failed (never returns then); the message names ``what`` and ``fix``.
    """
    if available:
        return
    if on_ci():
        pytest.fail(f"CI must provide {what} ({fix})", pytrace=False)
    pytest.skip(f"needs {what} ({fix})")


def mark(available: object, what: str, fix: str = SETUP) -> pytest.MarkDecorator:
    """A mark for a test or module that does :func:`need` before each test starts."""
    return pytest.mark.needs(bool(available), what, fix)


def check(item: pytest.Item) -> None:
    """Apply every ``needs`` mark of ``item`` (tests/conftest.py calls it at set-up)."""
    for found in item.iter_markers("needs"):
        need(*found.args)
