"""No plaintext connection leaves loopback: every connecting class refuses ``http://``/``ws://``
to another host when it is created, before any name is resolved or any socket opened, and
none follows a redirect from a loopback server to a remote host.

Nothing here reaches beyond loopback, not even to show a refusal: the ``guard`` fixture
patches name resolution and every socket connect of this process so that any attempt towards
another host is recorded and fails at once. Remote addresses are TEST-NET-1 (192.0.2.1) and the
reserved ``.invalid`` domain.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from alorws.client import AlorClient, HttpClient, OrderClient
from alorws.client._ws import ws_connect
from alorws.client.auth import TokenManager
from alorws.errors import AlorError, AuthError, ConfigurationError, ServerRejected
from alorws.protocol.backoff import Backoff


REMOTE_IP = "192.0.2.1"
REMOTE_NAME = "alor.invalid"


def _is_local(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str) or not host:
        return host is None  # None: a wildcard bind, not a destination
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


class Guard:
    """What this process tried to resolve or connect to beyond loopback."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def check(self, what: str, host: object) -> None:
        if not _is_local(host):
            self.attempts.append(f"{what} {host!r}")
            raise OSError(f"test guard: {what} to {host!r} refused (only loopback is allowed)")


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    """Record (and fail at once) every resolution of, or connection to, a non-loopback host."""
    g = Guard()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_create = asyncio.BaseEventLoop.create_connection
    real_loop_getaddrinfo = asyncio.BaseEventLoop.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        g.check("getaddrinfo", host)
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            g.check("connect", address[0])
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            g.check("connect_ex", address[0])
        return real_connect_ex(self, address)

    async def create_connection(
        loop: Any, factory: Any, host: Any = None, *a: Any, **k: Any
    ) -> Any:
        if k.get("sock") is None:
            g.check("create_connection", host)
        return await real_create(loop, factory, host, *a, **k)

    async def loop_getaddrinfo(self: Any, host: Any, *a: Any, **k: Any) -> Any:
        g.check("loop.getaddrinfo", host)
        return await real_loop_getaddrinfo(self, host, *a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", create_connection)
    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", loop_getaddrinfo)
    yield g


class Tokens:
    """A token source that never touches the network."""

    current = "t"

    async def token(self) -> str:
        return "t"

    async def refresh(self, *, force: bool = False) -> str:
        return "t"

    def add_listener(self, callback: Callable[[str], object]) -> Callable[[], None]:
        return lambda: None


FAST = Backoff(base=0.01, cap=0.02, max_attempts=2)


async def _order(url: str) -> None:
    """Create an OrderClient for ``url`` and send a command (a remote one must never get that
    far: the constructor refuses it)."""
    orders = OrderClient(url, Tokens(), backoff=FAST, reply_timeout=1.0, connect_timeout=1.0)
    try:
        await orders.place_market("D1", "SBER", "buy", 1)
    finally:
        await orders.aclose()


async def _client(base_url: str | None = None, oauth_url: str | None = None) -> None:
    async with AlorClient("refresh-token", base_url=base_url, oauth_url=oauth_url, backoff=FAST):
        pass


async def _http(url: str) -> None:
    async with HttpClient(url, retry=FAST, timeout=1.0) as http:
        await http.server_time()


async def _tokens(url: str) -> None:
    async with TokenManager("refresh-token", url, retry=FAST, http_timeout=1.0):
        pass


async def _ws(url: str) -> None:
    await ws_connect(object, url, ssl_context=None, step_timeout=1.0, attempts=set())


CASES: dict[str, Callable[[], Any]] = {
    "OrderClient ws ip": lambda: _order(f"ws://{REMOTE_IP}/cws"),
    "OrderClient ws name": lambda: _order(f"ws://{REMOTE_NAME}:8080/cws"),
    "OrderClient ws credentials": lambda: _order(f"ws://user:hunter2@{REMOTE_NAME}/cws"),
    "AlorClient base ip": lambda: _client(base_url=f"http://{REMOTE_IP}:8765"),
    "AlorClient base name": lambda: _client(base_url=f"ws://{REMOTE_NAME}"),
    "AlorClient oauth": lambda: _client(oauth_url=f"http://{REMOTE_NAME}"),
    "HttpClient": lambda: _http(f"http://{REMOTE_IP}"),
    "HttpClient credentials": lambda: _http(f"http://user:hunter2@{REMOTE_NAME}"),
    "TokenManager": lambda: _tokens(f"http://{REMOTE_NAME}"),
    "ws_connect": lambda: _ws(f"ws://{REMOTE_IP}/ws"),
}


@pytest.mark.parametrize("case", CASES.keys())
async def test_plain_text_to_a_remote_host_is_refused_before_any_io(
    case: str, guard: Guard
) -> None:
    """Each connecting class raises ConfigurationError naming the URL (never its user or
    password) and saying to use TLS; nothing was resolved and no socket connected."""
    with pytest.raises(ConfigurationError) as info:
        async with asyncio.timeout(10):
            await CASES[case]()
    message = str(info.value)
    assert REMOTE_IP in message or REMOTE_NAME in message
    if "credentials" in case:
        assert "credentials do not belong in the URL" in message
        assert "hunter2" not in message and "user" not in message
    else:
        assert "only allowed for loopback" in message
        assert "wss://" in message or "https://" in message
    assert guard.attempts == []


async def test_loopback_plain_text_is_allowed(guard: Guard) -> None:
    """The rule is loopback only, not "no plain text": 127.0.0.0/8, ::1 and localhost pass
    the check (the connection then fails on a closed port, locally)."""
    for url in ("ws://127.0.0.1:1/cws", "ws://127.5.6.7:1/cws", "ws://[::1]:1/cws"):
        orders = OrderClient(url, Tokens())
        assert orders.url == url
        await orders.aclose()
    assert guard.attempts == []


@pytest.fixture
async def redirector() -> Any:
    """A loopback server that redirects every request (and the WebSocket upgrade) to the same
    path on a remote host, in plain text."""

    async def redirect(request: web.Request) -> web.StreamResponse:
        scheme = "ws" if request.headers.get("Upgrade", "").lower() == "websocket" else "http"
        raise web.HTTPFound(f"{scheme}://{REMOTE_IP}{request.path_qs}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_redirect_to_a_remote_host_is_not_followed(guard: Guard, redirector: str) -> None:
    """A loopback server answering with a redirect to a remote plain-text URL: HTTP requests,
    the token refresh and the /cws handshake fail with an alorws error, and nothing tried to
    reach the remote host."""
    with pytest.raises(ServerRejected, match="302"):
        await _http(f"http://{redirector}")
    with pytest.raises(AuthError, match="302"):
        await _tokens(f"http://{redirector}")
    with pytest.raises(AlorError):
        await _order(f"ws://{redirector}/cws")
    assert guard.attempts == []
