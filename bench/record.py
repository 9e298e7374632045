"""What recording costs a client's throughput: with and without the recorder, side by side.

Two scenarios, each with interleaved rounds (the order inside a round alternates), median:

* **sim** (the scenario the goal is judged on): the simulator (``python -m alorws.sim``, its own
  process) pushing at its full rate to an :class:`~alorws.client.AlorClient`. As in
  ``bench/sim_rate.py`` the rate comes from fan-out: ``--sim-copies`` distinct all-trades
  subscriptions per instrument (``depth`` 1..N tells them apart), so the simulator encodes each
  trade once and sends it N times, far more than a typed client can read (its queue grows during
  the window: the client is the bottleneck, which is what makes a recording cost visible). The
  consumer takes typed ``Trade`` models with ``get_batch(1000)`` in one task per stream and
  touches ``price``.
  messages/s = typed models the consumer took in a ``--sim-seconds`` window after a warm-up.
  The processes are not pinned by default (the OS shares the two cores between the simulator
  and the client, as on a real machine the server would not share them at all);
  ``--pin`` puts the client on CPU 0 and the simulator on CPU 1.
* **feed** (the harsher number): the fast raw feed (``bench/_feed.py``, another process on
  CPU 1) blasts ``--frames`` Simple quote frames (~540 bytes, all alike) at a client pinned to
  CPU 0. Consumer: typed ``Quote`` models, ``get_batch(1000)``, ``policy="queue"``.
  messages/s = frames / (feed's first write -> consumer has the last frame and the recorder's
  writer has taken every frame: off the queue, or out of the ring/pipe to the writer process). Only
  the writer's final work (``aclose``) is outside the timed span; its rows are checked. The
  writer process inherits the client's CPU 0; ``--writer-cpu`` puts it on CPU 1 with the feed
  (``other``, the default: on a real machine it would have a core of its own), leaves it on
  CPU 0 (``same``: the writer competes with the client for one core, the harshest case) or
  lets the OS choose (``any``).

Arms (``--writers``): no recorder, ``Recorder(process=True)`` (the default: the writer in its
own process), ``Recorder(process=False)`` (the writer thread in the client's process). Each
prints CPU µs/msg of the client process (all threads, over the timed span: the difference with
and without the recorder is what recording costs the client per frame) and of the writer
process (``stats()["writer_cpu"]`` / rows recorded, over the whole recording).

    python bench/record.py [--scenarios sim,feed] [--repeat 5] [--sim-seconds 3]
                           [--sim-copies 120] [--sim-rate 2000] [--frames 200000] [--pin]
                           [--no-pin] [--writers process,thread] [--writer-cpu other|same|any]
                           [--compression zstd] [--no-journal] [--strict]

Goal: recording at the simulator's full rate costs < 15 % of throughput (judged on
the sim scenario). ``--strict`` exits 1 if it does not.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from _feed import FeedProcess, pin
from alorws.client import AlorClient
from alorws.protocol.backoff import Backoff
from alorws.record import Recorder
from sim_rate import INSTRUMENTS, start_simulator


FAST_BACKOFF = Backoff(base=0.01, cap=0.05)
GOAL = 0.15


@dataclass
class Arm:
    """One stack's runs: messages/s, CPU µs/msg of the client process and of the recorder's
    writer process per run, and the last recorder stats. ``options``: the Recorder's (None: no
    recorder)."""

    name: str
    options: dict[str, Any] | None = None
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    writer_cpu: list[float] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- the simulator at full rate ----------------------------------------------------------------


def _sim_unread(url: str) -> int:
    with urllib.request.urlopen(f"{url}/sim/stats", timeout=10) as r:
        stats = json.loads(r.read())
    return sum(a["unread"] for a in stats["accounts"].values())


def _writer_us(stats: dict[str, Any]) -> float:
    """The writer process's CPU µs per frame recorded (0 without one: a writer thread's CPU is
    the client's)."""
    if not stats or stats.get("writer_cpu") is None:
        return 0.0
    return float(stats["writer_cpu"]) * 1e6 / max(int(stats["rows"]), 1)


