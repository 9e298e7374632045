"""The gateway: one ALOR session served to many processes over NATS.

See ``docs/scale-out.md`` for the topology, subjects and guarantees.
"""

from .election import Role as Role
from .gateway import Gateway as Gateway
from .natsserver import NatsServer as NatsServer, find_nats_server as find_nats_server
from .orders import guid_for_key as guid_for_key
from .publish import open_stream as open_stream
from .session import ClientFactory as ClientFactory


__all__ = [
    "ClientFactory",
    "Gateway",
    "NatsServer",
    "Role",
    "find_nats_server",
    "guid_for_key",
    "open_stream",
]
