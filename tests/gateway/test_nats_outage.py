"""A NATS outage through the gateway: nats-server is stopped and started again on the same port
with the same JetStream store, while a gateway (a ``python -m alorws gateway`` subprocess) serves
consumers in this process and a separate ALOR session keeps placing orders on the simulator.

Consumers must see the outage as a direct ``AlorClient`` sees a dropped connection: every stream
one ``disconnected`` and one ``restored``, data flowing after, account streams equal to the
simulator's ground truth (nothing lost, nothing repeated), orders sent during the outage with a
definite outcome and executed once, and one log line per event, without tracebacks.

A second test cuts only the gateway's connection (through a TCP relay): the consumers, still
connected, learn of the market data the gateway dropped from its gap marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
import pytest

from alorws.bus import BusClient, BusStream, wire
from alorws.bus._natslink import NatsLink, Retry
from alorws.client import AlorClient
from alorws.gateway import Gateway, NatsServer
from alorws.protocol.account import Order, OwnTrade
from alorws.protocol.backoff import NO_DELAY
from alorws.protocol.market import OrderBook, Quote
from alorws.sim.app import Simulator

from .conftest import FAST


T = TypeVar("T")
log = logging.getLogger(__name__)

OUTAGE = 3.0  # seconds nats-server stays down (the scenario, not a synchronisation)
GATEWAY_LEASE = 2.0  # shorter than the outage: the gateway must not expire its consumers
LOG_LINES_PER_OUTAGE = 4  # per process: lost, attempt 1, reconnected, and one to spare


async def within(aw: Awaitable[T], seconds: float, what: str) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def eventually(check: Any, what: str, seconds: float = 20.0) -> None:
    """Poll ``check()`` (it reads the simulator's counters; there is no event to await)."""
    try:
        async with asyncio.timeout(seconds):
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class Watched:
    """Reads a bus stream in the background: items with their arrival time, gap events."""

    def __init__(self, name: str, stream: BusStream[Any]) -> None:
        self.name = name
        self.stream = stream
        self.items: list[tuple[float, Any]] = []
        self.down = asyncio.Event()
        self.back = asyncio.Event()
        self.more = asyncio.Event()
        stream.on_event(self._on_event)
        self.task = asyncio.ensure_future(self._run())

    def _on_event(self, event: Any) -> None:
        (self.down if event.kind == "disconnected" else self.back).set()

    async def _run(self) -> None:
        async for item in self.stream:
            self.items.append((time.monotonic(), item))
            self.more.set()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.stream.events]

    def values(self) -> list[Any]:
        return [item for _, item in self.items]

    async def next_after(self, t: float, seconds: float) -> float:
        """The arrival time of the first item that arrived after ``t``."""
        async with asyncio.timeout(seconds):
            while True:
                later = [at for at, _ in self.items if at > t]
                if later:
                    return later[0]
                self.more.clear()
                await self.more.wait()

    async def stop(self) -> None:
        if self.task.done():
            self.task.result()  # an error in the reader fails the test
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def trade(client: AlorClient, portfolio: str, stop: asyncio.Event, placed: list[str]) -> None:
    """Market orders on the simulator directly (not through NATS), alternating sides."""
    for i in itertools.count():
        if stop.is_set():
            return
        side = "buy" if i % 2 == 0 else "sell"
        ack = await client.trading.place_market(portfolio, "SBER", side, 1)
        placed.append(ack.order_number)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await stop.wait()


async def poke(sim: Simulator, symbols: list[str]) -> None:
    """Market events all along, so that quotes and books flow whenever NATS does."""
    while True:
        for symbol in symbols:
            sim.burst(symbol, 2)
        await asyncio.sleep(0.02)


def truth(sim: Simulator, portfolio: str, stream: str) -> list[dict[str, Any]]:
    return [
        r["data"]
        for r in sim.engine.ground_truth
        if r["portfolio"] == portfolio and r["stream"] == stream
    ]


