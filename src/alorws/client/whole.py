"""Keeping streams whole across reconnects: replays are filtered so nothing repeats.

After a reconnect every subscription is re-sent (docs/protocol.md §9.5). Account streams are always
subscribed with ``skipHistory: false``, so the server replays the current orders, trades and
positions (``existing: true``) and whatever changed during the gap arrives with them
(inferred, docs/protocol.md §9.5). These filters pass each item on exactly once:

* orders and stop orders: a state of an order id that is further along than the last one
  delivered (status working < final, then filled quantity): an unchanged replay is dropped, and
  so is an older copy (e.g. a snapshot taken before the last update), so nothing rolls back;
* own trades and anonymous trades: each trade id once;
* positions: a new state of a position (portfolio, exchange, symbol);
* bars: history older than the last bar seen is dropped; the forming bar's updates pass.

``existing`` itself is ignored when comparing states: a replayed copy equals the live one.
A consumer that asked for ``skip_history`` gets nothing from the first replay, but the filter
still remembers it, so later replays do not resurface it as new.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import msgspec

from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, Position, StopOrder
from ..protocol.enums import OrderStatus
from ..protocol.market import Bar, Trade


__all__ = ["StreamFilter", "filter_for"]


def _state(obj: Model) -> tuple[Any, ...]:
    values = msgspec.structs.astuple(obj)
    fields = obj.__struct_fields__
    if "existing" in fields:
        i = fields.index("existing")
        values = values[:i] + values[i + 1 :]
    return values


class StreamFilter:
    """Drops items a consumer has already seen; see the module docstring."""

    __slots__ = (
        "_by_state",
        "_initial",
        "_key",
        "_memory",
        "_progress",
        "_seen",
        "_skip_history",
        "duplicates",
    )

    def __init__(
        self,
        key: Callable[[Any], Hashable],
        *,
        by_state: bool,
        skip_history: bool = False,
        memory: int | None = None,
        progress: Callable[[Any], tuple[Any, ...]] | None = None,
    ) -> None:
        self._key = key
        self._progress = progress
        self._by_state = by_state
        self._skip_history = skip_history
        self._initial = True  # until the first live (existing=False) item
        self._seen: OrderedDict[Hashable, tuple[Any, ...] | None] = OrderedDict()
        self._memory = memory
        self.duplicates = 0

    def is_new(self, obj: Any) -> bool:
        """True if nothing with ``obj``'s key was seen yet."""
        return self._key(obj) not in self._seen

    def restored(self) -> None:
        """The connection was restored: replays from now on are not the initial history."""
        self._initial = False

    def accept(self, obj: Any) -> bool:
        """True if ``obj`` is news to the consumer (and remember it)."""
        key = self._key(obj)
        if self._progress is not None:
            state: tuple[Any, ...] | None = self._progress(obj)
            seen = self._seen.get(key, _MISSING)
            if seen is not _MISSING and not state > seen:
                self.duplicates += 1
                return False
        else:
            state = _state(obj) if self._by_state else None
            seen = self._seen.get(key, _MISSING)
            if seen is not _MISSING and (not self._by_state or seen == state):
                self.duplicates += 1
                return False
        self._seen[key] = state
        if self._memory is not None:
            self._seen.move_to_end(key)
            if len(self._seen) > self._memory:
                self._seen.popitem(last=False)
        if getattr(obj, "existing", False):
            return not (self._skip_history and self._initial)
        self._initial = False
        return True


_MISSING: Any = object()
_FINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED})


def _order_progress(order: Any) -> tuple[int, int]:
    """How far an order has got: final beats working, then more lots filled."""
    return (1 if order.status in _FINAL else 0, order.filled_qty_batch or 0)


class _BarFilter(StreamFilter):
    """Bars: drop replayed history older than the newest bar seen; same time = an update."""

    __slots__ = ("_last", "_last_time")

    def __init__(self) -> None:
        super().__init__(lambda b: b.time, by_state=True)
        self._last_time: int | None = None
        self._last: Bar | None = None

    def accept(self, obj: Any) -> bool:
        bar: Bar = obj
        if self._last_time is not None and bar.time < self._last_time:
            self.duplicates += 1
            return False
        if bar == self._last:
            self.duplicates += 1
            return False
        self._last_time = bar.time
        self._last = bar
        return True


def filter_for(model: type[Model], *, skip_history: bool = False) -> StreamFilter | None:
    """The filter that keeps a stream of ``model`` whole across restores, or None (state
    streams need none: each message replaces the last)."""
    if model is Order or model is StopOrder:
        return StreamFilter(
            lambda o: o.id, by_state=True, skip_history=skip_history, progress=_order_progress
        )
    if model is OwnTrade:
        return StreamFilter(lambda t: t.id, by_state=False, skip_history=skip_history)
    if model is Position:
        return StreamFilter(
            lambda p: (p.portfolio, p.exchange, p.symbol), by_state=True, skip_history=skip_history
        )
    if model is Trade:
        return StreamFilter(lambda t: t.id, by_state=False, memory=100_000)
    if model is Bar:
        return _BarFilter()
    return None
