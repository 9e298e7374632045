"""The ``alorws`` command line (``python -m alorws`` works too); docs/cli.md has every command.

The target of every command that talks to a server is shown before anything else (``target:
ALOR dev``, ``target: simulator at http://…``) and is one of:

* ``--env dev`` (the default: ALOR's test environment, no real money) or ``--env prod``
  (real money: only when asked for by name);
* ``--sim``: the local simulator: a running ``alorws sim`` found through its state file
  (:mod:`alorws.sim.statefile`), else one started in this process (said on screen);
* ``--url URL``: any compatible server, treated as a real one (orders ask for confirmation).

The refresh token comes from ``--token-file PATH`` or ``ALOR_REFRESH_TOKEN``; it is never a
command-line argument and never printed.

Live commands (``quotes``, ``book``, ``trades``, ``bars``, ``portfolio``, ``status``,
``record``, ``replay``) run until Ctrl-C, or ``--duration S`` seconds. Their first line says
whether the data is live, or that the connection is down and being re-established ("reconnecting…
(attempt N)"), and how old the last message is. On a terminal they redraw a table; otherwise they
print a line per second (and every change of the connection) and the table at the end.

Errors print one line and a hint that fits them on stderr; exit codes: 0 done, 1 failed (the
server refused, bad input found after parsing), 2 usage error, 3 the server could not be reached,
4 an order or cancel was not confirmed, 130 interrupted. ``-v``/``-vv`` show alorws' own log
(INFO/DEBUG) on stderr, ``--log-file PATH`` writes it to a file, ``--debug`` adds tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import functools
import logging
import os
import re
import socket
import sys
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import urlsplit

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .sim.command import ADMIN_HELP, sim_command, usage_error


if TYPE_CHECKING:
    from .client import AlorClient, Stream
    from .metrics import ClientCollector, MetricsServer
    from .protocol.commands import Command
    from .protocol.market import Bar, Quote, Trade
    from .sim.app import Simulator


__all__ = ["EXIT_NETWORK", "EXIT_NOT_CONFIRMED", "app", "main"]

TOKEN_ENV = "ALOR_REFRESH_TOKEN"
#: Exit codes besides 0 (done), 1 (failed), 2 (usage) and 130 (interrupted).
EXIT_NETWORK = 3
EXIT_NOT_CONFIRMED = 4
#: Seconds a one-shot check that the server's host answers may take (DNS and TCP connect).
PROBE_TIMEOUT = 5.0

_S = TypeVar("_S")
_M = TypeVar("_M")

app = typer.Typer(
    name="alorws",
    help="Toolkit for the ALOR Broker API: live data, orders, history, recording, metrics, "
    "and a local simulator. Every command takes -h.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from . import __version__
        from .client import COMPILED_READER

        reader = "compiled reader" if COMPILED_READER else "pure-Python reader"
        print(f"alorws {__version__} ({reader})")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_version, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Toolkit for the ALOR Broker API: live data, orders, history, recording, metrics, and a
    local simulator (`alorws sim`). Every command takes -h."""


def _serve_sim(options: Any) -> int:
    from .sim.app import run_from_command_line

    return run_from_command_line(options)


app.command("sim", epilog=ADMIN_HELP)(sim_command(_serve_sim))


# -- errors ------------------------------------------------------------------------------------

NETWORK_HINT = "check the network and --env/--url; try --sim for the local simulator"


class CliError(Exception):
    """A user-facing failure: one line, an optional hint, an exit code."""

    def __init__(self, message: str, hint: str | None = None, code: int = 1) -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code


_GUID_WHERE = re.compile(r"\s*\b(?:for|of) (?:request|command|subscription) '[^']*'")
_GUID_FIELD = re.compile(r"\s*[\(\[]?\bguid[= :]+'?[\w-]+'?[\)\]]?", re.IGNORECASE)
_SSL_REPR = re.compile(r"\s*ssl:(?:<[^>]*>|default|False|True|None)")


def clean(text: str) -> str:
    """``text`` fit for a user: one line, no token, no request guid, no Python object repr."""
    from .errors import scrub

    text = scrub(text)
    text = _GUID_WHERE.sub("", text)
    text = _GUID_FIELD.sub("", text)
    text = _SSL_REPR.sub("", text)
    return " ".join(text.split())


