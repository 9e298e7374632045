"""The simulator's HTTP API: the subset of docs/protocol.md §8 it serves, on the server's port.

Reference data and quotes (``/md/v2/Securities/...``, ``/md/v2/orderbooks/...``), candle
history (``/md/v2/history``), the session's anonymous trades, the portfolio views
(``/md/v2/Clients/...``), the own trade history (``/md/stats/...``, ``/md/v2/Stats/...``), HTTP
orders (``/commandapi/...``) and ``POST /refresh`` (the oauth service, docs/protocol.md §2.2).
See :class:`HttpApi`; the server registers its routes and applies :meth:`HttpApi.throttle`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web

from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, StopOrder
from ..protocol.commands import Command, CommandFrameError, decode_command
from ..protocol.enums import Format, Side
from ..protocol.http_models import AllTradesPage
from ..protocol.market import Trade
from ..protocol.timeutil import parse_iso
from .auth import Claims, TokenService
from .market import MAX_TIME_S, TIMEFRAMES, bucket_end, bucket_start, tf_seconds
from .web import (
    RecentReplies,
    bearer,
    build_in_steps,
    error_response,
    json_response,
    read_json,
)
from .wire import wire


if TYPE_CHECKING:
    from .engine import TradingEngine
    from .market import InstrumentInfo, SyntheticMarket


__all__ = ["HttpApi", "RateLimit"]

_ENCODE_CHUNK: Final = 2000  # candles encoded per event-loop turn in an HTTP history page
_ENC: Final = msgspec.json.Encoder()


def _format(request: web.Request) -> Format:
    try:
        return Format(request.query.get("format", "Simple"))
    except ValueError:
        raise web.HTTPBadRequest(text="format: use Simple, Slim or Heavy") from None


def _bad(name: str, what: str, text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=f"{name}: {what}, got {text!r}")


def _int_arg(
    request: web.Request, name: str, low: int | None = None, high: int | None = None
) -> int | None:
    """An optional integer query parameter (None when absent or empty); 400 if invalid."""
    text = request.query.get(name, "")
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise _bad(name, "must be an integer", text) from None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"{low}..{high}"
        raise _bad(name, f"must be {bounds}", text)
    return value


def _float_arg(request: web.Request, name: str) -> float | None:
    text = request.query.get(name, "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _bad(name, "must be a number", text) from None
    if not math.isfinite(value):
        raise _bad(name, "must be a finite number", text)
    return value


def _time_arg(request: web.Request, name: str) -> int | None:
    """An optional time parameter, Unix seconds within ``0..MAX_TIME_S``."""
    return _int_arg(request, name, 0, MAX_TIME_S - 1)


def _bool_arg(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "").lower()
    if text not in ("", "true", "false"):
        raise _bad(name, "must be true or false", text)
    return text == "true"


def _side_arg(request: web.Request) -> Side | None:
    text = request.query.get("side", "")
    if not text:
        return None
    try:
        return Side(text)
    except ValueError:
        raise _bad("side", "must be buy or sell", text) from None


class RateLimit:
    """At most ``rate`` hits per second per key, over a sliding second (docs/protocol.md §12.10).

    ``clock`` gives seconds (the server's clock).
    """

    def __init__(self, rate: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> int | None:
        """Count a hit of ``key``; None if within the rate, else the seconds to wait (a hit
        over the rate is not counted)."""
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - 1.0:
            hits.popleft()
        if len(hits) >= self.rate:
            return max(1, int(hits[0] + 1.0 - now + 0.999))
        hits.append(now)
        if len(self._hits) > 10_000:  # forget callers idle for a second
            self._hits = {k: v for k, v in self._hits.items() if v}
        return None


class HttpApi:
    """The HTTP endpoints: reference data, history, portfolio views and HTTP orders.

    Every bad parameter or body is answered 4xx with a message naming it
    (docs/protocol.md §12.2). A history or a quote that needs candles not built yet builds them
    in bounded steps, and a long history page is encoded in chunks, so other clients are served
    meanwhile.

    Args:
        market, engine, tokens: what the answers come from.
        execute: runs an order command for a token's holder and returns the ``/cws`` status
            reply (the server's, shared with ``/cws``).
        http_rate: requests per second per account (docs/protocol.md §12.10).
        clock: seconds (the server's clock), for the rate and the ``X-REQID`` memory.
    """

    def __init__(
        self,
        market: SyntheticMarket,
        engine: TradingEngine,
        tokens: TokenService,
        execute: Callable[[Claims, Command, str], bytes],
        *,
        http_rate: int,
        clock: Callable[[], float],
    ) -> None:
        self.market = market
        self.engine = engine
        self.tokens = tokens
        self._execute = execute
        self._clock = clock
        self._rate = RateLimit(http_rate, clock)
        #: HTTP requests received, by route template (``"/md/v2/history"``,
        #: ``"/md/v2/Securities/{exchange}/{symbol}"``; paths no route serves under
        #: ``"(no route)"``), those answered 429 included; ``/ws``, ``/cws`` and ``/sim/*`` are
        #: not counted. Tests read it to prove a client sent nothing (also in
        #: ``GET /sim/stats`` as ``http_requests``).
        self.requests: Counter[str] = Counter()
        self._seen_http: RecentReplies[tuple[int, dict[str, Any]]] = RecentReplies(clock)
        self._http_serial = 0

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register every endpoint on ``router``."""
        r = router
        r.add_post("/refresh", self._refresh)
        r.add_get("/md/v2/time", self._time)
        r.add_get("/md/v2/Securities", self._securities_search)
        r.add_get("/md/v2/Securities/{tickers}/quotes", self._quotes)
        r.add_get("/md/v2/Securities/{exchange}", self._securities_exchange)
        r.add_get("/md/v2/Securities/{exchange}/{symbol}", self._security)
        r.add_get("/md/v2/Securities/{exchange}/{symbol}/availableBoards", self._boards)
        r.add_get("/md/v2/Securities/{exchange}/{symbol}/alltrades", self._all_trades)
        r.add_get("/md/v2/Securities/{exchange}/{symbol}/alltrades/history", self._trades_history)
        r.add_get("/md/v2/Securities/{exchange}/{symbol}/actualFuturesQuote", self._future_quote)
        r.add_get("/md/v2/orderbooks/{exchange}/{symbol}", self._orderbook)
        r.add_get("/md/v2/history", self._history)
        r.add_get("/md/v2/Clients/{exchange}/{portfolio}/{view}", self._client_view)
        r.add_get("/md/v2/Clients/{exchange}/{portfolio}/{view}/{order_id}", self._client_item)
        for stats in ("/md/stats", "/md/v2/Stats"):
            trades = stats + "/{exchange}/{portfolio}/history/trades"
            r.add_get(trades, self._trade_stats)
            r.add_get(trades + "/{symbol}", self._trade_stats)
        base = "/commandapi/warptrans/TRADE/v2/client/orders"
        r.add_post(base + "/actions/{kind}", self._http_create)
        r.add_put(base + "/actions/{kind}/{order_id}", self._http_update)
        r.add_delete(base + "/{order_id}", self._http_delete)

    def throttle(self, request: web.Request) -> web.Response | None:
        """Count ``request`` against its account's rate; the 429 answer when over it.

        Anonymous callers share one budget per address.
        """
        route = request.match_info.route.resource
        self.requests[route.canonical if route is not None else "(no route)"] += 1
        claims = bearer(self.tokens, request)
        key = claims.login if claims else f"anonymous:{request.remote}"
        retry = self._rate.hit(key)
        if retry is None:
            return None
        return web.Response(
            status=429,
            text="Превышен лимит одновременно выполняемых запросов",
            headers={"Retry-After": str(retry)},
        )

    def _auth(self, request: web.Request) -> Claims:
        """The claims of the request's bearer token; 401 without a valid one."""
        claims = bearer(self.tokens, request)
        if claims is None:
            raise web.HTTPUnauthorized(text="Invalid JWT token!")
        return claims

    # -- oauth --------------------------------------------------------------------------------

    async def _refresh(self, request: web.Request) -> web.StreamResponse:
        """Refresh token (query or JSON body, body wins, key case-insensitive) -> JWT
        (docs/protocol.md §2.2)."""
        token: Any = request.query.get("token")
        allowed: Any = request.query.get("allowedPortfolios")
        body = await read_json(request)
        if body is not None:
            lowered = {str(k).lower(): v for k, v in body.items()}
            token = lowered.get("token", token)
            allowed = lowered.get("allowedportfolios", allowed)
        if isinstance(allowed, str):
            try:
                allowed = json.loads(allowed)
            except (ValueError, RecursionError):
                allowed = [p for p in allowed.replace(",", " ").split() if p]
        if isinstance(allowed, list) and not all(type(p) is str for p in allowed):
            raise web.HTTPBadRequest(text="allowedPortfolios: must be a list of portfolio names")
        account = self.engine.account_for_token(token) if isinstance(token, str) else None
        if account is None:
            return web.Response(status=403, text="Invalid or expired refresh token")
        agreements = account.agreements
        agreement_ids = [str(a) for a in agreements] if isinstance(agreements, list | tuple) else []
        jwt = self.tokens.issue(
            account.login,
            account.portfolios,
            agreement_ids,
            allowed if isinstance(allowed, list) else None,
        )
        return json_response({"AccessToken": jwt})

    # -- market data over HTTP (docs/protocol.md §8.3) ----------------------------------------

    async def _time(self, request: web.Request) -> web.StreamResponse:
        now = int(time.time())
        # docs/protocol.md §8.3: anonymous callers see the time 15 minutes late.
        return json_response(now if bearer(self.tokens, request) else now - 900)

    async def _securities_search(self, request: web.Request) -> web.StreamResponse:
        fmt = _format(request)
        q = request.query
        sector = q.get("sector", "").upper()
        exchange = q.get("exchange", "").upper()
        board = q.get("instrumentGroup", "").upper()
        limit = _int_arg(request, "limit", 0)
        limit = 25 if limit is None else limit
        offset = _int_arg(request, "offset", 0) or 0
        found = [
            info
            for info in self.market.search(q.get("query", ""))  # sorted by turnover, as ALOR's
            if (not sector or info.market.upper() == sector)
            and (not exchange or info.exchange.upper() == exchange)
            and (not board or info.board.upper() == board)
        ]
        return json_response(
            [
                self.market.security(i.symbol, fmt, complete=True)
                for i in found[offset : offset + limit]
            ]
        )

    async def _securities_exchange(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        fmt = _format(request)
        exchange = request.match_info["exchange"].upper()
        market = request.query.get("market", "").upper()
        return json_response(
            [
                self.market.security(info.symbol, fmt, complete=True)
                for info in self.market.instruments.values()
                if info.exchange.upper() == exchange and (not market or info.market == market)
            ]
        )

    def _find(self, request: web.Request) -> InstrumentInfo:
        info = self.market.find(
            request.match_info["symbol"],
            request.match_info["exchange"].upper(),
            request.query.get("instrumentGroup") or None,
        )
        if info is None:
            raise web.HTTPNotFound(text="Instrument not found")
        return info

    async def _security(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        symbol = self._find(request).symbol
        return json_response(self.market.security(symbol, _format(request), complete=True))

    async def _boards(self, request: web.Request) -> web.StreamResponse:
        info = self._find(request)
        return json_response([info.board])

    async def _quotes(self, request: web.Request) -> web.StreamResponse:
        fmt = _format(request)
        out = []
        for ticker in request.match_info["tickers"].split(","):
            exchange, _, symbol = ticker.strip().rpartition(":")
            info = self.market.find(symbol, (exchange or "MOEX").upper())
            if info is not None:
                # A quote reads the day candles.
                await build_in_steps(self.market, info.symbol, TIMEFRAMES["D"])
                out.append(wire(self.market.quote(info.symbol), fmt))
        return json_response(out)

    async def _orderbook(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        fmt = _format(request)
        info = self._find(request)
        try:
            depth = int(request.query.get("depth", "20"))
        except ValueError:
            depth = 0
        if not 1 <= depth <= 50:
            return error_response(400, "depth: must be 1..50")
        return json_response(wire(self.market.order_book(info.symbol, depth), fmt))

    async def _history(self, request: web.Request) -> web.StreamResponse:
        """Candles in ``[from, to]`` with ``next``/``prev`` paging timestamps
        (docs/protocol.md §8.3).

        ``tf`` is 1..31536000 seconds or D/W/M/Y; ``from`` and ``to`` are Unix seconds within
        ``0..MAX_TIME_S``; ``countBack`` is >= 0. A timeframe asked for the first time is built
        in bounded steps, and a long page is encoded in chunks, so other clients are served
        meanwhile.
        """
        fmt = _format(request)
        q = request.query
        missing = [k for k in ("symbol", "exchange", "tf", "from", "to") if k not in q]
        if missing:
            return error_response(400, f"Missing parameter '{missing[0]}'")
        info = self.market.find(q["symbol"], q["exchange"].upper(), q.get("instrumentGroup"))
        if info is None:
            return error_response(404, f"Unknown instrument '{q['exchange']}:{q['symbol']}'")
        text = q["tf"].strip().upper()
        try:
            tf = tf_seconds(text)
        except ValueError:
            raise _bad("tf", "must be seconds or D/W/M/Y", text) from None
        start, end = _time_arg(request, "from"), _time_arg(request, "to")
        if start is None or end is None:
            raise _bad("from" if start is None else "to", "required, Unix seconds", "")
        count_back = _int_arg(request, "countBack", 0) or 0
        symbol = info.symbol
        market = self.market
        problem = market.check_candles(symbol, tf, start)
        if problem is not None:
            raise web.HTTPBadRequest(text=problem)
        await build_in_steps(market, symbol, tf)
        bars = market.bars(symbol, tf, start, end)
        if count_back > 0 and len(bars) < count_back:
            # docs/protocol.md §8.3: move `from` back until the range holds countBack candles.
            bars = market.last_bars(symbol, tf, end, count_back)
        before, after = market.neighbours(
            symbol, tf, bars[0].time if bars else start, bars[-1].time if bars else end
        )
        # The nearest candles outside the page. Where there is none, the period just outside
        # the asked range: ALOR always sends numbers, and a client paging on stops there. No
        # period lies before the epoch: a range from 0 gets 0, never a negative time.
        nxt = after if after is not None else bucket_end(bucket_start(end, tf), tf)
        prev = (
            before if before is not None else max(0, bucket_start(bucket_start(start, tf) - 1, tf))
        )
        parts: list[bytes] = []
        for i in range(0, len(bars), _ENCODE_CHUNK):
            if i:
                await asyncio.sleep(0)
            parts.append(_ENC.encode([wire(b, fmt) for b in bars[i : i + _ENCODE_CHUNK]])[1:-1])
        key = b'"h"' if fmt is Format.SLIM else b'"history"'
        body = b"".join(
            (
                b"{",
                key,
                b":[",
                b",".join(parts),
                b'],"next":',
                _ENC.encode(nxt),
                b',"prev":',
                _ENC.encode(prev),
                b"}",
            )
        )
        return web.Response(body=body, content_type="application/json")

    async def _all_trades(self, request: web.Request) -> web.StreamResponse:
        """The session's anonymous trades (the last 10000 printed), oldest first
        (docs/protocol.md §8.3).

        Filters: ``from``/``to`` (Unix s), ``fromId``/``toId``, ``qtyFrom``/``qtyTo`` (lots),
        ``priceFrom``/``priceTo``, ``side``; paged by ``offset``/``take``, ``descending``
        newest first. ``includeVirtualTrades`` changes nothing: there are no virtual trades.
        """
        self._auth(request)
        fmt = _format(request)
        info = self._find(request)
        start, end = _time_arg(request, "from"), _time_arg(request, "to")
        from_id, to_id = _int_arg(request, "fromId", 0), _int_arg(request, "toId", 0)
        qty_from, qty_to = _int_arg(request, "qtyFrom", 0), _int_arg(request, "qtyTo", 0)
        price_from, price_to = _float_arg(request, "priceFrom"), _float_arg(request, "priceTo")
        side = _side_arg(request)
        offset = _int_arg(request, "offset", 0) or 0
        take = _int_arg(request, "take", 1)
        descending = _bool_arg(request, "descending")
        _bool_arg(request, "includeVirtualTrades")

        def wanted(t: Trade) -> bool:
            seconds = (t.timestamp or 0) // 1000
            return (
                (start is None or seconds >= start)
                and (end is None or seconds <= end)
                and (from_id is None or t.id >= from_id)
                and (to_id is None or t.id <= to_id)
                and (qty_from is None or t.qty >= qty_from)
                and (qty_to is None or t.qty <= qty_to)
                and (price_from is None or t.price >= price_from)
                and (price_to is None or t.price <= price_to)
                and (side is None or t.side is side)
            )

        found = [t for t in self.market.last_trades(info.symbol, 10_000) if wanted(t)]
        if descending:
            found.reverse()
        page = found[offset:] if take is None else found[offset : offset + take]
        return json_response([wire(t, fmt) for t in page])

    async def _trades_history(self, request: web.Request) -> web.StreamResponse:
        """Anonymous trades of previous sessions, ``{"total": N, "list": [...]}``
        (docs/protocol.md §8.3); ``limit`` (1..50000) is required, ``offset`` pages, ``from``/``to``
        (Unix s) filter."""
        self._auth(request)
        fmt = _format(request)
        info = self._find(request)
        limit = _int_arg(request, "limit", 1, 50_000)
        if limit is None:
            raise web.HTTPBadRequest(text="limit: required, 1..50000")
        offset = _int_arg(request, "offset", 0) or 0
        start, end = _time_arg(request, "from"), _time_arg(request, "to")
        await build_in_steps(self.market, info.symbol, None)
        total, page = self.market.trades_history(info.symbol, start, end, offset, limit)
        return json_response(wire(AllTradesPage(total=total, trades=page), fmt))

    async def _future_quote(self, request: web.Request) -> web.StreamResponse:
        """The quote of the nearest future of a base code (``Si`` -> ``SiZ6``;
        docs/protocol.md §8.3)."""
        self._auth(request)
        fmt = _format(request)
        exchange = request.match_info["exchange"].upper()
        info = self.market.actual_future(request.match_info["symbol"], exchange)
        if info is None:
            raise web.HTTPNotFound(text="No active future with this base code")
        await build_in_steps(self.market, info.symbol, TIMEFRAMES["D"])
        return json_response(wire(self.market.quote(info.symbol), fmt))

    # -- account views over HTTP (docs/protocol.md §8.4) --------------------------------------

    def _portfolio(self, request: web.Request) -> str:
        claims = self._auth(request)
        portfolio = request.match_info["portfolio"]
        if portfolio not in claims.portfolios:
            raise web.HTTPForbidden(text=f"Access to portfolio '{portfolio}' is denied")
        return portfolio

    async def _client_view(self, request: web.Request) -> web.StreamResponse:
        portfolio = self._portfolio(request)
        fmt = _format(request)
        view = request.match_info["view"].lower()
        engine = self.engine
        single: Model | None
        if view == "summary":
            single = engine.summary(portfolio)
        elif view == "risk":
            single = engine.risk(portfolio)
        elif view == "fortsrisk":
            single = engine.spectra_risk(portfolio)
        else:
            items: list[Any]
            if view == "positions":
                items = list(engine.positions(portfolio))
                if request.query.get("withoutCurrency", "").lower() == "true":
                    items = [p for p in items if not p.is_currency]
            elif view == "orders":
                items = list(engine.orders(portfolio))
            elif view == "stoporders":
                items = list(engine.stop_orders(portfolio))
            elif view == "trades":
                return json_response([self._own_trade(t, fmt) for t in engine.trades(portfolio)])
            else:
                return error_response(404, f"Unknown view '{view}'")
            return json_response([wire(i, fmt) for i in items])
        if single is None:
            return error_response(404, f"No {view} for portfolio '{portfolio}'")
        return json_response(wire(single, fmt))

    async def _client_item(self, request: web.Request) -> web.StreamResponse:
        portfolio = self._portfolio(request)
        fmt = _format(request)
        view = request.match_info["view"]
        order_id = request.match_info["order_id"]
        if order_id.lower() == "trades":  # …/{portfolio}/{symbol}/trades: one instrument's
            symbol = view.casefold()
            trades = self.engine.trades(portfolio)
            return json_response(
                [self._own_trade(t, fmt) for t in trades if (t.symbol or "").casefold() == symbol]
            )
        view = view.lower()
        if view == "positions":
            for position in self.engine.positions(portfolio):
                if position.symbol.casefold() == order_id.casefold():
                    return json_response(wire(position, fmt))
            return error_response(404, f"No position in '{order_id}'")
        items: list[Order] | list[StopOrder]
        if view == "orders":
            items = self.engine.orders(portfolio)
        elif view == "stoporders":
            items = self.engine.stop_orders(portfolio)
        else:
            return error_response(404, f"Unknown view '{view}'")
        for item in items:
            if item.id == order_id:
                return json_response(wire(item, fmt))
        return error_response(404, f"Order '{order_id}' not found")

    def _own_trade(self, trade: OwnTrade, fmt: Format, *, names: bool = True) -> dict[str, Any]:
        """An own trade as the HTTP answers have it: Heavy adds ``shortName`` and ``currency``
        (``names``; not in the ``/md/stats`` history)."""
        out = wire(trade, fmt)
        if fmt is not Format.HEAVY or not names:
            return out
        info = self.market.instruments.get(trade.symbol or "")
        full: dict[str, Any] = {}
        for key, value in out.items():
            full[key] = value
            if key == "symbol":
                full["shortName"] = info.short_name if info else None
            elif key == "price":
                full["currency"] = info.currency if info else None
        return full

    async def _trade_stats(self, request: web.Request) -> web.StreamResponse:
        """Own trade history (docs/protocol.md §8.4); the simulator's history is the session.
        Filters: ``ticker`` (or the path's symbol), ``side``, ``from`` (trade id), ``dateFrom``;
        ``limit`` (1..1000) and ``descending`` page it."""
        portfolio = self._portfolio(request)
        fmt = _format(request)
        symbol = request.match_info.get("symbol") or request.query.get("ticker") or ""
        side = _side_arg(request)
        from_id = _int_arg(request, "from", 0)
        limit = _int_arg(request, "limit", 1, 1000)
        descending = _bool_arg(request, "descending")
        since = request.query.get("dateFrom", "")
        try:  # a date (midnight UTC) or an ISO-8601 time
            day = parse_iso(since if "T" in since else since + "T00:00:00Z") if since else None
        except ValueError:
            raise _bad("dateFrom", "must be a date or an ISO-8601 UTC time", since) from None
        trades = [
            t
            for t in self.engine.trades(portfolio)
            if (not symbol or (t.symbol or "").casefold() == symbol.casefold())
            and (side is None or t.side is side)
            and (from_id is None or int(t.id) >= from_id)
            and (day is None or t.date is None or parse_iso(t.date) >= day)
        ]
        if descending:
            trades.reverse()
        if limit is not None:
            trades = trades[:limit]
        names = request.path.startswith("/md/v2/")  # the v2 history has the v2 trade shape
        return json_response([self._own_trade(t, fmt, names=names) for t in trades])

    # -- commandapi over HTTP (docs/protocol.md §8.5) -----------------------------------------

    async def _http_command(
        self, request: web.Request, opcode: str, extra: dict[str, Any]
    ) -> web.StreamResponse:
        claims = self._auth(request)
        reqid = request.headers.get("X-REQID") or request.headers.get("X-ALOR-REQID")
        if not reqid:
            return error_response(400, "Missing header 'X-REQID'")
        # The body first: no await may come between the duplicate check and the execution,
        # or two requests with one X-REQID could both run.
        body = await read_json(request) or {}
        seen = self._seen_http.get(claims.login, reqid)
        if seen is not None:
            return json_response(
                {
                    "message": "Request with such X-ALOR-REQID was already handled.",
                    "oldResponse": {"statusCode": seen[0], "body": seen[1]},
                },
                400,
            )
        guid = f"http-{self._next_serial()}"
        frame = _ENC.encode({**body, **extra, "opcode": opcode, "guid": guid})
        try:
            command = decode_command(frame)
        except CommandFrameError as exc:
            status, out = 400, {"message": exc.reason}
        else:
            reply = msgspec.json.decode(self._execute(claims, command, guid))
            status = reply["httpCode"]
            if status == 200:
                out = {"message": "success", "orderNumber": reply.get("orderNumber")}
            else:
                out = {"message": reply["message"]}
        self._seen_http.put(claims.login, reqid, (status, out))
        return json_response(out, status)

    def _next_serial(self) -> int:
        self._http_serial += 1
        return self._http_serial

    async def _http_create(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        return await self._http_command(request, f"create:{kind}", {})

    async def _http_update(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        return await self._http_command(
            request, f"update:{kind}", {"orderId": request.match_info["order_id"]}
        )

    async def _http_delete(self, request: web.Request) -> web.StreamResponse:
        claims = self._auth(request)
        q = request.query
        portfolio = q.get("portfolio", "")
        stop = q.get("stop", "false").lower() == "true"
        frame = _ENC.encode(
            {
                "opcode": "delete:stop" if stop else "delete:limit",
                "guid": f"http-del-{self._next_serial()}",
                "orderId": request.match_info["order_id"],
                "exchange": q.get("exchange", "MOEX"),
                "user": {"portfolio": portfolio},
                "checkDuplicates": False,
            }
        )
        try:
            command = decode_command(frame)
        except CommandFrameError as exc:
            return error_response(400, exc.reason)
        reply = msgspec.json.decode(self._execute(claims, command, "http-delete"))
        if reply["httpCode"] != 200:
            return json_response({"message": reply["message"]}, reply["httpCode"])
        return json_response("success")
