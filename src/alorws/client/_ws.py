"""Opening a picows connection without leaking its socket when the caller gives up.

``picows.ws_connect`` aborts its transport on errors, but not when the awaiting task is
cancelled (or times out) during the WebSocket handshake: the socket then stays open until the
garbage collector warns about it. Here the attempt runs in a task of its own; a caller that
stops waiting leaves it to finish (bounded by the handshake timeout), and a late success is
disconnected at once. Owners keep the attempts in a set and :func:`settle` them on close.

Every connect first passes the URL through :func:`~alorws.client.endpoints.check_url` (plain
``ws://`` only to loopback hosts), before any name is resolved, and HTTP redirects of the
handshake are not followed: a redirect could lead a loopback connection to a remote host in
clear text, and ALOR's sockets do not redirect.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import picows

from .endpoints import check_url


__all__ = ["STABLE_SECONDS", "settle", "ws_connect"]

#: A connection that lasted less than this (seconds) counts as a failed attempt: the reconnect
#: backoff goes on growing instead of starting over, so a server that accepts and drops at
#: once (a restart window flapping, docs/protocol.md §9.6) is not hammered at the backoff's base
#: rate.
STABLE_SECONDS = 10.0


async def ws_connect(
    listener_factory: Any,
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    step_timeout: float,
    attempts: set[asyncio.Task[Any]],
    **options: Any,
) -> picows.WSTransport:
    """Connect (TCP + handshake, each bounded by ``step_timeout``) and return the transport.

    Raises :class:`~alorws.errors.ConfigurationError` (nothing opened, nothing resolved) for a
    URL :func:`~alorws.client.endpoints.check_url` refuses.
    """
    url = check_url(url, "WebSocket URL", schemes=("wss", "ws"))
    attempt = asyncio.ensure_future(
        picows.ws_connect(
            listener_factory,
            url,
            ssl_context=ssl_context,
            websocket_handshake_timeout=step_timeout,
            max_redirects=0,
            **options,
        )
    )
    attempts.add(attempt)
    attempt.add_done_callback(attempts.discard)
    try:
        async with asyncio.timeout(2 * step_timeout):
            transport, _ = await asyncio.shield(attempt)
    except BaseException:
        attempt.add_done_callback(_disconnect_late_success)
        raise
    return transport


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
