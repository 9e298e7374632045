"""The recording format: every received ``/ws`` frame as one row of a Parquet file.

Layout (hive-style, so DuckDB and polars read it as it is)::

    <root>/date=YYYY-MM-DD/stream=<opcode>/part-00000.parquet
                                          /part-00001.parquet   # a new part every roll_rows

``date`` is the UTC date of ``recv_ns``; ``stream`` is the subscription opcode the frame belongs
to (``QuotesSubscribe``, ``OrdersGetAndSubscribeV2``, …), or ``_unknown`` for frames no
subscription explains (ping replies, junk, data that arrived after its unsubscribe).

Columns (:data:`SCHEMA`):

==============  ============================  ===================================================
``recv_ns``     int64                         receive time, UTC nanoseconds since the epoch
                                              (``time.time_ns()`` in the reader as it takes
                                              the first frame of a socket read: the frames
                                              of one read share it)
``connection``  int32                         the client's connection (lane) id
``guid``        string                        the subscription guid (``guid`` of a data
                                              message, ``requestGuid`` of a status reply); null
                                              for junk
``kind``        string                        ``"data"``, ``"status"`` or ``"junk"`` (unparsable)
``opcode``      dictionary<int32, string>     the subscription opcode; null if unknown
``params``      dictionary<int32, string>     the request's params as JSON, wire names
                                              (``{"exchange":"MOEX","format":"Simple",
                                              "code":"SBER",…}``, no guid, no token); null if
                                              unknown
``frame``       binary                        the frame exactly as received
==============  ============================  ===================================================

Rows of one file are in receive order. To read everything back in order::

    SELECT stream, count(*) FROM read_parquet('data/**/*.parquet', hive_partitioning = 1)
    GROUP BY stream;
    -- polars: pl.scan_parquet("data/**/*.parquet", hive_partitioning=True).sort("recv_ns")

Durability: a part being written is ``.part-NNNNN.parquet.tmp`` (invisible to the glob above: a
Parquet file is unreadable until its footer is written), and each flushed batch is also
appended to a journal ``.part-NNNNN.journal.arrows`` (Arrow IPC stream, lz4) next to it. When
the part rolls or the recorder closes, the footer is written, the file is renamed to
``part-NNNNN.parquet`` and the journal deleted. After a crash, :func:`recover` (run by
``Recorder.start``) rebuilds each unfinished part from its journal, so only the batch that was
not yet flushed is lost. Nothing is fsync-ed: a power loss can lose what the OS had not written.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq


__all__ = [
    "SCHEMA",
    "UNKNOWN_STREAM",
    "PartWriter",
    "list_parts",
    "partition_dir",
    "recover",
]

log = logging.getLogger("alorws.record")

#: The Arrow schema of every recording file (see the module docstring).
SCHEMA: Final = pa.schema(
    [
        pa.field("recv_ns", pa.int64(), nullable=False),
        pa.field("connection", pa.int32(), nullable=False),
        pa.field("guid", pa.string()),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("opcode", pa.dictionary(pa.int32(), pa.string())),
        pa.field("params", pa.dictionary(pa.int32(), pa.string())),
        pa.field("frame", pa.binary(), nullable=False),
    ],
    metadata={b"alorws.record": b"1"},
)

#: The ``stream=`` partition of frames no subscription explains.
UNKNOWN_STREAM: Final = "_unknown"

_PART = re.compile(r"^\.?part-(\d+)\.(?:parquet|parquet\.tmp|journal\.arrows)$")
_IPC_OPTIONS: Final = ipc.IpcWriteOptions(compression="lz4")
# The frame column is neither dictionary-encoded (frames rarely repeat: hashing each one is
# wasted) nor given min/max statistics (nobody filters on raw bytes); the small columns are.
_SMALL: Final = ["recv_ns", "connection", "guid", "kind", "opcode", "params"]
_PARQUET: Final[dict[str, Any]] = {"use_dictionary": _SMALL[1:], "write_statistics": _SMALL}
#: Nanoseconds in a (UTC) day.
NS_PER_DAY: Final = 86_400_000_000_000


def day_of(recv_ns: int) -> str:
    """The UTC date (``YYYY-MM-DD``) of a ``recv_ns`` timestamp."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=recv_ns // NS_PER_DAY)).isoformat()


def partition_dir(root: str | os.PathLike[str], day: str, stream: str) -> Path:
    """``<root>/date=<day>/stream=<stream>``."""
    return Path(root) / f"date={day}" / f"stream={stream}"


