"""Live views tell the truth: what a user sees in a terminal (a pseudo-terminal, pexpect) and in a
pipe, while the connection drops and comes back, with unknown and mixed-case symbols."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pexpect
import pytest

from alorws import cli

from ._clisim import ProcessSim, ThreadSim, process_sim, thread_sim


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadSim]:
    with thread_sim(seed=5) as sim:
        yield sim


@pytest.fixture(scope="module")
def admin_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessSim]:
    """An `alorws sim --admin` process that `--sim` finds (its reconnect delays are short)."""
    state = tmp_path_factory.mktemp("views") / "sim.json"
    with process_sim(state, "--admin") as running:
        yield running


def restart(running: ProcessSim, seconds: float) -> None:
    """POST /sim/restart: drop every connection and refuse new ones for ``seconds``."""
    body = json.dumps({"seconds": seconds, "code": 1006}).encode()
    request = urllib.request.Request(f"{running.url}/sim/restart", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


#: What may stand between two words on a terminal: spaces and colour/cursor escapes.
GAP = r"(?:\x1b\[[0-9;?]*[A-Za-z]|\s)+"


def spawn(server: ThreadSim | ProcessSim, *args: str) -> pexpect.spawn:
    env = {**os.environ, "COLUMNS": "150", "LINES": "40"}
    if isinstance(server, ProcessSim):
        env["ALORWS_SIM_STATE"] = str(server.state)
        target = ["--sim"]
    else:
        env[cli.TOKEN_ENV] = server.token
        target = ["--url", server.url]
    return pexpect.spawn(
        sys.executable,
        ["-m", "alorws", *args, *target],
        env=env,
        encoding="utf-8",
        timeout=20,
        dimensions=(40, 150),
    )


def test_quotes_in_a_terminal_show_reconnecting_with_attempts_then_live(
    admin_sim: ProcessSim,
) -> None:
    """The header says live; an outage turns it into 'reconnecting... (attempt N)' (rows
    marked stale) and back; NOSUCH marks its own row while SBER and SiZ6 (case kept) stream."""
    child = spawn(admin_sim, "quotes", "SBER", "NOSUCH", "SiZ6")
    where = rf"simulator at {re.escape(admin_sim.url)} \(alorws sim, pid \d+\)"
    try:
        child.expect(f"target: {where}")
        child.expect(rf"{where}{GAP}live")
        child.expect("unknown instrument")
        child.expect(rf"SiZ6{GAP}│{GAP}[\d,]+\.\d\d")
        restart(admin_sim, 1.5)
        child.expect(r"reconnecting\.\.\. \(attempt (\d+)\)")
        child.expect("stale")
        child.expect(r"reconnecting\.\.\. \(attempt ([2-9]|\d\d)\)")
        child.expect(rf"{GAP}live{GAP}last data")
        assert "SIZ6" not in (child.before or "")
        child.sendintr()  # Ctrl-C
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130


@pytest.mark.parametrize(
    "args",
    [
        ["book", "SBER", "--depth", "3"],
        ["trades", "GAZP"],
        ["bars", "SBER", "--tf", "60"],
        ["portfolio"],
        ["status", "SBER"],
    ],
)
def test_every_live_view_has_the_target_and_connection_line(
    server: ThreadSim, args: list[str]
) -> None:
    extra = ["--portfolio", server.portfolio] if args[0] == "status" else []
    if args[0] == "portfolio":
        args = [*args, server.portfolio]
    child = spawn(server, *args, *extra, "--duration", "1")
    try:
        child.expect(rf"server at http://127\.0\.0\.1:\d+{GAP}live{GAP}last data")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_a_pipe_gets_a_line_per_change_of_the_connection(admin_sim: ProcessSim) -> None:
    """Not on a terminal: 'connection lost: reconnecting... (attempt N)' and 'connection
    restored' lines, and every line printed while down carries the state."""
    env = {**os.environ, "ALORWS_SIM_STATE": str(admin_sim.state)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "alorws", "book", "SBER", "--sim", "--duration", "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first once-a-second line: the view is up
        assert "SBER bid" in first, first
        restart(admin_sim, 1.5)
        lines = proc.stdout.read().splitlines()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    text = "\n".join(lines)
    assert re.search(r"connection lost: reconnecting\.\.\. \(attempt \d+\)", text), text
    assert "connection restored: live" in text, text
    assert any(line.split(" ", 1)[1].startswith("[reconnecting... (attempt") for line in lines)


def test_symbols_keep_their_case_and_take_an_exchange(
    capsys: pytest.CaptureFixture[str], server: ThreadSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.TOKEN_ENV, server.token)
    code = cli.main(
        ["quotes", "MOEX:SBER", "SiZ6", "lkoh", "--url", server.url, "--duration", "1.5"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    table = out[out.index("Quotes") :]
    assert "MOEX:SBER" in table and "MOEX:MOEX" not in out
    assert "SiZ6" in table and "SIZ6" not in out
    assert "LKOH" in table  # as the server spells it
    assert "unknown instrument" not in out
    code = cli.main(["book", "SBER", "--board", "TQBR", "--depth", "2", "--url", server.url,
                     "--duration", "1"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "SBER book: spread" in out, err
    code = cli.main(["quotes", "SBER", "--exchange", "SPBX", "--url", server.url,
                     "--duration", "1"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines()[0] == "alorws: error: nothing to show: SBER: unknown instrument"


def test_only_unknown_symbols_is_an_error(
    capsys: pytest.CaptureFixture[str], server: ThreadSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.TOKEN_ENV, server.token)
    code = cli.main(["trades", "NOSUCH", "--url", server.url, "--duration", "3"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0] == "alorws: error: nothing to show: NOSUCH: unknown instrument"
    assert len(lines) == 2 and lines[1].startswith("hint: ")
