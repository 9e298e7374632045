"""The picows side shared by lanes and the order client: connect, listen, reconnect.

* :func:`ws_connect` opens a connection without leaking its socket when the caller gives up.
  ``picows.ws_connect`` aborts its transport on errors, but not when the awaiting task is
  cancelled (or times out) during the WebSocket handshake: the socket then stays open until the
  garbage collector warns about it. Here the attempt runs in a task of its own; a caller that
  stops waiting leaves it to finish (bounded by the handshake timeout), and a late success is
  disconnected at once. The listener of an attempt given up on is detached first: its owner's
  callbacks (often shared by every attempt, as a lane's are) never hear of that connection, so
  its late connect or disconnect cannot pass for the owner's live connection. Owners keep the
  attempts in a set and :func:`settle` them on close.
* :class:`FrameListener` is the one picows listener: it hands every complete text or binary
  message to a callback and reports pongs, the peer's close and the disconnect to others;
  :class:`BatchListener` hands over the messages of each socket read in one call. Its hot path
  and the lane's matching of frames to subscriptions (:func:`dispatch_frames`) run in C when
  the compiled reader :mod:`alorws.client._speedups` was built at install time
  (:data:`COMPILED`), in Python otherwise, with the same behaviour.
* :func:`reconnecting` is the one reconnect loop: ``async for conn in reconnecting(...)`` yields
  each opened connection and, once the loop body is done with it, waits what the pure
  :class:`~alorws.protocol.reconnect.ReconnectPolicy` says before the next attempt.

Every connect first passes the URL through :func:`~alorws.client.endpoints.check_url` (plain
``ws://`` only to loopback hosts), before any name is resolved, and HTTP redirects of the
handshake are not followed: a redirect could lead a loopback connection to a remote host in
clear text, and ALOR's sockets do not redirect.

Through a proxy (:mod:`alorws.client.proxy`), picows opens the tunnel (HTTP ``CONNECT`` or
SOCKS5) and then does TLS and the upgrade inside it; a refusal by the proxy becomes a
:class:`~alorws.errors.ConnectError` that names the proxy without its password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import picows

from ..protocol.codec import TailTable
from ..protocol.reconnect import ReconnectPolicy, Retry
from .endpoints import check_url
from .proxy import Proxy, proxy_error


__all__ = [
    "BATCH_LISTENER",
    "COMPILED",
    "BatchListener",
    "FrameListener",
    "close_transport",
    "dispatch_frames",
    "reconnecting",
    "send_or_drop",
    "settle",
    "ws_connect",
]

T = TypeVar("T")

log = logging.getLogger("alorws.client")

_TEXT = picows.WSMsgType.TEXT
_BINARY = picows.WSMsgType.BINARY
_CONT = picows.WSMsgType.CONTINUATION
_CLOSE = picows.WSMsgType.CLOSE
_PONG = picows.WSMsgType.PONG


def _ignore_frame(payload: bytes) -> None:
    pass


def _ignore_frames(payloads: list[bytes]) -> None:
    pass


def _ignore() -> None:
    pass


class FrameListener(picows.WSListener):
    """picows callbacks for one connection: whole messages to ``on_frame``, nothing else.

    Args:
        on_frame: called with the payload of every complete text or binary message (fragments
            joined), in the I/O loop; it must not raise.
        on_disconnected: called once the connection is gone.
        on_close: called with the peer's close code (None if none) and reason, before the
            close is answered.
        on_pong: called for every pong frame (``None``: pongs are ignored).
        on_connected: called with the transport once the handshake is done.
    """

    def __init__(
        self,
        on_frame: Callable[[bytes], None],
        on_disconnected: Callable[[], None],
        *,
        on_close: Callable[[int | None, str], None] | None = None,
        on_pong: Callable[[], None] | None = None,
        on_connected: Callable[[picows.WSTransport], None] | None = None,
    ) -> None:
        self.on_frame = on_frame
        self._on_disconnected = on_disconnected
        self._on_close = on_close
        self._on_pong = on_pong
        self._on_connected = on_connected
        self.parts: list[bytes] | None = None

    def detach(self) -> None:
        """Stop calling the owner's callbacks: the connection no longer concerns it (its
        connect attempt was given up on). Frames and events are dropped from now on."""
        self.on_frame = _ignore_frame
        self._on_disconnected = _ignore
        self._on_close = None
        self._on_pong = None
        self._on_connected = None

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        if self._on_connected is not None:
            self._on_connected(transport)

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        # Hot path without reading ``frame.msg_type`` (converting it to the Python enum costs
        # more than the rest of the reader's work): picows answers PINGs itself, a control
        # frame (PONG, CLOSE) carries at most 125 bytes (RFC 6455 §5.5), and outside a
        # fragmented message a final frame is a whole TEXT/BINARY message.
        if frame.fin and self.parts is None:
            payload = frame.get_payload_as_bytes()
            if len(payload) > 125:
                self.on_frame(payload)
                return
        self._other_frame(transport, frame)

    def _other_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        """Every frame the hot path did not settle: short, fragmented and control frames."""
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY:
            if frame.fin:
                self.on_frame(frame.get_payload_as_bytes())
            else:
                self.parts = [frame.get_payload_as_bytes()]
        elif kind is _CONT:
            if self.parts is not None:
                self.parts.append(frame.get_payload_as_bytes())
                if frame.fin:
                    payload = b"".join(self.parts)
                    self.parts = None
                    self.on_frame(payload)
        elif kind is _PONG:
            if self._on_pong is not None:
                self._on_pong()
        elif kind is _CLOSE:
            code = frame.get_close_code()
            if self._on_close is not None:
                self._on_close(getattr(code, "value", None), frame.get_close_reason() or "")
            with contextlib.suppress(Exception):
                if code is picows.WSCloseCode.NO_INFO:
                    transport.send_close()
                else:
                    transport.send_close(code)
            transport.disconnect()

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self._on_disconnected()


class BatchListener(FrameListener):
    """A :class:`FrameListener` that hands the whole messages of one socket read over at once.

    picows parses every read into frames and flags the last complete one (``last_in_buffer``):
    the messages of the hot path are collected until that frame and then given to
    ``on_frames`` in one call, so the owner's per-message work runs in one loop of its own
    instead of two Python calls per message. Any other frame (a short or fragmented message, a
    pong, a close) and the disconnect first hand over what is collected, so the owner sees
    every message in the order it arrived. ``on_frames`` must not raise.

    When :data:`COMPILED`, lanes wrap it in the compiled reader (:data:`BATCH_LISTENER`),
    which does the hot path below in C and hands it everything else.
    """

    def __init__(
        self,
        on_frames: Callable[[list[bytes]], None],
        on_disconnected: Callable[[], None],
        *,
        on_close: Callable[[int | None, str], None] | None = None,
        on_pong: Callable[[], None] | None = None,
        on_connected: Callable[[picows.WSTransport], None] | None = None,
    ) -> None:
        super().__init__(
            self._one,
            on_disconnected,
            on_close=on_close,
            on_pong=on_pong,
            on_connected=on_connected,
        )
        self.on_frames = on_frames
        self._read: list[bytes] = []

    def _one(self, payload: bytes) -> None:
        self.on_frames([payload])

    def detach(self) -> None:
        super().detach()
        self.on_frames = _ignore_frames
        self._read = []

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.fin and self.parts is None:
            payload = frame.get_payload_as_bytes()
            if len(payload) > 125:
                read = self._read
                read.append(payload)
                if frame.last_in_buffer:
                    self._read = []
                    self.on_frames(read)
                return
        self.flush()
        self._other_frame(transport, frame)

    def flush(self) -> None:
        """Hand over the messages collected so far."""
        read = self._read
        if read:
            self._read = []
            self.on_frames(read)

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.flush()
        super().on_ws_disconnected(transport)


def _load_speedups() -> Any:
    """The compiled module, or None: not built, built against another picows (its C structs
    may differ), or ``ALORWS_PURE_PYTHON=1`` in the environment."""
    if os.environ.get("ALORWS_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    installed = getattr(picows, "__version__", "")
    if _speedups.PICOWS_VERSION != installed:
        log.warning(
            "the compiled reader was built against picows %s, not the installed %s: "
            "using the pure-Python reader (reinstall alorws to rebuild it)",
            _speedups.PICOWS_VERSION or "(unknown)",
            installed or "(unknown)",
        )
        return None
    return _speedups


_speedups = _load_speedups()

#: True when the reader's per-frame work runs in C (:mod:`alorws.client._speedups`): the
#: compiled module was built at install time and matches the installed picows. False with the
#: pure-Python reader (no C compiler at install time, or ``ALORWS_PURE_PYTHON=1``).
COMPILED: bool = _speedups is not None


def _compiled_batch_listener(*args: Any, **kwargs: Any) -> picows.WSListener:
    """A :class:`BatchListener` of these arguments, in the compiled reader's wrapper."""
    reader: picows.WSListener = _speedups.BatchReader(BatchListener(*args, **kwargs))
    return reader


