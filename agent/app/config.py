"""Configuration: one TOML file, validated once at start-up into one typed, frozen object.

Unknown sections and keys are errors, as are wrong types and out-of-range values; every message names
the file, the section and the key, and says what was expected. Relative paths are taken relative to
the config file's folder. Drivers are given their URL strings, never this object.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from agent.app.config_lanes import (
    DevicesConfig,
    LaneConfig,
    LaneSpec,
    check_devices,
    parse_lanes,
    single_lane,
)
from agent.errors import ConfigError
from agent.fsutil import file_problem
from agent.settings import LogConfig, is_listen, parse_listen, section

__all__ = ["Config", "DevicesConfig", "LaneConfig", "LaneSpec", "load", "parse"]


@dataclass(frozen=True)
class GateConfig:
    id: str
    state_dir: Path
    # Required, as documented (found in a user trial: a config without it passed the check and
    # the gate refused every ticket as "wrong event").
    events: list[int]
    name: str = ""
    venue: str = "default"
    zone: int | None = None
    direction: Literal["entry", "exit"] = "entry"


@dataclass(frozen=True)
class PolicyConfig:
    entry: Literal["single", "reentry", "per_day", "unlimited"] = "single"
    entries_per_day: int = 1
    validity_skew_s: int = 300
    untrusted_clock: Literal["accept", "deny", "ignore_window"] = "accept"
    stale_list: Literal["admit", "deny"] = "admit"
    max_list_age_s: int = 86400
    timezone: str | None = None
    rotating_window_s: int = 30
    rotating_skew_s: int = 5


@dataclass(frozen=True)
class TrustConfig:
    root_key: str
    bundle: Path | None = None


@dataclass(frozen=True)
class RevocationConfig:
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class ClockConfig:
    assume: Literal["auto", "synced", "unsynced"] = "auto"


@dataclass(frozen=True)
class PretixConfig:
    """pretix as the upstream: keys, check-in list, revoked/blocked secrets, check-in upload."""

    url: str
    organizer: str
    event: str
    checkin_list: int
    # One-time device initialisation token (then stored 0600); kept out of the section's repr.
    init_token: str | None = field(default=None, repr=False)
    device_id: int | None = None
    interval_s: float = 30.0
    timeout_s: float = 10.0


@dataclass(frozen=True)
class HubLinkConfig:
    """The gate-agent hub as the upstream (:mod:`sync.client`); the venue is [gate] venue.

    After :func:`parse`, ``token`` holds the bearer token (read from ``token_file`` if that was
    given); it is never shown in a repr or an error message.
    """

    url: str
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    ca: Path | None = None  # CA bundle that verifies the hub's certificate (https only)
    cert: Path | None = None  # client certificate for mTLS, with ``key``
    key: Path | None = None
    heartbeat_s: float = 10.0
    wait_s: float = 25.0  # long-poll of the peer feed
    timeout_s: float = 10.0
    batch_size: int = 500
    revocation_interval_s: float = 60.0
    trust_interval_s: float = 300.0
    offline_after_s: float = 30.0
    retry_max_s: float = 60.0  # the longest wait between retries after a fault
    max_clock_ahead_s: float = 300.0  # a peer's HLC may not move ours further past the best time


@dataclass(frozen=True)
class StatusConfig:
    """The local status server (agent/app/status.py): health, metrics, status, staff display."""

    listen: str = "127.0.0.1:8471"  # "" turns it off
    outbox_backlog: int = 1000  # more unsynced rows than this: health degraded
    disk_free_min_mb: int = 200  # less free space for the state than this: health degraded
    max_streams: int = 16  # staff displays following /display/events at once; more get 503


@dataclass(frozen=True)
class DisplayConfig:
    """The staff display (/display, agent/app/status_display.py)."""

    clear_after_s: float = 5.0  # a verdict goes back to READY this long after its last change
    stale_after_s: float = 6.0  # no word from the gate this long: the page says OUT OF SERVICE
    sound: bool = False  # a tone per verdict (the kiosk browser must allow autoplay)


@dataclass(frozen=True)
class JournalConfig:
    """Retention (agent/app/retention.py): synced entries older than this many days are pruned once
    an hour by the running gate. 0 keeps everything (the default: nothing is dropped unasked)."""

    retain_synced_days: int = 0


@dataclass(frozen=True)
class Config:
    path: Path
    gate: GateConfig
    devices: DevicesConfig | None = None  # one lane; None when the file has [[lanes]]
    trust: TrustConfig | None = None  # optional with [pretix]: the event's keys come from pretix
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    lane: LaneConfig = field(default_factory=LaneConfig)
    revocation: RevocationConfig = field(default_factory=RevocationConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    log: LogConfig = field(default_factory=LogConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    pretix: PretixConfig | None = None
    hub: HubLinkConfig | None = None
    # The [[lanes]] tables (checked, with [lane] defaults applied); () for a one-lane file.
    lane_tables: tuple[LaneSpec, ...] = ()

    @property
    def lanes(self) -> tuple[LaneSpec, ...]:
        """Every lane of the unit, in file order (the first is the main lane): the [[lanes]]
        tables, or the one lane of [devices], [lane] and [gate] direction."""
        if self.lane_tables or self.devices is None:
            return self.lane_tables
        return single_lane(self.devices, self.lane, self.gate.direction)


# A name the hub and the journal carry: never empty, cut or with control characters.
_NAME: tuple[typing.Callable[[Any], bool], str] = (
    lambda v: 0 < len(v) <= 64 and v.isprintable(),
    "1-64 printable characters",
)


def _http_url(value: str) -> bool:
    """http(s)://host[:port][/prefix]: a host, a port of 1-65535 when it names one, and no
    query, fragment or user (what the hub client and the pretix adapter take)."""
    try:
        parts = urlsplit(value)
        port = parts.port  # ValueError: not a number, or past 65535
    except ValueError:
        return False
    plain = not (parts.query or parts.fragment or parts.username or parts.password)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0 and plain


# Range checks beyond the type: (section, key) -> (predicate, what is expected).
_RANGES: dict[tuple[str, str], tuple[typing.Callable[[Any], bool], str]] = {
    ("gate", "id"): _NAME,
    ("gate", "name"): _NAME,
    ("gate", "zone"): (lambda v: v is None or 1 <= v <= 16, "a zone number 1-16"),
    ("gate", "events"): (
        lambda v: len(v) > 0 and all(0 <= e < 2**32 for e in v),
        "a non-empty list of event numbers",
    ),
    ("policy", "entries_per_day"): (lambda v: v >= 1, "an integer >= 1"),
    ("policy", "validity_skew_s"): (lambda v: 0 <= v <= 86400, "0-86400 seconds"),
    ("policy", "max_list_age_s"): (lambda v: v >= 60, "at least 60 seconds"),
    ("policy", "rotating_window_s"): (lambda v: 5 <= v <= 3600, "5-3600 seconds"),
    ("policy", "rotating_skew_s"): (lambda v: 0 <= v <= 300, "0-300 seconds"),
    ("lane", "name"): _NAME,
    ("lane", "repeat_window_ms"): (lambda v: 0 <= v <= 600_000, "0-600000 ms"),
    ("lane", "passage_timeout_s"): (lambda v: 0.1 <= v <= 600, "0.1-600 seconds"),
    ("pretix", "url"): (lambda v: _http_url(v), "http(s)://host[:port][/prefix] (port 1-65535)"),
    ("pretix", "checkin_list"): (lambda v: v >= 1, "a check-in list id >= 1"),
    ("pretix", "interval_s"): (lambda v: 1 <= v <= 3600, "1-3600 seconds"),
    ("pretix", "timeout_s"): (lambda v: 0.5 <= v <= 120, "0.5-120 seconds"),
    ("status", "listen"): (  # port 0 would be a port `status` and the displays cannot find
        lambda v: v == "" or (is_listen(v) and parse_listen(v)[1] != 0),
        'HOST:PORT with a port of 1-65535 (e.g. "127.0.0.1:8471"), or "" for no status server',
    ),
    ("status", "outbox_backlog"): (lambda v: v >= 1, "an integer >= 1"),
    ("status", "disk_free_min_mb"): (lambda v: v >= 0, "an integer >= 0"),
    ("status", "max_streams"): (lambda v: 1 <= v <= 256, "1-256 streams"),
    ("display", "clear_after_s"): (lambda v: 1 <= v <= 600, "1-600 seconds"),
    ("display", "stale_after_s"): (lambda v: 3 <= v <= 120, "3-120 seconds"),
    ("journal", "retain_synced_days"): (lambda v: 0 <= v <= 3650, "0 (keep all) to 3650 days"),
    ("hub", "url"): (lambda v: _http_url(v), "http(s)://host[:port][/prefix] (port 1-65535)"),
    ("hub", "heartbeat_s"): (lambda v: 0.1 <= v <= 3600, "0.1-3600 seconds"),
    ("hub", "wait_s"): (lambda v: 0 <= v <= 30, "0-30 seconds"),
    ("hub", "timeout_s"): (lambda v: 0.5 <= v <= 120, "0.5-120 seconds"),
    ("hub", "batch_size"): (lambda v: 1 <= v <= 500, "1-500 entries"),
    ("hub", "revocation_interval_s"): (lambda v: 0.1 <= v <= 86400, "0.1-86400 seconds"),
    ("hub", "trust_interval_s"): (lambda v: 0.1 <= v <= 86400, "0.1-86400 seconds"),
    ("hub", "offline_after_s"): (lambda v: 0.5 <= v <= 3600, "0.5-3600 seconds"),
    ("hub", "retry_max_s"): (lambda v: 0.5 <= v <= 3600, "0.5-3600 seconds"),
    ("hub", "max_clock_ahead_s"): (lambda v: 5 <= v <= 86400, "5-86400 seconds"),
}
# Values never echoed in an error message.
_SECRETS = frozenset({("hub", "token"), ("pretix", "init_token")})


def _section_class(tp: Any) -> type[Any]:
    """The dataclass of a section, also for optional ones (``PretixConfig | None``)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp  # type: ignore[no-any-return]


