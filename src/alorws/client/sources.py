"""What every source of typed streams offers: :class:`~alorws.client.AlorClient`,
:class:`~alorws.bus.BusClient` and :class:`~alorws.record.Replay`.

A *source* turns any :class:`~alorws.protocol.requests.SubscriptionRequest` into a typed stream
with ``stream(request)``; the stream's model follows from the request's opcode
(:func:`~alorws.protocol.model_for`). The twelve typed methods (``quotes`` … ``stop_orders``)
are written once, in :class:`StreamMethods`: each builds its request and hands it to the
source. So a strategy written against :data:`StreamSource` runs unchanged on a direct client,
on the bus and on a recording::

    async def run(source: StreamSource) -> None:
        async with source.quotes("SBER") as quotes:   # a DataStream[Quote] on every source
            async for q in quotes:
                ...

Every stream satisfies :class:`DataStream`: awaitable (subscribes), an async iterator of
models, an async context manager, with ``get``/``get_batch``, connection ``events`` and
``on_event``, ``bad_payloads``, ``stats()``. The concrete classes add what only they can do
(:class:`~alorws.client.Stream`: ``get_payloads``, ``guid``; ``BusStream``: ``in_gap``,
``subject``); a source's typed methods return its own class, so nothing is lost by typing.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Generic,
    Protocol,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
    get_type_hints,
    runtime_checkable,
)

import msgspec
from msgspec import UNSET

from ..errors import InvalidArgumentError
from ..protocol import requests as rq
from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from ..protocol.codec import model_for
from ..protocol.enums import Exchange, Format, OrderStatus, SubscriptionOpcode
from ..protocol.market import Bar, InstrumentPatch, OrderBook, Quote, Trade
from .buffer import Policy


if TYPE_CHECKING:
    from .lane import LaneEvent

__all__ = [
    "STREAM_KINDS",
    "AccountOptions",
    "BarsOptions",
    "BookOptions",
    "DataStream",
    "MarketOptions",
    "OrdersOptions",
    "QuotesOptions",
    "StreamOptions",
    "TradesOptions",
    "StreamMethods",
    "StreamSource",
    "check_request",
    "is_account",
    "is_whole",
    "split_history",
    "stream_kind",
    "stream_name",
    "takes_options",
]

M = TypeVar("M", bound=Model)


@runtime_checkable
class DataStream(Protocol[M]):
    """One subscription as a typed async stream, whatever its source.

    :class:`~alorws.client.Stream` (a client's and a replay's) and
    :class:`~alorws.bus.BusStream` satisfy it. ``await stream`` (or ``async with``) subscribes;
    ``async for`` yields models until the stream ends; connection events (``disconnected``,
    ``restored``; on a direct client also ``silent``, ``resubscribed``) are kept in ``events``
    and passed to ``on_event`` callbacks, never raised.
    """

    @property
    def request(self) -> rq.SubscriptionRequest:
        """What is subscribed."""

    @property
    def model(self) -> type[M]:
        """The model each message decodes into."""

    @property
    def policy(self) -> Policy:
        """The buffer policy (``latest`` or ``queue``)."""

    @property
    def name(self) -> str:
        """A short name for logs and stats (``"quotes SBER"``, ``"orders D39004"``)."""

    @property
    def account(self) -> bool:
        """True for an account stream (orders, fills, positions, …)."""

    @property
    def is_open(self) -> bool:
        """True between a confirmed subscribe and the unsubscribe."""

    @property
    def events(self) -> list[LaneEvent]:
        """The last connection events, in order (a bounded window; ``event_counts`` counts
        them all)."""

    @property
    def bad_payloads(self) -> int:
        """Messages that did not decode (skipped, logged rate-limited)."""

    def __await__(self) -> Generator[Any, None, DataStream[M]]: ...

    async def subscribe(self) -> DataStream[M]:
        """Subscribe (once) and wait for the confirmation; returns the stream."""

    async def aclose(self) -> None:
        """Unsubscribe; iteration ends."""

    async def __aenter__(self) -> DataStream[M]: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def __aiter__(self) -> AsyncIterator[M]: ...

    async def __anext__(self) -> M: ...

    async def get(self) -> M:
        """The next message (waiting for it); raises StreamClosed at the end."""

    async def get_batch(self, max_items: int = 1000) -> list[M]:
        """Everything available now (at least one message, at most ``max_items``)."""

    def on_event(self, callback: Callable[[LaneEvent], object]) -> None:
        """Call ``callback(event)`` on every connection event."""

    def stats(self) -> dict[str, Any]:
        """Buffer counters, bad payloads, duplicates filtered, events."""


# -- kinds and names ---------------------------------------------------------------------------

#: Per opcode: the kind (the typed method's name) and the label streams are named with.
_KINDS: Final[dict[SubscriptionOpcode, tuple[str, str]]] = {
    SubscriptionOpcode.QUOTES: ("quotes", "quotes"),
    SubscriptionOpcode.ORDER_BOOK: ("order_book", "book"),
    SubscriptionOpcode.BARS: ("bars", "bars"),
    SubscriptionOpcode.ALL_TRADES: ("all_trades", "trades"),
    SubscriptionOpcode.INSTRUMENT: ("instrument", "instrument"),
    SubscriptionOpcode.POSITIONS: ("positions", "positions"),
    SubscriptionOpcode.SUMMARIES: ("summaries", "summaries"),
    SubscriptionOpcode.RISKS: ("risks", "risks"),
    SubscriptionOpcode.SPECTRA_RISKS: ("spectra_risks", "spectra risks"),
    SubscriptionOpcode.TRADES: ("own_trades", "own trades"),
    SubscriptionOpcode.ORDERS: ("orders", "orders"),
    SubscriptionOpcode.STOP_ORDERS: ("stop_orders", "stop orders"),
}

#: The kinds of stream, named after the typed methods: the keys of ``AlorClient``'s
#: ``silence_timeout``.
STREAM_KINDS: Final[tuple[str, ...]] = tuple(kind for kind, _ in _KINDS.values())

#: Account streams kept whole across restores (:mod:`alorws.client.whole`): subscribed with the
#: server's history, which a restore needs, and skipping it client-side when asked.
_WHOLE: Final = (Order, StopOrder, OwnTrade, Position)


def stream_kind(request: rq.SubscriptionRequest) -> str:
    """The kind of ``request``'s stream (``"quotes"``, ``"order_book"``, …; else its opcode)."""
    opcode = type(request).opcode
    return _KINDS.get(opcode, (str(opcode), ""))[0]


