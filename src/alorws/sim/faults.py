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
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from .server import SimServer
    from .subscriptions import Connection


__all__ = ["CLOSE_REASONS", "Faults"]

#: Close codes the drop faults use, with the reason text sent in the close frame.
CLOSE_REASONS = {
    1000: "Normal closure",
    1001: "Going away",
    1006: "",  # abnormal: no close frame at all
    1008: "Policy violation",
    1011: "Internal server error",
    1012: "Service restart",
}


class Faults:
    """Fault injection on a running :class:`~alorws.sim.server.SimServer`."""

    def __init__(self, server: SimServer, seed: int | None = None) -> None:
        self._server = server
        self._random = random.Random(seed)
        self._drops_task: asyncio.Task[None] | None = None
        self.injected = 0
        self.dropped = 0

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
        targets = self._targets(account, kind)
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
        """Drop one random connection about every ``every`` seconds (exponential gaps)."""
        self.stop_random_drops()
        self._drops_task = asyncio.get_running_loop().create_task(
            self._drop_randomly(every, list(codes), account)
        )

    def stop_random_drops(self) -> None:
        """Stop :meth:`random_drops`."""
        task, self._drops_task = self._drops_task, None
        if task is not None:
            task.cancel()

    async def _drop_randomly(self, every: float, codes: list[int], account: str | None) -> None:
        while True:
            await asyncio.sleep(self._random.expovariate(1.0 / every))
            targets = self._targets(account)
            if targets:
                self._drop_one(self._random.choice(targets), self._random.choice(codes))

    def stall(self, seconds: float, account: str | None = None, kind: str | None = None) -> int:
        """Stop sending anything to the current connections for ``seconds``."""
        until = asyncio.get_running_loop().time() + seconds
        targets = self._targets(account, kind)
        for conn in targets:
            conn.stalled_until = until
        return len(targets)

    def refuse(self, seconds: float) -> None:
        """New connections and HTTP requests get 503 for ``seconds``."""
        self._server.refuse_until = asyncio.get_running_loop().time() + seconds

    def delay(self, seconds: float) -> None:
        """Delay every reply by ``seconds`` from now on (0 turns it off)."""
        self._server.reply_delay = max(0.0, seconds)

    def expire_tokens(self) -> None:
        """Every JWT issued so far is invalid now (new requests get 401; live subs go on)."""
        self._server.tokens.expire_all()

    def inject(
        self, frame: str | bytes, account: str | None = None, kind: str | None = None
    ) -> int:
        """Send ``frame`` verbatim (as a text frame) to the matching connections."""
        data = frame.encode() if isinstance(frame, str) else frame
        targets = self._targets(account, kind)
        for conn in targets:
            conn.put(data)
        self.injected += len(targets)
        return len(targets)

    def restart(self, seconds: float = 2.0, code: int = 1006) -> int:
        """Drop every connection and refuse new ones for ``seconds`` (ALOR's daily restart)."""
        self.refuse(seconds)
        return self.drop(code)

    async def aclose(self) -> None:
        """Cancel background faults and wait for them."""
        task, self._drops_task = self._drops_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
