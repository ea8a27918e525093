"""The job lifecycle, defined once for every :class:`~plugq.backend.StorageBackend`.

Each transition is a compare-and-set through ``backend.put(record,
expected=…)``: whoever loses a race (two schedulers promoting one job, a
cancel racing a claim) sees ``False`` and leaves the job alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._clock import to_datetime
from ._record import JobRecord
from ._status import JobStatus
from .exceptions import DuplicateJobError, InvalidJobOperation, NoSuchJobError
from .retry import retry_interval

if TYPE_CHECKING:
    from .backend import StorageBackend

log = logging.getLogger("plugq.lifecycle")

ENDED_OK = frozenset({JobStatus.FINISHED})
ENDED_ANY = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED})


def enqueue(backend: StorageBackend, records: Sequence[JobRecord], *, unique: bool) -> list[JobRecord]:
    """Place new jobs: queued, scheduled, or deferred behind their dependencies."""
    now = backend.clock.now()
    batch = {rec.id: rec for rec in records}
    if unique:
        # Checked before anything is written so a refused batch leaves no trace;
        # insert() checks again inside its transaction for the race.
        for rec in backend.get_many(list(batch)):
            if rec is not None and rec.status in (JobStatus.QUEUED, JobStatus.STARTED):
                raise DuplicateJobError(f"Job {rec.id} is already {rec.status.value}; unique=True")
    deferred: list[JobRecord] = []
    for rec in records:
        if not rec.created_at:
            rec.created_at = now
        if rec.depends_on and not _dependencies_met(backend, rec, batch, strict=True):
            rec.status = JobStatus.DEFERRED
            deferred.append(rec)
        if rec.status is JobStatus.QUEUED:
            _mark_queued(rec, now)
    backend.insert(records, unique_ids=list(batch) if unique else ())
    # A dependency may have ended between the check above and the insert; its
    # worker then found no dependents. Checking again here closes that gap,
    # and the compare-and-set in promote() keeps it from running twice.
    for rec in deferred:
        if _dependencies_met(backend, rec, {}):
            promote(backend, rec.id, JobStatus.DEFERRED)
    return list(records)


def _mark_queued(rec: JobRecord, now: float) -> None:
    rec.status = JobStatus.QUEUED
    rec.enqueued_at = now
    rec.scheduled_for = None
    rec.expires_at = now + rec.ttl if rec.ttl is not None and rec.ttl > 0 else None


def _dependencies_met(
    backend: StorageBackend, rec: JobRecord, batch: dict[str, JobRecord], *, strict: bool = False
) -> bool:
    wanted = ENDED_ANY if rec.allow_dependency_failure else ENDED_OK
    met = True
    for dep_id, dep in zip(rec.depends_on, backend.get_many(rec.depends_on), strict=True):
        if dep is None:
            if dep_id in batch:
                met = False
                continue
            if strict:
                raise NoSuchJobError(f"depends_on names job {dep_id!r}, which does not exist")
            # Stored before and gone now: it finished and its result expired.
            continue
        if dep.status not in wanted:
            met = False
    return met


def promote(backend: StorageBackend, job_id: str, from_status: JobStatus) -> bool:
    """Move a scheduled or deferred job onto its queue; False if someone else did."""
    rec = backend.get(job_id)
    if rec is None or rec.status is not from_status:
        return False
    _mark_queued(rec, backend.clock.now())
    return backend.put(rec, expected={from_status})


def live(backend: StorageBackend, rec: JobRecord | None) -> JobRecord | None:
    """``rec`` unless its TTL ran out (then it is deleted, as Redis would)."""
    if rec is None:
        return None
    if rec.expires_at is not None and rec.expires_at <= backend.clock.now():
        backend.remove(rec.id)
        return None
    return rec


def expire(backend: StorageBackend) -> int:
    """Delete every record whose TTL ran out; returns how many."""
    removed = 0
    now = backend.clock.now()
    while True:
        ids = backend.expired(now, limit=500)
        if not ids:
            return removed
        for job_id in ids:
            removed += backend.remove(job_id)
        if len(ids) < 500:
            return removed


def promote_due(backend: StorageBackend) -> int:
    """The scheduler's pass: enqueue every scheduled job that is due."""
    moved = 0
    now = backend.clock.now()
    while True:
        ids = backend.due(now, limit=500)
        for job_id in ids:
            moved += promote(backend, job_id, JobStatus.SCHEDULED)
        if len(ids) < 500:
            return moved


def finish(backend: StorageBackend, rec: JobRecord, result: bytes | None) -> bool:
    """Store a successful outcome; False if the job was canceled or deleted meanwhile."""
    now = backend.clock.now()
    rec.status = JobStatus.FINISHED
    rec.ended_at = now
    rec.result = result
    rec.exc_info = None
    rec.expires_at = None if rec.result_ttl < 0 else now + rec.result_ttl
    if not backend.put(rec, expected={JobStatus.STARTED}, expected_attempts=rec.attempts):
        return False
    enqueue_dependents(backend, rec)
    if rec.result_ttl == 0:
        backend.remove(rec.id)
    return True


