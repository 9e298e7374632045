"""An incremental candle cache: closed candles kept in Parquet, only the missing ranges fetched.

::

    store = BarStore("~/.cache/alorws")
    async with HttpClient(url, tokens) as http:
        bars = await store.history(http, "SBER", 60, start, end)   # or:
        bars = await http.history("SBER", 60, start, end, cache="~/.cache/alorws")

Layout: one file per server, instrument and timeframe,
``<path>/<server>/<EXCHANGE>/<SYMBOL>[@<BOARD>]/<tf>[.nosplit][.untraded].parquet`` (``server``
is the HTTP host, with ``_<port>`` for a port of its own: ``api.alor.ru``,
``127.0.0.1_8765``; a simulator's candles never mix with ALOR's), columns ``time``
(int64, Unix seconds, the candle's open), ``open``, ``high``, ``low``, ``close`` (float64) and
``volume`` (int64), sorted by ``time``. The schema metadata ``alorws.coverage`` lists the ranges
of open times (inclusive Unix seconds, JSON ``[[lo, hi], ...]``) whose candles the file holds in
full: a range the server had no candles for (a weekend) is covered too, so it is not asked for
again.

What is kept: only **closed** candles. A candle opening at ``t`` is closed once
``t + span + settle <= now``, where ``span`` is the longest the timeframe's candle lasts
(``tf`` seconds; a day, a week, 31 and 366 days for ``D``/``W``/``M``/``Y``) and ``settle``
(default 60 s; 20 minutes without a token, since ALOR serves anonymous data 15 minutes late,
docs/protocol.md §7.2) allows for late trades and clock skew. The forming candle and everything
after the cut are fetched on every call and returned, never stored: the last candle changes
until it closes.

Requests: each missing range is fetched with ``HttpClient.iter_history``, which follows the
server's ``next``/``prev`` paging whatever the page size, one request at a time, through the
client's pacing (``max_rps``) and 429 handling (docs/protocol.md §7.2). A second call for a
range already covered sends no request at all.

Writers: the file is replaced atomically (a temporary file in the same directory, then
``os.replace``), so a reader sees the old or the new file, never a torn one. Writers of one file
take an exclusive lock on ``<file>.lock`` (``fcntl.flock``; where unavailable, the last writer
wins, which loses only coverage, fetched again later) and merge with what is on disk under it,
so concurrent processes sharing one cache directory add to each other's work.

Needs ``pyarrow`` (``pip install 'alorws[record]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import msgspec

from .._deps import require
from ..errors import ConfigurationError
from ..frames import Bars
from ..protocol.enums import Exchange, Format
from ..protocol.market import Bar
from ..protocol.requests import _text, _tf
from ._args import candle_span, exchange_code, segment


class HistorySource(Protocol):
    """What the cache needs of an HTTP client (:class:`~alorws.client.http.HttpClient`): the
    checked parameters of a history request and the candles of a range, paged."""

    def _history_params(
        self,
        symbol: str,
        tf: int | str,
        from_: int | datetime,
        to: int | datetime,
        exchange: Exchange | str,
        board: str | None,
        count_back: int | None,
        split_adjust: bool | None,
        untraded: bool | None,
    ) -> tuple[dict[str, str], int, int]: ...

    def iter_history(
        self,
        symbol: str,
        tf: int | str,
        from_: int | datetime,
        to: int | datetime,
        *,
        exchange: Exchange | str = ...,
        board: str | None = ...,
        count_back: int | None = ...,
        split_adjust: bool | None = ...,
        untraded: bool | None = ...,
        format: Format | str | None = ...,
    ) -> AsyncIterator[Bar]: ...


__all__ = ["BarStore", "Coverage", "HistorySource", "server_dir"]

#: Inclusive ``(lo, hi)`` ranges of candle open times, Unix seconds, sorted and disjoint.
Coverage = list[tuple[int, int]]

_META: Final = b"alorws.coverage"
_FORMAT: Final = b"alorws.barstore"
#: Seconds a candle must have been closed before it is kept, with and without a token.
DEFAULT_SETTLE: Final = 60.0
ANONYMOUS_SETTLE: Final = 20 * 60.0


def _arrow() -> Any:
    return require("pyarrow", "the candle cache (BarStore)")


def _merge(ranges: Coverage) -> Coverage:
    """Sorted, disjoint ranges; touching ones (``hi + 1 == lo``) are joined."""
    out: Coverage = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _missing(covered: Coverage, lo: int, hi: int) -> Coverage:
    """The parts of ``[lo, hi]`` outside ``covered``."""
    out: Coverage = []
    cursor = lo
    for a, b in covered:
        if b < cursor:
            continue
        if a > hi:
            break
        if a > cursor:
            out.append((cursor, a - 1))
        cursor = max(cursor, b + 1)
        if cursor > hi:
            break
    if cursor <= hi:
        out.append((cursor, hi))
    return out


class _Key(msgspec.Struct, frozen=True):
    exchange: str
    symbol: str
    board: str | None
    tf: str
    split_adjust: bool | None
    untraded: bool | None

    def relpath(self) -> Path:
        folder = self.symbol if self.board is None else f"{self.symbol}@{self.board}"
        name = self.tf
        if self.split_adjust is False:
            name += ".nosplit"
        if self.untraded:
            name += ".untraded"
        return Path(self.exchange) / folder / f"{name}.parquet"


class BarStore:
    """Closed candles of many instruments and timeframes in Parquet under ``path``, fetched
    incrementally (see :mod:`alorws.client.barstore` for the layout and the rules).

    Args:
        path: the cache directory (``~`` expanded; created on first write).
        settle: seconds a candle must have been closed before it is kept; default 60, or 20
            minutes when the client has no token (ALOR serves anonymous data 15 minutes late).
        clock: Unix seconds now (tests pass a fixed clock).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "~/.cache/alorws",
        *,
        settle: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settle is not None and not settle >= 0:
            raise ConfigurationError(f"settle must be >= 0 seconds, got {settle!r}")
        if not isinstance(path, str | os.PathLike) or not str(os.fspath(path)).strip():
            raise ConfigurationError(
                f"the candle cache must be a directory path such as '~/.cache/alorws', got {path!r}"
            )
        _arrow()  # fail here, naming the extra, rather than after the first download
        self.path = Path(path).expanduser()
        self.settle = settle
        self._clock = clock

    def __repr__(self) -> str:
        return f"BarStore({str(self.path)!r})"

    # -- the public calls -----------------------------------------------------------------------

    async def history(
        self,
        http: HistorySource,
        symbol: str,
        tf: int | str,
        from_: int | datetime,
        to: int | datetime,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        split_adjust: bool | None = None,
        untraded: bool | None = None,
        format: Format | str | None = None,
    ) -> Bars:
        """The candles ``http.history`` returns for these arguments, from the cache where it
        covers them and from ``http`` for the rest (kept when closed)."""
        params, start, end = http._history_params(
            symbol, tf, from_, to, exchange, board, None, split_adjust, untraded
        )
        key = self._key(params, split_adjust, untraded)
        span = candle_span(params["tf"])
        # iter_history's range: the candle containing `from_` opens after `start - span`.
        need_lo, need_hi = max(0, start - span + 1), end
        settle = self.settle
        if settle is None:
            settle = ANONYMOUS_SETTLE if getattr(http, "_tokens", None) is None else DEFAULT_SETTLE
        frozen_hi = int(self._clock() - settle) - span  # candles opening at or before it closed
        file = self.path / server_dir(getattr(http, "base_url", "")) / key.relpath()
        stored, covered = await asyncio.to_thread(_read, file, need_lo, need_hi)
        fetched: dict[int, Bar] = {}
        new_ranges: Coverage = []
        for lo, hi in _missing(covered, need_lo, need_hi):
            pages = http.iter_history(
                symbol,
                tf,
                lo,
                hi,
                exchange=exchange,
                board=board,
                split_adjust=split_adjust,
                untraded=untraded,
                format=format,
            )
            async for bar in pages:
                if lo <= bar.time <= hi:
                    fetched[bar.time] = bar
            if lo <= frozen_hi:
                new_ranges.append((lo, min(hi, frozen_hi)))
        if new_ranges:
            keep = [b for b in fetched.values() if any(a <= b.time <= z for a, z in new_ranges)]
            await asyncio.to_thread(_add, file, keep, new_ranges)
        merged = {b.time: b for b in stored}
        merged.update(fetched)
        return Bars(merged[t] for t in sorted(merged))

    def read(
        self,
        symbol: str,
        tf: int | str,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        split_adjust: bool | None = None,
        untraded: bool | None = None,
        server: str = "https://api.alor.ru",
    ) -> tuple[Bars, Coverage]:
        """What the cache holds for an instrument and timeframe of ``server`` (the client's
        ``base_url``), and the ranges it covers (no request is sent)."""
        bars, covered = _read(
            self.file(
                symbol,
                tf,
                exchange=exchange,
                board=board,
                split_adjust=split_adjust,
                untraded=untraded,
                server=server,
            )
        )
        return Bars(bars), covered

    def file(
        self,
        symbol: str,
        tf: int | str,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        split_adjust: bool | None = None,
        untraded: bool | None = None,
        server: str = "https://api.alor.ru",
    ) -> Path:
        """The Parquet file of an instrument and timeframe of ``server`` (it may not exist
        yet)."""
        key = self._key(self._params(symbol, tf, exchange, board), split_adjust, untraded)
        return self.path / server_dir(server) / key.relpath()

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _params(
        symbol: str, tf: int | str, exchange: Exchange | str, board: str | None
    ) -> dict[str, str]:
        out = {
            "symbol": segment("symbol", symbol),
            "exchange": exchange_code(exchange),
            "tf": _tf(tf),
        }
        if board is not None:
            out["instrumentGroup"] = _text("board", board)
        return out

    @staticmethod
    def _key(params: dict[str, str], split_adjust: bool | None, untraded: bool | None) -> _Key:
        board = params.get("instrumentGroup")
        if board is not None:
            board = segment("board", board)
        return _Key(
            params["exchange"],
            params["symbol"],
            board,
            params["tf"].upper(),
            split_adjust,
            untraded,
        )


