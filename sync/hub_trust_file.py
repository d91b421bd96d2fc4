"""The trust bundle the hub serves: its file (``[hub] trust_bundle``, or ``<keys>/trust.json``),
verified, re-read when it changes, and never older than what this hub served before.

The newest bundle served is kept in ``state_dir/trust.served.json``. A file older than it (a
backup of the keys folder restored, say) is not served: the hub goes on serving the copy, with an
ERROR line at start and a WARN line from `hub --check`, since gates that have the newer bundle
refuse the older, and a gate that never had it would trust again the keys it retired or marked
compromised. A copy that no longer verifies against ``root.pub`` (the venue was given a new root)
is set aside with a warning, and the file is served.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from agent import keys, trust
from agent.errors import AgentError, IssuerError, TrustError
from agent.fsutil import write_atomic
from agent.issuer import LIST_KEY, ROOT_PUB
from sync.hub_admin import load_list_key
from sync.hub_config import HubConfig

log = logging.getLogger("sync.hub_admin")  # the hub's administration log, as before the split

SERVED = "trust.served.json"


@dataclass(frozen=True)
class TrustDocument:
    """The trust bundle the hub serves, as bytes, with its ETag and the file's mtime."""

    data: bytes
    etag: str
    mtime_ns: int
    version: int


def read_trust(config: HubConfig) -> TrustDocument:
    """Read the trust bundle, verified against ``<keys>/root.pub`` when that file exists.

    Raises TrustError (unreadable, forged, or the list key is not among its list signers) and
    IssuerError (the list key).
    """
    path = config.trust_path
    try:
        mtime_ns = path.stat().st_mtime_ns
        data = trust.read_capped(path)
    except OSError as exc:
        raise TrustError(f"{path}: cannot read the trust bundle: {exc.strerror or exc}") from exc
    return _verified(config, path, data, mtime_ns)


def _verified(config: HubConfig, path: Path, data: bytes, mtime_ns: int) -> TrustDocument:
    version = 0
    root_pub = config.hub.keys / ROOT_PUB
    if root_pub.exists():
        bundle = trust.parse_bundle(data, trust.load_root_key(str(root_pub)))
        version = bundle.version
        list_pub = keys.public_raw_b64(load_list_key(config))
        if list_pub not in (keys.public_raw_b64(k) for k in bundle.list_signers):
            raise TrustError(
                f"{path}: the hub's list key {config.hub.keys / LIST_KEY} is not one of the"
                " bundle's list signers; gates would refuse every revocation list it signs"
            )
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    return TrustDocument(data, etag, mtime_ns, version)


class TrustFile:
    """The served trust bundle, re-read when its file changes; a bad new file keeps the old one,
    and so does an older one (a version below the one served, or the same with other contents).
    """

    def __init__(self, config: HubConfig, *, serving: bool = True) -> None:
        """Read the bundle; raises TrustError or IssuerError as :func:`read_trust` does.

        ``serving``: the hub itself (it keeps what it serves); `hub --check` only reads.
        :attr:`older_file` says when the file is older than the copy served before (then served).
        """
        self._config = config
        self._copy = config.hub.state_dir / SERVED
        self._serving = serving
        self.older_file: str | None = None
        self._statuses: tuple[str, dict[str, str]] | None = None  # (etag, status by kid)
        doc = read_trust(config)
        kept = self._kept()
        if kept is not None and kept.version > doc.version:
            self.older_file = (
                f"{config.trust_path}: trust bundle version {doc.version} is older than version"
                f" {kept.version}, which this hub served before: serving that one ({self._copy});"
                " put the newest bundle in its place (gate-agent keys export --hub)"
            )
            if serving:
                log.error("%s", self.older_file)
            doc = dataclasses.replace(kept, mtime_ns=doc.mtime_ns)  # re-read once it changes
        self._doc = doc
        self._keep(doc)

    def current(self) -> TrustDocument:
        try:
            changed = self._config.trust_path.stat().st_mtime_ns != self._doc.mtime_ns
        except OSError:
            changed = False
        if not changed:
            return self._doc
        try:
            new = read_trust(self._config)
        except AgentError as exc:
            log.error("new trust bundle refused, still serving the old one: %s", exc)
            self._doc = dataclasses.replace(self._doc, mtime_ns=self._mtime())
            return self._doc
        old = self._doc
        if new.version < old.version or (new.version == old.version and new.data != old.data):
            log.error(
                "new trust bundle refused, still serving version %d: %s %d; gates refuse it",
                old.version, "it is version" if new.version < old.version else "another version",
                new.version,
            )  # fmt: skip
            self._doc = dataclasses.replace(old, mtime_ns=new.mtime_ns)
            return self._doc
        self._doc = new
        log.info("trust bundle version %d now served", new.version)
        self._keep(new)
        return self._doc

    def issuer_status(self, kid: int) -> str | None:
        """Issuer ``kid``'s status in the bundle served now (None: not in it, or the bundle is
        not verified: no root.pub beside it)."""
        doc = self.current()
        root_pub = self._config.hub.keys / ROOT_PUB
        if doc.version <= 0 or not root_pub.exists():
            return None
        if self._statuses is None or self._statuses[0] != doc.etag:
            bundle = trust.parse_bundle(doc.data, trust.load_root_key(str(root_pub)))
            self._statuses = (doc.etag, {i.kid: str(i.status) for i in bundle.issuers})
        return self._statuses[1].get(str(kid))

    def _kept(self) -> TrustDocument | None:
        """The copy served before, verified as the file is; None when there is none or it no
        longer verifies (a new root: logged)."""
        try:
            data = trust.read_capped(self._copy)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("%s: cannot read the bundle served before: %s", self._copy, exc)
            return None
        try:
            return _verified(self._config, self._copy, data, 0)
        except (TrustError, IssuerError) as exc:
            log.warning("%s: the bundle served before is set aside: %s", self._copy, exc)
            return None

    def _keep(self, doc: TrustDocument) -> None:
        """Keep ``doc`` as the newest served (a hub only, verified bundles only); never fails."""
        if not self._serving or doc.version <= 0:
            return
        try:
            kept = self._kept()
            if kept is None or doc.version > kept.version:
                self._copy.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self._copy, doc.data, 0o644)
        except OSError as exc:
            log.warning("trust bundle version %d served but not kept: %s", doc.version, exc)

    def _mtime(self) -> int:
        try:
            return self._config.trust_path.stat().st_mtime_ns
        except OSError:
            return self._doc.mtime_ns
