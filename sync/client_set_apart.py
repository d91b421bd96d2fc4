"""A gate forgets the exits and annulments a quarantine at the hub set apart.

A copy of a gate's token can write exits and annulments as that gate; every gate that learns
one from the feed lets its ticket in again. The hub's operator sets those rows apart
(`gate-agent hub quarantine`, :mod:`sync.hub_quarantine`), which takes them out of the feed, but
gates that had learnt them keep them: :func:`forget_set_apart` deletes them from the journal's
peer rows. Only exits and annulments: a set-apart entry keeps its ticket used where it was
learnt, which fails closed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from agent.errors import UpstreamRefused
from agent.journal import Journal
from agent.words import plural
from sync.protocol import MAX_SET_APART_PAGE, SetApartPage

log = logging.getLogger("sync.client")

OLD_HUB_RETRY_S = 600.0  # a hub that lists no set-apart rows (an older version) is asked again

Pager = Callable[[dict[str, str]], Awaitable[SetApartPage]]


async def forget_set_apart(page: Pager, journal: Journal, known: int | None) -> tuple[int, int]:
    """Read the hub's set-apart releases through ``page`` (GET with these query parameters)
    when their count is not ``known`` (the count at the last look; None: never looked), and
    forget those held. Returns (the hub's count, how many were forgotten).
    Raises UpstreamError or JournalError."""
    total = (await page({"limit": "0"})).total
    if total == known:
        return total, 0
    forgotten, after = 0, ""
    while True:
        ids = (await page({"after": after, "limit": str(MAX_SET_APART_PAGE)})).entry_ids
        forgotten += await journal.forget_peer_releases(ids)
        if len(ids) < MAX_SET_APART_PAGE:
            break
        after = ids[-1]
    if forgotten:
        log.warning(
            "hub: forgot %s learnt from other gates: exits or annulments a quarantine set apart"
            " (a copy of a gate's token wrote them)", plural(forgotten, "row"),
        )  # fmt: skip
    return total, forgotten


async def set_apart_round(
    page: Pager, journal: Journal, known: int | None, interval_s: float
) -> tuple[int | None, float]:
    """One round of :func:`forget_set_apart`: (the count now known, the delay to the next round:
    ``interval_s``, or :data:`OLD_HUB_RETRY_S` for a hub without the list)."""
    try:
        total, _ = await forget_set_apart(page, journal, known)
    except UpstreamRefused as exc:
        if "HTTP 404" not in str(exc):
            raise
        log.debug("the hub lists no set-apart rows (a version before 2026-12): %s", exc)
        return known, OLD_HUB_RETRY_S
    return total, interval_s
