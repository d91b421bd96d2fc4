"""A real pretix server for the tests: pip's ``pretix``, SQLite, its development server on loopback.

Installed by ``.ci/setup --tests``: a virtualenv with pretix (:data:`PRETIX_VERSION`) and a
migrated template database, cached per pretix and Python version under
``~/.cache/gate-agent/`` (``$GATE_AGENT_CACHE``), linked as ``.venv-pretix`` in the repository.
``python -m tests.pretix_real prepare`` makes the template (pretix's migrations take minutes, so
only once per cache). Each test session copies the template into a private temp folder, creates
the test data there with tests/pretix_fixtures.py (run inside the pretix venv) and starts
``python -m pretix runserver`` on a free port: the session fixture :func:`pretix_real`, loaded for
every test module by tests/conftest.py. Under CI (``CI=true``) a missing install fails the tests;
elsewhere they are skipped with the reason.

pretix runs without mail, Celery (tasks run eagerly) or a cache server. Its own log (its access
log shows the ticket secrets in redeem URLs, by design of its API) stays in that private folder,
outside pytest's temp directory, like the PostgreSQL server's log (tests/pg.py). The server's
tokens and every ticket secret are registered with the session-wide log scan.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.needs import need
from tests.polling import until_sync
from tests.ports import free_port

PRETIX_VERSION = "2026.8.0"
REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-pretix"
TEMPLATE = VENV / "gate-agent" / "template.sqlite3"
FIXTURES = Path(__file__).resolve().parent / "pretix_fixtures.py"
START_TIMEOUT_S = 90.0

_CFG = """\
[pretix]
instance_name=gate-agent tests
url={url}
datadir={data}
currency=EUR
registration=off
ecb_rates=off

[database]
backend=sqlite3
name={db}

[django]
debug=off
secret=gate-agent-tests-only

[mail]
from=pretix@localhost
"""


def write_config(folder: Path, port: int) -> Path:
    """A pretix.cfg for a server on 127.0.0.1:``port`` with its data under ``folder``."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    cfg = folder / "pretix.cfg"
    url = f"http://127.0.0.1:{port}"
    cfg.write_text(_CFG.format(url=url, data=data, db=data / "db.sqlite3"))
    return cfg


def missing() -> str | None:
    """Why the real-pretix tests cannot run here, or None when the install is complete."""
    if not (VENV / "bin" / "python").exists():
        return f"pretix is not installed in {VENV} (run `.ci/setup --tests`)"
    if not TEMPLATE.exists():
        return f"no migrated pretix template database at {TEMPLATE} (run `.ci/setup --tests`)"
    return None


def prepare() -> None:
    """Migrate the template database once (into a temp file, renamed when complete)."""
    if TEMPLATE.exists():
        return
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gate-agent-pretix-") as tmp:
        cfg = write_config(Path(tmp), 8000)
        env = {**os.environ, "PRETIX_CONFIG_FILE": str(cfg)}
        subprocess.run([str(VENV / "bin" / "python"), "-m", "pretix", "migrate", "-v0"],
                       env=env, check=True)  # fmt: skip
        partial = TEMPLATE.with_suffix(".partial")
        shutil.copyfile(Path(tmp) / "data" / "db.sqlite3", partial)
        partial.rename(TEMPLATE)


@dataclass(frozen=True)
class Device:
    """A pretix device: its per-organizer number, its database key (None when unknown) and its
    one-time initialisation token."""

    device_id: int
    pk: int | None
    init_token: str = field(repr=False)


