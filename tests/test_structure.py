"""The package's import graph has no cycle (issue 11): a lower layer never imports a higher one.

Every ``import`` / ``from ... import`` statement under src/dyvm counts, at module level and inside
functions (a deferred import still ties the two modules together), and so do ``__import__`` /
``importlib.import_module`` calls with a literal module name.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "dyvm"


def module_name(path: Path) -> str:
    """src/dyvm/models/vim.py → dyvm.models.vim; src/dyvm/models/__init__.py → dyvm.models."""
    parts = ("dyvm",) + path.relative_to(PACKAGE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _resolve_relative(current: str, is_package: bool, level: int, module: Optional[str]) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of the package that ``name`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:  # dyvm.kernels.scan.resolve_backend → dyvm.kernels.scan
            target = target.rpartition(".")[0]
        if target:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "dyvm":
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            source = (_resolve_relative(name, is_package, node.level, node.module) if node.level
                      else node.module or "")
            if source.split(".")[0] != "dyvm":
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                add(sub if sub in modules else source)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            target = node.args[0].value
            if called in ("__import__", "import_module") and isinstance(target, str) and target.startswith("dyvm"):
                add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_deferred_and_dynamic_imports():
    graph = import_graph()
    assert "dyvm.models.registry" in graph["dyvm.models.vim"]    # from .registry import ... (module level)
    assert "dyvm.evaluate" in graph["dyvm.engine"]               # inside a function
    assert "dyvm.engine" in graph["dyvm.cli"]                    # __import__("dyvm.engine")


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_shared_helpers_live_below_bench_and_cli():
    graph = import_graph()
    for low in ("dyvm.evaluate", "dyvm.demo", "dyvm.engine", "dyvm.flops", "dyvm.prediction", "dyvm.viz"):
        assert not graph[low] & {"dyvm.cli", "dyvm.bench", "dyvm.bench_train"}, low
