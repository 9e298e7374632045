"""Fixtures for the gateway tests: a real nats-server with JetStream, the simulator, a gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from alorws.client import AlorClient
from alorws.gateway import Gateway, NatsServer
from alorws.protocol.backoff import Backoff
from alorws.sim.app import Simulator

from .._sim import DAY


FAST = Backoff(base=0.01, cap=0.05)
LEASE = 1.0  # seconds: short, so that a vanished consumer is released quickly


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    """A nats-server with JetStream on a free loopback port and a temporary store."""
    async with NatsServer() as server:
        yield server


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with a lively market."""
    async with Simulator(port=0, day_order_lifetime=DAY, seed=5, rate=50.0, history_days=1) as s:
        yield s


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AlorClient]:
    """The gateway's ALOR session."""
    async with AlorClient(
        sim.demo_refresh_token, base_url=sim.url, backoff=FAST, ping_interval=1.0, ping_timeout=1.0
    ) as c:
        yield c


@pytest.fixture
async def gateway(client: AlorClient, nats_server: NatsServer) -> AsyncIterator[Gateway]:
    """A gateway serving ``client`` with a short lease."""
    async with Gateway(client, nats_server.url, lease_seconds=LEASE) as gw:
        yield gw


@pytest.fixture
def portfolio(client: AlorClient) -> str:
    """The demo account's stock portfolio."""
    return client.portfolios[0]
