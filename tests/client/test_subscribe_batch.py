"""``AlorClient.subscribe_all``: one batch placed on the lanes at once, against the simulator.

Each stream gets its own result or error, as if subscribed alone; the placement rules (sharing,
the per-connection limit, the budget, a server limit lower than ours) are those of a single
subscribe. The simulator counts the requests it handled, which shows what was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from alorws.client import AlorClient
from alorws.errors import (
    ConnectionLimitError,
    ServerRejected,
    StreamClosed,
    TransportTimeout,
)
from alorws.protocol import Quote
from alorws.protocol.registry import SubscriptionState
from alorws.sim.app import Simulator

from ._budget import quiet_simulator, quote_streams, small_budget_client, subscribe_all
from .conftest import FAST


@pytest.fixture
async def quiet_sim() -> AsyncIterator[Simulator]:
    async with quiet_simulator() as s:
        yield s


async def _settled(client: AlorClient, streams: list[Any]) -> None:
    """Close one stream per lane, waiting for the server's answer to its unsubscribe: whatever
    was sent before on those connections has then been handled by the server."""
    one_per_lane = {s._lane: s for s in streams if s.is_open}
    for stream in one_per_lane.values():
        await stream.aclose()


async def test_good_and_bad_symbols_in_one_batch_settle_one_by_one(quiet_sim: Simulator) -> None:
    """A batch with two unknown tickers: every good stream opens and gets data, each bad one
    closes with its own rejection, and the first failure (in batch order) is raised."""
    async with AlorClient(quiet_sim.demo_refresh_token, base_url=quiet_sim.url, backoff=FAST) as c:
        good = quote_streams(c, quiet_sim, 6)
        bad = [c.quotes("NOSUCHTICKER"), c.order_book("NOSUCHEITHER")]
        batch = [good[0], bad[0], *good[1:4], bad[1], *good[4:]]
        with pytest.raises(ServerRejected) as info:
            await subscribe_all(c, batch)
        assert info.value.request_guid is not None
        assert all(s.is_open for s in good)
        assert not any(s.is_open for s in bad)
        assert len({s.guid for s in good}) == 6 and bad[0].guid is None
        for stream in bad:  # each ends with its own refusal, not another stream's
            with pytest.raises(ServerRejected) as own:
                await asyncio.wait_for(stream.get(), 5)
            assert own.value.http_code == info.value.http_code
        assert c.stats()["subscriptions"] == 6
        assert quiet_sim.stats()["subscriptions"] == 6
        async with asyncio.timeout(10):
            assert isinstance(await anext(aiter(good[-1])), Quote)


async def test_a_batch_uses_no_task_per_subscription(quiet_sim: Simulator) -> None:
    """While a batch of 2,000 waits for its confirmations, the I/O loop runs a handful of tasks
    (lanes, their timers and flushers), not one per subscription."""
    async with AlorClient(
        quiet_sim.demo_refresh_token, base_url=quiet_sim.url, backoff=FAST, io_thread=False
    ) as c:
        streams = quote_streams(c, quiet_sim, 2000)
        most = 0

        def count() -> None:
            nonlocal most
            most = max(most, len(asyncio.all_tasks()))

        batch = asyncio.create_task(subscribe_all(c, streams))
        while not batch.done():
            count()
            await asyncio.sleep(0)
        await batch
        assert all(s.is_open for s in streams)
        assert 0 < most < 50, most


async def test_a_batch_crossing_the_connection_limit_opens_new_connections(
    quiet_sim: Simulator,
) -> None:
    """With 3 subscriptions per connection and 2 already on the first, a batch of 8 fills the
    first connection, then a second and a third, in batch order."""
    async with AlorClient(
        quiet_sim.demo_refresh_token,
        base_url=quiet_sim.url,
        backoff=FAST,
        reserve_connections=0,
        max_subscriptions_per_connection=3,
    ) as c:
        streams = quote_streams(c, quiet_sim, 10)
        for stream in streams[:2]:
            await stream
        await subscribe_all(c, streams[2:])
        lanes = [s._lane for s in streams]
        first, second, third = lanes[0], lanes[3], lanes[6]
        assert lanes == [first] * 3 + [second] * 3 + [third] * 3 + [lanes[9]]
        assert len({first, second, third, lanes[9]}) == 4
        assert sorted(lane["subscriptions"] for lane in c.stats()["lanes"]) == [1, 3, 3, 3]
        assert quiet_sim.stats()["subscriptions"] == 10
        assert quiet_sim.stats()["connections"] == 4


async def test_a_batch_beyond_the_budget_sends_nothing_for_what_does_not_fit(
    quiet_sim: Simulator,
) -> None:
    """Two connections of 3: a batch of 8 subscribes the first 6; the last 2 fail with
    ConnectionLimitError (raised after the rest settled) and are never sent; a later batch
    that fits nowhere sends nothing at all."""
    async with AlorClient(
        quiet_sim.demo_refresh_token,
        base_url=quiet_sim.url,
        backoff=FAST,
        max_connections=2,
        reserve_connections=0,
        max_subscriptions_per_connection=3,
        ping_interval=3600,  # no pings: every request the simulator counts is ours
    ) as c:
        requests_before = quiet_sim.stats()["requests"]
        streams = quote_streams(c, quiet_sim, 11)
        with pytest.raises(ConnectionLimitError, match="Nothing was sent"):
            await subscribe_all(c, streams[:8])
        assert [s.is_open for s in streams[:8]] == [True] * 6 + [False] * 2
        for stream in streams[6:8]:
            with pytest.raises(ConnectionLimitError):
                await asyncio.wait_for(stream.get(), 5)
        assert c.stats()["subscriptions"] == 6 and c.stats()["connections"] == 2
        with pytest.raises(ConnectionLimitError, match="Nothing was sent"):
            await subscribe_all(c, streams[8:])
        assert not any(s.is_open for s in streams[8:])
        await _settled(c, streams[:6])  # 2 unsubscribes, each answered
        assert quiet_sim.stats()["requests"] == requests_before + 6 + 2
        assert quiet_sim.stats()["connections"] == 2


async def test_a_batch_shares_live_and_duplicate_subscriptions(quiet_sim: Simulator) -> None:
    """A batch holding a request already subscribed, and one request twice, sends each distinct
    new request once; the sharing streams get the same guid and the data, and the server's
    subscription lasts until its last stream closes."""
    async with AlorClient(
        quiet_sim.demo_refresh_token, base_url=quiet_sim.url, backoff=FAST, ping_interval=3600
    ) as c:
        live = await c.quotes("SBER")
        requests_before = quiet_sim.stats()["requests"]
        again, gazp, gazp_too, book = (
            c.quotes("SBER"),
            c.quotes("GAZP"),
            c.quotes("GAZP"),
            c.order_book("SBER"),
        )
        await subscribe_all(c, [again, gazp, book, gazp_too])
        assert again.guid == live.guid and gazp.guid == gazp_too.guid
        assert len({live.guid, gazp.guid, book.guid}) == 3
        assert c.stats()["subscriptions"] == 3
        async with asyncio.timeout(10):  # both holders get the first quote of GAZP
            for stream in (gazp, gazp_too):
                assert isinstance(await anext(aiter(stream)), Quote)
        await gazp.aclose()  # one holder left: nothing is sent
        await book.aclose()  # the last holder: answered by the server
        assert quiet_sim.stats()["requests"] == requests_before + 2 + 1
        assert quiet_sim.stats()["subscriptions"] == 2
        assert gazp_too.is_open


async def _pending(client: AlorClient, request: Any) -> None:
    """Let a subscribe task just created take its first step (one loop iteration: with the
    network in this loop, it places the subscription before its first wait), and check that
    ``request`` now waits for the server's answer."""
    await asyncio.sleep(0)
    sub = client._registry.find(request)
    assert sub is not None and sub.state is SubscriptionState.PENDING


