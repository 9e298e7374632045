"""The command line a trader can trust: the target, orders, help, errors and exit codes.

Commands run through :func:`alorws.cli.main` (what the console script calls) or as a process
(when stdin matters), against simulators on 127.0.0.1; a simulator reached with ``--url``
stands for a real server (orders there ask for confirmation).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from alorws import cli
from alorws.sim.app import Simulator

from ._clisim import Run, ThreadSim, process_sim, run, thread_sim


GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|'v2\w+-\d+'|[A-Za-z0-9]{6}-\d+'")
COMMANDS = (
    "sim", "demo", "quotes", "book", "trades", "bars", "portfolio", "orders", "order", "cancel",
    "history", "record", "replay", "status", "gateway", "check",
)  # fmt: skip


def once(err: str) -> list[str]:
    """The error output: exactly one error line (and at most a hint), no traceback."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) in (1, 2), err
    assert lines[0].startswith("alorws: error: "), err
    assert len(lines) == 1 or lines[1].startswith(("hint: ", "usage: ")), err
    assert not GUID.search(err), err
    return lines


def process(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "alorws", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadSim]:
    with thread_sim() as sim:
        yield sim


@pytest.fixture
def real(server: ThreadSim, monkeypatch: pytest.MonkeyPatch) -> ThreadSim:
    """The simulator as a 'real' server: its token in the environment, reached with --url."""
    monkeypatch.setenv(cli.TOKEN_ENV, server.token)
    return server


def working(server: ThreadSim) -> int:
    """Working orders of the demo account (the simulator's own count)."""
    from alorws.protocol.enums import OrderStatus

    def count(sim: Simulator) -> int:
        portfolio = sim.demo.portfolios[0]
        found = [*sim.engine.orders(portfolio), *sim.engine.stop_orders(portfolio)]
        return sum(1 for o in found if o.status is OrderStatus.WORKING)

    return int(server.call(count))


# -- one framework: help, version, usage errors ---------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_dash_h_and_double_dash_help(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    for flag in ("-h", "--help"):
        code, out, err = run(capsys, command, flag)
        assert code == 0, err
        assert f"alorws {command}" in out and "-h, --help" in out


def test_the_top_level_takes_dash_h_too(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-h")
    assert code == 0
    for command in COMMANDS:
        assert command in out


def test_sim_help_lists_its_flags_and_admin_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sim", "-h")
    assert code == 0
    for flag in ("--max-connections", "--drop-every", "--admin-token", "--daily-restart",
                 "--state-file", "--tls", "--account", "--schedule"):  # fmt: skip
        assert flag in out
    for endpoint in ("/sim/drop", "/sim/refuse", "/sim/inject", "/sim/stats", "/sim/silence"):
        assert endpoint in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from alorws import __version__
    from alorws.client import COMPILED_READER

    code, out, _ = run(capsys, "--version")
    reader = "compiled reader" if COMPILED_READER else "pure-Python reader"
    assert code == 0 and out.strip() == f"alorws {__version__} ({reader})"


def test_usage_error_is_one_message_and_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "quotes", "SBER", "--no-such-option")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[0] == "alorws: error: No such option: --no-such-option"
    assert lines[1].startswith("usage: alorws quotes")
    assert err.count("No such option") == 1


