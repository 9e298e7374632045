"""The simulator's aiohttp application: one port, like ALOR's one host (docs/protocol.md §12.18).

Routes: ``/ws`` (subscriptions, docs/protocol.md §3-5), ``/cws`` (order commands,
docs/protocol.md §6), ``POST /refresh`` (the oauth service, docs/protocol.md §2.2), the HTTP subset
of docs/protocol.md §8 (``/md/v2/...``, the own trade history under ``/md/stats/...`` and
``/commandapi/...``) and, only when enabled, the admin endpoints ``/sim/*`` that inject faults.

Connection limit (docs/protocol.md §12.9). ALOR's ``/ws`` handshake carries no credentials: the
token travels inside each request (docs/protocol.md §2.5). The simulator therefore attributes a
connection to an account

* at the handshake, when it carries ``Authorization: Bearer <jwt>`` (not ALOR's protocol, but
  harmless; clients that send it get the 11th connection refused with HTTP 429 right there);
* otherwise at its first authenticated message: the first ``/ws`` request with a valid token,
  or the ``authorize`` of a ``/cws`` connection. If the account already has ``max_connections``
  open connections, that message gets status 429 and the connection is closed with 1008.

Flow control (docs/protocol.md §12.9). Each connection has its own queue and sender task (see
``subscriptions.py``). The transport's write buffer is capped (64 KiB) and, when ``send_buffer`` is
set, so is the kernel send buffer (``SO_SNDBUF``); frames a client does not read then stay in the
queue, where they are counted: more than ``max_unread`` closes the connection with 1008. The kernel
default (autotuned, up to megabytes on loopback) is kept unless ``send_buffer`` is given: tests set
a small one so a client that stops reading overflows fast; a small kernel buffer also caps how much
one connection can take per event-loop turn.

Bad input (docs/protocol.md §12.2). Every request is answered: a bad one with a 4xx and a message
naming what is wrong, whatever the endpoint. Frames over ``MAX_REQUEST`` (64 KiB) close the
WebSocket with 1009; bodies over it get 413. A failure inside the simulator (a bug, not bad input)
answers 500 in place of that one request or frame, is logged and counted in ``stats()["errors"]``;
the connection it happened on carries on. Replies to ``/cws`` commands go out before any close frame
that follows them, so an executed command never loses its reply to a later close.

Admin (``/sim/*``). With an ``admin_token`` every admin request must carry it, as
``Authorization: Bearer <admin token>`` or ``X-Sim-Admin: <admin token>``; otherwise 401.

Production faults (docs/protocol.md §12.16; switched on through :mod:`~alorws.sim.faults`):

* **idle ``/cws``** (``cws_idle``): a ``/cws`` connection without a command for longer than
  ``cws_idle`` seconds goes stale. Every token issued until then (the account's, on any
  connection) is "old": ``authorize`` with one is answered 200 and changes nothing, and the next
  command on a stale connection is not executed: the TCP connection is cut (1006, no reply).
  ``authorize`` with a token issued later clears it and restarts the idle clock.
* **restart window** (``window_until``): new connections and HTTP requests get 503, except a
  share ``window_accept`` let through; a WebSocket let through is dropped ``window_linger``
  seconds later at most, and no later than the window's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import WSMsgType, web

from ..errors import InvalidArgumentError
from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, StopOrder
from ..protocol.commands import CommandFrameError, decode_command
from ..protocol.enums import Format, Side
from ..protocol.http_models import AllTradesPage
from ..protocol.market import Trade
from ..protocol.timeutil import parse_iso
from .auth import Claims, TokenService
from .market import MAX_TF, MAX_TIME_S, TIMEFRAMES, bucket_end, bucket_start
from .subscriptions import (
    MAX_GUID_LEN,
    Connection,
    Hub,
    Limits,
    guid_error,
    status_frame,
    tf_seconds,
)
from .wire import wire


if TYPE_CHECKING:
    from .engine import TradingEngine
    from .faults import Faults
    from .market import InstrumentInfo, SyntheticMarket


__all__ = ["MAX_REQUEST", "SimServer"]

log = logging.getLogger("alorws.sim")

#: Largest WebSocket frame and HTTP body accepted, bytes: requests are small (an order with a
#: 100-character comment is under 1 KiB). Above it: close 1009, or HTTP 413.
MAX_REQUEST: Final = 64 * 1024
_MAX_INJECT: Final = 1 << 20  # /sim/inject may carry a larger frame (it is sent, not parsed)
_ENCODE_CHUNK: Final = 2000  # candles encoded per event-loop turn in an HTTP history page
DUPLICATE_WINDOW: Final = 3600.0  # docs/protocol.md §12.11: a /cws guid is remembered for 1 hour
_TICK: Final = 0.005  # market loop period; below the smallest frequency (Slim, 10 ms)
_MAX_STEP_MS: Final = 20  # market time advanced per turn at most: bounds the work per turn
_HIGH_WATER: Final = 64 * 1024  # transport write buffer per connection, bytes
_ENC: Final = msgspec.json.Encoder()


class _Env(msgspec.Struct, gc=False):
    opcode: Any = None
    guid: Any = None
    token: Any = None
    checkDuplicates: Any = True


_ENV: Final = msgspec.json.Decoder(_Env)
_JSON: Final = msgspec.json.Decoder()


class _SimWebSocket(web.WebSocketResponse):
    """A WebSocket whose close frame follows whatever its connection has queued.

    aiohttp writes a close frame itself when the client closes or sends a frame it refuses
    (1009); the replies already queued for earlier requests, commands that have run included,
    are written first.
    """

    conn: Connection | None = None

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        conn = self.conn
        if conn is not None and not self.closed:
            conn.flush_now()
        return await super().close(code=code, message=message, drain=drain)


class _AiohttpWire:
    """:class:`~alorws.sim.subscriptions.Wire` over an aiohttp request's transport."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, request: web.Request, send_buffer: int | None) -> None:
        transport = request.transport
        assert transport is not None
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None and send_buffer:
            # A small kernel buffer too, so "not read by the client" shows up in our queue.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self._transport = transport
        self._protocol = request.protocol

    def write(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def writing_paused(self) -> bool:
        return bool(self._protocol.writing_paused)

    def drain(self) -> Awaitable[None]:
        # aiohttp's own flow-control wait (resolved by resume_writing or connection_lost).
        helper: Callable[[], Awaitable[None]] = self._protocol._drain_helper
        return helper()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_ENC.encode(data), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"code": status, "message": message}, status)


def _bad(name: str, what: str, text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=f"{name}: {what}, got {text!r}")


