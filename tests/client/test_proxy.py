"""Proxies: HTTP, /ws, /cws and /refresh through a real proxy (pproxy, HTTP CONNECT and SOCKS5)
to the simulator over TLS; credentials, environment variables, NO_PROXY and the loopback rule."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from alorws.client import AlorClient, HttpClient
from alorws.client._ws import FrameListener, ws_connect
from alorws.client.auth import TokenManager
from alorws.client.endpoints import resolve_endpoints, ssl_context_for
from alorws.client.proxy import NO_PROXY, Proxy, parse_proxy, proxy_for
from alorws.errors import ConfigurationError, ConnectError
from alorws.protocol.backoff import Backoff
from alorws.protocol.enums import Format
from alorws.sim import app as sim_app
from alorws.sim.app import Simulator

from .._sim import DAY
from ._collect import Collector
from ._proxy import ProxyProcess, run_proxy
from .conftest import FAST


_PROXY_VARS = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
)

#: A name that is not loopback and that nothing resolves: only the proxy ever sees it (it
#: tunnels every connection to the simulator).
REMOTE = "api.alor.invalid"


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's proxy variables do not leak into these tests."""
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def tls_sim() -> AsyncIterator[Simulator]:
    """A simulator serving https/wss with its self-signed certificate."""
    async with Simulator(
        port=0, tls=True, admin=True, day_order_lifetime=DAY, seed=7, rate=50.0, history_days=1
    ) as sim:
        yield sim


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyProcess]:
    async with run_proxy() as p:
        yield p


def address(sim: Simulator) -> str:
    """``127.0.0.1:port`` of the simulator: what the proxy is asked to connect to."""
    return sim.url.removeprefix("https://")


def via_proxy(sim: Simulator, proxy_url: str, **options: Any) -> AlorClient:
    """A client of the TLS simulator ``sim`` that connects through ``proxy_url``."""
    return AlorClient(
        sim.demo_refresh_token,
        base_url=sim.url,
        cafile=sim.cert_path,
        proxy=proxy_url,
        **options,
    )


async def ws_via_proxy(sim: Simulator, proxy_url: str) -> None:
    """Open a raw /ws connection to ``sim`` through ``proxy_url`` (the WebSocket side alone)."""
    ws = resolve_endpoints(None, base_url=sim.url).ws
    await ws_connect(
        lambda: FrameListener(lambda frame: None, lambda: None),
        ws,
        ssl_context=ssl_context_for(ws, cafile=sim.cert_path),
        step_timeout=5.0,
        attempts=set(),
        proxy=parse_proxy(proxy_url),
    )


def _cert_for(directory: str) -> tuple[str, str]:
    """A self-signed certificate also valid for :data:`REMOTE` (in place of the simulator's)."""
    cert, key = f"{directory}/cert.pem", f"{directory}/key.pem"
    openssl = shutil.which("openssl")
    assert openssl is not None, "the test needs the openssl command"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
            "-addext", f"subjectAltName=DNS:localhost,DNS:{REMOTE},IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def remote_sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Simulator]:
    """A TLS simulator whose certificate also names :data:`REMOTE`."""
    monkeypatch.setattr(sim_app, "make_self_signed_cert", _cert_for)
    async with Simulator(
        port=0, tls=True, admin=True, day_order_lifetime=DAY, seed=7, rate=50.0, history_days=1
    ) as sim:
        yield sim


async def exercise(client: AlorClient, proxy: ProxyProcess, target: str) -> None:
    """/refresh (done by start), then HTTP, /ws and /cws: each opens a new tunnel."""
    await proxy.wait_for(lambda: proxy.tunnels(target) >= 1, "/refresh tunnelled")
    seen = proxy.tunnels(target)
    assert await client.http.server_time() > 0
    await proxy.wait_for(lambda: proxy.tunnels(target) > seen, "HTTP tunnelled")
    seen = proxy.tunnels(target)
    async with client.quotes("SBER") as quotes:
        async with asyncio.timeout(10):
            quote = await anext(aiter(quotes))
    await proxy.wait_for(lambda: proxy.tunnels(target) > seen, "/ws tunnelled")
    seen = proxy.tunnels(target)
    ack = await client.trading.place_limit(
        client.portfolios[0], "SBER", "buy", 1, price=round(quote.last_price * 0.98, 2)
    )
    assert ack.order_number
    await proxy.wait_for(lambda: proxy.tunnels(target) > seen, "/cws tunnelled")


# -- through a proxy named by proxy= -------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_everything_goes_through_an_explicit_proxy(
    scheme: str, tls_sim: Simulator, proxy: ProxyProcess
) -> None:
    """/refresh, an HTTP call, a /ws stream and a /cws order, each through its own tunnel, to
    a loopback simulator (an explicit proxy is used for loopback too)."""
    async with via_proxy(tls_sim, proxy.url(scheme), backoff=FAST) as client:
        await exercise(client, proxy, address(tls_sim))
    assert all(line.startswith(f"{scheme} ") for line in proxy.lines), proxy.lines


