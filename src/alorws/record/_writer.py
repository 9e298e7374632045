"""The recorder's writer: classification, partitions, part files; and the writer process.

:class:`Partitions` is what turns received frames into Parquet rows: it classifies them (kind
and guid, :func:`classify`), resolves each guid once, groups rows by (UTC date, opcode) and,
every ``batch_rows`` rows or ``flush_seconds``, appends them to that partition's part file
(:class:`~alorws.record.format.PartWriter`), rolling every ``roll_rows``. It runs either in a
thread of the client's process (``Recorder(process=False)``) or here, in the writer process
(:func:`main`: ``python -c "…main()" CONFIG``, started by ``Recorder(process=True)``).

The writer process's protocol (one parent, one child, two pipes):

* **stdin**: messages, each a :data:`HEADER` (magic ``ARW1``, kind, body length) and a body:

  - ``BATCH``: a batch of frames, in receive order, as :func:`encode_batch` lays them out
    (:data:`BATCH_HEAD`, then per socket read its ``recv_ns``, connection and frame count,
    then each frame's length, then the frames back to back): the client's tap hands over a
    read's frames at once with one time, and the shipper joins them in C loops, so a frame
    costs the client a list append, a length and a copy;
  - ``RING``: the same batch, placed in the **ring** instead: a shared memory file (Linux
    ``memfd``, inherited by the child; ``ring_fd``/``ring_size`` in the config) that the parent
    copies batches into, so they do not go through the pipe (on a VM a pipe write costs ~0.5 µs
    a frame on each side, a copy into pre-faulted shared memory a fraction of that). The body
    is :data:`RING_REF`: the batch's start (a byte count since the ring was created: the offset
    is start modulo the size) and length. The child copies the batch out at once and reports
    in its progress (``released``) the byte count up to which the parent may write again;
  - ``SUBS``: JSON ``{guid: [opcode, params] | null}``, the parent's answers (from
    ``AlorClient.describe``) to the guids the child asked about;
  - ``BEAT``: a heartbeat, so pending rows are flushed every ``flush_seconds`` even when no
    frame comes;
  - ``SYNC`` (sent by the parent before it closes the pipe): classify what has come so far
    now, so the last questions are asked while the parent still answers.

  EOF (the parent closed the pipe, or died) means: write everything, finish every part, exit.
Why the child asks: the parent then does no per-frame work beyond shipping (one describe per
new guid, on the child's request), while the bulk classification of every frame runs here. A
batch whose guids are not all known waits for the answer (one round trip, ~one ``poll``); the
batches after it wait behind it, so rows keep their receive order. A guid the client does not
know (a ping's, one already unsubscribed) is answered ``null`` and recorded under ``_unknown``,
as in the in-process writer. Guids never repeat, so answers are cached for good.

The child ignores SIGINT (a Ctrl-C in the terminal reaches the whole process group: the parent
decides when recording ends, by closing the pipe) and runs at nice 10.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import signal
import struct
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO, Final, NamedTuple

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import FrameError
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


__all__ = [
    "ROWS",
    "Encoded",
    "Partitions",
    "WriterConfig",
    "classify",
    "decode_batch",
    "encode_batch",
    "main",
]

log = logging.getLogger("alorws.record")

#: The frames of a batch as columns (what :class:`Partitions` takes).
ROWS: Final = pa.schema(
    [("recv_ns", pa.int64()), ("connection", pa.int32()), ("frame", pa.binary())]
)
#: A tap's hand-over: ``(recv_ns, connection, frames)`` (see ``AlorClient.add_tap``).
Chunk = tuple[int, int, list[bytes]]
#: The pipe's message header: magic, kind, body length.
HEADER: Final = struct.Struct("<4sB3xQ")
MAGIC: Final = b"ARW1"
BATCH: Final = 1
SUBS: Final = 2
BEAT: Final = 3
SYNC: Final = 4
RING: Final = 5
#: A ``RING`` message's body: the batch's start (bytes since the ring began) and length.
RING_REF: Final = struct.Struct("<QQ")
#: An encoded batch starts with: socket reads (runs of frames), frames.
BATCH_HEAD: Final = struct.Struct("<II")
_MAX_BATCH_BYTES: Final = (1 << 31) - 1  # Arrow's binary offsets are int32
_MADV_POPULATE_READ: Final = 22  # Linux 5.14+; older kernels: EINVAL, pages are touched instead
_MADV_POPULATE_WRITE: Final = 23
#: The writer's nice value (the reader and the consumer come first; queues absorb the lag).
NICE: Final = 10

# The shape every ALOR data message has on the wire (docs/protocol.md §3.4):
# ``{"data":{…},"guid":"…"}``. Frames of that shape are classified in C, in bulk, by a handful of
# Arrow kernels (which run without the GIL, so the reader and the consumer keep their thread);
# anything else goes through route() one by one. A frame is a data message of guid G here
# exactly when it
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


class Sub(msgspec.Struct, frozen=True, array_like=True):
    """What a guid is: its subscription's opcode and params (JSON, wire names)."""

    opcode: str
    params: str


