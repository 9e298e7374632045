"""StreamBuffer: policies, overflow, events, close, and real cross-thread handoff."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from alorws.client.buffer import BufferEmpty, Policy, StreamBuffer, WakeBatcher
from alorws.errors import (
    BufferOverflowError,
    ConfigurationError,
    InvalidState,
    StreamClosed,
)


N = 200_000


class Gap:
    """A stand-in for a reconnect/gap marker pushed with push_event."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Gap) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)

    def __repr__(self) -> str:
        return f"Gap({self.n})"


def drain_nowait(buf: StreamBuffer[Any]) -> list[Any]:
    """Everything get_nowait() yields until empty; errors appear in the list as objects."""
    out: list[Any] = []
    while True:
        try:
            out.append(buf.get_nowait())
        except BufferEmpty:
            return out
        except BufferOverflowError as exc:
            out.append(exc)


def run_thread(target: Any) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


async def wait_parked(buf: StreamBuffer[Any]) -> None:
    """Let a just-created consumer task run its first step: it parks there (no timing)."""
    await asyncio.sleep(0)
    assert buf.stats()["parks"] == 1


async def collect(buf: StreamBuffer[Any], into: list[Any]) -> None:
    """``async for`` into a list that keeps what arrived before an exception."""
    async for x in buf:
        into.append(x)  # noqa: PERF401


# -- policies -------------------------------------------------------------------------------


async def test_latest_conflates_to_newest() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.LATEST, name="quotes SBER")
    for i in range(5):
        buf.push(i)
    assert buf.depth == 1
    assert await buf.get() == 4
    with pytest.raises(BufferEmpty):
        buf.get_nowait()
    buf.push(5)
    assert buf.get_nowait() == 5
    s = buf.stats()
    assert (s["pushed"], s["delivered"], s["conflated"], s["dropped"]) == (6, 2, 4, 0)
    assert s["max_depth"] == 1


async def test_latest_policy_ignores_maxsize() -> None:
    buf: StreamBuffer[int] = StreamBuffer("latest", maxsize=1)
    buf.push_many([1, 2, 3])
    buf.push(4)
    assert drain_nowait(buf) == [4]
    assert buf.stats()["conflated"] == 3


async def test_queue_keeps_order() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE)
    for i in range(1000):
        buf.push(i)
    buf.push_many(range(1000, 1500))
    assert buf.depth == 1500
    assert [await buf.get() for _ in range(10)] == list(range(10))
    assert await buf.get_batch(10_000) == list(range(10, 1500))
    s = buf.stats()
    assert (s["pushed"], s["delivered"], s["max_depth"], s["depth"]) == (1500, 1500, 1500, 0)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError):
        StreamBuffer(Policy.QUEUE, maxsize=0)
    with pytest.raises(ValueError, match="'fifo'"):
        StreamBuffer("fifo")
    assert Policy("queue") is Policy.QUEUE and str(Policy.LATEST) == "latest"


async def test_get_batch_rejects_nonpositive_max() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE)
    with pytest.raises(ConfigurationError):
        await buf.get_batch(0)


# -- overflow -------------------------------------------------------------------------------


async def test_overflow_raised_once_after_earlier_items_then_resumes() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=5, name="orders")
    for i in range(12):  # 0..4 kept, 5..11 dropped
        buf.push(i)
    assert [await buf.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(BufferOverflowError) as info:
        await buf.get()
    assert (info.value.dropped, info.value.bound) == (7, 5)
    assert "orders" in str(info.value)
    with pytest.raises(BufferEmpty):  # raised once: nothing else pending
        buf.get_nowait()
    buf.push(12)
    assert await buf.get() == 12
    s = buf.stats()
    assert (s["dropped"], s["overflows"], s["pushed"], s["delivered"]) == (7, 1, 6, 6)


async def test_two_episodes_are_reported_separately_in_place() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=3)
    buf.push_many([0, 1, 2])
    buf.push(3)  # dropped: episode 1 (its marker is an entry too: 1, 2, marker)
    buf.push(4)  # dropped: episode 1
    assert [buf.get_nowait(), buf.get_nowait()] == [0, 1]
    buf.push(5)  # fits again (ends episode 1)
    buf.push(6)  # dropped: episode 2
    out = drain_nowait(buf)
    assert out[0] == 2
    assert isinstance(out[1], BufferOverflowError) and out[1].dropped == 2
    assert out[2] == 5
    assert isinstance(out[3], BufferOverflowError) and out[3].dropped == 1
    assert len(out) == 4


