"""AlorClient as one object: streams, orders over /cws and HTTP from the caller's loop."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from alorws.client import AlorClient
from alorws.errors import InvalidArgumentError, InvalidState, OrderRejected
from alorws.protocol import OrderStatus
from alorws.sim.app import Simulator

from .conftest import FAST


async def test_place_watch_and_cancel_an_order(client: AlorClient, sim: Simulator) -> None:
    """A resting limit order shows up on the orders stream and is cancelled."""
    portfolio = client.portfolios[0]
    quote = await client.http.quotes(["MOEX:SBER"])
    assert quote[0].bid is not None
    price = round(quote[0].bid * 0.9, 2)
    async with client.orders(portfolio, skip_history=True) as orders:
        ack = await client.trading.place_limit(portfolio, "SBER", "buy", 1, price, comment="facade")
        assert ack.order_number and ack.http_code == 200
        async with asyncio.timeout(10):
            async for order in orders:
                if order.id == ack.order_number:
                    assert order.status is OrderStatus.WORKING and order.price == price
                    break
        cancel = await client.trading.cancel(ack.order_number, portfolio, kind="limit")
        assert cancel.order_number == ack.order_number
        async with asyncio.timeout(10):
            async for order in orders:
                if order.id == ack.order_number and order.status is OrderStatus.CANCELED:
                    break
    with pytest.raises(OrderRejected) as info:
        await client.trading.cancel("999999999", portfolio, kind="limit")
    assert info.value.http_code == 400
    with pytest.raises(InvalidArgumentError) as bad:
        await client.trading.place_limit(portfolio, "SBER", "buy", 0, price)
    assert bad.value.field == "quantity"


async def test_http_through_the_client(client: AlorClient) -> None:
    """Reference data, snapshots and paged history through client.http."""
    sec = await client.http.security("SBER")
    assert sec.symbol == "SBER" and sec.lot_size
    book = await client.http.order_book("SBER", depth=5)
    assert 0 < len(book.bids) <= 5
    now = int(time.time())
    bars = await client.http.history("SBER", 60, now - 6 * 3600, now)
    times = [b.time for b in bars]
    assert times == sorted(set(times)) and len(times) > 10
    positions = await client.http.positions(client.portfolios[0])
    assert any(p.is_currency for p in positions)


async def test_trading_and_http_need_an_open_client(sim: Simulator) -> None:
    """Using orders or HTTP before start raises InvalidState with a hint."""
    c = AlorClient(sim.demo_refresh_token, base_url=sim.url)
    with pytest.raises(InvalidState, match="async with"):
        _ = c.trading
    with pytest.raises(InvalidState):
        _ = c.http


async def test_no_token_in_logs_reprs_or_errors(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A session with drops, orders and HTTP logs no refresh or access token anywhere."""
    caplog.set_level(logging.DEBUG)
    refresh = sim.demo_refresh_token
    async with AlorClient(refresh, base_url=sim.url, backoff=FAST) as client:
        access = client._tokens.current if client._tokens else None
        assert access
        async with client.quotes("SBER") as q:
            await anext(aiter(q))
            sim.faults.drop(code=1006)
            sim.faults.expire_tokens()
            await client.http.security("GAZP")
            portfolio = client.portfolios[0]
            await client.trading.place_market(portfolio, "SBER", "buy", 1)
            texts = [
                repr(client),
                repr(q),
                repr(client.trading),
                repr(client.http),
                str(client.stats()),
            ]
        try:
            await client.trading.cancel("1", portfolio)
        except OrderRejected as exc:
            texts.append(str(exc))
    texts += [r.getMessage() for r in caplog.records]
    for secret in (refresh, access):
        assert not any(secret in t for t in texts)


async def test_taps_see_every_frame_and_guids_are_described(client: AlorClient) -> None:
    """A tap receives each connection's frames in order, a list per read with one time, and
    a removed tap nothing more; describe() names the guid."""
    seen: list[tuple[int, int, list[bytes]]] = []
    remove = client.add_tap(lambda ns, lane, frames: seen.append((ns, lane, frames)))
    async with client.quotes("SBER", policy="queue") as q:
        quotes = [await anext(aiter(q)) for _ in range(3)]
        info = client.describe(q.guid or "")
        assert info is not None and info["opcode"] == "QuotesSubscribe"
        assert info["params"]["code"] == "SBER" and info["connection"] == q._lane
        remove()
        await client._runtime.call(asyncio.sleep, 0)  # the removal is done in the I/O loop
        frames = [f for _, _, batch in seen for f in batch]
        assert seen and all(lane == q._lane and ns > 0 and batch for ns, lane, batch in seen)
        assert [ns for ns, _, _ in seen] == sorted(ns for ns, _, _ in seen)
        # The reply first, then the data frames, in the order the stream delivered them.
        assert b"requestGuid" in frames[0]
        mine = [f for f in frames if q.guid and q.guid.encode() in f and b'"data"' in f]
        assert len(mine) >= len(quotes)
        stop = len(seen)
        await anext(aiter(q))
    assert len(seen) == stop  # removed: nothing more
    assert client.describe("nope") is None


async def test_prices_off_the_grid_are_refused_before_sending(client: AlorClient) -> None:
    """With reference data known, a price off the instrument's step raises naming the field."""
    portfolio = client.portfolios[0]
    step = (await client.http.security("SBER")).min_step
    assert step
    with pytest.raises(InvalidArgumentError) as info:
        await client.trading.place_limit(portfolio, "SBER", "buy", 1, 100.0 + step / 3)
    assert info.value.field == "price" and "step" in str(info.value)
    assert client.trading.stats()["sent"] == 0  # refused before anything went out
    with pytest.raises(InvalidArgumentError) as info:
        await client.trading.place_stop(portfolio, "SBER", "sell", 1, 100.0 + step / 3, "less")
    assert info.value.field == "trigger_price"
