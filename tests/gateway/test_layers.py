"""The gateway's and the bus's modules: no import cycle, no class grown past a size."""

from __future__ import annotations

import ast
import pathlib


SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "alorws"
PACKAGES = ("gateway", "bus")
MAX_METHODS = 30


def _modules() -> dict[str, pathlib.Path]:
    return {
        f"{package}.{path.stem}": path
        for package in PACKAGES
        for path in (SRC / package).glob("*.py")
        if path.stem != "__init__"
    }


def _imports(name: str, path: pathlib.Path) -> set[str]:
    """The modules of ``PACKAGES`` that ``name`` imports (type-checking imports included)."""
    package = name.split(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or node.level == 0 or node.module is None:
            continue
        target = node.module if node.level == 2 else f"{package}.{node.module}"
        if target in PACKAGES:  # ``from ..bus import wire``: the names are modules
            found.update(f"{target}.{alias.name}" for alias in node.names)
        else:
            found.add(target)
    return found


def test_gateway_and_bus_modules_import_no_cycle() -> None:
    """No chain of imports among the gateway's and the bus's modules leads back to where it
    started."""
    modules = _modules()
    graph = {name: _imports(name, path) & set(modules) for name, path in modules.items()}
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        for nxt in sorted(graph[name]):
            if nxt in path:
                cycles.append([*path[path.index(nxt) :], nxt])
            else:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert cycles == []
    assert "gateway.publish" in graph["gateway.relay"]  # the walk does see the imports


def test_no_class_has_more_than_thirty_methods() -> None:
    """Every class of the gateway and the bus stays within 30 methods (public and private)."""
    sizes = {
        f"{name}.{node.name}": sum(
            isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) for item in node.body
        )
        for name, path in _modules().items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
    }
    assert sizes["gateway.gateway.Gateway"] > 0
    assert {k: v for k, v in sizes.items() if v > MAX_METHODS} == {}
