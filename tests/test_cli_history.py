"""``alorws history`` and ``alorws replay``: the range asked for, the file format, Moscow time,
honest tables and consistent counts."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from alorws import cli
from alorws.protocol.timeutil import MSK

from ._clisim import ThreadSim, run, thread_sim


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadSim]:
    with thread_sim(seed=7, history_days=3) as sim:
        yield sim


@pytest.fixture
def url(server: ThreadSim, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(cli.TOKEN_ENV, server.token)
    return server.url


def test_a_range_beyond_the_servers_history_is_said(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """The simulator keeps 3 days: asked from a year ago, history says where its candles start."""
    start = (datetime.now(MSK) - timedelta(days=365)).strftime("%Y-%m-%d")
    code, out, err = run(capsys, "history", "SBER", "--tf", "3600", "--from", start, "--url", url)
    assert code == 0, err
    assert f"note: asked from {start} 00:00 MSK; the first candle the server has is at " in out


def test_the_table_says_how_much_it_shows_in_moscow_time(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, out, err = run(capsys, "history", "SBER", "--tf", "300", "--url", url)
    assert code == 0, err
    total = int(re.search(r"SBER 300: (\d+) candles", out)[1])  # type: ignore[index]
    assert total > 20
    assert f"showing the last 20 of {total} candles" in out
    assert "Time (MSK)" in out
    rows = re.findall(r"│ (\d{4}-\d\d-\d\d \d\d:\d\d) │", out)
    assert len(rows) == 20
    # The last candle is the one forming now, in Moscow time.
    now = datetime.now(MSK)
    last = datetime.strptime(rows[-1], "%Y-%m-%d %H:%M").replace(tzinfo=MSK)
    assert abs((now - last).total_seconds()) < 3600


def test_sub_minute_candles_show_seconds(capsys: pytest.CaptureFixture[str], url: str) -> None:
    start = (datetime.now(MSK) - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M")
    code, out, err = run(
        capsys, "history", "SBER", "--tf", "15", "--from", start, "--url", url, "--last", "5"
    )
    assert code == 0, err
    stamps = re.findall(r"│ \d{4}-\d\d-\d\d (\d\d:\d\d:\d\d) │", out)
    assert len(stamps) == 5 and len(set(stamps)) == 5
    code, out, err = run(capsys, "history", "SBER", "--tf", "1", "--from", start, "--url", url)
    assert code == 0, err
    stamps = re.findall(r"│ \d{4}-\d\d-\d\d (\d\d:\d\d:\d\d) │", out)
    assert stamps and len(set(stamps)) == len(stamps)


def test_the_file_format_follows_the_extension(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    as_csv = tmp_path / "sber.csv"
    code, out, err = run(capsys, "history", "SBER", "--tf", "3600", "--url", url,
                         "--out", str(as_csv))  # fmt: skip
    assert code == 0, err
    assert f"written to {as_csv} (csv" in out
    with as_csv.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["symbol", "tf", "time", "time_msk", "open", "high", "low", "close",
                       "volume"]  # fmt: skip
    assert len(rows) > 10 and rows[1][3].endswith("+03:00")
    as_parquet = tmp_path / "sber.parquet"
    code, out, err = run(capsys, "history", "SBER", "--tf", "3600", "--url", url,
                         "--out", str(as_parquet))  # fmt: skip
    assert code == 0, err
    assert pq.read_table(as_parquet).num_rows == len(rows) - 1
    for bad in ("sber.txt", "sber"):
        code, out, err = run(capsys, "history", "SBER", "--url", url,
                             "--out", str(tmp_path / bad))  # fmt: skip
        assert code == 1 and out == ""
        assert err.splitlines() == [
            f"alorws: error: cannot tell the file format of '{tmp_path / bad}'",
            "hint: end --out with .csv or .parquet",
        ]
        assert not (tmp_path / bad).exists()


def test_from_in_the_future_and_after_to(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "history", "SBER", "--from", "2030-01-01", "--sim")
    assert code == 1
    assert err.splitlines()[0].startswith("alorws: error: --from 2030-01-01 is in the future")
    assert "--to" not in err
    code, _, err = run(
        capsys, "history", "SBER", "--from", "2026-01-05", "--to", "2026-01-02", "--sim"
    )
    assert code == 1
    assert err.splitlines()[0] == "alorws: error: --from 2026-01-05 is after --to 2026-01-02"


def test_replay_shows_every_recorded_stream_with_consistent_counts(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    root = tmp_path / "rec"
    code, out, err = run(
        capsys, "record", "SBER", "SiZ6", "--streams", "quotes,book,trades", "--out", str(root),
        "--url", url, "--duration", "1.5",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "replay", str(root))
    assert code == 0, err
    for key in ("quotes SBER", "book SBER", "trades SBER", "quotes SiZ6", "book SiZ6"):
        assert key in out
    shown = int(re.search(r"Replay of .*: ([\d,]+) messages", out)[1].replace(",", ""))  # type: ignore[index]
    said = int(re.search(r"replayed ([\d,]+) messages", out)[1].replace(",", ""))  # type: ignore[index]
    per_row = sum(
        int(m.replace(",", ""))
        for m in re.findall(r"│ (?:quotes|book|trades) \S+\s+│\s+([\d,]+) │", out)
    )
    assert shown == said == per_row > 0
    code, out, err = run(capsys, "replay", str(root), "--streams", "quotes")
    assert code == 0, err
    assert "quotes SBER" in out and "book SBER" not in out
