"""The client against the production behaviours of docs/protocol.md §9.6, reproduced by the
simulator's faults (docs/protocol.md §12.16): an idle /cws connection that goes stale, the daily
restart window (with flapping), a subscription that goes silent while its connection lives."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from alorws.client import AlorClient, Stream
from alorws.client.auth import TokenManager
from alorws.client.orders import OrderAck, OrderClient
from alorws.errors import ConfigurationError, InvalidArgumentError, OrderStatusUnknown
from alorws.protocol.registry import SubscriptionState
from alorws.sim.app import Simulator

from .._sim import DAY
from ._collect import Collector, until
from .conftest import FAST


SBER = "SBER"
FAR_SELL = 355.0  # SBER trades near 312 with a 15% band: a sell here rests
_run = itertools.count(1)


def truth(sim: Simulator, portfolio: str, stream: str) -> list[dict[str, Any]]:
    """The ground truth of one account stream, in order."""
    return [
        r["data"]
        for r in sim.engine.ground_truth
        if r["portfolio"] == portfolio and r["stream"] == stream
    ]


def order_ids(sim: Simulator, comment: str) -> set[str]:
    """Ids of every order with this comment in the ground truth (one per execution)."""
    return {
        r["data"]["id"]
        for r in sim.engine.ground_truth
        if r["stream"] == "orders" and r["data"].get("comment") == comment
    }


# -- an idle /cws connection ----------------------------------------------------------------------


@pytest.fixture
async def quiet_sim() -> AsyncIterator[Simulator]:
    """A simulator with a quiet market (the limit orders rest)."""
    async with Simulator(port=0, day_order_lifetime=DAY, seed=11, rate=5.0, history_days=1) as s:
        yield s


class CwsWatch:
    """What the simulator saw on /cws: when a connection went stale (and which token serial
    was the newest then) and the token serial of every authorize."""

    def __init__(self, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sim = sim
        self.stale = asyncio.Event()
        self.cutoff = 0
        self.authorized: list[int] = []
        server = sim.server
        go_stale, command = server._go_stale, server._cws_command

        def watch_stale(conn: Any) -> None:
            go_stale(conn)
            if conn.stale:
                self.cutoff = sim.tokens.issued
                self.stale.set()

        def watch_command(conn: Any, frame: bytes | str) -> bytes | None:
            msg = msgspec.json.decode(frame)
            if isinstance(msg, dict) and str(msg.get("opcode")).lower() == "authorize":
                claims = sim.tokens.verify(msg.get("token"))
                if claims is not None:
                    self.authorized.append(claims.serial)
            return command(conn, frame)

        monkeypatch.setattr(server, "_go_stale", watch_stale)
        monkeypatch.setattr(server, "_cws_command", watch_command)

    async def wait_stale(self) -> None:
        async with asyncio.timeout(10):
            await self.stale.wait()


async def test_idle_cws_reauthorizes_with_a_fresh_token_before_the_command(
    quiet_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order placed after the connection went stale: the client sees the idle time, takes a
    token issued now, authorizes with it on the same connection and sends the order, which
    executes once; no reset, no reconnect."""
    sim = quiet_sim
    watch = CwsWatch(sim, monkeypatch)
    async with AlorClient(
        sim.demo_refresh_token, base_url=sim.url, backoff=FAST, reauth_after_idle=0.1
    ) as client:
        portfolio = client.portfolios[0]
        trading = client.trading
        await trading.place_limit(portfolio, SBER, "sell", 1, FAR_SELL, comment="warm")
        sim.faults.idle_cws(0.3)
        await watch.wait_stale()
        ack = await trading.place_limit(portfolio, SBER, "sell", 1, FAR_SELL, comment="idle-1")
        assert isinstance(ack, OrderAck) and ack.http_code == 200
        assert order_ids(sim, "idle-1") == {ack.order_number}  # exactly once
        stats = trading.stats()
        assert stats["idle_reauthorizations"] == 1 and stats["fresh_authorizations"] == 1
        assert stats["reconnects"] == 0 and stats["reauthorizations"] == 1
        assert sim.faults.stats()["idle_cws"]["resets"] == 0
        assert watch.authorized[-1] > watch.cutoff  # issued after the connection went stale
        sim.faults.idle_cws(None)


