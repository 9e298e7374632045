"""Soak: a long run under chaos loses, repeats and leaks nothing.

The simulator runs in its own process (``python -m alorws.sim --admin``, a short token
lifetime so tokens expire many times). This process runs one ``AlorClient`` with

* market streams on several instruments and formats: quotes, order books, all trades, bars;
* account streams of the stock portfolio: orders, stop orders, own trades, positions,
  summaries, risks, and a ``Portfolio`` on top;
* a consumer per stream that records what it receives (compactly: the run may last hours);
* an order flow at a modest steady rate: limit orders that rest and get cancelled or
  modified, orders that fill (market and marketable limit), stop and stop-limit orders that
  rest, fire, get modified or cancelled. Every command has its own guid, also sent as the
  order's comment, so the simulator's ground truth tells which command made which order. A
  command that ends in ``OrderStatusUnknown`` or ``TransportTimeout`` is sent again with the
  same guid (what the client's docs tell a caller to do);
* a chaos driver, seeded (the seed is printed), through the simulator's admin endpoints:
  drops with mixed close codes, random-drop windows, stalls up to several seconds, refusal
  windows, restarts, token expiry, delayed replies, hostile frames (junk, cut JSON, deep
  nesting, wrong types, huge numbers, token-shaped text; some aimed at a subscription's guid
  so they reach its consumer), and the production faults of docs/protocol.md §9.6: an idle
  ``/cws`` going stale (on for a while, the order flows held once past the client's
  ``reauth_after_idle`` and once short of it, then off), restart windows refusing everything
  or flapping, and silences of watched market and account subscriptions longer than the
  client's ``silence_timeout``. Their endpoints are probed first (skipped when absent); each
  run uses each of them, and the output counts them and the client's reactions
  (re-authorizations, re-subscriptions).

Then the chaos stops, every order still working is cancelled, the client settles, a quiet
period passes, and what the consumers received is compared with the simulator's ground truth
(``GET /sim/ground-truth``) by the rules of docs/client.md, "What a restore guarantees":

* orders and stop orders: per order, the states delivered only move forward (working, then
  more lots filled, then final), each is a state the order really had, and the last one is
  the order's final state (changes during an outage arrive merged, so intermediate states
  may be missing; final states may not);
* own trades: every trade of the portfolio, each exactly once;
* positions: the last state per symbol equals the truth's, never the same state twice in a
  row;
* executed twice: one command guid -> at most one order (and one stop order) at the
  simulator;
* the ``Portfolio``'s orders, stop orders, trades and positions equal the truth's;
* subscriptions restored: every stream still ACTIVE under the guid it got at subscribe time,
  and the simulator holds as many subscriptions as the client;
* bad frames: every hostile frame delivered to a connection is counted by the client (a
  lane's ``bad_frames``/``unrouted``, the ``/cws`` client's ``bad_frames``, a stream's
  ``bad_payloads``), and nothing token-shaped reaches the log;
* leaks: RSS after the warm-up vs. the end (< 20 MB growth), open file descriptors
  (``/proc/self/fd``) flat, tasks alive in both event loops, threads.

It prints the invariants and a ``RESULT: PASS`` / ``RESULT: FAIL (...)`` line; exit code 0 on
PASS, 1 on FAIL. ``--json PATH`` also writes them as JSON.

    python bench/soak.py [--seconds 120] [--seed N] [--order-rate 1.5] [--rate 40]
                         [--token-lifetime 20] [--reauth-after-idle 3] [--silence-timeout 1.5,3]
                         [--chaos-gap 0.5,3] [--warmup S] [--quiet S]
                         [--pin] [--verbose] [--trace-memory] [--json PATH]

bench/README.md describes the run and the invariants in full.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from alorws.client import AlorClient, LaneEvent, OrderAck, Portfolio, Stream
from alorws.errors import (
    AlorError,
    BufferOverflowError,
    OrderRejected,
    OrderStatusUnknown,
    StreamClosed,
    TransportTimeout,
    scrub,
)
from alorws.protocol import Bar, Order, OwnTrade, Position, Quote, StopOrder, Trade
from alorws.protocol.backoff import Backoff
from alorws.protocol.codec import frame_decoder_for, route
from alorws.protocol.enums import Format
from alorws.protocol.registry import SubscriptionState


#: RSS may grow at most this much from the end of the warm-up to the end (MB).
RSS_GROWTH_LIMIT_MB = 20.0
#: Open file descriptors may differ by at most this much: those that are not connections to
#: the simulator (end vs. after the warm-up), and all of them after closing the client vs.
#: before starting it.
FD_SLACK = 4
#: The HTTP client's connection pool (``HttpClient(connections=16)``): idle keep-alive
#: connections to the simulator it may hold besides the WebSocket connections.
HTTP_POOL = 16
#: Tasks alive in either event loop may grow at most this much after the warm-up.
TASK_SLACK = 20
#: Stream kinds the client watches for silence (``AlorClient(silence_timeout=...)``), market or
#: account: ``--silence-timeout MARKET,ACCOUNT`` gives the seconds. The SBER all-trades stream
#: is watched on its own (``silence_timeout=`` on the stream, twice the market timeout: trades
#: pause in the simulator's trading breaks); bars are not (one may not change for a minute).
#: Account streams go quiet between orders, so they are subscribed again now and then without
#: a fault too: each such replay must lose and repeat nothing either.
SILENCE_KINDS = {
    "quotes": "market",
    "order_book": "market",
    "orders": "account",
    "stop_orders": "account",
    "own_trades": "account",
    "positions": "account",
}
#: A ``silent`` event this long after a silence of its subscription ended still counts as
#: caused by it (seconds).
SILENCE_SLACK = 2.0

_FINAL = frozenset({"filled", "canceled", "rejected"})
_CLOSE_CODES = (1000, 1001, 1006, 1008, 1011, 1012)

#: Token-shaped text inside hostile frames: a JWT as ALOR issues them and a refresh token.
_FAKE_JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJTT0FLVEVTVCIsImVudCI6ImNsaWVudCIsImV4cCI6MTcwMDAwMDAwMH0."
    "c29hay1zaWduYXR1cmUtdGhhdC1tdXN0LW5ldmVyLWJlLWxvZ2dlZA"
)
_FAKE_REFRESH = "5e1d2b7f-9c3a-4d4b-8f20-6a7b8c9d0e1f"
_FAKE_SECRETS = (
    ("fake JWT claims", _FAKE_JWT.split(".")[1][:16]),
    ("fake JWT signature", _FAKE_JWT.split(".")[2][:16]),
    ("fake refresh token", _FAKE_REFRESH),
)


# -- process facts ----------------------------------------------------------------------------


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process, MB (0 when unknown)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def open_fds() -> int:
    """Open file descriptors of this process (-1 when /proc is not there)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


_TCP_STATES = {"01": "established", "08": "close_wait"}


def fd_census(port: int) -> dict[str, Any]:
    """Open file descriptors of this process: the total, by kind (socket, pipe, anon_inode
    for epoll and eventfd, file), and the TCP connections to ``port`` (the simulator) by state.
    ``other`` is everything but those connections: it must stay flat whatever the client's
    connections and HTTP keep-alive pool do."""
    kinds: Counter[str] = Counter()
    sockets: set[str] = set()
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return {"total": -1, "kinds": {}, "to_sim": {}, "other": -1}
    for fd in names:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (e.g. the listing's own descriptor)
            continue
        kinds["file" if target.startswith("/") else target.partition(":")[0]] += 1
        if target.startswith("socket:["):
            sockets.add(target[8:-1])
    to_sim: Counter[str] = Counter()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)
            for line in f:
                cols = line.split()
                if len(cols) > 9 and cols[9] in sockets:
                    if int(cols[2].rsplit(":", 1)[1], 16) == port:
                        to_sim[_TCP_STATES.get(cols[3], "other")] += 1
    total = sum(kinds.values())
    return {
        "total": total,
        "kinds": dict(kinds),
        "to_sim": dict(to_sim),
        "other": total - sum(to_sim.values()),
    }


def load() -> str:
    """The machine's load averages (1, 5, 15 min) and CPUs."""
    try:
        a, b, c = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{a:.2f} {b:.2f} {c:.2f} ({os.cpu_count()} CPUs)"


def pin(cpu: int | None) -> str:
    """Pin this process (threads started later inherit it) to one CPU; describe it."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    cpus = list(range(os.cpu_count() or 1))
    if len(cpus) < 2:
        return "not pinned (1 CPU)"
    chosen = cpus[cpu % len(cpus)]
    os.sched_setaffinity(0, {chosen})
    return f"CPU {chosen}"


# -- the simulator in its own process ---------------------------------------------------------


@dataclass
class SimProcess:
    """``python -m alorws.sim --admin`` in a subprocess; ``url``, ``refresh``, ``portfolios``."""

    seed: int
    rate: float
    token_lifetime: float
    cpu: int | None = None
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    refresh: str = ""
    admin_token: str | None = None
    portfolios: list[str] = field(default_factory=list)
    stderr_path: str = ""

    @contextlib.contextmanager
    def running(self) -> Iterator[SimProcess]:
        cmd = [
            sys.executable,
            "-m",
            "alorws.sim",
            "--port",
            "0",
            "--seed",
            str(self.seed),
            "--rate",
            str(self.rate),
            "--token-lifetime",
            str(self.token_lifetime),
            "--admin",
            "--no-state-file",  # never replace the state file of a user's own simulator
        ]
        if self.cpu is not None and hasattr(os, "sched_setaffinity"):
            cmd = ["taskset", "-c", str(self.cpu % (os.cpu_count() or 1)), *cmd]
        fd, self.stderr_path = tempfile.mkstemp(prefix="alorws-soak-sim-", suffix=".log")
        err = os.fdopen(fd, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        err.close()
        try:
            assert self.proc.stdout is not None
            found: dict[str, str] = {}
            deadline = time.monotonic() + 60
            while not {"url", "refresh_token", "portfolios"} <= set(found):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"the simulator did not start (see {self.stderr_path})")
                key, _, value = self.proc.stdout.readline().strip().partition(": ")
                found[key] = value
            self.url = found["url"]
            self.refresh = found["refresh_token"]
            self.admin_token = found.get("admin_token")
            self.portfolios = found["portfolios"].split()
            yield self
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def stderr_tail(self, n: int = 5) -> tuple[int, list[str]]:
        """How many lines the simulator wrote to stderr, and the last ``n`` (scrubbed)."""
        try:
            with open(self.stderr_path, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return 0, []
        return len(lines), [scrub(line)[:200] for line in lines[-n:]]

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.stderr_path)


class Admin:
    """The simulator's ``/sim/*`` endpoints."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.calls: Counter[str] = Counter()
        self.failures: list[str] = []

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.calls[path] += 1
        async with self.session.post(path, json=body or {}) as reply:
            data = await reply.json(content_type=None)
            if reply.status != 200:
                self.failures.append(f"POST {path} -> {reply.status} {str(data)[:200]}")
                return {}
            return data if isinstance(data, dict) else {}

    async def get(self, path: str) -> Any:
        async with self.session.get(path) as reply:
            reply.raise_for_status()
            return await reply.json(content_type=None)

    async def has(self, path: str) -> bool:
        """Whether the simulator serves ``path`` (POST-only routes answer a GET with 405)."""
        async with self.session.get(path) as reply:
            return reply.status != 404