@pytest.mark.timeout(150)
async def test_nats_outage_is_one_gap_per_stream_and_loses_nothing(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """nats-server stops for a few seconds and comes back on the same port and store: every
    stream of two consumers gets exactly one ``disconnected`` and one ``restored``, data flows
    after, orders and own trades equal the simulator's truth (each once), an order in flight
    and one sent during the outage are acked and placed once, the gateway (a subprocess) keeps
    its ALOR subscriptions, and both sides log a few lines without traceback or token."""
    caplog.set_level(logging.INFO)
    portfolio = sim.demo.portfolios[0]
    token = sim.demo_refresh_token
    token_file = tmp_path / "token"
    token_file.write_text(token, encoding="utf-8")
    token_file.chmod(0o600)  # a token file must be its owner's alone
    err_path = tmp_path / "gateway.stderr"
    server = NatsServer()
    await server.start()
    url = server.url
    watch_nc = await nats.connect(url)
    announced = asyncio.Event()

    async def on_leader(msg: Any) -> None:
        announced.set()

    await watch_nc.subscribe(wire.leader_subject("alorws"), cb=on_leader)
    with err_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "alorws", "gateway", "--nats", url, "--url", sim.url,
            "--token-file", str(token_file), "--lease", str(GATEWAY_LEASE),
            stdout=asyncio.subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    buses: list[BusClient] = []
    watched: list[Watched] = []
    tasks: list[asyncio.Future[Any]] = []
    stop_trading = asyncio.Event()
    try:
        await within(announced.wait(), 60.0, "the gateway to serve")
        await watch_nc.close()
        for _ in range(2):
            bus = BusClient(url)
            await bus.start()
            buses.append(bus)
        a, b = buses
        streams: list[tuple[str, BusStream[Any]]] = [
            ("a quotes", a.quotes("SBER")),
            ("a orders", a.orders(portfolio)),
            ("a own trades", a.own_trades(portfolio)),
            ("b quotes", b.quotes("SBER")),
            ("b book", b.order_book("GAZP", depth=5)),
            ("b orders", b.orders(portfolio)),
            ("b new orders", b.orders(portfolio, skip_history=True)),
            ("b own trades", b.own_trades(portfolio)),
            ("b positions", b.positions(portfolio)),
        ]
        for name, stream in streams:
            await stream.subscribe()
            watched.append(Watched(name, stream))
        by_name = {w.name: w for w in watched}
        quotes = [by_name["a quotes"], by_name["b quotes"]]
        orders = [by_name["a orders"], by_name["b orders"]]
        trades = [by_name["a own trades"], by_name["b own trades"]]
        async with AlorClient(token, base_url=sim.url, backoff=FAST) as trader:
            placed: list[str] = []
            tasks.append(asyncio.ensure_future(poke(sim, ["SBER", "GAZP"])))
            tasks.append(asyncio.ensure_future(trade(trader, portfolio, stop_trading, placed)))
            await eventually(lambda: all(len(t.items) >= 5 for t in trades), "fills via the bus")
            await eventually(lambda: all(w.items for w in watched), "data on every stream")
            alor_subscriptions = int(sim.stats()["subscriptions"])
            lowest = [alor_subscriptions]

            async def sample() -> None:
                while True:
                    lowest[0] = min(lowest[0], int(sim.stats()["subscriptions"]))
                    await asyncio.sleep(0.01)

            tasks.append(asyncio.ensure_future(sample()))
            logged_before = len(caplog.records)
            err_before = err_path.read_bytes()

            # -- the outage: one order is in flight as the server stops (executed by the
            # simulator, its reply held back), one is sent while it is down; the simulator
            # keeps filling orders placed directly.
            sim.faults.delay(2.0)
            in_flight = asyncio.ensure_future(
                a.trading.place_market(portfolio, "SBER", "buy", 1, comment="in-flight")
            )
            await eventually(
                lambda: any(
                    o.get("comment") == "in-flight" for o in truth(sim, portfolio, "orders")
                ),
                "the in-flight order to be executed",
            )
            await server.stop(keep=True)
            sim.faults.delay(0.0)
            assert not in_flight.done(), "the in-flight order was answered before the outage"
            placed_at_stop = len(placed)
            for w in watched:
                await within(w.down.wait(), 10.0, f"{w.name}: disconnected")
            during = asyncio.ensure_future(
                b.trading.place_market(portfolio, "SBER", "sell", 1, comment="during")
            )
            await asyncio.sleep(OUTAGE)
            await eventually(lambda: len(placed) >= placed_at_stop + 20, "fills in the outage")
            assert not during.done(), "an order sent while NATS is down was not kept"
            await server.start()
            back_at = time.monotonic()

            for w in watched:
                await within(w.back.wait(), 30.0, f"{w.name}: restored")
            gaps = [await w.next_after(back_at, 15.0) - back_at for w in quotes]
            log.info("NATS back -> first quote at the consumer: %.2f s", max(gaps))
            ack_in_flight = await within(in_flight, 40.0, "the in-flight order's outcome")
            assert a.trading.resent == 1  # sent again (same key) once NATS was back
            ack_during = await within(during, 40.0, "the outcome of the order sent in the outage")
            after = await a.trading.place_market(portfolio, "SBER", "buy", 1, comment="after")
            stop_trading.set()
            await tasks[1]

            true_orders = truth(sim, portfolio, "orders")
            for ack, comment in (
                (ack_in_flight, "in-flight"),
                (ack_during, "during"),
                (after, "after"),
            ):
                ids = {o["id"] for o in true_orders if o.get("comment") == comment}
                assert ids == {ack.order_number}, (comment, ids)  # placed, and only once
            true_trades = {d["id"] for d in truth(sim, portfolio, "trades")}
            final = {d["id"]: (d["status"], d["filled_qty_batch"]) for d in true_orders}
            true_states = {(d["id"], d["status"], d["filled_qty_batch"]) for d in true_orders}

            def last_states(w: Watched) -> dict[str, tuple[str, int | None]]:
                return {o.id: (o.status.value, o.filled_qty_batch) for o in w.values()}

            await eventually(
                lambda: all({t.id for t in w.values()} == true_trades for w in trades),
                "every consumer to have every own trade",
            )
            await eventually(
                lambda: all(last_states(w) == final for w in orders),
                "every consumer to have every order's final state",
            )
            # Orders placed after it subscribed: all of them, in their final state.
            new_orders = by_name["b new orders"]
            ours = {*placed, ack_in_flight.order_number, ack_during.order_number}
            ours.add(after.order_number)
            await eventually(
                lambda: (
                    {k: v for k, v in last_states(new_orders).items() if k in ours}
                    == {k: v for k, v in final.items() if k in ours}
                ),
                "the skip_history consumer to have the final state of every new order",
            )
            for w in trades:
                ids = [t.id for t in w.values()]
                assert len(ids) == len(set(ids)), f"{w.name}: an own trade was delivered twice"
                assert all(isinstance(t, OwnTrade) for t in w.values())
            for w in (*orders, new_orders):
                states = [(o.id, o.status.value, o.filled_qty_batch) for o in w.values()]
                assert len(states) == len(set(states)), f"{w.name}: an order state twice"
                assert set(states) <= true_states
                assert all(isinstance(o, Order) for o in w.values())
            for w in quotes:
                assert all(isinstance(q, Quote) for q in w.values())
            assert all(isinstance(x, OrderBook) for x in by_name["b book"].values())
            # Exactly one gap per stream, and data after it.
            for w in watched:
                assert w.kinds() == ["disconnected", "restored"], (w.name, w.stream.events)
            for w in (*quotes, by_name["b book"]):
                await within(w.next_after(time.monotonic(), 10.0), 15.0, f"{w.name}: data")
            # The gateway's ALOR subscriptions stayed up all along.
            assert lowest[0] == alor_subscriptions

            # -- logs: one line per event, no traceback, no token.
            lines = [
                r
                for r in caplog.records[logged_before:]
                if r.levelno >= logging.WARNING and r.name.split(".")[0] in ("alorws", "nats")
            ]
            text = caplog.text
            assert all(r.exc_info is None for r in caplog.records[logged_before:]), [
                r.getMessage() for r in caplog.records if r.exc_info
            ]
            assert "Traceback" not in text
            assert token not in text
            assert len(lines) <= LOG_LINES_PER_OUTAGE * len(buses), [r.getMessage() for r in lines]
            for bus in buses:
                assert bus.stats()["nats"]["disconnects"] == 1
                assert bus.stats()["nats"]["reconnects"] == 1
            err_text = err_path.read_bytes()[len(err_before) :].decode(errors="replace")
            assert "Traceback" not in err_text, err_text
            assert token not in err_text
            assert len(err_text.splitlines()) <= LOG_LINES_PER_OUTAGE, err_text
            assert "lost the NATS connection" in err_text, err_text
            assert "reconnected to NATS" in err_text, err_text
            for w in watched:
                await w.stop()
    finally:
        stop_trading.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in watched:
            w.task.cancel()
        for bus in buses:
            await bus.aclose()
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10.0):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if not watch_nc.is_closed:
            await watch_nc.close()
        await server.stop()


