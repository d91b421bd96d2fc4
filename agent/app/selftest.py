"""`gate-agent selftest --config FILE`: open each configured device and say what a person must fix.

For integrators at the turnstile: one line per device, OK or FAIL, and for a failure the likely fix
(missing group, wrong path, device busy, ModemManager grabbing the port). ``--relay`` pulses the
relay once; ``--scan`` waits for one scan and shows what was read and the verdict it would get.
``--hub`` checks the [hub] link instead (:mod:`agent.app.selftest_hub`).
Exit status: 0 all OK, 1 a check failed, 78 config error (raised as ConfigError).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from agent import keys, rules
from agent.app import config as cfg
from agent.errors import AgentError, ConfigError, DriverError, StateInUse
from agent.fsutil import sqlite_readonly, state_lock
from agent.redact import text_digest
from drivers import registry
from drivers.gpio_lines import parse_chip
from drivers.url_params import UrlParams

# The group that usually owns each kind of device node on Debian / Raspberry Pi OS.
_GROUPS = {
    "serial": "dialout",
    "lcus": "dialout",
    "gpio": "gpio",
    "camera": "video",
    "hid": "input",
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False  # not run: shown as SKIP; ``ok`` says whether that is fine


def device_path(url: str) -> Path | None:
    """The device node a driver URL refers to, read as its driver reads it (percent-decoded; a
    GPIO chip by name or path); None for a URL naming none (``sim://``, a camera's file source)
    or one its driver refuses (the driver's own error says why)."""
    try:
        p = UrlParams(url, "serial", "lcus", "hid", "camera", "gpio")
        if p.scheme == "gpio":
            return Path(parse_chip(p.netloc, p.path, url))
        return Path(p.device_path(""))
    except DriverError:
        return None


def modemmanager_running() -> bool:
    """True when ModemManager is active (it probes new serial ports and garbles scanners)."""
    try:
        out = subprocess.run(
            ["systemctl", "is-active", "ModemManager"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.strip() == "active"


def diagnose_path(path: Path, scheme: str) -> str:
    """The most likely fix for a device node that cannot be used, or "" when it looks usable."""
    if not path.exists():
        hint = " (is it plugged in? does the udev rule create this name?)"
        return f"{path} does not exist{hint}"
    mode = os.R_OK | (os.W_OK if scheme != "camera" else 0)
    if not os.access(path, mode):
        st = path.stat()
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = _GROUPS.get(scheme, str(st.st_gid))
        return (
            f"no permission on {path} (group {group}): "
            f"sudo usermod -aG {group} $USER, then log in again"
        )
    if (
        scheme in ("serial", "lcus")
        and stat.S_ISCHR(path.stat().st_mode)
        and modemmanager_running()
    ):
        return (
            "ModemManager is running and may grab the port: install the udev rule with "
            "ID_MM_DEVICE_IGNORE=1 or `sudo systemctl disable --now ModemManager`"
        )
    return ""


async def _try_open(kind: registry.Kind, url: str, base: Path) -> tuple[Check, Any]:
    scheme = urlsplit(url).scheme
    try:
        driver = registry.create(kind, url, base)
        await driver.open()
    except Exception as exc:  # whatever a device does, report it and check the next one
        path = device_path(url)
        fix = diagnose_path(path, scheme) if path is not None else ""
        if not fix and isinstance(exc, OSError) and exc.errno == 16:
            fix = "device busy: another program holds it (is gate-agent already running?)"
        return Check(kind, False, f"{url}: {exc}", fix or "check the URL in [devices]"), None
    # Drivers that reconnect in the background (serial, hid) open "successfully" without their
    # device: give them a moment, then report what they saw.
    for _ in range(20):
        if getattr(driver, "connected", True):
            return Check(kind, True, url), driver
        await asyncio.sleep(0.05)
    path = device_path(url)
    fix = diagnose_path(path, scheme) if path is not None else ""
    detail = getattr(driver, "last_error", None) or "device not connected"
    await driver.close()
    return Check(kind, False, f"{url}: {detail}", fix or "check the device and the URL"), None


def report(checks: list[Check], out: TextIO) -> int:
    """Print one OK/FAIL/SKIP line per check (and its fix); returns the exit status."""
    width = max([9, *(len(c.name) for c in checks)])  # lane names widen the column
    for c in checks:
        mark = "SKIP" if c.skipped else "OK  " if c.ok else "FAIL"
        print(f"{mark} {c.name:<{width}} {c.detail}", file=out)
        if c.fix:
            print(f"     fix: {c.fix}", file=out)
    return 0 if all(c.ok for c in checks) else 1


async def run(
    path: Path, *, relay: bool, scan: bool, out: TextIO, scan_timeout_s: float = 30.0
) -> int:
    """Check every configured device, lane by lane; returns the exit status. Raises ConfigError.

    With several lanes each line names its lane (``in/scanner``); a gate or indicator URL that
    several lanes share is opened once, and ``--relay`` pulses it once per lane, in each lane's
    direction; ``--scan`` waits for one scan at each lane in turn.
    """
    conf = cfg.load(path)
    with _devices_free(conf):
        return await _run(conf, relay=relay, scan=scan, out=out, scan_timeout_s=scan_timeout_s)


@contextlib.contextmanager
def _devices_free(conf: cfg.Config) -> Iterator[None]:
    """Hold the gate's state folder while devices are opened: a running gate's devices are not
    taken from under it (a socket scanner would be made anew). Raises StateInUse."""
    try:
        with state_lock(conf.gate.state_dir, create=False):
            yield
    except StateInUse as exc:
        raise StateInUse(
            f"the gate is running ({exc}); its devices are in use: stop it first"
            " (sudo systemctl stop gate-agent), or check the config alone with --config-only"
        ) from None


async def _run(
    conf: cfg.Config, *, relay: bool, scan: bool, out: TextIO, scan_timeout_s: float
) -> int:
    base = conf.path.parent
    several = len(conf.lanes) > 1
    opened: dict[tuple[registry.Kind, str], Any] = {}
    failed: set[tuple[registry.Kind, str]] = set()
    checks: list[Check] = []
    try:
        for spec in conf.lanes:
            prefix = f"{spec.name}/" if several else ""
            devices: list[tuple[registry.Kind, str | None]] = [
                ("scanner", spec.devices.scanner),
                ("gate", spec.devices.gate),
                ("indicator", spec.devices.indicator),
            ]
            for kind, url in devices:
                if url is None:
                    continue
                if (kind, url) in opened or (kind, url) in failed:  # shared with an earlier lane
                    ok = (kind, url) in opened
                    checks.append(Check(prefix + kind, ok, f"{url} (shared, see above)"))
                    continue
                check, driver = await _try_open(kind, url, base)
                checks.append(replace(check, name=prefix + check.name))
                if driver is not None:
                    opened[kind, url] = driver
                else:
                    failed.add((kind, url))
            gate = opened.get(("gate", spec.devices.gate))
            if relay and gate is not None:
                check = await _pulse(gate, spec.direction)
                checks.append(replace(check, name=prefix + check.name))
            scanner = opened.get(("scanner", spec.devices.scanner))
            if scan and scanner is not None:
                check = await _scan(conf, scanner, spec.devices.scanner or "", scan_timeout_s)
                checks.append(replace(check, name=prefix + check.name))
    finally:
        for driver in opened.values():
            await driver.close()
    return report(checks, out)


async def _pulse(gate: Any, direction: str) -> Check:
    try:
        await gate.grant(direction, "selftest")
        # A hold-mode relay stays on until passage or timeout: give a person time to try it.
        passed = await gate.wait_passage(5.0)
    except AgentError as exc:
        return Check("relay", False, f"pulse failed: {exc}", "check the relay wiring and URL")
    seen = "passage seen" if passed else "no passage signal in 5 s"
    return Check("relay", True, f"one {direction} release sent ({seen}): did the turnstile unlock?")


# What to check when --scan read nothing, and when the driver refused what it read, by the
# scanner URL's scheme (found in a user trial: a camera was told of baud rates and terminators).
_CAMERA_NOTHING = (
    "present a ticket 15-30 cm from the camera in good light; check its focus and the URL's"
    " roi, downscale and formats (gate-agent check --image on a photo taken with it)"
)
_ADVICE = {
    "camera": (_CAMERA_NOTHING, "the camera read a code longer than any ticket: not a ticket"),
    "file": (
        "check the files hold a ticket's code (gate-agent check --image FILE) and the URL's"
        " roi, downscale and formats",
        "the file holds a code longer than any ticket: not a ticket",
    ),
}
_ADVICE["hid"] = (
    "present a ticket; check the scanner is in USB keyboard (HID) mode and ends each code with"
    " Enter, and the URL's /dev/input/by-id/ path",
    "check the scanner's keyboard layout (US) and the URL's max_frame",
)
_SERIAL_ADVICE = (
    "present a ticket; check the scanner's interface mode and terminator",
    "check the scanner URL's aim, require_aim and max_frame, and the scanner's baud rate",
)


async def _scan(conf: cfg.Config, scanner: Any, url: str, timeout_s: float) -> Check:
    from agent.app.check import CheckRequest, evaluate

    nothing, refused = _ADVICE.get(url.partition(":")[0], _SERIAL_ADVICE)
    try:
        async with asyncio.timeout(timeout_s):
            first = await anext(aiter(scanner.scans()))
    except TimeoutError:
        return Check("scan", False, f"nothing read in {timeout_s:.0f} s", nothing)
    except StopAsyncIteration:  # a file played out, say: not a wait of timeout_s
        return Check("scan", False, "the scanner's stream ended with nothing read", nothing)
    if first.refused is not None:  # read, but the driver's settings refuse it
        return Check("scan", False, f"read {first.refused}", refused)
    # The verdict this gate would give: its trust, installed lists and journal, nothing written.
    req = CheckRequest(
        text=first.text,
        image=None,
        config=conf.path,
        keys=None,
        revocations=(),
        zone=None,
        at=None,
        as_json=False,
    )
    ev = await evaluate(req, first.text)
    what = (
        f"{ev.ticket.fmt} ticket {ev.ticket.short_id}"
        if ev.ticket is not None
        else f"{len(first.text)} characters ({text_digest(first.text)})"
    )
    sym = f", symbology {first.symbology}" if first.symbology else ""
    d = ev.decision
    verdict = f"{d.verdict} ({d.reason}): {rules.staff_message(d)}"
    return Check("scan", True, f"read {what}{sym}; would {verdict}")


def _lanes(conf: cfg.Config) -> str:
    """``lane in (entry)``, or ``2 lanes: in (entry), out (exit)``."""
    names = ", ".join(f"{spec.name} ({spec.direction})" for spec in conf.lanes)
    return f"lane {names}" if len(conf.lanes) == 1 else f"{len(conf.lanes)} lanes: {names}"


# gate-agent.service's StateDirectory=: systemd creates it at the unit's start and gives it to
# the gate's user, so that it need not be there, nor be the user's, before.
UNIT_STATE_DIR = Path("/var/lib/gate-agent")


def state_dir_problem(state: Path) -> str | None:
    """Why this process could not keep the gate's state in ``state``, or None: a folder there
    must take a new file, else the nearest folder above it a new folder (tried for real, then
    removed: a read-only mount, an immutable folder or an ACL count too)."""
    if state == UNIT_STATE_DIR:
        return None
    target, verb = state, "cannot write in it"
    while not target.exists():
        if target.parent == target:
            break
        target, verb = target.parent, f"cannot create it in {target.parent}"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".gate-agent-check-", dir=target))
    except OSError as exc:
        return f"{verb} ({exc.strerror or exc})"
    return None


def _plain_http(url: str) -> str | None:
    """Why a plain http:// hub off this machine is a risk (found in a user trial: it passed the
    check silently), or None."""
    from agent.app.status import is_loopback

    parts = urlsplit(url)
    if parts.scheme != "http" or is_loopback(parts.hostname or ""):
        return None
    return (
        f"[hub] url: {parts.scheme}://{parts.netloc}: not https, so the gate's token and the"
        " venue's rows cross the network in clear, and anyone on it can copy the token and"
        " write as this gate: give the hub TLS (docs/first-venue.md) and an https:// url"
    )


def _lists(conf: cfg.Config, signers: Sequence[keys.PublicKey]) -> tuple[list[str], int]:
    """What `run` would refuse of the [revocation] files, each applied in order, as `run` does,
    to a scratch copy of the installed list: one line each (a missing file is said apart); and
    the list version the gate would start with (0: none)."""
    from agent.app.check import copy_store
    from agent.app.daemon import apply_lists
    from agent.errors import RevocationError
    from agent.revocation import RevocationStore

    refused: list[str] = []
    version = 0

    def said(path: Path, exc: RevocationError) -> None:
        refused.append(
            f"[revocation] files: {path}: refused ({exc}); the gate starts with the list it has"
            " installed"
        )

    async def apply(scratch: Path) -> None:
        nonlocal version
        files = [lst for lst in conf.revocation.files if lst.is_file()]  # missing: said apart
        async with await RevocationStore.open(scratch) as store:
            await apply_lists(store, files, signers, said)
            version = store.meta.version

    with tempfile.TemporaryDirectory(prefix="gate-agent-check-") as tmp:
        installed = conf.gate.state_dir / "revocations.db"
        if installed.exists():
            copy_store(installed, Path(tmp) / "revocations.db")
        asyncio.run(apply(Path(tmp) / "revocations.db"))
    return refused, version


def _unreadable_state(state: Path, gate_id: str) -> AgentError | None:
    """Why the journal or revocation store in ``state`` cannot be opened by this gate (run
    stops on it): not a database, not a journal, another gate's journal; a ConfigError where
    run exits 78 on it (a journal refused). Writes nothing."""
    import sqlite3

    from agent.journal import queries

    # A PermissionError: the gate user's folder (the state folder's own check says so).
    with contextlib.suppress(PermissionError):
        if (problem := queries.unusable(state / "journal.db", gate_id)) is not None:
            return problem  # it names the file
    path = state / "revocations.db"
    try:
        if path.exists():
            with contextlib.closing(sqlite3.connect(sqlite_readonly(path), uri=True)) as db:
                db.execute("PRAGMA schema_version").fetchone()
    except PermissionError:
        return None
    except sqlite3.Error as exc:
        return AgentError(f"{path}: {exc}")
    return None


def check_config(path: Path, out: TextIO) -> int:
    """Check the config as `run` reads it, opening no device: the file, device URLs, the trust
    root key and bundle (with the one installed in the state folder, as `run` takes it),
    revocation files (applied to a scratch copy of the installed list), hub files (the TLS
    files loaded), the journal and revocation store (their headers). Returns 0; raises
    ConfigError naming the file and key when the gate could not start (what systemd/install runs
    before enabling it), AgentError when its state cannot be opened. What `run` starts with but
    logs as an error (a refused bundle beside an installed one, a missing or refused revocation
    file, pretix without a device) is a WARN line."""
    from agent.app.daemon import REFUSED_HINT, hub_tls, open_trust

    conf = cfg.load(path)
    warnings: list[str] = []
    state = conf.gate.state_dir
    if (problem := state_dir_problem(state)) is not None:
        user = pwd.getpwuid(os.geteuid()).pw_name
        # A folder there that this user may not write may be the gate user's (exit 2, as for
        # one it may not read); one that cannot be made is the config's (78).
        error = AgentError if state.is_dir() else ConfigError
        raise error(
            f"{conf.path}: [gate] state_dir: {state}: {problem} as {user}: a gate running as"
            " this user cannot record its decisions (check as the gate's user: sudo -u"
            f" gate-agent gate-agent selftest --config-only --config {conf.path}; give the"
            f" folder to it: sudo install -d -o gate-agent -g gate-agent -m 0750 {state})"
        )
    try:
        trust = open_trust(conf, state / "trust.json", persist=False, refused=warnings.append)
    except PermissionError as exc:  # the state folder is the gate user's (0750)
        raise AgentError(
            f"{conf.path}: [gate] state_dir: {state}: {exc.strerror}: run the check as the"
            " gate's user (sudo -u gate-agent gate-agent selftest --config-only ...)"
        ) from None
    if (broken := _unreadable_state(state, conf.gate.id)) is not None:
        error = ConfigError if isinstance(broken, ConfigError) else AgentError  # as run exits
        raise error(f"{conf.path}: [gate] state_dir: {broken}: {REFUSED_HINT}")
    for lst in conf.revocation.files:
        if not lst.is_file():
            stale = "refused" if conf.policy.stale_list == "deny" else "admitted, flagged"
            warnings.append(
                f"[revocation] files: {lst}: no such file (the gate starts with the list it has"
                f" installed; with none, every ticket is {stale} list_stale: [policy] stale_list)"
            )
    refused, version = _lists(conf, trust.signers())
    warnings += refused
    if version == 0 and conf.hub is None and conf.pretix is None:
        # Found in a user trial: a profile's gate (files = [], no hub) started degraded,
        # "revocation list stale", and nothing at install had said why.
        each = "refused" if conf.policy.stale_list == "deny" else "admitted, flagged"
        warnings.append(
            "[revocation] files: no list, and no [hub] to fetch one from: the gate starts with"
            f" no revocation list, health degraded (revocation list stale), every ticket {each}"
            " list_stale ([policy] stale_list); give it a signed list in [revocation] files (a"
            " first one: gate-agent revoke --keys DIR --out FILE 00000000000000000000000000000000)"
        )
    if (exposed := cfg.exposed_token(conf)) is not None:
        warnings.append(exposed)
    if conf.hub is not None:
        hub_tls(conf)
        if (problem := _plain_http(conf.hub.url)) is not None:
            warnings.append(problem)
    if conf.pretix is not None:
        from sync.pretix_state import load_device

        with contextlib.suppress(PermissionError):  # the gate user's folder
            if load_device(state, conf.pretix.url) is None and not conf.pretix.init_token:
                warnings.append(
                    "[pretix] init_token: none, and no pretix device initialised in"
                    f" {state}: the gate decides offline and syncs nothing (create a device in"
                    " pretix and put its initialisation token there)"
                )
    print(
        f"OK   config    {conf.path}: gate {conf.gate.id}, {_lanes(conf)}, trust v{trust.version}"
        " (devices not opened: run selftest without --config-only at the turnstile)",
        file=out,
    )
    for warning in warnings:
        print(f"WARN config    {conf.path}: {warning}", file=out)
    return 0
