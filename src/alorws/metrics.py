"""Prometheus metrics for an :class:`~alorws.client.AlorClient` (prometheus-client).

::

    server = start_metrics(client, 9108)      # http://127.0.0.1:9108/metrics
    ...
    server.close()

A custom collector reads ``client.stats()`` (and ``client.trading.stats()`` once the trading
client exists) **at scrape time**: nothing is counted per message, so metrics cost the reader
nothing. The CLI's ``--metrics-port N`` does the same for its live commands.

Exported families (``alorws_`` prefix):

* ``lane_messages_total``, ``lane_bytes_total``, ``lane_reconnects_total``,
  ``lane_connect_failures_total``, ``lane_subscriptions`` (labels ``lane``, ``kind``);
  ``connections``, ``subscriptions``;
* ``restore_duration_seconds`` (histogram): every change of a lane's ``last_restore_seconds``
  seen at a scrape (or a :meth:`ClientCollector.poll`) is observed once; two restores of one
  lane between polls count once;
* ``stream_buffer_depth``, ``stream_conflated_total``, ``stream_dropped_total``
  (label ``stream``);
* ``token_refreshes_total``, ``token_refresh_failures_total``, ``token_expires_in_seconds``;
* ``orders_total`` (label ``result``: acked, rejected, unknown) and ``order_latency_seconds``
  (histogram of command round trips) once the client placed an order.

A gateway (:func:`start_gateway_metrics`, ``alorws gateway --metrics-port N``) exports the
families of the ALOR client it serves (none on a standby) plus ``alorws_gateway_``:

* ``leader`` (1 while this gateway serves; label ``node``), ``leaderships_total``,
  ``takeovers_total`` (leads taken over from another gateway);
* ``consumers``, ``handles`` (consumer subscriptions), ``subscriptions`` (aggregated ALOR
  subscriptions) and ``subscription_budget``; ``connections`` and ``connection_budget``;
* ``published_total`` per data subject (label ``subject``, ``kind``; while the subscription
  lives: use ``rate()``), ``holders`` per subject, ``messages_total`` by ``kind`` (market,
  account; over the gateway's life);
* ``requests_total`` (label ``op``: subscribe, unsubscribe, renew, order, order_retry),
  ``expired_consumers_total``, ``errors_total``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from ._deps import require


require("prometheus_client", "the Prometheus exporter")

from prometheus_client import CollectorRegistry, start_http_server  # noqa: E402
from prometheus_client.core import (  # noqa: E402
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector  # noqa: E402


__all__ = [
    "ClientCollector",
    "GatewayCollector",
    "MetricsServer",
    "start_gateway_metrics",
    "start_metrics",
]

#: Restore durations (seconds): a reconnect-and-resubscribe takes from a few ms to a backoff.
RESTORE_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Order round trips (seconds).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class _OrderLatencies(Protocol):
    def latencies_us(self) -> list[int]: ...


class StatsSource(Protocol):
    """What the collector reads: :class:`~alorws.client.AlorClient` fits. ``trading`` is read
    only once ``stats()["orders"]`` says the order client exists (reading it creates one)."""

    def stats(self) -> dict[str, Any]: ...

    @property
    def trading(self) -> _OrderLatencies: ...


class _Histogram:
    """A cumulative histogram kept by the collector (thread-safe, no per-message cost)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip([*map(_le, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


def _le(bound: float) -> str:
    return repr(float(bound))


class ClientCollector(Collector):
    """Turns ``client.stats()`` into Prometheus families when scraped."""

    def __init__(self, client: StatsSource) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._restores = _Histogram(RESTORE_BUCKETS)
        self._seen_restore: dict[int, tuple[int, float]] = {}
        self._latency = _Histogram(LATENCY_BUCKETS)
        self._seen_replies = 0

    # -- histograms fed from the stats ---------------------------------------------------------

    def poll(self) -> dict[str, Any]:
        """Read the stats now and fold new restores and order latencies into the histograms.

        Called on every scrape; call it more often (e.g. from a display loop) so that
        restores between scrapes are not merged. Returns the client's stats.
        """
        stats = self._client.stats()
        with self._lock:
            for lane in stats.get("lanes", ()):
                seconds = lane.get("last_restore_seconds")
                reconnects = int(lane.get("reconnects", 0))
                if seconds is None or reconnects == 0:  # the first connect is not a restore
                    continue
                key = (reconnects, float(seconds))
                if self._seen_restore.get(int(lane["id"])) != key:
                    self._seen_restore[int(lane["id"])] = key
                    self._restores.observe(float(seconds))
            self._poll_orders(stats.get("orders"))
        return stats

    def _poll_orders(self, orders: dict[str, Any] | None) -> None:
        if orders is None:  # no order client yet: reading ``trading`` would create one
            return
        samples = self._client.trading.latencies_us()
        replies = int(orders.get("acks", 0)) + int(orders.get("rejections", 0))
        new = min(replies - self._seen_replies, len(samples))
        self._seen_replies = replies
        for micros in samples[len(samples) - new :] if new > 0 else ():
            self._latency.observe(micros / 1e6)

    # -- Collector -----------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked collector: families are produced at scrape time

    def collect(self) -> Iterator[Metric]:
        stats = self.poll()
        yield from self._lane_families(stats)
        yield from self._stream_families(stats)
        yield from self._token_families(stats)
        with self._lock:
            yield self._restores.family(
                "alorws_restore_duration_seconds",
                "Time from a disconnect to the restored subscriptions, per restore.",
            )
            ostats = stats.get("orders")
            if ostats is not None:
                orders = CounterMetricFamily(
                    "alorws_orders", "Order commands by outcome.", labels=["result"]
                )
                orders.add_metric(["acked"], float(ostats.get("acks", 0)))
                orders.add_metric(["rejected"], float(ostats.get("rejections", 0)))
                orders.add_metric(["unknown"], float(ostats.get("unknown", 0)))
                yield orders
            yield self._latency.family(
                "alorws_order_latency_seconds", "Order command round trip (send to reply)."
            )

    def _lane_families(self, stats: dict[str, Any]) -> Iterator[Metric]:
        labels = ["lane", "kind"]
        messages = CounterMetricFamily(
            "alorws_lane_messages", "Frames received per connection.", labels=labels
        )
        nbytes = CounterMetricFamily(
            "alorws_lane_bytes", "Bytes received per connection.", labels=labels
        )
        reconnects = CounterMetricFamily(
            "alorws_lane_reconnects", "Reconnects per connection.", labels=labels
        )
        failures = CounterMetricFamily(
            "alorws_lane_connect_failures", "Failed connection attempts.", labels=labels
        )
        subs = GaugeMetricFamily(
            "alorws_lane_subscriptions", "Subscriptions per connection.", labels=labels
        )
        for lane in stats.get("lanes", ()):
            values = [str(lane.get("id")), str(lane.get("kind"))]
            messages.add_metric(values, float(lane.get("messages", 0)))
            nbytes.add_metric(values, float(lane.get("bytes", 0)))
            reconnects.add_metric(values, float(lane.get("reconnects", 0)))
            failures.add_metric(values, float(lane.get("connect_failures", 0)))
            subs.add_metric(values, float(lane.get("subscriptions", 0)))
        yield from (messages, nbytes, reconnects, failures, subs)
        yield GaugeMetricFamily(
            "alorws_connections", "Open /ws connections.", value=float(stats.get("connections", 0))
        )
        yield GaugeMetricFamily(
            "alorws_subscriptions",
            "Server subscriptions.",
            value=float(stats.get("subscriptions", 0)),
        )

    def _stream_families(self, stats: dict[str, Any]) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "alorws_stream_buffer_depth",
            "Messages waiting in a stream's buffer.",
            labels=["stream"],
        )
        conflated = CounterMetricFamily(
            "alorws_stream_conflated",
            "Messages replaced by newer ones (latest policy).",
            labels=["stream"],
        )
        dropped = CounterMetricFamily(
            "alorws_stream_dropped", "Messages lost to buffer overflow.", labels=["stream"]
        )
        seen: set[str] = set()
        for stream in stats.get("streams", ()):
            name = str(stream.get("name"))
            if name in seen:  # de-duplicated streams share a name: label them apart
                name = f"{name} #{stream.get('guid')}"
            seen.add(name)
            depth.add_metric([name], float(stream.get("depth", 0)))
            conflated.add_metric([name], float(stream.get("conflated", 0)))
            dropped.add_metric([name], float(stream.get("dropped", 0)))
        yield from (depth, conflated, dropped)

    def _token_families(self, stats: dict[str, Any]) -> Iterator[Metric]:
        tokens = stats.get("tokens") or {}
        yield CounterMetricFamily(
            "alorws_token_refreshes",
            "Access token refreshes.",
            value=float(tokens.get("refreshes", 0)),
        )
        yield CounterMetricFamily(
            "alorws_token_refresh_failures",
            "Access token refreshes that failed (after retries).",
            value=float(tokens.get("failures", 0)),
        )
        expires = tokens.get("expires_in")
        if expires is not None:
            yield GaugeMetricFamily(
                "alorws_token_expires_in_seconds",
                "Seconds until the access token expires.",
                value=float(expires),
            )


class GatewaySource(Protocol):
    """What the gateway collector reads: :class:`~alorws.gateway.Gateway` fits."""

    def stats(self) -> dict[str, Any]: ...

    @property
    def active_client(self) -> Any: ...


class _ActiveClient:
    """The gateway's current ALOR client as a stats source (empty on a standby)."""

    def __init__(self, gateway: GatewaySource) -> None:
        self._gateway = gateway

    def stats(self) -> dict[str, Any]:
        client = self._gateway.active_client
        return {} if client is None else dict(client.stats())

    @property
    def trading(self) -> _OrderLatencies:
        client = self._gateway.active_client
        return _NoOrders() if client is None else client.trading  # None: lost the lead meanwhile


class _NoOrders:
    def latencies_us(self) -> list[int]:
        return []


class GatewayCollector(ClientCollector):
    """A gateway's families (``alorws_gateway_*``) and those of the client it serves."""

    def __init__(self, gateway: GatewaySource) -> None:
        super().__init__(_ActiveClient(gateway))
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        stats = self._gateway.stats()
        yield from self._gateway_families(stats)
        yield from super().collect()

    def _gateway_families(self, stats: dict[str, Any]) -> Iterator[Metric]:
        leader = GaugeMetricFamily(
            "alorws_gateway_leader",
            "1 while this gateway serves (holds the lead).",
            labels=["node"],
        )
        leader.add_metric([str(stats.get("node", ""))], 1.0 if stats.get("leader") else 0.0)
        yield leader
        yield CounterMetricFamily(
            "alorws_gateway_leaderships",
            "Times this gateway started serving.",
            value=float(stats.get("leaderships", 0)),
        )
        yield CounterMetricFamily(
            "alorws_gateway_takeovers",
            "Times this gateway took the lead over from another gateway.",
            value=float(stats.get("takeovers", 0)),
        )
        gauges = (
            ("consumers", "Consumers holding a lease.", stats.get("consumers", 0)),
            ("handles", "Consumer subscriptions (handles).", stats.get("handles", 0)),
            ("subscriptions", "Aggregated ALOR subscriptions.", stats.get("subscriptions", 0)),
        )
        for name, doc, value in gauges:
            yield GaugeMetricFamily(f"alorws_gateway_{name}", doc, value=float(value))
        budget = stats.get("budget") or {}
        yield GaugeMetricFamily(
            "alorws_gateway_subscription_budget",
            "Subscriptions the ALOR session may hold (connections x per connection).",
            value=float(budget.get("max_subscriptions", 0)),
        )
        yield GaugeMetricFamily(
            "alorws_gateway_connections",
            "ALOR connections of the session (/ws and /cws).",
            value=float(budget.get("connections", 0)),
        )
        yield GaugeMetricFamily(
            "alorws_gateway_connection_budget",
            "ALOR connections the session may open.",
            value=float(budget.get("max_connections", 0)),
        )
        published = CounterMetricFamily(
            "alorws_gateway_published",
            "Messages published per data subject (while its subscription lives).",
            labels=["subject", "kind"],
        )
        holders = GaugeMetricFamily(
            "alorws_gateway_holders",
            "Consumer handles holding each aggregated subscription.",
            labels=["subject"],
        )
        for up in stats.get("upstreams", ()):
            subject = str(up.get("subject"))
            kind = "account" if ".acct." in subject else "market"
            published.add_metric([subject, kind], float(up.get("published", 0)))
            holders.add_metric([subject], float(up.get("holders", 0)))
        yield published
        yield holders
        messages = CounterMetricFamily(
            "alorws_gateway_messages", "Messages published, by kind.", labels=["kind"]
        )
        messages.add_metric(["market"], float(stats.get("published_market", 0)))
        messages.add_metric(["account"], float(stats.get("published_account", 0)))
        yield messages
        requests = CounterMetricFamily(
            "alorws_gateway_requests", "Requests answered, by operation.", labels=["op"]
        )
        for op, key in (
            ("subscribe", "subscribe"),
            ("unsubscribe", "unsubscribe"),
            ("renew", "renew"),
            ("order", "orders"),
            ("order_retry", "order_retries"),
        ):
            requests.add_metric([op], float(stats.get(key, 0)))
        yield requests
        yield CounterMetricFamily(
            "alorws_gateway_expired_consumers",
            "Consumers released because their lease ran out.",
            value=float(stats.get("expired", 0)),
        )
        yield CounterMetricFamily(
            "alorws_gateway_errors",
            "Requests answered with an error.",
            value=float(stats.get("errors", 0)),
        )


class MetricsServer:
    """A running ``/metrics`` endpoint (a daemon thread); :meth:`close` stops it."""

    def __init__(
        self, collector: ClientCollector, registry: CollectorRegistry, port: int, addr: str
    ):
        self.collector = collector
        self.registry = registry
        self._server, self._thread = start_http_server(port, addr=addr, registry=registry)
        self.host = addr
        self.port: int = int(self._server.server_port)

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=2.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}>"


def start_metrics(client: StatsSource, port: int, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve ``client``'s metrics at ``http://addr:port/metrics`` (port 0: a free one).

    Uses its own registry, so several clients (or tests) never collide in the global one.
    """
    registry = CollectorRegistry(auto_describe=False)
    collector = ClientCollector(client)
    registry.register(collector)
    return MetricsServer(collector, registry, port, addr)


def start_gateway_metrics(
    gateway: GatewaySource, port: int, addr: str = "127.0.0.1"
) -> MetricsServer:
    """Serve a gateway's metrics (see the module docstring) at ``http://addr:port/metrics``."""
    registry = CollectorRegistry(auto_describe=False)
    collector = GatewayCollector(gateway)
    registry.register(collector)
    return MetricsServer(collector, registry, port, addr)
