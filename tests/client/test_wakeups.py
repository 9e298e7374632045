"""Wake-ups of parked consumers: coalescing (``coalesce_us``) and the cross-thread waker."""

from __future__ import annotations

import asyncio
import functools
import math
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from alorws.client import AlorClient
from alorws.client.buffer import MAX_COALESCE_US, Policy, StreamBuffer, WakeBatcher
from alorws.errors import ConfigurationError
from alorws.sim.app import Simulator

from .conftest import FAST


def run_thread(target: Callable[[], object]) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


class ProducerLoop:
    """An event loop in a thread of its own with a batcher bound to it: the client's I/O
    thread in small."""

    def __init__(self, coalesce_us: float) -> None:
        self.loop = asyncio.new_event_loop()
        self.batcher = WakeBatcher(self.loop, coalesce_us=coalesce_us)
        self.thread = run_thread(self.loop.run_forever)

    def call(self, fn: Callable[[], object]) -> None:
        self.loop.call_soon_threadsafe(fn)

    async def run(self, coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro(), self.loop))

    async def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self.thread.join, 10)
        self.loop.close()


async def parked(buf: StreamBuffer[Any]) -> asyncio.Task[Any]:
    """A consumer task waiting in ``get()``; returned once it has parked (no timing)."""
    parks = buf.stats()["parks"]
    task = asyncio.create_task(buf.get())
    await asyncio.sleep(0)
    assert buf.stats()["parks"] == parks + 1
    return task


# -- coalescing ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [Policy.QUEUE, Policy.LATEST])
async def test_coalescing_wakes_a_lone_item_within_its_bound(policy: Policy) -> None:
    """One item for a parked consumer arrives, first after a quiet spell (woken at once) and
    then right after the previous wake-up (the producer's loop waits out the interval, then
    wakes). The bound is 5 ms; each wait here allows 2 s."""
    producer = ProducerLoop(coalesce_us=5000)
    buf: StreamBuffer[int] = StreamBuffer(policy, batcher=producer.batcher)
    try:
        for i in range(3):
            consumer = await parked(buf)
            producer.call(functools.partial(buf.push, i))
            async with asyncio.timeout(2):
                assert await consumer == i
        assert buf.stats()["wakeups"] == 3
    finally:
        await producer.stop()


async def _feed_a_waiting_consumer(coalesce_us: float, policy: Policy, n: int) -> dict[str, int]:
    """A producer loop that pushes one item per iteration, whenever the consumer waits (so
    without coalescing every item wakes it); returns the buffer's stats."""
    producer = ProducerLoop(coalesce_us)
    buf: StreamBuffer[int] = StreamBuffer(policy, maxsize=n, batcher=producer.batcher)

    async def produce() -> None:
        for i in range(n):
            while True:  # turn the loop until the consumer waits (parked, not yet woken)
                s = buf.stats()
                if s["parks"] > s["wakeups"]:
                    break
                await asyncio.sleep(0)
            buf.push(i)
            await asyncio.sleep(0)

    got: list[int] = []
    try:
        async with asyncio.timeout(20):
            feeding = asyncio.ensure_future(producer.run(produce))
            while not got or got[-1] != n - 1:
                got += await buf.get_batch(n)
            await feeding
    finally:
        await producer.stop()
    if policy is Policy.QUEUE:
        assert got == list(range(n))
    else:
        assert got == sorted(set(got))
    return buf.stats()


@pytest.mark.parametrize("policy", [Policy.QUEUE, Policy.LATEST])
async def test_coalescing_batches_the_wakeups_of_a_steady_stream(policy: Policy) -> None:
    """Items arriving one per producer iteration to a consumer that keeps up: coalesced, the
    consumer is woken for several at a time (the producer's loop turns twice after its sleep:
    three items a round), and gets every one (conflating: always the newest, and the last)."""
    n = 150
    s = await _feed_a_waiting_consumer(2000, policy, n)
    assert s["pushed"] == n
    assert s["wakeups"] < n / 2, s


