"""The access-token manager against a tiny auth server on loopback (docs/protocol.md §2.2 and
docs/protocol.md §2.3)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from alorws.client.auth import TokenManager
from alorws.client.endpoints import ssl_context_for
from alorws.errors import (
    AuthError,
    ConfigurationError,
    ConnectError,
    InvalidState,
    TransportError,
    TransportTimeout,
)
from alorws.protocol.backoff import NO_DELAY, Backoff
from alorws.protocol.jwt import decode_claims, make_unsigned_jwt, refresh_margin
from alorws.sim.app import make_self_signed_cert


REFRESH = "rt-5f0c2d9e-1b7a-4c3e-9a8d-6e2f1a0b3c4d"
#: Three quick attempts in all (two retries), no waiting.
QUICK = dataclasses.replace(NO_DELAY, max_attempts=2)


@dataclasses.dataclass
class FakeAuth:
    """An ALOR-like ``POST /refresh`` whose failures the test controls; counts requests."""

    url: str = ""
    lifetime: float = 1800.0
    clock_offset: float = 0.0  # the server's clock minus ours
    fail_next: int = 0  # answer this many requests with fail_status first
    fail_status: int = 500
    status: int | None = None  # answer every request with this status
    body: bytes | None = None  # answer every request with this 200 body
    delay: float = 0.0
    hold: asyncio.Event | None = None  # when given: answer only once it is set
    requests: int = 0
    bodies: list[Any] = dataclasses.field(default_factory=list)
    received: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.json()
        self.bodies.append(body)
        self.received.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=self.fail_status, text="try later")
        if self.status is not None:
            return web.Response(status=self.status, text="Invalid or expired refresh token")
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        if body.get("token") != REFRESH:
            return web.Response(status=403)
        return web.json_response({"AccessToken": self.mint()})

    def mint(self) -> str:
        now = time.time() + self.clock_offset
        return make_unsigned_jwt(
            {
                "sub": "P000001",
                "iat": int(now),
                "exp": int(now + self.lifetime),
                "portfolios": "D000001 G000001 7500001",
                "n": self.requests,  # every token distinct, even within one second
            }
        )


@contextlib.asynccontextmanager
async def serve(fake: FakeAuth, tls: ssl.SSLContext | None = None) -> AsyncIterator[FakeAuth]:
    app = web.Application()
    app.router.add_post("/refresh", fake.handle)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        if fake.hold is not None:
            fake.hold.set()
        await runner.cleanup()


@pytest.fixture
async def auth() -> AsyncIterator[FakeAuth]:
    """A fake auth server on a free loopback port."""
    async with serve(FakeAuth()) as fake:
        yield fake


@contextlib.asynccontextmanager
async def manager(fake: FakeAuth, **kwargs: Any) -> AsyncIterator[TokenManager]:
    """A TokenManager for ``fake`` that is always closed (not started)."""
    kwargs.setdefault("retry", QUICK)
    tm = TokenManager(REFRESH, fake.url, **kwargs)
    try:
        yield tm
    finally:
        await tm.aclose()


def manager_tasks() -> set[str]:
    """The names of the tasks a TokenManager runs (the test server has tasks of its own)."""
    return {t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("alorws-token")}


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


# -- fetching ---------------------------------------------------------------------------------


async def test_token_is_fetched_once_and_cached(auth: FakeAuth) -> None:
    """The first token() POSTs the refresh token in a JSON body; later calls reuse the token."""
    async with manager(auth) as tm:
        assert tm.current is None and tm.claims is None and tm.portfolios == ()
        token = await tm.token()
        assert await tm.token() == token
        assert await tm.refresh() == token  # not due: no request
        assert auth.requests == 1
        assert auth.bodies == [{"token": REFRESH}]
        assert tm.current == token
        assert tm.claims == decode_claims(token)
        assert tm.portfolios == ("D000001", "G000001", "7500001")
        assert tm.stats["refreshes"] == 1 and tm.stats["failures"] == 0
        assert tm.stats["last_refresh_at"] == pytest.approx(time.time(), abs=5)
        assert 1790 < (tm.expires_in or 0) <= 1800


async def test_allowed_portfolios_are_sent(auth: FakeAuth) -> None:
    """allowed_portfolios goes into the body as allowedPortfolios (docs/protocol.md §2.2)."""
    async with manager(auth, allowed_portfolios=["D000001"]) as tm:
        await tm.token()
    assert auth.bodies == [{"token": REFRESH, "allowedPortfolios": ["D000001"]}]


async def test_forced_refresh_gets_a_new_token(auth: FakeAuth) -> None:
    """refresh(force=True) always asks the server."""
    async with manager(auth) as tm:
        first = await tm.token()
        second = await tm.refresh(force=True)
        assert second != first and tm.current == second
        assert auth.requests == 2


async def test_single_flight_100_callers_one_request(auth: FakeAuth) -> None:
    """100 concurrent token()/refresh(force=True) callers share exactly one HTTP request."""
    auth.hold = asyncio.Event()
    async with manager(auth) as tm:
        calls = [tm.token() for _ in range(90)] + [tm.refresh(force=True) for _ in range(10)]
        tasks = [asyncio.create_task(c) for c in calls]
        await asyncio.wait_for(auth.received.wait(), 5)
        auth.hold.set()
        tokens = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert len(set(tokens)) == 1
        assert auth.requests == 1
        assert tm.stats["refreshes"] == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_refresh(auth: FakeAuth) -> None:
    """Cancelling one waiter leaves the refresh running for the others."""
    auth.hold = asyncio.Event()
    async with manager(auth) as tm:
        first = asyncio.create_task(tm.token())
        second = asyncio.create_task(tm.token())
        await asyncio.wait_for(auth.received.wait(), 5)
        first.cancel()
        auth.hold.set()
        token = await asyncio.wait_for(second, 5)
        assert first.cancelled()
        assert tm.current == token
        assert auth.requests == 1


# -- failures ---------------------------------------------------------------------------------


async def test_403_is_an_auth_error_without_retries(auth: FakeAuth) -> None:
    """403 (bad refresh token) raises AuthError at once; neither token appears anywhere."""
    auth.status = 403
    errors: list[Exception] = []
    async with manager(auth, retry=Backoff(base=10, max_attempts=5)) as tm:
        tm.add_error_listener(errors.append)
        with pytest.raises(AuthError) as caught:
            await tm.token()
        assert not isinstance(caught.value, TransportError)
        assert auth.requests == 1
        message = str(caught.value)
        assert "invalid or expired" in message and "developer portal" in message
        for text in (message, repr(tm), repr(caught.value), str(tm.stats)):
            assert REFRESH not in text
        assert errors == [caught.value] and tm.last_error is caught.value
        assert tm.stats["failures"] == 1 and tm.stats["refreshes"] == 0


async def test_start_fails_fast_on_403_and_cleans_up(auth: FakeAuth) -> None:
    """`async with` a manager whose refresh token is refused raises, and leaves nothing open."""
    auth.status = 403
    tm = TokenManager(REFRESH, auth.url, retry=QUICK)
    with pytest.raises(AuthError):
        async with tm:
            pytest.fail("not reached")
    assert manager_tasks() == set()
    with pytest.raises(InvalidState, match="closed"):
        await tm.token()


async def test_5xx_is_retried_then_succeeds(auth: FakeAuth) -> None:
    """Two 500s and a 503, then a token: four requests, one success."""
    auth.fail_next = 3
    async with manager(auth, retry=dataclasses.replace(NO_DELAY, max_attempts=3)) as tm:
        token = await tm.token()
        assert decode_claims(token).sub == "P000001"
        assert auth.requests == 4
        assert tm.last_error is None
        assert tm.stats["failures"] == 0


@pytest.mark.parametrize("status", [429, 502])
async def test_overload_statuses_are_retried(auth: FakeAuth, status: int) -> None:
    """429 and 502 are transient too."""
    auth.fail_next, auth.fail_status = 1, status
    async with manager(auth) as tm:
        await tm.token()
    assert auth.requests == 2


async def test_retries_exhausted_is_a_connect_error(auth: FakeAuth) -> None:
    """When the retry delays run out, ConnectError says how many attempts failed and why."""
    auth.fail_next = 1000
    errors: list[Exception] = []
    async with manager(auth) as tm:
        tm.add_error_listener(errors.append)
        with pytest.raises(ConnectError, match=r"3 attempt\(s\) failed .* HTTP 500") as caught:
            await tm.token()
        assert auth.requests == 3
        assert tm.last_error is caught.value and errors == [caught.value]
        assert tm.stats["failures"] == 1
        assert auth.url in str(caught.value) and REFRESH not in str(caught.value)


async def test_timeouts_are_retried_then_transport_timeout(auth: FakeAuth) -> None:
    """A server slower than http_timeout: each attempt times out, then TransportTimeout."""
    auth.delay = 5.0
    async with manager(
        auth, http_timeout=0.05, retry=dataclasses.replace(NO_DELAY, max_attempts=1)
    ) as tm:
        with pytest.raises(TransportTimeout, match="2 attempt"):
            await tm.token()
        assert auth.requests == 2


async def test_unreachable_server_is_a_connect_error() -> None:
    """Connection refused on every attempt ends in ConnectError."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tm = TokenManager(REFRESH, f"http://127.0.0.1:{port}", retry=QUICK)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(tm.aclose)
        with pytest.raises(ConnectError, match="3 attempt"):
            await tm.token()


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"not json",
        b"[]",
        b'{"AccessToken": 5}',
        b'{"AccessToken": ""}',
        b'{"AccessToken": "garbage"}',
        b'{"AccessToken": "a.bm90LWpzb24.c"}',
    ],
)
async def test_unusable_200_is_an_auth_error(auth: FakeAuth, body: bytes) -> None:
    """A 200 without a readable AccessToken raises AuthError (not retried)."""
    auth.body = body
    async with manager(auth) as tm:
        with pytest.raises(AuthError, match="access token"):
            await tm.token()
        assert auth.requests == 1
        assert tm.current is None


