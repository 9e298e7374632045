"""Bars/Rows: still lists, and DataFrames with the documented dtypes in Moscow time."""

from __future__ import annotations

import copy
import datetime as dt
import pickle
import sys
from decimal import Decimal

import msgspec
import pandas as pd
import polars as pl
import pytest

from alorws.errors import ConfigurationError, MissingDependency
from alorws.frames import Bars, Rows, time_fields
from alorws.protocol.account import Order
from alorws.protocol.market import Bar, OrderBook, Quote, Trade
from alorws.protocol.timeutil import MSK, MSK_NAME


T0 = 1_750_662_000  # 2025-06-23 07:00:00 UTC, 10:00 MSK
BARS = Bars(
    [
        Bar(time=T0, open=312.1, high=312.6, low=311.95, close=312.41, volume=48210),
        Bar(time=T0 + 60, open=312.41, high=312.5, low=312.3, close=312.33, volume=21007),
    ]
)


def test_bars_are_still_a_list_of_bars() -> None:
    plain = list(BARS)
    assert isinstance(BARS, list) and BARS == plain and plain == BARS
    assert BARS[0].time == T0 and len(BARS) == 2 and BARS[::-1] == plain[::-1]
    assert msgspec.json.encode(BARS) == msgspec.json.encode(plain)
    for again in (pickle.loads(pickle.dumps(BARS)), copy.copy(BARS), copy.deepcopy(BARS)):
        assert type(again) is Bars and again == BARS and again.model is Bar


def test_bars_to_pandas_dtypes_and_moscow_time() -> None:
    df = BARS.to_pandas()
    assert list(df.columns) == ["time", "open", "high", "low", "close", "volume"]
    assert str(df["time"].dtype) == f"datetime64[ns, {MSK_NAME}]"
    assert [str(df[c].dtype) for c in ("open", "high", "low", "close")] == ["float64"] * 4
    assert str(df["volume"].dtype) == "int64"
    first = df["time"].iloc[0]
    assert first.to_pydatetime() == dt.datetime(2025, 6, 23, 10, 0, tzinfo=MSK)
    assert (first.hour, str(first.tz)) == (10, MSK_NAME)
    assert df["close"].tolist() == [312.41, 312.33] and df["volume"].tolist() == [48210, 21007]


def test_tz_utc_gives_the_same_instants_in_utc() -> None:
    utc = BARS.to_pandas(tz="UTC")
    assert str(utc["time"].dtype) == "datetime64[ns, UTC]"
    assert utc["time"].iloc[0].hour == 7
    assert (utc["time"] == BARS.to_pandas()["time"]).all()  # same instants


def test_empty_bars_keep_their_columns_and_dtypes() -> None:
    df = Bars().to_pandas()
    assert len(df) == 0 and list(df.columns) == ["time", "open", "high", "low", "close", "volume"]
    assert str(df["time"].dtype) == f"datetime64[ns, {MSK_NAME}]"
    assert str(df["volume"].dtype) == "int64"


def test_optional_fields_use_nullable_dtypes_and_times_in_both_units() -> None:
    quotes = Rows(
        [
            Quote(symbol="SBER", last_price=312.5, last_price_timestamp=T0, volume=7),
            Quote(symbol="GAZP", ob_ms_timestamp=T0 * 1000 + 123),
        ],
        model=Quote,
    )
    df = quotes.to_pandas()
    assert str(df["last_price"].dtype) == "float64" and pd.isna(df["last_price"].iloc[1])
    assert str(df["volume"].dtype) == "Int64" and df["volume"].isna().tolist() == [False, True]
    assert df["symbol"].dtype == object and df["symbol"].tolist() == ["SBER", "GAZP"]
    for column in ("last_price_timestamp", "ob_ms_timestamp"):
        assert str(df[column].dtype) == f"datetime64[ns, {MSK_NAME}]"
    assert df["last_price_timestamp"].iloc[0].hour == 10 and pd.isna(
        df["last_price_timestamp"].iloc[1]
    )
    assert df["ob_ms_timestamp"].iloc[1].microsecond == 123_000  # milliseconds kept


def test_iso_times_enums_and_nested_values() -> None:
    trade = Trade(
        id=1, price=1.5, qty=2, time="2025-06-23T07:26:01.4410000Z", timestamp=1, side="buy"
    )
    df = Rows([trade], model=Trade).to_pandas()
    assert df["time"].iloc[0].to_pydatetime() == dt.datetime(
        2025, 6, 23, 10, 26, 1, 441000, tzinfo=MSK
    )
    assert df["side"].tolist() == ["buy"] and type(df["side"].iloc[0]) is str
    order = Order(id="1", trans_time="2025-06-23T07:26:01Z", end_time=None)
    odf = Rows([order], model=Order).to_pandas()
    assert odf["trans_time"].iloc[0].hour == 10 and pd.isna(odf["end_time"].iloc[0])
    book = Rows([OrderBook(bids=[], asks=[], ms_timestamp=T0 * 1000)], model=OrderBook)
    bdf = book.to_pandas()
    assert bdf["bids"].dtype == object and bdf["bids"].iloc[0] == []
    assert time_fields(OrderBook) == {"ms_timestamp": "ms"}


class Priced(msgspec.Struct, frozen=True):
    """A model with an exact price, as a model may carry."""

    time: int
    price: Decimal
    fee: Decimal | None = None


def test_decimal_fields_stay_exact() -> None:
    rows = Rows([Priced(time=1, price=Decimal("0.1"), fee=None)], model=Priced)
    df = rows.to_pandas()
    assert df["price"].dtype == object and df["price"].iloc[0] == Decimal("0.1")
    assert type(df["price"].iloc[0]) is Decimal and df["fee"].iloc[0] is None
    pdf = rows.to_polars()
    assert isinstance(pdf.schema["price"], pl.Decimal)
    assert pdf["price"][0] == Decimal("0.1")


def test_bars_to_polars() -> None:
    df = BARS.to_polars()
    assert df.columns == ["time", "open", "high", "low", "close", "volume"]
    assert df.schema["time"] == pl.Datetime("ns", MSK_NAME)
    assert df.schema["close"] == pl.Float64 and df.schema["volume"] == pl.Int64
    assert df["time"][0] == dt.datetime(2025, 6, 23, 10, 0, tzinfo=MSK)
    assert BARS.to_polars(tz="UTC").schema["time"] == pl.Datetime("ns", "UTC")


def test_without_pandas_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now fails
    monkeypatch.setitem(sys.modules, "polars", None)
    with pytest.raises(MissingDependency, match=r"pip install 'alorws\[pandas\]'") as info:
        BARS.to_pandas()
    assert isinstance(info.value, ImportError) and isinstance(info.value, ConfigurationError)
    assert (info.value.package, info.value.extra) == ("pandas", "pandas")
    with pytest.raises(MissingDependency, match=r"pip install 'alorws\[polars\]'"):
        BARS.to_polars()
