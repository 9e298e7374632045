"""Type-checked by mypy (listed in pyproject's ``[tool.mypy] files``), never run: every source
is a :data:`StreamSource` and every stream a :class:`DataStream` of its model, while each
source's methods keep its own stream class. A ``# type: ignore[code]`` line asserts an error
(``warn_unused_ignores`` fails the check if the error is gone)."""

from __future__ import annotations

from typing import Any

from alorws.bus import BusClient, BusStream
from alorws.client import (
    AlorClient,
    BlockingStream,
    Client,
    DataStream,
    OrderAck,
    Stream,
    StreamSource,
)
from alorws.protocol.account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from alorws.protocol.market import Bar, InstrumentPatch, OrderBook, Quote, Trade
from alorws.protocol.requests import QuotesRequest
from alorws.record import Replay


def every_stream(source: StreamSource) -> None:
    """The twelve methods of any source, each a DataStream of its model."""
    quotes: DataStream[Quote] = source.quotes("SBER", board="TQBR", frequency=100)
    book: DataStream[OrderBook] = source.order_book("SBER", depth=5, policy="queue")
    bars: DataStream[Bar] = source.bars("SBER", 60, from_=0, skip_history=True)
    trades: DataStream[Trade] = source.all_trades("SBER", depth=10, max_buffer=100)
    instrument: DataStream[InstrumentPatch] = source.instrument("SBER", format="slim")
    positions: DataStream[Position] = source.positions("P", skip_history=True)
    summaries: DataStream[Summary] = source.summaries("P", exchange="SPBX")
    risks: DataStream[Risk] = source.risks("P")
    spectra: DataStream[SpectraRisk] = source.spectra_risks("P")
    fills: DataStream[OwnTrade] = source.own_trades("P")
    orders: DataStream[Order] = source.orders("P", statuses=["working"])
    stops: DataStream[StopOrder] = source.stop_orders("P", silence_timeout=0)
    anything: DataStream[Any] = source.stream(QuotesRequest(code="SBER"), policy="latest")
    del quotes, book, bars, trades, instrument, positions, summaries, risks, spectra, fills
    del orders, stops, anything


async def consume(stream: DataStream[Quote]) -> float | None:
    """The DataStream API: await, async with, async for, get, get_batch."""
    await stream
    async with stream as same:
        async for quote in same:
            return quote.last_price
    batch: list[Quote] = await stream.get_batch(10)
    one: Quote = await stream.get()
    del batch, one
    return None


def sources(client: AlorClient, bus: BusClient, replay: Replay) -> None:
    """Each source is a StreamSource and keeps its own stream class."""
    every_stream(client)
    every_stream(bus)
    every_stream(replay)
    direct: Stream[Quote] = client.quotes("SBER")
    through_bus: BusStream[Quote] = bus.quotes("SBER")
    replayed: Stream[Order] = replay.orders("P")
    payloads = direct.get_payloads  # a Stream's own method stays available
    in_gap: bool = through_bus.in_gap  # and a BusStream's
    any_direct: Stream[Any] = client.stream(QuotesRequest(code="SBER"))
    any_bus: BusStream[Any] = bus.stream(QuotesRequest(code="SBER"))
    del replayed, payloads, in_gap, any_direct, any_bus


def mistakes(client: AlorClient, bus: BusClient) -> None:
    """What the types refuse."""
    wrong: DataStream[Order] = client.quotes("SBER")  # type: ignore[assignment]
    not_bus: BusStream[Quote] = client.quotes("SBER")  # type: ignore[assignment]
    client.quotes("SBER", depth=5)  # type: ignore[call-arg]
    bus.order_book("SBER", depth="5")  # type: ignore[arg-type]
    client.bars("SBER")  # type: ignore[call-arg]
    del wrong, not_bus


async def trading(bus: BusClient) -> None:
    """BusTrading has OrderClient's operations, typed as OrderClient's."""
    ack: OrderAck = await bus.trading.place_stop_limit("P", "SBER", "buy", 1, 300.0, 301.0, "more")
    ack = await bus.trading.modify_stop(ack.order_number, "P", "SBER", "buy", 2, 301.0, "more")
    ack = await bus.trading.cancel(ack.order_number, "P", kind="stop")
    await bus.trading.place_limit("P", "SBER", "buy", 1)  # type: ignore[call-arg]
    await bus.trading.modify_limit("1", "P", "SBER", "buy", 1, 300.0, nope=1)  # type: ignore[call-arg]
    del ack


def blocking(client: Client) -> None:
    """Client's typed methods return a BlockingStream of their model; taking gives the model."""
    quotes: BlockingStream[Quote] = client.quotes("SBER", board="TQBR")
    one: Quote = quotes.get(timeout=1.0)
    orders: BlockingStream[Order] = client.orders("P", skip_history=True)
    newest: Order = orders.latest()
    batch: list[Order] = orders.get_batch(10, timeout=1.0)
    for quote in quotes:
        price: float | None = quote.last_price
    any_stream: BlockingStream[Any] = client.stream(QuotesRequest(code="SBER"))
    wrong: BlockingStream[Order] = client.quotes("SBER")  # type: ignore[assignment]
    client.quotes("SBER", depth=5)  # type: ignore[call-arg]
    del one, newest, batch, price, any_stream, wrong
