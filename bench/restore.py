"""Time to subscribe 5,000-50,000 streams with one call, and to restore them after a drop.

``AlorClient`` (``reserve_connections=0``; the client shards 5,000 subscriptions per connection,
so 50,000 live on 10 connections, the whole budget) subscribes N distinct quote streams,
``client.quotes(sym, frequency=60000 + i)`` over the simulator's 13 instruments (the large
frequency keeps data from flooding), with one ``client.subscribe_all(streams)`` call: the **first
subscribe**, from the call to its return with every stream confirmed. Then
``client.drop_connections()`` drops every connection, ``--repeat`` times. The lanes reconnect
(backoff base 10 ms, cap 50 ms) and re-send every subscription with its original guid in one
pipelined burst.

What is measured, per connection, with two probes wrapped around ``Lane`` methods in this process
(bench-only instrumentation; nothing in ``src/`` changes):

* **reopen**: ``Lane._connect`` returned, i.e. the new WebSocket is open (handshake done);
* **last confirmation**: the last ``Lane._on_status`` on that lane, once every subscription of the
  lane has its reply (the run checks afterwards that every subscription is ACTIVE with its
  original guid);
* ``restore`` = last confirmation - reopen, the worst connection (the goal: within 1 s on
  loopback up to 20,000 and within 2 s at 50,000, judged on the median of the drops; the worst
  drop is shown too);
* ``send burst`` = the client's ``lane.last_restore_seconds`` (encoding + writing the frames
  only); ``drop -> active`` = from ``drop_connections()`` to the last confirmation (adds the
  backoff delay and the reconnects, which the connections of one client take in turn);
* ``client CPU`` = CPU seconds of this process (the client's threads; the server runs in its own)
  over the first subscribe, or from the drop to the last confirmation: less sensitive to a busy
  machine than the wall-clock times;
* ``first / restore`` = the first subscribe over the median restore's ``drop -> active``, the
  same streams in the same run (the goal: the first subscribe within 2 s at 50,000).

Baselines, same run, same server, same request frames, on bare picows connections (one per
5,000 subscriptions, run concurrently), socket open -> last reply, the worst connection:
``naive`` sends one subscribe, waits for its reply, sends the next (what a naive client does);
``raw pipelined`` sends them all at once and only counts replies (what the server allows: when
alorws is close to it, the server is the bottleneck).

Servers: ``sim`` is ``python -m alorws.sim`` in its own process (``--max-subscriptions 5000``, its
default unread limit of 5000; it encodes a first quote per subscribe, so its own speed is part of
the number); ``feed`` is ``bench/_feed.py``, which only answers (the client-bound time). Each is
warmed up first with 1,000 subscriptions, unmeasured (a fresh simulator is about twice as slow
over its first few thousand).

    python bench/restore.py [--sizes 5000,20000,50000] [--repeat 3] [--servers sim,feed]
                            [--strict]
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
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import picows

from _feed import FeedProcess, pin
from alorws.client import AlorClient
from alorws.client.lane import Lane
from alorws.protocol.backoff import Backoff
from alorws.protocol.codec import StatusReply, route
from alorws.protocol.registry import SubscriptionState
from alorws.protocol.requests import QuotesRequest, encode_subscribe


INSTRUMENTS = [
    "SBER",
    "SBERP",
    "GAZP",
    "LKOH",
    "GMKN",
    "ROSN",
    "YDEX",
    "MGNT",
    "VTBR",
    "FEES",
    "SU26238RMFS4",
    "SiZ6",
    "USD000UTSTOM",
]
PER_CONNECTION = 5000
GOAL_S = 1.0  # restore, up to 20,000 subscriptions
GOAL_LARGE_S = 2.0  # restore and first subscribe, at 50,000 (the whole budget)
LARGE = 50_000


def restore_goal(n: int) -> float:
    return GOAL_S if n < LARGE else GOAL_LARGE_S


# -- servers --------------------------------------------------------------------------------


@contextlib.contextmanager
def simulator(cpu: int | None) -> Iterator[tuple[str, str]]:
    """``python -m alorws.sim`` in a subprocess; yields (url, refresh token)."""
    cmd = [sys.executable, "-m", "alorws.sim", "--port", "0", "--rate", "1"]
    cmd += ["--max-subscriptions", str(PER_CONNECTION), "--http-rate", "10000"]
    cmd += ["--no-state-file"]  # never replace the state file of a user's own simulator
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(proc.pid, {cpu % (os.cpu_count() or 1)})
        assert proc.stdout is not None
        found: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while not {"url", "refresh_token"} <= set(found):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the simulator did not start")
            key, _, value = proc.stdout.readline().strip().partition(": ")
            found[key] = value
        yield found["url"], found["refresh_token"]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def raw_feed(cpu: int | None) -> Iterator[tuple[str, str]]:
    """``bench/_feed.py``: answers every subscribe at once and sends nothing else."""
    with FeedProcess(cpu=cpu) as feed:
        feed.config(mode="none")
        yield feed.url, "bench"


def access_token(url: str, refresh: str) -> str:
    query = urllib.parse.urlencode({"token": refresh})
    req = urllib.request.Request(f"{url}/refresh?{query}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(json.loads(r.read())["AccessToken"])


def requests_for(n: int, frequency_base: int) -> list[QuotesRequest]:
    return [
        QuotesRequest(code=INSTRUMENTS[i % len(INSTRUMENTS)], frequency=frequency_base + i)
        for i in range(n)
    ]


# -- probes on the client's lanes ----------------------------------------------------------


class Probe:
    """Wraps ``Lane._connect`` and ``Lane._on_status`` to timestamp reopen and confirmations."""

    def __init__(self) -> None:
        self.opened: dict[int, float] = {}
        self.last_status: dict[int, float] = {}
        self.statuses: dict[int, int] = defaultdict(int)
        self._saved: tuple[Any, Any] | None = None

    def reset(self) -> None:
        self.opened.clear()
        self.last_status.clear()
        self.statuses.clear()

    def install(self) -> None:
        connect, on_status = Lane._connect, Lane._on_status
        self._saved = (connect, on_status)
        probe = self

        async def _connect(lane: Lane) -> Any:
            transport = await connect(lane)
            probe.opened[lane.id] = time.perf_counter()
            return transport

        def _on_status(lane: Lane, reply: StatusReply) -> None:
            on_status(lane, reply)
            probe.statuses[lane.id] += 1
            probe.last_status[lane.id] = time.perf_counter()

        Lane._connect = _connect  # type: ignore[method-assign]
        Lane._on_status = _on_status  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._saved is not None:
            Lane._connect, Lane._on_status = self._saved  # type: ignore[method-assign]
            self._saved = None


class GcClock:
    """Wall seconds the garbage collector ran (any generation, any thread) while in use."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


