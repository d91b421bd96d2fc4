"""HTTP for the gate's hub client: one aiohttp session, a timeout on every request, faults classified.

Every request returns a :class:`Reply` (2xx or 304) or raises one of these, so the client decides
from the class alone whether to back off, wait for an operator or fetch something else::

    HubError (AgentError, RuntimeError)
    ├── HubUnavailable     unreachable, timed out, 408/429/5xx, an oversize or malformed answer:
    │                      transient; ``retry_after`` is the hub's Retry-After
    ├── HubAuthError       401/403: the token is refused, or not allowed for this gate
    ├── HubConflict        409: entry ids reused with another body (``entry_ids``)
    ├── HubGone            410: no longer kept (revocation deltas: fetch the snapshot)
    └── HubRefused         another 4xx: the request will not work as sent

The bearer token goes into the Authorization header here and nowhere else; logs and messages only
ever carry :func:`sync.pretix_http.token_hash` of it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import yarl
from multidict import CIMultiDict

from agent.errors import AgentError
from sync import protocol
from sync.http_body import BodyTooLarge, read_capped
from sync.pretix_http import parse_retry_after

_TRANSIENT = frozenset({408, 425, 429})
# An idle connection is dropped before the hub's header timeout (10 s by default) would close it
# under us: a request on a connection the hub is closing fails and must be retried.
IDLE_KEEPALIVE_S = 5.0


class HubError(AgentError, RuntimeError):
    """The hub could not be used for this request."""


class HubUnavailable(HubError):
    """Transient: unreachable, slow, overloaded, or an answer that is not the protocol."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HubAuthError(HubError):
    """401/403: the hub refuses this gate's token (or its client certificate)."""


class HubConflict(HubError):
    """409: the hub holds other bodies under some of the uploaded entry ids."""

    def __init__(self, message: str, entry_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.entry_ids = tuple(entry_ids)


class HubGone(HubError):
    """410: what was asked for is no longer kept (revocation deltas: fetch the snapshot)."""


class HubRefused(HubError):
    """Another 4xx: the hub will not accept this request as it is."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A 2xx or 304 answer; ``headers`` are looked up in any case (aiohttp sends "Etag")."""

    status: int
    body: bytes
    headers: Mapping[str, str]


def tls_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A client TLS context: verifies the hub with ``ca`` (else the system's CAs) and presents
    ``cert``/``key`` for mTLS when given. Raises OSError or ssl.SSLError for unusable files."""
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    return context


class HubHTTP:
    """A session against one hub. ``last_ok``/``last_down`` (monotonic) say when it last
    answered a request with success, and when it was last unreachable or failing (5xx)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float,
        user_agent: str,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Raises ValueError for a URL that is not http(s)://host[:port][/prefix]."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError("hub URL must be http(s)://host[:port][/prefix]")
        self.base_url = base_url.rstrip("/")
        self._token, self._timeout_s, self._tls = token, timeout_s, tls
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self.last_ok: float | None = None
        self.last_down: float | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        cap: int = protocol.MAX_BODY_BYTES,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> Reply:
        """One request to ``path`` (already safe: ids are checked); returns 2xx and 304 answers
        of at most ``cap`` bytes. Raises a HubError for everything else."""
        url = yarl.URL(self.base_url + path, encoded=True)
        if params:
            url = url.update_query(params)
        what = f"{method} {path}"
        try:
            async with self._open().request(
                method, url, data=body, headers=self._headers(headers, body is not None),
                allow_redirects=False, timeout=client_timeout,
            ) as resp:  # fmt: skip
                raw = await _read_capped(resp, cap, what)
                status, resp_headers = resp.status, CIMultiDict(resp.headers)  # any case
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.last_down = time.monotonic()
            raise HubUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        except HubUnavailable:
            self.last_down = time.monotonic()
            raise
        if 200 <= status < 300 or status == 304:
            self.last_ok = time.monotonic()
            return Reply(status, raw, resp_headers)
        raise self._refusal(what, status, raw, resp_headers)

    async def close(self) -> None:
        """Close the session; idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _headers(self, extra: Mapping[str, str] | None, has_body: bool) -> dict[str, str]:
        """The only place the token is used."""
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers | dict(extra or {})

    def _refusal(self, what: str, status: int, raw: bytes, headers: Mapping[str, str]) -> HubError:
        try:
            error: protocol.ErrorBody | None = protocol.parse(raw, protocol.ErrorBody)
        except protocol.ProtocolError:
            error = None
        detail = "no error body" if error is None else f"{error.error}: {error.message[:200]}"
        message = f"{what}: HTTP {status} ({detail})"
        if status in _TRANSIENT or status >= 500:
            self.last_down = time.monotonic()
            return HubUnavailable(
                message, parse_retry_after(headers.get("Retry-After"), time.time())
            )
        if status in (401, 403):
            return HubAuthError(message)
        if status == 409:
            return HubConflict(message, error.conflicts if error is not None else ())
        if status == 410:
            return HubGone(message)
        return HubRefused(message)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(
                    ssl=self._tls if self._tls is not None else True,
                    keepalive_timeout=IDLE_KEEPALIVE_S,
                ),
            )
        return self._session


async def _read_capped(resp: aiohttp.ClientResponse, cap: int, what: str) -> bytes:
    """The whole body, refusing more than ``cap`` bytes; raises HubUnavailable."""
    try:
        return await read_capped(resp, cap)
    except BodyTooLarge as exc:
        raise HubUnavailable(f"{what}: {exc}") from None
