"""The hub server (`gate-agent hub`): the ``/v1`` endpoints of :mod:`sync.protocol` on aiohttp.

Beyond the protocol: ``GET /v1/health`` (no auth), ``GET /console`` (the security console page
and its script and style; the page reads its data with a console token), the console's alert
workflow and ticket search (:mod:`sync.hub_console_api`), the venue figures ``GET /v1/venue``
(:mod:`sync.hub_venue`) and Prometheus ``GET /metrics`` (:mod:`sync.hub_metrics`), the holder's
wallet page ``GET /wallet`` and, with ``[wallet]``, ``POST /v1/wallet/tickets``
(:mod:`sync.hub_wallet`) and, with ``[webhook]``, each new alert POSTed to a URL
(:mod:`sync.hub_webhook`).

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
  naming the field, an oversize body 413 (``too_large``); unexpected faults are 500 without internals,
  logged; a failing database is 503 with Retry-After. Tokens are only ever logged as a short hash.

This module sets the application up and runs it; the handlers are :mod:`sync.hub_handlers`, the
caller checks :mod:`sync.hub_auth`, the per-process state and error answer :mod:`sync.hub_state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources

from aiohttp import web

from agent import keys
from agent.errors import AgentError
from agent.issuer import TicketSigner
from agent.redact import printable
from sync import hub_console_api, hub_limits, hub_metrics, hub_wallet, protocol
from sync.hub_admin import (
    SnapshotCache,
    load_list_key,
    opened_store,
    refresh_list,
)
from sync.hub_config import HubConfig, WebhookSection, ssl_context
from sync.hub_handlers import (
    CONSOLE_FILES,
    alerts,
    claims,
    console,
    feed,
    gates,
    health,
    heartbeat,
    revocations,
    set_apart,
    snapshot,
    trust_bundle,
    upload,
)
from sync.hub_state import HUB, HttpError, Hub
from sync.hub_store import ConflictError, HubStore, HubStoreError
from sync.hub_trust_file import TrustFile
from sync.hub_twins import RunNotes
from sync.hub_watch import Presence, watch
from sync.hub_webhook import AlertWebhook
from sync.log_throttle import client_net, request_log
from sync.protocol import (
    MAX_BODY_BYTES,
)

log = logging.getLogger(__name__)

_RETRY_AFTER_S = 5
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


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
    except ConnectionResetError:  # the client went away mid-request (a cut link): nobody reads
        # Anyone can cut connections: one line per client a minute, LOG_BUDGET lines in all.
        more = request.app[HUB].lost_connections.due(client_net(request.remote or "?"))
        log.log(logging.DEBUG if more is None else logging.INFO,
                "%s %s: the client's connection was lost%s", request.method,
                printable(request.path, 200), more or "")  # fmt: skip
        return HttpError(400, "connection lost", error="connection_lost").response()
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
    return {name: (package / name).read_bytes() for name, _ in CONSOLE_FILES.values()}


def make_app(config: HubConfig, store: HubStore) -> web.Application:
    """The hub's aiohttp application over ``store``.

    Reads the list key and the trust bundle; raises IssuerError or TrustError when unusable.
    """
    list_key = load_list_key(config)
    snapshots = SnapshotCache(store, list_key, config.hub.list_validity_s)
    offline_s = config.hub.gate_offline_after_s  # also how late a run's last_seen may be
    hub = Hub(
        config, store, snapshots, TrustFile(config), _console_assets(),
        presence=Presence(offline_s), run_notes=RunNotes(offline_s),
    )  # fmt: skip
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors])
    app[HUB] = hub
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_stop)
    app.cleanup_ctx.append(functools.partial(_list_refresher, list_key=list_key))
    app.cleanup_ctx.append(_watcher)
    if config.webhook is not None:
        app.cleanup_ctx.append(functools.partial(_webhook, section=config.webhook))
    app.router.add_post("/v1/gates/{gate}/entries:batch", upload)
    app.router.add_post("/v1/gates/{gate}/heartbeat", heartbeat)
    app.router.add_get("/v1/venues/{venue}/entries", feed)
    app.router.add_get("/v1/venues/{venue}/set-apart", set_apart)
    app.router.add_get("/v1/venues/{venue}/claims", claims)
    app.router.add_get("/v1/revocations", revocations)
    app.router.add_get("/v1/revocations/snapshot", snapshot)
    app.router.add_get("/v1/trust", trust_bundle)
    app.router.add_get("/v1/alerts", alerts)
    hub_console_api.add_routes(app)  # one alert, its workflow, the open count, ticket search
    app.router.add_get("/v1/gates", gates)
    app.router.add_get("/v1/health", health)
    hub_metrics.install(app, hub)  # GET /v1/venue, GET /metrics, upload timing
    for path in CONSOLE_FILES:
        app.router.add_get(path, console)
    hub_wallet.add_page_routes(app)  # GET /wallet: the holder's page, no token
    if config.wallet is not None:  # POST /v1/wallet/tickets with an issuing token
        signer = TicketSigner.load(config.wallet.issuer_keys)
        hub_wallet.add_issuing_routes(app, signer, config.wallet.max_per_minute)
    return app


async def _list_refresher(app: web.Application, list_key: keys.PrivateKey) -> AsyncIterator[None]:
    """Keep the gates' lists fresh: an empty delta when no revocation came for a while.

    The first one is issued before the hub serves: a gate (or an admin's ``hub revoke``) that
    reaches a newly started hub finds its list already there, not one being written under it.
    """
    hub = app[HUB]
    await _refresh_list_once(hub, list_key)
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


async def _webhook(app: web.Application, section: WebhookSection) -> AsyncIterator[None]:
    """POST each new alert to the configured webhook (sync.hub_webhook); never in ingest's way."""
    task = asyncio.create_task(AlertWebhook(section, app[HUB].store).run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _refresh_lists(hub: Hub, list_key: keys.PrivateKey) -> None:
    every = min(60.0, hub.config.hub.list_refresh_s / 4)
    while True:
        await asyncio.sleep(every)
        await _refresh_list_once(hub, list_key)


async def _refresh_list_once(hub: Hub, list_key: keys.PrivateKey) -> None:
    try:
        version = await refresh_list(hub.store, hub.config, list_key, hub.clock())
    except HubStoreError as exc:  # another hub process refreshed first, or the store failed
        log.warning("revocation list refresh skipped: %s", exc)
    except AgentError as exc:
        log.error("revocation list refresh failed: %s", exc)
    else:
        if version is not None:
            log.info("revocation list version %d issued (no changes: keeps gates fresh)", version)


async def _stop(app: web.Application) -> None:
    app[HUB].stopping.set()  # long-polls return at once instead of holding the shutdown


async def run(config: HubConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns 0. Raises ConfigError, HubStoreError, TrustError..."""
    tls = ssl_context(config)
    async with opened_store(config, create=True) as store:
        app = make_app(config, store)
        access_log = logging.getLogger("sync.hub.access") if config.log.level == "DEBUG" else None
        runner = web.AppRunner(
            app, access_log=access_log, shutdown_timeout=5.0, lingering_time=hub_limits.LINGER_S,
            # No compressed bodies: gates send plain JSON, and a body that is not what its
            # Content-Encoding says failed in aiohttp with a 500 and tracebacks (a 400 now).
            auto_decompress=False, logger=request_log("sync.hub.requests"),
        )  # fmt: skip
        await runner.setup()
        try:
            await _serve(config, runner, tls)
        finally:
            await runner.cleanup()
    log.info("hub %s stopped", config.hub.venue)
    return 0


async def _known_clients(hub: Hub) -> hub_limits.KnownClients:
    """The hub's known clients, first those its gates' heartbeats came from lately."""
    now = hub.clock()
    try:
        heard = await hub.store.heard_from(now - hub_limits.KNOWN_FOR_S, hub_limits.MAX_KNOWN)
    except HubStoreError as exc:
        log.warning("the addresses the gates were heard from are not read (%s): the connections"
                    " kept for known clients wait for each gate's next request", exc)  # fmt: skip
        heard = []
    hub.known_clients.seed(heard, now)
    return hub.known_clients


async def _serve(config: HubConfig, runner: web.AppRunner, tls: ssl.SSLContext | None) -> None:
    h = config.hub
    limits = hub_limits.fit_nofile(
        hub_limits.Limits(h.max_connections, h.max_connections_per_client, h.header_timeout_s)
    )
    known = await _known_clients(runner.app[HUB])
    site = hub_limits.GuardedSite(
        runner, config.host, config.port, limits, ssl_context=tls, known=known
    )
    try:
        await site.start()
    except OSError as exc:  # the address may appear later: not a config error, systemd retries
        raise AgentError(
            f"{config.path}: [hub] listen: cannot listen on {config.hub.listen}: {exc.strerror or exc}"
        ) from exc
    host, port = runner.addresses[0][:2]
    log.info("hub %s listening on %s:%d (%s)", config.hub.venue, host, port, config.scheme)
    for warning in config.warnings():
        log.warning("%s", warning)
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