async def test_default_batcher_wakes_for_every_item_of_a_steady_stream() -> None:
    """coalesce_us defaults to 0: the wake-up follows the producer's iteration, never put
    off, so the same stream wakes the consumer once per item."""
    assert WakeBatcher().coalesce == 0
    n = 150
    s = await _feed_a_waiting_consumer(0, Policy.QUEUE, n)
    assert s["wakeups"] == s["pushed"] == n, s


@pytest.mark.parametrize(
    "value", [-1, -0.5, math.nan, math.inf, MAX_COALESCE_US + 1, True, "100", None]
)
def test_bad_coalesce_us_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"coalesce_us must be a number of microsec"):
        WakeBatcher(coalesce_us=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"from 0 .* to 10,000, got"):
        AlorClient("token", base_url="http://127.0.0.1:1", coalesce_us=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("io_thread", [True, False])
async def test_client_with_coalescing_delivers_quotes(sim: Simulator, io_thread: bool) -> None:
    """AlorClient(coalesce_us=...) end to end over the simulator (accepted, and without
    effect, when there is no I/O thread)."""
    async with (
        AlorClient(
            sim.demo_refresh_token,
            base_url=sim.url,
            backoff=FAST,
            io_thread=io_thread,
            coalesce_us=MAX_COALESCE_US,
        ) as client,
        client.quotes("SBER", policy="queue") as quotes,
    ):
        assert client._batcher.coalesce == (MAX_COALESCE_US / 1e6 if io_thread else 0)
        got = 0
        async with asyncio.timeout(20):
            while got < 5:
                got += len(await quotes.get_batch())
        s = quotes.stats()
        assert s["wakeups"] <= s["parks"]


# -- the cross-thread waker ------------------------------------------------------------------


async def test_many_producer_threads_waking_one_loop_lose_no_wakeup() -> None:
    """Consumers of one loop, each parked on its own buffer, woken from their own threads all
    at once: they share the loop's waker, and a lost wake-up would hang one of them."""
    k, n = 4, 3000
    bufs: list[StreamBuffer[int]] = [StreamBuffer(Policy.QUEUE, maxsize=n) for _ in range(k)]

    async def consume(buf: StreamBuffer[int]) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            out += await buf.get_batch(n)
        return out

    def produce(buf: StreamBuffer[int]) -> Callable[[], None]:
        def run() -> None:
            for i in range(n):
                buf.push(i)

        return run

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to widen every race
    try:
        async with asyncio.timeout(30):
            consumers = [asyncio.create_task(consume(b)) for b in bufs]
            await asyncio.sleep(0)  # all parked
            threads = [run_thread(produce(b)) for b in bufs]
            results = await asyncio.gather(*consumers)
            for t in threads:
                await asyncio.to_thread(t.join, 10)
    finally:
        sys.setswitchinterval(old)
    assert all(r == list(range(n)) for r in results)
    assert all(b.stats()["wakeups"] >= 1 for b in bufs)


def test_push_never_raises_when_a_woken_loop_is_gone() -> None:
    """A loop that was woken from another thread before (so it has a waker), then closed with
    its consumer parked: a push still neither raises nor blocks."""
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE)
    loop = asyncio.new_event_loop()

    async def first() -> int:
        task = asyncio.ensure_future(buf.get())
        await asyncio.sleep(0)  # parked
        run_thread(lambda: buf.push(0))
        return await task

    assert loop.run_until_complete(asyncio.wait_for(first(), 10)) == 0
    task = loop.create_task(buf.get())
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # abandoned on purpose
    loop.run_until_complete(asyncio.sleep(0))  # parked again
    loop.close()
    for i in range(1, 4):
        run_thread(functools.partial(buf.push, i)).join()
    assert buf.stats()["wakeups"] == 2 and buf.depth == 3
