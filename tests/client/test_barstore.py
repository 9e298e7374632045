"""BarStore / history(cache=...): closed candles kept in Parquet, only missing ranges fetched;
requests counted at the simulator (docs/protocol.md §8.3)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from aiohttp import web

from alorws.client.barstore import ANONYMOUS_SETTLE, BarStore, _merge, _missing, _read
from alorws.client.http import HttpClient
from alorws.errors import InvalidArgumentError, MissingDependency
from alorws.frames import Bars
from alorws.protocol.market import Bar
from alorws.sim.app import Simulator

from .test_http import bar_tuple, serve


HISTORY = "/md/v2/history"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(port=0, seed=3, rate=0, history_days=1) as s:
        yield s


def sent(sim: Simulator) -> int:
    """History requests the simulator has received so far."""
    return int(sim.stats()["http_requests"].get(HISTORY, 0))


def tuples(bars: list[Bar]) -> list[tuple[int, float, float, float, float, int]]:
    return [bar_tuple(b) for b in bars]


async def test_a_second_call_for_the_same_range_sends_no_request(
    sim: Simulator, tmp_path: Path
) -> None:
    now = int(time.time())
    start, end = now - 6 * 3600, now - 3 * 3600
    store = BarStore(tmp_path, settle=0)
    async with HttpClient(sim.url) as http:
        direct = await http.history("SBER", 60, start, end)
        assert sent(sim) == 1 and len(direct) > 100
        first = await store.history(http, "SBER", 60, start, end)
        assert sent(sim) == 2
        second = await store.history(http, "SBER", 60, start, end)
        inner = await store.history(http, "SBER", 60, start + 600, end - 600)
        assert sent(sim) == 2  # nothing sent for a covered range
        via_http = await http.history("SBER", "60", start, end, cache=tmp_path)
        assert sent(sim) == 2
    assert type(first) is Bars and type(second) is Bars and type(via_http) is Bars
    assert tuples(first) == tuples(second) == tuples(via_http) == tuples(direct)
    assert tuples(inner) == [t for t in tuples(direct) if start + 600 - 60 < t[0] <= end - 600]
    file = store.file("SBER", 60, server=sim.url)
    assert file.parent.parent.parent.name == f"127.0.0.1_{sim.port}"
    assert file.relative_to(tmp_path).parts[1:] == ("MOEX", "SBER", "60.parquet")
    stored, covered = store.read("SBER", 60, server=sim.url)
    assert covered == [(start - 59, end)]
    assert tuples(stored) == tuples(direct)


async def test_an_extended_range_fetches_only_the_new_parts(sim: Simulator, tmp_path: Path) -> None:
    now = int(time.time())
    a, b, c = now - 8 * 3600, now - 6 * 3600, now - 4 * 3600
    store = BarStore(tmp_path, settle=0)
    async with HttpClient(sim.url) as http:
        await store.history(http, "SBER", 60, a, b)
        assert sent(sim) == 1
        later = await store.history(http, "SBER", 60, a, c)
        assert sent(sim) == 2  # [b + 1, c] only: one request
        assert store.read("SBER", 60, server=sim.url)[1] == [(a - 59, c)]
        both = await store.history(http, "SBER", 60, a - 3600, c + 3600)
        assert sent(sim) == 4  # the hour before and the hour after: one request each
        assert store.read("SBER", 60, server=sim.url)[1] == [(a - 3600 - 59, c + 3600)]
        direct = await http.history("SBER", 60, a - 3600, c + 3600)
    assert tuples(both) == tuples(direct)
    assert tuples(later) == [t for t in tuples(direct) if a - 60 < t[0] <= c]
    times = [bar.time for bar in both]
    assert times == sorted(set(times))  # no candle twice across the joins


async def test_timeframes_and_boards_are_kept_apart(sim: Simulator, tmp_path: Path) -> None:
    now = int(time.time())
    start, end = now - 5 * 3600, now - 2 * 3600
    store = BarStore(tmp_path, settle=0)
    async with HttpClient(sim.url) as http:
        minutes = await store.history(http, "SBER", 60, start, end)
        fives = await store.history(http, "SBER", 300, start, end)
        assert sent(sim) == 2
        assert tuples(fives) == tuples(await http.history("SBER", 300, start, end))
        await store.history(http, "SBER", 300, start, end, board="TQBR")
        await store.history(http, "SBER", 60, start, end, split_adjust=False)
        assert sent(sim) == 5  # one more each: another file
        again = await store.history(http, "SBER", 60, start, end)
        assert sent(sim) == 5
    assert tuples(again) == tuples(minutes)
    folder = tmp_path / f"127.0.0.1_{sim.port}" / "MOEX"
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.parquet"))
    assert names == ["SBER/300.parquet", "SBER/60.nosplit.parquet", "SBER/60.parquet",
                     "SBER@TQBR/300.parquet"]  # fmt: skip


def _forming_server(now: int, calls: list[int]) -> list[web.RouteDef]:
    """``/md/v2/history`` of one candle a minute up to ``now``; the forming candle (the one
    containing ``now``) closes at the number of requests so far, as a live candle moves."""

    async def history(request: web.Request) -> web.StreamResponse:
        calls.append(int(request.query["from"]))
        lo, hi = int(request.query["from"]), int(request.query["to"])
        forming = now - now % 60
        first = lo - lo % 60
        bars = [
            {"time": t, "open": 100.0, "high": 200.0, "low": 50.0, "volume": 1,
             "close": float(len(calls)) if t == forming else 100.0}
            for t in range(first, min(hi, now) + 1, 60)
        ]  # fmt: skip
        return web.json_response({"history": bars, "next": None, "prev": None})

    return [web.get(HISTORY, history)]


async def test_the_forming_candle_is_fetched_again_and_never_kept(tmp_path: Path) -> None:
    """The last candle changes until it closes: each call returns its current state, the file
    never holds it, and once the clock has passed its close (+ settle) it is kept."""
    now = 1_750_662_000 + 30 * 60 + 25  # 25 s into a minute
    forming = now - now % 60
    clock = [float(now)]
    calls: list[int] = []
    store = BarStore(tmp_path, settle=5, clock=lambda: clock[0])
    async with serve(_forming_server(now, calls)) as url, HttpClient(url) as http:
        first = await store.history(http, "SBER", 60, now - 3600, now)
        assert first[-1].time == forming and first[-1].close == 1.0
        stored, covered = store.read("SBER", 60, server=url)
        cut = now - 5 - 60  # candles opening at or before it had closed 5 s ago
        assert covered == [(now - 3600 - 59, cut)] and stored[-1].time <= cut
        assert forming not in {b.time for b in stored}
        second = await store.history(http, "SBER", 60, now - 3600, now)
        assert len(calls) == 2 and calls[1] == cut + 1  # only the open tail again
        assert second[-1].time == forming and second[-1].close == 2.0  # its new state
        assert [bar_tuple(b) for b in second[:-1]] == [bar_tuple(b) for b in first[:-1]]
        clock[0] = forming + 60 + 5  # the candle has closed, and settled
        third = await store.history(http, "SBER", 60, now - 3600, now)
        assert len(calls) == 3 and third[-1].close == 3.0
        stored, covered = store.read("SBER", 60, server=url)
        assert covered == [(now - 3600 - 59, forming)] and stored[-1].time == forming
        assert stored[-1].close == 3.0  # kept in its closing state
        clock[0] = forming + 120 + 5
        fourth = await store.history(http, "SBER", 60, now - 3600, now)
        assert calls[3:] == [forming + 1]  # (forming, now] had not closed before: asked once
        assert fourth[-1].time == forming and fourth[-1].close == 3.0  # frozen
        assert store.read("SBER", 60, server=url)[1] == [(now - 3600 - 59, now)]
        fifth = await store.history(http, "SBER", 60, now - 3600, now)
        assert len(calls) == 4 and tuples(fifth) == tuples(fourth)


async def test_settle_defaults_to_twenty_minutes_without_a_token(tmp_path: Path) -> None:
    """Anonymous history is 15 minutes late: what is newer is not frozen as complete."""
    now = 1_750_662_000
    calls: list[int] = []
    store = BarStore(tmp_path, clock=lambda: float(now))
    async with serve(_forming_server(now, calls)) as url, HttpClient(url) as http:
        await store.history(http, "SBER", 60, now - 3 * 3600, now)
        _, covered = store.read("SBER", 60, server=url)
    assert covered == [(now - 3 * 3600 - 59, now - int(ANONYMOUS_SETTLE) - 60)]


def test_range_arithmetic() -> None:
    assert _merge([(5, 9), (1, 3), (4, 4), (20, 30), (25, 26)]) == [(1, 9), (20, 30)]
    assert _missing([(10, 20), (30, 40)], 0, 50) == [(0, 9), (21, 29), (41, 50)]
    assert _missing([(10, 20)], 12, 18) == [] and _missing([], 3, 4) == [(3, 4)]
    assert _missing([(0, 5), (10, 20)], 5, 10) == [(6, 9)]


_WRITER = """
import sys
from alorws.client.barstore import _add
from alorws.protocol.market import Bar
path, me, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for r in range(rounds):
    t = (me * rounds + r) * 1000
    _add(__import__("pathlib").Path(path), [Bar(time=t, open=1, high=1, low=1, close=me, volume=r)],
         [(t, t + 999)])
