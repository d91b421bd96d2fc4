"""A loopback pretix stand-in that answers with the real responses recorded in the vectors.

Only what the gate uses: device initialisation, the event, one check-in list, revoked and blocked
secrets (inclusive ``created_since``/``updated_since``, paging via ``next``), the event's check-in
lists, orders (``modified_since``, ``created_since``, each wrapping one position of ``positions``,
created in their order one second apart from ``ORDERS_CREATED``, paid unless ``orders`` says
otherwise; cancelled positions only with ``include_canceled_positions``), redeem, failed
check-ins and annul. Every request is recorded
(``calls``) so tests can assert on exactly what the gate sent. Faults on demand: ``fault`` =
"5xx" (503 with Retry-After), "slow" (answers after ``slow_s``), "malformed" (200, broken JSON),
"401" (token revoked), "garbage" (not HTTP: a status line without a code); ``fault_on`` limits the
fault to requests whose path ends with it (``"/redeem/"``: downloads work, uploads fail). A lossy
link on demand: ``lose_every`` = n answers every n-th GET 502 (a front proxy that lost pretix).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from wsgiref.handlers import format_date_time

from aiohttp import web

VECTORS = Path(__file__).resolve().parent / "vectors" / "pretix"
ORG, EVENT = "stadium", "season26"
INIT_TOKEN = "kpp4jn8g2ynzonp6"
API_TOKEN = "1kcsh572fonm3hawalrncam4l1gktr2rzx25a22l8g9hx108o9oi0rztpcvwnfnd"
EVENT_PATH = f"/api/v1/organizers/{ORG}/events/{EVENT}"


_JSON: web.RequestKey[Any] = web.RequestKey("json", object)


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def recorded(name: str) -> dict[str, Any]:
    """A recorded redeem/annul step by name."""
    return next(s for s in load("redeem_responses.json")["steps"] if s["name"] == name)


def recorded_page(file: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = next(r for r in load(file)["responses"] if r["name"] == name)[
        "response"
    ]["body"]
    return body


def _t(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


# The orders' creation times: the n-th of ``positions`` was created this many seconds after it.
ORDERS_CREATED = _t("2026-11-01T10:00:00.250001Z")


@dataclass
class Call:
    method: str
    raw_path: str
    path: str
    query: dict[str, str]
    body: Any
    auth: str | None


@dataclass
class FakePretix:
    """State of the fake server; tests change it between rounds."""

    revoked: dict[str, Any] = field(
        default_factory=lambda: recorded_page("revoked_secrets.json", "revoked_full_1")
    )
    blocked: dict[str, Any] = field(
        default_factory=lambda: recorded_page("blocked_secrets.json", "blocked_full_1")
    )
    # positions with the time their order was last modified (served as one-position orders)
    positions: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    # a position's order's fields by its secret (default: status "p", paid); a position with
    # "canceled": true is listed only when asked with include_canceled_positions=true, as pretix
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # secret -> list of (status, body) answered in turn (the last one repeats)
    redeem_answers: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    page_size: int = 50
    fault: str | None = None
    fault_on: str = ""
    slow_s: float = 0.0
    calls: list[Call] = field(default_factory=list)
    init_used: bool = False
    tokens: set[str] = field(default_factory=set)
    device_id: int = 1
    checkins_by_nonce: dict[str, tuple[int, float]] = field(default_factory=dict)
    now: float = _t("2026-11-23T02:51:19Z")
    page_generated: str | None = None  # X-Page-Generated as given (default: ``now``; "-": none)
    revoked_next: str | None = None  # the revoked secrets' ``next``, a path on this server
    revoked_fail_page: int | None = None  # this page of the revoked secrets answers 503
    proxy_clock_ahead_s: float = 0.0  # the blocked secrets' Date: ``now`` plus this
    # called with the ordering and page number after each blocked-secrets page is answered
    after_blocked_page: Callable[[str, int], None] | None = None
    # called with the page number after each orders page is answered
    after_orders_page: Callable[[int], None] | None = None
    lose_every: int = 0  # every n-th GET answers 502, no Retry-After (a lossy link); 0: none
    lose_retry_after: str | None = None  # set: those answers are 503 with this Retry-After

    def redeem_calls(self) -> list[Call]:
        return [c for c in self.calls if c.path.endswith("/redeem/")]

    def calls_to(self, suffix: str) -> list[Call]:
        return [c for c in self.calls if c.path.endswith(suffix)]


def _paged(request: web.Request, rows: list[Any], size: int) -> dict[str, Any]:
    page = int(request.query.get("page", "1"))
    size = min(size, int(request.query.get("page_size", size)))  # pretix: page_size, at most 50
    chunk = rows[(page - 1) * size : page * size]
    nxt = None
    if page * size < len(rows):
        nxt = str(request.url.update_query(page=str(page + 1)))
    return {"count": len(rows), "next": nxt, "previous": None, "results": chunk}


def _included(request: web.Request, order: dict[str, Any]) -> dict[str, Any]:
    """``order`` with only the fields named by the request's ``include`` (``positions.x`` for a
    position's), as pretix filters them; all of them when there is none."""
    names = request.query.getall("include", [])
    if not names:
        return order
    inner = {n.removeprefix("positions.") for n in names if n.startswith("positions.")}
    out = {k: v for k, v in order.items() if k in names}
    if inner and isinstance(order.get("positions"), list):
        out["positions"] = [
            {k: v for k, v in p.items() if k in inner} if isinstance(p, dict) else p
            for p in order["positions"]
        ]
    return out


