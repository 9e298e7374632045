"""Every real HTTP answer under tests/fixtures/alor/http, served by a small aiohttp server on
127.0.0.1, is read through the public HttpClient method of its endpoint into what ``expect``
says."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from alorws.client.http import HttpClient
from alorws.errors import InvalidArgumentError
from alorws.protocol import Format, HttpOrderAck

from .._fixtures import cases, names
from ..protocol.test_real_shapes import check


class Tokens:
    """A token source double (the server here does not check tokens)."""

    async def token(self) -> str:
        return "test-token"

    async def refresh(self, *, force: bool = False) -> str:
        return "test-token"


class Server:
    """Answers every request with the body and status it is told to, and records the request."""

    def __init__(self) -> None:
        self.body: Any = None
        self.status = 200
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path, dict(request.query)))
        return web.json_response(self.body, status=self.status, dumps=json.dumps)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, HttpClient]]:
    server = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with HttpClient(f"http://127.0.0.1:{port}", Tokens(), timeout=5.0) as http:
            yield server, http
    finally:
        await runner.cleanup()


Call = Callable[[HttpClient, Format], Awaitable[Any]]
ORDER = {
    "side": "buy",
    "quantity": 1,
    "price": 142.52,
    "instrument": {"symbol": "SBER", "exchange": "MOEX"},
    "user": {"portfolio": "D39004"},
}

#: endpoint -> (the HttpClient call, the path it must request, the answer is one item of a list).
#: Endpoints alorws has no method for (one position, the futures quote, one trade, the trade
#: history of /md/stats) answer in the shape of an item of the list endpoint that alorws reads:
#: the answer is served as that list's only item.
ENDPOINTS: dict[str, tuple[Call, str, bool]] = {
    "GET /md/v2/Securities/{exchange}/{symbol}/alltrades/history": (
        lambda h, f: h.all_trades_history("SBER", format=f),
        "/md/v2/Securities/MOEX/SBER/alltrades/history",
        False,
    ),
    "GET /md/v2/Securities/{exchange}/{symbol}/alltrades": (
        lambda h, f: h.all_trades("SBER", format=f),
        "/md/v2/Securities/MOEX/SBER/alltrades",
        False,
    ),
    "GET /md/v2/Securities/{exchange}/{symbol}/availableBoards": (
        lambda h, f: h.available_boards("SBER"),
        "/md/v2/Securities/MOEX/SBER/availableBoards",
        False,
    ),
    "GET /md/v2/Clients/{exchange}/{portfolio}/fortsrisk": (
        lambda h, f: h.forts_risk("7500GHC", format=f),
        "/md/v2/Clients/MOEX/7500GHC/fortsrisk",
        False,
    ),
    "GET /md/v2/history": (
        lambda h, f: h.history_page("SBER", 600, 1701068400, 1701069000, format=f),
        "/md/v2/history",
        False,
    ),
    "GET /md/v2/Clients/{exchange}/{portfolio}/orders/{orderId}": (
        lambda h, f: h.order("41423837024", "D00013", format=f),
        "/md/v2/Clients/MOEX/D00013/orders/41423837024",
        False,
    ),
    "GET /md/v2/orderbooks/{exchange}/{symbol}": (
        lambda h, f: h.order_book("SBER", format=f),
        "/md/v2/orderbooks/MOEX/SBER",
        False,
    ),
    "GET /md/v2/Clients/{exchange}/{portfolio}/orders": (
        lambda h, f: h.orders("D00013", format=f),
        "/md/v2/Clients/MOEX/D00013/orders",
        False,
    ),
    "GET /md/v2/Clients/{exchange}/{portfolio}/positions/{symbol}": (
        lambda h, f: h.positions("D00013", format=f),
        "/md/v2/Clients/MOEX/D00013/positions",
        True,
    ),
    "GET /md/v2/Clients/{exchange}/{portfolio}/positions": (
        lambda h, f: h.positions("D00013", format=f),
        "/md/v2/Clients/MOEX/D00013/positions",
        False,
    ),
    "GET /md/v2/Securities/{exchange}/{symbol}/actualFuturesQuote": (
        lambda h, f: h.quotes(["MOEX:SBRF-12.23"], format=f),
        "/md/v2/Securities/MOEX:SBRF-12.23/quotes",
        True,
    ),
    "GET /md/v2/Securities/{symbols}/quotes": (
        lambda h, f: h.quotes("MOEX:SBER", format=f),
        "/md/v2/Securities/MOEX:SBER/quotes",
        False,
    ),
    "GET /md/v2/Clients/{exchange}/{portfolio}/risk": (
        lambda h, f: h.risk("7500GHC", format=f),
        "/md/v2/Clients/MOEX/7500GHC/risk",
        False,
    ),
    "GET /md/v2/Securities/{exchange}": (
        lambda h, f: h.all_securities("MOEX", format=f),
        "/md/v2/Securities/MOEX",
        False,
    ),
    "GET /md/v2/Securities/{exchange}/{symbol}": (
        lambda h, f: h.security("CNY-6.25", format=f),
        "/md/v2/Securities/MOEX/CNY-6.25",
        False,
    ),
    "GET /md/v2/Clients/{exchange}/{portfolio}/stoporders/{orderId}": (
        lambda h, f: h.stop_order(347499, "D00013", format=f),
        "/md/v2/Clients/MOEX/D00013/stoporders/347499",
        False,
    ),
    "GET /md/v2/Clients/{exchange}/{portfolio}/stoporders": (
        lambda h, f: h.stop_orders("D00013", format=f),
        "/md/v2/Clients/MOEX/D00013/stoporders",
        False,
    ),
    "GET /md/v2/Clients/{exchange}/{portfolio}/summary": (
        lambda h, f: h.summary("D00013", format=f),
        "/md/v2/Clients/MOEX/D00013/summary",
        False,
    ),
    "GET /md/v2/time": (lambda h, f: h.server_time(), "/md/v2/time", False),
    "GET /md/v2/Clients/{exchange}/{portfolio}/trades (one item)": (
        lambda h, f: h.trades("D00013", format=f),
        "/md/v2/Clients/MOEX/D00013/trades",
        True,
    ),
    "GET /md/stats/{exchange}/{portfolio}/history/trades": (
        lambda h, f: h.trades("D00013", format=f),
        "/md/v2/Clients/MOEX/D00013/trades",
        True,
    ),
    "GET /md/v2/Clients/{exchange}/{portfolio}/trades": (
        lambda h, f: h.trades("D00013", format=f),
        "/md/v2/Clients/MOEX/D00013/trades",
        False,
    ),
}

ORDER_PATH = "/commandapi/warptrans/TRADE/v2/client/orders/actions/limit"
DATA = [
    pytest.param(case, id=f"{f.split('/')[-1]}-{case['name']}")
    for f in names("http")
    if f != "http/commandapi"
    for case in cases(f)
]


@pytest.mark.parametrize("case", DATA)
async def test_http_answer_reads(served: tuple[Server, HttpClient], case: dict[str, Any]) -> None:
    """The answer decodes through the endpoint's method, with the expected values."""
    server, http = served
    call, path, item = ENDPOINTS[case["endpoint"]]
    fmt = Format(case["format"] or "Simple")
    server.body = [case["body"]] if item else case["body"]
    result = await call(http, fmt)
    method, seen_path, query = server.seen[-1]
    assert (method, seen_path) == ("GET", path)
    if case["format"] is not None:
        assert query["format"] == fmt.value
    check(result[0] if item else result, case["expect"])