"""


def test_concurrent_writers_do_not_corrupt_or_lose_each_others_ranges(tmp_path: Path) -> None:
    """Processes adding to one file at once: every write is whole (temp file + rename) and,
    under the writers' lock, none loses another's candles or coverage."""
    file = tmp_path / "MOEX" / "SBER" / "60.parquet"
    writers, rounds = 2, 20
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(file), str(me), str(rounds)])
        for me in range(writers)
    ]
    try:
        deadline = time.monotonic() + 60
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if file.exists():  # a reader meanwhile: always one whole version
                bars, covered = _read(file)  # raises on a torn file
                assert sum(z - a + 1 for a, z in covered) == 1000 * len(bars)
            time.sleep(0.002)  # a poll interval, not a synchronisation
        assert [p.wait(timeout=10) for p in procs] == [0] * writers
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    bars, covered = _read(file)
    n = writers * rounds
    assert [b.time for b in bars] == [i * 1000 for i in range(n)]
    assert covered == [(0, n * 1000 - 1)]
    assert sorted(p.name for p in file.parent.iterdir()) == ["60.parquet", "60.parquet.lock"]
    assert pq.read_metadata(file).num_rows == n


async def test_concurrent_calls_in_one_process(sim: Simulator, tmp_path: Path) -> None:
    now = int(time.time())
    store = BarStore(tmp_path, settle=0)
    ranges = [(now - h * 3600 - 3600, now - h * 3600) for h in range(2, 6)]
    async with HttpClient(sim.url) as http:
        got = await asyncio.gather(*(store.history(http, "SBER", 60, a, b) for a, b in ranges))
        direct = [await http.history("SBER", 60, a, b) for a, b in ranges]
        before = sent(sim)
        again = await store.history(http, "SBER", 60, now - 6 * 3600, now - 2 * 3600)
        assert sent(sim) == before  # the four hours, joined, cover it
    assert [tuples(g) for g in got] == [tuples(d) for d in direct]
    assert len(again) == len({b.time for g in got for b in g})


async def test_bad_arguments_and_a_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with HttpClient("http://127.0.0.1:9") as http:  # nothing is sent
        with pytest.raises(InvalidArgumentError, match="count_back"):
            await http.history("SBER", 60, 0, 100, count_back=5, cache=tmp_path)
        with pytest.raises(InvalidArgumentError, match="tf"):
            await BarStore(tmp_path).history(http, "SBER", "5x", 0, 100)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependency, match=r"needs pyarrow: pip install 'alorws\[record\]'"):
        BarStore(tmp_path)
