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
until that stream's restore *and* the snapshot after it, and while a snapshot is being retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import BufferOverflowError, InvalidState, StreamClosed
from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from ..protocol.enums import Exchange, OrderStatus
from ..protocol.jwt import portfolio_kind
from ..protocol.timeutil import parse_iso
from .lane import LaneEvent
from .streams import Stream


if TYPE_CHECKING:
    from .client import AlorClient

__all__ = ["Portfolio"]

log = logging.getLogger("alorws.portfolio")

#: What a stream carries (its snapshot is taken per kind) -> the change kind it notifies.
_KINDS = ("orders", "stop_orders", "trades", "positions", "summary", "risk", "forts_risk")
_FINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED})

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

    Args:
        client: an open :class:`~alorws.client.AlorClient`.
        portfolio: the portfolio id (``D…``, ``G…`` or a FORTS ``75…`` code; FORTS risks only
            for FORTS).
        exchange: the exchange of the portfolio's streams and snapshots.

    Attributes:
        orders: market and limit orders by id.
        stop_orders: stop and stop-limit orders by id.
        trades: own trades by id.
        positions: positions (money included, e.g. ``RUB``) by symbol.
        summary, risk, forts_risk: the latest of each (``forts_risk`` only for a FORTS portfolio).
        ready: set once the first snapshot is merged.
        snapshots: how many snapshots (of one kind each) were merged.
    """

    def __init__(
        self, client: AlorClient, portfolio: str, *, exchange: Exchange | str = Exchange.MOEX
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
        self._kinds = _KINDS if portfolio_kind(portfolio) == "derivatives" else _KINDS[:-1]
        self._state = "new"
        self._streams: dict[str, Stream[Any]] = {}
        self._consumers: list[asyncio.Task[None]] = []
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._pending: set[str] = set()
        self._syncing: set[str] = set()
        self._down: set[str] = set()
        self._touched: dict[str, set[Hashable]] = {}
        self._listeners: list[ChangeCallback] = []
        self._waiters: list[asyncio.Future[tuple[str, Any]]] = []

    def __repr__(self) -> str:
        return (
            f"<Portfolio {self.portfolio} {self._state}{' stale' if self.stale else ''} "
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
        if self._state != "new":
            raise InvalidState(f"cannot start a portfolio that is {self._state}")
        self._state = "starting"
        c, p, ex = self.client, self.portfolio, self.exchange
        makers: dict[str, Callable[[], Stream[Any]]] = {
            "orders": lambda: c.orders(p, exchange=ex, skip_history=True),
            "stop_orders": lambda: c.stop_orders(p, exchange=ex, skip_history=True),
            "trades": lambda: c.own_trades(p, exchange=ex, skip_history=True),
            "positions": lambda: c.positions(p, exchange=ex, skip_history=True),
            "summary": lambda: c.summaries(p, exchange=ex),
            "risk": lambda: c.risks(p, exchange=ex),
            "forts_risk": lambda: c.spectra_risks(p, exchange=ex),
        }
        try:
            for kind in self._kinds:
                self._streams[kind] = makers[kind]()
            # Subscribe first (UI pattern, docs/protocol.md §9.5): whatever changes after the
            # snapshot was taken then arrives on the streams.
            await asyncio.gather(*(s.subscribe() for s in self._streams.values()))
            loop = asyncio.get_running_loop()
            for kind, stream in self._streams.items():
                stream.on_event(self._event_handler(kind))
                self._consumers.append(loop.create_task(self._consume(kind, stream)))
            for kind in self._kinds:
                self._request_sync(kind)
            await asyncio.gather(*list(self._runners.values()))
        except BaseException:
            await self.aclose()
            raise
        self._state = "open"
        self.ready.set()

    async def aclose(self) -> None:
        """Stop the consumers and snapshots and unsubscribe the streams."""
        if self._state == "closed":
            return
        self._state = "closed"
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

        ``kind`` is ``"order"``, ``"stop_order"``, ``"trade"``, ``"position"``,
        ``"position_removed"`` (a snapshot no longer lists the symbol), ``"summary"``,
        ``"risk"`` or ``"forts_risk"``; ``obj`` the new model. Returns a remover.
        """
        self._listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return remove

    async def wait_change(self) -> tuple[str, Any]:
        """Wait for the next change; returns ``(kind, obj)`` as :meth:`on_change` gets them."""
        if self._state == "closed":
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
            "state": self._state,
            "stale": self.stale,
            "orders": len(self.orders),
            "stop_orders": len(self.stop_orders),
            "trades": len(self.trades),
            "positions": len(self.positions),
            "snapshots": self.snapshots,
            "down": sorted(self._down),
            "syncing": sorted(self._syncing),
            "streams": {k: s.stats() for k, s in self._streams.items()},
        }

    # -- notifications --------------------------------------------------------------------------

    def _notify(self, kind: str, obj: Any) -> None:
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

    def _event_handler(self, kind: str) -> Callable[[LaneEvent], None]:
        def handle(event: LaneEvent) -> None:
            # A silent subscription subscribed again (docs/protocol.md §9.6) is a gap like an
            # outage.
            if event.kind in ("disconnected", "silent"):
                self._down.add(kind)
            elif event.kind in ("restored", "resubscribed"):
                self._down.discard(kind)
                self._request_sync(kind)

        return handle

    async def _consume(self, kind: str, stream: Stream[Any]) -> None:
        while True:
            try:
                batch = await stream.get_batch()
            except StreamClosed:
                return
            except BufferOverflowError as exc:  # updates were lost: the snapshot fills in
                log.warning("%s: %s; taking a snapshot", self.portfolio, exc)
                self._request_sync(kind)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._state != "closed":
                    log.error("%s: %s stream ended: %s", self.portfolio, kind, exc)
                    self._down.add(kind)
                return
            for obj in batch:
                self._apply_stream(kind, obj)

    def _apply_stream(self, kind: str, obj: Any) -> None:
        if kind == "orders":
            self._merge_order(self.orders, obj, "order")
        elif kind == "stop_orders":
            self._merge_order(self.stop_orders, obj, "stop_order")
        elif kind == "trades":
            self._merge_trade(obj)
        elif kind == "positions":
            self._touch(kind, obj.symbol)
            self._set_position(obj)
        else:
            self._touch(kind, kind)
            self._set_single(kind, obj)

    def _touch(self, kind: str, key: Hashable) -> None:
        touched = self._touched.get(kind)
        if touched is not None:
            touched.add(key)

    # -- merging --------------------------------------------------------------------------------

    def _merge_order(self, store: dict[str, Any], order: Order | StopOrder, kind: str) -> None:
        held = store.get(order.id)
        if held is not None and order_progress(order) <= order_progress(held):
            return
        store[order.id] = order
        self._notify(kind, order)

    def _merge_trade(self, trade: OwnTrade) -> None:
        if trade.id in self.trades:
            return
        self.trades[trade.id] = trade
        self._notify("trade", trade)

    def _set_position(self, position: Position) -> None:
        if _same(self.positions.get(position.symbol), position):
            return
        self.positions[position.symbol] = position
        self._notify("position", position)

    def _set_single(self, kind: str, obj: Any) -> None:
        if _same(getattr(self, kind), obj):
            return
        setattr(self, kind, obj)
        self._notify(kind, obj)

    # -- snapshots ------------------------------------------------------------------------------

    def _request_sync(self, kind: str) -> None:
        """Take a snapshot of ``kind`` (again, once the running one is done, if one runs)."""
        if self._state == "closed":
            return
        self._syncing.add(kind)
        task = self._runners.get(kind)
        if task is not None and not task.done():
            self._pending.add(kind)
            return
        self._runners[kind] = asyncio.get_running_loop().create_task(self._run_sync(kind))

    async def _run_sync(self, kind: str) -> None:
        delay = 0.05
        while True:
            self._pending.discard(kind)
            try:
                await self._sync(kind)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.ready.is_set():
                    raise  # the first snapshot: start() fails
                log.warning(
                    "%s: %s snapshot failed (%s); retrying in %.2f s",
                    self.portfolio,
                    kind,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self._pending.add(kind)
                continue
            if kind not in self._pending:
                break
        self._syncing.discard(kind)

    async def _sync(self, kind: str) -> None:
        """Fetch one kind over HTTP and merge it (see the module docstring for the rules)."""
        http, p, ex = self.client.http, self.portfolio, self.exchange
        self._touched[kind] = set()
        try:
            if kind == "orders":
                for order in await http.orders(p, ex):
                    self._merge_order(self.orders, order, "order")
            elif kind == "stop_orders":
                for stop in await http.stop_orders(p, ex):
                    self._merge_order(self.stop_orders, stop, "stop_order")
            elif kind == "trades":
                for trade in await http.trades(p, ex):
                    self._merge_trade(trade)
            elif kind == "positions":
                snapshot = await http.positions(p, ex)
                touched = self._touched[kind]
                listed = {pos.symbol for pos in snapshot}
                for symbol in [s for s in self.positions if s not in listed | touched]:
                    self._notify("position_removed", self.positions.pop(symbol))
                for pos in snapshot:
                    if pos.symbol not in touched:
                        self._set_position(pos)
            else:
                obj: Summary | Risk | SpectraRisk
                if kind == "summary":
                    obj = await http.summary(p, ex)
                elif kind == "risk":
                    obj = await http.risk(p, ex)
                else:
                    obj = await http.forts_risk(p, ex)
                if kind not in self._touched[kind]:
                    self._set_single(kind, obj)
        finally:
            del self._touched[kind]
        self.snapshots += 1
