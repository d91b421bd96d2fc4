"""Who is asking the hub (:mod:`sync.hub`): bearer tokens looked up by hash on every request, the
gate a token belongs to and, under mTLS, the client certificate of that gate (the rules are in
:mod:`sync.hub`'s docstring). Every refusal is an :class:`sync.hub_state.HttpError` 401 or 403.
"""

from __future__ import annotations

import hmac
import logging
import ssl

from aiohttp import web

from agent.redact import printable, secret_label
from sync.hub_admin import (
    hash_token,
)
from sync.hub_config import client_cert_gate
from sync.hub_state import HttpError, Hub
from sync.hub_store import TokenInfo
from sync.log_throttle import client_net

log = logging.getLogger(__name__)

_MAX_TOKEN_CHARS = 256
_REALM = 'Bearer realm="gate-agent hub"'
UNKNOWN_TOKEN = _REALM + ', error="invalid_token"'  # the WWW-Authenticate of a token not known


def _peer_gate(request: web.Request) -> tuple[str | None, str]:
    """:func:`client_cert_gate` of the connection's client certificate."""
    transport = request.transport
    tls = transport.get_extra_info("ssl_object") if transport is not None else None
    der = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLObject) else None
    return client_cert_gate(der)


def _peer_host(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


async def caller(request: web.Request, hub: Hub) -> TokenInfo:
    """The token's owner; raises HttpError 401 when the token is missing or unknown."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise HttpError(401, "missing bearer token", headers={"WWW-Authenticate": _REALM})
    digest = hash_token(token)
    info = None if len(token) > _MAX_TOKEN_CHARS else await hub.store.token(digest)
    if info is None or not hmac.compare_digest(info.token_hash, digest):
        peer = request.remote or "?"
        # Anyone can send these: one line per client a minute, LOG_BUDGET lines in all.
        if (more := hub.refused_tokens.due(client_net(peer))) is not None:
            log.warning("unknown token %s refused (%s %s) from %s%s", secret_label(token),
                        request.method, printable(request.path, 200), peer, more)  # fmt: skip
        raise HttpError(401, "unknown token", headers={"WWW-Authenticate": UNKNOWN_TOKEN})
    return info


async def gate_caller(request: web.Request, hub: Hub, gate: str | None) -> TokenInfo:
    """A gate token (for ``gate`` when given, with its client certificate under mTLS) or 403."""
    info = await caller(request, hub)
    if info.role != "gate" or info.gate_id is None:
        raise HttpError(403, f"this needs a gate token, not {_a(info.role)} token")
    if gate is not None and info.gate_id != gate:
        if (more := hub.refused_gates.due((info.gate_id, "path"))) is not None:
            log.warning("token of gate %s refused for gate %s%s", info.gate_id, gate, more)
        raise HttpError(403, "this token belongs to another gate")
    if hub.mtls:
        cn, why = _peer_gate(request)
        if cn != info.gate_id:
            why = why if cn is None else f"client certificate of {cn!r}"
            if (more := hub.refused_gates.due((info.gate_id, why))) is not None:
                log.warning("gate %s: %s refused (from %s)%s", info.gate_id, why,
                            _peer_host(request), more)  # fmt: skip
            raise HttpError(
                403, f"a client certificate for this gate is required ({why})",
                error="client_certificate",
            )  # fmt: skip
    hub.presence.request(info.gate_id, _peer_host(request))
    hub.known_clients.note(_peer_host(request), info.token_hash)  # authorised: certificate too
    return info


async def console_caller(request: web.Request, hub: Hub) -> TokenInfo:
    """The caller's token, which must be a console's (403 for any other)."""
    info = await caller(request, hub)
    if info.role != "console":
        raise HttpError(403, f"this needs a console token, not {_a(info.role)} token")
    hub.known_clients.note(_peer_host(request), info.token_hash)
    return info


def _a(role: str) -> str:
    """``role`` with its article: a gate, an issuing."""
    return f"{'an' if role[0] in 'aeiou' else 'a'} {role}"
