"""Typed subscription streams: what ``client.quotes("SBER")`` and friends return.

A :class:`Stream` is

* **awaitable**: ``await stream`` subscribes and returns once the server confirmed it, or
  raises the server's rejection (:class:`~alorws.errors.ServerRejected`, with ``http_code``
  and ``message``);
* an **async iterator** of normalized models (``Quote``, ``OrderBook``, ``Order``, …), decoded
  in the consumer's loop, never in the reader;
* an **async context manager** that subscribes on entry and unsubscribes on exit.

Iteration survives reconnects: the stream keeps its place while the client restores the
subscription, and account streams are de-duplicated (:mod:`alorws.client.whole`). Connection
events (``disconnected``/``restored``, with the downtime; ``silent``/``resubscribed`` when a
watched subscription went quiet and was subscribed again, docs/protocol.md §9.6) are passed to
``on_event`` callbacks and counted by kind in :attr:`StreamBase.event_counts`; the last
:data:`EVENTS_KEPT` of them are kept in :attr:`StreamBase.events` (a client that lives for
weeks on a flaky network must not keep every one). A ``resubscribed`` stream is made whole like
a restored one: the server's replay is de-duplicated and account streams of orders and fills
fetch the HTTP snapshot.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, Self, TypeVar

import msgspec

from ..errors import BufferEmpty, FrameError, InvalidArgumentError, InvalidState, StreamClosed
from ..lifecycle import StreamState
from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from ..protocol.codec import (
    DATA_HEAD,
    decoder_for,
    frame_decoder_for,
    frame_payload,
    frame_tail,
)
from ..protocol.enums import Format
from ..protocol.market import Bar, InstrumentPatch, OrderBook, Quote, Trade
from ..protocol.requests import SubscriptionRequest
from ._badframes import BadFrameLog
from .buffer import Policy, StreamBuffer, WakeBatcher
from .lane import LaneEvent
from .sources import STREAM_KINDS, StreamMethods
from .whole import StreamFilter


if TYPE_CHECKING:
    from .http import HttpClient

__all__ = [
    "BACKFILL_RETRY_DELAYS",
    "EVENTS_KEPT",
    "STATE_MODELS",
    "STREAM_KINDS",
    "ClientStreams",
    "Stream",
    "StreamBase",
    "bad_frame_error",
    "buffer_bound",
    "decode_inline",
    "default_policy",
]

log = logging.getLogger("alorws.stream")

M = TypeVar("M", bound=Model)


#: State streams: every message is the whole state, so only the newest matters (``latest``).
#: Everything else (instrument patches too: each must be seen to fold them) is delivered
#: losslessly (``queue``).
STATE_MODELS: tuple[type[Model], ...] = (Quote, OrderBook, Summary, Risk, SpectraRisk)

#: How many connection events a stream keeps in ``events`` (the newest); older ones are only
#: counted (``event_counts``).
EVENTS_KEPT = 100
#: Seconds before each new try of an account stream's HTTP snapshot after a restore, when the
#: previous one failed (about half a minute in all, while the stream is open).
BACKFILL_RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 8.0)


def default_policy(model: type[Model], policy: Policy | str | None) -> Policy:
    """``policy`` if given, else the default for ``model``'s stream (see STATE_MODELS)."""
    if policy is not None:
        try:
            return Policy(policy)
        except ValueError:
            raise InvalidArgumentError(
                "policy", f"{policy!r} is not one of {', '.join(p.value for p in Policy)}"
            ) from None
    return Policy.LATEST if issubclass(model, STATE_MODELS) else Policy.QUEUE


def buffer_bound(max_buffer: object, default: int) -> int:
    """A stream's ``max_buffer`` option: ``default`` when not given (None), else an int >= 1
    (0 is not "the default": it is refused, as is anything but an int)."""
    if max_buffer is None:
        return default
    if type(max_buffer) is not int or max_buffer < 1:
        raise InvalidArgumentError("max_buffer", f"must be an int >= 1, got {max_buffer!r}")
    return max_buffer


