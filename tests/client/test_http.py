"""The HTTP API client against the simulator and tiny loopback servers, over real sockets
(docs/protocol.md §8)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from aiohttp import web

from alorws.client.auth import TokenManager
from alorws.client.http import HttpClient
from alorws.errors import (
    ConfigurationError,
    ConnectError,
    FrameError,
    InvalidArgumentError,
    InvalidState,
    OrderRejected,
    OrderStatusUnknown,
    ServerLimitExceeded,
    ServerRejected,
    TokenRejected,
    TransportTimeout,
)
from alorws.protocol._model import Model, format_class, to_wire
from alorws.protocol.account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from alorws.protocol.backoff import NO_DELAY
from alorws.protocol.commands import CreateLimit, CreateStop, InstrumentRef, UpdateLimit, User
from alorws.protocol.enums import Condition, Exchange, Format, Side
from alorws.protocol.http_models import AllTradesPage, HistoryPage, Security
from alorws.protocol.market import Bar, OrderBook, Quote, Trade
from alorws.sim.app import Simulator
from alorws.sim.market import DEFAULT_START_MS, SyntheticMarket

from .._sim import DAY


FORMATS = (Format.SIMPLE, Format.SLIM, Format.HEAVY)
#: Three attempts in all (two retries), no waiting.
QUICK = dataclasses.replace(NO_DELAY, max_attempts=2)
SBER = {"symbol": "SBER", "exchange": "MOEX"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bar_tuple(bar: Bar) -> tuple[int, float, float, float, float, int]:
    return (bar.time, bar.open, bar.high, bar.low, bar.close, bar.volume)


@contextlib.asynccontextmanager
async def serve(routes: list[web.RouteDef]) -> AsyncIterator[str]:
    """A tiny aiohttp app on a free loopback port; yields its base URL."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclasses.dataclass
class FixedTokens:
    """A token source handing out fixed tokens: ``tokens[0]`` first, the next after refresh."""

    tokens: list[str]
    refreshes: int = 0

    async def token(self) -> str:
        return self.tokens[min(self.refreshes, len(self.tokens) - 1)]

    async def refresh(self, *, force: bool = False) -> str:
        self.refreshes += 1
        return await self.token()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(port=0, day_order_lifetime=DAY, seed=11, rate=50.0, history_days=3) as s:
        yield s


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[HttpClient]:
    async with (
        TokenManager(sim.demo_refresh_token, sim.url) as tokens,
        HttpClient(sim.url, tokens) as client,
    ):
        yield client


# -- models (pure) ---------------------------------------------------------------------------


def test_security_decodes_every_simulator_instrument_in_every_format() -> None:
    """The simulator's Securities objects decode into Security and re-encode identically
    (docs/protocol.md §8.6)."""
    market = SyntheticMarket(seed=1, history_days=0, events_per_second=0)
    for fmt in FORMATS:
        decoder = msgspec.json.Decoder(format_class(Security, fmt))
        for info in market.instruments.values():
            wire = market.security(info.symbol, fmt)
            sec = decoder.decode(msgspec.json.encode(wire))
            assert isinstance(sec, Security)
            assert to_wire(sec, fmt) == wire
            assert (sec.symbol, sec.short_name, sec.board) == (
                info.symbol,
                info.short_name,
                info.board,
            )
            assert (sec.lot_size, sec.min_step, sec.price_step) == (
                info.lot_size,
                info.price_step,
                info.step_price,
            )
            assert sec.isin == info.isin and sec.trading_status == 17
            assert sec.market == (None if fmt is Format.SLIM else info.market)
            assert sec.round_to == (info.decimals if fmt is Format.HEAVY else None)