def stream_name(request: rq.SubscriptionRequest) -> str:
    """A stream's name: ``"quotes SBER"``, ``"bars SBER 60"``, ``"orders D39004"``…"""
    opcode = type(request).opcode
    label = _KINDS.get(opcode, ("", str(opcode)))[1]
    subject = getattr(request, "code", None) or getattr(request, "portfolio", "")
    tf = getattr(request, "tf", None)
    return f"{label} {subject} {tf}" if tf is not None else f"{label} {subject}"


def is_account(request: rq.SubscriptionRequest) -> bool:
    """True for an account stream (its request names a portfolio)."""
    return "portfolio" in type(request).__struct_fields__


def is_whole(cls: type[rq.SubscriptionRequest]) -> bool:
    """True for the account streams kept whole across restores (orders, stop orders, fills,
    positions): subscribed with the server's history, skipping it client-side when asked."""
    return issubclass(model_for(cls.opcode), _WHOLE)


def split_history(request: rq.SubscriptionRequest) -> tuple[rq.SubscriptionRequest, bool]:
    """The request to subscribe for ``request``, and whether history is skipped client-side.

    Account streams always say ``skip_history``: orders, stop orders, fills and positions are
    subscribed with the server's history (a restore fills its gap from it) and skip it on the
    consumer's side when asked; the others send what was asked (False if not set). Market
    data is subscribed as it is."""
    if not is_account(request):
        return request, False
    asked = getattr(request, "skip_history", UNSET) is True
    made = False if is_whole(type(request)) else asked
    return msgspec.structs.replace(request, skip_history=made), asked


def check_request(request: object) -> rq.SubscriptionRequest:
    """``request`` if it is a subscription request, else InvalidArgumentError."""
    if not isinstance(request, rq.SubscriptionRequest):
        raise InvalidArgumentError(
            "request",
            f"expected a SubscriptionRequest (e.g. QuotesRequest(code='SBER')), "
            f"got {type(request).__name__}",
        )
    return request


# -- the arguments ------------------------------------------------------------------------------


