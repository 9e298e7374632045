"""Fault injection: what a client must survive, on demand (docs/protocol.md §12.16).

:class:`Faults` is the in-process API (``sim.faults``); :class:`AdminApi` serves the same
operations as the ``/sim/*`` admin endpoints, which the server registers only with
``admin=True``; ``alorws sim`` maps its flags onto them. The conditions a fault sets (a refusal,
a reply delay, a restart window, idle ``/cws`` staleness) are held here and read by the
server's WebSocket shell on every connection and request.

Every argument is checked by the ``check_*`` functions: a bad one raises
:class:`~alorws.errors.InvalidArgumentError` naming it (the admin endpoints answer 400 with that
message) and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from ..errors import InvalidArgumentError
from .web import MAX_REQUEST, error_response, json_response, read_json


if TYPE_CHECKING:
    from .auth import Claims, TokenService
    from .connection import Connection
    from .subscriptions import Hub, Subscription


__all__ = [
    "CLOSE_REASONS",
    "MAX_SECONDS",
    "MIN_DROP_EVERY",
    "MIN_IDLE",
    "MOSCOW_UTC_OFFSET",
    "AdminApi",
    "Faults",
    "IdleCws",
    "RestartWindow",
    "check_account",
    "check_clock",
    "check_code",
    "check_codes",
    "check_kind",
    "check_seconds",
    "check_share",
    "check_window",
]

log = logging.getLogger("alorws.sim")

#: The longest duration any fault accepts (a day), seconds.
MAX_SECONDS: Final = 86_400.0
#: The shortest mean gap of :meth:`Faults.random_drops`, seconds: below it the task would do
#: little but drop.
MIN_DROP_EVERY: Final = 0.01
_KINDS: Final = ("ws", "cws")
#: The shortest idle time of :meth:`Faults.idle_cws`, seconds.
MIN_IDLE: Final = 0.01
#: Moscow time is UTC+3 all year (no daylight saving since 2014).
MOSCOW_UTC_OFFSET: Final = 3 * 3600

#: Close codes the drop faults use, with the reason text sent in the close frame.
CLOSE_REASONS = {
    1000: "Normal closure",
    1001: "Going away",
    1006: "",  # abnormal: no close frame at all
    1008: "Policy violation",
    1011: "Internal server error",
    1012: "Service restart",
}


def check_seconds(name: str, value: object, low: float = 0.0) -> float:
    """``value`` as a duration: a finite number of seconds in ``low..MAX_SECONDS``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(name, f"must be a number of seconds, got {type(value).__name__}")
    # An int compares exactly whatever its size; nan fails both comparisons.
    if not low <= value <= MAX_SECONDS:
        raise InvalidArgumentError(name, f"must be {low:g}..{MAX_SECONDS:g} seconds, got {value!r}")
    return float(value)


def check_code(value: object, name: str = "code") -> int:
    """``value`` as a close code the drop faults know (a key of :data:`CLOSE_REASONS`)."""
    if type(value) is not int or value not in CLOSE_REASONS:
        known = ", ".join(str(c) for c in CLOSE_REASONS)
        raise InvalidArgumentError(name, f"must be one of {known}, got {value!r}")
    return value


def check_codes(value: object) -> list[int]:
    """``value`` as a non-empty list of close codes."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise InvalidArgumentError(
            "codes", f"must be a non-empty list of close codes, got {value!r}"
        )
    return [check_code(c, "codes") for c in value]


def check_account(value: object) -> str | None:
    """``value`` as an account login, or None for every account."""
    if value is not None and type(value) is not str:
        raise InvalidArgumentError("account", f"must be a login (a string), got {value!r}")
    return value


def check_share(name: str, value: object) -> float:
    """``value`` as a probability: a number in ``0..1``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidArgumentError(name, f"must be a number in 0..1, got {value!r}")
    return float(value)


def check_clock(name: str, value: object) -> int:
    """``value`` as a time of day ``"HH:MM"``; returns seconds since midnight."""
    if type(value) is str:
        hours, sep, minutes = value.partition(":")
        if (
            sep
            and len(minutes) == 2
            and 1 <= len(hours) <= 2
            and hours.isascii()
            and minutes.isascii()
            and hours.isdigit()
            and minutes.isdigit()
            and int(hours) < 24
            and int(minutes) < 60
        ):
            return int(hours) * 3600 + int(minutes) * 60
    raise InvalidArgumentError(name, f"must be a time of day HH:MM, got {value!r}")


