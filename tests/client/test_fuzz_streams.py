"""Fuzzing the client's streams with hostile frames sent by the simulator over a real socket.

Every example injects a few generated frames into the ``/ws`` connections of one client (one
simulator and one client for the whole module, so every frame of a run goes down the same
connections) and then a good frame with a fresh marker; the consumer reads until the marker.
Frames are structured (a real Simple payload with fields given wrong types, bad enum values,
number edges such as huge ints, ``1e400``, ``-0``, floats for ints, strings for numbers, keys
removed or added, nesting thousands deep, long and odd unicode strings) or byte-level (random
bytes, frames cut short, bytes flipped, invalid UTF-8 inside a frame that keeps its tail).

The invariants, for quotes, all-trades and orders streams alike:

* no exception escapes the consumer (``get_batch``, ``get`` or ``async for``);
* every frame is accounted for exactly as the router and the decoders classify it: one that
  reaches the stream but does not decode adds 1 to the stream's ``bad_payloads``, one that the
  router refuses adds 1 to its connection's ``bad_frames``, nothing else changes them;
* a good frame after the bad ones still arrives, on a stream that is still open;
* nothing token-shaped reaches the log (some generated values are JWTs).

The suite runs a bounded number of examples (well under 30 s for the module). For a longer
run set ``ALORWS_FUZZ_EXAMPLES``, e.g.
``ALORWS_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/client/test_fuzz_streams.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import given, strategies as st

from alorws.client import AlorClient
from alorws.client.streams import Stream
from alorws.errors import FrameError
from alorws.protocol.codec import DATA_HEAD, DataMessage, frame_decoder_for, frame_tail, route
from alorws.sim.app import Simulator

from .._hostile import SECRETS, LogLines, fuzz_settings, good, hostile, read_until
from .._sim import DAY
from .conftest import FAST


pytestmark = pytest.mark.asyncio(loop_scope="module")

KINDS = ("quotes", "trades", "orders")


@dataclass
class Rig:
    """The module's simulator, client and streams, and what the examples did."""

    sim: Simulator
    client: AlorClient
    streams: dict[str, Stream[Any]]
    log: LogLines
    marker: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("frames", "bad"), 0))

    async def sync(self, style: int = 0) -> None:
        """A good frame on every stream, read until it arrives: everything sent before it on
        every connection has then been counted (and a failed example leaves nothing behind)."""
        markers: dict[str, int] = {}
        for name, s in self.streams.items():
            assert s.guid is not None
            self.marker += 1
            markers[name] = self.marker
            assert self.sim.faults.inject(good(name, s.guid, self.marker), kind="ws") >= 1
        for name, s in self.streams.items():
            await read_until(s, name, markers[name], style)

    def lane_by_id(self, lane_id: int) -> dict[str, Any]:
        return next(x for x in self.client.stats()["lanes"] if x["id"] == lane_id)

    def guids_on(self, stream: Stream[Any]) -> dict[str, Stream[Any]]:
        lane = stream.stats()["lane"]
        return {s.guid: s for s in self.streams.values() if s.stats()["lane"] == lane and s.guid}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig() -> AsyncIterator[Rig]:
    """A quiet simulator (little live data), a client, and its quotes/trades/orders streams."""
    records = LogLines()
    logger = logging.getLogger("alorws")
    logger.addHandler(records)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        async with Simulator(
            port=0, day_order_lifetime=DAY, seed=3, rate=5.0, admin=True, history_days=1
        ) as sim:
            async with AlorClient(
                sim.demo_refresh_token, base_url=sim.url, backoff=FAST, ping_interval=5.0
            ) as client:
                streams: dict[str, Stream[Any]] = {
                    "quotes": client.quotes("SBER", policy="queue"),
                    "trades": client.all_trades("SBER"),
                    "orders": client.orders(client.portfolios[0]),
                }
                await client.subscribe_all(list(streams.values()))
                rig = Rig(sim, client, streams, records)
                yield rig
                for stream in streams.values():
                    assert stream.is_open
                    await stream.aclose()
                print(f"\nclient stream fuzz: {rig.counts}")  # noqa: T201
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)


def expected(frame: bytes, on_lane: dict[str, Stream[Any]]) -> tuple[str, Stream[Any] | None]:
    """What a connection holding the streams ``on_lane`` (by guid) must make of ``frame``:
    ``("bad_frame", None)`` (the connection's), ``("bad_payload", s)`` (stream ``s`` gets it
    and cannot decode it), ``("model", s)`` or ``("other", None)`` (an unknown guid, a status
    reply)."""
    target: Stream[Any] | None = None
    if frame[:9] == DATA_HEAD:  # the reader's fast path: the tail alone decides
        target = next((s for g, s in on_lane.items() if frame.endswith(frame_tail(g))), None)
    if target is None:
        try:
            msg = route(frame)
        except FrameError:
            return "bad_frame", None
        if not isinstance(msg, DataMessage) or msg.guid not in on_lane:
            return "other", None
        target = on_lane[msg.guid]
    try:
        frame_decoder_for(target.model, target.request.format).decode(frame)
    except Exception:
        return "bad_payload", target
    return "model", target


@fuzz_settings(60)
@given(data=st.data())
async def test_hostile_frames_never_escape_a_consumer(rig: Rig, data: st.DataObject) -> None:
    """A few hostile frames, then a good one: the consumer gets the good one; each hostile
    frame is counted where the router and decoders say; no token in the log."""
    kind = data.draw(st.sampled_from(KINDS), label="stream")
    stream = rig.streams[kind]
    assert stream.guid is not None
    frames = data.draw(st.lists(hostile(kind, stream.guid), min_size=1, max_size=4), label="frames")
    # Every connection gets every frame: expect per connection, then wait for all of them.
    lanes = {s.stats()["lane"]: rig.guids_on(s) for s in rig.streams.values()}
    bad_payloads = dict.fromkeys(rig.streams.values(), 0)
    bad_frames = dict.fromkeys(lanes, 0)
    for lane, on_lane in lanes.items():
        for frame in frames:
            outcome, target = expected(frame, on_lane)
            if outcome == "bad_frame":
                bad_frames[lane] += 1
            elif outcome == "bad_payload" and target is not None:
                bad_payloads[target] += 1
    await rig.sync()
    streams_before = {s: s.bad_payloads for s in rig.streams.values()}
    lanes_before = {lane: rig.lane_by_id(lane)["bad_frames"] for lane in lanes}
    lines_before = len(rig.log.lines)
    for frame in frames:
        assert rig.sim.faults.inject(frame, kind="ws") >= 1
    await rig.sync(data.draw(st.integers(0, 2), label="style"))  # the good frames behind them
    for s, n in bad_payloads.items():
        assert s.is_open
        assert s.bad_payloads - streams_before[s] == n, (s.name, frames)
    for lane, n in bad_frames.items():
        assert rig.lane_by_id(lane)["bad_frames"] - lanes_before[lane] == n, (lane, frames)
    rig.counts["frames"] += len(frames)
    rig.counts["bad"] += sum(bad_payloads.values()) + sum(bad_frames.values())
    for line in rig.log.lines[lines_before:]:
        assert not any(secret in line for secret in SECRETS)
