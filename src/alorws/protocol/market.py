"""Normalized models of the market-data streams (docs/protocol.md §4).

One model per stream, the same field names in every format. Times keep the wire's units:
``*_timestamp`` fields are Unix milliseconds or seconds as named, ISO strings stay strings; see
:mod:`alorws.protocol.timeutil` for conversions. Prices are ``float``; lots are ``int``.

Ranges, checked while decoding (a value outside fails as a ``FrameError`` naming the field; see
:mod:`alorws.protocol._model`): prices (trades, book levels, candles, quotes, price limits) are
signed: MOEX allows negative prices on some derivatives (commodity futures since 2020, calendar
spreads), so a negative price is a value, not an error. A trade's quantity and id are
``0..2**63-1``; volumes, open interest, timestamps, lot sizes and face values are ``>= 0``.
Every float is finite.
"""

from __future__ import annotations

import msgspec

from ._model import Count, Int64, Model, Money, Price, Rate, Size, Time, Volume, formats
from .enums import Side


__all__ = [
    "Bar",
    "BookLevel",
    "Cluster",
    "ClusterSnapshot",
    "InstrumentPatch",
    "InstrumentState",
    "OrderBook",
    "Quote",
    "Trade",
]

_UnsetPrice = Price | None | msgspec.UnsetType
_UnsetMoney = Money | None | msgspec.UnsetType
_UnsetRate = Rate | None | msgspec.UnsetType
_UnsetInt = Int64 | None | msgspec.UnsetType
_UnsetStr = str | None | msgspec.UnsetType


@formats(
    simple={
        "prev_close_price": "prev_close_price",
        "last_price": "last_price",
        "last_price_timestamp": "last_price_timestamp",
        "open_price": "open_price",
        "high_price": "high_price",
        "low_price": "low_price",
        "accrued_interest": "accrued_interest",
        "open_interest": "open_interest",
        "yield_": "yield",
        "ask_vol": "ask_vol",
        "bid_vol": "bid_vol",
        "total_ask_vol": "total_ask_vol",
        "total_bid_vol": "total_bid_vol",
        "ob_ms_timestamp": "ob_ms_timestamp",
        "lot_size": "lotsize",
        "lot_value": "lotvalue",
        "face_value": "facevalue",
        "change_percent": "change_percent",
        "currency": None,
    },
    slim={
        "symbol": "sym",
        "exchange": "ex",
        "description": "desc",
        "currency": None,
        "prev_close_price": None,
        "last_price": "c",
        "last_price_timestamp": "tst",
        "open_price": "o",
        "high_price": "h",
        "low_price": "l",
        "volume": "v",
        "accrued_interest": "acci",
        "open_interest": "oi",
        "yield_": "y",
        "ask_vol": "av",
        "bid_vol": "bv",
        "total_ask_vol": "tav",
        "total_bid_vol": "tbv",
        "ob_ms_timestamp": "tso",
        "lot_size": "lot",
        "lot_value": "lotv",
        "face_value": "fv",
        "type": "t",
        "change": None,
        "change_percent": None,
    },
    heavy={"yield_": "yield"},
    simple_extras={"accruedInt": lambda q: q.accrued_interest},
)
class Quote(Model, frozen=True):
    """Quote / ticker summary of one instrument (``QuotesSubscribe``, docs/protocol.md §4.2). Full
    state each time.

    ``ask``/``bid`` are ``None`` when that side of the book is empty. Volumes are in lots.
    """

    # Declared in Simple's wire order (TV-07): msgspec decodes fastest when keys come in order.
    symbol: str
    exchange: str | None = None
    description: str | None = None
    currency: str | None = None  # Heavy only
    prev_close_price: Price | None = None  # not in Slim
    last_price: Price | None = None
    last_price_timestamp: Time | None = None  # Unix seconds
    high_price: Price | None = None
    low_price: Price | None = None
    volume: Volume | None = None
    open_interest: Volume | None = None
    ask: Price | None = None
    bid: Price | None = None
    ask_vol: Volume | None = None
    bid_vol: Volume | None = None
    ob_ms_timestamp: Time | None = None  # Unix milliseconds
    open_price: Price | None = None
    yield_: Rate | None = None
    lot_size: Size | None = None
    lot_value: Money | None = None
    face_value: Size | None = None
    type: str | None = None
    total_bid_vol: Volume | None = None
    total_ask_vol: Volume | None = None
    accrued_interest: Money | None = None
    change: Price | None = None  # not in Slim
    change_percent: Rate | None = None  # not in Slim

    @property
    def spread(self) -> float | None:
        """``ask - bid``, or ``None`` if either side is empty."""
        if self.ask is None or self.bid is None:
            return None
        return self.ask - self.bid


@formats(
    simple={"yield_": None},
    slim={"price": "p", "volume": "v", "yield_": "y"},
    heavy={"yield_": None},
    omit_none=frozenset({"yield_"}),
)
class BookLevel(Model, frozen=True):
    """One price level of an order book: price and volume in lots (Slim bonds add ``yield_``)."""

    price: Price
    volume: Volume
    yield_: Rate | None = None