def _check_text(name: str, value: object) -> str | None:
    if value is not None and type(value) is not str:
        raise InvalidArgumentError(name, f"must be a string, got {value!r}")
    return value


def check_kind(value: object) -> str | None:
    """``value`` as a connection kind (``ws``/``cws``), or None for both."""
    if value is not None and value not in _KINDS:
        raise InvalidArgumentError("kind", f"must be 'ws' or 'cws', got {value!r}")
    return value


# -- the conditions the server reads -----------------------------------------------------------


def check_window(accept: object, linger: object, code: object) -> tuple[float, float, int]:
    """A restart window's settings checked: ``accept`` a share, ``linger`` a duration,
    ``code`` a close code (:data:`CLOSE_REASONS`)."""
    return check_share("accept", accept), check_seconds("linger", linger), check_code(code)


class RestartWindow:
    """A span of 503s: a restart window or a plain refusal, its settings and what it did
    (docs/protocol.md §12.16).

    While :meth:`active`, new connections and HTTP requests are refused with 503 except a share
    ``accept`` of them (:meth:`turns_away`); a WebSocket let through is dropped with ``code``
    within ``linger`` seconds, and no later than the window's end (:meth:`doom_delay`,
    :meth:`drop`). A refusal lets nobody through (``accept`` 0). Times are on the server's
    clock.
    """

    def __init__(self, random: Callable[[], float]) -> None:
        self.until = 0.0
        self.accept = 0.0
        self.linger = 1.0
        self.code = 1006
        self.counts = {"refused": 0, "admitted": 0, "dropped": 0}
        self._random = random

    def open(
        self,
        now: float,
        seconds: float,
        *,
        accept: float = 0.0,
        linger: float = 1.0,
        code: int = 1006,
    ) -> None:
        """Last ``seconds`` from ``now`` (0 ends it) with these (checked) settings."""
        self.until = now + seconds
        self.accept = accept
        self.linger = linger
        self.code = code

    def active(self, now: float) -> bool:
        """True while the window lasts."""
        return now < self.until

    def turns_away(self, now: float) -> bool:
        """Whether an attempt now gets 503: the window lasts and does not let it through
        (counted either way)."""
        return self.active(now) and not self.admits()

    def admits(self) -> bool:
        """During the window: whether this attempt gets through (counted either way)."""
        # With nobody let through there is nothing to draw.
        if self.accept <= 0.0 or self._random() >= self.accept:
            self.counts["refused"] += 1
            return False
        self.counts["admitted"] += 1
        return True

    def doom_delay(self, now: float) -> float:
        """Seconds from ``now`` until a connection let through is dropped."""
        return max(0.0, min(self._random() * self.linger, self.until - now))

    def drop(self, conn: Connection) -> None:
        """Drop a connection let through (the timer :meth:`doom_delay` set has fired)."""
        conn.doomed = None
        if not conn.closing:
            self.counts["dropped"] += 1
            code = self.code
            conn.close(code, "" if code == 1006 else "Service restart")


