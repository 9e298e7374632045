"""Instrument arithmetic (sans-I/O): types from real Securities shapes, money, lots, the grid."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from alorws.errors import ConfigurationError, InvalidArgumentError
from alorws.protocol._model import format_class
from alorws.protocol.enums import Format
from alorws.protocol.http_models import Security
from alorws.protocol.instruments import (
    Instrument,
    InstrumentType,
    Rounding,
    choose_portfolio,
    portfolio_kind_for,
)

from .._fixtures import cases


def _security(**fields: object) -> Security:
    base: dict[str, object] = {"symbol": "X", "exchange": "MOEX", "lot_size": 1, "min_step": 0.01}
    base.update(fields)
    return msgspec.convert(base, Security)


SBER = Instrument.from_security(
    _security(
        symbol="SBER", market="FOND", cfi_code="ESVUFR", lot_size=10, min_step=0.01,
        price_step=0.01, face_value=3, board="TQBR", isin="RU0009029540",
    )
)  # fmt: skip
OFZ = Instrument.from_security(
    _security(
        symbol="SU26238RMFS4", market="FOND", cfi_code="DBFTFB", lot_size=1, min_step=0.001,
        price_step=0.01, face_value=1000, board="TQOB", round_to=3,
    ),
    accrued_interest=3.89,
)  # fmt: skip
RTS = Instrument.from_security(
    _security(
        symbol="RIZ6", short_name="RTS-12.26", market="FORTS", cfi_code="FFXCSX", lot_size=1,
        min_step=10, price_step=15.7, face_value=1, board="RFUD",
    )
)  # fmt: skip
USD = Instrument.from_security(
    _security(
        symbol="USD000UTSTOM", market="CURR", cfi_code="MRCXXX", lot_size=1000, min_step=0.0025,
        price_step=0.0025, board="CETS",
    )
)  # fmt: skip


def test_real_securities_shapes_build_instruments() -> None:
    """Every real /md/v2/Securities case (all formats) builds a future with ALOR's two steps
    read the right way round: minstep is the price grid, pricestep its money value."""
    seen = 0
    for name in ("securities", "security"):
        for case in cases(f"http/{name}"):
            body = case["body"]
            items = body if isinstance(body, list) else [body]
            model = format_class(Security, Format(case["format"]))
            for item in items:
                sec = msgspec.convert(item, model)
                inst = Instrument.from_security(sec)
                seen += 1
                assert inst.price_step == Decimal(repr(sec.min_step))
                assert inst.step_price == Decimal(repr(sec.price_step))
                if sec.symbol == "CNY-6.25":
                    assert inst.type is InstrumentType.FUTURE
                    assert inst.decimals == 3
                    # 11.000 CNY/RUB is 11000 steps of 0.001, each worth 1 RUB.
                    assert inst.to_money(11.0) == Decimal("11000")
    assert seen >= 3


def test_types_and_decimals() -> None:
    """Types from market and CFI; decimals from roundTo, else from the step."""
    assert (SBER.type, SBER.decimals) == (InstrumentType.STOCK, 2)
    assert (OFZ.type, OFZ.decimals) == (InstrumentType.BOND, 3)
    assert (RTS.type, RTS.decimals) == (InstrumentType.FUTURE, 0)
    assert (USD.type, USD.decimals) == (InstrumentType.CURRENCY, 4)
    assert SBER.ticker == "MOEX:SBER"


def test_stock_money_both_ways() -> None:
    """A stock lot is lot_size shares at the price; from_money inverts it exactly."""
    assert SBER.to_money(312.41, 2) == Decimal("6248.20")
    assert SBER.from_money(Decimal("6248.20"), 2) == Decimal("312.41")
    assert SBER.lots_for(10_000, 312.41) == 3


def test_bond_money_is_percent_of_face_plus_accrued() -> None:
    """98.5 % of 1000 is 985 per bond; the buyer also pays the accrued interest."""
    assert OFZ.to_money(98.5, 10, accrued=False) == Decimal("9850.0")
    assert OFZ.to_money(98.5, 10) == Decimal("9850.0") + Decimal("38.90")
    assert OFZ.from_money(Decimal("9888.90"), 10) == Decimal("98.5")
    assert OFZ.from_money(9850, 10, accrued=False) == Decimal("98.5")
    no_accrued = msgspec.structs.replace(OFZ, accrued_interest=None)
    assert no_accrued.to_money(98.5, 1) == Decimal("985.0")


def test_future_money_is_points_times_step_price() -> None:
    """RTS at 110 000 points: 11 000 steps of 10, each worth 15.70 RUB."""
    assert RTS.to_money(110_000) == Decimal("172700")
    assert RTS.from_money(172_700) == Decimal("110000")
    assert RTS.from_money(172_705, rounding="down") == Decimal("110000")


def test_currency_lots_and_units() -> None:
    """One USD lot is 1000 dollars; units round to lots down, up or nearest."""
    assert USD.lots_to_units(3) == 3000
    assert USD.units_to_lots(2500) == 2
    assert USD.units_to_lots(2500, "up") == 3
    assert USD.units_to_lots(2600, Rounding.NEAREST) == 3
    assert USD.to_money(78.5025, 1) == Decimal("78502.5000")


@pytest.mark.parametrize(
    ("inst", "price", "mode", "want"),
    [
        (SBER, 312.418, "down", "312.41"),
        (SBER, 312.411, "up", "312.42"),
        (SBER, 312.415, "nearest", "312.42"),  # half to even: 31241.5 ticks -> 31242
        (USD, 78.5013, "nearest", "78.5025"),
        (USD, 78.5012, "nearest", "78.5000"),
        (RTS, 110_004, "down", "110000"),
        (RTS, 110_004, "up", "110010"),
        (OFZ, 98.5004, "nearest", "98.500"),
        (SBER, -0.004, "down", "-0.01"),  # negative prices exist on MOEX (some derivatives)
    ],
)
def test_round_price_is_decimal_exact(inst: Instrument, price: float, mode: str, want: str) -> None:
    """Rounding to the step lands exactly on the grid, with the instrument's decimals."""
    got = inst.round_price(price, mode)
    assert got == Decimal(want) and str(got) == want
    assert inst.on_grid(got)