def decode_inline(
    items: list[Any],
    decode: Callable[[bytes], Any],
    handle: Callable[[Any], M | None],
    *,
    frames: bool,
) -> list[M]:
    """Decode a batch of buffered items: ``bytes`` inline with ``decode`` (whole frames when
    ``frames``, taking their ``.data``; else payloads), everything else (events, a bytes item
    that does not decode) through ``handle``, which returns None for what yields no model."""
    out: list[M] = []
    for item in items:
        if type(item) is bytes:
            try:
                out.append(decode(item).data if frames else decode(item))
                continue
            except Exception:  # any failure (RecursionError too) is this item's: handle() says
                pass
        obj = handle(item)
        if obj is not None:
            out.append(obj)
    return out


#: The fewest items a batch of frames is decoded in one pass (:func:`_decode_frames`) from:
#: below, setting the pass up costs more than it saves (~0.4 µs against ~20 ns an item).
_BULK_DECODE = 32


def _decode_frames(items: list[Any], decode: Callable[[bytes], Any]) -> list[Any] | None:
    """The ``.data`` of every item decoded as a whole frame, in one pass (one type check of
    all in C, then a comprehension over ``map(decode)``: no per-item check and ``try``); None
    if an item is not a frame (``bytes``; not an event, not a payload alone) or does not
    decode. Nothing is reported or delivered from here: on None the caller goes item by item
    (:func:`decode_inline`), which handles events in place and reports each bad frame once."""
    if list(map(type, items)).count(bytes) != len(items):
        return None
    try:
        return [frame.data for frame in map(decode, items)]
    except Exception:  # any failure (RecursionError too): the partial list is dropped
        return None


def bad_frame_error(
    exc: BaseException, item: Any, model: type[Model], fmt: Format, *, frame: bool
) -> FrameError:
    """The :class:`~alorws.errors.FrameError` that describes an item that failed to decode
    with ``exc``: a whole data ``frame`` or a payload alone (its excerpt scrubbed of tokens)."""
    if isinstance(exc, FrameError):
        return exc
    what = "frame" if frame else "payload"
    raw: bytes | str
    if isinstance(item, bytes | str):
        raw = item
    elif isinstance(item, bytearray | memoryview | msgspec.Raw):
        raw = bytes(item)
    else:  # not wire data at all: say what it was
        raw = repr(item)
    return FrameError(f"bad {model.__name__} {what} ({fmt}): {type(exc).__name__}: {exc}", raw)


class _Backfill(NamedTuple):
    """Items fetched over HTTP after a restore, delivered in-band (never dropped)."""

    items: list[Any]


#: Account streams whose server replay is capped (3000 records, docs/protocol.md §12.17): after a
#: restore the HTTP snapshot fills in whatever the capped replay left out (docs/protocol.md §9.5).
_BACKFILLED = (Order, StopOrder, OwnTrade)


