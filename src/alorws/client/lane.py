"""A lane: one ``/ws`` connection that reconnects forever and restores its subscriptions.

Everything here runs in the I/O loop (:mod:`alorws.client.runtime`). The reader is a picows
listener that hands over the messages of each socket read at once; the lane's only work per
frame is: find the subscription, push the whole frame into its buffer (consecutive frames of one
subscription in one push). A data frame in the server's compact shape (``{"data":{…},"guid":"…"}``,
docs/protocol.md §3.4) is matched by its tail alone, one slice and one dict lookup, without parsing;
anything else is routed by :func:`alorws.protocol.route`. Consumers decode later, in their own loop,
envelope and payload in one pass (:func:`alorws.protocol.codec.frame_decoder_for`), so a frame
nobody takes (a conflated ``latest`` item) is never parsed at all.

The lane is a thin asyncio shell: every decision about the connection is taken by its
:class:`~alorws.protocol.data_connection.DataConnection`, which documents the rules (restore with
the original guids, the 401 re-send budget, ping probing, silent subscriptions subscribed again,
docs/protocol.md §9.5-9.6). The lane feeds it status replies, pongs and the clock, writes the
frames it asks for with a token from the token manager, and turns its events into
:class:`LaneEvent` items, confirmations and failures for the consumers. Reconnects go through
:func:`~alorws.client._ws.reconnecting` (jittered backoff, reset once a connection was stable).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import msgspec
import picows

from ..errors import (
    AlorError,
    AuthError,
    ConnectionClosed,
    ServerLimitExceeded,
    scrub,
)
from ..protocol.backoff import Backoff
from ..protocol.codec import DataMessage, StatusReply, TailTable, route
from ..protocol.data_connection import (
    Close,
    Confirmed,
    DataConnection,
    DataEvent,
    Disconnected,
    Failed,
    Restored,
    Resubscribed,
    SendPing,
    Silent,
    Unsubscribed,
)
from ..protocol.reconnect import ReconnectPolicy, Retry
from ..protocol.registry import Subscription, SubscriptionRegistry
from ..protocol.requests import SubscriptionRequest
from ._badframes import BadFrameLog
from ._ws import (
    BATCH_LISTENER,
    close_transport,
    dispatch_frames,
    reconnecting,
    send_or_drop,
    settle,
    ws_connect,
)
from .endpoints import check_url
from .hooks import ConnectionEvent
from .proxy import Proxy


__all__ = ["Confirmations", "Lane", "LaneEvent", "LaneKind", "LaneState", "Sink", "Tap"]

log = logging.getLogger("alorws.lane")


class LaneKind(enum.StrEnum):
    """What a lane carries: market data and account events never share a connection."""

    MARKET = "market"
    ACCOUNT = "account"


class LaneState(enum.StrEnum):
    """Connection state of a lane."""

    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    BACKOFF = "backoff"
    CLOSED = "closed"


#: ``tap(recv_time_ns, lane_id, frames)``: see :meth:`AlorClient.add_tap`.
Tap = Callable[[int, int, list[bytes]], None]


class Sink(Protocol):
    """Where a subscription's data frames go (a buffer, or a fan-out to several)."""

    def push(self, item: bytes) -> None: ...

    def push_many(self, items: list[bytes]) -> None: ...

    def push_event(self, event: object) -> None: ...

    def close(self, exc: BaseException | None = None) -> None: ...

    @property
    def received(self) -> int:
        """Data items pushed so far (the silence check compares it between looks)."""
        ...


class LaneEvent(msgspec.Struct, frozen=True):
    """A connection event delivered in-band to the streams of a lane.

    ``kind`` is one of:

    * ``"disconnected"`` (every stream of the lane): data may be missing from now on;
      ``reason`` says why;
    * ``"restored"`` (every stream of the lane): subscriptions were re-sent; ``downtime`` is
      seconds since the disconnect;
    * ``"silent"`` (one subscription's streams): nothing arrived for longer than its silence
      timeout while the connection lives (docs/protocol.md §9.6); ``downtime`` is how long, and the
      client is subscribing it again;
    * ``"resubscribed"`` (the same streams): the server confirmed the new subscription, under
      the same guid; ``downtime`` is seconds since its last data. Data may be missing between
      the two, as after a restore.
    """

    kind: str
    lane: int
    reason: str = ""
    downtime: float = 0.0


