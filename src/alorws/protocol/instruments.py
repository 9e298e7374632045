"""Instruments as a trader counts them: money, lots, the price grid (sans-I/O, Decimal-exact).

An :class:`Instrument` is built from the ``/md/v2/Securities`` answer
(:class:`~alorws.protocol.http_models.Security`, docs/protocol.md §8.6) with
:meth:`Instrument.from_security`. Mind ALOR's two steps: ``minstep`` is the minimum price
increment (:attr:`Instrument.price_step` here) and ``pricestep`` the money value of one such
increment (:attr:`Instrument.step_price`).

How a price becomes money, per instrument type:

* **stock, currency, other**: ``price × units``;
* **bond**: the price is percent of the face value: ``price / 100 × face_value × units``, plus
  the accrued interest (НКД) per bond when it is known and asked for (buyers pay it);
* **future, option**: the price is in points: ``price / price_step × step_price × units``.

Order quantities on ALOR are **lots** (``lot_size`` units each); :meth:`Instrument.to_money`
and :meth:`Instrument.from_money` take lots, :meth:`Instrument.lots_to_units` and
:meth:`Instrument.units_to_lots` convert. Every result is a :class:`~decimal.Decimal`; floats
are read through their shortest repr (``0.1`` is ``Decimal("0.1")``), so rounding to the step
is exact.
"""

from __future__ import annotations

import enum
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Final

import msgspec

from ..errors import ConfigurationError, InvalidArgumentError
from .http_models import Security
from .jwt import PortfolioKind, portfolio_kind


__all__ = [
    "Instrument",
    "InstrumentType",
    "Rounding",
    "choose_portfolio",
    "portfolio_kind_for",
    "to_decimal",
]


class InstrumentType(enum.StrEnum):
    """What an instrument is, as far as money is concerned."""

    STOCK = "stock"
    BOND = "bond"
    FUTURE = "future"
    OPTION = "option"
    CURRENCY = "currency"
    OTHER = "other"


class Rounding(enum.StrEnum):
    """Where an off-grid price goes: ``down`` (floor), ``up`` (ceiling) or ``nearest`` (half
    to even)."""

    DOWN = "down"
    UP = "up"
    NEAREST = "nearest"


_MODES: Final = {
    Rounding.DOWN: ROUND_FLOOR,
    Rounding.UP: ROUND_CEILING,
    Rounding.NEAREST: ROUND_HALF_EVEN,
}
_HUNDRED: Final = Decimal(100)
#: The most digits after the point a price may have (``roundTo`` beyond it is ignored).
_MAX_DECIMALS: Final = 18

Number = int | float | Decimal | str


def to_decimal(field: str, value: object) -> Decimal:
    """``value`` (int, float, Decimal or numeric str) as a finite Decimal; a float through its
    shortest repr. Anything else raises :class:`~alorws.errors.InvalidArgumentError`."""
    if isinstance(value, bool):
        raise InvalidArgumentError(field, f"must be a number, got {value!r}")
    try:
        if isinstance(value, float):
            out = Decimal(repr(value))
        elif isinstance(value, int | Decimal | str):
            out = Decimal(value)
        else:
            raise InvalidArgumentError(field, f"must be a number, got {type(value).__name__}")
    except InvalidOperation:
        raise InvalidArgumentError(field, f"must be a number, got {value!r}") from None
    if not out.is_finite():
        raise InvalidArgumentError(field, f"must be finite, got {value!r}")
    return out


def _positive(field: str, value: object) -> Decimal:
    out = to_decimal(field, value)
    if out <= 0:
        raise InvalidArgumentError(field, f"must be > 0, got {value!r}")
    return out


