"""Where backends take the time from.

Every time-dependent decision (schedules, retry intervals, TTLs, leases) reads
``backend.clock.now()``, so a test can swap in a :class:`ManualClock` and move
time forward instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class Clock:
    """The wall clock: seconds since the epoch, as ``time.time()``."""

    def now(self) -> float:
        """Return the current time as epoch seconds."""
        return time.time()

    def now_datetime(self) -> datetime:
        """Return the current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now(), tz=UTC)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        if seconds > 0:
            time.sleep(seconds)


class ManualClock(Clock):
    """A clock that only moves when told to; starts at the real time.

    ``sleep`` advances the clock instead of blocking, so code that waits on
    this clock (a retry interval, a scheduler tick) completes at once.
    """

    def __init__(self, start: float | None = None) -> None:
        # Whole microseconds, as datetime holds them: a job scheduled with
        # enqueue_in(delta) is then due after exactly advance(delta), with no
        # float rounding between the datetime and the epoch-seconds paths.
        self._us = round((time.time() if start is None else start) * 1_000_000)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._us / 1_000_000

    def advance(self, seconds: float | timedelta) -> float:
        """Move the clock forward; returns the new time. Negative moves are refused."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; got advance({seconds!r})")
        with self._lock:
            self._us += round(seconds * 1_000_000)
            return self._us / 1_000_000

    def set(self, when: float | datetime) -> None:
        """Jump to ``when`` (epoch seconds or an aware datetime), not backwards."""
        target = round((when.timestamp() if isinstance(when, datetime) else float(when)) * 1_000_000)
        with self._lock:
            if target < self._us:
                raise ValueError("a clock only moves forward")
            self._us = target

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)


def to_datetime(ts: float | None) -> datetime | None:
    """Epoch seconds to an aware UTC datetime (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def to_timestamp(value: datetime) -> float:
    """An aware or naive-UTC datetime to epoch seconds (naive is read as UTC, like RQ)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