def test_security_spec_example_and_unknown_keys() -> None:
    """A Simple instrument in the keys of docs/protocol.md §8.6 decodes; keys the model lacks
    (Heavy extras) are ignored."""
    text = (
        '{"symbol":"SBER","shortname":"Сбербанк","exchange":"MOEX","lotsize":10,'
        '"minstep":0.01,"pricestep":0.01,"ISIN":"RU0009029540","yield":null,'
        '"primary_board":"TQBR","tradingStatus":17,"someFutureKey":{"a":1}}'
    )
    sec = msgspec.json.decode(text, type=format_class(Security, Format.SIMPLE))
    assert (sec.short_name, sec.lot_size, sec.isin, sec.primary_board) == (
        "Сбербанк",
        10,
        "RU0009029540",
        "TQBR",
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_history_page_round_trip(fmt: Format) -> None:
    """HistoryPage: Simple/Heavy `history`, Slim `h` with t/o/h/l/c/v; next/prev kept."""
    bars = [Bar(time=60 * i, open=1.0, high=2.0, low=0.5, close=1.5, volume=i) for i in range(3)]
    page = HistoryPage(bars=bars, next=180, prev=None)
    wire = to_wire(page, fmt)
    assert set(wire) == {"h" if fmt is Format.SLIM else "history", "next", "prev"}
    back = msgspec.json.decode(msgspec.json.encode(wire), type=format_class(HistoryPage, fmt))
    assert [bar_tuple(b) for b in back.bars] == [bar_tuple(b) for b in bars]
    assert (back.next, back.prev) == (180, None)


# -- every method against the simulator --------------------------------------------------------


async def test_market_data_methods_in_every_format(sim: Simulator, http: HttpClient) -> None:
    """Reference data, quotes, books and history: typed models in Simple, Slim and Heavy."""
    assert abs(await http.server_time() - time.time()) < 5
    for fmt in FORMATS:
        found = await http.securities("sber", format=fmt)
        assert found and all(isinstance(s, Security) for s in found)
        assert {s.symbol for s in found} >= {"SBER", "SBERP"}
        assert len(await http.securities(limit=3, format=fmt)) == 3
        forts = await http.securities(sector="forts", format=fmt)
        assert [s.symbol for s in forts] == ["SiZ6"]
        every = await http.all_securities("MOEX", format=fmt)
        assert {s.symbol for s in every} == set(sim.market.instruments)
        assert [s.symbol for s in await http.all_securities(market="CURR", format=fmt)] == [
            "USD000UTSTOM"
        ]
        one = await http.security("SBER", format=fmt)
        assert isinstance(one, Security) and one.symbol == "SBER" and one.min_step == 0.01
        quotes = await http.quotes(["MOEX:SBER", ("MOEX", "GAZP"), "LKOH"], format=fmt)
        assert [q.symbol for q in quotes] == ["SBER", "GAZP", "LKOH"]
        assert all(isinstance(q, Quote) and q.last_price for q in quotes)
        book = await http.order_book("SBER", depth=5, format=fmt)
        assert isinstance(book, OrderBook) and len(book.bids) == len(book.asks) == 5
        assert book.bids[0].price < book.asks[0].price
        future = await http.actual_futures_quote("Si", format=fmt)
        assert isinstance(future, Quote) and future.symbol == "SiZ6"
    assert await http.available_boards("SBER") == ["TQBR"]
    with pytest.raises(ServerRejected) as no_future:
        await http.actual_futures_quote("NOPE")
    assert no_future.value.http_code == 404
    assert [q.symbol for q in await http.quotes("MOEX:SBER,MOEX:GAZP")] == ["SBER", "GAZP"]
    with pytest.raises(ServerRejected) as missing:
        await http.security("NOPE")
    assert missing.value.http_code == 404


async def test_history_from_the_epoch_is_empty_not_an_error(http: HttpClient) -> None:
    """A range long before any candle, starting at 0: an empty answer in every format (the
    page's ``prev`` is 0 there, never a negative time the decoder would refuse)."""
    for fmt in FORMATS:
        assert await http.history("SBER", 60, 0, 3_600, format=fmt) == []
        page = await http.history_page("SBER", 60, 0, 3_600, format=fmt)
        assert page.bars == [] and page.prev == 0


async def test_history_in_every_format_matches_the_market(sim: Simulator, http: HttpClient) -> None:
    """Two days of minute candles: exactly the market's candles, in order, in every format."""
    now = int(time.time())
    start, end = now - 2 * 86_400, now - 3_600
    expected = [bar_tuple(b) for b in sim.market.bars("SBER", 60, start, end)]
    assert len(expected) > 2_000
    for fmt in FORMATS:
        got = await http.history("SBER", 60, start, end, format=fmt)
        assert all(isinstance(b, Bar) for b in got)
        assert [bar_tuple(b) for b in got] == expected
    streamed = [bar_tuple(b) async for b in http.iter_history("SBER", "60", start, end)]
    assert streamed == expected
    page = await http.history_page("SBER", 60, end - 600, end, count_back=50)
    assert len(page.bars) == 50 and page.bars[-1].time <= end
    day = await http.history("SBER", "D", start, end)
    assert [b.time % 86_400 for b in day] == [0] * len(day)


async def test_portfolio_views_and_http_orders(sim: Simulator, http: HttpClient) -> None:
    """Orders placed over HTTP show up in every portfolio view, in every format."""
    portfolio, _, forts = sim.demo.portfolios[:3]
    instrument = InstrumentRef(symbol="SBER", exchange=Exchange.MOEX)
    limit = await http.place_order(
        "limit",
        CreateLimit(
            guid="ignored",
            user=User(portfolio),
            side=Side.BUY,
            quantity=1,
            price=280.0,
            instrument=instrument,
        ),
    )
    assert limit.order_number and limit.req_id and limit.req_id.startswith(f"{portfolio};")
    market = await http.place_order(
        "MARKET",
        {"side": "buy", "quantity": 2, "instrument": SBER, "user": {"portfolio": portfolio}},
    )
    stop = await http.place_order(
        "stop",
        CreateStop(
            guid="ignored",
            user=User(portfolio),
            side=Side.SELL,
            quantity=1,
            trigger_price=250.0,
            condition=Condition.LESS,
            instrument=instrument,
        ),
    )
    moved = await http.update_order(
        "limit",
        limit.order_number,
        {
            "side": "buy",
            "quantity": 1,
            "price": 281.0,
            "instrument": SBER,
            "user": {"portfolio": portfolio},
        },
    )
    assert moved.order_number and moved.order_number != limit.order_number
    assert stop.order_number is not None
    for fmt in FORMATS:
        orders = await http.orders(portfolio, format=fmt)
        assert all(isinstance(o, Order) for o in orders)
        assert {market.order_number, moved.order_number} <= {o.id for o in orders}
        one = await http.order(moved.order_number, portfolio, format=fmt)
        assert one.price == 281.0 and one.qty_batch == 1
        stops = await http.stop_orders(portfolio, format=fmt)
        assert [s.id for s in stops] == [stop.order_number]
        assert isinstance(stops[0], StopOrder) and stops[0].stop_price == 250.0
        assert (await http.stop_order(stop.order_number, portfolio, format=fmt)).side == "sell"
        trades = await http.trades(portfolio, format=fmt)
        assert trades and all(isinstance(t, OwnTrade) for t in trades)
        assert sum(t.qty_batch or 0 for t in trades) == 2
        positions = await http.positions(portfolio, format=fmt)
        assert all(isinstance(p, Position) for p in positions)
        assert "SBER" in {p.symbol for p in positions}
        no_money = await http.positions(portfolio, without_currency=True, format=fmt)
        assert "RUB" not in {p.symbol for p in no_money}
        sber = await http.position("SBER", portfolio, format=fmt)
        assert isinstance(sber, Position) and sber.symbol == "SBER"
        listed = next(p for p in positions if p.symbol == "SBER")
        assert (sber.portfolio, sber.qty_units) == (listed.portfolio, listed.qty_units)
        assert isinstance(await http.summary(portfolio, format=fmt), Summary)
        assert (await http.risk(portfolio, format=fmt)).portfolio == portfolio
        spectra = await http.forts_risk(forts, format=fmt)
        assert isinstance(spectra, SpectraRisk) and spectra.portfolio == forts
    assert isinstance(await http.risk(portfolio), Risk)
    cancelled = await http.cancel_order(moved.order_number, portfolio)
    assert cancelled.message == "success" and cancelled.order_number == moved.order_number
    await http.cancel_order(stop.order_number, portfolio, stop=True)
    assert (await http.order(moved.order_number, portfolio)).status == "canceled"
    assert (await http.stop_order(stop.order_number, portfolio)).status == "canceled"
    assert all(isinstance(m, Model) for m in await http.orders(portfolio))
    with pytest.raises(ServerRejected) as no_position:
        await http.position("LKOH", portfolio)
    assert no_position.value.http_code == 404


async def test_same_req_id_places_once(sim: Simulator, http: HttpClient) -> None:
    """X-REQID (docs/protocol.md §8.5): resending a req_id returns the first answer; a refusal is
    raised again."""
    portfolio = sim.demo.portfolios[0]
    body = {
        "side": "buy",
        "quantity": 1,
        "price": 280.0,
        "instrument": SBER,
        "user": {"portfolio": portfolio},
    }
    first = await http.place_order("limit", body, req_id="my-req-1")
    again = await http.place_order("limit", body, req_id="my-req-1")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.order_number == first.order_number
    assert [o.id for o in sim.engine.orders(portfolio)] == [first.order_number]
    off_grid = {**body, "price": 280.005}
    for _ in range(2):
        with pytest.raises(OrderRejected) as refused:
            await http.place_order("limit", off_grid, req_id="my-req-2")
        assert refused.value.http_code == 400 and "price step" in refused.value.message
    stranger = sim.add_account("stranger").portfolios[0]
    with pytest.raises(OrderRejected) as denied:
        await http.place_order("limit", {**body, "user": {"portfolio": stranger}})
    assert denied.value.http_code == 403
    assert len(sim.engine.orders(portfolio)) == 1


async def test_all_trades_and_their_history_in_every_format() -> None:
    """alltrades (a list) and alltrades/history ({total, list}; docs/protocol.md §8.3): filters go
    out as query parameters, answers come back as Trade models in every format."""
    market = SyntheticMarket(seed=2, history_days=0, events_per_second=20)
    tape = market.last_trades("SBER", 30)
    queries: list[dict[str, str]] = []

    async def alltrades(request: web.Request) -> web.StreamResponse:
        queries.append(dict(request.query))
        fmt = Format(request.query["format"])
        return web.json_response([to_wire(t, fmt) for t in tape])

    async def history(request: web.Request) -> web.StreamResponse:
        queries.append(dict(request.query))
        fmt = Format(request.query["format"])
        page = AllTradesPage(total=len(tape), trades=tape[:10])
        return web.json_response(to_wire(page, fmt))

    base = "/md/v2/Securities/{ex}/{sym}/alltrades"
    routes = [web.get(base, alltrades), web.get(base + "/history", history)]
    async with serve(routes) as url, HttpClient(url, FixedTokens(["t"])) as client:
        for fmt in FORMATS:
            trades = await client.all_trades(
                "SBER", from_=100, to=200, side="BUY", take=50, descending=True, format=fmt
            )
            assert [t.id for t in trades] == [t.id for t in tape]
            assert all(isinstance(t, Trade) and t.qty > 0 for t in trades)
            page = await client.all_trades_history("SBER", limit=10, offset=0, format=fmt)
            assert isinstance(page, AllTradesPage) and page.total == len(tape) > 10
            assert [t.id for t in page.trades] == [t.id for t in tape[:10]]
    assert queries[0] == {
        "from": "100",
        "to": "200",
        "side": "buy",
        "take": "50",
        "descending": "true",
        "format": "Simple",
    }
    assert queries[1] == {"limit": "10", "offset": "0", "format": "Simple"}


async def test_other_order_reply_shapes() -> None:
    """A replay whose oldResponse is the bare first reply, a failed first reply, and a
    plain-text cancel answer are all understood."""
    replies = [
        {"message": "already handled", "oldResponse": {"message": "success", "orderNumber": 77}},
        {"message": "already handled", "oldResponse": {"status": 400, "body": {"message": "no"}}},
    ]

    async def create(request: web.Request) -> web.StreamResponse:
        return web.json_response(replies.pop(0), status=400)

    async def delete(request: web.Request) -> web.StreamResponse:
        return web.Response(text="success")

    base = "/commandapi/warptrans/TRADE/v2/client/orders"
    routes = [web.post(base + "/actions/{kind}", create), web.delete(base + "/{oid}", delete)]
    body = {"side": "buy", "quantity": 1, "instrument": SBER, "user": {"portfolio": "D1"}}
    async with serve(routes) as url, HttpClient(url, FixedTokens(["t"])) as client:
        ack = await client.place_order("market", body, req_id="r1")
        assert (ack.order_number, ack.replayed, ack.req_id) == ("77", True, "r1")
        with pytest.raises(OrderRejected) as exc:
            await client.place_order("market", body, req_id="r2")
        assert (exc.value.http_code, exc.value.message) == (400, "no")
        cancelled = await client.cancel_order(5, "D1")
        assert (cancelled.order_number, cancelled.message) == ("5", "success")


# -- history paging over many pages (a paging server) -------------------------------------------


PAGE = 100
HIST_MARKET = SyntheticMarket(
    seed=5, start_ms=DEFAULT_START_MS, history_days=3, events_per_second=0
)


def _history_app(mode: str, seen: list[int]) -> list[web.RouteDef]:
    """``/md/v2/history`` that answers at most PAGE candles: the oldest ("forward"; "overlap"
    also repeats the candle before ``from``) or the newest ("backward")."""
    market = HIST_MARKET

    async def history(request: web.Request) -> web.StreamResponse:
        seen.append(id(request.transport))
        q = request.query
        fmt = Format(q.get("format", "Simple"))
        tf, start, end = int(q["tf"]), int(q["from"]), int(q["to"])
        bars = market.bars(q["symbol"], tf, start - (tf if mode == "overlap" else 0), end)
        page = bars[-PAGE:] if mode == "backward" else bars[:PAGE]
        if not page:
            return web.json_response(to_wire(HistoryPage(), fmt))
        later = market.bars(q["symbol"], tf, page[-1].time + 1, end + tf * 10)
        after = [b for b in later if b.time > page[-1].time]
        before = market.bars(q["symbol"], tf, page[0].time - 1000 * tf, page[0].time - 1)
        nxt = after[0].time if after else None
        prev = before[-1].time if before else None
        return web.json_response(to_wire(HistoryPage(bars=page, next=nxt, prev=prev), fmt))

    return [web.get("/md/v2/history", history)]


@pytest.mark.parametrize("mode", ["forward", "overlap", "backward"])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_history_paging_returns_every_bar_once(mode: str, fmt: Format) -> None:
    """A range of ~29 pages: every candle between from and to exactly once, in order, over one
    kept-alive connection, whether the server pages forward (with or without overlap) or
    answers the newest part first."""
    now = DEFAULT_START_MS // 1000
    start, end = now - 2 * 86_400 - 3_600 + 30, now - 3_600  # `from` inside a candle
    expected = [bar_tuple(b) for b in HIST_MARKET.bars("SBER", 60, start, end)]
    assert len(expected) > 25 * PAGE and expected[0][0] < start
    seen: list[int] = []
    async with serve(_history_app(mode, seen)) as url, HttpClient(url) as client:
        got = [bar_tuple(b) async for b in client.iter_history("SBER", 60, start, end, format=fmt)]
    assert got == expected
    times = [t[0] for t in got]
    assert times == sorted(set(times))
    pages = -(-len(expected) // PAGE)
    assert pages <= len(seen) <= pages + (2 if mode == "overlap" else 0)
    assert len(set(seen)) == 1  # one keep-alive connection for every page


async def test_history_paging_stops_when_the_server_does_not_advance() -> None:
    """A server whose `next` points back at an empty page is an error, not an endless loop."""

    async def history(request: web.Request) -> web.StreamResponse:
        return web.json_response({"history": [], "next": int(request.query["from"]), "prev": None})

    async with serve([web.get("/md/v2/history", history)]) as url, HttpClient(url) as client:
        with pytest.raises(Exception, match="does not advance"):
            await client.history("SBER", 60, 1_000, 100_000)


# -- failures: 429, 401, 5xx, network, bad JSON --------------------------------------------------


async def test_rate_limit_429_with_retry_after_from_the_simulator() -> None:
    """Past the simulator's per-account rate (5/s here) every request still succeeds, after
    waiting the Retry-After it was given."""
    async with Simulator(
        port=0, day_order_lifetime=DAY, http_rate=5, history_days=1, rate=0
    ) as sim:
        async with (
            TokenManager(sim.demo_refresh_token, sim.url) as tokens,
            HttpClient(sim.url, tokens) as client,
        ):
            started = time.monotonic()
            times = await asyncio.gather(*(client.server_time() for _ in range(8)))
            assert len(times) == 8
            assert client.stats["rate_limited"] >= 3
            assert time.monotonic() - started >= 0.9  # Retry-After: 1 was honoured


async def test_429_without_retry_after_backs_off_then_gives_up() -> None:
    """429 without Retry-After: backoff and retry; too many 429s or a long Retry-After raise
    ServerLimitExceeded."""
    answers = [429, 429, 200]
    calls: list[str] = []

    async def limited(request: web.Request) -> web.StreamResponse:
        calls.append(request.path)
        if request.path.endswith("availableBoards"):
            return web.Response(status=429, text="slow down", headers={"Retry-After": "3600"})
        status = answers.pop(0) if answers else 429
        if status == 429:
            return web.Response(status=429, text="Превышен лимит")
        return web.json_response(12345)

    routes = [
        web.get("/md/v2/time", limited),
        web.get("/md/v2/Securities/MOEX/SBER/availableBoards", limited),
    ]
    async with serve(routes) as url, HttpClient(url, retry=NO_DELAY, rate_retries=3) as client:
        assert await client.server_time() == 12345
        assert client.stats["rate_limited"] == 2
        with pytest.raises(ServerLimitExceeded) as exc:
            await client.server_time()
        assert exc.value.http_code == 429 and "Превышен" in exc.value.message
        assert len(calls) == 3 + 4
        calls.clear()
        with pytest.raises(ServerLimitExceeded):
            await client.available_boards("SBER")
        assert len(calls) == 1  # an hour's Retry-After (> max_retry_after) is not waited for


async def test_client_side_pacing() -> None:
    """max_rps: the 11th request within a second waits for the window to move."""

    async def now(request: web.Request) -> web.StreamResponse:
        return web.json_response(1)

    async with serve([web.get("/md/v2/time", now)]) as url, HttpClient(url, max_rps=10) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.server_time() for _ in range(10)))
        await client.server_time()
        assert time.monotonic() - started >= 0.95


