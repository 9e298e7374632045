"""The rules of one ``/ws`` connection (a lane), without I/O: what to send, when, and what it means.

A :class:`DataConnection` sits between one WebSocket and the shared
:class:`~.registry.SubscriptionRegistry`. It never touches a socket, a clock or a token source:
the caller feeds it what happened (the connection opened or closed, a status reply, a pong, the
time) and drains what to do (frames to send, :class:`events <DataEvent>` to act on). Data frames
never pass through it: the reader delivers them itself and only keeps counters, which the
connection reads at each :meth:`~DataConnection.tick` (docs/protocol.md §3.4).

The rules
---------
* **Restore** (docs/protocol.md §9.5). When a connection opens, every subscription of the lane
  that the registry holds ``RESTORING`` is re-sent with its original guid, in subscribe order,
  followed by the subscriptions requested while the lane was down, pipelined. From the second
  connection on a :class:`Restored` event follows.
* **Subscribes in flight** are at most ``max_in_flight`` (subscribes written and not answered
  yet; a 401 re-send keeps the place of the subscribe it repeats and never waits); the rest
  wait in order and go out as replies come. The window
  keeps each reply burst (a status and the first data message per subscription) within what
  one read takes, so the reader's buffers stay small after a bulk subscribe or a restore,
  while a window far above one round trip's worth of replies keeps the pipe full.
* **401 budget** (docs/protocol.md §2.6). A subscribe refused with 401 while ``PENDING`` was not
  executed: it is re-sent with the same guid on the same connection, at most ``auth_retries``
  times per subscription, and never with the token that was refused (the caller refreshes, see
  :meth:`~DataConnection.token_refused`); a burst of 401s needs one refresh. The next 401 fails
  a subscribe that was never restored (:class:`Failed` with
  :class:`~alorws.errors.TokenRejected`: its caller learns at once that the token is wrong). A
  subscription being restored is live to its consumers: it is never failed for a token that
  expired or could not be fetched under it (expiry, a restart of ALOR's servers); the
  connection closes instead (:class:`Close`) and the next one restores it after the backoff.
  Only a definitive refusal of the refresh token itself (:class:`~alorws.errors.AuthError`
  other than a transport failure) fails it.
* **Ping probing** (docs/protocol.md §3.7, docs/protocol.md §12.3). A connection that read
  nothing for ``ping_interval`` seconds is probed: a WebSocket ping (:class:`SendPing`) and,
  unless the server is known to ignore it, an ``opcode: "ping"`` request matched by its guid. An
  answer to either, or any frame read meanwhile, within ``ping_timeout`` keeps it; otherwise
  :class:`Close`. The connection learns whether the server answers the app ping and stops
  sending it if not.
* **Silence** (docs/protocol.md §9.6). A subscription given a timeout
  (:meth:`~DataConnection.watch`) whose ``received`` counter stayed unchanged for longer than
  the timeout while it was ``ACTIVE`` on a live connection gets :class:`Silent`, then is
  subscribed again on the same connection and with the same guid: ``unsubscribe``, its reply,
  the subscribe again (docs/protocol.md §3.8; a subscribe with a guid still active is refused,
  docs/protocol.md §12.2), then :class:`Resubscribed`. A step refused (one 401 is retried with
  another token) or unanswered within ``step_timeout`` closes the connection (:class:`Close`):
  only a new connection is sure to start empty.

What the caller must do
-----------------------
After every call below, drain :meth:`~DataConnection.events_received` and act on each event, and
when :meth:`~DataConnection.has_data_to_send` is true, get a token and write every frame of
:meth:`~DataConnection.data_to_send`. Then call :meth:`~DataConnection.tick` at
:meth:`~DataConnection.next_tick` (sooner is harmless), and ask ``next_tick()`` again whenever
:attr:`~DataConnection.timer_moved` is set.

``connection_opened(now)``
    The WebSocket is open. Send the restore burst (``data_to_send``) before anything else.
``connection_lost(now, reason)``
    No frame will be read from it any more. Nothing queued is sent; :class:`Disconnected` follows.
``subscribe(subscription)``, ``subscribe_many(subscriptions)``
    New subscriptions of the registry on this lane (one, or a batch in one burst).
``release(guid)`` then ``send_unsubscribe(guid)``
    The last holder of a subscription left.
``receive_status(guid, http_code, message, now)``
    Every status reply read from the connection (docs/protocol.md §3.3).
``receive_pong(now)``
    A WebSocket pong frame arrived.
``tick(now, messages, received)``
    The clock: ``messages`` is how many frames the connection has read in all, ``received(guid)``
    how many data items a subscription's consumers got (None when it has none any more).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

import msgspec

from ..errors import (
    AlorError,
    InvalidArgumentError,
    ServerRejected,
    TokenRejected,
    TransportError,
    TransportTimeout,
)
from .registry import (
    StatusKind,
    StatusOutcome,
    Subscription,
    SubscriptionRegistry,
    SubscriptionState,
)
from .requests import (
    SubscriptionRequest,
    _frame_tail,
    _ping_frame,
    _subscribe_frame,
    _unsubscribe_frame,
)


__all__ = [
    "AUTH_RETRIES",
    "MAX_IN_FLIGHT",
    "Close",
    "Confirmed",
    "DataConnection",
    "DataEvent",
    "Disconnected",
    "Failed",
    "Restored",
    "Resubscribed",
    "SendPing",
    "Silent",
    "Unsubscribed",
]

log = logging.getLogger("alorws.lane")

#: 401 replies to one subscribe answered by re-sending it, before the rejection reaches its
#: holders.
AUTH_RETRIES: Final = 2
#: Subscribes in flight per connection by default. Their replies (a status and a first quote
#: each, about 0.16 MB) fit a few reads, so the reader's buffer stays small; 250 per round trip
#: of 40 ms restores a full connection of 5000 in under a second.
MAX_IN_FLIGHT: Final = 250

_ACTIVE = SubscriptionState.ACTIVE
_PENDING = SubscriptionState.PENDING


# -- events: what the caller must act on ---------------------------------------------------------


class Confirmed(msgspec.Struct, frozen=True, gc=False):
    """The server confirmed subscription ``guid``: wake whoever waits for it."""

    guid: str


class Failed(msgspec.Struct, frozen=True):
    """Subscription ``guid`` is refused for good: close its consumers with ``error``."""

    guid: str
    error: AlorError


class Unsubscribed(msgspec.Struct, frozen=True, gc=False):
    """The server answered the unsubscribe of ``guid``: it is gone."""

    guid: str


class Disconnected(msgspec.Struct, frozen=True, gc=False):
    """The connection is gone (every consumer of the lane): data may be missing from now on."""

    reason: str


class Restored(msgspec.Struct, frozen=True, gc=False):
    """Every subscription of the lane was re-sent on a new connection, ``downtime`` seconds
    after the last one was lost (every consumer of the lane)."""

    downtime: float


class Silent(msgspec.Struct, frozen=True, gc=False):
    """Subscription ``guid`` received nothing for ``silent_for`` seconds; it is being subscribed
    again (its consumers)."""

    guid: str
    silent_for: float


class Resubscribed(msgspec.Struct, frozen=True, gc=False):
    """The server confirmed ``guid`` again after :class:`Silent`; ``downtime`` is seconds since
    its last data (its consumers)."""

    guid: str
    downtime: float


class SendPing(msgspec.Struct, frozen=True, gc=False):
    """Send a WebSocket ping frame now (the connection is being probed)."""


class Close(msgspec.Struct, frozen=True, gc=False):
    """Close the connection (``reason`` says why); then reconnect and restore as after any loss."""

    reason: str


DataEvent = (
    Confirmed | Failed | Unsubscribed | Disconnected | Restored | Silent | Resubscribed | SendPing
) | Close


# -- internal records ----------------------------------------------------------------------------

# What a queued request is for: decides what happens to it when no token can be had.
_NEW, _RETRY, _RESUB, _UNSUB, _PING = range(5)


class _Out(msgspec.Struct, gc=False):
    """A request waiting for :meth:`DataConnection.data_to_send` (encoded there, with the token).

    A Struct: a restore queues thousands at once, and its constructor is C code."""

    why: int
    guid: str
    request: SubscriptionRequest | None  # None: an unsubscribe or a ping
    avoid: str | None = None  # a token refused for it (401): never send it with that one


class _Probe:
    """A ping in flight."""

    __slots__ = ("deadline", "seen", "sent_at")

    def __init__(self, sent_at: float, seen: int, deadline: float) -> None:
        self.sent_at = sent_at
        self.seen = seen  # the frame counter when it was sent
        self.deadline = deadline


class _Resub:
    """A silent subscription being subscribed again: which step awaits its reply."""

    __slots__ = ("deadline", "last_data", "retried", "subscribing", "sub")

    def __init__(
        self, sub: Subscription[SubscriptionRequest, int], deadline: float, last_data: float
    ) -> None:
        self.sub = sub
        self.subscribing = False  # False: the unsubscribe step; True: the subscribe step
        self.retried = False  # this step was already re-sent after a 401
        self.deadline = deadline
        self.last_data = last_data


class DataConnection:
    """The rules of one ``/ws`` connection of a lane (see the module docstring).

    Args:
        connection_id: the lane's id in ``registry`` (its subscriptions' ``connection_id``).
        registry: the account's subscription registry, shared by every lane.
        ping_interval: seconds without any frame read before the connection is probed.
        ping_timeout: seconds a probe may wait for an answer.
        step_timeout: seconds each step of a re-subscription may wait for its reply.
        auth_retries: 401 replies to one subscribe answered by re-sending it.
        max_in_flight: subscribes written and not answered yet, at most.
    """

    def __init__(
        self,
        connection_id: int,
        registry: SubscriptionRegistry[SubscriptionRequest, int],
        *,
        ping_interval: float = 5.0,
        ping_timeout: float = 5.0,
        step_timeout: float = 10.0,
        auth_retries: int = AUTH_RETRIES,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        if max_in_flight < 1:
            raise InvalidArgumentError(
                "max_in_flight", f"must be at least 1, got {max_in_flight!r}"
            )
        self.id = connection_id
        self._registry = registry
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._step_timeout = step_timeout
        self._auth_retries_max = auth_retries
        self._window = max_in_flight

        self._open = False
        self._events: list[DataEvent] = []
        self._out: list[_Out] = []
        # Subscriptions requested while the lane was down: they go out after the restore.
        self._unsent: dict[str, SubscriptionRequest] = {}
        self._auth_retries: dict[str, int] = {}
        # The token each subscribe/unsubscribe in flight carried (a 401 refuses that one).
        self._sent_with: dict[str, str] = {}
        # Subscribes written and not answered yet (the window of ``max_in_flight``), those
        # waiting for room in it (in order), and those of them released meanwhile.
        self._awaiting: set[str] = set()
        self._held: deque[_Out] = deque()
        self._cancelled: set[str] = set()
        self._down_since: float | None = None
        # Ping probing: the frame count at the last look (None: take one at the next tick) and
        # when to look again; the probe in flight; when the last WebSocket pong came.
        self._check_seen: int | None = None
        self._check_at = math.inf
        self._probe: _Probe | None = None
        self._ping_guid: str | None = None
        self._last_pong = -math.inf
        #: Whether the server answers ``opcode: "ping"`` (None: not known yet).
        self.app_ping_works: bool | None = None
        # Silence: guid -> timeout; guid -> (count at the last change, when it changed); when
        # to look next (None: nothing watched or not open); re-subscriptions under way.
        self._watch: dict[str, float] = {}
        self._seen: dict[str, tuple[int, float]] = {}
        self._look_at: float | None = None
        self._resub: dict[str, _Resub] = {}
        #: True when :meth:`next_tick` may have moved earlier since it was last called (an
        #: answered ping, a new watch, a re-subscription step): read it after each call and
        #: ask ``next_tick()`` again if set. ``next_tick()`` clears it.
        self.timer_moved = False

        #: Connections restored after a loss.
        self.reconnects = 0
        #: Silent subscriptions subscribed again, and those attempts that failed.
        self.resubscribes = 0
        self.resubscribe_failures = 0

    # -- queries -------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether a connection is open (between ``connection_opened`` and ``connection_lost``)."""
        return self._open

    @property
    def watched(self) -> int:
        """How many subscriptions have a silence timeout."""
        return len(self._watch)

    def events_received(self) -> list[DataEvent]:
        """The events produced since the last call, oldest first; act on each in order."""
        events, self._events = self._events, []
        return events

    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` has frames: get a token and call it."""
        return bool(self._out) or (bool(self._held) and len(self._awaiting) < self._window)

    def token_refused(self, token: str) -> bool:
        """Whether ``token`` was refused (401) for a request waiting to be sent.

        If True, force a token refresh and pass the new token to :meth:`data_to_send` with
        ``refreshed=True``.
        """
        return any(item.avoid == token for item in self._out)

    def data_to_send(self, token: str, *, refreshed: bool = False) -> list[bytes]:
        """The frames to write now, in order, encoded with ``token``.

        A request re-sent after a 401 stays queued if ``token`` is the one refused, unless
        ``refreshed`` says it is the newest token the caller could get. Write every frame
        returned; a write that fails needs nothing more (``connection_lost`` follows).
        """
        out = self._out
        held = self._held
        room = self._window - len(self._awaiting)
        if out and room > 0:
            # A 401 re-send was in flight before anything held: its place is kept for it.
            room -= sum(1 for item in out if item.why == _RETRY)
        if not out and not (held and room > 0):
            return []
        tail = _frame_tail(token)  # checked and encoded once for the whole burst
        self._out = keep = []
        frames: list[bytes] = []
        sent_with = self._sent_with
        awaiting = self._awaiting
        # First the subscribes the window held back, in order; then the new ones behind them.
        while held and room > 0:
            item = held.popleft()
            if item.guid in self._cancelled:  # released while held: never sent, nothing to undo
                self._cancelled.discard(item.guid)
                continue
            room -= 1
            awaiting.add(item.guid)
            frames.append(_subscribe_frame(item.request, item.guid, tail))  # type: ignore[arg-type]
            sent_with[item.guid] = token
        if not held:
            self._cancelled.clear()
        for item in out:
            guid = item.guid
            if item.avoid is not None and item.avoid == token and not refreshed:
                keep.append(item)
            elif item.why == _NEW:
                if room > 0 and not held:
                    room -= 1
                    awaiting.add(guid)
                    frames.append(_subscribe_frame(item.request, guid, tail))  # type: ignore[arg-type]
                    sent_with[guid] = token
                else:
                    held.append(item)
            elif item.request is not None:  # a 401 re-send (in flight again) or a re-subscribe
                if item.why == _RETRY:
                    awaiting.add(guid)
                frames.append(_subscribe_frame(item.request, guid, tail))
                sent_with[guid] = token
            elif item.why == _PING:
                frames.append(_ping_frame(guid, tail))
            else:
                frames.append(_unsubscribe_frame(guid, tail))
                sent_with[guid] = token
        return frames

    def next_tick(self) -> float | None:
        """When to call :meth:`tick` next (same clock as ``now``), or None: not before another
        call into this object."""
        self.timer_moved = False
        if not self._open:
            return None
        if self._check_seen is None:
            return -math.inf  # a look at the frame counter is due at once
        at = self._probe.deadline if self._probe is not None else self._check_at
        if self._look_at is not None and self._look_at < at:
            at = self._look_at
        for resub in self._resub.values():
            if resub.deadline < at:
                at = resub.deadline
        return at

    # -- the connection's life -----------------------------------------------------------------

    def connection_opened(self, now: float) -> None:
        """A new connection is open: queue the restore burst (see the module docstring).

        Then: write ``data_to_send(token)`` before anything else, then act on
        ``events_received()`` (:class:`Restored` after a loss), then start ticking.
        """
        self._open = True
        registry = self._registry
        out = self._out
        unsent = self._unsent
        # docs/protocol.md §9.5: the server forgot them with the old connection; the same guids
        # keep the consumers' identity. Original subscribe order.
        plan = registry.resend_all(self.id)
        out.extend([_Out(_NEW, sub.guid, sub.request) for sub in plan])
        if unsent:
            for sub in plan:
                unsent.pop(sub.guid, None)
            for guid, request in unsent.items():
                pending = registry.get(guid)
                if pending is not None and pending.state is _PENDING:
                    out.append(_Out(_NEW, guid, request))
            unsent.clear()
        self._check_seen = None
        self._probe = None
        self._seen.clear()
        self._look_at = now + self._look_period() if self._watch else None
        self.timer_moved = True
        if self._down_since is not None:
            self.reconnects += 1
            self._events.append(Restored(now - self._down_since))

    def connection_lost(self, now: float, reason: str) -> None:
        """The connection is gone: no frame will be read from it any more.

        Its subscriptions wait in ``RESTORING`` for the next :meth:`connection_opened`;
        unsubscribes in flight are complete (the server forgot them). Nothing queued is sent.
        Then: act on ``events_received()`` (:class:`Disconnected`).
        """
        self._open = False
        self._out = []
        self._sent_with.clear()
        self._awaiting.clear()
        self._held.clear()  # the restore re-sends them (the registry holds them RESTORING)
        self._cancelled.clear()
        self._probe = None
        self._ping_guid = None
        self._check_seen = None
        self._check_at = math.inf
        self._look_at = None
        self._seen.clear()
        self._resub.clear()  # the restore re-sends them all
        self._registry.connection_lost(self.id)
        self._down_since = now
        self._events.append(Disconnected(reason))

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(self, subscription: Subscription[SubscriptionRequest, int]) -> bool:
        """Send a new subscription of the registry (``send`` was True) on this lane.

        Returns:
            True if it is queued: write ``data_to_send(token)``. False while the connection is
            not open: it goes out after the next restore.
        """
        if self._open:
            self._out.append(_Out(_NEW, subscription.guid, subscription.request))
            return True
        self._unsent[subscription.guid] = subscription.request
        return False

    def subscribe_many(
        self, subscriptions: Iterable[Subscription[SubscriptionRequest, int]]
    ) -> bool:
        """:meth:`subscribe` for a batch, in order: one burst of frames on an open connection.

        They go out through the window of subscribes in flight, like a restore.

        Returns:
            True if they are queued: write ``data_to_send(token)``. False while the connection
            is not open: they go out after the next restore.
        """
        if self._open:
            self._out.extend([_Out(_NEW, sub.guid, sub.request) for sub in subscriptions])
            return True
        self._unsent.update({sub.guid: sub.request for sub in subscriptions})
        return False

    def release(self, guid: str) -> None:
        """The registry released ``guid`` (its last holder left): stop every rule about it.

        Then call :meth:`send_unsubscribe` if the registry asked for an unsubscribe.
        """
        self._unsent.pop(guid, None)
        self._watch.pop(guid, None)
        self._seen.pop(guid, None)
        self._resub.pop(guid, None)
        self._auth_retries.pop(guid, None)
        if self._out:
            self._out = [item for item in self._out if item.guid != guid]
        if self._held:
            self._cancelled.add(guid)

    def send_unsubscribe(self, guid: str) -> bool:
        """Queue ``unsubscribe`` for ``guid`` (docs/protocol.md §3.8).

        Returns:
            True if queued: write ``data_to_send(token)``, then expect :class:`Unsubscribed`
            (or :class:`Disconnected`, which forgets it as well). False if the connection is not
            open: there is nothing to cancel on the server.
        """
        if not self._open:
            return False
        self._out.append(_Out(_UNSUB, guid, None))
        return True

    def watch(self, guid: str, timeout: float, now: float) -> None:
        """Subscribe ``guid`` again when it receives nothing for ``timeout`` seconds while the
        connection lives. Subscriptions shared by several streams keep the shortest timeout.

        Then: call :meth:`tick` by the (possibly earlier) :meth:`next_tick`.

        Raises:
            InvalidArgumentError: ``timeout`` is not a finite number of seconds > 0.
        """
        if not (timeout > 0 and timeout < math.inf):
            raise InvalidArgumentError(
                "silence_timeout", f"must be a finite number of seconds > 0, got {timeout!r}"
            )
        current = self._watch.get(guid)
        self._watch[guid] = timeout if current is None else min(current, timeout)
        if self._open:
            look_at = now + self._look_period()
            if self._look_at is None or look_at < self._look_at:
                self._look_at = look_at
                self.timer_moved = True

    # -- what the server says ------------------------------------------------------------------

    def receive_status(self, guid: str, http_code: int, message: str, now: float) -> None:
        """Feed one status reply (docs/protocol.md §3.3). Never raises.

        Then: act on ``events_received()``, write ``data_to_send`` if any (a re-send), and tick
        by ``next_tick()`` (an answered ping moves it).
        """
        self._awaiting.discard(guid)
        if guid == self._ping_guid:
            if self._probe is not None:
                # docs/protocol.md §3.7: the reply to our ping, matched by requestGuid.
                self._probe = None
                self._check_seen = None  # look again one interval from now
                self.app_ping_works = True
                self.timer_moved = True
            return  # a late answer: that probe was already judged
        resub = self._resub.get(guid)
        if resub is not None:
            self._resub_reply(guid, resub, http_code, message, now)
            return
        if http_code == 200:
            # The common case (every reply of a restore burst), without a helper call.
            outcome = self._registry.on_status(guid, 200, message)
            if outcome.kind is StatusKind.CONFIRMED:
                self._sent_with.pop(guid, None)
                if self._auth_retries:
                    self._auth_retries.pop(guid, None)
                self._events.append(Confirmed(guid))
            elif outcome.kind is not StatusKind.UNKNOWN:
                self._report(guid, 200, message, outcome)
            return
        if http_code == 401:
            sub = self._registry.get(guid)
            retries = self._auth_retries.get(guid, 0)
            if sub is not None and sub.state is _PENDING:
                if retries < self._auth_retries_max:
                    # docs/protocol.md §2.6: the token expired under us; the subscribe was not
                    # executed. Same guid, another token.
                    self._auth_retries[guid] = retries + 1
                    self._out.append(_Out(_RETRY, guid, sub.request, self._sent_with.get(guid)))
                    return
                if sub.restore_count:
                    self._retry_later(guid, f"401 to restoring {guid} with fresh tokens")
                    return
        self._apply_status(guid, http_code, message)

    def _retry_later(self, guid: str, reason: str) -> None:
        """Keep a subscription being restored: close, so the next connection restores it."""
        self._auth_retries.pop(guid, None)
        self._sent_with.pop(guid, None)
        if not any(isinstance(event, Close) for event in self._events):
            self._events.append(Close(f"{reason}; reconnecting"))

    def receive_pong(self, now: float) -> None:
        """A WebSocket pong frame arrived at ``now``."""
        self._last_pong = now

    def token_failed(self, error: AlorError) -> None:
        """No token could be had for what :meth:`has_data_to_send` holds.

        Subscribes re-sent after a 401 fail (:class:`Failed`), unless they are being restored
        and ``error`` may pass (a :class:`~alorws.errors.TransportError`: the auth server could
        not be reached): then the connection closes (:class:`Close`) and the next one restores
        them. A re-subscription step fails as if refused; a ping is dropped (the probe goes on
        with the WebSocket ping). Anything else stays queued for the next :meth:`data_to_send`.
        Then: act on ``events_received()``.
        """
        out, self._out = self._out, []
        transient = isinstance(error, TransportError)
        for item in out:
            if item.why == _RETRY:
                sub = self._registry.get(item.guid)
                if transient and sub is not None and sub.restore_count:
                    self._retry_later(item.guid, f"no token to restore {item.guid} with: {error}")
                    continue
                self._apply_status(
                    item.guid, 401, str(error), TokenRejected(401, str(error), item.guid)
                )
            elif item.why == _RESUB:
                resub = self._resub.get(item.guid)
                if resub is not None:
                    self._resub_failed(item.guid, resub, error)
            elif item.why != _PING:
                self._out.append(item)

    # -- the clock -----------------------------------------------------------------------------

    def tick(self, now: float, messages: int, received: Callable[[str], int | None]) -> None:
        """Let time pass: probe a quiet connection, judge a probe, look for silent subscriptions,
        time out re-subscription steps.

        Args:
            now: the time, on the clock of every other ``now``.
            messages: frames read from this lane so far (any kind; never reset).
            received: a subscription's data items delivered so far, or None if it has no
                consumer any more.

        Then: act on ``events_received()``, write ``data_to_send`` if any, and tick again by
        ``next_tick()``.
        """
        if not self._open:
            return
        self._tick_ping(now, messages)
        if self._look_at is not None and now >= self._look_at:
            self._look(now, received)
            self._look_at = now + self._look_period() if self._watch else None
        for guid, resub in list(self._resub.items()):
            if now >= resub.deadline:
                self._resub_failed(
                    guid, resub, TransportTimeout(f"no reply within {self._step_timeout} s")
                )

    # -- internals -----------------------------------------------------------------------------

    def _apply_status(
        self, guid: str, http_code: int, message: str, error: AlorError | None = None
    ) -> None:
        self._report(
            guid, http_code, message, self._registry.on_status(guid, http_code, message), error
        )

    def _report(
        self,
        guid: str,
        http_code: int,
        message: str,
        outcome: StatusOutcome[SubscriptionRequest, int],
        error: AlorError | None = None,
    ) -> None:
        kind = outcome.kind
        if kind is StatusKind.CONFIRMED:
            self._auth_retries.pop(guid, None)
            self._sent_with.pop(guid, None)
            self._events.append(Confirmed(guid))
        elif kind is StatusKind.REJECTED:
            self._auth_retries.pop(guid, None)
            self._sent_with.pop(guid, None)
            self._events.append(
                Failed(guid, error or outcome.error or ServerRejected(http_code, message, guid))
            )
        elif kind is StatusKind.CLOSED:
            self._sent_with.pop(guid, None)
            self._events.append(Unsubscribed(guid))
        elif kind is StatusKind.IGNORED:
            log.debug("lane %d: status %s for %s ignored", self.id, http_code, guid)

    def _tick_ping(self, now: float, messages: int) -> None:
        if self._check_seen is None:
            self._check_seen = messages
            self._check_at = now + self._ping_interval
            return
        probe = self._probe
        if probe is None:
            if now < self._check_at:
                return
            if messages != self._check_seen:  # frames arrived: alive, look again later
                self._check_seen = messages
                self._check_at = now + self._ping_interval
                return
            # docs/protocol.md §3.7: the UI pings with opcode "ping" and matches the reply by
            # requestGuid; the real server's answer is unverified (docs/protocol.md §12.3), so
            # learn whether it answers, with a WebSocket ping alongside.
            if self.app_ping_works is not False:
                self._ping_guid = self._registry.new_guid()
                self._out.append(_Out(_PING, self._ping_guid, None))
            self._probe = _Probe(now, messages, now + self._ping_timeout)
            self._events.append(SendPing())
            return
        if now < probe.deadline:
            return
        ws_pong = self._last_pong >= probe.sent_at
        if self.app_ping_works is None and ws_pong:
            self.app_ping_works = False  # the server ignores opcode ping: WebSocket pings only
        elif not (self.app_ping_works is False and ws_pong) and messages == probe.seen:
            self._probe = None
            self._check_at = math.inf  # no more probes on this connection
            self._events.append(Close(f"no answer to ping within {self._ping_timeout} s"))
            return
        self._probe = None
        self._check_seen = messages
        self._check_at = now + self._ping_interval

    def _look_period(self) -> float:
        # A few looks per (shortest) timeout; bounded both ways.
        return min(max(min(self._watch.values()) / 4, 0.02), 5.0)

    def _look(self, now: float, received: Callable[[str], int | None]) -> None:
        """One look at every watched subscription's counter (docs/protocol.md §9.6)."""
        seen = self._seen
        for guid, timeout in list(self._watch.items()):
            count = received(guid)
            sub = self._registry.get(guid)
            if count is None or sub is None:
                del self._watch[guid]
                seen.pop(guid, None)
                continue
            last = seen.get(guid)
            if last is None or last[0] != count or sub.state is not _ACTIVE or guid in self._resub:
                # The clock (re)starts: a first look, data, or not live on this connection.
                seen[guid] = (count, now)
            elif now - last[1] > timeout:
                seen[guid] = (count, now)  # the clock restarts with the re-subscription
                self._start_resub(guid, sub, now, now - last[1])
        if len(seen) > len(self._watch):
            for guid in [g for g in seen if g not in self._watch]:
                del seen[guid]

    def resubscribing(self) -> int:
        """Silent subscriptions being subscribed again now."""
        return len(self._resub)

    def _start_resub(
        self, guid: str, sub: Subscription[SubscriptionRequest, int], now: float, silent_for: float
    ) -> None:
        self.resubscribes += 1
        log.info("lane %d: %s silent for %.1f s; subscribing again", self.id, guid, silent_for)
        self._resub[guid] = _Resub(sub, now + self._step_timeout, now - silent_for)
        self._events.append(Silent(guid, silent_for))
        # docs/protocol.md §3.8: unsubscribe first; the same guid cannot be subscribed twice.
        self._out.append(_Out(_RESUB, guid, None))

    def _resub_reply(
        self, guid: str, resub: _Resub, http_code: int, message: str, now: float
    ) -> None:
        if http_code == 200:
            if resub.subscribing:
                del self._resub[guid]
                self._sent_with.pop(guid, None)
                self._events.append(Resubscribed(guid, now - resub.last_data))
                return
            sub = resub.sub
            if self._registry.get(guid) is not sub or sub.state is not _ACTIVE:
                del self._resub[guid]  # released or lost meanwhile: nothing to put back
                return
            resub.subscribing = True
            resub.retried = False
            resub.deadline = now + self._step_timeout
            self.timer_moved = True
            self._out.append(_Out(_RESUB, guid, sub.request))
            return
        if http_code == 401 and not resub.retried:
            resub.retried = True
            resub.deadline = now + self._step_timeout
            self.timer_moved = True
            request = resub.sub.request if resub.subscribing else None
            self._out.append(_Out(_RESUB, guid, request, self._sent_with.get(guid)))
            return
        self._resub_failed(guid, resub, ServerRejected(http_code, message, guid))

    def _resub_failed(self, guid: str, resub: _Resub, error: AlorError) -> None:
        del self._resub[guid]
        self.resubscribe_failures += 1
        sub = resub.sub
        if self._open and self._registry.get(guid) is sub and sub.state is _ACTIVE:
            # The server may still hold a broken subscription under this guid: only a new
            # connection is sure to start empty (docs/protocol.md §3.8).
            self._events.append(Close(f"subscribing {guid} again failed: {error}"))
