"""The HTTP API client: reference data, snapshots, history, portfolio views, HTTP orders.

One :class:`HttpClient` holds one ``aiohttp.ClientSession`` (keep-alive, a bounded connection
pool) for its whole life, created lazily in the event loop that first uses it. Every request
carries the current access token from a :class:`TokenSource` (a
:class:`~alorws.client.auth.TokenManager` is one), or none for the endpoints that allow anonymous
access (docs/protocol.md §8.3) when the client has no token source (ALOR serves those 15 minutes
late).

Answers are decoded straight into the same models the streams use (``Quote``, ``OrderBook``,
``Bar``, ``Order``, …, see :mod:`alorws.protocol.market` / :mod:`alorws.protocol.account`) plus
:class:`~alorws.protocol.http_models.Security` and ``HistoryPage``, in the format chosen per
call (Simple by default).

Failure policy, per request:

* **401**: the token is refreshed once (forced) and the request sent again; a second 401 raises
  :class:`~alorws.errors.TokenRejected`.
* **429**: wait ``Retry-After`` (or a backoff delay when the header is missing) and retry, a
  bounded number of times; then :class:`~alorws.errors.ServerLimitExceeded`.
* **5xx, network failures, timeouts**: retry with a bounded :class:`Backoff`; then
  :class:`~alorws.errors.ConnectError` / :class:`~alorws.errors.TransportTimeout`. Only requests
  that are safe to repeat are retried after they may have reached the server: every GET, and
  order commands (their ``X-REQID`` makes a repeat return the first answer). A cancel is
  retried only when the request provably never left (connection refused, 401, 429).
* **other 4xx**: :func:`~alorws.errors.rejection_for` (``OrderRejected`` on order endpoints).
* **unreadable JSON**: :class:`~alorws.errors.FrameError`.

Arguments are checked before anything is sent (:class:`~alorws.errors.InvalidArgumentError`
names the argument). No token ever appears in a log line, ``repr`` or exception text.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import quote

import msgspec

from ..errors import (
    FrameError,
    InvalidArgumentError,
    OrderRejected,
    OrderStatusUnknown,
    RemoteProtocolError,
    TransportError,
)
from ..frames import Bars
from ..protocol._model import DECIMAL_MAX, format_class
from ..protocol.account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from ..protocol.commands import (
    Command,
    CreateLimit,
    CreateMarket,
    CreateStop,
    CreateStopLimit,
    UpdateLimit,
    UpdateMarket,
    UpdateStop,
    UpdateStopLimit,
)
from ..protocol.enums import Exchange, Format, Side
from ..protocol.http_models import AllTradesPage, HistoryPage, HttpOrderAck, Security
from ..protocol.market import Bar, OrderBook, Quote, Trade
from ..protocol.requests import _enum, _int, _text, _tf
from ..protocol.timeutil import to_seconds
from ._http_transport import (
    DEFAULT_HTTP_RETRY,
    MAX_MESSAGE,
    HttpTransport,
    OrderReply,
    Replayed,
    order_reply,
)


if TYPE_CHECKING:
    from .barstore import BarStore

__all__ = [
    "DEFAULT_HTTP_RETRY",
    "HistoryApi",
    "HttpClient",
    "MarketSnapshotsApi",
    "OrdersApi",
    "PortfolioViewsApi",
    "ReferenceDataApi",
]

_ORDERS: Final = "/commandapi/warptrans/TRADE/v2/client/orders"
#: The order kinds of ``POST …/actions/{kind}`` (docs/protocol.md §8.5) and the command classes
#: that describe them.
_CREATE: Final[dict[str, type[Command]]] = {
    "market": CreateMarket,
    "limit": CreateLimit,
    "stop": CreateStop,
    "stopLimit": CreateStopLimit,
}
_UPDATE: Final[dict[str, type[Command]]] = {
    "market": UpdateMarket,
    "limit": UpdateLimit,
    "stop": UpdateStop,
    "stopLimit": UpdateStopLimit,
}
#: Keys of a /cws command that the HTTP endpoints do not take (they are in the URL/headers).
_NOT_IN_BODY: Final = ("opcode", "guid", "checkDuplicates", "orderId")
_SECTORS: Final = ("FORTS", "FOND", "CURR")  # docs/protocol.md §8.3: Securities `sector`
_MARKETS: Final = ("FORTS", "FOND", "CURR", "SPBX")  # Securities/{exchange} `market`
#: Characters never allowed in a path argument (ticker, board, portfolio, order id).
_BAD_PATH_CHARS: Final = frozenset(" /\\?#%,:;\t\r\n")
_REQ_ID_MAX: Final = 100

Kind = Literal["market", "limit", "stop", "stopLimit"]


# -- argument checks (no I/O) --------------------------------------------------------------------


def _segment(field: str, value: object) -> str:
    """A non-empty path argument without separators or spaces, URL-quoted."""
    text = _text(field, value)
    bad = sorted(_BAD_PATH_CHARS.intersection(text))
    if bad or not text.isprintable():
        raise InvalidArgumentError(field, f"{text!r} has characters not allowed here: {bad}")
    if text in (".", ".."):  # a dot segment would move the URL (and a cache path) up a level
        raise InvalidArgumentError(field, f"{text!r} is not a name")
    return quote(text, safe="")


def _exchange(value: object, field: str = "exchange") -> str:
    return _enum(field, Exchange, value).value


def _choice(field: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value.strip().upper() not in allowed:
        raise InvalidArgumentError(field, f"{value!r} is not one of {', '.join(allowed)}")
    return value.strip().upper()


def _bool(field: str, value: object) -> str:
    if type(value) is not bool:
        raise InvalidArgumentError(field, f"must be True or False, got {value!r}")
    return "true" if value else "false"


def _seconds(field: str, value: object) -> int:
    """Unix seconds from an int or an aware (or UTC-naive) datetime."""
    if isinstance(value, datetime):
        return to_seconds(value)
    return _int(field, value, 0)


def _opt_int(field: str, value: int | None, low: int, high: int | None = None) -> str | None:
    return None if value is None else str(_int(field, value, low, high))


def _opt_price(field: str, value: float | None) -> str | None:
    """A price filter: any finite number in the server's range, negative included (MOEX
    trades some derivatives at negative prices)."""
    if value is None:
        return None
    if isinstance(value, bool | str | bytes):  # float() would take "1.5" and True
        raise InvalidArgumentError(field, f"must be a number, got {type(value).__name__}")
    try:
        number = float(value)  # int, float, Decimal, Fraction
    except (TypeError, ValueError):
        raise InvalidArgumentError(field, f"must be a number, got {type(value).__name__}") from None
    except OverflowError:  # an int beyond the float range
        number = math.inf
    if not -DECIMAL_MAX <= number <= DECIMAL_MAX:  # also false for nan
        raise InvalidArgumentError(
            field, f"must be a finite number within ±{DECIMAL_MAX:.4g}, got {value!r}"
        )
    return repr(number)


def _opt_bool(field: str, value: bool | None) -> str | None:
    return None if value is None else _bool(field, value)


def _req_id(value: object) -> str:
    """An ``X-REQID``: 1..100 printable ASCII characters (it is sent as a header)."""
    if type(value) is not str or not value:
        raise InvalidArgumentError("req_id", "must be a non-empty str")
    if len(value) > _REQ_ID_MAX or not value.isascii() or not value.isprintable():
        raise InvalidArgumentError(
            "req_id", f"must be 1..{_REQ_ID_MAX} printable ASCII characters, got {value!r}"
        )
    return value


def _kind(value: object) -> str:
    if isinstance(value, str):
        for kind in _CREATE:
            if kind.casefold() == value.casefold():
                return kind
    raise InvalidArgumentError("kind", f"{value!r} is not one of {', '.join(_CREATE)}")


def _ticker(item: object) -> str:
    """``"MOEX:SBER"``, ``"SBER"`` (MOEX) or ``("MOEX", "SBER")`` -> quoted ``EX:SYM``."""
    if isinstance(item, tuple) and len(item) == 2:
        exchange, symbol = item
    elif isinstance(item, str):
        exchange, _, symbol = item.strip().rpartition(":")
        exchange = exchange or Exchange.MOEX.value
    else:
        raise InvalidArgumentError(
            "symbols", f"items must be 'EX:SYM' strings or (exchange, symbol), got {item!r}"
        )
    return f"{_exchange(exchange, 'symbols')}:{_segment('symbols', symbol)}"


def _params(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def _command_body(cmd: Command) -> dict[str, Any]:
    out = msgspec.to_builtins(cmd)
    for key in _NOT_IN_BODY:
        out.pop(key, None)
    return dict(out)


def _order_body(
    cls: type[Command], body: Mapping[str, Any] | Command, order_id: str | None
) -> tuple[dict[str, Any], str]:
    """Check ``body`` against the command class; return the wire body and its portfolio."""
    if isinstance(body, Command):
        if type(body) is not cls:
            raise InvalidArgumentError(
                "body", f"a {type(body).__name__} does not fit this endpoint; pass a {cls.__name__}"
            )
        cmd = body
    elif isinstance(body, Mapping):
        # Validate with the /cws command of the same kind: same fields, same rules
        # (docs/protocol.md §6.3).
        draft: dict[str, Any] = {**body, "guid": "http"}
        draft.pop("opcode", None)
        if order_id is not None:
            draft["orderId"] = order_id
        try:
            cmd = msgspec.convert(draft, cls)
        except msgspec.ValidationError as exc:
            raise InvalidArgumentError("body", str(exc)) from None
    else:
        raise InvalidArgumentError(
            "body", f"must be a dict or a {cls.__name__}, got {type(body).__name__}"
        )
    if order_id is not None and getattr(cmd, "order_id", order_id) != order_id:
        raise InvalidArgumentError(
            "body", f"its order_id {getattr(cmd, 'order_id', None)!r} is not {order_id!r}"
        )
    return _command_body(cmd), cmd.user.portfolio


# -- the parts of the API, one class each --------------------------------------------------------


class ReferenceDataApi(HttpTransport):
    """Reference data (docs/protocol.md §8.3): server time, instrument search and details,
    boards."""

    async def server_time(self) -> int:
        """``GET /md/v2/time``: the server's Unix time in seconds (anonymous: 15 min behind)."""
        payload = await self._request("GET", "/md/v2/time", auth="optional")
        value = self._decode(int, Format.SIMPLE, payload, "time")
        return int(value)

    async def securities(
        self,
        query: str | None = None,
        *,
        limit: int = 25,
        offset: int = 0,
        exchange: Exchange | str | None = None,
        board: str | None = None,
        sector: str | None = None,
        cfi_code: str | None = None,
        include_non_base_boards: bool | None = None,
        format: Format | str | None = None,
    ) -> list[Security]:
        """Search instruments (``GET /md/v2/Securities``), busiest first.

        Args:
            query: text matched against tickers, names and ISIN; ``None`` lists everything.
            limit: at most this many (``>= 1``, ALOR's default 25); ``offset`` skips (``>= 0``).
            exchange, board: keep only this exchange / board (``instrumentGroup``).
            sector: ``FORTS``, ``FOND`` or ``CURR``.
        """
        params = _params(
            query=None if query is None else _text("query", query),
            limit=str(_int("limit", limit, 1)),
            offset=str(_int("offset", offset, 0)),
            exchange=None if exchange is None else _exchange(exchange),
            instrumentGroup=None if board is None else _text("board", board),
            sector=None if sector is None else _choice("sector", sector, _SECTORS),
            cficode=None if cfi_code is None else _text("cfi_code", cfi_code),
            includeNonBaseBoards=None
            if include_non_base_boards is None
            else _bool("include_non_base_boards", include_non_base_boards),
        )
        fmt = self._fmt(format)
        return await self._get_many("/md/v2/Securities", Security, fmt, params, "optional")

    async def all_securities(
        self,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        market: str | None = None,
        include_old: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include_non_base_boards: bool | None = None,
        format: Format | str | None = None,
    ) -> list[Security]:
        """Every instrument of ``exchange`` (``GET /md/v2/Securities/{exchange}``; needs a token).

        Args:
            market: ``FORTS``, ``FOND``, ``CURR`` or ``SPBX``.
            limit, offset: page through the list (default: all of it).
        """
        path = f"/md/v2/Securities/{_exchange(exchange)}"
        params = _params(
            market=None if market is None else _choice("market", market, _MARKETS),
            includeOld=None if include_old is None else _bool("include_old", include_old),
            limit=None if limit is None else str(_int("limit", limit, 1)),
            offset=None if offset is None else str(_int("offset", offset, 0)),
            includeNonBaseBoards=None
            if include_non_base_boards is None
            else _bool("include_non_base_boards", include_non_base_boards),
        )
        return await self._get_many(path, Security, self._fmt(format), params, "required")

    async def security(
        self,
        symbol: str,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        *,
        format: Format | str | None = None,
    ) -> Security:
        """One instrument (``GET /md/v2/Securities/{exchange}/{symbol}``; needs a token).

        Raises ``ServerRejected`` with ``http_code == 404`` for an unknown instrument.
        """
        path = f"/md/v2/Securities/{_exchange(exchange)}/{_segment('symbol', symbol)}"
        params = _params(instrumentGroup=None if board is None else _text("board", board))
        return await self._get_one(path, Security, self._fmt(format), params, "required")

    async def available_boards(
        self, symbol: str, exchange: Exchange | str = Exchange.MOEX
    ) -> list[str]:
        """Board codes the instrument trades on (``…/{symbol}/availableBoards``)."""
        path = (
            f"/md/v2/Securities/{_exchange(exchange)}/{_segment('symbol', symbol)}/availableBoards"
        )
        payload = await self._request("GET", path, auth="optional")
        boards: list[str] = self._decode(list[str], Format.SIMPLE, payload, "availableBoards")
        return boards