async def test_401_refreshes_the_token_once_then_retries(sim: Simulator) -> None:
    """Every token revoked server-side: one forced refresh, the request goes through."""
    async with (
        TokenManager(sim.demo_refresh_token, sim.url) as tokens,
        HttpClient(sim.url, tokens) as client,
    ):
        await client.summary(sim.demo.portfolios[0])
        sim.faults.expire_tokens()
        summary = await client.summary(sim.demo.portfolios[0], format="Slim")
        assert isinstance(summary, Summary)
        assert client.stats["token_refreshes"] == 1
        assert tokens.stats["refreshes"] == 2


async def test_401_twice_raises_token_rejected(sim: Simulator) -> None:
    """A token the server keeps refusing: one refresh, then TokenRejected."""
    tokens = FixedTokens([sim.access_token(lifetime=-60), sim.access_token(lifetime=-60)])
    async with HttpClient(sim.url, tokens) as client:
        with pytest.raises(TokenRejected) as exc:
            await client.positions(sim.demo.portfolios[0])
        assert exc.value.http_code == 401
        assert tokens.refreshes == 1 and client.stats["requests"] == 2


async def test_5xx_and_network_failures_are_retried_then_raised() -> None:
    """503/502 are retried; a lasting 500 gives ConnectError; a cancel is not repeated after a
    5xx; a silent server gives TransportTimeout; a dead port ConnectError."""
    answers = [503, 502]
    calls: list[str] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        calls.append(request.method)
        if answers:
            return web.Response(status=answers.pop(0), text="busy")
        return web.json_response(7)

    async def broken(request: web.Request) -> web.StreamResponse:
        calls.append(request.method)
        return web.json_response({"message": "boom"}, status=500)

    async def silent(request: web.Request) -> web.StreamResponse:
        calls.append(request.method)
        await asyncio.sleep(0.3)
        return web.json_response([])

    routes = [
        web.get("/md/v2/time", flaky),
        web.get("/md/v2/Securities/MOEX/SBER/availableBoards", broken),
        web.get("/md/v2/Securities/{tickers}/quotes", silent),
        web.delete("/commandapi/warptrans/TRADE/v2/client/orders/{oid}", broken),
    ]
    async with serve(routes) as url:
        async with HttpClient(url, FixedTokens(["t0k3n"]), retry=QUICK, timeout=0.05) as client:
            assert await client.server_time() == 7 and calls == ["GET"] * 3
            calls.clear()
            with pytest.raises(ConnectError, match="HTTP 500 boom"):
                await client.available_boards("SBER")
            assert calls == ["GET"] * 3
            calls.clear()
            with pytest.raises(ConnectError, match="outcome is unknown"):
                await client.cancel_order("123", "D00001")
            assert calls == ["DELETE"]
            calls.clear()
            with pytest.raises(TransportTimeout):
                await client.quotes(["SBER"])
            assert calls == ["GET"] * 3
    async with HttpClient(url, retry=QUICK) as client:  # the server is gone now
        with pytest.raises(ConnectError, match="cannot connect"):
            await client.server_time()
        assert client.stats["requests"] == 3


