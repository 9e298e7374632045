"""Portfolio: local state from the account streams plus HTTP snapshots, against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from alorws.client import AlorClient
from alorws.client.portfolio import Portfolio, order_progress
from alorws.errors import ConnectError, OrderRejected
from alorws.protocol import Order, OrderStatus
from alorws.sim.app import Simulator

from ..sim.wsclient import RawWS


View = dict[str, dict[Any, tuple[Any, ...]]]


def _view(orders: Any, trades: Any, positions: Any) -> View:
    """The key fields of orders, trades and positions, by id / symbol."""
    return {
        "orders": {
            o.id: (o.status, o.filled_qty_batch, o.qty_batch, o.qty_units, o.filled_qty_units)
            for o in orders
        },
        "trades": {t.id: (t.order_no, t.qty_batch, t.qty_units, t.price, t.side) for t in trades},
        "positions": {p.symbol: (p.qty_units, p.qty_batch, p.avg_price) for p in positions},
    }


def _local(pf: Portfolio) -> View:
    return _view(pf.orders.values(), pf.trades.values(), pf.positions.values())


async def _truth(client: AlorClient, portfolio: str) -> View:
    """The simulator's own view over HTTP."""
    http = client.http
    orders, trades, positions = await asyncio.gather(
        http.orders(portfolio), http.trades(portfolio), http.positions(portfolio)
    )
    return _view(orders, trades, positions)


async def _until(pf: Portfolio, predicate: Any, wait: float = 10.0) -> None:
    """Wait for changes of the portfolio until ``predicate()`` holds."""
    async with asyncio.timeout(wait):
        while not predicate():
            await pf.wait_change()


async def _settled(pf: Portfolio, client: AlorClient, wait: float = 15.0) -> View:
    """Wait until the portfolio equals the simulator's HTTP view; return that view."""
    async with asyncio.timeout(wait):
        while True:
            try:
                truth = await _truth(client, pf.portfolio)
            except ConnectError:  # the simulator may refuse for a while (faults.refuse)
                truth = None
            if truth is not None and not pf.stale and _local(pf) == truth:
                return truth
            # No single event says "caught up": wait for a change, re-check at least every 0.2 s.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await pf.wait_change()


async def _limit_price(client: AlorClient, symbol: str, side: str, ticks: int) -> float:
    """A price ``ticks`` steps away from the best price on the passive side, on the grid."""
    sec = await client.http.security(symbol)
    step = sec.min_step or 0.01
    quote = (await client.http.quotes([f"MOEX:{symbol}"]))[0]
    base = quote.bid if side == "buy" else quote.ask
    assert base is not None
    price = base - ticks * step if side == "buy" else base + ticks * step
    decimals = max(0, len(f"{step:.10f}".rstrip("0").split(".")[1]))
    return round(round(price / step) * step, decimals)


async def test_start_matches_http_and_follows_orders(client: AlorClient, sim: Simulator) -> None:
    """The first snapshot equals the HTTP view; placed, cancelled and filled orders show up."""
    portfolio = client.portfolios[0]
    first = await client.trading.place_market(portfolio, "SBER", "buy", 2)
    async with Portfolio(client, portfolio) as pf:
        assert pf.ready.is_set() and not pf.stale
        assert _local(pf) == await _truth(client, portfolio)
        assert pf.orders[first.order_number].status is OrderStatus.FILLED
        assert pf.summary is not None and pf.risk is not None and pf.forts_risk is None
        assert "SBER" in pf.positions and "RUB" in pf.positions

        changes: list[tuple[str, Any]] = []
        pf.on_change(lambda kind, obj: changes.append((kind, obj)))

        # A resting limit order, then its cancel.
        price = await _limit_price(client, "SBER", "buy", 50)
        ack = await client.trading.place_limit(portfolio, "SBER", "buy", 1, price)
        await _until(pf, lambda: ack.order_number in pf.orders)
        assert pf.orders[ack.order_number].status is OrderStatus.WORKING
        assert pf.orders[ack.order_number] in pf.working_orders
        await client.trading.cancel(ack.order_number, portfolio)
        await _until(pf, lambda: pf.orders[ack.order_number].status is OrderStatus.CANCELED)

        # A market order: the order, its fills and the position.
        held = pf.positions["SBER"].qty_batch or 0
        ack = await client.trading.place_market(portfolio, "SBER", "buy", 3)
        await _until(
            pf,
            lambda: (
                (o := pf.orders.get(ack.order_number)) is not None
                and o.status is OrderStatus.FILLED
                and sum(t.qty_batch or 0 for t in pf.trades.values() if t.order_no == o.id) == 3
                and pf.positions["SBER"].qty_batch == held + 3
            ),
        )
        kinds = {k for k, _ in changes}
        assert {"order", "trade", "position"} <= kinds
        assert await _settled(pf, client) == _local(pf)
    assert repr(pf).startswith("<Portfolio")
    assert pf.stats()["state"] == "closed"


async def _trade(
    client: AlorClient, portfolio: str, stop: asyncio.Event, rng: random.Random
) -> int:
    """Market orders and limit orders near the touch (some fill later, some are cancelled)."""
    placed = 0
    limits: list[str] = []
    while not stop.is_set():
        side = rng.choice(("buy", "sell"))
        if rng.random() < 0.5:
            await client.trading.place_market(portfolio, "SBER", side, rng.randint(1, 3))
        else:
            price = await _limit_price(client, "SBER", side, rng.randint(-1, 2))
            ack = await client.trading.place_limit(portfolio, "SBER", side, 2, price)
            limits.append(ack.order_number)
        placed += 1
        if len(limits) > 4:
            with contextlib.suppress(OrderRejected):  # it may have filled meanwhile
                await client.trading.cancel(limits.pop(0), portfolio)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(rng.uniform(0.01, 0.05)):
                await stop.wait()
    return placed


