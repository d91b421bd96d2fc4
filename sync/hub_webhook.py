"""The alert webhook: each new alert POSTed as JSON (its :meth:`sync.protocol.Alert.to_json`, with
the entries it names and its workflow) to the URL of the hub config's ``[webhook]``, and again,
with ``"update": true``, each one sent before that is acted on since: a note (by security, or by
the hub: "undone by an annulment"), an acknowledgement, an assignment
(:class:`sync.hub_alert_follow.AlertFollower`).

It follows the store's alerts on its own task (as the console does), so ingest never waits for
it: a slow or dead receiver costs nothing but this task's time. Alerts wait in a bounded queue
(``queue_size``; when full, the oldest is dropped and counted in the log); each is tried up to
``max_tries`` times with capped, jittered backoff (:class:`agent.backoff.Backoff`), then dropped
with an error line. A 2xx answer is a delivery. It starts at the newest alert when the hub starts
(alerts raised while no hub ran are not sent), and every hub process on one database sends them.

The URL may carry a secret (a token in its path or query, a password): log lines name only its
scheme, host and port (:func:`safe_url`), and never an exception's text, which may quote the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from agent.backoff import Backoff
from sync.hub_alert_follow import AlertFollower, update_json
from sync.hub_config import WebhookSection
from sync.hub_store import HubStore, HubStoreError
from sync.upstream_http import BodyTooLarge, read_capped

_MAX_ANSWER = 64 << 10  # bytes of a receiver's answer read before it is let go
_DRAIN_S = 1.0  # and seconds spent reading it
log = logging.getLogger(__name__)

POLL_S = 0.5  # how often new alerts are looked for
_PAGE = 100
_READ_RETRY_CAP_S = 5.0  # a store that cannot be read is asked again at most this far apart
_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 30.0


def safe_url(url: str) -> str:
    """``scheme://host:port`` of ``url``: what a log line may say of a webhook URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(unparsable URL)"
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


class AlertWebhook:
    """Posts the store's new alerts to ``section.url``; :meth:`run` until cancelled."""

    def __init__(self, section: WebhookSection, store: HubStore) -> None:
        self._section = section
        self._store = store
        self._where = safe_url(section.url)
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(section.queue_size)
        self.dropped = 0
        self.delivered = 0

    async def run(self) -> None:
        """Follow new alerts and deliver them; returns only when cancelled."""
        timeout = aiohttp.ClientTimeout(total=self._section.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            sender = asyncio.create_task(self._send_all(session))
            try:
                await self._follow()
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def _follow(self) -> None:
        alerts: AlertFollower | None = None
        failing = Backoff(POLL_S, _READ_RETRY_CAP_S)
        while True:
            try:
                if alerts is None:
                    alerts = await AlertFollower.from_now(self._store)
                found, updated = await alerts.step(_PAGE)
            except HubStoreError as exc:
                log.warning("webhook %s: cannot read alerts: %s", self._where, exc)
                await asyncio.sleep(failing.next_delay())
                continue
            except Exception:  # a bug must not end the webhook silently: say so, go on
                log.exception("webhook %s: reading alerts failed", self._where)
                await asyncio.sleep(failing.next_delay())
                continue
            failing.reset()
            for alert in found:
                self._put(alert.to_json())
            for acted in updated:
                self._put(update_json(acted))
            if len(found) < _PAGE:
                await asyncio.sleep(POLL_S)

    def _put(self, payload: dict[str, Any]) -> None:
        if self._queue.full():
            lost = self._queue.get_nowait()
            self.dropped += 1
            log.warning(
                "webhook %s: queue full (%d): alert %s dropped unsent (%d so far)",
                self._where, self._section.queue_size, lost.get("alert_id"), self.dropped,
            )  # fmt: skip
        self._queue.put_nowait(payload)

    async def _send_all(self, session: aiohttp.ClientSession) -> None:
        while True:
            payload = await self._queue.get()
            try:
                await self._deliver(session, payload)
            except Exception as exc:  # never the exception's text: it may hold the URL
                log.error(
                    "webhook %s: alert %s dropped: %s",
                    self._where, payload.get("alert_id"), type(exc).__name__,
                )  # fmt: skip

    async def _deliver(self, session: aiohttp.ClientSession, payload: dict[str, Any]) -> None:
        backoff = Backoff(_BACKOFF_BASE_S, _BACKOFF_CAP_S, jitter=True)
        alert = f"{payload.get('alert_id')}{' (update)' if payload.get('update') else ''}"
        tries = self._section.max_tries
        for attempt in range(1, tries + 1):
            why = await self._post(session, payload)
            if why is None:
                self.delivered += 1
                log.info("webhook %s: alert %s delivered", self._where, alert)
                return
            if attempt == tries:
                log.error(
                    "webhook %s: alert %s dropped after %d attempts (last: %s)",
                    self._where, alert, tries, why,
                )  # fmt: skip
                return
            delay = backoff.next_delay()
            log.warning(
                "webhook %s: alert %s not delivered (%s); attempt %d of %d in %.1f s",
                self._where, alert, why, attempt + 1, tries, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)

    async def _post(self, session: aiohttp.ClientSession, payload: dict[str, Any]) -> str | None:
        """None when delivered, else why not (never an exception's text: it may hold the URL)."""
        try:
            async with session.post(self._section.url, json=payload) as reply:
                # The status says it. The body is drained for the connection's reuse, best
                # effort: a short one, for a second at most, its faults ignored (an answer that
                # never ends, trickles or is cut off does not undo a 2xx).
                with contextlib.suppress(BodyTooLarge, aiohttp.ClientError, TimeoutError):
                    await asyncio.wait_for(read_capped(reply, _MAX_ANSWER), _DRAIN_S)
                return None if 200 <= reply.status < 300 else f"HTTP {reply.status}"
        except TimeoutError:
            return f"no answer within {self._section.timeout_s:g} s"
        except aiohttp.ClientConnectorError as exc:
            return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
        except aiohttp.ClientError as exc:
            return type(exc).__name__
