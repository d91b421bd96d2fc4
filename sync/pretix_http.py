"""HTTP for the pretix adapter: one aiohttp session, a timeout on every request, faults classified.

Every request either returns a :class:`Reply` (2xx, or a 4xx the caller interprets) or raises one
of the upstream errors of :mod:`agent.errors`, so the adapter decides from the class alone whether to
keep its queue and back off: UpstreamUnavailable (unreachable, timed out, 408/425/429/5xx, malformed
JSON, bad paging, and 403: the device's security profile or event access lacks the endpoint, kept
retrying as an admin can widen it; ``retry_after`` carries the Retry-After), UpstreamAuthError (401:
the device token is revoked or wrong, retrying cannot help) and PretixInitError (device
initialisation refused: the one-time token is used up or unknown).

Tokens and ticket secrets never appear in logs or messages: the Authorization header is built here
and only a short hash of the token is ever logged; a secret that is part of a URL (pretix's redeem
path) is named by the caller (``secret=``) and shown as its ticket's short id (:func:`ticket_label`).
A library exception's text can hold the whole URL (aiohttp's connection timeout does), so it is
redacted into the message, and chained only when the URL holds no secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yarl

from agent.backoff import Backoff
from agent.errors import UpstreamAuthError, UpstreamUnavailable
from agent.redact import pretix_short_id, printable, secret_label
from sync.upstream_http import BodyTooLarge, parse_retry_after, read_capped

log = logging.getLogger(__name__)

MAX_BODY = 4 << 20  # a page of 50 positions is ~100 kB (large group orders more): not pretix
MAX_PAGES = 100_000
# A GET after a brief failure: asked at most this many times in all, the waits between drawn
# from 0..0.5 s then 0..1 s (a Retry-After up to the cap is honoured; a longer one ends the round).
GET_TRIES = 3
GET_RETRY_BASE_S = 0.5
GET_RETRY_CAP_S = 4.0
MAX_PATH_SHOWN = 300  # characters of a request's path in an error
# Every endpoint the adapter uses is in pretix's "pretixscan" profile; narrower ones
# (pretixscan_online_kiosk, pretixscan_online_noorders) lack the order list it syncs from.
NEEDED_PROFILE = "'pretixSCAN' (pretixscan) or 'Full device access' (full)"
_TRANSIENT_STATUS = frozenset({408, 425, 429})

Query = Mapping[str, str] | Sequence[tuple[str, str]]  # pairs when a key repeats (include=)


@dataclass(frozen=True, slots=True)
class Reply:
    """A parsed answer: ``body`` is the decoded JSON (None for an empty body)."""

    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def ticket_label(secret: str) -> str:
    """How messages name a pretix secret: ``ticket-`` and its short id, the id the lane's
    decision lines and ``events`` show."""
    return "ticket-" + pretix_short_id(secret)


def redact(text: str, secret: str | None, token: str | None = None) -> str:
    """``text`` with ``secret`` replaced by its :func:`ticket_label` and ``token`` by its
    :func:`token_hash`. The secret is found in any mix of raw and percent-encoded characters:
    a URL library may decode some of them (``+``) and keep others (``%2F``)."""
    if secret:
        text = _pattern(secret).sub(ticket_label(secret), text)
    if token:
        text = text.replace(token, f"token-{secret_label(token)}")
    return text


def _pattern(secret: str) -> re.Pattern[str]:
    chars = (
        f"(?:{re.escape(ch)}|(?i:{''.join(f'%{b:02X}' for b in ch.encode())}))" for ch in secret
    )
    return re.compile("".join(chars))


class PretixHTTP:
    """A session against one pretix base URL; every request has ``timeout_s`` as its total bound."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0, user_agent: str) -> None:
        """Raises ValueError for a base URL that is not http(s)://host[:port][/prefix]."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ValueError(f"pretix URL must be http(s)://host[/prefix], got {base_url!r}")
        self._base = base_url.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self.token: str | None = None

    @property
    def base_url(self) -> str:
        return self._base

    def url(self, path: str) -> yarl.URL:
        """The absolute URL of an API path whose variable parts are already percent-encoded."""
        return yarl.URL(self._base + path, encoded=True)

    async def request(
        self,
        method: str,
        target: str | yarl.URL,
        *,
        json_body: Any = None,
        params: Query | None = None,
        auth: bool = True,
        secret: str | None = None,
    ) -> Reply:
        """One request; returns 2xx and 4xx (not 401/403/408/429) answers, raises otherwise.

        ``secret``: a ticket secret inside the path; no message names it, only its ticket's
        short id. Raises UpstreamUnavailable (transient, and 403 naming the method, the path and
        the profile the gate needs) or UpstreamAuthError (401).
        """
        url = self.url(target) if isinstance(target, str) else target
        if params:
            url = url.update_query(params)
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        if auth:
            if self.token is None:
                raise UpstreamAuthError("no device token: initialise the device first")
            headers["Authorization"] = f"Device {self.token}"
        # The path as yarl decodes it (%0a is a newline): cut and printable, as it goes into log
        # lines and the status page.
        what = printable(redact(f"{method} {url.path}", secret), MAX_PATH_SHOWN)
        try:
            async with self._open().request(
                method, url, json=json_body, headers=headers, allow_redirects=False
            ) as resp:
                raw = await read_capped(resp, MAX_BODY)
                status, resp_headers = resp.status, dict(resp.headers)
        except BodyTooLarge as exc:  # first: it is an OSError too, and asking again won't help
            raise UpstreamUnavailable(f"{what}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            detail = redact(f"{type(exc).__name__}: {exc}", secret, self.token)
            # Chained only when the URL holds no secret: aiohttp's text may hold the URL, and a
            # traceback would show it.
            brief = not isinstance(exc, TimeoutError)
            raise UpstreamUnavailable(f"{what}: {detail}", brief=brief) from (
                None if secret else exc
            )
        return _classify(what, status, raw, resp_headers)

    async def get(self, target: str | yarl.URL, params: Query | None = None) -> Reply:
        """GET as :meth:`request`, asked again up to :data:`GET_TRIES` times in all after a
        brief failure (``UpstreamUnavailable.brief``, its Retry-After if any within
        :data:`GET_RETRY_CAP_S`), a short jittered wait between: over a lossy link one lost
        answer must not end a round of hundreds of pages (the next round would begin again at
        the first one). Raises as :meth:`request`, the last failure's error."""
        waits = Backoff(GET_RETRY_BASE_S, GET_RETRY_CAP_S, jitter=True)
        while True:
            try:
                return await self.request("GET", target, params=params)
            except UpstreamUnavailable as exc:
                if not exc.brief or waits.failures + 1 >= GET_TRIES:
                    raise
                if exc.retry_after is not None and exc.retry_after > GET_RETRY_CAP_S:
                    raise
                log.debug("pretix: %s; asking again", exc)
                await asyncio.sleep(waits.next_delay(at_least=exc.retry_after or 0.0))

    async def pages(
        self, path: str, params: Query
    ) -> AsyncGenerator[tuple[Reply, list[Any]], None]:
        """Follow a paginated list (``results`` and ``next``); yields each page and its rows.

        ``next`` must stay on the server's origin (the token is never sent elsewhere). Raises as
        :meth:`request`, and UpstreamUnavailable for a malformed page or a 4xx answer.
        """
        target: str | yarl.URL = path
        query: Query | None = params
        read: set[str] = set()
        for _ in range(MAX_PAGES):
            reply = await self.get(target, query)
            body = reply.body
            if not reply.ok:
                raise UpstreamUnavailable(f"GET {path}: HTTP {reply.status}")
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise UpstreamUnavailable(f"GET {path}: not a paginated list")
            yield reply, body["results"]
            nxt = body.get("next")
            if nxt is None:
                return
            if not isinstance(nxt, str) or not nxt.startswith(self._origin + "/"):
                raise UpstreamUnavailable(f"GET {path}: 'next' leaves the server: refused")
            if nxt in read:  # a loop: the round would read (and keep) MAX_PAGES pages
                raise UpstreamUnavailable(f"GET {path}: 'next' names a page already read")
            read.add(nxt)
            target, query = yarl.URL(nxt, encoded=True), None
        raise UpstreamUnavailable(f"GET {path}: more than {MAX_PAGES} pages")

    async def close(self) -> None:
        """Close the session; idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session


def _classify(what: str, status: int, raw: bytes, headers: Mapping[str, str]) -> Reply:
    if status == 401:
        raise UpstreamAuthError(f"{what}: HTTP 401: device token refused (revoked?)")
    if status == 403:
        raise UpstreamUnavailable(
            f"{what}: HTTP 403: the device may not use this endpoint; give it the security"
            f" profile {NEEDED_PROFILE} and access to the event",
            answered=True,
        )
    if status in _TRANSIENT_STATUS or status >= 500:
        now = datetime.now(UTC).timestamp()
        raise UpstreamUnavailable(
            f"{what}: HTTP {status}",
            parse_retry_after(headers.get("Retry-After"), now),
            brief=True,
            answered=status not in (408, 429),  # slow down, whichever row: not one URL's fault
        )
    if not 200 <= status < 500:
        raise UpstreamUnavailable(f"{what}: unexpected HTTP {status}", answered=True)
    body: Any = None
    if raw.strip():
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # bad UTF-8 is a ValueError
            if 200 <= status < 300:
                raise UpstreamUnavailable(  # a body cut short by the link, too
                    f"{what}: HTTP {status} with malformed JSON", brief=True
                ) from exc
            body = None  # an HTML error page on a 4xx: the status alone decides
    return Reply(status, body, headers)
