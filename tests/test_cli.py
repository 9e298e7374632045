"""The command line entry points."""

from __future__ import annotations

import pytest

from alorws import _demo, cli


def test_demo_runs_and_decodes_every_stream() -> None:
    """The demo decodes all 12 streams in 3 formats and exits 0."""
    lines: list[str] = []
    assert _demo.run(lines.append) == 0
    assert any("36 frames decoded" in line for line in lines)


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """`alorws --help` prints usage and exits 0."""
    assert cli.main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


def test_unknown_command_is_an_error() -> None:
    """An unknown command exits non-zero with argparse's message."""
    with pytest.raises(SystemExit) as info:
        cli.main(["nope"])
    assert info.value.code == 2
