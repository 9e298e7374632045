"""Single-producer/single-consumer stream buffers that cross threads cheaply.

Every subscription owns one :class:`StreamBuffer`. The connection's reader (in the I/O thread's
event loop) only ``push``-es into it; the consumer awaits ``get()`` in its own loop. The reader
never waits for the consumer and never runs consumer code.

Policies
    ``Policy.LATEST`` (state streams: quotes, books, instrument, summaries, risks) keeps only the
    newest undelivered item; each replaced item counts as ``conflated``.
    ``Policy.QUEUE`` (orders, own trades, positions, stop orders, all trades, bars) is a lossless
    FIFO of at most ``maxsize`` items.

Overflow (``QUEUE`` only)
    When the buffer holds ``maxsize`` entries, a new item is dropped and counted; the producer is
    never blocked and never sees an error. The loss is put *in-band*: the consumer first receives
    every item that arrived before it, then ``get()`` (or ``get_batch()``, or the ``async for``)
    raises :class:`~alorws.errors.BufferOverflowError` once for the whole overflow episode, with
    ``dropped`` = the items lost in it, ``bound`` = ``maxsize`` and the buffer's ``name``. An
    episode is a run of drops with no accepted push (or event) in between. The buffer stays
    usable: call ``get()`` again (or start a new ``async for``) to go on with later items.

Events
    ``push_event(event)`` puts an out-of-band entry (a reconnect or gap marker, say) into the
    stream. Events are never conflated, never dropped and do not count against ``maxsize``. They
    come out of the same ``get()``/``get_batch()``/``async for`` as data, **unchanged** (no
    wrapper): the consumer tells them apart by type, so ``T`` should cover the event type (e.g.
    ``StreamBuffer[Raw | LaneEvent]``, or ``StreamBuffer[Any]``). Order: with ``QUEUE`` exactly
    where they were pushed relative to data; with ``LATEST`` all pending events come before the
    pending newest item.

Consuming
    ``await get()`` returns the next entry; ``get_nowait()`` raises
    :class:`~alorws.errors.BufferEmpty` when there is none; ``await get_batch(n)`` waits for one
    entry and returns everything available up to ``n`` (it stops before an overflow marker, so
    the error comes from the next call); ``async for item in buf`` iterates. One consumer task
    at a time: a second task waiting concurrently gets :class:`~alorws.errors.InvalidState`.

Backpressure
    A producer that may wait for its consumer (a replay; never a connection's reader) awaits
    ``drained(n)``: it returns once fewer than ``n`` entries wait, or the buffer is closed. The
    consumer wakes it as it takes entries, the way the producer wakes a parked consumer (the
    waiter is published, then the depth looked at, under the lock), so nobody polls.

Closing
    ``close(exc=None)`` may be called from any thread, more than once (the first wins). Pushes
    after it are ignored and counted (``ignored``); items pushed concurrently with ``close`` from
    another thread may land on either side of it. A waiting consumer wakes; it first gets every
    entry still buffered, then ``get()`` raises ``exc``, or a fresh
    :class:`~alorws.errors.StreamClosed` when ``exc`` is None, on that and every later call.
    ``async for`` ends cleanly after a ``close()`` without ``exc`` and raises ``exc`` otherwise.

Event loop
    The consumer's loop is the one passed as ``loop=``, or else the running loop of the first
    ``await`` that has to wait (``get_nowait`` and ``push`` do not bind). Waiting from another
    loop afterwards raises :class:`~alorws.errors.InvalidState`. The producer may be any thread,
    including the consumer's own loop (then the wake-up is a plain ``Future.set_result``).

Thread safety and cost (CPython with the GIL)
    The hot path, ``push``, takes no lock: ``deque.append``/``popleft``/``len`` are single C
    calls that do not release the GIL, so each is atomic, and with one producer (appending on
    the right) and one consumer (popping on the left) a deque needs nothing else. The producer
    then reads ``_waiter``; only when the consumer is parked (``_waiter`` is set) does it take
    the lock, claim the waiter and wake it (from another thread: through the consumer loop's
    waker, see "Cross-thread wake-ups"). While the consumer is busy, or already woken, pushes
    cost one append and a few attribute reads and make **no** cross-thread call (see
    ``wakeups`` against ``pushed`` in :meth:`stats`).
    ``bench/handoff.py`` measures it: about 160 ns of producer CPU per item, some 25 times less
    than one ``loop.call_soon_threadsafe`` per item (each of which writes to the loop's
    self-pipe), and 3 million items/s end to end from a thread into a ``get_batch`` consumer.

    ``get_batch`` on a ``QUEUE`` takes what waits in bulk, in one C-level loop of ``popleft``,
    instead of a Python loop that looks at every entry for an overflow marker. It may because
    the markers in the deque are counted: the producer counts one (under the lock) *before* it
    appends it, and the consumer uncounts it (under the lock) once it took it. The consumer
    reads the depth first, then the count. A marker among the first ``depth`` entries was
    appended before the depth was read, so counted before, and it is not taken yet: a count of
    0 proves there is none among them, and they stay first, as the producer appends on the
    right. While a marker is about (or fewer than 16 entries are to be taken: setting the C loop
    up costs more than it saves), the batch goes item by item, stopping before a marker.

    ``LATEST`` keeps its pending item in a list of at most one element. Taking it must be an
    exchange (read it *and* leave nothing behind): with a plain attribute, read then cleared,
    an item stored between the two steps would be lost. ``list.pop()`` is that exchange in one
    C call; the producer replaces the pending item with ``lst[0] = item`` (one C call) or, when
    there is none, appends it. If the consumer takes the item between the producer's look and
    its store, the store raises ``IndexError`` and the producer appends instead: the list is
    empty then, as only the producer adds to it. So the list never holds more than the newest
    item, and a taken item is never delivered again.

    Containers are created by the first entry (``()`` stands for "none yet": it has a length
    and a truth value, so every look works unchanged, and no ``append``, so the first push
    fails over to the slow path). The producer builds the container holding the entry and
    publishes it with one attribute store, under the lock (a backfill event may come from the
    consumer's thread); the consumer sees either no container or one with the entry. Every
    look that decides (parking, the end of a closed stream) reads the attribute again. A
    container stays once created: dropping an empty one could race with a push into it.

    No lost wake-up: the consumer, under the lock, first publishes its waiter, *then* looks at
    the containers (and the closed flag) and withdraws if anything is there. The producer
    stores the entry *first*, then reads the waiter. Under the GIL these steps interleave
    sequentially consistently, so either the consumer's look sees the new item or the
    producer's read sees the waiter. Claiming and withdrawing the waiter both happen under the
    lock, so a waiter is woken at most once and a stale wake-up (of a future nobody awaits any
    more) is harmless. ``close`` and the overflow bookkeeping (rare paths) also take the lock:
    the consumer reads an episode's ``dropped`` count and marks it taken atomically, so a drop
    is reported exactly once. Several producer threads pushing at the same time stay
    memory-safe and lose no wake-up, but the counters and the bound may be off by a few, and
    ``LATEST`` may deliver an older item after a newer one; keep one producer of data per
    buffer (events may come from any thread). On free-threaded builds (no GIL) this reasoning
    needs revisiting.

Batched wake-ups
    A buffer given a :class:`WakeBatcher` (the client gives every stream the one of its I/O
    loop) does not wake its parked consumer from ``push`` itself: it asks the batcher, which
    wakes each buffer at most once per iteration of the producer's loop, after that iteration's
    callbacks ran (everything one socket read delivered, say). A consumer faster than the feed
    then takes a read's worth of items per wake-up instead of one or two, and each wake-up (a
    self-pipe write, a thread switch) is paid once per read, not once per message. Every
    ``push`` to such a buffer must run in the batcher's loop. Events, overflows and ``close``
    still wake at once, and so does a push made in the consumer's own thread (the client with
    ``io_thread=False``): resolving the consumer's future only schedules it, and it runs after
    the iteration's callbacks anyway, so the batcher would add a loop iteration for nothing.

Coalescing
    ``WakeBatcher(coalesce_us=C)`` also spaces the rounds of wake-ups: at most one per ``C``
    microseconds. A wake-up owed ``C`` or more after the previous round goes out as without
    coalescing (a message after a quiet spell is not delayed). One owed sooner waits: the
    producer's thread *sleeps* the rest of the interval (the kernel queues whatever arrives
    meanwhile), its loop then turns twice to read what came, and one round wakes every
    consumer owed for all of it. At a steady rate both threads then wake once per ``C``
    instead of once per socket read; each item waits about ``C`` at most (the sleep aims a
    little early; on a busy VM it now and then ends hundreds of µs late). The sleep stops the
    producer's whole loop, so that loop must run nothing but producers, as the client's I/O
    thread does (``AlorClient(coalesce_us=...)``; the client coalesces only with its I/O
    thread).

Blocking consumers
    A thread without an event loop (``alorws.Client``'s streams) takes entries with
    ``get_nowait()`` and, when there is none, blocks in ``wait(timeout)``. Its waiter is a
    held lock instead of a future, published and withdrawn the same way; the producer's wake-up
    releases the lock, so the blocked thread wakes straight from the producer's thread (or the
    batcher's round), without a hop through any event loop.

Cross-thread wake-ups
    A consumer loop woken from another thread gets a pipe of its own on its first such wake-up
    (registered with ``add_reader``; closed when the loop is collected). The producer writes
    one byte with the GIL released and only if none is on its way; the loop reads it and
    resolves every future queued meanwhile in the same turn. ``call_soon_threadsafe`` (still
    used where a loop cannot watch a pipe: Windows) writes with the GIL held on uvloop, so the
    woken thread first waits for the GIL, and takes one more loop turn (two reads on asyncio);
    a cross-thread round trip costs about a third less CPU through the pipe.
"""