def _type_of(security: Security) -> InstrumentType:
    """The instrument type from the market and the CFI code (ISO 10962's first letter)."""
    cfi = (security.cfi_code or "").upper()
    market = (security.market or "").upper()
    if cfi.startswith("O"):
        return InstrumentType.OPTION
    if market == "FORTS" or cfi.startswith("F"):
        return InstrumentType.FUTURE
    if cfi.startswith("D"):
        return InstrumentType.BOND
    if market == "CURR" or cfi.startswith("MRC"):
        return InstrumentType.CURRENCY
    if cfi.startswith("E") or market in ("FOND", "SPBX"):
        return InstrumentType.STOCK
    return InstrumentType.OTHER


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """One instrument's trading arithmetic (see the module docstring).

    Attributes:
        symbol, exchange, board: where it trades (``board`` is ALOR's ``instrumentGroup``).
        type: :class:`InstrumentType`.
        lot_size: units in one lot (order quantities are lots).
        price_step: the minimum price increment (``minstep``).
        step_price: the money value of one ``price_step`` (``pricestep``), in ``currency``.
        face_value: a bond's face value (1 for most other instruments).
        currency: the currency of the price.
        decimals: digits after the point of a price (Heavy ``roundTo``, else from the step).
        accrued_interest: a bond's accrued interest per bond (НКД), when known.
        short_name, isin, market, description, cancellation: reference data as sent.
    """

    symbol: str
    exchange: str
    board: str | None
    type: InstrumentType
    lot_size: int
    price_step: Decimal
    step_price: Decimal
    face_value: Decimal
    currency: str
    decimals: int
    accrued_interest: Decimal | None = None
    short_name: str | None = None
    isin: str | None = None
    market: str | None = None
    description: str | None = None
    cancellation: str | None = None

    @classmethod
    def from_security(
        cls, security: Security, *, accrued_interest: float | Decimal | None = None
    ) -> Instrument:
        """Build from a ``/md/v2/Securities`` answer; ``accrued_interest`` (from a quote) for
        bonds. Raises :class:`~alorws.errors.InvalidArgumentError` when the answer lacks a
        positive price step or lot size (the arithmetic would be meaningless)."""
        step = _positive(f"{security.symbol}.min_step", security.min_step)
        kind = _type_of(security)
        step_price = (
            _positive(f"{security.symbol}.price_step", security.price_step)
            if security.price_step
            else step
        )
        lot = security.lot_size
        if lot is None or not math.isfinite(lot) or lot <= 0 or lot != int(lot):
            raise InvalidArgumentError(
                f"{security.symbol}.lot_size", f"must be a positive integer, got {lot!r}"
            )
        face = (
            _positive(f"{security.symbol}.face_value", security.face_value)
            if security.face_value
            else Decimal(1)
        )
        round_to = security.round_to
        # roundTo is display precision only: a value no price can have falls back to the step.
        if round_to is not None and 0 <= round_to <= _MAX_DECIMALS and round_to == int(round_to):
            decimals = int(round_to)
        else:
            exponent = step.normalize().as_tuple().exponent
            decimals = max(0, -exponent) if isinstance(exponent, int) else 0
        accrued = None
        if accrued_interest is not None and kind is InstrumentType.BOND:
            accrued = to_decimal("accrued_interest", accrued_interest)
        return cls(
            symbol=security.symbol,
            exchange=security.exchange or "MOEX",
            board=security.board or security.primary_board,
            type=kind,
            lot_size=int(lot),
            price_step=step,
            step_price=step_price,
            face_value=face,
            currency=security.currency or "RUB",
            decimals=decimals,
            accrued_interest=accrued,
            short_name=security.short_name,
            isin=security.isin,
            market=security.market,
            description=security.description,
            cancellation=security.cancellation,
        )

    @property
    def ticker(self) -> str:
        """``EXCHANGE:SYMBOL``."""
        return f"{self.exchange}:{self.symbol}"

    # -- the price grid ------------------------------------------------------------------------

    def round_price(self, price: Number, rounding: Rounding | str = Rounding.NEAREST) -> Decimal:
        """``price`` moved onto the price grid (a multiple of :attr:`price_step`), exactly.

        ``rounding``: ``"down"``, ``"up"`` or ``"nearest"`` (half to even). A buyer who must
        not pay more rounds down, a seller up."""
        mode = _MODES[_rounding(rounding)]
        value = to_decimal("price", price)
        try:
            ticks = (value / self.price_step).to_integral_value(rounding=mode)
            return (ticks * self.price_step).quantize(Decimal(1).scaleb(-self.decimals))
        except InvalidOperation:  # more digits than Decimal's context holds
            raise InvalidArgumentError(
                "price", f"{price!r} has too many digits for {self.ticker}'s price grid"
            ) from None

    def on_grid(self, price: Number) -> bool:
        """Whether ``price`` is exactly a multiple of :attr:`price_step`."""
        return to_decimal("price", price) % self.price_step == 0

    # -- lots and units -----------------------------------------------------------------------

    def lots_to_units(self, lots: int) -> int:
        """Units (shares, bonds, contracts, currency units) in ``lots`` lots."""
        return _whole("lots", lots) * self.lot_size

    def units_to_lots(self, units: int, rounding: Rounding | str = Rounding.DOWN) -> int:
        """Lots holding ``units``; a remainder is rounded ``down`` (default), ``up`` or to the
        ``nearest`` lot."""
        mode = _MODES[_rounding(rounding)]
        count = Decimal(_whole("units", units)) / self.lot_size
        return int(count.to_integral_value(rounding=mode))

    # -- money --------------------------------------------------------------------------------

    def unit_value(self, price: Number) -> Decimal:
        """The money value of one unit at ``price``, accrued interest not included."""
        value = to_decimal("price", price)
        if self.type is InstrumentType.BOND:
            return value / _HUNDRED * self.face_value
        if self.type in (InstrumentType.FUTURE, InstrumentType.OPTION):
            return value / self.price_step * self.step_price
        return value

    def to_money(self, price: Number, lots: int = 1, *, accrued: bool = True) -> Decimal:
        """The money value of ``lots`` lots at ``price`` (in :attr:`currency`).

        Bonds add the accrued interest per bond when it is known and ``accrued`` is true (the
        amount a buyer pays)."""
        units = self.lots_to_units(lots)
        money = self.unit_value(price) * units
        if accrued and self.type is InstrumentType.BOND and self.accrued_interest is not None:
            money += self.accrued_interest * units
        return money

    def from_money(
        self,
        money: Number,
        lots: int = 1,
        *,
        accrued: bool = True,
        rounding: Rounding | str | None = None,
    ) -> Decimal:
        """The price at which ``lots`` lots are worth ``money``: the inverse of
        :meth:`to_money`. With ``rounding`` the price is put on the grid
        (:meth:`round_price`)."""
        amount = to_decimal("money", money)
        units = self.lots_to_units(lots)
        if units == 0:
            raise InvalidArgumentError("lots", "must be > 0 to derive a price")
        per_unit = amount / units
        if accrued and self.type is InstrumentType.BOND and self.accrued_interest is not None:
            per_unit -= self.accrued_interest
        if self.type is InstrumentType.BOND:
            price = per_unit * _HUNDRED / self.face_value
        elif self.type in (InstrumentType.FUTURE, InstrumentType.OPTION):
            price = per_unit / self.step_price * self.price_step
        else:
            price = per_unit
        return price if rounding is None else self.round_price(price, rounding)

    def lots_for(self, money: Number, price: Number) -> int:
        """How many whole lots ``money`` buys at ``price`` (accrued interest included)."""
        one = self.to_money(price, 1)
        if one <= 0:
            raise InvalidArgumentError("price", f"a lot must cost more than 0, got {one}")
        amount = to_decimal("money", money)
        if amount < 0:
            raise InvalidArgumentError("money", f"must be >= 0, got {money!r}")
        return int((amount / one).to_integral_value(rounding=ROUND_FLOOR))


