"""The writer process: it survives its client's death, and its own death is reported.

* the client's process is SIGKILLed: the writer reads EOF, writes what it holds, finishes every
  part (no journal, no temporary file left) and exits; nothing is left running;
* the writer is SIGKILLed: the client keeps reading, the recorder reports the error and counts
  what it could not write in ``dropped``, ``aclose`` raises ``RecorderError``, and the next
  recorder on that directory finishes the parts the writer left from their journals.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alorws.client import AlorClient
from alorws.record import Recorder, RecorderError
from alorws.record.format import list_parts
from alorws.sim.app import Simulator


ROOT = Path(__file__).resolve().parent.parent.parent


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` (not our child) exits within ``timeout`` s (a pidfd, no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # gone already
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def recorded(root: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in list_parts(root)])


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd_open (Linux)")
@pytest.mark.timeout(60)
async def test_the_writer_finishes_the_recording_when_its_client_is_killed(
    sim: Simulator, tmp_path: Path
) -> None:
    root = tmp_path / "rec"
    helper = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.record.record_run", sim.url, sim.demo_refresh_token],
        str(root),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert helper.stdout is not None
        line = await asyncio.wait_for(helper.stdout.readline(), 30)
        pid, rows = (int(x) for x in line.split())
    finally:
        helper.kill()
        await helper.wait()
    assert helper.returncode == -signal.SIGKILL
    # The orphaned writer reads EOF, finishes every part and exits on its own.
    assert await asyncio.to_thread(wait_for_exit, pid, 30), "the writer process is still running"
    assert not list(root.glob("date=*/stream=*/.part-*")), "a part was left unfinished"
    table = recorded(root)
    assert table.num_rows >= rows
    assert set(table.column("opcode").to_pylist()) == {"AllTradesGetAndSubscribe"}


async def test_a_killed_writer_is_reported_and_the_client_keeps_running(
    client: AlorClient, tmp_path: Path
) -> None:
    recorder = Recorder(client, tmp_path, flush_seconds=0.05, poll=0.01)
    await recorder.start()
    assert recorder.pid is not None
    async with client.all_trades("SBER") as trades:
        async with asyncio.timeout(20):
            while recorder.stats()["rows"] < 10:
                await trades.get()
            os.kill(recorder.pid, signal.SIGKILL)
            while recorder.stats()["error"] is None:
                await trades.get()  # the reader and the consumer go on
            dropped = recorder.stats()["dropped"]
            for _ in range(5):
                await trades.get()
            while recorder.stats()["dropped"] == dropped:  # frames after the death are counted
                await trades.get()
        stats = recorder.stats()
        assert "writer process" in stats["error"]
        with pytest.raises(RecorderError, match="writer process"):
            await recorder.aclose()
    written = recorder.stats()["rows"]
    assert recorder._writer is not None and recorder._writer.proc.returncode == -signal.SIGKILL
    # What the writer had flushed is in its journals: the next recorder finishes those parts.
    async with Recorder(client, tmp_path) as again:
        assert again.recovered
    assert recorded(tmp_path).num_rows >= written
