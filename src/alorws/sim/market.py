"""A seeded, deterministic synthetic MOEX market for the simulator.

Pure: no asyncio, no I/O and no wall clock. Time comes in as Unix milliseconds, so the same seed
and the same sequence of calls (``step`` times, ``take``, ``burst``) give the same output.

What it models, per instrument:

* a **limit order book** of 50 contiguous price levels a side on the instrument's price grid
  (integer ticks internally, so prices are always exact multiples of ``price_step``);
* **activity** arriving as a Poisson process (``events_per_second`` per instrument): book changes
  (orders added, cancelled, improving the spread) and anonymous **trades** that eat the best
  levels. The mid price random-walks out of these, gently pulled back to its start price;
* **trading status** changes: now and then a short break (status 2), then normal trading (17)
  again (``break_interval_s``; the simulator's trading day turns them off and sets the status
  itself), published as partial :class:`InstrumentPatch` updates (docs/protocol.md §4.5); no
  trades print while the status is not normal trading;
* **history**: ``history_days`` of one-minute candles generated backwards from the start price,
  so the first live trade continues the chart; candles of every timeframe (docs/protocol.md §4.3)
  are aggregated from that history plus the live trades;
* two quirks of real data: some prints arrive **out of time order** (a late print is stamped
  earlier than the one before it), and one instrument (FEES, a penny stock) has day and longer
  candle volumes and a day volume above ``2**32`` (docs/protocol.md §12.15: 64-bit integers).

The engine trades against the book with :meth:`SyntheticMarket.take`; the server reads snapshots
(:meth:`~SyntheticMarket.quote`, :meth:`~SyntheticMarket.order_book`, ...) after each
:meth:`~SyntheticMarket.step`.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

import msgspec

from ..protocol.enums import Format, Side, TradingStatus
from ..protocol.market import (
    Bar,
    BookLevel,
    Cluster,
    ClusterSnapshot,
    InstrumentPatch,
    OrderBook,
    Quote,
    Trade,
)


__all__ = [
    "DEFAULT_START_MS",
    "MAX_TF",
    "MAX_TIME_S",
    "TIMEFRAMES",
    "BookUpdated",
    "InstrumentInfo",
    "MarketEvent",
    "StatusChanged",
    "SyntheticMarket",
    "TradePrinted",
    "bucket_end",
    "bucket_start",
    "iso_time",
    "symbols_of",
    "tf_seconds",
]

#: 2025-06-23 07:00:00 UTC (10:00 MSK, a Monday), the default "now" of a new market.
DEFAULT_START_MS: Final = 1_750_662_000_000
#: docs/protocol.md §4.3: the letter timeframes in seconds (day, week, month, year).
TIMEFRAMES: Final[dict[str, int]] = {"D": 86_400, "W": 604_800, "M": 2_592_000, "Y": 31_536_000}

#: The longest timeframe served, seconds (a year, ``Y``).
MAX_TF: Final = TIMEFRAMES["Y"]
#: Times (Unix s) must be below this: 9999-01-01, so that every candle of every timeframe,
#: and the one after it, still has a calendar date.
MAX_TIME_S: Final = 253_370_764_800

BOOK_LEVELS: Final = 50  # docs/protocol.md §4.1: depth 1..50
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DAY: Final = 86_400
#: ``tradingStatusInfo`` by code. The texts of 17 and 2 are ALOR's (docs/protocol.md §4.5); the
#: others are the simulator's own wording (ALOR's is not known): read the code, not the text.
_STATUS_INFO: Final[dict[int, str]] = {
    TradingStatus.NORMAL_TRADING: "нормальный период торгов",
    TradingStatus.BREAK: "перерыв в торгах",
    TradingStatus.CLOSED: "нет торгов",
    TradingStatus.CLOSING_AUCTION: "аукцион закрытия",
    TradingStatus.CLOSING_PERIOD: "период закрытия",
    TradingStatus.LARGE_BLOCK_AUCTION: "аукцион крупных пакетов",
    TradingStatus.DISCRETE_AUCTION: "дискретный аукцион",
    TradingStatus.OPENING_PERIOD: "период открытия",
    TradingStatus.OPENING_AUCTION: "аукцион открытия",
    TradingStatus.CLOSING_AUCTION_PRICE: "торги по цене аукциона закрытия",
}
#: Initial margin of each client risk class relative to the standard one: clients of a lower
#: risk level put up more (the ratios of ALOR's Heavy Securities example).
_RISK_CLASSES: Final = (("Low", 1.33), ("Standard", 1.0), ("High", 0.55), ("Special", 0.55))
_FIRST_TRADE_ID: Final = 11_482_200_000  # int64 ids, as ALOR's (TV-09)
_RECENT_TRADES: Final = 10_000  # per instrument: replay depth (≤5000) and clusters
_MAX_GAP_MS: Final = 60_000  # a longer silence between steps is skipped, not replayed
_WARMUP_MS: Final = 15_000  # live trading simulated before start_ms, so the tape is not empty
_WARMUP_EVENTS: Final = 100  # ... but at most this many events per instrument
_LATE_PRINT_P: Final = 0.02  # share of prints stamped earlier than the one before
_TRADE_P: Final = 0.3  # share of activity events that are trades
_BUILD_CHUNK: Final = 1000  # history rows one build step handles (a few ms)
_MAX_TIMEFRAMES: Final = 32  # candle series kept per instrument
# Build keys besides timeframes: the one-minute and the 15-second history.
_MINUTES: Final = -60
_QUARTERS: Final = -15


def tf_seconds(tf: str | int) -> int:
    """``"60"`` -> 60, ``"D"`` -> 86400 (requests are already validated; docs/protocol.md §4.3)."""
    text = str(tf)
    return TIMEFRAMES.get(text) or int(text)


def iso_time(ms: int) -> str:
    """Unix ms -> ALOR's ISO-8601 UTC text with 7 fraction digits (``…T07:26:01.4410000Z``)."""
    seconds, milli = divmod(ms, 1000)
    return f"{_EPOCH + timedelta(seconds=seconds):%Y-%m-%dT%H:%M:%S}.{milli:03d}0000Z"


def _unix(dt: datetime) -> int:
    return int((dt - _EPOCH).total_seconds())


def bucket_start(t: int, tf: int) -> int:
    """The open time (Unix s) of the ``tf``-second candle holding second ``t``
    (docs/protocol.md §4.3).

    Days start at 00:00 UTC, weeks on Monday, months (``2592000``) and years (``31536000``) on
    the calendar; any other timeframe is aligned to the epoch.
    """
    if tf == TIMEFRAMES["D"]:
        return t - t % _DAY
    if tf == TIMEFRAMES["W"]:
        days = t // _DAY
        return (days - (days + 3) % 7) * _DAY  # 1970-01-01 was a Thursday
    if tf == TIMEFRAMES["M"]:
        d = _EPOCH + timedelta(seconds=t)
        return _unix(datetime(d.year, d.month, 1, tzinfo=UTC))
    if tf == TIMEFRAMES["Y"]:
        d = _EPOCH + timedelta(seconds=t)
        return _unix(datetime(d.year, 1, 1, tzinfo=UTC))
    return t - t % tf


def bucket_end(start: int, tf: int) -> int:
    """The open time (Unix s) of the ``tf``-second candle after the one opening at ``start``."""
    if tf == TIMEFRAMES["M"]:
        d = _EPOCH + timedelta(seconds=start)
        year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return _unix(datetime(year, month, 1, tzinfo=UTC))
    if tf == TIMEFRAMES["Y"]:
        d = _EPOCH + timedelta(seconds=start)
        return _unix(datetime(d.year + 1, 1, 1, tzinfo=UTC))
    return start + tf


# -- reference data ----------------------------------------------------------------------------

