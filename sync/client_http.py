"""HTTP for the gate's hub client: one aiohttp session, a timeout on every request, faults classified.

Every request returns a :class:`Reply` (2xx or 304) or raises one of the upstream errors of
:mod:`agent.errors`, so the client decides from the class alone whether to back off, wait for an
operator or fetch something else: UpstreamUnavailable (unreachable, timed out, 408/429/5xx, an
oversize or malformed answer; ``retry_after``), UpstreamAuthError (401/403: the token is refused,
or not allowed for this gate, or the client certificate is not this gate's), UpstreamTLSError (the
hub's certificate is not trusted here, ``[hub] ca``, or the hub dropped the handshake over this
gate's, ``[hub] cert``), UpstreamConflict (409: entry ids reused with another body,
``entry_ids``), UpstreamGone (410: revocation deltas no longer kept, fetch the snapshot),
UpstreamNotFound (404: an endpoint an older hub does not have) and UpstreamRefused (another 4xx).

Messages of auth and TLS errors end with ``check [hub] KEY`` (``check`` holds KEY): the one config
key an operator should look at. The hub never says why it refused a client certificate in a
handshake (TLS 1.3 has sent the request by then; asyncio drops the alert), so when the hub hangs up
on a gate with a client certificate and again on a fresh probe of ``/v1/health``,
:func:`client_cert_problem` reads the certificate for what a hub refuses.

The bearer token goes into the Authorization header here and nowhere else; logs and messages only
ever carry :func:`agent.redact.secret_label` of it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import yarl
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from multidict import CIMultiDict

from agent.errors import (
    UpstreamAuthError,
    UpstreamConflict,
    UpstreamError,
    UpstreamGone,
    UpstreamNotFound,
    UpstreamRefused,
    UpstreamTLSError,
    UpstreamUnavailable,
)
from agent.fsutil import open_to_others
from sync import protocol
from sync.upstream_http import BodyTooLarge, parse_retry_after, read_capped

_TRANSIENT = frozenset({408, 425, 429})
_HOST_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
# An idle connection is dropped before the hub's header timeout (10 s by default) would close it
# under us: a request on a connection the hub is closing fails and must be retried.
IDLE_KEEPALIVE_S = 5.0


@dataclass(frozen=True, slots=True)
class Reply:
    """A 2xx or 304 answer; ``headers`` are looked up in any case (aiohttp sends "Etag")."""

    status: int
    body: bytes
    headers: Mapping[str, str]


class GateTLS(ssl.SSLContext):
    """The gate's client context; remembers its files so a refusal can be explained."""

    ca_path: Path | None = None
    cert_path: Path | None = None
    cert_cn: str | None = None  # the subject CN of the client certificate: the gate it is for


class TLSFileError(ssl.SSLError):
    """A [hub] ca, cert or key file that cannot be used (an ssl.SSLError whose text is its
    message, not the tuple of its arguments)."""

    def __str__(self) -> str:
        return str(self.args[0])


