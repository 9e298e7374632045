"""A minimal raw WebSocket test client on aiohttp (deliberately not the alorws client).

It sends dicts as JSON text frames and hands back decoded JSON objects, so tests see exactly what
the simulator puts on the wire. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import aiohttp


DEFAULT_TIMEOUT = 10.0

Msg = dict[str, Any]


class Closed(Exception):
    """The server closed the connection; ``code`` is its close code (None if none was sent)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


def _small_rcvbuf_factory(size: int) -> Callable[[Any], socket.socket]:
    def factory(addr_info: Any) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return sock

    return factory


class RawWS:
    """One raw WebSocket connection with its own aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.received = 0

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        ssl: Any = None,
    ) -> RawWS:
        """Open ``url``; ``rcvbuf`` shrinks the socket's receive buffer (slow-reader tests)."""
        connector = aiohttp.TCPConnector(
            socket_factory=_small_rcvbuf_factory(rcvbuf) if rcvbuf else None,
            ssl=ssl if ssl is not None else True,
        )
        session = aiohttp.ClientSession(connector=connector)
        try:
            ws = await session.ws_connect(url, headers=headers, autoclose=False, max_msg_size=0)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def send(self, obj: Msg | str | bytes) -> None:
        """Send a dict as JSON, or a str/bytes verbatim (as a text frame)."""
        if isinstance(obj, dict):
            await self.ws.send_str(json.dumps(obj))
        elif isinstance(obj, bytes):
            await self.ws.send_str(obj.decode())
        else:
            await self.ws.send_str(obj)

    async def recv_text(self, within: float = DEFAULT_TIMEOUT) -> str:
        """The next text frame; raises :class:`Closed` on a close."""
        msg = await self.ws.receive(timeout=within)
        if msg.type is aiohttp.WSMsgType.TEXT:
            self.received += 1
            return str(msg.data)
        if msg.type is aiohttp.WSMsgType.CLOSE:
            raise Closed(msg.data, msg.extra or "")
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            raise Closed(self.ws.close_code)
        if msg.type is aiohttp.WSMsgType.ERROR:
            raise Closed(None, str(msg.data))
        raise AssertionError(f"unexpected frame {msg.type}")

    async def recv(self, within: float = DEFAULT_TIMEOUT) -> Msg:
        """The next frame, decoded as a JSON object."""
        result = json.loads(await self.recv_text(within))
        assert isinstance(result, dict), result
        return result

    async def until(
        self, pred: Callable[[Msg], bool], within: float = DEFAULT_TIMEOUT
    ) -> tuple[Msg, list[Msg]]:
        """Read until ``pred`` holds; returns that message and the ones skipped before it."""
        skipped: list[Msg] = []
        async with asyncio.timeout(within):
            while True:
                msg = await self.recv(within)
                if pred(msg):
                    return msg, skipped
                skipped.append(msg)

    async def status(self, guid: str, within: float = DEFAULT_TIMEOUT, ordered: bool = True) -> Msg:
        """The status reply for ``guid``; with ``ordered``, asserts no data of that guid came
        before it (docs/protocol.md §12.2: the reply precedes the first data message)."""
        msg, skipped = await self.until(lambda m: m.get("requestGuid") == guid, within)
        if ordered:
            assert not any(m.get("guid") == guid for m in skipped), "data before the reply"
        return msg

    async def data(self, guid: str, n: int = 1, within: float = DEFAULT_TIMEOUT) -> list[Msg]:
        """The next ``n`` data payloads of subscription ``guid``."""
        out: list[Msg] = []
        async with asyncio.timeout(within):
            while len(out) < n:
                msg = await self.recv(within)
                if msg.get("guid") == guid and "data" in msg:
                    out.append(msg["data"])
        return out

    async def request(self, obj: Msg, within: float = DEFAULT_TIMEOUT) -> Msg:
        """Send a request and return its status reply.

        An ``unsubscribe`` names a live subscription, whose data may precede the reply.
        """
        await self.send(obj)
        ordered = str(obj.get("opcode", "")).lower() != "unsubscribe"
        return await self.status(obj["guid"], within, ordered)

    async def wait_closed(self, within: float = DEFAULT_TIMEOUT) -> int | None:
        """Read (and discard) until the server closes; returns the close code."""
        async with asyncio.timeout(within):
            while True:
                try:
                    await self.recv_text(within)
                except Closed as exc:
                    return exc.code

    async def close(self) -> None:
        """Close the socket and the session."""
        try:
            if not self.ws.closed:
                async with asyncio.timeout(2):
                    await self.ws.close()
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            pass
        finally:
            await self.session.close()

    async def __aenter__(self) -> RawWS:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class PipeWS:
    """A bare WebSocket client over a raw stream: one ``write`` can carry several frames (or a
    frame header alone), so tests control exactly what the server reads in one go."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, path: str) -> PipeWS:
        """Open ``ws://host:port/path`` (plain TCP) and complete the handshake."""
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        async with asyncio.timeout(DEFAULT_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    @staticmethod
    def frame(payload: Msg | bytes, declared: int | None = None) -> bytes:
        """A masked client text frame; ``declared`` overrides the length in the header (then
        only the header is returned: the payload that would follow is never sent)."""
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        n = len(data) if declared is None else declared
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = b"\x00\x00\x00\x00"  # a zero mask leaves the payload as it is
        return head + mask if declared is not None else head + mask + data

    def write(self, *frames: bytes) -> None:
        """Send the frames in one write."""
        self.writer.write(b"".join(frames))

    async def next(self, within: float = DEFAULT_TIMEOUT) -> tuple[int, bytes]:
        """The next server frame as ``(opcode, payload)``: 1 text, 8 close."""
        async with asyncio.timeout(within):
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return b0 & 0x0F, await self.reader.readexactly(n)

    async def recv(self, within: float = DEFAULT_TIMEOUT) -> Msg:
        """The next frame, which must be a text frame holding a JSON object."""
        opcode, payload = await self.next(within)
        assert opcode == 1, (opcode, payload)
        result = json.loads(payload)
        assert isinstance(result, dict), result
        return result

    async def close(self) -> None:
        """Drop the TCP connection."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
