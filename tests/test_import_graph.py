"""The project's modules import each other without cycles (STYLE 15: a cycle is a design bug).

Every `.py` under the packages below is parsed with `ast`; each `import` and `from … import`
(at module level and inside functions, relative ones resolved) becomes an edge to the
project module it names. Tarjan's algorithm (iterative) finds the strongly connected
components; any component of more than one module, or a module importing itself, is a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

#: The packages whose modules must form an acyclic import graph.
PACKAGES = ("echo_core", "server", "client", "echo_lab")

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    """`server/app.py` → `server.app`; `server/__init__.py` → `server`."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module of `packages`, by dotted name."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import `from {'.' * level}{target} import …` in `module`."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]  # a module's `.` is its package
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `module` imports anywhere in its file (module and function level).

    `from pkg import name` counts `pkg.name` when that is a module, else `pkg` itself; an
    import of a project module also imports its packages, which are left out here because
    a package's `__init__` importing its own submodules would otherwise look like a cycle.
    """
    is_package = path.name == "__init__.py"
    edges: set[str] = set()

    def add(name: str) -> None:
        while name and name not in modules:  # `a.b.attr` → the module `a.b`; outside names → ""
            name = name.rpartition(".")[0]
        if name:
            edges.add(name)  # itself too: a module importing itself is a cycle of one

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                add(full if full in modules else base)
    return edges


def import_graph(packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    modules = project_modules(packages)
    return {name: imported(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    return [c for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]]]


def test_tarjan_finds_hand_built_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve() -> None:
    assert resolve("server.app", False, 1, "live") == "server.live"
    assert resolve("server", True, 1, "app") == "server.app"
    assert resolve("echo_core.stream.session", False, 2, "config") == "echo_core.config"
    assert resolve("echo_core.stream.session", False, 1, None) == "echo_core.stream"


def test_the_graph_sees_function_level_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from server import app\n    from .live import x\n")
    modules = {"server": ROOT / "server/__init__.py", "server.app": ROOT / "server/app.py"}
    modules["server.live"] = ROOT / "server/live.py"
    assert imported("server.m", source, modules) == {"server.app", "server.live"}


def test_every_package_is_scanned() -> None:
    graph = import_graph()
    for package in PACKAGES:
        assert any(m == package or m.startswith(f"{package}.") for m in graph), package
    assert graph.get("server.app"), "server.app imports nothing of the project?"


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    report = "\n".join(" <-> ".join(c) for c in found)
    assert not found, f"{len(found)} import cycle(s) among {PACKAGES}:\n{report}"
