"""Values the real shapes carry: money positions, fired stop orders, the tape over HTTP, paging.

``test_real_shapes.py`` checks keys and JSON types; these check what the values mean, over real
sockets: a money position in lots of 1 RUB, the exchange order id of a fired stop order, the
filters and pages of ``…/alltrades`` and ``…/alltrades/history``, ``/md/v2/history`` paging
numbers, and the smaller HTTP views ALOR has.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from alorws.client.auth import TokenManager
from alorws.client.http import HttpClient
from alorws.protocol.enums import Side
from alorws.sim.app import Simulator

from .._sim import DAY
from .conftest import new_guid
from .wsclient import RawWS


FORMATS = ["Simple", "Slim", "Heavy"]
SBER = {"symbol": "SBER", "exchange": "MOEX", "instrumentGroup": "TQBR"}
LOTS = ("qtyT0Batch", "qtyT1Batch", "qtyT2Batch", "qtyTFutureBatch", "qtyBatch", "openQtyBatch")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def command(cws: RawWS, opcode: str, portfolio: str, **fields: Any) -> dict[str, Any]:
    frame = {"opcode": opcode, "guid": new_guid("cmd"), "user": {"portfolio": portfolio}}
    reply = await cws.request({**frame, **fields})
    assert reply["httpCode"] == 200, reply
    return reply


async def get(http: aiohttp.ClientSession, path: str, token: str, **params: Any) -> Any:
    query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    async with http.get(path, params=query, headers=bearer(token)) as resp:
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json()


async def status(http: aiohttp.ClientSession, path: str, token: str | None, **params: Any) -> int:
    headers = bearer(token) if token else {}
    query = {k: str(v) for k, v in params.items()}
    async with http.get(path, params=query, headers=headers) as resp:
        return resp.status


# -- money positions and lots -------------------------------------------------------------------


async def test_money_position_is_in_lots_of_one_ruble(
    sim: Simulator, cws: RawWS, ws: RawWS, token: str, http: aiohttp.ClientSession
) -> None:
    """RUB has lot size 1 and fractional lots equal to its units (a commission makes them
    fractional; docs/protocol.md §4.6); a stock position's lots stay JSON integers."""
    stock = sim.demo.portfolios[0]
    await command(cws, "create:market", stock, side="buy", quantity=2, instrument=SBER)
    req = {
        "opcode": "PositionsGetAndSubscribeV2",
        "guid": new_guid("pos"),
        "token": token,
        "portfolio": stock,
        "exchange": "MOEX",
        "format": "Simple",
        "skipHistory": False,
    }
    assert (await ws.request(req))["httpCode"] == 200
    money, shares = await ws.data(req["guid"], 2)
    assert (money["symbol"], money["isCurrency"], money["lotSize"]) == ("RUB", True, 1)
    units = money["qtyUnits"]
    assert isinstance(units, float) and units != round(units)  # kopecks after the commission
    assert units == sim.engine.positions(stock)[0].qty_units
    assert [money[k] for k in (*LOTS[:-1], "qty")] == [units] * 6
    assert money["openQtyBatch"] == money["open"] == money["openUnits"] == 1_000_000
    assert shares["symbol"] == "SBER" and shares["isCurrency"] is False
    for key in (*LOTS, "qty", "open", "qtyUnits", "lotSize"):
        assert type(shares[key]) is int, (key, shares[key])  # `2`, never `2.0`
    assert (shares["qtyBatch"], shares["qtyUnits"]) == (2, 20)
    heavy = await get(http, f"/md/v2/Clients/MOEX/{stock}/positions", token, format="Heavy")
    assert heavy[0]["qtyT0Batch"] == units and "qtyBatch" not in heavy[0]
    one = await get(http, f"/md/v2/Clients/MOEX/{stock}/positions/SBER", token, format="Heavy")
    assert (one["symbol"], one["qtyT1Batch"]) == ("SBER", 2)
    assert await status(http, f"/md/v2/Clients/MOEX/{stock}/positions/GAZP", token) == 404


# -- stop orders --------------------------------------------------------------------------------


