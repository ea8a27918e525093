"""``RateLimit``: hold jobs that share a key to N at once, or N starts per period.

::

    q.enqueue(render, doc_id, rate_limit=RateLimit("renderer", concurrency=2))
    q.enqueue(call_api, x, rate_limit=RateLimit("partner-api", limit=10, period=60))
    q.enqueue(call_api, y, rate_limit=RateLimit("partner-api", concurrency=2, limit=10, period=60))

The limit holds across every worker process and machine on the store: a
worker that claims a job asks the store for a slot (a compare-and-set on the
key's state); a job that gets none becomes ``rate_limited`` and waits in line.
Slots are granted first come, first served: a released slot (or, for the
rate form, a start leaving the period) goes to the job waiting longest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """At most ``concurrency`` jobs with ``key`` running at once, and/or ``limit`` starts per ``period``.

    Raises:
        ValueError: no limit given, a count < 1, a period <= 0, or ``limit``
            without ``period`` (or the reverse).
    """

    key: str
    concurrency: int | None = None
    limit: int | None = None
    period: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"RateLimit key must be a non-empty string, got {self.key!r}")
        for name in ("concurrency", "limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"RateLimit {name} must be a whole number >= 1, got {value!r}")
        if (self.limit is None) != (self.period is None):
            raise ValueError("RateLimit limit=N and period=SECONDS go together")
        if self.period is not None and (isinstance(self.period, bool)
                                        or not isinstance(self.period, (int, float))
                                        or not 0 < self.period < float("inf")):
            raise ValueError(f"RateLimit period must be a number of seconds > 0, got "
                             f"{self.period!r}")
        if self.concurrency is None and self.limit is None:
            raise ValueError("RateLimit needs concurrency=N, or limit=N with period=SECONDS")

    def dumps(self) -> str:
        """The form a job record keeps."""
        return json.dumps([self.key, self.concurrency, self.limit, self.period])

    @classmethod
    def loads(cls, text: str) -> RateLimit:
        key, concurrency, limit, period = json.loads(text)
        return cls(key, concurrency, limit, period)


__all__ = ["RateLimit"]
