"""The simulator's own layering: pure parts without I/O, modules without import cycles."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys


SIM = pathlib.Path(__file__).resolve().parents[2] / "src" / "alorws" / "sim"
PURE = ("market", "accounts", "matching", "engine", "subscriptions")
IO_ROOTS = ("asyncio", "aiohttp", "socket", "ssl", "selectors")


def test_pure_parts_load_no_io() -> None:
    """The market, the engine (accounts, matching) and the subscription hub load in a fresh
    interpreter without asyncio, aiohttp or sockets."""
    modules = ", ".join(f"alorws.sim.{name}" for name in PURE)
    code = (
        f"import sys, {modules}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {IO_ROOTS!r})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def _sim_imports(path: pathlib.Path) -> set[str]:
    """The sibling modules ``path`` imports, type-only imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_sim_modules_import_no_cycle() -> None:
    """No chain of imports among the simulator's modules leads back to where it started, not
    even through imports made only for type checking."""
    graph = {p.stem: _sim_imports(p) for p in SIM.glob("*.py")}
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(name, ())):
            if nxt in path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt in graph:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert cycles == []
