"""Gateway + BusClient over a real nats-server and the simulator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import pytest

from alorws.bus import BusClient, wire
from alorws.client import AlorClient
from alorws.errors import (
    ConnectError,
    InvalidArgumentError,
    OrderRejected,
    SubscriptionLimitError,
)
from alorws.gateway import Gateway, NatsServer
from alorws.protocol.account import Order, OwnTrade
from alorws.protocol.codec import decoder_for
from alorws.protocol.market import OrderBook, Quote, Trade
from alorws.sim.app import Simulator

from .conftest import FAST, LEASE


def sim_subscriptions(sim: Simulator) -> int:
    return int(sim.stats()["subscriptions"])


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110  # polls the simulator's counters
            await asyncio.sleep(0.02)


async def first(stream: Any, sim: Simulator, symbol: str, within: float = 5.0) -> Any:
    """The first message of ``stream``, making market events on ``symbol`` while waiting."""

    async def poke() -> None:
        while True:
            sim.burst(symbol, 5)
            await asyncio.sleep(0.05)

    poker = asyncio.ensure_future(poke())
    try:
        async with asyncio.timeout(within):
            return await stream.get()
    finally:
        poker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poker


QUOTED = ["SBER", "GAZP", "LKOH", "GMKN"]
BOOKS = [("SBER", 10), ("GAZP", 10), ("SBER", 5)]


def sim_subscription_keys(sim: Simulator) -> list[tuple[Any, ...]]:
    """Every subscription the simulator holds, by what it serves (kind, symbol, format, depth,
    interval): two equal keys would be one subscription made twice."""
    return [
        (sub.key, sub.fmt, getattr(sub, "depth", None), sub.interval)
        for conn in list(sim.server.hub.connections.values())
        for sub in list(conn.subs.values())
    ]


class BudgetWatch:
    """Samples the simulator while a test runs: the most connections of the account, the most
    subscriptions on one connection, and whether one subscription was ever made twice."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.max_connections = 0
        self.max_per_connection = 0
        self.duplicates: list[tuple[Any, ...]] = []
        self._task = asyncio.ensure_future(self._run())

    def sample(self) -> None:
        accounts = self.sim.stats()["accounts"]
        conns = max((a["connections"] for a in accounts.values()), default=0)
        self.max_connections = max(self.max_connections, conns)
        for conn in list(self.sim.server.hub.connections.values()):
            self.max_per_connection = max(self.max_per_connection, len(conn.subs))
        keys = sim_subscription_keys(self.sim)
        self.duplicates += [k for k in set(keys) if keys.count(k) > 1]

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sample()


async def test_twenty_consumers_share_one_alor_subscription_each_within_the_budget(
    sim: Simulator, nats_server: NatsServer
) -> None:
    """20 consumers, each with its own NATS connection, subscribe overlapping quotes and books:
    the simulator sees each distinct subscription once (and never one twice), every consumer
    gets its data, and the gateway stays within a small connection and subscription budget
    that the 7 distinct subscriptions fill to 3 connections of 3 at most."""
    budget = {"max_connections": 4, "reserve_connections": 1, "per_connection": 3}
    watch = BudgetWatch(sim)

    async def consumer(i: int) -> list[Any]:
        async with BusClient(nats_server.url) as bus:
            symbol, depth = BOOKS[i % 3]
            streams: list[Any] = [
                bus.quotes(QUOTED[i % 4]),
                bus.quotes(QUOTED[(i + 1) % 4]),
                bus.order_book(symbol, depth=depth),
            ]
            for s in streams:
                await s.subscribe()
            got = [await first(s, sim, s.request.code, within=15.0) for s in streams]
            ready.append(i)
            await release.wait()
            return got

    ready: list[int] = []
    release = asyncio.Event()
    async with (
        AlorClient(
            sim.demo_refresh_token,
            base_url=sim.url,
            backoff=FAST,
            max_connections=budget["max_connections"],
            reserve_connections=budget["reserve_connections"],
            max_subscriptions_per_connection=budget["per_connection"],
        ) as small,
        Gateway(small, nats_server.url, lease_seconds=LEASE) as gateway,
    ):
        tasks = [asyncio.ensure_future(consumer(i)) for i in range(20)]
        try:
            await eventually(
                lambda: len(ready) == len(tasks) or any(t.done() for t in tasks), within=40.0
            )
            for task in tasks:
                if task.done():
                    task.result()  # a consumer failed: its error fails the test
            distinct = len(QUOTED) + len(BOOKS)
            keys = sim_subscription_keys(sim)
            assert len(keys) == distinct and len(set(keys)) == distinct
            stats = gateway.stats()
            assert stats["subscriptions"] == distinct
            assert stats["consumers"] == 20 and stats["handles"] == 60
            assert stats["budget"]["subscriptions"] == distinct
            assert stats["budget"]["max_connections"] == budget["max_connections"]
            release.set()
            results = await asyncio.gather(*tasks)
        finally:
            release.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for i, got in enumerate(results):
            assert isinstance(got[0], Quote) and got[0].symbol == QUOTED[i % 4]
            assert isinstance(got[1], Quote) and got[1].symbol == QUOTED[(i + 1) % 4]
            assert isinstance(got[2], OrderBook)
        # Everyone unsubscribed on exit: the gateway released every ALOR subscription.
        await eventually(lambda: sim_subscriptions(sim) == 0)
        assert gateway.stats()["subscriptions"] == 0
    await watch.stop()
    assert watch.duplicates == []
    assert watch.max_connections <= budget["max_connections"]
    assert watch.max_per_connection <= budget["per_connection"]
    assert watch.max_connections >= 3  # the 7 subscriptions did need three market connections