class StreamOptions(TypedDict, total=False):
    """How a stream is delivered: the keyword arguments of every source's ``stream()``, taken
    by every typed method too.

    * ``policy``: ``"latest"`` or ``"queue"``; None: the stream's default (``latest`` for
      quotes, books, summaries and risks, ``queue`` for the rest); a replay: ``queue``.
    * ``max_buffer``: the bound of a ``queue`` buffer; None: the source's.
    * ``silence_timeout``: seconds without data after which ``AlorClient`` subscribes again
      while the connection lives (docs/protocol.md §9.6); None: the client's
      ``silence_timeout`` for the kind; 0: not watched. Unused by a ``BusClient`` (the
      gateway's client watches its subscriptions) and a ``Replay`` (nothing to watch).
    """

    policy: Policy | str | None
    max_buffer: int | None
    silence_timeout: float | None


class MarketOptions(StreamOptions, total=False):
    """Where: ``exchange`` (default MOEX), ``board`` (``instrumentGroup``; None: not sent),
    ``format`` (None: the source's ``format``; a replay: any recorded format)."""

    exchange: Exchange | str
    board: str | None
    format: Format | str | None


class QuotesOptions(MarketOptions, total=False):
    """``frequency``: ms between messages (None: the server's default)."""

    frequency: int | None


class BookOptions(QuotesOptions, total=False):
    """``depth``: levels a side, 1..50 (None: 20)."""

    depth: int | None


class BarsOptions(QuotesOptions, total=False):
    """``from_``: Unix seconds of the first candle (None: now; a ``BusClient``: the current
    minute, so that consumers asking at about the same time share a subscription);
    ``skip_history`` (default False): no candles before now."""

    from_: int | None
    skip_history: bool


class TradesOptions(MarketOptions, total=False):
    """``depth``: replay the last N trades first (0..5000; through a gateway, only to the
    consumer whose request opened its subscription); ``include_virtual_trades``."""

    depth: int | None
    include_virtual_trades: bool | None


class AccountOptions(MarketOptions, total=False):
    """``skip_history`` (default False): only what happens from now on; streams of orders,
    stop orders, fills and positions apply it on the consumer's side (they are subscribed
    with the server's history, which a restore needs). ``board`` is passed to the server as
    AlorPy does."""

    skip_history: bool


class OrdersOptions(AccountOptions, total=False):
    """``statuses``: only these statuses in the initial replay (a server rule; a
    ``BusClient`` filters the replayed orders itself)."""

    statuses: Sequence[OrderStatus | str] | None


#: Values of arguments not given (the others: None).
_DEFAULTS: Final[dict[str, Any]] = {"exchange": Exchange.MOEX, "skip_history": False}
#: Arguments named otherwise in the request.
_FIELDS: Final = {"board": "instrument_group", "statuses": "order_statuses"}
_DELIVERY: Final = frozenset(StreamOptions.__annotations__)

F = TypeVar("F", bound=Callable[..., Any])


def takes_options(options: type[StreamOptions]) -> Callable[[F], F]:
    """The method takes the keyword arguments ``options`` lists: others raise TypeError, as
    Python would, and ``inspect.signature`` (``help()``) shows them with their defaults."""
    names = frozenset(options.__annotations__)
    hints = get_type_hints(options)

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def method(*args: Any, **kwargs: Any) -> Any:
            unknown = kwargs.keys() - names
            if unknown:
                raise TypeError(
                    f"{fn.__name__}() got an unexpected keyword argument {min(unknown)!r}; "
                    f"it takes {', '.join(sorted(names))}"
                )
            return fn(*args, **kwargs)

        fixed = [p for p in inspect.signature(fn).parameters.values() if p.kind != p.VAR_KEYWORD]
        order = sorted(names, key=lambda n: (n in _DELIVERY, list(hints).index(n)))
        keywords = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_DEFAULTS.get(n),
                              annotation=hints[n])
            for n in order
        ]  # fmt: skip
        method.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            fixed + keywords, return_annotation=inspect.signature(fn).return_annotation
        )
        return cast(F, method)

    return decorate


# -- the typed methods, once -------------------------------------------------------------------

QuotesS = TypeVar("QuotesS", bound=DataStream[Quote], covariant=True)
BookS = TypeVar("BookS", bound=DataStream[OrderBook], covariant=True)
BarsS = TypeVar("BarsS", bound=DataStream[Bar], covariant=True)
TradesS = TypeVar("TradesS", bound=DataStream[Trade], covariant=True)
InstrumentS = TypeVar("InstrumentS", bound=DataStream[InstrumentPatch], covariant=True)
PositionsS = TypeVar("PositionsS", bound=DataStream[Position], covariant=True)
SummariesS = TypeVar("SummariesS", bound=DataStream[Summary], covariant=True)
RisksS = TypeVar("RisksS", bound=DataStream[Risk], covariant=True)
SpectraS = TypeVar("SpectraS", bound=DataStream[SpectraRisk], covariant=True)
OwnTradesS = TypeVar("OwnTradesS", bound=DataStream[OwnTrade], covariant=True)
OrdersS = TypeVar("OrdersS", bound=DataStream[Order], covariant=True)
StopOrdersS = TypeVar("StopOrdersS", bound=DataStream[StopOrder], covariant=True)


