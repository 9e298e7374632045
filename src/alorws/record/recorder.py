"""Record every frame a client receives to Parquet, off the reader's path and its process.

::

    async with AlorClient(token) as client, Recorder(client, "data/") as rec:
        async with client.quotes("SBER") as quotes:
            ...
        print(rec.stats())

The parties:

* the **tap** (:meth:`AlorClient.add_tap`): each connection's reader appends every frame to a
  list, and once per iteration of the client's I/O loop (a socket read) the list goes to the
  recorder with one receive time: per frame the reader pays a list append, nothing more. The
  recorder queues the list; past ``max_queue`` frames a list is not recorded and counted in
  ``dropped``: the reader never waits for the disk;
* the **shipper** (``process=True``, the default) is a timer in the same I/O loop, every
  ``poll`` seconds: it turns what is queued into one Arrow record batch (a C loop over the
  frames; time and connection run-end encoded, one run per socket read) and writes it to the
  **writer process**'s stdin without blocking (a 1 MB pipe where Linux allows it; what the
  pipe does not take now waits for it to drain). It also answers the writer's questions about
  guids (one :meth:`AlorClient.describe` per new guid). No thread of the client's process is
  added: the I/O thread does it all between reads, so nothing contends for the GIL with the
  reader and the consumer;
* the **writer process** (:func:`alorws.record._writer.main` in ``sys.executable``, at nice 10, see
  :mod:`alorws.record._writer`) classifies the frames in bulk (kind and guid), partitions them
  by (UTC date, opcode), batches ``batch_rows`` rows or ``flush_seconds``, rolls part files
  (``roll_rows``), keeps the crash journal, and first runs
  :func:`~alorws.record.format.recover` on parts a crash left. Its CPU is not the client's;
* the **consumer loop** only calls :meth:`Recorder.start`, :meth:`Recorder.stats` and
  :meth:`Recorder.aclose`.

Why the writer asks about guids instead of the parent classifying frames: classifying costs
~0.3 µs a frame in Arrow kernels, describing a guid is needed once per subscription. The child
classifies, asks about the guids it has not been told of (a JSON line on its stdout), and holds
the batch (and those behind it, to keep receive order) until the answer arrives (the shipper
answers as soon as it reads the question). Nothing else of the client is read by the writer.

``Recorder(process=False)`` keeps the writing in a thread of the client's process (the writer
thread, at nice 10; for environments where starting a process is not wanted): the same code
(:class:`~alorws.record._writer.Partitions`), sharing the GIL with the reader and the consumer.

Receive times: ``recv_ns`` is ``time.time_ns()`` when the reader took the first frame of a
socket read; the frames of one read share it (they arrived together).

Crash safety:

* each flush also goes to the part's journal (:mod:`alorws.record.format`); a recorder starting
  on a directory finishes the parts a crashed one left (``recovered``);
* **the client's process dies** (even SIGKILL): the writer process reads EOF on its stdin,
  writes every row it holds and finishes every part as :meth:`aclose` would. Lost: the frames
  not yet shipped (at most one ``poll`` of them when the writer keeps up) and a batch torn in
  the pipe;
* **the writer process dies** (or stops on an error such as a full disk): the shipper notices
  (a broken pipe, EOF on the writer's stdout), logs one error, and from then on drops what the
  tap queues; ``stats()["error"]`` says why, ``dropped`` counts every frame not written (the
  ones shipped but not yet written, and everything after). The reader is never disturbed.
  :meth:`aclose` then raises :class:`~alorws.errors.RecorderError`. The parts the writer had
  open are finished from their journals by the next recorder on that directory;
* with ``process=False`` a crash of the process loses the frames not yet flushed: those
  queued plus the pending batch (``flush_seconds`` of data or ``batch_rows`` rows, whichever
  comes first).

In both modes a crash loses at most the current batch; :meth:`aclose` flushes and closes
everything (it waits until the writer process has written every frame shipped to it, then
closes its stdin and waits for it to exit, so no process is left behind). Close the recorder
before its client (``async with AlorClient(...) as client, Recorder(client, ...)`` does): a
recorder closed after its client still writes what it had, but the frames of the client's
last socket reads may be missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from ..errors import InvalidState, RecorderError
from ..lifecycle import Lifecycle
from ._writer import (
    BATCH,
    BEAT,
    HEADER,
    MAGIC,
    NICE,
    RING,
    RING_REF,
    SUBS,
    SYNC,
    Chunk,
    Encoded,
    Partitions,
    WriterConfig,
    decode_batch,
    describe_with,
    encode_batch,
    prefault,
)
from .format import recover


if TYPE_CHECKING:
    from ..client.client import AlorClient

__all__ = ["Recorder"]

log = logging.getLogger("alorws.record")

#: The writer process's program (``-c``: ``-m alorws.record._writer`` would import the module
#: twice, once as ``__main__``).
_CHILD: Final = "import sys; from alorws.record._writer import main; sys.exit(main())"
_PIPE_SIZE: Final = 1 << 20  # F_SETPIPE_SZ: fewer, larger pipe writes (Linux caps it)
_CLOSE_TIMEOUT: Final = 300.0  # seconds the writer process may take to finish at aclose
_ANSWERS_PER_READ: Final = 1000  # describes per read of the writer's questions (the reader waits)
_RING_SIZE: Final = 32 << 20  # the shared memory ring (bytes), resident from the start
_IOV_MAX: Final = 1024  # buffers per pwritev (Linux's IOV_MAX)
_SUBS: Final = msgspec.json.Encoder().encode
_Progress = dict[str, Any]
_NO_PROGRESS: Final[_Progress] = {
    "frames": 0,
    "rows": 0,
    "files": 0,
    "open": 0,
    "pending": 0,
    "oldest": None,
}


class Recorder:
    """Records every frame ``client`` receives on ``/ws`` under ``root``; see the module doc.

    Its lifecycle (:class:`~alorws.lifecycle.Lifecycle`): ``new -> open -> closed``.

    Args:
        client: an :class:`~alorws.client.AlorClient` (started before :meth:`start`).
        root: the recording's directory (created; an existing recording is added to).
        batch_rows: write a partition's pending rows once there are this many.
        flush_seconds: write pending rows at least this often.
        max_queue: frames the recorder may hold for the writer; beyond it frames are dropped.
        roll_rows: rows per part file.
        poll: how often the shipper (or the writer thread) takes what is queued (seconds).
        compression: Parquet codec (``zstd``; ``snappy``, ``lz4``, ``none``).
        journal: keep the crash journal (see :mod:`alorws.record.format`).
        process: write in a separate process (default) rather than a thread of this one.
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
        process: bool = True,
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
        self.process = process
        self._writer: _ThreadWriter | _ProcessWriter | None = None
        self._remove_tap: Any = None
        self._state = Lifecycle.NEW
        self.recovered: list[Path] = []

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Recorder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the writer (it first finishes parts a crash left open: ``recovered``), then
        install the tap."""
        if self._state is not Lifecycle.NEW:
            raise InvalidState(f"cannot start a recorder that is {self._state.value}")
        self._state = Lifecycle.OPEN
        self.root.mkdir(parents=True, exist_ok=True)
        config = WriterConfig(
            str(self.root),
            batch_rows=self.batch_rows,
            flush_seconds=self.flush_seconds,
            roll_rows=self.roll_rows,
            compression=self.compression,
            journal=self.journal,
        )
        writer = _ProcessWriter(self, config) if self.process else _ThreadWriter(self, config)
        try:
            self.recovered = await asyncio.to_thread(writer.start)
            self._writer = writer
            await self.client.call_in_io(self._io_open)
        except BaseException:
            self._state = Lifecycle.CLOSED
            if self._writer is not None:
                await asyncio.to_thread(writer.stop)
            raise

    async def _io_open(self) -> None:
        writer = self._writer
        assert writer is not None
        if isinstance(writer, _ProcessWriter):
            writer.open()
        self._remove_tap = self.client.add_tap(writer.tap)  # in the I/O loop: takes effect now

    async def aclose(self) -> None:
        """Remove the tap, write everything queued and pending, close every file (and wait for
        the writer process to exit).

        Raises :class:`RecorderError` if the writer stopped before it had written everything
        (``stats()`` still tells what was written and dropped)."""
        if self._state is not Lifecycle.OPEN:
            self._state = Lifecycle.CLOSED
            return
        self._state = Lifecycle.CLOSED
        writer = self._writer
        assert writer is not None
        try:
            await self.client.call_in_io(self._io_close)
        except InvalidState:  # the client (its I/O loop) is closed already: finish from here
            if isinstance(writer, _ProcessWriter):
                await asyncio.to_thread(writer.finish_blocking)
        await asyncio.to_thread(writer.stop)
        if writer.error is not None:
            raise writer.error

    async def _io_close(self) -> None:
        if self._remove_tap is not None:
            self._remove_tap()  # in the I/O loop: the lanes hand over what they hold first
        writer = self._writer
        if isinstance(writer, _ProcessWriter):
            await writer.finish()

    @property
    def pid(self) -> int | None:
        """The writer process's id (``process=True``, once started), else None."""
        writer = self._writer
        return writer.proc.pid if isinstance(writer, _ProcessWriter) else None

    # -- observation --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``rows`` written, ``files`` (finished parts, ``open_files``), ``queued`` frames the
        writer has not taken yet (held here, or shipped to the writer process and not yet
        classified by it), ``pending`` rows it holds not yet on disk, ``lag`` (seconds the
        oldest frame not yet on disk has waited: queued, in the pipe or pending), ``dropped``
        frames (the queue was full, or the writer stopped), ``error`` (why the writer stopped,
        or None), ``process`` (the writer process's id, or None), ``writer_cpu`` (CPU seconds
        the writer process used since it started, or None: with ``process=False`` the writer's
        CPU is the client process's)."""
        writer = self._writer
        if writer is None:
            progress: _Progress = _NO_PROGRESS
            queued = dropped = 0
            oldest: list[int | None] = []
            error = cpu = None
        else:
            progress = writer.progress
            read = progress["taken"] if "taken" in progress else progress["frames"]
            queued = writer.queued + writer.taken - int(read)
            dropped = writer.dropped + writer.lost()
            oldest = [progress["oldest"], writer.oldest()]
            error = writer.error
            cpu = writer.cpu()
        first = min((t for t in oldest if t is not None), default=None)
        return {
            "rows": progress["rows"],
            "frames": progress["frames"],
            "files": progress["files"],
            "open_files": progress["open"],
            "queued": queued,
            "pending": progress["pending"],
            "lag": 0.0 if first is None else max(0.0, (time.time_ns() - first) / 1e9),
            "dropped": dropped,
            "error": None if error is None else repr(error),
            "process": self.pid,
            "writer_cpu": cpu,
        }

    def __repr__(self) -> str:
        mode = "process" if self.process else "thread"
        return f"<Recorder {self.root} {self._state.value} ({mode})>"


def _renice() -> None:
    # The writer yields the CPU to the reader and the consumer when they compete for it
    # (Linux: a thread's own nice value); the queue absorbs the lag, counted in stats().
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)


