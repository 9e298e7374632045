"""Replay a recording as the client's own typed streams.

::

    async with Replay("data/", speed=10) as source:      # or: AlorClient(...) as source
        async with source.quotes("SBER") as quotes:
            async for q in quotes:                        # Quote, as live
                ...

A :class:`Replay` has the client's stream methods (``quotes``, ``order_book``, ``bars``,
``all_trades``, ``instrument``, ``orders``, ``positions``, …, and ``stream(request)``; they are
written once for every source, :class:`~alorws.client.sources.StreamMethods`) and they return
the same :class:`~alorws.client.streams.Stream` objects: recorded frames go through the same
router (:func:`~alorws.protocol.codec.route`), the same stream buffer, the same typed decoders
and the same de-duplicating filters as live frames. A strategy written against
:data:`StreamSource` runs unchanged on a client, a ``BusClient`` or a replay.

Matching: a typed method selects the recorded subscription with that opcode whose request agrees
on every argument given (``None``/omitted = any value; ``skip_history=False`` too); that
selection is :meth:`Replay.find`. ``stream(request)`` selects the one equal to ``request``. No
match, or several, raises :class:`~alorws.errors.ConfigurationError` listing what was recorded
(:meth:`Replay.subscriptions`).

Timing: one pump task feeds every open stream in ``recv_ns`` order, across partitions. It starts
when the first stream subscribes, one loop turn later (so streams opened together all start at
the beginning). A stream opened later starts where the pump is, as a live subscription would.
``speed=None`` replays as fast as the consumers take it; ``speed=x`` keeps recorded gaps
divided by ``x``. Replayed streams are lossless by default (``policy="queue"``) and the pump
waits for a consumer whose buffer holds ``max_buffer`` items until it has taken half of them
(it awaits the buffer's ``drained``, never polls), so a stream that is opened but never read
stalls the replay. When the recording ends, every stream ends (``async for``
finishes).

A subscription confirmed a second time with the same guid (a restore after a reconnect,
docs/protocol.md §9.5) delivers a ``restored`` :class:`~alorws.client.lane.LaneEvent`, as live.
After a live restore an orders, stop-orders or own-trades stream also fetches the HTTP snapshot and
adds what it had never seen; a recording holds ``/ws`` frames only, so a replayed restore adds
nothing (the same unless something was missed during the gap). The whole recording is loaded into
memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Unpack, cast

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..client._badframes import BadFrameLog
from ..client.buffer import Policy, StreamBuffer
from ..client.lane import LaneEvent
from ..client.sources import (
    StreamOptions,
    StreamSource,
    check_request,
    is_account,
    is_whole,
    split_history,
    stream_kind,
    stream_name,
    takes_options,
)
from ..client.streams import ClientStreams, Stream, buffer_bound, default_policy
from ..client.whole import filter_for
from ..errors import ConfigurationError, FrameError, InvalidState, scrub
from ..frames import Rows, _to_pandas, _to_polars
from ..lifecycle import Lifecycle
from ..protocol.codec import STREAM_MODELS, DataMessage, decode_frame, model_for, route
from ..protocol.enums import SubscriptionOpcode
from ..protocol.requests import AnySubscriptionRequest, SubscriptionRequest
from ..protocol.timeutil import MSK_NAME
from .format import list_parts


if TYPE_CHECKING:
    import pandas as pd
    import polars as pl


__all__ = ["RecordedSubscription", "Replay", "StreamSource"]

log = logging.getLogger("alorws.replay")

_COLUMNS: Final = ["recv_ns", "connection", "guid", "kind", "frame"]
_INDEX_COLUMNS: Final = ["guid", "opcode", "params"]


class RecordedSubscription(msgspec.Struct, frozen=True):
    """One subscription in a recording: its request, and how many frames were recorded."""

    request: SubscriptionRequest
    frames: int
    first_ns: int
    last_ns: int

    @property
    def opcode(self) -> str:
        """The subscription opcode (``QuotesSubscribe``, …)."""
        return str(type(self.request).opcode)


class _Slot:
    """The buffers of one recorded subscription's open streams, and the guids it had."""

    __slots__ = ("buffers", "confirmed")

    def __init__(self) -> None:
        self.buffers: list[StreamBuffer[Any]] = []
        self.confirmed: set[str] = set()


