"""A malicious or struggling hub (an aiohttp server on 127.0.0.1 serving what each test puts
in it): forged, truncated or rolled-back signed documents are refused, a refused bundle is
checked again, revocation backlogs arrive at once, and the hub's Retry-After is honoured."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from agent import issuer, keys, revocation_issuer
from agent.app import config
from agent.app.daemon import open_gate
from agent.issuer import Issuer
from agent.model import Reason
from agent.revocation import KIND
from agent.signed import sign_document
from sync import protocol
from tests.hubgate import scan, write_gate
from tests.polling import until

FAST_RETRY = "retry_max_s = 0.5\n"
FEED_ENTRY = {
    "cursor": 1, "entry_id": "0190a4c2-0000-7000-8000-000000000001", "gate_id": "gate-z",
    "gate_name": "Gate Z", "gate_seq": 1, "ticket_ref": "tk1:" + "ab" * 8, "kind": "entry",
    "annuls": None, "wall_time": 1.7e9, "hlc": int(1.7e12) << 16,
}  # fmt: skip


@dataclass
class EvilHub:
    """Serves whatever the test puts in ``revocations``/``snapshot``/``trust``; counts requests.

    ``chain`` (deltas v0->v1, v1->v2, ...) instead answers each revocation request with the one
    delta after the asked version; ``trust_etag`` is sent with the bundle and honoured in
    If-None-Match; ``upload`` is the status and headers of a refused upload (None: accepted),
    ``uploads`` the monotonic times of the upload requests.
    """

    revocations: tuple[int, bytes] = (200, b"")
    chain: list[bytes] = field(default_factory=list)
    snapshot: bytes = b""
    trust: bytes = b""
    trust_etag: str | None = None
    upload: tuple[int, dict[str, str]] | None = None
    upload_body: bytes | None = None  # answered with status 200 as it is (a garbled answer)
    uploads: list[float] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    # The feed's answers in turn, each given once its event (if any) is set; then the usual.
    feed_pages: list[tuple[asyncio.Event | None, dict[str, object]]] = field(default_factory=list)
    feed_asks: list[int] = field(default_factory=list)  # each feed request's ``after``

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/gates/{gate}/heartbeat", self._heartbeat)
        app.router.add_post("/v1/gates/{gate}/entries:batch", self._upload)
        app.router.add_get("/v1/venues/{venue}/entries", self._feed)
        app.router.add_get("/v1/revocations", self._revocations)
        app.router.add_get("/v1/revocations/snapshot", self._snapshot)
        app.router.add_get("/v1/trust", self._trust)
        return app

    def _json(self, body: dict[str, object], status: int = 200) -> web.Response:
        return web.json_response({"v": 1, "hub_time": time.time(), **body}, status=status)

    async def _heartbeat(self, request: web.Request) -> web.Response:
        self.hits["heartbeat"] += 1
        return self._json({})

    async def _upload(self, request: web.Request) -> web.Response:
        self.uploads.append(time.monotonic())
        batch = protocol.parse(await request.read(), protocol.BatchUpload)
        if self.upload_body is not None:
            return web.Response(body=self.upload_body, content_type="application/json")
        if self.upload is not None:
            status, headers = self.upload
            error = {"v": 1, "error": "unavailable", "message": "try later"}
            return web.json_response(error, status=status, headers=headers)
        results = [{"entry_id": e.entry_id, "status": "inserted"} for e in batch.entries]
        return self._json({"results": results, "acked_through_seq": batch.entries[-1].gate_seq})

    async def _feed(self, request: web.Request) -> web.Response:
        after = int(request.query["after"])
        self.feed_asks.append(after)
        if self.feed_pages:
            held, page = self.feed_pages.pop(0)
            if held is not None:
                await held.wait()
            return self._json(page)
        await asyncio.sleep(0.2)  # the scenario: a long-poll that ends empty
        return self._json({"entries": [], "next": after})

    async def _revocations(self, request: web.Request) -> web.Response:
        self.hits["revocations"] += 1
        status, body = self.revocations
        if self.chain:
            after = int(request.query["after"])
            more = after < len(self.chain)
            status, body = _page(after + 1, self.chain[after]) if more else _page(after)
        return web.Response(status=status, body=body, content_type="application/json")

    async def _snapshot(self, request: web.Request) -> web.Response:
        self.hits["snapshot"] += 1
        return web.Response(body=self.snapshot, content_type="application/json")

    async def _trust(self, request: web.Request) -> web.Response:
        self.hits["trust"] += 1
        headers = {} if self.trust_etag is None else {"ETag": self.trust_etag}
        if self.trust_etag is not None and request.headers.get("If-None-Match") == self.trust_etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=self.trust, content_type="application/json", headers=headers)


@pytest.fixture
async def evil() -> AsyncIterator[tuple[EvilHub, str]]:
    hub = EvilHub()
    runner = web.AppRunner(hub.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield hub, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _page(version: int, *deltas: bytes) -> tuple[int, bytes]:
    body = {"v": 1, "version": version, "deltas": [d.decode() for d in deltas]}
    return 200, json.dumps(body).encode()


async def _served(hub: EvilHub, what: str) -> None:
    """Wait until the gate asked twice more: it has then handled the first answer."""
    target = hub.hits[what] + 2
    await until(lambda: hub.hits[what] >= target, what=f"two more {what} requests")


def _evil_gate(
    tmp: Path, keys: Path, url: str, *, extra: str = "", bundle: Path | None = None,
    hub: str = FAST_RETRY,
) -> config.Config:  # fmt: skip
    path = write_gate(tmp / "gate", keys, gate_id="gate-a", name="Gate A", url=url, token="t",
                      hub_extra=hub, extra=extra, bundle=bundle)  # fmt: skip
    return config.load(path)


async def test_forged_truncated_and_rolled_back_revocations_are_refused(
    evil: tuple[EvilHub, str], keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    hub, url = evil
    revoked = iss.ticket(event=1, zones=[1])
    key = await asyncio.to_thread(_revocation_key, revoked)
    state = tmp_path / "issuer-state.json"
    v1 = revocation_issuer.issue_delta(iss.list_key, state, revoke=[key])
    (tmp_path / "v1.json").write_bytes(v1)
    unrevoke_v2 = revocation_issuer.issue_delta(iss.list_key, state, unrevoke=[key])
    attacker = keys.generate("ed25519")
    now = int(time.time())
    forged = sign_document(
        KIND,
        revocation_issuer.make_delta(
            from_version=1, version=2, issued_at=now, expires=now + 3600, unrevoke=[key]
        ),
        attacker,
    )
    older = revocation_issuer.make_delta(
        from_version=0, version=1, issued_at=now, expires=now + 3600, unrevoke=[key]
    )
    rolled_back = sign_document(KIND, older, iss.list_key)
    empty_v1 = sign_document(KIND, revocation_issuer.make_snapshot(
        version=1, issued_at=now, expires=now + 3600), iss.list_key)  # fmt: skip
    forged_snapshot = sign_document(KIND, revocation_issuer.make_snapshot(
        version=9, issued_at=now, expires=now + 3600), attacker)  # fmt: skip
    bad_pages = {  # name: (answer to /v1/revocations, snapshot)
        "forged": (_page(2, forged), b""),
        "truncated": (_page(2, unrevoke_v2[: len(unrevoke_v2) // 2]), b""),
        "rolled back": (_page(1, rolled_back), b""),
        "not JSON": ((200, b'{"v": 1, "version": 2, "deltas": [tr'), b""),
        "gone, older snapshot": ((410, b"{}"), empty_v1),
        "gone, forged snapshot": ((410, b"{}"), forged_snapshot),
    }
    conf = _evil_gate(
        tmp_path, keys_dir, url, extra=f'\n[revocation]\nfiles = ["{tmp_path / "v1.json"}"]\n'
    )
    async with open_gate(conf) as gate:
        assert gate.revocations.meta.version == 1
        for name, (answer, snapshot) in bad_pages.items():
            hub.revocations, hub.snapshot = answer, snapshot
            await _served(hub, "revocations")
            assert gate.revocations.meta.version == 1, name
            denied = await gate.lane.present(scan(revoked))
            assert denied is not None and denied.decision.reason is Reason.REVOKED, name
            fine = await gate.lane.present(scan(iss.ticket(event=1, zones=[1])))
            assert fine is not None and fine.decision.admitted, name
        assert hub.hits["snapshot"] >= 2
        hub.revocations = _page(2, unrevoke_v2)  # the genuine delta does get through
        await until(lambda: gate.revocations.meta.version == 2, what="genuine delta")
        admitted = await gate.lane.present(scan(revoked))
    assert admitted is not None and admitted.decision.admitted


def _revocation_key(text: str) -> bytes:
    from agent import tickets

    return tickets.parse(text).revocation_key


async def test_forged_truncated_and_rolled_back_trust_bundles_are_refused(
    evil: tuple[EvilHub, str], keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    hub, url = evil
    issuer.keys_init(tmp_path / "attacker", kid=66, events=[1])
    attacker = Issuer.load(tmp_path / "attacker")
    v2 = tmp_path / "trust-v2.json"
    v2.write_bytes(iss.trust_bundle(version=2))
    genuine_v3 = iss.trust_bundle(version=3, issuers=[iss.trust_entry(), attacker.trust_entry()])
    bad = {  # the attacker's key in a bundle signed by the attacker's root, cut, or an older one
        "forged": attacker.trust_bundle(
            version=3, issuers=[iss.trust_entry(), attacker.trust_entry()]
        ),
        "truncated": genuine_v3[:-40],
        "rolled back": (keys_dir / "trust.json").read_bytes(),
    }
    hub.trust = bad["rolled back"]
    conf = _evil_gate(tmp_path, keys_dir, url, bundle=v2)
    installed = conf.gate.state_dir / "trust.json"
    forged_ticket = attacker.ticket(event=1, zones=[1])
    async with open_gate(conf) as gate:
        assert gate.trust.version == 2
        for name, bundle in bad.items():
            hub.trust = bundle
            await _served(hub, "trust")
            assert gate.trust.version == 2 and installed.read_bytes() == v2.read_bytes(), name
            refused = await gate.lane.present(scan(forged_ticket))
            assert refused is not None and refused.decision.reason is Reason.UNKNOWN_KEY, name
            fine = await gate.lane.present(scan(iss.ticket(event=1, zones=[1])))
            assert fine is not None and fine.decision.admitted, name
        hub.trust = genuine_v3  # the root-signed one is installed
        await until(lambda: gate.trust.version == 3, what="genuine bundle")


async def test_a_refused_bundle_is_checked_again_under_the_same_etag(
    evil: tuple[EvilHub, str], keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    hub, url = evil
    genuine_v3 = iss.trust_bundle(version=3)
    hub.trust, hub.trust_etag = genuine_v3[:-40], '"trust-3"'  # cut in transit, say
    async with open_gate(_evil_gate(tmp_path, keys_dir, url)) as gate:
        await _served(hub, "trust")
        assert gate.trust.version == 1
        hub.trust = genuine_v3  # the same ETag: only a gate that did not take the cut one asks
        await until(lambda: gate.trust.version == 3, within_s=5, what="the bundle under its ETag")


async def test_a_backlog_of_revocation_pages_is_fetched_at_once(
    evil: tuple[EvilHub, str], keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    hub, url = evil
    state = tmp_path / "issuer-state.json"
    hub.chain = [
        revocation_issuer.issue_delta(iss.list_key, state, revoke=[bytes([n]) * 16])
        for n in range(6)
    ]
    slow = FAST_RETRY + "revocation_interval_s = 60\n"  # one page per minute would take 6
    async with open_gate(_evil_gate(tmp_path, keys_dir, url, hub=slow)) as gate:
        await until(lambda: gate.revocations.meta.version == 6, within_s=5, what="six pages")
        await until(lambda: hub.hits["revocations"] >= 7, what="the empty page")
        await asyncio.sleep(0.5)  # the scenario: quiet time in which an eighth request would show
    assert hub.hits["revocations"] == 7  # six pages, the empty one, then the interval


async def test_the_hubs_retry_after_is_honoured(
    evil: tuple[EvilHub, str], keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    hub, url = evil
    hub.upload = (503, {"Retry-After": "2"})
    conf = _evil_gate(tmp_path, keys_dir, url, hub="retry_max_s = 10\n")
    async with open_gate(conf) as gate:
        outcome = await gate.lane.present(scan(iss.ticket(event=1, zones=[1])))
        assert outcome is not None and outcome.decision.admitted
        await until(lambda: len(hub.uploads) >= 2, within_s=5, what="a second upload attempt")
        assert gate.hub is not None and gate.hub.status()["upload"] == "unavailable"
    assert hub.uploads[1] - hub.uploads[0] >= 2.0


async def test_a_garbled_answer_is_retried_with_backoff_not_at_every_other_answer(
    evil: tuple[EvilHub, str], keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    """A review found the uploader, failing on a 200 it could not read, woken again by its own
    answer and each heartbeat's: thousands of requests a second, starving the lanes' loop. Only
    a hub that gave no answer at all wakes a backing-off task early."""
    hub, url = evil
    hub.upload_body = b'{"v": 1, "garbled": true}'
    conf = _evil_gate(tmp_path, keys_dir, url, hub="retry_max_s = 10\n")
    async with open_gate(conf) as gate:
        outcome = await gate.lane.present(scan(iss.ticket(event=1, zones=[1])))
        assert outcome is not None and outcome.decision.admitted
        await until(lambda: hub.uploads, what="the first upload")
        beats = hub.hits["heartbeat"] + 20  # 20 answered heartbeats, 0.2 s apart
        await until(lambda: hub.hits["heartbeat"] >= beats, what="20 more heartbeats")
        # Backing off (ceilings 0.5, 1, 2, 4 s...) leaves a handful; woken by each answer, one
        # upload followed every heartbeat and feed round, or none waited at all.
        assert 1 <= len(hub.uploads) <= 10, len(hub.uploads)


async def test_a_hub_holding_back_uploads_leaves_the_gate_online(
    evil: tuple[EvilHub, str], keys_dir: Path, iss: Issuer, tmp_path: Path
) -> None:
    """429 (this gate over its upload quota) is the hub saying "later", not "gone": the gate
    stays online (its feed is live, its decisions know the venue) while its rows wait."""
    hub, url = evil
    hub.upload = (429, {"Retry-After": "1"})
    conf = _evil_gate(tmp_path, keys_dir, url)
    async with open_gate(conf) as gate:
        link = gate.hub
        assert link is not None
        await until(lambda: link.online, what="online")
        outcome = await gate.lane.present(scan(iss.ticket(event=1, zones=[1])))
        assert outcome is not None and outcome.decision.admitted
        await until(lambda: len(hub.uploads) >= 2, what="the upload tried again")
        assert link.online and link.status()["upload"] == "unavailable"


async def test_a_page_with_more_to_follow_is_not_caught_up(
    evil: tuple[EvilHub, str], keys_dir: Path, tmp_path: Path
) -> None:
    """A hub cuts a feed page that would not fit 2 MiB short (rows long in JSON) and says
    ``more``: a gate holding such a page is not caught up, so it is not online (its decisions
    are flagged offline) until it has read what follows."""
    hub, url = evil
    rest = asyncio.Event()
    hub.feed_pages = [
        (None, {"entries": [FEED_ENTRY], "next": 1, "more": True}),
        (rest, {"entries": [], "next": 1}),
    ]
    async with open_gate(_evil_gate(tmp_path, keys_dir, url)) as gate:
        link = gate.hub
        assert link is not None
        try:
            await until(lambda: 1 in hub.feed_asks, what="the page after the cut one asked for")
            assert link.status()["feed_cursor"] == 1 and link.status()["last_success"] is not None
            assert not link.online and link.status()["feed_lag_s"] is None
        finally:
            rest.set()  # the held request ends either way
        await until(lambda: link.online, what="online once the rest is read")


async def test_a_live_gate_is_not_online_while_it_reads_what_follows_a_cut_page(
    evil: tuple[EvilHub, str], keys_dir: Path, tmp_path: Path
) -> None:
    """Found in review: a gate already live stayed online while it read the pages after one
    with ``more`` (its decisions unflagged, yet entries of other gates not read)."""
    hub, url = evil
    cut, rest = asyncio.Event(), asyncio.Event()
    hub.feed_pages = [
        (None, {"entries": [], "next": 0}),  # caught up: live
        (cut, {"entries": [FEED_ENTRY], "next": 1, "more": True}),
        (rest, {"entries": [], "next": 1}),
    ]
    async with open_gate(_evil_gate(tmp_path, keys_dir, url)) as gate:
        link = gate.hub
        assert link is not None
        try:
            await until(lambda: link.online, what="online, caught up")
            cut.set()
            await until(lambda: 1 in hub.feed_asks, what="the page after the cut one asked for")
            assert not link.online
        finally:
            cut.set()
            rest.set()
        await until(lambda: link.online, what="online once the rest is read")


async def test_a_page_saying_more_with_no_entries_is_refused(
    evil: tuple[EvilHub, str], keys_dir: Path, tmp_path: Path
) -> None:
    """Found in review: a hub answering {"entries": [], "more": true} would have had the gate
    ask again at once, without end (never caught up, never long-polling, no backoff)."""
    hub, url = evil
    hub.feed_pages = [(None, {"entries": [], "next": 0, "more": True})] * 3
    async with open_gate(_evil_gate(tmp_path, keys_dir, url)) as gate:
        link = gate.hub
        assert link is not None
        await until(lambda: "more: true on a page with no entries" in str(
            link.status()["last_error"]), what="the page refused")  # fmt: skip
        assert not link.online
