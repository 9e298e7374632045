"""Messages/s from the socket to a typed consumer, burst unread and added latency, side by side.

One fast raw feed (``bench/_feed.py``, a separate process pinned to the other core: the simulator
tops out below what the client reads) sends the same TV-07-like Simple quote frames (~540 bytes)
to every stack, one stack at a time, in the same run:

* **alorws queue**: ``AlorClient`` + ``client.quotes(policy="queue")``; the consumer reads with
  ``get_batch(1000)`` and touches ``last_price`` of every typed ``Quote`` (lossless);
* **alorws latest**: the same with ``policy="latest"``; only what the consumer takes is decoded,
  the rest is conflated undecoded (delivered vs. received is printed);
* **AlorPy pattern**: what AlorPy (cia76/AlorPy, ``websocket_thread``) does per message, as
  published: websockets' sync client read in its own thread, ``json.loads``, ``'data' in``, guid
  lookup in the subscription dict, the debug f-string of the whole message (built even with
  debug logging off), the opcode if-chain and an ``Event.trigger`` callback in the reader (the
  consumer: touch ``last_price``). The baseline of the ratios: the usual pattern of existing
  ALOR clients;
* **AlorPy pattern on aiohttp**: the same per-message work on aiohttp's client, read in this
  loop: a faster transport than AlorPy's, printed as a second, stricter ratio;
* **picows + msgspec**: a bare picows reader doing route + typed decode in its callback (no
  buffers, no thread: the ceiling of the client's design), and **picows, no decode** (the
  feed's and transport's ceiling, showing the feed is not the bottleneck).

Four scenarios:

1. throughput: ``--frames`` frames blasted as fast as the socket takes them; messages/s = frames /
   (feed's first write -> consumer has the last frame), ``--repeat`` round-robin rounds; ratios are
   paired (per round, against the baseline's run of the same round), median over the rounds;
2. burst: 50,000 frames generated at 150,000 frames/s whatever the client does; the consumer
   sleeps 1 ms (``time.sleep``: synchronous work) per 100 messages. The feed reports the peak
   *unread*: frames generated but not yet accepted by the kernel (its transport write buffer is
   16 KB; socket buffers are the OS's. A small SO_SNDBUF is an option, ``--burst-sndbuf``, but on
   loopback it makes TCP stall by itself: even a reader that does nothing else falls behind);
3. latency: 20,000 frames/s, 10 s per stack in 20 interleaved 0.5 s slices; the feed stamps every
   frame with ``perf_counter_ns`` as it writes it (CLOCK_MONOTONIC: one clock for both
   processes); latency = consumer has the typed quote - stamp. Added latency = the alorws
   percentile - the picows + msgspec percentile, two ways: per round against the base's slice of
   the same round, median over the rounds; and in the quiet slices (each stack's lower quartile
   of its per-slice p99s: this VM's pauses of milliseconds land in a few slices and would
   otherwise decide p99). The goal asks both to hold. ``io_thread=False`` (network in the
   consumer's loop) is shown to separate the thread handoff from the rest;
4. cpu: the same paced feed at a steady ``--cpu-rate`` (20,000 frames/s) for ``--cpu-seconds``
   per stack and round, ``--cpu-rounds`` round-robin rounds (order rotated), every stack above
   plus alorws with ``io_thread=False``. At a steady rate nearly every frame arrives in a socket
   read of its own, so this shows what a stack pays per wake-up where a blast shows what it pays
   per message. Reported: CPU time of this process (every thread, ``time.process_time``) from
   the consumer's first message to its last, per frame sent, and the share of one core; "CPU vs
   bare loop" is paired, per round against the picows + msgspec reader's run of the same round,
   median over the rounds; and for alorws the consumer's wake-ups per message pushed.

``--coalesce-us 200,1000`` adds an alorws queue stack per value, with
``AlorClient(coalesce_us=...)``, to the latency and cpu scenarios.

TLS: ``--tls`` runs the selected scenarios over plain ws, then again over wss; ``--tls-only`` runs
only the latter. The feed serves TLS with a self-signed certificate generated for ``127.0.0.1``
at run time (the simulator's ``make_self_signed_cert``: the ``cryptography`` package when
installed, else the ``openssl`` command), and every stack verifies it with that CA (alorws:
``AlorClient(cafile=...)``; the others an ``ssl.SSLContext`` loaded from it). ALOR serves wss
only. The goals are printed per transport, then the ratios of both side by side.

    python bench/throughput.py [--frames 100000] [--repeat 5] [--latency-seconds 10]
                               [--only throughput,burst,latency,cpu] [--latency-alorpy]
                               [--cpu-seconds 3] [--cpu-rounds 3] [--coalesce-us 200,1000]
                               [--tls | --tls-only] [--no-pin] [--loop uvloop|asyncio] [--strict]

Every event loop of the bench (the base's, the consumer's, the client's I/O loop) runs on uvloop
where it is installed (the dev extras install it; docs/client.md recommends it for latency), or
on asyncio's own with ``--loop asyncio``. The AlorPy baseline reads in its own thread with
websockets' sync client and uses no event loop.

Goals: lossless typed quotes >= 10x the AlorPy pattern, latest >= 20x, peak unread of
the burst < 1,000, added p99 latency <= 100 us, CPU at the steady rate with the I/O thread <= 1.2x
the bare picows + msgspec loop. The header says which reader ran: the compiled one, or the
pure-Python one (not built, or ``ALORWS_PURE_PYTHON=1``). ``--strict`` exits 1 when one is
missed (the machine is noisy: the default run only reports).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import logging
import os
import resource
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from json import JSONDecodeError, loads
from typing import Any

import aiohttp
import picows
from websockets.sync.client import ClientConnection as SyncConnection, connect as sync_connect

from _feed import LAST_VOLUME, FeedProcess, percentile, pin, subscribe_frame
from alorws.client import COMPILED_READER, AlorClient
from alorws.protocol.backoff import Backoff
from alorws.protocol.codec import DataMessage, decoder_for, route
from alorws.protocol.enums import Format
from alorws.protocol.market import Quote


SYMBOL = "LKOH"
FAST_BACKOFF = Backoff(base=0.01, cap=0.05)
_TEXT = picows.WSMsgType.TEXT


@dataclass
class Run:
    """One stack's run: frames handled and when."""

    frames: int
    end_ns: int  # consumer has the last frame (perf_counter_ns)
    start_ns: int = 0  # the feed's first write (filled from the feed's stats)
    delivered: int | None = None  # latest policy: items handed to the consumer
    received: int | None = None  # frames the client read from the socket
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.frames / max(self.end_ns - self.start_ns, 1) * 1e9


