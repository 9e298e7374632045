"""The simulator's network side: one aiohttp app on one port, like ALOR's one host
(docs/protocol.md §12.18).

:class:`SimServer` is the WebSocket shell: ``/ws`` (subscriptions, docs/protocol.md §3-5) and
``/cws`` (order commands, docs/protocol.md §6), the life of each connection, and the market loop
that feeds the subscriptions. It assembles the app around them: the HTTP API and ``POST
/refresh`` (:class:`~alorws.sim.http.HttpApi`) and, only when enabled, the admin endpoints
``/sim/*`` (:class:`~alorws.sim.faults.AdminApi`). One middleware in front of every route
answers the faults' 503, the HTTP rate's 429 and failures inside the simulator (500).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WSMsgType, web

from ..errors import InvalidArgumentError
from ..protocol.commands import Command, CommandFrameError, decode_command
from .auth import Claims, TokenService
from .connection import Connection
from .faults import AdminApi, Faults
from .http import HttpApi
from .schedule import SessionGate
from .subscriptions import Hub, Limits, read_envelope, status_frame
from .web import MAX_REQUEST, RecentReplies, bearer, build_in_steps, error_response


if TYPE_CHECKING:
    from .engine import TradingEngine
    from .market import SyntheticMarket


__all__ = ["MAX_REQUEST", "SimServer"]

log = logging.getLogger("alorws.sim")

_TICK: Final = 0.005  # market loop period; below the smallest frequency (Slim, 10 ms)
_MAX_STEP_MS: Final = 20  # market time advanced per turn at most: bounds the work per turn
_HIGH_WATER: Final = 64 * 1024  # transport write buffer per connection, bytes


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
    """:class:`~alorws.sim.connection.Wire` over an aiohttp request's transport."""

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


