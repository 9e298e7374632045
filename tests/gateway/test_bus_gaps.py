"""A consumer's own gap on an account stream, against a real nats-server and a scripted gateway
(a few NATS handlers this test controls): what JetStream stores while the gap lasts reaches the
consumer after the ``restored``, or the consumer is told in band how much it lost; never a silent
loss, whatever the consumer's buffer bound."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from alorws.bus import BusClient, wire
from alorws.bus.client import BusStream
from alorws.errors import BufferOverflowError
from alorws.gateway import NatsServer
from alorws.gateway.publish import ensure_account_stream
from alorws.protocol.account import Order

from .._hostile import good_payload, marker_of


PREFIX = "alorws"
LEASE = 0.6  # seconds: the consumer renews every 0.2 s


class ScriptedGateway:
    """Answers ``ctl.subscribe|renew|unsubscribe`` as a gateway would. ``forget()`` makes it
    answer renewals with every handle ``missing`` and hold the next subscribe's answer until
    ``release`` is set."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.forgotten = False
        self.asked = asyncio.Event()  # a subscribe came while forgotten
        self.release = asyncio.Event()
        self.release.set()

    async def start(self) -> None:
        await self.nc.subscribe(f"{PREFIX}.ctl.subscribe", cb=self._on_subscribe)
        await self.nc.subscribe(f"{PREFIX}.ctl.renew", cb=self._on_renew)
        await self.nc.subscribe(f"{PREFIX}.ctl.unsubscribe", cb=self._on_unsubscribe)
        await self.nc.flush()

    def forget(self) -> None:
        self.forgotten = True
        self.asked.clear()
        self.release.clear()

    async def _on_subscribe(self, msg: Msg) -> None:
        ctl = msgspec.json.decode(msg.data, type=wire.SubscribeCtl)
        if self.forgotten:
            self.asked.set()
            await self.release.wait()
            self.forgotten = False
        reply = wire.SubscribeReply(subject="", format=ctl.request.format, lease=LEASE)
        await msg.respond(msgspec.json.encode(reply))

    async def _on_renew(self, msg: Msg) -> None:
        ctl = msgspec.json.decode(msg.data, type=wire.RenewCtl)
        missing = list(ctl.handles) if self.forgotten else []
        await msg.respond(msgspec.json.encode(wire.RenewReply(lease=LEASE, missing=missing)))

    async def _on_unsubscribe(self, msg: Msg) -> None:
        await msg.respond(msgspec.json.encode(wire.RenewReply(lease=LEASE)))


@pytest.fixture
async def scripted(nats_server: NatsServer) -> AsyncIterator[ScriptedGateway]:
    nc = await nats.connect(nats_server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    await ensure_account_stream(nc.jetstream(), PREFIX, 60.0)
    gateway = ScriptedGateway(nc)
    await gateway.start()
    try:
        yield gateway
    finally:
        await nc.close()


class Reader:
    """Reads a bus stream in the background: order markers, the drops it was told of."""

    def __init__(self, stream: BusStream[Any]) -> None:
        self.stream = stream
        self.markers: list[int] = []
        self.dropped = 0
        self.restored_at: int | None = None  # orders delivered before the ``restored``
        self.changed = asyncio.Event()
        stream.on_event(self._on_event)
        self.task = asyncio.ensure_future(self._run())

    def _on_event(self, event: Any) -> None:
        if event.kind == "restored":
            self.restored_at = len(self.markers)

    async def _run(self) -> None:
        while True:
            try:
                order = await self.stream.get()
            except BufferOverflowError as exc:
                self.dropped += exc.dropped
            else:
                assert isinstance(order, Order)
                marker = marker_of("orders", order)
                assert marker is not None
                self.markers.append(marker)
            self.changed.set()

    async def accounted(self, total: int, seconds: float) -> None:
        """Until ``total`` orders were delivered or reported dropped."""
        try:
            async with asyncio.timeout(seconds):
                while len(self.markers) + self.dropped < total:
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"of {total} orders, {len(self.markers)} were delivered and {self.dropped} "
                f"reported dropped: the others vanished ({sorted(self.markers)})"
            ) from None

    async def stop(self) -> None:
        if self.task.done():
            self.task.result()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def until(check: Any, what: str, seconds: float = 10.0) -> None:
    """Poll ``check()`` (a counter of the consumer; there is no event to await)."""
    try:
        async with asyncio.timeout(seconds):
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bound", [5, 100])
@pytest.mark.parametrize("cause", ["forgotten", "nats outage"])
async def test_account_events_stored_in_a_gap_are_never_lost_silently(
    nats_server: NatsServer, scripted: ScriptedGateway, cause: str, bound: int
) -> None:
    """The gateway forgets the consumer's orders stream (after a NATS outage, or with NATS up)
    and answers its subscribe again only after 20 more orders were stored: each of them is
    delivered after one ``disconnected`` and one ``restored``, or (more than the consumer's
    buffer bound arriving at once) counted by a ``BufferOverflowError``; none vanishes."""
    js = scripted.nc.jetstream()
    before, during = 2, 20
    async with BusClient(nats_server.url, request_timeout=30.0) as bus:
        stream = bus.orders("D1", max_buffer=bound)
        await stream.subscribe()
        reader = Reader(stream)
        try:
            for marker in range(before):
                await js.publish(stream.subject, good_payload("orders", marker))
            await reader.accounted(before, 10.0)
            scripted.forget()
            if cause == "nats outage":
                await nats_server.stop(keep=True)
                await nats_server.start()
            async with asyncio.timeout(20.0):
                await scripted.asked.wait()  # the consumer subscribes again, unanswered yet
            for marker in range(before, before + during):
                await js.publish(stream.subject, good_payload("orders", marker))
            # Read during the gap, they would all be taken before the answer; the stream has
            # no read open until the gateway answers.
            await until(
                lambda: stream.stats()["received"] >= before + during or stream._sub is None,
                "the orders stored in the gap to reach the consumer",
            )
            scripted.release.set()
            await reader.accounted(before + during, 20.0)
            assert len(reader.markers) == len(set(reader.markers))  # none twice
            assert len(reader.markers) + reader.dropped == before + during
            assert reader.markers[:before] == list(range(before))
            assert reader.restored_at == before  # what the gap stored comes after the restored
            if bound >= during:
                assert reader.dropped == 0
            assert [e.kind for e in stream.events] == ["disconnected", "restored"]
            await reader.stop()
        finally:
            reader.task.cancel()
