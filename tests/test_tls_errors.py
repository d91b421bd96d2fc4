"""TLS says what is wrong: a real hub with mTLS and real gate processes with one certificate fault
each. The gate logs one ERROR line naming the config key to check (however many of its tasks
meet the fault), the hub logs why it refused. And the hub's log tells gates connecting and going
quiet, revocation lists issued and alerts raised (short ticket ids only)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.clock import Clock
from agent.errors import UpstreamError, UpstreamUnavailable
from agent.issuer import Issuer
from agent.journal import Journal
from sync.client_http import HubHTTP, TLSFileError, client_cert_problem, tls_context
from sync.hub_watch import HandshakeLog
from sync.log_throttle import WARN_EVERY_S
from tests.hubgate import write_gate
from tests.hubproc import (
    ROOT,
    Api,
    Gate,
    HubProcess,
    HubSetup,
    TlsFiles,
    add_token,
    hub_cli,
    make_tls,
    write_hub_config,
)
from tests.polling import until, until_sync

DEADLINE_S = 30.0
GATE_ERROR = " ERROR sync.client: hub: "


def _expired_cert(tls: TlsFiles, cn: str) -> tuple[Path, Path]:
    """A gate client certificate from the hub's CA that expired yesterday."""
    ca_cert = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(tls.ca.with_suffix(".key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(now - timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    path = tls.ca.parent / "expired.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").touch(mode=0o600)  # a private key readable by others is refused
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, path.with_suffix(".key")


@dataclass(frozen=True)
class Venue:
    setup: HubSetup
    tls: TlsFiles
    other: TlsFiles  # another CA with its own server and gate-a certificates
    tokens: dict[str, str]


@pytest.fixture
def venue(tmp_path: Path, keys_dir: Path) -> Venue:
    tls = make_tls(tmp_path / "tls", client_cns=("gate-a", "gate-b"))
    other = make_tls(tmp_path / "other-ca", client_cns=("gate-a",))
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, tls=tls)
    tokens = {g: add_token(setup, gate_id=g, name=g.upper()) for g in ("gate-a", "gate-b")}
    return Venue(setup, tls, other, tokens)


def _case(venue: Venue, case: str) -> tuple[Path, Path | None, Path | None, str]:
    """(ca, cert, key, token) of gate-a for ``case``."""
    own = venue.tls.ca.parent
    ca = venue.tls.ca
    cert: Path | None = own / "gate-a.crt"
    key: Path | None = own / "gate-a.key"
    token = venue.tokens["gate-a"]
    if case == "wrong hub CA":
        ca = venue.other.ca
    elif case == "client certificate from another CA":
        cert, key = venue.other.ca.parent / "gate-a.crt", venue.other.ca.parent / "gate-a.key"
    elif case == "expired client certificate":
        cert, key = _expired_cert(venue.tls, "gate-a")
    elif case == "certificate of another gate":
        cert, key = own / "gate-b.crt", own / "gate-b.key"
    elif case == "no client certificate":
        cert = key = None
    elif case == "token of another gate":
        token = venue.tokens["gate-b"]
    elif case == "unknown token":
        token = "u" * 43
    return ca, cert, key, token


def _hub_section(ca: Path, cert: Path | None, key: Path | None) -> str:
    files = f'ca = "{ca}"\n'
    if cert is not None and key is not None:
        files += f'cert = "{cert}"\nkey = "{key}"\n'
    return files


@pytest.fixture
def gate_process(tmp_path: Path, keys_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


# (case, the gate's line names, its words, the hub's log says)
CASES = [
    (
        "wrong hub CA",
        "check [hub] ca",
        "the hub's certificate is not trusted",
        "TLS handshake from 127.0.0.1 refused: the client ended the handshake",
    ),
    (
        "client certificate from another CA",
        "check [hub] cert",
        "client certificate is not from the CA in [hub] ca",
        "TLS handshake from 127.0.0.1 refused: client certificate is not from this hub's"
        " [tls] client_ca",
    ),
    (
        "expired client certificate",
        "check [hub] cert",
        "client certificate expired on",
        "TLS handshake from 127.0.0.1 refused: client certificate expired",
    ),
    (
        "certificate of another gate",
        "check [hub] cert and key",
        "the hub refused this gate's client certificate",
        "gate gate-a: client certificate of 'gate-b' refused (from 127.0.0.1)",
    ),
    (
        "no client certificate",
        "check [hub] cert and key",
        "the hub refused this gate's client certificate",
        "gate gate-a: no client certificate refused (from 127.0.0.1)",
    ),
    (
        "unknown token",
        "check [hub] token_file (or token)",
        "HTTP 401",
        "unknown token ",
    ),
    (
        "token of another gate",
        "check [hub] token_file (or token) and [gate] id",
        "the hub refused this gate's token",
        "token of gate gate-b refused for gate gate-a",
    ),
]


@pytest.mark.parametrize(("case", "check", "words", "hub_says"), CASES, ids=[c[0] for c in CASES])
def test_a_certificate_fault_is_one_line_naming_the_key(
    case: str,
    check: str,
    words: str,
    hub_says: str,
    venue: Venue,
    keys_dir: Path,
    tmp_path: Path,
    gate_process: list[subprocess.Popen[bytes]],
) -> None:
    ca, cert, key, token = _case(venue, case)
    gate_dir = tmp_path / "gate-a"
    gate_dir.mkdir()
    (gate_dir / "none.txt").write_text("")
    hub = _hub_section(ca, cert, key) + "retry_max_s = 0.5\n"
    conf = write_gate(gate_dir, keys_dir, gate_id="gate-a", name="GATE-A", url=venue.setup.url,
                      token=token, hub_extra=hub, extra='\n[log]\nlevel = "DEBUG"\n',
                      scanner="sim://file?path=none.txt&end=wait")  # fmt: skip
    log_path = gate_dir / "gate.log"
    with HubProcess(venue.setup) as hub_proc, log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT,
        )  # fmt: skip
        gate_process.append(proc)

        def fault_seen() -> bool:
            text = log_path.read_text(errors="replace")
            assert proc.poll() is None, f"the gate exited:\n{text[-3000:]}"
            repeats = text.count(" DEBUG sync.client: hub: ")
            return repeats >= 4 and hub_says in hub_proc.log_tail(20_000)

        try:
            until_sync(fault_seen, DEADLINE_S, "the fault logged, then met again 4 more times")
        except AssertionError as exc:
            gate_log = log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(
                f"{exc}\ngate log:\n{gate_log}\nhub log:\n{hub_proc.log_tail()}"
            ) from None
        text = log_path.read_text(errors="replace")
    errors = [line for line in text.splitlines() if GATE_ERROR in line]
    assert len(errors) == 1, "\n".join(errors)
    assert words in errors[0] and errors[0].endswith(check), errors[0]
    assert "Traceback" not in text and "Traceback" not in hub_proc.log_tail(20_000)
    assert token not in text and token not in hub_proc.log_tail(20_000)


def test_the_right_certificate_is_taken(
    venue: Venue, keys_dir: Path, tmp_path: Path, gate_process: list[subprocess.Popen[bytes]]
) -> None:
    """The control for the cases above: gate-a's own files work, nothing is refused."""
    ca, cert, key, token = _case(venue, "gate-a's own")
    gate_dir = tmp_path / "gate-a"
    gate_dir.mkdir()
    (gate_dir / "none.txt").write_text("")
    hub = _hub_section(ca, cert, key)
    conf = write_gate(gate_dir, keys_dir, gate_id="gate-a", name="GATE-A", url=venue.setup.url,
                      token=token, hub_extra=hub, scanner="sim://file?path=none.txt&end=wait")  # fmt: skip
    log_path = gate_dir / "gate.log"
    with HubProcess(venue.setup) as hub_proc, log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT,
        )  # fmt: skip
        gate_process.append(proc)

        def connected() -> bool:
            assert proc.poll() is None, hub_proc.log_tail()
            return "gate gate-a connected from 127.0.0.1" in hub_proc.log_tail(20_000)

        try:
            until_sync(connected, DEADLINE_S, "the hub logs gate-a connected")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{hub_proc.log_tail()}") from None
        hub_log = hub_proc.log_tail(20_000)
    assert "refused" not in hub_log, hub_log
    assert GATE_ERROR not in log_path.read_text(errors="replace")


