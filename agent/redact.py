"""What the product shows instead of a secret: ticket short ids, text digests, shared refs.

A ticket text is a bearer credential and a pretix ticket secret mints check-ins, so neither may
reach a log line, a command's output, an alert, the staff display or the console. Everything that
names a ticket there uses this module, so one ticket has one id everywhere:

- :func:`short_id`: the 8-hex id staff and security see for a ticket (gate logs, ``events``, the
  display, hub and pretix alerts, the console). It is computed from the ticket's *shared* ref, so
  a gate (which holds a pretix secret) and the hub (which holds only its digest) show the same id.
- :func:`shared_ref`: the form of a ticket ref that may leave the gate (a pretix secret becomes
  its SHA-256); other gates learn entries under it.
- :func:`text_digest` / :func:`bytes_digest`: a scanned text or raw frame, for logs and the
  journal (a text that never parsed has no ticket ref).
- :func:`secret_label`: a token or other credential, for log lines that must tell two apart.
- :func:`run_id` / :func:`run_shown`: a gate daemon's run key (a secret it sends only in its
  heartbeats) as the hub keeps it, and as alerts and ``/status`` show it.
- :func:`printable`: text from outside (a server's answer), cut short and with no control
  characters, so it cannot forge or flood log lines.
"""

from __future__ import annotations

import hashlib

SECRET_REF_PREFIX = "pretix:"  # noqa: S105 (a prefix): the ref is a pretix ticket secret
SHARED_SECRET_PREFIX = "pretix-sha256:"  # noqa: S105 (a prefix): its digest, safe to share


def shared_ref(ticket_ref: str) -> str:
    """The form of a ticket ref that may leave the gate: a pretix secret becomes its SHA-256
    (``pretix-sha256:<hex>``), every other ref stays as it is. Idempotent. Other gates learn a
    pretix ticket's entries under this digest, so the hub and its feed never hold the secret.
    """
    if ticket_ref.startswith(SECRET_REF_PREFIX):
        return SHARED_SECRET_PREFIX + hashlib.sha256(ticket_ref.encode()).hexdigest()
    return ticket_ref


def short_id(ticket_ref: str) -> str:
    """The ticket's short id (8 hex digits): the same for a ref and its :func:`shared_ref`."""
    shared = shared_ref(ticket_ref).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(shared, digest_size=4).hexdigest()


def pretix_short_id(secret: str) -> str:
    """The short id of the pretix ticket with this secret (its ref is ``pretix:`` + secret)."""
    return short_id(SECRET_REF_PREFIX + secret)


def bytes_digest(raw: bytes) -> str:
    """A 16-hex hash of raw bytes (a scanner frame), safe to log in place of the bytes."""
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def text_digest(text: str) -> str:
    """A 16-hex hash of a scanned text, safe to log or journal in place of the raw payload."""
    return bytes_digest(text.encode("utf-8", "surrogatepass"))


def printable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, each one that is not printable (newlines, escapes)
    shown as "?"."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def secret_label(secret: str) -> str:
    """A short, non-secret label for a token or credential (8 hex), safe to log."""
    return hashlib.blake2b(secret.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()


NO_RUN = "-"  # the run id of a heartbeat without a run key (a gate of an older version)


def run_id(run_key: str) -> str:
    """The id the hub keeps of a heartbeat's run key (32 hex; :data:`NO_RUN` for none)."""
    return hashlib.sha256(run_key.encode()).hexdigest()[:32] if run_key else NO_RUN


def run_shown(run: str) -> str:
    """A run id as alerts and ``/status`` show it: 12 hex, 48 bits no one matches by trying."""
    return "(none)" if run == NO_RUN else run[:12]
