"""Memory per idle subscription: RSS and Python bytes per quote stream at 5,000 to 50,000.

``AlorClient(reserve_connections=0)`` (the 10 x 5000 budget) subscribes N distinct quote streams,
``client.quotes(sym, frequency=60000 + i)`` over the simulator's 13 instruments (the large
frequency keeps them quiet: each gets the simulator's first quote and then nothing for a
minute), against ``python -m alorws.sim`` in its own process:

* **one call**: every stream created unsubscribed (``client.quotes(...)``), then one
  ``client.subscribe_all(streams)``;
* **chunked**: ``subscribe_all`` of 1000 streams at a time (``--chunk``), one after the other.

Each measurement runs in a fresh client process (RSS never shrinks back after a run, so a second
run in the same process would reuse the first one's free memory). It opens the client, subscribes
and closes one warm-up stream (the first lane, its connection and the code paths exist before
the baseline), then ``gc.collect()``, waits ``--settle`` seconds and reads RSS (``/proc``); then
creates and subscribes the N streams and waits until each has received its first quote. Reported
per subscription, minus the baseline, after ``gc.collect()`` and the settle again:

* ``RSS/sub``: the first quote still waiting in each stream's buffer (an idle consumer that has
  not read yet);
* ``taken``: after the consumer took each stream's first quote (``get()``), nothing pending
  (RSS rarely goes down: freed memory stays in the allocator's arenas);
* ``trimmed``: the same after ``malloc_trim(0)`` (glibc gives free heap pages back): the gap
  to ``taken`` is memory free in the heap but not returned, i.e. fragmentation;
* ``peak/sub``: the process's peak RSS (``VmHWM``) minus the baseline, per subscription: the
  transient cost of the subscribe itself (tasks, coroutines, frames in flight).

**tracemalloc** (a separate process, ``--trace-size`` streams, one call): Python-allocated bytes
per subscription still held once subscribed (first quote pending and taken), and the source lines
that hold them, so the RSS number can be explained. tracemalloc's own bookkeeping distorts RSS,
so the traced run reports no RSS.

Baseline, same run: the per-subscription state of the usual pattern of existing ALOR clients
(AlorPy's ``subscriptions[guid] = request``, a ``uuid4`` string and the request dict), measured
the same way (RSS in a fresh process, tracemalloc bytes in the traced one); ``x base`` is alorws
over it.

    python bench/memory.py [--sizes 5000,20000,50000] [--modes one,chunked] [--chunk 1000]
                           [--repeat 1] [--trace-size 5000] [--settle 1.0] [--no-pin] [--strict]

The bench process (and so each client process) is pinned to CPU 0 and the simulator to CPU 1
(``--no-pin`` leaves them to the OS). The goal (``GOAL_BYTES`` RSS per idle subscription at
50,000 subscribed in one call, the first quote pending) is printed ok/MISSED; ``--strict``
exits 1 on a miss.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from typing import Any

from _feed import pin
from alorws.client import AlorClient
from restore import INSTRUMENTS, simulator


GOAL_BYTES = 2048
GOAL_SIZE = 50_000
PER_CONNECTION = 5000
FREQUENCY_BASE = 60_000


# -- the client process -----------------------------------------------------------------------


def rss() -> int:
    """Resident set size of this process, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """Peak resident set size of this process (VmHWM), bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> None:
    """Make VmHWM start from the current RSS (Linux 4.0+; silently not elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def malloc_trim() -> bool:
    """Give free glibc heap pages back to the OS; False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


async def settle(seconds: float) -> None:
    """Collect garbage, let the I/O thread go idle, collect again."""
    gc.collect()
    await asyncio.sleep(seconds)
    gc.collect()


def baseline_state(n: int) -> dict[str, dict[str, Any]]:
    """AlorPy's per-subscription state: ``subscriptions[guid] = request`` (a dict)."""
    subs: dict[str, dict[str, Any]] = {}
    for i in range(n):
        guid = str(uuid.uuid4())
        subs[guid] = {
            "opcode": "QuotesSubscribe",
            "code": INSTRUMENTS[i % len(INSTRUMENTS)],
            "exchange": "MOEX",
            "format": "Simple",
            "frequency": FREQUENCY_BASE + i,
            "guid": guid,
        }
    return subs


def top_lines(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int) -> list[Any]:
    """The source lines whose live bytes grew most, per subscription: (where, bytes, count)."""
    out = []
    for stat in after.compare_to(before, "lineno")[:20]:
        frame = stat.traceback[0]
        where = f"{os.path.relpath(frame.filename, os.getcwd())}:{frame.lineno}"
        if where.startswith(".."):
            where = f"{os.path.basename(frame.filename)}:{frame.lineno}"
        out.append((where, stat.size_diff / n, stat.count_diff / n))
    return out


async def client_run(url: str, refresh: str, n: int, mode: str, args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process; see the module docstring."""
    out: dict[str, Any] = {"n": n, "mode": mode}
    if mode == "baseline":
        await settle(args.settle)
        r0 = rss()
        state = baseline_state(n)
        await settle(args.settle)
        out["rss"] = rss() - r0
        del state
        return out
    trace = args.trace
    async with AlorClient(
        refresh,
        base_url=url,
        reserve_connections=0,
        max_subscriptions_per_connection=PER_CONNECTION,
        subscribe_timeout=240,
    ) as client:
        warm = client.quotes(INSTRUMENTS[0], frequency=FREQUENCY_BASE - 1)
        await client.subscribe_all([warm])
        await warm.get()
        await warm.aclose()
        del warm
        if trace:
            tracemalloc.start()
        await settle(args.settle)
        snap0 = tracemalloc.take_snapshot() if trace else None
        r0 = rss()
        reset_peak()
        t0 = time.perf_counter()
        streams = [
            client.quotes(INSTRUMENTS[i % len(INSTRUMENTS)], frequency=FREQUENCY_BASE + i)
            for i in range(n)
        ]
        if mode == "one":
            await client.subscribe_all(streams)
        else:
            for i in range(0, n, args.chunk):
                await client.subscribe_all(streams[i : i + args.chunk])
        out["subscribe_s"] = time.perf_counter() - t0
        # Every stream has its first quote (the simulator sends one per subscribe).
        async with asyncio.timeout(120):
            while True:
                if all(s._buffer.received for s in streams):
                    break
                await asyncio.sleep(0.2)
        await settle(args.settle)
        if trace:
            snap1 = tracemalloc.take_snapshot()
            assert snap0 is not None
            out["py"] = sum(st.size_diff for st in snap1.compare_to(snap0, "filename")) / n
            out["lines"] = top_lines(snap0, snap1, n)
        else:
            out["rss"] = rss() - r0
            out["peak"] = peak_rss() - r0
        for s in streams:
            await s.get()
        await settle(args.settle)
        if trace:
            snap2 = tracemalloc.take_snapshot()
            assert snap0 is not None
            out["py_taken"] = sum(st.size_diff for st in snap2.compare_to(snap0, "filename")) / n
            tracemalloc.stop()
            # The baseline's Python bytes, traced the same way in this process.
            tracemalloc.start()
            b0 = tracemalloc.take_snapshot()
            state = baseline_state(n)
            b1 = tracemalloc.take_snapshot()
            out["py_base"] = sum(st.size_diff for st in b1.compare_to(b0, "filename")) / n
            del state
            tracemalloc.stop()
        else:
            out["rss_taken"] = rss() - r0
            out["trimmed"] = rss() - r0 if malloc_trim() else None
        if not all(s.is_open for s in streams):
            raise RuntimeError("a stream closed during the run")
        out["lanes"] = len(client.stats()["lanes"])
    return out


def child_main(args: argparse.Namespace) -> int:
    url, refresh = args.child_url, args.child_token
    result = asyncio.run(client_run(url, refresh, args.child_n, args.child_mode, args))
    print("RESULT " + json.dumps(result))
    return 0


# -- the driver ---------------------------------------------------------------------------------


def measure(n: int, mode: str, args: argparse.Namespace, *, trace: bool = False) -> dict:
    """One measurement: a fresh simulator and a fresh client process."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child-n", str(n), "--child-mode", mode]
    cmd += ["--chunk", str(args.chunk), "--settle", str(args.settle)]
    if trace:
        cmd.append("--trace")
    if mode == "baseline":  # no server needed
        proc = subprocess.run([*cmd, "--child-url", "-"], capture_output=True, text=True)
    else:
        with simulator(None if args.no_pin else 1) as (url, refresh):
            cmd += ["--child-url", url, "--child-token", refresh]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise RuntimeError(f"{mode} {n}: no result (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def kb(x: float | None) -> str:
    return "-" if x is None else f"{x / 1024:.2f}"


def spread(xs: list[float]) -> str:
    """median KB, with the range when there are several runs."""
    med = kb(statistics.median(xs))
    return med if len(xs) == 1 else f"{med} ({kb(min(xs))}-{kb(max(xs))})"


def run(args: argparse.Namespace) -> bool:
    rows = []
    for n in args.sizes:
        base = [measure(n, "baseline", args)["rss"] / n for _ in range(args.repeat)]
        for mode in args.modes:
            runs = [measure(n, mode, args) for _ in range(args.repeat)]
            rows.append((n, mode, runs, base))
    traced = measure(args.trace_size, "one", args, trace=True) if args.trace_size else None
    load = os.getloadavg()
    print(
        f"Python {sys.version.split()[0]}; client {args.pinned}, simulator in its own process"
        f"{'' if args.no_pin else ' on the other CPU'}; a fresh client process per run; "
        f"median (range) of {args.repeat} run(s); load average {load[0]:.2f} {load[1]:.2f}"
    )
    print(
        "KB per subscription over the RSS before the streams were created; 'RSS/sub' with each "
        "stream's first quote pending; base: AlorPy's {guid: request dict}, same sizes"
    )
    head = (
        f"{'subs':>6} {'subscribed':<10} {'conns':>5} {'RSS/sub':>20} {'x base':>7} "
        f"{'taken':>7} {'trimmed':>8} {'peak/sub':>9} {'base':>6} {'subscribe s':>11}"
    )
    print(head)
    print("-" * len(head))
    ok = True
    for n, mode, runs, base in rows:
        per = [r["rss"] / n for r in runs]
        taken = statistics.median(r["rss_taken"] / n for r in runs)
        trims = [r["trimmed"] / n for r in runs if r["trimmed"] is not None]
        trimmed = statistics.median(trims) if trims else None
        peak = statistics.median(r["peak"] / n for r in runs)
        b = statistics.median(base)
        secs = statistics.median(r["subscribe_s"] for r in runs)
        how = "one call" if mode == "one" else f"chunks {args.chunk}"
        verdict = ""
        if n == GOAL_SIZE and mode == "one":
            good = statistics.median(per) <= GOAL_BYTES
            ok &= good
            verdict = f"  goal <= {GOAL_BYTES / 1024:g} KB: {'ok' if good else 'MISSED'}"
        print(
            f"{n:>6,} {how:<10} {runs[0]['lanes']:>5} {spread(per):>20} "
            f"{statistics.median(per) / b:>6.1f}x {kb(taken):>7} {kb(trimmed):>8} "
            f"{kb(peak):>9} {kb(b):>6} {secs:>11.2f}{verdict}"
        )
    if traced is not None:
        n = traced["n"]
        print()
        print(
            f"tracemalloc, {n:,} subscribed in one call: {traced['py']:.0f} B of Python objects "
            f"per subscription (first quote pending), {traced['py_taken']:.0f} B once taken; "
            f"base {traced['py_base']:.0f} B ({traced['py'] / traced['py_base']:.1f}x). "
            "Largest holders, per subscription:"
        )
        for where, size, count in traced["lines"]:
            print(f"  {size:>8.0f} B {count:>6.2f} blocks  {where}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="5000,20000,50000", help="subscription counts")
    ap.add_argument("--modes", default="one,chunked", help="one (one call) and/or chunked")
    ap.add_argument("--chunk", type=int, default=1000, help="streams per subscribe_all, chunked")
    ap.add_argument("--repeat", type=int, default=1, help="runs per size and mode")
    ap.add_argument("--trace-size", type=int, default=5000, help="0: no tracemalloc run")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds idle before reading RSS")
    ap.add_argument("--no-pin", action="store_true", help="do not pin client and server to CPUs")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    # A client process (started by the driver above).
    ap.add_argument("--child-url", help=argparse.SUPPRESS)
    ap.add_argument("--child-token", help=argparse.SUPPRESS)
    ap.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-mode", help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_url:
        return child_main(args)
    args.sizes = [int(x) for x in args.sizes.split(",")]
    args.modes = [x.strip() for x in args.modes.split(",") if x.strip()]
    args.pinned = "not pinned" if args.no_pin else pin(0)
    ok = run(args)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