async def test_get_batch_stops_before_overflow_and_next_call_raises() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=4)
    buf.push_many([0, 1, 2, 3, 4, 5])  # does not fit: per-item, 4 and 5 dropped
    assert await buf.get_batch() == [0, 1, 2, 3]
    with pytest.raises(BufferOverflowError) as info:
        await buf.get_batch()
    assert info.value.dropped == 2
    buf.push(6)
    assert await buf.get_batch() == [6]


async def test_async_for_raises_overflow_and_can_resume() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=2)
    buf.push_many([0, 1])
    buf.push(2)
    buf.close()
    got: list[int] = []
    with pytest.raises(BufferOverflowError):
        await collect(buf, got)
    await collect(buf, got)  # the buffer goes on; here it ends cleanly (closed, no exc)
    assert got == [0, 1]


# -- events ---------------------------------------------------------------------------------


async def test_queue_events_keep_their_place_and_are_never_dropped() -> None:
    buf: StreamBuffer[int | Gap] = StreamBuffer(Policy.QUEUE, maxsize=2)
    buf.push(0)
    buf.push_event(Gap(1))
    buf.push(1)  # 2 entries (0, Gap) already: the bound counts events, so this is dropped
    buf.push_event(Gap(2))  # events ignore the bound; also ends the overflow episode
    buf.push(2)  # dropped: a new episode, after Gap(2)
    out = drain_nowait(buf)
    assert out[:2] == [0, Gap(1)]
    assert isinstance(out[2], BufferOverflowError) and out[2].dropped == 1
    assert out[3] == Gap(2)
    assert isinstance(out[4], BufferOverflowError) and out[4].dropped == 1
    assert buf.stats()["events"] == 2


async def test_latest_events_come_before_the_pending_item() -> None:
    buf: StreamBuffer[int | Gap] = StreamBuffer(Policy.LATEST)
    buf.push(1)
    buf.push_event(Gap(1))
    buf.push(2)
    buf.push_event(Gap(2))
    buf.push(3)
    assert buf.depth == 3
    assert await buf.get_batch() == [Gap(1), Gap(2), 3]
    buf.push_event(Gap(3))
    buf.push_event(Gap(4))
    assert [await buf.get(), await buf.get()] == [Gap(3), Gap(4)]
    s = buf.stats()
    assert (s["pushed"], s["conflated"], s["events"], s["delivered"]) == (3, 2, 4, 5)


# -- close ----------------------------------------------------------------------------------


async def test_close_delivers_pending_then_stream_closed() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, name="bars")
    buf.push_many([1, 2])
    buf.close()
    buf.close(RuntimeError("ignored: the first close wins"))
    buf.push(3)
    buf.push_event(4)
    buf.push_many([5, 6])
    assert buf.closed
    assert await buf.get_batch() == [1, 2]
    for _ in range(2):  # and on every later call
        with pytest.raises(StreamClosed, match="bars"):
            await buf.get()
    with pytest.raises(StreamClosed):
        buf.get_nowait()
    assert buf.stats()["ignored"] == 4


async def test_close_with_exception_is_raised_after_pending() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.LATEST)
    buf.push(1)
    boom = ConnectionError("refused")
    buf.close(boom)
    got: list[int] = []
    with pytest.raises(ConnectionError) as info:
        await collect(buf, got)
    assert got == [1] and info.value is boom


async def test_async_for_ends_cleanly_on_close() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE)
    buf.push_many([1, 2, 3])
    buf.close()
    assert [x async for x in buf] == [1, 2, 3]


async def test_close_from_another_thread_wakes_a_parked_consumer() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE)
    async with asyncio.timeout(10):
        consumer = asyncio.create_task(buf.get())
        await wait_parked(buf)
        run_thread(buf.close).join()
        with pytest.raises(StreamClosed):
            await consumer
    assert buf.stats()["wakeups"] == 1


async def test_items_pushed_before_close_by_the_closing_thread_are_delivered() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE)

    def produce() -> None:
        for i in range(10_000):
            buf.push(i)
        buf.close()

    async with asyncio.timeout(20):
        run_thread(produce)
        got = [x async for x in buf]
    assert got == list(range(10_000))


# -- waiting, cancellation, misuse ----------------------------------------------------------


async def test_get_batch_waits_for_the_first_item() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE)
    async with asyncio.timeout(10):
        task = asyncio.create_task(buf.get_batch())
        await wait_parked(buf)
        assert not task.done()
        buf.push(7)  # same thread as the consumer loop: woken without a thread hop
        assert await task == [7]


