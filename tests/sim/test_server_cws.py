"""Orders over /cws (docs/protocol.md §6) and HTTP commandapi (docs/protocol.md §8.5), account
streams, and the ground-truth log."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from alorws.sim.app import Simulator
from alorws.sim.web import RecentReplies

from .._sim import DAY
from .conftest import Connect, new_guid, request
from .test_server_ws import FORMATS, check_shape
from .wsclient import RawWS


SBER = {"symbol": "SBER", "exchange": "MOEX", "instrumentGroup": "TQBR"}


def order(opcode: str, portfolio: str, **fields: Any) -> dict[str, Any]:
    """A /cws command frame as a dict."""
    return {"opcode": opcode, "guid": new_guid("cmd"), "user": {"portfolio": portfolio}, **fields}


def market_buy(portfolio: str, lots: int = 2) -> dict[str, Any]:
    return order("create:market", portfolio, side="buy", quantity=lots, instrument=SBER)


def far_limit(portfolio: str, price: float = 280.0) -> dict[str, Any]:
    return order("create:limit", portfolio, side="buy", quantity=1, price=price, instrument=SBER)


async def test_command_before_authorize_is_401_and_connection_stays(sim: Simulator) -> None:
    """A command before `authorize` gets 401 (docs/protocol.md §12.11); the connection stays
    open."""
    async with await RawWS.connect(sim.cws_url) as cws:
        reply = await cws.request(market_buy(sim.demo.portfolios[0]))
        assert reply["httpCode"] == 401
        auth = {"opcode": "authorize", "guid": new_guid(), "token": sim.access_token()}
        assert (await cws.request(auth))["httpCode"] == 200


async def test_failed_authorize_closes_1008(sim: Simulator) -> None:
    """A failed `authorize` gets 401 and the server closes the connection with 1008
    (docs/protocol.md §12.11)."""
    async with await RawWS.connect(sim.cws_url) as cws:
        reply = await cws.request({"opcode": "authorize", "guid": new_guid(), "token": "bad"})
        assert reply["httpCode"] == 401
        assert await cws.wait_closed() == 1008


async def test_create_update_delete(sim: Simulator, cws: RawWS) -> None:
    """Create, update (a new id) and delete, each with `orderNumber` (docs/protocol.md §5.3)."""
    portfolio = sim.demo.portfolios[0]
    created = await cws.request(far_limit(portfolio))
    first = created["orderNumber"]
    assert created["httpCode"] == 200
    assert created["message"] == f"An order '{first}' has been created."
    updated = await cws.request(
        order(
            "update:limit",
            portfolio,
            orderId=first,
            side="buy",
            quantity=1,
            price=281.0,
            instrument=SBER,
        )
    )
    second = updated["orderNumber"]
    assert second != first
    assert updated["message"] == f"An order has been updated. New order Id is '{second}'."
    deleted = await cws.request(order("DELETE:LIMIT", portfolio, orderId=second, exchange="MOEX"))
    assert deleted["httpCode"] == 200 and deleted["orderNumber"] == second
    statuses = {o.id: o.status.value for o in sim.engine.orders(portfolio) if o.status}
    assert statuses == {first: "canceled", second: "canceled"}


async def test_rejections(sim: Simulator, cws: RawWS) -> None:
    """Invalid commands get 400 naming the field; other people's portfolios get 403."""
    portfolio = sim.demo.portfolios[0]
    zero = await cws.request({**market_buy(portfolio), "quantity": 0})
    assert zero["httpCode"] == 400 and "quantity" in zero["message"]
    assert "orderNumber" not in zero
    unknown = await cws.request({"opcode": "create:swap", "guid": new_guid()})
    assert unknown["httpCode"] == 400
    other = sim.add_account("other")
    foreign = await cws.request(market_buy(other.portfolios[0]))
    assert foreign["httpCode"] == 403
    assert sim.engine.orders(other.portfolios[0]) == []


async def test_duplicate_guid_replays_first_reply(sim: Simulator, cws: RawWS) -> None:
    """A guid seen before (checkDuplicates on) is not executed again (docs/protocol.md §12.11)."""
    portfolio = sim.demo.portfolios[0]
    cmd = far_limit(portfolio)
    first = await cws.request(cmd)
    again = await cws.request(cmd)
    assert again == first
    assert len(sim.engine.orders(portfolio)) == 1
    unchecked = {**cmd, "checkDuplicates": False, "guid": new_guid()}
    await cws.request(unchecked)
    await cws.request(unchecked)
    assert len(sim.engine.orders(portfolio)) == 3