def make_app(state: FakePretix) -> web.Application:
    """The aiohttp application serving ``state``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            text = await request.text()
            body = json.loads(text) if text else None
        raw_path = request.raw_path.split("?", 1)[0]
        state.calls.append(
            Call(request.method, raw_path, unquote(raw_path), dict(request.query), body,
                 request.headers.get("Authorization"))
        )  # fmt: skip
        request[_JSON] = body
        gets = sum(c.method == "GET" for c in state.calls)
        if request.method == "GET" and state.lose_every and gets % state.lose_every == 0:
            if state.lose_retry_after is not None:
                return web.Response(status=503, headers={"Retry-After": state.lose_retry_after})
            return web.Response(status=502, text="<html>502 Bad Gateway</html>")
        fault = state.fault if unquote(raw_path).endswith(state.fault_on) else None
        if fault == "slow":
            await asyncio.sleep(state.slow_s)  # the scenario: a pretix that answers late
        if fault == "5xx":
            return web.json_response({"detail": "maintenance"}, status=503,
                                     headers={"Retry-After": "7"})  # fmt: skip
        if fault == "malformed":
            return web.Response(
                status=200, text='{"count": 1, "results": [', content_type="application/json"
            )
        if fault == "garbage" and request.transport is not None:
            request.transport.write(b"HTTP/1.1 OK\r\n\r\n")
            request.transport.close()
            return web.Response()  # never sent: the connection is closed
        if not raw_path.endswith("/device/initialize"):
            auth = request.headers.get("Authorization", "")
            if fault == "401" or auth.removeprefix("Device ") not in state.tokens:
                return web.json_response({"detail": "Invalid token."}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def initialize(request: web.Request) -> web.Response:
        body = request[_JSON] or {}
        if body.get("token") != INIT_TOKEN or state.init_used:
            return web.json_response(
                {"token": ["This initialization token has already been used."]}, status=400
            )
        state.init_used = True
        state.tokens.add(API_TOKEN)
        return web.json_response({"organizer": ORG, "device_id": state.device_id,
                                  "unique_serial": "HHZ9LW9JWP390VFZ", "api_token": API_TOKEN,
                                  "name": "turnstile-north-1"})  # fmt: skip

    async def event(request: web.Request) -> web.Response:
        return web.json_response(load("event.json"))

    async def checkin_lists(request: web.Request) -> web.Response:
        return web.json_response(_paged(request, load("checkin_lists.json")["results"], 50))

    async def revoked(request: web.Request) -> web.Response:
        if request.query.get("page", "1") == str(state.revoked_fail_page):
            return web.json_response({"detail": "maintenance"}, status=503)
        rows = state.revoked["results"]
        since = request.query.get("created_since")
        if since:
            rows = [r for r in rows if _t(r["created"]) >= _t(since)]  # inclusive, as pretix
        rows = sorted(rows, key=lambda r: _t(r["created"]))
        page = _paged(request, rows, state.page_size)
        if state.revoked_next is not None:
            page["next"] = str(request.url.origin()) + state.revoked_next
        return web.json_response(page)

    async def blocked(request: web.Request) -> web.Response:
        rows = state.blocked["results"]
        since = request.query.get("updated_since")
        if since:
            rows = [r for r in rows if _t(r["updated"]) >= _t(since)]
        ordering = request.query.get("ordering", "-updated")  # pretix's default
        by = ordering.removeprefix("-")
        rows = sorted(rows, key=lambda r: (_t(r["updated"]) if by == "updated" else 0, r["id"]),
                      reverse=ordering.startswith("-"))  # fmt: skip
        # pretix sends no X-Page-Generated here; the Date is the front proxy's clock
        date = {"Date": format_date_time(state.now + state.proxy_clock_ahead_s)}
        answer = web.json_response(_paged(request, rows, state.page_size), headers=date)
        if state.after_blocked_page is not None:  # a change while the gate pages
            state.after_blocked_page(ordering, int(request.query.get("page", "1")))
        return answer

    async def orders(request: web.Request) -> web.Response:
        since = request.query.get("modified_since")
        created = request.query.get("created_since")  # inclusive, as pretix
        canceled_too = request.query.get("include_canceled_positions") == "true"
        rows = [
            _included(request, {
                "datetime": _iso(ORDERS_CREATED + i), "status": "p", "require_approval": False,
                "valid_if_pending": False, "cancellation_date": None, "email": "holder@example.org",
                "positions": [{"canceled": False, **p}]
                if canceled_too or p.get("canceled") is not True else [],
                **state.orders.get(str(p.get("secret")), {}),
            })
            for i, (m, p) in enumerate(state.positions)
            if (since is None or m >= _t(since))
            and (created is None or ORDERS_CREATED + i >= _t(created))
        ]  # fmt: skip
        generated = state.page_generated or datetime.fromtimestamp(state.now, UTC).isoformat()
        # page_generated "-": no X-Page-Generated, only Date (whole seconds, of ``now``)
        headers = {"X-Page-Generated": generated} if generated != "-" else {
            "Date": format_date_time(state.now)}  # fmt: skip
        answer = web.json_response(_paged(request, rows, state.page_size), headers=headers)
        if state.after_orders_page is not None:  # a change while the gate pages
            state.after_orders_page(int(request.query.get("page", "1")))
        return answer

    async def redeem(request: web.Request) -> web.Response:
        # The secret is taken from the raw path: it is percent-encoded and may hold "/".
        raw = request.raw_path.split("?", 1)[0]
        prefix = f"{EVENT_PATH}/checkinlists/{request.match_info['list']}/positions/"
        secret = unquote(raw[len(prefix) : -len("/redeem/")])
        answers = state.redeem_answers.get(secret)
        if not answers:
            step = recorded("invalid_secret")["response"]
            return web.json_response(step["body"], status=step["status"])
        status, body = answers[0] if len(answers) == 1 else answers.pop(0)
        payload = request[_JSON] or {}
        if 200 <= status < 300 and isinstance(payload.get("nonce"), str):
            when = _t(payload["datetime"]) if payload.get("datetime") else state.now
            state.checkins_by_nonce.setdefault(payload["nonce"], (state.device_id, when))
        return web.json_response(copy.deepcopy(body), status=status)

    async def failed(request: web.Request) -> web.Response:
        return web.json_response(
            {**(request[_JSON] or {}), "error_explanation": None, "position": None}, status=201
        )

    async def annul(request: web.Request) -> web.Response:
        payload = request[_JSON] or {}
        found = state.checkins_by_nonce.get(payload.get("nonce", ""))
        if found is None or found[0] != state.device_id:
            return web.json_response({"detail": "No check-in found based on nonce"}, status=404)
        when = _t(payload["datetime"]) if payload.get("datetime") else state.now
        if when - found[1] > 15 * 60:
            return web.json_response({"non_field_errors": [
                "Annulment is not allowed more than 15 minutes after check-in"]}, status=400)  # fmt: skip
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[middleware])
    app.router.add_post("/api/v1/device/initialize", initialize)
    app.router.add_get(f"{EVENT_PATH}/", event)
    app.router.add_get(f"{EVENT_PATH}/checkinlists/", checkin_lists)
    app.router.add_get(f"{EVENT_PATH}/revokedsecrets/", revoked)
    app.router.add_get(f"{EVENT_PATH}/blockedsecrets/", blocked)
    app.router.add_get(f"{EVENT_PATH}/orders/", orders)
    app.router.add_post(EVENT_PATH + "/checkinlists/{list}/positions/{secret:.+}/redeem/", redeem)
    app.router.add_post(EVENT_PATH + "/checkinlists/{list}/failed_checkins/", failed)
    app.router.add_post(f"/api/v1/organizers/{ORG}/checkinrpc/annul/", annul)
    return app


class PretixServer:
    """Runs :func:`make_app` on 127.0.0.1 (a free port) inside the test's event loop."""

    def __init__(self, state: FakePretix | None = None) -> None:
        self.state = state or FakePretix()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> PretixServer:
        # No access log: pretix's redeem URLs carry ticket secrets (pretix's own log, not ours).
        self._runner = web.AppRunner(make_app(self.state), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = int(self._runner.addresses[0][1])
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
