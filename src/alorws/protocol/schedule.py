"""The MOEX trading day per market, in Moscow time (sans-I/O: pass the time in).

A :class:`Schedule` is a market's table: the windows of a weekday, those of a weekend day
(weekend sessions), and the holidays with no trading at all. Between listed windows the market
is closed; a clearing is listed as a window of its own (phase ``clearing``) so that it can be
named. Times are Moscow wall-clock times (:data:`~alorws.protocol.timeutil.MSK`, UTC+3 all
year); any aware datetime may be passed in.

The built-in tables (:data:`SCHEDULES`, by market ``"stock"``, ``"futures"``, ``"currency"``)
follow MOEX's published hours; MOEX changes them now and then (weekend sessions came in 2025),
and holidays are announced each year, so each is a plain value to replace or extend::

    forts = SCHEDULES["futures"].with_holidays([date(2026, 12, 31)])

Their holidays come from :func:`moex_holidays`: the built-in :data:`DEFAULT_HOLIDAYS` for the
years it lists and, when the optional ``exchange_calendars`` package is installed (the
``alorws[calendar]`` extra), its Moscow Exchange calendar ``XMOS`` for the other years.
:attr:`Schedule.holiday_source` says which. The package is imported on the first use of a table,
never by ``import alorws``.

:meth:`Schedule.state` says what is open at a moment and when the next window opens;
:meth:`SessionState.corrected` overrides the table with an instrument's live ``tradingStatus``
(docs/protocol.md §4.5) when one is known: the exchange's word wins over the table.
"""

from __future__ import annotations

import enum
import functools
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any, Final

import msgspec

from ..errors import InvalidArgumentError
from .commands import (
    Command,
    DeleteLimit,
    DeleteMarket,
    DeleteStop,
    DeleteStopLimit,
    InstrumentRef,
)
from .enums import TradingStatus
from .timeutil import MSK


__all__ = [
    "DEFAULT_HOLIDAYS",
    "SCHEDULES",
    "HolidayTable",
    "Phase",
    "Schedule",
    "SessionState",
    "Window",
    "gated_instrument",
    "market_of",
    "moex_holidays",
    "moex_schedules",
]

log = logging.getLogger("alorws.schedule")


class Phase(enum.StrEnum):
    """What a window is. Orders are accepted in auctions and trading, not otherwise."""

    OPENING_AUCTION = "opening auction"
    TRADING = "trading"
    CLOSING_AUCTION = "closing auction"
    CLEARING = "clearing"
    BREAK = "break"
    CLOSED = "closed"


_ACCEPTING: Final = frozenset({Phase.OPENING_AUCTION, Phase.TRADING, Phase.CLOSING_AUCTION})
_PHASES: Final = frozenset(Phase)


class Window(msgspec.Struct, frozen=True):
    """One window of a trading day, ``[start, end)`` in Moscow time; ``end`` ``00:00`` is
    midnight at the end of the day."""

    name: str
    phase: Phase
    start: time
    end: time

    def __post_init__(self) -> None:
        # A hand-made table fails here, naming the window, not deep in a comparison later.
        if self.phase not in _PHASES:
            raise InvalidArgumentError(
                f"window {self.name!r}",
                f"phase {self.phase!r} is not one of {', '.join(p.value for p in Phase)}",
            )
        for label, value in (("start", self.start), ("end", self.end)):
            if not isinstance(value, time) or value.tzinfo is not None:
                raise InvalidArgumentError(
                    f"window {self.name!r}",
                    f"{label} must be a datetime.time without tzinfo (Moscow time), got {value!r}",
                )

    @property
    def accepts_orders(self) -> bool:
        """Whether the exchange takes orders in this window."""
        return self.phase in _ACCEPTING

    def __str__(self) -> str:
        end = "24:00" if self.end == time(0) else f"{self.end:%H:%M}"
        return f"{self.name} {self.start:%H:%M}-{end} MSK"