@dataclass
class PretixReal:
    """A running real pretix with the data of tests/pretix_fixtures.py."""

    url: str
    organizer: str
    event: str
    lists: dict[str, int]  # "all" (all products), "vip" (VIP only)
    secrets: dict[str, list[str]]  # "standard", "vip": the issued tickets' secrets
    admin_token: str = field(repr=False)  # a team API token with every permission
    devices: dict[str, Device] = field(repr=False)  # "alpha", "other", "gate" as created
    # the event series: "event", "list" (Berlin only), "subevents" and "secrets" by date name
    series: dict[str, Any] = field(repr=False)
    register: Callable[[Iterable[str], str], None] = field(repr=False)
    started_in_s: float = 0.0  # copy, fixtures and runserver until the API answered
    # stop runserver (its data kept) and start it again on the same port (answering when it returns)
    halt: Callable[[], None] = field(default=lambda: None, repr=False)
    launch: Callable[[], None] = field(default=lambda: None, repr=False)
    _taken: set[str] = field(default_factory=set, repr=False)

    @property
    def event_path(self) -> str:
        return f"/api/v1/organizers/{self.organizer}/events/{self.event}"

    def ticket(self, kind: str = "standard") -> str:
        """A ticket secret of ``kind`` that no other test has taken."""
        for secret in self.secrets[kind]:
            if secret not in self._taken:
                self._taken.add(secret)
                return secret
        raise RuntimeError(f"all {kind} tickets of the real pretix are used up")

    async def api(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        """One API call; ``token`` is a device's API token, else the admin team token."""
        auth = f"Device {token}" if token else f"Token {self.admin_token}"
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                method, self.url + path, json=body, headers={"Authorization": auth}
            ) as resp,
        ):
            text = await resp.text()
            return resp.status, json.loads(text) if text else None

    async def new_device(self, name: str, profile: str = "full") -> Device:
        """A new device of the organizer (all events), not yet initialised; ``profile`` is its
        security profile ("full", "pretixscan", "pretixscan_online_kiosk", ...)."""
        status, body = await self.api(
            "POST", f"/api/v1/organizers/{self.organizer}/devices/",
            body={"name": name, "all_events": True, "limit_events": [],
                  "security_profile": profile},
        )  # fmt: skip
        if status != 201:
            raise RuntimeError(f"device creation failed: HTTP {status}")
        self.register([body["initialization_token"]], "real pretix initialisation token")
        return Device(body["device_id"], None, body["initialization_token"])

    async def initialize(self, device: Device, brand: str = "pretixSCAN-like test") -> str:
        """Initialise ``device`` as a scanner would; returns its API token."""
        status, body = await self.api("POST", "/api/v1/device/initialize", token=None, body={
            "token": device.init_token, "hardware_brand": "test", "hardware_model": "test",
            "os_name": "Linux", "os_version": "1", "software_brand": brand,
            "software_version": "1",
        })  # fmt: skip
        if status != 200:
            raise RuntimeError(f"device initialisation failed: HTTP {status}")
        token: str = body["api_token"]
        self.register([token], "real pretix device API token")
        return token

    async def revoke(self, token: str) -> None:
        """Revoke the device with API ``token``: pretix's ``device/revoke`` sets ``revoked`` as
        the backend's "revoke access" button does (the team API has no such call)."""
        status, _ = await self.api("POST", "/api/v1/device/revoke", token=token)
        if status != 200:
            raise RuntimeError(f"device revocation failed: HTTP {status}")

    async def redeem(
        self, token: str, secret: str, nonce: str, *, list_id: int | None = None, **extra: Any
    ) -> tuple[int, Any]:
        """Redeem ``secret`` on a list as the device with ``token`` (a scanner online)."""
        lid = self.lists["all"] if list_id is None else list_id
        path = f"{self.event_path}/checkinlists/{lid}/positions/{quote(secret, safe='')}/redeem/"
        return await self.api("POST", path, token=token,
                              body={"nonce": nonce, "type": "entry", **extra})  # fmt: skip

    async def annul(self, token: str, nonce: str, *, list_id: int | None = None) -> tuple[int, Any]:
        """Annul the check-in with ``nonce`` as the device with ``token`` (pretix's own annul)."""
        lid = self.lists["all"] if list_id is None else list_id
        path = f"/api/v1/organizers/{self.organizer}/checkinrpc/annul/"
        return await self.api("POST", path, token=token, body={"lists": [lid], "nonce": nonce})

    async def order_action(self, secret: str, action: str) -> Any:
        """What the backend's buttons do to the order of the ticket ``secret``: ``action`` is
        ``mark_pending`` (a paid order charged back), ``mark_expired``, ``mark_paid`` or
        ``mark_canceled``; "" reads the order. Returns the order as pretix answers it."""
        path = f"{self.event_path}/orderpositions/?secret={quote(secret)}"
        status, body = await self.api("GET", path)  # a check-in list lists paid orders only
        if status != 200 or len(body["results"]) != 1:
            raise RuntimeError(f"position lookup failed: HTTP {status}")
        code = body["results"][0]["order"]
        path = f"{self.event_path}/orders/{code}/" + (f"{action}/" if action else "")
        status, order = await self.api("POST" if action else "GET", path)
        if status != 200:
            raise RuntimeError(f"{action} failed: HTTP {status} {order}")
        return order

    async def checkins(self, secret: str, *, list_id: int | None = None) -> list[dict[str, Any]]:
        """Every check-in (annulled ones too) of the position with ``secret`` on a list."""
        lid = self.lists["all"] if list_id is None else list_id
        status, body = await self.api(
            "GET", f"{self.event_path}/checkinlists/{lid}/positions/?secret={quote(secret)}"
        )
        if status != 200 or len(body["results"]) != 1:
            raise RuntimeError(f"position lookup failed: HTTP {status}")
        position = body["results"][0]["id"]
        rows: list[dict[str, Any]] = []
        path: str | None = f"{self.event_path}/checkins/?list={lid}"
        while path is not None:
            status, body = await self.api("GET", path)
            if status != 200:
                raise RuntimeError(f"check-in list failed: HTTP {status}")
            rows += [r for r in body["results"] if r["position"] == position]
            path = body["next"].removeprefix(self.url) if body["next"] else None
        return rows


