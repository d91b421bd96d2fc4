"""The hub server (`gate-agent hub`): the ``/v1`` endpoints of :mod:`sync.protocol` on aiohttp.

Beyond the protocol: ``GET /v1/health`` (no auth) and ``GET /console`` (the security console page
and its script and style; the page reads its data with a console token).

Rules every handler follows:

- Auth is ``Authorization: Bearer <token>``, looked up by SHA-256 in the store on every request
  (so ``hub token --revoke-gate`` takes effect at once). Missing or unknown: 401 with
  ``WWW-Authenticate: Bearer``. A gate token bound to another gate, a body for another gate than
  the path, a console token on a gate endpoint: 403. With ``[tls] client_ca``, a gate token must
  also come with a client certificate of its gate (``hub_config.client_cert_gate``: exactly one
  subject CN, the gate id; an extended key usage that names clientAuth and not serverAuth; not a
  CA), so a server certificate of the same CA is never a gate's; that 403 has the error code
  ``client_certificate`` and says why, so the gate can tell it from a refused token. Nothing is
  stored on 401/403.
- What the log says besides requests (TLS refusals with the reason, gates connecting and going
  quiet, revocation lists issued, alerts raised) is :mod:`sync.hub_watch`.
- Every error answer is an :class:`sync.protocol.ErrorBody`; bad bodies and parameters are 400
  naming the field (oversize too: ``too_large``); unexpected faults are 500 without internals,
  logged; a failing database is 503 with Retry-After. Tokens are only ever logged as a short hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import math
import signal
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources

from aiohttp import web

from agent import keys
from agent.errors import AgentError
from agent.redact import secret_label
from sync import hub_limits, protocol
from sync.hub_admin import (
    SnapshotCache,
    TrustFile,
    document_version,
    hash_token,
    load_list_key,
    opened_store,
    refresh_list,
)
from sync.hub_config import HubConfig, client_cert_gate, ssl_context
from sync.hub_store import ConflictError, HubStore, HubStoreError, RefusedError, TokenInfo
from sync.hub_watch import Presence, watch
from sync.protocol import (
    MAX_BODY_BYTES,
    MAX_DOCUMENT_CHARS,
    MAX_PAGE,
    MAX_WAIT_S,
    AlertPage,
    BatchUpload,
    ErrorBody,
    FeedPage,
    GatesPage,
    Heartbeat,
    HeartbeatAck,
    Message,
    RevocationPage,
)

log = logging.getLogger(__name__)

_MAX_TOKEN_CHARS = 256
_RETRY_AFTER_S = 5
_DELTA_CHUNK = 32  # revocation deltas read per store call (each up to MAX_DOCUMENT_CHARS)
_REALM = 'Bearer realm="gate-agent hub"'
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_CONSOLE_FILES = {
    "/console": ("console.html", "text/html"),
    "/console/console.js": ("console.js", "text/javascript"),
    "/console/console.css": ("console.css", "text/css"),
}
_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    503: "unavailable",
}


class HttpError(Exception):
    """An error answer: raised by handlers, turned into an ErrorBody by the middleware."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error: str | None = None,
        headers: dict[str, str] | None = None,
        conflicts: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(error or _ERROR_CODES.get(status, "error"), message, conflicts)
        self.headers = headers or {}

    def response(self) -> web.Response:
        return _json(self.body, status=self.status, headers=self.headers)


@dataclass
class Hub:
    """What one hub process serves from: its config, store, signed documents and console."""

    config: HubConfig
    store: HubStore
    snapshots: SnapshotCache
    trust: TrustFile
    console: dict[str, bytes]
    clock: Callable[[], float] = time.time
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    presence: Presence = field(default_factory=lambda: Presence(30.0))

    @property
    def mtls(self) -> bool:
        return self.config.tls is not None and self.config.tls.client_ca is not None

    async def wait_feed(self, after: int, wait_s: float) -> None:
        """Wait for a feed entry after ``after``, ``wait_s`` or the hub stopping, what comes first."""
        waiter = asyncio.ensure_future(self.store.wait_feed(after, wait_s))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        error = None if waiter.cancelled() else waiter.exception()
        if error is not None:
            raise error


HUB = web.AppKey("hub", Hub)


# --- helpers -------------------------------------------------------------------------------------


