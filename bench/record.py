"""What recording costs a client's throughput: with and without the recorder, side by side.

Two scenarios, each with interleaved rounds (the order inside a round alternates), median:

* **sim** (what issue 7 asks): the simulator (``python -m alorws.sim``, its own process) pushing
  at its full rate to an :class:`~alorws.client.AlorClient`. As in ``bench/sim_rate.py`` the rate
  comes from fan-out: ``--sim-copies`` distinct all-trades subscriptions per instrument (``depth``
  1..N tells them apart), so the simulator encodes each trade once and sends it N times, far
  more than a typed client can read (its queue grows during the window: the client is the
  bottleneck, which is what makes a recording cost visible). The consumer takes typed
  ``Trade`` models with ``get_batch(1000)`` in one task per stream and touches ``price``.
  messages/s = typed models the consumer took in a ``--sim-seconds`` window after a warm-up.
  The processes are not pinned by default (the OS shares the two cores between the simulator
  and the client, as on a real machine the server would not share them at all);
  ``--pin`` puts the client on CPU 0 and the simulator on CPU 1.
* **feed** (the harsher number): the fast raw feed (``bench/_feed.py``, another process on
  CPU 1) blasts ``--frames`` Simple quote frames (~540 bytes, all alike) at a client pinned to
  CPU 0 with the recorder's writer thread, so every microsecond the recorder spends is taken
  from the reader and the consumer. Consumer: typed ``Quote`` models, ``get_batch(1000)``,
  ``policy="queue"``. messages/s = frames / (feed's first write -> consumer has the last
  frame and the recorder has taken every frame off its queue). Only the recorder's final
  flush (``aclose``, at most one batch) is outside the timed span; its rows are checked.

Both print CPU µs/msg (the whole client process, all threads, over the timed span): the
difference with and without the recorder is what recording costs per frame.

    python bench/record.py [--scenarios sim,feed] [--repeat 5] [--sim-seconds 3]
                           [--sim-copies 120] [--sim-rate 2000] [--frames 200000] [--pin]
                           [--no-pin] [--compression zstd] [--no-journal] [--strict]

Goal (issue 7): recording at the simulator's full rate costs < 15 % of throughput (judged on
the sim scenario). ``--strict`` exits 1 if it does not.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
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
    """One stack's runs: messages/s and CPU µs/msg per run, and the last recorder stats."""

    name: str
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- the simulator at full rate ----------------------------------------------------------------


def _sim_unread(url: str) -> int:
    with urllib.request.urlopen(f"{url}/sim/stats", timeout=10) as r:
        stats = json.loads(r.read())
    return sum(a["unread"] for a in stats["accounts"].values())


async def sim_once(
    url: str, refresh: str, args: argparse.Namespace, record: bool
) -> tuple[float, float, dict[str, Any], str]:
    """Typed trades/s the consumer took in the window, CPU µs per message, recorder stats."""
    gc.collect()
    stats: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="alorws-bench-") as root:
        async with AlorClient(refresh, base_url=url, backoff=FAST_BACKOFF) as client:
            recorder = (
                Recorder(client, root, compression=args.compression, journal=not args.no_journal)
                if record
                else None
            )
            if recorder is not None:
                await recorder.start()
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


async def sim_scenario(args: argparse.Namespace) -> tuple[Arm, Arm, str]:
    where = "not pinned"
    sim_args = argparse.Namespace(rate=args.sim_rate, max_unread=2_000_000)
    proc, url, refresh = start_simulator(sim_args)
    try:
        if args.pin:
            import os

            os.sched_setaffinity(proc.pid, {1})
            where = "client on CPU 0, simulator on CPU 1 " + pin(0)
        plain, recorded = Arm("alorws queue"), Arm("alorws queue + Recorder")
        await sim_once(url, refresh, _short(args), True)  # warm-up (imports, caches)
        for i in range(args.repeat):
            order = (plain, recorded) if i % 2 == 0 else (recorded, plain)
            for arm in order:
                rate, cpu, stats, note = await sim_once(url, refresh, args, arm is recorded)
                arm.rates.append(rate)
                arm.cpu.append(cpu)
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
    return plain, recorded, title


def _short(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "sim_seconds": 0.5, "sim_warmup": 0.5})


# -- the fast raw feed ---------------------------------------------------------------------------


