"""`gate-agent check --pretix-event`: every real pretix case gives its expected verdict.

Most cases run in-process through :func:`agent.app.cli.main` (the same argument parsing and output as
the command), a few as real processes for the exit codes and --json a script sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.app import cli

VECTORS = Path(__file__).resolve().parent / "vectors" / "pretix"
AT = "2026-11-23T12:00:00Z"  # inside 2026-06-01T10:00:00Z..2089-06-30T21:59:59Z
# The ends of the range in which every `expect` holds (README), checked as well.
RANGE_ENDS = ("2026-06-01T10:00:00Z", "2089-06-30T21:59:59Z")
EXE = [sys.executable, "-m", "agent"]


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


CASES: list[dict[str, Any]] = _load("tickets.json") if VECTORS.is_dir() else []


def _case(name: str) -> dict[str, Any]:
    return next(c for c in CASES if c["name"] == name)


def _body(file: str, name: str) -> Any:
    return next(r for r in _load(file)["responses"] if r["name"] == name)["response"]["body"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """pretix's own response bodies, one per file, as a user would save them with curl."""
    d = tmp_path_factory.mktemp("pretix")
    out = {"event": d / "event.json", "revoked": d / "revoked.json", "blocked": d / "blocked.json"}
    out["event"].write_text((VECTORS / "event.json").read_text())
    out["revoked"].write_text(json.dumps(_body("revoked_secrets.json", "revoked_full_2")))
    out["blocked"].write_text(json.dumps(_body("blocked_secrets.json", "blocked_full_2")))
    for cl in _load("checkin_lists.json")["results"]:
        out[f"list{cl['id']}"] = d / f"list{cl['id']}.json"
        out[f"list{cl['id']}"].write_text(json.dumps(cl))
    return out


def _args(files: dict[str, Path], case: dict[str, Any], at: str) -> list[str]:
    return [
        "check",
        "--pretix-event", str(files["event"]),
        "--pretix-list", str(files[f"list{case['checkin_list']}"]),
        "--pretix-revoked", str(files["revoked"]),
        "--pretix-blocked", str(files["blocked"]),
        "--at", at,
        "--json",
        case["secret"],
    ]  # fmt: skip


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = cli.main(args)
    out = capsys.readouterr().out
    return code, json.loads(out)