def describe_with(client: Any) -> Callable[[str], Sub | None]:
    """A guid resolver over ``client.describe`` (None while the client does not know it)."""

    def describe(guid: str) -> Sub | None:
        info = client.describe(guid)
        if info is None:
            return None
        return Sub(str(info["opcode"]), _ENCODE(info["params"]).decode())

    return describe


class Encoded(NamedTuple):
    """An encoded batch (see ``BATCH`` above), not yet joined: write ``head``'s buffers, then
    the ``frames``; ``size`` bytes in all."""

    head: list[Any]
    frames: list[bytes]
    size: int

    def join(self) -> bytes:
        """The batch as one ``bytes``."""
        return b"".join([*self.head, *self.frames])


def encode_batch(chunks: Sequence[Chunk]) -> Encoded:
    """The taps' chunks as an encoded batch: a C loop over the frames for their lengths; their
    bytes are copied only where they go (the ring, or the pipe)."""
    chunks = [c for c in chunks if c[2]]  # a run of no frames is not a run
    frames = list(chain.from_iterable(c[2] for c in chunks))
    lengths = array("I", map(len, frames))
    data = sum(lengths)
    if data > _MAX_BATCH_BYTES:
        raise ValueError(
            f"{len(frames)} frames of {data:,} bytes in one batch: over 2 GiB; "
            "lower the recorder's batch_rows"
        )
    reads = len(chunks)
    head = [
        BATCH_HEAD.pack(reads, len(frames)),
        array("q", [c[0] for c in chunks]),
        array("i", [c[1] for c in chunks]),
        array("i", [len(c[2]) for c in chunks]),
        lengths,
    ]
    return Encoded(head, frames, BATCH_HEAD.size + 16 * reads + 4 * len(frames) + data)


def prefault(ring: mmap.mmap, *, writable: bool) -> None:
    """Touch every page of a ring now, so that copies in and out of it later take no page
    faults (on a VM a fault costs more than copying the page)."""
    with contextlib.suppress(OSError, ValueError):
        ring.madvise(_MADV_POPULATE_WRITE if writable else _MADV_POPULATE_READ)
        return
    step = mmap.PAGESIZE
    if writable:
        for at in range(0, len(ring), step):
            ring[at] = 0
    else:
        for at in range(0, len(ring), step):
            ring[at]


def decode_batch(raw: bytes) -> tuple[pa.Array, pa.Array, pa.Array]:
    """An encoded batch's columns, one value per frame: ``(recv_ns, connection, frame)``
    (zero copy: the arrays use ``raw``'s memory). Raises ``ValueError`` if it is torn."""
    reads, n = BATCH_HEAD.unpack_from(raw)
    buf = pa.py_buffer(raw)
    at = BATCH_HEAD.size

    def column(kind: pa.DataType, count: int, width: int) -> pa.Array:
        nonlocal at
        if at + count * width > len(raw):
            raise ValueError("a torn batch")
        array_ = pa.Array.from_buffers(kind, count, [None, buf.slice(at, count * width)])
        at += count * width
        return array_

    recv_ns, connection = column(pa.int64(), reads, 8), column(pa.int32(), reads, 4)
    ends = pc.cumulative_sum(column(pa.int32(), reads, 4))
    lengths = pc.cumulative_sum(column(pa.uint32(), n, 4).cast(pa.int64()))
    offsets = pa.concat_arrays([pa.array([0], pa.int64()), lengths]).cast(pa.int32())
    data = buf.slice(at)
    if (reads and ends[-1].as_py() != n) or offsets[-1].as_py() != data.size:
        raise ValueError("a garbled batch: its counts do not add up")
    frames = pa.Array.from_buffers(pa.binary(), n, [None, offsets.buffers()[1], data])
    if not reads:
        return pa.array([], pa.int64()), pa.array([], pa.int32()), frames
    try:
        return (
            pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(ends, recv_ns)),
            pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(ends, connection)),
            frames,
        )
    except pa.ArrowInvalid as exc:  # runs that do not add up
        raise ValueError(f"a garbled batch: {exc}") from None


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


def classify(frames: pa.Array) -> tuple[pa.Array, pa.Array]:
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


