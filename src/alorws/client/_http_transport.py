"""The HTTP API client's engine: one keep-alive session, pacing, retries, decoding.

:class:`HttpTransport` is what every part of :class:`~alorws.client.http.HttpClient` sends its
requests through (see the failure policy in :mod:`alorws.client.http`): it owns the
``aiohttp.ClientSession``, paces requests (``max_rps``), retries what is safe to retry, refreshes
the token once on a 401, maps failures to :mod:`alorws.errors`, and decodes answers into models.
The endpoints are in :mod:`alorws.client.http`, one class per part of the API.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from ssl import SSLContext
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

import aiohttp
import msgspec
from yarl import URL

from ..errors import (
    ConfigurationError,
    ConnectError,
    FrameError,
    InvalidState,
    OrderRejected,
    ServerLimitExceeded,
    TokenRejected,
    TransportTimeout,
    redact,
    rejection_for,
    scrub,
)
from ..protocol._model import Model, format_class
from ..protocol.backoff import Backoff
from ..protocol.enums import Format
from ..protocol.requests import _enum
from .auth import TokenSource
from .endpoints import resolve_endpoints, ssl_context_for
from .proxy import (
    AIOHTTP_NETWORK_ERRORS,
    ProxyOption,
    aiohttp_connector,
    aiohttp_proxy,
    aiohttp_proxy_failure,
    proxy_refusal,
)


__all__ = ["DEFAULT_HTTP_RETRY", "Auth", "HttpTransport"]

log = logging.getLogger("alorws.http")

M = TypeVar("M", bound=Model)

#: Retries after a 5xx or a network failure: 4 jittered delays (≤ 0.25, 0.5, 1, 2 s).
DEFAULT_HTTP_RETRY: Final = Backoff(base=0.25, cap=5.0, max_attempts=4)

MAX_MESSAGE: Final = 300  # characters of a server's error text kept in an exception
_MAX_BODY: Final = 64 * 1024  # bytes of a non-JSON error body read for its text

#: Whether an endpoint needs a token (``optional``: served anonymously, delayed, without one).
Auth = Literal["required", "optional"]


class _Failure(Exception):
    """One attempt failed on the network; ``sent``: the request may have reached the server."""

    def __init__(self, detail: str, *, timeout: bool = False, sent: bool = True) -> None:
        super().__init__(detail)
        self.detail = detail
        self.timeout = timeout
        self.sent = sent


class OrderReply(msgspec.Struct, gc=False):
    """The answer of ``/commandapi`` order endpoints (docs/protocol.md §8.5), any of its shapes."""

    message: Any = None
    orderNumber: Any = None
    oldResponse: Any = None


_ORDER_REPLY: Final[msgspec.json.Decoder[OrderReply | str]] = msgspec.json.Decoder(OrderReply | str)
_ANY: Final = msgspec.json.Decoder()


def order_reply(payload: bytes, what: str) -> OrderReply | str:
    try:
        return _ORDER_REPLY.decode(payload)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"bad {what} answer: {exc}", payload) from None


class Replayed(Exception):
    """The server had already handled this ``X-REQID``; ``old`` is its first reply
    (docs/protocol.md §8.5)."""

    def __init__(self, old: Any) -> None:
        super().__init__("replayed")
        self.old = old


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``None`` if absent/unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _authority(url: URL) -> str:
    """``host:port`` of a request's URL (what a proxy is asked to connect to)."""
    host = url.host or ""
    return f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"


def _server_message(body: bytes, token: str | None) -> str:
    """The server's error text (JSON ``message`` if there is one, else the body's text), with
    any token it echoes redacted, shortened to a few hundred characters."""
    try:
        data = _ANY.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError):
        data = None
    text: str | None = None
    if isinstance(data, dict):
        text = next(
            (
                data[k]
                for k in ("message", "Message", "error", "title")
                if isinstance(data.get(k), str)
            ),
            None,
        )
    elif isinstance(data, str):
        text = data
    if text is None:
        text = body[:_MAX_BODY].decode("utf-8", "replace").strip()
    # Redact before shortening: a cut token would no longer match.
    if token and token in text:
        text = text.replace(token, redact(token))
    return scrub(text)[:MAX_MESSAGE]


