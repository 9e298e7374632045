"""Helpers of the client tests about limits and many subscriptions: a quiet simulator, a
client with a small connection budget, and distinct quote streams to fill it."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from alorws.client import AlorClient
from alorws.sim.app import Simulator

from .._sim import DAY
from .conftest import FAST


def quiet_simulator(**limits: Any) -> Simulator:
    """A near-still market (thousands of subscriptions stay cheap), with the server's limits
    given (``max_subscriptions=...``)."""
    return Simulator(port=0, day_order_lifetime=DAY, seed=5, rate=0.2, history_days=1, **limits)


def small_budget_client(sim: Simulator, *, io_thread: bool = True) -> AlorClient:
    """A client of ``sim`` with 3 connections, one of them reserved for account streams: market
    data may use 2."""
    return AlorClient(
        sim.demo_refresh_token,
        base_url=sim.url,
        backoff=FAST,
        max_connections=3,
        reserve_connections=1,
        io_thread=io_thread,
    )


def quote_streams(client: AlorClient, sim: Simulator, n: int) -> list[Any]:
    """``n`` distinct quote streams (instrument x frequency), not subscribed yet."""
    symbols = sorted(sim.market.instruments)
    pairs = itertools.islice(((s, f) for f in itertools.count(60_000) for s in symbols), n)
    return [client.quotes(sym, frequency=freq) for sym, freq in pairs]


async def subscribe_all(client: AlorClient, streams: list[Any], within: float = 60) -> None:
    """``client.subscribe_all(streams)``, bounded by ``within`` seconds."""
    async with asyncio.timeout(within):
        await client.subscribe_all(streams)
