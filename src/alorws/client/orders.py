"""Orders over ``/cws``: one connection, typed commands, exactly once across reconnects.

:class:`OrderClient` owns the account's single command connection (docs/protocol.md §6.1). It opens
lazily on the first command, sends ``authorize`` with the current JWT and waits for its 200 before
any order goes out, and sends ``authorize`` again on the open connection whenever the token manager
produces a new token (the UI's rule, docs/protocol.md §2.6), which the manager does ahead of
``exp``: expiry is invisible to callers.

**Exactly once.** Every command carries a guid and ``checkDuplicates: true``; the server does not
execute a guid twice (docs/protocol.md §6.1 and docs/protocol.md §12.11). A command is kept until
its reply arrives. When the connection drops first, the client reconnects (jittered backoff),
re-authorizes and re-sends the *same frame*, so the server executes the order once and replays the
first reply to the re-send, and the caller still gets its :class:`OrderAck`. Commands issued while
the connection is down are queued and go out after the next successful ``authorize``; several
commands may be in flight at once, matched to their replies by ``requestGuid``.

What a caller can get, and what it means:

* :class:`OrderAck`: the server accepted the command (``httpCode`` 200).
* :class:`~alorws.errors.OrderRejected`: the server refused it (``httpCode`` != 200) and did
  not execute it.
* :class:`~alorws.errors.OrderStatusUnknown`: the command was sent but no reply came within
  ``reply_timeout`` (overall, across re-sends), or the outcome cannot be known (see below).
  Never a silent success: look the order up (orders stream, by ``comment``) or send it again
  with the same ``guid``, which the server will not execute twice.
* :class:`~alorws.errors.TransportTimeout`: the command was not executed: it was never sent
  (no authorized connection within ``reply_timeout``), or only ever refused with 401.
* :class:`~alorws.errors.TokenRejected`: the token was refused even after a forced refresh.

Two cases are reported as unknown rather than guessed:

* a **refusal of a command re-sent after a reconnect** (any code but 200; typically 400),
  when an earlier send of it may have reached the server. docs/protocol.md §12.11 leaves open
  whether a real server replays the first reply to a duplicate guid (the simulator does) or answers
  400 (docs/protocol.md §5.3, from an unconfirmed third-party summary), so such a 400 may mean
  "duplicate: already executed" as well as "invalid". It raises ``OrderStatusUnknown`` with the
  server's code and message in the detail, never ``OrderRejected``: a false "rejected" would invite
  the caller to place the order twice.
* a command built with ``check_duplicates=False`` that was in flight when the connection
  dropped: re-sending it could execute it twice, so it is not re-sent.

A ``401`` to a command means the server did not execute it (authorization is checked first,
docs/protocol.md §12.11): the client re-authorizes (refreshing the token if it has not changed) and
re-sends the command on the same connection, at most twice, then raises ``TokenRejected``.

**Idle connections (docs/protocol.md §9.6).** Other integrators report that a ``/cws`` connection
idle for about 30 minutes still accepts ``authorize`` but resets on its next command, until it is
authorized with a token issued after that. So the client remembers when its connection last carried
a command; a command sent after ``reauth_after_idle`` seconds without one first gets a token
issued now (a forced refresh) and re-authorizes with it, then goes out. That costs one token
request and one ``authorize`` round trip before the first command after a long pause. Should the
connection be reset with a command in flight anyway, whatever the reason, the next connection
is authorized with a token issued now too, and the command is re-sent with the same guid (see
"Exactly once"). If the auth server cannot be reached for that fresh token, the current one is
used.

Every rule above is decided by :class:`~alorws.protocol.command_connection.CommandConnection`
(sans-I/O, tested without sockets); :class:`OrderClient` does the I/O around it: the socket, the
token manager, the waiting callers. Reconnects go through :func:`~alorws.client._ws.reconnecting`,
as the lanes' do.

Tokens are never logged, never part of a ``repr`` or an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import picows

from ..errors import (
    AlorError,
    AuthError,
    ConfigurationError,
    ConnectError,
    ConnectionClosed,
    InvalidArgumentError,
    InvalidState,
    TokenRejected,
    TransportError,
    TransportTimeout,
    rejection_for,
    scrub,
)
from ..protocol.backoff import Backoff
from ..protocol.codec import StatusReply, decode_status
from ..protocol.command_connection import (
    DEFAULT_REAUTH_AFTER_IDLE,
    CommandAcked,
    CommandConnection,
    CommandFailed,
    ConnectNeeded,
    ReauthorizeNeeded,
    TokenChoice,
    percentile,
)
from ..protocol.commands import (
    Command,
    InstrumentRef,
    encode_authorize,
    encode_command,
)
from ..protocol.reconnect import ReconnectPolicy, Retry
from ._badframes import BadFrameLog
from ._ws import (
    FrameListener,
    close_transport,
    reconnecting,
    send_or_drop,
    settle,
    ws_connect,
)
from .auth import RotatingTokenSource
from .endpoints import check_url
from .hooks import ConnectionEvent
from .order_methods import OrderAck, OrderMethods
from .proxy import ProxyOption, proxy_for


__all__ = ["DEFAULT_REAUTH_AFTER_IDLE", "OrderAck", "OrderClient"]

log = logging.getLogger("alorws.orders")


class _Conn:
    """One ``/cws`` connection attempt."""

    __slots__ = ("auth_waiters", "close_info", "closed", "gen", "reauth", "transport")

    def __init__(self, gen: int) -> None:
        self.gen = gen
        self.transport: picows.WSTransport | None = None
        self.closed = asyncio.Event()
        self.close_info: tuple[int | None, str] | None = None
        self.auth_waiters: dict[str, asyncio.Future[StatusReply]] = {}
        self.reauth: asyncio.Task[None] | None = None

    def on_close(self, code: int | None, reason: str) -> None:
        self.close_info = (code, reason)


def _default_guid_factory() -> Callable[[], str]:
    # The server remembers guids per account for an hour (docs/protocol.md §12.11), across
    # connections and processes: a counter alone would collide with the last run's guids and have
    # new orders "replayed" instead of executed. 80 random bits per client make that impossible in
    # practice.
    prefix = uuid.uuid4().hex[:20]
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


class OrderClient(OrderMethods):
    """Order management over one ``/cws`` connection (docs/protocol.md §6), exactly once across
    reconnects.

    Every method is a coroutine that must run in one event loop (the client's I/O loop). The
    connection opens on the first command and then stays up, reconnecting after every drop.

    Args:
        url: the ``/cws`` URL (``Endpoints.cws``; the simulator's ``sim.cws_url``). ``wss://``,
            or plain ``ws://`` to a loopback host only (else ``ConfigurationError``, raised
            here, before anything is resolved or sent).
        tokens: the token manager (``await token()``, ``await refresh(force=True)``,
            ``add_listener``); its refreshes ahead of ``exp`` trigger re-authorization.
        ssl_context: TLS context for ``wss`` (see :func:`~.endpoints.ssl_context_for`).
        backoff: delays between reconnect attempts (full jitter). When it runs out, pending
            commands fail and the next command starts over.
        reply_timeout: seconds a command may wait for its reply, overall (queueing, re-sends
            and reconnects included), before ``OrderStatusUnknown`` (or ``TransportTimeout``
            if it was never sent).
        connect_timeout: seconds allowed for the handshake and for each ``authorize`` reply.
        guid_factory: makes command and ``authorize`` guids (1-50 printable ASCII chars, unique
            for at least an hour across runs); by default a random prefix and a counter.
        ping_interval: send a WebSocket ping after this many silent seconds (``None``: never),
            so a dead connection is found before a command is lost in it.
        ping_timeout: seconds to wait for the pong before dropping the connection.
        reauth_after_idle: a command sent when the connection has carried none for this many
            seconds is preceded by ``authorize`` with a token issued now (docs/protocol.md §9.6, see
            the module docstring); ``None`` turns it off. Default 600 s, comfortably below the ~30
            minutes reported.
        proxy: ``None``: from the environment (``HTTPS_PROXY`` …, never for loopback);
            ``False``: none; ``"http://[user:password@]host:port"`` or ``"socks5://…"``: that
            proxy (see :mod:`alorws.client.proxy`).
    """

    def __init__(
        self,
        url: str,
        tokens: RotatingTokenSource,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backoff: Backoff | None = None,
        reply_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        guid_factory: Callable[[], str] | None = None,
        price_step: Callable[[str, str], Awaitable[float | None]] | None = None,
        ping_interval: float | None = 5.0,
        ping_timeout: float = 5.0,
        reauth_after_idle: float | None = DEFAULT_REAUTH_AFTER_IDLE,
        proxy: ProxyOption = None,
    ) -> None:
        for name, value in (
            ("reply_timeout", reply_timeout),
            ("connect_timeout", connect_timeout),
            ("ping_timeout", ping_timeout),
            ("ping_interval", 1.0 if ping_interval is None else ping_interval),
            ("reauth_after_idle", 1.0 if reauth_after_idle is None else reauth_after_idle),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise ConfigurationError(f"{name} must be a finite number > 0, got {value!r}")
        # Checked before anything else: the authorize frame carries the JWT.
        self.url = check_url(url, "OrderClient url", schemes=("wss", "ws"))
        self._proxy = proxy_for(self.url, proxy)
        self._tokens = tokens
        self._ssl = ssl_context
        self._backoff = backoff or Backoff()
        self._reply_timeout = reply_timeout
        self._connect_timeout = connect_timeout
        self._new_guid = guid_factory or _default_guid_factory()
        # (symbol, exchange) -> the instrument's price step (``minstep``, docs/protocol.md §8.6), or
        # None if unknown.
        self._price_step = price_step
        self._attempts: set[asyncio.Task[Any]] = set()  # connects in flight (see _ws)
        self._ping = (ping_interval, ping_timeout)
        # Every rule of the connection lives here; the client only does the I/O.
        self._cmd = CommandConnection(reauth_after_idle=reauth_after_idle)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: _Conn | None = None
        self._futures: dict[str, asyncio.Future[OrderAck]] = {}  # guid -> its waiting caller
        self._closed = False
        self._unlisten = tokens.add_listener(self._on_new_token)
        self._bad_frames = 0
        self._bad_log = BadFrameLog(log, "cws")
        self.last_error: str | None = None
        #: Told when the connection opens, is lost, and is back after a loss (the client's
        #: connection hooks); None: nobody.
        self.on_connection: Callable[[ConnectionEvent], None] | None = None
        self._lost_at: float | None = None  # when the open connection was lost

    def __repr__(self) -> str:
        cmd = self._cmd
        queued = cmd.queued()
        return (
            f"<OrderClient {self.url} {cmd.state.value} in_flight="
            f"{cmd.pending() - queued} queued={queued} acks={cmd.acks}>"
        )

    async def __aenter__(self) -> OrderClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _check_price_step(self, command: Command) -> None:
        """Refuse prices off the instrument's price grid, when its step is known."""
        source = self._price_step
        instrument = getattr(command, "instrument", None)
        if source is None or not isinstance(instrument, InstrumentRef):
            return
        step = await source(instrument.symbol, str(instrument.exchange))
        if not step or step <= 0:
            return
        for name in ("price", "trigger_price"):
            value = getattr(command, name, None)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                continue
            ticks = value / step
            if not math.isfinite(ticks):  # round() would raise OverflowError
                raise InvalidArgumentError(
                    name,
                    f"{value} is too large for {instrument.symbol}'s price step {step} "
                    "(not a price the exchange can trade)",
                )
            if abs(ticks - round(ticks)) > 1e-6:
                nearest = round(round(ticks) * step, 10)
                raise InvalidArgumentError(
                    name,
                    f"{value} is not a multiple of {instrument.symbol}'s price step {step}; "
                    f"use e.g. {nearest}",
                )

    # -- sending ------------------------------------------------------------------------------

    async def send(self, command: Command) -> OrderAck:
        """Send any prebuilt command and wait for its reply (see the module docstring).

        Raises:
            OrderRejected: the server refused the command (it was not executed).
            OrderStatusUnknown: sent, but the outcome is unknown (no reply in time, or a
                refusal of a re-send after a reconnect); look it up or resend with the same
                guid.
            TransportTimeout: never sent within ``reply_timeout`` (not executed).
            TokenRejected: the JWT was refused even after a forced refresh.
            InvalidArgumentError: not a command, or its guid is already in flight.
            InvalidState: the client is closed.
        """
        loop = self._check_usable()
        frame = encode_command(command)  # raises InvalidArgumentError for a non-command
        await self._check_price_step(command)
        cmd = self._cmd
        pending = cmd.submit(command, frame, time.monotonic())  # refuses a guid in flight
        guid = pending.guid
        future: asyncio.Future[OrderAck] = loop.create_future()
        self._futures[guid] = future
        self._act()
        deadline = asyncio.timeout(self._reply_timeout)
        try:
            async with deadline:
                return await future
        except TimeoutError:
            if not deadline.expired():
                raise  # the command failed with a TimeoutError of its own
            detail = self.last_error or "still connecting"
            raise cmd.expire(pending, self._reply_timeout, detail) from None
        finally:
            cmd.discard(pending)
            if self._futures.get(guid) is future:
                del self._futures[guid]

    # -- acting on the rules ------------------------------------------------------------------

    def _act(self) -> None:
        """Write what the rules queued on the current connection, then act on their events."""
        cmd = self._cmd
        frames = cmd.data_to_send()
        if frames:
            conn = self._conn
            for i, frame in enumerate(frames):
                # A frame written to a socket that dies may or may not have arrived (the lost
                # connection makes it ambiguous); one never written was surely not executed.
                if conn is None or not self._write(conn, frame):
                    cmd.not_written(frames[i:])
                    break
        for event in cmd.events_received():
            match event:
                case CommandAcked(guid=guid, order_number=number, message=message):
                    future = self._futures.pop(guid, None)
                    if future is not None and not future.done():
                        future.set_result(OrderAck(number, 200, message, guid))
                case CommandFailed(guid=guid, error=error):
                    future = self._futures.pop(guid, None)
                    if future is not None and not future.done():
                        future.set_exception(error)
                case ReauthorizeNeeded():
                    if self._conn is not None:
                        self._request_reauth(self._conn)
                case ConnectNeeded():
                    self._ensure_started()

    def _write(self, conn: _Conn, frame: bytes) -> bool:
        transport = conn.transport
        if transport is None or conn.closed.is_set():
            return False
        return send_or_drop(transport, frame)  # a dead transport is dropped: the loop reconnects

    # -- replies ------------------------------------------------------------------------------

    def _on_frame(self, conn: _Conn, payload: bytes) -> None:
        try:
            reply = decode_status(payload)  # /cws sends only status replies (docs/protocol.md §6.1)
        except Exception as exc:  # FrameError, or anything else: the frame's fault either way
            self._bad_frames += 1
            self._bad_log.frame(exc, payload)
            return
        guid = reply.request_guid
        waiter = conn.auth_waiters.get(guid)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(reply)
            return
        self._cmd.receive_reply(
            guid, reply.http_code, reply.message, reply.order_number, time.monotonic()
        )
        self._act()

    # -- connection lifecycle -----------------------------------------------------------------

    def _check_usable(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise InvalidState("the OrderClient is closed; create a new one")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise InvalidState(
                "the OrderClient is bound to the event loop it was first used in; "
                "use it only from that loop"
            )
        return loop

    def _ensure_started(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="alorws-cws")

    async def _connect(self, conn: _Conn) -> None:
        interval, timeout = self._ping
        conn.transport = await ws_connect(
            lambda: FrameListener(
                functools.partial(self._on_frame, conn),
                functools.partial(self._on_disconnected, conn),
                on_close=conn.on_close,
            ),
            self.url,
            ssl_context=self._ssl,
            step_timeout=self._connect_timeout,
            attempts=self._attempts,
            proxy=self._proxy,
            enable_auto_pong=True,
            enable_auto_ping=interval is not None,
            auto_ping_idle_timeout=interval or 10.0,
            auto_ping_reply_timeout=timeout,
            logger_name="alorws.cws",
        )

    async def _authorize(self, conn: _Conn, token: str) -> None:
        """Send ``authorize`` on ``conn`` and wait for its reply (docs/protocol.md §6.1).

        Raises TokenRejected (401), another ServerRejected, ConnectionClosed or TransportTimeout.
        """
        guid = self._new_guid()
        waiter: asyncio.Future[StatusReply] = asyncio.get_running_loop().create_future()
        conn.auth_waiters[guid] = waiter
        try:
            if not self._write(conn, encode_authorize(guid, token)):
                raise ConnectionClosed(None, "the connection closed before authorize was sent")
            try:
                async with asyncio.timeout(self._connect_timeout):
                    reply = await waiter
            except TimeoutError:
                raise TransportTimeout(
                    f"no reply to authorize within {self._connect_timeout} s"
                ) from None
        finally:
            conn.auth_waiters.pop(guid, None)
        if reply.http_code != 200:
            raise rejection_for(reply.http_code, reply.message, guid)

    async def _token_for(self, choice: TokenChoice) -> str:
        if choice is TokenChoice.REFRESH:
            return await self._tokens.refresh(force=True)
        if choice is TokenChoice.FRESH:
            return await self._fresh_token()
        return await self._tokens.token()

    def _on_disconnected(self, conn: _Conn) -> None:
        conn.transport = None
        conn.closed.set()
        code, reason = conn.close_info or (None, "connection lost")
        for waiter in conn.auth_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionClosed(code, reason))

    def _drop(self, conn: _Conn) -> None:
        transport = conn.transport
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.disconnect(graceful=False)

    async def _wait_closed(self, conn: _Conn) -> None:
        if conn.transport is None and not conn.closed.is_set():
            return  # never connected
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout):
                await conn.closed.wait()

    async def _open(self) -> _Conn:
        """One attempt: connect and authorize; the connection is usable when this returns."""
        cmd = self._cmd
        conn = self._conn = _Conn(cmd.connecting())
        try:
            await self._connect(conn)
            cmd.authorizing()
            plan = cmd.authorize_plan()
            token = await self._token_for(plan.choice)
            await self._authorize(conn, token)
        except asyncio.CancelledError:
            self._drop(conn)
            raise
        except Exception as exc:
            self._drop(conn)
            if isinstance(exc, TokenRejected) or not isinstance(exc, AuthError | InvalidState):
                # docs/protocol.md §12.11: a refused authorize is closed by the server anyway.
                await self._wait_closed(conn)
            self._connection_lost(conn)
            raise
        cmd.opened(token, plan, time.monotonic())
        log.info("cws: connected and authorized (%s)", self.url)
        self._tell("connect")
        if self._lost_at is not None:
            downtime, self._lost_at = time.monotonic() - self._lost_at, None
            self._tell("restore", downtime=downtime, restored=cmd.pending())
        cmd.token_rotated(self._tokens.current)  # it may have rotated while we authorized
        self._act()
        return conn

    def _tell(self, kind: str, **info: Any) -> None:
        if self.on_connection is not None:
            self.on_connection(ConnectionEvent(kind, "orders", 0, **info))

    def _open_failed(self, exc: Exception) -> Retry:
        retry = self._cmd.open_failed(exc)
        if isinstance(exc, TokenRejected):
            self.last_error = f"authorize refused: {exc.http_code} {exc.message}"
            if retry is Retry.NEVER:
                log.error("cws: %s, also with a refreshed token", self.last_error)
            else:
                log.warning("cws: %s; retrying with a refreshed token", self.last_error)
        elif retry is Retry.NEVER:  # the token manager gave up: final
            self.last_error = f"no access token: {exc}"
            log.error("cws: %s", self.last_error)
        else:
            self.last_error = scrub(f"connect or authorize failed: {exc!r}")
            log.info("cws: %s", self.last_error)
        return retry

    async def _run(self) -> None:
        """Connect, authorize, flush, wait for the drop; again, forever (or until given up)."""
        attempts = reconnecting(self._open, ReconnectPolicy(self._backoff), self._open_failed)
        try:
            async with contextlib.aclosing(attempts):
                async for conn in attempts:
                    await conn.closed.wait()
                    code, reason = conn.close_info or (None, "connection lost")
                    self.last_error = f"closed (code={code}, reason={scrub(reason)!r})"
                    if not self._closed:
                        log.info("cws: %s; reconnecting", self.last_error)
                        self._lost_at = time.monotonic()
                        self._tell("disconnect", reason=self.last_error)
                    self._connection_lost(conn)
                    if self._closed:
                        break
            if not self._closed:  # the backoff ran out
                self._fail_all(ConnectError(f"could not connect to {self.url}: {self.last_error}"))
        except AlorError as exc:  # final (Retry.NEVER): no token, or authorize refused twice
            self._fail_all(exc)
        finally:
            if self._task is asyncio.current_task():
                self._task = None
            self._conn = None
            self._cmd.stopped()

    def _connection_lost(self, conn: _Conn) -> None:
        """Forget the connection; the rules decide the fate of the commands in flight on it."""
        if conn.reauth is not None:
            conn.reauth.cancel()
        self._cmd.connection_lost(conn.gen)
        self._act()

    def _fail_all(self, exc: AlorError) -> None:
        """The loop gives up: fail every pending command (sent ones are unknown, not failed)."""
        self._cmd.give_up(exc)
        self._act()

    # -- re-authorization ---------------------------------------------------------------------

    def _on_new_token(self, token: str) -> None:
        """Token manager listener: re-authorize the open connection with the new token."""
        self._cmd.token_rotated(token)
        self._act()

    def _request_reauth(self, conn: _Conn) -> None:
        if conn.reauth is None or conn.reauth.done():
            conn.reauth = asyncio.get_running_loop().create_task(
                self._reauthorize(conn), name="alorws-cws-reauth"
            )

    async def _reauthorize(self, conn: _Conn) -> None:
        """Send ``authorize`` on the open connection until it runs on the current token."""
        cmd = self._cmd
        try:
            while self._conn is conn:
                token = await self._tokens.token()
                plan = cmd.reauthorization(token)
                if plan is None:
                    return  # up to date
                if plan.choice is not TokenChoice.CURRENT:
                    token = await self._token_for(plan.choice)
                if self._conn is not conn:
                    return
                await self._authorize(conn, token)
                cmd.reauthorized(token, plan, time.monotonic())
                log.debug("cws: re-authorized on the open connection")
                self._act()
        except asyncio.CancelledError:
            raise
        except AlorError as exc:
            # 401: the server closes the connection (docs/protocol.md §12.11); anything else: start
            # afresh. Either way the run loop reconnects and re-sends what is pending.
            self.last_error = f"re-authorize failed: {exc}"
            log.warning("cws: %s; reconnecting", self.last_error)
            self._drop(conn)
        finally:
            if conn.reauth is asyncio.current_task():
                conn.reauth = None

    async def _fresh_token(self) -> str:
        """A token issued now (docs/protocol.md §9.6), or the current one if the auth server does
        not give one within ``connect_timeout`` (the command then goes out on it; a reset brings us
        back)."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                return await self._tokens.refresh(force=True)
        except (TransportError, TimeoutError) as exc:
            log.warning("cws: no fresh token (%r); authorizing with the current one", exc)
            return await self._tokens.token()

    # -- closing and observability ------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection and stop; commands still waiting fail. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._cmd.start_closing()
        self._unlisten()
        conn = self._conn
        if conn is not None and conn.transport is not None:
            await close_transport(conn.transport)
        tasks = [t for t in (self._task, conn.reauth if conn else None) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await settle(self._attempts, self._connect_timeout)
        self._cmd.close()
        self._act()

    def stats(self) -> dict[str, Any]:
        """Counters, state and ack round-trip latency (µs, last 4096 acks and rejections).

        ``commands`` submitted; ``sent`` frames (re-sends included); ``acks``; ``rejections``;
        ``resends``; ``unknown`` (OrderStatusUnknown raised); ``not_sent`` (TransportTimeout);
        ``reconnects`` (open connections lost); ``authorizations`` (every accepted authorize)
        and ``reauthorizations`` (on an open connection); ``idle_reauthorizations`` (commands
        that waited for one after ``reauth_after_idle``) and ``fresh_authorizations`` (authorize
        with a token fetched for it: after an idle time or a reset, docs/protocol.md §9.6);
        ``in_flight`` and ``queued`` now; ``idle_s``: seconds since the connection last carried
        a command or opened (None before the first).
        """
        cmd = self._cmd
        ordered = sorted(cmd.latencies)
        queued = cmd.queued()
        return {
            "state": cmd.state.value,
            "url": self.url,
            "commands": cmd.commands,
            "sent": cmd.frames_sent,
            "acks": cmd.acks,
            "rejections": cmd.rejections,
            "resends": cmd.resends,
            "unknown": cmd.unknown,
            "not_sent": cmd.not_sent,
            "reconnects": cmd.reconnects,
            "connect_failures": cmd.connect_failures,
            "authorizations": cmd.authorizations,
            "reauthorizations": cmd.reauthorizations,
            "idle_reauthorizations": cmd.idle_reauthorizations,
            "fresh_authorizations": cmd.fresh_authorizations,
            "in_flight": cmd.pending() - queued,
            "queued": queued,
            "late_replies": cmd.late_replies,
            "bad_frames": self._bad_frames,
            "latency_us": {
                "p50": percentile(ordered, 0.50),
                "p99": percentile(ordered, 0.99),
                "samples": len(ordered),
            },
            "idle_s": time.monotonic() - cmd.idle_since() if cmd.idle_since() else None,
            "last_error": self.last_error,
        }

    def latencies_us(self) -> list[int]:
        """Round trips (send to reply, µs) of the last 4096 acks and rejections, oldest first."""
        return list(self._cmd.latencies)
