"""The I/O-thread half of ``AlorClient``: its ``/ws`` lanes, where a subscription goes, the
account's connection budget, and the taps.

Everything here runs in the client's I/O loop, but :meth:`LanePool.reserve_cws` (the consumer's
loop, when ``client.trading`` is first used) and the read-only :meth:`LanePool.stats`.

The connection budget (docs/protocol.md §7.1: ALOR allows ``max_connections`` per account,
``/ws`` and ``/cws`` together):

* the ``/cws`` connection holds one connection of the budget from the moment ``client.trading``
  is first used (whether connected or reconnecting: it must always be able to come back), so
  ``/ws`` lanes then take at most ``max_connections - 1``;
* market data takes at most ``max_connections - max(reserve_connections, c)``, where ``c`` is
  the account lanes plus the ``/cws`` connection: the reserve is kept for those, and used by
  them once they exist;
* a subscription that finds no room on its lanes opens a new lane if the budget allows, and
  otherwise raises :class:`~alorws.errors.ConnectionLimitError` (a
  :class:`~alorws.errors.SubscriptionLimitError`) before anything is sent; the first use of
  ``client.trading`` when ``/ws`` lanes already take every connection raises it too.
* a server that refuses a subscribe for its limit (429, :class:`~alorws.errors.ServerLimitExceeded`)
  below ``max_subscriptions_per_connection`` (another application shares the account, or the
  server's limit is lower) teaches the pool that lane's real capacity: the lane takes nothing
  more and the subscription is placed again, on another lane or a new one within the budget.

A batch (:meth:`LanePool.subscribe_many`, behind ``AlorClient.subscribe_all``) follows the same
rules, stream by stream in batch order, but is placed at once: each lane pipelines its part (as a
restore re-sends it), one timeout covers every answer, and what the server
refuses for its limit is placed again as a batch. It yields to the I/O loop every ``_CHUNK``
streams, so new lanes open and placed parts go out while the rest is placed, and the readers of
live lanes never wait long.

Lanes are never closed before the client is (an empty one stays for later subscriptions), so
the count of lanes is the count of ``/ws`` connections; but a lane whose connect loop ended
for good (the backoff ran out, or the refresh token was refused: its streams ended with that
error) is retired, with its subscriptions, and the next subscription opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConnectionLimitError, ServerLimitExceeded, TransportTimeout
from ..protocol import requests as rq
from ..protocol.backoff import Backoff
from ..protocol.registry import Subscription, SubscriptionRegistry, SubscriptionState
from .auth import TokenManager
from .buffer import StreamBuffer
from .endpoints import ssl_context_for
from .hooks import ConnectionEvent
from .lane import Confirmations, Lane, LaneKind, Tap
from .proxy import Proxy


if TYPE_CHECKING:
    from .streams import Stream

__all__ = ["LanePool"]

log = logging.getLogger("alorws.client")


_ACTIVE = SubscriptionState.ACTIVE
#: Streams a batch places before it lets the I/O loop run (about 5 ms of work).
_CHUNK = 1000


class _Part:
    """The new subscriptions of a batch placed on one lane at once, and their answers."""

    __slots__ = ("index", "lane", "sinks", "subs", "waiter")

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.subs: list[Subscription[rq.SubscriptionRequest, int]] = []
        self.sinks: list[StreamBuffer[Any]] = []
        self.index: list[int] = []  # the stream (in the batch) that placed each
        self.waiter: Confirmations | None = None


class _Batch:
    """What one round of a batch subscribe placed."""

    __slots__ = ("extra", "joined", "new", "parts")

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        # guid placed by this round -> its stream; and the later streams of the batch sharing it.
        self.new: dict[str, int] = {}
        self.extra: dict[str, list[int]] = {}
        # Streams sharing a subscription placed before the batch, still waiting for its answer.
        self.joined: list[tuple[int, Lane, str, asyncio.Future[None]]] = []


class LanePool:
    """The lanes of one client and the rules for placing subscriptions on them (see the module
    docstring).

    Args:
        url: the ``/ws`` URL every lane connects to.
        registry: the client's subscription registry (shared with the lanes).
        max_connections, reserve_connections: the account's budget (``/cws`` included) and
            the connections market data may not take.
        max_subscriptions_per_connection: the registry's limit (for messages).
        subscribe_timeout: how long a subscription waits for the server's confirmation.
        cafile: a CA bundle every lane's TLS trusts (``AlorClient(cafile=...)``).
        backoff, ping_interval, ping_timeout: passed to every lane.
        proxy: the proxy every lane connects through (None: direct).
    """

    def __init__(
        self,
        url: str,
        registry: SubscriptionRegistry[rq.SubscriptionRequest, int],
        *,
        max_connections: int,
        reserve_connections: int,
        max_subscriptions_per_connection: int,
        subscribe_timeout: float,
        cafile: str | None,
        backoff: Backoff,
        ping_interval: float,
        ping_timeout: float,
        proxy: Proxy | None = None,
    ) -> None:
        self.url = url
        self._proxy = proxy
        self.registry = registry
        #: Where lanes get tokens: set once the client has its token manager.
        self.tokens: TokenManager | None = None
        self.max_connections = max_connections
        self.reserve_connections = reserve_connections
        self.max_subscriptions_per_connection = max_subscriptions_per_connection
        self.subscribe_timeout = subscribe_timeout
        self._cafile = cafile
        self._ssl: ssl.SSLContext | None = None
        self._ssl_built = False
        self._backoff = backoff
        self._ping = (ping_interval, ping_timeout)
        self.lanes: dict[int, Lane] = {}
        self.taps: list[Tap] = []  # I/O loop only (or before the client starts)
        self._next_lane = 1
        # Guards the budget: lanes are opened in the I/O loop, /cws is reserved from the
        # consumer's loop, and neither may take the last connection from under the other.
        self._budget = threading.Lock()
        self._cws = False
        # Lane -> how many subscriptions it held when the server refused one more for its
        # limit (429): the lane's real capacity, lower than ours.
        self._caps: dict[int, int] = {}
        # aclose() of retired lanes, unsubscribes of cancelled subscribes: awaited on close.
        self._retiring: set[asyncio.Task[None]] = set()
        #: Given to every lane: told of connects, losses and restores (the client's hooks).
        self.on_connection: Callable[[ConnectionEvent], None] | None = None

    # -- the budget ---------------------------------------------------------------------------

    def reserve_cws(self) -> None:
        """Count the ``/cws`` connection against the budget (once; any thread). Raises
        :class:`~alorws.errors.ConnectionLimitError` if ``/ws`` lanes already take it all."""
        with self._budget:
            if self._cws:
                return
            if len(self.lanes) >= self.max_connections:
                raise ConnectionLimitError(
                    f"no connection left for /cws (orders): {len(self.lanes)} /ws connection(s) "
                    f"take the account's budget of {self.max_connections}; keep "
                    "reserve_connections >= 1 for trading, or raise max_connections if the "
                    "account allows more. Nothing was sent."
                )
            self._cws = True

    def _pick(self, kind: LaneKind) -> Lane:
        """A lane of ``kind`` with room, or a new one if the budget allows (else
        ConnectionLimitError, nothing sent)."""
        lanes = [lane for lane in self.lanes.values() if lane.kind is kind]
        for lane in lanes:
            if self._room(lane.id) > 0:
                return lane
        context = self._ssl_context()  # outside the lock: loading the CA store takes a while
        with self._budget:
            self._check_budget(kind, lanes)
            lane = self._open(kind, context)
        lane.ensure_started()
        return lane

    def _room(self, lane_id: int) -> int:
        """New subscriptions ``lane_id`` can take: the registry's room, within what the server
        showed it accepts."""
        room = self.registry.room(lane_id)
        cap = self._caps.get(lane_id)
        return room if cap is None else min(room, cap - self.registry.count(lane_id))

    def _check_budget(self, kind: LaneKind, lanes: list[Lane]) -> None:
        """Raise ConnectionLimitError unless one more lane of ``kind`` fits (lock held)."""
        cws = 1 if self._cws else 0
        total = len(self.lanes) + cws
        if kind is LaneKind.MARKET:
            others = total - len(lanes)  # account lanes and /cws
            allowed = self.max_connections - max(self.reserve_connections, others)
            fits = len(lanes) < allowed
        else:
            allowed = self.max_connections - (total - len(lanes))
            fits = total < self.max_connections
        if fits:
            return
        used = sum(self.registry.count(lane.id) for lane in lanes)
        cap = self.max_subscriptions_per_connection
        raise ConnectionLimitError(
            f"no room for another {kind.value} subscription: {len(lanes)} {kind.value} "
            f"connection(s) hold {used} subscriptions (limit {cap} each) and may not grow: "
            f"{kind.value} data may use {max(allowed, 0)} of the account's "
            f"{self.max_connections} connections ({len(self.lanes)} /ws open, /cws "
            f"{'counted' if cws else 'not used'}, reserve {self.reserve_connections}); "
            "unsubscribe something or raise the budget. Nothing was sent."
        )

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every lane shares (None for ``ws://``), built on first use."""
        if not self._ssl_built:
            self._ssl = ssl_context_for(self.url, cafile=self._cafile)
            self._ssl_built = True
        return self._ssl

    def _open(self, kind: LaneKind, context: ssl.SSLContext | None) -> Lane:
        """A new lane of ``kind``, with the taps (lock held)."""
        lane_id = self._next_lane
        self._next_lane += 1
        lane = Lane(
            lane_id,
            kind,
            self.url,
            self.registry,
            self._token,
            self._refresh,
            ssl_context=context,
            backoff=self._backoff,
            ping_interval=self._ping[0],
            ping_timeout=self._ping[1],
            proxy=self._proxy,
        )
        for tap in self.taps:
            lane.add_tap(tap)
        lane.on_end = self._retire
        lane.on_connection = self.on_connection
        self.lanes[lane_id] = lane
        return lane

    def _retire(self, lane: Lane) -> None:
        """``lane``'s connect loop ended for good (the backoff ran out, or the refresh token
        was refused) and its streams ended with the error: take it out of the pool, so no new
        subscription lands on a lane that never connects again (or shares one of its
        subscriptions), and forget its subscriptions; its connection leaves the budget."""
        with self._budget:
            if self.lanes.get(lane.id) is not lane:
                return
            del self.lanes[lane.id]
        self._caps.pop(lane.id, None)
        registry = self.registry
        registry.connection_lost(lane.id)  # PENDING ones wait as RESTORING; CLOSING ones close
        for sub in registry.subscriptions():
            if sub.connection_id == lane.id:
                while registry.get(sub.guid) is not None:
                    registry.unsubscribe(sub.guid)  # RESTORING: closes with the last holder
        task = asyncio.get_running_loop().create_task(
            lane.aclose(), name=f"alorws-lane-{lane.id}-retire"
        )
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        log.warning(
            "lane %d retired: %s; new subscriptions open another connection",
            lane.id,
            lane.last_error,
        )

    async def _token(self) -> str:
        assert self.tokens is not None
        return await self.tokens.token()

    async def _refresh(self) -> str:
        assert self.tokens is not None
        return await self.tokens.refresh(force=True)

    # -- subscribe / unsubscribe --------------------------------------------------------------

    async def subscribe(self, stream: Stream[Any]) -> tuple[str, int]:
        """Subscribe ``stream`` (sharing an identical live subscription) and wait for the
        confirmation; returns ``(guid, lane id)``.

        A subscription the server refuses for its limit (429) is placed again, for every
        stream waiting for it: the first to see the refusal places it anew and the others
        share that one.
        """
        request = stream.request
        while True:
            existing = self.registry.find(request)
            if existing is not None and existing.is_live:
                sub = self.registry.subscribe(request, existing.connection_id).subscription
                lane = self.lanes[sub.connection_id]
                lane.attach(sub.guid, stream._buffer)
                if stream.silence_timeout:
                    lane.watch(sub.guid, stream.silence_timeout)
                if sub.state is not SubscriptionState.ACTIVE:
                    waiter = lane.confirmation(sub.guid)
                    if waiter is not None:
                        try:
                            await self._confirm(waiter, sub.guid, lane, stream)
                        except ServerLimitExceeded:
                            continue  # whoever placed it learnt the lane's limit
                return sub.guid, lane.id
            kind = LaneKind.ACCOUNT if stream.account else LaneKind.MARKET
            lane = self._pick(kind)  # raises ConnectionLimitError once the budget is used
            sub = self.registry.subscribe(request, lane.id).subscription
            waiter = lane.add(sub, stream._buffer)
            if stream.silence_timeout:
                lane.watch(sub.guid, stream.silence_timeout)
            try:
                await self._confirm(waiter, sub.guid, lane, stream)
            except ServerLimitExceeded as exc:
                self._full(lane, [exc])
                continue
            return sub.guid, lane.id

    def _full(self, lane: Lane, refused: list[ServerLimitExceeded]) -> None:
        """The server refused ``refused`` for its limit on ``lane``: it holds what it has and
        takes nothing more. The lowest count learnt stays (a later refusal after unsubscribes
        may count fewer; a count never raises it again)."""
        count = self.registry.count(lane.id)
        cap = self._caps.get(lane.id)
        self._caps[lane.id] = count if cap is None else min(cap, count)
        log.warning(
            "lane %d: the server refused %d subscription(s) beyond the %d it holds (%s); "
            "placing them on another connection",
            lane.id,
            len(refused),
            count,
            refused[0].message,
        )

    async def subscribe_many(
        self, streams: Sequence[Stream[Any]]
    ) -> list[tuple[str, int] | BaseException]:
        """:meth:`subscribe` every stream as one batch; each result or exception, in order.

        The rules are :meth:`subscribe`'s, applied to the batch at once: it is placed in order
        (sharing identical live subscriptions, duplicates in the batch included; the budget
        refuses what does not fit, before sending it), each lane pipelines its part,
        and one timeout covers the wait for every answer. Subscriptions the server refuses
        for its limit (429) are placed again, as a batch, until nothing more is refused.
        """
        results: list[tuple[str, int] | BaseException | None] = [None] * len(streams)
        todo = list(range(len(streams)))
        while todo:
            todo = await self._subscribe_round(streams, todo, results)
        done: list[tuple[str, int] | BaseException] = []
        for result in results:
            assert result is not None  # every round answers each stream or places it again
            done.append(result)
        return done

    async def _subscribe_round(
        self,
        streams: Sequence[Stream[Any]],
        todo: list[int],
        results: list[tuple[str, int] | BaseException | None],
    ) -> list[int]:
        """Place, send and confirm the streams ``todo`` (indexes); fill in ``results`` and
        return the indexes refused for the server's limit, to place again."""
        batch = _Batch()
        try:
            for start in range(0, len(todo), _CHUNK):
                if start:
                    # Let the lanes open and write what is placed while the rest is placed: the
                    # server starts on the first part instead of waiting for the last.
                    await asyncio.sleep(0)
                self._place(streams, todo[start : start + _CHUNK], results, batch)
            futures = [part.waiter.done for part in batch.parts if part.waiter is not None]
            futures += [waiter for _, _, _, waiter in batch.joined]
            if futures:
                await asyncio.wait(futures, timeout=self.subscribe_timeout)
        except BaseException:
            # Cancelled: stop delivering to the streams still waiting, as subscribe() does.
            for part in batch.parts:
                for sub, i in zip(part.subs, part.index, strict=True):
                    for j in (i, *batch.extra.get(sub.guid, ())):
                        part.lane.detach(sub.guid, streams[j]._buffer)
            for i, lane, guid, _ in batch.joined:
                lane.detach(guid, streams[i]._buffer)
            raise
        again: list[int] = []
        cleanup: list[Coroutine[Any, Any, None]] = []
        refused: dict[Lane, list[ServerLimitExceeded]] = {}
        for part in batch.parts:
            lane, answers = part.lane, part.waiter
            assert answers is not None
            for sub, i in zip(part.subs, part.index, strict=True):
                guid = sub.guid
                more = batch.extra.get(guid)
                holders = [i] if more is None else [i, *more]
                if guid in answers.pending:
                    for j in holders:
                        if answers.done.cancelled():  # the lane closed: nothing to cancel
                            results[j] = asyncio.CancelledError()
                            lane.detach(guid, streams[j]._buffer)
                        else:
                            results[j] = self._timed_out(streams[j], lane)
                            cleanup.append(self.unsubscribe(guid, lane.id, streams[j]._buffer))
                    continue
                error = answers.errors.get(guid)
                if error is None:
                    for j in holders:
                        results[j] = (guid, lane.id)
                    continue
                for j in holders:
                    self._release_failed(guid, lane, streams[j])
                if isinstance(error, ServerLimitExceeded):
                    refused.setdefault(lane, []).append(error)
                    again += holders
                else:
                    for j in holders:
                        results[j] = error
        for lane, errors in refused.items():
            self._full(lane, errors)  # the server's limit for this connection is below ours
        for i, lane, guid, waiter in batch.joined:
            if not waiter.done():
                results[i] = self._timed_out(streams[i], lane)
                cleanup.append(self.unsubscribe(guid, lane.id, streams[i]._buffer))
            elif waiter.cancelled():
                results[i] = asyncio.CancelledError()
                self._release_failed(guid, lane, streams[i])
            elif (error := waiter.exception()) is not None:
                self._release_failed(guid, lane, streams[i])
                if isinstance(error, ServerLimitExceeded):
                    again.append(i)  # placed again, like the holder that placed it
                else:
                    results[i] = error
            else:
                results[i] = (guid, lane.id)
        if cleanup:
            await asyncio.gather(*cleanup, return_exceptions=True)
        return sorted(again)

    def _place(
        self,
        streams: Sequence[Stream[Any]],
        todo: list[int],
        results: list[tuple[str, int] | BaseException | None],
        batch: _Batch,
    ) -> None:
        """Place the streams ``todo`` in order, as :meth:`subscribe` would one by one, and hand
        each lane its part (sent in one burst). Synchronous: the room counted here holds."""
        registry = self.registry
        new, extra = batch.new, batch.extra
        parts: dict[int, _Part] = {}  # lane id -> the new subscriptions placed on it
        filling: dict[LaneKind, tuple[Lane, int]] = {}  # kind -> the lane being filled, room
        sharing: list[tuple[Lane, str, Stream[Any]]] = []  # later holders of guids in ``new``
        for i in todo:
            stream = streams[i]
            request = stream.request
            existing = registry.find(request)
            if existing is not None and existing.is_live:
                sub = registry.subscribe(request, existing.connection_id).subscription
                guid = sub.guid
                lane = self.lanes[sub.connection_id]
                if guid in new:  # placed by this batch: it shares the batch's answer
                    extra.setdefault(guid, []).append(i)
                    sharing.append((lane, guid, stream))  # once the first holder's sink is in
                    continue
                lane.attach(guid, stream._buffer)
                if stream.silence_timeout:
                    lane.watch(guid, stream.silence_timeout)
                waiter = lane.confirmation(guid) if sub.state is not _ACTIVE else None
                if waiter is None:
                    results[i] = (guid, lane.id)
                else:
                    batch.joined.append((i, lane, guid, waiter))
                continue
            kind = LaneKind.ACCOUNT if stream.account else LaneKind.MARKET
            current = filling.get(kind)
            if current is None or current[1] <= 0:
                try:
                    lane = self._pick(kind)  # ConnectionLimitError once the budget is used
                except ConnectionLimitError as exc:
                    results[i] = exc  # nothing was sent for it
                    continue
                current = (lane, self._room(lane.id))
            lane, room = current
            filling[kind] = (lane, room - 1)
            sub = registry.subscribe(request, lane.id).subscription
            part = parts.get(lane.id)
            if part is None:
                part = parts[lane.id] = _Part(lane)
            part.subs.append(sub)
            part.sinks.append(stream._buffer)
            part.index.append(i)
            new[sub.guid] = i
        for part in parts.values():
            lane = part.lane
            part.waiter = lane.add_many(part.subs, part.sinks)
            for sub, i in zip(part.subs, part.index, strict=True):  # once their sinks are in
                timeout = streams[i].silence_timeout
                if timeout:
                    lane.watch(sub.guid, timeout)
        for lane, guid, stream in sharing:
            lane.attach(guid, stream._buffer)
            if stream.silence_timeout:
                lane.watch(guid, stream.silence_timeout)
        batch.parts += parts.values()

    def _timed_out(self, stream: Stream[Any], lane: Lane) -> TransportTimeout:
        return TransportTimeout(
            f"{stream.name}: no confirmation within {self.subscribe_timeout} s "
            f"({lane.last_error or 'connection not open'}); check the network or the URL"
        )

    def _release_failed(self, guid: str, lane: Lane, stream: Stream[Any]) -> None:
        """A subscribe that got no confirmation: stop delivering it to ``stream``, and release
        it if the server refused it (a FAILED entry holds nothing on the server)."""
        lane.detach(guid, stream._buffer)
        sub = self.registry.get(guid)
        if sub is not None and sub.state is SubscriptionState.FAILED:
            self.registry.unsubscribe(guid)

    async def _confirm(self, waiter: Any, guid: str, lane: Lane, stream: Stream[Any]) -> None:
        try:
            async with asyncio.timeout(self.subscribe_timeout):
                # Shielded: the holders of one subscription share its confirmation, and one
                # that gives up must not cancel the others' wait.
                await asyncio.shield(waiter)
        except TimeoutError:
            await self.unsubscribe(guid, lane.id, stream._buffer)
            raise self._timed_out(stream, lane) from None
        except asyncio.CancelledError:
            if waiter.done():  # the lane ended it (closed or removed): nothing more is ours
                self._release_failed(guid, lane, stream)
            else:  # this caller gave up: its hold goes, and the subscription with the last
                self._give_up(guid, lane, stream)
            raise
        except BaseException:
            self._release_failed(guid, lane, stream)
            raise

    def _give_up(self, guid: str, lane: Lane, stream: Stream[Any]) -> None:
        """A subscribe cancelled by its caller before the answer: release its hold now (a
        cancelled task cannot wait for an unsubscribe), the server's subscription in the
        background if it was the last."""
        lane.detach(guid, stream._buffer)
        sub = self.registry.get(guid)
        if sub is None or sub.state in (SubscriptionState.CLOSED, SubscriptionState.CLOSING):
            return
        if self.registry.unsubscribe(guid):
            task = asyncio.get_running_loop().create_task(
                lane.remove(guid), name=f"alorws-lane-{lane.id}-unsubscribe"
            )
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def unsubscribe(self, guid: str, lane_id: int, buffer: StreamBuffer[Any]) -> None:
        """Stop delivering to ``buffer``; the last holder of ``guid`` unsubscribes it."""
        lane = self.lanes.get(lane_id)
        if lane is None:
            return
        lane.detach(guid, buffer)
        sub = self.registry.get(guid)
        if sub is None or sub.state in (SubscriptionState.CLOSED, SubscriptionState.CLOSING):
            return
        if self.registry.unsubscribe(guid):
            await lane.remove(guid)

    # -- taps, drills, shutdown ---------------------------------------------------------------

    def add_tap(self, tap: Tap) -> None:
        """``AlorClient.add_tap`` in the I/O loop: from this frame on, on every lane."""
        if tap not in self.taps:
            self.taps.append(tap)
        for lane in list(self.lanes.values()):
            lane.add_tap(tap)

    def remove_tap(self, tap: Tap) -> None:
        """Remove ``tap`` in the I/O loop (after handing it what each lane holds)."""
        with contextlib.suppress(ValueError):
            self.taps.remove(tap)
        for lane in list(self.lanes.values()):
            lane.remove_tap(tap)

    async def drop(self) -> None:
        """Close every connection now; the lanes reconnect and restore."""
        for lane in self.lanes.values():
            lane.drop("dropped on request")

    async def aclose(self) -> None:
        """Close every lane."""
        lanes = list(self.lanes.values())
        await asyncio.gather(
            *(lane.aclose() for lane in lanes), *self._retiring, return_exceptions=True
        )

    def stats(self) -> list[dict[str, Any]]:
        """Each lane's stats (any thread)."""
        return [lane.stats() for lane in list(self.lanes.values())]
