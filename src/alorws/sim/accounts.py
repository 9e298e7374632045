"""Accounts of the simulator: portfolios, positions, money, summaries, risks, ground truth.

Pure: no asyncio, no wall clock; time comes in as Unix milliseconds. The one side effect is the
optional JSONL append of the ground-truth log, off unless ``ground_truth_path`` is set.
:class:`Ledger` keeps the books; the matching (:mod:`~alorws.sim.matching`) tells it about
working orders and fills, and the engine (:mod:`~alorws.sim.engine`) puts the two together.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec

from ..protocol._model import Model
from ..protocol.account import (
    CurrencyBuyingPower,
    Order,
    OwnTrade,
    Position,
    Risk,
    SpectraRisk,
    StopOrder,
    Summary,
)
from ..protocol.enums import ClientType, RiskStatus, Side
from .market import InstrumentInfo, SyntheticMarket, iso_time


__all__ = [
    "GROUND_TRUTH_STREAMS",
    "STREAMS",
    "Account",
    "AccountEvent",
    "Ledger",
    "Portfolio",
    "RefreshTokens",
    "Reserving",
    "end_of_day",
    "money",
    "random_refresh_token",
    "seeded_refresh_token",
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

_FIRST_TRADE_ID: Final = 9_012_345_677

#: Makes a new account's refresh token from its login and the number of accounts before it.
RefreshTokens = Callable[[str, int], str]


def _uuid_shaped(digits: str) -> str:
    """32 hex digits as a UUID, the shape of ALOR's refresh tokens (docs/protocol.md §2.1)."""
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:32]}"


def seeded_refresh_token(login: str, n: int) -> str:
    """The same refresh token for the same login and place, in every run (tests, replays)."""
    return _uuid_shaped(hashlib.sha256(f"alorws-sim:{login}:{n}".encode()).hexdigest())


def random_refresh_token(login: str, n: int) -> str:
    """A fresh random refresh token, whatever the login (a running simulator's)."""
    return _uuid_shaped(secrets.token_hex(16))


_DAY_MS: Final = 86_400_000
_FORTS_FEE_PER_LOT: Final = 1.0


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


# -- the books --------------------------------------------------------------------------------


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


class Portfolio:
    """One portfolio's books: money, positions, and the session's orders, stop orders, own
    trades (each order in its latest state) and working orders (:class:`Reserving`)."""

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
        self.working: dict[str, Reserving] = {}  # by order id; the matching's
        self.last_mtm = 0


class Reserving(Protocol):
    """A working order as the money sees it: what it may still buy or sell, and at what."""

    @property
    def id(self) -> str:
        """The order id."""

    @property
    def info(self) -> InstrumentInfo:
        """The instrument."""

    @property
    def side(self) -> Side:
        """Buy or sell."""

    @property
    def limit(self) -> float | None:
        """The limit price; None for a market order."""

    @property
    def remaining(self) -> int:
        """Lots not filled yet."""


def end_of_day(now_ms: int) -> int:
    """The last millisecond of the UTC day of ``now_ms``."""
    return now_ms - now_ms % _DAY_MS + _DAY_MS - 1  # 23:59:59.999 UTC, as TV-13


def _margin(info: InstrumentInfo, side: Side) -> float | None:
    """Initial margin per contract (FORTS) for a position on ``side``."""
    return info.margin_buy if side is Side.BUY else info.margin_sell


def money(x: float) -> float:
    """An amount of money, to the kopeck."""
    return round(x, 2)


def _lots(x: float) -> Any:
    """Money in lots of 1 RUB, to the kopeck: an int when whole (``1000000``, not ``1000000.0``).

    Typed ``Any``: the model's lot fields are ints, money's lots are fractional
    (docs/protocol.md §4.6).
    """
    x = round(x, 2)
    return int(x) if x.is_integer() else x


# -- the ledger ---------------------------------------------------------------------------------