# -- consumers --------------------------------------------------------------------------------


class Recorder:
    """Consumes one stream in a task and keeps what the invariants need, compactly."""

    def __init__(
        self,
        name: str,
        stream: Stream[Any],
        silenced: Callable[[str | None], bool] = lambda guid: False,
    ) -> None:
        self.name = name
        self.stream = stream
        self.count = 0
        self.last_at = 0.0
        self.last: Any = None
        self.disconnects = 0
        self.restores = 0
        # Silence detection: ``silent`` events while the chaos had this subscription silenced,
        # and those of a stream that was just quiet (an account stream between orders).
        self._silenced = silenced
        self.silent_in_fault = 0
        self.silent_quiet = 0
        self.resubscribed = 0
        self.errors: list[str] = []
        self.lost = 0  # items the client said it lost (BufferOverflowError)
        self.regressions = 0  # market data that went back (a repeat)
        self._last_key: Any = None
        # Account streams: compact records of every item.
        self.states: list[tuple[str, str, int]] = []  # orders, stop orders
        self.trade_ids: list[str] = []  # own trades
        self.positions: dict[str, float | None] = {}  # symbol -> last qty_units
        self._position_state: dict[str, tuple[Any, ...]] = {}
        self.position_repeats = 0
        self.task: asyncio.Task[None] | None = None
        stream.on_event(self._on_event)

    def _on_event(self, event: LaneEvent) -> None:
        if event.kind == "disconnected":
            self.disconnects += 1
        elif event.kind == "restored":
            self.restores += 1
        elif event.kind == "silent":
            if self._silenced(self.stream.guid):
                self.silent_in_fault += 1
            else:
                self.silent_quiet += 1
        elif event.kind == "resubscribed":
            self.resubscribed += 1

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"soak {self.name}")

    async def _run(self) -> None:
        while True:
            try:
                items = await self.stream.get_batch(1000)
            except StreamClosed:
                return
            except BufferOverflowError as exc:  # messages were lost; the stream goes on
                self.lost += 1
                self.errors.append(f"{type(exc).__name__}: {scrub(str(exc))[:200]}")
                continue
            except AlorError as exc:  # the stream ended with an error (e.g. a rejection)
                self.lost += 1
                self.errors.append(f"{type(exc).__name__}: {scrub(str(exc))[:200]}")
                return
            self.count += len(items)
            self.last_at = time.monotonic()
            for obj in items:
                self._take(obj)

    def _take(self, obj: Any) -> None:
        self.last = obj
        if isinstance(obj, Order | StopOrder):
            status = obj.status.value if obj.status is not None else ""
            self.states.append((str(obj.id), status, obj.filled_qty_batch or 0))
        elif isinstance(obj, OwnTrade):
            self.trade_ids.append(str(obj.id))
        elif isinstance(obj, Position):
            key = str(obj.symbol)
            values = msgspec.structs.astuple(obj)
            i = obj.__struct_fields__.index("existing")
            state = values[:i] + values[i + 1 :]
            if self._position_state.get(key) == state:
                self.position_repeats += 1
            self._position_state[key] = state
            self.positions[key] = obj.qty_units
        elif isinstance(obj, Trade):
            if self._last_key is not None and obj.id <= self._last_key:
                self.regressions += 1
            self._last_key = obj.id
        elif isinstance(obj, Bar):
            if self._last_key is not None and obj.time < self._last_key:
                self.regressions += 1
            self._last_key = obj.time

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


# -- comparison with the ground truth (pure: tests call these) --------------------------------


def truth_of(records: list[dict[str, Any]], portfolio: str, stream: str) -> list[dict[str, Any]]:
    """The ``data`` of the ground-truth records of one portfolio and stream, in order."""
    return [r["data"] for r in records if r["portfolio"] == portfolio and r["stream"] == stream]


def _rank(status: str, filled: int) -> tuple[int, int]:
    return (1 if status in _FINAL else 0, filled)


def compare_orders(
    delivered: list[tuple[str, str, int]], truth: list[dict[str, Any]]
) -> dict[str, Any]:
    """Order (or stop order) states delivered vs. the truth of that stream.

    ``delivered`` is ``(id, status, filled lots)`` per item, in delivery order. Counted:
    ``duplicated``: a state no further along than the last one delivered for that id (a repeat
    or a rollback); ``false``: a state the order never had; ``lost``: an order whose last
    delivered state is not its final one (or that was never delivered); ``phantom``: an id the
    truth does not know.
    """
    true_states = {(str(d["id"]), d["status"], d.get("filled_qty_batch") or 0) for d in truth}
    final = {str(d["id"]): (d["status"], d.get("filled_qty_batch") or 0) for d in truth}
    last: dict[str, tuple[str, int]] = {}
    duplicated = false = 0
    examples: list[str] = []
    for oid, status, filled in delivered:
        prev = last.get(oid)
        if prev is not None and _rank(*prev) >= _rank(status, filled):
            duplicated += 1
            if len(examples) < 5:
                examples.append(f"{oid}: {status}/{filled} after {prev[0]}/{prev[1]}")
            continue
        if (oid, status, filled) not in true_states:
            false += 1
            if len(examples) < 5:
                examples.append(f"{oid}: {status}/{filled} is not a state it had")
        last[oid] = (status, filled)
    lost_ids = [oid for oid, state in final.items() if last.get(oid) != state]
    examples += [
        f"{oid}: final {final[oid]}, last delivered {last.get(oid)}" for oid in lost_ids[:5]
    ]
    phantom = [oid for oid in last if oid not in final]
    return {
        "compared": len(delivered),
        "orders": len(final),
        "duplicated": duplicated,
        "false": false,
        "lost": len(lost_ids),
        "phantom": len(phantom),
        "examples": examples,
    }


def compare_trades(delivered: list[str], truth: list[dict[str, Any]]) -> dict[str, Any]:
    """Own trade ids delivered vs. the truth: each exactly once."""
    true_ids = {str(d["id"]) for d in truth}
    seen = set(delivered)
    lost = sorted(true_ids - seen)
    phantom = sorted(seen - true_ids)
    return {
        "compared": len(delivered),
        "trades": len(true_ids),
        "duplicated": len(delivered) - len(seen),
        "lost": len(lost),
        "phantom": len(phantom),
        "examples": [f"trade {t} never delivered" for t in lost[:5]]
        + [f"trade {t} unknown to the truth" for t in phantom[:5]],
    }


def compare_positions(
    last: dict[str, float | None], repeats: int, truth: list[dict[str, Any]]
) -> dict[str, Any]:
    """The last position delivered per symbol vs. the truth's final one."""
    final = {str(d["symbol"]): d.get("qty_units") for d in truth}
    lost = [s for s, qty in final.items() if last.get(s) != qty]
    return {
        "compared": len(final),
        "duplicated": repeats,
        "lost": len(lost),
        "examples": [f"{s}: final {final[s]}, last delivered {last.get(s)}" for s in lost[:5]],
    }


def executed_twice(truth: list[dict[str, Any]], prefix: str) -> tuple[int, list[str]]:
    """Commands (guid = comment, starting with ``prefix``) that made more than one order."""
    by_comment: dict[str, set[str]] = defaultdict(set)
    for d in truth:
        comment = d.get("comment")
        if isinstance(comment, str) and comment.startswith(prefix):
            by_comment[comment].add(str(d["id"]))
    twice = {c: ids for c, ids in by_comment.items() if len(ids) > 1}
    return len(twice), [f"{c} -> {sorted(ids)}" for c, ids in list(twice.items())[:5]]


def _state_of(order: Order | StopOrder) -> tuple[str, int]:
    return (order.status.value if order.status else "", order.filled_qty_batch or 0)


def compare_portfolio(
    orders: dict[str, tuple[str, int]],
    stop_orders: dict[str, tuple[str, int]],
    trades: set[str],
    positions: dict[str, float | None],
    truth: dict[str, list[dict[str, Any]]],
) -> list[str]:
    """Differences between a Portfolio's state and the truth's final state (empty: equal)."""
    out: list[str] = []
    for name, mine in (("orders", orders), ("stop_orders", stop_orders)):
        final = {str(d["id"]): (d["status"], d.get("filled_qty_batch") or 0) for d in truth[name]}
        if mine != final:
            diff = [k for k in final.keys() | mine.keys() if mine.get(k) != final.get(k)]
            out.append(f"{name}: {len(diff)} differ, e.g. {sorted(diff)[:3]}")
    true_trades = {str(d["id"]) for d in truth["trades"]}
    if trades != true_trades:
        out.append(
            f"trades: {len(true_trades - trades)} missing, {len(trades - true_trades)} extra"
        )
    final_pos = {str(d["symbol"]): d.get("qty_units") for d in truth["positions"]}
    for symbol, qty in final_pos.items():
        have = positions.get(symbol, 0.0 if not qty else None)
        if have != qty:
            out.append(f"position {symbol}: {have} vs {qty}")
    return out