def test_recent_replies_last_for_the_window() -> None:
    """The memory behind duplicate guids and X-REQIDs: a reply is found, per account, for
    ``window`` seconds; past ``limit`` entries the expired ones are forgotten."""
    now = [0.0]
    seen: RecentReplies[bytes] = RecentReplies(lambda: now[0], window=10.0, limit=1)
    seen.put("alice", "g1", b"first")
    assert seen.get("alice", "g1") == b"first" and seen.get("bob", "g1") is None
    now[0] = 9.5
    seen.put("alice", "g2", b"second")
    assert seen.get("alice", "g1") == b"first"
    now[0] = 10.0
    assert seen.get("alice", "g1") is None and seen.get("alice", "g2") == b"second"
    seen.put("alice", "g3", b"third")  # over the limit: g1 (expired) is dropped
    assert len(seen._replies) == 2 and seen.get("alice", "g2") == b"second"


async def test_fill_moves_positions_consistently_with_ground_truth(
    sim: Simulator, cws: RawWS, ws: RawWS, token: str
) -> None:
    """A market fill publishes the order, the own trade and both positions in one step; the
    streams and the ground-truth log agree."""
    portfolio = sim.demo.portfolios[0]
    subs = {
        stream: request(opcode, token, portfolio=portfolio, skipHistory=True)
        for stream, opcode in (
            ("orders", "OrdersGetAndSubscribeV2"),
            ("trades", "TradesGetAndSubscribeV2"),
            ("positions", "PositionsGetAndSubscribeV2"),
        )
    }
    for req in subs.values():
        assert (await ws.request(req))["httpCode"] == 200
    reply = await cws.request(market_buy(portfolio, lots=3))
    number = reply["orderNumber"]
    (trade,) = await ws.data(subs["trades"]["guid"])
    assert trade["orderno"] == number and trade["qtyBatch"] == 3
    positions: dict[str, dict[str, Any]] = {}
    while "SBER" not in positions or "RUB" not in positions:
        (pos,) = await ws.data(subs["positions"]["guid"])
        positions[pos["symbol"]] = pos
    assert positions["SBER"]["qtyBatch"] == 3
    assert positions["SBER"]["qtyUnits"] == 3 * 10
    truth = sim.engine.ground_truth
    streams = [(r["stream"], r["portfolio"]) for r in truth]
    assert ("orders", portfolio) in streams and ("trades", portfolio) in streams
    last_sber = [r for r in truth if r["stream"] == "positions" and r["data"]["symbol"] == "SBER"]
    assert last_sber[-1]["data"]["qty_batch"] == positions["SBER"]["qtyBatch"]
    trades = [r["data"] for r in truth if r["stream"] == "trades"]
    assert sum(t["qty_batch"] for t in trades) == 3
    money = [r for r in truth if r["stream"] == "positions" and r["data"]["symbol"] == "RUB"]
    assert money[-1]["data"]["qty_units"] == pytest.approx(positions["RUB"]["qtyUnits"])
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        logged = await (await http.get("/sim/ground-truth")).json()
    assert logged == truth


@pytest.mark.parametrize("fmt", FORMATS)
async def test_account_opcodes_round_trip(
    sim: Simulator, cws: RawWS, ws: RawWS, token: str, fmt: str
) -> None:
    """Each portfolio opcode replays its snapshot in the requested format's shape."""
    stock, _, forts = sim.demo.portfolios[:3]
    await cws.request(market_buy(stock))
    await cws.request(far_limit(stock))
    stop = order(
        "create:stoplimit",
        stock,
        side="sell",
        quantity=1,
        price=280.0,
        triggerPrice=281.0,
        condition="LessOrEqual",
        instrument=SBER,
    )
    assert (await cws.request(stop))["httpCode"] == 200
    for opcode, portfolio in (
        ("PositionsGetAndSubscribeV2", stock),
        ("SummariesGetAndSubscribeV2", stock),
        ("RisksGetAndSubscribe", stock),
        ("SpectraRisksGetAndSubscribe", forts),
        ("TradesGetAndSubscribeV2", stock),
        ("OrdersGetAndSubscribeV2", stock),
        ("StopOrdersGetAndSubscribeV2", stock),
    ):
        req = request(opcode, token, portfolio=portfolio, format=fmt)
        assert (await ws.request(req))["httpCode"] == 200
        (data,) = await ws.data(req["guid"])
        check_shape(opcode, fmt, data)


