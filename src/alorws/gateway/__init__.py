"""The gateway: one ALOR session served to many processes over NATS.

See ``docs/scale-out.md`` for the topology, subjects and guarantees.
"""

from .._deps import require


require("nats", "the gateway")

from .election import Role as Role  # noqa: E402
from .gateway import Gateway as Gateway  # noqa: E402
from .natsserver import NatsServer as NatsServer, find_nats_server as find_nats_server  # noqa: E402
from .orders import guid_for_key as guid_for_key  # noqa: E402
from .publish import open_stream as open_stream  # noqa: E402
from .session import ClientFactory as ClientFactory  # noqa: E402


__all__ = [
    "ClientFactory",
    "Gateway",
    "NatsServer",
    "Role",
    "find_nats_server",
    "guid_for_key",
    "open_stream",
]
