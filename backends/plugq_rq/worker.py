"""rq's own workers, taught plugq's lifecycle hooks and a few plugq semantics.

``Worker(worker_class=…)`` picks the class: ``fork`` (rq's ``Worker``, the
default on a real server), ``simple`` (``SimpleWorker``, jobs run in the
worker's process; the default on ``fakeredis://``) or ``spawn``
(``SpawnWorker``). The mixin below adds, to each of them:

* plugq's hooks (``plugq_job_started/finished/failed``), fired in the process
  that runs the job (the work horse for fork and spawn);
* ``Worker.request_stop()`` honoured within a second, and a worker run from a
  thread other than the main one (no signal handlers there; timeouts by timer);
* a burst worker that looks at the scheduled registry again before quitting,
  as plugq's own loop does, and a scheduler thread instead of rq's forked
  scheduler process (fakeredis data does not cross a fork);
* a canceled job's outcome is not stored over its cancellation;
* Redis going away is waited out with backoff instead of ending the worker;
* a job refused by plugq's security guards (``signing.refusal``: allow-list,
  json-only policy, HMAC signature) is failed unrun, with the reason as its
  traceback, and no callback is called;
* with the backend's ``lease`` (URL ``?lease=SECONDS``), a job's heartbeat
  lives ``lease`` seconds instead of rq's monitoring interval + 60 s, and
  registries are cleaned every ``lease / 2`` seconds, so a dead worker's job
  is recovered as abandoned within about ``1.5 * lease``;
* ``plugq.Worker.successful_job_count`` / ``failed_job_count`` are copied from
  rq's counters in ``rq:worker:<name>`` when ``work()`` ends (the jobs may have
  run in work horses).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import JobStatus as RQStatus
from rq.queue import Queue as RQQueue
from rq.scheduler import RQScheduler
from rq.timeouts import UnixSignalDeathPenalty
from rq.utils import now as rq_now
from rq.worker import SimpleWorker, SpawnWorker, Worker
from rq.worker.base import WorkerStatus
from rq.worker_registration import clean_worker_registry

from plugq import _events
from plugq.backend import WorkerSpec
from plugq.exceptions import AbandonedJobError
from plugq.security import UntrustedJobError, secret_key

from ._connection import is_connection_error
from .convert import to_record
from .jobs import ATTEMPTS_FIELD, PlugqJob, death_penalty_class
from .registries import clean_registries, drop_ended_executions
from .signing import RefusingSerializer, SignedSerializer

if TYPE_CHECKING:
    from .backend import RQBackend

log = logging.getLogger("plugq.rq.worker")

#: Seconds a non-burst worker blocks on its queues before looking at stop requests.
POLL = 1
#: Longest wait between reconnection attempts.
MAX_BACKOFF = 30.0


class PlugqScheduler(RQScheduler):
    """rq's scheduler, reading due jobs with :class:`PlugqJob` (per-job serializer)."""

    def enqueue_scheduled_jobs(self) -> None:
        self._status = self.Status.WORKING
        if not self._scheduled_job_registries and self._acquired_locks:
            self.prepare_registries()
        for registry in self._scheduled_job_registries:
            job_ids = registry.get_jobs_to_schedule(time.time())  # type: ignore[arg-type]
            if not job_ids:
                continue
            queue = RQQueue(registry.name, connection=self.connection, job_class=PlugqJob)
            with self.connection.pipeline() as pipeline:
                jobs = PlugqJob.fetch_many(job_ids, connection=self.connection)
                for job in jobs:
                    if job is not None and job.get_status(refresh=False) == RQStatus.SCHEDULED:
                        queue._enqueue_job(job, pipeline=pipeline, at_front=job.should_enqueue_at_front())
                for job_id in job_ids:
                    registry.remove(job_id, pipeline=pipeline)
                pipeline.execute()
        self._status = self.Status.STARTED

    def run_once(self) -> None:
        """One scheduler pass, if no other scheduler holds the queues' locks."""
        self.acquire_locks()
        if self.acquired_locks:
            try:
                self.enqueue_scheduled_jobs()
            finally:
                self.release_locks()


class LeaseIntermediateQueue(IntermediateQueue):
    """rq's intermediate queue, a job stuck there recovered after ``lease`` seconds (rq: 60)."""

    def __init__(self, queue_key: str, connection: Any, lease: float) -> None:
        super().__init__(queue_key, connection)
        self.lease = lease

    def should_be_cleaned_up(self, job_id: str) -> bool:
        first_seen = self.get_first_seen(job_id)
        return first_seen is not None and (rq_now() - first_seen).total_seconds() > self.lease


