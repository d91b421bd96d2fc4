"""pretix as the gate's upstream: device token, keys, lists, check-in upload, peers, alerts.

One :class:`PretixUpstream` per gate runs on the daemon's event loop and never blocks a lane: the
lanes decide offline from the trust bundle, the revocation index and the journal, all of which
this adapter only feeds. A round (:meth:`PretixUpstream.sync_once`) downloads the event's keys,
the check-in list's settings, revoked and blocked secrets and other devices' check-ins and
annulments (:mod:`sync.pretix_download`; a round with nothing changed is five small requests),
then uploads unsynced journal rows in ``gate_seq`` order (:mod:`sync.pretix_upload`). The device's
identity and download cursors are kept by :mod:`sync.pretix_state`. A fault keeps what was not
uploaded queued and the gate's offline decisions going; the next round is delayed by capped
exponential backoff with full jitter (Retry-After as a lower bound), but no longer than
``interval_s`` while uploads still go through (a download failing alone must not hold the gate's
entries back from pretix's other devices).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agent import pretix_event, version
from agent.backoff import Backoff
from agent.clock import ClockReading
from agent.errors import ConfigError, PretixInitError, UpstreamAuthError, UpstreamUnavailable
from agent.journal import Journal
from agent.redact import secret_label
from agent.revocation import RevocationStore
from agent.rules import GatePolicy
from agent.trust import TrustBundle
from sync import pretix_wire as wire
from sync.pretix_download import PretixDownload
from sync.pretix_http import PretixHTTP
from sync.pretix_state import (
    DEVICE_FILE,
    SYNC_FILE,
    event_path,
    event_scope,
    load_device,
    load_event,
    save_device,
    save_event,
)
from sync.pretix_upload import PretixAlert, PretixUpload
from sync.upstream_http import sleep_or_stop

__all__ = ["DEVICE_FILE", "SYNC_FILE", "PretixAlert", "PretixUpstream"]

log = logging.getLogger(__name__)

SOFTWARE = "gate-agent"
_OUTBOX_CAP = 10_000


class _Clock(Protocol):
    def now(self) -> float: ...

    def reading(self) -> ClockReading: ...


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
        """Plain values only; nothing is read from the network here. The event's keys and list
        as last downloaded (``state_dir/pretix_event.json``) are handed to the gate at once.

        The device token comes from ``state_dir/pretix_device.json`` (written by
        :meth:`initialize`) unless ``device_token`` is given; then ``device_id`` should be too,
        or other devices' check-ins cannot be told from ours and are not learnt. Raises
        ValueError for a malformed URL or list id, ConfigError for an unreadable device file.
        """
        if isinstance(checkin_list, bool) or not isinstance(checkin_list, int) or checkin_list < 1:
            raise ValueError(f"check-in list id must be a positive integer, got {checkin_list!r}")
        self._http = PretixHTTP(
            base_url, timeout_s=timeout_s, user_agent=f"{SOFTWARE}/{version.installed()}"
        )
        self._org = organizer
        self._set_trust, self._on_policy = set_trust, on_policy
        self._journal, self._clock, self._base_policy = journal, clock, base_policy
        self._state_dir, self._interval = state_dir, interval_s
        self._backoff = backoff or Backoff(1.0, 300.0, jitter=True)
        self._device_id = device_id
        self._load_device(device_token)
        path = event_path(organizer, event)
        self._down = PretixDownload(
            self._http, event_path=path, checkin_list=checkin_list, state_dir=state_dir,
            journal=journal, revocations=revocations, clock=clock,
        )  # fmt: skip
        self._up = PretixUpload(
            self._http, organizer=organizer, event=event, checkin_list=checkin_list,
            journal=journal, clock=clock, batch=batch, on_alert=on_alert, state_dir=state_dir,
        )  # fmt: skip
        self._policy: GatePolicy | None = None
        self._trust_raw: bytes | None = None
        self._saved: tuple[bytes, GatePolicy] | None = None  # what pretix_event.json holds
        self._event_scope = event_scope(self._http.base_url, path, checkin_list)
        self._stop = asyncio.Event()
        self._round_lock = asyncio.Lock()
        self._alerts_loaded = False
        self._task: asyncio.Task[None] | None = None
        self._status: dict[str, Any] = {
            "online": False, "last_error": None, "outbox": 0, "last_sync": None,
            "token_revoked": False, "rejected": 0, "alerts": 0, "retry_in": None,
        }  # fmt: skip
        self._restore_event()

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
        return list(self._up.alerts)

    @property
    def status(self) -> dict[str, Any]:
        """A snapshot: online, last_error, outbox (unsynced rows, capped at 10,000),
        last_sync (Unix time of the last complete round), token_revoked, rejected (rows pretix
        refused for good), alerts (how many the journal keeps), held (rows passed by: answered
        not by pretix round after round), retry_in (seconds to the next attempt after a
        failure), initialized and device_id."""
        counts = {
            "rejected": self._up.rejected, "alerts": self._up.alert_count, "held": self._up.held,
        }  # fmt: skip
        return {
            **self._status,
            **counts,
            "initialized": self.initialized,
            "device_id": self._device_id,
        }

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
            "software_version": version.installed(),
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
        save_device(self._state_dir, record)
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
        """One round: downloads, then uploads (also after a download failed: the gate's
        entries go up whatever pretix's lists do). True when everything went through.

        Never raises for pretix faults (unreachable, slow, 5xx, malformed, 401): those are in
        :attr:`status` and the queue is kept. Journal and revocation store faults propagate.
        Rounds never overlap: a call while the background round runs waits for it (two rounds
        at once would upload the same rows twice).
        """
        async with self._round_lock:
            return await self._round()

    async def _round(self) -> bool:
        if not self._alerts_loaded:  # before any round could raise one
            await self._up.load_alerts()
            self._alerts_loaded = True
        retry_after: float | None = None
        drained = False
        try:
            try:
                await self._download()
            except (UpstreamUnavailable, ConfigError):
                # The gate's own entries still go up (a slow orders list at the doors' opening
                # must not keep them from the other devices); the download's fault is reported.
                # Not before this process read the check-in list: the config's policy is not
                # the list's (a false duplicate alert on a list allowing several entries).
                if self._policy is not None:
                    with contextlib.suppress(UpstreamUnavailable):
                        await self._drain()
                        drained = True
                raise
            await self._drain(pretix_answered=True)
        except UpstreamAuthError as exc:
            self._fail(str(exc), revoked=self.initialized)
            log.error("pretix: %s; uploads stopped, (re-)initialise the device", exc)
        except UpstreamUnavailable as exc:
            retry_after = exc.retry_after
            self._fail(str(exc))
            log.warning("pretix unavailable%s: %s", "" if drained else ", queue kept", exc)
        except ConfigError as exc:  # a body pretix_event refused: a malformed answer
            self._fail(f"malformed answer: {exc}")
            log.warning("pretix answer refused%s: %s", "" if drained else ", queue kept", exc)
        else:
            self._backoff.reset()
            self._status.update(online=True, last_error=None, token_revoked=False, retry_in=None)
            self._status["last_sync"] = self._clock.now()
            await self._count_outbox()
            return True
        delay = self._backoff.next_delay(at_least=retry_after or 0.0)
        # Uploads went through: the next round comes at the interval at the latest.
        self._status["retry_in"] = min(delay, self._interval) if drained else delay
        await self._count_outbox()
        return False

    async def _drain(self, *, pretix_answered: bool = False) -> None:
        """``pretix_answered``: this round's download got pretix's own answers."""
        policy = self._policy or self._base_policy
        await self._up.drain(policy, self._device_id, pretix_answered=pretix_answered)

    async def _download(self) -> None:
        if not self.initialized:
            raise UpstreamAuthError("device not initialised: no device token")
        event = await self._down.event()
        bundle = pretix_event.trust_bundle(event)
        checkin_list = await self._down.checkin_list()
        policy = pretix_event.list_policy(checkin_list, self._base_policy)
        self._install(bundle, policy)
        saved = (bundle.raw, policy)
        if saved != self._saved:
            try:
                save_event(self._state_dir, self._event_scope, event, checkin_list)
                self._saved = saved
            except OSError as exc:  # the gate goes on; a restart without pretix would lack them
                log.warning("pretix: the event's keys and list not kept: %s", exc)
        await self._down.secrets(self._up.orders_turned)
        entered = functools.partial(self._up.peers_learnt, policy=policy)
        await self._down.checkins(self._device_id, self._up.orders_turned, entered)

    # -- state ---------------------------------------------------------------------------------

    def _install(self, bundle: TrustBundle, policy: GatePolicy) -> None:
        """Hand the event's keys and the list's policy to the gate when they changed."""
        if bundle.raw != self._trust_raw:
            self._set_trust(bundle)
            self._trust_raw = bundle.raw
            log.info("pretix: %d event key(s) installed", len(bundle.issuers))
        if policy != self._policy:
            self._policy = policy
            if self._on_policy is not None:
                self._on_policy(policy)

    def _restore_event(self) -> None:
        """The event's keys and list as last downloaded, so a gate started while pretix cannot
        be reached decides with them (a trial: it refused every ticket, "the event's keys not
        yet from pretix", sending the whole queue to the box office)."""
        try:
            saved = load_event(self._state_dir, self._event_scope)
            if saved is None:
                return
            bundle = pretix_event.trust_bundle(saved[0])
            policy = pretix_event.list_policy(saved[1], self._base_policy)
        except ConfigError as exc:
            log.warning("pretix: the event's keys kept are not usable (%s); they come with the"
                        " first round", exc)  # fmt: skip
            return
        self._install(bundle, policy)
        self._saved = (bundle.raw, policy)
        log.info("pretix: the event's keys and check-in list as last downloaded, until pretix"
                 " answers")  # fmt: skip

    def _fail(self, message: str, *, revoked: bool = False) -> None:
        self._status.update(online=False, last_error=message)
        if revoked:
            self._status["token_revoked"] = True

    async def _count_outbox(self) -> None:
        self._status["outbox"] = len(await self._journal.unsynced(_OUTBOX_CAP))

    def _load_device(self, device_token: str | None) -> None:
        if device_token is not None:
            self._http.token = device_token
            return
        device = load_device(self._state_dir, self._http.base_url)
        if device is not None:
            self._http.token = device.token
            if self._device_id is None:
                self._device_id = device.device_id
