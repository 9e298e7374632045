"""The trading engine: accounts, fills, resting orders, stops, updates, rejections, ground truth."""

from __future__ import annotations

import itertools
import pathlib
from typing import Any

import msgspec
import pytest

from alorws.protocol.account import Order, OwnTrade, Position, SpectraRisk, StopOrder, Summary
from alorws.protocol.commands import (
    CreateLimit,
    CreateMarket,
    CreateStop,
    CreateStopLimit,
    DeleteLimit,
    DeleteStop,
    InstrumentRef,
    UpdateLimit,
    UpdateStop,
    User,
)
from alorws.protocol.enums import Condition, Exchange, OrderStatus, RiskStatus, Side, TimeInForce
from alorws.sim.accounts import random_refresh_token, seeded_refresh_token
from alorws.sim.engine import AccountEvent, CommandResult, TradingEngine
from alorws.sim.market import SyntheticMarket, TradePrinted


_guids = itertools.count(1)
D, G, F = "D00001", "G00001", "7500001"


def ref(symbol: str, board: str | None = None) -> InstrumentRef:
    if board is None:
        return InstrumentRef(symbol=symbol, exchange=Exchange.MOEX)
    return InstrumentRef(symbol=symbol, exchange=Exchange.MOEX, instrument_group=board)


def market_order(symbol: str, side: Side, lots: int, portfolio: str = D, **kw: Any) -> CreateMarket:
    return CreateMarket(
        guid=f"g{next(_guids)}",
        user=User(portfolio=portfolio),
        side=side,
        quantity=lots,
        instrument=ref(symbol),
        **kw,
    )


def limit_order(
    symbol: str, side: Side, lots: int, price: float, portfolio: str = D, **kw: Any
) -> CreateLimit:
    return CreateLimit(
        guid=f"g{next(_guids)}",
        user=User(portfolio=portfolio),
        side=side,
        quantity=lots,
        price=price,
        instrument=ref(symbol),
        **kw,
    )


def streams(result: CommandResult | list[AccountEvent]) -> list[str]:
    events = result.events if isinstance(result, CommandResult) else result
    return [e.stream for e in events]


def payloads(events: list[AccountEvent], kind: type[Any]) -> list[Any]:
    return [e.payload for e in events if isinstance(e.payload, kind)]


@pytest.fixture
def market() -> SyntheticMarket:
    """A market that moves only when a test makes it."""
    return SyntheticMarket(seed=1, events_per_second=0, history_days=0)


@pytest.fixture
def engine(market: SyntheticMarket) -> TradingEngine:
    """An engine with one account (D00001, G00001, 7500001), 1 000 000 RUB each."""
    e = TradingEngine(market, mark_to_market_ms=None)
    e.add_account("trader", refresh_token="rt-trader")
    return e


# -- accounts ----------------------------------------------------------------------------------


def test_accounts_get_deterministic_portfolios_and_tokens(market: SyntheticMarket) -> None:
    """Three portfolios per agreement in claim order (D, G, 7500), ids from one counter."""
    e = TradingEngine(market)
    a = e.add_account("alice")
    b = e.add_account("bob", agreements=2, cash=5_000.0)
    assert a.portfolios == ["D00001", "G00001", "7500001"]
    assert b.portfolios == ["D00002", "G00002", "7500002", "D00003", "G00003", "7500003"]
    assert len(b.agreements) == 2 and b.cash["7500003"] == 5_000.0
    assert e.account_for_token(a.refresh_token) is a
    assert e.account_for_portfolio("G00003") is b
    assert e.account_for_portfolio("D99999") is None and e.account_for_token("x") is None
    assert TradingEngine(SyntheticMarket()).add_account("alice").refresh_token == a.refresh_token
    with pytest.raises(ValueError, match="exists"):
        e.add_account("alice")
    with pytest.raises(ValueError, match="refresh token"):
        e.add_account("carol", refresh_token=a.refresh_token)


