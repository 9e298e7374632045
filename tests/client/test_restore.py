"""Reconnect and full restore against the simulator: drops, token expiry, a blocked consumer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from alorws.client import AlorClient
from alorws.errors import AuthError, ConnectionClosed, TransportError, TransportTimeout
from alorws.protocol import Order, OwnTrade, Position
from alorws.protocol.backoff import Backoff
from alorws.protocol.registry import SubscriptionState
from alorws.sim.app import Simulator

from .._sim import DAY
from ..sim.wsclient import RawWS
from ._collect import Collector, until
from .conftest import FAST


async def test_drop_restores_every_subscription_with_its_guid(
    client: AlorClient, sim: Simulator
) -> None:
    """After a drop every subscription is re-sent with its original guid and data resumes."""
    portfolio = client.portfolios[0]
    async with client.quotes("SBER") as q, client.positions(portfolio) as p:
        quotes, positions = Collector(q), Collector(p)
        await quotes.next_item()
        guids = (q.guid, p.guid)
        for _ in range(3):
            quotes.restored.clear()
            positions.restored.clear()
            assert sim.faults.drop(code=1006) == 2
            async with asyncio.timeout(10):
                await quotes.restored.wait()
                await positions.restored.wait()
            await quotes.next_item()
        assert (q.guid, p.guid) == guids
        for guid in guids:
            sub = client._registry.get(guid)
            assert sub is not None and sub.restore_count >= 3
        await until(
            lambda: all(
                (s := client._registry.get(g)) is not None and s.state is SubscriptionState.ACTIVE
                for g in guids
            ),
            "all active",
        )
        kinds = [e.kind for e in quotes.events]
        assert kinds.count("disconnected") == 3 and kinds.count("restored") == 3
        assert all(e.downtime >= 0 for e in quotes.events if e.kind == "restored")
        assert client.stats()["reconnects"] >= 6
        await quotes.stop()
        await positions.stop()


async def test_token_expiry_is_invisible(client: AlorClient, sim: Simulator) -> None:
    """Every token expires, then the connection drops: restore and new subscriptions still work."""
    async with client.quotes("GAZP") as q:
        quotes = Collector(q)
        await quotes.next_item()
        sim.faults.expire_tokens()
        async with client.order_book("GAZP") as book:  # new request with an expired token
            assert (await anext(aiter(book))).bids
        sim.faults.drop(code=1011)
        async with asyncio.timeout(10):
            await quotes.restored.wait()
        await quotes.next_item()
        assert not q._buffer.closed
        await quotes.stop()


async def test_close_codes_and_server_restart(client: AlorClient, sim: Simulator) -> None:
    """Each close code, and a restart that refuses connections for a while, is recovered from."""
    async with client.quotes("LKOH") as q:
        quotes = Collector(q)
        await quotes.next_item()
        for code in (1000, 1006, 1011, 1012):
            quotes.restored.clear()
            sim.faults.drop(code=code)
            async with asyncio.timeout(10):
                await quotes.restored.wait()
        quotes.restored.clear()
        sim.faults.restart(seconds=0.5)
        async with asyncio.timeout(15):
            await quotes.restored.wait()
        await quotes.next_item()
        await quotes.stop()


# -- a consumer that blocks its event loop ---------------------------------------------------


@contextlib.contextmanager
def _sim_in_thread(**kwargs: Any) -> Iterator[tuple[Simulator, asyncio.AbstractEventLoop]]:
    """Run a simulator in its own thread and loop, so the test's loop can block."""
    ready = threading.Event()
    box: dict[str, Any] = {}
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with Simulator(port=0, day_order_lifetime=DAY, **kwargs) as sim:
            box["sim"] = sim
            box["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "simulator did not start"
    try:
        yield box["sim"], box["loop"]
    finally:
        loop = box["loop"]
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


async def _feed(sim: Simulator, symbol: str, per_second: int, seconds: float) -> int:
    """Push `per_second` trades for `seconds` (in the simulator's loop)."""
    sent = 0
    start = time.monotonic()
    tick = 0.01
    for i in itertools.count(1):
        target = int(per_second * min(i * tick, seconds))
        sent += sim.burst(symbol, target - sent) if target > sent else 0
        if i * tick >= seconds:
            break
        await asyncio.sleep(max(0.0, start + i * tick - time.monotonic()))
    return sent


async def test_blocked_consumer_is_not_disconnected() -> None:
    """A consumer blocking its loop for 3 s at 10,000 msgs/s keeps its connection (5000 rule on)."""
    with _sim_in_thread(seed=3, rate=5.0, max_unread=5000, send_buffer=64 * 1024) as (sim, loop):
        async with AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as client:
            async with client.all_trades("SBER") as trades:
                feed = asyncio.run_coroutine_threadsafe(_feed(sim, "SBER", 10_000, 4.0), loop)
                await anext(aiter(trades))
                time.sleep(3.0)  # noqa: ASYNC251 - the point: the consumer hogs its loop
                sent = await asyncio.wrap_future(feed)
                received = 1
                async with asyncio.timeout(30):
                    while received < sent:
                        received += len(await trades.get_batch(10_000))
                stats = client.stats()
                assert stats["reconnects"] == 0
                assert [lane["last_error"] for lane in stats["lanes"]] == [None]
                assert trades.events == []
                assert received >= sent >= 30_000


# -- random kills while orders fill: nothing lost, nothing repeated ----------------------------

KILL_SECONDS = float(os.environ.get("ALORWS_KILL_SECONDS", "15"))


async def _trade_continuously(sim: Simulator, stop: asyncio.Event) -> int:
    """Place alternating market orders over a raw /cws connection until `stop`."""
    placed = 0
    ws = await RawWS.connect(sim.cws_url)
    try:
        await ws.request({"opcode": "authorize", "guid": "kill-auth", "token": sim.access_token()})
        portfolio = sim.engine_accounts()[0].portfolios[0]
        for i in itertools.count():
            if stop.is_set():
                break
            reply = await ws.request(
                {
                    "opcode": "create:market",
                    "guid": f"kill-{i}",
                    "side": "buy" if i % 3 else "sell",
                    "quantity": 1 + i % 2,
                    "instrument": {"symbol": "SBER", "exchange": "MOEX"},
                    "user": {"portfolio": portfolio},
                }
            )
            assert reply["httpCode"] == 200, reply
            placed += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await stop.wait()
    finally:
        await ws.close()
    return placed


def _truth(sim: Simulator, portfolio: str, stream: str) -> list[dict[str, Any]]:
    return [
        r["data"]
        for r in sim.engine.ground_truth
        if r["portfolio"] == portfolio and r["stream"] == stream
    ]


@pytest.mark.timeout(KILL_SECONDS + 60)
async def test_random_kills_lose_and_repeat_nothing(client: AlorClient, sim: Simulator) -> None:
    """50 random kills over the run while orders fill: trades, orders and positions match truth."""
    portfolio = client.portfolios[0]
    async with (
        client.orders(portfolio) as o,
        client.own_trades(portfolio) as t,
        client.positions(portfolio) as p,
        client.quotes("SBER") as q,
    ):
        orders, trades, positions, quotes = Collector(o), Collector(t), Collector(p), Collector(q)
        await positions.next_item()
        stop = asyncio.Event()
        trader = asyncio.create_task(_trade_continuously(sim, stop))
        kills = 50
        for _ in range(kills):
            await asyncio.sleep(KILL_SECONDS / kills)
            sim.faults.drop(code=1006, kind="ws")
        stop.set()
        placed = await trader
        assert placed > 0

        truth_trades = _truth(sim, portfolio, "trades")
        await until(lambda: len(trades.items) >= len(truth_trades), "all own trades")
        truth_orders = _truth(sim, portfolio, "orders")
        final_orders = {d["id"]: d for d in truth_orders}
        await until(
            lambda: (
                {o.id: o.status.value for o in orders.items}
                == {k: v["status"] for k, v in final_orders.items()}
            ),
            "all orders final",
        )
        # Own trades: every one, once.
        seen_trade_ids = [x.id for x in trades.items]
        assert len(seen_trade_ids) == len(set(seen_trade_ids))
        assert set(seen_trade_ids) == {d["id"] for d in truth_trades}
        assert all(isinstance(x, OwnTrade) for x in trades.items)
        # Orders: no state delivered twice; every state seen is a true state; finals match.
        seen_states = [(x.id, x.status.value, x.filled_qty_batch) for x in orders.items]
        assert len(seen_states) == len(set(seen_states))
        true_states = {(d["id"], d["status"], d["filled_qty_batch"]) for d in truth_orders}
        assert set(seen_states) <= true_states
        last: dict[str, Order] = {x.id: x for x in orders.items}
        assert {k: (v.status.value, v.filled_qty_batch) for k, v in last.items()} == {
            k: (d["status"], d["filled_qty_batch"]) for k, d in final_orders.items()
        }
        # Positions: the last state per symbol equals the truth's.
        truth_pos = {d["symbol"]: d["qty_units"] for d in _truth(sim, portfolio, "positions")}

        def last_positions() -> dict[str, float | None]:
            final: dict[str, Position] = {x.symbol: x for x in positions.items}
            return {k: v.qty_units for k, v in final.items() if k in truth_pos}

        await until(lambda: last_positions() == truth_pos, "positions final")
        restores = sum(1 for e in quotes.events if e.kind == "restored")
        assert restores >= kills * 0.8  # kills landing mid-restore merge into one
        for c in (orders, trades, positions, quotes):
            await c.stop()


async def test_a_stalled_connection_is_detected_and_restored(sim: Simulator) -> None:
    """A connection that goes silent (no pong in time) is treated as dead and restored."""
    async with AlorClient(
        sim.demo_refresh_token, base_url=sim.url, backoff=FAST, ping_interval=0.3, ping_timeout=0.3
    ) as client:
        portfolio = client.portfolios[0]
        async with client.risks(portfolio) as r:
            risks = Collector(r)
            await risks.next_item()
            lane = client._lanes[r._lane]  # type: ignore[index]
            await until(lambda: lane._app_ping_works is True, "an answered app ping")
            sim.faults.stall(seconds=5.0)
            async with asyncio.timeout(10):
                await risks.restored.wait()
            reasons = [e.reason for e in risks.events if e.kind == "disconnected"]
            assert reasons and "ping" in reasons[0]
            await risks.stop()


async def test_http_snapshot_fills_what_a_capped_replay_leaves_out(
    client: AlorClient, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orders placed while disconnected, beyond the replay cap, still reach the consumer once,
    even when the snapshot's first two fetches fail (it is fetched again)."""
    http = client.http
    fetch, failures = http.orders, [0]

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures[0] < 2:
            failures[0] += 1
            raise TransportError("injected: the snapshot's fetch failed")
        return await fetch(*args, **kwargs)

    monkeypatch.setattr(http, "orders", flaky)
    sim.engine.history_cap = 5
    portfolio = client.portfolios[0]
    ws = await RawWS.connect(sim.cws_url)
    try:
        await ws.request({"opcode": "authorize", "guid": "cap-auth", "token": sim.access_token()})
        async with (
            client.orders(portfolio, skip_history=True) as o,
            client.own_trades(portfolio) as t,
        ):
            orders, trades = Collector(o), Collector(t)
            sim.faults.drop(code=1006, kind="ws")
            sim.faults.refuse(1.0)  # keep the client out while orders fill
            ids = []
            for i in range(12):
                reply = await ws.request(
                    {
                        "opcode": "create:market",
                        "guid": f"cap-{i}",
                        "side": "buy",
                        "quantity": 1,
                        "instrument": {"symbol": "SBER", "exchange": "MOEX"},
                        "user": {"portfolio": portfolio},
                    }
                )
                ids.append(reply["orderNumber"])
            await until(lambda: {x.id for x in orders.items} >= set(ids), "every order", limit=15)
            await until(
                lambda: len({x.order_no for x in trades.items}) >= 12, "every fill", limit=15
            )
            assert o.stats()["backfilled"] >= 7
            assert failures[0] == 2
            seen = [(x.id, x.status.value) for x in orders.items]
            assert len(seen) == len(set(seen))
            trade_ids = [x.id for x in trades.items]
            assert len(trade_ids) == len(set(trade_ids))
            await orders.stop()
            await trades.stop()
    finally:
        await ws.close()


async def test_a_burst_of_401s_refreshes_the_token_once(client: AlorClient, sim: Simulator) -> None:
    """After every token expired, restoring 60 subscriptions costs one or two refreshes."""
    streams = [await client.quotes("SBER", frequency=10_000 + i) for i in range(60)]
    assert client._tokens is not None
    before = client._tokens.stats["refreshes"]
    sim.faults.expire_tokens()
    sim.faults.drop(code=1006, kind="ws")
    await until(
        lambda: (
            sum(s.restore_count for s in client._registry.subscriptions()) >= 60
            and all(s.state is SubscriptionState.ACTIVE for s in client._registry.subscriptions())
        ),
        "all restored",
    )
    assert 1 <= client._tokens.stats["refreshes"] - before <= 2
    for s in streams:
        await s.aclose()


async def test_a_refresh_token_refused_during_a_restore_ends_the_streams_with_the_error(
    client: AlorClient, sim: Simulator
) -> None:
    """The refresh token is revoked and every access token expires; the next restore cannot get
    a token: the lane's streams end with an AuthError instead of hanging, and the lane stops."""
    quotes = await client.quotes("SBER")
    book = await client.order_book("GAZP")
    await asyncio.wait_for(quotes.get(), 10)
    assert sim.engine.revoke_refresh_token(sim.demo_refresh_token)
    sim.faults.expire_tokens()
    sim.faults.drop(1006)
    for stream in (quotes, book):
        with pytest.raises(AuthError):
            async with asyncio.timeout(15):
                while True:
                    await stream.get()
        assert not stream.is_open


async def test_a_refused_refresh_token_at_a_restore_ends_the_streams(
    client: AlorClient, sim: Simulator
) -> None:
    """The token source refuses (the refresh token was revoked) just when a restore needs a
    token: the lane's streams end with that AuthError instead of hanging (the lane task used to
    die silently) or retrying forever, and nothing more is sent."""
    quotes = await client.quotes("SBER")
    book = await client.order_book("GAZP")
    await asyncio.wait_for(quotes.get(), 10)
    tokens = client._tokens
    assert tokens is not None
    refused = AuthError("the refresh token was refused (HTTP 403)")

    async def token() -> str:
        raise refused

    tokens.token = token  # type: ignore[method-assign]
    tokens.refresh = lambda force=False: token()  # type: ignore[method-assign]
    sim.faults.drop(1006)
    for stream in (quotes, book):
        with pytest.raises(AuthError, match="refresh token was refused"):
            async with asyncio.timeout(15):
                while True:
                    await stream.get()
        assert not stream.is_open


async def test_a_subscribe_without_a_token_times_out_and_leaves_nothing(sim: Simulator) -> None:
    """No token can be had when a new subscription is to be sent on an open lane: the subscribe
    waits like an unanswered one, then times out and is released (no sink, no waiter, no live
    registry entry, nothing sent); once tokens come back the same request subscribes anew."""
    async with AlorClient(
        sim.demo_refresh_token,
        base_url=sim.url,
        backoff=FAST,
        subscribe_timeout=0.5,
        io_thread=False,
    ) as c:
        first = await c.quotes("SBER")
        tokens = c._tokens
        assert tokens is not None
        real = tokens.token

        async def unreachable() -> str:
            raise TransportError("the auth server is unreachable")

        tokens.token = unreachable  # type: ignore[method-assign]
        stream = c.quotes("GAZP")
        with pytest.raises(TransportTimeout):
            async with asyncio.timeout(15):
                await stream.subscribe()
        lane = c._pool.lanes[first._lane]
        assert not stream.is_open
        assert c._registry.find(stream.request) is None
        assert set(lane._sinks.by_guid) == {first.guid} and not lane._waiters
        assert sim.stats()["subscriptions"] == 1
        tokens.token = real  # type: ignore[method-assign]
        again = await asyncio.wait_for(c.quotes("GAZP"), 10)
        assert again.is_open and again._lane == first._lane
        await asyncio.wait_for(again.get(), 10)


async def test_a_lane_that_gave_up_is_retired_and_new_subscriptions_get_data(
    sim: Simulator,
) -> None:
    """The server refuses every reconnect until the lane's backoff runs out: its stream ends
    with the loss; the lane is retired with its subscriptions, so the same request subscribed
    again (it used to share the dead lane's entry and return at once, with no data ever) and a
    new one (it used to be placed on the dead lane and time out) get a new connection and data."""
    async with AlorClient(
        sim.demo_refresh_token,
        base_url=sim.url,
        backoff=Backoff(base=0.01, cap=0.05, max_attempts=2),
        io_thread=False,
    ) as c:
        quotes = await c.quotes("SBER")
        await asyncio.wait_for(quotes.get(), 10)
        sim.faults.refuse(60)
        sim.faults.drop(1006)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(15):
                while True:
                    await quotes.get()
        assert not quotes.is_open and quotes._lane not in c._pool.lanes
        assert c._registry.find(quotes.request) is None
        sim.faults.refuse(0)
        again = await asyncio.wait_for(c.quotes("SBER"), 10)
        other = await asyncio.wait_for(c.quotes("GAZP"), 10)
        assert again._lane == other._lane != quotes._lane
        for stream in (again, other):
            await asyncio.wait_for(stream.get(), 10)
        assert list(c._pool.lanes) == [again._lane]
        assert c.stats()["subscriptions"] == 2
        await quotes.aclose()  # its lane is gone: nothing to unsubscribe
        assert c.stats()["subscriptions"] == 2
