"""``Unique``: deduplicate jobs by a key you give, for a period and statuses you give.

RQ deduplicates only by an explicit job id (``unique=True``); a key of your
own (``"report:42"``) says "this work" without fixing the id::

    q.enqueue(build_report, 42, unique=Unique("report:42"))           # not while one is pending
    q.enqueue(send_digest, unique=Unique("digest", period=3600))      # at most once an hour

An enqueue that meets a job holding the key returns that job instead of
storing a new one. The check and the write are one atomic step in the store,
so producers racing on a key (threads, processes, machines) get one job.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from .storage import JobStatus, UniqueKey

#: Statuses of a job that has not ended: the default of ``Unique(key)``.
PENDING = frozenset({JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED,
                     JobStatus.RATE_LIMITED})
#: Every status: the default of ``Unique(key, period=…)`` ("once per period").
ANY = frozenset(JobStatus)


@dataclass(frozen=True, init=False)
class Unique:
    """A key, a period and the statuses in which a stored job blocks another with the key.

    Parameters:
        key: any string naming the work.
        period: seconds (or a timedelta); only a job *created* less than
            ``period`` seconds ago blocks. None: any age.
        statuses: the statuses in which a job blocks. Default: queued,
            started, scheduled and deferred without a period ("not while one
            is pending"); every status with a period ("once per period").
    """

    key: str
    period: float | None
    statuses: frozenset[JobStatus]

    def __init__(
        self, key: str, period: float | timedelta | None = None,
        statuses: Collection[JobStatus | str] | None = None,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"Unique key must be a non-empty string, got {key!r}")
        if isinstance(period, timedelta):
            period = period.total_seconds()
        if period is not None and (isinstance(period, bool) or not period > 0):
            raise ValueError(f"Unique period must be > 0 seconds or None, got {period!r}")
        if statuses is None:
            chosen = PENDING if period is None else ANY
        else:
            chosen = frozenset(JobStatus(s) for s in statuses)
            if not chosen:
                raise ValueError("Unique statuses must name at least one status")
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "period", None if period is None else float(period))
        object.__setattr__(self, "statuses", chosen)

    def condition(self, now: float) -> UniqueKey:
        """The storage's condition at ``now``."""
        since = None if self.period is None else now - self.period
        return UniqueKey(self.key, self.statuses, since)


__all__ = ["ANY", "PENDING", "Unique"]