class Relay:
    """A TCP relay in front of nats-server whose connections can be cut (and new ones refused)
    while the server and everyone else's connections stay up."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: list[asyncio.BaseTransport] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._transports.append(writer.transport)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._transports.append(up_writer.transport)
        if writer.transport.is_closing():  # cut while this one was being opened
            up_writer.transport.abort()
            return

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        await self._server.wait_closed()


@pytest.mark.timeout(60)
async def test_the_gateway_alone_losing_nats_is_one_gap_marker(
    sim: Simulator, client: AlorClient, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the gateway's NATS connection is cut: it drops the quotes it cannot publish, and
    the consumer, whose own connection never dropped and whose renewals all succeed, gets one
    ``disconnected``/``restored`` pair in place (the gateway's marker), then quotes again."""
    caplog.set_level(logging.INFO)
    relay = Relay(nats_server.port or 0)
    await relay.start()
    # A long lease: the consumer renews once now and not again during the cut.
    async with (
        Gateway(client, relay.url, lease_seconds=60.0, market_policy="queue") as gw,
        BusClient(nats_server.url) as bus,
        bus.quotes("SBER", policy="queue") as stream,
    ):
        quotes = Watched("quotes", stream)
        poker = asyncio.ensure_future(poke(sim, ["SBER"]))
        try:
            await within(quotes.next_after(0.0, 10.0), 15.0, "a quote")
            # The renewal the subscribe's lease asked for is done: none is due during the cut.
            await eventually(lambda: bus.renewals == 1, "the first renewal", 5.0)
            renewals = bus.renewals
            logged_before = len(caplog.records)
            await relay.cut()
            await eventually(lambda: gw.counters["dropped_market"] >= 5, "quotes dropped", 10.0)
            assert stream.events == [], "the consumer saw a gap before the gateway was back"
            await relay.start()
            await within(quotes.back.wait(), 20.0, "restored")
            assert quotes.kinds() == ["disconnected", "restored"]
            await within(quotes.next_after(time.monotonic(), 10.0), 15.0, "quotes after")
            assert quotes.kinds() == ["disconnected", "restored"]
            stats = gw.stats()
            assert stats["outage_markers"] >= 1
            assert stats["nats"]["disconnects"] == 1 and stats["nats"]["reconnects"] == 1
            assert bus.stats()["nats"]["disconnects"] == 0
            # The gateway announced itself once back: the consumer renewed at once.
            await eventually(lambda: bus.renewals > renewals, "a renewal", 5.0)
            records = caplog.records[logged_before:]
            assert all(r.exc_info is None for r in records)
            lines = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
            assert 2 <= len(lines) <= LOG_LINES_PER_OUTAGE, lines
            await quotes.stop()
        finally:
            poker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poker
            await relay.cut()