async def test_order_without_reply_raises_order_status_unknown() -> None:
    """An order command with no reply after its retries: OrderStatusUnknown with the req_id."""
    calls: list[str | None] = []

    async def silent(request: web.Request) -> web.StreamResponse:
        calls.append(request.headers.get("X-REQID"))
        await asyncio.sleep(0.3)
        return web.json_response({"message": "success", "orderNumber": "1"})

    route = web.post("/commandapi/warptrans/TRADE/v2/client/orders/actions/{kind}", silent)
    body = {"side": "buy", "quantity": 1, "instrument": SBER, "user": {"portfolio": "D00001"}}
    async with serve([route]) as url:
        async with HttpClient(url, FixedTokens(["t"]), retry=QUICK, timeout=0.05) as client:
            with pytest.raises(OrderStatusUnknown) as exc:
                await client.place_order("market", body, req_id="rid-7")
    assert exc.value.guid == "rid-7"
    assert calls == ["rid-7"] * 3  # every retry carried the same X-REQID


async def test_bad_json_raises_frame_error() -> None:
    """A 200 whose body is not the expected JSON is a FrameError naming what was wrong."""

    async def junk(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("quotes"):
            return web.json_response([{"no": "symbol"}])
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    routes = [web.get("/md/v2/time", junk), web.get("/md/v2/Securities/{t}/quotes", junk)]
    async with serve(routes) as url, HttpClient(url) as client:
        with pytest.raises(FrameError, match="time"):
            await client.server_time()
        with pytest.raises(FrameError, match="Quote"):
            await client.quotes(["SBER"])


# -- arguments, lifecycle, secrets -----------------------------------------------------------


async def test_bad_arguments_raise_before_any_request() -> None:
    """Every bad argument raises InvalidArgumentError naming it, and nothing is sent."""
    calls: list[str] = []

    async def anything(request: web.Request) -> web.StreamResponse:
        calls.append(request.path)
        return web.json_response([])

    good = {"side": "buy", "quantity": 1, "instrument": SBER, "user": {"portfolio": "D1"}}
    limit_kw: dict[str, Any] = {
        "guid": "g",
        "user": User("D1"),
        "side": "buy",
        "quantity": 1,
        "price": 1.0,
        "instrument": InstrumentRef(symbol="SBER", exchange=Exchange.MOEX),
    }
    wrong_id = UpdateLimit(order_id="6", **limit_kw)
    async with serve([web.route("*", "/{tail:.*}", anything)]) as url:
        async with HttpClient(url, FixedTokens(["t"])) as client:
            cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("symbol", lambda: client.security("")),
                ("symbol", lambda: client.security("SB/ER")),
                ("exchange", lambda: client.security("SBER", "NYSE")),
                ("from_", lambda: client.history("SBER", 60, 200, 100)),
                ("from_", lambda: client.history("SBER", 60, -1, 100)),
                ("tf", lambda: client.history("SBER", "5x", 0, 100)),
                ("tf", lambda: client.history("SBER", 0, 0, 100)),
                ("count_back", lambda: client.history("SBER", 60, 0, 9, count_back=0)),
                ("depth", lambda: client.order_book("SBER", depth=0)),
                ("depth", lambda: client.order_book("SBER", depth=51)),
                ("limit", lambda: client.securities("sber", limit=0)),
                ("offset", lambda: client.securities("sber", offset=-1)),
                ("sector", lambda: client.securities("sber", sector="BONDS")),
                ("market", lambda: client.all_securities(market="X")),
                ("format", lambda: client.summary("D1", format="Medium")),
                ("portfolio", lambda: client.positions(" ")),
                ("symbols", lambda: client.quotes([])),
                ("symbols", lambda: client.quotes(["MOEX:"])),
                ("kind", lambda: client.place_order("iceberg", good)),
                ("body", lambda: client.place_order("market", {**good, "quantity": 0})),
                ("body", lambda: client.place_order("limit", good)),  # no price
                ("req_id", lambda: client.place_order("market", good, req_id="")),
                ("body", lambda: client.update_order("limit", "5", wrong_id)),
                ("body", lambda: client.update_order("limit", "6", CreateLimit(**limit_kw))),
                ("stop", lambda: client.cancel_order("1", "D1", stop=1)),  # type: ignore[arg-type]
            ]
            for field, call in cases:
                with pytest.raises(InvalidArgumentError) as exc:
                    await call()
                assert exc.value.field == field, (field, exc.value)
            iterator = client.iter_history("SBER", 60, 1, 5)  # nothing sent until iterated
            del iterator
    with pytest.raises(InvalidArgumentError):
        client.iter_history("SBER", 60, 5, 1)
    async with HttpClient(url) as anonymous:
        with pytest.raises(ConfigurationError, match="needs an access token"):
            await anonymous.summary("D1")
    assert calls == []


