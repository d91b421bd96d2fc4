"""The hub (and the gate) as a real subprocess for tests: its config, its tokens, start/stop/kill -9.

::

    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    token = add_token(setup, gate_id="gate-a")
    with HubProcess(setup) as hub:        # `python -m agent hub --config ...`
        ...                                # setup.url is http://127.0.0.1:PORT
        hub.kill9(); hub.start()

:func:`make_tls` makes a CA, a server certificate and gate client certificates for ``[tls]``.
The hub's stderr goes to ``<dir>/hub.log`` (appended across restarts); its tail is part of every
failure to start.

The gate: :func:`running_gate` is ``gate-agent run --config ...`` as a process, once its status
server answers ready (:func:`fresh_list` makes the signed list a gate needs to be ready);
:func:`gate_run` is that command line, for a test that starts the process itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import resource
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from multidict import CIMultiDict

from agent import revocation_issuer
from agent.issuer import Issuer, export_hub
from agent.journal import Journal, Kind
from agent.model import Decision, Reason, Verdict
from sync.protocol import BatchUpload, EntryWire, ErrorBody, Heartbeat, Message, encode
from tests.polling import until, until_sync
from tests.ports import free_port as free_port  # many tests import it from here

ROOT = Path(__file__).resolve().parents[1]
EXE = (sys.executable, "-m", "agent")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for ``[tls]``: the server's cert and key, the CA that signed it (for clients),
    and optionally the CA of gate client certificates (mTLS)."""

    cert: Path
    key: Path
    ca: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class HubSetup:
    dir: Path
    config: Path
    url: str  # http(s)://127.0.0.1:PORT
    port: int
    venue: str
    keys: Path
    tls: TlsFiles | None = None

    def client_ssl(self, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        """A client context trusting the hub's CA, with a client certificate if given."""
        if self.tls is None:
            raise ValueError("this hub speaks plain HTTP")
        ctx = ssl.create_default_context(cafile=str(self.tls.ca))
        if cert is not None:
            ctx.load_cert_chain(cert, key)
        return ctx


def make_tls(dir: Path, *, client_cns: tuple[str, ...] = (), mtls: bool = True) -> TlsFiles:
    """A test CA, a server certificate for 127.0.0.1/localhost and client certificates.

    Client certificate ``cn`` is ``dir/<cn>.crt`` + ``dir/<cn>.key``, signed by the same CA, which
    is also the hub's ``client_ca`` when ``mtls``. The CA's key is ``dir/ca.key`` (for
    :func:`issue_cert`).
    """
    dir.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gate-agent test CA")])
    ca_cert = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
    _write_pem(dir / "ca.crt", ca_cert, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), server_key,
        ca_name, ca_key, ca=False,
        san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )  # fmt: skip
    _write_pem(dir / "server.crt", server_cert, server_key)
    for cn in client_cns:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = _certificate(
            name, key, ca_name, ca_key, ca=False, usage=ExtendedKeyUsageOID.CLIENT_AUTH
        )
        _write_pem(dir / f"{cn}.crt", cert, key)
    return TlsFiles(
        dir / "server.crt", dir / "server.key", dir / "ca.crt", dir / "ca.crt" if mtls else None
    )


