"""Fixtures for the client tests: a simulator on a free loopback port and a connected client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from alorws.client import AlorClient
from alorws.protocol.backoff import Backoff
from alorws.sim.app import Simulator

from .._sim import DAY


#: Reconnect quickly in tests (full jitter below 50 ms), never give up.
FAST = Backoff(base=0.01, cap=0.05)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with a lively market and the fault API."""
    async with Simulator(
        port=0, day_order_lifetime=DAY, seed=7, rate=50.0, admin=True, history_days=1
    ) as s:
        yield s


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AlorClient]:
    """A started client for the simulator's demo account."""
    async with AlorClient(
        sim.demo_refresh_token, base_url=sim.url, backoff=FAST, ping_interval=1.0, ping_timeout=1.0
    ) as c:
        yield c