def parse(text: str, src: Path) -> Config:
    """Validate TOML ``text`` read from ``src``; raises ConfigError naming section and key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{src}: not valid TOML: {exc}") from exc
    hints = typing.get_type_hints(Config)
    sections = {f.name for f in dataclasses.fields(Config)} - {"path", "lane_tables"} | {"lanes"}
    for name in raw:
        if name not in sections:
            raise ConfigError(
                f"{src}: unknown section [{name}] (valid sections: {', '.join(sorted(sections))})"
            )
    values = {
        name: section(_section_class(hints[name]), raw[name], name, src, _RANGES, _SECRETS)
        for name in raw
        if name != "lanes"
    }
    if "gate" not in raw:
        raise ConfigError(f"{src}: missing required section [gate]")
    if "devices" not in raw and "lanes" not in raw:
        raise ConfigError(
            f"{src}: missing required section [devices] (or [[lanes]] tables, one per lane)"
        )
    config = Config(path=src, **values)
    _check_state_dir(config.gate.state_dir, src)
    _check_trust(config, src)
    if not config.gate.name:
        config = dataclasses.replace(
            config, gate=dataclasses.replace(config.gate, name=config.gate.id)
        )
    _check_timezone(config, src)
    if "lanes" in raw:
        config = dataclasses.replace(config, lane_tables=parse_lanes(raw, config.lane, src))
    else:
        assert config.devices is not None
        check_devices(config.devices, src)
    if config.hub is not None:
        config = dataclasses.replace(config, hub=_check_hub(config, config.hub, src))
    return config


def _check_state_dir(state_dir: Path, src: Path) -> None:
    """A state_dir that can never be made (it, or a folder on its way, is a file) is a config
    error; one not made yet, or under a mount not there yet, is the gate's to make at start."""
    for path in (state_dir, *state_dir.parents):
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):  # not there (yet), or under a file
            continue
        except OSError:  # may not be looked into by this user (checked by run, as the gate's)
            return
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(
                f"{src}: [gate] state_dir: {state_dir}: {path} is a file, not a folder"
            )
        return


