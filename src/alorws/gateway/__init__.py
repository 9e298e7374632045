"""The gateway: one ALOR session served to many processes over NATS.

See ``docs/scale-out.md`` for the topology, subjects and guarantees.
"""

from .gateway import (
    ClientFactory as ClientFactory,
    Gateway as Gateway,
    guid_for_key as guid_for_key,
    open_stream as open_stream,
)
from .natsserver import NatsServer as NatsServer, find_nats_server as find_nats_server


__all__ = [
    "ClientFactory",
    "Gateway",
    "NatsServer",
    "find_nats_server",
    "guid_for_key",
    "open_stream",
]
