"""The trading day end to end: the simulator follows the schedule on a manual clock; the
client refuses or holds orders across a FORTS clearing and the evening session's start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from alorws.client import AlorClient
from alorws.client.session import ManualClock
from alorws.errors import MarketClosed, OrderRejected
from alorws.protocol.schedule import Phase
from alorws.protocol.timeutil import MSK
from alorws.sim.app import Simulator

from .._sim import DAY
from .conftest import FAST


MONDAY_1359 = datetime(2026, 12, 7, 13, 59, 30, tzinfo=MSK)


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock(MONDAY_1359)


@pytest.fixture
async def scheduled(clock: ManualClock) -> AsyncIterator[Simulator]:
    """A simulator that follows the MOEX tables on the manual clock."""
    async with Simulator(
        port=0, seed=5, rate=20.0, history_days=0, day_order_lifetime=DAY,
        schedule=True, schedule_clock=clock,
    ) as s:  # fmt: skip
        yield s


async def _tick(clock: ManualClock, to: str) -> None:
    await clock.set(datetime.fromisoformat(f"2026-12-07 {to}").replace(tzinfo=MSK))


async def test_clearing_and_evening_start(scheduled: Simulator, clock: ManualClock) -> None:
    """Open at 13:59; in the 14:00-14:05 clearing the simulator refuses (400 naming it), the
    opt-in refusal names it client-side, a held order goes out at 14:05 (the simulator, which
    refuses in the clearing, accepts it); the same across the evening clearing into the evening
    session at 19:05. The default client is unchanged: it sends and the exchange answers."""
    async with AlorClient(scheduled.demo_refresh_token, base_url=scheduled.url, backoff=FAST) as c:
        forts = await c.portfolio_for("SiZ6")
        refuse = c.session_trading("refuse", clock=clock)
        hold = c.session_trading("hold", clock=clock)
        assert (await refuse.place_market(forts, "SiZ6", "buy", 1)).order_number

        for closed_at, opens_at, window in (
            ("14:01:00", "14:05:00", "intermediate clearing 14:00-14:05 MSK"),
            ("18:50:00", "19:05:00", "evening clearing 18:45-19:05 MSK"),
        ):
            await _tick(clock, closed_at)
            state = c.session("FORTS", clock.now())
            assert state.window.phase is Phase.CLEARING and str(state.window) == window
            with pytest.raises(MarketClosed) as refused:
                await refuse.place_market(forts, "SiZ6", "buy", 1)
            assert window in str(refused.value) and refused.value.opens_at == state.next_open
            with pytest.raises(OrderRejected) as exchange:  # the default: sent, refused there
                await c.trading.place_market(forts, "SiZ6", "buy", 1)
            assert exchange.value.http_code == 400 and window in exchange.value.message

            held = asyncio.create_task(hold.place_market(forts, "SiZ6", "buy", 1))
            async with asyncio.timeout(10):
                await clock.wait_sleeping()  # parked while the simulator would refuse it
            await _tick(clock, "14:04:59" if opens_at == "14:05:00" else "19:04:59")
            async with asyncio.timeout(10):
                await clock.wait_sleeping()  # woke, checked, parked again
            assert not held.done()
            await _tick(clock, opens_at)
            async with asyncio.timeout(10):
                ack = await held
            assert ack.order_number

        # Stocks follow their own table: at 19:05 the stock evening session is open too.
        sber = await c.portfolio_for("SBER")
        assert (await refuse.place_limit(sber, "SBER", "buy", 1, 300.0)).order_number
        gate = scheduled.server.session_gate
        assert gate is not None and gate.refused == 2


async def test_hold_wakes_on_trading_status(scheduled: Simulator, clock: ManualClock) -> None:
    """A watched instrument's live status closes an open window (break) and opens it again,
    waking a held order at once."""
    async with AlorClient(scheduled.demo_refresh_token, base_url=scheduled.url, backoff=FAST) as c:
        forts = await c.portfolio_for("SiZ6")
        hold = c.session_trading("hold", clock=clock)
        await hold.watch("SiZ6")
        changed = hold._changed
        scheduled.set_trading_status("SiZ6", 2)
        async with asyncio.timeout(10):
            await changed.wait()
        si = await c.instruments.get("SiZ6")
        assert not hold.state(si).is_open and hold.state(si).source == "tradingStatus"
        held = asyncio.create_task(hold.place_market(forts, "SiZ6", "buy", 1))
        async with asyncio.timeout(10):
            await clock.wait_sleeping()
        assert not held.done()
        scheduled.set_trading_status("SiZ6", 17)
        async with asyncio.timeout(10):
            assert (await held).order_number
        await hold.aclose()


async def test_session_reads_now(client: AlorClient) -> None:
    """client.session with no time reads the real clock; bad names are refused by name."""
    state = client.session("TQBR")
    assert state.market == "stock" and state.at.tzinfo is MSK
    assert abs((state.at - datetime.now(MSK)).total_seconds()) < 60
    with pytest.raises(ValueError, match="not a market"):
        client.session("NASDAQ")
    with pytest.raises(ValueError, match="mode"):
        client.session_trading("later")
