"""The ``alorws`` command line against the simulator.

Commands run in-process through :func:`alorws.cli.main` (what the console script and
``python -m alorws`` call), with ``--sim`` or ``--url`` and a short ``--duration``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from alorws import cli

from ._clisim import run, thread_sim


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, str]]:
    """A simulator in a thread of its own, for commands that share one server (--url)."""
    with thread_sim() as sim:
        yield {"url": sim.url, "token": sim.token, "portfolio": sim.portfolio}


@pytest.fixture
def token_env(server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv(cli.TOKEN_ENV, server["token"])
    return server


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in (
        "sim", "demo", "quotes", "book", "trades", "bars", "portfolio", "order", "cancel",
        "history", "record", "replay", "status",
    ):  # fmt: skip
        assert command in out


def test_python_dash_m_works() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "alorws", "quotes", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--token-file" in proc.stdout and "--sim" in proc.stdout


def test_sim_delegates_to_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sim", "--help")
    assert code == 0
    assert "--max-connections" in out and "--drop-every" in out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "nope")
    assert code == 2
    assert "No such command" in err


def test_quotes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "quotes", "SBER", "gazp", "--sim", "--duration", "1.5")
    assert code == 0, err
    assert "Quotes" in out
    table = out[out.index("Quotes") :]
    assert "SBER" in table and "GAZP" in table and "312." in table


def test_book(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "book", "SBER", "--depth", "3", "--sim", "--duration", "1")
    assert code == 0, err
    assert "SBER book: spread" in out
    assert "Bid vol" in out and "Ask vol" in out


def test_trades_prints_the_tape(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "trades", "SBER", "--sim", "--duration", "1.5", "--last", "5")
    assert code == 0, err
    assert "SBER tape:" in out
    assert any(line.endswith(" SBER") and (" buy " in line or " sell " in line)
               for line in out.splitlines())  # fmt: skip


def test_bars(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "bars", "SBER", "--tf", "60", "--sim", "--duration", "1")
    assert code == 0, err
    assert "SBER 60 candles" in out and "Close" in out


def test_portfolio_defaults_to_the_demo_portfolio(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "portfolio", "--sim", "--duration", "1")
    assert code == 0, err
    assert "Portfolio D" in out
    assert "Positions" in out and "Orders" in out and "RUB" in out


def test_status(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", "--sim", "--duration", "1", "--metrics-port", "0")
    assert code == 0, err
    assert "Connections (lanes)" in out and "Streams (buffers)" in out
    assert "market" in out and "account" in out
    assert "quotes SBER" in out and "book SBER" in out
    assert "metrics: http://127.0.0.1:" in out


def test_gateway_with_embedded_nats(capsys: pytest.CaptureFixture[str]) -> None:
    """`alorws gateway --embedded-nats --sim` starts NATS and the gateway, then exits cleanly."""
    code, out, err = run(capsys, "gateway", "--embedded-nats", "--sim", "--duration", "1")
    assert code == 0, err
    assert "nats: nats://127.0.0.1:" in out and "consumers" in out


def test_gateway_needs_one_nats_option(capsys: pytest.CaptureFixture[str]) -> None:
    """Neither or both of --nats/--embedded-nats is a usage error."""
    code, _, err = run(capsys, "gateway", "--sim", "--duration", "1")
    assert code == 2 and "--embedded-nats" in err


def test_order_and_cancel_against_one_server(
    capsys: pytest.CaptureFixture[str], token_env: dict[str, str]
) -> None:
    url, portfolio = token_env["url"], token_env["portfolio"]
    code, out, err = run(
        capsys, "order", "buy", "SBER", "1", "--limit", "300.5", "--url", url,
        "--portfolio", portfolio, "--yes",
    )  # fmt: skip
    assert code == 0, err
    assert "accepted: limit buy 1 SBER @ 300.5" in out
    order_id = out.split()[1]
    assert order_id.isdigit()
    assert token_env["token"] not in out + err

    code, out, err = run(capsys, "cancel", order_id, "--url", url, "--portfolio", portfolio)
    assert code == 0, err
    assert f"order {order_id} cancelled" in out

    code, out, err = run(capsys, "cancel", order_id, "--url", url, "--portfolio", portfolio)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith("alorws: error: OrderRejected") and len(lines) == 2
    assert lines[1].startswith("hint:")
    assert "Traceback" not in err


def test_market_order_with_sim_uses_the_demo_portfolio(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "order", "sell", "SBER", "1", "--market", "--sim")
    assert code == 0, err
    assert "accepted: market sell 1 SBER (portfolio D" in out


def test_portfolio_is_required_without_sim(
    capsys: pytest.CaptureFixture[str], token_env: dict[str, str]
) -> None:
    code, _, err = run(
        capsys, "order", "buy", "SBER", "1", "--limit", "300", "--url", token_env["url"]
    )
    assert code == 1
    assert "--portfolio is required" in err and "D0" in err


def test_history_to_parquet(
    capsys: pytest.CaptureFixture[str], token_env: dict[str, str], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    out_file = tmp_path / "sber.parquet"
    code, out, err = run(
        capsys, "history", "SBER", "--tf", "3600", "--url", token_env["url"], "--out",
        str(out_file),
    )  # fmt: skip
    assert code == 0, err
    assert f"written to {out_file}" in out
    table = pq.read_table(out_file)
    assert table.num_rows > 10
    assert table.column_names == ["symbol", "tf", "time", "open", "high", "low", "close", "volume"]


def test_history_table_and_bad_dates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "history", "SBER", "--tf", "D", "--sim")
    assert code == 0, err
    assert "SBER D:" in out and "candles" in out
    code, _, err = run(capsys, "history", "SBER", "--from", "yesterday", "--sim")
    assert code == 1
    assert "bad date 'yesterday'" in err and "hint:" in err


def test_record_then_replay(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "data"
    code, out, err = run(
        capsys, "record", "SBER", "GAZP", "--streams", "quotes,book,trades", "--out", str(root),
        "--sim", "--duration", "1.5",
    )  # fmt: skip
    assert code == 0, err
    assert "Recording to" in out and "Recorder (closed)" in out
    assert list(root.rglob("*.parquet"))

    code, out, err = run(capsys, "replay", str(root), "--streams", "quotes,trades,book")
    assert code == 0, err
    assert "Replay of" in out and "quotes SBER" in out and "trades GAZP" in out
    assert "book SBER" in out
    assert "replayed" in out

    code, _, err = run(capsys, "replay", str(root), "SBER", "--streams", "bars")
    assert code == 1
    assert "no recorded subscription" in err and "hint: recorded:" in err


def test_missing_token_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    monkeypatch.delenv("ALORWS_TOKEN_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no token file there
    code, out, err = run(capsys, "quotes", "SBER", "--env", "dev", "--duration", "1")
    assert code == 1
    error, hint = err.splitlines()
    # The three places a token is looked for, each with how to put it there.
    assert error.startswith("alorws: error: no refresh token found")
    assert f"set {cli.TOKEN_ENV}=" in error
    assert f"{tmp_path / 'alorws' / 'refresh_token'}': absent" in error and "chmod 600" in error
    assert "keyring set alorws refresh_token" in error
    assert hint == "hint: pass --token-file PATH, or use --sim for the simulator"
    assert out == ""


def test_bad_token_is_reported_without_traceback_or_token(
    capsys: pytest.CaptureFixture[str], server: dict[str, str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("not-a-real-refresh-token\n")
    token_file.chmod(0o600)  # a token file must be its owner's alone
    code, _, err = run(capsys, "status", "--url", server["url"], "--token-file", str(token_file))
    assert code == 1
    assert err.startswith("alorws: error: ") and "hint:" in err
    assert "Traceback" not in err and "not-a-real-refresh-token" not in err

    code, _, err = run(
        capsys, "status", "--url", server["url"], "--token-file", str(token_file), "--debug"
    )
    assert code == 1
    assert "Traceback" in err
    assert "not-a-real-refresh-token" not in err


def test_token_file_that_does_not_exist(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "--token-file", "/nonexistent/token")
    assert code == 1
    assert "the token file '/nonexistent/token' does not exist" in err


def test_token_file_readable_by_others_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--token-file gets the checks of the default token file: a secret that group or others
    can read is refused (with the chmod that fixes it), before any connection is tried."""
    token_file = tmp_path / "token"
    token_file.write_text("a-world-readable-refresh-token\n")
    token_file.chmod(0o644)
    code, out, err = run(
        capsys, "status", "--url", "ws://127.0.0.1:9", "--token-file", str(token_file)
    )
    assert code == 1 and out == ""
    assert "readable or writable by group or others (mode 644)" in err
    assert f"chmod 600 {str(token_file)!r}" in err and "hint:" in err
    assert "a-world-readable-refresh-token" not in err


def test_token_is_never_an_argument(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "quotes", "SBER", "--token", "secret")
    assert code == 2
    assert "No such option" in err


def test_env_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "quotes", "SBER", "--env", "staging")
    assert code == 2
    assert "staging" in err


def test_console_script_entry_point_matches_main() -> None:
    assert os.path.basename(cli.__file__) == "cli.py"
    assert callable(cli.main)
