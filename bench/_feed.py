"""A fast raw ALOR-like feed server for the client benches, run as a separate process.

The simulator computes and encodes every message it sends, so it tops out well below what a fast
client reads (~300k Simple quotes/s). This feed does no work per message: it answers the client's
``POST /refresh`` with an unsigned JWT, upgrades ``GET /ws``, answers every subscribe with a
status reply (``{"requestGuid": guid, "httpCode": 200, "message": "Handled successfully"}``) and
then streams pre-encoded Simple quote frames (TV-07-like, ~550 bytes on the wire) for that guid.
It is a bare asyncio protocol (HTTP/1.1 and RFC 6455 by hand), so what counts as *unread* is
exact: frames generated but not yet handed to the kernel.

How the next subscription is fed is set by ``POST /feed/config`` (JSON), read back with
``GET /feed/stats`` (the stats of the stream started by the last subscribe):

``mode``
    ``"blast"``: ``n`` frames as fast as the socket takes them (a 256-frame chunk per write,
    paused by the transport's flow control); ``"paced"``: ``n`` frames at ``rate`` frames/s,
    generated on schedule whether or not the client reads them (as a broker's server would);
    ``"none"``: only the status reply.
``stamp``
    put ``time.perf_counter_ns()`` at generation into each frame's ``ob_ms_timestamp`` (the
    benches' latency probe; CLOCK_MONOTONIC is the same clock in every process of a machine).
``high_water``, ``sndbuf``
    the transport's write-buffer high-water mark and the socket's SO_SNDBUF (bytes; the kernel
    doubles it). Small values make the unread count meaningful: what the client does not read
    piles up here, not in buffers nobody sees.

The last frame of every stream carries ``"volume": LAST_VOLUME`` (a sentinel for consumers that
conflate: a volume no quote of this feed has, and one the ``Quote`` model accepts).

TLS: with ``--cert``/``--key`` (PEM) it serves ``https``/``wss``. ``FeedProcess(tls=True)``
generates a self-signed certificate for ``127.0.0.1`` and ``localhost`` at run time (the
simulator's ``make_self_signed_cert``: the ``cryptography`` package if installed, else the
``openssl`` command) and gives the clients its ``cafile`` and ``client_ssl()``.

    python bench/_feed.py [--tls]                  # self-check: feed ceiling, ~2 s
    python bench/_feed.py --serve [--port 0] [--cpu 1] [--cert C --key K]
                                                   # serve; prints "url: http(s)://..."

The benches import the client-side helpers below (``FeedProcess``, ``pin``, ``percentile``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from typing import Any


# -- frames ---------------------------------------------------------------------------------

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: An ALOR Simple quote (TV-07), as in bench/decode.py. ``ob_ms_timestamp`` carries the stamp.
QUOTE_DATA: dict[str, Any] = {
    "symbol": "LKOH",
    "exchange": "MOEX",
    "description": "ЛУКОЙЛ",
    "prev_close_price": 6980.0,
    "last_price": 7013.0,
    "last_price_timestamp": 1750663601,
    "high_price": 7040.5,
    "low_price": 6971.0,
    "accruedInt": 0,
    "volume": 412890,
    "open_interest": None,
    "ask": 7013.5,
    "bid": 7012.5,
    "ask_vol": 3,
    "bid_vol": 14,
    "ob_ms_timestamp": 1750663601402,
    "open_price": 6990.0,
    "yield": None,
    "lotsize": 1,
    "lotvalue": 7013.0,
    "facevalue": 0,
    "type": "CS",
    "total_bid_vol": 18211,
    "total_ask_vol": 20990,
    "accrued_interest": 0,
    "change": 33.0,
    "change_percent": 0.47,
}


#: The ``volume`` of the last frame of every stream: the consumers' end-of-stream sentinel. A
#: valid volume (``Quote`` refuses negative ones), far above the feed's ``QUOTE_DATA`` volume.
LAST_VOLUME = 999_999_999_999_999


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """An unmasked server frame (FIN set)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def quote_payload(guid: str, stamp: int | None = None, *, last: bool = False) -> bytes:
    """The JSON of one quote data message for ``guid``."""
    data = dict(QUOTE_DATA)
    if stamp is not None:
        data["ob_ms_timestamp"] = stamp
    if last:
        data["volume"] = LAST_VOLUME
    return json.dumps(
        {"data": data, "guid": guid}, separators=(",", ":"), ensure_ascii=False
    ).encode()


