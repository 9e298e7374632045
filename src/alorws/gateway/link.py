"""The gateway's NATS connection: connecting, outages, and what follows a reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from ..bus._natslink import NatsLink, describe, safe_url
from ..errors import ConnectError, InvalidState


__all__ = ["GatewayLink", "Lost", "unless"]

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
        self.url = url
        self.node = node
        self.nc: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self.up = asyncio.Event()
        self.lost: asyncio.Future[None] | None = None  # resolved when the connection is lost
        self.outages = 0
        self._on_back = on_back
        self._announce = announce
        self._setup = setup
        self._link = NatsLink(
            log, f"gateway {node}", url, on_lost=self._nats_lost, on_back=self._nats_back
        )
        self._reestablishing: asyncio.Task[None] | None = None

    @property
    def epoch(self) -> str:
        """``<node>:<outages so far>``: names the outage a gap marker is for."""
        return f"{self.node}:{self.outages}"

    @property
    def down_since(self) -> float | None:
        """Monotonic time the connection was lost, None while it is up."""
        return self._link.down_since

    def nats(self) -> NatsClient:
        """The connection (after :meth:`connect`)."""
        if self.nc is None:
            raise InvalidState(f"gateway {self.node} is not connected to NATS")
        return self.nc

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
        self._link.closing = False
        try:
            self.nc = await nats.connect(
                self.url,
                name=f"alorws-gateway-{self.node}",
                skip_subject_validation=True,
                connect_timeout=10.0,  # nats-py's 2 s fails a loaded machine's first connect
                **self._link.options(),
            )
        except Exception as exc:
            raise ConnectError(
                f"cannot connect to NATS at {safe_url(self.url)}: {describe(exc)}"
            ) from None
        self._link.connected = True
        self.lost = asyncio.get_running_loop().create_future()
        self.up.set()
        self.js = self.nc.jetstream()

    async def aclose(self) -> None:
        """Stop re-establishing, flush (bounded) and close the connection."""
        if self._reestablishing is not None:
            self._reestablishing.cancel()
            with contextlib.suppress(BaseException):
                await self._reestablishing
            self._reestablishing = None
        if self.nc is not None:
            self._link.closing = True
            await _close_nats(self.nc)
            self.nc = None
        self.up.clear()

    def stats(self) -> dict[str, Any]:
        """Connected or not, disconnects, reconnects, failed attempts now."""
        return self._link.stats()

    async def _nats_lost(self) -> None:
        self.outages += 1
        self.up.clear()
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    async def _nats_back(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()
        self._on_back()
        self.up.set()
        if self._reestablishing is not None:
            self._reestablishing.cancel()  # one from an earlier reconnect, still retrying
        self._reestablishing = asyncio.get_running_loop().create_task(self._reestablish())

    async def _reestablish(self) -> None:
        """Announce (consumers renew at once instead of a third of a lease later), then run
        ``setup`` until it works or the connection is lost again."""
        with contextlib.suppress(Exception):
            await self._announce()
        delay = 0.1
        failing = False
        while self.up.is_set():
            try:
                await self._setup()
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


class Lost(Exception):
    """The NATS connection was lost while waiting for an answer."""


async def unless(aw: Awaitable[T], lost: asyncio.Future[None] | None) -> T:
    """Await ``aw``, or raise :class:`Lost` as soon as ``lost`` is resolved (cancelling it)."""
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
        raise Lost
    return task.result()


async def _close_nats(nc: NatsClient) -> None:
    """Flush what is pending (bounded), then close: ``drain()`` can wait for its full timeout."""
    with contextlib.suppress(Exception):
        await nc.flush(timeout=2)
    with contextlib.suppress(Exception):
        await nc.close()
