"""The gateway: one ALOR session (an :class:`~alorws.client.AlorClient`) served on NATS.

::

    async with AlorClient(token) as client, Gateway(client, "nats://127.0.0.1:4222"):
        await asyncio.Event().wait()

* **Control** (request/reply on ``<prefix>.ctl.subscribe|unsubscribe|renew``): consumers hold
  subscriptions under handles; equal requests from any number of consumers share one ALOR
  subscription (reference-counted). Every consumer has a lease: a consumer that is not heard
  from for ``lease_seconds`` is dropped and its handles released. A subscription the client
  cannot make (budget, rejection, timeout) is answered with the error's class and message.
* **Market data** goes to ``<prefix>.md.<exchange>.<symbol>.<stream>.<hash>`` (core NATS), as
  ALOR's payload in the request's format. The last payload of quotes and books is kept and sent
  in the subscribe reply, so a consumer joining a running subscription starts with a value.
* **Account events** go to the JetStream stream ``<PREFIX>_ACCOUNT`` on
  ``<prefix>.acct.<portfolio>.<stream>.<exchange>`` with a ``Nats-Msg-Id`` derived from the
  content (order id + state, trade id, or a chain of states for positions and snapshots), so a
  republish is dropped by JetStream instead of reaching consumers twice.
* **Orders** (request/reply on ``<prefix>.orders.<op>``): the caller's idempotency key becomes
  the ``/cws`` guid; a retry joins the command in flight or gets the cached reply, and the
  server executes a guid once anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
import nats
from msgspec import UNSET
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError

from ..bus import wire
from ..client.client import AlorClient
from ..client.lane import LaneEvent
from ..client.orders import OrderAck
from ..client.streams import Stream
from ..errors import (
    AlorError,
    BufferOverflowError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidState,
    OrderRejected,
    StreamClosed,
)
from ..protocol import requests as rq
from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, Position, StopOrder
from ..protocol.enums import Format
from ..protocol.market import OrderBook, Quote
from ..protocol.requests import validate_guid


__all__ = ["Gateway", "guid_for_key", "open_stream"]

log = logging.getLogger("alorws.gateway")

T = TypeVar("T")

_STATE_MODELS: Final = (Quote, OrderBook)
_ORDER_CACHE: Final = 10_000


def guid_for_key(key: str) -> str:
    """The ``/cws`` guid of an idempotency key: the key itself when it is a valid guid
    (1..50 printable ASCII), else a digest of it. Equal keys always give equal guids."""
    try:
        return validate_guid(key)
    except InvalidArgumentError:
        return "k" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class _Upstream:
    """One ALOR subscription and the consumer handles holding it."""

    def __init__(self, key: bytes, request: rq.SubscriptionRequest, subject: str) -> None:
        self.key = key
        self.request = request
        self.subject = subject
        self.account = type(request).opcode in wire.ACCOUNT_OPCODES
        self.holders: set[tuple[str, str]] = set()
        self.opening: asyncio.Task[None] | None = None
        self.stream: Stream[Any] | None = None
        self.pump: asyncio.Task[None] | None = None
        self.last: bytes | None = None
        self.events: list[LaneEvent] = []
        self.prev: dict[Any, str] = {}  # state chains of account snapshots (see _msg_id)
        self.published = 0
        self.closed = False


class Gateway:
    """Serves ``client`` on the NATS server at ``nats_url``; see the module docstring.

    Args:
        client: a started :class:`~alorws.client.AlorClient` (its budget is the gateway's).
        nats_url: e.g. ``nats://127.0.0.1:4222``.
        prefix: the first token of every subject.
        lease_seconds: a consumer not heard from for this long is released.
        account_format: the wire format of account streams on the bus (one upstream per
            portfolio and stream, whatever format consumers ask for).
        duplicate_window: seconds JetStream remembers message ids (de-duplication horizon).
    """

    def __init__(
        self,
        client: AlorClient,
        nats_url: str,
        *,
        prefix: str = "alorws",
        lease_seconds: float = 10.0,
        account_format: Format | str = Format.SIMPLE,
        duplicate_window: float = 6 * 3600.0,
    ) -> None:
        if not lease_seconds > 0:
            raise ConfigurationError("lease_seconds must be > 0")
        if wire.token(prefix) != prefix:
            raise ConfigurationError(f"prefix {prefix!r} must be one subject token ([A-Za-z0-9_-])")
        self.client = client
        self.nats_url = nats_url
        self.prefix = prefix
        self.lease_seconds = float(lease_seconds)
        self.account_format = Format(account_format)
        self.duplicate_window = duplicate_window
        self.stream_name = wire.account_stream_name(prefix)
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closers: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._upstreams: dict[bytes, _Upstream] = {}
        self._consumers: dict[str, dict[str, bytes]] = {}  # consumer -> handle -> upstream key
        self._seen: dict[str, float] = {}  # consumer -> monotonic time last heard from
        self._orders_inflight: dict[str, asyncio.Task[OrderAck]] = {}
        self._orders_done: OrderedDict[str, bytes] = OrderedDict()
        self._epoch = secrets.token_hex(4)
        self._running = False
        self.counters = {
            "subscribe": 0,
            "unsubscribe": 0,
            "renew": 0,
            "expired": 0,
            "orders": 0,
            "order_retries": 0,
            "errors": 0,
        }

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect to NATS, make sure the account stream exists, serve the control subjects."""
        if self._running:
            raise InvalidState("the gateway is already running")
        self._nc = await nats.connect(
            self.nats_url, name="alorws-gateway", max_reconnect_attempts=-1
        )
        self._js = self._nc.jetstream()
        subjects = [f"{self.prefix}.acct.>"]
        try:
            await self._js.add_stream(
                name=self.stream_name, subjects=subjects, duplicate_window=self.duplicate_window
            )
        except BadRequestError:  # exists with another config: keep the data, update it
            await self._js.update_stream(
                name=self.stream_name, subjects=subjects, duplicate_window=self.duplicate_window
            )
        p = self.prefix
        self._running = True
        for subject, handler in (
            (f"{p}.ctl.subscribe", self._on_subscribe),
            (f"{p}.ctl.unsubscribe", self._on_unsubscribe),
            (f"{p}.ctl.renew", self._on_renew),
            (f"{p}.orders.*", self._on_order),
        ):
            self._subs.append(await self._nc.subscribe(subject, cb=self._server(handler)))
        await self._nc.flush()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def aclose(self) -> None:
        """Stop serving, close every ALOR subscription it holds, disconnect from NATS."""
        if not self._running:
            return
        self._running = False
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        ups = list(self._upstreams.values())
        for up in ups:
            up.closed = True
        self._upstreams.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
        closing = [t for t in self._tasks if t in self._closers]
        for task in list(self._tasks):
            if task not in self._closers:
                task.cancel()
        if self._tasks:  # bounded: a task that swallowed its cancellation cannot hold us
            await asyncio.wait(list(self._tasks), timeout=5.0)
        self._consumers.clear()
        await asyncio.gather(
            *(self._close_upstream(up) for up in ups), *closing, return_exceptions=True
        )
        if self._nc is not None:
            await _close_nats(self._nc)
            self._nc = None

    # -- serving ------------------------------------------------------------------------------

    def _server(
        self, handler: Callable[[Msg], Awaitable[bytes]]
    ) -> Callable[[Msg], Awaitable[None]]:
        """A NATS callback that answers each request in its own task (a slow subscribe never
        holds up the others)."""

        async def callback(msg: Msg) -> None:
            if self._running:
                self._spawn(self._answer(msg, handler))

        return callback

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _answer(self, msg: Msg, handler: Callable[[Msg], Awaitable[bytes]]) -> None:
        try:
            payload = await handler(msg)
        except Exception as exc:
            self.counters["errors"] += 1
            if not isinstance(exc, AlorError):
                log.exception("gateway: %s failed", msg.subject)
            payload = msgspec.json.encode(wire.ErrorReply(wire.error_info(exc)))
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(payload)

    @staticmethod
    def _decode(data: bytes, cls: type[T]) -> T:
        try:
            return msgspec.json.decode(data, type=cls)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise InvalidArgumentError("request", f"bad {cls.__name__}: {exc}") from None

    def _touch(self, consumer: str) -> dict[str, bytes]:
        self._seen[consumer] = time.monotonic()
        return self._consumers.setdefault(consumer, {})

    # -- control ------------------------------------------------------------------------------

    def canonical(self, request: rq.SubscriptionRequest) -> rq.SubscriptionRequest:
        """The request the gateway makes for ``request``: account streams are one upstream per
        portfolio, stream and exchange (full history, the gateway's format); market data as
        asked."""
        if type(request).opcode in wire.ACCOUNT_OPCODES:
            portfolio = str(getattr(request, "portfolio", ""))
            return type(request)(  # type: ignore[call-arg]
                portfolio=portfolio, exchange=request.exchange, format=self.account_format
            )
        return request

    async def _on_subscribe(self, msg: Msg) -> bytes:
        self.counters["subscribe"] += 1
        ctl = self._decode(msg.data, wire.SubscribeCtl)
        handles = self._touch(ctl.consumer)
        request = self.canonical(ctl.request)
        key = msgspec.json.encode(request)
        holder = (ctl.consumer, ctl.handle)
        old = handles.get(ctl.handle)
        if old is not None and old != key:
            self._release(ctl.consumer, ctl.handle)
        up = self._upstreams.get(key)
        if up is None:
            up = _Upstream(key, request, wire.subject_for(self.prefix, request))
            self._upstreams[key] = up
            up.opening = self._spawn(self._open(up))
        up.holders.add(holder)
        handles[ctl.handle] = key
        assert up.opening is not None
        try:
            await asyncio.shield(up.opening)
        except BaseException:
            up.holders.discard(holder)
            if handles.get(ctl.handle) == key:
                del handles[ctl.handle]
            if self._upstreams.get(key) is up:
                del self._upstreams[key]
            raise
        reply = wire.SubscribeReply(
            subject=up.subject, format=Format(request.format), lease=self.lease_seconds
        )
        if up.last is not None:
            reply = msgspec.structs.replace(reply, snapshot=msgspec.Raw(up.last))
        return msgspec.json.encode(reply)

    async def _on_unsubscribe(self, msg: Msg) -> bytes:
        self.counters["unsubscribe"] += 1
        ctl = self._decode(msg.data, wire.UnsubscribeCtl)
        if ctl.handle:
            self._touch(ctl.consumer)
            self._release(ctl.consumer, ctl.handle)
        else:
            self._drop_consumer(ctl.consumer)
        return msgspec.json.encode(wire.RenewReply(lease=self.lease_seconds))

    async def _on_renew(self, msg: Msg) -> bytes:
        self.counters["renew"] += 1
        ctl = self._decode(msg.data, wire.RenewCtl)
        handles = self._touch(ctl.consumer)
        missing = [h for h in ctl.handles if h not in handles]
        return msgspec.json.encode(wire.RenewReply(lease=self.lease_seconds, missing=missing))

    def _release(self, consumer: str, handle: str) -> None:
        handles = self._consumers.get(consumer)
        key = None if handles is None else handles.pop(handle, None)
        if key is None:
            return
        up = self._upstreams.get(key)
        if up is None:
            return
        up.holders.discard((consumer, handle))
        if not up.holders:
            del self._upstreams[key]
            self._closers.add(self._spawn(self._close_upstream(up)))

    def _drop_consumer(self, consumer: str) -> None:
        for handle in list(self._consumers.get(consumer, {})):
            self._release(consumer, handle)
        self._consumers.pop(consumer, None)
        self._seen.pop(consumer, None)

    async def _sweep(self) -> None:
        """Release the consumers whose lease ran out."""
        period = min(1.0, max(0.05, self.lease_seconds / 4))
        while True:
            await asyncio.sleep(period)
            deadline = time.monotonic() - self.lease_seconds
            for consumer, seen in list(self._seen.items()):
                if seen < deadline:
                    log.info("gateway: lease of consumer %s expired; releasing it", consumer)
                    self.counters["expired"] += 1
                    self._drop_consumer(consumer)

    # -- upstream subscriptions ------------------------------------------------------------------

    async def _open(self, up: _Upstream) -> None:
        stream = open_stream(self.client, up.request)
        stream.on_event(up.events.append)
        await stream.subscribe()
        up.stream = stream
        if up.closed:  # every holder left while it was opening
            await stream.aclose()
            return
        up.pump = self._spawn(self._pump(up))

    async def _close_upstream(self, up: _Upstream) -> None:
        up.closed = True
        if up.opening is not None and not up.opening.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(up.opening)
        if up.pump is not None:
            up.pump.cancel()
            with contextlib.suppress(BaseException):
                await up.pump
        if up.stream is not None:
            with contextlib.suppress(Exception):
                await up.stream.aclose()

    async def _pump(self, up: _Upstream) -> None:
        """Publish everything the ALOR subscription delivers."""
        stream = up.stream
        assert stream is not None and self._nc is not None
        nc = self._nc
        fmt = Format(up.request.format)
        keep_last = issubclass(stream.model, _STATE_MODELS)
        while not up.closed:
            try:
                batch = await stream.get_batch(1000)
            except BufferOverflowError as exc:
                log.warning("gateway: %s: %s", up.subject, exc)
                up.events.append(LaneEvent("disconnected", 0, str(exc)))
                batch = []
            except StreamClosed:
                return
            except Exception:
                log.exception("gateway: %s failed; it publishes nothing more", up.subject)
                return
            if up.events:
                events, up.events = up.events, []
                if not up.account:
                    for ev in events:
                        await nc.publish(
                            up.subject,
                            msgspec.json.encode(ev),
                            headers={wire.EVENT_HEADER: ev.kind},
                        )
            for obj in batch:
                payload = wire.encode_model(obj, fmt)
                if up.account:
                    await self._publish_account(up, obj, payload, fmt)
                else:
                    await nc.publish(up.subject, payload)
                    if keep_last:
                        up.last = payload
                up.published += 1

    async def _publish_account(
        self, up: _Upstream, obj: Model, payload: bytes, fmt: Format
    ) -> None:
        """Publish to JetStream until it is stored (retries are safe: the id de-duplicates)."""
        assert self._js is not None
        headers = {"Nats-Msg-Id": self._msg_id(up, obj), wire.FORMAT_HEADER: fmt.value}
        delay = 0.05
        while True:
            try:
                await self._js.publish(up.subject, payload, headers=headers, timeout=5.0)
                return
            except Exception as exc:
                # nats-py can turn a cancellation into a timeout: never retry past one.
                task = asyncio.current_task()
                if up.closed or (task is not None and task.cancelling()):
                    raise asyncio.CancelledError from exc
                log.warning("gateway: publishing to %s failed (%s); retrying", up.subject, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _msg_id(self, up: _Upstream, obj: Model) -> str:
        """The ``Nats-Msg-Id`` of an account event, derived from its content.

        Orders and stop orders: id + digest of the state (``existing`` ignored), so a replayed
        copy is the same message and each change a new one. Own trades: the trade id.
        Positions and snapshots (summaries, risks) can return to an earlier state, so their id
        chains the previous state of the same key, starting from this gateway's epoch.
        """
        if isinstance(obj, OwnTrade):
            return f"{up.subject}:{obj.id}"
        state = _digest(obj)
        if isinstance(obj, Order | StopOrder):
            return f"{up.subject}:{obj.id}:{state}"
        key: Any = (obj.symbol, obj.exchange) if isinstance(obj, Position) else None
        prev = up.prev.get(key, self._epoch)
        if prev == state:  # unchanged: the same message as before
            prev = up.prev.get((key, "before"), self._epoch)
        else:
            up.prev[(key, "before")] = prev
            up.prev[key] = state
        return f"{up.subject}:{key}:{prev}>{state}"

    # -- orders -------------------------------------------------------------------------------

    async def _on_order(self, msg: Msg) -> bytes:
        op = msg.subject.rsplit(".", 1)[-1]
        if op not in wire.ORDER_OPS:
            raise InvalidArgumentError("op", f"{op!r} is not one of {sorted(wire.ORDER_OPS)}")
        ctl = self._decode(msg.data, wire.OrderCtl)
        self._touch(ctl.consumer)
        guid = guid_for_key(ctl.key)
        done = self._orders_done.get(guid)
        if done is not None:
            self.counters["order_retries"] += 1
            return done
        task = self._orders_inflight.get(guid)
        if task is None:
            self.counters["orders"] += 1
            task = self._spawn(self._execute(op, dict(ctl.args), guid))
            self._orders_inflight[guid] = task
            task.add_done_callback(lambda t: self._order_done(guid, t))
        else:
            self.counters["order_retries"] += 1
        ack = await asyncio.shield(task)
        return _ack_reply(ack)

    async def _execute(self, op: str, args: dict[str, Any], guid: str) -> OrderAck:
        args.pop("guid", None)
        method = getattr(self.client.trading, op)
        try:
            result: OrderAck = await method(**args, guid=guid)
        except TypeError as exc:
            raise InvalidArgumentError("args", f"{op}: {exc}") from None
        return result

    def _order_done(self, guid: str, task: asyncio.Task[OrderAck]) -> None:
        self._orders_inflight.pop(guid, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            reply = _ack_reply(task.result())
        elif isinstance(exc, OrderRejected):  # definitive: the order was not executed
            reply = msgspec.json.encode(wire.OrderReply(error=wire.error_info(exc)))
        else:  # unknown outcome or not sent: a retry re-sends the same guid
            return
        self._orders_done[guid] = reply
        while len(self._orders_done) > _ORDER_CACHE:
            self._orders_done.popitem(last=False)

    # -- observability ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Upstream subscriptions (with holders and messages published), consumers, counters."""
        return {
            "running": self._running,
            "consumers": len(self._consumers),
            "subscriptions": len(self._upstreams),
            "handles": sum(len(h) for h in self._consumers.values()),
            "upstreams": [
                {"subject": up.subject, "holders": len(up.holders), "published": up.published}
                for up in self._upstreams.values()
            ],
            "orders_in_flight": len(self._orders_inflight),
            **self.counters,
        }


def _ack_reply(ack: OrderAck) -> bytes:
    return msgspec.json.encode(
        wire.OrderReply(
            ack=wire.OrderAckWire(ack.order_number, ack.http_code, ack.message, ack.guid)
        )
    )


def _digest(obj: Model) -> str:
    fields = msgspec.structs.asdict(obj)
    fields.pop("existing", None)
    return hashlib.blake2b(msgspec.json.encode(fields), digest_size=10).hexdigest()


def _v(value: Any) -> Any:
    return None if value is UNSET else value


def open_stream(client: AlorClient, req: rq.SubscriptionRequest) -> Stream[Any]:
    """The :class:`~alorws.client.Stream` of ``client`` for ``req`` (not yet subscribed)."""
    ex, fmt = req.exchange, req.format
    if isinstance(req, rq.QuotesRequest):
        return client.quotes(
            req.code,
            exchange=ex,
            format=fmt,
            board=_v(req.instrument_group),
            frequency=_v(req.frequency),
        )
    if isinstance(req, rq.OrderBookRequest):
        return client.order_book(
            req.code,
            depth=req.depth,
            exchange=ex,
            format=fmt,
            board=_v(req.instrument_group),
            frequency=_v(req.frequency),
        )
    if isinstance(req, rq.BarsRequest):
        return client.bars(
            req.code,
            req.tf,
            from_=req.from_,
            skip_history=bool(_v(req.skip_history)),
            exchange=ex,
            format=fmt,
            board=_v(req.instrument_group),
            frequency=_v(req.frequency),
        )
    if isinstance(req, rq.AllTradesRequest):
        return client.all_trades(
            req.code,
            depth=_v(req.depth),
            include_virtual_trades=_v(req.include_virtual_trades),
            exchange=ex,
            format=fmt,
            board=_v(req.instrument_group),
        )
    if isinstance(req, rq.InstrumentRequest):
        return client.instrument(req.code, exchange=ex, format=fmt, board=_v(req.instrument_group))
    portfolio = getattr(req, "portfolio", None)
    methods: dict[type[rq.SubscriptionRequest], Callable[..., Stream[Any]]] = {
        rq.PositionsRequest: client.positions,
        rq.SummariesRequest: client.summaries,
        rq.RisksRequest: client.risks,
        rq.SpectraRisksRequest: client.spectra_risks,
        rq.OwnTradesRequest: client.own_trades,
        rq.OrdersRequest: client.orders,
        rq.StopOrdersRequest: client.stop_orders,
    }
    method = methods.get(type(req))
    if method is None or not isinstance(portfolio, str):
        raise InvalidArgumentError(
            "request", f"{type(req).opcode} is not served through the gateway yet"
        )
    return method(portfolio, exchange=ex, format=fmt)


async def _close_nats(nc: NatsClient) -> None:
    """Flush what is pending (bounded), then close: ``drain()`` can wait for its full timeout."""
    with contextlib.suppress(Exception):
        await nc.flush(timeout=2)
    with contextlib.suppress(Exception):
        await nc.close()