async def _start(
    client: AlorClient, root: str, options: dict[str, Any] | None, writer_cpus: set[int] | None
) -> Recorder | None:
    if options is None:
        return None
    recorder = Recorder(client, root, **options)
    await recorder.start()
    if recorder.pid is not None and writer_cpus is not None:
        os.sched_setaffinity(recorder.pid, writer_cpus)
    return recorder


def _writer_cpus(args: argparse.Namespace) -> set[int] | None:
    """Where the writer process goes when the client is pinned to CPU 0 (it inherits CPU 0;
    on a real machine it would run on another core: --writer-cpu same keeps it there)."""
    if not getattr(args, "pinned", False):
        return None
    return {"same": {0}, "other": {1}, "any": set(range(os.cpu_count() or 1))}[args.writer_cpu]


async def sim_once(
    url: str, refresh: str, args: argparse.Namespace, options: dict[str, Any] | None
) -> tuple[float, float, dict[str, Any], str]:
    """Typed trades/s the consumer took in the window, CPU µs per message, recorder stats."""
    gc.collect()
    stats: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="alorws-bench-") as root:
        async with AlorClient(refresh, base_url=url, backoff=FAST_BACKOFF) as client:
            recorder = await _start(client, root, options, _writer_cpus(args))
            streams = [
                client.all_trades(sym, depth=copy + 1, format="Simple")
                for sym in INSTRUMENTS
                for copy in range(args.sim_copies)
            ]
            await client.subscribe_all(streams)
            taken = [0]

            async def consume(stream: Any) -> None:
                acc = 0.0
                while True:
                    batch = await stream.get_batch(1000)
                    for trade in batch:
                        acc += trade.price or 0.0
                    taken[0] += len(batch)

            tasks = [asyncio.create_task(consume(s)) for s in streams]
            try:
                await asyncio.sleep(args.sim_warmup)
                unread0 = await asyncio.to_thread(_sim_unread, url)
                n0, c0, t0 = taken[0], time.process_time(), time.perf_counter()
                read0 = client.stats()["messages"]
                await asyncio.sleep(args.sim_seconds)
                n1, c1, t1 = taken[0], time.process_time(), time.perf_counter()
                read1 = client.stats()["messages"]
                unread1 = await asyncio.to_thread(_sim_unread, url)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if recorder is not None:
                await recorder.aclose()
                stats = recorder.stats()
                assert stats["error"] is None, stats
            # No unsubscribes: their replies would queue behind the simulator's backlog. The
            # client closes the connection; the simulator forgets what it had queued.
    n = n1 - n0
    note = (
        f"reader {(read1 - read0) / (t1 - t0) / 1000:,.0f}k/s, "
        f"simulator queue {unread0:,} -> {unread1:,}"
    )
    return n / (t1 - t0), (c1 - c0) * 1e6 / max(n, 1), stats, note


def _arms(args: argparse.Namespace) -> list[Arm]:
    """No recorder, then a Recorder per --writers mode (process: the writer in its own process,
    thread: in the client's)."""
    base = {"compression": args.compression, "journal": not args.no_journal}
    arms = [Arm("alorws queue")]
    for mode in args.writers.split(","):
        mode = mode.strip()
        arms.append(Arm(f"+ Recorder ({mode})", {**base, "process": mode == "process"}))
    return arms


