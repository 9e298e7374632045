"""The synthetic market: determinism, book shape, tape, candles, status changes and liquidity."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import msgspec
import pytest

from alorws.protocol._model import format_class, to_wire
from alorws.protocol.enums import Format, Side, TradingStatus
from alorws.protocol.market import Bar, InstrumentState, Quote, Trade
from alorws.sim.market import (
    DEFAULT_START_MS,
    TIMEFRAMES,
    BookUpdated,
    MarketEvent,
    StatusChanged,
    SyntheticMarket,
    TradePrinted,
    bucket_start,
    iso_time,
)


START = DEFAULT_START_MS


def run(market: SyntheticMarket, seconds: float, step_ms: int = 250) -> list[MarketEvent]:
    """Step ``market`` forward by ``seconds`` in ``step_ms`` increments; all events."""
    events: list[MarketEvent] = []
    end = market.now_ms + int(seconds * 1000)
    for t in range(market.now_ms + step_ms, end + 1, step_ms):
        events += market.step(t)
    return events


def trades_of(events: list[MarketEvent], symbol: str | None = None) -> list[Trade]:
    return [
        e.trade
        for e in events
        if isinstance(e, TradePrinted) and (symbol is None or e.trade.symbol == symbol)
    ]


@pytest.fixture(scope="module")
def lively() -> tuple[SyntheticMarket, list[MarketEvent]]:
    """One market run for a simulated minute, shared by the read-only tests."""
    market = SyntheticMarket(seed=3)
    return market, run(market, 60)


@pytest.fixture(scope="module")
def no_history() -> SyntheticMarket:
    """A market without history run for 90 s: its candles come from its tape only."""
    market = SyntheticMarket(seed=9, history_days=0)
    run(market, 90, step_ms=1000)
    return market


# -- reference data ----------------------------------------------------------------------------


def test_catalogue_has_the_required_instruments() -> None:
    """SBER/GAZP/LKOH on TQBR, the OFZ on TQOB, a Si future on RFUD and USD on CETS, ~12 in all."""
    m = SyntheticMarket()
    assert len(m.instruments) >= 12
    for symbol in ("SBER", "GAZP", "LKOH"):
        info = m.instruments[symbol]
        assert (info.exchange, info.board, info.market) == ("MOEX", "TQBR", "FOND")
    bond = m.instruments["SU26238RMFS4"]
    assert (bond.board, bond.is_bond, bond.face_value) == ("TQOB", True, 1000.0)
    si = m.instruments["SiZ6"]
    assert (si.board, si.market, si.lot_size, si.price_step) == ("RFUD", "FORTS", 1, 1.0)
    assert si.margin_buy and si.margin_sell
    usd = m.instruments["USD000UTSTOM"]
    assert (usd.board, usd.market, usd.lot_size) == ("CETS", "CURR", 1000)
    for info in m.instruments.values():
        assert info.price_min < m.last_price(info.symbol) < info.price_max
        assert info.on_grid(m.last_price(info.symbol))


def test_find_is_case_insensitive_and_checks_exchange_and_board() -> None:
    """find() matches the ticker in any case; a wrong exchange or board gives None."""
    m = SyntheticMarket()
    assert m.find("sber") is m.instruments["SBER"]
    assert m.find("SIZ6", "moex", "rfud") is m.instruments["SiZ6"]
    assert m.find("SBER", "SPBX") is None
    assert m.find("SBER", "MOEX", "TQOB") is None
    assert m.find("NOPE") is None
    assert [i.symbol for i in m.search("сбер")] == ["SBER", "SBERP"]


@pytest.mark.parametrize("fmt", list(Format))
def test_security_object_has_the_format_keys(fmt: Format) -> None:
    """The /md/v2/Securities object uses each format's keys (docs/protocol.md §8.6)."""
    m = SyntheticMarket()
    sec = m.security("SBER", fmt)
    expected = {
        Format.SIMPLE: {"symbol", "shortname", "lotsize", "minstep", "pricestep", "primary_board"},
        Format.HEAVY: {"symbol", "shortName", "lotSize", "minStep", "primaryBoard", "roundTo"},
        Format.SLIM: {"sym", "n", "lot", "stp", "stppx", "pbd", "st", "sti", "cfi"},
    }[fmt]
    assert expected <= set(sec)
    if fmt is Format.SLIM:
        assert "market" not in sec
    else:
        assert sec["market"] == "FOND"
    status_key = "st" if fmt is Format.SLIM else "tradingStatus"
    assert sec[status_key] == TradingStatus.NORMAL_TRADING
    bond = m.security("SU26238RMFS4", fmt)
    assert bond["yld" if fmt is Format.SLIM else "yield"] > 0
    msgspec.json.encode(sec)  # JSON-able as is


