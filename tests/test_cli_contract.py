"""The command line as integrators meet it (issue 12, part 5): real processes, real files.

Help on every option, --version, exit 78 for every config error (2 stays for usage), device URLs
checked when the config loads, `hub token --out`, `status` refusing another gate's answer, no
traceback on a closed pipe, plurals, `keys init` over existing keys, `issue` saying its validity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest

from agent.app import config as cfg
from agent.app.cli_args import build_parser
from agent.errors import ConfigError
from agent.issuer import Issuer
from tests import needs
from tests.conftest import WriteConfig
from tests.hubproc import HubProcess, write_hub_config

EXE = (sys.executable, "-m", "agent")
EX_CONFIG = 78


def ga(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command's parser, with the words that reach it."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


def test_every_option_of_every_command_has_help() -> None:
    commands = _commands(build_parser())
    assert len(commands) >= 15  # gate-agent, keys init/export, issue, ..., hub token/revoke
    for path, parser in commands:
        shown = ga(*path, "--help", timeout=30)
        assert shown.returncode == 0, (path, shown.stderr)
        text = " ".join(shown.stdout.split())  # argparse wraps help text
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            name = action.option_strings[-1] if action.option_strings else action.metavar
            assert action.help and action.help != argparse.SUPPRESS, (path, name)
            assert " ".join(action.help.split()[:4]) in text, (path, name, action.help)


def test_version() -> None:
    done = ga("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"gate-agent {metadata.version('gate-agent')}"


# -- exit codes: 78 for config errors, 2 for usage ---------------------------------------------


def test_a_bad_device_url_is_a_config_error_naming_the_key(write_config: WriteConfig) -> None:
    unknown = write_config(gate="nfc://reader")
    for command in (("run",), ("selftest",), ("check", "TK1:X"), ("events",)):
        done = ga(*command, "--config", unknown)
        assert done.returncode == EX_CONFIG, (command, done.stderr)
        assert done.stderr.strip().splitlines() == [
            f"gate-agent: error: {unknown}: [devices] gate: no gate driver for 'nfc://reader'"
            " (valid schemes: gpio://, lcus://, sim://)"
        ]
    bad_parameter = write_config(scanner="camera:///dev/video0?widht=640")
    done = ga("run", "--config", bad_parameter)
    assert done.returncode == EX_CONFIG
    assert f"{bad_parameter}: [devices] scanner: " in done.stderr
    assert "unknown parameter widht" in done.stderr and "Traceback" not in done.stderr


def test_device_urls_are_checked_without_importing_hardware_libraries(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    path = write_config(
        scanner="camera:///dev/video9?width=640&engine=zxing&formats=qr,aztec",
        gate="gpio://gpiochip0?relay=GPIO17",
    )
    probe = (
        "import sys; from pathlib import Path; from agent.app import config;"
        f" config.load(Path({str(path)!r}));"
        " hw = ('cv2', 'gpiod', 'serial', 'serial_asyncio_fast', 'evdev', 'zxingcpp', 'pyzbar');"
        " print(sorted(m for m in sys.modules if m.split('.')[0] in hw))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    with pytest.raises(ConfigError, match=r"\[devices\] gate: .*relay"):
        cfg.load(write_config(gate="gpio://gpiochip0?relay=GPIO17&relay=GPIO18&pulse_ms=x"))


def test_missing_files_are_named_with_their_config_key(
    write_config: WriteConfig, keys_dir: Path
) -> None:
    (keys_dir / "root.pub").unlink()
    path = write_config()
    done = ga("check", "--config", path, "TK1:X")
    assert done.returncode == EX_CONFIG
    assert f"{path}: [trust] root_key: " in done.stderr and "root.pub" in done.stderr
    hub = write_config(
        extra='\n[hub]\nurl = "https://127.0.0.1:1"\ntoken = "t"\nca = "no-ca.pem"\n'
    )
    done = ga("run", "--config", hub)
    assert done.returncode == EX_CONFIG
    assert f"{hub}: [hub] ca: {hub.parent / 'no-ca.pem'}: no such file" in done.stderr


def test_usage_errors_still_exit_2(issued: Path) -> None:
    for args, words in (
        (("issue", "--keys", issued / "keys", "--event", "1", "--count", "0", "--out", issued),
         "--count must be"),
        (("check", "--keys", issued / "keys", "--image", "/nonexistent.png"), "no such image"),
        (("check", "--keys", issued / "keys", "--frobnicate", "x"), "unrecognized arguments"),
        (("events", "--last", "0", "--config", "/nonexistent.toml"), "--last must be >= 1"),
        # Numbers are ASCII digits: int() takes a full-width 1, "+1" and "1_0" (zone 10).
        (("issue", "--keys", issued / "keys", "--event", "\uff11", "--out", issued),
         "argument --event: expected a whole number (digits 0-9), got '\uff11'"),
        (("issue", "--keys", issued / "keys", "--event", "1", "--zones", "3,+1,1_0", "--out", issued),
         "argument --zones: expected numbers separated by commas, got '3,+1,1_0'"),
        (("events", "--last", "-5", "--config", "/nonexistent.toml"), "argument --last/-n"),
        # Found in a user trial: these were taken (an empty path is the current folder: root
        # keys written there; a ticket for no zone; a zone twice; a traceback for ".").
        (("events", "--last", "9" * 26, "--config", "/nonexistent.toml"),
         "argument --last/-n: expected a whole number of at most 19 digits, got 26"),
        (("keys", "init", ""), "argument dir: expected a path, got an empty string"),
        (("keys", "issuer", " "), "argument dir: expected a path, got an empty string"),
        (("issue", "--keys", issued / "keys", "--event", "1", "--out", ""),
         "argument --out: expected a path, got an empty string"),
        (("issue", "--keys", issued / "keys", "--event", "1", "--zones", "", "--out", issued),
         "argument --zones: expected numbers separated by commas, got ''"),
        (("issue", "--keys", issued / "keys", "--event", "1", "--zones", "1,2,1", "--out", issued),
         "argument --zones: 1: given twice"),
        (("keys", "init", issued / "k2", "--events", ","), "argument --events: expected numbers"),
        (("wallet", "key", "."), ".: expected a file name for the device key"),
        (("check", "--keys", issued / "keys", "TK1:\udcff"),
         "argument text: not valid UTF-8 text (a ticket's text is ASCII)"),
        (("wallet", "key", "a\x01b"),
         "argument KEYFILE: a path of characters that print (no control characters), got 'a\\x01b'"),
    ):  # fmt: skip
        done = ga(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert words in done.stderr and "Traceback" not in done.stderr


def test_check_with_a_missing_config_exits_78() -> None:
    done = ga("check", "--config", "/nonexistent.toml", "TK1:X")
    assert done.returncode == EX_CONFIG and "config file not found" in done.stderr


# -- keys init, issue, revoke: what they say ---------------------------------------------------


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("contract")
    assert ga("keys", "init", d / "keys").returncode == 0
    return d


def test_keys_init_over_existing_keys_names_force_and_warns(tmp_path: Path) -> None:
    assert ga("keys", "init", tmp_path / "k").returncode == 0
    before = (tmp_path / "k" / "root.pub").read_bytes()
    again = ga("keys", "init", tmp_path / "k")
    assert again.returncode == 2
    assert "--force" in again.stderr and "invalidates every ticket" in again.stderr
    assert (tmp_path / "k" / "root.pub").read_bytes() == before
    forced = ga("keys", "init", tmp_path / "k", "--force")
    assert forced.returncode == 0
    assert "warning: a new root key: every ticket issued before" in forced.stderr
    assert (tmp_path / "k" / "root.pub").read_bytes() != before
    fresh = ga("keys", "init", tmp_path / "new", "--force")
    assert fresh.returncode == 0 and "warning" not in fresh.stderr


def test_issue_says_what_validity_the_tickets_get(issued: Path, tmp_path: Path) -> None:
    keys = issued / "keys"
    one = ga("issue", "--keys", keys, "--event", "4", "--out", tmp_path / "a")
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines() == [
        f"1 ticket written to {tmp_path / 'a'}",
        "valid for event 4, every zone (1-16), at any time: no validity window"
        " (set one with --not-before/--not-after)",
    ]
    two = ga(
        "issue", "--keys", keys, "--event", "4", "--zones", "2,3", "--count", "2",
        "--not-before", "2026-05-01T18:00:00Z", "--out", tmp_path / "b",
    )  # fmt: skip
    assert two.stdout.splitlines() == [
        f"2 tickets written to {tmp_path / 'b'}",
        "valid for event 4, zones 2,3, from 2026-05-01 18:00 UTC, with no end"
        " (--not-after sets one)",
    ]


def test_issue_refuses_an_event_its_key_may_not_sign(tmp_path: Path) -> None:
    """Found trying the product: keys made for event 1 wrote tickets for event 2 (exit 0, a log
    warning), which every gate then refused as key_not_valid."""
    assert ga("keys", "init", tmp_path / "k", "--events", "1,3").returncode == 0
    done = ga("issue", "--keys", tmp_path / "k", "--event", "2", "--out", tmp_path / "t")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--event 2: issuer key" in done.stderr and "events 1, 3 only" in done.stderr
    assert not (tmp_path / "t").exists()
    assert (
        ga("issue", "--keys", tmp_path / "k", "--event", "3", "--out", tmp_path / "t").returncode
        == 0
    )


def test_revoke_counts_in_words(issued: Path, tmp_path: Path) -> None:
    keys = issued / "keys"
    one = ga("revoke", "--keys", keys, "--out", tmp_path / "1.json", "ab" * 16)
    assert one.stdout.strip() == f"revoke: 1 entry written to {tmp_path / '1.json'}"
    two = ga("revoke", "--keys", keys, "--out", tmp_path / "2.json", "ab" * 16, "cd" * 16)
    assert two.stdout.strip() == f"revoke: 2 entries written to {tmp_path / '2.json'}"
    # The same key twice (found in a user trial: "2 entries written") is one entry.
    same = ga("revoke", "--keys", keys, "--out", tmp_path / "3.json", "ab" * 16, "AB" * 16)
    assert same.stdout.strip() == f"revoke: 1 entry written to {tmp_path / '3.json'}"


def test_issue_says_a_validity_window_that_ends_before_it_starts_in_dates(
    issued: Path, tmp_path: Path
) -> None:
    done = ga(
        "issue", "--keys", issued / "keys", "--event", "1", "--out", tmp_path / "t",
        "--not-before", "2027-01-01", "--not-after", "2026-01-01",
    )  # fmt: skip
    assert done.returncode == 2 and not (tmp_path / "t").exists()
    assert (
        "not_after 2026-01-01 00:00:00 UTC is before not_before 2027-01-01 00:00:00 UTC"
        in done.stderr
    ), done.stderr


# -- a closed pipe -----------------------------------------------------------------------------


def _closed_pipe_run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose reader is already gone, as after `| head -1` exits."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [*EXE, *map(str, args)], stdout=write_end, stderr=subprocess.PIPE, text=True,
            timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)


def test_no_traceback_on_a_closed_pipe(write_config: WriteConfig, iss: Issuer) -> None:
    from tests.test_ops import _decide

    path = write_config()
    asyncio.run(_decide(cfg.load(path), [(iss.ticket(event=1, zones=[1]), "a"), ("NOPE", "a")]))
    events = _closed_pipe_run("events", "--config", path)
    assert events.returncode == 0
    assert events.stderr == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    check = _closed_pipe_run("check", "--config", path, "NOPE")
    assert check.returncode == 1 and check.stderr == ""
    piped = subprocess.run(
        ["bash", "-c", f"{' '.join(EXE)} events --config {path} | head -1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 1
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr


# -- hub token --out ---------------------------------------------------------------------------


def test_hub_token_out_writes_a_private_file_and_never_prints_the_token(
    tmp_path: Path, keys_dir: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    out = tmp_path / "gate-a.token"
    done = ga("hub", "token", "--config", setup.config, "--gate", "gate-a", "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"token written to {out} (mode 0600)"]
    token = out.read_text().strip()
    assert len(token) == 43 and token not in done.stdout + done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    again = ga("hub", "token", "--config", setup.config, "--gate", "gate-a", "--out", out)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"gate-agent: error: --out {out}: already exists; --force replaces it (a token in it"
        " stays valid until `hub token --revoke-gate` or `--revoke-console`)"
    ]
    assert out.read_text().strip() == token
    forced = ga(
        "hub", "token", "--config", setup.config, "--gate", "gate-a", "--out", out, "--force"
    )
    assert forced.returncode == 0 and out.read_text().strip() != token
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == ["gate-a.token", "hub", "keys"]
    # Both tokens exist at the hub: the refused run stored none (2 deleted, not 3).
    revoked = ga("hub", "token", "--config", setup.config, "--revoke-gate", "gate-a")
    assert revoked.stdout.strip() == "2 tokens of gate gate-a deleted"


def test_hub_token_out_that_cannot_be_had_stores_no_token(tmp_path: Path, keys_dir: Path) -> None:
    """Whatever stops the file, no token is stored that nobody holds (found in a user trial: a
    dangling link was refused after the token was stored; a name too long was a traceback)."""
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    dangling = tmp_path / "dangling.token"
    dangling.symlink_to(tmp_path / "nowhere")
    long_name = tmp_path / ("x" * 300)
    for out, why in (
        (dangling, "already exists (a symbolic link); --force replaces it"),
        (long_name, "File name too long"),
        (tmp_path / "no-such-folder" / "t.token", f"no folder {tmp_path / 'no-such-folder'}"),
    ):
        for who in (("--gate", "gate-a"), ("--console", "night")):
            done = ga("hub", "token", "--config", setup.config, *who, "--out", out)
            assert (done.returncode, done.stdout) == (2, ""), done.stderr
            assert f"gate-agent: error: --out {out}: {why}" in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
    # A token the store refuses (a console name taken) leaves no file, not even a staged one.
    assert ga("hub", "token", "--config", setup.config, "--console", "night").returncode == 0
    night = tmp_path / "night.token"
    taken = ga("hub", "token", "--config", setup.config, "--console", "night", "--out", night)
    assert taken.returncode == 2 and "a console token named night exists" in taken.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.token", "hub", "keys"]
    assert dangling.is_symlink() and not dangling.exists()
    # None of the refused runs stored a token: the one console token, no gate token.
    gone = ga("hub", "token", "--config", setup.config, "--revoke-console", "night")
    assert gone.stdout.strip() == "1 token of console night deleted"
    assert ga("hub", "token", "--config", setup.config, "--revoke-gate", "gate-a").returncode == 1


SEQ_RANGE = "expected a gate_seq from 1 to 9223372036854775807"
WHOLE = "expected a whole number (digits 0-9)"


def test_hub_quarantine_refuses_bad_input_and_says_when_nothing_moved(
    tmp_path: Path, keys_dir: Path
) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)

    def quarantine(*args: str) -> subprocess.CompletedProcess[str]:
        return ga("hub", "quarantine", "--config", setup.config, *args)

    for args, message in (
        (("--gate", "gate a!", "--from-seq", "2"), "gate id 'gate a!': expected 1-64 letters"),
        (("--gate", "gate-a", "--from-seq", "0"), f"--from-seq 0: {SEQ_RANGE}"),
        (("--gate", "gate-a", "--from-seq", str(1 << 63)), f"--from-seq {1 << 63}: {SEQ_RANGE}"),
        *(
            (("--gate", "gate-a", "--from-seq", seq), f"argument --from-seq: {WHOLE}, got {seq!r}")
            for seq in ("two", "\uff12", "+2", "1_000", " 2", "-1")
        ),
        # Thousands of digits: refused by their count, quoted cut short.
        (
            ("--gate", "gate-a", "--from-seq", "9" * 5000),
            "expected a whole number of at most 19 digits, got 5,000",
        ),
        (("--from-seq", "2"), "the following arguments are required: --gate"),
    ):
        done = quarantine(*args)
        assert (done.returncode, done.stdout) == (2, ""), args
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    # A gate with a token is never touched; one with no such rows is exit 1 (a typo).
    assert ga("hub", "token", "--config", setup.config, "--gate", "gate-a").returncode == 0
    held = quarantine("--gate", "gate-a", "--from-seq", "2")
    assert held.returncode == 1 and "gate gate-a still has 1 token: revoke" in held.stderr
    none = quarantine("--gate", "gate-b", "--from-seq", "2")
    assert none.returncode == 1 and held.stdout == none.stdout == ""
    assert none.stderr.strip() == (  # a typo, or a gate the hub never knew
        "gate-agent: hub quarantine: no gate gate-b at this hub: it has no token and nothing came"
        " from it (nothing was moved; the id is the one `hub token --gate` was given, case"
        " counts; the console's gate list shows them)"
    )
    # Alerts show gates by name: a name given says whose it is (found in a user trial).
    for gate, name in (("gate-c", "North 3"), ("gate-d", "north-4")):
        made = ga("hub", "token", "--config", setup.config, "--gate", gate, "--name", name)
        assert made.returncode == 0, made.stderr
        named = quarantine("--gate", name, "--from-seq", "2")
        assert (named.returncode, named.stdout) == (2, ""), named.stderr
        assert f"is the name of gate {gate}: --gate {gate}" in named.stderr, named.stderr


def _status(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _body(url: str, token: str) -> str:
    """The message of a refused request."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10):
            return ""
    except urllib.error.HTTPError as exc:
        return str(json.loads(exc.read())["message"])


