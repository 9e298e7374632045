"""The production behaviours of docs/protocol.md §9.6 as simulator faults (docs/protocol.md §12.16):
an idle /cws connection that goes stale, the daily restart window, a silent subscription."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from alorws.errors import InvalidArgumentError
from alorws.sim.app import Simulator, main
from alorws.sim.faults import MOSCOW_UTC_OFFSET

from .conftest import Connect, new_guid, request
from .wsclient import RawWS


def command(portfolio: str, comment: str) -> dict[str, Any]:
    """A market order command frame with a fresh guid."""
    return {
        "opcode": "create:market",
        "guid": new_guid("cmd"),
        "side": "buy",
        "quantity": 1,
        "instrument": {"symbol": "SBER", "exchange": "MOEX"},
        "user": {"portfolio": portfolio},
        "comment": comment,
    }


def placed(sim: Simulator, comment: str) -> set[str]:
    """Ids of the orders carrying ``comment`` (the engine's ground truth)."""
    return {
        r["data"]["id"]
        for r in sim.engine.ground_truth
        if r["stream"] == "orders" and r["data"].get("comment") == comment
    }


@pytest.fixture
def went_stale(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set each time a /cws connection goes stale (the idle fault's own moment)."""
    event = asyncio.Event()
    original = sim.server._go_stale

    def go_stale(conn: Any) -> None:
        original(conn)
        if conn.stale:
            event.set()

    monkeypatch.setattr(sim.server, "_go_stale", go_stale)
    return event


async def authorize(ws: RawWS, token: str) -> dict[str, Any]:
    return await ws.request({"opcode": "authorize", "guid": new_guid("auth"), "token": token})


# -- idle /cws ----------------------------------------------------------------------------------


async def test_idle_cws_goes_stale_and_only_a_newer_token_clears_it(
    sim: Simulator, connect: Connect, went_stale: asyncio.Event
) -> None:
    """After the idle time a /cws connection answers ping and authorize (200) but its next
    command is not executed: the connection is cut. Old tokens keep failing, on a new connection
    too; authorize with a token issued after the staleness clears it."""
    portfolio = sim.demo.portfolios[0]
    old = sim.access_token()
    ws = await connect("/cws")
    assert (await authorize(ws, old))["httpCode"] == 200
    sim.faults.idle_cws(0.2)
    async with asyncio.timeout(5):
        await went_stale.wait()
    assert sim.faults.stats()["idle_cws"] == {"idle": 0.2, "stale": 1, "resets": 0}
    assert (await ws.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200
    assert (await authorize(ws, old))["httpCode"] == 200  # accepted, changes nothing
    await ws.send(command(portfolio, "stale-1"))
    assert await ws.wait_closed() in (1006, None)  # cut: no reply, no close frame
    assert placed(sim, "stale-1") == set()

    # The account's next connection with an old token: the same.
    again = await connect("/cws")
    assert (await authorize(again, old))["httpCode"] == 200
    await again.send(command(portfolio, "stale-2"))
    assert await again.wait_closed() in (1006, None)
    assert placed(sim, "stale-2") == set()
    assert sim.faults.stats()["idle_cws"]["resets"] == 2

    # Old token first (stale), then a token issued now on the same connection: cleared.
    third = await connect("/cws")
    assert (await authorize(third, old))["httpCode"] == 200
    assert (await authorize(third, sim.access_token()))["httpCode"] == 200
    assert (await third.request(command(portfolio, "fresh")))["httpCode"] == 200
    assert len(placed(sim, "fresh")) == 1
    sim.faults.idle_cws(None)


async def test_idle_cws_commands_keep_a_connection_fresh_and_off_clears(
    sim: Simulator, cws: RawWS, went_stale: asyncio.Event
) -> None:
    """A connection sending commands does not go stale before its idle time; turning the fault
    off clears a stale connection."""
    portfolio = sim.demo.portfolios[0]
    sim.faults.idle_cws(30.0)
    assert (await cws.request(command(portfolio, "busy")))["httpCode"] == 200
    assert sim.faults.stats()["idle_cws"]["stale"] == 0
    sim.faults.idle_cws(0.05)  # measured from the last command
    async with asyncio.timeout(5):
        await went_stale.wait()
    sim.faults.idle_cws(None)
    assert sim.faults.stats()["idle_cws"]["stale"] == 0
    assert (await cws.request(command(portfolio, "after-off")))["httpCode"] == 200


def test_idle_cws_checks_its_argument() -> None:
    """A bad idle time is refused with the argument's name."""
    sim = Simulator(port=0, history_days=1)
    for bad in (0, -1, float("nan"), "1", True):
        with pytest.raises(InvalidArgumentError, match="seconds"):
            sim.faults.idle_cws(bad)  # type: ignore[arg-type]


# -- the restart window -------------------------------------------------------------------------


async def test_restart_window_drops_refuses_and_ends(sim: Simulator, connect: Connect) -> None:
    """A restart window drops every connection, answers new WebSockets and HTTP with 503 while
    it lasts, and everything works again after it."""
    ws, cws = await connect("/ws"), await connect("/cws")
    assert sim.faults.restart_window(30.0) == 2
    for client in (ws, cws):
        assert await client.wait_closed() in (1006, None)
    for path in ("/ws", "/cws"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await connect(path)
        assert info.value.status == 503
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        assert (await http.get("/md/v2/time")).status == 503
        assert (await http.post("/refresh", json={"token": sim.demo_refresh_token})).status == 503
        window = sim.faults.stats()["restart_window"]
        assert window["active"] and window["refused"] == 4 and window["admitted"] == 0
        sim.faults.restart_window(0)  # ends it
        assert (await http.get("/md/v2/time")).status == 200
    again = await connect("/ws")
    assert (await again.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200


async def test_restart_window_ends_by_itself(sim: Simulator, connect: Connect) -> None:
    """A short window returns to normal on its own."""
    sim.faults.restart_window(0.3)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await connect("/ws")
    async with asyncio.timeout(5):
        while True:  # retrying is what a client does; every attempt is refused or succeeds
            try:
                ws = await connect("/ws")
                break
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 503
                await asyncio.sleep(0.05)
    assert (await ws.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200
    assert not sim.faults.stats()["restart_window"]["active"]


async def test_restart_window_flaps(sim: Simulator, connect: Connect, token: str) -> None:
    """With ``accept``, attempts get through and are dropped shortly after (flapping)."""
    sim.faults.restart_window(30.0, accept=1.0, linger=0.2, code=1012)
    ws = await connect("/ws")  # let through
    reply = await ws.request(request("QuotesSubscribe", token, code="SBER"))
    assert reply["httpCode"] == 200
    assert await ws.wait_closed() == 1012
    stats = sim.faults.stats()["restart_window"]
    assert stats["admitted"] == 1 and stats["dropped"] == 1 and stats["refused"] == 0
    sim.faults.restart_window(0)


async def test_daily_restart_runs_the_window_at_its_moscow_time(sim: Simulator) -> None:
    """A daily schedule whose window contains the current Moscow time opens a window now."""
    moscow = (time.time() + MOSCOW_UTC_OFFSET) % 86_400
    start = int(moscow // 60 - 1) % 1440
    end = (start + 3) % 1440
    sim.faults.daily_restart(
        f"{start // 60:02d}:{start % 60:02d}", f"{end // 60:02d}:{end % 60:02d}"
    )
    async with asyncio.timeout(5):
        while not sim.faults.stats()["restart_window"]["active"]:  # noqa: ASYNC110 - a counter
            await asyncio.sleep(0.01)
    daily = sim.faults.stats()["daily_restart"]
    assert daily["running"] and daily["windows"] == 1
    sim.faults.stop_daily_restart()
    sim.faults.restart_window(0)
    assert not sim.faults.stats()["daily_restart"]["running"]


async def test_restart_window_checks_its_arguments(sim: Simulator) -> None:
    """Bad arguments are refused by name and change nothing."""
    for kwargs, name in (
        ({"seconds": -1}, "seconds"),
        ({"seconds": 1, "accept": 1.5}, "accept"),
        ({"seconds": 1, "linger": -1}, "linger"),
        ({"seconds": 1, "code": 4000}, "code"),
    ):
        with pytest.raises(InvalidArgumentError, match=name):
            sim.faults.restart_window(**kwargs)
    for start, end in (
        ("9:00", "25:00"),
        ("09:60", "10:00"),
        ("0900", "10:00"),
        ("09:00", "09:00"),
    ):
        with pytest.raises(InvalidArgumentError):
            sim.faults.daily_restart(start, end)
    assert not sim.faults.stats()["restart_window"]["active"]
    assert not sim.faults.stats()["daily_restart"]["running"]


# -- silent subscriptions -----------------------------------------------------------------------


async def _trades(sim: Simulator, ws: RawWS, guids: list[str], want: str) -> dict[str, int]:
    """Burst trades on SBER until ``want`` got 5 frames; count the data frames per guid."""
    counts = dict.fromkeys(guids, 0)
    async with asyncio.timeout(10):
        while counts[want] < 5:
            sim.burst("SBER", 40)
            try:
                async with asyncio.timeout(0.2):
                    while True:
                        msg = await ws.recv()
                        if msg.get("guid") in counts and "data" in msg:
                            counts[msg["guid"]] += 1
                            if counts[want] >= 5:
                                return counts
            except TimeoutError:
                continue
    return counts


async def test_silence_one_subscription_the_others_and_pings_go_on(
    sim: Simulator, ws: RawWS, token: str
) -> None:
    """A silenced subscription gets nothing while another on the same connection streams and
    pings are answered; unsubscribe + subscribe with the same guid streams again."""
    quiet = request("AllTradesGetAndSubscribe", token, code="SBER")
    loud = request("AllTradesGetAndSubscribe", token, code="SBER")
    for req in (quiet, loud):
        assert (await ws.request(req))["httpCode"] == 200
    assert sim.faults.silence(guid=quiet["guid"]) == 1
    assert sim.faults.stats()["silenced"] == 1
    counts = await _trades(sim, ws, [quiet["guid"], loud["guid"]], loud["guid"])
    assert counts[quiet["guid"]] == 0 and counts[loud["guid"]] >= 5
    assert (await ws.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200
    assert sim.stats()["subscriptions"] == 2  # still subscribed
    # docs/protocol.md §3.8: unsubscribe, then subscribe again with the same guid: a new
    # subscription streams.
    reply = await ws.request({"opcode": "unsubscribe", "guid": quiet["guid"], "token": token})
    assert reply["httpCode"] == 200
    assert (await ws.request(quiet))["httpCode"] == 200
    counts = await _trades(sim, ws, [quiet["guid"], loud["guid"]], quiet["guid"])
    assert counts[quiet["guid"]] >= 5
    assert sim.faults.stats()["silenced"] == 0


async def test_silence_by_opcode_and_symbol_for_a_while(
    sim: Simulator, ws: RawWS, token: str
) -> None:
    """Selectors: opcode (any case) and symbol; a timed silence ends by itself, unsilence ends
    the rest at once. A resend of a live guid is refused (docs/protocol.md §12.2), so re-subscribing
    needs the unsubscribe first."""
    book = request("OrderBookGetAndSubscribe", token, code="SBER", depth=5)
    trades = request("AllTradesGetAndSubscribe", token, code="SBER")
    for req in (book, trades):
        assert (await ws.request(req))["httpCode"] == 200
    assert sim.faults.silence(opcode="alltradesgetandsubscribe", symbol="sber", seconds=0.3) == 1
    assert (await ws.request(trades))["httpCode"] == 400  # the same guid while subscribed
    counts = await _trades(sim, ws, [trades["guid"], book["guid"]], trades["guid"])
    assert counts[trades["guid"]] >= 5  # after the 0.3 s
    assert sim.faults.silence(symbol="SBER") == 2
    assert sim.faults.silence(symbol="SBER") == 0  # already silent
    assert sim.faults.unsilence() == 2
    counts = await _trades(sim, ws, [trades["guid"], book["guid"]], trades["guid"])
    assert counts[trades["guid"]] >= 5


async def test_silence_a_whole_connection(sim: Simulator, connect: Connect, token: str) -> None:
    """``connection`` silences every subscription of one connection, not the others'."""
    a, b = await connect(), await connect()
    ra = request("AllTradesGetAndSubscribe", token, code="SBER")
    rb = request("AllTradesGetAndSubscribe", token, code="SBER")
    assert (await a.request(ra))["httpCode"] == 200
    assert (await b.request(rb))["httpCode"] == 200
    first = min(c.id for c in sim.server.hub.connections.values())
    assert sim.faults.silence(connection=first) == 1
    counts = await _trades(sim, b, [rb["guid"]], rb["guid"])
    assert counts[rb["guid"]] >= 5
    with pytest.raises(TimeoutError):
        await a.data(ra["guid"], 1, within=0.3)
    with pytest.raises(InvalidArgumentError, match="connection"):
        sim.faults.silence(connection="1")  # type: ignore[arg-type]


# -- admin endpoints and flags ------------------------------------------------------------------


async def test_admin_endpoints_for_the_production_faults(
    sim: Simulator, ws: RawWS, token: str
) -> None:
    """/sim/idle-cws, /sim/restart-window, /sim/daily-restart, /sim/silence, /sim/unsilence;
    bad arguments get 400 naming them."""
    req = request("AllTradesGetAndSubscribe", token, code="SBER")
    assert (await ws.request(req))["httpCode"] == 200
    async with aiohttp.ClientSession(base_url=sim.url) as http:
        resp = await http.post("/sim/silence", json={"guid": req["guid"]})
        assert (await resp.json()) == {"silenced": 1}
        assert (await (await http.post("/sim/unsilence")).json()) == {"restored": 1}
        assert (await http.post("/sim/idle-cws", json={"seconds": 60})).status == 200
        assert sim.faults.idle.seconds == 60
        assert (await http.post("/sim/idle-cws", json={"seconds": None})).status == 200
        assert sim.faults.idle.seconds is None
        resp = await http.post("/sim/idle-cws", json={"seconds": "x"})
        assert resp.status == 400 and "seconds" in (await resp.json())["message"]
        resp = await http.post("/sim/daily-restart", json={"start": "09:00", "end": "nope"})
        assert resp.status == 400 and "end" in (await resp.json())["message"]
        resp = await http.post("/sim/daily-restart", json={"start": "03:00", "end": "03:01"})
        assert resp.status == 200 and sim.faults.stats()["daily_restart"]["running"]
        assert (await http.post("/sim/daily-restart", json={"start": None})).status == 200
        assert not sim.faults.stats()["daily_restart"]["running"]
        resp = await http.post("/sim/silence", json={"opcode": 5})
        assert resp.status == 400 and "opcode" in (await resp.json())["message"]
        resp = await http.post("/sim/restart-window", json={"seconds": 30, "accept": 0})
        assert (await resp.json()) == {"dropped": 1}
        assert await ws.wait_closed() in (1006, None)
        # The admin endpoints stay reachable during the window; HTTP does not.
        assert (await http.get("/sim/stats")).status == 200
        assert (await http.get("/md/v2/time")).status == 503
        assert (await http.post("/sim/restart-window", json={"seconds": 0})).status == 200
        assert (await http.get("/md/v2/time")).status == 200


@pytest.mark.parametrize(
    "flags",
    [
        ["--cws-idle", "0"],
        ["--daily-restart", "9-10"],
        ["--daily-restart", "09:00-10:00", "--restart-accept", "2"],
        ["--restart-linger", "-1"],
    ],
)
def test_cli_refuses_bad_production_fault_flags(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`alorws sim` checks the new fault flags before it starts (exit 2, a message naming it)."""
    assert main(["--port", "0", *flags]) == 2
    assert flags[-2] in capsys.readouterr().err
