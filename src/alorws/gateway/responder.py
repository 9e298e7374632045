"""Answering the gateway's NATS requests, and the tasks they run in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from nats.aio.msg import Msg

from ..bus import wire
from ..client._badframes import BadFrameLog
from ..errors import AlorError, FrameError, InvalidArgumentError, scrub


__all__ = ["Handler", "Responder"]

log = logging.getLogger("alorws.gateway")

T = TypeVar("T")

#: A request handler: the request in, the reply's payload out (or an exception to answer).
Handler = Callable[[Msg], Awaitable[bytes]]


class Responder:
    """Runs request handlers while the gateway serves, each request in its own task (a slow
    subscribe never holds up the others); a failure is answered as the wire's ``ErrorReply``
    and counted in ``errors``. The gateway's parts start their background work here too, so
    that stopping serving cancels it all at once, except the closers (closing an upstream
    must finish, or its ALOR subscription would stay open).

    Args:
        counters: the gateway's counters (``errors`` is incremented here).
    """

    def __init__(self, counters: dict[str, int]) -> None:
        self.serving = False
        self._counters = counters
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closers: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._bad_log = BadFrameLog(log, "gateway")

    def callback(self, handler: Handler) -> Callable[[Msg], Awaitable[None]]:
        """A NATS subscription callback answering each request with ``handler``."""

        async def callback(msg: Msg) -> None:
            if self.serving:
                self.spawn(self._answer(msg, handler))

        return callback

    def spawn(self, coro: Awaitable[T], *, closer: bool = False) -> asyncio.Task[T]:
        """Run ``coro`` in a task that :meth:`stop` cancels (or awaits, for a ``closer``)."""
        task: asyncio.Task[T] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if closer:
            self._closers.add(task)
        return task

    async def stop(self) -> list[asyncio.Task[Any]]:
        """Stop answering and cancel every task but the closers, waiting (bounded) for them
        to end; returns the closers still running, for the caller to await."""
        self.serving = False
        closing = [t for t in self._tasks if t in self._closers]
        for task in list(self._tasks):
            if task not in self._closers:
                task.cancel()
        if self._tasks:  # bounded: a task that swallowed its cancellation cannot hold us
            await asyncio.wait(list(self._tasks), timeout=5.0)
        return closing

    def decode(self, data: bytes, cls: type[T]) -> T:
        """A consumer's request, or InvalidArgumentError (answered to it, counted in
        ``errors``, logged rate-limited): any failure to decode is the request's fault."""
        try:
            return msgspec.json.decode(data, type=cls)
        except Exception as exc:  # RecursionError too: never a traceback per bad request
            error = FrameError(f"bad {cls.__name__}: {type(exc).__name__}: {exc}", data)
            self._bad_log.report(error, f"{cls.__name__} {type(exc).__name__}")
            raise InvalidArgumentError("request", scrub(f"bad {cls.__name__}: {exc}")) from None

    async def _answer(self, msg: Msg, handler: Handler) -> None:
        try:
            payload = await handler(msg)
        except Exception as exc:
            self._counters["errors"] += 1
            if not isinstance(exc, AlorError):
                log.exception("gateway: %s failed", msg.subject)
            payload = msgspec.json.encode(wire.ErrorReply(wire.error_info(exc)))
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(payload)
