"""The hub's configuration: one TOML file, validated once at start-up like the gate's.

Sections (unknown sections and keys are errors naming the file, section and key)::

    [hub]  venue, listen = "127.0.0.1:8470", state_dir, store (default sqlite:///<state_dir>/hub.db),
           keys (a `gate-agent keys export --hub` dir: list.key, trust.json, root.pub and no other
           private key), trust_bundle (default <keys>/trust.json),
           entry_policy, exit_gates (the gates that may record exits; unset: every gate),
           denied_alert_threshold, denied_alert_window_s, gate_offline_after_s,
           max_wait_s, list_validity_s,
           list_refresh_s, max_clock_ahead_s, alert_budget, alert_budget_window_s,
           upload_rows_per_s, upload_burst (one gate's sustained rate of new rows and the most
           it stores at once; more: 429, see :class:`sync.hub_store.UploadQuota`),
           max_connections, max_connections_per_client (open connections per process and per
           client address; over either: 503), header_timeout_s (a request head must arrive within
           it of connecting or of the previous answer), body_timeout_s (a body within it),
           metrics_auth ("token": /metrics needs a console token; "open": no token)
    [tls]  cert, key, client_ca (optional: then gates must present a client certificate)
    [webhook]  url (http:// or https://; each new alert is POSTed to it as JSON, see
           :mod:`sync.hub_webhook`), timeout_s, queue_size, max_tries
    [wallet]  issuer_keys (a `gate-agent keys issuer` or `keys init` folder: POST /v1/wallet/tickets
           signs rotating tickets with it; absent: no issuing), max_per_minute (per token)
    [log]  level

Relative paths are taken relative to the config file's folder, also in a ``sqlite://`` store URL.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.errors import ConfigError, IssuerError
from agent.fsutil import file_problem, open_to_others
from agent.issuer import TicketSigner, extra_private_keys
from agent.settings import LogConfig, parse_listen, section
from sync.hub_store import HubPolicy
from sync.protocol import MAX_WAIT_S, is_id

DEFAULT_PORT = 8470
_X = TypeVar("_X", bound=x509.ExtensionType)
STORE_SCHEMES = ("sqlite://", "postgresql://", "postgres://")


@dataclass(frozen=True)
class HubSection:
    venue: str
    state_dir: Path
    keys: Path
    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    # Empty: sqlite:///<state_dir>/hub.db. A PostgreSQL URL may hold a password: not in a repr.
    store: str = field(default="", repr=False)
    trust_bundle: Path | None = None
    entry_policy: Literal["single", "reentry", "unlimited"] = "single"
    exit_gates: list[str] | None = None  # None: every gate may record exits
    denied_alert_threshold: int = 3
    denied_alert_window_s: float = 600.0
    gate_offline_after_s: float = 30.0
    max_wait_s: float = 25.0
    list_validity_s: int = 7 * 86400
    list_refresh_s: int = 3600
    max_clock_ahead_s: float = 300.0
    alert_budget: int = 50
    alert_budget_window_s: float = 60.0
    upload_rows_per_s: float = 20.0
    upload_burst: int = 5000
    max_connections: int = 1000
    max_connections_per_client: int = 128
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    metrics_auth: Literal["token", "open"] = "token"


@dataclass(frozen=True)
class TlsSection:
    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class WebhookSection:
    # May hold a secret: never logged or repeated in an error (sync.hub_webhook), nor in a repr.
    url: str = field(repr=False)
    timeout_s: float = 10.0
    queue_size: int = 1000
    max_tries: int = 8


@dataclass(frozen=True)
class WalletSection:
    issuer_keys: Path
    max_per_minute: int = 30


@dataclass(frozen=True)
class HubConfig:
    """The validated hub config; ``host``/``port`` come from ``[hub] listen``."""

    path: Path
    hub: HubSection
    host: str
    port: int
    tls: TlsSection | None = None
    log: LogConfig = field(default_factory=LogConfig)
    webhook: WebhookSection | None = None
    wallet: WalletSection | None = None

    @property
    def store_url(self) -> str:
        return self.hub.store

    @property
    def trust_path(self) -> Path:
        return self.hub.trust_bundle or self.hub.keys / "trust.json"

    @property
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"

    def warnings(self) -> list[str]:
        """What the config allows that a stolen gate could use (``hub --check`` WARN lines, the
        log at start): reentry with every gate allowed to record exits."""
        if self.hub.entry_policy == "reentry" and self.hub.exit_gates is None:
            return [
                f"{self.path}: [hub] entry_policy is reentry and exit_gates is unset: every gate"
                " may record exits, so a copy of an entry gate's token can let any ticket in"
                ' again (list the exit gates: exit_gates = ["north-exit-1", ...])'
            ]
        return []

    def policy(self) -> HubPolicy:
        """The alert rules the store applies."""
        h = self.hub
        return HubPolicy(
            venue=h.venue,
            entry_policy=h.entry_policy,
            exit_gates=None if h.exit_gates is None else frozenset(h.exit_gates),
            denied_alert_threshold=h.denied_alert_threshold,
            denied_alert_window_s=h.denied_alert_window_s,
            gate_offline_after_s=h.gate_offline_after_s,
            max_clock_ahead_s=h.max_clock_ahead_s,
            alert_budget=h.alert_budget,
            alert_budget_window_s=h.alert_budget_window_s,
            upload_rows_per_s=h.upload_rows_per_s,
            upload_burst=h.upload_burst,
        )


_Check = tuple[Callable[[Any], bool], str]
_HUB_RANGES: dict[str, _Check] = {
    "venue": (is_id, "an id of 1-64 letters, digits or ._:-"),
    "store": (lambda v: v == "" or v.startswith(STORE_SCHEMES), "sqlite:///PATH or postgresql://"),
    "denied_alert_threshold": (lambda v: 2 <= v <= 1000, "an integer 2-1000"),
    "denied_alert_window_s": (lambda v: 1 <= v <= 7 * 86400, "1-604800 seconds"),
    "gate_offline_after_s": (lambda v: 1 <= v <= 86400, "1-86400 seconds"),
    "max_wait_s": (lambda v: 0 <= v <= MAX_WAIT_S, f"0-{MAX_WAIT_S:g} seconds"),
    "list_validity_s": (lambda v: 60 <= v <= 366 * 86400, "60 seconds to 366 days"),
    "list_refresh_s": (lambda v: 10 <= v <= 86400, "10-86400 seconds"),
    "max_clock_ahead_s": (lambda v: 5 <= v <= 86400, "5-86400 seconds"),
    "alert_budget": (lambda v: 1 <= v <= 100_000, "an integer 1-100000"),
    "alert_budget_window_s": (lambda v: 1 <= v <= 86400, "1-86400 seconds"),
    "upload_rows_per_s": (lambda v: 1 <= v <= 1_000_000, "1-1000000 rows a second"),
    # A batch holds up to 500 rows: a smaller burst could refuse a full batch for good.
    "upload_burst": (lambda v: 500 <= v <= 100_000_000, "an integer 500-100000000"),
    "max_connections": (lambda v: 1 <= v <= 1_000_000, "an integer 1-1000000"),
    "max_connections_per_client": (lambda v: 1 <= v <= 1_000_000, "an integer 1-1000000"),
    "header_timeout_s": (lambda v: 1 <= v <= 300, "1-300 seconds"),
    "body_timeout_s": (lambda v: 1 <= v <= 600, "1-600 seconds"),
}


def _store_shown(value: str) -> str:
    """A store setting as an error may show it: a URL's scheme at most (it may hold a password,
    and so may a key=value connection string)."""
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]{0,20}(?=:)", value)
    return f"a URL of scheme {scheme.group()!r}" if scheme else "no URL (not shown)"


def _check_hub(hub: HubSection, src: Path) -> HubSection:
    for key, (ok, expected) in _HUB_RANGES.items():
        value = getattr(hub, key)
        if not ok(value):
            got = _store_shown(value) if key == "store" else repr(value)
            raise ConfigError(f"{src}: [hub] {key}: expected {expected}, got {got}")
    for gate_id in hub.exit_gates or ():
        if not is_id(gate_id):
            raise ConfigError(f"{src}: [hub] exit_gates: {gate_id!r} is not a gate id")
    if hub.max_connections_per_client > hub.max_connections:
        raise ConfigError(
            f"{src}: [hub] max_connections_per_client: expected at most max_connections"
            f" ({hub.max_connections}), got {hub.max_connections_per_client}"
        )
    store = hub.store or f"sqlite://{hub.state_dir / 'hub.db'}"
    if store.startswith("sqlite://"):
        path = Path(store.removeprefix("sqlite://"))
        if not str(path) or str(path) == ".":
            raise ConfigError(f"{src}: [hub] store: expected sqlite:///PATH, got {store!r}")
        store = f"sqlite://{src.parent / path}"
    return dataclasses.replace(hub, store=store)


def parse(text: str, src: Path) -> HubConfig:
    """Validate TOML ``text`` read from ``src``; raises ConfigError naming section and key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{src}: not valid TOML: {exc}") from exc
    classes: dict[str, type[Any]] = {
        "hub": HubSection, "tls": TlsSection, "log": LogConfig, "webhook": WebhookSection,
        "wallet": WalletSection,
    }  # fmt: skip
    for name in raw:
        if name not in classes:
            raise ConfigError(
                f"{src}: unknown section [{name}] (valid sections: {', '.join(classes)})"
            )
    if "hub" not in raw:
        raise ConfigError(f"{src}: missing required section [hub]")
    # The hub's range checks are in _check_hub; none of the gate's apply here.
    secrets = {("webhook", "url")}  # a webhook URL may carry a token: never echoed
    values = {
        name: section(classes[name], raw[name], name, src, ranges={}, secrets=secrets)
        for name in raw
    }
    hub = _check_hub(values.pop("hub"), src)
    if "webhook" in values:
        _check_webhook(values["webhook"], src)
    wallet = values.get("wallet")
    if wallet is not None and not 1 <= wallet.max_per_minute <= 10_000:
        raise ConfigError(
            f"{src}: [wallet] max_per_minute: expected an integer 1-10000,"
            f" got {wallet.max_per_minute!r}"
        )
    try:
        host, port = parse_listen(hub.listen)
    except ValueError:
        raise ConfigError(
            f"{src}: [hub] listen: expected HOST:PORT (port 0-65535), got {hub.listen!r}"
        ) from None
    return HubConfig(path=src, hub=hub, host=host, port=port, **values)