def _iso(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("at", [AT, *RANGE_ENDS])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_every_case_gives_its_expected_verdict(
    case: dict[str, Any], at: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(_args(files, case, at), capsys)
    assert out["reason"] == case["expect"], out["detail"]
    assert code == (0 if case["expect"] == "ok" else 1)
    assert out["verdict"] == ("admit" if case["expect"] == "ok" else "deny")
    if case["expect"] == "ok":
        assert out["flags"] == []  # lists loaded, clock given: nothing degraded


EXPECT_AT = [
    (case, point) for case in CASES for point in case.get("expect_at", ())
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "point"), EXPECT_AT, ids=[f"{c['name']}@{p['utc']}" for c, p in EXPECT_AT]
)
def test_validity_bounds_are_inclusive_to_the_second(
    case: dict[str, Any],
    point: dict[str, Any],
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _iso(point["unix"]) == point["utc"]
    code, out = _run(_args(files, case, point["utc"]), capsys)
    assert out["reason"] == point["expect"], out["detail"]
    assert code == (0 if point["expect"] == "ok" else 1)


def test_lenient_cases_are_denied_even_without_the_lists(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lenient = [c for c in CASES if c.get("lenient_parser_accepts")]
    assert len(lenient) == 4
    for case in lenient:
        code, out = _run(
            ["check", "--pretix-event", str(files["event"]), "--at", AT, "--json", case["secret"]],
            capsys,
        )
        assert (code, out["reason"]) == (1, "invalid_format"), case["name"]


def test_without_lists_admission_is_flagged_stale(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    secret = _case("revoked_order_canceled")["secret"]
    args = ["check", "--pretix-event", str(files["event"]), "--at", AT, "--json", secret]
    code, out = _run(args, capsys)
    # No revoked list given: the signature alone says ok, and the output says the list is missing.
    assert (code, out["reason"], out["flags"]) == (0, "ok", ["list_stale"])


def test_json_shows_fields_but_never_the_secret_or_seed(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    case = _case("valid_variation_1")
    code, out = _run(_args(files, case, AT), capsys)
    assert code == 0 and out["format"] == "pretix_sig1" and out["kid"] == ""
    assert out["fields"]["item"] == str(case["decoded"]["item"])
    assert out["fields"]["variation"] == str(case["decoded"]["variation"])
    text = json.dumps(out)
    assert case["secret"] not in text and case["decoded"]["seed"] not in text
    assert [r["rule"] for r in out["rules"]][:1] == ["signature"]


def test_partial_page_warns(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = dict(_body("revoked_secrets.json", "revoked_full_2"), next="http://x/?page=2")
    (tmp_path / "p1.json").write_text(json.dumps(page))
    args = _args(files, _case("revoked_after_regenerate"), AT)
    args[args.index(str(files["revoked"]))] = str(tmp_path / "p1.json")
    assert cli.main(args) == 1
    assert "one page of several" in capsys.readouterr().err


def test_several_pages_of_one_list_are_merged(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = _body("revoked_secrets.json", "revoked_full_2")
    for n, rows in enumerate((full["results"][:2], full["results"][2:])):
        (tmp_path / f"r{n}.json").write_text(json.dumps({"results": rows}))
    pages = [a for n in (0, 1) for a in ("--pretix-revoked", str(tmp_path / f"r{n}.json"))]
    base = ["check", "--pretix-event", str(files["event"]), "--at", AT, "--json"]
    for secret in (r["secret"] for r in full["results"]):
        code, out = _run([*base, *pages, secret], capsys)
        assert (code, out["reason"]) == (1, "revoked")


@pytest.mark.parametrize(
    ("content", "option", "words"),
    [
        ("{not json", "--pretix-event", "not a JSON document"),
        ('{"valid_keys": {}}', "--pretix-event", "no pretix_sig1 keys"),
        ('{"results": []}', "--pretix-list", "a page of 0 check-in lists"),
        ('{"id": 3, "all_products": "yes"}', "--pretix-list", "'all_products' must be a boolean"),
        ("[1, 2]", "--pretix-revoked", "expected a pretix list page"),
        ('{"results": [{"secret": 1}]}', "--pretix-blocked", "'secret' must be a string"),
    ],
)
def test_malformed_files_are_config_errors(
    content: str,
    option: str,
    words: str,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    args = ["check", "--pretix-event", str(files["event"]), "--at", AT]
    if option == "--pretix-event":
        args[2] = str(bad)
    else:
        args += [option, str(bad)]
    assert cli.main([*args, _case("valid_standard_1")["secret"]]) == 2
    err = capsys.readouterr().err
    assert f"{option} {bad}" in err and words in err


def test_missing_file_is_a_config_error(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["check", "--pretix-event", str(tmp_path / "nope.json"), "x" * 100]
    assert cli.main(args) == 2
    assert "No such file" in capsys.readouterr().err


def test_a_page_with_one_list_is_accepted(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "lists.json"
    page.write_text(json.dumps({"count": 1, "results": [json.loads(files["list13"].read_text())]}))
    secret = _case("standard_on_product_limited_list")["secret"]
    args = ["check", "--pretix-event", str(files["event"]), "--pretix-list", str(page)]
    code, out = _run([*args, "--at", AT, "--json", secret], capsys)
    assert (code, out["reason"]) == (1, "wrong_product")


# --- real processes: what a script sees ---------------------------------------------------------


def _proc(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=60, check=False
    )  # fmt: skip


@pytest.mark.parametrize(
    "name", ["valid_vip_1", "revoked_after_regenerate", "blocked_ticket", "extra_trailing_byte"]
)
def test_cli_process_exit_codes_and_json(name: str, files: dict[str, Path]) -> None:
    case = _case(name)
    r = _proc(_args(files, case, AT))
    assert r.returncode == (0 if case["expect"] == "ok" else 1), r.stderr
    out = json.loads(r.stdout)
    assert out["reason"] == case["expect"]
    assert case["secret"] not in r.stdout + r.stderr


def test_cli_process_human_output(files: dict[str, Path]) -> None:
    case = _case("date2_on_date1_list")
    args = [a for a in _args(files, case, AT) if a != "--json"]
    r = _proc(args)
    assert r.returncode == 1
    for part in ("pretix_sig1", "subevent", "40002", "FAIL product", "DENY (wrong_product"):
        assert part in " ".join(r.stdout.split()), r.stdout
    assert case["secret"] not in r.stdout


def test_cli_process_usage_errors(files: dict[str, Path]) -> None:
    secret = _case("valid_standard_1")["secret"]
    alone = _proc(["check", "--keys", "k", "--pretix-list", str(files["list11"]), secret])
    assert alone.returncode == 2 and "need --pretix-event" in alone.stderr
    zoned = _proc(["check", "--pretix-event", str(files["event"]), "--zone", "2", secret])
    assert zoned.returncode == 2 and "--zone cannot be used" in zoned.stderr
    both = _proc(["check", "--pretix-event", str(files["event"]), "--keys", "k", secret])
    assert both.returncode == 2 and "not allowed with" in both.stderr
