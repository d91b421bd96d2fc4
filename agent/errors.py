"""The exception tree of gate-agent.

Outcomes of a scan are values (:class:`agent.model.Decision`), never exceptions. Exceptions are for
faults: a bad config, a refused trust bundle, a broken device, an upstream that cannot be used. Every
leaf also inherits the builtin it most resembles, so callers may catch either. Library errors
(aiohttp, ssl, json, sqlite3) are mapped to the most specific class here where they are met, with
``raise ... from`` (``from None`` only where the library's text would carry a secret: a pretix URL
that holds a ticket secret); no message carries a token, a secret or a ticket's text.

::

    AgentError
    ├── ConfigError (ValueError)            config file missing, unknown key, wrong type, a file it
    │                                       names missing (CLI exit 78, EX_CONFIG)
    ├── UsageError (ValueError)             a command's option or the input file it names is wrong
    │                                       (CLI exit 2, as argparse's usage errors)
    ├── TicketFormatError (ValueError)      text is not a ticket of a known format (parse step)
    ├── SignedDocumentError (ValueError)    signed file (trust bundle, revocation list) refused
    │   ├── TrustError                      trust bundle refused (forged, truncated, wrong root)
    │   ├── RevocationError                 revocation list refused (forged, gap, bad entry)
    │   └── RollbackError                   version not newer than the one installed
    ├── JournalError (RuntimeError)         journal cannot be opened or written
    │   └── JournalRefused (ConfigError)    the file at the journal's path is not one this gate
    │                                       may use: not a journal, another gate's, of a newer
    │                                       schema (restarting cannot help: CLI exit 78)
    ├── StateInUse (RuntimeError)           another gate-agent process holds the gate's state
    │                                       folder (a second `run`, a device selftest)
    ├── GateUnreachable (ConnectionError)   the configured gate's status server did not answer,
    │                                       or another gate did
    ├── IssuerError (ValueError)            issuer tooling misuse (bad keys dir, bad arguments)
    ├── DriverError (RuntimeError)          a device failed
    │   ├── DriverNotFound (DriverError, LookupError)  unknown URL scheme
    │   ├── DriverTimeout (DriverError, TimeoutError)
    │   └── RelayReleaseError                  the relay moved but may not have been released:
    │                                          the gate may have opened, so the entry stands
    └── UpstreamError                       an upstream (the hub, pretix) could not be used for a
        │                                   request; the class alone says whether to retry
        ├── UpstreamUnavailable (ConnectionError)   transient: unreachable, timed out, 408/425/
        │                                   429/5xx, an oversize or malformed answer; also what
        │                                   a pretix admin may mend while the gate keeps asking:
        │                                   a 403 (the device's profile), a 4xx to a read or a
        │                                   404 without a reason (the event or check-in list);
        │                                   ``retry_after``: the Retry-After; ``brief``: a quick
        │                                   failure another ask may mend
        ├── UpstreamAuthError (PermissionError)     401/403: the credentials are refused (a hub
        │   │                               token, a client certificate, a pretix device token);
        │   │                               retrying cannot help; ``check``: the config key to
        │   │                               look at, when one is known
        │   └── PretixInitError             pretix refused the one-time initialisation token
        │                                   (used up or unknown): a new one is needed
        ├── UpstreamTLSError (ConnectionError)      a certificate failed in TLS (the server's not
        │                                   trusted, or the server dropped ours); ``check``
        └── UpstreamRefused (ValueError)    another 4xx: the request will not work as sent
            ├── UpstreamConflict            409: ids reused with another body (``entry_ids``)
            ├── UpstreamGone                410: no longer kept (revocation deltas: fetch the
            │                               snapshot)
            └── UpstreamNotFound            404 from the hub: no such endpoint (a hub of an
                                            older version)

Beside the code that raises them, in the same tree (``tests/test_errors.py`` checks that every
subclass of AgentError in the project is drawn above or named here):

- ``agent.journal.records.DecisionNotRecorded`` (JournalError): a decision was made but its row
  could not be written; ``decision`` says what it was
- ``sync.protocol_fields.ProtocolError`` (AgentError, ValueError): a wire message that breaks the
  protocol; the text names the field
- ``sync.upstream_http.BodyTooLarge`` (UpstreamUnavailable): an answer past its size cap, before
  the hub or pretix client names the request it answered
- ``sync.pretix_upload._NotPretix`` (UpstreamUnavailable, internal): a redeem answered by
  something that is not pretix (a proxy, a firewall); the upload may pass that row by
- ``sync.hub_store.HubStoreError`` (AgentError, RuntimeError): the hub's database failed or is
  not a hub store; its ForeignStoreError and OtherVenueError (also ConfigErrors), ConflictError,
  RefusedError, OverQuotaError, TokenGoneError, NameTakenError and VersionTakenError are drawn
  in :mod:`sync.hub_store`
"""

