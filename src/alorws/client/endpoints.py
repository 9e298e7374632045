"""Where the client connects: ALOR's environments, or a local base URL such as the simulator's.

ALOR serves HTTP, the data socket ``/ws`` and the command socket ``/cws`` from one host, and
access tokens from a separate auth host (docs/protocol.md §1). Production and test ("dev") are
separate worlds: a token from one does not work on the other.

Safety rule: plain ``http``/``ws`` is accepted only for loopback hosts (127.0.0.0/8, ``::1``,
``localhost``), where nothing leaves the machine. Any other host must use TLS with certificate
verification; ALOR itself refuses plain ``ws://`` anyway (docs/protocol.md §1, HTTP 406).
:func:`check_url` is the one place that decides: every class that connects (the client's lanes,
``OrderClient``, ``HttpClient``, the token manager) runs its URL through it when it is created,
before any name is resolved or any socket opened, and the WebSocket connector checks again before
each connect. Error messages show a URL without its credentials or query (:func:`display_url`).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ..errors import ConfigurationError


__all__ = [
    "Endpoints",
    "check_url",
    "display_url",
    "is_loopback_host",
    "resolve_endpoints",
    "ssl_context_for",
]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The URLs of one ALOR environment (docs/protocol.md §1).

    Attributes:
        http: the REST base, no trailing slash (``https://api.alor.ru``).
        ws: the data-subscription socket (``wss://api.alor.ru/ws``).
        cws: the order-command socket (``wss://api.alor.ru/cws``).
        oauth: the auth server's base, no trailing slash; tokens come from
            ``POST {oauth}/refresh`` (docs/protocol.md §2.2).
    """

    http: str
    ws: str
    cws: str
    oauth: str

    @property
    def refresh_url(self) -> str:
        """``{oauth}/refresh``: where a refresh token is exchanged for an access token."""
        return f"{self.oauth}/refresh"


# docs/protocol.md §1: production ("боевой контур") and test ("тестовый контур").
_ENVIRONMENTS: Final = {
    "prod": Endpoints(
        http="https://api.alor.ru",
        ws="wss://api.alor.ru/ws",
        cws="wss://api.alor.ru/cws",
        oauth="https://oauth.alor.ru",
    ),
    "dev": Endpoints(
        http="https://apidev.alor.ru",
        ws="wss://apidev.alor.ru/ws",
        cws="wss://apidev.alor.ru/cws",
        oauth="https://oauthdev.alor.ru",
    ),
}

