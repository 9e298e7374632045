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

Tokens are never logged, never part of a ``repr`` or an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import math
import ssl
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

import msgspec
import picows

from ..errors import (
    AlorError,
    AuthError,
    ConfigurationError,
    ConnectError,
    ConnectionClosed,
    FrameError,
    InvalidArgumentError,
    InvalidState,
    OrderRejected,
    OrderStatusUnknown,
    TokenRejected,
    TransportError,
    TransportTimeout,
    rejection_for,
    scrub,
)
from ..protocol.backoff import Backoff
from ..protocol.codec import StatusReply, decode_status
from ..protocol.commands import (
    Command,
    CreateLimit,
    CreateMarket,
    CreateStop,
    CreateStopLimit,
    DeleteLimit,
    DeleteMarket,
    DeleteStop,
    DeleteStopLimit,
    InstrumentRef,
    UpdateLimit,
    UpdateMarket,
    UpdateStop,
    UpdateStopLimit,
    User,
    encode_authorize,
    encode_command,
)
from ..protocol.enums import Condition, Exchange, OrderType, Side, TimeInForce
from ._badframes import BadFrameLog
from ._ws import STABLE_SECONDS, settle, ws_connect
from .auth import RotatingTokenSource
from .endpoints import check_url


__all__ = ["DEFAULT_REAUTH_AFTER_IDLE", "OrderAck", "OrderClient"]

log = logging.getLogger("alorws.orders")

_TEXT = picows.WSMsgType.TEXT
_BINARY = picows.WSMsgType.BINARY
_CONT = picows.WSMsgType.CONTINUATION
_CLOSE = picows.WSMsgType.CLOSE

#: 401 replies to one command answered by re-authorizing and re-sending, before TokenRejected.
_AUTH_RETRIES: Final = 2
#: Round-trip samples kept for the latency percentiles in ``stats()``.
_LATENCY_SAMPLES: Final = 4096
#: Default of ``reauth_after_idle``, seconds: well below the ~30 minutes after which an idle
#: ``/cws`` connection is reported to go stale (docs/protocol.md §9.6), however the server counts
#: them.
DEFAULT_REAUTH_AFTER_IDLE: Final = 600.0

_DELETES: Final[dict[str, type[Command]]] = {
    OrderType.MARKET.value: DeleteMarket,
    OrderType.LIMIT.value: DeleteLimit,
    OrderType.STOP.value: DeleteStop,
    OrderType.STOP_LIMIT.value: DeleteStopLimit,
}


class OrderAck(msgspec.Struct, frozen=True, gc=False):
    """The server accepted an order command (``httpCode`` 200, docs/protocol.md §5).

    Attributes:
        order_number: the order's id. After a ``modify_*`` it is the **new** id
            (docs/protocol.md §6.3: an update cancels the order and places a new one); after
            ``cancel`` the cancelled id. Empty if a server ever accepts a create or update without
            ``orderNumber`` (docs/protocol.md §5 documents it on every order reply).
        http_code: always 200.
        message: the server's text, verbatim (free text: never match on it).
        guid: the command's guid (its idempotency key).
    """

    order_number: str
    http_code: int
    message: str
    guid: str


class _State(enum.StrEnum):
    IDLE = "idle"  # not started yet, or given up (the next command starts it again)
    CONNECTING = "connecting"
    AUTHORIZING = "authorizing"
    OPEN = "open"  # authorized: commands go straight out
    BACKOFF = "backoff"
    CLOSED = "closed"


class _Pending:
    """One command from submission to its reply."""

    __slots__ = (
        "ambiguous",
        "auth_retries",
        "command",
        "frame",
        "future",
        "guid",
        "needs_auth",
        "sends",
        "sent_gen",
        "sent_ns",
    )

    def __init__(self, command: Command, frame: bytes, future: asyncio.Future[OrderAck]) -> None:
        self.command = command
        self.guid = command.guid
        self.frame = frame  # encoded once: a re-send is byte-for-byte the same command
        self.future = future
        self.sends = 0
        self.sent_gen = 0  # the connection it was last sent on (0: never sent)
        self.sent_ns = 0
        self.needs_auth = False  # got a 401: not executed, re-send after re-authorizing
        self.auth_retries = 0
        self.ambiguous = False  # a connection dropped while it was in flight


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


