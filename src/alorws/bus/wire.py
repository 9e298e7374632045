"""The contract between a gateway and its consumers on NATS: subjects, messages, errors.

Both sides import this module (the consumer never imports the gateway). Every control message
is JSON (msgspec); the subscription spec is one of the request Structs of
:mod:`alorws.protocol.requests`, tagged by its ``opcode`` exactly as on ALOR's ``/ws``.

Subjects (``prefix`` defaults to ``alorws``)::

    <prefix>.ctl.subscribe | .unsubscribe | .renew      control, request/reply
    <prefix>.ctl.leader                                 a gateway started serving (core NATS)
    <prefix>.orders.<op>                                orders, request/reply
    <prefix>.md.<exchange>.<symbol>.<stream>.<hash>     market data, core NATS
    <prefix>.acct.<portfolio>.<stream>.<exchange>       account events, JetStream <PREFIX>_ACCOUNT

With failover, gateways elect the one that serves in the JetStream KV bucket
``<PREFIX>_LEADER`` (key ``leader``, value :class:`LeaderInfo`).

Payloads on data subjects are ALOR's own ``data`` objects in the subscription's wire format
(the ``format`` of the request; JSON keys of that format), so a consumer decodes them with
``decoder_for(model, format)`` into exactly the model a direct ``AlorClient`` gives.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

import msgspec

from .. import errors as _errors
from ..client.sources import is_account
from ..errors import AlorError
from ..protocol import requests as rq
from ..protocol._model import Model, to_wire
from ..protocol.enums import Format, SubscriptionOpcode


__all__ = [
    "EVENT_HEADER",
    "FORMAT_HEADER",
    "LEADER_KEY",
    "ORDER_OPS",
    "OUTAGE_HEADER",
    "ErrorInfo",
    "ErrorReply",
    "LeaderInfo",
    "OrderAckWire",
    "OrderCtl",
    "OrderReply",
    "RenewCtl",
    "RenewReply",
    "SubscribeCtl",
    "SubscribeReply",
    "UnsubscribeCtl",
    "account_stream_name",
    "account_subject",
    "encode_model",
    "error_info",
    "leader_bucket_name",
    "leader_subject",
    "market_subject",
    "raise_error",
    "rebuild_error",
    "stream_name",
    "subject_for",
    "token",
]

#: Header of a connection event (``disconnected``/``restored``) published on a data subject.
EVENT_HEADER: Final = "Alorws-Event"
#: Header of the gap marker a gateway publishes when it dropped data while its own NATS connection
#: was down: ``<node>:<outage number>``, as in :attr:`RenewReply.epoch`. A consumer whose own
#: gap covered that outage drops the marker.
OUTAGE_HEADER: Final = "Alorws-Outage"
#: Header naming the wire format of a JetStream account message.
FORMAT_HEADER: Final = "Alorws-Format"

#: The key of the leader lease in the ``<PREFIX>_LEADER`` KV bucket.
LEADER_KEY: Final = "leader"

#: Order operations served over ``<prefix>.orders.<op>``: the methods of the gateway client's
#: ``OrderClient`` of that name, with the arguments the consumer gave (``OrderCtl.args``).
ORDER_OPS: Final = frozenset(
    {
        "place_market",
        "place_limit",
        "place_stop",
        "place_stop_limit",
        "modify_market",
        "modify_limit",
        "modify_stop",
        "modify_stop_limit",
        "cancel",
    }
)

#: Short stream names used in subjects.
_STREAM_NAMES: Final[dict[SubscriptionOpcode, str]] = {
    SubscriptionOpcode.ORDER_BOOK: "book",
    SubscriptionOpcode.QUOTES: "quotes",
    SubscriptionOpcode.BARS: "bars",
    SubscriptionOpcode.ALL_TRADES: "trades",
    SubscriptionOpcode.INSTRUMENT: "instrument",
    SubscriptionOpcode.CLUSTERS: "clusters",
    SubscriptionOpcode.POSITIONS: "positions",
    SubscriptionOpcode.SUMMARIES: "summaries",
    SubscriptionOpcode.RISKS: "risks",
    SubscriptionOpcode.SPECTRA_RISKS: "spectrarisks",
    SubscriptionOpcode.TRADES: "owntrades",
    SubscriptionOpcode.ORDERS: "orders",
    SubscriptionOpcode.STOP_ORDERS: "stoporders",
}

_BAD_TOKEN: Final = re.compile(r"[^A-Za-z0-9_\-]")


# -- subjects ---------------------------------------------------------------------------------


def token(text: str) -> str:
    """``text`` as one NATS subject token (``.``, ``*``, ``>``, blanks… become ``_``)."""
    return _BAD_TOKEN.sub("_", text) or "_"


def stream_name(request: rq.SubscriptionRequest) -> str:
    """The short name of a request's stream (``quotes``, ``book``, ``orders``…)."""
    return _STREAM_NAMES[type(request).opcode]


def market_subject(prefix: str, request: rq.SubscriptionRequest) -> str:
    """``<prefix>.md.<exchange>.<symbol>.<stream>.<hash of every parameter>``.

    The hash covers the whole request (format, depth, frequency, board…), so two requests
    share a subject exactly when they would share an ALOR subscription.
    """
    digest = hashlib.blake2b(msgspec.json.encode(request), digest_size=6).hexdigest()
    code = str(getattr(request, "code", ""))
    return (
        f"{prefix}.md.{token(str(request.exchange))}.{token(code)}.{stream_name(request)}.{digest}"
    )


