"""The ``alorws`` command line (``python -m alorws`` works too).

Every command that talks to a server takes the target: ``--sim`` (an in-process simulator and
its demo account), ``--env dev|prod`` (ALOR) or ``--url`` (any compatible server, e.g. a running
``alorws sim``). The refresh token comes from ``--token-file PATH`` or ``ALOR_REFRESH_TOKEN``;
it is never a command-line argument and never printed.

Live commands (``quotes``, ``book``, ``trades``, ``bars``, ``portfolio``, ``status``,
``record``, ``replay``) run until Ctrl-C, or ``--duration S`` seconds; ``--metrics-port N``
serves Prometheus metrics meanwhile. On a terminal they redraw a table (rich Live); otherwise
they print a plain line per second and the table at the end.

Errors print one line (and a hint) to stderr and exit 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import sys
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text


if TYPE_CHECKING:
    from .client import AlorClient, Stream
    from .metrics import ClientCollector, MetricsServer
    from .protocol.market import Bar, Quote, Trade
    from .sim.app import Simulator


__all__ = ["app", "main"]

TOKEN_ENV = "ALOR_REFRESH_TOKEN"

app = typer.Typer(
    name="alorws",
    help="Toolkit for the ALOR Broker API: live data, orders, history, recording, metrics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# -- errors ------------------------------------------------------------------------------------


class CliError(Exception):
    """A user-facing failure: one line, an optional hint, exit code 1."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def _hint_for(exc: BaseException) -> str | None:
    from .errors import (
        AuthError,
        ConfigurationError,
        LimitError,
        OrderRejected,
        TransportError,
    )

    if isinstance(exc, AuthError):
        return (
            "check the refresh token (--token-file or ALOR_REFRESH_TOKEN) and that it belongs "
            "to --env; try --sim for the local simulator"
        )
    if isinstance(exc, OrderRejected):
        return "the server refused the command; nothing was executed"
    if isinstance(exc, TransportError | OSError):
        return "check --url/--env and the network; try --sim for the local simulator"
    if isinstance(exc, ConfigurationError):
        return "see `alorws COMMAND --help`"
    if isinstance(exc, LimitError):
        return "subscribe fewer streams or raise the limits"
    return None


def _report(exc: BaseException, debug: bool) -> int:
    """Print ``exc`` as one line (and a hint) on stderr; the traceback only with --debug."""
    if debug:
        sys.stderr.write("".join(traceback.format_exception(exc)))
    message = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, CliError):
        message = f"{type(exc).__name__}: {message}"
    sys.stderr.write(f"alorws: error: {' '.join(message.split())}\n")
    hint = exc.hint if isinstance(exc, CliError) else _hint_for(exc)
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    sys.stderr.flush()
    return 1


# -- common options ----------------------------------------------------------------------------


class Env(enum.StrEnum):
    prod = "prod"
    dev = "dev"


SimOpt = Annotated[
    bool, typer.Option("--sim", help="Start an in-process simulator and use its demo account.")
]
EnvOpt = Annotated[Env, typer.Option("--env", help="ALOR environment (dev = ALOR's test one).")]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Base URL of a compatible server, e.g. http://127.0.0.1:8765."),
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help=f"File holding the refresh token (default: ${TOKEN_ENV}).",
        dir_okay=False,
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")]
DurationOpt = Annotated[
    float | None,
    typer.Option("--duration", min=0.0, help="Run for S seconds, then exit 0 (default: Ctrl-C)."),
]
MetricsOpt = Annotated[
    int | None,
    typer.Option("--metrics-port", min=0, help="Serve Prometheus metrics on this port."),
]
PortfolioOpt = Annotated[
    str | None,
    typer.Option("--portfolio", help="Portfolio id (default with --sim: the demo's first)."),
]


@dataclass
class Target:
    """Where to connect and with which token (never printed)."""

    sim: bool = False
    env: Env = Env.prod
    url: str | None = None
    token_file: Path | None = None
    metrics_port: int | None = None

    def describe(self) -> str:
        if self.sim:
            return "the in-process simulator"
        return self.url or f"ALOR {self.env.value}"


def _read_token(target: Target) -> str:
    if target.token_file is not None:
        try:
            token = target.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(
                f"cannot read the token file {str(target.token_file)!r}: {exc.strerror}",
                "pass --token-file with the file holding your refresh token",
            ) from None
        if not token:
            raise CliError(f"the token file {str(target.token_file)!r} is empty")
        return token
    from .client.auth import resolve_refresh_token
    from .errors import ConfigurationError

    try:  # ALOR_REFRESH_TOKEN, the token file, the OS keyring (docs/client.md, "Tokens")
        return resolve_refresh_token()
    except ConfigurationError as exc:
        raise CliError(str(exc), "pass --token-file PATH, or use --sim for the simulator") from None


@dataclass
class Session:
    """An open client (and the simulator behind it, with --sim)."""

    client: AlorClient
    target: Target
    sim: Simulator | None = None
    collector: ClientCollector | None = None
    metrics: MetricsServer | None = None

    def portfolio(self, given: str | None) -> str:
        if given:
            return given
        if self.sim is not None:
            return str(self.sim.demo.portfolios[0])
        known = ", ".join(self.client.portfolios) or "none in the token"
        raise CliError("--portfolio is required", f"your portfolios: {known}")


