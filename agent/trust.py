"""Trust: the root-signed bundle of issuer keys, and signature verification of tickets.

The gate knows one root public key. A bundle signed by the root lists the issuer keys (kid, algorithm,
public key, formats, events, validity, status) and the keys that may sign revocation lists. The
algorithm used to verify a ticket always comes from the bundle entry, never from the ticket. A bundle
whose version is not above the installed one is refused, so a relay cannot roll trust back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from agent import keys, signed
from agent.errors import RollbackError, TrustError
from agent.fsutil import write_atomic
from agent.model import Reason, Ticket
from agent.tickets.tk2 import device_signature_ok

log = logging.getLogger(__name__)

KIND = "trust"
MAX_BUNDLE_BYTES = 1 << 20  # thousands of issuer keys; anything bigger is not a bundle
Status = Literal["active", "retired", "compromised"]
STATUSES: tuple[Status, ...] = ("active", "retired", "compromised")
PINNED_ROOT = "trust.root"  # beside the installed bundle: the root a hand-over pinned


@dataclass(frozen=True, slots=True)
class IssuerKey:
    kid: str
    alg: keys.Alg
    public_key: keys.PublicKey
    formats: frozenset[str]
    events: frozenset[str] | None
    valid_from: int | None
    valid_until: int | None
    status: Status


@dataclass(frozen=True, slots=True)
class TrustBundle:
    version: int
    issued_at: int
    issuers: tuple[IssuerKey, ...]
    list_signers: tuple[keys.PublicKey, ...]
    raw: bytes
    next_root: keys.PublicKey | None = None  # a root hand-over: pin it (see TrustStore)

    def candidates(self, ticket: Ticket) -> list[IssuerKey]:
        """Keys that may have signed ``ticket``: same format, and same kid when the format has one."""
        return [
            k
            for k in self.issuers
            if ticket.fmt in k.formats and (not ticket.kid or k.kid == ticket.kid)
        ]


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """Outcome of verifying one ticket: ``reason`` is OK or the failure's reason code."""

    reason: Reason
    detail: str
    key: IssuerKey | None = None

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK


