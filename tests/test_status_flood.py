"""The status server is bounded (issue 10, part 6): a crowd of status clients cannot stop the lane.

The real daemon (`gate-agent run` as its own process, a socket scanner, a real journal and list)
with ``max_streams = 4``: stream attempts over the cap are refused with 503 at once, the streams
within it still get every decision, and the gate decides every scan meanwhile. In-process: a
display that stops reading is closed rather than buffered for, and the pacer parks a bounded number
of requests. The lane's latency under 1,500 stream attempts is measured by
tests/bench/bench_status_flood.py, not here.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from agent import tickets
from agent.app import config as cfg
from agent.app import status
from agent.app.daemon import open_gate
from agent.app.status import StatusServer
from agent.app.status_bounds import Listener, Pacer, listen_socket
from agent.errors import ConfigError
from agent.issuer import Issuer
from agent.lane import Outcome
from agent.model import Decision, Reason, Verdict
from agent.ports import Scan
from drivers.sim import SimGate, SimScanner
from tests.conftest import WriteConfig
from tests.hubproc import free_port, fresh_list, running_gate
from tests.polling import until

CAP = 4
OVER = 600  # attempts over the cap
SCANS = 30
UNBOUNDED = aiohttp.ClientTimeout(total=None, sock_read=None)


@asynccontextmanager
async def _daemon(write_config: WriteConfig, iss: Issuer, tmp_path: Path) -> AsyncIterator[str]:
    """`gate-agent run` with a fresh list and the status server on a free port, ready; its URL."""
    port = free_port()
    path = write_config(
        revocations=[fresh_list(iss, write_config().parent)],
        scanner="sim://socket?path=scan.sock",
        gate="sim://gate?passage_ms=0",
        status={"listen": f"127.0.0.1:{port}", "max_streams": CAP},
    )
    url = f"http://127.0.0.1:{port}"
    async with running_gate(path, url, tmp_path / "gate.log"):
        yield url


async def _status_of(http: aiohttp.ClientSession, url: str) -> int:
    try:
        async with http.get(url) as r:
            await r.read()
            return r.status
    except aiohttp.ClientError:
        return 0


async def _follow(http: aiohttp.ClientSession, url: str, seen: list[str]) -> None:
    """A staff display: the ticket short id of every decision it is sent, in ``seen``."""
    async with http.get(url + "/display/events") as r:
        assert r.status == 200
        async for line in r.content:
            if line.startswith(b"data:"):
                message = json.loads(line[5:])
                if "decision" in message:
                    seen.append(message["decision"]["ticket"])
                elif "hello" in message:
                    seen.append("")  # the greeting (state changes and heartbeats are not kept)


async def _refused(http: aiohttp.ClientSession, url: str) -> tuple[int, str | None, object]:
    """A stream attempt: (status, Retry-After, the error); a stream that opens is left at once."""
    async with http.get(url + "/display/events") as r:
        if r.status != 503:
            return r.status, None, None
        return r.status, r.headers.get("Retry-After"), (await r.json())["error"]


async def test_streams_over_the_cap_get_503_at_once_and_the_gate_keeps_deciding(
    write_config: WriteConfig, iss: Issuer, tmp_path: Path
) -> None:
    texts = [iss.ticket(event=1, zones=[1]) for _ in range(SCANS)]
    ids = [tickets.parse(t).short_id for t in texts]
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        _daemon(write_config, iss, tmp_path) as url,
        aiohttp.ClientSession(connector=connector, timeout=UNBOUNDED) as http,
    ):
        seen: list[list[str]] = [[] for _ in range(CAP)]
        displays = [asyncio.create_task(_follow(http, url, s)) for s in seen]
        await until(_all_greeted(seen), 30.0, "every display greeted")

        t0 = time.monotonic()
        answers = await asyncio.gather(*(_refused(http, url) for _ in range(OVER)))
        took = time.monotonic() - t0
        assert set(answers) == {(503, "15", "too many display streams")}
        # Taking turns from the pacer, the last refusal would come after this; new connections
        # are accepted faster (status.ACCEPTS_PER_S) and a refusal takes no turn.
        pacer_s = (OVER - status.REQUEST_BURST) / status.REQUESTS_PER_S
        assert pacer_s - OVER / status.ACCEPTS_PER_S > 2  # room for a loaded machine
        assert took < pacer_s, f"{OVER} refusals took {took:.1f} s: they waited for the pacer"

        stop = asyncio.Event()
        flood = asyncio.create_task(_keep_refused(http, url, stop))
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(tmp_path / "scan.sock"))
            for text in texts:
                sock.sendall(text.encode() + b"\n")
        await until(_all_got(seen, ids), 30.0, "every decision on every display within the cap")
        assert await _status_of(http, url + "/healthz") == 200
        stop.set()
        assert set(await flood) == {503}
        await until(lambda: _admitted(http, url, SCANS), 30.0, f"{SCANS} admissions in /status")
        for display in displays:
            display.cancel()
        await asyncio.gather(*displays, return_exceptions=True)
        # The displays that left give their slots back: a new one is let in.
        await until(lambda: _opens(http, url), 30.0, "a stream opens once the others closed")


def _all_greeted(seen: list[list[str]]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return all(s[:1] == [""] for s in seen)

    return check


def _all_got(seen: list[list[str]], ids: list[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        for s in seen:
            assert len(s) <= len(ids) + 1, "a decision was sent twice"
        return all(s == ["", *ids] for s in seen)

    return check


async def _keep_refused(http: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> list[int]:
    """50 clients asking for a stream again and again; every answer's status."""
    statuses: list[int] = []

    async def one() -> None:
        while not stop.is_set():
            statuses.append((await _refused(http, url))[0])

    await asyncio.gather(*(one() for _ in range(50)))
    return statuses


