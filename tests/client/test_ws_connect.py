"""Opening connections: a caller that gives up mid-handshake leaves no socket open."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import picows

from alorws.client._ws import settle, ws_connect


async def test_cancel_during_the_handshake_closes_the_socket() -> None:
    """Cancelled while the server has not answered the upgrade: the socket is closed anyway."""
    accepted = asyncio.Event()
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        while await reader.read(1024):  # never answers the upgrade; waits for EOF
            pass
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    attempts: set[asyncio.Task[Any]] = set()
    try:
        task = asyncio.create_task(
            ws_connect(
                picows.WSListener,
                f"ws://127.0.0.1:{port}/ws",
                ssl_context=None,
                step_timeout=0.3,
                attempts=attempts,
            )
        )
        async with asyncio.timeout(10):
            await accepted.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await settle(attempts, 5.0)
        async with asyncio.timeout(10):
            await closed.wait()
        assert not attempts
    finally:
        server.close()
        await server.wait_closed()