async def test_twenty_random_drops_while_orders_fill(client: AlorClient, sim: Simulator) -> None:
    """Acceptance: after 20 random drops while orders fill, Portfolio equals the HTTP view."""
    rng = random.Random(6)
    portfolio = client.portfolios[0]
    async with Portfolio(client, portfolio) as pf:
        restores = 0

        def count(event: Any) -> None:
            nonlocal restores
            restores += event.kind == "restored"

        pf._streams["orders"].on_event(count)
        stop = asyncio.Event()
        trader = asyncio.create_task(_trade(client, portfolio, stop, rng))
        snapshots = pf.snapshots
        dropped = 0
        for _ in range(20):
            await asyncio.sleep(rng.uniform(0.05, 0.35))  # pacing of the faults, not a sync
            dropped += sim.faults.drop(code=1006, kind="ws")
        stop.set()
        placed = await trader
        assert placed > 10 and dropped >= 20
        # Cancel what still rests so that the truth stops moving, then compare exactly. First
        # let the portfolio catch up: the last orders may still be in flight behind a restore.
        await _settled(pf, client)
        for order in list(pf.working_orders):
            with contextlib.suppress(OrderRejected):
                await client.trading.cancel(order.id, portfolio)
        truth = await _settled(pf, client)
        assert all(o[0] is not OrderStatus.WORKING for o in truth["orders"].values())
        assert len(truth["orders"]) == placed
        assert any(o[1] for o in truth["orders"].values()) and truth["trades"]
        assert truth["positions"].keys() == {"RUB", "SBER"}
        assert restores >= 10  # drops landing mid-restore merge into one
        assert pf.snapshots > snapshots + restores  # a snapshot of each kind after a restore
        assert not pf.stale


async def test_snapshot_fills_a_gap_beyond_the_replay_cap(
    client: AlorClient, sim: Simulator
) -> None:
    """Orders filled while disconnected, more than the replay cap, all reach the Portfolio."""
    sim.engine.history_cap = 3
    portfolio = client.portfolios[0]
    ws = await RawWS.connect(sim.cws_url)
    try:
        await ws.request({"opcode": "authorize", "guid": "pf-auth", "token": sim.access_token()})
        async with Portfolio(client, portfolio) as pf:
            stale_seen = asyncio.Event()
            pf._streams["positions"].on_event(
                lambda e: stale_seen.set() if e.kind == "disconnected" and pf.stale else None
            )
            sim.faults.drop(code=1006, kind="ws")
            sim.faults.refuse(1.0)  # keep the client out while orders fill
            for i in range(10):
                reply = await ws.request(
                    {
                        "opcode": "create:market",
                        "guid": f"pf-gap-{i}",
                        "side": "buy",
                        "quantity": 1,
                        "instrument": {"symbol": "SBER", "exchange": "MOEX"},
                        "user": {"portfolio": portfolio},
                    }
                )
                assert reply["httpCode"] == 200
            async with asyncio.timeout(10):
                await stale_seen.wait()
            truth = await _settled(pf, client)
            assert len(truth["orders"]) == 10 and len(truth["trades"]) >= 10
            assert truth["positions"]["SBER"][1] == 10
    finally:
        await ws.close()


def test_order_progress_orders_states() -> None:
    """Final beats working, then more filled lots, then a later update time."""
    base = Order(
        id="1", status=OrderStatus.WORKING, filled_qty_batch=0, update_time="2025-01-01T10:00:00Z"
    )
    later = Order(
        id="1", status=OrderStatus.WORKING, filled_qty_batch=0, update_time="2025-01-01T10:00:01Z"
    )
    partly = Order(
        id="1", status=OrderStatus.WORKING, filled_qty_batch=1, update_time="2025-01-01T09:00:00Z"
    )
    done = Order(id="1", status=OrderStatus.CANCELED, filled_qty_batch=0)
    ranked = sorted([done, partly, later, base], key=order_progress)
    assert ranked == [base, later, partly, done]


async def test_a_restore_fetches_the_orders_snapshot_once(
    client: AlorClient, sim: Simulator
) -> None:
    """After a gap the portfolio takes its own snapshot; its streams do not fetch the same
    one again (one GET per feed per gap, not two)."""
    portfolio = client.portfolios[0]
    async with Portfolio(client, portfolio) as pf:
        http = client.http
        real = http.orders
        calls: list[str] = []

        async def counting(*args: Any, **kwargs: Any) -> Any:
            calls.append(args[0])
            return await real(*args, **kwargs)

        http.orders = counting  # type: ignore[method-assign]
        stream = pf._streams["orders"]
        restored = asyncio.Event()
        stream.on_event(lambda e: restored.set() if e.kind == "restored" else None)
        sim.faults.drop(code=1006, kind="ws")
        async with asyncio.timeout(10):
            await restored.wait()
        # The portfolio asked for its snapshot; a snapshot the stream itself fetched would be a
        # task of the stream (started before the portfolio hears of the restore) until it ends.
        async with asyncio.timeout(10):
            while not calls or stream._tasks:  # noqa: ASYNC110 - no event for either
                await asyncio.sleep(0.01)
        assert calls == [portfolio]
