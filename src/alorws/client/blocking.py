# The typed stream methods are StreamMethods' parametrised by BlockingStream, which is not a
# DataStream (it is not awaitable): the one use of bounded type variables in this module.
# mypy: disable-error-code="type-var"
"""``alorws.Client``: the client without ``await``, for scripts, notebooks and threads.

::

    from alorws import Client

    with Client(refresh_token, base_url="http://127.0.0.1:8765") as client:
        print(client.quotes("SBER").latest().last_price)
        ack = client.trading.place_limit(client.portfolios[0], "SBER", "buy", 1, 250.0)
        client.trading.cancel(ack.order_number, client.portfolios[0])

It is a facade over :class:`~alorws.client.AlorClient`, which does all the work: the same
connections, limits, restores after drops and exactly-once orders. Three kinds of thread take
part:

* the client's **I/O thread** (``AlorClient``'s), where every socket is read and written;
* the facade's **own event loop** (thread ``alorws-client``), where the ``AlorClient`` lives as
  an asyncio application would run it: subscribes and unsubscribes start there, and so do the
  order commands (``client.trading``) and HTTP requests (``client.http``);
* the **callers' threads**: any number, at once. A call that needs the loop hands it a
  coroutine and blocks until it is done; it never runs or nests an event loop in the caller's
  thread, so it works in a plain script and in a thread whose own loop is running (a Jupyter or
  IPython cell). Stream data does not go through the facade's loop: a blocked ``get`` waits on
  the stream's buffer, and the I/O thread wakes it directly (:meth:`StreamBuffer.wait
  <alorws.client.buffer.StreamBuffer.wait>`); messages are decoded in the caller's thread.

Calling a blocking method from inside the facade's own loop (from an async hook of the
underlying ``AlorClient``) would wait for itself: it raises
:class:`~alorws.errors.InvalidState` instead.

The surface is generated from the async one: the twelve typed stream methods are
:class:`~alorws.client.sources.StreamMethods`' and :meth:`Client.stream` makes a
:class:`BlockingStream`; ``client.trading``, ``client.http`` and every other name of
``AlorClient`` are the async objects behind :class:`Blocking`, which runs each coroutine method
to completion (an async iterator becomes an iterator). They return the async side's objects
(``OrderAck``, models) and raise its exceptions (``OrderRejected``, ``OrderStatusUnknown``, …).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import math
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, Self, TypeVar, Unpack

from ..errors import (
    BufferOverflowError,
    InvalidArgumentError,
    InvalidState,
    StreamClosed,
    StreamTimeout,
)
from ..lifecycle import StreamState
from ..protocol import requests as rq
from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from ..protocol.enums import Format
from ..protocol.market import Bar, InstrumentPatch, OrderBook, Quote, Trade
from .buffer import Policy
from .client import AlorClient
from .hooks import ConnectionEvent, ConnectionHooks, Hook, run_hooks
from .lane import LaneEvent
from .runtime import loop_thread
from .sources import StreamMethods, StreamOptions, takes_options
from .streams import Stream


__all__ = ["Blocking", "BlockingIterator", "BlockingStream", "Client"]

log = logging.getLogger("alorws.blocking")
_hooks_log = logging.getLogger("alorws.hooks")

M = TypeVar("M", bound=Model)
T = TypeVar("T")

#: How long close() waits for a callback thread to finish the callback it is in.
_JOIN_TIMEOUT = 10.0
#: Guards the start of streams' callback threads.
_ON_LOCK = threading.Lock()


class _Loop:
    """The facade's event loop, in a thread of its own; callers block on its futures."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()  # submissions against stop()
        self._inflight: set[concurrent.futures.Future[Any]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            raise InvalidState("the Client is not started: use `with Client(...) as client:`")
        return loop

    def start(self) -> None:
        ready, self._thread = loop_thread(self._name)
        self._loop = ready.result()

    def in_loop(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``await fn(*args, **kwargs)`` in the loop; block until done and return or raise
        its outcome. Interrupting the wait (Ctrl-C) cancels the coroutine."""
        loop = self.loop
        if self.in_loop():
            raise InvalidState(
                "a blocking Client call from the client's own event loop would wait for itself; "
                "call it from another thread"
            )

        async def call() -> T:
            return await fn(*args, **kwargs)

        with self._lock:
            if self._closed:
                raise InvalidState("the Client is closed; create a new one")
            fut = asyncio.run_coroutine_threadsafe(call(), loop)
            self._inflight.add(fut)
        try:
            return fut.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise InvalidState("the Client was closed during the call") from None
            raise
        except BaseException:
            fut.cancel()  # KeyboardInterrupt: the coroutine stops too (a no-op once done)
            raise
        finally:
            with self._lock:
                self._inflight.discard(fut)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` (a plain function that needs the running loop) in the loop."""

        async def wrapped() -> T:
            return fn(*args)

        return self.run(wrapped)

    def stop(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._inflight)
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def finish() -> None:  # what is left (a call cut short) ends cancelled
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            asyncio.get_running_loop().stop()

        with contextlib.suppress(RuntimeError):  # already stopped
            asyncio.run_coroutine_threadsafe(finish(), loop)
        if thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)
        for fut in pending:  # submitted but never run: release their callers
            fut.cancel()


class _HookThread:
    """Runs the blocking client's connection hooks, in order, in one worker thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[list[Hook], ConnectionEvent] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def put(self, hooks: list[Hook], event: ConnectionEvent) -> None:
        with self._lock:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name="alorws-client-hooks", daemon=True
                )
                self._thread.start()
        self._queue.put((hooks, event))

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            hooks, event = item
            for hook in hooks:  # one by one: a hook's SystemExit must not skip the others
                try:
                    run_hooks([hook], event)
                except BaseException:  # nor end this thread silently
                    _hooks_log.exception("%s hook %r failed", event.kind, hook)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            if thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT)


class Blocking:
    """An asyncio object's blocking face: calling one of its coroutine methods runs it in the
    client's event loop and blocks until it is done, returning (or raising) what it does; a
    method that returns an async iterator returns a :class:`BlockingIterator`; other methods
    run in that loop too, and attributes that are not methods are read as they are.

    ``client.trading`` (an :class:`~alorws.client.OrderClient`) and ``client.http`` (an
    :class:`~alorws.client.HttpClient`) are ones: ``client.http.history("SBER", 60, a, b)``.
    ``help()`` shows each method's own signature and docstring."""

    def __init__(self, target: Any, loop: _Loop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr  # read each time: it may change (a state, a counter)
        method = _blocking(attr, self._loop)
        self.__dict__[name] = method
        return method

    def __dir__(self) -> list[str]:
        return sorted(n for n in dir(self._target) if not n.startswith("_"))

    def __repr__(self) -> str:
        return f"<blocking {self._target!r}>"


def _blocking(fn: Callable[..., Any], loop: _Loop) -> Callable[..., Any]:
    """``fn`` as a blocking call in ``loop`` (see :class:`Blocking`)."""

    async def invoke(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = loop.run(invoke, *args, **kwargs)
        if isinstance(result, AsyncIterator):
            return BlockingIterator(result, loop)
        return result

    return call


class BlockingIterator(Iterator[T]):
    """An async iterator walked from a blocking caller: each ``next()`` takes one step in the
    client's loop (``client.http.iter_history(...)``). ``close()`` (or leaving ``with``) ends
    it early."""

    def __init__(self, source: AsyncIterator[T], loop: _Loop) -> None:
        self._source = source
        self._loop = loop

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        try:
            return self._loop.run(self._source.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """End the iteration (an async generator's ``aclose``)."""
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            self._loop.run(aclose)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _deadline(timeout: object) -> float | None:
    """The monotonic deadline of a ``timeout`` in seconds (None or infinity: no deadline).
    A timeout that is not a number >= 0 raises here, before anything is taken."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise InvalidArgumentError(
            "timeout", f"must be None or a number of seconds >= 0, got {timeout!r}"
        )
    if timeout == math.inf:
        return None
    return time.monotonic() + float(timeout)


class _Underneath(Generic[T]):
    """A read-only attribute of the async stream underneath a :class:`BlockingStream`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: BlockingStream[Any] | None, owner: type | None = None) -> T:
        if obj is None:
            raise AttributeError(self._name)
        value: T = getattr(obj._stream, self._name)
        return value


class BlockingStream(Generic[M]):
    """One subscription, read without ``await`` (``client.quotes("SBER")``): subscribed when
    made (the server's rejection is raised right there), iterable, a context manager that
    unsubscribes on exit.

    * ``for q in stream`` yields models until the stream ends (it raises what ended it if that
      was a failure, :class:`~alorws.errors.BufferOverflowError` where a ``queue`` stream lost
      messages, and may be started again after it);
    * :meth:`get` waits for the next message (``timeout=`` seconds at most, then
      :class:`~alorws.errors.StreamTimeout`), :meth:`get_batch` for one and takes what else
      waits, :meth:`latest` returns the newest without waiting (once the first came);
    * :meth:`on` runs a callback for every message in a thread of the stream's own.

    Several threads may take from one stream: each message goes to one of them. The guarantees
    are those of the async :class:`~alorws.client.Stream` underneath (:attr:`stream`): the
    place is kept across restores, account streams are de-duplicated, and connection events
    come to :meth:`on_event` callbacks, in the thread that takes the next message.
    """

    def __init__(self, stream: Stream[M], client: Client) -> None:
        self._stream = stream
        self._client = client
        self._take = threading.Lock()  # one taker at a time (the buffer has one consumer)
        self._last: M | None = None
        self._callbacks: list[Callable[[M], object]] = []
        self._worker: threading.Thread | None = None

    # -- what it is -------------------------------------------------------------------------

    @property
    def stream(self) -> Stream[M]:
        """The async stream underneath (its counters, events and guid)."""
        return self._stream

    #: A short name for logs and stats (``"quotes SBER"``).
    name: _Underneath[str] = _Underneath()
    #: The model each message decodes into.
    model: _Underneath[type[Any]] = _Underneath()
    #: What is subscribed.
    request: _Underneath[rq.SubscriptionRequest] = _Underneath()
    #: ``latest`` (only the newest waits) or ``queue`` (lossless).
    policy: _Underneath[Policy] = _Underneath()
    #: True until the stream is closed or ends.
    is_open: _Underneath[bool] = _Underneath()
    #: The last connection events (``disconnected``, ``restored``, …), oldest first.
    events: _Underneath[list[LaneEvent]] = _Underneath()

    def stats(self) -> dict[str, Any]:
        """Buffer counters, bad payloads, duplicates filtered, connection events."""
        return self._stream.stats()

    def __repr__(self) -> str:
        return f"<BlockingStream {self.name} {'open' if self.is_open else 'closed'}>"

    # -- taking -----------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> M:
        """The next message, waiting ``timeout`` seconds at most (None: as long as it takes).

        Raises :class:`~alorws.errors.StreamTimeout` when the time runs out (the stream goes
        on), :class:`~alorws.errors.StreamClosed` once the stream is closed and everything
        was taken, what ended the stream if it failed, and
        :class:`~alorws.errors.BufferOverflowError` once where a ``queue`` stream lost
        messages."""
        if timeout is None:  # the common case, kept short: a plain lock, no deadline
            with self._take:
                return self._next(None, None)
        deadline = _deadline(timeout)
        with self._taking(deadline, timeout):
            return self._next(deadline, timeout)

    def get_batch(self, max_items: int = 1000, timeout: float | None = None) -> list[M]:
        """Wait for one message (as :meth:`get`), then take what else waits, ``max_items`` in
        all at most."""
        if type(max_items) is not int or max_items < 1:
            raise InvalidArgumentError("max_items", f"must be an int >= 1, got {max_items!r}")
        deadline = _deadline(timeout)
        with self._taking(deadline, timeout):
            out = [self._next(deadline, timeout)]
            poll = self._stream._poll
            while len(out) < max_items:
                try:
                    obj = poll()
                except Exception:
                    break  # the end or an overflow: the next call raises it
                if obj is None:
                    break
                out.append(obj)
            self._last = out[-1]
            return out

    def latest(self, timeout: float | None = None) -> M:
        """The newest message, without waiting once one came: takes every message waiting and
        returns the newest (for a ``queue`` stream the ones skipped are not delivered again),
        or else the last one taken before. Before the first message it waits for it as
        :meth:`get` does (``timeout``)."""
        deadline = _deadline(timeout)
        with self._taking(deadline, timeout):
            poll = self._stream._poll
            newest = self._last
            while (obj := poll()) is not None:
                newest = obj
            if newest is None:
                newest = self._next(deadline, timeout)
            self._last = newest
            return newest

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> M:
        try:
            return self.get()
        except StreamClosed:  # a normal end; failures raise their own exception
            raise StopIteration from None

    @contextlib.contextmanager
    def _taking(self, deadline: float | None, timeout: float | None) -> Iterator[None]:
        wait = -1.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._take.acquire(timeout=wait):
            raise StreamTimeout(
                f"{self.name}: nothing taken within {timeout} s (another thread was taking "
                "from this stream)"
            )
        try:
            yield
        finally:
            self._take.release()

    def _next(self, deadline: float | None, timeout: float | None) -> M:
        stream = self._stream
        buffer = stream._buffer
        while True:
            obj = stream._poll()
            if obj is not None:
                self._last = obj
                return obj
            if deadline is None:
                buffer.wait(None)
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not buffer.wait(left):
                if stream._ready or buffer.depth or buffer.closed:
                    continue  # it came just now: take it
                raise StreamTimeout(f"{self.name}: no message within {timeout} s")

    # -- callbacks ----------------------------------------------------------------------------

    def on(self, callback: Callable[[M], object]) -> Self:
        """Call ``callback(message)`` for every message from now on, in a thread of this
        stream's own (``alorws-on <name>``; never the I/O thread), one message at a time, in
        order. A callback that raises is logged (``alorws.blocking``) and the stream goes on;
        an overflow of a ``queue`` stream is logged too. The thread takes every message, so
        do not also iterate the stream; it ends when the stream does. Several callbacks run
        one after the other for each message."""
        if not callable(callback):
            raise InvalidArgumentError(
                "callback", f"expected a callable, got {type(callback).__name__}"
            )
        if inspect.iscoroutinefunction(callback):  # the callback thread has no loop to run it
            raise InvalidArgumentError(
                "callback",
                f"{callback!r} is a coroutine function; callbacks run in a thread without an "
                "event loop: pass a plain function",
            )
        with _ON_LOCK:  # one worker, however many threads add callbacks at once
            self._callbacks.append(callback)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run_callbacks, name=f"alorws-on {self.name}", daemon=True
                )
                self._worker.start()
        return self

    def on_event(self, callback: Callable[[LaneEvent], object]) -> Self:
        """Call ``callback(event)`` on every connection event of the stream (``disconnected``,
        ``restored``, ``silent``, ``resubscribed``), in the thread that takes the next
        message."""
        self._stream.on_event(callback)
        return self

    def _run_callbacks(self) -> None:
        while True:
            try:
                obj = self.get()
            except StreamClosed:
                return
            except BufferOverflowError as exc:
                log.warning("%s: %s", self.name, exc)
                continue
            except Exception as exc:
                log.warning("%s: the stream ended: %r", self.name, exc)
                return
            for callback in list(self._callbacks):
                try:
                    callback(obj)
                except BaseException:  # SystemExit too: it would end this thread silently
                    log.exception("%s: callback %r failed", self.name, callback)

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Unsubscribe (idempotent); iteration ends, a blocked :meth:`get` raises
        :class:`~alorws.errors.StreamClosed`, the callback thread finishes."""
        if self._stream._state != StreamState.CLOSED:
            with contextlib.suppress(InvalidState):  # the client closed: nothing to undo
                self._client._loop.run(self._stream.aclose)
        self._stream._end()
        self._join()

    def _join(self) -> None:
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(_JOIN_TIMEOUT)
            if worker.is_alive():
                log.warning("%s: a callback still runs after %s s", self.name, _JOIN_TIMEOUT)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The typed stream methods come from StreamMethods, parametrised by BlockingStream (see the
# mypy comment at the top).
_BlockingStreams = StreamMethods[
    BlockingStream[Quote],
    BlockingStream[OrderBook],
    BlockingStream[Bar],
    BlockingStream[Trade],
    BlockingStream[InstrumentPatch],
    BlockingStream[Position],
    BlockingStream[Summary],
    BlockingStream[Risk],
    BlockingStream[SpectraRisk],
    BlockingStream[OwnTrade],
    BlockingStream[Order],
    BlockingStream[StopOrder],
]


class Client(_BlockingStreams, ConnectionHooks):
    """A connection to one ALOR account, without ``await`` (see :mod:`alorws.client.blocking`).

    ``with Client(refresh_token, base_url=...) as client:`` (or ``client = Client(...).start()``
    and ``client.close()``, say in a notebook). It takes the arguments of
    :class:`~alorws.client.AlorClient`, passed on as they are; ``refresh_token`` None leaves
    finding the token to ``AlorClient``.

    * Streams: ``quotes``, ``order_book``, ``bars``, ``all_trades``, ``instrument``,
      ``positions``, ``summaries``, ``risks``, ``spectra_risks``, ``own_trades``, ``orders``,
      ``stop_orders`` and :meth:`stream` return a subscribed :class:`BlockingStream`.
    * ``client.trading``: orders (``place_limit``, ``place_market``, ``place_stop``,
      ``place_stop_limit``, ``modify_*``, ``cancel``, ``send``), each returning the
      :class:`~alorws.client.OrderAck` or raising as the async ``OrderClient`` does.
    * ``client.http``: every method of :class:`~alorws.client.HttpClient`.
    * Every other name of ``AlorClient`` (``portfolios``, ``stats()``, ``drop_connections()``,
      …), coroutines run to completion.
    * ``on_connect``, ``on_disconnect``, ``on_restore``: connection hooks, run in a worker
      thread of the client's (:mod:`alorws.client.hooks`).

    Any number of threads may use one client at once. After :meth:`close` every call raises
    :class:`~alorws.errors.InvalidState`.
    """

    def __init__(self, refresh_token: str | None = None, **options: Any) -> None:
        # AlorClient checks every argument here, in the caller's thread; it needs no loop yet.
        # The token goes on as given: where a missing one comes from is AlorClient's business.
        token: Any = refresh_token
        self._async = AlorClient(token, **options)
        self._loop = _Loop("alorws-client")
        self._init_hooks()
        self._hook_thread = _HookThread()
        self._streams: weakref.WeakSet[BlockingStream[Any]] = weakref.WeakSet()
        self._facades: dict[str, Blocking] = {}
        self._state = "new"
        for register in (self._async.on_connect, self._async.on_disconnect):
            register(self._emit_connection)
        self._async.on_restore(self._emit_connection)

    def __repr__(self) -> str:
        return f"<Client {self._state} {self._async!r}>"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the client (the event loop thread, the I/O thread, the first token); returns
        it. Raises what ``AlorClient.start`` raises (a refused token, say)."""
        if self._state != "new":
            raise InvalidState(f"cannot start a Client that is {self._state}")
        self._state = "starting"
        self._loop.start()
        try:
            self._loop.run(self._async.start)
        except BaseException:
            self._loop.stop()
            self._state = "closed"
            raise
        self._state = "open"
        return self

    def close(self) -> None:
        """End every stream, close the connections, stop the threads (idempotent)."""
        if self._state in ("closed", "closing"):
            return
        was = self._state
        self._state = "closing"
        try:
            if was != "new":
                with contextlib.suppress(InvalidState):
                    self._loop.run(self._async.aclose)
        finally:
            self._loop.stop()
            for stream in list(self._streams):
                stream._stream._end()
                stream._join()
            self._hook_thread.stop()
            self._state = "closed"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- streams ------------------------------------------------------------------------------

    @takes_options(StreamOptions)
    def stream(  # type: ignore[override]
        self, request: rq.SubscriptionRequest, **options: Unpack[StreamOptions]
    ) -> BlockingStream[Any]:
        """The subscribed blocking stream of any subscription request (see
        ``AlorClient.stream`` for the options). Raises the server's rejection, or
        ``InvalidState`` once the client is closed."""
        loop = self._loop

        async def subscribe() -> Stream[Any]:
            stream = self._async.stream(request, **options)
            stream._home = loop.loop  # a restore's snapshot is fetched in this loop
            await stream.subscribe()
            return stream

        blocking = BlockingStream(self._run(subscribe), self)
        self._streams.add(blocking)
        return blocking

    def _default_format(self) -> Format:
        return self._async.format

    # -- orders, HTTP and the rest of AlorClient -----------------------------------------------

    @property
    def trading(self) -> Blocking:
        """Orders over ``/cws`` (``AlorClient.trading``), blocking:
        ``client.trading.place_limit(portfolio, "SBER", "buy", 1, price=310.5)``."""
        return self._facade("trading")

    @property
    def http(self) -> Blocking:
        """The HTTP API (``AlorClient.http``), blocking: ``client.http.history(...)``."""
        return self._facade("http")

    def _facade(self, name: str) -> Blocking:
        facade = self._facades.get(name)
        if facade is None:
            # Made in the loop: the async objects bind to the loop they are created in.
            target = self._run(lambda: _value(getattr(self._async, name)))
            facade = self._facades.setdefault(name, Blocking(target, self._loop))
        return facade

    @property
    def portfolios(self) -> tuple[str, ...]:
        """Portfolio ids from the access token's ``portfolios`` claim."""
        try:
            return self._async.portfolios
        except InvalidState:
            raise self._not_open() from None

    def stats(self) -> dict[str, Any]:
        """``AlorClient.stats()`` (safe to call any time)."""
        return self._async.stats()

    def __getattr__(self, name: str) -> Any:
        # Every other public name of AlorClient, blocking (see Blocking).
        if name.startswith("_"):
            raise AttributeError(name)
        if name in _NOT_FORWARDED:
            raise AttributeError(f"Client has no {name!r}: {_NOT_FORWARDED[name]}")
        try:
            attr = getattr(self._async, name)
        except InvalidState:  # AlorClient's words name `async with`: say what fits here
            if self._state == "open":
                raise
            raise self._not_open() from None
        return _blocking(attr, self._loop) if callable(attr) else attr

    def __dir__(self) -> list[str]:
        mine = set(super().__dir__())
        return sorted(mine | {n for n in dir(self._async) if not n.startswith("_")})

    def _run(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self._state != "open":
            raise self._not_open()
        return self._loop.run(fn)

    def _not_open(self) -> InvalidState:
        """The error of a call on a Client that is not open, in the facade's own words."""
        return InvalidState(
            f"the Client is {self._state}: use `with Client(...) as client:`"
            if self._state == "new"
            else f"the Client is {self._state}; create a new one"
        )

    # -- hooks ----------------------------------------------------------------------------------

    def _add_hook(self, kind: str, hook: Hook) -> Callable[[], None]:
        # The hook thread has no event loop: a coroutine function would never run.
        if inspect.iscoroutinefunction(hook):
            raise InvalidArgumentError(
                "hook",
                f"{hook!r} is a coroutine function; Client runs hooks in a thread without an "
                "event loop: pass a plain function (coroutine hooks are for AlorClient)",
            )
        return super()._add_hook(kind, hook)

    def _deliver(self, hooks: list[Hook], event: ConnectionEvent) -> None:
        self._hook_thread.put(hooks, event)


#: AlorClient's names that make no sense on the facade, and what to use instead.
_NOT_FORWARDED = {
    "aclose": "use close()",
    "subscribe_all": "each stream method subscribes its stream",
}


async def _value(value: T) -> T:
    return value


# help(Client) shows AlorClient's arguments (refresh_token optional here).
def _signature() -> inspect.Signature:
    base = inspect.signature(AlorClient.__init__)
    params = [
        p.replace(default=None, annotation="str | None") if p.name == "refresh_token" else p
        for p in base.parameters.values()
    ]
    return base.replace(parameters=params)


Client.__init__.__signature__ = _signature()  # type: ignore[attr-defined]
