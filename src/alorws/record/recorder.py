"""Record every frame a client receives to Parquet, off the reader's path.

::

    async with AlorClient(token) as client, Recorder(client, "data/") as rec:
        async with client.quotes("SBER") as quotes:
            ...
        print(rec.stats())

Three parties, three threads:

* the **tap** (:meth:`AlorClient.add_tap`) runs in the reader, in the client's I/O thread: it
  appends ``(recv_ns, connection, frame)`` to a bounded deque and returns. When the deque holds
  ``max_queue`` frames the frame is not recorded and counted in ``dropped``: the reader never
  waits for the disk;
* the **writer thread** (``alorws-recorder``) wakes every ``poll`` seconds, drains the deque,
  classifies the frames (kind and guid; see :func:`_classify`), resolves each guid once with
  :meth:`AlorClient.describe`, groups the rows by (UTC date, opcode) and, every ``batch_rows``
  rows or ``flush_seconds``, appends them to that partition's part file
  (:class:`~alorws.record.format.PartWriter`), rolling every ``roll_rows``;
* the **consumer loop** only calls :meth:`Recorder.start`, :meth:`Recorder.stats` and
  :meth:`Recorder.aclose`.

Crash safety: each flush also goes to the part's journal (:mod:`alorws.record.format`), and
:meth:`start` finishes parts a crashed recorder left behind. A crash loses at most the frames
not yet flushed: those still in the deque plus the pending batch (``flush_seconds`` of data or
``batch_rows`` rows, whichever comes first). :meth:`aclose` flushes and closes everything.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FrameError, InvalidState
from ..protocol.codec import DataMessage, route
from .format import (
    SCHEMA,
    UNKNOWN_STREAM,
    PartWriter,
    day_of,
    last_midnight_ns,
    partition_dir,
    recover,
)


if TYPE_CHECKING:
    from ..client.client import AlorClient

__all__ = ["Recorder"]

log = logging.getLogger("alorws.record")

# The shape every ALOR data message has on the wire (§3.4): ``{"data":{…},"guid":"…"}``. Frames
# that match are classified in C, in bulk (Arrow's regex kernels run without the GIL, so the
# reader and the consumer keep their thread); anything else goes through route() one by one.
# A match is exact: valid JSON ending in ``,"guid":"<printable ASCII but quote/backslash>"}``
# has that guid as its top-level key, and ``{"data":`` not followed by ``null`` is a data
# message for route() too. (Validity is not checked: a corrupt frame of that shape is recorded
# as data, byte for byte, and replay's route() judges it.)
_GUID_AT_END: Final = r',"guid":"(?P<g>[\x20\x21\x23-\x5b\x5d-\x7e]+)"\}$'
_DATA_FIRST: Final = r'^\{"data":(?:[^n]|n[^u])'
_ENCODE: Final = msgspec.json.Encoder().encode


class _Sub(msgspec.Struct, frozen=True):
    opcode: str
    params: str


_DATA: Final = pa.scalar("data")


def _classify(frames: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Guid and kind of every frame (string arrays): the bulk fast path, then route() for the
    few frames it does not settle (status replies, junk, other key orders)."""
    guids = pc.cast(
        pc.struct_field(pc.extract_regex(frames, pattern=_GUID_AT_END), [0]), pa.string()
    )
    fast = pc.and_(pc.is_valid(guids), pc.match_substring_regex(frames, pattern=_DATA_FIRST))
    kinds = pc.if_else(fast, _DATA, pa.scalar(None, pa.string()))
    if pc.all(fast).as_py():
        return guids, kinds
    guid_list: list[str | None] = guids.to_pylist()
    kind_list: list[str | None] = kinds.to_pylist()
    for i in pc.indices_nonzero(pc.invert(fast)).to_pylist():
        try:
            msg = route(frames[i].as_py())
        except FrameError:
            guid_list[i], kind_list[i] = None, "junk"
            continue
        if isinstance(msg, DataMessage):
            guid_list[i], kind_list[i] = msg.guid, "data"
        else:
            guid_list[i], kind_list[i] = msg.request_guid, "status"
    return pa.array(guid_list, pa.string()), pa.array(kind_list, pa.string())


