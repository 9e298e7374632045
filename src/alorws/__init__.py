"""alorws: a fast, safe, typed asyncio toolkit for the ALOR Broker WebSocket API.

The top level holds what an application uses: the clients (:class:`AlorClient`,
:class:`HttpClient`, :class:`OrderClient`, :class:`BusClient`, :class:`Replay`, the local state
:class:`Portfolio` and :class:`OrderBookView`, :class:`Recorder`, the candle cache
:class:`BarStore`), what they take and return (the stream types and :class:`DataStream`,
:class:`Bars` (a list of candles with ``to_pandas()``), the subscription requests
``stream(request)`` takes, the models, the enums, :class:`Backoff`, :class:`Policy`,
:class:`OrderAck`, :class:`LaneEvent`), and every exception of :mod:`alorws.errors`.

The wire machinery (frame encoders and decoders, the router, ``/cws`` command structs, the
registry, JWT helpers) is in :mod:`alorws.protocol`; the client's building blocks (lanes,
buffers, endpoints) in :mod:`alorws.client`; :func:`alorws.errors.redact` and
:func:`alorws.errors.scrub` in :mod:`alorws.errors`.

The clients are loaded on first use, so ``import alorws`` (and ``import alorws.protocol``)
loads no asyncio or network module, nor NATS or Arrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


__version__ = "0.1.0"

from .errors import (
    AlorError as AlorError,
    AuthError as AuthError,
    BufferEmpty as BufferEmpty,
    BufferOverflowError as BufferOverflowError,
    CommandFrameError as CommandFrameError,
    ConfigurationError as ConfigurationError,
    ConnectError as ConnectError,
    ConnectionClosed as ConnectionClosed,
    ConnectionLimitError as ConnectionLimitError,
    FrameError as FrameError,
    InvalidArgumentError as InvalidArgumentError,
    InvalidState as InvalidState,
    InvalidTokenError as InvalidTokenError,
    LimitError as LimitError,
    LocalProtocolError as LocalProtocolError,
    MarketClosed as MarketClosed,
    MissingDependency as MissingDependency,
    OrderRejected as OrderRejected,
    OrderStatusUnknown as OrderStatusUnknown,
    ProtocolError as ProtocolError,
    RecorderError as RecorderError,
    RemoteProtocolError as RemoteProtocolError,
    ServerLimitExceeded as ServerLimitExceeded,
    ServerRejected as ServerRejected,
    StreamClosed as StreamClosed,
    StreamError as StreamError,
    StreamTimeout as StreamTimeout,
    SubscriptionLimitError as SubscriptionLimitError,
    TokenRejected as TokenRejected,
    TransportError as TransportError,
    TransportTimeout as TransportTimeout,
    UnknownInstrument as UnknownInstrument,
)
from .protocol.account import (
    CurrencyBuyingPower as CurrencyBuyingPower,
    Iceberg as Iceberg,
    Order as Order,
    OwnTrade as OwnTrade,
    Position as Position,
    RepoFields as RepoFields,
    Risk as Risk,
    SpectraRisk as SpectraRisk,
    StopOrder as StopOrder,
    Summary as Summary,
)
from .protocol.backoff import Backoff as Backoff
from .protocol.enums import (
    ClientType as ClientType,
    Condition as Condition,
    Exchange as Exchange,
    Format as Format,
    OrderStatus as OrderStatus,
    OrderType as OrderType,
    RiskStatus as RiskStatus,
    Side as Side,
    TimeInForce as TimeInForce,
    TradingStatus as TradingStatus,
)
from .protocol.http_models import (
    AllTradesPage as AllTradesPage,
    HistoryPage as HistoryPage,
    HttpOrderAck as HttpOrderAck,
    Security as Security,
)
from .protocol.market import (
    Bar as Bar,
    BookLevel as BookLevel,
    Cluster as Cluster,
    ClusterSnapshot as ClusterSnapshot,
    InstrumentPatch as InstrumentPatch,
    InstrumentState as InstrumentState,
    OrderBook as OrderBook,
    Quote as Quote,
    Trade as Trade,
)
from .protocol.requests import (
    AllTradesRequest as AllTradesRequest,
    BarsRequest as BarsRequest,
    ClustersRequest as ClustersRequest,
    InstrumentRequest as InstrumentRequest,
    OrderBookRequest as OrderBookRequest,
    OrdersRequest as OrdersRequest,
    OwnTradesRequest as OwnTradesRequest,
    PositionsRequest as PositionsRequest,
    QuotesRequest as QuotesRequest,
    RisksRequest as RisksRequest,
    SpectraRisksRequest as SpectraRisksRequest,
    StopOrdersRequest as StopOrdersRequest,
    SubscriptionRequest as SubscriptionRequest,
    SummariesRequest as SummariesRequest,
)


if TYPE_CHECKING:
    from .bus import BusClient as BusClient, BusStream as BusStream
    from .client import (
        AlorClient as AlorClient,
        BlockingStream as BlockingStream,
        Client as Client,
        ConnectionEvent as ConnectionEvent,
        DataStream as DataStream,
        HttpClient as HttpClient,
        LaneEvent as LaneEvent,
        OrderAck as OrderAck,
        OrderBookView as OrderBookView,
        OrderClient as OrderClient,
        Policy as Policy,
        Portfolio as Portfolio,
        Stream as Stream,
        StreamSource as StreamSource,
        TokenManager as TokenManager,
    )
    from .client.barstore import BarStore as BarStore
    from .frames import Bars as Bars
    from .record import Recorder as Recorder, Replay as Replay

#: Names loaded on first use, and their modules: the asyncio client, the NATS bus, Arrow, the
#: candle cache and DataFrame helpers.
_LAZY = {
    "AlorClient": "alorws.client",
    "BlockingStream": "alorws.client",
    "Client": "alorws.client",
    "ConnectionEvent": "alorws.client",
    "DataStream": "alorws.client",
    "HttpClient": "alorws.client",
    "LaneEvent": "alorws.client",
    "OrderAck": "alorws.client",
    "OrderBookView": "alorws.client",
    "OrderClient": "alorws.client",
    "Policy": "alorws.client",
    "Portfolio": "alorws.client",
    "Stream": "alorws.client",
    "StreamSource": "alorws.client",
    "TokenManager": "alorws.client",
    "BusClient": "alorws.bus",
    "BusStream": "alorws.bus",
    "BarStore": "alorws.client.barstore",
    "Bars": "alorws.frames",
    "Recorder": "alorws.record",
    "Replay": "alorws.record",
}


def __getattr__(name: str) -> Any:
    # The clients are imported on first use, keeping `import alorws` free of I/O modules.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'alorws' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AllTradesPage",
    "AllTradesRequest",
    "AlorClient",
    "AlorError",
    "AuthError",
    "Backoff",
    "Bar",
    "BarStore",
    "Bars",
    "BarsRequest",
    "BlockingStream",
    "BookLevel",
    "BufferEmpty",
    "BufferOverflowError",
    "BusClient",
    "BusStream",
    "Client",
    "ClientType",
    "Cluster",
    "ClusterSnapshot",
    "ClustersRequest",
    "CommandFrameError",
    "Condition",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionEvent",
    "ConnectionLimitError",
    "CurrencyBuyingPower",
    "DataStream",
    "Exchange",
    "Format",
    "FrameError",
    "HistoryPage",
    "HttpClient",
    "HttpOrderAck",
    "Iceberg",
    "InstrumentPatch",
    "InstrumentRequest",
    "InstrumentState",
    "InvalidArgumentError",
    "InvalidState",
    "InvalidTokenError",
    "LaneEvent",
    "LimitError",
    "LocalProtocolError",
    "MarketClosed",
    "MissingDependency",
    "Order",
    "OrderAck",
    "OrderBook",
    "OrderBookRequest",
    "OrderBookView",
    "OrderClient",
    "OrderRejected",
    "OrderStatus",
    "OrderStatusUnknown",
    "OrderType",
    "OrdersRequest",
    "OwnTrade",
    "OwnTradesRequest",
    "Policy",
    "Portfolio",
    "Position",
    "PositionsRequest",
    "ProtocolError",
    "Quote",
    "QuotesRequest",
    "Recorder",
    "RecorderError",
    "RemoteProtocolError",
    "Replay",
    "RepoFields",
    "Risk",
    "RiskStatus",
    "RisksRequest",
    "Security",
    "ServerLimitExceeded",
    "ServerRejected",
    "Side",
    "SpectraRisk",
    "SpectraRisksRequest",
    "StopOrder",
    "StopOrdersRequest",
    "Stream",
    "StreamClosed",
    "StreamError",
    "StreamSource",
    "StreamTimeout",
    "SubscriptionLimitError",
    "SubscriptionRequest",
    "SummariesRequest",
    "Summary",
    "TimeInForce",
    "TokenManager",
    "TokenRejected",
    "Trade",
    "TradingStatus",
    "TransportError",
    "TransportTimeout",
    "UnknownInstrument",
    "__version__",
]