from __future__ import annotations

from collections.abc import Sequence


class AgentError(Exception):
    """Base of every gate-agent fault."""


class ConfigError(AgentError, ValueError):
    """The configuration is missing or invalid; the message names file, section and key."""


class UsageError(AgentError, ValueError):
    """A command-line option, argument or input file given on the command line is wrong."""


class TicketFormatError(AgentError, ValueError):
    """A scanned text is not a well-formed ticket of any registered format."""


class SignedDocumentError(AgentError, ValueError):
    """A signed document (trust bundle, revocation list) was refused."""


class TrustError(SignedDocumentError):
    """A trust bundle was refused: bad signature, truncated, wrong root or malformed."""


class RevocationError(SignedDocumentError):
    """A revocation snapshot or delta was refused."""


class RollbackError(SignedDocumentError):
    """A signed document's version is not newer than the installed one."""


class JournalError(AgentError, RuntimeError):
    """The journal could not be opened or written."""


class JournalRefused(JournalError, ConfigError):
    """The file at the journal's path is not one this gate may use: not a gate-agent journal,
    another gate's, or of a schema this version does not know. Starting again cannot mend it,
    so it is also a ConfigError (``run`` exits 78 and systemd does not restart it)."""


class StateInUse(AgentError, RuntimeError):
    """Another gate-agent process holds the gate's state folder (:func:`agent.fsutil.state_lock`)."""


class GateUnreachable(AgentError, ConnectionError):
    """The running gate could not be asked: nothing answers, or another gate answers."""


class IssuerError(AgentError, ValueError):
    """The issuer tooling was given bad keys or arguments."""


class DriverError(AgentError, RuntimeError):
    """A device driver failed."""


class DriverNotFound(DriverError, LookupError):
    """No driver is registered for a URL scheme."""


class DriverTimeout(DriverError, TimeoutError):
    """A device did not answer in time."""


class RelayReleaseError(DriverError):
    """The relay was energised and switching it off failed: the gate may still be open."""


class UpstreamError(AgentError):
    """An upstream server (the hub, pretix) could not be used for this request."""


class UpstreamUnavailable(UpstreamError, ConnectionError):
    """Transient: unreachable, slow, overloaded, or an answer that is not what was asked for.

    ``retry_after`` is the server's Retry-After in seconds (None when it sent none). ``brief``:
    the failure was quick and may be gone on the next ask (a connection lost, a gateway or server
    error, a body cut short), so a reader may ask again within seconds; not set for a timeout (a
    slow server only gets slower when asked again) nor for what asking again cannot change.
    ``answered``: an HTTP status came back (the server, or something in front of it, answered
    this request), not a link failure.
    """

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        brief: bool = False,
        answered: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.brief = brief
        self.answered = answered


class UpstreamAuthError(UpstreamError, PermissionError):
    """The server refuses these credentials (401/403); ``check`` names the config key to look
    at when one is known."""

    def __init__(self, message: str, check: str | None = None) -> None:
        super().__init__(message)
        self.check = check


class PretixInitError(UpstreamAuthError):
    """pretix refused the one-time device initialisation token (used up or unknown)."""


class UpstreamTLSError(UpstreamError, ConnectionError):
    """A certificate failed in TLS with the server; ``check`` names the config key to look at."""

    def __init__(self, message: str, check: str) -> None:
        super().__init__(message)
        self.check = check


class UpstreamRefused(UpstreamError, ValueError):
    """Another 4xx: the server will not accept this request as it is; the message names what."""


class UpstreamConflict(UpstreamRefused):
    """409: the server holds other bodies under some of the uploaded ids (``entry_ids``)."""

    def __init__(self, message: str, entry_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.entry_ids = tuple(entry_ids)


class UpstreamNotFound(UpstreamRefused):
    """404 from the hub: it has no such endpoint (a hub of an older version)."""


class UpstreamGone(UpstreamRefused):
    """410: what was asked for is no longer kept (revocation deltas: fetch the snapshot)."""
