"""The hub's request handlers: one per ``/v1`` endpoint of :mod:`sync.protocol`, the health check
and the console's files; :mod:`sync.hub` routes to them. Each one checks the caller
(:mod:`sync.hub_auth`), parses strictly (a 400 names the field) and answers a protocol message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math

from aiohttp import web

from agent.redact import run_id
from sync import protocol
from sync.hub_admin import (
    document_version,
)
from sync.hub_auth import UNKNOWN_TOKEN, console_caller, gate_caller
from sync.hub_state import HUB, HttpError, Hub, json_response
from sync.hub_store import (
    ConflictError,
    HubStore,
    HubStoreError,
    OverQuotaError,
    RefusedError,
    TokenGoneError,
)
from sync.protocol import (
    MAX_BODY_BYTES,
    MAX_DOCUMENT_CHARS,
    MAX_PAGE,
    MAX_SET_APART_PAGE,
    MAX_WAIT_S,
    UUID,
    AlertPage,
    FeedEntry,
    FeedPage,
    GatesPage,
    Heartbeat,
    HeartbeatAck,
    RevocationPage,
    SetApartPage,
)
from sync.protocol_batch import parse_batch

log = logging.getLogger(__name__)

_DELTA_CHUNK = 32  # revocation deltas read per store call (each up to MAX_DOCUMENT_CHARS)
CONSOLE_FILES = {
    "/console": ("console.html", "text/html"),
    "/console/console_lib.js": ("console_lib.js", "text/javascript"),
    "/console/console.js": ("console.js", "text/javascript"),
    "/console/console_venue.js": ("console_venue.js", "text/javascript"),
    "/console/console.css": ("console.css", "text/css"),
}


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
    # Never decompressed (sync.hub.run): say so, not "not JSON".
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise HttpError(400, "body: compressed bodies (Content-Encoding) are not accepted")
    too_large = f"body is over the {MAX_BODY_BYTES} byte limit"
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise HttpError(413, too_large, error="too_large")  # HTTP's own word for it
    timeout_s = request.app[HUB].config.hub.body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise HttpError(413, too_large, error="too_large") from None
    except TimeoutError:  # a trickling body holds a connection: cut it (aiohttp then closes it)
        raise HttpError(
            408,
            f"the request body did not arrive within {timeout_s:g} s",
            error="body_timeout",
            headers={"Connection": "close"},
        ) from None


# For the console's handlers (sync.hub_console_api) and any other module with endpoints.
read_body = _body
query_int = _query_int


def _etag_matches(request: web.Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags or etag.strip('"') in tags


async def upload(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    gate = _path_gate(request)
    token = await gate_caller(request, hub, gate)
    batch = parse_batch(await _body(request))
    if batch.gate_id != gate:
        raise HttpError(403, "gate_id: the batch is for another gate than the path")
    try:
        async with hub.upload_turn(gate):
            ack = await hub.store.ingest(
                gate, batch.entries, hub.clock(), token_hash=token.token_hash
            )
    except TokenGoneError as exc:  # revoked while the body arrived: as if never known
        if (more := hub.refused_gates.due((gate, "revoked"))) is not None:
            log.warning("gate %s: a batch whose token was revoked meanwhile: not stored%s",
                        gate, more)  # fmt: skip
        raise HttpError(401, str(exc), headers={"WWW-Authenticate": UNKNOWN_TOKEN}) from None
    except RefusedError as exc:
        if (more := hub.refused_gates.due((gate, "refused"))) is not None:
            log.error("gate %s: batch refused: %s%s", gate, exc, more)
        raise HttpError(422, str(exc), error="refused") from None
    except OverQuotaError as exc:  # the alert (one an hour) tells the operator; no log flood
        log.debug("gate %s: over its upload quota", gate)
        retry = str(math.ceil(exc.retry_after))
        raise HttpError(429, str(exc), error="over_quota", headers={"Retry-After": retry}) from None
    except ConflictError as exc:
        if (more := hub.refused_gates.due((gate, "conflict"))) is not None:
            log.error("gate %s: %d entries conflict with stored ones%s", gate,
                      len(exc.entry_ids), more)  # fmt: skip
        try:  # its admissions reach the venue's gates all the same (sync.hub_claims)
            await hub.store.claim(gate, batch.entries, hub.clock())
        except HubStoreError as store_exc:
            log.error("gate %s: the refused batch's admissions not kept: %s", gate, store_exc)
        raise HttpError(
            409,
            f"{len(exc.entry_ids)} entries reuse an entry_id or gate_seq with another body;"
            " nothing of the batch was stored",
            conflicts=exc.entry_ids,
        ) from None
    log.debug("gate %s: %d inserted through %d", gate, ack.inserted, ack.acked_through_seq)
    return json_response(ack)


async def _venue_reader(request: web.Request) -> Hub:
    """The hub, for a gate's token reading this venue's rows (404 for another venue)."""
    hub = request.app[HUB]
    await gate_caller(request, hub, None)
    if request.match_info["venue"] != hub.config.hub.venue:
        raise HttpError(404, "this hub does not serve that venue")
    return hub


async def feed(request: web.Request) -> web.Response:
    hub = await _venue_reader(request)
    after = _query_int(request, "after", 0, 0, protocol.INT63)
    limit = _query_int(request, "limit", MAX_PAGE, 1, MAX_PAGE)
    wait = _query_wait(request, hub.config.hub.max_wait_s)
    entries, next_cursor = await hub.store.feed(after, limit)
    # next < after: the store is newer than the reader's cursor; it learns that at once.
    if not entries and wait > 0 and next_cursor >= after:
        await hub.wait_feed(after, wait)
        await gate_caller(request, hub, None)  # still valid: revoked while waiting is a 401
        entries, next_cursor = await hub.store.feed(after, limit)
    return _feed_response(FeedPage(tuple(entries), next_cursor, hub.clock()))


def _feed_response(page: FeedPage) -> web.Response:
    body = protocol.encode(page)
    if len(body) > MAX_BODY_BYTES:
        body = protocol.encode(_fitted(page))
    return web.Response(body=body, content_type="application/json")


async def claims(request: web.Request) -> web.Response:
    """The admissions of refused batches (sync.hub_claims), a page like the feed's."""
    hub = await _venue_reader(request)
    after = _query_int(request, "after", 0, 0, protocol.INT63)
    limit = _query_int(request, "limit", MAX_PAGE, 1, MAX_PAGE)
    entries, next_cursor = await hub.store.claims(after, limit)
    return _feed_response(FeedPage(tuple(entries), next_cursor, hub.clock()))


