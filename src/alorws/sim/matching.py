"""The simulator's matching: working orders against the synthetic book, fills, stop triggers.

Pure: no asyncio, no wall clock; time comes in as Unix milliseconds. :class:`Matcher` runs the
order commands of docs/protocol.md §6 and reacts to the market; the money side of every order
and fill is the :class:`~alorws.sim.accounts.Ledger`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from msgspec import UNSET

from ..protocol.account import Iceberg, Order, StopOrder
from ..protocol.commands import (
    Command,
    CreateLimit,
    CreateMarket,
    CreateStop,
    CreateStopLimit,
    DeleteLimit,
    DeleteMarket,
    DeleteStop,
    DeleteStopLimit,
    UpdateLimit,
    UpdateMarket,
    UpdateStop,
    UpdateStopLimit,
)
from ..protocol.enums import Condition, OrderStatus, OrderType, Side, TimeInForce
from .accounts import AccountEvent, Ledger, Portfolio, end_of_day, money
from .market import (
    MAX_TIME_S,
    BookUpdated,
    InstrumentInfo,
    MarketEvent,
    SyntheticMarket,
    TradePrinted,
    iso_time,
)


__all__ = ["CommandResult", "Matcher"]

_FIRST_ORDER_ID: Final = 53_420_017_780
_MAX_LOTS: Final = 1_000_000
_DAY_MS: Final = 86_400_000
_STOP_LIFETIME_MS: Final = 30 * _DAY_MS  # stopEndUnixTime 0 / unset (docs/protocol.md §6.3)
_GTC_LIFETIME_MS: Final = 365 * _DAY_MS
_PROTECTING_SECONDS: Final = 15  # a stop order's protecting time when the command has none


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The reply to an order command (docs/protocol.md §5) and the account events it caused.

    ``order_number`` is the (new) order id on success, None on a 400.
    """

    http_code: int
    message: str
    order_number: str | None
    events: list[AccountEvent]

    @property
    def ok(self) -> bool:
        """True for ``httpCode`` 200."""
        return self.http_code == 200


class _Rejected(Exception):
    """A command is refused with 400 and this message."""


class _Working:
    """A working (resting) market or limit order."""

    __slots__ = ("filled", "info", "limit", "lots", "model", "p", "since_trade", "tif")

    def __init__(
        self,
        p: Portfolio,
        info: InstrumentInfo,
        model: Order,
        limit: float | None,
        tif: TimeInForce,
    ) -> None:
        self.p = p
        self.info = info
        self.model = model
        self.lots = model.qty_batch or 0
        self.filled = 0
        self.limit = limit
        self.tif = tif
        self.since_trade = 0  # only prints with a larger id can fill it (trade-through)

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def side(self) -> Side:
        return self.model.side or Side.BUY

    @property
    def remaining(self) -> int:
        return self.lots - self.filled


class _Stop:
    """A working stop or stop-limit order."""

    __slots__ = ("activate", "info", "model", "p", "since_trade")

    def __init__(self, p: Portfolio, info: InstrumentInfo, model: StopOrder, since: int) -> None:
        self.p = p
        self.info = info
        self.model = model
        self.since_trade = since
        self.activate = True

    def fires(self, price: float) -> bool:
        trigger = self.model.stop_price or 0.0
        match self.model.condition:
            case Condition.MORE:
                return price > trigger
            case Condition.LESS:
                return price < trigger
            case Condition.MORE_OR_EQUAL:
                return price >= trigger
            case _:
                return price <= trigger


# -- the matcher -------------------------------------------------------------------------------