# -- determinism -------------------------------------------------------------------------------


def test_same_seed_and_steps_give_the_same_events() -> None:
    """Two markets with one seed, stepped at the same times, print the same tape and books."""
    a, b = SyntheticMarket(seed=11), SyntheticMarket(seed=11)
    ea, eb = run(a, 10), run(b, 10)
    assert ea == eb
    assert len(trades_of(ea)) > 50
    assert a.order_book("GAZP", 50) == b.order_book("GAZP", 50)
    assert a.quote("LKOH") == b.quote("LKOH")
    assert a.bars("SBER", 60, 0, 2**40) == b.bars("SBER", 60, 0, 2**40)
    c = SyntheticMarket(seed=12)
    assert trades_of(run(c, 10)) != trades_of(ea)


def test_activity_does_not_depend_on_step_granularity() -> None:
    """Events come from a seeded clock, so tiny and big steps give the same tape."""
    a, b = SyntheticMarket(seed=5), SyntheticMarket(seed=5)
    fine = run(a, 5, step_ms=1)
    coarse = run(b, 5, step_ms=2500)
    assert trades_of(fine) == trades_of(coarse)


# -- the book ----------------------------------------------------------------------------------


def test_books_are_sorted_uncrossed_on_the_grid(
    lively: tuple[SyntheticMarket, list[MarketEvent]],
) -> None:
    """Bids run down, asks up, best bid < best ask, 50 levels of prices on the grid
    (docs/protocol.md §4.1)."""
    m, _ = lively
    for symbol, info in m.instruments.items():
        book = m.order_book(symbol, 50)
        assert len(book.bids) == len(book.asks) == 50
        assert not book.existing
        bids = [lv.price for lv in book.bids]
        asks = [lv.price for lv in book.asks]
        assert bids == sorted(bids, reverse=True) and len(set(bids)) == 50
        assert asks == sorted(asks) and len(set(asks)) == 50
        assert bids[0] < asks[0]
        assert all(info.on_grid(p) for p in bids + asks)
        assert all(lv.volume > 0 for lv in book.bids + book.asks)
        assert all((lv.yield_ is not None) == info.is_bond for lv in book.bids + book.asks)
        top = m.order_book(symbol, 5)
        assert top.bids == book.bids[:5] and top.asks == book.asks[:5]
        q = m.quote(symbol)
        assert (q.bid, q.ask, q.bid_vol, q.ask_vol) == (
            bids[0],
            asks[0],
            book.bids[0].volume,
            book.asks[0].volume,
        )
        assert q.total_bid_vol == sum(lv.volume for lv in book.bids)


def test_book_changes_over_time(lively: tuple[SyntheticMarket, list[MarketEvent]]) -> None:
    """Every instrument gets book updates and trades, and its mid price moves."""
    m, events = lively
    updated = {e.symbol for e in events if isinstance(e, BookUpdated)}
    traded = {t.symbol for t in trades_of(events)}
    assert updated == traded == set(m.instruments)
    prices = {t.price for t in trades_of(events, "SBER")}
    assert len(prices) > 3