async def _until_in(proc: HubProcess, text: str) -> str:
    try:
        await until(lambda: text in proc.log_tail(50_000), DEADLINE_S, f"{text!r} in the hub's log")
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{proc.log_tail(50_000)[-3000:]}") from None
    return proc.log_tail(50_000)


@pytest.mark.slow
async def test_hub_logs_gates_revocations_and_alerts(
    tmp_path: Path, keys_dir: Path, iss: Issuer
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, extra="gate_offline_after_s = 1\n")
    gates = []
    for gate_id, name in (("gate-a", "Gate A"), ("gate-b", "Gate B")):
        token = add_token(setup, gate_id=gate_id, name=name)
        journal = await Journal.open(
            tmp_path / f"{gate_id}.db", gate_id=gate_id, gate_name=name,
            clock=Clock(assume="synced"),
        )  # fmt: skip
        gates.append(Gate(gate_id, name, token, journal))
    ticket = iss.ticket(event=1, zones=[1])
    try:
        with HubProcess(setup) as proc:
            async with aiohttp.ClientSession() as session:
                api = Api(session, setup.url)
                a = gates[0]
                beat = await api.post("/v1/gates/gate-a/heartbeat", a.heartbeat(), a.token)
                assert beat.status == 200
                await _until_in(proc, "gate gate-a connected from 127.0.0.1")
                await _until_in(proc, "gate gate-a quiet: no heartbeat for")

                done = await asyncio.to_thread(hub_cli, setup, "revoke", ticket)
                assert done.returncode == 0, done.stderr
                await _until_in(proc, "issued: 1 revoked, 0 unrevoked, 0 blocked, 0 unblocked")

                ref = "T-double-admission"  # the same admission right at both gates
                for gate in gates:
                    reply = await gate.upload(api, await gate.row(ref))
                    assert reply.status == 200, reply.body
                log = await _until_in(proc, "alert double_admission: ticket ")
    finally:
        for gate in gates:
            await gate.journal.close()
    line = next(x for x in log.splitlines() if "alert double_admission" in x)
    assert line.endswith("gates Gate A, Gate B") or line.endswith("gates Gate B, Gate A"), line
    assert ref not in log and ticket not in log
    assert all(gate.token not in log for gate in gates)


