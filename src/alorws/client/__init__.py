"""The asyncio client: token manager, lanes, buffers, reconnect-and-restore, typed streams.

Importing this package loads asyncio and the network stack; :mod:`alorws.protocol` does not.
"""

from .buffer import Policy as Policy, StreamBuffer as StreamBuffer
from .client import AlorClient as AlorClient
from .lane import LaneEvent as LaneEvent, LaneKind as LaneKind, LaneState as LaneState
from .streams import Stream as Stream


__all__ = [
    "AlorClient",
    "LaneEvent",
    "LaneKind",
    "LaneState",
    "Policy",
    "Stream",
    "StreamBuffer",
]
