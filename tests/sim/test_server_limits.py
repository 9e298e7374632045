"""The limits (docs/protocol.md §12.9) and token expiry (docs/protocol.md §12.1), enforced over
real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from alorws.sim.app import Simulator

from .conftest import Connect, new_guid, request
from .wsclient import RawWS


@pytest.fixture
async def small() -> AsyncIterator[Simulator]:
    """A simulator with tiny limits and a frozen market (only bursts move it)."""
    async with Simulator(
        port=0,
        rate=0.0,
        max_connections=3,
        max_subscriptions=5,
        max_unread=200,
        send_buffer=64 * 1024,
        history_days=1,
    ) as s:
        yield s


async def test_expired_token_gets_401_and_live_subs_keep_streaming(
    ws: RawWS, sim: Simulator, token: str
) -> None:
    """A new request with an expired JWT gets 401 (docs/protocol.md §12.1); existing subscriptions
    go on."""
    live = request("AllTradesGetAndSubscribe", token, code="SBER")
    await ws.request(live)
    expired = sim.access_token(lifetime=-60)
    refused = await ws.request(request("QuotesSubscribe", expired, code="SBER"))
    assert refused["httpCode"] == 401 and refused["message"] == "Invalid JWT token!"
    garbage = await ws.request(request("QuotesSubscribe", "not.a.jwt", code="SBER"))
    assert garbage["httpCode"] == 401
    sim.tokens.expire_all()
    assert (await ws.request(request("QuotesSubscribe", token, code="SBER")))["httpCode"] == 401
    sim.burst("SBER", 60)
    await ws.data(live["guid"])
    assert sim.stats()["subscriptions"] == 1


async def test_eleventh_connection_refused_at_handshake_with_bearer(small: Simulator) -> None:
    """With an Authorization header, the connection over the limit gets HTTP 429
    (docs/protocol.md §12.9)."""
    token = small.access_token()
    headers = {"Authorization": f"Bearer {token}"}
    url = small.url.replace("http", "ws", 1)
    opened = [await RawWS.connect(f"{url}/ws", headers=headers) for _ in range(2)]
    opened.append(await RawWS.connect(f"{url}/cws", headers=headers))
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await RawWS.connect(f"{url}/ws", headers=headers)
        assert info.value.status == 429
        other = small.add_account("other")
        extra = await RawWS.connect(
            f"{url}/ws", headers={"Authorization": f"Bearer {small.access_token(other)}"}
        )
        opened.append(extra)  # another account is not affected
        await opened[0].close()
        await _until(lambda: small.stats()["accounts"]["demo"]["connections"] == 2)
        opened.append(await RawWS.connect(f"{url}/ws", headers=headers))
    finally:
        for client in opened:
            await client.close()


async def test_eleventh_connection_refused_at_first_request(small: Simulator) -> None:
    """Without a header, the first authenticated message over the limit gets 429 + 1008
    (docs/protocol.md §12.9)."""
    token = small.access_token()
    url = small.url.replace("http", "ws", 1)
    clients = [await RawWS.connect(f"{url}/ws") for _ in range(3)]
    cws = await RawWS.connect(f"{url}/cws")
    try:
        for client in clients[:2]:
            reply = await client.request(request("QuotesSubscribe", token, code="SBER"))
            assert reply["httpCode"] == 200
        auth = await cws.request({"opcode": "authorize", "guid": new_guid("a"), "token": token})
        assert auth["httpCode"] == 200
        refused = await clients[2].request(request("QuotesSubscribe", token, code="SBER"))
        assert refused["httpCode"] == 429
        assert await clients[2].wait_closed() == 1008
    finally:
        for client in [*clients, cws]:
            await client.close()


async def test_subscription_over_the_limit_is_refused(small: Simulator) -> None:
    """The (max+1)th subscription gets 429 and is not created (docs/protocol.md §12.9); freeing one
    makes room."""
    token = small.access_token()
    async with await RawWS.connect(small.ws_url) as ws:
        guids = []
        for _ in range(5):
            req = request("QuotesSubscribe", token, code="SBER")
            assert (await ws.request(req))["httpCode"] == 200
            guids.append(req["guid"])
        over = await ws.request(request("QuotesSubscribe", token, code="GAZP"))
        assert over == {
            "requestGuid": over["requestGuid"],
            "httpCode": 429,
            "message": "Subscription limit exceeded",
        }
        assert small.stats()["subscriptions"] == 5
        await ws.request({"opcode": "unsubscribe", "guid": guids[0], "token": token})
        assert (await ws.request(request("QuotesSubscribe", token, code="GAZP")))["httpCode"] == 200


async def test_non_reading_client_is_dropped_reader_keeps_streaming(small: Simulator) -> None:
    """A client that stops reading is closed 1008 'Buffer overflow' and loses its
    subscriptions, while a reading client of the same account keeps streaming
    (docs/protocol.md §12.9)."""
    token = small.access_token()
    slow = await RawWS.connect(small.ws_url, rcvbuf=4096)
    fast = await RawWS.connect(small.ws_url)
    try:
        slow_req = request("AllTradesGetAndSubscribe", token, code="SBER")
        fast_req = request("AllTradesGetAndSubscribe", token, code="SBER")
        await slow.request(slow_req)
        await fast.request(fast_req)
        slow_conn = next(
            c for c in small.server.hub.connections.values() if slow_req["guid"] in c.subs
        )
        total = 0
        for _ in range(200):  # bounded: overflow comes after ~2k trades with these buffers
            total += small.burst("SBER", 200)
            while fast.received < total + 1:  # +1: the status reply
                await fast.recv()
            if slow_conn.closing:
                break
        assert slow_conn.closing and slow_conn.close_code == 1008
        # The unread count is real: the slow client took well over max_unread frames into its
        # socket buffers before the queue behind them overflowed.
        assert slow_conn.sent > 200
        assert small.stats()["subscriptions"] == 1  # the slow one's are gone
        code = await slow.wait_closed(within=20)
        assert code == 1008
        assert slow.ws.close_code == 1008
        more = small.burst("SBER", 100)
        assert more > 0
        await fast.data(fast_req["guid"], more)
    finally:
        await slow.close()
        await fast.close()


async def _until(cond: Callable[[], bool]) -> None:
    """Poll a server-side condition (state with no event to await), for at most 5 s."""
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 5 s")


async def test_connect_fixture_counts_cws_and_ws_together(sim: Simulator, connect: Connect) -> None:
    """/ws and /cws connections of one account are counted together (docs/protocol.md §12.9)."""
    token = sim.access_token()
    ws = await connect("/ws")
    await ws.request(request("QuotesSubscribe", token, code="SBER"))
    cws = await connect("/cws")
    await cws.request({"opcode": "authorize", "guid": new_guid("a"), "token": token})
    assert sim.stats()["accounts"]["demo"]["connections"] == 2