def test_a_key_that_is_not_the_certificates_is_named_at_start(
    venue: Venue, keys_dir: Path, tmp_path: Path
) -> None:
    ca, cert, _, token = _case(venue, "gate-a's own")
    other_key = venue.tls.ca.parent / "gate-b.key"
    conf = write_gate(tmp_path / "gate-a", keys_dir, gate_id="gate-a", name="GATE-A",
                      url=venue.setup.url, token=token,
                      hub_extra=_hub_section(ca, cert, other_key))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(conf)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 78, done.stderr
    named = [line for line in done.stderr.splitlines() if "[hub] key" in line]
    assert len(named) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"[hub] key {other_key} does not belong to [hub] cert {cert}" in named[0]


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("key missing", "[tls] key: {dir}/nope.key: no such file"),
        ("client_ca missing", "[tls] client_ca: {dir}/nope.crt: no such file"),
        ("another certificate's key", "[tls] key {dir}/gate-a.key does not belong to [tls] cert"),
        ("a certificate as the key", "[tls] cert and key: {dir}/server.crt and {dir}/ca.crt do"
         " not load as a PEM certificate (chain) and its private key"),
        ("junk as client_ca", "[tls] client_ca: {dir}/junk.pem does not load as PEM CA"),
    ],
)  # fmt: skip
def test_the_hubs_tls_files_are_named_when_they_do_not_load(
    keys_dir: Path, tmp_path: Path, case: str, words: str
) -> None:
    """Found trying the product: a missing key, a missing client CA and a wrong key file all
    said "[tls] cannot load the certificates" (naming no key or file) or "[SSL] PEM lib"."""
    files = make_tls(tmp_path / "tls", client_cns=("gate-a",))
    d = files.cert.parent
    (d / "junk.pem").write_text("not a certificate\n")
    wrong = {
        "key missing": {"key": d / "nope.key"},
        "client_ca missing": {"client_ca": d / "nope.crt"},
        "another certificate's key": {"key": d / "gate-a.key"},
        "a certificate as the key": {"key": d / "ca.crt"},
        "junk as client_ca": {"client_ca": d / "junk.pem"},
    }[case]
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, tls=replace(files, **wrong))
    done = hub_cli(setup, "--check")
    assert done.returncode == 78 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert words.format(dir=d) in line, line