class HttpTransport:
    """The engine of :class:`~alorws.client.http.HttpClient` (its arguments are documented
    there): the session, pacing, the 401/429/5xx policy, decoding. The endpoint classes derive
    from it; only :class:`~alorws.client.http.HttpClient`, which combines them, is public.
    """

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource | None = None,
        *,
        format: Format | str = Format.SIMPLE,
        ssl: SSLContext | None = None,
        cafile: str | None = None,
        timeout: float = 15.0,
        retry: Backoff = DEFAULT_HTTP_RETRY,
        rate_retries: int = 5,
        max_retry_after: float = 30.0,
        max_rps: float | None = None,
        connections: int = 16,
        proxy: ProxyOption = None,
    ) -> None:
        self.base_url = resolve_endpoints(None, base_url=base_url).http
        self._proxy, self._proxy_options = aiohttp_proxy(self.base_url, proxy)
        self._ssl: SSLContext | bool
        if ssl is not None:
            self._ssl = ssl
        else:
            context = ssl_context_for(self.base_url, cafile=cafile)
            self._ssl = context if context is not None else True
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout}")
        if rate_retries < 0:
            raise ConfigurationError(f"rate_retries must be >= 0, got {rate_retries}")
        if not max_retry_after >= 0:
            raise ConfigurationError(f"max_retry_after must be >= 0, got {max_retry_after}")
        if max_rps is not None and not (max_rps > 0 and math.isfinite(max_rps)):
            raise ConfigurationError(f"max_rps must be > 0 or None, got {max_rps}")
        if connections < 1:
            raise ConfigurationError(f"connections must be >= 1, got {connections}")
        self.format = _enum("format", Format, format)
        self._tokens = tokens
        self._timeout = timeout
        self._retry = retry
        self._rate_retries = rate_retries
        self._max_retry_after = max_retry_after
        self._max_rps = max_rps
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._started: deque[float] = deque()  # start times of the last second's requests
        self._decoders: dict[tuple[Any, Format], msgspec.json.Decoder[Any]] = {}
        self._stats = {"requests": 0, "retries": 0, "rate_limited": 0, "token_refreshes": 0}

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._session is not None else "idle"
        auth = "bearer" if self._tokens is not None else "anonymous"
        via = f" proxy={self._proxy}" if self._proxy is not None else ""
        return (
            f"<{type(self).__name__} {self.base_url} {state} {auth} format={self.format.value}"
            f"{via}>"
        )

    @property
    def stats(self) -> dict[str, int]:
        """Counters: HTTP ``requests`` sent (every attempt), ``retries``, ``rate_limited``
        (429 answers) and ``token_refreshes`` forced by a 401."""
        return dict(self._stats)

    @property
    def closed(self) -> bool:
        """True after :meth:`aclose`."""
        return self._closed

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._get_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and its connections. Idempotent; the client is unusable after."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise InvalidState("the HttpClient is closed; create a new one")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise InvalidState("the HttpClient is bound to the event loop it was first used in")
        if self._session is None:
            connector = aiohttp_connector(
                self._proxy, limit=self._connections, ssl=self._ssl, keepalive_timeout=30.0
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),  # asyncio.timeout per attempt
                headers={"Accept": "application/json"},
            )
        return self._session

    # -- the request engine --------------------------------------------------------------------

    def _fmt(self, value: Format | str | None) -> Format:
        return self.format if value is None else _enum("format", Format, value)

    async def _pace(self) -> None:
        """Client-side pacing: at most ``max_rps`` requests started in any one second."""
        if self._max_rps is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            started = self._started
            while started and started[0] <= now - 1.0:
                started.popleft()
            if len(started) < self._max_rps:
                started.append(now)
                return
            await asyncio.sleep(started[0] + 1.0 - now)

    async def _attempt(
        self,
        method: str,
        url: URL,
        params: Mapping[str, str] | None,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> tuple[int, str | None, bytes]:
        """One HTTP exchange; network failures become :class:`_Failure`."""
        session = self._get_session()
        await self._pace()
        self._stats["requests"] += 1
        try:
            async with asyncio.timeout(self._timeout):
                # Redirects are not followed: one could lead a loopback request to a remote
                # host in clear text, with the bearer token (a 3xx is answered as a refusal).
                async with session.request(
                    method,
                    url,
                    params=params,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    **self._proxy_options,
                ) as response:
                    payload = await response.read()
                    return response.status, response.headers.get("Retry-After"), payload
        except TimeoutError:
            raise _Failure(f"no answer within {self._timeout} s", timeout=True) from None
        except aiohttp.ClientSSLError as exc:
            raise ConnectError(
                f"TLS failed talking to {self.base_url}: {exc}; check the certificate "
                "(pass cafile= for a private CA)"
            ) from None
        except AIOHTTP_NETWORK_ERRORS as exc:
            failure = aiohttp_proxy_failure(exc, self._proxy, _authority(url))
            if failure is not None:
                message, final = failure
                if final:
                    raise ConnectError(message) from None
                raise _Failure(message, sent=False) from None
            if isinstance(exc, aiohttp.ClientConnectorError):
                raise _Failure(f"cannot connect: {exc}", sent=False) from None
            raise _Failure(f"{type(exc).__name__}: {exc}") from None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Auth = "required",
        order: bool = False,
        repeatable: bool = True,
    ) -> bytes:
        """Send one request with the 401/429/5xx policy; return the body of a 2xx answer.

        ``repeatable``: the request may be sent again after it may have reached the server.
        ``order``: a refusal is an :class:`OrderRejected` (order endpoints).
        """
        tokens = self._tokens
        if tokens is None and auth == "required":
            raise ConfigurationError(
                f"{method} {path} needs an access token: create the HttpClient with a "
                "TokenManager (tokens=...)"
            )
        url = URL(self.base_url + path, encoded=True)
        delays = self._retry.delays()
        rate_delays = self._retry.delays()
        rate_limited = 0
        refreshed = False
        token: str | None = None
        while True:
            token = await tokens.token() if tokens is not None else None
            sent_headers = dict(headers or {})
            if token is not None:
                sent_headers["Authorization"] = f"Bearer {token}"
            started = time.monotonic()
            try:
                status, retry_after, payload = await self._attempt(
                    method, url, params, body, sent_headers
                )
            except _Failure as exc:
                delay = next(delays, None) if (repeatable or not exc.sent) else None
                if delay is None:
                    kind = TransportTimeout if exc.timeout else ConnectError
                    unknown = "" if repeatable or not exc.sent else "; its outcome is unknown"
                    raise kind(f"{method} {path} failed: {exc.detail}{unknown}") from None
                self._stats["retries"] += 1
                log.info("%s %s failed (%s); retrying in %.2f s", method, path, exc.detail, delay)
                await asyncio.sleep(delay)
                continue
            log.debug(
                "%s %s -> %d (%.1f ms)", method, path, status, (time.monotonic() - started) * 1e3
            )
            if 200 <= status < 300:
                return payload
            if status == 407 and self._proxy is not None:  # a plain-http target's proxy
                raise ConnectError(proxy_refusal(self._proxy, _authority(url), 407, None)[0])
            message = _server_message(payload, token)
            if status == 401:
                if tokens is not None and not refreshed:
                    # docs/protocol.md §2.6: the token expired or was revoked early; one forced
                    # refresh, one retry.
                    refreshed = True
                    self._stats["token_refreshes"] += 1
                    log.info("%s %s -> 401; refreshing the access token once", method, path)
                    await tokens.refresh(force=True)
                    continue
                raise TokenRejected(401, message or "Invalid JWT token")
            if status == 429:
                self._stats["rate_limited"] += 1
                wait = _retry_after(retry_after)
                if rate_limited >= self._rate_retries or (
                    wait is not None and wait > self._max_retry_after
                ):
                    raise ServerLimitExceeded(429, message or "Too many requests")
                rate_limited += 1
                if wait is None:
                    wait = next(rate_delays, self._retry.cap)
                self._stats["retries"] += 1
                log.info("%s %s -> 429; retrying in %.2f s", method, path, wait)
                await asyncio.sleep(wait)
                continue
            if status >= 500:
                delay = next(delays, None) if repeatable else None
                if delay is None:
                    unknown = "; its outcome is unknown" if order else ""
                    raise ConnectError(f"{method} {path} failed: HTTP {status} {message}{unknown}")
                self._stats["retries"] += 1
                log.info("%s %s -> %d; retrying in %.2f s", method, path, status, delay)
                await asyncio.sleep(delay)
                continue
            if order:
                self._order_refusal(status, payload, message)
            raise rejection_for(status, message)

    def _order_refusal(self, status: int, payload: bytes, message: str) -> None:
        """Raise for a refused order command; a replayed ``X-REQID`` raises :class:`Replayed`."""
        if status == 400:
            try:
                reply = _ORDER_REPLY.decode(payload)
            except (msgspec.DecodeError, ValueError, RecursionError):
                reply = None
            if isinstance(reply, OrderReply) and reply.oldResponse is not None:
                raise Replayed(reply.oldResponse)
        raise OrderRejected(status, message)

    def _decoder(self, tp: Any, fmt: Format) -> msgspec.json.Decoder[Any]:
        dec = self._decoders.get((tp, fmt))
        if dec is None:
            dec = self._decoders[tp, fmt] = msgspec.json.Decoder(tp)
        return dec

    def _decode(self, tp: Any, fmt: Format, payload: bytes, what: str) -> Any:
        try:
            return self._decoder(tp, fmt).decode(payload)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            raise FrameError(f"bad {what} answer ({fmt.value}): {exc}", payload) from None

    async def _get_one(
        self, path: str, model: type[M], fmt: Format, params: dict[str, str], auth: Auth
    ) -> M:
        payload = await self._request(
            "GET", path, params={**params, "format": fmt.value}, auth=auth
        )
        result: M = self._decode(format_class(model, fmt), fmt, payload, model.__name__)
        return result

    async def _get_many(
        self, path: str, model: type[M], fmt: Format, params: dict[str, str], auth: Auth
    ) -> list[M]:
        payload = await self._request(
            "GET", path, params={**params, "format": fmt.value}, auth=auth
        )
        tp = list[format_class(model, fmt)]  # type: ignore[misc, valid-type]
        result: list[M] = self._decode(tp, fmt, payload, f"list of {model.__name__}")
        return result
