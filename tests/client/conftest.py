"""Fixtures for the client tests: a simulator on a free loopback port and a connected client."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from alorws.client import AlorClient, _ws, lane
from alorws.protocol.backoff import Backoff
from alorws.protocol.codec import TailTable
from alorws.sim.app import Simulator

from .._sim import DAY


#: Reconnect quickly in tests (full jitter below 50 ms), never give up.
FAST = Backoff(base=0.01, cap=0.05)


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    """Switch threads after every few bytecodes, so that a producer thread's steps land between
    the consumer's (races between them interleave within a short test)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with a lively market and the fault API."""
    async with Simulator(
        port=0, day_order_lifetime=DAY, seed=7, rate=50.0, admin=True, history_days=1
    ) as s:
        yield s


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[AlorClient]:
    """A started client for the simulator's demo account."""
    async with AlorClient(
        sim.demo_refresh_token, base_url=sim.url, backoff=FAST, ping_interval=1.0, ping_timeout=1.0
    ) as c:
        yield c


@pytest.fixture(params=["python", "compiled"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Lanes read with the pure-Python reader, then (a second run) with the compiled one,
    skipped when it is not in use; request it before ``client`` (``usefixtures``)."""
    if request.param == "compiled":
        if not _ws.COMPILED:
            pytest.skip("the compiled reader is not in use (not built, or ALORWS_PURE_PYTHON=1)")
        from alorws.client import _speedups

        make: Any = _ws._compiled_batch_listener
        listener_type: type = _speedups.BatchReader
        dispatch: Any = _speedups.dispatch
    else:
        make = listener_type = _ws.BatchListener
        dispatch = TailTable.dispatch
    made: list[Any] = []

    def factory(*args: Any, **kwargs: Any) -> Any:
        listener = make(*args, **kwargs)
        made.append(listener)
        return listener

    monkeypatch.setattr(lane, "BATCH_LISTENER", factory)
    monkeypatch.setattr(lane, "dispatch_frames", dispatch)
    yield request.param
    assert made, "no lane connected"
    assert all(type(listener) is listener_type for listener in made)
