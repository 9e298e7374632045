"""How many messages/s one simulator process pushes to one fast raw reader on loopback.

Client benchmarks need to know their ceiling: this is it. The simulator runs in its own process
(``python -m alorws.sim``); this process is a bare-bones reader (a raw asyncio protocol that only
splits WebSocket frames and counts them, so the reader is not the bottleneck). One connection
subscribes to the all-trades tape of every instrument ``--copies`` times (fan-out: one trade is
encoded once per format and sent to every copy), plus an order book and a quote per instrument
at the format's minimum frequency. The market runs at ``--rate`` events/s per instrument.

    python bench/sim_rate.py [--seconds 5] [--rate 500] [--copies 800] [--format Slim]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import subprocess
import sys
import time
import urllib.request
from typing import Any


INSTRUMENTS = ["SBER", "GAZP", "LKOH", "SU26238RMFS4", "USD000UTSTOM"]


def client_frame(obj: dict[str, Any]) -> bytes:
    """A masked client text frame (a zero mask key leaves the payload as it is)."""
    payload = json.dumps(obj).encode()
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return header + b"\x00\x00\x00\x00" + payload


class Counter(asyncio.Protocol):
    """Counts server frames; parses nothing but the frame headers."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.frames = 0
        self.bytes = 0
        self.closed = asyncio.get_running_loop().create_future()
        self.first: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        buf = self.buf
        buf += data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.upgraded.set_exception(RuntimeError(head.decode(errors="replace")))
                return
            self.upgraded.set_result(None)
        i = 0
        n = len(buf)
        frames = 0
        while n - i >= 2:
            opcode = buf[i] & 0x0F
            length = buf[i + 1] & 0x7F
            if length < 126:
                start = i + 2
            elif length == 126:
                if n - i < 4:
                    break
                length = (buf[i + 2] << 8) | buf[i + 3]
                start = i + 4
            else:
                if n - i < 10:
                    break
                length = int.from_bytes(buf[i + 2 : i + 10], "big")
                start = i + 10
            if n - start < length:
                break
            if opcode == 0x8 and not self.closed.done():
                self.closed.set_result(bytes(buf[start : start + length]))
            elif len(self.first) < 3:
                self.first.append(bytes(buf[start : start + length]))
            i = start + length
            frames += 1
        self.frames += frames
        del buf[:i]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(b"")


def start_simulator(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str, str]:
    cmd = [
        sys.executable,
        "-m",
        "alorws.sim",
        "--port",
        "0",
        "--rate",
        str(args.rate),
        "--max-unread",
        str(args.max_unread),
        "--admin",
        "--no-state-file",  # never replace the state file of a user's own simulator
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ})
    assert proc.stdout is not None
    found: dict[str, str] = {}
    deadline = time.monotonic() + 20
    while not {"url", "refresh_token"} <= set(found):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the simulator did not start")
        key, _, value = proc.stdout.readline().strip().partition(": ")
        found[key] = value
    return proc, found["url"], found["refresh_token"]


def http(url: str, method: str = "GET") -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        return json.loads(r.read())


async def run(args: argparse.Namespace, url: str, refresh: str) -> None:
    jwt = http(f"{url}/refresh?token={refresh}", "POST")["AccessToken"]
    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    transport, counter = await loop.create_connection(Counter, host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    transport.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await asyncio.wait_for(counter.upgraded, 10)
    fmt = args.format
    frames: list[dict[str, Any]] = []
    for symbol in INSTRUMENTS:
        frames += (
            {
                "opcode": "AllTradesGetAndSubscribe",
                "code": symbol,
                "format": fmt,
                "guid": f"t-{symbol}-{copy}",
                "token": jwt,
            }
            for copy in range(args.copies)
        )
        frames += (
            {
                "opcode": opcode,
                "code": symbol,
                "format": fmt,
                "frequency": 0,
                "guid": f"{opcode[:4]}-{symbol}",
                "token": jwt,
            }
            for opcode in ("OrderBookGetAndSubscribe", "QuotesSubscribe")
        )
    transport.write(b"".join(client_frame(f) for f in frames))
    await asyncio.sleep(args.warmup)
    start_frames, start_bytes, started = counter.frames, counter.bytes, time.perf_counter()
    await asyncio.sleep(args.seconds)
    frames_done = counter.frames - start_frames
    bytes_done = counter.bytes - start_bytes
    elapsed = time.perf_counter() - started
    stats = http(f"{url}/sim/stats")
    transport.close()
    rate = frames_done / elapsed
    print(f"subscriptions: {len(frames)} on 1 connection ({fmt}), market rate {args.rate}/s")
    print(f"raw reader: one process, frame headers only; simulator: {url}")
    print(f"sample frame: {counter.first[-1][:120].decode(errors='replace')}")
    print(f"messages/s: {rate:,.0f}")
    print(f"MB/s: {bytes_done / elapsed / 1e6:,.1f}")
    print(f"avg frame bytes: {bytes_done / max(frames_done, 1):,.0f}")
    unread = sum(a["unread"] for a in stats["accounts"].values())
    print(f"server queue at the end: {unread} frames (large = the server was the bottleneck)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rate", type=float, default=500.0, help="events/s per instrument")
    p.add_argument("--copies", type=int, default=800, help="tape subscriptions per instrument")
    p.add_argument("--format", default="Slim", choices=["Simple", "Slim", "Heavy"])
    p.add_argument("--max-unread", type=int, default=10_000_000)
    p.add_argument("--url", help="use a running simulator (started with --admin) instead")
    p.add_argument("--refresh-token", help="its refresh token (with --url)")
    args = p.parse_args()
    if args.url:
        asyncio.run(run(args, args.url, args.refresh_token))
        return
    proc, url, refresh = start_simulator(args)
    try:
        asyncio.run(run(args, url, refresh))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
