"""Token sources and proxy URLs from a hostile environment: a FIFO or a two-line token file, a
token with whitespace inside, a keyring backend answering nonsense, proxy URLs whose password
breaks the URL's syntax, port 0, spaces in a host. Every refusal is a ConfigurationError that
says what to fix and shows neither the token nor the proxy password."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import keyring.backend
import pytest

from alorws import Client
from alorws.client import AlorClient
from alorws.client.auth import KEYRING_SERVICE, KEYRING_USER, resolve_refresh_token
from alorws.client.proxy import parse_proxy, proxy_for
from alorws.errors import ConfigurationError


TOKEN = "s3cr3t-refresh-token"
PASSWORD = "pa55word"


class OddKeyring(keyring.backend.KeyringBackend):
    """A keyring backend that answers with whatever the test puts in ``value``."""

    priority = 1  # type: ignore[assignment]
    value: Any = None

    def get_password(self, service: str, username: str) -> Any:
        return self.value

    def set_password(self, service: str, username: str, password: str) -> None:
        raise NotImplementedError

    def delete_password(self, service: str, username: str) -> None:
        raise NotImplementedError


@pytest.fixture
def ring() -> Iterator[OddKeyring]:
    before = keyring.get_keyring()
    odd = OddKeyring()
    keyring.set_keyring(odd)
    try:
        yield odd
    finally:
        keyring.set_keyring(before)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ring: OddKeyring) -> Path:
    """No token anywhere; returns where the default token file goes."""
    monkeypatch.delenv("ALOR_REFRESH_TOKEN", raising=False)
    monkeypatch.delenv("ALORWS_TOKEN_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "alorws" / "refresh_token"


def refused(caplog: pytest.LogCaptureFixture, *secrets: str, **kwargs: Any) -> str:
    """The ConfigurationError message of resolve_refresh_token(**kwargs); no secret in it or
    in the log."""
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigurationError) as err:
        resolve_refresh_token(**kwargs)
    message = str(err.value)
    for secret in secrets:
        assert secret not in message and secret not in caplog.text
    return message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_token_file_is_refused_without_waiting(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: the token file must not."""
    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    outcome: list[BaseException | str] = []

    def read() -> None:
        try:
            outcome.append(resolve_refresh_token(token_file=fifo))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(10.0)
    if worker.is_alive():  # release the blocked open() so the thread ends
        with open(fifo, "wb"):
            pass
        worker.join(10.0)
        pytest.fail("resolve_refresh_token blocked on a FIFO")
    assert isinstance(outcome[0], ConfigurationError)
    assert "not a regular file" in str(outcome[0])


