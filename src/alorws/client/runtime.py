"""Where the network I/O runs: a dedicated thread with its own event loop, by default.

ALOR drops a connection that has more than 5000 unread messages (docs/protocol.md §7). If the reader
shared the consumer's event loop, a consumer that blocks that loop for a few seconds (a slow model
fit, a synchronous database call) would stop the reader and get the session killed. So readers,
writers and timers of every connection run in :class:`IORuntime`'s own thread and loop; consumers
only touch thread-safe buffers (:mod:`alorws.client.buffer`) and call into the I/O loop through
:meth:`IORuntime.call`.

``IORuntime(threaded=False)`` runs everything in the caller's loop instead (simpler to debug,
one thread less; the blocked-consumer guarantee is then gone).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..errors import InvalidState
from ..lifecycle import Lifecycle


__all__ = ["IORuntime"]

T = TypeVar("T")


def loop_thread(
    name: str,
) -> tuple[concurrent.futures.Future[asyncio.AbstractEventLoop], threading.Thread]:
    """Start a daemon thread ``name`` that runs a new event loop until it is stopped, then shuts
    its async generators down and closes it; the future gets the loop once it runs."""
    ready: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        ready.set_result(loop)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return ready, thread


class IORuntime:
    """Runs the client's network coroutines on a dedicated event loop thread.

    Its lifecycle (:class:`~alorws.lifecycle.Lifecycle`): ``new -> starting -> open ->
    closing -> closed`` (``closing`` while :meth:`stop` runs the shutdown coroutine).
    """

    def __init__(self, *, threaded: bool = True, name: str = "alorws-io") -> None:
        self.threaded = threaded
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._state = Lifecycle.NEW

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The I/O event loop (the caller's own loop when not threaded)."""
        if self._loop is None:
            raise InvalidState(
                "the I/O runtime is not started; use the client as a context manager"
            )
        return self._loop

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run (the I/O loop exists; it may be stopped since)."""
        return self._loop is not None

    def in_io_thread(self) -> bool:
        """True when called from the I/O loop's thread."""
        if self._loop is None:
            return False
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    async def start(self) -> None:
        """Start the I/O thread and its loop; returns once the loop runs."""
        if self._state is not Lifecycle.NEW:
            raise InvalidState("the I/O runtime was already started")
        self._state = Lifecycle.STARTING
        if not self.threaded:
            self._loop = asyncio.get_running_loop()
            self._state = Lifecycle.OPEN
            return
        ready, self._thread = loop_thread(self._name)
        self._loop = await asyncio.wrap_future(ready)
        self._state = Lifecycle.OPEN

    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(*args)`` in the I/O loop and await its result from the caller's loop.

        Cancelling the caller cancels the coroutine in the I/O loop too.
        """
        loop = self.loop
        if not self.threaded or self.in_io_thread():
            return await fn(*args)
        if self._state is Lifecycle.CLOSED:
            raise InvalidState("the I/O runtime is stopped")
        fut = asyncio.run_coroutine_threadsafe(fn(*args), loop)
        return await asyncio.wrap_future(fut)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Schedule a plain callback in the I/O loop from any thread."""
        loop = self.loop
        if not self.threaded or self.in_io_thread():
            loop.call_soon(fn, *args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    async def stop(self, shutdown: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Run ``shutdown()`` in the I/O loop, cancel what is left there, stop the thread."""
        if self._loop is None or self._state in (Lifecycle.CLOSING, Lifecycle.CLOSED):
            return
        self._state = Lifecycle.CLOSING
        try:
            if shutdown is not None:
                await self.call(shutdown)
        except BaseException:
            self._state = Lifecycle.OPEN  # the loop still runs: stop() may be called again
            raise
        self._state = Lifecycle.CLOSED
        if not self.threaded:
            return
        loop = self._loop

        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks(loop) if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(cancel_rest(), loop))
        loop.call_soon_threadsafe(loop.stop)
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 10.0)
