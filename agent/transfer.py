"""Ticket transfer: a fan passes a ticket on; the old barcode must die, the new one must work.

:func:`transfer` re-issues a TK1 ticket with the same ``ticket_id`` (the admission right, which
anti-passback keys on) and a new random ``token_id`` (the barcode's identity, which revocation
keys on), and signs the next revocation delta revoking the old token. So:

- once a gate installs the delta, the old text is refused ``revoked``; the new one is admitted;
- at a gate that has not installed it yet, the old text may enter once, and then the new text is
  refused ``already_used`` (same ticket id): the pair never enters twice, and the hub sees one
  admission of one ticket, so it raises no double-admission alert.

The files: ``OUT/ticket-NNNN.txt`` and ``.png`` (as `gate-agent issue` writes them) and
``OUT/ticket-NNNN.revocation.json`` (the delta, as `gate-agent revoke` writes it; its version is
kept in the keys folder's ``revocations.state.json``, shared with `revoke`).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from agent import revocation_issuer, tickets, trust
from agent.errors import IssuerError, TicketFormatError
from agent.issuer import TRUST_BUNDLE, Issuer
from agent.ticket_files import write_tickets

STATE_FILE = "revocations.state.json"


@dataclass(frozen=True)
class Transferred:
    """What :func:`transfer` wrote: the new ticket's text file and the revocation delta."""

    ticket: Path
    revocation: Path
    short_id: str  # the ticket's short id: the same for the old and the new text


def transfer(iss: Issuer, out: Path, text: str, *, now: float | None = None) -> Transferred:
    """Re-issue ``text`` (a TK1 ticket this keys folder's issuer signed) under a new token.

    Raises IssuerError when the text is not a TK1 ticket, is not signed by this folder's issuer
    key (checked against the folder's trust.json), or the files cannot be written. The message
    never repeats the text.
    """
    try:
        old = tickets.parse(text)
    except TicketFormatError as exc:
        raise IssuerError(f"not a ticket text: {exc}") from None
    if old.fmt != "tk1":
        raise IssuerError(f"a {old.fmt} ticket: only TK1 tickets are transferred here")
    if old.kid != str(iss.kid):
        raise IssuerError(
            f"the ticket was issued under kid {old.kid}; transfer it with that issuer's folder"
            f" (this one is kid {iss.kid})"
        )
    bundle = trust.parse_bundle(
        trust.read_capped(iss.dir / TRUST_BUNDLE), trust.load_root_key(iss.root_pub_b64)
    )
    check = trust.verify(old, bundle, time.time() if now is None else now)
    if not check.ok:
        raise IssuerError(f"the ticket does not verify: {check.detail}")
    if check.key is not None and check.key.status != "active":
        raise IssuerError(
            f"kid {iss.kid} is {check.key.status}: it signs no new tickets (re-issue the ticket"
            " with the active issuer's folder)"
        )
    fields = dict(old.fields)
    new_text = iss.ticket(
        event=int(old.event),
        zones=[n + 1 for n in range(16) if (old.zones or 0) >> n & 1],
        not_before=old.not_before,
        not_after=old.not_after,
        ticket_id=bytes.fromhex(fields["ticket_id"]),
        token_id=secrets.token_bytes(16),
    )
    # The new ticket first, then the old one's revocation: an error leaves neither (no version
    # of the list used up, no second valid ticket beside the old one). A crash between the two
    # leaves the new ticket's files without a revocation: hand them out only with one.
    [path] = write_tickets(out, [new_text])
    revocation = path.with_suffix(".revocation.json")
    try:
        revocation_issuer.issue_delta(
            iss.list_key, iss.dir / STATE_FILE, revoke=[old.revocation_key], out=revocation
        )
    except IssuerError:
        for written in (path, path.with_suffix(".png")):
            with contextlib.suppress(OSError):
                written.unlink()
        raise
    return Transferred(path, revocation, old.short_id)
