"""``/ws`` subscription requests as hashable value objects, and their wire encoding.

A request says *what* is subscribed (docs/protocol.md §4); it holds no ``guid`` and no ``token``
(docs/protocol.md §3.2). Two equal requests mean one server subscription, so they can key a
de-duplicating registry. The full frame is built at send time by :func:`encode_subscribe`, which
splices the guid and the current token into the request's JSON (docs/protocol.md §2.5: every ``/ws``
request carries the token).

Every request validates itself on construction and on decoding (the simulator decodes client
frames with :data:`AnySubscriptionRequest`), raising :class:`~alorws.errors.InvalidArgumentError`
(wrapped by msgspec into ``msgspec.ValidationError`` when decoding) that names the field.
Enum-like values are accepted in any casing and always sent in their documented spelling
(docs/protocol.md §3.2).

Decoding accepts what real clients send (docs/protocol.md §12.15): keys a request does not have
(``guid``, ``token``, the web terminal's ``repeatCount``, AlorPy's ``prev``) are ignored; an
``instrumentGroup`` of ``null`` or ``""`` means no board; ``depth: 0`` asks the tape for no
history; the web terminal's older opcode ``AllTradesSubscribe`` decodes as an all-trades request.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any, ClassVar, Final, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from ..errors import InvalidArgumentError
from ._model import DECIMAL_MAX, INT64_MAX
from .enums import Exchange, Format, OrderStatus, SubscriptionOpcode


__all__ = [
    "REQUEST_TYPES",
    "AllTradesRequest",
    "AnySubscriptionRequest",
    "BarsRequest",
    "ClustersRequest",
    "InstrumentRequest",
    "OrderBookRequest",
    "OrdersRequest",
    "OwnTradesRequest",
    "PositionsRequest",
    "QuotesRequest",
    "RisksRequest",
    "SpectraRisksRequest",
    "StopOrdersRequest",
    "SubscriptionRequest",
    "SummariesRequest",
    "encode_ping",
    "encode_subscribe",
    "encode_unsubscribe",
    "validate_guid",
]

E = TypeVar("E", bound=enum.StrEnum)

GUID_MAX_LEN: Final = 50  # rd-hub-go's cap (unconfirmed); we keep to it (docs/protocol.md §3.2)
_TF_LETTERS: Final = frozenset("DWMY")  # docs/protocol.md §4.3: day, week, month, year


# -- shared checks (also used by commands.py) ------------------------------------------------


def validate_guid(guid: object) -> str:
    """Check a client guid: 1..50 printable ASCII characters without ``"`` or ``\\``."""
    if type(guid) is not str:
        raise InvalidArgumentError("guid", f"must be a str, got {type(guid).__name__}")
    if not guid:
        raise InvalidArgumentError("guid", "must not be empty; use e.g. a uuid4 string")
    if len(guid) > GUID_MAX_LEN:
        raise InvalidArgumentError(
            "guid", f"is {len(guid)} characters; use at most {GUID_MAX_LEN} (e.g. a uuid4)"
        )
    # Printable ASCII without quote/backslash: the guid can be spliced into JSON verbatim.
    if not guid.isascii() or not guid.isprintable() or '"' in guid or "\\" in guid:
        raise InvalidArgumentError(
            "guid", f"{guid!r} has characters other than printable ASCII (no quotes/backslashes)"
        )
    return guid


def _text(field: str, value: object) -> str:
    """A required, non-blank string."""
    if type(value) is not str:
        raise InvalidArgumentError(field, f"must be a str, got {type(value).__name__}")
    if not value.strip():
        raise InvalidArgumentError(field, "must not be empty")
    return value


def _flag(field: str, value: object) -> bool:
    """A bool (not an int posing as one)."""
    if type(value) is not bool:
        raise InvalidArgumentError(field, f"must be True or False, got {value!r}")
    return value


