"""The examples run end to end against the in-process simulator (each a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


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


def test_a_url_needs_the_token_in_the_environment() -> None:
    """With --url and no ALOR_REFRESH_TOKEN an example stops before connecting."""
    result = _run("stream_quotes.py", "--url", "http://127.0.0.1:9", "--seconds", "1")
    assert result.returncode != 0
    assert "ALOR_REFRESH_TOKEN" in result.stderr


def test_every_example_has_a_docstring_and_help() -> None:
    """Each script documents itself and answers --help."""
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
    assert len(scripts) >= 4
    for name in scripts:
        text = (EXAMPLES / name).read_text(encoding="utf-8")
        assert text.startswith('"""'), name
        result = _run(name, "--help")
        assert result.returncode == 0 and "--seconds" in result.stdout, name
