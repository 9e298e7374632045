"""A short recording of the simulator, made once per module, with what the live streams got.

The 60 s recording of the demo is checked in test_demo_replay.py (recorded while the suite
runs); the tests here record ~3 s of a livelier simulator for the format, DuckDB, matching and
pacing checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from alorws.client import AlorClient
from alorws.protocol.backoff import Backoff
from alorws.record import Recorder
from alorws.sim.app import Simulator

from .._sim import DAY


FAST = Backoff(base=0.01, cap=0.05)
SYMBOLS = ("SBER", "GAZP")
RECORD_SECONDS = 3.0


@dataclass
class Recording:
    """Where the recording is, what each live stream delivered (by key), recorder stats."""

    root: Path
    portfolio: str
    live: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def streams(source: Any, portfolio: str) -> dict[tuple[str, str], Any]:
    """The same subscriptions, on a client or a replay (the common stream API)."""
    out: dict[tuple[str, str], Any] = {}
    for code in SYMBOLS:
        out["quotes", code] = source.quotes(code, policy="queue")
        out["book", code] = source.order_book(code, depth=5, policy="queue")
        out["trades", code] = source.all_trades(code)
        out["bars", code] = source.bars(code, 60)
    out["orders", portfolio] = source.orders(portfolio)
    return out


async def collect(stream: Any, into: list[Any]) -> None:
    """Append everything ``stream`` delivers to ``into`` until it ends or is cancelled."""
    async for item in stream:
        into.append(item)  # noqa: PERF401  (kept item by item: the task is cancelled)


async def _record(root: Path) -> Recording:
    async with Simulator(
        port=0, day_order_lifetime=DAY, seed=11, rate=300.0, history_days=1
    ) as sim:
        async with AlorClient(
            sim.demo_refresh_token, base_url=sim.url, backoff=FAST, ping_interval=1.0
        ) as client:
            portfolio = client.portfolios[0]
            rec = Recording(root, portfolio)
            recorder = Recorder(client, root, flush_seconds=0.5, batch_rows=500, roll_rows=200)
            await recorder.start()
            opened = streams(client, portfolio)
            for stream in opened.values():
                await stream.subscribe()
            tasks = []
            for key, stream in opened.items():
                rec.live[key] = []
                tasks.append(asyncio.create_task(collect(stream, rec.live[key])))
            await asyncio.sleep(RECORD_SECONDS / 3)
            await client.trading.place_market(portfolio, "SBER", "buy", 1)
            await asyncio.sleep(RECORD_SECONDS * 2 / 3)
            await recorder.aclose()  # the recording ends here; live streams go on a moment
            await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            rec.stats = recorder.stats()
            for stream in opened.values():
                await stream.aclose()
    return rec


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """~3 s of quotes, books, trades and bars of two symbols and the demo account's orders."""
    return asyncio.run(_record(tmp_path_factory.mktemp("rec")))


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A lively simulator."""
    async with Simulator(port=0, day_order_lifetime=DAY, seed=7, rate=300.0, history_days=1) as s:
        yield s


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AlorClient]:
    """A started client for the simulator's demo account."""
    async with AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as c:
        yield c
