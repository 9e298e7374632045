"""The reader's fast path and its fall-backs, over a real socket: frames of every shape a
server might send reach the stream exactly as route() would classify them."""

from __future__ import annotations

import asyncio

import pytest

from alorws.client import AlorClient
from alorws.client.buffer import Policy
from alorws.errors import InvalidState
from alorws.protocol.codec import decode_payload
from alorws.protocol.enums import Format
from alorws.protocol.market import Quote
from alorws.sim.app import Simulator


# Every test runs with both readers: the pure-Python one and the compiled one.
pytestmark = pytest.mark.usefixtures("reader")


def _lane_stats(client: AlorClient, guid: str | None) -> dict[str, int]:
    stream = next(s for s in client.stats()["streams"] if s["guid"] == guid)
    lane = next(x for x in client.stats()["lanes"] if x["id"] == stream["lane"])
    return {"bad_frames": lane["bad_frames"], "unrouted": lane["unrouted"]}


async def test_frames_of_every_shape_are_routed_like_route_says(
    client: AlorClient, sim: Simulator
) -> None:
    """Compact frames take the fast path; other key orders, whitespace, frames too short to
    tell from control frames, ``data: null``, corrupt payloads and unknown guids are handled
    exactly as the full router classifies them; nothing is lost, nothing reaches the wrong
    stream, and the order of delivery is the order of arrival."""
    async with client.quotes("SBER", policy=Policy.QUEUE) as quotes:
        guid = quotes.guid
        assert guid is not None
        before = _lane_stats(client, guid)
        pad = ',"description":"' + "x" * 150 + '"'  # makes a frame longer than 125 bytes
        templates = [
            # the server's own shape: compact, guid last (the fast path)
            '{"data":{"symbol":"INJ1"@P},"guid":"@G"}',
            # guid first (route() path)
            '{"guid":"@G","data":{"symbol":"INJ2"@P}}',
            # whitespace after the separators
            '{"data": {"symbol": "INJ3"@P}, "guid": "@G"}',
            # under 126 bytes: could be a control frame by size, so the type is checked
            '{"data":{"symbol":"INJ4"},"guid":"@G"}',
            # data null: not a data message (docs/protocol.md §3.4), a bad frame of the lane
            '{"data":null,"guid":"@G"}',
            # the right tail, a corrupt payload: a bad payload of the stream, stream goes on
            '{"data":{"symbol":INJ5@P},"guid":"@G"}',
            # a guid nobody holds: unrouted
            '{"data":{"symbol":"INJ6"@P},"guid":"not-@G"}',
            # a tail that ends with our guid but is not the top-level key
            '{"data":{"symbol":"INJ7","x":{"guid":"@G"}}}',
            '{"data":{"symbol":"INJ9"@P},"guid":"@G"}',
        ]
        frames = [t.replace("@P", pad).replace("@G", guid) for t in templates]
        for frame in frames:
            assert sim.faults.inject(frame, kind="ws") >= 1
        seen: list[str] = []
        async with asyncio.timeout(10):
            while "INJ9" not in seen:
                for q in await quotes.get_batch(100):
                    assert isinstance(q, Quote)
                    if q.symbol.startswith("INJ"):
                        seen.append(q.symbol)
        assert seen == ["INJ1", "INJ2", "INJ3", "INJ4", "INJ9"]
        assert quotes.stats()["bad_payloads"] == 1
        after = _lane_stats(client, guid)
        assert after["bad_frames"] - before["bad_frames"] >= 1  # data null (+INJ7: no guid)
        assert after["unrouted"] - before["unrouted"] >= 1


async def test_deduplicated_streams_both_get_fast_path_frames(client: AlorClient) -> None:
    """Two consumers of one server subscription both receive every frame (fan-out), and
    after one leaves, the other still does (the fast-path table follows the sinks)."""
    a = client.quotes("GAZP", policy=Policy.QUEUE)
    async with client.quotes("GAZP", policy=Policy.QUEUE) as b:
        await a.subscribe()
        assert a.guid == b.guid
        qa = await asyncio.wait_for(a.get(), 10)
        qb = await asyncio.wait_for(b.get(), 10)
        assert qa.symbol == qb.symbol == "GAZP"
        await a.aclose()
        pushed = b.stats()["pushed"]
        async with asyncio.timeout(10):
            while b.stats()["pushed"] == pushed:  # noqa: ASYNC110 - polling a counter
                await asyncio.sleep(0.01)
        assert (await asyncio.wait_for(b.get(), 10)).symbol == "GAZP"


async def test_payloads_pass_through_undecoded(client: AlorClient) -> None:
    """get_payloads() gives each message's data JSON as sent, which decodes to what get()
    gives; an account stream refuses (it must be decoded to be made whole)."""
    async with client.quotes("SBER", policy=Policy.QUEUE) as quotes:
        async with asyncio.timeout(10):
            payloads = [p for p in await quotes.get_payloads(10) if isinstance(p, bytes)]
            while not payloads:
                payloads = [p for p in await quotes.get_payloads(10) if isinstance(p, bytes)]
        q = decode_payload(payloads[0], Quote, Format.SIMPLE)
        assert q.symbol == "SBER"
        assert not payloads[0].startswith(b'{"data"')
    async with client.orders(client.portfolios[0]) as orders:
        with pytest.raises(InvalidState, match="undecoded"):
            await orders.get_payloads()