@dataclass
class Restore:
    restore: float  # worst lane: reopen -> last confirmation
    send_burst: float  # worst lane: lane.last_restore_seconds
    total: float  # drop -> last confirmation on any lane
    cpu: float  # this process's CPU seconds, drop -> last confirmation
    lanes: int
    extra: dict[str, Any] = field(default_factory=dict)


async def alorws_restores(
    url: str, refresh: str, n: int, repeat: int, frequency_base: int
) -> list[Restore]:
    probe = Probe()
    probe.install()
    out: list[Restore] = []
    try:
        async with AlorClient(
            refresh,
            base_url=url,
            backoff=Backoff(base=0.01, cap=0.05),
            reserve_connections=0,
            max_subscriptions_per_connection=PER_CONNECTION,
            subscribe_timeout=120,
        ) as client:
            streams = [
                client.quotes(r.code, frequency=r.frequency)
                for r in requests_for(n, frequency_base)
            ]
            with GcClock() as gc_clock:
                cpu0, t0 = time.process_time(), time.perf_counter()
                await client.subscribe_all(streams)
                subscribe_s = time.perf_counter() - t0
                subscribe_cpu = time.process_time() - cpu0
            if not all(s.is_open for s in streams):
                raise RuntimeError("the first subscribe left streams closed")
            guids = {s.guid for s in streams}
            lanes = dict(client._lanes)
            expected = {lane_id: lane.count() for lane_id, lane in lanes.items()}
            reconnects0 = client.stats()["reconnects"]
            for i in range(repeat):
                await asyncio.sleep(0.2)  # let the first quotes of the restore settle
                probe.reset()
                cpu0, t_drop = time.process_time(), time.perf_counter()
                await client.drop_connections()
                async with asyncio.timeout(60):
                    while any(probe.statuses[k] < v for k, v in expected.items()):  # noqa: ASYNC110
                        await asyncio.sleep(0.005)
                cpu = time.process_time() - cpu0
                # The probe counts replies; make sure they were all confirmations.
                states = [sub.state for sub in client._registry.subscriptions()]
                active = sum(1 for s in states if s is SubscriptionState.ACTIVE)
                if active != n or {s.guid for s in streams} != guids:
                    raise RuntimeError(f"restore {i}: {active} of {n} ACTIVE")
                restore = max(probe.last_status[k] - probe.opened[k] for k in expected)
                burst = max(lane.last_restore_seconds or 0.0 for lane in lanes.values())
                total = max(probe.last_status.values()) - t_drop
                out.append(Restore(restore, burst, total, cpu, len(lanes)))
            stats = client.stats()
            out[0].extra = {
                "subscribe_s": subscribe_s,
                "subscribe_cpu": subscribe_cpu,
                "subscribe_gc": gc_clock.seconds,
                "subscribe_reconnects": reconnects0,
                "reconnects": stats["reconnects"] - reconnects0,
                "expected_reconnects": repeat * len(lanes),
            }
    finally:
        probe.uninstall()
    return out