async def test_fired_stop_order_has_its_exchange_order_id_as_a_number(
    sim: Simulator, cws: RawWS, ws: RawWS, token: str, http: aiohttp.ClientSession
) -> None:
    """Once fired, ``exchangeOrderId`` (Slim ``eid``) is the JSON number of the order it
    placed (docs/protocol.md §4.12); before, null. Without ``protectingSeconds`` the stop still has
    one."""
    stock = sim.demo.portfolios[0]
    low = sim.market.instruments["SBER"].price_min
    common = {"quantity": 1, "triggerPrice": low, "instrument": SBER}
    idle = await command(cws, "create:stop", stock, side="sell", condition="Less", **common)
    fired = await command(cws, "create:stop", stock, side="buy", condition="More", **common)
    sim.set_trading_status("SBER", 17)  # not in a break: the prints below must happen
    for _ in range(50):  # each burst prints synchronously; the stop fires on one of them
        sim.burst("SBER", 20)
        if any(s.id == fired["orderNumber"] and s.exchange_order_id for s in stops(sim)):
            break
    placed = next(o for o in sim.engine.orders(stock) if o.side and o.side.value == "buy")
    for fmt in FORMATS:
        eid = "eid" if fmt == "Slim" else "exchangeOrderId"
        req = {
            "opcode": "StopOrdersGetAndSubscribeV2",
            "guid": new_guid("stops"),
            "token": token,
            "portfolio": stock,
            "exchange": "MOEX",
            "format": fmt,
        }
        assert (await ws.request(req))["httpCode"] == 200
        replay = {s["id"]: s for s in await ws.data(req["guid"], 2)}
        assert replay[fired["orderNumber"]][eid] == int(placed.id)
        assert type(replay[fired["orderNumber"]][eid]) is int
        assert replay[idle["orderNumber"]][eid] is None
        psec = "psec" if fmt == "Slim" else "protectingSeconds"
        assert replay[idle["orderNumber"]][psec] == 15
        path = f"/md/v2/Clients/MOEX/{stock}/stoporders/{fired['orderNumber']}"
        assert (await get(http, path, token, format=fmt))[eid] == int(placed.id)


def stops(sim: Simulator) -> list[Any]:
    return sim.engine.stop_orders(sim.demo.portfolios[0])


# -- the tape over HTTP -------------------------------------------------------------------------


@pytest.fixture
async def still() -> AsyncIterator[tuple[Simulator, aiohttp.ClientSession, str]]:
    """A simulator whose market moves only when told (``burst``), with an HTTP session."""
    async with (
        Simulator(port=0, day_order_lifetime=DAY, rate=0.0, history_days=2) as sim,
        aiohttp.ClientSession(base_url=sim.url) as http,
    ):
        yield sim, http, sim.access_token()


