"""Record every frame a client receives to Parquet, off the reader's path and its process.

::

    async with AlorClient(token) as client, Recorder(client, "data/") as rec:
        async with client.quotes("SBER") as quotes:
            ...
        print(rec.stats())

The parties:

* the **tap** (:meth:`AlorClient.add_tap`) runs in the reader, in the client's I/O thread: it
  appends ``(recv_ns, connection, frame)`` to a bounded deque and returns. When the deque holds
  ``max_queue`` frames the frame is not recorded and counted in ``dropped``: the reader never
  waits for the disk;
* the **shipper thread** (``alorws-recorder``, the default ``process=True``) wakes every ``poll``
  seconds, takes everything off the deque and writes it to the **writer process**'s stdin as one
  Arrow record batch: one C conversion of the queued tuples (~0.3 µs a frame on a 2-vCPU VM, the
  only per-frame work left in the client's process with the GIL held) and the pipe writes (which
  release the GIL; a 1 MB pipe where Linux allows it). It also answers the writer's questions
  about guids, one :meth:`AlorClient.describe` per new guid;
* the **writer process** (:func:`alorws.record._writer.main` in ``sys.executable``, at nice 10, see
  :mod:`alorws.record._writer`) does what the writer thread did in the client's process: the
  bulk classification of frames (kind and guid), partitions by (UTC date, opcode), batches of
  ``batch_rows`` rows or ``flush_seconds``, rolling part files (``roll_rows``), the crash
  journal, and :func:`~alorws.record.format.recover` of parts a crash left, before it starts.
  Its CPU is not the client's: on a machine with a core to spare recording costs the client
  little more than the tap and the shipper;
* the **consumer loop** only calls :meth:`Recorder.start`, :meth:`Recorder.stats` and
  :meth:`Recorder.aclose`.

Why the writer asks about guids instead of the parent classifying frames: classifying costs
~0.3 µs a frame in Arrow kernels, describing a guid is needed once per subscription. The child
classifies, asks about the guids it has not been told of (a JSON line on its stdout), and holds
the batch (and those behind it, to keep receive order) until the shipper's answer arrives with
its next write, one ``poll`` later at most. Nothing else of the client is read by the writer.

``Recorder(process=False)`` keeps all of that in a thread of the client's process (the writer
thread, at nice 10; for environments where starting a process is not wanted): the same code
(:class:`~alorws.record._writer.Partitions`), sharing the GIL with the reader and the consumer.

Crash safety:

* each flush also goes to the part's journal (:mod:`alorws.record.format`); a recorder starting
  on a directory finishes the parts a crashed one left (``recovered``);
* **the client's process dies** (even SIGKILL): the writer process reads EOF on its stdin,
  writes every row it holds and finishes every part as :meth:`aclose` would. Lost: the frames
  still in the client's deque (at most one ``poll`` of them when the writer keeps up) and a
  batch torn in the pipe;
* **the writer process dies** (or stops on an error such as a full disk): the shipper notices
  (a broken pipe, EOF on the writer's stdout), logs one error, and from then on drops what the
  tap queues; ``stats()["error"]`` says why, ``dropped`` counts every frame not written (the
  ones shipped but not yet written, and everything after). The reader is never disturbed.
  :meth:`aclose` then raises :class:`~alorws.errors.RecorderError`. The parts the writer had
  open are finished from their journals by the next recorder on that directory;
* with ``process=False`` a crash of the process loses the frames not yet flushed: those in the
  deque plus the pending batch (``flush_seconds`` of data or ``batch_rows`` rows, whichever
  comes first).

In both modes a crash loses at most the current batch; :meth:`aclose` flushes and closes
everything (it waits until the writer process has written every frame shipped to it, then
closes its stdin and waits for it to exit, so no process is left behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
import pyarrow as pa
import pyarrow.ipc as ipc

from ..errors import AlorError, InvalidState
from ._writer import ITEM, NICE, WIRE, Partitions, Sub, WriterConfig, describe_with
from .format import recover


if TYPE_CHECKING:
    from ..client.client import AlorClient

__all__ = ["Recorder", "RecorderError"]

log = logging.getLogger("alorws.record")

#: The writer process's program (``-c``: ``-m alorws.record._writer`` would import the module
#: twice, once as ``__main__``).
_CHILD: Final = "import sys; from alorws.record._writer import main; sys.exit(main())"
_PIPE_SIZE: Final = 1 << 20  # F_SETPIPE_SZ: fewer, larger pipe writes (Linux caps it)
_CLOSE_TIMEOUT: Final = 300.0  # seconds the writer process may take to finish at aclose
_EMPTY: Final = pa.RecordBatch.from_pylist([], schema=WIRE)
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


class RecorderError(AlorError):
    """The recorder's writer (thread or process) stopped: frames were not written."""


