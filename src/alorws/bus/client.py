"""``BusClient``: the consumer side of the gateway, with ``AlorClient``'s stream and order API.

::

    async with BusClient("nats://127.0.0.1:4222") as bus:
        async with bus.quotes("SBER") as quotes:
            async for q in quotes:          # the same Quote models as AlorClient gives
                print(q.last_price)
        ack = await bus.trading.place_limit(portfolio, "SBER", "buy", 1, price=300.0, guid=key)

A strategy written against ``AlorClient`` runs unchanged: same models, same default buffer
policies, same errors (a gateway's error reply is rebuilt into the same alorws exception).
Market data arrives on core NATS subjects; account streams come from the gateway's JetStream
stream (by default everything it holds, so a consumer that was offline catches up), filtered
like ``AlorClient``'s: each trade is seen once, an order each time it moves further along, never
twice in the same state (states of a gap arrive merged, as with ``AlorClient``). Every consumer
holds its subscriptions under a lease, renewed in the background; if the gateway forgot them
(a restart, a failover to a standby gateway, an expired lease) they are subscribed again, and
the stream gets a ``disconnected`` event when no gateway answers (or it forgot the stream) and
``restored`` once the stream is held again: a gap marker, never an error. A gateway that starts
serving announces itself, and every consumer renews at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any, Generic, TypeVar, cast

import msgspec
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from ..client._badframes import BadFrameLog
from ..client.buffer import Policy, StreamBuffer
from ..client.lane import LaneEvent
from ..client.orders import OrderAck
from ..client.streams import (
    bad_frame_error,
    decode_inline,
    default_policy,
    market_request,
    portfolio_request,
)
from ..client.whole import StreamFilter, filter_for
from ..errors import (
    AlorError,
    ConnectError,
    FrameError,
    InvalidState,
    OrderStatusUnknown,
    StreamClosed,
    TransportTimeout,
)
from ..protocol import requests as rq
from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, Position, Risk, StopOrder, Summary
from ..protocol.codec import decoder_for
from ..protocol.enums import Exchange, Format, OrderStatus, OrderType, Side, TimeInForce
from ..protocol.market import Bar, OrderBook, Quote, Trade
from . import wire


#: Seconds for the first NATS connect (nats-py's default of 2 s fails on a loaded machine).
_CONNECT_TIMEOUT = 10.0


__all__ = ["BusClient", "BusStream", "BusTrading"]

log = logging.getLogger("alorws.bus")

M = TypeVar("M", bound=Model)
R = TypeVar("R")


class BusStream(Generic[M], AsyncIterator[M]):
    """One stream through the gateway: awaitable, async iterator, async context manager, like
    :class:`~alorws.client.Stream`. Create it with the :class:`BusClient` methods."""

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
        self._bus = bus
        self.request = request
        self.model = model
        self.policy = policy
        self.name = name
        self.handle = uuid.uuid4().hex
        self.account = type(request).opcode in wire.ACCOUNT_OPCODES
        self.subject = wire.subject_for(bus.prefix, request)
        self._format = Format(request.format)
        self._decoder = decoder_for(model, self._format)
        self._filter = filter
        self._skip_history = skip_history
        self._statuses = statuses
        self._buffer: StreamBuffer[Any] = StreamBuffer(policy, maxsize=max_buffer, name=name)
        self._sub: Subscription | None = None
        self._state = "new"  # new -> subscribing -> open -> closed
        self._received = 0
        self.events: list[LaneEvent] = []
        self._callbacks: list[Callable[[LaneEvent], object]] = []
        self.bad_payloads = 0
        self._bad_log = BadFrameLog(log, name)
        self._in_gap = False
        self._resubscribing = False

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True between a confirmed subscribe and the unsubscribe."""
        return self._state == "open"

    def __await__(self) -> Generator[Any, None, BusStream[M]]:
        return self.subscribe().__await__()

    async def subscribe(self) -> BusStream[M]:
        """Subscribe (once) through the gateway; returns the stream. Raises what the gateway's
        client raised (``SubscriptionLimitError``, ``ServerRejected``, …)."""
        if self._state == "open":
            return self
        if self._state != "new":
            raise InvalidState(f"{self.name}: cannot subscribe a stream that is {self._state}")
        self._state = "subscribing"
        bus = self._bus
        try:
            # Listen first, then ask: nothing published after the gateway's answer is missed.
            if self.account:
                policy = DeliverPolicy.NEW if self._skip_history else DeliverPolicy.ALL
                self._sub = await bus._jetstream().subscribe(
                    self.subject,
                    cb=self._on_msg,
                    stream=wire.account_stream_name(bus.prefix),
                    ordered_consumer=True,
                    deliver_policy=policy,
                )
            else:
                self._sub = await bus._nats().subscribe(self.subject, cb=self._on_msg)
            bus._streams[self.handle] = self
            await self._ask()
        except BaseException:
            self._state = "closed"
            self._buffer.close()
            bus._streams.pop(self.handle, None)
            await self._drop_sub()
            raise
        self._state = "open"
        return self

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
            self._buffer.push(bytes(reply.snapshot))

    def _gap_starts(self, why: str) -> None:
        if not self._in_gap and self._state == "open":
            self._in_gap = True
            self._buffer.push_event(LaneEvent("disconnected", 0, why))

    def _gap_ends(self, why: str) -> None:
        if self._in_gap and self._state == "open":
            self._in_gap = False
            self._buffer.push_event(LaneEvent("restored", 0, why))

    async def _resubscribe(self) -> None:
        """The gateway forgot this stream (restart, failover, lease expired): hold it again.
        If that fails the stream stays in its gap; the next renewal lists it again."""
        if self._resubscribing:
            return
        self._resubscribing = True
        try:
            self._gap_starts("the gateway lost the subscription")
            try:
                await self._ask()
            except AlorError as exc:
                log.warning("%s: subscribing again through the gateway failed: %s", self.name, exc)
                return
            self._gap_ends("subscribed again through the gateway")
        finally:
            self._resubscribing = False

    async def aclose(self) -> None:
        """Unsubscribe (the gateway's ALOR subscription ends when its last holder leaves)."""
        if self._state == "closed":
            return
        was_open = self._state == "open"
        self._state = "closed"
        self._buffer.close()
        self._bus._streams.pop(self.handle, None)
        await self._drop_sub()
        if was_open:
            ctl = wire.UnsubscribeCtl(consumer=self._bus.consumer_id, handle=self.handle)
            with contextlib.suppress(AlorError):
                await self._bus._ctl("unsubscribe", ctl, wire.RenewReply)

    async def _drop_sub(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def __aenter__(self) -> BusStream[M]:
        return await self.subscribe()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def on_event(self, callback: Callable[[LaneEvent], object]) -> None:
        """Call ``callback(event)`` on every ``disconnected``/``restored`` event."""
        self._callbacks.append(callback)

    async def _on_msg(self, msg: Msg) -> None:
        self._received += 1
        headers = msg.headers
        if headers and wire.EVENT_HEADER in headers:
            try:
                event = msgspec.json.decode(msg.data, type=LaneEvent)
            except Exception:  # a malformed event is still the gap marker its header names
                event = LaneEvent(str(headers[wire.EVENT_HEADER]), 0)
            self._buffer.push_event(event)
            return
        self._buffer.push(msg.data)

    # -- consuming ----------------------------------------------------------------------------

    def __aiter__(self) -> BusStream[M]:
        return self

    async def __anext__(self) -> M:
        try:
            return await self.get()
        except StreamClosed:
            raise StopAsyncIteration from None

    async def get(self) -> M:
        """The next message (see :meth:`alorws.client.Stream.get`)."""
        if self._state == "new":
            await self.subscribe()
        while True:
            obj = self._handle(await self._buffer.get())
            if obj is not None:
                return obj

    async def get_batch(self, max_items: int = 1000) -> list[M]:
        """Everything available now (at least one message, at most ``max_items``)."""
        if self._state == "new":
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
            self.events.append(item)
            if item.kind == "restored" and self._filter is not None:
                self._filter.restored()
            for cb in self._callbacks:
                try:
                    cb(item)
                except Exception:
                    log.exception("%s: on_event callback failed", self.name)
            return None
        try:
            obj: M = self._decoder.decode(item)
        except Exception as exc:  # any failure to decode (RecursionError too) skips the item
            self.bad_payloads += 1
            error = bad_frame_error(exc, item, self.model, self._format, frame=False)
            self._bad_log.report(error, type(exc).__name__)
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
            events=len(self.events),
        )
        return out

    def __repr__(self) -> str:
        return f"<BusStream {self.name} {self.subject} {self._state}>"


