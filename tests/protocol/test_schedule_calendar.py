"""MOEX holidays from exchange_calendars' XMOS calendar (the ``calendar`` extra), the built-in
table without it, and the user's word over both."""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import logging
import socket
import subprocess
import sys
import types
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import pytest

from alorws.protocol import schedule
from alorws.protocol.schedule import DEFAULT_HOLIDAYS, moex_holidays, moex_schedules
from alorws.protocol.timeutil import MSK


def noon(day: str) -> datetime:
    return datetime.fromisoformat(f"{day} 12:00").replace(tzinfo=MSK)


def _unload_calendar(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the imported package for this test (monkeypatch puts the modules back)."""
    for name in [n for n in sys.modules if n.split(".")[0] == "exchange_calendars"]:
        monkeypatch.delitem(sys.modules, name)
    # A fresh per-process cache, so the loader runs again.
    monkeypatch.setattr(schedule, "_xmos", functools.cache(schedule._load_xmos))


class _Block(importlib.abc.MetaPathFinder):
    """Makes ``import exchange_calendars`` fail as on an install without the extra."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] == "exchange_calendars":
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def test_xmos_holidays_close_the_markets() -> None:
    """With the package, a New Year and a Victory Day that only XMOS knows are holidays on every
    market, the weekday next to them is open, and the source says where the days came from."""
    pytest.importorskip("exchange_calendars")
    from importlib.metadata import version

    tables = moex_schedules()
    for market in ("stock", "futures", "currency"):
        table = tables[market]
        assert table.holiday_source.startswith(
            f"exchange_calendars {version('exchange_calendars')} XMOS 2010-2024"
        ), table.holiday_source
        assert table.holiday_source.endswith("; built-in 2025-2026")
        for holiday in ("2027-01-01", "2024-05-09", "2024-01-02"):
            state = table.state(noon(holiday))
            assert (state.window.name, state.is_open) == ("holiday", False), (market, holiday)
        for weekday in ("2027-01-12", "2024-05-08", "2024-01-03"):
            assert table.is_open(noon(weekday)), (market, weekday)
    # The lazy SCHEDULES is the same table.
    assert schedule.SCHEDULES["stock"].holiday_source == tables["stock"].holiday_source


def test_built_in_years_win_over_xmos() -> None:
    """For the years the built-in table lists, it wins: XMOS's rules close official days off
    that MOEX traded on (2025-02-24, 2025-03-10, 2026-03-09, 2026-05-11) and know nothing of
    a state holiday on a weekend cancelling the weekend session (2026-05-09)."""
    pytest.importorskip("exchange_calendars")
    xmos = schedule._xmos()
    assert xmos is not None
    stock = moex_schedules()["stock"]
    assert {d for d in stock.holidays if d.year in (2025, 2026)} == DEFAULT_HOLIDAYS
    for traded in ("2025-02-24", "2025-03-10", "2026-03-09", "2026-05-11"):
        assert date.fromisoformat(traded) in xmos[0]
        assert stock.is_open(noon(traded)), traded
    assert stock.state(noon("2026-05-09")).window.name == "holiday"
    assert stock.state(noon("2026-05-16")).window.name == "weekend session"


def test_the_user_wins_over_every_source() -> None:
    """with_holidays and without_holidays apply after the source and say so."""
    stock = schedule.SCHEDULES["stock"]
    holiday = noon("2026-12-31")
    assert not stock.is_open(holiday)
    traded = stock.without_holidays([date(2026, 12, 31)])
    assert traded.is_open(holiday)
    assert traded.holiday_source == f"{stock.holiday_source} + given"
    closed = traded.with_holidays([date(2026, 12, 8)])
    assert not closed.is_open(noon("2026-12-08"))
    assert closed.holiday_source == f"{stock.holiday_source} + given"


def test_without_the_package_the_built_in_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """An install without the extra: the built-in table, named so, and nothing fails."""
    _unload_calendar(monkeypatch)
    monkeypatch.setattr(sys, "meta_path", [_Block(), *sys.meta_path])
    with pytest.raises(ImportError):
        import exchange_calendars  # noqa: F401
    assert moex_holidays() == moex_holidays(maintained=False)
    tables = moex_schedules()
    for table in tables.values():
        assert (table.holidays, table.holiday_source) == (DEFAULT_HOLIDAYS, "built-in")
    stock = tables["stock"]
    assert not stock.is_open(noon("2026-12-31"))
    assert stock.is_open(noon("2026-12-08"))
    assert "exchange_calendars" not in sys.modules
    # A fresh lazy mapping builds from the same.
    assert schedule._MoexSchedules()["futures"].holiday_source == "built-in"


def test_a_broken_package_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An installed release that fails (an old one on a newer pandas) is logged once and the
    built-in table serves."""
    _unload_calendar(monkeypatch)
    broken = types.ModuleType("exchange_calendars")

    def get_calendar(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("invalid unit abbreviation: T")

    broken.get_calendar = get_calendar  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "exchange_calendars", broken)
    with caplog.at_level(logging.WARNING, logger="alorws.schedule"):
        table = moex_holidays()
    assert (table.days, table.source) == (DEFAULT_HOLIDAYS, "built-in")
    assert "did not load" in caplog.text


def test_loading_xmos_opens_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the package and building XMOS read only installed data: with every socket
    connect refused they still give the calendar."""
    pytest.importorskip("exchange_calendars")
    _unload_calendar(monkeypatch)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a connection was attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    loaded = schedule._load_xmos()
    assert loaded is not None
    closed, years, _version = loaded
    assert date(2027, 1, 1) in closed and 2027 in years


def test_import_does_not_load_the_calendar() -> None:
    """``import alorws`` (client, simulator, the schedule module) leaves the package unloaded;
    the first table lookup loads it."""
    code = (
        "import sys\n"
        "import alorws, alorws.client, alorws.sim\n"
        "from alorws.protocol.schedule import SCHEDULES, market_of\n"
        "assert sorted(SCHEDULES) == ['currency', 'futures', 'stock']\n"
        "assert market_of('TQBR') == 'stock' and 'stock' in SCHEDULES\n"
        "assert 'exchange_calendars' not in sys.modules, 'imported early'\n"
        "assert 'pandas' not in sys.modules, 'pandas imported early'\n"
        "print(SCHEDULES['stock'].holiday_source)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=False
    )
    assert done.returncode == 0, done.stderr
    try:
        import exchange_calendars  # noqa: F401
    except ImportError:
        assert done.stdout.strip() == "built-in"
    else:
        assert done.stdout.startswith("exchange_calendars ")


def test_year_spans() -> None:
    """The source names its years in runs."""
    assert schedule._spans([2027, 2010, 2011, 2012, 2029, 2030]) == "2010-2012, 2027, 2029-2030"
    assert schedule._spans([]) == ""
