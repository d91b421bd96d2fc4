"""What the hub tells its log besides single requests: refused TLS handshakes with the reason,
gates connecting and going quiet, revocation lists issued and alerts raised.

Lines an operator reads in ``journalctl -u gate-hub``::

    TLS handshake from 10.0.0.9 refused: client certificate expired (check the gate's [hub] cert)
    gate gate-a connected from 10.0.0.7
    gate gate-a quiet: no heartbeat for 30 s
    revocation list version 7 issued: 3 revoked, 0 unrevoked, 1 blocked, 0 unblocked
    alert double_admission: ticket 3f2a9c1b0d4e, gates Gate A, Gate B

Tickets appear only as the alert's short hash, tokens never. The same refusal from the same
client (an address; an IPv6 /64) is logged once per :data:`sync.log_throttle.WARN_EVERY_S`, with
the count of those held back, and at most :data:`sync.log_throttle.LOG_BUDGET` such lines are
written a minute in all. With several hub processes on one database, each logs the alerts and
lists it sees, and its own gates.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import ssl
import time
from collections.abc import Callable

from sync.hub_store import HubStore, HubStoreError
from sync.log_throttle import Throttle, client_net

log = logging.getLogger(__name__)

_DELTA_OPS = ("revoke", "unrevoke", "block", "unblock")
_DONE = ("revoked", "unrevoked", "blocked", "unblocked")
_KEY_LEN = 16

_NOT_OUR_CA = "is not from this hub's [tls] client_ca"
_VERIFY = {  # OpenSSL X509_V_ERR_* codes a client certificate fails with
    2: _NOT_OUR_CA,
    18: _NOT_OUR_CA,
    19: _NOT_OUR_CA,
    20: _NOT_OUR_CA,
    21: _NOT_OUR_CA,
    9: "is not valid yet",
    10: "expired",
    26: "is not for client use (extendedKeyUsage without clientAuth)",
    7: "has a bad signature",
    23: "is revoked",
}
_ALERTS = {  # what the client said about this hub's certificate
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust this hub's certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client refused this hub's certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client refused this hub's certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the client says this hub's certificate expired",
}


def handshake_reason(exc: BaseException) -> str | None:
    """Why a TLS handshake failed, in an operator's words, when a certificate or the protocol
    explains it; None for a connection that was reset or timed out.

    A client that ends the handshake without an alert (Python's asyncio, so a gate, drops the
    alert it means to send) is most likely one that does not trust this hub's certificate; a bare
    connect-and-close looks the same, hence the hedged words.
    """
    if type(exc) is ConnectionResetError and not exc.args:  # asyncio: EOF in the handshake
        return (
            "the client ended the handshake (a gate that does not trust this hub's certificate:"
            " check its [hub] ca, the CA of this hub's [tls] cert)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        why = _VERIFY.get(code, exc.verify_message)
        return f"client certificate {why} ({exc.verify_message}; check the gate's [hub] cert)"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError) or not isinstance(
        exc, ssl.SSLError
    ):
        return None
    reason = str(exc.reason or exc)
    if reason in _ALERTS:
        return f"{_ALERTS[reason]} (check the gate's [hub] ca: the CA of this hub's [tls] cert)"
    if reason == "HTTP_REQUEST":
        return "plain HTTP on the TLS port (the gate's [hub] url must start with https://)"
    return f"TLS error {reason}"


class HandshakeLog:
    """Logs refused handshakes: a WARNING per address and reason, then at most one per
    :data:`sync.log_throttle.WARN_EVERY_S` with how many were held back; other failures at DEBUG."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._throttle = Throttle(clock)

    def refused(self, host: str, exc: BaseException) -> None:
        reason = handshake_reason(exc)
        if reason is None:
            log.debug("TLS handshake from %s failed: %s: %s", host, type(exc).__name__, exc)
            return
        more = self._throttle.due((client_net(host), reason))
        if more is not None:
            log.warning("TLS handshake from %s refused: %s%s", host, reason, more)


