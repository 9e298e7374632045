"""``AlorClient``: the asyncio entry point.

::

    async with AlorClient(refresh_token, base_url="http://127.0.0.1:8765") as client:
        async with client.quotes("SBER") as quotes:
            async for q in quotes:
                print(q.last_price)

The client owns an I/O thread (:mod:`alorws.client.runtime`) where every connection is read and
written, a token manager that refreshes the JWT ahead of its ``exp``, and a pool of *lanes*
(connections): market data and account events never share one, market data is sharded over as
many connections as it needs, and the account's budget (10 connections, ``/ws`` and ``/cws``
together, 5000 subscriptions per connection, docs/protocol.md §7) is enforced before anything is
sent. The I/O-thread half (the lanes, where a subscription goes, the budget's rules, the taps)
is :class:`~alorws.client.pool.LanePool`; this class is what the consumer's loop calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, TypeVar, Unpack

import msgspec

from ..errors import (
    AlorError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidState,
    redact,
)
from ..lifecycle import Lifecycle, StreamState
from ..protocol import requests as rq
from ..protocol.backoff import Backoff
from ..protocol.codec import model_for
from ..protocol.enums import Format
from ..protocol.registry import SubscriptionRegistry
from .auth import TokenManager, resolve_refresh_token
from .buffer import WakeBatcher, check_coalesce_us
from .endpoints import Endpoints, resolve_endpoints, ssl_context_for
from .hooks import ConnectionEvent, ConnectionHooks, Hook, run_hooks
from .http import HttpClient
from .lane import Lane, Tap
from .orders import DEFAULT_REAUTH_AFTER_IDLE, OrderClient
from .pool import LanePool
from .proxy import Proxy, ProxyOption, check_http_support, proxy_for
from .runtime import IORuntime
from .sources import (
    STREAM_KINDS,
    StreamOptions,
    check_request,
    is_account,
    split_history,
    stream_kind,
    stream_name,
    takes_options,
)
from .streams import ClientStreams, Stream, buffer_bound, default_policy
from .trader import TraderMethods
from .whole import filter_for


__all__ = ["AlorClient"]

log = logging.getLogger("alorws.client")

T = TypeVar("T")
H = TypeVar("H", bound=HttpClient)


class AlorClient(TraderMethods, ClientStreams, ConnectionHooks):
    """A connection to one ALOR account: typed streams, limits, reconnect-and-restore.

    The stream methods (``quotes``, ``order_book``, ``bars``, ``all_trades``, ``instrument``,
    ``positions``, ``summaries``, ``risks``, ``spectra_risks``, ``own_trades``, ``orders``,
    ``stop_orders``) and :meth:`stream` are those of every stream source
    (:class:`~alorws.client.sources.StreamMethods`): a strategy runs unchanged on a
    ``BusClient`` or a ``Replay``.

    Its lifecycle (:class:`~alorws.lifecycle.Lifecycle`, ``stats()["state"]``):
    ``new -> starting -> open -> closing -> closed``.

    ``on_connect``, ``on_disconnect`` and ``on_restore`` register connection hooks, called in
    the loop the client was started in with a :class:`~alorws.client.hooks.ConnectionEvent`
    (see :mod:`alorws.client.hooks`).

    Args:
        refresh_token: the long-lived token from the ALOR developer portal (never logged);
            ``None`` (the default) takes it from ``ALOR_REFRESH_TOKEN``, the token file
            ``~/.config/alorws/refresh_token`` or the OS keyring
            (:func:`~alorws.client.auth.resolve_refresh_token`; docs/client.md, "Tokens").
        env: ``"prod"`` or ``"dev"`` (ALOR's test environment); ignored with ``base_url``.
        base_url: one base serving HTTP, ``/ws``, ``/cws`` and ``/refresh`` (the simulator:
            ``"http://127.0.0.1:8765"``). Plain http is accepted only for loopback hosts.
        oauth_url: overrides where ``/refresh`` is called.
        cafile: a CA bundle to trust (e.g. the simulator's self-signed certificate).
        format: wire format for streams (default Simple; Slim is smaller, Heavy richest).
        max_connections: connections allowed for the account (ALOR: 10), ``/cws`` included: once
            :attr:`trading` is used it holds one, whatever the ``/ws`` lanes need. A
            subscription that needs a connection beyond it raises
            :class:`~alorws.errors.ConnectionLimitError` (see :mod:`alorws.client.pool`).
        max_subscriptions_per_connection: ALOR: 5000.
        reserve_connections: connections market data may not take, kept for the account
            lane and the order connection (and used by them).
        backoff: reconnect delays (exponential, full jitter, unlimited by default).
        ping_interval, ping_timeout: liveness of silent connections (seconds).
        io_thread: run the network in a dedicated thread (default), so a consumer that blocks
            its loop cannot stall the readers.
        subscribe_timeout: how long ``await stream`` waits for the server's confirmation.
        start_timeout: the most seconds :meth:`start` (``async with``) spends getting the
            first access token, every attempt and pause included (default 30): an auth server
            that accepts the connection and never answers fails the start with
            :class:`~alorws.errors.TransportTimeout` in that time, not after all the retries;
            one that refuses connections fails it with :class:`~alorws.errors.ConnectError`,
            usually sooner. Later token refreshes are not bounded by it (docs/client.md,
            "Starting").
        max_buffer: default bound of lossless (``queue``) stream buffers.
        silence_timeout: seconds without data after which a subscription of a kind is
            subscribed again (docs/protocol.md §9.6), by kind: ``{"quotes": 60, "order_book": 60}``;
            kinds not named (and every kind by default) are not watched. Kinds are the stream
            methods' names (:data:`~alorws.client.sources.STREAM_KINDS`). The stream methods
            and :meth:`stream` take ``silence_timeout=`` per stream too (0 turns it off for
            that one).
            See docs/client.md, "Silent subscriptions".
        reauth_after_idle: before a command on a ``/cws`` connection idle for this many
            seconds, authorize it with a token issued now (docs/protocol.md §9.6); None turns it
            off.
        coalesce_us: trade latency for CPU: at most how many microseconds (0 to 10,000) the
            wake-up of a waiting consumer may be put off so that it takes several messages at
            once. 0 (the default) wakes it right after the socket read that brought its data.
            With more, the I/O thread wakes consumers at most once per ``coalesce_us`` and
            sleeps in between, so at a steady rate it and your loop wake once per interval
            instead of once per message: at 20,000 msgs/s on a 2-vCPU VM, 1000 took the CPU per
            message from 32-39 µs to 9.5-12 µs (a bare picows + msgspec loop: 15-23) and added
            ~+600 µs at p50 and ~+1 ms at p99; 200 took it to 24-31 µs for ~+100 and ~+250
            (docs/client.md, "CPU at a steady rate"). A message after a quiet spell longer than
            ``coalesce_us`` is not delayed. No effect with ``io_thread=False``.
        proxy: how HTTP, ``/ws``, ``/cws`` and ``/refresh`` connect: ``None`` (the default)
            through the proxy the environment names (``HTTPS_PROXY``, ``HTTP_PROXY``,
            ``ALL_PROXY``, minus ``NO_PROXY``; loopback hosts always directly); ``False``
            directly; ``"http://[user:password@]host:port"`` or ``"socks5://…"`` through that
            proxy, loopback hosts included (:mod:`alorws.client.proxy`; docs/client.md,
            "Proxies"). Its password is never shown.
    """

    def __init__(
        self,
        refresh_token: str | None = None,
        *,
        env: str = "prod",
        base_url: str | None = None,
        oauth_url: str | None = None,
        cafile: str | None = None,
        format: Format | str = Format.SIMPLE,
        max_connections: int = 10,
        max_subscriptions_per_connection: int = 5000,
        reserve_connections: int = 2,
        backoff: Backoff | None = None,
        ping_interval: float = 5.0,
        ping_timeout: float = 5.0,
        io_thread: bool = True,
        subscribe_timeout: float = 15.0,
        start_timeout: float = 30.0,
        max_buffer: int = 100_000,
        silence_timeout: Mapping[str, float] | None = None,
        reauth_after_idle: float | None = DEFAULT_REAUTH_AFTER_IDLE,
        coalesce_us: float = 0,
        proxy: ProxyOption = None,
    ) -> None:
        if not 1 <= max_connections:
            raise ConfigurationError("max_connections must be at least 1")
        if not 0 <= reserve_connections < max_connections:
            raise ConfigurationError("reserve_connections must be in 0..max_connections-1")
        if not 1 <= max_subscriptions_per_connection:
            raise ConfigurationError("max_subscriptions_per_connection must be at least 1")
        self._silence: dict[str, float] = {}
        for kind, seconds in (silence_timeout or {}).items():
            if kind not in STREAM_KINDS:
                raise ConfigurationError(
                    f"silence_timeout: unknown stream kind {kind!r}; use one of "
                    f"{', '.join(STREAM_KINDS)}"
                )
            value = _check_silence(f"silence_timeout[{kind!r}]", seconds)
            if value:
                self._silence[kind] = value
        if reauth_after_idle is not None and not (
            reauth_after_idle > 0 and math.isfinite(reauth_after_idle)
        ):
            raise ConfigurationError(
                f"reauth_after_idle must be a finite number > 0 or None, got {reauth_after_idle!r}"
            )
        self._reauth_after_idle = reauth_after_idle
        self.endpoints: Endpoints = resolve_endpoints(env, base_url, oauth_url)
        # Decided now, per endpoint, so that a bad proxy URL (or environment) fails here.
        self._proxies: dict[str, Proxy | None] = {
            url: proxy_for(url, proxy)
            for url in (
                self.endpoints.http,
                self.endpoints.ws,
                self.endpoints.cws,
                self.endpoints.refresh_url,
            )
        }
        check_http_support(self._proxies[self.endpoints.http])
        self._refresh_token = resolve_refresh_token(refresh_token)
        self._cafile = cafile
        try:
            self.format = Format(format)
        except ValueError:
            raise ConfigurationError(
                f"format {format!r} is not one of {', '.join(f.value for f in Format)}"
            ) from None
        if backoff is not None and not isinstance(backoff, Backoff):
            # Anything else would fail in the I/O thread at the first reconnect.
            raise ConfigurationError(
                f"backoff must be an alorws Backoff (e.g. Backoff(base=0.5, cap=30)) or None, "
                f"got {type(backoff).__name__}"
            )
        for name, seconds in (
            ("ping_interval", ping_interval),
            ("ping_timeout", ping_timeout),
            ("subscribe_timeout", subscribe_timeout),
            ("start_timeout", start_timeout),
        ):
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not (seconds > 0 and math.isfinite(seconds))
            ):
                raise ConfigurationError(
                    f"{name} must be a finite number of seconds > 0, got {seconds!r}"
                )
        if type(max_buffer) is not int or max_buffer < 1:
            raise ConfigurationError(f"max_buffer must be an int >= 1, got {max_buffer!r}")
        self._backoff = backoff or Backoff()
        self._start_timeout = float(start_timeout)
        self._max_buffer = max_buffer
        self._runtime = IORuntime(threaded=io_thread)
        # Wake-ups of parked consumers, coalesced per iteration of the I/O loop (bound at start),
        # or per coalesce_us. Without the I/O thread nothing crosses threads: nothing to save.
        coalesce_us = check_coalesce_us(coalesce_us)
        self._batcher = WakeBatcher(coalesce_us=coalesce_us if io_thread else 0)
        self._registry: SubscriptionRegistry[rq.SubscriptionRequest, int] = SubscriptionRegistry(
            max_per_connection=max_subscriptions_per_connection
        )
        self._pool = LanePool(
            self.endpoints.ws,
            self._registry,
            max_connections=max_connections,
            reserve_connections=reserve_connections,
            max_subscriptions_per_connection=max_subscriptions_per_connection,
            subscribe_timeout=subscribe_timeout,
            cafile=cafile,
            backoff=self._backoff,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            proxy=self._proxies[self.endpoints.ws],
        )
        self._lanes: dict[int, Lane] = self._pool.lanes  # the same dict: read-only here
        self._tokens: TokenManager | None = None
        self._state = Lifecycle.NEW
        self._streams: set[Stream[Any]] = set()  # subscribing or open (the consumer's loop)
        self._started_at: float | None = None
        self._loop_tokens: _LoopTokens | None = None
        self._steps: dict[tuple[str, str], float | None] = {}
        self._http: HttpClient | None = None
        self._trading: OrderClient | None = None
        self._init_hooks()
        self._hook_loop: asyncio.AbstractEventLoop | None = None  # where hooks run
        self._pool.on_connection = self._emit_connection

    def __repr__(self) -> str:
        proxy = self._proxies[self.endpoints.http]
        via = f" proxy={proxy}" if proxy is not None else ""
        return (
            f"<AlorClient {self.endpoints.http} {self._state.value} "
            f"refresh_token={redact(self._refresh_token)}{via}>"
        )

    def _proxy(self, url: str) -> Proxy | Literal[False]:
        """What ``proxy=`` passes on for ``url``: the proxy decided for it, or False (none)."""
        return self._proxies[url] or False

    @property
    def max_connections(self) -> int:
        """Connections allowed for the account, ``/cws`` included (the lane pool's budget)."""
        return self._pool.max_connections

    @property
    def reserve_connections(self) -> int:
        """Connections market data may not take (kept for account events and ``/cws``)."""
        return self._pool.reserve_connections

    @property
    def max_subscriptions_per_connection(self) -> int:
        """Subscriptions one ``/ws`` connection takes at most."""
        return self._pool.max_subscriptions_per_connection

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> AlorClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the I/O thread and get the first access token (fails fast on a bad token).

        Getting the token takes at most ``start_timeout`` seconds.

        Raises:
            AuthError: the refresh token was refused.
            TransportTimeout: ``start_timeout`` ran out with the last attempt unanswered.
            ConnectError: the auth server could not be reached (in ``start_timeout``, or
                after all the retries).
        """
        if self._state is not Lifecycle.NEW:
            raise InvalidState(f"cannot start a client that is {self._state.value}")
        self._state = Lifecycle.STARTING
        self._hook_loop = asyncio.get_running_loop()
        await self._runtime.start()
        self._batcher.loop = self._runtime.loop
        try:
            await self._runtime.call(self._io_start)
        except BaseException:
            await self._runtime.stop(self._io_shutdown)
            self._state = Lifecycle.CLOSED
            raise
        self._started_at = time.monotonic()
        assert self._tokens is not None
        self._loop_tokens = _LoopTokens(self._tokens, self._runtime)
        self._state = Lifecycle.OPEN

    async def _io_start(self) -> None:
        self._tokens = TokenManager(
            self._refresh_token,
            self.endpoints.oauth,
            ssl=ssl_context_for(self.endpoints.oauth, cafile=self._cafile),
            proxy=self._proxy(self.endpoints.refresh_url),
            start_timeout=self._start_timeout,
        )
        await self._tokens.start()
        self._pool.tokens = self._tokens

    async def aclose(self) -> None:
        """End every stream, close every connection, stop the I/O thread."""
        if self._state in (Lifecycle.CLOSED, Lifecycle.NEW):
            self._state = Lifecycle.CLOSED
            return
        self._state = Lifecycle.CLOSING
        streams, self._streams = self._streams, set()
        for stream in streams:
            stream._end()  # the connections go away: nothing to unsubscribe
        for closer in (self._trading, self._http):
            if closer is not None:
                try:
                    await closer.aclose()
                except Exception:
                    log.exception("closing %r failed", closer)
        if self._loop_tokens is not None:
            self._loop_tokens.close()
        await self._runtime.stop(self._io_shutdown)
        self._state = Lifecycle.CLOSED

    async def _io_shutdown(self) -> None:
        await self._pool.aclose()
        if self._tokens is not None:
            await self._tokens.aclose()

    # -- account facts ------------------------------------------------------------------------

    @property
    def portfolios(self) -> tuple[str, ...]:
        """Portfolio ids from the access token's ``portfolios`` claim (docs/protocol.md §2.4)."""
        tokens = self._require_tokens()
        return tokens.portfolios

    def _require_tokens(self) -> TokenManager:
        if self._tokens is None or self._state not in (Lifecycle.OPEN, Lifecycle.CLOSING):
            raise InvalidState("the client is not started: use `async with AlorClient(...)`")
        return self._tokens

    # -- orders and HTTP ------------------------------------------------------------------------

    @property
    def trading(self) -> OrderClient:
        """Orders over one ``/cws`` connection (opened on the first command, docs/protocol.md §6).

        ``await client.trading.place_limit(portfolio, "SBER", "buy", 1, price=310.5)`` returns an
        :class:`~alorws.client.orders.OrderAck` or raises :class:`~alorws.errors.OrderRejected`.
        Runs in the caller's event loop. From its first use it holds one connection of the
        budget (``max_connections``); :class:`~alorws.errors.ConnectionLimitError` if the
        ``/ws`` connections already take them all.
        """
        if self._trading is None:
            tokens = self._require_loop_tokens()
            self._pool.reserve_cws()
            self._trading = OrderClient(
                self.endpoints.cws,
                tokens,
                ssl_context=ssl_context_for(self.endpoints.cws, cafile=self._cafile),
                backoff=self._backoff,
                price_step=self._price_step,
                reauth_after_idle=self._reauth_after_idle,
                proxy=self._proxy(self.endpoints.cws),
            )
            self._trading.on_connection = self._emit_connection
        return self._trading

    @property
    def http(self) -> HttpClient:
        """The HTTP API: reference data, history (paged), snapshots, portfolio views
        (docs/protocol.md §8)."""
        if self._http is None:
            self._http = self.http_client(HttpClient)
        return self._http

    def http_client(
        self, cls: type[H], *, format: Format | str | None = None, timeout: float = 15.0
    ) -> H:
        """A new HTTP API client of class ``cls`` (:class:`HttpClient` or a subclass) made as
        :attr:`http` is: this client's tokens, TLS settings and proxy; ``format`` (default:
        the client's) and ``timeout`` (seconds per request) as given. The caller closes it
        (``await http.aclose()``). Only while the client is open."""
        return cls(
            self.endpoints.http,
            self._require_loop_tokens(),
            format=self.format if format is None else format,
            ssl=ssl_context_for(self.endpoints.http, cafile=self._cafile),
            timeout=timeout,
            proxy=self._proxy(self.endpoints.http),
        )

    def _deliver(self, hooks: list[Hook], event: ConnectionEvent) -> None:
        # From the I/O thread (lanes) or this loop (/cws): the hooks run in this loop.
        loop = self._hook_loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(run_hooks, hooks, event)

    async def _price_step(self, symbol: str, exchange: str) -> float | None:
        """An instrument's price step from reference data (cached), None if unknown."""
        key = (symbol.upper(), exchange.upper())
        if key not in self._steps:
            try:
                security = await self.http.security(symbol, exchange)
            except AlorError as exc:
                log.debug("no reference data for %s:%s (%s); price not checked", *key, exc)
                return None
            self._steps[key] = security.min_step
        return self._steps[key]

    def _require_loop_tokens(self) -> _LoopTokens:
        if self._loop_tokens is None or self._state is not Lifecycle.OPEN:
            raise InvalidState("the client is not open: use `async with AlorClient(...)`")
        return self._loop_tokens

    # -- streams ------------------------------------------------------------------------------
    #
    # The typed methods (quotes, order_book, …, stop_orders) are StreamMethods', shared with
    # BusClient and Replay; they build the request and call stream().

    @takes_options(StreamOptions)
    def stream(
        self, request: rq.SubscriptionRequest, **options: Unpack[StreamOptions]
    ) -> Stream[Any]:
        """The typed stream of any subscription request (not yet subscribed: ``await`` it or
        use it as a context manager); its model follows from the request's opcode.

        ``policy`` None: the model's default (``latest`` for state streams); ``max_buffer``
        None: the client's. ``silence_timeout``: seconds without data after which the
        subscription is subscribed again while the connection lives (docs/protocol.md §9.6);
        None takes the client's ``silence_timeout`` for the kind, 0 turns it off. Streams of
        orders, stop orders, fills and positions are subscribed with the server's history and
        apply ``skip_history`` client-side (see docs/client.md, "Reconnect and restore")."""
        if self._state is not Lifecycle.OPEN:
            raise InvalidState("the client is not open: use `async with AlorClient(...)`")
        wire, skip_history = split_history(check_request(request))
        model = model_for(type(request).opcode)
        silence_timeout = options.get("silence_timeout")
        if silence_timeout is None:
            silence_timeout = self._silence.get(stream_kind(request))
        else:
            silence_timeout = _check_silence("silence_timeout", silence_timeout, call=True) or None
        max_buffer = buffer_bound(options.get("max_buffer"), self._max_buffer)
        return Stream(
            self,
            wire,
            model,
            policy=default_policy(model, options.get("policy")),
            account=is_account(request),
            max_buffer=max_buffer,
            filter=filter_for(model, skip_history=skip_history),
            name=stream_name(request),
            batcher=self._batcher,
            silence_timeout=silence_timeout,
        )

    def _default_format(self) -> Format:
        return self.format

    # -- subscribe / unsubscribe (consumer side -> I/O loop) ----------------------------------

    async def _subscribe(self, stream: Stream[Any]) -> tuple[str, int]:
        self._streams.add(stream)
        try:
            return await self._runtime.call(self._pool.subscribe, stream)
        except BaseException:
            self._streams.discard(stream)
            raise

    async def subscribe_all(self, streams: Sequence[Stream[Any]]) -> None:
        """Subscribe many streams at once and wait for every confirmation.

        One hop to the I/O thread for the whole batch, placed on the connections at once by the
        rules of a single subscribe (shared requests, the per-connection limit, the connection
        budget): each connection pipelines its part, and one
        ``subscribe_timeout`` covers the wait for every answer (50,000 subscriptions take about
        as long as restoring them after a drop). Streams that fail are closed with their own
        error; the first failure is raised after the others are settled (check
        ``stream.is_open``). If the batch cannot reach the I/O thread at all (the client closed
        meanwhile, the call cancelled), every stream of it is closed with that error, which is
        raised.
        """
        batch = list(streams)
        begun: list[Stream[Any]] = []
        try:
            for stream in batch:
                stream._begin()
                begun.append(stream)
        except InvalidState:  # a stream not new (or twice in the batch): the batch is refused
            for stream in begun:
                stream._state = StreamState.NEW
            raise
        self._streams.update(batch)
        try:
            results = await self._runtime.call(self._pool.subscribe_many, batch)
        except BaseException as exc:
            for stream in batch:
                stream._finish(exc)
                self._streams.discard(stream)
            raise
        first: BaseException | None = None
        for stream, result in zip(batch, results, strict=True):
            stream._finish(result)
            if isinstance(result, BaseException):
                self._streams.discard(stream)
                first = first or result
        if first is not None:
            raise first

    async def _unsubscribe(self, stream: Stream[Any]) -> None:
        self._streams.discard(stream)
        if self._state is not Lifecycle.OPEN:
            return  # closing: the connections go away anyway
        guid, lane = stream.guid, stream._lane
        if guid is not None and lane is not None:
            await self._runtime.call(self._pool.unsubscribe, guid, lane, stream._buffer)

    # -- observability -----------------------------------------------------------------------

    def add_tap(self, tap: Tap) -> Callable[[], None]:
        """Call ``tap(recv_time_ns, connection_id, frames)`` with every frame any ``/ws``
        connection receives, now and later (the recorder uses it); returns a function that
        removes the tap.

        ``frames`` is a list of the frames (``bytes``, as received, in order) one connection
        received in one iteration of the I/O loop (one socket read, usually), and
        ``recv_time_ns`` (``time.time_ns()``) when the first of them was read: one call per
        read, not per frame, so a busy reader pays a list append per frame. The client does
        not touch the list again; every tap gets the same list, so none may change it. A tap
        runs in the I/O thread and must only enqueue. Called from another thread,
        adding (and removing) takes effect at the I/O loop's next turn."""
        self._in_io(self._pool.add_tap, tap)

        def remove() -> None:
            self._in_io(self._pool.remove_tap, tap)

        return remove

    def _in_io(self, fn: Callable[[Tap], None], tap: Tap) -> None:
        runtime = self._runtime
        if not runtime.started or runtime.in_io_thread():  # not started: no lanes either
            fn(tap)
        else:
            with contextlib.suppress(InvalidState, RuntimeError):  # closed: nothing to tap
                runtime.call_soon(fn, tap)

    async def call_in_io(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(*args)`` in the client's I/O loop and return its result (for extensions
        that must run next to the reader, as the recorder's shipper does; keep it short).

        Raises :class:`~alorws.errors.InvalidState` once the client is closed."""
        return await self._runtime.call(fn, *args)

    def describe(self, guid: str) -> dict[str, Any] | None:
        """What a subscription guid is: ``{"opcode", "params", "connection"}``, or None."""
        sub = self._registry.get(guid)
        if sub is None:
            return None
        params = msgspec.to_builtins(sub.request)
        opcode = params.pop("opcode", type(sub.request).__name__)
        return {"opcode": opcode, "params": params, "connection": sub.connection_id}

    def stats(self) -> dict[str, Any]:
        """Connections, subscriptions, counters and buffer depths (safe to call any time)."""
        lanes = self._pool.stats()
        return {
            "state": self._state.value,
            "connections": len(lanes),
            "lanes": lanes,
            "subscriptions": self._registry.total(),
            "messages": sum(lane["messages"] for lane in lanes),
            "bytes": sum(lane["bytes"] for lane in lanes),
            "reconnects": sum(lane["reconnects"] for lane in lanes),
            "streams": [s.stats() for s in list(self._streams)],
            "tokens": self._tokens.stats if self._tokens is not None else {},
            "orders": self._trading.stats() if self._trading is not None else None,
            "uptime": None if self._started_at is None else time.monotonic() - self._started_at,
        }

    async def drop_connections(self) -> None:
        """Close every connection now (they reconnect and restore): for tests and drills."""
        await self._runtime.call(self._pool.drop)


def _check_silence(name: str, value: object, *, call: bool = False) -> float:
    """A silence timeout: a finite number of seconds >= 0 (0: not watched). A bad one raises
    ConfigurationError (``call``: InvalidArgumentError, for a stream method's argument)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        problem = f"must be a number of seconds, got {value!r}"
    elif not (value >= 0 and math.isfinite(value)):
        problem = f"must be a finite number of seconds >= 0, got {value!r}"
    else:
        return float(value)
    if call:
        raise InvalidArgumentError(name, problem)
    raise ConfigurationError(f"{name} {problem}")


class _LoopTokens:
    """The token manager, usable from the consumer's loop (it lives in the I/O loop)."""

    def __init__(self, tokens: TokenManager, runtime: IORuntime) -> None:
        self._tokens = tokens
        self._runtime = runtime
        self._removers: list[Callable[[], None]] = []

    @property
    def current(self) -> str | None:
        """The current access token, without I/O."""
        return self._tokens.current

    async def token(self) -> str:
        """The current access token, refreshed first if due."""
        return await self._runtime.call(self._tokens.token)

    async def refresh(self, *, force: bool = False) -> str:
        """A fresh access token."""
        return await self._runtime.call(functools.partial(self._tokens.refresh, force=force))

    def add_listener(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Call ``callback(token)`` in the caller's loop on every new token."""
        loop = asyncio.get_running_loop()

        def forward(token: str) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(callback, token)

        remove = self._tokens.add_listener(forward)
        self._removers.append(remove)
        return remove

    def close(self) -> None:
        """Stop forwarding token changes."""
        for remove in self._removers:
            remove()
        self._removers.clear()
