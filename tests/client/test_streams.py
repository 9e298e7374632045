"""Typed streams against the simulator over real sockets: subscribe, receive, share, close."""

from __future__ import annotations

import asyncio

import pytest

from alorws.client import AlorClient, LaneKind, Policy
from alorws.errors import ServerRejected, SubscriptionLimitError
from alorws.protocol import Bar, Format, InstrumentPatch, OrderBook, Quote, Trade
from alorws.sim.app import Simulator

from .conftest import FAST


async def _first(stream, wait: float = 10.0):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(wait):
        return await anext(aiter(stream))


@pytest.mark.parametrize("fmt", list(Format))
async def test_market_streams_subscribe_receive_unsubscribe(
    client: AlorClient, fmt: Format
) -> None:
    """Quotes, book, bars, tape and instrument deliver typed models in every format."""
    streams = [
        (client.quotes("SBER", format=fmt), Quote),
        (client.order_book("SBER", depth=5, format=fmt), OrderBook),
        (client.bars("SBER", 60, from_=0, format=fmt), Bar),
        (client.all_trades("SBER", depth=5, format=fmt), Trade),
        (client.instrument("SBER", format=fmt), InstrumentPatch),
    ]
    for stream, model in streams:
        async with stream:
            item = await _first(stream)
            assert isinstance(item, model)
            assert stream.guid is not None and stream.is_open
        assert not stream.is_open
    assert client.stats()["subscriptions"] == 0


async def test_book_is_sorted_and_limited_to_depth(client: AlorClient) -> None:
    """A book stream gives at most `depth` levels a side, best first."""
    async with client.order_book("GAZP", depth=7) as book:
        b = await _first(book)
    assert 0 < len(b.bids) <= 7 and 0 < len(b.asks) <= 7
    assert [lv.price for lv in b.bids] == sorted((lv.price for lv in b.bids), reverse=True)
    assert [lv.price for lv in b.asks] == sorted(lv.price for lv in b.asks)


async def test_identical_requests_share_one_server_subscription(client: AlorClient) -> None:
    """Two identical streams share one guid; both receive; the last close unsubscribes."""
    a = await client.quotes("LKOH")
    b = await client.quotes("LKOH")
    try:
        assert a.guid == b.guid
        assert client.stats()["subscriptions"] == 1
        assert isinstance(await _first(a), Quote) and isinstance(await _first(b), Quote)
        await a.aclose()
        assert client.stats()["subscriptions"] == 1
        assert isinstance(await _first(b), Quote)
    finally:
        await a.aclose()
        await b.aclose()
    assert client.stats()["subscriptions"] == 0


async def test_rejection_carries_http_code_and_message(client: AlorClient) -> None:
    """An unknown ticker is refused by the server; `await` raises its code and message."""
    with pytest.raises(ServerRejected) as info:
        await client.quotes("NOSUCHTICKER")
    assert info.value.http_code == 400 and info.value.message
    assert client.stats()["subscriptions"] == 0


async def test_market_and_account_streams_use_separate_connections(
    client: AlorClient, sim: Simulator
) -> None:
    """Market data and account events never share a connection."""
    portfolio = client.portfolios[0]
    async with client.quotes("SBER") as q, client.positions(portfolio) as p:
        assert q._lane != p._lane
        kinds = {lane["id"]: lane["kind"] for lane in client.stats()["lanes"]}
        assert kinds[q._lane] == LaneKind.MARKET and kinds[p._lane] == LaneKind.ACCOUNT


async def test_account_streams_replay_existing_state(client: AlorClient) -> None:
    """Positions replay the current state (money at least) with existing=True."""
    portfolio = client.portfolios[0]
    async with client.positions(portfolio) as positions, client.summaries(portfolio) as summ:
        pos = await _first(positions)
        assert pos.existing and pos.portfolio == portfolio
        assert (await _first(summ)).buying_power is not None


async def test_skip_history_hides_the_initial_replay(client: AlorClient) -> None:
    """With skip_history the first replay is not delivered to the consumer."""
    portfolio = client.portfolios[0]
    async with client.positions(portfolio, skip_history=True) as positions:
        with pytest.raises(TimeoutError):
            await _first(positions, wait=0.5)


async def test_policy_latest_conflates(client: AlorClient, sim: Simulator) -> None:
    """A `latest` stream that is not read holds one pending message, counting the rest."""
    async with client.quotes("SBER", policy=Policy.LATEST, frequency=25) as quotes:
        await _first(quotes)
        sim.burst("SBER", 500)
        async with asyncio.timeout(10):
            while quotes.stats()["conflated"] == 0:  # noqa: ASYNC110 - polling a counter
                await asyncio.sleep(0.02)
        assert quotes.stats()["depth"] <= 1


async def test_subscription_limit_raises_before_sending(sim: Simulator) -> None:
    """Past the connection and subscription budget, subscribe raises without sending."""
    async with AlorClient(
        sim.demo_refresh_token,
        base_url=sim.url,
        backoff=FAST,
        max_connections=2,
        max_subscriptions_per_connection=3,
        reserve_connections=0,
    ) as client:
        streams = [await client.quotes("SBER", frequency=100 + i) for i in range(6)]
        assert client.stats()["connections"] == 2
        with pytest.raises(SubscriptionLimitError):
            await client.quotes("SBER", frequency=999)
        assert client.stats()["subscriptions"] == 6
        assert client.stats()["connections"] == 2
        for s in streams:
            await s.aclose()


async def test_every_account_stream_delivers(client: AlorClient, sim: Simulator) -> None:
    """Orders, own trades, stop orders, risks and FORTS risks deliver typed models."""
    from alorws.protocol import Order, OwnTrade, Risk, SpectraRisk, StopOrder

    from ..sim.wsclient import RawWS

    stock, _, forts = client.portfolios[:3]
    async with (
        client.orders(stock) as orders,
        client.own_trades(stock) as trades,
        client.stop_orders(stock) as stops,
        client.risks(stock) as risks,
        client.spectra_risks(forts) as forts_risks,
    ):
        assert isinstance(await _first(risks), Risk)
        assert isinstance(await _first(forts_risks), SpectraRisk)
        ws = await RawWS.connect(sim.cws_url)
        try:
            await ws.request({"opcode": "authorize", "guid": "a1", "token": sim.access_token()})
            instrument = {"symbol": "SBER", "exchange": "MOEX"}
            user = {"portfolio": stock}
            order = {"opcode": "create:market", "guid": "m1", "side": "buy", "quantity": 1}
            reply = await ws.request({**order, "instrument": instrument, "user": user})
            assert reply["httpCode"] == 200
            stop = {
                "opcode": "create:stop",
                "guid": "s1",
                "side": "sell",
                "quantity": 1,
                "triggerPrice": 1.0,
                "condition": "Less",
                "instrument": instrument,
                "user": user,
            }
            assert (await ws.request(stop))["httpCode"] == 200
        finally:
            await ws.close()
        o = await _first(orders)
        assert isinstance(o, Order) and o.id == reply["orderNumber"]
        t = await _first(trades)
        assert isinstance(t, OwnTrade) and t.order_no == reply["orderNumber"]
        s = await _first(stops)
        assert isinstance(s, StopOrder) and s.stop_price == 1.0
