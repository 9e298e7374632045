"""Publishing what the gateway's ALOR subscriptions deliver: market data, account events."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError

from ..bus import wire
from ..bus._natslink import Lost, Retry, describe
from ..client.buffer import Policy
from ..client.client import AlorClient
from ..client.lane import LaneEvent
from ..client.sources import is_account
from ..client.streams import Stream
from ..errors import BufferOverflowError, InvalidState, StreamClosed
from ..protocol import requests as rq
from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, Position, StopOrder
from ..protocol.backoff import Backoff
from ..protocol.codec import decoder_for
from ..protocol.enums import Format
from ..protocol.market import OrderBook, Quote
from .link import GatewayLink


__all__ = ["Publisher", "Upstream", "ensure_account_stream", "open_stream", "valid_snapshot"]

log = logging.getLogger("alorws.gateway")

_STATE_MODELS: Final = (Quote, OrderBook)


class Upstream:
    """One ALOR subscription of the gateway and the consumer handles holding it."""

    def __init__(self, key: bytes, request: rq.SubscriptionRequest, subject: str) -> None:
        self.key = key
        self.request = request
        self.subject = subject
        self.account = is_account(request)
        self.holders: set[tuple[str, str]] = set()
        self.opening: asyncio.Task[None] | None = None
        self.stream: Stream[Any] | None = None
        self.pump: asyncio.Task[None] | None = None
        self.last: bytes | None = None
        self.prev: dict[Any, str] = {}  # state chains of account snapshots (see _msg_id)
        self.published = 0
        self.closed = False
        self.lane_down = False  # the ALOR subscription is in a gap (as its stream's events say)
        self.shown_down = False  # what consumers were last told (published events)
        self.outage: float | None = None  # monotonic time of the first drop while NATS was down


class Publisher:
    """Publishes everything an :class:`Upstream`'s stream delivers, until it is closed.

    * **Market data** goes to ``<prefix>.md.<exchange>.<symbol>.<stream>.<hash>`` (core NATS)
      as ALOR's payload in the request's format: quotes, books and instruments pass through
      undecoded (:meth:`~alorws.client.Stream.get_payloads`, the bytes ALOR sent), all trades
      and bars are decoded and re-encoded (the client's filter keeps them whole across
      restores). Connection events are published in place, between the payloads, with the
      ``Alorws-Event`` header. The last payload of quotes and books is kept for the subscribe
      reply.
    * **Account events** go to the JetStream stream ``<PREFIX>_ACCOUNT`` with a
      ``Nats-Msg-Id`` derived from the content (:meth:`_msg_id`), so a republish (a restart, a
      new leader's full-history subscription, a publish whose ack was lost) is dropped by
      JetStream instead of reaching consumers twice. Publishing is retried until stored.
    * **NATS outages**: market data that cannot be published is dropped and counted
      (``dropped_market``); the first message after the reconnect is preceded by a gap marker
      (``disconnected``/``restored`` with the ``Alorws-Outage`` header) for consumers whose own
      connection stayed up. Account events wait in the ALOR stream's buffer meanwhile.

    Args:
        link: the gateway's NATS connection.
        counters: the gateway's counters (``published_*``, ``dropped_market``,
            ``outage_markers``).
    """

    def __init__(self, link: GatewayLink, counters: dict[str, int]) -> None:
        self._link = link
        self._counters = counters
        self._epoch = secrets.token_hex(4)  # where this gateway's snapshot id chains start
        # One pair of lines for every stream: the first failure, and the first success after.
        self._js_retry = Retry(log, Backoff(base=0.05, cap=2.0, jitter=False))

    async def pump(self, up: Upstream) -> None:
        """Publish everything the ALOR subscription delivers."""
        if up.account or not await self._pump_payloads(up):
            await self._pump_models(up)

    async def _pump_payloads(self, up: Upstream) -> bool:
        """Market data passes through undecoded: each payload is published as ALOR sent it (in
        the request's format, which is what consumers decode), connection events in place.

        Returns False, having read nothing, if the stream cannot be read undecoded: all trades
        and bars are kept whole across restores by a client-side filter, which decodes."""
        stream = up.stream
        assert stream is not None
        first = True
        while not up.closed:
            items: list[bytes | LaneEvent]
            try:
                items = await stream.get_payloads(1000)
            except BufferOverflowError as exc:
                log.warning("gateway: %s: %s", up.subject, exc)
                items = [*_overflow_gap(exc)]
            except StreamClosed:
                return True
            except InvalidState:
                if first:
                    return False
                log.exception("gateway: %s failed; it publishes nothing more", up.subject)
                return True
            except Exception:
                log.exception("gateway: %s failed; it publishes nothing more", up.subject)
                return True
            first = False
            await self._publish_market(up, items, None)
        return True

    async def _pump_models(self, up: Upstream) -> None:
        """Decode and re-encode: account streams (their message ids derive from the content)
        and market streams that a client-side filter keeps whole (all trades, bars)."""
        stream = up.stream
        assert stream is not None
        fmt = Format(up.request.format)
        events: list[LaneEvent] = []
        stream.on_event(events.append)
        while not up.closed:
            try:
                batch = await stream.get_batch(1000)
            except BufferOverflowError as exc:
                log.warning("gateway: %s: %s", up.subject, exc)
                events.extend(_overflow_gap(exc))
                batch = []
            except StreamClosed:
                return
            except Exception:
                log.exception("gateway: %s failed; it publishes nothing more", up.subject)
                return
            pending: list[LaneEvent] = []
            if events:
                pending, events[:] = events[:], []
            if up.account:  # JetStream consumers see no gap: nothing is lost there
                for obj in batch:
                    payload = wire.encode_model(obj, fmt)
                    await self._publish_account(up, obj, payload, fmt)
                    self._counters["published_account"] += 1
                    up.published += 1
                continue
            await self._publish_market(
                up, [*pending, *batch], lambda obj: wire.encode_model(obj, fmt)
            )

    async def _publish_market(
        self, up: Upstream, items: list[Any], encode: Callable[[Any], bytes] | None
    ) -> None:
        """Publish a batch of market data on core NATS, connection events in place: payloads
        as they are (``encode`` None) or models encoded. While NATS is down what cannot be
        published is dropped and marked (:meth:`_drop_while_down`)."""
        nc = self._link.nats()
        if not nc.is_connected:
            self._drop_while_down(up, items)
            return
        publish, subject = nc.publish, up.subject
        last: bytes | None = None
        sent = published = 0
        try:
            if up.outage is not None:
                await self._mark_outage(up)
            for item in items:
                if isinstance(item, LaneEvent):
                    await self._publish_event(up, item)
                else:
                    payload = item if encode is None else encode(item)
                    await publish(subject, payload)
                    last = payload
                    published += 1
                sent += 1
        except (nats.errors.Error, OSError):  # the connection went down under us
            self._drop_while_down(up, items[sent:])
        finally:
            self._counters["published_market"] += published
            up.published += published
        if last is not None and up.stream is not None:
            if issubclass(up.stream.model, _STATE_MODELS):
                up.last = last  # the subscribe reply's snapshot

    async def _publish_event(self, up: Upstream, ev: LaneEvent) -> None:
        up.lane_down = ev.kind == "disconnected"
        headers = {wire.EVENT_HEADER: ev.kind}
        await self._link.nats().publish(up.subject, msgspec.json.encode(ev), headers=headers)
        up.shown_down = up.lane_down

    async def _publish_account(self, up: Upstream, obj: Model, payload: bytes, fmt: Format) -> None:
        """Publish to JetStream until it is stored (retries are safe: the id de-duplicates)."""
        js = self._link.jetstream()
        link = self._link
        headers = {"Nats-Msg-Id": self._msg_id(up, obj), wire.FORMAT_HEADER: fmt.value}
        retry = self._js_retry
        delays = retry.delays()
        while True:
            if not link.up.is_set():  # wait in the ALOR stream's buffer, not nats-py's
                await link.up.wait()
            try:
                await link.unless_lost(
                    js.publish(up.subject, payload, headers=headers, timeout=5.0)
                )
            except Lost:  # the ack may be lost with the connection: publish again when back
                continue
            except Exception as exc:
                # nats-py can turn a cancellation into a timeout: never retry past one.
                task = asyncio.current_task()
                if up.closed or (task is not None and task.cancelling()):
                    raise asyncio.CancelledError from exc
                await retry.failed(
                    delays,
                    "gateway: publishing to JetStream failed (%s: %s); retrying",
                    up.subject,
                    describe(exc),
                    say=link.up.is_set(),  # lost with the connection: its own lines say so
                )
                continue
            retry.worked("gateway: publishing to JetStream works again (%s)", up.subject)
            return

    def _msg_id(self, up: Upstream, obj: Model) -> str:
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

    def _drop_while_down(self, up: Upstream, items: list[Any]) -> None:
        """Market data that cannot be published now: dropped, and marked for the consumers."""
        if up.outage is None:
            up.outage = self._link.down_since or time.monotonic()
        for item in items:
            if isinstance(item, LaneEvent):
                up.lane_down = item.kind == "disconnected"
            else:
                self._counters["dropped_market"] += 1

    async def _mark_outage(self, up: Upstream) -> None:
        """The gap marker of data dropped while NATS was down, in place before what follows:
        ``disconnected`` unless consumers already know of a gap, ``restored`` unless the ALOR
        subscription itself is still restoring (its own ``restored`` follows then)."""
        since, up.outage = up.outage, None
        if since is None:
            return
        nc = self._link.nats()
        headers = {wire.OUTAGE_HEADER: self._link.epoch}
        reason = "the gateway's NATS connection was lost"
        events = [] if up.shown_down else [LaneEvent("disconnected", 0, reason)]
        if not up.lane_down:
            downtime = time.monotonic() - since
            events.append(LaneEvent("restored", 0, "the gateway is back on NATS", downtime))
        for ev in events:
            await nc.publish(
                up.subject, msgspec.json.encode(ev), headers={**headers, wire.EVENT_HEADER: ev.kind}
            )
        up.shown_down = up.lane_down
        self._counters["outage_markers"] += 1


async def ensure_account_stream(js: JetStreamContext, prefix: str, duplicate_window: float) -> None:
    """Create the account stream of ``prefix``, or update it if it exists with another
    configuration (its messages are kept)."""
    name = wire.account_stream_name(prefix)
    subjects = [f"{prefix}.acct.>"]
    try:
        await js.add_stream(name=name, subjects=subjects, duplicate_window=duplicate_window)
    except BadRequestError:
        await js.update_stream(name=name, subjects=subjects, duplicate_window=duplicate_window)


def open_stream(
    client: AlorClient, req: rq.SubscriptionRequest, *, policy: Policy | None = None
) -> Stream[Any]:
    """The :class:`~alorws.client.Stream` of ``client`` for ``req`` (not yet subscribed), with
    buffer ``policy`` (default: the client's for that stream; instrument patches always the
    client's, ``queue``: each must be seen to fold them)."""
    if isinstance(req, rq.InstrumentRequest):
        policy = None
    return client.stream(req, policy=policy)


def valid_snapshot(up: Upstream) -> bytes | None:
    """The last payload of a quotes/book upstream if it decodes (payloads pass through
    unvalidated, and a corrupt one must not break the subscribe reply it is embedded in)."""
    last, stream = up.last, up.stream
    if last is None or stream is None:
        return None
    try:
        decoder_for(stream.model, Format(up.request.format)).decode(last)
    except Exception as exc:  # RecursionError too: the subscribe is answered, without snapshot
        log.warning(
            "gateway: %s: the last payload does not decode (%s); no snapshot",
            up.subject,
            type(exc).__name__,
        )
        up.last = None  # checked once, not at every subscribe
        return None
    return last


def _overflow_gap(exc: BufferOverflowError) -> list[LaneEvent]:
    """Messages the gateway's buffer dropped: a gap that is over as soon as it is said."""
    return [LaneEvent("disconnected", 0, str(exc)), LaneEvent("restored", 0, "the stream goes on")]


def _digest(obj: Model) -> str:
    # UNSET (a key the format lacks, e.g. Summary's Slim-only one) cannot be encoded: left out.
    fields = {k: v for k, v in msgspec.structs.asdict(obj).items() if v is not msgspec.UNSET}
    fields.pop("existing", None)
    return hashlib.blake2b(msgspec.json.encode(fields), digest_size=10).hexdigest()
