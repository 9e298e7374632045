"""The HTTP side: refresh (docs/protocol.md §2.2), market data (docs/protocol.md §8.3), rate limit
(docs/protocol.md §12.10)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from alorws.protocol.jwt import decode_claims
from alorws.sim.app import Simulator

from .._sim import DAY


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_refresh_query_and_body(sim: Simulator, http: aiohttp.ClientSession) -> None:
    """The refresh token in the query or the JSON body (any key case) gives a JWT
    (docs/protocol.md §2.2)."""
    resp = await http.post("/refresh", params={"token": sim.demo_refresh_token})
    assert resp.status == 200
    jwt = (await resp.json())["AccessToken"]
    claims = decode_claims(jwt)
    assert claims.sub == "demo"
    assert list(claims.portfolios) == list(sim.demo.portfolios)
    assert claims.exp - claims.iat == 1800
    resp = await http.post("/refresh", json={"Token": sim.demo_refresh_token})
    assert resp.status == 200
    narrowed = await http.post(
        "/refresh",
        json={"token": sim.demo_refresh_token, "allowedPortfolios": [sim.demo.portfolios[0]]},
    )
    claims = decode_claims((await narrowed.json())["AccessToken"])
    assert list(claims.portfolios) == [sim.demo.portfolios[0]]


async def test_refresh_bad_token_is_403(http: aiohttp.ClientSession) -> None:
    """An unknown refresh token gets 403 (docs/protocol.md §2.2)."""
    assert (await http.post("/refresh", params={"token": "nope"})).status == 403
    assert (await http.post("/refresh")).status == 403


async def test_time_anonymous_is_late(http: aiohttp.ClientSession, token: str) -> None:
    """/md/v2/time is a bare integer (docs/protocol.md §8.3); anonymous callers are 15 minutes
    behind."""
    now = time.time()
    anon = await (await http.get("/md/v2/time")).json()
    authed = await (await http.get("/md/v2/time", headers=bearer(token))).json()
    assert abs(authed - now) < 5
    assert abs(anon - (now - 900)) < 5


async def test_securities(http: aiohttp.ClientSession, token: str) -> None:
    """Search, by exchange (auth) and one instrument, in each format (docs/protocol.md §8.3)."""
    found = await (await http.get("/md/v2/Securities", params={"query": "sber"})).json()
    assert "SBER" in [s["symbol"] for s in found]
    required = {"SBER", "GAZP", "LKOH", "SU26238RMFS4", "USD000UTSTOM"}
    listed = await (await http.get("/md/v2/Securities/MOEX", headers=bearer(token))).json()
    symbols = {s["symbol"] for s in listed}
    assert required <= symbols
    assert any(s["board"] == "RFUD" and s["symbol"].startswith("Si") for s in listed)
    assert (await http.get("/md/v2/Securities/MOEX")).status == 401
    one = await http.get(
        "/md/v2/Securities/MOEX/SBER", params={"format": "Slim"}, headers=bearer(token)
    )
    body = await one.json()
    assert body["sym"] == "SBER" and body["bd"] == "TQBR"
    missing = await http.get("/md/v2/Securities/MOEX/NOPE", headers=bearer(token))
    assert missing.status == 404


async def test_quotes_and_orderbook(http: aiohttp.ClientSession, token: str) -> None:
    """Quotes for several tickers (docs/protocol.md §8.3); the REST order book snapshot."""
    quotes = await (await http.get("/md/v2/Securities/MOEX:SBER,MOEX:GAZP/quotes")).json()
    assert [q["symbol"] for q in quotes] == ["SBER", "GAZP"]
    book = await http.get(
        "/md/v2/orderbooks/MOEX/LKOH",
        params={"depth": "3", "format": "Heavy"},
        headers=bearer(token),
    )
    data = await book.json()
    assert len(data["bids"]) == 3 and "msTimestamp" in data
    bad = await http.get(
        "/md/v2/orderbooks/MOEX/LKOH", params={"depth": "99"}, headers=bearer(token)
    )
    assert bad.status == 400


async def test_history_paging(http: aiohttp.ClientSession) -> None:
    """Candles in [from, to] with next/prev timestamps (docs/protocol.md §8.3); Slim uses `h`."""
    now = int(time.time())
    params = {
        "symbol": "SBER",
        "exchange": "MOEX",
        "tf": "60",
        "from": str(now - 7200),
        "to": str(now - 3600),
    }
    page = await (await http.get("/md/v2/history", params=params)).json()
    times = [b["time"] for b in page["history"]]
    assert times == sorted(times) and len(times) > 30
    assert page["prev"] is not None and page["prev"] < times[0]
    assert page["next"] is not None and page["next"] > times[-1]
    slim = await (await http.get("/md/v2/history", params={**params, "format": "Slim"})).json()
    assert [b["t"] for b in slim["h"]] == times
    back = await (
        await http.get(
            "/md/v2/history", params={**params, "from": str(now - 3660), "countBack": "10"}
        )
    ).json()
    assert len(back["history"]) == 10
    bad = await http.get("/md/v2/history", params={"symbol": "SBER"})
    assert bad.status == 400


@pytest.fixture
async def throttled() -> AsyncIterator[Simulator]:
    async with Simulator(port=0, day_order_lifetime=DAY, http_rate=5, history_days=1) as s:
        yield s


async def test_rate_limit(throttled: Simulator) -> None:
    """Above the per-account rate, 429 with Retry-After (docs/protocol.md §12.10)."""
    headers = bearer(throttled.access_token())
    async with aiohttp.ClientSession(base_url=throttled.url) as http:
        statuses = [(await http.get("/md/v2/time", headers=headers)).status for _ in range(5)]
        assert statuses == [200] * 5
        over = await http.get("/md/v2/time", headers=headers)
        assert over.status == 429
        assert int(over.headers["Retry-After"]) >= 1