async def test_drop_and_restore_through_the_proxy(tls_sim: Simulator, proxy: ProxyProcess) -> None:
    """A dropped /ws connection comes back through a new tunnel and the stream resumes."""
    async with via_proxy(tls_sim, proxy.url(), backoff=FAST) as client:
        async with client.quotes("SBER") as q:
            quotes = Collector(q)
            await quotes.next_item()
            for _ in range(2):
                seen = proxy.tunnels(address(tls_sim))
                quotes.restored.clear()
                assert tls_sim.faults.drop(code=1006) == 1
                async with asyncio.timeout(10):
                    await quotes.restored.wait()
                await quotes.next_item()
                await proxy.wait_for(
                    lambda seen=seen: proxy.tunnels(address(tls_sim)) > seen, "a new tunnel"
                )
            assert q.is_open and quotes.kinds().count("restored") == 2
            await quotes.stop()


async def test_a_new_http_client_is_made_as_client_http(
    tls_sim: Simulator, proxy: ProxyProcess
) -> None:
    """``client.http_client`` (what ``alorws check`` uses) has the client's tokens, TLS settings
    and proxy, with its own format and timeout."""
    target = address(tls_sim)
    async with via_proxy(tls_sim, proxy.url(), backoff=FAST) as client:
        await proxy.wait_for(lambda: proxy.tunnels(target) >= 1, "/refresh tunnelled")
        seen = proxy.tunnels(target)
        http = client.http_client(HttpClient, format="Slim", timeout=5.0)
        try:
            assert http.format is Format.SLIM and http.base_url == client.http.base_url
            assert await http.server_time() > 0
            summary = await http.summary(client.portfolios[0])  # the client's tokens
            assert summary.buying_power is not None
        finally:
            await http.aclose()
        await proxy.wait_for(lambda: proxy.tunnels(target) > seen, "HTTP tunnelled")


