"""Between the epoch seconds records hold and the datetimes the public API shows.

The clocks themselves are :class:`plugq.storage.Clock` and :class:`plugq.storage.ManualClock`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def to_datetime(ts: float | None) -> datetime | None:
    """Epoch seconds to an aware UTC datetime (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def to_timestamp(value: datetime) -> float:
    """An aware or naive-UTC datetime to epoch seconds (naive is read as UTC, like RQ)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
