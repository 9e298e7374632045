"""The simulator's instrument status follows the trading day (``Simulator(schedule=True)``) on a
manual clock: over the instrument subscription and over HTTP, at start and at each window
boundary; orders are refused in the same windows. Without ``schedule`` nothing changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from alorws.client.session import ManualClock
from alorws.protocol.schedule import SCHEDULES, Phase
from alorws.protocol.timeutil import MSK
from alorws.sim.app import SCHEDULE_TASK, Simulator
from alorws.sim.schedule import PHASE_STATUS

from .._clisim import process_sim
from .._sim import DAY
from .conftest import new_guid, request
from .wsclient import RawWS


MONDAY_1030 = datetime(2026, 12, 7, 10, 30, tzinfo=MSK)
SATURDAY_0800 = datetime(2026, 12, 12, 8, 0, tzinfo=MSK)
SYMBOLS = ("SBER", "SiZ6", "USD000UTSTOM")  # stock, futures, currency
BOARDS = {"SBER": "TQBR", "SiZ6": "RFUD", "USD000UTSTOM": "CETS"}
INFO = {
    17: "нормальный период торгов",  # ALOR's texts (docs/protocol.md §4.5)
    2: "перерыв в торгах",
    18: "нет торгов",  # the simulator's own
    102: "аукцион закрытия",
    119: "аукцион открытия",
}


def _simulator(clock: ManualClock | None, *, schedule: bool = True) -> Simulator:
    return Simulator(
        port=0, seed=3, rate=0.0, history_days=0, day_order_lifetime=DAY,
        schedule=schedule, schedule_clock=clock,
    )  # fmt: skip


def _patch(symbol: str, code: int) -> dict[str, Any]:
    return {"symbol": symbol, "tradingStatus": code, "tradingStatusInfo": INFO[code]}


class Watch:
    """One raw /ws connection subscribed to the instrument stream of every symbol of SYMBOLS,
    plus HTTP and /cws as the demo account."""

    def __init__(self, sim: Simulator, ws: RawWS, cws: RawWS, http: aiohttp.ClientSession):
        self.sim, self.ws, self.cws, self.http = sim, ws, cws, http
        self.token = sim.access_token()
        self.guids: dict[str, str] = {}
        self.first: dict[str, dict[str, Any]] = {}

    async def subscribe(self) -> None:
        for symbol in SYMBOLS:
            req = request("InstrumentsGetAndSubscribeV2", self.token, code=symbol)
            assert (await self.ws.request(req))["httpCode"] == 200
            (self.first[symbol],) = await self.ws.data(req["guid"])
            self.guids[req["guid"]] = symbol

    async def patches(self, n: int) -> dict[str, dict[str, Any]]:
        """The next ``n`` frames, which must all be instrument updates, by symbol; then a fence
        (a status set by hand to what it is) proves nothing else came before it."""
        out: dict[str, dict[str, Any]] = {}
        for _ in range(n):
            msg = await self.ws.recv()
            symbol = self.guids[msg["guid"]]
            assert symbol not in out, msg
            out[symbol] = msg["data"]
        fence = "USD000UTSTOM"
        self.sim.set_trading_status(fence, self.sim.market.trading_status(fence))
        msg = await self.ws.recv()
        assert self.guids[msg["guid"]] == fence and set(msg["data"]) == set(_patch(fence, 17))
        return out

    async def http_status(self, symbol: str) -> tuple[int, str]:
        async with self.http.get(
            f"/md/v2/Securities/MOEX/{symbol}", headers={"Authorization": f"Bearer {self.token}"}
        ) as resp:
            assert resp.status == 200
            body = await resp.json()
        return body["tradingStatus"], body["tradingStatusInfo"]

    async def order(self, symbol: str) -> dict[str, Any]:
        """A far limit buy of ``symbol`` from the demo's portfolio of its market; the reply."""
        portfolio = {"SBER": "D", "SiZ6": "7", "USD000UTSTOM": "G"}[symbol]
        pid = next(p for p in self.sim.demo.portfolios if p.startswith(portfolio))
        price = self.sim.market.instruments[symbol].price_min
        frame = {
            "opcode": "create:limit",
            "guid": new_guid("cmd"),
            "user": {"portfolio": pid},
            "side": "buy",
            "quantity": 1,
            "price": price,
            "instrument": {"symbol": symbol, "exchange": "MOEX", "instrumentGroup": BOARDS[symbol]},
        }
        return await self.cws.request(frame)

    async def check(self, expected: dict[str, int]) -> None:
        """HTTP says ``expected``; orders go through exactly where the status is not closed."""
        for symbol, code in expected.items():
            assert await self.http_status(symbol) == (code, INFO[code]), symbol
            reply = await self.order(symbol)
            if code in (2, 18):
                assert reply["httpCode"] == 400 and "Trading is closed" in reply["message"]
            else:
                assert reply["httpCode"] == 200, reply


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock(MONDAY_1030)