class SessionState(msgspec.Struct, frozen=True, kw_only=True):
    """What a market has open at ``at``.

    Attributes:
        market: the schedule's market.
        at: the moment asked about (Moscow time).
        window: the window ``at`` falls in (a gap between listed windows is a ``closed`` one).
        since, until: when that window began and ends (Moscow time).
        next_open: the start of the next window that accepts orders after this one (None when
            the table has none within two weeks).
        source: ``"schedule"``, or ``"tradingStatus"`` once :meth:`corrected` overrode it.
    """

    market: str
    at: datetime
    window: Window
    since: datetime
    until: datetime
    next_open: datetime | None
    source: str = "schedule"

    @property
    def is_open(self) -> bool:
        """Whether orders are accepted now."""
        return self.window.accepts_orders

    def corrected(self, trading_status: int | None, info: str | None = None) -> SessionState:
        """This state with an instrument's live ``tradingStatus`` (docs/protocol.md §4.5) taking
        precedence: a break or closed status closes an open window, normal trading or an
        auction opens a closed one. ``None`` (unknown) changes nothing."""
        if trading_status is None:
            return self
        open_phase = _STATUS_PHASE.get(trading_status)
        label = info or TradingStatus.describe(trading_status)
        if open_phase is not None and not self.is_open:
            window = Window(f"{label} (tradingStatus {trading_status})", open_phase, *_span(self))
        elif open_phase is None and trading_status in _CLOSING_STATUS and self.is_open:
            phase = Phase.BREAK if trading_status == TradingStatus.BREAK else Phase.CLOSED
            window = Window(f"{label} (tradingStatus {trading_status})", phase, *_span(self))
        else:
            return self
        return msgspec.structs.replace(self, window=window, source="tradingStatus")

    def __str__(self) -> str:
        text = f"{self.market}: {self.window} ({'open' if self.is_open else 'closed'})"
        if not self.is_open and self.next_open is not None:
            text += f", opens {self.next_open:%Y-%m-%d %H:%M} MSK"
        return text


_STATUS_PHASE: Final[dict[int, Phase]] = {
    TradingStatus.NORMAL_TRADING: Phase.TRADING,
    TradingStatus.OPENING_AUCTION: Phase.OPENING_AUCTION,
    TradingStatus.OPENING_PERIOD: Phase.OPENING_AUCTION,
    TradingStatus.CLOSING_AUCTION: Phase.CLOSING_AUCTION,
    TradingStatus.DISCRETE_AUCTION: Phase.TRADING,
}
_CLOSING_STATUS: Final[frozenset[int]] = frozenset({TradingStatus.BREAK, TradingStatus.CLOSED})


def _span(state: SessionState) -> tuple[time, time]:
    return state.since.timetz().replace(tzinfo=None), state.until.timetz().replace(tzinfo=None)


