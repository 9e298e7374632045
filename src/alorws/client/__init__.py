"""The asyncio client: token manager, lanes, buffers, reconnect-and-restore, typed streams,
orders over ``/cws``, the HTTP API and local state.

Importing this package loads asyncio and the network stack; :mod:`alorws.protocol` does not.
"""

from .auth import TokenManager as TokenManager
from .blocking import BlockingStream as BlockingStream, Client as Client
from .buffer import BufferEmpty as BufferEmpty, Policy as Policy, StreamBuffer as StreamBuffer
from .client import AlorClient as AlorClient
from .endpoints import Endpoints as Endpoints, resolve_endpoints as resolve_endpoints
from .hooks import ConnectionEvent as ConnectionEvent
from .http import HttpClient as HttpClient
from .lane import LaneEvent as LaneEvent, LaneKind as LaneKind, LaneState as LaneState
from .orders import OrderAck as OrderAck, OrderClient as OrderClient
from .portfolio import Portfolio as Portfolio
from .sources import DataStream as DataStream, StreamSource as StreamSource
from .state import OrderBookView as OrderBookView
from .streams import Stream as Stream


__all__ = [
    "AlorClient",
    "BlockingStream",
    "BufferEmpty",
    "Client",
    "ConnectionEvent",
    "DataStream",
    "Endpoints",
    "HttpClient",
    "LaneEvent",
    "LaneKind",
    "LaneState",
    "OrderAck",
    "OrderBookView",
    "OrderClient",
    "Policy",
    "Portfolio",
    "Stream",
    "StreamBuffer",
    "StreamSource",
    "TokenManager",
    "resolve_endpoints",
]
