"""60 s of ``alorws demo``, recorded, replay into the same typed streams with identical content.

The recording is made by the real demo (:func:`alorws._demo.run`: the simulator, quotes, a
book, trades and bars, the demo account's streams, an order placed, modified and cancelled, a
connection drop and its restore), for 60 s of wall time, in a helper process
(``tests/record/demo_run.py``) that also keeps what lossless twins of the demo's streams
received live. The ``demo_run`` session fixture (``tests/conftest.py``) starts that process
when the session begins, so the minute passes while the other tests run: this test only waits
for whatever is left of it, then replays and compares (the suite gets ~0 s longer, not 60 s,
unless this test is run alone). The demo's simulator runs at 50 events/s, a few percent of one
CPU, in its own interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import pickle
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from alorws import _demo
from alorws.client import AlorClient, LaneEvent, Stream
from alorws.protocol.enums import OrderStatus
from alorws.record import Replay

from ..conftest import DEMO_TEST, DemoRun
from .conftest import collect
from .demo_run import comparable


#: Frames that were in flight when a live stream unsubscribed at the end are recorded (the
#: recorder closes after the streams) and replayed, but were never delivered live.
TAIL = 5


def _open(replay: Replay, name: str, request: Any) -> Any:
    kind, _, arg = name.partition(" ")
    if kind == "quotes":
        return replay.quotes(arg)
    if kind == "book":
        return replay.order_book(arg, depth=request.depth)
    if kind == "trades":
        return replay.all_trades(arg)
    if kind == "bars":
        return replay.bars(arg, request.tf, from_=request.from_)
    portfolio = request.portfolio
    opener = {
        "orders": replay.orders,
        "positions": replay.positions,
        "summary": replay.summaries,
        "own trades": replay.own_trades,
    }[name]
    return opener(portfolio)


@pytest.mark.timeout(240)
async def test_a_minute_of_the_demo_replays_identically(demo_run: DemoRun | None) -> None:
    assert demo_run is not None  # the session fixture starts it for this test
    try:
        code = await asyncio.to_thread(demo_run.process.wait, demo_run.seconds + 120)
    except subprocess.TimeoutExpired:
        pytest.fail("the demo did not finish in time")
    log = (demo_run.out / "demo.log").read_text(errors="replace")
    stderr = (demo_run.out / "stderr.txt").read_text(errors="replace")
    assert code == 0, f"{log}\n{stderr}"
    for step in ("placed", "modified", "cancelled", "injected a connection drop", "restored after"):
        assert step in log, step
    with (demo_run.out / "live.pickle").open("rb") as f:
        saved = pickle.load(f)
    live: dict[str, list[Any]] = saved["live"]
    requests: dict[str, Any] = saved["meta"]["requests"]

    async with Replay(demo_run.out / "rec") as replay:
        assert replay.duration >= demo_run.seconds - 1.0  # a minute of recording, not of market
        opened = {name: _open(replay, name, requests[name]) for name in requests}
        got: dict[str, list[Any]] = {name: [] for name in opened}
        async with asyncio.TaskGroup() as tg:
            for name, stream in opened.items():
                await stream.subscribe()
                tg.create_task(collect(stream, got[name]))

    assert set(live) == set(got) == set(requests)
    for name, received in live.items():
        assert not any(isinstance(x, LaneEvent) for x in got[name]), name
        replayed = [comparable(model) for model in got[name]]
        assert replayed[: len(received)] == received, name  # model by model, in order
        assert len(replayed) - len(received) <= TAIL, (name, len(replayed), len(received))
    for name in ("quotes SBER", "quotes GAZP", "quotes LKOH", "book SBER", "trades SBER",
                 "trades GAZP", "bars SBER", "orders", "summary"):  # fmt: skip
        assert live[name], f"{name}: nothing received live in a minute"
    assert sum(len(v) for v in live.values()) > 1000
    # The order the demo placed, modified and cancelled, and the restore after the drop, are in
    # the replay as they were live.
    statuses = {order.status for order in got["orders"]}
    assert OrderStatus.CANCELED in statuses and OrderStatus.WORKING in statuses, statuses
    assert "restored" in saved["events"]["orders"]
    assert any(e.kind == "restored" for e in opened["orders"].events)


def test_the_demo_test_name_is_what_the_session_fixture_looks_for() -> None:
    """The fixture starts the demo only for a test of this name: keep them in step."""
    assert DEMO_TEST == test_a_minute_of_the_demo_replays_identically.__name__


@pytest.mark.timeout(60)
def test_the_demo_streams_for_its_duration_however_long_set_up_takes(tmp_path: Path) -> None:
    """The demo's duration is streaming time, counted from when every stream is subscribed: a
    set-up that takes 2 s more (a loaded machine) does not shorten the recording."""

    async def slow_set_up(
        client: AlorClient, streams: dict[str, Stream[Any]], stack: contextlib.AsyncExitStack
    ) -> None:
        await asyncio.sleep(2.0)  # set-up work that takes long, not a synchronisation

    seconds = 3.0
    out = io.StringIO()
    console = Console(file=out, markup=False, highlight=False, emoji=False, width=120)
    assert _demo.run(seconds, tmp_path / "rec", console, observe=slow_set_up) == 0, out.getvalue()

    async def recorded() -> float:
        async with Replay(tmp_path / "rec") as replay:
            return replay.duration

    # The recording runs from the first confirmation to the streams' close: the whole duration.
    assert asyncio.run(recorded()) >= seconds - 0.5