class _ThreadWriter:
    """``process=False``: :class:`Partitions` in a thread of the client's process."""

    def __init__(self, recorder: Recorder, config: WriterConfig) -> None:
        self.recorder = recorder
        self.config = config
        self.parts = Partitions(config, describe_with(recorder.client))
        self.progress: _Progress = dict(_NO_PROGRESS)
        self.taken = 0  # frames taken off the queue (the writer thread only)
        self.added = 0  # frames queued (the tap, in the I/O loop, only)
        self.dropped = 0
        self.error: BaseException | None = None
        self._chunks: deque[Chunk] = deque()
        self._limit = recorder.max_queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alorws-recorder", daemon=True)

    def start(self) -> list[Path]:
        recovered = recover(self.config.root, compression=self.config.compression)
        self._thread.start()
        return recovered

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def queued(self) -> int:
        """Frames queued and not yet taken by the writer thread."""
        return self.added - self.taken

    def tap(self, recv_ns: int, connection: int, frames: list[bytes]) -> None:
        """The tap (I/O loop): queue a socket read's frames, or count them dropped."""
        frames = _fit(self, frames, self._limit - (self.added - self.taken))
        if frames:
            self._chunks.append((recv_ns, connection, frames))
            self.added += len(frames)

    def cpu(self) -> float | None:
        return None  # the client's own process time includes it

    def lost(self) -> int:
        return 0  # a writer error is raised by aclose; what was queued stays counted there

    def oldest(self) -> int | None:
        with contextlib.suppress(IndexError):
            return self._chunks[0][0]
        return None

    def _run(self) -> None:
        _renice()
        parts = self.parts
        try:
            while not self._stop.wait(self.recorder.poll):
                due = parts.flush_due()
                self._drain(everything=due)
                if due:
                    parts.flush_all()
                self.progress = parts.progress()
            self._drain(everything=True)  # the tap is removed: this is the last of it
            parts.flush_all()
        except BaseException as exc:  # disk full, say: stop recording, report it in aclose
            log.exception("the recorder stopped")
            self.error = exc
        finally:
            parts.close()
            self.progress = parts.progress()

    def _drain(self, *, everything: bool) -> None:
        """Take batches of ``batch_rows`` off the queue (and the rest too if ``everything``).

        Each :meth:`Partitions.add` has a fixed cost (a few dozen kernel calls) that small
        takes would pay per frame: between flushes, frames wait until a batch is there."""
        chunks, size = self._chunks, self.config.batch_rows
        while self.queued >= size or (everything and chunks):
            group, n = _take(chunks, size)
            self.taken += n
            self.parts.add(*decode_batch(encode_batch(group).join()))
            self.progress = self.parts.progress()


