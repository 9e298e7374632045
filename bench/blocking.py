"""The blocking facade (``alorws.Client``) against the async client on the same feed.

    python bench/blocking.py [--frames 100000] [--repeat 5] [--latency-rate 5000]
                             [--latency-seconds 2] [--latency-rounds 6] [--only throughput,latency]
                             [--no-pin] [--loop uvloop|asyncio]

One quote stream (``queue`` policy, lossless) on a fresh connection per run, fed by
``bench/_feed.py``, read one message at a time by:

* **async get** (the base): ``AlorClient``, ``await stream.get()`` in the consumer's loop;
* **blocking get**: ``Client``, ``stream.get()`` in a plain thread; a parked ``get`` is woken
  by the I/O thread directly, through the buffer's lock (:meth:`StreamBuffer.wait`);
* **blocking get via a relay loop**: the design not taken, for comparison: each ``get`` hands
  ``await stream.get()`` to the facade's own loop and blocks on its future (one more event loop
  and thread hop per message).

1. Throughput: ``--frames`` blasted per run, ``--repeat`` rounds round robin; msgs/s of the
   median run and, paired per round, the rate over the base's of the same round.
2. Added latency: frames paced at ``--latency-rate``, stamped by the feed; stamp -> model in the
   consumer's hands; p50/p99 per slice minus the base's slice of the same round, median over the
   ``--latency-rounds`` interleaved slices.

The bench process is pinned to CPU 0 and the feed to CPU 1 (``--no-pin`` leaves it to the OS).
Every event loop (the base's consumer loop, the clients' I/O loops, the facade's loop) runs on
uvloop where installed, or asyncio's with ``--loop asyncio``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _feed import LAST_VOLUME, FeedProcess, percentile, pin
from alorws import AlorClient, Client
from alorws.protocol.backoff import Backoff


SYMBOL = "LKOH"
FAST_BACKOFF = Backoff(base=0.01, cap=0.05)
BASE = "async get (base)"
BLOCKING = "blocking get"
RELAY = "blocking get via a relay loop"

Consume = Callable[[Any], None]


@dataclass
class Run:
    frames: int
    end_ns: int
    start_ns: int = 0
    cpu_us: float = 0.0

    @property
    def rate(self) -> float:
        return self.frames / max(self.end_ns - self.start_ns, 1) * 1e9


def _options(feed: FeedProcess) -> dict[str, Any]:
    return {"base_url": feed.url, "backoff": FAST_BACKOFF}


def async_stack(feed: FeedProcess, n: int, consume: Consume) -> int:
    """AlorClient; the consumer awaits get() in its own loop (a fresh one per run)."""

    async def main() -> int:
        async with (
            AlorClient("bench", **_options(feed)) as client,
            client.quotes(SYMBOL, policy="queue", max_buffer=n + 16) as stream,
        ):
            while True:
                q = await stream.get()
                consume(q)
                if q.volume == LAST_VOLUME:
                    return time.perf_counter_ns()

    return asyncio.run(main())


def blocking_stack(feed: FeedProcess, n: int, consume: Consume, relay: bool = False) -> int:
    """Client; the consumer calls get() in this (plain) thread. ``relay``: each get goes
    through the facade's loop instead (the alternative design, for comparison)."""
    with (
        Client("bench", **_options(feed)) as client,
        client.quotes(SYMBOL, policy="queue", max_buffer=n + 16) as stream,
    ):
        get: Callable[[], Any] = stream.get
        if relay:
            inner = stream.stream

            def get() -> Any:
                return client._loop.run(inner.get)

        while True:
            q = get()
            consume(q)
            if q.volume == LAST_VOLUME:
                return time.perf_counter_ns()


STACKS: list[tuple[str, Callable[[FeedProcess, int, Consume], int]]] = [
    (BASE, async_stack),
    (BLOCKING, blocking_stack),
    (RELAY, lambda f, n, c: blocking_stack(f, n, c, relay=True)),
]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(
    feed: FeedProcess,
    stack: Callable[[FeedProcess, int, Consume], int],
    n: int,
    consume: Consume,
    **cfg: Any,
) -> Run:
    feed.config(n=n, **cfg)
    gc.collect()
    cpu = _cpu()
    end = stack(feed, n, consume)
    run = Run(n, end, feed.stats()["t_first_ns"], (_cpu() - cpu) / n * 1e6)
    return run


def _touch(q: Any) -> None:
    q.last_price  # noqa: B018  (the consumer reads a field, as a real one would)


