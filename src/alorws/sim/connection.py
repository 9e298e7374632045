"""One simulator socket on asyncio: its outgoing queue, its sender task and the unread limit.

:mod:`~alorws.sim.subscriptions` decides what a connection is sent; a :class:`Connection` moves
it: every frame goes through one queue, in order, and one sender task writes the queue to a
:class:`Wire` (the server's transport). The server's WebSocket shell creates a connection per
``/ws`` or ``/cws`` socket and closes the socket when the connection asks it to.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, ClassVar, Final, Protocol


if TYPE_CHECKING:
    from .auth import Claims
    from .subscriptions import Hub, Subscription


__all__ = ["Connection", "Wire"]

log = logging.getLogger("alorws.sim")

_BATCH_BYTES: Final = 256 * 1024  # bytes the sender hands the transport in one write
_YIELD_BYTES: Final = 2 * 1024 * 1024  # bytes a sender writes before letting others run
_REPLAY_CHUNK: Final = 256  # replayed frames built per sender turn

_PACK2: Final = struct.Struct("!BBH").pack
_PACK8: Final = struct.Struct("!BBQ").pack
# Headers of unmasked final text frames (RFC 6455 §5.2), precomputed for the usual sizes.
_HEADERS: Final = [bytes((0x81, n)) if n < 126 else _PACK2(0x81, 126, n) for n in range(8192)]


def _text_header(n: int) -> bytes:
    """RFC 6455 header of an unmasked, final text frame of ``n`` payload bytes."""
    if n < 8192:
        return _HEADERS[n]
    if n < 65536:
        return _PACK2(0x81, 126, n)
    return _PACK8(0x81, 127, n)


class Wire(Protocol):
    """What the sender needs from a transport (implemented over aiohttp in ``server.py``)."""

    def write(self, data: bytes) -> None:
        """Hand bytes to the transport (never blocks)."""

    def writing_paused(self) -> bool:
        """True while the transport's buffer is above its high-water mark."""

    def drain(self) -> Awaitable[None]:
        """Wait until the transport's buffer is below its low-water mark."""


