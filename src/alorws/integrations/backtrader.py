"""backtrader on ALOR: a store, a live data feed and a broker (``pip install alorws[backtrader]``).

::

    import backtrader as bt
    from alorws.integrations.backtrader import AlorStore

    store = AlorStore(refresh_token)                  # one account: one store
    cerebro = bt.Cerebro()
    cerebro.addstore(store)                           # store notifications -> notify_store
    cerebro.adddata(store.getdata("SBER", tf=60, history=200))
    cerebro.setbroker(store.getbroker())
    cerebro.addstrategy(MyStrategy)
    cerebro.run()

backtrader is synchronous; alorws is asyncio. The store runs an :class:`~alorws.client.AlorClient`
in an event loop of its own thread (the *bridge*); the feed and the broker hand work to it with
``run_coroutine_threadsafe`` and get everything back through thread-safe queues that
backtrader's loop drains (``_load``, ``broker.next``). backtrader's thread never waits on the
network except for the start-up snapshots.

**The store** (:class:`AlorStore`) is one account (one refresh token, with all its portfolios).
For several accounts make several stores, each with its broker. Its notifications
(``notify_store``) are ``(message, args, kwargs)``: order outcomes that are not an order status
(``"order status unknown"``), feed failures.

**The feed** (:class:`AlorData`, ``store.getdata``) loads ``history`` completed candles over HTTP
(status ``DELAYED``), then subscribes to the candles from the first of them (the recording of a
run thus holds every candle the strategy saw) and goes ``LIVE``. A candle reaches the strategy
when the next one starts (ALOR re-sends the forming candle with the same time,
docs/protocol.md §4.3), each time once: older or equal times (a replay after a reconnect) are
dropped, and as the subscription is restored from its first candle nothing is missed. A drop
notifies ``DISCONNECTED``, the restore ``LIVE`` again. ``live_bars=N`` ends the feed after N live
candles (for tests and demos).

**The broker** (:class:`AlorBroker`, ``store.getbroker``) places market, limit, stop and
stop-limit orders (sizes are **lots**) on the portfolio that trades the instrument
(``client.portfolio_for``) unless ``portfolio`` is given, with prices rounded onto the
instrument's grid (buys down, sells up). Every order goes out once: its guid is made before
sending and ``/cws`` never executes a guid twice, the client re-sends the same frame after a
reconnect, and an order whose outcome is unknown is **not** re-sent: it is found in the orders
stream by its comment tag. Statuses follow the account streams: accepted on the server's reply,
partial and completed from the own-trades stream (each trade once, by id), cancelled and
rejected from the orders stream. Cash and value come from the portfolio's summaries
(``buying_power``, ``portfolio_evaluation``); positions start from the HTTP snapshot and move
with this broker's fills.

**Backtests** of the same strategy: :func:`recorded_bars` reads the candles of a recording
(:mod:`alorws.record`) the way the live feed delivered them, and :class:`BarsData` feeds a list
of candles to ``cerebro`` with backtrader's own broker.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import backtrader as bt

from ..client import AlorClient
from ..client.lane import LaneEvent
from ..errors import AlorError, InvalidArgumentError, OrderRejected, OrderStatusUnknown
from ..protocol.account import Order, OwnTrade, Position, Summary
from ..protocol.enums import Condition, OrderStatus, Side
from ..protocol.instruments import Rounding
from ..protocol.market import Bar
from ..protocol.timeutil import parse_iso


__all__ = ["AlorBroker", "AlorData", "AlorStore", "BarAssembler", "BarsData", "recorded_bars"]

log = logging.getLogger("alorws.backtrader")

T = TypeVar("T")

_START_TIMEOUT: Final = 30.0
_TAG_PREFIX: Final = "bt"


class BarAssembler:
    """Turns a candle stream (the forming candle re-sent, replays after reconnects) into
    completed candles, each once and in time order."""

    def __init__(self, after: int | None = None) -> None:
        self.pending: Bar | None = None
        self.last: int | None = after  # time of the last candle handed out

    def push(self, bar: Bar) -> Bar | None:
        """Take one candle message; return the candle it completes, if any."""
        if self.last is not None and bar.time <= self.last:
            return None  # already handed out: a replay
        pending = self.pending
        if pending is None or bar.time == pending.time:
            self.pending = bar
            return None
        if bar.time < pending.time:
            return None  # an older candle replayed: already merged into what we hold
        self.pending = bar
        self.last = pending.time
        return pending


# -- the bridge: an event loop in a thread ------------------------------------------------------


class _Bridge:
    """An asyncio loop in a daemon thread; backtrader's thread submits coroutines to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="alorws-backtrader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = _START_TIMEOUT) -> T:
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# -- the store ---------------------------------------------------------------------------------


