"""A lane: one ``/ws`` connection that reconnects forever and restores its subscriptions.

Everything here runs in the I/O loop (:mod:`alorws.client.runtime`). The reader is a picows
listener whose only work per frame is: find the subscription, push the whole frame into its
buffer. A data frame in the server's compact shape (``{"data":{…},"guid":"…"}``,
docs/protocol.md §3.4) is matched by its tail alone, one slice and one dict lookup, without parsing;
anything else is routed by :func:`alorws.protocol.route`. Consumers decode later, in their own loop,
envelope and payload in one pass (:func:`alorws.protocol.codec.frame_decoder_for`), so a frame
nobody takes (a conflated ``latest`` item) is never parsed at all. Status replies drive the shared
:class:`~alorws.protocol.registry.SubscriptionRegistry`.

On any close or error the lane marks its subscriptions ``RESTORING``, waits a jittered
exponential delay, reconnects with a fresh token and re-sends every subscription with its
original guid in one pipelined burst (docs/protocol.md §9.5), without waiting for each reply.

Silent subscriptions (docs/protocol.md §9.6). A subscription given a silence timeout
(:meth:`Lane.watch`) is checked by a task of the I/O loop, a few times per timeout: it compares the
sink's ``received`` counter (kept by the buffer anyway) with the last look, so the reader does
nothing extra per frame. One that received nothing for longer than its timeout while the connection
lives is subscribed again on the same connection, with the same guid: ``unsubscribe``, its reply,
then the subscribe again (docs/protocol.md §3.8; a subscribe with a guid that is still active is
refused, docs/protocol.md §12.2). The stream gets a ``silent`` event, then ``resubscribed`` once the
server confirms. Should either step fail (no reply in time, a refusal), the lane drops its
connection and restores everything: a new connection is sure to start empty (docs/protocol.md §3.8).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import picows

from ..errors import (
    AlorError,
    ConnectionClosed,
    FrameError,
    InvalidArgumentError,
    ServerRejected,
    TokenRejected,
    TransportTimeout,
    scrub,
)
from ..protocol.backoff import Backoff
from ..protocol.codec import DATA_HEAD, DataMessage, StatusReply, TailTable, route
from ..protocol.registry import StatusKind, Subscription, SubscriptionRegistry, SubscriptionState
from ..protocol.requests import (
    SubscriptionRequest,
    encode_ping,
    encode_subscribe,
    encode_unsubscribe,
)
from ._badframes import BadFrameLog
from ._ws import STABLE_SECONDS, settle, ws_connect
from .endpoints import check_url


__all__ = ["Lane", "LaneEvent", "LaneKind", "LaneState", "Sink", "Tap"]

log = logging.getLogger("alorws.lane")

_TEXT = picows.WSMsgType.TEXT
_BINARY = picows.WSMsgType.BINARY
_CONT = picows.WSMsgType.CONTINUATION
_CLOSE = picows.WSMsgType.CLOSE
_PONG = picows.WSMsgType.PONG

#: 401 replies retried with a fresh token before the rejection reaches the consumer.
_AUTH_RETRIES = 2


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


class _Listener(picows.WSListener):
    """picows callbacks: hand every complete text frame to the lane, nothing else."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.on_frame = lane._on_frame
        self.parts: list[bytes] | None = None

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.lane._transport = transport

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        # Hot path without reading ``frame.msg_type`` (converting it to the Python enum costs
        # more than the rest of the reader's work): picows answers PINGs itself, a control
        # frame (PONG, CLOSE) carries at most 125 bytes (RFC 6455 §5.5), and outside a
        # fragmented message a final frame is a whole TEXT/BINARY message.
        if frame.fin and self.parts is None:
            payload = frame.get_payload_as_bytes()
            if len(payload) > 125:
                self.on_frame(payload)
                return
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY:
            if frame.fin:
                self.on_frame(frame.get_payload_as_bytes())
            else:
                self.parts = [frame.get_payload_as_bytes()]
        elif kind is _CONT:
            if self.parts is not None:
                self.parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    payload = b"".join(self.parts)
                    self.parts = None
                    self.on_frame(payload)
        elif kind is _PONG:
            self.lane._last_pong = time.monotonic()
        elif kind is _CLOSE:
            code = frame.get_close_code()
            self.lane._close_info = (getattr(code, "value", None), frame.get_close_reason() or "")
            with contextlib.suppress(Exception):
                if code is picows.WSCloseCode.NO_INFO:
                    transport.send_close()
                else:
                    transport.send_close(code)
            transport.disconnect()

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.lane._on_disconnected()