class Fanout:
    """Delivers one server subscription to several consumers (de-duplicated requests)."""

    __slots__ = ("sinks",)

    def __init__(self, *sinks: Sink) -> None:
        self.sinks: list[Sink] = list(sinks)

    def push(self, item: bytes) -> None:
        """Push to every consumer."""
        for sink in self.sinks:
            sink.push(item)

    def push_many(self, items: list[bytes]) -> None:
        """Push several items, in order, to every consumer."""
        for sink in self.sinks:
            sink.push_many(items)

    def push_event(self, event: object) -> None:
        """Push an event to every consumer."""
        for sink in self.sinks:
            sink.push_event(event)

    def close(self, exc: BaseException | None = None) -> None:
        """Close every consumer."""
        for sink in self.sinks:
            sink.close(exc)

    @property
    def received(self) -> int:
        """The most any consumer was given (they all get every push from when they joined)."""
        return max((sink.received for sink in self.sinks), default=0)


class Confirmations:
    """The server's answers to a batch of new subscriptions on one lane, awaited as one future
    (instead of a future, a task and a timeout per subscription).

    Each guid of the batch is answered once: confirmed, or refused with its error (kept in
    :attr:`errors`). :attr:`done` completes when every one is; the guids still in
    :attr:`pending` then (after a timeout) got no answer.
    """

    __slots__ = ("_followers", "done", "errors", "pending")

    def __init__(self, guids: Iterable[str]) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: guid -> why it was refused (a ServerRejected, the lane's end, a cancellation).
        self.errors: dict[str, BaseException] = {}
        #: The guids not answered yet.
        self.pending = set(guids)
        # Futures of streams that share a subscription of the batch from outside it.
        self._followers: dict[str, list[asyncio.Future[None]]] | None = None
        if not self.pending:
            self.done.set_result(None)

    def settle(self, guid: str, error: BaseException | None = None) -> None:
        """``guid`` was answered (``error`` None: confirmed); a second answer is ignored."""
        pending = self.pending
        if guid not in pending:
            return
        pending.discard(guid)
        if error is not None:
            self.errors[guid] = error
        if self._followers is not None:
            for future in self._followers.pop(guid, ()):
                _resolve(future, error)
        if not pending and not self.done.done():
            self.done.set_result(None)

    def follow(self, guid: str) -> asyncio.Future[None]:
        """A future of its own for ``guid``'s answer (a stream joining it from outside)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._followers is None:
            self._followers = {}
        self._followers.setdefault(guid, []).append(future)
        return future

    def cancel(self) -> None:
        """The lane is closing: nobody gets an answer."""
        self.done.cancel()
        for futures in (self._followers or {}).values():
            for future in futures:
                future.cancel()
        self._followers = None


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    elif isinstance(error, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(error)


class Lane:
    """One reconnecting ``/ws`` connection and the subscriptions living on it.

    Created and driven by the client's lane pool; every method runs in the I/O loop. The rules
    are in :class:`~alorws.protocol.data_connection.DataConnection`; this is their asyncio
    shell, and it stays one class (about 40 methods: the picows callbacks, the handles the pool
    uses, the drivers of the rules, the reconnect loop and the taps) because the reader's path
    per frame (:meth:`_on_frames`) reads the transport, the sinks and the taps directly:
    splitting them into objects of their own would add an attribute hop or a call per frame.
    """

    def __init__(
        self,
        lane_id: int,
        kind: LaneKind,
        url: str,
        registry: SubscriptionRegistry[SubscriptionRequest, int],
        token: Callable[[], Any],
        refresh_token: Callable[[], Any],
        *,
        ssl_context: ssl.SSLContext | None = None,
        backoff: Backoff | None = None,
        ping_interval: float = 5.0,
        ping_timeout: float = 5.0,
        connect_timeout: float = 10.0,
        proxy: Proxy | None = None,
    ) -> None:
        self.id = lane_id
        self.kind = kind
        # Refused here, not at each reconnect (which would retry a bad URL forever).
        self.url = check_url(url, "WebSocket URL", schemes=("wss", "ws"))
        self._registry = registry
        self._token = token  # async () -> current access token
        self._refresh = refresh_token  # async () -> force a refresh, returns the new token
        self._ssl = ssl_context
        self._proxy = proxy
        self._backoff = backoff or Backoff()
        self._connect_timeout = connect_timeout
        # Every rule of the connection lives here; the lane only does the I/O.
        self._conn = DataConnection(
            lane_id,
            registry,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            step_timeout=connect_timeout,
        )

        self.state = LaneState.IDLE
        # Taps (see add_tap): the frames of the current I/O-loop iteration, handed over once
        # per iteration; None while there is no tap (the reader then skips it all).
        self._taps: list[Tap] = []
        self._tapped: list[bytes] | None = None
        self._tapped_ns = 0
        self._transport: picows.WSTransport | None = None
        self._sinks: TailTable[Sink] = TailTable()
        # guid -> what waits for its confirmation: a subscribe's future, or its batch's.
        self._waiters: dict[str, asyncio.Future[None] | Confirmations] = {}
        self._close_waiters: dict[str, asyncio.Future[None]] = {}  # guid -> its unsubscribe
        self._attempts: set[asyncio.Task[Any]] = set()  # connects in flight (see _ws)
        self._flusher: asyncio.Task[None] | None = None  # writes what the rules queue
        self._wake = asyncio.Event()  # tick() may be due sooner than the timer sleeps
        self._disconnected = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._close_info: tuple[int | None, str] | None = None
        self._drop_reason: str | None = None  # why we closed it ourselves, if we did
        self._lost: ConnectionClosed | None = None  # how the last attempt ended
        self._fatal: AuthError | None = None  # the refresh token was refused: stop, fail all
        #: Called (by the pool) once the connect loop has ended for good, not by aclose():
        #: the lane's streams have ended and it connects no more.
        self.on_end: Callable[[Lane], None] | None = None
        #: Told (in the I/O loop) when a connection opens, is lost, and restores: the client's
        #: connection hooks.
        self.on_connection: Callable[[ConnectionEvent], None] | None = None
        # Counters (read by stats(); plain ints: the reader is the only writer).
        self.messages = 0
        self.bytes = 0
        self.bad_frames = 0
        self._bad_log = BadFrameLog(log, f"lane {lane_id}")
        self.unrouted = 0
        self.connect_failures = 0
        self.last_restore_seconds: float | None = None
        self.last_error: str | None = None

    @property
    def reconnects(self) -> int:
        """Connections restored after a loss."""
        return self._conn.reconnects

    @property
    def resubscribes(self) -> int:
        """Silent subscriptions subscribed again."""
        return self._conn.resubscribes

    @property
    def resubscribe_failures(self) -> int:
        """Re-subscriptions of silent subscriptions that failed (the connection was dropped)."""
        return self._conn.resubscribe_failures

    @property
    def _app_ping_works(self) -> bool | None:
        return self._conn.app_ping_works

    # -- reader hot path ------------------------------------------------------------------

    def _on_frames(self, payloads: list[bytes]) -> None:
        """The messages of one socket read (:class:`BatchListener`), in the order they came."""
        self.messages += len(payloads)
        self.bytes += sum(map(len, payloads))
        tapped = self._tapped
        if tapped is not None:
            if not tapped:  # the first frames of this loop iteration: hand them over after it
                self._tapped_ns = time.time_ns()
                asyncio.get_running_loop().call_soon(self._flush_taps)
            tapped.extend(payloads)
        # Frames of our subscriptions to their sinks (consecutive ones in one push_many), the
        # rest to _route() in order: TailTable.dispatch, compiled when the reader is.
        dispatch_frames(self._sinks, payloads, self._route)

    def _flush_taps(self) -> None:
        frames = self._tapped
        if not frames:
            return
        self._tapped = []
        recv_ns = self._tapped_ns
        for tap in self._taps:
            tap(recv_ns, self.id, frames)

    def add_tap(self, tap: Tap) -> None:
        """Start calling ``tap`` (see :meth:`AlorClient.add_tap`); I/O loop only."""
        if tap not in self._taps:
            self._taps.append(tap)
        if self._tapped is None:
            self._tapped = []

    def remove_tap(self, tap: Tap) -> None:
        """Stop calling ``tap``, after handing it what this iteration received; I/O loop only."""
        self._flush_taps()
        with contextlib.suppress(ValueError):
            self._taps.remove(tap)
        if not self._taps:
            self._tapped = None

    def _route(self, payload: bytes) -> None:
        """Any frame the fast path did not settle: parse the envelope to classify it."""
        try:
            msg = route(payload)
        except Exception as exc:  # route() raises FrameError; anything else is the frame's too
            self.bad_frames += 1
            self._bad_log.frame(exc, payload)
            return
        if type(msg) is DataMessage:
            sink = self._sinks.get(msg.guid)
            if sink is None:
                self.unrouted += 1  # data in flight after an unsubscribe: drop it
            else:
                sink.push(payload)  # the consumer decodes envelope and data in one pass
        else:
            assert isinstance(msg, StatusReply)
            self._on_status(msg)

    def _on_status(self, reply: StatusReply) -> None:
        self._conn.receive_status(
            reply.request_guid, reply.http_code, reply.message, time.monotonic()
        )
        self._after()

    def _on_pong(self) -> None:
        self._conn.receive_pong(time.monotonic())

    # -- acting on the rules ----------------------------------------------------------------

    def _after(self) -> None:
        """Act on what the connection decided: events, frames to write, the timer."""
        conn = self._conn
        events = conn.events_received()
        if events:
            self._dispatch(events)
        if conn.has_data_to_send():
            self._kick()
        if conn.timer_moved:
            self._wake.set()

    def _dispatch(self, events: list[DataEvent]) -> None:
        for event in events:
            match event:
                case Confirmed(guid=guid):
                    waiter = self._waiters.pop(guid, None)  # None in a restore
                    if waiter is not None:
                        _answer(waiter, guid, None)
                case Failed(guid=guid, error=error):
                    sink = self._sinks.pop(guid)
                    waiter = self._waiters.pop(guid, None)
                    placing = waiter is not None and _answer(waiter, guid, error)
                    # A subscribe refused for the server's limit is placed again by the pool,
                    # for every stream waiting for it, with the same buffers: they go on.
                    if sink is not None and not (
                        placing and isinstance(error, ServerLimitExceeded)
                    ):
                        sink.close(error)
                case Unsubscribed(guid=guid):
                    self._sinks.pop(guid)
                    closed = self._close_waiters.pop(guid, None)
                    if closed is not None and not closed.done():
                        closed.set_result(None)
                case Disconnected(reason=reason):
                    for closed in self._close_waiters.values():
                        if not closed.done():
                            closed.set_result(None)  # the server forgot it with the socket
                    self._close_waiters.clear()
                    self._broadcast(LaneEvent("disconnected", self.id, reason=reason))
                    self._tell("disconnect", reason=reason)
                case Restored(downtime=downtime):
                    self._broadcast(LaneEvent("restored", self.id, downtime=downtime))
                    self._tell("restore", downtime=downtime, restored=self.count())
                case Silent(guid=guid, silent_for=silent_for):
                    sink = self._sinks.get(guid)
                    if sink is not None:
                        sink.push_event(
                            LaneEvent(
                                "silent",
                                self.id,
                                reason=f"no data for {silent_for:.1f} s; subscribing again",
                                downtime=silent_for,
                            )
                        )
                case Resubscribed(guid=guid, downtime=downtime):
                    sink = self._sinks.get(guid)
                    if sink is not None:
                        sink.push_event(LaneEvent("resubscribed", self.id, downtime=downtime))
                case SendPing():
                    transport = self._transport
                    if transport is not None:
                        with contextlib.suppress(Exception):
                            transport.send_ping()
                case Close(reason=reason):
                    self.drop(reason)

    def _tell(self, kind: str, **info: Any) -> None:
        """Report a connection event to the client's hooks (they run elsewhere)."""
        if self.on_connection is not None:
            self.on_connection(ConnectionEvent(kind, self.kind.value, self.id, **info))

    def _write_out(self, token: str, refreshed: bool = False) -> None:
        for frame in self._conn.data_to_send(token, refreshed=refreshed):
            if not self._send(frame):
                break

    async def _flush(self) -> None:
        """Write what the connection queued, with a token it accepts (refreshed if it was
        refused). Raises what the token manager raises."""
        conn = self._conn
        while conn.has_data_to_send():
            token = await self._token()
            refreshed = False
            if conn.token_refused(token):
                # A burst of 401s needs one refresh: forced only while the refused token is
                # still the current one.
                token = await self._refresh()
                refreshed = True
            self._write_out(token, refreshed)

    def _kick(self) -> None:
        """Flush in the background (for callers that cannot await)."""
        if self._flusher is None and not self._closing:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_in_background(), name=f"alorws-lane-{self.id}-send"
            )

    async def _flush_in_background(self) -> None:
        try:
            await self._flush()
        except AlorError as exc:
            log.warning("lane %d: no token to send with: %s", self.id, exc)
            self._conn.token_failed(exc)
            self._dispatch(self._conn.events_received())
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None

    async def _run_timer(self) -> None:
        """Call the connection's tick() when it asks, or sooner when woken."""
        conn = self._conn
        wake = self._wake
        while True:
            at = conn.next_tick()
            wake.clear()
            delay = None if at is None else at - time.monotonic()
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await wake.wait()
            conn.tick(time.monotonic(), self.messages, self._received)
            self._after()

    def _received(self, guid: str) -> int | None:
        sink = self._sinks.get(guid)
        return None if sink is None else sink.received

    # -- subscribe / unsubscribe (called by the pool) ---------------------------------------

    def count(self) -> int:
        """Subscriptions the registry places on this lane (the server's 5000 limit counts them)."""
        return self._registry.count(self.id)

    def add(self, sub: Subscription[SubscriptionRequest, int], sink: Sink) -> asyncio.Future[None]:
        """Start delivering a new subscription to ``sink`` and send it (or queue it until open).

        Returns a future that completes when the server confirms it (or fails with the
        server's rejection). Nothing raises here: without a token the subscribe stays queued
        and the caller's timeout releases it.
        """
        self._sinks[sub.guid] = sink
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[sub.guid] = waiter
        if self._conn.subscribe(sub):
            self._kick()  # written by the flusher, with a token (a failure keeps it queued)
        else:
            self.ensure_started()  # it goes out with the next restore
        return waiter

    def add_many(
        self, subs: Sequence[Subscription[SubscriptionRequest, int]], sinks: Sequence[Sink]
    ) -> Confirmations:
        """:meth:`add` for a batch of new subscriptions (``sinks[i]`` takes ``subs[i]``): their
        frames go out pipelined (the connection's window of subscribes in flight), and one
        :class:`Confirmations` is settled by the answers."""
        waiter = Confirmations([sub.guid for sub in subs])
        table, waiters = self._sinks, self._waiters
        for sub, sink in zip(subs, sinks, strict=True):
            table[sub.guid] = sink
            waiters[sub.guid] = waiter
        if self._conn.subscribe_many(subs):
            self._kick()  # written by the flusher, with a token (a failure keeps them queued)
        else:
            self.ensure_started()  # they go out with the next restore burst
        return waiter

    def confirmation(self, guid: str) -> asyncio.Future[None] | None:
        """What completes when the server answers the subscribe of ``guid``, or None when
        nothing waits for that answer any more (confirmed, or being restored)."""
        waiter = self._waiters.get(guid)
        if isinstance(waiter, Confirmations):
            return waiter.follow(guid)
        return waiter

    def attach(self, guid: str, sink: Sink) -> None:
        """Deliver an existing subscription to one more consumer (a de-duplicated request)."""
        current = self._sinks.get(guid)
        if current is None:
            self._sinks[guid] = sink
        elif isinstance(current, Fanout):
            current.sinks.append(sink)
        else:
            self._sinks[guid] = Fanout(current, sink)

    def detach(self, guid: str, sink: Sink) -> None:
        """Stop delivering to ``sink``; the subscription itself stays if others hold it."""
        current = self._sinks.get(guid)
        if isinstance(current, Fanout):
            with contextlib.suppress(ValueError):
                current.sinks.remove(sink)
            if len(current.sinks) == 1:
                self._sinks[guid] = current.sinks[0]
            elif not current.sinks:
                self._sinks.pop(guid)
        elif current is sink:
            self._sinks.pop(guid)

    async def remove(self, guid: str, wait: float = 5.0) -> None:
        """The last holder left: send the unsubscribe (the registry already said so) and wait
        up to ``wait`` s for the server's reply (a lost connection forgets it anyway)."""
        self._sinks.pop(guid)
        self._conn.release(guid)
        waiter = self._waiters.pop(guid, None)
        if waiter is not None:
            _answer(waiter, guid, asyncio.CancelledError())
        if not self._conn.send_unsubscribe(guid):
            return
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._close_waiters[guid] = closed
        self._kick()  # written by the flusher (without a token it stays queued)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.shield(closed)
        if self._close_waiters.get(guid) is closed:
            del self._close_waiters[guid]

    def watch(self, guid: str, timeout: float) -> None:
        """Subscribe ``guid`` again when it receives nothing for ``timeout`` seconds while the
        connection lives (docs/protocol.md §9.6). Streams sharing a subscription share the
        shortest timeout."""
        self._conn.watch(guid, timeout, time.monotonic())
        self._after()

    # -- connection lifecycle ---------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the connect/restore loop if it is not running."""
        if self._task is None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"alorws-lane-{self.id}"
            )

    def _send(self, frame: bytes) -> bool:
        transport = self._transport
        if transport is None or self.state is not LaneState.OPEN:
            return False
        # A transport that died under us is disconnected: the run loop sees the loss, and
        # the rules restore what the burst did not write.
        return send_or_drop(transport, frame)

    def _on_connected(self, transport: picows.WSTransport) -> None:
        self._transport = transport

    def _on_close(self, code: int | None, reason: str) -> None:
        self._close_info = (code, reason)

    def _on_disconnected(self) -> None:
        self._transport = None
        self._disconnected.set()

    def drop(self, reason: str = "dropped by the client") -> None:
        """Close the current connection; the lane reconnects and restores (liveness, tests)."""
        transport = self._transport
        self._drop_reason = reason
        if transport is not None:
            transport.disconnect(graceful=False)

    async def _connect(self) -> picows.WSTransport:
        self.state = LaneState.CONNECTING
        self._disconnected.clear()
        self._close_info = None
        try:
            return await ws_connect(
                lambda: BATCH_LISTENER(
                    self._on_frames,
                    self._on_disconnected,
                    on_close=self._on_close,
                    on_pong=self._on_pong,
                    on_connected=self._on_connected,
                ),
                self.url,
                ssl_context=self._ssl,
                step_timeout=self._connect_timeout,
                attempts=self._attempts,
                proxy=self._proxy,
                enable_auto_pong=True,
                max_frame_size=64 * 1024 * 1024,
                logger_name=f"alorws.lane{self.id}",
            )
        except BaseException:
            # ws_connect detached a given-up attempt's listener, but it may have been told of
            # the transport just before: that one is not this lane's connection.
            self._transport = None
            raise

    def _connect_failed(self, exc: Exception) -> Retry:
        self.connect_failures += 1
        self.last_error = scrub(f"connect failed: {exc!r}")
        log.info("lane %d: %s", self.id, self.last_error)
        self._lost = ConnectionClosed(None, self.last_error)
        self.state = LaneState.BACKOFF
        return Retry.LATER

    async def _run(self) -> None:
        ended = False
        try:
            attempts = reconnecting(
                lambda: self._connect(), ReconnectPolicy(self._backoff), self._connect_failed
            )
            async with contextlib.aclosing(attempts):
                async for transport in attempts:
                    await self._serve(transport)
                    if self._closing or self._fatal is not None:
                        break
                    self.state = LaneState.BACKOFF
            ended = not self._closing
            if self._fatal is not None and ended:
                log.error("lane %d: %s; its streams end with that error", self.id, self._fatal)
                self._fail_all(self._fatal)
            elif ended:  # the backoff ran out
                self._fail_all(self._lost or ConnectionClosed(None, "connection lost"))
        except Exception as exc:  # a bug: end the streams with it rather than leave them waiting
            log.exception("lane %d: the connection loop failed", self.id)
            ended = not self._closing
            if ended:
                self._fail_all(exc)
        finally:
            self.state = LaneState.CLOSED
        if ended and self.on_end is not None:
            # The loop never runs again: the pool retires the lane (no new subscription may
            # land on it) and forgets its subscriptions, whose streams ended above.
            self.on_end(self)

    async def _serve(self, transport: picows.WSTransport) -> None:
        """One connection: restore, run the timer until it is gone, then record the loss."""
        self._transport = transport
        self.state = LaneState.OPEN
        conn = self._conn
        started = time.monotonic()
        conn.connection_opened(started)
        self._tell("connect")
        try:
            await self._flush()  # the restore burst, pipelined (docs/protocol.md §9.5)
        except AuthError as exc:
            # The refresh token itself was refused: no later connection can do better.
            self._fatal = exc
            self.drop(f"no token to restore the subscriptions: {exc}")
        except AlorError as exc:
            # No token to restore with for now (the auth server is unreachable): this connection
            # is useless; the next one tries again after the backoff.
            self.drop(f"no token to restore the subscriptions: {exc}")
        self.last_restore_seconds = time.monotonic() - started
        self._after()
        timer = asyncio.get_running_loop().create_task(
            self._run_timer(), name=f"alorws-lane-{self.id}-timer"
        )
        try:
            await self._disconnected.wait()
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        self._transport = None
        if self._closing:
            return
        code, reason = self._close_info or (None, "connection lost")
        # The close reason is the server's text: scrubbed, like every frame excerpt.
        self.last_error = self._drop_reason or f"closed (code={code}, reason={scrub(reason)!r})"
        self._drop_reason = None
        log.info("lane %d: %s; restoring", self.id, self.last_error)
        self._lost = ConnectionClosed(code, reason)
        conn.connection_lost(time.monotonic(), self.last_error)
        self._after()

    def _broadcast(self, event: LaneEvent) -> None:
        for sink in list(self._sinks.by_guid.values()):
            sink.push_event(event)

    def _fail_all(self, exc: BaseException) -> None:
        self.state = LaneState.CLOSED
        for guid, sink in list(self._sinks.by_guid.items()):
            sink.close(exc)
            waiter = self._waiters.pop(guid, None)
            if waiter is not None:
                _answer(waiter, guid, exc)
        self._sinks.clear()

    async def aclose(self) -> None:
        """Unsubscribe nothing (the server forgets on close), close the socket, stop the loop."""
        self._closing = True
        transport = self._transport
        if transport is not None:
            await close_transport(transport)
        tasks = [t for t in (self._task, self._flusher) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await settle(self._attempts, self._connect_timeout)
        for waiter in self._waiters.values():
            waiter.cancel()  # a no-op on a future already done
        self._waiters.clear()
        self.state = LaneState.CLOSED

    def stats(self) -> dict[str, Any]:
        """Counters and state of this lane."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "state": self.state.value,
            "subscriptions": self.count(),
            "messages": self.messages,
            "bytes": self.bytes,
            "bad_frames": self.bad_frames,
            "unrouted": self.unrouted,
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "watched": self._conn.watched,
            "resubscribes": self.resubscribes,
            "resubscribe_failures": self.resubscribe_failures,
            "resubscribing": self._conn.resubscribing(),
            "last_restore_seconds": self.last_restore_seconds,
            "last_error": self.last_error,
        }


def _answer(
    waiter: asyncio.Future[None] | Confirmations, guid: str, error: BaseException | None
) -> bool:
    """Hand the server's answer for ``guid`` to what waited for it (``error`` None: confirmed).
    Returns whether something still waited (a subscribe being placed)."""
    if isinstance(waiter, Confirmations):
        waiting = not waiter.done.done()
        waiter.settle(guid, error)
        return waiting
    waiting = not waiter.done()
    _resolve(waiter, error)
    return waiting
