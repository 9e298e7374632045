"""Streams end with their client, keep a bounded event log, leave the stream set in O(1); a
failed batch fails its streams; a producer waits for a buffer to drain; Portfolio retries a
snapshot with its Backoff."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import pytest

from alorws.client import AlorClient, LaneEvent, Policy, Stream, StreamBuffer
from alorws.client.portfolio import Feed, Portfolio
from alorws.client.streams import EVENTS_KEPT
from alorws.errors import ConnectError, InvalidState, StreamClosed
from alorws.protocol import NO_DELAY, Quote, QuotesRequest
from alorws.sim.app import Simulator

from ._collect import until
from .conftest import FAST


def _detached_stream() -> Stream[Quote]:
    return Stream(
        None,  # type: ignore[arg-type]  # never subscribed here
        QuotesRequest(code="SBER"),
        Quote,
        policy=Policy.LATEST,
        account=False,
        max_buffer=10,
    )


async def test_streams_are_not_open_once_their_client_closed(sim: Simulator) -> None:
    """Closing the client ends every stream: is_open turns False, iteration ends."""
    client = AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST)
    async with client:
        quotes = await client.quotes("SBER")
        book = await client.order_book("GAZP")
        assert quotes.is_open and book.is_open
    assert not quotes.is_open and not book.is_open
    async with asyncio.timeout(5):
        assert [q async for q in quotes if False] == []  # ends at once, nothing hangs


async def test_a_batch_that_cannot_reach_the_io_thread_fails_its_streams(sim: Simulator) -> None:
    """subscribe_all after the client closed: every stream ends with the error, none is left
    subscribing (whose get() would wait forever)."""
    async with AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as client:
        streams = [client.quotes("SBER"), client.quotes("GAZP")]
    with pytest.raises(InvalidState):
        await client.subscribe_all(streams)
    assert client._streams == set()
    for stream in streams:
        assert not stream.is_open
        async with asyncio.timeout(5):
            with pytest.raises(InvalidState, match="stopped"):
                await stream.get()


async def test_a_batch_with_a_stream_subscribed_already_changes_nothing(sim: Simulator) -> None:
    """A stream that is not new refuses the batch before anything is sent; the others stay new."""
    async with AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as client:
        fresh, used = client.quotes("SBER"), await client.quotes("GAZP")
        with pytest.raises(InvalidState, match="cannot subscribe"):
            await client.subscribe_all([fresh, used])
        assert client.stats()["subscriptions"] == 1
        await client.subscribe_all([fresh])  # still new: it can go now
        assert fresh.is_open


class _CountingSet(set[Any]):
    """A set that counts how often it is iterated."""

    iterations = 0

    def __iter__(self) -> Any:
        type(self).iterations += 1
        return super().__iter__()


async def test_closing_a_stream_does_not_walk_the_other_streams(sim: Simulator) -> None:
    """aclose() removes its stream from the client's set directly (O(1), not a rebuild)."""
    async with AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as client:
        streams = [await client.quotes(code) for code in ("SBER", "GAZP", "LKOH")]
        counting = _CountingSet(client._streams)
        client._streams = counting
        _CountingSet.iterations = 0
        await streams[0].aclose()
        assert _CountingSet.iterations == 0
        assert client._streams is counting and counting == set(streams[1:])


def test_a_stream_keeps_the_last_events_and_counts_them_all() -> None:
    """A stream on a flaky network keeps the last EVENTS_KEPT events, and counts every one."""
    stream = _detached_stream()
    seen: list[LaneEvent] = []
    stream.on_event(seen.append)
    for i in range(EVENTS_KEPT * 3):
        stream._notify(LaneEvent("disconnected" if i % 2 == 0 else "restored", 1, str(i)))
    assert len(stream.events) == EVENTS_KEPT
    kept = range(EVENTS_KEPT * 2, EVENTS_KEPT * 3)
    assert [e.reason for e in stream.events] == [str(i) for i in kept]
    half = EVENTS_KEPT * 3 // 2
    assert stream.event_counts == {"disconnected": half, "restored": half}
    assert stream.stats()["events"] == EVENTS_KEPT * 3
    assert len(seen) == EVENTS_KEPT * 3  # every event reaches the callbacks


async def test_drained_waits_until_the_consumer_took_enough() -> None:
    """drained(n) returns once fewer than n entries wait; the consumer's takes wake it."""
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=100)
    for i in range(10):
        buf.push(i)
    await buf.drained(11)  # already below: returns at once
    waiter = asyncio.create_task(buf.drained(5))
    await asyncio.sleep(0)
    assert not waiter.done()
    assert [buf.get_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]
    await asyncio.sleep(0)
    assert not waiter.done()  # 5 left: not fewer than 5
    assert await buf.get() == 5
    async with asyncio.timeout(5):
        await waiter
    assert await buf.get_batch(10) == [6, 7, 8, 9]