class Lane:
    """One reconnecting ``/ws`` connection and the subscriptions living on it.

    Created and driven by the client's lane pool; every method runs in the I/O loop.
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
    ) -> None:
        self.id = lane_id
        self.kind = kind
        # Refused here, not at each reconnect (which would retry a bad URL forever).
        self.url = check_url(url, "WebSocket URL", schemes=("wss", "ws"))
        self._registry = registry
        self._token = token  # async () -> current access token
        self._refresh = refresh_token  # async () -> force a refresh, returns the new token
        self._ssl = ssl_context
        self._backoff = backoff or Backoff()
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._connect_timeout = connect_timeout

        self.state = LaneState.IDLE
        # Taps (see add_tap): the frames of the current I/O-loop iteration, handed over once
        # per iteration; None while there is no tap (the reader then skips it all).
        self._taps: list[Tap] = []
        self._tapped: list[bytes] | None = None
        self._tapped_ns = 0
        self._transport: picows.WSTransport | None = None
        self._sinks: TailTable[Sink] = TailTable()
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._close_waiters: dict[str, asyncio.Future[None]] = {}
        self._unsent: dict[str, SubscriptionRequest] = {}
        self._auth_retries: dict[str, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._attempts: set[asyncio.Task[Any]] = set()  # connects in flight (see _ws)
        self._last_token: str | None = None  # the token of the last frames sent
        self._disconnected = asyncio.Event()
        self._opened = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._close_info: tuple[int | None, str] | None = None
        self._drop_reason: str | None = None  # why we closed it ourselves, if we did
        self._last_pong = 0.0
        self._ping_guid: str | None = None
        self._app_pong: asyncio.Event = asyncio.Event()
        self._app_ping_works: bool | None = None  # learned: does the server answer opcode ping?
        # Silence watch (docs/protocol.md §9.6): guid -> seconds without data before it is
        # subscribed again; the task checking them; re-subscriptions under way and the reply each
        # one awaits.
        self._watch: dict[str, float] = {}
        self._silence_task: asyncio.Task[None] | None = None
        self._resubscribing: dict[str, asyncio.Task[None]] = {}
        self._resub_waiters: dict[str, asyncio.Future[StatusReply]] = {}
        # Counters (read by stats(); plain ints: the reader is the only writer).
        self.messages = 0
        self.bytes = 0
        self.bad_frames = 0
        self._bad_log = BadFrameLog(log, f"lane {lane_id}")
        self.unrouted = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.resubscribes = 0
        self.resubscribe_failures = 0
        self.last_restore_seconds: float | None = None
        self.last_error: str | None = None

    # -- reader hot path ------------------------------------------------------------------

    def _on_frame(self, payload: bytes) -> None:
        self.messages += 1
        self.bytes += len(payload)
        tapped = self._tapped
        if tapped is not None:
            if not tapped:  # the first frame of this loop iteration: hand them over after it
                self._tapped_ns = time.time_ns()
                asyncio.get_running_loop().call_soon(self._flush_taps)
            tapped.append(payload)
        # The fast path, TailTable.match() inlined: a compact data frame ending in
        # ``,"guid":"<a guid of ours>"}``; slices and a dict lookup (bytes.startswith/rfind
        # parse their arguments: 3x slower). No match (another shape, an unknown guid) falls
        # through to route(), which decides.
        if payload[:9] == DATA_HEAD:
            table = self._sinks
            for n in table.tail_lens:
                sink = table.by_tail.get(payload[-n:])
                if sink is not None:
                    sink.push(payload)
                    return
        self._route(payload)

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
            if not isinstance(exc, FrameError):
                exc = FrameError(f"unreadable frame: {type(exc).__name__}: {exc}", payload)
            self._bad_log.report(exc)
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
        guid = reply.request_guid
        if guid == self._ping_guid:
            self._app_pong.set()
            return
        step = self._resub_waiters.pop(guid, None)
        if step is not None:  # a step of a re-subscription (the registry keeps it ACTIVE)
            if not step.done():
                step.set_result(reply)
            return
        sub = self._registry.get(guid)
        if (
            reply.http_code == 401
            and sub is not None
            and sub.state is SubscriptionState.PENDING
            and self._auth_retries.get(guid, 0) < _AUTH_RETRIES
        ):
            # The token expired under us (docs/protocol.md §2.6): refresh and resend with the same
            # guid.
            self._auth_retries[guid] = self._auth_retries.get(guid, 0) + 1
            task = asyncio.get_running_loop().create_task(self._resend_with_fresh_token(sub))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        outcome = self._registry.on_status(guid, reply.http_code, reply.message)
        waiter = self._waiters.pop(guid, None) if outcome.kind is not StatusKind.IGNORED else None
        if outcome.kind is StatusKind.CONFIRMED:
            self._auth_retries.pop(guid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif outcome.kind is StatusKind.REJECTED:
            err: ServerRejected = outcome.error or ServerRejected(
                reply.http_code, reply.message, guid
            )
            sink = self._sinks.pop(guid)
            if sink is not None:
                sink.close(err)
            if waiter is not None and not waiter.done():
                waiter.set_exception(err)
        elif outcome.kind is StatusKind.CLOSED:
            self._sinks.pop(guid)
            closed = self._close_waiters.pop(guid, None)
            if closed is not None and not closed.done():
                closed.set_result(None)
        elif outcome.kind is StatusKind.IGNORED:
            log.debug("lane %d: status %s for %s ignored", self.id, reply.http_code, guid)

    async def _resend_with_fresh_token(self, sub: Subscription[SubscriptionRequest, int]) -> None:
        try:
            # A burst of 401s (every subscription of a restore) needs one refresh, not one
            # each: force it only if nobody has replaced the refused token yet.
            token = await self._token()
            if token == self._last_token:
                token = await self._refresh()
        except AlorError as exc:
            self._fail_pending(sub.guid, exc)
            return
        self._last_token = token
        if self._send(encode_subscribe(sub.request, guid=sub.guid, token=token)):
            return
        self._unsent[sub.guid] = sub.request  # connection gone: goes out with the restore

    def _fail_pending(self, guid: str, exc: AlorError) -> None:
        outcome = self._registry.on_status(guid, 401, str(exc))
        err = outcome.error or TokenRejected(401, str(exc), guid)
        sink = self._sinks.pop(guid)
        if sink is not None:
            sink.close(err)
        waiter = self._waiters.pop(guid, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)

    # -- subscribe / unsubscribe (called by the pool) ---------------------------------------

    def count(self) -> int:
        """Subscriptions the registry places on this lane (the server's 5000 limit counts them)."""
        return self._registry.count(self.id)

    async def add(
        self, sub: Subscription[SubscriptionRequest, int], sink: Sink
    ) -> asyncio.Future[None]:
        """Start delivering a new subscription to ``sink`` and send it (or queue it until open).

        Returns a future that completes when the server confirms it (or fails with the
        server's rejection).
        """
        self._sinks[sub.guid] = sink
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[sub.guid] = waiter
        if self.state is LaneState.OPEN:
            token = await self._token()
            self._last_token = token
            if self._send(encode_subscribe(sub.request, guid=sub.guid, token=token)):
                return waiter
        self._unsent[sub.guid] = sub.request
        self.ensure_started()
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
        self._unsent.pop(guid, None)
        self._watch.pop(guid, None)
        self._stop_resubscribe(guid)
        waiter = self._waiters.pop(guid, None)
        if waiter is not None and not waiter.done():
            waiter.cancel()
        if self.state is not LaneState.OPEN:
            return
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._close_waiters[guid] = closed
        token = await self._token()
        if self._send(encode_unsubscribe(guid, token)):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await asyncio.shield(closed)
        self._close_waiters.pop(guid, None)

    # -- silent subscriptions (docs/protocol.md §9.6) -----------------------------------------

    def watch(self, guid: str, timeout: float) -> None:
        """Subscribe ``guid`` again when it receives nothing for ``timeout`` seconds while the
        connection lives. Streams sharing a subscription share the shortest timeout."""
        if not (timeout > 0 and timeout < float("inf")):
            raise InvalidArgumentError(
                "silence_timeout", f"must be a finite number of seconds > 0, got {timeout!r}"
            )
        current = self._watch.get(guid)
        self._watch[guid] = timeout if current is None else min(current, timeout)
        self._start_silence_watch()

    def _start_silence_watch(self) -> None:
        if self._silence_task is None and self._watch and self.state is LaneState.OPEN:
            self._silence_task = asyncio.get_running_loop().create_task(
                self._silence_watch(), name=f"alorws-lane-{self.id}-silence"
            )

    async def _silence_watch(self) -> None:
        """Look at every watched subscription's counter a few times per timeout."""
        # (count at the last change, when it last changed); a first look starts the clock, so
        # silence is measured from the (re)connect at the earliest.
        seen: dict[str, tuple[int, float]] = {}
        try:
            while self._watch:
                period = min(max(min(self._watch.values()) / 4, 0.02), 5.0)
                await asyncio.sleep(period)
                self._look(seen, time.monotonic())
        finally:
            if self._silence_task is asyncio.current_task():
                self._silence_task = None

    def _look(self, seen: dict[str, tuple[int, float]], now: float) -> None:
        """One look at every watched subscription; ``seen`` keeps (count, when it changed)."""
        for guid, timeout in list(self._watch.items()):
            sink = self._sinks.get(guid)
            sub = self._registry.get(guid)
            if sink is None or sub is None:
                self._watch.pop(guid, None)
                seen.pop(guid, None)
                continue
            count = sink.received
            last = seen.get(guid)
            if (
                last is None
                or last[0] != count
                or sub.state is not SubscriptionState.ACTIVE
                or guid in self._resubscribing
            ):
                seen[guid] = (count, now)
            elif now - last[1] > timeout:
                seen[guid] = (count, now)  # the clock restarts with the re-subscribe
                self._start_resubscribe(guid, now - last[1])
        if len(seen) > len(self._watch):
            for guid in [g for g in seen if g not in self._watch]:
                del seen[guid]

    def _start_resubscribe(self, guid: str, silent_for: float) -> None:
        task = asyncio.get_running_loop().create_task(
            self._resubscribe(guid, silent_for), name=f"alorws-lane-{self.id}-resubscribe"
        )
        self._resubscribing[guid] = task
        task.add_done_callback(lambda t: self._resubscribe_done(guid, t))

    def _resubscribe_done(self, guid: str, task: asyncio.Task[None]) -> None:
        if self._resubscribing.get(guid) is task:
            del self._resubscribing[guid]

    def _stop_resubscribe(self, guid: str) -> None:
        task = self._resubscribing.pop(guid, None)
        if task is not None:
            task.cancel()
        waiter = self._resub_waiters.pop(guid, None)
        if waiter is not None and not waiter.done():
            waiter.cancel()

    async def _resubscribe(self, guid: str, silent_for: float) -> None:
        """Unsubscribe, then subscribe again with the same guid (docs/protocol.md §3.8), on this
        connection."""
        sub = self._registry.get(guid)
        sink = self._sinks.get(guid)
        if sub is None or sink is None:
            return
        last_data = time.monotonic() - silent_for
        self.resubscribes += 1
        log.info("lane %d: %s silent for %.1f s; subscribing again", self.id, guid, silent_for)
        sink.push_event(
            LaneEvent(
                "silent",
                self.id,
                reason=f"no data for {silent_for:.1f} s; subscribing again",
                downtime=silent_for,
            )
        )
        try:
            await self._step(guid, lambda token: encode_unsubscribe(guid, token))
            if self._registry.get(guid) is not sub or sub.state is not SubscriptionState.ACTIVE:
                return  # released or lost meanwhile: nothing to put back
            await self._step(
                guid, lambda token: encode_subscribe(sub.request, guid=guid, token=token)
            )
        except asyncio.CancelledError:
            raise
        except AlorError as exc:
            self.resubscribe_failures += 1
            still = self._registry.get(guid) is sub and sub.state is SubscriptionState.ACTIVE
            if still and self._transport is not None:
                # The server may still hold a broken subscription under this guid: only a new
                # connection is sure to start empty (docs/protocol.md §3.8).
                self.drop(f"subscribing {guid} again failed: {exc}")
            return
        current = self._sinks.get(guid)
        if current is not None:
            current.push_event(
                LaneEvent("resubscribed", self.id, downtime=time.monotonic() - last_data)
            )

    async def _step(self, guid: str, frame: Callable[[str], bytes]) -> None:
        """Send one request for ``guid`` and wait for its reply; a 401 is retried once with a
        refreshed token. Raises the refusal, ConnectionClosed or TransportTimeout."""
        token = await self._token()
        for attempt in range(2):
            waiter: asyncio.Future[StatusReply] = asyncio.get_running_loop().create_future()
            self._resub_waiters[guid] = waiter
            self._last_token = token
            try:
                if not self._send(frame(token)):
                    raise ConnectionClosed(None, "the connection closed")
                try:
                    async with asyncio.timeout(self._connect_timeout):
                        reply = await waiter
                except TimeoutError:
                    raise TransportTimeout(f"no reply within {self._connect_timeout} s") from None
            finally:
                if self._resub_waiters.get(guid) is waiter:
                    del self._resub_waiters[guid]
            if reply.http_code == 200:
                return
            if reply.http_code != 401 or attempt:
                raise ServerRejected(reply.http_code, reply.message, guid)
            token = await self._refresh()

    def _stop_silence_work(self) -> None:
        """The connection is gone: its re-subscriptions with it (the restore re-sends all)."""
        task, self._silence_task = self._silence_task, None
        if task is not None:
            task.cancel()
        for guid in list(self._resubscribing):
            self._stop_resubscribe(guid)
        for waiter in self._resub_waiters.values():
            if not waiter.done():
                waiter.cancel()
        self._resub_waiters.clear()

    # -- connection lifecycle ---------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the connect/restore loop if it is not running."""
        if self._task is None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"alorws-lane-{self.id}"
            )

    async def wait_open(self) -> None:
        """Wait until the lane is connected (and its subscriptions re-sent)."""
        await self._opened.wait()

    def _send(self, frame: bytes) -> bool:
        transport = self._transport
        if transport is None or self.state is not LaneState.OPEN:
            return False
        try:
            transport.send(_TEXT, frame)
        except Exception as exc:  # a transport that died under us: the run loop notices
            log.debug("lane %d: send failed: %r", self.id, exc)
            return False
        return True

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
        self._disconnected.clear()
        self._close_info = None
        return await ws_connect(
            lambda: _Listener(self),
            self.url,
            ssl_context=self._ssl,
            step_timeout=self._connect_timeout,
            attempts=self._attempts,
            enable_auto_pong=True,
            max_frame_size=64 * 1024 * 1024,
            logger_name=f"alorws.lane{self.id}",
        )

    async def _run(self) -> None:
        delays = self._backoff.delays()
        down_since: float | None = None
        while not self._closing:
            self.state = LaneState.CONNECTING
            try:
                transport = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connect_failures += 1
                self.last_error = scrub(f"connect failed: {exc!r}")
                log.info("lane %d: %s", self.id, self.last_error)
                delay = next(delays, None)
                if delay is None:
                    self._fail_all(ConnectionClosed(None, self.last_error))
                    return
                self.state = LaneState.BACKOFF
                await asyncio.sleep(delay)
                continue
            self._transport = transport
            self.state = LaneState.OPEN
            started = time.monotonic()
            await self._restore()
            self.last_restore_seconds = time.monotonic() - started
            if down_since is not None:
                self.reconnects += 1
                self._broadcast(
                    LaneEvent("restored", self.id, downtime=time.monotonic() - down_since)
                )
            opened_at = time.monotonic()
            self._opened.set()
            watchdog = asyncio.get_running_loop().create_task(self._watchdog(transport))
            self._start_silence_watch()
            try:
                await self._disconnected.wait()
            finally:
                self._stop_silence_work()
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            self._opened.clear()
            self._transport = None
            if self._closing:
                break
            down_since = time.monotonic()
            if down_since - opened_at >= STABLE_SECONDS:
                delays = self._backoff.delays()  # it worked for a while: start over
            code, reason = self._close_info or (None, "connection lost")
            # The close reason is the server's text: scrubbed, like every frame excerpt.
            self.last_error = self._drop_reason or f"closed (code={code}, reason={scrub(reason)!r})"
            self._drop_reason = None
            log.info("lane %d: %s; restoring", self.id, self.last_error)
            self._registry.connection_lost(self.id)
            for closed in self._close_waiters.values():
                if not closed.done():
                    closed.set_result(None)  # the server forgot the subscription with the socket
            self._close_waiters.clear()
            self._broadcast(LaneEvent("disconnected", self.id, reason=self.last_error))
            self.state = LaneState.BACKOFF
            delay = next(delays, None)
            if delay is None:
                self._fail_all(ConnectionClosed(code, reason))
                return
            await asyncio.sleep(delay)
        self.state = LaneState.CLOSED

    async def _restore(self) -> None:
        """Re-send every subscription of this lane with its original guid, pipelined."""
        token = await self._token()
        self._last_token = token
        frames: list[bytes] = []
        for sub in self._registry.restore_plan(self.id):
            frames.append(encode_subscribe(sub.request, guid=sub.guid, token=token))
            self._registry.mark_resent(sub.guid)
            self._unsent.pop(sub.guid, None)
        for guid, request in list(self._unsent.items()):
            pending = self._registry.get(guid)
            if pending is not None and pending.state is SubscriptionState.PENDING:
                frames.append(encode_subscribe(request, guid=guid, token=token))
        self._unsent.clear()
        for frame in frames:
            if not self._send(frame):
                break

    async def _watchdog(self, transport: picows.WSTransport) -> None:
        """Liveness: when the lane is silent, ping; no answer within the timeout = dead."""
        # Silence is read off the message counter (no clock call per frame in the reader).
        interval, timeout = self._ping_interval, self._ping_timeout
        while True:
            seen = self.messages
            await asyncio.sleep(interval)
            if self.messages != seen:
                continue
            # docs/protocol.md §3.7: the UI pings with opcode "ping" and matches the reply by
            # requestGuid; the real server's answer is unverified (docs/protocol.md §12.3), so learn
            # whether it answers, and fall back to WebSocket ping frames if it does not.
            sent_at = time.monotonic()
            seen = self.messages
            self._app_pong.clear()
            if self._app_ping_works is not False:
                self._ping_guid = self._registry.new_guid()
                self._send(encode_ping(self._ping_guid, await self._token()))
            with contextlib.suppress(Exception):
                transport.send_ping()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._app_pong.wait()
            if self._app_pong.is_set():
                self._app_ping_works = True
                continue
            if self._app_ping_works is None and self._last_pong >= sent_at:
                self._app_ping_works = False  # the server ignores opcode ping: use WS pings
                continue
            if self._app_ping_works is False and self._last_pong >= sent_at:
                continue
            if self.messages != seen:
                continue  # data arrived meanwhile
            self.drop(f"no answer to ping within {timeout} s")
            return

    def _broadcast(self, event: LaneEvent) -> None:
        for sink in list(self._sinks.by_guid.values()):
            sink.push_event(event)

    def _fail_all(self, exc: BaseException) -> None:
        self.state = LaneState.CLOSED
        for guid, sink in list(self._sinks.by_guid.items()):
            sink.close(exc)
            waiter = self._waiters.pop(guid, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
        self._sinks.clear()

    async def aclose(self) -> None:
        """Unsubscribe nothing (the server forgets on close), close the socket, stop the loop."""
        self._closing = True
        transport = self._transport
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.send_close(picows.WSCloseCode.OK)
            transport.disconnect()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await transport.wait_disconnected()
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stop_silence_work()
        for bg in list(self._background):
            bg.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await settle(self._attempts, self._connect_timeout)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.cancel()
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
            "watched": len(self._watch),
            "resubscribes": self.resubscribes,
            "resubscribe_failures": self.resubscribe_failures,
            "last_restore_seconds": self.last_restore_seconds,
            "last_error": self.last_error,
        }
