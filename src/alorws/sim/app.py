"""Run the simulator in-process (:class:`Simulator`) or as ``alorws sim`` (:func:`main`).

In tests::

    async with Simulator(port=0, seed=1, max_unread=200) as sim:
        token = sim.access_token()          # or POST {sim.url}/refresh with sim.demo_refresh_token
        ...                                 # ws://127.0.0.1:PORT/ws, sim.faults.drop(1006), ...

From a shell, ``alorws sim --port 8765`` prints ``url: http://127.0.0.1:8765`` and
``refresh_token: <token>`` (plus ``cert: <path>`` with ``--tls``) and serves until Ctrl-C.

Refresh tokens are random per simulator (``sim.demo_refresh_token``) unless one is given. The
admin endpoints (``admin=True``, ``--admin``) can require a token (``admin_token``,
``--admin-token``); listening beyond loopback with them on requires one: it is generated (and
printed by ``alorws sim``) when not given, and a warning is logged and written to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from ..errors import InvalidArgumentError
from ..protocol.schedule import SCHEDULES, Schedule
from .accounts import random_refresh_token
from .auth import TokenService
from .engine import Account, TradingEngine
from .faults import (
    MIN_DROP_EVERY,
    MIN_IDLE,
    Faults,
    check_clock,
    check_codes,
    check_seconds,
    check_share,
)
from .market import SyntheticMarket, TradePrinted
from .schedule import SessionGate
from .server import SimServer
from .statefile import default_state_path, read_state, remove_state, write_state
from .subscriptions import Limits


__all__ = [
    "SCHEDULE_TASK",
    "Simulator",
    "exposure_warning",
    "is_loopback",
    "main",
    "make_self_signed_cert",
]

log = logging.getLogger("alorws.sim")

#: The name of the task that follows the trading schedule (``Simulator(schedule=...)``).
SCHEDULE_TASK = "alorws-sim-schedule"
#: How often a given ``schedule_clock`` is looked at (seconds of real time).
_CLOCK_POLL = 0.25
#: The longest sleep between looks at the wall clock.
_MAX_SCHEDULE_SLEEP = 60.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (an empty host, ``0.0.0.0`` and
    ``::`` listen on every interface; any other name may resolve beyond loopback)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, admin: bool) -> str | None:
    """The warning for serving the admin endpoints beyond loopback, or None."""
    if not admin or is_loopback(host):
        return None
    where = host or "every interface"
    return (
        f"the simulator listens on {where} (beyond loopback) with the admin endpoints on: "
        "anyone who can reach it and has the admin token can drop connections and inject "
        "frames. Keep the admin token secret, or listen on 127.0.0.1"
    )


class Simulator:
    """The whole simulator on one port; ``async with`` starts and stops it.

    Args:
        host, port: where to listen (port 0 picks a free one; see :attr:`url`).
        seed: seeds the synthetic market (deterministic) and the random faults.
        max_connections, max_subscriptions, max_unread: the limits of docs/protocol.md §12.9.
        token_lifetime: access JWT lifetime in seconds (docs/protocol.md §12.1).
        rate: market events per second.
        admin: serve the ``/sim/*`` fault endpoints.
        admin_token: require it on every ``/sim/*`` request (``Authorization: Bearer <admin
            token>`` or ``X-Sim-Admin``). With ``admin`` on and ``host`` beyond loopback one
            is generated when not given (see :attr:`admin_token`).
        demo_refresh_token: the demo account's refresh token; random when not given.
        tls: serve https/wss with a self-signed certificate (see :attr:`cert_path`).
        http_rate: HTTP requests per second per account (docs/protocol.md §12.10).
        send_buffer: kernel send buffer (SO_SNDBUF) per connection, bytes; None = the OS's
            (tests pass a small one so that a client that stops reading overflows quickly).
        history_days: days of synthetic history before now.
        ground_truth_path: also append the ground-truth log to this JSONL file.
        day_order_lifetime: seconds a day order lives; None: until the end of its UTC day.
        schedule: follow the MOEX trading day (``True``: the built-in tables; or a mapping of
            market to :class:`~alorws.protocol.schedule.Schedule`): orders for a closed market
            are refused with 400 naming the window, and every instrument's ``tradingStatus``
            follows its market's window (see :mod:`alorws.sim.schedule` and
            :meth:`apply_schedule`). Default: open around the clock, status normal trading.
        schedule_clock: what time it is for the schedule (a callable returning an aware
            datetime); default the wall clock. Tests pass a manual clock: the simulator then
            looks at it every quarter of a second (or call :meth:`apply_schedule` after moving
            it); on the wall clock it sleeps until the next window boundary.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 1,
        max_connections: int = 10,
        max_subscriptions: int = 5000,
        max_unread: int = 5000,
        token_lifetime: float = 1800.0,
        rate: float = 20.0,
        admin: bool = False,
        admin_token: str | None = None,
        demo_refresh_token: str | None = None,
        tls: bool = False,
        http_rate: int = 100,
        send_buffer: int | None = None,
        history_days: int = 5,
        ground_truth_path: str | None = None,
        close_timeout: float = 2.0,
        day_order_lifetime: float | None = None,
        schedule: bool | Mapping[str, Schedule] = False,
        schedule_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.tls = tls
        self.admin = admin
        if admin and admin_token is None and not is_loopback(host):
            admin_token = secrets.token_urlsafe(24)
        #: The token ``/sim/*`` requires, or None (admin off, or on loopback without one).
        self.admin_token = admin_token
        now_ms = int(time.time() * 1000)
        # With a schedule the status is the table's: no random breaks on top of it.
        breaks: dict[str, Any] = {} if schedule is False else {"break_interval_s": None}
        self.market = SyntheticMarket(
            seed=seed, start_ms=now_ms, history_days=history_days, events_per_second=rate, **breaks
        )
        self.engine = TradingEngine(
            self.market,
            ground_truth_path=ground_truth_path,
            day_order_lifetime_ms=None
            if day_order_lifetime is None
            else round(day_order_lifetime * 1000),
            refresh_tokens=random_refresh_token,
        )
        self.tokens = TokenService(token_lifetime)
        self.limits = Limits(
            max_connections=max_connections,
            max_subscriptions=max_subscriptions,
            max_unread=max_unread,
        )
        self.server = SimServer(
            self.market,
            self.engine,
            self.tokens,
            self.limits,
            seed=seed,
            http_rate=http_rate,
            admin=admin,
            admin_token=admin_token,
            send_buffer=send_buffer,
            close_timeout=close_timeout,
        )
        self.faults: Faults = self.server.faults
        #: Seconds between looks at a given ``schedule_clock``; None: the wall clock, slept on.
        self.schedule_poll: float | None = None if schedule_clock is None else _CLOCK_POLL
        self._schedule_task: asyncio.Task[None] | None = None
        if schedule is not False:
            tables = SCHEDULES if schedule is True else schedule
            self.server.session_gate = SessionGate(
                self.market, tables, schedule_clock or (lambda: datetime.now(UTC))
            )
            self.server.session_gate.apply()  # nobody listens yet: the events go nowhere
        self.demo = self.engine.add_account("demo", refresh_token=demo_refresh_token or None)
        self.cert_path: str | None = None
        self._cert_dir: tempfile.TemporaryDirectory[str] | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen and start the market loop."""
        warning = exposure_warning(self.host, self.admin)
        if warning is not None:
            log.warning("%s", warning)
        ssl_context = None
        if self.tls:
            self._cert_dir = tempfile.TemporaryDirectory(prefix="alorws-sim-")
            cert, key = await asyncio.to_thread(make_self_signed_cert, self._cert_dir.name)
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(cert, key)
            self.cert_path = cert
        runner = web.AppRunner(self.server.app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=ssl_context)
        await site.start()
        self._runner = runner
        for address in runner.addresses:
            if isinstance(address, tuple):
                self.port = int(address[1])
                break
        self.server.start()
        if self.server.session_gate is not None:
            self._schedule_task = asyncio.get_running_loop().create_task(
                self._follow_schedule(), name=SCHEDULE_TASK
            )

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        task, self._schedule_task = self._schedule_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.faults.aclose()
        await self.server.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._cert_dir is not None:
            self._cert_dir.cleanup()
            self._cert_dir = None

    # -- what tests use -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8765`` (``https`` with TLS)."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://host:port/ws`` (``wss`` with TLS)."""
        return self.url.replace("http", "ws", 1) + "/ws"

    @property
    def cws_url(self) -> str:
        """``ws://host:port/cws`` (``wss`` with TLS)."""
        return self.url.replace("http", "ws", 1) + "/cws"

    @property
    def demo_refresh_token(self) -> str:
        """Refresh token of the demo account created at start-up."""
        return str(self.demo.refresh_token)

    def add_account(self, login: str | None = None, **kwargs: Any) -> Account:
        """Add an account (see ``TradingEngine.add_account``); returns it with its portfolios.

        Its refresh token is random unless ``refresh_token`` is given.
        """
        if login is None:
            login = f"user{len(self.engine_accounts()) + 1}"
        return self.engine.add_account(login, **kwargs)

    def engine_accounts(self) -> list[Account]:
        """Every account the engine knows."""
        accounts = getattr(self.engine, "accounts", None)
        if isinstance(accounts, dict):
            return list(accounts.values())
        return list(accounts or [])

    def access_token(self, account: Account | None = None, lifetime: float | None = None) -> str:
        """A fresh access JWT for ``account`` (default: the demo account), without HTTP.

        ``lifetime`` overrides the configured one (negative: an already expired token).
        """
        account = account or self.demo
        agreements = account.agreements
        ids = [str(a) for a in agreements] if isinstance(agreements, list | tuple) else []
        return self.tokens.issue(account.login, account.portfolios, ids, lifetime=lifetime)

    def burst(self, symbol: str, n: int) -> int:
        """Make ``n`` market events on ``symbol`` happen now and publish them at once.

        Returns how many of them were trades. For tests and benchmarks: the market loop's
        own pace is ``rate``.
        """
        events = self.market.burst(symbol, n)
        now_ms = int(time.time() * 1000)
        account_events = self.engine.on_market(events, now_ms)
        hub = self.server.hub
        hub.publish_market(events)
        if account_events:
            hub.publish_account(account_events)
        return sum(1 for e in events if isinstance(e, TradePrinted))

    def set_trading_status(self, symbol: str, status: int) -> None:
        """Change the trading status of ``symbol`` now and publish the partial update
        (docs/protocol.md §4.5).

        ``status`` is an exchange code (2 is a break, 17 normal trading). With ``schedule`` on,
        the status set here lasts until the next boundary of the instrument's market's
        windows, where the schedule sets it again.
        """
        self.server.hub.publish_market(self.market.set_status(symbol, status))

    def apply_schedule(self) -> list[str]:
        """With ``schedule`` on, set each instrument's status to its market's window now where a
        window boundary was crossed since the last look, publishing one partial update per
        instrument whose status changed; returns their tickers. The simulator does this by
        itself (see ``schedule_clock``); a test calls it right after moving a manual clock.
        Without ``schedule``: nothing, ``[]``."""
        gate = self.server.session_gate
        if gate is None:
            return []
        events = gate.apply()
        if events:
            self.server.hub.publish_market(events)
        return [e.symbol for e in events]

    async def _follow_schedule(self) -> None:
        """Apply the schedule at every window boundary (see ``schedule_clock``)."""
        gate = self.server.session_gate
        assert gate is not None
        while True:
            try:
                self.apply_schedule()
                if self.schedule_poll is not None:
                    delay = self.schedule_poll
                else:
                    now = gate.clock()
                    boundary = gate.next_boundary(now)
                    left = _MAX_SCHEDULE_SLEEP
                    if boundary is not None:
                        left = max(0.0, (boundary - now).total_seconds()) + 0.01
                    # Wake just past the boundary; look again now and then in case the wall
                    # clock jumps (a laptop waking up).
                    delay = min(_MAX_SCHEDULE_SLEEP, left)
            except Exception:  # a bad table must not end the statuses for good
                self.server.errors += 1
                log.exception("applying the trading schedule failed")
                delay = _MAX_SCHEDULE_SLEEP
            await asyncio.sleep(delay)

    def stats(self) -> dict[str, Any]:
        """Connections and subscriptions per account, and counters."""
        return self.server.stats()


# -- TLS --------------------------------------------------------------------------------------


def make_self_signed_cert(directory: str) -> tuple[str, str]:
    """Write a self-signed certificate for ``localhost`` and ``127.0.0.1``; return (cert, key).

    Uses the ``cryptography`` package when installed, else the ``openssl`` command.
    """
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    try:
        _cert_with_cryptography(cert_path, key_path)
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError(
                "--tls needs the 'cryptography' package or the 'openssl' command"
            ) from None
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                key_path,
                "-out",
                cert_path,
                "-days",
                "30",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
    return cert_path, key_path


def _cert_with_cryptography(cert_path: str, key_path: str) -> None:
    from cryptography import x509  # type: ignore[import-not-found, unused-ignore]
    from cryptography.hazmat.primitives import (  # type: ignore[import-not-found, unused-ignore]
        hashes,
        serialization,
    )
    from cryptography.hazmat.primitives.asymmetric import (  # type: ignore[import-not-found, unused-ignore]
        ec,
    )
    from cryptography.x509.oid import NameOID  # type: ignore[import-not-found, unused-ignore]

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        # A CA as well, like `openssl req -x509` makes it: the client trusts it as its own root.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    with open(key_path, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))


# -- command line -----------------------------------------------------------------------------


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _daily_window(args: Any) -> tuple[str, str] | None:
    """The --daily-restart window, checked (with its companions), or None."""
    check_share("--restart-accept", args.restart_accept)
    check_seconds("--restart-linger", args.restart_linger)
    if args.daily_restart is None:
        return None
    start, _, end = args.daily_restart.partition("-")
    check_clock("--daily-restart", start)
    check_clock("--daily-restart", end)
    return start, end


def _drop_codes(args: Any) -> list[int] | None:
    """Check the fault flags before anything starts; the --drop-every codes, if on."""
    if args.reply_delay > 0:
        check_seconds("--reply-delay", args.reply_delay)
    if args.cws_idle is not None:
        check_seconds("--cws-idle", args.cws_idle, MIN_IDLE)
    if args.drop_every <= 0:
        return None
    check_seconds("--drop-every", args.drop_every, MIN_DROP_EVERY)
    try:
        codes = [int(c) for c in args.drop_codes.split(",") if c.strip()]
    except ValueError:
        raise InvalidArgumentError(
            "--drop-codes", f"must be close codes separated by commas, got {args.drop_codes!r}"
        ) from None
    return check_codes(codes)


async def _serve(args: Any) -> None:
    drop_codes = _drop_codes(args)
    daily = _daily_window(args)
    sim = Simulator(
        host=args.host,
        port=args.port,
        seed=args.seed,
        max_connections=args.max_connections,
        max_subscriptions=args.max_subscriptions,
        max_unread=args.max_unread,
        token_lifetime=args.token_lifetime,
        rate=args.rate,
        admin=args.admin,
        admin_token=args.admin_token,
        demo_refresh_token=args.refresh_token,
        tls=args.tls,
        http_rate=args.http_rate,
        send_buffer=args.send_buffer,
        ground_truth_path=args.ground_truth,
        schedule=args.schedule,
    )
    extra = []
    for spec in args.account:
        login, _, rest = spec.partition(":")
        token, _, agreements = rest.partition(":")
        kwargs: dict[str, Any] = {}
        if token:
            kwargs["refresh_token"] = token
        if agreements:
            if not agreements.isdigit() or int(agreements) < 1:
                raise InvalidArgumentError("--account", f"AGREEMENTS must be >= 1 in {spec!r}")
            kwargs["agreements"] = int(agreements)
        extra.append(sim.add_account(login, **kwargs))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with sim:  # start() logs the exposure warning, if any (to stderr, see main)
        if drop_codes is not None:
            sim.faults.random_drops(args.drop_every, drop_codes)
        if args.reply_delay > 0:
            sim.faults.delay(args.reply_delay)
        if args.cws_idle is not None:
            sim.faults.idle_cws(args.cws_idle)
        if daily is not None:
            sim.faults.daily_restart(*daily, accept=args.restart_accept, linger=args.restart_linger)
        _out(f"url: {sim.url}")
        _out(f"refresh_token: {sim.demo_refresh_token}")
        _out(f"portfolios: {' '.join(sim.demo.portfolios)}")
        for account in extra:
            _out(f"account: {account.login} {account.refresh_token} {' '.join(account.portfolios)}")
        if sim.cert_path:
            _out(f"cert: {sim.cert_path}")
        if args.admin:
            _out(f"admin: {sim.url}/sim/")
            if sim.admin_token is not None and args.admin_token is None:
                _out(f"admin_token: {sim.admin_token}")  # generated: the only way to learn it
        state = _write_state(args, sim)
        try:
            await stop.wait()
        finally:
            if state is not None:
                remove_state(state, os.getpid())
    _out("stopped")


def _write_state(args: Any, sim: Simulator) -> Path | None:
    """Tell ``alorws … --sim`` where this simulator is (see :mod:`alorws.sim.statefile`)."""
    if getattr(args, "no_state_file", False):
        return None
    path = getattr(args, "state_file", None) or default_state_path()
    other = read_state(path)
    if other is not None and other.get("pid") != os.getpid():
        _out(f"state: not written: {path} belongs to the simulator at {other['url']}")
        return None
    state = {
        "url": sim.url,
        "refresh_token": sim.demo_refresh_token,
        "portfolios": list(sim.demo.portfolios),
        "pid": os.getpid(),
        "cert": sim.cert_path,
    }
    try:
        write_state(state, path)
    except OSError as exc:
        _out(f"state: not written: {exc.strerror or exc}")
        return None
    _out(f"state: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    """``alorws sim`` (``python -m alorws.sim``): serve until Ctrl-C; returns the exit status.

    A usage error (an unknown flag) prints one line and the usage and raises ``SystemExit(2)``.
    """
    from .command import run_standalone

    return run_standalone(sys.argv[1:] if argv is None else list(argv), run_from_command_line)


def run_from_command_line(args: Any) -> int:
    """Serve with the checked options of ``alorws sim``; returns the exit status."""
    if not logging.getLogger().handlers:
        # The simulator's warnings and failures go to stderr (unless the caller set logging up).
        logging.basicConfig(level=logging.WARNING, format="alorws sim: %(levelname)s: %(message)s")
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:  # Ctrl-C before the handlers were installed
        return 130
    except OSError as exc:  # e.g. the port is taken
        sys.stderr.write(f"alorws sim: error: {_os_message(exc, args)}\n")
        return 1
    except InvalidArgumentError as exc:  # a flag out of range
        sys.stderr.write(f"alorws sim: error: {exc}\n")
        return 2
    return 0


def _os_message(exc: OSError, args: Any) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {args.port} on {args.host} is in use (another alorws sim?); "
            "pass --port N, or --port 0 for a free one"
        )
    return " ".join(str(exc).split())
