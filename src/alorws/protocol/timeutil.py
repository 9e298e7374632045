"""Conversions for the time units ALOR puts on the wire.

Models keep times exactly as sent (docs/protocol.md §3.5): Unix seconds (``Bar.time``,
``last_price_timestamp``), Unix milliseconds (``ms_timestamp``, ``Trade.timestamp``) or ISO-8601
strings with up to 7 fraction digits (``Order.trans_time``; Slim sometimes omits the ``Z``). These
helpers turn any of them into aware UTC ``datetime`` objects and back, and into Moscow time
(:data:`MSK`), the time ALOR's users and the exchange's schedule speak in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone


__all__ = [
    "MSK",
    "MSK_NAME",
    "from_ms",
    "from_seconds",
    "parse_iso",
    "to_ms",
    "to_msk",
    "to_seconds",
]

#: Moscow time: UTC+3 all year since 2014, so a fixed offset needs no tz database.
MSK = timezone(timedelta(hours=3), "MSK")
#: The IANA name for pandas and other tz-database users.
MSK_NAME = "Europe/Moscow"

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d{2}:?\d{2})?$"
)


def from_ms(ms: int) -> datetime:
    """Unix milliseconds -> aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def from_seconds(seconds: float) -> datetime:
    """Unix seconds -> aware UTC datetime."""
    return datetime.fromtimestamp(seconds, tz=UTC)


def to_msk(dt: datetime) -> datetime:
    """Aware datetime -> the same instant in Moscow time (naive datetimes are taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(MSK)


def to_ms(dt: datetime) -> int:
    """Aware datetime -> Unix milliseconds (naive datetimes are taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def to_seconds(dt: datetime) -> int:
    """Aware datetime -> whole Unix seconds (naive datetimes are taken as UTC)."""
    return to_ms(dt) // 1000


def parse_iso(text: str) -> datetime:
    """Parse an ALOR ISO-8601 time (``2025-06-23T07:26:01.4410000Z``) to an aware datetime.

    Accepts up to 9 fraction digits (rounded to microseconds) and a missing zone (taken as
    UTC, as in Slim ``endTime``). Raises ``ValueError`` naming the text otherwise.
    """
    m = _ISO.match(text)
    if m is None:
        raise ValueError(f"not an ISO-8601 time: {text!r}")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    micros = round(int((frac or "0").ljust(9, "0")) / 1000)
    dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    if zone and zone != "Z":
        dt = datetime.fromisoformat(f"{dt.replace(tzinfo=None).isoformat()}{zone}")
    return (dt + timedelta(microseconds=micros)).astimezone(UTC)
