"""/ws over real sockets: every opcode in every format, status replies, throttling
(docs/protocol.md §3-5 and docs/protocol.md §12)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from alorws.protocol._model import wire_keys
from alorws.protocol.codec import decode_payload, model_for
from alorws.protocol.enums import Format
from alorws.protocol.market import InstrumentPatch
from alorws.sim.app import Simulator
from alorws.sim.market import StatusChanged

from .._sim import DAY
from .conftest import new_guid, request
from .wsclient import RawWS


FORMATS = ["Simple", "Slim", "Heavy"]


def market_requests(token: str, fmt: str) -> dict[str, dict[str, Any]]:
    """One request of each market-data opcode (docs/protocol.md §4.1-4.5 and
    docs/protocol.md §4.13)."""
    now = int(time.time())
    common = {"format": fmt, "exchange": "MOEX"}
    return {
        "OrderBookGetAndSubscribe": request(
            "OrderBookGetAndSubscribe", token, code="SBER", depth=5, **common
        ),
        "QuotesSubscribe": request("QuotesSubscribe", token, code="GAZP", **common),
        "BarsGetAndSubscribe": request(
            "BarsGetAndSubscribe", token, code="LKOH", tf="60", **{"from": now - 600}, **common
        ),
        "AllTradesGetAndSubscribe": request(
            "AllTradesGetAndSubscribe", token, code="SBER", depth=3, **common
        ),
        "InstrumentsGetAndSubscribeV2": request(
            "InstrumentsGetAndSubscribeV2", token, code="SU26238RMFS4", **common
        ),
        "ClustersGetAndSubscribe": request(
            "ClustersGetAndSubscribe", token, code="SBER", tf="60", **{"from": now}, **common
        ),
    }


def check_shape(opcode: str, fmt: str, data: dict[str, Any]) -> None:
    """The payload decodes as the opcode's model and uses only that format's keys."""
    model = model_for(opcode)
    decode_payload(msgspec_bytes(data), model, fmt)
    allowed = set(wire_keys(model, Format(fmt)).values()) | SIMPLE_EXTRAS
    assert set(data) <= allowed, (opcode, fmt, set(data) - allowed)


SIMPLE_EXTRAS = {"snapshot", "timestamp", "accruedInt", "qty", "open", "filled", "orderno"}


def msgspec_bytes(data: dict[str, Any]) -> bytes:
    import json

    return json.dumps(data).encode()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_market_opcodes_round_trip(ws: RawWS, token: str, fmt: str) -> None:
    """Each market-data opcode answers 200 before data, in the requested format's shape."""
    for opcode, req in market_requests(token, fmt).items():
        reply = await ws.request(req)
        assert reply == {
            "requestGuid": req["guid"],
            "httpCode": 200,
            "message": "Handled successfully",
        }
        (data,) = await ws.data(req["guid"])
        check_shape(opcode, fmt, data)


async def test_order_book_snapshot_then_updates(ws: RawWS, token: str, sim: Simulator) -> None:
    """The first book is flagged existing, later ones are not (docs/protocol.md §12.5); bids
    descend, asks ascend."""
    req = request("OrderBookGetAndSubscribe", token, code="SBER", depth=7, format="Slim")
    await ws.request(req)
    first, second = await ws.data(req["guid"], 2)
    assert first["h"] is True and second["h"] is False
    for book in (first, second):
        bids = [level["p"] for level in book["b"]]
        asks = [level["p"] for level in book["a"]]
        assert len(bids) == len(asks) == 7
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
        assert bids[0] < asks[0]


async def test_bars_replay_history_then_forming_candle(ws: RawWS, token: str) -> None:
    """Candles from `from`, oldest first, then updates of the forming candle
    (docs/protocol.md §12.6)."""
    now = int(time.time())
    req = request(
        "BarsGetAndSubscribe", token, code="SBER", tf="60", format="Heavy", **{"from": now - 1800}
    )
    await ws.request(req)
    history = await ws.data(req["guid"], 25)
    times = [bar["time"] for bar in history]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[0] >= now - 1800 - 60
    live = await ws.data(req["guid"], 1)
    assert live[0]["time"] >= times[-1]


async def test_all_trades_depth_replays_existing(ws: RawWS, token: str, sim: Simulator) -> None:
    """`depth` replays the last N trades flagged existing, then live ones follow
    (docs/protocol.md §4.4)."""
    req = request("AllTradesGetAndSubscribe", token, code="SBER", depth=10)
    await ws.request(req)
    history = await ws.data(req["guid"], 10)
    assert all(t["existing"] for t in history)
    trades = sim.burst("SBER", 40)
    assert trades > 0
    (live,) = await ws.data(req["guid"], 1)
    assert live["existing"] is False


async def test_instrument_patches_are_partial(ws: RawWS, token: str, sim: Simulator) -> None:
    """The first message is complete, later ones carry only the changed fields
    (docs/protocol.md §4.5)."""
    req = request("InstrumentsGetAndSubscribeV2", token, code="SBER")
    await ws.request(req)
    (full,) = await ws.data(req["guid"])
    assert {"symbol", "tradingStatus", "priceMin", "priceMax"} <= set(full)
    patch = InstrumentPatch(symbol="SBER", trading_status=2, trading_status_info="перерыв")
    sim.server.hub.publish_market([StatusChanged(patch)])
    (partial,) = await ws.data(req["guid"])
    assert partial == {"symbol": "SBER", "tradingStatus": 2, "tradingStatusInfo": "перерыв"}


async def test_state_conflated_events_never() -> None:
    """The book is conflated per interval, every trade of the tape is delivered
    (docs/protocol.md §12.4)."""
    async with Simulator(port=0, day_order_lifetime=DAY, rate=0.0, history_days=1) as sim:
        async with await RawWS.connect(sim.ws_url) as ws:
            await _conflation(ws, sim.access_token(), sim)