def issue_cert(
    tls: TlsFiles,
    name: str,
    cns: tuple[str, ...],
    usages: tuple[x509.ObjectIdentifier, ...] = (),
) -> tuple[Path, Path]:
    """Another certificate from :func:`make_tls`'s CA: subject CNs ``cns`` (one RDN each),
    extended key usages ``usages`` (none: no extension). Returns (cert, key) paths
    ``<dir>/<name>.crt`` and ``.key``."""
    if name in ("ca", "server"):
        raise ValueError(f"{name!r} would replace one of make_tls's files")
    ca_cert = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(tls.ca.with_suffix(".key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns])
    cert = _certificate(subject, key, ca_cert.subject, ca_key, ca=False, usages=usages)
    path = tls.ca.parent / f"{name}.crt"
    _write_pem(path, cert, key)
    return path, path.with_suffix(".key")


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    san: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
    usages: tuple[x509.ObjectIdentifier, ...] = (),
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    usages = (usage, *usages) if usage is not None else usages
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_suffix(".key")
        key_path.touch(mode=0o600)  # as a private key must be (others reading it are refused)
        key_path.chmod(0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def write_hub_config(
    dir: Path,
    *,
    keys: Path,
    venue: str = "venue-1",
    store: str | None = None,
    port: int | None = None,
    tls: TlsFiles | None = None,
    extra: str = "",
) -> HubSetup:
    """Write ``dir/hub.toml`` (state in ``dir/state``) and return the setup.

    ``keys`` is a `keys init` folder; the hub gets what `keys export --hub` makes of it, in
    ``dir/hub-keys`` (``setup.keys``), as a hub must never hold root.key or issuer.key.
    ``extra`` is appended inside ``[hub]`` (e.g. ``"gate_offline_after_s = 2\\n"``) unless it
    starts a section of its own.
    """
    dir.mkdir(parents=True, exist_ok=True)
    export_hub(keys, dir / "hub-keys")
    keys = dir / "hub-keys"  # from here on: the hub's folder, in the config and setup.keys
    port = free_port() if port is None else port
    lines = ["[log]", 'level = "INFO"', ""]
    if tls is not None:
        lines += ["[tls]", f'cert = "{tls.cert}"', f'key = "{tls.key}"']
        if tls.client_ca is not None:
            lines.append(f'client_ca = "{tls.client_ca}"')
        lines.append("")
    lines += [
        "[hub]",
        f'venue = "{venue}"',
        f'listen = "127.0.0.1:{port}"',
        f'state_dir = "{dir / "state"}"',
        f'keys = "{keys}"',
    ]
    if store is not None:
        lines.append(f'store = "{store}"')
    config = dir / "hub.toml"
    config.write_text("\n".join(lines) + "\n" + extra)
    scheme = "http" if tls is None else "https"
    return HubSetup(dir, config, f"{scheme}://127.0.0.1:{port}", port, venue, keys, tls)


def hub_cli(
    setup: HubSetup, *args: str | Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``gate-agent hub ARGS --config <setup.config>`` and return what it did."""
    command, *rest = map(str, args)
    return subprocess.run(
        [*EXE, "hub", command, "--config", str(setup.config), *rest],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def add_token(
    setup: HubSetup,
    gate_id: str | None = None,
    console: str | None = None,
    *,
    name: str | None = None,
) -> str:
    """A new gate token (``gate_id``, named ``name`` in the venue) or console token
    (``console``) made by the CLI."""
    if (gate_id is None) == (console is None):
        raise ValueError("give exactly one of gate_id and console")
    option = ["--gate", gate_id] if gate_id is not None else ["--console", str(console)]
    if name is not None:
        option += ["--name", name]
    done = hub_cli(setup, "token", *option)
    if done.returncode != 0:
        raise AssertionError(f"hub token failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


class HubProcess:
    """One hub process for ``setup``; a context manager that stops it on exit."""

    def __init__(
        self, setup: HubSetup, env: Mapping[str, str] | None = None, nofile: int | None = None
    ) -> None:
        """``env``: variables added to the hub's environment (e.g. libfaketime's); ``nofile``:
        the hub's open file limit (soft and hard), as a unit's LimitNOFILE= sets it."""
        self.setup = setup
        self.env = None if env is None else {**os.environ, **env}
        self.nofile = nofile
        self.log_path = setup.dir / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HubProcess:
        """Start the hub and wait until /v1/health answers; raises AssertionError with the log."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("hub already running")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*EXE, "hub", "--config", str(self.setup.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=ROOT,
                env=self.env,
                start_new_session=True,
                preexec_fn=None if self.nofile is None else self._limit_nofile,
            )
        proc = self.proc
        try:
            until_sync(lambda: proc.poll() is not None or self.healthy(), START_TIMEOUT_S)
        except AssertionError:
            self.kill9()
            self._fail(f"hub did not answer /v1/health within {START_TIMEOUT_S:g} s")
        if proc.poll() is not None:
            self._fail(f"hub exited with {proc.returncode} at start")
        return self
        raise AssertionError  # unreachable: _fail raises

    def _limit_nofile(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def healthy(self) -> bool:
        """True when GET /v1/health answers ok for this hub's venue."""
        ctx = None if self.setup.tls is None else self.setup.client_ssl()
        try:
            with urllib.request.urlopen(
                self.setup.url + "/v1/health", timeout=2, context=ctx
            ) as reply:
                body = json.loads(reply.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return body.get("ok") is True and body.get("venue") == self.setup.venue

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit code (None when not started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill9()
                self._fail(f"hub did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM")
        return self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL the hub (no clean shutdown) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT_S)

    def restart(self) -> HubProcess:
        self.stop()
        return self.start()

    def log_tail(self, chars: int = 3000) -> str:
        return _tail(self.log_path, chars)

    def _fail(self, message: str) -> None:
        raise AssertionError(f"{message}; {self.log_path} ends with:\n{self.log_tail()}")

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self.kill9()


# --- the gate (`gate-agent run`) as a real subprocess ----------------------------------------

GATE_READY_TIMEOUT_S = 60.0
GATE_STOP_TIMEOUT_S = 30.0


def fresh_list(iss: Issuer, folder: Path) -> str:
    """A freshly signed revocation list in ``folder`` (with no list at all a gate is "stale", not
    ready); its file name, for ``[revocation] files``."""
    delta = revocation_issuer.issue_delta(iss.list_key, folder / "rev.state.json")
    (folder / "revocations-1.json").write_bytes(delta)
    return "revocations-1.json"


def gate_run(config: Path) -> list[str]:
    """The command line of ``gate-agent run --config <config>``."""
    return [*EXE, "run", "--config", str(config)]


async def answers_ready(url: str) -> bool:
    """True when the status server at ``url`` (``http://127.0.0.1:PORT``) answers /healthz 200."""
    try:
        async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


@asynccontextmanager
async def running_gate(
    config: Path, url: str, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """:func:`gate_run` as a process (stderr to ``log``) once its status server at ``url`` answers
    ready; raises AssertionError with the log's tail when it exits or is not ready in time.

    On exit a process still running is sent SIGTERM (after SIGCONT: a test may have stopped it)
    and waited for; the caller can read ``returncode`` after the block.
    """
    with open(log, "wb") as err:  # noqa: ASYNC230 - opened once, test only
        proc = await asyncio.create_subprocess_exec(
            *gate_run(config), stdout=asyncio.subprocess.DEVNULL, stderr=err
        )

    async def up() -> bool:
        return proc.returncode is not None or await answers_ready(url)

    try:
        try:
            await until(up, GATE_READY_TIMEOUT_S, "the daemon answers ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {log} ends with:\n{_tail(log)}") from None
        if proc.returncode is not None:
            raise AssertionError(
                f"gate-agent run exited with {proc.returncode} at start; "
                f"{log} ends with:\n{_tail(log)}"
            )
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), GATE_STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# --- a tiny client for tests ---------------------------------------------------------------


ADMIT = Decision(Verdict.ADMIT, Reason.OK)


@dataclass
class Reply:
    status: int
    body: bytes
    headers: CIMultiDict[str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> ErrorBody:
        return ErrorBody.from_json(self.json)


class Api:
    """Requests to one hub: bodies are bytes or protocol messages, replies are read whole."""

    def __init__(
        self, session: aiohttp.ClientSession, base: str, ssl_ctx: ssl.SSLContext | None = None
    ) -> None:
        self.session, self.base, self.ssl = session, base, ssl_ctx

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: bytes | Message | None = None,
        headers: dict[str, str] | None = None,
        ssl_ctx: ssl.SSLContext | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = body if body is None or isinstance(body, bytes) else encode(body)
        async with self.session.request(
            method, self.base + path, data=data, headers=sent, ssl=ssl_ctx or self.ssl or True
        ) as r:
            return Reply(r.status, await r.read(), CIMultiDict(r.headers))

    async def get(self, path: str, token: str | None = None, **kw: Any) -> Reply:
        return await self.call("GET", path, token=token, **kw)

    async def post(
        self, path: str, body: bytes | Message, token: str | None = None, **kw: Any
    ) -> Reply:
        return await self.call("POST", path, token=token, body=body, **kw)


async def feed_waiting(api: Api, console: str) -> int:
    """How many long-polls of the feed the hub process holds open now (``hub_feed_waiting``
    in its /metrics, read with a console token)."""
    reply = await api.get("/metrics", console)
    assert reply.status == 200, reply.status
    for line in reply.body.decode().splitlines():
        if line.startswith("hub_feed_waiting "):
            return int(float(line.split()[1]))
    raise AssertionError("no hub_feed_waiting in the hub's /metrics")


async def until_feed_waiting(api: Api, console: str, count: int = 1) -> None:
    """Wait until the hub holds ``count`` long-polls of the feed open: an upload after this
    must wake them (before it, a poll could find the row at once and test nothing)."""

    async def held() -> bool:
        return await feed_waiting(api, console) >= count

    await until(held, 15, f"{count} long-poll(s) held open at the hub")


@dataclass
class Gate:
    """A gate's identity at the hub and its real journal, whose rows it uploads."""

    gate_id: str
    name: str
    token: str
    journal: Journal

    async def row(self, ref: str, kind: Kind = "entry", decision: Decision = ADMIT) -> EntryWire:
        rec = await self.journal.record(
            ticket_ref=ref, kind=kind, decision=decision, lane="in", rev_version=0, offline=False
        )
        return EntryWire.from_record(rec)

    def batch(self, *rows: EntryWire) -> BatchUpload:
        return BatchUpload(self.gate_id, rows)

    def heartbeat(self) -> Heartbeat:
        return heartbeat(self.gate_id, self.name)

    async def upload(self, api: Api, *rows: EntryWire) -> Reply:
        return await api.post(
            f"/v1/gates/{self.gate_id}/entries:batch", self.batch(*rows), self.token
        )


def heartbeat(gate_id: str, name: str) -> Heartbeat:
    """A healthy gate's heartbeat."""
    return Heartbeat(
        gate_id=gate_id, gate_name=name, version="test", outbox_depth=0,
        oldest_unsynced_age_s=None, revocation_version=0, revocation_age_s=None,
        trust_version=1, clock_synced=True, feed_cursor=0,
    )  # fmt: skip
