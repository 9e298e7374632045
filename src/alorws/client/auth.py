"""The access-token manager: exchanges the refresh token for short-lived JWTs, ahead of time.

ALOR access tokens live about 30 minutes, but only the token's own ``exp`` is authoritative
(docs/protocol.md §2.3). :class:`TokenManager` refreshes *ahead of* ``exp`` (by
:func:`~alorws.protocol.jwt.refresh_margin`: 180 s for a 30-minute token), never on a fixed
period, and in two ways:

* **proactively**: after :meth:`TokenManager.start`, a background task sleeps until
  ``exp - margin`` and refreshes, so callers normally never wait;
* **on demand**: :meth:`TokenManager.token` refreshes first when the token is missing or due.

Refreshes are single-flight: however many callers ask at once, one ``POST {oauth}/refresh``
is made and they all get its result. Network failures, timeouts and 5xx replies are retried
with a :class:`~alorws.protocol.backoff.Backoff`; a 403 (the refresh token is invalid or
expired, docs/protocol.md §2.2) is final and raises :class:`~alorws.errors.AuthError` at once.

The refresh token travels in the JSON body, never in the URL, so it cannot leak into logs or
exception messages; neither token is ever logged (``repr`` uses :func:`~alorws.errors.redact`).

Where the refresh token comes from when the caller does not pass one is
:func:`resolve_refresh_token`: the ``ALOR_REFRESH_TOKEN`` environment variable, then a token
file readable only by its owner, then the OS keyring.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from ssl import SSLContext
from types import TracebackType
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import aiohttp
import msgspec

from ..errors import (
    AuthError,
    ConfigurationError,
    ConnectError,
    InvalidState,
    InvalidTokenError,
    TransportError,
    TransportTimeout,
    redact,
    scrub,
)
from ..protocol.backoff import Backoff
from ..protocol.jwt import (
    JwtClaims,
    decode_claims,
    expires_in as _expires_in,
    refresh_margin,
    should_refresh,
)
from .endpoints import _check_oauth_url
from .proxy import (
    AIOHTTP_NETWORK_ERRORS,
    ProxyOption,
    aiohttp_connector,
    aiohttp_proxy,
    aiohttp_proxy_failure,
    proxy_refusal,
)


__all__ = [
    "DEFAULT_RETRY",
    "KEYRING_SERVICE",
    "KEYRING_USER",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "RotatingTokenSource",
    "TokenManager",
    "TokenSource",
    "default_token_file",
    "resolve_refresh_token",
]

log = logging.getLogger("alorws.auth")

#: Retries of one refresh: 8 jittered delays (≤ 0.2, 0.4, … capped at 10 s), then give up.
DEFAULT_RETRY: Final = Backoff(base=0.2, cap=10.0, max_attempts=8)

#: Never refresh because a token is "due" more often than this (seconds). It stops a refresh
#: storm when every new token already looks due (a margin longer than the lifetime, a token
#: that arrives expired). Forced refreshes are not limited.
_MIN_INTERVAL: Final = 1.0
#: If the auth server's clock (the token's ``iat``) differs from ours by more than this, all
#: timing is done in the server's time instead (see ``_adopt``).
_SKEW_TOLERANCE: Final = 5.0
#: The background task re-reads the wall clock at least this often (the monotonic clock that
#: ``asyncio.sleep`` uses stops while the machine is suspended).
_MAX_SLEEP: Final = 60.0
#: On-demand refresh failed but the old token has this many seconds left: hand it out.
_STILL_VALID: Final = 1.0
#: Within ``start_timeout``, no pause is taken that leaves less than this (seconds) for the
#: attempt after it: a last attempt cut to a few milliseconds could only time out.
_MIN_ATTEMPT: Final = 0.1
#: HTTP statuses worth retrying: the server is overloaded or failing, not refusing us.
_RETRY_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


#: The environment variable :func:`resolve_refresh_token` reads first.
TOKEN_ENV: Final = "ALOR_REFRESH_TOKEN"
#: An environment variable naming another token file than :func:`default_token_file`'s.
TOKEN_FILE_ENV: Final = "ALORWS_TOKEN_FILE"
#: The OS keyring entry :func:`resolve_refresh_token` reads last: service and user name.
KEYRING_SERVICE: Final = "alorws"
KEYRING_USER: Final = "refresh_token"


def default_token_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where the refresh token file is looked for: ``$ALORWS_TOKEN_FILE`` if set, else
    ``$XDG_CONFIG_HOME/alorws/refresh_token`` (``~/.config/alorws/refresh_token`` when
    ``XDG_CONFIG_HOME`` is unset or not absolute). ``environ`` defaults to ``os.environ``."""
    env = os.environ if environ is None else environ
    named = env.get(TOKEN_FILE_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    base = env.get("XDG_CONFIG_HOME", "").strip()
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "alorws" / "refresh_token"


def resolve_refresh_token(
    refresh_token: str | None = None,
    *,
    token_file: str | os.PathLike[str] | None = None,
    keyring_user: str = KEYRING_USER,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The ALOR refresh token to use; the one place that looks for it.

    ``refresh_token`` given: it is used (stripped). ``token_file`` given: that file only.
    Otherwise, in this order:

    1. the environment variable ``ALOR_REFRESH_TOKEN``;
    2. the token file :func:`default_token_file` (``~/.config/alorws/refresh_token``, or
       ``$ALORWS_TOKEN_FILE``); on POSIX it must be readable by its owner only (``chmod 600``);
    3. the OS keyring (with the ``keyring`` package, ``pip install 'alorws[keyring]'``): service
       ``"alorws"``, user ``keyring_user`` (``"refresh_token"``; another name per account).

    The token is never logged, and no error message contains it.

    Raises:
        ConfigurationError: no source has a token (the message names all three and how to set
            each); a token file that is empty, unreadable, or readable by group or others; a
            file named by ``token_file`` or ``$ALORWS_TOKEN_FILE`` that does not exist; a token
            with whitespace or a control character inside it (a second line, say).
    """
    if refresh_token is not None:
        if not isinstance(refresh_token, str):
            raise ConfigurationError(
                f"refresh_token must be a str, got {type(refresh_token).__name__}: pass the "
                "refresh token from the ALOR developer portal, or None to read it from "
                "ALOR_REFRESH_TOKEN, the token file or the keyring"
            )
        if not refresh_token.strip():
            raise ConfigurationError(
                "refresh_token is empty: pass the refresh token from the ALOR developer portal, "
                "or None to read it from ALOR_REFRESH_TOKEN, the token file or the keyring"
            )
        return _checked(refresh_token.strip(), "the refresh_token argument")
    if token_file is not None:
        token = _read_token_file(Path(token_file), must_exist=True)
        assert token is not None
        return token
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        log.debug("refresh token taken from $%s", TOKEN_ENV)
        return _checked(token, f"the environment variable {TOKEN_ENV}")
    path = default_token_file(env)
    token = _read_token_file(path, must_exist=bool(env.get(TOKEN_FILE_ENV, "").strip()))
    if token is not None:
        return token
    token, why_not = _from_keyring(keyring_user)
    if token is not None:
        return token
    raise ConfigurationError(
        f"no refresh token found; looked, in this order, at (1) the environment variable "
        f"{TOKEN_ENV}: not set (set {TOKEN_ENV}=<token> in the environment); (2) the file "
        f"{str(path)!r}: absent (write the token there and chmod 600 it; {TOKEN_FILE_ENV} names "
        f"another file); (3) the OS keyring, service {KEYRING_SERVICE!r}, user {keyring_user!r}: "
        f"{why_not} (store it with: keyring set {KEYRING_SERVICE} {keyring_user}). Or pass "
        "refresh_token=; the token comes from the ALOR developer portal"
    )


def _checked(token: str, source: str) -> str:
    """``token`` (stripped already) if it can be one: a refresh token is one word; inner
    whitespace or control characters mean a second line or a paste gone wrong. The message
    names the source, never the token."""
    if not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigurationError(
            f"the refresh token from {source} contains whitespace, a line break or a control "
            "character inside it; a refresh token is one line without spaces: keep only the "
            "token from the ALOR developer portal"
        )
    return token


def _read_token_file(path: Path, *, must_exist: bool) -> str | None:
    """The token in ``path``; None if there is no such file and it need not exist."""
    shown = repr(str(path))
    try:
        # O_NONBLOCK: opening a FIFO (or a device) named as the token file must not wait for
        # a writer; fstat refuses anything that is not a regular file right after.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        if not must_exist:
            return None
        raise ConfigurationError(
            f"the token file {shown} does not exist: write the refresh token there "
            f"(then chmod 600 {shown}), or point {TOKEN_FILE_ENV} / --token-file at the right file"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read the token file {shown}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)  # of the file opened, not of a path that may have changed since
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(f"the token file {shown} is not a regular file")
        # Like ssh with its keys: a secret other users can read is refused, not used.
        if os.name == "posix" and info.st_mode & 0o077:
            raise ConfigurationError(
                f"the token file {shown} is readable or writable by group or others (mode "
                f"{stat.S_IMODE(info.st_mode):03o}): run chmod 600 {shown}"
            )
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(64 * 1024)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the token file {shown}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigurationError(f"the token file {shown} is not UTF-8 text") from None
    if not token:
        raise ConfigurationError(
            f"the token file {shown} is empty: write the refresh token from the ALOR developer "
            "portal into it"
        )
    log.debug("refresh token taken from the file %s", shown)
    return _checked(token, f"the token file {shown}")


def _from_keyring(user: str) -> tuple[str | None, str]:
    """The token stored in the OS keyring, or None and why not."""
    try:
        import keyring
        import keyring.errors
    except ImportError:
        return None, "the keyring package is not installed: pip install 'alorws[keyring]'"
    try:
        value = keyring.get_password(KEYRING_SERVICE, user)
    except Exception as exc:  # no backend, a locked store, a D-Bus failure: all "not there"
        if isinstance(exc, keyring.errors.NoKeyringError):
            return None, "no keyring backend on this machine"
        detail = scrub(str(exc)).splitlines()[0][:120] if str(exc) else ""
        return None, f"the keyring failed: {type(exc).__name__}{': ' if detail else ''}{detail}"
    if value is not None and not isinstance(value, str):
        return None, f"the keyring backend returned a {type(value).__name__}, not a str"
    if value is None or not value.strip():
        return None, "no such entry"
    log.debug("refresh token taken from the keyring (service %r, user %r)", KEYRING_SERVICE, user)
    return _checked(value.strip(), f"the keyring (service {KEYRING_SERVICE!r}, user {user!r})"), ""


class _Retryable(Exception):
    """One refresh attempt failed in a way that another attempt may fix."""

    def __init__(self, detail: str, *, timeout: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.timeout = timeout


class TokenSource(Protocol):
    """Where a client gets bearer tokens (:class:`TokenManager` fits)."""

    async def token(self) -> str:
        """The current access token, refreshed first if it is due."""
        ...

    async def refresh(self, *, force: bool = False) -> str:
        """A fresh access token (``force``: even if the current one is not due)."""
        ...


class RotatingTokenSource(TokenSource, Protocol):
    """A token source that also tells when the token changes (``/cws`` re-authorizes)."""

    @property
    def current(self) -> str | None:
        """The current access token, without I/O (None before the first one)."""
        ...

    def add_listener(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Call ``callback(token)`` on every new token; returns a remover."""
        ...


class TokenManager:
    """Keeps a valid ALOR access token (JWT) at hand, refreshing it ahead of its ``exp``.

    Use it as ``async with TokenManager(refresh_token, "https://oauth.alor.ru") as tm:`` (which
    fetches the first token and starts the proactive refresh), then ``await tm.token()`` before
    each request that needs a token. All methods must be called from one event loop: the one
    the manager is first used in.

    Args:
        refresh_token: the long-lived refresh token from the ALOR developer portal
            (docs/protocol.md §2.1); ``None``: found by :func:`resolve_refresh_token`.
        oauth_url: the auth server's base URL (``Endpoints.oauth``); ``/refresh`` is appended.
            Plain ``http`` only for loopback hosts.
        ssl: the TLS context for ``https`` (see :func:`~alorws.client.endpoints.ssl_context_for`);
            ``None`` means the default, verifying context.
        allowed_portfolios: narrow the token to these portfolios (``allowedPortfolios``,
            docs/protocol.md §2.2).
        margin: refresh this many seconds before ``exp``; ``None`` uses
            :func:`~alorws.protocol.jwt.refresh_margin` (10% of the lifetime, at least 30 s).
        retry: delays between the attempts of one refresh; it gives up when they run out.
        http_timeout: seconds allowed for one refresh request.
        start_timeout: the most seconds :meth:`start` spends getting the first token, all
            attempts and the pauses between them included: each attempt gets
            ``min(http_timeout, time left)``, and when the time runs out the start fails with
            :class:`~alorws.errors.TransportTimeout` (the last attempt timed out) or
            :class:`~alorws.errors.ConnectError`. ``None`` (the default): only ``retry`` and
            ``http_timeout`` bound it. Later refreshes are not affected.
        clock: the wall clock, Unix seconds (injectable for tests).
        proxy: ``None``: from the environment (``HTTPS_PROXY`` …, never for loopback);
            ``False``: none; ``"http://[user:password@]host:port"`` or ``"socks5://…"``: that
            proxy (see :mod:`alorws.client.proxy`).
    """

    def __init__(
        self,
        refresh_token: str | None,
        oauth_url: str,
        *,
        ssl: SSLContext | None = None,
        allowed_portfolios: Sequence[str] | None = None,
        margin: float | None = None,
        retry: Backoff = DEFAULT_RETRY,
        http_timeout: float = 10.0,
        start_timeout: float | None = None,
        clock: Callable[[], float] = time.time,
        proxy: ProxyOption = None,
    ) -> None:
        refresh_token = resolve_refresh_token(refresh_token)
        if margin is not None and not (margin >= 0 and math.isfinite(margin)):
            raise ConfigurationError(f"margin must be a finite number >= 0, got {margin}")
        if not (http_timeout > 0 and math.isfinite(http_timeout)):
            raise ConfigurationError(f"http_timeout must be > 0 seconds, got {http_timeout}")
        if start_timeout is not None and (
            isinstance(start_timeout, bool)
            or not isinstance(start_timeout, int | float)
            or not (start_timeout > 0 and math.isfinite(start_timeout))
        ):
            raise ConfigurationError(
                f"start_timeout must be a finite number of seconds > 0 (or None), got "
                f"{start_timeout!r}"
            )
        body: dict[str, Any] = {"token": refresh_token}
        if allowed_portfolios is not None:
            if isinstance(allowed_portfolios, str) or not all(
                isinstance(p, str) and p for p in allowed_portfolios
            ):
                raise ConfigurationError(
                    "allowed_portfolios must be a sequence of portfolio ids, e.g. ['D12345']"
                )
            body["allowedPortfolios"] = list(allowed_portfolios)
        self._oauth = _check_oauth_url(oauth_url)
        self._url = f"{self._oauth}/refresh"
        self._proxy, self._proxy_options = aiohttp_proxy(self._url, proxy)
        # docs/protocol.md §2.2: the body form keeps the refresh token out of URLs (and so out of
        # every log).
        self._body = msgspec.json.encode(body)
        self._ssl: SSLContext | bool = ssl if ssl is not None else True  # True: verify
        self._margin = margin
        self._retry = retry
        self._http_timeout = http_timeout
        self._start_timeout = start_timeout
        self._clock = clock

        self._token: str | None = None
        self._claims: JwtClaims | None = None
        self._fetched_at = -math.inf  # our clock, when the current token arrived
        self._skew = 0.0  # the auth server's clock minus ours (0 unless beyond tolerance)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._inflight: asyncio.Task[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._callback_tasks: set[asyncio.Task[Any]] = set()
        self._listeners: list[Callable[[str], object]] = []
        self._error_listeners: list[Callable[[Exception], object]] = []
        self._closed = False

        self.last_error: Exception | None = None
        """The last failed refresh (after its retries), or ``None``; cleared by a success."""
        self._refreshes = 0
        self._failures = 0
        self._requests = 0
        self._last_refresh_at: float | None = None

    # -- state, no I/O ---------------------------------------------------------------------------

    @property
    def current(self) -> str | None:
        """The access token held now (possibly due for refresh), or ``None``; does no I/O."""
        return self._token

    @property
    def claims(self) -> JwtClaims | None:
        """The claims of :attr:`current` (docs/protocol.md §2.4), or ``None``."""
        return self._claims

    @property
    def portfolios(self) -> tuple[str, ...]:
        """The portfolio ids the current token grants (docs/protocol.md §2.4); empty before the
        first token."""
        return self._claims.portfolios if self._claims is not None else ()

    @property
    def expires_in(self) -> float | None:
        """Seconds until the current token expires (by the auth server's clock), or ``None``."""
        if self._claims is None:
            return None
        return _expires_in(self._claims, self._server_now())

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: successful ``refreshes``, failed refreshes (``failures``, after retries),
        HTTP ``requests`` made, ``last_refresh_at`` (Unix s) and ``expires_in`` (s)."""
        return {
            "refreshes": self._refreshes,
            "failures": self._failures,
            "requests": self._requests,
            "last_refresh_at": self._last_refresh_at,
            "expires_in": self.expires_in,
            "last_error": None if self.last_error is None else str(self.last_error),
        }

    def __repr__(self) -> str:
        left = self.expires_in
        if self._closed:
            state = "closed"
        elif self._task is None:
            state = "idle"
        else:
            state = "stopped" if self._task.done() else "running"
        expiry = f" expires_in={left:.0f}s" if left is not None else ""
        via = f" proxy={self._proxy}" if self._proxy is not None else ""
        return f"<TokenManager {self._url} {state} token={redact(self._token)}{expiry}{via}>"

    # -- listeners ---------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """Call ``callback(new_token)`` after every successful refresh (the first one too).

        ``callback`` may be a plain function or return an awaitable (an ``async def``), which
        then runs as a task owned by the manager. Exceptions are logged, never propagated.
        Returns a function that removes the listener.
        """
        self._listeners.append(callback)
        return lambda: self._remove(self._listeners, callback)

    def add_error_listener(self, callback: Callable[[Exception], object]) -> Callable[[], None]:
        """Call ``callback(error)`` when a refresh fails for good (after its retries).

        Same rules as :meth:`add_listener`. Returns a function that removes the listener.
        """
        self._error_listeners.append(callback)
        return lambda: self._remove(self._error_listeners, callback)

    @staticmethod
    def _remove(listeners: list[Any], callback: object) -> None:
        with contextlib.suppress(ValueError):
            listeners.remove(callback)

    def _notify(self, listeners: Sequence[Callable[[Any], object]], arg: object) -> None:
        for callback in list(listeners):
            try:
                result = callback(arg)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._callback_tasks.add(task)
                    task.add_done_callback(self._callback_done)
            except Exception:
                log.exception("token listener %r failed", callback)

    def _callback_done(self, task: asyncio.Task[Any]) -> None:
        self._callback_tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("token listener failed", exc_info=exc)

    # -- the public async API ----------------------------------------------------------------

    async def token(self) -> str:
        """The current access token, refreshed first if missing or due (ahead of ``exp``).

        When the refresh fails with a network error but the held token has not expired yet,
        that token is returned (and the failure is in :attr:`last_error`).

        Raises:
            AuthError: the refresh token was refused (403) or the server's answer is unusable.
            ConnectError, TransportTimeout: the auth server could not be reached, after retries.
            InvalidState: the manager is closed.
        """
        return await self._token_within(None)

    async def _token_within(self, budget: float | None) -> str:
        """:meth:`token`, its refresh (if one is needed) bounded by ``budget`` seconds."""
        self._check_usable()
        token = self._token
        if token is not None and not self._due():
            return token
        try:
            return await self._refresh(force=False, budget=budget)
        except TransportError:
            token, left = self._token, self.expires_in
            if token is not None and left is not None and left > _STILL_VALID:
                log.warning("token refresh failed; using the current token (%.0f s left)", left)
                return token
            raise

    async def refresh(self, *, force: bool = False) -> str:
        """Fetch a new access token if the current one is missing or due, or always if ``force``.

        Single-flight: callers that arrive while a refresh is running share its result (a
        forced call too: that refresh started after its reason to force one).

        Raises:
            The same as :meth:`token`, without its fallback to a still-valid token.
        """
        return await self._refresh(force=force, budget=None)

    async def _refresh(self, *, force: bool, budget: float | None) -> str:
        """:meth:`refresh`; ``budget``: the most seconds it may take (``start_timeout``)."""
        self._check_usable()
        task = self._inflight
        if task is None:
            token = self._token
            if not force and token is not None and not self._due():
                return token
            task = self._inflight = asyncio.get_running_loop().create_task(
                self._refresh_with_retries(budget), name="alorws-token-refresh"
            )
            task.add_done_callback(self._refresh_done)
        elif budget is not None:
            # A refresh started without our budget is under way: wait for it, but no longer
            # than the budget (asyncio.wait neither cancels it nor raises its timeout).
            await asyncio.wait({task}, timeout=budget)
            if not task.done():
                raise TransportTimeout(
                    f"could not refresh the access token at {self._url}: a refresh already "
                    f"under way did not finish within start_timeout={budget:g} s. Raise "
                    "start_timeout if the auth server is slow to answer, or check the "
                    "network and oauth_url (env)"
                )
        try:
            # Shielded: a cancelled caller must not cancel the refresh the others wait for.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and self._closed and not (current and current.cancelling()):
                raise InvalidState("the TokenManager was closed during the refresh") from None
            raise

    async def start(self) -> None:
        """Fetch the first token (raising if that fails) and start the proactive refresh.

        Getting that token takes at most ``start_timeout`` seconds when it is set. Calling it
        again while running does nothing.
        """
        self._check_usable()
        if self._task is not None:
            return
        await self._token_within(self._start_timeout)
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._refresh_loop(), name="alorws-token-keeper"
            )

    async def aclose(self) -> None:
        """Stop the background refresh, cancel a running one, close the HTTP session.

        Idempotent. The manager cannot be used afterwards.
        """
        if self._closed:
            return
        self._closed = True
        me = asyncio.current_task()
        tasks = [
            t
            for t in (self._task, self._inflight, *self._callback_tasks)
            if t is not None and t is not me
        ]
        for task in tasks:
            task.cancel()
        # return_exceptions: collect the cancellations without raising them here.
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._inflight = None
        self._callback_tasks.clear()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> TokenManager:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- timing --------------------------------------------------------------------------------

    def _server_now(self) -> float:
        return self._clock() + self._skew

    def _margin_for(self, claims: JwtClaims) -> float:
        return self._margin if self._margin is not None else refresh_margin(claims)

    def _due(self) -> bool:
        """Whether the held token should be replaced now."""
        claims = self._claims
        if claims is None:
            return True
        now = self._clock()
        if now - self._fetched_at < _MIN_INTERVAL:
            return False
        return should_refresh(claims, now + self._skew, self._margin_for(claims))

    def _seconds_until_due(self) -> float:
        claims = self._claims
        if claims is None:
            return 0.0
        now = self._clock()
        until = _expires_in(claims, now + self._skew) - self._margin_for(claims)
        return max(until, self._fetched_at + _MIN_INTERVAL - now, 0.0)

    def _adopt(self, token: str, claims: JwtClaims) -> None:
        """Make ``token`` current; learn the auth server's clock skew from its ``iat``."""
        received = self._clock()
        skew = 0.0
        if claims.iat is not None and abs(claims.iat - received) > _SKEW_TOLERANCE:
            # Our clock is off: judge ``exp`` by the server's. ``iat`` is whole seconds and
            # the server's "now" at receipt is a little past it: +1 s errs towards refreshing
            # early. Without this, a clock running ahead makes every token look due at once.
            skew = claims.iat + 1.0 - received
            if abs(skew - self._skew) > _SKEW_TOLERANCE:
                log.warning(
                    "the local clock differs from the auth server's by %+.0f s; compensating",
                    -skew,
                )
        self._token, self._claims, self._skew = token, claims, skew
        self._fetched_at = received
        self._last_refresh_at = received
        self._refreshes += 1
        self.last_error = None

    # -- the refresh itself --------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise InvalidState("the TokenManager is closed; create a new one")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise InvalidState(
                "the TokenManager is bound to the event loop it was first used in; "
                "use it only from that loop"
            )

    def _refresh_done(self, task: asyncio.Task[str]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # mark it retrieved even if every waiter was cancelled

    async def _refresh_with_retries(self, budget: float | None = None) -> str:
        """One refresh, retried per ``retry``; ``budget``: the most seconds it takes in all."""
        delays = self._retry.delays()
        started = time.monotonic()
        deadline = None if budget is None else started + budget
        attempts = 0
        while True:
            attempts += 1
            allowed = self._http_timeout
            if deadline is not None:
                allowed = max(min(allowed, deadline - time.monotonic()), 0.0)
            try:
                token, claims = await self._request_once(allowed)
            except _Retryable as exc:
                delay = next(delays, None)
                now = time.monotonic()
                # Out of budget: a pause (if any is left) would leave too little for an attempt.
                spent = deadline is not None and now + (delay or 0.0) + _MIN_ATTEMPT > deadline
                if spent or delay is None:
                    advice = (
                        f"; start_timeout={budget:g} s ran out. Raise start_timeout if the "
                        "auth server is slow to answer, or check the network and oauth_url (env)"
                        if spent
                        else ". Check the network and oauth_url (env)"
                    )
                    final: TransportError = (TransportTimeout if exc.timeout else ConnectError)(
                        f"could not refresh the access token at {self._url}: {attempts} "
                        f"attempt(s) failed in {now - started:.1f} s, the last with: "
                        f"{exc.detail}{advice}"
                    )
                    self._record_failure(final)
                    raise final from None
                log.info("token refresh attempt %d failed (%s); retrying", attempts, exc.detail)
                await asyncio.sleep(delay)
                continue
            except (AuthError, TransportError) as exc:  # final: 403, bad answer, TLS failure
                self._record_failure(exc)
                raise
            self._adopt(token, claims)
            log.info("access token refreshed; it expires in %.0f s", self.expires_in or 0.0)
            self._notify(self._listeners, token)
            return token

    def _record_failure(self, exc: Exception) -> None:
        self._failures += 1
        self.last_error = exc
        log.warning("token refresh failed: %s", exc)
        self._notify(self._error_listeners, exc)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Created lazily: a session belongs to the running loop.
            self._session = aiohttp.ClientSession(
                connector=aiohttp_connector(self._proxy),
                timeout=aiohttp.ClientTimeout(total=self._http_timeout),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
        return self._session

    async def _request_once(self, allowed: float) -> tuple[str, JwtClaims]:
        """One ``POST {oauth}/refresh`` (docs/protocol.md §2.2) allowed ``allowed`` seconds.
        Raises _Retryable or AuthError."""
        session = self._get_session()
        self._requests += 1
        try:
            async with asyncio.timeout(allowed):
                # No redirects: one could carry the refresh token to another host in clear text.
                async with session.post(
                    self._url,
                    data=self._body,
                    ssl=self._ssl,
                    allow_redirects=False,
                    **self._proxy_options,
                ) as response:
                    status = response.status
                    payload = await response.read()
        except TimeoutError:
            raise _Retryable(f"no answer within {allowed:.3g} s", timeout=True) from None
        except aiohttp.ClientSSLError as exc:
            # A certificate problem does not fix itself: retrying only delays the message.
            raise ConnectError(
                f"TLS failed talking to {self._url}: {exc}. Check the certificate "
                "(pass cafile= for a private CA)"
            ) from None
        except AIOHTTP_NETWORK_ERRORS as exc:
            failure = aiohttp_proxy_failure(exc, self._proxy, self._authority())
            if failure is None:
                raise _Retryable(f"{type(exc).__name__}: {exc}") from None
            message, final = failure
            if final:  # the proxy refuses us (407): asking again gets the same answer
                raise ConnectError(message) from None
            raise _Retryable(message) from None
        if status == 407 and self._proxy is not None:  # a plain-http /refresh's proxy
            raise ConnectError(proxy_refusal(self._proxy, self._authority(), 407, None)[0])
        if status in (401, 403):
            raise AuthError(
                f"the refresh token was refused by {self._url} (HTTP {status}): it is invalid "
                "or expired, or belongs to the other environment (prod/dev). Get a new one on "
                "the ALOR developer portal (alor.dev, 'API access tokens')"
            )
        if status in _RETRY_STATUSES or status >= 500:
            raise _Retryable(f"HTTP {status}")
        if status != 200:
            raise AuthError(f"unexpected HTTP {status} from {self._url}; check oauth_url (env)")
        return self._parse(payload)

    def _authority(self) -> str:
        parts = urlsplit(self._url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    def _parse(self, payload: bytes) -> tuple[str, JwtClaims]:
        try:
            data = msgspec.json.decode(payload)
        except (msgspec.DecodeError, RecursionError):  # junk, or nested too deep to read
            data = None
        token: object = None
        if isinstance(data, dict):
            # docs/protocol.md §2.2: the key is "AccessToken"; accept other spellings of it too.
            token = data.get("AccessToken")
            if token is None:
                token = next((v for k, v in data.items() if str(k).lower() == "accesstoken"), None)
        if not isinstance(token, str) or not token:
            raise AuthError(
                f"the auth server at {self._url} answered 200 without an access token "
                "(expected a JSON object with 'AccessToken'); check oauth_url (env)"
            )
        try:
            claims = decode_claims(token)
        except (InvalidTokenError, RecursionError) as exc:  # RecursionError: claims nested deep
            raise AuthError(
                f"the auth server at {self._url} sent an access token that cannot be read: "
                f"{scrub(str(exc))}"
            ) from None
        return token, claims

    # -- proactive refresh -------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        """Refresh ahead of ``exp``, forever; failures are recorded and retried, never raised."""
        # Between failed refreshes: the same policy, but never giving up.
        pauses = replace(self._retry, max_attempts=None).delays()
        while True:
            wait = self._seconds_until_due()
            if wait > 0:
                await asyncio.sleep(min(wait, _MAX_SLEEP))
                continue
            try:
                # force: due by our reckoning (a non-forced call could return at once, and a
                # loop that never awaits would starve the event loop).
                await self.refresh(force=True)
            except AuthError as exc:
                # 403: the refresh token is dead; asking again will not revive it. token()
                # still tries on demand (and raises), so callers see the error.
                log.error("proactive token refresh stopped: %s", exc)
                return
            except TransportError:
                await asyncio.sleep(next(pauses))  # recorded in last_error already
            except Exception:
                log.exception("proactive token refresh failed unexpectedly")
                await asyncio.sleep(next(pauses))
            else:
                pauses = replace(self._retry, max_attempts=None).delays()