async def sim_scenario(args: argparse.Namespace) -> tuple[list[Arm], str]:
    where = "not pinned"
    sim_args = argparse.Namespace(rate=args.sim_rate, max_unread=2_000_000)
    proc, url, refresh = start_simulator(sim_args)
    try:
        if args.pin:
            os.sched_setaffinity(proc.pid, {1})
            where = "client on CPU 0, simulator on CPU 1 " + pin(0)
            args.pinned = True
            where += f", writer process on CPU {sorted(_writer_cpus(args) or ())}"
        arms = _arms(args)
        await sim_once(url, refresh, _short(args), arms[1].options)  # warm-up (imports, caches)
        for i in range(args.repeat):
            for arm in arms if i % 2 == 0 else arms[::-1]:
                rate, cpu, stats, note = await sim_once(url, refresh, args, arm.options)
                arm.rates.append(rate)
                arm.cpu.append(cpu)
                arm.writer_cpu.append(_writer_us(stats))
                arm.notes.append(note)
                if stats:
                    arm.stats = stats
    finally:
        proc.terminate()
        proc.wait(10)
    subs = len(INSTRUMENTS) * args.sim_copies
    title = (
        f"sim: simulator (--rate {args.sim_rate:g}) -> AlorClient, {subs:,} all-trades "
        f"subscriptions (Simple), typed Trade consumer, {args.sim_seconds:g} s windows; {where}"
    )
    return arms, title


def _short(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "sim_seconds": 0.5, "sim_warmup": 0.5})


# -- the fast raw feed ---------------------------------------------------------------------------