class StreamMethods(
    Generic[
        QuotesS,
        BookS,
        BarsS,
        TradesS,
        InstrumentS,
        PositionsS,
        SummariesS,
        RisksS,
        SpectraS,
        OwnTradesS,
        OrdersS,
        StopOrdersS,
    ]
):
    """The typed stream methods, shared by every source; a source implements :meth:`stream`.

    Each method builds its request and calls the source's ``stream(request, ...)``, and is typed
    as returning the source's stream class for its model (the type parameters, in the order of
    the methods: Python has no type constructors as parameters, hence one parameter each).

    The keyword arguments are listed, with their defaults, by ``help()`` and by the
    ``*Options`` TypedDicts of this module: :class:`StreamOptions` (``policy``,
    ``max_buffer``, ``silence_timeout``), :class:`MarketOptions` (``exchange``, ``board``,
    ``format``), then each method's own. They mean the same on every source, but:

    * on a ``BusClient``, account streams come from the gateway's subscription of the portfolio,
      stream and exchange: ``board`` and ``format`` are the gateway's, ``statuses`` and
      ``skip_history`` are applied on the consumer's side;
    * a ``Replay`` selects the recorded subscription whose request agrees on every argument
      given: an argument left at None (``skip_history`` at False) matches any recorded value.
      No match, or several, raises :class:`~alorws.errors.ConfigurationError` listing what
      was recorded.
    """

    @takes_options(StreamOptions)
    def stream(
        self, request: rq.SubscriptionRequest, **options: Unpack[StreamOptions]
    ) -> DataStream[Any]:
        """The typed stream of ``request`` (not yet subscribed: ``await`` it or use it as a
        context manager); its model follows from the request's opcode. Each source implements
        it (see its own ``stream``)."""
        raise NotImplementedError

    # -- hooks --------------------------------------------------------------------------------

    def _default_format(self) -> Format:
        """The wire format of a stream whose ``format`` is None."""
        raise NotImplementedError

    def _bars_from(self) -> int:
        """``from_`` of a bars stream that gives none: now (Unix seconds)."""
        return int(time.time())

    def _typed(
        self, cls: type[rq.SubscriptionRequest], fields: dict[str, Any], options: StreamOptions
    ) -> DataStream[Any]:
        """The stream a typed method asks for: ``fields`` are the request's fields given
        (defaults applied), ``options`` how to deliver it. A replay matches instead."""
        fields.setdefault("format", self._default_format())
        if cls is rq.BarsRequest:
            fields.setdefault("from_", self._bars_from())
        return self.stream(cls(**fields), **options)

    def _call(
        self, cls: type[rq.SubscriptionRequest], arguments: Mapping[str, Any], **fixed: Any
    ) -> DataStream[Any]:
        """A typed method's stream from its ``fixed`` (positional) and keyword ``arguments``."""
        fields = dict(fixed)
        options: dict[str, Any] = {}
        for name, value in arguments.items():
            if name in _DELIVERY:
                options[name] = value
            elif value is not None:  # None: not given
                fields[_FIELDS.get(name, name)] = value
        for name, value in _DEFAULTS.items():
            if name in cls.__struct_fields__:
                fields.setdefault(name, value)
        return self._typed(cls, fields, cast(StreamOptions, options))

    # -- market data --------------------------------------------------------------------------

    @takes_options(QuotesOptions)
    def quotes(self, code: str, **options: Unpack[QuotesOptions]) -> QuotesS:
        """Quotes of one instrument (``QuotesSubscribe``, docs/protocol.md §4.2); ``latest`` policy
        by default."""
        return cast(QuotesS, self._call(rq.QuotesRequest, options, code=code))

    @takes_options(BookOptions)
    def order_book(self, code: str, **options: Unpack[BookOptions]) -> BookS:
        """The order book of one instrument, ``depth`` levels a side (docs/protocol.md §4.1);
        ``latest`` policy."""
        return cast(BookS, self._call(rq.OrderBookRequest, options, code=code))

    @takes_options(BarsOptions)
    def bars(self, code: str, tf: int | str, **options: Unpack[BarsOptions]) -> BarsS:
        """Candles of timeframe ``tf`` (seconds or D/W/M/Y) from ``from_`` (default: now, i.e.
        only the forming candle), docs/protocol.md §4.3. Lossless by default."""
        return cast(BarsS, self._call(rq.BarsRequest, options, code=code, tf=tf))

    @takes_options(TradesOptions)
    def all_trades(self, code: str, **options: Unpack[TradesOptions]) -> TradesS:
        """The anonymous tape (docs/protocol.md §4.4); ``depth`` replays the last N trades first.
        Lossless."""
        return cast(TradesS, self._call(rq.AllTradesRequest, options, code=code))

    @takes_options(MarketOptions)
    def instrument(self, code: str, **options: Unpack[MarketOptions]) -> InstrumentS:
        """Trading status and limits of an instrument (docs/protocol.md §4.5): a full message, then
        patches.

        Patches must all be seen to fold them (``InstrumentState.apply``), so the default
        policy is ``queue``."""
        return cast(InstrumentS, self._call(rq.InstrumentRequest, options, code=code))

    # -- account ------------------------------------------------------------------------------

    @takes_options(AccountOptions)
    def positions(self, portfolio: str, **options: Unpack[AccountOptions]) -> PositionsS:
        """Positions (securities and money) of a portfolio (docs/protocol.md §4.6); each change
        once."""
        return cast(PositionsS, self._call(rq.PositionsRequest, options, portfolio=portfolio))

    @takes_options(AccountOptions)
    def summaries(self, portfolio: str, **options: Unpack[AccountOptions]) -> SummariesS:
        """Portfolio summary snapshots (docs/protocol.md §4.7); ``latest`` policy by default."""
        return cast(SummariesS, self._call(rq.SummariesRequest, options, portfolio=portfolio))

    @takes_options(AccountOptions)
    def risks(self, portfolio: str, **options: Unpack[AccountOptions]) -> RisksS:
        """Portfolio risk snapshots (docs/protocol.md §4.8); ``latest`` policy by default."""
        return cast(RisksS, self._call(rq.RisksRequest, options, portfolio=portfolio))

    @takes_options(AccountOptions)
    def spectra_risks(self, portfolio: str, **options: Unpack[AccountOptions]) -> SpectraS:
        """FORTS risk snapshots of a derivatives portfolio (docs/protocol.md §4.9); ``latest`` by
        default."""
        return cast(SpectraS, self._call(rq.SpectraRisksRequest, options, portfolio=portfolio))

    @takes_options(AccountOptions)
    def own_trades(self, portfolio: str, **options: Unpack[AccountOptions]) -> OwnTradesS:
        """The portfolio's fills (docs/protocol.md §4.10); each trade once, across reconnects, none
        merged."""
        return cast(OwnTradesS, self._call(rq.OwnTradesRequest, options, portfolio=portfolio))

    @takes_options(OrdersOptions)
    def orders(self, portfolio: str, **options: Unpack[OrdersOptions]) -> OrdersS:
        """The portfolio's orders (docs/protocol.md §4.11): a copy whenever an order moves further
        along (a final status, more lots filled), never twice in the same state, never rolled back.
        Changes made while disconnected arrive merged into one, the order's state at the restore
        (see docs/client.md, "What a restore guarantees"); count fills with :meth:`own_trades`.

        ``statuses`` filters only the initial replay (a server rule)."""
        return cast(OrdersS, self._call(rq.OrdersRequest, options, portfolio=portfolio))

    @takes_options(OrdersOptions)
    def stop_orders(self, portfolio: str, **options: Unpack[OrdersOptions]) -> StopOrdersS:
        """The portfolio's stop and stop-limit orders (docs/protocol.md §4.12), delivered as
        :meth:`orders`: each state further along once; changes while disconnected merged into the
        latest."""
        return cast(StopOrdersS, self._call(rq.StopOrdersRequest, options, portfolio=portfolio))


#: Any source of typed streams (``AlorClient``, ``BusClient``, ``Replay``), its methods returning
#: :class:`DataStream`: annotate a strategy's source with it.
StreamSource = StreamMethods[
    DataStream[Quote],
    DataStream[OrderBook],
    DataStream[Bar],
    DataStream[Trade],
    DataStream[InstrumentPatch],
    DataStream[Position],
    DataStream[Summary],
    DataStream[Risk],
    DataStream[SpectraRisk],
    DataStream[OwnTrade],
    DataStream[Order],
    DataStream[StopOrder],
]
