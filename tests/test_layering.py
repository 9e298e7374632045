"""The layering rules: the protocol core imports no I/O, the simulator no client internals."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys


SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "alorws"
IO_MODULES = {
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "http",
    "urllib",
    "aiohttp",
    "picows",
    "websockets",
    "httpx",
    "threading",
}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_protocol_sources_import_no_io() -> None:
    """No module of alorws.protocol imports an I/O or concurrency module."""
    offenders = {
        str(p.relative_to(SRC)): sorted(_imports(p) & IO_MODULES)
        for p in (SRC / "protocol").rglob("*.py")
        if _imports(p) & IO_MODULES
    }
    assert offenders == {}


def test_import_protocol_loads_no_io_modules() -> None:
    """`import alorws.protocol` in a fresh interpreter leaves asyncio, socket and HTTP unloaded."""
    code = (
        "import sys, alorws.protocol\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{sorted(IO_MODULES - {'threading'})!r})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_simulator_uses_no_client_internals() -> None:
    """alorws.sim may reuse alorws.protocol, never alorws.client."""
    offenders = []
    for p in (SRC / "sim").rglob("*.py"):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                name = node.module if node.level == 0 else f"alorws.{node.module}"
                if "client" in name.split(".") or (
                    node.level == 2 and node.module.startswith("client")
                ):
                    offenders.append(str(p.relative_to(SRC)))
            elif isinstance(node, ast.Import):
                offenders += [str(p) for a in node.names if a.name.startswith("alorws.client")]
    assert offenders == []
