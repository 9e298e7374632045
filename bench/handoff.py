"""Handoff cost: items from a producer (the I/O thread) to a consumer's event loop.

Side by side in one run, same items, same machine:

* ``StreamBuffer`` (queue and latest policies), producer thread -> consumer loop, the consumer
  draining with ``get_batch``, per item with ``async for``, and fed from an asyncio loop running
  in a thread (the I/O-thread set-up of the client);
* the naive handoff: ``loop.call_soon_threadsafe(queue.put_nowait, item)`` per item into an
  ``asyncio.Queue`` (one cross-thread call, and one self-pipe write, per message);
* ``asyncio.Queue`` and ``StreamBuffer`` with producer and consumer in one loop (no thread).

Reported: items/s and ns per item end to end (producer start -> last item received), and the
producer's own CPU per item (what the reader thread pays: the number that decides whether the
reader keeps up with the socket), plus wake-ups. Ratios are against the naive handoff.

    python bench/handoff.py [--items 500000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

from alorws.client.buffer import Policy, StreamBuffer


CHUNK = 1000  # pushes between yields for producers that run in an event loop


@dataclass
class Run:
    wall: float  # seconds, producer start -> consumer has the last item
    producer_cpu: float  # seconds of CPU the producer spent in its push loop
    delivered: int
    wakeups: int | None = None


def _thread(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


# -- producer thread -> consumer loop -------------------------------------------------------


async def sb_thread(items: list[int], mode: str) -> Run:
    """StreamBuffer fed by a plain thread; the consumer uses get_batch, async for (both with the
    queue policy) or get (latest policy)."""
    n = len(items)
    policy = Policy.LATEST if mode == "latest" else Policy.QUEUE
    buf: StreamBuffer[int] = StreamBuffer(policy, maxsize=n)
    cpu = [0.0]

    def produce() -> None:
        c0 = time.thread_time()
        push = buf.push
        for x in items:
            push(x)
        cpu[0] = time.thread_time() - c0

    last = items[-1]
    got = 0
    t0 = time.perf_counter()
    t = _thread(produce)
    if mode == "batch":
        while got < n:
            got += len(await buf.get_batch(10_000))
    elif mode == "iter":
        async for x in buf:
            got += 1
            if x == last:
                break
    else:  # latest: until the newest item shows up
        while True:
            got += 1
            if await buf.get() == last:
                break
    wall = time.perf_counter() - t0
    t.join()
    return Run(wall, cpu[0], got, buf.stats()["wakeups"])


async def sb_loop_thread(items: list[int]) -> Run:
    """StreamBuffer fed from an asyncio loop in another thread (the client's I/O thread)."""
    n = len(items)
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=n)
    cpu = [0.0]

    def io_thread() -> None:
        async def reader() -> None:
            c0 = time.thread_time()
            push = buf.push
            for i in range(0, n, CHUNK):
                for x in items[i : i + CHUNK]:
                    push(x)
                await asyncio.sleep(0)
            cpu[0] = time.thread_time() - c0

        asyncio.run(reader())

    got = 0
    t0 = time.perf_counter()
    t = _thread(io_thread)
    while got < n:
        got += len(await buf.get_batch(10_000))
    wall = time.perf_counter() - t0
    t.join()
    return Run(wall, cpu[0], got, buf.stats()["wakeups"])


async def naive_thread(items: list[int]) -> Run:
    """One loop.call_soon_threadsafe(queue.put_nowait, item) per item."""
    n = len(items)
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[int] = asyncio.Queue()
    cpu = [0.0]

    def produce() -> None:
        c0 = time.thread_time()
        call = loop.call_soon_threadsafe
        put = q.put_nowait
        for x in items:
            call(put, x)
        cpu[0] = time.thread_time() - c0

    got = 0
    t0 = time.perf_counter()
    t = _thread(produce)
    while got < n:
        await q.get()
        got += 1
    wall = time.perf_counter() - t0
    t.join()
    return Run(wall, cpu[0], got)


# -- one loop, no thread --------------------------------------------------------------------