def _json(
    message: Message, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=protocol.encode(message),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not lo <= int(raw) <= hi:
        raise HttpError(400, f"{name}: expected an integer {lo}..{hi}")
    return int(raw)


def _query_wait(request: web.Request, max_wait_s: float) -> float:
    """``wait`` in seconds (0..30); more than the hub allows is shortened to its max_wait_s."""
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= MAX_WAIT_S:
        raise HttpError(400, f"wait: expected a number of seconds 0..{MAX_WAIT_S:g}")
    return min(value, max_wait_s)


def _path_gate(request: web.Request) -> str:
    gate = request.match_info["gate"]
    if not protocol.is_id(gate):
        raise HttpError(400, "gate: expected an id of 1-64 letters, digits or ._:-")
    return gate


async def _body(request: web.Request) -> bytes:
    too_large = f"body is over the {MAX_BODY_BYTES} byte limit"
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise HttpError(400, too_large, error="too_large")
    timeout_s = request.app[HUB].config.hub.body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise HttpError(400, too_large, error="too_large") from None
    except TimeoutError:  # a trickling body holds a connection: cut it (aiohttp then closes it)
        raise HttpError(
            408,
            f"the request body did not arrive within {timeout_s:g} s",
            error="body_timeout",
            headers={"Connection": "close"},
        ) from None


def _etag_matches(request: web.Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags or etag.strip('"') in tags


def _peer_gate(request: web.Request) -> tuple[str | None, str]:
    """:func:`client_cert_gate` of the connection's client certificate."""
    transport = request.transport
    tls = transport.get_extra_info("ssl_object") if transport is not None else None
    der = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLObject) else None
    return client_cert_gate(der)


def _peer_host(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


# --- auth ----------------------------------------------------------------------------------------


async def _caller(request: web.Request, hub: Hub) -> TokenInfo:
    """The token's owner; raises HttpError 401 when the token is missing or unknown."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise HttpError(401, "missing bearer token", headers={"WWW-Authenticate": _REALM})
    digest = hash_token(token)
    info = None if len(token) > _MAX_TOKEN_CHARS else await hub.store.token(digest)
    if info is None or not hmac.compare_digest(info.token_hash, digest):
        log.warning(
            "unknown token %s refused (%s %s)", secret_label(token), request.method, request.path
        )
        raise HttpError(
            401, "unknown token", headers={"WWW-Authenticate": _REALM + ', error="invalid_token"'}
        )
    return info


async def _gate_caller(request: web.Request, hub: Hub, gate: str | None) -> TokenInfo:
    """A gate token (for ``gate`` when given, with its client certificate under mTLS) or 403."""
    info = await _caller(request, hub)
    if info.role != "gate" or info.gate_id is None:
        raise HttpError(403, "a console token cannot be used for gate endpoints")
    if gate is not None and info.gate_id != gate:
        log.warning("token of gate %s refused for gate %s", info.gate_id, gate)
        raise HttpError(403, "this token belongs to another gate")
    if hub.mtls:
        cn, why = _peer_gate(request)
        if cn != info.gate_id:
            why = why if cn is None else f"client certificate of {cn!r}"
            log.warning("gate %s: %s refused (from %s)", info.gate_id, why, _peer_host(request))
            raise HttpError(
                403, f"a client certificate for this gate is required ({why})",
                error="client_certificate",
            )  # fmt: skip
    hub.presence.request(info.gate_id, _peer_host(request))
    return info


async def _reader(request: web.Request, hub: Hub, *, gates_too: bool) -> TokenInfo:
    """A console token, or (``gates_too``) a gate token as :func:`_gate_caller` checks it."""
    info = await _caller(request, hub)
    if info.role == "console":
        return info
    if not gates_too:
        raise HttpError(403, "this needs a console token")
    return await _gate_caller(request, hub, None)


# --- handlers ------------------------------------------------------------------------------------


async def upload(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    gate = _path_gate(request)
    await _gate_caller(request, hub, gate)
    batch = protocol.parse(await _body(request), BatchUpload)
    if batch.gate_id != gate:
        raise HttpError(403, "gate_id: the batch is for another gate than the path")
    try:
        ack = await hub.store.ingest(gate, batch.entries, hub.clock())
    except RefusedError as exc:
        log.error("gate %s: batch refused: %s", gate, exc)
        raise HttpError(422, str(exc), error="refused") from None
    except ConflictError as exc:
        log.error("gate %s: %d entries conflict with stored ones", gate, len(exc.entry_ids))
        raise HttpError(
            409,
            f"{len(exc.entry_ids)} entries reuse an entry_id or gate_seq with another body;"
            " nothing of the batch was stored",
            conflicts=exc.entry_ids,
        ) from None
    log.debug("gate %s: %d inserted through %d", gate, ack.inserted, ack.acked_through_seq)
    return _json(ack)


async def feed(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await _gate_caller(request, hub, None)
    if request.match_info["venue"] != hub.config.hub.venue:
        raise HttpError(404, "this hub does not serve that venue")
    after = _query_int(request, "after", 0, 0, protocol.INT63)
    limit = _query_int(request, "limit", MAX_PAGE, 1, MAX_PAGE)
    wait = _query_wait(request, hub.config.hub.max_wait_s)
    entries, next_cursor = await hub.store.feed(after, limit)
    # next < after: the store is newer than the reader's cursor; it learns that at once.
    if not entries and wait > 0 and next_cursor >= after:
        await hub.wait_feed(after, wait)
        entries, next_cursor = await hub.store.feed(after, limit)
    return _json(FeedPage(tuple(entries), next_cursor, hub.clock()))


async def revocations(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await _gate_caller(request, hub, None)
    after = _query_int(request, "after", 0, 0, protocol.INT63)
    page = await _revocation_page(hub.store, after)
    if page is None:
        raise HttpError(
            410,
            f"deltas after version {after} are no longer kept: fetch /v1/revocations/snapshot",
            error="gone",
        )
    return _json(page)


async def _revocation_page(store: HubStore, after: int) -> RevocationPage | None:
    """The first deltas after ``after`` that fit one page (count and body size), read
    ``_DELTA_CHUNK`` at a time so large deltas are never all in memory at once; the gate asks
    again for more. None when the first ones are no longer kept (410)."""
    texts: list[str] = []
    version = after
    budget = MAX_BODY_BYTES - 1024
    while len(texts) < MAX_PAGE:
        chunk = await store.revocation_deltas(version, min(_DELTA_CHUNK, MAX_PAGE - len(texts)))
        if chunk is None:  # pruned meanwhile: what was read is still a valid page
            return RevocationPage(version, tuple(texts)) if texts else None
        taken = 0
        for data in chunk:
            text = data.decode("ascii")
            size = len(json.dumps(text))
            if len(text) > MAX_DOCUMENT_CHARS or (texts and size > budget):
                break
            texts.append(text)
            budget -= size + 1
            taken += 1
        if taken:
            version = document_version(chunk[taken - 1])
        if taken < len(chunk) or len(chunk) < _DELTA_CHUNK:
            break
    return RevocationPage(version, tuple(texts))


async def snapshot(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await _gate_caller(request, hub, None)
    snap = await hub.snapshots.get()
    if snap is None:
        raise HttpError(404, "no revocation list has been issued yet")
    etag = f'"rev-{snap.version}"'
    if _etag_matches(request, etag):
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=snap.data, content_type="application/json", headers={"ETag": etag})


async def trust_bundle(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await _gate_caller(request, hub, None)
    doc = hub.trust.current()
    if _etag_matches(request, doc.etag):
        return web.Response(status=304, headers={"ETag": doc.etag})
    return web.Response(body=doc.data, content_type="application/json", headers={"ETag": doc.etag})


async def heartbeat(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    gate = _path_gate(request)
    await _gate_caller(request, hub, gate)
    hb = protocol.parse(await _body(request), Heartbeat)
    if hb.gate_id != gate:
        raise HttpError(403, "gate_id: the heartbeat is for another gate than the path")
    now = hub.clock()
    await hub.store.heartbeat(hb, now)
    hub.presence.heartbeat(gate)
    return _json(HeartbeatAck(now))


async def alerts(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await _reader(request, hub, gates_too=True)
    limit = _query_int(request, "limit", MAX_PAGE, 1, MAX_PAGE)
    if "after" in request.query:  # following: oldest first after the cursor
        after = _query_int(request, "after", 0, 0, protocol.INT63)
        found = await hub.store.alerts(after, limit)
        return _json(AlertPage(tuple(found), found[-1].alert_id if found else after))
    # paging back: newest first below ``before``; next is the cursor for the page before it
    before = _query_int(request, "before", protocol.INT63, 1, protocol.INT63)
    found = await hub.store.recent_alerts(before, limit)
    return _json(AlertPage(tuple(found), found[-1].alert_id if found else before))


async def gates(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await _reader(request, hub, gates_too=False)
    return _json(GatesPage(tuple(await hub.store.gates(hub.clock()))))


async def health(request: web.Request) -> web.Response:
    venue = request.app[HUB].config.hub.venue
    return web.json_response({"v": protocol.PROTOCOL_VERSION, "ok": True, "venue": venue})


async def console(request: web.Request) -> web.Response:
    name, content_type = _CONSOLE_FILES[request.path]
    body = request.app[HUB].console[name]
    return web.Response(body=body, content_type=content_type, charset="utf-8")


# --- application ---------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as an ErrorBody: 4xx for the client's faults, 503/500 for the hub's."""
    try:
        return await handler(request)
    except HttpError as exc:
        return exc.response()
    except protocol.ProtocolError as exc:
        return HttpError(400, str(exc)).response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return HttpError(exc.status, exc.reason, headers=_allow(exc)).response()
    except asyncio.CancelledError:
        raise
    except HubStoreError as exc:
        if isinstance(exc, ConflictError):  # expected only where handled: a bug elsewhere
            log.exception("%s %s failed", request.method, request.path)
            return HttpError(500, "internal error", error="internal").response()
        log.error("%s %s: store failed: %s", request.method, request.path, exc)
        headers = {"Retry-After": str(_RETRY_AFTER_S)}
        return HttpError(503, "the hub's database is unavailable", headers=headers).response()
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return HttpError(500, "internal error", error="internal").response()


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/console"):
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Frame-Options"] = "DENY"


def _console_assets() -> dict[str, bytes]:
    package = resources.files("sync")
    return {name: (package / name).read_bytes() for name, _ in _CONSOLE_FILES.values()}


def make_app(config: HubConfig, store: HubStore) -> web.Application:
    """The hub's aiohttp application over ``store``.

    Reads the list key and the trust bundle; raises IssuerError or TrustError when unusable.
    """
    list_key = load_list_key(config)
    snapshots = SnapshotCache(store, list_key, config.hub.list_validity_s)
    presence = Presence(config.hub.gate_offline_after_s)
    hub = Hub(config, store, snapshots, TrustFile(config), _console_assets(), presence=presence)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors])
    app[HUB] = hub
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_stop)
    app.cleanup_ctx.append(functools.partial(_list_refresher, list_key=list_key))
    app.cleanup_ctx.append(_watcher)
    app.router.add_post("/v1/gates/{gate}/entries:batch", upload)
    app.router.add_post("/v1/gates/{gate}/heartbeat", heartbeat)
    app.router.add_get("/v1/venues/{venue}/entries", feed)
    app.router.add_get("/v1/revocations", revocations)
    app.router.add_get("/v1/revocations/snapshot", snapshot)
    app.router.add_get("/v1/trust", trust_bundle)
    app.router.add_get("/v1/alerts", alerts)
    app.router.add_get("/v1/gates", gates)
    app.router.add_get("/v1/health", health)
    for path in _CONSOLE_FILES:
        app.router.add_get(path, console)
    return app