async def test_all_trades_filters_and_pages(
    still: tuple[Simulator, aiohttp.ClientSession, str],
) -> None:
    """``…/alltrades`` (docs/protocol.md §8.3): the session's tape, oldest first; every filter the
    client sends."""
    sim, http, token = still
    sim.burst("SBER", 200)
    path = "/md/v2/Securities/MOEX/SBER/alltrades"
    everything = await get(http, path, token)
    assert len(everything) > 50
    ids = [t["id"] for t in everything]
    assert ids == sorted(ids)
    assert [t["id"] for t in await get(http, path, token, offset=5, take=7)] == ids[5:12]
    newest = await get(http, path, token, descending=True, take=3)
    assert [t["id"] for t in newest] == ids[::-1][:3]
    sells = await get(http, path, token, side="sell")
    assert sells and {t["side"] for t in sells} == {"sell"}
    assert len(sells) == sum(t["side"] == "sell" for t in everything)
    middle = await get(http, path, token, fromId=ids[10], toId=ids[20])
    assert [t["id"] for t in middle] == ids[10:21]
    qty = sorted(t["qty"] for t in everything)[len(everything) // 2]
    big = await get(http, path, token, qtyFrom=qty, includeVirtualTrades=False)
    assert big and all(t["qty"] >= qty for t in big)
    price = everything[-1]["price"]
    cheap = await get(http, path, token, priceTo=price, priceFrom=price)
    assert cheap and {t["price"] for t in cheap} == {price}
    first, last = (f(t["timestamp"] for t in everything) // 1000 for f in (min, max))
    assert await get(http, path, token, **{"from": first, "to": last}) == everything
    assert await get(http, path, token, to=first - 1) == []
    slim = await get(http, path, token, format="Slim", take=1)
    assert set(slim[0]) == {"id", "sym", "bd", "q", "px", "t", "s", "oi", "h"}
    assert await status(http, path, None) == 401
    assert await status(http, path, token, take="x") == 400
    assert await status(http, "/md/v2/Securities/MOEX/NOPE/alltrades", token) == 404


async def test_all_trades_history_pages_with_total_and_agrees_with_candles(
    still: tuple[Simulator, aiohttp.ClientSession, str],
) -> None:
    """``…/alltrades/history`` (docs/protocol.md §8.3): previous sessions' trades,
    ``limit``/``offset`` pages of ``total``; a minute's prints make that minute's candle."""
    sim, http, token = still
    sim.burst("SBER", 50)
    today = int(time.time()) // 86_400 * 86_400
    path = "/md/v2/Securities/MOEX/SBER/alltrades/history"
    first = await get(http, path, token, limit=10)
    second = await get(http, path, token, limit=10, offset=10)
    assert first["total"] == second["total"] > 1000
    trades = first["list"] + second["list"]
    ids = [t["id"] for t in trades]
    assert ids == list(range(ids[0], ids[0] + 20))
    assert all(t["timestamp"] < today * 1000 for t in trades)  # before this session
    live = await get(http, "/md/v2/Securities/MOEX/SBER/alltrades", token, take=1)
    assert ids[-1] < live[0]["id"]
    minute = trades[4]["timestamp"] // 1000
    assert minute % 60 == 0
    window = await get(http, path, token, limit=100, **{"from": minute, "to": minute + 59})
    prints = window["list"]
    assert window["total"] == len(prints) == 4
    query = {"symbol": "SBER", "exchange": "MOEX", "tf": 60, "from": minute, "to": minute}
    (bar,) = (await get(http, "/md/v2/history", token, **query))["history"]
    prices = [t["price"] for t in prints]
    assert (bar["open"], bar["close"]) == (prices[0], prices[-1])
    assert (bar["high"], bar["low"]) == (max(prices), min(prices))
    assert bar["volume"] == sum(t["qty"] for t in prints)
    slim = await get(http, path, token, limit=1, format="Slim")
    assert set(slim) == {"total", "list"} and "sym" in slim["list"][0]
    for bad in ({}, {"limit": 0}, {"limit": 50_001}):
        assert await status(http, path, token, **bad) == 400


# -- history paging and the smaller views -------------------------------------------------------


async def test_history_paging_numbers_are_never_null(
    http: aiohttp.ClientSession, token: str
) -> None:
    """``next``/``prev`` are numbers: the nearest candles outside the page, or the period
    just outside the range asked when there is none (``next`` then lies after ``to``;
    docs/protocol.md §8.3)."""
    now = int(time.time())
    query = {"symbol": "SBER", "exchange": "MOEX", "tf": 60}
    page = await get(http, "/md/v2/history", token, **query, **{"from": now - 300, "to": now})
    assert page["next"] > now and page["prev"] < page["history"][0]["time"]
    old = {"from": now - 30 * 86_400, "to": now - 29 * 86_400}
    empty = await get(http, "/md/v2/history", token, **query, **old)
    assert empty["history"] == []
    assert empty["prev"] < old["from"] and empty["next"] > old["to"]
    # From the epoch: nothing lies before it, and a time is never negative.
    epoch = await get(http, "/md/v2/history", token, **query, **{"from": 0, "to": 3600})
    assert epoch["history"] == [] and epoch["prev"] == 0 and epoch["next"] > 3600


async def test_instrument_margins_only_on_futures(ws: RawWS, token: str) -> None:
    """The first instrument message of a stock has status and band only (docs/protocol.md §4.5); a
    future adds its margins."""
    got = {}
    for code in ("SBER", "SiZ6"):
        req = {
            "opcode": "InstrumentsGetAndSubscribeV2",
            "guid": new_guid("instr"),
            "token": token,
            "code": code,
            "exchange": "MOEX",
            "format": "Heavy",
        }
        assert (await ws.request(req))["httpCode"] == 200
        (got[code],) = await ws.data(req["guid"])
    band = {"symbol", "exchange", "board", "tradingStatus", "tradingStatusInfo"}
    assert set(got["SBER"]) == band | {"priceMin", "priceMax"}
    assert set(got["SiZ6"]) - set(got["SBER"]) == {"marginBuy", "marginSell"}
    assert got["SiZ6"]["marginBuy"] > 0


@pytest.fixture
async def traded(sim: Simulator, cws: RawWS) -> AsyncIterator[str]:
    """The demo stock portfolio after a buy and a sell of SBER."""
    stock = sim.demo.portfolios[0]
    await command(cws, "create:market", stock, side="buy", quantity=3, instrument=SBER)
    await command(cws, "create:market", stock, side="sell", quantity=1, instrument=SBER)
    yield stock


async def test_own_trades_views(
    sim: Simulator, http: aiohttp.ClientSession, token: str, traded: str
) -> None:
    """The session's trades (docs/protocol.md §8.4; Heavy adds ``qty``, ``shortName``,
    ``currency``), one instrument's, and the history endpoint with its filters."""
    base = f"/md/v2/Clients/MOEX/{traded}"
    trades = await get(http, f"{base}/trades", token, format="Heavy")
    lots = {"buy": 0, "sell": 0}
    for t in trades:  # an order may fill at several prices: one trade per fill
        assert t["qty"] == t["qtyBatch"]
        lots[t["side"]] += t["qty"]
    assert lots == {"buy": 3, "sell": 1}
    assert {(t["shortName"], t["currency"]) for t in trades} == {("Сбербанк", "RUB")}
    assert await get(http, f"{base}/SBER/trades", token, format="Heavy") == trades
    assert await get(http, f"{base}/GAZP/trades", token) == []
    stats = f"/md/stats/MOEX/{traded}/history/trades"
    history = await get(http, stats, token, format="Heavy")
    assert [t["id"] for t in history] == [t["id"] for t in trades]
    assert "shortName" not in history[0] and history[0]["qty"] == trades[0]["qty"]
    sells = await get(http, stats, token, side="sell")
    assert sells and {t["side"] for t in sells} == {"sell"}
    newest = await get(http, stats, token, descending=True, limit=1)
    assert [t["id"] for t in newest] == [trades[-1]["id"]]
    assert await get(http, stats + "/GAZP", token) == []
    since = await get(http, stats, token, ticker="SBER", dateFrom="2020-01-01")
    assert len(since) == len(trades)
    assert await get(http, stats, token, dateFrom="2999-01-01T00:00:00.0000000Z") == []
    assert await get(http, stats, token, **{"from": int(trades[-1]["id"]) + 1}) == []
    v2 = await get(http, f"/md/v2/Stats/MOEX/{traded}/history/trades", token, format="Heavy")
    assert v2 == trades
    assert await status(http, stats, token, limit=1001) == 400


async def test_actual_futures_quote(http: aiohttp.ClientSession, token: str) -> None:
    """``…/{base}/actualFuturesQuote`` (docs/protocol.md §8.3): the nearest future of a base
    code."""
    path = "/md/v2/Securities/MOEX/{}/actualFuturesQuote"
    quote = await get(http, path.format("Si"), token, format="Heavy")
    assert quote["symbol"] == "SiZ6" and quote["accruedInterest"] is None
    assert await status(http, path.format("Xx"), token) == 404
    assert await status(http, path.format("Si"), None) == 401


async def test_security_heavy_has_risk_class_margins(
    http: aiohttp.ClientSession, token: str
) -> None:
    """Heavy Securities carry the currencies and the initial margin per client risk class
    (docs/protocol.md §8.6); lower-risk classes of clients put up more."""
    for symbol in ("SBER", "SiZ6"):
        sec = await get(http, f"/md/v2/Securities/MOEX/{symbol}", token, format="Heavy")
        assert (sec["nominalCurrency"], sec["settlementCurrency"]) == ("RUB", None)
        for side in ("Long", "Short"):
            low, std, high, special = (
                sec[f"initialMargin{risk}Risk{side}"]
                for risk in ("Low", "Standard", "High", "Special")
            )
            assert low > std > high == special > 0
    simple = await get(http, "/md/v2/Securities/MOEX/SBER", token)
    assert not any(key.startswith("initialMargin") for key in simple)


async def test_commandapi_replay_keeps_the_status_code(
    sim: Simulator, http: aiohttp.ClientSession, token: str
) -> None:
    """A replayed ``X-REQID`` answers 400 with ``oldResponse: {statusCode, body}``
    (docs/protocol.md §8.5)."""
    path = "/commandapi/warptrans/TRADE/v2/client/orders/actions/market"
    body = {"side": "buy", "quantity": 1, "instrument": SBER}
    body["user"] = {"portfolio": sim.demo.portfolios[0]}
    headers = {**bearer(token), "X-REQID": "D00001;42"}
    async with http.post(path, json=body, headers=headers) as resp:
        first = await resp.json()
    async with http.post(path, json=body, headers=headers) as resp:
        assert resp.status == 400
        replay = await resp.json()
    assert replay["oldResponse"] == {"statusCode": 200, "body": first}


async def test_the_client_reads_the_tape_endpoints(
    still: tuple[Simulator, aiohttp.ClientSession, str],
) -> None:
    """``HttpClient.all_trades`` / ``all_trades_history`` (404 before these endpoints existed)
    decode the simulator's answers in every format, filters and pages included."""
    sim, _, _ = still
    sim.burst("SBER", 100)
    async with (
        TokenManager(sim.demo_refresh_token, sim.url) as tokens,
        HttpClient(sim.url, tokens) as client,
    ):
        for fmt in FORMATS:
            tape = await client.all_trades("SBER", side="buy", take=5, format=fmt)
            assert 0 < len(tape) <= 5 and {t.side for t in tape} == {Side.BUY}
            page = await client.all_trades_history("SBER", limit=3, offset=2, format=fmt)
            assert page.total > 2 and len(page.trades) == 3
            assert all(t.symbol == "SBER" and t.qty > 0 for t in page.trades)
