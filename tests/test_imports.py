"""No two modules of the package import each other, directly or around a circle.

A circle means a piece sits in the wrong module: give the shared piece its own home.

What counts as an import, read from the source with :mod:`ast`:

- every ``import`` / ``from ... import`` in a module, at module level, in class bodies
  *and inside functions*: a deferred import avoids the crash at import time but is
  still a dependency in both directions (the gate once imported the content schema
  inside ``Gate.__init__`` while the schema imported the gate at the top);
- except under ``if TYPE_CHECKING:``, which exists for the type checker only;
- an import names the module it imports, not the packages above it: ``from
  steadyq.brokers.base import Queue`` depends on ``steadyq.brokers.base``. Python
  does run ``steadyq/brokers/__init__.py`` first, but a package that re-exports its
  submodules would otherwise always be in a circle with them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import steadyq

PACKAGE = Path(steadyq.__file__).parent


def _module_name(package: Path, path: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, ...]]:
    """What ``tree`` imports, TYPE_CHECKING blocks left out: for each imported name,
    the module names it may be, most precise first."""
    found: list[tuple[str, ...]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join([*here, base] if base else here)
            # `from pkg import name` imports the module pkg.name if there is one, else pkg
            found.extend((f"{base}.{alias.name}", base) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of the package, with the modules of the package it imports."""
    files = {_module_name(package, p): p for p in sorted(package.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for candidates in _imports(tree, name, path.name == "__init__.py"):
            target = next((c for c in candidates if c in files), None)
            if target is not None and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected parts of two or more
    modules (Tarjan), each given as one closed path through the part."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    parts: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                parts.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_closed_path(graph, part) for part in parts]


def _closed_path(graph: dict[str, set[str]], part: list[str]) -> list[str]:
    """A shortest path from the part's first module back to itself, inside the part."""
    start, members = part[0], set(part)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    following.append(w)
        frontier = following
    return [*part, start]  # unreachable for a strongly connected part


def test_no_module_of_the_package_is_in_an_import_circle() -> None:
    found = cycles(import_graph())
    assert not found, "import circles in steadyq:\n" + "\n".join(
        "  " + " -> ".join(path) for path in found
    )


# -- the guard itself -----------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_guard_sees_a_circle_made_by_an_import_inside_a_function(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "gate.py": "def make():\n    from pkg.content.schema import Model\n",
            "content/__init__.py": "",
            "content/schema.py": "from pkg.gate import canonical\n",
        },
    )
    assert cycles(import_graph(root)) == [["pkg.content.schema", "pkg.gate", "pkg.content.schema"]]


def test_the_guard_reads_relative_imports_and_from_package_import_module(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "watch/__init__.py": "",
            "watch/run.py": "from . import reports\n",
            "watch/reports.py": "from .cli import view\n",
            "watch/cli.py": "from pkg.watch import run\n",
        },
    )
    [path] = cycles(import_graph(root))
    assert path == ["pkg.watch.cli", "pkg.watch.run", "pkg.watch.reports", "pkg.watch.cli"]


def test_the_guard_leaves_out_type_checking_imports_and_parent_packages(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "from pkg.a import A\n",
            "a.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n"
            ),
            "b.py": "from pkg.a import A\n",
        },
    )
    graph = import_graph(root)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": set(), "pkg.b": {"pkg.a"}}
    assert cycles(graph) == []
