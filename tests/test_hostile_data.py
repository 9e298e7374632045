"""Data surfaces misused: a candle cache holding the wrong files or sitting where a file is,
dot segments as tickers, DataFrames asked for unknown time zones or fed the wrong rows,
instrument arithmetic on a bad server answer or absurd numbers, hand-made trading-day tables
with the wrong types. Each refusal is an ``alorws.errors`` exception saying what to fix."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alorws.client.barstore import BarStore
from alorws.client.http import HttpClient
from alorws.errors import ConfigurationError, InvalidArgumentError
from alorws.frames import Bars, Rows
from alorws.protocol.http_models import Security
from alorws.protocol.instruments import Instrument
from alorws.protocol.market import Bar, Quote
from alorws.protocol.schedule import SCHEDULES, Phase, Schedule, Window
from alorws.sim.app import Simulator


BAR = Bar(time=1_700_000_040, open=1.0, high=2.0, low=0.5, close=1.5, volume=7)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(port=0, seed=5, rate=0, history_days=1) as s:
        yield s


# -- BarStore ----------------------------------------------------------------------------------


def cache_file(tmp_path: Path) -> Path:
    file = BarStore(tmp_path).file("SBER", 60)
    file.parent.mkdir(parents=True)
    return file


def columns(**changes: list[Any]) -> dict[str, list[Any]]:
    """The six columns of one good candle, with ``changes``."""
    good: dict[str, list[Any]] = {"time": [1], "open": [1.0], "high": [1.0], "low": [1.0]}
    return good | {"close": [1.0], "volume": [1]} | changes


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ({"x": [1]}, "'time': missing"),
        (columns(time=["a"]), "'time': string"),
        (columns(high=[None]), "'high'"),
        (columns(volume=[None]), "'volume'"),
        (columns(time=[1.5]), "'time': double"),
    ],
)
def test_a_parquet_file_of_another_layout(
    tmp_path: Path, table: dict[str, list[Any]], column: str
) -> None:
    """A Parquet file that is not the cache's own (other columns, other types, nulls) is
    refused naming the column, never read into candles of wrong types or a KeyError."""
    file = cache_file(tmp_path)
    pq.write_table(pa.table(table), file)
    with pytest.raises(ConfigurationError, match=column) as err:
        BarStore(tmp_path).read("SBER", 60)
    assert str(file) in str(err.value) and "delete it" in str(err.value)


def test_a_truncated_file(tmp_path: Path) -> None:
    file = cache_file(tmp_path)
    pq.write_table(pa.table({"time": [1], "open": [1.0]}), file)
    file.write_bytes(file.read_bytes()[:-20])
    with pytest.raises(ConfigurationError, match="delete it"):
        BarStore(tmp_path).read("SBER", 60)


def test_a_directory_where_the_file_goes(tmp_path: Path) -> None:
    cache_file(tmp_path).mkdir()
    with pytest.raises(ConfigurationError, match="cannot be read"):
        BarStore(tmp_path).read("SBER", 60)


async def test_a_cache_path_that_is_a_file(sim: Simulator, tmp_path: Path) -> None:
    """history(cache=) at a path that is a file: a ConfigurationError naming the cache, from
    the read (nothing stored yet) and from the write after the download."""
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("")
    now = int(time.time())
    async with HttpClient(sim.url) as http:
        with pytest.raises(ConfigurationError, match="cache directory") as err:
            await http.history("SBER", 60, now - 4 * 3600, now - 3 * 3600, cache=not_a_dir)
    assert str(not_a_dir) in str(err.value)


@pytest.mark.parametrize("symbol", ["..", "."])
async def test_dot_segments_are_not_tickers(sim: Simulator, tmp_path: Path, symbol: str) -> None:
    """'..' as a ticker would put the cache file a folder up (and move an HTTP path up a
    level): refused before any request or file."""
    now = int(time.time())
    with pytest.raises(InvalidArgumentError, match="symbol"):
        BarStore(tmp_path).file(symbol, 60)
    with pytest.raises(InvalidArgumentError, match="board"):
        BarStore(tmp_path).file("SBER", 60, board=symbol)
    async with HttpClient(sim.url) as http:
        with pytest.raises(InvalidArgumentError, match="symbol"):
            await http.history(symbol, 60, now - 7200, now - 3600, cache=tmp_path)
        with pytest.raises(InvalidArgumentError, match="symbol"):
            await http.security(symbol)


async def test_from_after_to(sim: Simulator, tmp_path: Path) -> None:
    async with HttpClient(sim.url) as http:
        with pytest.raises(InvalidArgumentError, match="after"):
            await http.history("SBER", 60, 2_000_000_000, 1_000_000_000, cache=tmp_path)


# -- DataFrames --------------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../../etc/passwd", 3, None])
@pytest.mark.parametrize("rows", [Bars([BAR]), Bars()])
def test_unknown_time_zones(rows: Bars, tz: Any) -> None:
    """Each library failed its own way (ZoneInfoNotFoundError, IndexError, ComputeError, a
    TypeError, or pandas taking 3 as an offset): one InvalidArgumentError for both."""
    for convert in (rows.to_pandas, rows.to_polars):
        with pytest.raises(InvalidArgumentError, match="tz"):
            convert(tz=tz)


@pytest.mark.parametrize("tz", ["UTC", "utc", "Europe/Moscow", "+03:00"])
def test_time_zones_both_libraries_take(tz: str) -> None:
    assert len(Bars([BAR]).to_pandas(tz=tz)) == len(Bars([BAR]).to_polars(tz=tz)) == 1


def test_rows_of_another_model() -> None:
    rows = Rows([BAR], model=Quote)
    for convert in (rows.to_pandas, rows.to_polars):
        with pytest.raises(InvalidArgumentError, match="Bar among rows of Quote"):
            convert()
    with pytest.raises(InvalidArgumentError, match="model"):
        Rows([1], model=int)  # type: ignore[arg-type]


def test_empty_and_none_fields_keep_their_columns() -> None:
    quote = msgspec.convert({"symbol": "SBER", "exchange": "MOEX"}, Quote)
    for rows in (Rows([], model=Quote), Rows([quote], model=Quote)):
        pd_frame, pl_frame = rows.to_pandas(), rows.to_polars()
        assert list(pd_frame.columns) == pl_frame.columns == list(Quote.__struct_fields__)


# -- instruments -------------------------------------------------------------------------------


def security(**fields: Any) -> Security:
    base: dict[str, Any] = {
        "symbol": "SBER",
        "exchange": "MOEX",
        "min_step": 0.01,
        "lot_size": 10,
        "market": "FOND",
        "cfi_code": "ESXXXX",
    }
    return Security(**(base | fields))


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"lot_size": float("nan")}, "lot_size"),
        ({"lot_size": float("inf")}, "lot_size"),
        ({"min_step": 0}, "min_step"),
        ({"min_step": float("nan")}, "min_step"),
        ({"face_value": -1000}, "face_value"),
    ],
)
def test_a_bad_server_answer(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidArgumentError, match=named):
        Instrument.from_security(security(**fields))


@pytest.mark.parametrize("round_to", [10**9, 2**62])
def test_an_absurd_round_to_falls_back_to_the_step(round_to: int) -> None:
    """roundTo is display precision: a value no price has is ignored, the step decides."""
    inst = Instrument.from_security(security(round_to=round_to))
    assert inst.decimals == 2 and inst.round_price(312.414) == Decimal("312.41")


@pytest.mark.parametrize("price", [1e30, "1e30", Decimal("1e40")])
def test_a_price_beyond_decimal_precision(price: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="too many digits"):
        Instrument.from_security(security()).round_price(price)


@pytest.mark.parametrize("price", [float("nan"), float("inf"), "abc", None, True])
def test_non_prices(price: Any) -> None:
    inst = Instrument.from_security(security())
    for method in (inst.round_price, inst.on_grid, inst.unit_value, inst.to_money):
        with pytest.raises(InvalidArgumentError, match="price"):
            method(price)


def test_quantities() -> None:
    inst = Instrument.from_security(security())
    with pytest.raises(InvalidArgumentError, match="money"):
        inst.lots_for(-1000, 300)
    for lots in (-1, 1.0, "2", True):
        with pytest.raises(InvalidArgumentError, match="lots"):
            inst.to_money(300, lots)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="lots"):
        inst.from_money(1000, 0)
    assert inst.lots_for(0, 300) == 0


# -- the trading day ---------------------------------------------------------------------------


@pytest.mark.parametrize("at", [date(2026, 12, 7), "2026-12-07T14:02:00+03:00", 1796600000])
def test_state_of_something_not_a_datetime(at: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="aware datetime"):
        SCHEDULES["futures"].state(at)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: Window("w", Phase.TRADING, "10:00", dtime(11)), "start must be a datetime.time"),
        (lambda: Window("w", Phase.TRADING, dtime(10), 11), "end must be"),
        (lambda: Window("w", "lunch", dtime(10), dtime(11)), "phase 'lunch'"),
        (
            lambda: Window("w", Phase.TRADING, dtime(10, tzinfo=UTC), dtime(11)),
            "without tzinfo",
        ),
        (lambda: Schedule(market="x", weekdays=(("w", "trading", dtime(10), dtime(11)),)),
         "Window"),
    ],
)  # fmt: skip
def test_hand_made_windows_of_the_wrong_types(make: Any, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        make()


@pytest.mark.parametrize("day", [datetime(2026, 12, 7), "2026-12-07", 20261207])
def test_holidays_that_are_not_dates(day: Any) -> None:
    """A datetime never equals a date: such a holiday was silently a trading day."""
    with pytest.raises(InvalidArgumentError, match="holidays"):
        SCHEDULES["futures"].with_holidays([day])
    with pytest.raises(InvalidArgumentError, match="holidays"):
        Schedule(market="x", weekdays=(), holidays=frozenset([day]))


def test_overlapping_and_inverted_windows_are_refused() -> None:
    w = Window
    for windows in (
        (w("a", Phase.TRADING, dtime(10), dtime(12)), w("b", Phase.TRADING, dtime(11), dtime(13))),
        (w("a", Phase.TRADING, dtime(12), dtime(10)),),
        (w("a", Phase.TRADING, dtime(10), dtime(10)),),
        (w("a", Phase.TRADING, dtime(10), dtime(0)), w("b", Phase.TRADING, dtime(11), dtime(12))),
    ):
        with pytest.raises(InvalidArgumentError, match="starts before"):
            Schedule(market="x", weekdays=windows)


@pytest.mark.parametrize("path", [3, "", " ", None])
def test_a_cache_that_is_not_a_path(path: Any) -> None:
    """An int was a TypeError from pathlib; '' silently cached in the working directory."""
    with pytest.raises(ConfigurationError, match="directory path"):
        BarStore(path)


@pytest.mark.parametrize("server", ["https://..", "https://.", "http://127.0.0.1:99999"])
def test_a_server_that_cannot_name_a_folder(tmp_path: Path, server: str) -> None:
    """'https://..' put the server's folder above the cache directory; a bad port was
    urllib's bare ValueError."""
    with pytest.raises(ConfigurationError, match="server"):
        BarStore(tmp_path).file("SBER", 60, server=server)