def _fit(writer: _ThreadWriter | _ProcessWriter, frames: list[bytes], room: int) -> list[bytes]:
    """The frames that fit in the queue's ``room``; the rest are counted dropped."""
    if len(frames) <= room:
        return frames
    room = max(room, 0)
    writer.dropped += len(frames) - room
    return frames[:room]


def _take(chunks: deque[Chunk], size: int) -> tuple[list[Chunk], int]:
    """Chunks off the left of ``chunks`` until they hold ``size`` frames (or it is empty)."""
    group: list[Chunk] = []
    n = 0
    with contextlib.suppress(IndexError):
        while n < size:
            chunk = chunks.popleft()
            group.append(chunk)
            n += len(chunk[2])
    return group, n


class _Message:
    """A message for the writer process's stdin; ``views`` once framed (a partly written
    message keeps what is left of them)."""

    __slots__ = ("body", "frames", "kind", "views")

    def __init__(self, kind: int, body: bytes | Encoded, frames: int) -> None:
        self.kind = kind
        self.body = body
        self.frames = frames
        self.views: list[memoryview] | None = None


class _ProcessWriter:
    """``process=True``: the writer process, fed and heard by the client's I/O loop."""

    def __init__(self, recorder: Recorder, config: WriterConfig) -> None:
        self.recorder = recorder
        self.client = recorder.client
        self.config = config
        self.root = config.root
        self.progress: _Progress = dict(_NO_PROGRESS)
        self.taken = 0  # frames shipped (queued for the pipe)
        self.queued = 0  # frames the tap queued and the shipper has not taken yet
        self.dropped = 0  # by the tap: the queue was full
        self._unwritten = 0  # frames shipped that the pipe has not taken yet
        self.inflight: deque[tuple[int, int]] = deque()  # (shipped after it, its first recv_ns)
        self.error: RecorderError | None = None
        self.proc: subprocess.Popen[bytes]
        self._limit = recorder.max_queue
        self._chunks: deque[Chunk] = deque()
        self._discarded = 0  # taken off the queue after the writer stopped
        self._ready_cpu = 0.0
        self._out: deque[_Message] = deque()  # in order; the first may be partly written
        self._ring: mmap.mmap | None = None  # see "RING" in alorws.record._writer
        self._ring_fd = -1
        self._head = 0  # ring bytes written (the next batch goes at _head % size, or wraps)
        self._released = 0  # ring bytes the writer has copied out
        self._in = bytearray()  # the writer's stdout, up to its last full line
        self._stdin = -1
        self._stdout = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._writing = False  # add_writer is on
        self._last_write = time.monotonic()
        self._heard = asyncio.Event()  # the writer said something (I/O loop only)
        self._eof = False
        self._closing = False

    # -- start (a worker thread), open (the I/O loop) ------------------------------------------

    def start(self) -> list[Path]:
        import alorws

        package_root = str(Path(alorws.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        config, size = self.config, _RING_SIZE
        try:
            if size > 0:
                self._ring_fd = os.memfd_create("alorws-recorder")
                os.ftruncate(self._ring_fd, size)
                self._ring = mmap.mmap(self._ring_fd, size)
                prefault(self._ring, writable=True)
                config = msgspec.structs.replace(config, ring_fd=self._ring_fd, ring_size=size)
        except (AttributeError, OSError):  # not Linux: every batch goes through the pipe
            self._close_ring()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, msgspec.json.encode(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                pass_fds=(self._ring_fd,) if self._ring is not None else (),
            )
        except BaseException:
            self._close_ring()
            raise
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(AttributeError, OSError):
            import fcntl

            fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        first = self.proc.stdout.readline()  # before the fd goes to the I/O loop: unbuffered
        message = msgspec.json.decode(first) if first else {}
        if not message.get("ready"):
            self.proc.stdin.close()
            code = self.proc.wait()
            self.proc.stdout.close()
            self._close_ring()
            why = message.get("error", f"exit code {code}")
            raise RecorderError(f"the recorder's writer process did not start: {why}")
        self._ready_cpu = float(message["cpu"])
        self._stdin = self.proc.stdin.fileno()
        self._stdout = self.proc.stdout.fileno()
        return [Path(p) for p in message["recovered"]]

    def open(self) -> None:
        """Hand the pipes to the I/O loop (call it there): non-blocking, read when readable."""
        loop = self._loop = asyncio.get_running_loop()
        os.set_blocking(self._stdin, False)
        os.set_blocking(self._stdout, False)
        loop.add_reader(self._stdout, self._on_readable)
        self._timer = loop.call_later(self.recorder.poll, self._tick)

    # -- the tap and the shipper (the I/O loop) -------------------------------------------------

    def tap(self, recv_ns: int, connection: int, frames: list[bytes]) -> None:
        """The tap (I/O loop): queue a socket read's frames, or count them dropped."""
        if self.error is not None:
            self._discarded += len(frames)
        else:
            frames = _fit(self, frames, self._limit - self.queued - self._unwritten)
            if frames:
                self._chunks.append((recv_ns, connection, frames))
                self.queued += len(frames)

    def _tick(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(self.recorder.poll, self._tick)
        if self._ship() == 0 and time.monotonic() - self._last_write >= self.config.flush_seconds:
            self._send(BEAT)  # the writer flushes what it holds even when nothing comes

    def _ship(self) -> int:
        """Everything queued to the writer, in batches of about ``batch_rows`` frames."""
        chunks, size, shipped = self._chunks, self.config.batch_rows, 0
        while chunks:
            group, n = _take(chunks, size)
            self.queued -= n
            if self.error is not None:
                self._discarded += n
                continue
            self.taken += n
            self.inflight.append((self.taken, group[0][0]))
            try:
                batch = encode_batch(group)
            except ValueError as exc:
                self._fail(str(exc))
                continue
            self._send(BATCH, batch, n)  # to the ring, if it fits
            shipped += n
        return shipped

    def _send(self, kind: int, body: bytes | Encoded = b"", frames: int = 0) -> None:
        """Queue one message for the pipe and write what the pipe takes now."""
        if self.error is not None:
            return
        self._out.append(_Message(kind, body, frames))
        self._unwritten += frames
        self._last_write = time.monotonic()
        self._flush_out()

    def _place(self, batch: Encoded) -> bytes | None:
        """Copy a batch into the ring: its ``RING`` reference, or None while there is no room
        (the writer releases space as it copies batches out). The frames go from where they
        are straight into the ring's pages (``pwritev``): each is read and written once."""
        ring = self._ring
        assert ring is not None
        size, head, n = len(ring), self._head, batch.size
        at = head % size
        start = head if at + n <= size else head + size - at  # wrap: the tail stays unused
        if start + n - self._released > size:
            return None
        at = start % size
        for part in batch.head:
            view = memoryview(part).cast("B")
            ring[at : at + len(view)] = view
            at += len(view)
        frames = batch.frames
        for i in range(0, len(frames), _IOV_MAX):
            at += os.pwritev(self._ring_fd, frames[i : i + _IOV_MAX], at)
        if at != start % size + n:  # a shared memory file is never written short but on ENOSPC
            raise OSError(f"a short write into the recorder's ring ({at - start % size} of {n})")
        self._head = start + n
        return RING_REF.pack(start, n)

    def _flush_out(self) -> None:
        out = self._out
        while out:
            message = out[0]
            views = message.views
            if views is None:
                kind, body = message.kind, message.body
                if isinstance(body, Encoded):
                    # A batch of at most half the ring always fits once the writer caught up.
                    if self._ring is not None and body.size <= len(self._ring) // 2:
                        try:
                            ref = self._place(body)
                        except OSError as exc:
                            self._fail(f"the recorder's ring failed ({exc})")
                            return
                        if ref is None:  # the ring is full: on when the writer releases some
                            self._stop_writing()
                            return
                        kind, body = RING, ref
                    else:
                        body = body.join()
                head = HEADER.pack(MAGIC, kind, len(body))
                views = message.views = [memoryview(head), memoryview(body)]
            frames = message.frames
            try:
                written = os.writev(self._stdin, views)
            except BlockingIOError:
                written = 0
            except OSError as exc:  # EPIPE: the writer is gone
                self._fail(f"the writer process is gone ({exc})")
                return
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if views:  # the pipe is full: the rest when it drains
                views[0] = views[0][written:]
                if self._loop is None:  # blocking (finish_blocking): a short write, go on
                    continue
                if not self._writing:
                    self._loop.add_writer(self._stdin, self._flush_out)
                    self._writing = True
                return
            out.popleft()
            self._unwritten -= frames
        self._stop_writing()
        self._heard.set()  # finish() waits for the pipe to drain too

    def _stop_writing(self) -> None:
        if self._writing and self._loop is not None:
            self._loop.remove_writer(self._stdin)
        self._writing = False

    # -- the writer's stdout (the I/O loop) -----------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = os.read(self._stdout, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._on_eof()
            return
        buf = self._in
        buf += data
        end = buf.rfind(b"\n")
        if end < 0:
            return
        lines = bytes(buf[:end]).split(b"\n")
        del buf[: end + 1]
        asks: list[str] = []
        for line in lines:
            self._on_line(line, asks)
        if asks:
            self._answer(asks)
        self._heard.set()

    def _on_line(self, line: bytes, asks: list[str]) -> None:
        try:
            message = msgspec.json.decode(line)
        except msgspec.DecodeError:
            return
        if "need" in message:
            asks.extend(message["need"])
        elif "error" in message:
            self._fail(f"the writer process failed: {message['error']}")
        else:
            self.progress = message
            frames = message["frames"]
            inflight = self.inflight
            with contextlib.suppress(IndexError):
                while inflight[0][0] <= frames:
                    inflight.popleft()
            released = message.get("released", 0)
            if released > self._released:
                self._released = released
                if self._out and not self._writing:  # a batch waits for ring space
                    self._flush_out()

    def _answer(self, guids: list[str]) -> None:
        """Tell the writer what the guids are (one describe each; a long list over a few
        turns of the loop, the reader runs in between)."""
        describe = describe_with(self.client)
        if self._loop is None:  # finish_blocking: nobody else waits for this thread
            now, later = guids, []
        else:
            now, later = guids[:_ANSWERS_PER_READ], guids[_ANSWERS_PER_READ:]
        self._send(SUBS, _SUBS({guid: describe(guid) for guid in now}))
        if later and self._loop is not None:
            self._loop.call_soon(self._answer, later)

    def _on_eof(self) -> None:
        """The writer closed its stdout: it exited (after the pipe closed), or died."""
        self._eof = True
        if self._loop is not None:
            self._loop.remove_reader(self._stdout)
        if not self._closing or self.progress["frames"] < self.taken:
            self._fail("the writer process exited early")
        self._heard.set()

    def _fail(self, why: str) -> None:
        if self.error is not None:
            return
        self.error = RecorderError(f"recording stopped: {why}")
        log.error("recording to %s stopped: %s; frames are dropped from now on", self.root, why)
        self._out.clear()  # shipped, not written: counted by lost()
        self._unwritten = 0
        self._stop_writing()

    # -- closing --------------------------------------------------------------------------------

    async def finish(self) -> None:
        """In the I/O loop, after the tap is removed: ship the rest, let the writer classify
        everything (answering its last questions), drain the pipe, close it."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        self._ship()
        self._send(SYNC)
        deadline = time.monotonic() + _CLOSE_TIMEOUT
        while self.error is None and (self.progress["frames"] < self.taken or self._out):
            self._heard.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"the writer process did not keep up for {_CLOSE_TIMEOUT:g} s")
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heard.wait(), min(left, 1.0))
        self._close_stdin()
        # Its last progress (rows written, parts finished), then EOF: it exits.
        while not self._eof and time.monotonic() < deadline:
            self._heard.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heard.wait(), 1.0)

    def finish_blocking(self) -> None:
        """:meth:`finish` without the I/O loop (it is closed): blocking pipes, this thread."""
        self._closing = True
        self._loop = None
        if self.error is None:
            os.set_blocking(self._stdin, True)
            self._ship()
            self._send(SYNC)
            os.set_blocking(self._stdout, True)
            while (
                self.error is None
                and not self._eof
                and (self.progress["frames"] < self.taken or self._out)
            ):
                self._on_readable()
        self._close_stdin()
        with contextlib.suppress(OSError):
            os.set_blocking(self._stdout, True)
            while not self._eof:
                self._on_readable()

    def _close_stdin(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # EOF: the writer writes everything, finishes, exits

    def stop(self) -> None:
        """A worker thread, after :meth:`finish`: wait for the writer process to exit."""
        self._closing = True
        self._close_stdin()  # if finish() could not run
        try:
            code = self.proc.wait(_CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            self._fail(f"the writer process did not finish in {_CLOSE_TIMEOUT:g} s; killed")
        self._release_stdout()
        self._close_ring()
        if code != 0:
            self._fail(f"the writer process exited with code {code}")

    def _close_ring(self) -> None:
        if self._ring_fd >= 0:
            os.close(self._ring_fd)
            self._ring_fd = -1
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def _release_stdout(self) -> None:
        """Close the writer's stdout, once the I/O loop no longer watches it."""
        loop = self._loop
        if not self._eof and loop is not None and not loop.is_closed():
            removed = threading.Event()

            def remove() -> None:
                loop.remove_reader(self._stdout)
                removed.set()

            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(remove)
                removed.wait(5.0)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    # -- stats (any thread) ---------------------------------------------------------------------

    def cpu(self) -> float | None:
        """CPU seconds the writer process used since it was ready."""
        cpu = self.progress.get("cpu")
        return None if cpu is None else max(0.0, cpu - self._ready_cpu)

    def lost(self) -> int:
        """Frames that will not be written: shipped but not written, and discarded since."""
        if self.error is None:
            return 0
        return self.taken - int(self.progress["rows"]) + self._discarded

    def oldest(self) -> int | None:
        """``recv_ns`` of the oldest frame not yet taken by the writer process, or None."""
        with contextlib.suppress(IndexError):
            return self.inflight[0][1]
        with contextlib.suppress(IndexError):
            return self._chunks[0][0]
        return None
