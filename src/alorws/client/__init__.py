"""The asyncio client: token manager, lanes, buffers, reconnect-and-restore, typed streams,
orders over ``/cws``, the HTTP API and local state; where the refresh token comes from
(:func:`resolve_refresh_token`) and which proxy connections go through (:class:`Proxy`).
:data:`COMPILED_READER` says whether the reader's per-frame work runs compiled (see
docs/client.md, "Threads and loops").

Importing this package loads asyncio and the network stack; :mod:`alorws.protocol` does not.
"""

from ._ws import COMPILED as COMPILED_READER
from .auth import TokenManager as TokenManager, resolve_refresh_token as resolve_refresh_token
from .blocking import BlockingStream as BlockingStream, Client as Client
from .buffer import BufferEmpty as BufferEmpty, Policy as Policy, StreamBuffer as StreamBuffer
from .client import AlorClient as AlorClient
from .endpoints import Endpoints as Endpoints, resolve_endpoints as resolve_endpoints
from .hooks import ConnectionEvent as ConnectionEvent
from .http import HttpClient as HttpClient
from .lane import LaneEvent as LaneEvent, LaneKind as LaneKind, LaneState as LaneState
from .orders import OrderAck as OrderAck, OrderClient as OrderClient
from .portfolio import Portfolio as Portfolio
from .proxy import NO_PROXY as NO_PROXY, Proxy as Proxy
from .sources import DataStream as DataStream, StreamSource as StreamSource
from .state import OrderBookView as OrderBookView
from .streams import Stream as Stream


__all__ = [
    "COMPILED_READER",
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
    "NO_PROXY",
    "OrderAck",
    "OrderBookView",
    "OrderClient",
    "Policy",
    "Portfolio",
    "Proxy",
    "Stream",
    "StreamBuffer",
    "StreamSource",
    "TokenManager",
    "resolve_endpoints",
    "resolve_refresh_token",
]