class _Replay:
    """A history replay queued as one item and built lazily by the sender, so a long replay
    to a fast reader neither counts as unread nor costs memory up front."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterator[bytes]) -> None:
        self._items = items

    def take(self, n: int) -> tuple[list[bytes], bool]:
        out = list(itertools.islice(self._items, n))
        return out, len(out) < n


class Connection:
    """One ``/ws`` or ``/cws`` socket: its queue, sender task, subscriptions and account.

    Every frame produced for the connection goes through its queue, so a status reply always
    precedes the first data message of its guid (docs/protocol.md §12.2). The frames queued and
    not yet handed to the transport are the *unread* ones: above ``max_unread`` (the hub's
    limit) the connection is closed with 1008 ``Buffer overflow`` and its subscriptions go
    (docs/protocol.md §12.9). The sender writes only while the transport is below its high-water
    mark, so what a client does not read backs up here, after the kernel's socket buffers. A
    history replay sits in the queue as one item built lazily, so a long replay to a fast reader
    is not "unread".

    Args:
        kind: ``"ws"`` or ``"cws"``.
        wire: the transport to write to.
        hub: the subscriptions registry this connection belongs to (its limits apply).
        clock: the server's clock, seconds (stalls are deadlines on it).
        on_close: called once with ``(code, reason)`` when the connection is to be closed.
    """

    _ids: ClassVar[Iterator[int]] = itertools.count(1)

    def __init__(
        self,
        kind: str,
        wire: Wire,
        hub: Hub[Connection],
        clock: Callable[[], float],
        on_close: Callable[[int, str], None],
    ) -> None:
        self.id = next(self._ids)
        self.kind = kind
        self.wire = wire
        self.hub = hub
        self.max_unread = hub.limits.max_unread
        self.on_close = on_close
        self._clock = clock
        self.subs: dict[str, Subscription] = {}
        self.login: str | None = None  # the account it counts against (docs/protocol.md §12.9)
        self.claims: Claims | None = None  # /cws: the authorized token's claims
        self.closing = False
        self.close_code: int | None = None
        self.stalled_until = 0.0  # clock time; the sender writes nothing before it
        self.sent = 0  # frames handed to the transport
        # /cws, the idle fault (see faults.IdleCws): when the last command came (clock time),
        # whether the connection is stale, and the timer that makes it so.
        self.last_command = 0.0
        self.stale = False
        self.stale_serial = 0  # tokens up to this serial do not clear the staleness
        self.idle_timer: asyncio.TimerHandle | None = None
        self.doomed: asyncio.TimerHandle | None = None  # the restart window drops it at this
        self._queue: deque[bytes | _Replay] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending_close: tuple[int, str] | None = None

    @property
    def unread(self) -> int:
        """Frames produced for this connection that the transport has not taken yet."""
        return len(self._queue)

    def start(self) -> None:
        """Start the sender task (call from the event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._send_loop())

    async def stop(self) -> None:
        """Stop the sender and forget what is queued."""
        self._queue.clear()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():  # we were cancelled ourselves, not just the task
                    raise

    def put(self, frame: bytes) -> None:
        """Queue one frame; drop the connection if that makes it overflow
        (docs/protocol.md §12.9)."""
        if not self.closing and not self.offer(frame):
            self.close(1008, "Buffer overflow")

    def offer(self, frame: bytes) -> bool:
        """Queue one frame of a fan-out (the caller checked :attr:`closing`); False when the
        queue is now over ``max_unread``: the caller closes the connection after its loop."""
        queue = self._queue
        queue.append(frame)
        if len(queue) > self.max_unread:
            return False
        if self._waiter is not None:
            self.put_nothing()
        return True

    def put_replay(self, frames: Iterator[bytes]) -> None:
        """Queue a lazily built sequence of frames (history), in order with the rest."""
        if self.closing:
            return
        self._queue.append(_Replay(frames))
        self.put_nothing()

    def put_nothing(self) -> None:
        """Wake the sender (e.g. after a stall ends or a replay was queued)."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def flush_now(self) -> None:
        """Hand every queued frame to the transport now: a close frame is about to be written
        (the client closed, or sent a frame too big), and what was queued before it, replies
        to commands already executed included, must precede it. A stalled connection sends
        nothing; an unfinished history replay is dropped (the connection ends)."""
        queue = self._queue
        if not queue or self.stalled_until > self._clock():
            return
        parts: list[bytes] = []
        count = 0
        for item in queue:
            if type(item) is bytes:
                parts.append(_text_header(len(item)))
                parts.append(item)
                count += 1
        queue.clear()
        if parts:
            self.wire.write(b"".join(parts))
            self.sent += count

    def close(self, code: int, reason: str, *, discard: bool = True) -> None:
        """Decide to close: nothing more is queued; subscriptions go; the server closes it.

        With ``discard=False`` what is already queued (e.g. the reply explaining the close)
        is sent first.
        """
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        if discard:
            self._queue.clear()
        self.hub.drop_subscriptions(self)
        if self._queue and self._task is not None and not self._task.done():
            self._pending_close = (code, reason)
            self.put_nothing()
        else:
            self.on_close(code, reason)

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self._clock
        queue = self._queue
        wire = self.wire
        header = _text_header
        headers = _HEADERS
        since_yield = 0
        while True:
            if not queue:
                if self._pending_close is not None:
                    code, reason = self._pending_close
                    self._pending_close = None
                    self.on_close(code, reason)
                    return
                waiter = loop.create_future()
                self._waiter = waiter
                await waiter
                since_yield = 0
                continue
            pause = self.stalled_until - clock()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            parts: list[bytes] = []
            size = 0
            count = 0
            replaying = False
            append = parts.append
            while queue and size < _BATCH_BYTES:
                item = queue.popleft()
                if type(item) is bytes:
                    n = len(item)
                    append(headers[n] if n < 8192 else header(n))
                    append(item)
                    size += n
                    count += 1
                    continue
                assert isinstance(item, _Replay)
                try:
                    frames, done = item.take(_REPLAY_CHUNK)
                except Exception:  # a bug building the replay: drop it, keep the connection
                    log.exception("a history replay failed")
                    self.hub.errors += 1
                    frames, done = [], True
                for frame in frames:
                    parts.append(header(len(frame)))
                    parts.append(frame)
                    size += len(frame)
                count += len(frames)
                if not done:
                    queue.appendleft(item)
                    replaying = True
                    break
            if parts:
                wire.write(b"".join(parts))
                self.sent += count
                since_yield += size
            try:
                if wire.writing_paused():
                    # The transport holds more than its high-water mark: what stays in the
                    # queue from now on is what the client has not taken (the unread count).
                    await wire.drain()
                    since_yield = 0
                elif replaying or since_yield >= _YIELD_BYTES:
                    # Let the producers and other senders run; a replay builds its frames
                    # here, so it yields after every chunk.
                    await asyncio.sleep(0)
                    since_yield = 0
            except ConnectionError:  # the peer is gone; the reader side cleans up
                self._queue.clear()
                return
