"""alorws.Client misused: bad timeouts and batch sizes, coroutine functions where plain ones run,
calls after close, a callback that blocks for a long time, a close while threads wait; against
a simulator serving from its own thread over 127.0.0.1."""

from __future__ import annotations

import concurrent.futures
import datetime
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from alorws import Client, InvalidState, StreamClosed, StreamTimeout
from alorws.errors import ConfigurationError, InvalidArgumentError
from alorws.sim.background import SimulatorThread

from .._sim import DAY
from .conftest import FAST


#: Bounds every wait of these tests (generous: the machine is shared).
WAIT = 20.0


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(port=0, day_order_lifetime=DAY, seed=11, rate=50.0, admin=True) as s:
        yield s


@pytest.fixture
def client(sim: SimulatorThread) -> Iterator[Client]:
    with Client(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as c:
        yield c


@pytest.mark.parametrize("timeout", [-1, -0.5, float("nan"), "1", True, b"1", [1]])
def test_bad_timeouts_raise_invalid_argument(client: Client, timeout: Any) -> None:
    """A timeout that is not a number of seconds >= 0 is refused up front, by every taking
    method, with the argument named; the stream goes on."""
    quotes = client.quotes("SBER")
    for take in (quotes.get, quotes.latest, quotes.get_batch):
        with pytest.raises(InvalidArgumentError, match="timeout"):
            take(timeout=timeout)
    assert quotes.get(timeout=WAIT).symbol == "SBER"


def test_infinite_timeout_waits_like_none(client: Client) -> None:
    assert client.quotes("SBER").get(timeout=float("inf")).symbol == "SBER"


def test_zero_timeout_is_a_poll(client: Client) -> None:
    quotes = client.quotes("SBER")
    quotes.get(timeout=WAIT)
    try:
        quotes.get(timeout=0)
    except StreamTimeout:
        pass  # nothing waiting: the one allowed outcome besides a message


@pytest.mark.parametrize("max_items", [0, -1, "3", 1.5, None])
def test_bad_batch_size(client: Client, max_items: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="max_items"):
        client.quotes("SBER").get_batch(max_items, timeout=WAIT)


def test_coroutine_callback_and_hook_are_refused(client: Client) -> None:
    """A coroutine function would never be awaited in the callback or hook thread."""

    async def handler(_: object) -> None:  # pragma: no cover - never called
        pass

    with pytest.raises(InvalidArgumentError, match="coroutine"):
        client.quotes("SBER").on(handler)
    for register in (client.on_connect, client.on_disconnect, client.on_restore):
        with pytest.raises(InvalidArgumentError, match="coroutine"):
            register(handler)


def test_names_after_close_speak_of_client(sim: SimulatorThread) -> None:
    """After close(), AlorClient's own names raise InvalidState in Client's words, not
    ``async with AlorClient``."""
    client = Client(sim.demo_refresh_token, base_url=sim.url, backoff=FAST)
    with pytest.raises(InvalidState, match="Client is new"):
        _ = client.portfolios
    client.start()
    assert client.portfolios
    client.close()
    for read in (lambda: client.portfolios, lambda: client.instruments):
        with pytest.raises(InvalidState) as err:
            read()
        assert "AlorClient" not in str(err.value) and "closed" in str(err.value)


def test_blocked_callback_stalls_only_its_stream(client: Client) -> None:
    """A callback stuck for as long as the test likes holds its own stream only: another
    stream keeps delivering (the reader is not stalled), and closing the client releases
    every waiter."""
    release = threading.Event()
    entered = threading.Event()

    def stuck(_: object) -> None:
        entered.set()
        release.wait(WAIT)

    client.quotes("SBER").on(stuck)
    assert entered.wait(WAIT)
    other = client.quotes("GAZP")
    got = [other.get(timeout=WAIT) for _ in range(3)]
    assert {q.symbol for q in got} == {"GAZP"}
    release.set()


def test_close_wakes_threads_blocked_in_get(sim: SimulatorThread) -> None:
    """Threads blocked in get() on a quiet stream wake with StreamClosed when another thread
    closes the client; none hangs."""
    client = Client(sim.demo_refresh_token, base_url=sim.url, backoff=FAST).start()
    stream = client.orders(client.portfolios[0])  # no orders are placed: it stays quiet
    started = threading.Barrier(4)

    def wait() -> BaseException | None:
        started.wait(WAIT)
        try:
            stream.get()
        except BaseException as exc:
            return exc
        return None

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(wait) for _ in range(3)]
        started.wait(WAIT)
        client.close()
        outcomes = [f.result(WAIT) for f in futures]
    assert all(isinstance(o, StreamClosed) for o in outcomes), outcomes


