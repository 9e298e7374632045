"""The gateway's connection budget: the limits of AlorClient, given to the gateway."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from alorws.bus import BusClient
from alorws.client import AlorClient
from alorws.errors import ConfigurationError, SubscriptionLimitError
from alorws.gateway import Gateway, NatsServer
from alorws.protocol.market import Quote
from alorws.sim.app import Simulator

from ._procs import GatewayProcess
from .conftest import FAST
from .test_gateway import first


SYMBOLS = ["SBER", "GAZP", "LKOH", "GMKN", "ROSN", "YDEX", "MGNT"]


def account(sim: Simulator) -> dict[str, Any]:
    """The demo account's connections and subscriptions as the simulator counts them."""
    stats = sim.stats()["accounts"].get("demo", {})
    return {"connections": stats.get("connections", 0), "subscriptions": stats.get("subscriptions")}


@pytest.mark.timeout(120)
async def test_market_data_is_sharded_within_the_budget_and_keeps_off_the_reserve(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """An account of 4 connections x 3 subscriptions; the gateway (a subprocess) is given that
    budget with 2 connections reserved. One consumer's five distinct quotes all work, over two
    connections; a sixth fills them and a seventh is refused before anything is sent, so the
    reserved connections stay free of market data; account data and an order then take them."""
    async with Simulator(
        port=0, seed=5, rate=50.0, history_days=1, max_connections=4, max_subscriptions=3
    ) as sim:
        token_file = tmp_path / "token"
        token_file.write_text(sim.demo_refresh_token, encoding="utf-8")
        token_file.chmod(0o600)  # a token file must be its owner's alone
        gw = await GatewayProcess.start(
            nats_server.url, sim.url, token_file, "--max-connections", "4",
            "--max-subscriptions-per-connection", "3", "--reserve-connections", "2",
        )  # fmt: skip
        try:
            assert await gw.started(60.0) == "leader"
            async with BusClient(nats_server.url) as bus:
                quotes = [bus.quotes(symbol) for symbol in SYMBOLS[:5]]
                for stream in quotes:
                    await stream.subscribe()
                for stream in quotes:
                    quote = await first(stream, sim, stream.request.code, within=15.0)
                    assert isinstance(quote, Quote) and quote.symbol == stream.request.code
                assert account(sim) == {"connections": 2, "subscriptions": 5}
                await bus.quotes(SYMBOLS[5])
                with pytest.raises(SubscriptionLimitError, match="Nothing was sent"):
                    await bus.quotes(SYMBOLS[6])
                assert account(sim) == {"connections": 2, "subscriptions": 6}
                portfolio = sim.demo.portfolios[0]
                await bus.orders(portfolio)
                await bus.trading.place_market(portfolio, "SBER", "buy", 1)
                assert account(sim) == {"connections": 4, "subscriptions": 7}
        finally:
            await gw.aclose()


async def test_the_budget_goes_to_the_factory_and_must_match_a_started_client(
    sim: Simulator, nats_server: NatsServer
) -> None:
    """The limits given to a Gateway are passed to its client factory and reported by
    ``budget()``; a started client with other limits, a factory that cannot take them and a
    reserve not below the connections are refused when the gateway is made."""
    calls: list[dict[str, int]] = []

    def factory(**limits: int) -> AlorClient:
        calls.append(limits)
        return AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST, **limits)

    limits = {"max_connections": 4, "max_subscriptions_per_connection": 3}
    async with Gateway(factory, nats_server.url, reserve_connections=1, **limits) as gw:
        assert calls == [{**limits, "reserve_connections": 1}]
        budget = gw.budget()
        assert budget["max_connections"] == 4 and budget["max_subscriptions"] == 12
        assert budget["max_subscriptions_per_connection"] == 3
        assert budget["reserve_connections"] == 1
    plain = functools.partial(AlorClient, sim.demo_refresh_token, base_url=sim.url)
    async with AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as started:
        with pytest.raises(ConfigurationError, match="another budget: max_connections=10"):
            Gateway(started, nats_server.url, max_connections=4)
        Gateway(started, nats_server.url, max_connections=10, reserve_connections=2)
    with pytest.raises(ConfigurationError, match="keyword arguments"):
        Gateway(lambda: plain(), nats_server.url, max_connections=4)
    with pytest.raises(ConfigurationError, match="below max_connections"):
        Gateway(plain, nats_server.url, max_connections=2, reserve_connections=2)