async def test_nats_link_logs_one_line_per_event_without_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """nats-py's callbacks as the gateway and BusClient install them: a lost connection, a
    hundred failed reconnect attempts and the reconnection are three lines, none with a
    traceback or the URL's password; a repeated other error is one line."""
    caplog.set_level(logging.DEBUG, logger="tests.natslink")
    events: list[str] = []

    async def lost() -> None:
        events.append("lost")

    async def back() -> None:
        events.append("back")

    link = NatsLink(
        logging.getLogger("tests.natslink"),
        "gw",
        "nats://alice:s3cret-pw@127.0.0.1:4222",
        on_lost=lost,
        on_back=back,
    )
    await link.error_cb(nats.errors.UnexpectedEOF())  # the read loop's, before the callback
    await link.disconnected_cb()
    for _ in range(100):
        await link.error_cb(ConnectionRefusedError(111, "Connect call failed"))
    await link.reconnected_cb()
    for _ in range(3):
        await link.error_cb(nats.errors.SlowConsumerError("s", "", 1, None))  # type: ignore[arg-type]
    link.closing = True
    await link.disconnected_cb()  # closing on purpose: nothing to say
    assert events == ["lost", "back"]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 4, lines
    assert "lost the NATS connection" in lines[0] and "unexpected EOF" in lines[0]
    assert "attempt 1 " in lines[1]
    assert "reconnected" in lines[2] and "100 failed attempt(s)" in lines[2]
    assert "slow consumer" in lines[3].lower()
    assert all(r.exc_info is None for r in caplog.records)
    assert "s3cret" not in caplog.text and "alice" not in caplog.text
    assert link.stats() == {"connected": True, "disconnects": 1, "reconnects": 1, "attempts": 0}


async def test_retry_logs_a_run_of_failures_in_two_lines(caplog: pytest.LogCaptureFixture) -> None:
    """Retry (the JetStream retries of both sides): the first failure and the success that
    ends the run are one line each, whatever the number of attempts; a failure not worth a
    line does not start a run; the delays are the Backoff's."""
    caplog.set_level(logging.DEBUG, logger="tests.retry")
    retry = Retry(logging.getLogger("tests.retry"), NO_DELAY)
    retry.worked("works")  # no failure before: nothing to say
    delays = retry.delays()
    await retry.failed(delays, "quiet %d", 0, say=False)
    assert not retry.failing
    for attempt in range(1, 50):
        await retry.failed(delays, "failed %d", attempt)
    retry.worked("works again")
    retry.worked("works again")
    assert [r.getMessage() for r in caplog.records] == ["failed 1", "works again"]
    ceilings = Retry(logging.getLogger("tests.retry")).delays()
    assert [next(ceilings) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