# -- targets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags", [["--sim", "--env", "dev"], ["--sim", "--env", "prod"], ["--sim", "--url", "x"]]
)
def test_sim_excludes_env_and_url(capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    code, out, err = run(capsys, "quotes", "SBER", *flags, "--duration", "1")
    assert code == 2 and out == ""
    (line, hint) = once(err)
    assert "--sim and --" in line and "exclude each other" in line
    assert hint.startswith("hint: ")


def test_the_default_target_is_dev_never_prod(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --env the target is ALOR's test environment (shown); prod only by name."""
    code, out, err = run(
        capsys, "order", "buy", "SBER", "1", "--limit", "300", "--portfolio", "D1", "--dry-run"
    )
    assert code == 0, err
    assert "on ALOR dev" in out and "prod" not in out
    code, out, _ = run(
        capsys, "order", "buy", "SBER", "1", "--limit", "300", "--portfolio", "D1",
        "--dry-run", "--env", "prod",
    )  # fmt: skip
    assert code == 0 and "on ALOR prod" in out


def test_sim_without_a_running_simulator_starts_one_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "order", "sell", "SBER", "1", "--market", "--sim")
    assert code == 0, err
    assert "accepted: market sell 1 SBER (portfolio D" in out and "on simulator in-process" in out


def test_sim_reaches_a_running_alorws_sim_so_cancel_finds_the_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`alorws sim` writes its url and demo token to a private state file; `--sim` commands use
    that simulator, so an order placed by one command is cancelled by the next. The file goes
    when the simulator stops."""
    state = tmp_path / "state" / "sim.json"
    monkeypatch.setenv("ALORWS_SIM_STATE", str(state))
    with process_sim(state) as running:
        assert running.lines["state"] == str(state)
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        saved = json.loads(state.read_text())
        assert saved["url"] == running.url and saved["pid"] == running.process.pid
        code, out, err = run(capsys, "order", "buy", "SBER", "1", "--limit", "290", "--sim")
        assert code == 0, err
        assert f"on simulator at {running.url} (alorws sim, pid {running.process.pid})" in out
        order_id = out.split()[1]
        code, out, err = run(capsys, "orders", "--sim")
        assert code == 0, err and order_id in out
        code, out, err = run(capsys, "cancel", order_id, "--sim")
        assert code == 0, err
        assert f"order {order_id} cancelled" in out
    assert not state.exists()


# -- safe orders ---------------------------------------------------------------------------------


def test_an_order_needs_its_type(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "order", "buy", "SBER", "1", "--sim")
    assert code == 2 and out == ""
    line, hint = once(err)
    assert "--market" in line and "--limit" in line and "never assumed" in hint


@pytest.mark.parametrize("quantity", ["-1", "0", "-5"])
def test_a_quantity_below_one_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], quantity: str
) -> None:
    code, out, err = run(capsys, "order", "buy", "SBER", quantity, "--limit", "300", "--sim")
    assert code == 1 and out == ""
    line, _ = once(err)
    assert line == f"alorws: error: quantity must be a whole number of lots above 0, got {quantity}"
    assert "No such option" not in err


def test_a_negative_price_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "order", "buy", "SBER", "1", "--limit", "-3", "--sim")
    assert code == 1
    assert "--limit must be above 0" in once(err)[0]


def test_an_order_to_a_real_server_asks_first(real: ThreadSim) -> None:
    """Against anything but --sim the order is shown and sent only after 'y' on stdin;
    EOF or any other answer sends nothing (exit 4)."""
    env = {cli.TOKEN_ENV: real.token}
    before = working(real)
    args = ("order", "buy", "SBER", "1", "--limit", "290", "--url", real.url, "--portfolio",
            real.portfolio)  # fmt: skip
    for answer in ("", "n\n", "maybe\n"):
        code, out, err = process(*args, stdin=answer, env=env)
        assert code == cli.EXIT_NOT_CONFIRMED, err
        assert f"send limit buy 1 SBER @ 290 (portfolio {real.portfolio}, exchange MOEX)" in err
        assert f"to server at {real.url}? [y/N]" in err
        assert "alorws: error: not confirmed: nothing was sent" in err
        assert "accepted" not in out
    assert working(real) == before
    code, out, err = process(*args, stdin="y\n", env=env)
    assert code == 0, err
    assert "accepted: limit buy 1 SBER @ 290" in out
    assert working(real) == before + 1
    code, out, err = process(*args, "--yes", env=env)  # no question asked
    assert code == 0 and "[y/N]" not in err
    assert working(real) == before + 2


def test_dry_run_prints_the_command_frame_and_sends_nothing(
    capsys: pytest.CaptureFixture[str], real: ThreadSim
) -> None:
    before = working(real)
    code, out, err = run(
        capsys, "order", "sell", "MOEX:SBER", "3", "--stop", "200", "--limit", "199.5",
        "--tif", "gtc", "--comment", "hedge", "--dry-run", "--url", real.url,
        "--portfolio", real.portfolio,
    )  # fmt: skip
    assert code == 0, err
    frame = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert frame["opcode"] == "create:stopLimit"
    assert frame["side"] == "sell" and frame["quantity"] == 3 and frame["comment"] == "hedge"
    assert frame["price"] == 199.5 and frame["triggerPrice"] == 200
    assert frame["condition"] == "LessOrEqual" or frame["condition"].lower() == "lessorequal"
    assert frame["instrument"] == {"symbol": "SBER", "exchange": "MOEX"}
    assert frame["user"] == {"portfolio": real.portfolio}
    assert "token" not in json.dumps(frame).lower() and real.token not in out + err
    assert "nothing was sent" in out
    assert working(real) == before


def test_orders_lists_and_cancel_all_asks_then_cancels(real: ThreadSim) -> None:
    env = {cli.TOKEN_ENV: real.token}
    for price in ("291", "292"):
        code, _, err = process(
            "order", "buy", "SBER", "1", "--limit", price, "--url", real.url, "--yes",
            "--portfolio", real.portfolio, env=env,
        )  # fmt: skip
        assert code == 0, err
    count = working(real)
    assert count >= 2
    code, out, err = process("orders", "--url", real.url, "--portfolio", real.portfolio, env=env)
    assert code == 0, err
    assert f"Working orders of {real.portfolio}: {count}" in out and "291" in out
    code, out, err = process(
        "cancel", "--all", "--url", real.url, "--portfolio", real.portfolio, stdin="", env=env
    )
    assert code == cli.EXIT_NOT_CONFIRMED and f"cancel {count} working order(s)" in err
    assert working(real) == count
    code, out, err = process(
        "cancel",
        "--all",
        "--url",
        real.url,
        "--portfolio",
        real.portfolio,
        stdin="yes\n",
        env=env,
    )
    assert code == 0, err
    assert f"{count} order(s) cancelled" in out
    assert working(real) == 0


def test_a_refused_token_is_one_message(
    capsys: pytest.CaptureFixture[str], server: ThreadSim, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("not-the-right-token\n")
    token.chmod(0o600)  # a token file must be its owner's alone
    for command in (["quotes", "SBER", "--duration", "3"], ["history", "SBER"]):
        code, out, err = run(capsys, *command, "--url", server.url, "--token-file", str(token))
        assert code == 1 and out == ""
        line, hint = once(err)
        assert line.startswith("alorws: error: AuthError: the refresh token was refused")
        assert "check the refresh token" in hint and "network" not in hint
        assert "not-the-right-token" not in err


def test_a_refused_cancel_is_one_line_without_a_guid(
    capsys: pytest.CaptureFixture[str], real: ThreadSim
) -> None:
    code, out, err = run(
        capsys, "cancel", "999999", "--url", real.url, "--portfolio", real.portfolio
    )
    assert code == 1 and out == ""
    line, hint = once(err)
    assert line.startswith("alorws: error: OrderRejected: the server refused the command: ")
    assert hint == "hint: nothing was executed"


# -- errors --------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_fails_at_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed port: one line naming it, the network hint, exit 3; the client's token
    retries never start (their message counts attempts), no SSLContext repr."""
    monkeypatch.setenv(cli.TOKEN_ENV, "some-refresh-token")
    port = closed_port()
    for command in (["history", "SBER"], ["quotes", "SBER", "--duration", "5"]):
        code, out, err = run(capsys, *command, "--url", f"http://127.0.0.1:{port}")
        assert code == cli.EXIT_NETWORK
        line, hint = once(err)
        assert line == f"alorws: error: cannot connect to 127.0.0.1:{port}: connection refused"
        assert hint == f"hint: {cli.NETWORK_HINT}"
        assert "attempt" not in err and "SSLContext" not in err


@pytest.fixture
def offline_alor(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """ALOR's host names resolved here: to a closed loopback port, or to a DNS failure.
    Nothing leaves the machine (not even a DNS query): other names resolve as usual."""
    real_getaddrinfo = socket.getaddrinfo
    mode: dict[str, object] = {"port": closed_port(), "fail": False}

    def getaddrinfo(host: object, port: object, *args: object, **kwargs: object) -> object:
        if isinstance(host, str) and host.endswith("alor.ru"):
            if mode["fail"]:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", mode["port"]))]
        return real_getaddrinfo(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv(cli.TOKEN_ENV, "some-refresh-token")
    return mode


@pytest.mark.parametrize("env", ["prod", "dev"])
def test_alor_offline_fails_fast_with_a_short_message(
    capsys: pytest.CaptureFixture[str], offline_alor: dict[str, object], env: str
) -> None:
    host = "oauth.alor.ru" if env == "prod" else "oauthdev.alor.ru"
    code, out, err = run(capsys, "quotes", "SBER", "--env", env, "--duration", "5")
    assert code == cli.EXIT_NETWORK and out == ""
    line, hint = once(err)
    assert line == f"alorws: error: cannot connect to {host}:443: connection refused"
    assert "ssl:" not in err and len(line) < 120
    offline_alor["fail"] = True
    code, _, err = run(capsys, "history", "SBER", "--env", env)
    assert code == cli.EXIT_NETWORK
    line, hint = once(err)
    assert line == f"alorws: error: cannot resolve '{host}': Name or service not known"
    assert hint == f"hint: {cli.NETWORK_HINT}"


def test_a_busy_metrics_port_is_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run(
            capsys, "quotes", "SBER", "--sim", "--duration", "1", "--metrics-port", str(port)
        )
    assert code == 1
    line, hint = once(err)
    assert line == f"alorws: error: --metrics-port {port} is in use"
    assert hint == "hint: pick another port, or 0 for a free one"


def test_a_local_file_error_gets_a_path_hint_not_the_network_one(
    capsys: pytest.CaptureFixture[str], real: ThreadSim, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(
        capsys, "history", "SBER", "--url", real.url, "--out", str(blocker / "x.csv")
    )
    assert code == 1
    line, hint = once(err)
    assert str(blocker) in line
    assert hint == "hint: check the path and its permissions"
    assert "network" not in err


def test_verbose_logs_alorws_only_and_log_file(
    capsys: pytest.CaptureFixture[str], real: ThreadSim, tmp_path: Path
) -> None:
    """-vv shows alorws' DEBUG log (not asyncio's); --log-file writes it; without them the
    log prints nothing."""
    log = tmp_path / "alorws.log"
    asyncio_level = logging.getLogger("asyncio").level
    code, _, err = run(capsys, "history", "SBER", "--url", real.url, "-vv", "--log-file", str(log))
    assert code == 0, err
    assert " alorws." in err and "DEBUG" in err
    assert "asyncio" not in err.replace("alorws", "")
    text = log.read_text()
    assert " alorws." in text and " asyncio:" not in text and real.token not in text
    assert logging.getLogger("asyncio").level == asyncio_level
    code, _, err = run(capsys, "history", "SBER", "--url", real.url)
    assert code == 0 and err == ""


def test_every_bad_input_prints_one_message(capsys: pytest.CaptureFixture[str]) -> None:
    for args, code_wanted, text in [
        (["history", "SBER", "--sim", "--out", "x.txt"], 1, "cannot tell the file format"),
        (["history", "SBER", "--sim", "--from", "2030-01-01"], 1, "is in the future"),
        (["history", "SBER", "--sim", "--from", "2026-01-05", "--to", "2026-01-01"], 1,
         "is after --to"),
        (["history", "SBER", "--sim", "--tf", "0"], 1, "bad timeframe"),
        (["quotes", "MOEX:", "--sim"], 1, "bad instrument"),
        (["cancel", "--sim"], 2, "give an ORDER_ID or --all"),
        (["order", "buy", "SBER", "1", "--stop", "300", "--tif", "day", "--sim"], 2,
         "--tif does not apply"),
        (["order", "buy", "SBER", "1", "--limit", "300", "--condition", "more", "--sim"], 2,
         "--condition needs --stop"),
        (["order", "buy", "SBER", "1", "--market", "--limit", "3", "--sim"], 2,
         "--market excludes"),
    ]:  # fmt: skip
        code, out, err = run(capsys, *args)
        assert code == code_wanted, (args, err)
        assert text in once(err)[0], (args, err)
