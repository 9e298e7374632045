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
import contextlib
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FrameError, InvalidState
from ..protocol.codec import DataMessage, route
from .format import (
    NS_PER_DAY as _NS_PER_DAY,
    SCHEMA,
    UNKNOWN_STREAM,
    PartWriter,
    day_of,
    partition_dir,
    recover,
)


if TYPE_CHECKING:
    from ..client.client import AlorClient

__all__ = ["Recorder"]

log = logging.getLogger("alorws.record")

# The shape every ALOR data message has on the wire (§3.4): ``{"data":{…},"guid":"…"}``. Frames
# of that shape are classified in C, in bulk, by a handful of Arrow kernels (which run without
# the GIL, so the reader and the consumer keep their thread); anything else goes through route()
# one by one. A frame is a data message of guid G here exactly when it
#   * starts with ``{"data":`` not followed by ``nu`` (``{"data":null`` is a status-like reply), and
#   * ends with ``,"guid":"G"}`` where G is 1-(_TAIL - 11) characters of printable ASCII other
#     than quote and backslash (so G is the top-level key's value as JSON decodes it).
# That is what route() finds for such a frame (validity is not checked: a corrupt frame of that
# shape is recorded as data, byte for byte, and replay's route() judges it). Per frame the cost is
# a few short copies and compares of its last _TAIL bytes, never a scan of the whole frame:
# the separator is found in the reversed tail (Arrow has no "find last"), guids are cut out once
# per distinct guid length and checked once per distinct guid.
_TAIL: Final = 64
_SEP_REVERSED: Final = ',"guid":"'[::-1]
_GUID_CHARS: Final = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]+")
_MAX_LENGTHS: Final = 16  # more distinct guid lengths in one batch: route() decides the rest
_ENCODE: Final = msgspec.json.Encoder().encode
_NICE: Final = 10
#: One queued frame, as the tap leaves it: (recv_ns, connection, frame).
_ITEM: Final = pa.struct(
    [("recv_ns", pa.int64()), ("connection", pa.int32()), ("frame", pa.binary())]
)


class _Sub(msgspec.Struct, frozen=True):
    opcode: str
    params: str


_DATA: Final = pa.scalar("data")
_NO_GUID: Final = pa.scalar(None, pa.binary())
# Kernel arguments are Arrow scalars: a Python int costs a failed `import dateutil` per call.
_TWO: Final = pa.scalar(2, pa.int32())


def _fast_guids(frames: pa.Array) -> pa.Array:
    """The guid (binary) of every frame of the data-message shape above; null for the others."""
    tail = pc.binary_slice(frames, -_TAIL)
    reversed_tail = pc.binary_reverse(tail)
    # reversed_tail = '}"' + reversed guid + '":"diug",' + …: the separator's index is len(G) + 2
    at = pc.find_substring(reversed_tail, _SEP_REVERSED)
    head = pc.and_(
        pc.starts_with(frames, '{"data":'), pc.invert(pc.starts_with(frames, '{"data":nu'))
    )
    shaped = pc.and_(head, pc.and_(pc.starts_with(reversed_tail, '}"'), pc.greater(at, _TWO)))
    at = pc.if_else(shaped, at, pa.scalar(None, at.type))
    lengths = pc.unique(at).drop_null().to_pylist()
    if not lengths:
        return pa.nulls(len(frames), pa.binary())
    if len(lengths) > _MAX_LENGTHS:
        lengths = lengths[:_MAX_LENGTHS]
    guids = None
    for n in lengths:
        mine = pc.equal(at, pa.scalar(n, at.type))
        cut = pc.if_else(mine, pc.binary_slice(tail, -n, -2), _NO_GUID)
        guids = cut if guids is None else pc.coalesce(guids, cut)
    assert guids is not None
    # Check each distinct guid once; a guid with a quote, backslash or non-printable byte is
    # not what JSON would decode: those frames go to route().
    encoded = guids.dictionary_encode()
    bad = [i for i, g in enumerate(encoded.dictionary.to_pylist()) if not _GUID_CHARS.fullmatch(g)]
    if bad:
        wrong = pc.is_in(encoded.indices, value_set=pa.array(bad, encoded.indices.type))
        guids = pc.if_else(wrong, _NO_GUID, guids)
    return guids


