"""``RQBackend``: plugq's operations, each done by rq on Redis.

Jobs are rq jobs in rq's keys (``rq:job:<id>``, ``rq:queue:<name>``, rq's
registries, rq's results stream); this class translates between those and
plugq's :class:`~plugq.storage.JobRecord`, and adds the checks where plugq's
contract is stricter than rq (dependencies that do not exist, unique ids,
invalid cancel/requeue transitions).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from redis import WatchError
from redis.exceptions import ResponseError
from rq.exceptions import InvalidJobOperation as RQInvalidJobOperation
from rq.job import JobStatus as RQStatus
from rq.queue import Queue as RQQueue
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.utils import now as rq_now
from rq.utils import utcformat
from rq.worker import Worker as RQWorker

from plugq._quarantine import quarantined_worker
from plugq._rules import check_cancel, check_requeue, check_unique, dependencies_met
from plugq._worker_loop import drive_sync
from plugq.backend import Backend, WorkerSpec
from plugq.config import mask_url
from plugq.exceptions import (
    ConfigurationError,
    InvalidJobOperation,
    NoSuchJobError,
    NotSupportedError,
)
from plugq.security import UntrustedJobError, secret_key, strip_blob
from plugq.serializers import get_serializer
from plugq.storage import Clock, JobRecord, JobStatus, ManualClock, WorkerRecord

from ._connection import check_url, make_client, split_options, translate_errors, translated
from .convert import attempts_of, status_of, stored_record, to_record, to_rq_job
from .jobs import PlugqJob, death_penalty_class, rq_serializer, schedule
from .poison import WORKER_FIELDS, describe, field_problems
from .registries import clean_registries
from .signing import sniff

#: ``Worker(..., **options)`` passed through to rq's worker constructor.
RQ_WORKER_OPTIONS = ("worker_ttl", "job_monitoring_interval", "maintenance_interval", "default_result_ttl")

_REGISTRIES: dict[JobStatus, type[BaseRegistry]] = {
    JobStatus.STARTED: StartedJobRegistry,
    JobStatus.FINISHED: FinishedJobRegistry,
    JobStatus.FAILED: FailedJobRegistry,
    JobStatus.STOPPED: FailedJobRegistry,  # rq keeps stopped jobs in the failed registry
    JobStatus.DEFERRED: DeferredJobRegistry,
    JobStatus.SCHEDULED: ScheduledJobRegistry,
    JobStatus.CANCELED: CanceledJobRegistry,
}

#: Runs the commands packed in ARGV (each as its argument count, then the
#: arguments) only if none of KEYS exists; returns 1 if it ran them, else 0.
#: Atomic as MULTI/EXEC is, and saves the separate round trip that checking
#: for a job id in use would cost (a re-enqueued id replaces its old job).
GUARDED_WRITE = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
local i, n = 1, #ARGV
while i <= n do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
return 1
"""


#: Batches up to this size go through ``GUARDED_WRITE``; larger ones are
#: cheaper as one EXISTS then MULTI/EXEC (Redis runs a command called from Lua
#: more slowly than a pipelined one, which outweighs one round trip per batch).
GUARDED_MAX_JOBS = 16


def _status(raw: bytes | None) -> JobStatus | None:
    """plugq's status for a raw rq status field (None: no such job; rq's 'created' is queued)."""
    if raw is None:
        return None
    return JobStatus.QUEUED if raw == b"created" else JobStatus(raw.decode())


def _scripts_refused(exc: ResponseError) -> bool:
    """The server (or the user's ACL) does not allow EVALSHA/SCRIPT LOAD at all."""
    text = str(exc).lower()
    return "unknown command" in text or "noperm" in text or "no permissions" in text