async def test_drained_ends_on_close_and_across_threads() -> None:
    """A producer waiting in drained() wakes when the buffer closes, or when a consumer in
    another thread takes entries; a second waiter is refused."""
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=100)
    buf.push_many([1, 2, 3])
    waiter = asyncio.create_task(buf.drained(1))
    await asyncio.sleep(0)
    with pytest.raises(InvalidState, match="drain"):
        await buf.drained(1)
    taker = threading.Thread(target=lambda: [buf.get_nowait() for _ in range(3)])
    taker.start()
    async with asyncio.timeout(5):
        await waiter
    await asyncio.to_thread(taker.join)
    buf.push(4)
    waiter = asyncio.create_task(buf.drained(1))
    await asyncio.sleep(0)
    buf.close()
    async with asyncio.timeout(5):
        await waiter
    assert buf.get_nowait() == 4
    with pytest.raises(StreamClosed):
        buf.get_nowait()


async def test_portfolio_retries_a_snapshot_with_its_backoff_then_stays_stale() -> None:
    """A failing snapshot is retried as its Backoff says (here: twice, at once), then the feed
    stays stale instead of retrying forever."""
    retry = dataclasses.replace(NO_DELAY, max_attempts=2)
    pf = Portfolio(None, "D12345", retry=retry)  # type: ignore[arg-type]  # no client needed
    pf.ready.set()  # past the first snapshot: failures are retried, not raised
    calls = 0

    async def failing(feed: Feed) -> None:
        nonlocal calls
        calls += 1
        raise ConnectError("HTTP is down")

    pf._sync = failing  # type: ignore[method-assign]
    pf._request_sync(Feed.ORDERS)
    async with asyncio.timeout(5):
        await pf._runners[Feed.ORDERS]
    assert calls == 3  # the first attempt and max_attempts retries
    assert pf.stale and pf.stats()["syncing"] == ["orders"]


def _holders(client: AlorClient, request: QuotesRequest) -> int:
    """How many subscribe calls hold the client's subscription of ``request`` (0: none)."""
    sub = client._registry.find(request)  # the registry's count: no public view of it
    return 0 if sub is None else sub.refcount


async def test_a_cancelled_subscribe_leaves_a_shared_one_alone_and_holds_nothing(
    client: AlorClient, sim: Simulator
) -> None:
    """Two streams of one request wait for the same confirmation; the first caller gives up
    (its task is cancelled): the second is still confirmed and gets data, and once it closes
    too nothing is left subscribed, in the client or on the server."""
    sim.faults.delay(0.5)  # the server answers late: both subscribes are still waiting
    first, second = client.quotes("SBER"), client.quotes("SBER")
    request = first.request
    assert isinstance(request, QuotesRequest)
    placing = asyncio.create_task(first.subscribe())
    await until(lambda: _holders(client, request) == 1, "the first subscribe placed")
    joining = asyncio.create_task(second.subscribe())
    await until(lambda: _holders(client, request) == 2, "the second subscribe joined it")
    placing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await placing
    await until(lambda: _holders(client, request) == 1, "the first hold released")
    sim.faults.delay(0)
    async with asyncio.timeout(10):
        await joining  # confirmed, not cancelled with the first
        assert (await second.get()).symbol == "SBER"
    await second.aclose()
    await first.aclose()
    await until(lambda: client.stats()["subscriptions"] == 0, "nothing left in the client")
    await until(lambda: sim.stats()["subscriptions"] == 0, "nothing left on the server")


async def test_a_lone_subscribe_cancelled_before_its_answer_is_unsubscribed(
    client: AlorClient, sim: Simulator
) -> None:
    """A subscribe whose caller gives up before the answer releases its hold at once, and the
    server's subscription (answered later) is cancelled: nothing stays counted or streaming."""
    sim.faults.delay(0.5)
    stream = client.quotes("GAZP")
    request = stream.request
    assert isinstance(request, QuotesRequest)
    task = asyncio.create_task(stream.subscribe())
    await until(lambda: _holders(client, request) == 1, "the subscribe placed")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: _holders(client, request) == 0, "its hold released")
    sim.faults.delay(0)
    await until(lambda: client.stats()["subscriptions"] == 0, "nothing left in the client")
    await until(lambda: sim.stats()["subscriptions"] == 0, "nothing left on the server")
    await stream.aclose()
