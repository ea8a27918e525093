"""Between the epoch seconds records hold and the datetimes the public API shows.

The clocks themselves are :class:`plugq.storage.Clock` and :class:`plugq.storage.ManualClock`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from ._validate import number_error

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def to_datetime(ts: float | None) -> datetime | None:
    """Epoch seconds to an aware UTC datetime (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def to_timestamp(value: datetime) -> float:
    """An aware or naive-UTC datetime to epoch seconds (naive is read as UTC, like RQ)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def parse_timeout(value: Any, what: str = "job_timeout") -> float | None:
    """Seconds from an int, float or RQ-style string ('90', '5m', '1h'); -1 means none.

    Raises:
        ValueError: zero, negative (other than -1) or unparseable values.
    """
    if value is None:
        return None
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"{what}={value!r} is not a duration; use seconds or '30s', '5m', '1h'")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    problem = number_error(value, what, minimum=0, exclusive=True, allow_none_marker=True)
    if problem is not None:
        raise ValueError(f"{problem} (-1 means no timeout)")
    return float(value)
