"""No module of the package imports, directly or not, a module that imports it back
(``TYPE_CHECKING`` imports count too: they are a dependency all the same)."""

from __future__ import annotations

import ast
import pathlib

import oomol_connect_anyio

PACKAGE = "oomol_connect_anyio"
ROOT = pathlib.Path(oomol_connect_anyio.__file__).parent


def module_names() -> dict[str, pathlib.Path]:
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: pathlib.Path, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` names in its import statements."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules
            found.update(submodules)
            if node.module or len(submodules) < len(node.names):  # names from the module
                found.add(base)
    return {module for module in found if module in modules and module != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def graph_of(modules: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    names = set(modules)
    return {name: imports_of(name, path, names) for name, path in modules.items()}


def test_the_detector_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_the_package_emulator_and_cli_included() -> None:
    modules = module_names()
    assert any(".emulator." in name for name in modules)
    assert any(".cli." in name for name in modules)
    assert cycles(graph_of(modules)) == []


def test_the_task_engine_does_not_import_the_facade() -> None:
    graph = graph_of(module_names())
    for engine in ("_task_wait", "_run_many", "_lifecycle", "_task_api"):
        assert f"{PACKAGE}.resources.tasks" not in graph[f"{PACKAGE}.{engine}"], engine
