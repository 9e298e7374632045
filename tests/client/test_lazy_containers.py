"""An idle subscription costs a few hundred bytes: a stream buffer creates its containers with
its first entry, a stream its event log, callbacks, bad-frame log and backfill state on first
use. The lazily created containers behave as eager ones: events before the pending LATEST item,
overflow, close, drain, a parked consumer woken by the entry that creates the container, and
the LATEST take racing a push."""

from __future__ import annotations

import asyncio
import gc
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from alorws.client import LaneEvent, Policy, Stream, StreamBuffer
from alorws.client.buffer import BufferEmpty
from alorws.errors import BufferOverflowError, StreamClosed
from alorws.protocol import Quote, QuotesRequest


POLICIES = [Policy.LATEST, Policy.QUEUE]


def _bytes_each(make: Callable[[], object], n: int = 2000) -> float:
    """Python bytes allocated per object for ``n`` objects made by ``make`` (and kept)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [make() for _ in range(n)]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(kept) == n
    return (after - before) / n


def _detached_stream() -> Stream[Quote]:
    return Stream(
        None,  # type: ignore[arg-type]  # never subscribed here
        QuotesRequest(code="SBER"),
        Quote,
        policy=Policy.LATEST,
        account=False,
        max_buffer=10,
    )


# -- memory ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_an_idle_buffer_holds_no_container(policy: Policy) -> None:
    """A buffer nothing was pushed to is its object alone (an empty deque alone is 760 B)."""
    per = _bytes_each(lambda: StreamBuffer(policy, maxsize=100, name="quotes SBER"))
    assert per < 400, per


def test_an_idle_stream_is_a_few_hundred_bytes() -> None:
    """A stream (with its buffer and request) before its first message: no deques, no event
    log, no callback list, no bad-frame log, no task set."""
    per = _bytes_each(_detached_stream)
    assert per < 800, per


def test_a_latest_buffer_holding_its_item_stays_small() -> None:
    """The pending LATEST item is held in a one-element list, not a 760-byte deque."""

    def make() -> StreamBuffer[int]:
        buf: StreamBuffer[int] = StreamBuffer(Policy.LATEST)
        buf.push(1)
        return buf

    assert _bytes_each(make) < 400


# -- LATEST: events before the pending item --------------------------------------------------


@pytest.mark.parametrize("first", ["event", "item"])
async def test_latest_events_come_before_the_item_whichever_came_first(first: str) -> None:
    """The first entry creates its container (events or the item): the order is the same."""
    buf: StreamBuffer[Any] = StreamBuffer(Policy.LATEST)
    if first == "event":
        buf.push_event("gap 1")
        buf.push(1)
    else:
        buf.push(1)
        buf.push_event("gap 1")
    buf.push(2)
    buf.push_event("gap 2")
    assert buf.depth == 3
    assert await buf.get_batch() == ["gap 1", "gap 2", 2]
    buf.push_event("gap 3")
    buf.push(3)
    assert [buf.get_nowait(), buf.get_nowait()] == ["gap 3", 3]
    s = buf.stats()
    assert (s["pushed"], s["conflated"], s["events"], s["delivered"]) == (3, 1, 3, 5)


async def test_latest_events_from_another_thread_come_before_later_items(
    frequent_switches: None,
) -> None:
    """A thread pushes items and events in turn into a fresh LATEST buffer while the consumer
    takes batches: no item comes out before an event pushed before it, even when the events'
    container is created, or an event arrives, while the consumer is mid-batch."""
    buf: StreamBuffer[Any] = StreamBuffer(Policy.LATEST)
    n = 20_000

    def produce() -> None:
        for i in range(n):
            buf.push(i)
            buf.push_event(("gap", i))

    t = threading.Thread(target=produce)
    events = 0  # events delivered so far: ("gap", 0) .. ("gap", events - 1)
    last = -1
    async with asyncio.timeout(30):
        t.start()
        while events < n:
            for x in await buf.get_batch():
                if isinstance(x, tuple):
                    assert x == ("gap", events)
                    events += 1
                else:
                    assert last < x <= events, (x, events)  # gap x-1 came before item x
                    last = x
    await asyncio.to_thread(t.join)


class _ProducerActsAfterTakes(list[Any]):
    """A LATEST item list that runs the producer's next steps right after each take: the
    interleaving where they land between two looks of the consumer within one batch."""

    def __init__(self, items: list[Any], acts: list[Callable[[], None]]) -> None:
        super().__init__(items)
        self.acts = acts

    def pop(self, index: Any = -1) -> Any:
        x = super().pop(index)
        if self.acts:
            self.acts.pop(0)()
        return x


async def test_latest_first_event_arriving_mid_batch_comes_before_the_next_item() -> None:
    """No event was ever pushed (its container does not exist) when a batch starts; during the
    batch the producer pushes the first event, then an item: the event comes first."""
    buf: StreamBuffer[Any] = StreamBuffer(Policy.LATEST)
    buf.push(0)

    def second_push() -> None:
        buf.push_event("gap")
        buf.push(2)

    buf._dq = _ProducerActsAfterTakes(buf._dq, [lambda: buf.push(1), second_push])
    assert await buf.get_batch() == [0, 1, "gap", 2]


# -- a consumer parked before any container exists ------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("entry", ["item", "event"])
@pytest.mark.parametrize("producer", ["same loop", "thread"])
async def test_the_entry_that_creates_the_container_wakes_the_parked_consumer(
    policy: Policy, entry: str, producer: str
) -> None:
    buf: StreamBuffer[Any] = StreamBuffer(policy)

    def push() -> None:
        if entry == "item":
            buf.push(7)
        else:
            buf.push_event("gap")

    async with asyncio.timeout(10):
        consumer = asyncio.create_task(buf.get_batch())
        await asyncio.sleep(0)
        assert buf.stats()["parks"] == 1
        if producer == "thread":
            t = threading.Thread(target=push)
            t.start()
            t.join()
        else:
            push()
        assert await consumer == [7 if entry == "item" else "gap"]
    assert buf.stats()["wakeups"] == 1


# -- close, overflow, drain on fresh buffers -------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
async def test_closing_a_buffer_that_never_held_anything(policy: Policy) -> None:
    buf: StreamBuffer[Any] = StreamBuffer(policy, name="idle")
    buf.close()
    buf.push(1)
    buf.push_event("gap")
    buf.push_many([2, 3])
    assert buf.depth == 0
    with pytest.raises(StreamClosed, match="idle"):
        buf.get_nowait()
    assert [x async for x in buf] == []
    await buf.drained(1)  # closed: returns at once
    s = buf.stats()
    assert (s["ignored"], s["pushed"], s["events"], s["delivered"]) == (4, 0, 0, 0)
    other: StreamBuffer[Any] = StreamBuffer(policy)
    other.close(RuntimeError("the lane gave up"))
    with pytest.raises(RuntimeError, match="gave up"):
        await other.get()


class _ProducerActsBeforeTheFlag(StreamBuffer[Any]):
    """Runs ``act`` (the producer's steps) right before the consumer's next read of the
    closed flag: the interleaving where they land between its look at the containers and its
    look at the flag."""

    __slots__ = ("act",)

    def __init__(self, policy: Policy) -> None:
        self.act: Callable[[], None] | None = None
        super().__init__(policy)

    @property  # type: ignore[override]
    def _closed(self) -> bool:
        act, self.act = self.act, None
        if act is not None:
            act()
        return bool(StreamBuffer._closed.__get__(self))

    @_closed.setter
    def _closed(self, value: bool) -> None:
        StreamBuffer._closed.__set__(self, value)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("entry", ["item", "event"])
async def test_the_first_entry_pushed_just_before_close_is_delivered(
    policy: Policy, entry: str
) -> None:
    """The consumer finds no container; the producer then pushes its first entry (creating
    the container) and closes; the consumer, seeing the flag, looks again: it gets the entry,
    then the end."""
    buf = _ProducerActsBeforeTheFlag(policy)

    def produce() -> None:
        if entry == "item":
            buf.push(1)
        else:
            buf.push_event("gap")
        buf.close()

    buf.act = produce
    assert buf.get_nowait() == (1 if entry == "item" else "gap")
    with pytest.raises(StreamClosed):
        buf.get_nowait()


async def test_queue_push_many_into_a_fresh_buffer_overflows_in_band() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=2, name="bars")
    buf.push_many([1, 2, 3, 4])
    assert buf.get_nowait() == 1
    assert await buf.get_batch() == [2]
    with pytest.raises(BufferOverflowError) as exc:
        buf.get_nowait()
    assert (exc.value.dropped, exc.value.bound) == (2, 2)
    buf.push_many([5, 6])
    assert await buf.get_batch() == [5, 6]
    s = buf.stats()
    assert (s["pushed"], s["dropped"], s["overflows"], s["depth"]) == (4, 2, 1, 0)


async def test_latest_push_many_into_a_fresh_buffer_keeps_the_newest() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.LATEST)
    buf.push_many([1, 2, 3])
    assert buf.depth == 1
    assert buf.get_nowait() == 3
    buf.push_many([4])
    buf.push_many([5, 6])
    assert await buf.get_batch() == [6]
    s = buf.stats()
    assert (s["pushed"], s["conflated"], s["delivered"], s["depth"]) == (6, 4, 2, 0)


async def test_latest_drained_counts_events_and_the_item() -> None:
    buf: StreamBuffer[Any] = StreamBuffer(Policy.LATEST)
    await buf.drained(1)  # nothing yet: returns at once
    buf.push_event("gap")
    buf.push(1)
    waiter = asyncio.create_task(buf.drained(2))
    await asyncio.sleep(0)
    assert not waiter.done()  # 2 waiting
    assert buf.get_nowait() == "gap"
    async with asyncio.timeout(5):
        await waiter
    assert buf.get_nowait() == 1


# -- the LATEST take racing a push ------------------------------------------------------------


class _TakenBeforeTheStore(list[Any]):
    """A LATEST item list whose next store first lets the consumer take the pending item:
    the interleaving where the consumer's ``pop()`` lands between push()'s look (an item is
    pending) and its store over it."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__(items)
        self.taken: list[Any] = []

    def __setitem__(self, index: Any, value: Any) -> None:
        self.taken.append(self.pop())  # the consumer, between the look and the store
        super().__setitem__(index, value)


async def test_latest_push_after_the_consumer_took_the_item_meanwhile() -> None:
    """The store over a pending item that the consumer took meanwhile becomes an append: the
    new item is pending, once; the taken one is not delivered again."""
    buf: StreamBuffer[int] = StreamBuffer(Policy.LATEST)
    buf.push(1)
    racing = _TakenBeforeTheStore(buf._dq)
    buf._dq = racing
    buf.push(2)  # looks: 1 pending; the consumer takes 1; the store fails over to append
    assert racing.taken == [1]
    assert buf.depth == 1
    assert buf.get_nowait() == 2
    with pytest.raises(BufferEmpty):
        buf.get_nowait()
    assert buf.stats()["pushed"] == 2


# -- a stream's lazily created parts ------------------------------------------------------------


def test_a_stream_creates_its_event_log_on_first_use() -> None:
    stream = _detached_stream()
    assert stream.events == [] and stream.event_counts == {}
    assert stream.events is stream.events  # the same list once created
    assert stream.stats()["events"] == 0
    stream._notify(LaneEvent("disconnected", 1, "lost"))  # no callback registered
    assert [e.kind for e in stream.events] == ["disconnected"]
    assert stream.event_counts == {"disconnected": 1}
    seen: list[LaneEvent] = []
    stream.on_event(seen.append)
    stream._notify(LaneEvent("restored", 1))
    assert [e.kind for e in seen] == ["restored"]
    assert stream.stats()["events"] == 2


def test_a_stream_counts_and_logs_a_bad_frame_without_a_log_created_beforehand(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = _detached_stream()
    with caplog.at_level("WARNING", logger="alorws.stream"):
        assert stream._handle(b'{"data":{"junk') is None
        assert stream._handle(b'{"data":{"junk') is None
    assert stream.bad_payloads == 2
    assert len(caplog.records) == 1  # rate-limited: the first of its kind only
