"""The simulator's trading day (opt-in): orders refused and ``tradingStatus`` set by the table.

``Simulator(schedule=True)`` follows the built-in MOEX tables
(:data:`~alorws.protocol.schedule.SCHEDULES`); a mapping replaces them (a market it does not
list trades around the clock). ``schedule_clock`` (a callable returning an aware datetime, e.g.
the client's ``ManualClock``) says what time it is on the exchange, so a test crosses a
clearing break without waiting for it. Without ``schedule`` the simulator trades around the
clock, as before: every status stays normal trading (17) apart from the synthetic market's
short random breaks, and nothing here runs.

A create or update for an instrument whose market is closed is refused like any exchange
refusal (docs/protocol.md §5.3): ``httpCode`` 400 and a message naming the window and when
orders are accepted again. Cancels always go through. The market data keeps flowing.

Every instrument's ``tradingStatus`` (docs/protocol.md §4.5) follows its market's window, by
the window's phase (:data:`PHASE_STATUS`):

============================== ====================================
phase of the window            ``tradingStatus``
============================== ====================================
trading                        17 normal trading
opening auction                119 opening auction
closing auction                102 closing auction
clearing, break                2 break
closed (night, gaps, weekend,  18 no trading / closed
holiday)
============================== ====================================

The tables do not tell an opening or closing *period* (118, 103) from an auction, so those codes
never come from the schedule. The status is set when the simulator starts and at every window
boundary after that; each change goes out as one partial update per instrument (ticker, status,
text), as :meth:`~alorws.sim.app.Simulator.set_trading_status` sends it, and nothing goes out for
an instrument whose status is already right. A status set by hand lasts until the next boundary.
The synthetic market's random short breaks are off with ``schedule``, and its tape prints no
trades while the status is not normal trading (the book keeps moving).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final

from ..errors import InvalidArgumentError
from ..protocol.commands import Command
from ..protocol.enums import TradingStatus
from ..protocol.schedule import Phase, Schedule, SessionState, gated_instrument, market_of
from .market import InstrumentInfo, MarketEvent, SyntheticMarket


__all__ = ["PHASE_STATUS", "SessionGate"]

#: The ``tradingStatus`` an instrument has in a window of each phase (see the module docstring).
PHASE_STATUS: Final[Mapping[Phase, int]] = {
    Phase.TRADING: TradingStatus.NORMAL_TRADING,
    Phase.OPENING_AUCTION: TradingStatus.OPENING_AUCTION,
    Phase.CLOSING_AUCTION: TradingStatus.CLOSING_AUCTION,
    Phase.CLEARING: TradingStatus.BREAK,
    Phase.BREAK: TradingStatus.BREAK,
    Phase.CLOSED: TradingStatus.CLOSED,
}


class SessionGate:
    """Decides whether an order command may run now and what status each instrument has
    (pure: the clock is passed in; the caller publishes the events)."""

    def __init__(
        self,
        market: SyntheticMarket,
        schedules: Mapping[str, Schedule],
        clock: Callable[[], datetime],
    ) -> None:
        self.market = market
        self.schedules = dict(schedules)
        self.clock = clock
        self.refused = 0
        #: Tickers by schedule key, for the markets the schedules cover.
        self.members: dict[str, list[str]] = {}
        for info in market.instruments.values():
            key = self._key(info)
            if key is not None:
                self.members.setdefault(key, []).append(info.symbol)
        # The window (since, until) each market's statuses were last set for.
        self._applied: dict[str, tuple[datetime, datetime]] = {}

    def _key(self, info: InstrumentInfo) -> str | None:
        try:
            key = market_of(info.market, self.schedules)
        except InvalidArgumentError:  # a market the schedules do not name: around the clock
            return None
        return key if key in self.schedules else None

    def refusal(self, command: Command) -> str | None:
        """The 400 message for ``command`` now, or None when it may run."""
        ref = gated_instrument(command)
        if ref is None:
            return None
        info = self.market.find(ref.symbol, str(ref.exchange))
        if info is None:
            return None  # the engine refuses an unknown instrument in its own words
        key = self._key(info)
        if key is None:
            return None
        state = self.schedules[key].state(self.clock())
        if state.is_open:
            return None
        self.refused += 1
        when = (
            ""
            if state.next_open is None
            else f"; orders are accepted from {state.next_open:%Y-%m-%d %H:%M} MSK"
        )
        return f"Trading is closed for {info.symbol}: {state.market} {state.window}{when}"

    def states(self, at: datetime | None = None) -> dict[str, SessionState]:
        """Each covered market's state at ``at`` (default: the clock's now), by schedule key."""
        now = self.clock() if at is None else at
        return {key: self.schedules[key].state(now) for key in self.members}

    def apply(self) -> list[MarketEvent]:
        """Set the status of every instrument of each market whose window changed since the
        last call (every market on the first call) to that window's; returns one partial
        update per instrument whose status changed. A status set by hand in between is left
        alone until its market's next window."""
        out: list[MarketEvent] = []
        for key, state in self.states().items():
            window = (state.since, state.until)
            if self._applied.get(key) == window:
                continue
            self._applied[key] = window
            status = PHASE_STATUS[state.window.phase]
            for symbol in self.members[key]:
                if self.market.trading_status(symbol) != status:
                    out.extend(self.market.set_status(symbol, status))
        return out

    def next_boundary(self, at: datetime | None = None) -> datetime | None:
        """When the first covered market's window ends after ``at`` (default now); None when
        the schedules cover no instrument."""
        states = self.states(at)
        return min((s.until for s in states.values()), default=None)