class Recorder:
    """Records every frame ``client`` receives on ``/ws`` under ``root``; see the module doc.

    Args:
        client: an :class:`~alorws.client.AlorClient` (started before :meth:`start`).
        root: the recording's directory (created; an existing recording is added to).
        batch_rows: write a partition's pending rows once there are this many.
        flush_seconds: write pending rows at least this often.
        max_queue: frames the tap may hold for the writer; beyond it frames are dropped.
        roll_rows: rows per part file.
        poll: how often the shipper (or the writer thread) drains the queue (seconds).
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
        self._queue: deque[tuple[int, int, bytes]] = deque()
        self._dropped = 0  # by the tap (reader thread only)
        self._remove_tap: Any = None
        self._writer: _ThreadWriter | _ProcessWriter | None = None
        self._state = "new"
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
        if self._state != "new":
            raise InvalidState(f"cannot start a recorder that is {self._state}")
        self._state = "open"
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
        except BaseException:
            self._state = "closed"
            raise
        self._writer = writer
        self._remove_tap = self.client.add_tap(self._make_tap())

    async def aclose(self) -> None:
        """Remove the tap, write everything queued and pending, close every file (and wait for
        the writer process to exit).

        Raises :class:`RecorderError` if the writer stopped before it had written everything
        (``stats()`` still tells what was written and dropped)."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        if self._remove_tap is not None:
            self._remove_tap()
        assert self._writer is not None
        await asyncio.to_thread(self._writer.stop)
        if self._writer.error is not None:
            raise self._writer.error

    @property
    def pid(self) -> int | None:
        """The writer process's id (``process=True``, once started), else None."""
        writer = self._writer
        return writer.proc.pid if isinstance(writer, _ProcessWriter) else None

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

    # -- observation --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``rows`` written, ``files`` (finished parts, ``open_files``), ``queued`` frames the
        writer has not taken yet (in the tap's deque, or shipped to the writer process and not
        yet classified by it), ``pending`` rows it holds not yet on disk, ``lag`` (seconds the
        oldest frame not yet on disk has waited: queued, in the pipe or pending), ``dropped``
        frames (the queue was full, or the writer stopped), ``error`` (why the writer stopped,
        or None), ``process`` (the writer process's id, or None), ``writer_cpu`` (CPU seconds
        the writer process used since it started, or None: with ``process=False`` the writer's
        CPU is the client process's)."""
        writer = self._writer
        progress: dict[str, Any] = writer.progress if writer is not None else _NO_PROGRESS
        shipped = writer.taken if writer is not None else 0
        oldest = [progress["oldest"]]
        with contextlib.suppress(IndexError):
            oldest.append(self._queue[0][0])
        if isinstance(writer, _ProcessWriter):
            with contextlib.suppress(IndexError):
                oldest.append(writer.inflight[0][1])
        first = min((t for t in oldest if t is not None), default=None)
        error = writer.error if writer is not None else None
        return {
            "rows": progress["rows"],
            "frames": progress["frames"],
            "files": progress["files"],
            "open_files": progress["open"],
            "queued": len(self._queue) + shipped - int(progress.get("taken", progress["frames"])),
            "pending": progress["pending"],
            "lag": 0.0 if first is None else max(0.0, (time.time_ns() - first) / 1e9),
            "dropped": self._dropped + (writer.lost() if writer is not None else 0),
            "error": None if error is None else repr(error),
            "process": self.pid,
            "writer_cpu": writer.cpu() if writer is not None else None,
        }

    def __repr__(self) -> str:
        mode = "process" if self.process else "thread"
        return f"<Recorder {self.root} {self._state} ({mode})>"


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
        self.taken = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alorws-recorder", daemon=True)

    def start(self) -> list[Path]:
        recovered = recover(self.config.root, compression=self.config.compression)
        self._thread.start()
        return recovered

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu(self) -> float | None:
        return None  # the client's own process time includes it

    def lost(self) -> int:
        return 0  # a writer error is raised by aclose; what was queued stays counted there

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
        """Take whole batches off the queue (and the rest too if ``everything``).

        Each :meth:`Partitions.add` has a fixed cost (a few dozen kernel calls) that small
        takes would pay per frame: between flushes, frames wait in the queue until a batch is
        there."""
        queue, size = self.recorder._queue, self.config.batch_rows
        take = iter(queue.popleft, None)  # items are tuples, never None: popleft in a C loop
        while len(queue) >= size or (everything and queue):
            items = list(islice(take, min(len(queue), size)))
            self.taken += len(items)
            columns = pa.array(items, ITEM)  # one C loop over the tuples, three arrays
            self.parts.add(columns.field(0), columns.field(1), columns.field(2))
            self.progress = self.parts.progress()


class _PipeSink:
    """The writer process's stdin as Arrow's output stream: whole writes, GIL released."""

    closed = False

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: Any) -> int:
        view = memoryview(data)
        size = len(view)
        while view:
            view = view[os.write(self.fd, view) :]
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class _ProcessWriter:
    """``process=True``: the shipper thread, the writer process and its stdout reader."""

    def __init__(self, recorder: Recorder, config: WriterConfig) -> None:
        self.recorder = recorder
        self.config = config
        self.root = config.root
        self.progress: _Progress = dict(_NO_PROGRESS)
        self.taken = 0  # frames shipped
        self.inflight: deque[tuple[int, int]] = deque()  # (shipped after it, its first recv_ns)
        self.error: RecorderError | None = None
        self.proc: subprocess.Popen[bytes]
        self._discarded = 0  # taken off the queue after the writer stopped (shipper only)
        self._ready_cpu = 0.0
        self._asks: deque[str] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._done = False  # the writer sent its last progress
        self._fail_lock = threading.Lock()
        self._sink: _PipeSink | None = None
        self._stream: Any = None  # ipc.RecordBatchStreamWriter
        # Daemons: a recorder never closed does not hold the interpreter at exit (the writer
        # process then reads EOF and finishes the recording on its own).
        self._shipper = threading.Thread(
            target=self._ship_loop, name="alorws-recorder", daemon=True
        )
        self._reader = threading.Thread(
            target=self._read_loop, name="alorws-recorder-reader", daemon=True
        )

    # -- lifecycle (called in worker threads by Recorder.start / aclose) ------------------------

    def start(self) -> list[Path]:
        import alorws

        package_root = str(Path(alorws.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, msgspec.json.encode(self.config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(AttributeError, OSError):
            import fcntl

            fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        first = self.proc.stdout.readline()
        message = msgspec.json.decode(first) if first else {}
        if not message.get("ready"):
            self.proc.stdin.close()
            code = self.proc.wait()
            self.proc.stdout.close()
            why = message.get("error", f"exit code {code}")
            raise RecorderError(f"the recorder's writer process did not start: {why}")
        self._ready_cpu = float(message["cpu"])
        self._sink = _PipeSink(self.proc.stdin.fileno())
        self._stream = ipc.new_stream(pa.PythonFile(self._sink, mode="w"), WIRE)
        self._reader.start()
        self._shipper.start()
        return [Path(p) for p in message["recovered"]]

    def stop(self) -> None:
        self._closing = True
        self._wake.set()
        self._shipper.join()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            code = self.proc.wait(_CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            self._fail(f"the writer process did not finish in {_CLOSE_TIMEOUT:g} s; killed")
        self._reader.join()
        self.proc.stdout.close()
        if code != 0 and self.error is None:
            self._fail(f"the writer process exited with code {code}")

    def cpu(self) -> float | None:
        """CPU seconds the writer process used since it was ready."""
        cpu = self.progress.get("cpu")
        return None if cpu is None else max(0.0, cpu - self._ready_cpu)

    def lost(self) -> int:
        """Frames that will not be written: shipped but not written, and discarded since."""
        if self.error is None:
            return 0
        return self.taken - int(self.progress["rows"]) + self._discarded

    def _fail(self, why: str) -> None:
        with self._fail_lock:
            if self.error is not None:
                return
            self.error = RecorderError(f"recording stopped: {why}")
        log.error("recording to %s stopped: %s; frames are dropped from now on", self.root, why)
        self._wake.set()

    # -- the shipper thread ----------------------------------------------------------------------

    def _ship_loop(self) -> None:
        assert self.proc.stdin is not None
        try:
            last_write = time.monotonic()
            while not self._closing:
                self._wake.wait(self.recorder.poll)
                self._wake.clear()
                if self._closing:
                    break
                if self._answer() + self._ship():
                    last_write = time.monotonic()
                elif time.monotonic() - last_write >= self.config.flush_seconds:
                    self._write(_EMPTY)  # a heartbeat: the writer flushes what it holds
                    last_write = time.monotonic()
            self._ship()  # the tap is removed: this is the last of it
            # The writer may still ask about guids of the last batches: make it classify what
            # it holds now (sync), answer until every frame shipped is in its partitions, then
            # close the pipe (EOF: it writes everything, finishes every part and exits).
            self._write(_EMPTY, {"sync": b"1"})
            while self.error is None and self.progress["frames"] < self.taken:
                self._wake.wait(1.0)
                self._wake.clear()
                self._answer()
        finally:
            if self._stream is not None:
                with contextlib.suppress(Exception):
                    self._stream.close()
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def _write(self, batch: pa.RecordBatch, metadata: dict[str, bytes] | None = None) -> bool:
        if self.error is not None:
            return False
        try:
            self._stream.write_batch(batch, custom_metadata=metadata)
        except (OSError, pa.ArrowException) as exc:
            self._fail(f"the writer process is gone ({exc})")
            return False
        return True

    def _answer(self) -> int:
        """Answer the writer's questions about guids; returns how many."""
        answers: dict[str, Sub | None] = {}
        describe = describe_with(self.recorder.client)
        with contextlib.suppress(IndexError):
            while True:
                guid = self._asks.popleft()
                answers[guid] = describe(guid)
        if answers:
            self._write(_EMPTY, {"subs": _SUBS(answers)})
        return len(answers)

    def _ship(self) -> int:
        """Everything queued to the writer, in batches of at most ``batch_rows``."""
        queue, size = self.recorder._queue, self.config.batch_rows
        take = iter(queue.popleft, None)  # items are tuples, never None: popleft in a C loop
        shipped, left = 0, len(queue)  # what is there now; the rest at the next poll
        while left > 0:
            items = list(islice(take, min(left, size)))
            left -= len(items)
            if self.error is not None:
                self._discarded += len(items)
                continue
            batch = pa.RecordBatch.from_struct_array(pa.array(items, ITEM))  # one C loop
            self.taken += len(items)
            self.inflight.append((self.taken, items[0][0]))
            self._write(batch)
            shipped += len(items)
        return shipped

    # -- the writer's stdout --------------------------------------------------------------------

    def _read_loop(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = msgspec.json.decode(line)
            except msgspec.DecodeError:
                continue
            if "need" in message:
                self._asks.extend(message["need"])
                self._wake.set()
            elif "error" in message:
                self._fail(f"the writer process failed: {message['error']}")
            else:
                self.progress = message
                frames = message["frames"]
                with contextlib.suppress(IndexError):
                    while self.inflight[0][0] <= frames:
                        self.inflight.popleft()
                if self._closing:
                    self._wake.set()
        # EOF: the writer exited (after the pipe closed), or died.
        if not self._closing or self.progress["frames"] < self.taken:
            code = self.proc.wait()
            self._fail(f"the writer process exited (code {code})")