async def test_other_key_spelling_is_accepted(auth: FakeAuth) -> None:
    """A body with 'accessToken' (other case) still works."""
    jwt = auth.mint()
    auth.body = b'{"accessToken": "%s"}' % jwt.encode()
    async with manager(auth) as tm:
        assert await tm.token() == jwt


async def test_unexpected_status_is_an_auth_error(auth: FakeAuth) -> None:
    """A 404 (wrong oauth_url) is not retried and says to check the URL."""
    auth.status = 404
    async with manager(auth) as tm:
        with pytest.raises(AuthError, match="HTTP 404.*oauth_url"):
            await tm.token()
    assert auth.requests == 1


# -- timing -----------------------------------------------------------------------------------


async def test_proactive_refresh_happens_before_exp(auth: FakeAuth) -> None:
    """start() keeps a fresh token: the background task refreshes ahead of the JWT's exp."""
    auth.lifetime = 3.0
    seen: list[tuple[str, float]] = []
    refreshed = asyncio.Event()

    def on_token(token: str) -> None:
        seen.append((token, time.time()))
        if len(seen) == 2:
            refreshed.set()

    tm = TokenManager(REFRESH, auth.url, retry=QUICK)
    tm.add_listener(on_token)
    async with tm:
        first = tm.claims
        assert first is not None and len(seen) == 1
        await asyncio.wait_for(refreshed.wait(), 10)
        token, at = seen[1]
        # ahead of exp, and not before the margin window opened (minus the 1 s of iat rounding)
        assert at < first.exp
        assert at >= first.exp - refresh_margin(first) - 1.0
        assert tm.current == token != seen[0][0]
        assert auth.requests == 2