class StreamBase(Generic[M], AsyncIterator[M]):
    """What every stream class shares (:class:`Stream`; ``BusStream``): the
    :class:`~alorws.client.sources.DataStream` API. A subclass implements ``subscribe``,
    ``aclose``, ``get`` and ``get_batch``, and passes connection events to :meth:`_notify`.

    Slotted, and what most streams never use (the event window and counts, the callbacks, the
    bad-frame log) is created on first use: a client may hold 50,000 idle streams."""

    __slots__ = (
        "__weakref__",
        "_bad_log",
        "_callbacks",
        "_event_counts",
        "_events",
        "_format",
        "_log",
        "_state",
        "account",
        "bad_payloads",
        "model",
        "name",
        "policy",
        "request",
    )

    def __init__(
        self,
        request: SubscriptionRequest,
        model: type[M],
        *,
        policy: Policy,
        account: bool,
        name: str,
        logger: logging.Logger,
    ) -> None:
        self.request = request
        self.model = model
        self.policy = policy
        self.account = account
        self.name = name
        self._format = Format(getattr(request, "format", Format.SIMPLE))
        # A StreamState (typed str: a subclass may still assign the plain value).
        self._state = StreamState.NEW
        # Created on first use (see the class): events, their counts, callbacks, the log.
        self._events: list[LaneEvent] | None = None
        self._event_counts: Counter[str] | None = None
        self._callbacks: list[Callable[[LaneEvent], object]] | None = None
        self.bad_payloads = 0
        self._log = logger
        self._bad_log: BadFrameLog | None = None

    @property
    def events(self) -> list[LaneEvent]:
        """The last :data:`EVENTS_KEPT` connection events, oldest first."""
        if self._events is None:
            self._events = []
        return self._events

    @property
    def event_counts(self) -> Counter[str]:
        """Every connection event so far, counted by kind (``"disconnected"``: 3, …)."""
        if self._event_counts is None:
            self._event_counts = Counter()
        return self._event_counts

    @property
    def is_open(self) -> bool:
        """True between a confirmed subscribe and the unsubscribe."""
        return self._state == StreamState.OPEN

    def __await__(self) -> Generator[Any, None, Self]:
        return self.subscribe().__await__()

    async def subscribe(self) -> Self:
        """Subscribe (once) and wait for the confirmation; returns the stream."""
        raise NotImplementedError

    def _subscribing(self) -> bool:
        """new -> subscribing (True), or False if the stream is open already."""
        if self._state == StreamState.OPEN:
            return False
        self._begin()
        return True

    def _begin(self) -> None:
        """new -> subscribing; any other state is a misuse."""
        if self._state != StreamState.NEW:
            state = StreamState(self._state).value
            raise InvalidState(f"{self.name}: cannot subscribe a stream that is {state}")
        self._state = StreamState.SUBSCRIBING

    async def aclose(self) -> None:
        """Unsubscribe; iteration ends."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.subscribe()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def on_event(self, callback: Callable[[LaneEvent], object]) -> None:
        """Call ``callback(event)`` (in the consumer's loop) on every connection event
        (``disconnected``, ``restored``; on a direct client also ``silent``,
        ``resubscribed``)."""
        # Checked here: a bad one would only fail, and be logged, at each event.
        if not callable(callback) or inspect.iscoroutinefunction(callback):
            raise InvalidArgumentError(
                "callback",
                f"expected a plain function of the event, got {callback!r}"
                + (" (a coroutine function would never be awaited)" if callable(callback) else ""),
            )
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    def _notify(self, event: LaneEvent) -> None:
        """Keep a connection event (the last EVENTS_KEPT), count it, and pass it to the
        ``on_event`` callbacks."""
        events = self.events
        events.append(event)
        if len(events) > EVENTS_KEPT:
            del events[0]  # a short list: cheaper than a deque, and still a list
        self.event_counts[event.kind] += 1
        for cb in self._callbacks or ():
            try:
                cb(event)
            except Exception:
                self._log.exception("%s: on_event callback failed", self.name)

    def _bad(self, item: Any, exc: BaseException, *, frame: bool) -> None:
        """Count an item that does not decode and log why, rate-limited (the stream goes on)."""
        self.bad_payloads += 1
        error = bad_frame_error(exc, item, self.model, self._format, frame=frame)
        if self._bad_log is None:
            self._bad_log = BadFrameLog(self._log, self.name)
        self._bad_log.report(error, type(exc).__name__)

    # -- consuming ---------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> M:
        try:
            return await self.get()
        except StreamClosed:  # a normal end; failures raise their own exception instead
            raise StopAsyncIteration from None

    async def get(self) -> M:
        """The next message (waiting for it); raises StreamClosed at the end."""
        raise NotImplementedError

    async def get_batch(self, max_items: int = 1000) -> list[M]:
        """Everything available now (at least one message, at most ``max_items``)."""
        raise NotImplementedError


class StreamHost(Protocol):
    """What a stream needs from the client that opened it (an ``AlorClient``)."""

    @property
    def http(self) -> HttpClient:
        """The HTTP API, for account streams' snapshots after a restore."""
        ...

    async def _subscribe(self, stream: Stream[Any]) -> tuple[str, int]: ...

    async def _unsubscribe(self, stream: Stream[Any]) -> None: ...


class Stream(StreamBase[M]):
    """One subscription as a typed async stream. Create it with the client's methods."""

    __slots__ = (
        "_buffer",
        "_client",
        "_decoder",
        "_filter",
        "_frame_decoder",
        "_guid",
        "_home",
        "_lane",
        "_ready",
        "_tasks",
        "backfill",
        "backfilled",
        "silence_timeout",
    )

    def __init__(
        self,
        client: StreamHost,
        request: SubscriptionRequest,
        model: type[M],
        *,
        policy: Policy,
        account: bool,
        max_buffer: int,
        filter: StreamFilter | None = None,
        name: str = "",
        batcher: WakeBatcher | None = None,
        silence_timeout: float | None = None,
    ) -> None:
        super().__init__(
            request,
            model,
            policy=policy,
            account=account,
            name=name or f"{type(request).__name__}",
            logger=log,
        )
        self._client = client
        #: Seconds without data before the subscription is subscribed again (None: never).
        self.silence_timeout = silence_timeout
        # Lanes push whole frames (bytes: envelope and payload decoded in one pass); a replay
        # pushes payloads alone (msgspec.Raw: the data object's JSON).
        self._frame_decoder = frame_decoder_for(model, self._format)
        self._decoder = decoder_for(model, self._format)
        self._filter = filter
        self._buffer: StreamBuffer[Any] = StreamBuffer(
            policy, maxsize=max_buffer, name=self.name, batcher=batcher
        )
        self._guid: str | None = None
        self._lane: int | None = None
        # A restore's HTTP snapshot: the items to deliver, and the task fetching it (created
        # when an account stream is restored).
        self._ready: collections.deque[M] | None = None
        self._tasks: set[asyncio.Task[None] | concurrent.futures.Future[None]] | None = None
        # The loop a restore's HTTP snapshot is fetched in when the consumer is a thread
        # without one (alorws.Client); None: the consumer's running loop.
        self._home: asyncio.AbstractEventLoop | None = None
        #: After a restore, fetch the HTTP snapshot of an orders, stop orders or own trades
        #: stream and deliver what it holds that the stream never had. Off for a consumer
        #: that takes its own snapshot (``Portfolio``): one GET per gap, not two.
        self.backfill = True
        self.backfilled = 0

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def guid(self) -> str | None:
        """The server subscription's guid (shared by de-duplicated streams)."""
        return self._guid

    @property
    def is_open(self) -> bool:
        """True between a confirmed subscribe and the unsubscribe (or the end of the stream:
        its client closed, the server ended it, the recording ran out)."""
        return self._state == StreamState.OPEN and not self._buffer.closed

    async def subscribe(self) -> Self:
        """Subscribe (once) and wait for the server's confirmation; returns the stream."""
        if not self._subscribing():
            return self
        try:
            result = await self._client._subscribe(self)
        except BaseException as exc:
            self._finish(exc)
            raise
        self._finish(result)
        return self

    def _finish(self, result: tuple[str, int] | BaseException) -> None:
        """subscribing -> open with (guid, lane), or closed on an error (the error ends the
        stream: ``get()`` raises it once what was buffered is taken)."""
        if isinstance(result, BaseException):
            self._end(result if isinstance(result, Exception) else None)
        else:
            self._guid, self._lane = result
            self._state = StreamState.OPEN

    def _end(self, exc: BaseException | None = None) -> None:
        """-> closed without unsubscribing (the subscription is gone or never was): the buffer
        ends with ``exc`` (None: a normal end), the backfill stops."""
        self._state = StreamState.CLOSED
        self._buffer.close(exc)
        for task in self._tasks or ():
            task.cancel()

    async def aclose(self) -> None:
        """Unsubscribe (the server subscription ends when its last stream closes)."""
        if self._state == StreamState.CLOSED:
            return
        was_open = self._state == StreamState.OPEN
        self._end()
        if was_open and self._guid is not None and self._lane is not None:
            await self._client._unsubscribe(self)

    # -- consuming ---------------------------------------------------------------------------

    async def get(self) -> M:
        """The next message (waiting for it). Raises StreamClosed at the end of the stream,
        the server's rejection if it failed, BufferOverflowError where messages were lost."""
        if self._state == StreamState.NEW:
            await self.subscribe()
        while True:
            ready = self._ready
            if ready:
                return ready.popleft()
            item = await self._buffer.get()
            obj = self._handle(item)
            if obj is not None:
                return obj

    def _poll(self) -> M | None:
        """The next message if one is waiting, else None, without waiting (a blocking
        consumer's take; it raises as :meth:`get` does)."""
        while True:
            ready = self._ready
            if ready:
                return ready.popleft()
            try:
                item = self._buffer.get_nowait()
            except BufferEmpty:
                return None
            obj = self._handle(item)
            if obj is not None:
                return obj

    async def get_batch(self, max_items: int = 1000) -> list[M]:
        """Everything available now (at least one message, at most ``max_items``)."""
        if self._state == StreamState.NEW:
            await self.subscribe()
        while True:
            out: list[M] = []
            ready = self._ready
            while ready and len(out) < max_items:
                out.append(ready.popleft())
            if out:
                return out
            items = await self._buffer.get_batch(max_items)
            if self._filter is None:  # the hot path (market data)
                decode = self._frame_decoder.decode
                bulk = _decode_frames(items, decode) if len(items) >= _BULK_DECODE else None
                if bulk is None:  # a small batch, an event or a bad frame: item by item
                    bulk = decode_inline(items, decode, self._handle, frames=True)
                out = bulk
            else:
                out = [obj for item in items if (obj := self._handle(item)) is not None]
            if out:
                return out

    async def get_payloads(self, max_items: int = 1000) -> list[bytes | LaneEvent]:
        """Like :meth:`get_batch`, but undecoded: each message's ``data`` JSON as ALOR sent it
        (in the stream's format), with connection events in place. For pass-through (the
        gateway forwards market data without decoding and re-encoding it). Payloads are not
        validated. Streams that are filtered client-side refuse it (:class:`InvalidState`):
        account streams and the de-duplicated ``all_trades``/``bars`` must be decoded."""
        if self._filter is not None:
            raise InvalidState(
                f"{self.name}: this stream is de-duplicated client-side and cannot be read "
                "undecoded; use get_batch()"
            )
        if self._state == StreamState.NEW:
            await self.subscribe()
        while True:
            out: list[bytes | LaneEvent] = []
            tail = frame_tail(self._guid) if self._guid is not None else b"\0"
            cut = -len(tail)
            for item in await self._buffer.get_batch(max_items):
                if type(item) is bytes:
                    if item[:9] == DATA_HEAD and item[cut:] == tail:  # the reader's match
                        out.append(item[8:cut])
                        continue
                    try:
                        out.append(frame_payload(item))
                    except Exception as exc:  # junk (even nested too deep) is the frame's fault
                        self._bad(item, exc, frame=True)
                elif isinstance(item, LaneEvent):
                    self._handle(item)  # recorded and passed to the on_event callbacks
                    out.append(item)
                elif isinstance(item, msgspec.Raw):
                    out.append(bytes(item))
            if out:
                return out

    def _handle(self, item: Any) -> M | None:
        obj: M
        if type(item) is bytes:  # a whole data frame, as a lane pushes it
            try:
                obj = self._frame_decoder.decode(item).data
            except Exception as exc:  # any failure to decode (RecursionError too) skips it
                self._bad(item, exc, frame=True)
                return None
            if self._filter is not None and not self._filter.accept(obj):
                return None
            return obj
        if isinstance(item, _Backfill):
            self._take_backfill(item.items)
            ready = self._ready
            return ready.popleft() if ready else None
        if isinstance(item, LaneEvent):
            # A restore and a re-subscription both replay the server's snapshot: not new.
            if item.kind in ("restored", "resubscribed") and self._filter is not None:
                self._filter.restored()
                if self.backfill and issubclass(self.model, _BACKFILLED):
                    self._start_backfill()
            self._notify(item)
            return None
        try:  # a payload alone (msgspec.Raw), as a replay pushes it
            obj = self._decoder.decode(item)
        except Exception as exc:
            self._bad(item, exc, frame=False)
            return None
        if self._filter is not None and not self._filter.accept(obj):
            return None
        return obj

    def _start_backfill(self) -> None:
        task: asyncio.Task[None] | concurrent.futures.Future[None]
        if self._home is None:
            task = asyncio.get_running_loop().create_task(self._backfill())
        else:  # a blocking consumer's thread: the client's own loop fetches it
            task = asyncio.run_coroutine_threadsafe(self._backfill(), self._home)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _backfill(self) -> None:
        """Fetch the HTTP snapshot of this account stream and queue it in-band; a failed fetch
        is tried again (:data:`BACKFILL_RETRY_DELAYS`) while the stream is open."""
        portfolio = getattr(self.request, "portfolio", None)
        if not isinstance(portfolio, str):
            return
        exchange = getattr(self.request, "exchange", "MOEX")
        for attempt, delay in enumerate((0.0, *BACKFILL_RETRY_DELAYS), start=1):
            if delay:
                await asyncio.sleep(delay)
            if not self.is_open:
                return
            try:
                http = self._client.http
                if issubclass(self.model, Order):
                    items: list[Any] = await http.orders(portfolio, exchange)
                elif issubclass(self.model, StopOrder):
                    items = await http.stop_orders(portfolio, exchange)
                else:
                    items = await http.trades(portfolio, exchange)
            except Exception as exc:  # the stream goes on; the gap stays open until a fetch works
                log.warning(
                    "%s: HTTP snapshot after the restore failed (attempt %d of %d): %s",
                    self.name,
                    attempt,
                    len(BACKFILL_RETRY_DELAYS) + 1,
                    exc,
                )
                continue
            self._buffer.push_event(_Backfill(items))
            return
        log.error(
            "%s: no HTTP snapshot after the restore: what changed while disconnected beyond "
            "the server's replay may be missing from this stream",
            self.name,
        )

    def _take_backfill(self, items: list[Any]) -> None:
        # Only ids never seen: a snapshot copy of a known order may be older than what the
        # stream already delivered, and must not roll it back.
        if self._ready is None:
            self._ready = collections.deque()
        for obj in items:
            if self._filter is None or (self._filter.is_new(obj) and self._filter.accept(obj)):
                self._ready.append(obj)
                self.backfilled += 1

    def stats(self) -> dict[str, Any]:
        """Buffer counters, bad payloads, duplicates filtered, connection events."""
        out: dict[str, Any] = dict(self._buffer.stats())
        out.update(
            name=self.name,
            guid=self._guid,
            lane=self._lane,
            policy=self.policy.value,
            bad_payloads=self.bad_payloads,
            backfilled=self.backfilled,
            duplicates=self._filter.duplicates if self._filter is not None else 0,
            events=sum(self._event_counts.values()) if self._event_counts else 0,
        )
        return out

    def __repr__(self) -> str:
        return f"<Stream {self.name} guid={self._guid} {StreamState(self._state).value}>"


#: The typed stream methods of a source whose streams are :class:`Stream` (``AlorClient``,
#: ``Replay``): each returns ``Stream[<its model>]``.
ClientStreams = StreamMethods[
    Stream[Quote],
    Stream[OrderBook],
    Stream[Bar],
    Stream[Trade],
    Stream[InstrumentPatch],
    Stream[Position],
    Stream[Summary],
    Stream[Risk],
    Stream[SpectraRisk],
    Stream[OwnTrade],
    Stream[Order],
    Stream[StopOrder],
]