def account_subject(prefix: str, request: rq.SubscriptionRequest) -> str:
    """``<prefix>.acct.<portfolio>.<stream>.<exchange>``."""
    portfolio = str(getattr(request, "portfolio", ""))
    return f"{prefix}.acct.{token(portfolio)}.{stream_name(request)}.{token(str(request.exchange))}"


def subject_for(prefix: str, request: rq.SubscriptionRequest) -> str:
    """The data subject of ``request``: account streams (published to JetStream, lossless and
    replayable) or market data."""
    if is_account(request):
        return account_subject(prefix, request)
    return market_subject(prefix, request)


def account_stream_name(prefix: str) -> str:
    """The JetStream stream holding account events: ``<PREFIX>_ACCOUNT``."""
    return f"{token(prefix).upper()}_ACCOUNT"


def leader_bucket_name(prefix: str) -> str:
    """The JetStream KV bucket holding the leader lease: ``<PREFIX>_LEADER``."""
    return f"{token(prefix).upper()}_LEADER"


def leader_subject(prefix: str) -> str:
    """Where a gateway announces that it started serving: ``<prefix>.ctl.leader``."""
    return f"{prefix}.ctl.leader"


def encode_model(obj: Model, fmt: Format) -> bytes:
    """``obj`` as ALOR's ``data`` object in wire format ``fmt`` (what the server sends)."""
    return msgspec.json.encode(to_wire(obj, fmt))


# -- control messages ---------------------------------------------------------------------------


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """An exception carried in a reply: class name, message, public attributes."""

    type: str
    text: str
    attrs: dict[str, Any] = {}


class LeaderInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The leader lease's value, and the announcement of a gateway that started serving."""

    node: str
    since: float = 0.0  # wall-clock seconds when it took the lead (informational)


class ErrorReply(msgspec.Struct, frozen=True):
    """Any reply that failed: ``{"error": {...}}``."""

    error: ErrorInfo


class SubscribeCtl(msgspec.Struct, frozen=True, kw_only=True):
    """Consumer -> gateway: hold ``request`` for ``consumer`` under ``handle``."""

    consumer: str
    handle: str
    request: rq.AnySubscriptionRequest


class SubscribeReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Gateway -> consumer: where the data is (or why not).

    ``format`` is the wire format of the payloads, ``lease`` the seconds within which the
    consumer must renew, ``snapshot`` the last payload of a state stream (quotes, book…), so a
    consumer joining a running subscription starts with the current value.
    """

    subject: str = ""
    format: Format = Format.SIMPLE
    lease: float = 0.0
    snapshot: msgspec.Raw = msgspec.Raw()  # empty: none
    error: ErrorInfo | None = None


class UnsubscribeCtl(msgspec.Struct, frozen=True, kw_only=True):
    """Consumer -> gateway: release ``handle`` (or every handle of ``consumer`` if empty)."""

    consumer: str
    handle: str = ""


class RenewCtl(msgspec.Struct, frozen=True, kw_only=True):
    """Consumer -> gateway: extend the lease of ``consumer``; ``handles`` it believes held."""

    consumer: str
    handles: list[str] = []


class RenewReply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Gateway -> consumer: handles the gateway does not hold (to subscribe again).

    ``down``: handles whose ALOR subscription is in a gap now (its connection is restoring).
    ``epoch``: ``<node>:<outages>``, the gateway and how many times it lost NATS so far.
    """

    lease: float = 0.0
    missing: list[str] = []
    down: list[str] = []
    epoch: str = ""
    error: ErrorInfo | None = None


class OrderCtl(msgspec.Struct, frozen=True, kw_only=True):
    """Consumer -> gateway: one order operation; ``key`` is the idempotency key."""

    consumer: str
    key: str
    args: dict[str, Any]


class OrderAckWire(msgspec.Struct, frozen=True):
    """An :class:`~alorws.client.orders.OrderAck` on the bus."""

    order_number: str
    http_code: int
    message: str
    guid: str


class OrderReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """Gateway -> consumer: the ack or the error."""

    ack: OrderAckWire | None = None
    error: ErrorInfo | None = None


# -- errors -----------------------------------------------------------------------------------


def error_info(exc: BaseException) -> ErrorInfo:
    """Describe ``exc`` for a reply: its class, message and JSON-able attributes."""
    attrs = {
        k: v
        for k, v in vars(exc).items()
        if not k.startswith("_") and (v is None or isinstance(v, str | int | float | bool))
    }
    return ErrorInfo(type(exc).__name__, str(exc), attrs)


def rebuild_error(info: ErrorInfo) -> AlorError:
    """The exception ``info`` describes: the same alorws class (attributes restored) and the
    same message; an :class:`~alorws.errors.AlorError` naming the class if it is unknown."""
    cls = getattr(_errors, info.type, None)
    if isinstance(cls, type) and issubclass(cls, AlorError):
        exc = cls.__new__(cls)
        Exception.__init__(exc, info.text)
        for k, v in info.attrs.items():
            try:
                setattr(exc, k, v)
            except AttributeError:
                pass
        return exc
    return AlorError(f"{info.type}: {info.text}")


def raise_error(info: ErrorInfo | None) -> None:
    """Raise the exception ``info`` describes, if any."""
    if info is not None:
        raise rebuild_error(info)