def test_refresh_tokens_come_from_the_engines_factory(market: SyntheticMarket) -> None:
    """An account added without a refresh token gets the factory's: seeded by default (the
    same in every run), random when asked (as a running simulator does); UUID-shaped."""
    seen: list[tuple[str, int]] = []

    def factory(login: str, n: int) -> str:
        seen.append((login, n))
        return "rt"

    e = TradingEngine(market, refresh_tokens=factory)
    e.add_account("alice")
    e.add_account("bob", refresh_token="given")
    assert seen == [("alice", 0)] and e.account_for_token("rt") is not None
    assert (
        seeded_refresh_token("alice", 0) == TradingEngine(market).add_account("alice").refresh_token
    )
    one, two = random_refresh_token("alice", 0), random_refresh_token("alice", 0)
    assert one != two
    for token in (one, seeded_refresh_token("bob", 1)):
        assert [len(part) for part in token.split("-")] == [8, 4, 4, 4, 12]
        int(token.replace("-", ""), 16)


def test_fresh_portfolio_views(engine: TradingEngine) -> None:
    """Before any trade: only the money position, a full summary, risks; FORTS risks on 7500…."""
    (money,) = engine.positions(D)
    assert (money.symbol, money.is_currency, money.qty_units) == ("RUB", True, 1_000_000.0)
    s = engine.summary(D)
    assert s.buying_power == s.portfolio_evaluation == 1_000_000.0
    assert s.buying_power_in("RUB") == 1_000_000.0
    assert engine.risk(D).risk_status is RiskStatus.OK
    assert engine.spectra_risk(D) is None
    forts = engine.spectra_risk(F)
    assert forts is not None and forts.money_free == 1_000_000.0
    assert not engine.orders(D) and not engine.trades(D) and not engine.stop_orders(D)
    with pytest.raises(KeyError):
        engine.summary("D99999")


# -- fills -------------------------------------------------------------------------------------


def test_market_buy_fills_and_moves_position_and_money(
    market: SyntheticMarket, engine: TradingEngine
) -> None:
    """A market buy fills at the ask: order, trade, positions, summary, risks in one burst."""
    ask = market.order_book("SBER", 1).asks[0]
    lots = min(5, ask.volume)
    r = engine.execute(D, market_order("SBER", Side.BUY, lots), market.now_ms)
    assert r.ok and r.http_code == 200
    assert r.message == f"An order '{r.order_number}' has been created."
    assert streams(r) == [
        "orders",  # working
        "orders",  # filled
        "trades",
        "positions",
        "positions",
        "summaries",
        "risks",
    ]
    working, filled = payloads(r.events, Order)
    assert working.status is OrderStatus.WORKING and working.id == r.order_number
    assert filled.status is OrderStatus.FILLED and filled.filled_qty_batch == lots
    (trade,) = payloads(r.events, OwnTrade)
    assert (trade.order_no, trade.price, trade.qty_batch) == (r.order_number, ask.price, lots)
    assert trade.qty_units == lots * 10 and trade.side is Side.BUY
    value = ask.price * lots * 10
    assert trade.volume == pytest.approx(value)
    sber, money = payloads(r.events, Position)
    assert (sber.symbol, sber.qty_units, sber.qty_batch, sber.avg_price) == (
        "SBER",
        lots * 10.0,
        lots,
        ask.price,
    )
    assert money.is_currency
    assert money.qty_units == pytest.approx(1_000_000 - value - trade.commission, abs=0.01)
    (summary,) = payloads(r.events, Summary)
    assert summary.buying_power == money.qty_units
    # The snapshots agree with what was published.
    assert engine.orders(D) == [filled]
    assert engine.trades(D) == [trade]
    assert engine.positions(D) == [money, sber]
    # The anonymous tape shows the fill on the next step.
    printed = [e.trade for e in market.step(market.now_ms + 1) if isinstance(e, TradePrinted)]
    assert [(t.price, t.qty, t.side) for t in printed] == [(ask.price, lots, Side.BUY)]


