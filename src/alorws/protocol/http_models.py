"""Models of the HTTP answers that are not stream payloads: reference data and history.

Quotes, order books, orders, positions and the other snapshots reuse the stream models of
:mod:`~alorws.protocol.market` and :mod:`~alorws.protocol.account` (docs/protocol.md §8.1: the
answers have the same keys as the socket payloads). What is left is modelled here with the same
``@formats`` machinery, so ``format_class(Security, Format.SLIM)`` decodes a Slim instrument
straight into a :class:`Security`:

* :class:`Security`, one ``/md/v2/Securities`` instrument;
* :class:`HistoryPage`, one ``/md/v2/history`` answer (candles plus ``next``/``prev``);
* :class:`AllTradesPage`, one ``…/alltrades/history`` answer (``total`` plus a page of trades);
* :class:`HttpOrderAck`, the answer of the HTTP order endpoints (not a wire model: it is built by
  the client from the reply, whichever shape it had).
"""

from __future__ import annotations

import msgspec

from ._model import Count, Int64, Model, Money, Price, Rate, Size, Time, Wire, as_list, formats
from .market import Bar, Trade


__all__ = ["AllTradesPage", "HistoryPage", "HttpOrderAck", "Security"]


@formats(
    simple={
        "short_name": "shortname",
        "lot_size": "lotsize",
        "face_value": "facevalue",
        "min_step": "minstep",
        "round_to": None,
        "margin_buy": "marginbuy",
        "margin_sell": "marginsell",
        "margin_rate": "marginrate",
        "price_step": "pricestep",
        "isin": "ISIN",
        "yield_": "yield",
        "primary_board": "primary_board",
    },
    slim={
        "symbol": "sym",
        "short_name": "n",
        "description": "desc",
        "exchange": "ex",
        "market": None,
        "type": "t",
        "lot_size": "lot",
        "face_value": "fv",
        "cfi_code": "cfi",
        "cancellation": "cncl",
        "min_step": "stp",
        "round_to": None,
        "rating": "rt",
        "margin_buy": "mgb",
        "margin_sell": "mgs",
        "margin_rate": "mgrt",
        "price_step": "stppx",
        "price_max": "pxmx",
        "price_min": "pxmn",
        "theor_price": "pxt",
        "theor_price_limit": "pxtl",
        "volatility": "vl",
        "currency": "cur",
        "isin": "isin",
        "yield_": "yld",
        "board": "bd",
        "primary_board": "pbd",
        "trading_status": "st",
        "trading_status_info": "sti",
        "complex_product_category": "cpct",
        "price_multiplier": "pxmu",
        "price_shown_units": "pxu",
    },
    heavy={"isin": "ISIN", "yield_": "yield"},
)
class Security(Model, frozen=True):
    """One instrument's reference data (``/md/v2/Securities…``, docs/protocol.md §8.6).

    Names follow the Heavy keys in snake_case. Mind the two steps: ``min_step`` is the minimum
    price increment (Simple ``minstep``, Slim ``stp``), ``price_step`` the money value of one such
    increment (Simple ``pricestep``, Slim ``stppx``). Bond prices are percent of ``face_value``.
    ``round_to`` (decimals of a price) is sent in Heavy only, ``market`` not in Slim. Keys the
    server adds beyond these (Heavy's per-risk-class margins, …) are ignored.
    """

    # Declared in Simple's wire order (msgspec decodes fastest when keys come in order).
    symbol: str
    short_name: str | None = None
    description: str | None = None
    exchange: str | None = None
    market: str | None = None  # FOND | FORTS | CURR | SPBX; not in Slim
    type: str | None = None
    lot_size: Size | None = None
    face_value: Size | None = None
    cfi_code: str | None = None
    cancellation: str | None = None  # ISO-8601: delisting / expiry / maturity
    min_step: Size | None = None  # minimum price increment
    round_to: Int64 | None = None  # Heavy only
    rating: Rate | None = None
    margin_buy: Money | None = None
    margin_sell: Money | None = None
    margin_rate: Rate | None = None
    price_step: Size | None = None  # money value of one min_step
    price_max: Price | None = None
    price_min: Price | None = None
    theor_price: Price | None = None
    theor_price_limit: Price | None = None
    volatility: Rate | None = None
    currency: str | None = None
    isin: str | None = None
    yield_: Rate | None = None
    board: str | None = None
    primary_board: str | None = None
    trading_status: Int64 | None = None  # compare with enums.TradingStatus
    trading_status_info: str | None = None
    complex_product_category: str | None = None
    price_multiplier: Rate | None = None
    price_shown_units: Rate | None = None


@formats(simple={"bars": "history"}, slim={"bars": "h"}, heavy={"bars": "history"})
class HistoryPage(Model, frozen=True):
    """One ``/md/v2/history`` answer (docs/protocol.md §8.6): candles, oldest first, and the
    paging timestamps.

    ``next`` is the open time (Unix s) of the first candle after this page, ``prev`` that of the
    last candle before it; ``None`` when there is none. A range the server did not return in
    full continues at ``next`` (or, for a server that returns the newest candles, ends at
    ``prev``); the client's ``iter_history`` follows both.
    """

    bars: list[Bar] = msgspec.field(default_factory=list)
    next: Time | None = None
    prev: Time | None = None


@formats(
    simple={"trades": "list"},
    slim={"trades": "list"},
    heavy={"trades": "list"},
    wire={"trades": Wire(list[Trade] | Trade, as_list)},
)
class AllTradesPage(Model, frozen=True):
    """One ``/md/v2/Securities/{exchange}/{symbol}/alltrades/history`` answer.

    Its shape is in docs/protocol.md §8.6. ``total`` counts every trade the query matches;
    ``trades`` (wire ``list``, an array per docs/protocol.md §12.13) is the page asked for with
    ``limit``/``offset``, in the trade shape of the stream (docs/protocol.md §4.4). ALOR's own
    example gives ``list`` as a single trade object: that is read as a one-trade page.
    """

    total: Count = 0
    trades: list[Trade] = msgspec.field(default_factory=list)


class HttpOrderAck(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """The server accepted an HTTP order command (``/commandapi/…``, docs/protocol.md §8.5).

    Attributes:
        order_number: the exchange order id (``orderNumber``); ``None`` for a cancel.
        message: the server's text (``"success"``).
        req_id: the ``X-REQID`` the command was sent with; sending it again is safe.
        replayed: the server had already handled this ``req_id`` and answered with the first
            reply instead of executing the command again.
        http_code: always 200 (a refused command raises ``OrderRejected``).
    """

    order_number: str | None
    message: str
    req_id: str | None = None
    replayed: bool = False
    http_code: int = 200
