"""Optional dependencies: import one, or raise :class:`~alorws.errors.MissingDependency`
naming the extra that installs it.

The core install is the client and the ``alorws`` command; recording, the candle cache, the
gateway, metrics and DataFrames each need an extra (README, docs/data.md).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Final

from .errors import MissingDependency


__all__ = ["EXTRAS", "require"]

#: module -> (distribution, extra)
EXTRAS: Final = {
    "pyarrow": ("pyarrow", "record"),
    "nats": ("nats-py", "gateway"),
    "prometheus_client": ("prometheus-client", "metrics"),
    "pandas": ("pandas", "pandas"),
    "numpy": ("pandas", "pandas"),  # pandas brings it
    "polars": ("polars", "polars"),
}


def require(module: str, feature: str) -> ModuleType:
    """``import module``, or :class:`MissingDependency` saying ``feature`` needs its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        if exc.name is not None and exc.name.partition(".")[0] != top:
            raise  # the package is there but one of its own imports failed: show that
        package, extra = EXTRAS[top]
        raise MissingDependency(feature, package, extra) from None
