"""A local ALOR-compatible simulator: synthetic market, matching engine, network server.

``from alorws.sim import Simulator`` runs it in-process (see :mod:`alorws.sim.app`). The export
is loaded lazily, so importing the pure parts (:mod:`alorws.sim.market`,
:mod:`alorws.sim.engine`) loads no networking code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from .app import Simulator as Simulator

__all__ = ["Simulator"]


def __getattr__(name: str) -> Any:
    if name == "Simulator":
        from .app import Simulator

        return Simulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