async def test_a_batch_and_a_single_subscribe_share_a_pending_subscription(
    quiet_sim: Simulator,
) -> None:
    """A single subscribe joining a request of a batch still waiting for its answer, and a
    batch joining a single subscribe still waiting for its own, wait for that answer: one
    server subscription each, every stream open."""
    async with AlorClient(
        quiet_sim.demo_refresh_token, base_url=quiet_sim.url, backoff=FAST, io_thread=False
    ) as c:
        quiet_sim.faults.delay(0.3)  # both are pending while the other joins
        batch = [c.quotes("SBER"), c.quotes("GAZP")]
        waiting = asyncio.create_task(subscribe_all(c, batch))
        await _pending(c, batch[0].request)
        joiner = await asyncio.wait_for(c.quotes("SBER"), 10)
        await waiting
        assert joiner.guid == batch[0].guid and joiner.is_open

        first = c.quotes("LKOH")
        single = asyncio.create_task(first.subscribe())
        await _pending(c, first.request)
        later = [c.quotes("LKOH"), c.quotes("YDEX")]
        await subscribe_all(c, later)
        await single
        assert later[0].guid == first.guid and all(s.is_open for s in [first, *later])
        assert c.stats()["subscriptions"] == 4
        quiet_sim.faults.delay(0)