class _Listener(picows.WSListener):
    """picows callbacks: hand each complete frame of one connection to the client."""

    def __init__(self, client: OrderClient, conn: _Conn) -> None:
        self.client = client
        self.conn = conn
        self.parts: list[bytes] | None = None

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY:
            if frame.fin:
                self.client._on_frame(self.conn, frame.get_payload_as_bytes())
            else:
                self.parts = [frame.get_payload_as_bytes()]
        elif kind is _CONT:
            if self.parts is not None:
                self.parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    payload = b"".join(self.parts)
                    self.parts = None
                    self.client._on_frame(self.conn, payload)
        elif kind is _CLOSE:
            code = frame.get_close_code()
            self.conn.close_info = (getattr(code, "value", None), frame.get_close_reason() or "")
            with contextlib.suppress(Exception):
                if code is picows.WSCloseCode.NO_INFO:
                    transport.send_close()
                else:
                    transport.send_close(code)
            transport.disconnect()

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.client._on_disconnected(self.conn)


def _default_guid_factory() -> Callable[[], str]:
    # The server remembers guids per account for an hour (docs/protocol.md §12.11), across
    # connections and processes: a counter alone would collide with the last run's guids and have
    # new orders "replayed" instead of executed. 80 random bits per client make that impossible in
    # practice.
    prefix = uuid.uuid4().hex[:20]
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


