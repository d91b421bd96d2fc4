"""Reading HTTP answers with a size cap (shared by the hub client and the pretix adapter)."""

from __future__ import annotations

import aiohttp


class BodyTooLarge(Exception):
    """The answer was longer than the cap; callers turn it into their own transient error."""


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