class _StampedQuote:
    """Builds a quote frame with a given stamp cheaply: prefix + digits + suffix."""

    MARK = 123456789012345678

    def __init__(self, guid: str, *, last: bool = False) -> None:
        body = quote_payload(guid, self.MARK, last=last)
        self.pre, _, self.post = body.partition(str(self.MARK).encode())

    def frame(self, stamp: int) -> bytes:
        return ws_frame(b"%s%d%s" % (self.pre, stamp, self.post))


def status_payload(guid: str, code: int = 200, message: str = "Handled successfully") -> bytes:
    return json.dumps({"requestGuid": guid, "httpCode": code, "message": message}).encode()


def make_token(lifetime: int = 3600) -> str:
    from alorws.protocol.jwt import make_unsigned_jwt

    now = int(time.time())
    return make_unsigned_jwt(
        {"exp": now + lifetime, "iat": now, "portfolios": "D00001", "sub": "bench"}
    )


# -- the server -----------------------------------------------------------------------------

_DEFAULTS: dict[str, Any] = {
    "mode": "blast",
    "n": 100_000,
    "rate": 20_000.0,
    "stamp": False,
    "high_water": 256 * 1024,
    "sndbuf": 0,  # 0: leave the OS default
}

_BLAST_CHUNK = 256
# Paced: sleep until this close to the next frame, then turn the loop until it is due (a sleep
# overshoots by 15-25 µs on a VM even with a timer slack of 1 µs).
_SLEEP_NS = 30_000


