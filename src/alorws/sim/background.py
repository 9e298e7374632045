"""The simulator in a thread of its own, for code without an event loop of its own to lend it:
a script or notebook using the blocking ``alorws.Client``, a blocking test.

::

    from alorws.sim.background import SimulatorThread

    with SimulatorThread(seed=1) as sim:
        print(sim.url, sim.demo_refresh_token)
        sim.call(sim.simulator.faults.drop)   # anything that must run in the simulator's loop
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, Self, TypeVar

from .app import Simulator


__all__ = ["SimulatorThread"]

T = TypeVar("T")


class SimulatorThread:
    """A :class:`~alorws.sim.app.Simulator` (made with the keyword arguments given) serving
    from a daemon thread's event loop; ``with`` starts and stops it."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        #: The running simulator (touch its state only through :meth:`call`); set by start.
        self.simulator: Simulator | None = None
        #: Its base URL (``http://127.0.0.1:<port>``) and the demo account's refresh token.
        self.url = self.demo_refresh_token = ""

    def start(self, timeout: float = 30.0) -> Self:
        """Start the thread and wait until the simulator listens."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            try:
                async with Simulator(**self._options) as sim:
                    self.simulator, self.url = sim, sim.url
                    self.demo_refresh_token = sim.demo_refresh_token
                    ready.set_result(None)
                    await self._stopped.wait()
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                raise

        def main() -> None:
            try:
                asyncio.run(serve())
            except Exception:
                pass  # reported to start() through `ready`

        self._thread = threading.Thread(target=main, name="alorws-sim", daemon=True)
        self._thread.start()
        ready.result(timeout)
        return self

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
        """``fn(*args)`` run in the simulator's loop; returns its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the simulator thread is not started")

        async def run() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the simulator and its thread (idempotent)."""
        loop, stopped, thread = self._loop, self._stopped, self._thread
        if loop is None or stopped is None or thread is None:
            return
        self._loop = None
        try:
            loop.call_soon_threadsafe(stopped.set)
        except RuntimeError:  # its loop is already gone
            return
        thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