from __future__ import annotations

import _thread
import asyncio
import math
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from enum import Enum, StrEnum
from itertools import repeat, starmap
from typing import Any, Final, Generic, Literal, TypeVar, cast

from ..errors import (
    BufferEmpty,
    BufferOverflowError,
    ConfigurationError,
    InvalidState,
    StreamClosed,
)


# BufferEmpty lives in alorws.errors; re-exported here, where get_nowait raises it.
__all__ = [
    "MAX_COALESCE_US",
    "BufferEmpty",
    "Policy",
    "StreamBuffer",
    "WakeBatcher",
    "check_coalesce_us",
]

T = TypeVar("T")


class Policy(StrEnum):
    """How a stream buffer treats items the consumer has not taken yet."""

    #: Conflate to the newest item (state streams: quotes, books, instrument, summaries, risks).
    LATEST = "latest"
    #: Lossless bounded FIFO (orders, own trades, positions, stop orders, all trades, bars).
    QUEUE = "queue"


class _Overflow:
    """In-band marker of one overflow episode; ``dropped`` grows while the episode lasts."""

    __slots__ = ("dropped", "taken")

    def __init__(self) -> None:
        self.dropped = 1
        self.taken = False


class _Empty(Enum):
    EMPTY = 0


_EMPTY: Final = _Empty.EMPTY
#: From this many entries on, ``get_batch`` takes them in one C-level loop (fewer: one by one,
#: which costs less than setting that loop up).
_BULK_TAKE: Final = 16
#: A container not created yet: empty, so ``len()`` and the truth test work on it, and without
#: ``append``, so the first push fails over to :meth:`StreamBuffer._put_slow`.
_NONE: Final[tuple[()]] = ()


