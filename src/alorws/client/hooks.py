"""Connection hooks: ``on_connect``, ``on_disconnect`` and ``on_restore``.

Every connection of a client (each ``/ws`` lane, the ``/cws`` order connection) reports when it
opens, when it is lost and when its subscriptions were re-sent after a loss. A client passes
each report to the hooks registered for its kind as a :class:`ConnectionEvent`:

* :class:`~alorws.client.AlorClient` calls them in the event loop it was started in (the
  consumer's), never in the I/O thread: a hook may touch the application's state freely, and a
  coroutine function may be a hook too (it runs as a task of that loop);
* ``alorws.Client`` calls them in a worker thread of its own, one at a time, in order.

A hook that raises is logged (``alorws.hooks``) and the connection goes on; so is a coroutine
hook that fails. Hooks run after the fact: the connection does not wait for them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Final

import msgspec

from ..errors import InvalidArgumentError


__all__ = ["CONNECTION_EVENTS", "ConnectionEvent", "ConnectionHooks", "Hook"]

log = logging.getLogger("alorws.hooks")

#: The kinds of :class:`ConnectionEvent`, by the registration method that takes them.
CONNECTION_EVENTS: Final = ("connect", "disconnect", "restore")


class ConnectionEvent(msgspec.Struct, frozen=True):
    """What a connection hook is told.

    Attributes:
        kind: ``"connect"`` (a connection is open: the first one and every reconnect),
            ``"disconnect"`` (it was lost; the client reconnects) or ``"restore"`` (after a
            loss, a new connection re-sent what the old one carried).
        connection: ``"market"`` or ``"account"`` (a ``/ws`` lane), ``"orders"`` (``/cws``).
        lane: the lane's id (as in ``client.stats()["lanes"]``); 0 for ``/cws``.
        reason: ``disconnect``: why (the close code and reason, or what the client saw).
        downtime: ``restore``: seconds since the connection was lost.
        restored: ``restore``: subscriptions re-sent (``/ws``), or order commands waiting for
            their reply that go out again (``/cws``).
    """

    kind: str
    connection: str
    lane: int
    reason: str = ""
    downtime: float = 0.0
    restored: int = 0


#: A connection hook: called with each event of its kind; what it returns is ignored (an
#: awaitable returned to ``AlorClient`` is run as a task).
Hook = Callable[[ConnectionEvent], object]


class ConnectionHooks:
    """The registration methods of connection hooks, and their dispatch.

    A client calls :meth:`_init_hooks` once, passes :meth:`_emit_connection` to its connections
    (any thread may call it) and implements :meth:`_deliver`, which hands a batch of hooks and
    the event to wherever the hooks run."""

    _hooks: dict[str, list[Hook]]

    def _init_hooks(self) -> None:
        self._hooks = {kind: [] for kind in CONNECTION_EVENTS}

    def on_connect(self, hook: Hook) -> Callable[[], None]:
        """Call ``hook(event)`` whenever a connection opens (the first time and after every
        loss); returns a function that removes it. See :mod:`alorws.client.hooks`."""
        return self._add_hook("connect", hook)

    def on_disconnect(self, hook: Hook) -> Callable[[], None]:
        """Call ``hook(event)`` whenever a connection is lost (``event.reason`` says why; the
        client reconnects by itself); returns a function that removes it."""
        return self._add_hook("disconnect", hook)

    def on_restore(self, hook: Hook) -> Callable[[], None]:
        """Call ``hook(event)`` when a connection lost earlier is back and has re-sent its
        subscriptions (``event.restored`` of them, ``event.downtime`` seconds after the loss);
        returns a function that removes it."""
        return self._add_hook("restore", hook)

    def _add_hook(self, kind: str, hook: Hook) -> Callable[[], None]:
        if not callable(hook):
            raise InvalidArgumentError("hook", f"expected a callable, got {type(hook).__name__}")
        hooks = self._hooks[kind]
        hooks.append(hook)

        def remove() -> None:
            if hook in hooks:
                hooks.remove(hook)

        return remove

    def _emit_connection(self, event: ConnectionEvent) -> None:
        """A connection reports ``event`` (any thread; never raises)."""
        hooks = self._hooks.get(event.kind)
        if hooks:
            self._deliver(list(hooks), event)

    def _deliver(self, hooks: list[Hook], event: ConnectionEvent) -> None:
        """Run ``hooks`` with ``event`` where this client runs its hooks."""
        raise NotImplementedError


def run_hooks(hooks: list[Hook], event: ConnectionEvent) -> None:
    """Call each hook with ``event``, logging what raises; an awaitable a hook returns runs as
    a task of the running loop (its failure logged too) or, without one, is closed unrun."""
    for hook in hooks:
        try:
            result = hook(event)
        except Exception:
            log.exception("%s hook %r failed", event.kind, hook)
            continue
        if inspect.isawaitable(result):
            _schedule(result, hook, event)


def _schedule(awaitable: Any, hook: Hook, event: ConnectionEvent) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        log.error("%s hook %r returned an awaitable outside an event loop", event.kind, hook)
        if inspect.iscoroutine(awaitable):
            awaitable.close()
        return

    async def run() -> None:
        await awaitable

    def done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("%s hook %r failed", event.kind, hook, exc_info=exc)

    task = loop.create_task(run(), name=f"alorws-{event.kind}-hook")
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    task.add_done_callback(done)


#: Running coroutine hooks (the loop keeps only weak references to tasks).
_TASKS: set[asyncio.Task[None]] = set()