def test_depth_is_clamped() -> None:
    """A depth outside 1..50 is clamped."""
    m = SyntheticMarket()
    assert len(m.order_book("SBER", 0).bids) == 1
    assert len(m.order_book("SBER", 500).asks) == 50


# -- the tape ----------------------------------------------------------------------------------


def test_trades_are_well_formed(lively: tuple[SyntheticMarket, list[MarketEvent]]) -> None:
    """Trades have growing ids, a side, a board, prices on the grid, ISO and ms times
    (docs/protocol.md §4.4)."""
    m, events = lively
    trades = trades_of(events)
    ids = [t.id for t in trades]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for t in trades:
        assert t.symbol is not None and t.timestamp is not None
        info = m.instruments[t.symbol]
        assert t.board == info.board and t.side in (Side.BUY, Side.SELL)
        assert t.qty > 0 and info.on_grid(t.price) and not t.existing
        assert t.time == iso_time(t.timestamp)
        assert (t.oi or 0) > 0 if info.market == "FORTS" else t.oi == 0


def test_some_prints_arrive_out_of_time_order(
    lively: tuple[SyntheticMarket, list[MarketEvent]],
) -> None:
    """Some trades are stamped earlier than one printed before them (late prints)."""
    _, events = lively
    late = 0
    for symbol in ("SBER", "GAZP", "VTBR", "FEES"):
        latest = 0
        for t in trades_of(events, symbol):
            assert t.timestamp is not None
            if t.timestamp < latest:
                late += 1
            latest = max(latest, t.timestamp)
    assert late > 0


def test_last_trades_returns_the_most_recent_oldest_first(
    lively: tuple[SyntheticMarket, list[MarketEvent]],
) -> None:
    """last_trades(n) is the tail of the tape in print order; warm-up trades exist at start."""
    m, events = lively
    tape = trades_of(events, "SBER")
    assert m.last_trades("SBER", 5) == tape[-5:]
    assert m.last_trades("SBER", 0) == []
    fresh = SyntheticMarket()
    assert len(fresh.last_trades("GAZP", 5000)) > 10  # the tape is not empty at start


