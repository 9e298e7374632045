"""Fault injection (issue point 7): what a client must survive, on demand.

The same operations are reachable three ways: this in-process API (``sim.faults`` in tests),
the admin endpoints ``/sim/*`` (only when the simulator runs with ``admin=True``) and the
command-line flags of ``alorws sim``.

* :meth:`Faults.drop`: close connections now, with close code 1000, 1011, 1012 (a close frame)
  or 1006 (no close frame: the TCP connection is just cut).
* :meth:`Faults.random_drops`: the same at random intervals, with a random code from a set.
* :meth:`Faults.stall`: stop sending to connections for N seconds (their queues keep filling,
  and the unread limit still applies).
* :meth:`Faults.refuse`: new connections (and HTTP) get 503 for N seconds.
* :meth:`Faults.delay`: every reply (and the data behind it) waits N seconds.
* :meth:`Faults.expire_tokens`: every JWT issued so far is invalid from now on.
* :meth:`Faults.inject`: send an arbitrary (malformed or unknown) frame to connections.
* :meth:`Faults.restart`: drop every connection and refuse new ones for a while, like ALOR's
  daily restart.

Every argument is checked: a bad one raises :class:`~alorws.errors.InvalidArgumentError` naming
it (the admin endpoints answer 400 with that message) and changes nothing. Durations are finite
seconds within ``0..MAX_SECONDS``; close codes come from :data:`CLOSE_REASONS`. A background
fault (``random_drops``) survives a failing round: the failure is logged, counted in the
server's ``errors`` and shown in :meth:`Faults.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from ..errors import InvalidArgumentError


if TYPE_CHECKING:
    from .server import SimServer
    from .subscriptions import Connection


__all__ = [
    "CLOSE_REASONS",
    "MAX_SECONDS",
    "MIN_DROP_EVERY",
    "Faults",
    "check_account",
    "check_code",
    "check_codes",
    "check_kind",
    "check_seconds",
]

log = logging.getLogger("alorws.sim")

#: The longest duration any fault accepts (a day), seconds.
MAX_SECONDS: Final = 86_400.0
#: The shortest mean gap of :meth:`Faults.random_drops`, seconds: below it the task would do
#: little but drop.
MIN_DROP_EVERY: Final = 0.01
_KINDS: Final = ("ws", "cws")

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


def check_kind(value: object) -> str | None:
    """``value`` as a connection kind (``ws``/``cws``), or None for both."""
    if value is not None and value not in _KINDS:
        raise InvalidArgumentError("kind", f"must be 'ws' or 'cws', got {value!r}")
    return value


class Faults:
    """Fault injection on a running :class:`~alorws.sim.server.SimServer`."""

    def __init__(self, server: SimServer, seed: int | None = None) -> None:
        self._server = server
        self._random = random.Random(seed)
        self._drops_task: asyncio.Task[None] | None = None
        self._drops: dict[str, Any] = {"running": False}
        self.injected = 0
        self.dropped = 0

    def stats(self) -> dict[str, Any]:
        """State of the background faults (part of ``GET /sim/stats``): for ``random_drops``
        whether it runs, its settings, how many rounds failed, the last failure and, if the
        task ended by itself, why."""
        return {"random_drops": dict(self._drops)}

    def _targets(self, account: str | None = None, kind: str | None = None) -> list[Connection]:
        conns = list(self._server.hub.connections.values())
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
            self._server.errors += 1
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
                self._server.errors += 1
                log.exception("random drops: a round failed")

    def stall(self, seconds: float, account: str | None = None, kind: str | None = None) -> int:
        """Stop sending anything to the current connections for ``seconds``."""
        seconds = check_seconds("seconds", seconds)
        until = asyncio.get_running_loop().time() + seconds
        targets = self._targets(check_account(account), check_kind(kind))
        for conn in targets:
            conn.stalled_until = until
        return len(targets)

    def refuse(self, seconds: float) -> None:
        """New connections and HTTP requests get 503 for ``seconds`` (0 ends a refusal)."""
        seconds = check_seconds("seconds", seconds)
        self._server.refuse_until = asyncio.get_running_loop().time() + seconds

    def delay(self, seconds: float) -> None:
        """Delay every reply by ``seconds`` from now on (0 turns it off)."""
        self._server.reply_delay = check_seconds("seconds", seconds)

    def expire_tokens(self) -> None:
        """Every JWT issued so far is invalid now (new requests get 401; live subs go on)."""
        self._server.tokens.expire_all()

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
        """Drop every connection and refuse new ones for ``seconds`` (ALOR's daily restart)."""
        code = check_code(code)
        self.refuse(seconds)
        return self.drop(code)

    async def aclose(self) -> None:
        """Cancel background faults and wait for them."""
        task, self._drops_task = self._drops_task, None
        self._drops["running"] = False
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
