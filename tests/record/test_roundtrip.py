"""Record the simulator, read the files with DuckDB, replay them into the same typed streams."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import duckdb
import polars as pl
import pytest

from alorws import cli
from alorws.errors import ConfigurationError
from alorws.protocol.requests import OrdersRequest, QuotesRequest
from alorws.protocol.timeutil import MSK_NAME
from alorws.record import Replay

from .conftest import Recording, collect, streams


def test_files_are_partitioned_and_readable_by_duckdb(recording: Recording) -> None:
    """DuckDB reads the hive-partitioned files as they are; every recorded frame is there."""
    glob = str(recording.root / "**" / "*.parquet")
    rows = duckdb.sql(
        f"SELECT stream, kind, count(*) FROM read_parquet('{glob}', hive_partitioning = 1) "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    counts = {(stream, kind): n for stream, kind, n in rows}
    assert sum(counts.values()) == recording.stats["rows"] == recording.stats["frames"]
    for opcode in (
        "QuotesSubscribe",
        "OrderBookGetAndSubscribe",
        "AllTradesGetAndSubscribe",
        "BarsGetAndSubscribe",
        "OrdersGetAndSubscribeV2",
    ):
        assert counts[opcode, "data"] > 0, opcode
        assert counts[opcode, "status"] >= 1, opcode  # the subscribe confirmations
    assert recording.stats["dropped"] == 0
    # roll_rows=200 in the fixture: the busy tape rolled to several parts
    parts = list(recording.root.glob("date=*/stream=AllTradesGetAndSubscribe/part-*.parquet"))
    assert len(parts) >= 2
    assert not list(recording.root.rglob(".part-*"))  # no unfinished part or journal left
    schema = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning=1)")
    names = [row[0] for row in schema.fetchall()]
    assert names[:7] == ["recv_ns", "connection", "guid", "kind", "opcode", "params", "frame"]


async def test_replay_equals_live(recording: Recording) -> None:
    """Replayed typed models equal the live-received ones, stream by stream, in order."""
    async with Replay(recording.root) as replay:
        opened = streams(replay, recording.portfolio)
        got: dict[tuple[str, str], list[Any]] = {key: [] for key in opened}
        async with asyncio.TaskGroup() as tg:
            for key, stream in opened.items():
                await stream.subscribe()
                tg.create_task(collect(stream, got[key]))
    for key, live in recording.live.items():
        replayed = got[key]
        assert replayed, key
        # The recorder stopped a moment before the live streams: live may have a longer tail.
        assert replayed == live[: len(replayed)], key
        assert len(live) - len(replayed) < max(50, len(live) // 2), key
    orders = got["orders", recording.portfolio]
    assert any(o.symbol == "SBER" for o in orders)


async def test_subscriptions_and_unknown_stream(recording: Recording) -> None:
    """``subscriptions()`` lists what was recorded; an unrecorded stream is a clear error."""
    async with Replay(recording.root) as replay:
        subs = replay.subscriptions()
        assert {s.opcode for s in subs} >= {"QuotesSubscribe", "OrdersGetAndSubscribeV2"}
        assert all(s.frames > 0 for s in subs if s.opcode != "OrdersGetAndSubscribeV2")
        with pytest.raises(ConfigurationError, match="no recorded subscription.*LKOH") as err:
            replay.quotes("LKOH")
        assert "QuotesRequest(code='SBER'" in str(err.value)
        with pytest.raises(ConfigurationError, match="no recorded subscription"):
            replay.order_book("SBER", depth=7)


async def test_find_selects_one_recorded_subscription(recording: Recording) -> None:
    """``find`` takes an opcode or a stream kind and the fields to agree on; none or several
    matching is an error whose first line says so and whose next lines list what was
    recorded."""
    async with Replay(recording.root) as replay:
        sber = replay.find("quotes", code="SBER")
        assert isinstance(sber, QuotesRequest) and sber.code == "SBER"
        assert replay.find("QuotesSubscribe", code="SBER") == sber
        assert replay.find("bars", code="GAZP").code == "GAZP"
        recorded = [repr(s.request) for s in replay.subscriptions()]
        with pytest.raises(ConfigurationError) as err:
            replay.find("quotes", code="LKOH")
        lines = str(err.value).splitlines()
        root = recording.root
        assert lines[0] == f"no recorded subscription matches quotes(code='LKOH') in {root}"
        assert lines[1] == "recorded:" and [line.strip() for line in lines[2:]] == recorded
        with pytest.raises(ConfigurationError) as err:
            replay.find("order_book")
        assert str(err.value).splitlines()[0] == (
            f"2 recorded subscriptions match order_book() in {root}"
        )


def test_cli_replay_of_an_unrecorded_symbol_says_what_was_recorded(
    recording: Recording, capsys: pytest.CaptureFixture[str]
) -> None:
    """``alorws replay ROOT LKOH``: one line naming what was not found, and a hint with what
    the recording holds."""
    assert cli.main(["replay", str(recording.root), "LKOH", "--streams", "quotes"]) == 1
    out, err = capsys.readouterr()
    message, hint = err.splitlines()
    assert message == (
        f"alorws: error: no recorded subscription matches quotes(code='LKOH') in {recording.root}"
    )
    assert hint.startswith("hint: recorded: ") and "QuotesSubscribe SBER" in hint
    assert "OrderBookGetAndSubscribe GAZP" in hint and out == ""


async def test_stream_of_a_request_replays_the_recorded_subscription(
    recording: Recording,
) -> None:
    """``replay.stream(request)`` serves the recorded subscription equal to ``request``, as the
    typed method selects it; an orders request that skips history is served by the one
    recorded with it, filtered as live; an unrecorded request lists what was recorded."""

    async def read(pick: Callable[[Replay], Any]) -> list[Any]:
        async with Replay(recording.root) as replay:
            return [item async for item in pick(replay)]

    async with Replay(recording.root) as replay:
        recorded = [s.request for s in replay.subscriptions()]
        assert all(replay.stream(r).request == r for r in recorded)
        sber = next(r for r in recorded if isinstance(r, QuotesRequest) and r.code == "SBER")
        with pytest.raises(ConfigurationError, match="no recorded subscription is.*LKOH") as err:
            replay.stream(QuotesRequest(code="LKOH"))
        assert "QuotesRequest(code='SBER'" in str(err.value)
    by_request = await read(lambda r: r.stream(sber))
    assert by_request and by_request == await read(lambda r: r.quotes("SBER"))
    portfolio = recording.portfolio
    skipping = OrdersRequest(portfolio=portfolio, skip_history=True)
    new_only = await read(lambda r: r.stream(skipping))
    assert new_only == await read(lambda r: r.orders(portfolio, skip_history=True))
    everything = await read(lambda r: r.orders(portfolio))
    assert new_only and not any(o.existing for o in new_only)
    assert len(new_only) <= len(everything)


async def test_speed_paces_with_injected_clock(recording: Recording) -> None:
    """At speed x the replay spans the recorded duration / x (a fake clock: no flakes)."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async with Replay(recording.root, speed=4.0, clock=lambda: now[0], sleep=sleep) as replay:
        opened = streams(replay, recording.portfolio)
        async with asyncio.TaskGroup() as tg:
            for stream in opened.values():
                await stream.subscribe()
                tg.create_task(collect(stream, []))
        span = replay.duration
    assert span > 2.0
    assert now[0] == pytest.approx(span / 4.0, abs=0.01)