class IdleCws:
    """The idle ``/cws`` fault's state (docs/protocol.md §12.16, ALOR's behaviour of
    docs/protocol.md §9.6): ``seconds`` of idleness (None: off) and the staleness it caused.

    A ``/cws`` connection without a command for longer than ``seconds`` goes stale
    (:meth:`go_stale`, when the server's idle timer fires). Every token issued until then, the
    account's, on any connection, is "old": ``authorize`` with one is answered 200 and changes
    nothing, and the next command on a stale connection is not executed: the TCP connection is
    cut (:meth:`cut`: 1006, no reply). ``authorize`` with a token issued later clears it and
    restarts the idle clock (:meth:`authorized`).
    """

    def __init__(self) -> None:
        self.seconds: float | None = None
        self.resets = 0  # commands refused by cutting the connection
        self._cutoff: dict[str, int] = {}  # per account: tokens up to this serial are old

    def set(self, seconds: float | None) -> None:
        """Turn it on (``seconds``) or off (None: every account's old tokens are forgotten)."""
        self.seconds = seconds
        if seconds is None:
            self._cutoff.clear()

    def go_stale(self, conn: Connection, issued: int) -> None:
        """``conn`` has been idle for ``seconds``; ``issued`` is the newest token serial."""
        if conn.closing or self.seconds is None:
            return
        # Every token issued so far predates the staleness: none of them clears it, here or
        # on the account's next connection (docs/protocol.md §9.6: only a freshly issued token
        # helps).
        conn.stale = True
        conn.stale_serial = issued
        if conn.login is not None and issued > self._cutoff.get(conn.login, 0):
            self._cutoff[conn.login] = issued

    def authorized(self, conn: Connection, claims: Claims, now: float) -> bool:
        """``authorize`` accepted on ``conn``: an old token leaves (or makes) it stale, a token
        issued after the staleness clears it. True when its idle timer must be re-armed."""
        if self.seconds is None:
            return False
        cutoff = self._cutoff.get(claims.login, 0)
        if conn.stale:
            cutoff = max(cutoff, conn.stale_serial)
        if claims.serial <= cutoff:
            conn.stale = True
            conn.stale_serial = cutoff
            return True  # stops the timer: it is stale already
        if conn.stale:
            conn.stale = False
            conn.last_command = now
            return True
        return False

    def cut(self, conn: Connection) -> None:
        """A command on a stale connection: not executed, the connection is cut."""
        self.resets += 1
        conn.close(1006, "", discard=False)


# -- the fault API -----------------------------------------------------------------------------


