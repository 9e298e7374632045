"""When to connect again: the reconnect rule shared by every connection, as a pure policy.

A :class:`ReconnectPolicy` turns what happened to the last attempt into the delay before the
next one, or ``None`` to give up. It never sleeps and never reads a clock: the caller passes
``now`` and does the waiting (the asyncio driver is ``alorws.client._ws.reconnecting``).

The rule (docs/protocol.md §9):

* a connect attempt that fails waits the next delay of the :class:`~.backoff.Backoff`
  (:attr:`Retry.LATER`), or tries again at once without using one (:attr:`Retry.NOW`: the
  caller knows why it failed and what to change, e.g. a refused ``authorize`` retried with a
  refreshed token), or gives up (:attr:`Retry.NEVER`);
* a connection that opened and then closed waits the next delay too; but one that stayed open
  for at least :data:`STABLE_SECONDS` starts the backoff over, so a server that accepts and
  drops at once (a restart window flapping, docs/protocol.md §9.6) is not hammered at the
  backoff's base rate, while one that worked for a while is retried quickly;
* when the backoff runs out (``max_attempts``), the policy answers ``None``: give up.

What the caller must do::

    policy = ReconnectPolicy(backoff)
    while True:
        try:
            conn = connect()
        except Exception as exc:
            delay = policy.connect_failed(decide(exc))   # decide: LATER / NOW; NEVER raises
        else:
            policy.opened(now())
            run(conn)                                    # until it closes
            delay = policy.closed(now())
        if delay is None:
            give_up()
        sleep(delay)
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator
from typing import Final

from .backoff import Backoff


__all__ = ["STABLE_SECONDS", "ReconnectPolicy", "Retry"]

#: A connection that lasted less than this (seconds) counts as a failed attempt: the backoff
#: goes on growing instead of starting over (see the module docstring).
STABLE_SECONDS: Final = 10.0


class Retry(enum.Enum):
    """What to do after a failed connect attempt."""

    LATER = "later"  # wait the backoff's next delay, then try again
    NOW = "now"  # try again at once; no delay is used up
    NEVER = "never"  # give up: the failure is final (the caller fails what waits)


class ReconnectPolicy:
    """Delays between connect attempts of one connection: backoff, reset once stable.

    Args:
        backoff: the delay policy (jittered exponential, possibly bounded by
            ``max_attempts``).
        stable_after: seconds a connection must stay open for the backoff to start over.
        rng: the jitter's random source (seed it for reproducible delays).
    """

    def __init__(
        self,
        backoff: Backoff,
        *,
        stable_after: float = STABLE_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self._backoff = backoff
        self._stable_after = stable_after
        self._rng = rng
        self._delays: Iterator[float] = backoff.delays(rng)
        self._opened_at: float | None = None

    def connect_failed(self, retry: Retry = Retry.LATER) -> float | None:
        """An attempt failed before the connection was usable.

        Returns:
            Seconds to wait before the next attempt (0 for :attr:`Retry.NOW`), or ``None``:
            give up (the backoff ran out, or ``retry`` is :attr:`Retry.NEVER`).
        """
        if retry is Retry.NEVER:
            return None
        if retry is Retry.NOW:
            return 0.0
        return next(self._delays, None)

    def opened(self, now: float) -> None:
        """The connection is open and usable at ``now``; call :meth:`closed` when it ends."""
        self._opened_at = now

    def closed(self, now: float) -> float | None:
        """The connection opened at :meth:`opened` is gone at ``now``.

        Returns:
            Seconds to wait before connecting again, or ``None``: give up (the backoff ran
            out). After a connection that lasted :data:`STABLE_SECONDS` the backoff starts over.
        """
        opened_at, self._opened_at = self._opened_at, None
        if opened_at is not None and now - opened_at >= self._stable_after:
            self._delays = self._backoff.delays(self._rng)  # it worked for a while: start over
        return next(self._delays, None)
