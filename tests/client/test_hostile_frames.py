"""Hostile frames over a real socket: a frame that does not decode (nested a thousand levels
deep, echoing a token, unreadable) is that frame's problem: it is counted, logged once per kind
without its token, and the stream goes on with the next frame."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from alorws.client import AlorClient, HttpClient, TokenManager
from alorws.client.streams import Stream
from alorws.errors import AuthError, FrameError
from alorws.sim.app import Simulator

from .._hostile import JWT, REFRESH, SECRETS, deep, echoed_token, good, marker_of


async def _until_marker(stream: Stream[Any], kind: str, marker: int, *, batch: bool) -> None:
    """Consume ``stream`` (``async for`` or ``get_batch``) until the injected ``marker``."""
    async with asyncio.timeout(15):
        if batch:
            while True:
                if any(marker_of(kind, obj) == marker for obj in await stream.get_batch(100)):
                    return
        async for obj in stream:
            if marker_of(kind, obj) == marker:
                return
    raise AssertionError(f"{stream.name} ended before marker {marker}")


def _streams(client: AlorClient) -> dict[str, Stream[Any]]:
    portfolio = client.portfolios[0]
    return {
        # queue: a conflating buffer could replace the bad frame before it is decoded
        "quotes": client.quotes("SBER", policy="queue"),
        "trades": client.all_trades("SBER"),
        "orders": client.orders(portfolio),
    }


@pytest.mark.usefixtures("reader")  # both readers
async def test_deeply_nested_frames_are_skipped_and_counted(
    client: AlorClient, sim: Simulator
) -> None:
    """A data frame nested 6000 levels deep, sent to quotes, all-trades and orders streams, is
    counted in ``bad_payloads`` and skipped; the good frame behind it arrives, whether the
    consumer uses ``async for`` or ``get_batch``."""
    streams = _streams(client)
    await client.subscribe_all(list(streams.values()))
    try:
        marker = 0
        async with aiohttp.ClientSession(sim.url) as admin:
            for kind, stream in streams.items():
                assert stream.guid is not None
                for batch in (False, True):
                    marker += 1
                    # the simulator's admin endpoint, as `alorws sim --admin` serves it
                    frame = deep(stream.guid).decode()
                    async with admin.post("/sim/inject", json={"frame": frame}) as reply:
                        assert (await reply.json())["injected"] >= 1
                    assert sim.faults.inject(good(kind, stream.guid, marker), kind="ws") >= 1
                    await _until_marker(stream, kind, marker, batch=batch)
            assert stream.bad_payloads == 2, kind
            assert stream.stats()["bad_payloads"] == 2
            assert stream.is_open
    finally:
        for stream in streams.values():
            await stream.aclose()


@pytest.mark.usefixtures("reader")  # both readers
async def test_a_flood_of_bad_frames_logs_once_per_kind(
    client: AlorClient, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """200 bad frames of two kinds: every one is counted, the log gets one line per kind."""
    caplog.set_level(logging.WARNING, logger="alorws")
    async with client.quotes("SBER", policy="queue") as quotes:
        assert quotes.guid is not None
        for _ in range(100):
            sim.faults.inject(deep(quotes.guid), kind="ws")
            sim.faults.inject(
                b'{"data":{"symbol":1,"pad":"' + b"x" * 200 + b'"},"guid":"'
                + quotes.guid.encode() + b'"}',
                kind="ws",
            )  # fmt: skip
        sim.faults.inject(good("quotes", quotes.guid, 7), kind="ws")
        await _until_marker(quotes, "quotes", 7, batch=True)
        assert quotes.bad_payloads == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "alorws.stream"]
    assert len(lines) == 2, lines
    assert any("RecursionError" in line for line in lines)
    assert any("ValidationError" in line for line in lines)


@pytest.mark.usefixtures("reader")  # both readers
async def test_an_echoed_token_never_reaches_the_log(
    client: AlorClient, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that echoes a request's token in a bad frame: the stream's log line (a bad
    payload), the lane's (an unreadable frame) and /cws's carry neither the JWT, nor the part
    of it inside the 200-character excerpt, nor the refresh token."""
    caplog.set_level(logging.DEBUG, logger="alorws")
    async with client.quotes("GAZP", policy="queue") as quotes:
        assert quotes.guid is not None
        sim.faults.inject(echoed_token(quotes.guid), kind="ws")  # reaches the stream
        sim.faults.inject(b'{"guid":"x","token":"' + JWT.encode() + b'","data":', kind="ws")
        sim.faults.inject(good("quotes", quotes.guid, 8), kind="ws")
        await _until_marker(quotes, "quotes", 8, batch=False)
        assert quotes.bad_payloads == 1
    # /cws: the order connection gets an unreadable frame with a token in it
    await client.trading.place_market(client.portfolios[0], "SBER", "buy", 1)
    assert sim.faults.inject(b'{"requestGuid":"' + JWT.encode() + b'","httpCode":', kind="cws")
    await client.trading.place_market(client.portfolios[0], "SBER", "sell", 1)
    assert client.trading.stats()["bad_frames"] == 1
    by_logger = {r.name for r in caplog.records if "frame starts" in r.getMessage()}
    assert {"alorws.stream", "alorws.lane", "alorws.orders"} <= by_logger
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "<token>" in text and "<redacted>" in text
    for secret in SECRETS:
        assert secret not in text


@contextlib.asynccontextmanager
async def _serving(method: str, path: str, bodies: list[str]) -> AsyncIterator[int]:
    """A loopback HTTP server answering ``method path`` with each of ``bodies`` in turn; yields
    its port."""
    served = iter(bodies)

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(text=next(served), content_type="application/json")

    app = web.Application()
    app.router.add_route(method, path, answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_http_answers_with_a_token_or_nested_deep_are_frame_errors_without_it() -> None:
    """The HTTP client: an answer that echoes a token where a number belongs, or a body nested
    thousands deep, raises FrameError (never RecursionError) whose message has no token."""
    bodies = [
        '{"token":"' + JWT + '","refreshToken":"' + REFRESH + '"}',
        "[" * 6000 + "]" * 6000,
        '"' + JWT + '"',
    ]
    async with _serving("GET", "/md/v2/time", bodies) as port:
        async with HttpClient(f"http://127.0.0.1:{port}") as http:
            for _ in bodies:
                with pytest.raises(FrameError) as info:
                    await http.server_time()
                text = str(info.value) + repr(info.value)
                for secret in SECRETS:
                    assert secret not in text


async def test_an_auth_server_answer_nested_deep_is_an_auth_error() -> None:
    """The token refresh: an answer nested thousands deep, or an access token whose claims
    are, is an AuthError saying the answer is unusable (never a RecursionError)."""
    claims = base64.urlsafe_b64encode(b'{"exp":' + b"[" * 6000 + b"]" * 6000 + b"}").rstrip(b"=")
    bodies = [
        "[" * 6000 + "]" * 6000,
        '{"AccessToken":"eyJhbGciOiJub25lIn0.' + claims.decode() + '.c2ln"}',
    ]
    async with _serving("POST", "/refresh", bodies) as port:
        for _ in bodies:
            tokens = TokenManager(REFRESH, f"http://127.0.0.1:{port}")
            try:
                with pytest.raises(AuthError, match="access token") as info:
                    await tokens.start()
                assert REFRESH not in str(info.value)
            finally:
                await tokens.aclose()