async def test_cancelled_waiter_is_withdrawn() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await buf.get()
    buf.push(1)  # nobody parked: no wake-up, no error
    assert buf.stats()["wakeups"] == 0
    async with asyncio.timeout(10):
        assert await buf.get() == 1


async def test_second_concurrent_consumer_is_refused() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE)
    async with asyncio.timeout(10):
        first = asyncio.create_task(buf.get())
        await wait_parked(buf)
        with pytest.raises(InvalidState, match="one consumer"):
            await buf.get()
        buf.push(1)
        assert await first == 1


async def test_buffer_bound_to_another_loop_refuses_to_wait() -> None:
    other = asyncio.new_event_loop()
    try:
        buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, loop=other)
        buf.push(1)
        assert await buf.get() == 1  # no wait needed: no loop check
        with pytest.raises(InvalidState, match="another event loop"):
            await buf.get()
    finally:
        other.close()


def test_push_never_raises_when_the_consumer_loop_is_gone() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE)
    loop = asyncio.new_event_loop()
    task = loop.create_task(buf.get())
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # abandoned on purpose
    loop.run_until_complete(wait_parked(buf))
    loop.close()  # the consumer is abandoned while parked
    run_thread(lambda: buf.push(1)).join()  # the wake-up hits a closed loop: swallowed
    assert buf.stats()["wakeups"] == 1 and buf.depth == 1


def test_repr_and_depth() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, name="trades")
    buf.push(1)
    assert repr(buf) == "<StreamBuffer 'trades' queue depth=1 open>"


# -- real threads ---------------------------------------------------------------------------


@pytest.mark.parametrize("producer", ["thread", "loop-thread"])
async def test_queue_across_threads_is_lossless_and_ordered(producer: str) -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=N)

    def from_thread() -> None:
        for i in range(N):
            buf.push(i)

    def from_loop_thread() -> None:
        async def main() -> None:
            for i in range(N):
                buf.push(i)
                if i % 1000 == 0:
                    await asyncio.sleep(0)  # an I/O loop does other work too

        asyncio.run(main())

    got: list[int] = []
    async with asyncio.timeout(30):
        t = run_thread(from_thread if producer == "thread" else from_loop_thread)
        while len(got) < N:
            got += await buf.get_batch(5000)
        await asyncio.to_thread(t.join)
    assert got == list(range(N))
    s = buf.stats()
    assert (s["pushed"], s["delivered"], s["dropped"], s["depth"]) == (N, N, 0, 0)
    assert s["wakeups"] <= s["parks"]


@pytest.mark.parametrize("producer", ["thread", "loop-thread"])
async def test_latest_across_threads_always_delivers_the_last_item(producer: str) -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.LATEST)

    def from_thread() -> None:
        for i in range(N):
            buf.push(i)

    def from_loop_thread() -> None:
        async def main() -> None:
            for i in range(N):
                buf.push(i)
                if i % 1000 == 0:
                    await asyncio.sleep(0)

        asyncio.run(main())

    got: list[int] = []
    async with asyncio.timeout(30):
        t = run_thread(from_thread if producer == "thread" else from_loop_thread)
        while not got or got[-1] != N - 1:
            got.append(await buf.get())
        await asyncio.to_thread(t.join)
    assert all(a < b for a, b in itertools.pairwise(got))
    s = buf.stats()
    assert s["pushed"] == N and s["delivered"] == len(got)
    assert s["conflated"] == N - len(got) and s["depth"] == 0
    assert s["wakeups"] <= s["parks"]


async def test_per_item_consumer_across_threads() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=N)

    def produce() -> None:
        for i in range(N):
            buf.push(i)
        buf.close()

    async with asyncio.timeout(30):
        run_thread(produce)
        expected = 0
        async for x in buf:
            assert x == expected
            expected += 1
    assert expected == N
    s = buf.stats()
    assert s["wakeups"] <= s["parks"] and s["wakeups"] < N // 100


