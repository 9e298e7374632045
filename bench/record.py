"""Throughput with and without the recorder, side by side in one run.

The fast raw feed (``bench/_feed.py``, another process) blasts TV-07-like Simple quote frames
(~540 bytes) at an :class:`~alorws.client.AlorClient`; the consumer reads typed ``Quote`` models
with ``get_batch(1000)`` (``policy="queue"``: lossless) and touches ``last_price``. Each round
runs the stack without a recorder, then with ``Recorder(client, tmpdir)`` recording every frame
to Parquet (zstd). messages/s = frames / (feed's first write -> consumer has the last frame);
the recorder's close (the final flush) is outside the timed span but its rows are checked.
Median of ``--repeat`` interleaved rounds.

    python bench/record.py [--frames 200000] [--repeat 5] [--no-pin]

Goal (issue 7): recording costs < 15 % of throughput. ``--strict`` exits 1 if it does not.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time

from _feed import FeedProcess, pin
from alorws.client import AlorClient
from alorws.protocol.backoff import Backoff
from alorws.record import Recorder


FAST_BACKOFF = Backoff(base=0.01, cap=0.05)


async def run_once(
    feed: FeedProcess, n: int, record: bool, **options: object
) -> tuple[float, dict[str, object]]:
    """Messages/s of one blast of ``n`` frames, and the recorder's stats (or {})."""
    feed.config(n=n)
    gc.collect()
    stats: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="alorws-bench-") as root:
        async with AlorClient("bench", base_url=feed.url, backoff=FAST_BACKOFF) as client:
            recorder = Recorder(client, root, **options) if record else None  # type: ignore[arg-type]
            if recorder is not None:
                await recorder.start()
            async with client.quotes("LKOH", policy="queue", max_buffer=n + 16) as stream:
                got, acc = 0, 0.0
                while got < n:
                    batch = await stream.get_batch(1000)
                    for q in batch:
                        acc += q.last_price or 0.0
                    got += len(batch)
                end = time.perf_counter_ns()
            if recorder is not None:
                await recorder.aclose()
                stats = recorder.stats()
                assert stats["rows"] >= n + 1, stats  # every quote, plus status replies
    start = feed.stats()["t_first_ns"]
    return n / ((end - start) / 1e9), stats


async def main_async(args: argparse.Namespace) -> bool:
    with FeedProcess(cpu=None if args.no_pin else 1) as feed:
        where = "" if args.no_pin else pin(0)
        await run_once(feed, min(args.frames, 20_000), True)  # warm-up (imports, caches)
        plain: list[float] = []
        recorded: list[float] = []
        last: dict[str, object] = {}
        for _ in range(args.repeat):
            plain.append((await run_once(feed, args.frames, False))[0])
            rate, last = await run_once(
                feed, args.frames, True, compression=args.compression, journal=not args.no_journal
            )
            recorded.append(rate)
    p, r = statistics.median(plain), statistics.median(recorded)
    cost = 1 - r / p
    print(f"{args.frames:,} Simple quotes per run, median of {args.repeat} {where}".rstrip())
    print(f"{'stack':<28}{'messages/s':>14}{'runs':>40}")
    for name, runs, med in (("alorws queue", plain, p), ("alorws queue + Recorder", recorded, r)):
        cells = " ".join(f"{x / 1000:,.0f}k" for x in runs)
        print(f"{name:<28}{med:>14,.0f}{cells:>40}")
    print(f"recorder cost: {cost:.1%} of throughput (goal < 15 %), ratio {r / p:.2f}")
    print(f"last recorder stats: {last}")
    return cost < 0.15


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compression", default="zstd", help="the recorder's Parquet codec")
    parser.add_argument("--no-journal", action="store_true", help="record without the journal")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the processes")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the goal is missed")
    args = parser.parse_args()
    ok = asyncio.run(main_async(args))
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
