"""Consumers, their leases and handles, and the gateway's ALOR subscriptions they hold."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from nats.aio.msg import Msg

from ..bus import wire
from ..client.buffer import Policy
from ..client.client import AlorClient
from ..client.sources import is_account
from ..errors import scrub
from ..protocol import requests as rq
from ..protocol.enums import Format
from .link import GatewayLink
from .publish import Publisher, Upstream, open_stream, valid_snapshot
from .responder import Handler, Responder


__all__ = ["Relay"]

log = logging.getLogger("alorws.gateway")


class Relay:
    """Answers ``<prefix>.ctl.subscribe|unsubscribe|renew``: consumers hold subscriptions
    under handles, and equal requests from any number of consumers share one ALOR
    subscription (an :class:`~alorws.gateway.publish.Upstream`, reference-counted by
    ``(consumer, handle)``, published by the :class:`~alorws.gateway.publish.Publisher`).

    Every consumer has a lease: a consumer not heard from for ``lease_seconds`` is dropped
    and its handles released. While NATS is down no lease runs out (nobody can renew), and
    leases restart from the reconnect. A subscription the client cannot make (budget,
    rejection, timeout) is answered with the error's class and message.

    Restoring subscriptions is left to the consumers: a gateway that starts serving starts
    empty, and every consumer's renewal (sent at once on the announcement) lists the handles
    it holds; those the gateway does not know come back as ``missing`` and are subscribed
    again. The consumers are the truth about what is wanted: nothing is kept in KV, a consumer
    that died meanwhile is never restored, and the same path serves a restart, a failover and
    an expired lease.

    Args:
        prefix: the gateway's subject prefix.
        lease_seconds: a consumer not heard from for this long is released.
        account_format: the wire format of every account upstream.
        market_policy: buffer policy of market data upstreams (None: the client's).
        client: the ALOR session the upstreams are opened on (raises on a standby).
        link: the gateway's NATS connection (leases wait while it is down).
        responder: where requests are answered and tasks run.
        publisher: publishes each upstream.
        counters: the gateway's counters (``subscribe``, ``unsubscribe``, ``renew``,
            ``expired``).
    """

    def __init__(
        self,
        *,
        prefix: str,
        lease_seconds: float,
        account_format: Format,
        market_policy: Policy | None,
        client: Callable[[], AlorClient],
        link: GatewayLink,
        responder: Responder,
        publisher: Publisher,
        counters: dict[str, int],
    ) -> None:
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.account_format = account_format
        self.market_policy = market_policy
        self._client = client
        self._link = link
        self._responder = responder
        self._publisher = publisher
        self._counters = counters
        self._upstreams: dict[bytes, Upstream] = {}
        self._consumers: dict[str, dict[str, bytes]] = {}  # consumer -> handle -> upstream key
        self._seen: dict[str, float] = {}  # consumer -> monotonic time last heard from
        self._sweeper: asyncio.Task[None] | None = None

    def handlers(self) -> dict[str, Handler]:
        """The control subjects (after the prefix) and their handlers."""
        return {
            "ctl.subscribe": self._on_subscribe,
            "ctl.unsubscribe": self._on_unsubscribe,
            "ctl.renew": self._on_renew,
        }

    def start(self) -> None:
        """Start expiring leases."""
        self._sweeper = self._responder.spawn(self._sweep())

    def halt(self) -> list[Upstream]:
        """Stop expiring leases and forget every upstream (marked closed); returns them, for
        the caller to close once the tasks using them are cancelled."""
        ups = list(self._upstreams.values())
        for up in ups:
            up.closed = True
        self._upstreams.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        return ups

    def forget_consumers(self) -> None:
        """Forget every consumer (a new lead starts empty)."""
        self._consumers.clear()
        self._seen.clear()

    def restart_leases(self) -> None:
        """Nobody could renew while NATS was down: every lease runs from now."""
        now = time.monotonic()
        for consumer in self._seen:
            self._seen[consumer] = now

    def touch(self, consumer: str) -> dict[str, bytes]:
        """Renew ``consumer``'s lease; its handles."""
        self._seen[consumer] = time.monotonic()
        return self._consumers.setdefault(consumer, {})

    def canonical(self, request: rq.SubscriptionRequest) -> rq.SubscriptionRequest:
        """The request the gateway makes for ``request``: account streams are one upstream per
        portfolio, stream and exchange (full history, the gateway's format); market data as
        asked."""
        if is_account(request):
            portfolio = str(getattr(request, "portfolio", ""))
            return type(request)(  # type: ignore[call-arg]
                portfolio=portfolio, exchange=request.exchange, format=self.account_format
            )
        return request

    async def close_upstream(self, up: Upstream) -> None:
        """Stop publishing ``up`` and close its stream (unsubscribing at ALOR)."""
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

    def stats(self) -> dict[str, Any]:
        """Consumers, upstream subscriptions (with holders and messages published), handles."""
        return {
            "consumers": len(self._consumers),
            "subscriptions": len(self._upstreams),
            "handles": sum(len(h) for h in self._consumers.values()),
            "upstreams": [
                {"subject": up.subject, "holders": len(up.holders), "published": up.published}
                for up in self._upstreams.values()
            ],
        }

    # -- control ------------------------------------------------------------------------------

    async def _on_subscribe(self, msg: Msg) -> bytes:
        self._counters["subscribe"] += 1
        ctl = self._responder.decode(msg.data, wire.SubscribeCtl)
        handles = self.touch(ctl.consumer)
        request = self.canonical(ctl.request)
        key = msgspec.json.encode(request)
        holder = (ctl.consumer, ctl.handle)
        old = handles.get(ctl.handle)
        if old is not None and old != key:
            self._release(ctl.consumer, ctl.handle)
        up = self._upstreams.get(key)
        if up is None:
            up = Upstream(key, request, wire.subject_for(self.prefix, request))
            self._upstreams[key] = up
            up.opening = self._responder.spawn(self._open(up))
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
        snapshot = valid_snapshot(up)
        if snapshot is not None:
            reply = msgspec.structs.replace(reply, snapshot=msgspec.Raw(snapshot))
        return msgspec.json.encode(reply)

    async def _on_unsubscribe(self, msg: Msg) -> bytes:
        self._counters["unsubscribe"] += 1
        ctl = self._responder.decode(msg.data, wire.UnsubscribeCtl)
        if ctl.handle:
            self.touch(ctl.consumer)
            self._release(ctl.consumer, ctl.handle)
        else:
            self._drop_consumer(ctl.consumer)
        return msgspec.json.encode(wire.RenewReply(lease=self.lease_seconds))

    async def _on_renew(self, msg: Msg) -> bytes:
        self._counters["renew"] += 1
        ctl = self._responder.decode(msg.data, wire.RenewCtl)
        handles = self.touch(ctl.consumer)
        missing = [h for h in ctl.handles if h not in handles]
        down = []
        for h in ctl.handles:
            up = self._upstreams.get(handles.get(h, b""))
            if up is not None and up.lane_down:
                down.append(h)
        reply = wire.RenewReply(
            lease=self.lease_seconds, missing=missing, down=down, epoch=self._link.epoch
        )
        return msgspec.json.encode(reply)

    # -- holders and leases ---------------------------------------------------------------------

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
            self._responder.spawn(self.close_upstream(up), closer=True)

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
            if not self._link.up.is_set():  # nobody can renew now: leases run from reconnect
                continue
            deadline = time.monotonic() - self.lease_seconds
            for consumer, seen in list(self._seen.items()):
                if seen < deadline:
                    log.info("gateway: lease of consumer %s expired; releasing it", scrub(consumer))
                    self._counters["expired"] += 1
                    self._drop_consumer(consumer)

    # -- upstream subscriptions ------------------------------------------------------------------

    async def _open(self, up: Upstream) -> None:
        policy = None if up.account else self.market_policy
        stream = open_stream(self._client(), up.request, policy=policy)
        await stream.subscribe()
        up.stream = stream
        if up.closed:  # every holder left while it was opening
            await stream.aclose()
            return
        up.pump = self._responder.spawn(self._publisher.pump(up))