def test_ground_truth_matches_published_events(
    market: SyntheticMarket, engine: TradingEngine, tmp_path: pathlib.Path
) -> None:
    """Every order event, own trade and position change is in the ground truth, in order."""
    path = tmp_path / "truth.jsonl"
    engine.ground_truth_path = path
    now = market.now_ms
    published: list[AccountEvent] = []
    for cmd in (
        market_order("GAZP", Side.BUY, 3),
        market_order("GAZP", Side.SELL, 5),  # closes 3 lots and opens a short of 2
        limit_order("GAZP", Side.BUY, 1, market.best("GAZP")[0]),
    ):
        result = engine.execute(D, cmd, now)
        assert result.ok, result.message
        published += result.events
    tracked = [e for e in published if e.stream in {"orders", "stop_orders", "trades", "positions"}]
    truth = engine.ground_truth
    assert [r["seq"] for r in truth] == list(range(1, len(truth) + 1))
    assert [(r["portfolio"], r["stream"]) for r in truth] == [
        (e.portfolio, e.stream) for e in tracked
    ]
    assert [r["data"] for r in truth] == [msgspec.to_builtins(e.payload) for e in tracked]
    assert all(r["ts"] == now for r in truth)
    lines = path.read_bytes().splitlines()
    assert [msgspec.json.decode(line) for line in lines] == msgspec.json.decode(
        msgspec.json.encode(truth)
    )
    gazp = [p for p in engine.positions(D) if p.symbol == "GAZP"]
    assert gazp[0].qty_batch == -2
    assert engine.risk(D).has_negative_quantity


def test_short_then_cover_books_the_result(market: SyntheticMarket, engine: TradingEngine) -> None:
    """Selling then buying back returns the position to zero; money reflects both prices."""
    now = market.now_ms
    sold = engine.execute(D, market_order("LKOH", Side.SELL, 2), now)
    bought = engine.execute(D, market_order("LKOH", Side.BUY, 2), now)
    assert sold.ok and bought.ok
    (s,) = payloads(sold.events, OwnTrade)
    (b,) = payloads(bought.events, OwnTrade)
    pos = next(p for p in engine.positions(D) if p.symbol == "LKOH")
    assert pos.qty_units == 0 and pos.unrealised_pl == 0
    money = engine.positions(D)[0].qty_units
    assert money == pytest.approx(
        1_000_000 + 2 * s.price - 2 * b.price - s.commission - b.commission, abs=0.01
    )


def test_forts_fill_blocks_margin_and_publishes_forts_risks(
    market: SyntheticMarket, engine: TradingEngine
) -> None:
    """A Si buy on 7500… moves money by the fee only and publishes SpectraRisk too."""
    r = engine.execute(F, market_order("SiZ6", Side.BUY, 2, F), market.now_ms)
    assert r.ok, r.message
    assert streams(r)[-3:] == ["summaries", "risks", "spectra_risks"]
    (risk,) = payloads(r.events, SpectraRisk)
    margin = market.instruments["SiZ6"].margin_buy
    assert margin is not None
    assert risk.money_blocked == pytest.approx(2 * margin)
    assert risk.fee == 2.0
    money = engine.positions(F)[0]
    assert money.qty_units == 1_000_000 - 2.0
    summary = engine.summary(F)
    assert summary.commission is None and summary.initial_margin == pytest.approx(2 * margin)


def test_bond_trade_pays_accrued_interest(market: SyntheticMarket, engine: TradingEngine) -> None:
    """An OFZ buy costs price % of face plus accrued interest per bond."""
    r = engine.execute(D, market_order("SU26238RMFS4", Side.BUY, 10), market.now_ms)
    assert r.ok, r.message
    (t,) = payloads(r.events, OwnTrade)
    assert t.price is not None and t.accrued_int is not None and t.accrued_int > 0
    assert t.volume == pytest.approx(t.price / 100 * 1000 * 10, abs=0.01)
    cash = engine.positions(D)[0].qty_units
    assert cash == pytest.approx(1_000_000 - t.volume - t.accrued_int - t.commission, abs=0.01)


# -- resting orders ----------------------------------------------------------------------------