async def queue_one_loop(items: list[int]) -> Run:
    """asyncio.Queue with producer and consumer tasks in the same loop."""
    n = len(items)
    q: asyncio.Queue[int] = asyncio.Queue()
    cpu = [0.0]

    async def produce() -> None:
        put = q.put_nowait
        for i in range(0, n, CHUNK):
            c0 = time.thread_time()
            for x in items[i : i + CHUNK]:
                put(x)
            cpu[0] += time.thread_time() - c0
            await asyncio.sleep(0)

    got = 0
    t0 = time.perf_counter()
    task = asyncio.create_task(produce())
    while got < n:
        await q.get()
        got += 1
    wall = time.perf_counter() - t0
    await task
    return Run(wall, cpu[0], got)


async def sb_one_loop(items: list[int]) -> Run:
    """StreamBuffer with producer and consumer tasks in the same loop."""
    n = len(items)
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, maxsize=n)
    cpu = [0.0]

    async def produce() -> None:
        push = buf.push
        for i in range(0, n, CHUNK):
            c0 = time.thread_time()
            for x in items[i : i + CHUNK]:
                push(x)
            cpu[0] += time.thread_time() - c0
            await asyncio.sleep(0)

    got = 0
    t0 = time.perf_counter()
    task = asyncio.create_task(produce())
    while got < n:
        got += len(await buf.get_batch(10_000))
    wall = time.perf_counter() - t0
    await task
    return Run(wall, cpu[0], got, buf.stats()["wakeups"])


# -- driver ---------------------------------------------------------------------------------

Scenario = Callable[[list[int]], Coroutine[Any, Any, Run]]

SCENARIOS: list[tuple[str, Scenario]] = [
    ("StreamBuffer queue, thread -> loop, get_batch", partial(sb_thread, mode="batch")),
    ("StreamBuffer queue, thread -> loop, async for", partial(sb_thread, mode="iter")),
    ("StreamBuffer queue, I/O loop thread -> loop", sb_loop_thread),
    ("StreamBuffer latest, thread -> loop, get", partial(sb_thread, mode="latest")),
    ("naive call_soon_threadsafe(put_nowait)/item", naive_thread),
    ("asyncio.Queue, one loop (no thread)", queue_one_loop),
    ("StreamBuffer queue, one loop (no thread)", sb_one_loop),
]
NAIVE = "naive call_soon_threadsafe(put_nowait)/item"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--items", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    items = list(range(args.items))
    n = len(items)
    runs: dict[str, list[Run]] = {name: [] for name, _ in SCENARIOS}
    for _ in range(args.repeat):  # round robin, so drift hits every scenario alike
        for name, fn in SCENARIOS:
            runs[name].append(asyncio.run(fn(items)))

    def med(name: str) -> Run:
        rs = sorted(runs[name], key=lambda r: r.wall)
        return rs[len(rs) // 2]

    base = med(NAIVE)
    print(
        f"Python {sys.version.split()[0]}, {n:,} items, median of {args.repeat}; "
        "ratios against the naive per-item call_soon_threadsafe handoff"
    )
    head = (
        f"{'scenario':<46} {'items/s':>11} {'ns/item':>8} {'producer':>9} "
        f"{'x speed':>8} {'x prod':>7} {'wakeups':>8} {'delivered':>10}"
    )
    print(head)
    print("-" * len(head))
    for name, _ in SCENARIOS:
        r = med(name)
        rate = n / r.wall
        prod_ns = r.producer_cpu / n * 1e9
        wake = "-" if r.wakeups is None else f"{r.wakeups:,}"
        print(
            f"{name:<46} {rate:>11,.0f} {r.wall / n * 1e9:>8.0f} {prod_ns:>7.0f}ns "
            f"{base.wall / r.wall:>7.1f}x {base.producer_cpu / max(r.producer_cpu, 1e-9):>6.1f}x "
            f"{wake:>8} {r.delivered:>10,}"
        )
    spread = {
        name: statistics.pstdev(r.wall for r in rs) / statistics.mean(r.wall for r in rs)
        for name, rs in runs.items()
    }
    worst = max(spread, key=lambda k: spread[k])
    print(
        "\nns/item: wall time per item end to end; producer: the producer's CPU per item "
        "(what the I/O thread pays);\nx speed / x prod: how many times faster than the naive "
        f"handoff. Largest run-to-run spread: {spread[worst]:.0%} ({worst})."
    )


if __name__ == "__main__":
    main()
