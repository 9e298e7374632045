"""Failover between gateways: one leader, a standby that takes over.

The acceptance test kills the leading gateway (a ``python -m alorws gateway`` subprocess) with
SIGKILL while orders are being filled and compares what every consumer saw with the simulator's
ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from alorws.bus import BusClient, BusStream, wire
from alorws.client import AlorClient
from alorws.gateway import Gateway, NatsServer
from alorws.protocol.account import Order, OwnTrade
from alorws.protocol.market import Quote
from alorws.sim.app import Simulator

from ._procs import GatewayProcess
from .conftest import FAST, LEASE


log = logging.getLogger(__name__)

TTL = 1.5  # seconds of the leader lease: a dead leader is replaced within about this
SUBPROCESS_LEASE = 2.0


async def eventually(check: Any, what: str, within: float = 20.0) -> None:
    """Poll ``check()`` until true (it reads counters; there is no event to await)."""
    try:
        async with asyncio.timeout(within):
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def factory_for(sim: Simulator, calls: list[str], name: str) -> Any:
    def make() -> AlorClient:
        calls.append(name)
        return AlorClient(
            sim.demo_refresh_token,
            base_url=sim.url,
            backoff=FAST,
            ping_interval=1.0,
            ping_timeout=1.0,
        )

    return make


class Reader:
    """Reads a stream in the background; keeps items and fails loudly on any error."""

    def __init__(self, stream: BusStream[Any]) -> None:
        self.stream = stream
        self.items: list[Any] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for item in self.stream:
            self.items.append(item)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.stream.events]

    async def stop(self) -> None:
        if self.task.done():
            self.task.result()  # an error in the reader fails the test
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_one_leader_standby_holds_no_session_and_takes_over_a_handover(
    sim: Simulator, nats_server: NatsServer
) -> None:
    """Two gateways: only the leader builds its ALOR client; when it stops, the standby takes
    over, restores the consumer's subscription, and the consumer sees a gap marker."""
    calls: list[str] = []
    a = Gateway(
        factory_for(sim, calls, "a"), nats_server.url, lease_seconds=LEASE, leader_ttl=TTL, node="a"
    )
    b = Gateway(
        factory_for(sim, calls, "b"), nats_server.url, lease_seconds=LEASE, leader_ttl=TTL, node="b"
    )
    await a.start()
    try:
        await b.start()
        assert (a.role, b.role) == ("leader", "standby")
        assert calls == ["a"]
        assert b.active_client is None and b.stats()["leader_node"] == "a"
        assert b.stats()["budget"]["max_connections"] == 0
        async with BusClient(nats_server.url) as bus, bus.quotes("SBER") as stream:
            quotes = Reader(stream)
            sim.burst("SBER", 5)
            await eventually(lambda: bool(quotes.items), "a quote")
            await a.aclose()  # hands over: the entry is deleted, the standby takes it at once
            await eventually(lambda: b.is_leader, "the standby to lead", within=10.0)
            assert calls == ["a", "b"]
            stats = b.stats()
            assert stats["takeovers"] == 1 and stats["leaderships"] == 1
            await eventually(lambda: b.stats()["subscriptions"] == 1, "the restored subscription")
            await eventually(lambda: "restored" in quotes.kinds(), "restored")
            assert quotes.kinds() == ["disconnected", "restored"]
            seen = len(quotes.items)
            sim.burst("SBER", 5)
            await eventually(lambda: len(quotes.items) > seen, "quotes after the takeover")
            assert all(isinstance(q, Quote) for q in quotes.items)
            assert int(sim.stats()["subscriptions"]) == 1
            await quotes.stop()
    finally:
        await b.aclose()
        await a.aclose()
    assert sim.stats()["subscriptions"] == 0


async def test_failover_needs_a_client_factory(sim: Simulator, nats_server: NatsServer) -> None:
    """A started client cannot be a standby's (it would hold connections)."""
    async with AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as client:
        with pytest.raises(Exception, match="factory"):
            Gateway(client, nats_server.url, leader_ttl=TTL)


# -- acceptance: SIGKILL of the leader while orders are being filled ----------------------------


async def leader_node(js: JetStreamContext) -> str | None:
    try:
        kv = await js.key_value(wire.leader_bucket_name("alorws"))
        entry = await kv.get(wire.LEADER_KEY)
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    return msgspec.json.decode(entry.value or b"{}", type=wire.LeaderInfo).node


