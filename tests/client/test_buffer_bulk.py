"""The lossless consumer's bulk paths: ``StreamBuffer.get_batch`` (``QUEUE``) takes what waits
in one go unless an overflow marker may be among it, and ``Stream.get_batch`` decodes a batch of
frames in one pass unless an item is an event, a payload alone or a bad frame. Either way the
result is the item-by-item one: same entries, same order, each bad frame reported once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from alorws.client import LaneEvent, Policy, Stream, StreamBuffer
from alorws.client.streams import decode_inline
from alorws.errors import BufferOverflowError, StreamClosed
from alorws.lifecycle import StreamState
from alorws.protocol import Quote, QuotesRequest

from .._fixtures import cases


class Gap:
    """An event stand-in: pushed with push_event after data item ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Gap({self.n})"


# -- StreamBuffer: bulk take and overflow markers ---------------------------------------------


async def test_a_batch_stops_before_a_marker_in_the_middle_then_goes_on() -> None:
    """Entries after an overflow marker wait for the calls after the one that raises; once the
    markers are taken, whole batches come again (the bulk take: batches of 16 and more)."""
    buf: StreamBuffer[Any] = StreamBuffer(Policy.QUEUE, maxsize=20, name="trades")
    buf.push_many(list(range(20)))
    buf.push(20)  # dropped: marker 1 after 19
    assert [buf.get_nowait() for _ in range(10)] == list(range(10))
    buf.push_many(list(range(21, 30)))  # fits again, after marker 1
    buf.push(30)  # dropped: marker 2 after 29
    buf.push(31)  # dropped: same episode
    assert await buf.get_batch(100) == list(range(10, 20))
    with pytest.raises(BufferOverflowError) as info:
        await buf.get_batch(100)
    assert (info.value.dropped, info.value.bound) == (1, 20)
    assert "trades" in str(info.value)
    assert await buf.get_batch(100) == list(range(21, 30))
    with pytest.raises(BufferOverflowError) as info:
        await buf.get_batch(100)
    assert info.value.dropped == 2
    buf.push_many(list(range(32, 50)))
    buf.push_event("event")
    buf.push(50)
    assert await buf.get_batch(100) == [*range(32, 50), "event", 50]
    buf.push_many(list(range(51, 71)))
    assert await buf.get_batch(17) == list(range(51, 68))  # a bulk take stops at max_items
    assert await buf.get_batch(17) == [68, 69, 70]
    s = buf.stats()
    assert (s["pushed"], s["dropped"], s["overflows"], s["events"]) == (68, 3, 2, 1)
    assert (s["delivered"], s["depth"]) == (69, 0)
    assert buf._markers == 0  # every marker taken is uncounted: bulk takes are back on


async def test_a_marker_beyond_the_batch_bound_is_left_for_later() -> None:
    """A batch full before it reaches a marker returns whole; the marker raises in its turn."""
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=40)
    buf.push_many(list(range(40)))
    buf.push(40)  # dropped
    assert await buf.get_batch(20) == list(range(20))
    assert await buf.get_batch(20) == list(range(20, 40))
    with pytest.raises(BufferOverflowError) as info:
        await buf.get_batch(20)
    assert info.value.dropped == 1
    buf.push_many(list(range(41, 61)))
    assert await buf.get_batch(20) == list(range(41, 61))


class _Interleaved(deque[Any]):
    """A deque that runs ``producer`` right before the first ``len()`` taken after the first
    ``popleft()``: as if the producer thread ran just as the consumer, having taken an entry,
    looks at the depth."""

    producer: Callable[[], None] | None = None
    armed = False

    def popleft(self) -> Any:
        self.armed = True
        return super().popleft()

    def __len__(self) -> int:
        producer = self.producer
        if self.armed and producer is not None:
            self.producer = None
            producer()
        return super().__len__()