def _check_trust(config: Config, src: Path) -> None:
    """[trust] is what verifies tickets and signed lists; only a pretix gate may go without."""
    if config.trust is not None:
        return
    if config.pretix is None:
        raise ConfigError(
            f"{src}: missing required section [trust] (a gate without [pretix] verifies its"
            " tickets with the root key and trust bundle named there)"
        )
    if config.revocation.files:
        raise ConfigError(
            f"{src}: [revocation] files: signed lists need [trust] (its root key verifies them)"
        )


def _check_timezone(config: Config, src: Path) -> None:
    if config.policy.timezone is None:
        return
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(config.policy.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{src}: [policy] timezone: unknown time zone {config.policy.timezone!r}"
        ) from None


def _check_hub(config: Config, hub: HubLinkConfig, src: Path) -> HubLinkConfig:
    """Cross-checks of [hub]; returns it with ``token`` read from ``token_file``."""
    from sync.protocol import is_id

    if config.pretix is not None:
        raise ConfigError(f"{src}: [hub] and [pretix] are both set; a gate has one upstream")
    for name, value in (("id", config.gate.id), ("venue", config.gate.venue)):
        if not is_id(value):
            raise ConfigError(
                f"{src}: [gate] {name}: the hub needs 1-64 letters, digits or ._:- "
                f"(starting with a letter or digit), got {value!r}"
            )
    parts = urlsplit(hub.url)
    if parts.query or parts.fragment or parts.username:
        raise ConfigError(f"{src}: [hub] url: expected http(s)://host[:port][/prefix] only")
    if parts.scheme != "https" and (hub.ca or hub.cert or hub.key):
        raise ConfigError(f"{src}: [hub] ca, cert and key need an https:// url")
    if (hub.cert is None) != (hub.key is None):
        raise ConfigError(f"{src}: [hub] cert and key: give both (mTLS) or neither")
    for name in ("ca", "cert", "key"):
        path = getattr(hub, name)
        why = None if path is None else file_problem(path)
        if why is not None:
            raise ConfigError(f"{src}: [hub] {name}: {path}: {why}")
    if (hub.token is None) == (hub.token_file is None):
        raise ConfigError(f"{src}: [hub] give exactly one of token and token_file")
    token = hub.token if hub.token is not None else _read_token(hub.token_file, src)
    if not (0 < len(token) <= 512 and token.isascii() and token.isprintable()) or " " in token:
        raise ConfigError(f"{src}: [hub] token: expected 1-512 printable ASCII characters")
    if hub.offline_after_s <= hub.heartbeat_s:
        raise ConfigError(
            f"{src}: [hub] offline_after_s: expected more than heartbeat_s "
            f"({hub.heartbeat_s:g}), got {hub.offline_after_s:g}"
        )
    return dataclasses.replace(hub, token=token)


def _read_token(path: Path | None, src: Path) -> str:
    assert path is not None
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(4096)
    except OSError as exc:
        raise ConfigError(f"{src}: [hub] token_file: {path}: {exc.strerror or exc}") from exc
    if mode & 0o077:
        raise ConfigError(
            f"{src}: [hub] token_file: {path} is readable by group or others "
            f"(mode {mode & 0o777:o}): chmod 600 {path}"
        )
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{src}: [hub] token_file: {path}: not an ASCII token") from None


def exposed_token(config: Config) -> str | None:
    """Why the hub token written in the config file itself is exposed: the file is readable by
    group or others (a token_file so would be refused; a security trial found the same token
    inline in a file of mode 0644 passed); None when it is not."""
    if config.hub is None or config.hub.token_file is not None:
        return None
    try:
        mode = config.path.stat().st_mode & 0o777
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (
        f"[hub] token: written in this file, which group or others can read (mode {mode:o}):"
        f" chmod 600 {config.path}, or put the token in a token_file of mode 0600"
    )


def load(path: Path) -> Config:
    """Read and validate the config file at ``path``; raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    return parse(text, path.resolve())