class MarketSnapshotsApi(HttpTransport):
    """Market snapshots (docs/protocol.md §8.3): quotes of many instruments, an order book,
    the session's and earlier sessions' anonymous trades."""

    async def all_trades(
        self,
        symbol: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        from_: int | datetime | None = None,
        to: int | datetime | None = None,
        from_id: int | None = None,
        to_id: int | None = None,
        qty_from: int | None = None,
        qty_to: int | None = None,
        price_from: float | None = None,
        price_to: float | None = None,
        side: Side | str | None = None,
        offset: int | None = None,
        take: int | None = None,
        descending: bool | None = None,
        include_virtual_trades: bool | None = None,
        board: str | None = None,
        format: Format | str | None = None,
    ) -> list[Trade]:
        """The current session's anonymous trades (``…/{symbol}/alltrades``; needs a token).

        Filters (all optional): times ``from_``/``to`` (Unix s or datetimes), trade ids,
        quantities (lots), prices, the aggressor's ``side``; ``offset``/``take`` page,
        ``descending`` newest first.
        """
        path = f"/md/v2/Securities/{_exchange(exchange)}/{_segment('symbol', symbol)}/alltrades"
        start = None if from_ is None else _seconds("from_", from_)
        end = None if to is None else _seconds("to", to)
        if start is not None and end is not None and start > end:
            raise InvalidArgumentError("from_", f"{start} is after to={end}")
        params = _params(
            **{"from": None if start is None else str(start)},
            to=None if end is None else str(end),
            fromId=_opt_int("from_id", from_id, 0),
            toId=_opt_int("to_id", to_id, 0),
            qtyFrom=_opt_int("qty_from", qty_from, 0),
            qtyTo=_opt_int("qty_to", qty_to, 0),
            priceFrom=_opt_price("price_from", price_from),
            priceTo=_opt_price("price_to", price_to),
            side=None if side is None else _enum("side", Side, side).value,
            offset=_opt_int("offset", offset, 0),
            take=_opt_int("take", take, 1),
            descending=_opt_bool("descending", descending),
            includeVirtualTrades=_opt_bool("include_virtual_trades", include_virtual_trades),
            instrumentGroup=None if board is None else _text("board", board),
        )
        return await self._get_many(path, Trade, self._fmt(format), params, "required")

    async def all_trades_history(
        self,
        symbol: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        limit: int = 50_000,
        offset: int | None = None,
        from_: int | datetime | None = None,
        to: int | datetime | None = None,
        board: str | None = None,
        format: Format | str | None = None,
    ) -> AllTradesPage:
        """Anonymous trades of previous sessions (``…/alltrades/history``; needs a token).

        ``limit`` is 1..50000 (required by the server); page on with ``offset`` up to
        ``total``.
        """
        path = (
            f"/md/v2/Securities/{_exchange(exchange)}/{_segment('symbol', symbol)}"
            "/alltrades/history"
        )
        start = None if from_ is None else _seconds("from_", from_)
        end = None if to is None else _seconds("to", to)
        if start is not None and end is not None and start > end:
            raise InvalidArgumentError("from_", f"{start} is after to={end}")
        params = _params(
            **{"from": None if start is None else str(start)},
            to=None if end is None else str(end),
            limit=str(_int("limit", limit, 1, 50_000)),
            offset=_opt_int("offset", offset, 0),
            instrumentGroup=None if board is None else _text("board", board),
        )
        return await self._get_one(path, AllTradesPage, self._fmt(format), params, "required")

    async def quotes(
        self,
        symbols: str | Sequence[str | tuple[str, str]],
        *,
        format: Format | str | None = None,
    ) -> list[Quote]:
        """Quotes of several instruments in one request (``/md/v2/Securities/{…}/quotes``).

        Args:
            symbols: ``"MOEX:SBER"``, ``"SBER"`` (MOEX) or ``("MOEX", "SBER")`` items; a single
                string may list several, comma-separated. Unknown instruments are left out.
        """
        items: Iterable[object]
        if isinstance(symbols, str):
            items = symbols.split(",")
        elif isinstance(symbols, Sequence):
            items = symbols
        else:
            raise InvalidArgumentError("symbols", f"must be a sequence, got {type(symbols)}")
        tickers = [_ticker(item) for item in items]
        if not tickers:
            raise InvalidArgumentError("symbols", "must name at least one instrument")
        path = f"/md/v2/Securities/{','.join(tickers)}/quotes"
        return await self._get_many(path, Quote, self._fmt(format), {}, "optional")

    async def order_book(
        self,
        symbol: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        depth: int = 20,
        board: str | None = None,
        format: Format | str | None = None,
    ) -> OrderBook:
        """A snapshot of the order book, ``depth`` (1..50) levels a side (needs a token)."""
        path = f"/md/v2/orderbooks/{_exchange(exchange)}/{_segment('symbol', symbol)}"
        params = _params(
            depth=str(_int("depth", depth, 1, 50)),
            instrumentGroup=None if board is None else _text("board", board),
        )
        return await self._get_one(path, OrderBook, self._fmt(format), params, "required")