def test_limit_order_rests_then_fills_when_the_tape_trades_through(
    market: SyntheticMarket, engine: TradingEngine
) -> None:
    """A passive buy rests; a big seller sweeping through its price fills it at its limit."""
    bid = market.order_book("SBER", 1).bids[0].price
    r = engine.execute(D, limit_order("SBER", Side.BUY, 3, bid), market.now_ms)
    assert r.ok
    assert streams(r) == ["orders", "summaries"]  # resting: buying power is reserved
    oid = r.order_number
    assert engine.summary(D).buying_power == pytest.approx(1_000_000 - bid * 30)
    assert engine.on_market(market.step(market.now_ms + 1), market.now_ms) == []
    # Someone else sells 5 levels deep: the tape prints below our bid.
    market.take("SBER", Side.SELL, market.liquidity("SBER", Side.SELL, bid - 0.05), None, 0)
    later = market.now_ms + 10
    events = engine.on_market(market.step(later), later)
    # One fill, published in one step, in the documented order.
    assert streams(events) == ["orders", "trades", "positions", "positions", "summaries", "risks"]
    final = engine.orders(D)[-1]
    assert final.id == oid and final.status is OrderStatus.FILLED
    trades = engine.trades(D)
    assert sum(t.qty_batch or 0 for t in trades) == 3
    assert [t.price for t in trades] == [bid]  # filled at its limit


def test_limit_order_fills_when_the_book_reaches_it(
    market: SyntheticMarket, engine: TradingEngine
) -> None:
    """A resting sell fills from the book once the best bid comes up to its price."""
    bid, ask = market.best("VTBR")
    price = round(ask + 0.02, 2)
    r = engine.execute(D, limit_order("VTBR", Side.SELL, 1, price), market.now_ms)
    assert r.ok and engine.orders(D)[0].status is OrderStatus.WORKING
    # Buyers lift the offers up to our price: the ask moves above it, the bids follow.
    market.take("VTBR", Side.BUY, market.liquidity("VTBR", Side.BUY, price), None, 0)
    assert market.best("VTBR")[0] == bid < price < market.best("VTBR")[1]
    for _ in range(200):
        events = market.burst("VTBR", 5)
        engine.on_market(events, market.now_ms)
        if engine.orders(D)[0].status is OrderStatus.FILLED:
            break
    assert engine.orders(D)[0].status is OrderStatus.FILLED
    (t,) = engine.trades(D)
    assert t.price is not None and t.price >= price and t.side is Side.SELL


def test_oneday_orders_expire_at_the_end_of_the_day(
    market: SyntheticMarket, engine: TradingEngine
) -> None:
    """A working oneday order is cancelled once its end time (23:59:59.999 UTC) passes."""
    bid = market.best("GAZP")[0]
    engine.execute(D, limit_order("GAZP", Side.BUY, 1, round(bid - 1, 2)), market.now_ms)
    assert engine.orders(D)[0].end_time == "2025-06-23T23:59:59.9990000Z"
    assert engine.on_market([], market.now_ms + 3_600_000) == []
    events = engine.on_market([], market.now_ms + 86_400_000)
    assert [o.status for o in payloads(events, Order)] == [OrderStatus.CANCELED]


def test_day_order_lifetime_replaces_the_end_of_the_day(market: SyntheticMarket) -> None:
    """With day_order_lifetime_ms (the tests' simulators), a oneday order placed a second
    before midnight outlives it and expires only when its lifetime has passed."""
    e = TradingEngine(market, mark_to_market_ms=None, day_order_lifetime_ms=3_600_000)
    e.add_account("trader", refresh_token="rt-trader")
    midnight = market.now_ms - market.now_ms % 86_400_000 + 86_400_000
    bid = market.best("GAZP")[0]
    e.execute(D, limit_order("GAZP", Side.BUY, 1, round(bid - 1, 2)), midnight - 1000)
    assert e.orders(D)[0].end_time == "2025-06-24T00:59:59.0000000Z"
    assert e.on_market([], midnight + 1000) == []  # past midnight: still working
    events = e.on_market([], midnight + 3_600_000)
    assert [o.status for o in payloads(events, Order)] == [OrderStatus.CANCELED]


# -- time in force -----------------------------------------------------------------------------


