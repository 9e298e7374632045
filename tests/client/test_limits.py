"""Client-side limits and sharding against the simulator: thousands of subscriptions."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from alorws.client import AlorClient, LaneKind
from alorws.errors import ServerRejected, SubscriptionLimitError
from alorws.protocol import Quote
from alorws.sim.app import Simulator

from .._sim import DAY
from .conftest import FAST


@pytest.fixture
async def quiet_sim() -> AsyncIterator[Simulator]:
    """A simulator with a near-still market, so thousands of subscriptions stay cheap."""
    async with Simulator(port=0, day_order_lifetime=DAY, seed=5, rate=0.2, history_days=1) as s:
        yield s


def _requests(client: AlorClient, sim: Simulator, n: int) -> list[Any]:
    """`n` distinct quote subscriptions (instrument x frequency), as unsubscribed streams."""
    symbols = sorted(sim.market.instruments)
    pairs = itertools.islice(((s, f) for f in itertools.count(60_000) for s in symbols), n)
    return [client.quotes(sym, frequency=freq) for sym, freq in pairs]


async def _subscribe_all(client: AlorClient, streams: list[Any]) -> None:
    async with asyncio.timeout(120):
        await client.subscribe_all(streams)


@pytest.mark.timeout(180)
async def test_12000_subscriptions_shard_over_3_connections(quiet_sim: Simulator) -> None:
    """12,000 market subscriptions spread automatically over 3 connections of 5000."""
    async with AlorClient(quiet_sim.demo_refresh_token, base_url=quiet_sim.url, backoff=FAST) as c:
        streams = _requests(c, quiet_sim, 12_000)
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
    ) as c:
        streams = _requests(c, quiet_sim, 50_001)
        await _subscribe_all(c, streams[:50_000])
        assert c.stats()["connections"] == 10
        frames_before = [lane["messages"] for lane in c.stats()["lanes"]]
        with pytest.raises(SubscriptionLimitError, match="Nothing was sent"):
            await streams[-1]
        assert c.stats()["subscriptions"] == 50_000
        with pytest.raises(SubscriptionLimitError):
            await c.positions(c.portfolios[0])  # no connection left for account streams either
        assert len(frames_before) == 10


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
