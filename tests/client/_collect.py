"""Helpers of the client tests that read streams against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from alorws.client import LaneEvent, Stream


async def until(condition: Callable[[], bool], what: str = "", limit: float = 10.0) -> None:
    """Wait (bounded) for a condition that nothing signals, such as a stats counter owned by
    the I/O thread; ``what`` names it in the timeout."""
    try:
        async with asyncio.timeout(limit):
            while not condition():  # noqa: ASYNC110 - counters of another thread have no event
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {limit} s: {what or condition}") from None


class Collector:
    """Consumes a stream in a task, keeping items and connection events."""

    def __init__(self, stream: Stream[Any]) -> None:
        self.stream = stream
        self.items: list[Any] = []
        self.events: list[LaneEvent] = []
        self.got = asyncio.Event()
        self.evented = asyncio.Event()
        self.restored = asyncio.Event()
        stream.on_event(self._on_event)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def _on_event(self, event: LaneEvent) -> None:
        self.events.append(event)
        self.evented.set()
        if event.kind == "restored":
            self.restored.set()

    async def _run(self) -> None:
        async for item in self.stream:
            self.items.append(item)
            self.got.set()

    async def next_item(self, wait: float = 10.0) -> Any:
        """Wait for an item that arrives from now on."""
        self.got.clear()
        async with asyncio.timeout(wait):
            await self.got.wait()
        return self.items[-1]

    async def event(self, kind: str, wait: float = 10.0) -> LaneEvent:
        """Wait for the first event of ``kind`` (already received or still to come)."""
        async with asyncio.timeout(wait):
            while True:
                for event in self.events:
                    if event.kind == kind:
                        return event
                self.evented.clear()
                await self.evented.wait()

    def kinds(self) -> list[str]:
        """The kinds of the connection events received so far."""
        return [e.kind for e in self.events]

    async def stop(self) -> None:
        """Cancel the consuming task."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