_SCAN_DAYS: Final = 15


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """One market's trading day (see the module docstring).

    Attributes:
        market: a name for messages (``"futures"``).
        weekdays: the windows of Monday to Friday, in order, not overlapping.
        weekends: the windows of Saturday and Sunday (weekend sessions); empty: closed.
        holidays: dates (Moscow) without any trading.
        holiday_source: where ``holidays`` came from: ``"built-in"``
            (:data:`DEFAULT_HOLIDAYS`), ``"exchange_calendars 4.13.2 XMOS 2010-2024, 2027;
            built-in 2025-2026"`` (see :func:`moex_holidays`), ``"given"`` for a schedule built
            with its own; ``" + given"`` is appended once :meth:`with_holidays` or
            :meth:`without_holidays` changed them.
    """

    market: str
    weekdays: tuple[Window, ...]
    weekends: tuple[Window, ...] = ()
    holidays: frozenset[date] = frozenset()
    holiday_source: str = "given"

    def __post_init__(self) -> None:
        for label, windows in (("weekdays", self.weekdays), ("weekends", self.weekends)):
            last = time(0)
            for w in windows:
                if not isinstance(w, Window):
                    raise InvalidArgumentError(
                        f"{self.market}.{label}", f"must hold Window values, got {w!r}"
                    )
                end = w.end if w.end != time(0) else time.max
                if not (last <= w.start < end):
                    raise InvalidArgumentError(
                        f"{self.market}.{label}",
                        f"window {w} starts before the previous one ends or ends before it starts",
                    )
                last = end
        for day in self.holidays:
            if not isinstance(day, date) or isinstance(day, datetime):  # never equal a date
                raise InvalidArgumentError(
                    f"{self.market}.holidays", f"must be datetime.date values, got {day!r}"
                )

    def with_holidays(self, days: Iterable[date]) -> Schedule:
        """The same schedule with ``days`` added to its holidays (whatever their source)."""
        return msgspec.structs.replace(
            self, holidays=self.holidays | frozenset(days), holiday_source=self._given()
        )

    def without_holidays(self, days: Iterable[date]) -> Schedule:
        """The same schedule trading on ``days`` after all: for a day its source lists as a
        holiday that the exchange announced as a trading day."""
        return msgspec.structs.replace(
            self, holidays=self.holidays - frozenset(days), holiday_source=self._given()
        )

    def _given(self) -> str:
        source = self.holiday_source
        return source if source.endswith("given") else f"{source} + given"

    def windows_on(self, day: date) -> tuple[Window, ...]:
        """The listed windows of ``day`` (none on a holiday)."""
        if day in self.holidays:
            return ()
        return self.weekends if day.weekday() >= 5 else self.weekdays

    def _day(self, day: date) -> list[tuple[datetime, datetime, Window]]:
        """Every window of ``day`` with its datetimes, gaps filled with ``closed`` windows."""
        out: list[tuple[datetime, datetime, Window]] = []
        midnight = datetime.combine(day, time(0), MSK)
        cursor = midnight
        for w in self.windows_on(day):
            start = datetime.combine(day, w.start, MSK)
            end = (
                midnight + timedelta(days=1)
                if w.end == time(0)
                else datetime.combine(day, w.end, MSK)
            )
            if start > cursor:
                gap = Window("closed", Phase.CLOSED, cursor.time(), w.start)
                out.append((cursor, start, gap))
            out.append((start, end, w))
            cursor = end
        end_of_day = midnight + timedelta(days=1)
        if cursor < end_of_day:
            out.append((cursor, end_of_day, Window("closed", Phase.CLOSED, cursor.time(), time(0))))
        return out

    def state(self, at: datetime) -> SessionState:
        """What is open at ``at`` (an aware datetime) and when the next window opens."""
        if not isinstance(at, datetime) or at.tzinfo is None:
            raise InvalidArgumentError("at", f"must be an aware datetime (e.g. in MSK), got {at!r}")
        now = at.astimezone(MSK)
        day = now.date()
        windows = self._day(day)
        for i, (start, end, w) in enumerate(windows):
            if start <= now < end:
                since, until = start, end
                # A closed stretch may run over midnight: report its whole length.
                if not w.accepts_orders:
                    since = self._closed_since(day, i, windows)
                    until = self._closed_until(day, i, windows)
                next_open = self._next_open(now if not w.accepts_orders else end)
                if w.phase is Phase.CLOSED:
                    w = Window(self._closed_name(day), Phase.CLOSED, since.time(), until.time())
                return SessionState(
                    market=self.market,
                    at=now,
                    window=w,
                    since=since,
                    until=until,
                    next_open=next_open,
                )
        raise AssertionError("the windows of a day cover it")  # pragma: no cover

    def _closed_name(self, day: date) -> str:
        if day in self.holidays:
            return "holiday"
        if not self.windows_on(day):
            return "weekend"
        return "closed"

    def is_open(self, at: datetime) -> bool:
        """Whether orders are accepted at ``at``."""
        return self.state(at).is_open

    def _next_open(self, after: datetime) -> datetime | None:
        day = after.date()
        for n in range(_SCAN_DAYS):
            for start, _end, w in self._day(day + timedelta(days=n)):
                if w.accepts_orders and start >= after:
                    return start
        return None

    def _closed_since(
        self, day: date, i: int, windows: list[tuple[datetime, datetime, Window]]
    ) -> datetime:
        if windows[i][2].phase is not Phase.CLOSED:
            return windows[i][0]
        for n in range(_SCAN_DAYS):
            items = windows if n == 0 else self._day(day - timedelta(days=n))
            stop = i if n == 0 else len(items)
            for _start, end, w in reversed(items[:stop]):
                if w.phase is not Phase.CLOSED:
                    return end
        return windows[i][0]

    def _closed_until(
        self, day: date, i: int, windows: list[tuple[datetime, datetime, Window]]
    ) -> datetime:
        if windows[i][2].phase is not Phase.CLOSED:
            return windows[i][1]
        for n in range(_SCAN_DAYS):
            items = windows if n == 0 else self._day(day + timedelta(days=n))
            begin = i + 1 if n == 0 else 0
            for start, _end, w in items[begin:]:
                if w.phase is not Phase.CLOSED:
                    return start
        return windows[i][1]


def _w(name: str, phase: Phase, start: str, end: str) -> Window:
    return Window(name, phase, time.fromisoformat(start), time.fromisoformat(end))


_A, _T, _C, _X = Phase.OPENING_AUCTION, Phase.TRADING, Phase.CLOSING_AUCTION, Phase.CLEARING

