"""The trading day on the client: what is open now, and orders that respect it (opt-in).

``client.session("FORTS")`` (a market, board or ``"stock"``/``"futures"``/``"currency"``)
returns a :class:`~alorws.protocol.schedule.SessionState`: the window open now (or the closed
one), when it ends and when the next window opens, from ``client.schedules`` (the built-in
MOEX tables, :data:`~alorws.protocol.schedule.SCHEDULES`; replace an entry to override it).

Orders are unchanged by default: ``client.trading`` sends whatever it is given and the exchange
answers. Opt in with :meth:`TraderMethods.session_trading`, which has the same ``place_*``,
``modify_*`` and ``cancel`` methods::

    guarded = client.session_trading(mode="refuse")  # MarketClosed naming the window
    held = client.session_trading(mode="hold")       # waits for the window, then sends

* ``refuse``: a create or modify while the instrument's market is closed raises
  :class:`~alorws.errors.MarketClosed` naming the window (``"intermediate clearing 14:00-14:05
  MSK"``) and when it opens; nothing is sent.
* ``hold``: the call waits until the next window that accepts orders, then sends the command
  built at the time of the call (same guid: exactly once, as ever). Cancel the call to drop it.

Cancels always go out at once. With :meth:`SessionTrading.watch` the instrument's live
``tradingStatus`` (docs/protocol.md §4.5) corrects the table (an unscheduled break closes,
trading resumed opens) and wakes held orders. The clock is injectable (:class:`ManualClock`) so
tests cross a clearing break without waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from ..errors import ConfigurationError, InvalidArgumentError, MarketClosed
from ..protocol.commands import Command
from ..protocol.instruments import Instrument
from ..protocol.schedule import Schedule, SessionState, gated_instrument, market_of
from ..protocol.timeutil import MSK
from .order_methods import OrderAck, OrderMethods


if TYPE_CHECKING:
    from .instruments import InstrumentCatalogue
    from .orders import OrderClient


__all__ = ["Clock", "HoldMode", "ManualClock", "SessionTrading", "SystemClock", "schedule_for"]

#: A held order re-checks at least this often (seconds of real time), so a clock that jumps
#: (a laptop waking up) does not leave it asleep past its window.
_RECHECK = 30.0


class Clock(Protocol):
    """Where the session rules read the time: ``now()`` (aware) and a way to wait for a moment."""

    def now(self) -> datetime:
        """The current time, aware."""
        ...

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> None:
        """Return at ``when`` or earlier (when ``wake`` is set); callers check again."""
        ...


class SystemClock:
    """The real clock, in Moscow time."""

    def now(self) -> datetime:
        """The current time in MSK."""
        return datetime.now(MSK)

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> None:
        """Sleep until ``when`` (re-checking every 30 s at most), or until ``wake`` is set."""
        delay = min(_RECHECK, max(0.0, (when - self.now()).total_seconds()))
        if wake is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()


class ManualClock:
    """A clock that moves only when told (:meth:`advance`, :meth:`set`): for tests and replays.

    Also a plain callable returning :meth:`now`, which is what the simulator's
    ``schedule_clock`` takes."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise InvalidArgumentError("start", "must be an aware datetime (e.g. in MSK)")
        self._now = start.astimezone(MSK)
        self._moved = asyncio.Condition()
        self.sleepers = 0  # callers inside sleep_until now

    def __call__(self) -> datetime:
        return self._now

    def now(self) -> datetime:
        """The clock's time."""
        return self._now

    async def set(self, when: datetime) -> None:
        """Move to ``when`` (never backwards) and wake every sleeper that is due."""
        if when.tzinfo is None:
            raise InvalidArgumentError("when", "must be an aware datetime")
        self._now = max(self._now, when.astimezone(MSK))
        async with self._moved:
            self._moved.notify_all()

    async def advance(self, delta: timedelta) -> None:
        """Move forward by ``delta``."""
        await self.set(self._now + delta)

    async def sleep_until(self, when: datetime, wake: asyncio.Event | None = None) -> None:
        """Return once the clock reaches ``when`` (or ``wake`` is set)."""
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._reach(when))]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def _reach(self, when: datetime) -> None:
        async with self._moved:
            self.sleepers += 1
            self._moved.notify_all()
            try:
                await self._moved.wait_for(lambda: self._now >= when)
            finally:
                self.sleepers -= 1

    async def wait_sleeping(self, count: int = 1) -> None:
        """Return once at least ``count`` callers wait in :meth:`sleep_until` (tests use it to
        know a held order is parked before moving the clock)."""
        async with self._moved:
            await self._moved.wait_for(lambda: self.sleepers >= count)