class PlugqWorkerMixin:
    """What plugq adds to every rq worker class (see the module docstring)."""

    plugq_backend: RQBackend
    plugq_worker: WorkerSpec | None = None
    plugq_burst: bool = False
    plugq_with_scheduler: bool = True
    plugq_scheduler: PlugqScheduler | None = None
    plugq_only_job: str | None = None
    _plugq_exc_info: Any = None
    _plugq_sched_thread: threading.Thread | None = None
    _plugq_sched_stop: threading.Event | None = None
    _plugq_base_counts: tuple[int, int] = (0, 0)

    # rq attributes used below (provided by BaseWorker)
    connection: Any
    key: str
    last_cleaned_at: Any
    queues: list[Any]
    name: str
    serializer: Any
    execution: Any
    _stop_requested: bool

    # -- helpers ---------------------------------------------------------------

    def _plugq_stopping(self) -> bool:
        return bool(self._stop_requested or (self.plugq_worker and self.plugq_worker.stop.is_set()))

    def _plugq_wait_for_redis(self, exc: BaseException) -> None:
        """Back off until Redis answers again (or a stop is requested)."""
        wait = 1.0
        log.error("Worker %s: Redis unavailable (%s); retrying with backoff", self.name, exc)
        while not self._plugq_stopping():
            time.sleep(wait)
            try:
                self.connection.ping()
                log.warning("Worker %s: Redis is back", self.name)
                return
            except Exception as again:
                if not is_connection_error(again):
                    raise
                wait = min(wait * 2, MAX_BACKOFF)

    def _plugq_job(self, job: PlugqJob) -> Any:
        return _events.job_for(self.plugq_backend, to_record(job))

    # -- rq overrides ------------------------------------------------------------

    def work(self, *args: Any, **kwargs: Any) -> bool:
        self.death_penalty_class = death_penalty_class()
        if self.plugq_worker is not None:
            stats = self.plugq_worker.stats
            self._plugq_base_counts = (stats.successful, stats.failed)
        return super().work(*args, **kwargs)  # type: ignore[misc]

    def _plugq_copy_counts(self) -> None:
        """rq counts in ``rq:worker:<name>`` (the horses too); plugq's Worker shows the same."""
        if self.plugq_worker is None:
            return
        try:
            ok, failed = self.connection.hmget(self.key, "successful_job_count", "failed_job_count")
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            log.warning("Worker %s: job counts not read, Redis unavailable (%s)", self.name, exc)
            return
        base_ok, base_failed = self._plugq_base_counts
        self.plugq_worker.stats.successful = base_ok + int(ok or 0)
        self.plugq_worker.stats.failed = base_failed + int(failed or 0)

    # -- lease ----------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Any) -> int:
        lease = self.plugq_backend.lease
        if lease is None:
            return int(super().get_heartbeat_ttl(job))  # type: ignore[misc]
        return max(2, math.ceil(lease))

    def clean_registries(self) -> None:
        lease = self.plugq_backend.lease
        if lease is None:
            for queue in self.queues:
                drop_ended_executions(queue)
            super().clean_registries()  # type: ignore[misc]
            return
        # rq's maintenance lock lives 899 s: a worker killed while it holds the
        # lock would stop every cleanup for 15 minutes. With a lease it lives
        # one lease, and stuck intermediate-queue jobs wait one lease, not 60 s.
        for queue in self.queues:
            if self.connection.set(queue.registry_cleaning_key, 1, nx=True, ex=max(1, math.ceil(lease))):
                try:
                    clean_registries(queue, self._exc_handlers)  # type: ignore[attr-defined]
                    clean_worker_registry(queue)
                    LeaseIntermediateQueue(queue.key, self.connection, lease).cleanup(self, queue)  # type: ignore[arg-type]
                finally:
                    queue.release_maintenance_lock()
        self.last_cleaned_at = rq_now()

    def _plugq_beat_while(self, job: Any, done: threading.Event) -> None:
        """A simple worker runs the job itself: keep its execution's heartbeat alive meanwhile."""
        interval = max(0.2, (self.plugq_backend.lease or 3.0) / 3.0)
        while not done.wait(interval):
            if self.execution is None:
                continue
            try:
                self.maintain_heartbeats(job)  # type: ignore[attr-defined]
            except Exception:
                log.debug("Worker %s: heartbeat during job %s failed", self.name, job.id, exc_info=True)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            super()._install_signal_handlers()  # type: ignore[misc]

    def main_work_horse(self, job: Any, queue: Any) -> None:
        # The horse is the only thread of its process: SIGALRM works there.
        self.death_penalty_class = UnixSignalDeathPenalty
        super().main_work_horse(job, queue)  # type: ignore[misc]

    def subscribe(self) -> None:
        """rq's command channel (``rq`` shutdown/kill-horse/stop-job commands).

        rq's listener thread wakes every 60 s, so stopping it makes a worker's
        exit wait up to a second in ``join``; a short wake-up keeps exits prompt.
        """
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})  # type: ignore[attr-defined]
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=0.1, daemon=True,
            exception_handler=self._pubsub_exception_handler,  # type: ignore[attr-defined]
        )

    def check_for_suspension(self, burst: bool) -> None:
        while True:
            try:
                return super().check_for_suspension(burst)  # type: ignore[misc]
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self._plugq_wait_for_redis(exc)
                if self._plugq_stopping():
                    return None

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()  # type: ignore[misc]
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            log.warning("Worker %s: maintenance skipped, Redis unavailable (%s)", self.name, exc)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        try:
            super().heartbeat(timeout, pipeline)  # type: ignore[misc]
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            log.warning("Worker %s: heartbeat failed, Redis unavailable (%s)", self.name, exc)

    def teardown(self) -> None:
        self._plugq_stop_scheduler()
        if not getattr(self, "_is_horse", False):
            self._plugq_copy_counts()
        try:
            super().teardown()  # type: ignore[misc]
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            log.warning("Worker %s: could not register its death, Redis unavailable", self.name)

    def execute_job(self, job: Any, queue: Any) -> None:
        if getattr(job, "plugq_refusal", None) is None and secret_key() is None and isinstance(
            getattr(job, "serializer", None), SignedSerializer
        ):
            # Its producer meant it to be verified; this worker cannot, so nothing of it runs.
            reason = (f"job {job.id} is signed but this worker has no PLUGQ_SECRET_KEY to verify "
                      "it: refused unrun")
            job.serializer = RefusingSerializer(reason)
            job.plugq_refusal = reason
            job.meta, job._result, job.webhooks = {}, None, []
        if getattr(job, "plugq_refusal", None) is not None:
            self._plugq_refuse(job, queue, job.plugq_refusal)
            return
        done: threading.Event | None = None
        if isinstance(self, SimpleWorker) and self.plugq_backend.lease is not None:
            done = threading.Event()
            threading.Thread(target=self._plugq_beat_while, args=(job, done),
                             name="plugq-job-heartbeat", daemon=True).start()
        try:
            super().execute_job(job, queue)  # type: ignore[misc]
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            # The job stays in rq's started registry / intermediate queue and is
            # recovered as abandoned (retried or failed) by registry cleanup.
            self._plugq_wait_for_redis(exc)
        finally:
            if done is not None:
                done.set()

    def _plugq_refuse(self, job: Any, queue: Any, reason: str) -> None:
        """Fail a job the security guards refused: nothing imported, deserialized or called."""
        err = UntrustedJobError(reason)
        exc_string = f"plugq.security.UntrustedJobError: {reason}\n"
        log.error("Worker %s: %s: job %s refused: %s", self.name, queue.name, job.id, reason)
        with self.connection.pipeline() as pipeline:
            pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            job.set_status(RQStatus.FAILED, pipeline=pipeline)
            job.worker_name = self.name
            job.ended_at = rq_now()
            job._handle_failure(exc_string, pipeline, worker_name=self.name)
            self.increment_failed_job_count(pipeline)  # type: ignore[attr-defined]
            pipeline.execute()
        try:
            queue.enqueue_dependents(job)
        except Exception:
            log.exception("Job %s: dependents not enqueued", job.id)
        if self.plugq_worker is not None:
            self.plugq_worker.stats.failed += 1
        if _events.wanted("failed"):
            _events.failed(self._plugq_job(job), (type(err), err, None))

    def prepare_execution(self, job: Any) -> Execution:
        with self.connection.pipeline() as pipeline:
            ttl = self.get_heartbeat_ttl(job)
            self.execution = Execution.create(job, ttl, pipeline=pipeline, worker_name=self.name)
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)  # type: ignore[attr-defined]
            pipeline.hincrby(job.key, ATTEMPTS_FIELD, 1)
            pipeline.execute()
        return self.execution

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Any, Any] | None:
        parent = super().dequeue_job_and_maintain_ttl  # type: ignore[misc]
        if self.plugq_only_job is not None:
            return self._plugq_take_only_job()
        while True:
            if self._plugq_stopping():
                self._stop_requested = True
                return None
            if self.plugq_burst:
                result = parent(None, None)
                if result is None and self._plugq_idle_maintenance():
                    result = parent(None, None)
                return result
            result = parent(POLL, POLL)
            if result is not None:
                return result

    def _plugq_take_only_job(self) -> tuple[Any, Any] | None:
        """Sync mode: run exactly the one job, if it is (still) queued."""
        job_id = self.plugq_only_job
        assert job_id is not None
        job = PlugqJob.fetch_many([job_id], connection=self.connection)[0]
        if job is None or job.get_status(refresh=False) != RQStatus.QUEUED:
            return None
        queue = RQQueue(job.origin, connection=self.connection, job_class=PlugqJob)
        if not self.connection.lrem(queue.key, 1, job_id):
            return None  # a worker took it first
        return job, queue

    def _plugq_idle_maintenance(self) -> bool:
        """Before a burst worker quits: enqueue due jobs, recover abandoned ones."""
        from rq.registry import StartedJobRegistry

        for q in self.queues:
            drop_ended_executions(q)
            StartedJobRegistry(q.name, connection=self.connection, job_class=PlugqJob).cleanup()
        if self.plugq_with_scheduler:
            self._plugq_make_scheduler().run_once()
        return any(q.count for q in self.queues)

    def _plugq_make_scheduler(self) -> PlugqScheduler:
        sched = PlugqScheduler(
            self.queues, connection=self.connection, interval=1,
            serializer=self.serializer, logging_level=logging.getLogger("rq.scheduler").level or "INFO",
        )
        sched._connection = self.connection  # share the client (and fakeredis's server)
        return sched

    def _start_scheduler(self, burst: bool = False, *args: Any, **kwargs: Any) -> None:
        if burst:
            self._plugq_make_scheduler().run_once()
            return
        stop = threading.Event()
        self._plugq_sched_stop = stop
        self._plugq_sched_thread = threading.Thread(
            target=self._plugq_scheduler_loop, args=(stop,), name="plugq-rq-scheduler", daemon=True
        )
        self._plugq_sched_thread.start()

    def _plugq_scheduler_loop(self, stop: threading.Event) -> None:
        sched = self._plugq_make_scheduler()
        self.plugq_scheduler = sched
        interval = self.plugq_backend.scheduler_interval
        try:
            while not stop.is_set():
                try:
                    if sched.should_reacquire_locks:
                        sched.acquire_locks()
                    if sched.acquired_locks:
                        sched.heartbeat()
                        sched.enqueue_scheduled_jobs()
                except Exception as exc:
                    if not is_connection_error(exc):
                        log.exception("scheduler pass failed")
                    else:
                        log.warning("scheduler: Redis unavailable (%s)", exc)
                stop.wait(interval)
        finally:
            try:
                sched.release_locks()
            except Exception:
                log.debug("scheduler could not release its locks", exc_info=True)

    def _plugq_stop_scheduler(self) -> None:
        if self._plugq_sched_stop is not None:
            self._plugq_sched_stop.set()
        if self._plugq_sched_thread is not None:
            self._plugq_sched_thread.join(timeout=5)
            self._plugq_sched_thread = None

    def stop_scheduler(self) -> None:
        self._plugq_stop_scheduler()

    # -- hooks and outcomes ----------------------------------------------------------

    def prepare_job_execution(self, job: Any, remove_from_intermediate_queue: bool = False) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)  # type: ignore[misc]
        # The handle get_current_job() returns inside the task (PlugqJob.perform).
        job.plugq_current = self._plugq_job(job)
        self._plugq_exc_info = None
        if self.plugq_worker is not None:
            _events.started(job.plugq_current, self.plugq_worker.hook_worker)

    def handle_exception(self, job: Any, *exc_info: Any) -> None:
        self._plugq_exc_info = exc_info
        super().handle_exception(job, *exc_info)  # type: ignore[misc]

    def handle_execution_ended(self, job: Any, queue: Any, heartbeat_ttl: int) -> None:
        """rq's end-of-run heartbeat, and the job's status read in the same round trip.

        The outcome must not be stored over a cancellation (or a deletion) made
        while the job ran. Without callbacks nothing but a few lines of Python
        runs between here and storing the outcome, so the status read here
        costs no round trip of its own; with a callback configured the status
        is read again after it (``_plugq_was_canceled``).
        """
        job.ended_at = rq_now()
        with self.connection.pipeline(transaction=False) as pipe:
            job.heartbeat(rq_now(), heartbeat_ttl, pipeline=pipe)
            pipe.hget(job.key, "status")
            status = pipe.execute()[-1]
        callbacks = (job._success_callback_name, job._failure_callback_name, job._stopped_callback_name)
        if not any(callbacks):
            job.plugq_status_at_end = (status,)

    def _plugq_was_canceled(self, job: Any) -> bool:
        known = job.__dict__.pop("plugq_status_at_end", None)
        status = known[0] if known is not None else self.connection.hget(job.key, "status")
        if status is None or status == b"canceled":
            log.info("Job %s was canceled or deleted while it ran; outcome not stored", job.id)
            with self.connection.pipeline() as pipeline:
                self.cleanup_execution(job, pipeline=pipeline)  # type: ignore[attr-defined]
                pipeline.execute()
            return True
        return False

    def handle_job_success(self, job: Any, queue: Any, started_job_registry: Any) -> None:
        if not self._plugq_was_canceled(job):
            super().handle_job_success(job, queue, started_job_registry)  # type: ignore[misc]
        if self.plugq_worker is not None:
            self.plugq_worker.stats.successful += 1
        if _events.wanted("finished"):
            _events.finished(self._plugq_job(job), job._result)

    def handle_job_failure(
        self, job: Any, queue: Any, started_job_registry: Any = None, exc_string: str = ""
    ) -> None:
        job.plugq_exc_string = exc_string
        if not self._plugq_was_canceled(job):
            super().handle_job_failure(  # type: ignore[misc]
                job, queue, started_job_registry=started_job_registry, exc_string=exc_string
            )
        if self.plugq_worker is not None:
            self.plugq_worker.stats.failed += 1
        if _events.wanted("failed"):
            exc_info = self._plugq_exc_info
            if exc_info is None:
                err = AbandonedJobError(exc_string.strip() or "the work horse ended unexpectedly")
                exc_info = (type(err), err, None)
            try:
                job.refresh()
            except Exception:
                log.debug("job %s gone before the failed hook", job.id)
            _events.failed(self._plugq_job(job), tuple(exc_info))
        self._plugq_exc_info = None


