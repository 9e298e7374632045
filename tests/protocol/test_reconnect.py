"""The reconnect policy: backoff delays, retry at once, give up, start over once stable."""

from __future__ import annotations

import random

from alorws.protocol.backoff import Backoff
from alorws.protocol.reconnect import STABLE_SECONDS, ReconnectPolicy, Retry


STEADY = Backoff(base=1.0, cap=8.0, jitter=False)


def test_failed_attempts_follow_the_backoff() -> None:
    """Each failed connect waits the backoff's next delay."""
    policy = ReconnectPolicy(STEADY)
    assert [policy.connect_failed() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_retry_now_uses_no_delay_and_never_gives_up() -> None:
    """Retry.NOW answers 0 without using a delay; Retry.NEVER answers None."""
    policy = ReconnectPolicy(STEADY)
    assert policy.connect_failed(Retry.NOW) == 0.0
    assert policy.connect_failed(Retry.LATER) == 1.0
    assert policy.connect_failed(Retry.NEVER) is None
    assert policy.connect_failed(Retry.LATER) == 2.0


def test_a_short_lived_connection_keeps_the_backoff_growing() -> None:
    """A connection dropped before STABLE_SECONDS counts as a failed attempt."""
    policy = ReconnectPolicy(STEADY)
    assert policy.connect_failed() == 1.0
    for expected in (2.0, 4.0, 8.0):
        policy.opened(100.0)
        assert policy.closed(100.0 + STABLE_SECONDS - 0.001) == expected


def test_a_stable_connection_starts_the_backoff_over() -> None:
    """A connection that lasted STABLE_SECONDS resets the delays."""
    policy = ReconnectPolicy(STEADY)
    for _ in range(3):
        policy.connect_failed()
    policy.opened(100.0)
    assert policy.closed(100.0 + STABLE_SECONDS) == 1.0
    assert policy.connect_failed() == 2.0


def test_the_policy_gives_up_when_the_backoff_runs_out() -> None:
    """With max_attempts, failed attempts and closes alike end in None."""
    policy = ReconnectPolicy(Backoff(base=0.0, cap=0.0, jitter=False, max_attempts=2))
    assert policy.connect_failed() == 0.0
    policy.opened(0.0)
    assert policy.closed(1.0) == 0.0
    assert policy.connect_failed() is None
    policy.opened(2.0)
    assert policy.closed(2.0 + STABLE_SECONDS) == 0.0  # stable: a fresh budget


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    """The same seed draws the same delays, each within its ceiling."""
    jittered = Backoff(base=1.0, cap=8.0)
    first = ReconnectPolicy(jittered, rng=random.Random(7))
    second = ReconnectPolicy(jittered, rng=random.Random(7))
    a = [first.connect_failed() for _ in range(6)]
    assert a == [second.connect_failed() for _ in range(6)]
    assert all(d is not None and 0 <= d <= c for d, c in zip(a, [1, 2, 4, 8, 8, 8], strict=True))