class WriterConfig(msgspec.Struct, frozen=True):
    """The writer's settings (see :class:`~alorws.record.Recorder`); JSON for the child."""

    root: str
    batch_rows: int = 10_000
    flush_seconds: float = 1.0
    roll_rows: int = 1_000_000
    compression: str = "zstd"
    journal: bool = True
    ring_fd: int = -1  # the shared memory ring's file descriptor (inherited), or -1: pipe only
    ring_size: int = 0


class Partitions:
    """Pending rows and open part files of a recording, per (UTC date, stream).

    Not thread-safe: one thread (the in-process writer's, or the writer process's main thread)
    owns it. ``describe`` resolves a guid; a resolved guid is cached, None is asked again.
    """

    def __init__(self, config: WriterConfig, describe: Callable[[str], Sub | None]) -> None:
        self.config = config
        self.root = Path(config.root)
        self._lookup = describe
        self._subs: dict[str, Sub] = {}  # guid -> what it is
        self._pending: dict[tuple[str, str], list[pa.Table]] = {}
        self._pending_rows: dict[tuple[str, str], int] = {}
        self._writers: dict[tuple[str, str], PartWriter] = {}
        self.pending_total = 0
        self.rows_written = 0
        self.frames_seen = 0
        self.last_flush = time.monotonic()

    def _describe(self, guid: str | None) -> Sub | None:
        if guid is None:
            return None
        sub = self._subs.get(guid)
        if sub is None:
            sub = self._lookup(guid)
            if sub is None:
                return None  # not known yet: it may be registered a moment later
            self._subs[guid] = sub
        return sub

    def add(
        self, recv: pa.Array, connection: pa.Array, frames: pa.Array, classified: Any = None
    ) -> None:
        """Classify the frames (unless ``classified`` = :func:`classify`'s result) and append
        them to their partitions' pending batches.

        Per frame, only C loops run here (the kernels): the thread holds the GIL as little as
        it can, so the reader and the consumer keep running when it shares their process."""
        self.frames_seen += len(frames)
        guids, kinds = classify(frames) if classified is None else classified
        # One describe per distinct guid (a batch holds few), then everything by index.
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
            [recv, connection, guids, kinds, opcodes, params, frames], schema=SCHEMA
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
        self.pending_total += table.num_rows
        if rows >= self.config.batch_rows:
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
                roll_rows=self.config.roll_rows,
                compression=self.config.compression,
                journal=self.config.journal,
            )
        writer.write(table)
        self.rows_written += table.num_rows
        self.pending_total -= table.num_rows

    def flush_due(self) -> bool:
        """Whether ``flush_seconds`` have passed since the last :meth:`flush_all`."""
        return time.monotonic() - self.last_flush >= self.config.flush_seconds

    def flush_all(self) -> None:
        """Write every partition's pending rows."""
        for key in list(self._pending):
            self._flush(key)
        self.last_flush = time.monotonic()

    def close(self) -> None:
        """Finish every open part (without writing pending rows: :meth:`flush_all` first)."""
        for writer in self._writers.values():
            try:
                writer.close()
            except Exception:
                log.exception("closing %s failed", writer.directory)

    def oldest_pending(self) -> int | None:
        """``recv_ns`` of the oldest row not yet written, or None."""
        firsts = [tables[0].column(0)[0].as_py() for tables in self._pending.values() if tables]
        return min(firsts, default=None)

    def progress(self) -> dict[str, Any]:
        """Counters for the recorder's stats (see :meth:`Recorder.stats`)."""
        writers = list(self._writers.values())
        return {
            "frames": self.frames_seen,
            "rows": self.rows_written,
            "files": sum(w.files_done for w in writers),
            "open": sum(1 for w in writers if w.rows and w.is_open),
            "pending": self.pending_total,
            "oldest": self.oldest_pending(),
        }


# -- the writer process --------------------------------------------------------------------------