def _is_network(exc: BaseException) -> bool:
    from .errors import TransportError

    if isinstance(exc, TransportError | ConnectionError | socket.gaierror | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in (
        errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.ETIMEDOUT,
    )  # fmt: skip


def _describe(exc: BaseException) -> tuple[str, str | None, int]:
    """(message, hint, exit code) for any exception that reached the top."""
    from .errors import (
        AuthError,
        ConfigurationError,
        InvalidArgumentError,
        LimitError,
        OrderRejected,
        OrderStatusUnknown,
        ServerRejected,
    )

    if isinstance(exc, CliError):
        return clean(str(exc)), exc.hint, exc.code
    if isinstance(exc, AuthError):
        return (
            clean(f"{type(exc).__name__}: {exc}"),
            (
                "check the refresh token (--token-file or ALOR_REFRESH_TOKEN) and that it belongs "
                "to --env; try --sim for the local simulator"
            ),
            1,
        )
    if isinstance(exc, OrderRejected):
        text = f"OrderRejected: the server refused the command: {exc.http_code} {exc.message}"
        return clean(text), "nothing was executed", 1
    if isinstance(exc, ServerRejected):
        text = f"{type(exc).__name__}: the server refused: {exc.http_code} {exc.message}"
        return clean(text), "check the command's arguments (`alorws COMMAND -h`)", 1
    if isinstance(exc, OrderStatusUnknown):
        return (
            clean(f"OrderStatusUnknown: {exc}"),
            ("look the order up with `alorws orders` before sending it again"),
            1,
        )
    if isinstance(exc, InvalidArgumentError | ConfigurationError):
        return clean(f"{type(exc).__name__}: {exc}"), "see `alorws COMMAND -h`", 1
    if isinstance(exc, LimitError):
        return clean(f"{type(exc).__name__}: {exc}"), "subscribe fewer streams", 1
    if _is_network(exc):
        return clean(f"{type(exc).__name__}: {exc}"), NETWORK_HINT, EXIT_NETWORK
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        text = f"{exc.strerror or type(exc).__name__}{where}"
        return clean(text), "check the path and its permissions", 1
    return clean(f"{type(exc).__name__}: {exc}"), None, 1


def _report(exc: BaseException, debug: bool) -> int:
    """Print ``exc`` once as one line (and a hint) on stderr; the traceback only with --debug."""
    if debug:
        sys.stderr.write("".join(traceback.format_exception(exc)))
    message, hint, code = _describe(exc)
    sys.stderr.write(f"alorws: error: {message or type(exc).__name__}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    sys.stderr.flush()
    return code


# -- logging -----------------------------------------------------------------------------------

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Scrubbed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from .errors import scrub

        return scrub(super().format(record))


def _reset_logging() -> None:
    root = logging.getLogger("alorws")
    for handler in list(root.handlers):
        if getattr(handler, "_alorws_cli", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.NOTSET)
    root.propagate = True


def _setup_logging(
    verbose: int, log_file: Path | None, debug: bool, *, service: bool = False
) -> None:
    """alorws' loggers only (asyncio's and aiohttp's stay as they are): on stderr with -v
    (INFO) or -vv/--debug (DEBUG); into ``log_file`` at INFO (DEBUG with -vv). Without either,
    a command prints nothing of the log (it reports its own errors, once), and a service (the
    gateway) its warnings on stderr: they are how its operator learns of an outage."""
    _reset_logging()
    root = logging.getLogger("alorws")
    level = logging.DEBUG if verbose >= 2 or debug else logging.INFO
    handlers: list[logging.Handler] = []
    if verbose or debug:
        handlers.append(logging.StreamHandler(sys.stderr))
    if log_file is not None:
        try:
            handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
        except OSError as exc:
            raise CliError(
                f"cannot open the log file {str(log_file)!r}: {exc.strerror}",
                "pass --log-file with a writable path",
            ) from None
    if not handlers:
        handlers.append(logging.StreamHandler(sys.stderr) if service else logging.NullHandler())
        level = logging.WARNING
    for handler in handlers:
        handler.setFormatter(_Scrubbed(_LOG_FORMAT))
        handler._alorws_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False  # not to the root logger: no lastResort copy of a warning


# -- common options ----------------------------------------------------------------------------


class Env(enum.StrEnum):
    prod = "prod"
    dev = "dev"


SimOpt = Annotated[
    bool,
    typer.Option(
        "--sim",
        help="The local simulator: a running `alorws sim` (found through its state file), "
        "else one started in this process.",
    ),
]
EnvOpt = Annotated[
    Env | None,
    typer.Option(
        "--env", help="ALOR environment: dev (ALOR's test one; the default) or prod (real money)."
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Base URL of a compatible server, e.g. http://127.0.0.1:8765."),
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help=(
            f"File holding the refresh token (default: ${TOKEN_ENV}, then "
            "~/.config/alorws/refresh_token, then the OS keyring)."
        ),
        dir_okay=False,
    ),
]
VerboseOpt = Annotated[
    int,
    typer.Option(
        "-v", "--verbose", count=True, help="Show alorws' log on stderr (-v INFO, -vv DEBUG)."
    ),
]
LogFileOpt = Annotated[
    Path | None,
    typer.Option("--log-file", dir_okay=False, help="Append alorws' log to this file."),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and the DEBUG log.")]
DurationOpt = Annotated[
    float | None,
    typer.Option("--duration", min=0.0, help="Run for S seconds, then exit 0 (default: Ctrl-C)."),
]
MetricsOpt = Annotated[
    int | None,
    typer.Option("--metrics-port", min=0, max=65535, help="Serve Prometheus metrics on this port."),
]
PortfolioOpt = Annotated[
    str | None,
    typer.Option("--portfolio", help="Portfolio id (default with --sim: the demo's first)."),
]
ExchangeOpt = Annotated[
    str,
    typer.Option(
        "--exchange", help="Exchange of symbols given without one (EXCHANGE:SYMBOL wins)."
    ),
]
BoardOpt = Annotated[
    str | None, typer.Option("--board", help="Board (instrumentGroup), e.g. TQBR; default: none.")
]


@dataclass
class Target:
    """Where to connect and with which token (never printed)."""

    sim: bool = False
    env: Env = Env.dev
    url: str | None = None
    token_file: Path | None = None
    metrics_port: int | None = None
    #: The state of a running `alorws sim` that --sim found, or None (start one in-process).
    running_sim: dict[str, Any] | None = None

    @property
    def real(self) -> bool:
        """Whether orders here may be real (anything but the simulator reached with --sim)."""
        return not self.sim

    def describe(self) -> str:
        if self.sim:
            if self.running_sim is not None:
                pid = self.running_sim.get("pid")
                return f"simulator at {self.running_sim['url']} (alorws sim, pid {pid})"
            return "simulator in-process"
        if self.url is not None:
            return f"server at {self.url}"
        return f"ALOR {self.env.value}"


def _read_token(target: Target) -> str:
    from .client.auth import resolve_refresh_token
    from .errors import ConfigurationError

    # An explicit --token-file goes through the same checks as the default file (a regular
    # file, readable by its owner only, one line): a world-readable secret is refused.
    try:  # else ALOR_REFRESH_TOKEN, the token file, the OS keyring (docs/client.md, "Tokens")
        return resolve_refresh_token(token_file=target.token_file)
    except ConfigurationError as exc:
        hint = (
            "pass --token-file with the file holding your refresh token (chmod 600)"
            if target.token_file is not None
            else "pass --token-file PATH, or use --sim for the simulator"
        )
        raise CliError(str(exc), hint) from None


def _target(
    sim: bool,
    env: Env | None,
    url: str | None,
    token_file: Path | None,
    verbose: int = 0,
    log_file: Path | None = None,
    debug: bool = False,
    metrics_port: int | None = None,
    *,
    service: bool = False,
) -> Target:
    _setup_logging(verbose, log_file, debug, service=service)
    if sim and (env is not None or url is not None):
        given = " and ".join(o for o, v in (("--env", env), ("--url", url)) if v is not None)
        raise CliError(
            f"--sim and {given} exclude each other",
            "--sim is the local simulator; drop it to use " + given,
            code=2,
        )
    if env is not None and url is not None:
        raise CliError("--env and --url exclude each other", "pick one target", code=2)
    running = None
    if sim:
        from .sim.statefile import read_state

        running = read_state()
        if running is not None and not _answers(running["url"]):
            running = None  # a stale file (the simulator hangs, or its port moved on)
    return Target(
        sim=sim,
        env=env or Env.dev,
        url=url,
        token_file=token_file,
        metrics_port=metrics_port,
        running_sim=running,
    )


def _answers(url: str) -> bool:
    """Whether something accepts TCP connections at ``url``'s host and port (loopback)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


async def _probe(url: str) -> None:
    """Fail fast, with a short message, when ``url``'s host cannot be resolved or reached:
    the client would otherwise retry the token request for many seconds."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    loop = asyncio.get_running_loop()
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CliError(
            f"cannot resolve {host!r}: {exc.strerror or exc}", NETWORK_HINT, EXIT_NETWORK
        ) from None
    except TimeoutError:
        raise CliError(
            f"no answer resolving {host!r} within {PROBE_TIMEOUT:g} s", NETWORK_HINT, EXIT_NETWORK
        ) from None
    reason = "no address"
    for *_, address in infos[:4]:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                _, writer = await asyncio.open_connection(str(address[0]), int(address[1]))
        except TimeoutError:
            reason = f"no answer within {PROBE_TIMEOUT:g} s"
            continue
        except OSError as exc:
            reason = (os.strerror(exc.errno) if exc.errno else type(exc).__name__).lower()
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise CliError(f"cannot connect to {where}: {reason}", NETWORK_HINT, EXIT_NETWORK)


@dataclass
class Session:
    """An open client (and the simulator behind it, when started in-process)."""

    client: AlorClient
    target: Target
    sim: Simulator | None = None
    collector: ClientCollector | None = None
    metrics: MetricsServer | None = None

    def portfolio(self, given: str | None) -> str:
        if given:
            return given
        if self.sim is not None:
            return str(self.sim.demo.portfolios[0])
        running = self.target.running_sim
        if self.target.sim and running is not None and running.get("portfolios"):
            return str(running["portfolios"][0])
        known = ", ".join(self.client.portfolios) or "none in the token"
        raise CliError("--portfolio is required", f"your portfolios: {known}")


def _serve_metrics(start: Callable[[_S, int], _M], source: _S, port: int) -> _M:
    """``start(source, port)``: the Prometheus endpoint of ``--metrics-port``, with a port
    already in use said as such."""
    try:
        return start(source, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                f"--metrics-port {port} is in use", "pick another port, or 0 for a free one"
            ) from None
        raise


def _note(text: str) -> None:
    """A line about the run itself (the target, ...) on a terminal's stderr: stdout holds only
    results, and a script reading stderr sees just the errors (results and errors name the
    target themselves where it matters: orders, live views)."""
    if sys.stderr.isatty():
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


@contextlib.asynccontextmanager
async def _connect(
    target: Target, console: Console | None = None, probe: bool = True
) -> AsyncIterator[Session]:
    """Open a client for ``target`` (and the in-process simulator, if that is the target);
    ``probe``: first check that the hosts answer, failing in seconds when they do not."""
    from .client import AlorClient
    from .client.endpoints import resolve_endpoints
    from .protocol.backoff import Backoff

    async with contextlib.AsyncExitStack() as stack:
        sim: Simulator | None = None
        base_url: str | None
        cafile: str | None = None
        if target.sim and target.running_sim is None:
            from .sim.app import Simulator

            sim = await stack.enter_async_context(Simulator(port=0, seed=1, rate=50.0))
            token, base_url = sim.demo_refresh_token, sim.url
            if console is not None:
                _note(
                    f"target: simulator in-process at {sim.url} (no running `alorws sim` found; "
                    "start one to share it between commands)"
                )
        elif target.sim:
            assert target.running_sim is not None
            token, base_url = target.running_sim["refresh_token"], target.running_sim["url"]
            cafile = target.running_sim.get("cert")
            if console is not None:
                _note(f"target: {target.describe()}")
        else:
            token, base_url = _read_token(target), target.url
            if console is not None:
                _note(f"target: {target.describe()}")
        endpoints = resolve_endpoints(target.env.value, base_url)
        if sim is None and probe:
            for url in dict.fromkeys((endpoints.oauth, endpoints.http)):
                await _probe(url)
        client = AlorClient(
            token,
            env=target.env.value,
            base_url=base_url,
            cafile=cafile,
            backoff=Backoff(base=0.05, cap=2.0) if target.sim else None,
        )
        await stack.enter_async_context(client)
        session = Session(client, target, sim)
        if target.metrics_port is not None:
            from .metrics import start_metrics

            server = _serve_metrics(start_metrics, client, target.metrics_port)
            stack.callback(server.close)
            session.metrics, session.collector = server, server.collector
            if console is not None:
                console.print(f"metrics: {server.url}")
        yield session


# -- instruments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instrument:
    """A symbol as typed (case kept), its exchange and board."""

    symbol: str
    exchange: str
    board: str | None = None
    label: str = ""

    def options(self) -> dict[str, Any]:
        return {"exchange": self.exchange, "board": self.board}


def _instrument(text: str, exchange: str, board: str | None) -> Instrument:
    """``SBER``, ``SiZ6`` or ``MOEX:SBER`` (the exchange given wins over ``--exchange``)."""
    raw = text.strip()
    ex, sep, symbol = raw.rpartition(":")
    if not sep:
        ex, symbol = exchange, raw
    if not symbol or not ex or ":" in ex or not re.fullmatch(r"[\w.\-@/ ]+", symbol):
        raise CliError(
            f"bad instrument {text!r}",
            "give SYMBOL (e.g. SBER, SiZ6) or EXCHANGE:SYMBOL (e.g. MOEX:SBER)",
        )
    label = raw if sep else symbol
    return Instrument(symbol=symbol, exchange=ex.strip().upper(), board=board, label=label)


def _instruments(texts: Sequence[str], exchange: str, board: str | None) -> list[Instrument]:
    found: list[Instrument] = []
    for text in texts:
        inst = _instrument(text, exchange, board)
        if inst not in found:
            found.append(inst)
    return found


def _unknown(exc: BaseException) -> str | None:
    """What to show in an instrument's row when its subscription was refused, or None when
    ``exc`` is not a refusal of that one subscription."""
    from .errors import InvalidArgumentError, ServerRejected

    if isinstance(exc, ServerRejected):
        if "unknown instrument" in exc.message.lower() or exc.http_code == 404:
            return "unknown instrument"
        return clean(f"refused: {exc.http_code} {exc.message}")
    if isinstance(exc, InvalidArgumentError):
        return clean(str(exc))
    return None


async def _subscribed(
    open_stream: Callable[[Instrument], Any], inst: Instrument
) -> tuple[Any, Instrument]:
    """Subscribe ``open_stream(inst)``; a symbol the server does not know is tried once in
    upper case (tickers of shares are; futures such as SiZ6 are not). Returns the subscribed
    stream and the instrument that worked; raises the first refusal."""
    from .errors import ServerRejected

    stream = open_stream(inst)
    try:
        return await stream.subscribe(), inst
    except ServerRejected as exc:
        upper = inst.symbol.upper()
        if upper == inst.symbol or _unknown(exc) != "unknown instrument":
            raise
        retry = Instrument(upper, inst.exchange, inst.board, inst.label.upper())
        try:
            return await open_stream(retry).subscribe(), retry
        except ServerRejected:
            raise exc from None


# -- output ------------------------------------------------------------------------------------


def _console() -> Console:
    interactive = sys.stdout.isatty()
    # Not on a terminal: tables 120 columns wide, text lines never wrapped (grep-able).
    return Console(
        markup=False,
        highlight=False,
        emoji=False,
        width=None if interactive else 120,
        soft_wrap=not interactive,
    )


def _num(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _msk(seconds: float) -> datetime:
    from .protocol.timeutil import MSK

    return datetime.fromtimestamp(seconds, MSK)


def _clock(ms: int | None) -> str:
    """Milliseconds -> ``HH:MM:SS.mmm`` Moscow time."""
    if ms is None:
        return "-"
    return _msk(ms / 1000).strftime("%H:%M:%S.%f")[:-3]


def _stamp() -> str:
    return _msk(time.time()).strftime("%H:%M:%S")


class Health:
    """The truth about a live view's connection: live, connecting, or reconnecting (attempt
    N, down for S seconds), and how old the last message is. Read from the client's lane
    stats on every redraw."""

    def __init__(self, session: Session | None, what: str) -> None:
        self.session = session
        self.what = what
        self.last_data: float | None = None
        self._baseline: dict[int, int] = {}
        self._seen_open: set[int] = set()
        self._down_since: float | None = None
        self._said = "live"

    def touch(self) -> None:
        """Data arrived."""
        self.last_data = time.monotonic()

    def state(self) -> tuple[str, bool]:
        """(text, live) of the connection now."""
        if self.session is None:
            return "replay", True
        down: list[dict[str, Any]] = []
        for lane in self.session.client.stats()["lanes"]:
            lane_id, failures = int(lane["id"]), int(lane["connect_failures"])
            if lane["state"] == "open":
                self._baseline[lane_id] = failures
                self._seen_open.add(lane_id)
            elif lane["state"] in ("connecting", "backoff") or lane["subscriptions"]:
                down.append(lane)
        if not down:
            self._down_since = None
            return "live", True
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        attempt = 1 + max(int(x["connect_failures"]) - self._baseline.get(int(x["id"]), 0)
                          for x in down)  # fmt: skip
        if any(int(x["id"]) in self._seen_open for x in down):
            return (
                f"reconnecting... (attempt {attempt}), down {now - self._down_since:.0f} s",
                False,
            )
        return f"connecting... (attempt {attempt})", False

    def age(self) -> str:
        if self.last_data is None:
            return "no data yet"
        return f"last data {time.monotonic() - self.last_data:.1f} s ago"

    def header(self) -> Text:
        text, live = self.state()
        style = "green" if live else "bold red"
        return Text.assemble((self.what, "bold"), "  ", (text, style), "  ", (self.age(), "dim"))

    def change(self) -> str | None:
        """A line when the connection changed since the last call (for plain output)."""
        text, live = self.state()
        key = "live" if live else text.split(" (")[0]
        if key == self._said:
            return None
        self._said = key
        return "connection restored: live" if live else f"connection lost: {text}"

    def prefix(self) -> str:
        text, live = self.state()
        return "" if live else f"[{text}] "


async def _run_live(
    session: Session | None,
    console: Console,
    workers: Sequence[Coroutine[Any, Any, None]],
    render: Callable[[], RenderableType],
    line: Callable[[], str] | None,
    duration: float | None,
    health: Health,
) -> None:
    """Run ``workers`` until ``duration`` passes (or Ctrl-C, or they all end), redrawing the
    health line and ``render()`` on a terminal, printing ``line()`` every second otherwise (and
    the final view at the end). A worker's exception ends the run and is raised."""
    tasks = [asyncio.create_task(w) for w in workers]
    collector = session.collector if session is not None else None

    def view() -> RenderableType:
        body = render()  # first: rendering may note fresh data (the book counts updates)
        return Group(health.header(), body)

    try:
        if console.is_terminal:
            with Live(view(), console=console, refresh_per_second=4) as live:

                def redraw() -> None:
                    if collector is not None:
                        collector.poll()
                    live.update(view())

                await _supervise(tasks, duration, redraw, 0.25)
        else:

            def plain() -> None:
                if collector is not None:
                    collector.poll()
                change = health.change()
                if change is not None:
                    console.print(f"{_stamp()} {change}")
                if line is not None:
                    console.print(f"{_stamp()} {health.prefix()}{line()}")

            await _supervise(tasks, duration, plain, 1.0)
            console.print(view())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _supervise(
    tasks: list[asyncio.Task[None]],
    duration: float | None,
    tick: Callable[[], None],
    interval: float,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    while True:
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if tasks and all(t.done() for t in tasks):
            return
        now = loop.time()
        if deadline is not None and now >= deadline:
            return
        wait = interval if deadline is None else min(interval, deadline - now)
        pending = [t for t in tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(wait)
        if deadline is None or loop.time() < deadline or not tasks:
            tick()


def _run(coro: Awaitable[None]) -> None:
    async def wrapper() -> None:
        await coro

    asyncio.run(wrapper())


@dataclass
class Rows:
    """Per-instrument state of a live view: the instruments, and the ones refused."""

    instruments: list[Instrument]
    refused: dict[str, str] = field(default_factory=dict)

    def check_any(self) -> None:
        """Raise when every instrument was refused (nothing to show)."""
        if self.instruments and len(self.refused) == len(self.instruments):
            listed = "; ".join(f"{k}: {v}" for k, v in self.refused.items())
            raise CliError(
                f"nothing to show: {listed}",
                "check the symbols (case matters for futures, e.g. SiZ6) and --exchange/--board",
            )


async def _live_rows(
    target: Target,
    console: Console,
    rows: Rows,
    open_stream: Callable[[Session, Instrument], Any],
    consume: Callable[[Any, Instrument], Awaitable[None]],
    render: Callable[[], RenderableType],
    line: Callable[[], str] | None,
    duration: float | None,
    health: Health,
) -> None:
    """A market-data view: connect, follow each row's stream (:func:`_follow`: a refusal marks
    its row only), run live (:func:`_run_live`), then fail if no row got a stream."""
    async with _connect(target, console) as session:
        health.session = session
        workers = [
            _follow(rows, inst, functools.partial(open_stream, session), consume)
            for inst in rows.instruments
        ]
        await _run_live(session, console, workers, render, line, duration, health)
    rows.check_any()


async def _follow(
    rows: Rows,
    inst: Instrument,
    open_stream: Callable[[Instrument], Any],
    consume: Callable[[Any, Instrument], Awaitable[None]],
) -> None:
    """Subscribe one instrument's stream and consume it; a refusal marks its row only."""
    try:
        stream, used = await _subscribed(open_stream, inst)
    except Exception as exc:
        why = _unknown(exc)
        if why is None:
            raise
        rows.refused[inst.label] = why
        return
    async with stream:
        await consume(stream, used)


# -- sim and demo --------------------------------------------------------------------------------


@app.command()
def demo(
    duration: Annotated[
        float, typer.Option("--duration", min=1.0, help="Seconds to run (about).")
    ] = 30.0,
    out: Annotated[Path, typer.Option("--out", help="Where to record.")] = Path("demo-data"),
    metrics_port: MetricsOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """A bounded tour against an in-process simulator: live view, an order placed, modified and
    cancelled, a dropped connection restored, everything recorded, a summary."""
    from . import _demo

    _setup_logging(verbose, log_file, debug)
    code = _demo.run(duration=duration, out=out, console=_console(), metrics_port=metrics_port)
    raise typer.Exit(code)


# -- market data ---------------------------------------------------------------------------------


@app.command()
def quotes(
    symbols: Annotated[
        list[str], typer.Argument(help="Symbols, e.g. SBER GAZP SiZ6 MOEX:LKOH (case kept).")
    ],
    exchange: ExchangeOpt = "MOEX",
    board: BoardOpt = None,
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """A live table of quotes; an unknown symbol marks its own row, the rest stream on."""
    target = _target(sim, env, url, token_file, verbose, log_file, debug, metrics_port)
    console = _console()
    rows = Rows(_instruments(symbols, exchange, board))
    latest: dict[str, Quote] = {}
    counts: dict[str, int] = {}
    health = Health(None, target.describe())

    names: dict[str, str] = {}  # label as typed -> as the server spells the symbol

    async def consume(stream: Any, used: Instrument) -> None:
        async for quote in stream:
            if used.label not in names and quote.symbol:
                prefix = used.label[: -len(used.symbol)] if used.label != used.symbol else ""
                names[used.label] = f"{prefix}{quote.symbol}"
            latest[used.label] = quote
            counts[used.label] = counts.get(used.label, 0) + 1
            health.touch()

    def label(inst: Instrument) -> str:
        return inst.label if inst.label in latest else inst.label.upper()

    def render() -> Table:
        table = Table(title="Quotes")
        for col in ("Symbol", "Last", "Bid", "Ask", "Chg %", "Volume", "Updates", "Note"):
            table.add_column(col, justify="left" if col in ("Symbol", "Note") else "right")
        stale = "" if health.state()[1] else "stale"
        for inst in rows.instruments:
            key = label(inst)
            q = latest.get(key)
            if inst.label in rows.refused:
                note = Text(rows.refused[inst.label], style="red")
                table.add_row(inst.label, "-", "-", "-", "-", "-", "0", note)
                continue
            if q is None:
                table.add_row(inst.label, "-", "-", "-", "-", "-", "0", stale or "waiting")
                continue
            change = q.change_percent
            if change is None and q.last_price is not None and q.prev_close_price:
                change = (q.last_price / q.prev_close_price - 1) * 100
            table.add_row(
                names.get(key, key), _num(q.last_price), _num(q.bid), _num(q.ask),
                _num(change), _num(q.volume), str(counts.get(key, 0)), stale,
            )  # fmt: skip
        return table

    def line() -> str:
        parts = []
        for inst in rows.instruments:
            key = label(inst)
            if inst.label in rows.refused:
                parts.append(f"{inst.label} ({rows.refused[inst.label]})")
            else:
                price = _num(latest[key].last_price) if key in latest else "-"
                parts.append(f"{names.get(key, key)} {price}")
        return "  ".join(parts)

    def open_stream(session: Session, i: Instrument) -> Any:
        return session.client.quotes(i.symbol, **i.options())

    _run(_live_rows(target, console, rows, open_stream, consume, render, line, duration, health))


@app.command()
def book(
    symbol: Annotated[str, typer.Argument(help="Symbol, e.g. SBER or MOEX:SBER.")],
    depth: Annotated[int, typer.Option("--depth", min=1, max=50, help="Levels a side.")] = 10,
    exchange: ExchangeOpt = "MOEX",
    board: BoardOpt = None,
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """A live order book ladder."""
    from .client import OrderBookView

    target = _target(sim, env, url, token_file, verbose, log_file, debug, metrics_port)
    console = _console()
    rows = Rows([_instrument(symbol, exchange, board)])
    inst = rows.instruments[0]
    view = OrderBookView()
    health = Health(None, target.describe())

    seen = [0]

    async def consume(stream: Any, used: Instrument) -> None:
        await view.follow(stream)

    def fresh() -> None:
        if view.updates != seen[0]:  # the view counts updates: a new one is fresh data
            seen[0] = view.updates
            health.touch()

    def render() -> Table:
        fresh()
        state = " (stale)" if view.stale or not health.state()[1] else ""
        refused = rows.refused.get(inst.label)
        title = f"{inst.label} book: spread {_num(view.spread)}, mid {_num(view.mid, 3)}{state}"
        table = Table(title=f"{inst.label}: {refused}" if refused else title)
        for col in ("Bid vol", "Bid", "Ask", "Ask vol"):
            table.add_column(col, justify="right")
        bids, asks = view.bids, view.asks
        for i in range(max(len(bids), len(asks), 1) if view.book else 0):
            bid = bids[i] if i < len(bids) else None
            ask = asks[i] if i < len(asks) else None
            table.add_row(
                _num(bid.volume) if bid else "",
                Text(_num(bid.price), style="green") if bid else "",
                Text(_num(ask.price), style="red") if ask else "",
                _num(ask.volume) if ask else "",
            )
        return table

    def line() -> str:
        fresh()
        return (
            f"{inst.label} bid {_num(view.best_bid)} ask {_num(view.best_ask)} "
            f"spread {_num(view.spread)} updates {view.updates}"
        )

    def open_stream(session: Session, i: Instrument) -> Any:
        return session.client.order_book(i.symbol, depth=depth, **i.options())

    _run(_live_rows(target, console, rows, open_stream, consume, render, line, duration, health))


@app.command()
def trades(
    symbol: Annotated[str, typer.Argument(help="Symbol, e.g. SBER or MOEX:SBER.")],
    last: Annotated[int, typer.Option("--last", min=1, help="Trades shown.")] = 20,
    exchange: ExchangeOpt = "MOEX",
    board: BoardOpt = None,
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """The trade tape, times in Moscow time (a line per trade when not on a terminal)."""
    target = _target(sim, env, url, token_file, verbose, log_file, debug, metrics_port)
    console = _console()
    rows = Rows([_instrument(symbol, exchange, board)])
    inst = rows.instruments[0]
    tape: deque[Trade] = deque(maxlen=last)
    total = [0, 0]  # trades, lots
    health = Health(None, target.describe())

    def fmt(t: Trade) -> tuple[str, str, str, str]:
        side = t.side.value if t.side is not None else "-"
        return _clock(t.timestamp), side, _num(t.price), _num(t.qty)

    async def consume(stream: Any, used: Instrument) -> None:
        async for trade in stream:
            tape.append(trade)
            total[0] += 1
            total[1] += trade.qty
            health.touch()
            if not console.is_terminal:
                console.print(" ".join((*fmt(trade), used.label)))

    def render() -> Table:
        refused = rows.refused.get(inst.label)
        title = f"{inst.label} tape: {total[0]} trades, {total[1]:,} lots"
        table = Table(title=f"{inst.label}: {refused}" if refused else title)
        for col in ("Time (MSK)", "Side", "Price", "Qty"):
            table.add_column(col, justify="right")
        for trade in reversed(tape):
            time_, side, price, qty = fmt(trade)
            style = "green" if side == "buy" else "red"
            table.add_row(time_, Text(side, style=style), price, qty)
        return table

    def open_stream(session: Session, i: Instrument) -> Any:
        return session.client.all_trades(i.symbol, **i.options())

    _run(_live_rows(target, console, rows, open_stream, consume, render, None, duration, health))


_SPANS = {"D": 86_400, "W": 7 * 86_400, "M": 31 * 86_400, "Y": 366 * 86_400}


def _span(tf: str) -> int:
    key = tf.strip().upper()
    if key in _SPANS:
        return _SPANS[key]
    try:
        seconds = int(key)
    except ValueError:
        raise CliError(
            f"bad timeframe {tf!r}", "use seconds (1, 60, 300, 3600) or D, W, M, Y"
        ) from None
    if seconds <= 0:
        raise CliError(f"bad timeframe {tf!r}", "use a positive number of seconds")
    return seconds


def _tf(tf: str) -> int | str:
    key = tf.strip().upper()
    return key if key in _SPANS else int(key)


def _bar_time(t: int, tf: str) -> str:
    """A candle's open time in Moscow time, as precise as the timeframe needs."""
    span = _span(tf)
    fmt = (
        "%Y-%m-%d"
        if span >= 86_400
        else "%Y-%m-%d %H:%M"
        if span % 60 == 0
        else "%Y-%m-%d %H:%M:%S"
    )
    return _msk(t).strftime(fmt)


def _bars_table(title: str, bars: Sequence[Bar], tf: str, caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption)
    for col in ("Time (MSK)", "Open", "High", "Low", "Close", "Volume"):
        table.add_column(col, justify="right")
    for b in bars:
        table.add_row(
            _bar_time(b.time, tf), _num(b.open), _num(b.high), _num(b.low), _num(b.close),
            _num(b.volume),
        )  # fmt: skip
    return table


@app.command()
def bars(
    symbol: Annotated[str, typer.Argument(help="Symbol, e.g. SBER or MOEX:SBER.")],
    tf: Annotated[str, typer.Option("--tf", help="Timeframe: seconds or D/W/M/Y.")] = "60",
    last: Annotated[int, typer.Option("--last", min=1, help="Candles shown.")] = 15,
    exchange: ExchangeOpt = "MOEX",
    board: BoardOpt = None,
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Live candles (the last few, then every update of the forming one), Moscow time."""
    target = _target(sim, env, url, token_file, verbose, log_file, debug, metrics_port)
    console = _console()
    rows = Rows([_instrument(symbol, exchange, board)])
    inst = rows.instruments[0]
    span = _span(tf)
    candles: dict[int, Bar] = {}
    updates = [0]
    health = Health(None, target.describe())

    async def consume(stream: Any, used: Instrument) -> None:
        async for bar in stream:
            candles[bar.time] = bar
            updates[0] += 1
            health.touch()
            for old in sorted(candles)[:-last]:
                del candles[old]

    def shown() -> list[Bar]:
        return [candles[t] for t in sorted(candles)]

    def render() -> Table:
        refused = rows.refused.get(inst.label)
        if refused:
            return _bars_table(f"{inst.label}: {refused}", [], tf)
        return _bars_table(f"{inst.label} {tf} candles ({updates[0]} updates)", shown(), tf)

    def line() -> str:
        got = shown()
        if not got:
            return f"{inst.label} {tf}: no candles yet"
        b = got[-1]
        return (
            f"{inst.label} {tf} {_bar_time(b.time, tf)} MSK O {_num(b.open)} H {_num(b.high)} "
            f"L {_num(b.low)} C {_num(b.close)} V {b.volume:,}"
        )

    def open_stream(session: Session, i: Instrument) -> Any:
        since = int(time.time()) - span * last
        return session.client.bars(i.symbol, _tf(tf), from_=since, **i.options())

    _run(_live_rows(target, console, rows, open_stream, consume, render, line, duration, health))


# -- account -------------------------------------------------------------------------------------


def _order_time(iso: str | None) -> str:
    if not iso:
        return "-"
    from .protocol.timeutil import parse_iso, to_msk

    try:
        return to_msk(parse_iso(iso)).strftime("%H:%M:%S")
    except ValueError:
        return iso


@app.command()
def portfolio(
    portfolio: Annotated[
        str | None, typer.Argument(help="Portfolio id (default with --sim: the demo's first).")
    ] = None,
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Positions, orders and the summary of a portfolio, live."""
    from .protocol.account import Order, Position, Summary

    target = _target(sim, env, url, token_file, verbose, log_file, debug, metrics_port)
    console = _console()
    positions: dict[str, Position] = {}
    orders: dict[str, Order] = {}
    summary: list[Summary] = []
    chosen = [portfolio or ""]
    health = Health(None, target.describe())

    async def follow_positions(session: Session) -> None:
        async with session.client.positions(chosen[0]) as stream:
            async for p in stream:
                positions[p.symbol] = p
                health.touch()

    async def follow_orders(session: Session) -> None:
        async with session.client.orders(chosen[0]) as stream:
            async for o in stream:
                orders[o.id] = o
                health.touch()

    async def follow_summary(session: Session) -> None:
        async with session.client.summaries(chosen[0]) as stream:
            async for s in stream:
                summary[:] = [s]
                health.touch()

    def render() -> RenderableType:
        head = Table(title=f"Portfolio {chosen[0]}")
        for col in ("Buying power", "Evaluation", "Liquidation value", "Profit", "Profit %"):
            head.add_column(col, justify="right")
        if summary:
            s = summary[0]
            head.add_row(
                _num(s.buying_power), _num(s.portfolio_evaluation),
                _num(s.portfolio_liquidation_value), _num(s.profit), _num(s.profit_rate),
            )  # fmt: skip
        pos = Table(title=f"Positions ({len(positions)})")
        for col in ("Symbol", "Qty", "Avg price", "Value", "Current value"):
            pos.add_column(col, justify="left" if col == "Symbol" else "right")
        for sym in sorted(positions):
            p = positions[sym]
            pos.add_row(
                sym, _num(p.qty_units, 0), _num(p.avg_price), _num(p.volume),
                _num(p.current_volume),
            )  # fmt: skip
        ords = Table(title=f"Orders ({len(orders)})")
        for col in ("Id", "Symbol", "Side", "Type", "Qty", "Filled", "Price", "Status", "MSK"):
            ords.add_column(col, justify="right")
        for o in sorted(orders.values(), key=lambda o: o.update_time or "")[-15:]:
            ords.add_row(
                o.id, o.symbol or "-", o.side.value if o.side else "-",
                o.type.value if o.type else "-", _num(o.qty_batch), _num(o.filled_qty_batch),
                _num(o.price), o.status.value if o.status else "-", _order_time(o.update_time),
            )  # fmt: skip
        return Group(head, pos, ords)

    def line() -> str:
        bp = _num(summary[0].buying_power) if summary else "-"
        return f"{chosen[0]}: buying power {bp}, {len(positions)} positions, {len(orders)} orders"

    async def body() -> None:
        async with _connect(target, console) as session:
            health.session = session
            chosen[0] = session.portfolio(portfolio)
            workers = [follow_positions(session), follow_orders(session), follow_summary(session)]
            await _run_live(session, console, workers, render, line, duration, health)

    _run(body())


@app.command("orders")
def orders_(
    show_all: Annotated[
        bool, typer.Option("--all", help="Also orders that are done (filled, cancelled...).")
    ] = False,
    portfolio: PortfolioOpt = None,
    exchange: ExchangeOpt = "MOEX",
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """List the working orders and stop orders of a portfolio (with --all: every order)."""
    target = _target(sim, env, url, token_file, verbose, log_file, debug)
    console = _console()

    async def body() -> None:
        async with _connect(target, console) as session:
            chosen = session.portfolio(portfolio)
            found = await _working(session, chosen, exchange, show_all)
        what = "Orders" if show_all else "Working orders"
        table = Table(
            title=f"{what} of {chosen}: {len(found)}",
            caption=f"on {target.describe()}; times MSK",
        )
        for col in ("Id", "Kind", "Symbol", "Side", "Qty", "Filled", "Price", "Stop", "Status",
                    "Placed (MSK)"):  # fmt: skip
            table.add_column(col, justify="right")
        for o in found:
            table.add_row(
                o.id, o.type.value if o.type else "-", o.symbol or "-",
                o.side.value if o.side else "-", _num(o.qty_batch), _num(o.filled_qty_batch),
                _num(getattr(o, "price", None)), _num(getattr(o, "stop_price", None)),
                o.status.value if o.status else "-", _order_time(o.trans_time),
            )  # fmt: skip
        console.print(table)

    _run(body())


async def _working(session: Session, portfolio: str, exchange: str, every: bool) -> list[Any]:
    """The portfolio's orders and stop orders (only the working ones unless ``every``)."""
    from .protocol.enums import OrderStatus

    http = session.client.http
    found: list[Any] = [*await http.orders(portfolio, exchange),
                        *await http.stop_orders(portfolio, exchange)]  # fmt: skip
    if not every:
        found = [o for o in found if o.status is OrderStatus.WORKING]
    return sorted(found, key=lambda o: o.trans_time or "")


def _confirm(question: str) -> bool:
    """Ask on stderr, read a line from stdin: only y/yes confirms; EOF (or no stdin) is no."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):  # no usable stdin
        answer = ""
    if not answer:
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


class OrderSide(enum.StrEnum):
    buy = "buy"
    sell = "sell"


class OrderKind(enum.StrEnum):
    limit = "limit"
    market = "market"
    stop = "stop"
    stoplimit = "stoplimit"


class Tif(enum.StrEnum):
    day = "day"
    ioc = "ioc"
    fok = "fok"
    gtc = "gtc"
    close = "close"
    book = "book"


_TIF = {
    Tif.day: "oneday", Tif.ioc: "immediateorcancel", Tif.fok: "fillorkill",
    Tif.gtc: "goodtillcancelled", Tif.close: "attheclose", Tif.book: "bookorcancel",
}  # fmt: skip


class _Capture:
    """Builds a command exactly as the client would send it, without sending it."""

    def __init__(self) -> None:
        from .client.order_methods import OrderAck, OrderMethods

        outer = self

        class Methods(OrderMethods):
            def _new_guid(self) -> str:
                import uuid

                return str(uuid.uuid4())

            async def send(self, command: Command) -> OrderAck:
                outer.command = command
                return OrderAck(order_number="", http_code=0, message="", guid=command.guid)

        self.command: Command | None = None
        self.methods = Methods()


def _price(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise CliError(f"{name} must be above 0, got {value:g}", f"give {name} a positive price")


@app.command()
def order(
    side: Annotated[OrderSide, typer.Argument(help="buy or sell.")],
    symbol: Annotated[str, typer.Argument(help="Symbol, e.g. SBER, SiZ6 or MOEX:SBER.")],
    quantity: Annotated[int, typer.Argument(help="Lots (a whole number above 0).")],
    market: Annotated[bool, typer.Option("--market", help="A market order.")] = False,
    limit: Annotated[
        float | None, typer.Option("--limit", help="Limit price (with --stop: stop-limit).")
    ] = None,
    stop: Annotated[
        float | None,
        typer.Option(
            "--stop", help="Stop (trigger) price: a stop order, or with --limit a stop-limit."
        ),
    ] = None,
    condition: Annotated[
        str | None,
        typer.Option(
            "--condition",
            help="Stop trigger: more, less, moreorequal, lessorequal (default: buy "
            "moreorequal, sell lessorequal).",
        ),
    ] = None,
    tif: Annotated[
        Tif | None,
        typer.Option("--tif", help="Time in force (default: the server's, a day)."),
    ] = None,
    comment: Annotated[str | None, typer.Option("--comment", help="Order comment.")] = None,
    portfolio: PortfolioOpt = None,
    exchange: ExchangeOpt = "MOEX",
    board: BoardOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the /cws command frame; send nothing.")
    ] = False,
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Place an order: --market, --limit P, --stop P (stop-market) or --stop P --limit L
    (stop-limit). Anywhere but --sim it shows the order and asks before sending (--yes skips).
    """
    from .protocol.commands import encode_command

    if quantity <= 0:
        raise CliError(
            f"quantity must be a whole number of lots above 0, got {quantity}",
            "e.g. `alorws order buy SBER 1 --limit 300`; to sell, `alorws order sell`",
        )
    chosen_types = [n for n, v in (("--market", market), ("--limit", limit), ("--stop", stop))
                    if v not in (None, False)]  # fmt: skip
    if not chosen_types:
        raise CliError(
            "say what kind of order: --market, --limit PRICE, --stop PRICE, or "
            "--stop PRICE --limit PRICE",
            "a market order is never assumed",
            code=2,
        )
    if market and len(chosen_types) > 1:
        raise CliError("--market excludes --limit and --stop", "pick one kind of order", code=2)
    if condition is not None and stop is None:
        raise CliError("--condition needs --stop", code=2)
    if tif is not None and stop is not None and limit is None:
        raise CliError("--tif does not apply to a stop (market) order", code=2)
    _price("--limit", limit)
    _price("--stop", stop)
    target = _target(sim, env, url, token_file, verbose, log_file, debug)
    console = _console()
    inst = _instrument(symbol, exchange, board)
    trigger = condition or ("moreorequal" if side is OrderSide.buy else "lessorequal")
    time_in_force = _TIF[tif] if tif is not None else None
    if stop is not None and limit is not None:
        what = (
            f"stop-limit {side.value} {quantity} {inst.label} @ {limit:g} when {trigger} {stop:g}"
        )
    elif stop is not None:
        what = f"stop {side.value} {quantity} {inst.label} when {trigger} {stop:g}"
    elif limit is not None:
        what = f"limit {side.value} {quantity} {inst.label} @ {limit:g}"
    else:
        what = f"market {side.value} {quantity} {inst.label}"

    async def place(methods: Any, chosen: str) -> Any:
        common: dict[str, Any] = {
            "exchange": inst.exchange, "board": inst.board, "comment": comment,
        }  # fmt: skip
        if stop is not None and limit is not None:
            return await methods.place_stop_limit(
                chosen, inst.symbol, side.value, quantity, limit, stop, trigger,
                time_in_force=time_in_force, **common,
            )  # fmt: skip
        if stop is not None:
            return await methods.place_stop(
                chosen, inst.symbol, side.value, quantity, stop, trigger, **common
            )
        if limit is not None:
            return await methods.place_limit(
                chosen, inst.symbol, side.value, quantity, limit,
                time_in_force=time_in_force, **common,
            )  # fmt: skip
        return await methods.place_market(
            chosen, inst.symbol, side.value, quantity, time_in_force=time_in_force, **common
        )

    async def dry(chosen: str) -> None:
        capture = _Capture()
        await place(capture.methods, chosen)
        assert capture.command is not None
        console.print(f"dry run: {what} (portfolio {chosen}) on {target.describe()}")
        console.print("the /cws command frame (sent after authorize; no token in it):")
        print(encode_command(capture.command).decode(), flush=True)
        console.print("nothing was sent")

    async def body() -> None:
        if dry_run and portfolio:
            await dry(portfolio)
            return
        async with _connect(target, console) as session:
            chosen = session.portfolio(portfolio)
            if dry_run:
                await dry(chosen)
                return
            if target.real and not yes:
                await _check_or_decline(
                    f"send {what} (portfolio {chosen}, exchange {inst.exchange}) to "
                    f"{target.describe()}?"
                )
            ack = await place(session.client.trading, chosen)
            console.print(
                f"order {ack.order_number} accepted: {what} (portfolio {chosen}) on "
                f"{target.describe()}"
            )
            if ack.message:
                console.print(f"server: {clean(ack.message)}")

    _run(body())


async def _check_or_decline(question: str) -> None:
    if not await asyncio.to_thread(_confirm, question):
        raise CliError(
            "not confirmed: nothing was sent",
            "answer y to send, or pass --yes",
            code=EXIT_NOT_CONFIRMED,
        )


@app.command()
def cancel(
    order_id: Annotated[
        str | None, typer.Argument(help="The order's id (orderNumber); or --all.")
    ] = None,
    cancel_all: Annotated[
        bool, typer.Option("--all", help="Cancel every working order of the portfolio.")
    ] = False,
    kind: Annotated[
        OrderKind, typer.Option("--kind", help="The order's type (for ORDER_ID).")
    ] = OrderKind.limit,
    portfolio: PortfolioOpt = None,
    exchange: ExchangeOpt = "MOEX",
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (--all).")
    ] = False,
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Cancel an order, or with --all every working order (asking first, but on --sim)."""
    if (order_id is None) == (not cancel_all):
        raise CliError("give an ORDER_ID or --all (not both)", "`alorws orders` lists them", 2)
    target = _target(sim, env, url, token_file, verbose, log_file, debug)
    console = _console()

    async def body() -> None:
        async with _connect(target, console) as session:
            chosen = session.portfolio(portfolio)
            trading = session.client.trading
            if order_id is not None:
                ack = await trading.cancel(order_id, chosen, kind=kind.value, exchange=exchange)
                console.print(
                    f"order {order_id} cancelled (portfolio {chosen}) on {target.describe()}"
                )
                if ack.message:
                    console.print(f"server: {clean(ack.message)}")
                return
            working = await _working(session, chosen, exchange, False)
            if not working:
                console.print(f"no working orders in portfolio {chosen}")
                return
            if target.real and not yes:
                await _check_or_decline(
                    f"cancel {len(working)} working order(s) of portfolio {chosen} on "
                    f"{target.describe()}?"
                )
            for o in working:
                kind_ = o.type.value if o.type is not None else "limit"
                await trading.cancel(o.id, chosen, kind=kind_, exchange=exchange)
                console.print(f"order {o.id} cancelled ({kind_} {o.symbol or ''})")
            console.print(
                f"{len(working)} order(s) cancelled (portfolio {chosen}) on {target.describe()}"
            )

    _run(body())


# -- history -------------------------------------------------------------------------------------


def _when(value: str, name: str) -> int:
    """A date (Moscow time when it has no zone) or Unix seconds -> Unix seconds."""
    from .protocol.timeutil import MSK

    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"bad date {value!r} for {name}",
            "use YYYY-MM-DD or YYYY-MM-DDTHH:MM (Moscow time unless a zone is given) or Unix "
            "seconds",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=MSK)
    return int(moment.timestamp())


def _fmt_msk(seconds: int) -> str:
    return _msk(seconds).strftime("%Y-%m-%d %H:%M MSK")


_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _out_format(path: Path) -> str:
    kind = _FORMATS.get(path.suffix.lower())
    if kind is None:
        raise CliError(
            f"cannot tell the file format of {str(path)!r}",
            "end --out with .csv or .parquet",
        )
    if path.is_dir():
        raise CliError(f"{str(path)!r} is a directory", "give --out a file name")
    return kind


def _write_bars(path: Path, kind: str, symbol: str, tf: str, rows: Sequence[Bar]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        import csv

        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["symbol", "tf", "time", "time_msk", "open", "high", "low", "close",
                             "volume"])  # fmt: skip
            for b in rows:
                writer.writerow([
                    symbol, tf, datetime.fromtimestamp(b.time, UTC).isoformat(),
                    _msk(b.time).isoformat(), b.open, b.high, b.low, b.close, b.volume,
                ])  # fmt: skip
        return
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

    table = pa.table(
        {
            "symbol": pa.array([symbol] * len(rows), pa.string()),
            "tf": pa.array([tf] * len(rows), pa.string()),
            "time": pa.array([b.time for b in rows], pa.timestamp("s", tz="UTC")),
            "open": pa.array([b.open for b in rows], pa.float64()),
            "high": pa.array([b.high for b in rows], pa.float64()),
            "low": pa.array([b.low for b in rows], pa.float64()),
            "close": pa.array([b.close for b in rows], pa.float64()),
            "volume": pa.array([b.volume for b in rows], pa.int64()),
        }
    )
    pq.write_table(table, path)


@app.command()
def history(
    symbol: Annotated[str, typer.Argument(help="Symbol, e.g. SBER or MOEX:SBER.")],
    tf: Annotated[str, typer.Option("--tf", help="Timeframe: seconds or D/W/M/Y.")] = "D",
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Start: YYYY-MM-DD[THH:MM] (Moscow time) or Unix s; default 30 days before --to.",
        ),
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="End (inclusive); default now.")] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write every candle to FILE.csv or FILE.parquet."),
    ] = None,
    last: Annotated[int, typer.Option("--last", min=1, help="Candles shown in the table.")] = 20,
    exchange: ExchangeOpt = "MOEX",
    board: BoardOpt = None,
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Download candles over HTTP (every page of the range), times in Moscow time; says so
    when the server has less than the range asked for."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    inst = _instrument(symbol, exchange, board)
    span = _span(tf)
    kind = _out_format(out) if out is not None else None
    now = int(time.time())
    end = _when(to, "--to") if to is not None else now
    if from_ is not None:
        start = _when(from_, "--from")
    else:
        start = end - 30 * 86_400
    if start > now:
        raise CliError(
            f"--from {from_} is in the future (now is {_fmt_msk(now)})", "give an earlier --from"
        )
    if start > end:
        raise CliError(f"--from {from_} is after --to {to}", "swap them")
    target = _target(sim, env, url, token_file, verbose, log_file, debug)
    console = _console()

    async def body() -> None:
        rows: list[Bar] = []
        async with _connect(target, console) as session:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[count]} candles"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                disable=not console.is_terminal,
            ) as progress:
                task = progress.add_task(f"{inst.label} {tf}", total=max(1, end - start), count=0)
                pages = session.client.http.iter_history(
                    inst.symbol, _tf(tf), start, end, exchange=inst.exchange, board=inst.board
                )
                async for bar in pages:
                    rows.append(bar)
                    progress.update(
                        task, completed=min(max(0, bar.time - start), end - start), count=len(rows)
                    )
        asked = f"{_fmt_msk(start)} .. {_fmt_msk(end)}"
        if not rows:
            console.print(f"no candles of {inst.label} {tf} in {asked}")
            return
        if out is not None and kind is not None:
            _write_bars(out, kind, inst.label, tf, rows)
            size = out.stat().st_size
            console.print(
                f"{len(rows)} candles of {inst.label} {tf} ({_fmt_msk(rows[0].time)} .. "
                f"{_fmt_msk(rows[-1].time)}) from {target.describe()} written to {out} ({kind}, "
                f"{size:,} bytes)"
            )
        else:
            shown = rows[-last:]
            caption = (
                f"showing the last {len(shown)} of {len(rows)} candles (--last N for more, "
                "--out FILE.csv for all)"
                if len(shown) < len(rows)
                else None
            )
            title = f"{inst.label} {tf}: {len(rows)} candles from {target.describe()}"
            console.print(_bars_table(title, shown, tf, caption))
        # A gap at the start beyond a few candles and a tenth of the range, or longer than a
        # long weekend: the server has nothing older (or the market was closed): say so.
        gap = rows[0].time - start
        if gap > 3 * span and (gap > 4 * 86_400 or gap * 10 > max(1, end - start)):
            console.print(
                f"note: asked from {_fmt_msk(start)}; the first candle the server has is at "
                f"{_fmt_msk(rows[0].time)}"
            )

    _run(body())


# -- recording and replay ------------------------------------------------------------------------

_STREAM_KINDS = ("quotes", "book", "trades", "bars")
#: The --streams names as stream kinds (the typed methods' names, as Replay.find takes them).
_REPLAY_KINDS = {"quotes": "quotes", "book": "order_book", "trades": "all_trades", "bars": "bars"}


def _parse_streams(text: str) -> list[str]:
    kinds = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [k for k in kinds if k not in _STREAM_KINDS]
    if bad or not kinds:
        raise CliError(
            f"unknown stream(s): {', '.join(bad) or '(none)'}",
            f"use a comma-separated list of {', '.join(_STREAM_KINDS)}",
        )
    return kinds


def _kv_table(title: str, values: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("Name")
    table.add_column("Value", justify="right")
    for key, value in values.items():
        if not isinstance(value, dict | list):
            table.add_row(str(key), _num(value) if isinstance(value, int | float) else str(value))
    return table


@app.command()
def record(
    symbols: Annotated[list[str], typer.Argument(help="Tickers, e.g. SBER GAZP.")],
    streams: Annotated[
        str, typer.Option("--streams", help="Comma-separated: quotes,book,trades,bars.")
    ] = "quotes,book,trades",
    out: Annotated[Path, typer.Option("--out", help="Root directory of the recording.")] = Path(
        "data"
    ),
    tf: Annotated[str, typer.Option("--tf", help="Timeframe of recorded bars.")] = "60",
    exchange: ExchangeOpt = "MOEX",
    board: BoardOpt = None,
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Record every frame of the given streams to hive-partitioned Parquet under --out
    (docs/recording.md)."""
    target = _target(sim, env, url, token_file, verbose, log_file, debug, metrics_port)
    console = _console()
    kinds = _parse_streams(streams)
    rows = Rows(_instruments(symbols, exchange, board))
    health = Health(None, target.describe())
    from .record import Recorder

    _span(tf)
    counts: dict[str, int] = {}
    holder: list[Recorder] = []

    def opener(client: AlorClient, kind: str) -> Callable[[Instrument], Any]:
        def open_stream(i: Instrument) -> Any:
            if kind == "quotes":
                return client.quotes(i.symbol, **i.options())
            if kind == "book":
                return client.order_book(i.symbol, **i.options())
            if kind == "trades":
                return client.all_trades(i.symbol, **i.options())
            return client.bars(i.symbol, _tf(tf), **i.options())

        return open_stream

    def drain(kind: str) -> Callable[[Any, Instrument], Awaitable[None]]:
        async def consume(stream: Any, used: Instrument) -> None:
            key = f"{kind} {used.label}"
            counts[key] = 0
            while True:
                counts[key] += len(await stream.get_batch())
                health.touch()

        return consume

    def render() -> RenderableType:
        table = Table(title=f"Recording to {out}")
        table.add_column("Stream")
        table.add_column("Messages", justify="right")
        for key, n in counts.items():
            table.add_row(key, f"{n:,}")
        for label, why in rows.refused.items():
            table.add_row(label, why)
        parts: list[RenderableType] = [table]
        if holder:
            parts.append(_kv_table("Recorder", dict(holder[0].stats())))
        return Group(*parts)

    def line() -> str:
        return f"recorded messages: {sum(counts.values()):,}"

    async def body() -> None:
        async with _connect(target, console) as session:
            health.session = session
            async with Recorder(session.client, out) as rec:
                holder.append(rec)
                workers = [
                    _follow(Rows(rows.instruments, rows.refused), i, opener(session.client, k),
                            drain(k))
                    for i in rows.instruments
                    for k in kinds
                ]  # fmt: skip
                await _run_live(session, console, workers, render, line, duration, health)
            console.print(_kv_table("Recorder (closed)", dict(rec.stats())))
        if rows.refused and not counts:
            raise CliError(
                "nothing recorded: " + "; ".join(f"{k}: {v}" for k, v in rows.refused.items()),
                "check the symbols and --exchange/--board",
            )

    _run(body())


@app.command()
def replay(
    root: Annotated[Path, typer.Argument(help="Root directory of a recording.")],
    symbols: Annotated[
        list[str] | None, typer.Argument(help="Tickers to replay (default: all recorded).")
    ] = None,
    streams: Annotated[
        str | None,
        typer.Option(
            "--streams", help="Comma-separated: quotes,book,trades,bars (default: all recorded)."
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option("--speed", min=0.0, help="x N of the recorded pace (default: at once)."),
    ] = None,
    duration: DurationOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Replay a recording through the same typed streams as live data; show what comes out
    (every recorded stream unless --streams narrows it)."""
    from .errors import ConfigurationError
    from .protocol.requests import SubscriptionRequest
    from .record import Replay

    _setup_logging(verbose, log_file, debug)
    console = _console()
    kinds = _parse_streams(streams) if streams is not None else list(_STREAM_KINDS)
    health = Health(None, f"replay of {root}")
    if not root.is_dir():
        raise CliError(f"no recording at {str(root)!r}", "pass the --out directory of a recording")
    if speed is not None and speed <= 0:
        raise CliError("--speed must be above 0", "omit it to replay as fast as possible")
    counts: dict[str, int] = {}
    lasts: dict[str, str] = {}

    def open_stream(rep: Replay, kind: str, symbol: str) -> Stream[Any]:
        # Whatever was recorded of that kind for the symbol (any format, depth, timeframe).
        return rep.stream(rep.find(_REPLAY_KINDS[kind], code=symbol))

    async def follow(stream: Stream[Any], key: str) -> None:
        async for item in stream:
            counts[key] += 1
            lasts[key] = _short(item)
            health.touch()

    def render() -> Table:
        table = Table(title=f"Replay of {root}: {sum(counts.values()):,} messages")
        for col in ("Stream", "Messages", "Last"):
            table.add_column(col, justify="right" if col == "Messages" else "left")
        for key, n in counts.items():
            table.add_row(key, f"{n:,}", lasts.get(key, "-"))
        return table

    def line() -> str:
        return f"replayed messages: {sum(counts.values()):,}"

    def recorded_codes(rep: Replay) -> list[str]:
        codes: list[str] = []
        for sub in rep.subscriptions():
            request: SubscriptionRequest = sub.request
            code = getattr(request, "code", None)
            if isinstance(code, str) and code not in codes:
                codes.append(code)
        return codes

    async def body() -> None:
        async with Replay(root, speed=speed) as rep:
            tickers = list(symbols) if symbols else recorded_codes(rep)
            if not tickers:
                raise CliError(f"the recording at {str(root)!r} holds no market data")
            opened: list[tuple[Stream[Any], str]] = []
            for sym in tickers:
                for kind in kinds:
                    key = f"{kind} {sym}"
                    try:
                        stream = open_stream(rep, kind, sym)
                    except ConfigurationError as exc:
                        if symbols and streams is not None:  # asked for: say what is there
                            raise CliError(
                                str(exc).partition("\n")[0],  # the rest lists the requests
                                "recorded: "
                                + ", ".join(
                                    f"{s.opcode} {getattr(s.request, 'code', '')}".strip()
                                    for s in rep.subscriptions()
                                ),
                            ) from None
                        continue
                    counts[key] = 0
                    opened.append((await stream.subscribe(), key))
            if not opened:
                raise CliError(f"nothing to replay for {', '.join(kinds)} in {str(root)!r}")
            workers = [follow(stream, key) for stream, key in opened]
            await _run_live(None, console, workers, render, line, duration, health)
            console.print(f"replayed {sum(counts.values()):,} messages of {len(opened)} stream(s)")

    _run(body())


def _short(item: Any) -> str:
    for attr in ("last_price", "close", "price"):
        value = getattr(item, attr, None)
        if isinstance(value, int | float):
            return f"{attr} {value}"
    best = getattr(item, "best_bid", None)
    if best is not None:
        return f"best bid {best.price}"
    return type(item).__name__


# -- status --------------------------------------------------------------------------------------


def _status_view(session: Session, rows: Rows) -> RenderableType:
    stats = session.client.stats()
    tokens = stats.get("tokens") or {}
    expires = tokens.get("expires_in")
    head = Table(title=f"alorws status: {session.target.describe()}", show_header=False)
    head.add_column("Name")
    head.add_column("Value")
    uptime = stats.get("uptime")
    head.add_row("client", f"{stats['state']}, up {_num(uptime, 1)} s")
    head.add_row("endpoints", session.client.endpoints.http)
    head.add_row("portfolios", ", ".join(session.client.portfolios) or "-")
    head.add_row(
        "token",
        f"expires in {_num(expires, 0)} s, {tokens.get('refreshes', 0)} refreshes, "
        f"{tokens.get('failures', 0)} failures",
    )
    head.add_row(
        "totals",
        f"{stats['connections']} connections, {stats['subscriptions']} subscriptions, "
        f"{stats['messages']:,} messages, {stats['bytes']:,} bytes, "
        f"{stats['reconnects']} reconnects",
    )
    lanes = Table(title="Connections (lanes)")
    for col in (
        "Lane", "Kind", "State", "Subscriptions", "Messages", "Bytes", "Reconnects",
        "Last restore s", "Last error",
    ):  # fmt: skip
        lanes.add_column(col, justify="right")
    for lane in stats["lanes"]:
        lanes.add_row(
            str(lane["id"]), lane["kind"], lane["state"], str(lane["subscriptions"]),
            f"{lane['messages']:,}", f"{lane['bytes']:,}", str(lane["reconnects"]),
            _num(lane["last_restore_seconds"], 3), clean(str(lane["last_error"] or "-")),
        )  # fmt: skip
    streams = Table(title="Streams (buffers)")
    for col in ("Stream", "Lane", "Policy", "Depth", "Max depth", "Conflated", "Dropped"):
        streams.add_column(col, justify="left" if col == "Stream" else "right")
    for s in sorted(stats["streams"], key=lambda s: str(s["name"])):
        streams.add_row(
            str(s["name"]), str(s["lane"]), str(s["policy"]), str(s["depth"]),
            str(s["max_depth"]), str(s["conflated"]), str(s["dropped"]),
        )  # fmt: skip
    parts: list[RenderableType] = [head, lanes, streams]
    for label, why in rows.refused.items():
        parts.append(Text(f"{label}: {why}", style="red"))
    if session.metrics is not None:
        parts.append(Text(f"metrics: {session.metrics.url}"))
    return Group(*parts)


@app.command()
def gateway(
    nats: Annotated[
        str | None, typer.Option("--nats", help="NATS server URL, e.g. nats://127.0.0.1:4222.")
    ] = None,
    embedded_nats: Annotated[
        bool, typer.Option("--embedded-nats", help="Start a local nats-server with JetStream.")
    ] = False,
    prefix: Annotated[str, typer.Option(help="First token of every NATS subject.")] = "alorws",
    lease: Annotated[
        float, typer.Option(help="Seconds before a silent consumer is released.")
    ] = 10.0,
    leader_ttl: Annotated[
        float | None,
        typer.Option(
            "--leader-ttl",
            min=0.1,
            help="Failover: run several gateways with this option; only the one holding the "
            "leader lease (expiring this many seconds after its last renewal) connects to ALOR.",
        ),
    ] = None,
    node: Annotated[
        str | None, typer.Option("--node", help="This gateway's unique name in the election.")
    ] = None,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections",
            min=1,
            help="Connections the account allows (ALOR: 10), /cws included.",
        ),
    ] = 10,
    max_subscriptions_per_connection: Annotated[
        int,
        typer.Option(
            "--max-subscriptions-per-connection", min=1, help="Subscriptions per connection."
        ),
    ] = 5000,
    reserve_connections: Annotated[
        int,
        typer.Option(
            "--reserve-connections",
            min=0,
            help="Connections market data may not take: kept for account data, orders and "
            "other applications of the account.",
        ),
    ] = 2,
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: DurationOpt = None,
    metrics_port: MetricsOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Share this account's ALOR connections with many processes through NATS JetStream."""
    if (nats is None) == (not embedded_nats):
        raise typer.BadParameter("give exactly one of --nats URL or --embedded-nats")
    if reserve_connections >= max_connections:
        raise typer.BadParameter("--reserve-connections must be below --max-connections")
    target = _target(sim, env, url, token_file, verbose, log_file, debug, service=True)
    console = _console()

    async def body() -> None:
        import functools

        from .client import AlorClient
        from .gateway import Gateway, NatsServer
        from .protocol.backoff import Backoff

        async with contextlib.AsyncExitStack() as stack:
            nats_url = nats
            if embedded_nats:
                server = await stack.enter_async_context(NatsServer())
                nats_url = server.url
            assert nats_url is not None
            base_url: str | None
            cafile: str | None = None
            _note(f"target: {target.describe()}")
            if target.sim and target.running_sim is None:
                from .sim.app import Simulator

                simulator = await stack.enter_async_context(Simulator(port=0, seed=1, rate=50.0))
                token, base_url = simulator.demo_refresh_token, simulator.url
            elif target.sim:
                assert target.running_sim is not None
                token, base_url = target.running_sim["refresh_token"], target.running_sim["url"]
                cafile = target.running_sim.get("cert")
            else:
                token, base_url = _read_token(target), target.url
                from .client.endpoints import resolve_endpoints

                endpoints = resolve_endpoints(target.env.value, base_url)
                for where in dict.fromkeys((endpoints.oauth, endpoints.http)):
                    await _probe(where)
            # The gateway builds the client when it leads (at once without --leader-ttl), with
            # its budget as keyword arguments.
            source = functools.partial(
                AlorClient,
                token,
                env=target.env.value,
                base_url=base_url,
                cafile=cafile,
                backoff=Backoff(base=0.05, cap=2.0) if target.sim else None,
            )
            gw = await stack.enter_async_context(
                Gateway(
                    source,
                    nats_url,
                    prefix=prefix,
                    lease_seconds=lease,
                    leader_ttl=leader_ttl,
                    node=node,
                    max_connections=max_connections,
                    max_subscriptions_per_connection=max_subscriptions_per_connection,
                    reserve_connections=reserve_connections,
                )
            )
            collector = None
            if metrics_port is not None:
                from .metrics import start_gateway_metrics

                metrics = _serve_metrics(start_gateway_metrics, gw, metrics_port)
                stack.callback(metrics.close)
                collector = metrics.collector
                console.print(f"metrics: {metrics.url}")
            from .errors import scrub

            console.print(f"nats: {scrub(nats_url)}")  # no credentials of the URL on screen
            console.print(f"prefix: {prefix}")
            console.print(f"node: {gw.node} ({gw.role})")

            def render() -> Table:
                return _kv_table("Gateway", gw.stats())

            def line() -> str:
                st = gw.stats()
                published = st["published_market"] + st["published_account"]
                return (
                    f"{st['role']}: {st['consumers']} consumers, {st['subscriptions']} "
                    f"subscriptions, {published:,} published, {st['takeovers']} takeovers"
                )

            def tick() -> None:
                if collector is not None:
                    collector.poll()

            if console.is_terminal:
                with Live(render(), console=console, refresh_per_second=4) as live:

                    def redraw() -> None:
                        tick()
                        live.update(render())

                    await _supervise([], duration, redraw, 0.25)
            else:

                def plain() -> None:
                    tick()
                    console.print(f"{_stamp()} {line()}")

                await _supervise([], duration, plain, 1.0)
                console.print(render())

    _run(body())


@app.command()
def status(
    symbols: Annotated[
        list[str] | None, typer.Argument(help="Tickers to subscribe for the probe (SBER).")
    ] = None,
    portfolio: PortfolioOpt = None,
    exchange: ExchangeOpt = "MOEX",
    board: BoardOpt = None,
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    duration: Annotated[
        float | None, typer.Option("--duration", min=0.0, help="Seconds to watch (default 2).")
    ] = 2.0,
    metrics_port: MetricsOpt = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Connect, subscribe a few streams, show connections, lanes, subscriptions per connection,
    buffer depths and reconnects."""
    target = _target(sim, env, url, token_file, verbose, log_file, debug, metrics_port)
    console = _console()
    rows = Rows(_instruments(symbols or ["SBER"], exchange, board))
    health = Health(None, target.describe())

    async def consume(stream: Any, used: Instrument) -> None:
        while True:
            await stream.get_batch()
            health.touch()

    async def drain(stream: Any) -> None:
        async with stream as s:
            await consume(s, rows.instruments[0])

    async def body() -> None:
        async with _connect(target, console) as session:
            health.session = session
            client = session.client
            workers: list[Coroutine[Any, Any, None]] = []
            for inst in rows.instruments:
                workers += [
                    _follow(rows, inst, lambda i: client.quotes(i.symbol, **i.options()), consume),
                    _follow(rows, inst, lambda i: client.order_book(i.symbol, **i.options()),
                            consume),
                ]  # fmt: skip
            if portfolio or sim:
                chosen = session.portfolio(portfolio)
                workers += [drain(client.orders(chosen)), drain(client.positions(chosen))]

            def line() -> str:
                stats = client.stats()
                return (
                    f"{stats['connections']} connections, {stats['subscriptions']} "
                    f"subscriptions, {stats['messages']:,} messages"
                )

            await _run_live(
                session, console, workers, lambda: _status_view(session, rows), line, duration,
                health,
            )  # fmt: skip

    _run(body())


# -- check ---------------------------------------------------------------------------------------


@app.command()
def check(
    sim: SimOpt = False,
    env: EnvOpt = None,
    url: UrlOpt = None,
    token_file: TokenFileOpt = None,
    seconds: Annotated[
        float,
        typer.Option("--seconds", min=1.0, help="The tour's length; streams are read until then."),
    ] = 20.0,
    step_timeout: Annotated[
        float,
        typer.Option(
            "--step-timeout", min=0.1, help="Most seconds one call or subscribe may take."
        ),
    ] = 10.0,
    symbol: Annotated[str, typer.Option("--symbol", help="Share to look at (MOEX).")] = "SBER",
    future: Annotated[
        str | None,
        typer.Option("--future", help="Future to look at (default: the nearest Si future)."),
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save", file_okay=False, help="Write the report and undecodable messages here."
        ),
    ] = None,
    verbose: VerboseOpt = 0,
    log_file: LogFileOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Check that everything the server sends decodes: a read-only tour (no orders placed or
    cancelled) of quotes, books, trades, bars and every portfolio's positions, summary, orders
    and stop orders, over /ws and HTTP, in Simple, Slim and Heavy.

    Exit 0: every message decoded; 1: some did not (listed); 2: could not connect or
    authenticate."""
    from .client.check import CheckOptions, run_check, scrub
    from .client.endpoints import resolve_endpoints
    from .errors import AlorError

    target = _target(sim, env, url, token_file, verbose, log_file, debug)
    options = CheckOptions(seconds=seconds, step_timeout=step_timeout, symbol=symbol, future=future)
    where = target.url or target.describe()
    secrets: list[str] = []
    code = [0]

    def say(line: str) -> None:
        print(line, flush=True)

    def unreachable(why: str, hint: str | None) -> int:
        why = scrub(why, secrets)
        sys.stderr.write(f"alorws: check: could not connect or authenticate to {where}: {why}\n")
        if hint:
            sys.stderr.write(f"hint: {hint}\n")
        sys.stderr.flush()
        return 2

    async def body() -> None:
        async with contextlib.AsyncExitStack() as stack:
            say(f"alorws check of {where}: read-only, about {seconds:g} s")
            try:
                if not target.sim:
                    secrets.append(_read_token(target))  # blanked out of all the output
                async with asyncio.timeout(step_timeout):
                    # No probe: --step-timeout bounds the wait, and the message names /refresh.
                    session = await stack.enter_async_context(_connect(target, probe=False))
            except CliError as exc:
                code[0] = unreachable(str(exc), exc.hint)
                return
            except TimeoutError:
                # The token service is retried on network errors: name it, and the wait.
                refresh = resolve_endpoints(target.env.value, target.url).refresh_url
                source = "the simulator" if target.sim else refresh
                why = f"no access token from {source} within {step_timeout:g} s"
                code[0] = unreachable(why, NETWORK_HINT)
                return
            except (AlorError, OSError) as exc:
                message, hint, _ = _describe(exc)
                code[0] = unreachable(message, hint)
                return
            report = await run_check(session.client, options, secrets=secrets, progress=say)
            for line in report.lines():
                say(line)
            if save is not None:
                written = report.save(save)
                say(f"saved the report and {len(written) - 1} undecodable message(s) to {save}")
            if report.fatal is not None:
                code[0] = unreachable(
                    report.fatal,
                    "check --url/--env, the network, and that the refresh token belongs to --env",
                )
            else:
                code[0] = report.exit_code

    _run(body())
    raise typer.Exit(code[0])


# -- entry point ---------------------------------------------------------------------------------

_NEGATIVE = re.compile(r"^-\d+(?:\.\d*)?$")


def _negative_argument(args: list[str]) -> str | None:
    """The first negative number given where an argument (not an option's value) belongs:
    click would report it as an unknown option ("No such option: -1")."""
    command = typer.main.get_command(app)
    sub = getattr(command, "commands", {}).get(args[0]) if args else None
    if sub is None:
        return None
    takes_value = {
        name for param in sub.params if getattr(param, "is_flag", True) is False
        and not getattr(param, "count", False) for name in getattr(param, "opts", ())
    }  # fmt: skip
    previous = ""
    for arg in args[1:]:
        if arg == "--":
            return None
        if _NEGATIVE.match(arg) and previous not in takes_value:
            return arg
        previous = arg
    return None


def main(argv: list[str] | None = None) -> int:
    """Run ``alorws <command> …``; returns the process exit code."""
    from typer._click.exceptions import ClickException

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    negative = _negative_argument(args)
    if negative is not None:  # click would say "No such option: -1"
        if args[0] == "order":
            return _report(
                CliError(
                    f"quantity must be a whole number of lots above 0, got {negative}",
                    "e.g. `alorws order buy SBER 1 --limit 300`; to sell, `alorws order sell`",
                ),
                debug,
            )
        return _report(CliError(f"{negative}: a negative number is not valid here"), debug)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="alorws", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    except ClickException as exc:  # usage errors: one line, the usage, a hint
        return usage_error(exc, "alorws")
    except Exception as exc:
        return _report(exc, debug)
    finally:
        _reset_logging()  # as it was, for whoever called main() in-process
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
