"""Client-side limits and sharding against the simulator: thousands of subscriptions, and the
account's connection budget, ``/cws`` included."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import pytest

from alorws.client import AlorClient, LaneKind
from alorws.errors import ConnectionLimitError, ServerRejected, SubscriptionLimitError
from alorws.protocol import Quote
from alorws.protocol.registry import SubscriptionState
from alorws.sim.app import Simulator

from ._budget import quiet_simulator, quote_streams, small_budget_client, subscribe_all
from .conftest import FAST


_subscribe_all = functools.partial(subscribe_all, within=120)


@pytest.fixture
async def quiet_sim() -> AsyncIterator[Simulator]:
    """A simulator with a near-still market, so thousands of subscriptions stay cheap."""
    async with quiet_simulator() as s:
        yield s


@pytest.mark.timeout(180)
async def test_12000_subscriptions_shard_over_3_connections(quiet_sim: Simulator) -> None:
    """12,000 market subscriptions spread automatically over 3 connections of 5000."""
    async with AlorClient(quiet_sim.demo_refresh_token, base_url=quiet_sim.url, backoff=FAST) as c:
        streams = quote_streams(c, quiet_sim, 12_000)
        await _subscribe_all(c, streams)
        lanes = c.stats()["lanes"]
        assert [lane["kind"] for lane in lanes] == [LaneKind.MARKET] * 3
        assert sorted(lane["subscriptions"] for lane in lanes) == [2000, 5000, 5000]
        assert c.stats()["subscriptions"] == 12_000
        assert len({s.guid for s in streams}) == 12_000


@pytest.mark.timeout(300)
async def test_the_50001st_subscription_raises_without_sending(quiet_sim: Simulator) -> None:
    """In a 10 x 5000 budget, the 50,001st subscription raises before anything is sent."""
    async with AlorClient(
        quiet_sim.demo_refresh_token,
        base_url=quiet_sim.url,
        backoff=FAST,
        reserve_connections=0,
        subscribe_timeout=240,
        ping_interval=3600,  # no pings: every request the simulator counts is a subscription
    ) as c:
        streams = quote_streams(c, quiet_sim, 50_001)
        await _subscribe_all(c, streams[:50_000])
        assert c.stats()["connections"] == 10
        frames_before = [lane["messages"] for lane in c.stats()["lanes"]]
        requests_before = quiet_sim.stats()["requests"]
        with pytest.raises(SubscriptionLimitError, match="Nothing was sent"):
            await streams[-1]
        assert c.stats()["subscriptions"] == 50_000
        with pytest.raises(SubscriptionLimitError):
            await c.positions(c.portfolios[0])  # no connection left for account streams either
        assert len(frames_before) == 10
        # Nothing was sent: close one stream per connection, each waiting for the server's
        # answer to its unsubscribe, so that anything sent before on that connection has been
        # handled. The server then counts exactly those 10 requests more.
        one_per_lane = {s._lane: s for s in streams[:50_000]}
        assert len(one_per_lane) == 10
        for stream in one_per_lane.values():
            await stream.aclose()
        assert c.stats()["connections"] == 10
        assert quiet_sim.stats()["requests"] == requests_before + 10


async def test_subscribe_all_settles_every_stream_and_raises_the_first_failure(
    quiet_sim: Simulator,
) -> None:
    """One bad ticker in a batch: the good streams open, the bad one closes, its error raises."""
    async with AlorClient(quiet_sim.demo_refresh_token, base_url=quiet_sim.url, backoff=FAST) as c:
        good = [c.quotes("SBER"), c.order_book("GAZP"), c.quotes("LKOH")]
        bad = c.quotes("NOSUCHTICKER")
        with pytest.raises(ServerRejected):
            await c.subscribe_all([*good, bad])
        assert all(s.is_open for s in good) and not bad.is_open
        assert c.stats()["subscriptions"] == 3
        assert isinstance(await anext(aiter(good[0])), Quote)


async def test_cws_holds_one_connection_of_the_budget(quiet_sim: Simulator) -> None:
    """Once trading is used, /ws lanes get max_connections - 1: the lane that would be one too
    many raises ConnectionLimitError, before anything is sent."""
    async with AlorClient(
        quiet_sim.demo_refresh_token,
        base_url=quiet_sim.url,
        backoff=FAST,
        max_connections=2,
        reserve_connections=0,
        max_subscriptions_per_connection=1,
    ) as c:
        portfolio = c.portfolios[0]
        await c.trading.place_market(portfolio, "SBER", "buy", 1)  # /cws is connected
        await c.quotes("SBER")
        with pytest.raises(ConnectionLimitError, match="Nothing was sent"):
            await c.quotes("GAZP")
        assert c.stats()["connections"] == 1
        assert quiet_sim.stats()["connections"] == 2  # one /ws, one /cws: the budget


async def test_trading_is_refused_when_ws_lanes_take_the_budget(quiet_sim: Simulator) -> None:
    """With every connection taken by /ws lanes (no reserve), the first use of trading raises
    ConnectionLimitError instead of opening one connection too many."""
    async with AlorClient(
        quiet_sim.demo_refresh_token,
        base_url=quiet_sim.url,
        backoff=FAST,
        max_connections=2,
        reserve_connections=0,
        max_subscriptions_per_connection=1,
    ) as c:
        await c.quotes("SBER")
        await c.quotes("GAZP")
        with pytest.raises(ConnectionLimitError, match="/cws"):
            c.trading  # noqa: B018  # the property is what reserves the connection
        assert quiet_sim.stats()["connections"] == 2


async def test_the_reserve_is_used_by_the_account_lane_and_cws(quiet_sim: Simulator) -> None:
    """reserve_connections keeps connections for the account lane and /cws, and they use it:
    with both open, market data still gets max_connections - reserve_connections."""
    async with AlorClient(
        quiet_sim.demo_refresh_token,
        base_url=quiet_sim.url,
        backoff=FAST,
        max_connections=4,
        reserve_connections=2,
        max_subscriptions_per_connection=1,
    ) as c:
        portfolio = c.portfolios[0]
        await c.positions(portfolio)
        await c.trading.place_market(portfolio, "SBER", "buy", 1)
        await c.quotes("SBER")
        await c.quotes("GAZP")
        with pytest.raises(ConnectionLimitError, match="Nothing was sent"):
            await c.quotes("LKOH")
        kinds = sorted(lane["kind"] for lane in c.stats()["lanes"])
        assert kinds == [LaneKind.ACCOUNT, LaneKind.MARKET, LaneKind.MARKET]
        assert quiet_sim.stats()["connections"] == 4


async def test_a_server_limit_below_ours_moves_subscriptions_to_another_connection() -> None:
    """The server takes 3 subscriptions per connection, the client thinks 5000: the 4th and 5th
    quotes are refused with 429 on the first connection, then placed on a second one instead
    of failing; the first lane takes nothing more; the budget still ends it."""
    async with (
        quiet_simulator(max_subscriptions=3) as sim,
        small_budget_client(sim) as c,
    ):
        symbols = sorted(sim.market.instruments)
        streams = [await c.quotes(sym) for sym in symbols[:6]]
        lanes = [s.stats()["lane"] for s in streams]
        assert lanes[:3] == [lanes[0]] * 3 and lanes[3:] == [lanes[3]] * 3
        assert lanes[0] != lanes[3]
        assert sim.stats()["subscriptions"] == 6 and sim.stats()["connections"] == 2
        with pytest.raises(ConnectionLimitError, match="Nothing was sent"):
            await c.quotes(symbols[6])  # both market lanes are full; the reserve stays free
        assert sim.stats()["connections"] == 2
        await streams[0].aclose()  # a slot freed on the first lane is used again
        again = await c.quotes(symbols[7])
        assert again.stats()["lane"] == lanes[0]


async def test_every_holder_of_a_subscription_refused_for_the_server_limit_is_placed_again() -> (
    None
):
    """A second stream joins a subscribe still waiting for its answer; the server refuses it
    with 429: both streams end on the subscription placed again on another connection, not
    just the one that placed it, and both get data."""
    async with (
        quiet_simulator(max_subscriptions=3) as sim,
        small_budget_client(sim, io_thread=False) as c,
    ):
        symbols = sorted(sim.market.instruments)
        full = [await c.quotes(sym) for sym in symbols[:3]]  # the server's limit on lane 1
        sim.faults.delay(0.3)  # the 4th subscribe waits for its answer while the 2nd joins
        first = c.quotes(symbols[3])
        placing = asyncio.create_task(first.subscribe())
        await asyncio.sleep(0)  # one loop iteration: the subscribe is placed and sent
        sub = c._registry.find(first.request)
        assert sub is not None and sub.state is SubscriptionState.PENDING
        second = await asyncio.wait_for(c.quotes(symbols[3]), 10)
        await asyncio.wait_for(placing, 10)
        sim.faults.delay(0)
        assert first.guid == second.guid and first.is_open and second.is_open
        assert first._lane == second._lane != full[0]._lane
        assert c.stats()["subscriptions"] == 4 and sim.stats()["subscriptions"] == 4
        async with asyncio.timeout(10):
            for stream in (first, second):
                assert isinstance(await anext(aiter(stream)), Quote)