#: Makes the listener of a lane (the arguments of :class:`BatchListener`): the
#: :class:`BatchListener` itself, or, when :data:`COMPILED`, it wrapped in the compiled
#: reader (``alorws.client._speedups.BatchReader``), which runs its hot path in C and hands
#: every other frame and event to it.
BATCH_LISTENER: Callable[..., picows.WSListener] = (
    BatchListener if _speedups is None else _compiled_batch_listener
)

#: ``dispatch_frames(table, frames, route)``: :meth:`TailTable.dispatch
#: <alorws.protocol.codec.TailTable.dispatch>`, in C when :data:`COMPILED`.
dispatch_frames: Callable[[TailTable[Any], list[bytes], Callable[[bytes], None]], None] = (
    TailTable.dispatch if _speedups is None else _speedups.dispatch
)


def send_or_drop(transport: picows.WSTransport, frame: bytes) -> bool:
    """Write ``frame`` as a text message; if the transport refuses (it died under us),
    disconnect it and return False. The owner's disconnect callback then runs, so its rules
    learn that the connection is lost, as they assume after a failed write."""
    try:
        transport.send(_TEXT, frame)
    except Exception as exc:
        log.debug("send failed: %r; disconnecting", exc)
        with contextlib.suppress(Exception):
            transport.disconnect(graceful=False)
        return False
    return True


