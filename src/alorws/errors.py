"""Every exception alorws raises, under one base class.

The tree::

    AlorError
    ├── ProtocolError                   the ALOR wire protocol was not followed
    │   ├── LocalProtocolError          we were asked to build something invalid
    │   │   └── InvalidArgumentError    (also ValueError) a bad request argument; names it
    │   └── RemoteProtocolError         the server sent something we cannot understand
    │       └── FrameError              one frame is junk (bad JSON, wrong types, no guid, ...)
    │           └── CommandFrameError   a /cws frame is not a valid order command (the simulator)
    ├── ServerRejected                  the server answered httpCode != 200 (http_code, message)
    │   ├── TokenRejected               (also AuthError) 401: the JWT is invalid or expired
    │   ├── ServerLimitExceeded         (also LimitError) 429: a server-side limit was hit
    │   └── OrderRejected               a /cws or HTTP order command was refused
    ├── AuthError                       cannot obtain or use an access token
    │   └── InvalidTokenError           (also ValueError) a JWT cannot be read
    ├── LimitError                      a client-side budget would be exceeded
    │   └── SubscriptionLimitError      a new subscription does not fit; nothing was sent
    │       └── ConnectionLimitError    ...because it needs a connection beyond the account's
    │                                       budget (also raised for the /cws connection)
    ├── TransportError                  the network failed
    │   ├── ConnectError                a connection could not be opened
    │   ├── ConnectionClosed            an open connection was closed (code, reason)
    │   └── TransportTimeout            (also TimeoutError) no answer in time
    ├── StreamError                     a subscription stream cannot deliver normally
    │   ├── BufferOverflowError         a lossless buffer was full: messages were dropped (counted)
    │   ├── BufferEmpty                 get_nowait() found nothing to deliver
    │   └── StreamClosed                the stream ended (unsubscribed, client closed, or failed)
    ├── RecorderError                   the recorder's writer stopped: frames were not written
    ├── ConfigurationError              (also ValueError) the client was set up wrongly
    │   └── MissingDependency           (also ImportError) a feature's extra is not installed
    ├── OrderStatusUnknown              an order command got no reply; its outcome is unknown
    ├── UnknownInstrument               (also LookupError) no instrument matches what was looked up
    ├── MarketClosed                    an order was refused client-side: its market is closed now
    └── InvalidState                    (also AssertionError) an object was used in the wrong state

Each message says what was wrong and what to do about it. No message ever contains an access or
refresh token: use :func:`redact` when a token must be mentioned, and :func:`scrub` on any text
that came from the network (a frame, a server's message, a close reason) before it goes into a
message or a log. The exceptions that carry such text (:class:`FrameError`,
:class:`ServerRejected`, :class:`ConnectionClosed`, :class:`OrderStatusUnknown`) scrub it
themselves.
"""

from __future__ import annotations

import re
from typing import Final


__all__ = [
    "AlorError",
    "AuthError",
    "BufferEmpty",
    "BufferOverflowError",
    "CommandFrameError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionLimitError",
    "FrameError",
    "InvalidArgumentError",
    "InvalidState",
    "InvalidTokenError",
    "LimitError",
    "LocalProtocolError",
    "MarketClosed",
    "MissingDependency",
    "OrderRejected",
    "OrderStatusUnknown",
    "ProtocolError",
    "RecorderError",
    "RemoteProtocolError",
    "ServerLimitExceeded",
    "ServerRejected",
    "StreamClosed",
    "StreamError",
    "StreamTimeout",
    "SubscriptionLimitError",
    "TokenRejected",
    "TransportError",
    "TransportTimeout",
    "UnknownInstrument",
    "redact",
    "rejection_for",
    "scrub",
]


def redact(token: str | None) -> str:
    """Return a harmless stand-in for a secret token, safe to log.

    Shows only its length and last 4 characters, e.g. ``'<token …f3a9 (812 chars)>'``.
    """
    if not token:
        return "<no token>"
    tail = token[-4:] if len(token) >= 16 else ""
    return f"<token …{tail} ({len(token)} chars)>"


#: A JWT, whole or cut short (a frame excerpt may end inside one): base64url of ``{"`` first.
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2}")
#: The value of a JSON (or escaped JSON) key that holds a secret: ``"token"``,
#: ``"refreshToken"``, ``"AccessToken"``, ``"Authorization"``, … A string value may be cut
#: short (no closing quote); other values run to the next delimiter.
_SECRET_VALUE: Final = re.compile(
    r"""(\\*"(?:[A-Za-z_-]*token|authorization|password|secret)\\*"\s*:\s*)"""
    r"""(?:\\*"(?:[^"\\]|\\.)*(?:"|\\|$)|[^\s,}\]]+)""",
    re.IGNORECASE,
)
_BEARER: Final = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
#: The userinfo of a URL (``nats://user:password@host``, ``nats://token@host``), up to the last
#: ``@`` before the path: a password may hold an ``@`` of its own.
_URL_USERINFO: Final = re.compile(r"""(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#"'<>]*@""")