#: MOEX's days without any trading of 2025 and 2026, as MOEX announced them: New Year,
#: Christmas and the state holidays. MOEX trades on the official days off they move to (2025:
#: January 3, 6 and 8, May 2 and 8, June 13, November 3; 2026: January 5, 6, 8 and 9, March 9,
#: May 11). In 2026 it also runs a weekend-format session (09:50-19:00, stock and futures) on
#: February 23, May 1, June 12 and November 4, listed here as holidays (closed), and cancels some
#: weekend sessions; extend or replace this set with :meth:`Schedule.with_holidays`,
#: :meth:`Schedule.without_holidays` or a :class:`Schedule` of your own.
DEFAULT_HOLIDAYS: Final = frozenset(
    date.fromisoformat(d)
    for d in (
        "2025-01-01", "2025-01-02", "2025-01-07", "2025-05-01", "2025-05-09", "2025-06-12",
        "2025-11-04", "2025-12-31",
        "2026-01-01", "2026-01-02", "2026-01-07", "2026-02-23", "2026-03-08", "2026-05-01",
        "2026-05-09", "2026-06-12", "2026-11-04", "2026-12-31",
    )
)  # fmt: skip

#: The weekend sessions, the same on the stock and the futures market.
_WEEKEND_SESSIONS: Final = (
    _w("weekend opening auction", _A, "09:50", "10:00"),
    _w("weekend session", _T, "10:00", "19:00"),
)

#: The windows by market, without holidays (:func:`moex_schedules` adds them).
_TABLES: Final[Mapping[str, Schedule]] = {
    "stock": Schedule(
        market="stock",
        weekdays=(
            _w("morning opening auction", _A, "06:50", "07:00"),
            _w("morning session", _T, "07:00", "09:50"),
            _w("opening auction", _A, "09:50", "10:00"),
            _w("main session", _T, "10:00", "18:40"),
            _w("closing auction", _C, "18:40", "18:50"),
            _w("evening opening auction", _A, "19:00", "19:05"),
            _w("evening session", _T, "19:05", "23:50"),
        ),
        weekends=_WEEKEND_SESSIONS,
    ),
    "futures": Schedule(
        market="futures",
        weekdays=(
            _w("morning opening auction", _A, "08:50", "09:00"),
            _w("day session", _T, "09:00", "14:00"),
            _w("intermediate clearing", _X, "14:00", "14:05"),
            _w("day session", _T, "14:05", "18:45"),
            _w("evening clearing", _X, "18:45", "19:05"),
            _w("evening session", _T, "19:05", "23:50"),
        ),
        weekends=_WEEKEND_SESSIONS,
    ),
    "currency": Schedule(
        market="currency",
        weekdays=(
            _w("opening auction", _A, "06:50", "07:00"),
            _w("main session", _T, "07:00", "19:00"),
            _w("evening session", _T, "19:00", "23:50"),
        ),
    ),
}

#: The oldest year taken from XMOS: older holidays matter to no recording of this API.
_XMOS_FIRST_YEAR: Final = 2010


class HolidayTable(msgspec.Struct, frozen=True):
    """MOEX non-trading days and where they came from (:attr:`Schedule.holiday_source`)."""

    days: frozenset[date]
    source: str


def _load_xmos() -> tuple[frozenset[date], range, str] | None:
    """The weekdays without a session in exchange_calendars' XMOS, from 2010 to the end of
    next year, the years and the package version; None without the package."""
    # The package's deprecation warnings on newer pandas are its own, not the caller's (and
    # under -W error they would turn a working calendar into the fallback).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import exchange_calendars
        except ImportError:
            return None
        try:
            return _xmos_closed(exchange_calendars)
        except Exception:
            # An old release on a newer pandas fails inside the package: the tables still work.
            log.warning(
                "exchange_calendars is installed but its XMOS calendar did not load; using the "
                "built-in MOEX holidays",
                exc_info=True,
            )
            return None


def _xmos_closed(exchange_calendars: Any) -> tuple[frozenset[date], range, str]:
    from importlib.metadata import version

    years = range(_XMOS_FIRST_YEAR, date.today().year + 2)
    first, last = date(years[0], 1, 1), date(years[-1], 12, 31)
    calendar = exchange_calendars.get_calendar("XMOS", start=first, end=last)
    sessions = {d for d in calendar.sessions.date if isinstance(d, date)}
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    closed = frozenset(d for d in days if d.weekday() < 5 and d not in sessions)
    return closed, years, version("exchange_calendars")


#: XMOS is built once per process (about a second).
_xmos = functools.cache(_load_xmos)


