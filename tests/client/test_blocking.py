"""alorws.Client, the blocking facade, against a simulator serving from its own thread: plain
scripts and threads, a thread whose event loop runs (as in Jupyter), streams, every order type,
a drop and restore under a blocking consumer, eight threads on one client, callbacks and the
connection hooks (of ``Client`` and ``AlorClient``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from alorws import (
    Bar,
    Client,
    ConnectionEvent,
    InvalidState,
    Order,
    OrderAck,
    OrderBook,
    OrderRejected,
    Quote,
    QuotesRequest,
    Security,
    StreamClosed,
    StreamTimeout,
    Summary,
    Trade,
)
from alorws.client import AlorClient, LaneEvent
from alorws.client.buffer import Policy, StreamBuffer
from alorws.sim.app import Simulator
from alorws.sim.background import SimulatorThread

from .._sim import DAY
from .conftest import FAST


#: Bounds every wait of these tests (generous: the machine is shared).
WAIT = 20.0
#: Reconnect at once, find dead connections within seconds.
QUICK: dict[str, Any] = {"backoff": FAST, "ping_interval": 1.0, "ping_timeout": 1.0}


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    """A lively simulator with the fault API, in a thread of its own (the tests block)."""
    with SimulatorThread(
        port=0, day_order_lifetime=DAY, seed=7, rate=50.0, admin=True, history_days=1
    ) as s:
        yield s


@pytest.fixture
def client(sim: SimulatorThread) -> Iterator[Client]:
    """An open blocking client of the demo account."""
    with Client(sim.demo_refresh_token, base_url=sim.url, **QUICK) as c:
        yield c


def drop(sim: SimulatorThread, kind: str) -> int:
    """Drop every connection of ``kind`` (``ws``/``cws``) in the simulator's loop."""
    return sim.call(sim.simulator.faults.drop, 1006, None, kind)


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a new plain thread (no event loop) and return what it returns."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(WAIT * 2)


class Recorder:
    """Collects calls (hooks, callbacks) from any thread; waits for a condition on them."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait(self, predicate: Callable[[list[Any]], bool], timeout: float = WAIT) -> list[Any]:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.items), timeout), self.items
            return list(self.items)


class Interrupted(Exception):
    """What this test's SIGINT handler raises (a KeyboardInterrupt would stop pytest)."""


def _parked(buffer: StreamBuffer[Any]) -> bool:
    """Whether a consumer waits on ``buffer`` now (looked at until it does, bounded)."""
    deadline = time.monotonic() + WAIT
    while buffer._waiter is None and time.monotonic() < deadline:
        time.sleep(0)  # a yield of the GIL, not a wait for time to pass
    return buffer._waiter is not None


# -- the buffer's blocking wait ---------------------------------------------------------------


def test_a_blocked_thread_is_woken_by_a_push_from_another_thread() -> None:
    """wait() returns True once another thread pushes, False after its timeout, True at
    close; a second waiter at once is refused."""
    buf: StreamBuffer[int] = StreamBuffer(Policy.QUEUE, name="t")
    assert buf.wait(0.01) is False
    started = threading.Event()

    def producer() -> None:
        started.wait(WAIT)
        buf.push(7)

    t = threading.Thread(target=producer)
    t.start()
    started.set()
    assert buf.wait(WAIT) is True and buf.get_nowait() == 7
    t.join(WAIT)
    assert buf.stats()["wakeups"] <= buf.stats()["parks"]

    waiting = threading.Event()
    result: list[bool] = []

    def waiter() -> None:
        waiting.set()
        result.append(buf.wait(WAIT))

    t = threading.Thread(target=waiter)
    t.start()
    waiting.wait(WAIT)
    assert _parked(buf)
    with pytest.raises(InvalidState, match="one consumer at a time"):
        buf.wait(0)
    buf.close()
    t.join(WAIT)
    assert result == [True]
    with pytest.raises(StreamClosed):
        buf.get_nowait()


# -- where it runs ------------------------------------------------------------------------------