def scrub(text: str) -> str:
    """``text`` with everything token-shaped replaced, safe to log or put in a message.

    Replaced: JWTs (three base64url parts starting ``eyJ``, also cut short, as at the end of a
    frame excerpt), the values of ``"token"``, ``"refreshToken"``, ``"AccessToken"``,
    ``"Authorization"`` (any key ending in ``token``, and ``password``/``secret``) in JSON or
    escaped JSON, string values cut short included, ``Bearer <credentials>``, and the user,
    password or token of a URL (``nats://user:pw@host`` -> ``nats://<redacted>@host``).
    """
    if "eyJ" in text:
        text = _JWT.sub("<token>", text)
    if '"' in text:
        text = _SECRET_VALUE.sub(r'\1"<redacted>"', text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(r"\1 <redacted>", text)
    if "://" in text and "@" in text:
        text = _URL_USERINFO.sub(r"\1<redacted>@", text)
    return text


class AlorError(Exception):
    """Base class of every exception raised by alorws."""


# -- protocol ---------------------------------------------------------------------------------


class ProtocolError(AlorError):
    """The ALOR wire protocol was not followed, by us or by the server."""


class LocalProtocolError(ProtocolError):
    """We were asked to build or send something the protocol does not allow."""


class InvalidArgumentError(LocalProtocolError, ValueError):
    """A request argument is invalid. ``field`` names the offending argument."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class RemoteProtocolError(ProtocolError):
    """The server sent something that does not follow the protocol."""


class FrameError(RemoteProtocolError):
    """A received frame could not be routed or decoded.

    ``frame`` holds the first 200 characters of the offending frame (for logs), ``reason`` what
    was wrong with it, both :func:`scrub`-bed of anything token-shaped (a server that echoes a
    request would otherwise put its token in the log). The connection that received it stays
    usable.
    """

    def __init__(
        self, reason: str, frame: bytes | bytearray | memoryview | str | None = None
    ) -> None:
        reason = scrub(reason)
        self.reason = reason
        if isinstance(frame, bytes | bytearray | memoryview):
            text = bytes(frame[:200]).decode("utf-8", "replace")
        else:
            text = str(frame or "")[:200]
        text = scrub(text)  # after the cut: a token cut short is still matched
        self.frame = text
        hint = "; the frame was skipped, other messages are unaffected"
        super().__init__(f"{reason}{hint}" + (f" (frame starts: {text!r})" if text else ""))


class CommandFrameError(FrameError):
    """A ``/cws`` frame is not a valid order command (``decode_command``, which the simulator
    uses); ``guid`` is its guid when one was readable. A frame that may hold a token is never
    quoted (docs/protocol.md §2.5)."""

    def __init__(self, reason: str, frame: bytes | str, guid: str | None) -> None:
        self.guid = guid
        lowered = frame.lower()
        quotable = not (b"token" in lowered if isinstance(lowered, bytes) else "token" in lowered)
        super().__init__(reason, frame if quotable else None)


# -- server rejections ------------------------------------------------------------------------


class ServerRejected(AlorError):
    """The server answered a request with ``httpCode != 200``.

    Attributes:
        http_code: the HTTP-style status the server sent.
        message: the server's text, verbatim but :func:`scrub`-bed of anything token-shaped
            (never match on it: it is free text).
        request_guid: the guid of the rejected request, when known.
    """

    def __init__(self, http_code: int, message: str, request_guid: str | None = None) -> None:
        self.http_code = http_code
        message = scrub(message)
        self.message = message
        self.request_guid = request_guid
        where = f" for request {request_guid!r}" if request_guid else ""
        super().__init__(f"server rejected the request{where}: {http_code} {message}{self._hint()}")

    def _hint(self) -> str:
        if 400 <= self.http_code < 500:
            return " (check the request's arguments)"
        if self.http_code >= 500:
            return " (server-side failure; retry later)"
        return ""


class AuthError(AlorError):
    """An access token could not be obtained or was refused."""


class TokenRejected(ServerRejected, AuthError):
    """The server refused the access token (401): it is invalid, expired or from another
    environment. Refresh the token and send the request again."""

    def _hint(self) -> str:
        return " (refresh the access token and resend; check the token matches the environment)"


class InvalidTokenError(AuthError, ValueError):
    """A JWT could not be read (it is not three base64url parts with a JSON payload)."""


class LimitError(AlorError):
    """A limit of the ALOR API would be (or was) exceeded."""


class ServerLimitExceeded(ServerRejected, LimitError):
    """The server refused a request because a limit was hit (429)."""

    def _hint(self) -> str:
        return " (a server-side limit was hit; slow down or spread the load)"


class SubscriptionLimitError(LimitError):
    """A new subscription would exceed the subscriptions allowed per connection or account.

    Nothing was sent. Unsubscribe from something first, or raise the budget if the server allows.
    """


class ConnectionLimitError(SubscriptionLimitError):
    """A new connection would exceed the connections allowed per account (ALOR allows 10,
    ``/ws`` and ``/cws`` together).

    Raised, before anything is sent, by a subscription that needs one more ``/ws`` connection
    (hence also a :class:`SubscriptionLimitError`), and by ``AlorClient.trading`` when the
    ``/cws`` connection would not fit. Close streams, lower ``reserve_connections`` or raise
    ``max_connections`` if the account allows more.
    """


class OrderRejected(ServerRejected):
    """An order command was refused by the server or the exchange."""

    def _hint(self) -> str:
        return " (the order was not executed)"


# -- transport --------------------------------------------------------------------------------


class TransportError(AlorError):
    """The network failed."""


class ConnectError(TransportError):
    """A connection could not be opened."""


class ConnectionClosed(TransportError):
    """An open connection was closed. ``code`` and ``reason`` are the WebSocket close frame's
    (``reason`` :func:`scrub`-bed)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        self.code = code
        reason = scrub(reason)
        self.reason = reason
        super().__init__(f"connection closed (code={code}, reason={reason!r})")


class TransportTimeout(TransportError, TimeoutError):
    """No answer arrived within the allowed time."""


# -- streams and configuration ----------------------------------------------------------------


class StreamError(AlorError):
    """A subscription stream cannot deliver messages normally."""


class BufferOverflowError(StreamError):
    """A lossless (``queue``) stream buffer was full, so ``dropped`` messages were lost.

    Raised to the consumer at the point of the loss, after everything received before it. The
    stream goes on afterwards. Consume faster, raise the buffer bound, or use the ``latest``
    policy for state streams.
    """

    def __init__(self, dropped: int, bound: int, stream: str = "") -> None:
        self.dropped = dropped
        self.bound = bound
        where = f" of {stream}" if stream else ""
        super().__init__(
            f"the buffer{where} was full ({bound} messages): {dropped} message(s) were dropped; "
            "consume faster or raise max_buffer"
        )


class BufferEmpty(StreamError):
    """``get_nowait()`` found nothing to deliver: wait with ``get()`` instead, or try later."""


class StreamClosed(StreamError):
    """The stream has ended: it was unsubscribed, the client closed, or the server refused it."""


class StreamTimeout(StreamError, TimeoutError):
    """A blocking wait on a stream (``alorws.Client``'s ``get(timeout=...)``) ran out before a
    message came; the stream goes on, so wait again or give up."""


class RecorderError(AlorError):
    """The recorder's writer (thread or process) stopped: frames were not written.

    ``Recorder.stats()`` tells what was written and dropped; the parts the writer left open are
    finished from their journals by the next recorder on the same directory.
    """


class ConfigurationError(AlorError, ValueError):
    """The client was configured wrongly (bad URL, plain HTTP to a remote host, bad limit)."""


class MissingDependency(ConfigurationError, ImportError):
    """A feature needs a package that is not installed; the message names the extra to install
    (``recording needs pyarrow: pip install 'alorws[record]'``).

    Also an ``ImportError``, so ``except ImportError`` around an optional import still works.
    ``package`` is the missing distribution, ``extra`` the alorws extra that brings it.
    """

    def __init__(self, feature: str, package: str, extra: str) -> None:
        self.feature = feature
        self.package = package
        self.extra = extra
        super().__init__(f"{feature} needs {package}: pip install 'alorws[{extra}]'")


# -- outcomes and misuse ----------------------------------------------------------------------


class OrderStatusUnknown(AlorError):
    """An order command got no reply in time; it may or may not have executed.

    Look the order up by ``guid`` (or in the orders stream) before sending it again. Re-sending
    with the same guid and ``checkDuplicates`` is safe: the server executes a guid once.
    """

    def __init__(self, guid: str, detail: str = "") -> None:
        self.guid = guid
        extra = f": {scrub(detail)}" if detail else ""
        super().__init__(
            f"no reply to order command {guid!r}{extra}; its outcome is unknown, "
            "check the orders stream or resend with the same guid"
        )


class UnknownInstrument(AlorError, LookupError):
    """No instrument matches ``query`` (a ticker, ``EXCHANGE:TICKER``, an ISIN or a futures
    code); the message says how the lookup was made and how to list what exists."""

    def __init__(self, query: str, detail: str = "") -> None:
        self.query = query
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"unknown instrument {query!r}{extra}; search what exists with "
            "`await client.http.securities(query=...)`"
        )


class MarketClosed(AlorError):
    """An order was refused client-side because its market is closed now (opt-in, see
    :mod:`alorws.client.session`); ``window`` names the closed window, ``opens_at`` (an aware
    datetime in Moscow time, or None) says when trading resumes."""

    def __init__(self, market: str, window: str, opens_at: object | None = None) -> None:
        self.market = market
        self.window = window
        self.opens_at = opens_at
        when = f"; it opens at {opens_at}" if opens_at is not None else ""
        super().__init__(f"{market} is closed now ({window}){when}: the order was not sent")


class InvalidState(AlorError, AssertionError):
    """An object was used in a state that does not allow the call (a bug in the caller)."""


def rejection_for(http_code: int, message: str, request_guid: str | None = None) -> ServerRejected:
    """Build the most specific :class:`ServerRejected` for a status reply."""
    if http_code == 401:
        return TokenRejected(http_code, message, request_guid)
    if http_code == 429:
        return ServerLimitExceeded(http_code, message, request_guid)
    return ServerRejected(http_code, message, request_guid)