# The /md/v2/Securities object (docs/protocol.md §8.6): field -> (Simple key, Slim key, Heavy key);
# None = absent.
_SECURITY_KEYS: Final[tuple[tuple[str, str | None, str | None, str], ...]] = (
    ("symbol", "symbol", "sym", "symbol"),
    ("short_name", "shortname", "n", "shortName"),
    ("description", "description", "desc", "description"),
    ("exchange", "exchange", "ex", "exchange"),
    ("market", "market", None, "market"),
    ("type", "type", "t", "type"),
    ("lot_size", "lotsize", "lot", "lotSize"),
    ("face_value", "facevalue", "fv", "faceValue"),
    ("cfi_code", "cfiCode", "cfi", "cfiCode"),
    ("cancellation", "cancellation", "cncl", "cancellation"),
    ("price_step", "minstep", "stp", "minStep"),
    ("round_to", None, None, "roundTo"),
    ("rating", "rating", "rt", "rating"),
    ("margin_buy", "marginbuy", "mgb", "marginBuy"),
    ("margin_sell", "marginsell", "mgs", "marginSell"),
    ("margin_rate", "marginrate", "mgrt", "marginRate"),
    ("step_price", "pricestep", "stppx", "priceStep"),
    ("price_max", "priceMax", "pxmx", "priceMax"),
    ("price_min", "priceMin", "pxmn", "priceMin"),
    ("theor_price", "theorPrice", "pxt", "theorPrice"),
    ("theor_price_limit", "theorPriceLimit", "pxtl", "theorPriceLimit"),
    ("volatility", "volatility", "vl", "volatility"),
    ("currency", "currency", "cur", "currency"),
    ("isin", "ISIN", "isin", "ISIN"),
    ("yield", "yield", "yld", "yield"),
    ("board", "board", "bd", "board"),
    ("primary_board", "primary_board", "pbd", "primaryBoard"),
    ("trading_status", "tradingStatus", "st", "tradingStatus"),
    ("trading_status_info", "tradingStatusInfo", "sti", "tradingStatusInfo"),
    ("complex_product_category", "complexProductCategory", "cpct", "complexProductCategory"),
    ("price_multiplier", "priceMultiplier", "pxmu", "priceMultiplier"),
    ("price_shown_units", "priceShownUnits", "pxu", "priceShownUnits"),
)


@dataclass(frozen=True, slots=True)
class InstrumentInfo:
    """Reference data of one instrument, as ``/md/v2/Securities`` describes it
    (docs/protocol.md §8).

    ``price_step`` is the minimum price step (``minstep``), ``step_price`` the money value of one
    step (``pricestep``). Bond prices are percent of ``face_value``. ``margin_buy``/``margin_sell``
    (initial margin per contract) are set on FORTS only.
    """

    symbol: str
    exchange: str
    board: str
    primary_board: str
    market: str  # FOND | FORTS | CURR
    type: str
    short_name: str
    description: str
    lot_size: int
    price_step: float
    step_price: float
    face_value: float
    currency: str
    isin: str | None
    cfi_code: str
    is_bond: bool
    price_min: float
    price_max: float
    margin_buy: float | None = None
    margin_sell: float | None = None
    decimals: int = 2  # digits after the point of a price on the grid (Heavy ``roundTo``)
    cancellation: str = "2099-01-01T00:00:00.0000000"  # delisting / expiry / maturity
    coupon_rate: float = 0.0  # bonds: percent of face per year
    coupon_period_days: int = 182

    @property
    def broker_symbol(self) -> str:
        """``EXCHANGE:TICKER``, as positions and orders carry it (docs/protocol.md §4.6)."""
        return f"{self.exchange}:{self.symbol}"

    def to_ticks(self, price: float) -> int:
        """The nearest grid index of ``price``."""
        return round(price / self.price_step)

    def price_of(self, ticks: int) -> float:
        """The price of grid index ``ticks``, rounded to the instrument's decimals."""
        return round(ticks * self.price_step, self.decimals)

    @property
    def risk_rate(self) -> float:
        """Initial margin of a standard-risk client, a fraction of the value held (not FORTS)."""
        if self.is_bond:
            return 0.1
        return 0.2 if self.market == "CURR" else 0.25

    def on_grid(self, price: float) -> bool:
        """True when ``price`` is a multiple of ``price_step`` (to float precision)."""
        q = price / self.price_step
        return abs(q - round(q)) < 1e-6

    def value(self, price: float, units: float) -> float:
        """Money value (in ``currency``) of ``units`` pieces at ``price``.

        Bonds are quoted in percent of face; futures in points worth ``step_price`` per step.
        """
        if self.is_bond:
            return price / 100.0 * self.face_value * units
        if self.market == "FORTS":
            return price / self.price_step * self.step_price * units
        return price * units

    def security(
        self,
        fmt: Format | str = Format.SIMPLE,
        *,
        trading_status: int = TradingStatus.NORMAL_TRADING,
        trading_status_info: str | None = None,
        yield_: float | None = None,
    ) -> dict[str, Any]:
        """The ``/md/v2/Securities`` object of this instrument in ``fmt`` (docs/protocol.md §8).

        The live fields (status, yield) are arguments; :meth:`SyntheticMarket.security` fills
        them from the market's current state.
        """
        fmt = Format(fmt)
        if trading_status_info is None:
            trading_status_info = _STATUS_INFO.get(trading_status, "")
        values: dict[str, Any] = {
            "symbol": self.symbol,
            "short_name": self.short_name,
            "description": self.description,
            "exchange": self.exchange,
            "market": self.market,
            "type": self.type,
            "lot_size": self.lot_size,
            "face_value": self.face_value,
            "cfi_code": self.cfi_code,
            "cancellation": self.cancellation,
            "price_step": self.price_step,
            "round_to": self.decimals,
            "rating": 0,
            "margin_buy": self.margin_buy,
            "margin_sell": self.margin_sell,
            "margin_rate": 0,
            "step_price": self.step_price,
            "price_max": self.price_max,
            "price_min": self.price_min,
            "theor_price": 0,
            "theor_price_limit": 0,
            "volatility": 0,
            "currency": self.currency,
            "isin": self.isin,
            "yield": yield_,
            "board": self.board,
            "primary_board": self.primary_board,
            "trading_status": trading_status,
            "trading_status_info": trading_status_info,
            "complex_product_category": "",
            "price_multiplier": 1,
            "price_shown_units": 1,
        }
        column = {Format.SIMPLE: 1, Format.SLIM: 2, Format.HEAVY: 3}[fmt]
        out: dict[str, Any] = {}
        for row in _SECURITY_KEYS:
            key = row[column]
            if key is not None:
                out[key] = values[row[0]]
        return out


@dataclass(frozen=True, slots=True)
class _Spec:
    """How an instrument behaves in the generator (not part of its reference data)."""

    price: float  # start price
    level_size: float  # mean lots on a book level near the top
    trade_size: float  # mean lots of an anonymous trade
    minute_volume: float  # mean lots traded per history minute
    daily_vol: float  # volatility of the history, fraction per day
    band: float  # price band half-width, fraction of the start price
    open_interest: int = 0  # FORTS only