class AlorStore:
    """One ALOR account for backtrader: the client, its bridge thread, store notifications.

    Args:
        refresh_token: the account's refresh token (never logged).
        record_to: also record every ``/ws`` frame to this directory
            (:class:`~alorws.record.Recorder`), for a backtest of the same run later.
        client_options: passed to :class:`~alorws.client.AlorClient` (``base_url``, ``env``,
            ``cafile``, ``backoff``, …).

    Not a backtrader singleton: each instance is its own account. Add it to cerebro
    (``cerebro.addstore``) to get its notifications in ``notify_store``.
    """

    def __init__(
        self, refresh_token: str, *, record_to: str | Path | None = None, **client_options: Any
    ) -> None:
        self._client = AlorClient(refresh_token, **client_options)
        self._record_to = record_to
        self._recorder: Any = None
        self._bridge: _Bridge | None = None
        self._lock = threading.Lock()
        self._users = 0
        self.notifs: collections.deque[tuple[Any, tuple[Any, ...], dict[str, Any]] | None] = (
            collections.deque()
        )

    @property
    def client(self) -> AlorClient:
        """The account's client (it lives in the bridge's loop: call it through :meth:`run`)."""
        return self._client

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The bridge's event loop (started on first use)."""
        return self._ensure().loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = _START_TIMEOUT) -> T:
        """Run ``coro`` in the bridge's loop and wait for its result (from any other thread)."""
        return self._ensure().call(coro, timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` in the bridge's loop without waiting."""
        return self._ensure().submit(coro)

    def _ensure(self) -> _Bridge:
        with self._lock:
            if self._bridge is None:
                bridge = _Bridge()
                try:
                    bridge.call(self._open())
                except BaseException:
                    bridge.stop()
                    raise
                self._bridge = bridge
            return self._bridge

    async def _open(self) -> None:
        await self._client.start()
        if self._record_to is not None:
            from ..record import Recorder

            self._recorder = Recorder(self._client, str(self._record_to), process=False)
            await self._recorder.start()

    async def _close(self) -> None:
        if self._recorder is not None:
            try:
                await self._recorder.aclose()
            except AlorError:
                log.exception("closing the recorder failed")
        await self._client.aclose()

    # -- backtrader's store protocol ----------------------------------------------------------

    def start(self, data: Any = None, broker: Any = None) -> None:
        """Start the client (cerebro, the feed and the broker call it; counted)."""
        self._ensure()
        with self._lock:
            self._users += 1

    def stop(self) -> None:
        """Release one user; the last one closes the client, the recorder and the thread."""
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._bridge is None:
                return
            bridge, self._bridge = self._bridge, None
        try:
            bridge.call(self._close())
        finally:
            bridge.stop()

    def put_notification(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Queue a store notification (thread-safe)."""
        self.notifs.append((msg, args, kwargs))

    def get_notifications(self) -> list[tuple[Any, tuple[Any, ...], dict[str, Any]]]:
        """The pending notifications (cerebro calls it every turn)."""
        self.notifs.append(None)
        return [n for n in iter(self.notifs.popleft, None) if n is not None]

    def getdata(self, symbol: str, **params: Any) -> AlorData:
        """A live feed of ``symbol`` (see :class:`AlorData` for ``params``)."""
        data: AlorData = cast(Any, AlorData)(symbol=symbol, **params)
        data._alor_store = self
        return data

    def getbroker(self, **params: Any) -> AlorBroker:
        """The account's broker (see :class:`AlorBroker` for ``params``)."""
        broker: AlorBroker = cast(Any, AlorBroker)(**params)
        broker._alor_store = self
        return broker


# -- the live feed -----------------------------------------------------------------------------


class AlorData(bt.feed.DataBase):  # type: ignore[misc]
    """Live candles of one instrument (see the module docstring).

    Params: ``symbol``; ``exchange`` (MOEX); ``board``; ``tf`` (seconds, default 60);
    ``history`` (completed candles to preload over HTTP, default 100); ``live_bars`` (end after
    this many live candles; None: never); ``qcheck`` (seconds a turn waits for data, 0.5).
    """

    params = (
        ("symbol", None),
        ("exchange", "MOEX"),
        ("board", None),
        ("tf", 60),
        ("history", 100),
        ("live_bars", None),
        ("qcheck", 0.5),
    )

    _alor_store: AlorStore

    def __init__(self) -> None:
        if not self.p.symbol:
            raise InvalidArgumentError("symbol", "AlorData needs symbol=, e.g. 'SBER'")
        if not (isinstance(self.p.tf, int) and self.p.tf > 0):
            raise InvalidArgumentError("tf", f"must be whole seconds > 0, got {self.p.tf!r}")
        self._alor_q: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._alor_future: concurrent.futures.Future[None] | None = None
        self._alor_last = 0
        self._alor_live = False
        self._alor_live_count = 0
        self._alor_over = False
        #: Every candle handed to backtrader, in order (for checks and reports).
        self.delivered: list[Bar] = []

    def islive(self) -> bool:
        """A live feed: cerebro runs bar by bar."""
        return True

    def haslivedata(self) -> bool:
        """Whether candles are waiting."""
        return not self._alor_q.empty()

    def start(self) -> None:
        """Start the client if needed and the feed's task in the bridge."""
        super().start()
        store = self._alor_store
        store.start(data=self)
        self._alor_future = store.submit(self._alor_feed())

    def stop(self) -> None:
        """End the feed's task; release the store."""
        super().stop()
        future, self._alor_future = self._alor_future, None
        if future is not None:
            future.cancel()
            with contextlib.suppress(concurrent.futures.CancelledError, Exception):
                future.result(5)
        self._alor_store.stop()

    async def _alor_feed(self) -> None:
        put = self._alor_q.put
        try:
            await self._alor_stream(put)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("the %s feed failed", self.p.symbol)
            self._alor_store.put_notification("feed failed", self.p.symbol, str(exc))
            put(("failed", str(exc)))

    async def _alor_stream(self, put: Callable[[tuple[str, Any]], None]) -> None:
        client = self._alor_store.client
        symbol, tf, exchange, board = self.p.symbol, self.p.tf, self.p.exchange, self.p.board
        put(("status", self.DELAYED))
        now = int(time.time())
        start = now - tf * (int(self.p.history) + 1)
        assembler = BarAssembler()
        for bar in await client.http.history(
            symbol, tf, start, now, exchange=exchange, board=board
        ):
            done = assembler.push(bar)
            if done is not None:
                put(("bar", done))

        def on_event(event: LaneEvent) -> None:
            if event.kind == "disconnected":
                put(("status", self.DISCONNECTED))
            elif event.kind in ("restored", "resubscribed"):
                put(("status", self.LIVE))

        stream = client.bars(symbol, tf, exchange=exchange, board=board, from_=start)
        stream.on_event(on_event)
        async with stream as bars:
            put(("status", self.LIVE))
            async for bar in bars:
                done = assembler.push(bar)
                if done is not None:
                    put(("bar", done))

    def _load(self) -> bool | None:
        if self._alor_over:
            return False
        while True:
            try:
                kind, value = self._alor_q.get(timeout=self._qcheck)
            except queue.Empty:
                return None
            if kind == "status":
                self._alor_live = value == self.LIVE
                self.put_notification(value)
                continue
            if kind == "failed":
                self.put_notification(self.DISCONNECTED)
                self._alor_over = True
                return False
            bar: Bar = value
            if bar.time <= self._alor_last:
                continue  # never twice, never backwards
            self._alor_last = bar.time
            _fill(self.lines, bar)
            self.delivered.append(bar)
            if self._alor_live:
                self._alor_live_count += 1
                limit = self.p.live_bars
                if limit is not None and self._alor_live_count >= limit:
                    self._alor_over = True
            return True


def _fill(lines: Any, bar: Bar) -> None:
    lines.datetime[0] = bt.date2num(datetime.fromtimestamp(bar.time, UTC).replace(tzinfo=None))
    lines.open[0] = bar.open
    lines.high[0] = bar.high
    lines.low[0] = bar.low
    lines.close[0] = bar.close
    lines.volume[0] = bar.volume
    lines.openinterest[0] = 0.0


class BarsData(bt.feed.DataBase):  # type: ignore[misc]
    """A backtest feed of a list of candles (``bars=``), e.g. :func:`recorded_bars`."""

    params = (("bars", ()),)

    def __init__(self) -> None:
        self._bars: list[Bar] = sorted(self.p.bars, key=lambda b: b.time)
        self._i = 0

    def start(self) -> None:
        """Rewind."""
        super().start()
        self._i = 0

    def _load(self) -> bool:
        if self._i >= len(self._bars):
            return False
        _fill(self.lines, self._bars[self._i])
        self._i += 1
        return True


def recorded_bars(
    path: str | Path,
    symbol: str,
    tf: int,
    *,
    exchange: str = "MOEX",
    until: int | None = None,
) -> list[Bar]:
    """The completed candles of ``symbol``/``tf`` in a recording, as :class:`AlorData` handed
    them out live (same assembly: each once, in order); ``until`` keeps those opening at or
    before it (Unix seconds). Runs its own event loop: call it outside one."""
    from ..record import Replay

    async def read() -> list[Bar]:
        out: list[Bar] = []
        assembler = BarAssembler()
        async with Replay(str(path)) as source, source.bars(symbol, tf, exchange=exchange) as s:
            async for bar in s:
                done = assembler.push(bar)
                if done is not None and (until is None or done.time <= until):
                    out.append(done)
        return out

    return asyncio.run(read())


# -- the broker --------------------------------------------------------------------------------

_FINAL_BAD: Final = {OrderStatus.CANCELED: "cancel", OrderStatus.REJECTED: "reject"}


class AlorBroker(bt.broker.BrokerBase):  # type: ignore[misc]
    """Orders, positions, cash and value of one ALOR account (see the module docstring).

    Params: ``portfolio`` (None: per instrument, ``client.portfolio_for``; cash and value then
    come from the portfolio of the first instrument traded or asked about).
    """

    params = (("portfolio", None),)

    _alor_store: AlorStore

    def __init__(self) -> None:
        super().__init__()
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.notifs: queue.Queue[Any] = queue.Queue()
        self.positions: collections.defaultdict[Any, bt.Position] = collections.defaultdict(
            bt.Position
        )
        self._orders: dict[int, bt.Order] = {}  # bt ref -> order
        self._numbers: dict[str, int] = {}  # exchange order id -> bt ref
        self._meta: dict[int, dict[str, Any]] = {}  # bt ref -> portfolio, kind, number
        self._pending_trades: dict[str, list[OwnTrade]] = collections.defaultdict(list)
        self._seen_trades: set[str] = set()
        self._summaries: dict[str, Summary] = {}
        self._snapshot: dict[str, tuple[float, float]] = {}  # symbol -> (lots, avg price)
        self._portfolio: str | None = self.p.portfolio
        self._subscribed: set[str] = set()
        self._tag = f"{_TAG_PREFIX}{uuid.uuid4().hex[:8]}"
        self._guids = itertools.count(1)
        self._cash = 0.0
        self._value = 0.0
        self.startingcash = 0.0  # backtrader's writer reads them
        self.startingvalue = 0.0
        self._futures: set[concurrent.futures.Future[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []

    # -- start / stop -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the client; subscribe the account streams of the given portfolio, if any."""
        super().start()
        self._alor_store.start(broker=self)
        if self._portfolio is not None:
            self._alor_store.run(self._follow(self._portfolio))
            self.next()  # the starting summary and positions
        self.startingcash = self._cash
        self.startingvalue = self._value

    def stop(self) -> None:
        """Stop following the account; release the store."""
        store = self._alor_store
        with contextlib.suppress(Exception):
            store.run(self._unfollow(), timeout=10)
        super().stop()
        store.stop()

    async def _follow(self, portfolio: str) -> None:
        """Subscribe orders, stop orders, own trades and summaries of ``portfolio`` (once),
        and take the starting summary and positions over HTTP."""
        if portfolio in self._subscribed:
            return
        self._subscribed.add(portfolio)
        client = self._alor_store.client
        put = self._events.put
        streams: list[tuple[Any, str]] = [
            (client.orders(portfolio), "order"),
            (client.stop_orders(portfolio), "order"),
            (client.own_trades(portfolio), "trade"),
            (client.summaries(portfolio), "summary"),
        ]
        await client.subscribe_all([s for s, _ in streams])
        for stream, kind in streams:
            self._tasks.append(asyncio.create_task(self._pump(stream, kind, portfolio)))
        summary = await client.http.summary(portfolio)
        put(("summary", portfolio, summary))
        for pos in await client.http.positions(portfolio, without_currency=True):
            put(("position", pos))

    async def _pump(self, stream: Any, kind: str, portfolio: str) -> None:
        put = self._events.put
        try:
            async for item in stream:
                put((kind, portfolio, item))
        finally:
            await stream.aclose()

    async def _unfollow(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, AlorError):
                await task

    # -- what backtrader asks ---------------------------------------------------------------

    def getcash(self) -> float:
        """Buying power of the broker's portfolio (``Summary.buying_power``)."""
        return self._cash

    def getvalue(self, datas: Any = None) -> float:
        """Value of the broker's portfolio (``Summary.portfolio_evaluation``)."""
        return self._value

    def getposition(self, data: Any, clone: bool = True) -> bt.Position:
        """The position in ``data``'s instrument, in lots (from the starting snapshot, then
        moved by this broker's fills)."""
        if data not in self.positions:
            symbol = str(getattr(data.p, "symbol", "") or "").casefold()
            size, price = self._snapshot.get(symbol, (0.0, 0.0))
            self.positions[data] = bt.Position(size=size, price=price)
        pos = self.positions[data]
        return pos.clone() if clone else pos

    def get_notification(self) -> Any:
        """The next order notification, or None."""
        try:
            return self.notifs.get(False)
        except queue.Empty:
            return None

    def notify(self, order: bt.Order) -> None:
        """Queue a copy of ``order`` for the strategy."""
        self.notifs.put(order.clone())

    def buy(self, owner: Any, data: Any, size: float, *args: Any, **kwargs: Any) -> bt.Order:
        """Place a buy order (market, limit, stop or stop-limit; ``size`` in lots); the other
        arguments are backtrader's, as :meth:`_new_order` lists them."""
        return self._new_order(bt.order.BuyOrder, owner, data, size, *args, **kwargs)

    def sell(self, owner: Any, data: Any, size: float, *args: Any, **kwargs: Any) -> bt.Order:
        """Place a sell order (market, limit, stop or stop-limit; ``size`` in lots); the other
        arguments are backtrader's, as :meth:`_new_order` lists them."""
        return self._new_order(bt.order.SellOrder, owner, data, size, *args, **kwargs)

    def _new_order(
        self,
        side: type[bt.Order],
        owner: Any,
        data: Any,
        size: float,
        price: float | None = None,
        plimit: float | None = None,
        exectype: int | None = None,
        valid: Any = None,
        tradeid: int = 0,
        oco: Any = None,
        trailamount: Any = None,
        trailpercent: Any = None,
        **kwargs: Any,
    ) -> bt.Order:
        """A ``side`` order (``BuyOrder`` or ``SellOrder``) with the arguments and order of
        backtrader's ``BrokerBase.buy``/``sell``, submitted."""
        order = side(
            owner=owner, data=data, size=size, price=price, pricelimit=plimit,
            exectype=exectype, valid=valid, tradeid=tradeid, oco=oco,
            trailamount=trailamount, trailpercent=trailpercent,
        )  # fmt: skip
        return self._submit(order, kwargs)

    def cancel(self, order: bt.Order) -> bt.Order:
        """Ask the exchange to cancel ``order`` (the orders stream confirms it)."""
        meta = self._meta.get(order.ref)
        if meta is None or not order.alive() or meta.get("number") is None:
            return order
        future = self._alor_store.submit(
            self._alor_store.client.trading.cancel(
                meta["number"], meta["portfolio"], kind=meta["kind"], exchange=meta["exchange"]
            )
        )
        self._watch(future, order.ref, "cancel")
        return order

    # -- placing --------------------------------------------------------------------------------

    def _submit(self, order: bt.Order, kwargs: dict[str, Any]) -> bt.Order:
        kinds = (None, bt.Order.Market, bt.Order.Limit, bt.Order.Stop, bt.Order.StopLimit)
        if order.exectype not in kinds:
            raise InvalidArgumentError(
                "exectype", "ALOR takes Market, Limit, Stop and StopLimit orders only"
            )
        lots = abs(order.created.size)
        if lots != int(lots) or lots <= 0:
            raise InvalidArgumentError("size", f"must be a whole number of lots, got {lots!r}")
        order.addcomminfo(self.getcommissioninfo(order.data))
        order.addinfo(**kwargs)
        self._orders[order.ref] = order
        order.submit(self)
        self.notify(order)
        self._watch(self._alor_store.submit(self._place(order, int(lots))), order.ref, "place")
        return order

    async def _place(self, order: bt.Order, lots: int) -> Any:
        client = self._alor_store.client
        data = order.data
        symbol, exchange = data.p.symbol, data.p.exchange
        inst = await client.instruments.get(f"{exchange}:{symbol}")
        portfolio = self._portfolio or await client.portfolio_for(inst.ticker)
        if self._portfolio is None:
            self._portfolio = portfolio
        await self._follow(portfolio)
        side = Side.BUY if order.isbuy() else Side.SELL
        guid = f"{self._tag}-{order.ref}-{next(self._guids)}"
        comment = f"{self._tag} {order.ref}"
        common: dict[str, Any] = {
            "exchange": inst.exchange,
            "board": data.p.board,
            "comment": comment,
            "guid": guid,
        }
        mode = Rounding.DOWN if side is Side.BUY else Rounding.UP
        created = order.created
        kind = order.exectype if order.exectype is not None else bt.Order.Market
        meta = {"portfolio": portfolio, "exchange": inst.exchange, "guid": guid, "number": None}
        self._meta[order.ref] = meta
        trading = client.trading
        if kind == bt.Order.Market:
            meta["kind"] = "market"
            return await trading.place_market(portfolio, inst.symbol, side, lots, **common)
        if kind == bt.Order.Limit:
            meta["kind"] = "limit"
            price = float(inst.round_price(created.price, mode))
            return await trading.place_limit(portfolio, inst.symbol, side, lots, price, **common)
        trigger = float(inst.round_price(created.price, Rounding.NEAREST))
        condition = Condition.MORE_OR_EQUAL if side is Side.BUY else Condition.LESS_OR_EQUAL
        if kind == bt.Order.Stop:
            meta["kind"] = "stop"
            return await trading.place_stop(
                portfolio, inst.symbol, side, lots, trigger, condition, **common
            )
        meta["kind"] = "stoplimit"
        limit = float(inst.round_price(created.pricelimit, mode))
        return await trading.place_stop_limit(
            portfolio, inst.symbol, side, lots, limit, trigger, condition, **common
        )

    def _watch(self, future: concurrent.futures.Future[Any], ref: int, what: str) -> None:
        self._futures.add(future)

        def done(f: concurrent.futures.Future[Any]) -> None:
            self._futures.discard(f)
            if f.cancelled():
                return
            exc = f.exception()
            if exc is None:
                self._events.put((f"{what}-ok", ref, f.result()))
            else:
                self._events.put((f"{what}-failed", ref, exc))

        future.add_done_callback(done)

    # -- events, in backtrader's thread -------------------------------------------------------

    def next(self) -> None:
        """Apply what the account streams and the order replies brought since the last turn."""
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            try:
                self._apply(event)
            except Exception:  # one bad event must not stop the strategy
                log.exception("applying %r failed", event[0])
        self.notifs.put(None)  # a turn's boundary, as backtrader's brokers mark it

    def _apply(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "place-ok":
            _, ref, ack = event
            self._accept(self._orders[ref])
            self._bind(ref, ack.order_number)
        elif kind == "place-failed":
            _, ref, exc = event
            order = self._orders[ref]
            if isinstance(exc, OrderRejected) or not isinstance(exc, OrderStatusUnknown):
                if order.alive():
                    order.reject(self)
                    self.notify(order)
                self._alor_store.put_notification("order rejected", ref, str(exc))
            else:  # not re-sent: the orders stream tells what became of it (by comment)
                self._alor_store.put_notification("order status unknown", ref, str(exc))
        elif kind == "cancel-failed":
            self._alor_store.put_notification("cancel failed", event[1], str(event[2]))
        elif kind == "order":
            self._on_order(event[2])
        elif kind == "trade":
            self._on_trade(event[2])
        elif kind == "summary":
            _, portfolio, summary = event
            self._summaries[portfolio] = summary
            if portfolio == self._portfolio:
                self._cash = float(summary.buying_power or 0.0)
                self._value = float(summary.portfolio_evaluation or 0.0)
        elif kind == "position":
            self._on_position(event[1])

    def _accept(self, order: bt.Order) -> None:
        """Submitted -> Accepted, once, before any fill is applied."""
        if order.status == bt.Order.Submitted:
            order.accept(self)
            self.notify(order)

    def _bind(self, ref: int, number: str | None) -> None:
        if not number or number in self._numbers:
            return
        self._numbers[number] = ref
        self._meta[ref]["number"] = number
        for trade in self._pending_trades.pop(number, []):
            self._on_trade(trade)

    def _our_ref(self, comment: str | None) -> int | None:
        if not comment:
            return None
        tag, _, ref = comment.partition(" ")
        if tag != self._tag or not ref.isdigit():
            return None
        return int(ref) if int(ref) in self._orders else None

    def _on_order(self, model: Order) -> None:
        ref = self._numbers.get(model.id) or self._our_ref(model.comment)
        if ref is None:
            return
        order = self._orders[ref]
        if model.status is not OrderStatus.REJECTED:
            self._accept(order)
        self._bind(ref, model.id)
        action = _FINAL_BAD.get(model.status) if model.status is not None else None
        if action is not None and order.alive():
            getattr(order, action)()
            self.notify(order)

    def _on_trade(self, trade: OwnTrade) -> None:
        if trade.id in self._seen_trades:
            return
        ref = self._numbers.get(trade.order_no or "")
        if ref is None:
            if trade.order_no:
                self._pending_trades[trade.order_no].append(trade)
            return
        self._seen_trades.add(trade.id)
        order = self._orders[ref]
        if not order.alive():
            return
        self._accept(order)
        lots = int(trade.qty_batch or 0)
        size = lots if order.isbuy() else -lots
        price = float(trade.price or 0.0)
        pos = self.getposition(order.data, clone=False)
        psize, pprice, opened, closed = pos.update(size, price)
        comminfo = order.comminfo
        closedvalue = comminfo.getoperationcost(closed, pprice)
        closedcomm = comminfo.getcommission(closed, price)
        openedvalue = comminfo.getoperationcost(opened, price)
        openedcomm = comminfo.getcommission(opened, price)
        pnl = comminfo.profitandloss(-closed, pprice, price)
        margin = comminfo.getvaluesize(size, price)
        when = parse_iso(trade.date) if trade.date else datetime.now(UTC)
        dt = bt.date2num(when.astimezone(UTC).replace(tzinfo=None))
        order.execute(
            dt, size, price, closed, closedvalue, closedcomm, opened, openedvalue, openedcomm,
            margin, pnl, psize, pprice,
        )  # fmt: skip
        if order.executed.remsize:
            order.partial()
        else:
            order.completed()
        self.notify(order)

    def _on_position(self, position: Position) -> None:
        lots = position.qty_batch
        if lots is None and position.qty_units is not None and position.lot_size:
            lots = position.qty_units / position.lot_size
        self._snapshot[position.symbol.casefold()] = (float(lots or 0.0), position.avg_price or 0.0)
