"""Bad input on every endpoint gets a 4xx with a message: never a 5xx, a dead handler, a lost
reply or a blocked event loop; the admin side is validated and can be protected."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from alorws.errors import InvalidArgumentError
from alorws.sim.app import Simulator

from .._sim import DAY
from .conftest import Connect, new_guid, request
from .test_server_cws import SBER, far_limit, order
from .wsclient import PipeWS, RawWS


COMMANDS = "/commandapi/warptrans/TRADE/v2/client/orders"
DEEP = "[" * 20_000 + "]" * 20_000  # past the C recursion limit of 3.11-3.13 (3.13: ~10,000)
DEEP_OBJECT = '{"a":' * 5000 + "1" + "}" * 5000


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stop_fields(**fields: Any) -> dict[str, Any]:
    """The keys of a stop order for SBER, plus ``fields``."""
    return {
        "side": "buy",
        "quantity": 1,
        "instrument": SBER,
        "triggerPrice": 300.0,
        "condition": "More",
        **fields,
    }


# -- 1. numbers the simulator computes with ----------------------------------------------------


async def test_cws_bad_numbers_between_good_commands(sim: Simulator, cws: RawWS) -> None:
    """A number the simulator cannot compute with (a stop's end in year 10**11, a price of
    1e308) is a 400 naming the field; the commands around it get their replies, in order,
    and the connection stays open."""
    portfolio = sim.demo.portfolios[0]
    frames = [
        far_limit(portfolio),
        order("create:stop", portfolio, **stop_fields(stopEndUnixTime=2**62)),
        order("create:limit", portfolio, side="buy", quantity=1, price=1e308, instrument=SBER),
        order("create:stopLimit", portfolio, **stop_fields(price=280.0, stopEndUnixTime=2**62)),
        order("create:stop", portfolio, **stop_fields(triggerPrice=1e-300)),
        far_limit(portfolio),
    ]
    for frame in frames:
        await cws.send(frame)
    replies = [await cws.recv() for _ in frames]
    assert [r["requestGuid"] for r in replies] == [f["guid"] for f in frames]
    assert [r["httpCode"] for r in replies] == [200, 400, 400, 400, 400, 200], replies
    assert "stopEndUnixTime" in replies[1]["message"]
    assert "price" in replies[2]["message"]
    assert "stopEndUnixTime" in replies[3]["message"]
    assert "price" in replies[4]["message"].lower()
    assert (await cws.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200
    assert sim.stats()["errors"] == 0


async def test_http_orders_bad_numbers_are_400(sim: Simulator, token: str) -> None:
    """The same numbers over HTTP: 400 with the field named; the next order goes through."""
    portfolio = sim.demo.portfolios[0]
    user = {"user": {"portfolio": portfolio}}
    bodies = [
        ("stop", {**stop_fields(stopEndUnixTime=2**62), **user}, "stopEndUnixTime"),
        ("stopLimit", {**stop_fields(price=280.0, stopEndUnixTime=2**62), **user}, "stop"),
        (
            "limit",
            {"side": "buy", "quantity": 1, "price": 1e308, "instrument": SBER, **user},
            "price",
        ),
    ]
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        for i, (kind, body, field) in enumerate(bodies):
            headers = {**bearer(token), "X-REQID": f"bad-{i}"}
            resp = await http.post(f"{COMMANDS}/actions/{kind}", json=body, headers=headers)
            assert resp.status == 400, await resp.text()
            assert field in (await resp.json())["message"]
        good = {"side": "buy", "quantity": 1, "price": 280.0, "instrument": SBER, **user}
        headers = {**bearer(token), "X-REQID": "good"}
        resp = await http.post(f"{COMMANDS}/actions/limit", json=good, headers=headers)
        assert resp.status == 200, await resp.text()
    assert sim.stats()["errors"] == 0


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"tf": "M", "from": 2**62}, "from"),
        ({"tf": "Y", "from": 2**63 - 1}, "from"),
        ({"tf": str(10**30), "from": 0}, "tf"),
        ({"tf": 31_536_001, "from": 0}, "tf"),
    ],
)
async def test_ws_bars_bad_numbers_are_400(
    sim: Simulator, ws: RawWS, token: str, fields: dict[str, Any], name: str
) -> None:
    """Candles from beyond any calendar or of a timeframe above a year: 400 naming the field;
    the connection carries on."""
    reply = await ws.request(request("BarsGetAndSubscribe", token, code="SBER", **fields))
    assert reply["httpCode"] == 400 and name in reply["message"], reply
    assert (await ws.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200
    assert sim.stats()["subscriptions"] == 0 and sim.stats()["errors"] == 0


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"tf": "M", "from": "-99999999999999", "to": "0"}, "from"),
        ({"tf": "M", "from": "0", "to": str(10**15)}, "to"),
        ({"tf": "Y", "from": "0", "to": str(2**62)}, "to"),
        ({"tf": "W", "from": str(-(10**13)), "to": "0"}, "from"),
        ({"tf": str(10**30), "from": "0", "to": "10"}, "tf"),
        ({"tf": "60", "from": "0", "to": "10", "countBack": "-1"}, "countBack"),
        ({"tf": "60", "from": "", "to": "10"}, "from"),
    ],
)
async def test_http_history_bad_numbers_are_400(
    sim: Simulator, params: dict[str, str], name: str
) -> None:
    """/md/v2/history: times no calendar holds, timeframes above a year: 400 naming the field."""
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        query = {"symbol": "SBER", "exchange": "MOEX", **params}
        resp = await http.get("/md/v2/history", params=query)
        assert resp.status == 400, await resp.text()
        assert name in await resp.text()
    assert sim.stats()["errors"] == 0


# -- 2. every endpoint answers bad bodies with a 4xx -------------------------------------------

_JUNK = [DEEP, DEEP_OBJECT, "[1]", '"x"', "1e999", '{"x": 1', "99999999999999999999999"]


def _http_cases() -> list[tuple[str, str, str, str]]:
    """(id, method, path, body): bad bodies for every endpoint that reads one."""
    cases: list[tuple[str, str, str, str]] = []
    paths = [
        ("POST", "/refresh"),
        ("POST", f"{COMMANDS}/actions/limit"),
        ("PUT", f"{COMMANDS}/actions/limit/123"),
        *(
            ("POST", f"/sim/{name}")
            for name in ("drop", "stall", "refuse", "delay", "inject", "restart", "random-drops")
        ),
    ]
    for method, path in paths:
        for i, body in enumerate(_JUNK):
            cases.append((f"{path}-junk{i}", method, path, body))
    typed = {
        "/sim/drop": ['{"code": "x"}', '{"code": [1]}', '{"code": 1e300}', '{"code": 4999}'],
        "/sim/stall": [
            '{"seconds": "x"}',
            '{"seconds": {}}',
            '{"seconds": -1}',
            '{"seconds": 1e300}',
        ],
        "/sim/refuse": ['{"seconds": "x"}', '{"seconds": -5}', '{"seconds": 1e300}'],
        "/sim/delay": ['{"seconds": [1]}', '{"seconds": -1}', '{"seconds": 1e300}'],
        "/sim/inject": ['{"frame": 1}', '{"frame": "x", "account": 5}', "{}"],
        "/sim/restart": ['{"seconds": "x"}', '{"code": "x"}', '{"code": 1e300}', '{"seconds": -1}'],
        "/sim/random-drops": [
            '{"every": 0}',
            '{"every": -1}',
            '{"every": "x"}',
            '{"every": 1e300}',
            '{"every": 1, "codes": 5}',
            '{"every": 1, "codes": ["a"]}',
            '{"every": 1, "codes": [9999]}',
            '{"every": 1, "codes": []}',
            '{"every": true}',
        ],
        "/refresh": [
            '{"token": "x", "allowedPortfolios": [{}]}',
            '{"token": "x", "allowedPortfolios": [[1]]}',
            '{"token": 5}',
        ],
        f"{COMMANDS}/actions/limit": ['{"price": 1e300, "quantity": 99999999999999999999999}'],
    }
    for path, bodies in typed.items():
        for i, body in enumerate(bodies):
            cases.append((f"{path}-typed{i}", "POST", path, body))
    return cases


_CASES = _http_cases()


@pytest.mark.parametrize(
    ("method", "path", "body"), [c[1:] for c in _CASES], ids=[c[0] for c in _CASES]
)
async def test_bad_http_bodies_are_4xx(
    sim: Simulator, http: aiohttp.ClientSession, method: str, path: str, body: str
) -> None:
    """Every endpoint that reads a body answers junk, deep nesting, non-objects, huge and
    negative numbers and wrong types with a 4xx and a message, and serves the next request."""
    token = sim.access_token()
    headers = {**bearer(token), "X-REQID": new_guid(), "Content-Type": "application/json"}
    resp = await http.request(method, path, data=body, headers=headers)
    text = await resp.text()
    assert 400 <= resp.status < 500, (resp.status, text)
    assert text.strip(), "a 4xx needs a message"
    if path.startswith("/sim/"):
        assert sim.faults.dropped == 0  # nothing happened
    assert sim.faults.refuse_until == 0.0 and sim.faults.reply_delay == 0.0
    good = await http.get("/md/v2/time", headers=bearer(sim.access_token()))
    assert good.status == 200
    assert sim.stats()["errors"] == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/sim/drop", '{"cod": 4999}', "cod"),
        ("/sim/stall", '{"seconds": 1, "acount": "D1"}', "acount"),
        ("/sim/refuse", '{"second": 30}', "second"),
        ("/sim/inject", '{"frame": "x", "acc": "D1"}', "acc"),
        ("/sim/random-drops", '{"every": 1, "code": [1006]}', "code"),
        ("/sim/silence", '{"seconds": 1, "symbols": ["SBER"]}', "symbols"),
        ("/sim/expire-tokens", '{"now": true}', "now"),
        ("/sim/unsilence", '{"all": true}', "all"),
    ],
)
async def test_admin_fields_the_endpoint_does_not_take_are_400(
    sim: Simulator, http: aiohttp.ClientSession, path: str, body: str, field: str
) -> None:
    """A misspelt admin argument is refused with a 400 naming it and what the endpoint takes,
    and nothing happens: it is never dropped for its default."""
    resp = await http.post(path, data=body, headers={"Content-Type": "application/json"})
    text = await resp.text()
    assert resp.status == 400, (resp.status, text)
    assert repr(field) in text and path in text, text
    assert sim.faults.dropped == 0 and sim.faults.refuse_until == 0.0
    assert sim.stats()["errors"] == 0


@pytest.mark.parametrize("path", ["/ws", "/cws"])
async def test_bad_ws_frames_are_400(sim: Simulator, path: str) -> None:
    """Junk frames on /ws and /cws: a 400 status reply each, the connection stays."""
    async with await RawWS.connect(sim.url.replace("http", "ws", 1) + path) as ws:
        if path == "/cws":
            auth = {"opcode": "authorize", "guid": new_guid(), "token": sim.access_token()}
            assert (await ws.request(auth))["httpCode"] == 200
        for junk in [*_JUNK, '{"opcode": "ping", "guid": 1e999}', '{"guid": ["x"]}']:
            await ws.send(junk)
            assert (await ws.recv())["httpCode"] == 400, junk
        assert (await ws.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200
    assert sim.stats()["errors"] == 0


async def test_internal_failures_answer_500_and_are_counted(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (not bad input) answers 500 in place, on every endpoint, and is counted in
    ``stats()["errors"]``; the connection it happened on carries on."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(sim.faults, "stall", boom)
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        resp = await http.post("/sim/stall", json={"seconds": 1})
        assert resp.status == 500
        assert "message" in await resp.json()
    assert sim.stats()["errors"] == 1

    hub = sim.server.hub
    handle = hub.handle_ws

    def flaky(conn: Any, frame: Any) -> Any:
        if b"boom" in (frame if isinstance(frame, bytes) else frame.encode()):
            raise RuntimeError("boom")
        return handle(conn, frame)

    monkeypatch.setattr(hub, "handle_ws", flaky)
    async with await RawWS.connect(sim.ws_url) as ws:
        await ws.send({"opcode": "ping", "guid": "boom-1"})
        await ws.send({"opcode": "ping", "guid": "fine-1"})
        first, second = await ws.recv(), await ws.recv()
        assert (first["requestGuid"], first["httpCode"]) == ("boom-1", 500)
        assert (second["requestGuid"], second["httpCode"]) == ("fine-1", 200)
    assert sim.stats()["errors"] == 2


# -- 3. background faults ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("every", "codes"),
    [
        (0, None),
        (-1, None),
        (math.inf, None),
        (math.nan, None),
        (0.001, None),
        (1, [4999]),
        (1, []),
    ],
)
async def test_random_drops_validates(
    sim: Simulator, every: float, codes: list[int] | None
) -> None:
    """``every`` must be a finite number of seconds >= 0.01; codes come from CLOSE_REASONS."""
    with pytest.raises(InvalidArgumentError):
        if codes is None:
            sim.faults.random_drops(every)
        else:
            sim.faults.random_drops(every, codes=codes)
    assert sim.stats()["faults"]["random_drops"]["running"] is False


async def test_random_drops_survives_a_failing_round(
    sim: Simulator, ws: RawWS, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round of the background task that fails is logged and counted; the task goes on."""
    await ws.request(request("QuotesSubscribe", token, code="SBER"))
    real = sim.faults._drop_one
    calls = 0

    def first_fails(conn: Any, code: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        real(conn, code)

    monkeypatch.setattr(sim.faults, "_drop_one", first_fails)
    sim.faults.random_drops(0.01, codes=[1012])
    assert await ws.wait_closed() == 1012
    state = sim.stats()["faults"]["random_drops"]
    assert state["running"] is True and state["failures"] == 1
    assert "boom" in state["last_error"]
    assert sim.stats()["errors"] == 1
    sim.faults.stop_random_drops()
    assert sim.stats()["faults"]["random_drops"]["running"] is False


# -- 4. a long history does not block the loop -------------------------------------------------


async def test_first_bars_history_does_not_block_others() -> None:
    """The first candle request of a timeframe builds its history in bounded steps: other
    connections are answered meanwhile, and the history then arrives whole."""
    async with Simulator(port=0, day_order_lifetime=DAY, seed=1, history_days=5, rate=0) as sim:
        sim.market.build_chunk = 200  # many small steps
        token = sim.access_token()
        async with (
            await RawWS.connect(sim.ws_url) as bars,
            await RawWS.connect(sim.ws_url) as other,
        ):
            req = request("BarsGetAndSubscribe", token, code="SBER", tf="15", **{"from": 0})
            await bars.send(req)
            reply = asyncio.ensure_future(bars.status(req["guid"]))
            pongs = 0
            while not reply.done():
                pong = await other.request({"opcode": "ping", "guid": new_guid()})
                assert pong["httpCode"] == 200
                if not reply.done():
                    pongs += 1
            assert (await reply)["httpCode"] == 200
            assert pongs >= 3  # answered while the history was being built
            expected = len(sim.market.bars("SBER", 15, 0, 2**40))
            history = await bars.data(req["guid"], expected, within=60)
            times = [c["time"] for c in history]
            assert times == sorted(times) and len(set(times)) == len(times)


# -- 5. sizes ----------------------------------------------------------------------------------


async def test_long_guid_is_refused(sim: Simulator, ws: RawWS, token: str) -> None:
    """A guid over 128 characters is a 400 that does not echo it; 128 is fine."""
    long = "g" * 129
    await ws.send(request("QuotesSubscribe", token, guid="g" * 60_000, code="SBER"))
    refused = await ws.recv()
    assert refused["httpCode"] == 400 and refused["requestGuid"] == ""
    assert "guid" in refused["message"] and "128" in refused["message"]
    await ws.send(request("QuotesSubscribe", token, guid=long, code="SBER"))
    refused = await ws.recv()
    assert refused["httpCode"] == 400 and refused["requestGuid"] == ""
    assert sim.stats()["subscriptions"] == 0
    fine = "g" * 128
    assert (await ws.request(request("QuotesSubscribe", token, guid=fine, code="SBER")))[
        "httpCode"
    ] == 200
    assert (await ws.data(fine))[0]["symbol"] == "SBER"


async def test_long_guid_is_refused_on_cws(sim: Simulator, cws: RawWS) -> None:
    """The same bound on /cws: the command is not executed."""
    command = far_limit(sim.demo.portfolios[0])
    command["guid"] = "c" * 129
    await cws.send(command)
    refused = await cws.recv()
    assert refused["httpCode"] == 400 and refused["requestGuid"] == ""
    assert sim.engine.orders(sim.demo.portfolios[0]) == []


async def test_size_limits(sim: Simulator, token: str) -> None:
    """Frames over 64 KiB close the WebSocket with 1009; HTTP bodies over 64 KiB get 413."""
    async with await RawWS.connect(sim.ws_url) as ws:
        await ws.send('{"opcode":"ping","guid":"' + "x" * 70_000 + '"}')
        assert await ws.wait_closed() == 1009
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        body = {"side": "buy", "quantity": 1, "comment": "x" * 70_000}
        headers = {**bearer(token), "X-REQID": new_guid()}
        resp = await http.post(f"{COMMANDS}/actions/limit", json=body, headers=headers)
        assert resp.status == 413
        assert (await http.get("/md/v2/time")).status == 200
    assert sim.stats()["errors"] == 0


# -- 6. admin exposure and tokens --------------------------------------------------------------


async def test_admin_token_is_required_when_set() -> None:
    """With an admin token every /sim/* request needs it (Bearer or X-Sim-Admin); the
    ALOR-compatible endpoints do not."""
    async with (
        Simulator(
            port=0, day_order_lifetime=DAY, history_days=1, admin=True, admin_token="s3"
        ) as sim,
        aiohttp.ClientSession(base_url=sim.url) as http,
    ):
        assert (await http.get("/sim/stats")).status == 401
        assert (await http.post("/sim/refuse", json={"seconds": 30})).status == 401
        assert (await http.get("/sim/stats", headers=bearer("wrong"))).status == 401
        assert (await http.get("/md/v2/time")).status == 200  # not refused: nothing ran
        assert (await http.get("/sim/stats", headers=bearer("s3"))).status == 200
        assert (await http.get("/sim/stats", headers={"X-Sim-Admin": "s3"})).status == 200


def test_admin_beyond_loopback_needs_a_token() -> None:
    """Admin on a non-loopback host: a token is generated (unless given) and a warning says
    so; on loopback neither. Nothing is bound here."""
    from alorws.sim.app import exposure_warning

    exposed = Simulator(host="0.0.0.0", admin=True)
    assert isinstance(exposed.admin_token, str) and len(exposed.admin_token) >= 20
    assert Simulator(host="0.0.0.0", admin=True).admin_token != exposed.admin_token
    assert Simulator(host="0.0.0.0", admin=True, admin_token="mine").admin_token == "mine"
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert Simulator(host=host, admin=True).admin_token is None
        assert exposure_warning(host, admin=True) is None
    warning = exposure_warning("0.0.0.0", admin=True)
    assert warning is not None and "0.0.0.0" in warning and "admin" in warning
    assert exposure_warning("0.0.0.0", admin=False) is None
    assert exposure_warning("", admin=True) is not None  # every interface


def test_demo_refresh_token_is_random_unless_given() -> None:
    """Two simulators with the same seed have different demo refresh tokens; a fixed one is
    used as given."""
    a, b = Simulator(seed=1), Simulator(seed=1)
    assert a.demo_refresh_token != b.demo_refresh_token
    assert len(a.demo_refresh_token) >= 32
    assert Simulator(demo_refresh_token="fixed-token").demo_refresh_token == "fixed-token"
    assert a.add_account("x").refresh_token != b.add_account("x").refresh_token


# -- 7. an executed command never loses its reply ----------------------------------------------


async def test_reply_of_executed_command_precedes_a_later_close(sim: Simulator) -> None:
    """A command followed, in the same read, by a frame too big to accept: the command runs,
    its reply goes out, then the close (1009)."""
    portfolio = sim.demo.portfolios[0]
    pipe = await PipeWS.connect("127.0.0.1", sim.port, "/cws")
    try:
        auth = {"opcode": "authorize", "guid": new_guid(), "token": sim.access_token()}
        pipe.write(PipeWS.frame(auth))
        assert (await pipe.recv())["httpCode"] == 200
        command = far_limit(portfolio)
        pipe.write(PipeWS.frame(command), PipeWS.frame(b"", declared=4 << 20))
        reply = await pipe.recv()
        assert (reply["requestGuid"], reply["httpCode"]) == (command["guid"], 200)
        opcode, payload = await pipe.next()
        assert opcode == 8 and int.from_bytes(payload[:2], "big") == 1009
    finally:
        await pipe.close()
    assert [o.id for o in sim.engine.orders(portfolio)] == [reply["orderNumber"]]


async def test_cws_failure_between_commands_keeps_replies(
    sim: Simulator, cws: RawWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command that fails inside the simulator answers 500; the replies of the commands
    before and after it still arrive, in order."""
    engine = sim.engine
    execute = engine.execute

    def flaky(portfolio: str, command: Any, now_ms: int) -> Any:
        if getattr(command, "comment", None) == "boom":
            raise RuntimeError("boom")
        return execute(portfolio, command, now_ms)

    monkeypatch.setattr(engine, "execute", flaky)
    portfolio = sim.demo.portfolios[0]
    bad = far_limit(portfolio)
    bad["comment"] = "boom"
    frames = [far_limit(portfolio), bad, far_limit(portfolio)]
    for frame in frames:
        await cws.send(frame)
    replies = [await cws.recv() for _ in frames]
    assert [(r["requestGuid"], r["httpCode"]) for r in replies] == [
        (frames[0]["guid"], 200),
        (frames[1]["guid"], 500),
        (frames[2]["guid"], 200),
    ]
    assert sim.stats()["errors"] == 1


async def test_http_order_with_a_reqid_in_flight_runs_once(
    sim: Simulator, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests with one X-REQID, the first still sending its body when the second
    completes: the order is placed once and the first gets the replayed answer."""
    portfolio = sim.demo.portfolios[0]
    fields = {"side": "buy", "quantity": 1, "price": 280.0, "instrument": SBER}
    body = json.dumps({**fields, "user": {"portfolio": portfolio}}).encode()
    entered, second_done = asyncio.Event(), asyncio.Event()
    auth = sim.server.http._auth

    def watch(req: Any) -> Any:
        entered.set()  # the first request's handler has started
        return auth(req)

    monkeypatch.setattr(sim.server.http, "_auth", watch)

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:10]
        await second_done.wait()
        yield body[10:]

    headers = {**bearer(token), "X-REQID": "same-id", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        url = f"{COMMANDS}/actions/limit"
        first = asyncio.ensure_future(http.post(url, data=slow_body(), headers=headers))
        async with asyncio.timeout(10):
            await entered.wait()
        second = await http.post(url, data=body, headers=headers)
        assert second.status == 200
        second_done.set()
        async with asyncio.timeout(10):
            resp = await first
        assert resp.status == 400
        assert "oldResponse" in await resp.json()
    assert len(sim.engine.orders(portfolio)) == 1


async def test_ws_closing_frame_after_command_is_not_an_error(sim: Simulator) -> None:
    """A client closing right after a command: the command ran, nothing is counted as an
    error."""
    pipe = await PipeWS.connect("127.0.0.1", sim.port, "/cws")
    try:
        auth = {"opcode": "authorize", "guid": new_guid(), "token": sim.access_token()}
        command = far_limit(sim.demo.portfolios[0])
        close = b"\x88\x82\x00\x00\x00\x00\x03\xe8"  # masked close frame, code 1000
        pipe.write(PipeWS.frame(auth), PipeWS.frame(command), close)
        seen = []
        try:
            while True:
                opcode, payload = await pipe.next()
                seen.append(opcode)
                if opcode == 8:
                    break
        except asyncio.IncompleteReadError:
            pass
        assert seen[:2] == [1, 1]
    finally:
        await pipe.close()
    assert sim.stats()["errors"] == 0


async def test_cli_admin_token_and_bad_fault_flags() -> None:
    """`alorws sim --admin --admin-token T`: /sim/* needs T; a fault flag out of range is a
    usage error (exit 2) naming the flag, before anything listens."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "alorws.sim", "--port", "0", "--admin", "--admin-token", "t0ken"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        found: dict[str, str] = {}
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            while "admin" not in found:
                line = (await proc.stdout.readline()).decode()
                assert line, "the simulator exited early"
                key, _, value = line.strip().partition(": ")
                found[key] = value
        assert "admin_token" not in found  # given, so not printed
        async with aiohttp.ClientSession(base_url=found["url"]) as http:
            assert (await http.get("/sim/stats")).status == 401
            assert (await http.get("/sim/stats", headers=bearer("t0ken"))).status == 200
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    for flags, name in [
        (["--drop-every", "0.001"], "--drop-every"),
        (["--drop-every", "1", "--drop-codes", "1000,x"], "--drop-codes"),
        (["--drop-every", "1", "--drop-codes", "4000"], "codes"),
        (["--reply-delay", "1e9"], "--reply-delay"),
    ]:
        bad = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "alorws.sim", "--port", "0", *flags),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(20):
            out, err = await bad.communicate()
        assert bad.returncode == 2, (flags, out, err)
        assert name in err.decode() and b"url:" not in out


async def test_timeframes_per_instrument_are_bounded(sim: Simulator, ws: RawWS, token: str) -> None:
    """At most ``max_timeframes`` candle series per instrument: a new timeframe beyond them is
    a 400 while every kept one is in use, and fine once one is released."""
    sim.market.max_timeframes = 2
    subs = [
        request("BarsGetAndSubscribe", token, code="SBER", tf=tf, skipHistory=True, **{"from": 0})
        for tf in (60, 120, 180)
    ]
    assert (await ws.request(subs[0]))["httpCode"] == 200
    assert (await ws.request(subs[1]))["httpCode"] == 200
    refused = await ws.request(subs[2])
    assert refused["httpCode"] == 400 and "tf" in refused["message"]
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        query = {"symbol": "SBER", "exchange": "MOEX", "tf": "240", "from": "0", "to": "10"}
        resp = await http.get("/md/v2/history", params=query)
        assert resp.status == 400 and "tf" in await resp.text()
    unsubscribe = {"opcode": "unsubscribe", "guid": subs[0]["guid"], "token": token}
    assert (await ws.request(unsubscribe))["httpCode"] == 200
    subs[2]["guid"] = new_guid()
    assert (await ws.request(subs[2]))["httpCode"] == 200
    assert sim.stats()["errors"] == 0


async def test_failing_replay_keeps_the_connection(
    sim: Simulator, ws: RawWS, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history replay that fails while being built is dropped and counted; the connection's
    sender goes on: replies and live data still arrive."""
    hub = sim.server.hub
    frames = hub._frames

    def failing(sub: Any, items: Any, existing: bool = False) -> Any:
        yield from itertools.islice(frames(sub, items, existing), 2)
        raise RuntimeError("boom")

    monkeypatch.setattr(hub, "_frames", failing)
    req = request("AllTradesGetAndSubscribe", token, code="SBER", depth=10)
    assert (await ws.request(req))["httpCode"] == 200
    assert len(await ws.data(req["guid"], 2)) == 2
    assert (await ws.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200
    trades = sim.burst("SBER", 40)
    assert len(await ws.data(req["guid"], trades)) == trades
    assert sim.stats()["errors"] == 1


async def test_timeframes_stay_bounded_after_a_quote(sim: Simulator, ws: RawWS, token: str) -> None:
    """The day candles a quote builds are never evicted: they count against
    ``max_timeframes``, so once the rest are in use a new timeframe is refused (over /ws and
    HTTP) and the kept series stay within the limit."""
    sim.market.max_timeframes = 2
    assert (await ws.request(request("QuotesSubscribe", token, code="SBER")))["httpCode"] == 200
    subs = [
        request("BarsGetAndSubscribe", token, code="SBER", tf=tf, skipHistory=True, **{"from": 0})
        for tf in (60, 120, 180)
    ]
    assert (await ws.request(subs[0]))["httpCode"] == 200
    for sub in subs[1:]:
        refused = await ws.request(sub)
        assert refused["httpCode"] == 400, refused
        assert refused["message"] == (
            "tf: 2 other timeframes of SBER are in use; use one of them or unsubscribe"
        )
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        query = {"symbol": "SBER", "exchange": "MOEX", "tf": "240", "from": "0", "to": "10"}
        resp = await http.get("/md/v2/history", params=query)
        assert resp.status == 400
        assert await resp.text() == (
            "tf: 2 other timeframes of SBER are in use; use one of them or unsubscribe"
        )
    kept = [tf for tf in (60, 120, 180, 240, 86_400) if sim.market.series_ready("SBER", tf)]
    assert kept == [60, 86_400]
    assert sim.stats()["errors"] == 0


async def test_an_abandoned_history_build_frees_its_timeframe(
    sim: Simulator, ws: RawWS, token: str, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A /ws connection closed while its candles are being built gives the build up: it no
    longer counts against ``max_timeframes``, so another timeframe can be subscribed."""
    sim.market.max_timeframes = 2
    bars = [
        request("BarsGetAndSubscribe", token, code="SBER", tf=tf, skipHistory=True, **{"from": 0})
        for tf in (60, 120, 180)
    ]
    assert (await ws.request(bars[0]))["httpCode"] == 200  # built and in use
    market = sim.market
    real = market.build_series
    started = asyncio.Event()

    def stuck(symbol: str, tf: int) -> bool:
        # The build of 120 takes one real step (so it exists), then never ends: the close
        # comes in the middle of it.
        if tf != 120:
            return real(symbol, tf)
        if not started.is_set():
            real(symbol, tf)
            started.set()
        return False

    monkeypatch.setattr(market, "build_series", stuck)
    gone = await connect()
    await gone.send({**bars[1], "token": sim.access_token(sim.add_account("other"))})
    async with asyncio.timeout(5):
        await started.wait()
    assert sim.faults.drop(1000, account="other") == 1
    assert await gone.wait_closed() == 1000
    assert (await ws.request(bars[2]))["httpCode"] == 200
    assert not market.series_ready("SBER", 120)
    assert sim.stats()["errors"] == 0
