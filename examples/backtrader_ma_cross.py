"""A moving-average cross in backtrader: live on ALOR (or the simulator), then as a backtest.

The live run preloads candles over HTTP, trades on live candles (buy 1 lot when the fast SMA
crosses above the slow one, sell when it crosses below), drops every connection halfway
(``--drop-at``) to show that no candle and no order is doubled, and records the run. The
backtest runs the same strategy on the candles of that recording with backtrader's own broker,
and the two lists of decisions are compared.

    python examples/backtrader_ma_cross.py --bars 12            # the in-process simulator
    ALOR_REFRESH_TOKEN=... python examples/backtrader_ma_cross.py --env dev --tf 60

Needs ``pip install alorws[backtrader]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import backtrader as bt

from _common import parser, say
from alorws.integrations.backtrader import AlorStore, BarsData, recorded_bars
from alorws.protocol.market import Bar
from alorws.sim.app import Simulator


Decision = tuple[int, str, int]  # (candle time, "buy"/"sell", lots)


class MaCross(bt.Strategy):  # type: ignore[misc]
    """Buy ``size`` lots when SMA(fast) crosses above SMA(slow); sell them on the cross back.

    Trades only on candles at or after ``start_at`` (Unix s; live: the first live candle) and
    while no order of its own is pending. ``on_bar(n)`` is called with the count of live bars.
    """

    params = (
        ("fast", 2),
        ("slow", 4),
        ("size", 1),
        ("start_at", None),
        ("on_bar", None),
    )

    def __init__(self) -> None:
        self.cross = bt.indicators.CrossOver(
            bt.indicators.SMA(self.data.close, period=self.p.fast),
            bt.indicators.SMA(self.data.close, period=self.p.slow),
        )
        self.pending: Any = None
        self.live_since: int | None = None
        self.decisions: list[Decision] = []
        self.fills: list[tuple[str, float, float]] = []
        self.statuses: list[str] = []
        self.live_bars = 0
        self._signal_at: dict[int, int] = {}

    def notify_data(self, data: Any, status: int, *args: Any, **kwargs: Any) -> None:
        name = data._getstatusname(status)
        self.statuses.append(name)
        if name == "LIVE" and self.live_since is None:
            self.live_since = -1  # the next candle is the first live one

    def notify_order(self, order: Any) -> None:
        if order.status == order.Completed:
            side = "buy" if order.isbuy() else "sell"
            self.fills.append((side, order.executed.size, order.executed.price))
        if not order.alive():
            self.pending = None

    def _now(self) -> int:
        return int(self.data.datetime.datetime(0).replace(tzinfo=UTC).timestamp())

    def next(self) -> None:
        now = self._now()
        if self.live_since == -1:
            self.live_since = now
        start = self.p.start_at if self.p.start_at is not None else self.live_since
        if self.live_since is not None:
            self.live_bars += 1
            if self.p.on_bar is not None:
                self.p.on_bar(self.live_bars)
        if start is None or start < 0 or now < start or self.pending is not None:
            return
        if not self.position and self.cross[0] > 0:
            self.pending = self.buy(size=self.p.size)
            self.decisions.append((now, "buy", self.p.size))
        elif self.position and self.cross[0] < 0:
            self.pending = self.sell(size=self.position.size)
            self.decisions.append((now, "sell", int(self.position.size)))


@dataclass
class LiveRun:
    """What a live run did."""

    decisions: list[Decision]
    fills: list[tuple[str, float, float]]
    bars: list[Bar]
    statuses: list[str]
    start_at: int | None
    record_dir: str
    notifications: list[Any] = field(default_factory=list)


def run_live(
    refresh_token: str,
    record_dir: str,
    *,
    symbol: str = "SBER",
    tf: int = 1,
    bars: int = 12,
    on_bar: Callable[[int], None] | None = None,
    fast: int = 2,
    slow: int = 4,
    **client_options: Any,
) -> LiveRun:
    """Run MaCross live for ``bars`` live candles, recording to ``record_dir`` (blocking)."""
    store = AlorStore(refresh_token, record_to=record_dir, **client_options)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.addstore(store)
    data = store.getdata(symbol, tf=tf, history=10, live_bars=bars, qcheck=0.2)
    cerebro.adddata(data)
    cerebro.setbroker(store.getbroker())
    cerebro.addstrategy(MaCross, on_bar=on_bar, fast=fast, slow=slow)
    notes: list[Any] = []
    cerebro.addstorecb(lambda msg, *a, **k: notes.append((msg, a)))
    (strategy,) = cerebro.run()
    return LiveRun(
        strategy.decisions,
        strategy.fills,
        list(data.delivered),
        strategy.statuses,
        strategy.live_since,
        record_dir,
        notes,
    )


def run_backtest(
    record_dir: str,
    start_at: int,
    until: int,
    *,
    symbol: str = "SBER",
    tf: int = 1,
    fast: int = 2,
    slow: int = 4,
) -> tuple[list[Decision], list[tuple[str, float, float]]]:
    """Run MaCross on the recorded candles with backtrader's broker; its decisions and
    fills."""
    candles = recorded_bars(record_dir, symbol, tf, until=until)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(10_000_000)
    cerebro.adddata(BarsData(bars=candles))
    cerebro.addstrategy(MaCross, start_at=start_at, fast=fast, slow=slow)
    (strategy,) = cerebro.run()
    return strategy.decisions, strategy.fills


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="alorws-bt-") as record_dir:
        if args.url or args.env:
            token = os.environ.get("ALOR_REFRESH_TOKEN", "")
            if not token:
                raise SystemExit("set ALOR_REFRESH_TOKEN to your refresh token")
            options: dict[str, Any] = {"base_url": args.url, "env": args.env or "prod"}
            sim = None
        else:
            sim = Simulator(port=0, seed=1, rate=50.0, history_days=0)
            await sim.start()
            say(f"simulator at {sim.url}")
            token, options = sim.demo_refresh_token, {"base_url": sim.url}
        loop = asyncio.get_running_loop()

        def on_bar(n: int) -> None:
            if sim is not None and n == args.drop_at:
                say(f"live bar {n}: dropping every connection")
                loop.call_soon_threadsafe(sim.faults.drop)

        try:
            live = await asyncio.to_thread(
                run_live, token, record_dir, symbol=args.symbol, tf=args.tf, bars=args.bars,
                on_bar=on_bar, **options,
            )  # fmt: skip
        finally:
            if sim is not None:
                await sim.stop()
        say("feed statuses:", " -> ".join(live.statuses))
        say(f"live: {len(live.bars)} candles, decisions {live.decisions}, fills {live.fills}")
        if live.start_at is None or not live.bars:
            raise SystemExit("the feed never went live")
        backtest, fills = await asyncio.to_thread(
            run_backtest, record_dir, live.start_at, live.bars[-1].time, symbol=args.symbol,
            tf=args.tf,
        )  # fmt: skip
        say(f"backtest: decisions {backtest}, fills {fills}")
        say(f"same decisions live and in the backtest: {backtest == live.decisions}")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--symbol", default="SBER")
    p.add_argument("--tf", type=int, default=1, help="candle seconds (the simulator: 1)")
    p.add_argument("--bars", type=int, default=12, help="live candles to trade on")
    p.add_argument("--drop-at", type=int, default=6, help="drop connections at this live bar")
    args = p.parse_args()
    asyncio.run(main(args))