class HistoryApi(HttpTransport):
    """Candle history (docs/protocol.md §8.3), paged for the caller."""

    def _history_params(
        self,
        symbol: str,
        tf: int | str,
        from_: int | datetime,
        to: int | datetime,
        exchange: Exchange | str,
        board: str | None,
        count_back: int | None,
        split_adjust: bool | None,
        untraded: bool | None,
    ) -> tuple[dict[str, str], int, int]:
        start, end = _seconds("from_", from_), _seconds("to", to)
        if start > end:
            raise InvalidArgumentError("from_", f"{start} is after to={end}")
        params = _params(
            symbol=_segment("symbol", symbol),
            exchange=_exchange(exchange),
            tf=_tf(tf),
            instrumentGroup=None if board is None else _text("board", board),
            countBack=None if count_back is None else str(_int("count_back", count_back, 1)),
            splitAdjust=None if split_adjust is None else _bool("split_adjust", split_adjust),
            untraded=None if untraded is None else _bool("untraded", untraded),
        )
        return params, start, end

    async def _page(
        self, params: dict[str, str], start: int, end: int, fmt: Format, count_back: bool
    ) -> HistoryPage:
        query = {**params, "from": str(start), "to": str(end), "format": fmt.value}
        if not count_back:
            query.pop("countBack", None)
        payload = await self._request("GET", "/md/v2/history", params=query, auth="optional")
        page: HistoryPage = self._decode(format_class(HistoryPage, fmt), fmt, payload, "history")
        return page

    async def history_page(
        self,
        symbol: str,
        tf: int | str,
        from_: int | datetime,
        to: int | datetime,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        count_back: int | None = None,
        split_adjust: bool | None = None,
        untraded: bool | None = None,
        format: Format | str | None = None,
    ) -> HistoryPage:
        """One ``GET /md/v2/history`` answer as sent: candles plus ``next``/``prev``.

        Most callers want :meth:`history` or :meth:`iter_history`, which page for you.
        """
        params, start, end = self._history_params(
            symbol, tf, from_, to, exchange, board, count_back, split_adjust, untraded
        )
        return await self._page(params, start, end, self._fmt(format), True)

    def iter_history(
        self,
        symbol: str,
        tf: int | str,
        from_: int | datetime,
        to: int | datetime,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        count_back: int | None = None,
        split_adjust: bool | None = None,
        untraded: bool | None = None,
        format: Format | str | None = None,
    ) -> AsyncIterator[Bar]:
        """Every candle of ``[from_, to]``, oldest first, each once, paging over ``next``/``prev``.

        Args:
            symbol, exchange, board: the instrument.
            tf: seconds (``60``, ``"300"``) or ``"D"``, ``"W"``, ``"M"``, ``"Y"``
                (docs/protocol.md §4.3).
            from_, to: Unix seconds or datetimes (naive = UTC), inclusive. The candle that
                contains ``from_`` (opening before it) is included; candles that ended before
                ``from_`` are not, even if a server sends them.
            count_back: if the range holds fewer candles, the server moves ``from_`` back until
                it returns this many (docs/protocol.md §8.3; sent with the first request only).
            split_adjust, untraded: passed through (docs/protocol.md §8.3).

        Arguments are checked here, before anything is sent; the requests start when the
        iteration does. A server that answers part of the range continues it at ``next``;
        one that answers the newest part first is followed back over ``prev``. Candles are
        de-duplicated by ``time`` across page boundaries.
        """
        params, start, end = self._history_params(
            symbol, tf, from_, to, exchange, board, count_back, split_adjust, untraded
        )
        # A candle that ended before `from_` is not in the range (unless countBack asked for
        # earlier ones): nothing opening at or before `from_ - span` is kept.
        floor = None if count_back is not None else start - _span(params["tf"])
        return self._iter_pages(params, start, end, self._fmt(format), floor)

    async def _iter_pages(
        self, params: dict[str, str], start: int, end: int, fmt: Format, floor: int | None
    ) -> AsyncIterator[Bar]:
        last = floor  # candles at or before this time are already yielded (or out of range)
        cursor = start
        first = True
        while True:
            page = await self._page(params, cursor, end, fmt, first)
            bars = _fresh(page.bars, last, end)
            prev = page.prev
            if bars and prev is not None and cursor <= prev < bars[0].time:
                # The server answered the newest part of [cursor, end]: fetch the rest of it,
                # back over `prev`, before yielding anything after it.
                bars = await self._backfill(params, cursor, bars[0].time - 1, fmt, last) + bars
            for bar in bars:
                yield bar
            if bars:
                last = bars[-1].time
            first = False
            nxt = page.next
            if nxt is None or nxt > end:
                return
            # Continue after what we have even if `next` points back into it (an overlap).
            following = nxt if last is None else max(nxt, last + 1)
            if following <= cursor:
                raise RemoteProtocolError(
                    f"history paging does not advance: next={nxt} for a page from {cursor}"
                )
            cursor = following

    async def _backfill(
        self, params: dict[str, str], lo: int, hi: int, fmt: Format, last: int | None
    ) -> list[Bar]:
        """Candles of ``[lo, hi]`` from a server that answers the newest part first."""
        chunks: list[list[Bar]] = []
        while hi >= lo:
            page = await self._page(params, lo, hi, fmt, False)
            bars = _fresh(page.bars, last, hi)
            if not bars:
                break
            chunks.append(bars)
            prev = page.prev
            if prev is None or prev < lo or prev >= bars[0].time:
                break
            hi = bars[0].time - 1
        return [bar for chunk in reversed(chunks) for bar in chunk]

    async def history(
        self,
        symbol: str,
        tf: int | str,
        from_: int | datetime,
        to: int | datetime,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        count_back: int | None = None,
        split_adjust: bool | None = None,
        untraded: bool | None = None,
        format: Format | str | None = None,
        cache: str | os.PathLike[str] | BarStore | None = None,
    ) -> Bars:
        """Every candle of ``[from_, to]`` as :class:`~alorws.frames.Bars`, a ``list[Bar]``
        with ``.to_pandas()`` / ``.to_polars()`` (see :meth:`iter_history` for the arguments).

        ``cache``: a directory (``"~/.cache/alorws"``) or a
        :class:`~alorws.client.barstore.BarStore`. Closed candles are kept there in Parquet
        and only the ranges not yet kept are asked for, so asking again for the same past
        range sends nothing; the forming candle is always fetched again. Needs
        ``pip install 'alorws[record]'``; not with ``count_back``.
        """
        if cache is not None:
            from .barstore import BarStore

            if count_back is not None:
                raise InvalidArgumentError(
                    "count_back", "is not supported with cache=: ask for an explicit range"
                )
            store = cache if isinstance(cache, BarStore) else BarStore(cache)
            return await store.history(
                self,
                symbol,
                tf,
                from_,
                to,
                exchange=exchange,
                board=board,
                split_adjust=split_adjust,
                untraded=untraded,
                format=format,
            )
        pages = self.iter_history(
            symbol,
            tf,
            from_,
            to,
            exchange=exchange,
            board=board,
            count_back=count_back,
            split_adjust=split_adjust,
            untraded=untraded,
            format=format,
        )
        return Bars([bar async for bar in pages])