async def test_a_server_limit_below_ours_moves_batch_members_to_another_connection() -> None:
    """The server takes 3 subscriptions per connection, the client thinks 5000: a batch of 5
    lands on one connection, the server refuses 2 with 429, and they are placed again on a
    second connection; a later batch fills that one and finds the budget used for the rest."""
    async with (
        quiet_simulator(max_subscriptions=3) as sim,
        small_budget_client(sim) as c,
    ):
        streams = quote_streams(c, sim, 7)
        await subscribe_all(c, streams[:5])
        lanes = [s._lane for s in streams[:5]]
        assert lanes == [lanes[0]] * 3 + [lanes[3]] * 2 and lanes[0] != lanes[3]
        assert all(s.is_open for s in streams[:5])
        async with asyncio.timeout(10):  # a stream placed again keeps its buffer and gets data
            assert isinstance(await anext(aiter(streams[4])), Quote)
        with pytest.raises(ConnectionLimitError, match="Nothing was sent"):
            await subscribe_all(c, streams[5:])
        assert streams[5].is_open and streams[5]._lane == lanes[3]
        assert not streams[6].is_open
        assert sim.stats()["subscriptions"] == 6 and sim.stats()["connections"] == 2
        assert c.stats()["subscriptions"] == 6


async def test_a_batch_without_answers_times_out_once_and_leaves_nothing(
    quiet_sim: Simulator,
) -> None:
    """The server answers nothing within subscribe_timeout: every stream of the batch fails
    with TransportTimeout, and their subscriptions are released."""
    async with AlorClient(
        quiet_sim.demo_refresh_token,
        base_url=quiet_sim.url,
        backoff=FAST,
        subscribe_timeout=0.3,
    ) as c:
        await c.quotes("SBER")  # the connection is open
        quiet_sim.faults.delay(1.0)
        streams = quote_streams(c, quiet_sim, 4)[1:]
        with pytest.raises(TransportTimeout, match="no confirmation within 0.3 s"):
            await subscribe_all(c, streams)
        assert not any(s.is_open for s in streams)
        for stream in streams:
            with pytest.raises((TransportTimeout, StreamClosed)):
                await asyncio.wait_for(stream.get(), 5)
        assert c.stats()["subscriptions"] == 1
        quiet_sim.faults.delay(0)


async def test_a_batch_member_sharing_a_single_subscribe_refused_with_429_is_placed_again() -> None:
    """A batch joins a single subscribe still waiting for its answer; the server refuses it with
    429: the batch member is placed again with it (sharing the single one's new subscription),
    as the members of the batch's own refused subscriptions are."""
    async with (
        quiet_simulator(max_subscriptions=3) as sim,
        small_budget_client(sim, io_thread=False) as c,
    ):
        streams = quote_streams(c, sim, 5)
        await subscribe_all(c, streams[:3])  # the server's limit on the first connection
        sim.faults.delay(0.3)  # the single subscribe waits for its answer while the batch joins
        single = quote_streams(c, sim, 4)[3]  # the request of streams[3]
        placing = asyncio.create_task(single.subscribe())
        await _pending(c, single.request)
        later = [streams[3], streams[4]]
        await subscribe_all(c, later)
        await asyncio.wait_for(placing, 10)
        sim.faults.delay(0)
        assert all(s.is_open for s in [single, *later])
        assert later[0].guid == single.guid and later[0]._lane == single._lane
        assert single._lane != streams[0]._lane
        assert c.stats()["subscriptions"] == 5 and sim.stats()["subscriptions"] == 5
