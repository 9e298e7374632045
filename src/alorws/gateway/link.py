"""The gateway's NATS connection: connecting, outages, and what follows a reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from ..bus._natslink import NatsLink, Retry, describe
from ..errors import InvalidState


__all__ = ["GatewayLink"]

log = logging.getLogger("alorws.gateway")

T = TypeVar("T")


class GatewayLink:
    """The gateway's one NATS connection and its outages.

    The ALOR session does not depend on NATS: when the connection is lost nats-py reconnects
    (every 0.5 s) and each event is one log line (:class:`~alorws.bus._natslink.NatsLink`).
    While it is down :attr:`up` is clear and :attr:`lost` resolved, so publishers wait or drop
    instead of filling nats-py's buffer. Once back, ``on_back`` runs at once (leases restart),
    then ``announce`` and ``setup`` in the background, ``setup`` retried until JetStream
    answers (a server that lost its store has no account stream and no leader bucket).

    Args:
        url: the NATS server.
        node: the gateway's name (in logs and the connection's name).
        on_back: called as soon as the connection is back.
        announce: publishes the gateway's announcement (if it serves).
        setup: makes sure the JetStream objects exist; raises while JetStream does not answer.
    """

    def __init__(
        self,
        url: str,
        node: str,
        *,
        on_back: Callable[[], None],
        announce: Callable[[], Awaitable[None]],
        setup: Callable[[], Awaitable[None]],
    ) -> None:
        self.node = node
        self.js: JetStreamContext | None = None
        self._on_back = on_back
        self._announce = announce
        self._setup = setup
        self._link = NatsLink(log, f"gateway {node}", url, on_back=self._nats_back)
        self._reestablishing: asyncio.Task[None] | None = None

    @property
    def up(self) -> asyncio.Event:
        """Set while the connection is up."""
        return self._link.up

    @property
    def lost(self) -> asyncio.Future[None] | None:
        """Resolved when the connection is lost (replaced once it is back)."""
        return self._link.lost

    @property
    def epoch(self) -> str:
        """``<node>:<outages so far>``: names the outage a gap marker is for."""
        return f"{self.node}:{self._link.disconnects}"

    @property
    def down_since(self) -> float | None:
        """Monotonic time the connection was lost, None while it is up."""
        return self._link.down_since

    def nats(self) -> NatsClient:
        """The connection (after :meth:`connect`)."""
        return self._link.nats()

    def jetstream(self) -> JetStreamContext:
        """The JetStream context of the connection (after :meth:`connect`)."""
        if self.js is None:
            raise InvalidState(f"gateway {self.node} is not connected to NATS")
        return self.js

    async def connect(self) -> None:
        """Connect (raises :class:`~alorws.errors.ConnectError` if the server cannot be
        reached); from then on nats-py reconnects by itself."""
        # Every subject the gateway uses is built from checked tokens (wire.token, the prefix
        # check) or comes from the server (reply inboxes), so nats-py's per-publish subject
        # check (a regex search, ~0.35 µs of every market message) is skipped.
        nc = await self._link.connect(
            name=f"alorws-gateway-{self.node}", skip_subject_validation=True
        )
        self.js = nc.jetstream()

    async def aclose(self) -> None:
        """Stop re-establishing, flush (bounded) and close the connection."""
        if self._reestablishing is not None:
            self._reestablishing.cancel()
            with contextlib.suppress(BaseException):
                await self._reestablishing
            self._reestablishing = None
        await self._link.close()

    async def unless_lost(self, aw: Awaitable[T]) -> T:
        """Await ``aw``, or cancel it and raise :class:`~alorws.bus._natslink.Lost` as soon as
        the connection is lost."""
        return await self._link.unless_lost(aw)

    def stats(self) -> dict[str, Any]:
        """Connected or not, disconnects, reconnects, failed attempts now."""
        return self._link.stats()

    async def _nats_back(self) -> None:
        self._on_back()
        if self._reestablishing is not None:
            self._reestablishing.cancel()  # one from an earlier reconnect, still retrying
        self._reestablishing = asyncio.get_running_loop().create_task(self._reestablish())

    async def _reestablish(self) -> None:
        """Announce (consumers renew at once instead of a third of a lease later), then run
        ``setup`` until it works or the connection is lost again."""
        with contextlib.suppress(Exception):
            await self._announce()
        retry = Retry(log)
        delays = retry.delays()
        while self.up.is_set():
            try:
                await self._setup()
            except Exception as exc:
                await retry.failed(
                    delays,
                    "gateway %s: JetStream does not answer yet (%s); retrying",
                    self.node,
                    describe(exc),
                )
                continue
            retry.worked("gateway %s: JetStream answers again", self.node)
            return
