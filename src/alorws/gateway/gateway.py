"""The gateway: one ALOR session (an :class:`~alorws.client.AlorClient`) served on NATS.

::

    async with AlorClient(token) as client, Gateway(client, "nats://127.0.0.1:4222"):
        await asyncio.Event().wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from typing import Any

from nats.aio.subscription import Subscription

from ..bus import wire
from ..client.buffer import Policy
from ..client.client import AlorClient
from ..errors import ConfigurationError, InvalidState
from ..protocol import requests as rq
from ..protocol.enums import Format
from .election import Election, Role
from .link import GatewayLink
from .orders import OrderDesk
from .publish import Publisher, ensure_account_stream
from .relay import Relay
from .responder import Responder
from .session import ClientFactory, Session


__all__ = ["Gateway"]


class Gateway:
    """Serves an ALOR session on the NATS server at ``nats_url`` (docs/scale-out.md).

    The gateway is the sum of its parts, each in its module: the :class:`Election` of the
    gateway that serves a prefix (``leader_ttl``), the :class:`GatewayLink` to NATS and its
    outages, the :class:`Relay` of subscriptions (consumers, leases, upstreams) with the
    :class:`Publisher` of what they deliver, the :class:`OrderDesk`, and the
    :class:`Session` (the ALOR client and its budget). Only the leader holds ALOR connections
    and answers ``ctl.*``/``orders.*``; it announces itself on ``<prefix>.ctl.leader`` when it
    starts serving and when its NATS connection is back, and consumers renew at once.

    Args:
        client: a started :class:`~alorws.client.AlorClient` (the caller closes it), or a
            factory of a new, not started one: the gateway starts it when it starts leading
            and closes it when it stops (required with ``leader_ttl``, so that a standby holds
            no ALOR connection).
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
        max_connections, max_subscriptions_per_connection, reserve_connections: the budget of
            the ALOR session, as :class:`~alorws.client.AlorClient`'s (None: the client's own).
            A factory is called with those given as keyword arguments; a started client must
            have them. Market data is sharded over the connections the budget allows and never
            takes the reserved ones, so an account shared with other applications keeps
            connections free.

    Raises:
        ConfigurationError: a bad argument (see :class:`Session` for the budget).
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
        max_connections: int | None = None,
        max_subscriptions_per_connection: int | None = None,
        reserve_connections: int | None = None,
    ) -> None:
        if not lease_seconds > 0:
            raise ConfigurationError("lease_seconds must be > 0")
        if wire.token(prefix) != prefix:
            raise ConfigurationError(f"prefix {prefix!r} must be one subject token ([A-Za-z0-9_-])")
        self._session = Session(
            client,
            max_connections=max_connections,
            max_subscriptions_per_connection=max_subscriptions_per_connection,
            reserve_connections=reserve_connections,
        )
        if leader_ttl is not None:
            if not leader_ttl > 0:
                raise ConfigurationError("leader_ttl must be > 0")
            if not self._session.has_factory:
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
        self.counters = dict.fromkeys(
            (
                "subscribe",
                "unsubscribe",
                "renew",
                "expired",
                "orders",
                "order_retries",
                "errors",
                "published_market",
                "published_account",
                "leaderships",
                "takeovers",
                "dropped_market",
                "outage_markers",
            ),
            0,
        )
        self._running = False
        self._subs: list[Subscription] = []
        self._link = GatewayLink(
            nats_url,
            self.node,
            on_back=self._nats_back,
            announce=self._announce,
            setup=self._ensure_jetstream,
        )
        self._election = Election(
            self.node,
            prefix,
            self.leader_ttl,
            self.counters,
            serve=self._serve,
            stop=self._stop_serving,
        )
        self._responder = Responder(self.counters)
        self._relay = Relay(
            prefix=prefix,
            lease_seconds=self.lease_seconds,
            account_format=self.account_format,
            market_policy=self.market_policy,
            client=lambda: self.client,
            link=self._link,
            responder=self._responder,
            publisher=Publisher(self._link, self.counters),
            counters=self.counters,
        )
        self._orders = OrderDesk(
            lambda: self.client, self._responder, self._relay.touch, self.counters
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def client(self) -> AlorClient:
        """The ALOR session being served (only while leading, with a factory)."""
        client = self._session.active
        if client is None:
            raise InvalidState(f"gateway {self.node} is {self.role}: it holds no ALOR session")
        return client

    @property
    def active_client(self) -> AlorClient | None:
        """The ALOR session being served, or None (a standby, or stopped with a factory)."""
        return self._session.active

    @property
    def role(self) -> Role:
        """Leader, standby or stopped."""
        return self._election.role

    @property
    def leader_node(self) -> str | None:
        """The leader as last seen (this node while it leads)."""
        return self._election.leader_node

    @property
    def is_leader(self) -> bool:
        """True while this gateway serves (always, once started, without ``leader_ttl``)."""
        return self._election.is_leader

    async def start(self) -> None:
        """Connect to NATS, make sure the account stream exists, then serve the control
        subjects; with ``leader_ttl``, serve only if this gateway wins the lead (else it stays
        a standby and keeps trying in the background)."""
        if self._running:
            raise InvalidState("the gateway is already running")
        await self._link.connect()
        self._running = True
        try:
            await self._ensure_jetstream()
            await self._election.start()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop serving (closing every ALOR subscription it holds, and the client if it made
        it), hand the lead over, disconnect from NATS."""
        if not self._running:
            return
        self._running = False
        await self._election.aclose()
        await self._link.aclose()

    def canonical(self, request: rq.SubscriptionRequest) -> rq.SubscriptionRequest:
        """The request the gateway makes for ``request``: account streams are one upstream per
        portfolio, stream and exchange (full history, the gateway's format); market data as
        asked."""
        return self._relay.canonical(request)

    # -- serving (the election's callbacks) -----------------------------------------------------

    async def _serve(self) -> None:
        """Start the client (if ours), answer the control and order subjects, announce."""
        nc = self._link.nats()
        await self._session.open()
        self._responder.serving = True
        handlers = {**self._relay.handlers(), **self._orders.handlers()}
        for subject, handler in handlers.items():
            callback = self._responder.callback(handler)
            self._subs.append(await nc.subscribe(f"{self.prefix}.{subject}", cb=callback))
        await nc.flush()
        self._relay.start()
        await self._announce()

    async def _stop_serving(self) -> None:
        """Stop answering, close every upstream, forget the consumers, close our client."""
        self._responder.serving = False
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        ups = self._relay.halt()
        closing = await self._responder.stop()
        self._relay.forget_consumers()
        await asyncio.gather(
            *(self._relay.close_upstream(up) for up in ups), *closing, return_exceptions=True
        )
        await self._session.close()

    # -- NATS (the link's callbacks) ------------------------------------------------------------

    def _nats_back(self) -> None:
        self._relay.restart_leases()

    async def _announce(self) -> None:
        """Say on ``<prefix>.ctl.leader`` that this gateway serves (if it does)."""
        if self._responder.serving:
            await self._link.nats().publish(
                wire.leader_subject(self.prefix), self._election.announcement()
            )

    async def _ensure_jetstream(self) -> None:
        """The account stream and the leader bucket exist (made, or used as they are)."""
        js = self._link.jetstream()
        await ensure_account_stream(js, self.prefix, self.duplicate_window)
        await self._election.ensure_bucket(js)

    # -- observability ------------------------------------------------------------------------

    def budget(self) -> dict[str, int]:
        """The connection and subscription budget of the ALOR session and what is used now:
        ``connections`` (``/cws`` included), ``subscriptions``, ``max_connections``,
        ``max_subscriptions`` (all connections), ``max_subscriptions_per_connection``,
        ``reserve_connections`` (zeros on a standby)."""
        return self._session.budget()

    def stats(self) -> dict[str, Any]:
        """Role and election, upstream subscriptions (with holders and messages published),
        consumers, budget, the NATS connection (connected, disconnects, reconnects), counters
        (``dropped_market``: market messages dropped while NATS was down; ``outage_markers``:
        gap markers published for them)."""
        return {
            "running": self._running,
            "node": self.node,
            "role": self.role.value,
            "leader": self.is_leader,
            "leader_node": self.leader_node,
            "budget": self.budget(),
            **self._relay.stats(),
            "orders_in_flight": self._orders.in_flight,
            "nats": self._link.stats(),
            **self.counters,
        }
