"""Endpoint resolution (docs/protocol.md §1) and the loopback-only rule for plain http/ws."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from alorws.client.endpoints import (
    Endpoints,
    is_loopback_host,
    resolve_endpoints,
    ssl_context_for,
)
from alorws.errors import ConfigurationError
from alorws.sim.app import make_self_signed_cert


def test_prod() -> None:
    """env='prod' (the default) is api.alor.ru and oauth.alor.ru over TLS (docs/protocol.md §1)."""
    e = resolve_endpoints()
    assert e == resolve_endpoints("prod")
    assert e == Endpoints(
        http="https://api.alor.ru",
        ws="wss://api.alor.ru/ws",
        cws="wss://api.alor.ru/cws",
        oauth="https://oauth.alor.ru",
    )
    assert e.refresh_url == "https://oauth.alor.ru/refresh"


def test_dev() -> None:
    """env='dev' is ALOR's test environment: apidev and oauthdev (docs/protocol.md §1)."""
    e = resolve_endpoints("dev")
    assert e == Endpoints(
        http="https://apidev.alor.ru",
        ws="wss://apidev.alor.ru/ws",
        cws="wss://apidev.alor.ru/cws",
        oauth="https://oauthdev.alor.ru",
    )
    assert resolve_endpoints(" DEV ") == e


def test_local_base_url() -> None:
    """A loopback http base serves HTTP, /ws, /cws and /refresh itself (the simulator)."""
    e = resolve_endpoints(base_url="http://127.0.0.1:8765")
    assert e == Endpoints(
        http="http://127.0.0.1:8765",
        ws="ws://127.0.0.1:8765/ws",
        cws="ws://127.0.0.1:8765/cws",
        oauth="http://127.0.0.1:8765",
    )
    assert resolve_endpoints(base_url="http://127.0.0.1:8765/") == e
    assert resolve_endpoints(base_url="ws://127.0.0.1:8765") == e


@pytest.mark.parametrize(
    "base", ["http://localhost:1", "http://LOCALHOST", "http://[::1]:8765", "http://127.8.9.10"]
)
def test_every_loopback_host_may_be_plain(base: str) -> None:
    """Plain http is fine for localhost, ::1 and all of 127.0.0.0/8."""
    e = resolve_endpoints(base_url=base)
    assert e.http == base
    assert e.ws == base.replace("http://", "ws://") + "/ws"


def test_https_base_gives_wss() -> None:
    """An https base gives wss sockets, for remote hosts too."""
    e = resolve_endpoints(base_url="https://gateway.example.com:8443")
    assert e.http == "https://gateway.example.com:8443"
    assert e.ws == "wss://gateway.example.com:8443/ws"
    assert e.cws == "wss://gateway.example.com:8443/cws"
    assert e.oauth == "https://gateway.example.com:8443"
    assert resolve_endpoints(base_url="wss://gateway.example.com:8443") == e


def test_base_url_wins_over_env() -> None:
    """base_url replaces env (whose value is still checked)."""
    e = resolve_endpoints("dev", base_url="http://127.0.0.1:1")
    assert e.http == "http://127.0.0.1:1"
    with pytest.raises(ConfigurationError, match="unknown env"):
        resolve_endpoints("staging", base_url="http://127.0.0.1:1")
    assert resolve_endpoints(None, base_url="http://127.0.0.1:1") == e


def test_oauth_url_overrides() -> None:
    """oauth_url replaces the auth base; a trailing slash is dropped, a path prefix kept."""
    e = resolve_endpoints("prod", oauth_url="http://127.0.0.1:9000/")
    assert e.oauth == "http://127.0.0.1:9000"
    assert e.http == "https://api.alor.ru"
    e = resolve_endpoints(base_url="http://127.0.0.1:1", oauth_url="https://proxy.example/alor/")
    assert e.oauth == "https://proxy.example/alor"
    assert e.refresh_url == "https://proxy.example/alor/refresh"


