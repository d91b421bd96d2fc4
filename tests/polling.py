"""Waiting for something a test can see: poll a condition until it holds, or fail saying what.

Tests never sleep for a fixed time to let something happen: they poll the condition with
:func:`until` (in a coroutine, the check may itself be a coroutine) or :func:`until_sync` (in
blocking code, e.g. around a subprocess). Both raise AssertionError naming what was awaited and
for how long; without ``what`` the message quotes the check's source line.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_S = 0.01


def _describe(check: Callable[[], object], what: str) -> str:
    if what:
        return what
    try:
        return inspect.getsource(check).strip()
    except (OSError, TypeError):
        return repr(check)


async def until(
    check: Callable[[], Awaitable[object] | object],
    within_s: float = 15.0,
    what: str = "",
    *,
    every_s: float = POLL_S,
) -> None:
    """Poll ``check`` (a function, or a coroutine function) every ``every_s`` until it returns
    something true (a check that reads files may ask less often than the default).

    Raises AssertionError after ``within_s`` seconds, naming ``what`` (or the check's source).
    """
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:g} s: {_describe(check, what)}")
        await asyncio.sleep(every_s)


def until_sync(check: Callable[[], object], within_s: float = 15.0, what: str = "") -> None:
    """Blocking :func:`until`: poll ``check`` until it returns something true.

    Raises AssertionError after ``within_s`` seconds, naming ``what`` (or the check's source).
    """
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:g} s: {_describe(check, what)}")
        time.sleep(POLL_S)