async def _list_refresher(app: web.Application, list_key: keys.PrivateKey) -> AsyncIterator[None]:
    """Keep the gates' lists fresh: an empty delta when no revocation came for a while."""
    hub = app[HUB]
    task = asyncio.create_task(_refresh_lists(hub, list_key))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _watcher(app: web.Application) -> AsyncIterator[None]:
    """Log gates going quiet, revocation lists issued and alerts raised (sync.hub_watch)."""
    hub = app[HUB]
    task = asyncio.create_task(watch(hub.store, hub.presence))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _refresh_lists(hub: Hub, list_key: keys.PrivateKey) -> None:
    every = min(60.0, hub.config.hub.list_refresh_s / 4)
    while True:
        try:
            version = await refresh_list(hub.store, hub.config, list_key, hub.clock())
        except HubStoreError as exc:  # another hub process refreshed first, or the store failed
            log.warning("revocation list refresh skipped: %s", exc)
        except AgentError as exc:
            log.error("revocation list refresh failed: %s", exc)
        else:
            if version is not None:
                log.info(
                    "revocation list version %d issued (no changes: keeps gates fresh)", version
                )
        await asyncio.sleep(every)


async def _stop(app: web.Application) -> None:
    app[HUB].stopping.set()  # long-polls return at once instead of holding the shutdown