class PortfolioViewsApi(HttpTransport):
    """A portfolio's views (docs/protocol.md §8.4): summary, positions, orders, stop orders,
    own trades, risks, in the shapes of the account streams."""

    @staticmethod
    def _client_path(portfolio: str, exchange: Exchange | str, view: str) -> str:
        return f"/md/v2/Clients/{_exchange(exchange)}/{_segment('portfolio', portfolio)}/{view}"

    async def summary(
        self,
        portfolio: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        format: Format | str | None = None,
    ) -> Summary:
        """The portfolio summary (docs/protocol.md §4.7 shape)."""
        path = self._client_path(portfolio, exchange, "summary")
        return await self._get_one(path, Summary, self._fmt(format), {}, "required")

    async def positions(
        self,
        portfolio: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        without_currency: bool | None = None,
        format: Format | str | None = None,
    ) -> list[Position]:
        """Positions, money included unless ``without_currency`` (docs/protocol.md §4.6 shape)."""
        path = self._client_path(portfolio, exchange, "positions")
        params = _params(
            withoutCurrency=None
            if without_currency is None
            else _bool("without_currency", without_currency)
        )
        return await self._get_many(path, Position, self._fmt(format), params, "required")

    async def orders(
        self,
        portfolio: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        format: Format | str | None = None,
    ) -> list[Order]:
        """The session's market and limit orders (docs/protocol.md §4.11 shape)."""
        path = self._client_path(portfolio, exchange, "orders")
        return await self._get_many(path, Order, self._fmt(format), {}, "required")

    async def order(
        self,
        order_id: str | int,
        portfolio: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        format: Format | str | None = None,
    ) -> Order:
        """One order by id; ``ServerRejected`` 404 if there is none."""
        path = self._client_path(
            portfolio, exchange, f"orders/{_segment('order_id', str(order_id))}"
        )
        return await self._get_one(path, Order, self._fmt(format), {}, "required")

    async def stop_orders(
        self,
        portfolio: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        format: Format | str | None = None,
    ) -> list[StopOrder]:
        """The session's stop and stop-limit orders (docs/protocol.md §4.12 shape)."""
        path = self._client_path(portfolio, exchange, "stoporders")
        return await self._get_many(path, StopOrder, self._fmt(format), {}, "required")

    async def stop_order(
        self,
        order_id: str | int,
        portfolio: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        format: Format | str | None = None,
    ) -> StopOrder:
        """One stop order by id; ``ServerRejected`` 404 if there is none."""
        view = f"stoporders/{_segment('order_id', str(order_id))}"
        path = self._client_path(portfolio, exchange, view)
        return await self._get_one(path, StopOrder, self._fmt(format), {}, "required")

    async def trades(
        self,
        portfolio: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        with_repo: bool | None = None,
        format: Format | str | None = None,
    ) -> list[OwnTrade]:
        """The session's own trades (docs/protocol.md §4.10 shape)."""
        path = self._client_path(portfolio, exchange, "trades")
        params = _params(withRepo=None if with_repo is None else _bool("with_repo", with_repo))
        return await self._get_many(path, OwnTrade, self._fmt(format), params, "required")

    async def risk(
        self,
        portfolio: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        format: Format | str | None = None,
    ) -> Risk:
        """Portfolio risks (docs/protocol.md §4.8 shape)."""
        path = self._client_path(portfolio, exchange, "risk")
        return await self._get_one(path, Risk, self._fmt(format), {}, "required")

    async def forts_risk(
        self,
        portfolio: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        format: Format | str | None = None,
    ) -> SpectraRisk:
        """FORTS risks of a derivatives portfolio (docs/protocol.md §4.9 shape)."""
        path = self._client_path(portfolio, exchange, "fortsrisk")
        return await self._get_one(path, SpectraRisk, self._fmt(format), {}, "required")