def _quote_and_history(c: Client) -> tuple[Quote, list[Bar]]:
    quote = c.quotes("SBER").get(timeout=WAIT)
    now = int(time.time())
    return quote, c.http.history("SBER", 60, now - 3600, now)


def test_in_a_plain_thread(sim: SimulatorThread) -> None:
    """Made, used and closed in a thread without an event loop: a quote and an hour of bars,
    the same bars through iter_history as a plain iterator, AlorClient's other names."""

    def script() -> tuple[Quote, list[Bar], list[Bar], dict[str, Any] | None]:
        with Client(sim.demo_refresh_token, base_url=sim.url) as c:
            quote, bars = _quote_and_history(c)
            # The last minute may still be forming (the simulator trades into it between the
            # two calls): walk the ones before it.
            with c.http.iter_history("SBER", 60, bars[0].time, bars[-2].time) as pages:
                walked = list(pages)
            stream = c.quotes("SBER")
            assert stream.stream.guid is not None
            return quote, bars, walked, c.describe(stream.stream.guid)

    quote, bars, walked, described = in_thread(script)
    assert isinstance(quote, Quote) and quote.symbol == "SBER" and quote.last_price > 0
    assert len(bars) > 1 and all(isinstance(b, Bar) for b in bars) and walked == bars[:-1]
    assert described is not None and described["opcode"] == "QuotesSubscribe"
    assert Client.__doc__ and "AlorClient" in Client.__doc__


def test_inside_a_running_event_loop(sim: SimulatorThread) -> None:
    """Called synchronously from a coroutine (a Jupyter cell's thread has a running loop): it
    neither needs nor disturbs that loop, and the loop's own tasks go on afterwards."""

    async def cell() -> tuple[Quote, list[Bar], list[Quote]]:
        loop = asyncio.get_running_loop()
        with Client(sim.demo_refresh_token, base_url=sim.url) as c:
            quote, bars = _quote_and_history(c)
            stream = c.quotes("GAZP")
            got = [stream.latest(timeout=WAIT)]
            got += [q for _, q in zip(range(2), stream, strict=False)]
        assert asyncio.get_running_loop() is loop
        await asyncio.sleep(0)  # the caller's loop still runs
        return quote, bars, got

    quote, bars, gazp = asyncio.run(cell())
    assert quote.symbol == "SBER" and bars
    assert [q.symbol for q in gazp] == ["GAZP"] * 3


# -- streams ------------------------------------------------------------------------------------


def test_streams_of_several_kinds(client: Client) -> None:
    """Market and account streams and stream(request) deliver their models; get_batch takes
    what waits; a stream closed in one thread ends the iteration of another."""
    portfolio = client.portfolios[0]
    with client.order_book("SBER", depth=5) as book:
        first = book.get(timeout=WAIT)
        assert isinstance(first, OrderBook) and 0 < len(first.bids) <= 5
    assert not book.is_open
    with pytest.raises(StreamClosed):
        book.get(timeout=WAIT)

    bars = client.bars("SBER", 60, from_=int(time.time()) - 600)
    batch = bars.get_batch(100, timeout=WAIT)
    assert batch and all(isinstance(b, Bar) for b in batch)
    trades = client.all_trades("SBER", depth=5)
    assert isinstance(trades.get(timeout=WAIT), Trade)
    summaries = client.summaries(portfolio)
    assert isinstance(summaries.latest(timeout=WAIT), Summary)
    quotes = client.stream(QuotesRequest(code="LKOH"))
    assert quotes.get(timeout=WAIT).symbol == "LKOH"
    assert quotes.policy is Policy.LATEST and quotes.model is Quote

    # A consumer blocked in another thread sees the end of the stream when it is closed.
    orders = client.orders(portfolio, skip_history=True)
    blocked = threading.Event()

    def consume() -> list[Order]:
        blocked.set()
        return list(orders)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        got = pool.submit(consume)
        blocked.wait(WAIT)
        orders.close()
        assert got.result(WAIT) == []


