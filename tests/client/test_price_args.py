"""Prices no exchange can trade are refused before anything is sent, with an
InvalidArgumentError naming the field and the reason (never a bare OverflowError)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from alorws.client import AlorClient
from alorws.client.auth import TokenManager
from alorws.client.orders import OrderClient
from alorws.errors import InvalidArgumentError
from alorws.sim.app import Simulator


HUGE = 1e308  # finite, but beyond the server's decimal (7.9e28) and inf once divided by a step

CALLS: dict[str, tuple[str, Callable[[OrderClient, str], Awaitable[Any]]]] = {
    "place_limit": ("price", lambda oc, p: oc.place_limit(p, "SBER", "buy", 1, HUGE)),
    "place_stop": (
        "trigger_price",
        lambda oc, p: oc.place_stop(p, "SBER", "sell", 1, HUGE, "less"),
    ),
    "place_stop_limit price": (
        "price",
        lambda oc, p: oc.place_stop_limit(p, "SBER", "buy", 1, HUGE, 300.0, "more"),
    ),
    "place_stop_limit trigger": (
        "trigger_price",
        lambda oc, p: oc.place_stop_limit(p, "SBER", "buy", 1, 300.0, HUGE, "more"),
    ),
    "modify_limit": ("price", lambda oc, p: oc.modify_limit("1", p, "SBER", "buy", 1, HUGE)),
    "modify_stop": (
        "trigger_price",
        lambda oc, p: oc.modify_stop("1", p, "SBER", "sell", 1, HUGE, "less"),
    ),
    "int price": ("price", lambda oc, p: oc.place_limit(p, "SBER", "buy", 1, 10**400)),
}


@pytest.mark.parametrize(("field", "call"), CALLS.values(), ids=CALLS.keys())
async def test_huge_price_is_an_invalid_argument(
    client: AlorClient, sim: Simulator, field: str, call: Callable[[OrderClient, str], Any]
) -> None:
    """``place_limit(price=1e308)`` and the other order calls raise InvalidArgumentError
    naming the field, before the order client connects or sends anything."""
    trading = client.trading
    with pytest.raises(InvalidArgumentError) as info:
        await call(trading, client.portfolios[0])
    assert info.value.field == field
    assert "decimal range" in str(info.value) or "finite number" in str(info.value)
    assert trading.stats()["commands"] == 0 and trading.stats()["sent"] == 0


async def test_price_too_large_for_the_price_step(sim: Simulator, client: AlorClient) -> None:
    """A price whose count of price steps overflows a float names the price and the step."""

    async def tiny_step(symbol: str, exchange: str) -> float | None:
        return 1e-300

    async with (
        TokenManager(sim.demo_refresh_token, sim.url) as tokens,
        OrderClient(sim.cws_url, tokens, price_step=tiny_step) as orders,
    ):
        with pytest.raises(InvalidArgumentError) as info:
            await orders.place_limit(client.portfolios[0], "SBER", "buy", 1, 1e20)
        assert info.value.field == "price"
        assert "price step 1e-300" in str(info.value)
        assert orders.stats()["commands"] == 0


async def test_http_order_with_a_huge_price_is_refused(client: AlorClient) -> None:
    """The HTTP order endpoints check the body with the same rules."""
    body = {
        "side": "buy",
        "quantity": 1,
        "price": HUGE,
        "instrument": {"symbol": "SBER", "exchange": "MOEX"},
        "user": {"portfolio": client.portfolios[0]},
    }
    with pytest.raises(InvalidArgumentError) as info:
        await client.http.place_order("limit", body)
    assert info.value.field == "body" and "price" in str(info.value)