def test_an_unknown_policy_is_named(client: Client) -> None:
    """A misspelt policy was a bare ValueError from the enum."""
    with pytest.raises(InvalidArgumentError, match="policy: 'lastest' is not one of latest"):
        client.quotes("SBER", policy="lastest")  # type: ignore[arg-type]


def test_callback_may_subscribe_and_close_the_client(sim: SimulatorThread) -> None:
    """From inside a callback (its own thread) the client can be used, and closed, without a
    deadlock; the callback thread then ends."""
    client = Client(sim.demo_refresh_token, base_url=sim.url, backoff=FAST).start()
    outcome: list[object] = []
    done = threading.Event()

    def once(_: object) -> None:
        if outcome:
            return
        outcome.append(client.quotes("GAZP").get(timeout=WAIT).symbol)
        client.close()
        outcome.append(threading.current_thread().name)
        done.set()

    stream = client.quotes("SBER").on(once)
    assert done.wait(WAIT)
    assert outcome == ["GAZP", "alorws-on quotes SBER"]
    worker = stream._worker
    assert worker is not None
    worker.join(WAIT)
    assert not worker.is_alive() and not stream.is_open
    with pytest.raises(InvalidState):
        client.quotes("SBER")


def test_iteration_ends_when_another_thread_closes_the_stream(client: Client) -> None:
    stream = client.quotes("SBER")
    first = threading.Event()
    seen: list[str] = []

    def iterate() -> None:
        for quote in stream:
            seen.append(quote.symbol)
            first.set()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ended = pool.submit(iterate)
        assert first.wait(WAIT)
        stream.close()
        ended.result(WAIT)  # returns (StopIteration), never hangs or raises
    assert seen and set(seen) == {"SBER"}


def test_system_exit_in_a_callback_or_hook_ends_nothing(
    sim: SimulatorThread, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """sys.exit() in a callback or hook ended its thread silently: the stream's later
    messages and every later hook were never delivered. It is logged like any failure."""
    calls: list[str] = []
    more = threading.Event()

    def leave(quote: Any) -> None:
        calls.append(quote.symbol)
        if len(calls) == 1:
            raise SystemExit(3)
        if len(calls) >= 3:
            more.set()

    client.quotes("SBER").on(leave)
    assert more.wait(WAIT)

    kinds: list[str] = []
    lost = threading.Semaphore(0)

    def first_hook(event: Any) -> None:
        raise SystemExit

    def later_hook(event: Any) -> None:
        kinds.append(event.kind)
        lost.release()

    back = threading.Semaphore(0)
    client.on_disconnect(first_hook)
    client.on_disconnect(later_hook)
    client.on_connect(lambda _: back.release())
    for _ in range(2):
        assert sim.call(sim.simulator.faults.drop, 1006, None, "ws") >= 1
        assert lost.acquire(timeout=WAIT)
        assert back.acquire(timeout=WAIT)  # reconnected: the next drop has a connection
    assert kinds.count("disconnect") == 2
    assert "callback" in caplog.text and "disconnect hook" in caplog.text


@pytest.mark.parametrize("max_buffer", [0, -1, "5", 2.5])
def test_a_bad_stream_buffer_bound(client: Client, max_buffer: Any) -> None:
    """0 was silently the client's default; a str failed inside the buffer."""
    with pytest.raises(InvalidArgumentError, match="max_buffer"):
        client.all_trades("SBER", max_buffer=max_buffer)


def test_a_bad_on_event_callback_is_refused_at_once(client: Client) -> None:
    """None or a coroutine function was accepted and failed (logged) at every event."""

    async def handler(_: object) -> None:  # pragma: no cover - never called
        pass

    stream = client.quotes("SBER")
    for bad in (None, 3, handler):
        with pytest.raises(InvalidArgumentError, match="callback"):
            stream.on_event(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="callback"):
            stream.stream.on_event(bad)  # type: ignore[arg-type]


def test_a_schedule_replaced_by_something_else(client: Client) -> None:
    """client.schedules is the user's to replace entries of: a value that is not a Schedule
    was an AttributeError deep in session()."""
    client.schedules["futures"] = "09:00-23:50"
    with pytest.raises(ConfigurationError, match=r"schedules\['futures'\] is a str"):
        client.session("FORTS")
    with pytest.raises(InvalidArgumentError, match="aware datetime"):
        client.session("TQBR", datetime.datetime(2026, 12, 7, 12))
