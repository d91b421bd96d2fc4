"""The holder's wallet page and the hub's demo issuing endpoint for rotating tickets (TK2).

``GET /wallet`` (and its script, encoder and style) needs no token: the page makes a
non-extractable P-256 key in the browser, has it certified and shows the rotating QR code offline.
The same files are what `gate-agent wallet serve` serves on 127.0.0.1 (:func:`add_page_routes`).

``POST /v1/wallet/tickets`` (only with ``[wallet] issuer_keys``; without it 404) takes a token of
role ``issuing`` (`gate-agent hub token --issuing NAME`) and the JSON body::

    {"device_key": "<base64url of the raw P-256 public key: 65 bytes uncompressed or 33
                    compressed>", "event": N, "zones": [1, 2]}   (zones optional: all)

and answers ``{"ticket": "TK2S:..."}``, the static part signed with the issuer key folder of
``[wallet] issuer_keys``. Every field is checked strictly (400 naming it); each token may issue
``[wallet] max_per_minute`` tickets a minute (over it: 429 with Retry-After). The ticket is logged
by its short id only, never its text or the device key.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections import deque
from importlib import resources
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import IssuerError
from agent.issuer import TicketSigner
from agent.redact import short_id
from agent.tickets import tk2
from sync.hub_auth import caller
from sync.hub_handlers import read_body
from sync.hub_state import HUB, HttpError

log = logging.getLogger(__name__)

WALLET_FILES = {
    "/wallet": ("wallet.html", "text/html"),
    "/wallet/wallet.js": ("wallet.js", "text/javascript"),
    "/wallet/qr.js": ("qr.js", "text/javascript"),
    "/wallet/wallet.css": ("wallet.css", "text/css"),
}
# The page talks to its own origin only; the QR code is drawn on a canvas (no images loaded).
WALLET_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
MAX_BODY = 1024
_WINDOW_S = 60.0
_ASSETS = web.AppKey("wallet_assets", dict)
_ISSUER = web.AppKey("wallet_issuer", object)


def wallet_assets() -> dict[str, bytes]:
    """The page's files, read once from this package."""
    package = resources.files("sync")
    return {name: (package / name).read_bytes() for name, _ in WALLET_FILES.values()}


async def _page(request: web.Request) -> web.Response:
    name, content_type = WALLET_FILES[request.path]
    body = request.app[_ASSETS][name]
    response = web.Response(body=body, content_type=content_type, charset="utf-8")
    response.headers["Content-Security-Policy"] = WALLET_CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def add_page_routes(app: web.Application) -> None:
    """``GET /wallet`` and its files (no token: the page holds nothing secret)."""
    app[_ASSETS] = wallet_assets()
    for path in WALLET_FILES:
        app.router.add_get(path, _page)


class WalletIssuer:
    """The hub's issuing side: the issuer key folder and each token's recent issuances."""

    def __init__(self, signer: TicketSigner, max_per_minute: int) -> None:
        self.signer = signer
        self.max_per_minute = max_per_minute
        self._recent: dict[str, deque[float]] = {}

    def admit(self, token_hash: str, now: float) -> float:
        """0 when this token may issue one more now (and counts it), else seconds to wait."""
        times = self._recent.setdefault(token_hash, deque())
        while times and times[0] <= now - _WINDOW_S:
            times.popleft()
        if len(times) >= self.max_per_minute:
            return max(1.0, times[0] + _WINDOW_S - now)
        times.append(now)
        if len(self._recent) > 10_000:  # tokens are few; never let the map grow unbounded
            self._recent = {k: v for k, v in self._recent.items() if v and v[-1] > now - _WINDOW_S}
        return 0.0


def add_issuing_routes(app: web.Application, signer: TicketSigner, max_per_minute: int) -> None:
    """``POST /v1/wallet/tickets`` issuing with ``signer`` (the hub's ``[wallet] issuer_keys``)."""
    app[_ISSUER] = WalletIssuer(signer, max_per_minute)
    app.router.add_post("/v1/wallet/tickets", _issue)