def test_fill_or_kill_fills_all_or_nothing(market: SyntheticMarket, engine: TradingEngine) -> None:
    """fillorkill: cancelled without a trade when the book is short, filled when it is not."""
    ask = market.order_book("ROSN", 1).asks[0]
    fok = TimeInForce.FILL_OR_KILL
    r = engine.execute(
        D, limit_order("ROSN", Side.BUY, ask.volume + 1, ask.price, time_in_force=fok), 0
    )
    assert r.ok and streams(r) == ["orders", "orders"]
    assert payloads(r.events, Order)[-1].status is OrderStatus.CANCELED
    assert market.order_book("ROSN", 1).asks[0] == ask  # the book was not touched
    r = engine.execute(
        D, limit_order("ROSN", Side.BUY, ask.volume, ask.price, time_in_force=fok), 0
    )
    assert payloads(r.events, Order)[-1].status is OrderStatus.FILLED
    assert engine.trades(D)[-1].qty_batch == ask.volume


def test_immediate_or_cancel_keeps_the_fill_and_cancels_the_rest(
    market: SyntheticMarket, engine: TradingEngine
) -> None:
    """immediateorcancel: what is there at the limit fills, the rest is cancelled."""
    ask = market.order_book("MGNT", 1).asks[0]
    ioc = TimeInForce.IMMEDIATE_OR_CANCEL
    r = engine.execute(
        D, limit_order("MGNT", Side.BUY, ask.volume + 4, ask.price, time_in_force=ioc), 0
    )
    orders = payloads(r.events, Order)
    assert orders[-1].status is OrderStatus.CANCELED
    assert orders[-1].filled_qty_batch == ask.volume
    assert engine.orders(D)[-1].filled_qty_batch == ask.volume
    assert "summaries" in streams(r)


def test_book_or_cancel_never_takes_liquidity(
    market: SyntheticMarket, engine: TradingEngine
) -> None:
    """bookorcancel: a marketable order is cancelled, a passive one rests."""
    bid, ask = market.best("YDEX")
    boc = TimeInForce.BOOK_OR_CANCEL
    r = engine.execute(D, limit_order("YDEX", Side.BUY, 1, ask, time_in_force=boc), 0)
    assert payloads(r.events, Order)[-1].status is OrderStatus.CANCELED
    assert engine.trades(D) == []
    r = engine.execute(D, limit_order("YDEX", Side.BUY, 1, bid, time_in_force=boc), 0)
    assert payloads(r.events, Order)[-1].status is OrderStatus.WORKING


def test_market_order_larger_than_the_book_is_partly_filled(
    market: SyntheticMarket, engine: TradingEngine
) -> None:
    """A market order gets the 50 levels shown; the rest is cancelled."""
    engine.add_account("whale", cash=1e15)
    depth = market.liquidity("MGNT", Side.BUY)
    r = engine.execute("D00002", market_order("MGNT", Side.BUY, depth + 10, "D00002"), 0)
    last = payloads(r.events, Order)[-1]
    assert last.status is OrderStatus.CANCELED and last.filled_qty_batch == depth
    assert len(payloads(r.events, OwnTrade)) == 50


# -- stops -------------------------------------------------------------------------------------


def test_stop_order_fires_on_a_print_and_places_a_market_order(
    market: SyntheticMarket, engine: TradingEngine
) -> None:
    """A stop (sell if less than a trigger above the market) fires on the next print."""
    before = market.burst("SBER", 20)  # prints made before the stop exists
    last = market.last_price("SBER")
    cmd = CreateStop(
        guid="stop-1",
        user=User(portfolio=D),
        side=Side.SELL,
        quantity=2,
        instrument=ref("SBER", "TQBR"),
        trigger_price=round(last + 1, 2),
        condition=Condition.LESS,
    )
    r = engine.execute(D, cmd, market.now_ms)
    assert r.ok and streams(r) == ["stop_orders"]
    (stop,) = payloads(r.events, StopOrder)
    assert (stop.id, stop.status, stop.stop_price, stop.price) == (
        r.order_number,
        OrderStatus.WORKING,
        round(last + 1, 2),
        0.0,
    )
    assert any(isinstance(e, TradePrinted) for e in before)
    assert engine.on_market(before, market.now_ms) == []  # old prints do not fire it
    events = engine.on_market(market.burst("SBER", 20), market.now_ms)
    assert streams(events)[:3] == ["stop_orders", "orders", "orders"]
    fired = payloads(events, StopOrder)[0]
    assert fired.status is OrderStatus.FILLED and fired.exchange_order_id is not None
    order = engine.orders(D)[-1]
    assert order.id == fired.exchange_order_id and order.status is OrderStatus.FILLED
    assert order.side is Side.SELL and order.qty_batch == 2
    assert engine.stop_orders(D) == [fired]


