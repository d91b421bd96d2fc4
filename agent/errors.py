"""The exception tree of gate-agent.

Outcomes of a scan are values (:class:`agent.model.Decision`), never exceptions. Exceptions are for
faults: a bad config, a refused trust bundle, a broken device. Every leaf also inherits the builtin it
most resembles, so callers may catch either.

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
    ├── GateUnreachable (ConnectionError)   the configured gate's status server did not answer,
    │                                       or another gate did
    ├── IssuerError (ValueError)            issuer tooling misuse (bad keys dir, bad arguments)
    └── DriverError (RuntimeError)          a device failed
        ├── DriverNotFound (DriverError, LookupError)  unknown URL scheme
        ├── DriverTimeout (DriverError, TimeoutError)
        └── RelayReleaseError                  the relay moved but may not have been released:
                                               the gate may have opened, so the entry stands
"""

from __future__ import annotations


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
