"""pretix as the gate's upstream: device token, keys, lists, check-in upload, peers, alerts.

One :class:`PretixUpstream` per gate runs on the daemon's event loop and never blocks a lane: the
lanes decide offline from the trust bundle, the revocation index and the journal, all of which
this adapter only feeds. A round (:meth:`PretixUpstream.sync_once`) downloads the event's keys,
the check-in list's settings (from the event's lists), revoked secrets (``created_since``) and
blocked secrets (``updated_since``, inclusive cursors, so the cursor row comes back and is
re-applied harmlessly), and other devices' check-ins and annulments from the orders modified
since the last round (``modified_since``: a round with nothing changed is five small requests),
then uploads unsynced journal rows in ``gate_seq`` order. Every endpoint used is allowed to
pretix's "pretixSCAN" device profile. Any fault keeps the queue and the gate's offline decisions
going; the next round is delayed by capped exponential backoff with full jitter (Retry-After as
a lower bound).

What pretix does not report (all observed on a real server, see the vectors' README):
* forced (offline) uploads always answer 201 ok, duplicates included: conflicts are found from
  the position's earlier check-ins in the answer and from downloaded check-ins of other devices;
* an annulment works only from the device that checked in and within 15 minutes of that
  check-in's time: a later annulment is logged and not sent.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from agent import pretix_event
from agent.backoff import Backoff
from agent.errors import ConfigError, PretixInitError, UpstreamAuthError, UpstreamUnavailable
from agent.fsutil import write_atomic
from agent.journal import EntryRecord, Journal, PeerEntry
from agent.redact import pretix_short_id, secret_label
from agent.revocation import RevocationStore
from agent.rules import GatePolicy
from agent.trust import TrustBundle
from sync import pretix_wire as wire
from sync.pretix_http import PretixHTTP, Reply, sleep_or_stop

log = logging.getLogger(__name__)

DEVICE_FILE = "pretix_device.json"
SYNC_FILE = "pretix_sync.json"
SOFTWARE = "gate-agent"
SOFTWARE_VERSION = "0.1"
_REVOKED_CURSOR = "pretix_revoked_created_since"
_BLOCKED_CURSOR = "pretix_blocked_updated_since"
_ORDERS_CURSOR = "orders_modified_since"
# The cursor is the first page's X-Page-Generated (pretix's time when it began answering, what
# pretixSCAN itself continues from) less this margin, for a check-in whose transaction was still
# open then: it may carry an earlier last_modified yet commit after our query. Seconds are
# plenty for pretix's check-in and annul transactions; a quiet event re-reads nothing.
_ORDERS_OVERLAP_S = 10.0
_OUTBOX_CAP = 10_000
_ALERTS_KEPT = 100


class _Clock(Protocol):
    def now(self) -> float: ...


@dataclass(frozen=True, slots=True)
class PretixAlert:
    """A ticket admitted here that another device had admitted before (security relevant)."""

    kind: str  # "duplicate_entry" (seen in check-ins) or "already_redeemed" (pretix said so)
    ticket: str  # short hash of the secret, never the secret
    entry_id: str
    other: str  # the other device ("pretix-device-2")
    at: float  # our scan time
    other_at: float | None
    detail: str


class _Done(Exception):
    """Internal: a row is finished upstream (accepted, or refused for good); carries why."""


class PretixUpstream:
    """Sync one gate with one pretix check-in list. Start with :meth:`start`, stop with :meth:`close`."""

    def __init__(
        self,
        *,
        base_url: str,
        organizer: str,
        event: str,
        checkin_list: int,
        state_dir: Path,
        journal: Journal,
        revocations: RevocationStore,
        set_trust: Callable[[TrustBundle], None],
        clock: _Clock,
        base_policy: GatePolicy,
        on_policy: Callable[[GatePolicy], None] | None = None,
        on_alert: Callable[[PretixAlert], None] | None = None,
        device_token: str | None = None,
        device_id: int | None = None,
        interval_s: float = 30.0,
        timeout_s: float = 10.0,
        batch: int = 100,
        backoff: Backoff | None = None,
    ) -> None:
        """Plain values only; nothing is read from the network here.

        The device token comes from ``state_dir/pretix_device.json`` (written by
        :meth:`initialize`) unless ``device_token`` is given; then ``device_id`` should be too,
        or other devices' check-ins cannot be told from ours and are not learnt. Raises
        ValueError for a malformed URL or list id, ConfigError for an unreadable device file.
        """
        if isinstance(checkin_list, bool) or not isinstance(checkin_list, int) or checkin_list < 1:
            raise ValueError(f"check-in list id must be a positive integer, got {checkin_list!r}")
        self._http = PretixHTTP(
            base_url, timeout_s=timeout_s, user_agent=f"{SOFTWARE}/{SOFTWARE_VERSION}"
        )
        self._org, self._event, self._list = organizer, event, checkin_list
        self._event_path = f"/api/v1/organizers/{quote(organizer, safe='')}/events/" + quote(
            event, safe=""
        )
        self._state_dir = state_dir
        self._journal, self._revocations = journal, revocations
        self._set_trust, self._on_policy, self._on_alert = set_trust, on_policy, on_alert
        self._clock, self._base_policy = clock, base_policy
        self._interval, self._batch = interval_s, batch
        self._backoff = backoff or Backoff(1.0, 300.0, jitter=True)
        self._device_id = device_id
        self._policy: GatePolicy | None = None
        self._trust_raw: bytes | None = None
        self._alerts: collections.deque[PretixAlert] = collections.deque(maxlen=_ALERTS_KEPT)
        self._sync_state: dict[str, str] = {}
        self._position_peers: dict[int, wire.Peers] = {}  # position id -> its peers' check-ins
        self._stop = asyncio.Event()
        self._round_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._status: dict[str, Any] = {
            "online": False, "last_error": None, "outbox": 0, "last_sync": None,
            "token_revoked": False, "rejected": 0, "alerts": 0, "retry_in": None,
        }  # fmt: skip
        self._load_state(device_token)

    # -- public API ----------------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        """True when a device token is available."""
        return self._http.token is not None

    @property
    def device_id(self) -> int | None:
        return self._device_id

    @property
    def online(self) -> bool:
        """True while the last round went through; the lanes ask on every scan, and an
        admission decided while it is False carries the offline flag (and is uploaded with
        ``force``)."""
        return bool(self._status["online"])

    def nudge(self) -> None:
        """A row was written to the journal: it goes up with the next round (every
        ``interval_s``), so there is nothing to do now."""

    @property
    def policy(self) -> GatePolicy | None:
        """The gate policy from the downloaded check-in list (None before the first download)."""
        return self._policy

    @property
    def alerts(self) -> list[PretixAlert]:
        """The most recent security alerts (up to 100), oldest first."""
        return list(self._alerts)

    @property
    def status(self) -> dict[str, Any]:
        """A snapshot: online, last_error, outbox (unsynced rows, capped at 10,000),
        last_sync (Unix time of the last complete round), token_revoked, rejected (rows pretix
        refused for good), alerts, retry_in (seconds to the next attempt after a failure),
        initialized and device_id."""
        return {**self._status, "initialized": self.initialized, "device_id": self._device_id}

    async def initialize(self, init_token: str) -> int:
        """Exchange a one-time initialisation token for the device's API token; returns the
        device id. The token is stored in ``state_dir/pretix_device.json`` with mode 0600.

        Raises PretixInitError (token refused: used up or unknown), UpstreamUnavailable, or
        OSError when the state file cannot be written.
        """
        body = {
            "token": init_token,
            "hardware_brand": platform.system() or "Linux",
            "hardware_model": platform.machine() or "unknown",
            "os_name": platform.system() or "Linux",
            "os_version": platform.release() or "unknown",
            "software_brand": SOFTWARE,
            "software_version": SOFTWARE_VERSION,
        }
        reply = await self._http.request(
            "POST", "/api/v1/device/initialize", json_body=body, auth=False
        )
        answer = reply.body if isinstance(reply.body, dict) else {}
        token, device = answer.get("api_token"), answer.get("device_id")
        if not reply.ok:
            fields = ", ".join(sorted(answer)) or f"HTTP {reply.status}"
            raise PretixInitError(
                f"device initialisation refused ({fields}): {wire.init_messages(answer)}"
            )
        if not isinstance(token, str) or not token or not isinstance(device, int):
            raise UpstreamUnavailable("device initialisation answer lacks api_token/device_id")
        record = {
            "base_url": self._http.base_url,
            "organizer": answer.get("organizer", self._org),
            "device_id": device,
            "unique_serial": answer.get("unique_serial"),
            "name": answer.get("name"),
            "api_token": token,
        }
        self._state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self._state_dir / DEVICE_FILE, json.dumps(record).encode(), mode=0o600)
        self._http.token, self._device_id = token, device
        self._status["token_revoked"] = False
        log.info("pretix device %d initialised (token %s)", device, secret_label(token))
        return device

    def start(self) -> None:
        """Run rounds in the background (on the running loop) until :meth:`close`; idempotent."""
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.get_running_loop().create_task(self.run(), name="pretix-sync")

    async def close(self) -> None:
        """Stop the background task (if any) and close the HTTP session; idempotent."""
        task, self._task = self._task, None
        self._stop.set()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._http.close()

    async def run(self) -> None:
        """Rounds until :meth:`close`: every ``interval_s`` while healthy, backing off after a
        failure. A round that raises (journal or store fault) is logged and retried later."""
        while not self._stop.is_set():
            try:
                ok = await self.sync_once()
            except Exception as exc:  # a local store fault must not end syncing for good
                log.exception("pretix: sync round failed")
                self._fail(f"local fault: {exc}")
                self._status["retry_in"] = self._backoff.next_delay()
                ok = False
            delay = self._interval if ok else self._status["retry_in"] or self._interval
            if await sleep_or_stop(delay, self._stop):
                return

    async def sync_once(self) -> bool:
        """One round: downloads, then uploads. True when everything went through.

        Never raises for pretix faults (unreachable, slow, 5xx, malformed, 401): those are in
        :attr:`status` and the queue is kept. Journal and revocation store faults propagate.
        Rounds never overlap: a call while the background round runs waits for it (two rounds
        at once would upload the same rows twice).
        """
        async with self._round_lock:
            return await self._round()

    async def _round(self) -> bool:
        retry_after: float | None = None
        try:
            await self._download()
            await self._upload()
        except UpstreamAuthError as exc:
            self._fail(str(exc), revoked=self.initialized)
            log.error("pretix: %s; queue kept, (re-)initialise the device", exc)
        except UpstreamUnavailable as exc:
            retry_after = exc.retry_after
            self._fail(str(exc))
            log.warning("pretix unavailable, queue kept: %s", exc)
        except ConfigError as exc:  # a body pretix_event refused: a malformed answer
            self._fail(f"malformed answer: {exc}")
            log.warning("pretix answer refused, queue kept: %s", exc)
        else:
            self._backoff.reset()
            self._status.update(online=True, last_error=None, token_revoked=False, retry_in=None)
            self._status["last_sync"] = self._clock.now()
            await self._count_outbox()
            return True
        self._status["retry_in"] = self._backoff.next_delay(at_least=retry_after or 0.0)
        await self._count_outbox()
        return False

    # -- downloads -----------------------------------------------------------------------------

    async def _download(self) -> None:
        if not self.initialized:
            raise UpstreamAuthError("device not initialised: no device token")
        event = await self._get_object(self._event_path + "/")
        bundle = pretix_event.trust_bundle(event)
        if bundle.raw != self._trust_raw:
            self._set_trust(bundle)
            self._trust_raw = bundle.raw
            log.info("pretix: %d event key(s) installed", len(bundle.issuers))
        checkin_list = await self._find_list()
        policy = pretix_event.list_policy(checkin_list, self._base_policy)
        if policy != self._policy:
            self._policy = policy
            if self._on_policy is not None:
                self._on_policy(policy)
        await self._download_secrets()
        await self._download_checkins()

    async def _find_list(self) -> dict[str, Any]:
        """Our check-in list from the event's lists: the pretixSCAN profile may list them but
        not read one by its id (403)."""
        path = f"{self._event_path}/checkinlists/"
        async for _reply, rows in self._http.pages(path, {}):
            for row in rows:
                if isinstance(row, dict) and row.get("id") == self._list:
                    return row
        raise UpstreamUnavailable(f"GET {path}: check-in list {self._list} not found in the event")

    async def _get_object(self, path: str) -> dict[str, Any]:
        reply = await self._http.request("GET", path)
        if not reply.ok or not isinstance(reply.body, dict):
            raise UpstreamUnavailable(f"GET {path}: HTTP {reply.status}, no JSON object")
        return reply.body

    async def _download_secrets(self) -> None:
        cursor = self._revocations.upstream_cursor
        revoked: list[str] = []
        newest_created = cursor.get(_REVOKED_CURSOR)
        params = {"ordering": "created"}
        if newest_created:
            params["created_since"] = newest_created
        async for reply, rows in self._http.pages(f"{self._event_path}/revokedsecrets/", params):
            revoked += pretix_event.revoked_secrets(reply.body)
            newest_created = wire.latest(newest_created, rows, "created")
        blocked: dict[str, bool] = {}
        newest_updated = cursor.get(_BLOCKED_CURSOR)
        params = {"ordering": "updated"}
        if newest_updated:
            params["updated_since"] = newest_updated
        async for reply, rows in self._http.pages(f"{self._event_path}/blockedsecrets/", params):
            blocked.update(pretix_event.blocked_secrets(reply.body))  # later rows win
            newest_updated = wire.latest(newest_updated, rows, "updated")
        new_cursor = {
            name: value
            for name, value in (
                (_REVOKED_CURSOR, newest_created),
                (_BLOCKED_CURSOR, newest_updated),
            )
            if value
        }
        before = self._revocations.meta.version
        meta = await self._revocations.apply_secrets(
            revoke=revoked,
            block=[s for s, b in blocked.items() if b],
            unblock=[s for s, b in blocked.items() if not b],
            cursor=new_cursor,
            issued_at=int(self._clock.now()),
        )
        if meta.version != before:  # the cursor rows come back every round: quiet then
            log.info(
                "pretix: %d revoked, %d blocked-state secrets applied (list v%d)",
                len(revoked), len(blocked), meta.version,
            )  # fmt: skip

    async def _download_checkins(self) -> None:
        """Check-ins of other devices, from the orders modified since the last round.

        pretix ignores ``modified_since`` on a list's positions but honours it on orders, and
        every check-in and every annulment touches its order's ``last_modified``; an order lists
        its positions with their successful check-ins (those of every list: ours are picked
        out). Ordered by creation, which no change moves, so paging while orders change can
        repeat a row but never skip one. The cursor is the server's time at the first page,
        less a margin for transactions still open then.
        """
        if self._device_id is None:
            log.warning("pretix: own device id unknown, other devices' check-ins not learnt")
            return
        since = self._sync_state.get(_ORDERS_CURSOR)
        params = [("ordering", "datetime"), *(("include", f) for f in wire.ORDER_FIELDS)]
        params += [("exclude", f) for f in wire.ORDER_SKIPPED]
        if since:
            params.append(("modified_since", since))
        started: float | None = None
        learnt = skipped = annulled = 0
        async for reply, orders in self._http.pages(f"{self._event_path}/orders/", params):
            if started is None:
                started = wire.page_generated(reply.headers) or self._clock.now()
            rows, bad = wire.order_positions(orders)
            entries, bad_checkins = wire.peer_entries(rows, self._device_id, self._list)
            skipped += bad + bad_checkins
            learnt += await self._journal.add_peer_entries(entries)
            annulled += await self._learn_annulments(rows, self._device_id)
        if learnt or skipped or annulled:
            log.info("pretix: %d check-ins of other devices learnt, %d annulled there, %d skipped",
                     learnt, annulled, skipped)  # fmt: skip
        if started is not None:
            self._sync_state[_ORDERS_CURSOR] = wire.iso(started - _ORDERS_OVERLAP_S)
            self._save_sync_state()

    async def _learn_annulments(self, rows: list[Any], own_device: int) -> int:
        """Other devices' check-ins that a downloaded position no longer lists were annulled
        there (positions list successful check-ins only): store those annulments.

        What each position listed is kept per process; a position first seen since start is
        compared with what the journal learnt before (annulled while this gate was down)."""
        annuls: list[PeerEntry] = []
        for pid, secret, now in wire.position_peers(rows, own_device, self._list):
            known = self._position_peers.get(pid)
            if known is None:
                known = wire.standing_peers(await self._journal.history(wire.PRETIX_REF + secret))
            gone = {k: v for k, v in known.items() if k not in now}
            if gone:
                annuls += wire.peer_annulments(secret, gone, self._clock.now())
            self._position_peers[pid] = now
        return await self._journal.add_peer_entries(annuls) if annuls else 0

    # -- uploads -------------------------------------------------------------------------------

    async def _upload(self) -> None:
        while rows := await self._journal.unsynced(self._batch):
            for rec in rows:
                await self._upload_row(rec)
                await self._journal.mark_synced(rec.gate_seq, self._clock.now())
            if len(rows) < self._batch:
                return

    async def _upload_row(self, rec: EntryRecord) -> None:
        """Send one row; returns when it is done upstream, raises to keep it queued."""
        try:
            if rec.kind in ("entry", "exit"):
                await self._upload_checkin(rec)
            elif rec.kind == "attempt":
                await self._upload_failed(rec)
            else:
                await self._upload_annul(rec)
        except _Done as done:
            why = str(done)
            if why:
                log.info("pretix: %s %s (gate_seq %d) done: %s", rec.kind, rec.entry_id,
                         rec.gate_seq, why)  # fmt: skip

    async def _upload_checkin(self, rec: EntryRecord) -> None:
        secret = wire.secret_of(rec.ticket_ref)
        if secret is None:
            raise _Done("not a pretix ticket, nothing to upload")
        path = wire.redeem_path(self._org, self._event, self._list, secret)
        reply = await self._http.request(
            "POST", path, json_body=wire.redeem_body(rec), params={"untrusted_input": "true"},
            secret=secret,
        )  # fmt: skip
        if reply.ok:
            if rec.kind == "entry":
                await self._check_duplicate(rec, secret, reply)
            return
        reason = reply.body.get("reason") if isinstance(reply.body, dict) else None
        if reply.status == 404 and reason is None:
            raise UpstreamUnavailable(f"redeem: HTTP 404 without a reason (list {self._list}?)")
        if reason == "already_redeemed":
            self._alert(rec, secret, "already_redeemed", "pretix", None, "pretix: already redeemed")
        self._status["rejected"] += 1
        raise _Done(
            f"refused by pretix for good: HTTP {reply.status} {reason or wire.reply_keys(reply)}"
        )

    async def _upload_failed(self, rec: EntryRecord) -> None:
        direction = (self._policy or self._base_policy).direction
        path = f"{self._event_path}/checkinlists/{self._list}/failed_checkins/"
        reply = await self._http.request(
            "POST", path, json_body=wire.failed_checkin_body(rec, direction)
        )
        if reply.ok:
            return
        if reply.status == 404:
            raise UpstreamUnavailable(f"failed_checkins: HTTP 404 (list {self._list}?)")
        self._status["rejected"] += 1
        raise _Done(
            f"failed check-in refused for good: HTTP {reply.status} {wire.reply_keys(reply)}"
        )

    async def _upload_annul(self, rec: EntryRecord) -> None:
        if rec.annuls is None or wire.secret_of(rec.ticket_ref) is None:
            raise _Done("not a pretix ticket, nothing to annul")
        try:
            late = rec.wall_time - wire.uuid7_time(rec.annuls) > wire.ANNUL_WINDOW_S
        except ValueError:
            late = False
        if late:
            log.warning(
                "pretix: annulment %s comes more than 15 min after its entry; pretix refuses"
                " that, not sent (the check-in stays counted upstream)", rec.entry_id,
            )  # fmt: skip
            raise _Done("")
        path = f"/api/v1/organizers/{quote(self._org, safe='')}/checkinrpc/annul/"
        reply = await self._http.request("POST", path, json_body=wire.annul_body(rec, self._list))
        if reply.ok:
            return
        # 404: no check-in with that nonce from this device (the entry was refused upstream);
        # 400: outside pretix's 15 minutes. Retrying cannot change either.
        self._status["rejected"] += 1
        raise _Done(f"annulment refused for good: HTTP {reply.status} {wire.reply_keys(reply)}")

    # -- alerts --------------------------------------------------------------------------------

    async def _check_duplicate(self, rec: EntryRecord, secret: str, reply: Reply) -> None:
        policy = self._policy or self._base_policy
        if policy.entry_policy == "unlimited":
            return
        conflict = wire.prior_entry_in_answer(reply.body, self._device_id, rec.wall_time)
        if conflict is None:
            history = await self._journal.history(rec.ticket_ref)
            conflict = wire.prior_entry_in_history(history, rec.entry_id)
        if conflict is not None:
            self._alert(rec, secret, "duplicate_entry", conflict.device, conflict.at,
                        "admitted here while an entry elsewhere was still standing")  # fmt: skip

    def _alert(
        self, rec: EntryRecord, secret: str, kind: str, other: str, other_at: float | None,
        detail: str,
    ) -> None:  # fmt: skip
        if any(a.entry_id == rec.entry_id for a in self._alerts):
            return
        alert = PretixAlert(kind, pretix_short_id(secret), rec.entry_id, other, rec.wall_time,
                            other_at, detail)  # fmt: skip
        self._alerts.append(alert)
        self._status["alerts"] = self._status["alerts"] + 1
        log.warning(
            "SECURITY ALERT %s: ticket %s entry %s at %s; other: %s at %s (%s)",
            kind, alert.ticket, rec.entry_id, wire.iso(rec.wall_time), other,
            "?" if other_at is None else wire.iso(other_at), detail,
        )  # fmt: skip
        if self._on_alert is not None:
            try:
                self._on_alert(alert)
            except Exception:  # an alert sink must not stop the sync
                log.exception("pretix: alert callback failed")

    # -- state ---------------------------------------------------------------------------------

    def _fail(self, message: str, *, revoked: bool = False) -> None:
        self._status.update(online=False, last_error=message)
        if revoked:
            self._status["token_revoked"] = True

    async def _count_outbox(self) -> None:
        self._status["outbox"] = len(await self._journal.unsynced(_OUTBOX_CAP))

    def _load_state(self, device_token: str | None) -> None:
        path = self._state_dir / DEVICE_FILE
        if device_token is not None:
            self._http.token = device_token
        elif path.exists():
            record = wire.read_state(path)
            if record.get("base_url") not in (None, self._http.base_url):
                raise ConfigError(f"{path}: device belongs to {record.get('base_url')!r}")
            token, device = record.get("api_token"), record.get("device_id")
            if not isinstance(token, str) or not token or not isinstance(device, int):
                raise ConfigError(f"{path}: 'api_token' (string), 'device_id' (int) expected")
            if path.stat().st_mode & 0o077:
                log.warning("%s was readable by others; mode set to 0600", path)
                os.chmod(path, 0o600)
            self._http.token = token
            if self._device_id is None:
                self._device_id = device
        sync_path = self._state_dir / SYNC_FILE
        if sync_path.exists():
            self._sync_state = {
                k: v for k, v in wire.read_state(sync_path).items() if isinstance(v, str)
            }

    def _save_sync_state(self) -> None:
        self._state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = json.dumps(self._sync_state, sort_keys=True).encode()
        write_atomic(self._state_dir / SYNC_FILE, data, mode=0o600)