def scenario_throughput(feed: FeedProcess, args: argparse.Namespace) -> None:
    runs: dict[str, list[Run]] = {name: [] for name, _ in STACKS}
    for r in range(args.repeat):  # round robin, rotated: drift hits every stack alike
        for name, stack in STACKS[r % len(STACKS) :] + STACKS[: r % len(STACKS)]:
            runs[name].append(measure(feed, stack, args.frames, _touch, mode="blast"))
    print(
        f"\n1. Throughput: {args.frames:,} frames blasted per run, {args.repeat} rounds (round "
        "robin); msgs/s: the median run; ratio: paired per round against the base\n"
        "(this stack's rate over the base's of the same round), median over the rounds."
    )
    head = f"{'stack':<34} {'msgs/s':>10} {'ratio':>7} {'spread':>7} {'CPU µs/msg':>11}"
    print(head)
    print("-" * len(head))
    for name, _ in STACKS:
        rates = sorted(x.rate for x in runs[name])
        ratio = statistics.median(
            a.rate / b.rate for a, b in zip(runs[name], runs[BASE], strict=True)
        )
        spread = (rates[-1] - rates[0]) / statistics.median(rates)
        cpu = statistics.median(x.cpu_us for x in runs[name])
        print(
            f"{name:<34} {statistics.median(rates):>10,.0f} {ratio:>6.2f}x {spread:>6.0%} "
            f"{cpu:>11.2f}"
        )
    print("CPU µs/msg: CPU time of this process (every thread) per message.")


def scenario_latency(feed: FeedProcess, args: argparse.Namespace) -> None:
    rounds = max(1, args.latency_rounds)
    n = int(args.latency_rate * args.latency_seconds)
    skip = min(n // 5, int(args.latency_rate * 0.1))  # warm-up: the first 0.1 s of a slice
    cfg = {"mode": "paced", "rate": args.latency_rate, "stamp": True}
    slices: dict[str, list[list[float]]] = {name: [] for name, _ in STACKS}
    for r in range(rounds):
        for name, stack in STACKS[r % len(STACKS) :] + STACKS[: r % len(STACKS)]:
            samples: list[int] = []

            def consume(
                q: Any, out: list[int] = samples, clock: Any = time.perf_counter_ns
            ) -> None:
                out.append(clock() - q.ob_ms_timestamp)

            measure(feed, stack, n, consume, **cfg)
            slices[name].append(sorted(x / 1000 for x in samples[skip:]))
    print(
        f"\n2. Latency: {args.latency_rate:,.0f} frames/s, {args.latency_seconds:g} s per slice, "
        f"{rounds} interleaved slices per stack; feed stamp -> model in the consumer, µs\n"
        "added: per slice minus the base's slice of the same round, median over the rounds."
    )
    head = f"{'stack':<34} {'p50':>6} {'p99':>7} {'added p50':>10} {'added p99':>10}"
    print(head)
    print("-" * len(head))
    per = {n: {q: [percentile(s, q) for s in slices[n]] for q in (50, 99)} for n, _ in STACKS}
    for name, _ in STACKS:
        pooled = sorted(x for s in slices[name] for x in s)
        added = ""
        if name != BASE:
            d50, d99 = (
                statistics.median(a - b for a, b in zip(per[name][q], per[BASE][q], strict=True))
                for q in (50, 99)
            )
            added = f"{d50:>+10.0f} {d99:>+10.0f}"
        print(f"{name:<34} {percentile(pooled, 50):>6.0f} {percentile(pooled, 99):>7.0f} {added}")
    base99 = per[BASE][99]
    print(
        f"The base's own p99 ranged {min(base99):,.0f}-{max(base99):,.0f} µs between slices: "
        "this machine's noise floor for p99."
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=100_000, help="frames per throughput run")
    ap.add_argument("--repeat", type=int, default=5, help="throughput rounds")
    ap.add_argument("--latency-rate", type=float, default=5_000.0)
    ap.add_argument("--latency-seconds", type=float, default=2.0, help="per slice")
    ap.add_argument("--latency-rounds", type=int, default=6, help="interleaved slices")
    ap.add_argument("--only", default="throughput,latency", help="throughput, latency")
    ap.add_argument("--no-pin", action="store_true", help="do not pin bench and feed to CPUs")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default=None)
    args = ap.parse_args()
    pinned = "not pinned" if args.no_pin else pin(0)
    if args.loop is None:
        args.loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if args.loop == "uvloop":
        import uvloop

        # Every loop: the base's consumer loop, the I/O threads', the facade's.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(
        f"bench pinned to {pinned}, feed to the next CPU; loops: {args.loop}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    only = {x.strip() for x in args.only.split(",")}
    with FeedProcess(cpu=None if args.no_pin else 1) as feed:
        if "throughput" in only:
            scenario_throughput(feed, args)
        if "latency" in only:
            scenario_latency(feed, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