@contextlib.asynccontextmanager
async def _watching(sim: Simulator) -> AsyncIterator[Watch]:
    """Start ``sim`` and watch it (see :class:`Watch`)."""
    async with sim:
        async with (
            await RawWS.connect(sim.ws_url) as ws,
            await RawWS.connect(sim.cws_url) as cws,
            aiohttp.ClientSession(base_url=sim.url) as http,
        ):
            w = Watch(sim, ws, cws, http)
            auth = {"opcode": "authorize", "guid": new_guid("auth"), "token": w.token}
            assert (await cws.request(auth))["httpCode"] == 200
            await w.subscribe()
            yield w


@pytest.fixture
async def watch(clock: ManualClock) -> AsyncIterator[Watch]:
    async with _watching(_simulator(clock)) as w:
        yield w


async def _at(clock: ManualClock, when: str) -> None:
    await clock.set(datetime.fromisoformat(when).replace(tzinfo=MSK))


async def test_status_follows_the_day(watch: Watch, clock: ManualClock) -> None:
    """Monday 10:30 every market trades (17, on the stream and over HTTP); then each boundary
    sends one partial update per instrument whose status changed and nothing for the others:
    the FORTS clearing is a break (2), the stock closing auction 102, the gap after it and the
    night closed (18), the evening opening auction 119. HTTP agrees and orders are refused
    exactly in the break and closed windows."""
    sim = watch.sim
    assert any(t.get_name() == SCHEDULE_TASK for t in asyncio.all_tasks())
    for symbol in SYMBOLS:
        first = watch.first[symbol]
        assert (first["tradingStatus"], first["tradingStatusInfo"]) == (17, INFO[17])
    await watch.check({"SBER": 17, "SiZ6": 17, "USD000UTSTOM": 17})

    steps: list[tuple[str, dict[str, int], dict[str, int]]] = [
        # (time, the updates expected, the statuses HTTP and orders are checked against)
        ("2026-12-07 14:01", {"SiZ6": 2}, {"SiZ6": 2, "SBER": 17}),
        ("2026-12-07 14:06", {"SiZ6": 17}, {"SiZ6": 17}),
        ("2026-12-07 18:41", {"SBER": 102}, {"SBER": 102, "SiZ6": 17}),
        ("2026-12-07 18:46", {"SiZ6": 2}, {"SiZ6": 2}),
        ("2026-12-07 18:55", {"SBER": 18}, {"SBER": 18, "USD000UTSTOM": 17}),
        ("2026-12-07 19:01", {"SBER": 119}, {"SBER": 119}),
        # The currency market's main session gives way to its evening one: still 17, no update.
        ("2026-12-07 19:06", {"SBER": 17, "SiZ6": 17}, {"SBER": 17, "USD000UTSTOM": 17}),
        ("2026-12-07 23:55", dict.fromkeys(SYMBOLS, 18), dict.fromkeys(SYMBOLS, 18)),
    ]
    for when, updates, statuses in steps:
        await _at(clock, when)
        sim.apply_schedule()  # the task may have been first: the stream tells
        got = await watch.patches(len(updates))
        assert got == {s: _patch(s, code) for s, code in updates.items()}, when
        await watch.check(statuses)


async def test_a_status_set_by_hand_lasts_until_the_next_boundary(
    watch: Watch, clock: ManualClock
) -> None:
    """set_trading_status still works with the schedule on; the schedule sets the status again
    at its market's next boundary, not before."""
    sim = watch.sim
    sim.set_trading_status("SBER", 2)
    assert await watch.patches(1) == {"SBER": _patch("SBER", 2)}
    assert sim.apply_schedule() == []
    await _at(clock, "2026-12-07 14:01")  # another market's boundary
    sim.apply_schedule()
    assert await watch.patches(1) == {"SiZ6": _patch("SiZ6", 2)}
    assert await watch.http_status("SBER") == (2, INFO[2])
    await _at(clock, "2026-12-07 18:41")
    sim.apply_schedule()
    assert await watch.patches(2) == {"SBER": _patch("SBER", 102), "SiZ6": _patch("SiZ6", 17)}


async def test_the_simulator_applies_the_schedule_by_itself(
    watch: Watch, clock: ManualClock
) -> None:
    """Without apply_schedule the simulator's own task notices the clock moved past a
    boundary and sends the update."""
    await _at(clock, "2026-12-07 14:01")
    msg = await watch.ws.recv(within=10)
    assert watch.guids[msg["guid"]] == "SiZ6" and msg["data"] == _patch("SiZ6", 2)


