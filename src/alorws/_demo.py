"""``alorws demo`` (what ``make demo`` runs): a bounded tour against the in-process simulator.

It starts the simulator, subscribes quotes, a book, trades and bars for a few instruments and the
demo account's streams, shows them live, places a limit order, modifies and cancels it, drops
every ``/ws`` connection once (close code 1006) and shows the restore, records every frame to
``demo-data/`` (when :mod:`alorws.record` is available), then prints a summary: messages, the
restore time, the files written and a DuckDB query over the recording (skipped without duckdb).

On a terminal the view is redrawn in place (rich Live); otherwise it prints plain lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table

from .client import AlorClient, LaneEvent, OrderBookView, Stream
from .errors import OrderRejected
from .protocol.account import Order, Position, Summary
from .protocol.backoff import Backoff
from .protocol.market import Bar, Quote, Trade
from .record import Recorder
from .sim.app import Simulator


__all__ = ["Observer", "run"]

#: ``observe(client, streams, stack)``: called with the demo's streams before they subscribe
#: (tests use it to open lossless twins of them, which the client de-duplicates onto the same
#: subscriptions, and to collect what they receive); contexts it enters on ``stack`` are left
#: after the demo's streams close and before the recorder flushes.
Observer = Callable[
    [AlorClient, dict[str, Stream[Any]], contextlib.AsyncExitStack], Awaitable[object]
]

SYMBOLS = ("SBER", "GAZP", "LKOH")
BOOK_SYMBOL = "SBER"
TRADE_SYMBOLS = ("SBER", "GAZP")
BAR_SYMBOL, BAR_TF = "SBER", 60


@dataclass
class _State:
    """Everything the live view and the summary show."""

    #: The demo's clock: set again once every stream is subscribed, so that ``duration``
    #: (and each step of the script) counts streaming time, however long set-up took.
    started: float = field(default_factory=time.monotonic)
    quotes: dict[str, Quote] = field(default_factory=dict)
    book: OrderBookView = field(default_factory=OrderBookView)
    trades: deque[Trade] = field(default_factory=lambda: deque(maxlen=6))
    bars: dict[int, Bar] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    summary: Summary | None = None
    received: dict[str, int] = field(default_factory=dict)
    events: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    restores: dict[int, float] = field(default_factory=dict)
    drop_at: float | None = None
    dropped_lanes: set[int] = field(default_factory=set)
    all_restored: asyncio.Event = field(default_factory=asyncio.Event)
    order_steps: list[str] = field(default_factory=list)

    def count(self, name: str, n: int = 1) -> None:
        self.received[name] = self.received.get(name, 0) + n

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def run(
    duration: float = 30.0,
    out: Path | str = "demo-data",
    console: Console | None = None,
    metrics_port: int | None = None,
    observe: Observer | None = None,
) -> int:
    """Run the demo: it streams for ``duration`` seconds from the moment every stream is
    subscribed (set-up before and the summary after come on top); returns the exit code (0)."""
    console = console or Console(markup=False, highlight=False, emoji=False)
    return asyncio.run(_demo(max(1.0, duration), Path(out), console, metrics_port, observe))


async def _demo(
    duration: float,
    out: Path,
    console: Console,
    metrics_port: int | None,
    observe: Observer | None = None,
) -> int:
    state = _State()
    wall_start = time.time()
    interactive = console.is_terminal

    def note(text: str) -> None:
        stamped = f"+{state.elapsed():5.1f}s {text}"
        state.events.append(stamped)
        if not interactive:
            console.print(stamped)

    console.print(f"alorws demo: {duration:.0f} s against the in-process simulator")
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(Simulator(port=0, seed=7, rate=50.0))
        portfolio = str(sim.demo.portfolios[0])
        client = await stack.enter_async_context(
            AlorClient(
                sim.demo_refresh_token,
                base_url=sim.url,
                backoff=Backoff(base=0.05, cap=1.0),
                ping_interval=2.0,
                ping_timeout=2.0,
            )
        )
        note(f"simulator at {sim.url}, demo portfolio {portfolio}")
        if metrics_port is not None:
            from .metrics import start_metrics

            server = start_metrics(client, metrics_port)
            stack.callback(server.close)
            note(f"metrics at {server.url}")
        recorder = await _start_recorder(stack, client, out, note)

        streams = await _subscribe(stack, client, portfolio, state, observe)
        state.started = time.monotonic()  # streaming starts now: the duration counts from here
        note(f"subscribed {len(streams)} streams on {client.stats()['connections']} connections")
        workers = [asyncio.create_task(_consume(name, s, state)) for name, s in streams.items()]
        workers.append(asyncio.create_task(state.book.follow(streams[f"book {BOOK_SYMBOL}"])))
        script = asyncio.create_task(_script(duration, client, sim, portfolio, state, note))
        try:
            await _show(duration, console, state, client, script)
            await script  # raises what the script raised
        finally:
            for task in (*workers, script):
                task.cancel()
            await asyncio.gather(*workers, script, return_exceptions=True)
        stats = client.stats()
        orders = client.trading.stats()
        await stack.aclose()  # streams, then the recorder flushes, then the client, the sim
        rec_stats = dict(recorder.stats())
    _summary(console, state, stats, orders, rec_stats, out, wall_start)
    return 0


async def _start_recorder(
    stack: contextlib.AsyncExitStack, client: AlorClient, out: Path, note: Callable[[str], None]
) -> Recorder:
    recorder = await stack.enter_async_context(Recorder(client, out))
    note(f"recording every frame to {out}/")
    return recorder


async def _subscribe(
    stack: contextlib.AsyncExitStack,
    client: AlorClient,
    portfolio: str,
    state: _State,
    observe: Observer | None = None,
) -> dict[str, Stream[Any]]:
    wanted: dict[str, Stream[Any]] = {}
    for sym in SYMBOLS:
        wanted[f"quotes {sym}"] = client.quotes(sym)
    wanted[f"book {BOOK_SYMBOL}"] = client.order_book(BOOK_SYMBOL, depth=10)
    for sym in TRADE_SYMBOLS:
        wanted[f"trades {sym}"] = client.all_trades(sym)
    wanted[f"bars {BAR_SYMBOL}"] = client.bars(
        BAR_SYMBOL, BAR_TF, from_=int(time.time()) - 5 * BAR_TF
    )
    wanted["orders"] = client.orders(portfolio)
    wanted["positions"] = client.positions(portfolio)
    wanted["summary"] = client.summaries(portfolio)
    wanted["own trades"] = client.own_trades(portfolio)
    if observe is not None:
        await observe(client, wanted, stack)
    opened = await asyncio.gather(*(stack.enter_async_context(s) for s in wanted.values()))
    streams = dict(zip(wanted, opened, strict=True))
    for s in streams.values():
        s.on_event(lambda event: _on_event(event, state))
    return streams


def _on_event(event: LaneEvent, state: _State) -> None:
    if event.kind == "restored" and state.drop_at is not None:
        state.restores.setdefault(event.lane, event.downtime)
        if state.dropped_lanes <= set(state.restores):
            state.all_restored.set()


async def _consume(name: str, stream: Stream[Any], state: _State) -> None:
    if name.startswith("book"):
        return  # followed by the OrderBookView
    while True:
        batch = await stream.get_batch()
        state.count(name, len(batch))
        for item in batch:
            if isinstance(item, Quote):
                state.quotes[item.symbol] = item
            elif isinstance(item, Trade):
                state.trades.append(item)
            elif isinstance(item, Bar):
                state.bars[item.time] = item
            elif isinstance(item, Order):
                state.orders[item.id] = item
            elif isinstance(item, Position):
                state.positions[item.symbol] = item
            elif isinstance(item, Summary):
                state.summary = item


async def _script(
    duration: float,
    client: AlorClient,
    sim: Simulator,
    portfolio: str,
    state: _State,
    note: Callable[[str], None],
) -> None:
    """Place, modify and cancel a limit order, then drop the connections once."""

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, duration * fraction - state.elapsed()))

    await at(0.15)
    bid = state.book.best_bid or (state.quotes.get("SBER") or Quote(symbol="SBER")).bid or 300.0
    price = round(bid - 1.0, 2)  # below the market: it rests in the book
    trading = client.trading
    # Good till cancelled: a day order placed just before midnight UTC (the simulator's end of
    # day) would expire under the demo's feet and its cancel be refused.
    ack = await trading.place_limit(
        portfolio, "SBER", "buy", 1, price, time_in_force="goodtillcancelled"
    )
    state.order_steps.append(f"placed {ack.order_number} buy 1 SBER @ {price}")
    note(f"order {ack.order_number} placed: limit buy 1 SBER @ {price}")
    await at(0.25)
    new_price = round(price - 0.5, 2)
    try:
        moved = await trading.modify_limit(ack.order_number, portfolio, "SBER", "buy", 1, new_price)
        state.order_steps.append(f"modified -> {moved.order_number} @ {new_price}")
        note(f"order {ack.order_number} modified: now {moved.order_number} @ {new_price}")
        await at(0.35)
        await trading.cancel(moved.order_number, portfolio)
        state.order_steps.append(f"cancelled {moved.order_number}")
        note(f"order {moved.order_number} cancelled")
    except OrderRejected as exc:  # the market moved through the price and filled it first
        state.order_steps.append(f"refused: {exc.message}")
        note(f"order step refused by the server: {exc.message}")
    await at(0.5)
    state.dropped_lanes = {lane["id"] for lane in client.stats()["lanes"]}
    state.drop_at = time.monotonic()
    dropped = sim.faults.drop(code=1006, kind="ws")
    note(f"injected a connection drop: {dropped} /ws connection(s) cut (1006)")
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(5.0, duration * 0.4)):
            await state.all_restored.wait()
    for lane, downtime in sorted(state.restores.items()):
        note(f"lane {lane} restored after {downtime * 1000:.0f} ms")
    if not state.all_restored.is_set():
        note("some connections did not report a restore in time")


async def _show(
    duration: float,
    console: Console,
    state: _State,
    client: AlorClient,
    script: asyncio.Task[None],
) -> None:
    """Show the live view until ``duration`` passed (or the script failed)."""
    deadline = state.started + duration

    async def wait(seconds: float) -> None:
        if script.done():  # the script is over: just let the time pass
            await asyncio.sleep(max(0.0, seconds))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(script), timeout=max(0.0, seconds))

    if console.is_terminal:
        with Live(_view(state, client), console=console, refresh_per_second=4) as live:
            while time.monotonic() < deadline:
                await wait(min(0.25, deadline - time.monotonic()))
                if script.done() and script.exception() is not None:
                    return
                live.update(_view(state, client))
        return
    every = max(1.0, duration / 10)
    while time.monotonic() < deadline:
        await wait(min(every, deadline - time.monotonic()))
        if script.done() and script.exception() is not None:
            return
        console.print(f"+{state.elapsed():5.1f}s {_line(state, client)}")


def _line(state: _State, client: AlorClient) -> str:
    stats = client.stats()
    prices = " ".join(f"{s} {state.quotes[s].last_price}" for s in SYMBOLS if s in state.quotes)
    return (
        f"messages {stats['messages']:,}, reconnects {stats['reconnects']}; {prices}; "
        f"book {state.book.best_bid}/{state.book.best_ask}; "
        f"trades {sum(v for k, v in state.received.items() if k.startswith('trades')):,}; "
        f"orders {len(state.orders)}"
    )


def _view(state: _State, client: AlorClient) -> RenderableType:
    quotes = Table(title="Quotes")
    for col in ("Symbol", "Last", "Bid", "Ask", "Volume"):
        quotes.add_column(col, justify="left" if col == "Symbol" else "right")
    for sym in SYMBOLS:
        q = state.quotes.get(sym)
        quotes.add_row(
            sym,
            *(("-",) * 4 if q is None else (str(q.last_price), str(q.bid), str(q.ask),
                                             f"{q.volume or 0:,}")),
        )  # fmt: skip
    book = Table(title=f"{BOOK_SYMBOL} book" + (" (stale)" if state.book.stale else ""))
    for col in ("Bid vol", "Bid", "Ask", "Ask vol"):
        book.add_column(col, justify="right")
    for i in range(5):
        b = state.book.bids[i] if i < len(state.book.bids) else None
        a = state.book.asks[i] if i < len(state.book.asks) else None
        book.add_row(
            str(b.volume) if b else "", str(b.price) if b else "",
            str(a.price) if a else "", str(a.volume) if a else "",
        )  # fmt: skip
    tape = Table(title="Trades")
    for col in ("Symbol", "Side", "Price", "Qty"):
        tape.add_column(col, justify="right")
    for t in reversed(state.trades):
        tape.add_row(t.symbol or "-", t.side.value if t.side else "-", str(t.price), str(t.qty))
    account = Table(title="Account")
    account.add_column("Orders", justify="right")
    account.add_column("Positions", justify="right")
    account.add_column("Buying power", justify="right")
    account.add_row(
        str(len(state.orders)),
        str(len(state.positions)),
        f"{state.summary.buying_power:,.2f}"
        if state.summary and state.summary.buying_power is not None
        else "-",
    )
    events = Table(title="Events", show_header=False)
    events.add_column("Event")
    for e in state.events:
        events.add_row(e)
    stats = client.stats()
    footer = (
        f"{stats['connections']} connections, {stats['subscriptions']} subscriptions, "
        f"{stats['messages']:,} messages, {stats['reconnects']} reconnects"
    )
    return Group(quotes, book, tape, account, events, footer)


def _summary(
    console: Console,
    state: _State,
    stats: dict[str, Any],
    orders: dict[str, Any],
    rec_stats: dict[str, Any],
    out: Path,
    wall_start: float,
) -> None:
    console.print()
    table = Table(title="Demo summary", show_header=False)
    table.add_column("What")
    table.add_column("Value")
    table.add_row("ran for", f"{state.elapsed():.1f} s")
    table.add_row(
        "messages",
        f"{stats['messages']:,} frames, {stats['bytes']:,} bytes on "
        f"{stats['connections']} connections",
    )
    for name in sorted(state.received):
        table.add_row(f"  {name}", f"{state.received[name]:,}")
    latency = orders.get("latency_us", {})
    table.add_row(
        "orders",
        "; ".join(state.order_steps) + f" (ack p50 {latency.get('p50')} us)",
    )
    if state.restores:
        worst = max(state.restores.values())
        table.add_row(
            "restore",
            f"{len(state.restores)} connection(s) restored, slowest in {worst * 1000:.0f} ms "
            f"({stats['reconnects']} reconnects)",
        )
    else:
        table.add_row("restore", "no restore observed")
    files = _files_written(out, wall_start)
    size = sum(f.stat().st_size for f in files)
    table.add_row("recording", f"{len(files)} Parquet files written to {out}/ ({size:,} bytes)")
    for key in ("rows", "dropped", "lag", "error"):
        if key in rec_stats:
            table.add_row(f"  {key}", str(rec_stats[key]))
    console.print(table)
    if files:
        _duckdb(console, files)
    console.print(
        f"demo finished: {stats['messages']:,} messages, "
        f"restore {max(state.restores.values(), default=0.0) * 1000:.0f} ms, "
        f"{len(files)} files written"
    )


def _files_written(out: Path, since: float) -> list[Path]:
    if not out.is_dir():
        return []
    return sorted(p for p in out.rglob("*.parquet") if p.stat().st_mtime >= since - 1.0)


def _duckdb(console: Console, files: list[Path]) -> None:
    try:
        import duckdb
    except ImportError:
        console.print("DuckDB query skipped: duckdb is not installed (pip install duckdb)")
        return
    paths = [str(p) for p in files]
    try:
        con = duckdb.connect()
        try:
            source = "read_parquet($files, hive_partitioning = true, union_by_name = true)"
            columns = [
                row[0]
                for row in con.execute(
                    f"DESCRIBE SELECT * FROM {source}", {"files": paths}
                ).fetchall()
            ]
            group = "stream" if "stream" in columns else None
            if group is not None:
                sql = f"SELECT {group}, count(*) AS frames FROM {source} GROUP BY 1 ORDER BY 1"
            else:
                sql = f"SELECT count(*) AS frames FROM {source}"
            rows = con.execute(sql, {"files": paths}).fetchall()
        finally:
            con.close()
    except Exception as exc:  # the recording's layout is the recorder's business
        console.print(f"DuckDB query failed: {type(exc).__name__}: {exc}")
        return
    console.print(f"DuckDB: {sql.replace(source, 'read_parquet(<files of this run>)')}")
    table = Table(title="Frames in the recording")
    if group is not None:
        table.add_column(group)
    table.add_column("frames", justify="right")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    console.print(table)
