"""The simulator's trading day (opt-in): order commands refused while their market is closed.

``Simulator(schedule=True)`` follows the built-in MOEX tables
(:data:`~alorws.protocol.schedule.SCHEDULES`); a mapping replaces them. ``schedule_clock`` (a
callable returning an aware datetime, e.g. :class:`~alorws.client.session.ManualClock`) says
what time it is on the exchange, so a test crosses a clearing break without waiting for it.
Without ``schedule`` the simulator trades around the clock, as before.

A create or update for an instrument whose market is closed is refused like any exchange
refusal (docs/protocol.md §5.3): ``httpCode`` 400 and a message naming the window and when
orders are accepted again. Cancels always go through. The market data keeps flowing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from ..protocol.commands import Command
from ..protocol.schedule import Schedule, gated_instrument, market_of
from .market import SyntheticMarket


__all__ = ["SessionGate"]


class SessionGate:
    """Decides whether an order command may run now (pure; the clock is passed in)."""

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

    def refusal(self, command: Command) -> str | None:
        """The 400 message for ``command`` now, or None when it may run."""
        ref = gated_instrument(command)
        if ref is None:
            return None
        info = self.market.find(ref.symbol, str(ref.exchange))
        if info is None:
            return None  # the engine refuses an unknown instrument in its own words
        schedule = self.schedules[market_of(info.market, self.schedules)]
        state = schedule.state(self.clock())
        if state.is_open:
            return None
        self.refused += 1
        when = (
            ""
            if state.next_open is None
            else f"; orders are accepted from {state.next_open:%Y-%m-%d %H:%M} MSK"
        )
        return f"Trading is closed for {info.symbol}: {state.market} {state.window}{when}"