class _Naive(picows.WSListener):  # type: ignore[misc]
    """Hands the next status reply to whoever waits for it; drops data frames."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[StatusReply] | None = None

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type is not picows.WSMsgType.TEXT:
            return
        msg = route(frame.get_payload_as_bytes())
        waiter = self.waiter
        if isinstance(msg, StatusReply) and waiter is not None and not waiter.done():
            waiter.set_result(msg)


class _Pipelined(picows.WSListener):  # type: ignore[misc]
    """Counts status replies; resolves ``done`` at the ``expected``-th."""

    def __init__(self) -> None:
        self.expected = 0
        self.replies = 0
        self.done: asyncio.Future[float] | None = None

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type is not picows.WSMsgType.TEXT:
            return
        if isinstance(route(frame.get_payload_as_bytes()), StatusReply):
            self.replies += 1
            if self.replies == self.expected and self.done is not None:
                self.done.set_result(time.perf_counter())


async def naive_connection(ws_url: str, token: str, frames: list[bytes]) -> float:
    """One connection: subscribe one at a time; socket open -> last reply, in seconds."""
    loop = asyncio.get_running_loop()
    transport, listener = await picows.ws_connect(_Naive, ws_url)
    try:
        t_open = time.perf_counter()
        for frame in frames:
            listener.waiter = loop.create_future()
            transport.send(picows.WSMsgType.TEXT, frame)
            reply = await asyncio.wait_for(listener.waiter, 30)
            if reply.http_code != 200:
                raise RuntimeError(f"naive subscribe rejected: {reply}")
        return time.perf_counter() - t_open
    finally:
        transport.disconnect()
        await transport.wait_disconnected()


async def pipelined_connection(ws_url: str, token: str, frames: list[bytes]) -> float:
    """One connection: every subscribe in one write; socket open -> last reply, in seconds."""
    transport, listener = await picows.ws_connect(_Pipelined, ws_url)
    try:
        listener.expected = len(frames)
        listener.done = asyncio.get_running_loop().create_future()
        t_open = time.perf_counter()
        for frame in frames:
            transport.send(picows.WSMsgType.TEXT, frame)
        return await asyncio.wait_for(listener.done, 60) - t_open
    finally:
        transport.disconnect()
        await transport.wait_disconnected()


async def raw_restore(url: str, refresh: str, n: int, frequency_base: int, how: str) -> float:
    """The worst connection of a raw restore: ``naive`` (one round trip per subscription) or
    ``pipelined`` (everything at once, nothing else: what the server allows)."""
    token = await asyncio.to_thread(access_token, url, refresh)
    frames = [
        encode_subscribe(r, guid=f"{how}-{i}", token=token)
        for i, r in enumerate(requests_for(n, frequency_base))
    ]
    chunks = [frames[i : i + PER_CONNECTION] for i in range(0, n, PER_CONNECTION)]
    ws_url = url.replace("http", "ws", 1) + "/ws"
    conn = naive_connection if how == "naive" else pipelined_connection
    return max(await asyncio.gather(*(conn(ws_url, token, c) for c in chunks)))


# -- driver ---------------------------------------------------------------------------------


async def warm_up(url: str, refresh: str, frequency_base: int) -> None:
    """Subscribe and drop 1,000 streams, unmeasured: a fresh simulator takes about twice as long
    over its first thousands of subscribes (its own warm-up), which is not the client's."""
    async with AlorClient(
        refresh,
        base_url=url,
        reserve_connections=0,
        max_subscriptions_per_connection=PER_CONNECTION,
    ) as client:
        await client.subscribe_all(
            [
                client.quotes(r.code, frequency=r.frequency)
                for r in requests_for(1000, frequency_base)
            ]
        )


async def bench_server(name: str, url: str, refresh: str, args: argparse.Namespace) -> list[Any]:
    rows = []
    await warm_up(url, refresh, args.frequency_base)
    await asyncio.sleep(0.3)
    for n in args.sizes:
        runs = await alorws_restores(url, refresh, n, args.repeat, args.frequency_base)
        await asyncio.sleep(0.3)  # the server forgets the closed connections
        naive = await raw_restore(url, refresh, n, args.frequency_base, "naive")
        await asyncio.sleep(0.3)
        floor = await raw_restore(url, refresh, n, args.frequency_base, "pipelined")
        await asyncio.sleep(0.3)
        rows.append((name, n, runs, naive, floor))
    return rows