async def run(config: HubConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns 0. Raises ConfigError, HubStoreError, TrustError..."""
    tls = ssl_context(config)
    async with opened_store(config) as store:
        app = make_app(config, store)
        access_log = logging.getLogger("sync.hub.access") if config.log.level == "DEBUG" else None
        runner = web.AppRunner(
            app, access_log=access_log, shutdown_timeout=5.0, lingering_time=hub_limits.LINGER_S
        )
        await runner.setup()
        try:
            await _serve(config, runner, tls)
        finally:
            await runner.cleanup()
    log.info("hub %s stopped", config.hub.venue)
    return 0


async def _serve(config: HubConfig, runner: web.AppRunner, tls: ssl.SSLContext | None) -> None:
    h = config.hub
    limits = hub_limits.fit_nofile(
        hub_limits.Limits(h.max_connections, h.max_connections_per_client, h.header_timeout_s)
    )
    site = hub_limits.GuardedSite(runner, config.host, config.port, limits, ssl_context=tls)
    try:
        await site.start()
    except OSError as exc:  # the address may appear later: not a config error, systemd retries
        raise AgentError(
            f"{config.path}: [hub] listen: cannot listen on {config.hub.listen}: {exc.strerror or exc}"
        ) from exc
    host, port = runner.addresses[0][:2]
    log.info("hub %s listening on %s:%d (%s)", config.hub.venue, host, port, config.scheme)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("hub %s stopping", config.hub.venue)