async def test_proactive_failures_are_recorded_and_retried(auth: FakeAuth) -> None:
    """A failing background refresh is kept in last_error, retried, and recovers."""
    auth.lifetime = 3.0
    failed, healed = asyncio.Event(), asyncio.Event()
    async with TokenManager(
        REFRESH, auth.url, retry=Backoff(base=0.02, cap=0.02, max_attempts=0)
    ) as tm:
        first = tm.current
        auth.fail_next = 10**6
        tm.add_error_listener(lambda exc: failed.set())
        tm.add_listener(lambda token: healed.set())
        await asyncio.wait_for(failed.wait(), 10)
        assert isinstance(tm.last_error, ConnectError)
        assert tm.stats["failures"] >= 1
        auth.fail_next = 0
        await asyncio.wait_for(healed.wait(), 10)
        assert tm.current != first
        assert tm.last_error is None


async def test_on_demand_falls_back_to_a_still_valid_token(auth: FakeAuth) -> None:
    """Inside the margin with the server down, token() returns the old (unexpired) token."""
    clock = FakeClock()
    async with manager(auth, clock=clock) as tm:
        token = await tm.token()
        margin = refresh_margin(decode_claims(token))
        clock.now += 1800 - margin / 2  # due, not expired
        auth.fail_next = 1000
        assert await tm.token() == token
        assert isinstance(tm.last_error, ConnectError)
        with pytest.raises(ConnectError):
            await tm.refresh()  # refresh() itself does not fall back
        clock.now += margin  # expired now
        with pytest.raises(ConnectError):
            await tm.token()
        auth.fail_next = 0
        fresh = await tm.token()
        assert fresh != token


async def test_due_token_is_refreshed_on_demand(auth: FakeAuth) -> None:
    """Without start(), token() refreshes once the clock enters the margin (not before)."""
    clock = FakeClock()
    async with manager(auth, clock=clock, margin=100.0) as tm:
        token = await tm.token()
        clock.now += 1800 - 101
        assert await tm.token() == token
        clock.now += 2
        assert await tm.token() != token
        assert auth.requests == 2


@pytest.mark.parametrize("offset", [-3600.0, 3600.0])
async def test_clock_skew_does_not_cause_a_refresh_storm(auth: FakeAuth, offset: float) -> None:
    """With the auth server's clock an hour off, tokens are judged by the server's time."""
    auth.clock_offset = offset
    async with manager(auth) as tm:
        for _ in range(20):
            await tm.token()
        assert auth.requests == 1
        assert tm.expires_in == pytest.approx(1799, abs=2)


