"""The simulator's aiohttp application: one port, like ALOR's one host (issue point 1).

Routes: ``/ws`` (subscriptions, §3-§5), ``/cws`` (order commands, §6), ``POST /refresh`` (the
oauth service, §2.2), the HTTP subset of §8 (``/md/v2/...``, the own trade history under
``/md/stats/...`` and ``/commandapi/...``) and, only when enabled, the admin endpoints
``/sim/*`` that inject faults.

Connection limit (§12.9). ALOR's ``/ws`` handshake carries no credentials: the token travels
inside each request (§2.5). The simulator therefore attributes a connection to an account

* at the handshake, when it carries ``Authorization: Bearer <jwt>`` (not ALOR's protocol, but
  harmless; clients that send it get the 11th connection refused with HTTP 429 right there);
* otherwise at its first authenticated message: the first ``/ws`` request with a valid token,
  or the ``authorize`` of a ``/cws`` connection. If the account already has ``max_connections``
  open connections, that message gets status 429 and the connection is closed with 1008.

Flow control (§7, §12.9). Each connection has its own queue and sender task (see
``subscriptions.py``). The transport's write buffer is capped (64 KiB) and, when
``send_buffer`` is set, so is the kernel send buffer (``SO_SNDBUF``); frames a client does not
read then stay in the queue, where they are counted: more than ``max_unread`` closes the
connection with 1008. The kernel default (autotuned, up to megabytes on loopback) is kept unless
``send_buffer`` is given: tests set a small one so a client that stops reading overflows fast;
a small kernel buffer also caps how much one connection can take per event-loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import WSMsgType, web

from ..protocol._model import Model
from ..protocol.account import Order, OwnTrade, StopOrder
from ..protocol.commands import CommandFrameError, decode_command
from ..protocol.enums import Format, Side
from ..protocol.http_models import AllTradesPage
from ..protocol.market import Trade
from ..protocol.timeutil import parse_iso
from .auth import Claims, TokenService
from .market import bucket_end, bucket_start
from .subscriptions import Connection, Hub, Limits, status_frame, tf_seconds
from .wire import wire


if TYPE_CHECKING:
    from .engine import TradingEngine
    from .faults import Faults
    from .market import InstrumentInfo, SyntheticMarket


__all__ = ["SimServer"]

log = logging.getLogger("alorws.sim")

MAX_FRAME: Final = 1 << 20  # frames above 1 MiB are refused with close 1009
DUPLICATE_WINDOW: Final = 3600.0  # §12.11: a /cws guid is remembered for 1 hour
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
        return float(text)
    except ValueError:
        raise _bad(name, "must be a number", text) from None


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
        limits: connection, subscription and unread limits (§12.9).
        rate: unused here (the market generates its own events); kept for stats.
        http_rate: HTTP requests per second per account (§12.10).
        admin: serve ``/sim/*``.
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
        send_buffer: int | None = None,
        close_timeout: float = 2.0,
    ) -> None:
        self.market = market
        self.engine = engine
        self.tokens = tokens
        self.limits = limits
        self.hub = Hub(market, engine, tokens, limits)
        self.http_rate = http_rate
        self.admin = admin
        self.send_buffer = send_buffer
        self.close_timeout = close_timeout
        self.refuse_until = 0.0  # loop time; new connections and HTTP get 503 before it
        self.reply_delay = 0.0  # seconds added before each reply (fault)
        self.faults: Faults | None = None
        self.sockets: dict[int, web.WebSocketResponse] = {}
        self.transports: dict[int, asyncio.Transport] = {}
        self._closers: set[asyncio.Task[Any]] = set()
        self._seen_cws: dict[tuple[str, str], tuple[float, bytes]] = {}
        self._seen_http: dict[tuple[str, str], tuple[float, int, dict[str, Any]]] = {}
        self._http_hits: dict[str, deque[float]] = {}
        self._http_serial = 0
        self._market_task: asyncio.Task[None] | None = None
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
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_FRAME)
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
            r.add_get("/sim/ground-truth", self._admin_ground_truth)
            r.add_get("/sim/stats", self._admin_stats)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path.startswith("/sim/"):
            return await handler(request)
        if self.refusing():
            return web.Response(status=503, text="Service restarting", headers={"Retry-After": "1"})
        if path not in ("/ws", "/cws"):
            # §12.10: 100 requests/s per account (anonymous callers share one bucket per host).
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
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:  # a bug must answer 500, not kill the connection handler
            self.errors += 1
            log.exception("handler failed for %s", path)
            return _error(500, "Internal simulator error")

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
        # §12.9: with a bearer header the account is known at the handshake: refuse there.
        if claims is not None and not self.hub.can_attach(claims.login):
            raise web.HTTPTooManyRequests(text="Connection limit exceeded")
        ws = web.WebSocketResponse(
            max_msg_size=MAX_FRAME, compress=False, autoping=True, timeout=self.close_timeout
        )
        await ws.prepare(request)
        conn = Connection(
            kind,
            _AiohttpWire(request, self.send_buffer),
            self.limits.max_unread,
            lambda code, reason: self.close_connection(conn, code, reason),
        )
        self.hub.add(conn)
        if claims is not None:
            self.hub.attach(conn, claims.login)
        self.sockets[conn.id] = ws
        assert request.transport is not None
        self.transports[conn.id] = request.transport
        conn.start()
        return ws, conn

    async def _finish(self, conn: Connection) -> None:
        conn.closing = True
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
                hub.handle_ws(conn, msg.data)
                handled += 1
                if handled % 64 == 0:
                    await asyncio.sleep(0)  # a flood of requests must not starve the others
        finally:
            await self._finish(conn)
        return ws

    async def _cws_handler(self, request: web.Request) -> web.StreamResponse:
        ws, conn = await self._open(request, "cws")
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                if conn.closing:
                    break
                reply = self._cws_command(conn, msg.data)
                if reply is None:
                    continue
                if self.reply_delay > 0:
                    await asyncio.sleep(self.reply_delay)
                conn.put(reply)
        finally:
            await self._finish(conn)
        return ws

    def _cws_command(self, conn: Connection, frame: bytes | str) -> bytes | None:
        """One ``/cws`` frame -> its status reply (§5, §6, §12.11)."""
        self.hub.requests_handled += 1
        try:
            env = _ENV.decode(frame)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            return status_frame("", 400, f"Invalid JSON: {exc}")
        guid = env.guid if type(env.guid) is str else ""
        opcode = env.opcode.lower() if type(env.opcode) is str else ""
        if not guid:
            return status_frame("", 400, "Missing or invalid field 'guid'")
        if opcode == "ping":
            return status_frame(guid, 200, "Handled successfully")
        if opcode == "authorize":
            claims = self.tokens.verify(env.token)
            if claims is None:  # §12.11: 401 and close 1008
                conn.put(status_frame(guid, 401, "Invalid JWT token!"))
                conn.close(1008, "Invalid JWT token!", discard=False)
                return None
            if conn.login is None and not self.hub.attach(conn, claims.login):
                conn.put(status_frame(guid, 429, "Connection limit exceeded"))
                conn.close(1008, "Connection limit exceeded", discard=False)
                return None
            conn.claims = claims
            return status_frame(guid, 200, "The connection has been initialized.")
        claims = conn.claims
        if claims is None:  # §12.11: a command before authorize -> 401, the connection stays
            return status_frame(guid, 401, "Invalid JWT token! Send 'authorize' first")
        if claims.exp <= time.time():
            return status_frame(guid, 401, "Invalid JWT token! Authorize again")
        check = env.checkDuplicates is not False
        key = (claims.login, guid)
        now = time.monotonic()
        if check:
            seen = self._seen_cws.get(key)
            if seen is not None and now - seen[0] < DUPLICATE_WINDOW:
                return seen[1]  # §12.11: replay the first reply, do not execute again
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
        self.hub.publish_account(result.events)
        number = None if result.order_number is None else str(result.order_number)
        return status_frame(guid, result.http_code, result.message, number)

    # -- oauth --------------------------------------------------------------------------------

    async def _refresh(self, request: web.Request) -> web.StreamResponse:
        """§2.2: refresh token (query or JSON body, body wins, key case-insensitive) -> JWT."""
        token: Any = request.query.get("token")
        allowed: Any = request.query.get("allowedPortfolios")
        if request.can_read_body:
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                body = None
            if isinstance(body, dict):
                lowered = {str(k).lower(): v for k, v in body.items()}
                token = lowered.get("token", token)
                allowed = lowered.get("allowedportfolios", allowed)
        if isinstance(allowed, str):
            try:
                allowed = json.loads(allowed)
            except ValueError:
                allowed = [p for p in allowed.replace(",", " ").split() if p]
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

    # -- market data over HTTP (§8) -----------------------------------------------------------

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
        # §8: anonymous callers see the time 15 minutes late.
        return _json(now if self._bearer(request) else now - 900)

    async def _securities_search(self, request: web.Request) -> web.StreamResponse:
        fmt = self._format(request)
        q = request.query
        sector = q.get("sector", "").upper()
        exchange = q.get("exchange", "").upper()
        board = q.get("instrumentGroup", "").upper()
        try:
            limit = int(q.get("limit", "25"))
            offset = int(q.get("offset", "0"))
        except ValueError:
            return _error(400, "limit/offset must be integers")
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
                out.append(wire(self.market.quote(info.symbol), fmt))
        return _json(out)

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
        """§8: candles in ``[from, to]`` with ``next``/``prev`` paging timestamps."""
        fmt = self._format(request)
        q = request.query
        missing = [k for k in ("symbol", "exchange", "tf", "from", "to") if k not in q]
        if missing:
            return _error(400, f"Missing parameter '{missing[0]}'")
        info = self.market.find(q["symbol"], q["exchange"].upper(), q.get("instrumentGroup"))
        if info is None:
            return _error(404, f"Unknown instrument '{q['exchange']}:{q['symbol']}'")
        try:
            tf = tf_seconds(q["tf"].upper())
            start, end = int(q["from"]), int(q["to"])
            count_back = int(q.get("countBack", "0"))
        except ValueError:
            return _error(400, "tf, from, to and countBack must be numbers (tf may be D/W/M/Y)")
        if tf <= 0:
            return _error(400, "tf: must be positive")
        symbol = info.symbol
        bars = self.market.bars(symbol, tf, start, end)
        if count_back > 0 and len(bars) < count_back:
            # §8: move `from` back until the range holds countBack candles (bounded search).
            span = max(end - start, tf)
            for _ in range(8):
                span *= 4
                bars = self.market.bars(symbol, tf, end - span, end)
                if len(bars) >= count_back:
                    break
            bars = bars[-count_back:]
        first = bars[0].time if bars else start
        last = bars[-1].time if bars else end
        before = self.market.bars(symbol, tf, first - 1000 * tf, first - 1)
        after = [
            b for b in self.market.bars(symbol, tf, last + tf, last + 1000 * tf) if b.time > last
        ]
        # The nearest candles outside the page. Where there is none, the period just outside
        # the asked range: ALOR always sends numbers, and a client paging on stops there.
        nxt = after[0].time if after else bucket_end(bucket_start(end, tf), tf)
        prev = before[-1].time if before else bucket_start(bucket_start(start, tf) - 1, tf)
        key = "h" if fmt is Format.SLIM else "history"
        return _json({key: [wire(b, fmt) for b in bars], "next": nxt, "prev": prev})

    # -- account views over HTTP (§8) ---------------------------------------------------------

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
        """§8: own trade history; the simulator's history is the session. Filters: ``ticker``
        (or the path's symbol), ``side``, ``from`` (trade id), ``dateFrom``; ``limit``
        (1..1000) and ``descending`` page it."""
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
        """§8: the session's anonymous trades (the last 10000 printed), oldest first.

        Filters: ``from``/``to`` (Unix s), ``fromId``/``toId``, ``qtyFrom``/``qtyTo`` (lots),
        ``priceFrom``/``priceTo``, ``side``; paged by ``offset``/``take``, ``descending``
        newest first. ``includeVirtualTrades`` changes nothing: there are no virtual trades.
        """
        self._auth(request)
        fmt = self._format(request)
        info = self._find(request)
        start, end = _int_arg(request, "from", 0), _int_arg(request, "to", 0)
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
        """§8: anonymous trades of previous sessions, ``{"total": N, "list": [...]}``; ``limit``
        (1..50000) is required, ``offset`` pages, ``from``/``to`` (Unix s) filter."""
        self._auth(request)
        fmt = self._format(request)
        info = self._find(request)
        limit = _int_arg(request, "limit", 1, 50_000)
        if limit is None:
            raise web.HTTPBadRequest(text="limit: required, 1..50000")
        offset = _int_arg(request, "offset", 0) or 0
        start, end = _int_arg(request, "from", 0), _int_arg(request, "to", 0)
        total, page = self.market.trades_history(info.symbol, start, end, offset, limit)
        return _json(wire(AllTradesPage(total=total, trades=page), fmt))

    async def _future_quote(self, request: web.Request) -> web.StreamResponse:
        """§8: the quote of the nearest future of a base code (``Si`` -> ``SiZ6``)."""
        self._auth(request)
        fmt = self._format(request)
        exchange = request.match_info["exchange"].upper()
        info = self.market.actual_future(request.match_info["symbol"], exchange)
        if info is None:
            raise web.HTTPNotFound(text="No active future with this base code")
        return _json(wire(self.market.quote(info.symbol), fmt))

    # -- commandapi over HTTP (§8) ------------------------------------------------------------

    async def _http_command(
        self, request: web.Request, opcode: str, extra: dict[str, Any]
    ) -> web.StreamResponse:
        claims = self._auth(request)
        reqid = request.headers.get("X-REQID") or request.headers.get("X-ALOR-REQID")
        if not reqid:
            return _error(400, "Missing header 'X-REQID'")
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
        body: Any = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                return _error(400, "Body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "Body must be a JSON object")
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
                "guid": f"http-del-{request.match_info['order_id']}"[:50],
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

    # -- admin (issue point 7, only with admin=True) ------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="Body is not valid JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="Body must be a JSON object")
        return body

    def _faults(self) -> Faults:
        assert self.faults is not None
        return self.faults

    async def _admin_drop(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        n = self._faults().drop(int(body.get("code", 1006)), account=body.get("account"))
        return _json({"dropped": n})

    async def _admin_stall(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        n = self._faults().stall(float(body.get("seconds", 1.0)), account=body.get("account"))
        return _json({"stalled": n})

    async def _admin_refuse(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        self._faults().refuse(float(body.get("seconds", 1.0)))
        return _json({"ok": True})

    async def _admin_delay(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        self._faults().delay(float(body.get("seconds", 0.0)))
        return _json({"ok": True})

    async def _admin_expire(self, request: web.Request) -> web.StreamResponse:
        self._faults().expire_tokens()
        return _json({"ok": True})

    async def _admin_inject(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        frame = body.get("frame")
        if not isinstance(frame, str):
            return _error(400, "frame: must be a string")
        n = self._faults().inject(frame, account=body.get("account"))
        return _json({"injected": n})

    async def _admin_restart(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        n = self._faults().restart(
            float(body.get("seconds", 2.0)), code=int(body.get("code", 1006))
        )
        return _json({"dropped": n})

    async def _admin_random_drops(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        every = body.get("every")
        faults = self._faults()
        if every is None:
            faults.stop_random_drops()
        else:
            codes = body.get("codes", [1000, 1006, 1011, 1012])
            faults.random_drops(float(every), codes=[int(c) for c in codes])
        return _json({"ok": True})

    async def _admin_ground_truth(self, request: web.Request) -> web.StreamResponse:
        return _json(self.engine.ground_truth)

    async def _admin_stats(self, request: web.Request) -> web.StreamResponse:
        return _json(self.stats())

    def stats(self) -> dict[str, Any]:
        """Connections, subscriptions and counters (``GET /sim/stats``)."""
        out = self.hub.stats()
        out["errors"] = self.errors
        return out
