"""Time helpers: ALOR's wire units to aware UTC datetimes and back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from alorws.protocol import timeutil


def test_iso_with_seven_fraction_digits() -> None:
    """ALOR's 7-digit fractions are rounded to microseconds, in UTC."""
    dt = timeutil.parse_iso("2025-06-23T07:26:01.4410000Z")
    assert dt == datetime(2025, 6, 23, 7, 26, 1, 441000, tzinfo=UTC)


def test_iso_without_zone_is_utc() -> None:
    """Slim endTime may lack the Z: it is taken as UTC."""
    assert timeutil.parse_iso("2025-06-23T23:59:59.9990000") == datetime(
        2025, 6, 23, 23, 59, 59, 999000, tzinfo=UTC
    )


def test_iso_with_offset() -> None:
    """An explicit offset is honoured and converted to UTC."""
    assert timeutil.parse_iso("2025-06-23T10:00:00+03:00") == datetime(2025, 6, 23, 7, tzinfo=UTC)


def test_iso_rounding_carries_into_seconds() -> None:
    """Rounding 9 fraction digits up carries into the next second."""
    assert timeutil.parse_iso("2025-01-01T00:00:00.9999999Z") == datetime(
        2025, 1, 1, 0, 0, 1, tzinfo=UTC
    )


@pytest.mark.parametrize("bad", ["", "yesterday", "2025-06-23", "2025-13-01T00:00:00Z"])
def test_bad_iso_raises_value_error(bad: str) -> None:
    """Unparseable text raises ValueError."""
    with pytest.raises(ValueError):
        timeutil.parse_iso(bad)


def test_ms_and_seconds_round_trip() -> None:
    """Milliseconds and seconds convert both ways; naive datetimes count as UTC."""
    ms = 1_750_663_603_557
    assert timeutil.to_ms(timeutil.from_ms(ms)) == ms
    assert timeutil.to_seconds(timeutil.from_seconds(1_750_663_560)) == 1_750_663_560
    assert timeutil.to_ms(datetime(1970, 1, 1, 0, 0, 1)) == 1000