async def test_late_consumer_starts_with_the_last_quote(
    sim: Simulator, gateway: Gateway, nats_server: NatsServer
) -> None:
    """A consumer joining a running subscription gets the current value at once."""
    async with BusClient(nats_server.url) as a, BusClient(nats_server.url) as b:
        async with a.quotes("SBER") as qa:
            await first(qa, sim, "SBER")
            async with b.quotes("SBER") as qb, asyncio.timeout(2.0):
                q = await qb.get()  # no market event needed: the snapshot
            assert isinstance(q, Quote) and q.symbol == "SBER"
            assert sim_subscriptions(sim) == 1


async def test_consumer_that_vanishes_is_released_after_its_lease(
    sim: Simulator, gateway: Gateway, nats_server: NatsServer
) -> None:
    """A consumer that disconnects without unsubscribing loses its subscriptions after the
    lease; a consumer that keeps renewing keeps its own across many leases."""
    async with BusClient(nats_server.url) as alive:
        keep = await alive.quotes("GAZP")
        gone = BusClient(nats_server.url)
        await gone.start()
        await gone.quotes("SBER")
        await gone.order_book("SBER")
        await gone.quotes("GAZP")  # shared with the live consumer
        assert sim_subscriptions(sim) == 3
        # Crash: no unsubscribe, no more renewals.
        assert gone._renewer is not None and gone._nc is not None
        gone._renewer.cancel()
        await gone._nc.close()
        await asyncio.sleep(LEASE / 2)
        assert sim_subscriptions(sim) == 3  # not before the lease runs out
        await eventually(lambda: sim_subscriptions(sim) == 1, within=LEASE * 4)
        assert gateway.stats()["expired"] == 1
        await asyncio.sleep(LEASE * 3)  # several leases: the live consumer renews
        assert sim_subscriptions(sim) == 1
        assert alive.renewals >= 3
        assert isinstance(await first(keep, sim, "GAZP"), Quote)


async def test_all_trades_and_errors_come_back_as_alorws_errors(
    sim: Simulator, gateway: Gateway, nats_server: NatsServer, portfolio: str
) -> None:
    async with BusClient(nats_server.url) as bus:
        async with bus.all_trades("SBER") as trades:
            assert isinstance(await first(trades, sim, "SBER"), Trade)
        with pytest.raises(OrderRejected) as info:
            await bus.trading.place_market(portfolio, "SBER", "buy", 2_000_000)
        assert info.value.http_code == 400
    async with BusClient(nats_server.url, prefix="nobody") as lonely:
        with pytest.raises(ConnectError, match="no gateway"):
            await lonely.quotes("SBER")


async def test_subscription_over_the_budget_is_refused_with_its_error(
    sim: Simulator, nats_server: NatsServer
) -> None:
    async with (
        AlorClient(
            sim.demo_refresh_token,
            base_url=sim.url,
            backoff=FAST,
            max_connections=3,
            reserve_connections=2,
            max_subscriptions_per_connection=2,
        ) as small,
        Gateway(small, nats_server.url, lease_seconds=LEASE),
        BusClient(nats_server.url) as bus,
    ):
        await bus.quotes("SBER")
        await bus.quotes("GAZP")
        with pytest.raises(SubscriptionLimitError, match="Nothing was sent"):
            await bus.quotes("LKOH")
        assert sim_subscriptions(sim) == 2
        with pytest.raises(InvalidArgumentError):
            await bus.quotes("SBER", frequency=-1)


