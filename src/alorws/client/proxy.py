"""Proxies: which one, if any, a connection goes through, and how it is shown.

Every class that connects (:class:`~alorws.client.AlorClient`, ``HttpClient``, ``OrderClient``,
``TokenManager``) takes ``proxy=``, decided per target URL by :func:`proxy_for`:

* ``None`` (the default): from the environment, as curl and ``requests`` do: ``https_proxy`` /
  ``HTTPS_PROXY`` for ``https``/``wss`` targets, ``http_proxy`` / ``HTTP_PROXY`` for
  ``http``/``ws``, then ``all_proxy`` / ``ALL_PROXY`` (the lower-case name wins when both are
  set); ``no_proxy`` / ``NO_PROXY`` lists hosts reached directly. A loopback target
  (127.0.0.0/8, ``::1``, ``localhost``) is never sent through an environment proxy.
* ``False`` (:data:`NO_PROXY`): always connect directly.
* a URL, ``http://[user:password@]host:port`` or ``socks5://[user:password@]host:port``: every
  connection goes through it, loopback targets included.

HTTP proxies are used with ``CONNECT`` for TLS targets (``https``, ``wss``); plain ``http``
requests are sent to them in absolute form. SOCKS5 proxies need the ``aiohttp-socks`` package
for HTTP requests and ``/refresh`` (``pip install 'alorws[socks]'``); the WebSocket connections
support them as installed.

A proxy's password never appears in a ``repr``, a log line or an error: :class:`Proxy` shows it
as ``http://user:***@host:port``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Literal
from urllib.parse import quote, unquote, urlsplit

import aiohttp

from ..errors import ConfigurationError, ConnectError
from .endpoints import is_loopback_host


__all__ = ["NO_PROXY", "Proxy", "ProxyOption", "parse_proxy", "proxy_for"]

#: ``proxy=NO_PROXY`` (``False``): connect directly, whatever the environment says.
NO_PROXY: Final = False

_DEFAULT_PORTS: Final = {"http": 80, "socks5": 1080}
_TLS_SCHEMES: Final = frozenset({"https", "wss"})


@dataclass(frozen=True, slots=True)
class Proxy:
    """One proxy server (shown, in ``str`` and ``repr``, with its password as ``***``).

    Attributes:
        scheme: ``"http"`` or ``"socks5"``.
        host, port: where the proxy listens.
        username, password: credentials (Basic for HTTP, user/password for SOCKS5), or None.
        source: where it came from: ``"proxy="`` or the environment variable's name.
    """

    scheme: str
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    source: str = "proxy="

    @property
    def address(self) -> str:
        """``scheme://host:port``, without credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL with its credentials (percent-encoded): for the transports, never shown."""
        if self.username is None:
            return self.address
        auth = quote(self.username, safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        return self.address.replace("://", f"://{auth}@", 1)

    @property
    def named(self) -> str:
        """How messages name it: ``str(self)``, and the variable it came from, if any."""
        return str(self) if self.source == "proxy=" else f"{self} (from {self.source})"

    def __str__(self) -> str:
        if self.username is None:
            return self.address
        shown = quote(self.username, safe="") + (":***" if self.password is not None else "")
        return self.address.replace("://", f"://{shown}@", 1)

    def __repr__(self) -> str:
        return f"Proxy({str(self)!r}, source={self.source!r})"


#: What ``proxy=`` takes: ``None`` (the environment), ``False`` (none), a proxy URL, or a
#: :class:`Proxy` already decided.
ProxyOption = str | Proxy | Literal[False] | None


def parse_proxy(value: str, source: str = "proxy=") -> Proxy:
    """Read a proxy URL (``http://[user:password@]host[:port]``, ``socks5://…``); a value
    without a scheme, as environment variables often hold, means ``http``.

    Raises:
        ConfigurationError: naming ``source``, with the URL's password hidden.
    """
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise ConfigurationError(
            f"{source}: a proxy must be a URL such as 'http://host:3128', got {value!r}"
        )
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
        username, password = parts.username, parts.password
    except ValueError as exc:
        # urlsplit's own words may quote a piece of the password (a '/' in it ends the
        # authority early, and what follows the last ':' is read as the port): never shown.
        what = (
            "its port is not a number from 1 to 65535"
            if "port" in str(exc).lower()
            else "it cannot be parsed"
        )
        raise ConfigurationError(
            f"{source}: bad proxy URL {_hidden(text)!r}: {what} (percent-encode a '/', '?', "
            "'#', '@' or ':' in the user name or password, e.g. '/' as %2F)"
        ) from None
    scheme = parts.scheme.lower()
    if scheme == "socks5h":
        scheme = "socks5"  # the proxy resolves names either way: python-socks does so
    if scheme not in _DEFAULT_PORTS:
        raise ConfigurationError(
            f"{source}: unsupported proxy scheme {parts.scheme!r} in {_hidden(text)!r}; use "
            "http://host:port or socks5://host:port"
        )
    if not host:
        raise ConfigurationError(f"{source}: the proxy URL {_hidden(text)!r} has no host")
    if not host.isprintable() or any(c.isspace() for c in host):
        raise ConfigurationError(
            f"{source}: the proxy URL {_hidden(text)!r} has spaces or control characters in "
            "its host"
        )
    if port == 0:
        raise ConfigurationError(
            f"{source}: the proxy URL {_hidden(text)!r} has port 0; give the port the proxy "
            "listens on (1 to 65535)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(
            f"{source}: the proxy URL {_hidden(text)!r} must be scheme://host:port only"
        )
    return Proxy(
        scheme=scheme,
        host=host,
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        username=None if username is None else unquote(username),
        password=None if password is None else unquote(password),
        source=source,
    )


def proxy_for(
    url: str, proxy: ProxyOption = None, environ: Mapping[str, str] | None = None
) -> Proxy | None:
    """The proxy a connection to ``url`` goes through, or None for a direct one.

    Args:
        url: the target (``https://…``, ``wss://…``, ``http://…``, ``ws://…``).
        proxy: ``None``: the environment (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, any
            case, minus ``NO_PROXY`` and loopback targets); ``False``: none; a URL: that proxy,
            for every target, loopback included.
        environ: the environment to read (default ``os.environ``).

    Raises:
        ConfigurationError: a bad proxy URL (in the argument or the environment variable it
            names), or a ``proxy`` that is neither None, False nor a string.
    """
    if proxy is False:
        return None
    if isinstance(proxy, Proxy):
        return proxy
    if isinstance(proxy, str):
        return parse_proxy(proxy)
    if proxy is not None:
        raise ConfigurationError(
            "proxy must be None (from the environment), False (none) or a URL such as "
            f"'http://host:3128', got {type(proxy).__name__}"
        )
    env = os.environ if environ is None else environ
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None  # the URL's own check reports it
    if host is None or is_loopback_host(host):
        return None
    scheme = parts.scheme.lower()
    names = ("https_proxy", "all_proxy") if scheme in _TLS_SCHEMES else ("http_proxy", "all_proxy")
    for name in names:
        for key in (name, name.upper()):
            value = env.get(key, "").strip()
            if value:
                if _bypassed(host, port or (443 if scheme in _TLS_SCHEMES else 80), env):
                    return None
                return parse_proxy(value, source=f"${key}")
    return None


def _bypassed(host: str, port: int, env: Mapping[str, str]) -> bool:
    """Whether ``NO_PROXY`` (or ``no_proxy``) names ``host``: ``*``, the host, a parent domain
    (``example.com`` and ``.example.com`` both cover ``api.example.com``), an IP or a CIDR
    network, each optionally with ``:port``."""
    value = env.get("no_proxy") or env.get("NO_PROXY") or ""
    host = host.lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in value.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port: int | None = None
        if entry.startswith("["):  # [::1]:8080
            inside, _, rest = entry[1:].partition("]")
            entry = inside
            if rest.startswith(":") and rest[1:].isdigit():
                entry_port = int(rest[1:])
        elif entry.count(":") == 1:
            name, _, tail = entry.partition(":")
            if tail.isdigit():
                entry, entry_port = name, int(tail)
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.lstrip("*").lstrip(".").rstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def _hidden(text: str) -> str:
    """A proxy URL as it may be shown: the password replaced by ``***``."""
    scheme, sep, rest = text.partition("://")
    if "@" not in rest:
        return text
    auth, _, where = rest.rpartition("@")
    user = auth.split(":", 1)[0]
    return f"{scheme}{sep}{user}{':***' if ':' in auth else ''}@{where}"


# -- the transports' side ---------------------------------------------------------------------


def _error_types() -> tuple[type[Exception], ...]:
    from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

    types: tuple[type[Exception], ...] = (ProxyConnectionError, ProxyError, ProxyTimeoutError)
    try:  # aiohttp-socks raises classes of its own, not python-socks'
        import aiohttp_socks
    except ImportError:
        return types
    return (
        *types,
        aiohttp_socks.ProxyConnectionError,
        aiohttp_socks.ProxyError,
        aiohttp_socks.ProxyTimeoutError,
    )


#: What the SOCKS libraries raise (besides ``OSError``) when a proxy fails: the transports
#: catch these too and turn them into the library's errors (:func:`proxy_failure`).
PROXY_ERRORS: Final = _error_types()

#: What a failed aiohttp exchange raises: aiohttp's errors, socket errors, a SOCKS proxy's
#: errors (the HTTP client and the token refresh catch the same set).
AIOHTTP_NETWORK_ERRORS: Final[tuple[type[BaseException], ...]] = (
    aiohttp.ClientError,
    OSError,
    *PROXY_ERRORS,
)


def aiohttp_connector(proxy: Proxy | None, **options: Any) -> aiohttp.BaseConnector:
    """The connector of an aiohttp session that connects through ``proxy`` (``options`` are
    ``TCPConnector``'s). An HTTP proxy is given per request instead (:func:`request_options`);
    a SOCKS5 one needs ``aiohttp-socks``."""
    if proxy is None or proxy.scheme == "http":
        return aiohttp.TCPConnector(**options)
    check_http_support(proxy)
    from aiohttp_socks import ProxyConnector

    connector: aiohttp.BaseConnector = ProxyConnector.from_url(proxy.url, rdns=True, **options)
    return connector


def check_http_support(proxy: Proxy | None) -> Proxy | None:
    """Return ``proxy`` if HTTP requests can go through it; a SOCKS5 proxy without the
    ``aiohttp-socks`` package raises :class:`~alorws.errors.ConfigurationError`."""
    if proxy is not None and proxy.scheme != "http":
        try:
            import aiohttp_socks  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                f"the SOCKS5 proxy {proxy.named} needs the aiohttp-socks package for HTTP "
                "requests and /refresh: pip install 'alorws[socks]' (or use an http:// proxy)"
            ) from None
    return proxy


