"""The lifecycle states of the client's long-lived objects, as enums.

:class:`Lifecycle` is shared by the objects that are started and closed (``AlorClient``,
``Portfolio``, ``Recorder``, ``Replay``, the I/O runtime); each goes through the states in order
and names the ones it uses in its docstring. :class:`StreamState` is a subscription stream's.

Both are ``StrEnum``: a state compares equal to its value (``Lifecycle.OPEN == "open"``), and
``stats()`` shows the value, as it did when states were plain strings.
"""

from __future__ import annotations

import enum


__all__ = ["Lifecycle", "StreamState"]


class Lifecycle(enum.StrEnum):
    """Where a started-and-closed object is in its life: ``new -> starting -> open -> closing ->
    closed``. ``closed`` is final: a failed start ends there too, and nothing reopens."""

    #: Created; nothing started yet.
    NEW = "new"
    #: ``start()`` (or ``open()``) is running.
    STARTING = "starting"
    #: Usable.
    OPEN = "open"
    #: ``aclose()`` is running.
    CLOSING = "closing"
    #: Closed, or failed to start.
    CLOSED = "closed"


class StreamState(enum.StrEnum):
    """A subscription stream's state: ``new -> subscribing -> open -> closed``."""

    #: Created by a stream method; not subscribed yet (``await`` it or enter it).
    NEW = "new"
    #: The subscribe request is out; waiting for the confirmation.
    SUBSCRIBING = "subscribing"
    #: Confirmed: messages flow (across reconnects) until the stream is closed.
    OPEN = "open"
    #: Unsubscribed, refused, or ended with its source (final).
    CLOSED = "closed"
