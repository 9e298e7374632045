"""The simulator's subscriptions: which exist, what each one sends and when. Pure: no asyncio.

* :class:`Hub` registers every connection and subscription, counts connections against their
  accounts (docs/protocol.md §12.9), answers ``/ws`` requests (:meth:`Hub.handle_ws`) and fans
  market and account events out.
* :class:`Subscription` and its conflated kinds turn an event or a state into a data message.

A connection is a :class:`Peer` here: the hub hands it frames, and the asyncio side
(:class:`~alorws.sim.connection.Connection`) queues and writes them. Time comes from the clocks
the server passes in; nothing here reads a clock of its own or waits.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Protocol, TypeVar

import msgspec

from ..protocol._model import Model
from ..protocol.enums import Format, OrderStatus, SubscriptionOpcode
from ..protocol.market import Bar, Cluster, ClusterSnapshot, InstrumentPatch, Trade
from ..protocol.requests import (
    AllTradesRequest,
    AnySubscriptionRequest,
    BarsRequest,
    ClustersRequest,
    InstrumentRequest,
    OrderBookRequest,
    OrdersRequest,
    OwnTradesRequest,
    PositionsRequest,
    QuotesRequest,
    RisksRequest,
    SpectraRisksRequest,
    StopOrdersRequest,
    SubscriptionRequest,
    SummariesRequest,
)
from .auth import Claims, TokenService
from .market import TIMEFRAMES, BookUpdated, StatusChanged, TradePrinted, tf_seconds
from .wire import encode_payload


if TYPE_CHECKING:
    from .engine import AccountEvent, TradingEngine
    from .market import MarketEvent, SyntheticMarket


__all__ = [
    "DEFAULT_FREQUENCY_MS",
    "HISTORY_CAP",
    "MAX_GUID_LEN",
    "Envelope",
    "HistoryWait",
    "Hub",
    "Limits",
    "Peer",
    "Subscription",
    "guid_error",
    "read_envelope",
    "status_frame",
]

DEFAULT_FREQUENCY_MS: Final = 175  # docs/protocol.md §3.6
HISTORY_CAP: Final = 3000  # replays send at most the newest 3000 (docs/protocol.md §12.17)
#: docs/protocol.md §12.2: the longest guid accepted on /ws and /cws. ALOR's are UUID-like (36
#: characters); a guid is echoed in every data message, so a longer one is refused rather than
#: repeated.
MAX_GUID_LEN: Final = 128

_ENC: Final = msgspec.json.Encoder()
_DATA: Final = b'{"data":'


class _Status(msgspec.Struct, omit_defaults=True, gc=False):
    requestGuid: str
    httpCode: int
    message: str
    orderNumber: str | None = None


def status_frame(guid: str, code: int, message: str, order_number: str | None = None) -> bytes:
    """``{"requestGuid","httpCode","message"[,"orderNumber"]}`` (docs/protocol.md §5.1)."""
    return _ENC.encode(_Status(guid, code, message, order_number))


def guid_error(guid: str) -> str:
    """The 400 message for a guid over :data:`MAX_GUID_LEN` (the guid itself is not quoted)."""
    return f"guid: at most {MAX_GUID_LEN} characters, got {len(guid)}"


class Envelope(msgspec.Struct, gc=False):
    """The fields every ``/ws`` and ``/cws`` request has, whatever their types; the rest is
    decoded by the request and command classes."""

    opcode: Any = None
    guid: Any = None
    token: Any = None
    checkDuplicates: Any = True  # /cws (docs/protocol.md §12.11)


_ENVELOPE: Final = msgspec.json.Decoder(Envelope)


def read_envelope(frame: bytes | str) -> tuple[Envelope, str] | bytes:
    """A ``/ws`` or ``/cws`` frame's envelope and guid, or the 400 status frame refusing it
    (not JSON, no guid, a guid over :data:`MAX_GUID_LEN`; docs/protocol.md §12.2)."""
    try:
        env = _ENVELOPE.decode(frame)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        return status_frame("", 400, f"Invalid JSON: {exc}")
    guid = env.guid
    if type(guid) is not str or not guid:
        return status_frame("", 400, "Missing or invalid field 'guid'")
    if len(guid) > MAX_GUID_LEN:
        return status_frame("", 400, guid_error(guid))
    return env, guid


def _as_existing(model: Model) -> Model:
    """The same item flagged as coming from the snapshot/history (``existing``,
    docs/protocol.md §3.6)."""
    if getattr(model, "existing", True):
        return model
    return msgspec.structs.replace(model, existing=True)


class Peer(Protocol):
    """What the hub needs of a connection (:class:`~alorws.sim.connection.Connection` is one)."""

    id: int
    login: str | None  # the account it counts against, once known
    subs: dict[str, Subscription]  # by guid; the hub fills it
    closing: bool

    @property
    def unread(self) -> int:
        """Frames handed to the connection and not yet written."""

    def put(self, frame: bytes) -> None:
        """Queue one frame (the connection closes itself if that overflows it)."""

    def offer(self, frame: bytes) -> bool:
        """Queue one frame of a fan-out; False when that overflowed it (the hub then closes
        it)."""

    def put_replay(self, frames: Iterator[bytes]) -> None:
        """Queue frames built lazily, as the connection sends them."""

    def close(self, code: int, reason: str, *, discard: bool = True) -> None:
        """Close with ``code``; with ``discard=False`` what is queued goes out first."""


C = TypeVar("C", bound=Peer)


@dataclass(frozen=True, slots=True)
class HistoryWait:
    """A subscription that needs history built first (:meth:`Hub.handle_ws`).

    The caller builds the :attr:`tf` candles of :attr:`symbol` in bounded steps
    (:meth:`~alorws.sim.market.SyntheticMarket.building`), letting other connections be served
    in between and giving up if :attr:`conn` closes, then runs :attr:`finish`, which
    subscribes.
    """

    conn: Peer
    symbol: str
    tf: int
    finish: Callable[[], None]


# -- subscriptions ----------------------------------------------------------------------------


class Subscription:
    """One active subscription. Conflated kinds implement :meth:`flush`."""

    __slots__ = (
        "alive",
        "conn",
        "fmt",
        "guid",
        "interval",
        "key",
        "last_sent",
        "opcode",
        "scheduled",
        "silent",
        "tail",
    )

    conflated: ClassVar[bool] = False

    def __init__(
        self, guid: str, conn: Peer, fmt: Format, key: tuple[str, str], interval: float
    ) -> None:
        self.guid = guid
        self.conn = conn
        self.fmt = fmt
        self.key = key
        self.interval = interval
        self.tail = b',"guid":' + _ENC.encode(guid) + b"}"
        self.last_sent = -1e18
        self.scheduled = False
        self.alive = True
        self.opcode = ""  # the request's opcode, set once subscribed
        # The silence fault: out of the fan-out index while set (see Hub.silence).
        self.silent = False

    def frame(self, payload: bytes) -> bytes:
        """The data message ``{"data": payload, "guid": …}`` (docs/protocol.md §3.4)."""
        return _DATA + payload + self.tail

    def flush(self, hub: Hub[Any]) -> None:
        """Send the current state (conflated kinds only)."""


class _BookSub(Subscription):
    __slots__ = ("depth", "symbol")
    conflated = True

    def __init__(
        self, guid: str, conn: Peer, fmt: Format, interval: float, symbol: str, depth: int
    ) -> None:
        super().__init__(guid, conn, fmt, ("book", symbol), interval)
        self.symbol = symbol
        self.depth = depth

    def flush(self, hub: Hub[Any]) -> None:
        self.conn.put(self.frame(hub.book_payload(self.symbol, self.depth, self.fmt, False)))


class _QuoteSub(Subscription):
    __slots__ = ("symbol",)
    conflated = True

    def __init__(self, guid: str, conn: Peer, fmt: Format, interval: float, symbol: str) -> None:
        super().__init__(guid, conn, fmt, ("quote", symbol), interval)
        self.symbol = symbol

    def flush(self, hub: Hub[Any]) -> None:
        self.conn.put(self.frame(hub.quote_payload(self.symbol, self.fmt)))


class _BarsSub(Subscription):
    __slots__ = ("last_time", "symbol", "tf")
    conflated = True

    def __init__(
        self, guid: str, conn: Peer, fmt: Format, interval: float, symbol: str, tf: int
    ) -> None:
        super().__init__(guid, conn, fmt, ("bars", symbol), interval)
        self.symbol = symbol
        self.tf = tf
        self.last_time: int | None = None

    def flush(self, hub: Hub[Any]) -> None:
        bar = hub.market.forming_bar(self.symbol, self.tf)
        if bar is None:
            return
        last = self.last_time
        if last is not None and bar.time > last:
            # docs/protocol.md §12.6: the candle just closed gets its final state before the new one
            # starts.
            for closed in hub.market.bars(self.symbol, self.tf, last, last):
                if closed.time == last:
                    self.conn.put(self.frame(encode_payload(closed, self.fmt)))
        if last is None or bar.time >= last:
            self.last_time = bar.time
            self.conn.put(self.frame(hub.bar_payload(self.symbol, self.tf, bar, self.fmt)))


class _InstrumentSub(Subscription):
    __slots__ = ("pending", "symbol")
    conflated = True

    def __init__(self, guid: str, conn: Peer, fmt: Format, interval: float, symbol: str) -> None:
        super().__init__(guid, conn, fmt, ("instrument", symbol), interval)
        self.symbol = symbol
        self.pending: InstrumentPatch | None = None

    def add(self, patch: InstrumentPatch) -> None:
        """Merge a partial update into the one waiting to be sent (docs/protocol.md §4.5)."""
        if self.pending is None:
            self.pending = patch
            return
        changes = {
            f: v for f in patch.__struct_fields__ if (v := getattr(patch, f)) is not msgspec.UNSET
        }
        self.pending = msgspec.structs.replace(self.pending, **changes)

    def flush(self, hub: Hub[Any]) -> None:
        if self.pending is not None:
            patch, self.pending = self.pending, None
            self.conn.put(self.frame(encode_payload(patch, self.fmt)))


class _ClustersSub(Subscription):
    __slots__ = ("buckets", "period", "symbol", "tf")
    conflated = True

    def __init__(
        self, guid: str, conn: Peer, fmt: Format, interval: float, symbol: str, tf: int
    ) -> None:
        super().__init__(guid, conn, fmt, ("clusters", symbol), interval)
        self.symbol = symbol
        self.tf = tf
        self.period = 0
        self.buckets: dict[float, tuple[int, int]] = {}

    def add(self, trade: Trade) -> None:
        ts = (trade.timestamp or 0) // 1000
        period = ts - ts % self.tf
        if period > self.period:
            self.period = period
            self.buckets = {}
        elif period < self.period:
            return  # a late print of a finished period
        buy, sell = self.buckets.get(trade.price, (0, 0))
        if trade.side is not None and trade.side.value == "sell":
            sell += trade.qty
        else:
            buy += trade.qty
        self.buckets[trade.price] = (buy, sell)

    def flush(self, hub: Hub[Any]) -> None:
        snap = ClusterSnapshot(
            timestamp=self.period,
            trade_clusters=[
                Cluster(price=p, buy_qty=b, sell_qty=s)
                for p, (b, s) in sorted(self.buckets.items())
            ],
        )
        self.conn.put(self.frame(encode_payload(snap, self.fmt)))


class _StateSub(Subscription):
    """Summaries, risks, FORTS risks: full snapshot per message, conflated
    (docs/protocol.md §12.4)."""

    __slots__ = ("pending",)
    conflated = True

    def __init__(
        self, guid: str, conn: Peer, fmt: Format, key: tuple[str, str], interval: float
    ) -> None:
        super().__init__(guid, conn, fmt, key, interval)
        self.pending: Model | None = None

    def flush(self, hub: Hub[Any]) -> None:
        if self.pending is not None:
            model, self.pending = self.pending, None
            self.conn.put(self.frame(encode_payload(model, self.fmt)))


# engine stream name -> (opcode, conflated)
_ACCOUNT_STREAMS: Final = {
    SubscriptionOpcode.POSITIONS: "positions",
    SubscriptionOpcode.SUMMARIES: "summaries",
    SubscriptionOpcode.RISKS: "risks",
    SubscriptionOpcode.SPECTRA_RISKS: "spectra_risks",
    SubscriptionOpcode.TRADES: "trades",
    SubscriptionOpcode.ORDERS: "orders",
    SubscriptionOpcode.STOP_ORDERS: "stop_orders",
}
_STATE_STREAMS: Final = frozenset({"summaries", "risks", "spectra_risks"})


class Limits(msgspec.Struct, kw_only=True):
    """Server-side limits (docs/protocol.md §12.9), all configurable."""

    max_connections: int = 10
    max_subscriptions: int = 5000
    max_unread: int = 5000


# -- the hub ----------------------------------------------------------------------------------


class Hub(Generic[C]):
    """Every connection and subscription of one simulator, and the fan-out between them.

    Subscriptions are indexed by what feeds them (an instrument's book, a portfolio's orders,
    ...). The market loop hands the hub each step's events; it encodes a payload once per
    format and hands the bytes to every subscriber. State streams are conflated to one message
    per ``frequency`` interval, event streams never are (docs/protocol.md §12.4).

    Connection accounting (docs/protocol.md §12.9): a ``/ws`` connection counts against the account
    of the first valid token it presents (the handshake carries none in ALOR's protocol), a ``/cws``
    connection against the account it authorizes as. See ``server.py`` for the handshake side.

    Args:
        market, engine, tokens: what requests are answered from.
        limits: connections per account, subscriptions per connection, unread frames.
        clock: seconds, for the conflation intervals (the server's clock).
        wall: Unix seconds, the end of a candle replay and the current cluster period.
    """

    def __init__(
        self,
        market: SyntheticMarket,
        engine: TradingEngine,
        tokens: TokenService,
        limits: Limits,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        self.market = market
        self.engine = engine
        self.tokens = tokens
        self.limits = limits
        self._clock = clock
        self._wall = wall
        self.connections: dict[int, C] = {}
        self.per_account: dict[str, set[int]] = {}
        self._index: dict[tuple[str, str], dict[int, Subscription]] = {}
        self._heap: list[tuple[float, int, Subscription]] = []
        self._ready: list[Subscription] = []
        self._seq = itertools.count()
        self._cache: dict[tuple[Any, ...], bytes] = {}
        self.requests_handled = 0
        self.errors = 0  # failures in the connections' senders (logged); see SimServer.stats

    # -- connections --------------------------------------------------------------------------

    def add(self, conn: C) -> None:
        """Register a new connection (not yet counted against any account)."""
        self.connections[conn.id] = conn

    def attach(self, conn: Peer, login: str) -> bool:
        """Count ``conn`` against ``login``; False if that account is at its limit
        (docs/protocol.md §12.9).

        A connection counts against one account only: the first one it is attached to (tokens
        of other accounts on the same ``/ws`` connection are served but not counted).
        """
        if conn.login is not None:
            return True
        ids = self.per_account.setdefault(login, set())
        if len(ids) >= self.limits.max_connections:
            return False
        ids.add(conn.id)
        conn.login = login
        return True

    def can_attach(self, login: str) -> bool:
        """Whether one more connection of ``login`` would be within the limit."""
        return len(self.per_account.get(login, ())) < self.limits.max_connections

    def remove(self, conn: C) -> None:
        """Forget a closed connection and everything it subscribed to."""
        self.drop_subscriptions(conn)
        self.connections.pop(conn.id, None)
        if conn.login is not None:
            ids = self.per_account.get(conn.login)
            if ids is not None:
                ids.discard(conn.id)
                if not ids:
                    del self.per_account[conn.login]

    def drop_subscriptions(self, conn: Peer) -> None:
        """Remove every subscription of ``conn`` (docs/protocol.md §3.8: they last as long as the
        connection)."""
        for sub in conn.subs.values():
            self._unindex(sub)
        conn.subs.clear()

    def stats(self) -> dict[str, Any]:
        """Connections and subscriptions, in total and per account (``GET /sim/stats``)."""
        accounts: dict[str, dict[str, int]] = {}
        for conn in self.connections.values():
            entry = accounts.setdefault(
                conn.login or "", {"connections": 0, "subscriptions": 0, "unread": 0}
            )
            entry["connections"] += 1
            entry["subscriptions"] += len(conn.subs)
            entry["unread"] += conn.unread
        return {
            "connections": len(self.connections),
            "subscriptions": sum(len(c.subs) for c in self.connections.values()),
            "requests": self.requests_handled,
            "accounts": accounts,
        }

    # -- /ws requests -------------------------------------------------------------------------

    def handle_ws(self, conn: Peer, frame: bytes | str) -> HistoryWait | None:
        """Answer one ``/ws`` request: a subscription (docs/protocol.md §3.2 and
        docs/protocol.md §12.2), an unsubscribe (docs/protocol.md §3.8) or a ping
        (docs/protocol.md §12.3).

        Returns None when done, or a :class:`HistoryWait` to see through before the next
        request of this connection: the request needs history that is built in bounded steps
        first (the first candles of a timeframe, the first quote of an instrument), so one
        long history never holds up the other connections.
        """
        self.requests_handled += 1
        read = read_envelope(frame)
        if isinstance(read, bytes):
            conn.put(read)
            return None
        env, guid = read
        opcode = env.opcode
        if type(opcode) is not str:
            conn.put(status_frame(guid, 400, "Missing or invalid field 'opcode'"))
            return None
        lowered = opcode.lower()
        if lowered == "ping":  # docs/protocol.md §12.3: answered whatever the token
            conn.put(status_frame(guid, 200, "Handled successfully"))
            return None
        claims = self.tokens.verify(env.token)
        if claims is None:  # docs/protocol.md §2.6 and docs/protocol.md §12.1
            conn.put(status_frame(guid, 401, "Invalid JWT token!"))
            return None
        if conn.login is None and not self.attach(conn, claims.login):
            conn.put(status_frame(guid, 429, "Connection limit exceeded"))
            conn.close(1008, "Connection limit exceeded", discard=False)
            return None
        if lowered == "unsubscribe":  # any case (docs/protocol.md §12.7)
            sub = conn.subs.pop(guid, None)
            if sub is not None:
                self._unindex(sub)
            conn.put(status_frame(guid, 200, "Handled successfully"))
            return None
        try:
            request = _REQUEST.decode(frame)
        except msgspec.ValidationError as exc:
            conn.put(status_frame(guid, 400, f"Invalid request: {exc}"))
            return None
        except (msgspec.DecodeError, ValueError) as exc:  # pragma: no cover - decoded above
            conn.put(status_frame(guid, 400, f"Invalid JSON: {exc}"))
            return None
        if guid in conn.subs:  # docs/protocol.md §12.2: the existing subscription is untouched
            conn.put(status_frame(guid, 400, f"Subscription with guid '{guid}' already exists"))
            return None
        if len(conn.subs) >= self.limits.max_subscriptions:
            conn.put(status_frame(guid, 429, "Subscription limit exceeded"))
            return None
        symbol = self._resolve(conn, guid, request, claims)
        if symbol is None:
            return None
        needs = self._needs_history(symbol, request)
        if needs is not None and not self.market.series_ready(symbol, needs):
            return HistoryWait(
                conn, symbol, needs, partial(self._subscribe_built, conn, guid, request, symbol)
            )
        self._subscribe(conn, guid, request, symbol)
        return None

    def _resolve(
        self, conn: Peer, guid: str, req: SubscriptionRequest, claims: Claims
    ) -> str | None:
        """The instrument's ticker or the portfolio a request is about; None after a refusal
        (already answered)."""
        if hasattr(req, "code"):
            # An empty or null instrumentGroup (the web terminal sends both) names no board.
            board = getattr(req, "instrument_group", None) or None
            info = self.market.find(req.code, req.exchange.value, board)
            if info is None:
                where = "" if board is None else f" on board '{board}'"
                conn.put(
                    status_frame(
                        guid, 400, f"Unknown instrument '{req.exchange.value}:{req.code}'{where}"
                    )
                )
                return None
            symbol: str = info.symbol
        else:
            portfolio: str = req.portfolio  # type: ignore[attr-defined]
            if portfolio not in claims.portfolios:
                conn.put(status_frame(guid, 403, f"Access to portfolio '{portfolio}' is denied"))
                return None
            return portfolio
        if isinstance(req, BarsRequest | ClustersRequest):
            problem = self.market.check_candles(
                symbol, tf_seconds(req.tf), req.from_, series=isinstance(req, BarsRequest)
            )
            if problem is not None:
                conn.put(status_frame(guid, 400, problem))
                return None
        return symbol

    @staticmethod
    def _needs_history(symbol: str, req: SubscriptionRequest) -> int | None:
        """The timeframe whose candles must be built before ``req`` can be answered."""
        if isinstance(req, BarsRequest):
            return tf_seconds(req.tf)
        if isinstance(req, QuotesRequest):
            return TIMEFRAMES["D"]  # a quote carries the day's candle (docs/protocol.md §4.2)
        return None

    def _subscribe_built(
        self, conn: Peer, guid: str, req: SubscriptionRequest, symbol: str
    ) -> None:
        """:meth:`_subscribe` once the history is built, unless ``conn`` closed meanwhile."""
        if not conn.closing:
            self._subscribe(conn, guid, req, symbol)

    def _subscribe(self, conn: Peer, guid: str, req: SubscriptionRequest, symbol: str) -> None:
        fmt = req.format
        market = self.market
        freq = getattr(req, "frequency", None)
        freq_ms = freq if isinstance(freq, int) else DEFAULT_FREQUENCY_MS
        # docs/protocol.md §12.4: clamped to the format's minimum; 0 means "as fast as the format
        # allows".
        interval = max(freq_ms, fmt.min_frequency_ms) / 1000.0
        now = self._clock()
        put = conn.put

        def reply() -> None:
            put(status_frame(guid, 200, "Handled successfully"))

        match req:
            case OrderBookRequest():
                sub: Subscription = _BookSub(guid, conn, fmt, interval, symbol, req.depth)
                reply()
                # docs/protocol.md §12.5: the first message is the whole book flagged existing.
                put(sub.frame(self.book_payload(symbol, req.depth, fmt, True)))
                sub.last_sent = now
            case QuotesRequest():
                sub = _QuoteSub(guid, conn, fmt, interval, symbol)
                reply()
                put(sub.frame(self.quote_payload(symbol, fmt)))
                sub.last_sent = now
            case BarsRequest():
                tf = tf_seconds(req.tf)
                bars_sub = sub = _BarsSub(guid, conn, fmt, interval, symbol, tf)
                reply()
                forming = market.forming_bar(symbol, tf)
                last_time = None
                if req.skip_history is not True:
                    # docs/protocol.md §12.6: every candle from `from` to now, oldest first, then
                    # the forming one.
                    bars = market.bars(symbol, tf, req.from_, int(self._wall()))
                    if forming is not None and bars and bars[-1].time == forming.time:
                        bars = bars[:-1]
                    if forming is not None and forming.time >= req.from_:
                        bars.append(forming)
                    if bars:
                        last_time = bars[-1].time
                        conn.put_replay(self._frames(sub, bars))
                    sub.last_sent = now
                bars_sub.last_time = last_time
            case AllTradesRequest():
                sub = Subscription(guid, conn, fmt, ("trades", symbol), 0.0)
                reply()
                # docs/protocol.md §4.4: the last `depth` trades first; none for 0 (AlorPy's
                # default) or unset.
                depth = req.depth
                if isinstance(depth, int) and depth > 0:
                    trades = market.last_trades(symbol, min(depth, HISTORY_CAP))
                    conn.put_replay(self._frames(sub, trades, existing=True))
            case InstrumentRequest():
                sub = _InstrumentSub(guid, conn, fmt, interval, symbol)
                reply()
                put(sub.frame(encode_payload(market.instrument_patch(symbol), fmt)))  # complete
                sub.last_sent = now
            case ClustersRequest():
                tf = tf_seconds(req.tf)
                clusters = sub = _ClustersSub(guid, conn, fmt, interval, symbol, tf)
                reply()
                now_s = int(self._wall())
                start = now_s - now_s % tf
                for trade in market.last_trades(symbol, HISTORY_CAP):
                    if (trade.timestamp or 0) // 1000 >= start:
                        clusters.add(trade)
                sub.flush(self)
                sub.last_sent = now
            case (
                PositionsRequest()
                | SummariesRequest()
                | RisksRequest()
                | SpectraRisksRequest()
                | OwnTradesRequest()
                | OrdersRequest()
                | StopOrdersRequest()
            ):
                stream = _ACCOUNT_STREAMS[req.opcode]
                if stream in _STATE_STREAMS:
                    sub = _StateSub(guid, conn, fmt, (stream, symbol), interval)
                else:
                    sub = Subscription(guid, conn, fmt, (stream, symbol), 0.0)
                reply()
                if req.skip_history is not True:
                    items = self._account_snapshot(stream, symbol, req)
                    if items:
                        conn.put_replay(self._frames(sub, items, existing=True))
                    sub.last_sent = now
            case _:  # pragma: no cover - every request class is handled above
                put(status_frame(guid, 400, f"Unsupported opcode '{req.opcode}'"))
                return
        if conn.closing:  # the initial data overflowed the queue
            return
        sub.opcode = str(req.opcode)
        conn.subs[guid] = sub
        self._index.setdefault(sub.key, {})[id(sub)] = sub
        if isinstance(sub, _BarsSub):
            market.pin(symbol, sub.tf)  # its candles stay while it lives

    def _account_snapshot(self, stream: str, portfolio: str, req: Any) -> list[Model]:
        engine = self.engine
        items: list[Model]
        source: list[Model]
        if stream == "positions":
            items = list(engine.positions(portfolio))
        elif stream == "summaries":
            items = [m for m in (engine.summary(portfolio),) if m is not None]
        elif stream == "risks":
            items = [m for m in (engine.risk(portfolio),) if m is not None]
        elif stream == "spectra_risks":
            items = [m for m in (engine.spectra_risk(portfolio),) if m is not None]
        elif stream == "trades":
            trades: list[Model] = list(engine.trades(portfolio))
            items = trades[-engine.history_cap :]
        else:
            if stream == "orders":
                source = list(engine.orders(portfolio))
            else:
                source = list(engine.stop_orders(portfolio))
            statuses: Any = getattr(req, "order_statuses", msgspec.UNSET)
            if statuses is not msgspec.UNSET and statuses:
                wanted = {OrderStatus(s) for s in statuses}
                source = [o for o in source if getattr(o, "status", None) in wanted]
            # docs/protocol.md §4.11: the status filter applies to this replay only; the cap to the
            # newest 3000.
            items = list(source)[-engine.history_cap :]
        return items

    @staticmethod
    def _frames(
        sub: Subscription, items: Iterable[Model], existing: bool = False
    ) -> Iterator[bytes]:
        fmt = sub.fmt
        for item in items:
            if not sub.alive:
                return
            yield sub.frame(encode_payload(_as_existing(item) if existing else item, fmt))

    # -- the silence fault --------------------------------------------------------------------

    def silence(self, sub: Subscription) -> bool:
        """Stop sending ``sub`` anything while it stays subscribed (False if it already is
        silent or gone). It leaves the fan-out index, so it costs the others nothing."""
        if sub.silent or not sub.alive:
            return False
        sub.silent = True
        bucket = self._index.get(sub.key)
        if bucket is not None:
            bucket.pop(id(sub), None)
            if not bucket:
                del self._index[sub.key]
        return True

    def unsilence(self, sub: Subscription) -> bool:
        """Let a silenced subscription receive data again, if it is still subscribed."""
        if not sub.silent:
            return False
        sub.silent = False
        conn = sub.conn
        if not sub.alive or conn.closing or conn.subs.get(sub.guid) is not sub:
            return False
        self._index.setdefault(sub.key, {})[id(sub)] = sub
        return True

    def _unindex(self, sub: Subscription) -> None:
        if sub.alive and isinstance(sub, _BarsSub):
            self.market.unpin(sub.symbol, sub.tf)
        sub.alive = False
        bucket = self._index.get(sub.key)
        if bucket is not None:
            bucket.pop(id(sub), None)
            if not bucket:
                del self._index[sub.key]

    # -- cached payloads (valid until the next market step) ----------------------------------

    def book_payload(self, symbol: str, depth: int, fmt: Format, existing: bool) -> bytes:
        """The encoded top-``depth`` book, shared by every subscriber in this step."""
        key = ("book", symbol, depth, fmt, existing)
        payload = self._cache.get(key)
        if payload is None:
            book = self.market.order_book(symbol, depth)
            if book.existing != existing:
                book = msgspec.structs.replace(book, existing=existing)
            payload = self._cache[key] = encode_payload(book, fmt)
        return payload

    def quote_payload(self, symbol: str, fmt: Format) -> bytes:
        """The encoded quote, shared by every subscriber in this step."""
        key = ("quote", symbol, fmt)
        payload = self._cache.get(key)
        if payload is None:
            payload = self._cache[key] = encode_payload(self.market.quote(symbol), fmt)
        return payload

    def bar_payload(self, symbol: str, tf: int, bar: Bar, fmt: Format) -> bytes:
        """The encoded forming candle, shared by every subscriber in this step."""
        key = ("bar", symbol, tf, fmt)
        payload = self._cache.get(key)
        if payload is None:
            payload = self._cache[key] = encode_payload(bar, fmt)
        return payload

    # -- fan-out ------------------------------------------------------------------------------

    def publish_market(self, events: Iterable[MarketEvent]) -> None:
        """Fan one market step's events out (the caller then calls :meth:`flush_due`)."""
        self._cache.clear()
        index = self._index
        touch = self._touch
        for ev in events:
            if isinstance(ev, TradePrinted):
                trade = ev.trade
                symbol = trade.symbol or ""
                subs = index.get(("trades", symbol))
                if subs:
                    self._send_event(subs, trade)
                for kind in ("quote", "bars"):
                    subs = index.get((kind, symbol))
                    if subs:
                        for sub in subs.values():
                            touch(sub)
                subs = index.get(("clusters", symbol))
                if subs:
                    for sub in subs.values():
                        sub.add(trade)  # type: ignore[attr-defined]
                        touch(sub)
            elif isinstance(ev, BookUpdated):
                for kind in ("book", "quote"):
                    subs = index.get((kind, ev.symbol))
                    if subs:
                        for sub in subs.values():
                            touch(sub)
            elif isinstance(ev, StatusChanged):
                subs = index.get(("instrument", ev.patch.symbol))
                if subs:
                    for sub in subs.values():
                        sub.add(ev.patch)  # type: ignore[attr-defined]
                        touch(sub)

    def publish_account(self, events: Iterable[AccountEvent]) -> None:
        """Fan account events out: event streams at once, state streams conflated."""
        index = self._index
        for ev in events:
            subs = index.get((ev.stream, ev.portfolio))
            if not subs:
                continue
            if ev.stream in _STATE_STREAMS:
                for sub in subs.values():
                    sub.pending = ev.payload  # type: ignore[attr-defined]
                    self._touch(sub)
            else:
                self._send_event(subs, ev.payload)

    @staticmethod
    def _send_event(subs: dict[int, Subscription], item: Model) -> None:
        # The hot path of the fan-out: one encoding per format, whatever the number of
        # subscribers (docs/protocol.md §12.4: never conflated).
        encoded: dict[Format, bytes] = {}
        overflowed: list[Peer] = []
        for sub in subs.values():
            conn = sub.conn
            if conn.closing:
                continue
            head = encoded.get(sub.fmt)
            if head is None:
                head = encoded[sub.fmt] = _DATA + encode_payload(item, sub.fmt)
            if not conn.offer(head + sub.tail):
                overflowed.append(conn)  # closed after the loop: closing edits ``subs``
        for conn in overflowed:
            conn.close(1008, "Buffer overflow")

    def _touch(self, sub: Subscription) -> None:
        if sub.scheduled:
            return
        sub.scheduled = True
        due = sub.last_sent + sub.interval
        if due <= self._clock():
            self._ready.append(sub)
        else:
            heapq.heappush(self._heap, (due, next(self._seq), sub))

    def flush_due(self) -> float | None:
        """Send every conflated subscription whose interval has passed.

        Returns the time (``clock``) of the next one due, or None.
        """
        now = self._clock()
        ready, self._ready = self._ready, []
        heap = self._heap
        while heap and heap[0][0] <= now:
            ready.append(heapq.heappop(heap)[2])
        for sub in ready:
            sub.scheduled = False
            if sub.alive and not sub.silent and not sub.conn.closing:
                sub.last_sent = now
                sub.flush(self)
        return heap[0][0] if heap else None


_REQUEST: Final = msgspec.json.Decoder(AnySubscriptionRequest)
