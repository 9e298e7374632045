"""Replaying recordings that hold hostile frames.

Each example writes a recording with the recorder's own writer
(:class:`alorws.record._writer.Partitions`: the recorder's classification, partitioning and
Parquet files) of a quotes and an orders subscription: their confirmations, generated hostile
frames (structured: real payloads with wrong types, bad enum values, number edges, keys
removed or added, deep nesting, odd unicode; byte-level: random bytes, cut short, overwritten,
inserted) between good frames with markers, and replays it through :class:`Replay`.

Invariants: no exception escapes a consumer; every good frame arrives, in order; each
recorded frame of a subscription that does not decode is counted once (the stream's
``bad_payloads``, or ``Replay.bad_frames`` for a recorded frame nothing can route); the streams
end when the recording does.

Bounded examples in the suite; ``ALORWS_FUZZ_EXAMPLES=5000`` runs more (see
``tests/_hostile.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

from alorws.errors import FrameError, InvalidArgumentError
from alorws.protocol.account import Order
from alorws.protocol.codec import DataMessage, decoder_for, frame_decoder_for, route
from alorws.protocol.enums import Exchange, Format
from alorws.protocol.market import Quote
from alorws.protocol.requests import OrdersRequest, QuotesRequest, SubscriptionRequest
from alorws.record import Replay
from alorws.record._writer import Partitions, Sub, WriterConfig, classify

from .._hostile import (
    SECRETS,
    deep,
    echoed_token,
    fuzz_settings,
    good,
    hostile,
    marker_of,
)


GUIDS = {"quotes": "rec-quotes-1", "orders": "rec-orders-1"}
PORTFOLIO = "D12345"
REQUESTS: dict[str, SubscriptionRequest] = {
    "quotes": QuotesRequest(code="SBER", exchange=Exchange.MOEX, format=Format.SIMPLE),
    "orders": OrdersRequest(portfolio=PORTFOLIO, exchange=Exchange.MOEX, format=Format.SIMPLE),
}
COUNTS: dict[str, int] = {"examples": 0, "frames": 0, "bad": 0}


def _sub(request: SubscriptionRequest) -> Sub:
    """What the recorder writes for a subscription: opcode and params (as AlorClient.describe)."""
    params = msgspec.to_builtins(request)
    opcode = params.pop("opcode", type(request).opcode)
    return Sub(str(opcode), msgspec.json.encode(params).decode())


def _describe(guid: str) -> Sub | None:
    for kind, g in GUIDS.items():
        if g == guid:
            return _sub(REQUESTS[kind])
    return None


def record(root: Path, frames: list[bytes]) -> None:
    """Write ``frames`` (in order, one microsecond apart) as the recorder would."""
    parts = Partitions(WriterConfig(root=str(root), roll_rows=1_000_000), _describe)
    start = 1_700_000_000_000_000_000
    recv = pa.array([start + 1000 * i for i in range(len(frames))], pa.int64())
    conn = pa.array([1] * len(frames), pa.int32())
    parts.add(recv, conn, pa.array(frames, pa.binary()))
    parts.flush_all()
    parts.close()


def _confirm(guid: str) -> bytes:
    return b'{"requestGuid":"' + guid.encode() + b'","httpCode":200,"message":"Handled"}'


def expected_bad(frame: bytes, kind: str) -> int:
    """1 if ``frame``, recorded for the ``kind`` subscription, must be counted as bad.

    Only rows the recorder attributed to the subscription are replayed: junk (a frame no
    subscription explains) was a bad frame of the live connection, and is not replayed."""
    guids, kinds = classify(pa.array([frame], pa.binary()))
    if guids[0].as_py() != GUIDS[kind] or kinds[0].as_py() != "data":
        return 0
    model_cls = _MODELS[kind]
    try:
        msg = route(frame)
    except FrameError:
        try:  # the replay hands a data frame the router refuses to the stream whole
            frame_decoder_for(model_cls, Format.SIMPLE).decode(frame)
        except Exception:
            return 1
        return 0
    if not isinstance(msg, DataMessage):
        return 0
    try:
        decoder_for(model_cls, Format.SIMPLE).decode(msg.data)
    except Exception:
        return 1
    return 0


_MODELS: dict[str, type[Any]] = {"quotes": Quote, "orders": Order}


async def replay(root: Path) -> tuple[dict[str, list[int]], dict[str, int], int]:
    """Replay ``root``: the markers each stream delivered, its bad payloads, the replay's
    bad frames."""
    got: dict[str, list[int]] = {k: [] for k in GUIDS}
    async with Replay(root) as source:
        streams = {
            "quotes": source.quotes("SBER"),
            "orders": source.orders(PORTFOLIO),
        }

        async def consume(kind: str) -> None:
            async for obj in streams[kind]:
                marker = marker_of(kind, obj)
                if marker:  # 0 marks a damaged copy that still decodes: not a sentinel
                    got[kind].append(marker)

        async with asyncio.timeout(30):
            for stream in streams.values():
                await stream.subscribe()
            await asyncio.gather(*(consume(k) for k in streams))
        bad = {k: s.bad_payloads for k, s in streams.items()}
        return got, bad, source.bad_frames


@fuzz_settings(40)
@given(data=st.data())
def test_hostile_recorded_frames_never_escape_a_replay(data: st.DataObject) -> None:
    """Hostile recorded frames between good ones: every good one is replayed, in order, each
    hostile one that does not decode is counted once, and the streams end cleanly."""
    markers = itertools.count(1)
    frames = [_confirm(GUIDS["quotes"]), _confirm(GUIDS["orders"])]
    want: dict[str, list[int]] = {k: [] for k in GUIDS}
    bad = 0
    for _ in range(data.draw(st.integers(1, 4), label="rounds")):
        kind = data.draw(st.sampled_from(sorted(GUIDS)), label="stream")
        for frame in data.draw(st.lists(hostile(kind, GUIDS[kind]), min_size=1, max_size=3)):
            frames.append(frame)
            bad += expected_bad(frame, kind)
            COUNTS["frames"] += 1
        marker = next(markers)
        frames.append(good(kind, GUIDS[kind], marker))
        want[kind].append(marker)
    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp), frames)
        got, bad_payloads, bad_frames = asyncio.run(replay(Path(tmp)))
    assert got == want
    assert sum(bad_payloads.values()) + bad_frames == bad, frames
    COUNTS["examples"] += 1
    COUNTS["bad"] += bad


def test_a_deeply_nested_recorded_frame_is_skipped(tmp_path: Path) -> None:
    """A recorded quote nested thousands deep (the router refuses it: nested too deep) does
    not end the replay: it is counted and the quote behind it arrives."""
    guid = GUIDS["quotes"]
    record(tmp_path, [_confirm(guid), deep(guid), good("quotes", guid, 1)])

    async def run() -> tuple[list[int], int]:
        async with Replay(tmp_path) as source:
            stream = source.quotes("SBER")
            got = [marker_of("quotes", q) async for q in stream]
            return [m for m in got if m is not None], stream.bad_payloads

    assert asyncio.run(run()) == ([1], 1)


def test_an_unreadable_recorded_request_hides_only_its_frames(tmp_path: Path) -> None:
    """A recording whose index row of one subscription is junk (its params are not a request)
    still opens; that subscription is not offered, the others replay."""
    guid = GUIDS["quotes"]
    record(tmp_path, [_confirm(guid), good("quotes", guid, 1)])
    broken = Sub("OrdersGetAndSubscribeV2", '{"portfolio": 5, "exchange": [1]}')
    parts = Partitions(WriterConfig(root=str(tmp_path)), lambda g: broken)
    parts.add(
        pa.array([1_700_000_000_000_000_000 + 10], pa.int64()),
        pa.array([1], pa.int32()),
        pa.array([good("orders", "rec-orders-9", 2)], pa.binary()),
    )
    parts.flush_all()
    parts.close()

    async def run() -> tuple[list[str], list[int]]:
        async with Replay(tmp_path) as source:
            opcodes = [s.opcode for s in source.subscriptions()]
            got = [marker_of("quotes", q) async for q in source.quotes("SBER")]
            return opcodes, [m for m in got if m is not None]

    assert asyncio.run(run()) == (["QuotesSubscribe"], [1])


def test_bad_stream_options_are_named(tmp_path: Path) -> None:
    """A replay's stream takes the live client's options, checked the same way: a misspelt
    policy or a max_buffer of 0 (once silently the default) raises InvalidArgumentError."""
    guid = GUIDS["quotes"]
    record(tmp_path, [_confirm(guid), good("quotes", guid, 1)])

    async def run() -> None:
        async with Replay(tmp_path) as source:
            with pytest.raises(InvalidArgumentError, match="policy"):
                source.quotes("SBER", policy="lastest")
            for bad in (0, "5", -1):
                with pytest.raises(InvalidArgumentError, match="max_buffer"):
                    source.quotes("SBER", max_buffer=bad)
            got = [marker_of("quotes", q) async for q in source.quotes("SBER", max_buffer=4)]
            assert [m for m in got if m is not None] == [1]

    asyncio.run(run())


def teardown_module() -> None:
    print(f"\nreplay fuzz: {COUNTS}")  # noqa: T201


def test_a_recorded_token_never_reaches_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A recorded frame that echoes a token (cut by the 200-character excerpt) is counted and
    logged without it."""
    guid = GUIDS["quotes"]
    echoed = echoed_token(guid)
    record(tmp_path, [_confirm(guid), echoed, good("quotes", guid, 1)])

    async def run() -> tuple[list[int], int]:
        async with Replay(tmp_path) as source:
            stream = source.quotes("SBER")
            got = [marker_of("quotes", q) async for q in stream]
            return [m for m in got if m], stream.bad_payloads

    with caplog.at_level(logging.WARNING, logger="alorws"):
        assert asyncio.run(run()) == ([1], 1)
    assert any("bad Quote" in r.getMessage() for r in caplog.records)
    for secret in SECRETS:
        assert secret not in caplog.text