async def close_transport(transport: picows.WSTransport, wait: float = 2.0) -> None:
    """Close a connection politely (a close frame with code 1000, then the disconnect) and wait
    up to ``wait`` seconds for it to be gone."""
    with contextlib.suppress(Exception):
        transport.send_close(picows.WSCloseCode.OK)
    transport.disconnect()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(wait):
            await transport.wait_disconnected()


async def reconnecting(
    connect: Callable[[], Awaitable[T]],
    policy: ReconnectPolicy,
    process_exception: Callable[[Exception], Retry] = lambda exc: Retry.LATER,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncGenerator[T, None]:
    """Connect, yield the connection, and after the loop body is done with it connect again.

    Use it as ``async for conn in reconnecting(...)``: the body runs the connection until it is
    gone; the next iteration waits the policy's delay and connects again. ``connect`` raising
    asks ``process_exception`` what to do (:class:`~alorws.protocol.reconnect.Retry`):
    ``LATER`` waits a backoff delay, ``NOW`` tries again at once, ``NEVER`` re-raises the
    exception. The iteration ends when the policy gives up (the backoff ran out): the caller
    fails what waits. Wrap it in :func:`contextlib.aclosing` when the body may ``break``.
    """
    while True:
        try:
            conn = await connect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            retry = process_exception(exc)
            if retry is Retry.NEVER:
                raise
            delay = policy.connect_failed(retry)
        else:
            policy.opened(clock())
            yield conn
            delay = policy.closed(clock())
        if delay is None:
            return
        await asyncio.sleep(delay)


async def ws_connect(
    listener_factory: Any,
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    step_timeout: float,
    attempts: set[asyncio.Task[Any]],
    proxy: Proxy | None = None,
    **options: Any,
) -> picows.WSTransport:
    """Connect (TCP + handshake, each bounded by ``step_timeout``) and return the transport.

    Raises :class:`~alorws.errors.ConfigurationError` (nothing opened, nothing resolved) for a
    URL :func:`~alorws.client.endpoints.check_url` refuses. If the caller stops waiting (a
    timeout, a cancellation), the attempt's :class:`FrameListener` is detached before this
    returns: none of its callbacks runs again, and a late success is disconnected unheard.
    ``proxy``: the proxy to tunnel through (None: a direct connection); a failure of the proxy
    raises :class:`~alorws.errors.ConnectError` naming it (password hidden).
    """
    url = check_url(url, "WebSocket URL", schemes=("wss", "ws"))
    # picows makes the listener once the upgrade response is read, which may be after the
    # caller gave up: the listener made then is detached before it hears anything.
    listeners: list[Any] = []
    given_up = False

    def make_listener() -> Any:
        listener = listener_factory()
        listeners.append(listener)
        if given_up:
            _detach(listener)
        return listener

    attempt = asyncio.ensure_future(
        picows.ws_connect(
            make_listener,
            url,
            ssl_context=ssl_context,
            websocket_handshake_timeout=step_timeout,
            max_redirects=0,
            proxy=None if proxy is None else proxy.url,
            **options,
        )
    )
    attempts.add(attempt)
    attempt.add_done_callback(attempts.discard)
    try:
        async with asyncio.timeout(2 * step_timeout):
            transport, _ = await asyncio.shield(attempt)
    except BaseException as exc:
        # Given up on: whatever this attempt does later is none of the owner's business.
        given_up = True
        for listener in listeners:
            _detach(listener)
        attempt.add_done_callback(_disconnect_late_success)
        failure = proxy_error(exc, proxy, _authority(url))
        if failure is not None:
            raise failure from None
        raise
    return transport


def _detach(listener: Any) -> None:
    """Detach a :class:`FrameListener` (or the compiled reader wrapping one)."""
    detach = getattr(listener, "detach", None)
    if detach is not None:
        detach()


def _authority(url: str) -> str:
    """``host:port`` of a ws/wss URL (what a proxy is asked to connect to)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port or (443 if parts.scheme == 'wss' else 80)}"


def _disconnect_late_success(attempt: asyncio.Future[Any]) -> None:
    if attempt.cancelled() or attempt.exception() is not None:
        return
    attempt.result()[0].disconnect(graceful=False)


async def settle(attempts: set[asyncio.Task[Any]], wait: float) -> None:
    """Let unfinished attempts end (their late successes are disconnected), then cancel what
    is still running after ``wait`` seconds."""
    pending = set(attempts)
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=wait)
    for task in still:
        task.cancel()