class HoldMode(enum.StrEnum):
    """What :class:`SessionTrading` does with an order for a closed market."""

    REFUSE = "refuse"
    HOLD = "hold"


def schedule_for(inst: Instrument, schedules: Mapping[str, Schedule]) -> Schedule:
    """The schedule of ``inst``'s market (by its market, else its board)."""
    name = inst.market or inst.board or ""
    return market_schedule(name, schedules)


def market_schedule(name: str, schedules: Mapping[str, Schedule]) -> Schedule:
    """The schedule of market or board ``name`` in ``schedules`` (``client.schedules``, which
    the user may replace entries of: one that is not a :class:`Schedule` is named here)."""
    market = market_of(name, schedules)
    schedule = schedules[market]
    if not isinstance(schedule, Schedule):
        raise ConfigurationError(
            f"client.schedules[{market!r}] is a {type(schedule).__name__}, not a Schedule; "
            "assign a Schedule (e.g. SCHEDULES[market].with_holidays([...]))"
        )
    return schedule


class SessionTrading(OrderMethods):
    """Order methods that respect the trading day (see the module docstring); build it with
    ``client.session_trading(mode=...)``."""

    def __init__(
        self,
        trading: OrderClient,
        instruments: InstrumentCatalogue,
        schedules: Mapping[str, Schedule],
        *,
        mode: HoldMode | str = HoldMode.REFUSE,
        clock: Clock | None = None,
        streams: Callable[[str], Any] | None = None,
    ) -> None:
        try:
            self.mode = HoldMode(mode)
        except ValueError:
            raise InvalidArgumentError(
                "mode", f"{mode!r} is not one of {', '.join(m.value for m in HoldMode)}"
            ) from None
        self._trading = trading
        self._new_guid = trading._new_guid
        self._instruments = instruments
        self._schedules = schedules
        self.clock: Clock = clock or SystemClock()
        self._streams = streams
        self._status: dict[str, tuple[int | None, str | None]] = {}
        self._changed = asyncio.Event()
        self._watchers: dict[str, asyncio.Task[None]] = {}

    def state(self, inst: Instrument) -> SessionState:
        """What ``inst``'s market has open now: the table, corrected by a watched status."""
        state = schedule_for(inst, self._schedules).state(self.clock.now())
        status, info = self._status.get(inst.ticker, (None, None))
        return state.corrected(status, info)

    def set_status(self, ticker: str, trading_status: int | None, info: str | None = None) -> None:
        """Record an instrument's live ``tradingStatus`` (``EXCHANGE:TICKER``); wakes held
        orders. :meth:`watch` calls it from the instrument stream."""
        self._status[ticker] = (trading_status, info)
        self._changed.set()
        self._changed = asyncio.Event()

    async def watch(self, instrument: str) -> None:
        """Follow ``instrument``'s ``tradingStatus`` from the client's instrument stream until
        :meth:`aclose`."""
        if self._streams is None:
            raise InvalidArgumentError("watch", "this SessionTrading has no stream source")
        inst = await self._instruments.get(instrument)
        if inst.ticker in self._watchers:
            return
        stream = self._streams(inst.symbol)
        ready = asyncio.get_running_loop().create_future()
        self._watchers[inst.ticker] = asyncio.create_task(self._follow(inst, stream, ready))
        await ready

    async def _follow(self, inst: Instrument, stream: Any, ready: asyncio.Future[None]) -> None:
        try:
            async with stream as patches:
                ready.set_result(None)
                async for patch in patches:
                    status = patch.trading_status
                    if status is not msgspec.UNSET:
                        info = patch.trading_status_info
                        self.set_status(
                            inst.ticker, status, None if info is msgspec.UNSET else info
                        )
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def aclose(self) -> None:
        """Stop every :meth:`watch`."""
        tasks, self._watchers = list(self._watchers.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def send(self, command: Command) -> OrderAck:
        """Send ``command`` when its market accepts orders (see the module docstring)."""
        ref = gated_instrument(command)
        if ref is None:
            return await self._trading.send(command)
        inst = await self._instruments.get(f"{ref.exchange}:{ref.symbol}")
        while True:
            state = self.state(inst)
            if state.is_open:
                return await self._trading.send(command)
            if self.mode is HoldMode.REFUSE or state.next_open is None:
                raise MarketClosed(state.market, str(state.window), state.next_open)
            await self.clock.sleep_until(state.next_open, self._changed)