def aiohttp_proxy(url: str, proxy: ProxyOption) -> tuple[Proxy | None, dict[str, Any]]:
    """The proxy of aiohttp requests to ``url`` (:func:`proxy_for`, checked by
    :func:`check_http_support`) and the keyword arguments of each request
    (:func:`request_options`)."""
    chosen = check_http_support(proxy_for(url, proxy))
    return chosen, request_options(chosen)


def request_options(proxy: Proxy | None) -> dict[str, Any]:
    """The keyword arguments of an aiohttp request going through ``proxy``: its URL without
    credentials (so that no aiohttp error can show them) and a ``Proxy-Authorization`` header."""
    if proxy is None or proxy.scheme != "http":
        return {}
    options: dict[str, Any] = {"proxy": proxy.address}
    if proxy.username is not None:
        pair = f"{proxy.username}:{proxy.password or ''}".encode()
        options["proxy_headers"] = {"Proxy-Authorization": f"Basic {b64encode(pair).decode()}"}
    return options


def aiohttp_proxy_failure(
    exc: BaseException, proxy: Proxy | None, target: str
) -> tuple[str, bool] | None:
    """What an aiohttp failure says about ``proxy``: ``(message, final)`` for a failure of the
    proxy itself (``final``: retrying cannot help, e.g. 407), None for any other failure."""
    if proxy is None:
        return None
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return proxy_refusal(proxy, target, exc.status, exc.message or None)
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"cannot connect to the proxy {proxy.named}: {exc.strerror}", False
    name = type(exc).__module__.partition(".")[0]
    if name in ("python_socks", "aiohttp_socks"):
        return proxy_failure(exc, proxy, target)
    return None