async def feed_once(
    feed: FeedProcess, n: int, record: bool, **options: object
) -> tuple[float, float, dict[str, Any]]:
    """Messages/s of one blast of ``n`` frames, CPU µs/msg, and the recorder's stats (or {})."""
    feed.config(n=n)
    gc.collect()
    stats: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="alorws-bench-") as root:
        async with AlorClient("bench", base_url=feed.url, backoff=FAST_BACKOFF) as client:
            recorder = Recorder(client, root, **options) if record else None  # type: ignore[arg-type]
            if recorder is not None:
                await recorder.start()
            async with client.quotes("LKOH", policy="queue", max_buffer=n + 16) as stream:
                got, acc = 0, 0.0
                cpu0 = time.process_time()
                while got < n:
                    batch = await stream.get_batch(1000)
                    for q in batch:
                        acc += q.last_price or 0.0
                    got += len(batch)
                # The span ends when the recorder has caught up too (its queue is empty): the
                # writer runs at a lower priority and may finish a short blast after the
                # consumer, which would hide its cost.
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


async def feed_scenario(args: argparse.Namespace) -> tuple[Arm, Arm, str]:
    options = {"compression": args.compression, "journal": not args.no_journal}
    with FeedProcess(cpu=None if args.no_pin else 1) as feed:
        where = "not pinned" if args.no_pin else "client " + pin(0) + ", feed on CPU 1"
        await feed_once(feed, min(args.frames, 20_000), True)  # warm-up (imports, caches)
        plain, recorded = Arm("alorws queue"), Arm("alorws queue + Recorder")
        for i in range(args.repeat):
            order = (plain, recorded) if i % 2 == 0 else (recorded, plain)
            for arm in order:
                rec = arm is recorded
                kw = options if rec else {}
                rate, cpu, stats = await feed_once(feed, args.frames, rec, **kw)
                arm.rates.append(rate)
                arm.cpu.append(cpu)
                if stats:
                    arm.stats = stats
    title = f"feed: {args.frames:,} Simple quotes blasted by bench/_feed.py; {where}"
    return plain, recorded, title


# -- report --------------------------------------------------------------------------------------


def report(plain: Arm, recorded: Arm, title: str, repeat: int) -> float:
    """Print one scenario; returns the recorder's cost (1 - ratio of the medians)."""
    p, r = statistics.median(plain.rates), statistics.median(recorded.rates)
    cost = 1 - r / p
    print(f"\n{title}; median of {repeat} interleaved rounds")
    print(f"{'stack':<26}{'messages/s':>12}{'CPU µs/msg':>12}   runs (messages/s)")
    for arm, med in ((plain, p), (recorded, r)):
        cells = " ".join(f"{x / 1000:,.0f}k" for x in arm.rates)
        print(f"{arm.name:<26}{med:>12,.0f}{statistics.median(arm.cpu):>12.2f}   {cells}")
    extra_cpu = statistics.median(recorded.cpu) - statistics.median(plain.cpu)
    verdict = "ok" if cost < GOAL else "MISSED"
    print(
        f"recorder cost: {cost:.1%} of throughput (ratio {r / p:.2f}; goal < {GOAL:.0%}: "
        f"{verdict}); +{extra_cpu:.2f} CPU µs per message"
    )
    for arm in (plain, recorded):
        if arm.notes:
            print(f"  {arm.name}: {'; '.join(arm.notes)}")
    if recorded.stats:
        keys = ("rows", "files", "dropped", "lag", "error")
        print(f"  last recorder stats: { {k: recorded.stats.get(k) for k in keys} }")
    return cost


async def main_async(args: argparse.Namespace) -> bool:
    scenarios: dict[str, Callable[[argparse.Namespace], Awaitable[tuple[Arm, Arm, str]]]] = {
        "sim": sim_scenario,
        "feed": feed_scenario,
    }
    costs: dict[str, float] = {}
    for name in args.scenarios.split(","):
        plain, recorded, title = await scenarios[name.strip()](args)
        costs[name.strip()] = report(plain, recorded, title, args.repeat)
    print()
    for name, cost in costs.items():
        judged = " (the goal is judged here)" if name == "sim" else " (harsher than the goal)"
        verdict = "ok" if cost < GOAL else "MISSED"
        print(f"goal: recording costs < 15 % of throughput, {name}: {cost:.1%} {verdict}{judged}")
    return costs.get("sim", costs.get("feed", 1.0)) < GOAL


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
    parser.add_argument("--strict", action="store_true", help="exit 1 if the goal is missed")
    args = parser.parse_args()
    ok = asyncio.run(main_async(args))
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