@formats(
    simple={"ms_timestamp": "ms_timestamp"},
    slim={"bids": "b", "asks": "a", "ms_timestamp": "t", "existing": "h"},
    heavy={},
    simple_extras={
        "snapshot": lambda b: b.existing,
        "timestamp": lambda b: None if b.ms_timestamp is None else b.ms_timestamp // 1000,
    },
)
class OrderBook(Model, frozen=True):
    """The whole top-``depth`` order book (``OrderBookGetAndSubscribe``, docs/protocol.md §4.1).

    Every message replaces the previous book (docs/protocol.md §12.5). Bids run best (highest)
    first, asks best (lowest) first; either side may be empty. ``existing`` is true for the initial
    snapshot. Both sides are required: every real book carries them, even empty (outside trading
    hours), so an object without them on a book stream is a bad frame, not an empty book.
    """

    bids: list[BookLevel]
    asks: list[BookLevel]
    ms_timestamp: Time | None = None  # Unix milliseconds
    existing: bool = False

    @property
    def best_bid(self) -> BookLevel | None:
        """The highest bid, or ``None``."""
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> BookLevel | None:
        """The lowest ask, or ``None``."""
        return self.asks[0] if self.asks else None


@formats(slim={"time": "t", "open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"})
class Bar(Model, frozen=True):
    """One candle (``BarsGetAndSubscribe``, docs/protocol.md §4.3). ``time`` is the candle's open,
    Unix seconds.

    The forming candle is re-sent with the same ``time``; a later ``time`` starts a new candle.
    """

    time: Time
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Volume


@formats(
    simple={"order_no": "orderno"},
    slim={
        "order_no": None,
        "symbol": "sym",
        "board": "bd",
        "qty": "q",
        "price": "px",
        "time": None,
        "timestamp": "t",
        "side": "s",
        "existing": "h",
    },
    heavy={"order_no": None},
)
class Trade(Model, frozen=True):
    """One anonymous trade from the tape (``AllTradesGetAndSubscribe``, docs/protocol.md §4.4).

    ``timestamp`` is Unix milliseconds; ``time`` the ISO string Simple/Heavy also send. ``side``
    is the aggressor's. ``existing`` marks trades replayed from ``depth``.
    """

    id: Count
    symbol: str | None = None
    board: str | None = None
    qty: Count = 0
    price: Price = 0.0
    time: str | None = None
    timestamp: Time | None = None
    side: Side | None = None
    oi: Volume | None = None
    existing: bool = False
    order_no: str | Count | None = None  # Simple only


@formats(
    slim={
        "symbol": "sym",
        "exchange": "ex",
        "board": "bd",
        "trading_status": "st",
        "trading_status_info": "sti",
        "price_min": "pxmn",
        "price_max": "pxmx",
        "margin_buy": "mgb",
        "margin_sell": "mgs",
        "margin_synthetic": "mgsnt",
        "theor_price": "pxt",
        "theor_price_limit": "pxtl",
        "volatility": "vl",
    },
    simple={"margin_synthetic": "marginSyntetic"},
    heavy={"margin_synthetic": "marginSyntetic"},
)
class InstrumentPatch(Model, frozen=True):
    """One ``InstrumentsGetAndSubscribeV2`` message (docs/protocol.md §4.5).

    The first message is complete; later ones carry only what changed (plus the ticker). Fields
    absent from the message are ``msgspec.UNSET``. Fold patches with :meth:`InstrumentState.apply`.
    """

    symbol: str
    exchange: _UnsetStr = msgspec.UNSET
    board: _UnsetStr = msgspec.UNSET
    trading_status: _UnsetInt = msgspec.UNSET
    trading_status_info: _UnsetStr = msgspec.UNSET
    price_min: _UnsetPrice = msgspec.UNSET
    price_max: _UnsetPrice = msgspec.UNSET
    margin_buy: _UnsetMoney = msgspec.UNSET
    margin_sell: _UnsetMoney = msgspec.UNSET
    margin_synthetic: _UnsetMoney = msgspec.UNSET
    theor_price: _UnsetPrice = msgspec.UNSET
    theor_price_limit: _UnsetPrice = msgspec.UNSET
    volatility: _UnsetRate = msgspec.UNSET


class InstrumentState(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The current trading state of an instrument, folded from :class:`InstrumentPatch` messages.

    ``trading_status`` is the raw exchange code; compare it with
    :class:`~alorws.protocol.enums.TradingStatus` members.
    """

    symbol: str
    exchange: str | None = None
    board: str | None = None
    trading_status: int | None = None
    trading_status_info: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    margin_buy: float | None = None
    margin_sell: float | None = None
    margin_synthetic: float | None = None
    theor_price: float | None = None
    theor_price_limit: float | None = None
    volatility: float | None = None

    @classmethod
    def from_patch(cls, patch: InstrumentPatch) -> InstrumentState:
        """Start a state from the first (complete) message."""
        return cls(symbol=patch.symbol).apply(patch)

    def apply(self, patch: InstrumentPatch) -> InstrumentState:
        """Return a new state with the fields ``patch`` carries overlaid on this one."""
        changes = {
            name: value
            for name in _PATCH_FIELDS
            if (value := getattr(patch, name)) is not msgspec.UNSET
        }
        return msgspec.structs.replace(self, **changes)


_PATCH_FIELDS = tuple(f.name for f in msgspec.structs.fields(InstrumentPatch) if f.name != "symbol")


@formats(heavy={"buy_qty": "buyQty", "sell_qty": "sellQty"})
class Cluster(Model, frozen=True):
    """Traded volume at one price within a cluster period."""

    price: Price
    buy_qty: Volume = 0
    sell_qty: Volume = 0


@formats()
class ClusterSnapshot(Model, frozen=True):
    """Trade clusters of one period (``ClustersGetAndSubscribe``, the web terminal's
    opcode, docs/protocol.md §4.13)."""

    timestamp: Time
    trade_clusters: list[Cluster] = msgspec.field(default_factory=list)