def _int(field: str, value: object, low: int, high: int | None = None) -> int:
    """An int (not a bool) in ``low..high``; without ``high``, at most ``2**63 - 1`` (the
    server's integers are 64-bit)."""
    if type(value) is not int:
        raise InvalidArgumentError(field, f"must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        if high is not None:
            bounds = f"{low}..{high}"
        else:
            bounds = "> 0" if low == 1 else f">= {low}"
        raise InvalidArgumentError(field, f"must be {bounds}, got {value}")
    if value > INT64_MAX:
        raise InvalidArgumentError(
            field, f"must be at most 2**63 - 1 (a 64-bit integer on the server), got {value}"
        )
    return value


def _positive_number(field: str, value: object) -> float:
    """A finite number > 0 and at most ``DECIMAL_MAX`` (the server's ``decimal`` holds no
    more), normalized to float (ints and Decimals are accepted)."""
    if isinstance(value, bool | str | bytes):  # float() would take "1.5" and True
        raise InvalidArgumentError(field, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)  # type: ignore[arg-type]  # int, float, Decimal, Fraction, numpy
    except (TypeError, ValueError):
        raise InvalidArgumentError(field, f"must be a number, got {type(value).__name__}") from None
    except OverflowError:  # an int or Fraction beyond the float range
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise InvalidArgumentError(field, f"must be a finite number > 0, got {value!r}")
    if number > DECIMAL_MAX:
        raise InvalidArgumentError(
            field, f"must be at most {DECIMAL_MAX:.4g} (the server's decimal range), got {value!r}"
        )
    return number


def _board(value: object) -> object:
    """A board code (docs/protocol.md §3.6); ``None`` or ``""`` (what the web terminal sends) mean
    no board."""
    if value is None or value == "":
        return UNSET
    return _text("instrument_group", value)


def _enum(field: str, cls: type[E], value: object) -> E:
    """Coerce ``value`` (a member or any-case string) to a member of ``cls``."""
    if type(value) is cls:
        return value
    allowed = ", ".join(m.value for m in cls)
    if not isinstance(value, str):
        raise InvalidArgumentError(field, f"must be one of {allowed}, got {type(value).__name__}")
    try:
        return cls(value)
    except ValueError:
        raise InvalidArgumentError(field, f"{value!r} is not one of {allowed}") from None


def _token_json(token: object) -> bytes:
    """The token as a JSON string; its value never appears in an error message."""
    if type(token) is not str or not token:
        raise InvalidArgumentError("token", "must be a non-empty str (the access JWT)")
    return _ENCODER.encode(token)


def _tf(value: object) -> str:
    """Seconds as a positive integer, or D/W/M/Y (docs/protocol.md §4.3); normalized to the wire
    string."""
    if type(value) is int:
        if value > 0:
            return str(value)
    elif type(value) is str:
        text = value.strip().upper()
        if text in _TF_LETTERS:
            return text
        if text.isascii() and text.isdigit() and int(text) > 0:
            return str(int(text))
    raise InvalidArgumentError(
        "tf", f"{value!r} is not a timeframe; use seconds (e.g. 60 or '300') or 'D', 'W', 'M', 'Y'"
    )


def _statuses(value: object) -> tuple[OrderStatus, ...]:
    """A tuple of order statuses (any iterable of members or strings is accepted;
    docs/protocol.md §4.11)."""
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise InvalidArgumentError(
            "order_statuses", f"must be a tuple of statuses, got {type(value).__name__}"
        )
    return tuple(_enum("order_statuses", OrderStatus, v) for v in value)


# field name -> check returning the normalized value. UNSET values are never checked.
_CHECKS: Final[dict[str, Callable[[Any], Any]]] = {
    "exchange": lambda v: _enum("exchange", Exchange, v),
    "format": lambda v: _enum("format", Format, v),
    "code": lambda v: _text("code", v),  # docs/protocol.md §4: ticker, required
    "portfolio": lambda v: _text("portfolio", v),  # docs/protocol.md §4.6-4.12: required
    "instrument_group": _board,  # docs/protocol.md §3.6: board
    # ms (docs/protocol.md §3.6); the server clamps it up to ``Format.min_frequency_ms``
    # (docs/protocol.md §12.4) — we do not.
    "frequency": lambda v: _int("frequency", v, 0),
    "skip_history": lambda v: _flag("skip_history", v),  # docs/protocol.md §3.6
    "split_adjust": lambda v: _flag("split_adjust", v),  # docs/protocol.md §4.3
    "include_virtual_trades": lambda v: _flag("include_virtual_trades", v),  # docs/protocol.md §4.4
    "slice_mode": lambda v: _text("slice_mode", v),  # docs/protocol.md §4.3: sent by the SDK only
    "tf": _tf,  # docs/protocol.md §4.3 and docs/protocol.md §4.13
    "from_": lambda v: _int("from_", v, 0),  # docs/protocol.md §4.3: UTC Unix seconds
    "order_statuses": _statuses,  # docs/protocol.md §4.11 and docs/protocol.md §4.12
}


# -- requests ---------------------------------------------------------------------------------


class SubscriptionRequest(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    rename="camel",
    tag_field="opcode",
    gc=False,
    repr_omit_defaults=True,
):
    """Base of every ``/ws`` subscription request: the envelope without guid and token
    (docs/protocol.md §3.2)."""

    opcode: ClassVar[SubscriptionOpcode]
    # Depth bounds (low, high; docs/protocol.md §4.1) for requests that have a ``depth`` field.
    _depth_range: ClassVar[tuple[int, int]] = (1, 50)

    exchange: Exchange = Exchange.MOEX  # docs/protocol.md §3.2
    format: Format = Format.SIMPLE  # docs/protocol.md §3.5: also sets the minimum frequency

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is UNSET:
                continue
            if name == "depth":
                low, high = self._depth_range
                new = _int("depth", value, low, high)
            else:
                check = _CHECKS.get(name)
                if check is None:
                    continue
                new = check(value)
            if new is not value:
                msgspec.structs.force_setattr(self, name, new)


class OrderBookRequest(
    SubscriptionRequest, frozen=True, kw_only=True, tag="OrderBookGetAndSubscribe"
):
    """Order book (Level 2), the whole top-``depth`` book per message (docs/protocol.md §4.1)."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.ORDER_BOOK

    code: str
    instrument_group: str | None | UnsetType = UNSET
    depth: int = 20  # levels per side, 1..50
    frequency: int | UnsetType = UNSET


class QuotesRequest(SubscriptionRequest, frozen=True, kw_only=True, tag="QuotesSubscribe"):
    """Quotes / ticker summary (docs/protocol.md §4.2)."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.QUOTES

    code: str
    instrument_group: str | None | UnsetType = UNSET
    frequency: int | UnsetType = UNSET


class BarsRequest(SubscriptionRequest, frozen=True, kw_only=True, tag="BarsGetAndSubscribe"):
    """Candles (docs/protocol.md §4.3); ``tf`` is normalized to its wire string
    (60 -> "60", "d" -> "D")."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.BARS

    code: str
    tf: str | int
    from_: int = msgspec.field(name="from")  # UTC Unix seconds of the first candle
    skip_history: bool | UnsetType = UNSET
    split_adjust: bool | UnsetType = UNSET
    instrument_group: str | None | UnsetType = UNSET
    frequency: int | UnsetType = UNSET
    slice_mode: str | UnsetType = UNSET  # only the official SDK sends it; its meaning is unknown


class AllTradesRequest(
    SubscriptionRequest, frozen=True, kw_only=True, tag="AllTradesGetAndSubscribe"
):
    """Anonymous tape (all trades), optionally preceded by the last ``depth`` trades
    (``0``, AlorPy's default, asks for none; docs/protocol.md §4.4)."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.ALL_TRADES
    _depth_range: ClassVar[tuple[int, int]] = (0, 5000)  # at most 5000; 0 = no history

    code: str
    instrument_group: str | None | UnsetType = UNSET
    depth: int | UnsetType = UNSET
    include_virtual_trades: bool | UnsetType = UNSET


class InstrumentRequest(
    SubscriptionRequest, frozen=True, kw_only=True, tag="InstrumentsGetAndSubscribeV2"
):
    """Instrument status and limits (full first message, then patches; docs/protocol.md §4.5)."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.INSTRUMENT

    code: str
    instrument_group: str | None | UnsetType = UNSET


class PositionsRequest(
    SubscriptionRequest, frozen=True, kw_only=True, tag="PositionsGetAndSubscribeV2"
):
    """Positions (securities and money) of one portfolio (docs/protocol.md §4.6)."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.POSITIONS

    portfolio: str
    instrument_group: str | None | UnsetType = UNSET  # board (AlorPy sends it)
    skip_history: bool | UnsetType = UNSET


class SummariesRequest(
    SubscriptionRequest, frozen=True, kw_only=True, tag="SummariesGetAndSubscribeV2"
):
    """Portfolio summary (docs/protocol.md §4.7)."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.SUMMARIES

    portfolio: str
    instrument_group: str | None | UnsetType = UNSET  # board (AlorPy sends it)
    skip_history: bool | UnsetType = UNSET


class RisksRequest(SubscriptionRequest, frozen=True, kw_only=True, tag="RisksGetAndSubscribe"):
    """Portfolio risks (docs/protocol.md §4.8)."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.RISKS

    portfolio: str
    instrument_group: str | None | UnsetType = UNSET  # board (AlorPy sends it)
    skip_history: bool | UnsetType = UNSET


class SpectraRisksRequest(
    SubscriptionRequest, frozen=True, kw_only=True, tag="SpectraRisksGetAndSubscribe"
):
    """FORTS (derivatives) risks (docs/protocol.md §4.9)."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.SPECTRA_RISKS

    portfolio: str
    instrument_group: str | None | UnsetType = UNSET  # board (AlorPy sends it)
    skip_history: bool | UnsetType = UNSET


class OwnTradesRequest(
    SubscriptionRequest, frozen=True, kw_only=True, tag="TradesGetAndSubscribeV2"
):
    """Own trades (fills) of one portfolio (docs/protocol.md §4.10)."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.TRADES

    portfolio: str
    instrument_group: str | None | UnsetType = UNSET  # board (AlorPy sends it)
    skip_history: bool | UnsetType = UNSET


class OrdersRequest(SubscriptionRequest, frozen=True, kw_only=True, tag="OrdersGetAndSubscribeV2"):
    """Own market and limit orders (docs/protocol.md §4.11); ``order_statuses`` filters the history
    replay only."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.ORDERS

    portfolio: str
    instrument_group: str | None | UnsetType = UNSET  # board (AlorPy sends it)
    skip_history: bool | UnsetType = UNSET
    order_statuses: tuple[OrderStatus, ...] | UnsetType = UNSET


class StopOrdersRequest(
    SubscriptionRequest, frozen=True, kw_only=True, tag="StopOrdersGetAndSubscribeV2"
):
    """Own stop / stop-limit orders (docs/protocol.md §4.12); ``order_statuses`` filters the history
    replay only."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.STOP_ORDERS

    portfolio: str
    instrument_group: str | None | UnsetType = UNSET  # board (AlorPy sends it)
    skip_history: bool | UnsetType = UNSET
    order_statuses: tuple[OrderStatus, ...] | UnsetType = UNSET


class ClustersRequest(
    SubscriptionRequest, frozen=True, kw_only=True, tag="ClustersGetAndSubscribe"
):
    """Trade clusters, an opcode only the web terminal uses (docs/protocol.md §4.13); ``tf`` as
    in :class:`BarsRequest`."""

    opcode: ClassVar[SubscriptionOpcode] = SubscriptionOpcode.CLUSTERS

    code: str
    tf: str | int
    from_: int = msgspec.field(name="from")  # UTC Unix seconds


class _AllTradesSubscribe(AllTradesRequest, frozen=True, kw_only=True, tag="AllTradesSubscribe"):
    """The web terminal's older opcode of the all-trades tape, decoding only
    (docs/protocol.md §4.4).

    An instance is an :class:`AllTradesRequest` in every respect but its class and the opcode
    it would be re-encoded with; alorws itself always sends ``AllTradesGetAndSubscribe``.
    """


AnySubscriptionRequest = (
    OrderBookRequest
    | QuotesRequest
    | BarsRequest
    | AllTradesRequest
    | _AllTradesSubscribe
    | InstrumentRequest
    | PositionsRequest
    | SummariesRequest
    | RisksRequest
    | SpectraRisksRequest
    | OwnTradesRequest
    | OrdersRequest
    | StopOrdersRequest
    | ClustersRequest
)
"""Tagged union of every request: ``msgspec.json.decode(frame, type=AnySubscriptionRequest)``."""

#: The request class of each subscription opcode.
REQUEST_TYPES: Final[dict[SubscriptionOpcode, type[SubscriptionRequest]]] = {
    cls.opcode: cls
    for cls in (
        OrderBookRequest,
        QuotesRequest,
        BarsRequest,
        AllTradesRequest,
        InstrumentRequest,
        PositionsRequest,
        SummariesRequest,
        RisksRequest,
        SpectraRisksRequest,
        OwnTradesRequest,
        OrdersRequest,
        StopOrdersRequest,
        ClustersRequest,
    )
}


# -- encoding ---------------------------------------------------------------------------------

_ENCODER: Final = msgspec.json.Encoder()


def encode_subscribe(request: SubscriptionRequest, *, guid: str, token: str) -> bytes:
    """The full subscribe frame: ``request``'s fields plus ``guid`` and ``token``
    (docs/protocol.md §3.2)."""
    _check_request(request)
    validate_guid(guid)  # before the token, as the order of the arguments says
    return _subscribe_frame(request, guid, _frame_tail(token))


def encode_unsubscribe(guid: str, token: str) -> bytes:
    """``{"opcode":"unsubscribe","guid":…,"token":…}``: cancel subscription ``guid``
    (docs/protocol.md §3.8)."""
    validate_guid(guid)
    return _unsubscribe_frame(guid, _frame_tail(token))


def encode_ping(guid: str, token: str) -> bytes:
    """``{"opcode":"ping","guid":…,"confirm":true,"token":…}``: application keep-alive
    (docs/protocol.md §3.7)."""
    validate_guid(guid)
    return _ping_frame(guid, _frame_tail(token))


# A burst of frames (a restore: thousands of subscribes) shares one token: the encoders below
# take its tail, checked and encoded once, where encode_subscribe() does it per frame.


def _frame_tail(token: str) -> bytes:
    """``","token":<token as JSON>}``: how every frame signed with ``token`` ends, after its guid.

    For ``_subscribe_frame()``, ``_unsubscribe_frame()`` and ``_ping_frame()``; build it once
    per burst.
    """
    return b'","token":' + _token_json(token) + b"}"


def _subscribe_frame(request: SubscriptionRequest, guid: str, tail: bytes) -> bytes:
    """:func:`encode_subscribe` with the token's ``_frame_tail()`` built once for a burst."""
    if type(request) not in _REQUEST_CLASSES:
        _check_request(request)
    body = _ENCODER.encode(request)  # b'{"opcode":...}'; never empty, so "," is right
    return body[:-1] + b',"guid":"' + validate_guid(guid).encode("ascii") + tail


def _unsubscribe_frame(guid: str, tail: bytes) -> bytes:
    """:func:`encode_unsubscribe` with the token's ``_frame_tail()`` built once for a burst."""
    return b'{"opcode":"unsubscribe","guid":"' + validate_guid(guid).encode("ascii") + tail


def _ping_frame(guid: str, tail: bytes) -> bytes:
    """:func:`encode_ping` with the token's ``_frame_tail()``."""
    guid_bytes = validate_guid(guid).encode("ascii")
    return b'{"opcode":"ping","guid":"' + guid_bytes + b'","confirm":true' + tail[1:]


#: Request classes already checked by _check_request (a set lookup is cheaper than isinstance
#: on a msgspec Struct subclass).
_REQUEST_CLASSES: set[type] = set()


def _check_request(request: object) -> None:
    if not isinstance(request, SubscriptionRequest):
        raise InvalidArgumentError(
            "request", f"expected a SubscriptionRequest, got {type(request).__name__}"
        )
    _REQUEST_CLASSES.add(type(request))