def test_stop_limit_waits_for_its_condition(market: SyntheticMarket, engine: TradingEngine) -> None:
    """A stop-limit far from the market stays working; update replaces it with a new id."""
    last = market.last_price("GAZP")
    cmd = CreateStopLimit(
        guid="stop-2",
        user=User(portfolio=D),
        side=Side.BUY,
        quantity=1,
        instrument=ref("GAZP"),
        price=round(last + 6, 2),
        trigger_price=round(last + 5, 2),
        condition=Condition.MORE_OR_EQUAL,
        time_in_force=TimeInForce.GOOD_TILL_CANCELLED,
    )
    r = engine.execute(D, cmd, market.now_ms)
    assert r.ok
    engine.on_market(market.burst("GAZP", 30), market.now_ms)
    (stop,) = engine.stop_orders(D)
    assert (
        stop.status is OrderStatus.WORKING and stop.time_in_force is TimeInForce.GOOD_TILL_CANCELLED
    )
    update = UpdateStop(
        guid="stop-3",
        user=User(portfolio=D),
        order_id=stop.id,
        side=Side.BUY,
        quantity=1,
        instrument=ref("GAZP"),
        trigger_price=round(last - 5, 2),
        condition=Condition.LESS_OR_EQUAL,
    )
    u = engine.execute(D, update, market.now_ms)
    assert u.ok and u.message == f"An order has been updated. New order Id is '{u.order_number}'."
    old, new = engine.stop_orders(D)
    assert old.status is OrderStatus.CANCELED and new.id == u.order_number != old.id
    d = engine.execute(
        D,
        DeleteStop(guid="stop-4", user=User(portfolio=D), order_id=new.id, exchange=Exchange.MOEX),
        0,
    )
    assert d.ok and d.message == f"An order '{new.id}' has been deleted."
    assert engine.stop_orders(D)[-1].status is OrderStatus.CANCELED
    again = engine.execute(
        D,
        DeleteStop(guid="stop-5", user=User(portfolio=D), order_id=new.id, exchange=Exchange.MOEX),
        0,
    )
    assert again.http_code == 400


# -- update and delete -------------------------------------------------------------------------


def test_update_cancels_and_replaces_with_a_new_id(
    market: SyntheticMarket, engine: TradingEngine
) -> None:
    """update:limit cancels the order and places a new one with a new id (docs/protocol.md §6.3,
    TV-19)."""
    bid = market.best("LKOH")[0]
    created = engine.execute(D, limit_order("LKOH", Side.BUY, 3, bid - 10, comment="tv19"), 0)
    old_id = created.order_number
    assert old_id is not None
    update = UpdateLimit(
        guid="u-1",
        user=User(portfolio=D),
        order_id=old_id,
        side=Side.BUY,
        quantity=3,
        price=bid - 5,
        instrument=ref("LKOH"),
    )
    r = engine.execute(D, update, 0)
    assert r.ok and r.order_number is not None and r.order_number != old_id
    assert r.message == f"An order has been updated. New order Id is '{r.order_number}'."
    cancelled, placed = payloads(r.events, Order)[:2]
    assert (cancelled.id, cancelled.status) == (old_id, OrderStatus.CANCELED)
    assert (placed.id, placed.status, placed.price) == (
        r.order_number,
        OrderStatus.WORKING,
        bid - 5,
    )
    assert placed.comment == "tv19" and placed.time_in_force is TimeInForce.ONE_DAY
    # The old id is gone for good.
    again = engine.execute(D, msgspec.structs.replace(update, guid="u-2"), 0)
    assert again.http_code == 400 and "canceled" in again.message
    d = engine.execute(
        D,
        DeleteLimit(guid="d-1", user=User(portfolio=D), order_id=placed.id, exchange=Exchange.MOEX),
        0,
    )
    assert d.ok and d.message == f"An order '{placed.id}' has been deleted."
    assert d.order_number == placed.id
    assert [o.status for o in engine.orders(D)] == [OrderStatus.CANCELED, OrderStatus.CANCELED]
    assert engine.summary(D).buying_power == 1_000_000.0  # reservation released