def _catalogue() -> list[tuple[InstrumentInfo, _Spec]]:
    def stock(
        symbol: str,
        short: str,
        desc: str,
        *,
        lot: int,
        step: float,
        face: float,
        isin: str,
        price: float,
        level: float,
        trade: float,
        minute: float,
        kind: str = "CS",
        cfi: str = "ESVUFR",
        decimals: int = 2,
        daily_vol: float = 0.02,
    ) -> tuple[InstrumentInfo, _Spec]:
        band = 0.15
        info = InstrumentInfo(
            symbol=symbol,
            exchange="MOEX",
            board="TQBR",
            primary_board="TQBR",
            market="FOND",
            type=kind,
            short_name=short,
            description=desc,
            lot_size=lot,
            price_step=step,
            step_price=step,
            face_value=face,
            currency="RUB",
            isin=isin,
            cfi_code=cfi,
            is_bond=False,
            price_min=_on_grid(price * (1 - band), step, decimals),
            price_max=_on_grid(price * (1 + band), step, decimals),
            decimals=decimals,
        )
        return info, _Spec(price, level, trade, minute, daily_vol, band)

    items = [
        stock("SBER", "Сбербанк", "Сбербанк России ПАО ао", lot=10, step=0.01, face=3,
              isin="RU0009029540", price=312.41, level=400, trade=30, minute=30_000),
        stock("SBERP", "Сбербанк-п", "Сбербанк России ПАО ап", lot=10, step=0.01, face=3,
              isin="RU0009029557", price=311.95, level=150, trade=10, minute=6_000, kind="PS",
              cfi="EPNXAR"),
        stock("GAZP", "Газпром", "Газпром ПАО ао", lot=10, step=0.01, face=5,
              isin="RU0007661625", price=129.02, level=500, trade=40, minute=35_000),
        stock("LKOH", "ЛУКОЙЛ", "НК ЛУКОЙЛ ПАО ао", lot=1, step=0.5, face=0.025,
              isin="RU0009024277", price=7013.0, level=40, trade=3, minute=1_500, decimals=1),
        stock("GMKN", "ГМК НорНик", "ГМК Норильский никель ПАО ао", lot=10, step=0.02,
              face=0.01, isin="RU0007288411", price=118.5, level=300, trade=20, minute=8_000),
        stock("ROSN", "Роснефть", "НК Роснефть ПАО ао", lot=1, step=0.05, face=0.01,
              isin="RU000A0J2Q06", price=440.15, level=60, trade=5, minute=2_500),
        stock("YDEX", "Яндекс", "МКПАО Яндекс ао", lot=1, step=0.5, face=0.01,
              isin="RU000A107T19", price=4125.0, level=30, trade=3, minute=1_500, decimals=1),
        stock("MGNT", "Магнит", "Магнит ПАО ао", lot=1, step=0.5, face=0.01,
              isin="RU000A0JKQU8", price=4570.0, level=15, trade=2, minute=700, decimals=1),
        stock("VTBR", "ВТБ", "Банк ВТБ ПАО ао", lot=1, step=0.01, face=50,
              isin="RU000A0JP5V6", price=75.62, level=800, trade=60, minute=20_000),
        # A penny stock whose day (and longer) volumes exceed 2**32 lots (64-bit volumes).
        stock("FEES", "Россети", "ПАО Россети ао", lot=10_000, step=0.000002, face=0.5,
              isin="RU000A0JPNN9", price=0.0745, level=2_000_000, trade=150_000,
              minute=30_000_000, decimals=6, daily_vol=0.025),
    ]  # fmt: skip

    bond_price, bond_band = 58.25, 0.05
    items.append(
        (
            InstrumentInfo(
                symbol="SU26238RMFS4",
                exchange="MOEX",
                board="TQOB",
                primary_board="TQOB",
                market="FOND",
                type="OFZ",
                short_name="ОФЗ 26238",
                description="ОФЗ-ПД 26238 15/05/41",
                lot_size=1,
                price_step=0.001,
                step_price=0.01,  # 0.001% of 1000 RUB
                face_value=1000.0,
                currency="RUB",
                isin="RU000A1038V6",
                cfi_code="DBFTFB",
                is_bond=True,
                price_min=_on_grid(bond_price * (1 - bond_band), 0.001, 3),
                price_max=_on_grid(bond_price * (1 + bond_band), 0.001, 3),
                decimals=3,
                cancellation="2041-05-15T00:00:00.0000000",
                coupon_rate=7.1,
            ),
            _Spec(bond_price, 200, 20, 800, 0.006, bond_band),
        )
    )
    si_price, si_band, si_margin = 91_500.0, 0.07, 10_980.0
    items.append(
        (
            InstrumentInfo(
                symbol="SiZ6",
                exchange="MOEX",
                board="RFUD",
                primary_board="RFUD",
                market="FORTS",
                type="FUT",
                short_name="Si-12.26",
                description="Фьючерсный контракт Si-12.26",
                lot_size=1,
                price_step=1.0,
                step_price=1.0,
                face_value=1.0,
                currency="RUB",
                isin=None,
                cfi_code="FFXCSX",
                is_bond=False,
                price_min=_on_grid(si_price * (1 - si_band), 1.0, 0),
                price_max=_on_grid(si_price * (1 + si_band), 1.0, 0),
                margin_buy=si_margin,
                margin_sell=si_margin,
                decimals=0,
                cancellation="2026-12-17T00:00:00.0000000",
            ),
            _Spec(si_price, 200, 8, 12_000, 0.008, si_band, open_interest=1_850_000),
        )
    )
    usd_price, usd_band = 78.5, 0.1
    items.append(
        (
            InstrumentInfo(
                symbol="USD000UTSTOM",
                exchange="MOEX",
                board="CETS",
                primary_board="CETS",
                market="CURR",
                type="CUR",
                short_name="USDRUB_TOM",
                description="Доллар США / Российский рубль (TOM)",
                lot_size=1000,
                price_step=0.0025,
                step_price=0.0025,
                face_value=1.0,
                currency="RUB",
                isin=None,
                cfi_code="MRCXXX",
                is_bond=False,
                price_min=_on_grid(usd_price * (1 - usd_band), 0.0025, 4),
                price_max=_on_grid(usd_price * (1 + usd_band), 0.0025, 4),
                decimals=4,
            ),
            _Spec(usd_price, 300, 20, 3_000, 0.008, usd_band),
        )
    )
    return items


def _aggregate(
    candles: list[tuple[int, int, int, int, int, int]], tf: int
) -> list[tuple[int, int, int, int, int, int]]:
    """Fold time-ordered ``(t, o, h, l, c, v)`` tick candles into ``tf`` candles."""
    out: list[tuple[int, int, int, int, int, int]] = []
    if not candles:
        return out
    lo = hi = -1
    bt = bo = bh = bl = bc = bv = 0
    for t, o, h, low, c, v in candles:
        if not lo <= t < hi:
            if hi != -1:
                out.append((bt, bo, bh, bl, bc, bv))
            lo = bucket_start(t, tf)
            hi = bucket_end(lo, tf)
            bt, bo, bh, bl, bc, bv = lo, o, h, low, c, v
            continue
        if h > bh:
            bh = h
        if low < bl:
            bl = low
        bc = c
        bv += v
    out.append((bt, bo, bh, bl, bc, bv))
    return out


def _on_grid(price: float, step: float, decimals: int) -> float:
    return round(round(price / step) * step, decimals)


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BookUpdated:
    """The order book (and so the quote) of ``symbol`` changed; read :meth:`order_book`."""

    symbol: str


@dataclass(frozen=True, slots=True)
class TradePrinted:
    """An anonymous trade was printed on the tape (docs/protocol.md §4.4). ``trade.existing`` is
    False."""

    trade: Trade

    @property
    def symbol(self) -> str:
        """The traded instrument's ticker."""
        return self.trade.symbol or ""


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The trading status changed; ``patch`` carries the ticker and the changed fields only."""

    patch: InstrumentPatch

    @property
    def symbol(self) -> str:
        """The instrument's ticker."""
        return self.patch.symbol


MarketEvent = BookUpdated | TradePrinted | StatusChanged


# -- candles -----------------------------------------------------------------------------------


class _Candle:
    __slots__ = ("c", "h", "l", "o", "v")

    def __init__(self, o: float, h: float, low: float, c: float, v: int) -> None:
        self.o, self.h, self.l, self.c, self.v = o, h, low, c, v

    def bar(self, t: int) -> Bar:
        return Bar(time=t, open=self.o, high=self.h, low=self.l, close=self.c, volume=self.v)


class _Series:
    """Candles of one timeframe, kept sorted by open time and updated trade by trade."""

    __slots__ = ("_hi", "_lo", "candles", "tf", "times")

    def __init__(self, tf: int) -> None:
        self.tf = tf
        self.times: list[int] = []
        self.candles: dict[int, _Candle] = {}
        self._lo = 0
        self._hi = 0  # cached bounds of the last bucket looked up

    def bucket(self, t: int) -> int:
        if self._lo <= t < self._hi:
            return self._lo
        lo = bucket_start(t, self.tf)
        self._lo, self._hi = lo, bucket_end(lo, self.tf)
        return lo

    def _new(self, t: int, candle: _Candle) -> None:
        self.candles[t] = candle
        if not self.times or t > self.times[-1]:
            self.times.append(t)
        else:
            bisect.insort(self.times, t)

    def add_trade(self, ts_s: int, price: float, qty: int, late: bool) -> None:
        """Fold one trade in. A late print (stamped before the last one) never becomes the close."""
        t = self.bucket(ts_s)
        c = self.candles.get(t)
        if c is None:
            self._new(t, _Candle(price, price, price, price, qty))
            return
        if price > c.h:
            c.h = price
        if price < c.l:
            c.l = price
        if not late:
            c.c = price
        c.v += qty

    def merge(self, t: int, o: float, h: float, low: float, close: float, v: int) -> None:
        """Fold a finer candle in; candles must come in time order."""
        b = self.bucket(t)
        c = self.candles.get(b)
        if c is None:
            self._new(b, _Candle(o, h, low, close, v))
            return
        c.h = max(c.h, h)
        c.l = min(c.l, low)
        c.c = close
        c.v += v

    def last(self) -> tuple[int, _Candle] | None:
        if not self.times:
            return None
        t = self.times[-1]
        return t, self.candles[t]

    def before(self, t: int) -> _Candle | None:
        """The latest candle opening before ``t``."""
        i = bisect.bisect_left(self.times, t)
        return self.candles[self.times[i - 1]] if i else None

    def range(self, lo: int, hi: int) -> list[Bar]:
        i = bisect.bisect_left(self.times, lo)
        j = bisect.bisect_right(self.times, hi)
        return [self.candles[t].bar(t) for t in self.times[i:j]]

    def last_before(self, hi: int, n: int) -> list[Bar]:
        """The last ``n`` candles opening at or before ``hi``."""
        j = bisect.bisect_right(self.times, hi)
        return [self.candles[t].bar(t) for t in self.times[max(0, j - n) : j]]

    def time_before(self, t: int) -> int | None:
        """The open time of the latest candle opening before ``t``."""
        i = bisect.bisect_left(self.times, t)
        return self.times[i - 1] if i else None

    def time_after(self, t: int) -> int | None:
        """The open time of the earliest candle opening after ``t``."""
        i = bisect.bisect_right(self.times, t)
        return self.times[i] if i < len(self.times) else None


