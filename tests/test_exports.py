"""The public surface: what the packages export, complete and without duplicates."""

from __future__ import annotations

import importlib
import inspect

import alorws
import alorws.protocol


PROTOCOL_MODULES = [
    "enums",
    "market",
    "account",
    "http_models",
    "backoff",
    "codec",
    "requests",
    "commands",
    "registry",
    "jwt",
]
TOP_MODULES = [
    "alorws.errors",
    "alorws.protocol.enums",
    "alorws.protocol.market",
    "alorws.protocol.account",
    "alorws.protocol.requests",
    "alorws.protocol.commands",
]


def _names(modules: list[str]) -> list[str]:
    return [n for m in modules for n in importlib.import_module(m).__all__]


def test_protocol_exports_its_modules() -> None:
    """alorws.protocol exports exactly its submodules' public names (plus model helpers)."""
    combined = _names([f"alorws.protocol.{m}" for m in PROTOCOL_MODULES])
    extra = {"timeutil", "Model", "format_class", "to_wire", "wire_keys"}
    assert len(combined) == len(set(combined))
    assert set(alorws.protocol.__all__) == set(combined) | extra
    assert all(hasattr(alorws.protocol, n) for n in alorws.protocol.__all__)


def test_top_level_exports() -> None:
    """alorws exports the client, errors, enums, models, requests and commands, each once."""
    combined = _names([*TOP_MODULES, "alorws.client"]) + [
        "DataMessage",
        "StatusReply",
        "__version__",
    ]
    assert len(combined) == len(set(combined))
    assert set(alorws.__all__) == set(combined)
    assert all(hasattr(alorws, n) for n in alorws.__all__)


def test_public_callables_are_documented() -> None:
    """Every exported class and function has a docstring."""
    missing = [
        n
        for n in alorws.protocol.__all__ + alorws.__all__
        if (
            inspect.isclass(obj := getattr(alorws.protocol, n, None) or getattr(alorws, n))
            or inspect.isfunction(obj)
        )
        and not (getattr(obj, "__doc__", None) or "").strip()
    ]
    assert missing == []