# -- rejections --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("portfolio", "command", "needle"),
    [
        ("D99999", lambda: market_order("SBER", Side.BUY, 1), "Portfolio"),
        (D, lambda: market_order("NOPE", Side.BUY, 1), "not found"),
        (D, lambda: CreateMarket(
            guid="b", user=User(portfolio=D), side=Side.BUY, quantity=1,
            instrument=ref("SBER", "TQOB"),
        ), "board"),
        (D, lambda: market_order("SiZ6", Side.BUY, 1), "FORTS"),
        (F, lambda: market_order("SBER", Side.BUY, 1, F), "FOND"),
        (D, lambda: market_order("SBER", Side.BUY, 2_000_000), "Invalid or unsupported quantity"),
        (D, lambda: limit_order("SBER", Side.BUY, 1, 312.415), "price step"),
        (D, lambda: limit_order("SBER", Side.BUY, 1, 1.0), "price band"),
        (D, lambda: market_order("LKOH", Side.BUY, 500), "Insufficient funds"),
        (F, lambda: market_order("SiZ6", Side.SELL, 200, F), "Insufficient funds"),
        (D, lambda: limit_order("SBER", Side.BUY, 2, 312.0, iceberg_fixed=5), "iceberg"),
        (D, lambda: DeleteLimit(
            guid="d", user=User(portfolio=D), order_id="42", exchange=Exchange.MOEX
        ), "'42' is not found"),
        (D, lambda: UpdateLimit(
            guid="u", user=User(portfolio=D), order_id="42", side=Side.BUY, quantity=1,
            price=312.0, instrument=ref("SBER"),
        ), "'42' is not found"),
        (D, lambda: DeleteStop(
            guid="d", user=User(portfolio=D), order_id="42", exchange=Exchange.MOEX
        ), "'42' is not found"),
        (D, lambda: CreateStop(
            guid="s", user=User(portfolio=D), side=Side.SELL, quantity=1, instrument=ref("SBER"),
            trigger_price=300.0, condition=Condition.LESS, stop_end_unix_time=1,
        ), "in the past"),
        (D, lambda: CreateMarket(
            guid="m", user=User(portfolio=D), side=Side.BUY, quantity=1, instrument=ref("SBER"),
            time_in_force=TimeInForce.BOOK_OR_CANCEL,
        ), "bookorcancel"),
    ],
)  # fmt: skip
def test_bad_commands_are_rejected_with_400(
    market: SyntheticMarket, engine: TradingEngine, portfolio: str, command: Any, needle: str
) -> None:
    """Invalid commands get 400, a message naming the problem, no order and no events."""
    r = engine.execute(portfolio, command(), market.now_ms)
    assert (r.http_code, r.order_number, r.events) == (400, None, [])
    assert needle in r.message
    assert engine.orders(D) == [] and engine.ground_truth == []


def test_closing_a_position_needs_no_buying_power(
    market: SyntheticMarket, engine: TradingEngine
) -> None:
    """A buy that covers a short is accepted even when the cash would not pay for a new one."""
    engine.add_account("poor", cash=10_000.0)
    assert engine.execute("D00002", market_order("LKOH", Side.SELL, 3, "D00002"), 0).ok
    assert not engine.execute("D00002", market_order("LKOH", Side.BUY, 10, "D00002"), 0).ok
    assert engine.execute("D00002", market_order("LKOH", Side.BUY, 3, "D00002"), 0).ok


def test_mark_to_market_republishes_summaries(market: SyntheticMarket) -> None:
    """With a position open, trading in its instrument re-publishes summary and risks."""
    e = TradingEngine(market, mark_to_market_ms=1000)
    e.add_account("mtm")
    now = market.now_ms
    assert e.execute(D, market_order("SBER", Side.BUY, 1), now).ok
    assert e.on_market(market.burst("SBER", 10), now + 10) == []  # too soon
    events = e.on_market(market.burst("SBER", 10), now + 2000)
    assert streams(events) == ["summaries", "risks"]
    assert e.on_market(market.burst("GAZP", 10), now + 5000) == []  # nothing held in GAZP
