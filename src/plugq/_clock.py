"""Where backends take the time from.

Every time-dependent decision (schedules, retry intervals, TTLs, leases) reads
``backend.clock.now()``, so a test can swap in a :class:`ManualClock` and move
time forward instead of sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .storage import Clock, ManualClock

__all__ = ["Clock", "ManualClock", "to_datetime", "to_timestamp"]


def to_datetime(ts: float | None) -> datetime | None:
    """Epoch seconds to an aware UTC datetime (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def to_timestamp(value: datetime) -> float:
    """An aware or naive-UTC datetime to epoch seconds (naive is read as UTC, like RQ)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
