"""The gateway's Prometheus export: publish counts per subject, consumers,
subscriptions against the budget, leader state and takeovers, plus the client's families."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from alorws.bus import BusClient
from alorws.client import AlorClient
from alorws.gateway import Gateway, NatsServer
from alorws.metrics import start_gateway_metrics
from alorws.sim.app import Simulator

from .conftest import FAST, LEASE


EXPECTED = {
    "alorws_gateway_leader": "gauge",
    "alorws_gateway_leaderships": "counter",
    "alorws_gateway_takeovers": "counter",
    "alorws_gateway_consumers": "gauge",
    "alorws_gateway_handles": "gauge",
    "alorws_gateway_subscriptions": "gauge",
    "alorws_gateway_subscription_budget": "gauge",
    "alorws_gateway_connections": "gauge",
    "alorws_gateway_connection_budget": "gauge",
    "alorws_gateway_published": "counter",
    "alorws_gateway_holders": "gauge",
    "alorws_gateway_messages": "counter",
    "alorws_gateway_requests": "counter",
    "alorws_gateway_expired_consumers": "counter",
    "alorws_gateway_errors": "counter",
}


Families = dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]


async def scrape(url: str) -> Families:
    """family name -> (type, [(sample name, labels, value)])."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        f.name: (f.type, [(s.name, dict(s.labels), s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    }


def value(families: Families, name: str) -> float:
    samples = families[name][1]
    assert len(samples) == 1, samples
    return samples[0][2]


async def test_gateway_metrics_export_every_family(sim: Simulator, nats_server: NatsServer) -> None:
    """A leader with two consumers sharing one quotes subscription, and a standby: the leader
    exports the gateway families (with the client's), the standby says it is not leading."""

    def make() -> AlorClient:
        return AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST)

    async with (
        Gateway(make, nats_server.url, lease_seconds=LEASE, leader_ttl=2.0, node="a") as leader,
        Gateway(make, nats_server.url, lease_seconds=LEASE, leader_ttl=2.0, node="b") as standby,
        BusClient(nats_server.url) as one,
        BusClient(nats_server.url) as two,
    ):
        lead_server = start_gateway_metrics(leader, 0)
        standby_server = start_gateway_metrics(standby, 0)
        try:
            q1, q2 = await one.quotes("SBER"), await two.quotes("SBER")
            async with asyncio.timeout(5.0):
                while leader.stats()["published_market"] < 3:
                    sim.burst("SBER", 5)
                    await asyncio.sleep(0.05)
            families = await scrape(lead_server.url)
            for name, kind in EXPECTED.items():
                assert name in families, name
                assert families[name][0] == kind, name
            assert "alorws_lane_messages" in families  # the served client's own families
            assert families["alorws_gateway_leader"][1] == [
                ("alorws_gateway_leader", {"node": "a"}, 1.0)
            ]
            assert value(families, "alorws_gateway_consumers") == 2
            assert value(families, "alorws_gateway_handles") == 2
            assert value(families, "alorws_gateway_subscriptions") == 1
            assert value(families, "alorws_gateway_subscription_budget") == 10 * 5000
            assert value(families, "alorws_gateway_connection_budget") == 10
            assert value(families, "alorws_gateway_connections") >= 1
            assert value(families, "alorws_gateway_takeovers") == 0
            (name, labels, published) = families["alorws_gateway_published"][1][0]
            assert name == "alorws_gateway_published_total"
            assert labels["subject"] == q1.subject == q2.subject and labels["kind"] == "market"
            assert published >= 3
            holders = families["alorws_gateway_holders"][1]
            assert holders == [("alorws_gateway_holders", {"subject": q1.subject}, 2.0)]
            requests = {lb["op"]: v for _, lb, v in families["alorws_gateway_requests"][1]}
            assert requests["subscribe"] == 2

            idle = await scrape(standby_server.url)
            assert idle["alorws_gateway_leader"][1] == [
                ("alorws_gateway_leader", {"node": "b"}, 0.0)
            ]
            assert value(idle, "alorws_gateway_subscriptions") == 0
            assert value(idle, "alorws_gateway_connection_budget") == 0
        finally:
            lead_server.close()
            standby_server.close()