async def _admitted(http: aiohttp.ClientSession, url: str, n: int) -> bool:
    async with http.get(url + "/status") as r:
        return bool((await r.json())["last_hour"] == {"admitted": n, "denied": 0})


async def _stream_status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as r:
        return r.status


async def _opens(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url + "/display/events") as r:
        if r.status != 200:
            return False
        assert (await r.content.readline()).startswith(b"data:")  # the greeting
        return True


async def test_a_display_that_stops_reading_is_dropped_not_buffered(
    write_config: WriteConfig,
) -> None:
    conf = cfg.load(write_config())
    denied = Outcome(
        Scan("NOT-A-TICKET", "s", 0), None, Decision(Verdict.DENY, Reason.INVALID_FORMAT), None,
        1000, lane="in",
    )  # fmt: skip
    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate()) as gate:
        server = StatusServer(gate, port=0, max_streams=1)
        await server.start()
        url = f"http://127.0.0.1:{server.port}/display/events"
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /display/events HTTP/1.1\r\nHost: gate\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            async with aiohttp.ClientSession(timeout=UNBOUNDED) as http:
                assert await _stream_status(http, url) == 503  # the one slot is taken
                sent, deadline = 0, time.monotonic() + 60
                # Decisions keep coming while this display reads nothing: once what the kernel
                # and the transport hold is full, it falls behind and is closed.
                while await _stream_status(http, url) == 503:
                    assert time.monotonic() < deadline, f"still open after {sent} events"
                    for _ in range(200):
                        server.observe(denied)
                        sent += 1
                        # the scenario: the stream's writer runs between decisions
                        await asyncio.sleep(0)
            got = (await asyncio.wait_for(reader.read(), 30)).count(b"data:")
            assert 0 < got < sent  # what it had been sent, then the end of the stream
            writer.close()
        finally:
            await server.close()


async def test_pacer_parks_at_most_max_parked() -> None:
    pacer = Pacer(rate=10.0, burst=1, max_parked=2)
    assert await pacer.turn() is True  # the burst
    parked = [asyncio.create_task(pacer.turn()) for _ in range(2)]
    await until(lambda: pacer.parked == 2, 5, "both turns parked")
    assert await pacer.turn() is False  # a third would park: refused at once, taking no slot
    assert await asyncio.gather(*parked) == [True, True]
    assert await pacer.turn() is True