# -- candles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tf", [15, 60, 300, 10])
def test_bars_agree_with_the_tape(tf: int, no_history: SyntheticMarket) -> None:
    """Without history, candles are the trades: volumes add up, prices sit in [low, high]."""
    m = no_history
    for symbol in ("SBER", "LKOH", "SiZ6"):
        tape = m.last_trades(symbol, 10_000)
        bars = {b.time: b for b in m.bars(symbol, tf, 0, 2**40)}
        assert sum(b.volume for b in bars.values()) == sum(t.qty for t in tape)
        last_in_order: dict[int, float] = {}
        latest = 0
        for t in tape:
            assert t.timestamp is not None
            b = bars[bucket_start(t.timestamp // 1000, tf)]
            assert b.low <= t.price <= b.high
            if t.timestamp >= latest:
                last_in_order[b.time] = t.price
            latest = max(latest, t.timestamp)
        for b in bars.values():
            assert b.low <= min(b.open, b.close) and max(b.open, b.close) <= b.high
            if tf % 15 == 0:
                assert b.close == last_in_order[b.time]
        times = sorted(bars)
        assert times == [b.time for b in m.bars(symbol, tf, 0, 2**40)]


def test_history_covers_the_requested_days() -> None:
    """Minute history reaches history_days back and joins the live candles without a gap."""
    m = SyntheticMarket(history_days=2)
    now_s = m.now_ms // 1000
    minutes = m.bars("GAZP", 60, now_s - 2 * 86_400, now_s)
    assert len(minutes) >= 2 * 1440
    times = [b.time for b in minutes]
    assert all(b - a == 60 for a, b in itertools.pairwise(times))
    days = m.bars("GAZP", TIMEFRAMES["D"], 0, now_s)
    assert len(days) == 3  # two full days before today, and today
    # A history minute continues where the previous one closed.
    assert all(a.close == b.open for a, b in itertools.pairwise(minutes[:-2]))


def test_candles_of_every_timeframe_are_consistent() -> None:
    """15 s history splits the minutes exactly; D/W/M/Y aggregate them (docs/protocol.md §4.3)."""
    m = SyntheticMarket(history_days=1)
    now_s = m.now_ms // 1000
    minutes = m.bars("SBER", 60, 0, now_s)
    quarter = m.bars("SBER", 15, 0, now_s)
    regrouped: dict[int, list[Bar]] = {}
    for b in quarter:
        regrouped.setdefault(bucket_start(b.time, 60), []).append(b)
    for b in minutes[:-1]:
        parts = regrouped[b.time]
        assert parts[0].open == b.open and parts[-1].close == b.close
        assert max(p.high for p in parts) == b.high and min(p.low for p in parts) == b.low
        assert sum(p.volume for p in parts) == b.volume
    total = sum(b.volume for b in minutes)
    for tf in TIMEFRAMES.values():
        bars = m.bars("SBER", tf, 0, now_s)
        assert sum(b.volume for b in bars) == total
        assert max(b.high for b in bars) == max(b.high for b in minutes)
    week = m.bars("SBER", TIMEFRAMES["W"], 0, now_s)[-1]
    assert datetime.fromtimestamp(week.time, UTC).weekday() == 0  # weeks start on Monday
    month = m.bars("SBER", TIMEFRAMES["M"], 0, now_s)[-1]
    assert datetime.fromtimestamp(month.time, UTC).day == 1


def test_the_day_candles_count_against_max_timeframes() -> None:
    """A quote builds the day candles, which are never evicted: with the rest pinned no new
    timeframe is available, and the series kept stay within the limit."""
    m = SyntheticMarket(history_days=1)
    m.max_timeframes = 2
    m.quote("SBER")
    m.pin("SBER", 60)
    m.bars("SBER", 60, 0, m.now_ms // 1000)
    assert not m.timeframe_available("SBER", 120)
    m.unpin("SBER", 60)
    assert m.timeframe_available("SBER", 120)
    m.bars("SBER", 120, 0, m.now_ms // 1000)  # evicts 60, not the day
    kept = [tf for tf in (60, 120, TIMEFRAMES["D"]) if m.series_ready("SBER", tf)]
    assert kept == [120, TIMEFRAMES["D"]]


def test_a_build_every_caller_left_is_dropped() -> None:
    """An unfinished build stays while one caller still steps it; once the last leaves it is
    dropped and no longer holds a place among ``max_timeframes``."""
    m = SyntheticMarket(history_days=1)
    m.max_timeframes = 2
    m.build_chunk = 100
    m.pin("SBER", 60)
    m.bars("SBER", 60, 0, m.now_ms // 1000)
    with m.building("SBER", 120) as first:
        assert not first()
        with m.building("SBER", 120) as second:
            assert not second()
        assert not m.timeframe_available("SBER", 180)  # 60 and the build of 120
        assert not first()  # the build goes on where it was
    assert m.timeframe_available("SBER", 180)  # the place of 120 is free again
    assert not m.series_ready("SBER", 120)
    with m.building("SBER", 120) as step:  # a new caller starts it afresh
        while not step():
            pass
    assert m.series_ready("SBER", 120)


def test_forming_bar_follows_the_last_trade() -> None:
    """The forming candle is the current period's and closes at the last in-order price."""
    m = SyntheticMarket(seed=4)
    events = run(m, 5)
    last = trades_of(events, "SBER")[-1]
    assert last.timestamp is not None
    bar = m.forming_bar("SBER", 60)
    assert bar is not None
    assert bar.time == bucket_start(m.now_ms // 1000, 60)
    assert bar.close == m.last_price("SBER")
    assert bar.low <= last.price <= bar.high
    quiet = SyntheticMarket(events_per_second=0, history_days=0)
    quiet.step(quiet.now_ms + 120_000)
    assert quiet.forming_bar("SBER", 60) is None


def test_volumes_exceed_32_bits_and_survive_encoding() -> None:
    """FEES day volume and day candles pass 2**32 and round-trip as JSON (64-bit volumes)."""
    m = SyntheticMarket()
    q = m.quote("FEES")
    assert q.volume is not None and q.volume > 2**32
    days = m.bars("FEES", TIMEFRAMES["D"], 0, m.now_ms // 1000)
    assert max(b.volume for b in days) > 2**32
    for fmt in Format:
        wire = msgspec.json.encode(to_wire(q, fmt))
        assert msgspec.json.decode(wire, type=format_class(Quote, fmt)).volume == q.volume


# -- quotes, status ----------------------------------------------------------------------------


def test_quote_reflects_the_market(lively: tuple[SyntheticMarket, list[MarketEvent]]) -> None:
    """Last price is the last in-order print; day stats, lot value and bond fields are set."""
    m, events = lively
    q = m.quote("LKOH")
    assert q.last_price == m.last_price("LKOH")
    assert q.low_price is not None and q.high_price is not None
    assert q.low_price <= q.last_price <= q.high_price
    assert q.lot_value == q.last_price * 1
    assert q.prev_close_price is not None and q.change is not None
    assert q.change == pytest.approx(q.last_price - q.prev_close_price)
    bond = m.quote("SU26238RMFS4")
    assert bond.yield_ is not None and 5 < bond.yield_ < 30
    assert bond.accrued_interest is not None and bond.accrued_interest > 0
    assert m.quote("SiZ6").open_interest
    assert m.quote("SBER").open_interest is None


def test_status_break_and_recovery() -> None:
    """Now and then an instrument pauses (status 2, no trades) and then trades again (17)."""
    m = SyntheticMarket(seed=2, events_per_second=2.0, break_interval_s=60.0)
    changes: list[tuple[int, StatusChanged]] = []
    in_break: set[str] = set()
    for t in range(m.now_ms + 1000, m.now_ms + 600_000, 1000):
        for e in m.step(t):
            if isinstance(e, StatusChanged):
                changes.append((t, e))
                if e.patch.trading_status == TradingStatus.BREAK:
                    in_break.add(e.symbol)
                else:
                    in_break.discard(e.symbol)
            elif isinstance(e, TradePrinted):
                assert e.symbol not in in_break  # no anonymous trades during a break
    statuses = [(e.symbol, e.patch.trading_status) for _, e in changes]
    broken = {s for s, st in statuses if st == TradingStatus.BREAK}
    assert broken
    symbol = next(iter(sorted(broken)))
    mine = [st for s, st in statuses if s == symbol]
    assert mine[:2] == [TradingStatus.BREAK, TradingStatus.NORMAL_TRADING]
    patch = next(e.patch for _, e in changes if e.symbol == symbol)
    assert patch.trading_status_info == "перерыв в торгах"
    assert patch.price_min is msgspec.UNSET and patch.board is msgspec.UNSET  # partial
    full = m.instrument_patch(symbol)
    assert full.trading_status == m.trading_status(symbol)
    state = InstrumentState.from_patch(full)
    assert state.price_min == m.instruments[symbol].price_min


def test_breaks_can_be_disabled() -> None:
    """break_interval_s=None: no status changes at all."""
    m = SyntheticMarket(events_per_second=1.0, break_interval_s=None)
    events = run(m, 600, step_ms=5000)
    assert not [e for e in events if isinstance(e, StatusChanged)]


# -- rate control ------------------------------------------------------------------------------


def test_rate_sets_the_activity() -> None:
    """events_per_second scales the events; a long gap is skipped, not replayed."""
    slow, fast = SyntheticMarket(events_per_second=2.0), SyntheticMarket(events_per_second=50.0)
    n_slow = len([e for e in run(slow, 10, 1000) if isinstance(e, BookUpdated)])
    n_fast = len([e for e in run(fast, 10, 1000) if isinstance(e, BookUpdated)])
    n = len(slow.instruments)
    assert n * 10 < n_slow < n * 40 and n * 350 < n_fast < n * 650
    gap = fast.step(fast.now_ms + 3_600_000)
    assert len([e for e in gap if isinstance(e, BookUpdated)]) < n * 200


def test_burst_makes_n_events_now() -> None:
    """burst(symbol, n) makes n activity events at once, without moving the clock."""
    m = SyntheticMarket(events_per_second=0)
    now = m.now_ms
    events = m.burst("GAZP", 500)
    assert len([e for e in events if isinstance(e, BookUpdated)]) == 500
    assert trades_of(events, "GAZP") and {e.symbol for e in events} == {"GAZP"}
    assert m.now_ms == now
    assert m.step(now + 10_000) == []  # a frozen market stays quiet


# -- liquidity ---------------------------------------------------------------------------------


def test_take_market_order_sweeps_the_book_and_prints() -> None:
    """take() fills best price first, moves the book and prints trades for the next step."""
    m = SyntheticMarket(events_per_second=0)
    book = m.order_book("SBER", 50)
    want = book.asks[0].volume + book.asks[1].volume // 2
    fills = m.take("SBER", Side.BUY, want, None, m.now_ms)
    assert fills == [
        (book.asks[0].price, book.asks[0].volume),
        (book.asks[1].price, want - book.asks[0].volume),
    ]
    after = m.order_book("SBER", 50)
    assert after.asks[0].price == book.asks[1].price
    assert after.asks[0].volume == book.asks[1].volume - (want - book.asks[0].volume)
    assert after.bids == book.bids
    printed = trades_of(m.step(m.now_ms + 1))
    assert [(t.price, t.qty, t.side) for t in printed] == [(p, q, Side.BUY) for p, q in fills]
    assert m.last_price("SBER") == book.asks[1].price


def test_take_limit_order_respects_the_limit() -> None:
    """A limit taker gets only prices at or better than its limit; liquidity() agrees."""
    m = SyntheticMarket(events_per_second=0)
    book = m.order_book("GAZP", 50)
    assert m.take("GAZP", Side.SELL, 10, book.asks[0].price, m.now_ms) == []
    limit = book.bids[2].price
    available = m.liquidity("GAZP", Side.SELL, limit)
    assert available == sum(lv.volume for lv in book.bids[:3])
    fills = m.take("GAZP", Side.SELL, 10**9, limit, m.now_ms)
    assert [p for p, _ in fills] == [lv.price for lv in book.bids[:3]]
    assert sum(q for _, q in fills) == available
    assert m.order_book("GAZP", 1).bids[0].price == book.bids[3].price
    everything = m.liquidity("GAZP", Side.SELL)
    fills = m.take("GAZP", Side.SELL, 10**12, None, m.now_ms)
    assert sum(q for _, q in fills) == everything  # partial: only the 50 levels shown
    assert m.take("GAZP", Side.BUY, 0, None, m.now_ms) == []


def test_clusters_sum_the_tape(lively: tuple[SyntheticMarket, list[MarketEvent]]) -> None:
    """Clusters split each period's volume by price and aggressor side (docs/protocol.md §4.13)."""
    m, _ = lively
    tape = m.last_trades("VTBR", 10_000)
    clusters = m.clusters("VTBR", 60, 0)
    assert sum(c.buy_qty + c.sell_qty for s in clusters for c in s.trade_clusters) == sum(
        t.qty for t in tape
    )
    assert sum(c.buy_qty for s in clusters for c in s.trade_clusters) == sum(
        t.qty for t in tape if t.side is Side.BUY
    )


def test_unknown_symbol_raises_key_error() -> None:
    """Snapshots of an unknown ticker raise KeyError (the server checks with find() first)."""
    m = SyntheticMarket()
    with pytest.raises(KeyError):
        m.quote("NOPE")
    with pytest.raises(ValueError, match="tf"):
        m.bars("SBER", 0, 0, 1)