class OrdersApi(HttpTransport):
    """Orders over HTTP (``/commandapi``, docs/protocol.md §8.5): place, replace and cancel,
    idempotent by ``X-REQID``."""

    async def place_order(
        self,
        kind: Kind | str,
        body: Mapping[str, Any] | Command,
        *,
        req_id: str | None = None,
    ) -> HttpOrderAck:
        """Place an order: ``POST …/orders/actions/{kind}`` with a unique ``X-REQID``.

        Args:
            kind: ``"market"``, ``"limit"``, ``"stop"`` or ``"stopLimit"`` (any case).
            body: the command as a wire dict (``{"side": "buy", "quantity": 1, "price": …,
                "instrument": {"symbol": …, "exchange": …}, "user": {"portfolio": …}}``) or the
                matching ``/cws`` struct (``CreateLimit(...)``; its guid is not sent). It is
                checked with the same rules as ``/cws`` commands before anything is sent.
            req_id: the idempotency key. Default: a new ``"<portfolio>;<uuid>"``. Sending the
                same ``req_id`` again never places a second order: the server answers with
                its first reply (returned as an ack with ``replayed=True``, or raised again).

        Raises:
            OrderRejected: the server or the exchange refused it (``http_code``, ``message``).
            InvalidArgumentError: a bad ``kind``/``body``/``req_id`` (nothing was sent).
        """
        name = _kind(kind)
        payload, portfolio = _order_body(_CREATE[name], body, None)
        return await self._command("POST", f"{_ORDERS}/actions/{name}", payload, portfolio, req_id)

    async def update_order(
        self,
        kind: Kind | str,
        order_id: str | int,
        body: Mapping[str, Any] | Command,
        *,
        req_id: str | None = None,
    ) -> HttpOrderAck:
        """Replace an order: ``PUT …/orders/actions/{kind}/{order_id}`` (the new order gets a
        new number, in the ack). ``body`` as for :meth:`place_order`, or an ``Update*`` struct."""
        name = _kind(kind)
        oid = _segment("order_id", str(order_id))
        payload, portfolio = _order_body(_UPDATE[name], body, str(order_id))
        path = f"{_ORDERS}/actions/{name}/{oid}"
        return await self._command("PUT", path, payload, portfolio, req_id)

    async def _command(
        self, method: str, path: str, body: dict[str, Any], portfolio: str, req_id: str | None
    ) -> HttpOrderAck:
        # AlorPy builds X-REQID as "<portfolio>;<timestamp>"; a uuid makes it unique across runs.
        rid = _req_id(req_id) if req_id is not None else f"{portfolio};{uuid.uuid4().hex}"
        headers = {"X-REQID": rid, "Content-Type": "application/json"}
        try:
            payload = await self._request(
                method, path, body=msgspec.json.encode(body), headers=headers, order=True
            )
        except Replayed as replay:
            return _replayed_ack(replay.old, rid)
        except TransportError as exc:
            # Retries (same X-REQID) are exhausted: it may or may not have been executed.
            raise OrderStatusUnknown(rid, f"{exc}; resend with req_id={rid!r}") from None
        return _ack(order_reply(payload, "order command"), rid, replayed=False)

    async def cancel_order(
        self,
        order_id: str | int,
        portfolio: str,
        exchange: Exchange | str = Exchange.MOEX,
        *,
        stop: bool = False,
    ) -> HttpOrderAck:
        """Cancel an order (``DELETE …/orders/{order_id}``); ``stop=True`` for a stop order.

        Not retried once it may have reached the server (a repeat would report an error for
        an order the first attempt cancelled): a network failure then raises ``ConnectError``
        / ``TransportTimeout`` saying the outcome is unknown. Check the order and cancel again.
        """
        oid = _segment("order_id", str(order_id))
        params = {
            "portfolio": _text("portfolio", portfolio),
            "exchange": _exchange(exchange),
            "stop": _bool("stop", stop),
            "jsonResponse": "true",
        }
        payload = await self._request(
            "DELETE", f"{_ORDERS}/{oid}", params=params, order=True, repeatable=False
        )
        try:
            reply = order_reply(payload, "cancel")
        except FrameError:  # a plain-text "success" is an answer too
            reply = payload[:MAX_MESSAGE].decode("utf-8", "replace").strip()
        ack = _ack(reply, None, replayed=False)
        return msgspec.structs.replace(ack, order_number=ack.order_number or str(order_id))


