"""Local state kept from a stream: :class:`OrderBookView`, the current book of one instrument.

Every order-book message is the whole top-``depth`` book (docs/protocol.md §4.1 and
docs/protocol.md §12.5), so the view is simply replaced per message; what it adds is convenient
reads and a **staleness flag**: between a disconnect and the first book after the restore the view
says ``stale`` so a strategy does not trade on a frozen book.

A whole portfolio kept from its account streams and HTTP snapshots is
:class:`~alorws.client.portfolio.Portfolio`, in its own module.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from ..protocol.enums import Side
from ..protocol.market import BookLevel, OrderBook
from .lane import LaneEvent
from .streams import Stream


__all__ = ["OrderBookView"]


class OrderBookView:
    """The current order book of one instrument, replaced wholesale by each message.

    Feed it with :meth:`apply` (books) and :meth:`on_event` (connection events), or let
    :meth:`follow` do both from a stream. ``stale`` is true before the first book and from a
    disconnect until the first book after the restore.
    """

    def __init__(self) -> None:
        self.book: OrderBook | None = None
        self.stale = True
        self.updates = 0
        self._listeners: list[Callable[[OrderBookView], object]] = []
        self._changed = asyncio.Event()

    # -- feeding --------------------------------------------------------------------------------

    def apply(self, book: OrderBook) -> None:
        """Replace the book (a full snapshot, docs/protocol.md §4.1) and clear ``stale``."""
        self.book = book
        self.stale = False
        self.updates += 1
        self._changed.set()
        for cb in self._listeners:
            cb(self)

    def on_event(self, event: LaneEvent) -> None:
        """Mark the view stale while its connection is down."""
        if event.kind == "disconnected":
            self.stale = True

    def on_change(self, callback: Callable[[OrderBookView], object]) -> None:
        """Call ``callback(view)`` after every new book."""
        self._listeners.append(callback)

    async def wait_update(self) -> OrderBook:
        """Wait for the next book."""
        self._changed.clear()
        await self._changed.wait()
        assert self.book is not None
        return self.book

    async def follow(self, stream: Stream[OrderBook]) -> None:
        """Apply every book of ``stream`` (and its connection events) until it ends."""
        stream.on_event(self.on_event)
        with contextlib.suppress(asyncio.CancelledError):
            async for book in stream:
                self.apply(book)

    # -- reading --------------------------------------------------------------------------------

    @property
    def bids(self) -> list[BookLevel]:
        """Bid levels, best (highest) first."""
        return self.book.bids if self.book is not None else []

    @property
    def asks(self) -> list[BookLevel]:
        """Ask levels, best (lowest) first."""
        return self.book.asks if self.book is not None else []

    @property
    def best_bid(self) -> float | None:
        """The highest bid price, or None."""
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> float | None:
        """The lowest ask price, or None."""
        return self.asks[0].price if self.asks else None

    @property
    def spread(self) -> float | None:
        """Best ask minus best bid, or None if a side is empty."""
        bid, ask = self.best_bid, self.best_ask
        return None if bid is None or ask is None else ask - bid

    @property
    def mid(self) -> float | None:
        """The mid price, or None if a side is empty."""
        bid, ask = self.best_bid, self.best_ask
        return None if bid is None or ask is None else (bid + ask) / 2

    def depth_at(self, price: float, side: Side | str) -> int:
        """Lots resting at exactly ``price`` on ``side`` (0 if none)."""
        levels = self.bids if Side(side) is Side.BUY else self.asks
        return next((lv.volume for lv in levels if lv.price == price), 0)

    def cumulative_volume(self, side: Side | str, levels: int | None = None) -> int:
        """Lots on ``side`` over the best ``levels`` levels (all when None)."""
        book = self.bids if Side(side) is Side.BUY else self.asks
        return sum(lv.volume for lv in book[:levels])

    def volume_to_price(self, side: Side | str, price: float) -> int:
        """Lots on ``side`` at prices at least as good as ``price`` (what a sweep would take)."""
        if Side(side) is Side.BUY:
            return sum(lv.volume for lv in self.bids if lv.price >= price)
        return sum(lv.volume for lv in self.asks if lv.price <= price)

    def snapshot(self) -> dict[str, Any]:
        """A small dict for display: best prices, spread, mid, stale."""
        return {
            "best_bid": self.best_bid,
            "best_ask": self.best_ask,
            "spread": self.spread,
            "mid": self.mid,
            "stale": self.stale,
            "updates": self.updates,
        }
