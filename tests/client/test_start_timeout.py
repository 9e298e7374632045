"""``start_timeout`` bounds the start: getting the first token from an auth server that
accepts connections and never answers, or that refuses them, fails within the setting, with the
setting named; later refreshes are not bounded by it. Real sockets on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from alorws import Client
from alorws.client import AlorClient
from alorws.client.auth import TokenManager
from alorws.errors import ConfigurationError, ConnectError, TransportTimeout
from alorws.protocol.backoff import Backoff

from .test_auth import REFRESH, FakeAuth, serve


TOKEN = "x" * 40


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[tuple[int, list[int]]]:
    """A loopback server that accepts every connection and never answers; yields its port and
    a one-item list counting the connections it accepted."""
    accepted = [0]
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):  # reads the request, answers nothing, until EOF
                pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        await server.wait_closed()


@contextlib.contextmanager
def threaded_black_hole() -> Iterator[tuple[int, list[int]]]:
    """:func:`black_hole` served from a thread, for the blocking client (its own loops)."""
    accepted = [0]
    held: list[socket.socket] = []
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted[0] += 1
            held.append(conn)  # kept open, never read from nor written to

    thread = threading.Thread(target=run, name="black-hole", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(10)
        listener.close()
        for conn in held:
            conn.close()


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def attempt_timeout(message: str) -> float:
    """The timeout the last attempt had, as the error message reports it."""
    found = re.search(r"no answer within ([0-9.e+-]+) s", message)
    assert found, message
    return float(found.group(1))


@pytest.mark.timeout(30)
async def test_a_black_hole_fails_the_start_within_start_timeout() -> None:
    """An auth server that accepts and never answers: TransportTimeout naming start_timeout,
    each attempt cut to the time left (not http_timeout's 10 s), no token in the message."""
    async with black_hole() as (port, accepted):
        client = AlorClient(TOKEN, base_url=f"http://127.0.0.1:{port}", start_timeout=1.0)
        with pytest.raises(TransportTimeout) as caught:
            async with client:
                pass
        message = str(caught.value)
        assert "start_timeout" in message
        assert re.search(r"\d+ attempt\(s\) failed in [0-9.]+ s", message), message
        assert attempt_timeout(message) <= 1.0
        assert TOKEN[:8] not in message and TOKEN[:8] not in repr(caught.value)
        assert accepted[0] >= 1
        assert client.stats()["state"] == "closed"


@pytest.mark.timeout(30)
async def test_a_refused_port_is_a_connect_error_naming_the_setting() -> None:
    """Every attempt refused until start_timeout runs out: ConnectError, not TransportTimeout."""
    port = refused_port()
    client = AlorClient(TOKEN, base_url=f"http://127.0.0.1:{port}", start_timeout=1.0)
    with pytest.raises(ConnectError) as caught:
        async with client:
            pass
    assert not isinstance(caught.value, TransportTimeout)
    message = str(caught.value)
    assert "start_timeout" in message and TOKEN[:8] not in message
    assert re.search(r"\d+ attempt\(s\) failed", message), message


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), "30", True, None])
def test_a_bad_start_timeout_is_refused_at_construction(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="start_timeout must be a finite number"):
        AlorClient(TOKEN, base_url="http://127.0.0.1:1", start_timeout=value)


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), "30"])
def test_token_manager_refuses_a_bad_start_timeout(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="start_timeout"):
        TokenManager(TOKEN, "http://127.0.0.1:1", start_timeout=value)


@pytest.mark.timeout(30)
def test_the_blocking_client_fails_its_start_within_start_timeout() -> None:
    """``Client`` passes start_timeout on: the same TransportTimeout, from a blocking start."""
    with threaded_black_hole() as (port, accepted):
        client = Client(TOKEN, base_url=f"http://127.0.0.1:{port}", start_timeout=1.0)
        with pytest.raises(TransportTimeout, match="start_timeout") as caught:
            client.start()
        assert TOKEN[:8] not in str(caught.value)
        assert accepted[0] >= 1
        assert "closed" in repr(client)


@pytest.mark.timeout(30)
async def test_no_pause_is_taken_past_start_timeout() -> None:
    """A retry pause that would end past the budget is not taken: the start fails after the
    first attempt instead of sleeping 60 s."""
    async with serve(FakeAuth(status=503)) as auth:
        tm = TokenManager(
            REFRESH,
            auth.url,
            retry=Backoff(base=60, cap=60, jitter=False, max_attempts=3),
            start_timeout=1.0,
        )
        try:
            with pytest.raises(ConnectError, match=r"1 attempt\(s\) failed .*HTTP 503") as caught:
                await tm.start()
        finally:
            await tm.aclose()
        assert "start_timeout" in str(caught.value) and REFRESH not in str(caught.value)
        assert auth.requests == 1


async def test_retries_within_start_timeout_still_succeed() -> None:
    """Failures the retries get past inside the budget do not fail the start."""
    async with serve(FakeAuth(fail_next=2)) as auth:
        tm = TokenManager(
            REFRESH,
            auth.url,
            retry=Backoff(base=0.01, cap=0.01, jitter=False, max_attempts=3),
            start_timeout=20.0,
        )
        try:
            await tm.start()
            assert tm.current is not None
        finally:
            await tm.aclose()
        assert auth.requests == 3


async def test_later_refreshes_are_not_bounded_by_start_timeout() -> None:
    """After the start, a refresh slower than start_timeout (but within http_timeout) works."""
    async with serve(FakeAuth()) as auth:
        tm = TokenManager(REFRESH, auth.url, http_timeout=20.0, start_timeout=0.3)
        try:
            await tm.start()
            first = tm.current
            auth.delay = 1.0  # every answer from now on comes after more than start_timeout
            fresh = await tm.refresh(force=True)
            assert fresh != first and tm.current == fresh
            assert tm.stats["failures"] == 0
        finally:
            await tm.aclose()


@pytest.mark.timeout(30)
async def test_a_start_that_joins_a_slow_refresh_waits_no_longer_than_start_timeout() -> None:
    """start() while an unbounded refresh is under way: it gives up on that refresh after
    start_timeout, without cancelling it for the caller that started it."""
    hold = asyncio.Event()
    async with serve(FakeAuth(hold=hold)) as auth:
        tm = TokenManager(REFRESH, auth.url, http_timeout=20.0, start_timeout=0.3)
        try:
            first = asyncio.create_task(tm.token())
            async with asyncio.timeout(10):
                await auth.received.wait()
            with pytest.raises(TransportTimeout, match="start_timeout=0.3 s") as caught:
                await tm.start()
            assert REFRESH not in str(caught.value)
            assert not first.done()
            hold.set()
            async with asyncio.timeout(10):
                assert await first == tm.current
            assert auth.requests == 1
        finally:
            hold.set()
            await tm.aclose()
