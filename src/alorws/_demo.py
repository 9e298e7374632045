"""``alorws demo``: a short, bounded tour of the protocol core (no network, no account).

It renders sample messages of every stream in all three wire formats, routes each frame by guid
and decodes it into the normalized model, then prints a table with the frame size, what came out
and how long route + decode took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from .protocol import _model
from .protocol.account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from .protocol.codec import STREAM_MODELS, DataMessage, decoder_for, route
from .protocol.enums import Condition, Format, OrderStatus, OrderType, Side, SubscriptionOpcode
from .protocol.market import Bar, BookLevel, InstrumentPatch, OrderBook, Quote, Trade


def _samples() -> dict[SubscriptionOpcode, _model.Model]:
    now_ms = 1_750_663_603_557
    book = OrderBook(
        bids=[BookLevel(price=round(312.47 - i / 100, 2), volume=10 * (i + 1)) for i in range(20)],
        asks=[BookLevel(price=round(312.48 + i / 100, 2), volume=9 * (i + 1)) for i in range(20)],
        ms_timestamp=now_ms,
        existing=True,
    )
    return {
        SubscriptionOpcode.QUOTES: Quote(
            symbol="SBER",
            exchange="MOEX",
            last_price=312.48,
            bid=312.47,
            ask=312.48,
            volume=5_312_000_000,
            lot_size=10,
            prev_close_price=310.0,
            change=2.48,
        ),  # fmt: skip
        SubscriptionOpcode.ORDER_BOOK: book,
        SubscriptionOpcode.BARS: Bar(
            time=1_750_663_560, open=312.4, high=312.6, low=312.3, close=312.48, volume=18_420
        ),
        SubscriptionOpcode.ALL_TRADES: Trade(
            id=11_482_203_391,
            symbol="SBER",
            board="TQBR",
            qty=25,
            price=312.48,
            timestamp=now_ms,
            side=Side.BUY,
        ),  # fmt: skip
        SubscriptionOpcode.INSTRUMENT: InstrumentPatch(
            symbol="SiZ6", trading_status=2, trading_status_info="break"
        ),
        SubscriptionOpcode.POSITIONS: Position(
            symbol="SBER", portfolio="D00001", qty_units=100, avg_price=312.41, existing=True
        ),
        SubscriptionOpcode.SUMMARIES: Summary(
            buying_power=123_079.55, portfolio_evaluation=185_568.55
        ),
        SubscriptionOpcode.RISKS: Risk(portfolio="D00001", risk_coverage_ratio_one=185_568.55),
        SubscriptionOpcode.SPECTRA_RISKS: SpectraRisk(portfolio="7500001", money_free=48_211.7),
        SubscriptionOpcode.TRADES: OwnTrade(
            id="9012345678", order_no="53420017781", symbol="SBER", price=312.41, side=Side.BUY
        ),
        SubscriptionOpcode.ORDERS: Order(
            id="53420017781",
            symbol="SBER",
            type=OrderType.LIMIT,
            side=Side.BUY,
            status=OrderStatus.FILLED,
            qty_batch=10,
            filled_qty_batch=10,
            price=312.41,
        ),  # fmt: skip
        SubscriptionOpcode.STOP_ORDERS: StopOrder(
            id="120455",
            symbol="GAZP",
            type=OrderType.STOP_LIMIT,
            side=Side.SELL,
            condition=Condition.LESS_OR_EQUAL,
            stop_price=126.0,
            price=125.5,
        ),  # fmt: skip
    }


def _summary(obj: object) -> str:
    fields = msgspec.structs.asdict(obj)  # type: ignore[arg-type]
    shown = []
    for name, value in fields.items():
        if value is None or value is msgspec.UNSET or value == [] or value is False:
            continue
        if isinstance(value, list):
            value = f"[{len(value)} levels]"
        shown.append(f"{name}={value}")
        if len(shown) == 4:
            break
    return ", ".join(str(s) for s in shown)


def _time_us(fn: Callable[[], object], number: int = 2000) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number * 1e6


def run(print_line: Callable[[str], None] = print) -> int:
    """Print the tour; returns a process exit code."""
    print_line("alorws protocol core: every stream in every format, routed then decoded\n")
    header = f"{'stream':<30}{'format':<8}{'bytes':>6}{'µs':>7}  decoded"
    print_line(header)
    print_line("-" * len(header))
    count = 0
    for opcode, obj in _samples().items():
        model = STREAM_MODELS[opcode]
        for fmt in Format:
            guid = f"{opcode.value[:10].lower()}-{fmt.value.lower()}"
            frame = msgspec.json.encode({"data": _model.to_wire(obj, fmt), "guid": guid})
            decoder = decoder_for(model, fmt)

            def work(frame: bytes = frame, decoder: msgspec.json.Decoder[Any] = decoder) -> object:
                msg = route(frame)
                assert isinstance(msg, DataMessage)
                return decoder.decode(msg.data)

            decoded = work()
            assert isinstance(decoded, model)
            us = _time_us(work)
            print_line(
                f"{opcode.value:<30}{fmt.value:<8}{len(frame):>6}{us:>7.2f}  {_summary(decoded)}"
            )
            count += 1
    print_line(
        f"\n{count} frames decoded into {len(set(STREAM_MODELS.values()))} normalized models."
    )
    print_line("Next: `alorws sim` serves the same protocol locally (see README).")
    return 0