def _spans(years: Iterable[int]) -> str:
    """``2010-2024, 2027`` for a set of years."""
    out: list[str] = []
    for year in sorted(years):
        if out and out[-1].split("-")[-1] == str(year - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{year}"
        else:
            out.append(str(year))
    return ", ".join(out)


def moex_holidays(*, maintained: bool = True) -> HolidayTable:
    """MOEX non-trading days: :data:`DEFAULT_HOLIDAYS` for the years it lists (MOEX's own
    announcements, which XMOS's rules do not follow in every year) and, with ``maintained`` and
    the ``exchange_calendars`` package installed, the weekdays its ``XMOS`` calendar has no
    session on for every other year from 2010 to the end of next year. Without the package,
    :data:`DEFAULT_HOLIDAYS` alone (``source`` ``"built-in"``)."""
    builtin_years = {d.year for d in DEFAULT_HOLIDAYS}
    xmos = _xmos() if maintained else None
    if xmos is None:
        return HolidayTable(DEFAULT_HOLIDAYS, "built-in")
    closed, years, version = xmos
    own = frozenset(d for d in closed if d.year not in builtin_years)
    source = (
        f"exchange_calendars {version} XMOS {_spans(set(years) - builtin_years)}; "
        f"built-in {_spans(builtin_years)}"
    )
    return HolidayTable(DEFAULT_HOLIDAYS | own, source)


def moex_schedules(*, maintained: bool = True) -> dict[str, Schedule]:
    """The three MOEX tables with the holidays of :func:`moex_holidays` (the same days on every
    market: MOEX closes its stock, derivatives and currency markets together)."""
    table = moex_holidays(maintained=maintained)
    return {
        key: msgspec.structs.replace(s, holidays=table.days, holiday_source=table.source)
        for key, s in _TABLES.items()
    }


class _MoexSchedules(Mapping[str, Schedule]):
    """:func:`moex_schedules`, built on the first lookup of a table (not at import)."""

    def __init__(self) -> None:
        self._tables: dict[str, Schedule] | None = None

    def _load(self) -> dict[str, Schedule]:
        if self._tables is None:
            self._tables = moex_schedules()
        return self._tables

    def __getitem__(self, key: str) -> Schedule:
        return self._load()[key]

    def __contains__(self, key: object) -> bool:
        return key in _TABLES

    def __iter__(self) -> Iterator[str]:
        return iter(_TABLES)

    def __len__(self) -> int:
        return len(_TABLES)

    def __repr__(self) -> str:
        return f"SCHEDULES({list(_TABLES)})"


#: The built-in tables by market: ``stock`` (TQBR and the other stock and bond boards),
#: ``futures`` (FORTS: RFUD, ROPD) and ``currency`` (CETS), with :func:`moex_holidays`. A
#: read-only mapping that loads the holidays on its first lookup.
SCHEDULES: Final[Mapping[str, Schedule]] = _MoexSchedules()


_ALIASES: Final = {
    "stock": "stock",
    "fond": "stock",
    "tqbr": "stock",
    "tqob": "stock",
    "tqcb": "stock",
    "tqtf": "stock",
    "spbx": "stock",
    "futures": "futures",
    "forts": "futures",
    "rfud": "futures",
    "ropd": "futures",
    "derivatives": "futures",
    "currency": "currency",
    "curr": "currency",
    "cets": "currency",
    "fx": "currency",
}


def market_of(name: str, schedules: Sequence[str] | Mapping[str, Schedule] = SCHEDULES) -> str:
    """The schedule key for a market, board or portfolio kind: ``"TQBR"`` and ``"FOND"`` are
    ``"stock"``, ``"RFUD"`` and ``"FORTS"`` ``"futures"``, ``"CETS"`` and ``"CURR"``
    ``"currency"``; a key of ``schedules`` is itself. Anything else raises
    :class:`~alorws.errors.InvalidArgumentError` listing what is known."""
    if isinstance(name, str):
        if name in schedules:
            return name
        key = _ALIASES.get(name.strip().casefold())
        if key is not None:
            return key
    known = sorted(set(schedules) | {k.upper() for k in _ALIASES})
    raise InvalidArgumentError("market", f"{name!r} is not a market or board; use one of {known}")


_CANCELS: Final = (DeleteMarket, DeleteLimit, DeleteStop, DeleteStopLimit)


def gated_instrument(command: Command) -> InstrumentRef | None:
    """The instrument whose market must be open for ``command`` to run, or None when the
    trading day does not gate it: cancels always go through, as on the exchange."""
    ref = getattr(command, "instrument", None)
    if isinstance(command, _CANCELS) or not isinstance(ref, InstrumentRef):
        return None
    return ref
