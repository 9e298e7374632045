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
  ALOR's payload in the request's format: quotes, books and instruments pass through undecoded
  (:meth:`~alorws.client.Stream.get_payloads`, the bytes ALOR sent), all trades and bars are
  decoded and re-encoded (the client's filter keeps them whole across restores). Connection
  events are published in place, between the payloads. The last payload of quotes and books is
  kept and sent in the subscribe reply, so a consumer joining a running subscription starts with
  a value.
* **Account events** go to the JetStream stream ``<PREFIX>_ACCOUNT`` on
  ``<prefix>.acct.<portfolio>.<stream>.<exchange>`` with a ``Nats-Msg-Id`` derived from the
  content (order id + state, trade id, or a chain of states for positions and snapshots), so a
  republish is dropped by JetStream instead of reaching consumers twice.
* **Orders** (request/reply on ``<prefix>.orders.<op>``): the caller's idempotency key becomes
  the ``/cws`` guid; a retry joins the command in flight or gets the cached reply, and the
  server executes a guid once anyway.

**Failover** (``leader_ttl=``): any number of gateways run on one prefix; the one holding the
leader lease (key ``leader`` of the JetStream KV bucket ``<PREFIX>_LEADER``, whose entries expire
``leader_ttl`` seconds after they were written) is the only one that holds ALOR connections and
answers ``ctl.*``/``orders.*``. The leader rewrites the key every ``leader_ttl / 3`` with the
revision it last wrote (a compare-and-set: it notices at once when another gateway holds the
key) and stops serving if it could not renew for ``leader_ttl``. A standby polls the key every
``leader_ttl / 4``: it creates it when it is gone (expired, or deleted by a leader that stopped
cleanly) or, if the revision has not moved for ``leader_ttl`` on its own clock, replaces it with a
compare-and-set on that revision. Only then does it build its ``AlorClient`` (the gateway is given
a factory, so a standby holds no connection), serve, and announce itself on
``<prefix>.ctl.leader``.

*Restoring the aggregated subscriptions* is left to the consumers, not to a subscription set kept
in KV: every ``BusClient`` renews its lease listing the handles it holds, so the new leader, which
starts empty, answers the first renewal (sent at once on the announcement) with every handle as
``missing`` and each consumer subscribes them again (its streams get a ``disconnected`` /
``restored`` pair). The consumers are the truth about what is wanted: nothing has to be written
to KV on the subscribe path, a consumer that died during the gap is simply never restored (a KV
copy would restore it and then wait a lease to expire it), and the same path already serves a
restarted gateway and an expired lease. Account events replayed by the new leader's fresh ALOR
subscriptions carry the content-derived message ids of what the old leader published, so
JetStream drops them within its ``duplicate_window``.

**NATS outages.** The ALOR session does not depend on NATS: when the NATS connection is lost the
gateway keeps its subscriptions (and its consumers: no lease runs out while nobody can renew),
nats-py reconnects (every 0.5 s), and each event is one log line. Market data that cannot be
published is dropped, and the first message after the reconnect is preceded by a gap marker
(``disconnected``/``restored`` with the ``Alorws-Outage`` header), for consumers whose own
connection stayed up. Account events wait in the ALOR stream's buffer and are published once
NATS is back (a publish whose ack was lost is repeated: the message id de-duplicates it). Once
reconnected the gateway announces itself and makes sure the account stream and the leader
bucket exist. With ``leader_ttl``, an outage longer than the lease ends the lead as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ..bus import wire
from ..bus._natslink import NatsLink, describe, safe_url
from ..client._badframes import BadFrameLog
from ..client.buffer import Policy
from ..client.client import AlorClient
from ..client.lane import LaneEvent
from ..client.orders import OrderAck
from ..client.streams import Stream
from ..errors import (
    AlorError,
    BufferOverflowError,
    ConfigurationError,
    ConnectError,
    FrameError,
    InvalidArgumentError,
    InvalidState,
    OrderRejected,
    StreamClosed,
    scrub,
)
from ..protocol import requests as rq
from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, Position, StopOrder
from ..protocol.codec import decoder_for
from ..protocol.enums import Format
from ..protocol.market import OrderBook, Quote
from ..protocol.requests import validate_guid


__all__ = ["ClientFactory", "Gateway", "guid_for_key", "open_stream"]

log = logging.getLogger("alorws.gateway")

T = TypeVar("T")

_STATE_MODELS: Final = (Quote, OrderBook)
_ORDER_CACHE: Final = 10_000

#: Builds the gateway's (not yet started) ALOR client when it starts leading.
ClientFactory = Callable[[], AlorClient]


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
        self.prev: dict[Any, str] = {}  # state chains of account snapshots (see _msg_id)
        self.published = 0
        self.closed = False
        self.lane_down = False  # the ALOR subscription is in a gap (as its stream's events say)
        self.shown_down = False  # what consumers were last told (published events)
        self.outage: float | None = None  # monotonic time of the first drop while NATS was down


class Gateway:
    """Serves an ALOR session on the NATS server at ``nats_url``; see the module docstring.

    Args:
        client: a started :class:`~alorws.client.AlorClient` (its budget is the gateway's; the
            caller closes it), or a factory of a new, not started one: the gateway starts it
            when it starts leading and closes it when it stops (required with ``leader_ttl``,
            so that a standby holds no ALOR connection).
        nats_url: e.g. ``nats://127.0.0.1:4222``.
        prefix: the first token of every subject.
        lease_seconds: a consumer not heard from for this long is released.
        account_format: the wire format of account streams on the bus (one upstream per
            portfolio and stream, whatever format consumers ask for).
        duplicate_window: seconds JetStream remembers message ids (de-duplication horizon).
        leader_ttl: take part in leader election with this lease (seconds): serve only while
            holding it. None (default): serve at once, alone on the prefix.
        node: this gateway's name in the election (default: host, pid and a random suffix);
            must be unique among the gateways of a prefix.
        market_policy: buffer policy of the gateway's market-data subscriptions (default: the
            client's, ``latest`` for quotes and books: under overload consumers get the newest).
    """

    def __init__(
        self,
        client: AlorClient | ClientFactory,
        nats_url: str,
        *,
        prefix: str = "alorws",
        lease_seconds: float = 10.0,
        account_format: Format | str = Format.SIMPLE,
        duplicate_window: float = 6 * 3600.0,
        leader_ttl: float | None = None,
        node: str | None = None,
        market_policy: Policy | str | None = None,
    ) -> None:
        if not lease_seconds > 0:
            raise ConfigurationError("lease_seconds must be > 0")
        if wire.token(prefix) != prefix:
            raise ConfigurationError(f"prefix {prefix!r} must be one subject token ([A-Za-z0-9_-])")
        if isinstance(client, AlorClient):
            self._client: AlorClient | None = client
            self._factory: ClientFactory | None = None
        else:
            self._client = None
            self._factory = client
        if leader_ttl is not None:
            if not leader_ttl > 0:
                raise ConfigurationError("leader_ttl must be > 0")
            if self._factory is None:
                raise ConfigurationError(
                    "failover (leader_ttl) needs a client factory, not a started AlorClient: "
                    "a standby gateway must not hold ALOR connections"
                )
        self.nats_url = nats_url
        self.prefix = prefix
        self.lease_seconds = float(lease_seconds)
        self.account_format = Format(account_format)
        self.duplicate_window = duplicate_window
        self.leader_ttl = None if leader_ttl is None else float(leader_ttl)
        self.node = node or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.market_policy = None if market_policy is None else Policy(market_policy)
        self.stream_name = wire.account_stream_name(prefix)
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._elector: asyncio.Task[None] | None = None
        self._holder: asyncio.Task[str] | None = None
        self._closers: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._upstreams: dict[bytes, _Upstream] = {}
        self._consumers: dict[str, dict[str, bytes]] = {}  # consumer -> handle -> upstream key
        self._seen: dict[str, float] = {}  # consumer -> monotonic time last heard from
        self._orders_inflight: dict[str, asyncio.Task[OrderAck]] = {}
        self._orders_done: OrderedDict[str, bytes] = OrderedDict()
        self._epoch = secrets.token_hex(4)
        self._bad_log = BadFrameLog(log, "gateway")
        self._link = NatsLink(
            log, f"gateway {self.node}", nats_url, on_lost=self._nats_lost, on_back=self._nats_back
        )
        self._nats_up = asyncio.Event()
        self._lost: asyncio.Future[None] | None = None  # resolved when the connection is lost
        self._outages = 0
        self._reestablishing: asyncio.Task[None] | None = None
        self._js_failing = False
        self._running = False
        self._serving = False
        self.role = "stopped"  # stopped | standby | leader
        self.leader_node: str | None = None  # the leader as last seen (with failover)
        self._rev: int | None = None  # revision of our leader entry while leading
        self._lease_until = 0.0
        self._seen_rev: int | None = None  # a standby's view of the leader entry
        self._seen_at = 0.0
        self._saw_other = False
        self.counters = {
            "subscribe": 0,
            "unsubscribe": 0,
            "renew": 0,
            "expired": 0,
            "orders": 0,
            "order_retries": 0,
            "errors": 0,
            "published_market": 0,
            "published_account": 0,
            "leaderships": 0,
            "takeovers": 0,
            "dropped_market": 0,
            "outage_markers": 0,
        }

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def client(self) -> AlorClient:
        """The ALOR session being served (only while leading, with a factory)."""
        if self._client is None:
            raise InvalidState(f"gateway {self.node} is {self.role}: it holds no ALOR session")
        return self._client

    @property
    def active_client(self) -> AlorClient | None:
        """The ALOR session being served, or None (a standby, or stopped with a factory)."""
        return self._client

    @property
    def is_leader(self) -> bool:
        """True while this gateway serves (always, once started, without ``leader_ttl``)."""
        return self.role == "leader"

    async def start(self) -> None:
        """Connect to NATS, make sure the account stream exists, then serve the control
        subjects; with ``leader_ttl``, serve only if this gateway wins the lead (else it stays
        a standby and keeps trying in the background)."""
        if self._running:
            raise InvalidState("the gateway is already running")
        # Every subject the gateway uses is built from checked tokens (wire.token, the prefix
        # check above) or comes from the server (reply inboxes), so nats-py's per-publish
        # subject check (a regex search, ~0.35 µs of every market message) is skipped.
        self._link.closing = False
        try:
            self._nc = await nats.connect(
                self.nats_url,
                name=f"alorws-gateway-{self.node}",
                skip_subject_validation=True,
                connect_timeout=10.0,  # nats-py's 2 s fails a loaded machine's first connect
                **self._link.options(),
            )
        except Exception as exc:
            raise ConnectError(
                f"cannot connect to NATS at {safe_url(self.nats_url)}: {describe(exc)}"
            ) from None
        self._link.connected = True
        self._lost = asyncio.get_running_loop().create_future()
        self._nats_up.set()
        self._running = True
        try:
            self._js = self._nc.jetstream()
            await self._ensure_stream()
            if self.leader_ttl is None:
                await self._take_lead(None)
                return
            self._kv = await self._leader_bucket(self.leader_ttl)
            self.role = "standby"
            rev = await self._campaign()
            if rev is not None:
                await self._take_lead(rev)
            self._elector = asyncio.get_running_loop().create_task(self._elect())
        except BaseException:
            await self.aclose()
            raise

    async def _ensure_stream(self) -> None:
        """Create the account stream, or update it if it exists with another configuration."""
        assert self._js is not None
        subjects = [f"{self.prefix}.acct.>"]
        try:
            await self._js.add_stream(
                name=self.stream_name, subjects=subjects, duplicate_window=self.duplicate_window
            )
        except BadRequestError:  # exists with another config: keep the data, update it
            await self._js.update_stream(
                name=self.stream_name, subjects=subjects, duplicate_window=self.duplicate_window
            )

    # -- NATS outages ----------------------------------------------------------------------------

    async def _nats_lost(self) -> None:
        """The NATS connection is lost: publishing stops (market data is dropped and marked,
        account events wait in their stream's buffer); the ALOR session keeps running."""
        self._outages += 1
        self._nats_up.clear()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    async def _nats_back(self) -> None:
        """Connected again (nats-py re-sent our subscriptions): nobody's lease ran out while
        nobody could renew, and the rest is re-established in the background."""
        self._lost = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        for consumer in self._seen:
            self._seen[consumer] = now
        self._nats_up.set()
        if self._reestablishing is not None:
            self._reestablishing.cancel()  # one from an earlier reconnect, still retrying
        self._reestablishing = asyncio.get_running_loop().create_task(self._reestablish())

    async def _reestablish(self) -> None:
        """After a reconnect: announce ourselves (consumers renew at once, instead of a third of
        a lease later), then make sure the account stream and the leader bucket exist (a
        server that lost its store has neither)."""
        assert self._nc is not None
        if self._serving:
            announce = wire.LeaderInfo(node=self.node, since=time.time())
            with contextlib.suppress(Exception):
                await self._nc.publish(
                    wire.leader_subject(self.prefix), msgspec.json.encode(announce)
                )
        delay = 0.1
        failing = False
        while self._nats_up.is_set():
            try:
                await self._ensure_stream()
                if self.leader_ttl is not None:
                    self._kv = await self._leader_bucket(self.leader_ttl)
            except Exception as exc:
                if not failing:
                    log.warning(
                        "gateway %s: JetStream does not answer yet (%s); retrying",
                        self.node,
                        describe(exc),
                    )
                failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if failing:
                log.warning("gateway %s: JetStream answers again", self.node)
            return

    def _outage_epoch(self) -> str:
        return f"{self.node}:{self._outages}"

    def _drop_while_down(self, up: _Upstream, items: list[Any]) -> None:
        """Market data that cannot be published now: dropped, and marked for the consumers."""
        if up.outage is None:
            up.outage = self._link.down_since or time.monotonic()
        for item in items:
            if isinstance(item, LaneEvent):
                up.lane_down = item.kind == "disconnected"
            else:
                self.counters["dropped_market"] += 1

    async def _mark_outage(self, up: _Upstream) -> None:
        """The gap marker of data dropped while NATS was down, in place before what follows:
        ``disconnected`` unless consumers already know of a gap, ``restored`` unless the ALOR
        subscription itself is still restoring (its own ``restored`` follows then)."""
        since, up.outage = up.outage, None
        if since is None:
            return
        assert self._nc is not None
        headers = {wire.OUTAGE_HEADER: self._outage_epoch()}
        reason = "the gateway's NATS connection was lost"
        events = [] if up.shown_down else [LaneEvent("disconnected", 0, reason)]
        if not up.lane_down:
            downtime = time.monotonic() - since
            events.append(LaneEvent("restored", 0, "the gateway is back on NATS", downtime))
        for ev in events:
            await self._nc.publish(
                up.subject, msgspec.json.encode(ev), headers={**headers, wire.EVENT_HEADER: ev.kind}
            )
        up.shown_down = up.lane_down
        self.counters["outage_markers"] += 1

    async def aclose(self) -> None:
        """Stop serving (closing every ALOR subscription it holds, and the client if it made
        it), hand the lead over, disconnect from NATS."""
        if not self._running:
            return
        self._running = False
        if self._elector is not None:
            self._elector.cancel()
            with contextlib.suppress(BaseException):
                await self._elector
            self._elector = None
        leading = self.role == "leader"
        await self._stop_serving()
        if leading:
            await self._resign()
        self.role = "stopped"
        if self._reestablishing is not None:
            self._reestablishing.cancel()
            with contextlib.suppress(BaseException):
                await self._reestablishing
            self._reestablishing = None
        if self._nc is not None:
            self._link.closing = True
            await _close_nats(self._nc)
            self._nc = None
        self._nats_up.clear()

    async def _serve(self) -> None:
        """Start the client (if ours) and answer the control and order subjects."""
        assert self._nc is not None
        if self._factory is not None and self._client is None:
            client = self._factory()
            try:
                await client.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await client.aclose()
                raise
            self._client = client
        p = self.prefix
        self._serving = True
        for subject, handler in (
            (f"{p}.ctl.subscribe", self._on_subscribe),
            (f"{p}.ctl.unsubscribe", self._on_unsubscribe),
            (f"{p}.ctl.renew", self._on_renew),
            (f"{p}.orders.*", self._on_order),
        ):
            self._subs.append(await self._nc.subscribe(subject, cb=self._server(handler)))
        await self._nc.flush()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        announce = wire.LeaderInfo(node=self.node, since=time.time())
        await self._nc.publish(wire.leader_subject(p), msgspec.json.encode(announce))

    async def _stop_serving(self) -> None:
        """Stop answering, close every upstream, forget the consumers, close our client."""
        self._serving = False
        if self._holder is not None:
            self._holder.cancel()
            with contextlib.suppress(BaseException):
                await self._holder
            self._holder = None
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
            self._sweeper = None
        closing = [t for t in self._tasks if t in self._closers]
        for task in list(self._tasks):
            if task not in self._closers:
                task.cancel()
        if self._tasks:  # bounded: a task that swallowed its cancellation cannot hold us
            await asyncio.wait(list(self._tasks), timeout=5.0)
        self._consumers.clear()
        self._seen.clear()
        await asyncio.gather(
            *(self._close_upstream(up) for up in ups), *closing, return_exceptions=True
        )
        if self._factory is not None and self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.aclose()
        if self.role == "leader":
            self.role = "standby" if self._running else "stopped"

    # -- leader election ------------------------------------------------------------------------

    async def _leader_bucket(self, ttl: float) -> KeyValue:
        assert self._js is not None
        bucket = wire.leader_bucket_name(self.prefix)
        config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl, storage=StorageType.FILE)
        try:
            return await self._js.create_key_value(config)
        except BadRequestError:  # exists with another TTL: use it as it is
            log.warning("gateway: bucket %s exists with another configuration; using it", bucket)
            return await self._js.key_value(bucket)

    def _leader_value(self) -> bytes:
        return msgspec.json.encode(wire.LeaderInfo(node=self.node, since=time.time()))

    async def _leader_entry(self) -> tuple[int, str] | None:
        """(revision, node) of the leader entry, or None when there is none."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(wire.LEADER_KEY)
        except KeyNotFoundError:  # never written, expired, or deleted
            return None
        try:
            node = msgspec.json.decode(entry.value or b"", type=wire.LeaderInfo).node
        except Exception:  # an unreadable entry still holds the lead: only its name is lost
            node = "?"
        return int(entry.revision or 0), node

    async def _campaign(self) -> int | None:
        """One look at the lease: take it if it is free or stale; the revision if we did."""
        assert self._kv is not None and self.leader_ttl is not None
        found = await self._leader_entry()
        now = time.monotonic()
        if found is None:
            try:
                return await self._kv.create(wire.LEADER_KEY, self._leader_value())
            except BadRequestError:  # another gateway created it first
                return None
        rev, node = found
        self.leader_node = node
        if node != self.node:
            self._saw_other = True
        if rev != self._seen_rev:
            self._seen_rev, self._seen_at = rev, now
            return None
        if now - self._seen_at < self.leader_ttl:
            return None
        log.warning(
            "gateway %s: leader %s has not renewed its lease for %.1f s; taking over",
            self.node,
            node,
            now - self._seen_at,
        )
        try:
            return await self._kv.update(wire.LEADER_KEY, self._leader_value(), last=rev)
        except BadRequestError:  # renewed or taken meanwhile
            return None

    async def _take_lead(self, rev: int | None) -> None:
        """Start serving; with election, ``rev`` is our lease, renewed in the background."""
        self.role = "leader"
        self.leader_node = self.node
        self.counters["leaderships"] += 1
        if rev is not None:
            if self._saw_other:
                self.counters["takeovers"] += 1
                log.warning("gateway %s: took the lead", self.node)
            else:
                log.info("gateway %s: leading", self.node)
            self._saw_other = False
            self._rev = rev
            self._lease_until = time.monotonic() + (self.leader_ttl or 0.0)
            self._holder = asyncio.get_running_loop().create_task(self._hold())
        try:
            await self._serve()
        except BaseException:
            await self._stop_serving()
            await self._resign()
            raise

    async def _hold(self) -> str:
        """Renew the lease until it is lost; returns why."""
        assert self._kv is not None and self.leader_ttl is not None
        kv, ttl = self._kv, self.leader_ttl
        while True:
            await asyncio.sleep(ttl / 3)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(ttl / 3):
                    self._rev = await kv.update(
                        wire.LEADER_KEY, self._leader_value(), last=self._rev
                    )
                self._lease_until = sent + ttl
                continue
            except KeyWrongLastSequenceError:
                pass
            except Exception as exc:  # NATS unreachable or slow: hold on until the lease ends
                if time.monotonic() >= self._lease_until:
                    return f"could not renew the leader lease for {ttl} s ({exc!r})"
                continue
            # Not the revision we wrote: an update whose reply we missed, our entry expired,
            # or another gateway took it.
            try:
                found = await self._leader_entry()
                if found is not None and found[1] == self.node:
                    self._rev = found[0]
                    continue
                if found is None:
                    self._rev = await kv.create(wire.LEADER_KEY, self._leader_value())
                    self._lease_until = sent + ttl
                    continue
            except Exception as exc:
                log.debug("gateway %s: re-reading the lease failed: %r", self.node, exc)
                if time.monotonic() < self._lease_until:
                    continue
            return "another gateway holds the leader lease"

    async def _elect(self) -> None:
        """Lead while the lease holds; otherwise look at it every ``leader_ttl / 4``."""
        assert self.leader_ttl is not None
        ttl = self.leader_ttl
        while self._running:
            if self.role == "leader" and self._holder is not None:
                try:
                    reason = await self._holder
                except Exception as exc:
                    reason = repr(exc)
                self._holder = None
                log.error("gateway %s: stops serving: %s", self.node, reason)
                await self._stop_serving()
                self._seen_rev = None
                continue
            await asyncio.sleep(ttl / 4)
            try:
                rev = await self._campaign()
            except Exception as exc:
                log.debug("gateway %s: election round failed: %r", self.node, exc)
                continue
            if rev is None:
                continue
            try:
                await self._take_lead(rev)
            except Exception as exc:
                log.error("gateway %s: won the lead but cannot serve: %s", self.node, exc)
                await asyncio.sleep(ttl)

    async def _resign(self) -> None:
        """Delete our leader entry (a standby takes over at its next look)."""
        kv, rev, self._rev = self._kv, self._rev, None
        if kv is None or rev is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await kv.delete(wire.LEADER_KEY, last=rev)

    # -- serving ------------------------------------------------------------------------------

    def _server(
        self, handler: Callable[[Msg], Awaitable[bytes]]
    ) -> Callable[[Msg], Awaitable[None]]:
        """A NATS callback that answers each request in its own task (a slow subscribe never
        holds up the others)."""

        async def callback(msg: Msg) -> None:
            if self._serving:
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

    def _decode(self, data: bytes, cls: type[T]) -> T:
        """A consumer's request, or InvalidArgumentError (answered to it, counted in
        ``errors``, logged rate-limited): any failure to decode is the request's fault."""
        try:
            return msgspec.json.decode(data, type=cls)
        except Exception as exc:  # RecursionError too: never a traceback per bad request
            error = FrameError(f"bad {cls.__name__}: {type(exc).__name__}: {exc}", data)
            self._bad_log.report(error, f"{cls.__name__} {type(exc).__name__}")
            raise InvalidArgumentError("request", scrub(f"bad {cls.__name__}: {exc}")) from None

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
        snapshot = _valid_snapshot(up)
        if snapshot is not None:
            reply = msgspec.structs.replace(reply, snapshot=msgspec.Raw(snapshot))
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
        down = []
        for h in ctl.handles:
            up = self._upstreams.get(handles.get(h, b""))
            if up is not None and up.lane_down:
                down.append(h)
        reply = wire.RenewReply(
            lease=self.lease_seconds, missing=missing, down=down, epoch=self._outage_epoch()
        )
        return msgspec.json.encode(reply)

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
            if not self._nats_up.is_set():  # nobody can renew now: leases run from reconnect
                continue
            deadline = time.monotonic() - self.lease_seconds
            for consumer, seen in list(self._seen.items()):
                if seen < deadline:
                    log.info("gateway: lease of consumer %s expired; releasing it", scrub(consumer))
                    self.counters["expired"] += 1
                    self._drop_consumer(consumer)

    # -- upstream subscriptions ------------------------------------------------------------------

    async def _open(self, up: _Upstream) -> None:
        policy = None if up.account else self.market_policy
        stream = open_stream(self.client, up.request, policy=policy)
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
        if up.account or not await self._pump_payloads(up):
            await self._pump_models(up)

    async def _pump_payloads(self, up: _Upstream) -> bool:
        """Market data passes through undecoded: each payload is published as ALOR sent it (in
        the request's format, which is what consumers decode), connection events in place.

        Returns False, having read nothing, if the stream cannot be read undecoded: all trades
        and bars are kept whole across restores by a client-side filter, which decodes."""
        stream = up.stream
        assert stream is not None and self._nc is not None
        nc = self._nc
        publish = nc.publish
        subject = up.subject
        keep_last = issubclass(stream.model, _STATE_MODELS)
        counters = self.counters
        first = True
        while not up.closed:
            items: list[bytes | LaneEvent]
            try:
                items = await stream.get_payloads(1000)
            except BufferOverflowError as exc:
                log.warning("gateway: %s: %s", subject, exc)
                items = [*_overflow_gap(exc)]
            except StreamClosed:
                return True
            except InvalidState:
                if first:
                    return False
                log.exception("gateway: %s failed; it publishes nothing more", subject)
                return True
            except Exception:
                log.exception("gateway: %s failed; it publishes nothing more", subject)
                return True
            first = False
            if not nc.is_connected:
                self._drop_while_down(up, items)
                continue
            last: bytes | None = None
            sent = 0
            try:
                if up.outage is not None:
                    await self._mark_outage(up)
                for item in items:
                    if type(item) is bytes:
                        last = item
                        await publish(subject, item)
                        counters["published_market"] += 1
                        up.published += 1
                    elif isinstance(item, LaneEvent):
                        await self._publish_event(up, item)
                    sent += 1
            except (nats.errors.Error, OSError):  # the connection went down under us
                self._drop_while_down(up, items[sent:])
            if keep_last and last is not None:
                up.last = last
        return True

    async def _publish_event(self, up: _Upstream, ev: LaneEvent) -> None:
        assert self._nc is not None
        up.lane_down = ev.kind == "disconnected"
        headers = {wire.EVENT_HEADER: ev.kind}
        await self._nc.publish(up.subject, msgspec.json.encode(ev), headers=headers)
        up.shown_down = up.lane_down

    async def _pump_models(self, up: _Upstream) -> None:
        """Decode and re-encode: account streams (their message ids derive from the content)
        and market streams that a client-side filter keeps whole (all trades, bars)."""
        stream = up.stream
        assert stream is not None and self._nc is not None
        nc = self._nc
        fmt = Format(up.request.format)
        keep_last = issubclass(stream.model, _STATE_MODELS)
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
                    self.counters["published_account"] += 1
                    up.published += 1
                continue
            items: list[Any] = [*pending, *batch]
            if not nc.is_connected:
                self._drop_while_down(up, items)
                continue
            sent = 0
            try:
                if up.outage is not None:
                    await self._mark_outage(up)
                for item in items:
                    if isinstance(item, LaneEvent):
                        await self._publish_event(up, item)
                    else:
                        payload = wire.encode_model(item, fmt)
                        await nc.publish(up.subject, payload)
                        self.counters["published_market"] += 1
                        if keep_last:
                            up.last = payload
                        up.published += 1
                    sent += 1
            except (nats.errors.Error, OSError):  # the connection went down under us
                self._drop_while_down(up, items[sent:])

    async def _publish_account(
        self, up: _Upstream, obj: Model, payload: bytes, fmt: Format
    ) -> None:
        """Publish to JetStream until it is stored (retries are safe: the id de-duplicates)."""
        assert self._js is not None
        js = self._js
        headers = {"Nats-Msg-Id": self._msg_id(up, obj), wire.FORMAT_HEADER: fmt.value}
        delay = 0.05
        while True:
            if not self._nats_up.is_set():  # wait in the ALOR stream's buffer, not nats-py's
                await self._nats_up.wait()
            lost = self._lost
            try:
                await _unless(js.publish(up.subject, payload, headers=headers, timeout=5.0), lost)
            except _Lost:  # the ack may be lost with the connection: publish again when back
                continue
            except Exception as exc:
                # nats-py can turn a cancellation into a timeout: never retry past one.
                task = asyncio.current_task()
                if up.closed or (task is not None and task.cancelling()):
                    raise asyncio.CancelledError from exc
                if self._nats_up.is_set() and not self._js_failing:
                    self._js_failing = True  # one line for every stream, until one succeeds
                    log.warning(
                        "gateway: publishing to JetStream failed (%s: %s); retrying",
                        up.subject,
                        describe(exc),
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self._js_failing:
                self._js_failing = False
                log.warning("gateway: publishing to JetStream works again (%s)", up.subject)
            return

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

    def budget(self) -> dict[str, int]:
        """The connection and subscription budget of the ALOR session, and what is used now
        (zeros on a standby)."""
        client = self._client
        if client is None:
            return {"connections": 0, "subscriptions": 0, "max_connections": 0,
                    "max_subscriptions": 0}  # fmt: skip
        cstats = client.stats()
        orders = cstats.get("orders") or {}
        cws = 1 if orders.get("state") in ("connecting", "authorizing", "open") else 0
        return {
            "connections": int(cstats["connections"]) + cws,
            "subscriptions": int(cstats["subscriptions"]),
            "max_connections": client.max_connections,
            "max_subscriptions": client.max_connections * client.max_subscriptions_per_connection,
        }

    def stats(self) -> dict[str, Any]:
        """Role and election, upstream subscriptions (with holders and messages published),
        consumers, budget, the NATS connection (connected, disconnects, reconnects), counters
        (``dropped_market``: market messages dropped while NATS was down; ``outage_markers``:
        gap markers published for them)."""
        return {
            "running": self._running,
            "node": self.node,
            "role": self.role,
            "leader": self.role == "leader",
            "leader_node": self.leader_node,
            "budget": self.budget(),
            "consumers": len(self._consumers),
            "subscriptions": len(self._upstreams),
            "handles": sum(len(h) for h in self._consumers.values()),
            "upstreams": [
                {"subject": up.subject, "holders": len(up.holders), "published": up.published}
                for up in self._upstreams.values()
            ],
            "orders_in_flight": len(self._orders_inflight),
            "nats": self._link.stats(),
            **self.counters,
        }


def _overflow_gap(exc: BufferOverflowError) -> list[LaneEvent]:
    """Messages the gateway's buffer dropped: a gap that is over as soon as it is said."""
    return [LaneEvent("disconnected", 0, str(exc)), LaneEvent("restored", 0, "the stream goes on")]


class _Lost(Exception):
    """The NATS connection was lost while waiting for an answer."""


async def _unless(aw: Awaitable[T], lost: asyncio.Future[None] | None) -> T:
    """Await ``aw``, or raise :class:`_Lost` as soon as ``lost`` is resolved (cancelling it)."""
    task = asyncio.ensure_future(aw)
    if lost is None:
        return await task
    try:
        await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.cancelled():
        raise _Lost
    return task.result()


def _valid_snapshot(up: _Upstream) -> bytes | None:
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


def _ack_reply(ack: OrderAck) -> bytes:
    return msgspec.json.encode(
        wire.OrderReply(
            ack=wire.OrderAckWire(ack.order_number, ack.http_code, ack.message, ack.guid)
        )
    )


def _digest(obj: Model) -> str:
    # UNSET (a key the format lacks, e.g. Summary's Slim-only one) cannot be encoded: left out.
    fields = {k: v for k, v in msgspec.structs.asdict(obj).items() if v is not msgspec.UNSET}
    fields.pop("existing", None)
    return hashlib.blake2b(msgspec.json.encode(fields), digest_size=10).hexdigest()


def open_stream(
    client: AlorClient, req: rq.SubscriptionRequest, *, policy: Policy | None = None
) -> Stream[Any]:
    """The :class:`~alorws.client.Stream` of ``client`` for ``req`` (not yet subscribed), with
    buffer ``policy`` (default: the client's for that stream; instrument patches always the
    client's, ``queue``: each must be seen to fold them)."""
    if isinstance(req, rq.InstrumentRequest):
        policy = None
    return client.stream(req, policy=policy)


async def _close_nats(nc: NatsClient) -> None:
    """Flush what is pending (bounded), then close: ``drain()`` can wait for its full timeout."""
    with contextlib.suppress(Exception):
        await nc.flush(timeout=2)
    with contextlib.suppress(Exception):
        await nc.close()
