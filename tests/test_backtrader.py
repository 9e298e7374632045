"""backtrader on the simulator: a live MA-cross run with a drop in the middle (no duplicate
candle, no duplicate order), then the same strategy as a backtest of that run's recording."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import backtrader as bt
import pytest

from alorws.integrations.backtrader import AlorStore, BarAssembler, recorded_bars
from alorws.protocol.market import Bar
from alorws.sim.app import Simulator


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

import backtrader_ma_cross as example  # noqa: E402


def test_assembler_hands_out_completed_candles_once() -> None:
    """The forming candle is held; a later time completes it; replays and repeats are
    dropped."""
    a = BarAssembler()

    def bar(t: int, c: float) -> Bar:
        return Bar(time=t, open=c, high=c, low=c, close=c, volume=1)

    assert a.push(bar(10, 1.0)) is None
    assert a.push(bar(10, 2.0)) is None  # the forming candle, updated
    done = a.push(bar(11, 3.0))
    assert done is not None and (done.time, done.close) == (10, 2.0)
    assert a.push(bar(10, 9.0)) is None  # a replay of what was handed out
    assert a.push(bar(9, 9.0)) is None
    done = a.push(bar(12, 4.0))
    assert done is not None and done.time == 11


@pytest.mark.timeout(90)
async def test_live_with_a_drop_then_backtest_of_the_recording(tmp_path: Path) -> None:
    """Live: statuses DELAYED -> LIVE -> DISCONNECTED -> LIVE, candles strictly in order and
    none missing against the simulator's own, one exchange order per decision. Backtest of the
    recording: the same decisions and the same fills (side and lots)."""
    record = str(tmp_path / "rec")
    async with Simulator(port=0, seed=11, rate=50.0, history_days=0) as sim:
        loop = asyncio.get_running_loop()
        dropped = asyncio.Event()

        def on_bar(n: int) -> None:
            if n == 4:
                loop.call_soon_threadsafe(lambda: (sim.faults.drop(), dropped.set()))

        live = await asyncio.to_thread(
            example.run_live, sim.demo_refresh_token, record, bars=8, on_bar=on_bar,
            fast=1, slow=2, base_url=sim.url,
        )  # fmt: skip
        assert dropped.is_set()
        stock = sim.demo.portfolios[0]
        orders = sim.engine.ledger.orders(stock)
        truth = sim.market.bars("SBER", 1, live.bars[0].time, live.bars[-1].time)

    statuses = live.statuses
    assert statuses[:2] == ["DELAYED", "LIVE"] and "DISCONNECTED" in statuses
    assert statuses[-1] == "LIVE"
    times = [b.time for b in live.bars]
    assert times == sorted(set(times))  # no duplicate, never backwards
    assert live.start_at is not None
    assert [t for t in times if t >= live.start_at] == [
        b.time for b in truth if b.time >= live.start_at
    ]  # no gap across the drop
    assert live.decisions, "the strategy made no decision: nothing was compared"
    # Exactly once: one exchange order per decision, each with the strategy's tag.
    assert len(orders) == len(live.decisions)
    assert all((o.comment or "").startswith("bt") for o in orders)
    assert not [n for n in live.notifications if n[0] != "order status unknown"]

    decisions, fills = await asyncio.to_thread(
        example.run_backtest, record, live.start_at, live.bars[-1].time, fast=1, slow=2
    )
    assert decisions == live.decisions
    # The backtest fills at the next candle's open, live at the market: same sides and lots; a
    # decision on the last candle fills live only.
    sides = [(side, size) for side, size, _ in fills]
    assert [(side, size) for side, size, _ in live.fills][: len(sides)] == sides
    assert len(live.fills) - len(sides) in (0, 1)
    recorded = await asyncio.to_thread(recorded_bars, record, "SBER", 1, until=times[-1])
    assert [b.time for b in recorded if b.time >= live.start_at] == [
        t for t in times if t >= live.start_at
    ]


class _Script(bt.Strategy):  # type: ignore[misc]
    """On the first live candle: a limit buy, a stop buy and a stop-limit sell far from the
    market; on the second: cancel them and buy at the market (``on_market`` is told)."""

    params = (("on_market", None),)

    def __init__(self) -> None:
        self.live = False
        self.step = 0
        self.events: dict[str, list[str]] = {}
        self.placed: list[Any] = []
        self.position_after: float | None = None
        self.cash_value: tuple[float, float] | None = None

    def notify_data(self, data: Any, status: int, *args: Any, **kwargs: Any) -> None:
        if data._getstatusname(status) == "LIVE":
            self.live = True

    def notify_order(self, order: Any) -> None:
        self.events.setdefault(order.info.name, []).append(order.getstatusname())

    def next(self) -> None:
        if not self.live:
            return
        self.step += 1
        price = self.data.close[0]
        if self.step == 1:
            self.placed = [
                self.buy(exectype=bt.Order.Limit, price=price * 0.9, size=1, name="limit"),
                self.buy(exectype=bt.Order.Stop, price=price * 1.1, size=1, name="stop"),
                self.sell(
                    exectype=bt.Order.StopLimit, price=price * 0.9, plimit=price * 0.89,
                    size=1, name="stoplimit",
                ),
            ]  # fmt: skip
        elif self.step == 2:
            for order in self.placed:
                self.cancel(order)
            self.buy(size=2, name="market")
            self.p.on_market()
        elif self.step >= 4 and self.position_after is None and self.position.size:
            self.position_after = self.position.size
            self.cash_value = (self.broker.getcash(), self.broker.getvalue())


@pytest.mark.timeout(90)
async def test_broker_order_kinds_statuses_and_a_drop_in_flight(tmp_path: Path) -> None:
    """Limit, stop and stop-limit orders are accepted then cancelled (from the orders streams);
    a market order whose reply is held back while every connection drops is executed once and
    completes; the position, cash and value follow."""
    async with Simulator(port=0, seed=12, rate=50.0, history_days=0) as sim:
        loop = asyncio.get_running_loop()

        def on_market() -> None:
            # The command runs at once; its reply is held 1 s, and the connections drop first:
            # the client re-sends the same guid, the simulator answers with the first reply.
            def cut() -> None:
                sim.faults.drop()
                sim.faults.delay(0)

            loop.call_soon_threadsafe(sim.faults.delay, 1.0)
            loop.call_soon_threadsafe(loop.call_later, 0.3, cut)

        def run() -> Any:
            store = AlorStore(sim.demo_refresh_token, base_url=sim.url)
            cerebro = bt.Cerebro(stdstats=False)
            cerebro.addstore(store)
            cerebro.adddata(store.getdata("SBER", tf=1, history=5, live_bars=7, qcheck=0.2))
            cerebro.setbroker(store.getbroker())
            cerebro.addstrategy(_Script, on_market=on_market)
            return cerebro.run()[0]

        script = await asyncio.to_thread(run)
        stock = sim.demo.portfolios[0]
        orders = sim.engine.ledger.orders(stock)
        stops = sim.engine.ledger.stop_orders(stock)

    assert script.events["limit"] == ["Submitted", "Accepted", "Canceled"]
    assert script.events["stop"] == ["Submitted", "Accepted", "Canceled"]
    assert script.events["stoplimit"] == ["Submitted", "Accepted", "Canceled"]
    # Its 2 lots fill in one trade, or in two when the best ask holds one lot: backtrader then
    # notifies Partial after the first. Completed once either way.
    assert script.events["market"] in (
        ["Submitted", "Accepted", "Completed"],
        ["Submitted", "Accepted", "Partial", "Completed"],
    )
    # Once each on the exchange: the limit and the market order; the two stop orders.
    assert sorted(str(o.type) for o in orders) == ["limit", "market"]
    assert len(stops) == 2
    assert script.position_after == 2
    assert script.cash_value is not None and min(script.cash_value) > 0
