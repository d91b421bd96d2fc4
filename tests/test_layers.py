"""The layers point one way, read from the source (every import, lazy ones inside functions too).

core (``agent`` without ``agent.app``) imports only the core; ``drivers`` and ``sync`` import the
core and themselves, never each other and never the application; the application
(``agent.app``, ``agent.__main__``) may import anything and nothing imports it. No module takes
part in an import cycle, and none grows past about 500 lines. See docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "drivers", "sync")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> Iterator[str]:
    """The project modules ``name`` imports, each resolved to the longest module that exists."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


GRAPH = {name: set(_imported(name, path)) for name, path in MODULES.items()}


def layer(module: str) -> str:
    """core, drivers, sync or app."""
    if module == "agent.app" or module.startswith(("agent.app.", "agent.__main__")):
        return "app"
    return {"agent": "core"}.get(module.split(".")[0], module.split(".")[0])


ALLOWED = {
    "core": {"core"},
    "drivers": {"core", "drivers"},
    "sync": {"core", "sync"},
    "app": {"core", "drivers", "sync", "app"},
}


def test_the_graph_is_read() -> None:
    # The reader itself: a broken resolver would find no edges and pass everything below.
    assert "agent.ports" in GRAPH["agent.lane"]
    assert "agent.app.daemon" in GRAPH["agent.app.cli"]
    assert {layer(m) for m in MODULES} == {"core", "drivers", "sync", "app"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    wrong = sorted(t for t in GRAPH[module] if layer(t) not in ALLOWED[layer(module)])
    assert not wrong, f"{module} ({layer(module)}) imports {wrong}"


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(GRAPH[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_the_cycle_finder_finds_one() -> None:
    GRAPH["agent.model"].add("agent.tickets")  # tickets imports model
    try:
        assert any({"agent.model", "agent.tickets"} <= set(c) for c in _cycles())
    finally:
        GRAPH["agent.model"].discard("agent.tickets")


# Modules split along their seams stay readable in one sitting: about 500 lines, and never more
# than this (docs/architecture.md: the hub stores are split in parts for it).
MAX_MODULE_LINES = 550


def test_no_module_outgrows_its_seams() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(sizes.values()) > 300  # the sizes are read
    over = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not over, f"split these along a seam: {over}"