class Ledger:
    """Every account and portfolio of the simulator, their money and the views of it.

    Money: stock (``D…``) and FX (``G…``) portfolios pay the full value of what they buy and
    are credited with what they sell (bonds add accrued interest), minus a commission; short
    sales are allowed. Derivatives (``7500…``) portfolios only block initial margin and book
    realized variation margin and fees. Working orders that would open exposure hold money back
    (:meth:`check_funds` refuses what the buying power does not cover).

    A fill (:meth:`record_fill`) is published in one burst, in this order: the order (a full new
    copy), the own trade, the security position, the money position (``RUB``, ``is_currency``),
    the summary, the risks and, on FORTS (``7500…``) portfolios, the FORTS risks. Every order
    event, own trade and position change is also appended to :attr:`ground_truth`.

    Args:
        market: prices positions are valued at.
        commission_rate: fee on stock and FX trades, a fraction of the traded value.
        mark_to_market_ms: how often (at most) :meth:`mark_to_market` re-publishes the summary
            and risks of a portfolio holding a traded instrument; ``None`` never.
        ground_truth_path: when set, each ground-truth record is also appended to this JSONL
            file (by :meth:`flush`).
        refresh_tokens: makes the refresh token of an account added without one;
            :func:`seeded_refresh_token` (the default: the ledger stays deterministic) or
            :func:`random_refresh_token`.
    """

    def __init__(
        self,
        market: SyntheticMarket,
        *,
        commission_rate: float = 0.0005,
        mark_to_market_ms: int | None = 1000,
        ground_truth_path: str | os.PathLike[str] | None = None,
        refresh_tokens: RefreshTokens = seeded_refresh_token,
    ) -> None:
        self.market = market
        self.refresh_tokens = refresh_tokens
        self.commission_rate = commission_rate
        self.mark_to_market_ms = mark_to_market_ms
        self.ground_truth_path = ground_truth_path
        #: Every published order event, own trade and position change.
        self.ground_truth: list[dict[str, Any]] = []
        self._accounts: dict[str, Account] = {}
        self._by_token: dict[str, Account] = {}
        self._portfolios: dict[str, Portfolio] = {}
        self._next_client = 0
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
        created, and so on); the refresh token, unless one is given, is :attr:`refresh_tokens`'s.
        Each portfolio opens with ``cash`` RUB. Raises ``ValueError`` for a login or refresh
        token already in use.
        """
        if login in self._accounts:
            raise ValueError(f"account {login!r} already exists")
        if agreements < 1:
            raise ValueError(f"agreements must be >= 1, got {agreements}")
        if refresh_token is None:
            refresh_token = self.refresh_tokens(login, len(self._accounts))
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
                self._portfolios[pid] = Portfolio(pid, login, market, cash)
                account.portfolios.append(pid)
                account.cash[pid] = cash
        self._accounts[login] = account
        self._by_token[refresh_token] = account
        return account

    def account_for_token(self, refresh_token: str) -> Account | None:
        """The account a refresh token belongs to."""
        return self._by_token.get(refresh_token)

    def revoke_refresh_token(self, refresh_token: str) -> bool:
        """Refuse ``refresh_token`` from now on (as ALOR does once a user revokes it); access
        tokens issued with it stay valid until they expire. Returns whether it was known."""
        return self._by_token.pop(refresh_token, None) is not None

    def account_for_portfolio(self, portfolio: str) -> Account | None:
        """The account owning ``portfolio``."""
        p = self._portfolios.get(portfolio)
        return None if p is None else self._accounts[p.login]

    def portfolio(self, portfolio: str) -> Portfolio | None:
        """The books of ``portfolio``, or None."""
        return self._portfolios.get(portfolio)

    # -- snapshots (HTTP views and skipHistory:false replays) ----------------------------------

    def _p(self, portfolio: str) -> Portfolio:
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
        return [_money_position(p)] + [self._position_model(p, pos) for pos in p.positions.values()]

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

    # -- money -------------------------------------------------------------------------------

    def check_funds(
        self,
        p: Portfolio,
        info: InstrumentInfo,
        side: Side,
        lots: int,
        price: float | None,
        exclude: str | None = None,
    ) -> str | None:
        """Why an order would open more exposure than the buying power covers, or None.

        ``price`` None: a market order, valued at the best offer; ``exclude``: an order id whose
        reservation does not count (the order being replaced).
        """
        pos = p.positions.get(info.symbol)
        held = pos.units // info.lot_size if pos is not None else 0
        # Lots that close an existing opposite position need no money.
        opening = lots - (min(lots, max(0, -held)) if side is Side.BUY else min(lots, max(0, held)))
        if opening <= 0:
            return None
        if p.market == "FORTS":
            need = opening * (_margin(info, side) or 0.0)
        elif side is Side.SELL:
            return None  # short sales are allowed on stock and FX portfolios
        else:
            if price is None:
                price = self.market.best(info.symbol)[1]
            need = info.value(price, opening * info.lot_size) * (1 + self.commission_rate)
        power = self._buying_power(p, exclude)
        if need > power + 1e-6:
            return f"Insufficient funds: the order needs {need:.2f}, buying power is {power:.2f}"
        return None

    def _reserved(self, p: Portfolio, exclude: str | None = None) -> float:
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

    def _margins(self, p: Portfolio) -> tuple[float, float, float]:
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

    def _buying_power(self, p: Portfolio, exclude: str | None = None) -> float:
        evaluation, initial, _ = self._margins(p)
        if p.market == "FORTS":
            return evaluation - initial - self._reserved(p, exclude)
        return p.cash - self._reserved(p, exclude)

    def _value_now(self, pos: _Position) -> float:
        return pos.info.value(self.market.last_price(pos.info.symbol), pos.units)

    # -- fills -------------------------------------------------------------------------------

    def record_fill(
        self,
        p: Portfolio,
        order: Order,
        info: InstrumentInfo,
        side: Side,
        price: float,
        lots: int,
        now: int,
        events: list[AccountEvent],
    ) -> None:
        """Book a fill of ``order`` (already in its new state): the own trade, the position,
        the money; publish them with the order (one burst, in the order above)."""
        units = lots * info.lot_size
        stamp = iso_time(now)
        value = info.value(price, units)
        accrued = self.market.accrued_interest(info.symbol) * units if info.is_bond else 0.0
        if p.market == "FORTS":
            commission = _FORTS_FEE_PER_LOT * lots
        else:
            commission = money(value * self.commission_rate)
        self._next_trade += 1
        trade = OwnTrade(
            id=str(self._next_trade),
            order_no=order.id,
            comment=order.comment,
            symbol=info.symbol,
            broker_symbol=info.broker_symbol,
            exchange=info.exchange,
            date=stamp,
            board=info.board,
            qty_units=float(units),
            qty_batch=lots,
            price=price,
            accrued_int=money(accrued),
            side=side,
            existing=False,
            commission=commission,
            repo_specific_fields=None,
            volume=money(value),
            settle_date=iso_time(end_of_day(now) + 1),  # T+1
        )
        p.trades.append(trade)
        # Positions and money.
        pos = p.positions.get(info.symbol)
        if pos is None:
            pos = p.positions[info.symbol] = _Position(info)
        signed = units if side is Side.BUY else -units
        realized = info.value(pos.move(signed, price), 1)
        p.commission += commission
        if p.market == "FORTS":
            p.cash += realized - commission
        else:
            flow = value + accrued
            p.cash += (-flow if side is Side.BUY else flow) - commission
        self.emit(events, p, "orders", order, now)
        self.emit(events, p, "trades", trade, now)
        self.emit(events, p, "positions", self._position_model(p, pos), now)
        self.emit(events, p, "positions", _money_position(p), now)
        self.emit_money_views(p, now, events, risks=True)

    def mark_to_market(self, symbols: set[str], now: int, out: list[AccountEvent]) -> None:
        """Re-publish the summary and risks of each portfolio holding one of ``symbols``, at
        most every ``mark_to_market_ms`` (not at all when it is None)."""
        if self.mark_to_market_ms is None:
            return
        for p in self._portfolios.values():
            if now - p.last_mtm < self.mark_to_market_ms:
                continue
            if any(sym in symbols and pos.units for sym, pos in p.positions.items()):
                self.emit_money_views(p, now, out, risks=True)

    # -- models ------------------------------------------------------------------------------

    def _position_model(self, p: Portfolio, pos: _Position) -> Position:
        info = pos.info
        lot = info.lot_size
        units = pos.units
        at_avg = info.value(pos.avg, units)
        now_value = self._value_now(pos)
        pl = money(now_value - at_avg)
        return Position(
            symbol=info.symbol,
            portfolio=p.id,
            broker_symbol=info.broker_symbol,
            exchange=info.exchange,
            short_name=info.short_name,
            volume=money(at_avg),
            current_volume=money(now_value),
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

    def _summary(self, p: Portfolio) -> Summary:
        evaluation, initial, _ = self._margins(p)
        power = money(self._buying_power(p))
        profit = evaluation - p.cash_open
        return Summary(
            buying_power_at_morning=money(p.cash_open),
            buying_power=power,
            profit=money(profit),
            profit_rate=round(profit / p.cash_open * 100.0, 4) if p.cash_open else 0.0,
            portfolio_evaluation=money(evaluation),
            portfolio_liquidation_value=money(evaluation),
            initial_margin=money(initial),
            corrected_margin=money(initial),
            risk_before_force_position_closing=money(evaluation - initial / 2.0),
            commission=None if p.market == "FORTS" else money(p.commission),
            buying_power_by_currency=[CurrencyBuyingPower(currency="RUB", buying_power=power)],
        )

    def _risk(self, p: Portfolio, now: int) -> Risk:
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
            portfolio_evaluation=money(evaluation),
            portfolio_liquidation_value=money(evaluation),
            initial_margin=money(initial),
            minimal_margin=money(minimal),
            corrected_margin=money(initial),
            risk_coverage_ratio_one=money(r1),
            risk_coverage_ratio_two=money(r2),
            risk_category_id=1,
            client_type=ClientType.STANDARD_RISK,
            has_forbidden_positions=False,
            has_negative_quantity=any(pos.units < 0 for pos in p.positions.values()),
            risk_status=status,
            calculation_time=iso_time(now),
        )

    def _spectra(self, p: Portfolio) -> SpectraRisk:
        _, initial, vm = self._margins(p)
        amount = p.cash + vm
        blocked = initial + self._reserved(p)
        return SpectraRisk(
            portfolio=p.id,
            money_free=money(amount - blocked),
            money_blocked=money(blocked),
            fee=money(p.commission),
            money_old=money(p.cash_open),
            money_amount=money(amount),
            money_pledge_amount=0.0,
            vm_inter_cl=0.0,
            vm_current_positions=money(vm),
            var_margin=money(vm),
            indicative_var_margin=money(vm),
            net_option_value=0.0,
            pos_risk=money(initial),
            is_limits_set=False,
            balance_money=money(amount),
        )

    # -- publishing ----------------------------------------------------------------------------

    def emit_money_views(
        self, p: Portfolio, now: int, events: list[AccountEvent], *, risks: bool = False
    ) -> None:
        """Publish the summary (and with ``risks`` the risks) of ``p`` as they are now."""
        p.last_mtm = now
        self.emit(events, p, "summaries", self._summary(p), now)
        if risks:
            self.emit(events, p, "risks", self._risk(p, now), now)
            if p.market == "FORTS":
                self.emit(events, p, "spectra_risks", self._spectra(p), now)

    def emit(
        self, events: list[AccountEvent], p: Portfolio, stream: str, payload: Model, now: int
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

    def flush(self) -> None:
        """Append the records not yet written to the JSONL file, if one is configured."""
        if not self._unwritten or self.ground_truth_path is None:
            self._unwritten.clear()
            return
        lines = b"".join(msgspec.json.encode(r) + b"\n" for r in self._unwritten)
        self._unwritten.clear()
        with open(self.ground_truth_path, "ab") as f:
            f.write(lines)


def _money_position(p: Portfolio) -> Position:
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