# -- stacks ---------------------------------------------------------------------------------
# Each stack subscribes once on a fresh connection and consumes ``n`` frames. ``consume`` gets
# every typed quote (or dict) in the consumer; it is where the slow consumer sleeps and where
# latency is sampled. It returns nothing; the stack counts.

Consume = Callable[[Any], None]


async def alorws_stack(
    feed: FeedProcess,
    n: int,
    policy: str,
    consume: Consume | None = None,
    io_thread: bool = True,
    **options: Any,
) -> Run:
    """AlorClient, one quotes stream; the consumer in this loop, the network in the I/O thread
    (or in this loop too, with ``io_thread=False``). ``options`` go to ``AlorClient``."""
    async with AlorClient(
        "bench",
        base_url=feed.url,
        cafile=feed.cafile,
        backoff=FAST_BACKOFF,
        io_thread=io_thread,
        **options,
    ) as client:
        async with client.quotes(SYMBOL, policy=policy, max_buffer=n + 16) as stream:
            acc = 0.0
            if policy == "queue":
                got = 0
                while got < n:
                    batch = await stream.get_batch(1000)
                    if consume is None:
                        for q in batch:
                            acc += q.last_price  # type: ignore[operator]
                    else:
                        for q in batch:
                            consume(q)
                    got += len(batch)
                end = time.perf_counter_ns()
                delivered = got
            else:
                delivered = 0
                while True:
                    q = await stream.get()
                    delivered += 1
                    if consume is None:
                        acc += q.last_price  # type: ignore[operator]
                    else:
                        consume(q)
                    if q.volume == LAST_VOLUME:  # the feed's last frame
                        break
                end = time.perf_counter_ns()
            sstats = stream.stats()
            received = client.stats()["messages"] - 1  # minus the status reply
    extra = {k: sstats[k] for k in ("max_depth", "conflated", "pushed", "wakeups", "parks")}
    return Run(n, end, delivered=delivered, received=received, extra=extra)


class _Event:
    """AlorPy's ``Event``: a set of callbacks, triggered in the reader."""

    def __init__(self) -> None:
        self._callbacks: set[Callable[..., None]] = set()

    def subscribe(self, callback: Callable[..., None]) -> None:
        self._callbacks.add(callback)

    def trigger(self, *args: Any) -> None:
        for callback in self._callbacks:
            callback(*args)


