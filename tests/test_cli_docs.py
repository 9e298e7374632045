"""The examples of docs/cli.md run as written, against a running `alorws sim` (reached through
its state file by `--sim`), and every command has one."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from alorws import cli

from ._clisim import process_sim


DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
LIVE = {"quotes", "book", "trades", "bars", "status", "portfolio", "record", "replay"}


def examples() -> list[tuple[str, bool]]:
    """Every `$ alorws ...` line of the doc's console blocks, and whether it is to be run."""
    found: list[tuple[str, bool]] = []
    for block in re.findall(r"```console\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        for line in block.splitlines():
            if line.startswith("$ alorws "):
                command, _, comment = line[2:].partition("#")
                found.append((command.strip(), comment.strip() != "not run"))
    return found


def test_every_command_has_an_example() -> None:
    commands = {shlex.split(command)[1] for command, _ in examples()}
    missing = [c for c in cli.typer.main.get_command(cli.app).commands if c not in commands]  # type: ignore[attr-defined]
    assert not missing, f"docs/cli.md has no example of: {missing}"


def test_runnable_examples_stay_on_this_machine() -> None:
    """An example is run only if it cannot reach ALOR: --sim, or no server at all."""
    for command, runnable in examples():
        if runnable:
            args = shlex.split(command)
            assert "--env" not in args and "--url" not in args, command
            assert "prod" not in args, command


def test_the_examples_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state" / "sim.json"
    monkeypatch.setenv("ALORWS_SIM_STATE", str(state))
    monkeypatch.chdir(tmp_path)
    ran = 0
    order_id = None
    with process_sim(state):
        for command, runnable in examples():
            if not runnable:
                continue
            args = shlex.split(command)[1:]
            if order_id is not None:
                args = [order_id if a == "ORDER_ID" else a for a in args]
            assert "ORDER_ID" not in args, f"{command}: no order placed before it"
            if args[0] in LIVE and "--duration" not in args:
                args += ["--duration", "0.5"]
            code = cli.main(args)
            out, err = capsys.readouterr()
            assert code == 0, f"{command}\n{err}"
            assert "Traceback" not in err and "error" not in err, f"{command}\n{err}"
            placed = re.search(r"order (\d+) accepted", out)
            if placed:
                order_id = placed[1]
            if "--sim" in args:
                assert (
                    "simulator at http://127.0.0.1:" in out
                    or "on simulator at" in out
                    or (args[0] in ("orders", "history", "cancel"))
                ), f"{command} did not use the running simulator\n{out}"
            ran += 1
    assert ran >= 15
