"""What the simulator's aiohttp endpoints share: JSON answers, JSON bodies, bearer tokens, and
candles built in steps.

Used by the WebSocket shell (:mod:`~alorws.sim.server`), the HTTP API (:mod:`~alorws.sim.http`)
and the admin endpoints (:mod:`~alorws.sim.faults`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import msgspec
from aiohttp import web

from .auth import Claims, TokenService


if TYPE_CHECKING:
    from .market import SyntheticMarket


__all__ = [
    "DUPLICATE_WINDOW",
    "MAX_REQUEST",
    "RecentReplies",
    "bearer",
    "build_in_steps",
    "error_response",
    "json_response",
    "read_json",
]

#: Largest WebSocket frame and HTTP body accepted, bytes: requests are small (an order with a
#: 100-character comment is under 1 KiB). Above it: close 1009, or HTTP 413.
MAX_REQUEST: Final = 64 * 1024
#: docs/protocol.md §12.11: a /cws guid or an HTTP ``X-REQID`` is remembered for an hour, seconds.
DUPLICATE_WINDOW: Final = 3600.0

_ENC: Final = msgspec.json.Encoder()
_JSON: Final = msgspec.json.Decoder()

R = TypeVar("R")


class RecentReplies(Generic[R]):
    """The reply to each request checked for duplicates, by account and request id (a ``/cws``
    guid, an HTTP ``X-REQID``), for ``window`` seconds (docs/protocol.md §12.11).

    Past ``limit`` replies, those older than the window are forgotten. ``clock`` gives
    seconds (the server's clock).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        window: float = DUPLICATE_WINDOW,
        limit: int = 100_000,
    ) -> None:
        self._clock = clock
        self.window = window
        self.limit = limit
        self._replies: dict[tuple[str, str], tuple[float, R]] = {}

    def get(self, login: str, request_id: str) -> R | None:
        """The reply to ``request_id`` of ``login`` within the window, or None."""
        seen = self._replies.get((login, request_id))
        if seen is None or self._clock() - seen[0] >= self.window:
            return None
        return seen[1]

    def put(self, login: str, request_id: str, reply: R) -> None:
        """Remember ``reply`` from now on."""
        now = self._clock()
        if len(self._replies) > self.limit:
            window = self.window
            self._replies = {k: v for k, v in self._replies.items() if now - v[0] < window}
        self._replies[login, request_id] = (now, reply)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``data`` as a JSON answer."""
    return web.Response(
        body=_ENC.encode(data), status=status, content_type="application/json", headers=headers
    )


def error_response(status: int, message: str) -> web.Response:
    """``{"code": status, "message": message}`` with that status."""
    return json_response({"code": status, "message": message}, status)


async def read_json(request: web.Request, limit: int = MAX_REQUEST) -> dict[str, Any] | None:
    """The request's JSON object body (None without a body); 400 for anything else.

    ``limit`` bounds the body (413 above it).
    """
    if not request.can_read_body:
        return None
    if limit != MAX_REQUEST:
        request = request.clone(client_max_size=limit)
    data = await request.read()
    try:
        body = _JSON.decode(data)
    except (msgspec.DecodeError, ValueError) as exc:  # ValueError: bad UTF-8
        raise web.HTTPBadRequest(text=f"Body is not valid JSON: {exc}") from None
    except RecursionError:
        raise web.HTTPBadRequest(text="Body is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=f"Body must be a JSON object, got {type(body).__name__}")
    return body


def bearer(tokens: TokenService, request: web.Request) -> Claims | None:
    """The claims of the request's valid ``Authorization: Bearer`` JWT, or None."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    return tokens.verify(header[7:].strip())


async def build_in_steps(
    market: SyntheticMarket,
    symbol: str,
    tf: int | None,
    gave_up: Callable[[], bool] | None = None,
) -> bool:
    """Build the ``tf`` candles (None: the minute history) of ``symbol`` one bounded step per
    turn of the event loop, so other clients are served meanwhile; True once built.

    False as soon as ``gave_up()`` is true (e.g. the connection closed): the caller leaves the
    build, which is dropped if nobody else steps it (``SyntheticMarket.building``); so is it
    when the caller is cancelled.
    """
    with market.building(symbol, tf) as step:
        while not step():
            await asyncio.sleep(0)
            if gave_up is not None and gave_up():
                return False
    return True
