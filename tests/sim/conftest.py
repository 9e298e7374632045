"""Fixtures for the simulator tests: a simulator on a free loopback port and raw clients."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from alorws.sim.app import Simulator

from .._sim import DAY
from .wsclient import RawWS


_guids = itertools.count(1)


def new_guid(prefix: str = "g") -> str:
    """A fresh request guid."""
    return f"{prefix}-{next(_guids)}"


def request(opcode: str, token: str, guid: str | None = None, **fields: Any) -> dict[str, Any]:
    """A /ws request frame as a dict."""
    return {"opcode": opcode, "guid": guid or new_guid(opcode[:4]), "token": token, **fields}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with the default limits, admin endpoints on, a lively market."""
    async with Simulator(
        port=0, day_order_lifetime=DAY, seed=1, rate=50.0, admin=True, history_days=1
    ) as s:
        yield s


@pytest.fixture
def token(sim: Simulator) -> str:
    """An access JWT of the demo account."""
    return sim.access_token()


@pytest.fixture
async def ws(sim: Simulator) -> AsyncIterator[RawWS]:
    """A raw /ws connection."""
    client = await RawWS.connect(sim.ws_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def cws(sim: Simulator, token: str) -> AsyncIterator[RawWS]:
    """A raw /cws connection, already authorized as the demo account."""
    client = await RawWS.connect(sim.cws_url)
    try:
        reply = await client.request(
            {"opcode": "authorize", "guid": new_guid("auth"), "token": token}
        )
        assert reply["httpCode"] == 200, reply
        yield client
    finally:
        await client.close()


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session against the simulator's base URL."""
    async with aiohttp.ClientSession(base_url=sim.url) as session:
        yield session


Connect = Callable[..., Awaitable[RawWS]]


@pytest.fixture
async def connect(sim: Simulator) -> AsyncIterator[Connect]:
    """Open more raw connections (``await connect("/cws")``); closed at teardown."""
    opened: list[RawWS] = []

    async def open_(path: str = "/ws", **kwargs: Any) -> RawWS:
        url = sim.url.replace("http", "ws", 1) + path
        client = await RawWS.connect(url, **kwargs)
        opened.append(client)
        return client

    try:
        yield open_
    finally:
        for client in opened:
            await client.close()
