"""Job statuses, as RQ names them."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """A job's status. A ``str`` enum so ``job.get_status() == 'queued'`` holds."""

    QUEUED = "queued"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    DEFERRED = "deferred"
    SCHEDULED = "scheduled"
    CANCELED = "canceled"
    STOPPED = "stopped"


#: Statuses that have a registry of their own (everything but ``queued``).
REGISTRY_STATUSES = (
    JobStatus.STARTED,
    JobStatus.FINISHED,
    JobStatus.FAILED,
    JobStatus.DEFERRED,
    JobStatus.SCHEDULED,
    JobStatus.CANCELED,
)
