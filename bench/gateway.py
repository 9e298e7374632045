"""Fan-out through the NATS gateway vs. a direct ``AlorClient``, side by side in one run.

The fast raw feed (``bench/_feed.py``, its own process) sends TV-07-like Simple quote frames. Two
stacks read them, one at a time, in the same run:

* **direct**: ``AlorClient`` + ``client.quotes(policy="queue")`` in this process (the baseline);
* **gateway**: a ``Gateway`` in its own process (``--serve-gateway``, started by this script) with
  ``market_policy="queue"`` (lossless: every frame is published) on a real nats-server with
  JetStream; N ``BusClient`` consumers in this process, each with its own NATS connection, read
  ``bus.quotes(policy="queue")`` -- the same typed ``Quote``s.

Two scenarios:

1. **fan-out throughput**: ``--frames`` frames blasted as fast as the socket takes them. For the
   gateway all N consumers subscribe first (the feed answers with no data), then the gateway's
   client drops its connection and restores the subscription, which starts the blast; every
   consumer reads all ``--frames``. delivered/s = N x frames / (feed's first write -> the last
   consumer has its last frame); per consumer = frames / (first write -> its last frame). Also the
   gateway process's CPU per frame (Linux ``/proc``) and this process's (the consumers') CPU per
   message delivered;
2. **added latency**: ``--latency-rate`` frames/s for ``--latency-seconds``, each stamped by the
   feed with ``perf_counter_ns`` as it is written (CLOCK_MONOTONIC: one clock for every process);
   latency = the consumer has the typed quote - stamp; added = gateway - direct percentile.

    python bench/gateway.py [--frames 20000] [--consumers 1,5,20] [--latency-rate 2000]
                            [--latency-seconds 3] [--latency-consumers 1,5] [--repeat 1]

Nothing is pinned: four busy processes (feed, nats-server, gateway, consumers) share the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import nats

from _feed import FeedProcess, percentile
from alorws.bus import BusClient
from alorws.client import AlorClient
from alorws.gateway import Gateway, NatsServer
from alorws.protocol.backoff import Backoff


SYMBOL = "LKOH"
FAST_BACKOFF = Backoff(base=0.01, cap=0.05)
DROP = "bench.gateway.drop"
STATS = "bench.gateway.stats"


# -- the gateway process ------------------------------------------------------------------------


async def serve_gateway(nats_url: str, feed_url: str) -> None:
    """The gateway under test, plus two bench hooks on NATS: drop the ALOR connection (its
    restore starts the feed's next stream) and report stats."""
    async with (
        AlorClient("bench", base_url=feed_url, backoff=FAST_BACKOFF) as client,
        Gateway(client, nats_url, lease_seconds=60.0, market_policy="queue") as gw,
    ):
        nc = await nats.connect(nats_url)

        async def on_drop(msg: Any) -> None:
            await client.drop_connections()
            await msg.respond(b"ok")

        async def on_stats(msg: Any) -> None:
            st = gw.stats()
            await msg.respond(json.dumps({"published": st["published_market"]}).encode())

        await nc.subscribe(DROP, cb=on_drop)
        await nc.subscribe(STATS, cb=on_stats)
        await nc.flush()
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
        await nc.close()


class GatewayProcess:
    """``bench/gateway.py --serve-gateway`` in a subprocess."""

    def __init__(self, nats_url: str, feed_url: str) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve-gateway", nats_url, feed_url]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"the gateway did not start: {line!r}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the gateway process so far (Linux), else None."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# -- stacks -----------------------------------------------------------------------------------


async def direct_run(feed: FeedProcess, n: int, sink: list[int] | None = None) -> int:
    """AlorClient reads ``n`` quotes; returns when it has the last (perf_counter_ns)."""
    async with (
        AlorClient("bench", base_url=feed.url, backoff=FAST_BACKOFF) as client,
        client.quotes(SYMBOL, policy="queue", max_buffer=n + 16) as stream,
    ):
        return await _read(stream, n, sink)


async def _read(stream: Any, n: int, sink: list[int] | None) -> int:
    got = 0
    clock = time.perf_counter_ns
    while got < n:
        batch = await stream.get_batch(1000)
        if sink is not None:
            now = clock()
            sink.extend(now - q.ob_ms_timestamp for q in batch)
        got += len(batch)
    return clock()


async def gateway_run(
    feed: FeedProcess,
    nc: Any,
    nats_url: str,
    consumers: int,
    n: int,
    cfg: dict[str, Any],
    sinks: list[list[int]] | None = None,
) -> list[int]:
    """``consumers`` BusClients subscribe (no data yet), then the gateway's restore starts the
    feed's stream; returns when each consumer has its last quote."""
    feed.config(mode="none")
    buses = [BusClient(nats_url) for _ in range(consumers)]
    try:
        for bus in buses:
            await bus.start()
        streams = [bus.quotes(SYMBOL, policy="queue", max_buffer=n + 16) for bus in buses]
        for s in streams:
            await s.subscribe()
        feed.config(n=n, **cfg)
        readers = [
            asyncio.ensure_future(_read(s, n, None if sinks is None else sinks[i]))
            for i, s in enumerate(streams)
        ]
        await nc.request(DROP, b"", timeout=10)
        async with asyncio.timeout(120):
            return list(await asyncio.gather(*readers))
    finally:
        for bus in buses:
            await bus.aclose()


# -- scenarios --------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:,.0f}"  # NaN: not measured


async def scenario_throughput(
    feed: FeedProcess, gw: GatewayProcess, nc: Any, nats_url: str, args: argparse.Namespace
) -> None:
    n = args.frames
    # name -> [(total/s, per/s, gateway CPU µs/frame, consumers' CPU µs/message)]
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    order = [("direct AlorClient", 0)] + [
        (f"gateway -> {c} BusClient(s)", c) for c in args.consumers
    ]
    for _ in range(args.repeat):  # round robin: drift hits every stack alike
        for name, consumers in order:
            gc.collect()
            if consumers == 0:
                feed.config(mode="blast", n=n)
                end = await direct_run(feed, n)
                start = feed.stats()["t_first_ns"]
                rate = n / (end - start) * 1e9
                rows.setdefault(name, []).append((rate, rate, float("nan"), float("nan")))
                continue
            cpu0, own0 = gw.cpu_seconds(), time.process_time()
            ends = await gateway_run(feed, nc, nats_url, consumers, n, {"mode": "blast"})
            cpu1, own1 = gw.cpu_seconds(), time.process_time()
            start = feed.stats()["t_first_ns"]
            total = consumers * n / (max(ends) - start) * 1e9
            per = statistics.median(n / (e - start) * 1e9 for e in ends)
            cpu = (cpu1 - cpu0) / n * 1e6 if cpu0 is not None and cpu1 is not None else float("nan")
            own = (own1 - own0) / (consumers * n) * 1e6
            rows.setdefault(name, []).append((total, per, cpu, own))

    def med(name: str, k: int) -> float:
        return statistics.median(r[k] for r in rows[name])

    base = med(order[0][0], 0)
    print(
        f"\n1. Fan-out throughput: {n:,} quotes blasted per run, median of {args.repeat}; "
        "delivered = sum over the consumers"
    )
    head = (
        f"{'stack':<30} {'delivered/s':>12} {'x direct':>9} {'per consumer/s':>15} "
        f"{'x direct':>9} {'gateway CPU µs/frame':>21} {'consumers CPU µs/msg':>21}"
    )
    print(head)
    print("-" * len(head))
    for name, _ in order:
        total, per, cpu, own = (med(name, k) for k in range(4))
        print(
            f"{name:<30} {_fmt(total):>12} {total / base:>8.2f}x {_fmt(per):>15} "
            f"{per / base:>8.2f}x {'-' if cpu != cpu else f'{cpu:.1f}':>21} "
            f"{'-' if own != own else f'{own:.1f}':>21}"
        )


async def scenario_latency(
    feed: FeedProcess, nc: Any, nats_url: str, args: argparse.Namespace
) -> None:
    n = int(args.latency_rate * args.latency_seconds)
    skip = min(n // 5, int(args.latency_rate * 0.2))  # warm-up: the first 0.2 s
    cfg = {"mode": "paced", "rate": args.latency_rate, "stamp": True}
    results: dict[str, list[float]] = {}
    order = [("direct AlorClient", 0)] + [
        (f"gateway -> {c} BusClient(s)", c) for c in args.latency_consumers
    ]
    for _ in range(args.repeat):
        for name, consumers in order:
            gc.collect()
            if consumers == 0:
                sink: list[int] = []
                feed.config(n=n, **cfg)
                await direct_run(feed, n, sink)
                samples = sink[skip:]
            else:
                sinks: list[list[int]] = [[] for _ in range(consumers)]
                await gateway_run(feed, nc, nats_url, consumers, n, cfg, sinks)
                samples = [x for s in sinks for x in s[skip:]]
            results.setdefault(name, []).extend(x / 1000 for x in samples)
    print(
        f"\n2. Latency: {args.latency_rate:,.0f} quotes/s for {args.latency_seconds:g} s per "
        "stack; feed stamp -> typed quote in the consumer, µs (every consumer's samples)"
    )
    head = f"{'stack':<30} {'p50':>9} {'p99':>9} {'added p50':>10} {'added p99':>10}"
    print(head)
    print("-" * len(head))
    base = sorted(results[order[0][0]])
    b50, b99 = percentile(base, 50), percentile(base, 99)
    for name, _ in order:
        values = sorted(results[name])
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(f"{name:<30} {p50:>9,.0f} {p99:>9,.0f} {p50 - b50:>+10,.0f} {p99 - b99:>+10,.0f}")


async def run(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    with FeedProcess() as feed:
        async with NatsServer() as server:
            gw = GatewayProcess(server.url, feed.url)
            nc = await nats.connect(server.url)
            try:
                print(f"feed {feed.url}, nats {server.url}, gateway pid {gw.proc.pid}")
                if "throughput" in args.only:
                    await scenario_throughput(feed, gw, nc, server.url, args)
                if "latency" in args.only:
                    await scenario_latency(feed, nc, server.url, args)
            finally:
                await nc.close()
                gw.close()
    print(f"\n({time.monotonic() - t0:.0f} s)")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-gateway":
        asyncio.run(serve_gateway(sys.argv[2], sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=20_000, help="frames per throughput run")
    ap.add_argument("--consumers", type=_ints, default=[1, 5, 20], help="e.g. 1,5,20")
    ap.add_argument("--repeat", type=int, default=1, help="runs per stack (median)")
    ap.add_argument("--latency-rate", type=float, default=2_000.0)
    ap.add_argument("--latency-seconds", type=float, default=3.0, help="per stack")
    ap.add_argument("--latency-consumers", type=_ints, default=[1, 5])
    ap.add_argument("--only", default="throughput,latency", help="throughput,latency")
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