def test_on_grid_has_no_float_noise() -> None:
    """0.1 + 0.2 style noise never makes a price look off the grid, nor on it."""
    assert SBER.on_grid(0.3) and SBER.on_grid("312.41")
    assert not SBER.on_grid(312.415)
    assert USD.on_grid(78.5025) and not USD.on_grid(78.501)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: SBER.round_price("abc"), "price"),
        (lambda: SBER.round_price(float("nan")), "price"),
        (lambda: SBER.round_price(1, "sideways"), "rounding"),
        (lambda: SBER.to_money(1, -1), "lots"),
        (lambda: SBER.to_money(True, 1), "price"),
        (lambda: SBER.from_money(1, 0), "lots"),
        (lambda: Instrument.from_security(_security(min_step=0)), "X.min_step"),
        (lambda: Instrument.from_security(_security(lot_size=None)), "X.lot_size"),
    ],
)
def test_bad_input_names_the_field(call: object, field: str) -> None:
    """Bad arguments raise InvalidArgumentError naming what to fix."""
    with pytest.raises(InvalidArgumentError) as info:
        call()  # type: ignore[operator]
    assert info.value.field == field


def test_portfolio_choice_per_market() -> None:
    """Stock D…, FX G…, FORTS 750…/751…; a unified E… portfolio fits any market; none: an error
    naming what the token holds."""
    claim = ("D00001", "G00001", "7500001", "D00002", "G00002", "7510002")
    assert [portfolio_kind_for(i) for i in (SBER, OFZ, USD, RTS)] == [
        "stock",
        "stock",
        "fx",
        "derivatives",
    ]
    assert choose_portfolio(claim, SBER) == "D00001"
    assert choose_portfolio(claim, OFZ, agreement=1) == "D00002"
    assert choose_portfolio(claim, USD) == "G00001"
    assert choose_portfolio(claim, RTS) == "7500001"
    assert choose_portfolio(claim, RTS, agreement=1) == "7510002"
    assert choose_portfolio(("E12345",), RTS) == "E12345"
    with pytest.raises(ConfigurationError, match=r"no derivatives portfolio.*D00001 \(stock\)"):
        choose_portfolio(("D00001",), RTS)
