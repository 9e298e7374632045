"""One NATS connection and its state, shared by the gateway and ``BusClient``: connecting,
closing, whether it is up, waits that end when it is lost, and nats-py's callbacks logged one
line per event.

nats-py's default error callback logs a full traceback for every failed reconnect attempt. This
one logs: the loss of the connection (once), the failed reconnect attempts (the first, then at
most one line every ``every`` seconds, with the count), the reconnection (once, with the
downtime), and any other error one line per kind and minute. Network errors never carry a
traceback. URLs are logged without their credentials; every text is scrubbed of tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeVar

import nats
import nats.errors
from nats.aio.client import Client as NatsClient

from ..errors import ConnectError, InvalidState, scrub
from ..protocol.backoff import Backoff


__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_OUTSTANDING_PINGS",
    "PING_INTERVAL",
    "RECONNECT_WAIT",
    "Interrupted",
    "Lost",
    "NatsLink",
    "Retry",
    "describe",
    "safe_url",
]

T = TypeVar("T")

#: Seconds for the first connect (nats-py's default of 2 s fails on a loaded machine).
CONNECT_TIMEOUT: Final = 10.0
#: Seconds between reconnect attempts (nats-py's default of 2 s adds up to 2 s to every outage).
RECONNECT_WAIT: Final = 0.5
#: Seconds between client PINGs, and how many may go unanswered: a silent loss (no FIN, no RST)
#: is noticed within about 15 s instead of nats-py's 4 minutes.
PING_INTERVAL: Final = 5
MAX_OUTSTANDING_PINGS: Final = 2

_OTHER_ERROR_EVERY = 60.0  # seconds between two lines of the same kind of other error


def safe_url(url: str) -> str:
    """``url`` without user, password or token: ``nats://user:pw@host:4222`` ->
    ``nats://host:4222``."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<a NATS URL that does not parse>"


def describe(exc: BaseException) -> str:
    """One line about ``exc`` (its text, else its class), scrubbed and cut short."""
    text = str(exc).strip() or type(exc).__name__
    return scrub(text if len(text) <= 200 else text[:200] + "…")


class Retry:
    """Retrying an operation until it works: the delays between attempts come from a
    :class:`~alorws.protocol.backoff.Backoff` (by default 0.1 s doubling up to 2 s), and a run
    of failures is two log lines, its first failure and the success that ends it.

    Several callers may share one (one pair of lines for all of them); each run of attempts
    takes its own :meth:`delays`.
    """

    def __init__(self, log: logging.Logger, backoff: Backoff | None = None) -> None:
        self._log = log
        self._backoff = backoff or Backoff(base=0.1, cap=2.0, jitter=False)
        self.failing = False

    def delays(self) -> Iterator[float]:
        """The delays of one run of attempts."""
        return self._backoff.delays()

    async def failed(
        self, delays: Iterator[float], msg: str, *args: object, say: bool = True
    ) -> None:
        """An attempt failed: log ``msg % args`` if it is the first failure (and ``say``: a
        failure not worth a line does not start the run), then wait the next delay."""
        if say and not self.failing:
            self.failing = True
            self._log.warning(msg, *args)
        await asyncio.sleep(next(delays))

    def worked(self, msg: str, *args: object) -> None:
        """An attempt worked: log ``msg % args`` if it ends a run of failures."""
        if self.failing:
            self.failing = False
            self._log.warning(msg, *args)


class Lost(Exception):
    """The NATS connection was lost while waiting (:meth:`NatsLink.unless_lost`)."""


class Interrupted(Exception):
    """The ``until`` future was resolved while waiting (:meth:`NatsLink.unless_lost`)."""


