"""The job lifecycle, defined once over any :class:`~plugq.storage.Storage`.

Each transition is a compare-and-set through ``storage.put(record,
expected=…)``: whoever loses a race (two schedulers promoting one job, a
cancel racing a claim) sees ``False`` and leaves the job alone. What a
transition does to a record is in :mod:`plugq._rules`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from . import _extras, _rules
from .exceptions import InvalidJobOperation, NoSuchJobError
from .retry import retry_interval
from .storage import JobRecord, JobStatus, ResultRecord, Storage, UniqueKey

log = logging.getLogger("plugq.lifecycle")

#: How many ids one maintenance step asks a listing primitive for.
BATCH = 500


def visible(storage: Storage, rec: JobRecord | None) -> JobRecord | None:
    """``rec`` unless its TTL ran out (then it is gone for readers; maintenance deletes it)."""
    if rec is None or _rules.is_expired(rec, storage.clock.now()):
        return None
    return rec


def enqueue(
    storage: Storage, records: Sequence[JobRecord], *, unique: bool,
    unique_keys: Sequence[UniqueKey] = (),
) -> list[JobRecord]:
    """Place new jobs: queued, scheduled, or deferred behind their dependencies.

    Raises:
        DuplicateJobError: ``unique`` and an id is queued or started, or a
            stored job holds one of ``unique_keys`` (``job_id`` names it).
        NoSuchJobError: a dependency id does not exist.
    """
    now = storage.clock.now()
    batch = {rec.id: rec for rec in records}
    if unique:
        # Checked before anything is written so a refused batch leaves no trace;
        # insert() checks again inside its transaction for the race.
        for rec in storage.get_many(list(batch)):
            if rec is not None:
                _rules.check_unique(rec.id, rec.status)
    deferred: list[JobRecord] = []
    for rec in records:
        if not rec.created_at:
            rec.created_at = now
        if rec.depends_on and not _dependencies_met(storage, rec, batch, strict=True):
            rec.status = JobStatus.DEFERRED
            deferred.append(rec)
        if rec.status is JobStatus.QUEUED:
            _rules.mark_queued(rec, now)
    if unique_keys:
        storage.insert(records, unique_ids=list(batch) if unique else (), unique_keys=unique_keys)
    else:
        # Storages that predate unique keys take no such argument.
        storage.insert(records, unique_ids=list(batch) if unique else ())
    # A dependency may have ended between the check above and the insert; its
    # worker then found no dependents. Checking again here closes that gap,
    # and the compare-and-set in promote() keeps it from running twice.
    for rec in deferred:
        if _dependencies_met(storage, rec, {}):
            promote(storage, rec.id, JobStatus.DEFERRED)
    return list(records)


def _dependencies_met(
    storage: Storage, rec: JobRecord, batch: dict[str, JobRecord], *, strict: bool = False
) -> bool:
    statuses: list[JobStatus | None] = []
    for dep_id, dep in zip(rec.depends_on, storage.get_many(rec.depends_on), strict=True):
        if dep is None:
            if dep_id in batch:
                statuses.append(JobStatus.QUEUED)  # enqueued in this very batch: not ended
                continue
            if strict:
                raise NoSuchJobError(f"depends_on names job {dep_id!r}, which does not exist")
            statuses.append(None)
        else:
            statuses.append(dep.status)
    return _rules.dependencies_met(statuses, rec.allow_dependency_failure)


def promote(storage: Storage, job_id: str, from_status: JobStatus) -> bool:
    """Move a scheduled or deferred job onto its queue; False if someone else did."""
    rec = storage.get(job_id)
    if rec is None or rec.status is not from_status:
        return False
    _rules.mark_queued(rec, storage.clock.now())
    return storage.put(rec, expected={from_status})


def expire(storage: Storage) -> int:
    """Delete every record whose TTL ran out; returns how many."""
    removed = 0
    now = storage.clock.now()
    while True:
        ids = storage.expired(now, limit=BATCH)
        for job_id in ids:
            removed += storage.remove(job_id)
        if len(ids) < BATCH:
            return removed


def promote_due(storage: Storage) -> int:
    """The scheduler's pass: enqueue every scheduled job that is due."""
    moved = 0
    now = storage.clock.now()
    while True:
        ids = storage.due(now, limit=BATCH)
        for job_id in ids:
            moved += promote(storage, job_id, JobStatus.SCHEDULED)
        if len(ids) < BATCH:
            return moved