async def _conflation(ws: RawWS, token: str, sim: Simulator) -> None:
    book = request("OrderBookGetAndSubscribe", token, code="GAZP", frequency=0, format="Heavy")
    tape = request("AllTradesGetAndSubscribe", token, code="GAZP")
    await ws.request(book)
    (snapshot,) = await ws.data(book["guid"])
    await ws.request(tape)
    trades = sim.burst("GAZP", 300)
    got_trades = 0
    books = 0
    while got_trades < trades:
        msg = await ws.recv()
        if msg.get("guid") == tape["guid"]:
            got_trades += 1
        elif msg.get("guid") == book["guid"]:
            books += 1
    assert got_trades == trades
    # 300 book changes inside one Heavy interval (500 ms) are at most a couple of messages.
    assert books <= 2


async def test_frequency_is_clamped_to_format_minimum(ws: RawWS, token: str) -> None:
    """Heavy's minimum is 500 ms, whatever `frequency` asks for (docs/protocol.md §12.4)."""
    req = request("QuotesSubscribe", token, code="SBER", frequency=1, format="Heavy")
    await ws.request(req)
    await ws.data(req["guid"])
    start = time.monotonic()
    await ws.data(req["guid"], 2, within=15)
    assert time.monotonic() - start >= 0.45 * 2


async def test_unsubscribe_any_case_stops_data(ws: RawWS, token: str, sim: Simulator) -> None:
    """`UnSubscribe` (any case, docs/protocol.md §12.7) answers 200 with the subscription's guid;
    no data after it."""
    gone = request("AllTradesGetAndSubscribe", token, code="LKOH")
    kept = request("AllTradesGetAndSubscribe", token, code="LKOH")
    await ws.request(gone)
    await ws.request(kept)
    reply = await ws.request({"opcode": "UnSubscribe", "guid": gone["guid"], "token": token})
    assert reply["httpCode"] == 200
    trades = sim.burst("LKOH", 100)
    received = []
    while len(received) < trades:
        msg = await ws.recv()
        assert msg.get("guid") != gone["guid"]
        if msg.get("guid") == kept["guid"]:
            received.append(msg)
    assert sim.stats()["subscriptions"] == 1


async def test_ping_is_answered(ws: RawWS) -> None:
    """An application ping gets a 200 status with its guid (docs/protocol.md §12.3)."""
    guid = new_guid("ping")
    reply = await ws.request({"opcode": "ping", "guid": guid, "confirm": True, "token": "x"})
    assert reply["httpCode"] == 200 and reply["requestGuid"] == guid


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"opcode": "OrderBookGetAndSubscribe", "code": "NOPE"}, "NOPE"),
        ({"opcode": "OrderBookGetAndSubscribe", "code": "SBER", "depth": 0}, "depth"),
        ({"opcode": "OrderBookGetAndSubscribe", "code": "SBER", "depth": 51}, "depth"),
        ({"opcode": "AllTradesGetAndSubscribe", "code": "SBER", "depth": 5001}, "depth"),
        ({"opcode": "BarsGetAndSubscribe", "code": "SBER", "tf": "x", "from": 0}, "tf"),
        ({"opcode": "BarsGetAndSubscribe", "code": "SBER", "from": 0}, "tf"),
        ({"opcode": "QuotesSubscribe"}, "code"),
        ({"opcode": "QuotesSubscribe", "code": 5}, "code"),
        ({"opcode": "QuotesSubscribe", "code": "SBER", "format": "Fat"}, "format"),
        ({"opcode": "NoSuchThing", "code": "SBER"}, "opcode"),
        ({"opcode": "orderbookgetandsubscribe", "code": "SBER"}, "opcode"),
        ({"opcode": "PositionsGetAndSubscribeV2"}, "portfolio"),
    ],
)
async def test_bad_requests_get_400_naming_the_field(
    ws: RawWS, token: str, fields: dict[str, Any], needle: str
) -> None:
    """Bad parameters get 400 with a message naming what is wrong (docs/protocol.md §12.2); nothing
    is created."""
    guid = new_guid("bad")
    reply = await ws.request({**fields, "guid": guid, "token": token})
    assert reply["httpCode"] == 400, reply
    assert needle in reply["message"]
    pong = await ws.request({"opcode": "ping", "guid": new_guid("ping"), "token": token})
    assert pong["httpCode"] == 200


async def test_duplicate_guid_is_refused_and_existing_untouched(
    ws: RawWS, token: str, sim: Simulator
) -> None:
    """A guid already active on the connection gets 400 (docs/protocol.md §12.2); the old
    subscription streams."""
    req = request("AllTradesGetAndSubscribe", token, code="SBER")
    await ws.request(req)
    await ws.send({**req, "code": "GAZP"})
    # (the live subscription of that guid may stream before the reply: no ordering check)
    again, _ = await ws.until(lambda m: m.get("requestGuid") == req["guid"])
    assert again["httpCode"] == 400
    sim.burst("SBER", 50)
    (trade,) = await ws.data(req["guid"])
    assert trade["symbol"] == "SBER"


async def test_invalid_json_and_missing_guid(ws: RawWS, token: str) -> None:
    """Junk gets a 400 status (with an empty requestGuid when none could be read)."""
    await ws.send("{not json")
    reply = await ws.recv()
    assert reply["httpCode"] == 400 and reply["requestGuid"] == ""
    await ws.send({"opcode": "QuotesSubscribe", "code": "SBER", "token": token})
    reply = await ws.recv()
    assert reply["httpCode"] == 400 and "guid" in reply["message"]
    await ws.send("[1, 2, 3]")
    reply = await ws.recv()
    assert reply["httpCode"] == 400