# -- hostile frames ---------------------------------------------------------------------------


def envelope_frames(rng: random.Random) -> list[tuple[str, str]]:
    """Frames no connection can read as a message: every connection counts each as bad."""
    junk = "".join(
        chr(rng.choice((rng.randrange(1, 32), rng.randrange(33, 0x2FF)))) for _ in range(40)
    )
    deep = rng.randint(12_000, 20_000)  # past the C recursion limit of 3.11-3.13 (3.13: ~10,000)
    return [
        ("junk", junk),
        ("empty", ""),
        ("cut JSON", '{"data":{"symbol":"SBER","last_price":31'),
        ("deep list", "[" * deep + "]" * deep),
        ("deep envelope", '{"data":' + "[" * deep + "]" * deep + ',"guid":"soak-nowhere"}'),
        ("deep object", '{"a":' * deep + "1" + "}" * deep),
        ("wrong types", '{"requestGuid":123,"httpCode":"200"}'),
        ("wrong guid type", '{"data":{"a":1},"guid":42}'),
        ("not an object", rng.choice(("[1,2,3]", "null", '"text"', "12345", "true"))),
        ("huge number", '{"requestGuid":"soak-x","httpCode":1e400}'),
        ("huge integer", '{"requestGuid":"soak-x","httpCode":' + "9" * rng.randint(20, 400) + "}"),
        (
            "token-shaped",
            '{"token":"' + _FAKE_JWT + '","refreshToken":"' + _FAKE_REFRESH + '","x":}',
        ),
        ("token request", '{"opcode":"QuotesSubscribe","token":"' + _FAKE_JWT + '"}'),
    ]


def aimed_frames(guid: str, rng: random.Random) -> list[tuple[str, str]]:
    """Frames in the compact data shape for subscription ``guid`` whose payload is bad: its
    stream counts them in ``bad_payloads`` (other connections: unrouted or bad)."""
    deep = rng.randint(12_000, 20_000)  # past the C recursion limit of 3.11-3.13 (3.13: ~10,000)
    tail = ',"guid":"' + guid + '"}'
    return [
        ("aimed: deep", '{"data":{"x":' + "[" * deep + "]" * deep + "}" + tail),
        ("aimed: wrong types", '{"data":{"id":"abc","price":"x","qty":[1],"time":"t"}' + tail),
        ("aimed: huge numbers", '{"data":{"id":1e400,"price":1e400,"time":1e400}' + tail),
        (
            "aimed: huge integers",
            '{"data":{"id":' + "9" * 300 + ',"time":' + "9" * 300 + "}" + tail,
        ),
        ("aimed: not an object", '{"data":' + rng.choice(('"x"', "[1,2]", "7")) + tail),
        (
            "aimed: token-shaped",
            '{"data":{"token":"' + _FAKE_JWT + '","refreshToken":"' + _FAKE_REFRESH
            + '","id":"' + _FAKE_JWT + '","time":"' + _FAKE_REFRESH + '"}' + tail,
        ),
    ]  # fmt: skip


def is_unreadable(frame: str) -> bool:
    """Whether the client's envelope router refuses ``frame`` (so every connection counts it)."""
    try:
        route(frame.encode())
    except Exception:
        return True
    return False


def is_bad_payload(frame: str, stream: Stream[Any]) -> bool:
    """Whether ``stream``'s own decoder refuses ``frame`` (so the stream counts it)."""
    fmt = Format(getattr(stream.request, "format", Format.SIMPLE))
    try:
        frame_decoder_for(stream.model, fmt).decode(frame.encode())
    except Exception:
        return True
    return False


# -- the run ----------------------------------------------------------------------------------


