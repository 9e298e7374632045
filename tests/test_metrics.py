"""Prometheus metrics: the endpoint serves valid text with the listed metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from alorws.client import AlorClient
from alorws.metrics import start_metrics
from alorws.protocol.backoff import Backoff
from alorws.sim.app import Simulator

from ._sim import DAY


FAST = Backoff(base=0.01, cap=0.05)

EXPECTED = {
    "alorws_lane_messages": "counter",
    "alorws_lane_bytes": "counter",
    "alorws_lane_reconnects": "counter",
    "alorws_lane_subscriptions": "gauge",
    "alorws_connections": "gauge",
    "alorws_subscriptions": "gauge",
    "alorws_restore_duration_seconds": "histogram",
    "alorws_stream_buffer_depth": "gauge",
    "alorws_stream_conflated": "counter",
    "alorws_stream_dropped": "counter",
    "alorws_token_refreshes": "counter",
    "alorws_orders": "counter",
    "alorws_order_latency_seconds": "histogram",
}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(port=0, day_order_lifetime=DAY, seed=7, rate=50.0, history_days=1) as s:
        yield s


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AlorClient]:
    async with AlorClient(
        sim.demo_refresh_token, base_url=sim.url, backoff=FAST, ping_interval=1.0, ping_timeout=1.0
    ) as c:
        yield c


async def _scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return await resp.text()


def _samples(text: str) -> dict[str, dict[str, list[tuple[dict[str, str], float]]]]:
    out: dict[str, dict[str, list[tuple[dict[str, str], float]]]] = {}
    for family in text_string_to_metric_families(text):
        by_name = out.setdefault(family.name, {"__type__": [({"type": family.type}, 0.0)]})
        for s in family.samples:
            by_name.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


async def test_metrics_endpoint_serves_valid_prometheus_text(
    sim: Simulator, client: AlorClient
) -> None:
    """Scrape a client with streams, an order and a restore behind it: valid text, every family."""
    portfolio = sim.demo.portfolios[0]
    quotes = await client.quotes("SBER")
    orders = await client.orders(portfolio)
    server = start_metrics(client, 0)
    try:
        assert server.port > 0
        first = _samples(await _scrape(server.url))
        assert first["alorws_lane_messages"]["alorws_lane_messages_total"]
        assert "alorws_orders" not in first  # no trading client yet: nothing created by a scrape
        assert all(
            v == 0
            for _, v in first["alorws_restore_duration_seconds"][
                "alorws_restore_duration_seconds_count"
            ]
        )

        ack = await client.trading.place_limit(portfolio, "SBER", "buy", 1, 300.0)
        await client.trading.cancel(ack.order_number, portfolio)
        restored = asyncio.Event()
        quotes.on_event(lambda e: restored.set() if e.kind == "restored" else None)
        reader = asyncio.create_task(quotes.get_batch())
        sim.faults.drop(code=1006, kind="ws")
        async with asyncio.timeout(10):
            while not restored.is_set():
                if reader.done():
                    reader = asyncio.create_task(quotes.get_batch())
                await asyncio.wait([reader], timeout=0.05)
        reader.cancel()

        text = await _scrape(server.url)
        families = _samples(text)
        for name, kind in EXPECTED.items():
            assert name in families, name
            assert families[name]["__type__"][0][0]["type"] == kind, name
        assert (
            families["alorws_restore_duration_seconds"]["alorws_restore_duration_seconds_count"][0][
                1
            ]
            >= 1
        )
        latency = families["alorws_order_latency_seconds"]
        assert latency["alorws_order_latency_seconds_count"][0][1] == 2
        assert latency["alorws_order_latency_seconds_sum"][0][1] > 0
        acked = {
            labels["result"]: v for labels, v in families["alorws_orders"]["alorws_orders_total"]
        }
        assert acked["acked"] == 2
        lanes = families["alorws_lane_reconnects"]["alorws_lane_reconnects_total"]
        assert sum(v for _, v in lanes) >= 1
        assert {labels["kind"] for labels, _ in lanes} == {"market", "account"}
        streams = families["alorws_stream_buffer_depth"]["alorws_stream_buffer_depth"]
        assert {labels["stream"] for labels, _ in streams} >= {"quotes SBER", f"orders {portfolio}"}
        assert families["alorws_token_refreshes"]["alorws_token_refreshes_total"][0][1] >= 1
        # A second scrape does not count the same restore or the same orders again.
        again = _samples(await _scrape(server.url))
        assert (
            again["alorws_order_latency_seconds"]["alorws_order_latency_seconds_count"][0][1] == 2
        )
    finally:
        server.close()
        await orders.aclose()
        await quotes.aclose()


def test_each_server_has_its_own_registry() -> None:
    """Two endpoints never collide (no global registry): each one scrapes its own client."""

    class Fake:
        def __init__(self, n: int) -> None:
            self.n = n

        def stats(self) -> dict[str, object]:
            lane = {"id": 1, "kind": "market", "messages": self.n, "reconnects": 0}
            return {
                "lanes": [lane],
                "connections": 1,
                "subscriptions": 1,
                "streams": [],
                "tokens": {},
            }

    with start_metrics(Fake(3), 0) as a, start_metrics(Fake(5), 0) as b:
        values = []
        for server in (a, b):
            text = server.registry.collect()
            fam = next(f for f in text if f.name == "alorws_lane_messages")
            values.append(fam.samples[0].value)
        assert values == [3, 5]