async def test_a_marker_appended_as_the_consumer_looks_is_never_taken_in_bulk() -> None:
    """The producer overflows right before the consumer reads the depth for a bulk take: the
    depth then counts the new marker, and so does the marker count read after it, so the batch
    goes item by item and stops before the marker (read the other way round, the count would
    be 0 and the depth would include the marker)."""
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=40)  # enough for a bulk take
    buf.push(0)  # creates the deque
    buf._dq = dq = _Interleaved(buf._dq)
    buf.push_many(list(range(1, 40)))  # full
    dq.producer = lambda: buf.push_many([40, 41])  # 40 fits once 0 is taken; 41 is dropped
    assert await buf.get_batch(100) == list(range(41))
    assert dq.producer is None  # it ran
    with pytest.raises(BufferOverflowError) as info:
        await buf.get_batch(100)
    assert info.value.dropped == 1
    buf.push_many(list(range(42, 82)))
    assert await buf.get_batch(100) == list(range(42, 82))


@pytest.mark.parametrize("batch", [3, 1000])
async def test_overflows_racing_bulk_takes_lose_and_repeat_nothing(
    frequent_switches: None, batch: int
) -> None:
    """A producer thread pushes into a small buffer while the consumer takes batches: every item
    comes out once, in order, or is counted in the overflow reported where it was lost;
    events all come out, in place. Now and then the consumer holds still while the producer
    pushes a burst, so that overflows happen for sure."""
    total, maxsize, burst_every = 20_000, 64, 4000
    buf: StreamBuffer[Any] = StreamBuffer(Policy.QUEUE, maxsize=maxsize, name="bars")
    hold, held, release = threading.Event(), threading.Event(), threading.Event()
    handshakes: list[bool] = []

    def produce() -> None:
        release_at = -1
        for i in range(total):
            bursting = i % burst_every == burst_every // 2
            if bursting:
                hold.set()  # before the push: the consumer sees it after taking what follows
            buf.push(i)
            if i % 97 == 0:
                buf.push_event(Gap(i))
            if bursting:
                handshakes.append(held.wait(10))
                release_at = i + 3 * maxsize  # pushed while the consumer holds: most dropped
            elif i == release_at:
                hold.clear()
                held.clear()
                release.set()
        buf.close()

    thread = threading.Thread(target=produce, daemon=True)
    out: list[Any] = []
    async with asyncio.timeout(60):
        thread.start()
        while True:
            try:
                out += await buf.get_batch(batch)
            except BufferOverflowError as exc:
                out.append(exc)
            except StreamClosed:
                break
            if hold.is_set() and not held.is_set():
                held.set()
                handshakes.append(release.wait(10))  # blocks this loop on purpose
                release.clear()
    thread.join(10)
    assert not thread.is_alive()
    assert handshakes and all(handshakes)

    # Walk the output: data ascend, and the gap before each data item (or the end) is what the
    # overflows reported since the previous one; each event comes after data item n and before
    # any later one, and none is missing.
    expected = reported = errors = 0
    gaps: list[int] = []
    for x in out:
        if isinstance(x, BufferOverflowError):
            assert x.dropped >= 1 and x.bound == maxsize
            reported += x.dropped
            errors += 1
        elif isinstance(x, Gap):
            assert x.n < expected + reported  # item n came before, or was reported lost
            gaps.append(x.n)
        else:
            assert type(x) is int, x  # never a marker
            assert x - expected == reported, (x, expected, reported)
            assert not gaps or gaps[-1] < x
            expected = x + 1
            reported = 0
    assert total - expected == reported
    assert gaps == list(range(0, total, 97))
    s = buf.stats()
    assert s["dropped"] >= total // burst_every * maxsize  # at least maxsize a burst
    assert s["pushed"] + s["dropped"] == total
    assert s["overflows"] == errors
    assert s["delivered"] == len(out) - errors
    assert s["depth"] == 0


# -- Stream: one-pass decode ----------------------------------------------------------------

_SIMPLE = next(c for c in cases("ws/quotes") if c["format"] == "Simple")


def _frame(i: int) -> bytes:
    """A whole quote data frame (Simple) whose symbol carries ``i``."""
    frame = json.loads(json.dumps(_SIMPLE["frame"]))
    frame["data"]["symbol"] = f"S{i}"
    return json.dumps(frame).encode()