class SimServer:
    """The running simulator's network side: the WebSocket shell and the app around it.

    Connection limit (docs/protocol.md §12.9). ALOR's ``/ws`` handshake carries no credentials:
    the token travels inside each request (docs/protocol.md §2.5). A connection is therefore
    attributed to an account at the handshake when it carries ``Authorization: Bearer <jwt>``
    (not ALOR's protocol, but harmless: the 11th connection is refused with HTTP 429 right
    there), otherwise at its first authenticated message: the first ``/ws`` request with a valid
    token, or the ``authorize`` of a ``/cws`` connection. If the account already has
    ``max_connections`` open connections, that message gets status 429 and the connection is
    closed with 1008.

    Flow control (docs/protocol.md §12.9). Each connection has its own queue and sender task
    (:class:`~alorws.sim.connection.Connection`). The transport's write buffer is capped (64 KiB)
    and, when ``send_buffer`` is set, so is the kernel send buffer (``SO_SNDBUF``); frames a
    client does not read then stay in the queue, where they count against ``max_unread``. The
    kernel default (autotuned, up to megabytes on loopback) is kept unless ``send_buffer`` is
    given: tests set a small one so a client that stops reading overflows fast; a small kernel
    buffer also caps how much one connection can take per event-loop turn.

    Bad input (docs/protocol.md §12.2). Every request is answered: a bad one with a 4xx and a
    message naming what is wrong, whatever the endpoint. Frames over ``MAX_REQUEST`` (64 KiB)
    close the WebSocket with 1009; bodies over it get 413. A failure inside the simulator (a bug,
    not bad input) answers 500 in place of that one request or frame, is logged and counted in
    ``stats()["errors"]``; the connection it happened on carries on. Replies to ``/cws``
    commands go out before any close frame that follows them, so an executed command never
    loses its reply to a later close.

    Args:
        market, engine: the synthetic market and trading engine (pure, stepped from here).
        tokens: issues and checks JWTs.
        limits: connection, subscription and unread limits (docs/protocol.md §12.9).
        seed: seeds the random faults (:attr:`faults`).
        http_rate: HTTP requests per second per account (docs/protocol.md §12.10).
        admin: serve ``/sim/*``.
        admin_token: when set, every ``/sim/*`` request must carry it (``Authorization:
            Bearer <admin token>`` or ``X-Sim-Admin``); 401 otherwise.
        send_buffer: kernel send buffer (SO_SNDBUF) per connection, bytes; None = the OS's.
        close_timeout: how long a server-initiated close waits for the client's close frame.
        clock: the clock (seconds) every deadline, interval and rate of the server is on.
    """

    def __init__(
        self,
        market: SyntheticMarket,
        engine: TradingEngine,
        tokens: TokenService,
        limits: Limits,
        *,
        seed: int | None = None,
        http_rate: int = 100,
        admin: bool = False,
        admin_token: str | None = None,
        send_buffer: int | None = None,
        close_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if admin_token is not None and (type(admin_token) is not str or not admin_token):
            raise InvalidArgumentError("admin_token", "must be a non-empty str or None")
        self.market = market
        self.engine = engine
        self.tokens = tokens
        self.limits = limits
        self.clock = clock
        self.send_buffer = send_buffer
        self.close_timeout = close_timeout
        self.hub: Hub[Connection] = Hub(market, engine, tokens, limits, clock=clock, wall=time.time)
        self.faults = Faults(self.hub, tokens, seed=seed, clock=clock, arm_idle=self._arm_idle)
        self.http = HttpApi(market, engine, tokens, self._execute, http_rate=http_rate, clock=clock)
        self.admin: AdminApi | None = None
        if admin:
            self.admin = AdminApi(
                self.faults,
                token=admin_token,
                ground_truth=lambda: engine.ground_truth,
                stats=self.stats,
            )
        self.sockets: dict[int, web.WebSocketResponse] = {}
        self.transports: dict[int, asyncio.Transport] = {}
        self._closers: set[asyncio.Task[Any]] = set()
        self._seen_cws: RecentReplies[bytes] = RecentReplies(clock)
        self._market_task: asyncio.Task[None] | None = None
        #: Refuses orders while their market is closed (``Simulator(schedule=...)``); None: never.
        self.session_gate: SessionGate | None = None
        # Failures inside the simulator (bugs, never bad input): a handler, a /ws or /cws
        # message, the market loop. Each is logged.
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

    def stats(self) -> dict[str, Any]:
        """Connections, subscriptions and counters (``GET /sim/stats``).

        ``errors`` counts failures inside the simulator (each also logged): a handler or a
        ``/ws``/``/cws`` frame answered 500, a failed market step, a failed round of a
        background fault. Bad input is answered with a 4xx and never counted. ``faults`` is the
        state of the faults (:meth:`Faults.stats`). ``http_requests`` counts the HTTP requests
        received by route (:attr:`HttpApi.requests`).
        """
        out = self.hub.stats()
        out["http_requests"] = dict(self.http.requests)
        out["errors"] = self.errors + self.hub.errors + self.faults.errors
        out["faults"] = self.faults.stats()
        return out

    # -- the market loop ----------------------------------------------------------------------

    async def _market_loop(self) -> None:
        market, engine, hub, clock = self.market, self.engine, self.hub, self.clock
        market_ms = int(time.time() * 1000)
        while True:
            started = clock()
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
            spent = clock() - started
            await asyncio.sleep(0 if behind else max(0.0, _TICK - spent))

    # -- the app ------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_REQUEST)
        app.router.add_get("/ws", self._ws_handler)
        app.router.add_get("/cws", self._cws_handler)
        self.http.add_routes(app.router)
        if self.admin is not None:
            self.admin.add_routes(app.router)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path.startswith("/sim/"):
            refused = None if self.admin is None else self.admin.refusal(request)
            if refused is not None:
                return refused
            return await self._guarded(request, handler)
        if self.faults.turn_away():
            return web.Response(status=503, text="Service restarting", headers={"Retry-After": "1"})
        if path not in ("/ws", "/cws"):
            refused = self.http.throttle(request)
            if refused is not None:
                return refused
        return await self._guarded(request, handler)

    async def _guarded(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except InvalidArgumentError as exc:  # bad input found by a shared check
            return error_response(400, str(exc))
        except Exception:  # a bug must answer 500, not kill the connection handler
            self.errors += 1
            log.exception("handler failed for %s", request.path)
            return error_response(500, "Internal simulator error")

    # -- connections --------------------------------------------------------------------------

    async def _open(
        self, request: web.Request, kind: str
    ) -> tuple[web.WebSocketResponse, Connection]:
        claims = bearer(self.tokens, request)
        # docs/protocol.md §12.9: with a bearer header the account is known at the handshake:
        # refuse there.
        if claims is not None and not self.hub.can_attach(claims.login):
            raise web.HTTPTooManyRequests(text="Connection limit exceeded")
        ws = _SimWebSocket(
            max_msg_size=MAX_REQUEST, compress=False, autoping=True, timeout=self.close_timeout
        )
        await ws.prepare(request)
        conn = Connection(
            kind,
            _AiohttpWire(request, self.send_buffer),
            self.hub,
            self.clock,
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
        window, now = self.faults.window, self.clock()
        if window.active(now):  # let through (or opened as the window began): it will not last
            loop = asyncio.get_running_loop()
            conn.doomed = loop.call_later(window.doom_delay(now), window.drop, conn)
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

    def _failed(self, conn: Connection, frame: bytes | str, where: str) -> None:
        """A /ws or /cws frame made the simulator fail: count it, log it, answer 500."""
        self.errors += 1
        log.exception("handling a %s frame failed", where)
        try:
            read = read_envelope(frame)
        except Exception:  # what failed once may fail again: the 500 must still go out
            read = b""
        guid = "" if isinstance(read, bytes) else read[1]
        conn.put(status_frame(guid, 500, "Internal simulator error"))

    # -- /ws ----------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws, conn = await self._open(request, "ws")
        hub, faults = self.hub, self.faults
        try:
            handled = 0
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                if conn.closing:
                    break
                if faults.reply_delay > 0:
                    await asyncio.sleep(faults.reply_delay)
                try:
                    wait = hub.handle_ws(conn, msg.data)
                    # History to build first: this connection waits meanwhile, others not.
                    if wait is not None and await build_in_steps(
                        self.market, wait.symbol, wait.tf, lambda: conn.closing
                    ):
                        wait.finish()
                except Exception:
                    self._failed(conn, msg.data, "/ws")
                handled += 1
                if handled % 64 == 0:
                    await asyncio.sleep(0)  # a flood of requests must not starve the others
        finally:
            await self._finish(conn)
        return ws

    # -- /cws ---------------------------------------------------------------------------------

    async def _cws_handler(self, request: web.Request) -> web.StreamResponse:
        ws, conn = await self._open(request, "cws")
        faults = self.faults
        conn.last_command = self.clock()
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
                if faults.reply_delay > 0:
                    await asyncio.sleep(faults.reply_delay)
                conn.put(reply)
        finally:
            await self._finish(conn)
        return ws

    def _cws_command(self, conn: Connection, frame: bytes | str) -> bytes | None:
        """One ``/cws`` frame -> its status reply (docs/protocol.md §6 and
        docs/protocol.md §12.11)."""
        self.hub.requests_handled += 1
        read = read_envelope(frame)
        if isinstance(read, bytes):
            return read
        env, guid = read
        opcode = env.opcode.lower() if type(env.opcode) is str else ""
        if opcode == "ping":
            return status_frame(guid, 200, "Handled successfully")
        idle = self.faults.idle
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
            if idle.authorized(conn, claims, self.clock()):
                self._arm_idle(conn)
            return status_frame(guid, 200, "The connection has been initialized.")
        claims = conn.claims
        if claims is None:  # a command before authorize -> 401, the connection stays
            return status_frame(guid, 401, "Invalid JWT token! Send 'authorize' first")
        if conn.stale:  # not executed: the connection is reset, no reply (docs/protocol.md §9.6)
            idle.cut(conn)
            return None
        conn.last_command = self.clock()
        if idle.seconds is not None:
            self._arm_idle(conn)
        if claims.exp <= time.time():
            return status_frame(guid, 401, "Invalid JWT token! Authorize again")
        check = env.checkDuplicates is not False
        if check:
            seen = self._seen_cws.get(claims.login, guid)
            if seen is not None:
                return seen  # replay the first reply, do not execute again
        try:
            command = decode_command(frame)
        except CommandFrameError as exc:
            return status_frame(guid, 400, exc.reason)
        reply = self._execute(claims, command, guid)
        if check:
            self._seen_cws.put(claims.login, guid, reply)
        return reply

    def _execute(self, claims: Claims, command: Command, guid: str) -> bytes:
        """Run an order command (``/cws`` or HTTP) and publish its events; its status reply."""
        portfolio = command.user.portfolio
        if portfolio not in claims.portfolios:
            return status_frame(guid, 403, f"Access to portfolio '{portfolio}' is denied")
        gate = self.session_gate
        if gate is not None and (closed := gate.refusal(command)) is not None:
            return status_frame(guid, 400, closed)
        result = self.engine.execute(portfolio, command, int(time.time() * 1000))
        number = None if result.order_number is None else str(result.order_number)
        reply = status_frame(guid, result.http_code, result.message, number)
        try:
            self.hub.publish_account(result.events)
        except Exception:  # the command has run: its reply must still go out
            self.errors += 1
            log.exception("publishing the events of a command failed")
        return reply

    # -- the idle /cws fault's timers ---------------------------------------------------------

    def _arm_idle(self, conn: Connection) -> None:
        """(Re)start the timer that makes ``conn`` stale after the idle time without commands
        (see :class:`~alorws.sim.faults.IdleCws`)."""
        timer, conn.idle_timer = conn.idle_timer, None
        if timer is not None:
            timer.cancel()
        idle = self.faults.idle.seconds
        if idle is None or conn.stale or conn.closing:
            return
        delay = max(0.0, conn.last_command + idle - self.clock())
        conn.idle_timer = asyncio.get_running_loop().call_later(delay, self._go_stale, conn)

    def _go_stale(self, conn: Connection) -> None:
        conn.idle_timer = None
        self.faults.idle.go_stale(conn, self.tokens.issued)