class RQBackend(Backend):
    """Real rq on Redis (or fakeredis). See ``docs/redis.md``."""

    scheme: ClassVar[str] = "redis"
    #: rq's SignedSerializer checks meta and results (bound to the job) before plugq sees them.
    verifies_stored_blobs: ClassVar[bool] = True

    def __init__(self, url: str, clock: Clock | None = None, *, client: Any = None) -> None:
        super().__init__(url)
        if isinstance(clock, ManualClock):
            # rq, Redis and other processes read the wall clock.
            raise NotSupportedError(f"{self.safe_url()} cannot run on a ManualClock")
        self.clock = clock or Clock()
        if client is None:
            # On the URL as given: split_options re-encodes the query, after which
            # a password holding an unencoded '?' no longer reads as one.
            check_url(url)
        redis_url, options = split_options(url)
        self.is_fake = url.lower().startswith("fakeredis://")
        #: rq worker class used when ``Worker(worker_class=None)``.
        self.default_worker_class = options.get("worker_class") or ("simple" if self.is_fake else "fork")
        if self.default_worker_class not in ("fork", "simple", "spawn"):
            raise ConfigurationError(
                f"{self.safe_url()}: worker_class={self.default_worker_class!r}; "
                "choose fork, simple or spawn"
            )
        try:
            self.scheduler_interval = float(options.get("scheduler_interval", "1"))
        except ValueError:
            self.scheduler_interval = float("nan")
        if not 0 < self.scheduler_interval <= 86400:
            raise ConfigurationError(
                f"{self.safe_url()}: scheduler_interval={options['scheduler_interval']!r} must be "
                "seconds, > 0 and at most 86400"
            )
        #: ``?lease=SECONDS``: how long a job's heartbeat lives (None: rq's default,
        #: the job monitoring interval + 60 s); see ``worker.PlugqWorkerMixin``.
        self.lease: float | None = None
        if "lease" in options:
            try:
                self.lease = float(options["lease"])
            except ValueError:
                self.lease = -1.0
            if not (self.lease >= 1.0 and self.lease < float("inf")):
                raise ConfigurationError(
                    f"{self.safe_url()}: lease={options['lease']!r}; give whole or fractional "
                    "seconds, at least 1 (rq's heartbeats have one-second resolution)"
                )
        try:
            self.redis = client if client is not None else make_client(redis_url)
        except ConfigurationError as exc:
            raise ConfigurationError(mask_url(str(exc), url)) from None
        if self.redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigurationError(
                "rq needs a Redis client with decode_responses=False (it stores bytes)"
            )
        with translated(url):
            self.redis.ping()
        self._queues: dict[str, RQQueue] = {}
        self._lock = threading.Lock()
        #: The enqueue script (None once the server refused scripting).
        self._guarded: Any = self.redis.register_script(GUARDED_WRITE)

    # -- helpers ----------------------------------------------------------------

    def rq_queue(self, name: str) -> RQQueue:
        """rq's Queue object for ``name`` (cached: it caches the server version)."""
        with self._lock:
            q = self._queues.get(name)
            if q is None:
                q = self._queues[name] = RQQueue(name, connection=self.redis, job_class=PlugqJob)
            return q

    def _registry(self, queue: str, status: JobStatus) -> BaseRegistry:
        return _REGISTRIES[status](queue, connection=self.redis, job_class=PlugqJob)

    def _load(self, job_ids: Sequence[str]) -> list[PlugqJob | None]:
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(PlugqJob.key_for(job_id))
            raws = pipe.execute()
        jobs: list[PlugqJob | None] = []
        for job_id, raw in zip(job_ids, raws, strict=True):
            if not raw or (b"data" not in raw):
                jobs.append(None)
                continue
            job = PlugqJob(job_id, connection=self.redis)
            job.restore(raw)
            job.plugq_attempts = attempts_of(raw)  # type: ignore[attr-defined]
            jobs.append(job)
        return jobs

    def _records(self, jobs: Sequence[PlugqJob | None]) -> list[JobRecord | None]:
        live = [j for j in jobs if j is not None]
        with self.redis.pipeline(transaction=False) as pipe:
            for job in live:
                pipe.xrevrange(Result.get_key(job.id), "+", "-", count=1)
                pipe.zscore(ScheduledJobRegistry(job.origin, connection=self.redis).key, job.id)
            answers = pipe.execute()
        out: dict[str, JobRecord] = {}
        for i, job in enumerate(live):
            entries, score = answers[2 * i], answers[2 * i + 1]
            result = None
            if entries:
                rid, payload = entries[0]
                try:
                    result = Result.restore(
                        job.id, rid.decode(), payload, connection=self.redis, serializer=job.serializer
                    )
                except UntrustedJobError:
                    # An unsigned or tampered return value (key set) is never loaded.
                    result = None
            scheduled = job.get_status(refresh=False) == RQStatus.SCHEDULED
            sched = float(score) if score is not None and scheduled else None
            out[job.id] = to_record(
                job, result, scheduled_for=sched, attempts=getattr(job, "plugq_attempts", 0)
            )
        return [None if j is None else out[j.id] for j in jobs]

    def _job(self, job_id: str) -> PlugqJob:
        job = self._load([job_id])[0]
        if job is None:
            raise NoSuchJobError(f"No such job: {job_id}")
        return job

    # -- jobs -------------------------------------------------------------------

    @translate_errors
    def enqueue_jobs(self, records: Sequence[JobRecord], *, unique: bool = False) -> list[JobRecord]:
        watch = unique or any(r.depends_on for r in records)
        jobs = None if watch or len(records) > GUARDED_MAX_JOBS else self._enqueue_new(records)
        if jobs is None:
            with self.redis.pipeline() as pipe:
                while True:
                    try:
                        if watch:
                            keys = {PlugqJob.key_for(r.id) for r in records}
                            keys |= {PlugqJob.key_for(d) for r in records for d in r.depends_on}
                            pipe.watch(*keys)
                        jobs = self._enqueue_in(pipe, records, unique=unique, watch=watch)
                        break
                    except WatchError:
                        continue
        assert jobs is not None
        return [stored_record(rec, job) for rec, job in zip(records, jobs, strict=True)]

    def _enqueue_new(self, records: Sequence[JobRecord]) -> list[PlugqJob] | None:
        """Small batches (single enqueues) in one round trip: no ``unique``, no dependencies,
        ids not in use.

        rq's own enqueue commands are collected in a pipeline that is never
        executed and sent as one ``GUARDED_WRITE`` script, which runs them only
        if none of the job keys exists (atomically, as MULTI/EXEC would).
        Returns None when a job id is in use (the job is replaced: the caller
        takes the full path) or when the server refuses scripts.
        """
        if self._guarded is None:
            return None
        signed = secret_key() is not None
        jobs = [to_rq_job(r, self.redis, signed=signed) for r in records]
        buffer = self.redis.pipeline(transaction=False)
        self._add_enqueue_commands(buffer, records, jobs)
        argv: list[Any] = []
        for args, _options in buffer.command_stack:
            argv.append(len(args))
            argv.extend(args)
        buffer.reset()
        try:
            written = self._guarded(keys=[job.key for job in jobs], args=argv, client=self.redis)
        except ResponseError as exc:
            if not _scripts_refused(exc):
                raise
            self._guarded = None  # e.g. an ACL without EVALSHA: the pipeline path from now on
            return None
        return jobs if written else None

    def _add_enqueue_commands(
        self, pipe: Any, records: Sequence[JobRecord], jobs: Sequence[PlugqJob],
        deps: dict[str, Any] | None = None,
    ) -> None:
        """rq's commands enqueueing (or scheduling, or deferring) ``jobs`` onto ``pipe``."""
        batch = {r.id for r in records}
        queues: dict[str, RQQueue] = {}
        for rec, job in zip(records, jobs, strict=True):
            q = queues.get(rec.origin)
            if q is None:
                q = queues[rec.origin] = self.rq_queue(rec.origin)
                pipe.sadd(q.redis_queues_keys, q.key)  # once per queue of the batch
            deferred = False
            if rec.depends_on:
                assert deps is not None
                deferred = any(d in batch for d in rec.depends_on) or not dependencies_met(
                    [_status(deps[d]) for d in rec.depends_on], rec.allow_dependency_failure
                )
            if deferred:
                job.set_status(RQStatus.DEFERRED, pipeline=pipe)
                job.register_dependency(pipeline=pipe)
                job.save(pipeline=pipe)
                job.cleanup(ttl=job.ttl, pipeline=pipe)
            elif rec.status is JobStatus.SCHEDULED and rec.scheduled_for is not None:
                schedule(q, job, rec.scheduled_for, pipe)
            else:
                q._enqueue_job(job, pipeline=pipe, at_front=rec.at_front)

    def _enqueue_in(
        self, pipe: Any, records: Sequence[JobRecord], *, unique: bool, watch: bool
    ) -> list[PlugqJob]:
        ids = [r.id for r in records]
        dep_ids = sorted({d for r in records for d in r.depends_on} - set(ids))
        own: dict[str, Any] = dict.fromkeys(ids)
        deps: dict[str, Any] = {}
        # Statuses are needed for unique=True, for dependencies, and for ids in
        # use (the old job is replaced); otherwise one EXISTS for the batch.
        if watch or self.redis.exists(*[PlugqJob.key_for(i) for i in ids]):
            with self.redis.pipeline(transaction=False) as read:
                for job_id in ids + dep_ids:
                    read.hget(PlugqJob.key_for(job_id), "status")
                statuses = read.execute()
            own = dict(zip(ids, statuses[: len(ids)], strict=True))
            deps = dict(zip(dep_ids, statuses[len(ids):], strict=True))
        if unique:
            for job_id, raw in own.items():
                check_unique(job_id, _status(raw))
        for dep_id, raw in deps.items():
            if raw is None:
                raise NoSuchJobError(f"depends_on names job {dep_id!r}, which does not exist")
        replaced = [j for j in self._load([i for i, raw in own.items() if raw is not None]) if j]
        signed = secret_key() is not None
        jobs = [to_rq_job(r, self.redis, signed=signed) for r in records]
        pipe.multi()
        for old in replaced:
            old.delete(pipeline=pipe)
            pipe.delete(Result.get_key(old.id))
        self._add_enqueue_commands(pipe, records, jobs, deps)
        pipe.execute()
        return jobs

    @translate_errors
    def fetch_job(self, job_id: str) -> JobRecord | None:
        return self._records(self._load([job_id]))[0]

    @translate_errors
    def fetch_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        return self._records(self._load(list(job_ids)))

    @translate_errors
    def delete_job(self, job_id: str) -> None:
        job = self._load([job_id])[0]
        if job is not None:
            job.delete()
        self.redis.delete(Result.get_key(job_id))

    @translate_errors
    def save_meta(self, job_id: str, meta: bytes) -> None:
        data = self.redis.hget(PlugqJob.key_for(job_id), "data")
        if data is None:
            raise NoSuchJobError(f"No such job: {job_id}")
        name, signed = sniff(data)
        value = get_serializer(name).loads(strip_blob(meta)) if meta else {}
        self.redis.hset(PlugqJob.key_for(job_id), "meta", rq_serializer(name, signed=signed).dumps(value))

    @translate_errors
    def cancel_job(self, job_id: str) -> JobRecord:
        job = self._job(job_id)
        check_cancel(job_id, status_of(job))
        job.cancel()
        self.redis.hset(job.key, "ended_at", utcformat(rq_now()))
        rec = self.fetch_job(job_id)
        assert rec is not None
        return rec

    @translate_errors
    def requeue_job(self, job_id: str, *, at_front: bool = False) -> JobRecord:
        job = self._job(job_id)
        status = status_of(job)
        check_requeue(job_id, status)
        job.worker_name = None
        registry = self._registry(job.origin, status)
        try:
            registry.requeue(job, at_front=at_front)
        except RQInvalidJobOperation:
            # Not in its registry any more (removed or expired there): enqueue directly.
            job.started_at = job.ended_at = None
            job.save()
            self.rq_queue(job.origin)._enqueue_job(job, at_front=at_front)
        rec = self.fetch_job(job_id)
        assert rec is not None
        return rec

    # -- queues and registries ----------------------------------------------------

    @translate_errors
    def queue_names(self) -> list[str]:
        return sorted(q.name for q in RQQueue.all(connection=self.redis))

    @translate_errors
    def job_ids(self, queue: str, status: JobStatus, offset: int = 0, length: int = -1) -> list[str]:
        if status is JobStatus.QUEUED:
            return self.rq_queue(queue).get_job_ids(offset, length)
        end = -1 if length < 0 else offset + length - 1
        if status in (JobStatus.STARTED, JobStatus.STOPPED, JobStatus.FAILED):
            ids = list(dict.fromkeys(self._registry(queue, status).get_job_ids()))
            # Filtered by the job's own status: rq keeps stopped jobs in the
            # failed registry, and its wip registry can hold an execution whose
            # job has already ended (its worker died after the job's end).
            want = status.value.encode()
            with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hget(PlugqJob.key_for(job_id), "status")
                ids = [i for i, s in zip(ids, pipe.execute(), strict=True) if s == want]
            return ids[offset:] if end == -1 else ids[offset : end + 1]
        return self._registry(queue, status).get_job_ids(offset, end)

    @translate_errors
    def count(self, queue: str, status: JobStatus) -> int:
        if status is JobStatus.QUEUED:
            return int(self.rq_queue(queue).count)
        if status in (JobStatus.STARTED, JobStatus.STOPPED, JobStatus.FAILED):
            return len(self.job_ids(queue, status))
        return int(self._registry(queue, status).count)

    @translate_errors
    def empty_queue(self, queue: str) -> int:
        return int(self.rq_queue(queue).empty())

    @translate_errors
    def delete_queue(self, queue: str, *, delete_jobs: bool = True) -> None:
        self.rq_queue(queue).delete(delete_jobs=delete_jobs)

    @translate_errors
    def remove_from_registry(
        self, queue: str, status: JobStatus, job_id: str, *, delete_job: bool = False
    ) -> None:
        job = self._load([job_id])[0]
        if job is None or job.origin != queue or job.get_status(refresh=False) != RQStatus(status.value):
            raise InvalidJobOperation(f"Job {job_id} is not in the {status.value} registry of {queue!r}")
        registry = self._registry(queue, status)
        if isinstance(registry, StartedJobRegistry):
            registry.remove_executions(job)
        else:
            registry.remove(job)
        if delete_job:
            self.delete_job(job_id)
        else:
            # The job outlives its registry entry, detached from the queue (as
            # plugq's other backends do), so it no longer counts as in the registry.
            self.redis.hset(job.key, "origin", "")

    # -- workers --------------------------------------------------------------------

    def _worker_class(self, name: str | None) -> Any:
        from .worker import WORKER_CLASSES

        chosen = name or self.default_worker_class
        cls = WORKER_CLASSES.get(chosen)
        if cls is None:
            raise ConfigurationError(
                f"worker_class={chosen!r} is not an rq worker class; choose fork, simple or spawn"
            )
        if self.is_fake and chosen != "simple":
            raise NotSupportedError(
                f"worker_class={chosen!r} is not supported on fakeredis:// (its data lives in this "
                "process and does not cross a fork or spawn); use worker_class='simple'"
            )
        return cls

    @translate_errors
    def run_worker(
        self, worker: WorkerSpec, *, burst: bool, max_jobs: int | None, with_scheduler: bool
    ) -> bool:
        import logging

        cls = self._worker_class(worker.worker_class)
        options = {k: v for k, v in worker.options.items() if k in RQ_WORKER_OPTIONS}
        if self.lease is not None:
            # Heartbeats three times per lease (rq's monitor alarm takes whole
            # seconds), registry cleanup twice per lease.
            options.setdefault("job_monitoring_interval", max(1, int(self.lease // 3)))
            options.setdefault("maintenance_interval", self.lease / 2)
        rqw = cls(
            [self.rq_queue(n) for n in worker.queues],
            name=worker.name,
            connection=self.redis,
            job_class=PlugqJob,
            **options,
        )
        rqw.plugq_backend = self
        rqw.plugq_worker = worker
        rqw.plugq_burst = burst
        rqw.plugq_with_scheduler = with_scheduler
        level = logging.getLogger("plugq").getEffectiveLevel()
        return bool(
            rqw.work(
                burst=burst, max_jobs=max_jobs, with_scheduler=with_scheduler,
                logging_level=logging.getLevelName(level),
            )
        )

    @translate_errors
    def run_sync(self, record: JobRecord) -> JobRecord:
        from .worker import PlugqSimpleWorker

        stored = self.enqueue_jobs([record])[0]
        if stored.status is not JobStatus.QUEUED:
            return self.fetch_job(stored.id) or stored
        name = f"sync.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        queue = self.rq_queue(record.origin)
        w = PlugqSimpleWorker([queue], name=name, connection=self.redis, job_class=PlugqJob,
                              prepare_for_work=False)
        w.hostname, w.pid, w.ip_address = socket.gethostname(), os.getpid(), "unknown"
        w.plugq_backend = self
        w.plugq_only_job = stored.id
        w.death_penalty_class = death_penalty_class()
        queue_scheduled = ScheduledJobRegistry(queue=queue)

        def promote(current: JobRecord) -> None:
            # As rq's scheduler would: out of the scheduled registry, onto the queue.
            job = self._job(current.id)
            queue_scheduled.remove(job)
            queue._enqueue_job(job)

        def take_and_run(current: JobRecord) -> None:
            taken = w.dequeue_job_and_maintain_ttl(None)
            if taken is not None:
                w.execute_job(*taken)

        try:
            return drive_sync(self.clock, stored, self.fetch_job, promote, take_and_run)
        finally:
            self.redis.delete(w.key)

    @translate_errors
    def workers(self) -> list[WorkerRecord]:
        found = []
        for key in RQWorker.all_keys(connection=self.redis):
            raw = self.redis.hgetall(key)
            problems = field_problems(raw, WORKER_FIELDS) if raw else {}
            if problems:
                # One corrupt worker hash must not break `plugq info` or a worker's start.
                found.append(quarantined_worker(
                    WorkerRecord(name=key[len(RQWorker.redis_worker_namespace_prefix):], queues=[],
                                 pid=0, hostname="", birth=0.0, last_heartbeat=0.0),
                    describe(problems)))
                continue
            w = RQWorker.find_by_key(key, connection=self.redis)
            if w is None:
                continue
            found.append(
                WorkerRecord(
                    name=w.name,
                    queues=w.queue_names(),
                    pid=w.pid or 0,
                    hostname=w.hostname or "",
                    birth=w.birth_date.timestamp() if w.birth_date else 0.0,
                    last_heartbeat=w.last_heartbeat.timestamp() if w.last_heartbeat else 0.0,
                    state=str(w.get_state()),
                    current_job_id=getattr(w, "_job_id", None),
                    successful_jobs=w.successful_job_count,
                    failed_jobs=w.failed_job_count,
                )
            )
        return sorted(found, key=lambda r: r.name)

    @translate_errors
    def maintenance(self) -> None:
        """rq's registry cleanup (abandoned jobs retried or failed) and a scheduler pass."""
        from .worker import PlugqScheduler

        names = self.queue_names()
        for name in names:
            clean_registries(self.rq_queue(name))
        if names:
            sched = PlugqScheduler(names, connection=self.redis, interval=1)
            sched._connection = self.redis
            sched.run_once()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.redis.close()