def _payload(i: int) -> msgspec.Raw:
    """A quote payload alone, as a replay pushes it."""
    return msgspec.Raw(json.dumps(json.loads(_frame(i))["data"]).encode())


def _open_stream() -> Stream[Quote]:
    stream = Stream(
        None,  # type: ignore[arg-type]  # never subscribed here
        QuotesRequest(code="SBER"),
        Quote,
        policy=Policy.QUEUE,
        account=False,
        max_buffer=10_000,
        name="quotes SBER",
    )
    stream._state = StreamState.OPEN  # fed by hand below
    return stream


def _symbols(quotes: list[Quote]) -> list[str]:
    return [q.symbol for q in quotes]


_EVENT = LaneEvent("disconnected", 1, "socket closed")
_BAD = b'{"data":{"symbol":1},"guid":"x"}'  # a data frame whose payload does not fit

#: Batches of 40 frames (more than the one-pass decode needs) with something else at ``at``.
_ODD = {
    "event": _EVENT,
    "bad frame": _BAD,
    "junk": b"\xff not json",
    "payload alone": _payload(999),
    # A payload alone that looks like a whole frame: as a payload it lacks "symbol" (bad),
    # decoded as a frame it would pass for a quote.
    "frame as payload": msgspec.Raw(_frame(998)),
}


@pytest.mark.parametrize("odd", list(_ODD))
@pytest.mark.parametrize("at", [0, 17, 39])
async def test_a_batch_with_an_odd_item_decodes_as_item_by_item(odd: str, at: int) -> None:
    """Whatever the batch holds, Stream.get_batch gives what decoding item by item gives: the
    same quotes in order, the event passed on once, each bad frame counted once."""
    items: list[Any] = [_frame(i) for i in range(40)]
    items.insert(at, _ODD[odd])
    stream, twin = _open_stream(), _open_stream()
    stream._buffer.push_many(items)
    async with asyncio.timeout(10):
        got = await stream.get_batch(1000)
    want = decode_inline(items, twin._frame_decoder.decode, twin._handle, frames=True)
    assert _symbols(got) == _symbols(want)
    assert (stream.bad_payloads, stream.event_counts) == (twin.bad_payloads, twin.event_counts)
    expected = [f"S{i}" for i in range(40)]
    if odd == "payload alone":
        expected.insert(at, "S999")
    assert _symbols(got) == expected
    bad = odd in ("bad frame", "junk", "frame as payload")
    assert stream.bad_payloads == int(bad)
    assert stream.event_counts == ({"disconnected": 1} if odd == "event" else {})
    assert stream._buffer.depth == 0


async def test_batches_of_frames_decode_whole_and_in_order() -> None:
    """Good frames only, in batches big and small: all of them, in order, none reported."""
    stream = _open_stream()
    stream._buffer.push_many([_frame(i) for i in range(1000)])
    got: list[Quote] = []
    async with asyncio.timeout(10):
        for size in (1, 31, 32, 500, 1000):
            got += await stream.get_batch(size)
    assert _symbols(got) == [f"S{i}" for i in range(1000)]
    assert stream.bad_payloads == 0


async def test_bad_frames_and_events_across_batches_are_reported_once() -> None:
    """A long mixed stream read in batches of several sizes: each bad frame counted once, each
    event seen once, every good frame delivered once, in order."""
    items: list[Any] = []
    for i in range(300):
        items.append(_frame(i))
        if i % 50 == 7:
            items.append(_BAD)
        if i % 70 == 3:
            items.append(_EVENT)
    stream = _open_stream()
    stream._buffer.push_many(items)
    stream._buffer.close()
    got: list[Quote] = []
    async with asyncio.timeout(10):
        for size in (40, 33, 100, 1000, 1000):
            try:
                got += await stream.get_batch(size)
            except StreamClosed:
                break
    assert _symbols(got) == [f"S{i}" for i in range(300)]
    assert stream.bad_payloads == items.count(_BAD) == 6
    assert stream.event_counts == {"disconnected": items.count(_EVENT)}
