"""What a gate learns of rows a copy of a gate's token disputed, beside the venue feed.

- Claims: a copy's rows under a gate's next gate_seqs make the real gate's uploads a 409 until
  the operator's quarantine; the hub keeps the refused batches' admissions as claims
  (:mod:`sync.hub_claims`), and :func:`claims_round` reads them into the journal's peer rows, so
  a ticket that gate admitted is used here too meanwhile.
- Set apart: a copy can write exits and annulments as that gate; every gate that learns one from
  the feed lets its ticket in again. The operator's quarantine (:mod:`sync.hub_quarantine`)
  takes them out of the feed, and :func:`forget_set_apart` deletes those learnt from the peer
  rows. Only exits and annulments: a set-apart entry keeps its ticket used, which fails closed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from agent.errors import UpstreamNotFound, UpstreamUnavailable
from agent.journal import Journal
from agent.words import plural
from sync.protocol import MAX_PAGE, MAX_SET_APART_PAGE, FeedPage, SetApartPage

log = logging.getLogger("sync.client")

OLD_HUB_RETRY_S = 600.0  # a hub that lists no set-apart rows (an older version) is asked again
MAX_PAGES = 40  # set-apart pages a round (200,000 ids); a longer list is read on the next round

Pager = Callable[[dict[str, str]], Awaitable[SetApartPage]]
ClaimPager = Callable[[dict[str, str]], Awaitable[FeedPage]]


async def forget_set_apart(
    page: Pager, journal: Journal, known: int | None
) -> tuple[int | None, int]:
    """Read the hub's set-apart releases through ``page`` (GET with these query parameters)
    when their count is not ``known`` (the count at the last look; None: never looked), and
    forget those held. Returns (the count now known: ``known`` when the list was not read to
    its end, how many were forgotten).
    Raises UpstreamError or JournalError."""
    total = (await page({"limit": "0"})).total
    if total == known:
        return total, 0
    # Until an empty page (a short one may be a proxy's cut), each after the last id read and
    # rising (a review: a hub answering one full page for ever spun this loop), at most
    # MAX_PAGES a round: the count is taken once the whole list was read.
    forgotten, after, done = 0, "", False
    try:
        for _ in range(MAX_PAGES):
            ids = (await page({"after": after, "limit": str(MAX_SET_APART_PAGE)})).entry_ids
            if not ids:
                done = True
                break
            if any(b <= a for a, b in zip((after, *ids), ids, strict=False)):
                raise UpstreamUnavailable(
                    f"malformed SetApartPage from the hub: ids not after {after}"
                )
            forgotten += await journal.forget_peer_releases(ids)
            after = ids[-1]
    finally:  # also when a later page fails (a busy hub): what was forgotten is said (CI)
        if forgotten:
            log.warning(
                "hub: forgot %s learnt from other gates: exits or annulments a quarantine set"
                " apart (a copy of a gate's token wrote them)", plural(forgotten, "row"),
            )  # fmt: skip
    return (total if done else known), forgotten


class DisputedRows:
    """The two rounds, each run as a task of :class:`sync.client.HubClient` with what it last
    read: the claims' cursor (0 after a start: claims are stored once by entry id) and the
    set-apart count (None after a start: read once)."""

    def __init__(self, journal: Journal, interval_s: float) -> None:
        self._journal, self._interval_s = journal, interval_s
        self._claims = 0
        self._set_apart: int | None = None

    async def claims(self, page: ClaimPager, ceiling_ms: Callable[[FeedPage], int]) -> float:
        """One round of :func:`claims_round`; returns the delay to the next."""
        self._claims, delay = await claims_round(
            page, self._journal, self._claims, ceiling_ms, self._interval_s
        )
        return delay

    async def set_apart(self, page: Pager) -> float:
        """One round of :func:`set_apart_round`; returns the delay to the next."""
        self._set_apart, delay = await set_apart_round(
            page, self._journal, self._set_apart, self._interval_s
        )
        return delay


async def set_apart_round(
    page: Pager, journal: Journal, known: int | None, interval_s: float
) -> tuple[int | None, float]:
    """One round of :func:`forget_set_apart`: (the count now known, the delay to the next round:
    ``interval_s``, or :data:`OLD_HUB_RETRY_S` for a hub without the list)."""
    try:
        total, _ = await forget_set_apart(page, journal, known)
    except UpstreamNotFound as exc:
        log.debug("the hub lists no set-apart rows (a version before 2026-12): %s", exc)
        return known, OLD_HUB_RETRY_S
    return total, interval_s


async def claims_round(
    page: ClaimPager,
    journal: Journal,
    cursor: int,
    ceiling_ms: Callable[[FeedPage], int],
    interval_s: float,
) -> tuple[int, float]:
    """Read the claims after ``cursor`` into the peer rows (each page's HLCs bounded by
    ``ceiling_ms``, as the feed's); returns the next cursor (0: the hub's store is newer, read
    again) and the delay to the next round (none while pages follow)."""
    try:
        got = await page({"after": str(cursor), "limit": str(MAX_PAGE)})
    except UpstreamNotFound as exc:
        log.debug("the hub keeps no claims (a version before 2026-12): %s", exc)
        return cursor, OLD_HUB_RETRY_S
    if got.entries:
        peers = (e.to_peer() for e in got.entries)
        if learnt := await journal.add_peer_entries(
            peers, hlc_ceiling_ms=ceiling_ms(got), claimed=True
        ):
            log.warning(
                "hub: learnt %s of a gate whose uploads the hub refuses (a copy of its token"
                " squats its numbers): their tickets are used here too", plural(learnt, "admission"),
            )  # fmt: skip
    if got.next < cursor:
        return 0, 0.0
    return got.next, interval_s if got.caught_up else 0.0
