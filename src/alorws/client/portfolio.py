"""``Portfolio``: the local state of one portfolio, right after every gap (docs/protocol.md §9.5).

The pattern of ALOR's own web terminal: subscribe to the account streams, take an HTTP snapshot,
merge by id; and after every restore of a stream take a new snapshot of what that stream carries
(the server's replay after a reconnect is capped at 3000 records, docs/protocol.md §12.17, so HTTP
fills the gap)::

    async with AlorClient(token) as client, Portfolio(client, "D12345") as pf:
        pf.on_change(lambda kind, obj: print(kind, obj))
        while True:
            kind, obj = await pf.wait_change()

Merge rules (each makes the result independent of how stream updates and snapshots interleave):

* **orders and stop orders** (by id): the copy that is *further along* wins, whatever its source.
  Progress is compared as ``(final, filled lots, update time)``: a final status (filled,
  canceled, rejected) beats ``working``, then more filled lots win, then a later
  ``update_time``. A copy that is not further along than the one held (e.g. a snapshot taken
  before the last stream update) is ignored, so nothing rolls back.
* **own trades** (by id): a union; a trade never changes.
* **positions** (by symbol), **summary**, **risks**: the snapshot is authoritative for what it
  holds (and a symbol missing from it is removed), *except* for keys that a stream updated
  while the snapshot request was in flight: those keep the stream's value. The stream delivers
  every change in order and without gaps between restores, so a key it touched during the
  request gets its newest state from the stream; a key it did not touch has no change newer
  than the snapshot. Stream updates after the snapshot always win.

``stale`` is true until the first snapshot, from a disconnect of any of the portfolio's streams
until that stream's restore *and* the snapshot after it, and while a snapshot is being retried
(with a jittered :class:`~alorws.protocol.backoff.Backoff`, ``retry=``).

Each stream is a :class:`Feed`; what a feed's stream is, how its snapshot is fetched and how
either is merged are tables keyed by it. Changes are reported as a :class:`Change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from ..errors import BufferOverflowError, InvalidState, StreamClosed
from ..lifecycle import Lifecycle
from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from ..protocol.backoff import Backoff
from ..protocol.enums import Exchange, OrderStatus
from ..protocol.jwt import portfolio_kind
from ..protocol.timeutil import parse_iso
from .lane import LaneEvent
from .streams import Stream


if TYPE_CHECKING:
    from .client import AlorClient
    from .http import HttpClient

__all__ = ["SNAPSHOT_RETRY", "Change", "Feed", "Portfolio", "order_progress"]

log = logging.getLogger("alorws.portfolio")


class Feed(enum.StrEnum):
    """One of a portfolio's streams; its HTTP snapshot is taken per feed. The value names the
    feed in ``stats()`` (and, for the single ones, the attribute that holds it)."""

    ORDERS = "orders"
    STOP_ORDERS = "stop_orders"
    TRADES = "trades"
    POSITIONS = "positions"
    SUMMARY = "summary"
    RISK = "risk"
    FORTS_RISK = "forts_risk"  # FORTS portfolios only


class Change(enum.StrEnum):
    """What changed, as ``on_change`` callbacks and ``wait_change`` get it (equal to the plain
    string, e.g. ``Change.ORDER == "order"``)."""

    ORDER = "order"
    STOP_ORDER = "stop_order"
    TRADE = "trade"
    POSITION = "position"
    #: A snapshot no longer lists the symbol; the object is the position last held.
    POSITION_REMOVED = "position_removed"
    SUMMARY = "summary"
    RISK = "risk"
    FORTS_RISK = "forts_risk"


#: Retries of a failed snapshot (after the first: a failure of the first fails ``start``).
SNAPSHOT_RETRY: Final = Backoff(base=0.05, cap=5.0)

_FINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED})
#: Connection events that open a gap, and those that close it (a silent subscription subscribed
#: again is a gap like an outage: docs/protocol.md §9.6).
_GAP_OPENS: Final = frozenset({"disconnected", "silent"})
_GAP_CLOSES: Final = frozenset({"restored", "resubscribed"})

#: Per feed: its stream on a client (portfolio, exchange). Orders, stop orders, fills and
#: positions skip the server's history: the first snapshot brings it.
_OPEN: Final[dict[Feed, Callable[[AlorClient, str, Exchange], Stream[Any]]]] = {
    Feed.ORDERS: lambda c, p, ex: c.orders(p, exchange=ex, skip_history=True),
    Feed.STOP_ORDERS: lambda c, p, ex: c.stop_orders(p, exchange=ex, skip_history=True),
    Feed.TRADES: lambda c, p, ex: c.own_trades(p, exchange=ex, skip_history=True),
    Feed.POSITIONS: lambda c, p, ex: c.positions(p, exchange=ex, skip_history=True),
    Feed.SUMMARY: lambda c, p, ex: c.summaries(p, exchange=ex),
    Feed.RISK: lambda c, p, ex: c.risks(p, exchange=ex),
    Feed.FORTS_RISK: lambda c, p, ex: c.spectra_risks(p, exchange=ex),
}
#: Per feed: its HTTP snapshot (portfolio, exchange).
_FETCH: Final[dict[Feed, Callable[[HttpClient, str, Exchange], Awaitable[Any]]]] = {
    Feed.ORDERS: lambda h, p, ex: h.orders(p, ex),
    Feed.STOP_ORDERS: lambda h, p, ex: h.stop_orders(p, ex),
    Feed.TRADES: lambda h, p, ex: h.trades(p, ex),
    Feed.POSITIONS: lambda h, p, ex: h.positions(p, ex),
    Feed.SUMMARY: lambda h, p, ex: h.summary(p, ex),
    Feed.RISK: lambda h, p, ex: h.risk(p, ex),
    Feed.FORTS_RISK: lambda h, p, ex: h.forts_risk(p, ex),
}
#: The feeds that hold one object (``summary``, ``risk``, ``forts_risk``), and its change.
_SINGLE: Final = {
    Feed.SUMMARY: Change.SUMMARY,
    Feed.RISK: Change.RISK,
    Feed.FORTS_RISK: Change.FORTS_RISK,
}

ChangeCallback = Callable[[str, Any], object]


def _time_key(text: str | None) -> float:
    if not text:
        return -math.inf
    try:
        return parse_iso(text).timestamp()
    except ValueError:
        return -math.inf


def order_progress(order: Order | StopOrder) -> tuple[int, int, float]:
    """How far an order has got: ``(final, filled lots, update time)``; bigger is further."""
    return (
        1 if order.status in _FINAL else 0,
        order.filled_qty_batch or 0,
        _time_key(order.update_time),
    )


def _same(a: Model | None, b: Model) -> bool:
    """Equal, ignoring the ``existing`` (replay) flag."""
    if a is None:
        return False
    if a == b:
        return True
    if "existing" in b.__struct_fields__:
        return bool(msgspec.structs.replace(a, existing=getattr(b, "existing", False)) == b)
    return False


class Portfolio:
    """Orders, stop orders, own trades, positions, summary and risks of one portfolio.

    Its lifecycle (:class:`~alorws.lifecycle.Lifecycle`, ``stats()["state"]``):
    ``new -> starting -> open -> closing -> closed``.

    Args:
        client: an open :class:`~alorws.client.AlorClient`.
        portfolio: the portfolio id (``D…``, ``G…`` or a FORTS ``75…`` code; FORTS risks only
            for FORTS).
        exchange: the exchange of the portfolio's streams and snapshots.
        retry: delays between attempts of a snapshot that failed (unlimited by default; when
            they run out the feed stays stale until its stream's next restore).

    Attributes:
        orders: market and limit orders by id.
        stop_orders: stop and stop-limit orders by id.
        trades: own trades by id.
        positions: positions (money included, e.g. ``RUB``) by symbol.
        summary, risk, forts_risk: the latest of each (``forts_risk`` only for a FORTS portfolio).
        ready: set once the first snapshot is merged.
        snapshots: how many snapshots (of one feed each) were merged.
    """

    def __init__(
        self,
        client: AlorClient,
        portfolio: str,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        retry: Backoff = SNAPSHOT_RETRY,
    ) -> None:
        self.client = client
        self.portfolio = portfolio
        self.exchange = Exchange(exchange)
        self.orders: dict[str, Order] = {}
        self.stop_orders: dict[str, StopOrder] = {}
        self.trades: dict[str, OwnTrade] = {}
        self.positions: dict[str, Position] = {}
        self.summary: Summary | None = None
        self.risk: Risk | None = None
        self.forts_risk: SpectraRisk | None = None
        self.ready = asyncio.Event()
        self.snapshots = 0
        self._retry = retry
        feeds = list(Feed)
        self._feeds = feeds if portfolio_kind(portfolio) == "derivatives" else feeds[:-1]
        self._state = Lifecycle.NEW
        self._streams: dict[Feed, Stream[Any]] = {}
        self._consumers: list[asyncio.Task[None]] = []
        self._runners: dict[Feed, asyncio.Task[None]] = {}
        self._pending: set[Feed] = set()
        self._syncing: set[Feed] = set()
        self._down: set[Feed] = set()
        self._touched: dict[Feed, set[Hashable]] = {}
        self._listeners: list[ChangeCallback] = []
        self._waiters: list[asyncio.Future[tuple[str, Any]]] = []
        # What one object of a feed's stream does to the state (a snapshot's list of orders,
        # stop orders or fills merges item by item the same way).
        self._apply: dict[Feed, Callable[[Any], None]] = {
            Feed.ORDERS: functools.partial(self._merge_order, self.orders, Change.ORDER),
            Feed.STOP_ORDERS: functools.partial(
                self._merge_order, self.stop_orders, Change.STOP_ORDER
            ),
            Feed.TRADES: self._merge_trade,
            Feed.POSITIONS: self._stream_position,
            **{feed: functools.partial(self._stream_single, feed) for feed in _SINGLE},
        }

    def __repr__(self) -> str:
        return (
            f"<Portfolio {self.portfolio} {self._state.value}{' stale' if self.stale else ''} "
            f"orders={len(self.orders)} trades={len(self.trades)} "
            f"positions={len(self.positions)}>"
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Portfolio:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Subscribe to the account streams, merge the first HTTP snapshot, set ``ready``."""
        if self._state is not Lifecycle.NEW:
            raise InvalidState(f"cannot start a portfolio that is {self._state.value}")
        self._state = Lifecycle.STARTING
        try:
            for feed in self._feeds:
                stream = _OPEN[feed](self.client, self.portfolio, self.exchange)
                stream.backfill = False  # the portfolio's own snapshot after a gap covers it
                self._streams[feed] = stream
            # Subscribe first (UI pattern, docs/protocol.md §9.5): whatever changes after the
            # snapshot was taken then arrives on the streams.
            await asyncio.gather(*(s.subscribe() for s in self._streams.values()))
            loop = asyncio.get_running_loop()
            for feed, stream in self._streams.items():
                stream.on_event(self._event_handler(feed))
                self._consumers.append(loop.create_task(self._consume(feed, stream)))
            for feed in self._feeds:
                self._request_sync(feed)
            await asyncio.gather(*list(self._runners.values()))
        except BaseException:
            await self.aclose()
            raise
        self._state = Lifecycle.OPEN
        self.ready.set()

    @property
    def _ending(self) -> bool:
        return self._state in (Lifecycle.CLOSING, Lifecycle.CLOSED)

    async def aclose(self) -> None:
        """Stop the consumers and snapshots and unsubscribe the streams."""
        if self._ending:
            return
        self._state = Lifecycle.CLOSING
        tasks = [*self._consumers, *self._runners.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in self._streams.values():
            try:
                await stream.aclose()
            except Exception:
                log.exception("%s: closing %r failed", self.portfolio, stream)
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(InvalidState(f"portfolio {self.portfolio} is closed"))
        self._waiters.clear()
        self._state = Lifecycle.CLOSED

    # -- reading --------------------------------------------------------------------------------

    @property
    def stale(self) -> bool:
        """True before the first snapshot, and while any stream is down or re-synchronising."""
        return not self.ready.is_set() or bool(self._down) or bool(self._syncing)

    @property
    def working_orders(self) -> list[Order]:
        """Orders with status ``working``."""
        return [o for o in self.orders.values() if o.status is OrderStatus.WORKING]

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(kind, obj)`` after every change, in the consumer's loop.

        ``kind`` is a :class:`Change` (a ``str``): ``"order"``, ``"stop_order"``, ``"trade"``,
        ``"position"``, ``"position_removed"`` (a snapshot no longer lists the symbol),
        ``"summary"``, ``"risk"`` or ``"forts_risk"``; ``obj`` the new model. Returns a remover.
        """
        self._listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return remove

    async def wait_change(self) -> tuple[str, Any]:
        """Wait for the next change; returns ``(kind, obj)`` as :meth:`on_change` gets them."""
        if self._ending:
            raise InvalidState(f"portfolio {self.portfolio} is closed")
        fut: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await fut
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)

    def stats(self) -> dict[str, Any]:
        """Counts, snapshots taken, staleness and the streams' counters."""
        return {
            "portfolio": self.portfolio,
            "state": self._state.value,
            "stale": self.stale,
            "orders": len(self.orders),
            "stop_orders": len(self.stop_orders),
            "trades": len(self.trades),
            "positions": len(self.positions),
            "snapshots": self.snapshots,
            "down": sorted(feed.value for feed in self._down),
            "syncing": sorted(feed.value for feed in self._syncing),
            "streams": {feed.value: s.stats() for feed, s in self._streams.items()},
        }

    # -- notifications --------------------------------------------------------------------------

    def _notify(self, kind: Change, obj: Any) -> None:
        for cb in list(self._listeners):
            try:
                cb(kind, obj)
            except Exception:
                log.exception("%s: on_change callback failed", self.portfolio)
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result((kind, obj))

    # -- streams --------------------------------------------------------------------------------

    def _event_handler(self, feed: Feed) -> Callable[[LaneEvent], None]:
        def handle(event: LaneEvent) -> None:
            if event.kind in _GAP_OPENS:
                self._down.add(feed)
            elif event.kind in _GAP_CLOSES:
                self._down.discard(feed)
                self._request_sync(feed)

        return handle

    async def _consume(self, feed: Feed, stream: Stream[Any]) -> None:
        apply = self._apply[feed]
        while True:
            try:
                batch = await stream.get_batch()
            except StreamClosed:
                return
            except BufferOverflowError as exc:  # updates were lost: the snapshot fills in
                log.warning("%s: %s; taking a snapshot", self.portfolio, exc)
                self._request_sync(feed)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._ending:
                    log.error("%s: %s stream ended: %s", self.portfolio, feed.value, exc)
                    self._down.add(feed)
                return
            for obj in batch:
                apply(obj)

    def _stream_position(self, position: Position) -> None:
        self._touch(Feed.POSITIONS, position.symbol)
        self._set_position(position)

    def _stream_single(self, feed: Feed, obj: Any) -> None:
        self._touch(feed, feed)
        self._set_single(feed, obj)

    def _touch(self, feed: Feed, key: Hashable) -> None:
        touched = self._touched.get(feed)
        if touched is not None:
            touched.add(key)

    # -- merging --------------------------------------------------------------------------------

    def _merge_order(self, store: dict[str, Any], kind: Change, order: Order | StopOrder) -> None:
        held = store.get(order.id)
        if held is not None and order_progress(order) <= order_progress(held):
            return
        store[order.id] = order
        self._notify(kind, order)

    def _merge_trade(self, trade: OwnTrade) -> None:
        if trade.id in self.trades:
            return
        self.trades[trade.id] = trade
        self._notify(Change.TRADE, trade)

    def _set_position(self, position: Position) -> None:
        if _same(self.positions.get(position.symbol), position):
            return
        self.positions[position.symbol] = position
        self._notify(Change.POSITION, position)

    def _set_single(self, feed: Feed, obj: Any) -> None:
        if _same(getattr(self, feed.value), obj):
            return
        setattr(self, feed.value, obj)
        self._notify(_SINGLE[feed], obj)

    def _merge_snapshot(self, feed: Feed, snapshot: Any, touched: set[Hashable]) -> None:
        """Merge ``feed``'s HTTP snapshot (see the module docstring for the rules)."""
        if feed is Feed.POSITIONS:
            listed = {pos.symbol for pos in snapshot}
            for symbol in [s for s in self.positions if s not in listed | touched]:
                self._notify(Change.POSITION_REMOVED, self.positions.pop(symbol))
            for pos in snapshot:
                if pos.symbol not in touched:
                    self._set_position(pos)
        elif feed in _SINGLE:
            if feed not in touched:
                self._set_single(feed, snapshot)
        else:  # orders, stop orders, fills: merged as if they came on the stream
            apply = self._apply[feed]
            for obj in snapshot:
                apply(obj)

    # -- snapshots ------------------------------------------------------------------------------

    def _request_sync(self, feed: Feed) -> None:
        """Take a snapshot of ``feed`` (again, once the running one is done, if one runs)."""
        if self._ending:
            return
        self._syncing.add(feed)
        task = self._runners.get(feed)
        if task is not None and not task.done():
            self._pending.add(feed)
            return
        self._runners[feed] = asyncio.get_running_loop().create_task(self._run_sync(feed))

    async def _run_sync(self, feed: Feed) -> None:
        delays = self._retry.delays()
        while True:
            self._pending.discard(feed)
            try:
                await self._sync(feed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.ready.is_set():
                    raise  # the first snapshot: start() fails
                delay = next(delays, None)
                if delay is None:
                    log.error(
                        "%s: %s snapshot failed (%s); giving up until the stream's next restore",
                        self.portfolio,
                        feed.value,
                        exc,
                    )
                    return  # still syncing: the feed stays stale
                log.warning(
                    "%s: %s snapshot failed (%s); retrying in %.2f s",
                    self.portfolio,
                    feed.value,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                self._pending.add(feed)
                continue
            if feed not in self._pending:
                break
            delays = self._retry.delays()  # a success starts the backoff over
        self._syncing.discard(feed)

    async def _sync(self, feed: Feed) -> None:
        """Fetch one feed over HTTP and merge it (see the module docstring for the rules)."""
        touched = self._touched[feed] = set()
        try:
            snapshot = await _FETCH[feed](self.client.http, self.portfolio, self.exchange)
            self._merge_snapshot(feed, snapshot, touched)
        finally:
            del self._touched[feed]
        self.snapshots += 1