async def test_a_token_that_is_always_due_is_not_refreshed_in_a_loop(auth: FakeAuth) -> None:
    """A margin longer than the lifetime: still at most one refresh per second on demand."""
    async with manager(auth, margin=5000.0) as tm:
        for _ in range(50):
            await tm.token()
        assert auth.requests == 1


# -- listeners and lifecycle ------------------------------------------------------------------


async def test_listeners_get_each_new_token_and_errors_are_contained(
    auth: FakeAuth, caplog: pytest.LogCaptureFixture
) -> None:
    """Sync and async listeners see every token; a failing one is logged, not propagated."""
    got: list[str] = []
    async_got = asyncio.Event()

    def broken(token: str) -> None:
        raise RuntimeError("listener bug")

    async def async_listener(token: str) -> None:
        async_got.set()

    async with manager(auth) as tm:
        tm.add_listener(broken)
        remove = tm.add_listener(got.append)
        tm.add_listener(async_listener)
        with caplog.at_level(logging.ERROR, logger="alorws.auth"):
            first = await tm.token()
            second = await tm.refresh(force=True)
        assert got == [first, second]
        await asyncio.wait_for(async_got.wait(), 5)
        assert "listener bug" in caplog.text
        assert first not in caplog.text and second not in caplog.text
        remove()
        remove()  # idempotent
        await tm.refresh(force=True)
        assert got == [first, second]


async def test_aclose_cancels_the_background_task(auth: FakeAuth) -> None:
    """aclose() stops every task the manager started; the manager is unusable afterwards."""
    tm = TokenManager(REFRESH, auth.url)
    try:
        await tm.start()
        await tm.start()  # idempotent
        assert manager_tasks() == {"alorws-token-keeper"}
        assert "running" in repr(tm)
    finally:
        await tm.aclose()
    assert manager_tasks() == set()
    await tm.aclose()  # idempotent
    assert "closed" in repr(tm)
    with pytest.raises(InvalidState):
        await tm.token()
    with pytest.raises(InvalidState):
        await tm.start()


async def test_aclose_during_a_refresh(auth: FakeAuth) -> None:
    """Closing while a refresh is in flight makes its waiters fail with InvalidState."""
    auth.hold = asyncio.Event()
    tm = TokenManager(REFRESH, auth.url)
    waiter = asyncio.create_task(tm.token())
    await asyncio.wait_for(auth.received.wait(), 5)
    await tm.aclose()
    with pytest.raises(InvalidState, match="closed"):
        await waiter


async def test_repr_never_shows_a_token(auth: FakeAuth) -> None:
    """repr shows a redacted access token and never the refresh token."""
    async with manager(auth) as tm:
        assert "<no token>" in repr(tm)
        token = await tm.token()
        text = repr(tm)
        assert token not in text and REFRESH not in text
        assert "<token …" in text and "expires_in=" in text


async def test_bound_to_one_event_loop(auth: FakeAuth) -> None:
    """Using the manager from a second event loop is refused."""
    async with manager(auth) as tm:
        await tm.token()

        def other_loop() -> None:
            with pytest.raises(InvalidState, match="event loop"):
                asyncio.run(tm.token())

        await asyncio.to_thread(other_loop)


async def test_tls_with_the_simulators_certificate(tmp_path: Path) -> None:
    """https with cafile= trusting a self-signed certificate works; without it TLS fails fast."""
    cert, key = make_self_signed_cert(str(tmp_path))
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async with serve(FakeAuth(), tls=server_tls) as fake:
        context = ssl_context_for(fake.url, cafile=cert)
        async with manager(fake, ssl=context) as tm:
            await tm.token()
        async with manager(fake, retry=Backoff(base=10, max_attempts=5)) as tm:
            with pytest.raises(ConnectError, match="TLS failed"):
                await tm.token()
        assert fake.requests == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("", "http://127.0.0.1:1"), {}, "refresh_token is empty"),
        ((REFRESH, "http://oauth.alor.ru"), {}, "only allowed for loopback"),
        ((REFRESH, "http://127.0.0.1:1/refresh"), {}, "without '/refresh'"),
        ((REFRESH, "http://127.0.0.1:1"), {"allowed_portfolios": "D1"}, "allowed_portfolios"),
        ((REFRESH, "http://127.0.0.1:1"), {"margin": -1.0}, "margin"),
        ((REFRESH, "http://127.0.0.1:1"), {"http_timeout": 0.0}, "http_timeout"),
    ],
)
def test_bad_configuration(args: tuple[str, str], kwargs: dict[str, Any], match: str) -> None:
    """Bad arguments raise ConfigurationError at construction, before any I/O."""
    with pytest.raises(ConfigurationError, match=match):
        TokenManager(*args, **kwargs)
