"""The stored form of a job: plain data every backend can keep.

A :class:`JobRecord` holds only strings, bytes, numbers and lists of
strings, so a backend can store it in a dict, a SQLite row or a Redis hash
without knowing anything about Python objects. Times are epoch seconds
(``float``); the :class:`~plugq.Job` facade turns them into datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._status import JobStatus


@dataclass
class JobRecord:
    """One job as a backend stores it.

    Attributes mirror RQ's job hash. ``payload`` is ``serializer.dumps((args,
    kwargs))``; ``result`` and ``meta`` are serialized with the same
    serializer. ``expires_at`` is when the backend may forget the job (TTL of
    a queued job, ``result_ttl`` of a finished one, ``failure_ttl`` of a failed
    one); None means never.
    """

    id: str
    func_name: str
    origin: str
    payload: bytes
    serializer: str = "pickle"
    status: JobStatus = JobStatus.QUEUED
    description: str = ""
    created_at: float = 0.0
    enqueued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    #: seconds; None means no timeout (RQ's -1).
    timeout: float | None = 180.0
    #: seconds; -1 keeps the result forever, 0 deletes the job on success.
    result_ttl: int = 500
    failure_ttl: int = 365 * 24 * 3600
    ttl: int | None = None
    meta: bytes = b""
    result: bytes | None = None
    exc_info: str | None = None
    worker_name: str | None = None
    retries_left: int | None = None
    retry_intervals: list[float] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    allow_dependency_failure: bool = False
    on_success: str | None = None
    on_failure: str | None = None
    scheduled_for: float | None = None
    expires_at: float | None = None
    #: where the job goes when it (re)enters its queue: the front or the back.
    at_front: bool = False
    #: how many times the job was started (retries and abandonment count).
    attempts: int = 0

    def copy(self) -> JobRecord:
        """A copy whose lists are not shared with this one."""
        # Every enqueue, claim and completion copies a record; going through
        # dataclasses.replace (a getattr and an __init__ argument per field)
        # cost 5.6 us a copy against 1.1 us for a __dict__ copy.
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.retry_intervals = list(self.retry_intervals)
        new.depends_on = list(self.depends_on)
        return new


@dataclass
class WorkerRecord:
    """A worker as a backend tracks it; ``last_heartbeat`` is epoch seconds."""

    name: str
    queues: list[str]
    pid: int
    hostname: str
    birth: float
    last_heartbeat: float
    state: str = "idle"
    current_job_id: str | None = None
    successful_jobs: int = 0
    failed_jobs: int = 0


#: The record fields that hold times, for backends that convert them.
TIME_FIELDS = ("created_at", "enqueued_at", "started_at", "ended_at", "scheduled_for", "expires_at")