def _rounding(value: Rounding | str) -> Rounding:
    try:
        return Rounding(value)
    except ValueError:
        raise InvalidArgumentError(
            "rounding", f"{value!r} is not one of {', '.join(r.value for r in Rounding)}"
        ) from None


def _whole(field: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise InvalidArgumentError(field, f"must be a whole number >= 0, got {value!r}")
    return value


def portfolio_kind_for(inst: Instrument) -> PortfolioKind:
    """The kind of portfolio that trades ``inst`` (docs/protocol.md §2.4): ``derivatives`` for
    FORTS, ``fx`` for the currency market, ``stock`` for the rest (stocks and bonds, MOEX and
    SPB Exchange)."""
    market = (inst.market or "").upper()
    if market == "FORTS" or inst.type in (InstrumentType.FUTURE, InstrumentType.OPTION):
        return "derivatives"
    if market == "CURR" or inst.type is InstrumentType.CURRENCY:
        return "fx"
    return "stock"


def choose_portfolio(
    portfolios: tuple[str, ...] | list[str], inst: Instrument, *, agreement: int = 0
) -> str:
    """The portfolio of ``portfolios`` (a token's ``portfolios`` claim, in claim order) that
    trades ``inst``: the ``agreement``-th one of the instrument's market (0: the first), else a
    unified (``E…``) portfolio, which trades every market.

    Raises :class:`~alorws.errors.ConfigurationError` naming the market and the portfolios the
    token carries when none fits."""
    want = portfolio_kind_for(inst)
    if type(agreement) is not int or agreement < 0:
        raise InvalidArgumentError("agreement", f"must be an int >= 0, got {agreement!r}")
    for kind in (want, "unified"):
        fits = [p for p in portfolios if portfolio_kind(p) == kind]
        if len(fits) > agreement:
            return fits[agreement]
    have = ", ".join(f"{p} ({portfolio_kind(p)})" for p in portfolios) or "none"
    raise ConfigurationError(
        f"no {want} portfolio (number {agreement}) for {inst.ticker} in the token's portfolios: "
        f"{have}; use a refresh token of an account with a {want} portfolio"
    )