def test_a_private_key_others_can_read_is_refused(tmp_path: Path, keys_dir: Path) -> None:
    """Found in a user trial: a world-readable list.key, hub TLS key and gate client key passed
    every check (a token file of mode 0640 was refused). Group-readable (root:gate-hub 0640) is
    allowed."""
    files = make_tls(tmp_path / "tls", client_cns=("gate-a",))
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, tls=files)
    files.key.chmod(0o640)
    assert hub_cli(setup, "--check").returncode == 0
    for key, where in ((files.key, "[tls] key: "), (setup.keys / "list.key", "[hub] keys: ")):
        key.chmod(0o644)
        done = hub_cli(setup, "--check")
        assert done.returncode == 78, done.stderr
        assert f"{where}{key}: a private key readable by others (mode 644)" in done.stderr
        key.chmod(0o600)
    gate_key = files.ca.parent / "gate-a.key"
    gate_key.chmod(0o604)
    with pytest.raises(TLSFileError, match=r"\[hub\] key .*gate-a.key: a private key readable"):
        tls_context(files.ca, files.ca.parent / "gate-a.crt", gate_key)


async def test_a_hang_up_is_blamed_on_the_certificate_only_when_the_hub_refuses_it(
    venue: Venue,
) -> None:
    """A TLS server that takes the gate's certificate (from a second CA it trusts, not the CA in
    [hub] ca) and hangs up on a heartbeat: the gate calls the hub unavailable, since a fresh
    probe of /v1/health is answered; the real hub refusing that certificate is the other case
    (test_a_certificate_fault_is_one_line_naming_the_key)."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(venue.tls.cert, venue.tls.key)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(venue.other.ca)
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head.split(b" ", 2)[1])
        if head.startswith(b"GET /v1/health "):
            body = b'{"v":1,"ok":true,"venue":"venue-1"}'
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            writer.write(head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    other = venue.other.ca.parent
    tls = tls_context(venue.tls.ca, other / "gate-a.crt", other / "gate-a.key")
    http = HubHTTP(f"https://127.0.0.1:{port}", "t" * 43, timeout_s=5, user_agent="test",
                   tls=tls, gate_id="gate-a")  # fmt: skip
    try:
        with pytest.raises(UpstreamError) as caught:
            await http.request("POST", "/v1/gates/gate-a/heartbeat", body=b"{}")
    finally:
        await http.close()
        server.close()
        await server.wait_closed()
    assert heads == [b"/v1/gates/gate-a/heartbeat", b"/v1/health"], heads
    assert isinstance(caught.value, UpstreamUnavailable), caught.value
    assert client_cert_problem(tls, time.time()) is not None  # what the old guess would blame


def test_refused_handshakes_are_rate_limited_per_address_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    refused = HandshakeLog(clock=lambda: now[0])
    expired = ssl.SSLCertVerificationError(1, "certificate verify failed: certificate has expired")
    expired.verify_code, expired.verify_message = 10, "certificate has expired"
    ended = ConnectionResetError()  # asyncio's EOF in the handshake: a gate distrusting the hub
    timed_out = ConnectionAbortedError("SSL handshake is taking longer than 10.0 seconds")
    with caplog.at_level(logging.DEBUG, logger="sync.hub_watch"):
        for _ in range(3):
            refused.refused("10.0.0.7", expired)
        refused.refused("10.0.0.8", expired)
        refused.refused("10.0.0.7", ended)
        refused.refused("10.0.0.7", timed_out)
        now[0] += WARN_EVERY_S
        refused.refused("10.0.0.7", expired)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "TLS handshake from 10.0.0.7 refused: client certificate expired"
        " (certificate has expired; check the gate's [hub] cert)",
        "TLS handshake from 10.0.0.8 refused: client certificate expired"
        " (certificate has expired; check the gate's [hub] cert)",
        "TLS handshake from 10.0.0.7 refused: the client ended the handshake (a gate that does"
        " not trust this hub's certificate: check its [hub] ca, the CA of this hub's [tls] cert)",
        "TLS handshake from 10.0.0.7 refused: client certificate expired"
        " (certificate has expired; check the gate's [hub] cert) (2 more since the last such line)",
    ]
    assert any("taking longer" in r.getMessage() for r in caplog.records if r.levelno == 10)