@contextlib.asynccontextmanager
async def _connect(target: Target) -> AsyncIterator[Session]:
    from .client import AlorClient
    from .protocol.backoff import Backoff

    async with contextlib.AsyncExitStack() as stack:
        sim: Simulator | None = None
        base_url: str | None
        if target.sim:
            from .sim.app import Simulator

            sim = await stack.enter_async_context(Simulator(port=0, seed=1, rate=50.0))
            token, base_url = sim.demo_refresh_token, sim.url
        else:
            token, base_url = _read_token(target), target.url
        client = AlorClient(
            token,
            env=target.env.value,
            base_url=base_url,
            backoff=Backoff(base=0.05, cap=5.0) if target.sim else None,
        )
        await stack.enter_async_context(client)
        session = Session(client, target, sim)
        if target.metrics_port is not None:
            from .metrics import start_metrics

            server = start_metrics(client, target.metrics_port)
            stack.callback(server.close)
            session.metrics, session.collector = server, server.collector
        yield session


def _target(
    sim: bool,
    env: Env,
    url: str | None,
    token_file: Path | None,
    debug: bool,
    metrics_port: int | None = None,
) -> Target:
    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    if sim and url is not None:
        raise CliError("--sim and --url exclude each other", "pick one target")
    return Target(sim=sim, env=env, url=url, token_file=token_file, metrics_port=metrics_port)


# -- output ------------------------------------------------------------------------------------


def _console() -> Console:
    interactive = sys.stdout.isatty()
    return Console(markup=False, highlight=False, emoji=False, width=None if interactive else 120)


