"""The public surface: what the packages export, complete, sorted, and nothing of the wire."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import alorws
import alorws.errors
import alorws.protocol


#: The top level of ``alorws``, sorted: the clients, what they take and return, the models, the
#: enums, the errors. Adding a name here is a decision about the public API.
TOP_LEVEL = [
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

#: Wire machinery: in ``alorws.protocol`` (or ``alorws.errors``/``alorws.client``), never at the
#: top level. An application places orders with ``client.trading``, not by building commands.
WIRE = {
    "alorws.protocol": [
        "COMMAND_TYPES",
        "REQUEST_TYPES",
        "AnyCommand",
        "AnySubscriptionRequest",
        "Command",
        "CommandOpcode",
        "CreateLimit",
        "DataMessage",
        "InstrumentRef",
        "StatusReply",
        "SubscriptionOpcode",
        "User",
        "decode_command",
        "decode_frame",
        "encode_authorize",
        "encode_command",
        "encode_ping",
        "encode_subscribe",
        "encode_unsubscribe",
        "route",
        "validate_guid",
    ],
    "alorws.errors": ["redact", "rejection_for", "scrub"],
    "alorws.client": [
        "COMPILED_READER",
        "Endpoints",
        "LaneKind",
        "LaneState",
        "StreamBuffer",
        "resolve_endpoints",
    ],
}

PROTOCOL_MODULES = [
    "enums",
    "market",
    "account",
    "http_models",
    "backoff",
    "codec",
    "requests",
    "commands",
    "registry",
    "jwt",
]


def _names(modules: list[str]) -> list[str]:
    return [n for m in modules for n in importlib.import_module(m).__all__]


def test_top_level_exports_exactly_the_public_api() -> None:
    """alorws.__all__ is the list above, sorted, and every name resolves."""
    assert alorws.__all__ == TOP_LEVEL
    assert TOP_LEVEL == sorted(TOP_LEVEL)
    assert all(hasattr(alorws, n) for n in alorws.__all__)
    assert set(TOP_LEVEL) <= set(dir(alorws))


def test_every_exception_is_at_the_top_level() -> None:
    """Each exception class of alorws.errors is exported by alorws, and is the same class."""
    classes = [n for n in alorws.errors.__all__ if inspect.isclass(getattr(alorws.errors, n))]
    assert classes and all(getattr(alorws, n) is getattr(alorws.errors, n) for n in classes)


def test_wire_helpers_stay_in_their_packages() -> None:
    """Encoders, the router, command structs and client internals are not at the top level."""
    for module, names in WIRE.items():
        package = importlib.import_module(module)
        for name in names:
            assert name not in alorws.__all__ and not hasattr(alorws, name), name
            assert name in package.__all__, (module, name)


def test_import_alorws_loads_no_client() -> None:
    """`import alorws` in a fresh interpreter loads no asyncio, network, NATS or Arrow module;
    the first use of a client name loads it."""
    code = (
        "import sys, alorws\n"
        "heavy = {'asyncio', 'socket', 'ssl', 'aiohttp', 'picows', 'nats', 'pyarrow'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "alorws.AlorClient\n"
        "print('alorws.client.client' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split("\n")[:2] == ["[]", "True"]


def test_protocol_exports_its_modules() -> None:
    """alorws.protocol exports exactly its submodules' public names (plus model helpers)."""
    combined = _names([f"alorws.protocol.{m}" for m in PROTOCOL_MODULES])
    extra = {"timeutil", "Model", "format_class", "to_wire", "wire_keys"}
    assert len(combined) == len(set(combined))
    assert set(alorws.protocol.__all__) == set(combined) | extra
    assert all(hasattr(alorws.protocol, n) for n in alorws.protocol.__all__)


def test_public_callables_are_documented() -> None:
    """Every exported class and function has a docstring."""
    missing = [
        n
        for n in alorws.protocol.__all__ + alorws.__all__
        if (
            inspect.isclass(obj := getattr(alorws.protocol, n, None) or getattr(alorws, n))
            or inspect.isfunction(obj)
        )
        and not (getattr(obj, "__doc__", None) or "").strip()
    ]
    assert missing == []
