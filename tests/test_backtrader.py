"""backtrader on the simulator: a live MA-cross run with a drop in the middle (no duplicate
candle, no duplicate order), then the same strategy as a backtest of that run's recording."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from alorws.integrations.backtrader import BarAssembler, recorded_bars
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
