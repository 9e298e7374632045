"""client.instruments and client.portfolio_for against the simulator over loopback."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from alorws.client import AlorClient
from alorws.errors import ConfigurationError, UnknownInstrument
from alorws.protocol.instruments import InstrumentType
from alorws.sim.app import Simulator

from .conftest import FAST


async def test_lookup_by_ticker_exchange_isin_and_futures_codes(client: AlorClient) -> None:
    """SBER, MOEX:SBER and its ISIN are one cached instrument; a future is found by either of its
    codes; a bond carries its accrued interest from the quote."""
    cat = client.instruments
    sber = await cat.get("SBER")
    assert (sber.board, sber.lot_size, sber.price_step, sber.type) == (
        "TQBR",
        10,
        Decimal("0.01"),
        InstrumentType.STOCK,
    )
    assert await cat.get("moex:sber") is sber
    assert await cat.get("RU0009029540") is sber
    si = await cat.get("SiZ6")
    assert await cat.get("Si-12.26") is si
    assert (si.type, si.step_price, si.price_step) == (InstrumentType.FUTURE, 1, 1)
    ofz = await cat.get("MOEX:SU26238RMFS4")
    assert ofz.type is InstrumentType.BOND and ofz.face_value == 1000
    assert ofz.accrued_interest is not None and ofz.accrued_interest > 0
    assert ofz.to_money(98.5, 1) == Decimal("985.0") + ofz.accrued_interest
    usd = await cat.get("USD000UTSTOM")
    assert (usd.type, usd.lot_size, usd.decimals) == (InstrumentType.CURRENCY, 1000, 4)
    assert {i.symbol for i in cat.cached()} == {
        "SBER",
        "SiZ6",
        "SU26238RMFS4",
        "USD000UTSTOM",
    }


async def test_concurrent_first_lookups_share_one_fetch(client: AlorClient) -> None:
    """Ten concurrent lookups of a new key return the same object."""
    got = await asyncio.gather(*(client.instruments.get("GAZP") for _ in range(10)))
    assert all(g is got[0] for g in got)


async def test_unknown_instrument_says_what_was_looked_up(client: AlorClient) -> None:
    """An unknown ticker raises UnknownInstrument naming it and how to search."""
    with pytest.raises(UnknownInstrument) as info:
        await client.instruments.get("MOEX:NOSUCH")
    text = str(info.value)
    assert "NOSUCH" in text and "securities(query=" in text and info.value.query == "MOEX:NOSUCH"
    with pytest.raises(UnknownInstrument):
        await client.instruments.get("SPBX:SBER")
    assert isinstance(info.value, LookupError)


async def test_portfolio_for_picks_the_market(sim: Simulator, client: AlorClient) -> None:
    """The demo token's D…/G…/7500… portfolios serve stocks and bonds, currency, futures."""
    demo = sim.demo.portfolios
    stock, fx, forts = demo
    assert await client.portfolio_for("SBER") == stock
    assert await client.portfolio_for("SU26238RMFS4") == stock
    assert await client.portfolio_for("USD000UTSTOM") == fx
    assert await client.portfolio_for("SiZ6") == forts
    assert await client.portfolio_for("Si-12.26") == forts
    # ... and the simulator accepts an order there (it refuses a portfolio of another market).
    ack = await client.trading.place_market(await client.portfolio_for("SiZ6"), "SiZ6", "buy", 1)
    assert ack.order_number


async def test_two_accounts_in_one_process(sim: Simulator) -> None:
    """One client per refresh token; the second agreement's portfolios are picked by index."""
    other = sim.add_account("trader2", agreements=2)
    async with (
        AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as a,
        AlorClient(str(other.refresh_token), base_url=sim.url, backoff=FAST) as b,
    ):
        assert await a.portfolio_for("SiZ6") == sim.demo.portfolios[2]
        assert await b.portfolio_for("SiZ6") == other.portfolios[2]
        assert await b.portfolio_for("SiZ6", agreement=1) == other.portfolios[5]
        with pytest.raises(ConfigurationError, match="no derivatives portfolio"):
            await a.portfolio_for("SiZ6", agreement=1)