def _int_arg(
    request: web.Request, name: str, low: int | None = None, high: int | None = None
) -> int | None:
    """An optional integer query parameter (None when absent or empty); 400 if invalid."""
    text = request.query.get(name, "")
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise _bad(name, "must be an integer", text) from None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"{low}..{high}"
        raise _bad(name, f"must be {bounds}", text)
    return value


def _float_arg(request: web.Request, name: str) -> float | None:
    text = request.query.get(name, "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _bad(name, "must be a number", text) from None
    if not math.isfinite(value):
        raise _bad(name, "must be a finite number", text)
    return value


def _time_arg(request: web.Request, name: str) -> int | None:
    """An optional time parameter, Unix seconds within ``0..MAX_TIME_S``."""
    return _int_arg(request, name, 0, MAX_TIME_S - 1)


async def _read_json(request: web.Request, limit: int = MAX_REQUEST) -> dict[str, Any] | None:
    """The request's JSON object body (None without a body); 400 for anything else.

    ``limit`` bounds the body (413 above it).
    """
    if not request.can_read_body:
        return None
    if limit != MAX_REQUEST:
        request = request.clone(client_max_size=limit)
    data = await request.read()
    try:
        body = _JSON.decode(data)
    except (msgspec.DecodeError, ValueError) as exc:  # ValueError: bad UTF-8
        raise web.HTTPBadRequest(text=f"Body is not valid JSON: {exc}") from None
    except RecursionError:
        raise web.HTTPBadRequest(text="Body is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=f"Body must be a JSON object, got {type(body).__name__}")
    return body


def _bool_arg(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "").lower()
    if text not in ("", "true", "false"):
        raise _bad(name, "must be true or false", text)
    return text == "true"


def _side_arg(request: web.Request) -> Side | None:
    text = request.query.get("side", "")
    if not text:
        return None
    try:
        return Side(text)
    except ValueError:
        raise _bad("side", "must be buy or sell", text) from None


class SimServer:
    """The running simulator's network side: HTTP + WebSocket on one aiohttp app.

    Args:
        market, engine: the synthetic market and trading engine (pure, stepped from here).
        tokens: issues and checks JWTs.
        limits: connection, subscription and unread limits (docs/protocol.md §12.9).
        rate: unused here (the market generates its own events); kept for stats.
        http_rate: HTTP requests per second per account (docs/protocol.md §12.10).
        admin: serve ``/sim/*``.
        admin_token: when set, every ``/sim/*`` request must carry it (``Authorization:
            Bearer <admin token>`` or ``X-Sim-Admin``); 401 otherwise.
        send_buffer: kernel send buffer (SO_SNDBUF) per connection, bytes; None = the OS's.
        close_timeout: how long a server-initiated close waits for the client's close frame.
    """

    def __init__(
        self,
        market: SyntheticMarket,
        engine: TradingEngine,
        tokens: TokenService,
        limits: Limits,
        *,
        http_rate: int = 100,
        admin: bool = False,
        admin_token: str | None = None,
        send_buffer: int | None = None,
        close_timeout: float = 2.0,
    ) -> None:
        if admin_token is not None and (type(admin_token) is not str or not admin_token):
            raise InvalidArgumentError("admin_token", "must be a non-empty str or None")
        self.market = market
        self.engine = engine
        self.tokens = tokens
        self.limits = limits
        self.hub = Hub(market, engine, tokens, limits)
        self.http_rate = http_rate
        self.admin = admin
        self.admin_token = admin_token
        self.send_buffer = send_buffer
        self.close_timeout = close_timeout
        self.refuse_until = 0.0  # loop time; new connections and HTTP get 503 before it
        self.reply_delay = 0.0  # seconds added before each reply (fault)
        # The idle /cws fault: None (off) or seconds; per account, tokens up to this serial
        # leave a /cws connection stale; commands refused by a reset.
        self.cws_idle: float | None = None
        self._stale_cutoff: dict[str, int] = {}
        self.stale_resets = 0
        # The restart window: until (loop time), the share of attempts let through, how long
        # one of them lives at most, the close code; what it did.
        self.window_until = 0.0
        self.window_accept = 0.0
        self.window_linger = 1.0
        self.window_code = 1006
        self.window_random: Callable[[], float] = lambda: 1.0
        self.window_counts = {"refused": 0, "admitted": 0, "dropped": 0}
        self.faults: Faults | None = None
        self.sockets: dict[int, web.WebSocketResponse] = {}
        self.transports: dict[int, asyncio.Transport] = {}
        self._closers: set[asyncio.Task[Any]] = set()
        self._seen_cws: dict[tuple[str, str], tuple[float, bytes]] = {}
        self._seen_http: dict[tuple[str, str], tuple[float, int, dict[str, Any]]] = {}
        self._http_hits: dict[str, deque[float]] = {}
        self._http_serial = 0
        self._market_task: asyncio.Task[None] | None = None
        # Failures inside the simulator (bugs, never bad input): a handler, a /ws or /cws
        # message, the market loop, a background fault. Each is logged.
        self.errors = 0
        self.app = self._build_app()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the market loop (call from the event loop, after the site is up)."""
        self._market_task = asyncio.get_running_loop().create_task(self._market_loop())

    async def stop(self) -> None:
        """Stop the market loop and close every connection with 1001 (going away)."""
        task, self._market_task = self._market_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in list(self.hub.connections.values()):
            conn.close(1001, "Server shutdown")
        if self._closers:
            # Give clients a moment to answer the close frame, then cut what is left.
            await asyncio.wait(set(self._closers), timeout=1.0)
        for transport in list(self.transports.values()):
            transport.abort()
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)

    def refusing(self) -> bool:
        """True while the refuse/restart fault keeps new connections out."""
        return asyncio.get_running_loop().time() < self.refuse_until

    def in_window(self) -> bool:
        """True while a restart window lasts (see :meth:`Faults.restart_window`)."""
        return asyncio.get_running_loop().time() < self.window_until

    def _window_admits(self) -> bool:
        """During a restart window: whether this attempt gets through (counted either way)."""
        if self.window_random() >= self.window_accept:
            self.window_counts["refused"] += 1
            return False
        self.window_counts["admitted"] += 1
        return True

    def _doom(self, conn: Connection) -> None:
        """Drop a connection let through a restart window, within ``window_linger`` seconds
        and no later than the window's end."""
        loop = asyncio.get_running_loop()
        delay = min(self.window_random() * self.window_linger, self.window_until - loop.time())
        conn.doomed = loop.call_later(max(0.0, delay), self._window_drop, conn)

    def _window_drop(self, conn: Connection) -> None:
        conn.doomed = None
        if not conn.closing:
            self.window_counts["dropped"] += 1
            code = self.window_code
            conn.close(code, "" if code == 1006 else "Service restart")

    # -- the idle /cws fault ------------------------------------------------------------------

    def set_cws_idle(self, seconds: float | None) -> None:
        """Turn the idle ``/cws`` fault on (``seconds``) or off (None: nothing is stale)."""
        self.cws_idle = seconds
        if seconds is None:
            self._stale_cutoff.clear()
        for conn in list(self.hub.connections.values()):
            if conn.kind != "cws":
                continue
            if seconds is None:
                conn.stale = False
            self._arm_idle(conn)

    def stale_connections(self) -> int:
        """How many ``/cws`` connections are stale now."""
        return sum(1 for c in self.hub.connections.values() if c.kind == "cws" and c.stale)

    def _arm_idle(self, conn: Connection) -> None:
        """(Re)start the timer that makes ``conn`` stale after ``cws_idle`` without commands."""
        timer, conn.idle_timer = conn.idle_timer, None
        if timer is not None:
            timer.cancel()
        idle = self.cws_idle
        if idle is None or conn.stale or conn.closing:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, conn.last_command + idle - loop.time())
        conn.idle_timer = loop.call_later(delay, self._go_stale, conn)

    def _go_stale(self, conn: Connection) -> None:
        conn.idle_timer = None
        if conn.closing or self.cws_idle is None:
            return
        # Every token issued so far predates the staleness: none of them clears it, here or
        # on the account's next connection (docs/protocol.md §9.6: only a freshly issued token
        # helps).
        cutoff = self.tokens.issued
        conn.stale = True
        conn.stale_serial = cutoff
        if conn.login is not None and cutoff > self._stale_cutoff.get(conn.login, 0):
            self._stale_cutoff[conn.login] = cutoff

    def _authorized(self, conn: Connection, claims: Claims) -> None:
        """``authorize`` accepted: an old token leaves (or makes) the connection stale, a
        token issued after the staleness clears it."""
        if self.cws_idle is None:
            return
        cutoff = self._stale_cutoff.get(claims.login, 0)
        if conn.stale:
            cutoff = max(cutoff, conn.stale_serial)
        if claims.serial <= cutoff:
            conn.stale = True
            conn.stale_serial = cutoff
            self._arm_idle(conn)  # stops the timer: it is stale already
        elif conn.stale:
            conn.stale = False
            conn.last_command = asyncio.get_running_loop().time()
            self._arm_idle(conn)

    def close_connection(self, conn: Connection, code: int, reason: str) -> None:
        """``Connection.on_close``: close the socket with ``code`` (1006 = no close frame)."""
        ws = self.sockets.get(conn.id)
        transport = self.transports.get(conn.id)
        if code == 1006 or ws is None:
            if transport is not None:
                transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._close_ws(ws, transport, code, reason))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _close_ws(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, code: int, reason: str
    ) -> None:
        try:
            # drain=False: a client that stopped reading must not hold the close up.
            async with asyncio.timeout(self.close_timeout + 1.0):
                await ws.close(code=code, message=reason.encode(), drain=False)
        except (TimeoutError, ConnectionError, RuntimeError):
            if transport is not None:
                transport.abort()

    # -- the market loop ----------------------------------------------------------------------

    async def _market_loop(self) -> None:
        market, engine, hub = self.market, self.engine, self.hub
        market_ms = int(time.time() * 1000)
        while True:
            started = time.monotonic()
            try:
                # Advance at most _MAX_STEP_MS of market time per turn, so that one turn's
                # fan-out stays small and the senders get the loop often. An overloaded
                # server thus slows its market down instead of queueing without bound.
                wall_ms = int(time.time() * 1000)
                market_ms = max(market_ms, min(wall_ms, market_ms + _MAX_STEP_MS))
                if wall_ms - market_ms > 5_000:
                    market_ms = wall_ms - 5_000  # never lag by more than 5 s
                events = market.step(market_ms)
                if events:
                    account_events = engine.on_market(events, market_ms)
                    hub.publish_market(events)
                    if account_events:
                        hub.publish_account(account_events)
                hub.flush_due()
            except Exception:  # never let one bad step kill the loop
                self.errors += 1
                log.exception("market step failed")
            behind = int(time.time() * 1000) - market_ms > _MAX_STEP_MS
            spent = time.monotonic() - started
            await asyncio.sleep(0 if behind else max(0.0, _TICK - spent))

    # -- app ----------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_REQUEST)
        r = app.router
        r.add_get("/ws", self._ws_handler)
        r.add_get("/cws", self._cws_handler)
        r.add_post("/refresh", self._refresh)
        r.add_get("/md/v2/time", self._time)
        r.add_get("/md/v2/Securities", self._securities_search)
        r.add_get("/md/v2/Securities/{tickers}/quotes", self._quotes)
        r.add_get("/md/v2/Securities/{exchange}", self._securities_exchange)
        r.add_get("/md/v2/Securities/{exchange}/{symbol}", self._security)
        r.add_get("/md/v2/Securities/{exchange}/{symbol}/availableBoards", self._boards)
        r.add_get("/md/v2/Securities/{exchange}/{symbol}/alltrades", self._all_trades)
        r.add_get("/md/v2/Securities/{exchange}/{symbol}/alltrades/history", self._trades_history)
        r.add_get("/md/v2/Securities/{exchange}/{symbol}/actualFuturesQuote", self._future_quote)
        r.add_get("/md/v2/orderbooks/{exchange}/{symbol}", self._orderbook)
        r.add_get("/md/v2/history", self._history)
        r.add_get("/md/v2/Clients/{exchange}/{portfolio}/{view}", self._client_view)
        r.add_get("/md/v2/Clients/{exchange}/{portfolio}/{view}/{order_id}", self._client_item)
        for stats in ("/md/stats", "/md/v2/Stats"):
            trades = stats + "/{exchange}/{portfolio}/history/trades"
            r.add_get(trades, self._trade_stats)
            r.add_get(trades + "/{symbol}", self._trade_stats)
        base = "/commandapi/warptrans/TRADE/v2/client/orders"
        r.add_post(base + "/actions/{kind}", self._http_create)
        r.add_put(base + "/actions/{kind}/{order_id}", self._http_update)
        r.add_delete(base + "/{order_id}", self._http_delete)
        if self.admin:
            r.add_post("/sim/drop", self._admin_drop)
            r.add_post("/sim/stall", self._admin_stall)
            r.add_post("/sim/refuse", self._admin_refuse)
            r.add_post("/sim/delay", self._admin_delay)
            r.add_post("/sim/expire-tokens", self._admin_expire)
            r.add_post("/sim/inject", self._admin_inject)
            r.add_post("/sim/restart", self._admin_restart)
            r.add_post("/sim/random-drops", self._admin_random_drops)
            r.add_post("/sim/idle-cws", self._admin_idle_cws)
            r.add_post("/sim/restart-window", self._admin_restart_window)
            r.add_post("/sim/daily-restart", self._admin_daily_restart)
            r.add_post("/sim/silence", self._admin_silence)
            r.add_post("/sim/unsilence", self._admin_unsilence)
            r.add_get("/sim/ground-truth", self._admin_ground_truth)
            r.add_get("/sim/stats", self._admin_stats)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path.startswith("/sim/"):
            if self.admin and self.admin_token is not None and not self._admin_allowed(request):
                return _json(
                    {
                        "code": 401,
                        "message": "Admin token required: send 'Authorization: Bearer <admin "
                        "token>' or 'X-Sim-Admin: <admin token>'",
                    },
                    401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return await self._guarded(request, handler)
        if self.refusing() or (self.in_window() and not self._window_admits()):
            return web.Response(status=503, text="Service restarting", headers={"Retry-After": "1"})
        if path not in ("/ws", "/cws"):
            # docs/protocol.md §12.10: 100 requests/s per account (anonymous callers share one
            # bucket per host).
            claims = self._bearer(request)
            key = claims.login if claims else f"anonymous:{request.remote}"
            now = time.monotonic()
            hits = self._http_hits.setdefault(key, deque())
            while hits and hits[0] <= now - 1.0:
                hits.popleft()
            if len(hits) >= self.http_rate:
                retry = max(1, int(hits[0] + 1.0 - now + 0.999))
                return web.Response(
                    status=429,
                    text="Превышен лимит одновременно выполняемых запросов",
                    headers={"Retry-After": str(retry)},
                )
            hits.append(now)
            if len(self._http_hits) > 10_000:  # forget callers idle for a second
                self._http_hits = {k: v for k, v in self._http_hits.items() if v}
        return await self._guarded(request, handler)

    async def _guarded(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except InvalidArgumentError as exc:  # bad input found by a shared check
            return _error(400, str(exc))
        except Exception:  # a bug must answer 500, not kill the connection handler
            self.errors += 1
            log.exception("handler failed for %s", request.path)
            return _error(500, "Internal simulator error")

    def _admin_allowed(self, request: web.Request) -> bool:
        assert self.admin_token is not None
        given = request.headers.get("X-Sim-Admin")
        if given is None:
            header = request.headers.get("Authorization", "")
            given = header[7:].strip() if header.startswith("Bearer ") else ""
        return hmac.compare_digest(given.encode(), self.admin_token.encode())

    def _failed(self, conn: Connection, frame: bytes | str, where: str) -> None:
        """A /ws or /cws frame made the simulator fail: count it, log it, answer 500."""
        self.errors += 1
        log.exception("handling a %s frame failed", where)
        try:
            guid = _ENV.decode(frame).guid
        except Exception:
            guid = None
        ok = type(guid) is str and len(guid) <= MAX_GUID_LEN
        conn.put(status_frame(guid if ok else "", 500, "Internal simulator error"))

    def _bearer(self, request: web.Request) -> Claims | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        return self.tokens.verify(header[7:].strip())

    # -- WebSocket endpoints ------------------------------------------------------------------

    async def _open(
        self, request: web.Request, kind: str
    ) -> tuple[web.WebSocketResponse, Connection]:
        claims = self._bearer(request)
        # docs/protocol.md §12.9: with a bearer header the account is known at the handshake: refuse
        # there.
        if claims is not None and not self.hub.can_attach(claims.login):
            raise web.HTTPTooManyRequests(text="Connection limit exceeded")
        ws = _SimWebSocket(
            max_msg_size=MAX_REQUEST, compress=False, autoping=True, timeout=self.close_timeout
        )
        await ws.prepare(request)
        conn = Connection(
            kind,
            _AiohttpWire(request, self.send_buffer),
            self.limits.max_unread,
            lambda code, reason: self.close_connection(conn, code, reason),
        )
        ws.conn = conn
        self.hub.add(conn)
        if claims is not None:
            self.hub.attach(conn, claims.login)
        self.sockets[conn.id] = ws
        assert request.transport is not None
        self.transports[conn.id] = request.transport
        conn.start()
        if self.in_window():  # let through (or opened as the window began): it will not last
            self._doom(conn)
        return ws, conn

    async def _finish(self, conn: Connection) -> None:
        conn.closing = True
        for timer in (conn.idle_timer, conn.doomed):
            if timer is not None:
                timer.cancel()
        conn.idle_timer = conn.doomed = None
        await conn.stop()
        self.hub.remove(conn)
        self.sockets.pop(conn.id, None)
        self.transports.pop(conn.id, None)

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws, conn = await self._open(request, "ws")
        hub = self.hub
        try:
            handled = 0
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                if conn.closing:
                    break
                if self.reply_delay > 0:
                    await asyncio.sleep(self.reply_delay)
                try:
                    pending = hub.handle_ws(conn, msg.data)
                    if pending is not None:
                        await pending  # history built in steps; this connection waits
                except Exception:
                    self._failed(conn, msg.data, "/ws")
                handled += 1
                if handled % 64 == 0:
                    await asyncio.sleep(0)  # a flood of requests must not starve the others
        finally:
            await self._finish(conn)
        return ws

    async def _cws_handler(self, request: web.Request) -> web.StreamResponse:
        ws, conn = await self._open(request, "cws")
        conn.last_command = asyncio.get_running_loop().time()
        self._arm_idle(conn)
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                if conn.closing:
                    break
                try:
                    reply = self._cws_command(conn, msg.data)
                except Exception:
                    self._failed(conn, msg.data, "/cws")
                    continue
                if reply is None:
                    continue
                if self.reply_delay > 0:
                    await asyncio.sleep(self.reply_delay)
                conn.put(reply)
        finally:
            await self._finish(conn)
        return ws

    def _cws_command(self, conn: Connection, frame: bytes | str) -> bytes | None:
        """One ``/cws`` frame -> its status reply (docs/protocol.md §6 and
        docs/protocol.md §12.11)."""
        self.hub.requests_handled += 1
        try:
            env = _ENV.decode(frame)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            return status_frame("", 400, f"Invalid JSON: {exc}")
        guid = env.guid if type(env.guid) is str else ""
        opcode = env.opcode.lower() if type(env.opcode) is str else ""
        if not guid:
            return status_frame("", 400, "Missing or invalid field 'guid'")
        if len(guid) > MAX_GUID_LEN:
            return status_frame("", 400, guid_error(guid))
        if opcode == "ping":
            return status_frame(guid, 200, "Handled successfully")
        if opcode == "authorize":
            claims = self.tokens.verify(env.token)
            if claims is None:  # docs/protocol.md §12.11: 401 and close 1008
                conn.put(status_frame(guid, 401, "Invalid JWT token!"))
                conn.close(1008, "Invalid JWT token!", discard=False)
                return None
            if conn.login is None and not self.hub.attach(conn, claims.login):
                conn.put(status_frame(guid, 429, "Connection limit exceeded"))
                conn.close(1008, "Connection limit exceeded", discard=False)
                return None
            conn.claims = claims
            self._authorized(conn, claims)
            return status_frame(guid, 200, "The connection has been initialized.")
        claims = conn.claims
        if claims is None:  # a command before authorize -> 401, the connection stays
            return status_frame(guid, 401, "Invalid JWT token! Send 'authorize' first")
        if conn.stale:  # not executed: the connection is reset, no reply (docs/protocol.md §9.6)
            self.stale_resets += 1
            conn.close(1006, "", discard=False)
            return None
        conn.last_command = asyncio.get_running_loop().time()
        if self.cws_idle is not None:
            self._arm_idle(conn)
        if claims.exp <= time.time():
            return status_frame(guid, 401, "Invalid JWT token! Authorize again")
        check = env.checkDuplicates is not False
        key = (claims.login, guid)
        now = time.monotonic()
        if check:
            seen = self._seen_cws.get(key)
            if seen is not None and now - seen[0] < DUPLICATE_WINDOW:
                return seen[1]  # replay the first reply, do not execute again
        try:
            command = decode_command(frame)
        except CommandFrameError as exc:
            return status_frame(guid, 400, exc.reason)
        reply = self._execute(claims, command, guid)
        if check:
            if len(self._seen_cws) > 100_000:
                self._seen_cws = {
                    k: v for k, v in self._seen_cws.items() if now - v[0] < DUPLICATE_WINDOW
                }
            self._seen_cws[key] = (now, reply)
        return reply

    def _execute(self, claims: Claims, command: Any, guid: str) -> bytes:
        portfolio = command.user.portfolio
        if portfolio not in claims.portfolios:
            return status_frame(guid, 403, f"Access to portfolio '{portfolio}' is denied")
        result = self.engine.execute(portfolio, command, int(time.time() * 1000))
        number = None if result.order_number is None else str(result.order_number)
        reply = status_frame(guid, result.http_code, result.message, number)
        try:
            self.hub.publish_account(result.events)
        except Exception:  # the command has run: its reply must still go out
            self.errors += 1
            log.exception("publishing the events of a command failed")
        return reply

    # -- oauth --------------------------------------------------------------------------------

    async def _refresh(self, request: web.Request) -> web.StreamResponse:
        """Refresh token (query or JSON body, body wins, key case-insensitive) -> JWT
        (docs/protocol.md §2.2)."""
        token: Any = request.query.get("token")
        allowed: Any = request.query.get("allowedPortfolios")
        body = await _read_json(request)
        if body is not None:
            lowered = {str(k).lower(): v for k, v in body.items()}
            token = lowered.get("token", token)
            allowed = lowered.get("allowedportfolios", allowed)
        if isinstance(allowed, str):
            try:
                allowed = json.loads(allowed)
            except (ValueError, RecursionError):
                allowed = [p for p in allowed.replace(",", " ").split() if p]
        if isinstance(allowed, list) and not all(type(p) is str for p in allowed):
            raise web.HTTPBadRequest(text="allowedPortfolios: must be a list of portfolio names")
        account = self.engine.account_for_token(token) if isinstance(token, str) else None
        if account is None:
            return web.Response(status=403, text="Invalid or expired refresh token")
        agreements = account.agreements
        agreement_ids = [str(a) for a in agreements] if isinstance(agreements, list | tuple) else []
        jwt = self.tokens.issue(
            account.login,
            account.portfolios,
            agreement_ids,
            allowed if isinstance(allowed, list) else None,
        )
        return _json({"AccessToken": jwt})

    # -- market data over HTTP (docs/protocol.md §8.3) ----------------------------------------

    def _format(self, request: web.Request) -> Format:
        try:
            return Format(request.query.get("format", "Simple"))
        except ValueError:
            raise web.HTTPBadRequest(text="format: use Simple, Slim or Heavy") from None

    def _auth(self, request: web.Request) -> Claims:
        claims = self._bearer(request)
        if claims is None:
            raise web.HTTPUnauthorized(text="Invalid JWT token!")
        return claims

    async def _time(self, request: web.Request) -> web.StreamResponse:
        now = int(time.time())
        # docs/protocol.md §8.3: anonymous callers see the time 15 minutes late.
        return _json(now if self._bearer(request) else now - 900)

    async def _securities_search(self, request: web.Request) -> web.StreamResponse:
        fmt = self._format(request)
        q = request.query
        sector = q.get("sector", "").upper()
        exchange = q.get("exchange", "").upper()
        board = q.get("instrumentGroup", "").upper()
        limit = _int_arg(request, "limit", 0)
        limit = 25 if limit is None else limit
        offset = _int_arg(request, "offset", 0) or 0
        found = [
            info
            for info in self.market.search(q.get("query", ""))  # sorted by turnover, as ALOR's
            if (not sector or info.market.upper() == sector)
            and (not exchange or info.exchange.upper() == exchange)
            and (not board or info.board.upper() == board)
        ]
        return _json(
            [
                self.market.security(i.symbol, fmt, complete=True)
                for i in found[offset : offset + limit]
            ]
        )

    async def _securities_exchange(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        fmt = self._format(request)
        exchange = request.match_info["exchange"].upper()
        market = request.query.get("market", "").upper()
        return _json(
            [
                self.market.security(info.symbol, fmt, complete=True)
                for info in self.market.instruments.values()
                if info.exchange.upper() == exchange and (not market or info.market == market)
            ]
        )

    def _find(self, request: web.Request) -> InstrumentInfo:
        info = self.market.find(
            request.match_info["symbol"],
            request.match_info["exchange"].upper(),
            request.query.get("instrumentGroup") or None,
        )
        if info is None:
            raise web.HTTPNotFound(text="Instrument not found")
        return info

    async def _security(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        symbol = self._find(request).symbol
        return _json(self.market.security(symbol, self._format(request), complete=True))

    async def _boards(self, request: web.Request) -> web.StreamResponse:
        info = self._find(request)
        return _json([info.board])

    async def _quotes(self, request: web.Request) -> web.StreamResponse:
        fmt = self._format(request)
        out = []
        for ticker in request.match_info["tickers"].split(","):
            exchange, _, symbol = ticker.strip().rpartition(":")
            info = self.market.find(symbol, (exchange or "MOEX").upper())
            if info is not None:
                await self._built(info.symbol, TIMEFRAMES["D"])  # a quote reads the day
                out.append(wire(self.market.quote(info.symbol), fmt))
        return _json(out)

    async def _built(self, symbol: str, tf: int | None) -> None:
        """Build the ``tf`` candles (None: the minute history) of ``symbol`` in bounded steps,
        yielding to the loop between them."""
        market = self.market
        step = market.build_history if tf is None else lambda s: market.build_series(s, tf)
        while not step(symbol):  # noqa: ASYNC110 - doing the work in steps, not waiting
            await asyncio.sleep(0)

    async def _orderbook(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        fmt = self._format(request)
        info = self._find(request)
        try:
            depth = int(request.query.get("depth", "20"))
        except ValueError:
            depth = 0
        if not 1 <= depth <= 50:
            return _error(400, "depth: must be 1..50")
        return _json(wire(self.market.order_book(info.symbol, depth), fmt))

    async def _history(self, request: web.Request) -> web.StreamResponse:
        """Candles in ``[from, to]`` with ``next``/``prev`` paging timestamps
        (docs/protocol.md §8.3).

        ``tf`` is 1..31536000 seconds or D/W/M/Y; ``from`` and ``to`` are Unix seconds within
        ``0..MAX_TIME_S``; ``countBack`` is >= 0. A timeframe asked for the first time is built
        in bounded steps, and a long page is encoded in chunks, so other clients are served
        meanwhile.
        """
        fmt = self._format(request)
        q = request.query
        missing = [k for k in ("symbol", "exchange", "tf", "from", "to") if k not in q]
        if missing:
            return _error(400, f"Missing parameter '{missing[0]}'")
        info = self.market.find(q["symbol"], q["exchange"].upper(), q.get("instrumentGroup"))
        if info is None:
            return _error(404, f"Unknown instrument '{q['exchange']}:{q['symbol']}'")
        text = q["tf"].strip().upper()
        try:
            tf = tf_seconds(text)
        except ValueError:
            raise _bad("tf", "must be seconds or D/W/M/Y", text) from None
        if not 0 < tf <= MAX_TF:
            raise _bad("tf", f"must be 1..{MAX_TF} seconds or D/W/M/Y", text)
        start, end = _time_arg(request, "from"), _time_arg(request, "to")
        if start is None or end is None:
            raise _bad("from" if start is None else "to", "required, Unix seconds", "")
        count_back = _int_arg(request, "countBack", 0) or 0
        symbol = info.symbol
        market = self.market
        if not market.timeframe_available(symbol, tf):
            raise _bad("tf", f"{market.max_timeframes} other timeframes are in use", text)
        await self._built(symbol, tf)
        bars = market.bars(symbol, tf, start, end)
        if count_back > 0 and len(bars) < count_back:
            # docs/protocol.md §8.3: move `from` back until the range holds countBack candles.
            bars = market.last_bars(symbol, tf, end, count_back)
        before, after = market.neighbours(
            symbol, tf, bars[0].time if bars else start, bars[-1].time if bars else end
        )
        # The nearest candles outside the page. Where there is none, the period just outside
        # the asked range: ALOR always sends numbers, and a client paging on stops there.
        nxt = after if after is not None else bucket_end(bucket_start(end, tf), tf)
        prev = before if before is not None else bucket_start(bucket_start(start, tf) - 1, tf)
        parts: list[bytes] = []
        for i in range(0, len(bars), _ENCODE_CHUNK):
            if i:
                await asyncio.sleep(0)
            parts.append(_ENC.encode([wire(b, fmt) for b in bars[i : i + _ENCODE_CHUNK]])[1:-1])
        key = b'"h"' if fmt is Format.SLIM else b'"history"'
        body = b"".join(
            (
                b"{",
                key,
                b":[",
                b",".join(parts),
                b'],"next":',
                _ENC.encode(nxt),
                b',"prev":',
                _ENC.encode(prev),
                b"}",
            )
        )
        return web.Response(body=body, content_type="application/json")

    # -- account views over HTTP (docs/protocol.md §8.4) --------------------------------------

    def _portfolio(self, request: web.Request) -> str:
        claims = self._auth(request)
        portfolio = request.match_info["portfolio"]
        if portfolio not in claims.portfolios:
            raise web.HTTPForbidden(text=f"Access to portfolio '{portfolio}' is denied")
        return portfolio

    async def _client_view(self, request: web.Request) -> web.StreamResponse:
        portfolio = self._portfolio(request)
        fmt = self._format(request)
        view = request.match_info["view"].lower()
        engine = self.engine
        single: Model | None
        if view == "summary":
            single = engine.summary(portfolio)
        elif view == "risk":
            single = engine.risk(portfolio)
        elif view == "fortsrisk":
            single = engine.spectra_risk(portfolio)
        else:
            items: list[Any]
            if view == "positions":
                items = list(engine.positions(portfolio))
                if request.query.get("withoutCurrency", "").lower() == "true":
                    items = [p for p in items if not p.is_currency]
            elif view == "orders":
                items = list(engine.orders(portfolio))
            elif view == "stoporders":
                items = list(engine.stop_orders(portfolio))
            elif view == "trades":
                return _json([self._own_trade(t, fmt) for t in engine.trades(portfolio)])
            else:
                return _error(404, f"Unknown view '{view}'")
            return _json([wire(i, fmt) for i in items])
        if single is None:
            return _error(404, f"No {view} for portfolio '{portfolio}'")
        return _json(wire(single, fmt))

    async def _client_item(self, request: web.Request) -> web.StreamResponse:
        portfolio = self._portfolio(request)
        fmt = self._format(request)
        view = request.match_info["view"]
        order_id = request.match_info["order_id"]
        if order_id.lower() == "trades":  # …/{portfolio}/{symbol}/trades: one instrument's
            symbol = view.casefold()
            trades = self.engine.trades(portfolio)
            return _json(
                [self._own_trade(t, fmt) for t in trades if (t.symbol or "").casefold() == symbol]
            )
        view = view.lower()
        if view == "positions":
            for position in self.engine.positions(portfolio):
                if position.symbol.casefold() == order_id.casefold():
                    return _json(wire(position, fmt))
            return _error(404, f"No position in '{order_id}'")
        items: list[Order] | list[StopOrder]
        if view == "orders":
            items = self.engine.orders(portfolio)
        elif view == "stoporders":
            items = self.engine.stop_orders(portfolio)
        else:
            return _error(404, f"Unknown view '{view}'")
        for item in items:
            if item.id == order_id:
                return _json(wire(item, fmt))
        return _error(404, f"Order '{order_id}' not found")

    def _own_trade(self, trade: OwnTrade, fmt: Format, *, names: bool = True) -> dict[str, Any]:
        """An own trade as the HTTP answers have it: Heavy adds ``shortName`` and ``currency``
        (``names``; not in the ``/md/stats`` history)."""
        out = wire(trade, fmt)
        if fmt is not Format.HEAVY or not names:
            return out
        info = self.market.instruments.get(trade.symbol or "")
        full: dict[str, Any] = {}
        for key, value in out.items():
            full[key] = value
            if key == "symbol":
                full["shortName"] = info.short_name if info else None
            elif key == "price":
                full["currency"] = info.currency if info else None
        return full

    async def _trade_stats(self, request: web.Request) -> web.StreamResponse:
        """Own trade history (docs/protocol.md §8.4); the simulator's history is the session.
        Filters: ``ticker`` (or the path's symbol), ``side``, ``from`` (trade id), ``dateFrom``;
        ``limit`` (1..1000) and ``descending`` page it."""
        portfolio = self._portfolio(request)
        fmt = self._format(request)
        symbol = request.match_info.get("symbol") or request.query.get("ticker") or ""
        side = _side_arg(request)
        from_id = _int_arg(request, "from", 0)
        limit = _int_arg(request, "limit", 1, 1000)
        descending = _bool_arg(request, "descending")
        since = request.query.get("dateFrom", "")
        try:  # a date (midnight UTC) or an ISO-8601 time
            day = parse_iso(since if "T" in since else since + "T00:00:00Z") if since else None
        except ValueError:
            raise _bad("dateFrom", "must be a date or an ISO-8601 UTC time", since) from None
        trades = [
            t
            for t in self.engine.trades(portfolio)
            if (not symbol or (t.symbol or "").casefold() == symbol.casefold())
            and (side is None or t.side is side)
            and (from_id is None or int(t.id) >= from_id)
            and (day is None or t.date is None or parse_iso(t.date) >= day)
        ]
        if descending:
            trades.reverse()
        if limit is not None:
            trades = trades[:limit]
        names = request.path.startswith("/md/v2/")  # the v2 history has the v2 trade shape
        return _json([self._own_trade(t, fmt, names=names) for t in trades])

    async def _all_trades(self, request: web.Request) -> web.StreamResponse:
        """The session's anonymous trades (the last 10000 printed), oldest first
        (docs/protocol.md §8.3).

        Filters: ``from``/``to`` (Unix s), ``fromId``/``toId``, ``qtyFrom``/``qtyTo`` (lots),
        ``priceFrom``/``priceTo``, ``side``; paged by ``offset``/``take``, ``descending``
        newest first. ``includeVirtualTrades`` changes nothing: there are no virtual trades.
        """
        self._auth(request)
        fmt = self._format(request)
        info = self._find(request)
        start, end = _time_arg(request, "from"), _time_arg(request, "to")
        from_id, to_id = _int_arg(request, "fromId", 0), _int_arg(request, "toId", 0)
        qty_from, qty_to = _int_arg(request, "qtyFrom", 0), _int_arg(request, "qtyTo", 0)
        price_from, price_to = _float_arg(request, "priceFrom"), _float_arg(request, "priceTo")
        side = _side_arg(request)
        offset = _int_arg(request, "offset", 0) or 0
        take = _int_arg(request, "take", 1)
        descending = _bool_arg(request, "descending")
        _bool_arg(request, "includeVirtualTrades")

        def wanted(t: Trade) -> bool:
            seconds = (t.timestamp or 0) // 1000
            return (
                (start is None or seconds >= start)
                and (end is None or seconds <= end)
                and (from_id is None or t.id >= from_id)
                and (to_id is None or t.id <= to_id)
                and (qty_from is None or t.qty >= qty_from)
                and (qty_to is None or t.qty <= qty_to)
                and (price_from is None or t.price >= price_from)
                and (price_to is None or t.price <= price_to)
                and (side is None or t.side is side)
            )

        found = [t for t in self.market.last_trades(info.symbol, 10_000) if wanted(t)]
        if descending:
            found.reverse()
        page = found[offset:] if take is None else found[offset : offset + take]
        return _json([wire(t, fmt) for t in page])

    async def _trades_history(self, request: web.Request) -> web.StreamResponse:
        """Anonymous trades of previous sessions, ``{"total": N, "list": [...]}``
        (docs/protocol.md §8.3); ``limit`` (1..50000) is required, ``offset`` pages, ``from``/``to``
        (Unix s) filter."""
        self._auth(request)
        fmt = self._format(request)
        info = self._find(request)
        limit = _int_arg(request, "limit", 1, 50_000)
        if limit is None:
            raise web.HTTPBadRequest(text="limit: required, 1..50000")
        offset = _int_arg(request, "offset", 0) or 0
        start, end = _time_arg(request, "from"), _time_arg(request, "to")
        await self._built(info.symbol, None)
        total, page = self.market.trades_history(info.symbol, start, end, offset, limit)
        return _json(wire(AllTradesPage(total=total, trades=page), fmt))

    async def _future_quote(self, request: web.Request) -> web.StreamResponse:
        """The quote of the nearest future of a base code (``Si`` -> ``SiZ6``;
        docs/protocol.md §8.3)."""
        self._auth(request)
        fmt = self._format(request)
        exchange = request.match_info["exchange"].upper()
        info = self.market.actual_future(request.match_info["symbol"], exchange)
        if info is None:
            raise web.HTTPNotFound(text="No active future with this base code")
        await self._built(info.symbol, TIMEFRAMES["D"])
        return _json(wire(self.market.quote(info.symbol), fmt))

    # -- commandapi over HTTP (docs/protocol.md §8.5) -----------------------------------------

    async def _http_command(
        self, request: web.Request, opcode: str, extra: dict[str, Any]
    ) -> web.StreamResponse:
        claims = self._auth(request)
        reqid = request.headers.get("X-REQID") or request.headers.get("X-ALOR-REQID")
        if not reqid:
            return _error(400, "Missing header 'X-REQID'")
        # The body first: no await may come between the duplicate check and the execution,
        # or two requests with one X-REQID could both run.
        body = await _read_json(request) or {}
        key = (claims.login, reqid)
        now = time.monotonic()
        seen = self._seen_http.get(key)
        if seen is not None and now - seen[0] < DUPLICATE_WINDOW:
            return _json(
                {
                    "message": "Request with such X-ALOR-REQID was already handled.",
                    "oldResponse": {"statusCode": seen[1], "body": seen[2]},
                },
                400,
            )
        self._http_serial += 1
        guid = f"http-{self._http_serial}"
        frame = _ENC.encode({**body, **extra, "opcode": opcode, "guid": guid})
        try:
            command = decode_command(frame)
        except CommandFrameError as exc:
            status, out = 400, {"message": exc.reason}
        else:
            reply = msgspec.json.decode(self._execute(claims, command, guid))
            status = reply["httpCode"]
            if status == 200:
                out = {"message": "success", "orderNumber": reply.get("orderNumber")}
            else:
                out = {"message": reply["message"]}
        if len(self._seen_http) > 100_000:
            self._seen_http = {
                k: v for k, v in self._seen_http.items() if now - v[0] < DUPLICATE_WINDOW
            }
        self._seen_http[key] = (now, status, out)
        return _json(out, status)

    def _next_serial(self) -> int:
        self._http_serial += 1
        return self._http_serial

    async def _http_create(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        return await self._http_command(request, f"create:{kind}", {})

    async def _http_update(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        return await self._http_command(
            request, f"update:{kind}", {"orderId": request.match_info["order_id"]}
        )

    async def _http_delete(self, request: web.Request) -> web.StreamResponse:
        claims = self._auth(request)
        q = request.query
        portfolio = q.get("portfolio", "")
        stop = q.get("stop", "false").lower() == "true"
        frame = _ENC.encode(
            {
                "opcode": "delete:stop" if stop else "delete:limit",
                "guid": f"http-del-{self._next_serial()}",
                "orderId": request.match_info["order_id"],
                "exchange": q.get("exchange", "MOEX"),
                "user": {"portfolio": portfolio},
                "checkDuplicates": False,
            }
        )
        try:
            command = decode_command(frame)
        except CommandFrameError as exc:
            return _error(400, exc.reason)
        reply = msgspec.json.decode(self._execute(claims, command, "http-delete"))
        if reply["httpCode"] != 200:
            return _json({"message": reply["message"]}, reply["httpCode"])
        return _json("success")

    # -- admin (only with admin=True) ----------------------------------------------------------

    # Faults checks every argument: a bad one raises InvalidArgumentError, which the
    # middleware answers with a 400 naming it; nothing changes.

    def _faults(self) -> Faults:
        assert self.faults is not None
        return self.faults

    async def _admin_drop(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request) or {}
        n = self._faults().drop(body.get("code", 1006), account=body.get("account"))
        return _json({"dropped": n})

    async def _admin_stall(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request) or {}
        n = self._faults().stall(body.get("seconds", 1.0), account=body.get("account"))
        return _json({"stalled": n})

    async def _admin_refuse(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request) or {}
        self._faults().refuse(body.get("seconds", 1.0))
        return _json({"ok": True})

    async def _admin_delay(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request) or {}
        self._faults().delay(body.get("seconds", 0.0))
        return _json({"ok": True})

    async def _admin_expire(self, request: web.Request) -> web.StreamResponse:
        self._faults().expire_tokens()
        return _json({"ok": True})

    async def _admin_inject(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request, _MAX_INJECT) or {}
        frame = body.get("frame")
        if not isinstance(frame, str):
            return _error(400, "frame: must be a string")
        n = self._faults().inject(frame, account=body.get("account"))
        return _json({"injected": n})

    async def _admin_restart(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request) or {}
        n = self._faults().restart(body.get("seconds", 2.0), code=body.get("code", 1006))
        return _json({"dropped": n})

    async def _admin_idle_cws(self, request: web.Request) -> web.StreamResponse:
        """``{"seconds": s}`` makes idle /cws connections stale after s; null turns it off."""
        body = await _read_json(request) or {}
        self._faults().idle_cws(body.get("seconds"))
        return _json({"ok": True})

    async def _admin_restart_window(self, request: web.Request) -> web.StreamResponse:
        """``{"seconds", "accept", "linger", "code"}``: a restart window from now."""
        body = await _read_json(request) or {}
        n = self._faults().restart_window(
            body.get("seconds", 2.0),
            accept=body.get("accept", 0.0),
            linger=body.get("linger", 1.0),
            code=body.get("code", 1006),
        )
        return _json({"dropped": n})

    async def _admin_daily_restart(self, request: web.Request) -> web.StreamResponse:
        """``{"start": "09:00", "end": "10:00", ...}`` (Moscow time); ``start`` null stops."""
        body = await _read_json(request) or {}
        faults = self._faults()
        if body.get("start") is None:
            faults.stop_daily_restart()
        else:
            faults.daily_restart(
                body["start"],
                body.get("end", ""),
                accept=body.get("accept", 0.0),
                linger=body.get("linger", 1.0),
                code=body.get("code", 1006),
            )
        return _json({"ok": True})

    async def _admin_silence(self, request: web.Request) -> web.StreamResponse:
        """``{"seconds", "guid", "opcode", "symbol", "account", "connection"}``."""
        body = await _read_json(request) or {}
        n = self._faults().silence(
            body.get("seconds"),
            guid=body.get("guid"),
            opcode=body.get("opcode"),
            symbol=body.get("symbol"),
            account=body.get("account"),
            connection=body.get("connection"),
        )
        return _json({"silenced": n})

    async def _admin_unsilence(self, request: web.Request) -> web.StreamResponse:
        return _json({"restored": self._faults().unsilence()})

    async def _admin_random_drops(self, request: web.Request) -> web.StreamResponse:
        """``{"every": s, "codes": [...], "account": login}`` starts; ``every`` null stops."""
        body = await _read_json(request) or {}
        every = body.get("every")
        faults = self._faults()
        if every is None:
            faults.stop_random_drops()
        else:
            codes = body.get("codes", [1000, 1006, 1011, 1012])
            faults.random_drops(every, codes=codes, account=body.get("account"))
        return _json({"ok": True})

    async def _admin_ground_truth(self, request: web.Request) -> web.StreamResponse:
        return _json(self.engine.ground_truth)

    async def _admin_stats(self, request: web.Request) -> web.StreamResponse:
        return _json(self.stats())

    def stats(self) -> dict[str, Any]:
        """Connections, subscriptions and counters (``GET /sim/stats``).

        ``errors`` counts failures inside the simulator (each also logged): a handler or a
        ``/ws``/``/cws`` frame answered 500, a failed market step, a failed round of a
        background fault. Bad input is answered with a 4xx and never counted. ``faults`` is the
        state of the background faults (:meth:`Faults.stats`).
        """
        out = self.hub.stats()
        out["errors"] = self.errors + self.hub.errors
        if self.faults is not None:
            out["faults"] = self.faults.stats()
        return out