# -- the client --------------------------------------------------------------------------------


class HttpClient(ReferenceDataApi, MarketSnapshotsApi, HistoryApi, PortfolioViewsApi, OrdersApi):
    """Asyncio client of ALOR's HTTP API (docs/protocol.md §8); one shared keep-alive session.

    Use it as ``async with HttpClient(base_url, tokens) as http:`` (or call :meth:`aclose`).
    It is bound to the event loop it is first used in.

    Args:
        base_url: ``https://api.alor.ru``, ``https://apidev.alor.ru`` or a local server such as
            the simulator (``http://127.0.0.1:8765``; plain http only for loopback hosts).
        tokens: where bearer tokens come from (a ``TokenManager``). Without one, only the
            endpoints that allow anonymous access work (docs/protocol.md §8.3: time, search, boards,
            quotes, history), and ALOR serves them delayed.
        format: the default wire format of answers (each method also takes ``format=``).
        ssl: TLS context for https; by default a verifying one (``cafile`` adds a CA).
        cafile: a PEM bundle to trust (e.g. the simulator's self-signed certificate).
        timeout: seconds allowed for one attempt (connect, send, read the whole answer).
        retry: delays between attempts after a 5xx/network failure; gives up when exhausted.
        rate_retries: how many times one request is retried after 429.
        max_retry_after: a ``Retry-After`` longer than this (seconds) is not waited for: the
            request fails with ``ServerLimitExceeded`` at once.
        max_rps: optional client-side pacing, requests started per second (ALOR is said to
            allow 100 per user, docs/protocol.md §7.2); ``None``: no pacing, rely on 429 handling.
        connections: the session's connection-pool size.
        proxy: ``None``: from the environment (``HTTPS_PROXY`` …, never for loopback);
            ``False``: none; ``"http://[user:password@]host:port"`` or ``"socks5://…"``: that
            proxy (see :mod:`alorws.client.proxy`).

    Its methods come from one class per part of the API (:class:`ReferenceDataApi`,
    :class:`MarketSnapshotsApi`, :class:`HistoryApi`, :class:`PortfolioViewsApi`,
    :class:`OrdersApi`), all sending through one
    :class:`~alorws.client._http_transport.HttpTransport`.
    """


