"""Rotating tickets (TK2, issue 17 parts 1, 2 and 5): the format, the gate's decision on codes,
and the command line that issues them and makes codes as a holder's device would."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import keys, tickets
from agent.app import config
from agent.app.daemon import open_gate
from agent.errors import TicketFormatError
from agent.issuer import Issuer
from agent.journal import Journal, read_history
from agent.model import Reason
from agent.ports import Scan
from agent.tickets import base45, tk2
from agent.wallet import device_public_bytes
from tests.conftest import WriteConfig

EXE = [sys.executable, "-m", "agent"]


@pytest.fixture
def device() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _bound(iss: Issuer, device: ec.EllipticCurvePrivateKey, **kw: object) -> str:
    return iss.rotating_ticket(tk2.compressed(device.public_key()), event=1, **kw)  # type: ignore[arg-type]


def _scan(text: str, n: int) -> Scan:
    return Scan(text, "s1", n * 10_000_000_000)  # 10 s apart: never one presentation


# --- the format --------------------------------------------------------------------------------


def test_a_code_is_292_characters_and_fits_qr_version_10_m(
    iss: Issuer, device: ec.EllipticCurvePrivateKey
) -> None:
    code = tk2.make_code(_bound(iss, device, zones=[1, 3]), device, int(time.time()))
    assert len(code) == tk2.TEXT_LEN == 292 and len(base45.decode(code[4:])) == tk2.BODY_LEN == 192
    symbol = zxingcpp.create_barcode(code, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    modules = symbol.to_image(scale=1, add_quiet_zones=False).shape[0]
    assert symbol.ec_level == "M" and modules == 17 + 4 * 10  # QR version 10
    ticket = tickets.parse(code)
    assert ticket.fmt == "tk2" and ticket.zones == 0b101 and ticket.holder is not None
    assert ticket.holder.device_key == tk2.compressed(device.public_key())


def test_strict_parsing_names_what_is_wrong(
    iss: Issuer, device: ec.EllipticCurvePrivateKey
) -> None:
    code = tk2.make_code(_bound(iss, device), device, 1_800_000_000)
    body = bytearray(base45.decode(code[4:]))
    wrong_version = bytearray(body)
    wrong_version[0] = 2
    not_a_point = bytearray(body)
    not_a_point[tk2.FIELDS_LEN - tk2.KEY_LEN] = 4  # an uncompressed point's tag
    for text, message in (
        (code[:-3], "expected 292 characters"),
        (code + "AAA", "expected 292 characters"),
        ("TK2:" + base45.encode(bytes(wrong_version)), "unsupported version 2"),
        ("TK2:" + base45.encode(bytes(not_a_point)), "not a compressed P-256 point"),
        ("TK2:" + "a" * 288, "base45"),
    ):
        with pytest.raises(TicketFormatError, match=message):
            tickets.parse(text)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_codes_never_crash_the_parser(
    iss: Issuer, device: ec.EllipticCurvePrivateKey, data: st.DataObject
) -> None:
    code = tk2.make_code(_bound(iss, device), device, 1_800_000_000)
    body = bytearray(base45.decode(code[4:]))
    at = data.draw(st.integers(0, len(body) - 1))
    body[at] ^= data.draw(st.integers(1, 255))
    try:
        ticket = tickets.parse("TK2:" + base45.encode(bytes(body)))
    except TicketFormatError:
        return
    assert ticket.holder is not None
    if at >= tk2.STATIC_LEN + 4:  # the device's signature itself: it must no longer verify
        assert not tk2.device_signature_ok(ticket.holder)


def test_a_code_needs_the_bound_device_key(iss: Issuer, device: ec.EllipticCurvePrivateKey) -> None:
    static = _bound(iss, device)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="not the one the ticket is bound to"):
        tk2.make_code(static, other, 1_800_000_000)


# --- the gate's decision -----------------------------------------------------------------------


async def test_gate_admits_a_fresh_code_and_refuses_replays_and_other_devices(
    write_config: WriteConfig, iss: Issuer, device: ec.EllipticCurvePrivateKey
) -> None:
    static = _bound(iss, device)
    now = int(time.time())
    fresh = tk2.make_code(static, device, now)
    conf = config.load(write_config(entry="reentry"))
    async with open_gate(conf) as gate:
        first = await gate.lane.present(_scan(fresh, 0))
        assert first is not None
        assert first.decision.admitted, first.decision
        assert first.record is not None and first.record.code_time == now

        # The same code again (a screenshot taken of it), or an older one: code_expired.
        for n, text in enumerate((fresh, tk2.make_code(static, device, now - 5)), start=1):
            again = await gate.lane.present(_scan(text, n))
            assert again is not None and again.decision.reason is Reason.CODE_EXPIRED
            assert "not newer than one already used" in again.decision.detail

        # A copied static part with a code signed by another device's key: bad_signature.
        thief = ec.generate_private_key(ec.SECP256R1())
        body = base45.decode(fresh[4:])
        stolen = tk2.code_message(body[: tk2.STATIC_LEN], now + 1)
        signed_by_thief = "TK2:" + base45.encode(
            body[: tk2.STATIC_LEN] + (now + 1).to_bytes(4, "big") + keys.sign(thief, stolen)
        )
        refused = await gate.lane.present(_scan(signed_by_thief, 5))
        assert refused is not None and refused.decision.reason is Reason.BAD_SIGNATURE
        assert "device" in refused.decision.detail

        # Past the window (30 s + 5 s skew) or ahead of the gate's clock: code_expired.
        other = _bound(iss, device)
        for n, at in enumerate((now - 40, now + 60), start=6):
            late = await gate.lane.present(_scan(tk2.make_code(other, device, at), n))
            assert late is not None and late.decision.reason is Reason.CODE_EXPIRED
        rows = await gate.journal.tail(20)
    assert [r.reason for r in rows] == [
        "ok", "code_expired", "code_expired", "bad_signature", "code_expired", "code_expired",
    ]  # fmt: skip


async def test_a_static_part_shown_at_the_gate_says_so_and_finds_the_tickets_rows(
    write_config: WriteConfig, iss: Issuer, device: ec.EllipticCurvePrivateKey
) -> None:
    """Found in a user trial: a holder showing the ticket as issued (TK2S:) got "not a ticket",
    and events --ticket refused that text though revoke takes it."""
    static = _bound(iss, device)
    path = write_config()
    async with open_gate(config.load(path)) as gate:
        shown = await gate.lane.present(_scan(static, 0))
        assert shown is not None and shown.decision.reason is Reason.INVALID_FORMAT
        assert "static part (TK2S:), not a code" in shown.decision.detail
        admitted = await gate.lane.present(
            _scan(tk2.make_code(static, device, int(time.time())), 1)
        )
        assert admitted is not None and admitted.decision.admitted
    found = await asyncio.to_thread(_cli, "events", "--config", path, "--ticket", static)
    assert found.returncode == 0, found.stderr
    (line,) = found.stdout.splitlines()
    assert "ADMIT ok" in line and tickets.parse(_code(static, device)).short_id in line


def _code(static: str, device: ec.EllipticCurvePrivateKey) -> str:
    return tk2.make_code(static, device, int(time.time()))


async def test_window_and_skew_come_from_the_policy(
    write_config: WriteConfig, iss: Issuer, device: ec.EllipticCurvePrivateKey
) -> None:
    now = int(time.time())
    conf = config.load(
        write_config(policy={"entry": "single", "rotating_window_s": 120, "rotating_skew_s": 0})
    )
    async with open_gate(conf) as gate:
        old = await gate.lane.present(
            _scan(tk2.make_code(_bound(iss, device), device, now - 100), 0)
        )
        assert old is not None and old.decision.admitted
        ahead = await gate.lane.present(
            _scan(tk2.make_code(_bound(iss, device), device, now + 3), 1)
        )
        assert ahead is not None and ahead.decision.reason is Reason.CODE_EXPIRED


def test_bad_policy_values_are_config_errors(write_config: WriteConfig) -> None:
    from agent.errors import ConfigError

    for key, value in (("rotating_window_s", 2), ("rotating_skew_s", 301)):
        with pytest.raises(ConfigError, match=key):
            config.load(write_config(policy={"entry": "single", key: value}))


async def test_a_schema_1_journal_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    from agent.clock import Clock

    path = tmp_path / "j.db"
    clock = Clock(None, assume="synced")
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        from agent.model import Decision, Verdict

        await j.record(
            ticket_ref="tk1:00", kind="entry", decision=Decision(Verdict.ADMIT, Reason.OK),
            lane="in", rev_version=1,
        )  # fmt: skip
    with sqlite3.connect(path, isolation_level=None) as db:  # back to schema 1, as it shipped
        db.executescript(
            "BEGIN; DROP TRIGGER entries_no_update; ALTER TABLE entries DROP COLUMN code_time;"
            "ALTER TABLE entries DROP COLUMN rev_key; ALTER TABLE entries DROP COLUMN order_hlc;"
            "DROP TABLE alerts; ALTER TABLE peer_entries DROP COLUMN claimed;"
            "PRAGMA user_version = 1; COMMIT;"
        )
    # `check --config` reads it as it is, before the daemon upgrades it (a trial: no code_time).
    (seen,) = read_history(path, "tk1:00", "Gate 1")
    assert seen.kind == "entry" and seen.code_time is None
    async with await Journal.open(path, gate_id="g1", gate_name="Gate 1", clock=clock) as j:
        [row] = await j.tail(5)
        assert row.ticket_ref == "tk1:00" and row.code_time is None
        assert (await j.check()) == []
    with sqlite3.connect(path) as db:
        # through 2, 3, 4 and 5, to today's
        assert db.execute("PRAGMA user_version").fetchone() == (6,)
        assert db.execute("SELECT count(*) FROM alerts").fetchone() == (0,)
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            db.execute("UPDATE entries SET code_time = 5")
        assert [r[1] for r in db.execute("PRAGMA table_info(entries)")][-1] == "order_hlc"


# --- the command line --------------------------------------------------------------------------


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_issue_wallet_code_and_check(keys_dir: Path, tmp_path: Path) -> None:
    key = tmp_path / "phone.pem"
    made = _cli("wallet", "key", key)
    assert made.returncode == 0, made.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    assert _cli("wallet", "key", key).returncode == 2  # never overwritten

    out = tmp_path / "out"
    issued = _cli("issue", "--keys", keys_dir, "--event", "1", "--device-key", f"{key}.pub",
                  "--out", out)  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    assert "1 rotating ticket written" in issued.stdout
    assert sorted(p.name for p in out.iterdir()) == ["ticket-0001.txt"]  # no image: not a code
    ticket = out / "ticket-0001.txt"

    code = _cli("wallet", "code", "--ticket", ticket, "--device-key", key)
    assert code.returncode == 0, code.stderr
    text = code.stdout.strip()
    assert text.startswith("TK2:") and len(text) == 292
    ok = _cli("check", "--keys", keys_dir, text)
    assert ok.returncode == 0 and "ADMIT" in ok.stdout and "holder's device" in ok.stdout

    old = _cli("wallet", "code", "--ticket", ticket, "--device-key", key,
               "--at", "2026-01-01T12:00:00Z")  # fmt: skip
    denied = _cli("check", "--keys", keys_dir, old.stdout.strip())
    assert denied.returncode == 1 and "code_expired" in denied.stdout
    assert "Old code or screenshot - open the ticket in the app" in denied.stdout


def test_cli_refuses_keys_and_files_it_cannot_use(keys_dir: Path, tmp_path: Path) -> None:
    ed_pub = tmp_path / "issuer.pub"  # an Ed25519 key: not a device key
    ed_pub.write_bytes(keys.public_pem(Issuer.load(keys_dir).issuer_key))
    key = tmp_path / "phone.pem"
    assert _cli("wallet", "key", key).returncode == 0
    other = tmp_path / "other.pem"
    assert _cli("wallet", "key", other).returncode == 0
    out = tmp_path / "out"
    public = tmp_path / "phone.pem.pub"
    assert _cli("issue", "--keys", keys_dir, "--event", "1", "--device-key", public,
                "--out", out).returncode == 0  # fmt: skip
    tk1_file = tmp_path / "tk1.txt"
    tk1_file.write_text(Issuer.load(keys_dir).ticket(event=1) + "\n")
    for args, message in (
        (("issue", "--keys", keys_dir, "--event", "1", "--device-key", ed_pub, "--out", out),
         "must be P-256"),
        (("wallet", "code", "--ticket", out / "ticket-0001.txt", "--device-key", other),
         "not the one the ticket is bound to"),
        (("wallet", "code", "--ticket", tk1_file, "--device-key", key), "not a rotating ticket"),
        (("wallet", "code", "--ticket", out / "ticket-0001.txt", "--device-key", ed_pub),
         f"error: {ed_pub}: not an unencrypted PEM private key"),  # the file named once
    ):  # fmt: skip
        done = _cli(*args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert device_public_bytes(public)[0] in (2, 3)


def test_revoke_takes_the_code_or_the_static_part(keys_dir: Path, tmp_path: Path) -> None:
    key = tmp_path / "phone.pem"
    assert _cli("wallet", "key", key).returncode == 0
    out = tmp_path / "out"
    assert _cli("issue", "--keys", keys_dir, "--event", "1", "--device-key", f"{key}.pub",
                "--out", out).returncode == 0  # fmt: skip
    static = (out / "ticket-0001.txt").read_text().strip()
    code = _cli("wallet", "code", "--ticket", out / "ticket-0001.txt", "--device-key", key)
    text = code.stdout.strip()
    deltas: list[str | Path] = []
    for n, item in enumerate((static, text)):
        delta = tmp_path / f"rev-{n}.json"
        done = _cli("revoke", "--keys", keys_dir, "--out", delta, "--op", ("revoke", "unrevoke")[n],
                    item)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert static not in done.stdout + done.stderr and text not in done.stdout + done.stderr
        deltas += ["--revocations", delta]
        checked = _cli("check", "--keys", keys_dir, *deltas, text)
        # revoked by its static part, then unrevoked by its code: the same key both times
        assert checked.returncode == (1, 0)[n], checked.stdout