class AlorPyPattern:
    """The per-message work of AlorPy's ``websocket_thread`` (cia76/AlorPy, 2026-02)."""

    logger = logging.getLogger("AlorPy")

    def __init__(self) -> None:
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.on_change_order_book = _Event()
        self.on_new_bar = _Event()
        self.on_new_quotes = _Event()
        self.on_all_trades = _Event()

    def handle(self, response_json: str) -> None:
        """One message, as ``websocket_thread`` handles it after ``recv()``."""
        try:
            response = loads(response_json)
        except JSONDecodeError:
            self.logger.warning(f"websocket_handler: not JSON {response_json}")  # noqa: G004
            return
        if "data" not in response:  # a status reply
            return
        guid = response["guid"]
        if guid not in self.subscriptions:
            self.logger.debug(f"websocket_handler: unknown subscription {guid}")  # noqa: G004
            return
        subscription = self.subscriptions[guid]
        opcode = subscription["opcode"]
        self.logger.debug(
            f"websocket_handler: Пришли данные подписки {opcode} - {guid} - {response}"  # noqa: G004
        )
        if opcode == "OrderBookGetAndSubscribe":
            self.on_change_order_book.trigger(response)
        elif opcode == "BarsGetAndSubscribe":
            self.on_new_bar.trigger(response)
        elif opcode == "QuotesSubscribe":
            self.on_new_quotes.trigger(response)
        elif opcode == "AllTradesGetAndSubscribe":
            self.on_all_trades.trigger(response)

    def read_sync(self, ws: SyncConnection, n: int, counted: Callable[[], int]) -> None:
        """AlorPy's loop: ``recv()`` in its own thread (websockets' sync client), until ``n``."""
        while counted() < n:
            self.handle(ws.recv())  # type: ignore[arg-type]

    async def read_aiohttp(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The same per-message work on aiohttp, in this event loop (a faster transport)."""
        while True:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return
            self.handle(msg.data)


class _DictQuote:
    """Gives the consumer callbacks the same ``q.last_price``/``q.ob_ms_timestamp`` view."""

    __slots__ = ("last_price", "ob_ms_timestamp", "volume")

    def __init__(self, data: dict[str, Any]) -> None:
        self.last_price = data["last_price"]
        self.ob_ms_timestamp = data["ob_ms_timestamp"]
        self.volume = data["volume"]


def _aiohttp_ssl(feed: FeedProcess) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl=``: the feed's CA over TLS, the default (verify) otherwise."""
    return feed.client_ssl() or True


async def _token(feed: FeedProcess) -> str:
    async with aiohttp.ClientSession() as session:
        url = feed.url + "/refresh"
        async with session.post(url, params={"token": "bench"}, ssl=_aiohttp_ssl(feed)) as r:
            return str((await r.json())["AccessToken"])


def _alorpy_app(
    n: int, consume: Consume | None, on_end: Callable[[int], None] | None = None
) -> tuple[AlorPyPattern, list[int]]:
    """The pattern with one quotes callback; ``state`` is [count, end_ns]."""
    app = AlorPyPattern()
    state = [0, 0]
    acc = 0.0

    def on_new_quotes(response: dict[str, Any]) -> None:
        nonlocal acc
        data = response["data"]
        if consume is None:
            acc += data["last_price"]
        else:
            consume(_DictQuote(data))
        state[0] += 1
        if state[0] == n:
            state[1] = time.perf_counter_ns()
            if on_end is not None:
                on_end(state[1])

    app.on_new_quotes.subscribe(on_new_quotes)
    return app, state


def _alorpy_subscribe(app: AlorPyPattern, token: str) -> str:
    guid = "alorpy-1"
    request = {"opcode": "QuotesSubscribe", "code": SYMBOL, "exchange": "MOEX"}
    request |= {"format": "Simple", "frequency": 0, "guid": guid, "token": token}
    app.subscriptions[guid] = request
    return json.dumps(request)


async def alorpy_stack(feed: FeedProcess, n: int, consume: Consume | None = None) -> Run:
    """AlorPy as published: websockets' sync client read in its own thread, callbacks inside
    that reader (this loop only waits for it, as AlorPy's caller does)."""
    token = await _token(feed)
    app, state = _alorpy_app(n, consume)

    # websockets refuses ssl= for a ws:// URI: pass it only over TLS.
    tls: dict[str, Any] = {"ssl": feed.client_ssl()} if feed.tls else {}

    def thread() -> None:
        with sync_connect(feed.ws_url, max_size=None, **tls) as ws:
            ws.send(_alorpy_subscribe(app, token))
            app.read_sync(ws, n, lambda: state[0])

    await asyncio.to_thread(thread)
    return Run(n, state[1])


async def alorpy_aiohttp_stack(feed: FeedProcess, n: int, consume: Consume | None = None) -> Run:
    """AlorPy's per-message work on aiohttp's client, read in this loop: a faster transport
    than AlorPy's, shown as the stricter baseline."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    token = await _token(feed)
    app, state = _alorpy_app(n, consume, done.set_result)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            feed.ws_url, max_msg_size=0, autoping=True, ssl=_aiohttp_ssl(feed)
        ) as ws:
            await ws.send_str(_alorpy_subscribe(app, token))
            task = loop.create_task(app.read_aiohttp(ws))
            await done
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    return Run(n, state[1])


class _PicowsReader(picows.WSListener):  # type: ignore[misc]
    """A bare picows reader: count, or route + typed decode + consume, in the callback."""

    def __init__(self, n: int, done: asyncio.Future[int], decode: bool, consume: Consume | None):
        self.n = n
        self.done = done
        self.decode = decode
        self.consume = consume
        self.count = 0
        self.acc = 0.0
        self.dec = decoder_for(Quote, Format.SIMPLE)

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type is not _TEXT:
            return
        if self.decode:
            msg = route(frame.get_payload_as_bytes())
            if type(msg) is not DataMessage:
                return
            q = self.dec.decode(msg.data)
            if self.consume is None:
                self.acc += q.last_price
            else:
                self.consume(q)
        else:
            if frame.get_payload_as_memoryview()[2:6] != b"data":
                return  # the status reply
            if self.consume is not None:
                self.consume(None)  # counted only (the CPU window)
        self.count += 1
        if self.count == self.n and not self.done.done():
            self.done.set_result(time.perf_counter_ns())


async def picows_stack(
    feed: FeedProcess, n: int, decode: bool = True, consume: Consume | None = None
) -> Run:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    transport, _ = await picows.ws_connect(
        lambda: _PicowsReader(n, done, decode, consume),
        feed.ws_url,
        ssl_context=feed.client_ssl(),
        max_frame_size=1 << 24,
    )
    try:
        transport.send(_TEXT, subscribe_frame("picows-1"))
        end = await done
    finally:
        transport.disconnect()
        await transport.wait_disconnected()
    return Run(n, end)


# -- driver ---------------------------------------------------------------------------------

Stack = Callable[[FeedProcess, int], Awaitable[Run]]

ALORPY = "AlorPy pattern (websockets thread)"
ALORPY_AIOHTTP = "AlorPy pattern on aiohttp (in loop)"


def throughput_stacks() -> list[tuple[str, Stack]]:
    return [
        ("alorws queue (lossless, typed)", lambda f, n: alorws_stack(f, n, "queue")),
        ("alorws latest (lazy decode)", lambda f, n: alorws_stack(f, n, "latest")),
        (ALORPY, alorpy_stack),
        (ALORPY_AIOHTTP, alorpy_aiohttp_stack),
        ("picows + msgspec in the reader", lambda f, n: picows_stack(f, n, decode=True)),
        ("picows, no decode (ceiling)", lambda f, n: picows_stack(f, n, decode=False)),
    ]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(feed: FeedProcess, stack: Stack, n: int, **cfg: Any) -> Run:
    feed.config(n=n, **cfg)
    gc.collect()
    cpu = _cpu()
    run = await stack(feed, n)
    run.extra["cpu_us"] = (_cpu() - cpu) / n * 1e6  # this process, every thread, per frame
    stats = feed.stats()
    run.start_ns = stats["t_first_ns"]
    run.extra["feed"] = stats
    return run


async def scenario_throughput(
    feed: FeedProcess, args: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    stacks = throughput_stacks()
    runs: dict[str, list[Run]] = {name: [] for name, _ in stacks}
    for _ in range(args.repeat):  # round robin: drift hits every stack alike
        for name, stack in stacks:
            runs[name].append(await measure(feed, stack, args.frames, mode="blast"))

    def med(name: str) -> Run:
        rs = sorted(runs[name], key=lambda r: r.rate)
        return rs[len(rs) // 2]

    def paired(name: str, base: str) -> float:
        """Median over the rounds of this stack's rate / the base's rate in the same round:
        the machine's speed drifts between rounds, and both runs of a round see the same."""
        return statistics.median(
            mine.rate / theirs.rate for mine, theirs in zip(runs[name], runs[base], strict=True)
        )

    print(
        f"\n1. Throughput: {args.frames:,} frames blasted per run, {args.repeat} rounds (round "
        "robin); msgs/s: the median run. ratio: against the AlorPy pattern as published\n"
        "(websockets' sync client in a thread); vs aiohttp: against the same work on aiohttp in "
        "the loop (a faster transport).\nBoth ratios are paired: per round, this stack's rate "
        "over the baseline's of the same round, median over the rounds."
    )
    head = (
        f"{'stack':<40} {'msgs/s':>10} {'ratio':>7} {'vs aiohttp':>10} {'spread':>7} "
        f"{'CPU µs/msg':>11}  notes"
    )
    print(head)
    print("-" * (len(head) + 30))
    ratios: dict[str, tuple[float, float]] = {}
    for name, _ in stacks:
        r = med(name)
        rs = [x.rate for x in runs[name]]
        spread = (max(rs) - min(rs)) / statistics.median(rs)
        note = ""
        if r.delivered is not None and r.received is not None:
            if name.startswith("alorws latest"):
                note = f"delivered {r.delivered:,} of {r.received:,} received"
            else:
                note = f"delivered {r.delivered:,}, max buffer depth {r.extra['max_depth']:,}"
        ratios[name] = (paired(name, ALORPY), paired(name, ALORPY_AIOHTTP))
        cpu = statistics.median(x.extra["cpu_us"] for x in runs[name])
        print(
            f"{name:<40} {r.rate:>10,.0f} {ratios[name][0]:>6.1f}x {ratios[name][1]:>9.1f}x "
            f"{spread:>6.0%} {cpu:>11.2f}  {note}"
        )
    print(
        "spread: (max - min) / median of the runs. CPU µs/msg: CPU time of this process (every "
        "thread) per message,\nsteadier than msgs/s when other work shares the machine."
    )
    return ratios


def _slow_consumer(every: int = 100, pause: float = 0.001) -> Consume:
    """Sleeps ``pause`` s (synchronously: it stands for work) per ``every`` messages."""
    count = 0

    def consume(q: Any) -> None:
        nonlocal count
        count += 1
        if count % every == 0:
            time.sleep(pause)

    return consume


async def scenario_burst(feed: FeedProcess, args: argparse.Namespace) -> tuple[float, int, int]:
    cfg = {
        "mode": "paced",
        "rate": args.burst_rate,
        "high_water": args.burst_high_water,
        "sndbuf": args.burst_sndbuf,
    }
    stacks: list[tuple[str, Stack]] = [
        ("picows reader, no consumer (floor)", lambda f, n: picows_stack(f, n, decode=True)),
        (
            "alorws queue, slow consumer",
            lambda f, n: alorws_stack(f, n, "queue", _slow_consumer()),
        ),
        (
            "alorws latest, slow consumer",
            lambda f, n: alorws_stack(f, n, "latest", _slow_consumer()),
        ),
        ("AlorPy pattern, slow callback inline", lambda f, n: alorpy_stack(f, n, _slow_consumer())),
    ]
    peaks: dict[str, list[int]] = {name: [] for name, _ in stacks}
    drains: dict[str, list[float]] = {name: [] for name, _ in stacks}
    depths: dict[str, list[int]] = {name: [] for name, _ in stacks}
    for _ in range(args.burst_repeat):
        for name, stack in stacks:
            run = await measure(feed, stack, args.burst, **cfg)
            peaks[name].append(run.extra["feed"]["peak_unread"])
            drains[name].append((run.end_ns - run.start_ns) / 1e9)
            if "max_depth" in run.extra:
                depths[name].append(run.extra["max_depth"])
    print(
        f"\n2. Burst: {args.burst:,} frames at {args.burst_rate:,.0f} frames/s, consumer sleeps "
        f"1 ms per 100 messages; feed write buffer {args.burst_high_water // 1024} KB, "
        f"SO_SNDBUF {f'{args.burst_sndbuf // 1024} KB' if args.burst_sndbuf else 'OS default'}; "
        f"{args.burst_repeat} runs"
    )
    head = (
        f"{'stack':<38} {'peak unread (median, max)':>26} {'consumer done after':>20} "
        f"{'client buffer max':>18}"
    )
    print(head)
    print("-" * len(head))
    for name, _ in stacks:
        ps = peaks[name]
        peak = f"{statistics.median(ps):,.0f} ({max(ps):,})"
        depth = f"{max(depths[name]):,}" if depths[name] else "-"
        print(f"{name:<38} {peak:>26} {statistics.median(drains[name]):>18.2f} s {depth:>18}")
    mine = peaks["alorws queue, slow consumer"]
    return statistics.median(mine), max(mine), max(peaks[stacks[0][0]])


async def scenario_latency(
    feed: FeedProcess, args: argparse.Namespace
) -> tuple[float, float, float]:
    # Interleaved: each stack runs ``rounds`` slices of the total time, round robin, so a burst
    # of load on the machine hits every stack alike; samples are pooled per stack.
    rounds = max(1, args.latency_rounds)
    n = int(args.latency_rate * args.latency_seconds / rounds)
    cfg = {"mode": "paced", "rate": args.latency_rate, "stamp": True}
    skip = min(n // 5, int(args.latency_rate * 0.1))  # warm-up: the first 0.1 s of a slice

    def sampler(out: list[int]) -> Consume:
        clock = time.perf_counter_ns

        def consume(q: Any) -> None:
            out.append(clock() - q.ob_ms_timestamp)

        return consume

    stacks: list[tuple[str, Callable[[list[int]], Stack]]] = [
        (
            "picows + msgspec in the reader (base)",
            lambda out: lambda f, n: picows_stack(f, n, True, sampler(out)),
        ),
        (
            "alorws queue, get_batch consumer",
            lambda out: lambda f, n: alorws_stack(f, n, "queue", sampler(out)),
        ),
        (
            "alorws queue, io_thread=False",
            lambda out: lambda f, n: alorws_stack(f, n, "queue", sampler(out), io_thread=False),
        ),
    ]
    for name, make in _coalesce_stacks(args):
        stacks.append((name, lambda out, make=make: make(sampler(out))))  # type: ignore[misc]
    if args.latency_alorpy:
        stacks.append(
            (
                ALORPY,
                lambda out: lambda f, n: alorpy_stack(f, n, sampler(out)),
            )
        )
    slices: dict[str, list[list[float]]] = {name: [] for name, _ in stacks}
    for r in range(rounds):
        # Rotate the order each round: whatever follows a client's shutdown is not always the base.
        for name, make in stacks[r % len(stacks) :] + stacks[: r % len(stacks)]:
            samples: list[int] = []
            await measure(feed, make(samples), n, **cfg)
            slices[name].append(sorted(x / 1000 for x in samples[skip:]))
    base_name = stacks[0][0]
    print(
        f"\n3. Latency: {args.latency_rate:,.0f} frames/s, {args.latency_seconds:g} s per stack in "
        f"{rounds} interleaved slices; feed stamp -> typed quote in the consumer, µs "
        f"(first {skip:,} frames of a slice skipped as warm-up)"
    )
    head = (
        f"{'stack':<40} {'p50':>6} {'p90':>6} {'p99':>7} {'p99.9':>7} {'max':>7} "
        f"{'added p50':>10} {'added p99':>10}"
    )
    print(head)
    print("-" * len(head))
    # Each slice's p50 and p99 per stack, computed once for every estimate below.
    per_slice = {
        name: {q: [percentile(part, q) for part in slices[name]] for q in (50, 99)}
        for name, _ in stacks
    }
    added_p99: dict[str, float] = {}
    spreads: list[str] = []
    for name, _ in stacks:
        us = sorted(x for part in slices[name] for x in part)
        p50, p90, p99, p999 = (percentile(us, q) for q in (50, 90, 99, 99.9))
        added = ""
        if name != base_name:
            # Per slice, minus the base's slice of the same round; the median over the rounds
            # (one slice hit by a burst of load on the machine does not decide it).
            ours, base = per_slice[name], per_slice[base_name]
            d50, d99 = (
                sorted(a - b for a, b in zip(ours[q], base[q], strict=True)) for q in (50, 99)
            )
            added_p99[name] = statistics.median(d99)
            added = f"{statistics.median(d50):>+10.0f} {added_p99[name]:>+10.0f}"
            q1, _, q3 = statistics.quantiles(d99, n=4) if len(d99) > 1 else (d99[0],) * 3
            spreads.append(f"  {name}: {q1:+,.0f} .. {q3:+,.0f} µs")
        print(f"{name:<40} {p50:>6.0f} {p90:>6.0f} {p99:>7.0f} {p999:>7.0f} {us[-1]:>7.0f} {added}")
    base_p99 = per_slice[base_name][99]
    print(
        "added: alorws minus the base, per slice against the base's slice of the same round, "
        f"median over the rounds.\nThe base's own p99 ranged {min(base_p99):,.0f}-"
        f"{max(base_p99):,.0f} µs between slices: that is this machine's noise floor for p99.\n"
        "Added p99 per round, middle half of the rounds (quartiles):"
    )
    print("\n".join(spreads))
    # Each stack's p99 in its quieter slices: the lowest and the lower quartile of its per-slice
    # p99s. Pauses of the VM land in a few slices and push them up by milliseconds; the quiet
    # slices show what the stack itself costs.
    quiet: dict[str, tuple[float, float]] = {}
    for name, _ in stacks:
        p99s = sorted(per_slice[name][99])
        quiet[name] = (p99s[0], percentile(p99s, 25))
    print("p99 in the quiet slices, µs (lowest slice, lower quartile of slices; added: - base):")
    for name, _ in stacks:
        low, q1 = quiet[name]
        added = ""
        if name != base_name:
            added = f"   added {low - quiet[base_name][0]:+,.0f}, {q1 - quiet[base_name][1]:+,.0f}"
        print(f"  {name:<40} {low:>7,.0f} {q1:>7,.0f}{added}")
    mine = stacks[1][0]
    return added_p99[mine], quiet[mine][1] - quiet[base_name][1], max(base_p99) - min(base_p99)


class _CpuWindow:
    """A consumer that counts: CPU time of this process (every thread) and wall time from the
    first message taken to the last (the feed's sentinel, or the ``n``-th), so connecting,
    subscribing and shutting down stay out of the window."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.cpu0 = self.cpu1 = 0.0
        self.t0 = self.t1 = 0

    def __call__(self, q: Any) -> None:
        self.count += 1
        if self.count == 1:
            self.t0 = time.perf_counter_ns()
            self.cpu0 = time.process_time()
        elif self.count == self.n or (q is not None and q.volume == LAST_VOLUME):
            self.cpu1 = time.process_time()
            self.t1 = time.perf_counter_ns()

    @property
    def cpu_us(self) -> float:
        """CPU µs per frame the feed sent in the window (taken or conflated)."""
        return (self.cpu1 - self.cpu0) / max(self.n - 1, 1) * 1e6

    @property
    def core(self) -> float:
        """Share of one core busy in the window."""
        return (self.cpu1 - self.cpu0) / max(self.t1 - self.t0, 1) * 1e9


def _coalesce_stacks(
    args: argparse.Namespace,
) -> list[tuple[str, Callable[[Consume], Stack]]]:
    """``--coalesce-us``: the alorws queue stack with ``AlorClient(coalesce_us=...)``."""
    out: list[tuple[str, Callable[[Consume], Stack]]] = []
    for us in args.coalesce:

        def make(consume: Consume, us: int = us) -> Stack:
            return lambda f, n: alorws_stack(f, n, "queue", consume, coalesce_us=us)

        out.append((f"alorws queue, coalesce_us={us}", make))
    return out


CPU_BASE = "picows + msgspec in the reader (base)"
CPU_MINE = "alorws queue (I/O thread)"


async def scenario_cpu(feed: FeedProcess, args: argparse.Namespace) -> dict[str, float]:
    # Steady rate: every frame arrives in a socket read of its own, so this is what a stack
    # pays per wake-up, where a blast shows what it pays per message.
    rounds = max(1, args.cpu_rounds)
    n = int(args.cpu_rate * args.cpu_seconds)
    cfg = {"mode": "paced", "rate": args.cpu_rate}
    stacks: list[tuple[str, Callable[[Consume], Stack]]] = [
        (CPU_BASE, lambda c: lambda f, n: picows_stack(f, n, True, c)),
        (CPU_MINE, lambda c: lambda f, n: alorws_stack(f, n, "queue", c)),
        (
            "alorws queue, io_thread=False",
            lambda c: lambda f, n: alorws_stack(f, n, "queue", c, io_thread=False),
        ),
        ("alorws latest (I/O thread)", lambda c: lambda f, n: alorws_stack(f, n, "latest", c)),
        *_coalesce_stacks(args),
        (ALORPY, lambda c: lambda f, n: alorpy_stack(f, n, c)),
        (ALORPY_AIOHTTP, lambda c: lambda f, n: alorpy_aiohttp_stack(f, n, c)),
        ("picows, no decode", lambda c: lambda f, n: picows_stack(f, n, False, c)),
    ]
    windows: dict[str, list[_CpuWindow]] = {name: [] for name, _ in stacks}
    wakes: dict[str, list[float]] = {name: [] for name, _ in stacks}
    for r in range(rounds):
        # Rotate the order each round, as the latency scenario does.
        for name, make in stacks[r % len(stacks) :] + stacks[: r % len(stacks)]:
            window = _CpuWindow(n)
            run = await measure(feed, make(window), n, **cfg)
            windows[name].append(window)
            if "wakeups" in run.extra:
                wakes[name].append(run.extra["wakeups"] / max(run.extra["pushed"], 1))
    print(
        f"\n4. CPU at a steady rate: {args.cpu_rate:,.0f} frames/s, {args.cpu_seconds:g} s per "
        f"stack and round, {rounds} rounds (round robin, order rotated); CPU time of this "
        "process\n(every thread) from the first message taken to the last, per frame sent, "
        "and the share of one core. vs bare loop: paired, per round against\nthe base's run "
        "of the same round, median over the rounds (range in brackets)."
    )
    head = (
        f"{'stack':<40} {'CPU µs/msg':>11} {'% core':>7} {'vs bare loop':>13} "
        f"{'(range)':>13} {'msgs/s':>8}  notes"
    )
    print(head)
    print("-" * (len(head) + 20))
    ratios: dict[str, float] = {}
    base = windows[CPU_BASE]
    for name, _ in stacks:
        ws = windows[name]
        cpu = statistics.median(w.cpu_us for w in ws)
        core = statistics.median(w.core for w in ws)
        rate = statistics.median((w.n - 1) / max(w.t1 - w.t0, 1) * 1e9 for w in ws)
        paired = [mine.cpu_us / theirs.cpu_us for mine, theirs in zip(ws, base, strict=True)]
        ratios[name] = statistics.median(paired)
        span = f"({min(paired):.2f}-{max(paired):.2f})"
        note = f"wake-ups {statistics.median(wakes[name]):.2f}/msg" if wakes[name] else ""
        print(
            f"{name:<40} {cpu:>11.2f} {core:>7.0%} {ratios[name]:>12.2f}x {span:>13} "
            f"{rate:>8,.0f}  {note}"
        )
    print(
        "wake-ups/msg: times the consumer was woken per message pushed (1.00: every frame "
        "wakes it; with the I/O thread\neach is a pipe write and a switch between threads)."
    )
    return ratios


async def run_transport(args: argparse.Namespace, tls: bool) -> dict[str, Any]:
    """Every selected scenario on one feed (plain ws, or wss with ``tls``)."""
    out: dict[str, Any] = {}
    with FeedProcess(cpu=None if args.no_pin else 1, tls=tls) as feed:
        where = "not pinned" if args.no_pin else f"bench {args.pinned}, feed on the other CPU"
        print(
            f"\n=== {'TLS (wss, self-signed CA generated for this run)' if tls else 'plain ws'}"
            f" ===\nPython {sys.version.split()[0]} ({args.loop} loops; alorws with the "
            f"{'compiled' if COMPILED_READER else 'pure-Python'} reader); "
            "feed: bench/_feed.py, a raw asyncio server in its "
            f"own process ({feed.url}; {where}); one Simple quote stream per run; "
            f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        todo = set(args.only.split(","))
        out["ratios"] = await scenario_throughput(feed, args) if "throughput" in todo else {}
        out["peak"] = await scenario_burst(feed, args) if "burst" in todo else None
        out["latency"] = await scenario_latency(feed, args) if "latency" in todo else None
        out["cpu"] = await scenario_cpu(feed, args) if "cpu" in todo else {}
    return out


def goals_of(result: dict[str, Any]) -> list[tuple[str, bool, str]]:
    goals: list[tuple[str, bool, str]] = []
    ratios = result["ratios"]
    if ratios:
        lossless, lossless_strict = ratios["alorws queue (lossless, typed)"]
        latest, latest_strict = ratios["alorws latest (lazy decode)"]
        goals.append(
            (
                "lossless typed quotes (alorws queue) >= 10x",
                lossless >= 10,
                f"{lossless:.1f}x ({lossless_strict:.1f}x the aiohttp variant)",
            )
        )
        goals.append(
            (
                "latest-policy delivery >= 20x",
                latest >= 20,
                f"{latest:.1f}x ({latest_strict:.1f}x the aiohttp variant)",
            )
        )
    if result["peak"] is not None:
        med, worst, floor = result["peak"]
        value = f"{med:,.0f} (max {worst:,}; bare reader's max {floor:,})"
        goals.append(("burst peak unread < 1,000 (median of runs)", med < 1000, value))
    if result["latency"] is not None:
        added, quiet_added, noise = result["latency"]
        value = f"{added:+.0f} µs per-round median (base ±{noise:,.0f}), "
        value += f"{quiet_added:+.0f} in the quiet slices"
        ok = added <= 100 and quiet_added <= 100  # both estimates
        goals.append(("added p99 latency <= 100 µs (I/O thread)", ok, value))
    if result["cpu"]:
        ratio = result["cpu"][CPU_MINE]
        value = f"{ratio:.2f}x the bare picows + msgspec loop"
        goals.append(("CPU at a steady rate, I/O thread <= 1.2x", ratio <= 1.2, value))
    return goals


async def run(args: argparse.Namespace) -> bool:
    transports = ([] if args.tls_only else [False]) + ([True] if args.tls or args.tls_only else [])
    results = {tls: await run_transport(args, tls) for tls in transports}
    ok = True
    for tls, result in results.items():
        goals = goals_of(result)
        print(
            f"\nGoals{' over TLS' if tls else ''}, ratios against the AlorPy pattern of this run:"
        )
        for what, met, value in goals:
            print(f"  {'ok' if met else 'MISSED':<7} {what:<44} {value}")
        ok = ok and all(met for _, met, _ in goals)
    if len(results) == 2:
        plain, tls = results[False], results[True]
        print(
            "\nPlain ws and TLS side by side (each against the baseline over the same transport):"
        )
        if plain["ratios"]:
            print(f"  {'throughput, x the AlorPy pattern':<44} {'plain':>8} {'TLS':>8}")
            for name, (ratio, _) in plain["ratios"].items():
                print(f"  {name:<44} {ratio:>7.1f}x {tls['ratios'][name][0]:>7.1f}x")
        if plain["cpu"]:
            print(f"  {'CPU at a steady rate, x the bare loop':<44} {'plain':>8} {'TLS':>8}")
            for name, ratio in plain["cpu"].items():
                print(f"  {name:<44} {ratio:>7.2f}x {tls['cpu'][name]:>7.2f}x")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=100_000, help="frames per throughput run")
    ap.add_argument("--repeat", type=int, default=5, help="throughput rounds")
    ap.add_argument("--burst", type=int, default=50_000, help="frames in the burst")
    ap.add_argument("--burst-rate", type=float, default=150_000.0)
    ap.add_argument("--burst-repeat", type=int, default=3)
    ap.add_argument("--burst-high-water", type=int, default=16 * 1024)
    ap.add_argument("--burst-sndbuf", type=int, default=0, help="0: the OS default")
    ap.add_argument("--latency-rate", type=float, default=20_000.0)
    ap.add_argument("--latency-seconds", type=float, default=10.0, help="per stack")
    ap.add_argument("--latency-rounds", type=int, default=20, help="interleaved slices")
    ap.add_argument("--latency-alorpy", action="store_true", help="also the AlorPy pattern")
    ap.add_argument("--cpu-rate", type=float, default=20_000.0, help="steady frames/s")
    ap.add_argument("--cpu-seconds", type=float, default=3.0, help="per stack and round")
    ap.add_argument("--cpu-rounds", type=int, default=3)
    ap.add_argument(
        "--coalesce-us",
        default="",
        help="comma-separated AlorClient(coalesce_us=...) values: extra alorws stacks in the "
        "latency and cpu scenarios",
    )
    ap.add_argument("--tls", action="store_true", help="run over plain ws, then over TLS")
    ap.add_argument("--tls-only", action="store_true", help="run over TLS only")
    ap.add_argument("--no-pin", action="store_true", help="do not pin bench and feed to CPUs")
    ap.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default=None,
        help="every event loop of the bench (default: uvloop where it is installed)",
    )
    ap.add_argument(
        "--only",
        default="throughput,burst,latency,cpu",
        help="comma-separated scenarios to run (throughput, burst, latency, cpu)",
    )
    ap.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = ap.parse_args()
    args.coalesce = [int(x) for x in args.coalesce_us.split(",") if x.strip()]
    args.pinned = "not pinned" if args.no_pin else pin(0)
    if args.loop is None:
        args.loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if args.loop == "uvloop":
        import uvloop

        # Every loop of the bench: the base's, the consumer's and the client's I/O thread's
        # (AlorClient makes its loop with asyncio.new_event_loop(), which follows the policy).
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    ok = asyncio.run(run(args))
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