def server_dir(base_url: str) -> str:
    """The cache folder of a server: its host, plus ``_<port>`` when the URL names a port."""
    try:
        parts = urlsplit(base_url if "//" in base_url else f"//{base_url}")
        host, port = (parts.hostname or "unknown").lower(), parts.port
    except ValueError:
        raise ConfigurationError(f"server {base_url!r} is not a URL") from None
    if not host.strip(".") or "/" in host or "\\" in host:  # '..' would leave the cache
        raise ConfigurationError(f"server {base_url!r} has no host name a folder can carry")
    return host if port is None else f"{host}_{port}"


# -- files (run in a worker thread) -------------------------------------------------------------


def _read(file: Path, lo: int | None = None, hi: int | None = None) -> tuple[list[Bar], Coverage]:
    """The candles (opening in ``[lo, hi]`` when given) and the coverage of ``file``
    (nothing if it does not exist)."""
    pa = _arrow()
    pq = require("pyarrow.parquet", "the candle cache (BarStore)")
    try:
        # One open, read whole: a writer's rename then cannot mix two versions (reading by
        # path lets pyarrow open the file again between the footer and the pages).
        data = file.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as exc:  # a directory in its place, a file where a folder should be, …
        raise ConfigurationError(
            f"the candle cache file {file} cannot be read ({exc.strerror}); check the cache "
            "directory (BarStore(path) / cache=) is a writable folder"
        ) from None
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as exc:
        raise ConfigurationError(
            f"the candle cache file {file} cannot be read ({exc}); delete it to start over"
        ) from None
    _check_layout(table, file)
    meta = table.schema.metadata or {}
    try:
        covered = [(int(a), int(b)) for a, b in msgspec.json.decode(meta.get(_META, b"[]"))]
    except (msgspec.DecodeError, TypeError, ValueError):
        raise ConfigurationError(
            f"the candle cache file {file} has no readable coverage; delete it to start over"
        ) from None
    if lo is not None and hi is not None:
        pc = require("pyarrow.compute", "the candle cache (BarStore)")
        opens = table.column("time")
        table = table.filter(pc.and_(pc.greater_equal(opens, lo), pc.less_equal(opens, hi)))
    columns = [table.column(n).to_pylist() for n in ("time", "open", "high", "low", "close")]
    volume = table.column("volume").to_pylist()
    bars = [
        Bar(time=t, open=o, high=h, low=lo, close=c, volume=v)
        for t, o, h, lo, c, v in zip(*columns, volume, strict=True)
    ]
    return bars, _merge(covered)