def test_console_and_issuing_tokens_can_be_revoked_and_names_are_not_shared(
    tmp_path: Path, keys_dir: Path
) -> None:
    """Found by a security trial: a console token (its URL in a browser's history) could not
    be revoked at all; `--console dana` twice gave two tokens both acting as dana; and
    `--revoke-gate` with a mistyped id said "0 tokens ... deleted", exit 0, as if done."""
    bare = write_hub_config(tmp_path / "bare", keys=keys_dir)
    refused = ga("hub", "token", "--config", bare.config, "--issuing", "shop")
    assert refused.returncode == 2 and "an issuing token needs a [wallet] section" in (
        refused.stderr
    )  # (found by the same trial: the endpoint it is for is off without [wallet])
    wallet = f'\n[wallet]\nissuer_keys = "{keys_dir}"\n'
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir, extra=wallet)
    made = ga("hub", "token", "--config", setup.config, "--console", "dana")
    assert made.returncode == 0
    dana = made.stdout.strip()
    again = ga("hub", "token", "--config", setup.config, "--console", "dana")
    assert again.returncode == 2 and again.stdout == ""
    assert "a console token named dana exists: revoke it first (hub token --revoke-console" in (
        again.stderr
    )
    shop = ga("hub", "token", "--config", setup.config, "--issuing", "shop").stdout.strip()
    with HubProcess(setup):
        assert _status(setup.url + "/v1/alerts", dana) == 200
        refusal = _body(setup.url + "/v1/alerts", shop)
        assert refusal == "this needs a console token, not an issuing token", refusal
        done = ga("hub", "token", "--config", setup.config, "--revoke-console", "dana")
        assert done.returncode == 0 and done.stdout.strip() == "1 token of console dana deleted"
        assert _status(setup.url + "/v1/alerts", dana) == 401
        done = ga("hub", "token", "--config", setup.config, "--revoke-issuing", "shop")
        assert done.returncode == 0 and done.stdout.strip() == "1 token of issuing shop deleted"
        assert _status(setup.url + "/v1/alerts", shop) == 401
    for option, name in (("--revoke-gate", "gate-a-typo"), ("--revoke-console", "dana")):
        typo = ga("hub", "token", "--config", setup.config, option, name)
        assert typo.returncode == 1 and typo.stdout == ""
        assert "(nothing deleted)" in typo.stderr
    remade = ga("hub", "token", "--config", setup.config, "--console", "dana")
    assert remade.returncode == 0 and remade.stdout.strip() != dana