def archive(storage: Storage, rec: JobRecord, now: float) -> None:
    """Keep ``rec``'s previous outcome in its results history before a new one replaces it.

    A job that runs once writes no history: its only outcome is the record.
    """
    if rec.attempts <= 1:
        return
    kind = _rules.outcome_type(rec)
    if kind is None:
        return
    ok = kind == "successful"
    ttl = rec.result_ttl if ok else rec.failure_ttl
    at = rec.ended_at or now
    storage.add_result(
        ResultRecord(
            job_id=rec.id, type=kind, created_at=at, result=rec.result if ok else None,
            exc_info=None if ok else rec.exc_info, worker_name=rec.worker_name,
            expires_at=None if ttl < 0 else at + ttl, serializer=rec.serializer,
        ),
        keep=_rules.RESULTS_KEPT - 1,
    )


def finish(storage: Storage, rec: JobRecord, result: bytes | None) -> bool:
    """Store a successful outcome; False if the job was canceled or deleted meanwhile.

    A job with a ``Repeat`` left goes back to its queue (or is scheduled
    after the repeat's interval) with this result stored.
    """
    now = storage.clock.now()
    archive(storage, rec, now)
    _rules.mark_finished(rec, result, now)
    repeat = _extras.read(rec).get("repeat")
    if repeat and repeat.get("left", 0) > 0:
        left = int(repeat["left"])
        interval = retry_interval(repeat.get("intervals") or [0], int(repeat["times"]) - left)
        _extras.update(storage, rec, repeat={**repeat, "left": left - 1})
        _rules.mark_again(rec, interval, now)
        return storage.put(rec, expected={JobStatus.STARTED}, expected_attempts=rec.attempts)
    if not storage.put(rec, expected={JobStatus.STARTED}, expected_attempts=rec.attempts):
        return False
    enqueue_dependents(storage, rec)
    if rec.result_ttl == 0:
        storage.remove(rec.id)
    return True


def fail(storage: Storage, rec: JobRecord, exc_info: str) -> JobStatus | None:
    """Store a failed attempt: retry it (queued or scheduled) or fail it for good.

    Returns the status the job moved to, or None if the job was no longer
    started (canceled or deleted while it ran).
    """
    now = storage.clock.now()
    archive(storage, rec, now)
    _rules.mark_failed_attempt(rec, exc_info, now)
    if not storage.put(rec, expected={JobStatus.STARTED}, expected_attempts=rec.attempts):
        return None
    if rec.status is JobStatus.FAILED:
        enqueue_dependents(storage, rec)
    return rec.status


def stop(storage: Storage, rec: JobRecord, exc_info: str) -> bool:
    """Store a stopped outcome (``send_stop_job_command``); False if the job was no longer started."""
    now = storage.clock.now()
    archive(storage, rec, now)
    _rules.mark_stopped(rec, exc_info, now)
    if not storage.put(rec, expected={JobStatus.STARTED}, expected_attempts=rec.attempts):
        return False
    enqueue_dependents(storage, rec)
    return True


def retry_requested(storage: Storage, rec: JobRecord, retry: Any) -> JobStatus | None:
    """The job returned ``Retry(max, interval)``: run it again, up to ``max`` times in all.

    Returns the status the job moved to (queued, scheduled, or failed once
    ``max`` retries were used), or None if the job was no longer started.
    """
    now = storage.clock.now()
    archive(storage, rec, now)
    done = int(_extras.read(rec).get("retried", 0))
    rec.ended_at = now
    if done >= retry.max:
        rec.exc_info = f"{_rules.RETRY_REQUESTED} ({retry!r}); max retries exceeded"
        rec.status = JobStatus.FAILED
        rec.expires_at = None if rec.failure_ttl < 0 else now + rec.failure_ttl
    else:
        rec.exc_info = f"{_rules.RETRY_REQUESTED} ({retry!r})"
        _extras.update(storage, rec, retried=done + 1)
        _rules.mark_again(rec, retry_interval(retry.intervals, done), now)
    if not storage.put(rec, expected={JobStatus.STARTED}, expected_attempts=rec.attempts):
        return None
    if rec.status is JobStatus.FAILED:
        enqueue_dependents(storage, rec)
    return rec.status


def enqueue_dependents(storage: Storage, rec: JobRecord) -> int:
    """Enqueue the deferred jobs that were waiting only for ``rec``."""
    moved = 0
    for dep_id in storage.dependents(rec.id):
        dependent = storage.get(dep_id)
        if dependent is None or dependent.status is not JobStatus.DEFERRED:
            continue
        if _dependencies_met(storage, dependent, {}):
            moved += promote(storage, dep_id, JobStatus.DEFERRED)
        elif dependent.pipe is not None and rec.status is not JobStatus.FINISHED:
            # A chain step whose previous step failed can never run: cancel the rest.
            _cancel_chain(storage, dependent)
    return moved