def proxy_failure(exc: BaseException, proxy: Proxy, target: str) -> tuple[str, bool] | None:
    """Like :func:`aiohttp_proxy_failure`, for the errors of python-socks and aiohttp-socks
    and of connecting to the proxy (the WebSocket side, picows)."""
    library = type(exc).__module__.partition(".")[0] in ("python_socks", "aiohttp_socks")
    kind = type(exc).__name__ if library else ""
    if kind == "ProxyTimeoutError":
        return f"the proxy {proxy.named} did not answer in time", False
    if kind == "ProxyConnectionError" or isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return f"cannot connect to the proxy {proxy.named}: {exc}", False
    if kind == "ProxyError":
        text = str(exc)
        match = re.search(r"status (\d{3})", text)
        if match:
            return proxy_refusal(proxy, target, int(match.group(1)), None)
        return f"the proxy {proxy.named} refused to connect to {target}: {text}", False
    return None


def proxy_error(exc: BaseException, proxy: Proxy | None, target: str) -> ConnectError | None:
    """A :class:`~alorws.errors.ConnectError` for a failure of ``proxy`` (see
    :func:`proxy_failure`), or None if ``exc`` is not one."""
    if proxy is None:
        return None
    failure = proxy_failure(exc, proxy, target)
    return None if failure is None else ConnectError(failure[0])


def proxy_refusal(proxy: Proxy, target: str, status: int, reason: str | None) -> tuple[str, bool]:
    """The message for ``proxy`` refusing to connect to ``target`` with HTTP ``status``, and
    whether that is final."""
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    hint = ""
    if status == 407:
        hint = (
            "; give the proxy's user and password in its URL (http://user:password@host:port)"
            if proxy.username is None
            else "; check the proxy's user and password"
        )
    text = f"proxy {proxy.named} refused CONNECT to {target}: {status} {reason}"
    # 407 and 403 are the proxy's decision about us: asking again gives the same answer.
    return f"{text.rstrip()}{hint}", status in (403, 407)
