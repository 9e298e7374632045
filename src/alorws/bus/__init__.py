"""The consumer side of the gateway: ``BusClient``, and the wire contract.

See ``docs/scale-out.md``.
"""

from .._deps import require


require("nats", "the NATS bus client")

from .client import BusClient as BusClient, BusStream as BusStream, BusTrading as BusTrading  # noqa: E402


__all__ = ["BusClient", "BusStream", "BusTrading"]