async def test_speed_is_a_lower_bound_in_real_time(recording: Recording) -> None:
    """With the real clock, speed x takes at least recorded duration / x (minus slack)."""
    loop = asyncio.get_running_loop()
    async with Replay(recording.root, speed=20.0) as replay:
        quotes = replay.quotes("SBER")
        started = loop.time()
        n = 0
        async for _ in quotes:
            n += 1
        elapsed = loop.time() - started
        assert n > 0
        assert elapsed >= replay.duration / 20.0 - 0.05


async def test_the_pump_waits_for_a_full_buffer_without_polling(
    recording: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer that does not read stalls the pump, which awaits the buffer draining: no
    timed sleep (polling) while it waits, and every frame still arrives once the consumer
    reads."""
    real_sleep = asyncio.sleep
    timed: list[float] = []

    async def sleep(delay: float, result: Any = None) -> Any:
        if delay > 0:
            timed.append(delay)
        return await real_sleep(delay, result)

    async with Replay(recording.root) as replay:  # what a consumer that keeps up gets
        expected = [trade async for trade in replay.all_trades("SBER")]
    monkeypatch.setattr(asyncio, "sleep", sleep)
    async with Replay(recording.root, max_buffer=4) as replay:
        trades = replay.all_trades("SBER")
        await trades.subscribe()
        for _ in range(50):  # the consumer is busy elsewhere for a while
            await real_sleep(0)
        assert trades.stats()["depth"] >= 4  # full: the pump waits for it
        got = [trade async for trade in trades]
    assert timed == []
    assert got == expected and len(got) > 4


# -- DataFrames of a recording ------------------------------------------------------------------


def test_recorded_quotes_to_pandas_in_moscow_time(recording: Recording) -> None:
    """One row per recorded data message, the same models the live stream got, in order;
    ``recv_time`` and the model's times tz-aware in Moscow time (or UTC when asked)."""
    replay = Replay(recording.root)  # not opened: read here
    times, rows = replay.messages("quotes", code="SBER")
    live = recording.live["quotes", "SBER"]
    assert rows and list(rows) == live[: len(rows)] and len(times) == len(rows)
    df = replay.to_pandas("quotes", code="SBER")
    assert len(df) == len(rows) and list(df.columns[:3]) == ["recv_time", "symbol", "exchange"]
    assert str(df["recv_time"].dtype) == f"datetime64[ns, {MSK_NAME}]"
    assert str(df["last_price_timestamp"].dtype) == f"datetime64[ns, {MSK_NAME}]"
    assert str(df["last_price"].dtype) == "float64" and str(df["volume"].dtype) == "Int64"
    assert df["recv_time"].is_monotonic_increasing
    assert df["recv_time"].iloc[0].value == times[0]  # nanoseconds kept
    assert df["last_price"].tolist() == [q.last_price for q in rows]
    utc = replay.to_pandas("quotes", tz="UTC", code="SBER")
    assert str(utc["recv_time"].dtype) == "datetime64[ns, UTC]"
    assert (utc["recv_time"] == df["recv_time"]).all()


async def test_recorded_bars_to_polars_and_by_request(recording: Recording) -> None:
    async with Replay(recording.root) as replay:
        request = replay.find("bars", code="GAZP")
        df = replay.to_polars(request)
        by_kind = replay.to_polars("bars", code="GAZP")
        with pytest.raises(ConfigurationError, match="no recorded subscription matches"):
            replay.to_pandas("quotes", code="LKOH")
    assert df.equals(by_kind) and df.height > 0
    assert df.columns == ["recv_time", "time", "open", "high", "low", "close", "volume"]
    assert df.schema["time"] == pl.Datetime("ns", MSK_NAME)
    assert df.schema["close"] == pl.Float64 and df.schema["volume"] == pl.Int64