def _fmt_time(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def verify(ticket: Ticket, bundle: TrustBundle, now: float) -> SignatureCheck:
    """Check ``ticket``'s signature and the signing key's status, validity and event scope."""
    candidates = bundle.candidates(ticket)
    if not candidates:
        label = f"kid {ticket.kid}" if ticket.kid else f"any {ticket.fmt} key"
        return SignatureCheck(Reason.UNKNOWN_KEY, f"no trusted key for {label}")
    key = next(
        (k for k in candidates if keys.verify(k.public_key, ticket.signature, ticket.signed_data)),
        None,
    )
    if key is None:
        return SignatureCheck(Reason.BAD_SIGNATURE, "signature does not verify")
    if key.status == "compromised":
        return SignatureCheck(Reason.KEY_NOT_VALID, f"key {key.kid} is marked compromised", key)
    if key.valid_from is not None and now < key.valid_from:
        detail = f"key {key.kid} not valid before {_fmt_time(key.valid_from)}"
        return SignatureCheck(Reason.KEY_NOT_VALID, detail, key)
    if key.valid_until is not None and now > key.valid_until:
        detail = f"key {key.kid} expired {_fmt_time(key.valid_until)}"
        return SignatureCheck(Reason.KEY_NOT_VALID, detail, key)
    if key.events is not None and ticket.event not in key.events:
        detail = f"key {key.kid} may not sign for event {ticket.event}"
        return SignatureCheck(Reason.KEY_NOT_VALID, detail, key)
    name = f"key {key.kid}" if key.kid else f"a {ticket.fmt} key of the event"
    if ticket.holder is not None:  # a rotating code: the holder's device signed it too
        if not device_signature_ok(ticket.holder):
            return SignatureCheck(
                Reason.BAD_SIGNATURE, "code not signed by the ticket's device key", key
            )
        name += " and the holder's device"
    return SignatureCheck(Reason.OK, f"signed by {key.alg} {name} ({key.status})", key)


def _opt_int(entry: dict[str, Any], name: str, where: str) -> int | None:
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TrustError(f"trust bundle: {where}: {name} must be a non-negative integer or null")
    return value


def _str_list(value: Any, name: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TrustError(f"trust bundle: {where}: {name} must be a list of strings")
    return list(value)


def _parse_issuer(entry: Any, index: int) -> IssuerKey:
    where = f"issuers[{index}]"
    if not isinstance(entry, dict):
        raise TrustError(f"trust bundle: {where} is not an object")
    kid, alg, status = entry.get("kid"), entry.get("alg"), entry.get("status")
    if not isinstance(kid, str):
        raise TrustError(f"trust bundle: {where}: kid must be a string")
    if alg not in keys.ALGORITHMS:
        raise TrustError(f"trust bundle: {where}: alg must be one of {', '.join(keys.ALGORITHMS)}")
    if status not in STATUSES:
        raise TrustError(f"trust bundle: {where}: status must be one of {', '.join(STATUSES)}")
    try:
        public_key = keys.public_from_b64(str(alg), str(entry.get("public_key", "")))
    except ValueError as exc:
        raise TrustError(f"trust bundle: {where}: {exc}") from exc
    events = entry.get("events")
    return IssuerKey(
        kid=kid,
        alg=alg,
        public_key=public_key,
        formats=frozenset(_str_list(entry.get("formats"), "formats", where)),
        events=None if events is None else frozenset(_str_list(events, "events", where)),
        valid_from=_opt_int(entry, "valid_from", where),
        valid_until=_opt_int(entry, "valid_until", where),
        status=status,
    )


def parse_bundle(data: bytes, root: keys.PublicKey) -> TrustBundle:
    """Verify ``data`` against the root key and parse it; raises TrustError when refused."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise TrustError(f"trust bundle of {len(data)} bytes exceeds the {MAX_BUNDLE_BYTES} cap")
    content = signed.open_document(KIND, data, [root], error=TrustError)
    version, issued_at = content.get("version"), content.get("issued_at")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TrustError("trust bundle: version must be an integer >= 1")
    if not isinstance(issued_at, int) or isinstance(issued_at, bool):
        raise TrustError("trust bundle: issued_at must be an integer")
    issuers = content.get("issuers")
    if not isinstance(issuers, list):
        raise TrustError("trust bundle: issuers must be a list")
    signers = []
    for i, value in enumerate(_str_list(content.get("list_signers", []), "list_signers", "root")):
        try:
            signers.append(keys.public_from_b64("ed25519", value))
        except ValueError as exc:
            raise TrustError(f"trust bundle: list_signers[{i}]: {exc}") from exc
    parsed = tuple(_parse_issuer(e, i) for i, e in enumerate(issuers))
    _check_keys(parsed, root, signers)
    return TrustBundle(
        version=version,
        issued_at=issued_at,
        issuers=parsed,
        list_signers=tuple(signers),
        raw=data,
        next_root=_next_root(content, data),
    )


def _next_root(content: dict[str, Any], data: bytes) -> keys.PublicKey | None:
    """The new root a hand-over bundle announces; it must have cosigned the bundle, so a bundle
    signed by the current root alone can never hand the gates to a key nobody holds."""
    value = content.get("root_next")
    if value is None:
        return None
    if not isinstance(value, str):
        raise TrustError("trust bundle: root_next must be a base64 Ed25519 public key")
    try:
        next_root = keys.public_from_b64("ed25519", value)
    except ValueError as exc:
        raise TrustError(f"trust bundle: root_next: {exc}") from exc
    if not signed.signed_by(KIND, data, next_root):
        raise TrustError("trust bundle: announces a new root (root_next) that did not sign it")
    return next_root


def _check_keys(
    issuers: tuple[IssuerKey, ...], root: keys.PublicKey, signers: list[keys.PublicKey]
) -> None:
    """One entry per kid, and no issuer key that is also the root or a list-signing key (a key
    serves one purpose, so a leaked ticket key never signs bundles or lists)."""
    seen: set[str] = set()
    others = {keys.public_raw_b64(root): "the root key"} | {
        keys.public_raw_b64(s): "a list-signing key" for s in signers
    }
    for i, issuer in enumerate(issuers):
        if issuer.kid in seen:
            raise TrustError(f"trust bundle: issuers[{i}]: kid {issuer.kid} is listed twice")
        seen.add(issuer.kid)
        role = others.get(keys.public_raw_b64(issuer.public_key))
        if role is not None:
            raise TrustError(f"trust bundle: issuers[{i}]: the key of kid {issuer.kid} is {role}")


def load_root_key(value: str, base: Path | None = None) -> keys.PublicKey:
    """The root public key from base64 text or from a file holding it (``root.pub``)."""
    text = value.strip()
    try:
        return keys.public_from_b64("ed25519", text)
    except ValueError:
        pass  # not a key itself: a path to a file holding one
    path = Path(text) if base is None else base / text
    try:
        content = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustError(f"root key file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        return keys.public_from_b64("ed25519", content)
    except ValueError as exc:
        raise TrustError(f"root key file {path}: {exc}") from exc


class BundleSource(Protocol):
    """Where the scan path reads the trusted keys from."""

    @property
    def bundle(self) -> TrustBundle | None: ...


@dataclass
class UpstreamTrust:
    """Keys that arrive authenticated by other means than the root signature: pretix's device
    API, or event files an operator chose for `check`. Replaced whole when they change."""

    bundle: TrustBundle | None = None


@dataclass
class MergedTrust:
    """Several sources read as one: the root-signed bundle and keys from an upstream (pretix)."""

    parts: list[BundleSource]

    @property
    def bundle(self) -> TrustBundle | None:
        bundles = [b for b in (p.bundle for p in self.parts) if b is not None]
        if len(bundles) <= 1:
            return bundles[0] if bundles else None
        issuers = tuple(i for b in bundles for i in b.issuers)
        return replace(bundles[0], issuers=issuers)


def read_capped(path: Path) -> bytes:
    """A bundle file's bytes, refusing one over the cap before reading it; raises OSError or
    TrustError."""
    size = path.stat().st_size
    if size > MAX_BUNDLE_BYTES:
        raise TrustError(f"{path}: {size} bytes exceeds the trust bundle cap")
    return path.read_bytes()


class TrustStore:
    """The installed bundle of one gate, persisted in its state directory.

    Without a root key (a pretix-only gate, no ``[trust]``) it stays empty: no bundle is
    loaded, and one offered is refused, as nothing could verify it.

    Root hand-over: a bundle that names ``root_next`` (signed by the current root and by the new
    one) makes the store pin the new root in ``trust.root`` beside the installed bundle; from then
    on, across restarts, only bundles the new root signed are accepted (the configured root key
    is the starting point, the pinned one overrides it)."""

    def __init__(
        self, root: keys.PublicKey | None, state_path: Path | None, *, persist: bool = True
    ) -> None:
        """Load the installed bundle from ``state_path``; ``persist=False`` never writes it."""
        self._path = state_path if persist else None
        self._pin = None if state_path is None else state_path.with_name(PINNED_ROOT)
        self._root = root if root is None else self._pinned() or root
        self._bundle: TrustBundle | None = None
        if self._root is not None and state_path is not None and state_path.exists():
            try:
                self._bundle = parse_bundle(read_capped(state_path), self._root)
            except (OSError, TrustError) as exc:
                log.error("installed trust bundle %s is unusable, ignoring it: %s", state_path, exc)
        if self._bundle is not None:
            self._follow(self._bundle)  # a crash between installing and pinning

    @property
    def root(self) -> keys.PublicKey | None:
        """The root key bundles are verified against (the pinned one after a hand-over)."""
        return self._root

    def _pinned(self) -> keys.PublicKey | None:
        if self._pin is None or not self._pin.exists():
            return None
        try:
            return keys.public_from_b64("ed25519", self._pin.read_text(encoding="ascii").strip())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            # Refusing to start would strand the gate; the configured root still holds.
            log.error("pinned root %s is unusable, using the configured root: %s", self._pin, exc)
            return None

    def _follow(self, bundle: TrustBundle) -> None:
        """Pin the new root a hand-over bundle names (once; persisted before it is used)."""
        new = bundle.next_root
        if new is None or self._root is None:
            return
        if keys.public_raw_b64(new) == keys.public_raw_b64(self._root):
            return
        if self._path is not None and self._pin is not None:
            write_atomic(self._pin, (keys.public_raw_b64(new) + "\n").encode())
        self._root = new
        log.warning("trust root handed over: bundles must now be signed by the new root")

    @property
    def bundle(self) -> TrustBundle | None:
        return self._bundle

    @property
    def version(self) -> int:
        return 0 if self._bundle is None else self._bundle.version

    def install(self, data: bytes) -> TrustBundle:
        """Verify and install a bundle; raises TrustError or RollbackError, keeping the old one."""
        if self._root is None:
            raise TrustError("no root key configured ([trust] root_key): bundle not verifiable")
        bundle = parse_bundle(data, self._root)
        if bundle.version <= self.version:
            raise RollbackError(
                f"trust bundle version {bundle.version} is not newer than installed {self.version}"
            )
        if self._path is not None:
            write_atomic(self._path, data)
        self._bundle = bundle
        self._follow(bundle)
        log.info(
            "trust bundle version %d installed (%d issuer keys)",
            bundle.version,
            len(bundle.issuers),
        )
        return bundle

    def offer(self, data: bytes, source: str) -> bool:
        """Install ``data`` if newer; an equal or older one is ignored quietly. True if installed."""
        try:
            self.install(data)
        except RollbackError as exc:
            assert self._root is not None  # install verified it against the root
            if parse_bundle(data, self._root).version == self.version:
                return False
            raise TrustError(f"{source}: {exc}") from exc
        except TrustError as exc:
            raise TrustError(f"{source}: {exc}") from exc
        return True

    def signers(self) -> Sequence[keys.PublicKey]:
        return () if self._bundle is None else self._bundle.list_signers