def fail(backend: StorageBackend, rec: JobRecord, exc_info: str) -> JobStatus | None:
    """Store a failed attempt: retry it (queued or scheduled) or fail it for good.

    Returns the status the job moved to, or None if the job was no longer
    started (canceled or deleted while it ran).
    """
    now = backend.clock.now()
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
            _mark_queued(rec, now)
    else:
        rec.status = JobStatus.FAILED
        rec.expires_at = None if rec.failure_ttl < 0 else now + rec.failure_ttl
    if not backend.put(rec, expected={JobStatus.STARTED}, expected_attempts=rec.attempts):
        return None
    if rec.status is JobStatus.FAILED:
        enqueue_dependents(backend, rec)
    return rec.status


def enqueue_dependents(backend: StorageBackend, rec: JobRecord) -> int:
    """Enqueue the deferred jobs that were waiting only for ``rec``."""
    moved = 0
    for dep_id in backend.dependents(rec.id):
        dependent = backend.get(dep_id)
        if dependent is None or dependent.status is not JobStatus.DEFERRED:
            continue
        if _dependencies_met(backend, dependent, {}):
            moved += promote(backend, dep_id, JobStatus.DEFERRED)
    return moved


def cancel(backend: StorageBackend, job_id: str) -> JobRecord:
    for _ in range(5):
        rec = live(backend, backend.get(job_id))
        if rec is None:
            raise NoSuchJobError(f"No such job: {job_id}")
        old = rec.status
        if old in (JobStatus.CANCELED, JobStatus.FINISHED):
            raise InvalidJobOperation(f"Cannot cancel job {job_id}: it is already {old.value}")
        rec.status = JobStatus.CANCELED
        rec.ended_at = backend.clock.now()
        rec.expires_at = None
        if backend.put(rec, expected={old}):
            return rec
    raise InvalidJobOperation(f"Cannot cancel job {job_id}: its status kept changing")


def requeue(backend: StorageBackend, job_id: str, *, at_front: bool = False) -> JobRecord:
    rec = live(backend, backend.get(job_id))
    if rec is None:
        raise NoSuchJobError(f"No such job: {job_id}")
    old = rec.status
    if old not in (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED):
        raise InvalidJobOperation(
            f"Cannot requeue job {job_id}: it is {old.value}; only failed, canceled or "
            "stopped jobs can be requeued"
        )
    rec.at_front = at_front
    rec.ended_at = None
    rec.started_at = None
    rec.worker_name = None
    # The old error belongs to the run that ended; shown on the rerun it
    # reads as the rerun's failure.
    rec.exc_info = None
    _mark_queued(rec, backend.clock.now())
    if not backend.put(rec, expected={old}):
        raise InvalidJobOperation(f"Cannot requeue job {job_id}: its status changed meanwhile")
    return rec


def remove_from_registry(
    backend: StorageBackend, queue: str, status: JobStatus, job_id: str, *, delete_job: bool
) -> None:
    rec = backend.get(job_id)
    if rec is None or rec.origin != queue or rec.status is not status:
        raise InvalidJobOperation(f"Job {job_id} is not in the {status.value} registry of {queue!r}")
    if delete_job:
        backend.remove(job_id)
        return
    # Registries are views by status here; leaving one without being deleted
    # detaches the job from its queue (origin ''), as RQ's record outlives the
    # registry entry.
    rec.origin = ""
    backend.put(rec, expected={status})


def abandoned_exc_info(rec: JobRecord, last_seen: float | None, lease: float) -> str:
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


def recover_abandoned(backend: StorageBackend, exclude: str | None = None) -> int:
    """Retry or fail the started jobs of workers that stopped heartbeating."""
    now = backend.clock.now()
    recovered = 0
    workers = {w.name: w for w in backend.list_workers()}
    dead: set[str] = set()
    for rec in backend.started_by_dead_workers(now, exclude=exclude):
        w = workers.get(rec.worker_name or "")
        info = abandoned_exc_info(rec, w.last_heartbeat if w else None, backend.lease)
        status = fail(backend, rec, info)
        if status is not None:
            recovered += 1
            log.warning("job %s abandoned by worker %s: now %s", rec.id, rec.worker_name, status.value)
        if rec.worker_name:
            dead.add(rec.worker_name)
    for w in workers.values():
        if w.name != exclude and w.last_heartbeat + backend.lease < now:
            dead.add(w.name)
    for name in dead:
        if name in workers:
            backend.unregister_worker(name)
    return recovered


def maintenance(backend: StorageBackend, *, scheduler: bool = True, me: str | None = None) -> None:
    if scheduler:
        promote_due(backend)
    expire(backend)
    recover_abandoned(backend, exclude=me)
