"""``alorws demo`` / ``make demo``: bounded, exits 0, prints the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from alorws import cli


def test_demo_runs_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "demo-data"
    code = cli.main(["demo", "--duration", "5", "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    for step in ("placed", "modified", "cancelled", "injected a connection drop", "restored after"):
        assert step in out, step
    assert "Demo summary" in out
    assert "Parquet files written to" in out
    assert "Frames in the recording" in out  # the DuckDB query (duckdb is a dev dependency)
    assert "QuotesSubscribe" in out and "OrdersGetAndSubscribeV2" in out
    summary = next(line for line in out.splitlines() if line.startswith("demo finished:"))
    assert "0 files written" not in summary
    assert list(out_dir.rglob("*.parquet"))
