"""The MOEX trading-day tables (sans-I/O): windows, clearings, weekends, holidays, status."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from alorws.errors import InvalidArgumentError
from alorws.protocol.enums import TradingStatus
from alorws.protocol.schedule import Phase, Schedule, Window, market_of, moex_schedules
from alorws.protocol.timeutil import MSK


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=MSK)


# The built-in holidays whatever is installed: these cases are about the windows (the
# maintained holiday source has tests/protocol/test_schedule_calendar.py).
BUILT_IN = moex_schedules(maintained=False)
FUT = BUILT_IN["futures"]
STOCK = BUILT_IN["stock"]
FX = BUILT_IN["currency"]


@pytest.mark.parametrize(
    ("schedule", "when", "name", "is_open", "next_open"),
    [
        (FUT, "2026-12-07 13:59:59", "day session", True, None),
        (FUT, "2026-12-07 14:00:00", "intermediate clearing", False, "2026-12-07 14:05"),
        (FUT, "2026-12-07 14:04:59", "intermediate clearing", False, "2026-12-07 14:05"),
        (FUT, "2026-12-07 14:05:00", "day session", True, None),
        (FUT, "2026-12-07 18:45:00", "evening clearing", False, "2026-12-07 19:05"),
        (FUT, "2026-12-07 19:05:00", "evening session", True, None),
        (FUT, "2026-12-07 23:55:00", "closed", False, "2026-12-08 08:50"),
        (FUT, "2026-12-05 12:00:00", "weekend session", True, None),
        (FUT, "2026-12-05 19:30:00", "closed", False, "2026-12-06 09:50"),
        (STOCK, "2026-12-07 09:55:00", "opening auction", True, None),
        (STOCK, "2026-12-07 18:45:00", "closing auction", True, None),
        (STOCK, "2026-12-07 18:55:00", "closed", False, "2026-12-07 19:00"),
        (STOCK, "2026-12-07 19:02:00", "evening opening auction", True, None),
        (FX, "2026-12-05 12:00:00", "weekend", False, "2026-12-07 06:50"),
        (FUT, "2026-12-31 12:00:00", "holiday", False, "2027-01-01 08:50"),
        (STOCK, "2026-02-23 12:00:00", "holiday", False, "2026-02-24 06:50"),
    ],
)
def test_windows(
    schedule: Schedule, when: str, name: str, is_open: bool, next_open: str | None
) -> None:
    """Each moment falls in the named window; a closed one says when orders are taken again."""
    state = schedule.state(at(when))
    assert (state.window.name, state.is_open) == (name, is_open)
    if next_open is not None:
        assert state.next_open == at(next_open)
    assert state.since <= state.at < state.until


def test_clearing_bounds_and_text() -> None:
    """The clearing's state names it with its times in MSK; any timezone may be passed in."""
    state = FUT.state(datetime(2026, 12, 7, 11, 2, tzinfo=UTC))  # 14:02 MSK
    assert state.window.phase is Phase.CLEARING
    assert (state.since, state.until) == (at("2026-12-07 14:00"), at("2026-12-07 14:05"))
    assert str(state.window) == "intermediate clearing 14:00-14:05 MSK"
    assert "opens 2026-12-07 14:05 MSK" in str(state)


def test_a_night_spans_midnight() -> None:
    """Closed from the evening session's end to the next morning's auction, in one window."""
    state = FUT.state(at("2026-12-08 03:00"))
    assert (state.since, state.until) == (at("2026-12-07 23:50"), at("2026-12-08 08:50"))


def test_holidays_are_overridable() -> None:
    """with_holidays adds days; a plain Schedule can drop the built-in ones."""
    day = date(2026, 12, 8)
    assert FUT.is_open(at("2026-12-08 12:00"))
    assert not FUT.with_holidays([day]).is_open(at("2026-12-08 12:00"))
    bare = Schedule(market="x", weekdays=FUT.weekdays)
    assert bare.is_open(at("2026-12-31 12:00"))


def test_trading_status_corrects_the_table() -> None:
    """The exchange's live status wins: a break closes an open window, trading opens a closed
    one; an unknown status changes nothing."""
    open_state = FUT.state(at("2026-12-07 12:00"))
    broken = open_state.corrected(TradingStatus.BREAK, "перерыв в торгах")
    assert not broken.is_open and broken.source == "tradingStatus"
    assert "перерыв в торгах (tradingStatus 2)" in str(broken.window)
    assert open_state.corrected(None) is open_state
    assert open_state.corrected(TradingStatus.NORMAL_TRADING) is open_state
    clearing = FUT.state(at("2026-12-07 14:03"))
    assert clearing.corrected(TradingStatus.NORMAL_TRADING).is_open
    assert clearing.corrected(999) is clearing


def test_overlapping_windows_are_refused() -> None:
    """A table with windows out of order is a bad argument, named."""
    w = Window("a", Phase.TRADING, time(10), time(12))
    with pytest.raises(InvalidArgumentError, match="x.weekdays"):
        Schedule(market="x", weekdays=(w, Window("b", Phase.TRADING, time(11), time(13))))


def test_market_names() -> None:
    """Boards, markets and kinds map to the tables; anything else is named in the error."""
    assert [market_of(n) for n in ("TQBR", "FOND", "RFUD", "FORTS", "CETS", "fx")] == [
        "stock",
        "stock",
        "futures",
        "futures",
        "currency",
        "currency",
    ]
    with pytest.raises(InvalidArgumentError, match="'NASDAQ' is not a market"):
        market_of("NASDAQ")


def test_naive_time_is_refused() -> None:
    """A naive datetime is ambiguous: refused."""
    with pytest.raises(InvalidArgumentError, match="aware"):
        FUT.state(datetime(2026, 12, 7, 12))
