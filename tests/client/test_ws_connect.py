"""Opening connections: a caller that gives up mid-handshake leaves no socket open; the shared
reconnect iterator follows its policy."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
from typing import Any

import picows
import pytest

from alorws.client._ws import FrameListener, reconnecting, send_or_drop, settle, ws_connect
from alorws.client.lane import Lane, LaneKind, LaneState
from alorws.errors import ConnectError, TokenRejected
from alorws.protocol.backoff import NO_DELAY
from alorws.protocol.reconnect import ReconnectPolicy, Retry
from alorws.protocol.registry import SubscriptionRegistry


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


class Flaky:
    """A connect callable that fails as told, then returns numbered connections."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return self.calls


async def test_reconnecting_retries_failures_and_reconnects_after_each_close() -> None:
    """Failed attempts are retried by the policy; each opened connection is yielded once the
    previous one is done with; the iteration ends when the backoff runs out."""
    connect = Flaky(ConnectError("refused"), None, OSError("reset"), None)
    seen: list[Exception] = []

    def process(exc: Exception) -> Retry:
        seen.append(exc)
        return Retry.LATER

    policy = ReconnectPolicy(dataclasses.replace(NO_DELAY, max_attempts=3))
    async with asyncio.timeout(10):
        got = [conn async for conn in reconnecting(connect, policy, process)]
    # Attempt 1 fails, 2 opens, 3 fails, 4 opens; after it closes the three delays are used up.
    assert got == [2, 4]
    assert [type(e) for e in seen] == [ConnectError, OSError]
    assert connect.calls == 4


async def test_reconnecting_retries_at_once_or_gives_up_as_told() -> None:
    """Retry.NOW uses no delay of the budget; Retry.NEVER re-raises the failure."""
    refused = TokenRejected(401, "expired")
    connect = Flaky(refused, refused)
    verdicts = iter([Retry.NOW, Retry.NEVER])
    policy = ReconnectPolicy(dataclasses.replace(NO_DELAY, max_attempts=0))
    with pytest.raises(TokenRejected):
        async with asyncio.timeout(10):
            async for _ in reconnecting(connect, policy, lambda exc: next(verdicts)):
                pass
    assert connect.calls == 2


async def test_an_attempt_given_up_on_never_reaches_its_owner() -> None:
    """A caller that gave up on an attempt which connects later hears nothing of it: a lane
    shares its callbacks between attempts, and a late connect (or its forced disconnect) would
    otherwise pass for its live connection."""
    requested = asyncio.Event()
    answer = asyncio.Event()
    closed = asyncio.Event()

    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        requested.set()
        await answer.wait()
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        payload = b'{"data":{},"guid":"g"}' * 10
        writer.write(bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload)
        while await reader.read(1024):
            pass
        closed.set()
        writer.close()

    heard: list[str] = []
    server = await asyncio.start_server(late, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    attempts: set[asyncio.Task[Any]] = set()
    try:
        task = asyncio.create_task(
            ws_connect(
                lambda: FrameListener(
                    lambda payload: heard.append("frame"),
                    lambda: heard.append("disconnected"),
                    on_close=lambda code, reason: heard.append("close"),
                    on_connected=lambda transport: heard.append("connected"),
                ),
                f"ws://127.0.0.1:{port}/ws",
                ssl_context=None,
                step_timeout=5.0,
                attempts=attempts,
            )
        )
        async with asyncio.timeout(10):
            await requested.wait()
        pending = set(attempts)
        task.cancel()  # the owner gives up, as a lane's step timeout does
        with contextlib.suppress(asyncio.CancelledError):
            await task
        answer.set()  # ... and the attempt connects after all
        await settle(attempts, 5.0)
        (attempt,) = pending
        transport, _ = attempt.result()
        async with asyncio.timeout(10):
            await closed.wait()  # the late success was disconnected
            await transport.wait_disconnected()
        assert heard == []
    finally:
        server.close()
        await server.wait_closed()


class DeadTransport:
    """A transport whose socket died under it: every send raises."""

    def __init__(self) -> None:
        self.disconnected = 0

    def send(self, kind: Any, frame: bytes) -> None:
        raise ConnectionResetError("the socket is gone")

    def disconnect(self, graceful: bool = True) -> None:
        self.disconnected += 1


async def test_a_failed_write_drops_the_connection() -> None:
    """A lane whose write fails disconnects its transport (as the order client does): the rules
    assume a failed write is followed by the connection's loss, which restores what the rest of
    the burst did not write."""
    dead = DeadTransport()
    assert not send_or_drop(dead, b"{}")  # type: ignore[arg-type]
    assert dead.disconnected == 1
    lane = Lane(1, LaneKind.MARKET, "ws://127.0.0.1:1/ws", SubscriptionRegistry(), token, token)
    lane._transport = dead = DeadTransport()  # type: ignore[assignment]
    lane.state = LaneState.OPEN
    assert not lane._send(b"{}")
    assert dead.disconnected == 1


async def token() -> str:
    return "unused"
