"""`gate-agent selftest --hub`: check the gate's link to its hub in one go, as the gate sees it.

One line per step, each building on the one before: ``url`` (the hub's address takes connections),
``ca`` (``[hub] ca`` verifies the hub's certificate and the certificate names the URL's host),
``cert`` (the hub's TLS layer accepts ``[hub] cert``/``key``), ``token`` (the hub knows the token
and it belongs to this gate; under mTLS the hub also matches the certificate to the gate), and
``venue`` (the hub serves ``[gate] venue``). A failed step says what to fix; the steps after it are
skipped. Nothing is stored at the hub: the token is probed with an empty upload, which the hub
refuses after checking who sent it. The token never appears in the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from agent.app import config as cfg
from agent.app.selftest import Check, report
from agent.errors import ConfigError, UpstreamAuthError, UpstreamError, UpstreamRefused
from sync import protocol
from sync.client_http import HubHTTP, tls_context

STEPS = ("url", "ca", "cert", "token", "venue")


async def checks(conf: cfg.Config) -> list[Check]:
    """Every step for ``conf``'s [hub] section (which must be set), in order."""
    hub = conf.hub
    assert hub is not None
    done: list[Check] = []
    for step in (_url, _ca, _cert, _token_and_venue):
        done += await step(conf, hub)
        if not all(c.ok for c in done):
            break
    names = {c.name for c in done}
    done += [
        Check(name, False, f"not checked after the {done[-1].name} step failed", skipped=True)
        for name in STEPS
        if name not in names
    ]
    return done


def _where(hub: cfg.HubLinkConfig) -> tuple[str, int, bool]:
    parts = urlsplit(hub.url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    return host, parts.port or (443 if https else 80), https


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


async def _connect(
    host: str, port: int, timeout_s: float, context: ssl.SSLContext | None = None
) -> None:
    """Open and close one connection (a TLS handshake with ``context``); raises what fails."""
    async with asyncio.timeout(timeout_s):
        kwargs = {} if context is None else {"ssl": context, "server_hostname": host}
        _, writer = await asyncio.open_connection(host, port, **kwargs)  # type: ignore[arg-type]
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            await writer.wait_closed()


async def _url(conf: cfg.Config, hub: cfg.HubLinkConfig) -> list[Check]:
    host, port, https = _where(hub)
    try:
        # To an https hub, a whole handshake (nothing verified: that is the next step's): a
        # connection closed before one is a refused handshake in the hub's log, which sends
        # its operator after a CA problem that is not there.
        await _connect(host, port, hub.timeout_s, _unverified() if https else None)
    except ssl.SSLError:
        pass  # the TCP connection was taken; the ca step says what the handshake met
    except (OSError, TimeoutError) as exc:
        return [
            Check(
                "url",
                False,
                f"{hub.url}: cannot connect to {host}:{port}: {_why(exc)}",
                "is the hub running (systemctl status gate-hub)? check [hub] url (host and port)"
                " and the firewall between gate and hub",
            )
        ]
    return [Check("url", True, f"{hub.url}: {host}:{port} takes connections")]


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _ca_context(hub: cfg.HubLinkConfig) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(hub.ca) if hub.ca is not None else None)


async def _ca(conf: cfg.Config, hub: cfg.HubLinkConfig) -> list[Check]:
    host, port, https = _where(hub)
    if not https:
        return [
            Check(
                "ca",
                True,
                "http:// url: no TLS, token and entries travel unencrypted",
                skipped=True,
            )
        ]
    which = f"[hub] ca {hub.ca}" if hub.ca is not None else "the system's CAs (no [hub] ca)"
    try:
        context = _ca_context(hub)
    except (OSError, ssl.SSLError) as exc:
        return [Check("ca", False, f"{which}: cannot load: {_why(exc)}", "give a PEM CA file")]
    try:
        await _connect(host, port, hub.timeout_s, context)
    except ssl.SSLCertVerificationError as exc:
        message = exc.verify_message or _why(exc)
        if "mismatch" in message:
            fix = (
                f"the hub's certificate must name {host} in its subjectAltName (or set [hub] url"
                " to a name the certificate has)"
            )
        else:
            fix = "set [hub] ca to the CA certificate that signed the hub's [tls] cert"
        return [Check("ca", False, f"{which} does not verify the hub: {message}", fix)]
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        return [
            Check(
                "ca",
                False,
                f"TLS handshake with {host}:{port} failed: {_why(exc)}",
                "does the hub serve https on this port (its [tls] section)?",
            )
        ]
    return [Check("ca", True, f"{which} verifies the hub's certificate for {host}")]


def _full_context(conf: cfg.Config, hub: cfg.HubLinkConfig) -> ssl.SSLContext | None:
    return tls_context(hub.ca, hub.cert, hub.key) if _where(hub)[2] else None


