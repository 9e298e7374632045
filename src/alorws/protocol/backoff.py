"""Reconnect and retry delays: capped exponential backoff with full jitter, as a pure policy.

A :class:`Backoff` only *computes* delays; whoever retries does the sleeping. That keeps the
policy testable without an event loop and lets tests inject :data:`NO_DELAY` instead of
patching ``sleep`` (style rule 5).

Why this policy (docs/protocol.md §9): ALOR clients reconnect badly. AlorPy waits a fixed 5 s
forever (docs/protocol.md §9.2); the .NET SDK uses 2^n s without jitter, so every client dropped by
the same server hiccup comes back in lockstep (docs/protocol.md §9.3); the Astras UI retries 2 s × 5
and then gives up (docs/protocol.md §9.1). We use "full jitter": the n-th delay (n = 0, 1, …) is
drawn uniformly from ``[0, min(cap, base * factor**n)]``. It spreads a thundering herd best while
still backing off exponentially, and attempts are unlimited unless ``max_attempts`` is set.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ..errors import ConfigurationError


__all__ = ["NO_DELAY", "Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter (docs/protocol.md §9).

    Attributes:
        base: the ceiling of the first delay, in seconds.
        cap: no delay ever exceeds this many seconds.
        factor: how much the ceiling grows per attempt (``>= 1``).
        max_attempts: how many delays :meth:`delays` yields before it stops, i.e. how many
            retries follow the first try; ``None`` (the default) never stops.
        jitter: draw each delay uniformly from ``[0, ceiling]`` (full jitter). ``False``
            yields the ceilings themselves (deterministic, for logs and tests).

    Raises:
        ConfigurationError: a negative ``base``/``cap``/``max_attempts`` or ``factor < 1``.
    """

    base: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    max_attempts: int | None = None
    jitter: bool = True

    def __post_init__(self) -> None:
        if not (self.base >= 0 and self.cap >= 0):  # `not >=` also catches NaN
            raise ConfigurationError(
                f"Backoff: base and cap must be >= 0 seconds, got base={self.base}, cap={self.cap}"
            )
        if not self.factor >= 1:
            raise ConfigurationError(f"Backoff: factor must be >= 1, got {self.factor}")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ConfigurationError(
                f"Backoff: max_attempts must be >= 0 or None (unlimited), got {self.max_attempts}"
            )

    def ceiling(self, attempt: int) -> float:
        """The largest delay allowed before retry number ``attempt`` (0-based).

        ``min(cap, base * factor**attempt)``, safe for any ``attempt`` (no float overflow).
        """
        if attempt < 0:
            raise ConfigurationError(f"Backoff.ceiling: attempt must be >= 0, got {attempt}")
        if self.base == 0:
            return 0.0
        try:
            grown = self.base * self.factor**attempt
        except OverflowError:  # factor**attempt beyond float range: long since capped
            return self.cap
        return min(self.cap, grown)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The delays to wait before each retry, in seconds, first retry first.

        Start a fresh iterator after every success (a successful connect resets the backoff).
        The iterator ends after ``max_attempts`` delays: then give up.

        Args:
            rng: the random source for the jitter; pass a seeded ``random.Random`` for
                reproducible delays. By default a private, randomly seeded one.
        """
        draw = (rng or random.Random()).uniform if self.jitter else None
        attempt = 0
        capped = False
        while self.max_attempts is None or attempt < self.max_attempts:
            # Once the ceiling reaches the cap it stays there; skip the power (and its overflow).
            ceiling = self.cap if capped else self.ceiling(attempt)
            capped = ceiling >= self.cap
            yield draw(0.0, ceiling) if draw is not None else ceiling
            attempt += 1


#: Retry at once, forever: for tests, which must never wait on a real backoff. Bound it with
#: ``dataclasses.replace(NO_DELAY, max_attempts=3)`` to test giving up.
NO_DELAY: Final = Backoff(base=0.0, cap=0.0, jitter=False)
