"""The examples run end to end against the in-process simulator (each a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._clisim import thread_sim


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(
    script: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "ALOR_REFRESH_TOKEN"}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("stream_quotes.py", ["SBER", "--seconds", "2"], "quotes received: SBER="),
        ("keep_a_book.py", ["--seconds", "2"], "book updates: "),
        ("orders.py", ["--seconds", "20"], "lots filled"),
        ("history.py", ["--hours", "3"], "bars of SBER (tf=60)"),
        ("watch_portfolio.py", ["--seconds", "1"], "done: 1 orders, "),
    ],
)
def test_example_runs(script: str, args: list[str], expected: str) -> None:
    """Exit code 0 and the expected line of output."""
    result = _run(script, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout, result.stdout[-2000:]


def test_a_url_needs_the_token_in_the_environment(tmp_path: Path) -> None:
    """With --url and no token (no ALOR_REFRESH_TOKEN, no token file, no keyring entry) an
    example stops before connecting, naming where it looked as the client does."""
    isolated = {
        "ALORWS_TOKEN_FILE": "",
        "XDG_CONFIG_HOME": str(tmp_path),  # no token file there
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",  # not this machine's keyring
    }
    result = _run("stream_quotes.py", "--url", "http://127.0.0.1:9", "--seconds", "1", env=isolated)
    assert result.returncode != 0
    assert "ALOR_REFRESH_TOKEN" in result.stderr
    assert str(tmp_path / "alorws" / "refresh_token") in result.stderr
    assert "keyring" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(90)
def test_a_url_finds_the_token_in_the_token_file(tmp_path: Path) -> None:
    """With --url and no ALOR_REFRESH_TOKEN the token file is used, as by the client and CLI."""
    token_file = tmp_path / "alorws" / "refresh_token"
    token_file.parent.mkdir()
    with thread_sim() as sim:
        token_file.write_text(sim.token + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        isolated = {"ALORWS_TOKEN_FILE": "", "XDG_CONFIG_HOME": str(tmp_path)}
        result = _run("stream_quotes.py", "SBER", "--url", sim.url, "--seconds", "2", env=isolated)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "quotes received: SBER=" in result.stdout, result.stdout[-2000:]


def test_every_example_has_a_docstring_and_help() -> None:
    """Each script documents itself and answers --help."""
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
    assert len(scripts) >= 4
    for name in scripts:
        text = (EXAMPLES / name).read_text(encoding="utf-8")
        assert text.startswith('"""'), name
        result = _run(name, "--help")
        assert result.returncode == 0 and "--seconds" in result.stdout, name