@pytest.mark.parametrize("value", [0, 257, "16"])
def test_max_streams_out_of_range_names_the_key(write_config: WriteConfig, value: object) -> None:
    path = write_config(status={"max_streams": value})
    with pytest.raises(ConfigError) as err:
        cfg.load(path)
    assert str(err.value).startswith(str(path))
    assert "[status] max_streams" in str(err.value)
    assert cfg.load(write_config(status={"max_streams": 256})).status.max_streams == 256


async def test_every_stream_gets_keep_alives_while_no_decision_comes(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status, "_KEEPALIVE_S", 0.05)
    conf = cfg.load(write_config())
    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate()) as gate:
        server = StatusServer(gate, port=0, max_streams=2)
        await server.start()
        url = f"http://127.0.0.1:{server.port}/display/events"
        try:
            async with aiohttp.ClientSession(timeout=UNBOUNDED) as http:
                a, b = [await http.get(url) for _ in range(2)]
                for r in (a, b):
                    assert (await r.content.readline()).startswith(b"data:")  # the greeting
                    assert await r.content.readline() == b"\n"
                    comment = await asyncio.wait_for(r.content.readline(), 10)
                    assert comment == b": keep-alive\n"
                    r.close()
        finally:
            await server.close()


async def test_listener_accepts_a_crowd_at_its_rate_the_rest_wait_in_the_kernel() -> None:
    # 20 connections at once against 50/s, 4 at a time: 4 at once, then one every 20 ms.
    loop = asyncio.get_running_loop()
    accepted: list[float] = []

    class Note(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(loop.time())

    sock = listen_socket("127.0.0.1", 0, 64)
    listener = Listener(sock, Note, rate=50.0, per_wake=4)
    port = sock.getsockname()[1]
    try:
        t0 = loop.time()
        clients = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(20))
        )
        await until(_count(accepted, 20), 10.0, "every connection accepted")
        starts = sorted(t - t0 for t in accepted)
        assert starts[3] < 0.5  # the first four do not wait for a slot
        for i in range(4, 20):
            assert starts[i] >= (i - 3) * 0.02 - 0.002  # never earlier than its slot
        for _, writer in clients:
            writer.close()
    finally:
        listener.close()
        listener.close()  # idempotent
    assert sock.fileno() == -1


def _count(items: list[float], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(items) >= n

    return check


async def test_connections_that_send_no_request_are_capped_and_closed(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in a user trial: 400 clients that connected and sent half a request held as many
    descriptors for good; the daemon ran out and a scan waited 25 s for its scanner's socket."""
    monkeypatch.setattr(status, "HEADER_TIMEOUT_S", 1.0)
    monkeypatch.setattr(status, "REQUESTS_PARKED", 8)
    monkeypatch.setattr(status, "MAX_CONNECTIONS_BASE", 8)
    cap = 8 + 1 + 8  # parked requests, the one stream, the base
    conf = cfg.load(write_config())
    held: list[asyncio.StreamWriter] = []

    async def half_request() -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /status HTTP/1.1\r\nHost: gate\r\n")  # no blank line: never ends
        held.append(writer)
        return reader

    async with open_gate(conf, scanner=SimScanner(), gate_io=SimGate()) as gate:
        server = StatusServer(gate, port=0, max_streams=1)
        await server.start()
        try:
            readers = [await half_request() for _ in range(cap)]
            over = await asyncio.wait_for((await half_request()).read(), 30)
            assert over.startswith(b"HTTP/1.1 503") and b"Retry-After: 5\r\n" in over, over
            assert over.endswith(b'{"error": "too many open connections"}'), over
            # Without a request head in time, each is closed (at HEADER_TIMEOUT_S): EOF.
            ends = await asyncio.gather(*(asyncio.wait_for(r.read(), 30) for r in readers))
            assert ends == [b""] * cap
            async with (
                aiohttp.ClientSession(timeout=UNBOUNDED) as http,
                http.get(f"http://127.0.0.1:{server.port}/status") as r,
            ):
                assert r.status == 200  # the slots are free again
        finally:
            for writer in held:
                writer.close()
            await server.close()


def test_off_loopback_one_address_may_hold_a_quarter_of_the_connections() -> None:
    """A review: on a LAN address one host could take every slot from displays and monitoring."""
    assert [status.is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.1.2.3")] == [
        True
    ] * 4
    assert [status.is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "gate.local")] == [
        False
    ] * 4