def _percentile(ordered: list[int], q: float) -> int | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class OrderClient:
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
        self._reauth_after_idle = reauth_after_idle

        self._state = _State.IDLE
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: _Conn | None = None
        self._gens = itertools.count(1)
        self._pending: dict[str, _Pending] = {}  # insertion order = submission order
        self._hold = False  # a command got 401: queue new ones until re-authorized
        self._authorized_token: str | None = None  # which token this connection runs on
        # When the connection last carried a command (monotonic), and whether the next
        # authorize must use a token issued now (docs/protocol.md §9.6: after an idle time, or a
        # reset).
        self._last_command = 0.0
        self._want_fresh = False
        self._closed = False
        self._unlisten = tokens.add_listener(self._on_new_token)

        # Counters (plain ints: everything runs in one loop).
        self._commands = 0
        self._frames_sent = 0
        self._acks = 0
        self._rejections = 0
        self._resends = 0
        self._unknown = 0
        self._not_sent = 0
        self._reconnects = 0
        self._connect_failures = 0
        self._authorizations = 0
        self._reauthorizations = 0
        self._idle_reauthorizations = 0
        self._fresh_authorizations = 0
        self._late_replies = 0
        self._bad_frames = 0
        self._bad_log = BadFrameLog(log, "cws")
        self._latencies: deque[int] = deque(maxlen=_LATENCY_SAMPLES)
        self.last_error: str | None = None

    def __repr__(self) -> str:
        queued = self._queued()
        return (
            f"<OrderClient {self.url} {self._state.value} in_flight="
            f"{len(self._pending) - queued} queued={queued} acks={self._acks}>"
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

    # -- typed commands -----------------------------------------------------------------------

    async def place_market(
        self,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        time_in_force: TimeInForce | str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Place a market order of ``quantity`` lots (docs/protocol.md §6.3 ``create:market``).

        ``board`` goes into ``instrument.instrumentGroup`` (docs/protocol.md §12.8). ``guid`` is the
        command's idempotency key: pass the guid of an earlier attempt to retry it without a second
        execution. Invalid arguments raise :class:`~alorws.errors.InvalidArgumentError` (naming
        the field) before anything is sent.
        """
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(fields, time_in_force=time_in_force)
        return await self.send(CreateMarket(**fields))

    async def place_limit(
        self,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        price: float,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        time_in_force: TimeInForce | str | None = None,
        iceberg_fixed: int | None = None,
        iceberg_variance: float | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Place a limit order at ``price`` (docs/protocol.md §6.3 ``create:limit``); see
        :meth:`place_market`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(
            fields,
            price=price,
            time_in_force=time_in_force,
            iceberg_fixed=iceberg_fixed,
            iceberg_variance=iceberg_variance,
        )
        return await self.send(CreateLimit(**fields))

    async def place_stop(
        self,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        trigger_price: float,
        condition: Condition | str,
        *,
        stop_end_unix_time: int = 0,
        protecting_seconds: int | None = None,
        activate: bool | None = None,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Place a stop (market) order that fires when the last price meets ``condition``
        against ``trigger_price`` (docs/protocol.md §6.3 ``create:stop``). ``stop_end_unix_time`` 0
        is the server's default expiry. See :meth:`place_market`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(
            fields,
            trigger_price=trigger_price,
            condition=condition,
            stop_end_unix_time=stop_end_unix_time,
            protecting_seconds=protecting_seconds,
            activate=activate,
        )
        return await self.send(CreateStop(**fields))

    async def place_stop_limit(
        self,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        price: float,
        trigger_price: float,
        condition: Condition | str,
        *,
        stop_end_unix_time: int = 0,
        time_in_force: TimeInForce | str | None = None,
        iceberg_fixed: int | None = None,
        iceberg_variance: float | None = None,
        protecting_seconds: int | None = None,
        activate: bool | None = None,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Place a stop-limit order: a limit order at ``price`` once the trigger is met
        (docs/protocol.md §6.3 ``create:stopLimit``). See :meth:`place_stop`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(
            fields,
            price=price,
            trigger_price=trigger_price,
            condition=condition,
            stop_end_unix_time=stop_end_unix_time,
            time_in_force=time_in_force,
            iceberg_fixed=iceberg_fixed,
            iceberg_variance=iceberg_variance,
            protecting_seconds=protecting_seconds,
            activate=activate,
        )
        return await self.send(CreateStopLimit(**fields))

    async def modify_market(
        self,
        order_id: str | int,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        time_in_force: TimeInForce | str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Replace market order ``order_id`` (docs/protocol.md §6.3 ``update:market``).

        Every ``modify_*`` cancels the order and places a new one: the ack's ``order_number``
        is the **new** id, and ``order_id`` is cancelled.
        """
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(fields, order_id=order_id, time_in_force=time_in_force)
        return await self.send(UpdateMarket(**fields))

    async def modify_limit(
        self,
        order_id: str | int,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        price: float,
        *,
        iceberg_fixed: int | None = None,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Replace limit order ``order_id`` (docs/protocol.md §6.3 ``update:limit``; ALOR
        takes no ``time_in_force`` on it); the ack carries the new id. See :meth:`modify_market`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(fields, order_id=order_id, price=price, iceberg_fixed=iceberg_fixed)
        return await self.send(UpdateLimit(**fields))

    async def modify_stop(
        self,
        order_id: str | int,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        trigger_price: float,
        condition: Condition | str,
        *,
        stop_end_unix_time: int = 0,
        protecting_seconds: int | None = None,
        activate: bool | None = None,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Replace stop order ``order_id`` (docs/protocol.md §6.3 ``update:stop``); the ack carries
        the new id. See :meth:`modify_market`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(
            fields,
            order_id=order_id,
            trigger_price=trigger_price,
            condition=condition,
            stop_end_unix_time=stop_end_unix_time,
            protecting_seconds=protecting_seconds,
            activate=activate,
        )
        return await self.send(UpdateStop(**fields))

    async def modify_stop_limit(
        self,
        order_id: str | int,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        price: float,
        trigger_price: float,
        condition: Condition | str,
        *,
        stop_end_unix_time: int = 0,
        time_in_force: TimeInForce | str | None = None,
        iceberg_fixed: int | None = None,
        protecting_seconds: int | None = None,
        activate: bool | None = None,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Replace stop-limit order ``order_id`` (docs/protocol.md §6.3 ``update:stopLimit``); the
        ack carries the new id. See :meth:`modify_market`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(
            fields,
            order_id=order_id,
            price=price,
            trigger_price=trigger_price,
            condition=condition,
            stop_end_unix_time=stop_end_unix_time,
            time_in_force=time_in_force,
            iceberg_fixed=iceberg_fixed,
            protecting_seconds=protecting_seconds,
            activate=activate,
        )
        return await self.send(UpdateStopLimit(**fields))

    async def cancel(
        self,
        order_id: str | int,
        portfolio: str,
        *,
        kind: OrderType | str = OrderType.LIMIT,
        exchange: Exchange | str = Exchange.MOEX,
        guid: str | None = None,
    ) -> OrderAck:
        """Cancel order ``order_id`` (docs/protocol.md §6.3 ``delete:*``).

        ``kind`` is the order's type: ``"market"``, ``"limit"`` (default), ``"stop"`` or
        ``"stoplimit"`` (stop and stop-limit orders live in a separate book on the server).
        """
        key = str(kind).replace("_", "").replace("-", "").casefold()
        cls = _DELETES.get(key)
        if cls is None:
            raise InvalidArgumentError(
                "kind",
                f"{kind!r} is not an order type; use 'market', 'limit', 'stop' or 'stoplimit'",
            )
        fields: dict[str, Any] = {
            "guid": self._guid(guid),
            "user": User(portfolio=portfolio),
            "order_id": order_id,
            "exchange": exchange,
        }
        return await self.send(cls(**fields))

    def _guid(self, guid: str | None) -> str:
        # Validated with the rest of the command (Command.__post_init__).
        return self._new_guid() if guid is None else guid

    def _order_fields(
        self,
        guid: str | None,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        exchange: Exchange | str,
        board: str | None,
        comment: str | None,
        allow_margin: bool | None,
    ) -> dict[str, Any]:
        """The fields every create/update command has; the Structs validate them all."""
        instrument: dict[str, Any] = {"symbol": symbol, "exchange": exchange}
        if board is not None:
            instrument["instrument_group"] = board  # wins over a top-level board
        fields: dict[str, Any] = {
            "guid": self._guid(guid),
            "user": User(portfolio=portfolio),
            "side": side,
            "quantity": quantity,
            "instrument": InstrumentRef(**instrument),
        }
        _put(fields, comment=comment, allow_margin=allow_margin)
        return fields

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
        guid = command.guid
        if guid in self._pending:
            raise InvalidArgumentError(
                "guid", f"{guid!r} is already in flight; await that command instead"
            )
        pending = _Pending(command, frame, loop.create_future())
        self._pending[guid] = pending
        self._commands += 1
        if self._ready():
            conn = self._conn
            assert conn is not None
            idle = self._reauth_after_idle
            if idle is not None and time.monotonic() - self._last_command > idle:
                # docs/protocol.md §9.6: the server may hold this idle connection stale; only an
                # authorize with a token issued now clears it. The command waits for it (flushed
                # after).
                self._idle_reauthorizations += 1
                self._want_fresh = True
                self._request_reauth(conn, hold=True)
            else:
                self._transmit(conn, pending)
        else:
            self._ensure_started()
        deadline = asyncio.timeout(self._reply_timeout)
        try:
            async with deadline:
                return await pending.future
        except TimeoutError:
            if not deadline.expired():
                raise  # the command failed with a TimeoutError of its own
            if not _maybe_executed(pending):
                self._not_sent += 1
                raise TransportTimeout(
                    f"order command {guid!r} was not executed: no authorized /cws connection "
                    f"within {self._reply_timeout} s ({self.last_error or 'still connecting'})"
                ) from None
            self._unknown += 1
            raise OrderStatusUnknown(
                guid, f"no reply within {self._reply_timeout} s after {pending.sends} send(s)"
            ) from None
        finally:
            if self._pending.get(guid) is pending:
                del self._pending[guid]

    def _queued(self) -> int:
        """Commands waiting to be sent (never sent, or refused with 401 and waiting)."""
        return sum(1 for p in self._pending.values() if p.sends == 0 or p.needs_auth)

    def _ready(self) -> bool:
        return self._state is _State.OPEN and not self._hold and self._conn is not None

    def _transmit(self, conn: _Conn, pending: _Pending) -> None:
        """Send (or re-send) one command on ``conn``; a failed write counts as sent."""
        if pending.sends:
            self._resends += 1
            log.info("cws: re-sending command %s (send #%d)", pending.guid, pending.sends + 1)
        pending.sends += 1
        pending.sent_gen = conn.gen
        pending.needs_auth = False
        pending.sent_ns = time.perf_counter_ns()
        self._last_command = time.monotonic()
        self._frames_sent += 1
        # A frame written to a socket that dies may or may not have arrived: the command is
        # "in flight" either way, and the connection-lost path re-sends it with the same guid.
        self._write(conn, pending.frame)

    def _flush(self) -> None:
        """Send every command not in flight on the current connection, in submission order."""
        conn = self._conn
        if conn is None:
            return
        for pending in list(self._pending.values()):
            if not self._ready():
                return
            if pending.sent_gen == conn.gen and not pending.needs_auth:
                continue  # in flight here already
            self._transmit(conn, pending)

    def _write(self, conn: _Conn, frame: bytes) -> bool:
        transport = conn.transport
        if transport is None or conn.closed.is_set():
            return False
        try:
            transport.send(_TEXT, frame)
        except Exception as exc:  # a transport that died under us: drop it, the loop reconnects
            log.debug("cws: send failed: %r", exc)
            with contextlib.suppress(Exception):
                transport.disconnect(graceful=False)
            return False
        return True

    # -- replies ------------------------------------------------------------------------------

    def _on_frame(self, conn: _Conn, payload: bytes) -> None:
        try:
            reply = decode_status(payload)  # /cws sends only status replies (docs/protocol.md §6.1)
        except Exception as exc:  # FrameError, or anything else: the frame's fault either way
            self._bad_frames += 1
            if not isinstance(exc, FrameError):
                exc = FrameError(f"unreadable frame: {type(exc).__name__}: {exc}", payload)
            self._bad_log.report(exc)
            return
        guid = reply.request_guid
        waiter = conn.auth_waiters.get(guid)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(reply)
            return
        pending = self._pending.get(guid)
        if pending is None:
            # The caller timed out or went away; or a reply to a command from another client.
            self._late_replies += 1
            log.debug(
                "cws: reply %d to unknown or abandoned command %s", reply.http_code, scrub(guid)
            )
            return
        self._latencies.append((time.perf_counter_ns() - pending.sent_ns) // 1000)
        code = reply.http_code
        if code == 200:
            self._acks += 1
            number = reply.order_number
            if number is None:
                # docs/protocol.md §5 documents orderNumber on every order reply; a delete names the
                # order anyway.
                number = getattr(pending.command, "order_id", "") if _is_delete(pending) else ""
            self._resolve(pending, OrderAck(number, code, reply.message, guid))
        elif code == 401 and pending.auth_retries < _AUTH_RETRIES:
            # docs/protocol.md §12.11: authorization is checked before anything runs: not executed,
            # safe to resend.
            pending.auth_retries += 1
            pending.needs_auth = True
            log.info("cws: command %s got 401; re-authorizing and re-sending", guid)
            self._request_reauth(conn, hold=True)
        elif pending.ambiguous:
            # An earlier send was in flight when a connection dropped, so it may have executed.
            # The simulator replays the first reply to a duplicate guid (docs/protocol.md §12.11),
            # but a real server may refuse the duplicate instead (400, docs/protocol.md §5.3;
            # unconfirmed): a refusal here does not prove the order was not placed.
            self._unknown += 1
            self._resolve(
                pending,
                OrderStatusUnknown(
                    guid,
                    f"the server answered {code} {reply.message!r} to a re-send after a "
                    "reconnect; an earlier send may have executed (a server may refuse a "
                    "duplicate guid)",
                ),
            )
        else:
            self._rejections += 1
            err = (
                TokenRejected(code, reply.message, guid)
                if code == 401
                else OrderRejected(code, reply.message, guid)
            )
            self._resolve(pending, err)

    def _resolve(self, pending: _Pending, result: OrderAck | BaseException) -> None:
        if self._pending.get(pending.guid) is pending:
            del self._pending[pending.guid]
        future = pending.future
        if future.done():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

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
            lambda: _Listener(self, conn),
            self.url,
            ssl_context=self._ssl,
            step_timeout=self._connect_timeout,
            attempts=self._attempts,
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
        self._authorized_token = token
        self._authorizations += 1

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

    async def _run(self) -> None:
        """Connect, authorize, flush, wait for the drop; again, forever (or until given up)."""
        delays = self._backoff.delays()
        rejected = 0  # consecutive 401s to authorize
        try:
            while not self._closed:
                conn = self._conn = _Conn(next(self._gens))
                self._state = _State.CONNECTING
                try:
                    await self._connect(conn)
                    self._state = _State.AUTHORIZING
                    fresh = self._want_fresh
                    if rejected:  # refused once; retry with a fresh token (docs/protocol.md §2.6)
                        token = await self._tokens.refresh(force=True)
                    elif fresh:  # reset under a command last time (docs/protocol.md §9.6)
                        token = await self._fresh_token()
                    else:
                        token = await self._tokens.token()
                    await self._authorize(conn, token)
                    if fresh:
                        self._want_fresh = False
                        self._fresh_authorizations += 1
                except TokenRejected as exc:
                    rejected += 1
                    self.last_error = f"authorize refused: {exc.http_code} {exc.message}"
                    self._drop(conn)  # docs/protocol.md §12.11: the server closes it anyway (1008)
                    await self._wait_closed(conn)
                    self._connection_lost(conn)
                    if rejected > 1:
                        log.error("cws: %s, also with a refreshed token", self.last_error)
                        self._fail_all(exc)
                        return
                    log.warning("cws: %s; retrying with a refreshed token", self.last_error)
                    continue
                except (AuthError, InvalidState) as exc:  # the token manager gave up: final
                    self.last_error = f"no access token: {exc}"
                    log.error("cws: %s", self.last_error)
                    self._drop(conn)
                    self._connection_lost(conn)
                    self._fail_all(exc)
                    return
                except asyncio.CancelledError:
                    self._drop(conn)
                    raise
                except Exception as exc:
                    self._connect_failures += 1
                    self.last_error = scrub(f"connect or authorize failed: {exc!r}")
                    log.info("cws: %s", self.last_error)
                    self._drop(conn)
                    await self._wait_closed(conn)
                else:
                    rejected = 0
                    opened_at = time.monotonic()
                    self._state = _State.OPEN
                    self._last_command = time.monotonic()  # a new connection is not idle
                    log.info("cws: connected and authorized (%s)", self.url)
                    if self._tokens.current != self._authorized_token:
                        self._request_reauth(conn)  # the token rotated while we authorized
                    self._flush()
                    await conn.closed.wait()
                    code, reason = conn.close_info or (None, "connection lost")
                    self.last_error = f"closed (code={code}, reason={scrub(reason)!r})"
                    if not self._closed:
                        log.info("cws: %s; reconnecting", self.last_error)
                        self._reconnects += 1
                    if time.monotonic() - opened_at >= STABLE_SECONDS:
                        delays = self._backoff.delays()  # it worked for a while: start over
                self._connection_lost(conn)
                if self._closed:
                    break
                self._state = _State.BACKOFF
                delay = next(delays, None)
                if delay is None:
                    self._fail_all(
                        ConnectError(f"could not connect to {self.url}: {self.last_error}")
                    )
                    return
                await asyncio.sleep(delay)
        finally:
            if self._task is asyncio.current_task():
                self._task = None
            self._conn = None
            if not self._closed:
                self._state = _State.IDLE

    def _connection_lost(self, conn: _Conn) -> None:
        """Forget the connection; decide the fate of the commands in flight on it."""
        if conn.reauth is not None:
            conn.reauth.cancel()
        if self._conn is conn:
            self._hold = False
            self._authorized_token = None
        for pending in list(self._pending.values()):
            if pending.sent_gen != conn.gen or pending.needs_auth:
                continue  # queued, or refused with 401 (not executed): just send it again
            # docs/protocol.md §9.6: a connection reset under a command may have gone stale; only a
            # token issued now clears that, on the next connection too.
            self._want_fresh = True
            pending.ambiguous = True  # it may have executed: a re-send must be deduplicated
            if not pending.command.check_duplicates:
                self._unknown += 1
                self._resolve(
                    pending,
                    OrderStatusUnknown(
                        pending.guid,
                        "the connection dropped before the reply and the command has "
                        "checkDuplicates off, so re-sending it could execute it twice",
                    ),
                )

    def _fail_all(self, exc: AlorError) -> None:
        """The loop gives up: fail every pending command (sent ones are unknown, not failed)."""
        for pending in list(self._pending.values()):
            if _maybe_executed(pending):
                self._unknown += 1
                self._resolve(pending, OrderStatusUnknown(pending.guid, str(exc)))
            else:
                self._resolve(pending, exc)

    # -- re-authorization ---------------------------------------------------------------------

    def _on_new_token(self, token: str) -> None:
        """Token manager listener: re-authorize the open connection with the new token."""
        conn = self._conn
        if conn is not None and self._state is _State.OPEN and token != self._authorized_token:
            self._request_reauth(conn)

    def _request_reauth(self, conn: _Conn, *, hold: bool = False) -> None:
        if hold:
            self._hold = True  # queue new commands until the connection is authorized again
        if conn.reauth is None or conn.reauth.done():
            conn.reauth = asyncio.get_running_loop().create_task(
                self._reauthorize(conn), name="alorws-cws-reauth"
            )

    async def _reauthorize(self, conn: _Conn) -> None:
        """Send ``authorize`` on the open connection until it runs on the current token."""
        try:
            while self._conn is conn and self._state is _State.OPEN:
                hold = self._hold
                fresh = self._want_fresh
                token = await self._tokens.token()
                if fresh:
                    token = await self._fresh_token()  # docs/protocol.md §9.6: a long idle time
                elif token == self._authorized_token:
                    if not hold:
                        return  # up to date
                    # A command got 401 on this very token: the server thinks it expired.
                    token = await self._tokens.refresh(force=True)
                if self._conn is not conn:
                    return
                await self._authorize(conn, token)
                self._reauthorizations += 1
                if fresh:
                    self._want_fresh = False
                    self._fresh_authorizations += 1
                log.debug("cws: re-authorized on the open connection")
                if hold:
                    self._hold = False
                    self._flush()
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
        self._unlisten()
        conn = self._conn
        if conn is not None and conn.transport is not None:
            transport = conn.transport
            with contextlib.suppress(Exception):
                transport.send_close(picows.WSCloseCode.OK)
            transport.disconnect()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await transport.wait_disconnected()
        tasks = [t for t in (self._task, conn.reauth if conn else None) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await settle(self._attempts, self._connect_timeout)
        for pending in list(self._pending.values()):
            if _maybe_executed(pending):
                self._unknown += 1
                self._resolve(
                    pending,
                    OrderStatusUnknown(pending.guid, "the OrderClient was closed before the reply"),
                )
            else:
                self._resolve(
                    pending,
                    InvalidState("the OrderClient was closed before the command was sent"),
                )
        self._state = _State.CLOSED

    def stats(self) -> dict[str, Any]:
        """Counters, state and ack round-trip latency (µs, last 4096 acks and rejections).

        ``commands`` submitted; ``sent`` frames (re-sends included); ``acks``; ``rejections``;
        ``resends``; ``unknown`` (OrderStatusUnknown raised); ``not_sent`` (TransportTimeout);
        ``reconnects`` (open connections lost); ``authorizations`` (every accepted authorize)
        and ``reauthorizations`` (on an open connection); ``idle_reauthorizations`` (commands
        that waited for one after ``reauth_after_idle``) and ``fresh_authorizations`` (authorize
        with a token fetched for it: after an idle time or a reset, docs/protocol.md §9.6);
        ``in_flight`` and ``queued`` now.
        """
        ordered = sorted(self._latencies)
        queued = self._queued()
        return {
            "state": self._state.value,
            "url": self.url,
            "commands": self._commands,
            "sent": self._frames_sent,
            "acks": self._acks,
            "rejections": self._rejections,
            "resends": self._resends,
            "unknown": self._unknown,
            "not_sent": self._not_sent,
            "reconnects": self._reconnects,
            "connect_failures": self._connect_failures,
            "authorizations": self._authorizations,
            "reauthorizations": self._reauthorizations,
            "idle_reauthorizations": self._idle_reauthorizations,
            "fresh_authorizations": self._fresh_authorizations,
            "in_flight": len(self._pending) - queued,
            "queued": queued,
            "late_replies": self._late_replies,
            "bad_frames": self._bad_frames,
            "latency_us": {
                "p50": _percentile(ordered, 0.50),
                "p99": _percentile(ordered, 0.99),
                "samples": len(ordered),
            },
            "last_error": self.last_error,
        }


def _put(fields: dict[str, Any], **optional: Any) -> None:
    """Add the optional fields that are set (unset ones stay UNSET: not sent)."""
    fields.update({name: value for name, value in optional.items() if value is not None})


def _is_delete(pending: _Pending) -> bool:
    return isinstance(pending.command, DeleteMarket | DeleteLimit | DeleteStop | DeleteStopLimit)


def _maybe_executed(pending: _Pending) -> bool:
    """Whether the server may have executed the command (so failing it must say "unknown")."""
    return pending.ambiguous or (pending.sends > 0 and not pending.needs_auth)
