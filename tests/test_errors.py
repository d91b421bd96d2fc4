"""The exception tree: the drawing at the top of agent/errors.py is the tree the classes form,
every class carries a builtin a caller may catch instead, and upstream errors keep what callers read
from them (``retry_after``, ``check``, ``entry_ids``)."""

from __future__ import annotations

import builtins
import importlib
import inspect
import re
from pathlib import Path

import pytest

from agent import errors

ROOT = Path(__file__).resolve().parent.parent

_LINE = re.compile(r"^(?P<indent>[\s│]*)(?:├── |└── )(?P<name>\w+)(?: \((?P<bases>[\w, ]+)\))?")


def _classes() -> dict[str, type[BaseException]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, Exception) and cls.__module__ == errors.__name__
    }


def _drawn() -> dict[str, tuple[str, list[str]]]:
    """Each class in the docstring's drawing: its parent in the drawing and the bases it names."""
    doc = errors.__doc__ or ""
    drawn: dict[str, tuple[str, list[str]]] = {}
    parents = ["AgentError"]
    for line in doc.splitlines():
        found = _LINE.match(line)
        if found is None:
            continue
        depth = len(found["indent"]) // 4
        del parents[depth:]
        parent = parents[-1] if parents else "?"
        bases = [b.strip() for b in (found["bases"] or "").split(",") if b.strip()]
        drawn[found["name"]] = (parent, bases)
        parents.append(found["name"])
    return drawn


def test_the_drawing_holds_every_class_under_its_parent() -> None:
    drawn = _drawn()
    classes = _classes()
    assert set(drawn) == set(classes) - {"AgentError"}
    for name, (parent, bases) in drawn.items():
        cls = classes[name]
        assert cls.__mro__[1] is classes[parent], (name, parent)
        for base in bases:
            own = classes.get(base) or getattr(builtins, base)
            assert issubclass(cls, own), (name, base)


def _project_errors() -> set[type[errors.AgentError]]:
    """Every subclass of AgentError the project defines (each of its modules imported)."""
    for package in ("agent", "drivers", "sync"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            if not name.endswith("__main__"):
                importlib.import_module(name)
    found: set[type[errors.AgentError]] = set()
    todo = [errors.AgentError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found and sub.__module__.split(".")[0] in ("agent", "drivers", "sync"):
                found.add(sub)
                todo.append(sub)
    return found


def test_every_project_error_is_drawn_or_named() -> None:
    elsewhere = {c for c in _project_errors() if c.__module__ != errors.__name__}
    assert {"HubStoreError", "DecisionNotRecorded"} <= {c.__name__ for c in elsewhere}
    doc = errors.__doc__ or ""
    named = {c for c in elsewhere if re.search(rf"\b{c.__name__}\b", doc)}  # a word, whole
    unnamed = [f"{c.__module__}.{c.__name__}" for c in elsewhere - named]
    assert not unnamed, f"name these in agent/errors.py's docstring: {unnamed}"


def test_every_leaf_is_also_a_builtin() -> None:
    classes = _classes()
    leaves = [c for c in classes.values() if not any(o.__mro__[1] is c for o in classes.values())]
    plain = (Exception, BaseException, object)
    for cls in leaves:
        assert any(c.__module__ == "builtins" and c not in plain for c in cls.__mro__), cls


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.UpstreamUnavailable, ConnectionError),
        (errors.UpstreamAuthError, PermissionError),
        (errors.PretixInitError, PermissionError),
        (errors.UpstreamTLSError, ConnectionError),
        (errors.UpstreamRefused, ValueError),
        (errors.UpstreamConflict, ValueError),
        (errors.UpstreamGone, ValueError),
    ],
)
def test_upstream_errors_are_agent_errors_and_builtins(
    cls: type[errors.UpstreamError], builtin: type[Exception]
) -> None:
    assert issubclass(cls, errors.UpstreamError) and issubclass(cls, errors.AgentError)
    assert issubclass(cls, builtin)


def test_upstream_errors_keep_what_callers_read() -> None:
    down = errors.UpstreamUnavailable("GET /x: HTTP 503", 7.0)
    assert str(down) == "GET /x: HTTP 503" and down.retry_after == 7.0
    assert errors.UpstreamUnavailable("GET /x: timeout").retry_after is None
    refused = errors.UpstreamAuthError("HTTP 401: check [hub] token_file", "token")
    assert str(refused) == "HTTP 401: check [hub] token_file" and refused.check == "token"
    assert errors.PretixInitError("device initialisation refused").check is None
    assert errors.UpstreamTLSError("not trusted: check [hub] ca", "ca").check == "ca"
    conflict = errors.UpstreamConflict("HTTP 409", ["a", "b"])
    assert conflict.entry_ids == ("a", "b") and isinstance(conflict, errors.UpstreamRefused)