class Matcher:
    """Order commands and the working orders they leave, matched against the synthetic book.

    How orders execute (docs/protocol.md §6):

    * **market** orders and **marketable limit** orders take liquidity from the synthetic book
      with :meth:`SyntheticMarket.take` at once; what a market order cannot get from the 50
      levels is cancelled. A limit order's rest **rests** (it is not shown in the synthetic
      book) and fills later in :meth:`on_market`, either when the opposite best price reaches
      its limit (it then takes the book) or when the tape prints *through* it (at its limit);
    * ``fillorkill`` fills completely or not at all, ``immediateorcancel`` cancels what does not
      fill at once, ``bookorcancel`` (post-only) is cancelled if it would take liquidity
      (docs/protocol.md §6.4);
    * **stop** and **stop-limit** orders fire on the first print (after they were placed) whose
      price meets ``condition`` against the trigger; they then place a market or limit order;
    * ``update:*`` cancels the order and places a new one with a **new id**
      (docs/protocol.md §6.3).

    Instruments of another market are refused (stock portfolios trade ``FOND``, FX ``CURR``,
    derivatives ``FORTS``), and so is what the buying power does not cover.

    Args:
        market: the book orders trade against.
        ledger: the accounts every order and fill is booked in.
        day_order_lifetime_ms: how long a day order lives; ``None``: until the end of its UTC
            day.
    """

    def __init__(
        self,
        market: SyntheticMarket,
        ledger: Ledger,
        *,
        day_order_lifetime_ms: int | None = None,
    ) -> None:
        self.market = market
        self.ledger = ledger
        self.day_order_lifetime_ms = day_order_lifetime_ms
        self._resting: dict[str, dict[str, _Working]] = {}  # symbol -> id -> order
        self._stops: dict[str, dict[str, _Stop]] = {}  # symbol -> id -> stop order
        self._next_order = _FIRST_ORDER_ID

    # -- commands ------------------------------------------------------------------------------

    def execute(self, portfolio: str, command: Command, now_ms: int) -> CommandResult:
        """Run one ``/cws`` (or ``commandapi``) order command for ``portfolio``
        (docs/protocol.md §6).

        Returns the reply (200 with ``orderNumber`` or 400 with a reason) and the account events
        to publish. Duplicate-guid handling (docs/protocol.md §12.11) is the caller's business.
        """
        events: list[AccountEvent] = []
        try:
            p = self.ledger.portfolio(portfolio)
            if p is None:
                raise _Rejected(f"Portfolio '{portfolio}' is not found")
            match command:
                case CreateMarket() | CreateLimit():
                    oid = self._create_order(p, command, now_ms, events)
                    result = CommandResult(200, f"An order '{oid}' has been created.", oid, events)
                case CreateStop() | CreateStopLimit():
                    oid = self._create_stop(p, command, now_ms, events)
                    result = CommandResult(200, f"An order '{oid}' has been created.", oid, events)
                case UpdateMarket() | UpdateLimit():
                    oid = self._update_order(p, command, now_ms, events)
                    msg = f"An order has been updated. New order Id is '{oid}'."
                    result = CommandResult(200, msg, oid, events)
                case UpdateStop() | UpdateStopLimit():
                    oid = self._update_stop(p, command, now_ms, events)
                    msg = f"An order has been updated. New order Id is '{oid}'."
                    result = CommandResult(200, msg, oid, events)
                case DeleteMarket() | DeleteLimit():
                    oid = self._delete_order(p, command.order_id, now_ms, events)
                    result = CommandResult(200, f"An order '{oid}' has been deleted.", oid, events)
                case DeleteStop() | DeleteStopLimit():
                    oid = self._delete_stop(p, command.order_id, now_ms, events)
                    result = CommandResult(200, f"An order '{oid}' has been deleted.", oid, events)
                case _:
                    raise _Rejected(f"Unsupported command {type(command).__name__}")
        except _Rejected as exc:
            result = CommandResult(400, str(exc), None, [])
        return result

    # -- market events -------------------------------------------------------------------------

    def on_market(
        self, events: Iterable[MarketEvent], now_ms: int, out: list[AccountEvent]
    ) -> set[str]:
        """React to a batch of market events: fill resting orders, fire stops, expire orders;
        the events this causes go to ``out``. Returns the tickers the batch traded or moved.

        Pass every batch :meth:`SyntheticMarket.step` (or ``burst``) returns. The fills this
        makes print anonymous trades that the next ``step`` returns.
        """
        prints: dict[str, list[TradePrinted]] = {}
        for e in events:
            if isinstance(e, TradePrinted):
                prints.setdefault(e.symbol, []).append(e)
            elif isinstance(e, BookUpdated):
                prints.setdefault(e.symbol, [])
        for symbol, trades in prints.items():
            resting = self._resting.get(symbol)
            if resting:
                for w in list(resting.values()):
                    if w.remaining > 0 and w.id in resting:
                        self._match_resting(w, trades, now_ms, out)
            stops = self._stops.get(symbol)
            if stops and trades:
                for stop in list(stops.values()):
                    if not stop.activate or stop.model.id not in stops:
                        continue
                    for t in trades:
                        if t.trade.id > stop.since_trade and stop.fires(t.trade.price):
                            self._fire(stop, now_ms, out)
                            break
        self._expire(now_ms, out)
        return set(prints)

    # -- validation ----------------------------------------------------------------------------

    def _instrument(
        self,
        p: Portfolio,
        command: CreateMarket
        | CreateLimit
        | CreateStop
        | CreateStopLimit
        | UpdateMarket
        | UpdateLimit
        | UpdateStop
        | UpdateStopLimit,
    ) -> InstrumentInfo:
        ref = command.instrument
        # docs/protocol.md §12.8: instrument.instrumentGroup wins over a top-level board; an empty
        # one names none.
        group, top = ref.instrument_group, command.board
        board = group if isinstance(group, str) and group else None
        if board is None and isinstance(top, str) and top:
            board = top
        exchange = str(ref.exchange)
        info = self.market.find(ref.symbol, exchange, board)
        if info is None:
            if board is not None and self.market.find(ref.symbol, exchange) is not None:
                raise _Rejected(
                    f"Instrument '{exchange}:{ref.symbol}' is not traded on board '{board}'"
                )
            raise _Rejected(f"Instrument '{exchange}:{ref.symbol}' is not found")
        if info.market != p.market:
            raise _Rejected(
                f"Portfolio '{p.id}' ({p.market}) cannot trade {info.market} instrument "
                f"'{info.symbol}'"
            )
        return info

    @staticmethod
    def _quantity(lots: int) -> int:
        if type(lots) is not int or lots <= 0 or lots > _MAX_LOTS:
            raise _Rejected("Invalid or unsupported quantity")  # as in docs/protocol.md §5.3
        return lots

    @staticmethod
    def _price(info: InstrumentInfo, price: float, what: str = "Price", band: bool = True) -> float:
        if not price > 0:
            raise _Rejected(f"{what} {price} must be greater than zero")
        if not info.on_grid(price):
            raise _Rejected(f"{what} {price} is not a multiple of the price step {info.price_step}")
        if info.to_ticks(price) < 1:  # on the grid only as zero steps
            raise _Rejected(f"{what} {price} is below the price step {info.price_step}")
        if band and not info.price_min <= price <= info.price_max:
            raise _Rejected(
                f"{what} {price} is outside the price band [{info.price_min}, {info.price_max}]"
            )
        return info.price_of(info.to_ticks(price))

    def _check_funds(
        self,
        p: Portfolio,
        info: InstrumentInfo,
        side: Side,
        lots: int,
        price: float | None,
        exclude: str | None = None,
    ) -> None:
        problem = self.ledger.check_funds(p, info, side, lots, price, exclude)
        if problem is not None:
            raise _Rejected(problem)

    # -- orders --------------------------------------------------------------------------------

    def _create_order(
        self,
        p: Portfolio,
        cmd: CreateMarket | CreateLimit | UpdateMarket | UpdateLimit,
        now: int,
        events: list[AccountEvent],
        *,
        replacing: _Working | None = None,
    ) -> str:
        info = self._instrument(p, cmd)
        side = cmd.side
        if replacing is not None and p.market == "FORTS":
            # docs/protocol.md §6.3: on FORTS update ignores side and symbol.
            info, side = replacing.info, replacing.side
        lots = self._quantity(cmd.quantity)
        limit: float | None = None
        kind = OrderType.MARKET
        if isinstance(cmd, CreateLimit | UpdateLimit):
            limit = self._price(info, cmd.price)
            kind = OrderType.LIMIT
        tif = TimeInForce.ONE_DAY
        if (
            isinstance(cmd, CreateMarket | CreateLimit | UpdateMarket)
            and cmd.time_in_force is not UNSET
        ):
            tif = cmd.time_in_force
        elif replacing is not None:
            tif = replacing.tif
        if tif is TimeInForce.AT_THE_CLOSE:
            # MOEX treats attheclose as fillorkill (docs/protocol.md §6.4).
            tif = TimeInForce.FILL_OR_KILL
        if kind is OrderType.MARKET and tif is TimeInForce.BOOK_OR_CANCEL:
            raise _Rejected("timeInForce 'bookorcancel' is not allowed for a market order")
        iceberg: Iceberg | None = None
        fixed = getattr(cmd, "iceberg_fixed", UNSET)
        if fixed is not UNSET:
            if fixed > lots:
                raise _Rejected(f"icebergFixed {fixed} is more than the quantity {lots}")
            variance = getattr(cmd, "iceberg_variance", UNSET)
            iceberg = Iceberg(
                creation_fixed_quantity=fixed,
                creation_variance_quantity=0 if variance is UNSET else int(variance),
                visible_quantity=float(fixed * info.lot_size),
                visible_quantity_batch=fixed,
                visible_filled_quantity=0.0,
                visible_filled_quantity_batch=0,
            )
        comment = cmd.comment if cmd.comment is not UNSET else None
        if comment is None and replacing is not None:
            comment = replacing.model.comment
        self._check_funds(p, info, side, lots, limit, None if replacing is None else replacing.id)
        if replacing is not None:
            self._cancel(replacing, now, events)
        return self._place(p, info, side, lots, kind, limit, tif, comment, iceberg, now, events)

    def _place(
        self,
        p: Portfolio,
        info: InstrumentInfo,
        side: Side,
        lots: int,
        kind: OrderType,
        limit: float | None,
        tif: TimeInForce,
        comment: str | None,
        iceberg: Iceberg | None,
        now: int,
        events: list[AccountEvent],
        oid: str | None = None,
    ) -> str:
        """Create a validated order, publish it and execute what can execute now."""
        if oid is None:
            oid = self._new_order_id()
        stamp = iso_time(now)
        if tif is TimeInForce.GOOD_TILL_CANCELLED:
            end = now + _GTC_LIFETIME_MS
        elif self.day_order_lifetime_ms is not None:
            end = now + self.day_order_lifetime_ms
        else:
            end = end_of_day(now)
        units = lots * info.lot_size
        model = Order(
            id=oid,
            symbol=info.symbol,
            board=info.board,
            broker_symbol=info.broker_symbol,
            portfolio=p.id,
            exchange=info.exchange,
            comment=comment,
            type=kind,
            side=side,
            status=OrderStatus.WORKING,
            trans_time=stamp,
            update_time=stamp,
            end_time=iso_time(end),
            qty_units=float(units),
            qty_batch=lots,
            filled_qty_units=0.0,
            filled_qty_batch=0,
            price=limit if limit is not None else 0.0,
            existing=False,
            time_in_force=tif,
            iceberg=iceberg,
            volume=money(info.value(limit, units)) if limit is not None else None,
        )
        w = _Working(p, info, model, limit, tif)
        p.orders[oid] = model
        self.ledger.emit(events, p, "orders", model, now)
        market = self.market
        available = market.liquidity(info.symbol, side, limit)
        if tif is TimeInForce.FILL_OR_KILL and available < lots:
            self._cancel(w, now, events)
            return oid
        if tif is TimeInForce.BOOK_OR_CANCEL and available > 0:
            self._cancel(w, now, events)
            return oid
        if available > 0:
            for price, got in market.take(info.symbol, side, lots, limit, now):
                self._fill(w, price, got, now, events)
        if w.remaining > 0:
            if kind is OrderType.MARKET or tif in (
                TimeInForce.IMMEDIATE_OR_CANCEL,
                TimeInForce.FILL_OR_KILL,
            ):
                self._cancel(w, now, events)
            else:
                w.since_trade = market.last_trade_id
                p.working[oid] = w
                self._resting.setdefault(info.symbol, {})[oid] = w
                self.ledger.emit_money_views(p, now, events)  # the reservation changes buying power
        return oid

    def _fill(
        self, w: _Working, price: float, lots: int, now: int, events: list[AccountEvent]
    ) -> None:
        """One fill, published as order, trade, positions, summary and risks (one step)."""
        p, info = w.p, w.info
        w.filled += lots
        stamp = iso_time(now)
        done = w.filled >= w.lots
        changes: dict[str, Any] = {
            "status": OrderStatus.FILLED if done else OrderStatus.WORKING,
            "update_time": stamp,
            "filled_qty_units": float(w.filled * info.lot_size),
            "filled_qty_batch": w.filled,
        }
        if w.model.iceberg is not None:
            changes["iceberg"] = msgspec.structs.replace(
                w.model.iceberg,
                visible_filled_quantity=float(w.filled * info.lot_size),
                visible_filled_quantity_batch=w.filled,
            )
        w.model = msgspec.structs.replace(w.model, **changes)
        p.orders[w.id] = w.model
        if done:
            self._unrest(w)
        self.ledger.record_fill(p, w.model, info, w.side, price, lots, now, events)

    def _cancel(self, w: _Working, now: int, events: list[AccountEvent]) -> None:
        """Cancel what is left of ``w`` and publish it."""
        w.model = msgspec.structs.replace(
            w.model, status=OrderStatus.CANCELED, update_time=iso_time(now)
        )
        w.p.orders[w.id] = w.model
        was_resting = self._unrest(w)
        self.ledger.emit(events, w.p, "orders", w.model, now)
        if was_resting:
            self.ledger.emit_money_views(w.p, now, events)

    def _unrest(self, w: _Working) -> bool:
        resting = self._resting.get(w.info.symbol)
        if resting is not None:
            resting.pop(w.id, None)
        return w.p.working.pop(w.id, None) is not None

    def _working(self, p: Portfolio, order_id: str, verb: str) -> _Working:
        model = p.orders.get(order_id)
        if model is None:
            raise _Rejected(f"Order '{order_id}' is not found in portfolio '{p.id}'")
        w = self._resting.get(model.symbol or "", {}).get(order_id)
        if w is not None:
            return w
        status = model.status.value if model.status is not None else "unknown"
        raise _Rejected(f"Order '{order_id}' cannot be {verb}: it is {status}")

    def _update_order(
        self, p: Portfolio, cmd: UpdateMarket | UpdateLimit, now: int, events: list[AccountEvent]
    ) -> str:
        old = self._working(p, cmd.order_id, "updated")
        return self._create_order(p, cmd, now, events, replacing=old)

    def _delete_order(
        self, p: Portfolio, order_id: str, now: int, events: list[AccountEvent]
    ) -> str:
        w = self._working(p, order_id, "deleted")
        self._cancel(w, now, events)
        return order_id

    # -- stop orders ---------------------------------------------------------------------------

    def _create_stop(
        self,
        p: Portfolio,
        cmd: CreateStop | CreateStopLimit | UpdateStop | UpdateStopLimit,
        now: int,
        events: list[AccountEvent],
        *,
        replacing: _Stop | None = None,
    ) -> str:
        info = self._instrument(p, cmd)
        side = cmd.side
        if replacing is not None and p.market == "FORTS":
            info, side = replacing.info, replacing.model.side or side
        lots = self._quantity(cmd.quantity)
        trigger = self._price(info, cmd.trigger_price, "Trigger price", band=False)
        limit: float | None = None
        kind = OrderType.STOP
        tif = TimeInForce.ONE_DAY
        if isinstance(cmd, CreateStopLimit | UpdateStopLimit):
            limit = self._price(info, cmd.price)
            kind = OrderType.STOP_LIMIT
            if cmd.time_in_force is not UNSET:
                tif = cmd.time_in_force
        end = now + _STOP_LIFETIME_MS
        if cmd.stop_end_unix_time is not UNSET and cmd.stop_end_unix_time != 0:
            if cmd.stop_end_unix_time >= MAX_TIME_S:  # beyond any date the order can carry
                raise _Rejected(
                    f"stopEndUnixTime: must be Unix seconds below {MAX_TIME_S} (year 9999), "
                    f"got {cmd.stop_end_unix_time}"
                )
            end = cmd.stop_end_unix_time * 1000
            if end <= now:
                raise _Rejected(f"stopEndUnixTime {cmd.stop_end_unix_time} is in the past")
        iceberg: Iceberg | None = None
        fixed = getattr(cmd, "iceberg_fixed", UNSET)
        if fixed is not UNSET:
            if fixed > lots:
                raise _Rejected(f"icebergFixed {fixed} is more than the quantity {lots}")
            iceberg = Iceberg(creation_fixed_quantity=fixed, visible_quantity_batch=fixed)
        comment = cmd.comment if cmd.comment is not UNSET else None
        if replacing is not None:
            if comment is None:
                comment = replacing.model.comment
            self._cancel_stop(replacing, now, events)
        units = lots * info.lot_size
        oid = self._new_order_id()
        stamp = iso_time(now)
        model = StopOrder(
            id=oid,
            exchange_order_id=None,
            symbol=info.symbol,
            broker_symbol=info.broker_symbol,
            portfolio=p.id,
            exchange=info.exchange,
            comment=comment,
            board=info.board,
            type=kind,
            side=side,
            condition=cmd.condition,
            status=OrderStatus.WORKING,
            trans_time=stamp,
            update_time=stamp,
            end_time=iso_time(end),
            error=None,
            qty_units=float(units),
            qty_batch=lots,
            filled_qty_units=0.0,
            filled_qty_batch=0,
            price=limit if limit is not None else 0.0,
            avg_price=0.0,
            stop_price=trigger,
            existing=False,
            time_in_force=tif,
            iceberg=iceberg,
            # What it would trade for: at the limit, or at the trigger for a stop-market order.
            volume=money(info.value(trigger if limit is None else limit, units)),
            protecting_seconds=(
                cmd.protecting_seconds
                if isinstance(cmd.protecting_seconds, int)
                else _PROTECTING_SECONDS
            ),
        )
        stop = _Stop(p, info, model, self.market.last_trade_id)
        if cmd.activate is False:
            stop.activate = False  # placed inactive (for bracket groups): never fires here
        p.stop_orders[oid] = model
        self._stops.setdefault(info.symbol, {})[oid] = stop
        self.ledger.emit(events, p, "stop_orders", model, now)
        return oid

    def _live_stop(self, p: Portfolio, order_id: str, verb: str) -> _Stop:
        model = p.stop_orders.get(order_id)
        if model is None:
            raise _Rejected(f"Stop order '{order_id}' is not found in portfolio '{p.id}'")
        stop = self._stops.get(model.symbol or "", {}).get(order_id)
        if stop is None:
            status = model.status.value if model.status is not None else "unknown"
            raise _Rejected(f"Stop order '{order_id}' cannot be {verb}: it is {status}")
        return stop

    def _update_stop(
        self, p: Portfolio, cmd: UpdateStop | UpdateStopLimit, now: int, events: list[AccountEvent]
    ) -> str:
        old = self._live_stop(p, cmd.order_id, "updated")
        return self._create_stop(p, cmd, now, events, replacing=old)

    def _delete_stop(
        self, p: Portfolio, order_id: str, now: int, events: list[AccountEvent]
    ) -> str:
        self._cancel_stop(self._live_stop(p, order_id, "deleted"), now, events)
        return order_id

    def _cancel_stop(
        self,
        stop: _Stop,
        now: int,
        events: list[AccountEvent],
        error: str | None = None,
        status: OrderStatus = OrderStatus.CANCELED,
    ) -> None:
        stop.model = msgspec.structs.replace(
            stop.model, status=status, update_time=iso_time(now), error=error
        )
        stop.p.stop_orders[stop.model.id] = stop.model
        self._stops.get(stop.info.symbol, {}).pop(stop.model.id, None)
        self.ledger.emit(events, stop.p, "stop_orders", stop.model, now)

    def _fire(self, stop: _Stop, now: int, events: list[AccountEvent]) -> None:
        """The trigger was met: mark the stop order filled and place its order."""
        p, info, m = stop.p, stop.info, stop.model
        side = m.side or Side.BUY
        lots = m.qty_batch or 0
        limit = m.price if m.type is OrderType.STOP_LIMIT else None
        kind = OrderType.LIMIT if limit is not None else OrderType.MARKET
        tif = m.time_in_force or TimeInForce.ONE_DAY
        try:
            self._check_funds(p, info, side, lots, limit)
        except _Rejected as exc:
            self._cancel_stop(stop, now, events, error=str(exc), status=OrderStatus.REJECTED)
            return
        oid = self._new_order_id()
        stop.model = msgspec.structs.replace(
            m, status=OrderStatus.FILLED, update_time=iso_time(now), exchange_order_id=oid
        )
        p.stop_orders[m.id] = stop.model
        self._stops.get(info.symbol, {}).pop(m.id, None)
        self.ledger.emit(events, p, "stop_orders", stop.model, now)
        self._place(p, info, side, lots, kind, limit, tif, m.comment, m.iceberg, now, events, oid)

    def _match_resting(
        self, w: _Working, trades: list[TradePrinted], now: int, out: list[AccountEvent]
    ) -> None:
        market, info, side, limit = self.market, w.info, w.side, w.limit
        # 1. The book came to us: take it at its prices (at or better than the limit).
        if market.liquidity(info.symbol, side, limit) > 0:
            for price, got in market.take(info.symbol, side, w.remaining, limit, now):
                self._fill(w, price, got, now, out)
        # 2. The tape traded through our price: we were there first, fill at our limit.
        if limit is None:
            return
        for e in trades:
            if w.remaining <= 0:
                break
            t = e.trade
            if t.id <= w.since_trade:
                continue
            through = (
                t.price < limit and t.side is Side.SELL
                if side is Side.BUY
                else t.price > limit and t.side is Side.BUY
            )
            if through:
                self._fill(w, limit, min(w.remaining, t.qty), now, out)

    def _expire(self, now: int, out: list[AccountEvent]) -> None:
        stamp = iso_time(now)
        for resting in list(self._resting.values()):
            for w in list(resting.values()):
                if (w.model.end_time or stamp) < stamp:
                    self._cancel(w, now, out)
        for stops in list(self._stops.values()):
            for stop in list(stops.values()):
                if (stop.model.end_time or stamp) < stamp:
                    self._cancel_stop(stop, now, out, error="Expired")

    def _new_order_id(self) -> str:
        self._next_order += 1
        return str(self._next_order)