class Server:
    """The runserver process and its private folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gate-agent-pretix-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in_s = 0.0
        self.fixtures_s = 0.0  # creating the fixtures alone
        self._port = 0
        self._env: dict[str, str] = {}

    def start(self, bulk: int = 0) -> tuple[str, dict[str, Any]]:
        """Copy the template, create the fixtures (and ``bulk`` more orders, see
        tests/pretix_fixtures.py) and start runserver; returns its URL and the fixtures' data."""
        began = time.monotonic()
        port = free_port()
        cfg = write_config(self.root, port)
        shutil.copyfile(TEMPLATE, self.root / "data" / "db.sqlite3")
        env = {**os.environ, "PRETIX_CONFIG_FILE": str(cfg), "PYTHONUNBUFFERED": "1"}
        python = str(VENV / "bin" / "python")
        out = self.root / "fixtures.json"
        created = time.monotonic()
        subprocess.run([python, str(FIXTURES), str(out), str(bulk)], env=env, check=True,
                       capture_output=True, timeout=120 + bulk / 50)  # fmt: skip
        self.fixtures_s = time.monotonic() - created
        data: dict[str, Any] = json.loads(out.read_text())
        self._port, self._env = port, env
        self.launch()
        self.started_in_s = time.monotonic() - began
        return f"http://127.0.0.1:{port}", data

    def launch(self) -> None:
        """Start runserver on the session's port and data; returns once the API answers."""
        python = str(VENV / "bin" / "python")
        with open(self.root / "server.txt", "ab") as log:  # pretix's log: holds secrets
            self.proc = subprocess.Popen(
                [python, "-m", "pretix", "runserver", f"127.0.0.1:{self._port}", "--noreload"],
                env=self._env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self._wait_ready(f"http://127.0.0.1:{self._port}")

    def halt(self) -> None:
        """Stop runserver (SIGTERM, then SIGKILL after 10 s); the data stays for :meth:`launch`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _wait_ready(self, url: str) -> None:
        proc = self.proc
        assert proc is not None

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"pretix runserver exited ({proc.returncode}); "
                                   f"see {self.root / 'server.txt'}")  # fmt: skip
            try:
                with urllib.request.urlopen(url + "/api/v1/", timeout=2):
                    return False
            except urllib.error.HTTPError as exc:
                return exc.code == 401  # the API answers (and wants a token): up
            except OSError:
                return False

        try:
            until_sync(answers, START_TIMEOUT_S, "pretix answers its API")
        except AssertionError:
            raise RuntimeError(f"pretix did not answer within {START_TIMEOUT_S:.0f} s") from None

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pretix_real(log_scan_register: Callable[[Iterable[str], str], None]) -> Iterator[PretixReal]:
    """A real pretix server for the session (see the module docstring); fails under CI when
    pretix is not installed, skips elsewhere."""
    reason = missing()
    need(reason is None, "a real pretix", reason or "")
    server = Server()
    try:
        url, data = server.start()
        devices = {
            name: Device(d["device_id"], d["pk"], d["init_token"])
            for name, d in data["devices"].items()
        }
        log_scan_register([d.init_token for d in devices.values()],
                          "real pretix initialisation token")  # fmt: skip
        log_scan_register([data["admin_token"]], "real pretix team API token")
        tickets = [*data["secrets"].values(), *data["series"]["secrets"].values()]
        log_scan_register([s for kind in tickets for s in kind], "real pretix ticket secret")
        yield PretixReal(
            url=url, organizer=data["organizer"], event=data["event"], lists=data["lists"],
            secrets=data["secrets"], admin_token=data["admin_token"], devices=devices,
            series=data["series"],
            register=log_scan_register, started_in_s=server.started_in_s,
            halt=server.halt, launch=server.launch,
        )  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    if sys.argv[1:] != ["prepare"]:
        sys.exit("usage: python -m tests.pretix_real prepare")
    prepare()