def device_key(value: Any) -> bytes:
    """The 33-byte compressed point of a base64url raw P-256 key; HttpError 400 when it is none."""
    bad = HttpError(
        400, "device_key: expected base64url of a raw P-256 public key (65 or 33 bytes)"
    )
    if not isinstance(value, str) or not 40 <= len(value) <= 100 or not value.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise bad from None
    if len(raw) not in (33, 65):
        raise bad
    try:
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise HttpError(400, "device_key: not a point on the P-256 curve") from None
    return tk2.compressed(point)


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise HttpError(400, f"{name}: expected an integer {lo}..{hi}")
    return value


def _zones(value: Any) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= 16:
        raise HttpError(400, "zones: expected a list of 1-16 zone numbers 1..16")
    zones = [_int(z, "zones", 1, 16) for z in value]
    if len(set(zones)) != len(zones):
        raise HttpError(400, "zones: a zone is listed twice")
    return zones


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise HttpError(400, "body: expected Content-Type application/json")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise HttpError(413, f"body: at most {MAX_BODY} bytes", error="too_large")
    raw = await read_body(request)  # the whole body, however it arrives, within body_timeout_s
    if len(raw) > MAX_BODY:
        raise HttpError(413, f"body: at most {MAX_BODY} bytes", error="too_large")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # bad UTF-8 and JSON are ValueErrors
        raise HttpError(400, "body: not a JSON object") from None
    if not isinstance(data, dict):
        raise HttpError(400, "body: not a JSON object")
    unknown = sorted(set(data) - {"device_key", "event", "zones"})
    if unknown:
        raise HttpError(400, f"{unknown[0][:40]}: unknown field")
    return data


async def _issue(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    info = await caller(request, hub)
    if info.role != "issuing":
        raise HttpError(403, "this needs an issuing token (`gate-agent hub token --issuing NAME`)")
    issuer = request.app[_ISSUER]
    assert isinstance(issuer, WalletIssuer)
    data = await _body(request)
    if "device_key" not in data:
        raise HttpError(400, "device_key: missing")
    if "event" not in data:
        raise HttpError(400, "event: missing")
    key = device_key(data["device_key"])
    event = _int(data["event"], "event", 0, 0xFFFF_FFFF)
    zones = _zones(data.get("zones"))
    # The key the bundle served marks retired or compromised signs nothing (found in a review:
    # `issue` refused such a key, the hub still signed tickets every gate would refuse).
    status = hub.trust.issuer_status(issuer.signer.kid)
    if status in ("retired", "compromised"):
        log.error(
            "wallet: issuer key %s is %s in the trust bundle served", issuer.signer.kid, status
        )
        raise HttpError(
            409,
            f"this hub's issuer key {issuer.signer.kid} is {status} in the trust bundle it serves:"
            " no ticket issued ([wallet] issuer_keys needs an active key)",
            error="issuer_not_active",
        )
    events = issuer.signer.events
    if events is not None and str(event) not in events:
        raise HttpError(400, f"event: this issuer issues for events {', '.join(events)} only")
    wait = issuer.admit(info.token_hash, time.monotonic())
    if wait:
        log.warning("issuing token %s over its rate limit", info.name)
        raise HttpError(
            429,
            f"at most {issuer.max_per_minute} tickets a minute for one token",
            error="rate_limited",
            headers={"Retry-After": str(int(wait + 0.999))},
        )
    try:
        ticket = issuer.signer.rotating_ticket(key, event=event, zones=zones)
    except IssuerError as exc:
        raise HttpError(400, str(exc)) from None
    ticket_id = tk2.static_bytes(ticket)[5:13]
    log.info(
        "rotating ticket %s issued for event %d to %s",
        short_id("tk1:" + ticket_id.hex()),
        event,
        info.name,
    )
    return web.json_response({"ticket": ticket})