def _classify(frames: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Guid and kind of every frame (string arrays): the bulk fast path, then route() for the
    few frames it does not settle (status replies, junk, other key orders)."""
    guids = _fast_guids(frames).cast(pa.string())  # printable ASCII: valid UTF-8
    fast = pc.is_valid(guids)
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
        # The writer yields the CPU to the reader and the consumer when they compete for it
        # (Linux: a thread's own nice value); the queue absorbs the lag, counted in stats().
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICE)
        try:
            while not self._stop.wait(self.poll):
                due = time.monotonic() - self._last_flush >= self.flush_seconds
                self._drain(everything=due)
                if due:
                    self._flush_all()
            self._drain(everything=True)  # the tap is removed: this is the last of it
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

    def _drain(self, *, everything: bool) -> None:
        """Take whole batches off the queue (and the rest too if ``everything``).

        Each :meth:`_add` has a fixed cost (a few dozen kernel calls) that small takes would
        pay per frame: between flushes, frames wait in the queue until a batch is there."""
        queue, size = self._queue, self.batch_rows
        take = iter(queue.popleft, None)  # items are tuples, never None: popleft in a C loop
        while len(queue) >= size or (everything and queue):
            self._add(list(islice(take, min(len(queue), size))))

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

        Per frame, only C loops run here (one conversion of the tuples, the kernels): the
        writer thread holds the GIL as little as it can, so the reader and the consumer keep
        running."""
        self._frames_seen += len(items)
        columns = pa.array(items, _ITEM)  # one C loop over the tuples, three arrays
        recv, frames = columns.field(0), columns.field(2)
        guids, kinds = _classify(frames)
        # One describe() per distinct guid (a batch holds few), then everything by index.
        encoded = guids.dictionary_encode(null_encoding="encode")
        codes = encoded.indices
        subs = [self._describe(g) for g in encoded.dictionary.to_pylist()]
        # Dictionary columns: per frame only an index is taken, no string is copied (nulls
        # become null indices, not dictionary entries).
        opcodes = pa.array([s.opcode if s else None for s in subs], pa.string())
        opcodes = opcodes.dictionary_encode().take(codes)
        params = pa.array([s.params if s else None for s in subs], pa.string())
        params = params.dictionary_encode().take(codes)
        table = pa.Table.from_arrays(
            [recv, columns.field(1), guids, kinds, opcodes, params, frames], schema=SCHEMA
        )
        # Partitions: (UTC day, stream). A stream per distinct guid; days differ only in a batch
        # across midnight (or after a clock step), which is checked on the extremes.
        names = [s.opcode if s else UNKNOWN_STREAM for s in subs]
        streams = sorted(set(names))
        stream_of = pa.array([streams.index(name) for name in names], pa.int32()).take(codes)
        low, high = pc.min_max(recv).values()
        first, last = day_of(low.as_py()), day_of(high.as_py())
        if first == last and len(streams) == 1:
            self._pend((first, streams[0]), table)
            return
        days: list[str] = [first]
        key = stream_of
        if first != last:
            day_number = pc.divide(recv, pa.scalar(_NS_PER_DAY, pa.int64()))
            numbers = pc.unique(day_number).to_pylist()
            days = [day_of(d * _NS_PER_DAY) for d in numbers]
            day_index = pc.index_in(day_number, value_set=pa.array(numbers, pa.int64()))
            key = pc.add(pc.multiply(day_index, pa.scalar(len(streams), pa.int32())), stream_of)
        for k in pc.unique(key).to_pylist():
            part = table.filter(pc.equal(key, pa.scalar(k, key.type)))
            self._pend((days[k // len(streams)], streams[k % len(streams)]), part)

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
        table = pa.concat_tables(tables)  # chunked as drained: nothing is copied here
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