async def feed_once(
    feed: FeedProcess, n: int, options: dict[str, Any] | None, writer_cpus: set[int] | None
) -> tuple[float, float, dict[str, Any]]:
    """Messages/s of one blast of ``n`` frames, CPU µs/msg, and the recorder's stats (or {})."""
    feed.config(n=n)
    gc.collect()
    stats: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="alorws-bench-") as root:
        async with AlorClient("bench", base_url=feed.url, backoff=FAST_BACKOFF) as client:
            recorder = await _start(client, root, options, writer_cpus)
            async with client.quotes("LKOH", policy="queue", max_buffer=n + 16) as stream:
                got, acc = 0, 0.0
                cpu0 = time.process_time()
                while got < n:
                    batch = await stream.get_batch(1000)
                    for q in batch:
                        acc += q.last_price or 0.0
                    got += len(batch)
                # The span ends when the recorder has caught up too (its writer has taken every
                # frame: off the queue, or out of the pipe to the writer process): the writer
                # runs at a lower priority and may finish a short blast after the consumer,
                # which would hide its cost.
                while recorder is not None and recorder.stats()["queued"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
                end = time.perf_counter_ns()
                cpu = time.process_time() - cpu0
            if recorder is not None:
                await recorder.aclose()
                stats = recorder.stats()
                assert stats["rows"] >= n + 1, stats  # every quote, plus status replies
    start = feed.stats()["t_first_ns"]
    return n / ((end - start) / 1e9), cpu * 1e6 / n, stats


async def feed_scenario(args: argparse.Namespace) -> tuple[list[Arm], str]:
    with FeedProcess(cpu=None if args.no_pin else 1) as feed:
        where = "not pinned" if args.no_pin else "client " + pin(0) + ", feed on CPU 1"
        args.pinned = not args.no_pin
        writer_cpus = _writer_cpus(args)
        if writer_cpus is not None:
            where += f", writer process on CPU {sorted(writer_cpus)}"
        arms = _arms(args)
        # warm-up (imports, caches)
        await feed_once(feed, min(args.frames, 20_000), arms[1].options, writer_cpus)
        for i in range(args.repeat):
            for arm in arms if i % 2 == 0 else arms[::-1]:
                rate, cpu, stats = await feed_once(feed, args.frames, arm.options, writer_cpus)
                arm.rates.append(rate)
                arm.cpu.append(cpu)
                arm.writer_cpu.append(_writer_us(stats))
                if stats:
                    arm.stats = stats
    title = f"feed: {args.frames:,} Simple quotes blasted by bench/_feed.py; {where}"
    return arms, title


# -- report --------------------------------------------------------------------------------------


def report(arms: list[Arm], title: str, repeat: int) -> dict[str, float]:
    """Print one scenario; returns each recorder's cost (1 - ratio of the medians)."""
    plain = arms[0]
    p = statistics.median(plain.rates)
    print(f"\n{title}; median of {repeat} interleaved rounds")
    print(
        f"{'stack':<26}{'messages/s':>12}{'client CPU':>12}{'writer CPU':>12}   runs (messages/s)"
    )
    print(f"{'':<26}{'':>12}{'µs/msg':>12}{'µs/frame':>12}")
    for arm in arms:
        cells = " ".join(f"{x / 1000:,.0f}k" for x in arm.rates)
        writer = statistics.median(arm.writer_cpu) if arm.options is not None else 0.0
        print(
            f"{arm.name:<26}{statistics.median(arm.rates):>12,.0f}"
            f"{statistics.median(arm.cpu):>12.2f}{writer:>12.2f}   {cells}"
        )
    costs: dict[str, float] = {}
    for arm in arms[1:]:
        r = statistics.median(arm.rates)
        cost = costs[arm.name] = 1 - r / p
        extra_cpu = statistics.median(arm.cpu) - statistics.median(plain.cpu)
        verdict = "ok" if cost < GOAL else "MISSED"
        print(
            f"{arm.name}: costs {cost:.1%} of throughput (ratio {r / p:.2f}; goal < {GOAL:.0%}: "
            f"{verdict}); client +{extra_cpu:.2f} CPU µs per message"
        )
    for arm in arms:
        if arm.notes:
            print(f"  {arm.name}: {'; '.join(arm.notes)}")
    for arm in arms[1:]:
        if arm.stats:
            keys = ("rows", "files", "dropped", "lag", "error")
            print(f"  {arm.name}, last stats: { {k: arm.stats.get(k) for k in keys} }")
    return costs


async def main_async(args: argparse.Namespace) -> bool:
    scenarios: dict[str, Callable[[argparse.Namespace], Awaitable[tuple[list[Arm], str]]]] = {
        "sim": sim_scenario,
        "feed": feed_scenario,
    }
    costs: dict[str, dict[str, float]] = {}
    for name in args.scenarios.split(","):
        arms, title = await scenarios[name.strip()](args)
        costs[name.strip()] = report(arms, title, args.repeat)
    print()
    for name, by_arm in costs.items():
        judged = " (the goal is judged here)" if name == "sim" else " (harsher than the goal)"
        for arm, cost in by_arm.items():
            verdict = "ok" if cost < GOAL else "MISSED"
            print(f"goal: recording costs < 15 %, {name}, {arm}: {cost:.1%} {verdict}{judged}")
    judged = costs.get("sim", costs.get("feed", {}))
    return bool(judged) and next(iter(judged.values())) < GOAL


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="sim,feed", help="sim, feed or both")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sim-seconds", type=float, default=3.0, help="measured window")
    parser.add_argument("--sim-warmup", type=float, default=1.0, help="seconds before it")
    parser.add_argument("--sim-copies", type=int, default=120, help="tapes per instrument")
    parser.add_argument("--sim-rate", type=float, default=2000.0, help="simulator --rate")
    parser.add_argument("--frames", type=int, default=200_000, help="feed: frames per run")
    parser.add_argument("--pin", action="store_true", help="sim: pin client and simulator")
    parser.add_argument("--no-pin", action="store_true", help="feed: do not pin")
    parser.add_argument("--compression", default="zstd", help="the recorder's Parquet codec")
    parser.add_argument("--no-journal", action="store_true", help="record without the journal")
    parser.add_argument(
        "--writers", default="process", help="recorder arms: process, thread or process,thread"
    )
    parser.add_argument(
        "--writer-cpu",
        default="other",
        choices=("other", "same", "any"),
        help="feed, pinned: the writer process on CPU 1 (other), 0 (same) or any",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if the goal is missed")
    args = parser.parse_args()
    ok = asyncio.run(main_async(args))
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