@needs.mark(os.geteuid() == 0, "root (--owner gives a file away)")
def test_hub_token_owner_gives_the_file_to_the_service_user(tmp_path: Path, keys_dir: Path) -> None:
    setup = write_hub_config(tmp_path / "hub", keys=keys_dir)
    nobody = pwd.getpwnam("nobody")
    out = tmp_path / "t"
    done = ga(
        "hub", "token", "--config", setup.config, "--console", "desk", "--out", out,
        "--owner", "nobody",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"token written to {out} (mode 0600, owner nobody)"
    st = out.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
        nobody.pw_uid, nobody.pw_gid, 0o600,
    )  # fmt: skip
    for owner, words in (("no-such-user-x", "no user"), ("nobody:no-such-group-x", "no group")):
        bad = ga(
            "hub", "token", "--config", setup.config, "--console", "d2", "--out",
            tmp_path / "u", "--owner", owner,
        )  # fmt: skip
        assert bad.returncode == 2 and words in bad.stderr
        assert not (tmp_path / "u").exists()
    alone = ga("hub", "token", "--config", setup.config, "--console", "d3", "--owner", "nobody")
    assert alone.returncode == 2 and "go with --out" in alone.stderr


# -- status: the configured gate, not another one ----------------------------------------------


def test_status_refuses_the_answer_of_another_gate(
    write_config: WriteConfig, iss: Issuer, tmp_path: Path
) -> None:
    from tests.hubproc import free_port
    from tests.test_ops import _running_gate

    port = free_port()
    proc, path = _running_gate(write_config, iss, port, {})
    try:
        other = tmp_path / "other.toml"
        other.write_text(path.read_text().replace('id = "gate-3"', 'id = "gate-9"'))
        done = ga("status", "--config", other)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"gate-agent: error: http://127.0.0.1:{port}/status is gate 'gate-3', not the"
            f" configured 'gate-9' ({other}): another gate's status server holds this address;"
            " check [status] listen in both configs"
        ]
        assert done.stdout == ""
        assert ga("status", "--config", path).returncode == 0
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_status_says_so_when_the_answer_is_not_in_the_form_it_reads(
    write_config: WriteConfig,
) -> None:
    """Found in a user trial: a /status of the right gate with fields missing (another version
    of the daemon still running after an upgrade) was a traceback."""
    import http.server
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"gate": {"id": "gate-3"}, "health": {"status": "ready"}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = write_config(status={"listen": f"127.0.0.1:{server.server_address[1]}"})
        for args in ((), ("--json",)):
            done = ga("status", "--config", path, *args)
            if args:  # JSON as it came: nothing to read in it
                assert done.returncode == 0 and json.loads(done.stdout)["gate"]["id"] == "gate-3"
                continue
            assert (done.returncode, done.stdout) == (2, ""), done.stderr
            assert "answered, but not in the form this version reads (KeyError:" in done.stderr
            assert "another version?" in done.stderr and "Traceback" not in done.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_check_on_an_unreadable_revocation_store_exits_2(write_config: WriteConfig) -> None:
    """A state file is not the config (found in a user trial: check exited 78 where the gate's
    selftest and the README say 2)."""
    path = write_config()
    state = cfg.load(path).gate.state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / "revocations.db").write_bytes(b"not a database, whatever its name says" * 100)
    done = ga("check", "--config", path, "TK1:X")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert "revocations.db: cannot read the revocation store: file is not a database" in done.stderr