async def test_order_retried_with_the_same_key_places_one_order(
    sim: Simulator, gateway: Gateway, nats_server: NatsServer, portfolio: str
) -> None:
    before = len(sim.engine.orders(portfolio))
    async with BusClient(nats_server.url) as a, BusClient(nats_server.url) as b:

        def place(bus: BusClient) -> Awaitable[Any]:
            return bus.trading.place_limit(portfolio, "SBER", "buy", 1, 275.0, guid="key-1")

        # Three concurrent attempts from two processes, then three sequential retries.
        acks = await asyncio.gather(place(a), place(b), place(a))
        acks += [await place(b) for _ in range(3)]
        assert len({ack.order_number for ack in acks}) == 1
        assert len(sim.engine.orders(portfolio)) == before + 1
        other = await a.trading.place_limit(portfolio, "SBER", "buy", 1, 275.0)
        assert other.order_number != acks[0].order_number
        assert len(sim.engine.orders(portfolio)) == before + 2
        cancelled = await a.trading.cancel(other.order_number, portfolio, guid="cancel-1")
        assert cancelled.order_number == other.order_number


async def test_account_events_through_jetstream_without_duplicates(
    sim: Simulator, gateway: Gateway, nats_server: NatsServer, portfolio: str
) -> None:
    """Orders and own trades reach every consumer once per change, equal to the simulator's
    truth; a consumer that joins later replays the same history from JetStream."""

    async def collect(bus: BusClient, fence: int) -> tuple[list[Order], list[OwnTrade]]:
        """Everything up to the fence order's fill and its trade: published last, they come
        after every copy of an earlier event, so a duplicate would be among what was read."""
        orders, trades = bus.orders(portfolio), bus.own_trades(portfolio)
        await orders.subscribe()
        await trades.subscribe()
        return await read(orders, trades, fence)

    async def read(orders: Any, trades: Any, fence: int) -> tuple[list[Order], list[OwnTrade]]:
        got_o: list[Order] = []
        got_t: list[OwnTrade] = []
        async with asyncio.timeout(10.0):
            while not got_o or not (got_o[-1].id == fence and got_o[-1].status == "filled"):
                got_o.append(await orders.get())
            while not got_t or got_t[-1].order_no != fence:
                got_t.append(await trades.get())
        return got_o, got_t

    async with BusClient(nats_server.url) as first_bus:
        orders, trades = first_bus.orders(portfolio), first_bus.own_trades(portfolio)
        await orders.subscribe()  # subscribed before the orders: every event reaches it live
        await trades.subscribe()
        acks = [
            await first_bus.trading.place_market(portfolio, "SBER", "buy", 1, guid=f"m{i}")
            for i in range(4)
        ]
        placed = {ack.order_number for ack in acks}
        fence = acks[-1].order_number
        got_o, got_t = await read(orders, trades, fence)
        truth_orders = {o.id: o for o in sim.engine.orders(portfolio)}
        truth_trades = {t.id for t in sim.engine.trades(portfolio)}
        assert placed <= {o.id for o in got_o}
        states = [(o.id, o.status, o.filled_qty_batch, o.update_time) for o in got_o]
        assert len(states) == len(set(states)), "an order state was delivered twice"
        assert {o.id for o in got_o} <= set(truth_orders)
        for oid in placed:
            assert [o for o in got_o if o.id == oid][-1].status == truth_orders[oid].status
        ids = [t.id for t in got_t]
        assert len(ids) == len(set(ids)), "an own trade was delivered twice"
        assert set(ids) == truth_trades

        # A consumer arriving later replays the same events from the JetStream stream.
        async with BusClient(nats_server.url) as late:
            late_o, late_t = await collect(late, fence)
        assert [(o.id, o.status) for o in late_o] == [(o.id, o.status) for o in got_o]
        assert [t.id for t in late_t] == ids
        assert sim_subscriptions(sim) == 2  # one orders + one own trades upstream, shared


async def test_restarted_gateway_republishes_nothing_twice(
    sim: Simulator, client: AlorClient, nats_server: NatsServer, portfolio: str
) -> None:
    """A new gateway replays the account history from ALOR; the content-derived message ids
    make JetStream drop every copy, and a live consumer is re-subscribed by its renewals."""
    async with BusClient(nats_server.url) as bus:
        async with Gateway(client, nats_server.url, lease_seconds=LEASE):
            orders = await bus.orders(portfolio)
            ack = await bus.trading.place_market(portfolio, "SBER", "buy", 1)
            async with asyncio.timeout(5.0):
                while (await orders.get()).status != "filled":
                    pass
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            stored = (await js.stream_info("ALORWS_ACCOUNT")).state.last_seq
            async with Gateway(client, nats_server.url, lease_seconds=LEASE) as second:
                await eventually(lambda: second.stats()["subscriptions"] == 1, within=LEASE * 3)
                ack2 = await bus.trading.place_market(portfolio, "SBER", "buy", 1)
                async with asyncio.timeout(5.0):
                    seen = await orders.get()
                    while not (seen.id == ack2.order_number and seen.status == "filled"):
                        assert seen.id != ack.order_number, "an old order came again"
                        seen = await orders.get()
                assert [e.kind for e in orders.events] == ["disconnected", "restored"]
                # The replay came before the new order's events, which are published now:
                # every order state stored since is about the new order.
                last = (await js.stream_info("ALORWS_ACCOUNT")).state.last_seq
                assert last > stored
                for seq in range(stored + 1, last + 1):
                    msg = await js.get_msg("ALORWS_ACCOUNT", seq)
                    if msg.subject != orders.subject:
                        continue  # another account stream (own trades of the new order)
                    fmt = (msg.headers or {})[wire.FORMAT_HEADER]
                    assert decoder_for(Order, fmt).decode(msg.data).id == ack2.order_number
        finally:
            await nc.close()