class PlugqForkWorker(PlugqWorkerMixin, Worker):
    """rq's forking ``Worker`` (one work horse process per job)."""


class PlugqSimpleWorker(PlugqWorkerMixin, SimpleWorker):
    """rq's ``SimpleWorker`` (jobs run in the worker's own process)."""


class PlugqSpawnWorker(PlugqWorkerMixin, SpawnWorker):
    """rq's ``SpawnWorker`` (a fresh interpreter per job), running plugq's job class."""

    def fork_work_horse(self, job: Any, queue: Any) -> None:
        env = dict(os.environ)
        env["RQ_WORKER_ID"] = self.name
        env["RQ_EXECUTION_ID"] = self.execution.id
        # The URL travels in the environment, not argv, so no password shows in `ps`.
        env["PLUGQ_RQ_HORSE_URL"] = self.plugq_backend.url
        code = (
            "from plugq_rq.worker import spawned_horse; "
            f"spawned_horse({self.key!r}, {job.id!r}, {queue.name!r})"
        )
        child_pid = os.spawnve(os.P_NOWAIT, sys.executable, [sys.executable, "-c", code], env)
        self._horse_pid = child_pid
        self.procline(f"Spawned {child_pid} at {time.time()}")


def spawned_horse(worker_key: str, job_id: str, queue_name: str) -> None:
    """Entry point of a :class:`PlugqSpawnWorker` horse (runs in the new interpreter)."""
    import plugq

    backend: Any = plugq.connect(os.environ["PLUGQ_RQ_HORSE_URL"])
    conn = backend.redis
    worker = PlugqSpawnWorker.find_by_key(worker_key, connection=conn, job_class=PlugqJob)
    if worker is None:
        sys.exit(1)
    assert isinstance(worker, PlugqSpawnWorker)
    worker.plugq_backend = backend
    job = PlugqJob.fetch_many([job_id], connection=conn)[0]
    if job is None:
        sys.exit(1)
    queue = RQQueue(queue_name, connection=conn, job_class=PlugqJob)
    worker.execution = Execution.fetch(os.environ["RQ_EXECUTION_ID"], job.id, connection=conn)
    os.setpgrp()
    worker._is_horse = True
    worker.main_work_horse(job, queue)


WORKER_CLASSES: dict[str, type[PlugqWorkerMixin]] = {
    "fork": PlugqForkWorker,
    "simple": PlugqSimpleWorker,
    "spawn": PlugqSpawnWorker,
}

__all__ = ["WORKER_CLASSES", "PlugqForkWorker", "PlugqSimpleWorker", "PlugqSpawnWorker"]
