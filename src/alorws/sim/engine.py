"""Accounts, portfolios and a matching engine against the synthetic book.

Pure: no asyncio, no wall clock; time comes in as Unix milliseconds. The one side effect is the
optional JSONL append of the ground-truth log, off unless ``ground_truth_path`` is set.

How orders execute (docs/protocol.md §6):

* **market** orders and **marketable limit** orders take liquidity from the synthetic book with
  :meth:`SyntheticMarket.take` at once; what a market order cannot get from the 50 levels is
  cancelled. A limit order's rest **rests** (it is not shown in the synthetic book) and fills
  later in :meth:`TradingEngine.on_market`, either when the opposite best price reaches its
  limit (it then takes the book) or when the tape prints *through* it (at its limit price);
* ``fillorkill`` fills completely or not at all, ``immediateorcancel`` cancels what does not
  fill at once, ``bookorcancel`` (post-only) is cancelled if it would take liquidity
  (docs/protocol.md §6.4);
* **stop** and **stop-limit** orders fire on the first print (after they were placed) whose price
  meets ``condition`` against the trigger; they then place a market or limit order;
* ``update:*`` cancels the order and places a new one with a **new id** (docs/protocol.md §6.3).

Every fill happens in one step and is published in one consistent burst, in this order: the
order (a full new copy), the own trade, the security position, the money position (``RUB``,
``is_currency``), the summary, the risks and, on FORTS (``7500…``) portfolios, the FORTS risks.

Money: stock (``D…``) and FX (``G…``) portfolios pay the full value of what they buy and are
credited with what they sell (bonds add accrued interest), minus a commission; short sales are
allowed. Derivatives (``7500…``) portfolios only block initial margin and book realized variation
margin and fees. Instruments of another market are refused (stock portfolios trade ``FOND``,
FX ``CURR``, derivatives ``FORTS``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from msgspec import UNSET

from ..protocol._model import Model
from ..protocol.account import (
    CurrencyBuyingPower,
    Iceberg,
    Order,
    OwnTrade,
    Position,
    Risk,
    SpectraRisk,
    StopOrder,
    Summary,
)
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
from ..protocol.enums import (
    ClientType,
    Condition,
    OrderStatus,
    OrderType,
    RiskStatus,
    Side,
    TimeInForce,
)
from .market import (
    MAX_TIME_S,
    BookUpdated,
    InstrumentInfo,
    MarketEvent,
    SyntheticMarket,
    TradePrinted,
    iso_time,
)


__all__ = [
    "GROUND_TRUTH_STREAMS",
    "STREAMS",
    "Account",
    "AccountEvent",
    "CommandResult",
    "TradingEngine",
]

#: The account streams an :class:`AccountEvent` can belong to (one per portfolio opcode,
#: docs/protocol.md §4.6-4.12).
STREAMS: Final = (
    "orders",
    "stop_orders",
    "trades",
    "positions",
    "summaries",
    "risks",
    "spectra_risks",
)
#: The streams the ground-truth log records: order events, own trades, positions.
GROUND_TRUTH_STREAMS: Final = frozenset({"orders", "stop_orders", "trades", "positions"})

_FIRST_ORDER_ID: Final = 53_420_017_780
_FIRST_TRADE_ID: Final = 9_012_345_677
_MAX_LOTS: Final = 1_000_000
_DAY_MS: Final = 86_400_000
_STOP_LIFETIME_MS: Final = 30 * _DAY_MS  # stopEndUnixTime 0 / unset (docs/protocol.md §6.3)
_GTC_LIFETIME_MS: Final = 365 * _DAY_MS
_MARKET_OF_PREFIX: Final = (("7500", "FORTS"), ("D", "FOND"), ("G", "CURR"))
_FORTS_FEE_PER_LOT: Final = 1.0
_PROTECTING_SECONDS: Final = 15  # a stop order's protecting time when the command has none


# -- public value types ------------------------------------------------------------------------


@dataclass
class Account:
    """A simulator login: its refresh token, agreements and portfolios.

    Each agreement has three portfolios, in this order (docs/protocol.md §12.17): stock ``D…``,
    FX ``G…``, derivatives ``7500…``. ``cash`` is each portfolio's opening money (RUB).
    """

    login: str
    refresh_token: str
    agreements: list[str]
    portfolios: list[str]
    cash: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """One message for the subscriptions of ``portfolio`` on ``stream`` (see :data:`STREAMS`)."""

    portfolio: str
    stream: str
    payload: Model


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


# -- internal state ----------------------------------------------------------------------------


class _Position:
    __slots__ = ("avg", "info", "open_units", "units")

    def __init__(self, info: InstrumentInfo) -> None:
        self.info = info
        self.units = 0  # pieces; negative = short
        self.avg = 0.0
        self.open_units = 0

    def move(self, units: int, price: float) -> float:
        """Add signed ``units`` at ``price``; return the realized result in price x units."""
        q = self.units
        if q == 0 or (q > 0) == (units > 0):
            total = abs(q) + abs(units)
            self.avg = (self.avg * abs(q) + price * abs(units)) / total
            self.units = q + units
            return 0.0
        closing = min(abs(units), abs(q))
        realized = (price - self.avg) * closing * (1 if q > 0 else -1)
        self.units = q + units
        if self.units == 0:
            self.avg = 0.0
        elif (self.units > 0) != (q > 0):
            self.avg = price  # flipped: the rest opens at this price
        return realized


class _Portfolio:
    __slots__ = (
        "cash",
        "cash_open",
        "commission",
        "id",
        "last_mtm",
        "login",
        "market",
        "orders",
        "positions",
        "stop_orders",
        "trades",
        "working",
    )

    def __init__(self, pid: str, login: str, market: str, cash: float) -> None:
        self.id = pid
        self.login = login
        self.market = market
        self.cash = cash
        self.cash_open = cash
        self.commission = 0.0
        self.positions: dict[str, _Position] = {}
        self.orders: dict[str, Order] = {}
        self.stop_orders: dict[str, StopOrder] = {}
        self.trades: list[OwnTrade] = []
        self.working: dict[str, _Working] = {}
        self.last_mtm = 0


class _Working:
    """A working (resting) market or limit order."""

    __slots__ = ("filled", "info", "limit", "lots", "model", "p", "since_trade", "tif")

    def __init__(
        self,
        p: _Portfolio,
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

    def __init__(self, p: _Portfolio, info: InstrumentInfo, model: StopOrder, since: int) -> None:
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


def _end_of_day(now_ms: int) -> int:
    return now_ms - now_ms % _DAY_MS + _DAY_MS - 1  # 23:59:59.999 UTC, as TV-13


def _margin(info: InstrumentInfo, side: Side) -> float | None:
    """Initial margin per contract (FORTS) for a position on ``side``."""
    return info.margin_buy if side is Side.BUY else info.margin_sell


def _money(x: float) -> float:
    return round(x, 2)


def _lots(x: float) -> Any:
    """Money in lots of 1 RUB, to the kopeck: an int when whole (``1000000``, not ``1000000.0``).

    Typed ``Any``: the model's lot fields are ints, money's lots are fractional
    (docs/protocol.md §4.6).
    """
    x = round(x, 2)
    return int(x) if x.is_integer() else x


# -- the engine --------------------------------------------------------------------------------


class TradingEngine:
    """Accounts, portfolios, orders and fills for the simulator.

    Args:
        market: The synthetic market orders trade against.
        history_cap: How many orders / stop orders / own trades a ``skipHistory:false`` replay
            sends at most (3000, docs/protocol.md §12.17; ALOR's own cap, if any, is unknown).
            The server applies it; exposed here.
        commission_rate: Fee on stock and FX trades, a fraction of the traded value.
        mark_to_market_ms: How often (at most) :meth:`on_market` re-publishes the summary and
            risks of a portfolio holding a traded instrument; ``None`` never.
        ground_truth_path: When set, each ground-truth record is also appended to this JSONL
            file.
        day_order_lifetime_ms: How long a day order (``oneday``, the default time in force)
            lives; ``None``: until the end of the UTC day it was placed in (23:59:59.999, as
            TV-13). Tests set it so that an order placed just before midnight does not expire.
    """

    def __init__(
        self,
        market: SyntheticMarket,
        *,
        history_cap: int = 3000,
        commission_rate: float = 0.0005,
        mark_to_market_ms: int | None = 1000,
        ground_truth_path: str | os.PathLike[str] | None = None,
        day_order_lifetime_ms: int | None = None,
    ) -> None:
        self.market = market
        self.day_order_lifetime_ms = day_order_lifetime_ms
        self.history_cap = history_cap
        self.commission_rate = commission_rate
        self.mark_to_market_ms = mark_to_market_ms
        self.ground_truth_path = ground_truth_path
        #: Every published order event, own trade and position change.
        self.ground_truth: list[dict[str, Any]] = []
        self._accounts: dict[str, Account] = {}
        self._by_token: dict[str, Account] = {}
        self._portfolios: dict[str, _Portfolio] = {}
        self._resting: dict[str, dict[str, _Working]] = {}  # symbol -> id -> order
        self._stops: dict[str, dict[str, _Stop]] = {}  # symbol -> id -> stop order
        self._next_client = 0
        self._next_order = _FIRST_ORDER_ID
        self._next_trade = _FIRST_TRADE_ID
        self._unwritten: list[dict[str, Any]] = []

    # -- accounts ------------------------------------------------------------------------------

    @property
    def accounts(self) -> list[Account]:
        """Every account, in creation order."""
        return list(self._accounts.values())

    def add_account(
        self,
        login: str,
        *,
        refresh_token: str | None = None,
        agreements: int = 1,
        cash: float = 1_000_000.0,
    ) -> Account:
        """Create an account with ``agreements`` x (``D…``, ``G…``, ``7500…``) portfolios.

        Ids are deterministic (``D00001``, ``G00001``, ``7500001`` for the first agreement
        created, and so on); so is the refresh token unless one is given. Each portfolio opens
        with ``cash`` RUB. Raises ``ValueError`` for a login or refresh token already in use.
        """
        if login in self._accounts:
            raise ValueError(f"account {login!r} already exists")
        if agreements < 1:
            raise ValueError(f"agreements must be >= 1, got {agreements}")
        if refresh_token is None:
            digest = hashlib.sha256(
                f"alorws-sim:{login}:{len(self._accounts)}".encode()
            ).hexdigest()
            refresh_token = "-".join(
                (digest[:8], digest[8:12], digest[12:16], digest[16:20], digest[20:32])
            )
        if refresh_token in self._by_token:
            raise ValueError("this refresh token is already in use")
        account = Account(login=login, refresh_token=refresh_token, agreements=[], portfolios=[])
        for _ in range(agreements):
            self._next_client += 1
            n = self._next_client
            account.agreements.append(str(100_000 + n))
            for pid, market in (
                (f"D{n:05d}", "FOND"),
                (f"G{n:05d}", "CURR"),
                (f"7500{n:03d}", "FORTS"),
            ):
                if pid in self._portfolios:  # pragma: no cover - ids come from one counter
                    raise ValueError(f"portfolio {pid} already exists")
                self._portfolios[pid] = _Portfolio(pid, login, market, cash)
                account.portfolios.append(pid)
                account.cash[pid] = cash
        self._accounts[login] = account
        self._by_token[refresh_token] = account
        return account

    def account_for_token(self, refresh_token: str) -> Account | None:
        """The account a refresh token belongs to."""
        return self._by_token.get(refresh_token)

    def account_for_portfolio(self, portfolio: str) -> Account | None:
        """The account owning ``portfolio``."""
        p = self._portfolios.get(portfolio)
        return None if p is None else self._accounts[p.login]

    # -- snapshots (HTTP views and skipHistory:false replays) ----------------------------------

    def _p(self, portfolio: str) -> _Portfolio:
        p = self._portfolios.get(portfolio)
        if p is None:
            raise KeyError(f"unknown portfolio {portfolio!r}")
        return p

    def orders(self, portfolio: str) -> list[Order]:
        """Every order of the session, oldest first, in its latest state."""
        return list(self._p(portfolio).orders.values())

    def stop_orders(self, portfolio: str) -> list[StopOrder]:
        """Every stop order of the session, oldest first, in its latest state."""
        return list(self._p(portfolio).stop_orders.values())

    def trades(self, portfolio: str) -> list[OwnTrade]:
        """Every own trade of the session, oldest first."""
        return list(self._p(portfolio).trades)

    def positions(self, portfolio: str) -> list[Position]:
        """The money position (``RUB``) first, then each instrument ever traded."""
        p = self._p(portfolio)
        return [self._money_position(p)] + [
            self._position_model(p, pos) for pos in p.positions.values()
        ]

    def summary(self, portfolio: str) -> Summary:
        """The portfolio summary now (docs/protocol.md §4.7)."""
        return self._summary(self._p(portfolio))

    def risk(self, portfolio: str) -> Risk:
        """The portfolio risks now (docs/protocol.md §4.8)."""
        return self._risk(self._p(portfolio), self.market.now_ms)

    def spectra_risk(self, portfolio: str) -> SpectraRisk | None:
        """The FORTS risks now (docs/protocol.md §4.9); None for a portfolio that is not a
        derivatives one."""
        p = self._p(portfolio)
        return self._spectra(p) if p.market == "FORTS" else None

    # -- commands ------------------------------------------------------------------------------

    def execute(self, portfolio: str, command: Command, now_ms: int) -> CommandResult:
        """Run one ``/cws`` (or ``commandapi``) order command for ``portfolio``
        (docs/protocol.md §6).

        Returns the reply (200 with ``orderNumber`` or 400 with a reason) and the account events
        to publish. Duplicate-guid handling (docs/protocol.md §12.11) is the caller's business.
        """
        events: list[AccountEvent] = []
        try:
            p = self._portfolios.get(portfolio)
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
        self._flush()
        return result

    # -- validation ----------------------------------------------------------------------------

    def _instrument(
        self,
        p: _Portfolio,
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
        p: _Portfolio,
        info: InstrumentInfo,
        side: Side,
        lots: int,
        price: float | None,
        exclude: str | None = None,
    ) -> None:
        """Refuse an order that would open more exposure than the buying power covers."""
        pos = p.positions.get(info.symbol)
        held = pos.units // info.lot_size if pos is not None else 0
        # Lots that close an existing opposite position need no money.
        opening = lots - (min(lots, max(0, -held)) if side is Side.BUY else min(lots, max(0, held)))
        if opening <= 0:
            return
        if p.market == "FORTS":
            need = opening * (_margin(info, side) or 0.0)
        elif side is Side.SELL:
            return  # short sales are allowed on stock and FX portfolios
        else:
            if price is None:
                price = self.market.best(info.symbol)[1]
            need = info.value(price, opening * info.lot_size) * (1 + self.commission_rate)
        power = self._buying_power(p, exclude)
        if need > power + 1e-6:
            raise _Rejected(
                f"Insufficient funds: the order needs {need:.2f}, buying power is {power:.2f}"
            )

    # -- orders --------------------------------------------------------------------------------

    def _create_order(
        self,
        p: _Portfolio,
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
        p: _Portfolio,
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
            end = _end_of_day(now)
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
            volume=_money(info.value(limit, units)) if limit is not None else None,
        )
        w = _Working(p, info, model, limit, tif)
        p.orders[oid] = model
        self._emit(events, p, "orders", model, now)
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
                self._emit_money_views(p, now, events)  # the reservation changes buying power
        return oid

    def _fill(
        self, w: _Working, price: float, lots: int, now: int, events: list[AccountEvent]
    ) -> None:
        """One fill, published as order, trade, positions, summary and risks (one step)."""
        p, info = w.p, w.info
        w.filled += lots
        units = lots * info.lot_size
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
        value = info.value(price, units)
        accrued = self.market.accrued_interest(info.symbol) * units if info.is_bond else 0.0
        if p.market == "FORTS":
            commission = _FORTS_FEE_PER_LOT * lots
        else:
            commission = _money(value * self.commission_rate)
        self._next_trade += 1
        trade = OwnTrade(
            id=str(self._next_trade),
            order_no=w.id,
            comment=w.model.comment,
            symbol=info.symbol,
            broker_symbol=info.broker_symbol,
            exchange=info.exchange,
            date=stamp,
            board=info.board,
            qty_units=float(units),
            qty_batch=lots,
            price=price,
            accrued_int=_money(accrued),
            side=w.side,
            existing=False,
            commission=commission,
            repo_specific_fields=None,
            volume=_money(value),
            settle_date=iso_time(_end_of_day(now) + 1),  # T+1
        )
        p.trades.append(trade)
        # Positions and money.
        pos = p.positions.get(info.symbol)
        if pos is None:
            pos = p.positions[info.symbol] = _Position(info)
        signed = units if w.side is Side.BUY else -units
        realized = info.value(pos.move(signed, price), 1)
        p.commission += commission
        if p.market == "FORTS":
            p.cash += realized - commission
        else:
            flow = value + accrued
            p.cash += (-flow if w.side is Side.BUY else flow) - commission
        self._emit(events, p, "orders", w.model, now)
        self._emit(events, p, "trades", trade, now)
        self._emit(events, p, "positions", self._position_model(p, pos), now)
        self._emit(events, p, "positions", self._money_position(p), now)
        self._emit_money_views(p, now, events, risks=True)

    def _cancel(self, w: _Working, now: int, events: list[AccountEvent]) -> None:
        """Cancel what is left of ``w`` and publish it."""
        w.model = msgspec.structs.replace(
            w.model, status=OrderStatus.CANCELED, update_time=iso_time(now)
        )
        w.p.orders[w.id] = w.model
        was_resting = self._unrest(w)
        self._emit(events, w.p, "orders", w.model, now)
        if was_resting:
            self._emit_money_views(w.p, now, events)

    def _unrest(self, w: _Working) -> bool:
        resting = self._resting.get(w.info.symbol)
        if resting is not None:
            resting.pop(w.id, None)
        return w.p.working.pop(w.id, None) is not None

    def _working(self, p: _Portfolio, order_id: str, verb: str) -> _Working:
        w = p.working.get(order_id)
        if w is not None:
            return w
        model = p.orders.get(order_id)
        if model is None:
            raise _Rejected(f"Order '{order_id}' is not found in portfolio '{p.id}'")
        status = model.status.value if model.status is not None else "unknown"
        raise _Rejected(f"Order '{order_id}' cannot be {verb}: it is {status}")

    def _update_order(
        self, p: _Portfolio, cmd: UpdateMarket | UpdateLimit, now: int, events: list[AccountEvent]
    ) -> str:
        old = self._working(p, cmd.order_id, "updated")
        return self._create_order(p, cmd, now, events, replacing=old)

    def _delete_order(
        self, p: _Portfolio, order_id: str, now: int, events: list[AccountEvent]
    ) -> str:
        w = self._working(p, order_id, "deleted")
        self._cancel(w, now, events)
        return order_id

    # -- stop orders ---------------------------------------------------------------------------

    def _create_stop(
        self,
        p: _Portfolio,
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
            volume=_money(info.value(trigger if limit is None else limit, units)),
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
        self._emit(events, p, "stop_orders", model, now)
        return oid

    def _live_stop(self, p: _Portfolio, order_id: str, verb: str) -> _Stop:
        model = p.stop_orders.get(order_id)
        if model is None:
            raise _Rejected(f"Stop order '{order_id}' is not found in portfolio '{p.id}'")
        stop = self._stops.get(model.symbol or "", {}).get(order_id)
        if stop is None:
            status = model.status.value if model.status is not None else "unknown"
            raise _Rejected(f"Stop order '{order_id}' cannot be {verb}: it is {status}")
        return stop

    def _update_stop(
        self, p: _Portfolio, cmd: UpdateStop | UpdateStopLimit, now: int, events: list[AccountEvent]
    ) -> str:
        old = self._live_stop(p, cmd.order_id, "updated")
        return self._create_stop(p, cmd, now, events, replacing=old)

    def _delete_stop(
        self, p: _Portfolio, order_id: str, now: int, events: list[AccountEvent]
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
        self._emit(events, stop.p, "stop_orders", stop.model, now)

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
        self._emit(events, p, "stop_orders", stop.model, now)
        self._place(p, info, side, lots, kind, limit, tif, m.comment, m.iceberg, now, events, oid)

    # -- market events -------------------------------------------------------------------------

    def on_market(self, events: Iterable[MarketEvent], now_ms: int) -> list[AccountEvent]:
        """React to a batch of market events: fill resting orders, fire stops, expire orders.

        Pass every batch :meth:`SyntheticMarket.step` (or ``burst``) returns. The fills this
        makes print anonymous trades that the next ``step`` returns.
        """
        out: list[AccountEvent] = []
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
        if self.mark_to_market_ms is not None:
            self._mark_to_market(set(prints), now_ms, out)
        self._flush()
        return out

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

    def _mark_to_market(self, symbols: set[str], now: int, out: list[AccountEvent]) -> None:
        assert self.mark_to_market_ms is not None
        for p in self._portfolios.values():
            if now - p.last_mtm < self.mark_to_market_ms:
                continue
            if any(sym in symbols and pos.units for sym, pos in p.positions.items()):
                self._emit_money_views(p, now, out, risks=True)

    # -- models --------------------------------------------------------------------------------

    def _new_order_id(self) -> str:
        self._next_order += 1
        return str(self._next_order)

    def _value_now(self, pos: _Position) -> float:
        return pos.info.value(self.market.last_price(pos.info.symbol), pos.units)

    def _position_model(self, p: _Portfolio, pos: _Position) -> Position:
        info = pos.info
        lot = info.lot_size
        units = pos.units
        at_avg = info.value(pos.avg, units)
        now_value = self._value_now(pos)
        pl = _money(now_value - at_avg)
        return Position(
            symbol=info.symbol,
            portfolio=p.id,
            broker_symbol=info.broker_symbol,
            exchange=info.exchange,
            short_name=info.short_name,
            volume=_money(at_avg),
            current_volume=_money(now_value),
            avg_price=round(pos.avg, info.decimals + 4),
            # Pieces and lots of a security are whole: ints, so the wire has `10`, not `10.0`.
            qty_units=units,
            open_units=pos.open_units,
            lot_size=lot,
            qty_t0=pos.open_units,  # T+1: today's trades settle tomorrow
            qty_t1=units,
            qty_t2=units,
            qty_t_future=units,
            qty_t0_batch=pos.open_units // lot,
            qty_t1_batch=units // lot,
            qty_t2_batch=units // lot,
            qty_t_future_batch=units // lot,
            qty_batch=units // lot,
            open_qty_batch=pos.open_units // lot,
            daily_unrealised_pl=pl,
            unrealised_pl=pl,
            is_currency=False,
            existing=False,
        )

    @staticmethod
    def _money_position(p: _Portfolio) -> Position:
        # As ALOR shows money (docs/protocol.md §12.15): lot size 1, so the lots
        # are the (fractional) units.
        cash = _lots(p.cash)
        opening = _lots(p.cash_open)
        return Position(
            symbol="RUB",
            portfolio=p.id,
            broker_symbol="MOEX:RUB",
            exchange="MOEX",
            short_name="RUB",
            volume=0,
            current_volume=0,
            avg_price=0,
            qty_units=cash,
            open_units=opening,
            lot_size=1,
            qty_t0=cash,
            qty_t1=cash,
            qty_t2=cash,
            qty_t_future=cash,
            qty_t0_batch=cash,
            qty_t1_batch=cash,
            qty_t2_batch=cash,
            qty_t_future_batch=cash,
            qty_batch=cash,
            open_qty_batch=opening,
            daily_unrealised_pl=0,
            unrealised_pl=0,
            is_currency=True,
            existing=False,
        )

    def _reserved(self, p: _Portfolio, exclude: str | None = None) -> float:
        """Money held back for working orders that would open exposure."""
        total = 0.0
        for w in p.working.values():
            if w.id == exclude:
                continue
            if p.market == "FORTS":
                total += w.remaining * (_margin(w.info, w.side) or 0.0)
            elif w.side is Side.BUY and w.limit is not None:
                total += w.info.value(w.limit, w.remaining * w.info.lot_size)
        return total

    def _margins(self, p: _Portfolio) -> tuple[float, float, float]:
        """``(evaluation, initial margin, variation margin)`` of the portfolio now."""
        initial = 0.0
        vm = 0.0
        holdings = 0.0
        for pos in p.positions.values():
            if not pos.units:
                continue
            info = pos.info
            if p.market == "FORTS":
                margin = _margin(info, Side.BUY if pos.units > 0 else Side.SELL)
                initial += abs(pos.units) / info.lot_size * (margin or 0.0)
                vm += self._value_now(pos) - info.value(pos.avg, pos.units)
            else:
                value = self._value_now(pos)
                holdings += value
                initial += abs(value) * info.risk_rate
        evaluation = p.cash + (vm if p.market == "FORTS" else holdings)
        return evaluation, initial, vm

    def _buying_power(self, p: _Portfolio, exclude: str | None = None) -> float:
        evaluation, initial, _ = self._margins(p)
        if p.market == "FORTS":
            return evaluation - initial - self._reserved(p, exclude)
        return p.cash - self._reserved(p, exclude)

    def _summary(self, p: _Portfolio) -> Summary:
        evaluation, initial, _ = self._margins(p)
        power = _money(self._buying_power(p))
        profit = evaluation - p.cash_open
        return Summary(
            buying_power_at_morning=_money(p.cash_open),
            buying_power=power,
            profit=_money(profit),
            profit_rate=round(profit / p.cash_open * 100.0, 4) if p.cash_open else 0.0,
            portfolio_evaluation=_money(evaluation),
            portfolio_liquidation_value=_money(evaluation),
            initial_margin=_money(initial),
            corrected_margin=_money(initial),
            risk_before_force_position_closing=_money(evaluation - initial / 2.0),
            commission=None if p.market == "FORTS" else _money(p.commission),
            buying_power_by_currency=[CurrencyBuyingPower(currency="RUB", buying_power=power)],
        )

    def _risk(self, p: _Portfolio, now: int) -> Risk:
        evaluation, initial, _ = self._margins(p)
        minimal = initial / 2.0
        r1, r2 = evaluation - initial, evaluation - minimal
        if r1 >= 0 and r2 >= 0:
            status = RiskStatus.OK
        elif r2 >= 0:
            status = RiskStatus.DEMAND
        else:
            status = RiskStatus.TO_CLOSE
        return Risk(
            portfolio=p.id,
            exchange="MOEX",
            portfolio_evaluation=_money(evaluation),
            portfolio_liquidation_value=_money(evaluation),
            initial_margin=_money(initial),
            minimal_margin=_money(minimal),
            corrected_margin=_money(initial),
            risk_coverage_ratio_one=_money(r1),
            risk_coverage_ratio_two=_money(r2),
            risk_category_id=1,
            client_type=ClientType.STANDARD_RISK,
            has_forbidden_positions=False,
            has_negative_quantity=any(pos.units < 0 for pos in p.positions.values()),
            risk_status=status,
            calculation_time=iso_time(now),
        )

    def _spectra(self, p: _Portfolio) -> SpectraRisk:
        _, initial, vm = self._margins(p)
        amount = p.cash + vm
        blocked = initial + self._reserved(p)
        return SpectraRisk(
            portfolio=p.id,
            money_free=_money(amount - blocked),
            money_blocked=_money(blocked),
            fee=_money(p.commission),
            money_old=_money(p.cash_open),
            money_amount=_money(amount),
            money_pledge_amount=0.0,
            vm_inter_cl=0.0,
            vm_current_positions=_money(vm),
            var_margin=_money(vm),
            indicative_var_margin=_money(vm),
            net_option_value=0.0,
            pos_risk=_money(initial),
            is_limits_set=False,
            balance_money=_money(amount),
        )

    # -- publishing ----------------------------------------------------------------------------

    def _emit_money_views(
        self, p: _Portfolio, now: int, events: list[AccountEvent], *, risks: bool = False
    ) -> None:
        """Publish the summary (and with ``risks`` the risks) of ``p`` as they are now."""
        p.last_mtm = now
        self._emit(events, p, "summaries", self._summary(p), now)
        if risks:
            self._emit(events, p, "risks", self._risk(p, now), now)
            if p.market == "FORTS":
                self._emit(events, p, "spectra_risks", self._spectra(p), now)

    def _emit(
        self, events: list[AccountEvent], p: _Portfolio, stream: str, payload: Model, now: int
    ) -> None:
        events.append(AccountEvent(p.id, stream, payload))
        if stream in GROUND_TRUTH_STREAMS:
            record = {
                "seq": len(self.ground_truth) + 1,
                "ts": now,
                "portfolio": p.id,
                "stream": stream,
                "data": msgspec.to_builtins(payload),
            }
            self.ground_truth.append(record)
            if self.ground_truth_path is not None:
                self._unwritten.append(record)

    def _flush(self) -> None:
        """Append the records not yet written to the JSONL file, if one is configured."""
        if not self._unwritten or self.ground_truth_path is None:
            self._unwritten.clear()
            return
        lines = b"".join(msgspec.json.encode(r) + b"\n" for r in self._unwritten)
        self._unwritten.clear()
        with open(self.ground_truth_path, "ab") as f:
            f.write(lines)