@pytest.mark.parametrize("producer", ["thread", "loop-thread"])
@pytest.mark.parametrize("policy", [Policy.LATEST, Policy.QUEUE])
async def test_blocked_consumer_loop_does_not_block_the_producer(
    producer: str, policy: Policy
) -> None:
    buf: StreamBuffer[int] = StreamBuffer(policy, maxsize=10_000)
    pushes = [0]  # counted by the producer itself
    stop = threading.Event()

    def from_thread() -> None:
        i = 0
        while not stop.is_set():
            buf.push(i)
            i += 1
            pushes[0] = i

    def from_loop_thread() -> None:
        async def main() -> None:
            i = 0
            while not stop.is_set():
                buf.push(i)
                i += 1
                pushes[0] = i
                if i % 100 == 0:
                    await asyncio.sleep(0)

        asyncio.run(main())

    t = run_thread(from_thread if producer == "thread" else from_loop_thread)
    try:
        async with asyncio.timeout(20):
            await buf.get()  # the producer is running
            before = pushes[0]
            time.sleep(0.5)  # noqa: ASYNC251  # the consumer blocks its own loop on purpose
            during = pushes[0] - before
            await buf.get()  # and then carries on
    finally:
        stop.set()
        t.join(10)
    assert during > 1000, during
    s = buf.stats()
    if policy is Policy.QUEUE:
        assert s["dropped"] > 0  # overflow during the block: counted, never blocking
        assert s["pushed"] + s["dropped"] == pushes[0]
    else:
        assert s["pushed"] == pushes[0]


async def test_one_wakeup_for_a_burst_while_the_consumer_is_busy() -> None:
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE)
    async with asyncio.timeout(20):
        consumer = asyncio.create_task(buf.get_batch(100_000))
        await wait_parked(buf)

        def burst() -> None:
            for i in range(10_000):
                buf.push(i)

        run_thread(burst).join()  # the loop is blocked meanwhile: the consumer cannot run
        assert await consumer == list(range(10_000))
        s = buf.stats()
        assert (s["parks"], s["wakeups"]) == (1, 1)

        # Busy (not parked) consumer: no wake-ups at all, however many pushes.
        run_thread(burst).join()
        assert len(await buf.get_batch(100_000)) == 10_000
        assert buf.stats()["wakeups"] == 1


@pytest.mark.parametrize("policy", [Policy.QUEUE, Policy.LATEST])
async def test_no_lost_wakeup_in_ping_pong(policy: Policy) -> None:
    """Each round the consumer parks just as the producer pushes: a lost wake-up hangs it.

    (Checked: a variant that looks at the deque before publishing its waiter times out here.)
    """
    buf: StreamBuffer[int] = StreamBuffer(policy)
    rounds = 2000
    turn = threading.Semaphore(0)

    def produce() -> None:
        for i in range(rounds):
            turn.acquire()
            buf.push(i)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to widen every race
    try:
        t = run_thread(produce)
        async with asyncio.timeout(10):
            for i in range(rounds):
                turn.release()
                assert await buf.get() == i
    finally:
        sys.setswitchinterval(old)
        for _ in range(rounds):  # unblock the producer if we failed midway
            turn.release()
        t.join(10)
    s = buf.stats()
    assert s["wakeups"] <= s["parks"] and s["delivered"] == rounds


# -- batched wake-ups ------------------------------------------------------------------------


async def test_batcher_wakes_a_parked_consumer_once_per_loop_iteration() -> None:
    """100 pushes in one iteration of a producer loop in another thread cost one wake-up,
    delivered after that iteration, and the consumer gets all 100 in one batch."""
    loop = asyncio.new_event_loop()
    producer = run_thread(loop.run_forever)
    try:
        batcher = WakeBatcher(loop)
        buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, batcher=batcher)
        consumer = asyncio.create_task(buf.get_batch(1000))
        await asyncio.sleep(0)  # the consumer parks
        assert buf.stats()["parks"] == 1
        during: list[int] = []

        def burst() -> None:
            for i in range(100):
                buf.push(i)
            during.append(buf.stats()["wakeups"])  # not yet: after this callback

        loop.call_soon_threadsafe(burst)
        async with asyncio.timeout(5):
            assert await consumer == list(range(100))
        assert during == [0]
        assert buf.stats()["wakeups"] == 1
    finally:
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(producer.join)
        loop.close()


async def test_batched_push_in_the_consumers_own_loop_wakes_at_once() -> None:
    """In the consumer's own loop (io_thread=False) the first push resolves the waiter
    directly: still one wake-up, and the consumer, scheduled, still gets the whole burst."""
    batcher = WakeBatcher(asyncio.get_running_loop())
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, batcher=batcher)
    consumer = asyncio.create_task(buf.get_batch(1000))
    await asyncio.sleep(0)  # the consumer parks
    during: list[int] = []

    def burst() -> None:
        for i in range(100):
            buf.push(i)
            during.append(buf.stats()["wakeups"])

    asyncio.get_running_loop().call_soon(burst)
    async with asyncio.timeout(5):
        assert await consumer == list(range(100))
    assert during == [1] * 100  # woken by the first push, never again
    assert buf.stats()["wakeups"] == 1