def test_every_endpoint_is_mapped() -> None:
    """Each HTTP fixture's endpoint has its call above (a new fixture needs one)."""
    endpoints = {c["endpoint"] for f in names("http") for c in cases(f)}
    assert endpoints - set(ENDPOINTS) == {c["endpoint"] for c in cases("http/commandapi")}


@pytest.mark.parametrize("case", [pytest.param(c, id=c["name"]) for c in cases("http/commandapi")])
async def test_order_reply_reads(served: tuple[Server, HttpClient], case: dict[str, Any]) -> None:
    """A command's answer becomes an HttpOrderAck; a 400 saying the X-REQID was already handled
    (``oldResponse`` with status 200) is the first reply replayed, not a refusal: the ack
    carries the first reply's order number."""
    server, http = served
    expect = case["expect"]
    server.body = case["body"]
    replayed = "oldResponse.statusCode" in expect
    server.status = 400 if replayed else 200
    ack = await http.place_order("limit", ORDER, req_id="D39004;1")
    assert server.seen[-1][:2] == ("POST", ORDER_PATH)
    assert isinstance(ack, HttpOrderAck)
    assert ack.replayed is replayed and ack.req_id == "D39004;1"
    if replayed:
        assert expect["oldResponse.statusCode"] == 200
        assert ack.order_number == expect["oldResponse.body.orderNumber"]
        assert ack.message == case["body"]["oldResponse"]["body"]["message"]
        assert expect["message"] != ack.message  # the 400's own text is about the replay
    else:
        assert (ack.message, ack.order_number) == (expect["message"], expect["orderNumber"])


async def test_price_filters_are_signed(served: tuple[Server, HttpClient]) -> None:
    """The all-trades price filters take negative prices (they exist on MOEX derivatives) and
    refuse what is not a finite number in the server's range, before anything is sent."""
    server, http = served
    server.body = []
    assert await http.all_trades("BR-1.26", price_from=-37.5, price_to=-1) == []
    query = server.seen[-1][2]
    assert (query["priceFrom"], query["priceTo"]) == ("-37.5", "-1.0")
    for bad in (float("inf"), float("nan"), -1e300, 10**400, "1"):
        with pytest.raises(InvalidArgumentError) as info:
            await http.all_trades("SBER", price_from=bad)  # type: ignore[arg-type]
        assert info.value.field == "price_from"
    assert len(server.seen) == 1