# -- per-instrument state ----------------------------------------------------------------------


class _Sym:
    """Everything the generator knows about one instrument."""

    __slots__ = (
        "anchor",
        "ask",
        "asks",
        "bid",
        "bids",
        "book_ms",
        "builders",
        "history",
        "history15",
        "index",
        "info",
        "last_price",
        "last_ts",
        "live15",
        "max_ts",
        "min_ticks",
        "max_ticks",
        "oi",
        "pins",
        "recent",
        "rng",
        "series",
        "spec",
        "status",
        "status_info",
        "waiters",
    )

    def __init__(self, index: int, info: InstrumentInfo, spec: _Spec, seed: int) -> None:
        self.index = index
        self.info = info
        self.spec = spec
        self.rng = random.Random(f"alorws-sim:{seed}:{info.symbol}:live")
        self.anchor = info.to_ticks(spec.price)
        self.min_ticks = max(1, info.to_ticks(info.price_min))
        self.max_ticks = info.to_ticks(info.price_max)
        # Book: bids[i] lots at bid - i ticks, asks[i] lots at ask + i ticks.
        self.bid = self.anchor
        self.ask = self.anchor + 1
        self.bids = [self.level_volume(i) for i in range(BOOK_LEVELS)]
        self.asks = [self.level_volume(i) for i in range(BOOK_LEVELS)]
        self.book_ms = 0
        self.status = int(TradingStatus.NORMAL_TRADING)
        self.status_info = _STATUS_INFO[TradingStatus.NORMAL_TRADING]
        self.last_price = info.price_of(self.anchor)
        self.last_ts = 0  # ms of the last in-order print
        self.max_ts = 0  # ms of the latest print
        self.oi = spec.open_interest
        self.recent: deque[Trade] = deque(maxlen=_RECENT_TRADES)
        self.live15 = _Series(15)
        self.series: dict[int, _Series] = {}  # least recently used first
        self.pins: dict[int, int] = {}  # timeframe -> live subscriptions using it
        self.builders: dict[int, Iterator[None]] = {}  # builds in progress, by build key
        self.waiters: dict[int, int] = {}  # build key -> callers stepping it (building())
        self.history: list[tuple[int, int, int, int, int, int]] | None = None
        self.history15: list[tuple[int, int, int, int, int, int]] | None = None

    def level_volume(self, depth: int) -> int:
        """Lots on a fresh level ``depth`` ticks behind the best; deeper levels are bigger."""
        mean = self.spec.level_size * (1.0 + depth / 25.0)
        return 1 + int(self.rng.expovariate(1.0 / mean))

    def bias(self) -> float:
        """Pull towards the start price: >0 when above it (favour sells), in [-0.3, 0.3]."""
        mid = (self.bid + self.ask) / 2.0
        dev = (mid - self.anchor) / (self.anchor * self.spec.band)
        return max(-0.3, min(0.3, dev * 0.6))


# -- the market --------------------------------------------------------------------------------

_ACTIVITY: Final = 0
_STATUS: Final = 1


