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
from alorws.record import SCHEMA, Recorder, recorder as recorder_module, recover
from alorws.record._writer import decode_batch, encode_batch
from alorws.record.format import PartWriter, list_parts, partition_dir
from alorws.sim.app import Simulator

from .conftest import FAST


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


@pytest.mark.parametrize("ring", [32 << 10, 0], ids=["small-ring", "pipe"])
async def test_every_frame_arrives_through_a_small_ring_or_the_pipe(
    client: AlorClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ring: int
) -> None:
    """A ring far smaller than the traffic wraps many times and the shipper waits for room
    (batches over half of it take the pipe); with no ring everything takes the pipe. Either
    way the recording holds every frame byte for byte, in receive order."""
    monkeypatch.setattr(recorder_module, "_RING_SIZE", ring)
    seen: list[bytes] = []
    recorder = Recorder(client, tmp_path, poll=0.002, batch_rows=8, flush_seconds=0.05)
    async with recorder:
        remove = client.add_tap(lambda ns, lane, frames: seen.extend(frames))
        books = [
            client.order_book(code, depth=depth, frequency=0, policy="queue")
            for code in ("SBER", "GAZP", "LKOH")
            for depth in (10, 12, 14, 16, 18)
        ]
        for book in books:
            await book.subscribe()
        got = 0
        async with asyncio.timeout(30):
            while got < 1500:
                got += len(await books[0].get_batch(100)) * len(books)  # about: they all tick
        for book in books:
            await book.aclose()
        remove()
        await client.call_in_io(asyncio.sleep, 0)  # the removal is done in the I/O loop
    stats = recorder.stats()
    assert stats["error"] is None and stats["dropped"] == 0 and stats["queued"] == 0
    parts = list_parts(tmp_path)
    recorded = pq.read_table(parts).column("frame").to_pylist()
    assert sum(pq.read_metadata(p).num_rows for p in parts) == stats["rows"] >= len(seen) > 1000
    in_order = [
        frame
        for part in parts
        if "stream=OrderBookGetAndSubscribe" in str(part)
        for frame in pq.read_table(part).column("frame").to_pylist()
        if b'"bids"' in frame
    ]
    mine = [f for f in seen if b'"bids"' in f]
    start = in_order.index(mine[0])
    assert in_order[start : start + len(mine)] == mine
    assert set(seen) <= set(recorded)
    head = recorder._writer._head  # type: ignore[union-attr]
    assert head > 4 * ring if ring else head == 0  # it wrapped (or was not used)


@process_or_thread
async def test_a_recorder_closed_after_its_client_still_writes_what_it_had(
    sim: Simulator, tmp_path: Path, process: bool
) -> None:
    """Closing the client first (its I/O loop is gone) leaves the recorder to finish from the
    caller's side: what was queued is written, nothing is left running, no error."""
    client = AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST)
    await client.start()
    recorder = Recorder(client, tmp_path, poll=60.0, flush_seconds=60.0, process=process)
    try:
        await recorder.start()
        async with client.all_trades("SBER") as trades:
            async with asyncio.timeout(10):
                for _ in range(20):
                    await trades.get()
        assert recorder.stats()["queued"] > 20  # nothing shipped yet (poll: 60 s)
    finally:
        await client.aclose()
    await recorder.aclose()
    stats = recorder.stats()
    assert stats["error"] is None and stats["dropped"] == 0
    assert stats["rows"] > 20 and stats["queued"] == stats["pending"] == 0
    assert sum(pq.read_metadata(p).num_rows for p in list_parts(tmp_path)) == stats["rows"]
    assert_writer_gone(recorder)


def test_batches_decode_to_what_was_encoded_and_torn_ones_are_refused() -> None:
    """The shipper's encoding round-trips; a truncated or inconsistent batch raises."""
    chunks = [(10, 1, [b'{"a":1}', b"", b"x" * 70_000]), (20, 2, [b"y"]), (30, 1, [])]
    raw = encode_batch(chunks).join()
    recv, connection, frames = decode_batch(raw)
    assert recv.to_pylist() == [10, 10, 10, 20]
    assert connection.to_pylist() == [1, 1, 1, 2]
    assert frames.to_pylist() == [b'{"a":1}', b"", b"x" * 70_000, b"y"]
    empty = decode_batch(encode_batch([]).join())
    assert [len(c) for c in empty] == [0, 0, 0]
    for bad in (raw[:-1], raw[:20], raw + b"z"):
        with pytest.raises(ValueError, match="torn|garbled"):
            decode_batch(bad)


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
