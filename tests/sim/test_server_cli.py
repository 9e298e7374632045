"""`alorws sim` as a process (start-up output, SIGINT, bad flags), and TLS."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys

import aiohttp
import pytest

from alorws.sim.app import Simulator

from .._sim import DAY
from .conftest import new_guid, request
from .wsclient import RawWS


async def _read_lines(proc: asyncio.subprocess.Process, keys: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    assert proc.stdout is not None
    async with asyncio.timeout(10):
        while not keys <= set(found):
            line = (await proc.stdout.readline()).decode()
            assert line, "the simulator exited early"
            key, _, value = line.strip().partition(": ")
            found[key] = value
    return found


async def test_cli_starts_prints_and_stops_on_ctrl_c() -> None:
    """`python -m alorws.sim` prints `url:` and `refresh_token:`, serves, and stops
    cleanly on SIGINT."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alorws.sim",
        "--port",
        "0",
        "--seed",
        "7",
        "--max-connections",
        "2",
        "--token-lifetime",
        "60",
        "--account",
        "alice:alice-refresh:2",
        "--admin",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = await _read_lines(proc, {"url", "refresh_token", "account"})
        url = lines["url"]
        assert url.startswith("http://127.0.0.1:")
        login, refresh, *portfolios = lines["account"].split()
        assert (login, refresh) == ("alice", "alice-refresh") and len(portfolios) == 6
        async with aiohttp.ClientSession(base_url=url) as http:
            resp = await http.post("/refresh", params={"token": lines["refresh_token"]})
            jwt = (await resp.json())["AccessToken"]
            assert (await http.get("/sim/stats")).status == 200
        async with await RawWS.connect(url.replace("http", "ws") + "/ws") as ws:
            reply = await ws.request(request("QuotesSubscribe", jwt, code="SBER"))
            assert reply["httpCode"] == 200
            proc.send_signal(signal.SIGINT)
            assert await ws.wait_closed() == 1001  # going away
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_tls_serves_https_and_wss() -> None:
    """--tls: a self-signed certificate for 127.0.0.1/localhost; https and wss work with it."""
    async with Simulator(port=0, day_order_lifetime=DAY, tls=True, history_days=1) as sim:
        assert sim.url.startswith("https://") and sim.cert_path is not None
        context = ssl.create_default_context(cafile=sim.cert_path)
        async with aiohttp.ClientSession(
            base_url=sim.url, connector=aiohttp.TCPConnector(ssl=context)
        ) as http:
            assert (await http.get("/md/v2/time")).status == 200
        ws = await RawWS.connect(sim.ws_url, ssl=context)
        async with ws:
            token = sim.access_token()
            req = request("AllTradesGetAndSubscribe", token, code="SBER", depth=5)
            assert (await ws.request(req))["httpCode"] == 200
            assert len(await ws.data(req["guid"], 5)) == 5
            assert (await ws.request({"opcode": "ping", "guid": new_guid()}))["httpCode"] == 200


def test_cli_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown flags are an argparse error."""
    from alorws.sim.app import main

    with pytest.raises(SystemExit):
        main(["--no-such-flag"])
    assert "usage" in capsys.readouterr().err