def tls_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A client TLS context: verifies the hub with ``ca`` (else the system's CAs) and presents
    ``cert``/``key`` for mTLS when given. Raises TLSFileError naming the key of an unusable
    file."""
    context = GateTLS(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    context.ca_path, context.cert_path = ca, cert
    try:
        if ca is None:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            context.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise TLSFileError(f"[hub] ca {ca}: not a readable PEM CA certificate ({exc})") from exc
    if cert is not None:
        try:
            context.load_cert_chain(str(cert), str(key) if key is not None else None)
        except (OSError, ssl.SSLError) as exc:
            what = "does not belong to" if "KEY_VALUES_MISMATCH" in str(exc) else "or"
            raise TLSFileError(
                f"[hub] key {key} {what} [hub] cert {cert}: unusable ({exc})"
            ) from exc
        holder = key if key is not None else cert  # the file the private key is in
        if (open_key := open_to_others(holder)) is not None:  # a user trial: taken at 0644
            raise TLSFileError(
                f"[hub] {'key' if key is not None else 'cert'} {holder}: a private key {open_key}"
            )
        context.cert_cn = _subject_cn(cert)
    return context


def _subject_cn(path: Path) -> str | None:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (OSError, ValueError):
        return None
    return str(cns[0].value) if len(cns) == 1 else None


def client_cert_problem(tls: ssl.SSLContext | None, now: float) -> str | None:
    """Why a hub would refuse the client certificate of ``tls`` (a :class:`GateTLS`): expired,
    not yet valid, not made for a client, not from the CA in ``[hub] ca``; None when none of
    these or there is no certificate. Reads the files; never raises."""
    if not isinstance(tls, GateTLS) or tls.cert_path is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(tls.cert_path.read_bytes())
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "has no extendedKeyUsage clientAuth"
    except (OSError, ValueError) as exc:
        return f"cannot be read ({exc})"
    when = datetime.fromtimestamp(now, UTC)
    if cert.not_valid_after_utc < when:
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_before_utc > when:
        return f"is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage or ExtendedKeyUsageOID.SERVER_AUTH in usage:
        return "is not a client certificate (extendedKeyUsage must be clientAuth only)"
    if tls.ca_path is not None and not _issued_by_any(cert, tls.ca_path):
        return "is not from the CA in [hub] ca (the hub takes those of its [tls] client_ca)"
    return None


def _issued_by_any(cert: x509.Certificate, ca_path: Path) -> bool:
    try:
        cas = x509.load_pem_x509_certificates(ca_path.read_bytes())
    except (OSError, ValueError):
        return True  # nothing to compare with: not the reason to name
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _tls_fault(exc: BaseException) -> UpstreamTLSError | None:
    """An UpstreamTLSError for a failure that a certificate explains, else None."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        code = getattr(error, "verify_code", None)
        why = getattr(error, "verify_message", None) or str(error)
        if code in _HOST_MISMATCH:
            return UpstreamTLSError(
                f"the hub's certificate is not for this host ({why}): check [hub] url"
                " against its subjectAltName, and [hub] ca", "url"
            )  # fmt: skip
        return UpstreamTLSError(
            f"the hub's certificate is not trusted ({why}): check [hub] ca", "ca"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        reason = str(getattr(exc.os_error, "reason", None) or exc)
        if "WRONG_VERSION_NUMBER" in reason:
            return UpstreamTLSError(
                f"the hub does not answer TLS ({reason}): check [hub] url", "url"
            )
        if "ALERT" in reason and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason):
            return UpstreamTLSError(
                f"the hub refused this gate's client certificate ({reason}): check [hub] cert",
                "cert",
            )
        return UpstreamTLSError(f"TLS with the hub failed ({reason}): check [hub] ca", "ca")
    return None


def _hung_up(exc: BaseException, tls: ssl.SSLContext | None) -> bool:
    """A connection the hub closed or reset (not one it never accepted), with a client
    certificate that the hub may have refused in the handshake."""
    return (
        isinstance(tls, GateTLS)
        and tls.cert_path is not None
        and isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
        and not isinstance(exc, aiohttp.ClientConnectorError)
    )


class HubHTTP:
    """A session against one hub. ``last_ok``/``last_down`` (monotonic) say when it last
    answered a request with success, and when it was last unreachable or failing (5xx)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float,
        user_agent: str,
        tls: ssl.SSLContext | None = None,
        gate_id: str | None = None,
    ) -> None:
        """Raises ValueError for a URL that is not http(s)://host[:port][/prefix].

        ``gate_id`` (this gate) tells a refused token from a refused client certificate when
        the certificate is this gate's own and the token another gate's."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError("hub URL must be http(s)://host[:port][/prefix]")
        self.base_url = base_url.rstrip("/")
        self._token, self._timeout_s, self._tls = token, timeout_s, tls
        self._user_agent = user_agent
        self._gate_id = gate_id
        self._session: aiohttp.ClientSession | None = None
        self.last_ok: float | None = None
        self.last_down: float | None = None
        self.last_answer: float | None = None  # monotonic: any HTTP answer, whatever its status
        self._answered = asyncio.Event()  # replaced on each answer: see next_answer()

    def reachable(self, within_s: float) -> bool:
        """The hub answered a request (whatever its status but a 5xx) within ``within_s``
        seconds and none has failed to reach it (or met a 5xx) since."""
        answer, down = self.last_answer, self.last_down
        if answer is None or (down is not None and down > answer):
            return False
        return time.monotonic() - answer <= within_s

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        cap: int = protocol.MAX_BODY_BYTES,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> Reply:
        """One request to ``path`` (already safe: ids are checked); returns 2xx and 304 answers
        of at most ``cap`` bytes. Raises an UpstreamError for everything else."""
        url = yarl.URL(self.base_url + path, encoded=True)
        if params:
            url = url.update_query(params)
        what = f"{method} {path}"
        try:
            async with self._open().request(
                method, url, data=body, headers=self._headers(headers, body is not None),
                allow_redirects=False, timeout=client_timeout,
            ) as resp:  # fmt: skip
                raw = await _read_capped(resp, cap, what)
                status, resp_headers = resp.status, CIMultiDict(resp.headers)  # any case
        except UpstreamUnavailable:  # an oversize answer; first, as it is an OSError too
            self.last_down = time.monotonic()
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.last_down = time.monotonic()
            tls = _tls_fault(exc) if self._tls is not None else None
            if tls is None and _hung_up(exc, self._tls) and await self._certificate_refused():
                why = client_cert_problem(self._tls, time.time()) or "was refused (see its log)"
                tls = UpstreamTLSError(
                    f"the hub hangs up in TLS: this gate's client certificate {why}:"
                    " check [hub] cert", "cert"
                )  # fmt: skip
            if tls is not None:
                raise UpstreamTLSError(f"{what}: {tls}", tls.check) from exc
            raise UpstreamUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        self.last_answer = time.monotonic()
        if 200 <= status < 300 or status == 304:
            self.last_ok = time.monotonic()
            answered, self._answered = self._answered, asyncio.Event()
            answered.set()
            return Reply(status, raw, resp_headers)
        raise self._refusal(what, status, raw, resp_headers)

    def next_answer(self) -> asyncio.Event:
        """An event set by the next successful answer (of any request on this session) from
        now on."""
        return self._answered

    async def close(self) -> None:
        """Close the session; idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _headers(self, extra: Mapping[str, str] | None, has_body: bool) -> dict[str, str]:
        """The only place the token is used."""
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers | dict(extra or {})

    def _refusal(
        self, what: str, status: int, raw: bytes, headers: Mapping[str, str]
    ) -> UpstreamError:
        try:
            error: protocol.ErrorBody | None = protocol.parse(raw, protocol.ErrorBody)
        except protocol.ProtocolError:
            error = None
        detail = "no error body" if error is None else f"{error.error}: {error.message[:200]}"
        message = f"{what}: HTTP {status} ({detail})"
        if status in _TRANSIENT or status >= 500:
            if status != 429:  # "slow down" (this gate's upload quota): the hub is there
                self.last_down = time.monotonic()
            return UpstreamUnavailable(
                message, parse_retry_after(headers.get("Retry-After"), time.time())
            )
        if status == 401:
            return UpstreamAuthError(f"{message}: the hub refused this gate's token: check [hub]"
                                " token_file (or token)", "token")  # fmt: skip
        if status == 403 and error is not None and self._cert_refused(error):
            return UpstreamAuthError(f"{message}: the hub refused this gate's client certificate:"
                                " check [hub] cert and key", "cert")  # fmt: skip
        if status == 403:
            return UpstreamAuthError(f"{message}: the hub refused this gate's token: check [hub]"
                                " token_file (or token) and [gate] id", "token")  # fmt: skip
        if status == 409:
            return UpstreamConflict(message, error.conflicts if error is not None else ())
        if status == 410:
            return UpstreamGone(message)
        if status == 404:
            return UpstreamNotFound(message)
        return UpstreamRefused(message)

    async def _certificate_refused(self) -> bool:
        """Whether the hub hangs up on a fresh connection's first request (``/v1/health``, no
        token): then it refuses the client certificate in the TLS handshake (TLS 1.3 sends the
        request before the hub has checked the certificate, and asyncio drops the alert). A hub
        that answers, or cannot be reached at all, is not refusing the certificate."""
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                    connector=aiohttp.TCPConnector(ssl=self._tls or True, force_close=True),
                ) as probe,
                probe.get(f"{self.base_url}/v1/health", allow_redirects=False) as resp,
            ):
                await resp.read()
        except aiohttp.ClientConnectorError:
            return False
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            return True
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
        return False

    def _cert_refused(self, error: protocol.ErrorBody) -> bool:
        """The hub's 403 for a missing or foreign client certificate (older hubs: by its text),
        unless the certificate is this gate's own: then the token is another gate's."""
        if error.error != "client_certificate" and "client certificate" not in error.message:
            return False
        cn = self._tls.cert_cn if isinstance(self._tls, GateTLS) else None
        return cn is None or cn != self._gate_id

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(
                    ssl=self._tls if self._tls is not None else True,
                    keepalive_timeout=IDLE_KEEPALIVE_S,
                ),
            )
        return self._session


async def _read_capped(resp: aiohttp.ClientResponse, cap: int, what: str) -> bytes:
    """The whole body, refusing more than ``cap`` bytes; raises UpstreamUnavailable."""
    try:
        return await read_capped(resp, cap)
    except BodyTooLarge as exc:
        raise UpstreamUnavailable(f"{what}: {exc}") from exc