async def test_proxy_credentials(
    tls_sim: Simulator, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the right user and password everything works; without them or with wrong ones the
    proxy's 407 is a clear ConnectError. The password is in no log, repr or error."""
    caplog.set_level(logging.DEBUG)
    password = "pr0xy-s3cret"
    async with run_proxy(auth=f"alice:{password}") as proxy:
        async with via_proxy(tls_sim, proxy.url(), backoff=FAST) as client:
            await exercise(client, proxy, address(tls_sim))
            shown = repr(client) + repr(client.http) + repr(client._tokens)
            assert f"alice:***@{proxy.address}" in shown and password not in shown
        assert proxy.refusals() == 0

        for auth, wrong in ((None, None), ("alice:wr0ng-pw", "wr0ng-pw")):
            url = proxy.url(auth=auth)
            client = via_proxy(tls_sim, url)
            with pytest.raises(ConnectError) as info:
                await client.start()  # /refresh: refused at once, not retried
            message = str(info.value)
            assert "refused CONNECT" in message and "407 Proxy Authentication Required" in message
            assert str(parse_proxy(url)) in message and (wrong is None or wrong not in message)
            refused = proxy.refusals()

            # The same from the WebSocket side.
            with pytest.raises(ConnectError, match="407 Proxy Authentication Required") as info:
                await ws_via_proxy(tls_sim, url)
            assert wrong is None or wrong not in str(info.value)
            await proxy.wait_for(lambda refused=refused: proxy.refusals() > refused, "refused")
    logged = caplog.text + "".join(capsys.readouterr())
    assert password not in logged and "wr0ng-pw" not in logged


async def test_a_socks5_refusal_is_a_connect_error(tls_sim: Simulator) -> None:
    """A SOCKS5 proxy turning away wrong credentials: HTTP, /refresh and /ws each raise a
    ConnectError naming the proxy (password hidden), after their retries."""
    once = Backoff(base=0.01, cap=0.01, max_attempts=1)
    async with run_proxy(auth="alice:right-pw") as proxy:
        url = proxy.url("socks5", auth="alice:wr0ng-pw")
        shown = f"socks5://alice:***@{proxy.address}"
        async with HttpClient(tls_sim.url, cafile=tls_sim.cert_path, proxy=url, retry=once) as http:
            with pytest.raises(ConnectError, match=re.escape(shown)) as info:
                await http.server_time()
            assert "wr0ng-pw" not in str(info.value)
        tokens = TokenManager(
            tls_sim.demo_refresh_token,
            tls_sim.url,
            ssl=ssl_context_for(tls_sim.url, cafile=tls_sim.cert_path),
            proxy=url,
            retry=once,
        )
        with pytest.raises(ConnectError, match=re.escape(shown)) as info:
            async with tokens:
                pass
        assert "wr0ng-pw" not in str(info.value)
        with pytest.raises(ConnectError, match=re.escape(shown)) as info:
            await ws_via_proxy(tls_sim, url)
        assert "wr0ng-pw" not in str(info.value)
        await proxy.wait_for(lambda: proxy.refusals() >= 3, "three refusals")


async def test_an_unreachable_proxy_is_named_in_the_error(tls_sim: Simulator) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://bob:hunter2@127.0.0.1:{port}"
    with pytest.raises(ConnectError, match=r"cannot connect to the proxy http://bob:\*\*\*@127"):
        await ws_via_proxy(tls_sim, url)
    async with HttpClient(
        tls_sim.url,
        cafile=tls_sim.cert_path,
        proxy=url,
        retry=Backoff(base=0.01, cap=0.01, max_attempts=1),
    ) as http:
        with pytest.raises(ConnectError, match="cannot connect to the proxy") as info:
            await http.server_time()
    assert "hunter2" not in str(info.value)


# -- from the environment ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "scheme"),
    [("HTTPS_PROXY", "http"), ("https_proxy", "http"), ("ALL_PROXY", "socks5")],
)
async def test_the_environment_proxy_is_used_for_a_remote_host(
    variable: str, scheme: str, remote_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY (or https_proxy, ALL_PROXY) carries every connection to a host that is not
    loopback; the host is never resolved here (only the proxy sees the name, SOCKS5 too)."""
    port = remote_sim.url.rpartition(":")[2]
    async with run_proxy(tunnel_to=address(remote_sim)) as proxy:
        monkeypatch.setenv(variable, proxy.url(scheme))
        client = AlorClient(
            remote_sim.demo_refresh_token,
            base_url=f"https://{REMOTE}:{port}",
            cafile=remote_sim.cert_path,
            backoff=FAST,
        )
        # Decided before anything connects: nothing may try the name directly.
        decided = set(client._proxies.values())
        assert decided == {Proxy(scheme, "127.0.0.1", proxy.port, source=f"${variable}")}
        async with client:
            await exercise(client, proxy, f"{REMOTE}:{port}")


async def test_no_proxy_and_false_connect_directly(
    remote_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_PROXY naming the host, or proxy=False, leaves every connection direct."""
    port = remote_sim.url.rpartition(":")[2]
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    for no_proxy in (REMOTE, ".alor.invalid", "alor.invalid", f"{REMOTE}:{port}", "*"):
        monkeypatch.setenv("NO_PROXY", no_proxy)
        client = AlorClient("t", base_url=f"https://{REMOTE}:{port}")
        assert set(client._proxies.values()) == {None}, no_proxy
    monkeypatch.setenv("NO_PROXY", f"{REMOTE}:1")  # another port: not bypassed
    client = AlorClient("t", base_url=f"https://{REMOTE}:{port}")
    assert None not in set(client._proxies.values())
    monkeypatch.delenv("NO_PROXY")
    client = AlorClient("t", base_url=f"https://{REMOTE}:{port}", proxy=NO_PROXY)
    assert set(client._proxies.values()) == {None}
    assert "proxy=" not in repr(HttpClient(f"https://{REMOTE}:{port}", proxy=False))
    assert "proxy=" not in repr(TokenManager("t", f"https://{REMOTE}", proxy=False))


async def test_loopback_is_never_sent_to_an_environment_proxy(
    tls_sim: Simulator, proxy: ProxyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every proxy variable set, a loopback simulator is reached directly: the proxy sees
    no connection at all."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, proxy.url())
    async with AlorClient(
        tls_sim.demo_refresh_token, base_url=tls_sim.url, cafile=tls_sim.cert_path, backoff=FAST
    ) as client:
        assert await client.http.server_time() > 0
        async with client.quotes("SBER") as quotes:
            async with asyncio.timeout(10):
                quote = await anext(aiter(quotes))
        await client.trading.place_limit(
            client.portfolios[0], "SBER", "buy", 1, price=round(quote.last_price * 0.98, 2)
        )
    # The proxy logs the connections it gets in order: once a probe's shows, any the client
    # had made would show before it.
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"CONNECT {address(tls_sim)} HTTP/1.1\r\n\r\n".encode())
    await proxy.wait_for(lambda: proxy.tunnels(address(tls_sim)) >= 1, "the probe's tunnel")
    assert len(proxy.lines) == 1, proxy.lines
    writer.close()
    await writer.wait_closed()
    for url in ("https://localhost:1", "https://[::1]:1", "https://127.5.6.7:1"):
        assert proxy_for(url) is None


# -- deciding and showing, no I/O ---------------------------------------------------------------


def test_proxy_urls_are_read_and_shown_without_the_password() -> None:
    p = parse_proxy("http://us%40er:p%3Ass@proxy.example:3128")
    assert (p.scheme, p.host, p.port, p.username, p.password) == (
        "http",
        "proxy.example",
        3128,
        "us@er",
        "p:ss",
    )
    assert str(p) == "http://us%40er:***@proxy.example:3128"
    assert "p:ss" not in repr(p) and "p%3Ass" not in repr(p)
    assert p.url == "http://us%40er:p%3Ass@proxy.example:3128"
    assert parse_proxy("proxy.example:3128").address == "http://proxy.example:3128"
    assert parse_proxy("http://proxy.example").port == 80
    assert parse_proxy("socks5://[::1]").address == "socks5://[::1]:1080"
    assert parse_proxy("socks5h://h:1").scheme == "socks5"
    for bad, why in (
        ("ftp://u:secret@h:1", "unsupported proxy scheme"),
        ("http://u:secret@h:99999", "bad proxy URL"),
        ("http://u:secret@:1", "has no host"),
        ("http://u:secret@h:1/path", "scheme://host:port only"),
        ("", "must be a URL"),
    ):
        with pytest.raises(ConfigurationError, match=why) as info:
            parse_proxy(bad)
        assert "secret" not in str(info.value)
    with pytest.raises(ConfigurationError, match="None .*False .* or a URL"):
        proxy_for("https://api.alor.ru", True)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"\$HTTPS_PROXY.*unsupported") as info:
        proxy_for("https://api.alor.ru", environ={"HTTPS_PROXY": "ftp://u:secret@h:1"})
    assert "secret" not in str(info.value)


