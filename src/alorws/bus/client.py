"""``BusClient``: the consumer side of the gateway, with ``AlorClient``'s stream and order API.

::

    async with BusClient("nats://127.0.0.1:4222") as bus:
        async with bus.quotes("SBER") as quotes:
            async for q in quotes:          # the same Quote models as AlorClient gives
                print(q.last_price)
        ack = await bus.trading.place_limit(portfolio, "SBER", "buy", 1, price=300.0, guid=key)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Self, TypeVar, Unpack, cast

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from ..client.buffer import Policy, StreamBuffer
from ..client.lane import LaneEvent
from ..client.orders import OrderAck, OrderClient
from ..client.sources import (
    StreamMethods,
    StreamOptions,
    check_request,
    is_account,
    split_history,
    stream_name,
    takes_options,
)
from ..client.streams import StreamBase, buffer_bound, decode_inline, default_policy
from ..client.whole import StreamFilter, filter_for
from ..errors import (
    AlorError,
    ConnectError,
    FrameError,
    InvalidState,
    OrderStatusUnknown,
    TransportTimeout,
)
from ..lifecycle import StreamState
from ..protocol import requests as rq
from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from ..protocol.codec import decoder_for, model_for
from ..protocol.enums import Format, OrderStatus
from ..protocol.market import Bar, InstrumentPatch, OrderBook, Quote, Trade
from . import wire
from ._natslink import Interrupted, Lost, NatsLink, Retry, describe


#: Seconds to wait for the gateway to acknowledge an unsubscribe (the lease is the backstop).
_GOODBYE_WAIT = 2.0


__all__ = ["BusClient", "BusStream", "BusStreams", "BusTrading"]

log = logging.getLogger("alorws.bus")

M = TypeVar("M", bound=Model)
R = TypeVar("R")
P = ParamSpec("P")


class BusStream(StreamBase[M]):
    """One stream through the gateway: awaitable, async iterator, async context manager, like
    :class:`~alorws.client.Stream` (both are :class:`~alorws.client.DataStream`). Create it with
    the :class:`BusClient` methods."""

    def __init__(
        self,
        bus: BusClient,
        request: rq.SubscriptionRequest,
        model: type[M],
        *,
        policy: Policy,
        max_buffer: int,
        filter: StreamFilter | None,
        skip_history: bool = False,
        statuses: frozenset[OrderStatus] | None = None,
        name: str,
    ) -> None:
        super().__init__(
            request,
            model,
            policy=policy,
            account=is_account(request),
            name=name,
            logger=log,
        )
        self._bus = bus
        self.handle = uuid.uuid4().hex
        self.subject = wire.subject_for(bus.prefix, request)
        self._decoder = decoder_for(model, self._format)
        self._filter = filter
        self._skip_history = skip_history
        self._statuses = statuses
        self._buffer: StreamBuffer[Any] = StreamBuffer(policy, maxsize=max_buffer, name=name)
        self._sub: Subscription | None = None
        self._received = 0
        # Gap state: the consumer's own gap (its NATS connection, or no gateway holding the
        # stream), and the gateway's ALOR subscription restoring (its in-band events).
        self._own_gap = False
        self._lane_down = False
        self._gap_since = 0.0
        # Data arriving in the own gap, pushed after its ``restored``. Market data: the newest
        # ``max_buffer``. Account streams take nothing in a gap (JetStream keeps it; read again
        # from ``_last_seq + 1`` once the gateway holds the stream), only what the new read
        # brings before the gap ends: never cut, it goes through the buffer's overflow rule.
        self._held: deque[bytes] = deque(maxlen=None if self.account else max_buffer)
        self._restoring = False
        self._rejoining = False  # an account stream's new read is starting: take what it brings
        self._last_seq = 0  # account streams: the last JetStream sequence taken (or skipped)
        self._js_started = False  # read again from ``_last_seq + 1`` from now on

    # -- lifecycle ----------------------------------------------------------------------------

    async def subscribe(self) -> Self:
        """Subscribe (once) through the gateway; returns the stream. Raises what the gateway's
        client raised (``SubscriptionLimitError``, ``ServerRejected``, …)."""
        if not self._subscribing():
            return self
        bus = self._bus
        try:
            bus._check_connected()
            # Listen first, then ask: nothing published after the gateway's answer is missed.
            if self.account:
                psub = await self._read_jetstream()
                self._sub = psub
                if self._skip_history:
                    # Where "new" began: the point to read again from after an outage.
                    delivered = (await psub.consumer_info()).delivered
                    start = 0 if delivered is None else delivered.stream_seq or 0
                    self._last_seq = max(self._last_seq, start)
                self._js_started = True
            else:
                self._sub = await bus._nats().subscribe(self.subject, cb=self._on_msg)
            bus._streams[self.handle] = self
            await self._ask()
        except BaseException:
            self._state = StreamState.CLOSED
            self._buffer.close()
            bus._streams.pop(self.handle, None)
            await self._drop_sub()
            raise
        self._state = StreamState.OPEN
        return self

    async def _read_jetstream(self) -> JetStreamContext.PushSubscription:
        """An ordered consumer of the account stream from the message after the last one
        taken (at first: everything, or only new messages with ``skip_history``)."""
        bus = self._bus
        config: ConsumerConfig | None = None
        if self._js_started:
            policy = DeliverPolicy.BY_START_SEQUENCE
            config = ConsumerConfig(opt_start_seq=self._last_seq + 1)
        else:
            policy = DeliverPolicy.NEW if self._skip_history else DeliverPolicy.ALL
        try:
            return await bus._jetstream().subscribe(
                self.subject,
                cb=self._on_msg,
                stream=wire.account_stream_name(bus.prefix),
                ordered_consumer=True,
                deliver_policy=policy,
                config=config,
            )
        except nats.errors.Error as exc:
            raise ConnectError(
                f"{self.name}: cannot read the account stream "
                f"{wire.account_stream_name(bus.prefix)}: {describe(exc)}"
            ) from None

    async def _ask(self) -> None:
        ctl = wire.SubscribeCtl(
            consumer=self._bus.consumer_id,
            handle=self.handle,
            request=cast("rq.AnySubscriptionRequest", self.request),
        )
        reply = await self._bus._ctl("subscribe", ctl, wire.SubscribeReply)
        if reply.subject and reply.subject != self.subject:
            raise FrameError(
                f"the gateway serves {self.name} on {reply.subject}, not {self.subject}"
            )
        if Format(reply.format) is not self._format:
            self._format = Format(reply.format)
            self._decoder = decoder_for(self.model, self._format)
        self._bus._lease_is(reply.lease)
        if len(reply.snapshot) > 0 and self._received == 0:
            self._deliver(bytes(reply.snapshot))

    # -- gaps ---------------------------------------------------------------------------------
    #
    # One ``disconnected`` and one ``restored`` per gap, whatever its causes: the consumer's
    # NATS connection lost, no gateway answering or the gateway forgetting the stream (the
    # "own" gap, ended by a renewal the gateway answers), and the gateway's ALOR subscription
    # restoring (its events, in band). A cause arising during another gap is folded into it.

    @property
    def in_gap(self) -> bool:
        """True between a ``disconnected`` and the ``restored`` that ends it."""
        return self._own_gap or self._lane_down

    def _deliver(self, data: bytes) -> None:
        if self._own_gap:  # after the ``restored`` that ends the gap, as on a direct client
            self._held.append(data)
        else:
            self._buffer.push(data)

    def _gap_starts(self, why: str) -> None:
        if self._state is not StreamState.OPEN or self._own_gap:
            return
        self._own_gap = True
        if not self._lane_down:
            self._gap_since = time.monotonic()
            self._buffer.push_event(LaneEvent("disconnected", 0, why))

    def _gap_ends(self, why: str, lane_down: bool) -> None:
        """The stream is held again; ``lane_down``: the gateway's ALOR subscription is still
        restoring (its own ``restored`` will end the gap)."""
        if self._state is not StreamState.OPEN or not self._own_gap:
            return
        self._own_gap = False
        self._lane_down = lane_down
        if not lane_down:
            downtime = time.monotonic() - self._gap_since
            self._buffer.push_event(LaneEvent("restored", 0, why, downtime))
        held, self._held = self._held, deque(maxlen=self._held.maxlen)
        for data in held:
            self._buffer.push(data)

    def _in_band(self, event: LaneEvent, outage: str | None) -> None:
        """An event the gateway published on the data subject (its ALOR subscription, or an
        outage of its own NATS connection)."""
        if self._own_gap:
            # Folded into the consumer's own gap; the renewal ending it says whether the ALOR
            # subscription is still restoring.
            return
        if outage is not None and outage in self._bus._covered:
            return  # an outage the consumer's own gap already covered
        if event.kind == "restored":
            if not self._lane_down:
                return  # no gap to end (its start was folded into one that ended)
            self._lane_down = False
        else:
            if not self._lane_down:
                self._gap_since = time.monotonic()
            self._lane_down = True
        self._buffer.push_event(event)

    def _needs_restore(self) -> bool:
        return self._own_gap or (self.account and self._sub is None)

    async def _restore(self, missing: bool, lane_down: bool, generation: int) -> None:
        """Hold the stream again after a gap: subscribe again if the gateway forgot it
        (restart, failover, lease expired), read the account stream again from where it
        stopped, then end the gap. If that fails the stream stays in its gap; the next
        renewal tries again.

        An account stream reads JetStream again only once the gateway answered: what is
        stored meanwhile stays there (nothing is held in memory while the answer can take up
        to ``request_timeout``), and the gap ends right after the new read starts."""
        if self._restoring:
            return
        self._restoring = True
        try:
            if missing:
                self._gap_starts("the gateway lost the subscription")
            if self.account and self._own_gap:
                await self._drop_sub()  # its messages since the gap started were not taken
            if missing:
                try:
                    await self._ask()
                except AlorError as exc:
                    log.warning(
                        "%s: subscribing again through the gateway failed: %s", self.name, exc
                    )
                    return
            if self.account and self._sub is None:
                self._rejoining = True
                if not await self._rejoin(generation):
                    return
            if self._bus._link.disconnects == generation:
                why = "subscribed again through the gateway" if missing else "held again"
                self._gap_ends(why, lane_down)
        finally:
            self._restoring = False
            self._rejoining = False

    async def _rejoin(self, generation: int) -> bool:
        """Read the account stream again after the last message taken (the server's consumer
        may be gone with a restart); retried until it works or the connection is lost again."""
        bus = self._bus
        retry = Retry(log)
        delays = retry.delays()
        while self.is_open and bus._link.disconnects == generation:
            try:
                sub = await self._read_jetstream()
            except AlorError as exc:
                await retry.failed(delays, "%s: %s; retrying", self.name, exc)
                continue
            if not self.is_open or bus._link.disconnects != generation:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                return False
            self._sub = sub
            retry.worked("%s: reading the account stream again", self.name)
            return True
        return False

    async def aclose(self) -> None:
        """Unsubscribe (the gateway's ALOR subscription ends when its last holder leaves)."""
        if self._state is StreamState.CLOSED:
            return
        was_open = self._state is StreamState.OPEN
        self._state = StreamState.CLOSED
        self._buffer.close()
        self._bus._streams.pop(self.handle, None)
        await self._drop_sub()
        if was_open:
            ctl = wire.UnsubscribeCtl(consumer=self._bus.consumer_id, handle=self.handle)
            # Bounded: a gateway that lost this request (its connection going down as it was
            # routed to it) releases the stream when the lease runs out anyway.
            with contextlib.suppress(AlorError):
                await self._bus._ctl("unsubscribe", ctl, wire.RenewReply, _GOODBYE_WAIT)

    async def _drop_sub(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        if self.account:
            if self._own_gap and not self._rejoining:
                return  # not taken: read again from ``_last_seq + 1`` when the gap ends
            seq = _stream_seq(msg)
            if seq is not None:
                if seq <= self._last_seq:
                    return  # a copy from the consumer an outage replaced
                self._last_seq = seq
        self._received += 1
        headers = msg.headers
        if headers and wire.EVENT_HEADER in headers:
            try:
                event = msgspec.json.decode(msg.data, type=LaneEvent)
            except Exception:  # a malformed event is still the gap marker its header names
                event = LaneEvent(str(headers[wire.EVENT_HEADER]), 0)
            self._in_band(event, headers.get(wire.OUTAGE_HEADER))
            return
        if self._own_gap:
            self._held.append(msg.data)
            return
        self._buffer.push(msg.data)

    # -- consuming ----------------------------------------------------------------------------

    async def get(self) -> M:
        """The next message (see :meth:`alorws.client.Stream.get`)."""
        if self._state is StreamState.NEW:
            await self.subscribe()
        while True:
            obj = self._handle(await self._buffer.get())
            if obj is not None:
                return obj

    async def get_batch(self, max_items: int = 1000) -> list[M]:
        """Everything available now (at least one message, at most ``max_items``)."""
        if self._state is StreamState.NEW:
            await self.subscribe()
        while True:
            items = await self._buffer.get_batch(max_items)
            out: list[M]
            if self._filter is None and self._statuses is None:  # the hot path (market data)
                out = decode_inline(items, self._decoder.decode, self._handle, frames=False)
            else:
                out = [obj for item in items if (obj := self._handle(item)) is not None]
            if out:
                return out

    def _handle(self, item: Any) -> M | None:
        if isinstance(item, LaneEvent):
            if item.kind == "restored" and self._filter is not None:
                self._filter.restored()
            self._notify(item)
            return None
        try:
            obj: M = self._decoder.decode(item)
        except Exception as exc:  # any failure to decode (RecursionError too) skips the item
            self._bad(item, exc, frame=False)
            return None
        if self._filter is not None and not self._filter.accept(obj):
            return None
        if (
            self._statuses is not None
            and getattr(obj, "existing", False)
            and getattr(obj, "status", None) not in self._statuses
        ):
            return None  # ``statuses`` filters the history replay only, as on ALOR
        return obj

    def stats(self) -> dict[str, Any]:
        """Buffer counters, messages received, bad payloads, duplicates filtered, events."""
        out: dict[str, Any] = dict(self._buffer.stats())
        out.update(
            name=self.name,
            subject=self.subject,
            received=self._received,
            bad_payloads=self.bad_payloads,
            duplicates=self._filter.duplicates if self._filter is not None else 0,
            events=sum(self.event_counts.values()),
            in_gap=self.in_gap,
        )
        return out

    def __repr__(self) -> str:
        return f"<BusStream {self.name} {self.subject} {self._state}>"


#: The typed stream methods of a :class:`BusClient`: each returns ``BusStream[<its model>]``.
BusStreams = StreamMethods[
    BusStream[Quote],
    BusStream[OrderBook],
    BusStream[Bar],
    BusStream[Trade],
    BusStream[InstrumentPatch],
    BusStream[Position],
    BusStream[Summary],
    BusStream[Risk],
    BusStream[SpectraRisk],
    BusStream[OwnTrade],
    BusStream[Order],
    BusStream[StopOrder],
]


def _forward(
    op: Callable[Concatenate[OrderClient, P], Coroutine[Any, Any, OrderAck]],
) -> Callable[Concatenate[BusTrading, P], Coroutine[Any, Any, OrderAck]]:
    """``OrderClient``'s operation ``op`` through the gateway, with its signature and docstring:
    the arguments given (None left out, as ``op`` reads them) go to the gateway, which calls
    ``op`` of its client by name (``wire.ORDER_OPS``); ``guid`` is the idempotency key."""
    signature = inspect.signature(op)
    name = op.__name__

    async def forward(self: BusTrading, /, *args: P.args, **kwargs: P.kwargs) -> OrderAck:
        # A call op would refuse (a missing or unknown argument) fails here, before sending.
        given = signature.bind(None, *args, **kwargs).arguments
        given.pop("self", None)
        guid = given.pop("guid", None)
        return await self._send(name, guid, **given)

    functools.update_wrapper(forward, op)  # name, docstring, and the signature (__wrapped__)
    forward.__qualname__ = f"BusTrading.{name}"
    forward.__doc__ = f"Through the gateway (see :class:`BusTrading`): {op.__doc__ or ''}"
    return forward


class BusTrading:
    """Orders through the gateway, with :class:`~alorws.client.OrderClient`'s operations and
    signatures: every ``place_*``, ``modify_*`` and ``cancel``.

    ``guid`` is the idempotency key (default: a fresh uuid4): the gateway maps it to the
    ``/cws`` guid, so sending the same key again never places a second order. A request that
    gets no answer, or whose answer may be lost with the NATS connection, is sent again with
    the same key, ``attempts`` times in all; so is one waiting when a gateway announces itself
    (a new leader after a failover never got it; the one that did joins the copy to the command
    in flight or answers it from its cache). While the NATS connection is down the request
    waits for it, and while no gateway serves (a failover) for one, each up to ``timeout``.

    Outcomes, as :class:`~alorws.client.OrderClient`'s: an :class:`OrderAck`;
    :class:`~alorws.errors.OrderRejected` (not executed);
    :class:`~alorws.errors.OrderStatusUnknown` (it was sent and may have been executed: send it
    again with the same ``guid``); :class:`~alorws.errors.TransportTimeout` (never sent: NATS
    did not come back in time) or :class:`~alorws.errors.ConnectError` (never sent: no
    gateway answers).
    """

    def __init__(self, bus: BusClient, *, timeout: float, attempts: int) -> None:
        self._bus = bus
        self._timeout = timeout
        self._attempts = max(1, attempts)
        #: Requests sent again with the same key (no answer in time, or the connection lost).
        self.resent = 0
        #: Requests sent again with the same key because a gateway announced itself meanwhile.
        self.resent_on_announce = 0

    # OrderClient's operations, each with its signature and docstring (see _forward).
    place_market = _forward(OrderClient.place_market)
    place_limit = _forward(OrderClient.place_limit)
    place_stop = _forward(OrderClient.place_stop)
    place_stop_limit = _forward(OrderClient.place_stop_limit)
    modify_market = _forward(OrderClient.modify_market)
    modify_limit = _forward(OrderClient.modify_limit)
    modify_stop = _forward(OrderClient.modify_stop)
    modify_stop_limit = _forward(OrderClient.modify_stop_limit)
    cancel = _forward(OrderClient.cancel)

    async def _send(self, op: str, guid: str | None, **args: Any) -> OrderAck:
        key = guid or uuid.uuid4().hex
        ctl = wire.OrderCtl(
            consumer=self._bus.consumer_id,
            key=key,
            args={k: v for k, v in args.items() if v is not None},
        )
        payload = msgspec.json.encode(ctl)
        bus = self._bus
        subject = f"{bus.prefix}.orders.{op}"
        reached = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout  # for NATS and a gateway to be there at all
        attempts = absent = 0
        while attempts < self._attempts:
            if not await bus._wait_connected(deadline - loop.time()):
                break
            # An announcement ends the wait for the answer only while a send is left for it.
            announced = bus._announced
            until = announced if attempts + 1 < self._attempts else None
            try:
                msg = await bus._request(subject, payload, self._timeout, until=until)
            except nats.errors.NoRespondersError:
                # Nobody got it: no gateway serves right now (a failover?); wait for one, or
                # for its announcement.
                if loop.time() >= deadline:
                    break
                await _first_of(announced, min(0.05 * 2**absent, 0.5))
                absent += 1
                continue
            except _Announced:
                # A gateway started serving (or came back to NATS) while we waited: a new
                # leader never got the request. Send it again now, with the same key.
                reached = True
                attempts += 1
                self.resent_on_announce += 1
                continue
            except nats.errors.TimeoutError:
                reached = True  # it may have reached the gateway: retry with the same key
                attempts += 1
                self.resent += 1
                continue
            except _Lost:
                # Sent, and the connection is gone: the reply may be lost with it. Send it
                # again with the same key once NATS is back (the gateway answers from its
                # cache, or joins the command in flight).
                reached = True
                attempts += 1
                self.resent += 1
                deadline = max(deadline, loop.time() + self._timeout)
                continue
            except _NotSent:
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(0.05)
                continue
            try:
                reply = msgspec.json.decode(msg.data, type=wire.OrderReply)
            except Exception as exc:
                # It reached a gateway, so the order may have been placed: say so, not "bad".
                raise OrderStatusUnknown(
                    key, f"the gateway's reply cannot be read ({type(exc).__name__}: {exc})"
                ) from None
            wire.raise_error(reply.error)
            if reply.ack is None:
                raise FrameError("the gateway's order reply has neither ack nor error", msg.data)
            a = reply.ack
            return OrderAck(a.order_number, a.http_code, a.message, a.guid)
        if reached:
            raise OrderStatusUnknown(
                key, f"no reply from the gateway after {attempts} attempt(s) (NATS or gateway lost)"
            )
        if not bus._link.connected:
            raise TransportTimeout(
                f"the NATS connection to {bus._link.url} did not come back within "
                f"{self._timeout} s; the order was not sent"
            )
        raise ConnectError(
            f"no gateway answers on {subject} (prefix {bus.prefix!r}); the order was not sent"
        )


class BusClient(BusStreams):
    """A consumer of a :class:`~alorws.gateway.Gateway` over NATS, with ``AlorClient``'s API:
    the same stream methods (:class:`~alorws.client.sources.StreamMethods`) and ``trading``
    (:class:`BusTrading`).

    A strategy written against ``AlorClient`` runs unchanged: same models, same default buffer
    policies, same errors (a gateway's error reply is rebuilt into the same alorws exception).
    Market data arrives on core NATS subjects; account streams come from the gateway's JetStream
    stream (by default everything it holds, so a consumer that was offline catches up), filtered
    like ``AlorClient``'s: each trade is seen once, an order each time it moves further along, never
    twice in the same state (states of a gap arrive merged, as with ``AlorClient``). Every consumer
    holds its subscriptions under a lease, renewed in the background; if the gateway forgot them
    (a restart, a failover to a standby gateway, an expired lease) they are subscribed again. A
    gateway that starts serving, or reconnects to NATS, announces itself: every consumer renews at
    once, and sends its pending orders again with their keys (a new leader never got them).

    Gaps look as they do on a direct ``AlorClient``: a stream gets one ``disconnected`` event when
    its data may stop (the consumer's NATS connection is lost, no gateway answers, the gateway
    forgot the stream, the gateway's ALOR connection dropped, or the gateway dropped data while its
    own NATS connection was down) and one ``restored``, with the downtime, once it is held again,
    however many of these causes overlap; never an error. After a lost NATS connection the gap ends
    when the gateway answers a renewal, and account streams read the JetStream stream again from
    the message after the last one taken (the server's consumer may not survive a restart), so
    nothing is lost or repeated. Orders wait for the connection, and one whose answer may have been
    lost with it is sent again with the same idempotency key.

    Args:
        nats_url: the NATS server the gateway serves on.
        prefix: the gateway's subject prefix.
        format: default wire format of market data streams (as ``AlorClient``'s).
        request_timeout: seconds to wait for a control reply (a subscribe waits for ALOR's
            confirmation at the gateway, so keep it above the gateway client's).
        order_timeout, order_attempts: per-attempt timeout and attempts of order requests.
        max_buffer: default bound of lossless stream buffers.
        consumer_id: this consumer's id at the gateway (default: random).
    """

    def __init__(
        self,
        nats_url: str,
        *,
        prefix: str = "alorws",
        format: Format | str = Format.SIMPLE,
        request_timeout: float = 20.0,
        order_timeout: float = 12.0,
        order_attempts: int = 3,
        max_buffer: int = 100_000,
        consumer_id: str | None = None,
    ) -> None:
        self.nats_url = nats_url
        self.prefix = prefix
        self.format = Format(format)
        self.consumer_id = consumer_id or uuid.uuid4().hex
        self._request_timeout = request_timeout
        self._max_buffer = max_buffer
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._streams: dict[str, BusStream[Any]] = {}
        self._lease = 10.0
        self._renewer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.trading = BusTrading(self, timeout=order_timeout, attempts=order_attempts)
        self.renewals = 0
        self._renew_failing = False
        self._failing_since = 0.0
        self._failure_logged = False
        self._wake = asyncio.Event()
        self._leader_sub: Subscription | None = None
        self.leaders_seen = 0
        # Resolved, and replaced, when a gateway announces itself (pending orders are re-sent).
        self._announced: asyncio.Future[None] | None = None
        self._link = NatsLink(
            log,
            f"bus {self.consumer_id[:12]}",
            nats_url,
            on_lost=self._nats_lost,
            on_back=self._nats_back,
        )
        self._recovering = False  # the next answered renewal ends an outage
        self._covered: deque[str] = deque(maxlen=64)  # gateway outages our own gaps covered

    def __repr__(self) -> str:
        return f"<BusClient {self._link.url} {self.prefix} consumer={self.consumer_id}>"

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> BusClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect to NATS and start renewing the lease."""
        if self._nc is not None:
            raise InvalidState("the bus client is already started")
        self._nc = await self._link.connect(name=f"alorws-bus-{self.consumer_id}")
        self._js = self._nc.jetstream()
        self._announced = asyncio.get_running_loop().create_future()
        self._leader_sub = await self._nc.subscribe(
            wire.leader_subject(self.prefix), cb=self._on_leader
        )
        self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    async def _on_leader(self, msg: Msg) -> None:
        """A gateway started serving (or is back on NATS): renew now (it may know none of our
        handles), and send pending orders again (it may never have got them)."""
        self.leaders_seen += 1
        announced, self._announced = self._announced, asyncio.get_running_loop().create_future()
        if announced is not None and not announced.done():
            announced.set_result(None)
        self._wake.set()

    async def _nats_lost(self) -> None:
        """The NATS connection is lost: every stream's gap starts now (nats-py reconnects)."""
        self._recovering = True
        for stream in list(self._streams.values()):
            if not stream.is_open:
                continue
            stream._gap_starts("the NATS connection was lost")
            if stream.account:
                # The server's consumer may not survive the outage: read again, after the
                # last message taken, once the gateway answers.
                await stream._drop_sub()

    async def _nats_back(self) -> None:
        """Connected again (nats-py re-sent the core subscriptions): renew now; the answer
        ends the streams' gaps."""
        self._wake.set()

    def _check_connected(self) -> None:
        if not self._nats().is_connected:
            raise _NotSent(
                f"the NATS connection to {self._link.url} is down (reconnecting); nothing was sent"
            )

    async def _wait_connected(self, seconds: float) -> bool:
        """True once the NATS connection is up (at once if it is), False after ``seconds``."""
        if self._nats().is_connected:
            return True
        if seconds <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._link.up.wait()
        return self._nats().is_connected

    async def _request(
        self,
        subject: str,
        payload: bytes,
        wait: float,
        *,
        until: asyncio.Future[None] | None = None,
    ) -> Msg:
        """A NATS request that fails fast when the connection is down (:class:`_NotSent`) or
        lost before the answer (:class:`_Lost`), or when ``until`` is resolved first
        (:class:`_Announced`); nats-py's own errors otherwise."""
        nc = self._nats()
        self._check_connected()
        try:
            return await self._link.unless_lost(nc.request(subject, payload, timeout=wait), until)
        except Lost:
            raise _Lost(
                f"the NATS connection to {self._link.url} was lost before the answer"
            ) from None
        except Interrupted:
            raise _Announced("a gateway announced itself before the answer") from None
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            raise
        except nats.errors.Error as exc:  # OutboundBufferLimitError, ConnectionClosedError…
            raise _NotSent(f"NATS refused the request: {describe(exc)}") from None

    async def aclose(self) -> None:
        """Close every stream, release everything at the gateway, disconnect."""
        if self._nc is None:
            return
        self._link.closing = True  # from here on, a lost connection is no gap to report
        for stream in list(self._streams.values()):
            stream._state = StreamState.CLOSED
            stream._buffer.close()
            await stream._drop_sub()
        self._streams.clear()
        if self._renewer is not None:
            self._renewer.cancel()
        if self._leader_sub is not None:
            with contextlib.suppress(Exception):
                await self._leader_sub.unsubscribe()
            self._leader_sub = None
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(AlorError):
            await self._ctl(
                "unsubscribe",
                wire.UnsubscribeCtl(consumer=self.consumer_id),
                wire.RenewReply,
                _GOODBYE_WAIT,
            )
        self._nc = None
        await self._link.close()  # requests still waiting end now

    def _nats(self) -> NatsClient:
        if self._nc is None:
            raise InvalidState("the bus client is not started: use `async with BusClient(...)`")
        return self._nc

    def _jetstream(self) -> JetStreamContext:
        self._nats()
        assert self._js is not None
        return self._js

    # -- control ------------------------------------------------------------------------------

    async def _ctl(
        self, op: str, ctl: msgspec.Struct, reply_type: type[R], wait: float | None = None
    ) -> R:
        subject = f"{self.prefix}.ctl.{op}"
        wait = self._request_timeout if wait is None else wait
        try:
            msg = await self._request(subject, msgspec.json.encode(ctl), wait)
        except nats.errors.NoRespondersError:
            raise ConnectError(
                f"no gateway answers on {subject}: is `alorws gateway` running with prefix "
                f"{self.prefix!r} on {self._link.url}?"
            ) from None
        except nats.errors.TimeoutError:
            raise TransportTimeout(f"the gateway did not answer {op} within {wait} s") from None
        try:
            error = msgspec.json.decode(msg.data, type=_ErrorOnly).error
        except Exception as exc:  # RecursionError too: a bad reply is a FrameError, nothing else
            raise FrameError(f"bad gateway reply to {op}: {exc}", msg.data) from None
        wire.raise_error(error)
        try:
            return msgspec.json.decode(msg.data, type=reply_type)
        except Exception as exc:
            raise FrameError(f"bad gateway reply to {op}: {exc}", msg.data) from None

    def _lease_is(self, lease: float) -> None:
        if lease > 0 and lease != self._lease:
            self._lease = lease
            self._wake.set()  # renew now: the next renewal is due a third of it later

    async def _renew_loop(self) -> None:
        while True:
            period = self._lease / 3
            if self._renew_failing or any(s._needs_restore() for s in self._streams.values()):
                period = min(period, 0.5)  # no gateway answers, or a gap to end: look again soon
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._wake.wait()
            self._wake.clear()
            # A wake-up while a renewal waits (a gateway announced itself: the one that got
            # it may have lost it with its connection) renews again at once.
            renewal = asyncio.ensure_future(self.renew())
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait((renewal, woken), return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
                if not renewal.done():
                    renewal.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewal
            if not renewal.cancelled() and renewal.exception() is not None:
                # Never end the renewals; an expected failure is an AlorError, handled inside.
                exc = renewal.exception()
                log.error("bus: renewing the lease failed unexpectedly", exc_info=exc)

    async def renew(self) -> None:
        """Renew the lease now; end the gaps of streams the gateway holds, subscribe again
        what it no longer holds."""
        handles = [h for h, s in self._streams.items() if s.is_open]
        if not handles or self._nc is None or not self._nc.is_connected:
            return  # while NATS is down the streams are in their gap; renewed once back
        generation = self._link.disconnects
        ctl = wire.RenewCtl(consumer=self.consumer_id, handles=handles)
        try:
            reply = await self._ctl("renew", ctl, wire.RenewReply, max(0.5, self._lease / 3))
        except AlorError as exc:
            if generation != self._link.disconnects:
                return  # the NATS connection was lost meanwhile: its line says so
            now = time.monotonic()
            if not self._renew_failing:
                self._renew_failing = True
                self._failing_since = now
                self._failure_logged = False
            # Once per outage, not every renewal; right after a reconnect the gateway may just
            # not be back yet, so only if that lasts a lease.
            if not self._failure_logged and (
                not self._recovering or now - self._failing_since >= self._lease
            ):
                self._failure_logged = True
                log.warning("bus: renewing the lease failed: %s", exc)
            if isinstance(exc, ConnectError):  # no gateway at all: data stopped for sure
                for handle in handles:
                    stream = self._streams.get(handle)
                    if stream is not None:
                        stream._gap_starts("no gateway answers")
            return
        if generation != self._link.disconnects:
            return  # an answer from before the connection was lost ends nothing
        if self._renew_failing and self._failure_logged:
            log.info("bus: the gateway answers again")
        if (self._renew_failing or self._recovering) and reply.epoch:
            self._covered.append(reply.epoch)  # its outage markers are ours already
        self._renew_failing = False
        self._recovering = False
        self.renewals += 1
        self._lease_is(reply.lease)
        missing = set(reply.missing)
        down = set(reply.down)
        for handle in handles:
            stream = self._streams.get(handle)
            if stream is None or not stream.is_open:
                continue
            if handle in missing or stream._needs_restore():
                restore = stream._restore(handle in missing, handle in down, generation)
                task = asyncio.get_running_loop().create_task(restore)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    # -- streams ------------------------------------------------------------------------------
    #
    # The typed methods (quotes, order_book, …, stop_orders) are StreamMethods', shared with
    # AlorClient and Replay; they build the request and call stream().

    @takes_options(StreamOptions)
    def stream(
        self, request: rq.SubscriptionRequest, **options: Unpack[StreamOptions]
    ) -> BusStream[Any]:
        """The typed stream of any subscription request through the gateway (not yet
        subscribed), as :meth:`alorws.client.AlorClient.stream`: the same model, default policy
        and filters. Account streams read the gateway's JetStream stream of the portfolio,
        stream and exchange and apply ``skip_history`` and ``order_statuses`` on this side.
        ``silence_timeout`` is unused: the gateway's client watches its subscriptions."""
        self._nats()
        _, skip_history = split_history(check_request(request))
        model = model_for(type(request).opcode)
        statuses = getattr(request, "order_statuses", None)
        return BusStream(
            self,
            request,
            model,
            policy=default_policy(model, options.get("policy")),
            max_buffer=buffer_bound(options.get("max_buffer"), self._max_buffer),
            filter=filter_for(model, skip_history=skip_history),
            skip_history=skip_history,
            statuses=frozenset(statuses) if isinstance(statuses, tuple) else None,
            name=stream_name(request),
        )

    def _default_format(self) -> Format:
        return self.format

    def _bars_from(self) -> int:
        # The current minute: consumers asking at about the same time share a subscription.
        return (int(time.time()) // 60) * 60

    def stats(self) -> dict[str, Any]:
        """Streams, lease and renewals, and the NATS connection (connected, disconnects,
        reconnects, failed attempts of the current outage)."""
        return {
            "consumer": self.consumer_id,
            "lease": self._lease,
            "renewals": self.renewals,
            "nats": self._link.stats(),
            "streams": [s.stats() for s in list(self._streams.values())],
        }


def _stream_seq(msg: Msg) -> int | None:
    """The JetStream sequence of an account message (None if it has no JetStream metadata)."""
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:
        return None


class _NotSent(ConnectError):
    """The request was not sent: the NATS connection is down (or the client closed)."""


class _Lost(ConnectError):
    """The NATS connection was lost after the request was sent: it may have been answered."""


class _Announced(ConnectError):
    """A gateway announced itself after the request was sent: it may never get an answer."""


async def _first_of(event: asyncio.Future[None] | None, seconds: float) -> None:
    """Return when ``event`` is resolved or after ``seconds``, whichever comes first."""
    if event is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await asyncio.shield(event)


class _ErrorOnly(msgspec.Struct):
    error: wire.ErrorInfo | None = None