async def run(args: argparse.Namespace) -> bool:
    results = []
    other_cpu = None if args.no_pin else 1
    for server in args.servers:
        ctx = simulator(other_cpu) if server == "sim" else raw_feed(other_cpu)
        with ctx as (url, refresh):
            results += await bench_server(server, url, refresh, args)
    print(
        f"Python {sys.version.split()[0]}; bench {args.pinned}, server in its own process"
        f"{'' if args.no_pin else ' on the other CPU'}; alorws: median (worst) of {args.repeat} "
        "drops; seconds from the socket reopening to the last confirmation, worst connection"
    )
    print(
        "naive: one round trip per subscription; raw pipelined: every subscribe in one burst on "
        "a bare picows connection (the server's floor); same run, same frames"
    )
    head = (
        f"{'server':<6} {'subs':>6} {'conns':>5} {'alorws restore':>15} {'send burst':>11} "
        f"{'drop->active':>13} {'naive':>7} {'x naive':>8} {'raw pipelined':>14}  "
        f"goal <= {GOAL_S:g} s ({GOAL_LARGE_S:g} s at {LARGE:,})"
    )
    print(head)
    print("-" * len(head))
    ok_all = True
    for server, n, runs, naive, floor in results:
        rs = [r.restore for r in runs]
        med = statistics.median(rs)
        worst = max(rs)
        burst = statistics.median(r.send_burst for r in runs)
        total = statistics.median(r.total for r in runs)
        goal = restore_goal(n)
        ok = med <= goal
        if server == "sim":
            ok_all &= ok
        verdict = "ok" if ok else "MISSED"
        if ok and worst > goal:
            verdict = "ok (worst drop over)"
        restore = f"{med:.3f} ({worst:.3f})"
        print(
            f"{server:<6} {n:>6,} {runs[0].lanes:>5} {restore:>15} {burst:>11.3f} "
            f"{total:>13.3f} {naive:>7.3f} {naive / med:>7.1f}x {floor:>14.3f}  "
            f"{verdict}"
        )
    print()
    print(
        "first subscribe: one client.subscribe_all() of every stream, call -> every stream "
        "confirmed (gc: of that, the garbage collector); beside the restore of the same streams "
        "(median drop->active); client CPU = this process's CPU seconds"
    )
    head = (
        f"{'server':<6} {'subs':>6} {'conns':>5} {'first subscribe':>16} {'gc':>6} "
        f"{'client CPU':>11} {'restore':>8} {'client CPU':>11} {'first/restore':>14}  "
        f"goal: first <= {GOAL_LARGE_S:g} s at {LARGE:,}"
    )
    print(head)
    print("-" * len(head))
    for server, n, runs, _, _ in results:
        e = runs[0].extra
        first = e["subscribe_s"]
        total = statistics.median(r.total for r in runs)
        cpu = statistics.median(r.cpu for r in runs)
        ok = n < LARGE or first <= GOAL_LARGE_S
        if server == "sim":
            ok_all &= ok
        verdict = "ok" if ok else "MISSED"
        print(
            f"{server:<6} {n:>6,} {runs[0].lanes:>5} {first:>16.3f} {e['subscribe_gc']:>6.3f} "
            f"{e['subscribe_cpu']:>11.3f} {total:>8.3f} {cpu:>11.3f} {first / total:>13.1f}x  "
            f"{verdict}"
        )
    print()
    for server, n, runs, _, _ in results:
        e = runs[0].extra
        if e["subscribe_reconnects"]:
            print(
                f"{server} {n:,}: {e['subscribe_reconnects']} reconnect(s) during the first "
                "subscribe (the server closed connections)"
            )
        if e["reconnects"] != e["expected_reconnects"]:
            print(
                f"{server} {n:,}: reconnects {e['reconnects']} for {e['expected_reconnects']} "
                "lane drops (the server closed connections during a restore)"
            )
    return ok_all


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="5000,20000,50000", help="subscription counts")
    ap.add_argument("--repeat", type=int, default=3, help="drops per size")
    ap.add_argument("--servers", default="sim,feed", help="sim and/or feed")
    ap.add_argument("--frequency-base", type=int, default=60_000, help="ms; + i per request")
    ap.add_argument("--no-pin", action="store_true", help="do not pin bench and server to CPUs")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = ap.parse_args()
    args.sizes = [int(x) for x in args.sizes.split(",")]
    args.servers = [x.strip() for x in args.servers.split(",") if x.strip()]
    args.pinned = "not pinned" if args.no_pin else pin(0)
    ok = asyncio.run(run(args))
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