async def test_orders_replay_filters_by_status(
    sim: Simulator, cws: RawWS, ws: RawWS, token: str
) -> None:
    """`orderStatuses` filters the replay (docs/protocol.md §4.11); live updates are not
    filtered."""
    portfolio = sim.demo.portfolios[0]
    await cws.request(market_buy(portfolio))
    working = await cws.request(far_limit(portfolio))
    req = request("OrdersGetAndSubscribeV2", token, portfolio=portfolio, orderStatuses=["working"])
    await ws.request(req)
    (replayed,) = await ws.data(req["guid"])
    assert replayed["id"] == working["orderNumber"] and replayed["existing"] is True
    filled = await cws.request(market_buy(portfolio))
    live = await ws.data(req["guid"])
    while live[-1]["status"] != "filled":  # a new order may show up as working first
        live += await ws.data(req["guid"])
    assert {o["id"] for o in live} == {filled["orderNumber"]}
    assert not any(o["existing"] for o in live)


async def test_forbidden_portfolio_subscription(sim: Simulator, ws: RawWS, token: str) -> None:
    """A portfolio not in the token's claims cannot be subscribed to."""
    other = sim.add_account("other")
    req = request("PositionsGetAndSubscribeV2", token, portfolio=other.portfolios[0])
    assert (await ws.request(req))["httpCode"] == 403


async def test_http_commandapi_and_views(sim: Simulator, token: str, connect: Connect) -> None:
    """POST .../actions/limit with X-REQID (replayed id -> 400 + oldResponse), DELETE, and
    the /md/v2/Clients views of the same portfolio (docs/protocol.md §8.5)."""
    portfolio = sim.demo.portfolios[0]
    headers = {"Authorization": f"Bearer {token}", "X-REQID": f"{portfolio};1"}
    body = {
        "side": "buy",
        "quantity": 1,
        "price": 280.0,
        "instrument": SBER,
        "user": {"portfolio": portfolio},
    }
    base = "/commandapi/warptrans/TRADE/v2/client/orders"
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        resp = await http.post(f"{base}/actions/limit", json=body, headers=headers)
        created = await resp.json()
        assert resp.status == 200 and created["message"] == "success"
        number = created["orderNumber"]
        again = await http.post(f"{base}/actions/limit", json=body, headers=headers)
        replay = await again.json()
        assert again.status == 400 and replay["oldResponse"]["body"] == created
        missing = await http.post(
            f"{base}/actions/limit", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert missing.status == 400
        auth = {"Authorization": f"Bearer {token}"}
        views = f"/md/v2/Clients/MOEX/{portfolio}"
        orders = await (await http.get(f"{views}/orders", headers=auth)).json()
        assert [o["id"] for o in orders] == [number]
        one = await (
            await http.get(f"{views}/orders/{number}", params={"format": "Slim"}, headers=auth)
        ).json()
        assert one["id"] == number and one["st"] == "working"
        for view in ("summary", "positions", "trades", "stoporders", "risk"):
            assert (await http.get(f"{views}/{view}", headers=auth)).status == 200
        forts = f"/md/v2/Clients/MOEX/{sim.demo.portfolios[2]}/fortsrisk"
        assert (await http.get(forts, headers=auth)).status == 200
        assert (await http.get(f"{views}/summary")).status == 401
        deleted = await http.delete(
            f"{base}/{number}", params={"portfolio": portfolio, "exchange": "MOEX"}, headers=auth
        )
        assert deleted.status == 200 and await deleted.json() == "success"
        statuses = [o.status for o in sim.engine.orders(portfolio)]
        assert [s.value for s in statuses if s] == ["canceled"]
        other = sim.add_account("other")
        stranger = f"/md/v2/Clients/MOEX/{other.portfolios[0]}/summary"
        assert (await http.get(stranger, headers=auth)).status == 403


async def test_ground_truth_jsonl(tmp_path: Any) -> None:
    """With a path, the ground-truth log is also appended there as JSONL."""
    path = tmp_path / "truth.jsonl"
    async with Simulator(
        port=0, day_order_lifetime=DAY, history_days=1, ground_truth_path=str(path)
    ) as sim:
        async with await RawWS.connect(sim.cws_url) as cws:
            auth = {"opcode": "authorize", "guid": new_guid(), "token": sim.access_token()}
            await cws.request(auth)
            assert (await cws.request(market_buy(sim.demo.portfolios[0])))["httpCode"] == 200
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert lines == sim.engine.ground_truth and lines