def list_parts(root: str | os.PathLike[str]) -> list[Path]:
    """Every finished part file under ``root``, by partition then part number."""
    return sorted(
        Path(root).glob("date=*/stream=*/part-*.parquet"),
        key=lambda p: (p.parent.parent.name, p.parent.name, _part_number(p)),
    )


def _part_number(path: Path) -> int:
    m = _PART.match(path.name)
    return int(m.group(1)) if m else -1


def _next_part(directory: Path) -> int:
    """One more than the highest part number in ``directory`` (finished or not)."""
    numbers = [_part_number(p) for p in directory.iterdir()] if directory.exists() else []
    return max(numbers, default=-1) + 1


class PartWriter:
    """Appends batches to one partition, rolling to a new part file every ``roll_rows`` rows.

    Not thread-safe: the recorder's writer (thread or process) owns it.
    """

    def __init__(
        self, directory: Path, *, roll_rows: int, compression: str = "zstd", journal: bool = True
    ) -> None:
        self.directory = directory
        self.roll_rows = roll_rows
        self.compression = compression
        self.journal = journal
        self.rows = 0  # in the current part
        self.files_done = 0
        self._number = -1
        self._writer: Any = None  # pq.ParquetWriter
        self._journal: Any = None  # ipc.RecordBatchStreamWriter
        self._journal_sink: Any = None

    @property
    def is_open(self) -> bool:
        """Whether a part file is being written (opened, not yet finished)."""
        return self._writer is not None

    def _paths(self) -> tuple[Path, Path, Path]:
        name = f"part-{self._number:05d}"
        d = self.directory
        return d / f"{name}.parquet", d / f".{name}.parquet.tmp", d / f".{name}.journal.arrows"

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._number = _next_part(self.directory)
        _, tmp, journal = self._paths()
        self._writer = pq.ParquetWriter(tmp, SCHEMA, compression=self.compression, **_PARQUET)
        if self.journal:
            self._journal_sink = pa.OSFile(str(journal), "wb")
            self._journal = ipc.new_stream(self._journal_sink, SCHEMA, options=_IPC_OPTIONS)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (rows of this partition, in order), rolling as needed."""
        offset = 0
        while offset < table.num_rows:
            if self._writer is None:
                self._open()
            take = min(table.num_rows - offset, self.roll_rows - self.rows)
            chunk = table.slice(offset, take)
            self._writer.write_table(chunk)
            if self._journal is not None:
                self._journal.write_table(chunk)
                self._journal_sink.flush()
            self.rows += take
            offset += take
            if self.rows >= self.roll_rows:
                self.close()

    def close(self) -> None:
        """Finish the current part (footer, rename, journal removed); idempotent."""
        if self._writer is None:
            return
        final, tmp, journal = self._paths()
        self._writer.close()
        self._writer = None
        if self._journal is not None:
            self._journal.close()
            self._journal_sink.close()
            self._journal = self._journal_sink = None
        os.replace(tmp, final)
        journal.unlink(missing_ok=True)
        self.files_done += 1


def recover(root: str | os.PathLike[str], *, compression: str = "zstd") -> list[Path]:
    """Finish the parts a crashed recorder left open: rebuild each from its journal.

    Returns the part files written. Batches fully in the journal are kept; a torn last batch
    is dropped. Safe to run on a finished recording (it does nothing).
    """
    done: list[Path] = []
    for journal in sorted(Path(root).glob("date=*/stream=*/.part-*.journal.arrows")):
        number = _part_number(journal)
        final = journal.parent / f"part-{number:05d}.parquet"
        tmp = journal.parent / f".part-{number:05d}.parquet.tmp"
        batches = []
        try:
            with ipc.open_stream(pa.memory_map(str(journal))) as reader:
                while True:
                    try:
                        batches.append(reader.read_next_batch())
                    except StopIteration:
                        break
        except (pa.ArrowInvalid, OSError) as exc:  # torn tail (or an empty journal)
            log.warning("recording journal %s ends early: %s", journal, exc)
        if batches:
            table = pa.Table.from_batches(batches, SCHEMA)
            pq.write_table(table, tmp, compression=compression, **_PARQUET)
            os.replace(tmp, final)
            done.append(final)
        else:
            tmp.unlink(missing_ok=True)
        journal.unlink()
    for orphan in Path(root).glob("date=*/stream=*/.part-*.parquet.tmp"):
        orphan.unlink()  # no journal (journal=False): its rows are lost, as documented
    return done