class SyntheticMarket:
    """A dozen MOEX instruments with books, tape, candles and status changes.

    Args:
        seed: Seeds every random choice; the same seed and calls give the same output.
        start_ms: The market's "now" at creation (Unix ms). History ends here.
        history_days: Days of one-minute candles generated before ``start_ms``.
        events_per_second: Mean activity events (book changes and trades) per instrument per
            second of market time; ``0`` freezes the market (``burst`` still works).
        break_interval_s: Mean seconds between trading breaks of one instrument; ``None``
            disables status changes.
        break_seconds: Range of a break's duration in seconds.

    History is built lazily, per instrument and timeframe, in bounded steps: a server calls
    :meth:`build_series` (or :meth:`build_history`) until it returns True, yielding to its event
    loop in between (inside :meth:`building`, so a build every caller gave up is dropped), so a
    first long request never blocks it; the other methods build what they need at once. At most
    ``max_timeframes`` candle series are kept per instrument: the least recently used one that
    no subscription has pinned (:meth:`pin`) makes room for a new one. The day candles are never
    evicted (every quote reads them) and count like any other; a quote builds them even when
    the others are all pinned, the one case with a series more.

    Why one wide class: every method reads or steps the same seeded per-instrument state (book,
    tape, candles, status), and the engine, the hub, the HTTP API and the tests all query it by
    ticker. Its sections (lookup, the clock, activity, liquidity, snapshots, candles, history
    building, bonds) share that state rather than hand it on; the candle storage itself is
    apart, in ``_Series``.
    """

    def __init__(
        self,
        seed: int = 1,
        start_ms: int = DEFAULT_START_MS,
        history_days: int = 5,
        *,
        events_per_second: float = 20.0,
        break_interval_s: float | None = 900.0,
        break_seconds: tuple[float, float] = (3.0, 20.0),
    ) -> None:
        if events_per_second < 0:
            raise ValueError(f"events_per_second must be >= 0, got {events_per_second}")
        self.seed = seed
        self.start_ms = start_ms
        self.history_days = max(0, history_days)
        self.events_per_second = events_per_second
        self.break_interval_s = break_interval_s
        self.break_seconds = break_seconds
        self.build_chunk = _BUILD_CHUNK  # history rows per build step
        self.max_timeframes = _MAX_TIMEFRAMES
        self.instruments: dict[str, InstrumentInfo] = {}
        self._syms: list[_Sym] = []
        self._by_symbol: dict[str, _Sym] = {}
        for i, (info, spec) in enumerate(_catalogue()):
            s = _Sym(i, info, spec, seed)
            self.instruments[info.symbol] = info
            self._syms.append(s)
            self._by_symbol[info.symbol.casefold()] = s
        self._next_trade_id = _FIRST_TRADE_ID
        self._seq = 0
        self._heap: list[tuple[int, int, int, int]] = []  # (ms, seq, kind, instrument index)
        self._pending: list[MarketEvent] = []
        # Warm up: trade for a while before start_ms, so the tape and the candles are not empty.
        warmup = _WARMUP_MS
        if events_per_second > 0:
            warmup = min(warmup, int(_WARMUP_EVENTS / events_per_second * 1000))
        self._live_start_ms = start_ms - warmup
        self._history_end_s = bucket_start(self._live_start_ms // 1000, 60)
        self._now = self._live_start_ms
        for s in self._syms:
            s.book_ms = self._live_start_ms
            self._schedule_activity(s, self._live_start_ms)
            self._schedule_break(s, self._live_start_ms)
        self.step(start_ms)
        self._pending.clear()

    # -- lookup --------------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """The market's clock: the latest time passed to :meth:`step` (Unix ms)."""
        return self._now

    def find(
        self, symbol: str, exchange: str = "MOEX", board: str | None = None
    ) -> InstrumentInfo | None:
        """The instrument ``symbol`` (any case) on ``exchange``, or None.

        ``board`` (``instrumentGroup``), when given, must be the instrument's board.
        """
        s = self._by_symbol.get(symbol.casefold())
        if s is None or s.info.exchange.casefold() != exchange.casefold():
            return None
        if board is not None and board.casefold() != s.info.board.casefold():
            return None
        return s.info

    def search(self, query: str = "") -> list[InstrumentInfo]:
        """Instruments whose ticker, names or ISIN contain ``query`` (any case), by turnover.

        A helper for ``GET /md/v2/Securities?query=`` (docs/protocol.md §8.3).
        """
        q = query.casefold()
        found = [
            s
            for s in self._syms
            if not q
            or any(
                q in (text or "").casefold()
                for text in (s.info.symbol, s.info.short_name, s.info.description, s.info.isin)
            )
        ]
        found.sort(key=lambda s: -s.spec.minute_volume * s.info.value(s.last_price, 1.0))
        return [s.info for s in found]

    def _sym(self, symbol: str) -> _Sym:
        s = self._by_symbol.get(symbol.casefold())
        if s is None:
            raise KeyError(f"unknown instrument {symbol!r}")
        return s

    # -- the clock -----------------------------------------------------------------------------

    def _push(self, ms: int, kind: int, s: _Sym) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ms, self._seq, kind, s.index))

    def _schedule_activity(self, s: _Sym, after: int) -> None:
        if self.events_per_second > 0:
            gap = s.rng.expovariate(self.events_per_second) * 1000.0
            self._push(after + max(1, int(gap)), _ACTIVITY, s)

    def _schedule_break(self, s: _Sym, after: int) -> None:
        if self.break_interval_s is None:
            return
        if s.status == TradingStatus.NORMAL_TRADING:
            gap = s.rng.expovariate(1.0 / self.break_interval_s)
        else:
            gap = s.rng.uniform(*self.break_seconds)
        self._push(after + max(1, int(gap * 1000.0)), _STATUS, s)

    def step(self, now_ms: int) -> list[MarketEvent]:
        """Advance the market to ``now_ms`` and return what happened, oldest first.

        Includes the trades printed by :meth:`take` since the last call. Calling with a time
        not after the last one only drains those. A gap longer than a minute is skipped
        (activity resumes a second before ``now_ms``) instead of being replayed.
        """
        out, self._pending = self._pending, []
        if now_ms <= self._now:
            return out
        if now_ms - self._now > _MAX_GAP_MS:
            cutoff = now_ms - 1000
            self._heap = [
                (t if t >= cutoff else cutoff + (t - self._now) % 1000, seq, kind, i)
                for t, seq, kind, i in self._heap
            ]
            heapq.heapify(self._heap)
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            t, _, kind, i = heapq.heappop(heap)
            s = self._syms[i]
            if kind == _ACTIVITY:
                self._activity(s, t, out)
                self._schedule_activity(s, t)
            else:
                self._toggle_status(s, t, out)
                self._schedule_break(s, t)
        self._now = now_ms
        return out

    def burst(self, symbol: str, n: int) -> list[MarketEvent]:
        """Make ``n`` activity events on ``symbol`` happen now and return them (benchmarks)."""
        s = self._sym(symbol)
        out: list[MarketEvent] = []
        t = max(self._now, s.max_ts)
        for _ in range(n):
            self._activity(s, t, out)
        return out

    # -- activity ------------------------------------------------------------------------------

    def _activity(self, s: _Sym, t: int, out: list[MarketEvent]) -> None:
        rng = s.rng
        if s.status == TradingStatus.NORMAL_TRADING and rng.random() < _TRADE_P:
            self._random_trade(s, t, out)
        else:
            self._book_change(s)
        s.book_ms = t
        out.append(BookUpdated(s.info.symbol))

    def _random_trade(self, s: _Sym, t: int, out: list[MarketEvent]) -> None:
        rng = s.rng
        side = Side.BUY if rng.random() < 0.5 - s.bias() else Side.SELL
        qty = 1 + int(rng.expovariate(1.0 / s.spec.trade_size))
        late = s.max_ts > 0 and rng.random() < _LATE_PRINT_P
        for price_ticks, lots in self._consume(s, side, qty, None):
            ts = t
            if late:
                # Stamped a little before the previous print, but inside its 15 s candle, so
                # every candle of 15 s or more stays consistent with the tape.
                ts = max(s.max_ts - rng.randint(1, 400), s.max_ts - s.max_ts % 15_000)
            self._print(s, ts, price_ticks, lots, side, late=ts < s.max_ts, out=out)

    def _book_change(self, s: _Sym) -> None:
        rng = s.rng
        bias = s.bias()
        r = rng.random()
        if s.ask - s.bid > 1 and r < 0.6:
            # Someone improves the spread; above the anchor it is more often a seller.
            if rng.random() < 0.5 + bias:
                s.asks.insert(0, s.level_volume(0))
                s.asks.pop()
                s.ask -= 1
            else:
                s.bids.insert(0, s.level_volume(0))
                s.bids.pop()
                s.bid += 1
            return
        if r < 0.75:
            # The best level of one side is cancelled: the spread widens, the mid moves.
            if rng.random() < 0.5 + bias:
                if s.bid - 1 >= s.min_ticks:
                    self._pop_level(s, Side.SELL)
            elif s.ask + 1 <= s.max_ticks:
                self._pop_level(s, Side.BUY)
            return
        # Orders added to or cancelled from a level, more often near the top.
        levels = s.bids if rng.random() < 0.5 else s.asks
        depth = min(BOOK_LEVELS - 1, int(rng.expovariate(0.2)))
        delta = 1 + int(rng.expovariate(1.0 / s.spec.level_size))
        if rng.random() < 0.55:
            levels[depth] += delta
        else:
            levels[depth] = max(1, levels[depth] - delta)

    def _pop_level(self, s: _Sym, taker: Side) -> None:
        """Remove the best level of the side ``taker`` trades against; add one at the back."""
        if taker is Side.BUY:
            s.asks.pop(0)
            s.asks.append(s.level_volume(BOOK_LEVELS - 1))
            s.ask += 1
        else:
            s.bids.pop(0)
            s.bids.append(s.level_volume(BOOK_LEVELS - 1))
            s.bid -= 1

    def _consume(
        self, s: _Sym, taker: Side, lots: int, limit_ticks: int | None
    ) -> list[tuple[int, int]]:
        """Take up to ``lots`` from the levels now in the book, best first. Returns fills."""
        fills: list[tuple[int, int]] = []
        levels = s.asks if taker is Side.BUY else s.bids
        remaining = lots
        for depth in range(BOOK_LEVELS):
            if remaining <= 0:
                break
            ticks = s.ask + depth if taker is Side.BUY else s.bid - depth
            if limit_ticks is not None and (
                ticks > limit_ticks if taker is Side.BUY else ticks < limit_ticks
            ):
                break
            got = min(remaining, levels[depth])
            fills.append((ticks, got))
            remaining -= got
        # Take the lots out of the book: emptied levels go, fresh ones appear at the back.
        for _, got in fills:
            if got >= levels[0]:
                self._pop_level(s, taker)
            else:
                levels[0] -= got
        return fills

    def _print(
        self,
        s: _Sym,
        ts: int,
        price_ticks: int,
        qty: int,
        side: Side,
        *,
        late: bool,
        out: list[MarketEvent],
    ) -> None:
        info = s.info
        price = info.price_of(price_ticks)
        self._next_trade_id += 1
        oi = 0
        if info.market == "FORTS":
            s.oi = max(0, s.oi + s.rng.randint(-qty, qty))
            oi = s.oi
        trade = Trade(
            id=self._next_trade_id,
            symbol=info.symbol,
            board=info.board,
            qty=qty,
            price=price,
            time=iso_time(ts),
            timestamp=ts,
            side=side,
            oi=oi,
            existing=False,
            order_no=0,  # Simple `orderno`: ALOR sends 0 on the anonymous tape
        )
        if not late:
            s.last_price = price
            s.last_ts = ts
        s.max_ts = max(s.max_ts, ts)
        s.recent.append(trade)
        ts_s = ts // 1000
        s.live15.add_trade(ts_s, price, qty, late)
        for series in s.series.values():
            series.add_trade(ts_s, price, qty, late)
        out.append(TradePrinted(trade))

    def set_status(self, symbol: str, status: int) -> list[MarketEvent]:
        """Set the trading status of ``symbol`` now and return its partial update
        (docs/protocol.md §4.5).

        For tests, demos and the simulator's trading day; the market also pauses on its own
        (``break_interval_s``).
        """
        s = self._sym(symbol)
        s.status = int(status)
        s.status_info = _STATUS_INFO.get(s.status, "")
        patch = InstrumentPatch(
            symbol=s.info.symbol, trading_status=s.status, trading_status_info=s.status_info
        )
        return [StatusChanged(patch)]

    def _toggle_status(self, s: _Sym, t: int, out: list[MarketEvent]) -> None:
        if s.status == TradingStatus.NORMAL_TRADING:
            s.status = int(TradingStatus.BREAK)
        else:
            s.status = int(TradingStatus.NORMAL_TRADING)
        s.status_info = _STATUS_INFO[s.status]
        patch = InstrumentPatch(
            symbol=s.info.symbol, trading_status=s.status, trading_status_info=s.status_info
        )
        out.append(StatusChanged(patch))

    # -- liquidity for the engine --------------------------------------------------------------

    def _limit_ticks(self, info: InstrumentInfo, side: Side, limit: float | None) -> int | None:
        if limit is None:
            return None
        q = limit / info.price_step
        # A buyer pays at most the limit, a seller receives at least it.
        return math.floor(q + 1e-9) if side is Side.BUY else math.ceil(q - 1e-9)

    def liquidity(self, symbol: str, side: Side, limit: float | None = None) -> int:
        """Lots a ``side`` taker could get now, at prices at or better than ``limit``."""
        s = self._sym(symbol)
        lim = self._limit_ticks(s.info, side, limit)
        levels = s.asks if side is Side.BUY else s.bids
        total = 0
        for depth in range(BOOK_LEVELS):
            ticks = s.ask + depth if side is Side.BUY else s.bid - depth
            if lim is not None and (ticks > lim if side is Side.BUY else ticks < lim):
                break
            total += levels[depth]
        return total

    def take(
        self, symbol: str, side: Side, lots: int, limit: float | None, now_ms: int
    ) -> list[tuple[float, int]]:
        """Trade ``lots`` as a taker on ``side`` against the book; return the fills.

        A market order (``limit`` None) takes any price among the 50 levels; a limit order only
        prices at or better than ``limit``. Each level taken prints an anonymous trade (``side``
        is the aggressor), delivered by the next :meth:`step`, and the book moves. Returns
        ``[(price, lots), ...]`` best price first; the sum may be less than ``lots``.
        """
        s = self._sym(symbol)
        if lots <= 0:
            return []
        fills = self._consume(s, side, lots, self._limit_ticks(s.info, side, limit))
        if not fills:
            return []
        ts = max(now_ms, s.max_ts)
        for ticks, got in fills:
            self._print(s, ts, ticks, got, side, late=False, out=self._pending)
        s.book_ms = ts
        self._pending.append(BookUpdated(s.info.symbol))
        return [(s.info.price_of(ticks), got) for ticks, got in fills]

    # -- snapshots -----------------------------------------------------------------------------

    @property
    def last_trade_id(self) -> int:
        """The id of the latest anonymous trade printed (ids only grow)."""
        return self._next_trade_id

    def accrued_interest(self, symbol: str) -> float:
        """Accrued coupon per bond now (НКД); 0 for anything but a bond."""
        s = self._sym(symbol)
        return self._accrued(s.info, self._clock(s)) if s.info.is_bond else 0.0

    def last_price(self, symbol: str) -> float:
        """The last (in-order) trade price, or the start price before any trade."""
        return self._sym(symbol).last_price

    def best(self, symbol: str) -> tuple[float, float]:
        """``(best bid, best ask)`` of ``symbol``."""
        s = self._sym(symbol)
        return s.info.price_of(s.bid), s.info.price_of(s.ask)

    def trading_status(self, symbol: str) -> int:
        """The current trading-status code (docs/protocol.md §4.5)."""
        return self._sym(symbol).status

    def order_book(self, symbol: str, depth: int = 20) -> OrderBook:
        """The top ``depth`` (1..50) levels a side; bids best (highest) first
        (docs/protocol.md §12.5).

        ``existing`` is False: the server sets it on the first message of a subscription.
        Bond levels carry their yield (Slim ``y``).
        """
        s = self._sym(symbol)
        info = s.info
        depth = max(1, min(BOOK_LEVELS, depth))
        price_of = info.price_of
        if info.is_bond:
            ytm = self._yield_fn(info, s.book_ms)
            bids = [
                BookLevel(price=(p := price_of(s.bid - i)), volume=s.bids[i], yield_=ytm(p))
                for i in range(depth)
            ]
            asks = [
                BookLevel(price=(p := price_of(s.ask + i)), volume=s.asks[i], yield_=ytm(p))
                for i in range(depth)
            ]
        else:
            bids = [BookLevel(price=price_of(s.bid - i), volume=s.bids[i]) for i in range(depth)]
            asks = [BookLevel(price=price_of(s.ask + i), volume=s.asks[i]) for i in range(depth)]
        return OrderBook(bids=bids, asks=asks, ms_timestamp=s.book_ms, existing=False)

    def quote(self, symbol: str) -> Quote:
        """The full quote of ``symbol`` (docs/protocol.md §4.2): last trade, day OHLCV, best prices,
        book totals."""
        s = self._sym(symbol)
        info = s.info
        day = self._series(s, TIMEFRAMES["D"])
        today = bucket_start(self._clock(s) // 1000, _DAY)
        last = day.last()
        cur = last[1] if last is not None and last[0] == today else None
        prev = day.before(today)
        prev_close = prev.c if prev is not None else info.price_of(s.anchor)
        change = round(s.last_price - prev_close, info.decimals)
        return Quote(
            symbol=info.symbol,
            exchange=info.exchange,
            description=info.short_name,
            currency=info.currency,
            prev_close_price=prev_close,
            last_price=s.last_price,
            last_price_timestamp=(s.last_ts or self._live_start_ms) // 1000,
            open_price=cur.o if cur else None,
            high_price=cur.h if cur else None,
            low_price=cur.l if cur else None,
            volume=cur.v if cur else 0,
            accrued_interest=(
                None
                if info.market == "FORTS"  # no coupon: null, as ALOR's futures quotes
                else self._accrued(info, self._clock(s))
                if info.is_bond
                else 0.0
            ),
            open_interest=s.oi if info.market == "FORTS" else None,
            yield_=self._yield_fn(info, self._clock(s))(s.last_price) if info.is_bond else None,
            ask=info.price_of(s.ask),
            bid=info.price_of(s.bid),
            ask_vol=s.asks[0],
            bid_vol=s.bids[0],
            total_ask_vol=sum(s.asks),
            total_bid_vol=sum(s.bids),
            ob_ms_timestamp=s.book_ms,
            lot_size=float(info.lot_size),
            lot_value=round(info.value(s.last_price, info.lot_size), 4),
            face_value=info.face_value,
            type=info.type,
            change=change,
            change_percent=round(change / prev_close * 100.0, 2) if prev_close else 0.0,
        )

    def instrument_patch(self, symbol: str) -> InstrumentPatch:
        """The complete first ``InstrumentsGetAndSubscribeV2`` message (docs/protocol.md §4.5).

        Status and price band; FORTS instruments add their margins. The option fields
        (synthetic margin, theoretical prices, volatility) are not sent: there are no options.
        """
        s = self._sym(symbol)
        info = s.info
        patch = InstrumentPatch(
            symbol=info.symbol,
            exchange=info.exchange,
            board=info.board,
            trading_status=s.status,
            trading_status_info=s.status_info,
            price_min=info.price_min,
            price_max=info.price_max,
        )
        if info.market == "FORTS":
            patch = msgspec.structs.replace(
                patch, margin_buy=info.margin_buy, margin_sell=info.margin_sell
            )
        return patch

    def security(
        self, symbol: str, fmt: Format | str = Format.SIMPLE, *, complete: bool = False
    ) -> dict[str, Any]:
        """The ``/md/v2/Securities/{exchange}/{symbol}`` object with the live status
        (docs/protocol.md §8).

        With ``complete``, Heavy also has what no model field holds, as the HTTP server sends
        it: the currencies and the initial margin per lot for each client risk class.
        """
        s = self._sym(symbol)
        info = s.info
        ytm = self._yield_fn(info, self._clock(s))(s.last_price) if info.is_bond else None
        out = info.security(
            fmt, trading_status=s.status, trading_status_info=s.status_info, yield_=ytm
        )
        if not complete or Format(fmt) is not Format.HEAVY:
            return out
        full: dict[str, Any] = {}
        for key, value in out.items():
            full[key] = value
            if key == "currency":
                full["nominalCurrency"] = info.currency
                full["settlementCurrency"] = None
                full["underlyingCurrency"] = None
        if info.market == "FORTS":
            long = info.margin_buy or 0.0
            short = info.margin_sell or 0.0
        else:
            long = short = info.value(s.last_price, info.lot_size) * info.risk_rate
        for risk, factor in _RISK_CLASSES:
            full[f"initialMargin{risk}RiskLong"] = round(long * factor, 2)
            full[f"initialMargin{risk}RiskShort"] = round(short * factor, 2)
        return full

    def last_trades(self, symbol: str, n: int) -> list[Trade]:
        """The most recent ``n`` anonymous trades (up to 10000), oldest first (``depth``,
        docs/protocol.md §4.4).

        Order is print order: a late print sits after the trades it predates.
        """
        s = self._sym(symbol)
        if n <= 0:
            return []
        recent = s.recent
        if n >= len(recent):
            return list(recent)
        return list(recent)[-n:]

    def trades_history(
        self, symbol: str, from_s: int | None, to_s: int | None, offset: int, limit: int
    ) -> tuple[int, list[Trade]]:
        """Anonymous trades of previous sessions (before today, UTC) in ``[from_s, to_s]``
        (docs/protocol.md §8).

        Rebuilt from the one-minute history, so they agree with the candles: four prints a
        minute, 15 s apart (the open, both extremes, the close), sharing the minute's volume,
        with ids below the live tape's. Returns how many trades match and the ``limit`` of them
        after ``offset``, oldest first.
        """
        s = self._sym(symbol)
        info = s.info
        history = self._history(s)
        if not history:
            return 0, []
        first = history[0][0]
        session = bucket_start(self._clock(s) // 1000, _DAY)
        n = bisect.bisect_left(history, session, key=lambda c: c[0])
        # Print j is at first + 15 j (the minutes are contiguous).
        lo = 0 if from_s is None else max(0, -((first - from_s) // 15))
        hi = 4 * n - 1 if to_s is None else min(4 * n - 1, (to_s - first) // 15)
        total = max(0, hi - lo + 1)
        start = lo + max(0, offset)
        stop = min(hi + 1, start + max(0, limit))
        base = _FIRST_TRADE_ID - 4 * len(history)
        oi = s.spec.open_interest if info.market == "FORTS" else 0
        price_of = info.price_of
        page: list[Trade] = []
        for j in range(start, stop):
            t, o, h, low, c, v = history[j // 4]
            k = j % 4
            path = (o, low, h, c) if c >= o else (o, h, low, c)
            ticks = path[k]
            before = path[k - 1] if k else (history[j // 4 - 1][4] if j >= 4 else o)
            ms = (first + 15 * j) * 1000
            page.append(
                Trade(
                    id=base + j + 1,
                    symbol=info.symbol,
                    board=info.board,
                    qty=v // 4 + (v % 4 if k == 3 else 0),
                    price=price_of(ticks),
                    time=iso_time(ms),
                    timestamp=ms,
                    side=Side.BUY if ticks >= before else Side.SELL,
                    oi=oi,
                    existing=False,
                    order_no=0,
                )
            )
        return total, page

    def actual_future(self, base: str, exchange: str = "MOEX") -> InstrumentInfo | None:
        """The nearest unexpired future of base code ``base`` (``Si`` -> Si-12.26), or None.

        The catalogue is fixed while the clock is not: once every future of the base has
        passed its expiry, the last to expire is the actual one (it still trades here).
        """
        now = self._now // 1000
        found = sorted(
            (
                info
                for info in self.instruments.values()
                if info.market == "FORTS"
                and info.exchange.casefold() == exchange.casefold()
                and info.short_name.split("-")[0].casefold() == base.casefold()
            ),
            key=self._maturity_s,
        )
        for info in found:
            if self._maturity_s(info) > now:
                return info
        return found[-1] if found else None

    # -- candles -------------------------------------------------------------------------------

    def _clock(self, s: _Sym) -> int:
        return max(self._now, s.max_ts)

    def bars(self, symbol: str, tf: int, from_s: int, to_s: int) -> list[Bar]:
        """Candles of ``tf`` seconds opening in ``[bucket(from_s), to_s]``, oldest first
        (docs/protocol.md §4.3).

        History reaches ``history_days`` back (timeframes under a minute are split from the
        minute candles; those not a multiple of 15 s have live candles only). The last candle
        may be the forming one. ``from_s`` is clamped to ``0..MAX_TIME_S``: no candle lies
        outside it.
        """
        if tf <= 0:
            raise ValueError(f"tf must be a positive number of seconds, got {tf}")
        s = self._sym(symbol)
        series = self._series(s, tf)
        from_s = min(max(from_s, 0), MAX_TIME_S - 1)
        return series.range(bucket_start(from_s, tf), to_s)

    def last_bars(self, symbol: str, tf: int, to_s: int, n: int) -> list[Bar]:
        """The last ``n`` candles of ``tf`` seconds opening at or before ``to_s``."""
        return self._series(self._sym(symbol), tf).last_before(to_s, max(0, n))

    def neighbours(
        self, symbol: str, tf: int, first: int, last: int
    ) -> tuple[int | None, int | None]:
        """Open times of the candle before ``first`` and of the one after ``last`` (or None)."""
        series = self._series(self._sym(symbol), tf)
        return series.time_before(first), series.time_after(last)

    def forming_bar(self, symbol: str, tf: int) -> Bar | None:
        """The candle of the current ``tf`` period, or None if nothing traded in it yet."""
        s = self._sym(symbol)
        series = self._series(s, tf)
        last = series.last()
        if last is None or last[0] != series.bucket(self._clock(s) // 1000):
            return None
        return last[1].bar(last[0])

    # -- building history in bounded steps -----------------------------------------------------

    def series_ready(self, symbol: str, tf: int) -> bool:
        """Whether the ``tf`` candles of ``symbol`` are built (then reading them is cheap)."""
        return tf in self._sym(symbol).series

    def build_series(self, symbol: str, tf: int) -> bool:
        """One bounded step (about ``build_chunk`` history rows) of building the ``tf`` candles
        of ``symbol``; True once they are built. Steps of concurrent callers share one build."""
        if tf <= 0:
            raise ValueError(f"tf must be a positive number of seconds, got {tf}")
        return self._advance(self._sym(symbol), tf)

    def build_history(self, symbol: str) -> bool:
        """One bounded step of generating the minute history of ``symbol``; True once done."""
        return self._advance(self._sym(symbol), _MINUTES)

    def check_candles(
        self, symbol: str, tf: int, from_s: int, *, series: bool = True
    ) -> str | None:
        """What is wrong with asking for the ``tf`` candles of ``symbol`` from ``from_s``:
        the message of the 400 refusing it, or None.

        ``tf`` must be 1..:data:`MAX_TF` seconds and ``from_s`` below :data:`MAX_TIME_S`
        (:meth:`bars` reads an earlier one as 0); with ``series`` (candles, not clusters) the
        candles must be kept or can be (:meth:`timeframe_available`).
        """
        if not 0 < tf <= MAX_TF:
            return f"tf: must be 1..{MAX_TF} seconds or D/W/M/Y, got {tf}"
        if from_s >= MAX_TIME_S:
            return f"from: must be Unix seconds below {MAX_TIME_S} (year 9999), got {from_s}"
        if series and not self.timeframe_available(symbol, tf):
            return (
                f"tf: {self.max_timeframes} other timeframes of {symbol} are in use; "
                "use one of them or unsubscribe"
            )
        return None

    @contextlib.contextmanager
    def building(self, symbol: str, tf: int | None) -> Iterator[Callable[[], bool]]:
        """Join the callers stepping the ``tf`` candles (None: the minute history) of
        ``symbol``; yields the step (:meth:`build_series` or :meth:`build_history`).

        When the last caller leaves before the build is done (its connection closed, its
        request was cancelled), the unfinished build is dropped: it no longer counts against
        ``max_timeframes``, and the next caller starts it afresh.
        """
        s = self._sym(symbol)
        key = _MINUTES if tf is None else tf
        s.waiters[key] = s.waiters.get(key, 0) + 1
        try:
            if tf is None:
                yield partial(self.build_history, symbol)
            else:
                yield partial(self.build_series, symbol, tf)
        finally:
            left = s.waiters.pop(key) - 1
            if left:
                s.waiters[key] = left
            elif key > 0:  # the shared minute history is kept: every timeframe needs it
                s.builders.pop(key, None)

    def timeframe_available(self, symbol: str, tf: int) -> bool:
        """Whether ``tf`` candles of ``symbol`` are kept or can be: False only when
        ``max_timeframes`` series are kept (or being built) and none can make room (every
        one is pinned, or the day candles, which are never evicted)."""
        s = self._sym(symbol)
        if tf in s.series or tf in s.builders:
            return True
        kept = len(s.series) + sum(1 for key in s.builders if key > 0)
        return kept < self.max_timeframes or any(self._evictable(s, t) for t in s.series)

    @staticmethod
    def _evictable(s: _Sym, tf: int) -> bool:
        """Whether the ``tf`` series may go to make room: no subscription uses it, and it is
        not the day candles (every quote reads them)."""
        return not s.pins.get(tf) and tf != TIMEFRAMES["D"]

    def pin(self, symbol: str, tf: int) -> None:
        """Keep the ``tf`` candles of ``symbol`` while a subscription uses them."""
        pins = self._sym(symbol).pins
        pins[tf] = pins.get(tf, 0) + 1

    def unpin(self, symbol: str, tf: int) -> None:
        """Undo one :meth:`pin`."""
        pins = self._sym(symbol).pins
        left = pins.get(tf, 0) - 1
        if left > 0:
            pins[tf] = left
        else:
            pins.pop(tf, None)

    def _series(self, s: _Sym, tf: int) -> _Series:
        series = s.series.pop(tf, None)
        if series is None:
            while not self._advance(s, tf):
                pass
            series = s.series.pop(tf)
        s.series[tf] = series  # most recently used last
        return series

    def _advance(self, s: _Sym, key: int) -> bool:
        """One step of the build ``key`` (a timeframe, ``_MINUTES`` or ``_QUARTERS``)."""
        if key == _MINUTES:
            done = s.history is not None
        elif key == _QUARTERS:
            done = s.history15 is not None
        else:
            done = key in s.series
        if done:
            return True
        builder = s.builders.get(key)
        if builder is None:
            if key == _MINUTES:
                builder = self._build_minutes(s)
            elif key == _QUARTERS:
                builder = self._build_quarters(s)
            else:
                builder = self._build_series(s, key)
            s.builders[key] = builder
        try:
            next(builder)
        except StopIteration:
            s.builders.pop(key, None)
            return True
        except BaseException:  # a failed build starts afresh next time
            s.builders.pop(key, None)
            raise
        return False

    def _build_series(self, s: _Sym, tf: int) -> Iterator[None]:
        series = _Series(tf)
        if tf % 15 == 0:
            base = _MINUTES if tf % 60 == 0 else _QUARTERS
            while not self._advance(s, base):
                yield
            history = s.history if base == _MINUTES else s.history15
            assert history is not None
            price_of = s.info.price_of
            step = self.build_chunk
            for i in range(0, len(history), step):
                if i:
                    yield
                # Chunks are in time order: merge() folds a period split between two.
                for t, o, h, low, c, v in _aggregate(history[i : i + step], tf):
                    series.merge(t, price_of(o), price_of(h), price_of(low), price_of(c), v)
            # The live candles last, in the same step as the install: none is missed.
            for t in s.live15.times:
                k = s.live15.candles[t]
                series.merge(t, k.o, k.h, k.l, k.c, k.v)
        else:
            # No finer base is kept: rebuild from the recent tape only (at most 10000 trades).
            top = 0
            for trade in s.recent:
                ts = trade.timestamp or 0
                series.add_trade(ts // 1000, trade.price, trade.qty, late=ts < top)
                top = max(top, ts)
        series_map = s.series
        while len(series_map) >= self.max_timeframes:
            # Evict the least recently used series that may go.
            victim = next((t for t in series_map if self._evictable(s, t)), None)
            if victim is None:
                break
            del series_map[victim]
        series_map[tf] = series

    def _history(self, s: _Sym) -> list[tuple[int, int, int, int, int, int]]:
        while not self._advance(s, _MINUTES):
            pass
        assert s.history is not None
        return s.history

    def _build_minutes(self, s: _Sym) -> Iterator[None]:
        """One-minute candles ``(t, o, h, l, c, v)`` in ticks, generated backwards from the start.

        Own random stream, so generating it lazily does not disturb the live one.
        """
        rng = random.Random(f"alorws-sim:{self.seed}:{s.info.symbol}:history")
        r = rng.random
        spec = s.spec
        n = self.history_days * 1440
        # (r() + r() + r() - 1.5) has a standard deviation of 0.5: a cheap bell curve.
        sigma2 = 2.0 * spec.daily_vol / math.sqrt(1440.0) * s.anchor
        wick = 0.8 * sigma2 / 2.0
        busy, quiet = spec.minute_volume * 1.4, spec.minute_volume * 0.6
        close = s.anchor
        anchor, lo, hi = s.anchor, s.min_ticks, s.max_ticks
        out: list[tuple[int, int, int, int, int, int]] = []
        append = out.append
        t = self._history_end_s
        step = self.build_chunk
        for i in range(n):
            if i and i % step == 0:
                yield
            t -= 60
            drift = (anchor - close) * 0.002  # mean-revert towards the start going back
            open_ = close + round((r() + r() + r() - 1.5) * sigma2 + drift)
            open_ = lo if open_ < lo else hi if open_ > hi else open_
            high = min(hi, (open_ if open_ > close else close) + int(r() * wick + 0.5))
            low = max(lo, (close if open_ > close else open_) - int(r() * wick + 0.5))
            mean = busy if 25_200 <= t % _DAY < 57_600 else quiet  # the MOEX main session
            append((t, open_, high, low, close, 4 + int(mean * (0.4 + 1.2 * r()))))
            close = open_
        out.reverse()
        s.history = out

    def _build_quarters(self, s: _Sym) -> Iterator[None]:
        """The minute history split into four 15 s candles each, consistently."""
        while not self._advance(s, _MINUTES):
            yield
        assert s.history is not None
        rng = random.Random(f"alorws-sim:{self.seed}:{s.info.symbol}:history15")
        out: list[tuple[int, int, int, int, int, int]] = []
        step = max(1, self.build_chunk // 4)
        for i, (t, o, h, low, c, v) in enumerate(s.history):
            if i and i % step == 0:
                yield
            closes = [rng.randint(low, h) for _ in range(3)] + [c]
            opens = [o, *closes[:3]]
            at_high, at_low = rng.randrange(4), rng.randrange(4)
            weights = [rng.random() + 0.2 for _ in range(4)]
            total = sum(weights)
            vols = [1 + int((v - 4) * w / total) for w in weights]
            vols[3] += v - sum(vols)
            for j in range(4):
                sub_h = max(opens[j], closes[j], h if j == at_high else opens[j])
                sub_l = min(opens[j], closes[j], low if j == at_low else opens[j])
                out.append((t + 15 * j, opens[j], sub_h, sub_l, closes[j], vols[j]))
        s.history15 = out

    def clusters(self, symbol: str, tf: int, from_s: int) -> list[ClusterSnapshot]:
        """Traded volume per price and aggressor side per ``tf`` period since ``from_s``
        (docs/protocol.md §4.13).

        Built from the recent tape (the last 10000 trades).
        """
        s = self._sym(symbol)
        start = bucket_start(from_s, tf)
        periods: dict[int, dict[float, list[int]]] = {}
        for trade in s.recent:
            t = bucket_start((trade.timestamp or 0) // 1000, tf)
            if t < start:
                continue
            cell = periods.setdefault(t, {}).setdefault(trade.price, [0, 0])
            cell[0 if trade.side is Side.BUY else 1] += trade.qty
        return [
            ClusterSnapshot(
                timestamp=t,
                trade_clusters=[
                    Cluster(price=p, buy_qty=b, sell_qty=q) for p, (b, q) in sorted(cells.items())
                ],
            )
            for t, cells in sorted(periods.items())
        ]

    # -- bonds ---------------------------------------------------------------------------------

    @staticmethod
    def _maturity_s(info: InstrumentInfo) -> int:
        d = datetime.fromisoformat(info.cancellation[:19]).replace(tzinfo=UTC)
        return _unix(d)

    def _accrued(self, info: InstrumentInfo, now_ms: int) -> float:
        """Accrued coupon per bond (НКД), coupons every ``coupon_period_days`` to maturity."""
        days_left = (self._maturity_s(info) - now_ms // 1000) // _DAY
        into_period = info.coupon_period_days - days_left % info.coupon_period_days
        return round(info.face_value * info.coupon_rate / 100.0 * into_period / 365.0, 2)

    def _yield_fn(self, info: InstrumentInfo, now_ms: int) -> Callable[[float], float]:
        """``price -> yield to maturity`` in percent (the usual closed-form approximation)."""
        years = max(0.01, (self._maturity_s(info) - now_ms // 1000) / (365.25 * _DAY))
        coupon = info.coupon_rate

        def ytm(price: float) -> float:
            return round((coupon + (100.0 - price) / years) / ((100.0 + price) / 2.0) * 100.0, 2)

        return ytm


def symbols_of(events: Iterable[MarketEvent]) -> set[str]:
    """The tickers an event batch touches (a helper for the server and the engine)."""
    return {e.symbol for e in events}