# scheme -> (is TLS, the matching HTTP scheme, the matching WebSocket scheme)
_SCHEMES: Final = {
    "http": (False, "http", "ws"),
    "ws": (False, "http", "ws"),
    "https": (True, "https", "wss"),
    "wss": (True, "https", "wss"),
}


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` is this machine: ``localhost``, 127.0.0.0/8 or ``::1``."""
    if not host:
        return False
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:127.0.0.1
    return addr.is_loopback


def display_url(url: object) -> str:
    """``url`` as it may appear in a message or a log: without user, password or query
    (either may hold a secret), e.g. ``'http://***@192.0.2.1:80/ws?…'``."""
    if not isinstance(url, str):
        return repr(url)
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "…" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, "…" if parts.fragment else ""))


def _parse(url: object, what: str, schemes: tuple[str, ...], *, allow_path: bool) -> SplitResult:
    """Split and check one URL; every failure is a ConfigurationError saying what to do."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"{what} must be a non-empty URL string, got {url!r}")
    shown = repr(display_url(url))
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:  # e.g. an unbalanced '[' in the host
        raise ConfigurationError(f"{what} {shown}: {exc}") from None
    if parts.scheme not in schemes:
        raise ConfigurationError(
            f"{what} {shown}: unsupported scheme {parts.scheme or '(none)'!r}; "
            f"use one of {', '.join(s + '://' for s in schemes)} (e.g. 'https://api.alor.ru')"
        )
    try:
        host, _ = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError as exc:
        raise ConfigurationError(f"{what} {shown}: {exc}") from None
    if not host:
        raise ConfigurationError(f"{what} {shown} has no host; e.g. 'http://127.0.0.1:8765'")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(f"{what} {shown}: credentials do not belong in the URL")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{what} {shown}: remove the query string / fragment")
    if not allow_path and parts.path not in ("", "/"):
        raise ConfigurationError(
            f"{what} {shown} has a path {parts.path!r}; pass only scheme://host[:port] "
            "('/ws', '/cws' and '/refresh' are added by the client)"
        )
    if not _SCHEMES[parts.scheme][0] and not is_loopback_host(host):
        secure = "https" if parts.scheme == "http" else "wss"
        raise ConfigurationError(
            f"{what} {shown}: plain {parts.scheme}:// is only allowed for loopback hosts "
            f"(127.0.0.1, ::1, localhost); use {secure}://{parts.netloc} with a valid certificate"
        )
    return parts


def check_url(
    url: object,
    what: str = "url",
    *,
    schemes: tuple[str, ...] = ("https", "wss", "http", "ws"),
    allow_path: bool = True,
) -> str:
    """Check a URL a connection is about to be made to; return it as it must be used.

    The one place that decides whether plain text is allowed: ``http://`` and ``ws://`` only
    to loopback hosts (127.0.0.0/8, ``::1``, ``localhost``); anything else must be
    ``https://``/``wss://``. Also refused: a scheme not in ``schemes``, no host, a bad port,
    credentials, a query string or fragment (and a path, unless ``allow_path``). Nothing is
    resolved or opened here. The URL returned is re-assembled from the parts that were checked,
    so every later parser sees exactly what was approved.

    Raises:
        ConfigurationError: naming ``what`` and the URL (without credentials or query), and
            saying what to use instead (wss/https for a remote host).
    """
    return urlunsplit(_parse(url, what, schemes, allow_path=allow_path))


def _check_oauth_url(url: object) -> str:
    """Validate an auth-server base URL; return it without a trailing slash."""
    parts = _parse(url, "oauth_url", ("http", "https"), allow_path=True)
    path = parts.path.rstrip("/")
    if path.endswith("/refresh"):
        raise ConfigurationError(
            f"oauth_url {display_url(url)!r} should be the auth server's base, without '/refresh' "
            "(e.g. 'https://oauth.alor.ru'); the client appends '/refresh'"
        )
    return f"{parts.scheme}://{parts.netloc}{path}"


def resolve_endpoints(
    env: str | None = "prod", base_url: str | None = None, oauth_url: str | None = None
) -> Endpoints:
    """The endpoints for an ALOR environment, or for a local server at ``base_url``.

    Args:
        env: ``"prod"`` (``api.alor.ru``, ``oauth.alor.ru``) or ``"dev"``, ALOR's test
            environment (``apidev.alor.ru``, ``oauthdev.alor.ru``) (docs/protocol.md §1). Ignored
            when ``base_url`` is given (but still checked).
        base_url: ``scheme://host[:port]`` of a server that serves HTTP, ``/ws``, ``/cws`` and
            ``/refresh`` itself, like the simulator (``"http://127.0.0.1:8765"``). ``http``
            gives ``ws://`` sockets, ``https`` gives ``wss://``. Plain ``http`` only for
            loopback hosts.
        oauth_url: the auth server's base URL, overriding the one ``env``/``base_url`` implies.
            It may carry a path prefix (a proxy); ``/refresh`` is appended to it.

    Raises:
        ConfigurationError: an unknown env, a bad scheme, a missing host, a path on
            ``base_url``, or plain http/ws to a host that is not loopback.
    """
    if env is not None:
        key = env.strip().lower() if isinstance(env, str) else env
        if key not in _ENVIRONMENTS:
            raise ConfigurationError(
                f"unknown env {env!r}: use 'prod' (production) or 'dev' (ALOR's test "
                "environment), or pass base_url='http://127.0.0.1:8765' for a local simulator"
            )
    if base_url is not None:
        parts = _parse(base_url, "base_url", tuple(_SCHEMES), allow_path=False)
        _, http_scheme, ws_scheme = _SCHEMES[parts.scheme]
        http = f"{http_scheme}://{parts.netloc}"
        ws = f"{ws_scheme}://{parts.netloc}"
        # The simulator serves /refresh on the same base (and so may any single-host gateway).
        endpoints = Endpoints(http=http, ws=f"{ws}/ws", cws=f"{ws}/cws", oauth=http)
    elif env is None:
        raise ConfigurationError("give env ('prod' or 'dev') or base_url; both are None")
    else:
        endpoints = _ENVIRONMENTS[key]
    if oauth_url is not None:
        endpoints = Endpoints(
            http=endpoints.http,
            ws=endpoints.ws,
            cws=endpoints.cws,
            oauth=_check_oauth_url(oauth_url),
        )
    return endpoints


def ssl_context_for(
    url: str, verify: bool = True, cafile: str | None = None
) -> ssl.SSLContext | None:
    """The TLS context to connect to ``url`` with, or ``None`` for plain ``http``/``ws``.

    Args:
        url: any endpoint URL (``https``, ``wss``, ``http``, ``ws``).
        verify: check the server's certificate and host name (the default). ``False`` is
            allowed only for loopback hosts, e.g. a simulator with a self-signed certificate.
        cafile: a PEM file of extra CA certificates to trust, e.g. the simulator's
            self-signed certificate. Ignored for plain URLs.

    Raises:
        ConfigurationError: a bad URL, ``verify=False`` for a remote host, or an unreadable
            ``cafile``.
    """
    parts = _parse(url, "url", tuple(_SCHEMES), allow_path=True)
    if not _SCHEMES[parts.scheme][0]:
        return None
    if not verify and not is_loopback_host(parts.hostname):
        raise ConfigurationError(
            f"refusing to skip certificate verification for {parts.hostname!r}: only "
            "loopback hosts may use verify=False; pass cafile= to trust a private CA instead"
        )
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load cafile {cafile!r}: {exc}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
