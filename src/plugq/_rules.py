"""plugq's transition rules and defaults, as pure functions over records.

Nothing here reads or writes a store: the engine (:mod:`plugq._lifecycle`)
and the RQ backend both decide with these, so a rule is stated once.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._clock import to_datetime
from .exceptions import DuplicateJobError, InvalidJobOperation
from .retry import retry_interval
from .storage import JobRecord, JobStatus

#: The statuses that satisfy a dependency, without and with ``allow_failure``.
ENDED_OK = frozenset({JobStatus.FINISHED})
ENDED_ANY = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED})
#: A ``unique=True`` enqueue is refused while its id is in one of these.
UNIQUE_BLOCKING = frozenset({JobStatus.QUEUED, JobStatus.STARTED})
#: The statuses a job can be requeued from.
REQUEUABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED})
#: The statuses a job can no longer be canceled from.
NOT_CANCELABLE = frozenset({JobStatus.CANCELED, JobStatus.FINISHED})


def check_unique(job_id: str, status: JobStatus | None) -> None:
    """Raise DuplicateJobError when a ``unique=True`` enqueue of ``job_id`` must be refused."""
    if status in UNIQUE_BLOCKING:
        assert status is not None
        raise DuplicateJobError(f"Job {job_id} is already {status.value}; unique=True")


def check_cancel(job_id: str, status: JobStatus) -> None:
    """Raise InvalidJobOperation unless a job in ``status`` may be canceled."""
    if status in NOT_CANCELABLE:
        raise InvalidJobOperation(f"Cannot cancel job {job_id}: it is already {status.value}")


def check_requeue(job_id: str, status: JobStatus) -> None:
    """Raise InvalidJobOperation unless a job in ``status`` may be requeued."""
    if status not in REQUEUABLE:
        raise InvalidJobOperation(
            f"Cannot requeue job {job_id}: it is {status.value}; only failed, canceled or "
            "stopped jobs can be requeued"
        )


def dependencies_met(statuses: Iterable[JobStatus | None], allow_failure: bool) -> bool:
    """Whether dependencies that are in ``statuses`` let their dependent run.

    None stands for a dependency that no longer exists: it ended and its
    record expired, so it counts as met.
    """
    wanted = ENDED_ANY if allow_failure else ENDED_OK
    return all(s is None or s in wanted for s in statuses)


def is_expired(rec: JobRecord, now: float) -> bool:
    """Whether ``rec``'s TTL ran out at ``now`` (it is then gone for every reader)."""
    return rec.expires_at is not None and rec.expires_at <= now


def mark_queued(rec: JobRecord, now: float) -> None:
    """Make ``rec`` a queued job entering its queue at ``now`` (its ``ttl`` starts)."""
    rec.status = JobStatus.QUEUED
    rec.enqueued_at = now
    rec.scheduled_for = None
    rec.expires_at = now + rec.ttl if rec.ttl is not None and rec.ttl > 0 else None


def mark_started(rec: JobRecord, worker_name: str, now: float) -> None:
    """What :meth:`~plugq.storage.Storage.claim` stores for a claimed job."""
    rec.status = JobStatus.STARTED
    rec.started_at = now
    rec.worker_name = worker_name
    rec.expires_at = None
    rec.attempts += 1


def mark_finished(rec: JobRecord, result: bytes | None, now: float) -> None:
    """Make ``rec`` a finished job that returned ``result``; ``result_ttl`` starts."""
    rec.status = JobStatus.FINISHED
    rec.ended_at = now
    rec.result = result
    rec.exc_info = None
    rec.expires_at = None if rec.result_ttl < 0 else now + rec.result_ttl


def mark_failed_attempt(rec: JobRecord, exc_info: str, now: float) -> None:
    """Record a failed attempt: retried (queued or scheduled) while retries are left, else failed."""
    rec.exc_info = exc_info
    rec.ended_at = now
    if rec.retries_left:
        interval = retry_interval(rec.retry_intervals, max(rec.attempts - 1, 0))
        rec.retries_left -= 1
        if interval > 0:
            rec.status = JobStatus.SCHEDULED
            rec.scheduled_for = now + interval
            rec.expires_at = None
        else:
            mark_queued(rec, now)
    else:
        rec.status = JobStatus.FAILED
        rec.expires_at = None if rec.failure_ttl < 0 else now + rec.failure_ttl


def mark_canceled(rec: JobRecord, now: float) -> None:
    """Make ``rec`` canceled (kept until deleted)."""
    rec.status = JobStatus.CANCELED
    rec.ended_at = now
    rec.expires_at = None


def mark_requeued(rec: JobRecord, now: float, *, at_front: bool) -> None:
    """Make a failed, canceled or stopped ``rec`` queued again, as if new to its queue."""
    rec.at_front = at_front
    rec.ended_at = None
    rec.started_at = None
    rec.worker_name = None
    # The old error belongs to the run that ended; shown on the rerun it
    # reads as the rerun's failure.
    rec.exc_info = None
    mark_queued(rec, now)


def abandoned_exc_info(rec: JobRecord, last_seen: float | None, lease: float) -> str:
    """The traceback text stored on a job whose worker stopped heartbeating."""
    when = to_datetime(last_seen)
    started = to_datetime(rec.started_at)
    since = f"started at {started.isoformat()}" if started is not None else "started"
    if when is not None:
        what = f"stopped heartbeating (last seen {when.isoformat()}, lease {lease:g} s)"
    else:
        # Its registration is gone (the worker unregistered on its way out, or
        # the record expired): there is no "last seen" to report, only the start.
        what = f"is no longer registered (the job {since}; lease {lease:g} s)"
    return (
        "Traceback (most recent call last):\n"
        f"plugq.exceptions.AbandonedJobError: job abandoned: worker {rec.worker_name!r} {what} "
        "while running it; the worker probably died or was stopped at once (killed, out of "
        "memory, machine restart, a second Ctrl-C)\n"
    )