class Presence:
    """Which gates talk to this hub: a gate's first authorised request after being quiet is
    logged as connecting, and a gate without a heartbeat for ``offline_after_s`` as quiet."""

    def __init__(self, offline_after_s: float, clock: Callable[[], float] = time.monotonic):
        self._offline_after_s = offline_after_s
        self._clock = clock
        self._gates: dict[str, float] = {}  # gate id -> last heartbeat (or connection)

    def request(self, gate_id: str, peer: str) -> None:
        """An authorised request of ``gate_id`` arrived from ``peer``."""
        if gate_id not in self._gates:
            self._gates[gate_id] = self._clock()
            log.info("gate %s connected from %s", gate_id, peer)

    def heartbeat(self, gate_id: str) -> None:
        self._gates[gate_id] = self._clock()

    def check(self) -> None:
        """Log (and forget) the gates without a heartbeat for ``offline_after_s``."""
        now = self._clock()
        for gate_id, last in list(self._gates.items()):
            if now - last > self._offline_after_s:
                del self._gates[gate_id]
                log.warning("gate %s quiet: no heartbeat for %.0f s", gate_id, now - last)


async def watch(store: HubStore, presence: Presence, every_s: float = 1.0) -> None:
    """Every ``every_s``: log quiet gates, and the alerts and non-empty revocation deltas stored
    since the last look (from any hub process or `hub revoke`). Runs until cancelled."""
    alerts = revocations = None
    while True:
        presence.check()
        try:
            if alerts is None or revocations is None:  # start: only what comes from now on
                newest = await store.recent_alerts(None, 1)
                alerts = newest[0].alert_id if newest else 0
                revocations = (await store.revocation_state()).version
            alerts = await _log_alerts(store, alerts)
            revocations = await _log_revocations(store, revocations)
        except HubStoreError as exc:  # the request path reports a failing store
            log.debug("hub watch: store failed: %s", exc)
        await asyncio.sleep(every_s)


async def _log_alerts(store: HubStore, after: int) -> int:
    for alert in await store.alerts(after, 100):
        ticket = f"ticket {alert.ticket}, " if alert.ticket else ""
        log.warning("alert %s: %sgates %s", alert.kind, ticket, ", ".join(alert.gates))
        after = alert.alert_id
    return after


async def _log_revocations(store: HubStore, after: int) -> int:
    deltas = await store.revocation_deltas(after, 32)
    if deltas is None:  # pruned meanwhile: go on from the current version
        return (await store.revocation_state()).version
    versions, total = [], [0] * len(_DONE)  # a big import is many deltas: one line for them
    for data in deltas:
        version, counts = _delta_counts(data)
        if any(counts):  # empty refresh deltas are logged where they are issued
            versions.append(version)
            total = [t + n for t, n in zip(total, counts, strict=True)]
        after = max(after, version)
    if versions:
        first, last = versions[0], versions[-1]
        which = f"version {last}" if first == last else f"versions {first}-{last}"
        changes = ", ".join(f"{n} {done}" for n, done in zip(total, _DONE, strict=True))
        log.info("revocation list %s issued: %s", which, changes)
    return after


def _delta_counts(data: bytes) -> tuple[int, tuple[int, ...]]:
    """Version and key counts per operation of a delta the hub stored (not verified: it signed
    it). Raises HubStoreError for a malformed one."""
    try:
        payload = json.loads(base64.b64decode(json.loads(data)["payload"], validate=True))
        version = payload["version"]
        counts = tuple(
            len(base64.b64decode(payload.get(op, ""), validate=True)) // _KEY_LEN
            for op in _DELTA_OPS
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise HubStoreError("a stored revocation delta is not a signed list document") from exc
    if type(version) is not int:
        raise HubStoreError("a stored revocation delta has no version")
    return version, counts
