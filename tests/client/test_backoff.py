"""The reconnect/retry delay policy: capped exponential backoff with full jitter
(docs/protocol.md §9)."""

from __future__ import annotations

import dataclasses
import itertools
import random
import statistics

import pytest
from hypothesis import given, strategies as st

from alorws.errors import ConfigurationError
from alorws.protocol.backoff import NO_DELAY, Backoff


def test_defaults() -> None:
    """The defaults are base 0.5 s, cap 30 s, factor 2, unlimited attempts, jitter on."""
    b = Backoff()
    assert (b.base, b.cap, b.factor, b.max_attempts, b.jitter) == (0.5, 30.0, 2.0, None, True)


def test_ceilings_grow_exponentially_then_cap() -> None:
    """Without jitter the delays are min(cap, base * factor**n)."""
    b = Backoff(base=0.5, cap=10.0, jitter=False)
    assert list(itertools.islice(b.delays(), 8)) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert [b.ceiling(n) for n in range(3)] == [0.5, 1.0, 2.0]


def test_ceiling_never_overflows() -> None:
    """Huge attempt numbers give the cap, not an OverflowError."""
    b = Backoff(base=1.0, cap=30.0, factor=3.0)
    assert b.ceiling(10_000) == 30.0
    assert Backoff(base=0.0, cap=5.0).ceiling(10_000) == 0.0
    delays = Backoff(base=1.0, cap=2.0, jitter=False).delays()
    assert list(itertools.islice(delays, 5000))[-1] == 2.0


def test_jittered_delays_stay_within_their_ceiling() -> None:
    """Full jitter: the n-th delay lies in [0, min(cap, base * factor**n)]."""
    b = Backoff(base=0.1, cap=3.0)
    for _ in range(50):
        for n, d in enumerate(itertools.islice(b.delays(), 20)):
            assert 0.0 <= d <= b.ceiling(n) <= b.cap


def test_jitter_is_spread_over_the_whole_range() -> None:
    """Capped delays are uniform on [0, cap]: mean ≈ cap/2, both ends reached."""
    b = Backoff(base=1.0, cap=4.0)
    rng = random.Random(1)
    samples = [d for _ in range(400) for d in itertools.islice(b.delays(rng), 3, 10)]
    assert all(0.0 <= d <= 4.0 for d in samples)
    assert statistics.fmean(samples) == pytest.approx(2.0, abs=0.1)
    assert min(samples) < 0.1 and max(samples) > 3.9
    # roughly uniform: each quarter of [0, cap] holds about a quarter of the samples
    quarters = [sum(q <= d < q + 1 for d in samples) / len(samples) for q in range(4)]
    assert all(0.2 < share < 0.3 for share in quarters)


def test_seeded_rng_is_deterministic() -> None:
    """The same seed gives the same delays; another seed different ones."""
    b = Backoff()
    first = list(itertools.islice(b.delays(random.Random(42)), 10))
    again = list(itertools.islice(b.delays(random.Random(42)), 10))
    other = list(itertools.islice(b.delays(random.Random(43)), 10))
    assert first == again
    assert first != other


def test_unseeded_iterators_are_independent() -> None:
    """Without an rng, each iterator has its own random source (clients do not lockstep)."""
    b = Backoff(base=10.0, cap=10.0)
    assert list(itertools.islice(b.delays(), 5)) != list(itertools.islice(b.delays(), 5))


def test_max_attempts_bounds_the_iterator() -> None:
    """max_attempts=n yields exactly n delays; 0 yields none; None never stops."""
    assert len(list(Backoff(max_attempts=3).delays())) == 3
    assert list(Backoff(max_attempts=0).delays()) == []
    assert len(list(itertools.islice(Backoff().delays(), 1000))) == 1000


def test_no_delay() -> None:
    """NO_DELAY retries at once, forever; replace() bounds it."""
    assert list(itertools.islice(NO_DELAY.delays(), 100)) == [0.0] * 100
    assert list(dataclasses.replace(NO_DELAY, max_attempts=2).delays()) == [0.0, 0.0]


def test_frozen() -> None:
    """A policy is an immutable value."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        Backoff().base = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": -1.0},
        {"cap": -0.1},
        {"base": float("nan")},
        {"factor": 0.5},
        {"max_attempts": -1},
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, float]) -> None:
    """Negative times, a shrinking factor or negative attempts raise ConfigurationError."""
    with pytest.raises(ConfigurationError):
        Backoff(**kwargs)  # type: ignore[arg-type]


@given(
    base=st.floats(0, 100),
    cap=st.floats(0, 1000),
    factor=st.floats(1, 10),
    seed=st.integers(0, 2**32),
)
def test_delays_are_bounded_property(base: float, cap: float, factor: float, seed: int) -> None:
    """Every delay lies in [0, min(cap, base * factor**n)], and the ceilings never shrink."""
    b = Backoff(base=base, cap=cap, factor=factor)
    delays = list(itertools.islice(b.delays(random.Random(seed)), 60))
    ceilings = [b.ceiling(n) for n in range(60)]
    assert all(0.0 <= d <= c <= cap for d, c in zip(delays, ceilings, strict=True))
    assert ceilings == sorted(ceilings)