def test_which_variable_applies() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:1", "HTTP_PROXY": "h:2"}
    assert str(proxy_for("wss://api.alor.ru/ws", environ=env)) == "http://lower:1"
    assert str(proxy_for("https://api.alor.ru", environ={"HTTPS_PROXY": "u:1"})) == "http://u:1"
    assert str(proxy_for("http://example.test", environ=env)) == "http://h:2"
    assert proxy_for("https://api.alor.ru", environ={"HTTP_PROXY": "h:2"}) is None
    assert str(proxy_for("wss://a.test", environ={"all_proxy": "socks5://s:5"})) == "socks5://s:5"
    explicit = "http://127.0.0.1:3128"
    assert str(proxy_for("https://127.0.0.1:8443", explicit)) == explicit  # loopback too
    assert proxy_for("https://api.alor.ru", False, environ=env) is None


@pytest.mark.parametrize(
    ("no_proxy", "url", "bypassed"),
    [
        ("*", "https://api.alor.ru", True),
        ("alor.ru", "https://api.alor.ru", True),
        (".alor.ru", "https://api.alor.ru", True),
        ("*.alor.ru", "https://api.alor.ru", True),
        ("alor.ru", "https://alor.ru", True),
        ("lor.ru", "https://api.alor.ru", False),
        ("api.alor.ru:443", "wss://api.alor.ru/ws", True),
        ("api.alor.ru:8443", "wss://api.alor.ru/ws", False),
        ("example.com, api.alor.ru", "https://api.alor.ru", True),
        ("10.0.0.0/8", "https://10.1.2.3", True),
        ("10.0.0.0/8", "https://11.1.2.3", False),
        ("192.0.2.7", "https://192.0.2.7:8443", True),
        ("[2001:db8::1]:443", "https://[2001:db8::1]", True),
        ("2001:db8::/32", "https://[2001:db8::5]", True),
        ("", "https://api.alor.ru", False),
    ],
)
def test_no_proxy(no_proxy: str, url: str, bypassed: bool) -> None:
    for key in ("NO_PROXY", "no_proxy"):
        env = {"HTTPS_PROXY": "http://proxy.test:3128", key: no_proxy}
        assert (proxy_for(url, environ=env) is None) is bypassed


@pytest.fixture
def no_socks_package(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "aiohttp_socks", None)
    yield


def test_socks_for_http_needs_aiohttp_socks(no_socks_package: None) -> None:
    """Without aiohttp-socks a SOCKS5 proxy is refused when the client is made (the WebSocket
    side alone would work: OrderClient takes it)."""
    url = "socks5://u:secret@127.0.0.1:1"
    for make in (
        lambda: HttpClient("https://127.0.0.1:1", proxy=url),
        lambda: TokenManager("t", "https://127.0.0.1:1", proxy=url),
        lambda: AlorClient("t", proxy=url),
    ):
        with pytest.raises(ConfigurationError, match=r"pip install 'alorws\[socks\]'") as info:
            make()
        assert "secret" not in str(info.value)


def test_a_bad_environment_fails_when_the_client_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "gopher://u:secret@h:1")
    with pytest.raises(ConfigurationError, match=r"\$HTTPS_PROXY") as info:
        AlorClient("t")
    assert "secret" not in str(info.value)