def _fitted(page: FeedPage) -> FeedPage:
    """The first entries of ``page`` that fit :data:`MAX_BODY_BYTES` encoded, ``more`` set and
    ``next`` after the last one kept (rows stored before the hub refused non-ASCII refs, or
    long names: see FeedPage). One entry always fits: every field has a cap."""
    budget = MAX_BODY_BYTES - 1024  # the page's own keys and numbers
    kept: list[FeedEntry] = []
    for entry in page.entries:
        budget -= len(json.dumps(entry.to_json(), separators=(",", ":"))) + 1
        if kept and budget < 0:
            break
        kept.append(entry)
    return FeedPage(tuple(kept), kept[-1].cursor, page.hub_time, more=True)


async def set_apart(request: web.Request) -> web.Response:
    """The exits and annulments a quarantine set apart, for gates to forget (SetApartPage)."""
    hub = await _venue_reader(request)
    after = request.query.get("after", "")
    if after and UUID.fullmatch(after) is None:
        raise HttpError(400, "after: expected an entry_id (a UUID)")
    limit = _query_int(request, "limit", MAX_SET_APART_PAGE, 0, MAX_SET_APART_PAGE)
    total, entry_ids = await hub.store.set_apart_releases(after, limit)
    return json_response(SetApartPage(total, entry_ids))


async def revocations(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await gate_caller(request, hub, None)
    after = _query_int(request, "after", 0, 0, protocol.INT63)
    page = await _revocation_page(hub.store, after)
    if page is None:
        raise HttpError(
            410,
            f"deltas after version {after} are no longer kept: fetch /v1/revocations/snapshot",
            error="gone",
        )
    return json_response(page)


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
    await gate_caller(request, hub, None)
    snap = await hub.snapshots.get()
    if snap is None:
        raise HttpError(404, "no revocation list has been issued yet")
    etag = f'"rev-{snap.version}"'
    if _etag_matches(request, etag):
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=snap.data, content_type="application/json", headers={"ETag": etag})


async def trust_bundle(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await gate_caller(request, hub, None)
    doc = hub.trust.current()
    if _etag_matches(request, doc.etag):
        return web.Response(status=304, headers={"ETag": doc.etag})
    return web.Response(body=doc.data, content_type="application/json", headers={"ETag": doc.etag})


async def heartbeat(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    gate = _path_gate(request)
    await gate_caller(request, hub, gate)
    hb = protocol.parse(await _body(request), Heartbeat)
    if hb.gate_id != gate:
        raise HttpError(403, "gate_id: the heartbeat is for another gate than the path")
    now = hub.clock()
    run = run_id(hb.run_key)  # noted first: heartbeats in flight are noted as they came
    if hub.run_notes.due(gate, run):  # two units with one token? (sync.hub_twins)
        try:
            raised = await hub.store.note_run(gate, run, request.remote or "?", now)
        except HubStoreError as exc:  # the heartbeat is answered all the same
            log.warning("gate %s: its run was not noted: %s", gate, exc)
            raised = []
        for alert in raised:
            log.warning("%s", alert.detail)
    if hub.beat_due(gate):
        await hub.store.heartbeat(hb, now)
    hub.presence.heartbeat(gate)
    return json_response(HeartbeatAck(now))


async def alerts(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    # A console's only: a gate has no use for them, and a stolen gate token would learn from
    # them that it was seen (the two-units alert names its run and address) and other gates'
    # tickets (a security trial).
    await console_caller(request, hub)
    limit = _query_int(request, "limit", MAX_PAGE, 1, MAX_PAGE)
    if "after" in request.query:  # following: oldest first after the cursor
        after = _query_int(request, "after", 0, 0, protocol.INT63)
        found = await hub.store.alerts(after, limit)
        next_cursor = found[-1].alert_id if found else after
    else:  # paging back: newest first below ``before``; next is the cursor for the page before
        before = _query_int(request, "before", protocol.INT63, 1, protocol.INT63)
        found = await hub.store.recent_alerts(before, limit)
        next_cursor = found[-1].alert_id if found else before
    found = await hub.store.alert_details(found)  # the entries they name, security's workflow
    return json_response(AlertPage(tuple(found), next_cursor))


async def gates(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    await console_caller(request, hub)
    return json_response(GatesPage(tuple(await hub.store.gates(hub.clock()))))


async def health(request: web.Request) -> web.Response:
    venue = request.app[HUB].config.hub.venue
    return web.json_response({"v": protocol.PROTOCOL_VERSION, "ok": True, "venue": venue})


async def console(request: web.Request) -> web.Response:
    name, content_type = CONSOLE_FILES[request.path]
    body = request.app[HUB].console[name]
    return web.Response(body=body, content_type=content_type, charset="utf-8")