@pytest.mark.parametrize(
    "content",
    [f"{TOKEN}\nsecond line\n", f"{TOKEN} # comment\n", f"{TOKEN}\x00\n", f"a b {TOKEN}"],
)
def test_a_token_file_with_more_than_one_word(
    home: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    home.parent.mkdir(parents=True)
    home.write_text(content)
    home.chmod(0o600)
    message = refused(caplog, TOKEN)
    assert str(home) in message and "whitespace" in message


@pytest.mark.parametrize("value", [f"{TOKEN}\nX", f"{TOKEN} X", f"{TOKEN}\tX", f"{TOKEN}\x1bX"])
def test_an_env_token_with_whitespace_inside(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    monkeypatch.setenv("ALOR_REFRESH_TOKEN", value)
    assert "ALOR_REFRESH_TOKEN" in refused(caplog, TOKEN)
    assert "refresh_token argument" in refused(caplog, TOKEN, refresh_token=value)


def test_surrounding_whitespace_is_only_stripped(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALOR_REFRESH_TOKEN", f" \t{TOKEN}\r\n")
    assert resolve_refresh_token() == TOKEN


@pytest.mark.parametrize("value", [123, b"token", ["token"]])
def test_a_token_argument_of_the_wrong_type(value: Any, caplog: pytest.LogCaptureFixture) -> None:
    message = refused(caplog, refresh_token=value)
    assert "must be a str" in message and type(value).__name__ in message


@pytest.mark.parametrize("value", [b"bytes-token", 42])
def test_a_keyring_answering_not_a_str(
    home: Path, ring: OddKeyring, caplog: pytest.LogCaptureFixture, value: Any
) -> None:
    """Bytes from a backend would reach the /refresh body as base64 in JSON: not a token."""
    ring.value = value
    message = refused(caplog)
    assert f"returned a {type(value).__name__}" in message
    assert f"keyring set {KEYRING_SERVICE} {KEYRING_USER}" in message


def test_a_keyring_token_with_a_line_break(
    home: Path, ring: OddKeyring, caplog: pytest.LogCaptureFixture
) -> None:
    ring.value = f"{TOKEN}\n{TOKEN}"
    assert "keyring" in refused(caplog, TOKEN)


# -- proxies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{PASSWORD}/x@proxy.invalid:3128",  # '/' ends the authority early
        f"http://user:{PASSWORD}?x@proxy.invalid:3128",
        f"http://user:{PASSWORD}#x@proxy.invalid:3128",
        f"socks5://user:{PASSWORD}/@proxy.invalid:1080",
    ],
)
def test_a_password_that_breaks_the_url_never_shows(url: str) -> None:
    """urlsplit reads what follows the password's ':' as a port and quotes it in its error:
    the message must say what to fix without any piece of the password."""
    with pytest.raises(ConfigurationError) as err:
        parse_proxy(url)
    message = str(err.value)
    assert PASSWORD[:4] not in message and "percent-encode" in message
    assert "user:***@" in message


def test_the_same_from_the_environment() -> None:
    env = {"HTTPS_PROXY": f"http://user:{PASSWORD}/x@proxy.invalid:3128"}
    with pytest.raises(ConfigurationError) as err:
        proxy_for("wss://api.alor.ru/ws", None, env)
    assert PASSWORD[:4] not in str(err.value) and "$HTTPS_PROXY" in str(err.value)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://proxy.invalid:0", "port 0"),
        (f"http://u:{PASSWORD}@proxy.invalid:0", "port 0"),
        ("http://proxy.invalid:99999", "1 to 65535"),
        ("http://proxy.invalid:-1", "1 to 65535"),
        ("http://bad host.invalid:3128", "spaces"),
        ("http://bad\x01host.invalid:3128", "control"),
    ],
)
def test_bad_ports_and_hosts(url: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as err:
        parse_proxy(url)
    assert PASSWORD not in str(err.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user@proxy.invalid:3128", "http://user@proxy.invalid:3128"),
        ("http://[::1]:3128", "http://[::1]:3128"),
        (f"http://us%3Aer:{PASSWORD}%40x@proxy.invalid:1", "http://us%3Aer:***@proxy.invalid:1"),
        ("SOCKS5H://proxy.invalid", "socks5://proxy.invalid:1080"),
    ],
)
def test_valid_odd_urls(url: str, shown: str) -> None:
    """A user without a password, IPv6, percent-encoded credentials, an upper-case scheme."""
    proxy = parse_proxy(url)
    assert str(proxy) == shown and PASSWORD not in repr(proxy)
    if "%40" in url:
        assert proxy.username == "us:er" and proxy.password == f"{PASSWORD}@x"


@pytest.mark.parametrize(
    ("no_proxy", "direct"),
    [
        (" api.alor.ru , other.invalid", True),
        ("*.alor.ru", True),
        (".alor.ru", True),
        ("alor.ru:443", True),
        ("alor.ru:8443", False),
        ("*", True),
        ("pi.alor.ru", False),
        ("10.0.0.0/8", False),
    ],
)
def test_no_proxy_spellings(no_proxy: str, direct: bool) -> None:
    env = {"HTTPS_PROXY": "http://proxy.invalid:3128", "NO_PROXY": no_proxy}
    chosen = proxy_for("https://api.alor.ru", None, env)
    assert (chosen is None) is direct


# -- the client's own options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"format": "XML"}, "format 'XML' is not one of Simple, Slim, Heavy"),
        ({"backoff": "fast"}, "backoff must be an alorws Backoff"),
        ({"backoff": 1.5}, "backoff must be"),
        ({"ping_interval": 0}, "ping_interval"),
        ({"ping_timeout": float("nan")}, "ping_timeout"),
        ({"subscribe_timeout": "15"}, "subscribe_timeout"),
        ({"subscribe_timeout": float("inf")}, "subscribe_timeout"),
        ({"max_buffer": 0}, "max_buffer"),
        ({"max_buffer": 1.5}, "max_buffer"),
    ],
)
def test_bad_client_options_fail_in_the_constructor(options: dict[str, Any], words: str) -> None:
    """A bad format was the enum's bare ValueError; a backoff that is not a Backoff, a
    timeout of 0 or NaN, a buffer of 0 were accepted and failed later, in the I/O thread or at
    the first subscribe."""
    with pytest.raises(ConfigurationError, match=words):
        AlorClient(TOKEN, base_url="http://127.0.0.1:1", proxy=False, **options)
    with pytest.raises(ConfigurationError, match=words):
        Client(TOKEN, base_url="http://127.0.0.1:1", proxy=False, **options)
