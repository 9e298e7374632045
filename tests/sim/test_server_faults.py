"""Fault injection, in-process and over the admin endpoints, and bad input."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from alorws.sim.app import Simulator

from .._sim import DAY
from .conftest import Connect, new_guid, request
from .wsclient import RawWS


@pytest.mark.parametrize("code", [1000, 1011, 1012])
async def test_drop_with_close_frame(sim: Simulator, ws: RawWS, token: str, code: int) -> None:
    """drop(code) closes every connection with that close code; subscriptions are gone."""
    await ws.request(request("QuotesSubscribe", token, code="SBER"))
    assert sim.faults.drop(code) == 1
    assert await ws.wait_closed() == code
    assert sim.stats()["subscriptions"] == 0


async def test_drop_1006_sends_no_close_frame(sim: Simulator, ws: RawWS, token: str) -> None:
    """drop(1006) cuts the TCP connection: the client sees an abnormal closure."""
    await ws.request(request("QuotesSubscribe", token, code="SBER"))
    sim.faults.drop(1006)
    assert await ws.wait_closed() in (1006, None)
    assert ws.ws.close_code == 1006


async def test_drop_only_one_account(sim: Simulator, connect: Connect) -> None:
    """drop(account=...) leaves other accounts' connections alone."""
    other = sim.add_account("other")
    mine, theirs = await connect(), await connect()
    await mine.request(request("QuotesSubscribe", sim.access_token(), code="SBER"))
    await theirs.request(request("QuotesSubscribe", sim.access_token(other), code="SBER"))
    assert sim.faults.drop(1011, account="other") == 1
    assert await theirs.wait_closed() == 1011
    assert (await mine.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200


async def test_random_drops(sim: Simulator, ws: RawWS, token: str) -> None:
    """random_drops closes connections at random intervals with one of the given codes."""
    await ws.request(request("QuotesSubscribe", token, code="SBER"))
    sim.faults.random_drops(0.05, codes=[1012])
    assert await ws.wait_closed() == 1012
    sim.faults.stop_random_drops()


async def test_stall_stops_sending_for_a_while(sim: Simulator, ws: RawWS, token: str) -> None:
    """stall(N) sends nothing for N seconds; then the queued messages arrive."""
    req = request("AllTradesGetAndSubscribe", token, code="SBER")
    await ws.request(req)
    start = time.monotonic()
    assert sim.faults.stall(0.4) == 1
    trades = sim.burst("SBER", 60)
    await ws.data(req["guid"], trades)
    assert time.monotonic() - start >= 0.35


async def test_refuse_new_connections(sim: Simulator, ws: RawWS) -> None:
    """refuse(N): new connections get 503 while it lasts; existing ones are unaffected."""
    sim.faults.refuse(30)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await RawWS.connect(sim.ws_url)
    assert info.value.status == 503
    assert (await ws.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200
    sim.faults.refuse(0)
    async with await RawWS.connect(sim.ws_url) as again:
        assert (await again.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200


async def test_refusal_is_not_a_restart_window(sim: Simulator, connect: Connect) -> None:
    """refuse() and restart() answer 503 without touching the restart window's state or
    counters; a restart window and a refusal end separately."""
    sim.faults.restart(30)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await connect("/ws")
    window = sim.faults.stats()["restart_window"]
    assert not window["active"] and window["refused"] == 0
    sim.faults.restart_window(30)
    sim.faults.refuse(0)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await connect("/ws")
    assert sim.faults.stats()["restart_window"]["refused"] == 1
    sim.faults.restart_window(0)
    assert sim.faults.refuse_until <= sim.server.clock()
    await connect("/ws")


async def test_delay_replies(sim: Simulator, ws: RawWS, token: str) -> None:
    """delay(N): every reply (and the data behind it) comes N seconds late."""
    sim.faults.delay(0.3)
    start = time.monotonic()
    reply = await ws.request(request("QuotesSubscribe", token, code="SBER"))
    assert reply["httpCode"] == 200
    assert time.monotonic() - start >= 0.28
    sim.faults.delay(0)


async def test_expire_tokens(sim: Simulator, ws: RawWS, token: str) -> None:
    """expire_tokens(): requests with old tokens get 401, a freshly issued one works."""
    sim.faults.expire_tokens()
    assert (await ws.request(request("QuotesSubscribe", token, code="SBER")))["httpCode"] == 401
    fresh = sim.access_token()
    assert (await ws.request(request("QuotesSubscribe", fresh, code="SBER")))["httpCode"] == 200


async def test_inject_frames(sim: Simulator, ws: RawWS) -> None:
    """inject(frame) delivers the frame verbatim, junk included."""
    await ws.request({"opcode": "ping", "guid": new_guid()})
    assert sim.faults.inject('{"what": "unknown"}') == 1
    assert await ws.recv() == {"what": "unknown"}
    sim.faults.inject("garbage{")
    assert await ws.recv_text() == "garbage{"


async def test_restart_drops_everyone_and_refuses_for_a_while(
    sim: Simulator, connect: Connect
) -> None:
    """restart(): all connections lost, new ones refused until the window ends."""
    clients = [await connect("/ws"), await connect("/cws")]
    for client in clients:
        await client.request({"opcode": "ping", "guid": new_guid()})
    assert sim.faults.restart(30) == 2
    for client in clients:
        assert await client.wait_closed() in (1006, None)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await RawWS.connect(sim.ws_url)
    sim.faults.refuse(0)
    await connect("/ws")


async def test_admin_endpoints(sim: Simulator, ws: RawWS, token: str) -> None:
    """/sim/* drive the same faults over HTTP, JSON in and out."""
    await ws.request(request("QuotesSubscribe", token, code="SBER"))
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        stats = await (await http.get("/sim/stats")).json()
        assert stats["accounts"]["demo"] == {"connections": 1, "subscriptions": 1, "unread": 0}
        assert (await (await http.get("/sim/ground-truth")).json()) == []
        resp = await http.post("/sim/inject", json={"frame": '{"x": 1}'})
        assert (await resp.json()) == {"injected": 1}
        await ws.until(lambda m: m == {"x": 1})
        await http.post("/sim/stall", json={"seconds": 0.01})
        await http.post("/sim/delay", json={"seconds": 0})
        await http.post("/sim/expire-tokens")
        assert (await ws.request(request("QuotesSubscribe", token, code="SBER")))["httpCode"] == 401
        resp = await http.post("/sim/refuse", json={"seconds": 30})
        assert resp.status == 200
        assert (await http.get("/md/v2/time")).status == 503
        await http.post("/sim/refuse", json={"seconds": 0})
        resp = await http.post("/sim/drop", json={"code": 1011})
        assert (await resp.json()) == {"dropped": 1}
        assert await ws.wait_closed() == 1011


async def test_admin_is_off_by_default() -> None:
    """Without admin=True the /sim/* endpoints do not exist."""
    async with (
        Simulator(port=0, day_order_lifetime=DAY, history_days=1) as sim,
        aiohttp.ClientSession(base_url=sim.url) as http,
    ):
        assert (await http.post("/sim/drop", json={})).status == 404
        assert (await http.get("/sim/stats")).status == 404


async def test_bad_input_never_stalls_others(sim: Simulator, connect: Connect) -> None:
    """Junk, type errors, oversized frames and a 10,000-request flood get a status reply or a
    clean close, while another connection keeps streaming."""
    token = sim.access_token()
    watcher = await connect()
    tape = request("AllTradesGetAndSubscribe", token, code="SBER")
    await watcher.request(tape)

    bad = await connect()
    for junk in ("{", "[]", "null", '"x"', '{"opcode": 5, "guid": "g"}', "\x00\x01"):
        await bad.send(junk)
        assert (await bad.recv())["httpCode"] == 400
    reply = await bad.request(request("OrderBookGetAndSubscribe", token, code="SBER", depth="5"))
    assert reply["httpCode"] == 400 and "depth" in reply["message"]

    flood = await connect()
    frames = [json.dumps({"opcode": "ping", "guid": f"f{i}"}) for i in range(10_000)]

    async def send_all() -> None:
        for frame in frames:
            await flood.ws.send_str(frame)

    sender = asyncio.create_task(send_all())
    replies = 0
    async with asyncio.timeout(30):
        while replies < 10_000:
            msg = await flood.recv()
            assert msg["httpCode"] == 200
            replies += 1
            if replies % 2000 == 0:  # the others keep streaming meanwhile
                sim.burst("SBER", 40)
                await watcher.data(tape["guid"])
    await sender

    huge = await connect()
    await huge.ws.send_str('{"opcode":"ping","guid":"' + "x" * (1 << 20) + '"}')
    assert await huge.wait_closed() == 1009

    sim.burst("SBER", 40)
    await watcher.data(tape["guid"])
    assert sim.stats()["errors"] == 0