class Feed:
    """Shared state of the server process: the config for the next stream, the last stats."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = dict(_DEFAULTS)
        self.stats: dict[str, Any] = {}
        self.connections = 0
        self.subscribes = 0


class FeedProtocol(asyncio.Protocol):
    """One client connection: HTTP requests until an upgrade, then a WebSocket."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.buf = bytearray()
        self.ws = False
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.stream: dict[str, Any] | None = None
        self.task: asyncio.Task[None] | None = None
        # blast state
        self.blast_left = 0
        self.blast_chunk = b""
        self.blast_frame = b""
        self.blast_last = b""
        # paced state
        self.pending: deque[tuple[bytes, int]] = deque()
        self.pending_frames = 0
        self.frame_len = 1

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.feed.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None:
            self.task.cancel()
        self.blast_left = 0
        if self.stream is not None:
            self.stream["closed"] = True

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.blast_left:
            self._pump()
        if self.pending:
            self._flush()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.ws:
            self._http()
        if self.ws:
            self._ws_frames()

    # -- HTTP --------------------------------------------------------------------------------

    def _http(self) -> None:
        buf = self.buf
        while not self.ws:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if len(buf) < end + 4 + length:
                return
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            path = target.split("?", 1)[0]
            if headers.get("upgrade", "").lower() == "websocket":
                self._upgrade(headers)
                return
            self._route(method, path, body)

    def _respond(self, status: str, body: bytes, ctype: str = "application/json") -> None:
        assert self.transport is not None
        self.transport.write(
            (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}"
                "\r\nConnection: keep-alive\r\n\r\n"
            ).encode()
            + body
        )

    def _route(self, method: str, path: str, body: bytes) -> None:
        feed = self.feed
        if method == "POST" and path == "/refresh":
            self._respond("200 OK", json.dumps({"AccessToken": make_token()}).encode())
        elif method == "POST" and path == "/feed/config":
            update = json.loads(body or b"{}")
            unknown = set(update) - set(_DEFAULTS)
            if unknown:
                self._respond("400 Bad Request", json.dumps(sorted(unknown)).encode())
                return
            feed.config.update(update)
            feed.stats = {}
            self._respond("200 OK", json.dumps(feed.config).encode())
        elif method == "GET" and path == "/feed/stats":
            out = dict(feed.stats, connections=feed.connections, subscribes=feed.subscribes)
            self._respond("200 OK", json.dumps(out).encode())
        else:
            self._respond("404 Not Found", b'{"error":"not found"}')

    def _upgrade(self, headers: dict[str, str]) -> None:
        assert self.transport is not None
        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
        self.transport.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        self.ws = True

    # -- WebSocket ---------------------------------------------------------------------------

    def _ws_frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            masked = buf[1] & 0x80
            n = buf[1] & 0x7F
            i = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                i = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                i = 10
            mask = b""
            if masked:
                if len(buf) < i + 4:
                    return
                mask = bytes(buf[i : i + 4])
                i += 4
            if len(buf) < i + n:
                return
            payload = bytes(buf[i : i + n])
            del buf[: i + n]
            if masked and n:
                full = (mask * (n // 4 + 1))[:n]
                payload = (int.from_bytes(payload, "big") ^ int.from_bytes(full, "big")).to_bytes(
                    n, "big"
                )
            self._ws_message(opcode, payload)

    def _send(self, payload: bytes, opcode: int = 0x1) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(ws_frame(payload, opcode))

    def _ws_message(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x9:  # ping
            self._send(payload, 0xA)
            return
        if opcode == 0x8:  # close: echo and hang up
            self._send(payload[:2], 0x8)
            assert self.transport is not None
            self.transport.close()
            return
        if opcode not in (0x1, 0x2):
            return
        try:
            msg = json.loads(payload)
        except ValueError:
            self._send(status_payload("", 400, "Invalid JSON"))
            return
        guid = str(msg.get("guid", ""))
        op = str(msg.get("opcode", "")).lower()
        self._send(status_payload(guid))
        if op in ("ping", "unsubscribe"):
            if op == "unsubscribe" and self.stream is not None and self.stream["guid"] == guid:
                self._stop_stream()
            return
        self.feed.subscribes += 1
        self._start_stream(guid)

    # -- streams -----------------------------------------------------------------------------

    def _stop_stream(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self.blast_left = 0
        self.pending.clear()
        self.pending_frames = 0

    def _start_stream(self, guid: str) -> None:
        self._stop_stream()
        cfg = self.feed.config
        if cfg["mode"] == "none":  # only the status reply (restore benches: thousands of these)
            return
        cfg = dict(cfg)
        transport = self.transport
        assert transport is not None
        transport.set_write_buffer_limits(high=int(cfg["high_water"]))
        if cfg["sndbuf"]:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(cfg["sndbuf"]))
        frame = ws_frame(quote_payload(guid))
        self.frame_len = len(frame)
        stats: dict[str, Any] = {
            "guid": guid,
            "mode": cfg["mode"],
            "n": int(cfg["n"]),
            "rate": cfg["rate"],
            "frame_bytes": len(frame),
            "generated": 0,
            "t_first_ns": None,
            "t_generated_ns": None,
            "t_flushed_ns": None,
            "peak_unread": 0,
            "writes": 0,  # paced: batches generated (frames / writes: how bursty the feed was)
            "closed": False,
        }
        self.stream = stats
        self.feed.stats = stats
        n = int(cfg["n"])
        if n <= 0:
            return
        if cfg["mode"] == "blast":
            self.blast_frame = frame
            self.blast_chunk = frame * _BLAST_CHUNK
            self.blast_last = ws_frame(quote_payload(guid, last=True))
            self.blast_left = n
            stats["t_first_ns"] = time.perf_counter_ns()
            self._pump()
        else:
            self.task = asyncio.get_running_loop().create_task(
                self._paced(guid, n, float(cfg["rate"]), bool(cfg["stamp"]))
            )

    def _pump(self) -> None:
        """Blast: write chunks until the transport pushes back or the stream is done."""
        transport = self.transport
        stats = self.stream
        assert transport is not None and stats is not None
        while self.blast_left and not self.paused and not transport.is_closing():
            left = self.blast_left
            if left > _BLAST_CHUNK:
                transport.write(self.blast_chunk)
                left -= _BLAST_CHUNK
            else:
                transport.write(self.blast_frame * (left - 1) + self.blast_last)
                left = 0
            stats["generated"] = stats["n"] - left
            self.blast_left = left
        if not self.blast_left and stats["t_generated_ns"] is None:
            stats["t_generated_ns"] = stats["t_flushed_ns"] = time.perf_counter_ns()

    async def _paced(self, guid: str, n: int, rate: float, stamp: bool) -> None:
        """Paced: generate frames on schedule; what the transport does not take piles up."""
        stats = self.stream
        assert stats is not None
        plain = ws_frame(quote_payload(guid))
        stamped = _StampedQuote(guid)
        last = _StampedQuote(guid, last=True)
        interval = 1e9 / rate
        clock = time.perf_counter_ns
        start = clock()
        stats["t_first_ns"] = start
        sent = 0
        peak = 0
        while sent < n:
            now = clock()
            due = min(n, int((now - start) / interval) + 1)
            if due > sent:
                k = due - sent
                frame = stamped.frame(now) if stamp else plain
                if due == n:
                    batch = frame * (k - 1) + last.frame(now if stamp else 0)
                else:
                    batch = frame * k
                self.pending.append((batch, k))
                self.pending_frames += k
                sent = due
                stats["generated"] = sent
                stats["writes"] += 1
                self._flush()
                unread = self._unread()
                if unread > peak:
                    peak = unread
                    stats["peak_unread"] = peak
            # Sleep until shortly before the next frame is due instead of spinning all along,
            # so a paced run does not take a whole core of a shared machine (a sleep ends tens
            # of µs late: the last stretch spins). The loop still turns between frames (the
            # client's requests, flow control); its own timers would not do: they round to
            # whole milliseconds.
            wait = start + sent * interval - clock()
            if wait > _SLEEP_NS:
                time.sleep((wait - _SLEEP_NS) / 1e9)  # noqa: ASYNC251 - sub-ms, on purpose
            await asyncio.sleep(0)
        stats["t_generated_ns"] = clock()
        while self.pending or self._unread():  # noqa: ASYNC110 - transport has no drain event
            await asyncio.sleep(0.0005)
        stats["t_flushed_ns"] = clock()

    def _unread(self) -> int:
        """Frames generated but not yet in the kernel: ours plus the transport's buffer."""
        assert self.transport is not None
        return self.pending_frames + self.transport.get_write_buffer_size() // self.frame_len

    def _flush(self) -> None:
        transport = self.transport
        assert transport is not None
        pending = self.pending
        while pending and not self.paused and not transport.is_closing():
            batch, k = pending.popleft()
            self.pending_frames -= k
            transport.write(batch)


async def serve(host: str, port: int, cert: str | None = None, key: str | None = None) -> None:
    feed = Feed()
    loop = asyncio.get_running_loop()
    context = None
    if cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    server = await loop.create_server(
        lambda: FeedProtocol(feed), host, port, backlog=128, ssl=context
    )
    bound = server.sockets[0].getsockname()[1]
    scheme = "https" if context is not None else "http"
    sys.stdout.write(f"url: {scheme}://{host}:{bound}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


# -- client-side helpers (used by the benches) ----------------------------------------------


def pin(cpu: int | None) -> str:
    """Pin this process (threads started later inherit it) to one CPU; describe what was done."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    cpus = list(range(os.cpu_count() or 1))  # not the inherited mask: a child may move
    if len(cpus) < 2:
        return "not pinned (1 CPU)"
    chosen = cpus[cpu % len(cpus)]
    os.sched_setaffinity(0, {chosen})
    return f"CPU {chosen}"


class FeedProcess:
    """Starts ``bench/_feed.py --serve`` in a subprocess; ``url``, ``config()``, ``stats()``.

    With ``tls=True`` it serves ``https``/``wss`` with a self-signed certificate made for this
    run; clients trust it through :attr:`cafile` (a PEM file) or :meth:`client_ssl`.
    """

    def __init__(self, cpu: int | None = None, *, tls: bool = False) -> None:
        self.cpu = cpu
        self.tls = tls
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.cafile: str | None = None
        self._certs: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> FeedProcess:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", "--port", "0"]
        if self.cpu is not None:
            cmd += ["--cpu", str(self.cpu)]
        if self.tls:
            from alorws.sim.app import make_self_signed_cert

            self._certs = tempfile.TemporaryDirectory(prefix="alorws-feed-")
            cert, key = make_self_signed_cert(self._certs.name)
            self.cafile = cert
            cmd += ["--cert", cert, "--key", key]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("url: "):
            self.proc.kill()
            raise RuntimeError(f"the feed did not start: {line!r}")
        self.url = line.removeprefix("url: ")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._certs is not None:
            self._certs.cleanup()
            self._certs = None

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    def client_ssl(self) -> ssl.SSLContext | None:
        """A verifying TLS context that trusts this feed's certificate (None without TLS)."""
        if self.cafile is None:
            return None
        return ssl.create_default_context(cafile=self.cafile)

    def _http(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method="GET" if data is None else "POST"
        )
        with urllib.request.urlopen(req, timeout=10, context=self.client_ssl()) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result

    def config(self, **cfg: Any) -> dict[str, Any]:
        """Set how the next subscription is fed (missing keys keep their defaults)."""
        return self._http("/feed/config", {**_DEFAULTS, **cfg})

    def stats(self) -> dict[str, Any]:
        """Stats of the stream started by the last subscribe."""
        return self._http("/feed/stats")


def subscribe_frame(guid: str, token: str = "x", code: str = "LKOH") -> bytes:
    """A QuotesSubscribe request for raw clients."""
    return json.dumps(
        {
            "opcode": "QuotesSubscribe",
            "code": code,
            "exchange": "MOEX",
            "format": "Simple",
            "frequency": 0,
            "guid": guid,
            "token": token,
        }
    ).encode()


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values (nearest rank)."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


# -- self-check -----------------------------------------------------------------------------


async def _self_check(n: int, cpu: int | None, tls: bool = False) -> None:
    import picows

    with FeedProcess(cpu=None if cpu is None else cpu + 1, tls=tls) as feed:
        feed.config(mode="blast", n=n)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()

        class Counter(picows.WSListener):  # type: ignore[misc]
            count = 0

            def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
                self.count += 1
                if self.count == n + 1 and not done.done():  # + the status reply
                    done.set_result(time.perf_counter_ns())

        transport, _ = await picows.ws_connect(Counter, feed.ws_url, ssl_context=feed.client_ssl())
        transport.send(picows.WSMsgType.TEXT, subscribe_frame("self-check"))
        end = await asyncio.wait_for(done, 60)
        stats = feed.stats()
        transport.disconnect()
        secs = (end - stats["t_first_ns"]) / 1e9
        print(
            f"feed self-check{' (TLS)' if tls else ''}: {n:,} quote frames of "
            f"{stats['frame_bytes']} bytes into a picows reader that only counts them: "
            f"{n / secs:,.0f} frames/s (the benches' ceiling)"
        )


def _fine_timer_slack() -> None:
    """Let this process's sleeps end within ~1 µs of their deadline (Linux; the default slack
    of 50 µs is the gap between two frames at 20,000/s)."""
    if sys.platform != "linux":
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, in ns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", action="store_true", help="serve until killed")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    p.add_argument("--frames", type=int, default=300_000, help="self-check frames")
    p.add_argument("--cert", default=None, help="serve TLS with this PEM certificate")
    p.add_argument("--key", default=None, help="the certificate's PEM private key")
    p.add_argument("--tls", action="store_true", help="self-check over TLS")
    args = p.parse_args()
    if args.serve:
        pin(args.cpu)
        _fine_timer_slack()
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.host, args.port, args.cert, args.key))
        return
    pin(0)
    asyncio.run(_self_check(args.frames, 0, args.tls))


if __name__ == "__main__":
    main()