class Recorder:
    """Records every frame ``client`` receives on ``/ws`` under ``root``; see the module doc.

    Args:
        client: an :class:`~alorws.client.AlorClient` (started before :meth:`start`).
        root: the recording's directory (created; an existing recording is added to).
        batch_rows: write a partition's pending rows once there are this many.
        flush_seconds: write pending rows at least this often.
        max_queue: frames the tap may hold for the writer; beyond it frames are dropped.
        roll_rows: rows per part file.
        poll: how often the writer thread drains the queue (seconds).
        compression: Parquet codec (``zstd``; ``snappy``, ``lz4``, ``none``).
        journal: keep the crash journal (see :mod:`alorws.record.format`).
    """

    def __init__(
        self,
        client: AlorClient,
        root: str | os.PathLike[str],
        *,
        batch_rows: int = 10_000,
        flush_seconds: float = 1.0,
        max_queue: int = 1_000_000,
        roll_rows: int = 1_000_000,
        poll: float = 0.02,
        compression: str = "zstd",
        journal: bool = True,
    ) -> None:
        if batch_rows < 1 or max_queue < 1 or roll_rows < 1:
            raise ValueError("batch_rows, max_queue and roll_rows must be at least 1")
        self.client = client
        self.root = Path(root)
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_queue = max_queue
        self.roll_rows = roll_rows
        self.poll = poll
        self.compression = compression
        self.journal = journal
        self._queue: deque[tuple[int, int, bytes]] = deque()
        self._dropped = 0
        self._remove_tap: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._subs: dict[str, _Sub] = {}  # guid -> what it is (writer thread only)
        self._pending: dict[tuple[str, str], list[pa.Table]] = {}
        self._pending_rows: dict[tuple[str, str], int] = {}
        self._pending_total = 0
        self._writers: dict[tuple[str, str], PartWriter] = {}
        self._rows_written = 0
        self._frames_seen = 0
        self._last_flush = time.monotonic()
        self._error: BaseException | None = None
        self._state = "new"
        self.recovered: list[Path] = []

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Recorder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Finish parts a crash left open (:func:`~alorws.record.format.recover`), start the
        writer thread and install the tap."""
        if self._state != "new":
            raise InvalidState(f"cannot start a recorder that is {self._state}")
        self._state = "open"
        self.root.mkdir(parents=True, exist_ok=True)
        self.recovered = recover(self.root, compression=self.compression)
        self._thread = threading.Thread(target=self._run, name="alorws-recorder", daemon=True)
        self._thread.start()
        self._remove_tap = self.client.add_tap(self._make_tap())

    async def aclose(self) -> None:
        """Remove the tap, write everything queued and pending, close every file.

        Re-raises the error that stopped the writer thread, if one did."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        if self._remove_tap is not None:
            self._remove_tap()
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            raise self._error

    # -- the tap (reader thread) ----------------------------------------------------------------

    def _make_tap(self) -> Callable[[int, int, bytes], None]:
        """The tap: a closure over locals, as cheap as the reader can get."""
        queue, append, limit = self._queue, self._queue.append, self.max_queue

        def tap(recv_ns: int, connection: int, frame: bytes) -> None:
            if len(queue) < limit:
                append((recv_ns, connection, frame))
            else:
                self._dropped += 1

        return tap

    # -- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.poll):
                self._drain()
                if time.monotonic() - self._last_flush >= self.flush_seconds:
                    self._flush_all()
            self._drain()  # the tap is removed: this is the last of it
            self._flush_all()
        except BaseException as exc:  # disk full, say: stop recording, report it in aclose
            log.exception("the recorder stopped")
            self._error = exc
        finally:
            for writer in self._writers.values():
                try:
                    writer.close()
                except Exception:
                    log.exception("closing %s failed", writer.directory)

    def _drain(self) -> None:
        while self._queue:
            n = min(len(self._queue), self.batch_rows)
            pop = self._queue.popleft
            self._add([pop() for _ in range(n)])

    def _describe(self, guid: str | None) -> _Sub | None:
        if guid is None:
            return None
        sub = self._subs.get(guid)
        if sub is None:
            info = self.client.describe(guid)
            if info is None:
                return None  # not cached: it may be registered a moment later
            sub = _Sub(str(info["opcode"]), _ENCODE(info["params"]).decode())
            self._subs[guid] = sub
        return sub

    def _add(self, items: list[tuple[int, int, bytes]]) -> None:
        """Classify ``items`` and append them to their partitions' pending batches.

        Per frame, only C loops run here (building the arrays, the regex): the writer thread
        holds the GIL as little as it can, so the reader and the consumer keep running."""
        recv, conns, frames = zip(*items, strict=True)
        self._frames_seen += len(items)
        frame_arr = pa.array(frames, pa.binary())
        guids, kinds = _classify(frame_arr)
        # One describe() per distinct guid (a batch holds few), then everything by index.
        encoded = guids.dictionary_encode(null_encoding="encode")
        codes = encoded.indices
        subs = [self._describe(g) for g in encoded.dictionary.to_pylist()]
        opcodes = (
            pa.array([s.opcode if s else None for s in subs], pa.string())
            .take(codes)
            .dictionary_encode()  # null opcodes as null indices, not dictionary entries
        )
        params = pa.array([s.params if s else None for s in subs], pa.string()).take(codes)
        table = pa.Table.from_arrays(
            [pa.array(recv, pa.int64()), pa.array(conns, pa.int32()), guids, kinds, opcodes,
             params, frame_arr],
            schema=SCHEMA,
        )  # fmt: skip
        first, last = day_of(recv[0]), day_of(recv[-1])
        streams = [s.opcode if s else UNKNOWN_STREAM for s in subs]
        if first != last:  # a batch across midnight (UTC): split it by day first
            cut = bisect.bisect_left(recv, last_midnight_ns(recv[-1]))
            self._split(table.slice(0, cut), first, codes.slice(0, cut), streams)
            self._split(table.slice(cut), last, codes.slice(cut), streams)
        else:
            self._split(table, first, codes, streams)

    def _split(self, table: pa.Table, day: str, codes: pa.Array, streams: list[str]) -> None:
        """Pend ``table``'s rows by stream (``codes`` index ``streams``)."""
        distinct = dict.fromkeys(streams)
        if len(distinct) == 1:
            self._pend((day, streams[0]), table)
            return
        for stream in distinct:
            mine = pa.array([i for i, s in enumerate(streams) if s == stream], codes.type)
            part = table.filter(pc.is_in(codes, value_set=mine))
            if part.num_rows:
                self._pend((day, stream), part)

    def _pend(self, key: tuple[str, str], table: pa.Table) -> None:
        self._pending.setdefault(key, []).append(table)
        rows = self._pending_rows.get(key, 0) + table.num_rows
        self._pending_rows[key] = rows
        self._pending_total += table.num_rows
        if rows >= self.batch_rows:
            self._flush(key)

    def _flush(self, key: tuple[str, str]) -> None:
        tables = self._pending.pop(key, None)
        self._pending_rows.pop(key, None)
        if not tables:
            return
        table = pa.concat_tables(tables).combine_chunks()
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = PartWriter(
                partition_dir(self.root, *key),
                roll_rows=self.roll_rows,
                compression=self.compression,
                journal=self.journal,
            )
        writer.write(table)
        self._rows_written += table.num_rows
        self._pending_total -= table.num_rows

    def _flush_all(self) -> None:
        for key in list(self._pending):
            self._flush(key)
        self._last_flush = time.monotonic()

    # -- observation --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``rows`` written, ``files`` (finished parts, ``open_files``), ``queued`` frames and
        ``pending`` rows not yet on disk, ``lag`` (seconds the oldest queued frame waits),
        ``dropped`` frames (queue full), ``error`` (why the writer stopped, or None)."""
        try:
            oldest = self._queue[0][0]
        except IndexError:
            oldest = None
        writers = list(self._writers.values())
        return {
            "rows": self._rows_written,
            "frames": self._frames_seen,
            "files": sum(w.files_done for w in writers),
            "open_files": sum(1 for w in writers if w.rows and w._writer is not None),
            "queued": len(self._queue),
            "pending": self._pending_total,
            "lag": 0.0 if oldest is None else max(0.0, (time.time_ns() - oldest) / 1e9),
            "dropped": self._dropped,
            "error": None if self._error is None else repr(self._error),
        }

    def __repr__(self) -> str:
        return f"<Recorder {self.root} {self._state}>"