class BusTrading:
    """Orders through the gateway, with :class:`~alorws.client.OrderClient`'s signatures.

    ``guid`` is the idempotency key (default: a fresh uuid4): the gateway maps it to the
    ``/cws`` guid, so sending the same key again never places a second order. A request that
    gets no answer is retried with the same key, ``attempts`` times in all; while no gateway
    serves at all (a failover), the request waits up to ``timeout`` for one.
    """

    def __init__(self, bus: BusClient, *, timeout: float, attempts: int) -> None:
        self._bus = bus
        self._timeout = timeout
        self._attempts = max(1, attempts)

    async def place_limit(
        self,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        price: float,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        time_in_force: TimeInForce | str | None = None,
        iceberg_fixed: int | None = None,
        iceberg_variance: float | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Place a limit order (see :meth:`alorws.client.OrderClient.place_limit`)."""
        return await self._send(
            "place_limit",
            guid,
            portfolio=portfolio,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=price,
            exchange=exchange,
            board=board,
            time_in_force=time_in_force,
            iceberg_fixed=iceberg_fixed,
            iceberg_variance=iceberg_variance,
            comment=comment,
            allow_margin=allow_margin,
        )

    async def place_market(
        self,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        time_in_force: TimeInForce | str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Place a market order (see :meth:`alorws.client.OrderClient.place_market`)."""
        return await self._send(
            "place_market",
            guid,
            portfolio=portfolio,
            symbol=symbol,
            side=side,
            quantity=quantity,
            exchange=exchange,
            board=board,
            time_in_force=time_in_force,
            comment=comment,
            allow_margin=allow_margin,
        )

    async def cancel(
        self,
        order_id: str | int,
        portfolio: str,
        *,
        kind: OrderType | str = OrderType.LIMIT,
        exchange: Exchange | str = Exchange.MOEX,
        guid: str | None = None,
    ) -> OrderAck:
        """Cancel an order (see :meth:`alorws.client.OrderClient.cancel`)."""
        return await self._send(
            "cancel", guid, order_id=order_id, portfolio=portfolio, kind=kind, exchange=exchange
        )

    async def _send(self, op: str, guid: str | None, **args: Any) -> OrderAck:
        key = guid or uuid.uuid4().hex
        ctl = wire.OrderCtl(
            consumer=self._bus.consumer_id,
            key=key,
            args={k: v for k, v in args.items() if v is not None},
        )
        payload = msgspec.json.encode(ctl)
        subject = f"{self._bus.prefix}.orders.{op}"
        reached = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout  # for a gateway to answer at all (failover)
        attempts = absent = 0
        while attempts < self._attempts:
            try:
                msg = await self._bus._nats().request(subject, payload, timeout=self._timeout)
            except nats.errors.NoRespondersError:
                # Nobody got it: no gateway serves right now (a failover?); wait for one.
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(min(0.05 * 2**absent, 0.5))
                absent += 1
                continue
            except nats.errors.TimeoutError:
                reached = True  # it may have reached the gateway: retry with the same key
                attempts += 1
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
        if not reached:
            raise ConnectError(
                f"no gateway answers on {subject} (prefix {self._bus.prefix!r}); "
                "the order was not sent"
            )
        raise OrderStatusUnknown(
            key, f"no reply from the gateway after {self._attempts} attempt(s)"
        )


class BusClient:
    """A consumer of a :class:`~alorws.gateway.Gateway` over NATS, with ``AlorClient``'s API.

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
        self._wake = asyncio.Event()
        self._leader_sub: Subscription | None = None
        self.leaders_seen = 0

    def __repr__(self) -> str:
        return f"<BusClient {self.nats_url} {self.prefix} consumer={self.consumer_id}>"

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
        try:
            self._nc = await nats.connect(
                self.nats_url,
                name=f"alorws-bus-{self.consumer_id}",
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                connect_timeout=_CONNECT_TIMEOUT,
            )
        except Exception as exc:
            raise ConnectError(f"cannot connect to NATS at {self.nats_url}: {exc}") from exc
        self._js = self._nc.jetstream()
        self._leader_sub = await self._nc.subscribe(
            wire.leader_subject(self.prefix), cb=self._on_leader
        )
        self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    async def _on_leader(self, msg: Msg) -> None:
        """A gateway started serving: renew now (it may know none of our handles)."""
        self.leaders_seen += 1
        self._wake.set()

    async def aclose(self) -> None:
        """Close every stream, release everything at the gateway, disconnect."""
        nc, self._nc = self._nc, None
        if nc is None:
            return
        self._nc = nc  # still needed to say goodbye
        for stream in list(self._streams.values()):
            stream._state = "closed"
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
                "unsubscribe", wire.UnsubscribeCtl(consumer=self.consumer_id), wire.RenewReply, 2.0
            )
        self._nc = None
        await _close_nats(nc)

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
            msg = await self._nats().request(subject, msgspec.json.encode(ctl), timeout=wait)
        except nats.errors.NoRespondersError:
            raise ConnectError(
                f"no gateway answers on {subject}: is `alorws gateway` running with prefix "
                f"{self.prefix!r} on {self.nats_url}?"
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
            if self._renew_failing:  # no gateway answers: look again soon
                period = min(period, 0.5)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._wake.wait()
            self._wake.clear()
            await self.renew()

    async def renew(self) -> None:
        """Renew the lease now; subscribe again what the gateway no longer holds."""
        handles = [h for h, s in self._streams.items() if s.is_open]
        if not handles:
            return
        ctl = wire.RenewCtl(consumer=self.consumer_id, handles=handles)
        try:
            reply = await self._ctl("renew", ctl, wire.RenewReply, max(0.5, self._lease / 3))
        except AlorError as exc:
            if not self._renew_failing:  # once per outage, not every third of a lease
                log.warning("bus: renewing the lease failed: %s", exc)
            self._renew_failing = True
            if isinstance(exc, ConnectError):  # no gateway at all: data stopped for sure
                for handle in handles:
                    stream = self._streams.get(handle)
                    if stream is not None:
                        stream._gap_starts("no gateway answers")
            return
        if self._renew_failing:
            log.info("bus: the gateway answers again")
        self._renew_failing = False
        self.renewals += 1
        self._lease_is(reply.lease)
        missing = set(reply.missing)
        for handle in handles:
            stream = self._streams.get(handle)
            if stream is None or not stream.is_open:
                continue
            if handle in missing:
                task = asyncio.get_running_loop().create_task(stream._resubscribe())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif not stream._resubscribing:
                stream._gap_ends("the gateway answers again")

    # -- streams ------------------------------------------------------------------------------

    def _stream(
        self,
        request: rq.SubscriptionRequest,
        model: type[M],
        *,
        policy: Policy | str | None,
        max_buffer: int | None,
        name: str,
        skip_history: bool = False,
        statuses: Sequence[OrderStatus | str] | None = None,
    ) -> BusStream[M]:
        self._nats()
        return BusStream(
            self,
            request,
            model,
            policy=default_policy(model, policy),
            max_buffer=max_buffer or self._max_buffer,
            filter=filter_for(model, skip_history=skip_history),
            skip_history=skip_history,
            statuses=None if statuses is None else frozenset(OrderStatus(s) for s in statuses),
            name=name,
        )

    def quotes(
        self,
        code: str,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        format: Format | str | None = None,
        frequency: int | None = None,
        policy: Policy | str | None = None,
        max_buffer: int | None = None,
    ) -> BusStream[Quote]:
        """Quotes of one instrument; see :meth:`alorws.client.AlorClient.quotes`."""
        req = market_request(
            rq.QuotesRequest,
            code,
            exchange=exchange,
            board=board,
            format=format or self.format,
            frequency=frequency,
        )
        return self._stream(req, Quote, policy=policy, max_buffer=max_buffer, name=f"quotes {code}")

    def order_book(
        self,
        code: str,
        *,
        depth: int = 20,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        format: Format | str | None = None,
        frequency: int | None = None,
        policy: Policy | str | None = None,
        max_buffer: int | None = None,
    ) -> BusStream[OrderBook]:
        """The order book of one instrument; see :meth:`alorws.client.AlorClient.order_book`."""
        req = market_request(
            rq.OrderBookRequest,
            code,
            exchange=exchange,
            board=board,
            format=format or self.format,
            depth=depth,
            frequency=frequency,
        )
        return self._stream(
            req, OrderBook, policy=policy, max_buffer=max_buffer, name=f"book {code}"
        )

    def all_trades(
        self,
        code: str,
        *,
        depth: int | None = None,
        include_virtual_trades: bool | None = None,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        format: Format | str | None = None,
        policy: Policy | str | None = None,
        max_buffer: int | None = None,
    ) -> BusStream[Trade]:
        """The anonymous tape; see :meth:`alorws.client.AlorClient.all_trades`. (``depth``'s
        replay reaches only the consumer whose request opened the gateway's subscription.)"""
        req = market_request(
            rq.AllTradesRequest,
            code,
            exchange=exchange,
            board=board,
            format=format or self.format,
            depth=depth,
            include_virtual_trades=include_virtual_trades,
        )
        return self._stream(req, Trade, policy=policy, max_buffer=max_buffer, name=f"trades {code}")

    def bars(
        self,
        code: str,
        tf: int | str,
        *,
        from_: int | None = None,
        skip_history: bool = False,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        format: Format | str | None = None,
        frequency: int | None = None,
        policy: Policy | str | None = None,
        max_buffer: int | None = None,
    ) -> BusStream[Bar]:
        """Candles; see :meth:`alorws.client.AlorClient.bars`. ``from_`` defaults to the
        current minute so that consumers asking at about the same time share a subscription."""
        start = (int(time.time()) // 60) * 60 if from_ is None else from_
        req = market_request(
            rq.BarsRequest,
            code,
            exchange=exchange,
            board=board,
            format=format or self.format,
            tf=tf,
            from_=start,
            skip_history=skip_history,
            frequency=frequency,
        )
        return self._stream(req, Bar, policy=policy, max_buffer=max_buffer, name=f"bars {code}")

    def _portfolio(
        self,
        cls: Callable[..., rq.SubscriptionRequest],
        model: type[M],
        portfolio: str,
        *,
        exchange: Exchange | str,
        format: Format | str | None,
        skip_history: bool,
        policy: Policy | str | None,
        max_buffer: int | None,
        name: str,
        statuses: Sequence[OrderStatus | str] | None = None,
    ) -> BusStream[M]:
        req = portfolio_request(cls, portfolio, exchange=exchange, format=format or self.format)
        return self._stream(
            req,
            model,
            policy=policy,
            max_buffer=max_buffer,
            name=f"{name} {portfolio}",
            skip_history=skip_history,
            statuses=statuses,
        )

    def orders(
        self,
        portfolio: str,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        format: Format | str | None = None,
        skip_history: bool = False,
        statuses: Sequence[OrderStatus | str] | None = None,
        policy: Policy | str | None = None,
        max_buffer: int | None = None,
    ) -> BusStream[Order]:
        """The portfolio's orders (from the JetStream stream), as
        :meth:`alorws.client.AlorClient.orders`: each state further along once."""
        return self._portfolio(
            rq.OrdersRequest,
            Order,
            portfolio,
            exchange=exchange,
            format=format,
            skip_history=skip_history,
            policy=policy,
            max_buffer=max_buffer,
            name="orders",
            statuses=statuses,
        )

    def stop_orders(
        self,
        portfolio: str,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        format: Format | str | None = None,
        skip_history: bool = False,
        statuses: Sequence[OrderStatus | str] | None = None,
        policy: Policy | str | None = None,
        max_buffer: int | None = None,
    ) -> BusStream[StopOrder]:
        """The portfolio's stop orders, as :meth:`alorws.client.AlorClient.stop_orders`."""
        return self._portfolio(
            rq.StopOrdersRequest,
            StopOrder,
            portfolio,
            exchange=exchange,
            format=format,
            skip_history=skip_history,
            policy=policy,
            max_buffer=max_buffer,
            name="stop orders",
            statuses=statuses,
        )

    def own_trades(
        self,
        portfolio: str,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        format: Format | str | None = None,
        skip_history: bool = False,
        policy: Policy | str | None = None,
        max_buffer: int | None = None,
    ) -> BusStream[OwnTrade]:
        """The portfolio's fills, each trade once."""
        return self._portfolio(
            rq.OwnTradesRequest,
            OwnTrade,
            portfolio,
            exchange=exchange,
            format=format,
            skip_history=skip_history,
            policy=policy,
            max_buffer=max_buffer,
            name="own trades",
        )

    def positions(
        self,
        portfolio: str,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        format: Format | str | None = None,
        skip_history: bool = False,
        policy: Policy | str | None = None,
        max_buffer: int | None = None,
    ) -> BusStream[Position]:
        """The portfolio's positions, each new state once."""
        return self._portfolio(
            rq.PositionsRequest,
            Position,
            portfolio,
            exchange=exchange,
            format=format,
            skip_history=skip_history,
            policy=policy,
            max_buffer=max_buffer,
            name="positions",
        )

    def summaries(
        self,
        portfolio: str,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        format: Format | str | None = None,
        skip_history: bool = False,
        policy: Policy | str | None = None,
        max_buffer: int | None = None,
    ) -> BusStream[Summary]:
        """Portfolio summary snapshots; ``latest`` policy by default."""
        return self._portfolio(
            rq.SummariesRequest,
            Summary,
            portfolio,
            exchange=exchange,
            format=format,
            skip_history=skip_history,
            policy=policy,
            max_buffer=max_buffer,
            name="summaries",
        )

    def risks(
        self,
        portfolio: str,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        format: Format | str | None = None,
        skip_history: bool = False,
        policy: Policy | str | None = None,
        max_buffer: int | None = None,
    ) -> BusStream[Risk]:
        """Portfolio risk snapshots; ``latest`` policy by default."""
        return self._portfolio(
            rq.RisksRequest,
            Risk,
            portfolio,
            exchange=exchange,
            format=format,
            skip_history=skip_history,
            policy=policy,
            max_buffer=max_buffer,
            name="risks",
        )

    def stats(self) -> dict[str, Any]:
        """Streams, lease and renewals."""
        return {
            "consumer": self.consumer_id,
            "lease": self._lease,
            "renewals": self.renewals,
            "streams": [s.stats() for s in list(self._streams.values())],
        }


class _ErrorOnly(msgspec.Struct):
    error: wire.ErrorInfo | None = None


async def _close_nats(nc: NatsClient) -> None:
    """Flush what is pending (bounded), then close: ``drain()`` can wait for its full timeout."""
    with contextlib.suppress(Exception):
        await nc.flush(timeout=2)
    with contextlib.suppress(Exception):
        await nc.close()