class NatsLink:
    """One NATS connection (:meth:`connect`, :meth:`close`), its state and nats-py's callbacks.

    While the connection is down :attr:`up` is clear and :attr:`lost` resolved (a new one
    replaces it once back); :attr:`disconnects` counts the losses, so a number taken before a
    wait tells whether the connection was lost meanwhile.

    Args:
        log: where the lines go.
        who: how the lines start (``gateway gw-1``, ``bus <consumer>``).
        url: the server URL (logged without credentials).
        on_lost: awaited when the connection is lost (not when it is closed on purpose).
        on_back: awaited once it is back (subscriptions already re-sent by nats-py).
        every: at most one line about failed reconnect attempts every this many seconds.
    """

    def __init__(
        self,
        log: logging.Logger,
        who: str,
        url: str,
        *,
        on_lost: Callable[[], Awaitable[None]] | None = None,
        on_back: Callable[[], Awaitable[None]] | None = None,
        every: float = 30.0,
    ) -> None:
        self._log = log
        self.who = who
        self.url = safe_url(url)
        self._server = url  # credentials included: only for connecting
        self.nc: NatsClient | None = None
        self.up = asyncio.Event()
        self.lost: asyncio.Future[None] | None = None  # resolved when the connection is lost
        self._on_lost = on_lost
        self._on_back = on_back
        self._every = every
        self.closing = False  # set before closing on purpose: no "lost" line, no callback
        self.connected = True
        self.down_since: float | None = None
        self.disconnects = 0
        self.reconnects = 0
        self.attempts = 0  # failed reconnect attempts of the current outage
        self._last_error = ""
        self._last_error_at = 0.0
        self._attempt_logged_at = 0.0
        self._other_logged: dict[str, tuple[float, int]] = {}  # kind -> (last line, suppressed)

    async def connect(self, *, name: str, **options: Any) -> NatsClient:
        """Connect (``options`` go to ``nats.connect``); from then on nats-py reconnects by
        itself.

        Raises:
            ConnectError: the server cannot be reached.
        """
        self.closing = False
        try:
            nc = await nats.connect(
                self._server,
                name=name,
                connect_timeout=CONNECT_TIMEOUT,
                **options,
                **self.options(),
            )
        except Exception as exc:
            raise ConnectError(f"cannot connect to NATS at {self.url}: {describe(exc)}") from None
        self.nc = nc
        self.connected = True
        self.lost = asyncio.get_running_loop().create_future()
        self.up.set()
        return nc

    def nats(self) -> NatsClient:
        """The connection (after :meth:`connect`, until :meth:`close`)."""
        if self.nc is None:
            raise InvalidState(f"{self.who} is not connected to NATS")
        return self.nc

    async def close(self) -> None:
        """Flush what is pending (bounded), then close; waits on :attr:`lost` end now."""
        nc, self.nc = self.nc, None
        self.closing = True
        if nc is not None:
            # Bounded flush, then close: ``drain()`` can wait for its full timeout.
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await nc.close()
        self.up.clear()
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    async def unless_lost(self, aw: Awaitable[T], until: asyncio.Future[Any] | None = None) -> T:
        """Await ``aw``, or cancel it as soon as the connection is lost (:class:`Lost`) or
        ``until`` is resolved (:class:`Interrupted`)."""
        lost = self.lost
        task = asyncio.ensure_future(aw)
        ends = [f for f in (task, lost, until) if f is not None]
        if len(ends) == 1:
            return await task
        try:
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task.cancelled():
            if until is None or (lost is not None and lost.done()):
                raise Lost
            raise Interrupted
        return task.result()

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``: these callbacks, endless reconnects."""
        return {
            "error_cb": self.error_cb,
            "disconnected_cb": self.disconnected_cb,
            "reconnected_cb": self.reconnected_cb,
            "closed_cb": self.closed_cb,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": RECONNECT_WAIT,
            "ping_interval": PING_INTERVAL,
            "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
        }

    def stats(self) -> dict[str, Any]:
        """Connected or not, disconnects and reconnects so far, failed attempts now."""
        return {
            "connected": self.connected,
            "disconnects": self.disconnects,
            "reconnects": self.reconnects,
            "attempts": self.attempts,
        }

    async def error_cb(self, exc: Exception) -> None:
        """nats-py reports every error here (network errors of reconnect attempts too)."""
        if self.closing:
            self._log.debug("%s: NATS error while closing: %s", self.who, describe(exc))
            return
        # Socket errors (connect refused, reset…) and the server going away; not nats-py's own
        # timeouts (a flush, a JetStream request), which subclass TimeoutError too.
        network = isinstance(exc, nats.errors.StaleConnectionError) or (
            isinstance(exc, OSError | EOFError) and not isinstance(exc, nats.errors.Error)
        )
        if network and self.connected:
            # The error that is about to end the connection: said by the disconnect line.
            self._last_error = describe(exc)
            self._last_error_at = time.monotonic()
            self._log.debug("%s: NATS connection error: %s", self.who, self._last_error)
            return
        if network:
            self.attempts += 1
            self._last_error = describe(exc)
            now = time.monotonic()
            if self.attempts == 1 or now - self._attempt_logged_at >= self._every:
                self._attempt_logged_at = now
                self._log.warning(
                    "%s: NATS reconnect attempt %d to %s failed (%s); retrying every %.1f s",
                    self.who,
                    self.attempts,
                    self.url,
                    self._last_error,
                    RECONNECT_WAIT,
                )
            return
        if not self.connected:  # e.g. JetStream requests that could not go out
            self._log.debug("%s: NATS error while disconnected: %s", self.who, describe(exc))
            return
        kind = type(exc).__name__
        now = time.monotonic()
        last, suppressed = self._other_logged.get(kind, (-_OTHER_ERROR_EVERY, 0))
        if now - last < _OTHER_ERROR_EVERY:
            self._other_logged[kind] = (last, suppressed + 1)
            return
        self._other_logged[kind] = (now, 0)
        more = f" ({suppressed} more since the last line)" if suppressed else ""
        self._log.warning("%s: NATS error: %s%s", self.who, describe(exc), more)

    async def disconnected_cb(self) -> None:
        """The connection is lost (nats-py then reconnects), or closed."""
        if self.closing or not self.connected:
            return
        self.connected = False
        self.disconnects += 1
        self.attempts = 0
        self.down_since = time.monotonic()
        self.up.clear()
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        recent = self.down_since - self._last_error_at < 5.0
        self._log.warning(
            "%s: lost the NATS connection to %s (%s); reconnecting",
            self.who,
            self.url,
            self._last_error if recent and self._last_error else "connection closed",
        )
        self._last_error = ""
        if self._on_lost is not None:
            await self._on_lost()

    async def reconnected_cb(self) -> None:
        """Connected again; nats-py has re-sent every subscription."""
        if self.closing:
            return
        down = 0.0 if self.down_since is None else time.monotonic() - self.down_since
        self.connected = True
        self.reconnects += 1
        self._log.warning(
            "%s: reconnected to NATS at %s after %.1f s (%d failed attempt(s))",
            self.who,
            self.url,
            down,
            self.attempts,
        )
        self.attempts = 0
        self.down_since = None
        self.lost = asyncio.get_running_loop().create_future()
        self.up.set()
        if self._on_back is not None:
            await self._on_back()

    async def closed_cb(self) -> None:
        """The connection is closed for good."""
        self.connected = False
        if not self.closing:
            self._log.warning("%s: the NATS connection to %s is closed", self.who, self.url)