def _fresh(bars: Sequence[Bar], last: int | None, end: int) -> list[Bar]:
    """``bars`` in time order, later than ``last``, not after ``end``, one per ``time``."""
    out: list[Bar] = []
    top = last
    for bar in sorted(bars, key=_time):  # linear for the sorted pages servers send
        if bar.time > end:
            break
        if top is None or bar.time > top:
            out.append(bar)
            top = bar.time
    return out


def _time(bar: Bar) -> int:
    return bar.time


#: Longest candle of each letter timeframe, seconds (docs/protocol.md §4.3; months and years at
#: their longest).
_LETTER_SPANS: Final = {"D": 86_400, "W": 604_800, "M": 31 * 86_400, "Y": 366 * 86_400}


def _span(tf: str) -> int:
    """The longest a candle of wire timeframe ``tf`` can last, in seconds."""
    return _LETTER_SPANS.get(tf) or int(tf)


def _ack(reply: OrderReply | str, req_id: str | None, *, replayed: bool) -> HttpOrderAck:
    if isinstance(reply, str):
        return HttpOrderAck(order_number=None, message=reply, req_id=req_id, replayed=replayed)
    number = reply.orderNumber
    message = reply.message if isinstance(reply.message, str) else "success"
    return HttpOrderAck(
        order_number=None if number is None else str(number),
        message=message,
        req_id=req_id,
        replayed=replayed,
    )


def _replayed_ack(old: Any, req_id: str) -> HttpOrderAck:
    """Turn the first reply the server kept for a replayed ``X-REQID`` into an ack or a raise.

    The simulator sends ``{"status": 200, "body": {…}}``; a bare first reply is accepted too.
    """
    status: Any = None
    body: Any = old
    if isinstance(old, dict):
        for key in ("status", "statusCode", "httpCode"):
            if isinstance(old.get(key), int):
                status = old[key]
                body = old.get("body", old.get("content", old))
                break
    if isinstance(body, str):
        try:
            body = msgspec.json.decode(body)
        except (msgspec.DecodeError, ValueError, RecursionError):
            pass
    fields = body if isinstance(body, dict) else {}
    message = fields.get("message")
    text = message if isinstance(message, str) else (body if isinstance(body, str) else "")
    if status is None:
        status = 200 if fields.get("orderNumber") is not None else 400
    if not 200 <= status < 300:
        raise OrderRejected(status, text or "the first request with this X-REQID failed")
    number = fields.get("orderNumber")
    return HttpOrderAck(
        order_number=None if number is None else str(number),
        message=text or "success",
        req_id=req_id,
        replayed=True,
    )