@pytest.mark.parametrize("bound", ["unbound", "closed loop"])
async def test_batcher_without_a_running_loop_wakes_at_once(bound: str) -> None:
    """Not bound to a loop yet, or bound to a closed one: a push wakes the consumer directly."""
    gone = asyncio.new_event_loop()
    gone.close()
    batcher = WakeBatcher() if bound == "unbound" else WakeBatcher(gone)
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, batcher=batcher)
    consumer = asyncio.create_task(buf.get())
    await asyncio.sleep(0)  # parked
    run_thread(lambda: buf.push(1)).join()
    async with asyncio.timeout(5):
        assert await consumer == 1
    assert buf.stats()["wakeups"] == 1


@pytest.mark.parametrize("policy", [Policy.QUEUE, Policy.LATEST])
async def test_batched_wakeups_across_threads_lose_nothing(policy: Policy) -> None:
    """A producer loop in another thread (like the client's I/O loop) with a batcher: queue
    delivers every item in order, latest always ends on the last one; wake-ups never exceed
    the producer's loop iterations."""
    batcher = WakeBatcher()
    buf: StreamBuffer[int] = StreamBuffer(policy, maxsize=N, batcher=batcher)
    iterations = 0

    def producer() -> None:
        async def main() -> None:
            nonlocal iterations
            batcher.loop = asyncio.get_running_loop()
            for i in range(N):
                buf.push(i)
                if i % 500 == 499:
                    iterations += 1
                    await asyncio.sleep(0)
            for _ in range(3):  # let the last flush run before the loop ends
                await asyncio.sleep(0)

        asyncio.run(main())

    got: list[int] = []
    async with asyncio.timeout(30):
        t = run_thread(producer)
        if policy is Policy.QUEUE:
            while len(got) < N:
                got += await buf.get_batch(5000)
        else:
            while not got or got[-1] != N - 1:
                got.append(await buf.get())
        await asyncio.to_thread(t.join)
    if policy is Policy.QUEUE:
        assert got == list(range(N))
    else:
        assert all(a < b for a, b in itertools.pairwise(got))
    s = buf.stats()
    assert s["wakeups"] <= min(s["parks"], iterations + 1)


async def test_batched_no_lost_wakeup_in_ping_pong() -> None:
    """Each round the consumer parks just as the producer loop pushes (with a batcher)."""
    batcher = WakeBatcher()
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, batcher=batcher)
    rounds = 1000
    turn = threading.Semaphore(0)

    def produce() -> None:
        async def main() -> None:
            batcher.loop = asyncio.get_running_loop()
            for i in range(rounds):
                await asyncio.to_thread(turn.acquire)
                buf.push(i)

        asyncio.run(main())

    t = run_thread(produce)
    try:
        async with asyncio.timeout(30):
            for i in range(rounds):
                turn.release()
                assert await buf.get() == i
    finally:
        for _ in range(rounds):
            turn.release()
        t.join(10)
    assert buf.stats()["delivered"] == rounds


# -- a property: whatever the interleaving, every item is delivered or reported once ---------


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 4)),
        st.tuples(st.just("event"), st.just(1)),
        st.tuples(st.just("take"), st.integers(1, 6)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, maxsize=st.integers(1, 6))
def test_queue_accounts_for_every_item(ops: list[tuple[str, int]], maxsize: int) -> None:
    buf: StreamBuffer[int | Gap] = StreamBuffer(Policy.QUEUE, maxsize=maxsize)
    pushed = events = 0
    out: list[Any] = []
    for op, n in ops:
        if op == "push":
            for _ in range(n):
                buf.push(pushed)
                pushed += 1
        elif op == "event":
            buf.push_event(Gap(events))
            events += 1
        else:
            for _ in range(n):
                try:
                    out.append(buf.get_nowait())
                except BufferEmpty:
                    break
                except BufferOverflowError as exc:
                    out.append(exc)
    out += drain_nowait(buf)

    # Walk the output: data ascend, and the gap before each data item (or the end) equals
    # the drops reported since the previous data item; events all arrive, in order.
    expected = 0
    reported = 0
    gaps = []
    for x in out:
        if isinstance(x, BufferOverflowError):
            assert x.dropped >= 1 and x.bound == maxsize
            reported += x.dropped
        elif isinstance(x, Gap):
            gaps.append(x.n)
        else:
            assert x - expected == reported
            expected = x + 1
            reported = 0
    assert pushed - expected == reported
    assert gaps == list(range(events))
    s = buf.stats()
    assert s["pushed"] + s["dropped"] == pushed
    assert s["depth"] == 0
