"""Subscription registry: which server subscriptions exist, where they live, and in which state.

A pure state machine (no I/O, no clock, no asyncio) owned by one client for one account. It
never sends anything itself: each call returns what the caller must send, and the caller feeds
back what the server answered.

The model
---------
A *request* is an immutable, hashable value (a frozen request Struct, without the token). Equal
requests are the same server subscription: the first :meth:`~SubscriptionRegistry.subscribe`
creates a :class:`Subscription` with a fresh guid, later ones only add a reference to it
(de-duplication, as the official UI does, docs/protocol.md §9.1). The last
:meth:`~SubscriptionRegistry.unsubscribe` cancels it on the server. A subscription lives on one
connection; when that connection is lost it waits in ``RESTORING`` and is re-sent, **with its
original guid** (docs/protocol.md §9.5), on a new one.

What the caller must do after each call
---------------------------------------
``subscribe(request, connection_id) -> SubscribeResult``
    If ``result.send``: send ``request`` on that connection with ``guid=result.subscription.guid``
    and the current token (docs/protocol.md §3.2). Otherwise send nothing: the subscription already
    exists or is being set up; it may live on another connection
    (``result.subscription.connection_id``).
``on_status(request_guid, http_code, message) -> StatusOutcome``
    Call it for every status reply (docs/protocol.md §3.3) read from a ``/ws`` connection, then act
    on ``outcome.kind``: ``CONFIRMED`` (live), ``REJECTED`` (tell every holder ``outcome.error``;
    each holder then calls ``unsubscribe`` to release it, which sends nothing), ``CLOSED`` (an
    unsubscribe completed), ``UNKNOWN`` (not a subscription of ours: a ping, or a late reply;
    ignore) or ``IGNORED`` (a reply the subscription's state does not expect; log it).
``unsubscribe(guid) -> bool``
    If True, send ``{"opcode": "unsubscribe", "guid": guid, "token": ...}`` (docs/protocol.md §3.8)
    on ``get(guid).connection_id``. If False, send nothing.
``connection_lost(connection_id) -> list[Subscription]``
    Call it once no more frames will be read from that connection. Its subscriptions now wait in
    ``RESTORING``; once a connection is open again, take ``restore_plan(connection_id)``, and for
    each entry optionally ``move(guid, other_connection)`` (re-sharding), send its request with
    its guid on its connection, and call ``mark_resent(guid)``; or, to re-send them all where
    they are, take ``resend_all(connection_id)`` (the plan, already marked resent) and send each.
``is_routable(guid)``
    For every data message (docs/protocol.md §3.4): deliver it only if True, else drop it (data for
    a cancelled subscription may still be in flight).

Illegal moves (a caller bug, e.g. releasing a subscription twice) raise
:class:`~alorws.errors.InvalidState` and change nothing. Status replies are server input and
never raise. Limits raise :class:`~alorws.errors.SubscriptionLimitError` before anything changes.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

import msgspec

from ..errors import (
    InvalidArgumentError,
    InvalidState,
    ServerRejected,
    SubscriptionLimitError,
    rejection_for,
)


__all__ = [
    "MAX_GUID_LENGTH",
    "MAX_SUBSCRIPTIONS_PER_CONNECTION",
    "GuidFactory",
    "StatusKind",
    "StatusOutcome",
    "SubscribeResult",
    "Subscription",
    "SubscriptionRegistry",
    "SubscriptionState",
]

R = TypeVar("R", bound=Hashable)  # a request: immutable, hashable, equal = same subscription
C = TypeVar("C", bound=Hashable)  # a connection id, chosen by the client (e.g. a lane number)

#: At most 5000 subscriptions per session, read (inferred) as one WebSocket connection
#: (docs/protocol.md §7.1).
MAX_SUBSCRIPTIONS_PER_CONNECTION: Final = 5000
#: rd-hub-go caps guids at 50 characters (unconfirmed, docs/protocol.md §3.2); we stay under it.
MAX_GUID_LENGTH: Final = 50


class SubscriptionState(enum.Enum):
    """Where a subscription is in its life."""

    PENDING = "pending"  # subscribe sent, waiting for its status reply
    ACTIVE = "active"  # confirmed with httpCode 200
    RESTORING = "restoring"  # its connection was lost; to be re-sent with the same guid
    CLOSING = "closing"  # unsubscribe sent, waiting for the reply
    CLOSED = "closed"  # gone; the registry has forgotten it
    FAILED = "failed"  # the server rejected it; it never becomes live again

    # Members are singletons: hash them by identity, in C. The transition table and the state
    # sets look a state up several times per status reply (Enum's own __hash__ is Python code).
    __hash__ = object.__hash__


class _Event(enum.Enum):
    CONFIRM = "a status reply with httpCode 200"
    REJECT = "a status reply with httpCode != 200"
    RELEASE = "unsubscribe"
    LOSE = "connection_lost"
    MOVE = "move"
    RESEND = "mark_resent"

    __hash__ = object.__hash__  # as SubscriptionState's


# ---------------------------------------------------------------------------------------------
# The transition table. Rule 1 (after h11): every state change of a subscription is listed here
# and happens through SubscriptionRegistry._apply(); nothing else assigns a state.
#
# Rule 2: a (state, event) pair missing from the table is illegal. For caller events (RELEASE,
# MOVE, RESEND) that raises InvalidState and changes nothing. For server replies (CONFIRM,
# REJECT) it is reported as StatusKind.IGNORED: remote input never raises. connection_lost()
# applies LOSE only where the table has it.
#
# Rule 3: PENDING, ACTIVE and RESTORING are *live*: refcount >= 1, the one entry for their
# request (the de-dup index), data for them is routable. CLOSING still counts towards the
# connection's limit (the server holds it until it answers), with refcount 0. FAILED holds no
# server resource: it is not counted and leaves the de-dup index (a new subscribe of the same
# request gets a fresh guid), but stays readable until its holders release it. CLOSED entries
# are forgotten.
#
# Rule 4: RELEASE means "the last reference was released"; earlier releases only decrement
# the refcount, but are legal only where RELEASE is. MOVE is the one transition that changes
# the connection instead of the state.
_S = SubscriptionState
_E = _Event
_TRANSITIONS: Final[dict[SubscriptionState, dict[_Event, SubscriptionState]]] = {
    _S.PENDING: {
        _E.CONFIRM: _S.ACTIVE,
        _E.REJECT: _S.FAILED,
        _E.RELEASE: _S.CLOSING,  # send unsubscribe; the subscribe's reply then completes it
        _E.LOSE: _S.RESTORING,
    },
    _S.ACTIVE: {
        _E.RELEASE: _S.CLOSING,  # send unsubscribe
        _E.LOSE: _S.RESTORING,
    },
    _S.RESTORING: {
        _E.RESEND: _S.PENDING,  # re-sent: wait for the reply like a first subscribe
        _E.MOVE: _S.RESTORING,
        _E.RELEASE: _S.CLOSED,  # nothing on the server to cancel
    },
    _S.CLOSING: {
        _E.CONFIRM: _S.CLOSED,
        _E.REJECT: _S.CLOSED,  # the caller may log outcome.error (see on_status)
        _E.LOSE: _S.CLOSED,  # the server forgot it with the connection (docs/protocol.md §9.5)
    },
    _S.FAILED: {
        _E.RELEASE: _S.CLOSED,  # nothing on the server to cancel
    },
    _S.CLOSED: {},
}

_LIVE: Final = frozenset({_S.PENDING, _S.ACTIVE, _S.RESTORING})
_COUNTED: Final = _LIVE | {_S.CLOSING}

_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(n: int) -> str:
    text = _BASE62[n % 62]
    n //= 62
    while n:
        n, rem = divmod(n, 62)
        text = _BASE62[rem] + text
    return text


class GuidFactory:
    """The default guid factory: ``<prefix>-<base-62 counter>``, e.g. ``k3Xq9a-1Z``.

    Guids need not be UUIDs (docs/protocol.md §3.2: the SDK uses ``b1_3F``); short ones keep frames
    small. The counter makes them unique for the factory's lifetime; the prefix (6 random base-62
    characters unless given) tells registries apart in logs and recordings.
    """

    __slots__ = ("_count", "_prefix")

    def __init__(self, prefix: str | None = None) -> None:
        if prefix is None:
            prefix = "".join(secrets.choice(_BASE62) for _ in range(6))
        if not (0 < len(prefix) <= 32 and all(ch in _BASE62 or ch in "_-" for ch in prefix)):
            raise InvalidArgumentError(
                "prefix", f"must be 1-32 characters from [0-9A-Za-z_-], got {prefix!r}"
            )
        self._prefix = prefix
        self._count = 0

    def __call__(self) -> str:
        self._count += 1
        return f"{self._prefix}-{_base62(self._count)}"


class Subscription(Generic[R, C]):
    """One server subscription, as the registry tracks it. Read-only to callers.

    Attributes:
        guid: the subscription's guid; kept across reconnects (docs/protocol.md §9.5).
        request: the request it was created for.
        connection_id: the connection it lives on (or is to be re-sent on, when RESTORING).
        state: a :class:`SubscriptionState`.
        refcount: how many ``subscribe`` calls hold it (0 once CLOSING).
        error: the server's rejection, when FAILED.
        restore_count: how many times it was re-sent after a lost connection.
    """

    __slots__ = (
        "_connection_id",
        "_error",
        "_guid",
        "_refcount",
        "_request",
        "_restore_count",
        "_state",
    )

    def __init__(self, guid: str, request: R, connection_id: C) -> None:
        self._guid = guid
        self._request = request
        self._connection_id = connection_id
        self._state = SubscriptionState.PENDING
        self._refcount = 1
        self._error: ServerRejected | None = None
        self._restore_count = 0

    @property
    def guid(self) -> str:
        return self._guid

    @property
    def request(self) -> R:
        return self._request

    @property
    def connection_id(self) -> C:
        return self._connection_id

    @property
    def state(self) -> SubscriptionState:
        return self._state

    @property
    def refcount(self) -> int:
        return self._refcount

    @property
    def error(self) -> ServerRejected | None:
        return self._error

    @property
    def restore_count(self) -> int:
        return self._restore_count

    @property
    def is_live(self) -> bool:
        """PENDING, ACTIVE or RESTORING: wanted by someone, and (to be) on the server."""
        return self._state in _LIVE

    def __repr__(self) -> str:
        # Only the request's type: a request must never carry a token, but a repr is no place
        # to find out that one did.
        return (
            f"<Subscription {self._guid} {self._state.name} on {self._connection_id!r}"
            f" refcount={self._refcount} request={type(self._request).__name__}>"
        )


class SubscribeResult(msgspec.Struct, Generic[R, C], frozen=True, gc=False):
    """What :meth:`SubscriptionRegistry.subscribe` did.

    ``send`` is True when a new server subscription was created: the caller must send the
    request with ``subscription.guid`` on ``subscription.connection_id``.

    Not tracked by the garbage collector (it only points at a Subscription, which never points
    back): a batch of 50,000 subscribes makes no collections run for these.
    """

    subscription: Subscription[R, C]
    send: bool


class StatusKind(enum.Enum):
    """What a status reply meant to the registry."""

    CONFIRMED = "confirmed"  # PENDING -> ACTIVE
    REJECTED = "rejected"  # PENDING -> FAILED; outcome.error says why
    CLOSED = "closed"  # CLOSING -> CLOSED; outcome.error set if the reply was not 200
    IGNORED = "ignored"  # ours, but not expected in its state; nothing changed
    UNKNOWN = "unknown"  # not a subscription we track (a ping, a late reply)


class StatusOutcome(msgspec.Struct, Generic[R, C], frozen=True):
    """What :meth:`SubscriptionRegistry.on_status` did with one status reply.

    A frozen msgspec Struct rather than a frozen dataclass: one is built per status reply (every
    reply of a restore burst), and a frozen dataclass costs about 1 µs to build.
    """

    kind: StatusKind
    subscription: Subscription[R, C] | None = None
    error: ServerRejected | None = None


class SubscriptionRegistry(Generic[R, C]):
    """The subscriptions of one account, over any number of connections.

    Args:
        max_per_connection: most subscriptions (PENDING, ACTIVE, RESTORING and CLOSING) one
            connection may hold; ALOR allows 5000 (docs/protocol.md §7).
        max_total: optional cap over all connections (None: no cap).
        guid_factory: returns a new guid on each call; it must never repeat one. Defaults to a
            :class:`GuidFactory` with a random prefix.
    """

    def __init__(
        self,
        *,
        max_per_connection: int = MAX_SUBSCRIPTIONS_PER_CONNECTION,
        max_total: int | None = None,
        guid_factory: Callable[[], str] | None = None,
    ) -> None:
        if max_per_connection < 1:
            raise InvalidArgumentError("max_per_connection", "must be at least 1")
        if max_total is not None and max_total < 1:
            raise InvalidArgumentError("max_total", "must be at least 1, or None for no cap")
        self._max_per_connection = max_per_connection
        self._max_total = max_total
        self._guid_factory = guid_factory if guid_factory is not None else GuidFactory()
        # guid -> entry for every entry not CLOSED; dict order is subscribe order, which
        # restore_plan() relies on.
        self._entries: dict[str, Subscription[R, C]] = {}
        # request -> its one live entry (the de-dup index).
        self._live: dict[R, Subscription[R, C]] = {}
        # connection -> number of counted (live or CLOSING) entries; no zero values kept.
        self._counts: dict[C, int] = {}
        self._total = 0

    # -- guids -------------------------------------------------------------------------------

    def new_guid(self) -> str:
        """A fresh guid from the registry's factory, e.g. for an application ping
        (docs/protocol.md §3.7).

        The registry does not track it: a reply to it is reported ``UNKNOWN``.
        """
        factory = self._guid_factory
        guid = factory()
        # Printable ASCII without quotes (docs/protocol.md §3.2), as requests.validate_guid wants
        # for splicing. GuidFactory's guids are so by construction (its prefix is checked, the
        # counter is base 62): a batch of 50,000 subscribes skips the check.
        if type(factory) is not GuidFactory and (
            not isinstance(guid, str)
            or not 0 < len(guid) <= MAX_GUID_LENGTH
            or not (guid.isascii() and guid.isprintable())
            or '"' in guid
            or "\\" in guid
        ):
            raise InvalidArgumentError(
                "guid_factory",
                f"must return 1-{MAX_GUID_LENGTH} printable ASCII characters without quotes or"
                f" backslashes (docs/protocol.md §3.2), got {guid!r}",
            )
        if guid in self._entries:
            raise InvalidArgumentError(
                "guid_factory", f"returned {guid!r}, a guid already in use; guids must be unique"
            )
        return guid

    # -- caller events -----------------------------------------------------------------------

    def subscribe(self, request: R, connection_id: C) -> SubscribeResult[R, C]:
        """Add a reference to the subscription for ``request``, creating it if needed.

        If an equal request is live (PENDING, ACTIVE or RESTORING), wherever it lives, its
        refcount goes up and ``send`` is False. Otherwise a new PENDING entry is created on
        ``connection_id`` with ``send`` True: send the request with its guid.

        Raises:
            SubscriptionLimitError: a new entry would exceed ``max_per_connection`` on that
                connection or ``max_total``. Nothing was created.
        """
        existing = self._live.get(request)
        if existing is not None:
            # docs/protocol.md §9.1: one server subscription per distinct request, shared by its
            # holders. We join it even on another connection: a second copy would double the
            # traffic.
            existing._refcount += 1
            return SubscribeResult(existing, send=False)
        # Limits first, guid second: a refused subscribe leaves no trace, not even a guid.
        self._check_room(connection_id)
        entry = Subscription(self.new_guid(), request, connection_id)
        self._entries[entry.guid] = entry
        self._live[request] = entry
        self._count(connection_id, +1)
        return SubscribeResult(entry, send=True)

    def unsubscribe(self, guid: str) -> bool:
        """Release one reference to the subscription ``guid``.

        Returns True when the last reference went and an ``unsubscribe`` frame
        (docs/protocol.md §3.8) must be sent on ``get(guid).connection_id``; the entry is then
        CLOSING until the reply. Returns False otherwise: other references remain, or the entry was
        RESTORING or FAILED, which close at once because the server holds nothing to cancel.

        Raises:
            InvalidState: unknown guid, or already unsubscribed (CLOSING or CLOSED).
        """
        entry = self._require(guid)
        # Check before decrementing, so an illegal release leaves the refcount untouched.
        self._check(entry, _Event.RELEASE)
        entry._refcount -= 1
        if entry._refcount > 0:
            return False
        return self._apply(entry, _Event.RELEASE) is SubscriptionState.CLOSING

    def connection_lost(self, connection_id: C) -> list[Subscription[R, C]]:
        """Record that ``connection_id`` is gone and its server-side subscriptions with it.

        PENDING and ACTIVE entries on it become RESTORING (they stay on ``connection_id``; see
        :meth:`restore_plan`); CLOSING entries become CLOSED. Call it only once no more frames
        will be read from that connection.

        Returns:
            The entries that became RESTORING now, in subscribe order (to notify holders).
        """
        # docs/protocol.md §9.5: server-side subscriptions do not survive a reconnect, so everything
        # on the connection is gone; the guids are kept for the re-send. Copy: _apply may delete.
        lost = []
        for entry in list(self._entries.values()):
            if entry._connection_id != connection_id:
                continue
            if _Event.LOSE in _TRANSITIONS[entry._state]:
                if self._apply(entry, _Event.LOSE) is SubscriptionState.RESTORING:
                    lost.append(entry)
        return lost

    def restore_plan(self, connection_id: C) -> list[Subscription[R, C]]:
        """The RESTORING entries of ``connection_id`` to re-send, in original subscribe order.

        For each one: optionally :meth:`move` it, send its request with its guid
        (docs/protocol.md §9.5) and the current token, then call :meth:`mark_resent`. The plan is a
        snapshot; entries already marked resent are not in the next one.
        """
        return [
            entry
            for entry in self._entries.values()
            if entry._state is SubscriptionState.RESTORING and entry._connection_id == connection_id
        ]

    def move(self, guid: str, connection_id: C) -> None:
        """Re-shard a RESTORING entry onto ``connection_id`` before re-sending it there.

        Raises:
            InvalidState: unknown guid, or the entry is not RESTORING.
            SubscriptionLimitError: ``connection_id`` is full. Nothing was moved.
        """
        entry = self._require(guid)
        self._check(entry, _Event.MOVE)
        if entry._connection_id == connection_id:
            return
        # The total is unchanged by a move, so only the target connection's limit applies.
        self._check_room(connection_id, total=False)
        self._count(entry._connection_id, -1)
        self._count(connection_id, +1)
        entry._connection_id = connection_id
        self._apply(entry, _Event.MOVE)

    def mark_resent(self, guid: str) -> None:
        """Record that a RESTORING entry was re-sent: it is PENDING again until its reply.

        We move it to PENDING at once (rather than waiting in RESTORING for the reply) so the
        next :meth:`restore_plan` never re-sends it twice, and a second loss of the connection
        before the reply is handled like any other PENDING entry. Bumps ``restore_count``.

        Raises:
            InvalidState: unknown guid, or the entry is not RESTORING.
        """
        entry = self._require(guid)
        self._apply(entry, _Event.RESEND)
        entry._restore_count += 1

    def resend_all(self, connection_id: C) -> list[Subscription[R, C]]:
        """:meth:`restore_plan` with every entry :meth:`mark_resent` at once: for a caller that
        re-sends them all where they are (no :meth:`move`), in one pass.

        Returns the entries, now PENDING, in original subscribe order: send each request with
        its guid (docs/protocol.md §9.5) and the current token.
        """
        plan = [
            entry
            for entry in self._entries.values()
            if entry._state is SubscriptionState.RESTORING and entry._connection_id == connection_id
        ]
        apply, resend = self._apply, _Event.RESEND
        for entry in plan:
            apply(entry, resend)
            entry._restore_count += 1
        return plan

    # -- server events -----------------------------------------------------------------------

    def on_status(
        self, request_guid: str, http_code: int, message: str = ""
    ) -> StatusOutcome[R, C]:
        """Feed one status reply (docs/protocol.md §3.3) and get what it meant. Never raises.

        * PENDING: 200 -> ACTIVE (``CONFIRMED``); else -> FAILED (``REJECTED``, ``error`` from
          :func:`~alorws.errors.rejection_for`: 401 ``TokenRejected``, 429
          ``ServerLimitExceeded``, ...). A FAILED entry stops counting towards the limits.
        * CLOSING: any reply -> CLOSED (``CLOSED``). A PENDING entry unsubscribed before its
          reply gets two replies with the same guid (subscribe, then unsubscribe); the first
          completes it and the second is ``UNKNOWN``. A non-200 reply is in ``error``: the
          server may still be streaming it (e.g. an expired token, 401); its data is dropped
          as unroutable, and the slot is freed in our count, which may then undercount.
        * ACTIVE, RESTORING, FAILED: nothing changes (``IGNORED``). A rejected duplicate leaves
          the existing subscription untouched (docs/protocol.md §12.2).
        * Not tracked (never ours, CLOSED, or a ping guid): ``UNKNOWN``.
        """
        entry = self._entries.get(request_guid)
        if entry is None:
            return StatusOutcome(StatusKind.UNKNOWN)
        # docs/protocol.md §5: only 200 is success; never look at ``message``, it is free text.
        ok = http_code == 200
        event = _Event.CONFIRM if ok else _Event.REJECT
        error = None if ok else rejection_for(http_code, message, request_guid)
        if event not in _TRANSITIONS[entry._state]:
            return StatusOutcome(StatusKind.IGNORED, entry, error)
        new = self._apply(entry, event)
        if new is SubscriptionState.FAILED:
            entry._error = error
            return StatusOutcome(StatusKind.REJECTED, entry, error)
        if new is SubscriptionState.CLOSED:
            return StatusOutcome(StatusKind.CLOSED, entry, error)
        return StatusOutcome(StatusKind.CONFIRMED, entry)

    # -- queries -----------------------------------------------------------------------------

    def get(self, guid: str) -> Subscription[R, C] | None:
        """The entry with this guid, or None if unknown or CLOSED."""
        return self._entries.get(guid)

    def find(self, request: R) -> Subscription[R, C] | None:
        """The live entry for ``request`` (the one ``subscribe`` would share), or None."""
        return self._live.get(request)

    def is_routable(self, guid: str) -> bool:
        """Whether data for ``guid`` should be delivered: True for live entries.

        RESTORING counts as live: data read from a connection before it was lost is genuine.
        Data for CLOSING, FAILED, CLOSED or unknown guids must be dropped (docs/protocol.md §3.4).
        """
        entry = self._entries.get(guid)
        return entry is not None and entry._state in _LIVE

    def subscriptions(self) -> list[Subscription[R, C]]:
        """Every tracked (not CLOSED) entry, in subscribe order."""
        return list(self._entries.values())

    def count(self, connection_id: C) -> int:
        """How many subscriptions ``connection_id`` holds towards ``max_per_connection``."""
        return self._counts.get(connection_id, 0)

    def counts(self) -> dict[C, int]:
        """``count()`` of every connection holding any subscription (a copy)."""
        return dict(self._counts)

    def total(self) -> int:
        """How many subscriptions all connections hold towards ``max_total``."""
        return self._total

    def room(self, connection_id: C) -> int:
        """How many new subscriptions ``connection_id`` can take now (both limits)."""
        free = self._max_per_connection - self.count(connection_id)
        if self._max_total is not None:
            free = min(free, self._max_total - self._total)
        return max(free, 0)

    # -- internals ---------------------------------------------------------------------------

    def _require(self, guid: str) -> Subscription[R, C]:
        entry = self._entries.get(guid)
        if entry is None:
            raise InvalidState(
                f"no subscription with guid {guid!r}: it was never created here or is already"
                " closed; use the guid returned by subscribe(), and unsubscribe it only once"
            )
        return entry

    @staticmethod
    def _check(entry: Subscription[R, C], event: _Event) -> SubscriptionState:
        new = _TRANSITIONS[entry._state].get(event)
        if new is None:
            allowed = sorted(s.name for s, moves in _TRANSITIONS.items() if event in moves)
            raise InvalidState(
                f"cannot {event.value} subscription {entry.guid!r} in state"
                f" {entry._state.name}; allowed only in {', '.join(allowed)}"
            )
        return new

    def _apply(self, entry: Subscription[R, C], event: _Event) -> SubscriptionState:
        # The only place that assigns a state; keeps the indexes and counts in step with it.
        old = entry._state
        new = self._check(entry, event)
        entry._state = new
        if old in _COUNTED and new not in _COUNTED:
            self._count(entry._connection_id, -1)
        if old in _LIVE and new not in _LIVE:
            del self._live[entry._request]
        if new is SubscriptionState.CLOSED:
            del self._entries[entry._guid]
        return new

    def _check_room(self, connection_id: C, *, total: bool = True) -> None:
        n = self.count(connection_id)
        if n >= self._max_per_connection:
            raise SubscriptionLimitError(
                f"connection {connection_id!r} already holds {n} subscriptions, the most"
                f" allowed per connection ({self._max_per_connection}, docs/protocol.md §7);"
                " use another connection (see counts()) or unsubscribe first; nothing was sent"
            )
        if total and self._max_total is not None and self._total >= self._max_total:
            raise SubscriptionLimitError(
                f"{self._total} subscriptions are open, the most allowed in total"
                f" ({self._max_total}); unsubscribe first or raise max_total; nothing was sent"
            )

    def _count(self, connection_id: C, delta: int) -> None:
        n = self._counts.get(connection_id, 0) + delta
        if n:
            self._counts[connection_id] = n
        else:
            del self._counts[connection_id]
        self._total += delta