class _NoSnapshots:
    """What a replayed stream gets when it asks for the HTTP snapshot after a restore."""

    async def orders(self, portfolio: str, exchange: Any = None) -> list[Any]:
        return []

    async def stop_orders(self, portfolio: str, exchange: Any = None) -> list[Any]:
        return []

    async def trades(self, portfolio: str, exchange: Any = None) -> list[Any]:
        return []


class Replay(ClientStreams):
    """A recording under ``root`` (see :mod:`alorws.record.format`) as typed streams, with the
    client's stream methods (:class:`~alorws.client.sources.StreamMethods`) and :meth:`stream`.

    Its lifecycle (:class:`~alorws.lifecycle.Lifecycle`): ``new -> open -> closed``.

    Args:
        root: the recording's directory.
        speed: ``None``: as fast as the consumers go; ``x``: recorded pace times ``x``.
        max_buffer: items a stream's buffer holds before the pump waits for its consumer.
        clock, sleep: monotonic seconds and an async sleep (tests inject a fake pair).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        speed: float | None = None,
        max_buffer: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if speed is not None and not speed > 0:
            raise ConfigurationError(f"speed must be > 0 or None, got {speed!r}")
        self.root = Path(root)
        self.speed = speed
        self.max_buffer = max_buffer
        self._clock = clock
        self._sleep = sleep
        self._table: Any = None  # pa.Table, sorted by recv_ns
        self._subs: dict[SubscriptionRequest, RecordedSubscription] = {}
        self._by_guid: dict[str, SubscriptionRequest] = {}
        self._slots: dict[SubscriptionRequest, _Slot] = {}
        self._pump: asyncio.Task[None] | None = None
        self._state = Lifecycle.NEW
        self.frames_replayed = 0
        #: Recorded frames of a replayed subscription that the router refused (skipped,
        #: logged rate-limited); a payload that does not decode is counted in its stream's
        #: ``bad_payloads`` instead, as live. Rows recorded as ``junk`` belong to no
        #: subscription (the live connection counted them) and are not replayed.
        self.bad_frames = 0
        self._bad_log = BadFrameLog(log, f"replay {self.root}")
        #: Streams ask their client for HTTP snapshots after a restore: none in a recording.
        self.http = _NoSnapshots()

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Replay:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Read the recording (in a worker thread) and index its subscriptions."""
        if self._state is not Lifecycle.NEW:
            raise InvalidState(f"cannot open a replay that is {self._state.value}")
        self._state = Lifecycle.STARTING
        try:
            self._table, self._subs, self._by_guid = await asyncio.to_thread(_load, self.root)
        except BaseException:
            self._state = Lifecycle.CLOSED
            raise
        self._state = Lifecycle.OPEN

    async def aclose(self) -> None:
        """Stop the pump and end every stream."""
        self._state = Lifecycle.CLOSED
        if self._pump is not None:
            self._pump.cancel()
            try:
                await self._pump
            except asyncio.CancelledError:
                pass
        self._end_streams()

    async def wait(self) -> None:
        """Wait until the pump has fed the whole recording."""
        if self._pump is not None:
            await asyncio.shield(self._pump)

    def subscriptions(self) -> list[RecordedSubscription]:
        """What the recording holds, by opcode and first frame."""
        self._require_open()
        return sorted(self._subs.values(), key=lambda s: (s.opcode, s.first_ns))

    @property
    def duration(self) -> float:
        """Seconds from the first to the last recorded frame."""
        self._require_open()
        if self._table.num_rows == 0:
            return 0.0
        ns = self._table.column("recv_ns")
        return float(ns[-1].as_py() - ns[0].as_py()) / 1e9

    def _require_open(self) -> None:
        if self._state in (Lifecycle.NEW, Lifecycle.STARTING):
            raise InvalidState("the replay is not open: use `async with Replay(root)`")

    # -- streams ------------------------------------------------------------------------------
    #
    # The typed methods (quotes, order_book, …, stop_orders) are StreamMethods', shared with
    # AlorClient and BusClient; here they select a recorded subscription (_typed).

    @takes_options(StreamOptions)
    def stream(self, request: SubscriptionRequest, **options: Unpack[StreamOptions]) -> Stream[Any]:
        """The recorded stream of ``request``: the recorded subscription equal to it, or to
        the request a live client makes for it (a client subscribes orders, stop orders, fills
        and positions with history and skips it on its side, and so does a replay). Lossless
        by default (``policy="queue"``); ``silence_timeout`` is unused (nothing to watch).
        Not recorded: :class:`~alorws.errors.ConfigurationError` listing what was."""
        self._require_streams()
        made, skip_history = split_history(check_request(request))
        for candidate in (made, request):
            if candidate in self._subs:
                return self._open(candidate, skip_history, options)
        raise ConfigurationError(
            f"no recorded subscription is {request!r} in {self.root}; recorded:\n  "
            + self._recorded()
        )

    def _typed(
        self, cls: type[SubscriptionRequest], fields: dict[str, Any], options: StreamOptions
    ) -> Stream[Any]:
        self._require_streams()
        criteria = {k: v for k, v in fields.items() if v is not None}
        skip_history = False
        if is_whole(cls):
            # Recorded with history and filtered client-side, as live (alorws.client.whole).
            skip_history = bool(criteria.pop("skip_history", False))
        elif not criteria.get("skip_history"):
            criteria.pop("skip_history", None)  # False: any
        return self._open(self.find(cls.opcode, **criteria), skip_history, options)

    def _open(
        self, request: SubscriptionRequest, skip_history: bool, options: StreamOptions
    ) -> Stream[Any]:
        model = model_for(type(request).opcode)
        # The Stream talks to its "client" through _subscribe/_unsubscribe only: this object.
        return Stream(
            cast(Any, self),
            request,
            model,
            policy=default_policy(model, options.get("policy") or Policy.QUEUE),
            account=is_account(request),
            max_buffer=buffer_bound(options.get("max_buffer"), self.max_buffer),
            filter=filter_for(model, skip_history=skip_history),
            name=f"replay {stream_name(request)}",
        )

    def _require_streams(self) -> None:
        if self._state is not Lifecycle.OPEN:
            raise InvalidState("the replay is not open: use `async with Replay(root)`")

    def _recorded(self) -> str:
        subs = sorted(self._subs.values(), key=lambda s: (s.opcode, s.first_ns))
        return "\n  ".join(repr(s.request) for s in subs) or "(nothing)"

    def find(self, opcode: SubscriptionOpcode | str, **criteria: Any) -> SubscriptionRequest:
        """The one recorded subscription request of ``opcode`` that agrees with ``criteria``;
        open it with :meth:`stream`.

        ``opcode`` is a subscription opcode (``"QuotesSubscribe"``) or a stream kind, the name
        of the typed method (``"quotes"``, ``"order_book"``, ``"all_trades"``, ``"bars"``, …;
        :data:`~alorws.client.sources.STREAM_KINDS`). ``criteria`` are fields of the request
        by their Python names (``code="SBER"``, ``tf=60``); a field not given matches any
        value. None or several matching raise :class:`~alorws.errors.ConfigurationError`: its
        first line says what did not match, the lines after it list what was recorded.
        """
        self._require_open()
        return self._match(opcode, criteria)

    def _match(
        self, opcode: SubscriptionOpcode | str, criteria: dict[str, Any]
    ) -> SubscriptionRequest:
        wanted = str(opcode)
        found = []
        for request in self._subs:
            if wanted not in (str(type(request).opcode), stream_kind(request)):
                continue
            try:
                same = msgspec.structs.replace(request, **criteria) == request
            except (TypeError, ValueError):  # InvalidArgumentError is a ValueError
                same = False
            if same:
                found.append(request)
        if len(found) == 1:
            return found[0]
        asked = ", ".join(f"{k}={v!r}" for k, v in criteria.items())
        what = (
            "no recorded subscription matches"
            if not found
            else f"{len(found)} recorded subscriptions match"
        )
        raise ConfigurationError(
            f"{what} {wanted}({asked}) in {self.root}\nrecorded:\n  {self._recorded()}"
        )

    # -- DataFrames -------------------------------------------------------------------------------

    def messages(
        self, what: SubscriptionRequest | SubscriptionOpcode | str, **criteria: Any
    ) -> tuple[list[int], Rows[Any]]:
        """Every recorded data message of one subscription, decoded, as received: their
        ``recv_ns`` and the models (a :class:`~alorws.frames.Rows`).

        ``what`` is a recorded request, or an opcode / stream kind with ``criteria`` as for
        :meth:`find`. Unlike a replayed stream, nothing is filtered or de-duplicated: a bar
        re-sent while it forms is one row per message. A message that does not decode is
        skipped and counted in :attr:`bad_frames`. Works before :meth:`open` too (the
        recording is then read here, in this thread).
        """
        self._load_now()
        if isinstance(what, SubscriptionRequest):
            if criteria:
                raise ConfigurationError("pass a request or criteria, not both")
            request = what if what in self._subs else split_history(check_request(what))[0]
            if request not in self._subs:
                raise ConfigurationError(
                    f"no recorded subscription is {what!r} in {self.root}; recorded:\n  "
                    + self._recorded()
                )
        else:
            request = self._match(what, criteria)
        model = model_for(type(request).opcode)
        fmt = request.format
        guids = {g for g, r in self._by_guid.items() if r == request}
        table = self._table
        recv = table.column("recv_ns").to_pylist()
        kinds = table.column("kind").to_pylist()
        frames = table.column("frame")
        times: list[int] = []
        rows: Rows[Any] = Rows(model=model)
        for i, guid in enumerate(table.column("guid").to_pylist()):
            if guid not in guids or kinds[i] != "data":
                continue
            try:
                rows.append(decode_frame(frames[i].as_py(), model, fmt))
            except FrameError as exc:
                self.bad_frames += 1
                self._bad_log.frame(exc, None)
                continue
            times.append(recv[i])
        return times, rows

    def to_pandas(
        self,
        what: SubscriptionRequest | SubscriptionOpcode | str,
        *,
        tz: str = MSK_NAME,
        **criteria: Any,
    ) -> pd.DataFrame:
        """The recorded messages of one subscription (:meth:`messages`) as a pandas DataFrame:
        ``recv_time`` (when the frame was received) then the model's fields, times in ``tz``
        (Moscow time by default; dtypes in :mod:`alorws.frames`). Needs
        ``pip install 'alorws[pandas]'``."""
        times, rows = self.messages(what, **criteria)
        return _to_pandas(rows, rows.model, tz, {"recv_time": (times, "ns")})

    def to_polars(
        self,
        what: SubscriptionRequest | SubscriptionOpcode | str,
        *,
        tz: str = MSK_NAME,
        **criteria: Any,
    ) -> pl.DataFrame:
        """As :meth:`to_pandas`, a polars DataFrame. Needs ``pip install 'alorws[polars]'``."""
        times, rows = self.messages(what, **criteria)
        return _to_polars(rows, rows.model, tz, {"recv_time": (times, "ns")})

    def _load_now(self) -> None:
        """Read the recording here if :meth:`open` has not."""
        if self._state is Lifecycle.CLOSED and self._table is None:
            raise InvalidState("the replay is closed")
        if self._table is None:
            self._table, self._subs, self._by_guid = _load(self.root)

    # -- the Stream's client side -----------------------------------------------------------------

    async def _subscribe(self, stream: Stream[Any]) -> tuple[str, int]:
        if self._state is not Lifecycle.OPEN or (self._pump is not None and self._pump.done()):
            stream._buffer.close()  # the recording is over: the stream ends at once
        else:
            self._slots.setdefault(stream.request, _Slot()).buffers.append(stream._buffer)
            if self._pump is None:
                self._pump = asyncio.get_running_loop().create_task(self._run(), name="replay")
        return f"replay:{stream.request}", 0

    async def _unsubscribe(self, stream: Stream[Any]) -> None:
        slot = self._slots.get(stream.request)
        if slot is not None and stream._buffer in slot.buffers:
            slot.buffers.remove(stream._buffer)

    # -- the pump ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # let streams opened together subscribe first
            await self._feed()
        finally:
            self._end_streams()

    async def _feed(self) -> None:
        table = self._table
        if table.num_rows == 0:
            return
        recv = table.column("recv_ns").to_pylist()
        conns = table.column("connection").to_pylist()
        guids = table.column("guid").to_pylist()
        kinds = table.column("kind").to_pylist()
        frames = table.column("frame")
        first_ns = recv[0]
        start = self._clock()
        by_guid, slots, speed, high = self._by_guid, self._slots, self.speed, self.max_buffer
        low = max(1, high // 2)  # a full buffer is waited for until its consumer took half
        for i, guid in enumerate(guids):
            request = by_guid.get(guid) if guid is not None else None
            slot = slots.get(request) if request is not None else None
            if slot is None or not slot.buffers or kinds[i] == "junk":
                continue
            if speed is not None:
                delay = start + (recv[i] - first_ns) / 1e9 / speed - self._clock()
                if delay > 0.0005:
                    await self._sleep(delay)
            frame = frames[i].as_py()
            try:
                msg = route(frame)  # the live router, on the recorded bytes
            except Exception as exc:
                if kinds[i] == "data" and isinstance(frame, bytes):
                    # Recorded as data by its tail: live, the reader handed it to the stream
                    # whole, which counted it in bad_payloads and went on. So here too.
                    for buffer in slot.buffers:
                        buffer.push(frame)
                else:  # one bad recorded frame is skipped, counted and logged
                    self.bad_frames += 1
                    self._bad_log.frame(exc, frame if isinstance(frame, bytes | str) else None)
                    continue
                msg = None
            if isinstance(msg, DataMessage):
                for buffer in slot.buffers:
                    buffer.push(msg.data)
            elif msg is not None and msg.ok:
                if msg.request_guid in slot.confirmed:  # same guid again: a restore
                    event = LaneEvent("restored", conns[i])
                    for buffer in slot.buffers:
                        buffer.push_event(event)
                slot.confirmed.add(msg.request_guid)
            self.frames_replayed += 1
            await asyncio.sleep(0)  # consumers take their item before the next one comes
            for buffer in list(slot.buffers):
                if buffer.depth >= high:  # backpressure: wait for this consumer
                    await buffer.drained(low)

    def _end_streams(self) -> None:
        for slot in self._slots.values():
            for buffer in slot.buffers:
                buffer.close()
            slot.buffers.clear()


def _read_part(path: Path) -> pa.Table:
    """One part's columns; ``params`` as plain strings (older recordings stored them so)."""
    table = pq.read_table(path, columns=_COLUMNS + _INDEX_COLUMNS[1:])
    i = table.schema.get_field_index("params")
    return table.set_column(i, "params", pc.cast(table.column(i), pa.string()))


def _load(
    root: Path,
) -> tuple[Any, dict[SubscriptionRequest, RecordedSubscription], dict[str, SubscriptionRequest]]:
    """Every part under ``root`` as one table in ``recv_ns`` order, and its subscriptions."""
    parts = list_parts(root)
    if not parts:
        raise ConfigurationError(f"no recording under {root} (no date=*/stream=*/part-*.parquet)")
    tables = [_read_part(p) for p in parts]
    table = pa.concat_tables(tables, promote_options="permissive")
    # Frames of one subscription live in one partition, already in order: ties keep it.
    table = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    table = table.take(pc.sort_indices(table, [("recv_ns", "ascending"), ("_row", "ascending")]))
    by_guid: dict[str, SubscriptionRequest] = {}
    stats: dict[SubscriptionRequest, list[int]] = {}
    index = table.select(["guid", "opcode", "params"]).group_by(["guid", "opcode", "params"])
    grouped = index.aggregate([]).to_pylist()
    decoded: dict[tuple[str, str], SubscriptionRequest] = {}
    for row in grouped:
        guid, opcode, params = row["guid"], row["opcode"], row["params"]
        if guid is None or opcode is None or params is None or opcode not in STREAM_MODELS:
            continue
        request = decoded.get((opcode, params))
        if request is None:
            try:
                fields = msgspec.json.decode(params)
                request = msgspec.convert(fields | {"opcode": opcode}, AnySubscriptionRequest)
            except Exception as exc:  # a corrupt index row hides its frames, not the recording
                log.warning(
                    "replay %s: the recorded request of %s cannot be read (%s); its frames "
                    "are not replayed",
                    root,
                    opcode,
                    scrub(str(exc)),
                )
                continue
            decoded[opcode, params] = request
        by_guid[guid] = request
    recv = table.column("recv_ns").to_pylist()
    for ns, guid, kind in zip(
        recv, table.column("guid").to_pylist(), table.column("kind").to_pylist(), strict=True
    ):
        request = by_guid.get(guid) if guid is not None else None
        if request is None:
            continue
        entry = stats.get(request)
        if entry is None:
            entry = stats[request] = [0, ns, ns]
        entry[0] += kind == "data"
        entry[2] = ns
    subs = {r: RecordedSubscription(r, n, first, last) for r, (n, first, last) in stats.items()}
    return table.select(_COLUMNS), subs, by_guid
