"""The simulator accepts what real clients send (``tests/fixtures/alor/requests.json``).

Every frame AlorPy, ALOR's web terminal, the official SDK and ALOR's examples send goes to the
simulator over a real socket, as sent, but for what only a live account makes valid: the token,
the portfolio (``D…`` stock, ``7500…`` derivatives: the demo account's of that market), prices
moved into the instrument's price band, a stop order's end time moved to tomorrow, the id of an
order to change or cancel (one placed first) and a fresh guid per frame (``/cws`` deduplicates
by guid). A ``/ws`` frame must get status 200; a ``/cws`` command 200, or a 400 that is not
about the frame's shape (e.g. an iceberg larger than the order, which ALOR's example has).
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from alorws.protocol.commands import CommandFrameError, decode_command
from alorws.sim.app import Simulator

from .._fixtures import cases
from .conftest import Connect, new_guid
from .wsclient import RawWS


CASES = cases("requests")
SBER = {"symbol": "SBER", "exchange": "MOEX", "instrumentGroup": "TQBR"}


def live_frame(sim: Simulator, frame: dict[str, Any], order_id: str | None) -> dict[str, Any]:
    """``frame`` with the token, portfolio, prices, times, order id and guid of this simulator."""
    out = copy.deepcopy(frame)
    stock, _, futures = sim.demo.portfolios
    out["guid"] = new_guid("real")
    if "token" in out:
        out["token"] = sim.access_token()
    holder = out.get("user") if isinstance(out.get("user"), dict) else out
    if isinstance(holder.get("portfolio"), str):
        holder["portfolio"] = futures if holder["portfolio"].startswith("7500") else stock
    symbol = (out.get("instrument") or {}).get("symbol") or out.get("code")
    if symbol:
        info = sim.market.instruments[symbol]
        for key in ("price", "triggerPrice"):
            if isinstance(out.get(key), int | float):
                out[key] = min(max(out[key], info.price_min), info.price_max)
    if out.get("stopEndUnixTime"):
        out["stopEndUnixTime"] = int(time.time()) + 86_400
    if "orderId" in out and order_id is not None:
        out["orderId"] = order_id
    return out


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_real_client_frame_is_accepted(
    sim: Simulator, connect: Connect, case: dict[str, Any]
) -> None:
    """The frame, as the real client sends it, is accepted."""
    frame: dict[str, Any] = case["frame"]
    ws = await connect(case["path"])
    if case["path"] == "/ws":
        sent = live_frame(sim, frame, None)
        reply = await ws.request(sent)
        assert reply["httpCode"] == 200, (case["name"], sent, reply)
        return
    if str(frame.get("opcode")).lower() != "authorize":
        await authorize(sim, ws)
    order_id = None
    if "orderId" in frame:  # a working order to update or cancel
        low = sim.market.instruments["SBER"].price_min
        placed = await ws.request(
            {
                "opcode": "create:limit",
                "guid": new_guid("place"),
                "side": "buy",
                "quantity": 1,
                "price": low,
                "instrument": SBER,
                "user": {"portfolio": sim.demo.portfolios[0]},
            }
        )
        assert placed["httpCode"] == 200, placed
        order_id = placed["orderNumber"]
    sent = live_frame(sim, frame, order_id)
    reply = await ws.request(sent)
    if reply["httpCode"] == 400:
        try:
            decode_command(json.dumps(sent))
        except CommandFrameError as exc:
            pytest.fail(f"{case['name']}: the frame's shape is refused: {exc.reason}")
    else:
        assert reply["httpCode"] == 200, (case["name"], sent, reply)


async def authorize(sim: Simulator, ws: RawWS) -> None:
    auth = {"opcode": "authorize", "guid": new_guid("auth"), "token": sim.access_token()}
    assert (await ws.request(auth))["httpCode"] == 200


async def test_all_trades_depth_0_sends_no_history_then_live_trades(
    sim: Simulator, ws: RawWS, token: str
) -> None:
    """``depth: 0`` (AlorPy's default) replays nothing (docs/protocol.md §4.4); live trades
    follow."""
    (case,) = [c for c in CASES if c["name"] == "alltrades-alorpy"]
    req = {**case["frame"], "token": token, "guid": new_guid("tape")}
    assert req["depth"] == 0
    assert (await ws.request(req))["httpCode"] == 200
    assert sim.burst("SBER", 40) > 0
    (first,) = await ws.data(req["guid"])
    assert first["existing"] is False
