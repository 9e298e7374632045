"""Run ``alorws demo`` and keep what its streams received live (a helper process for a test).

    python -m tests.record.demo_run OUT_DIR SECONDS

Runs :func:`alorws._demo.run` unchanged (simulator, subscriptions, the order placed, modified
and cancelled, the connection drop and restore, the recording to ``OUT_DIR/rec``), with one
observer: before the demo's streams subscribe, it opens a lossless twin of each (same request,
``policy="queue"``). The client de-duplicates a twin and its demo stream onto one subscription,
and the twin subscribes first, so it receives every data frame the subscription delivers, as a
live strategy would. What each twin received (typed models, in order) and the connection
events it saw are pickled to ``OUT_DIR/live.pickle`` with the requests (``meta``).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import sys
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console

from alorws import _demo
from alorws.client import AlorClient, Stream


def comparable(model: Any) -> tuple[str, Any]:
    """A model as plain data that pickles: its class name and every field."""
    return type(model).__qualname__, msgspec.to_builtins(model)


def _twin(client: AlorClient, name: str, stream: Stream[Any]) -> Stream[Any]:
    """A lossless stream with the same request as the demo's stream ``name``."""
    twin = client.stream(stream.request, policy="queue")
    assert twin.request == stream.request, (name, twin.request, stream.request)
    return twin


def main(out: Path, seconds: float) -> int:
    live: dict[str, list[Any]] = {}
    events: dict[str, list[str]] = {}
    meta: dict[str, Any] = {}
    tasks: list[asyncio.Task[None]] = []

    async def collect(name: str, stream: Stream[Any]) -> None:
        async for item in stream:  # ends when the stream closes (the demo's stack closes it)
            live[name].append(comparable(item))

    async def observe(
        client: AlorClient, wanted: dict[str, Stream[Any]], stack: contextlib.AsyncExitStack
    ) -> None:
        async def finish() -> None:  # after the twins closed: let the collectors drain
            await asyncio.gather(*tasks)

        stack.push_async_callback(finish)
        twins = {name: _twin(client, name, stream) for name, stream in wanted.items()}
        for name, twin in twins.items():
            await stack.enter_async_context(twin)
            live[name], events[name] = [], []
            twin.on_event(lambda event, name=name: events[name].append(event.kind))
            tasks.append(asyncio.create_task(collect(name, twin)))
        meta["requests"] = {name: stream.request for name, stream in wanted.items()}
        meta["portfolio"] = wanted["orders"].request.portfolio  # type: ignore[attr-defined]

    with (out / "demo.log").open("w") as log:
        console = Console(file=log, markup=False, highlight=False, emoji=False, width=120)
        code = _demo.run(seconds, out / "rec", console, observe=observe)
    with (out / "live.pickle").open("wb") as f:
        pickle.dump({"live": live, "events": events, "meta": meta}, f)
    return code


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), float(sys.argv[2])))