async def _cert(conf: cfg.Config, hub: cfg.HubLinkConfig) -> list[Check]:
    if not _where(hub)[2]:
        return [Check("cert", True, "http:// url: no client certificate", skipped=True)]
    if hub.cert is None:
        return [
            Check(
                "cert", True, "none configured ([hub] cert, key): fine unless the hub asks for one"
            )
        ]
    try:
        context = _full_context(conf, hub)
    except (OSError, ssl.SSLError) as exc:
        return [
            Check(
                "cert",
                False,
                f"[hub] cert {hub.cert} / key {hub.key}: cannot load: {_why(exc)}",
                "cert is the gate's PEM certificate and key its private key (a pair)",
            )
        ]
    http = HubHTTP(hub.url, "-", timeout_s=hub.timeout_s, user_agent=_AGENT, tls=context)
    try:
        await http.request("GET", "/v1/health")
    except UpstreamError as exc:
        return [
            Check(
                "cert",
                False,
                f"the hub refused [hub] cert {hub.cert}: {exc}",
                f"the hub's [tls] client_ca must have signed it, with extendedKeyUsage clientAuth"
                f" and CN = {conf.gate.id} (the gate id)",
            )
        ]
    finally:
        await http.close()
    return [Check("cert", True, f"[hub] cert {hub.cert} accepted in the TLS handshake")]


_AGENT = "gate-agent-selftest"


async def _token_and_venue(conf: cfg.Config, hub: cfg.HubLinkConfig) -> list[Check]:
    assert hub.token is not None
    http = HubHTTP(
        hub.url, hub.token, timeout_s=hub.timeout_s, user_agent=_AGENT,
        tls=_full_context(conf, hub),
    )  # fmt: skip
    try:
        token = await _token(conf, hub, http)
        if not all(c.ok for c in token):
            return token
        return [*token, await _venue(conf, http)]
    finally:
        await http.close()


def _token_source(hub: cfg.HubLinkConfig) -> str:
    return f"[hub] token_file {hub.token_file}" if hub.token_file is not None else "[hub] token"


async def _token(conf: cfg.Config, hub: cfg.HubLinkConfig, http: HubHTTP) -> list[Check]:
    gate = conf.gate.id
    # An empty batch: the hub checks who sends it (token, gate, certificate), then refuses the
    # body (400). Nothing is stored either way.
    probe = json.dumps({"v": protocol.PROTOCOL_VERSION, "gate_id": gate, "entries": []})
    source = _token_source(hub)
    make = f"on the hub: gate-agent hub token --config HUB.toml --gate {gate} --out FILE"
    try:
        await http.request("POST", f"/v1/gates/{gate}/entries:batch", body=probe.encode())
    except UpstreamRefused:
        pass  # the empty body was refused after the caller was accepted
    except UpstreamAuthError as exc:
        text = str(exc)
        # The hub's 403 says which it refused; newer clients also name the key (``check``).
        if "cert" in getattr(exc, "check", "") or "certificate" in text:
            return [
                Check("token", True, f"{source}: accepted for gate {gate}"),
                Check(
                    "cert",
                    False,
                    f"the hub wants this gate's client certificate: {text}",
                    f"set [hub] cert and key to a certificate with CN = {gate} and"
                    " extendedKeyUsage clientAuth, signed by the hub's [tls] client_ca",
                ),
            ]
        unknown = "HTTP 401" in text
        return [
            Check(
                "token",
                False,
                f"{source}: {'unknown to the hub' if unknown else 'refused'}: {text}",
                f"make a token for gate {gate} {make}, then point [hub] token_file at it"
                if unknown
                else f"the token is not gate {gate}'s: make one {make}",
            )
        ]
    except UpstreamError as exc:
        return [Check("token", False, f"{source}: not checked: {exc}", "check the hub's log")]
    return [Check("token", True, f"{source}: accepted for gate {gate}")]


async def _venue(conf: cfg.Config, http: HubHTTP) -> Check:
    want = conf.gate.venue
    try:
        reply = await http.request("GET", "/v1/health")
        served = json.loads(reply.body).get("venue")
    except (UpstreamError, ValueError, RecursionError, AttributeError) as exc:
        return Check("venue", False, f"cannot ask the hub's venue: {exc}", "check the hub's log")
    if served != want:
        return Check(
            "venue",
            False,
            f"the hub serves venue {str(served)[:64]!r}, [gate] venue is {want!r}",
            f"set [gate] venue = {str(served)[:64]!r}, or [hub] url to venue {want!r}'s hub",
        )
    return Check("venue", True, f"the hub serves venue {want!r}")


async def run_hub(path: Path, *, out: TextIO) -> int:
    """Check the gate's [hub] link; returns the exit status.

    Raises ConfigError for a bad config or one without a [hub] section.
    """
    conf = cfg.load(path)
    if conf.hub is None:
        raise ConfigError(f"{conf.path}: no [hub] section: this gate has no hub link to check")
    return report(await checks(conf), out)