async def trade(client: AlorClient, portfolio: str, stop: asyncio.Event, placed: list[str]) -> None:
    """Market orders, alternating sides, every 50 ms until ``stop``."""
    for i in itertools.count():
        if stop.is_set():
            return
        side = "buy" if i % 2 == 0 else "sell"
        ack = await client.trading.place_market(portfolio, "SBER", side, 1 + i % 3 // 2)
        placed.append(ack.order_number)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await stop.wait()


def truth(sim: Simulator, portfolio: str, stream: str) -> list[dict[str, Any]]:
    return [
        r["data"]
        for r in sim.engine.ground_truth
        if r["portfolio"] == portfolio and r["stream"] == stream
    ]


async def stored_account_messages(js: JetStreamContext) -> list[tuple[str, dict[str, Any]]]:
    """Every message of the account stream: (subject, payload)."""
    info = await js.stream_info("ALORWS_ACCOUNT")
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("ALORWS_ACCOUNT", seq)
        out.append((msg.subject, msgspec.json.decode(msg.data or b"{}")))
    return out


@pytest.mark.timeout(120)
async def test_sigkill_of_the_leader_loses_and_repeats_nothing(
    sim: Simulator, nats_server: NatsServer, tmp_path: Path
) -> None:
    """The leader (a subprocess) is SIGKILLed while orders fill: the standby takes over, every
    consumer's orders and own trades equal the simulator's truth, nothing is stored twice in
    JetStream, and market data streams see a gap marker, not an error."""
    portfolio = sim.demo.portfolios[0]
    token_file = tmp_path / "token"
    token_file.write_text(sim.demo_refresh_token, encoding="utf-8")
    token_file.chmod(0o600)  # a token file must be its owner's alone
    log_path = tmp_path / "leader.log"
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "alorws", "gateway", "--nats", nats_server.url,
            "--url", sim.url, "--token-file", str(token_file), "--lease", str(SUBPROCESS_LEASE),
            "--leader-ttl", str(TTL), "--node", "leader-a",
            stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    calls: list[str] = []
    readers: list[Reader] = []
    buses: list[BusClient] = []
    stop = asyncio.Event()
    try:
        async with asyncio.timeout(60.0):
            while await leader_node(js) != "leader-a":
                assert proc.returncode is None, log_path.read_text()
                await asyncio.sleep(0.1)
        async with (
            Gateway(
                factory_for(sim, calls, "standby"),
                nats_server.url,
                lease_seconds=SUBPROCESS_LEASE,
                leader_ttl=TTL,
                node="standby-b",
            ) as standby,
            AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as trader,
        ):
            assert standby.role == "standby" and calls == []
            for _ in range(3):
                bus = BusClient(nats_server.url)
                await bus.start()
                buses.append(bus)
                for stream in (
                    bus.orders(portfolio),
                    bus.own_trades(portfolio),
                    bus.quotes("SBER"),
                ):
                    await stream.subscribe()
                    readers.append(Reader(stream))
            orders = readers[0::3]
            trades = readers[1::3]
            quotes = readers[2::3]
            placed: list[str] = []
            trading = asyncio.ensure_future(trade(trader, portfolio, stop, placed))
            await eventually(lambda: all(len(t.items) >= 10 for t in trades), "fills via leader")
            await eventually(lambda: all(q.items for q in quotes), "quotes via the leader")

            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            killed_at = len(placed)
            await eventually(lambda: standby.is_leader, "the standby to take over", within=20.0)
            assert calls == ["standby"]
            assert standby.stats()["takeovers"] == 1
            # Orders keep filling; an order through the bus reaches the new leader too.
            await eventually(lambda: len(placed) >= killed_at + 20, "orders after the kill")
            ack = await buses[0].trading.place_market(portfolio, "SBER", "buy", 1, guid="after")
            stop.set()
            await trading
            assert ack.order_number in {d["id"] for d in truth(sim, portfolio, "orders")}

            truth_trades = {d["id"] for d in truth(sim, portfolio, "trades")}
            true_orders = truth(sim, portfolio, "orders")
            final = {d["id"]: (d["status"], d["filled_qty_batch"]) for d in true_orders}

            def last_states(reader: Reader) -> dict[str, tuple[str, int | None]]:
                return {o.id: (o.status.value, o.filled_qty_batch) for o in reader.items}

            await eventually(
                lambda: all({t.id for t in r.items} == truth_trades for r in trades),
                "every consumer to have every own trade",
            )
            await eventually(
                lambda: all(last_states(r) == final for r in orders),
                "every consumer to have every order's final state",
            )
            await eventually(
                lambda: all("restored" in q.kinds() for q in quotes), "market data restored"
            )
            true_states = {(d["id"], d["status"], d["filled_qty_batch"]) for d in true_orders}
            for r in trades:
                ids = [t.id for t in r.items]
                assert len(ids) == len(set(ids)), "an own trade was delivered twice"
                assert all(isinstance(t, OwnTrade) for t in r.items)
            for r in orders:
                states = [(o.id, o.status.value, o.filled_qty_batch) for o in r.items]
                assert len(states) == len(set(states)), "an order state was delivered twice"
                assert set(states) <= true_states
                assert all(isinstance(o, Order) for o in r.items)
            for q in quotes:
                assert q.kinds() == ["disconnected", "restored"]
                seen = len(q.items)
                sim.burst("SBER", 5)
                await eventually(lambda q=q, seen=seen: len(q.items) > seen, "quotes after")
            # The new leader re-subscribed what the consumers hold, once each.
            assert standby.stats()["subscriptions"] == 3
            # JetStream holds each own trade once and each order state once.
            stored = await stored_account_messages(js)
            trade_ids = [p["id"] for s, p in stored if ".owntrades." in s]
            assert sorted(trade_ids) == sorted(truth_trades)
            order_states = [
                tuple(sorted((k, str(v)) for k, v in p.items() if k != "existing"))
                for s, p in stored
                if ".orders." in s
            ]
            assert len(order_states) == len(set(order_states)), "an order state stored twice"
            for r in readers:
                await r.stop()
    finally:
        stop.set()
        for bus in buses:
            await bus.aclose()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await nc.close()


# -- an order in flight at a SIGKILLed leader ---------------------------------------------------

#: The consumer's per-attempt order timeout: far above the bound below, so that only the re-send
#: on the new leader's announcement can meet it (a retry after the timeout cannot).
ORDER_TIMEOUT = 30.0
#: Seconds from the new leader's announcement to the order's answer.
RESEND_BOUND = 6.0
#: How long the simulator holds the killed leader's reply: until it is dead.
HELD_REPLY = 5.0


async def within(aw: Any, seconds: float, what: str) -> Any:
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def executed(orders: Any, comment: str) -> Order:
    """The first order event with ``comment`` on a direct client's orders stream."""
    async for order in orders:
        if order.comment == comment:
            return order  # type: ignore[no-any-return]
    raise AssertionError("the orders stream ended")


@pytest.mark.timeout(120)
async def test_an_order_in_flight_at_a_killed_leader_is_sent_again_on_the_announcement(
    sim: Simulator, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Two gateways are subprocesses; a bus order reaches the leader, ALOR executes it and its
    reply is held; the leader gets SIGKILL. When the standby announces itself as the new
    leader, the consumer sends the pending order again with its key at once: it is answered
    well within the order timeout, with the order ALOR executed, which it executed once."""
    portfolio = sim.demo.portfolios[0]
    token_file = tmp_path / "token"
    token_file.write_text(sim.demo_refresh_token, encoding="utf-8")
    token_file.chmod(0o600)  # a token file must be its owner's alone
    nc = await nats.connect(nats_server.url)
    announced: asyncio.Queue[str] = asyncio.Queue()

    async def on_leader(msg: Any) -> None:
        await announced.put(msgspec.json.decode(msg.data, type=wire.LeaderInfo).node)

    await nc.subscribe(wire.leader_subject("alorws"), cb=on_leader)
    await nc.flush()
    options = ("--lease", str(SUBPROCESS_LEASE), "--leader-ttl", str(TTL), "--node")
    leader = await GatewayProcess.start(nats_server.url, sim.url, token_file, *options, "gw-a")
    standby: GatewayProcess | None = None
    try:
        assert await leader.started(60.0) == "leader"
        assert await within(announced.get(), 10.0, "the leader's announcement") == "gw-a"
        standby = await GatewayProcess.start(nats_server.url, sim.url, token_file, *options, "gw-b")
        assert await standby.started(60.0) == "standby"
        async with (
            AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as watcher,
            watcher.orders(portfolio, skip_history=True) as orders,
            BusClient(nats_server.url, order_timeout=ORDER_TIMEOUT) as bus,
        ):
            # The leader's /cws connection is open and authorized before replies are held.
            await bus.trading.place_market(portfolio, "SBER", "buy", 1, comment="warm-up")
            sim.faults.delay(HELD_REPLY)
            in_flight = asyncio.ensure_future(
                bus.trading.place_market(portfolio, "SBER", "buy", 1, comment="in-flight")
            )
            order = await within(executed(orders, "in-flight"), 20.0, "ALOR to execute it")
            await leader.kill()
            sim.faults.delay(0.0)
            assert not in_flight.done(), "the killed leader answered the order"
            new = await within(announced.get(), 30.0, "the standby's announcement")
            assert new == "gw-b"
            announced_at = time.monotonic()
            ack = await within(in_flight, RESEND_BOUND, "the order's answer after the announcement")
            log.info("announcement -> answer: %.2f s", time.monotonic() - announced_at)
            assert ack.order_number == order.id
            # Executed once: one order with that comment (each of its states is a record).
            records = truth(sim, portfolio, "orders")
            assert {d["id"] for d in records if d["comment"] == "in-flight"} == {order.id}
            assert (bus.trading.resent_on_announce, bus.trading.resent) == (1, 0)
    finally:
        await leader.aclose()
        if standby is not None:
            await standby.aclose()
        await nc.close()
