"""The rules of the ``/cws`` command connection, without I/O: exactly once across reconnects.

A :class:`CommandConnection` keeps the table of commands waiting for their reply and decides,
for every event of the connection, what goes out, which token ``authorize`` needs and what a
caller is told. It never touches a socket, a clock or a token source: the caller feeds it what
happened (with ``now``), drains frames with :meth:`~CommandConnection.data_to_send` and acts on
:meth:`~CommandConnection.events_received`.

The rules
---------
* **Authorize first** (docs/protocol.md §6.1). Commands go out only on a connection whose
  ``authorize`` was accepted and is not being renewed after a 401; until then they wait, in
  submission order, and several may be in flight at once, matched by ``requestGuid``.
* **Generations.** Each connection attempt has a number; a command remembers the one it was last
  sent on. When a connection is lost, the commands in flight on it become *ambiguous* (they may
  have executed) and are re-sent, byte for byte with the same guid, after the next ``authorize``:
  ``checkDuplicates`` makes the server execute a guid once (docs/protocol.md §6.1,
  docs/protocol.md §12.11). A command built with ``check_duplicates=False`` is not re-sent: it
  ends as :class:`~alorws.errors.OrderStatusUnknown`.
* **Outcomes.** 200 acknowledges (:class:`CommandAcked`). A refusal is
  :class:`~alorws.errors.OrderRejected`, except for an ambiguous command: a server may refuse a
  duplicate guid (400, docs/protocol.md §5.3, unconfirmed), so that refusal does not prove the
  order was not placed and is :class:`~alorws.errors.OrderStatusUnknown`. A command that waited
  too long (:meth:`~CommandConnection.expire`) is ``TransportTimeout`` if it was never sent, else
  ``OrderStatusUnknown``; giving up or closing likewise says "unknown" for anything that may have
  executed. A reply for no waiting command is late: counted and dropped.
* **401 budget** (docs/protocol.md §12.11: authorization is checked before anything runs). A
  command refused with 401 was not executed: the connection is authorized again (refreshing the
  token if it has not changed) and the command re-sent on it, at most ``auth_retries`` times;
  then :class:`~alorws.errors.TokenRejected`. An ``authorize`` refused with 401 is retried once
  on a new connection with a refreshed token, then the failure is final.
* **Tokens** (docs/protocol.md §2.6, docs/protocol.md §9.6). A new token re-authorizes the open
  connection. A command sent after ``reauth_after_idle`` seconds without one first waits for
  ``authorize`` with a token issued now (an idle connection may have gone stale); so does the
  next connection after one reset under a command in flight.

What the caller must do
-----------------------
After every call below, act on each event of :meth:`~CommandConnection.events_received` and
write every frame of :meth:`~CommandConnection.data_to_send` on the current connection.

``submit(command, frame, now)`` / ``expire(pending, ...)`` / ``discard(pending)``
    A caller sends a command / gives up waiting / stops waiting (after its outcome).
``connecting()``, ``authorize_plan()``, ``authorizing()``, ``opened(token, plan, now)``
    A new connection: open it, get the token the plan names, send ``authorize`` and on its
    200 call ``opened``. On any failure ``open_failed(exc)`` says whether to retry.
``connection_lost(generation)``
    The connection of that generation is gone (opened or not).
``token_rotated(token)``, ``reauthorization(token)``, ``reauthorized(token, plan, now)``
    :class:`ReauthorizeNeeded`: while ``reauthorization(current token)`` returns a plan, get
    its token, send ``authorize`` on the open connection, and on its 200 call ``reauthorized``.
    A refusal: drop the connection (a reconnect follows).
``receive_reply(guid, http_code, message, order_number, now)``
    Every reply read from the connection that is not an ``authorize`` reply.
``give_up(error)`` / ``start_closing()`` then ``close()``
    The reconnects ran out or failed for good / the client closes.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from typing import Final

import msgspec

from ..errors import (
    AlorError,
    AuthError,
    InvalidArgumentError,
    InvalidState,
    OrderRejected,
    OrderStatusUnknown,
    TokenRejected,
    TransportTimeout,
    scrub,
)
from .commands import Command, DeleteLimit, DeleteMarket, DeleteStop, DeleteStopLimit
from .reconnect import Retry


__all__ = [
    "AUTH_RETRIES",
    "DEFAULT_REAUTH_AFTER_IDLE",
    "AuthPlan",
    "CommandAcked",
    "CommandConnection",
    "CommandEvent",
    "CommandFailed",
    "CommandState",
    "ConnectNeeded",
    "PendingCommand",
    "ReauthorizeNeeded",
    "TokenChoice",
    "percentile",
]

log = logging.getLogger("alorws.orders")

#: 401 replies to one command answered by re-authorizing and re-sending, before TokenRejected.
AUTH_RETRIES: Final = 2
#: Default of ``reauth_after_idle``, seconds: well below the ~30 minutes after which an idle
#: ``/cws`` connection is reported to go stale (docs/protocol.md §9.6), however the server counts
#: them.
DEFAULT_REAUTH_AFTER_IDLE: Final = 600.0
#: Round-trip samples kept for latency percentiles.
LATENCY_SAMPLES: Final = 4096

_DELETES: Final = (DeleteMarket, DeleteLimit, DeleteStop, DeleteStopLimit)


class CommandState(enum.StrEnum):
    """Where the command connection is."""

    IDLE = "idle"  # not started yet, or given up (the next command starts it again)
    CONNECTING = "connecting"
    AUTHORIZING = "authorizing"
    OPEN = "open"  # authorized: commands go straight out
    BACKOFF = "backoff"
    CLOSED = "closed"


class TokenChoice(enum.Enum):
    """Which token an ``authorize`` needs."""

    CURRENT = "current"  # the token source's current token
    REFRESH = "refresh"  # a forced refresh: the current one was refused
    FRESH = "fresh"  # one issued now (docs/protocol.md §9.6); the current one if none comes


class AuthPlan(msgspec.Struct, frozen=True, gc=False):
    """What one ``authorize`` is for; hand it back to ``opened``/``reauthorized``.

    Attributes:
        choice: which token to get.
        fresh: it answers a demand for a token issued now (idle time or a reset).
        hold: commands wait for it (a 401, or the idle rule).
    """

    choice: TokenChoice
    fresh: bool = False
    hold: bool = False


# -- events --------------------------------------------------------------------------------------


class CommandAcked(msgspec.Struct, frozen=True, gc=False):
    """The server accepted command ``guid`` (``httpCode`` 200): give its caller the ack."""

    guid: str
    order_number: str
    message: str


class CommandFailed(msgspec.Struct, frozen=True):
    """Command ``guid`` ends with ``error`` (rejected, unknown outcome, not sent, ...)."""

    guid: str
    error: AlorError


class ReauthorizeNeeded(msgspec.Struct, frozen=True, gc=False):
    """Authorize the open connection again (unless that is already under way)."""


class ConnectNeeded(msgspec.Struct, frozen=True, gc=False):
    """A command waits for a connection: start connecting if nothing is."""


CommandEvent = CommandAcked | CommandFailed | ReauthorizeNeeded | ConnectNeeded


class PendingCommand:
    """One command from submission to its outcome (read its fields; never assign them)."""

    __slots__ = (
        "ambiguous",
        "auth_retries",
        "command",
        "frame",
        "guid",
        "needs_auth",
        "sends",
        "sent_at",
        "sent_gen",
    )

    def __init__(self, command: Command, frame: bytes) -> None:
        self.command = command
        self.guid: str = command.guid
        self.frame = frame  # encoded once: a re-send is byte for byte the same command
        self.sends = 0
        self.sent_gen = 0  # the connection it is in flight on (0: none)
        self.sent_at = 0.0
        self.needs_auth = False  # got a 401: not executed, re-send after re-authorizing
        self.auth_retries = 0
        self.ambiguous = False  # a connection dropped while it was in flight

    @property
    def maybe_executed(self) -> bool:
        """Whether the server may have executed it (so failing it must say "unknown")."""
        return self.ambiguous or (self.sends > 0 and not self.needs_auth)

    @property
    def queued(self) -> bool:
        """Waiting to be sent: never sent, or refused with 401 and waiting for ``authorize``."""
        return self.sends == 0 or self.needs_auth


class CommandConnection:
    """The rules of one account's ``/cws`` connection (see the module docstring).

    Args:
        reauth_after_idle: seconds without a command after which the next one first waits for
            ``authorize`` with a token issued now; None turns the rule off.
        auth_retries: 401 replies to one command answered by re-authorizing and re-sending.
    """

    def __init__(
        self,
        *,
        reauth_after_idle: float | None = DEFAULT_REAUTH_AFTER_IDLE,
        auth_retries: int = AUTH_RETRIES,
    ) -> None:
        self._reauth_after_idle = reauth_after_idle
        self._auth_retries = auth_retries
        self._state = CommandState.IDLE
        self._closed = False
        self._gen = 0
        self._pending: dict[str, PendingCommand] = {}  # insertion order = submission order
        self._events: list[CommandEvent] = []
        self._frames: list[bytes] = []
        self._hold = False  # a command got 401, or the idle rule: wait for authorize
        self._authorized: str | None = None  # the token the open connection runs on
        self._rejected = 0  # consecutive 401s to a new connection's authorize
        # When the connection last carried a command, and whether the next authorize needs a
        # token issued now (docs/protocol.md §9.6: after an idle time, or a reset).
        self._last_command = 0.0
        self._want_fresh = False

        # Counters (see OrderClient.stats()).
        self.commands = 0
        self.frames_sent = 0
        self.acks = 0
        self.rejections = 0
        self.resends = 0
        self.unknown = 0
        self.not_sent = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.authorizations = 0
        self.reauthorizations = 0
        self.idle_reauthorizations = 0
        self.fresh_authorizations = 0
        self.late_replies = 0
        #: Round trips of the last acks and refusals, microseconds.
        self.latencies: deque[int] = deque(maxlen=LATENCY_SAMPLES)

    # -- queries -------------------------------------------------------------------------------

    @property
    def state(self) -> CommandState:
        """Where the connection is."""
        return self._state

    @property
    def generation(self) -> int:
        """The current connection attempt's number (0 before the first)."""
        return self._gen

    @property
    def is_ready(self) -> bool:
        """Whether a command submitted now goes straight out."""
        return self._state is CommandState.OPEN and not self._hold

    def idle_since(self) -> float:
        """When the connection last carried a command or opened (the caller's clock), 0 before."""
        return self._last_command

    def queued(self) -> int:
        """Commands waiting to be sent (never sent, or refused with 401 and waiting)."""
        return sum(1 for p in self._pending.values() if p.queued)

    def pending(self) -> int:
        """Commands waiting for their outcome."""
        return len(self._pending)

    def events_received(self) -> list[CommandEvent]:
        """The events produced since the last call, oldest first; act on each in order."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """The command frames to write now on the current connection, in order.

        A frame whose write fails may have reached the server: it counts as in flight, and the
        lost connection makes it ambiguous (re-sent with the same guid). Frames the driver
        surely did not write (the socket was already closed) go back with :meth:`not_written`.
        """
        frames, self._frames = self._frames, []
        return frames

    def not_written(self, frames: list[bytes]) -> None:
        """``frames`` (from :meth:`data_to_send`) were never handed to the socket: their commands
        are not in flight, so losing this connection leaves them unambiguous (not executed)
        and they go out again on the next one."""
        unsent = {id(f) for f in frames}
        for pending in self._pending.values():
            if id(pending.frame) in unsent and pending.sent_gen == self._gen:
                pending.sends -= 1
                pending.sent_gen = 0  # in flight nowhere; ``ambiguous`` keeps an earlier drop
                self.frames_sent -= 1
                if pending.sends:
                    self.resends -= 1

    # -- commands ------------------------------------------------------------------------------

    def submit(self, command: Command, frame: bytes, now: float) -> PendingCommand:
        """Take a command (``frame`` is its encoding) and send it, or keep it until the
        connection is ready.

        Then: write ``data_to_send()`` and act on ``events_received()``
        (:class:`ConnectNeeded`, or :class:`ReauthorizeNeeded` when the idle rule holds it).
        Wait for its outcome event; call :meth:`expire` if it takes too long and
        :meth:`discard` once done.

        Raises:
            InvalidArgumentError: a command with this guid is already waiting.
            InvalidState: the connection was closed.
        """
        if self._closed:
            raise InvalidState("the OrderClient is closed; create a new one")
        guid = command.guid
        if guid in self._pending:
            raise InvalidArgumentError(
                "guid", f"{guid!r} is already in flight; await that command instead"
            )
        pending = self._pending[guid] = PendingCommand(command, frame)
        self.commands += 1
        if self.is_ready:
            idle = self._reauth_after_idle
            if idle is not None and now - self._last_command > idle:
                # docs/protocol.md §9.6: the server may hold this idle connection stale; only an
                # authorize with a token issued now clears it. The command waits for it.
                self.idle_reauthorizations += 1
                self._want_fresh = True
                self._hold = True
                self._events.append(ReauthorizeNeeded())
            else:
                self._transmit(pending, now)
        else:
            self._events.append(ConnectNeeded())
        return pending

    def expire(self, pending: PendingCommand, waited: float, detail: str) -> AlorError:
        """Its caller waited ``waited`` seconds without an outcome: the error to raise.

        ``TransportTimeout`` (not executed) if it was never sent, else ``OrderStatusUnknown``.
        ``detail`` says why it was not sent (e.g. the last connection error). Forgets it.
        """
        self.discard(pending)
        if not pending.maybe_executed:
            self.not_sent += 1
            return TransportTimeout(
                f"order command {pending.guid!r} was not executed: no authorized /cws "
                f"connection within {waited} s ({detail})"
            )
        self.unknown += 1
        return OrderStatusUnknown(
            pending.guid, f"no reply within {waited} s after {pending.sends} send(s)"
        )

    def discard(self, pending: PendingCommand) -> None:
        """Forget ``pending`` if it still waits (its caller went away); a reply is then late."""
        if self._pending.get(pending.guid) is pending:
            del self._pending[pending.guid]

    # -- replies -------------------------------------------------------------------------------

    def receive_reply(
        self, guid: str, http_code: int, message: str, order_number: str | None, now: float
    ) -> None:
        """Feed one reply to a command (docs/protocol.md §5). Never raises.

        Then: act on ``events_received()`` (an outcome, or :class:`ReauthorizeNeeded` after a
        401).
        """
        pending = self._pending.get(guid)
        if pending is None:
            # The caller timed out or went away; or a reply to another client's command.
            self.late_replies += 1
            log.debug("cws: reply %d to unknown or abandoned command %s", http_code, scrub(guid))
            return
        self.latencies.append(round((now - pending.sent_at) * 1_000_000))
        if http_code == 200:
            self.acks += 1
            number = order_number
            if number is None:
                # docs/protocol.md §5 documents orderNumber on every order reply; a delete names
                # the order anyway.
                command = pending.command
                number = getattr(command, "order_id", "") if isinstance(command, _DELETES) else ""
            self._resolve(pending, CommandAcked(guid, number, message))
        elif http_code == 401 and pending.auth_retries < self._auth_retries:
            # docs/protocol.md §12.11: authorization is checked before anything runs: not
            # executed, safe to re-send once authorized again.
            pending.auth_retries += 1
            pending.needs_auth = True
            log.info("cws: command %s got 401; re-authorizing and re-sending", guid)
            self._hold = True
            self._events.append(ReauthorizeNeeded())
        elif pending.ambiguous:
            # An earlier send was in flight when a connection dropped, so it may have executed.
            # The simulator replays the first reply to a duplicate guid (docs/protocol.md §12.11),
            # but a real server may refuse the duplicate instead (400, docs/protocol.md §5.3;
            # unconfirmed): this refusal does not prove it was not placed.
            self.unknown += 1
            self._resolve(
                pending,
                CommandFailed(
                    guid,
                    OrderStatusUnknown(
                        guid,
                        f"the server answered {http_code} {message!r} to a re-send after a "
                        "reconnect; an earlier send may have executed (a server may refuse a "
                        "duplicate guid)",
                    ),
                ),
            )
        else:
            self.rejections += 1
            error: AlorError = (
                TokenRejected(http_code, message, guid)
                if http_code == 401
                else OrderRejected(http_code, message, guid)
            )
            self._resolve(pending, CommandFailed(guid, error))

    # -- the connection's life -----------------------------------------------------------------

    def connecting(self) -> int:
        """A new connection attempt starts; returns its generation number."""
        self._gen += 1
        self._state = CommandState.CONNECTING
        return self._gen

    def authorize_plan(self) -> AuthPlan:
        """Which token the new connection's ``authorize`` needs.

        A forced refresh after a refused ``authorize`` (docs/protocol.md §2.6); a token issued
        now after a reset under a command (docs/protocol.md §9.6); else the current one.
        """
        if self._rejected:
            choice = TokenChoice.REFRESH
        elif self._want_fresh:
            choice = TokenChoice.FRESH
        else:
            choice = TokenChoice.CURRENT
        return AuthPlan(choice, fresh=self._want_fresh)

    def authorizing(self) -> None:
        """The WebSocket is open; ``authorize`` goes out next."""
        self._state = CommandState.AUTHORIZING

    def opened(self, token: str, plan: AuthPlan, now: float) -> None:
        """``authorize`` with ``token`` (as ``plan`` asked) was accepted: the connection is open.

        Every command not in flight on it goes out, in submission order. Then: write
        ``data_to_send()``, and call :meth:`token_rotated` with the source's current token (it
        may have changed meanwhile).
        """
        self._rejected = 0
        self._authorized = token
        self.authorizations += 1
        if plan.fresh:
            self._want_fresh = False
            self.fresh_authorizations += 1
        self._state = CommandState.OPEN
        self._last_command = now  # a new connection is not idle
        self._flush(now)

    def open_failed(self, error: Exception) -> Retry:
        """Connecting or authorizing failed with ``error``: retry later, now, or never.

        A refused ``authorize`` (401) is retried at once with a refreshed token, once; a
        second refusal, or no token at all (``AuthError``, ``InvalidState``), is final: call
        :meth:`give_up` with it. Anything else waits for the backoff.
        """
        if isinstance(error, TokenRejected):
            self._rejected += 1
            return Retry.NEVER if self._rejected > 1 else Retry.NOW
        if isinstance(error, AuthError | InvalidState):
            return Retry.NEVER
        self.connect_failures += 1
        return Retry.LATER

    def connection_lost(self, generation: int) -> None:
        """The connection of ``generation`` is gone (it may never have opened).

        Commands in flight on it become ambiguous and are re-sent after the next ``authorize``
        (which will use a token issued now); those with ``checkDuplicates`` off fail as unknown.
        Then: act on ``events_received()``.
        """
        current = generation == self._gen
        if current:
            if self._state is CommandState.OPEN and not self._closed:
                self.reconnects += 1
            self._hold = False
            self._authorized = None
            if not self._closed:
                self._state = CommandState.BACKOFF
        for pending in list(self._pending.values()):
            if pending.sent_gen != generation or pending.needs_auth:
                continue  # queued, or refused with 401 (not executed): just send it again
            # docs/protocol.md §9.6: a connection reset under a command may have gone stale;
            # only a token issued now clears that, on the next connection too.
            self._want_fresh = True
            pending.ambiguous = True  # it may have executed: a re-send must be deduplicated
            if not pending.command.check_duplicates:
                self.unknown += 1
                self._resolve(
                    pending,
                    CommandFailed(
                        pending.guid,
                        OrderStatusUnknown(
                            pending.guid,
                            "the connection dropped before the reply and the command has "
                            "checkDuplicates off, so re-sending it could execute it twice",
                        ),
                    ),
                )

    def give_up(self, error: AlorError) -> None:
        """Stop connecting: every waiting command fails, with ``error`` if it was surely not
        executed, else as unknown. The next :meth:`submit` starts over."""
        self._rejected = 0
        if not self._closed:
            self._state = CommandState.IDLE
        for pending in list(self._pending.values()):
            if pending.maybe_executed:
                self.unknown += 1
                self._resolve(
                    pending,
                    CommandFailed(pending.guid, OrderStatusUnknown(pending.guid, str(error))),
                )
            else:
                self._resolve(pending, CommandFailed(pending.guid, error))

    def stopped(self) -> None:
        """The connect loop ended (given up); a new command starts it again."""
        if not self._closed:
            self._state = CommandState.IDLE

    def start_closing(self) -> None:
        """The client is closing: no more commands, and a lost connection is not a reconnect.

        Then close the connection, and call :meth:`close`.
        """
        self._closed = True

    def close(self) -> None:
        """Closed: every waiting command fails (unknown if it may have executed, else
        ``InvalidState``). Then: act on ``events_received()``."""
        self._closed = True
        self._state = CommandState.CLOSED
        for pending in list(self._pending.values()):
            if pending.maybe_executed:
                self.unknown += 1
                error: AlorError = OrderStatusUnknown(
                    pending.guid, "the OrderClient was closed before the reply"
                )
            else:
                error = InvalidState("the OrderClient was closed before the command was sent")
            self._resolve(pending, CommandFailed(pending.guid, error))

    # -- re-authorization on the open connection -------------------------------------------------

    def token_rotated(self, token: str | None) -> None:
        """The token source's current token is ``token``: re-authorize if the open connection
        runs on another one (docs/protocol.md §2.6). Then: act on ``events_received()``."""
        if token is not None and self._state is CommandState.OPEN and token != self._authorized:
            self._events.append(ReauthorizeNeeded())

    def reauthorization(self, token: str) -> AuthPlan | None:
        """What the open connection needs, ``token`` being the source's current one.

        None: it is up to date (or not open), stop. Otherwise get the plan's token (for
        :attr:`TokenChoice.CURRENT`, ``token`` itself), send ``authorize`` and on its 200 call
        :meth:`reauthorized`; then ask again.
        """
        if self._state is not CommandState.OPEN:
            return None
        hold, fresh = self._hold, self._want_fresh
        if fresh:
            return AuthPlan(TokenChoice.FRESH, fresh=True, hold=hold)
        if token == self._authorized:
            if not hold:
                return None
            # A command got 401 on this very token: the server thinks it expired.
            return AuthPlan(TokenChoice.REFRESH, hold=True)
        return AuthPlan(TokenChoice.CURRENT, hold=hold)

    def reauthorized(self, token: str, plan: AuthPlan, now: float) -> None:
        """``authorize`` with ``token`` on the open connection was accepted.

        Commands held for it go out. Then: write ``data_to_send()``.
        """
        self._authorized = token
        self.authorizations += 1
        self.reauthorizations += 1
        if plan.fresh:
            self._want_fresh = False
            self.fresh_authorizations += 1
        if plan.hold:
            self._hold = False
            self._flush(now)

    # -- internals -----------------------------------------------------------------------------

    def _transmit(self, pending: PendingCommand, now: float) -> None:
        if pending.sends:
            self.resends += 1
            log.info("cws: re-sending command %s (send #%d)", pending.guid, pending.sends + 1)
        pending.sends += 1
        pending.sent_gen = self._gen
        pending.needs_auth = False
        pending.sent_at = now
        self._last_command = now
        self.frames_sent += 1
        self._frames.append(pending.frame)

    def _flush(self, now: float) -> None:
        """Send every command not in flight on the current connection, in submission order."""
        for pending in list(self._pending.values()):
            if not self.is_ready:
                return
            if pending.sent_gen == self._gen and not pending.needs_auth:
                continue  # in flight here already
            self._transmit(pending, now)

    def _resolve(self, pending: PendingCommand, event: CommandAcked | CommandFailed) -> None:
        self.discard(pending)
        self._events.append(event)


def percentile(ordered: list[int], q: float) -> int | None:
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