async def test_weekend_starts_closed() -> None:
    """Started on a Saturday morning every instrument is closed (18) on the stream, over HTTP and
    for orders; the weekend session opens stocks and futures, never the currency market."""
    clock = ManualClock(SATURDAY_0800)
    async with _watching(_simulator(clock)) as w:
        assert {s: m["tradingStatus"] for s, m in w.first.items()} == dict.fromkeys(SYMBOLS, 18)
        await w.check(dict.fromkeys(SYMBOLS, 18))
        await _at(clock, "2026-12-12 10:30")
        w.sim.apply_schedule()
        assert await w.patches(2) == {"SBER": _patch("SBER", 17), "SiZ6": _patch("SiZ6", 17)}
        await w.check({"SBER": 17, "SiZ6": 17, "USD000UTSTOM": 18})


async def test_without_schedule_nothing_changes() -> None:
    """Without ``schedule`` a Saturday clock changes nothing: normal trading on the stream and
    over HTTP, orders accepted, no schedule task, apply_schedule does nothing."""
    async with _watching(_simulator(ManualClock(SATURDAY_0800), schedule=False)) as w:
        assert not any(t.get_name() == SCHEDULE_TASK for t in asyncio.all_tasks())
        assert w.first["SBER"]["tradingStatus"] == 17
        assert w.sim.apply_schedule() == []
        await w.check({"SBER": 17, "SiZ6": 17})


async def test_apply_reports_what_changed() -> None:
    """On the simulator's objects (not started): the status at construction is the window's,
    apply_schedule returns the tickers it changed and nothing while the window lasts; a
    holiday is closed; the wall-clock task would wake at the first market's boundary."""
    clock = ManualClock(datetime(2026, 12, 7, 14, 1, tzinfo=MSK))
    sim = _simulator(clock)
    gate = sim.server.session_gate
    assert gate is not None
    assert sim.market.trading_status("SiZ6") == 2 and sim.market.trading_status("SBER") == 17
    assert sim.apply_schedule() == []
    assert gate.next_boundary() == datetime(2026, 12, 7, 14, 5, tzinfo=MSK)
    await _at(clock, "2026-12-07 14:05")
    assert sim.apply_schedule() == ["SiZ6"]
    assert sim.apply_schedule() == []
    await _at(clock, "2026-12-07 23:55")
    assert sorted(sim.apply_schedule()) == sorted(sim.market.instruments)
    assert gate.next_boundary() == datetime(2026, 12, 8, 6, 50, tzinfo=MSK)
    assert date(2026, 12, 31) in SCHEDULES["stock"].holidays
    await _at(clock, "2026-12-31 12:00")
    assert sim.apply_schedule() == []  # closed since the night before: same window, all 18
    assert {sim.market.trading_status(s) for s in sim.market.instruments} == {18}


async def test_markets_a_mapping_leaves_out_trade_around_the_clock() -> None:
    """A mapping with only the futures table: on Saturday morning FORTS is closed, the stock
    and currency instruments keep normal trading and their orders go through."""
    clock = ManualClock(SATURDAY_0800)
    sim = Simulator(
        port=0, seed=3, rate=0.0, history_days=0, day_order_lifetime=DAY,
        schedule={"futures": SCHEDULES["futures"]}, schedule_clock=clock,
    )  # fmt: skip
    gate = sim.server.session_gate
    assert gate is not None and set(gate.members) == {"futures"}
    async with _watching(sim) as w:
        await w.check({"SiZ6": 18, "SBER": 17, "USD000UTSTOM": 17})


def test_every_phase_has_a_status() -> None:
    """The mapping of docs/simulator.md: trading 17, auctions 119/102, clearing and break 2,
    closed 18."""
    assert dict(PHASE_STATUS) == {
        Phase.TRADING: 17,
        Phase.OPENING_AUCTION: 119,
        Phase.CLOSING_AUCTION: 102,
        Phase.CLEARING: 2,
        Phase.BREAK: 2,
        Phase.CLOSED: 18,
    }


async def test_the_sim_command_follows_the_schedule(tmp_path: Path) -> None:
    """``alorws sim --schedule``: every instrument's status is its market's window of the wall
    clock (read before and after, in case a boundary passes meanwhile); without the flag, 17."""
    from alorws.client import AlorClient

    async def statuses(*flags: str) -> dict[str, int]:
        with process_sim(tmp_path / f"state{len(flags)}.json", *flags) as sim:
            token = sim.lines["refresh_token"]
            async with AlorClient(token, base_url=sim.url, io_thread=False) as client:
                got = {}
                for symbol in SYMBOLS:
                    security = await client.http.security(symbol)
                    assert security.trading_status is not None
                    got[symbol] = int(security.trading_status)
                return got

    def expected() -> dict[str, int]:
        now = datetime.now(MSK)
        markets = {"SBER": "stock", "SiZ6": "futures", "USD000UTSTOM": "currency"}
        return {s: PHASE_STATUS[SCHEDULES[m].state(now).window.phase] for s, m in markets.items()}

    before = expected()
    got = await statuses("--schedule")
    assert got in (before, expected())
    assert await statuses() == dict.fromkeys(SYMBOLS, 17)
