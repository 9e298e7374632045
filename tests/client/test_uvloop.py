"""The client under uvloop (the loop the docs recommend for latency): your loop on uvloop, the
client's I/O thread on whatever ``asyncio.new_event_loop()`` gives, or on uvloop too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from alorws.client import AlorClient
from alorws.protocol import Quote
from alorws.sim.app import Simulator

from .._sim import DAY
from .conftest import FAST


uvloop = pytest.importorskip("uvloop")


async def _session() -> tuple[int, int, int]:
    """Subscribe, take 5 quotes and a batch, survive a drop, leave cleanly."""
    async with (
        Simulator(port=0, day_order_lifetime=DAY, seed=3, rate=200.0, history_days=1) as sim,
        AlorClient(sim.demo_refresh_token, base_url=sim.url, backoff=FAST) as client,
        client.quotes("SBER", policy="queue") as quotes,
    ):
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        got = 0
        async with asyncio.timeout(20):
            async for q in quotes:
                assert isinstance(q, Quote)
                got += 1
                if got == 5:
                    break
            reconnects = client.stats()["reconnects"]
            await client.drop_connections()
            while client.stats()["reconnects"] == reconnects:
                await quotes.get_batch()
            batch = await quotes.get_batch()
        return got, len(batch), client.stats()["reconnects"] - reconnects


@pytest.mark.parametrize("io_uvloop", [False, True], ids=["io-asyncio", "io-uvloop"])
def test_streams_work_with_the_consumer_on_uvloop(
    io_uvloop: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typed quotes arrive, a dropped connection is restored, and leaving closes everything
    (warnings are errors here), with the consumer's loop on uvloop and the I/O loop on either."""
    if io_uvloop:
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        monkeypatch.setattr(asyncio, "new_event_loop", factory)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        got, batch, restored = runner.run(_session())
    assert got == 5 and batch >= 1 and restored >= 1