#: The columns of a cache file and their Arrow types.
_COLUMNS: Final = (
    ("time", "int64"),
    ("open", "double"),
    ("high", "double"),
    ("low", "double"),
    ("close", "double"),
    ("volume", "int64"),
)


def _check_layout(table: Any, file: Path) -> None:
    """Refuse a Parquet file that is not a candle cache file (other columns or types, or
    missing values), rather than fail on a column later or return candles of wrong types."""
    for name, kind in _COLUMNS:
        index = table.schema.get_field_index(name)
        column = None if index < 0 else table.column(index)
        if column is None or str(column.type) != kind or column.null_count:
            found = "missing" if column is None else f"{column.type}, {column.null_count} null"
            raise ConfigurationError(
                f"the candle cache file {file} is not a BarStore file (column {name!r}: "
                f"{found}; expected {kind} without nulls); delete it to start over"
            )


@contextlib.contextmanager
def _locked(file: Path) -> Iterator[None]:
    """An exclusive lock shared by every writer of ``file`` (a no-op without ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # Windows: atomic replace only
        yield
        return
    with open(file.with_name(file.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _add(file: Path, bars: list[Bar], ranges: Coverage) -> None:
    """Merge ``bars`` (the server's whole answer for ``ranges``) into ``file``, atomically."""
    try:
        _write(file, bars, ranges)
    except OSError as exc:  # the cache path is a file, read-only, full, …
        raise ConfigurationError(
            f"cannot write the candle cache file {file}: {exc.strerror or exc}; make the cache "
            "directory (BarStore(path) / cache=) a writable folder"
        ) from None


def _write(file: Path, bars: list[Bar], ranges: Coverage) -> None:
    pa = _arrow()
    pq = require("pyarrow.parquet", "the candle cache (BarStore)")
    file.parent.mkdir(parents=True, exist_ok=True)
    with _locked(file):
        old, covered = _read(file)
        by_time = {b.time: b for b in old if not any(a <= b.time <= z for a, z in ranges)}
        by_time.update((b.time, b) for b in bars)
        rows = [by_time[t] for t in sorted(by_time)]
        coverage = _merge(covered + ranges)
        schema = pa.schema(
            [
                pa.field("time", pa.int64(), nullable=False),
                pa.field("open", pa.float64(), nullable=False),
                pa.field("high", pa.float64(), nullable=False),
                pa.field("low", pa.float64(), nullable=False),
                pa.field("close", pa.float64(), nullable=False),
                pa.field("volume", pa.int64(), nullable=False),
            ],
            metadata={_FORMAT: b"1", _META: msgspec.json.encode(coverage)},
        )
        table = pa.table(
            {
                "time": [b.time for b in rows],
                "open": [b.open for b in rows],
                "high": [b.high for b in rows],
                "low": [b.low for b in rows],
                "close": [b.close for b in rows],
                "volume": [b.volume for b in rows],
            },
            schema=schema,
        )
        tmp = file.with_name(f".{file.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, file)
        finally:
            tmp.unlink(missing_ok=True)