async def test_idle_cws_reset_anyway_executes_exactly_once(
    quiet_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the client's idle threshold above the server's, the command resets the stale
    connection (not executed); the client reconnects, authorizes with a token issued now (the
    old one would reset again, docs/protocol.md §9.6) and re-sends the same guid: executed once,
    acked."""
    sim = quiet_sim
    watch = CwsWatch(sim, monkeypatch)
    async with (
        TokenManager(sim.demo_refresh_token, sim.url) as tokens,
        OrderClient(
            sim.cws_url, tokens, backoff=FAST, reply_timeout=5.0, reauth_after_idle=60.0
        ) as orders,
    ):
        portfolio = tokens.portfolios[0]
        await orders.place_limit(portfolio, SBER, "sell", 1, FAR_SELL, comment="warm")
        sim.faults.idle_cws(0.2)
        await watch.wait_stale()
        refreshes = tokens.stats["refreshes"]
        result: OrderAck | OrderStatusUnknown
        try:
            result = await orders.place_limit(
                portfolio, SBER, "sell", 1, FAR_SELL, comment="reset-1", guid="reset-guid-1"
            )
        except OrderStatusUnknown as exc:  # allowed by the contract, never a duplicate
            result = exc
        assert sim.faults.stats()["idle_cws"]["resets"] == 1  # the first send was cut
        ids = order_ids(sim, "reset-1")
        assert len(ids) == 1  # exactly once
        assert isinstance(result, OrderAck), result  # here the re-send always gets its reply
        assert ids == {result.order_number}
        stats = orders.stats()
        assert stats["reconnects"] == 1 and stats["resends"] == 1
        assert stats["fresh_authorizations"] == 1 and stats["idle_reauthorizations"] == 0
        assert tokens.stats["refreshes"] == refreshes + 1
        assert watch.authorized[-1] > watch.cutoff
        sim.faults.idle_cws(None)


def test_reauth_after_idle_is_checked() -> None:
    """A bad threshold is refused where it is given."""
    with pytest.raises(ConfigurationError, match="reauth_after_idle"):
        AlorClient("x", base_url="http://127.0.0.1:1", reauth_after_idle=0)
    with pytest.raises(ConfigurationError, match="reauth_after_idle"):
        OrderClient("ws://127.0.0.1:1/cws", None, reauth_after_idle=float("inf"))  # type: ignore[arg-type]


# -- the daily restart window ---------------------------------------------------------------------

MARKET = ("SBER", "GAZP", "LKOH", "YDEX", "MGNT", "ROSN")


@pytest.mark.parametrize("accept", [0.0, 0.3], ids=["refusing", "flapping"])
async def test_restart_window_restores_everything_unattended(sim: Simulator, accept: float) -> None:
    """Many subscriptions over several lanes, orders placed during a restart window: after it
    every subscription is back with its guid, each stream got a disconnected/restored pair per
    connection lost (one per outage when refusing; one per flap when attempts get through and
    are dropped), every order executed once, and the account streams match the ground truth."""
    async with AlorClient(
        sim.demo_refresh_token,
        base_url=sim.url,
        backoff=FAST,
        ping_interval=1.0,
        ping_timeout=1.0,
        max_subscriptions_per_connection=4,
    ) as client:
        portfolio = client.portfolios[0]
        market: list[Stream[Any]] = []
        for code in MARKET:
            market += [client.quotes(code), client.order_book(code, depth=5)]
        account: list[Stream[Any]] = [
            client.orders(portfolio),
            client.own_trades(portfolio),
            client.positions(portfolio),
        ]
        await client.subscribe_all(market + account)
        lanes = {s._lane for s in market + account}
        assert len(lanes) >= 4  # 12 market subscriptions at 4 a lane, and the account lane
        guids = {s.guid for s in market + account}
        collectors = {s: Collector(s) for s in market + account}
        orders, trades, positions = (collectors[s] for s in account)
        await client.trading.place_market(portfolio, SBER, "buy", 1)  # /cws up and authorized
        await until(lambda: any(p.symbol == SBER for p in positions.items))

        tag = f"w{next(_run)}-"
        sim.faults.restart_window(1.5, accept=accept, linger=0.3)
        placed = [
            asyncio.ensure_future(
                client.trading.place_market(
                    portfolio, SBER, "buy" if i % 2 else "sell", 1, comment=f"{tag}{i}"
                )
            )
            for i in range(6)
        ]
        acks = await asyncio.gather(*placed)  # they go out once the window lets them

        def restored() -> bool:
            return not sim.faults.stats()["restart_window"]["active"] and all(
                sub.state is SubscriptionState.ACTIVE for sub in client._registry.subscriptions()
            )

        await until(restored, limit=20)
        assert {s.guid for s in market + account} == guids
        for stream in market:
            await collectors[stream].next_item()  # data flows on every lane again

        # Every order once, each caller with its ack.
        for i, ack in enumerate(acks):
            assert order_ids(sim, f"{tag}{i}") == {ack.order_number}

        # Events: strictly disconnected, restored, ...; one pair per connection lost.
        window = sim.faults.stats()["restart_window"]
        per_lane = {lane["id"]: lane["reconnects"] for lane in client.stats()["lanes"]}
        for stream, collector in collectors.items():
            kinds = collector.kinds()
            assert kinds == ["disconnected", "restored"] * (len(kinds) // 2), kinds
            assert len(kinds) // 2 == per_lane[stream._lane] >= 1
            if accept == 0:
                assert len(kinds) == 2  # one outage, one pair
        if accept == 0:
            assert window["admitted"] == 0
        else:
            assert window["admitted"] > 0 and window["dropped"] > 0
        assert window["refused"] > 0

        # Account streams against the ground truth: nothing lost, nothing repeated.
        true_trades = truth(sim, portfolio, "trades")
        await until(lambda: len(trades.items) >= len(true_trades))
        seen = [t.id for t in trades.items]
        assert len(seen) == len(set(seen)) and set(seen) == {d["id"] for d in true_trades}
        final = {
            d["id"]: (d["status"], d["filled_qty_batch"]) for d in truth(sim, portfolio, "orders")
        }
        await until(
            lambda: {o.id: (o.status.value, o.filled_qty_batch) for o in orders.items} == final
        )
        states = [(o.id, o.status.value, o.filled_qty_batch) for o in orders.items]
        assert len(states) == len(set(states))
        true_positions = {d["symbol"]: d["qty_units"] for d in truth(sim, portfolio, "positions")}
        await until(
            lambda: (
                {p.symbol: p.qty_units for p in positions.items if p.symbol in true_positions}
                == true_positions
            )
        )
        for collector in collectors.values():
            await collector.stop()


# -- a silent subscription ------------------------------------------------------------------------


async def _feed(sim: Simulator, stop: asyncio.Event, codes: tuple[str, ...]) -> None:
    """Market activity on ``codes`` every 20 ms (the market's own pace is slower)."""
    while not stop.is_set():
        for code in codes:
            sim.burst(code, 5)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.02):
                await stop.wait()


async def test_a_silent_subscription_is_subscribed_again(sim: Simulator) -> None:
    """One of several subscriptions on a lane goes silent: the client notices within its
    timeout, subscribes it again under the same guid (unsubscribe, then subscribe), data flows
    again; the other subscriptions and the connection are not touched."""
    timeout = 0.5
    codes = ("SBER", "GAZP")
    async with AlorClient(
        sim.demo_refresh_token,
        base_url=sim.url,
        backoff=FAST,
        silence_timeout={"all_trades": timeout},
    ) as client:
        streams = [client.all_trades(code) for code in codes]
        streams.append(client.quotes("SBER", silence_timeout=timeout))
        await client.subscribe_all(streams)
        assert len({s._lane for s in streams}) == 1
        collectors = [Collector(s) for s in streams]
        stop = asyncio.Event()
        feed = asyncio.create_task(_feed(sim, stop, codes))
        try:
            for c in collectors:
                await c.next_item()
            quiet, others = collectors[0], collectors[1:]
            guid = quiet.stream.guid
            connections = set(sim.server.hub.connections)
            assert sim.faults.silence(guid=guid) == 1
            silent = await quiet.event("silent")
            assert silent.downtime >= timeout
            resubscribed = await quiet.event("resubscribed")
            assert resubscribed.downtime >= silent.downtime
            await quiet.next_item()  # data flows again
            assert quiet.stream.guid == guid  # the same identity for the consumer
            for c in others:
                await c.next_item()
                assert c.events == []
            assert quiet.kinds() == ["silent", "resubscribed"]
            lane = client.stats()["lanes"][0]
            assert lane["reconnects"] == 0 and lane["resubscribes"] == 1
            assert lane["resubscribe_failures"] == 0 and lane["watched"] == 3
            assert set(sim.server.hub.connections) == connections  # no reconnect
            assert sim.faults.stats()["silenced"] == 0  # the new subscription streams
        finally:
            stop.set()
            await feed
            for c in collectors:
                await c.stop()


async def test_without_a_silence_timeout_nothing_is_done(sim: Simulator) -> None:
    """The default: a silent subscription is left alone (streams may be legitimately quiet)."""
    codes = ("SBER", "GAZP")
    async with AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as client:
        streams = [client.all_trades(code) for code in codes]
        await client.subscribe_all(streams)
        quiet, loud = Collector(streams[0]), Collector(streams[1])
        stop = asyncio.Event()
        feed = asyncio.create_task(_feed(sim, stop, codes))
        try:
            await quiet.next_item()
            assert sim.faults.silence(guid=streams[0].guid) == 1
            count = len(loud.items)
            # The other stream's data is the clock: well past any timeout the test could miss.
            await until(lambda: len(loud.items) >= count + 300, limit=20)
            assert quiet.events == [] and loud.events == []
            lane = client.stats()["lanes"][0]
            assert lane["watched"] == 0 and lane["resubscribes"] == 0
            assert sim.faults.stats()["silenced"] == 1
        finally:
            stop.set()
            await feed
            await quiet.stop()
            await loud.stop()


async def test_a_silent_account_stream_comes_back_whole(sim: Simulator) -> None:
    """Own trades silenced while orders fill: after the re-subscription the server's replay
    brings the missed trades, and the filter drops what was already delivered: every trade of
    the ground truth exactly once."""
    async with AlorClient(
        sim.demo_refresh_token,
        base_url=sim.url,
        backoff=FAST,
        silence_timeout={"own_trades": 0.4},
    ) as client:
        portfolio = client.portfolios[0]
        async with client.own_trades(portfolio) as stream:
            trades = Collector(stream)
            for _ in range(3):
                await client.trading.place_market(portfolio, SBER, "buy", 1)
            await until(lambda: len(trades.items) >= 3)
            assert sim.faults.silence(guid=stream.guid) == 1
            for _ in range(4):  # filled while the subscription is silent
                await client.trading.place_market(portfolio, SBER, "sell", 1)
            await trades.event("resubscribed")
            true_ids = {d["id"] for d in truth(sim, portfolio, "trades")}
            await until(lambda: {t.id for t in trades.items} >= true_ids)
            seen = [t.id for t in trades.items]
            assert len(seen) == len(set(seen)) and set(seen) == true_ids
            assert stream.stats()["duplicates"] >= 3  # the replay repeated what was seen
            await trades.stop()


def test_silence_timeouts_are_checked() -> None:
    """Unknown kinds and bad values are refused, naming what to fix."""
    with pytest.raises(ConfigurationError, match="unknown stream kind 'quote'"):
        AlorClient("x", base_url="http://127.0.0.1:1", silence_timeout={"quote": 5.0})
    with pytest.raises(ConfigurationError, match="silence_timeout"):
        AlorClient("x", base_url="http://127.0.0.1:1", silence_timeout={"quotes": -1})


async def test_a_bad_per_stream_silence_timeout_is_refused(sim: Simulator) -> None:
    """A stream method refuses a bad ``silence_timeout`` before anything is sent."""
    async with AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as client:
        with pytest.raises(InvalidArgumentError, match="silence_timeout"):
            client.quotes("SBER", silence_timeout=float("nan"))
        assert client.stats()["connections"] == 0