class Faults:
    """Fault injection on a running simulator, in-process (``sim.faults``).

    * :meth:`drop`: close connections now, with close code 1000, 1011, 1012 (a close frame)
      or 1006 (no close frame: the TCP connection is just cut).
    * :meth:`random_drops`: the same at random intervals, with a random code from a set.
    * :meth:`stall`: stop sending to connections for N seconds (their queues keep filling,
      and the unread limit still applies).
    * :meth:`refuse`: new connections (and HTTP) get 503 for N seconds.
    * :meth:`delay`: every reply (and the data behind it) waits N seconds.
    * :meth:`expire_tokens`: every JWT issued so far is invalid from now on.
    * :meth:`inject`: send an arbitrary (malformed or unknown) frame to connections.
    * :meth:`restart`: drop every connection and refuse new ones for a while.

    The production behaviours of docs/protocol.md §9.6, as docs/protocol.md §12.16 models them:
    :meth:`idle_cws` (see :class:`IdleCws`); :meth:`restart_window`, ALOR's daily restart (see
    :class:`RestartWindow`), repeated every day at a Moscow time by :meth:`daily_restart`;
    :meth:`silence`: chosen subscriptions stop receiving data while their connection, its pings
    and its other subscriptions carry on; :meth:`unsilence` ends it.

    Durations are finite seconds within ``0..MAX_SECONDS``; close codes come from
    :data:`CLOSE_REASONS`. A background fault (``random_drops``, ``daily_restart``) survives a
    failing round: the failure is logged, counted in :attr:`errors` (part of the server's
    ``errors``) and shown in :meth:`stats`.

    Args:
        hub: the server's connections and subscriptions.
        tokens: the server's token service (:meth:`expire_tokens`).
        seed: seeds the random faults.
        clock: the server's clock, seconds.
        arm_idle: (re)starts the idle timer of a ``/cws`` connection (the server's).
    """

    def __init__(
        self,
        hub: Hub[Connection],
        tokens: TokenService,
        *,
        seed: int | None = None,
        clock: Callable[[], float],
        arm_idle: Callable[[Connection], None],
    ) -> None:
        self._hub = hub
        self._tokens = tokens
        self._clock = clock
        self._arm_idle = arm_idle
        self._random = random.Random(seed)
        #: Seconds every reply waits.
        self.reply_delay = 0.0
        #: :meth:`restart_window` (and :meth:`daily_restart`), in :meth:`stats`.
        self.window = RestartWindow(self._random.random)
        #: :meth:`refuse` (and :meth:`restart`): a window that lets nobody through.
        self.refusal = RestartWindow(self._random.random)
        self.idle = IdleCws()
        self.injected = 0
        self.dropped = 0
        self.errors = 0
        self._drops_task: asyncio.Task[None] | None = None
        self._drops: dict[str, Any] = {"running": False}
        self._daily_task: asyncio.Task[None] | None = None
        self._daily: dict[str, Any] = {"running": False}
        self._silenced: dict[int, Subscription] = {}
        self._silence_timers: dict[int, asyncio.TimerHandle] = {}
        self._silence_rounds = 0

    @property
    def refuse_until(self) -> float:
        """Clock time before which :meth:`refuse` answers new connections and HTTP with 503."""
        return self.refusal.until

    def turn_away(self) -> bool:
        """Whether a new connection or HTTP request is answered 503 now: a refusal lasts, or
        a restart window does and does not let this attempt through (counted)."""
        now = self._clock()
        return self.refusal.turns_away(now) or self.window.turns_away(now)

    def stats(self) -> dict[str, Any]:
        """State of the faults (part of ``GET /sim/stats``).

        ``random_drops``: whether it runs, its settings, how many rounds failed, the last
        failure and, if the task ended by itself, why. ``idle_cws``: the idle time (None: off),
        the stale ``/cws`` connections now and the commands refused with a reset.
        ``restart_window``: whether one lasts, its settings and the attempts refused, let
        through and dropped. ``daily_restart``: its schedule (Moscow time). ``silenced``:
        subscriptions silent now.
        """
        window = self.window
        left = max(0.0, window.until - self._clock())
        stale = sum(1 for c in self._hub.connections.values() if c.kind == "cws" and c.stale)
        return {
            "random_drops": dict(self._drops),
            "idle_cws": {"idle": self.idle.seconds, "stale": stale, "resets": self.idle.resets},
            "restart_window": {
                "active": left > 0,
                "seconds_left": round(left, 3),
                "accept": window.accept,
                "linger": window.linger,
                "code": window.code,
                **window.counts,
            },
            "daily_restart": dict(self._daily),
            "silenced": sum(1 for sub in self._silenced.values() if sub.silent and sub.alive),
        }

    def _targets(self, account: str | None = None, kind: str | None = None) -> list[Connection]:
        conns = list(self._hub.connections.values())
        return [
            c
            for c in conns
            if not c.closing
            and (account is None or c.login == account)
            and (kind is None or c.kind == kind)
        ]

    def drop(self, code: int = 1006, account: str | None = None, kind: str | None = None) -> int:
        """Close every connection (of ``account``, of ``kind`` ws/cws) with ``code``.

        Returns how many were dropped.
        """
        code = check_code(code)
        targets = self._targets(check_account(account), check_kind(kind))
        for conn in targets:
            self._drop_one(conn, code)
        return len(targets)

    def _drop_one(self, conn: Connection, code: int) -> None:
        self.dropped += 1
        conn.close(code, CLOSE_REASONS.get(code, "Dropped by the simulator"))

    def random_drops(
        self,
        every: float,
        codes: Sequence[int] = (1000, 1006, 1011, 1012),
        account: str | None = None,
    ) -> None:
        """Drop one random connection about every ``every`` seconds (exponential gaps).

        ``every`` is at least :data:`MIN_DROP_EVERY`; ``codes`` are keys of
        :data:`CLOSE_REASONS`. Replaces a running ``random_drops``.
        """
        every = check_seconds("every", every, MIN_DROP_EVERY)
        code_list = check_codes(codes)
        account = check_account(account)
        loop = asyncio.get_running_loop()
        self.stop_random_drops()
        self._drops = {
            "running": True,
            "every": every,
            "codes": code_list,
            "account": account,
            "failures": 0,
            "last_error": None,
        }
        task = loop.create_task(self._drop_randomly(every, code_list, account))
        task.add_done_callback(self._drops_ended)
        self._drops_task = task

    def stop_random_drops(self) -> None:
        """Stop :meth:`random_drops`."""
        task, self._drops_task = self._drops_task, None
        if task is not None:
            task.cancel()
        self._drops["running"] = False

    def _drops_ended(self, task: asyncio.Task[None]) -> None:
        # The loop below never ends by itself; should it, say why rather than vanish.
        if task is not self._drops_task:
            return
        self._drops_task = None
        self._drops["running"] = False
        if not task.cancelled() and task.exception() is not None:
            self._drops["stopped"] = repr(task.exception())
            self.errors += 1
            log.error("random drops stopped: %r", task.exception())

    async def _drop_randomly(self, every: float, codes: list[int], account: str | None) -> None:
        state = self._drops
        while True:
            await asyncio.sleep(self._random.expovariate(1.0 / every))
            try:
                targets = self._targets(account)
                if targets:
                    self._drop_one(self._random.choice(targets), self._random.choice(codes))
            except Exception as exc:  # one failed round must not end the fault
                state["failures"] += 1
                state["last_error"] = repr(exc)
                self.errors += 1
                log.exception("random drops: a round failed")

    def stall(self, seconds: float, account: str | None = None, kind: str | None = None) -> int:
        """Stop sending anything to the current connections for ``seconds``."""
        seconds = check_seconds("seconds", seconds)
        until = self._clock() + seconds
        targets = self._targets(check_account(account), check_kind(kind))
        for conn in targets:
            conn.stalled_until = until
        return len(targets)

    def refuse(self, seconds: float) -> None:
        """New connections and HTTP requests get 503 for ``seconds`` (0 ends a refusal)."""
        self.refusal.open(self._clock(), check_seconds("seconds", seconds))

    def delay(self, seconds: float) -> None:
        """Delay every reply by ``seconds`` from now on (0 turns it off)."""
        self.reply_delay = check_seconds("seconds", seconds)

    def expire_tokens(self) -> None:
        """Every JWT issued so far is invalid now (new requests get 401; live subs go on)."""
        self._tokens.expire_all()

    def inject(
        self, frame: str | bytes, account: str | None = None, kind: str | None = None
    ) -> int:
        """Send ``frame`` verbatim (as a text frame) to the matching connections."""
        if not isinstance(frame, str | bytes):
            raise InvalidArgumentError(
                "frame", f"must be a str or bytes, got {type(frame).__name__}"
            )
        data = frame.encode() if isinstance(frame, str) else frame
        targets = self._targets(check_account(account), check_kind(kind))
        for conn in targets:
            conn.put(data)
        self.injected += len(targets)
        return len(targets)

    def restart(self, seconds: float = 2.0, code: int = 1006) -> int:
        """Drop every connection and refuse new ones for ``seconds`` (ALOR's daily restart).

        The refusal is :meth:`refuse`'s (``refuse(0)`` ends it, :meth:`stats` does not count
        it); :meth:`restart_window` is the counted, flapping kind."""
        code = check_code(code)
        self.refuse(seconds)
        return self.drop(code)

    # -- the production behaviours of docs/protocol.md §9.6 -------------------------------------

    def idle_cws(self, seconds: float | None) -> None:
        """Idle ``/cws`` connections go stale after ``seconds`` without a command (None: off).

        A stale connection still answers ``ping`` and ``authorize`` (200), but its next command
        is not executed: the connection is cut (1006, no reply, no close frame). Every token
        issued before it went stale keeps the staleness, on that connection and on the
        account's new ones; ``authorize`` with a token issued afterwards clears it and restarts
        the idle clock. Only commands count as activity (not ``ping``, not ``authorize``).
        Turning it off clears every stale connection.
        """
        if seconds is not None:
            seconds = check_seconds("seconds", seconds, MIN_IDLE)
        self.idle.set(seconds)
        for conn in list(self._hub.connections.values()):
            if conn.kind != "cws":
                continue
            if seconds is None:
                conn.stale = False
            self._arm_idle(conn)

    def restart_window(
        self,
        seconds: float,
        *,
        accept: float = 0.0,
        linger: float = 1.0,
        code: int = 1006,
    ) -> int:
        """ALOR's daily restart, scaled: drop every connection now, then for ``seconds`` answer
        new WebSocket connections and HTTP requests with 503.

        ``accept`` (0..1) is the share of attempts let through anyway (flapping): a WebSocket
        let through is dropped with ``code`` a random time of at most ``linger`` seconds later,
        and no later than the window's end, so that every connection open after the window
        was opened after it. Returns how many connections were dropped now. A new window
        replaces a running one; ``seconds`` 0 ends it.
        """
        seconds = check_seconds("seconds", seconds)
        accept, linger, code = check_window(accept, linger, code)
        self.window.open(self._clock(), seconds, accept=accept, linger=linger, code=code)
        return self.drop(code) if seconds > 0 else 0

    def daily_restart(
        self,
        start: str,
        end: str,
        *,
        accept: float = 0.0,
        linger: float = 1.0,
        code: int = 1006,
    ) -> None:
        """Run :meth:`restart_window` every day from ``start`` to ``end`` (``"HH:MM"``, Moscow
        time, UTC+3), e.g. ``("09:00", "10:00")``. Replaces a running schedule."""
        first = check_clock("start", start)
        last = check_clock("end", end)
        if first == last:
            raise InvalidArgumentError("end", f"must differ from start, got {end!r}")
        accept, linger, code = check_window(accept, linger, code)  # now, not at the window
        loop = asyncio.get_running_loop()
        self.stop_daily_restart()
        self._daily = {
            "running": True,
            "start": start,
            "end": end,
            "accept": accept,
            "linger": linger,
            "code": code,
            "windows": 0,
        }
        self._daily_task = loop.create_task(self._run_daily(first, last, accept, linger, code))

    def stop_daily_restart(self) -> None:
        """Stop :meth:`daily_restart` (a window already running goes on to its end)."""
        task, self._daily_task = self._daily_task, None
        if task is not None:
            task.cancel()
        self._daily["running"] = False

    async def _run_daily(
        self, first: int, last: int, accept: float, linger: float, code: int
    ) -> None:
        day = 86_400
        length = (last - first) % day
        while True:
            now = (time.time() + MOSCOW_UTC_OFFSET) % day  # seconds since Moscow midnight
            into = (now - first) % day
            if into < length:  # inside today's window (started late, or the next one is due)
                try:
                    self.restart_window(length - into, accept=accept, linger=linger, code=code)
                    self._daily["windows"] += 1
                except Exception as exc:  # one failed round must not end the schedule
                    self._daily["last_error"] = repr(exc)
                    self.errors += 1
                    log.exception("daily restart: a window failed")
                await asyncio.sleep(length - into + 1.0)
            else:
                await asyncio.sleep(min(day - into, 3600.0))  # re-read the clock hourly

    def silence(
        self,
        seconds: float | None = None,
        *,
        guid: str | None = None,
        opcode: str | None = None,
        symbol: str | None = None,
        account: str | None = None,
        connection: int | None = None,
    ) -> int:
        """Stop sending data to the matching ``/ws`` subscriptions, for ``seconds`` or until
        :meth:`unsilence` (None). Returns how many were silenced.

        Selectors (all given must match; none: every subscription): ``guid``; ``opcode``
        (e.g. ``"QuotesSubscribe"``, any case); ``symbol``, the instrument's ticker or the
        portfolio of an account stream; ``account``, the connection's login; ``connection``,
        a connection id (``sim.server.hub.connections``). The subscriptions stay subscribed:
        their connection answers pings and requests, and its other subscriptions carry on.
        Data meant for a silent subscription is never sent, not even later. It applies to the
        subscriptions there are now: an ``unsubscribe`` ends it, and subscribing again (the
        same guid after an unsubscribe, or on a new connection) gets a subscription that
        streams.
        """
        if seconds is not None:
            seconds = check_seconds("seconds", seconds)
        guid = _check_text("guid", guid)
        opcode = _check_text("opcode", opcode)
        symbol = _check_text("symbol", symbol)
        account = check_account(account)
        if connection is not None and type(connection) is not int:
            raise InvalidArgumentError("connection", f"must be a connection id, got {connection!r}")
        wanted_opcode = opcode.casefold() if opcode is not None else None
        wanted_symbol = symbol.casefold() if symbol is not None else None
        hub = self._hub
        chosen: list[Subscription] = []
        for conn in self._targets(account, "ws"):
            if connection is not None and conn.id != connection:
                continue
            chosen.extend(
                sub
                for sub in list(conn.subs.values())
                if (guid is None or sub.guid == guid)
                and (wanted_opcode is None or sub.opcode.casefold() == wanted_opcode)
                and (wanted_symbol is None or sub.key[1].casefold() == wanted_symbol)
                and hub.silence(sub)
            )
        self._silenced = {k: v for k, v in self._silenced.items() if v.silent and v.alive}
        for sub in chosen:
            self._silenced[id(sub)] = sub
        if seconds is not None and chosen:
            self._silence_rounds += 1
            key = self._silence_rounds
            loop = asyncio.get_running_loop()
            self._silence_timers[key] = loop.call_later(seconds, self._end_silence, key, chosen)
        return len(chosen)

    def _end_silence(self, key: int, subs: list[Subscription]) -> None:
        self._silence_timers.pop(key, None)
        hub = self._hub
        for sub in subs:
            self._silenced.pop(id(sub), None)
            hub.unsilence(sub)

    def unsilence(self) -> int:
        """End every :meth:`silence`; returns how many subscriptions stream again."""
        for timer in self._silence_timers.values():
            timer.cancel()
        self._silence_timers.clear()
        hub = self._hub
        subs, self._silenced = list(self._silenced.values()), {}
        return sum(1 for sub in subs if hub.unsilence(sub))

    async def aclose(self) -> None:
        """Cancel background faults and wait for them."""
        for timer in self._silence_timers.values():
            timer.cancel()
        self._silence_timers.clear()
        tasks = [self._drops_task, self._daily_task]
        self._drops_task = self._daily_task = None
        self._drops["running"] = False
        self._daily["running"] = False
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


