"""The consumer side of the gateway: ``BusClient``, and the wire contract.

See ``docs/scale-out.md``.
"""

from .client import BusClient as BusClient, BusStream as BusStream, BusTrading as BusTrading


__all__ = ["BusClient", "BusStream", "BusTrading"]