async def test_lifecycle() -> None:
    """The session is created in the running loop, closed by aclose; a closed client refuses."""
    async with serve([]) as url:
        client = HttpClient(url)
        assert "idle" in repr(client)
        async with client:
            assert "open" in repr(client)
        assert client.closed and "closed" in repr(client)
        with pytest.raises(InvalidState):
            await client.server_time()
        await client.aclose()  # idempotent
    with pytest.raises(ConfigurationError):
        HttpClient("http://example.com")  # plain http to a remote host


async def test_no_token_in_logs_errors_or_reprs(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A test captures logs at DEBUG and greps for the tokens: they appear nowhere, even when a
    server echoes the Authorization header back in its error text."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"message": f"bad header {request.headers.get('Authorization')}"}, status=400
        )

    secret = sim.access_token()
    async with serve([web.get("/md/v2/Clients/{ex}/{p}/{view}", echo)]) as url:
        async with HttpClient(url, FixedTokens([secret])) as client:
            with pytest.raises(ServerRejected) as echoed:
                await client.summary("D00001")
            texts += [str(echoed.value), repr(echoed.value), repr(client)]
    async with (
        TokenManager(sim.demo_refresh_token, sim.url) as tokens,
        HttpClient(sim.url, tokens) as client,
    ):
        await client.summary(sim.demo.portfolios[0])
        used = [secret, tokens.current or ""]
        sim.faults.expire_tokens()
        await client.positions(sim.demo.portfolios[0])
        texts += [repr(client), repr(tokens), str(client.stats)]
        used.append(tokens.current or "")
        async with HttpClient(sim.url, FixedTokens([secret, secret]), retry=QUICK) as stale:
            with pytest.raises(TokenRejected) as rejected:
                await stale.orders(sim.demo.portfolios[0])
            texts += [str(rejected.value), repr(rejected.value), repr(stale)]
    assert "bad header Bearer <token …" in texts[0]
    texts.append(caplog.text)
    texts += [r.getMessage() for r in caplog.records]
    assert any("refreshing the access token" in r.getMessage() for r in caplog.records)
    assert len(set(used)) == 3 and all(len(t) > 50 for t in used)
    for token in used:
        assert all(token not in text for text in texts)