def test_oauth_url_must_not_include_refresh() -> None:
    """oauth_url is the base: '/refresh' is appended, so passing it is an error with a hint."""
    with pytest.raises(ConfigurationError, match="without '/refresh'"):
        resolve_endpoints(oauth_url="https://oauth.alor.ru/refresh")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": "http://api.alor.ru"}, "only allowed for loopback"),
        ({"base_url": "ws://10.0.0.5:8765"}, "only allowed for loopback"),
        ({"base_url": "http://localhost.example.com"}, "only allowed for loopback"),
        ({"oauth_url": "http://oauth.alor.ru"}, "only allowed for loopback"),
        ({"env": "production"}, "unknown env"),
        ({"env": None}, "give env"),
        ({"base_url": "ftp://127.0.0.1"}, "unsupported scheme"),
        ({"base_url": "127.0.0.1:8765"}, "unsupported scheme"),
        ({"base_url": ""}, "non-empty"),
        ({"base_url": "http://"}, "no host"),
        ({"base_url": "http://:8765"}, "no host"),
        ({"base_url": "http://127.0.0.1:99999"}, "out of range"),
        ({"base_url": "http://127.0.0.1:8765/ws"}, "has a path"),
        ({"base_url": "http://127.0.0.1:8765?x=1"}, "query"),
        ({"base_url": "http://u:p@127.0.0.1:8765"}, "credentials"),
        ({"oauth_url": "wss://oauth.alor.ru"}, "unsupported scheme"),
    ],
)
def test_bad_configuration(kwargs: dict[str, str | None], match: str) -> None:
    """Each bad setting raises ConfigurationError that says what to do."""
    with pytest.raises(ConfigurationError, match=match):
        resolve_endpoints(**kwargs)


def test_remote_plain_error_suggests_tls() -> None:
    """The loopback error names the secure URL to use instead."""
    with pytest.raises(ConfigurationError, match=r"use https://api\.alor\.ru:80 "):
        resolve_endpoints(base_url="http://api.alor.ru:80")
    with pytest.raises(ConfigurationError, match=r"use wss://"):
        resolve_endpoints(base_url="ws://api.alor.ru")


def test_is_loopback_host() -> None:
    """127.0.0.0/8, ::1 (also IPv4-mapped) and localhost are loopback; nothing else is."""
    assert all(
        map(
            is_loopback_host,
            ["127.0.0.1", "127.255.0.1", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"],
        )
    )
    assert not any(
        map(is_loopback_host, ["0.0.0.0", "10.0.0.1", "::", "api.alor.ru", "", None, "128.0.0.1"])
    )


def test_ssl_context_for_plain_urls_is_none() -> None:
    """No TLS for plain http/ws (loopback only)."""
    assert ssl_context_for("http://127.0.0.1:8765") is None
    assert ssl_context_for("ws://127.0.0.1:8765/ws") is None


def test_ssl_context_for_tls_verifies() -> None:
    """https/wss get a verifying context: certificate required, host name checked."""
    ctx = ssl_context_for("wss://api.alor.ru/ws")
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname


def test_ssl_context_for_rejects_plain_remote() -> None:
    """ssl_context_for applies the loopback rule too."""
    with pytest.raises(ConfigurationError, match="only allowed for loopback"):
        ssl_context_for("ws://api.alor.ru/ws")


def test_ssl_verify_off_only_for_loopback() -> None:
    """verify=False is refused for remote hosts and honoured for loopback."""
    with pytest.raises(ConfigurationError, match="refusing to skip certificate verification"):
        ssl_context_for("https://api.alor.ru", verify=False)
    ctx = ssl_context_for("wss://127.0.0.1:8443/ws", verify=False)
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_NONE
    assert not ctx.check_hostname


def test_ssl_cafile(tmp_path: Path) -> None:
    """A missing or bad cafile is a ConfigurationError; a good one is loaded."""
    with pytest.raises(ConfigurationError, match="cannot load cafile"):
        ssl_context_for("https://127.0.0.1:8443", cafile=str(tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="cannot load cafile"):
        ssl_context_for("https://127.0.0.1:8443", cafile=str(bad))
    cert, _ = make_self_signed_cert(str(tmp_path))  # the simulator's --tls certificate
    ctx = ssl_context_for("https://127.0.0.1:8443", cafile=cert)
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert any(c["subject"] == ((("commonName", "localhost"),),) for c in ctx.get_ca_certs())
