"""What the hub client and the pretix adapter share about HTTP: reading an answer with a size cap,
the Retry-After and Date headers, and waiting out a retry delay unless told to stop."""

from __future__ import annotations

import asyncio
import email.utils
from datetime import UTC

import aiohttp

from agent.errors import UpstreamUnavailable

MAX_RETRY_AFTER_S = 86_400.0  # longer is no plan; every backoff caps far below anyway


class BodyTooLarge(UpstreamUnavailable):
    """The answer was longer than the cap (transient, as agent.errors draws it); callers add
    which request it answered."""


async def read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body of ``resp``; raises BodyTooLarge past ``cap`` bytes.

    ``resp.content.read(n)`` is not enough: it returns what is buffered so far, which can be a
    prefix of a long answer.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(f"answer larger than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() takes and float() refuses
        return min(float(value), MAX_RETRY_AFTER_S)  # 400 digits would be inf
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER_S)


def parse_http_date(value: str | None) -> float | None:
    """A ``Date`` header as Unix seconds, or None."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


async def sleep_or_stop(
    delay: float, stop: asyncio.Event, wake: asyncio.Event | None = None
) -> bool:
    """Wait ``delay`` seconds, until ``stop`` is set or until ``wake`` is; True when stopped."""
    if wake is None:
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
        except TimeoutError:
            return False
        return True
    waits = (asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, timeout=max(0.0, delay), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    return stop.is_set()