def test_timeouts_and_use_after_close_say_what(sim: SimulatorThread) -> None:
    """A get that times out names the stream and the time; the stream goes on. Every call
    after close raises InvalidState; before start too."""
    c = Client(sim.demo_refresh_token, base_url=sim.url)
    with pytest.raises(InvalidState, match="not started|new"):
        c.quotes("SBER")
    c.start()
    try:
        # At most one quote a minute: the first comes at once, then nothing for a while.
        quotes = c.quotes("SBER", frequency=60_000)
        assert quotes.get(timeout=WAIT).symbol == "SBER"
        with pytest.raises(StreamTimeout, match=r"quotes SBER.*: no message within 0\.05 s"):
            quotes.get(timeout=0.05)
        assert quotes.is_open
    finally:
        c.close()
    c.close()  # idempotent
    with pytest.raises(StreamClosed):
        quotes.get(timeout=WAIT)
    for call in (
        lambda: c.quotes("SBER"),
        lambda: c.trading,
        lambda: c.http,
        lambda: c.drop_connections(),
    ):
        with pytest.raises(InvalidState, match="closed"):
            call()


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="POSIX signals")
def test_an_interrupt_stops_a_blocked_get_and_the_stream_goes_on(client: Client) -> None:
    """Ctrl-C (a notebook's interrupt) ends a get blocked in the main thread: the waiter is
    withdrawn and the stream can be read again."""
    assert threading.current_thread() is threading.main_thread()
    quotes = client.quotes("SBER", frequency=60_000)  # one quote at once, then none for a while
    assert quotes.get(timeout=WAIT).symbol == "SBER"
    buffer = quotes.stream._buffer
    main = threading.main_thread().ident
    assert main is not None

    def interrupt() -> None:
        if _parked(buffer):
            signal.pthread_kill(main, signal.SIGINT)

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGINT, handler)
    try:
        sender = threading.Thread(target=interrupt)
        sender.start()
        with pytest.raises(Interrupted):
            quotes.get(timeout=WAIT)
        sender.join(WAIT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert buffer._waiter is None and quotes.is_open
    with pytest.raises(StreamTimeout):  # not InvalidState: the interrupted waiter is gone
        quotes.get(timeout=0.01)


# -- orders -------------------------------------------------------------------------------------


def test_every_order_type(client: Client) -> None:
    """Limit, market, stop and stop-limit orders are placed, modified and cancelled through
    client.trading; the acks are the async client's OrderAck; a refusal is OrderRejected; the
    orders stream sees them."""
    portfolio = client.portfolios[0]
    last = client.quotes("SBER").latest(timeout=WAIT).last_price
    far_sell, far_buy = round(last * 1.1, 1), round(last * 0.9, 1)
    trading = client.trading
    orders = client.orders(portfolio, skip_history=True)

    market = trading.place_market(portfolio, "SBER", "buy", 1, comment="m")
    limit = trading.place_limit(portfolio, "SBER", "sell", 1, far_sell)
    stop = trading.place_stop(portfolio, "SBER", "sell", 1, far_buy, "less")
    stop_limit = trading.place_stop_limit(
        portfolio, "SBER", "buy", 1, far_sell, far_sell, "moreorequal"
    )
    acks = [market, limit, stop, stop_limit]
    assert all(isinstance(a, OrderAck) and a.http_code == 200 for a in acks)
    assert len({a.order_number for a in acks}) == 4

    new_limit = trading.modify_limit(limit.order_number, portfolio, "SBER", "sell", 2, far_sell)
    new_stop = trading.modify_stop(stop.order_number, portfolio, "SBER", "sell", 2, far_buy, "less")
    new_stop_limit = trading.modify_stop_limit(
        stop_limit.order_number, portfolio, "SBER", "buy", 2, far_sell, far_sell, "more"
    )
    for old, new in ((limit, new_limit), (stop, new_stop), (stop_limit, new_stop_limit)):
        assert new.order_number != old.order_number
    for ack, kind in ((new_limit, "limit"), (new_stop, "stop"), (new_stop_limit, "stopLimit")):
        assert trading.cancel(ack.order_number, portfolio, kind=kind).order_number == (
            ack.order_number
        )
    with pytest.raises(OrderRejected) as refused:
        trading.place_limit(portfolio, "SBER", "buy", 1, round(last * 0.5, 1))
    assert refused.value.http_code == 400

    seen: set[str] = set()
    while not {market.order_number, new_limit.order_number} <= seen:
        seen.add(orders.get(timeout=WAIT).id)
    assert trading.stats()["acks"] == 10


# -- restore ------------------------------------------------------------------------------------


def test_a_blocking_consumer_iterates_through_a_drop_and_restore(
    sim: SimulatorThread, client: Client
) -> None:
    """A thread iterating quotes goes on through a drop: it sees disconnected then restored
    (on_event, in its own thread) and quotes after them; an account stream iterated the same
    way is made whole after the restore (its HTTP snapshot is fetched in the client's loop)
    and delivers an order placed after it."""
    portfolio = client.portfolios[0]
    quotes = client.quotes("SBER")
    orders = client.orders(portfolio, skip_history=True)
    events = Recorder()
    quotes.on_event(events)
    orders.on_event(events)
    got_one = threading.Event()
    after: list[Quote] = []
    restored_orders: list[Order] = []

    def consume_quotes() -> None:
        for q in quotes:
            got_one.set()
            if any(e.kind == "restored" for e in quotes.events):
                after.append(q)
                if len(after) == 3:
                    return

    def consume_orders() -> None:
        for order in orders:
            restored_orders.append(order)
            return

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        try:
            q_done = pool.submit(consume_quotes)
            o_done = pool.submit(consume_orders)
            assert got_one.wait(WAIT)
            assert drop(sim, "ws") == 2  # the market lane and the account lane
            q_done.result(WAIT)
            # Both consumers take their lane's events as they come (events wake them too).
            kinds = events.wait(lambda items: sum(e.kind == "restored" for e in items) == 2)
            assert [e.kind for e in quotes.events] == ["disconnected", "restored"]
            ack = client.trading.place_limit(
                portfolio, "SBER", "sell", 1, round(after[-1].last_price * 1.1, 1)
            )
            o_done.result(WAIT)
        finally:  # a failure must not leave the consumers blocked
            quotes.close()
            orders.close()
    assert restored_orders[0].id == ack.order_number
    assert [e.kind for e in orders.events] == ["disconnected", "restored"]
    assert all(isinstance(e, LaneEvent) for e in kinds)
    assert len(after) == 3 and client.stats()["reconnects"] == 2


# -- threads ------------------------------------------------------------------------------------


def test_eight_threads_share_one_client(client: Client) -> None:
    """Eight threads at once subscribe, read, call HTTP and place and cancel orders on one
    client, and take from one shared stream (each message goes to one of them)."""
    portfolio = client.portfolios[0]
    symbols = ["SBER", "GAZP", "LKOH", "SBERP"]
    last = {s: client.quotes(s).latest(timeout=WAIT).last_price for s in symbols}
    shared = client.all_trades("SBER", depth=50)
    start = threading.Barrier(8, timeout=WAIT)

    def work(i: int) -> tuple[str, Security, OrderAck, OrderAck, list[Trade]]:
        symbol = symbols[i % len(symbols)]
        start.wait()
        with client.quotes(symbol) as q:
            quote = q.get(timeout=WAIT)
        security = client.http.security(symbol, "MOEX")
        ack = client.trading.place_limit(
            portfolio, "SBER", "sell", 1, round(last["SBER"] * 1.1, 1), comment=f"t{i}"
        )
        cancelled = client.trading.cancel(ack.order_number, portfolio)
        taken = shared.get_batch(2, timeout=WAIT)
        return quote.symbol, security, ack, cancelled, taken

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = [f.result(WAIT * 2) for f in [pool.submit(work, i) for i in range(8)]]
    for i, (symbol, security, ack, cancelled, taken) in enumerate(results):
        assert symbol == symbols[i % len(symbols)] and security.symbol == symbol
        assert cancelled.order_number == ack.order_number
        assert taken and all(isinstance(t, Trade) for t in taken)
    assert len({r[2].order_number for r in results}) == 8
    ids = [t.id for r in results for t in r[4]]
    assert len(ids) == len(set(ids))  # no trade went to two threads


# -- callbacks ----------------------------------------------------------------------------------


def test_callbacks_run_in_a_worker_thread_and_survive_failures(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """on(callback) runs each message through the callbacks in the stream's own thread; one
    that raises is logged and the next messages still come; close() ends the thread."""
    got = Recorder()
    calls = 0

    def failing(q: Quote) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("boom")

    caplog.set_level(logging.ERROR, logger="alorws.blocking")
    stream = client.quotes("SBER").on(failing).on(got)
    got.wait(lambda items: len(items) >= 3)
    stream.close()
    assert got.threads == {"alorws-on quotes SBER"}
    assert all(isinstance(q, Quote) for q in got.items)
    assert "callback" in caplog.text and "boom" in caplog.text
    assert stream._worker is not None and not stream._worker.is_alive()


# -- connection hooks -----------------------------------------------------------------------------


def test_client_hooks_fire_on_connect_drop_and_restore(
    sim: SimulatorThread, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The blocking client's hooks run in its hook thread with what happened: connect for
    each lane and /cws, disconnect with the reason, restore with the subscriptions re-sent;
    a hook that raises is logged and the others still run."""
    hooks = Recorder()
    caplog.set_level(logging.ERROR, logger="alorws.hooks")

    def broken(event: ConnectionEvent) -> None:
        raise RuntimeError("hook bug")

    client.on_connect(broken)
    for register in (client.on_connect, client.on_disconnect, client.on_restore):
        register(hooks)
    client.quotes("SBER")
    client.quotes("GAZP")
    portfolio = client.portfolios[0]
    client.orders(portfolio)
    client.trading.place_market(portfolio, "SBER", "buy", 1)
    hooks.wait(lambda items: len(items) >= 3)  # market, account, orders
    assert drop(sim, "ws") == 2 and drop(sim, "cws") == 1
    items = hooks.wait(lambda items: sum(e.kind == "restore" for e in items) >= 3)
    assert hooks.threads == {"alorws-client-hooks"}
    by = {(e.kind, e.connection): e for e in reversed(items)}  # the first of each
    assert set(by) == {
        (kind, conn)
        for kind in ("connect", "disconnect", "restore")
        for conn in ("market", "account", "orders")
    }
    assert by[("restore", "market")].restored == 2 and by[("restore", "account")].restored == 1
    assert "connection lost" in by[("disconnect", "market")].reason  # 1006: no close frame
    assert by[("restore", "orders")].downtime >= 0
    assert "hook bug" in caplog.text
    assert client.quotes("LKOH").get(timeout=WAIT).symbol == "LKOH"  # the lanes go on


async def test_alor_client_hooks_run_in_the_consumer_loop() -> None:
    """AlorClient's hooks run in the loop it was started in, never in the I/O thread; a
    coroutine hook runs as a task there; a removed hook is not called."""
    async with (
        Simulator(port=0, day_order_lifetime=DAY, seed=7, rate=50.0, admin=True) as sim,
        AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as client,
    ):
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, str, bool]] = []
        restored = asyncio.Event()
        removed: list[ConnectionEvent] = []

        def hook(event: ConnectionEvent) -> None:
            same = asyncio.get_running_loop() is loop
            seen.append((event.kind, threading.current_thread().name, same))

        async def on_restore(event: ConnectionEvent) -> None:
            await asyncio.sleep(0)
            restored.set()

        client.on_connect(hook)
        client.on_disconnect(hook)
        client.on_restore(on_restore)
        client.on_restore(removed.append)()  # registered, then removed at once
        async with client.quotes("SBER") as quotes:
            await quotes.get()
            sim.faults.drop(1006)
            async with asyncio.timeout(WAIT):
                await restored.wait()
        assert [kind for kind, _, _ in seen] == ["connect", "disconnect", "connect"]
        assert {name for _, name, _ in seen} == {threading.current_thread().name}
        assert all(same for _, _, same in seen) and removed == []
