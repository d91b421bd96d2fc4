"""Commands that follow something until SIGINT or SIGTERM, then end with exit 0 (`events
--follow`, `hub alerts --follow`): a supervisor's stop or Ctrl-C is how they are meant to end."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable


async def until_signalled(body: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run ``body(stop)``, ``stop`` set by SIGINT or SIGTERM; returns what ``body`` returns."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await body(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