class _Child:
    """The writer process's loop: read the parent's batches, ask about guids, write."""

    def __init__(self, config: WriterConfig, out: int) -> None:
        self.config = config
        self._out: int | None = out
        self._known: dict[str, Sub | None] = {}  # the parent's answers
        self._asked: set[str] = set()
        self.parts = Partitions(config, self._known.get)
        self._inbox: list[pa.RecordBatch] = []
        self._inbox_rows = 0
        # Classified batches, in order, waiting for answers about their guids.
        self._waiting: deque[tuple[pa.Table, tuple[pa.Array, pa.Array], set[str]]] = deque()
        self._ring: mmap.mmap | None = None
        if config.ring_fd >= 0:
            self._ring = mmap.mmap(config.ring_fd, config.ring_size, prot=mmap.PROT_READ)
            prefault(self._ring, writable=False)
        self._released = 0  # ring bytes copied out: the parent may write there again

    def send(self, message: dict[str, Any]) -> None:
        """One JSON line to the parent; a parent that is gone is not written to again."""
        if self._out is None:
            return
        data = _ENCODE(message) + b"\n"
        try:
            while data:
                data = data[os.write(self._out, data) :]
        except OSError:  # the parent died (EPIPE): finish the recording anyway
            self._out = None

    def run(self, source: BinaryIO) -> None:
        """Read the parent's messages until EOF (or a torn message: the parent died)."""
        read = source.read  # a buffered reader: read(n) returns n bytes, or fewer at EOF only
        while True:
            head = read(HEADER.size)
            if len(head) < HEADER.size:
                if head:
                    log.warning("the recorder's stream ends in a message header")
                break
            magic, kind, size = HEADER.unpack(head)
            body = read(size) if size else b""
            if magic != MAGIC or len(body) < size:
                log.warning("the recorder's stream ends early (a torn or garbled message)")
                break
            if kind == SUBS:
                answers = msgspec.json.decode(body, type=dict[str, Sub | None])
                self._known.update(answers)
                self._asked.difference_update(answers)
            elif kind == BATCH or kind == RING:
                if kind == RING:
                    body = self._from_ring(body)
                batch = pa.RecordBatch.from_arrays(list(decode_batch(body)), schema=ROWS)
                if batch.num_rows:
                    self._inbox.append(batch)
                    self._inbox_rows += batch.num_rows
            self._step(final=False, sync=kind == SYNC)
        self._step(final=True)

    def _from_ring(self, ref: bytes) -> bytes:
        """Copy a batch out of the ring (the parent reuses the space once it is released)."""
        if self._ring is None:
            raise RuntimeError("a RING message, but this writer has no ring")
        start, size = RING_REF.unpack(ref)
        at = start % len(self._ring)
        data = self._ring[at : at + size]
        self._released = start + size
        return data

    def _step(self, *, final: bool, sync: bool = False) -> None:
        due = self.parts.flush_due()
        if self._inbox and (final or sync or due or self._inbox_rows >= self.config.batch_rows):
            table = pa.Table.from_batches(self._inbox, ROWS).combine_chunks()
            self._inbox, self._inbox_rows = [], 0
            frames = table.column(2).chunk(0) if table.num_rows else pa.array([], pa.binary())
            classified = classify(frames)
            distinct = pc.unique(classified[0]).drop_null().to_pylist()
            missing = {g for g in distinct if g not in self._known}
            ask = missing - self._asked
            if ask:
                self._asked |= ask
                self.send({"need": sorted(ask)})
            self._waiting.append((table, classified, missing))
        while self._waiting and (final or self._waiting[0][2].issubset(self._known)):
            table, classified, _ = self._waiting.popleft()
            recv, connection, frames = (table.column(i).chunk(0) for i in range(3))
            self.parts.add(recv, connection, frames, classified)
        if final or due:
            self.parts.flush_all()
        if final:
            self.parts.close()
        self.send(self.progress())

    def progress(self) -> dict[str, Any]:
        """:meth:`Partitions.progress`, with the rows not yet classified counted as pending,
        ``taken`` (frames read off the pipe) and ``cpu`` (this process's CPU seconds)."""
        out = self.parts.progress()
        held = self._inbox_rows + sum(t.num_rows for t, _, _ in self._waiting)
        firsts = [b.column(0)[0].as_py() for b in self._inbox[:1]]
        firsts += [t.column(0)[0].as_py() for t, _, _ in list(self._waiting)[:1]]
        if out["oldest"] is not None:
            firsts.append(out["oldest"])
        out["pending"] += held
        out["oldest"] = min(firsts, default=None)
        out["taken"] = out["frames"] + held
        out["released"] = self._released
        out["cpu"] = time.process_time()
        return out


def main(argv: list[str] | None = None) -> int:
    """The writer process: ``argv[1]`` is a :class:`WriterConfig` as JSON; see the module
    docstring. Returns the exit code."""
    argv = sys.argv if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(AttributeError, OSError):
        os.nice(NICE)
    logging.basicConfig(level=logging.WARNING, format="alorws.record writer: %(message)s")
    config = msgspec.json.decode(argv[1], type=WriterConfig)
    child = _Child(config, sys.stdout.fileno())
    try:
        recovered = recover(config.root, compression=config.compression)
        ready = {"ready": True, "recovered": [str(p) for p in recovered]}
        child.send({**ready, "cpu": time.process_time()})
        child.run(sys.stdin.buffer)
    except BaseException as exc:
        log.exception("the recorder's writer stopped")
        child.send({"error": repr(exc)})
        with contextlib.suppress(Exception):
            child.parts.close()
        return 1
    return 0