# -- the admin endpoints -----------------------------------------------------------------------

_MAX_INJECT: Final = 1 << 20  # /sim/inject may carry a larger frame (it is sent, not parsed)


async def _params(request: web.Request, *known: str, limit: int = MAX_REQUEST) -> dict[str, Any]:
    """The request's JSON object body (``{}`` without one); 400 naming any field the endpoint
    does not take: a misspelt argument is refused, never ignored for its default."""
    body = await read_json(request, limit) or {}
    unknown = sorted(set(body) - set(known))
    if unknown:
        takes = ", ".join(known) if known else "no fields"
        raise web.HTTPBadRequest(
            text=f"unknown field(s) {', '.join(map(repr, unknown))}: {request.path} takes {takes}"
        )
    return body


class AdminApi:
    """The ``/sim/*`` endpoints: :class:`Faults` over HTTP, plus the ground truth and stats.

    The server registers them only with ``admin=True``. With a ``token`` every request must
    carry it, as ``Authorization: Bearer <admin token>`` or ``X-Sim-Admin: <admin token>``;
    otherwise :meth:`refusal` answers 401. :class:`Faults` checks every argument: a bad one
    raises :class:`~alorws.errors.InvalidArgumentError`, which the server answers with a 400
    naming it; nothing changes.

    Args:
        faults: what the endpoints drive.
        token: the admin token, or None (no token required).
        ground_truth: the engine's ground-truth log (``GET /sim/ground-truth``).
        stats: the server's stats (``GET /sim/stats``).
    """

    def __init__(
        self,
        faults: Faults,
        *,
        token: str | None,
        ground_truth: Callable[[], list[dict[str, Any]]],
        stats: Callable[[], dict[str, Any]],
    ) -> None:
        self.faults = faults
        self.token = token
        self._ground_truth = ground_truth
        self._stats = stats

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register every ``/sim/*`` endpoint on ``router``."""
        r = router
        r.add_post("/sim/drop", self._drop)
        r.add_post("/sim/stall", self._stall)
        r.add_post("/sim/refuse", self._refuse)
        r.add_post("/sim/delay", self._delay)
        r.add_post("/sim/expire-tokens", self._expire)
        r.add_post("/sim/inject", self._inject)
        r.add_post("/sim/restart", self._restart)
        r.add_post("/sim/random-drops", self._random_drops)
        r.add_post("/sim/idle-cws", self._idle_cws)
        r.add_post("/sim/restart-window", self._restart_window)
        r.add_post("/sim/daily-restart", self._daily_restart)
        r.add_post("/sim/silence", self._silence)
        r.add_post("/sim/unsilence", self._unsilence)
        r.add_get("/sim/ground-truth", self._get_ground_truth)
        r.add_get("/sim/stats", self._get_stats)

    def refusal(self, request: web.Request) -> web.Response | None:
        """The 401 answer for a request without the admin token, or None to serve it."""
        if self.token is None:
            return None
        given = request.headers.get("X-Sim-Admin")
        if given is None:
            header = request.headers.get("Authorization", "")
            given = header[7:].strip() if header.startswith("Bearer ") else ""
        if hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        return json_response(
            {
                "code": 401,
                "message": "Admin token required: send 'Authorization: Bearer <admin "
                "token>' or 'X-Sim-Admin: <admin token>'",
            },
            401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def _drop(self, request: web.Request) -> web.StreamResponse:
        body = await _params(request, "code", "account")
        n = self.faults.drop(body.get("code", 1006), account=body.get("account"))
        return json_response({"dropped": n})

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        body = await _params(request, "seconds", "account")
        n = self.faults.stall(body.get("seconds", 1.0), account=body.get("account"))
        return json_response({"stalled": n})

    async def _refuse(self, request: web.Request) -> web.StreamResponse:
        body = await _params(request, "seconds")
        self.faults.refuse(body.get("seconds", 1.0))
        return json_response({"ok": True})

    async def _delay(self, request: web.Request) -> web.StreamResponse:
        body = await _params(request, "seconds")
        self.faults.delay(body.get("seconds", 0.0))
        return json_response({"ok": True})

    async def _expire(self, request: web.Request) -> web.StreamResponse:
        await _params(request)
        self.faults.expire_tokens()
        return json_response({"ok": True})

    async def _inject(self, request: web.Request) -> web.StreamResponse:
        body = await _params(request, "frame", "account", limit=_MAX_INJECT)
        frame = body.get("frame")
        if not isinstance(frame, str):
            return error_response(400, "frame: must be a string")
        n = self.faults.inject(frame, account=body.get("account"))
        return json_response({"injected": n})

    async def _restart(self, request: web.Request) -> web.StreamResponse:
        body = await _params(request, "seconds", "code")
        n = self.faults.restart(body.get("seconds", 2.0), code=body.get("code", 1006))
        return json_response({"dropped": n})

    async def _idle_cws(self, request: web.Request) -> web.StreamResponse:
        """``{"seconds": s}`` makes idle /cws connections stale after s; null turns it off."""
        body = await _params(request, "seconds")
        self.faults.idle_cws(body.get("seconds"))
        return json_response({"ok": True})

    async def _restart_window(self, request: web.Request) -> web.StreamResponse:
        """``{"seconds", "accept", "linger", "code"}``: a restart window from now."""
        body = await _params(request, "seconds", "accept", "linger", "code")
        n = self.faults.restart_window(
            body.get("seconds", 2.0),
            accept=body.get("accept", 0.0),
            linger=body.get("linger", 1.0),
            code=body.get("code", 1006),
        )
        return json_response({"dropped": n})

    async def _daily_restart(self, request: web.Request) -> web.StreamResponse:
        """``{"start": "09:00", "end": "10:00", ...}`` (Moscow time); ``start`` null stops."""
        body = await _params(request, "start", "end", "accept", "linger", "code")
        faults = self.faults
        if body.get("start") is None:
            faults.stop_daily_restart()
        else:
            faults.daily_restart(
                body["start"],
                body.get("end", ""),
                accept=body.get("accept", 0.0),
                linger=body.get("linger", 1.0),
                code=body.get("code", 1006),
            )
        return json_response({"ok": True})

    async def _silence(self, request: web.Request) -> web.StreamResponse:
        """``{"seconds", "guid", "opcode", "symbol", "account", "connection"}``."""
        body = await _params(
            request, "seconds", "guid", "opcode", "symbol", "account", "connection"
        )
        n = self.faults.silence(
            body.get("seconds"),
            guid=body.get("guid"),
            opcode=body.get("opcode"),
            symbol=body.get("symbol"),
            account=body.get("account"),
            connection=body.get("connection"),
        )
        return json_response({"silenced": n})

    async def _unsilence(self, request: web.Request) -> web.StreamResponse:
        await _params(request)
        return json_response({"restored": self.faults.unsilence()})

    async def _random_drops(self, request: web.Request) -> web.StreamResponse:
        """``{"every": s, "codes": [...], "account": login}`` starts; ``every`` null stops."""
        body = await _params(request, "every", "codes", "account")
        every = body.get("every")
        faults = self.faults
        if every is None:
            faults.stop_random_drops()
        else:
            codes = body.get("codes", [1000, 1006, 1011, 1012])
            faults.random_drops(every, codes=codes, account=body.get("account"))
        return json_response({"ok": True})

    async def _get_ground_truth(self, request: web.Request) -> web.StreamResponse:
        return json_response(self._ground_truth())

    async def _get_stats(self, request: web.Request) -> web.StreamResponse:
        return json_response(self._stats())
