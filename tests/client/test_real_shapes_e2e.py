"""Real ALOR shapes the old decoders refused, end to end: injected by the simulator into an
AlorClient subscription over a real socket, they reach the stream's consumer with the right
values and no bad payload; out-of-range values are counted as bad payloads and skipped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from alorws.client import AlorClient
from alorws.client.streams import Stream
from alorws.protocol import Format, Position, StopOrder, Trade
from alorws.sim.app import Simulator

from .._fixtures import cases
from ..protocol.test_real_shapes import check


def _case(file: str, name: str) -> dict[str, Any]:
    return next(c for c in cases(file) if c["name"] == name)


def _frame(case: dict[str, Any], guid: str) -> str:
    """The case's message as the server writes a data frame of subscription ``guid``."""
    data = case["frame"]["data"] if "frame" in case else case["payload"]
    return json.dumps({"data": data, "guid": guid}, separators=(",", ":"), ensure_ascii=False)


async def _until(stream: Stream[Any], match: Any) -> Any:
    """The first item of ``stream`` that ``match`` accepts (the simulator streams its own too)."""
    async with asyncio.timeout(10):
        while True:
            for item in await stream.get_batch(100):
                if match(item):
                    return item


async def _inject(sim: Simulator, stream: Stream[Any], case: dict[str, Any]) -> None:
    assert stream.guid is not None
    assert sim.faults.inject(_frame(case, stream.guid), kind="ws") >= 1


@pytest.mark.parametrize(
    "name", ["simple-cash-recorded", "heavy-cash-recorded-rekeyed"], ids=lambda n: n
)
async def test_money_position_reaches_positions_consumer(
    client: AlorClient, sim: Simulator, name: str
) -> None:
    """A RUB money position with fractional lots (28692.09) reaches ``client.positions()``."""
    case = _case("ws/positions", name)
    portfolio = client.portfolios[0]
    fmt = Format(case["format"])
    async with client.positions(portfolio, format=fmt) as positions:
        await _inject(sim, positions, case)
        pos = await _until(positions, lambda p: p.symbol == "RUB" and p.portfolio == "7502T0U")
        assert isinstance(pos, Position)
        check(pos, case["expect"])
        assert pos.qty_t0_batch == 28692.09 and isinstance(pos.qty_t0_batch, float)
        assert positions.stats()["bad_payloads"] == 0


@pytest.mark.parametrize("name", ["simple-fired", "slim-fired"], ids=lambda n: n)
async def test_fired_stop_order_reaches_stop_orders_consumer(
    client: AlorClient, sim: Simulator, name: str
) -> None:
    """A fired stop order whose exchange order id is a JSON number reaches
    ``client.stop_orders()`` with the id as text."""
    case = _case("ws/stoporders", name)
    portfolio = client.portfolios[0]
    fmt = Format(case["format"])
    async with client.stop_orders(portfolio, format=fmt) as stops:
        await _inject(sim, stops, case)
        stop = await _until(stops, lambda s: s.exchange_order_id == "425242362")
        assert isinstance(stop, StopOrder)
        check(stop, case["expect"])
        assert stop.id == "8939"
        assert stops.stats()["bad_payloads"] == 0


async def test_out_of_range_trade_is_a_bad_payload(client: AlorClient, sim: Simulator) -> None:
    """A tape trade of 2**63 lots is counted as a bad payload and skipped; the next trade of
    the same subscription arrives as usual."""
    async with client.all_trades("SBER", format=Format.SLIM, depth=0) as tape:
        assert tape.guid is not None
        bad = f'{{"data":{{"id":7,"q":{2**63},"px":1.5}},"guid":"{tape.guid}"}}'
        good = f'{{"data":{{"id":8,"q":3,"px":-1.5}},"guid":"{tape.guid}"}}'
        assert sim.faults.inject(bad, kind="ws") >= 1
        assert sim.faults.inject(good, kind="ws") >= 1
        trade = await _until(tape, lambda t: t.id in (7, 8))
        assert isinstance(trade, Trade) and (trade.id, trade.qty, trade.price) == (8, 3, -1.5)
        assert tape.stats()["bad_payloads"] == 1


async def test_depth_zero_and_a_board_on_account_streams(client: AlorClient) -> None:
    """``all_trades(depth=0)`` and ``positions(board=...)`` are sent and confirmed."""
    portfolio = client.portfolios[0]
    async with client.all_trades("SBER", depth=0) as tape:
        assert tape.request.depth == 0  # type: ignore[attr-defined]
    async with client.positions(portfolio, board="TQBR") as positions:
        assert positions.request.instrument_group == "TQBR"  # type: ignore[attr-defined]
        assert positions.is_open