class LogWatch(logging.Handler):
    """Counts the client's log records and checks none carries a secret."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.secrets: dict[str, str] = {}
        self.counts: Counter[str] = Counter()
        self.leaks: list[str] = []
        self.samples: list[str] = []
        self._lock = threading.Lock()

    def add_secret(self, label: str, value: str | None) -> None:
        if value and len(value) >= 8:
            with self._lock:
                self.secrets[value] = label

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            text = str(record.msg)
        with self._lock:
            self.counts[f"{record.levelname} {record.name}"] += 1
            for value, label in self.secrets.items():
                if value in text:
                    self.leaks.append(f"{record.name}: {label}")
            if record.levelno >= logging.WARNING and len(self.samples) < 8:
                line = "".join(c if c.isprintable() else "?" for c in scrub(text)[:160])
                self.samples.append(f"{record.levelname} {record.name}: {line}")


@dataclass
class Outcomes:
    """What the order flow did."""

    commands: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    unresolved: list[str] = field(default_factory=list)
    acks: dict[str, str] = field(default_factory=dict)  # guid -> order number (creates)
    errors: list[str] = field(default_factory=list)


class Soak:
    """One soak run (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, sim: SimProcess, admin: Admin) -> None:
        self.args = args
        self.sim = sim
        self.admin = admin
        self.rng = random.Random(args.seed)
        self.chaos_rng = random.Random(args.seed + 1)
        self.prefix = f"soak{args.seed % 10_000}-"
        self.client: AlorClient | None = None
        self.port = int(sim.url.rsplit(":", 1)[1])
        self.portfolio = next((p for p in sim.portfolios if p.startswith("D")), sim.portfolios[0])
        self.recorders: dict[str, Recorder] = {}
        self.pf: Portfolio | None = None
        self.outcomes = Outcomes()
        self.faults: Counter[str] = Counter()
        self.optional: dict[str, bool] = {}
        self.injected = Counter[str]()  # category -> deliveries
        self.inject_frames = 0
        self.inject_skipped = 0
        self.inject_waits_missed = 0
        self.aimed_skipped: list[str] = []
        self.stall_until = 0.0
        self.window_until = 0.0
        self.t0 = time.monotonic()
        self.stop_chaos = asyncio.Event()
        self.stop_flow = asyncio.Event()
        # Production faults: how each was used, and the silences (guid -> when it ends).
        self.fault_detail: Counter[str] = Counter()
        self.silenced_subs: Counter[str] = Counter()  # market/account -> subscriptions
        self.silence_ends: dict[str, float] = {}
        self.silence_until = 0.0
        self.silences: list[dict[str, Any]] = []  # one per subscription silenced, and what came
        self.idle_holds: list[dict[str, Any]] = []  # one per hold of the flows, and what came
        self._watching: set[asyncio.Task[None]] = set()  # the silences' outcomes, being read
        # The order flows send a command only while this is set: the idle /cws fault clears
        # it to leave the connection idle; ``in_flight`` counts commands awaiting a reply.
        self.flow_gate = asyncio.Event()
        self.flow_gate.set()
        self.in_flight = 0
        self.trades_silence = 2 * args.silence_timeout[0]
        self.log = LogWatch()
        self.unhandled: list[str] = []
        self.samples: dict[str, Any] = {}
        self.snapshots: dict[str, tracemalloc.Snapshot] = {}
        self.steps: dict[str, float] = {}
        self._seq = 0
        self._resting: dict[str, list[tuple[str, str]]] = defaultdict(list)  # sym -> [(id, side)]
        self._stops: dict[str, list[tuple[str, str, str]]] = defaultdict(list)  # (id, side, kind)

    # -- helpers --------------------------------------------------------------------------

    def _client(self) -> AlorClient:
        assert self.client is not None
        return self.client

    def all_streams(self) -> list[Stream[Any]]:
        streams = [r.stream for r in self.recorders.values()]
        if self.pf is not None:
            streams += list(self.pf._streams.values())
        return streams

    def counted_bad(self) -> int:
        """Every bad or unroutable frame the client has counted, anywhere."""
        client = self._client()
        stats = client.stats()
        total = sum(lane["bad_frames"] + lane["unrouted"] for lane in stats["lanes"])
        total += client.trading.stats()["bad_frames"]
        total += sum(s.bad_payloads for s in client._streams)
        return total

    def resubscribes(self) -> tuple[int, int]:
        """Re-subscriptions of silent subscriptions: begun so far, and in flight now."""
        lanes = self._client().stats()["lanes"]
        return sum(lane["resubscribes"] for lane in lanes), sum(
            lane["resubscribing"] for lane in lanes
        )

    def settled(self) -> bool:
        """Every lane open, every subscription active, the order connection authorized."""
        client = self._client()
        try:
            stats = client.stats()
            subs = list(client._registry.subscriptions())
        except RuntimeError:  # changed by the I/O thread while read; ask again
            return False
        return (
            all(lane["state"] == "open" for lane in stats["lanes"])
            and all(s.state is SubscriptionState.ACTIVE for s in subs)
            and client.trading.stats()["state"] == "open"
        )

    async def until(self, predicate: Callable[[], bool], seconds: float) -> bool:
        """Poll ``predicate`` (client counters have no event to await) for ``seconds``."""
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def pause(self, seconds: float, stop: asyncio.Event) -> bool:
        """Sleep ``seconds`` unless ``stop`` is set first; True if it was."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()
        return stop.is_set()

    async def tasks_in_io(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks())

        return await self._client().call_in_io(count)

    async def sample(self, label: str) -> None:
        gc.collect()
        if tracemalloc.is_tracing():
            self.snapshots[label] = tracemalloc.take_snapshot()
        self.samples[label] = {
            "t": time.monotonic(),
            "rss_mb": rss_mb(),
            "fds": open_fds(),
            "fd_census": fd_census(self.port),
            "tasks": len(asyncio.all_tasks()),
            "io_tasks": await self.tasks_in_io() if self.client is not None else 0,
            "threads": threading.active_count(),
            "dedup_entries": self.dedup_entries(),
        }

    def dedup_entries(self) -> int:
        """Ids and states the streams' de-duplication filters remember (bounded per stream
        for all trades, one per order, trade and position otherwise): memory that grows by
        design, to tell it apart from a leak."""
        if self.client is None:
            return 0
        return sum(len(getattr(s._filter, "_seen", ())) for s in list(self.client._streams))

    def _on_unhandled(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.unhandled.append(scrub(f"{context.get('message')}: {exc!r}")[:200])

    # -- setup ----------------------------------------------------------------------------

    def make_streams(self, client: AlorClient) -> None:
        p = self.portfolio
        specs: list[tuple[str, Stream[Any]]] = [
            ("quotes SBER Simple latest", client.quotes("SBER")),
            ("quotes GAZP Slim latest", client.quotes("GAZP", format="Slim")),
            ("quotes LKOH Heavy queue", client.quotes("LKOH", format="Heavy", policy="queue")),
            ("book SBER Simple", client.order_book("SBER", depth=10)),
            ("book GAZP Slim", client.order_book("GAZP", depth=5, format="Slim")),
            ("book VTBR Heavy queue", client.order_book("VTBR", format="Heavy", policy="queue")),
            # Watched for silence on its own (the kind is not): see SILENCE_KINDS.
            ("trades SBER Simple", client.all_trades("SBER", silence_timeout=self.trades_silence)),
            ("trades GAZP Heavy", client.all_trades("GAZP", format="Heavy")),
            ("trades VTBR Slim", client.all_trades("VTBR", format="Slim")),
            ("bars SBER 60 Simple", client.bars("SBER", 60)),
            ("bars GAZP 300 Heavy", client.bars("GAZP", 300, format="Heavy")),
            ("bars LKOH D Slim", client.bars("LKOH", "D", format="Slim")),
            ("orders", client.orders(p)),
            ("stop orders", client.stop_orders(p)),
            ("own trades", client.own_trades(p)),
            ("positions", client.positions(p)),
            ("summaries", client.summaries(p)),
            ("risks", client.risks(p, format="Heavy")),
        ]
        self.recorders = {name: Recorder(name, stream, self.silenced_now) for name, stream in specs}

    async def probe_optional(self) -> None:
        """Which optional fault endpoints the simulator serves (a GET on a POST route: 405)."""
        for kind, (paths, _) in OPTIONAL_FAULTS.items():
            try:
                self.optional[kind] = all([await self.admin.has(path) for path in paths])
            except aiohttp.ClientError:
                self.optional[kind] = False

    def silenced_now(self, guid: str | None) -> bool:
        """Whether the chaos has (or just had) subscription ``guid`` silenced."""
        end = self.silence_ends.get(guid or "")
        return end is not None and time.monotonic() <= end + SILENCE_SLACK

    # -- order flow -----------------------------------------------------------------------

    def _guid(self) -> str:
        self._seq += 1
        return f"{self.prefix}{self._seq}"

    def _quote(self, symbol: str) -> Quote | None:
        name = {"SBER": "quotes SBER Simple latest", "GAZP": "quotes GAZP Slim latest"}[symbol]
        q = self.recorders[name].last
        return q if isinstance(q, Quote) and q.bid and q.ask else None

    def _price(self, symbol: str, price: float) -> float:
        step = self.steps[symbol]
        decimals = max(0, len(f"{step:.10f}".rstrip("0").split(".")[1]))
        return round(round(price / step) * step, decimals)

    async def command(
        self, what: str, make: Callable[[str], Awaitable[OrderAck]], *, gated: bool = True
    ) -> OrderAck | None:
        """Send one command; resend with the same guid while its outcome is unknown. Each
        attempt waits while the flows are held, unless not ``gated``."""
        guid = self._guid()
        self.outcomes.commands[what] += 1
        for attempt in range(5):
            if gated:
                await self.flow_gate.wait()
            self.in_flight += 1
            try:
                ack = await make(guid)
            except OrderRejected:
                self.outcomes.results["rejected"] += 1
                return None
            except (OrderStatusUnknown, TransportTimeout) as exc:
                self.outcomes.results[type(exc).__name__] += 1
                if attempt < 4:
                    self.outcomes.retries += 1
                    continue
                self.outcomes.unresolved.append(guid)
                return None
            except AlorError as exc:
                self.outcomes.results[type(exc).__name__] += 1
                self.outcomes.errors.append(f"{what}: {type(exc).__name__}: {scrub(str(exc))}")
                return None
            finally:
                self.in_flight -= 1
            self.outcomes.results["ack"] += 1
            if what.startswith(("place", "modify")):
                self.outcomes.acks[guid] = ack.order_number
            return ack
        return None

    async def flow(self, symbol: str, rng: random.Random, rate: float) -> None:
        """Commands on one symbol at about ``rate`` per second until stopped."""
        trading = self._client().trading
        p = self.portfolio
        resting = self._resting[symbol]
        stops = self._stops[symbol]
        actions = [
            "market", "market", "marketable", "marketable", "rest", "rest", "rest", "modify",
            "cancel", "stop", "stop_limit", "modify_stop", "cancel_stop",
        ]  # fmt: skip
        while not self.stop_flow.is_set():
            if await self.pause(rng.expovariate(rate), self.stop_flow):
                return
            q = self._quote(symbol)
            if q is None or q.bid is None or q.ask is None:
                continue
            step = self.steps[symbol]
            side = rng.choice(("buy", "sell"))
            action = rng.choice(actions)
            if len(resting) > 6:
                action = "cancel"
            elif len(stops) > 4:
                action = "cancel_stop"
            elif action in ("modify", "cancel") and not resting:
                action = "rest"
            elif action in ("modify_stop", "cancel_stop") and not stops:
                action = "stop"
            if action == "market":
                qty = rng.randint(1, 3)
                await self.command(
                    "place market",
                    lambda g, s=side, n=qty: trading.place_market(
                        p, symbol, s, n, comment=g, guid=g
                    ),
                )
            elif action == "marketable":
                price = self._price(symbol, q.ask + 2 * step if side == "buy" else q.bid - 2 * step)
                await self.command(
                    "place limit (fills)",
                    lambda g, s=side, px=price: trading.place_limit(
                        p, symbol, s, 1, px, comment=g, guid=g
                    ),
                )
            elif action == "rest":
                ticks = rng.randint(5, 60)
                price = self._price(
                    symbol, q.bid - ticks * step if side == "buy" else q.ask + ticks * step
                )
                qty = rng.randint(1, 2)
                ack = await self.command(
                    "place limit (rests)",
                    lambda g, s=side, n=qty, px=price: trading.place_limit(
                        p, symbol, s, n, px, comment=g, guid=g
                    ),
                )
                if ack is not None and ack.order_number:
                    resting.append((ack.order_number, side))
            elif action == "modify" and resting:
                oid, oside = resting.pop(rng.randrange(len(resting)))
                ticks = rng.randint(3, 60)
                price = self._price(
                    symbol, q.bid - ticks * step if oside == "buy" else q.ask + ticks * step
                )
                qty = rng.randint(1, 2)
                ack = await self.command(
                    "modify limit",
                    lambda g, o=oid, s=oside, n=qty, px=price: trading.modify_limit(
                        o, p, symbol, s, n, px, comment=g, guid=g
                    ),
                )
                if ack is not None and ack.order_number:
                    resting.append((ack.order_number, oside))
            elif action == "cancel" and resting:
                oid, _ = resting.pop(0)
                await self.command(
                    "cancel limit",
                    lambda g, o=oid: trading.cancel(o, p, guid=g),
                )
            elif action in ("stop", "stop_limit"):
                last = q.last_price or (q.bid + q.ask) / 2
                ticks = rng.randint(2, 80)  # near ones fire, far ones rest
                if side == "buy":
                    trigger, condition = self._price(symbol, last + ticks * step), "more"
                else:
                    trigger, condition = self._price(symbol, last - ticks * step), "less"
                if action == "stop":
                    ack = await self.command(
                        "place stop",
                        lambda g, s=side, t=trigger, c=condition: trading.place_stop(
                            p, symbol, s, 1, t, c, comment=g, guid=g
                        ),
                    )
                else:
                    price = self._price(symbol, trigger + (3 if side == "buy" else -3) * step)
                    ack = await self.command(
                        "place stop-limit",
                        lambda g, s=side, t=trigger, c=condition, px=price: (
                            trading.place_stop_limit(p, symbol, s, 1, px, t, c, comment=g, guid=g)
                        ),
                    )
                if ack is not None and ack.order_number:
                    kind = "stop" if action == "stop" else "stoplimit"
                    stops.append((ack.order_number, side, kind))
            elif action == "modify_stop" and stops:
                oid, oside, kind = stops.pop(rng.randrange(len(stops)))
                last = q.last_price or (q.bid + q.ask) / 2
                ticks = rng.randint(10, 80)
                if oside == "buy":
                    trigger, condition = self._price(symbol, last + ticks * step), "more"
                else:
                    trigger, condition = self._price(symbol, last - ticks * step), "less"
                if kind == "stop":
                    ack = await self.command(
                        "modify stop",
                        lambda g, o=oid, s=oside, t=trigger, c=condition: trading.modify_stop(
                            o, p, symbol, s, 1, t, c, comment=g, guid=g
                        ),
                    )
                else:
                    price = self._price(symbol, trigger + (3 if oside == "buy" else -3) * step)
                    ack = await self.command(
                        "modify stop-limit",
                        lambda g, o=oid, s=oside, t=trigger, c=condition, px=price: (
                            trading.modify_stop_limit(
                                o, p, symbol, s, 1, px, t, c, comment=g, guid=g
                            )
                        ),
                    )
                if ack is not None and ack.order_number:
                    stops.append((ack.order_number, oside, kind))
            elif action == "cancel_stop" and stops:
                oid, _, kind = stops.pop(0)
                await self.command(
                    "cancel stop",
                    lambda g, o=oid, k=kind: trading.cancel(o, p, kind=k, guid=g),
                )

    async def cancel_everything(self) -> None:
        """Cancel every order and stop order still working (as the simulator sees them)."""
        client = self._client()
        trading = client.trading
        p = self.portfolio
        for _ in range(3):
            orders = await client.http.orders(p)
            stops = await client.http.stop_orders(p)
            working = [o for o in orders if o.status is not None and o.status.value == "working"]
            working_stops = [
                s for s in stops if s.status is not None and s.status.value == "working"
            ]
            if not working and not working_stops:
                return
            for o in working:
                await self.command(
                    "cancel limit",
                    lambda g, oid=o.id: trading.cancel(oid, p, guid=g),
                )
            for s in working_stops:
                kind = s.type.value if s.type is not None else "stop"
                await self.command(
                    "cancel stop",
                    lambda g, oid=s.id, k=kind: trading.cancel(oid, p, kind=k, guid=g),
                )

    # -- chaos ----------------------------------------------------------------------------

    async def chaos(self) -> None:
        rng = self.chaos_rng
        kinds: dict[str, float] = {
            "drop": 3.0,
            "random drops": 1.0,
            "stall": 2.0,
            "refuse": 1.0,
            "restart": 1.0,
            "expire tokens": 1.5,
            "delay replies": 1.0,
            "inject": 3.0,
        }
        production = [kind for kind, present in self.optional.items() if present]
        for kind in production:
            kinds[kind] = OPTIONAL_FAULTS[kind][1]
        names, weights = list(kinds), list(kinds.values())
        lo, hi = self.args.chaos_gap
        while not self.stop_chaos.is_set():
            if await self.pause(rng.uniform(lo, hi), self.stop_chaos):
                return
            kind = rng.choices(names, weights)[0]
            # A production fault not drawn by a quarter of the run comes now: every run has each.
            unused = [k for k in production if not self.faults[k]]
            if unused and time.monotonic() - self.t0 > self.args.seconds / 4:
                kind = unused[0]
            self.faults[kind] += 1
            if self.args.verbose:
                print(f"  fault at {time.monotonic() - self.t0:7.1f}s: {kind}", flush=True)
            try:
                await self.fault(kind, rng)
            except aiohttp.ClientError as exc:  # the admin call itself failed: say so
                self.admin.failures.append(f"{kind}: {exc!r}")

    async def fault(self, kind: str, rng: random.Random) -> None:
        a = self.admin
        if kind == "drop":
            await a.post("/sim/drop", {"code": rng.choice(_CLOSE_CODES)})
        elif kind == "random drops":
            codes = rng.sample(_CLOSE_CODES, rng.randint(2, len(_CLOSE_CODES)))
            await a.post("/sim/random-drops", {"every": rng.uniform(0.3, 1.5), "codes": codes})
            await self.pause(rng.uniform(2.0, 6.0), self.stop_chaos)
            await a.post("/sim/random-drops", {"every": None})
        elif kind == "stall":
            seconds = rng.uniform(0.3, 6.0)
            self.stall_until = max(self.stall_until, time.monotonic() + seconds)
            await a.post("/sim/stall", {"seconds": seconds})
        elif kind == "refuse":
            await a.post("/sim/refuse", {"seconds": rng.uniform(0.5, 4.0)})
            if rng.random() < 0.7:
                await a.post("/sim/drop", {"code": rng.choice(_CLOSE_CODES)})
        elif kind == "restart":
            await a.post(
                "/sim/restart",
                {"seconds": rng.uniform(0.5, 4.0), "code": rng.choice(_CLOSE_CODES)},
            )
        elif kind == "expire tokens":
            await a.post("/sim/expire-tokens")
            if rng.random() < 0.5:
                await a.post("/sim/drop", {"code": 1006})
        elif kind == "delay replies":
            await a.post("/sim/delay", {"seconds": rng.uniform(0.05, 0.5)})
            await self.pause(rng.uniform(1.0, 5.0), self.stop_chaos)
            await a.post("/sim/delay", {"seconds": 0})
        elif kind == "inject":
            await self.inject(rng)
        elif kind == "idle cws":
            await self.idle_cws(rng)
        elif kind == "restart window":
            # ALOR's daily restart, scaled down: everything refused, or flapping (a share of
            # the attempts gets through and is dropped again within ``linger``).
            flapping = rng.random() < 0.5
            seconds = rng.uniform(1.0, 6.0)
            self.window_until = max(self.window_until, time.monotonic() + seconds)
            await a.post(
                "/sim/restart-window",
                {
                    "seconds": seconds,
                    "accept": rng.uniform(0.2, 0.6) if flapping else 0.0,
                    "linger": rng.uniform(0.2, 1.5),
                    "code": rng.choice(_CLOSE_CODES),
                },
            )
            self.fault_detail["restart window, flapping" if flapping else "restart window"] += 1
        elif kind == "silence":
            await self.silence(rng)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")

    async def idle_cws(self, rng: random.Random) -> None:
        """The idle ``/cws`` fault on for a while, then off: the simulator makes a ``/cws``
        connection stale after ``idle`` s without a command, and the client re-authorizes
        before a command after ``--reauth-after-idle`` s (longer). Twice meanwhile the flows
        are held and the connection left without a command for a chosen time, then a command
        is sent: past the client's idle time (it re-authorizes with a fresh token first), and
        between the two (the command meets a stale connection: reset, then re-sent with its
        guid on a connection authorized with a fresh token). The flows' own pauses longer than
        ``idle`` do the latter too."""
        reauth = self.args.reauth_after_idle
        idle = rng.uniform(0.4, reauth / 2)
        if not await self.quiet_moment():
            self.fault_detail["idle cws: skipped, not settled in 15 s"] += 1
            return
        await self.admin.post("/sim/idle-cws", {"seconds": idle})
        try:
            holds = [
                ("past reauth_after_idle", rng.uniform(reauth + 0.5, reauth + 2.0)),
                ("stale, within reauth_after_idle", rng.uniform(idle + 0.3, reauth - 0.3)),
            ]
            rng.shuffle(holds)
            for name, seconds in holds:
                if await self.pause(rng.uniform(1.0, 4.0), self.stop_chaos):
                    return
                before = await self.idle_counters()
                if not await self.hold_flows(seconds):
                    return
                self.fault_detail[f"idle cws: flows held {name}"] += 1
                after = await self.idle_counters()  # what the command after the hold met
                self.idle_holds.append(
                    {
                        "held": name,
                        "seconds": round(seconds, 1),
                        "idle": round(idle, 1),
                        **{k: after[k] - before[k] for k in after},
                    }
                )
            await self.pause(rng.uniform(1.0, 3.0), self.stop_chaos)
        finally:
            await self.admin.post("/sim/idle-cws", {"seconds": None})

    async def idle_counters(self) -> dict[str, int]:
        """The counters of the idle ``/cws`` fault: the simulator's resets of commands on a
        stale connection, the client's re-authorizations before a command after an idle time
        and its authorizations with a fresh token, and token refreshes."""
        sim = ((await self.admin.get("/sim/stats")).get("faults") or {}).get("idle_cws") or {}
        trading = self._client().trading.stats()
        return {
            "sim resets": int(sim.get("resets") or 0),
            "idle reauthorizations": trading["idle_reauthorizations"],
            "fresh authorizations": trading["fresh_authorizations"],
            "token refreshes": self._client().stats()["tokens"].get("refreshes") or 0,
        }

    def cws_idle(self) -> float:
        """Seconds since the client last sent a command on ``/cws`` (its own idle clock)."""
        idle = self._client().trading.stats()["idle_s"]
        return float("inf") if idle is None else float(idle)

    async def hold_flows(self, idle_for: float) -> bool:
        """Hold the flows until the ``/cws`` connection has carried no command for
        ``idle_for`` seconds, then send one and wait for its outcome; False if the chaos ended
        first."""
        self.flow_gate.clear()
        try:
            await self.until(lambda: self.in_flight == 0, 15.0)
            if self.cws_idle() > idle_for - 0.2:  # idle too long already: start the clock now
                await self.probe_command()
            if await self.pause(max(0.0, idle_for - self.cws_idle()), self.stop_chaos):
                return False
            await self.probe_command()
            return True
        finally:
            self.flow_gate.set()

    async def probe_command(self) -> None:
        """One command now, whatever the flows do: a buy limit on SBER far below the price,
        left resting for the SBER flow to modify or cancel."""
        symbol = "SBER"
        q = self._quote(symbol)
        if q is None or q.bid is None:
            return
        trading = self._client().trading
        p = self.portfolio
        price = self._price(symbol, q.bid - 50 * self.steps[symbol])
        ack = await self.command(
            "place limit (rests)",
            lambda g: trading.place_limit(p, symbol, "buy", 1, price, comment=g, guid=g),
            gated=False,
        )
        if ack is not None and ack.order_number:
            self._resting[symbol].append((ack.order_number, "buy"))

    async def silence(self, rng: random.Random) -> None:
        """Silence one or two watched subscriptions, market, account or both, each for longer
        than its silence timeout: the client must notice and subscribe it again. Data meant
        for a silent subscription is never sent, so an account stream is whole again only
        through the re-subscription's replay and snapshot. Only once the client has settled,
        so that the subscriptions are there to silence; and mostly the chaos waits until the
        client has subscribed each again (or its silence is over) before the next fault, since a
        restore would subscribe it again first (on a new connection, where it is not silent)."""
        if not await self.quiet_moment():
            self.fault_detail["silence: skipped, not settled in 15 s"] += 1
            return
        waits: list[tuple[Recorder, int, float]] = []
        watched = [r for r in self.recorders.values() if r.stream.silence_timeout and r.stream.guid]
        which = rng.choice(("market", "account", "both"))
        for group in ("market", "account"):
            pool = [r for r in watched if r.stream.account == (group == "account")]
            if which not in (group, "both") or not pool:
                continue
            for r in rng.sample(pool, rng.randint(1, min(2, len(pool)))):
                stream = r.stream
                assert stream.guid is not None and stream.silence_timeout is not None
                seconds = 1.25 * stream.silence_timeout + rng.uniform(1.5, 4.0)
                body: dict[str, Any] = {"seconds": seconds}
                if rng.random() < 0.5:
                    body["guid"] = stream.guid
                    how = "by guid"
                else:  # every subscription of that kind on that instrument or portfolio
                    request = stream.request
                    body["opcode"] = request.opcode.value
                    body["symbol"] = getattr(request, "code", None) or getattr(
                        request, "portfolio", None
                    )
                    how = "by opcode and symbol"
                base = (r.silent_in_fault, r.restores, r.resubscribed)
                reply = await self.admin.post("/sim/silence", body)
                end = time.monotonic() + seconds
                self.silence_ends[stream.guid] = end
                self.silence_until = max(self.silence_until, end)
                n = int(reply.get("silenced", 0))
                self.silenced_subs[group] += n
                self.fault_detail[f"silence: {group}, {how}"] += 1
                record = {"stream": r.name, "silenced": n, "seconds": round(seconds, 1)}
                self.silences.append(record)
                task = asyncio.get_running_loop().create_task(
                    self._silence_outcome(r, record, base, seconds + SILENCE_SLACK)
                )
                self._watching.add(task)
                task.add_done_callback(self._watching.discard)
                waits.append((r, r.resubscribed, end))
        if rng.random() < 0.3:
            self.fault_detail["silence: other faults meanwhile"] += 1
            return

        def over() -> bool:
            now = time.monotonic()
            return all(r.resubscribed > before or now > end for r, before, end in waits)

        await self.until(over, max((end for _, _, end in waits), default=0.0) - time.monotonic())

    async def _silence_outcome(
        self, r: Recorder, record: dict[str, Any], base: tuple[int, int, int], seconds: float
    ) -> None:
        """Once the stream is subscribed again (or the silence and its slack are over): whether
        the client noticed the silence, and whether a restore came first (the connection was
        lost: a new one subscribes everything again, nothing silent)."""
        await self.until(lambda: r.resubscribed > base[2], seconds)
        record["noticed"] = r.silent_in_fault > base[0]
        record["restored first"] = r.restores > base[1]

    async def quiet_moment(self) -> bool:
        """Wait for any stall or restart window to end and the client to settle (15 s at
        most); False if it did not settle, or the chaos ended meanwhile."""
        wait = max(0.0, self.stall_until - time.monotonic(), self.window_until - time.monotonic())
        if wait and await self.pause(wait + 0.1, self.stop_chaos):
            return False
        return await self.until(self.settled, 15.0) and not self.stop_chaos.is_set()

    async def inject(self, rng: random.Random) -> None:
        """Hostile frames, injected only while nothing else is going on, so each one reaches
        its connections; then wait until the client has counted them all."""
        if not await self.quiet_moment():
            # Not injected: counted as skipped, not as a fault of the run (a run whose every
            # injection fell into restart windows injected nothing).
            self.faults["inject"] -= 1
            if not self.stop_chaos.is_set():
                self.inject_skipped += 1
            return
        targets = [
            s
            for s in (r.stream for r in self.recorders.values())
            if s.policy.value == "queue" and not s.account and s.guid is not None
        ]
        # Only frames the client must refuse: envelope-level ones (every connection counts
        # them) and payloads the aimed stream's own decoder refuses (that stream counts them).
        frames = [(n, f, "envelope") for n, f in envelope_frames(rng) if is_unreadable(f)]
        stream = rng.choice(targets)
        assert stream.guid is not None
        for name, frame in aimed_frames(stream.guid, rng):
            if is_bad_payload(frame, stream):
                frames.append((name, frame, "aimed"))
            else:
                self.aimed_skipped.append(f"{name} ({stream.name})")
        before = expected = self.counted_bad()
        for name, frame, category in rng.sample(frames, rng.randint(2, 6)):
            reply = await self.admin.post("/sim/inject", {"frame": frame})
            n = int(reply.get("injected", 0))
            self.inject_frames += 1
            self.injected[category] += n
            self.injected[name] += n
            expected += n
        if expected == before:  # no connection took any: a skip too (see above)
            self.faults["inject"] -= 1
            self.inject_skipped += 1
            return
        if not await self.until(lambda: self.counted_bad() >= expected, 5.0):
            self.inject_waits_missed += 1

    async def calm(self) -> None:
        """End every fault: no random drops, no delay, no refusal or restart window, no stale
        ``/cws``; stalls and silences over."""
        a = self.admin
        await a.post("/sim/random-drops", {"every": None})
        await a.post("/sim/delay", {"seconds": 0})
        await a.post("/sim/refuse", {"seconds": 0})
        if self.optional.get("restart window"):
            await a.post("/sim/restart-window", {"seconds": 0})
        if self.optional.get("idle cws"):
            await a.post("/sim/idle-cws", {"seconds": None})
        # A silence runs to its end, not cut short: the client notices one only after its
        # timeout, and what a silent account subscription missed comes back only then.
        wait = max(self.stall_until, self.silence_until) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.optional.get("silence"):
            await a.post("/sim/unsilence")

    # -- monitoring -----------------------------------------------------------------------

    async def monitor(self, t0: float, warmup: float, every: float) -> None:
        warm_done = False
        next_line = t0 + every
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            client = self._client()
            tokens = client._tokens
            if tokens is not None and tokens.current:
                # Its parts too: a log excerpt may cut a token short.
                parts = tokens.current.split(".")
                self.log.add_secret("an access token", tokens.current)
                if len(parts) == 3:
                    self.log.add_secret("an access token's claims", parts[1][:20])
                    self.log.add_secret("an access token's signature", parts[2][:20])
            if not warm_done and now - t0 >= warmup:
                await self.sample("warmup")
                warm_done = True
            if now >= next_line:
                next_line += every
                st = client.stats()
                o = self.outcomes
                print(
                    f"  t={now - t0:6.0f}s commands={sum(o.commands.values())} "
                    f"acks={o.results['ack']} faults={sum(self.faults.values())} "
                    f"reconnects={st['reconnects']}+{client.trading.stats()['reconnects']} "
                    f"rss={rss_mb():.1f}MB fds={open_fds()} load={load()}",
                    flush=True,
                )

    # -- main -----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        args = self.args
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._on_unhandled)
        logger = logging.getLogger("alorws")
        logger.addHandler(self.log)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        self.log.add_secret("the refresh token", self.sim.refresh)
        self.log.add_secret("the admin token", self.sim.admin_token)
        for label, value in _FAKE_SECRETS:
            self.log.add_secret(label, value)
        await self.probe_optional()
        await self.sample("start")
        print(
            "  optional faults: "
            + (", ".join(f"{k} {'on' if v else 'absent'}" for k, v in self.optional.items()))
        )
        result: dict[str, Any] = {}
        market_silence, account_silence = args.silence_timeout
        async with AlorClient(
            self.sim.refresh,
            base_url=self.sim.url,
            backoff=Backoff(base=0.2, cap=2.0),
            ping_interval=1.0,
            ping_timeout=2.0,
            silence_timeout={
                kind: market_silence if group == "market" else account_silence
                for kind, group in SILENCE_KINDS.items()
            },
            reauth_after_idle=args.reauth_after_idle,
        ) as client:
            self.client = client

            async def hook() -> None:
                asyncio.get_running_loop().set_exception_handler(self._on_unhandled)

            await client.call_in_io(hook)
            self.make_streams(client)
            await client.subscribe_all([r.stream for r in self.recorders.values()])
            for r in self.recorders.values():
                r.start()
            self.pf = Portfolio(client, self.portfolio)
            await self.pf.start()
            guids = {id(s): s.guid for s in self.all_streams()}
            for symbol in ("SBER", "GAZP"):
                self.steps[symbol] = (await client.http.security(symbol)).min_step or 0.01
            await self.until(lambda: all(self._quote(s) for s in ("SBER", "GAZP")), 15.0)

            t0 = self.t0 = time.monotonic()
            monitor = loop.create_task(self.monitor(t0, args.warmup, args.progress))
            flows = [
                loop.create_task(
                    self.flow(sym, random.Random(args.seed + 10 + i), args.order_rate / 2)
                )
                for i, sym in enumerate(("SBER", "GAZP"))
            ]
            chaos = loop.create_task(self.chaos())
            await asyncio.sleep(args.seconds)
            self.stop_chaos.set()
            await chaos
            await self.calm()
            self.stop_flow.set()
            await asyncio.gather(*flows)
            chaos_end = time.monotonic()
            settled = await self.until(self.settled, 60.0)
            await self.cancel_everything()
            await asyncio.sleep(args.quiet)
            settled = settled and await self.until(self.settled, 30.0)
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            if "warmup" not in self.samples:
                await self.sample("warmup")
            await self.sample("end")
            result = await self.verify(guids, settled)
            result["chaos_seconds"] = chaos_end - t0
            for r in self.recorders.values():
                await r.stop()
            await self.pf.aclose()
        self.client = None
        await asyncio.sleep(0.2)  # let the closed sockets go
        gc.collect()
        result["fds_after_close"] = open_fds()
        logger.removeHandler(self.log)
        return result

    async def verify(self, guids: dict[int, str | None], settled: bool) -> dict[str, Any]:
        """Compare with the ground truth (waiting for the client to catch up, bounded)."""
        client = self._client()
        assert self.pf is not None
        pf = self.pf
        p = self.portfolio
        rec = self.recorders
        deadline = time.monotonic() + 20.0
        while True:
            records = await self.admin.get("/sim/ground-truth")
            truth = {
                k: truth_of(records, p, k) for k in ("orders", "stop_orders", "trades", "positions")
            }
            cmp = {
                "orders": compare_orders(rec["orders"].states, truth["orders"]),
                "stop_orders": compare_orders(rec["stop orders"].states, truth["stop_orders"]),
                "own_trades": compare_trades(rec["own trades"].trade_ids, truth["trades"]),
                "positions": compare_positions(
                    rec["positions"].positions,
                    rec["positions"].position_repeats,
                    truth["positions"],
                ),
            }
            portfolio_diff = compare_portfolio(
                {k: _state_of(v) for k, v in pf.orders.items()},
                {k: _state_of(v) for k, v in pf.stop_orders.items()},
                set(pf.trades),
                {k: v.qty_units for k, v in pf.positions.items()},
                truth,
            )
            caught_up = all(c["lost"] == 0 for c in cmp.values()) and not portfolio_diff
            if caught_up or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        twice_orders, twice_o_ex = executed_twice(truth["orders"], self.prefix)
        twice_stops, twice_s_ex = executed_twice(truth["stop_orders"], self.prefix)
        known = {str(d["id"]) for d in truth["orders"]} | {
            str(d["id"]) for d in truth["stop_orders"]
        }
        ack_unknown = [g for g, oid in self.outcomes.acks.items() if oid not in known]

        # Subscriptions: every stream active under the guid it got at subscribe time.
        streams = self.all_streams()
        registry = {s.guid: s for s in client._registry.subscriptions()}
        restored = [
            s
            for s in streams
            if s.is_open
            and s.guid == guids.get(id(s))
            and (sub := registry.get(s.guid)) is not None
            and sub.state is SubscriptionState.ACTIVE
        ]
        # Both counts at one moment: while a re-subscription is in flight (a quiet account
        # stream's, see SILENCE_KINDS) the simulator holds one subscription fewer for a moment.
        for _ in range(20):
            before = self.resubscribes()
            sim_stats = await self.admin.get("/sim/stats")
            client_subs = client.stats()["subscriptions"]
            if before == self.resubscribes() and before[1] == 0:
                break
            await asyncio.sleep(0.1)
        sim_subs = sim_stats.get("subscriptions", -1)
        market_silent = [
            r.name
            for r in rec.values()
            if not r.stream.account and r.last_at < self.samples["end"]["t"] - self.args.quiet - 5
        ]

        stats = client.stats()
        counted = self.counted_bad()
        injected = self.injected["envelope"] + self.injected["aimed"]
        lanes = stats["lanes"]
        st = self.samples
        lost = sum(c["lost"] for c in cmp.values()) + len(portfolio_diff) + len(ack_unknown)
        lost += sum(r.lost for r in rec.values())
        duplicated = sum(c["duplicated"] for c in cmp.values())
        duplicated += sum(c.get("false", 0) + c.get("phantom", 0) for c in cmp.values())
        duplicated += sum(r.regressions for r in rec.values())
        return {
            "settled": settled,
            "events_compared": sum(c["compared"] for c in cmp.values()),
            "compare": cmp,
            "portfolio_diff": portfolio_diff,
            "acks_without_order": ack_unknown,
            "lost": lost,
            "duplicated": duplicated,
            "executed_twice": twice_orders + twice_stops,
            "executed_twice_examples": twice_o_ex + twice_s_ex,
            "subscriptions": len(streams),
            "restored": len(restored),
            "client_subscriptions": client_subs,
            "sim_subscriptions": sim_subs,
            "sim_connections": sim_stats.get("connections", -1),
            "sim_errors": sim_stats.get("errors", -1),
            "market_silent_in_quiet": market_silent,
            "bad_counted": counted,
            "bad_injected": injected,
            "bad_detail": {
                "lanes_bad_frames": sum(lane["bad_frames"] for lane in lanes),
                "lanes_unrouted": sum(lane["unrouted"] for lane in lanes),
                "cws_bad_frames": client.trading.stats()["bad_frames"],
                "streams_bad_payloads": sum(s.bad_payloads for s in client._streams),
                "frames_injected": self.inject_frames,
                "injections_skipped_unsettled": self.inject_skipped,
                "waits_missed": self.inject_waits_missed,
                "by_kind": {
                    k: v for k, v in self.injected.items() if k not in ("envelope", "aimed")
                },
                "templates_skipped": sorted(set(self.aimed_skipped)),
            },
            "reconnects": stats["reconnects"],
            "cws_reconnects": client.trading.stats()["reconnects"],
            "cws_resends": client.trading.stats()["resends"],
            "token_refreshes": stats["tokens"].get("refreshes"),
            "restores_seen": sum(r.restores for r in rec.values()),
            "stream_events_kept": sum(len(s.events) for s in streams),
            "received": {r.name: r.count for r in rec.values()},
            "stream_errors": [e for r in rec.values() for e in r.errors][:10],
            "samples": st,
            "rss_growth_mb": st["end"]["rss_mb"] - st["warmup"]["rss_mb"],
            "faults": dict(self.faults),
            "optional_faults": self.optional,
            "production": self.production(sim_stats, stats),
            "admin_failures": self.admin.failures[:10],
            "commands": dict(self.outcomes.commands),
            "command_results": dict(self.outcomes.results),
            "command_retries": self.outcomes.retries,
            "commands_unresolved": self.outcomes.unresolved,
            "command_errors": self.outcomes.errors[:10],
            "orders_at_sim": len({str(d["id"]) for d in truth["orders"]}),
            "trades_at_sim": len({str(d["id"]) for d in truth["trades"]}),
            "log_counts": dict(self.log.counts),
            "log_samples": self.log.samples,
            "token_leaks": self.log.leaks[:10],
            "unhandled": self.unhandled[:10],
            "memory_growth_top": self.memory_growth(),
        }

    def production(self, sim_stats: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
        """The production faults used, what the simulator counted of them, and how the client
        reacted: re-authorizations of an idle ``/cws``, re-subscriptions of silent streams."""
        trading = self._client().trading.stats()
        sim_faults = sim_stats.get("faults") or {}
        window = sim_faults.get("restart_window") or {}
        rec = list(self.recorders.values())
        lanes = stats["lanes"]
        return {
            "used": {kind: self.faults[kind] for kind in OPTIONAL_FAULTS},
            "detail": dict(sorted(self.fault_detail.items())),
            "silenced": dict(self.silenced_subs),
            "silences": self.silences,
            "idle_holds": self.idle_holds,
            "sim_stale_resets": (sim_faults.get("idle_cws") or {}).get("resets"),
            "sim_window": {k: window.get(k) for k in ("refused", "admitted", "dropped")},
            "idle_reauthorizations": trading["idle_reauthorizations"],
            "fresh_authorizations": trading["fresh_authorizations"],
            "reauthorizations": trading["reauthorizations"],
            "silent_in_fault": sum(r.silent_in_fault for r in rec),
            "silent_quiet": sum(r.silent_quiet for r in rec),
            "resubscribed": sum(r.resubscribed for r in rec),
            "watched": sum(lane["watched"] for lane in lanes),
            "lane_resubscribes": sum(lane["resubscribes"] for lane in lanes),
            "lane_resubscribe_failures": sum(lane["resubscribe_failures"] for lane in lanes),
        }

    def memory_growth(self, top: int = 12) -> list[str]:
        """With ``--trace-memory``: where Python memory grew from the warm-up to the end."""
        if not {"warmup", "end"} <= self.snapshots.keys():
            return []
        diff = self.snapshots["end"].compare_to(self.snapshots["warmup"], "lineno")
        return [str(d) for d in diff[:top]]


#: The production faults (docs/protocol.md §9.6): kind -> (the admin endpoints it needs, its
#: weight in the chaos draw). Each is probed before the run (a GET on a POST route answers 405,
#: a missing route 404) and skipped when absent; a 400 to a body is reported, not fatal.
OPTIONAL_FAULTS: dict[str, tuple[tuple[str, ...], float]] = {
    "silence": (("/sim/silence", "/sim/unsilence"), 1.5),
    "restart window": (("/sim/restart-window",), 1.0),
    "idle cws": (("/sim/idle-cws",), 0.7),  # the longest: last when they are due together
}


# -- verdict ----------------------------------------------------------------------------------


def verdict(r: dict[str, Any]) -> list[str]:
    """The invariants that failed (empty: PASS)."""
    s = r["samples"]
    failed = []
    if r["lost"]:
        failed.append(f"lost {r['lost']}")
    if r["duplicated"]:
        failed.append(f"duplicated {r['duplicated']}")
    if r["executed_twice"]:
        failed.append(f"executed twice {r['executed_twice']}")
    if r["restored"] != r["subscriptions"] or r["client_subscriptions"] != r["sim_subscriptions"]:
        failed.append("not all subscriptions restored")
    if r["bad_counted"] != r["bad_injected"]:
        failed.append(f"bad frames counted {r['bad_counted']} != injected {r['bad_injected']}")
    if r["token_leaks"]:
        failed.append("a token reached the log")
    if r["unhandled"]:
        failed.append("unhandled exceptions")
    if r["sim_errors"]:
        failed.append(f"simulator errors {r['sim_errors']}")
    if r["rss_growth_mb"] >= RSS_GROWTH_LIMIT_MB:
        failed.append(f"RSS grew {r['rss_growth_mb']:.1f} MB after the warm-up")
    warm, end = s["warmup"]["fd_census"], s["end"]["fd_census"]
    if abs(end["other"] - warm["other"]) > FD_SLACK:
        failed.append(f"fds other than connections {warm['other']} -> {end['other']}")
    to_sim = sum(end["to_sim"].values())
    if to_sim > r["sim_connections"] + HTTP_POOL + 2:
        failed.append(
            f"{to_sim} connections to the simulator at the end for its {r['sim_connections']} "
            f"WebSocket connections (+{HTTP_POOL} HTTP pool, +2 token and admin sessions)"
        )
    if abs(r["fds_after_close"] - s["start"]["fds"]) > FD_SLACK:
        failed.append(f"fds after close {r['fds_after_close']} vs {s['start']['fds']} at start")
    failed += [
        f"{key} {s['warmup'][key]} -> {s['end'][key]}"
        for key in ("tasks", "io_tasks")
        if s["end"][key] - s["warmup"][key] > TASK_SLACK
    ]
    if not r["settled"]:
        failed.append("the client did not settle after the chaos")
    return failed


def report(r: dict[str, Any], failed: list[str]) -> None:
    s = r["samples"]
    c = r["compare"]
    d = r["bad_detail"]
    print("== invariants")
    print(
        f"events compared: {r['events_compared']} (orders {c['orders']['compared']} states of "
        f"{c['orders']['orders']}, stop orders {c['stop_orders']['compared']} of "
        f"{c['stop_orders']['orders']}, own trades {c['own_trades']['compared']} of "
        f"{c['own_trades']['trades']}, positions {c['positions']['compared']} symbols)"
    )
    print(f"lost: {r['lost']}")
    print(f"duplicated: {r['duplicated']}")
    print(f"executed twice: {r['executed_twice']}")
    print(
        f"subscriptions restored: {r['restored']}/{r['subscriptions']} active with their "
        f"original guid (client {r['client_subscriptions']}, simulator "
        f"{r['sim_subscriptions']} server subscriptions)"
    )
    print(
        f"bad frames: counted {r['bad_counted']} / injected {r['bad_injected']} "
        f"({d['frames_injected']} frames; lanes bad {d['lanes_bad_frames']} unrouted "
        f"{d['lanes_unrouted']}, /cws {d['cws_bad_frames']}, streams {d['streams_bad_payloads']})"
    )
    print(f"tokens in logs: {len(r['token_leaks'])}")
    print(f"unhandled exceptions: {len(r['unhandled'])}")
    print(f"simulator errors: {r['sim_errors']}")
    print(
        f"reconnects: {r['reconnects']} (/ws lanes) + {r['cws_reconnects']} (/cws); restores "
        f"seen by streams {r['restores_seen']}; token refreshes {r['token_refreshes']}"
    )
    print(
        f"RSS MB: start {s['start']['rss_mb']:.1f}, after warm-up {s['warmup']['rss_mb']:.1f}, "
        f"end {s['end']['rss_mb']:.1f}; growth after warm-up {r['rss_growth_mb']:+.1f} "
        f"({60 * r['rss_growth_mb'] / max(1.0, s['end']['t'] - s['warmup']['t']):+.2f} MB/min)"
    )
    warm, end = s["warmup"]["fd_census"], s["end"]["fd_census"]
    print(
        f"open fds: start {s['start']['fds']}, after warm-up {s['warmup']['fds']}, end "
        f"{s['end']['fds']}, after close {r['fds_after_close']}; other than connections to the "
        f"simulator {warm['other']} -> {end['other']}; connections to the simulator "
        f"{warm['to_sim']} -> {end['to_sim']} (it holds {r['sim_connections']} WebSockets)"
    )
    print(
        f"tasks alive: consumer loop {s['warmup']['tasks']} -> {s['end']['tasks']}, I/O loop "
        f"{s['warmup']['io_tasks']} -> {s['end']['io_tasks']}; threads "
        f"{s['warmup']['threads']} -> {s['end']['threads']}"
    )
    print("== detail")
    print(f"faults: {r['faults']}; optional: {r['optional_faults']}")
    p = r["production"]
    window = p["sim_window"]
    print(
        f"production faults: {p['used']}; {p['detail']}; subscriptions silenced {p['silenced']}; "
        f"at the simulator: commands reset on a stale /cws {p['sim_stale_resets']}, restart "
        f"window attempts refused {window['refused']}, let through {window['admitted']}, "
        f"dropped {window['dropped']}"
    )
    print(
        f"client reactions: /cws re-authorized before a command after idle "
        f"{p['idle_reauthorizations']}, authorized with a fresh token {p['fresh_authorizations']} "
        f"(re-authorizations {p['reauthorizations']}); silences noticed "
        f"{sum(1 for x in p['silences'] if x.get('noticed'))} of {len(p['silences'])} "
        f"({sum(1 for x in p['silences'] if x.get('restored first'))} restored before the client "
        f"noticed); stream events: silent {p['silent_in_fault']} during a silence + "
        f"{p['silent_quiet']} of a quiet stream, resubscribed {p['resubscribed']}; lanes: "
        f"{p['watched']} subscriptions watched, re-subscribed {p['lane_resubscribes']}, failed "
        f"{p['lane_resubscribe_failures']}"
    )
    for hold in p["idle_holds"]:
        print(f"  idle /cws hold: {hold}")
    for silence in p["silences"]:
        print(f"  silence: {silence}")
    print(
        f"commands: {r['commands']}; results {r['command_results']}; retried with the same "
        f"guid {r['command_retries']}; unresolved {len(r['commands_unresolved'])}; re-sent by "
        f"the client after a reconnect {r['cws_resends']}"
    )
    print(f"orders at the simulator: {r['orders_at_sim']}, own trades {r['trades_at_sim']}")
    print(f"received: {r['received']}")
    print(
        f"stream events kept (Stream.events): {r['stream_events_kept']}; de-duplication "
        f"entries {s['warmup']['dedup_entries']} -> {s['end']['dedup_entries']}"
    )
    print(f"bad frames by kind: {d['by_kind']}")
    if d["templates_skipped"]:
        print(f"hostile templates skipped (decodable): {d['templates_skipped']}")
    print(
        f"injections skipped (not settled in 15 s): {d['injections_skipped_unsettled']}; "
        f"count waits missed: {d['waits_missed']}"
    )
    print(f"log records: {r['log_counts']}")
    for line in r["log_samples"]:
        print(f"  log: {line}")
    for key in (
        "portfolio_diff",
        "acks_without_order",
        "executed_twice_examples",
        "market_silent_in_quiet",
        "stream_errors",
        "command_errors",
        "admin_failures",
        "token_leaks",
        "unhandled",
    ):
        if r[key]:
            print(f"{key}: {r[key]}")
    for line in r["memory_growth_top"]:
        print(f"  memory: {line}")
    for name, cmp in c.items():
        if cmp["examples"]:
            print(f"{name} examples: {cmp['examples']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0, help="chaos and load, seconds")
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--order-rate", type=float, default=1.5, help="order commands per second")
    p.add_argument("--rate", type=float, default=40.0, help="simulator market events/s")
    p.add_argument("--token-lifetime", type=float, default=20.0, help="JWT lifetime, seconds")
    p.add_argument(
        "--reauth-after-idle",
        type=float,
        default=3.0,
        help="the client's reauth_after_idle, seconds (1.5-30; the idle /cws fault makes the "
        "simulator's idle time shorter, at most half of it)",
    )
    p.add_argument(
        "--silence-timeout",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=(1.5, 3.0),
        help="MARKET,ACCOUNT: the client's silence timeouts, seconds",
    )
    p.add_argument(
        "--chaos-gap",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=(0.5, 3.0),
        help="min,max seconds between faults",
    )
    p.add_argument("--warmup", type=float, default=None, help="default: 20%% of --seconds, 10-120")
    p.add_argument("--quiet", type=float, default=None, help="default: 5%% of --seconds, 5-10")
    p.add_argument("--progress", type=float, default=None, help="seconds between progress lines")
    p.add_argument("--pin", action="store_true", help="this process on CPU 0, simulator on CPU 1")
    p.add_argument(
        "--trace-memory",
        action="store_true",
        help="trace Python allocations (slower) and print where memory grew after the warm-up",
    )
    p.add_argument("--verbose", action="store_true", help="print every fault as it starts")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    args = p.parse_args(argv)
    if not 1.5 <= args.reauth_after_idle <= 30:
        p.error("--reauth-after-idle must be 1.5-30 s (the order flows are held that long)")
    if len(args.silence_timeout) != 2 or not all(t > 0 for t in args.silence_timeout):
        p.error("--silence-timeout takes two timeouts > 0: MARKET,ACCOUNT")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    if args.warmup is None:
        args.warmup = min(120.0, max(10.0, 0.2 * args.seconds))
    if args.quiet is None:
        args.quiet = min(10.0, max(5.0, 0.05 * args.seconds))
    if args.progress is None:
        args.progress = min(60.0, max(10.0, args.seconds / 10))
    return args


async def amain(args: argparse.Namespace) -> int:
    if args.trace_memory:
        tracemalloc.start(4)
    sim = SimProcess(args.seed, args.rate, args.token_lifetime, cpu=1 if args.pin else None)
    print(
        f"soak: seed {args.seed}; {args.seconds:g} s of chaos (warm-up {args.warmup:g} s), then "
        f"{args.quiet:g} s quiet; orders {args.order_rate:g}/s; market {args.rate:g} events/s; "
        f"tokens live {args.token_lifetime:g} s; this process {pin(0 if args.pin else None)}"
    )
    print(f"  load average at start: {load()}", flush=True)
    try:
        with sim.running():
            headers = {"X-Sim-Admin": sim.admin_token} if sim.admin_token else {}
            async with aiohttp.ClientSession(sim.url, headers=headers) as session:
                soak = Soak(args, sim, Admin(session))
                pid = sim.proc.pid if sim.proc else "?"
                print(f"  simulator pid {pid}, portfolio {soak.portfolio}", flush=True)
                result = await soak.run()
                result["sim_rss_mb"] = rss_mb(sim.proc.pid) if sim.proc else 0.0
        lines, tail = sim.stderr_tail()
    finally:
        sim.cleanup()
    result["seed"] = args.seed
    result["sim_stderr_lines"] = lines
    failed = verdict(result)
    result["failed"] = failed
    result["pass"] = not failed
    report(result, failed)
    print(f"simulator: RSS {result['sim_rss_mb']:.1f} MB at the end; stderr {lines} lines")
    for line in tail:
        print(f"  sim: {line}")
    print(f"load average at end: {load()}")
    print(f"RESULT: {'PASS' if not failed else 'FAIL (' + '; '.join(failed) + ')'}")
    if args.json:
        write_json(args.json, result)
    return 0 if not failed else 1


def write_json(path: str, result: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=str)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
