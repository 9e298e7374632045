"""Local state: the order book view (pure reads, and live staleness across a drop)."""

from __future__ import annotations

import asyncio

import pytest

from alorws.client import AlorClient, LaneEvent
from alorws.client.state import OrderBookView
from alorws.protocol import BookLevel, OrderBook, Side
from alorws.sim.app import Simulator


def _book(bids: list[tuple[float, int]], asks: list[tuple[float, int]]) -> OrderBook:
    return OrderBook(
        bids=[BookLevel(price=p, volume=v) for p, v in bids],
        asks=[BookLevel(price=p, volume=v) for p, v in asks],
    )


def test_reads_on_a_book() -> None:
    """Best prices, spread, mid, depth at price and cumulative volumes."""
    view = OrderBookView()
    assert view.stale and view.best_bid is None and view.spread is None
    view.apply(_book([(100.0, 5), (99.5, 7), (99.0, 1)], [(100.5, 3), (101.0, 4)]))
    assert not view.stale
    assert (view.best_bid, view.best_ask, view.spread, view.mid) == (100.0, 100.5, 0.5, 100.25)
    assert view.depth_at(99.5, Side.BUY) == 7 and view.depth_at(99.7, "buy") == 0
    assert view.cumulative_volume("buy") == 13 and view.cumulative_volume(Side.SELL, 1) == 3
    assert view.volume_to_price("sell", 100.9) == 3 and view.volume_to_price("buy", 99.5) == 12


def test_a_new_book_replaces_the_old_one_wholesale() -> None:
    """Each message replaces the whole book; an empty side has no best price."""
    view = OrderBookView()
    view.apply(_book([(100.0, 5)], [(100.5, 3)]))
    view.apply(_book([(99.0, 1)], []))
    assert view.bids == [BookLevel(price=99.0, volume=1)] and view.best_ask is None
    assert view.mid is None and view.updates == 2


def test_disconnect_marks_stale_until_the_next_book() -> None:
    """A disconnect event makes the view stale; the next book clears it."""
    view = OrderBookView()
    view.apply(_book([(1.0, 1)], [(2.0, 1)]))
    view.on_event(LaneEvent("disconnected", 1, reason="test"))
    assert view.stale
    view.on_event(LaneEvent("restored", 1, downtime=0.1))
    assert view.stale
    view.apply(_book([(1.0, 1)], [(2.0, 1)]))
    assert not view.stale


@pytest.mark.parametrize("depth", [5])
async def test_live_view_goes_stale_across_a_drop(
    client: AlorClient, sim: Simulator, depth: int
) -> None:
    """Following a live stream, the view is stale during a drop and fresh after the restore."""
    view = OrderBookView()
    async with client.order_book("SBER", depth=depth) as stream:
        task = asyncio.create_task(view.follow(stream))
        async with asyncio.timeout(10):
            await view.wait_update()
        assert not view.stale and 0 < len(view.bids) <= depth
        went_stale = asyncio.Event()
        stream.on_event(lambda e: went_stale.set() if e.kind == "disconnected" else None)
        sim.faults.drop(code=1006)
        async with asyncio.timeout(10):
            await went_stale.wait()
            assert view.stale
            await view.wait_update()
        assert not view.stale
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