def _contiguous(part: list[Any], whole: list[Any]) -> bool:
    """``part`` occurs in ``whole`` as one run."""
    n = len(part)
    return any(whole[i : i + n] == part for i in range(len(whole) - n + 1))


async def _pass_through(
    sim: Simulator, client: AlorClient, nc: Any, direct: Any, stream: Any, many: int
) -> None:
    """Read ``direct`` (undecoded), ``stream`` (through the gateway) and the raw bus subject
    while ALOR's connection drops once; compare."""
    symbol, model, fmt = direct.request.code, direct.model, direct.request.format
    on_wire: list[tuple[str | None, bytes]] = []
    direct_payloads: list[bytes] = []
    models: list[Any] = []

    async def wire_cb(msg: Any) -> None:
        on_wire.append(((msg.headers or {}).get("Alorws-Event"), msg.data))

    async def read_direct() -> None:
        while True:
            direct_payloads.extend(x for x in await direct.get_payloads() if type(x) is bytes)

    async def read_bus() -> None:
        while True:
            models.extend(await stream.get_batch())

    async def poke() -> None:
        while True:
            sim.burst(symbol, 3)
            await asyncio.sleep(0.02)

    raw_sub = await nc.subscribe(stream.subject, cb=wire_cb)
    await stream.subscribe()  # opens the gateway's upstream: the raw subscriber sees it all
    tasks = [asyncio.ensure_future(c()) for c in (read_direct, read_bus, poke)]
    try:
        await eventually(lambda: len(models) >= many and len(on_wire) >= many, 10.0)
        await client.drop_connections()
        await eventually(lambda: [e.kind for e in stream.events] == ["disconnected", "restored"])
        n_models = len(models)
        await eventually(lambda: len(models) >= n_models + 2, 10.0)
        tasks[-1].cancel()
        await asyncio.sleep(0.3)  # let every side take what was sent
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await raw_sub.unsubscribe()
    # The events are on the subject in place, between the payloads.
    assert [k for k, _ in on_wire if k is not None] == ["disconnected", "restored"]
    payloads = [data for k, data in on_wire if k is None]
    # Byte for byte what ALOR sent on the shared subscription.
    assert _contiguous(payloads, direct_payloads), (len(payloads), len(direct_payloads))
    # The consumer's models = what the direct stream decodes (a subscribe-reply snapshot may
    # repeat the first one).
    dec = decoder_for(model, fmt)
    expected = [dec.decode(p) for p in payloads]
    got = models[1:] if models[:2] == [expected[0], expected[0]] else models
    assert got == expected
    assert all(isinstance(m, model) for m in got)


@pytest.mark.parametrize("fmt", ["Simple", "Slim", "Heavy"])
async def test_market_data_passes_through_as_alor_sent_it_with_events_in_place(
    sim: Simulator, client: AlorClient, nats_server: NatsServer, fmt: str
) -> None:
    """The gateway publishes each market payload byte for byte as ALOR sent it (no re-encode),
    consumers decode it into exactly the models a direct stream of the same ALOR subscription
    gets, and a lost connection reaches them as ``disconnected``/``restored`` in place."""
    many = 4 if fmt == "Heavy" else 10  # Heavy: at most 2 messages/s (frequency >= 500 ms)
    async with Gateway(client, nats_server.url, prefix="pt", market_policy="queue") as gw:
        nc = await nats.connect(nats_server.url)
        try:
            async with BusClient(nats_server.url, prefix="pt", format=fmt) as bus:
                for direct, stream in (
                    (
                        client.quotes("SBER", format=fmt, policy="queue"),
                        bus.quotes("SBER", policy="queue"),
                    ),
                    (
                        client.order_book("GAZP", format=fmt, policy="queue"),
                        bus.order_book("GAZP", policy="queue"),
                    ),
                ):
                    try:
                        await direct.subscribe()
                        await _pass_through(sim, client, nc, direct, stream, many)
                    finally:
                        await stream.aclose()
                        await direct.aclose()
        finally:
            await nc.close()
        assert gw.stats()["published_market"] >= 2 * many
