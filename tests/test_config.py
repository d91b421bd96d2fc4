"""Config validation: every error names the file, the section and the key."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from agent.app import config
from agent.errors import ConfigError
from tests.conftest import WriteConfig
from tests.gateconf import Table, toml_of

REPO = Path(__file__).resolve().parents[1]


def test_valid_config_loads_typed_values(write_config: WriteConfig) -> None:
    path = write_config(entry="reentry", passage_timeout_s=3)
    conf = config.load(path)
    assert conf.gate.id == "gate-3" and conf.gate.events == [1] and conf.gate.zone == 1
    assert conf.policy.entry == "reentry"
    assert conf.lane.passage_timeout_s == 3.0 and isinstance(conf.lane.passage_timeout_s, float)
    assert conf.gate.state_dir == path.parent / "state"  # relative to the config file
    assert conf.trust is not None and conf.trust.bundle == path.parent / "keys/trust.json"


# The least a config holds (tests/gateconf's writer, its defaults taken out): what `config.load`
# must accept, and what each refusal below varies.
MINIMAL: dict[str, Table | None] = {
    "gate": {"id": "g", "zone": None, "state_dir": "s"},
    "trust": {"root_key": "k"},
    "devices": {"gate": "sim://gate"},
    **dict.fromkeys(("policy", "lane", "revocation", "clock", "status")),
}


def _minimal(**changed: Table) -> str:
    """:data:`MINIMAL` with each of ``changed``'s tables merged into its section."""
    return toml_of({**MINIMAL, **{k: {**(MINIMAL.get(k) or {}), **t} for k, t in changed.items()}})


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("gate", "colour", "red", ["[gate]", "unknown key 'colour'", "valid keys"]),
        ("gates", "id", "x", ["unknown section [gates]"]),
        ("gate", "zone", "one", ["[gate] zone", "expected", "'one'"]),
        ("gate", "zone", 17, ["[gate] zone", "1-16"]),
        ("policy", "entry", "twice", ["[policy] entry", "one of", "'single'"]),
        ("lane", "passage_timeout_s", True, ["[lane] passage_timeout_s", "a number"]),
        ("gate", "events", [1, "x"], ["[gate] events", "a list of integers"]),
        ("policy", "timezone", "Mars/Olympus", ["[policy] timezone", "Mars/Olympus"]),
        ("lane", "repeat_window_ms", 1.5, ["[lane] repeat_window_ms", "an integer"]),
        ("gate", "name", "G" * 65, ["[gate] name", "1-64 printable characters"]),
        ("gate", "name", "", ["[gate] name", "1-64 printable characters"]),
        ("lane", "name", "L" * 65, ["[lane] name", "1-64 printable characters"]),
        ("lane", "name", "", ["[lane] name", "1-64 printable characters"]),
        # found trying the product: a port past 65535 loaded, then every hub request of the
        # running gate was an internal error with a traceback (the gate offline for good)
        ("hub", "url", "https://hub:99999", ["[hub] url", "port 1-65535", "'https://hub:99999'"]),
        ("hub", "url", "https://hub:0", ["[hub] url", "port 1-65535"]),
        ("hub", "url", "https://hub:http", ["[hub] url", "port 1-65535"]),
        ("pretix", "url", "https://pretix.example:70000", ["[pretix] url", "port 1-65535"]),
        ("pretix", "url", "https://", ["[pretix] url", "http(s)://host[:port][/prefix]"]),
        # found in review: the pretix adapter refused these at start, after the check said OK
        ("pretix", "url", "https://p.example/?x=1", ["[pretix] url", "[/prefix] (port"]),
        ("pretix", "url", "https://u:pw@p.example", ["[pretix] url", "got 'https://…@p.ex"]),
        ("hub", "url", "https://hub.example/#top", ["[hub] url", "[/prefix] (port"]),
        # found trying the product: port 0 loaded, and no `status` or display could find it
        ("status", "listen", "127.0.0.1:0", ["[status] listen", "a port of 1-65535"]),
        # a long value is cut in the message (one journal line), with its length
        ("gate", "name", "a" * 3_000_000, ["[gate] name", "... (3,000,002 characters)"]),
    ],
)
def test_bad_key_names_file_section_and_key(
    tmp_path: Path, section: str, key: str, value: object, expected: list[str]
) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(_minimal(**{section: {key: value}}))
    with pytest.raises(ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert message.startswith(str(path)) and len(message) < len(str(path)) + 400
    assert ":pw@" not in message  # a password in a URL is never echoed
    for part in expected:
        assert part in message


@pytest.mark.parametrize("section", ["gate", "lane"])
def test_names_with_control_characters_are_refused(tmp_path: Path, section: str) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(_minimal(**{section: {"name": "A\tB"}}))  # written as a TOML tab escape
    with pytest.raises(ConfigError, match=rf"\[{section}\] name: expected 1-64 printable"):
        config.load(path)


def test_minimal_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(_minimal())
    conf = config.load(path)
    assert conf.gate.name == "g"  # defaults to the id
    assert conf.policy.entry == "single" and conf.lane.repeat_window_ms == 2000


def test_missing_required_key_and_section(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text(toml_of({**MINIMAL, "devices": None}))
    with pytest.raises(ConfigError, match=r"missing required section \[devices\]"):
        config.load(path)
    path.write_text(_minimal(gate={"id": None}))
    with pytest.raises(ConfigError, match=r"\[gate\] missing required key 'id'"):
        config.load(path)
    # Found in a user trial: without events the gate started and refused every ticket.
    path.write_text(_minimal(gate={"events": None}))
    with pytest.raises(ConfigError, match=r"\[gate\] missing required key 'events'"):
        config.load(path)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[gate\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)


@pytest.mark.parametrize("name", ["gate.example.toml"])  # the demo writes its own
def test_shipped_configs_are_valid(name: str) -> None:
    conf = config.load(REPO / "config" / name)
    assert conf.gate.events


def test_the_example_lists_every_key_it_says_it_does() -> None:
    # Its first line says every key is listed; an integrator found [display] and [pretix]
    # device_id missing. Every field of every section that is one TOML table.
    text = (REPO / "config" / "gate.example.toml").read_text()
    for item in dataclasses.fields(config.Config):
        section = typing.get_type_hints(config.Config)[item.name]
        kind = next((t for t in typing.get_args(section) if dataclasses.is_dataclass(t)), section)
        if item.name in ("path", "lane_tables") or not dataclasses.is_dataclass(kind):
            continue
        assert re.search(rf"^#? ?\[{item.name}\]", text, re.MULTILINE), item.name
        for field in dataclasses.fields(kind):
            if field.name == "token" and item.name == "hub":
                continue  # [hub] token_file is the one to use: a token in the file is shown
            assert re.search(rf"^#? ?{field.name} = ", text, re.MULTILINE), (item.name, field.name)


def test_a_state_dir_blocked_by_a_file_is_a_config_error(tmp_path: Path) -> None:
    """Found trying the product: `selftest --config-only` said OK, then `run` exited 2 (not 78)
    on a state_dir whose parent was a file. One not made yet is the gate's to make."""
    (tmp_path / "afile").write_text("")
    for state, blocker in (("afile/sub", "afile"), ("afile", "afile")):
        text = _minimal(gate={"state_dir": state})
        with pytest.raises(ConfigError) as caught:
            config.parse(text, tmp_path / "gate.toml")
        assert str(caught.value) == (
            f"{tmp_path / 'gate.toml'}: [gate] state_dir: {tmp_path / state}:"
            f" {tmp_path / blocker} is a file, not a folder"
        )
    text = _minimal(gate={"state_dir": "not/made/yet"})
    assert config.parse(text, tmp_path / "gate.toml").gate.state_dir == tmp_path / "not/made/yet"
