"""Where the refresh token comes from when none is passed: ALOR_REFRESH_TOKEN, then the token
file, then the OS keyring (resolve_refresh_token), and a client built without one."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import pytest

from alorws.client import AlorClient
from alorws.client.auth import (
    KEYRING_SERVICE,
    KEYRING_USER,
    TokenManager,
    default_token_file,
    resolve_refresh_token,
)
from alorws.errors import ConfigurationError
from alorws.sim.app import Simulator

from .conftest import FAST


posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring backend that keeps passwords in a dict."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[service, username] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.store[service, username]


@pytest.fixture
def ring() -> Iterator[MemoryKeyring]:
    """An empty in-memory keyring in place of the machine's."""
    before = keyring.get_keyring()
    memory = MemoryKeyring()
    keyring.set_keyring(memory)
    try:
        yield memory
    finally:
        keyring.set_keyring(before)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ring: MemoryKeyring) -> Path:
    """No token anywhere: no variable, an empty config directory, an empty keyring; returns
    where the token file goes."""
    monkeypatch.delenv("ALOR_REFRESH_TOKEN", raising=False)
    monkeypatch.delenv("ALORWS_TOKEN_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "alorws" / "refresh_token"


def write_token(path: Path, token: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def test_the_token_file_is_under_xdg_config_home(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_token_file() == home
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert default_token_file() == Path.home() / ".config" / "alorws" / "refresh_token"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # invalid by the XDG spec: ignored
    assert default_token_file() == Path.home() / ".config" / "alorws" / "refresh_token"
    monkeypatch.setenv("ALORWS_TOKEN_FILE", "~/elsewhere/token")
    assert default_token_file() == Path.home() / "elsewhere" / "token"


def test_each_source_alone(
    home: Path, ring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each of the three sources gives the token when it is the only one that has it."""
    monkeypatch.setenv("ALOR_REFRESH_TOKEN", "  from-env \n")
    assert resolve_refresh_token() == "from-env"
    monkeypatch.delenv("ALOR_REFRESH_TOKEN")

    write_token(home, "from-file")
    assert resolve_refresh_token() == "from-file"
    home.unlink()

    ring.set_password(KEYRING_SERVICE, KEYRING_USER, "from-keyring")
    assert resolve_refresh_token() == "from-keyring"
    # Another account's token under another user name.
    ring.set_password(KEYRING_SERVICE, "D12345", "from-keyring-d12345")
    assert resolve_refresh_token(keyring_user="D12345") == "from-keyring-d12345"


def test_order_of_precedence(
    home: Path, ring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The argument, then ALOR_REFRESH_TOKEN, then the file, then the keyring."""
    monkeypatch.setenv("ALOR_REFRESH_TOKEN", "from-env")
    write_token(home, "from-file")
    ring.set_password(KEYRING_SERVICE, KEYRING_USER, "from-keyring")
    assert resolve_refresh_token("from-argument") == "from-argument"
    assert resolve_refresh_token() == "from-env"
    monkeypatch.setenv("ALOR_REFRESH_TOKEN", "")  # empty counts as unset
    assert resolve_refresh_token() == "from-file"
    home.unlink()
    assert resolve_refresh_token() == "from-keyring"


def test_nothing_found_names_all_three_sources(home: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_refresh_token()
    message = str(info.value)
    assert message.startswith("no refresh token found")
    assert "set ALOR_REFRESH_TOKEN=<token>" in message
    assert f"{str(home)!r}: absent" in message and "chmod 600" in message
    assert "ALORWS_TOKEN_FILE" in message
    assert "keyring set alorws refresh_token" in message and "no such entry" in message
    assert message.index("ALOR_REFRESH_TOKEN") < message.index(str(home)) < message.index("keyring")


def test_without_the_keyring_package_the_error_says_how_to_get_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # import keyring -> ImportError
    with pytest.raises(ConfigurationError, match=r"pip install 'alorws\[keyring\]'"):
        resolve_refresh_token()


def test_a_failing_keyring_is_reported_not_raised(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(MemoryKeyring):
        def get_password(self, service: str, username: str) -> str | None:
            raise keyring.errors.KeyringLocked("the collection is locked")

    keyring.set_keyring(Broken())  # the ring fixture puts the previous one back
    with pytest.raises(ConfigurationError, match="KeyringLocked: the collection is locked"):
        resolve_refresh_token()


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660, 0o644])
def test_a_file_other_users_can_read_is_refused(home: Path, mode: int) -> None:
    """Like ssh with its keys: a token file with group or other bits is not used."""
    write_token(home, "secret-refresh-token", mode)
    with pytest.raises(ConfigurationError) as info:
        resolve_refresh_token()
    message = str(info.value)
    assert f"chmod 600 {str(home)!r}" in message and f"{mode:03o}" in message
    assert "secret-refresh-token" not in message
    home.chmod(0o600)
    assert resolve_refresh_token() == "secret-refresh-token"
    home.chmod(0o400)
    assert resolve_refresh_token() == "secret-refresh-token"


def test_bad_token_files(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty file, a directory, a named file that is missing: each a clear error."""
    write_token(home, "   ")
    with pytest.raises(ConfigurationError, match="is empty"):
        resolve_refresh_token()
    home.unlink()
    home.mkdir()
    with pytest.raises(ConfigurationError, match="not a regular file"):
        resolve_refresh_token()
    home.rmdir()
    named = tmp_path / "named-token"
    monkeypatch.setenv("ALORWS_TOKEN_FILE", str(named))
    with pytest.raises(ConfigurationError, match="does not exist"):
        resolve_refresh_token()  # named on purpose: a missing one is a mistake, not "next"
    write_token(named, "from-named-file")
    assert resolve_refresh_token() == "from-named-file"
    assert resolve_refresh_token(token_file=named) == "from-named-file"
    with pytest.raises(ConfigurationError, match="does not exist"):
        resolve_refresh_token(token_file=tmp_path / "missing")


def test_an_empty_argument_is_refused(home: Path) -> None:
    for empty in ("", "   "):
        with pytest.raises(ConfigurationError, match="refresh_token is empty"):
            resolve_refresh_token(empty)
        with pytest.raises(ConfigurationError, match="refresh_token is empty"):
            AlorClient(empty, base_url="http://127.0.0.1:1")


def test_the_token_is_never_logged(
    home: Path,
    ring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ALOR_REFRESH_TOKEN", "tok-env-0123456789")
    resolve_refresh_token()
    monkeypatch.delenv("ALOR_REFRESH_TOKEN")
    write_token(home, "tok-file-0123456789")
    resolve_refresh_token()
    home.unlink()
    ring.set_password(KEYRING_SERVICE, KEYRING_USER, "tok-ring-0123456789")
    client = AlorClient(base_url="http://127.0.0.1:1")
    assert "tok-ring" not in repr(client)
    assert "keyring" in caplog.text  # where it came from is logged, never what
    assert "0123456789" not in caplog.text


def test_token_manager_resolves_too(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALOR_REFRESH_TOKEN", "from-env")
    assert TokenManager(None, "http://127.0.0.1:1")._body == b'{"token":"from-env"}'


@pytest.mark.parametrize("source", ["env", "file", "keyring"])
async def test_a_client_without_a_token_argument_connects(
    source: str,
    sim: Simulator,
    home: Path,
    ring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AlorClient() takes the simulator's token from each source and connects with it."""
    token = sim.demo_refresh_token
    if source == "env":
        monkeypatch.setenv("ALOR_REFRESH_TOKEN", token)
    elif source == "file":
        write_token(home, token)
    else:
        ring.set_password(KEYRING_SERVICE, KEYRING_USER, token)
    async with AlorClient(base_url=sim.url, backoff=FAST) as client:
        assert client.portfolios  # the token's claims: the simulator accepted it
        async with client.quotes("SBER") as quotes:
            async with asyncio.timeout(10):
                assert (await anext(aiter(quotes))).last_price > 0