def _num(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _clock(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S.%f")[:-3]


def _stamp() -> str:
    return datetime.now().strftime("%H:%M:%S")


async def _run_live(
    session: Session,
    console: Console,
    workers: Sequence[Coroutine[Any, Any, None]],
    render: Callable[[], RenderableType],
    line: Callable[[], str] | None,
    duration: float | None,
) -> None:
    """Run ``workers`` until ``duration`` passes (or Ctrl-C, or they all end), redrawing
    ``render()`` on a terminal and printing ``line()`` every second otherwise; the final view is
    printed at the end when not on a terminal. A worker's exception ends the run and is raised.
    """
    tasks = [asyncio.create_task(w) for w in workers]
    collector = session.collector
    try:
        if console.is_terminal:
            with Live(render(), console=console, refresh_per_second=4) as live:

                def redraw() -> None:
                    if collector is not None:
                        collector.poll()
                    live.update(render())

                await _supervise(tasks, duration, redraw, 0.25)
        else:

            def plain() -> None:
                if collector is not None:
                    collector.poll()
                if line is not None:
                    console.print(f"{_stamp()} {line()}")

            await _supervise(tasks, duration, plain, 1.0)
            console.print(render())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _supervise(
    tasks: list[asyncio.Task[None]],
    duration: float | None,
    tick: Callable[[], None],
    interval: float,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    while True:
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if tasks and all(t.done() for t in tasks):
            return
        now = loop.time()
        if deadline is not None and now >= deadline:
            return
        wait = interval if deadline is None else min(interval, deadline - now)
        pending = [t for t in tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(wait)
        if deadline is None or loop.time() < deadline or not tasks:
            tick()


def _run(coro: Awaitable[None]) -> None:
    async def wrapper() -> None:
        await coro

    asyncio.run(wrapper())


# -- sim and demo --------------------------------------------------------------------------------


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def sim(ctx: typer.Context) -> None:
    """Run the simulator (ALOR-compatible local server); `alorws sim --help` for its flags."""
    from .sim import app as sim_app

    raise typer.Exit(sim_app.main(list(ctx.args)))


@app.command()
def demo(
    duration: Annotated[
        float, typer.Option("--duration", min=1.0, help="Seconds to run (about).")
    ] = 30.0,
    out: Annotated[Path, typer.Option("--out", help="Where to record.")] = Path("demo-data"),
    metrics_port: MetricsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """A bounded tour against the in-process simulator: live view, an order placed, modified and
    cancelled, a dropped connection restored, everything recorded, a summary."""
    from . import _demo

    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    code = _demo.run(duration=duration, out=out, console=_console(), metrics_port=metrics_port)
    raise typer.Exit(code)


# -- market data ---------------------------------------------------------------------------------


@app.command()
def quotes(
    symbols: Annotated[list[str], typer.Argument(help="Tickers, e.g. SBER GAZP.")],
    sim: SimOpt = False,
    env: EnvOpt = Env.prod,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """A live table of quotes."""
    target = _target(sim, env, url, token_file, debug, metrics_port)
    console = _console()
    symbols = [s.upper() for s in symbols]
    latest: dict[str, Quote] = {}
    counts = dict.fromkeys(symbols, 0)

    async def follow(session: Session, symbol: str) -> None:
        async with session.client.quotes(symbol) as stream:
            async for quote in stream:
                latest[symbol] = quote
                counts[symbol] += 1

    def render() -> Table:
        table = Table(title="Quotes")
        for col in ("Symbol", "Last", "Bid", "Ask", "Chg %", "Volume", "Updates"):
            table.add_column(col, justify="left" if col == "Symbol" else "right")
        for symbol in symbols:
            q = latest.get(symbol)
            if q is None:
                table.add_row(symbol, "-", "-", "-", "-", "-", "0")
                continue
            change = q.change_percent
            if change is None and q.last_price is not None and q.prev_close_price:
                change = (q.last_price / q.prev_close_price - 1) * 100
            table.add_row(
                symbol,
                _num(q.last_price),
                _num(q.bid),
                _num(q.ask),
                _num(change),
                _num(q.volume),
                str(counts[symbol]),
            )
        return table

    def line() -> str:
        return "  ".join(
            f"{s} {_num(latest[s].last_price) if s in latest else '-'}" for s in symbols
        )

    async def body() -> None:
        async with _connect(target) as session:
            await _run_live(
                session, console, [follow(session, s) for s in symbols], render, line, duration
            )

    _run(body())


@app.command()
def book(
    symbol: Annotated[str, typer.Argument(help="Ticker, e.g. SBER.")],
    depth: Annotated[int, typer.Option("--depth", min=1, max=50, help="Levels a side.")] = 10,
    sim: SimOpt = False,
    env: EnvOpt = Env.prod,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """A live order book ladder."""
    from .client import OrderBookView

    target = _target(sim, env, url, token_file, debug, metrics_port)
    console = _console()
    symbol = symbol.upper()
    view = OrderBookView()

    async def follow(session: Session) -> None:
        async with session.client.order_book(symbol, depth=depth) as stream:
            await view.follow(stream)

    def render() -> Table:
        state = " (stale)" if view.stale else ""
        table = Table(
            title=f"{symbol} book: spread {_num(view.spread)}, mid {_num(view.mid, 3)}{state}"
        )
        for col in ("Bid vol", "Bid", "Ask", "Ask vol"):
            table.add_column(col, justify="right")
        bids, asks = view.bids, view.asks
        for i in range(max(len(bids), len(asks), 1) if view.book else 0):
            bid = bids[i] if i < len(bids) else None
            ask = asks[i] if i < len(asks) else None
            table.add_row(
                _num(bid.volume) if bid else "",
                Text(_num(bid.price), style="green") if bid else "",
                Text(_num(ask.price), style="red") if ask else "",
                _num(ask.volume) if ask else "",
            )
        return table

    def line() -> str:
        return (
            f"{symbol} bid {_num(view.best_bid)} ask {_num(view.best_ask)} "
            f"spread {_num(view.spread)} updates {view.updates}"
        )

    async def body() -> None:
        async with _connect(target) as session:
            await _run_live(session, console, [follow(session)], render, line, duration)

    _run(body())


@app.command()
def trades(
    symbol: Annotated[str, typer.Argument(help="Ticker, e.g. SBER.")],
    last: Annotated[int, typer.Option("--last", min=1, help="Trades shown.")] = 20,
    sim: SimOpt = False,
    env: EnvOpt = Env.prod,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """The trade tape (a line per trade when not on a terminal)."""
    target = _target(sim, env, url, token_file, debug, metrics_port)
    console = _console()
    symbol = symbol.upper()
    tape: deque[Trade] = deque(maxlen=last)
    total = [0, 0]  # trades, lots

    def fmt(t: Trade) -> tuple[str, str, str, str]:
        side = t.side.value if t.side is not None else "-"
        return _clock(t.timestamp), side, _num(t.price), _num(t.qty)

    async def follow(session: Session) -> None:
        async with session.client.all_trades(symbol) as stream:
            async for trade in stream:
                tape.append(trade)
                total[0] += 1
                total[1] += trade.qty
                if not console.is_terminal:
                    console.print(" ".join((*fmt(trade), symbol)))

    def render() -> Table:
        table = Table(title=f"{symbol} tape: {total[0]} trades, {total[1]:,} lots")
        for col in ("Time", "Side", "Price", "Qty"):
            table.add_column(col, justify="right")
        for trade in reversed(tape):
            time_, side, price, qty = fmt(trade)
            style = "green" if side == "buy" else "red"
            table.add_row(time_, Text(side, style=style), price, qty)
        return table

    async def body() -> None:
        async with _connect(target) as session:
            await _run_live(session, console, [follow(session)], render, None, duration)

    _run(body())


_SPANS = {"D": 86_400, "W": 7 * 86_400, "M": 31 * 86_400, "Y": 366 * 86_400}


def _span(tf: str) -> int:
    key = tf.strip().upper()
    if key in _SPANS:
        return _SPANS[key]
    try:
        seconds = int(key)
    except ValueError:
        raise CliError(
            f"bad timeframe {tf!r}", "use seconds (60, 300, 3600) or D, W, M, Y"
        ) from None
    if seconds <= 0:
        raise CliError(f"bad timeframe {tf!r}", "use a positive number of seconds")
    return seconds


def _tf(tf: str) -> int | str:
    key = tf.strip().upper()
    return key if key in _SPANS else int(key)


def _bar_time(t: int, tf: str) -> str:
    fmt = "%Y-%m-%d" if _span(tf) >= 86_400 else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(t).strftime(fmt)


def _bars_table(title: str, bars: Sequence[Bar], tf: str) -> Table:
    table = Table(title=title)
    for col in ("Time", "Open", "High", "Low", "Close", "Volume"):
        table.add_column(col, justify="right")
    for b in bars:
        table.add_row(
            _bar_time(b.time, tf), _num(b.open), _num(b.high), _num(b.low), _num(b.close),
            _num(b.volume),
        )  # fmt: skip
    return table


@app.command()
def bars(
    symbol: Annotated[str, typer.Argument(help="Ticker, e.g. SBER.")],
    tf: Annotated[str, typer.Option("--tf", help="Timeframe: seconds or D/W/M/Y.")] = "60",
    last: Annotated[int, typer.Option("--last", min=1, help="Candles shown.")] = 15,
    sim: SimOpt = False,
    env: EnvOpt = Env.prod,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Live candles (the last few, then every update of the forming one)."""
    target = _target(sim, env, url, token_file, debug, metrics_port)
    console = _console()
    symbol = symbol.upper()
    span = _span(tf)
    candles: dict[int, Bar] = {}
    updates = [0]

    async def follow(session: Session) -> None:
        since = int(time.time()) - span * last
        async with session.client.bars(symbol, _tf(tf), from_=since) as stream:
            async for bar in stream:
                candles[bar.time] = bar
                updates[0] += 1
                for old in sorted(candles)[:-last]:
                    del candles[old]

    def shown() -> list[Bar]:
        return [candles[t] for t in sorted(candles)]

    def render() -> Table:
        return _bars_table(f"{symbol} {tf} candles ({updates[0]} updates)", shown(), tf)

    def line() -> str:
        rows = shown()
        if not rows:
            return f"{symbol} {tf}: no candles yet"
        b = rows[-1]
        return (
            f"{symbol} {tf} {_bar_time(b.time, tf)} O {_num(b.open)} H {_num(b.high)} "
            f"L {_num(b.low)} C {_num(b.close)} V {b.volume:,}"
        )

    async def body() -> None:
        async with _connect(target) as session:
            await _run_live(session, console, [follow(session)], render, line, duration)

    _run(body())


# -- account -------------------------------------------------------------------------------------


@app.command()
def portfolio(
    portfolio: Annotated[
        str | None, typer.Argument(help="Portfolio id (default with --sim: the demo's first).")
    ] = None,
    sim: SimOpt = False,
    env: EnvOpt = Env.prod,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Positions, orders and the summary of a portfolio, live."""
    from .protocol.account import Order, Position, Summary

    target = _target(sim, env, url, token_file, debug, metrics_port)
    console = _console()
    positions: dict[str, Position] = {}
    orders: dict[str, Order] = {}
    summary: list[Summary] = []
    chosen = [portfolio or ""]

    async def follow_positions(session: Session) -> None:
        async with session.client.positions(chosen[0]) as stream:
            async for p in stream:
                positions[p.symbol] = p

    async def follow_orders(session: Session) -> None:
        async with session.client.orders(chosen[0]) as stream:
            async for o in stream:
                orders[o.id] = o

    async def follow_summary(session: Session) -> None:
        async with session.client.summaries(chosen[0]) as stream:
            async for s in stream:
                summary[:] = [s]

    def render() -> RenderableType:
        head = Table(title=f"Portfolio {chosen[0]}")
        for col in ("Buying power", "Evaluation", "Liquidation value", "Profit", "Profit %"):
            head.add_column(col, justify="right")
        if summary:
            s = summary[0]
            head.add_row(
                _num(s.buying_power), _num(s.portfolio_evaluation),
                _num(s.portfolio_liquidation_value), _num(s.profit), _num(s.profit_rate),
            )  # fmt: skip
        pos = Table(title=f"Positions ({len(positions)})")
        for col in ("Symbol", "Qty", "Avg price", "Value", "Current value"):
            pos.add_column(col, justify="left" if col == "Symbol" else "right")
        for sym in sorted(positions):
            p = positions[sym]
            pos.add_row(
                sym, _num(p.qty_units, 0), _num(p.avg_price), _num(p.volume),
                _num(p.current_volume),
            )  # fmt: skip
        ords = Table(title=f"Orders ({len(orders)})")
        for col in ("Id", "Symbol", "Side", "Type", "Qty", "Filled", "Price", "Status"):
            ords.add_column(col, justify="right")
        for o in sorted(orders.values(), key=lambda o: o.update_time or "")[-15:]:
            ords.add_row(
                o.id, o.symbol or "-", o.side.value if o.side else "-",
                o.type.value if o.type else "-", _num(o.qty_batch), _num(o.filled_qty_batch),
                _num(o.price), o.status.value if o.status else "-",
            )  # fmt: skip
        return Group(head, pos, ords)

    def line() -> str:
        bp = _num(summary[0].buying_power) if summary else "-"
        return f"{chosen[0]}: buying power {bp}, {len(positions)} positions, {len(orders)} orders"

    async def body() -> None:
        async with _connect(target) as session:
            chosen[0] = session.portfolio(portfolio)
            workers = [follow_positions(session), follow_orders(session), follow_summary(session)]
            await _run_live(session, console, workers, render, line, duration)

    _run(body())


class OrderSide(enum.StrEnum):
    buy = "buy"
    sell = "sell"


class OrderKind(enum.StrEnum):
    limit = "limit"
    market = "market"
    stop = "stop"
    stoplimit = "stoplimit"


@app.command()
def order(
    side: Annotated[OrderSide, typer.Argument(help="buy or sell.")],
    symbol: Annotated[str, typer.Argument(help="Ticker, e.g. SBER.")],
    quantity: Annotated[int, typer.Argument(min=1, help="Lots.")],
    limit: Annotated[
        float | None, typer.Option("--limit", help="Limit price (market order without it).")
    ] = None,
    portfolio: PortfolioOpt = None,
    sim: SimOpt = False,
    env: EnvOpt = Env.prod,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Place an order (limit with --limit, market otherwise) and print the server's answer."""
    target = _target(sim, env, url, token_file, debug)
    console = _console()
    symbol = symbol.upper()

    async def body() -> None:
        async with _connect(target) as session:
            chosen = session.portfolio(portfolio)
            trading = session.client.trading
            if limit is None:
                ack = await trading.place_market(chosen, symbol, side.value, quantity)
                what = f"market {side.value} {quantity} {symbol}"
            else:
                ack = await trading.place_limit(chosen, symbol, side.value, quantity, limit)
                what = f"limit {side.value} {quantity} {symbol} @ {limit}"
            console.print(f"order {ack.order_number} accepted: {what} (portfolio {chosen})")
            if ack.message:
                console.print(f"server: {ack.message}")

    _run(body())


@app.command()
def cancel(
    order_id: Annotated[str, typer.Argument(help="The order's id (orderNumber).")],
    kind: Annotated[OrderKind, typer.Option("--kind", help="The order's type.")] = OrderKind.limit,
    portfolio: PortfolioOpt = None,
    sim: SimOpt = False,
    env: EnvOpt = Env.prod,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Cancel an order and print the server's answer."""
    target = _target(sim, env, url, token_file, debug)
    console = _console()

    async def body() -> None:
        async with _connect(target) as session:
            chosen = session.portfolio(portfolio)
            ack = await session.client.trading.cancel(order_id, chosen, kind=kind.value)
            console.print(f"order {order_id} cancelled (portfolio {chosen})")
            if ack.message:
                console.print(f"server: {ack.message}")

    _run(body())


# -- history -------------------------------------------------------------------------------------


def _when(value: str | None, default: datetime) -> int:
    if value is None:
        return int(default.timestamp())
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"bad date {value!r}", "use YYYY-MM-DD, an ISO date-time or Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _write_bars(path: Path, symbol: str, tf: str, rows: Sequence[Bar]) -> None:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

    table = pa.table(
        {
            "symbol": pa.array([symbol] * len(rows), pa.string()),
            "tf": pa.array([tf] * len(rows), pa.string()),
            "time": pa.array([b.time for b in rows], pa.timestamp("s", tz="UTC")),
            "open": pa.array([b.open for b in rows], pa.float64()),
            "high": pa.array([b.high for b in rows], pa.float64()),
            "low": pa.array([b.low for b in rows], pa.float64()),
            "close": pa.array([b.close for b in rows], pa.float64()),
            "volume": pa.array([b.volume for b in rows], pa.int64()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


@app.command()
def history(
    symbol: Annotated[str, typer.Argument(help="Ticker, e.g. SBER.")],
    tf: Annotated[str, typer.Option("--tf", help="Timeframe: seconds or D/W/M/Y.")] = "D",
    from_: Annotated[
        str | None, typer.Option("--from", help="Start: YYYY-MM-DD (UTC) or Unix s; 30 days ago.")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="End (inclusive); default now.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write a Parquet file (else print a table).")
    ] = None,
    sim: SimOpt = False,
    env: EnvOpt = Env.prod,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Download candles over HTTP (paged), with a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    target = _target(sim, env, url, token_file, debug)
    console = _console()
    symbol = symbol.upper()
    _span(tf)
    now = datetime.now(UTC)
    end = _when(to, now)
    start = _when(from_, datetime.fromtimestamp(end, UTC) - timedelta(days=30))
    if start > end:
        raise CliError("--from is after --to")

    async def body() -> None:
        rows: list[Bar] = []
        async with _connect(target) as session:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[count]} candles"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as progress:
                task = progress.add_task(f"{symbol} {tf}", total=max(1, end - start), count=0)
                async for bar in session.client.http.iter_history(symbol, _tf(tf), start, end):
                    rows.append(bar)
                    progress.update(
                        task, completed=min(max(0, bar.time - start), end - start), count=len(rows)
                    )
                progress.update(task, completed=max(1, end - start), count=len(rows))
        if out is not None:
            _write_bars(out, symbol, tf, rows)
            size = out.stat().st_size
            console.print(f"{len(rows)} candles of {symbol} {tf} written to {out} ({size:,} bytes)")
        else:
            console.print(_bars_table(f"{symbol} {tf}: {len(rows)} candles", rows[-20:], tf))

    _run(body())


# -- recording and replay ------------------------------------------------------------------------

_STREAM_KINDS = ("quotes", "book", "trades", "bars")
#: The --streams names as stream kinds (the typed methods' names, as Replay.find takes them).
_REPLAY_KINDS = {"quotes": "quotes", "book": "order_book", "trades": "all_trades", "bars": "bars"}


def _parse_streams(text: str) -> list[str]:
    kinds = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [k for k in kinds if k not in _STREAM_KINDS]
    if bad or not kinds:
        raise CliError(
            f"unknown stream(s): {', '.join(bad) or '(none)'}",
            f"use a comma-separated list of {', '.join(_STREAM_KINDS)}",
        )
    return kinds


def _kv_table(title: str, values: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("Name")
    table.add_column("Value", justify="right")
    for key, value in values.items():
        if not isinstance(value, dict | list):
            table.add_row(str(key), _num(value) if isinstance(value, int | float) else str(value))
    return table


@app.command()
def record(
    symbols: Annotated[list[str], typer.Argument(help="Tickers, e.g. SBER GAZP.")],
    streams: Annotated[
        str, typer.Option("--streams", help="Comma-separated: quotes,book,trades,bars.")
    ] = "quotes,book,trades",
    out: Annotated[Path, typer.Option("--out", help="Root directory of the recording.")] = Path(
        "data"
    ),
    tf: Annotated[str, typer.Option("--tf", help="Timeframe of recorded bars.")] = "60",
    sim: SimOpt = False,
    env: EnvOpt = Env.prod,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Record every frame of the given streams to hive-partitioned Parquet under --out."""
    target = _target(sim, env, url, token_file, debug, metrics_port)
    console = _console()
    kinds = _parse_streams(streams)
    symbols = [s.upper() for s in symbols]
    from .record import Recorder

    _span(tf)
    counts: dict[str, int] = {}
    holder: list[Recorder] = []

    def open_stream(client: AlorClient, kind: str, symbol: str) -> Any:
        if kind == "quotes":
            return client.quotes(symbol)
        if kind == "book":
            return client.order_book(symbol)
        if kind == "trades":
            return client.all_trades(symbol)
        return client.bars(symbol, _tf(tf))

    async def drain(client: AlorClient, kind: str, symbol: str) -> None:
        key = f"{kind} {symbol}"
        counts[key] = 0
        async with open_stream(client, kind, symbol) as stream:
            while True:
                counts[key] += len(await stream.get_batch())

    def render() -> RenderableType:
        table = Table(title=f"Recording to {out}")
        table.add_column("Stream")
        table.add_column("Messages", justify="right")
        for key, n in counts.items():
            table.add_row(key, f"{n:,}")
        parts: list[RenderableType] = [table]
        if holder:
            parts.append(_kv_table("Recorder", dict(holder[0].stats())))
        return Group(*parts)

    def line() -> str:
        return f"recorded messages: {sum(counts.values()):,}"

    async def body() -> None:
        async with _connect(target) as session:
            async with Recorder(session.client, out) as rec:
                holder.append(rec)
                workers = [drain(session.client, k, s) for s in symbols for k in kinds]
                await _run_live(session, console, workers, render, line, duration)
            console.print(_kv_table("Recorder (closed)", dict(rec.stats())))

    _run(body())


@app.command()
def replay(
    root: Annotated[Path, typer.Argument(help="Root directory of a recording.")],
    symbols: Annotated[
        list[str] | None, typer.Argument(help="Tickers to replay (default: all recorded).")
    ] = None,
    streams: Annotated[
        str, typer.Option("--streams", help="Comma-separated: quotes,book,trades,bars.")
    ] = "quotes",
    speed: Annotated[
        float | None,
        typer.Option("--speed", min=0.0, help="x N of the recorded pace (default: at once)."),
    ] = None,
    duration: DurationOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Replay a recording through the same typed streams as live data; show what comes out."""
    from .errors import ConfigurationError
    from .protocol.requests import SubscriptionRequest
    from .record import Replay

    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    console = _console()
    kinds = _parse_streams(streams)
    if not root.is_dir():
        raise CliError(f"no recording at {str(root)!r}", "pass the --out directory of a recording")
    if speed is not None and speed <= 0:
        raise CliError("--speed must be above 0", "omit it to replay as fast as possible")
    counts: dict[str, int] = {}
    lasts: dict[str, str] = {}

    def open_stream(rep: Replay, kind: str, symbol: str) -> Stream[Any]:
        # Whatever was recorded of that kind for the symbol (any format, depth, timeframe).
        return rep.stream(rep.find(_REPLAY_KINDS[kind], code=symbol))

    async def follow(stream: Stream[Any], key: str) -> None:
        async for item in stream:
            counts[key] += 1
            lasts[key] = _short(item)

    def render() -> Table:
        table = Table(title=f"Replay of {root}")
        for col in ("Stream", "Messages", "Last"):
            table.add_column(col, justify="right" if col == "Messages" else "left")
        for key, n in counts.items():
            table.add_row(key, f"{n:,}", lasts.get(key, "-"))
        return table

    def line() -> str:
        return f"replayed messages: {sum(counts.values()):,}"

    def recorded_codes(rep: Replay) -> list[str]:
        codes: list[str] = []
        for sub in rep.subscriptions():
            request: SubscriptionRequest = sub.request
            code = getattr(request, "code", None)
            if isinstance(code, str) and code not in codes:
                codes.append(code)
        return codes

    async def body() -> None:
        async with Replay(root, speed=speed) as rep:
            tickers = [s.upper() for s in symbols] if symbols else recorded_codes(rep)
            if not tickers:
                raise CliError(f"the recording at {str(root)!r} holds no market data")
            opened: list[tuple[Stream[Any], str]] = []
            for sym in tickers:
                for kind in kinds:
                    key = f"{kind} {sym}"
                    try:
                        stream = open_stream(rep, kind, sym)
                    except ConfigurationError as exc:
                        if symbols:  # asked for explicitly: say what is there
                            raise CliError(
                                str(exc).partition("\n")[0],  # the rest lists the requests
                                "recorded: "
                                + ", ".join(
                                    f"{s.opcode} {getattr(s.request, 'code', '')}".strip()
                                    for s in rep.subscriptions()
                                ),
                            ) from None
                        continue
                    counts[key] = 0
                    opened.append((await stream.subscribe(), key))
            if not opened:
                raise CliError(f"nothing to replay for {', '.join(kinds)} in {str(root)!r}")
            workers = [follow(stream, key) for stream, key in opened]
            await _run_live(_NO_SESSION, console, workers, render, line, duration)
            console.print(f"replayed {rep.frames_replayed:,} frames")

    _run(body())


def _short(item: Any) -> str:
    for attr in ("last_price", "close", "price"):
        value = getattr(item, attr, None)
        if isinstance(value, int | float):
            return f"{attr} {value}"
    best = getattr(item, "best_bid", None)
    if best is not None:
        return f"best bid {best.price}"
    return type(item).__name__


class _NoSession:
    collector: ClientCollector | None = None


_NO_SESSION: Any = _NoSession()


# -- status --------------------------------------------------------------------------------------


def _status_view(session: Session) -> RenderableType:
    stats = session.client.stats()
    tokens = stats.get("tokens") or {}
    expires = tokens.get("expires_in")
    head = Table(title=f"alorws status: {session.target.describe()}", show_header=False)
    head.add_column("Name")
    head.add_column("Value")
    uptime = stats.get("uptime")
    head.add_row("client", f"{stats['state']}, up {_num(uptime, 1)} s")
    head.add_row("endpoints", session.client.endpoints.http)
    head.add_row("portfolios", ", ".join(session.client.portfolios) or "-")
    head.add_row(
        "token",
        f"expires in {_num(expires, 0)} s, {tokens.get('refreshes', 0)} refreshes, "
        f"{tokens.get('failures', 0)} failures",
    )
    head.add_row(
        "totals",
        f"{stats['connections']} connections, {stats['subscriptions']} subscriptions, "
        f"{stats['messages']:,} messages, {stats['bytes']:,} bytes, "
        f"{stats['reconnects']} reconnects",
    )
    lanes = Table(title="Connections (lanes)")
    for col in (
        "Lane", "Kind", "State", "Subscriptions", "Messages", "Bytes", "Reconnects",
        "Last restore s", "Last error",
    ):  # fmt: skip
        lanes.add_column(col, justify="right")
    for lane in stats["lanes"]:
        lanes.add_row(
            str(lane["id"]), lane["kind"], lane["state"], str(lane["subscriptions"]),
            f"{lane['messages']:,}", f"{lane['bytes']:,}", str(lane["reconnects"]),
            _num(lane["last_restore_seconds"], 3), str(lane["last_error"] or "-"),
        )  # fmt: skip
    streams = Table(title="Streams (buffers)")
    for col in ("Stream", "Lane", "Policy", "Depth", "Max depth", "Conflated", "Dropped"):
        streams.add_column(col, justify="left" if col == "Stream" else "right")
    for s in sorted(stats["streams"], key=lambda s: str(s["name"])):
        streams.add_row(
            str(s["name"]), str(s["lane"]), str(s["policy"]), str(s["depth"]),
            str(s["max_depth"]), str(s["conflated"]), str(s["dropped"]),
        )  # fmt: skip
    parts: list[RenderableType] = [head, lanes, streams]
    if session.metrics is not None:
        parts.append(Text(f"metrics: {session.metrics.url}"))
    return Group(*parts)


@app.command()
def gateway(
    nats: Annotated[
        str | None, typer.Option("--nats", help="NATS server URL, e.g. nats://127.0.0.1:4222.")
    ] = None,
    embedded_nats: Annotated[
        bool, typer.Option("--embedded-nats", help="Start a local nats-server with JetStream.")
    ] = False,
    prefix: Annotated[str, typer.Option(help="First token of every NATS subject.")] = "alorws",
    lease: Annotated[
        float, typer.Option(help="Seconds before a silent consumer is released.")
    ] = 10.0,
    leader_ttl: Annotated[
        float | None,
        typer.Option(
            "--leader-ttl",
            min=0.1,
            help="Failover: run several gateways with this option; only the one holding the "
            "leader lease (expiring this many seconds after its last renewal) connects to ALOR.",
        ),
    ] = None,
    node: Annotated[
        str | None, typer.Option("--node", help="This gateway's unique name in the election.")
    ] = None,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections",
            min=1,
            help="Connections the account allows (ALOR: 10), /cws included.",
        ),
    ] = 10,
    max_subscriptions_per_connection: Annotated[
        int,
        typer.Option(
            "--max-subscriptions-per-connection", min=1, help="Subscriptions per connection."
        ),
    ] = 5000,
    reserve_connections: Annotated[
        int,
        typer.Option(
            "--reserve-connections",
            min=0,
            help="Connections market data may not take: kept for account data, orders and "
            "other applications of the account.",
        ),
    ] = 2,
    sim: SimOpt = False,
    env: EnvOpt = Env.prod,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Share this account's ALOR connections with many processes through NATS JetStream."""
    if (nats is None) == (not embedded_nats):
        raise typer.BadParameter("give exactly one of --nats URL or --embedded-nats")
    if reserve_connections >= max_connections:
        raise typer.BadParameter("--reserve-connections must be below --max-connections")
    target = _target(sim, env, url, token_file, debug)
    console = _console()

    async def body() -> None:
        import functools

        from .client import AlorClient
        from .gateway import Gateway, NatsServer
        from .protocol.backoff import Backoff

        async with contextlib.AsyncExitStack() as stack:
            nats_url = nats
            if embedded_nats:
                server = await stack.enter_async_context(NatsServer())
                nats_url = server.url
            assert nats_url is not None
            base_url: str | None
            if target.sim:
                from .sim.app import Simulator

                simulator = await stack.enter_async_context(Simulator(port=0, seed=1, rate=50.0))
                token, base_url = simulator.demo_refresh_token, simulator.url
            else:
                token, base_url = _read_token(target), target.url
            # The gateway builds the client when it leads (at once without --leader-ttl), with
            # its budget as keyword arguments.
            source = functools.partial(
                AlorClient,
                token,
                env=target.env.value,
                base_url=base_url,
                backoff=Backoff(base=0.05, cap=5.0) if target.sim else None,
            )
            gw = await stack.enter_async_context(
                Gateway(
                    source,
                    nats_url,
                    prefix=prefix,
                    lease_seconds=lease,
                    leader_ttl=leader_ttl,
                    node=node,
                    max_connections=max_connections,
                    max_subscriptions_per_connection=max_subscriptions_per_connection,
                    reserve_connections=reserve_connections,
                )
            )
            collector = None
            if metrics_port is not None:
                from .metrics import start_gateway_metrics

                metrics = start_gateway_metrics(gw, metrics_port)
                stack.callback(metrics.close)
                collector = metrics.collector
                console.print(f"metrics: {metrics.url}")
            from .errors import scrub

            console.print(f"nats: {scrub(nats_url)}")  # no credentials of the URL on screen
            console.print(f"prefix: {prefix}")
            console.print(f"node: {gw.node} ({gw.role})")

            def render() -> Table:
                return _kv_table("Gateway", gw.stats())

            def line() -> str:
                st = gw.stats()
                published = st["published_market"] + st["published_account"]
                return (
                    f"{st['role']}: {st['consumers']} consumers, {st['subscriptions']} "
                    f"subscriptions, {published:,} published, {st['takeovers']} takeovers"
                )

            def tick() -> None:
                if collector is not None:
                    collector.poll()

            if console.is_terminal:
                with Live(render(), console=console, refresh_per_second=4) as live:

                    def redraw() -> None:
                        tick()
                        live.update(render())

                    await _supervise([], duration, redraw, 0.25)
            else:

                def plain() -> None:
                    tick()
                    console.print(f"{_stamp()} {line()}")

                await _supervise([], duration, plain, 1.0)
                console.print(render())

    _run(body())


@app.command()
def status(
    symbols: Annotated[
        list[str] | None, typer.Argument(help="Tickers to subscribe for the probe (SBER).")
    ] = None,
    portfolio: PortfolioOpt = None,
    sim: SimOpt = False,
    env: EnvOpt = Env.prod,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: Annotated[
        float | None, typer.Option("--duration", min=0.0, help="Seconds to watch (default 2).")
    ] = 2.0,
    metrics_port: MetricsOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Connect, subscribe a few streams, show connections, lanes, subscriptions per connection,
    buffer depths and reconnects."""
    target = _target(sim, env, url, token_file, debug, metrics_port)
    console = _console()
    tickers = [s.upper() for s in (symbols or ["SBER"])]

    async def drain(stream: Any) -> None:
        async with stream as s:
            while True:
                await s.get_batch()

    async def body() -> None:
        async with _connect(target) as session:
            client = session.client
            workers: list[Coroutine[Any, Any, None]] = []
            for sym in tickers:
                workers += [drain(client.quotes(sym)), drain(client.order_book(sym))]
            if portfolio or sim:
                chosen = session.portfolio(portfolio)
                workers += [drain(client.orders(chosen)), drain(client.positions(chosen))]

            def line() -> str:
                stats = client.stats()
                return (
                    f"{stats['connections']} connections, {stats['subscriptions']} "
                    f"subscriptions, {stats['messages']:,} messages"
                )

            await _run_live(
                session, console, workers, lambda: _status_view(session), line, duration
            )

    _run(body())


# -- check ---------------------------------------------------------------------------------------


@app.command()
def check(
    sim: SimOpt = False,
    env: Annotated[
        Env, typer.Option("--env", help="ALOR environment (default here: dev, ALOR's test one).")
    ] = Env.dev,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    seconds: Annotated[
        float,
        typer.Option("--seconds", min=1.0, help="The tour's length; streams are read until then."),
    ] = 20.0,
    step_timeout: Annotated[
        float,
        typer.Option(
            "--step-timeout", min=0.1, help="Most seconds one call or subscribe may take."
        ),
    ] = 10.0,
    symbol: Annotated[str, typer.Option("--symbol", help="Share to look at (MOEX).")] = "SBER",
    future: Annotated[
        str | None,
        typer.Option("--future", help="Future to look at (default: the nearest Si future)."),
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save", file_okay=False, help="Write the report and undecodable messages here."
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Check that everything the server sends decodes: a read-only tour (no orders placed or
    cancelled) of quotes, books, trades, bars and every portfolio's positions, summary, orders
    and stop orders, over /ws and HTTP, in Simple, Slim and Heavy.

    Exit 0: every message decoded; 1: some did not (listed); 2: could not connect or
    authenticate."""
    from .client.check import CheckOptions, run_check, scrub
    from .client.endpoints import resolve_endpoints
    from .errors import AlorError, TransportTimeout

    target = _target(sim, env, url, token_file, debug)
    if not debug:  # the report lists every failure; the log would repeat them
        logging.getLogger("alorws").setLevel(logging.CRITICAL)
    options = CheckOptions(
        seconds=seconds, step_timeout=step_timeout, symbol=symbol.upper(), future=future
    )
    where = target.describe()
    secrets: list[str] = []
    code = [0]

    def say(line: str) -> None:
        print(line, flush=True)

    def unreachable(why: str, hint: str | None) -> int:
        why = scrub(why, secrets)
        sys.stderr.write(f"alorws: check: could not connect or authenticate to {where}: {why}\n")
        if hint:
            sys.stderr.write(f"hint: {hint}\n")
        sys.stderr.flush()
        return 2

    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            say(f"alorws check of {where}: read-only, about {seconds:g} s")
            try:
                if not target.sim:
                    secrets.append(_read_token(target))  # blanked out of all the output
                async with asyncio.timeout(step_timeout):
                    session = await stack.enter_async_context(_connect(target))
            except CliError as exc:
                code[0] = unreachable(str(exc), exc.hint)
                return
            except TimeoutError:
                # The token service is retried on network errors: name it, and the wait.
                refresh = resolve_endpoints(target.env.value, target.url).refresh_url
                source = "the simulator" if target.sim else refresh
                why = f"no access token from {source} within {step_timeout:g} s"
                code[0] = unreachable(why, _hint_for(TransportTimeout(why)))
                return
            except (AlorError, OSError) as exc:
                message = " ".join((str(exc).strip() or type(exc).__name__).split())
                code[0] = unreachable(f"{type(exc).__name__}: {message}", _hint_for(exc))
                return
            report = await run_check(session.client, options, secrets=secrets, progress=say)
            for line in report.lines():
                say(line)
            if save is not None:
                written = report.save(save)
                say(f"saved the report and {len(written) - 1} undecodable message(s) to {save}")
            if report.fatal is not None:
                code[0] = unreachable(
                    report.fatal,
                    "check --url/--env, the network, and that the refresh token belongs to --env",
                )
            else:
                code[0] = report.exit_code

    _run(body())
    raise typer.Exit(code[0])


# -- entry point ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run ``alorws <command> …``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if args and args[0] == "sim":  # `alorws sim …` takes the simulator's own flags
        from .sim import app as sim_app

        try:
            return sim_app.main(args[1:])
        except SystemExit as exc:  # argparse: --help or a usage error
            return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="alorws", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    except typer.TyperException as exc:  # usage errors: click's own message and hint
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            _report(exc, debug)
        return int(getattr(exc, "exit_code", 2))
    except Exception as exc:
        return _report(exc, debug)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