#: The most ``coalesce_us`` may be: the I/O thread sleeps that long at a time while a consumer
#: waits, and everything else in its loop (other connections, pings) waits as long.
MAX_COALESCE_US: Final = 10_000

# time.sleep() ends late by the timer slack (50 µs by default on Linux) plus the wake-up itself
# (70-95 µs at the median on a 2-vCPU VM): a nap aims this much early, so that the wake-up it
# puts off stays within coalesce_us.
_NAP_EARLY = 100e-6


def check_coalesce_us(value: object) -> float:
    """``value`` as a coalescing delay in µs (see "Coalescing"), or
    :class:`~alorws.errors.ConfigurationError` saying what is allowed."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_COALESCE_US  # NaN fails this too
    ):
        raise ConfigurationError(
            f"coalesce_us must be a number of microseconds from 0 (wake a waiting consumer at "
            f"once, the default) to {MAX_COALESCE_US:,}, got {value!r}"
        )
    return float(value)


class WakeBatcher:
    """Coalesces the wake-ups owed by pushes made in one event loop (see "Batched wake-ups").

    Args:
        loop: the producers' loop. It may be set later; until it is, buffers wake their
            consumers directly.
        coalesce_us: 0 (the default) wakes once per iteration of the loop, right after it.
            More: at most one round of wake-ups per ``coalesce_us`` microseconds (see
            "Coalescing"). The loop's thread then sleeps between rounds, so it must run
            nothing but producers (the client's I/O thread).

    Raises:
        ConfigurationError: ``coalesce_us`` not a number from 0 to :data:`MAX_COALESCE_US`.
    """

    __slots__ = ("_due", "_last", "_napped", "coalesce", "loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, *, coalesce_us: float = 0
    ) -> None:
        self.loop = loop
        self._due: list[StreamBuffer[Any]] = []
        self.coalesce = check_coalesce_us(coalesce_us) / 1e6  # seconds
        self._last = -math.inf  # when the last round of wake-ups went out (time.monotonic)
        self._napped = False

    def add(self, buffer: StreamBuffer[Any]) -> None:
        """Wake ``buffer``'s consumer once this loop iteration's callbacks are done (or,
        coalescing, at most ``coalesce_us`` later)."""
        if not self._due:
            loop = self.loop
            try:
                if loop is None:
                    raise RuntimeError("no loop yet")
                loop.call_soon(self._flush)
            except RuntimeError:  # no loop yet, or it is closed: wake now
                buffer._wake_due = False
                buffer._wake()
                return
        self._due.append(buffer)

    def _flush(self) -> None:
        if self.coalesce:
            wait = self._last + self.coalesce - time.monotonic()
            if wait > 0 and not self._napped:
                # Too soon after the last round: sleep the rest of the interval (the kernel
                # queues what arrives meanwhile), then give the loop two turns to read it
                # (asyncio runs callbacks scheduled now before its next poll's, uvloop after),
                # then wake once for all of it.
                self._napped = True
                if wait > _NAP_EARLY:
                    time.sleep(wait - _NAP_EARLY)
                assert self.loop is not None
                self.loop.call_soon(self.loop.call_soon, self._flush)
                return
            self._napped = False
            self._last = time.monotonic()
        due, self._due = self._due, []
        for buffer in due:
            buffer._wake_due = False
            buffer._wake()


#: Locks shared by the buffers (a buffer's lock is one of these, by its address), so that
#: 50,000 buffers need not own 50,000 locks: a lock guards a few attribute writes of one
#: buffer, and code holding it never takes another. Reentrant, because an allocation under
#: the lock may run the garbage collector, and a finalizer (a dropped stream's parked
#: consumer) may then take the lock of a buffer that shares it, in the same thread.
_LOCKS: Final = tuple(threading.RLock() for _ in range(64))


_LockType: Final = _thread.LockType


def _lock_for(buffer: object) -> threading.RLock:
    return _LOCKS[(id(buffer) >> 4) % len(_LOCKS)]


def _resolve(fut: asyncio.Future[None]) -> None:
    """Wake a parked consumer (runs in the consumer's loop)."""
    if not fut.done():
        fut.set_result(None)


class _LoopWaker:
    """Wakes the parked consumers of one event loop from other threads.

    A pipe per consumer loop, read by that loop: the producer writes with the GIL released
    (uvloop's ``call_soon_threadsafe`` writes while holding it, so the thread it wakes runs only
    to wait for the GIL), at most one byte per round of wake-ups, and the loop resolves the
    futures in the turn it reads the byte (``call_soon_threadsafe`` takes one more on uvloop and
    two reads on asyncio). A cross-thread round trip costs about a third less CPU than through
    ``call_soon_threadsafe`` (``bench/README.md``).
    """

    __slots__ = ("_armed", "_pending", "_r", "_w")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        r, w = os.pipe()
        try:
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            loop.add_reader(r, self._on_read)
        except BaseException:
            _close_fds(r, w)
            raise
        weakref.finalize(loop, _close_fds, r, w)  # the pipe lives as long as the loop
        self._r, self._w = r, w
        self._pending: deque[asyncio.Future[None]] = deque()
        self._armed = False  # a byte is on its way: later wakes only queue their future

    def wake(self, fut: asyncio.Future[None]) -> None:
        """Resolve ``fut`` in its loop (any thread)."""
        # Queue first, then look at the flag (the reader clears the flag, then drains): either
        # the reader's drain sees this future, or this sees the flag cleared and writes.
        self._pending.append(fut)
        if not self._armed:
            self._armed = True
            try:
                os.write(self._w, b"\0")
            except OSError:  # full (a byte is waiting anyway)
                pass

    def _on_read(self) -> None:
        try:
            os.read(self._r, 4096)
        except OSError:
            pass
        self._armed = False
        pending = self._pending
        while pending:
            _resolve(pending.popleft())


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


#: Each consumer loop's waker, or None where there is none: Windows (select() there takes
#: sockets only; the proactor loop has no add_reader at all).
_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker | None] = (
    weakref.WeakKeyDictionary()
)


def _install_and_resolve(fut: asyncio.Future[None]) -> None:
    """The first cross-thread wake-up of a loop: set up its waker (in that loop), then wake."""
    loop = fut.get_loop()
    if loop not in _wakers:
        try:
            if sys.platform == "win32":
                raise NotImplementedError("no pipes in select() on Windows")
            _wakers[loop] = _LoopWaker(loop)
        except (NotImplementedError, OSError):  # keep call_soon_threadsafe
            _wakers[loop] = None
    _resolve(fut)


class StreamBuffer(Generic[T]):
    """A single-producer/single-consumer buffer for one stream; see the module docstring.

    Args:
        policy: ``Policy.LATEST`` (conflate) or ``Policy.QUEUE`` (lossless FIFO).
        maxsize: the ``QUEUE`` bound, in entries (ignored for ``LATEST``).
        name: names the stream in errors and stats.
        loop: the consumer's event loop; by default the loop of the first ``await`` that waits.
        batcher: coalesce the wake-ups of ``push`` (see "Batched wake-ups"); every ``push``
            must then run in the batcher's loop.
    """

    __slots__ = (
        "__weakref__",
        "_bound",
        "_close_exc",
        "_closed",
        "_delivered",
        "_dq",
        "_drain",
        "_dropped",
        "_ev",
        "_events",
        "_events_out",
        "_batcher",
        "_ignored",
        "_latest",
        "_lock",
        "_loop",
        "_loop_tid",
        "_markers",
        "_max_depth",
        "_overflows",
        "_parks",
        "_pushed",
        "_waiter",
        "_wake_due",
        "_wakeups",
        "maxsize",
        "name",
    )

    def __init__(
        self,
        policy: Policy | str,
        *,
        maxsize: int = 100_000,
        name: str = "",
        loop: asyncio.AbstractEventLoop | None = None,
        batcher: WakeBatcher | None = None,
    ) -> None:
        policy = Policy(policy)
        if maxsize < 1:
            raise ConfigurationError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.name = name
        self._latest = policy is Policy.LATEST
        # Data entries, created by the first push (``()`` until then: most subscriptions of a
        # big client sit idle, and an empty deque costs 760 bytes). QUEUE: a deque, with events
        # and overflow markers in stream order. LATEST: a list holding at most the pending
        # newest item (see "Thread safety and cost").
        self._dq: Any = _NONE
        # LATEST only: pending events, delivered before the pending item (a deque, created by
        # the first event).
        self._ev: Any = _NONE
        self._bound = 1 if self._latest else maxsize
        self._lock = _lock_for(self)
        # The parked consumer: a future in its loop, or a held lock a blocked thread waits on.
        self._waiter: asyncio.Future[None] | _thread.LockType | None = None
        self._loop = loop
        self._loop_tid = 0
        self._closed = False
        self._close_exc: BaseException | None = None
        self._batcher = batcher
        self._wake_due = False  # a batched wake-up is scheduled (producer's loop only)
        # A producer waiting in drained(): its future, the depth it waits for, its thread.
        self._drain: tuple[asyncio.Future[None], int, int] | None = None
        # Producer-side counters (written only by the producer; wakeups under the lock).
        self._pushed = 0
        self._dropped = 0
        # QUEUE: overflow markers in the deque, counted up (before the append) and down (as
        # the consumer takes one) under the lock; 0 lets get_batch take entries in bulk.
        self._markers = 0
        self._events = 0
        self._ignored = 0
        self._wakeups = 0
        # Consumer-side counters (written only by the consumer).
        self._max_depth = 0
        self._delivered = 0
        self._events_out = 0
        self._overflows = 0
        self._parks = 0

    # -- producer (any thread) -------------------------------------------------------------

    def push(self, item: T) -> None:
        """Add one item. Never blocks and never raises (see the policies for what is kept)."""
        # The hot path: one length check, one append (or, LATEST, one store over the pending
        # item), one counter, one attribute read. No lock, no cross-thread call unless the
        # consumer is parked. The check sends a full QUEUE, a LATEST buffer with an item
        # pending (its bound is 1) and a closed buffer (close() sets the bound to -1) to the
        # second branch; the first is the plain append.
        dq = self._dq
        if len(dq) < self._bound:
            try:
                dq.append(item)
            except AttributeError:  # no container yet: the first push creates it
                self._put_slow(item)
        elif self._closed or not self._latest:
            self._reject()
            return
        else:
            try:
                dq[0] = item  # LATEST: replaces the pending item
            except IndexError:  # the consumer took it since the check: nothing pending now
                self._put_slow(item)
        self._pushed += 1
        if self._waiter is not None:
            self._wake_soon()

    def push_many(self, items: Sequence[T]) -> None:
        """Add several items in order, as cheaply as one ``push`` when they fit."""
        k = len(items)
        if not k:
            return
        if self._closed:
            self._ignored += k
            return
        if self._latest:  # only the newest can be pending: the others are conflated at once
            self._pushed += k - 1
            self.push(items[-1])
            return
        dq = self._dq
        if type(dq) is deque and len(dq) + k <= self._bound:
            dq.extend(items)
        else:  # no deque yet (the first push creates it), or not everything fits
            for item in items:
                self.push(item)
            return
        self._pushed += k
        if self._waiter is not None:
            self._wake_soon()

    def push_event(self, event: T) -> None:
        """Add an out-of-band entry: never conflated or dropped, not counted against the bound.

        With ``QUEUE`` it is delivered exactly where it was pushed; with ``LATEST`` before the
        pending item. It comes out of ``get()`` unchanged.
        """
        if self._closed:
            self._ignored += 1
            return
        try:
            (self._ev if self._latest else self._dq).append(event)
        except AttributeError:  # the first entry: no container yet
            self._put_slow(event, event=True)
        self._events += 1
        if self._waiter is not None:
            self._wake()

    def close(self, exc: BaseException | None = None) -> None:
        """End the stream (thread-safe, idempotent); see "Closing" in the module docstring."""
        with self._lock:
            if self._closed:
                return
            self._close_exc = exc
            self._closed = True
            self._bound = -1  # routes every later push to _reject()
        self._wake()
        if self._drain is not None:
            self._wake_drain(force=True)

    def _put_slow(self, item: Any, *, event: bool = False) -> None:
        """The rare path of a push: the first entry (the container is created holding it, then
        published by one store: the consumer sees either no container or the entry), or, for
        LATEST data, the consumer took the pending item between push()'s look and its store
        (the list is empty now: append). Under the lock, as another thread (a backfill event
        from the consumer's loop) may create the container too."""
        with self._lock:
            if event and self._latest:
                if type(self._ev) is tuple:
                    self._ev = deque((item,))
                else:
                    self._ev.append(item)
                return
            dq = self._dq
            if type(dq) is tuple:
                self._dq = [item] if self._latest else deque((item,))
            else:
                dq.append(item)

    def _reject(self) -> None:
        """A push that does not fit: after close it is ignored, else the QUEUE is full."""
        if self._closed:
            self._ignored += 1
            return
        dq = self._dq
        with self._lock:  # drop, and record the loss in-band once per episode
            try:
                last = dq[-1]
            except IndexError:  # the consumer emptied it meanwhile: a new episode
                last = None
            if type(last) is _Overflow and not last.taken:
                last.dropped += 1
            else:
                self._markers += 1  # counted before it is there (see get_batch)
                dq.append(_Overflow())
            self._dropped += 1
        if self._waiter is not None:
            self._wake()

    def _wake_soon(self) -> None:
        """Wake the parked consumer: now (no batcher, or the consumer's own thread), or through
        the batcher once per loop iteration (see "Batched wake-ups")."""
        batcher = self._batcher
        if batcher is None or threading.get_ident() == self._loop_tid:
            self._wake()
        elif not self._wake_due:
            self._wake_due = True
            batcher.add(self)

    def _wake(self) -> None:
        """Claim the parked consumer's waiter, if any, and wake it once."""
        with self._lock:
            fut = self._waiter
            if fut is None:
                return
            self._waiter = None
            self._wakeups += 1
        if type(fut) is _LockType:  # a thread blocked in wait(): release its lock
            fut.release()
            return
        assert isinstance(fut, asyncio.Future)
        if threading.get_ident() == self._loop_tid:
            _resolve(fut)
            return
        loop = fut.get_loop()
        waker = _wakers.get(loop)
        if waker is not None:
            waker.wake(fut)
            return
        # The loop's first wake-up from another thread sets up its waker.
        callback = _resolve if loop in _wakers else _install_and_resolve
        try:
            loop.call_soon_threadsafe(callback, fut)
        except RuntimeError:  # the consumer's loop is closed: nobody is left to wake
            pass

    async def drained(self, below: int) -> None:
        """Wait until fewer than ``below`` entries wait, or the buffer is closed (see
        "Backpressure"). One producer task waits at a time (a second gets
        :class:`~alorws.errors.InvalidState`)."""
        if below < 1:
            raise ConfigurationError(f"below must be at least 1, got {below}")
        fut = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._drain is not None:
                raise InvalidState(f"another task already waits for buffer {self.name!r} to drain")
            # Publish first, then look: a consumer taking meanwhile sees the waiter.
            self._drain = (fut, below, threading.get_ident())
            if self._closed or len(self._dq) + len(self._ev) < below:
                self._drain = None
                return
        try:
            await fut
        finally:
            drain = self._drain
            if drain is not None and drain[0] is fut:  # cancelled: withdraw
                with self._lock:
                    drain = self._drain
                    if drain is not None and drain[0] is fut:
                        self._drain = None

    def _wake_drain(self, *, force: bool = False) -> None:
        """Wake the producer waiting in drained() if the depth fell below its mark (or
        ``force``, at close)."""
        with self._lock:
            drain = self._drain
            if drain is None or (not force and len(self._dq) + len(self._ev) >= drain[1]):
                return
            self._drain = None
        fut, _, tid = drain
        if threading.get_ident() == tid:
            _resolve(fut)
            return
        try:
            fut.get_loop().call_soon_threadsafe(_resolve, fut)
        except RuntimeError:  # the producer's loop is closed
            pass

    # -- consumer (its own loop) -------------------------------------------------------------

    def _next(self) -> T | Literal[_Empty.EMPTY]:
        """The next entry, or _EMPTY; raises at an overflow marker or at the end."""
        ev = self._ev
        if ev:
            self._events_out += 1
            self._delivered += 1
            event = ev.popleft()
            if self._drain is not None:
                self._wake_drain()
            return cast(T, event)
        dq = self._dq
        if dq:
            n = len(dq)  # depth peaks right before a take: this makes max_depth exact
            if n > self._max_depth:
                self._max_depth = n
            x = dq.pop() if self._latest else dq.popleft()
            if self._drain is not None:
                self._wake_drain()
            if type(x) is _Overflow:
                raise self._overflow_error(x)
            self._delivered += 1
            return cast(T, x)
        if not self._closed:
            return _EMPTY
        # Closed: whatever was pushed before close() is visible now (the flag is read after
        # the containers; read them again, as the first push may have created one since).
        if self._ev or self._dq:
            return self._next()
        raise self._close_error()

    def _overflow_error(self, marker: _Overflow) -> BufferOverflowError:
        with self._lock:
            marker.taken = True
            dropped = marker.dropped
            self._markers -= 1
        self._overflows += 1
        return BufferOverflowError(dropped, self.maxsize, self.name)

    def _close_error(self) -> BaseException:
        if self._close_exc is not None:
            return self._close_exc
        where = f" {self.name!r}" if self.name else ""
        return StreamClosed(f"the stream{where} is closed")

    async def _park(self) -> None:
        """Wait until the producer pushes something or the buffer is closed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None:
                raise InvalidState(
                    f"buffer {self.name!r} belongs to another event loop; "
                    "consume it from the loop that created the stream"
                )
            self._loop = loop
        self._loop_tid = threading.get_ident()
        fut = loop.create_future()
        if not self._publish(fut):
            return
        try:
            await fut
        finally:
            self._withdraw(fut)  # cancelled or timed out

    def wait(self, timeout: float | None = None) -> bool:
        """Block the calling thread until an entry waits or the buffer is closed (True), or
        ``timeout`` seconds pass (False); for a consumer without an event loop (see "Blocking
        consumers"). One waiter at a time, as for ``get``."""
        lock = _thread.allocate_lock()
        lock.acquire()
        if not self._publish(lock):
            return True
        try:
            if lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
                return True
        finally:
            self._withdraw(lock)  # timed out or interrupted
        return bool(self._dq or self._ev or self._closed)

    def _publish(self, waiter: asyncio.Future[None] | _thread.LockType) -> bool:
        """Park ``waiter`` as the consumer's, unless an entry (or the end) is already there to
        take (False). Publish first, then look (see the module docstring)."""
        with self._lock:
            if self._waiter is not None:
                raise InvalidState(
                    f"another consumer is already waiting on buffer {self.name!r}; "
                    "one consumer at a time"
                )
            self._waiter = waiter
            if self._dq or self._ev or self._closed:
                self._waiter = None
                return False
            self._parks += 1
        return True

    def _withdraw(self, waiter: asyncio.Future[None] | _thread.LockType) -> None:
        """Take ``waiter`` back if nobody claimed it to wake it."""
        if self._waiter is waiter:
            with self._lock:
                if self._waiter is waiter:
                    self._waiter = None

    def get_nowait(self) -> T:
        """The next entry; :class:`BufferEmpty` if none is waiting (errors as for ``get``)."""
        x = self._next()
        if x is _EMPTY:
            raise BufferEmpty(f"buffer {self.name!r} is empty")
        return x

    async def get(self) -> T:
        """Wait for the next entry (data or event).

        Raises :class:`~alorws.errors.BufferOverflowError` once where items were lost, and
        ``exc``/:class:`~alorws.errors.StreamClosed` after ``close`` once everything is taken.
        """
        while True:
            x = self._next()
            if x is not _EMPTY:
                return x
            await self._park()

    async def get_batch(self, max_items: int = 1000) -> list[T]:
        """Wait for at least one entry, then return all that are waiting, up to ``max_items``.

        A batch stops before an overflow marker or the end; the next call raises.
        """
        if max_items < 1:
            raise ConfigurationError(f"max_items must be at least 1, got {max_items}")
        out = [await self.get()]
        n = 1
        if self._latest:
            # Events first, then the pending item; read again each time, as the first event or
            # item creates its container.
            while n < max_items:
                ev = self._ev
                if ev:
                    out.append(ev.popleft())
                    self._events_out += 1
                else:
                    dq = self._dq
                    if not dq:
                        break
                    out.append(dq.pop())
                n += 1
        else:
            dq = self._dq  # exists: get() took an entry from it
            while n < max_items:
                # Depth first, then the marker count: a marker among the first ``depth``
                # entries was counted before it was appended, so before the depth was read,
                # and only this consumer uncounts it, once it took it. A count of 0 thus
                # proves those entries hold none; they stay first (the producer appends on the
                # right), so taking them in one C-level loop needs no per-item check.
                k = len(dq)
                if k > max_items - n:
                    k = max_items - n
                if k < _BULK_TAKE or self._markers:
                    # Item by item: few (setting the C-level loop up costs more), or a marker
                    # may be among them (stop before it).
                    while n < max_items and dq:
                        x = dq.popleft()
                        if type(x) is _Overflow:
                            dq.appendleft(x)  # the consumer owns the left end: the next call
                            break
                        out.append(x)
                        n += 1
                    break
                out.extend(starmap(dq.popleft, repeat((), k)))
                n += k
        self._delivered += n - 1
        if self._drain is not None:
            self._wake_drain()
        return out

    def __aiter__(self) -> StreamBuffer[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            try:
                x = self._next()
            except StreamClosed:
                if self._closed and self._close_exc is None:
                    raise StopAsyncIteration from None
                raise
            if x is not _EMPTY:
                return x
            await self._park()

    # -- observation (any thread) ----------------------------------------------------------

    @property
    def policy(self) -> Policy:
        """``Policy.LATEST`` or ``Policy.QUEUE``."""
        return Policy.LATEST if self._latest else Policy.QUEUE

    @property
    def depth(self) -> int:
        """Entries waiting (data, events and overflow markers)."""
        return len(self._dq) + len(self._ev)

    @property
    def closed(self) -> bool:
        """True once ``close`` was called (entries may still be waiting)."""
        return self._closed

    @property
    def received(self) -> int:
        """Data items pushed so far, kept or dropped (a progress counter for the producer's
        side: a silence check compares it between two looks instead of timing every push)."""
        return self._pushed + self._dropped

    def stats(self) -> dict[str, int]:
        """Counters (exact when quiet, approximate while the other thread is mid-operation).

        ``pushed`` data items accepted, ``delivered`` entries handed to the consumer (data and
        events), ``conflated`` (LATEST) items replaced before delivery, ``dropped`` (QUEUE) items
        lost to overflow in ``overflows`` reported episodes, ``events`` pushed, ``ignored``
        pushes after close, ``depth`` entries waiting now, ``max_depth`` the most data entries
        ever waiting, ``parks`` times the consumer waited and ``wakeups`` cross-thread (or
        in-loop) wake-ups, never more than ``parks``.
        """
        pending = len(self._dq)
        data_out = self._delivered - self._events_out
        conflated = max(0, self._pushed - data_out - pending) if self._latest else 0
        return {
            "pushed": self._pushed,
            "delivered": self._delivered,
            "conflated": conflated,
            "dropped": self._dropped,
            "overflows": self._overflows,
            "events": self._events,
            "ignored": self._ignored,
            "depth": pending + len(self._ev),
            "max_depth": max(self._max_depth, pending),
            "parks": self._parks,
            "wakeups": self._wakeups,
        }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<StreamBuffer {self.name!r} {self.policy.value} depth={self.depth} {state}>"