def _cancel_chain(storage: Storage, rec: JobRecord) -> None:
    now = storage.clock.now()
    todo = [rec]
    while todo:
        step = todo.pop()
        if step.status is not JobStatus.DEFERRED or step.allow_dependency_failure:
            continue
        _rules.mark_canceled(step, now)
        step.exc_info = "plugq: canceled because an earlier step of its chain did not finish"
        if storage.put(step, expected={JobStatus.DEFERRED}):
            todo.extend(r for r in storage.get_many(storage.dependents(step.id))
                        if r is not None and r.pipe is not None)


def cancel(storage: Storage, job_id: str) -> JobRecord:
    """Cancel a job (see :meth:`plugq.backend.Backend.cancel_job`)."""
    for _ in range(5):
        rec = visible(storage, storage.get(job_id))
        if rec is None:
            raise NoSuchJobError(f"No such job: {job_id}")
        old = rec.status
        _rules.check_cancel(job_id, old)
        _rules.mark_canceled(rec, storage.clock.now())
        if storage.put(rec, expected={old}):
            return rec
    raise InvalidJobOperation(f"Cannot cancel job {job_id}: its status kept changing")


def requeue(storage: Storage, job_id: str, *, at_front: bool = False) -> JobRecord:
    """Requeue a job (see :meth:`plugq.backend.Backend.requeue_job`)."""
    rec = visible(storage, storage.get(job_id))
    if rec is None:
        raise NoSuchJobError(f"No such job: {job_id}")
    old = rec.status
    _rules.check_requeue(job_id, old)
    _rules.mark_requeued(rec, storage.clock.now(), at_front=at_front)
    if not storage.put(rec, expected={old}):
        raise InvalidJobOperation(f"Cannot requeue job {job_id}: its status changed meanwhile")
    return rec


def delete_queue(storage: Storage, queue: str, *, delete_jobs: bool) -> None:
    """Forget a queue (see :meth:`plugq.backend.Backend.delete_queue`)."""
    if delete_jobs:
        storage.remove_queued(queue)
        return
    # Without delete_jobs the jobs survive as records but leave the queue,
    # as RQ's Queue.delete(delete_jobs=False) drops only the list key.
    for job_id in storage.ids(queue, JobStatus.QUEUED):
        rec = storage.get(job_id)
        if rec is not None:
            rec.status = JobStatus.CANCELED
            storage.put(rec, expected={JobStatus.QUEUED})


def remove_from_registry(
    storage: Storage, queue: str, status: JobStatus, job_id: str, *, delete_job: bool
) -> None:
    """Take a job out of a registry (see :meth:`plugq.backend.Backend.remove_from_registry`)."""
    rec = visible(storage, storage.get(job_id))
    if rec is None or rec.origin != queue or rec.status is not status:
        raise InvalidJobOperation(f"Job {job_id} is not in the {status.value} registry of {queue!r}")
    if delete_job:
        storage.remove(job_id)
        return
    # Registries are views by status here; leaving one without being deleted
    # detaches the job from its queue (origin ''), as RQ's record outlives the
    # registry entry.
    rec.origin = ""
    storage.put(rec, expected={status})


def recover_abandoned(storage: Storage, exclude: str | None = None) -> int:
    """Retry or fail the started jobs of workers that stopped heartbeating."""
    now = storage.clock.now()
    recovered = 0
    workers = {w.name: w for w in storage.list_workers()}
    dead: set[str] = set()
    for rec in storage.started_by_dead_workers(now, exclude=exclude):
        w = workers.get(rec.worker_name or "")
        info = _rules.abandoned_exc_info(rec, w.last_heartbeat if w else None, storage.lease)
        status = fail(storage, rec, info)
        if status is not None:
            recovered += 1
            log.warning("job %s abandoned by worker %s: now %s", rec.id, rec.worker_name, status.value)
        if rec.worker_name:
            dead.add(rec.worker_name)
    for w in workers.values():
        if w.name != exclude and w.last_heartbeat + storage.lease < now:
            dead.add(w.name)
    for name in dead:
        if name in workers:
            storage.unregister_worker(name)
    return recovered


def maintenance(storage: Storage, *, scheduler: bool = True, me: str | None = None) -> None:
    """Promote due jobs (with ``scheduler``), delete expired ones, recover abandoned ones."""
    if scheduler:
        promote_due(storage)
    expire(storage)
    recover_abandoned(storage, exclude=me)
    if "values" in storage.capabilities:
        from . import _limits

        _limits.wake_all(storage)
