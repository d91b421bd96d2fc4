"""The console's endpoints beyond alerts and gates (:mod:`sync.hub` routes to them): one alert,
the alert workflow, the open count and a ticket's history. Console tokens only (a gate token
gets 403); who acted is the console token's name, when is the hub's clock.

    GET  /v1/alerts/open                   -> {"open": N}  alerts nobody acknowledged
    GET  /v1/alerts/{alert_id}             -> {"alert": Alert}
    POST /v1/alerts/{alert_id}/ack         {}                      -> {"alert": Alert}
    POST /v1/alerts/{alert_id}/assign      {"assignee": "name"}    -> {"alert": Alert}
    POST /v1/alerts/{alert_id}/notes       {"text": "..."}         -> {"alert": Alert}
    GET  /v1/tickets/{short_id}            -> TicketHistory

Bad input is a 400 naming the field (``alert_id``, ``assignee``, ``text``, ``body``, ``ticket``);
an unknown alert is a 404.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from sync import protocol_fields as read
from sync.hub_auth import console_caller
from sync.hub_console_sql import Action
from sync.hub_handlers import read_body
from sync.hub_state import HUB, HttpError, Hub
from sync.protocol import PROTOCOL_VERSION, Alert, ProtocolError
from sync.protocol_console import MAX_HISTORY, MAX_NOTES, is_short_id, parse_assign, parse_note

log = logging.getLogger(__name__)

_MAX_ACTION_BODY = 8192  # a note of 500 characters escaped in JSON (12 bytes an emoji), or more


def _answer(obj: Mapping[str, Any]) -> web.Response:
    body = json.dumps({"v": PROTOCOL_VERSION, **obj}, separators=(",", ":"))
    return web.Response(body=body.encode(), content_type="application/json")


def _alert_id(request: web.Request) -> int:
    raw = request.match_info["alert_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or int(raw) < 1:
        raise HttpError(400, "alert_id: expected an alert id (an integer >= 1)")
    return int(raw)


async def _object(request: web.Request) -> Mapping[str, Any]:
    """The request's JSON object (an empty body is ``{}``); raises HttpError 400 naming ``body``."""
    data = await read_body(request)
    if len(data) > _MAX_ACTION_BODY:
        raise HttpError(413, f"body: over {_MAX_ACTION_BODY} bytes", error="too_large")
    if not data.strip():
        return {}
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise HttpError(400, "body: not valid JSON") from None
    try:
        return read.json_object(value, "body")
    except ProtocolError as exc:
        raise HttpError(400, str(exc)) from None


async def _find(hub: Hub, alert_id: int) -> Alert:
    found = await hub.store.alerts(alert_id - 1, 1)
    if not found or found[0].alert_id != alert_id:
        raise HttpError(404, f"alert_id: no alert {alert_id}")
    (alert,) = await hub.store.alert_details(found)
    return alert


async def alert_one(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await console_caller(request, hub)
    return _answer({"alert": (await _find(hub, _alert_id(request))).to_json()})


async def open_count(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await console_caller(request, hub)
    return _answer({"open": await hub.store.open_alerts()})


async def _act(request: web.Request, action: Action) -> web.Response:
    hub = request.app[HUB]
    who = await console_caller(request, hub)
    alert_id = _alert_id(request)
    obj = await _object(request)
    value = ""
    try:
        if action == "assign":
            value = parse_assign(obj)
        elif action == "note":
            value = parse_note(obj)
    except ProtocolError as exc:
        raise HttpError(400, str(exc)) from None
    result = await hub.store.act_on_alert(alert_id, action, who.name, value, hub.clock())
    if result == "unknown":
        raise HttpError(404, f"alert_id: no alert {alert_id}")
    if result == "full":
        raise HttpError(400, f"text: alert {alert_id} has {MAX_NOTES} notes already")
    log.info("alert %d: %s by %s", alert_id, action, who.name)
    return _answer({"alert": (await _find(hub, alert_id)).to_json()})


async def alert_ack(request: web.Request) -> web.Response:
    return await _act(request, "ack")


async def alert_assign(request: web.Request) -> web.Response:
    return await _act(request, "assign")


async def alert_note(request: web.Request) -> web.Response:
    return await _act(request, "note")


async def ticket(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await console_caller(request, hub)
    short = request.match_info["short_id"].lower()
    if not is_short_id(short):
        raise HttpError(400, "ticket: expected a ticket's 8-hex short id")
    return _answer((await hub.store.ticket_history(short, MAX_HISTORY)).to_json())


def add_routes(app: web.Application) -> None:
    """Register the console's endpoints (``/v1/alerts/open`` before ``/v1/alerts/{alert_id}``)."""
    app.router.add_get("/v1/alerts/open", open_count)
    app.router.add_get("/v1/alerts/{alert_id}", alert_one)
    app.router.add_post("/v1/alerts/{alert_id}/ack", alert_ack)
    app.router.add_post("/v1/alerts/{alert_id}/assign", alert_assign)
    app.router.add_post("/v1/alerts/{alert_id}/notes", alert_note)
    app.router.add_get("/v1/tickets/{short_id}", ticket)