def _check_webhook(hook: WebhookSection, src: Path) -> None:
    """Range checks of [webhook]; the URL is never repeated (it may hold a secret)."""
    try:
        parts = urlsplit(hook.url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{src}: [webhook] url: expected an http:// or https:// URL with a host")
    checks: dict[str, _Check] = {
        "timeout_s": (lambda v: 0.1 <= v <= 300, "0.1-300 seconds"),
        "queue_size": (lambda v: 1 <= v <= 1_000_000, "an integer 1-1000000"),
        "max_tries": (lambda v: 1 <= v <= 100, "an integer 1-100"),
    }
    for key, (ok, expected) in checks.items():
        value = getattr(hook, key)
        if not ok(value):
            raise ConfigError(f"{src}: [webhook] {key}: expected {expected}, got {value!r}")


def ssl_context(config: HubConfig) -> ssl.SSLContext | None:
    """The server's TLS context (None without [tls]); with ``client_ca`` it asks for and checks
    client certificates. Raises ConfigError when a certificate or key cannot be loaded.

    OpenSSL verifies a client certificate's chain (strict X.509 checks) and its purpose (an
    extended key usage without clientAuth fails the handshake); that the certificate is a gate's
    own (one CN, clientAuth present, no serverAuth, no CA) is checked per request by
    :func:`client_cert_gate`, as a certificate without the extension passes OpenSSL.
    """
    tls = config.tls
    if tls is None:
        return None
    src = config.path
    for key in ("cert", "key", "client_ca"):
        path = getattr(tls, key)
        why = None if path is None else file_problem(path)
        if why is not None:
            raise ConfigError(f"{src}: [tls] {key}: {path}: {why}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
            why = f"[tls] key {tls.key} does not belong to [tls] cert {tls.cert}"
        else:
            why = (
                f"[tls] cert and key: {tls.cert} and {tls.key} do not load as a PEM certificate"
                f" (chain) and its private key: {_reason(exc)}"
            )
        raise ConfigError(f"{src}: {why}") from exc
    if (open_key := open_to_others(tls.key)) is not None:  # found in a user trial: taken at 0644
        raise ConfigError(f"{src}: [tls] key: {tls.key}: a private key {open_key}")
    if tls.client_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        try:
            ctx.load_verify_locations(tls.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{src}: [tls] client_ca: {tls.client_ca} does not load as PEM CA"
                f" certificates: {_reason(exc)}"
            ) from exc
    return ctx


def _reason(exc: OSError | ssl.SSLError) -> str:
    """OpenSSL's short reason ("PEM lib", "KEY_VALUES_MISMATCH") or the OS error's text."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror or str(exc)


def client_cert_gate(der: bytes | None) -> tuple[str | None, str]:
    """The gate id a verified client certificate (DER) speaks for, or None and why not.

    Only a certificate made for a client counts: exactly one subject CN (the gate id), an
    extended key usage extension that names clientAuth and not serverAuth (a certificate without
    one is good for any purpose, a server's included), and no CA basic constraint.
    """
    if not der:
        return None, "no client certificate"
    try:
        cert = x509.load_der_x509_certificate(der)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        usage = _extension(cert, x509.ExtendedKeyUsage)
        basic = _extension(cert, x509.BasicConstraints)
    except ValueError:
        return None, "unreadable client certificate"
    if len(cns) != 1:
        return None, f"client certificate with {len(cns)} subject CNs"
    if usage is None or ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        return None, "client certificate without the clientAuth extended key usage"
    if ExtendedKeyUsageOID.SERVER_AUTH in usage or (basic is not None and basic.ca):
        return None, "a server or CA certificate used as a client certificate"
    return str(cns[0].value), "ok"


def _extension(cert: x509.Certificate, kind: type[_X]) -> _X | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def load(path: Path) -> HubConfig:
    """Read and validate the hub config file at ``path``; raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    config = parse(text, path.resolve())
    check_keys_folder(config)
    check_wallet_keys(config)
    return config


def check_wallet_keys(config: HubConfig) -> None:
    """``[wallet] issuer_keys`` must be an issuer key folder the hub can sign with (ConfigError)."""
    if config.wallet is None:
        return
    try:
        TicketSigner.load(config.wallet.issuer_keys)
    except IssuerError as exc:
        raise ConfigError(f"{config.path}: [wallet] issuer_keys: {exc}") from None


def check_keys_folder(config: HubConfig) -> None:
    """Refuse a keys folder holding a private key besides list.key (root.key, issuer.key ...).

    Those keys mint trust bundles and tickets; a stolen hub must not carry them. The [tls] key
    (or a cert file that holds it) may sit there. Raises ConfigError naming the file and the
    command that makes a hub's folder.
    """
    allowed = () if config.tls is None else (config.tls.cert, config.tls.key)
    found = extra_private_keys(config.hub.keys, allowed=allowed)
    if found:
        raise ConfigError(
            f"{config.path}: [hub] keys: {', '.join(map(str, found))} must not be on the hub"
            " (it needs list.key, trust.json and root.pub only); give it a folder of its own"
            " made by `gate-agent keys export --hub DIR --keys KEYSDIR`"
        )
