"""The root operator's side of the trust bundle: add, retire and compromise issuer keys, and
hand the venue over to a new root key.

A root folder (made by `gate-agent keys init`) holds ``root.key``, ``root.pub`` and the current
``trust.json``. Each operation reads that bundle (verified against ``root.pub``), changes one
issuer entry, and writes the next version signed by ``root.key``: that is the only step that
needs the root's private key, so the folder can live on an offline machine and the new
``trust.json`` travel to the hub (or a USB stick) from there. Issuers (sales channels,
distributors) keep their own key folders (`gate-agent keys issuer`) and hand over only
``issuer.pub`` (or the folder, from which only public material is read).

What a status means at a gate:

- ``active``: tickets signed by the key are accepted within its validity.
- ``retired``: no new tickets should be signed by it; those already issued stay valid until their
  own end (a gate treats the key as it treated it before).
- ``compromised``: every ticket signed by the key is refused (``key_not_valid``), whenever it was
  issued. Final: a compromised kid never becomes active again (give the issuer a new kid).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent import keys, signed, trust
from agent.errors import IssuerError, TrustError
from agent.fsutil import write_atomic
from agent.issuer import ISSUER_INFO, ISSUER_PUB, ROOT_KEY, ROOT_PUB, TRUST_BUNDLE, parse_info

_U32 = 0xFFFF_FFFF


@dataclass(frozen=True)
class Published:
    """A bundle version written by one operation."""

    path: Path
    version: int
    kid: str
    changed: bool = True  # False: the bundle already said so; nothing was written


def add_issuer(
    root_dir: Path,
    source: Path,
    *,
    kid: int | None = None,
    events: list[int] | None = None,
    not_before: int | None = None,
    not_after: int | None = None,
) -> Published:
    """Add an issuer key (a `keys issuer` folder or a PEM public key file) as ``active``.

    ``kid`` is required for a bare public key file and must match a folder's issuer.json when
    both are given. Raises IssuerError on an unreadable source or a bad value, TrustError when the
    kid is already in the bundle or the key is the root's or a list signer's.
    """
    public, info_kid = _issuer_public(source)
    if kid is None and info_kid is None:
        raise IssuerError(f"{source}: a public key file carries no kid: give --kid N")
    if kid is not None and info_kid is not None and kid != info_kid:
        raise IssuerError(f"{source}: issuer.json says kid {info_kid}, --kid says {kid}")
    chosen = kid if kid is not None else info_kid
    assert chosen is not None
    if not 1 <= chosen <= _U32:
        raise IssuerError(f"kid must be in 1..{_U32}, got {chosen}")
    if not_before is not None and not_after is not None and not_after < not_before:
        raise IssuerError("--not-after is before --not-before")
    content, root_key = _current(root_dir)
    entry = {
        "kid": str(chosen),
        "alg": keys.alg_of(public),
        "public_key": keys.public_raw_b64(public),
        "formats": ["tk1", "tk2"],
        "events": None if events is None else [str(e) for e in events],
        "valid_from": not_before,
        "valid_until": not_after,
        "status": "active",
    }
    if any(e.get("kid") == entry["kid"] for e in content["issuers"]):
        raise TrustError(f"kid {chosen} is already in {root_dir / TRUST_BUNDLE}")
    content["issuers"].append(entry)
    return _publish(root_dir, content, root_key, str(chosen))


def set_status(root_dir: Path, kid: int, status: Literal["retired", "compromised"]) -> Published:
    """Mark issuer ``kid`` retired or compromised in the next bundle version.

    When the kid already has that status nothing is written (``changed`` False). Raises TrustError for an
    unknown kid or an attempt to retire a compromised one.
    """
    content, root_key = _current(root_dir)
    entries = [e for e in content["issuers"] if e.get("kid") == str(kid)]
    if not entries:
        known = ", ".join(str(e.get("kid")) for e in content["issuers"]) or "none"
        raise TrustError(f"kid {kid} is not in {root_dir / TRUST_BUNDLE} (kids: {known})")
    entry = entries[0]
    if entry["status"] == status:
        return Published(root_dir / TRUST_BUNDLE, int(content["version"]), str(kid), False)
    if entry["status"] == "compromised":
        raise TrustError(f"kid {kid} is compromised; that is final (issue under a new kid)")
    entry["status"] = status
    return _publish(root_dir, content, root_key, str(kid))


def status_of(folder: Path, kid: int) -> str | None:
    """Issuer ``kid``'s status in the bundle kept in ``folder`` (a root folder; verified against
    its root.pub), or None when the folder keeps no bundle or the bundle has no such kid.
    Raises TrustError when the bundle is there but unusable."""
    if not (folder / TRUST_BUNDLE).exists() or not (folder / ROOT_PUB).exists():
        return None
    try:
        data = trust.read_capped(folder / TRUST_BUNDLE)
    except OSError as exc:
        raise TrustError(f"{folder / TRUST_BUNDLE}: cannot read: {exc.strerror or exc}") from exc
    bundle = trust.parse_bundle(data, trust.load_root_key(str(folder / ROOT_PUB)))
    return next((str(i.status) for i in bundle.issuers if i.kid == str(kid)), None)


def rotate_root(root_dir: Path) -> Published:
    """Hand the venue over to a new root key: the next bundle names it (``root_next``) and is
    signed by the current root and by the new one; gates that install it pin the new root and
    from then on refuse bundles signed by the old one alone.

    In ``root_dir`` the new key becomes ``root.key``/``root.pub``; the old one is kept as
    ``root.key.old`` (destroy it once every gate runs the hand-over bundle). Raises TrustError
    or IssuerError when the current bundle or keys are unusable.
    """
    content, old_key = _current(root_dir)
    new_key = keys.generate("ed25519")
    content["root_next"] = keys.public_raw_b64(new_key)
    keys.write_private(root_dir / (ROOT_KEY + ".next"), new_key)
    done = _publish(root_dir, content, old_key, "", cosigners=[new_key])
    trust.parse_bundle(done.path.read_bytes(), keys.public_key_of(new_key))  # pinned gates too
    (root_dir / ROOT_KEY).replace(root_dir / (ROOT_KEY + ".old"))
    (root_dir / (ROOT_KEY + ".next")).replace(root_dir / ROOT_KEY)
    write_atomic(root_dir / ROOT_PUB, (keys.public_raw_b64(new_key) + "\n").encode())
    return done


def _issuer_public(source: Path) -> tuple[keys.PublicKey, int | None]:
    """The public key of a `keys issuer` folder (and its kid) or of a PEM public key file."""
    if source.is_dir():
        kid, alg, _ = parse_info(source / ISSUER_INFO)
        public = keys.read_public_pem(source / ISSUER_PUB)
        if keys.alg_of(public) != alg:
            raise IssuerError(f"{source / ISSUER_PUB}: not the {alg} key issuer.json names")
        return public, kid
    return keys.read_public_pem(source), None


def _current(root_dir: Path) -> tuple[dict[str, Any], keys.PrivateKey]:
    """The current bundle's content (verified against root.pub) and the root private key."""
    root_key = keys.read_private(root_dir / ROOT_KEY)
    root_pub = trust.load_root_key(str(root_dir / ROOT_PUB))
    if keys.public_raw_b64(root_key) != keys.public_raw_b64(root_pub):
        raise IssuerError(f"{root_dir / ROOT_PUB}: does not match {root_dir / ROOT_KEY}")
    try:
        data = trust.read_capped(root_dir / TRUST_BUNDLE)
    except OSError as exc:
        raise TrustError(f"{root_dir / TRUST_BUNDLE}: cannot read: {exc.strerror or exc}") from exc
    trust.parse_bundle(data, root_pub)  # every check a gate makes, before building on it
    content = signed.open_document(trust.KIND, data, [root_pub], error=TrustError)
    return json.loads(json.dumps(content)), root_key  # a deep, plain copy to edit


def _publish(
    root_dir: Path,
    content: dict[str, Any],
    root_key: keys.PrivateKey,
    kid: str,
    cosigners: list[keys.PrivateKey] | None = None,
) -> Published:
    """Sign ``content`` as the next version, check it as a gate would, write it atomically.

    A hand-over's ``root_next`` is kept only in the bundle that hands over (``cosigners``)."""
    if not cosigners:
        content.pop("root_next", None)
    content["version"] = int(content["version"]) + 1
    content["issued_at"] = max(int(time.time()), int(content.get("issued_at", 0)))
    data = signed.sign_document(trust.KIND, content, root_key, cosigners or ())
    trust.parse_bundle(data, keys.public_key_of(root_key))  # refused here, never at the gates
    path = root_dir / TRUST_BUNDLE
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise TrustError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return Published(path, content["version"], kid)
