"""Issuer tooling for TK1: key generation, trust bundles, tickets and their QR codes.

Production issuing normally happens upstream; this module serves the demo, the tests and
integrators who issue their own tickets. A keys directory made by :func:`keys_init` holds::

    root.key issuer.key list.key  PEM private keys, mode 0600
    root.pub                      base64 raw Ed25519 root public key + "\\n" (give it to gates)
    trust.json                    trust bundle version 1, signed by the root key
    issuer.json                   {"kid": "<decimal>", "alg": ..., "events": [...] or null}

Root and list keys are always Ed25519; the issuer (ticket signing) key uses the chosen algorithm.
:func:`export_hub` copies what a hub needs (list.key, trust.json, root.pub) into a folder of its
own: root.key and issuer.key mint bundles and tickets and never sit on the hub.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

from agent import keys, signed, trust
from agent.errors import AgentError, IssuerError
from agent.fsutil import write_atomic
from agent.tickets import tk1, tk2

log = logging.getLogger(__name__)

ROOT_KEY = "root.key"
ISSUER_KEY = "issuer.key"
LIST_KEY = "list.key"
ROOT_PUB = "root.pub"
TRUST_BUNDLE = "trust.json"
ISSUER_INFO = "issuer.json"
ISSUER_PUB = "issuer.pub"
_MANAGED = (ROOT_KEY, ISSUER_KEY, LIST_KEY, ROOT_PUB, TRUST_BUNDLE, ISSUER_INFO)
# What `keys export --hub` writes; list.key is the only private key a hub may hold.
HUB_FILES = (LIST_KEY, TRUST_BUNDLE, ROOT_PUB)
MINTING_KEYS = (ROOT_KEY, ISSUER_KEY)
_PEM_PRIVATE = b"PRIVATE KEY-----"  # any PEM private key block: PKCS#8, EC, RSA, OPENSSH
_SNIFF_BYTES = 64 << 10

ALL_ZONES = 0xFFFF
_U32 = 0xFFFF_FFFF


@dataclass(frozen=True)
class IssuerInfo:
    """What :func:`keys_init` created."""

    dir: Path
    kid: int
    alg: str


def keys_init(
    dir: Path,
    *,
    alg: keys.Alg = "ed25519",
    kid: int | None = None,
    events: list[int] | None = None,
    force: bool = False,
) -> IssuerInfo:
    """Create a keys directory: root, issuer and list keys, root.pub, issuer.json, trust.json.

    ``kid`` defaults to a random non-zero u32; ``events`` (None = any) limits the issuer key in the
    trust bundle. Raises IssuerError when the directory already holds keys and ``force`` is false,
    on a bad ``alg``, ``kid`` or event, or when the files cannot be written.
    """
    if alg not in keys.ALGORITHMS:
        raise IssuerError(
            f"unknown algorithm {alg!r} (expected one of {', '.join(keys.ALGORITHMS)})"
        )
    kid = secrets.randbelow(_U32) + 1 if kid is None else kid
    _check_u32("kid", kid, minimum=1)
    for event in events or ():
        _check_u32("event", event)
    existing = [name for name in _MANAGED if (dir / name).exists()]
    if existing and not force:
        raise IssuerError(
            f"{dir}: already holds keys ({', '.join(existing)}); --force replaces them, but a new"
            " root key invalidates every ticket issued so far and every gate's trust (each gate"
            " then needs the new root.pub and trust.json)"
        )
    info = {
        "kid": str(kid),
        "alg": alg,
        "events": None if events is None else [str(e) for e in events],
    }
    try:
        _write_keys(dir, alg, info)
    except OSError as exc:
        raise IssuerError(f"{dir}: cannot write keys: {exc}") from exc
    issuer = Issuer.load(dir)
    try:
        write_atomic(dir / TRUST_BUNDLE, issuer.trust_bundle(version=1))
    except OSError as exc:
        raise IssuerError(f"{dir / TRUST_BUNDLE}: cannot write: {exc}") from exc
    log.info("created keys dir %s (kid %d, alg %s)", dir, kid, alg)
    return IssuerInfo(dir=dir, kid=kid, alg=alg)


def keys_issuer(
    dir: Path, *, alg: keys.Alg = "ed25519", kid: int | None = None, force: bool = False
) -> IssuerInfo:
    """Create an issuer key folder (a sales channel's, a distributor's): issuer.key (0600),
    issuer.pub (PEM, for the root operator's ``trust add``) and issuer.json. No root key.

    Raises IssuerError when the folder already holds an issuer key and ``force`` is false, on a
    bad ``alg`` or ``kid``, or when the files cannot be written.
    """
    if alg not in keys.ALGORITHMS:
        raise IssuerError(
            f"unknown algorithm {alg!r} (expected one of {', '.join(keys.ALGORITHMS)})"
        )
    kid = secrets.randbelow(_U32) + 1 if kid is None else kid
    _check_u32("kid", kid, minimum=1)
    existing = [n for n in (ISSUER_KEY, ISSUER_PUB, ISSUER_INFO) if (dir / n).exists()]
    if existing and not force:
        raise IssuerError(f"{dir}: already holds an issuer key ({', '.join(existing)})")
    key = keys.generate(alg)
    info = {"kid": str(kid), "alg": alg, "events": None}
    try:
        dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys.write_private(dir / ISSUER_KEY, key)
        write_atomic(dir / ISSUER_PUB, keys.public_pem(key))
        write_atomic(dir / ISSUER_INFO, (json.dumps(info, indent=1) + "\n").encode())
    except OSError as exc:
        raise IssuerError(f"{dir}: cannot write keys: {exc}") from exc
    log.info("created issuer key folder %s (kid %d, alg %s)", dir, kid, alg)
    return IssuerInfo(dir=dir, kid=kid, alg=alg)


@dataclass
class TicketSigner:
    """An issuer key folder: signs tickets. Made by :func:`keys_issuer` (a sales channel's own
    folder, no root key) or by :func:`keys_init` (whose folder also holds root and list keys)."""

    dir: Path
    kid: int
    alg: keys.Alg
    events: list[str] | None
    issuer_key: keys.PrivateKey

    @classmethod
    def load(cls, dir: Path) -> TicketSigner:
        """Load issuer.json and issuer.key from ``dir``; raises IssuerError naming the file."""
        kid, alg, events = parse_info(dir / ISSUER_INFO)
        return cls(dir, kid, alg, events, _read_key(dir / ISSUER_KEY, alg))

    def ticket(
        self,
        *,
        event: int,
        zones: Iterable[int] | None = None,
        not_before: int | None = None,
        not_after: int | None = None,
        ticket_id: bytes | None = None,
        token_id: bytes | None = None,
        kid: int | None = None,
        key: keys.PrivateKey | None = None,
    ) -> str:
        """Issue one TK1 ticket text.

        ``zones`` lists zone numbers 1..16 (None = all 16, empty = none); times are Unix seconds
        (None = open); ids are random when None. ``kid`` and ``key`` override this issuer's, so
        tests can forge or mis-sign. Raises IssuerError when a value does not fit TK1 or the
        validity window ends before it starts.
        """
        if not_before and not_after and not_after < not_before:
            raise IssuerError(
                f"not_after {_utc(not_after)} is before not_before {_utc(not_before)}"
            )
        try:
            fields = tk1.TK1Fields(
                kid=self.kid if kid is None else kid,
                token_id=secrets.token_bytes(16) if token_id is None else token_id,
                ticket_id=secrets.token_bytes(8) if ticket_id is None else ticket_id,
                event_id=event,
                zones=ALL_ZONES if zones is None else zone_mask(zones),
                not_before=0 if not_before is None else not_before,
                not_after=0 if not_after is None else not_after,
            )
        except ValueError as exc:
            raise IssuerError(f"cannot issue ticket: {exc}") from exc
        if fields.kid == self.kid and self.events is not None and str(event) not in self.events:
            # Not refused: tests mint such tickets on purpose; a gate will deny it.
            log.warning("event %d is outside the events of issuer kid %d", event, self.kid)
        return tk1.sign(fields, self.issuer_key if key is None else key)

    def rotating_ticket(
        self,
        device_key: bytes,
        *,
        event: int,
        zones: Iterable[int] | None = None,
        not_before: int | None = None,
        not_after: int | None = None,
        ticket_id: bytes | None = None,
    ) -> str:
        """Issue one rotating ticket (TK2) bound to the holder device's P-256 public key
        (``device_key``: 33 bytes, SEC1 compressed): its static part, ``TK2S:`` text, which the
        holder's wallet turns into codes (:func:`agent.tickets.tk2.make_code`).

        Raises IssuerError when a value does not fit TK2 or the
        validity window ends before it starts.
        """
        if not_before and not_after and not_after < not_before:
            raise IssuerError(
                f"not_after {_utc(not_after)} is before not_before {_utc(not_before)}"
            )
        try:
            fields = tk2.TK2Fields(
                kid=self.kid,
                ticket_id=secrets.token_bytes(8) if ticket_id is None else ticket_id,
                event_id=event,
                zones=ALL_ZONES if zones is None else zone_mask(zones),
                not_before=0 if not_before is None else not_before,
                not_after=0 if not_after is None else not_after,
                device_key=device_key,
            )
        except ValueError as exc:
            raise IssuerError(f"cannot issue rotating ticket: {exc}") from exc
        return tk2.sign_static(fields, self.issuer_key)


@dataclass
class Issuer(TicketSigner):
    """A loaded `keys init` folder: tickets, and trust bundles signed by its root key."""

    root_key: keys.PrivateKey
    list_key: keys.PrivateKey
    root_pub_b64: str

    @classmethod
    def load(cls, dir: Path) -> Issuer:
        """Load a keys directory written by :func:`keys_init`.

        Raises IssuerError naming the file when one is missing, unreadable or inconsistent (an
        issuer key of another algorithm than issuer.json says, root.pub not matching root.key).
        """
        kid, alg, events = parse_info(dir / ISSUER_INFO)
        issuer_key = _read_key(dir / ISSUER_KEY, alg)
        root_key = _read_key(dir / ROOT_KEY, "ed25519")
        list_key = _read_key(dir / LIST_KEY, "ed25519")
        root_pub = keys.public_raw_b64(root_key)
        try:
            published = (dir / ROOT_PUB).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise IssuerError(f"{dir / ROOT_PUB}: cannot read: {exc}") from exc
        if published != root_pub:
            raise IssuerError(f"{dir / ROOT_PUB}: does not match {dir / ROOT_KEY}")
        return cls(dir, kid, alg, events, issuer_key, root_key, list_key, root_pub)

    def trust_entry(self) -> dict[str, Any]:
        """This issuer's entry for a trust bundle: active, TK1, its events, no validity limits."""
        return {
            "kid": str(self.kid),
            "alg": self.alg,
            "public_key": keys.public_raw_b64(self.issuer_key),
            "formats": ["tk1", "tk2"],
            "events": None if self.events is None else list(self.events),
            "valid_from": None,
            "valid_until": None,
            "status": "active",
        }

    def trust_bundle(
        self,
        *,
        version: int,
        issuers: list[dict[str, Any]] | None = None,
        list_signers: list[str] | None = None,
    ) -> bytes:
        """A trust bundle envelope signed by the root key.

        Defaults: ``issuers`` = [:meth:`trust_entry`], ``list_signers`` = [this list key]. The
        given entries are not validated, so tests can build malformed bundles. Raises IssuerError
        when ``version`` is not an int >= 1.
        """
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise IssuerError(f"trust bundle version must be an int >= 1, got {version!r}")
        content = {
            "version": version,
            "issued_at": int(time.time()),
            "issuers": [self.trust_entry()] if issuers is None else issuers,
            "list_signers": (
                [keys.public_raw_b64(self.list_key)] if list_signers is None else list_signers
            ),
        }
        return signed.sign_document("trust", content, self.root_key)


@dataclass(frozen=True)
class Exported:
    """One file :func:`export_hub` placed; ``written`` is False when an identical one was there."""

    path: Path
    written: bool
    mode: int


def export_hub(keys_dir: Path, dest: Path, *, force: bool = False) -> list[Exported]:
    """Copy what a hub needs from a keys dir into ``dest``: list.key (0600), trust.json, root.pub.

    The set is checked first: list.key an Ed25519 key, trust.json signed by root.pub with list.key
    among its list signers (what the hub checks at start). ``dest`` is created mode 0700 when
    missing. Raises IssuerError naming the file, before anything is written, when a source file
    is missing or inconsistent, ``dest`` holds another private key (root.key, issuer.key ...), or
    a file in ``dest`` differs and ``force`` is false; also when a write fails.
    """
    contents = _hub_set(keys_dir)
    foreign = extra_private_keys(dest)
    if foreign:
        raise IssuerError(
            f"{', '.join(map(str, foreign))}: a hub keys folder holds no private key but"
            f" {LIST_KEY}; export into a folder of its own"
        )
    unchanged = set()
    for name, data in contents.items():
        try:
            old = (dest / name).read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise IssuerError(f"{dest / name}: cannot read: {exc.strerror or exc}") from exc
        if old == data:
            unchanged.add(name)
        elif not force:
            raise IssuerError(f"{dest / name}: already there and different; --force replaces it")
    done = []
    try:
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, data in contents.items():
            mode = 0o600 if name == LIST_KEY else 0o644
            if name not in unchanged:
                write_atomic(dest / name, data, mode=mode)
            os.chmod(dest / name, mode)  # a replaced file keeps no wider mode than its kind
            done.append(Exported(dest / name, name not in unchanged, mode))
    except OSError as exc:
        raise IssuerError(f"{dest}: cannot write the hub's keys: {exc}") from exc
    log.info("exported the hub's keys from %s to %s", keys_dir, dest)
    return done


def _hub_set(keys_dir: Path) -> dict[str, bytes]:
    """The bytes of the hub's three files in ``keys_dir``, checked to belong together."""
    list_path, bundle_path, root_path = (keys_dir / name for name in HUB_FILES)
    list_key = _read_key(list_path, "ed25519")
    try:
        contents = {
            LIST_KEY: list_path.read_bytes(),
            TRUST_BUNDLE: trust.read_capped(bundle_path),
            ROOT_PUB: root_path.read_bytes(),
        }
    except OSError as exc:
        raise IssuerError(f"{exc.filename}: cannot read: {exc.strerror or exc}") from exc
    except AgentError as exc:
        raise IssuerError(str(exc)) from exc
    try:
        root = trust.load_root_key(str(root_path))
        bundle = trust.parse_bundle(contents[TRUST_BUNDLE], root)
    except AgentError as exc:
        raise IssuerError(f"{bundle_path}: {exc}") from exc
    if keys.public_raw_b64(list_key) not in (keys.public_raw_b64(k) for k in bundle.list_signers):
        raise IssuerError(
            f"{bundle_path}: {list_path} is not one of its list signers; gates would refuse"
            " every revocation list the hub signs"
        )
    return contents


def extra_private_keys(dir: Path, *, allowed: Iterable[Path] = ()) -> list[Path]:
    """Private keys in ``dir`` besides list.key and ``allowed`` (e.g. the hub's TLS key).

    root.key and issuer.key count by name; any other file by a PEM private-key block near its
    start. Subfolders and files that cannot be read are passed over; a missing ``dir`` has none.
    """
    skip = {LIST_KEY} | {p.name for p in allowed if p.parent.resolve() == dir.resolve()}
    try:
        entries = sorted(dir.iterdir())
    except OSError:
        return []
    found = []
    for path in entries:
        if path.name in skip:
            continue
        if path.name in MINTING_KEYS:
            found.append(path)
            continue
        try:
            if not path.is_file():
                continue
            with path.open("rb") as file:
                start = file.read(_SNIFF_BYTES)
        except OSError:
            continue
        if _PEM_PRIVATE in start:
            found.append(path)
    return found


def zone_mask(zones: Iterable[int]) -> int:
    """Zone numbers 1..16 as a TK1 bitmask (bit n-1 for zone n); IssuerError otherwise."""
    mask = 0
    for zone in zones:
        if not isinstance(zone, int) or isinstance(zone, bool) or not 1 <= zone <= 16:
            raise IssuerError(f"zone must be an int in 1..16, got {zone!r}")
        mask |= 1 << (zone - 1)
    return mask


def parse_iso(value: str) -> int:
    """ISO-8601 date or date-time to Unix seconds (floored); naive means UTC.

    Raises IssuerError when ``value`` is not ISO-8601.
    """
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise IssuerError(f"not an ISO-8601 date/time: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp())


def _utc(ts: int) -> str:
    """Unix seconds as a person reads them (in messages)."""
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def _check_u32(name: str, value: object, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= _U32:
        raise IssuerError(f"{name} must be an int in {minimum}..{_U32}, got {value!r}")


def _write_keys(dir: Path, alg: keys.Alg, info: dict[str, Any]) -> None:
    # Root and list keys sign documents, not tickets, so they are always Ed25519.
    root = keys.generate("ed25519")
    dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys.write_private(dir / ROOT_KEY, root)
    keys.write_private(dir / ISSUER_KEY, keys.generate(alg))
    keys.write_private(dir / LIST_KEY, keys.generate("ed25519"))
    write_atomic(dir / ROOT_PUB, (keys.public_raw_b64(root) + "\n").encode())
    write_atomic(dir / ISSUER_INFO, (json.dumps(info, indent=1) + "\n").encode())


def _is_decimal(value: object) -> TypeGuard[str]:
    # str.isdigit alone accepts non-ASCII digits such as "²" that int() refuses.
    return isinstance(value, str) and value.isascii() and value.isdigit()


def parse_info(path: Path) -> tuple[int, keys.Alg, list[str] | None]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IssuerError(f"{path}: cannot read issuer info: {exc}") from exc
    if not isinstance(info, dict):
        raise IssuerError(f"{path}: expected a JSON object")
    kid_text, alg, events = info.get("kid"), info.get("alg"), info.get("events")
    if not _is_decimal(kid_text) or not 1 <= int(kid_text) <= _U32:
        raise IssuerError(f"{path}: 'kid' must be a decimal string of a non-zero u32")
    if alg not in keys.ALGORITHMS:
        raise IssuerError(f"{path}: 'alg' must be one of {', '.join(keys.ALGORITHMS)}")
    if events is not None and not (
        isinstance(events, list) and all(_is_decimal(e) and int(e) <= _U32 for e in events)
    ):
        raise IssuerError(f"{path}: 'events' must be null or a list of decimal strings")
    return int(kid_text), alg, events


def _read_key(path: Path, alg: keys.Alg) -> keys.PrivateKey:
    key = keys.read_private(path)
    if keys.alg_of(key) != alg:
        raise IssuerError(f"{path}: expected a {alg} key, found {keys.alg_of(key)}")
    return key
