"""The recorder never blocks the reader, and a crash loses at most the unflushed batch.

The recorder tests run with the writer in a process (the default) and in a thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alorws.client import AlorClient
from alorws.record import SCHEMA, Recorder, recover
from alorws.record.format import PartWriter, list_parts, partition_dir


process_or_thread = pytest.mark.parametrize("process", [True, False], ids=["process", "thread"])


def assert_writer_gone(recorder: Recorder) -> None:
    """After aclose the writer process has exited and been waited for (no zombie, no orphan)."""
    writer = recorder._writer
    proc = getattr(writer, "proc", None)
    assert (proc is None) == (not recorder.process)
    if proc is not None:
        assert proc.returncode is not None
        assert proc.stdout is not None and proc.stdout.closed
        assert proc.stdin is not None and proc.stdin.closed


@process_or_thread
async def test_full_queue_drops_and_the_client_keeps_running(
    client: AlorClient, tmp_path: Path, process: bool
) -> None:
    """With a tiny queue bound and a slow writer, frames are dropped and counted, not waited on."""
    # The writer (or the shipper) wakes at close.
    recorder = Recorder(client, tmp_path, max_queue=2, poll=30.0, process=process)
    async with recorder:
        async with client.all_trades("SBER") as trades:
            got = 0
            async with asyncio.timeout(10):
                while recorder.stats()["dropped"] < 5 or got < 10:
                    await trades.get()
                    got += 1
            stats = recorder.stats()
            assert stats["queued"] == 2
            assert stats["lag"] > 0
    assert recorder.stats()["rows"] == 2
    assert recorder.stats()["queued"] == 0
    assert len(list_parts(tmp_path)) >= 1
    assert_writer_gone(recorder)


@process_or_thread
async def test_stats_while_recording(client: AlorClient, tmp_path: Path, process: bool) -> None:
    """Rows reach the disk within about flush_seconds; files, lag and pending are reported."""
    recorder = Recorder(client, tmp_path, flush_seconds=0.05, poll=0.01, process=process)
    async with recorder:
        async with client.all_trades("GAZP") as trades:
            async with asyncio.timeout(10):
                while recorder.stats()["rows"] < 5:
                    await trades.get()
            stats = recorder.stats()
            assert stats["dropped"] == 0 and stats["error"] is None
            assert stats["open_files"] >= 1
            assert (stats["process"] is not None) == process
    stats = recorder.stats()
    assert stats["files"] >= 1
    assert stats["rows"] == stats["frames"] and stats["queued"] == stats["pending"] == 0
    table = pq.read_table(list_parts(tmp_path)[0])
    assert set(table.column("opcode").to_pylist()) == {"AllTradesGetAndSubscribe"}
    assert_writer_gone(recorder)


def _table(n: int, start: int = 0) -> pa.Table:
    return pa.Table.from_pydict(
        {
            "recv_ns": list(range(start, start + n)),
            "connection": [1] * n,
            "guid": ["g"] * n,
            "kind": ["data"] * n,
            "opcode": ["QuotesSubscribe"] * n,
            "params": ["{}"] * n,
            "frame": [b'{"data":{},"guid":"g"}'] * n,
        },
        schema=SCHEMA,
    )


def test_recover_rebuilds_an_unfinished_part_from_its_journal(tmp_path: Path) -> None:
    """A part left open by a crash comes back from its journal; a torn last batch is dropped."""
    directory = partition_dir(tmp_path, "2025-01-02", "QuotesSubscribe")
    writer = PartWriter(directory, roll_rows=1000)
    writer.write(_table(10))
    writer.write(_table(5, start=10))
    # crash: no close(). The .tmp Parquet has no footer and is not visible to readers.
    assert list_parts(tmp_path) == []
    journal = next(directory.glob(".part-*.journal.arrows"))
    with journal.open("ab") as f:
        f.write(b"\x00\x01torn")  # half of a third batch
    assert recover(tmp_path) == [directory / "part-00000.parquet"]
    table = pq.read_table(directory / "part-00000.parquet")
    assert table.column("recv_ns").to_pylist() == list(range(15))
    assert not list(directory.glob(".part-*"))
    assert recover(tmp_path) == []  # nothing left to do


def test_part_writer_rolls(tmp_path: Path) -> None:
    """Every roll_rows rows a new part file is finished; numbering continues across writers."""
    directory = partition_dir(tmp_path, "2025-01-02", "QuotesSubscribe")
    writer = PartWriter(directory, roll_rows=4)
    writer.write(_table(10))
    writer.close()
    again = PartWriter(directory, roll_rows=4)
    again.write(_table(1, start=10))
    again.close()
    parts = list_parts(tmp_path)
    assert [p.name for p in parts] == [f"part-0000{i}.parquet" for i in range(4)]
    assert [pq.read_metadata(p).num_rows for p in parts] == [4, 4, 2, 1]


def test_classify_agrees_with_the_router() -> None:
    """The bulk classification gives every frame the guid and kind route() gives it."""
    from alorws.errors import FrameError
    from alorws.protocol.codec import DataMessage, route
    from alorws.record._writer import classify

    frames = [
        b'{"data":{"symbol":"SBER","last_price":301.5},"guid":"k3Xq9a-1Z"}',
        b'{"data":{"x":1},"guid":"c0ffee00-1111-2222-3333-444455556666"}',
        b'{"data":{"x":1},"guid":"g"}',
        b'{"data":[1,2],"guid":"a b"}',  # a space is printable
        b'{"data":{"guid":"inner"},"guid":"outer"}',  # the top-level key wins
        b'{"data":{"x":",\\"guid\\":\\"no\\"}"},"guid":"yes"}',
        b'{"data":{},"guid":"esc\\u0041"}',  # escaped: route() decodes it to escA
        b'{"data":{},"guid":"' + b"x" * 80 + b'"}',  # longer than the tail: route() decides
        b'{"data":{},"guid":"\xd0\xbf"}',  # non-ASCII guid: route() decides
        b'{"guid":"first","data":{"x":1}}',  # other key order
        b'{"data":null,"requestGuid":"r1","httpCode":200,"message":"ok"}',
        b'{"requestGuid":"r2","httpCode":400,"message":"bad"}',
        b'{"data":{"x":1},"guid":""}',
        b'{"data":{"x":1},"guid":"trailing"} ',
        b"not json",
        b"",
    ]
    frames += [b'{"data":{"n":%d},"guid":"k3Xq9a-%d"}' % (i, i) for i in range(200)]
    guids, kinds = classify(pa.array(frames, pa.binary()))
    for frame, guid, kind in zip(frames, guids.to_pylist(), kinds.to_pylist(), strict=True):
        try:
            msg = route(frame)
        except FrameError:
            assert (guid, kind) == (None, "junk"), frame
            continue
        if isinstance(msg, DataMessage):
            assert (guid, kind) == (msg.guid, "data"), frame
        else:
            assert (guid, kind) == (msg.request_guid, "status"), frame
