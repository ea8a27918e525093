"""The ``memory://`` storage: :class:`MemoryStorage` (see the package docstring)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

from plugq._quarantine import job_problem, quarantined
from plugq._validate import number_error
from plugq.config import mask_url
from plugq.exceptions import ConfigurationError, DuplicateJobError
from plugq.storage import (
    Clock,
    JobRecord,
    JobStatus,
    ManualClock,
    Storage,
    UniqueKey,
    WorkerRecord,
)

#: The query parameters a ``memory://`` URL takes, and what each means.
_PARAMS = {
    "clock": "manual: a ManualClock that tests move forward",
    "lease": "seconds a worker's registration lives without a heartbeat, e.g. ?lease=30",
}


class MemoryStorage(Storage):
    """All state in dicts under one lock; see :class:`plugq.storage.Storage`."""

    scheme = "memory"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"manual_clock", "process_local", "priority", "unique_keys", "progress", "values",
         "pipes"}
    )

    def __init__(self, url: str = "memory://", clock: Clock | None = None) -> None:
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
        for key in query:
            if key not in _PARAMS:
                raise ConfigurationError(
                    f"{url}: unknown parameter {key!r}; the memory backend accepts "
                    + "; ".join(f"{k} ({v})" for k, v in _PARAMS.items())
                )
        if clock is None and query.get("clock", [""])[0] == "manual":
            clock = ManualClock()
        super().__init__(url, clock)
        if "lease" in query:
            try:
                lease = float(query["lease"][0])
            except ValueError:
                lease = float("nan")
            problem = number_error(lease, "lease", minimum=0, exclusive=True)
            if problem is not None:
                raise ConfigurationError(
                    f"{mask_url(url)}: lease={query['lease'][0]!r} must be a number of seconds "
                    f"({problem})"
                )
            self.lease = lease
        self.name = parts.netloc or "default"
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._jobs: dict[str, JobRecord] = {}
        # queue name -> ordered ids of its priority-0 queued jobs (front first)
        self._queued: dict[str, OrderedDict[str, None]] = {}
        # queue name -> priority -> ordered ids, for the other priorities only:
        # a store that never sees a priority pays nothing for them.
        self._levels: dict[str, dict[int, OrderedDict[str, None]]] = {}
        self._progress: dict[str, str] = {}
        self._values: dict[str, str] = {}
        # (queue, status) -> ids in the order they entered that status
        self._by_status: dict[tuple[str, JobStatus], dict[str, None]] = {}
        self._dependents: dict[str, set[str]] = {}
        self._workers: dict[str, WorkerRecord] = {}

    # -- index upkeep (lock held) ------------------------------------------

    def _level(self, origin: str, priority: int) -> OrderedDict[str, None]:
        if not priority:
            return self._queued.setdefault(origin, OrderedDict())
        return self._levels.setdefault(origin, {}).setdefault(priority, OrderedDict())

    def _in_order(self, origin: str) -> list[OrderedDict[str, None]]:
        """A queue's priority levels, highest first."""
        zero = self._queued.get(origin)
        levels = self._levels.get(origin)
        if not levels:
            return [zero] if zero else []
        found = dict(levels)
        if zero:
            found[0] = zero
        return [found[p] for p in sorted(found, reverse=True) if found[p]]

    def _unindex(self, rec: JobRecord) -> None:
        self._by_status.get((rec.origin, rec.status), {}).pop(rec.id, None)
        if rec.status is JobStatus.QUEUED:
            if rec.priority:
                self._levels.get(rec.origin, {}).get(rec.priority, OrderedDict()).pop(rec.id, None)
            else:
                self._queued.get(rec.origin, OrderedDict()).pop(rec.id, None)
        for dep in rec.depends_on:
            self._dependents.get(dep, set()).discard(rec.id)

    def _index(self, rec: JobRecord) -> None:
        self._by_status.setdefault((rec.origin, rec.status), {})[rec.id] = None
        if rec.status is JobStatus.QUEUED:
            q = self._level(rec.origin, rec.priority)
            q[rec.id] = None
            if rec.at_front:
                q.move_to_end(rec.id, last=False)
            self._cond.notify_all()
        for dep in rec.depends_on:
            self._dependents.setdefault(dep, set()).add(rec.id)

    # -- primitives ---------------------------------------------------------

    def insert(
        self, records: Sequence[JobRecord], *, unique_ids: Collection[str] = (),
        unique_keys: Sequence[UniqueKey] = (),
    ) -> None:
        with self._lock:
            for job_id in unique_ids:
                old = self._jobs.get(job_id)
                if old is not None and old.status in (JobStatus.QUEUED, JobStatus.STARTED):
                    raise DuplicateJobError(
                        f"Job {job_id} is already {old.status.value}", job_id=job_id
                    )
            for cond in unique_keys:
                # A scan: the memory store is for tests and notebooks.
                for old in self._jobs.values():
                    if cond.holds(old):
                        raise DuplicateJobError(
                            f"Job {old.id} holds unique key {cond.key!r} ({old.status.value})",
                            job_id=old.id,
                        )
            for rec in records:
                old = self._jobs.pop(rec.id, None)
                if old is not None:
                    self._unindex(old)
                stored = rec.copy()
                self._jobs[rec.id] = stored
                self._index(stored)

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            rec = self._jobs.get(job_id)
            return None if rec is None else rec.copy()

    def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        with self._lock:
            return [None if (r := self._jobs.get(i)) is None else r.copy() for i in job_ids]

    def put(
        self, record: JobRecord, *, expected: Collection[JobStatus] | None = None,
        expected_attempts: int | None = None,
    ) -> bool:
        with self._lock:
            old = self._jobs.get(record.id)
            if old is None or (expected is not None and old.status not in expected):
                return False
            if expected_attempts is not None and old.attempts != expected_attempts:
                return False
            new = record.copy()
            new.meta = old.meta
            if ((old.status, old.origin, old.depends_on, old.priority)
                    == (new.status, new.origin, new.depends_on, new.priority)):
                # Staying in the same queue or registry keeps the job's place.
                self._jobs[record.id] = new
                return True
            self._unindex(old)
            self._jobs[record.id] = new
            self._index(new)
            return True

    def remove(self, job_id: str) -> bool:
        with self._lock:
            old = self._jobs.pop(job_id, None)
            if old is None:
                return False
            self._unindex(old)
            if self._progress:
                self._progress.pop(job_id, None)
            return True

    def set_meta(self, job_id: str, meta: bytes) -> bool:
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None:
                return False
            rec.meta = meta
            return True

    def claim(self, queues: Sequence[str], worker_name: str, now: float) -> JobRecord | None:
        with self._lock:
            for name in queues:
                levels = [self._queued.get(name)] if name not in self._levels else (
                    self._in_order(name)
                )
                for q in levels:
                    while q:
                        job_id, _ = q.popitem(last=False)
                        rec = self._jobs[job_id]
                        if rec.expires_at is not None and rec.expires_at <= now:
                            # Its ttl ran out while queued: discard, as Redis would.
                            self._unindex(rec)
                            del self._jobs[job_id]
                            continue
                        self._by_status[(rec.origin, JobStatus.QUEUED)].pop(job_id, None)
                        problem = job_problem(rec)
                        if problem is not None:
                            # A poison record never reaches the engine: failed here, next job.
                            poison = quarantined(rec, problem, now)
                            self._index(poison)
                            self.report_quarantined(poison.copy())
                            continue
                        rec.status = JobStatus.STARTED
                        rec.started_at = now
                        rec.worker_name = worker_name
                        rec.expires_at = None
                        rec.attempts += 1
                        self._by_status.setdefault(
                            (rec.origin, JobStatus.STARTED), {}
                        )[job_id] = None
                        return rec.copy()
            return None

    def _listed(self, queue: str, status: JobStatus) -> list[str] | dict[str, None]:
        if status is JobStatus.QUEUED:
            if queue in self._levels:
                return [i for q in self._in_order(queue) for i in q]
            return list(self._queued.get(queue, ()))
        return self._by_status.get((queue, status), {})

    def ids(
        self, queue: str, status: JobStatus, offset: int = 0, length: int = -1, *,
        now: float | None = None,
    ) -> list[str]:
        with self._lock:
            found = list(self._listed(queue, status))
            if now is not None:
                jobs = self._jobs
                found = [i for i in found if not _expired(jobs[i], now)]
        end = None if length < 0 else offset + length
        return found[offset:end]

    def count_status(self, queue: str, status: JobStatus, *, now: float | None = None) -> int:
        with self._lock:
            listed = self._listed(queue, status)
            if now is None:
                return len(listed)
            jobs = self._jobs
            return sum(1 for i in listed if not _expired(jobs[i], now))

    def queues(self) -> list[str]:
        with self._lock:
            names = {q for (q, _), ids in self._by_status.items() if ids and q}
            names.update(q for q, ids in self._queued.items() if ids)
            return sorted(names)

    def remove_queued(self, queue: str) -> int:
        with self._lock:
            ids = list(self._listed(queue, JobStatus.QUEUED))
            for job_id in ids:
                self.remove(job_id)
            return len(ids)

    def due(self, now: float, limit: int = 100) -> list[str]:
        with self._lock:
            found = [
                (rec.scheduled_for or 0.0, job_id)
                for (_, status), ids in self._by_status.items() if status is JobStatus.SCHEDULED
                for job_id in ids
                if (rec := self._jobs[job_id]).scheduled_for is not None
                and rec.scheduled_for <= now
            ]
        return [job_id for _, job_id in sorted(found)[:limit]]

    def expired(self, now: float, limit: int = 100) -> list[str]:
        with self._lock:
            found = [
                job_id for job_id, rec in self._jobs.items()
                if rec.expires_at is not None and rec.expires_at <= now
            ]
        return found[:limit]

    def dependents(self, job_id: str) -> list[str]:
        with self._lock:
            return [
                i for i in self._dependents.get(job_id, ())
                if (r := self._jobs.get(i)) is not None and r.status is JobStatus.DEFERRED
            ]

    def started_by_dead_workers(self, now: float, exclude: str | None = None) -> list[JobRecord]:
        with self._lock:
            alive = {
                name for name, w in self._workers.items() if w.last_heartbeat + self.lease > now
            }
            return [
                self._jobs[job_id].copy()
                for (_, status), ids in self._by_status.items() if status is JobStatus.STARTED
                for job_id in ids
                if (w := self._jobs[job_id].worker_name) != exclude and w not in alive
            ]

    def register_worker(self, worker: WorkerRecord) -> None:
        with self._lock:
            self._workers[worker.name] = worker

    def heartbeat(
        self, name: str, now: float, *, state: str, current_job_id: str | None,
        successful: int = 0, failed: int = 0,
    ) -> None:
        with self._lock:
            w = self._workers.get(name)
            if w is None:
                return
            w.last_heartbeat, w.state, w.current_job_id = now, state, current_job_id
            w.successful_jobs, w.failed_jobs = successful, failed

    def unregister_worker(self, name: str) -> None:
        with self._lock:
            self._workers.pop(name, None)

    def list_workers(self) -> list[WorkerRecord]:
        with self._lock:
            return [WorkerRecord(**vars(w)) for w in self._workers.values()]

    def set_progress(self, job_id: str, progress: str) -> bool:
        with self._lock:
            if job_id not in self._jobs:
                return False
            self._progress[job_id] = progress
            return True

    def get_progress(self, job_ids: Sequence[str]) -> list[str | None]:
        with self._lock:
            return [self._progress.get(i) for i in job_ids]

    def get_value(self, key: str) -> str | None:
        with self._lock:
            return self._values.get(key)

    def swap_value(self, key: str, expected: str | None, new: str | None) -> bool:
        with self._lock:
            if self._values.get(key) != expected:
                return False
            if new is None:
                self._values.pop(key, None)
            else:
                self._values[key] = new
            return True

    def values(self, prefix: str) -> dict[str, str]:
        with self._lock:
            return {k: v for k, v in self._values.items() if k.startswith(prefix)}

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        with self._cond:
            if any(self._queued.get(q) or (self._levels.get(q) and self._in_order(q))
                   for q in queues):
                return
            self._cond.wait(timeout)

    # -- test helpers -------------------------------------------------------

    def flush(self) -> None:
        """Forget every job and worker (a fresh store, same object)."""
        with self._lock:
            self._jobs.clear()
            self._queued.clear()
            self._levels.clear()
            self._progress.clear()
            self._values.clear()
            self._by_status.clear()
            self._dependents.clear()
            self._workers.clear()


def _expired(rec: JobRecord, now: float) -> bool:
    return rec.expires_at is not None and rec.expires_at <= now


#: The name this storage had before plugq.storage existed.
MemoryBackend = MemoryStorage


__all__ = ["MemoryBackend", "MemoryStorage"]
